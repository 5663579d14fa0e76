//! The generation loop over a decoder graph: prefill, then decode steps that reuse the executor's KV
//! cache, with greedy or seeded sampling ([`generate`]); and speculative decoding
//! ([`generate_speculative`]) with drafters ([`NgramDrafter`], [`ModelDrafter`], anything implementing
//! [`Drafter`]) whose token trees the target verifies in one step.
//!
//! # The decoder-graph contract
//!
//! A graph the decoding loops can drive has
//! - input 0 `ids: i64[1, seq]`: the token ids of this step;
//! - input 1 `positions: i64[1, seq]`: their positions in the sequence (`0, 1, ...` in the prefill,
//!   then the next position at each decode step; a node of a token tree sits at the root's position
//!   plus its depth);
//! - optionally input 2 `tree_mask: bool[seq, seq]`, passed to every `attention` op: `tree_mask[i][j]`
//!   says whether token `i` of the step sees token `j` of the step (plain steps pass the causal mask).
//!   Every graph the frontends build has it. Without it, speculation still works with chains (causal
//!   attention is a chain's mask) but token trees are refused;
//! - output 0 `logits: f32[1, seq, vocab]`: the next-token logits after each of the step's tokens
//!   (further outputs are ignored);
//! - `attention` ops with a `layer`, so that keys and values of earlier steps come from the
//!   executor's KV cache (a step feeds only its new tokens). A graph without any (an ONNX export whose
//!   attention was not raised) runs through [`RecomputingExecutor`], which feeds the whole sequence at
//!   every step.

mod drafter;
mod executor;
mod generate;
mod model_drafter;
mod ngram;
mod recompute;
mod sampling;
mod speculative;
mod step;
mod tree;

pub use drafter::{DraftFeedback, DraftLimits, Drafter};
pub use executor::{DecoderExecutor, decode_steps};
pub use generate::{GenerateConfig, GenerateOutput, GenerateStats, generate, generate_streaming};
pub use model_drafter::{DEFAULT_MODEL_DRAFT_LEN, ModelDrafter};
pub use ngram::{NgramConfig, NgramDrafter};
pub use recompute::{RecomputingExecutor, uses_kv_cache};
pub use sampling::{Candidates, Sampler, Sampling, argmax};
pub use speculative::{
    generate_speculative, generate_speculative_accepting_every_draft, generate_speculative_streaming,
};
pub use step::{check_decoder_contract, decoder_inputs, has_tree_mask, run_step};
pub use tree::{TokenTree, TreeNode};
