//! `kiln logits`: the next-token logits after a prompt (the last position), for comparing kiln with a
//! reference implementation.

use std::io::Write;
use std::path::PathBuf;

use kiln_ir::TensorData;
use miette::{IntoDiagnostic, Result, miette};

use super::diagnostics::report;
use super::prompt::{PromptArgs, model_tokenizer, prompt_ids};
use super::run_command::cpu_executor;

#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    /// The model: a Hugging Face directory, a `.gguf` file or a `.kir` graph.
    model: PathBuf,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Pass pipeline applied before running (default: `onnx` for `.onnx` models, else `default`).
    #[arg(long)]
    pipeline: Option<String>,
    /// Print `{"prompt_ids": [...], "logits": [...]}` (non-finite logits as null); without it, the ten
    /// highest logits, one a line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    let path = &args.model;
    let model = kiln::load_model(path, args.weights.as_deref()).map_err(report)?;
    let tokenizer = model_tokenizer(&model, path)?;
    let prompt = prompt_ids(&args.prompt, &model, tokenizer.as_ref(), path)?;
    let mut exec = cpu_executor(model, args.pipeline.as_deref(), path)?;

    let n = prompt.len();
    let positions: Vec<i64> = (0..n as i64).collect();
    let inputs = kiln_runtime::decoding::decoder_inputs(exec.graph(), &prompt, &positions, None)
        .map_err(|e| miette!("{}: {e}", path.display()))?;
    let outputs = exec.run(&inputs).map_err(|e| miette!("{}: {e}", path.display()))?;
    let logits = outputs.first().ok_or_else(|| miette!("{}: the graph has no outputs", path.display()))?;
    let (&[1, seq, vocab], TensorData::F32(values)) = (logits.shape(), logits.data()) else {
        return Err(miette!("{}: output 0 is {}, not logits f32[1, seq, vocab]", path.display(), logits.ty()));
    };
    if seq != n || vocab == 0 {
        return Err(miette!("{}: for {n} tokens output 0 has shape {:?}", path.display(), logits.shape()));
    }
    let last = &values[(n - 1) * vocab..];

    let mut stdout = std::io::stdout().lock();
    if args.json {
        // JSON has no NaN or infinity: serde_json writes such logits as null.
        let json = serde_json::json!({ "prompt_ids": prompt, "logits": last });
        writeln!(stdout, "{json}").into_diagnostic()?;
    } else {
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
        for &id in order.iter().take(10) {
            match tokenizer.as_ref().and_then(|t| t.id_to_token(id as u32)) {
                Some(token) => writeln!(stdout, "{id:>8} {:>12.5} {token:?}", last[id]),
                None => writeln!(stdout, "{id:>8} {:>12.5}", last[id]),
            }
            .into_diagnostic()?;
        }
    }
    stdout.flush().into_diagnostic()
}
