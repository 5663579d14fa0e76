//! The generation loop over a decoder graph: prefill, then one-token decode steps that reuse the
//! executor's KV cache, with greedy or seeded sampling.
//!
//! # The decoder-graph contract
//!
//! A graph [`generate`] can drive has
//! - input 0 `ids: i64[1, seq]`: the token ids of this step;
//! - input 1 `positions: i64[1, seq]`: their positions in the sequence (`0, 1, ...` in the prefill,
//!   then the next position at each decode step);
//! - output 0 `logits: f32[1, seq, vocab]`: the next-token logits after each of the step's tokens
//!   (further outputs are ignored);
//! - `attention` ops with a `layer`, so that keys and values of earlier steps come from the
//!   executor's KV cache (a step feeds only its new tokens).

mod generate;
mod sampling;

pub use generate::{GenerateConfig, GenerateOutput, GenerateStats, generate, generate_streaming};
pub use sampling::{Sampler, Sampling, argmax};
