//! Type inference: the result types of an op from its input types (and, for shape-carrying inputs
//! such as `reshape`'s target shape, from constant input values when they are known).
//!
//! SKELETON: filled in by the verifier work.

use crate::{Graph, Op, Tensor, TensorType, ValueId};

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

/// Result types of `op` applied to inputs of `input_types`; `const_inputs[i]` is the value of input i
/// when it is a constant (used for shapes, axes and the like).
pub fn infer_types(
    op: &Op,
    input_types: &[&TensorType],
    const_inputs: &[Option<&Tensor>],
) -> Result<Vec<TensorType>, InferError> {
    let _ = (op, input_types, const_inputs);
    todo!("infer_types")
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
