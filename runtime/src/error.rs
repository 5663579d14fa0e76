//! The runtime's error type: everything that can go wrong when building an executor, running a graph,
//! managing the KV cache or generating tokens, each case with the facts needed to fix it.

use kiln_ir::{DType, TensorType};

/// An error of the CPU executor or the decoding loop.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    /// The graph breaks a structural invariant the executor relies on.
    #[error("invalid graph `{graph}`: {message}")]
    InvalidGraph { graph: String, message: String },

    /// The verifier rejected the graph.
    #[error("graph `{graph}` failed verification:\n{errors}")]
    Verify { graph: String, errors: kiln_ir::VerifyErrors },

    /// A `weight` op names a weight the store does not have, or declares a type other than the stored one.
    #[error("weight `{name}`: {message}")]
    Weight { name: String, message: String },

    #[error("the graph takes {expected} inputs but {actual} were given")]
    InputCount { expected: usize, actual: usize },

    #[error("input {index} must have dtype {expected} (declared {declared}) but has dtype {actual}")]
    InputDType { index: usize, expected: DType, actual: DType, declared: TensorType },

    #[error("input {index} must have rank {expected} (declared {declared}) but has shape {actual:?}")]
    InputRank { index: usize, expected: usize, actual: Vec<usize>, declared: TensorType },

    #[error("input {index}: dim {axis} must be {expected} (declared {declared}) but is {actual}")]
    InputDim { index: usize, axis: usize, expected: u64, actual: usize, declared: TensorType },

    /// A symbolic dim took two different sizes in one run.
    #[error("symbolic dim `{symbol}` is {bound} (bound by {bound_by}) but {where_} has it as {actual}")]
    SymbolConflict { symbol: String, bound: usize, bound_by: String, where_: String, actual: usize },

    /// A node produced a result whose type is not the type the graph declares for it.
    #[error("{node}: result {index} was computed as {actual_dtype}{actual_shape:?} but is declared {declared}")]
    ResultType { node: String, index: usize, actual_dtype: DType, actual_shape: Vec<usize>, declared: TensorType },

    /// A model-level op could not be applied to its operands (bad shapes, ids out of range, ...).
    #[error("{node}: {message}")]
    Op { node: String, message: String },

    /// A generic op failed in the reference evaluator.
    #[error("{node}: {source}")]
    Eval { node: String, source: kiln_ir::eval::EvalError },

    /// An op this executor does not evaluate.
    #[error("{node}: the CPU executor does not evaluate op `{op}`")]
    UnsupportedOp { node: String, op: String },

    /// A KV-cache request that does not fit the cache's state.
    #[error("KV cache: {message}")]
    KvCache { message: String },

    /// The CUDA executor could not start or run (no driver or GPU, no kernels for this GPU, a failed launch).
    #[error("CUDA: {message}")]
    Cuda { message: String },

    /// The graph does not follow the decoder-graph contract of [`crate::decoding`].
    #[error("not a decoder graph: {message}")]
    DecoderContract { message: String },

    /// An invalid generation request (empty prompt, bad sampling parameters, ...).
    #[error("invalid generation request: {message}")]
    Generate { message: String },
}
