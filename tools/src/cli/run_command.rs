//! `kiln run`: generate text from a model with the CPU executor, streaming it to a terminal as it comes.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use kiln_ir::{Graph, Model};
use kiln_runtime::TextStream;
use kiln_runtime::cpu::CpuExecutor;
use kiln_runtime::decoding::{
    DecoderExecutor, Drafter, GenerateConfig, ModelDrafter, NgramConfig, NgramDrafter, RecomputingExecutor, Sampling,
    generate_speculative_streaming, generate_streaming, has_tree_mask, uses_kv_cache,
};
use miette::{IntoDiagnostic, Result, miette};

use super::diagnostics::report;
use super::prompt::{PromptArgs, model_tokenizer, prompt_ids};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The model: a Hugging Face directory, a `.gguf` file or a `.kir` graph. Default: the model that
    /// ships in the repository.
    model: Option<PathBuf>,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    prompt: PromptArgs,
    /// How many tokens to generate at most (generation also stops at the model's end-of-sequence tokens).
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
    /// Keep generating past the model's end-of-sequence tokens (for benchmarks that need a fixed length).
    #[arg(long)]
    ignore_eos: bool,
    /// Pass pipeline applied before running (default: `onnx` for `.onnx` models, else `default`).
    #[arg(long)]
    pipeline: Option<String>,
    /// Print one JSON object (`token_ids`, `text`, `stats`) instead of text.
    #[arg(long)]
    json: bool,
    /// Speculative decoding: `none`, `ngram` (adaptive n-gram drafting from the context), `tree` (n-gram
    /// drafts branching into a token tree verified in one step), or `draft:PATH` (a smaller model with the
    /// same tokenizer drafts). Greedy output is identical to `none`; sampling keeps its distribution.
    #[arg(long, default_value = "none")]
    speculate: Speculate,
    /// The longest draft per step.
    #[arg(long, default_value_t = 7)]
    draft_len: usize,
    /// The longest n-gram the n-gram drafters match.
    #[arg(long, default_value_t = 5)]
    ngram_max: usize,
    /// Candidates per tree level (`tree`: first-token branches, default 3; `draft:PATH`: the draft model's
    /// top tokens per level, default 1, a chain).
    #[arg(long)]
    branches: Option<usize>,
}

/// The `--speculate` choice.
#[derive(Clone, Debug, PartialEq)]
enum Speculate {
    None,
    Ngram,
    Tree,
    Draft(PathBuf),
}

impl std::str::FromStr for Speculate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Speculate, String> {
        match s {
            "none" => Ok(Speculate::None),
            "ngram" => Ok(Speculate::Ngram),
            "tree" => Ok(Speculate::Tree),
            _ => match s.strip_prefix("draft:") {
                Some("") => Err("`draft:` needs the draft model's path, as in `draft:models/small`".to_string()),
                Some(path) => Ok(Speculate::Draft(PathBuf::from(path))),
                None => Err(format!("`{s}` is not one of none, ngram, tree, draft:PATH")),
            },
        }
    }
}

impl Speculate {
    fn name(&self) -> String {
        match self {
            Speculate::None => "none".to_string(),
            Speculate::Ngram => "ngram".to_string(),
            Speculate::Tree => "tree".to_string(),
            Speculate::Draft(p) => format!("draft:{}", p.display()),
        }
    }
}

/// The drafter `--speculate` asks for (`None` for plain decoding), checked against the target.
fn drafter(args: &RunArgs, target: &Graph, vocab: u64, path: &Path) -> Result<Option<Box<dyn Drafter>>> {
    let ngram = |branches: usize| -> Result<Option<Box<dyn Drafter>>> {
        let config = NgramConfig { ngram_max: args.ngram_max, draft_len: args.draft_len, branches };
        Ok(Some(Box::new(NgramDrafter::new(config).map_err(|e| miette!("{e}"))?)))
    };
    match &args.speculate {
        Speculate::None => Ok(None),
        Speculate::Ngram => ngram(1),
        Speculate::Tree => {
            if !has_tree_mask(target) {
                return Err(miette!(
                    "{}: --speculate tree needs a decoder graph with a `tree_mask: bool[seq, seq]` input; this graph \
                     has only ids and positions (use --speculate ngram)",
                    path.display()
                ));
            }
            ngram(args.branches.unwrap_or(3))
        }
        Speculate::Draft(draft_path) => {
            let branches = args.branches.unwrap_or(1);
            if branches > 1 && !has_tree_mask(target) {
                return Err(miette!(
                    "{}: --branches {branches} drafts token trees, which need a decoder graph with a `tree_mask` input",
                    path.display()
                ));
            }
            let draft = kiln::load_model(draft_path, None).map_err(report)?;
            // A `.kir` graph may not know its vocabulary (0); the loop still refuses out-of-range drafts.
            if draft.meta.vocab_size != vocab && draft.meta.vocab_size != 0 && vocab != 0 {
                return Err(miette!(
                    "{}: the draft model has a vocabulary of {} tokens but the target has {vocab}; they must share a \
                     tokenizer",
                    draft_path.display(),
                    draft.meta.vocab_size
                ));
            }
            let exec = cpu_executor(draft, args.pipeline.as_deref(), draft_path)?;
            let drafter = ModelDrafter::new(exec, args.draft_len, branches)
                .map_err(|e| miette!("{}: {e}", draft_path.display()))?;
            Ok(Some(Box::new(drafter)))
        }
    }
}

/// Runs `pipeline` (or the model's default pipeline) over the model's graph and builds a CPU executor for it.
pub(super) fn cpu_executor(mut model: Model, pipeline: Option<&str>, path: &Path) -> Result<CpuExecutor> {
    let name = pipeline.unwrap_or_else(|| kiln::lowering::default_pipeline(path));
    let mut manager = kiln_passes::pipelines::pipeline(name).map_err(|e| miette!("{e}"))?;
    kiln::lowering::run_pipeline(&mut model, &mut manager).map_err(|e| miette!("{}: {e}", path.display()))?;
    CpuExecutor::new(model.graph, model.weights).map_err(|e| miette!("{}: {e}", path.display()))
}

/// [`cpu_executor`] as the generation loops drive it: with its KV cache, or, for a graph without cached
/// attention (an ONNX export whose attention was not raised), recomputing the sequence at each step.
pub(super) fn decoder_executor(model: Model, pipeline: Option<&str>, path: &Path) -> Result<Box<dyn DecoderExecutor>> {
    let exec = cpu_executor(model, pipeline, path)?;
    if uses_kv_cache(exec.graph()) {
        return Ok(Box::new(exec));
    }
    eprintln!(
        "note: {}: the graph has no KV-cache attention (see `kiln ir MODEL --pipeline onnx` for why), so each step \
         recomputes the whole sequence",
        path.display()
    );
    Ok(Box::new(RecomputingExecutor::new(exec).map_err(|e| miette!("{}: {e}", path.display()))?))
}

pub fn run(args: RunArgs) -> Result<()> {
    let path = args.model.clone().unwrap_or_else(kiln::model_source::default_model_path);
    let model = kiln::load_model(&path, args.weights.as_deref()).map_err(report)?;
    let tokenizer = model_tokenizer(&model, &path)?;
    let prompt = prompt_ids(&args.prompt, &model, tokenizer.as_ref(), &path)?;
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
    let stop_tokens = if args.ignore_eos { Vec::new() } else { model.meta.eos_token_ids.clone() };
    let config = GenerateConfig { max_new_tokens: args.max_new_tokens, sampling, stop_tokens };
    let vocab = model.meta.vocab_size;
    let mut exec = decoder_executor(model, args.pipeline.as_deref(), &path)?;
    let mut drafter = drafter(&args, exec.graph(), vocab, &path)?;

    // Text goes out token by token only to a person watching; pipes and --json get it whole at the end.
    let stream = tokenizer.as_ref().filter(|_| !args.json && std::io::stdout().is_terminal());
    let mut printer = StreamPrinter { stream: stream.map(|t| t.stream(false)), error: None };
    let out = match drafter.as_deref_mut() {
        None => generate_streaming(exec.as_mut(), &prompt, &config, |id| printer.push(id)),
        Some(d) => generate_speculative_streaming(exec.as_mut(), d, &prompt, &config, |id| printer.push(id)),
    }
    .map_err(|e| miette!("{}: {e}", path.display()))?;
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
                "speculate": args.speculate.name(),
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
        if args.speculate != Speculate::None {
            eprintln!(
                "speculation ({}): {:.2} tokens per decode step, {:.0}% of {} draft tokens accepted",
                args.speculate.name(),
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
