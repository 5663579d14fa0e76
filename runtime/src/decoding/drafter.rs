//! The [`Drafter`] trait: what speculative decoding asks of a source of draft tokens.
//!
//! A drafter sees only token ids: the context so far, and after each verification step how its proposal
//! fared. That is all an n-gram table or a separate draft model needs, and an early-exit self-drafter
//! (the target's first layers plus a head, run on their own executor that shares the target's weights)
//! fits the same shape: it keeps its own KV cache in sync with the context the way [`super::ModelDrafter`]
//! does.

use super::tree::TokenTree;
use crate::RuntimeError;

/// Bounds on one proposal, set by the decoding loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DraftLimits {
    /// The deepest a drafted token may sit below the root (the tokens still to generate, less the bonus
    /// token every step yields).
    pub max_depth: usize,
    /// The most nodes the tree may have (the verification step's rows, less the root).
    pub max_nodes: usize,
    /// What one more drafted token adds to the cost of the verification step, as a fraction of a
    /// one-token step ([`super::DecoderExecutor::extra_row_cost`]): a token is worth drafting only when
    /// the chance that it is accepted is higher.
    pub row_cost: f64,
}

/// How the target judged the last proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DraftFeedback {
    /// Nodes proposed.
    pub proposed: usize,
    /// The proposal's depth (the longest path).
    pub depth: usize,
    /// Drafted tokens accepted (the depth of the accepted path).
    pub accepted: usize,
}

/// A source of draft tokens for speculative decoding.
pub trait Drafter {
    /// Starts a new sequence with `prompt` (forgetting any earlier one).
    fn begin(&mut self, prompt: &[u32]) -> Result<(), RuntimeError>;

    /// Proposes continuations of `context` (the prompt and every token generated so far; its last token
    /// is the root of the tree). An empty tree means "no draft this step".
    fn propose(&mut self, context: &[u32], limits: DraftLimits) -> Result<TokenTree, RuntimeError>;

    /// Reports how the target judged the last proposal; `context` now holds the tokens it accepted and
    /// the bonus token.
    fn observe(&mut self, context: &[u32], feedback: DraftFeedback) -> Result<(), RuntimeError>;
}
