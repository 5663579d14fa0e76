//! [`ModelDrafter`]: a second, smaller decoder with the same tokenizer drafts tokens greedily.
//!
//! The draft model keeps its own KV cache, which always holds a prefix of the context: before drafting,
//! the cache is rolled back to the longest prefix it shares with the context (dropping rejected drafts),
//! the missing context tokens are fed in one step, then each drafted token in a one-token step. With
//! `branches > 1` each level of the drafted chain also offers the draft model's next most likely tokens as
//! alternative leaves, which costs no extra draft steps and lets the target accept a near miss.

use super::drafter::{DraftFeedback, DraftLimits, Drafter};
use super::executor::DecoderExecutor;
use super::step::{check_decoder_contract, run_step};
use super::tree::TokenTree;
use crate::RuntimeError;

/// A drafter running its own decoder graph.
pub struct ModelDrafter {
    exec: Box<dyn DecoderExecutor>,
    draft_len: usize,
    branches: usize,
    /// The tokens in the draft model's KV cache, in order.
    cached: Vec<u32>,
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
        Ok(ModelDrafter { exec: Box::new(exec), draft_len, branches, cached: Vec::new() })
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

impl Drafter for ModelDrafter {
    fn begin(&mut self, _prompt: &[u32]) -> Result<(), RuntimeError> {
        // Nothing to forget: the next proposal keeps only the cached prefix the new context shares (a
        // repeated prompt is not fed again).
        Ok(())
    }

    fn propose(&mut self, context: &[u32], limits: DraftLimits) -> Result<TokenTree, RuntimeError> {
        let mut tree = TokenTree::new();
        let depth = self.draft_len.min(limits.max_depth);
        if depth == 0 || context.is_empty() {
            return Ok(tree);
        }
        // Keep the shared prefix, but always feed at least the context's last token to get its logits.
        let shared = self.cached.iter().zip(context).take_while(|(a, b)| a == b).count().min(context.len() - 1);
        self.exec.truncate_kv(shared)?;
        self.cached.truncate(shared);
        let mut logits = self.feed(&context[shared..])?;
        let mut path = Vec::with_capacity(depth);
        for d in 0..depth {
            let ranked = top_k(&logits, self.branches);
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
        Ok(tree)
    }

    fn observe(&mut self, _context: &[u32], _feedback: DraftFeedback) -> Result<(), RuntimeError> {
        // The cache is brought in line with the context lazily, at the next proposal.
        Ok(())
    }
}
