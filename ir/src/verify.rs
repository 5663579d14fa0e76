//! The verifier: checks every invariant of a graph and reports all violations at once.
//!
//! SKELETON: filled in by the verifier work.

use crate::{Graph, WeightStore};

/// One violated invariant, with the offending op printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The node's text form (or the graph signature for graph-level problems).
    pub op_text: String,
    pub message: String,
}

/// Every problem found in a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}\n  in: {}", e.message, e.op_text)).collect::<Vec<_>>().join("\n"))]
pub struct VerifyErrors {
    pub errors: Vec<VerifyError>,
}

/// Checks `g`; with `weights`, also that every `weight` op names a stored weight of the declared type.
pub fn verify(g: &Graph, weights: Option<&WeightStore>) -> Result<(), VerifyErrors> {
    let _ = (g, weights);
    todo!("verify")
}
