//! [`CudaExecutor`]: a decoder graph on the GPU behind the [`DecoderExecutor`] interface.

use std::collections::HashMap;

use cudarc::driver::{CudaFunction, LaunchConfig, result, sys};
use kiln_ir::{CompiledKernel, Graph, KernelTarget, ValueId, WeightStore};

use super::choose::{DeviceDraw, KILN_ERROR_LOGITS, NextStep, launch_argmax, launch_sample, logits_error};
use super::device::{Device, KernelArgs, ReadbackRing, cuda_error};
use super::plan::{
    self, ATTENTION_CHUNK, ATTENTION_FOLD_ROWS, LINEAR_PARTS, LINEAR_UNROLL, Launch, NORM_THREADS, Plan, RunShape,
    linear_columns_per_block, linear_ksplit, linear_threads,
};
use super::trace::LaunchTrace;
use crate::RuntimeError;
use crate::decoding::{DecoderExecutor, Sampler, Sampling, decode_steps};

/// Sizes the executor plans its device memory for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// Which GPU.
    pub ordinal: usize,
    /// Tokens the KV cache holds (the longest prompt plus generation).
    pub max_context: usize,
    /// The most tokens one kernel launch sequence takes; longer prefills run in chunks of this size.
    pub max_step_tokens: usize,
}

impl Default for CudaOptions {
    fn default() -> CudaOptions {
        CudaOptions { ordinal: 0, max_context: 4096, max_step_tokens: 512 }
    }
}

/// Speculative verification steps stay within this many tokens, where each row's logits are
/// bit-identical to a one-token step (the linear kernel's row groups and attention's masking are
/// row-independent for any count; this bound keeps the tree small enough to pay off).
pub const CUDA_EXACT_STEP_ROWS: usize = 64;

/// Runs one decoder graph on one GPU, with its KV cache on the device.
pub struct CudaExecutor {
    graph: Graph,
    plan: Plan,
    device: Device,
    /// Keeps the arena allocated; kernels address it through `base`.
    _arena: cudarc::driver::CudaSlice<u8>,
    base: u64,
    kv_len: usize,
    /// cuBLAS for the GEMMs of long prefills, when the library is installed.
    blas: Option<cudarc::cublas::CudaBlas>,
    /// Captured launch sequences by (tokens, first logits row, whether the graph ends with the argmax that
    /// feeds the next step): a decode step is one graph launch.
    graphs: HashMap<(usize, usize, bool), cudarc::driver::CudaGraph>,
    /// The page-locked slots a greedy run reads its tokens back through (made on its first use).
    readback_ring: Option<ReadbackRing>,
    /// `KILN_CUDA_GRAPHS=0` turns capture off (and profiling does).
    use_graphs: bool,
    /// Whether the step being launched came with its own tree mask (otherwise the uploaded mask is the
    /// causal one, which a causal prefill's attention can skip: its tiles then stop at their last query).
    step_has_mask: bool,
    /// Per-launch device times when `KILN_CUDA_PROFILE=1`, printed when the executor is dropped.
    profile: Option<Profile>,
    /// Where decode steps' time goes inside their graph when `KILN_CUDA_TRACE=1` (trace.rs).
    trace: Option<LaunchTrace>,
    /// By layer: the weight ranges its split attention kernel prefetches into L2 ([`attention_prefetch`]).
    attention_prefetch: HashMap<usize, ([u64; 3], [u64; 3])>,
    /// Multiprocessors of the GPU (grids of the linear kernel are sized to it).
    sms: usize,
    /// The most shared memory a linear launch may stage x in, on this GPU.
    linear_stage_bytes: usize,
    /// Blocks per multiprocessor of a linear kernel by (function, threads, shared bytes).
    occupancy: HashMap<(usize, u32, u32), usize>,
    /// The most dynamic shared memory one block may use on this GPU (the prefill attention kernels need
    /// their tiles to fit, or the prefill runs through the split kernel).
    shared_optin: usize,
    /// Whether decode linears take the ring kernel (`kiln_gemvr_*`, see [`gemv_ring_suits`]).
    gemv_ring: bool,
    /// The dynamic shared memory a ring kernel launch may take (its attribute, raised at load).
    ring_shared_limit: usize,
}

/// Queries (and keys) per tile of the tiled prefill attention kernel (`KILN_TILE` in attention.cu).
const ATTENTION_TILE: usize = 64;

/// Row stride, in floats, of the tiled attention kernel's transposed tiles (`KILN_TILE_PAD`).
const ATTENTION_TILE_PAD: usize = 68;

/// Dynamic shared memory of the tiled attention kernel for these head sizes (the layout in
/// `attention_tiled`): the transposed query tile, the transposed key tile (which then holds the 64 x 64
/// weights), and the value tile. `None` where the kernel does not take these heads (sizes not multiples of 4).
fn tiled_attention_bytes(head_dim: usize, v_dim: usize) -> Option<usize> {
    (head_dim.is_multiple_of(4) && v_dim.is_multiple_of(4))
        .then(|| 4 * ((head_dim + head_dim.max(ATTENTION_TILE)) * ATTENTION_TILE_PAD + ATTENTION_TILE * v_dim))
}

/// Dynamic shared memory of the tensor-core prefill attention kernel (the layout in `attention_mma`): query,
/// key and value tiles of 64 rows, each row four floats longer than its head.
fn mma_attention_bytes(head_dim: usize, v_dim: usize) -> usize {
    4 * ATTENTION_TILE * (2 * (head_dim + 4) + v_dim + 4)
}

/// The kernel a prefill's attention takes, as (name, threads per block, dynamic shared memory): the
/// tensor-core kernel where the plan has one, else the tiled one; `None` where the chosen
/// kernel's tiles do not fit in `shared_optin` bytes (the prefill then goes through the split kernel).
fn prefill_attention_kernel<'a>(
    tiled: &'a str,
    mma: Option<&'a str>,
    head_dim: usize,
    v_dim: usize,
    shared_optin: usize,
) -> Option<(&'a str, u32, usize)> {
    let choice = match mma {
        Some(mma) => Some((mma, 128, mma_attention_bytes(head_dim, v_dim))),
        None => tiled_attention_bytes(head_dim, v_dim).map(|bytes| (tiled, 256, bytes)),
    };
    choice.filter(|&(_, _, bytes)| bytes <= shared_optin)
}

/// Warps per column from which a decode step without programmatic launch takes the pipelined one-row kernel
/// (`kiln_gemvp_*`): it measured faster for the 8B shape's down projection (7 warps a column) and slower for
/// rows of two warps (before programmatic launch; with it, every decode linear takes it).
const GEMV_PIPELINE_SPLIT: usize = 4;

/// The fewest key tiles per split of a prefill's attention. Each split costs its block a load of the query
/// tile and a partial result to write and merge; at 512 tokens, splits of four tiles measured 1.5-3% faster
/// on the 8B shape than splits of two, and the same on the 1B shape (H100, bench/gpu-decode.md).
const PREFILL_SPLIT_TILES: usize = 4;

/// The most shared memory a linear launch stages x in (M x K floats, and K more for a folded norm's weights).
const LINEAR_STAGE_BYTES: usize = 96 * 1024;

/// Stages of a warp's ring in the ring kernel (`KILN_GEMV_RING_STAGES` in linear.cu) and the bytes of one
/// (`LINEAR_UNROLL` chunks of 16 bytes for each of 32 lanes).
pub(crate) const GEMV_RING_STAGES: usize = 2;
const GEMV_RING_STAGE_BYTES: usize = LINEAR_UNROLL * 32 * 16;

/// Shared memory of a ring kernel block's rings (after its staged x, if any): every warp's stages.
fn gemv_ring_bytes(threads: usize) -> usize {
    threads / 32 * GEMV_RING_STAGES * GEMV_RING_STAGE_BYTES
}

/// Graphs kept at most (decode, prefill tails and verification trees of a few sizes).
const MAX_GRAPHS: usize = 64;

/// Decode steps in flight at once ([`CudaExecutor::decode_queued`]): the step whose token the host waits
/// for and one queued behind it, so that the GPU has the next graph while the host reads a token and
/// launches the one after (what was measured, bench/gpu-decode.md).
const DECODE_IN_FLIGHT: usize = 2;

/// Device time per kernel (launch kind), from events around every launch, for decode steps (one token)
/// and prefills (steps longer than [`CUDA_EXACT_STEP_ROWS`]) apart.
#[derive(Default)]
struct Profile {
    decode: ProfileTable,
    prefill: ProfileTable,
}

#[derive(Default)]
struct ProfileTable {
    /// label -> (launches, milliseconds)
    totals: HashMap<String, (u64, f64)>,
    steps: u64,
    tokens: u64,
}

impl ProfileTable {
    fn report(&self, what: &str) -> String {
        let mut rows: Vec<_> = self.totals.iter().collect();
        rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        let total: f64 = rows.iter().map(|r| r.1.1).sum();
        let steps = self.steps.max(1) as f64;
        let mut out = format!(
            "kiln CUDA profile: {} {what} ({} tokens), {:.3} ms of kernels per step\n{:<40} {:>8} {:>10} {:>10} {:>7}\n",
            self.steps,
            self.tokens,
            total / steps,
            "kernel",
            "launches",
            "us/launch",
            "us/step",
            "share"
        );
        for (label, (count, ms)) in rows {
            out.push_str(&format!(
                "{label:<40} {count:>8} {:>10.2} {:>10.2} {:>6.1}%\n",
                1e3 * ms / *count as f64,
                1e3 * ms / steps,
                100.0 * ms / total.max(1e-12)
            ));
        }
        out
    }
}

impl Drop for CudaExecutor {
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            if p.prefill.steps > 0 {
                eprint!("{}", p.prefill.report("prefill steps"));
            }
            if p.decode.steps > 0 {
                eprint!("{}", p.decode.report("decode steps"));
            }
        }
        if let Some(t) = &self.trace {
            eprint!("{}", t.report.table());
        }
    }
}

impl std::fmt::Debug for CudaExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaExecutor")
            .field("graph", &self.graph.name)
            .field("device", &self.device.name)
            .field("kernels", &self.device.loaded)
            .field("arena_bytes", &self.plan.arena_bytes)
            .field("kv_len", &self.kv_len)
            .finish()
    }
}

/// What a step copies back to the host.
#[derive(Clone, Copy, Debug)]
enum Readback {
    /// Only the error flag (a chunk before the last of a long prefill).
    Nothing,
    /// The logits rows.
    Logits,
    /// The greedy token after each row (`kiln_argmax_split_f32` for one row, else `kiln_argmax_f32`).
    Argmax,
    /// A token drawn after the last row (the `kiln_sample_*` launches, cuda/choose.rs).
    Sample(DeviceDraw),
}

/// What one chunk of a step read back.
enum ChunkOutput {
    Logits(Vec<f32>),
    Tokens(Vec<u32>),
}

impl ChunkOutput {
    fn into_logits(self) -> Vec<f32> {
        match self {
            ChunkOutput::Logits(l) => l,
            ChunkOutput::Tokens(_) => unreachable!("the step asked for logits"),
        }
    }

    fn into_tokens(self) -> Vec<u32> {
        match self {
            ChunkOutput::Tokens(t) => t,
            ChunkOutput::Logits(_) => unreachable!("the step asked for tokens"),
        }
    }
}

fn cfg(grid: usize, block: u32, shared: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (grid.max(1) as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: shared }
}

/// The argument block of `kiln_attention_*` (mirrors `struct AttentionArgs` in attention.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct AttentionArgs {
    q: u64,
    kcache: u64,
    vcache: u64,
    out: u64,
    partial: u64,
    positions: u64,
    mask: u64,
    step: u64,
    s: i32,
    heads: i32,
    kv_heads: i32,
    d: i32,
    dv: i32,
    scale: f32,
    softcap: f32,
    causal: i32,
    window: i32,
    sinks: i32,
    chunk: i32,
    max_splits: i32,
    q_in: u64,
    k_in: u64,
    v_in: u64,
    rope_table: u64,
    rope_dim: i32,
    rope_interleaved: i32,
    prefetch: [u64; 3],
    prefetch_bytes: [u64; 3],
    prefetch_rows: i32,
}

/// One part of `struct LinearArgs` (linear.cu).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LinearPartArgs {
    w: u64,
    bias: u64,
    out: u64,
    n: i32,
    _pad: i32,
}

/// The argument block of `kiln_linear_*` (mirrors `struct LinearArgs` in linear.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct LinearArgs {
    x: u64,
    m: i32,
    n: i32,
    k: i32,
    softcap: f32,
    parts: i32,
    ksplit: i32,
    part: [LinearPartArgs; LINEAR_PARTS],
    staged: i32,
    _pad2: i32,
    norm_x: u64,
    norm_residual: u64,
    norm_sum: u64,
    norm_w: u64,
    norm_eps: f32,
    norm_offset: f32,
    swiglu_out: u64,
}
// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for LinearArgs {}
// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for AttentionArgs {}

/// The argument block of `kiln_rope_kv_append_*` (mirrors `struct RopeAppendArgs` in attention.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct RopeAppendArgs {
    q: u64,
    k: u64,
    v: u64,
    q_out: u64,
    kcache: u64,
    vcache: u64,
    step: u64,
    rope_table: u64,
    s: i32,
    heads: i32,
    kv_heads: i32,
    d: i32,
    dv: i32,
    rdim: i32,
    interleaved: i32,
    _pad: i32,
}
// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for RopeAppendArgs {}

/// The argument block of the fused elementwise kernels (mirrors `struct FusedArgs`).
#[repr(C)]
#[derive(Clone, Copy)]
struct FusedArgs {
    n: i64,
    rank: i32,
    flat: i32,
    dims: [i64; 6],
    strides: [[i64; 6]; 8],
    inputs: [u64; 8],
    out: u64,
}
// SAFETY: plain old data with the C layout the kernel declares.
unsafe impl cudarc::driver::DeviceRepr for FusedArgs {}

impl CudaExecutor {
    /// Plans `graph` for the GPU, loads the best of `kernels` for it and uploads the weights.
    pub fn new(
        graph: Graph,
        weights: &WeightStore,
        kernels: &[CompiledKernel],
        options: CudaOptions,
    ) -> Result<CudaExecutor, RuntimeError> {
        kiln_ir::verify(&graph, Some(weights))
            .map_err(|errors| RuntimeError::Verify { graph: graph.name.clone(), errors })?;
        crate::decoding::check_decoder_contract(&graph)?;
        if options.max_step_tokens == 0 || options.max_context == 0 {
            return Err(RuntimeError::Cuda { message: "max_context and max_step_tokens must be at least 1".into() });
        }
        let mut plan = plan::build(&graph, weights, options.max_step_tokens, options.max_context)?;
        // `KILN_ATTENTION_MMA=0` keeps prefills on the tiled kernel (to compare the two): the plan then offers
        // no tensor-core one.
        if matches!(std::env::var("KILN_ATTENTION_MMA").as_deref(), Ok("0")) {
            for launch in &mut plan.launches {
                if let Launch::Attention { mma, .. } = launch {
                    *mma = None;
                }
            }
        }
        let mut device = Device::open(options.ordinal, kernels)?;
        let (free, _) = device.ctx.mem_get_info().map_err(cuda_error("cannot read the free device memory"))?;
        if plan.arena_bytes as usize > free {
            return Err(RuntimeError::Cuda {
                message: format!(
                    "the model needs {:.2} GiB on {} but {:.2} GiB are free; lower --max-context",
                    plan.arena_bytes as f64 / (1u64 << 30) as f64,
                    device.name,
                    free as f64 / (1u64 << 30) as f64
                ),
            });
        }
        let arena = device
            .stream
            .alloc_zeros::<u8>(plan.arena_bytes as usize)
            .map_err(cuda_error("cannot allocate the device arena"))?;
        let base = {
            use cudarc::driver::DevicePtr;
            arena.device_ptr(&device.stream).0
        };
        // The zeroing runs on the executor's (non-blocking) stream; the synchronous uploads below do not wait
        // for it, so wait here.
        device.stream.synchronize().map_err(cuda_error("cannot allocate the device arena"))?;
        for (offset, upload) in &plan.uploads {
            let bytes: &[u8] = match upload {
                plan::Upload::Weight { name } => match &weights.get(name).expect("planned weights exist").payload {
                    kiln_ir::WeightPayload::Dense(b) => b.as_slice(),
                    kiln_ir::WeightPayload::Quantized { .. } => unreachable!("the plan rejects quantized weights"),
                },
                plan::Upload::Bytes(b) => b,
            };
            // SAFETY: the plan sized this region for these bytes inside the arena; the copy is synchronous
            // (and the arena's zeroing on the stream finished before the first one).
            unsafe { result::memcpy_htod_sync(base + offset, bytes) }.map_err(cuda_error("uploading weights"))?;
        }
        let sms = device
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_error("reading the multiprocessor count"))? as usize;
        let optin = device
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(cuda_error("reading the shared-memory limit"))? as usize;
        // Layers of different head sizes can share a prefill attention kernel (one head-size class): its
        // limit is the largest any of them needs.
        let mut prefill_bytes: HashMap<&str, usize> = HashMap::new();
        for launch in &plan.launches {
            if let Launch::Attention { tiled, mma, head_dim, v_dim, .. } = launch
                && let Some((name, _, bytes)) =
                    prefill_attention_kernel(tiled, mma.as_deref(), *head_dim, *v_dim, optin)
            {
                let entry = prefill_bytes.entry(name).or_default();
                *entry = (*entry).max(bytes);
            }
        }
        for (name, bytes) in prefill_bytes {
            device
                .function(name)?
                .set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
                .map_err(cuda_error("raising the prefill attention kernel's shared memory"))?;
        }
        // The most dynamic shared memory a ring kernel launch may take (raised below).
        let mut ring_shared_limit = usize::MAX;
        for launch in &plan.launches {
            if let Launch::Linear { kernel, .. } = launch {
                for name in [kernel.clone(), gemv_name(kernel, false), gemv_name(kernel, true)] {
                    device
                        .function(&name)?
                        .set_attribute(
                            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                            LINEAR_STAGE_BYTES.min(optin) as i32,
                        )
                        .map_err(cuda_error("raising the linear kernel's shared memory"))?;
                }
                // The ring kernel's blocks hold their rings after x (eight warps at most), as far as the
                // GPU's limit leaves room beside the kernel's static shared memory.
                let ring_kernel = device.function(&gemv_ring_name(kernel))?;
                let fixed = ring_kernel
                    .shared_size_bytes()
                    .map_err(cuda_error("reading the ring kernel's static shared memory"))?;
                let limit = (LINEAR_STAGE_BYTES + gemv_ring_bytes(256)).min(optin.saturating_sub(fixed as usize));
                ring_kernel
                    .set_attribute(
                        sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        limit as i32,
                    )
                    .map_err(cuda_error("raising the ring kernel's shared memory"))?;
                ring_shared_limit = ring_shared_limit.min(limit);
            }
        }
        // Resolve every kernel now, so that a missing one is an error at load, not mid-generation. The marker
        // first: without it the module comes from a kiln whose kernels took other arguments.
        device.function(kiln_ir::artifact::CUDA_KERNEL_ABI_MARKER)?;
        for launch in &plan.launches {
            for name in kernel_names(launch) {
                device.function(&name)?;
            }
        }
        for name in std::iter::once("kiln_kv_compact").chain(kiln_ir::artifact::CUDA_TOKEN_CHOICE_KERNELS) {
            device.function(name)?;
        }
        // SAFETY: only tries to dlopen the library by its known names.
        let blas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            Some(
                cudarc::cublas::CudaBlas::new(device.stream.clone())
                    .map_err(|e| RuntimeError::Cuda { message: format!("cannot start cuBLAS: {e:?}") })?,
            )
        } else {
            None
        };
        let profile = std::env::var("KILN_CUDA_PROFILE").is_ok_and(|v| v == "1").then(Profile::default);
        let use_graphs = profile.is_none() && !matches!(std::env::var("KILN_CUDA_GRAPHS").as_deref(), Ok("0"));
        let trace = LaunchTrace::open(&device)?;
        let prefetch_setting = std::env::var("KILN_CUDA_L2_PREFETCH_MIB").ok();
        let budget = prefetch_budget(device.bulk_prefetch, device.memory_bandwidth, prefetch_setting.as_deref())?;
        let attention_prefetch = attention_prefetch(&plan, &graph, base, budget);
        let ring_setting = std::env::var("KILN_CUDA_GEMV_RING").ok();
        let gemv_ring = gemv_ring_suits(&plan, &graph, device.memory_bandwidth, ring_setting.as_deref())? && device.pdl;
        Ok(CudaExecutor {
            graph,
            plan,
            device,
            _arena: arena,
            base,
            kv_len: 0,
            blas,
            graphs: HashMap::new(),
            readback_ring: None,
            use_graphs,
            step_has_mask: false,
            profile,
            trace,
            attention_prefetch,
            sms,
            linear_stage_bytes: LINEAR_STAGE_BYTES.min(optin),
            shared_optin: optin,
            occupancy: HashMap::new(),
            gemv_ring,
            ring_shared_limit,
        })
    }

    /// The GPU's name and which kernel image runs on it (`sm_90`, or `ptx` when the driver compiled PTX).
    pub fn device_description(&self) -> String {
        format!("{} (sm_{}, {} kernels)", self.device.name, self.device.sm, self.device.loaded)
    }

    /// Whether the kernels run from a cubin for this GPU (else from PTX the driver compiled).
    pub fn runs_cubin(&self) -> bool {
        matches!(self.device.loaded, KernelTarget::Cubin { .. })
    }

    fn addr(&self, v: ValueId) -> u64 {
        self.base + self.plan.offsets[v.index()].expect("the plan gives every operand a buffer")
    }

    fn upload<T>(&self, offset: u64, data: &[T]) -> Result<(), RuntimeError> {
        // SAFETY: the plan sized the input regions for `max_step_tokens` tokens; the caller checked the count.
        unsafe { result::memcpy_htod_async(self.base + offset, data, self.device.stream.cu_stream()) }
            .map_err(cuda_error("copying step inputs"))
    }

    /// One step of at most `max_step_tokens` tokens; returns what `read` asks for of the logits rows
    /// `rows_from..n`: the rows themselves, or the token chosen after each of them on the device.
    fn run_chunk(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
        rows_from: usize,
        read: Readback,
    ) -> Result<ChunkOutput, RuntimeError> {
        let n = ids.len();
        self.upload_step_inputs(ids, positions, mask)?;
        let flag = self.base + self.plan.error_flag;
        let mut timed = Vec::new();
        // The trace follows decode steps (one token) in their graph.
        let traced = self.use_graphs && n == 1 && self.trace.is_some();
        if self.use_graphs && n <= CUDA_EXACT_STEP_ROWS {
            if let Some(t) = self.trace.as_ref().filter(|_| traced) {
                t.clear(&self.device)?;
            }
            self.launch_graph(n, rows_from, false)?;
        } else {
            // The profile is of decode steps (one token) and prefills; trees run untimed.
            let profiled = self.profile.is_some() && (n == 1 || n > CUDA_EXACT_STEP_ROWS);
            self.launch_plan(n, rows_from, profiled.then_some(&mut timed), None)?;
        }
        let vocab = self.plan.vocab;
        let rows = n - rows_from;
        let first_row = self.addr(self.plan.logits) + (rows_from * vocab * 4) as u64;
        let chosen = flag + 4;
        match read {
            Readback::Nothing | Readback::Logits => {}
            Readback::Argmax => self.launch_step_argmax(first_row, rows, None)?,
            Readback::Sample(draw) => {
                let last_row = first_row + ((rows - 1) * vocab * 4) as u64;
                let scratch = self.base + self.plan.sample_scratch;
                launch_sample(&mut self.device, last_row, vocab, draw, (chosen, flag, scratch), None)?;
            }
        }
        let tokens = match read {
            Readback::Nothing | Readback::Logits => 0,
            Readback::Argmax => rows,
            Readback::Sample(_) => 1,
        };
        // The error flag and the chosen tokens come back in one copy (which also waits for the step).
        let mut status = vec![0i32; 1 + tokens];
        // SAFETY: the readback region holds the flag and `max_step_tokens` ids; copies are synchronous.
        unsafe { self.device.read_back(&mut status, flag, "running the step") }?;
        if let Some(t) = self.trace.as_mut().filter(|_| traced) {
            t.collect(&self.device)?;
        }
        if let Some(profile) = self.profile.as_mut()
            && !timed.is_empty()
        {
            let table = if n == 1 { &mut profile.decode } else { &mut profile.prefill };
            for (label, start, end) in timed {
                let ms = start.elapsed_ms(&end).map_err(cuda_error("reading the profile events"))?;
                let entry = table.totals.entry(label).or_default();
                entry.0 += 1;
                entry.1 += f64::from(ms);
            }
            table.steps += 1;
            table.tokens += n as u64;
        }
        if let Some(error) = self.step_error(status[0]) {
            return Err(error);
        }
        let output = if matches!(read, Readback::Nothing) {
            ChunkOutput::Tokens(Vec::new())
        } else if tokens == 0 {
            let mut logits = vec![0.0f32; rows * vocab];
            // SAFETY: the logits buffer holds n rows.
            unsafe { self.device.read_back(&mut logits, first_row, "reading the logits") }?;
            ChunkOutput::Logits(logits)
        } else {
            ChunkOutput::Tokens(status[1..].iter().map(|&t| t as u32).collect())
        };
        self.kv_len += n;
        Ok(output)
    }

    /// Uploads what a step reads from the device (its ids, positions, the tree mask where the graph takes
    /// one, and the step info: the tokens cached before it) and clears the error flag.
    fn upload_step_inputs(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(), RuntimeError> {
        let n = ids.len();
        let ids64: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
        self.upload(self.plan.offsets[self.plan.ids.index()].expect("planned"), &ids64)?;
        self.upload(self.plan.offsets[self.plan.positions.index()].expect("planned"), positions)?;
        if let Some(m) = self.plan.tree_mask {
            let bits: Vec<u8> = match mask {
                Some(mask) => mask.iter().map(|&b| u8::from(b)).collect(),
                None => (0..n * n).map(|e| u8::from(e % n <= e / n)).collect(),
            };
            self.upload(self.plan.offsets[m.index()].expect("planned"), &bits)?;
        }
        let flag = self.base + self.plan.error_flag;
        // SAFETY: the flag is 4 bytes inside the arena.
        unsafe { result::memset_d8_async(flag, 0, 4, self.device.stream.cu_stream()) }
            .map_err(cuda_error("clearing the error flag"))?;
        self.step_has_mask = mask.is_some();
        self.upload(self.plan.step_info, &[self.kv_len as i32])
    }

    /// Where a one-token step's token choice feeds the next step on the device: its input id, its position
    /// and the step info.
    fn next_step(&self) -> NextStep {
        NextStep {
            ids: self.addr(self.plan.ids),
            positions: self.addr(self.plan.positions),
            step: self.base + self.plan.step_info,
        }
    }

    /// Queues the argmax of `rows` logits rows from `first_row`, into the readback region after the error
    /// flag; with `next`, the one-row argmax also feeds its token to the next step on the device.
    fn launch_step_argmax(&mut self, first_row: u64, rows: usize, next: Option<NextStep>) -> Result<(), RuntimeError> {
        let flag = self.base + self.plan.error_flag;
        let scratch = self.base + self.plan.argmax_scratch;
        launch_argmax(&mut self.device, first_row, self.plan.vocab, rows, flag + 4, flag, scratch, next)
    }

    /// Plain decoding of `max` one-token steps (which the KV cache has room for), with up to
    /// [`DECODE_IN_FLIGHT`] steps in flight (queued behind the one whose token the host reads): each step's
    /// token is chosen on the device, by the argmax its graph ends with or by a draw queued after the graph
    /// with the uniform number `sampler` would draw for it, and that launch writes the next step's input id,
    /// position and step info on the device; the host only reads the tokens back (through page-locked
    /// slots). Returns the steps whose tokens it handed over, the last of those tokens, and whether
    /// `on_token` asked for more; `sampler` has then drawn for exactly the steps handed over.
    fn decode_queued(
        &mut self,
        first: u32,
        first_position: i64,
        max: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<(usize, u32, bool), RuntimeError> {
        self.check_step(&[first], &[first_position], None)?;
        if self.readback_ring.is_none() {
            self.readback_ring = Some(ReadbackRing::new(&self.device, DECODE_IN_FLIGHT)?);
        }
        // The first step's inputs; every later step's come from the step before it. The error flag, cleared
        // here, stays set once a step sets it, and every step's readback includes it, so the first readback
        // that shows it is the first failed step's.
        self.upload_step_inputs(&[first], &[first_position], None)?;
        let mut ring = self.readback_ring.take().expect("made above");
        let outcome = self.decode_queue_and_read(&mut ring, first, max, sampler, on_token);
        self.readback_ring = Some(ring);
        // Steps queued past the last token read (after a stop token or an error) still run: wait for them,
        // so that nothing later is queued behind or uploaded under them. Their keys and values lie past
        // kv_len, where the next step writes its own.
        let drained = self.device.stream.synchronize().map_err(cuda_error("finishing the queued steps"));
        let outcome = outcome?;
        drained?;
        Ok(outcome)
    }

    /// [`CudaExecutor::decode_queued`]'s loop: keeps up to [`DECODE_IN_FLIGHT`] steps queued and reads their
    /// tokens back in order through `ring`, advancing kv_len (and `sampler`) with every token read.
    fn decode_queue_and_read(
        &mut self,
        ring: &mut ReadbackRing,
        first: u32,
        max: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<(usize, u32, bool), RuntimeError> {
        let (start, flag) = (self.kv_len, self.base + self.plan.error_flag);
        // Queued draws take their uniform numbers from a copy running ahead; `sampler` itself draws as the
        // tokens are handed over, so that a stop leaves it where step-by-step decoding would.
        let mut ahead = sampler.clone();
        let (mut queued, mut read, mut last) = (0usize, 0usize, first);
        while read < max {
            while queued < max && queued - read < DECODE_IN_FLIGHT {
                match *ahead.sampling() {
                    Sampling::Greedy => self.launch_graph(1, 0, true)?,
                    Sampling::Sample { temperature, top_k, top_p, .. } => {
                        self.launch_graph(1, 0, false)?;
                        let draw = DeviceDraw { temperature, top_k, top_p, uniform: ahead.uniform() };
                        let scratch = self.base + self.plan.sample_scratch;
                        let (row, vocab) = (self.addr(self.plan.logits), self.plan.vocab);
                        let next = Some(self.next_step());
                        launch_sample(&mut self.device, row, vocab, draw, (flag + 4, flag, scratch), next)?;
                    }
                }
                // SAFETY: the flag and the chosen token are two i32 in the arena; the slot's previous copy
                // (step queued - slots, before `read`) was waited for before this step was queued.
                unsafe { ring.queue(&self.device, queued % ring.slots(), flag) }?;
                queued += 1;
            }
            let [status, token] = ring.wait(read % ring.slots())?;
            if let Some(e) = self.step_error(status) {
                return Err(e);
            }
            read += 1;
            self.kv_len = start + read;
            if !sampler.is_greedy() {
                sampler.uniform();
            }
            last = token as u32;
            if !on_token(last) {
                return Ok((read, last, false));
            }
        }
        Ok((read, last, true))
    }

    /// The error a step's flag (the first i32 read back) stands for, if any.
    fn step_error(&self, flag: i32) -> Option<RuntimeError> {
        match flag {
            0 => None,
            KILN_ERROR_LOGITS => Some(logits_error()),
            _ => Some(RuntimeError::Cuda {
                message: format!(
                    "a token id is outside the embedding table ({} entries)",
                    self.graph_vocab_hint().unwrap_or(self.plan.vocab)
                ),
            }),
        }
    }

    /// Runs the plan's launches for a step of `n` tokens through a CUDA graph, capturing it on first use.
    /// Everything a step changes is read from the device (ids, positions, mask, the step info), so one
    /// graph per (n, rows_from) replays every such step. With `feed` (one-token steps), the graph ends with
    /// the argmax of its logits, which writes the chosen token and sets up the next step on the device
    /// ([`NextStep`]).
    fn launch_graph(&mut self, n: usize, rows_from: usize, feed: bool) -> Result<(), RuntimeError> {
        let key = (n, rows_from, feed);
        if !self.graphs.contains_key(&key) {
            if self.graphs.len() >= MAX_GRAPHS {
                self.graphs.clear();
            }
            let stream = self.device.stream.clone();
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .map_err(cuda_error("starting a CUDA graph capture"))?;
            // The trace labels the decode step's launches as they are captured.
            let mut labels = (n == 1 && self.trace.is_some()).then(Vec::new);
            let mut result = self.launch_plan(n, rows_from, None, labels.as_mut());
            if feed && result.is_ok() {
                debug_assert_eq!((n, rows_from), (1, 0), "only one-token steps feed the next");
                result = self.launch_step_argmax(self.addr(self.plan.logits), 1, Some(self.next_step()));
            }
            if let (Some(t), Some(labels)) = (self.trace.as_mut(), labels) {
                t.report.labels = labels;
            }
            // End the capture whatever happened, so the stream is usable again.
            let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
            result?;
            let graph = graph
                .map_err(cuda_error("instantiating the step's CUDA graph"))?
                .ok_or_else(|| RuntimeError::Cuda { message: "the CUDA graph capture recorded nothing".into() })?;
            self.graphs.insert(key, graph);
        }
        self.graphs[&key].launch().map_err(cuda_error("launching the step's CUDA graph"))
    }

    /// Issues the plan's launches for a step of `n` tokens, each between two timing events when `timed`
    /// collects them; `labels` gets the profile's label of every kernel launch, in order.
    fn launch_plan(
        &mut self,
        n: usize,
        rows_from: usize,
        mut timed: Option<&mut Vec<(String, cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>>,
        mut labels: Option<&mut Vec<String>>,
    ) -> Result<(), RuntimeError> {
        let launches = std::mem::take(&mut self.plan.launches);
        let result = (|| {
            for launch in &launches {
                let start = if timed.is_some() { self.profile_event()? } else { None };
                let before = self.device.launches.get();
                self.launch(launch, n, rows_from)?;
                if let Some(labels) = labels.as_deref_mut() {
                    let label = profile_label(launch, n, self.shared_optin);
                    labels.extend((before..self.device.launches.get()).map(|_| label.clone()));
                }
                if let (Some(start), Some(timed)) = (start, timed.as_deref_mut()) {
                    let end = self.profile_event()?.expect("profiling is on");
                    timed.push((profile_label(launch, n, self.shared_optin), start, end));
                }
            }
            Ok(())
        })();
        self.plan.launches = launches;
        result
    }

    /// Blocks of a linear kernel that fit on one multiprocessor with this block size and staged x (asked of
    /// the driver once per shape: prefills launch directly, so this is on their path).
    fn linear_blocks_per_sm(&mut self, f: &CudaFunction, threads: u32, shared: u32) -> Result<usize, RuntimeError> {
        let key = (f.cu_function() as usize, threads, shared);
        if let Some(&blocks) = self.occupancy.get(&key) {
            return Ok(blocks);
        }
        let blocks = f
            .occupancy_max_active_blocks_per_multiprocessor(threads, shared as usize, None)
            .map_err(cuda_error("reading the linear kernel's occupancy"))?
            .max(1) as usize;
        self.occupancy.insert(key, blocks);
        Ok(blocks)
    }

    /// A timing event on the stream when profiling.
    fn profile_event(&self) -> Result<Option<cudarc::driver::CudaEvent>, RuntimeError> {
        if self.profile.is_none() {
            return Ok(None);
        }
        self.device
            .stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map(Some)
            .map_err(cuda_error("recording a profile event"))
    }

    /// Checks a step's request; `Ok(false)` when it is longer than one chunk (so it runs in chunks).
    fn check_step(&self, ids: &[u32], positions: &[i64], mask: Option<&[bool]>) -> Result<bool, RuntimeError> {
        let n = ids.len();
        let bad = |message: String| RuntimeError::DecoderContract { message };
        if n == 0 || positions.len() != n {
            return Err(bad(format!("{n} ids and {} positions", positions.len())));
        }
        if let Some(m) = mask {
            if m.len() != n * n {
                return Err(bad(format!("a mask of {} entries for {n} tokens, not {}", m.len(), n * n)));
            }
            if self.plan.tree_mask.is_none() && m.iter().enumerate().any(|(e, &b)| b != (e % n <= e / n)) {
                return Err(bad("this graph has no tree_mask input, so it verifies chains only".to_string()));
            }
        }
        if self.kv_len + n > self.plan.kv_capacity {
            return Err(RuntimeError::KvCache {
                message: format!(
                    "{} cached + {n} new tokens exceed the CUDA KV cache of {} tokens; raise --max-context",
                    self.kv_len, self.plan.kv_capacity
                ),
            });
        }
        let max = self.plan.max_rows;
        if n <= max {
            return Ok(true);
        }
        if mask.is_some() {
            return Err(bad(format!("a tree of {n} tokens is larger than one CUDA step ({max})")));
        }
        Ok(false)
    }

    /// A step of any length: causal chunks of at most `max_step_tokens`, each attending to the cache the
    /// earlier ones filled. `last_only` reads only the last row (the earlier chunks read nothing);
    /// otherwise every row. A failed chunk leaves the cache as it was before the step.
    fn run_step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
        last_only: bool,
        read: Readback,
    ) -> Result<Vec<ChunkOutput>, RuntimeError> {
        self.check_step(ids, positions, mask)?;
        let max = self.plan.max_rows;
        let start = self.kv_len;
        let chunks = ids.len().div_ceil(max);
        let mut outputs = Vec::with_capacity(chunks);
        for (i, (chunk_ids, chunk_pos)) in ids.chunks(max).zip(positions.chunks(max)).enumerate() {
            let last_chunk = i + 1 == chunks;
            // Earlier chunks of a last-row step need no logits; one row is the least a launch computes.
            let rows_from = if last_only { chunk_ids.len() - 1 } else { 0 };
            let read = if last_only && !last_chunk { Readback::Nothing } else { read };
            match self.run_chunk(chunk_ids, chunk_pos, mask, rows_from, read) {
                Ok(out) if !last_only || last_chunk => outputs.push(out),
                Ok(_) => {}
                Err(e) => {
                    self.kv_len = start;
                    return Err(e);
                }
            }
        }
        Ok(outputs)
    }

    fn graph_vocab_hint(&self) -> Option<usize> {
        self.plan
            .launches
            .iter()
            .find_map(|l| if let Launch::Embedding { vocab, .. } = l { Some(*vocab) } else { None })
    }

    /// The KV-cache append launch of an `Attention` launch (with its rope, when it has one) for steps whose
    /// attention kernel does not append itself.
    fn append_kv(&mut self, attention: &Launch, n: usize) -> Result<(), RuntimeError> {
        let Launch::Attention { append, rope, q, k, v, layer, heads, kv_heads, head_dim, v_dim, .. } = attention else {
            unreachable!("append_kv is given attention launches only")
        };
        let failed = |name: &str| cuda_error(format!("launching {name}"));
        let kv = self.plan.layers[&(*layer as u32)];
        let (kc, vc) = (self.base + kv.keys, self.base + kv.values);
        let step = self.base + self.plan.step_info;
        if let Some(rope) = rope {
            let f = self.device.function(&rope.kernel)?;
            let args = RopeAppendArgs {
                q: self.addr(rope.q_in),
                k: self.addr(rope.k_in),
                v: self.addr(*v),
                q_out: self.addr(*q),
                kcache: kc,
                vcache: vc,
                step,
                rope_table: self.base + self.plan.rope_tables[rope.table],
                s: n as i32,
                heads: *heads as i32,
                kv_heads: *kv_heads as i32,
                d: *head_dim as i32,
                dv: *v_dim as i32,
                rdim: rope.rotary_dim as i32,
                interleaved: i32::from(rope.interleaved),
                _pad: 0,
            };
            let elements = n * (heads * head_dim).max(kv.k_row).max(kv.v_row);
            let mut b = KernelArgs::default();
            b.arg(&args);
            // SAFETY: argument types match the kernel's signature; the caller checked past + n <= capacity.
            unsafe { self.device.launch(&f, cfg(elements.div_ceil(256), 256, 0), &mut b) }
                .map_err(failed(&rope.kernel))?;
        } else {
            let f = self.device.function(append)?;
            let (ka, va) = (self.addr(*k), self.addr(*v));
            let (s, kr, vr) = (n as i32, kv.k_row as i32, kv.v_row as i32);
            let mut b = KernelArgs::default();
            b.arg(&ka).arg(&va).arg(&kc).arg(&vc).arg(&step).arg(&s).arg(&kr).arg(&vr);
            // SAFETY: as above.
            unsafe { self.device.launch(&f, cfg((n * kv.k_row.max(kv.v_row)).div_ceil(256), 256, 0), &mut b) }
                .map_err(failed(append))?;
        }
        Ok(())
    }

    fn launch(&mut self, launch: &Launch, n: usize, rows_from: usize) -> Result<(), RuntimeError> {
        let shapes = &self.plan.shapes;
        let rows = |v: ValueId, row: usize| shapes[v.index()].numel(n) / row.max(1);
        let failed = |name: &str| cuda_error(format!("launching {name}"));
        match launch {
            Launch::Embedding { kernel, table, ids, out, vocab, hidden } => {
                let f = self.device.function(kernel)?;
                let (t, i, o, e) =
                    (self.addr(*table), self.addr(*ids), self.addr(*out), self.base + self.plan.error_flag);
                let (tokens, v, h) = (rows(*ids, 1) as i32, *vocab as i32, *hidden as i32);
                let mut b = KernelArgs::default();
                b.arg(&t).arg(&i).arg(&o).arg(&tokens).arg(&v).arg(&h).arg(&e);
                // SAFETY: argument types match the kernel's signature; buffers are planned for n tokens.
                unsafe { self.device.launch(&f, cfg((tokens as usize * *hidden).div_ceil(256), 256, 0), &mut b) }
                    .map_err(failed(kernel))?;
            }
            Launch::Linear { kernel, x, parts, k, softcap, logits, norm, swiglu } => {
                let f = self.device.function(kernel)?;
                let mut m = rows(*x, *k);
                let mut xa = self.addr(*x);
                let mut skip_out = 0u64;
                if *logits && rows_from > 0 {
                    // Only the rows the caller reads: a prefill needs the last row's logits alone.
                    let xbytes = self.graph.value_type(*x).dtype.size_of().unwrap_or(4);
                    xa += (rows_from * k * xbytes) as u64;
                    skip_out = rows_from as u64;
                    m -= rows_from;
                }
                let mut args = LinearArgs {
                    x: xa,
                    m: m as i32,
                    n: 0,
                    k: *k as i32,
                    softcap: *softcap,
                    parts: parts.len() as i32,
                    ksplit: 1,
                    part: [LinearPartArgs::default(); LINEAR_PARTS],
                    staged: 0,
                    _pad2: 0,
                    norm_x: 0,
                    norm_residual: 0,
                    norm_sum: 0,
                    norm_w: 0,
                    norm_eps: 0.0,
                    norm_offset: 0.0,
                    swiglu_out: 0,
                };
                // A folded norm runs inside this launch where the kernel stages all of x (every row, so not
                // the last-row logits of a prefill) and no GEMM takes the step; otherwise as its own launch
                // first. Both compute the same bits (see plan::fuse_norm_into_linear).
                // x as staged floats (the ring kernel holds the normalised x so).
                let x_bytes = m * k * 4;
                let mut staged_bytes = x_bytes;
                let gemm_step = m > CUDA_EXACT_STEP_ROWS && self.blas.is_some();
                // The folded norm's weights are staged after x (linear.cu, stage_norm_weights).
                let norm_bytes = k * 4;
                if let Some(norm) = norm.as_deref() {
                    match norm {
                        Launch::RmsNorm { x: nx, residual, w, eps, offset, .. }
                            if !gemm_step && staged_bytes + norm_bytes <= self.linear_stage_bytes && skip_out == 0 =>
                        {
                            args.norm_x = self.addr(*nx);
                            if let Some((b, sum)) = residual {
                                args.norm_residual = self.addr(*b);
                                args.norm_sum = self.addr(*sum);
                            }
                            args.norm_w = self.base + self.plan.slot_offsets[w.0];
                            args.norm_eps = *eps;
                            args.norm_offset = *offset;
                            staged_bytes += norm_bytes;
                        }
                        separate => self.launch(separate, n, 0)?,
                    }
                }
                for (slot, part) in args.part.iter_mut().zip(parts) {
                    *slot = LinearPartArgs {
                        w: self.addr(part.w),
                        bias: part.bias.map_or(0u64, |s| self.base + self.plan.slot_offsets[s.0]),
                        out: self.addr(part.out) + skip_out * (part.n * 4) as u64,
                        n: part.n as i32,
                        _pad: 0,
                    };
                    args.n += part.n as i32;
                }
                if gemm_step {
                    let mut all = true;
                    for (i, (slot, part)) in args.part.iter().zip(parts).enumerate() {
                        // The parts share x and the weight dtype: x is converted for cuBLAS once.
                        all = self.gemm(xa, *x, slot.w, part.w, slot.out, (m, part.n, *k), i == 0)?;
                        if !all {
                            break;
                        }
                        if slot.bias != 0 || *softcap > 0.0 {
                            let f = self.device.function("kiln_bias_softcap")?;
                            let (r, ni) = (m as i64, part.n as i32);
                            let mut b = KernelArgs::default();
                            b.arg(&slot.out).arg(&slot.bias).arg(&r).arg(&ni).arg(softcap);
                            // SAFETY: out holds m rows of n floats.
                            unsafe { self.device.launch(&f, cfg((m * part.n).div_ceil(256), 256, 0), &mut b) }
                                .map_err(failed("kiln_bias_softcap"))?;
                        }
                    }
                    if all {
                        if let Some(swiglu) = swiglu.as_deref() {
                            self.launch(swiglu, n, 0)?;
                        }
                        return Ok(());
                    }
                }
                // A folded SwiGLU: the kernel writes silu(gate) * up (plan::fuse_swiglu_into_linear).
                if let Some(Launch::Fused { out, .. }) = swiglu.as_deref() {
                    args.swiglu_out = self.addr(*out);
                }
                // x goes to shared memory when it fits (always for a decode step); one wave of blocks, each
                // warp striding over the columns.
                let shared = if staged_bytes <= self.linear_stage_bytes {
                    args.staged = 1;
                    staged_bytes as u32
                } else {
                    0
                };
                // Long rows are shared by several warps (each then streams at most one round of loads); the
                // split depends on K and the weight dtype only, so every launch computes a column alike.
                let wbytes = self.graph.value_type(parts[0].w).dtype.size_of().unwrap_or(4);
                let ksplit = linear_ksplit(*k, wbytes);
                // One row (a decode step): a one-row kernel, pipelined across columns for long rows.
                // A fused norm delays the first column by the norm's reduction: the pipelined kernel's weights,
                // requested before that, cover it. The lean kernel has neither a fused norm nor a SwiGLU.
                // Under programmatic launch the pipelined kernel's first weights are requested while the
                // previous kernel finishes, which outweighs the lean kernel's occupancy on short rows too
                // (the o projection, H100: 1B decode +1.8%, 8B +0.9%; bench/gpu-decode.md).
                let pipelined =
                    self.device.pdl || ksplit >= GEMV_PIPELINE_SPLIT || args.norm_w != 0 || args.swiglu_out != 0;
                let per_block = linear_columns_per_block(ksplit);
                args.ksplit = ksplit as i32;
                let threads = linear_threads(ksplit) as u32;
                // The ring kernel, where the model takes it and a column is one round of loads. Without a folded
                // norm its lanes load their part of x from memory instead of a staged copy (1B shape on an
                // H200, every linear on the ring: +2.5%; the down projection's staged x alone is 32 KB a block);
                // with one, the ring follows the normalised x.
                // Its shared memory: the normalised x where a norm is folded (its threads keep their part of the
                // norm's weights in registers), then the rings.
                let ring_shared =
                    if args.norm_w != 0 { x_bytes as u32 } else { 0 } + gemv_ring_bytes(threads as usize) as u32;
                let ring = m == 1
                    && self.gemv_ring
                    && gemv_one_round(*k, wbytes, ksplit)
                    && ring_shared as usize <= self.ring_shared_limit;
                let (f, shared) = match m {
                    1 if ring => {
                        args.staged = 0;
                        (self.device.function(&gemv_ring_name(kernel))?, ring_shared)
                    }
                    1 => (self.device.function(&gemv_name(kernel, pipelined))?, shared),
                    _ => (f, shared),
                };
                debug_assert!(
                    args.norm_w == 0 || threads as usize == NORM_THREADS,
                    "fused norms run with NORM_THREADS"
                );
                // As many blocks as fit on the GPU at once (registers and staged x permitting): blocks that
                // waited for a second wave would start after the first had streamed its columns.
                let per_sm = self.linear_blocks_per_sm(&f, threads, shared)?;
                let blocks = (args.n as usize).div_ceil(per_block).min(per_sm * self.sms);
                let mut b = KernelArgs::default();
                b.arg(&args);
                // SAFETY: as above; every part's weight, bias and output are planned for its n columns, and
                // the kernel's shared-memory limit was raised at load to LINEAR_STAGE_BYTES (the ring kernel's to
                // that and its rings, within ring_shared_limit).
                unsafe { self.device.launch(&f, cfg(blocks, threads, shared), &mut b) }.map_err(failed(kernel))?;
            }
            Launch::RmsNorm { kernel, x, residual, w, out, h, eps, offset } => {
                let f = self.device.function(kernel)?;
                let r = rows(*out, *h);
                let (xa, wa, oa) = (self.addr(*x), self.base + self.plan.slot_offsets[w.0], self.addr(*out));
                let hi = *h as i32;
                let mut b = KernelArgs::default();
                b.arg(&xa);
                let (ra, sa);
                if let Some((bv, sum)) = residual {
                    (ra, sa) = (self.addr(*bv), self.addr(*sum));
                    b.arg(&ra).arg(&sa);
                }
                b.arg(&wa).arg(&oa).arg(&hi).arg(eps).arg(offset);
                // SAFETY: as above. NORM_THREADS threads: the linear kernels' fused norm normalises a row
                // with as many, and the two must give the same bits.
                unsafe { self.device.launch(&f, cfg(r, NORM_THREADS as u32, 0), &mut b) }.map_err(failed(kernel))?;
            }
            Launch::LayerNorm { kernel, x, residual, w, b: bias, out, h, eps } => {
                let f = self.device.function(kernel)?;
                let r = rows(*out, *h);
                let (xa, wa, oa) = (self.addr(*x), self.base + self.plan.slot_offsets[w.0], self.addr(*out));
                let ba = bias.map_or(0u64, |s| self.base + self.plan.slot_offsets[s.0]);
                let hi = *h as i32;
                let mut b = KernelArgs::default();
                b.arg(&xa);
                let (ra, sa);
                if let Some((bv, sum)) = residual {
                    (ra, sa) = (self.addr(*bv), self.addr(*sum));
                    b.arg(&ra).arg(&sa);
                }
                b.arg(&wa).arg(&ba).arg(&oa).arg(&hi).arg(eps);
                // SAFETY: as above.
                unsafe { self.device.launch(&f, cfg(r, 256, 0), &mut b) }.map_err(failed(kernel))?;
            }
            Launch::Rope {
                kernel,
                x,
                positions,
                inv_freq,
                magnitude,
                out,
                heads,
                head_dim,
                rotary_dim,
                interleaved,
            } => {
                let f = self.device.function(kernel)?;
                let tokens = rows(*x, heads * head_dim);
                let (xa, pa, fa, oa) = (
                    self.addr(*x),
                    self.addr(*positions),
                    self.base + self.plan.slot_offsets[inv_freq.0],
                    self.addr(*out),
                );
                let (t, hh, d, rd, il) =
                    (tokens as i32, *heads as i32, *head_dim as i32, *rotary_dim as i32, i32::from(*interleaved));
                let mut b = KernelArgs::default();
                b.arg(&xa).arg(&pa).arg(&fa).arg(magnitude).arg(&oa).arg(&t).arg(&hh).arg(&d).arg(&rd).arg(&il);
                // SAFETY: as above.
                unsafe { self.device.launch(&f, cfg((tokens * heads * head_dim).div_ceil(256), 256, 0), &mut b) }
                    .map_err(failed(kernel))?;
            }
            Launch::Attention {
                kernel,
                combine,
                tiled,
                mma,
                split_threads,
                rope,
                q,
                k,
                v,
                positions,
                mask,
                out,
                layer,
                heads,
                kv_heads,
                head_dim,
                v_dim,
                scale,
                softcap,
                causal,
                window,
                sinks,
                ..
            } => {
                let prefill = prefill_attention_kernel(tiled, mma.as_deref(), *head_dim, *v_dim, self.shared_optin)
                    .filter(|_| n > CUDA_EXACT_STEP_ROWS);
                let kv = self.plan.layers[&(*layer as u32)];
                let (kc, vc) = (self.base + kv.keys, self.base + kv.values);
                let step = self.base + self.plan.step_info;
                // Short steps on the split kernel append the step's keys and values in that kernel
                // (AttentionArgs.k_in), rotating them and the queries with the step's table: no append launch
                // before it. Longer ones, and the tiled prefill kernel, append first. Both put the same bits in
                // the cache and the queries, so a step computes the same either way.
                let folded = prefill.is_none() && n <= ATTENTION_FOLD_ROWS;
                let (q_in, k_in, v_in, rope_table, rope_dim, rope_interleaved) = match (folded, rope) {
                    (false, _) => (0, 0, 0, 0, 0, 0),
                    (true, Some(r)) => (
                        self.addr(r.q_in),
                        self.addr(r.k_in),
                        self.addr(*v),
                        self.base + self.plan.rope_tables[r.table],
                        r.rotary_dim as i32,
                        i32::from(r.interleaved),
                    ),
                    (true, None) => (self.addr(*q), self.addr(*k), self.addr(*v), 0, 0, 0),
                };
                if !folded {
                    self.append_kv(launch, n)?;
                }
                // Exact steps split the keys into ATTENTION_CHUNK slots; a long prefill (which need not match a
                // decode step bit for bit, and has parallelism enough in its queries) gives each query one split.
                let (chunk, max_splits) = if n <= CUDA_EXACT_STEP_ROWS {
                    (ATTENTION_CHUNK, plan::attention_splits(self.plan.kv_capacity))
                } else {
                    (self.plan.kv_capacity.div_ceil(ATTENTION_CHUNK) * ATTENTION_CHUNK, 1)
                };
                let args = AttentionArgs {
                    q: self.addr(*q),
                    kcache: kc,
                    vcache: vc,
                    out: self.addr(*out),
                    partial: self.base + self.plan.attention_partial,
                    positions: self.addr(*positions),
                    // A prefill without a mask of its own attends causally: the same visibility as the uploaded
                    // causal mask, and the kernels can stop at each query's (tile's) last key.
                    mask: match mask {
                        Some(_) if n > CUDA_EXACT_STEP_ROWS && *causal && !self.step_has_mask => 0,
                        Some(m) => self.addr(*m),
                        None => 0,
                    },
                    step,
                    s: n as i32,
                    heads: *heads as i32,
                    kv_heads: *kv_heads as i32,
                    d: *head_dim as i32,
                    dv: *v_dim as i32,
                    scale: *scale,
                    softcap: *softcap,
                    causal: i32::from(*causal),
                    window: *window as i32,
                    sinks: *sinks as i32,
                    chunk: chunk as i32,
                    max_splits: max_splits as i32,
                    q_in,
                    k_in,
                    v_in,
                    rope_table,
                    rope_dim,
                    rope_interleaved,
                    prefetch: [0; 3],
                    prefetch_bytes: [0; 3],
                    prefetch_rows: 0,
                };
                if let Some((prefill, threads, tile_bytes)) = prefill {
                    // A prefill: tiles of 64 queries of a head, each block walking the keys in tiles of 64. The
                    // keys are cut into splits of at least PREFILL_SPLIT_TILES key tiles, as many as the
                    // partial buffer holds, so that a long causal tile is several blocks.
                    let key_tiles = (self.kv_len + n).div_ceil(ATTENTION_TILE);
                    let room = (self.plan.partial_rows / n).max(1);
                    let split_tiles = key_tiles.div_ceil(room).max(PREFILL_SPLIT_TILES);
                    let splits = key_tiles.div_ceil(split_tiles);
                    let mut args = args;
                    if splits > 1 {
                        args.chunk = (split_tiles * ATTENTION_TILE) as i32;
                        args.max_splits = room as i32;
                    } else {
                        args.max_splits = 1;
                    }
                    let grid = LaunchConfig {
                        grid_dim: (*heads as u32, n.div_ceil(ATTENTION_TILE) as u32, splits as u32),
                        block_dim: (threads, 1, 1),
                        shared_mem_bytes: tile_bytes as u32,
                    };
                    let f = self.device.function(prefill)?;
                    let mut b = KernelArgs::default();
                    b.arg(&args);
                    // SAFETY: as above; the function's shared-memory limit was raised to tile_bytes at load,
                    // and the partial buffer holds n x heads x room splits.
                    unsafe { self.device.launch(&f, grid, &mut b) }.map_err(failed(prefill))?;
                    if splits > 1 {
                        let f = self.device.function(combine)?;
                        let mut b = KernelArgs::default();
                        b.arg(&args);
                        // SAFETY: as above.
                        unsafe { self.device.launch(&f, cfg(n * heads, 128, 0), &mut b) }.map_err(failed(combine))?;
                    }
                    return Ok(());
                }
                // About two blocks per multiprocessor; each strides over the splits the step has (which block
                // computes a split does not change its result).
                let per_split = max_splits.min((2 * self.sms).div_ceil(n * heads)).max(1);
                let mut args = args;
                // With weights to prefetch, rows of blocks that ask the L2 for them (attention.cu), at least
                // ATTENTION_PREFETCH_BLOCKS blocks.
                let mut rows = per_split;
                if let Some((at, bytes)) = self.attention_prefetch.get(layer) {
                    (args.prefetch, args.prefetch_bytes) = (*at, *bytes);
                    let prefetch_rows = ATTENTION_PREFETCH_BLOCKS.div_ceil(n * heads);
                    args.prefetch_rows = prefetch_rows as i32;
                    rows += prefetch_rows;
                }
                let grid = LaunchConfig {
                    grid_dim: ((n * heads) as u32, rows as u32, 1),
                    block_dim: (*split_threads, 1, 1),
                    shared_mem_bytes: 0,
                };
                let f = self.device.function(kernel)?;
                let mut b = KernelArgs::default();
                b.arg(&args);
                // SAFETY: as above; the partial region holds n x heads x max_splits splits.
                unsafe { self.device.launch(&f, grid, &mut b) }.map_err(failed(kernel))?;
                let f = self.device.function(combine)?;
                let mut b = KernelArgs::default();
                b.arg(&args);
                // SAFETY: as above.
                unsafe { self.device.launch(&f, cfg(n * heads, 128, 0), &mut b) }.map_err(failed(combine))?;
            }
            Launch::RopeTable { positions, inv_freq, magnitude, rotary_dim, table } => {
                let f = self.device.function("kiln_rope_table")?;
                let (pa, fa, ta) = (
                    self.addr(*positions),
                    self.base + self.plan.slot_offsets[inv_freq.0],
                    self.base + self.plan.rope_tables[*table],
                );
                let (r, half) = (n as i32, (*rotary_dim / 2) as i32);
                let mut b = KernelArgs::default();
                b.arg(&pa).arg(&fa).arg(magnitude).arg(&ta).arg(&r).arg(&half);
                // SAFETY: as above; the table holds max_rows rows.
                unsafe { self.device.launch(&f, cfg((n * rotary_dim / 2).div_ceil(256), 256, 0), &mut b) }
                    .map_err(failed("kiln_rope_table"))?;
            }
            Launch::Softmax { kernel, x, out, n: cols } => {
                let f = self.device.function(kernel)?;
                let (xa, oa, c) = (self.addr(*x), self.addr(*out), *cols as i32);
                let mut b = KernelArgs::default();
                b.arg(&xa).arg(&oa).arg(&c);
                // SAFETY: as above.
                unsafe { self.device.launch(&f, cfg(rows(*x, *cols), 256, 0), &mut b) }.map_err(failed(kernel))?;
            }
            Launch::Split { kernel, x, outs, width } => {
                let f = self.device.function(kernel)?;
                let r = rows(*x, *width) as i64;
                for &(o, offset, cols) in outs {
                    let (xa, oa) = (self.addr(*x), self.addr(o));
                    let (w, off, c) = (*width as i32, offset as i32, cols as i32);
                    let mut b = KernelArgs::default();
                    b.arg(&xa).arg(&oa).arg(&r).arg(&w).arg(&off).arg(&c);
                    // SAFETY: as above.
                    unsafe { self.device.launch(&f, cfg((r as usize * cols).div_ceil(256), 256, 0), &mut b) }
                        .map_err(failed(kernel))?;
                }
            }
            Launch::Fused { kernel, inputs, out } => {
                let f = self.device.function(kernel)?;
                let out_dims = shapes[out.index()].dims(n);
                let total: usize = out_dims.iter().product();
                let mut args = FusedArgs {
                    n: total as i64,
                    rank: out_dims.len() as i32,
                    flat: 1,
                    dims: [1; 6],
                    strides: [[0; 6]; 8],
                    inputs: [0; 8],
                    out: self.addr(*out),
                };
                for (d, &size) in out_dims.iter().enumerate() {
                    args.dims[d] = size as i64;
                }
                let contiguous = contiguous_strides(&out_dims);
                for (k, &v) in inputs.iter().enumerate() {
                    args.inputs[k] = self.addr(v);
                    args.strides[k] = broadcast_strides(&shapes[v.index()], n, &out_dims);
                    if !laid_out_as_output(&args.strides[k], &contiguous, &out_dims) {
                        args.flat = 0;
                    }
                }
                let mut b = KernelArgs::default();
                b.arg(&args);
                // SAFETY: as above.
                unsafe { self.device.launch(&f, cfg(total.div_ceil(256).min(65536), 256, 0), &mut b) }
                    .map_err(failed(kernel))?;
            }
        }
        Ok(())
    }
}

impl CudaExecutor {
    /// `out[m, n] = x[m, k] · w[n, k]ᵀ` through cuBLAS (f32 accumulation, no TF32). Used only for steps
    /// longer than [`CUDA_EXACT_STEP_ROWS`] (prefills), whose rows need not match a decode step bit for bit.
    /// Returns false when cuBLAS is not installed or the operands do not suit it (the GEMV path runs then).
    /// With half-precision weights x is converted into the scratch region, unless `convert_x` is false
    /// (an earlier part of the same launch converted the same x).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        xa: u64,
        x: ValueId,
        wa: u64,
        w: ValueId,
        oa: u64,
        (m, n, k): (usize, usize, usize),
        convert_x: bool,
    ) -> Result<bool, RuntimeError> {
        use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
        let Some(blas) = self.blas.as_ref() else { return Ok(false) };
        if self.graph.value_type(x).dtype != kiln_ir::DType::F32 {
            return Ok(false);
        }
        let (wtype, b_ptr) = match self.graph.value_type(w).dtype {
            kiln_ir::DType::F32 => (cudaDataType::CUDA_R_32F, xa),
            half @ (kiln_ir::DType::BF16 | kiln_ir::DType::F16) => {
                let (kernel, t) = if half == kiln_ir::DType::BF16 {
                    ("kiln_convert_f32_bf16", cudaDataType::CUDA_R_16BF)
                } else {
                    ("kiln_convert_f32_f16", cudaDataType::CUDA_R_16F)
                };
                let scratch = self.base + self.plan.gemm_scratch;
                if convert_x {
                    let f = self.device.function(kernel)?;
                    let total = (m * k) as i64;
                    let mut b = KernelArgs::default();
                    b.arg(&xa).arg(&scratch).arg(&total);
                    // SAFETY: the scratch region holds max_rows x widest K half-precision values; each thread
                    // converts eight of them.
                    unsafe { self.device.launch(&f, cfg((m * k).div_ceil(8 * 256), 256, 0), &mut b) }
                        .map_err(cuda_error(format!("launching {kernel}")))?;
                }
                (t, scratch)
            }
            _ => return Ok(false),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Row-major out[m, n] is column-major n x m: out = wᵀ-as-stored (k x n, transposed) times x (k x m).
        // SAFETY: every pointer is inside the arena with the extents given; the handle uses our stream.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast(),
                wa as *const std::ffi::c_void,
                wtype,
                k as i32,
                b_ptr as *const std::ffi::c_void,
                wtype,
                k as i32,
                (&beta as *const f32).cast(),
                oa as *mut std::ffi::c_void,
                cudaDataType::CUDA_R_32F,
                n as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| RuntimeError::Cuda { message: format!("cuBLAS GEMM {m}x{n}x{k}: {e:?}") })?;
        Ok(true)
    }
}

/// The element strides of a contiguous tensor of `dims`.
fn contiguous_strides(dims: &[usize]) -> [i64; 6] {
    let mut strides = [0i64; 6];
    let mut stride = 1i64;
    for (d, &size) in dims.iter().enumerate().rev() {
        strides[d] = stride;
        stride *= size as i64;
    }
    strides
}

/// Whether an operand read with `strides` along output dims `out` sits at element i for output element i
/// (dims of size 1 never move the offset, whatever their stride).
fn laid_out_as_output(strides: &[i64; 6], contiguous: &[i64; 6], out: &[usize]) -> bool {
    out.iter().enumerate().all(|(d, &size)| size == 1 || strides[d] == contiguous[d])
}

/// Element strides of an operand of shape `shape` read along output dims `out` with numpy broadcasting.
fn broadcast_strides(shape: &RunShape, n: usize, out: &[usize]) -> [i64; 6] {
    let dims = shape.dims(n);
    let mut strides = [0i64; 6];
    let mut stride = 1i64;
    for (i, &d) in dims.iter().enumerate().rev() {
        let o = out.len() - (dims.len() - i);
        strides[o] = if d == 1 && out[o] != 1 { 0 } else { stride };
        stride *= d as i64;
    }
    strides
}

/// Weight bytes the split attention kernel of a layer prefetches into L2 for the linears after it, on devices
/// whose memory is slower than [`PREFETCH_MAX_BANDWIDTH`]: the best of 16, 24, 32 and 48 MiB on an H100 (50 MB
/// of L2) with the Llama-1B shape. 48 MiB was 5% slower than 24: the lines evict each other, and the
/// attention's own loads queue behind them. With the weights loaded evict-first, 24 MiB was still the best of
/// 0, 16, 24, 32 and 40; with the current attention kernel, 0.8-0.9% ahead of none on the 1B shape and 0.2%
/// behind it on the 8B shape (bench/gpu-decode.md).
const ATTENTION_PREFETCH_BYTES: u64 = 24 << 20;

/// Nominal memory bandwidth (bytes a second) from which the attention prefetches nothing. On an H200 (4.8 TB/s
/// nominal, the H100's L2), less was faster with the current attention kernel: against 24 MiB, none gained
/// 1.2% on the Llama-1B shape and 0.9% on the 8B shape (8 MiB the same on the 8B shape), and 32 and 40 MiB
/// lost more (bench/gpu-decode.md). The H100's 3.35 TB/s is below it. Parts near 4 TB/s (H100 NVL, GH200
/// with HBM3) were not measured.
const PREFETCH_MAX_BANDWIDTH: f64 = 4.0e12;

/// The attention's prefetch budget in bytes: `setting` (`KILN_CUDA_L2_PREFETCH_MIB`, for measuring) when set,
/// else [`ATTENTION_PREFETCH_BYTES`] below [`PREFETCH_MAX_BANDWIDTH`] (or where the driver does not report the
/// bandwidth) and none from it; none without bulk prefetch (below sm_90), which has nothing to ask the L2 with.
fn prefetch_budget(bulk_prefetch: bool, bandwidth: Option<f64>, setting: Option<&str>) -> Result<u64, RuntimeError> {
    if !bulk_prefetch {
        return Ok(0);
    }
    if let Some(v) = setting {
        let mib: u64 = v.trim().parse().ok().filter(|&m| m <= 1 << 20).ok_or_else(|| RuntimeError::Cuda {
            message: format!(
                "KILN_CUDA_L2_PREFETCH_MIB is {v:?}; set it to a whole number of MiB up to 1048576 (0 turns the \
                 prefetch off), or unset it for the device's default"
            ),
        })?;
        return Ok(mib << 20);
    }
    Ok(match bandwidth {
        Some(bandwidth) if bandwidth >= PREFETCH_MAX_BANDWIDTH => 0,
        _ => ATTENTION_PREFETCH_BYTES,
    })
}

/// Blocks (at least) that issue the split attention kernel's L2 prefetch, spread over that many
/// multiprocessors' copy engines. With one row of 32 blocks (the Llama shapes' heads), the next launch's
/// first wait passed 3.0 us (8B shape) and 2.0 us (1B) after the last split block's exit in an H200 trace: the
/// prefetch blocks, dispatched last, still issuing their share. 64 blocks: 8B decode +0.9% on an H100, the 1B
/// shape unchanged (bench/gpu-decode.md).
const ATTENTION_PREFETCH_BLOCKS: usize = 64;

/// By layer (layers with something to fetch only), the weights the split attention kernel asks the L2 to fetch
/// while it runs: those of the linear launches after it (the output projection, then the start of the gate/up launch), up to `budget` bytes and
/// three ranges. A decode step's attention is a chain of memory latencies with the bandwidth idle, so the
/// linears after it find part of their weights in L2. A swiglu-folded launch reads its two parts' columns
/// alternately, so it gets equal shares from the start of each; other launches read their parts in order.
fn attention_prefetch(plan: &Plan, graph: &Graph, base: u64, budget: u64) -> HashMap<usize, ([u64; 3], [u64; 3])> {
    let mut out = HashMap::new();
    for (i, launch) in plan.launches.iter().enumerate() {
        let Launch::Attention { layer, .. } = launch else { continue };
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut left = budget;
        for next in &plan.launches[i + 1..] {
            let Launch::Linear { parts, k, swiglu, .. } = next else {
                if matches!(next, Launch::Attention { .. }) {
                    break;
                }
                continue;
            };
            let sizes: Vec<(u64, u64)> = parts
                .iter()
                .map(|p| {
                    let wbytes = graph.value_type(p.w).dtype.size_of().unwrap_or(4) as u64;
                    let at = base + plan.offsets[p.w.index()].expect("the plan gives every weight a buffer");
                    (at, (p.n as u64 * *k as u64 * wbytes) & !15)
                })
                .collect();
            let total: u64 = sizes.iter().map(|s| s.1).sum();
            if swiglu.is_some() && left < total {
                let share = (left / sizes.len() as u64) & !15;
                ranges.extend(sizes.iter().filter(|_| share > 0).map(|&(at, bytes)| (at, bytes.min(share))));
                left = 0;
            } else {
                for &(at, bytes) in &sizes {
                    let take = bytes.min(left) & !15;
                    if take > 0 {
                        ranges.push((at, take));
                    }
                    left -= take;
                }
            }
            if left < 16 || ranges.len() >= 3 {
                break;
            }
        }
        ranges.truncate(3);
        if ranges.is_empty() {
            continue;
        }
        let mut at = [0u64; 3];
        let mut bytes = [0u64; 3];
        for (r, (a, b)) in ranges.into_iter().enumerate() {
            (at[r], bytes[r]) = (a, b);
        }
        out.insert(*layer, (at, bytes));
    }
    out
}

/// The one-row (decode) variants of a `kiln_linear_*` kernel: `kiln_gemv_*`, or `kiln_gemvp_*` (pipelined).
fn gemv_name(linear: &str, pipelined: bool) -> String {
    linear.replacen("kiln_linear_", if pipelined { "kiln_gemvp_" } else { "kiln_gemv_" }, 1)
}

/// The ring (decode) variant of a `kiln_linear_*` kernel: `kiln_gemvr_*`.
fn gemv_ring_name(linear: &str) -> String {
    linear.replacen("kiln_linear_", "kiln_gemvr_", 1)
}

/// Whether a column of K weights of `weight_bytes` each is one round of loads for its `ksplit` warps (what the
/// pipelined and ring kernels' loops take: `one_round` in linear.cu). It implies K is a multiple of 4, which
/// keeps the ring kernel's rings 16-byte aligned after x.
fn gemv_one_round(k: usize, weight_bytes: usize, ksplit: usize) -> bool {
    let bytes = k * weight_bytes;
    bytes.is_multiple_of(16) && bytes / 16 <= 32 * ksplit * LINEAR_UNROLL
}

/// Whether a model's decode linears take the ring kernel (`kiln_gemvr_*`) under programmatic launch: where
/// every linear's rows are split over two or more warps (K above 2048 in 16-bit weights), which on the
/// Llama-8B shape measured 1.8% faster on an H200 and 1.0% on an H100; and on GPUs of at least
/// [`RING_FULL_ROUND_BANDWIDTH`] where every row fills at least one warp's round of loads (K of 2048 or more in
/// 16-bit weights): the Llama-1B shape, 0.6-1.3% faster on an H200 in six calls. Not on the H100 there (0.3%
/// slower in one call), and not where some rows are shorter (unmeasured) or where only some linears would take
/// it: mixed with the pipelined kernel it lost 1-6%, because the two kernels want different splits of a
/// multiprocessor's L1 and shared memory (the pipelined kernel's loads in flight occupy L1, the ring's occupy
/// shared memory; bench/gpu-decode.md). `setting` (`KILN_CUDA_GEMV_RING`, for measuring): `1` takes it for
/// every linear it can compute, `0` for none.
fn gemv_ring_suits(
    plan: &Plan,
    graph: &Graph,
    bandwidth: Option<f64>,
    setting: Option<&str>,
) -> Result<bool, RuntimeError> {
    let row_bytes = plan.launches.iter().filter_map(|launch| match launch {
        Launch::Linear { parts, k, .. } => Some(k * graph.value_type(parts[0].w).dtype.size_of().unwrap_or(4)),
        _ => None,
    });
    gemv_ring_choice(row_bytes, bandwidth, setting)
}

/// Nominal memory bandwidth (bytes a second) from which the ring kernel is taken for rows of one warp's round
/// too ([`gemv_ring_suits`]): measured on an H200 (4.8 TB/s nominal) and an H100 (3.35), as the attention's
/// prefetch rule ([`PREFETCH_MAX_BANDWIDTH`]). A step's fixed costs weigh more where the bandwidth is higher.
const RING_FULL_ROUND_BANDWIDTH: f64 = 4.0e12;

/// [`gemv_ring_suits`] for the bytes of a row of each of a model's linears.
fn gemv_ring_choice(
    row_bytes: impl Iterator<Item = usize>,
    bandwidth: Option<f64>,
    setting: Option<&str>,
) -> Result<bool, RuntimeError> {
    match setting {
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(RuntimeError::Cuda {
            message: format!(
                "KILN_CUDA_GEMV_RING is {v:?}; set it to 1 (every decode linear on the ring kernel) or 0 (none), \
                 or unset it for the model's default"
            ),
        }),
        None => {
            // One warp's round of loads (a ring stage's bytes).
            let round = GEMV_RING_STAGE_BYTES;
            let least = if bandwidth.is_some_and(|b| b >= RING_FULL_ROUND_BANDWIDTH) { round } else { round + 1 };
            // A model without linears has nothing to take it for.
            let mut rows = row_bytes.peekable();
            Ok(rows.peek().is_some() && rows.all(|bytes| bytes >= least))
        }
    }
}

/// How the profile names a launch: its kernel, with the parts a fused linear computes.
fn profile_label(launch: &Launch, n: usize, shared_optin: usize) -> String {
    match launch {
        Launch::Attention { tiled, mma, rope, head_dim, v_dim, .. }
            if n > CUDA_EXACT_STEP_ROWS
                && let Some((kernel, ..)) =
                    prefill_attention_kernel(tiled, mma.as_deref(), *head_dim, *v_dim, shared_optin) =>
        {
            format!("{kernel} (+{}, combine)", if rope.is_some() { "rope, append" } else { "append" })
        }
        Launch::Attention { kernel, rope, .. } => {
            format!("{kernel} (+{}, combine)", if rope.is_some() { "rope, append" } else { "append" })
        }
        Launch::Linear { kernel, parts, k, norm, swiglu, .. } => {
            let cols: Vec<String> = parts.iter().map(|p| p.n.to_string()).collect();
            // Prefill projections go through cuBLAS where it is installed and takes the operands.
            let kernel = if n > CUDA_EXACT_STEP_ROWS { "linear (cuBLAS or kiln)" } else { kernel.as_str() };
            let norm = match norm.as_deref() {
                Some(Launch::RmsNorm { residual: Some(_), .. }) => " (+add_rms_norm)",
                Some(_) => " (+rms_norm)",
                None => "",
            };
            let swiglu = if swiglu.is_some() { " (+swiglu)" } else { "" };
            format!("{kernel} {k}->{}{norm}{swiglu}", cols.join("+"))
        }
        other => kernel_names(other).swap_remove(0),
    }
}

fn kernel_names(launch: &Launch) -> Vec<String> {
    match launch {
        Launch::Attention { append, kernel, combine, tiled, mma, rope, .. } => {
            let first = rope.as_ref().map_or(append, |r| &r.kernel);
            let mut names = vec![first.clone(), kernel.clone(), combine.clone(), tiled.clone()];
            names.extend(mma.iter().cloned());
            names
        }
        Launch::Linear { kernel, norm, swiglu, .. } => {
            let mut names =
                vec![kernel.clone(), gemv_name(kernel, false), gemv_name(kernel, true), gemv_ring_name(kernel)];
            names.extend([norm, swiglu].into_iter().filter_map(|l| l.as_deref()).flat_map(kernel_names));
            names
        }
        Launch::RopeTable { .. } => vec!["kiln_rope_table".to_string()],
        Launch::Embedding { kernel, .. }
        | Launch::RmsNorm { kernel, .. }
        | Launch::LayerNorm { kernel, .. }
        | Launch::Rope { kernel, .. }
        | Launch::Softmax { kernel, .. }
        | Launch::Split { kernel, .. }
        | Launch::Fused { kernel, .. } => vec![kernel.clone()],
    }
}

impl DecoderExecutor for CudaExecutor {
    fn graph(&self) -> &Graph {
        &self.graph
    }

    fn step(
        &mut self,
        ids: &[u32],
        positions: &[i64],
        mask: Option<&[bool]>,
    ) -> Result<(Vec<f32>, usize), RuntimeError> {
        let mut logits = Vec::with_capacity(ids.len() * self.plan.vocab);
        for out in self.run_step(ids, positions, mask, false, Readback::Logits)? {
            logits.extend(out.into_logits());
        }
        Ok((logits, self.plan.vocab))
    }

    fn step_last(&mut self, ids: &[u32], positions: &[i64]) -> Result<Vec<f32>, RuntimeError> {
        let out = self.run_step(ids, positions, None, true, Readback::Logits)?;
        Ok(out.into_iter().next_back().expect("a step has a last chunk").into_logits())
    }

    fn step_argmax(&mut self, ids: &[u32], positions: &[i64], mask: Option<&[bool]>) -> Result<Vec<u32>, RuntimeError> {
        let mut tokens = Vec::with_capacity(ids.len());
        for out in self.run_step(ids, positions, mask, false, Readback::Argmax)? {
            tokens.extend(out.into_tokens());
        }
        Ok(tokens)
    }

    fn step_last_token(&mut self, ids: &[u32], positions: &[i64], sampler: &mut Sampler) -> Result<u32, RuntimeError> {
        let read = match *sampler.sampling() {
            Sampling::Greedy => Readback::Argmax,
            // The same uniform the CPU sampler would draw, from the same generator.
            Sampling::Sample { temperature, top_k, top_p, .. } => {
                Readback::Sample(DeviceDraw { temperature, top_k, top_p, uniform: sampler.uniform() })
            }
        };
        let out = self.run_step(ids, positions, None, true, read)?;
        Ok(out.into_iter().next_back().expect("a step has a last chunk").into_tokens()[0])
    }

    fn decode_run(
        &mut self,
        first: u32,
        first_position: i64,
        max: usize,
        sampler: &mut Sampler,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<usize, RuntimeError> {
        // Traced and profiled steps are collected one by one; without graphs there is nothing to queue.
        let queued = self.use_graphs && self.trace.is_none();
        let room = self.plan.kv_capacity.saturating_sub(self.kv_len);
        let (ran, last, wants_more) = if queued && max > 0 && room > 0 {
            self.decode_queued(first, first_position, max.min(room), sampler, on_token)?
        } else {
            (0, first, true)
        };
        if !wants_more || ran == max {
            return Ok(ran);
        }
        // Past the cache's room (whose error the step gives) or without graphs.
        Ok(ran + decode_steps(self, last, first_position + ran as i64, max - ran, sampler, on_token)?)
    }

    fn kv_len(&self) -> usize {
        self.kv_len
    }

    fn reset(&mut self) {
        self.kv_len = 0;
    }

    fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError> {
        if len > self.kv_len {
            return Err(RuntimeError::KvCache {
                message: format!("cannot truncate to {len} tokens: only {} are cached", self.kv_len),
            });
        }
        self.kv_len = len;
        Ok(())
    }

    fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        let len = self.kv_len;
        if let Some(&bad) = keep.iter().find(|&&k| k >= len) {
            return Err(RuntimeError::KvCache { message: format!("slot {bad} is not cached ({len} tokens)") });
        }
        if keep.windows(2).any(|w| w[0] >= w[1]) || keep.iter().enumerate().any(|(i, &k)| k < i) {
            return Err(RuntimeError::KvCache {
                message: "the kept slots must be increasing (each slot moves down or stays)".to_string(),
            });
        }
        let Some(first) = keep.iter().enumerate().position(|(i, &k)| k != i) else {
            self.kv_len = keep.len();
            return Ok(());
        };
        let indices: Vec<i32> = keep.iter().map(|&k| k as i32).collect();
        self.upload(self.plan.keep_indices, &indices)?;
        let f = self.device.function("kiln_kv_compact")?;
        let mut layers: Vec<_> = self.plan.layers.values().copied().collect();
        layers.sort_by_key(|l| l.keys);
        for layer in layers {
            for (region, row) in [(layer.keys, layer.k_row), (layer.values, layer.v_row)] {
                let (base, keep_ptr) = (self.base + region, self.base + self.plan.keep_indices);
                let (fi, ni, stride, r) = (first as i32, keep.len() as i32, 0i64, row as i32);
                let mut b = KernelArgs::default();
                b.arg(&base).arg(&keep_ptr).arg(&fi).arg(&ni).arg(&stride).arg(&r);
                // SAFETY: the region holds `capacity` rows of `row` floats; every index is below kv_len.
                unsafe { self.device.launch(&f, cfg(1, 256, 0), &mut b) }
                    .map_err(cuda_error("compacting the KV cache"))?;
            }
        }
        self.device.stream.synchronize().map_err(cuda_error("compacting the KV cache"))?;
        self.kv_len = keep.len();
        Ok(())
    }

    fn max_exact_step_rows(&self) -> usize {
        CUDA_EXACT_STEP_ROWS.min(self.plan.max_rows)
    }

    fn device(&self) -> String {
        self.device_description()
    }

    fn extra_row_cost(&self) -> f64 {
        // A decode step streams every weight once; a few more rows reuse each load (the GEMV kernel
        // multiplies each 16-byte weight chunk into up to 8 rows), so they cost little until compute binds.
        // An estimate from that design, not yet measured on a GPU.
        0.02
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// H100/H200 opt-in shared memory per block (227 KiB) and the 99 KiB of smaller parts (sm_86, sm_89).
    const HOPPER_OPTIN: usize = 232_448;
    const SMALL_OPTIN: usize = 101_376;

    #[test]
    fn the_attention_prefetch_budget_follows_the_memory_bandwidth_and_the_setting() {
        // Nominal bandwidths of an H100 SXM (2619 MHz x 5120 bits) and an H200 (3201 MHz x 6144 bits).
        let h100 = Some(2.0 * 2_619_000e3 * 5120.0 / 8.0);
        let h200 = Some(2.0 * 3_201_000e3 * 6144.0 / 8.0);
        assert_eq!(prefetch_budget(true, h100, None).unwrap(), 24 << 20);
        assert_eq!(prefetch_budget(true, h200, None).unwrap(), 0);
        assert_eq!(prefetch_budget(true, None, None).unwrap(), 24 << 20);
        // No bulk prefetch (below sm_90): nothing, whatever is asked.
        assert_eq!(prefetch_budget(false, h100, Some("16")).unwrap(), 0);
        assert_eq!(prefetch_budget(true, h200, Some(" 16 ")).unwrap(), 16 << 20);
        assert_eq!(prefetch_budget(true, h100, Some("0")).unwrap(), 0);
        for bad in ["", "24MiB", "-1", "1.5", "99999999"] {
            let err = prefetch_budget(true, h100, Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains("KILN_CUDA_L2_PREFETCH_MIB") && err.contains("whole number of MiB up to"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn the_ring_kernel_is_taken_for_long_rows_and_full_rounds_on_fast_memory_or_as_set() {
        let bf16 = |ks: &[usize]| ks.iter().map(|&k| k * 2).collect::<Vec<_>>();
        let (h100, h200) = (Some(3.35e12), Some(4.8e12));
        let llama8b = bf16(&[4096, 4096, 4096, 14336, 4096]);
        let llama1b = bf16(&[2048, 2048, 2048, 8192, 2048]);
        // Llama-3.1-8B (hidden 4096, FFN 14336): every row over two or more warps, on either GPU.
        assert!(gemv_ring_choice(llama8b.iter().copied(), h100, None).unwrap());
        assert!(gemv_ring_choice(llama8b.iter().copied(), h200, None).unwrap());
        // Llama-3.2-1B (hidden 2048, FFN 8192): its 2048-wide rows are one warp's full round, which takes
        // the ring on the H200 and not on the H100 (nor where the driver reports no bandwidth).
        assert!(!gemv_ring_choice(llama1b.iter().copied(), h100, None).unwrap());
        assert!(gemv_ring_choice(llama1b.iter().copied(), h200, None).unwrap());
        assert!(!gemv_ring_choice(llama1b.iter().copied(), None, None).unwrap());
        // SmolLM2-135M (hidden 576, FFN 1536): rows shorter than a round keep the pipelined kernel.
        assert!(!gemv_ring_choice(bf16(&[576, 576, 576, 1536, 576]).into_iter(), h200, None).unwrap());
        // f32 weights of 2048 are two warps' rows; no linear at all: nothing to take it for.
        assert!(gemv_ring_choice([2048 * 4].into_iter(), h100, None).unwrap());
        assert!(!gemv_ring_choice(std::iter::empty(), h200, None).unwrap());
        assert!(gemv_ring_choice(bf16(&[576]).into_iter(), h100, Some("1")).unwrap());
        assert!(!gemv_ring_choice(bf16(&[4096]).into_iter(), h200, Some("0")).unwrap());
        for bad in ["", "on", "2", " 1"] {
            let err = gemv_ring_choice(std::iter::empty(), h200, Some(bad)).unwrap_err().to_string();
            assert!(err.contains("KILN_CUDA_GEMV_RING") && err.contains("set it to 1"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn prefill_takes_the_tensor_core_kernel_where_the_plan_has_one_and_it_fits() {
        let mma = Some("kiln_attention_mma_xf32_d128");
        let chosen = prefill_attention_kernel("kiln_attention_tiled_xf32_d128", mma, 128, 128, HOPPER_OPTIN);
        // q, k and v tiles of 64 rows of 132 floats.
        assert_eq!(chosen, Some(("kiln_attention_mma_xf32_d128", 128, 4 * 64 * 3 * 132)));
        // A plan without one (f32 weights, or KILN_ATTENTION_MMA=0): the tiled kernel, 256 threads.
        let (name, threads, bytes) =
            prefill_attention_kernel("kiln_attention_tiled_xf32_d128", None, 128, 128, HOPPER_OPTIN)
                .expect("the tiled kernel fits");
        assert_eq!((name, threads), ("kiln_attention_tiled_xf32_d128", 256));
        assert_eq!(Some(bytes), tiled_attention_bytes(128, 128));
    }

    #[test]
    fn prefill_tiles_that_do_not_fit_leave_the_prefill_to_the_split_kernel() {
        // 256-wide heads: 195 KiB of tiles fit a Hopper block, not a 99 KiB one (no fallback to the tiled
        // kernel, whose tiles are larger still).
        let mma = Some("kiln_attention_mma_xbf16_d256");
        assert_eq!(mma_attention_bytes(256, 256), 4 * 64 * 3 * 260);
        assert!(prefill_attention_kernel("t", mma, 256, 256, HOPPER_OPTIN).is_some());
        assert_eq!(prefill_attention_kernel("t", mma, 256, 256, SMALL_OPTIN), None);
        assert!(tiled_attention_bytes(256, 256).is_none_or(|b| b > SMALL_OPTIN));
    }
}
