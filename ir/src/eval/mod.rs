//! Reference evaluation of the generic tensor ops on dense tensors.
//!
//! Constant folding and the CPU executor both call this, so each op's semantics are written once. It
//! favours clarity over speed: every op is a plain loop over row-major indices.
//!
//! Numeric rules shared by all ops (see [`compute`]): f32 computes in f32; f16 and bf16 compute in f32
//! and round to their storage type; f64 computes in f64; integer ops compute in i64 with wrapping and
//! narrow (wrapping) to the storage type, except u64, which computes in u64 (wrapping too). Every
//! input is validated; bad input is an [`EvalError`], never a panic.

mod activation;
mod compute;
mod creation;
mod elementwise;
mod indexing;
mod matmul;
mod movement;
mod reduce;
mod window;

use crate::{DType, Op, Tensor, TensorData};

/// Why an op could not be evaluated on the given tensors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct EvalError {
    pub op: String,
    pub message: String,
}

impl EvalError {
    pub fn new(op: &Op, message: impl Into<String>) -> EvalError {
        EvalError { op: op.name().to_string(), message: message.into() }
    }
}

/// The most elements one evaluated tensor may hold; a guard against shape tensors that ask for absurd
/// sizes (an allocation failure would abort the process instead of reporting an error).
pub const MAX_ELEMENTS: usize = 1 << 31;

/// Evaluates a generic op (anything but the model-level ops and `weight`) on concrete inputs.
/// Returns `Ok(None)` for ops this module does not evaluate (model-level ops, `weight`).
pub fn eval_generic(op: &Op, inputs: &[&Tensor]) -> Result<Option<Vec<Tensor>>, EvalError> {
    if matches!(
        op,
        Op::Weight { .. }
            | Op::Embedding { .. }
            | Op::RmsNorm { .. }
            | Op::LayerNorm { .. }
            | Op::Linear { .. }
            | Op::Rope { .. }
            | Op::Attention { .. }
            | Op::Logits { .. }
    ) {
        return Ok(None);
    }
    let (min, max) = op.input_arity();
    if inputs.len() < min || inputs.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(EvalError::new(op, format!("expected {expected} inputs, got {}", inputs.len())));
    }
    let cx = Cx { op };
    // Storage-only dtypes reach only the ops that merely move, cast or compare them (one list, shared
    // with type inference), so no op below ever widens them to a compute type.
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype().is_storage_only()
            && let Some(m) = op.storage_only_refusal(i, &t.ty())
        {
            return Err(EvalError { op: op.name().to_string(), message: m });
        }
    }
    let one = |t: Tensor| Ok(Some(vec![t]));
    match op {
        Op::Constant { value } => one(value.clone()),
        Op::Unary(u) => one(elementwise::unary(cx, *u, inputs[0])?),
        Op::Binary(b) => one(elementwise::binary(cx, *b, inputs[0], inputs[1])?),
        Op::Compare(c) => one(elementwise::compare(cx, *c, inputs[0], inputs[1])?),
        Op::Where {} => one(elementwise::where_(cx, inputs[0], inputs[1], inputs[2])?),
        Op::Cast { to, .. } => one(elementwise::cast(cx, inputs[0], *to, op.low_bit_cast())?),
        Op::Reduce { kind, axes, keepdims } => one(reduce::reduce(cx, *kind, axes, *keepdims, inputs[0])?),
        Op::ArgMax { axis, keepdims } => one(reduce::argmax(cx, *axis, *keepdims, inputs[0])?),
        Op::MatMul {} => one(matmul::matmul(cx, inputs[0], inputs[1])?),
        Op::Reshape { allowzero } => one(movement::reshape(cx, inputs[0], inputs[1], *allowzero)?),
        Op::Transpose { perm } => one(movement::transpose(cx, inputs[0], perm)?),
        Op::Squeeze { axes } => one(movement::squeeze(cx, inputs[0], axes)?),
        Op::Unsqueeze { axes } => one(movement::unsqueeze(cx, inputs[0], axes)?),
        Op::Concat { axis } => one(movement::concat(cx, inputs, *axis)?),
        Op::Split { axis, sizes } => Ok(Some(movement::split(cx, inputs[0], *axis, sizes)?)),
        Op::Slice {} => one(movement::slice(cx, inputs)?),
        Op::Gather { axis } => one(movement::gather(cx, inputs[0], inputs[1], *axis)?),
        Op::Expand {} => one(movement::expand(cx, inputs[0], inputs[1])?),
        Op::Tile {} => one(movement::tile(cx, inputs[0], inputs[1])?),
        Op::Trilu { upper } => one(movement::trilu(cx, inputs[0], inputs.get(1).copied(), *upper)?),
        Op::GatherElements { axis } => one(indexing::gather_elements(cx, inputs[0], inputs[1], *axis)?),
        Op::ScatterElements { axis, reduction } => {
            one(indexing::scatter_elements(cx, inputs[0], inputs[1], inputs[2], *axis, *reduction)?)
        }
        Op::GatherNd { batch_dims } => one(indexing::gather_nd(cx, inputs[0], inputs[1], *batch_dims)?),
        Op::ScatterNd { reduction } => one(indexing::scatter_nd(cx, inputs[0], inputs[1], inputs[2], *reduction)?),
        Op::Pad { mode } => one(movement::pad(cx, inputs[0], inputs[1], inputs.get(2).copied(), *mode)?),
        Op::Conv { strides, pads, dilations, group } => {
            one(window::conv(cx, inputs, window::Geometry { strides, pads, dilations }, *group)?)
        }
        Op::Pool { kind, kernel, strides, pads, dilations, ceil_mode, count_include_pad, p } => one(window::pool(
            cx,
            inputs[0],
            kernel,
            window::Geometry { strides, pads, dilations },
            (*kind, *ceil_mode, *count_include_pad, *p),
        )?),
        Op::TopK { axis, largest } => Ok(Some(reduce::topk(cx, inputs[0], inputs[1], *axis, *largest)?)),
        Op::Resize { mode, coord, nearest, cubic_a, exclude_outside, scales, sizes } => {
            one(window::resize(cx, inputs[0], (*mode, *coord, *nearest), (*cubic_a, *exclude_outside), scales, sizes)?)
        }
        Op::Einsum { equation } => one(matmul::einsum(cx, equation, inputs)?),
        Op::Range {} => one(creation::range(cx, inputs[0], inputs[1], inputs[2])?),
        Op::CumSum { axis, exclusive, reverse } => {
            one(creation::cumulative(cx, inputs[0], *axis, (*exclusive, *reverse), false)?)
        }
        Op::CumProd { axis, exclusive, reverse } => {
            one(creation::cumulative(cx, inputs[0], *axis, (*exclusive, *reverse), true)?)
        }
        Op::Shape { start, end } => one(creation::shape(cx, inputs[0], *start, *end)?),
        Op::ConstantOfShape { value, dtype } => one(creation::constant_of_shape(cx, inputs[0], *value, *dtype)?),
        Op::Softmax { axis } => one(activation::softmax(cx, inputs[0], *axis)?),
        Op::Silu {} => one(activation::silu(cx, inputs[0])?),
        Op::Gelu { approximate } => one(activation::gelu(cx, inputs[0], *approximate)?),
        Op::Swiglu {} => one(activation::swiglu(cx, inputs[0], inputs[1])?),
        Op::Weight { .. }
        | Op::Embedding { .. }
        | Op::RmsNorm { .. }
        | Op::LayerNorm { .. }
        | Op::Linear { .. }
        | Op::Rope { .. }
        | Op::Attention { .. }
        | Op::Logits { .. } => unreachable!("model-level ops returned Ok(None) above"),
    }
}

/// The op being evaluated, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    op: &'a Op,
}

impl Cx<'_> {
    pub(crate) fn err(self, message: impl Into<String>) -> EvalError {
        EvalError::new(self.op, message)
    }

    pub(crate) fn name(self) -> &'static str {
        self.op.name()
    }

    /// A tensor from a shape and data the op computed; a mismatch is a bug in the op.
    pub(crate) fn tensor(self, shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor::new(shape, data)
            .unwrap_or_else(|e| panic!("{}: computed data does not fit its shape: {e}", self.name()))
    }

    /// Normalises a possibly negative `axis` of a tensor of rank `rank`.
    pub(crate) fn axis(self, axis: i64, rank: usize) -> Result<usize, EvalError> {
        let r = rank as i64;
        if axis < -r || axis >= r {
            return Err(self.err(format!("axis {axis} is out of range for rank {rank} (valid: {} to {})", -r, r - 1)));
        }
        Ok(if axis < 0 { (axis + r) as usize } else { axis as usize })
    }

    /// Normalises a list of distinct axes of a tensor of rank `rank`, keeping their order.
    pub(crate) fn distinct_axes(self, axes: &[i64], rank: usize) -> Result<Vec<usize>, EvalError> {
        let mut out = Vec::with_capacity(axes.len());
        for &a in axes {
            let n = self.axis(a, rank)?;
            if out.contains(&n) {
                return Err(self.err(format!("axis {a} appears more than once in {axes:?}")));
            }
            out.push(n);
        }
        Ok(out)
    }

    /// The element count of `shape`, refusing overflowing or absurdly large results.
    pub(crate) fn numel(self, shape: &[usize]) -> Result<usize, EvalError> {
        shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| self.err(format!("result shape {shape:?} has more than {MAX_ELEMENTS} elements")))
    }

    /// The values of an integer list input (a shape, starts, repeats, ...): a 1-D i64 or i32 tensor.
    pub(crate) fn int_list(self, t: &Tensor, what: &str) -> Result<Vec<i64>, EvalError> {
        if !matches!(t.dtype(), DType::I64 | DType::I32) {
            return Err(self.err(format!("{what} must be i64 or i32, got {}", t.ty())));
        }
        if t.shape().len() != 1 {
            return Err(self.err(format!("{what} must be 1-D, got {}", t.ty())));
        }
        Ok(t.to_i64_vec())
    }

    /// A shape given as a tensor: an integer list with no negative entries.
    pub(crate) fn shape_list(self, t: &Tensor, what: &str) -> Result<Vec<usize>, EvalError> {
        let dims = self.int_list(t, what)?;
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            return Err(self.err(format!("{what} {dims:?} has negative dim {d}")));
        }
        Ok(dims.into_iter().map(|d| d as usize).collect())
    }

    /// The value of a scalar input: rank 0, or rank 1 with one element (ONNX producers emit both).
    pub(crate) fn scalar_of<'t>(self, t: &'t Tensor, what: &str) -> Result<&'t Tensor, EvalError> {
        if t.len() != 1 || t.shape().len() > 1 {
            return Err(self.err(format!("{what} must be a scalar, got {}", t.ty())));
        }
        Ok(t)
    }
}

/// The numpy broadcast of two shapes, or `None` when they do not broadcast.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each element of `out` (row-major), the flat index of the element of a tensor of shape `input`
/// that broadcasting maps onto it. `input` must broadcast to `out`.
pub(crate) fn broadcast_indices(input: &[usize], out: &[usize]) -> Vec<usize> {
    assert!(input.len() <= out.len(), "broadcast source rank {} exceeds target rank {}", input.len(), out.len());
    let offset = out.len() - input.len();
    let in_strides = crate::tensor::contiguous_strides(input);
    // Broadcast dims get stride 0, so the same source element repeats along them.
    let strides: Vec<usize> =
        (0..out.len()).map(|i| if i < offset || input[i - offset] == 1 { 0 } else { in_strides[i - offset] }).collect();
    strided_indices(out, &strides, 0)
}

/// Flat indices `base + sum(coord[i] * strides[i])` for every coordinate of `shape`, row-major.
pub(crate) fn strided_indices(shape: &[usize], strides: &[usize], base: usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut coord = vec![0usize; shape.len()];
    let mut flat = base;
    for _ in 0..n {
        out.push(flat);
        // Odometer increment: bump the last coordinate, carrying into earlier ones.
        for i in (0..shape.len()).rev() {
            coord[i] += 1;
            flat += strides[i];
            if coord[i] < shape[i] {
                break;
            }
            flat -= strides[i] * shape[i];
            coord[i] = 0;
        }
    }
    out
}

/// Splits `shape` around `axis` into (outer count, axis length, inner count), so element
/// `(o, k, i)` sits at flat index `(o * len + k) * inner + i`.
pub(crate) fn outer_axis_inner(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Flat indices of every combination of per-axis source coordinates, row-major: result element
/// `(c0, c1, ...)` reads source element `sum(coords[a][c_a] * strides[a])`.
pub(crate) fn cartesian_indices(strides: &[usize], coords: &[Vec<usize>]) -> Vec<usize> {
    let shape: Vec<usize> = coords.iter().map(Vec::len).collect();
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut at = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(at.iter().enumerate().map(|(a, &c)| coords[a][c] * strides[a]).sum());
        for a in (0..shape.len()).rev() {
            at[a] += 1;
            if at[a] < shape[a] {
                break;
            }
            at[a] = 0;
        }
    }
    out
}
