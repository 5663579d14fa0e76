//! `kiln bench`: prefill and decode throughput of a model or artifact, as min/median/max over repeated
//! runs after warm-up; with `--speculate`, plain decoding is measured in the same invocation and the
//! speedup reported.
//!
//! Every run decodes exactly `--new-tokens` tokens (end-of-sequence ignored), greedily unless a temperature
//! is given, so runs compare like for like: greedy plain and speculative runs produce the same tokens, and
//! sampled ones (the same seed in every run) the same distribution. Prefill tokens/s is prompt tokens over
//! the prefill time; decode tokens/s is the tokens after the first over the time of the decode steps (for
//! speculation, the verification steps), the draws included.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln::Progress;
use kiln_runtime::decoding::{DecoderExecutor, Drafter, GenerateConfig, GenerateStats, generate, generate_speculative};
use miette::{IntoDiagnostic, Result, miette};

use super::loading::{DeviceArgs, SPECULATIVE_STEP_SLACK, decoder_executor, open_with_kernels};
use super::prompt::{PromptArgs, model_tokenizer, prompt_ids};
use super::sampling_args::SamplingArgs;
use super::speculation::{Speculate, SpeculateArgs};

/// The prompt when none is given: ordinary Python, which tokenizes like the code kiln is mostly run on.
const DEFAULT_PROMPT: &str = "import os\nimport sys\n\n\ndef read_config(path):\n    \"\"\"Read a key = value file into a dict.\"\"\"\n    config = {}\n    with open(path) as f:\n        for line in f:\n            line = line.strip()\n            if not line or line.startswith('#'):\n                continue\n            key, _, value = line.partition('=')\n            config[key.strip()] = value.strip()\n    return config\n\n\ndef main():\n";

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The model or artifact (default: the model that ships in the repository).
    model: Option<PathBuf>,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Cut or repeat the prompt to exactly this many tokens (default: the prompt as it is).
    #[arg(long, value_name = "N")]
    prompt_tokens: Option<usize>,
    /// Tokens to generate per run (end-of-sequence ignored, so every run has the same length).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Measured runs.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Unmeasured runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Pass pipeline applied to a model (default: `default`; an artifact runs as compiled).
    #[arg(long)]
    pipeline: Option<String>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    speculation: SpeculateArgs,
    /// Print one JSON object (the schema is in README.md) instead of a table.
    #[arg(long)]
    json: bool,
}

/// min/median/max of a measurement.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { min: v[0], median, max: v[n - 1] }
    }
}

/// The measurements of one decoding mode.
#[derive(Debug, serde::Serialize)]
struct ModeResult {
    speculate: String,
    prefill_tokens_per_s: Spread,
    decode_tokens_per_s: Spread,
    /// Forward passes of the target per run, the prefill included.
    steps: usize,
    accepted_per_step: f64,
    acceptance_rate: f64,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if args.repeats == 0 {
        return Err(miette!("--repeats must be at least 1"));
    }
    if args.new_tokens < 2 {
        return Err(miette!("--new-tokens must be at least 2 (the first token comes from the prefill)"));
    }
    let path = args.model.clone().unwrap_or_else(kiln::model_source::default_model_path);
    let progress = Progress::on_terminal(args.json);
    let (model, kernels) =
        open_with_kernels(&path, args.weights.as_deref(), args.pipeline.as_deref(), args.device.device, &progress)?;
    let tokenizer = model_tokenizer(&model, &path)?;
    let vocab = model.meta.vocab_size;
    let mut prompt = if args.prompt.is_given() {
        prompt_ids(&args.prompt, &model, tokenizer.as_ref(), &path)?
    } else {
        match &tokenizer {
            Some(t) => t.encode(DEFAULT_PROMPT, true).map_err(|e| miette!("{}: {e}", path.display()))?,
            None => {
                return Err(miette!(
                    "{}: this model has no tokenizer, so the default prompt cannot be encoded; give --prompt-ids",
                    path.display()
                ));
            }
        }
    };
    if let Some(n) = args.prompt_tokens {
        if n == 0 {
            return Err(miette!("--prompt-tokens must be at least 1"));
        }
        prompt = prompt.iter().copied().cycle().take(n).collect();
    }
    let config =
        GenerateConfig { max_new_tokens: args.new_tokens, sampling: args.sampling.sampling(), stop_tokens: Vec::new() };
    let mut exec =
        decoder_executor(model, kernels, args.device, prompt.len() + args.new_tokens + SPECULATIVE_STEP_SLACK, &path)?;

    let runs = (args.warmup + args.repeats) as u64;
    let spec = args.speculation.speculate != Speculate::None;
    let bar = progress.count_bar(if spec { 2 * runs } else { runs }, "benchmarking");
    let plain = measure(exec.as_mut(), None, &prompt, &config, &args, &bar, &path)?;
    let speculative = if spec {
        let mut drafter = args
            .speculation
            .drafter(exec.as_ref(), vocab, args.pipeline.as_deref(), &path)?
            .expect("a speculation mode other than none has a drafter");
        Some(measure(exec.as_mut(), Some(drafter.as_mut()), &prompt, &config, &args, &bar, &path)?)
    } else {
        None
    };
    bar.finish_and_clear();
    let speedup = speculative.as_ref().map(|s| s.decode_tokens_per_s.median / plain.decode_tokens_per_s.median);

    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "model": path,
            "device": exec.device(),
            "prompt_tokens": prompt.len(),
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "sampling": args.sampling.to_json(),
            "plain": plain,
            "speculative": speculative,
            "speedup": speedup,
        });
        writeln!(out, "{json}").into_diagnostic()?;
        return Ok(());
    }
    let decoding = args.sampling.describe();
    writeln!(
        out,
        "{} on {}: {} prompt tokens, {} new tokens {decoding}, {} runs after {} warm-up (tokens/s min / median / max)",
        path.display(),
        args.device.device.name(),
        prompt.len(),
        args.new_tokens,
        args.repeats,
        args.warmup
    )
    .into_diagnostic()?;
    for m in std::iter::once(&plain).chain(speculative.as_ref()) {
        let (p, d) = (m.prefill_tokens_per_s, m.decode_tokens_per_s);
        writeln!(
            out,
            "{:<10} prefill {:>9.1} / {:>9.1} / {:>9.1}   decode {:>8.1} / {:>8.1} / {:>8.1}   {} steps, {:.2} tokens/step, \
             {:.0}% of drafts accepted",
            m.speculate,
            p.min,
            p.median,
            p.max,
            d.min,
            d.median,
            d.max,
            m.steps,
            m.accepted_per_step,
            100.0 * m.acceptance_rate
        )
        .into_diagnostic()?;
    }
    if let Some(x) = speedup {
        writeln!(out, "speedup    {x:.2}x decode tokens/s (median) over plain decoding").into_diagnostic()?;
    }
    Ok(())
}

/// Runs `warmup` then `repeats` generations and summarises the measured ones.
fn measure(
    exec: &mut dyn DecoderExecutor,
    mut drafter: Option<&mut dyn Drafter>,
    prompt: &[u32],
    config: &GenerateConfig,
    args: &BenchArgs,
    bar: &indicatif::ProgressBar,
    path: &Path,
) -> Result<ModeResult> {
    let mut stats: Vec<GenerateStats> = Vec::new();
    for run in 0..args.warmup + args.repeats {
        let out = match drafter.as_deref_mut() {
            None => generate(exec, prompt, config),
            Some(d) => generate_speculative(exec, d, prompt, config),
        }
        .map_err(|e| miette!("{}: {e}", path.display()))?;
        bar.inc(1);
        if run >= args.warmup {
            stats.push(out.stats);
        }
    }
    let last = stats.last().expect("repeats >= 1").clone();
    let rate = |n: f64, s: f64| if s > 0.0 { n / s } else { 0.0 };
    Ok(ModeResult {
        speculate: if drafter.is_some() { args.speculation.speculate.name() } else { "none".to_string() },
        prefill_tokens_per_s: Spread::of(stats.iter().map(|s| rate(prompt.len() as f64, s.prefill_seconds)).collect()),
        decode_tokens_per_s: Spread::of(
            stats.iter().map(|s| rate(s.new_tokens.saturating_sub(1) as f64, s.decode_seconds)).collect(),
        ),
        steps: last.steps,
        accepted_per_step: last.accepted_per_step(),
        acceptance_rate: last.acceptance_rate(),
    })
}
