//! [`RecomputingExecutor`]: drives a decoder graph that has no KV cache (no `attention` op with a
//! `layer`: an ONNX export whose attention could not be raised) by running the whole sequence at every
//! step. Slow (each step costs a prefill), but correct: the generation loops and speculative decoding
//! with token chains work unchanged, because the "cache" is the list of tokens seen so far.
//!
//! Positions are always `0..len`: a step must continue the sequence (its positions follow the cached
//! tokens). Token trees cannot be verified by recomputing (the graph's attention is causal over the
//! sequence), so a non-causal mask is refused; the loops only send one when the graph has a `tree_mask`
//! input, which raising adds only together with cached attention.

use kiln_ir::{Graph, Op};

use super::executor::DecoderExecutor;
use super::step::check_decoder_contract;
use crate::{CpuExecutor, RuntimeError};

/// Whether a decoder graph keeps keys and values in the executor's KV cache (some `attention` has a
/// `layer`); a graph without must be driven by [`RecomputingExecutor`].
pub fn uses_kv_cache(g: &Graph) -> bool {
    g.nodes().any(|(_, n)| matches!(n.op, Op::Attention { layer: Some(_), .. }))
}

/// A [`CpuExecutor`] over a cache-less decoder graph, recomputing the sequence at each step.
#[derive(Debug)]
pub struct RecomputingExecutor {
    exec: CpuExecutor,
    /// The tokens of the sequence so far (what a KV cache would hold).
    tokens: Vec<u32>,
}

impl RecomputingExecutor {
    /// Wraps `exec`, whose graph must follow the decoder contract and have no cached attention.
    pub fn new(exec: CpuExecutor) -> Result<RecomputingExecutor, RuntimeError> {
        check_decoder_contract(exec.graph())?;
        if uses_kv_cache(exec.graph()) {
            return Err(RuntimeError::DecoderContract {
                message: "the graph keeps a KV cache; run it with its executor directly, not by recomputing".into(),
            });
        }
        Ok(RecomputingExecutor { exec, tokens: Vec::new() })
    }
}

impl DecoderExecutor for RecomputingExecutor {
    fn graph(&self) -> &Graph {
        self.exec.graph()
    }

    fn step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(Vec<f32>, usize), RuntimeError> {
        let n = ids.len();
        let bad = |message: String| RuntimeError::DecoderContract { message };
        let past = self.tokens.len();
        if positions.len() != n || positions.iter().enumerate().any(|(i, &p)| p != (past + i) as i64) {
            return Err(bad(format!(
                "this graph has no KV cache and recomputes the sequence, so a step must continue it at positions \
                 {past}.. in order; got {positions:?}"
            )));
        }
        if let Some(m) = mask
            && m.iter().enumerate().any(|(e, &seen)| seen != (e % n <= e / n))
        {
            return Err(bad(
                "this graph has no KV cache (its attention was not raised), so it cannot verify token trees; speculate \
                 with chains (--speculate ngram)"
                    .into(),
            ));
        }
        let all: Vec<u32> = self.tokens.iter().chain(ids).copied().collect();
        let all_positions: Vec<i64> = (0..all.len() as i64).collect();
        let (logits, vocab) = self.exec.step(&all, &all_positions, None)?;
        self.tokens.extend_from_slice(ids);
        Ok((logits[past * vocab..].to_vec(), vocab))
    }

    fn kv_len(&self) -> usize {
        self.tokens.len()
    }

    fn reset(&mut self) {
        self.tokens.clear();
    }

    fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError> {
        if len > self.tokens.len() {
            return Err(RuntimeError::Generate {
                message: format!("cannot keep {len} tokens of a sequence of {}", self.tokens.len()),
            });
        }
        self.tokens.truncate(len);
        Ok(())
    }

    fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        let kept =
            keep.iter().map(|&i| self.tokens.get(i).copied()).collect::<Option<Vec<u32>>>().ok_or_else(|| {
                RuntimeError::Generate {
                    message: format!("cannot keep slots {keep:?} of a sequence of {}", self.tokens.len()),
                }
            })?;
        self.tokens = kept;
        Ok(())
    }

    /// Each step recomputes the whole sequence, so its rows match a one-token step's exactly only while the
    /// whole sequence stays within the executor's row-independent limit.
    fn max_exact_step_rows(&self) -> usize {
        self.exec.max_exact_step_rows()
    }
}
