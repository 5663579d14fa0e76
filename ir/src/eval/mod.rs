//! Reference evaluation of the generic tensor ops on dense tensors.
//!
//! Constant folding and the CPU executor both call this, so each op's semantics are written once.
//!
//! SKELETON: filled in by the evaluation work.

use crate::{Op, Tensor};

/// Why an op could not be evaluated on the given tensors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct EvalError {
    pub op: String,
    pub message: String,
}

/// Evaluates a generic op (anything but the model-level ops and `weight`) on concrete inputs.
/// Returns `Ok(None)` for ops this module does not evaluate (model-level ops, `weight`).
pub fn eval_generic(op: &Op, inputs: &[&Tensor]) -> Result<Option<Vec<Tensor>>, EvalError> {
    let _ = (op, inputs);
    todo!("eval_generic")
}
