//! `kiln logits`: the next-token logits after a prompt (the last position), for comparing kiln with a
//! reference implementation.

use std::io::Write;
use std::path::PathBuf;

use miette::{IntoDiagnostic, Result, miette};

use kiln::Progress;

use super::loading::{DeviceArgs, decoder_executor, open_with_kernels};
use super::prompt::{PromptArgs, model_tokenizer, prompt_ids};

#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    /// The model: a Hugging Face directory, a `.gguf` file, a `.kir` graph or a compiled `.kiln` artifact.
    model: PathBuf,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Pass pipeline applied to a model before running (default: `onnx` for `.onnx` models, else `default`; an
    /// artifact runs as compiled).
    #[arg(long)]
    pipeline: Option<String>,
    /// Print `{"prompt_ids": [...], "logits": [...]}` (non-finite logits as null); without it, the ten
    /// highest logits, one a line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: LogitsArgs) -> Result<()> {
    let path = &args.model;
    let progress = Progress::on_terminal(args.json);
    let (model, kernels) =
        open_with_kernels(path, args.weights.as_deref(), args.pipeline.as_deref(), args.device.device, &progress)?;
    let tokenizer = model_tokenizer(&model, path)?;
    let prompt = prompt_ids(&args.prompt, &model, tokenizer.as_ref(), path)?;
    let mut exec = decoder_executor(model, kernels, args.device, prompt.len(), path)?;
    let positions: Vec<i64> = (0..prompt.len() as i64).collect();
    let last = exec.step_last(&prompt, &positions).map_err(|e| miette!("{}: {e}", path.display()))?;
    let last = last.as_slice();
    let vocab = last.len();

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
