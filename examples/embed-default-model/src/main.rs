//! A program that ships a model inside itself: the artifact the build script compiled is embedded with
//! `include_bytes!` and run with `kiln_runtime::Model`, which reads the weights in place (no copy, no
//! files at run time). Usage: `embed-default-model [PROMPT] [MAX_NEW_TOKENS]`.

use std::process::ExitCode;

static ARTIFACT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default.kiln"));

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let prompt = args.next().unwrap_or_else(|| "def read_config(path):".to_string());
    let max_new_tokens = match args.next().map(|n| n.parse::<usize>()) {
        None => 32,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("MAX_NEW_TOKENS must be a whole number");
            return ExitCode::from(1);
        }
    };
    let result = kiln_runtime::Model::from_bytes(ARTIFACT).and_then(|mut model| {
        let config = model.greedy(max_new_tokens);
        model.generate(&prompt, &config)
    });
    match result {
        Ok(out) => {
            println!("{prompt}{}", out.text);
            eprintln!("{} tokens, {:.1} tokens/s", out.stats.new_tokens, out.stats.tokens_per_s);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
