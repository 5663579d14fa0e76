//! Why an ONNX model could not be imported.

/// An ONNX-specific import failure. Unsupported features are their own variants, so that callers (the
/// conformance runner) can tell "kiln does not do this yet" from "this model is broken".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    #[error(
        "not an ONNX model: the bytes do not decode as an ONNX ModelProto protobuf ({message}); check that the \
         file is a complete `.onnx` export"
    )]
    Decode { message: String },
    #[error("the model has no graph")]
    NoGraph,
    #[error(
        "node `{node}`: operator `{op}` (domain `{domain}`, opset {opset}) is not supported by kiln's ONNX importer"
    )]
    UnsupportedOp { node: String, op: String, domain: String, opset: i64 },
    #[error("node `{node}`: operator `{op}` (opset {opset}): {what} is not supported")]
    UnsupportedFeature { node: String, op: String, opset: i64, what: String },
    #[error(
        "{what}: ONNX element type {dtype} is not supported; kiln supports float, float16, bfloat16, double, int8, \
         int16, int32, int64, uint8, uint16, uint32, uint64, bool, string, the float8 types (e4m3fn, e4m3fnuz, \
         e5m2, e5m2fnuz, e8m0), float4e2m1, int4, uint4, int2 and uint2"
    )]
    UnsupportedDType { what: String, dtype: String },
    #[error("{what}: {kind} values are not supported; kiln imports tensors only")]
    UnsupportedType { what: String, kind: String },
    #[error(
        "node `{node}` ({op}) reads `{input}`, which no node produces and which is neither a graph input nor an \
         initializer; the graph is incomplete"
    )]
    UnknownInput { node: String, op: String, input: String },
    #[error("the graph has a cycle through the nodes {nodes:?}; an ONNX graph must be acyclic")]
    Cycle { nodes: Vec<String> },
    #[error("graph output `{name}` is not produced by any node, graph input or initializer")]
    UnknownOutput { name: String },
    #[error("tensor `{name}`: {message}")]
    BadTensor { name: String, message: String },
    #[error("tensor `{name}`: external data: {message}")]
    ExternalData { name: String, message: String },
    #[error("node `{node}` ({op}, opset {opset}): {message}")]
    BadNode { node: String, op: String, opset: i64, message: String },
    #[error("{message}")]
    BadModel { message: String },
}

impl OnnxError {
    /// Whether the error says kiln lacks a feature (rather than the model being invalid).
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            OnnxError::UnsupportedOp { .. }
                | OnnxError::UnsupportedFeature { .. }
                | OnnxError::UnsupportedDType { .. }
                | OnnxError::UnsupportedType { .. }
        )
    }
}
