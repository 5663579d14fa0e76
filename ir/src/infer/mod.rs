//! Type inference: the result types of an op from its input types (and, for shape-carrying inputs
//! such as `reshape`'s target shape, from constant input values when they are known).
//!
//! Every rule checks its inputs' dtypes, ranks, dims and the op's attributes, and explains a mismatch
//! in a message that starts with the op name. Dims follow [`dims`]: static sizes, symbols (equal when
//! named alike) and `?` (compatible with anything). When a shape depends on an input's *value* that is
//! not a known constant, the affected dims become `?` but the rank stays exact when it is known.
//!
//! `weight` is the one op whose result type cannot be inferred: it is the type of the stored tensor it
//! names. [`infer_types`] therefore refuses it with an explanation; a `weight` node is built with
//! [`Graph::add_node`] and its declared type, which the verifier checks against a [`WeightStore`], and
//! [`weight_type`] reads that type from a store. A `constant`'s type is its tensor's type.

mod dims;
pub(crate) mod einsum;
mod generic;
mod indexing;
mod model;
mod shape_ops;
mod window;

pub(crate) use window::output_dims as window_output_dims;

pub use dims::{
    DimProduct, broadcast_dim, broadcast_shapes, dims_compatible, merge_dims, normalize_axes, normalize_axis,
    shapes_compatible,
};

use crate::{DType, Graph, Op, Tensor, TensorType, ValueId, WeightStore};

/// Why an op cannot be applied to its inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InferError {
    pub message: String,
}

impl InferError {
    pub fn new(message: impl Into<String>) -> InferError {
        InferError { message: message.into() }
    }
}

/// The inputs of one op application, with names for error messages.
pub(crate) struct Args<'a> {
    types: &'a [&'a TensorType],
    consts: &'a [Option<&'a Tensor>],
}

impl<'a> Args<'a> {
    pub(crate) fn len(&self) -> usize {
        self.types.len()
    }

    pub(crate) fn ty(&self, i: usize) -> &'a TensorType {
        self.types[i]
    }

    /// The input's value when it is a known constant.
    pub(crate) fn value(&self, i: usize) -> Option<&'a Tensor> {
        self.consts.get(i).copied().flatten()
    }

    pub(crate) fn opt_ty(&self, i: usize) -> Option<&'a TensorType> {
        self.types.get(i).copied()
    }
}

/// Checks that `ty` is a float tensor; `what` names the input in the message.
pub(crate) fn want_float(what: &str, ty: &TensorType) -> Result<(), String> {
    if ty.dtype.is_float() { Ok(()) } else { Err(format!("{what} must be a float tensor, but it is {ty}")) }
}

/// Checks that `ty` holds integers (any width, signed or not).
pub(crate) fn want_int(what: &str, ty: &TensorType) -> Result<(), String> {
    if ty.dtype.is_int() { Ok(()) } else { Err(format!("{what} must be an integer tensor, but it is {ty}")) }
}

/// Checks that `ty` holds numbers (float or integer), not bools.
pub(crate) fn want_numeric(what: &str, ty: &TensorType) -> Result<(), String> {
    if ty.dtype.is_float() || ty.dtype.is_int() {
        Ok(())
    } else {
        Err(format!("{what} must be a numeric (float or integer) tensor, but it is {ty}"))
    }
}

pub(crate) fn want_bool(what: &str, ty: &TensorType) -> Result<(), String> {
    if ty.dtype == DType::Bool { Ok(()) } else { Err(format!("{what} must be a bool tensor, but it is {ty}")) }
}

pub(crate) fn want_rank(what: &str, ty: &TensorType, rank: usize, layout: &str) -> Result<(), String> {
    if ty.rank() == rank { Ok(()) } else { Err(format!("{what} must be {layout} (rank {rank}), but it is {ty}")) }
}

pub(crate) fn want_min_rank(what: &str, ty: &TensorType, rank: usize) -> Result<(), String> {
    if ty.rank() >= rank { Ok(()) } else { Err(format!("{what} must have rank {rank} or more, but it is {ty}")) }
}

/// Whether input `i` of `op` may be quantized: only the weights of `embedding`, `linear` and `logits`.
fn may_be_quantized(op: &Op, i: usize) -> bool {
    matches!((op, i), (Op::Embedding {}, 0) | (Op::Linear {}, 1) | (Op::Logits { .. }, 1))
}

pub(crate) fn arity_message(op: &Op, given: usize) -> Option<String> {
    let (min, max) = op.input_arity();
    if (min..=max).contains(&given) {
        return None;
    }
    let plural = |n: usize| if n == 1 { "input" } else { "inputs" };
    let wanted = if min == max {
        format!("{min} {}", plural(min))
    } else if max == usize::MAX {
        format!("at least {min} {}", plural(min))
    } else {
        format!("{min} to {max} inputs")
    };
    Some(format!("{} takes {wanted} but was given {given}", op.name()))
}

/// Result types of `op` applied to inputs of `input_types`; `const_inputs[i]` is the value of input i
/// when it is a constant (used for shapes, axes and the like). Missing entries count as unknown.
///
/// `weight` is refused (its type is the stored tensor's, see the module docs); `constant` gives its
/// tensor's type.
pub fn infer_types(
    op: &Op,
    input_types: &[&TensorType],
    const_inputs: &[Option<&Tensor>],
) -> Result<Vec<TensorType>, InferError> {
    if let Some(m) = arity_message(op, input_types.len()) {
        return Err(InferError::new(m));
    }
    let fail = |m: String| InferError::new(format!("{}: {m}", op.name()));
    for (i, ty) in input_types.iter().enumerate() {
        if ty.dtype.is_quantized() && !may_be_quantized(op, i) {
            return Err(fail(format!(
                "input {i} has quantized type {ty}; quantized values may only be the weight of linear, \
                 embedding or logits"
            )));
        }
        if let Some(m) = op.storage_only_refusal(i, ty) {
            return Err(InferError::new(m));
        }
    }
    let args = Args { types: input_types, consts: const_inputs };
    let one = |r: Result<TensorType, String>| r.map(|t| vec![t]);
    let result = match op {
        Op::Weight { name } => Err(format!(
            "the type of weight `{name}` is the stored tensor's type and cannot be inferred from inputs; \
             give it explicitly (Graph::add_node) or read it with infer::weight_type"
        )),
        Op::Constant { value } => Ok(vec![value.ty()]),
        Op::Embedding {} => one(model::embedding(&args)),
        Op::RmsNorm { eps, offset } => one(model::rms_norm(*eps, *offset, &args)),
        Op::LayerNorm { axis, eps } => one(model::layer_norm(*axis, *eps, &args)),
        Op::Linear {} => one(model::linear(&args)),
        Op::Rope { style: _, theta, rotary_dim, scaling } => one(model::rope(*theta, *rotary_dim, scaling, &args)),
        Op::Attention { layer, scale, causal: _, window, sinks: _, softcap } => {
            one(model::attention(*layer, *scale, *window, *softcap, &args))
        }
        Op::Silu {} | Op::Gelu { .. } => one(want_float("x", args.ty(0)).map(|()| args.ty(0).clone())),
        Op::Swiglu {} => one(model::swiglu(&args)),
        Op::Softmax { axis } => one(model::softmax(*axis, &args)),
        Op::Logits { softcap } => one(model::logits(*softcap, &args)),
        Op::MatMul {} => one(generic::matmul(&args)),
        Op::Where {} => one(generic::where_(&args)),
        Op::Cast { to, .. } => one(generic::cast(*to, &args)),
        Op::ArgMax { axis, keepdims } => one(generic::argmax(*axis, *keepdims, &args)),
        Op::Reshape { allowzero } => one(shape_ops::reshape(*allowzero, &args)),
        Op::Transpose { perm } => one(generic::transpose(perm, &args)),
        Op::Squeeze { axes } => one(generic::squeeze(axes, &args)),
        Op::Unsqueeze { axes } => one(generic::unsqueeze(axes, &args)),
        Op::Concat { axis } => one(generic::concat(*axis, &args)),
        Op::Split { axis, sizes } => generic::split(*axis, sizes, &args),
        Op::Slice {} => one(shape_ops::slice(&args)),
        Op::Gather { axis } => one(generic::gather(*axis, &args)),
        Op::Expand {} => one(shape_ops::expand(&args)),
        Op::Range {} => one(shape_ops::range(&args)),
        Op::CumSum { axis, .. } | Op::CumProd { axis, .. } => one(generic::cumsum(*axis, &args)),
        Op::Shape { start, end } => one(shape_ops::shape(*start, *end, &args)),
        Op::ConstantOfShape { value, dtype } => one(shape_ops::constant_of_shape(*value, *dtype, &args)),
        Op::Tile {} => one(shape_ops::tile(&args)),
        Op::Trilu { .. } => one(shape_ops::trilu(&args)),
        Op::GatherElements { axis } => one(indexing::gather_elements(*axis, &args)),
        Op::ScatterElements { axis, .. } => one(indexing::scatter_elements(*axis, &args)),
        Op::GatherNd { batch_dims } => one(indexing::gather_nd(*batch_dims, &args)),
        Op::ScatterNd { .. } => one(indexing::scatter_nd(&args)),
        Op::Pad { .. } => one(shape_ops::pad(&args)),
        Op::TopK { axis, .. } => shape_ops::topk(*axis, &args),
        Op::Einsum { equation } => one(einsum::infer(equation, &args)),
        Op::Resize { scales, sizes, .. } => one(window::resize(scales, sizes, &args)),
        Op::Conv { strides, pads, dilations, group } => one(window::conv(strides, pads, dilations, *group, &args)),
        Op::Pool { kind: _, kernel, strides, pads, dilations, ceil_mode, count_include_pad: _, p: _ } => {
            one(window::pool(kernel, strides, pads, dilations, *ceil_mode, &args))
        }
        Op::Unary(u) => one(generic::unary(*u, &args)),
        Op::Binary(b) => one(generic::binary(*b, &args)),
        Op::Compare(c) => one(generic::compare(*c, &args)),
        Op::Reduce { axes, keepdims, .. } => one(generic::reduce(axes, *keepdims, &args)),
    };
    result.map_err(fail)
}

/// [`infer_types`] for a node of `g` whose inputs are `inputs`.
pub fn infer_node(g: &Graph, op: &Op, inputs: &[ValueId]) -> Result<Vec<TensorType>, InferError> {
    for &v in inputs {
        if !g.contains_value(v) {
            return Err(InferError::new(format!("operand {v} does not exist")));
        }
    }
    let types: Vec<&TensorType> = inputs.iter().map(|&v| g.value_type(v)).collect();
    let consts: Vec<Option<&Tensor>> = inputs.iter().map(|&v| g.constant_value(v)).collect();
    infer_types(op, &types, &consts)
}

/// The result type of a `weight` op naming `name`: the stored tensor's type.
pub fn weight_type(store: &WeightStore, name: &str) -> Result<TensorType, InferError> {
    store.get(name).map(|w| w.ty.clone()).map_err(|e| InferError::new(format!("weight: {e}")))
}
