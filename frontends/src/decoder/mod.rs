//! A builder of decoder-only transformer graphs: from a [`DecoderSpec`] (sizes, norm and attention
//! variants, per-layer window and rope) and a weight store keyed by the spec's weight names, to a verified
//! kiln graph that follows the decoder-graph contract of [`kiln_ir::model`], tree-mask input included.
//!
//! Frontends (Hugging Face, GGUF) translate their configuration into a spec; the spec is the single
//! place where architecture differences are spelled out, so the graph is emitted by one code path.

mod build;
mod names;
mod spec;

pub use build::build_decoder;
pub use names::{LayerWeightNames, WeightNames};
pub use spec::{Activation, DecoderSpec, LayerSpec, MlpKind, NormKind, PositionKind};

/// Why a decoder graph could not be built from a spec and a weight store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecoderError {
    /// Tensors the spec needs that the store does not hold (every one of them).
    #[error("missing tensors: {}", .0.join(", "))]
    MissingTensors(Vec<String>),
    /// A tensor whose shape is not the one the configuration implies.
    #[error("tensor `{name}` has shape {actual} but the config implies {expected}")]
    TensorShape { name: String, expected: String, actual: String },
    /// A tensor whose dtype cannot serve its role (a quantized norm weight, an integer matrix, ...).
    #[error("tensor `{name}` has dtype {dtype}, but as {role} it must be {allowed}")]
    TensorDType { name: String, dtype: String, role: &'static str, allowed: &'static str },
    /// The spec itself is inconsistent (heads not a multiple of kv heads, zero sizes, ...).
    #[error("invalid decoder configuration: {0}")]
    BadSpec(String),
    /// Type inference refused a node: the spec and the weights disagree in a way the checks above missed.
    #[error("building the decoder graph failed at `{op}`: {message}")]
    Infer { op: String, message: String },
    /// The finished graph does not verify (a bug in the builder, reported rather than panicking).
    #[error("the decoder graph does not verify:\n{0}")]
    Verify(kiln_ir::VerifyErrors),
}
