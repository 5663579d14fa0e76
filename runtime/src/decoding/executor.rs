//! [`DecoderExecutor`]: what the generation loops need from an executor of a decoder graph, so that the
//! same loops (plain, speculative, draft models) drive the CPU reference executor and the CUDA one.

use kiln_ir::Graph;

use super::sampling::{Sampler, argmax};
use super::step::decoder_inputs;
use crate::cpu::ROW_INDEPENDENT_MAX_ROWS;
use crate::{CpuExecutor, RuntimeError};
use kiln_ir::TensorData;

/// An executor of a decoder graph (see the contract in [`crate::decoding`]) that keeps a KV cache.
pub trait DecoderExecutor {
    /// The decoder graph it runs (the loops check its signature and whether it takes a tree mask).
    fn graph(&self) -> &Graph;

    /// Runs one step on `ids` at `positions` (with `mask`, row-major `[n, n]`, or the causal mask when
    /// `None`), appending the step's keys and values to the KV cache, and returns the logits,
    /// `[ids.len(), vocab]` row-major, and the vocabulary size. A failed step leaves the cache as it was.
    fn step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(Vec<f32>, usize), RuntimeError>;

    /// A causal step that returns only the last row's logits (a prefill, or a draft model catching up),
    /// which lets an executor skip computing and copying the other rows.
    fn step_last(&mut self, ids: &[u32], positions: &[i64]) -> Result<Vec<f32>, RuntimeError> {
        let (logits, vocab) = self.step(ids, positions, None)?;
        Ok(logits[logits.len() - vocab..].to_vec())
    }

    /// A step that returns only the greedy token after each row: [`argmax`] of each row of
    /// [`DecoderExecutor::step`]'s logits, ties to the lowest id, the same error for a row with a NaN or
    /// +inf logit. Executors whose logits live on an accelerator pick there, so that only ids cross to the
    /// host.
    fn step_argmax(&mut self, ids: &[u32], positions: &[i64], mask: Option<&[bool]>) -> Result<Vec<u32>, RuntimeError> {
        let (logits, vocab) = self.step(ids, positions, mask)?;
        logits.chunks(vocab).map(argmax).collect()
    }

    /// A causal step (a prefill, or one decode token) that picks the token after its last row with
    /// `sampler`. Greedy picks equal [`argmax`] of [`DecoderExecutor::step_last`]. An executor may draw on
    /// its device: with the same uniform number from `sampler` and the same rule (top-k, top-p, candidate
    /// order), so the draw follows the same distribution and differs from the host's only when rounding of
    /// the cumulative sums moves a boundary past that number.
    fn step_last_token(&mut self, ids: &[u32], positions: &[i64], sampler: &mut Sampler) -> Result<u32, RuntimeError> {
        let last = self.step_last(ids, positions)?;
        sampler.sample(&last)
    }

    /// Plain decoding of up to `max` tokens, one per step, each picked by `sampler`: feeds `first` at
    /// `first_position`, then each chosen token at the next position, and hands every chosen token to
    /// `on_token` until it returns false. Returns how many steps' tokens it handed over; the KV cache then
    /// holds the tokens those steps fed, and `sampler` has drawn the uniform numbers of exactly those steps
    /// (after a failed step, how far it has drawn is unspecified).
    /// The tokens are [`DecoderExecutor::step_last_token`]'s ([`decode_steps`]); an executor may queue
    /// steps ahead of `on_token` (the CUDA one does, so that its GPU does not wait for the host between
    /// steps), as long as what it hands over, caches and draws is the same.
    fn decode_run(
        &mut self,
        first: u32,
        first_position: i64,
        max: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<usize, RuntimeError> {
        decode_steps(self, first, first_position, max, sampler, on_token)
    }

    /// Number of tokens in the KV cache.
    fn kv_len(&self) -> usize;

    /// Empties the KV cache.
    fn reset(&mut self);

    /// Keeps only the first `len` cached tokens; `len` above [`DecoderExecutor::kv_len`] is an error.
    fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError>;

    /// Keeps exactly the cache slots `keep`, in that order (see [`CpuExecutor::compact_kv`]).
    fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError>;

    /// The most tokens one step may carry while the logits of each of its rows stay bit-identical to
    /// those of a step that carries that token alone. Greedy speculative decoding is exact only within it,
    /// so the speculative loop never verifies larger trees.
    fn max_exact_step_rows(&self) -> usize;

    /// Where it runs, for reports (`cpu`, or the GPU and which kernel image it loaded).
    fn device(&self) -> String {
        "cpu".to_string()
    }

    /// An estimate of what one more token adds to the time of a short step, as a fraction of a one-token
    /// step. Drafters weigh their guesses against it: a guess is worth verifying only when the chance
    /// that it is accepted is higher. Decode steps are bound by reading the weights, which extra tokens
    /// share, so it is small where compute is plentiful (a GPU) and larger on a CPU.
    fn extra_row_cost(&self) -> f64 {
        DEFAULT_EXTRA_ROW_COST
    }
}

/// [`DecoderExecutor::extra_row_cost`] for executors that do not say.
pub const DEFAULT_EXTRA_ROW_COST: f64 = 0.1;

impl DecoderExecutor for CpuExecutor {
    fn graph(&self) -> &Graph {
        CpuExecutor::graph(self)
    }

    fn step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(Vec<f32>, usize), RuntimeError> {
        let n = ids.len();
        let inputs = decoder_inputs(self.graph(), ids, positions, mask)?;
        let mut outputs = self.run(&inputs)?;
        let logits = outputs.swap_remove(0);
        let (&[1, s, vocab], TensorData::F32(_)) = (logits.shape(), logits.data()) else {
            return Err(RuntimeError::DecoderContract {
                message: format!("output 0 is {}, not f32[1, seq, vocab]", logits.ty()),
            });
        };
        if s != n || vocab == 0 {
            return Err(RuntimeError::DecoderContract {
                message: format!("for {n} tokens output 0 has shape {:?}, not [1, {n}, vocab]", logits.shape()),
            });
        }
        let TensorData::F32(values) = logits.into_data() else { unreachable!("matched as f32 above") };
        Ok((values, vocab))
    }

    fn kv_len(&self) -> usize {
        CpuExecutor::kv_len(self)
    }

    fn reset(&mut self) {
        CpuExecutor::reset(self)
    }

    fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError> {
        CpuExecutor::truncate_kv(self, len)
    }

    fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        CpuExecutor::compact_kv(self, keep)
    }

    fn max_exact_step_rows(&self) -> usize {
        ROW_INDEPENDENT_MAX_ROWS
    }

    fn extra_row_cost(&self) -> f64 {
        // Measured with tests/tests/speculative_decoding.rs `step_cost_by_rows` on a 2-core AVX-512 CPU:
        // a step of 8 tokens costs about 1.5-1.9 one-token steps for SmolLM2-135M and the default model.
        0.1
    }
}

/// [`DecoderExecutor::decode_run`] one step at a time: what it means, and what executors that do not queue
/// steps ahead run.
pub fn decode_steps<E: DecoderExecutor + ?Sized>(
    exec: &mut E,
    first: u32,
    first_position: i64,
    max: usize,
    sampler: &mut Sampler,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<usize, RuntimeError> {
    let (mut token, mut steps) = (first, 0);
    while steps < max {
        token = exec.step_last_token(&[token], &[first_position + steps as i64], sampler)?;
        steps += 1;
        if !on_token(token) {
            break;
        }
    }
    Ok(steps)
}

/// A boxed executor (as the CLI picks one at run time) is an executor.
impl<E: DecoderExecutor + ?Sized> DecoderExecutor for Box<E> {
    fn graph(&self) -> &Graph {
        (**self).graph()
    }

    fn step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(Vec<f32>, usize), RuntimeError> {
        (**self).step(ids, positions, mask)
    }

    fn step_last(&mut self, ids: &[u32], positions: &[i64]) -> Result<Vec<f32>, RuntimeError> {
        (**self).step_last(ids, positions)
    }

    fn step_argmax(&mut self, ids: &[u32], positions: &[i64], mask: Option<&[bool]>) -> Result<Vec<u32>, RuntimeError> {
        (**self).step_argmax(ids, positions, mask)
    }

    fn step_last_token(&mut self, ids: &[u32], positions: &[i64], sampler: &mut Sampler) -> Result<u32, RuntimeError> {
        (**self).step_last_token(ids, positions, sampler)
    }

    fn decode_run(
        &mut self,
        first: u32,
        first_position: i64,
        max: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<usize, RuntimeError> {
        (**self).decode_run(first, first_position, max, sampler, on_token)
    }

    fn kv_len(&self) -> usize {
        (**self).kv_len()
    }

    fn reset(&mut self) {
        (**self).reset()
    }

    fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError> {
        (**self).truncate_kv(len)
    }

    fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        (**self).compact_kv(keep)
    }

    fn max_exact_step_rows(&self) -> usize {
        (**self).max_exact_step_rows()
    }

    fn device(&self) -> String {
        (**self).device()
    }

    fn extra_row_cost(&self) -> f64 {
        (**self).extra_row_cost()
    }
}
