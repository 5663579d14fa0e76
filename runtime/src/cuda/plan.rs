//! The launch plan of a graph on the GPU: which kernel runs for which nodes, with which operands, and
//! where every value lives in the device arena.
//!
//! The arena holds, in order: the weights (in their stored dtype; norm scales and biases widened to f32),
//! constants and rope frequency tables; the KV cache; the step inputs; and the activations, whose offsets
//! are planned from their lifetimes over the launch sequence so that buffers are reused. Reshapes are views
//! (their result shares the operand's buffer), and the values inside a fused elementwise chain never reach
//! memory. Sizes are planned for steps of up to `max_rows` tokens.

use std::collections::{HashMap, HashSet};

use kiln_ir::fusion::{ElementwiseGroup, elementwise_groups};
use kiln_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, RopeStyle, ValueId, WeightStore};

use crate::RuntimeError;

/// Device buffers are aligned to this many bytes (16-byte vector loads need 16; 256 keeps rows tidy).
pub(crate) const ALIGN: u64 = 256;

/// A dim at run time: fixed, or the number of tokens of the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunDim {
    Fixed(usize),
    Tokens,
}

/// A value's shape with the step's token count left open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RunShape(pub Vec<RunDim>);

impl RunShape {
    pub fn dims(&self, tokens: usize) -> Vec<usize> {
        self.0.iter().map(|d| if let RunDim::Fixed(n) = d { *n } else { tokens }).collect()
    }
    pub fn numel(&self, tokens: usize) -> usize {
        self.dims(tokens).iter().product()
    }
}

/// How a value's bytes reach the device before the first step.
pub(crate) enum Upload {
    /// A weight in its stored dtype.
    Weight { name: String },
    /// Bytes computed on the host: f32-widened scales, constants, rope tables.
    Bytes(Vec<u8>),
}

/// One kernel launch (or KV-cache append + attention pair) of a step.
#[derive(Clone, Debug)]
pub(crate) enum Launch {
    Embedding {
        kernel: String,
        table: ValueId,
        ids: ValueId,
        out: ValueId,
        vocab: usize,
        hidden: usize,
    },
    /// One or more linears over the same `x` (q/k/v, gate/up), computed by one launch.
    Linear {
        kernel: String,
        x: ValueId,
        parts: Vec<LinearPart>,
        k: usize,
        softcap: f32,
        logits: bool,
        /// The `RmsNorm` launch that computes `x`, folded in (see [`fuse_norm_into_linear`]): the linear
        /// kernel normalises x itself where it stages x in shared memory, and the norm launch runs first
        /// otherwise (prefill GEMMs, steps whose x does not fit).
        norm: Option<Box<Launch>>,
        /// The `Fused` launch of a lone `swiglu` over this launch's two parts (gate, up), folded in (see
        /// [`fuse_swiglu_into_linear`]): the kernel writes `silu(gate) * up` instead of either product, and
        /// steps it cannot serve (cuBLAS prefill) run the linear and then this launch.
        swiglu: Option<Box<Launch>>,
    },
    RmsNorm {
        kernel: String,
        x: ValueId,
        residual: Option<(ValueId, ValueId)>,
        w: Slot,
        out: ValueId,
        h: usize,
        eps: f32,
        offset: f32,
    },
    LayerNorm {
        kernel: String,
        x: ValueId,
        residual: Option<(ValueId, ValueId)>,
        w: Slot,
        b: Option<Slot>,
        out: ValueId,
        h: usize,
        eps: f32,
    },
    Rope {
        kernel: String,
        x: ValueId,
        positions: ValueId,
        inv_freq: Slot,
        magnitude: f64,
        out: ValueId,
        heads: usize,
        head_dim: usize,
        rotary_dim: usize,
        interleaved: bool,
    },
    Attention {
        append: String,
        /// The split kernel (decode steps and trees), for this head size.
        kernel: String,
        /// Merges the split kernel's partials.
        combine: String,
        /// The tiled prefill kernel, for this head size.
        tiled: String,
        /// The tensor-core prefill kernel, preferred to `tiled` where it exists: for head sizes that are
        /// multiples of 8 (its 8-wide matrix fragments), and 16-bit activations or f32 ones of a model whose
        /// linears all have 16-bit weights (its operands are rounded to tf32: attention.cu).
        mma: Option<String>,
        /// Threads of a split kernel block (its head-size class's warps, [`attention_split_threads`]).
        split_threads: u32,
        /// The rope of q and k, when the append launch computes it (then `q` is written by that launch and
        /// the rotated `k` goes straight to the cache).
        rope: Option<AttentionRope>,
        q: ValueId,
        k: ValueId,
        v: ValueId,
        positions: ValueId,
        mask: Option<ValueId>,
        out: ValueId,
        layer: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        v_dim: usize,
        scale: f32,
        softcap: f32,
        causal: bool,
        window: u32,
        sinks: u32,
    },
    /// The cos and sin of every (row, pair) of the step for one rotation (`kiln_rope_table`), into
    /// `Plan::rope_tables[table]`, which the attention launches with a folded rope rotate q and k with (see
    /// [`fuse_rope_into_append`]).
    RopeTable {
        positions: ValueId,
        inv_freq: Slot,
        magnitude: f64,
        rotary_dim: usize,
        table: usize,
    },
    Softmax {
        kernel: String,
        x: ValueId,
        out: ValueId,
        n: usize,
    },
    Split {
        kernel: String,
        x: ValueId,
        outs: Vec<(ValueId, usize, usize)>,
        width: usize,
    },
    Fused {
        kernel: String,
        inputs: Vec<ValueId>,
        out: ValueId,
    },
}

/// One linear of a [`Launch::Linear`]: `out[m, 0..n] = x[m] · w[0..n]ᵀ (+ bias)`.
#[derive(Clone, Debug)]
pub(crate) struct LinearPart {
    pub w: ValueId,
    pub bias: Option<Slot>,
    pub out: ValueId,
    pub n: usize,
}

/// Rope of q and k folded into an attention's append launch (`kiln_rope_kv_append_x*`).
#[derive(Clone, Debug)]
pub(crate) struct AttentionRope {
    pub kernel: String,
    /// q and k before the rotation.
    pub q_in: ValueId,
    pub k_in: ValueId,
    pub rotary_dim: usize,
    pub interleaved: bool,
    /// The step's cos/sin table of this rotation (`Plan::rope_tables`, written by a [`Launch::RopeTable`]).
    pub table: usize,
}

/// Linears one launch computes at most (`KILN_LINEAR_PARTS` in linear.cu).
pub(crate) const LINEAR_PARTS: usize = 3;

/// Keys per attention split for steps that must be exact (`chunk` in attention.cu; a multiple of 64).
pub(crate) const ATTENTION_CHUNK: usize = 64;

/// The longest step whose split attention kernel appends its keys and values itself (every block that reads
/// them stores all of them, so the stores grow with the step's rows squared). `KILN_ATTENTION_FOLD_ROWS` in
/// attention.cu, the rows such a block also keeps in shared memory to score them from, is the same number.
pub(crate) const ATTENTION_FOLD_ROWS: usize = 4;

/// Threads of a split attention block of a head-size class (`KILN_ATTENTION_WARPS` in attention.cu: eight
/// warps for the 64- and 128-wide classes, four for the 256-wide one). The kernel takes its warps' keys from
/// that count, so a launch with other threads would skip keys: the kernel ABI marker changes with it.
fn attention_split_threads(class: usize) -> u32 {
    if class <= 128 { 256 } else { 128 }
}

/// The widest head the attention kernels take (their widest head-size class, `_d256`).
const ATTENTION_MAX_HEAD_DIM: usize = 256;

/// A parameter buffer that is not a graph value (an f32 copy of a weight, a rope table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slot(pub usize);

/// One layer's KV cache: `capacity` slots of `k_row` key and `v_row` value f32 elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerKv {
    pub keys: u64,
    pub values: u64,
    pub k_row: usize,
    pub v_row: usize,
}

pub(crate) struct Plan {
    pub launches: Vec<Launch>,
    pub shapes: Vec<RunShape>,
    /// Arena offset of every value that has a buffer (views share their root's offset).
    pub offsets: Vec<Option<u64>>,
    pub slot_offsets: Vec<u64>,
    /// What to copy to the device once: (arena offset, what).
    pub uploads: Vec<(u64, Upload)>,
    pub layers: HashMap<u32, LayerKv>,
    pub kv_capacity: usize,
    /// What a step reads back in one copy: the error flag (an i32) followed by one token id (an i32) per
    /// row of the step, the tokens chosen on the device.
    pub error_flag: u64,
    /// What kernels read of the step from the device (an i32: the cached tokens before it), so that a
    /// captured graph serves every step of one shape.
    pub step_info: u64,
    /// The attention kernels' per-split partial results: room for `partial_rows` (query, split) pairs of
    /// every head.
    pub attention_partial: u64,
    pub partial_rows: usize,
    /// The cos/sin tables of the step's rotations ([`Launch::RopeTable`]): `max_rows` rows each.
    pub rope_tables: Vec<u64>,
    /// Scratch of the device sampler (the `kiln_sample_*` launches; zero between draws).
    pub sample_scratch: u64,
    /// Scratch of the one-row argmax (`kiln_argmax_split_f32`), zeroed with the arena.
    pub argmax_scratch: u64,
    pub keep_indices: u64,
    /// Room for one linear's activations in a half-precision dtype (the cuBLAS prefill path).
    pub gemm_scratch: u64,
    pub arena_bytes: u64,
    pub ids: ValueId,
    pub positions: ValueId,
    pub tree_mask: Option<ValueId>,
    pub logits: ValueId,
    pub vocab: usize,
    pub max_rows: usize,
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

fn invalid(message: String) -> RuntimeError {
    RuntimeError::Cuda { message }
}

/// Bump allocation of the fixed regions.
struct Bump(u64);
impl Bump {
    fn take(&mut self, bytes: u64) -> u64 {
        let at = self.0;
        self.0 = align(at + bytes.max(1));
        at
    }
}

pub(crate) fn build(
    g: &Graph,
    weights: &WeightStore,
    max_rows: usize,
    kv_capacity: usize,
) -> Result<Plan, RuntimeError> {
    let [ids, positions, rest @ ..] = g.inputs() else {
        return Err(invalid("the graph needs the decoder inputs ids and positions".to_string()));
    };
    let (ids, positions, tree_mask) = (*ids, *positions, rest.first().copied());
    let Some(&logits) = g.outputs().first() else {
        return Err(invalid("the graph has no outputs".to_string()));
    };
    // The one symbol a step binds: the token count, dim 1 of `ids`.
    let token_symbol = match g.value_type(ids).shape.dims() {
        [_, Dim::Sym(s)] => Some(s.clone()),
        _ => None,
    };
    let mut shapes = Vec::with_capacity(g.num_values());
    for i in 0..g.num_values() {
        let ty = g.value_type(ValueId(i as u32));
        let dims = ty
            .shape
            .dims()
            .iter()
            .map(|d| match d {
                Dim::Static(n) => Ok(RunDim::Fixed(*n as usize)),
                Dim::Sym(s) if Some(s) == token_symbol.as_ref() => Ok(RunDim::Tokens),
                other => Err(invalid(format!(
                    "value %{i} has type {ty}: the CUDA executor needs every dim static or the token count, not `{other}`"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        shapes.push(RunShape(dims));
    }
    let vocab = match shapes[logits.index()].0.last() {
        Some(RunDim::Fixed(v)) if g.value_type(logits).dtype == DType::F32 => *v,
        _ => return Err(invalid(format!("output 0 is {}, not f32[1, seq, vocab]", g.value_type(logits)))),
    };

    let groups = elementwise_groups(g);
    let group_of_last: HashMap<NodeId, usize> =
        groups.iter().enumerate().map(|(i, grp)| (*grp.nodes.last().expect("non-empty"), i)).collect();
    let position: HashMap<NodeId, usize> = g.order().iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let users = users_by_value(g, &position);
    let absorbed = residual_adds(g, &groups, &position, &users);

    let mut alias: Vec<ValueId> = (0..g.num_values() as u32).map(ValueId).collect();
    let mut launches = Vec::new();
    let mut params = Params::default();
    let mut device_values: HashSet<ValueId> = HashSet::new(); // weights/constants read as tensors
    let mut layers: HashMap<u32, (usize, usize)> = HashMap::new();
    let param_f32 = |params: &mut Params, v: ValueId, what: &str, node: NodeId| -> Result<Slot, RuntimeError> {
        if let Some(&s) = params.f32_copies.get(&v) {
            return Ok(s);
        }
        let values: Vec<f32> = host_tensor_f32(g, weights, v).ok_or_else(|| {
            invalid(format!("node %{}: its {what} must be a float weight or constant for the CUDA executor", node.0))
        })?;
        let s = params.push(values.iter().flat_map(|x| x.to_le_bytes()).collect());
        params.f32_copies.insert(v, s);
        Ok(s)
    };

    // f32 activations take the tensor-core prefill attention only where every linear's weights are 16-bit: the
    // prefill GEMMs then round the activations to 16 bits already, coarser than the kernel's tf32 (attention.cu).
    let linears_16bit = g.order().iter().all(|&id| {
        let node = g.node(id);
        !matches!(node.op, Op::Linear { .. } | Op::Logits { .. })
            || matches!(g.value_type(node.inputs[1]).dtype, DType::BF16 | DType::F16)
    });

    for &id in g.order() {
        let node = g.node(id);
        let at = |msg: String| invalid(format!("node %{} ({}): {msg}", id.0, node.op.name()));
        let inp = |i: usize| node.inputs[i];
        let out = node.outputs.first().copied();
        let dtype_of = |v: ValueId| g.value_type(v).dtype;
        let suffix = |v: ValueId| -> Result<&'static str, RuntimeError> {
            float_suffix(dtype_of(v))
                .ok_or_else(|| at(format!("%{} is {}; CUDA kernels take f32, f16 or bf16", v.0, dtype_of(v))))
        };
        let last_fixed = |v: ValueId| -> Result<usize, RuntimeError> {
            match shapes[v.index()].0.last() {
                Some(RunDim::Fixed(n)) => Ok(*n),
                _ => Err(at(format!("the last dim of %{} must be static", v.0))),
            }
        };
        match &node.op {
            Op::Weight { .. } | Op::Constant { .. } => {}
            Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
                let o = out.expect("one result");
                alias[o.index()] = alias[inp(0).index()];
            }
            op if kiln_ir::fusion::is_elementwise(op) => {
                if let Some(&gi) = group_of_last.get(&id)
                    && !absorbed.contains_key(&gi)
                {
                    let grp = &groups[gi];
                    for &v in &grp.inputs {
                        device_values.insert(v);
                    }
                    launches.push(Launch::Fused {
                        kernel: grp.kernel_name(),
                        inputs: grp.inputs.clone(),
                        out: grp.output,
                    });
                }
            }
            Op::Embedding { .. } => {
                if dtype_of(inp(1)) != DType::I64 {
                    return Err(at("ids must be i64".to_string()));
                }
                let table = inp(0);
                let dims =
                    g.value_type(table).shape.as_static().ok_or_else(|| at("the table must be static".into()))?;
                device_values.insert(table);
                launches.push(Launch::Embedding {
                    kernel: format!("kiln_embedding_x{}", suffix(table)?),
                    table,
                    ids: inp(1),
                    out: out.expect("one result"),
                    vocab: dims[0],
                    hidden: dims[1],
                });
            }
            Op::Linear { .. } | Op::Logits { .. } => {
                let (x, w) = (inp(0), inp(1));
                let o = out.expect("one result");
                if dtype_of(o) != DType::F32 {
                    return Err(at(format!("its result is {}; the CUDA kernel writes f32", dtype_of(o))));
                }
                let dims = g.value_type(w).shape.as_static().ok_or_else(|| at("the weight must be static".into()))?;
                let [n, k] = dims[..] else { return Err(at("the weight must be [N, K]".into())) };
                device_values.insert(w);
                let bias = match node.inputs.get(2) {
                    Some(&b) => Some(param_f32(&mut params, b, "bias", id)?),
                    None => None,
                };
                let softcap = match &node.op {
                    Op::Logits { softcap } => softcap.unwrap_or(0.0),
                    _ => 0.0,
                };
                let kernel = format!("kiln_linear_w{}_x{}", suffix(w)?, suffix(x)?);
                let part = LinearPart { w, bias, out: o, n };
                // A linear right after another over the same x joins its launch (q/k/v, gate/up): adjacent
                // in program order, so nothing in between can read the earlier outputs or write x.
                if let Some(Launch::Linear {
                    kernel: prev,
                    x: px,
                    parts,
                    k: pk,
                    softcap: psc,
                    logits: false,
                    norm: None,
                    swiglu: None,
                }) = launches.last_mut()
                    && *psc == 0.0
                    && *prev == kernel
                    && *px == x
                    && *pk == k
                    && softcap == 0.0
                    && o != logits
                    && parts.len() < LINEAR_PARTS
                {
                    parts.push(part);
                    continue;
                }
                launches.push(Launch::Linear {
                    kernel,
                    x,
                    parts: vec![part],
                    k,
                    softcap,
                    logits: o == logits,
                    norm: None,
                    swiglu: None,
                });
            }
            Op::RmsNorm { eps, offset } => {
                let (x, o) = (inp(0), out.expect("one result"));
                let w = param_f32(&mut params, inp(1), "scale", id)?;
                let residual = absorbed_add(g, &groups, &absorbed, x);
                let stem = if residual.is_some() { "add_rms_norm" } else { "rms_norm" };
                let (x, residual) = match residual {
                    Some((a, b)) => (a, Some((b, x))),
                    None => (x, None),
                };
                launches.push(Launch::RmsNorm {
                    kernel: format!("kiln_{stem}_x{}", suffix(x)?),
                    x,
                    residual,
                    w,
                    out: o,
                    h: last_fixed(o)?,
                    eps: *eps,
                    offset: *offset,
                });
            }
            Op::LayerNorm { axis, eps } => {
                let (x, o) = (inp(0), out.expect("one result"));
                let dims = &shapes[x.index()].0;
                let a = if *axis < 0 { axis + dims.len() as i64 } else { *axis } as usize;
                let mut h = 1;
                for d in dims.get(a..).unwrap_or(&[]) {
                    match d {
                        RunDim::Fixed(n) => h *= n,
                        RunDim::Tokens => return Err(at("the normalised dims must be static".into())),
                    }
                }
                let w = param_f32(&mut params, inp(1), "scale", id)?;
                let b = match node.inputs.get(2) {
                    Some(&b) => Some(param_f32(&mut params, b, "bias", id)?),
                    None => None,
                };
                let residual = absorbed_add(g, &groups, &absorbed, x);
                let stem = if residual.is_some() { "add_layer_norm" } else { "layer_norm" };
                let (x, residual) = match residual {
                    Some((p, q)) => (p, Some((q, x))),
                    None => (x, None),
                };
                launches.push(Launch::LayerNorm {
                    kernel: format!("kiln_{stem}_x{}", suffix(x)?),
                    x,
                    residual,
                    w,
                    b,
                    out: o,
                    h,
                    eps: *eps,
                });
            }
            Op::Rope { style, theta, rotary_dim, scaling } => {
                let x = inp(0);
                let dims = &shapes[x.index()].0;
                let [_, _, RunDim::Fixed(heads), RunDim::Fixed(head_dim)] = dims[..] else {
                    return Err(at("x must be [batch, seq, heads, head_dim] with static heads and head_dim".into()));
                };
                let (inv_freq, magnitude) =
                    crate::cpu::rope::inverse_frequencies(*theta, *rotary_dim as usize, scaling).map_err(at)?;
                let table = params.push(inv_freq.iter().flat_map(|f| f.to_le_bytes()).collect());
                launches.push(Launch::Rope {
                    kernel: format!("kiln_rope_x{}", suffix(x)?),
                    x,
                    positions: inp(1),
                    inv_freq: table,
                    magnitude,
                    out: out.expect("one result"),
                    heads,
                    head_dim,
                    rotary_dim: *rotary_dim as usize,
                    interleaved: *style == RopeStyle::Interleaved,
                });
            }
            Op::Attention { layer, scale, causal, window, sinks, softcap } => {
                let Some(layer) = layer else {
                    return Err(at("attention without a KV-cache layer runs on the CPU only".into()));
                };
                let (q, k, v) = (inp(0), inp(1), inp(2));
                let dim = |v: ValueId, i: usize| match shapes[v.index()].0.get(i) {
                    Some(RunDim::Fixed(n)) => Ok(*n),
                    _ => Err(at(format!("dim {i} of %{} must be static", v.0))),
                };
                let (heads, head_dim, kv_heads, v_dim) = (dim(q, 2)?, dim(q, 3)?, dim(k, 2)?, dim(v, 3)?);
                if head_dim.max(v_dim) > ATTENTION_MAX_HEAD_DIM {
                    return Err(at(format!(
                        "heads of {} elements; the CUDA attention kernel takes at most {ATTENTION_MAX_HEAD_DIM}",
                        head_dim.max(v_dim)
                    )));
                }
                if kv_heads == 0
                    || heads % kv_heads != 0
                    || dim(k, 3)? != head_dim
                    || dtype_of(k) != dtype_of(q)
                    || dtype_of(v) != dtype_of(q)
                {
                    return Err(at("q, k and v do not fit together (GQA groups, head_dim or dtype)".into()));
                }
                let entry = layers.entry(*layer).or_insert((kv_heads * head_dim, kv_heads * v_dim));
                if *entry != (kv_heads * head_dim, kv_heads * v_dim) {
                    return Err(at(format!("layer {layer} is used with two different key/value sizes")));
                }
                let mask = node.inputs.get(4).copied();
                if mask.is_some() && mask != tree_mask {
                    return Err(at("the attention mask must be the graph's tree_mask input".into()));
                }
                let x = suffix(q)?;
                // The kernels come in head-size classes (registers sized to the head): _d64, _d128, _d256.
                let class = [64, 128, ATTENTION_MAX_HEAD_DIM]
                    .into_iter()
                    .find(|&c| head_dim.max(v_dim) <= c)
                    .expect("checked above");
                launches.push(Launch::Attention {
                    append: format!("kiln_kv_append_x{x}"),
                    kernel: format!("kiln_attention_x{x}_d{class}"),
                    combine: format!("kiln_attention_combine_x{x}"),
                    tiled: format!("kiln_attention_tiled_x{x}_d{class}"),
                    mma: ((x != "f32" || linears_16bit) && head_dim.is_multiple_of(8) && v_dim.is_multiple_of(8))
                        .then(|| format!("kiln_attention_mma_x{x}_d{class}")),
                    split_threads: attention_split_threads(class),
                    rope: None,
                    q,
                    k,
                    v,
                    positions: inp(3),
                    mask,
                    out: out.expect("one result"),
                    layer: *layer as usize,
                    heads,
                    kv_heads,
                    head_dim,
                    v_dim,
                    scale: *scale,
                    softcap: softcap.unwrap_or(0.0),
                    causal: *causal,
                    window: window.unwrap_or(0),
                    sinks: *sinks,
                });
            }
            Op::Softmax { axis } => {
                let x = inp(0);
                if *axis != -1 && *axis != shapes[x.index()].0.len() as i64 - 1 {
                    return Err(at("the CUDA softmax runs over the last axis only".into()));
                }
                launches.push(Launch::Softmax {
                    kernel: format!("kiln_softmax_x{}", suffix(x)?),
                    x,
                    out: out.expect("one result"),
                    n: last_fixed(x)?,
                });
            }
            Op::Split { axis, sizes } => {
                let x = inp(0);
                let rank = shapes[x.index()].0.len() as i64;
                if *axis != -1 && *axis != rank - 1 {
                    return Err(at("the CUDA split runs along the last axis only".into()));
                }
                let bytes = dtype_of(x)
                    .size_of()
                    .filter(|b| [2, 4, 8].contains(b))
                    .ok_or_else(|| at("split needs 2-, 4- or 8-byte elements".into()))?;
                let mut offset = 0;
                let mut outs = Vec::new();
                for (&o, &size) in node.outputs.iter().zip(sizes) {
                    outs.push((o, offset, size as usize));
                    offset += size as usize;
                }
                launches.push(Launch::Split {
                    kernel: format!("kiln_slice_columns_b{bytes}"),
                    x,
                    outs,
                    width: last_fixed(x)?,
                });
            }
            other => return Err(at(format!("the CUDA executor has no kernel for `{}`", other.name()))),
        }
    }

    fuse_rope_into_append(&mut launches, g.outputs(), &alias, &params);
    fuse_norm_into_linear(&mut launches, g, &alias);
    fuse_swiglu_into_linear(&mut launches, g, &alias);

    // ---- arena layout ----
    let mut bump = Bump(0);
    let mut offsets: Vec<Option<u64>> = vec![None; g.num_values()];
    let mut uploads = Vec::new();
    let mut sorted: Vec<ValueId> = device_values.into_iter().collect();
    sorted.sort();
    for v in sorted {
        let v = alias[v.index()];
        if offsets[v.index()].is_some() {
            continue;
        }
        let upload = match g.producer(v).map(|n| &g.node(n).op) {
            Some(Op::Weight { name }) => {
                let w = weights.get(name).map_err(|e| invalid(format!("weight `{name}`: {e}")))?;
                match &w.payload {
                    kiln_ir::WeightPayload::Dense(bytes) => (bytes.len() as u64, Upload::Weight { name: name.clone() }),
                    kiln_ir::WeightPayload::Quantized { .. } => {
                        return Err(invalid(format!(
                            "weight `{name}` is {}; the CUDA executor runs f32, f16 and bf16 weights",
                            w.ty.dtype
                        )));
                    }
                }
            }
            Some(Op::Constant { value }) => {
                if value.dtype() == kiln_ir::DType::Str {
                    return Err(invalid(format!(
                        "a constant holds strings ({}); the CUDA executor holds no string tensors",
                        value.ty()
                    )));
                }
                let bytes = kiln_ir::weights::tensor_to_le_bytes(value);
                (bytes.len() as u64, Upload::Bytes(bytes))
            }
            _ => continue, // an activation: planned below
        };
        let at = bump.take(upload.0);
        offsets[v.index()] = Some(at);
        uploads.push((at, upload.1));
    }
    let mut slot_offsets = Vec::new();
    for bytes in params.slots {
        let at = bump.take(bytes.len() as u64);
        slot_offsets.push(at);
        uploads.push((at, Upload::Bytes(bytes)));
    }
    // KV cache.
    let mut layer_list: Vec<_> = layers.into_iter().collect();
    layer_list.sort();
    let mut kv = HashMap::new();
    for (layer, (k_row, v_row)) in layer_list {
        let keys = bump.take((kv_capacity * k_row * 4) as u64);
        let values = bump.take((kv_capacity * v_row * 4) as u64);
        kv.insert(layer, LayerKv { keys, values, k_row, v_row });
    }
    let error_flag = bump.take((4 + 4 * max_rows) as u64);
    let step_info = bump.take(16);
    // Split-KV partials: steps of up to CUDA_EXACT_STEP_ROWS rows use ATTENTION_CHUNK-key splits over the
    // whole cache; longer (prefill) steps one split per query.
    let widest_attention = launches
        .iter()
        .map(|l| if let Launch::Attention { heads, v_dim, .. } = l { heads * (v_dim + 2) } else { 0 })
        .max()
        .unwrap_or(0);
    let partial_rows =
        (max_rows.min(super::executor::CUDA_EXACT_STEP_ROWS) * attention_splits(kv_capacity)).max(max_rows);
    let attention_partial = bump.take((partial_rows * widest_attention * 4) as u64);
    let mut rope_tables = Vec::new();
    for launch in &launches {
        if let Launch::RopeTable { rotary_dim, table, .. } = launch {
            debug_assert_eq!(*table, rope_tables.len(), "tables are numbered in launch order");
            rope_tables.push(bump.take((max_rows * rotary_dim / 2 * 8) as u64));
        }
    }
    let sample_scratch = bump.take(super::choose::sample_scratch_bytes(vocab) as u64);
    let argmax_scratch = bump.take(super::choose::argmax_scratch_bytes(vocab) as u64);
    let keep_indices = bump.take(((kv_capacity + max_rows) * 4) as u64);
    let widest_k = launches.iter().map(|l| if let Launch::Linear { k, .. } = l { *k } else { 0 }).max().unwrap_or(0);
    let gemm_scratch = bump.take((max_rows * widest_k * 2) as u64);
    // Step inputs.
    let bytes_of = |v: ValueId| -> u64 {
        let dt = g.value_type(v).dtype.size_of().unwrap_or(4);
        (shapes[v.index()].numel(max_rows) * dt) as u64
    };
    for v in [Some(ids), Some(positions), tree_mask].into_iter().flatten() {
        offsets[v.index()] = Some(bump.take(bytes_of(v)));
    }
    // Activations: lifetimes over the launch sequence, then first-fit reuse.
    let mut first_def: HashMap<ValueId, usize> = HashMap::new();
    let mut last_use: HashMap<ValueId, usize> = HashMap::new();
    for (i, launch) in launches.iter().enumerate() {
        let (reads, writes) = operands(launch);
        for v in reads {
            last_use.insert(alias[v.index()], i);
        }
        for v in writes {
            first_def.entry(alias[v.index()]).or_insert(i);
            last_use.entry(alias[v.index()]).or_insert(i);
        }
    }
    for &o in g.outputs() {
        last_use.insert(alias[o.index()], usize::MAX);
    }
    let mut order: Vec<(usize, ValueId)> =
        first_def.iter().filter(|(v, _)| offsets[v.index()].is_none()).map(|(&v, &d)| (d, v)).collect();
    order.sort();
    let activation_base = bump.0;
    let mut live: Vec<(u64, u64, usize)> = Vec::new(); // (offset, bytes, last use)
    let mut high = 0u64;
    for (def, v) in order {
        live.retain(|&(_, _, end)| end >= def);
        live.sort();
        let need = align(bytes_of(v));
        let mut at = 0u64;
        for &(o, b, _) in &live {
            if o >= at + need {
                break;
            }
            at = at.max(align(o + b));
        }
        live.push((at, need, last_use[&v]));
        high = high.max(at + need);
        offsets[v.index()] = Some(activation_base + at);
    }
    let arena_bytes = activation_base + high;
    for i in 0..g.num_values() {
        let root = alias[i];
        if root.index() != i {
            offsets[i] = offsets[root.index()];
        }
    }
    Ok(Plan {
        launches,
        shapes,
        offsets,
        slot_offsets,
        uploads,
        layers: kv,
        kv_capacity,
        error_flag,
        step_info,
        attention_partial,
        partial_rows,
        rope_tables,
        sample_scratch,
        argmax_scratch,
        keep_indices,
        gemm_scratch,
        arena_bytes,
        ids,
        positions,
        tree_mask,
        logits,
        vocab,
        max_rows,
    })
}

/// Host-computed parameter buffers (f32 scales and biases, rope tables), deduplicated per weight.
#[derive(Default)]
struct Params {
    slots: Vec<Vec<u8>>,
    f32_copies: HashMap<ValueId, Slot>,
}

impl Params {
    fn push(&mut self, bytes: Vec<u8>) -> Slot {
        self.slots.push(bytes);
        Slot(self.slots.len() - 1)
    }
}

/// Attention splits of the exact (short) steps over a cache of `kv_capacity` tokens.
pub(crate) fn attention_splits(kv_capacity: usize) -> usize {
    kv_capacity.div_ceil(ATTENTION_CHUNK)
}

fn float_suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("f32"),
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        _ => None,
    }
}

/// The values a launch reads and writes.
pub(crate) fn operands(launch: &Launch) -> (Vec<ValueId>, Vec<ValueId>) {
    match launch {
        Launch::Embedding { table, ids, out, .. } => (vec![*table, *ids], vec![*out]),
        // With a folded norm, its operands come first: x is the norm's output (written, then read). A folded
        // SwiGLU adds its own (it reads the parts' outputs, which keep their buffers for the steps that run
        // it as a launch of its own).
        Launch::Linear { x, parts, norm, swiglu, .. } => {
            let (mut reads, mut writes) = match norm.as_deref() {
                Some(norm) => operands(norm),
                None => (vec![*x], Vec::new()),
            };
            reads.extend(parts.iter().map(|p| p.w));
            writes.extend(parts.iter().map(|p| p.out));
            if let Some(swiglu) = swiglu.as_deref() {
                let (r, w) = operands(swiglu);
                reads.extend(r);
                writes.extend(w);
            }
            (reads, writes)
        }
        Launch::RmsNorm { x, residual, out, .. } | Launch::LayerNorm { x, residual, out, .. } => match residual {
            Some((b, sum)) => (vec![*x, *b], vec![*sum, *out]),
            None => (vec![*x], vec![*out]),
        },
        Launch::Rope { x, positions, out, .. } => (vec![*x, *positions], vec![*out]),
        Launch::Attention { q, k, v, positions, mask, out, rope: None, .. } => {
            let mut r = vec![*q, *k, *v, *positions];
            r.extend(mask);
            (r, vec![*out])
        }
        Launch::Attention { q, v, positions, mask, out, rope: Some(rope), .. } => {
            let mut r = vec![rope.q_in, rope.k_in, *v, *positions];
            r.extend(mask);
            (r, vec![*q, *out])
        }
        Launch::RopeTable { positions, .. } => (vec![*positions], Vec::new()),
        Launch::Softmax { x, out, .. } => (vec![*x], vec![*out]),
        Launch::Split { x, outs, .. } => (vec![*x], outs.iter().map(|o| o.0).collect()),
        Launch::Fused { inputs, out, .. } => (inputs.clone(), vec![*out]),
    }
}

/// How many launch operands and graph outputs read each value (by alias root): the fusions below fold a
/// producer into its consumer only where that consumer is the value's one reader.
fn reader_counts(launches: &[Launch], outputs: &[ValueId], alias: &[ValueId]) -> HashMap<ValueId, usize> {
    let mut readers: HashMap<ValueId, usize> = HashMap::new();
    for v in launches.iter().flat_map(|l| operands(l).0).chain(outputs.iter().copied()) {
        *readers.entry(alias[v.index()]).or_default() += 1;
    }
    readers
}

/// Drops the launches marked `folded` (moved into another launch by a fusion).
fn remove_folded(launches: &mut Vec<Launch>, folded: &[bool]) {
    let mut index = 0;
    launches.retain(|_| {
        index += 1;
        !folded[index - 1]
    });
}

/// Folds the rope launches of an attention's q and k into its append launch, where both rotated values are
/// read by that attention alone and the two ropes are the same rotation: two launches fewer per layer. The
/// rotation moves from the ropes' place in the sequence to the attention's; the launches between read
/// neither rotated value, and the unrotated q and k stay live until the attention (its operands say so).
/// Each distinct rotation gets a [`Launch::RopeTable`] at the start of the step, whose cos and sin both the split
/// attention kernel of exact steps (which then need no append launch at all, see the executor) and the
/// rope + append launch of longer steps rotate with.
fn fuse_rope_into_append(launches: &mut Vec<Launch>, outputs: &[ValueId], alias: &[ValueId], params: &Params) {
    let root = |v: ValueId| alias[v.index()];
    let readers = reader_counts(launches, outputs, alias);
    // The tables run first, so they may read only positions no launch of the step writes (a graph that
    // computes its position ids keeps its rope launches).
    let written: HashSet<ValueId> = launches.iter().flat_map(|l| operands(l).1).map(root).collect();
    let mut folded = vec![false; launches.len()];
    let mut tables: Vec<Launch> = Vec::new();
    for ai in 0..launches.len() {
        let Launch::Attention { q, k, head_dim, rope: None, .. } = &launches[ai] else { continue };
        let producer = |v: ValueId| {
            launches[..ai].iter().position(|l| matches!(l, Launch::Rope { out, .. } if root(*out) == root(v)))
        };
        let (Some(qi), Some(ki)) = (producer(*q), producer(*k)) else { continue };
        let (
            Launch::Rope {
                kernel,
                x: q_in,
                positions,
                inv_freq,
                magnitude,
                head_dim: q_dim,
                rotary_dim,
                interleaved,
                ..
            },
            Launch::Rope {
                x: k_in,
                positions: k_positions,
                inv_freq: k_freq,
                magnitude: k_magnitude,
                head_dim: k_dim,
                rotary_dim: k_rotary,
                interleaved: k_interleaved,
                ..
            },
        ) = (&launches[qi], &launches[ki])
        else {
            continue;
        };
        let same_rotation = positions == k_positions
            && params.slots[inv_freq.0] == params.slots[k_freq.0]
            && magnitude == k_magnitude
            && (q_dim, rotary_dim, interleaved) == (k_dim, k_rotary, k_interleaved)
            && q_dim == head_dim;
        let read_once = |v: ValueId| readers.get(&root(v)) == Some(&1);
        if !same_rotation || !read_once(*q) || !read_once(*k) || qi == ki || written.contains(&root(*positions)) {
            continue;
        }
        let rope = AttentionRope {
            kernel: kernel.replace("kiln_rope_", "kiln_rope_kv_append_"),
            q_in: *q_in,
            k_in: *k_in,
            rotary_dim: *rotary_dim,
            interleaved: *interleaved,
            table: 0,
        };
        let same_table = |t: &Launch| {
            matches!(t, Launch::RopeTable { positions: p, inv_freq: f, magnitude: m, rotary_dim: r, .. }
                if p == positions && params.slots[f.0] == params.slots[inv_freq.0] && m == magnitude && r == rotary_dim)
        };
        let rope = AttentionRope {
            table: tables.iter().position(same_table).unwrap_or_else(|| {
                tables.push(Launch::RopeTable {
                    positions: *positions,
                    inv_freq: *inv_freq,
                    magnitude: *magnitude,
                    rotary_dim: *rotary_dim,
                    table: tables.len(),
                });
                tables.len() - 1
            }),
            ..rope
        };
        if let Launch::Attention { rope: slot, .. } = &mut launches[ai] {
            *slot = Some(rope);
        }
        folded[qi] = true;
        folded[ki] = true;
    }
    remove_folded(launches, &folded);
    // The tables read only the step's positions: they go first.
    launches.splice(0..0, tables);
}

/// Weight chunks of 16 bytes a lane of the linear kernels loads at once (`KILN_LINEAR_UNROLL` in linear.cu).
pub(crate) const LINEAR_UNROLL: usize = 8;

/// Threads the norm kernels and a linear's fused-norm prologue normalise a row with (`KILN_NORM_THREADS`
/// in norm.cu): their reductions give the same bits only with the same block size.
pub(crate) const NORM_THREADS: usize = 256;

/// Warps that share one output column of a linear over rows of `k` elements of `weight_bytes` each: one
/// round of loads per lane, at most 8. A function of K and the weight dtype only, so every launch computes
/// a column alike.
pub(crate) fn linear_ksplit(k: usize, weight_bytes: usize) -> usize {
    (k * weight_bytes).div_ceil(16).div_ceil(32 * LINEAR_UNROLL).clamp(1, 8)
}

/// Columns a block of a linear launch computes at once: 8 warps' worth, at least one column.
pub(crate) fn linear_columns_per_block(ksplit: usize) -> usize {
    (8 / ksplit).max(1)
}

/// Threads per block of a linear launch: 8 warps, or one column's warps when a column needs more.
pub(crate) fn linear_threads(ksplit: usize) -> usize {
    32 * ksplit * linear_columns_per_block(ksplit)
}

/// Folds an `RmsNorm` launch into the linear launch right after it when that linear is its output's only
/// reader: the linear kernel then normalises its x while staging it (one launch and one round trip of x
/// fewer per norm, two per decoder layer). The row function is the norm kernel's (norm.cu), run with the
/// same block size, so the staged x has the bits the norm kernel would have written, and a step that falls
/// back to the separate norm launch (see [`Launch::Linear::norm`]) computes the same values. The residual
/// sum the norm writes is written by the linear launch instead, which comes right after it.
fn fuse_norm_into_linear(launches: &mut Vec<Launch>, g: &Graph, alias: &[ValueId]) {
    let root = |v: ValueId| alias[v.index()];
    let readers = reader_counts(launches, g.outputs(), alias);
    let mut folded = vec![false; launches.len()];
    for li in 1..launches.len() {
        let (before, rest) = launches.split_at_mut(li);
        let (Launch::RmsNorm { out, h, .. }, Launch::Linear { x, k, parts, norm: slot @ None, .. }) =
            (&before[li - 1], &mut rest[0])
        else {
            continue;
        };
        let weight_bytes = g.value_type(parts[0].w).dtype.size_of().unwrap_or(4);
        let fits = root(*x) == root(*out)
            && h == k
            && readers.get(&root(*out)) == Some(&1)
            && linear_threads(linear_ksplit(*k, weight_bytes)) == NORM_THREADS;
        if fits {
            *slot = Some(Box::new(before[li - 1].clone()));
            folded[li - 1] = true;
        }
    }
    remove_folded(launches, &folded);
}

/// Folds the `Fused` launch of a lone f32 `swiglu(gate, up)` into the linear launch that computes gate and up
/// as its two parts, where the swiglu is their one reader: the launch then writes `silu(gate) * up` alone
/// (one launch and a write and read of both products fewer per decoder layer). The kernel pairs the gate
/// and up columns of each n in one block, so it needs an even number of columns per block. The product is
/// the fused elementwise kernel's expression in f32 on the same f32 values, so the bits do not change.
fn fuse_swiglu_into_linear(launches: &mut Vec<Launch>, g: &Graph, alias: &[ValueId]) {
    let root = |v: ValueId| alias[v.index()];
    let readers = reader_counts(launches, g.outputs(), alias);
    let mut folded = vec![false; launches.len()];
    for fi in 0..launches.len() {
        let Launch::Fused { inputs, out, .. } = &launches[fi] else { continue };
        let Some(node) = g.producer(*out).map(|n| g.node(n)) else { continue };
        let (Op::Swiglu {}, [gate, up]) = (&node.op, &node.inputs[..]) else { continue };
        let (gate, up) = (*gate, *up);
        let all_f32 = [gate, up, *out].iter().all(|&v| g.value_type(v).dtype == DType::F32);
        let read_once = |v: ValueId| readers.get(&root(v)) == Some(&1);
        if inputs[..] != [gate, up] || !all_f32 || !read_once(gate) || !read_once(up) {
            continue;
        }
        let Some(li) = launches[..fi].iter().rposition(
            |l| matches!(l, Launch::Linear { parts, .. } if parts.iter().any(|p| root(p.out) == root(gate))),
        ) else {
            continue;
        };
        let fused = launches[fi].clone();
        let Launch::Linear { parts, k, softcap, logits, swiglu: slot @ None, .. } = &mut launches[li] else {
            continue;
        };
        let weight_bytes = g.value_type(parts[0].w).dtype.size_of().unwrap_or(4);
        let pairs = linear_columns_per_block(linear_ksplit(*k, weight_bytes)).is_multiple_of(2);
        if parts.len() != 2 || parts[0].n != parts[1].n || *softcap != 0.0 || *logits || !pairs {
            continue;
        }
        let outs = (root(parts[0].out), root(parts[1].out));
        if outs == (root(up), root(gate)) {
            parts.swap(0, 1); // the kernel takes part 0 as the gate
        } else if outs != (root(gate), root(up)) {
            continue;
        }
        *slot = Some(Box::new(fused));
        folded[fi] = true;
    }
    remove_folded(launches, &folded);
}

/// A weight or constant as f32 values on the host (for scales and biases, which the kernels read in f32).
fn host_tensor_f32(g: &Graph, weights: &WeightStore, v: ValueId) -> Option<Vec<f32>> {
    let tensor = match &g.node(g.producer(v)?).op {
        Op::Weight { name } => weights.get(name).ok()?.to_tensor(),
        Op::Constant { value } => value.clone(),
        _ => return None,
    };
    tensor.dtype().is_float().then(|| tensor.to_f32_vec())
}

/// For each value, the program positions of the nodes that use it (graph outputs count as the end).
fn users_by_value(g: &Graph, position: &HashMap<NodeId, usize>) -> HashMap<ValueId, Vec<usize>> {
    let mut users: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for &id in g.order() {
        for &v in &g.node(id).inputs {
            users.entry(v).or_default().push(position[&id]);
        }
    }
    for &o in g.outputs() {
        users.entry(o).or_default().push(usize::MAX);
    }
    users
}

/// The single-`add` groups whose sum feeds a norm that can compute it instead (pre-norm residual streams):
/// group index -> the norm node. The sum must have the norm input's shape and dtype on both operands, and
/// nothing may read it before the norm runs.
fn residual_adds(
    g: &Graph,
    groups: &[ElementwiseGroup],
    position: &HashMap<NodeId, usize>,
    users: &HashMap<ValueId, Vec<usize>>,
) -> HashMap<usize, NodeId> {
    let by_output: HashMap<ValueId, usize> = groups.iter().enumerate().map(|(i, grp)| (grp.output, i)).collect();
    let mut absorbed = HashMap::new();
    for &id in g.order() {
        let node = g.node(id);
        if !matches!(node.op, Op::RmsNorm { .. } | Op::LayerNorm { .. }) {
            continue;
        }
        let x = node.inputs[0];
        let Some(&gi) = by_output.get(&x) else { continue };
        let grp = &groups[gi];
        let add = g.node(grp.nodes[0]);
        let fits = grp.nodes.len() == 1
            && add.op == Op::Binary(BinaryOp::Add)
            && grp.inputs.len() == 2
            && add.inputs.iter().all(|&a| g.value_type(a) == g.value_type(x))
            && users.get(&x).is_some_and(|u| u.iter().all(|&p| p >= position[&id]))
            && !absorbed.contains_key(&gi);
        if fits {
            absorbed.insert(gi, id);
        }
    }
    absorbed
}

/// When `x` is the sum of an absorbed residual add, its two operands.
fn absorbed_add(
    g: &Graph,
    groups: &[ElementwiseGroup],
    absorbed: &HashMap<usize, NodeId>,
    x: ValueId,
) -> Option<(ValueId, ValueId)> {
    let gi = absorbed.keys().copied().find(|&gi| groups[gi].output == x)?;
    let add = g.node(groups[gi].nodes[0]);
    Some((add.inputs[0], add.inputs[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers the plan shares with the kernel templates (the kernels size arrays and loops by them, the
    /// plan sizes launches and buffers): a change on one side alone would break a contract no type checks.
    #[test]
    fn the_plan_and_the_kernel_templates_agree_on_their_shared_numbers() {
        let kernels = "../codegen/src/cuda/kernels";
        let read = |file: &str| {
            let path = format!("{}/{kernels}/{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
        };
        for (file, name, value) in [
            ("linear.cu", "KILN_LINEAR_UNROLL", LINEAR_UNROLL),
            ("linear.cu", "KILN_LINEAR_PARTS", LINEAR_PARTS),
            ("linear.cu", "KILN_GEMV_RING_STAGES", super::super::executor::GEMV_RING_STAGES),
            ("norm.cu", "KILN_NORM_THREADS", NORM_THREADS),
            ("attention.cu", "KILN_ATTENTION_FOLD_ROWS", ATTENTION_FOLD_ROWS),
            ("attention.cu", "KILN_ATTENTION_WARPS_D64", attention_split_threads(64) as usize / 32),
            ("attention.cu", "KILN_ATTENTION_WARPS_D128", attention_split_threads(128) as usize / 32),
            ("attention.cu", "KILN_ATTENTION_WARPS_D256", attention_split_threads(256) as usize / 32),
            ("choose.cu", "KILN_SAMPLE_SLICE", super::super::choose::SAMPLE_SLICE),
            ("choose.cu", "KILN_SAMPLE_STATE_BYTES", super::super::choose::SAMPLE_STATE_BYTES),
            ("choose.cu", "KILN_SAMPLE_THREADS", super::super::choose::SAMPLE_THREADS as usize),
            ("choose.cu", "KILN_SAMPLE_FINISH_THREADS", super::super::choose::SAMPLE_FINISH_THREADS as usize),
        ] {
            let define = format!("#define {name} ");
            let source = read(file);
            let line =
                source.lines().find(|l| l.starts_with(&define)).unwrap_or_else(|| panic!("{file} defines no {name}"));
            assert_eq!(line[define.len()..].trim(), value.to_string(), "{name} in {file}");
        }
    }

    fn rope(x: u32, positions: u32, out: u32) -> Launch {
        Launch::Rope {
            kernel: "kiln_rope_xf32".into(),
            x: ValueId(x),
            positions: ValueId(positions),
            inv_freq: Slot(0),
            magnitude: 1.0,
            out: ValueId(out),
            heads: 2,
            head_dim: 8,
            rotary_dim: 8,
            interleaved: false,
        }
    }

    fn attention(q: u32, k: u32, v: u32, positions: u32, out: u32) -> Launch {
        Launch::Attention {
            append: "kiln_kv_append_xf32".into(),
            kernel: "kiln_attention_xf32_d64".into(),
            combine: "kiln_attention_combine_xf32".into(),
            tiled: "kiln_attention_tiled_xf32_d64".into(),
            mma: None,
            split_threads: attention_split_threads(64),
            rope: None,
            q: ValueId(q),
            k: ValueId(k),
            v: ValueId(v),
            positions: ValueId(positions),
            mask: None,
            out: ValueId(out),
            layer: 0,
            heads: 2,
            kv_heads: 2,
            head_dim: 8,
            v_dim: 8,
            scale: 1.0,
            softcap: 0.0,
            causal: true,
            window: 0,
            sinks: 0,
        }
    }

    fn is_table(l: &Launch) -> bool {
        matches!(l, Launch::RopeTable { .. })
    }

    #[test]
    fn rope_folds_into_the_attention_only_over_positions_the_step_does_not_compute() {
        // %0 positions (a step input), %1 q, %2 k, %3 v, %4 and %5 rotated q and k, %6 the attention's
        // output, %7 positions computed inside the step.
        let params = Params { slots: vec![vec![0u8; 32]], f32_copies: HashMap::new() };
        let alias: Vec<ValueId> = (0..8).map(ValueId).collect();
        let outputs = [ValueId(6)];

        let mut launches = vec![rope(1, 0, 4), rope(2, 0, 5), attention(4, 5, 3, 0, 6)];
        fuse_rope_into_append(&mut launches, &outputs, &alias, &params);
        assert_eq!(launches.len(), 2, "{launches:?}");
        assert!(is_table(&launches[0]));
        assert!(matches!(&launches[1], Launch::Attention { rope: Some(r), .. } if r.table == 0));

        // The tables run before every other launch of the step: over positions a launch of the step
        // writes, they would read them before they are computed, so the ropes stay.
        let computed = Launch::Fused { kernel: "kiln_fused_0".into(), inputs: vec![ValueId(0)], out: ValueId(7) };
        let mut launches = vec![computed, rope(1, 7, 4), rope(2, 7, 5), attention(4, 5, 3, 7, 6)];
        fuse_rope_into_append(&mut launches, &outputs, &alias, &params);
        assert_eq!(launches.len(), 4, "{launches:?}");
        assert!(!launches.iter().any(is_table));
        assert!(matches!(&launches[3], Launch::Attention { rope: None, .. }));
    }
}
