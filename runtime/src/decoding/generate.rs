//! `generate`: the plain (non-speculative) generation loop over a decoder graph.
//!
//! It empties the executor's KV cache, runs the whole prompt once (the prefill), then feeds one token
//! per step at the next position, sampling each next token from the last row of logits. Generation
//! stops after `max_new_tokens`, or right after a stop token (which is kept in the output).

use std::time::Instant;

use super::executor::DecoderExecutor;
use super::sampling::{Sampler, Sampling};
use super::step::check_decoder_contract;
use crate::RuntimeError;

/// What to generate and how.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Generation ends after producing any of these (end-of-sequence ids).
    pub stop_tokens: Vec<u32>,
}

/// Counters and timings of one generation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerateStats {
    /// Tokens produced (stop token included).
    pub new_tokens: usize,
    /// Forward passes of the model, the prefill included.
    pub steps: usize,
    /// Seconds spent in the prefill pass and sampling its first token.
    pub prefill_seconds: f64,
    /// Seconds spent in the decode steps.
    pub decode_seconds: f64,
    /// `new_tokens / (prefill_seconds + decode_seconds)`; 0 when nothing was generated.
    pub tokens_per_s: f64,
    /// Draft tokens proposed to the target for verification (speculative decoding; 0 otherwise). For a
    /// token tree, every node counts.
    pub draft_tokens: usize,
    /// Draft tokens the target accepted (speculative decoding; 0 otherwise).
    pub accepted_draft_tokens: usize,
}

impl GenerateStats {
    /// Tokens produced per decode step: `(new_tokens - 1) / (steps - 1)` (the prefill produces the first
    /// token, every decode step one or more), so exactly 1 for plain decoding; 0 without decode steps.
    pub fn accepted_per_step(&self) -> f64 {
        if self.steps <= 1 || self.new_tokens == 0 {
            0.0
        } else {
            (self.new_tokens - 1) as f64 / (self.steps - 1) as f64
        }
    }

    /// `accepted_draft_tokens / draft_tokens`; 0 when nothing was drafted.
    pub fn acceptance_rate(&self) -> f64 {
        if self.draft_tokens == 0 { 0.0 } else { self.accepted_draft_tokens as f64 / self.draft_tokens as f64 }
    }
}

/// The generated tokens (without the prompt) and the stats.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOutput {
    pub tokens: Vec<u32>,
    pub stats: GenerateStats,
}

/// Generates up to `config.max_new_tokens` tokens after `prompt` with a decoder graph (see the
/// contract in [`crate::decoding`]). The executor's KV cache is reset first and holds the prompt and
/// the generated tokens (but the last) afterwards.
pub fn generate(
    exec: &mut dyn DecoderExecutor,
    prompt: &[u32],
    config: &GenerateConfig,
) -> Result<GenerateOutput, RuntimeError> {
    generate_streaming(exec, prompt, config, |_| {})
}

/// [`generate`], calling `on_token` with each new token as soon as it is sampled (to print text while
/// the model is still generating).
pub fn generate_streaming(
    exec: &mut dyn DecoderExecutor,
    prompt: &[u32],
    config: &GenerateConfig,
    mut on_token: impl FnMut(u32),
) -> Result<GenerateOutput, RuntimeError> {
    let Some(Prefill { mut sampler, first: next, mut stats, .. }) = prefill(exec, prompt, config)? else {
        return Ok(GenerateOutput { tokens: Vec::new(), stats: GenerateStats::default() });
    };
    let mut tokens = vec![next];
    on_token(next);

    let start = Instant::now();
    let stops = |t: &u32| config.stop_tokens.contains(t);
    // Plain decoding needs nothing from the host between steps but the uniform numbers, which do not
    // depend on the tokens, so the executor may queue steps ahead.
    if tokens.len() < config.max_new_tokens && !stops(&next) {
        let position = (prompt.len() + tokens.len() - 1) as i64;
        let max = config.max_new_tokens - tokens.len();
        stats.steps += exec.decode_run(next, position, max, &mut sampler, &mut |t| {
            tokens.push(t);
            on_token(t);
            !stops(&t)
        })?;
    }
    stats.decode_seconds = start.elapsed().as_secs_f64();

    stats.new_tokens = tokens.len();
    let seconds = stats.prefill_seconds + stats.decode_seconds;
    stats.tokens_per_s = if seconds > 0.0 { stats.new_tokens as f64 / seconds } else { 0.0 };
    Ok(GenerateOutput { tokens, stats })
}

/// What plain and speculative decoding both start from: the prompt's prefill and its sampled first token.
pub(super) struct Prefill {
    pub sampler: Sampler,
    pub first: u32,
    /// Entries in one row of logits.
    pub vocab: usize,
    /// `steps` = 1 and `prefill_seconds` filled in.
    pub stats: GenerateStats,
}

/// Checks the request and the graph, empties the KV cache and runs the prompt, sampling the first new
/// token. `None` when no token is asked for.
pub(super) fn prefill(
    exec: &mut dyn DecoderExecutor,
    prompt: &[u32],
    config: &GenerateConfig,
) -> Result<Option<Prefill>, RuntimeError> {
    if prompt.is_empty() {
        return Err(RuntimeError::Generate { message: "the prompt is empty; give at least one token".to_string() });
    }
    let mut sampler = Sampler::new(&config.sampling)?;
    check_decoder_contract(exec.graph())?;
    exec.reset();
    if config.max_new_tokens == 0 {
        return Ok(None);
    }
    let start = Instant::now();
    let positions: Vec<i64> = (0..prompt.len() as i64).collect();
    // The token is picked where the logits are (see `DecoderExecutor::step_last_token`) when the graph says
    // how wide a logits row is; otherwise the row itself tells.
    let (first, vocab) = match logits_width(exec.graph()) {
        Some(vocab) => (exec.step_last_token(prompt, &positions, &mut sampler)?, vocab),
        None => {
            let last = exec.step_last(prompt, &positions)?;
            (sampler.sample(&last)?, last.len())
        }
    };
    if exec.kv_len() != prompt.len() {
        return Err(RuntimeError::DecoderContract {
            message: format!(
                "after a prefill of {} tokens the KV cache holds {}; the graph's attention ops must set `layer` \
                 so that decode steps can reuse the cache",
                prompt.len(),
                exec.kv_len()
            ),
        });
    }
    let stats = GenerateStats { steps: 1, prefill_seconds: start.elapsed().as_secs_f64(), ..GenerateStats::default() };
    Ok(Some(Prefill { sampler, first, vocab, stats }))
}

/// The static width of a logits row (output 0 is `f32[1, seq, vocab]`), when the graph fixes it.
fn logits_width(g: &kiln_ir::Graph) -> Option<usize> {
    let logits = *g.outputs().first()?;
    g.value_type(logits).shape.dims().last()?.as_static().map(|v| v as usize)
}
