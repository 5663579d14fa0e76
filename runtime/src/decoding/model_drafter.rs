//! [`ModelDrafter`]: a second, smaller decoder with the same tokenizer drafts tokens greedily.
//!
//! The draft model keeps its own KV cache, which always holds a prefix of the context: before drafting,
//! the cache is rolled back to the longest prefix it shares with the context (dropping rejected drafts),
//! the missing context tokens are fed in one step, then each drafted token in a one-token step. With
//! `branches > 1` each level of the drafted chain also offers the draft model's next most likely tokens as
//! alternative leaves, which costs no extra draft steps and lets the target accept a near miss.
//!
//! # How long a draft is
//!
//! As for the n-gram drafter, a token is drafted only while the chance that the target accepts it and
//! every token before it exceeds its cost: one more verification row ([`DraftLimits::row_cost`]) plus
//! one step of the draft model ([`ModelDrafter::with_step_cost`]). The chance comes from the draft
//! model's own confidence (the probability of its top token), calibrated against the target: the
//! drafter keeps the recent acceptance rate of its guesses in each band of confidence (a moving
//! average, drifting back toward one in two, as in `ngram`). Confident guesses that the target keeps
//! accepting make long drafts; guesses the target rejects shorten them, down to none. When even the first
//! guess is rarely accepted (its recent rate, whatever the confidence, is below the cost), the drafter rests:
//! it proposes nothing and does not run the draft model at all until the rate has drifted back up, so a
//! draft model that does not fit the target costs almost nothing (the cache catches up in one step when
//! drafting resumes).

use super::drafter::{DraftFeedback, DraftLimits, Drafter};
use super::executor::DecoderExecutor;
use super::ngram::{DRIFT, LEARNING_RATE, PRIOR};
use super::step::{check_decoder_contract, run_step};
use super::tree::TokenTree;
use crate::RuntimeError;

/// Bands of draft-model confidence (the probability of its top token) with their own acceptance rates.
const CONFIDENCE_BANDS: usize = 5;

/// [`ModelDrafter::with_step_cost`] unless told otherwise: a draft model a few times smaller than the
/// target.
pub const DEFAULT_DRAFT_STEP_COST: f64 = 0.2;

/// Draft tokens per step that `kiln run --speculate draft:PATH` asks of a draft model unless told otherwise
/// (the draft model pays a step per token, so its chains are shorter than the n-gram drafter's).
pub const DEFAULT_MODEL_DRAFT_LEN: usize = 8;

/// A drafter running its own decoder graph.
pub struct ModelDrafter {
    exec: Box<dyn DecoderExecutor>,
    draft_len: usize,
    branches: usize,
    /// The tokens in the draft model's KV cache, in order.
    cached: Vec<u32>,
    step_cost: f64,
    /// Recent acceptance rates of the chain's guesses, by confidence band.
    rates: [f64; CONFIDENCE_BANDS],
    /// Recent acceptance rate of the first guess of a chain, whatever its confidence.
    first_rate: f64,
    /// The last proposal: the chain's tokens with their confidence bands, and the context length then.
    last: Option<(Vec<(u32, usize)>, usize)>,
}

impl ModelDrafter {
    /// Drafts `draft_len` tokens per step with `exec` (a decoder graph), with `branches` candidates per
    /// level (1: a single chain).
    pub fn new(
        exec: impl DecoderExecutor + 'static,
        draft_len: usize,
        branches: usize,
    ) -> Result<ModelDrafter, RuntimeError> {
        check_decoder_contract(exec.graph())?;
        if draft_len == 0 || branches == 0 {
            return Err(RuntimeError::Generate {
                message: "the draft model's draft length and branches must be at least 1".to_string(),
            });
        }
        Ok(ModelDrafter {
            exec: Box::new(exec),
            draft_len,
            branches,
            cached: Vec::new(),
            step_cost: DEFAULT_DRAFT_STEP_COST,
            rates: [PRIOR; CONFIDENCE_BANDS],
            first_rate: PRIOR,
            last: None,
        })
    }

    /// Sets the cost of one draft-model step as a fraction of a one-token target step (on
    /// memory-bound hardware, about the ratio of their weight sizes); the default is
    /// [`DEFAULT_DRAFT_STEP_COST`].
    pub fn with_step_cost(mut self, step_cost: f64) -> ModelDrafter {
        self.step_cost = step_cost;
        self
    }

    /// Feeds `tokens` after the cached ones and returns the logits after the last of them.
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let first = self.cached.len() as i64;
        let positions: Vec<i64> = (first..first + tokens.len() as i64).collect();
        let (logits, vocab) = run_step(self.exec.as_mut(), tokens, &positions, None)?;
        self.cached.extend_from_slice(tokens);
        Ok(logits[logits.len() - vocab..].to_vec())
    }
}

impl std::fmt::Debug for ModelDrafter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelDrafter")
            .field("graph", &self.exec.graph().name)
            .field("draft_len", &self.draft_len)
            .field("branches", &self.branches)
            .field("cached", &self.cached.len())
            .field("step_cost", &self.step_cost)
            .field("rates", &self.rates)
            .field("first_rate", &self.first_rate)
            .finish()
    }
}

/// The ids of the `k` largest logits, largest first (ties to the lower id).
fn top_k(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// The confidence band of the softmax probability of `token` under `logits`.
fn confidence_band(logits: &[f32], token: u32) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let p = f64::from(logits[token as usize] - max).exp() / total;
    ((p * CONFIDENCE_BANDS as f64) as usize).min(CONFIDENCE_BANDS - 1)
}

impl Drafter for ModelDrafter {
    fn begin(&mut self, _prompt: &[u32]) -> Result<(), RuntimeError> {
        // Nothing to forget: the next proposal keeps only the cached prefix the new context shares (a
        // repeated prompt is not fed again).
        Ok(())
    }

    fn propose(&mut self, context: &[u32], limits: DraftLimits) -> Result<TokenTree, RuntimeError> {
        let mut tree = TokenTree::new();
        self.last = None;
        let depth = self.draft_len.min(limits.max_depth);
        if depth == 0 || context.is_empty() {
            return Ok(tree);
        }
        let cost = limits.row_cost + self.step_cost;
        if self.first_rate < cost {
            return Ok(tree);
        }
        // Keep the shared prefix, but always feed at least the context's last token to get its logits.
        let shared = self.cached.iter().zip(context).take_while(|(a, b)| a == b).count().min(context.len() - 1);
        self.exec.truncate_kv(shared)?;
        self.cached.truncate(shared);
        let mut logits = self.feed(&context[shared..])?;
        let mut path = Vec::with_capacity(depth);
        let mut chain = Vec::with_capacity(depth);
        // The chance that every token of the chain so far is accepted.
        let mut chance = 1.0;
        for d in 0..depth {
            let ranked = top_k(&logits, self.branches);
            let band = confidence_band(&logits, ranked[0]);
            chance *= self.rates[band];
            if chance < cost {
                break;
            }
            chain.push((ranked[0], band));
            path.push(ranked[0]);
            tree.insert_path(&path, limits.max_nodes);
            for &alt in &ranked[1..] {
                path[d] = alt;
                tree.insert_path(&path, limits.max_nodes);
            }
            path[d] = ranked[0];
            if d + 1 < depth {
                logits = self.feed(&[ranked[0]])?;
            }
        }
        self.last = Some((chain, context.len()));
        Ok(tree)
    }

    fn observe(&mut self, context: &[u32], feedback: DraftFeedback) -> Result<(), RuntimeError> {
        // The cache is brought in line with the context lazily, at the next proposal. The chain's guesses
        // were judged up to the first rejected one.
        for rate in self.rates.iter_mut().chain([&mut self.first_rate]) {
            *rate += (PRIOR - *rate) * DRIFT;
        }
        let Some((chain, context_len)) = self.last.take() else { return Ok(()) };
        for (d, &(token, band)) in chain.iter().enumerate() {
            let accepted = d < feedback.accepted && context.get(context_len + d) == Some(&token);
            let verdict = f64::from(u8::from(accepted));
            self.rates[band] += (verdict - self.rates[band]) * LEARNING_RATE;
            if d == 0 {
                self.first_rate += (verdict - self.first_rate) * LEARNING_RATE;
            }
            if !accepted {
                break;
            }
        }
        Ok(())
    }
}
