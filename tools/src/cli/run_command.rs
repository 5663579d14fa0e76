//! `kiln run`: generate text from a model or a compiled artifact, streaming it to a terminal as it comes.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use kiln::Progress;
use kiln_runtime::TextStream;
use kiln_runtime::decoding::{GenerateConfig, generate_speculative_streaming, generate_streaming};
use miette::{IntoDiagnostic, Result, miette};

use super::loading::{DeviceArgs, SPECULATIVE_STEP_SLACK, decoder_executor, open_with_kernels};
use super::prompt::{PromptArgs, model_tokenizer, prompt_ids};
use super::sampling_args::SamplingArgs;
use super::speculation::{Speculate, SpeculateArgs};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The model: a Hugging Face directory, a `.gguf` file, a `.kir` graph or a compiled `.kiln` artifact.
    /// Default: the model that ships in the repository.
    model: Option<PathBuf>,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    prompt: PromptArgs,
    /// How many tokens to generate at most (generation also stops at the model's end-of-sequence tokens).
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Keep generating past the model's end-of-sequence tokens (for benchmarks that need a fixed length).
    #[arg(long)]
    ignore_eos: bool,
    /// Pass pipeline applied to a model before running (default: `onnx` for `.onnx` models, else `default`; an
    /// artifact runs as compiled).
    #[arg(long)]
    pipeline: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
    /// Print one JSON object (`token_ids`, `text`, `stats`) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    speculation: SpeculateArgs,
}

pub fn run(args: RunArgs) -> Result<()> {
    let path = args.model.clone().unwrap_or_else(kiln::model_source::default_model_path);
    let progress = Progress::on_terminal(args.json);
    let (model, kernels) =
        open_with_kernels(&path, args.weights.as_deref(), args.pipeline.as_deref(), args.device.device, &progress)?;
    let tokenizer = model_tokenizer(&model, &path)?;
    let prompt = prompt_ids(&args.prompt, &model, tokenizer.as_ref(), &path)?;
    let sampling = args.sampling.sampling();
    let stop_tokens = if args.ignore_eos { Vec::new() } else { model.meta.eos_token_ids.clone() };
    let config = GenerateConfig { max_new_tokens: args.max_new_tokens, sampling, stop_tokens };
    let vocab = model.meta.vocab_size;
    let mut exec = decoder_executor(
        model,
        kernels,
        args.device,
        prompt.len() + args.max_new_tokens + SPECULATIVE_STEP_SLACK,
        &path,
    )?;
    let mut drafter = args.speculation.drafter(exec.as_ref(), vocab, args.pipeline.as_deref(), &path)?;

    // Text goes out token by token only to a person watching; pipes and --json get it whole at the end.
    let stream = tokenizer.as_ref().filter(|_| !args.json && std::io::stdout().is_terminal());
    // Without streamed text, a person watching stderr sees a bar instead.
    let bar = if stream.is_none() {
        progress.count_bar(args.max_new_tokens as u64, "generating")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut printer = StreamPrinter { stream: stream.map(|t| t.stream(false)), error: None };
    let mut on_token = |id| {
        bar.inc(1);
        printer.push(id)
    };
    let out = match drafter.as_deref_mut() {
        None => generate_streaming(exec.as_mut(), &prompt, &config, &mut on_token),
        Some(d) => generate_speculative_streaming(exec.as_mut(), d, &prompt, &config, &mut on_token),
    }
    .map_err(|e| miette!("{}: {e}", path.display()))?;
    bar.finish_and_clear();
    let streamed = printer.finish()?;

    let text = tokenizer
        .as_ref()
        .map(|t| t.decode(&out.tokens, false))
        .transpose()
        .map_err(|e| miette!("{}: {e}", path.display()))?;
    let s = &out.stats;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "token_ids": out.tokens,
            "text": text,
            "stats": {
                "prompt_tokens": prompt.len(),
                "new_tokens": s.new_tokens,
                "steps": s.steps,
                "tokens_per_s": s.tokens_per_s,
                "prefill_seconds": s.prefill_seconds,
                "decode_seconds": s.decode_seconds,
                "accepted_per_step": s.accepted_per_step(),
                "speculate": args.speculation.speculate.name(),
                "device": exec.device(),
                "draft_tokens": s.draft_tokens,
                "accepted_draft_tokens": s.accepted_draft_tokens,
                "acceptance_rate": s.acceptance_rate(),
            }
        });
        writeln!(stdout, "{json}").into_diagnostic()?;
    } else {
        match (streamed, text) {
            (true, _) => writeln!(stdout),
            (false, Some(text)) => writeln!(stdout, "{text}"),
            (false, None) => {
                let ids: Vec<String> = out.tokens.iter().map(u32::to_string).collect();
                writeln!(stdout, "{}", ids.join(" "))
            }
        }
        .into_diagnostic()?;
        eprintln!("{} new tokens in {} steps, {:.1} tokens/s", s.new_tokens, s.steps, s.tokens_per_s);
        if args.speculation.speculate != Speculate::None {
            eprintln!(
                "speculation ({}): {:.2} tokens per decode step, {:.0}% of {} draft tokens accepted",
                args.speculation.speculate.name(),
                s.accepted_per_step(),
                100.0 * s.acceptance_rate(),
                s.draft_tokens
            );
        }
    }
    stdout.flush().into_diagnostic()?;
    Ok(())
}

/// Writes each generated token's text to stdout as soon as it is complete.
struct StreamPrinter<'a> {
    stream: Option<TextStream<'a>>,
    /// The first failure; generation cannot be interrupted from the callback, so it is reported after.
    error: Option<miette::Report>,
}

impl StreamPrinter<'_> {
    fn push(&mut self, id: u32) {
        let Some(stream) = self.stream.as_mut() else { return };
        if self.error.is_some() {
            return;
        }
        let result = match stream.push(id) {
            Ok(Some(piece)) => write_flushed(&piece),
            Ok(None) => Ok(()),
            Err(e) => Err(miette!("{e}")),
        };
        self.error = result.err();
    }

    /// Writes what the stream held back; true if text was streamed at all.
    fn finish(self) -> Result<bool> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let Some(stream) = self.stream else { return Ok(false) };
        write_flushed(&stream.finish().map_err(|e| miette!("{e}"))?)?;
        Ok(true)
    }
}

fn write_flushed(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).into_diagnostic()
}
