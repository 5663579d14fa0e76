//! Launching the token-choice kernels (`choose.cu` in kiln-codegen): the greedy argmax of logits rows and
//! a draw with temperature, top-k and top-p, both on the device so that only token ids come back.
//! [`DeviceSampler`] runs them on logits given by the caller, which lets tests hold them to the CPU
//! sampler on exactly the same numbers.

use cudarc::driver::{CudaSlice, LaunchConfig, result};
use kiln_ir::CompiledKernel;

use super::device::{Device, KernelArgs, cuda_error};
use crate::RuntimeError;

/// Threads of the token-choice blocks (one block per row).
const BLOCK: u32 = 1024;

/// The `KILN_ERROR_*` code a token-choice kernel sets for a row the CPU sampler would refuse.
pub(super) const KILN_ERROR_LOGITS: i32 = 2;

/// How a token is drawn on the device (the CPU sampler's parameters plus its uniform number).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceDraw {
    pub temperature: f32,
    /// 0: every token.
    pub top_k: usize,
    pub top_p: f32,
    /// In [0, 1): the number the CPU sampler would draw next.
    pub uniform: f64,
}

/// Logits each block of the one-row argmax takes (`KILN_ARGMAX_SLICE` in choose.cu) and its threads.
const ARGMAX_SLICE: usize = 2048;
const ARGMAX_THREADS: u32 = 256;

/// Bytes of device scratch the one-row argmax (`kiln_argmax_split_f32`) needs for a vocabulary of `vocab`:
/// its ticket counter (8 bytes), which must be zero when the scratch is first used (the kernel's last ticket
/// wraps it back to zero), and one key per block. 8-byte aligned.
pub fn argmax_scratch_bytes(vocab: usize) -> usize {
    8 + 8 * vocab.div_ceil(ARGMAX_SLICE)
}

/// Where the one-row argmax, or a draw's last launch, sets up the next decode step on the device: the step's
/// input id (an i64), its position (an i64, advanced by one) and the step info's count of cached tokens (an
/// i32, advanced by one). All zero (the default): the kernel feeds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct NextStep {
    pub ids: u64,
    pub positions: u64,
    pub step: u64,
}

/// Queues the greedy argmax over `rows` rows of `vocab` f32 logits at `logits`, writing one i32 id per row
/// at `out` and setting the i32 at `flag` for a row with NaN or +inf or nothing above -inf. One row (a decode
/// step) is split over blocks (`kiln_argmax_split_f32`, with [`argmax_scratch_bytes`] of scratch at
/// `scratch`), which may also feed the chosen token to the next step (`next`); more rows take one block
/// each (`kiln_argmax_f32`).
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_argmax(
    device: &mut Device,
    logits: u64,
    vocab: usize,
    rows: usize,
    out: u64,
    flag: u64,
    scratch: u64,
    next: Option<NextStep>,
) -> Result<(), RuntimeError> {
    let width = vocab as i32;
    let (tickets, partial) = (scratch, scratch + 8);
    let next = next.unwrap_or_default();
    let mut b = KernelArgs::default();
    b.arg(&logits).arg(&width).arg(&out).arg(&flag);
    let (name, cfg) = if rows == 1 {
        let blocks = vocab.div_ceil(ARGMAX_SLICE) as u32;
        b.arg(&partial).arg(&tickets).arg(&next.ids).arg(&next.positions).arg(&next.step);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (ARGMAX_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        ("kiln_argmax_split_f32", cfg)
    } else {
        debug_assert_eq!(next.ids, 0, "only a one-row argmax feeds the next step");
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        ("kiln_argmax_f32", cfg)
    };
    let f = device.function(name)?;
    // SAFETY: the caller owns `rows * vocab` f32 at `logits`, `rows` i32 at `out`, an i32 at `flag`, the
    // scratch, and (when given) the next step's inputs.
    unsafe { device.launch(&f, cfg, &mut b) }.map_err(cuda_error(format!("launching {name}")))?;
    Ok(())
}

/// Logits each block of the draw's grid launches takes (`KILN_SAMPLE_SLICE` in choose.cu), their threads,
/// the threads of the block that finishes a walk, and the bytes of the draw's state (`KILN_SAMPLE_STATE_BYTES`).
pub(super) const SAMPLE_SLICE: usize = 1024;
pub(super) const SAMPLE_THREADS: u32 = 256;
pub(super) const SAMPLE_FINISH_THREADS: u32 = 1024;
pub(super) const SAMPLE_STATE_BYTES: usize = 24640;

/// Bytes of device scratch a draw needs for a vocabulary of `vocab`: its state, which must be zero when the
/// scratch is first used (every draw leaves it zero again), then the weights and the walk's list of keys and
/// weights (8 bytes each per token). 8-byte aligned.
pub fn sample_scratch_bytes(vocab: usize) -> usize {
    SAMPLE_STATE_BYTES + 3 * 8 * vocab
}

/// One walk of a draw (see choose.cu): the arguments its `kiln_sample_hist_f32` and `kiln_sample_finish_f32`
/// launches take, as the kernels' `int`, `long long` and `double` parameters.
struct SampleWalk {
    /// 1: the hist launch computes the weights (and stores them for the later launches).
    compute_weights: i32,
    /// 1: a walk over weights; 0: over counts.
    weighted: i32,
    /// 1: the walk stops where the running amount reaches the target; 0: where it exceeds it.
    inclusive: i32,
    /// `KILN_SAMPLE_TARGET_*`: the k-th key by count, ceil(fraction * total), or floor(fraction * total).
    target_kind: i32,
    count_target: i64,
    fraction: f64,
}

/// The walks of a draw, in order: top-k is a count walk to the k-th key; top-p a weight walk to
/// ceil(p * total), which computes the weights; the pick a weight walk to floor(u * total), which computes
/// them if top-p did not.
fn sample_walks(draw: &DeviceDraw, vocab: usize) -> Vec<SampleWalk> {
    const COUNT: i32 = 0;
    const MASS: i32 = 1;
    const PICK: i32 = 2;
    let mut walks = Vec::with_capacity(3);
    if draw.top_k > 0 && draw.top_k < vocab {
        walks.push(SampleWalk {
            compute_weights: 0,
            weighted: 0,
            inclusive: 1,
            target_kind: COUNT,
            count_target: draw.top_k as i64,
            fraction: 0.0,
        });
    }
    let top_p = draw.top_p < 1.0;
    if top_p {
        walks.push(SampleWalk {
            compute_weights: 1,
            weighted: 1,
            inclusive: 1,
            target_kind: MASS,
            count_target: 0,
            fraction: f64::from(draw.top_p),
        });
    }
    walks.push(SampleWalk {
        compute_weights: i32::from(!top_p),
        weighted: 1,
        inclusive: 0,
        target_kind: PICK,
        count_target: 0,
        fraction: draw.uniform,
    });
    walks
}

/// Queues a draw from the row of `vocab` f32 logits at `row`, writing the id at `out` (and setting the i32
/// at `flag` for a row the CPU sampler would refuse), with [`sample_scratch_bytes`] of 8-byte aligned
/// scratch at `scratch`: a launch that finds the row's largest logit, then for each walk of
/// [`sample_walks`] a histogram over the row, the compaction of its chosen bin and the walk over that
/// list. With `next`, the last walk also feeds the drawn token to the next decode step on the device.
pub(super) fn launch_sample(
    device: &mut Device,
    row: u64,
    vocab: usize,
    draw: DeviceDraw,
    (out, flag, scratch): (u64, u64, u64),
    next: Option<NextStep>,
) -> Result<(), RuntimeError> {
    let width = vocab as i32;
    let state = scratch;
    let weights = state + SAMPLE_STATE_BYTES as u64;
    let (list_keys, list_weights) = (weights + 8 * vocab as u64, weights + 16 * vocab as u64);
    let grid = LaunchConfig {
        grid_dim: (vocab.div_ceil(SAMPLE_SLICE).max(1) as u32, 1, 1),
        block_dim: (SAMPLE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let one_block = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (SAMPLE_FINISH_THREADS, 1, 1), shared_mem_bytes: 0 };
    fn queue(device: &mut Device, name: &str, cfg: LaunchConfig, b: &mut KernelArgs) -> Result<(), RuntimeError> {
        let f = device.function(name)?;
        // SAFETY: the caller owns `vocab` f32 at `row`, an i32 at `out` and at `flag`, the scratch, and (when
        // given) the next step's inputs; every argument matches the kernel's parameter list in choose.cu.
        unsafe { device.launch(&f, cfg, b) }.map_err(cuda_error(format!("launching {name}")))
    }
    let walks = sample_walks(&draw, vocab);
    let next = next.unwrap_or_default();
    let queued = (|| {
        let mut b = KernelArgs::default();
        b.arg(&row).arg(&width).arg(&state);
        queue(device, "kiln_sample_prepare_f32", grid, &mut b)?;
        for (at, walk) in walks.iter().enumerate() {
            let mut b = KernelArgs::default();
            b.arg(&row).arg(&width).arg(&draw.temperature).arg(&walk.compute_weights).arg(&walk.weighted);
            b.arg(&walk.inclusive).arg(&walk.target_kind).arg(&walk.count_target).arg(&walk.fraction);
            b.arg(&state).arg(&weights);
            queue(device, "kiln_sample_hist_f32", grid, &mut b)?;
            let mut b = KernelArgs::default();
            b.arg(&row).arg(&width).arg(&walk.weighted).arg(&state).arg(&weights).arg(&list_keys);
            b.arg(&list_weights);
            queue(device, "kiln_sample_compact_f32", grid, &mut b)?;
            let last = i32::from(at + 1 == walks.len());
            let mut b = KernelArgs::default();
            b.arg(&walk.weighted).arg(&walk.inclusive).arg(&last).arg(&state).arg(&list_keys).arg(&list_weights);
            b.arg(&out).arg(&flag).arg(&next.ids).arg(&next.positions).arg(&next.step);
            queue(device, "kiln_sample_finish_f32", one_block, &mut b)?;
        }
        Ok(())
    })();
    if queued.is_err() {
        // Part of the draw is queued, and only its last launch would have cleared the state: clear it behind
        // what is queued, so that later draws on this scratch start from zero. The launch's error is the one
        // to report.
        // SAFETY: the state is SAMPLE_STATE_BYTES inside the caller's scratch, ordered on the draw's stream.
        let _ = unsafe { result::memset_d8_async(state, 0, SAMPLE_STATE_BYTES, device.stream.cu_stream()) };
    }
    queued
}

/// The error a token-choice kernel's flag stands for.
pub(super) fn logits_error() -> RuntimeError {
    RuntimeError::Generate {
        message: "the model produced non-finite logits (NaN or +inf, or every logit -inf)".to_string(),
    }
}

/// The token-choice kernels on their own GPU buffers.
pub struct DeviceSampler {
    device: Device,
    /// The sampler's scratch, then `[flag, ids...]` i32, then the logits rows, then the one-row argmax's
    /// scratch ([`sampler_layout`]).
    buffer: CudaSlice<u8>,
    capacity: usize,
}

/// Byte offsets in a [`DeviceSampler`]'s buffer for `capacity` logits: the flag (after the draw's scratch,
/// with the ids after it), the logits (16-byte aligned, as the executor's logits rows are, so that the
/// kernels take their vector loads), the one-row argmax's scratch (8-byte aligned), and the buffer's size.
fn sampler_layout(capacity: usize) -> (usize, usize, usize, usize) {
    let flag = sample_scratch_bytes(capacity);
    let logits = (flag + 4 * (1 + capacity)).next_multiple_of(16);
    let argmax = (logits + 4 * capacity).next_multiple_of(8);
    (flag, logits, argmax, argmax + argmax_scratch_bytes(capacity))
}

impl DeviceSampler {
    /// Loads the best of `kernels` on GPU `ordinal`, with room for `capacity` f32 logits per call.
    pub fn new(ordinal: usize, kernels: &[CompiledKernel], capacity: usize) -> Result<DeviceSampler, RuntimeError> {
        let device = Device::open(ordinal, kernels)?;
        let buffer = device.stream.alloc_zeros::<u8>(sampler_layout(capacity).3).map_err(cuda_error("allocating"))?;
        Ok(DeviceSampler { device, buffer, capacity })
    }

    /// The draw's scratch: the start of the buffer (which the driver aligns to 256 bytes).
    fn scratch(&self) -> u64 {
        let (ptr, _guard) = cudarc::driver::DevicePtr::device_ptr(&self.buffer, &self.device.stream);
        ptr
    }

    /// The flag's address (the ids follow it).
    fn addresses(&self) -> u64 {
        self.scratch() + sampler_layout(self.capacity).0 as u64
    }

    /// Where the logits go.
    fn logits_at(&self) -> u64 {
        self.scratch() + sampler_layout(self.capacity).1 as u64
    }

    /// The one-row argmax's scratch.
    fn argmax_scratch(&self) -> u64 {
        self.scratch() + sampler_layout(self.capacity).2 as u64
    }

    /// Runs `launch` on `logits` (uploaded after the flag and `ids` slots) and reads back `ids` ids.
    fn run(
        &mut self,
        logits: &[f32],
        ids: usize,
        launch: impl FnOnce(&mut Device, u64, u64, u64) -> Result<(), RuntimeError>,
    ) -> Result<Vec<u32>, RuntimeError> {
        if logits.len() > self.capacity || ids > self.capacity {
            return Err(RuntimeError::Generate {
                message: format!("{} logits exceed the sampler's room for {}", logits.len(), self.capacity),
            });
        }
        let (base, data) = (self.addresses(), self.logits_at());
        let stream = self.device.stream.cu_stream();
        // SAFETY: both regions lie inside `buffer`; the copies and the launch are ordered on one stream.
        unsafe {
            result::memset_d8_async(base, 0, 4, stream).map_err(cuda_error("clearing the flag"))?;
            result::memcpy_htod_async(data, logits, stream).map_err(cuda_error("uploading logits"))?;
        }
        launch(&mut self.device, data, base + 4, base)?;
        let mut status = vec![0i32; 1 + ids];
        // SAFETY: reads the flag and `ids` ids from the buffer after the stream's work.
        unsafe { self.device.read_back(&mut status, base, "reading the tokens") }?;
        if status[0] != 0 {
            return Err(logits_error());
        }
        Ok(status[1..].iter().map(|&t| t as u32).collect())
    }

    /// The greedy token of each row of `logits` (`[rows, vocab]` row-major).
    pub fn argmax(&mut self, logits: &[f32], vocab: usize) -> Result<Vec<u32>, RuntimeError> {
        let rows = logits.len() / vocab.max(1);
        let scratch = self.argmax_scratch();
        self.run(logits, rows, |device, data, out, flag| {
            launch_argmax(device, data, vocab, rows, out, flag, scratch, None)
        })
    }

    /// A token drawn from one row of logits.
    pub fn sample(&mut self, row: &[f32], draw: DeviceDraw) -> Result<u32, RuntimeError> {
        let (vocab, scratch) = (row.len(), self.scratch());
        Ok(self.run(row, 1, |device, data, out, flag| {
            launch_sample(device, data, vocab, draw, (out, flag, scratch), None)
        })?[0])
    }

    /// Seconds one draw takes on the device, averaged over `repeats` back-to-back launches on `row`.
    pub fn time_sample(&mut self, row: &[f32], draw: DeviceDraw, repeats: usize) -> Result<f64, RuntimeError> {
        self.sample(row, draw)?;
        let (base, data, scratch) = (self.addresses(), self.logits_at(), self.scratch());
        let start = std::time::Instant::now();
        for _ in 0..repeats {
            launch_sample(&mut self.device, data, row.len(), draw, (base + 4, base, scratch), None)?;
        }
        self.device.stream.synchronize().map_err(cuda_error("timing the sampler"))?;
        Ok(start.elapsed().as_secs_f64() / repeats.max(1) as f64)
    }
}
