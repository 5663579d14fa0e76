//! `kiln run`: generate tokens from a model with the CPU executor.

use std::path::PathBuf;

use kiln_runtime::cpu::CpuExecutor;
use kiln_runtime::decoding::{GenerateConfig, Sampling, generate};
use miette::{Result, miette};

use super::diagnostics::report;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The model: a `.kir` graph. Default: the example model that ships in the repository.
    model: Option<PathBuf>,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Prompt as comma-separated token ids, e.g. `1,2,3`.
    #[arg(long, value_name = "IDS", conflicts_with = "prompt")]
    prompt_ids: Option<String>,
    /// Prompt text (needs a model with a tokenizer).
    #[arg(long)]
    prompt: Option<String>,
    /// How many tokens to generate at most.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Keep only the k most likely tokens when sampling.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Seed for sampling; the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pass pipeline applied before running.
    #[arg(long, default_value = "default")]
    pipeline: String,
    /// Print a JSON object (`token_ids`, `text`, `stats`) instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| {
            t.trim().parse::<u32>().map_err(|_| miette!("--prompt-ids: `{t}` is not a token id (expected e.g. 1,2,3)"))
        })
        .collect()
}

pub fn run(args: RunArgs) -> Result<()> {
    let path = args.model.clone().unwrap_or_else(kiln::model_source::default_model_path);
    let model = kiln::load_model(&path, args.weights.as_deref()).map_err(report)?;
    let prompt = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => parse_ids(ids)?,
        (None, Some(_)) => {
            return Err(miette!(
                "{}: this model has no tokenizer, so --prompt cannot be encoded; pass token ids with --prompt-ids 1,2,3",
                path.display()
            ));
        }
        (None, None) => return Err(miette!("give a prompt: --prompt-ids 1,2,3")),
    };
    let sampling = if args.temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Sample {
            temperature: args.temperature,
            top_k: args.top_k.unwrap_or(0),
            top_p: args.top_p,
            seed: args.seed,
        }
    };

    let mut graph = model.graph;
    let weights = model.weights;
    let mut manager = kiln_passes::pipelines::pipeline(&args.pipeline).map_err(|e| miette!("{e}"))?;
    manager.run(&mut graph, &mut kiln_passes::PassContext::with_weights(&weights)).map_err(|e| miette!("{e}"))?;
    let mut exec = CpuExecutor::new(graph, weights).map_err(|e| miette!("{}: {e}", path.display()))?;
    let config = GenerateConfig { max_new_tokens: args.max_new_tokens, sampling, stop_tokens: Vec::new() };
    let out = generate(&mut exec, &prompt, &config).map_err(|e| miette!("{}: {e}", path.display()))?;

    let s = &out.stats;
    if args.json {
        let json = serde_json::json!({
            "token_ids": out.tokens,
            "text": serde_json::Value::Null,
            "stats": {
                "prompt_tokens": prompt.len(),
                "new_tokens": s.new_tokens,
                "steps": s.steps,
                "tokens_per_s": s.tokens_per_s,
                "accepted_per_step": if s.steps == 0 { 0.0 } else { s.new_tokens as f64 / s.steps as f64 },
            }
        });
        println!("{json}");
    } else {
        let ids: Vec<String> = out.tokens.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
        eprintln!("{} new tokens in {} steps, {:.1} tokens/s", s.new_tokens, s.steps, s.tokens_per_s);
    }
    Ok(())
}
