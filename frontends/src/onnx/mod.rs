//! The ONNX importer: a `ModelProto` (parsed with `prost` from the official onnx 1.23.2 schema) to a
//! kiln [`Model`] of generic IR ops.
//!
//! One file per concern: [`proto`] (generated messages), [`dtype`] (element types), [`tensor_data`]
//! (initializers, typed fields and external data), [`graph_import`] (scopes, topological order, graph
//! inputs with symbolic dims, constant folding of shape arithmetic), `ops/` (the per-op import table
//! with opset-versioned semantics), [`control_flow`] (`If`) and [`loop_unroll`] (`Loop`, unrolled when
//! the graph is imported).
//!
//! Some ONNX ops take as *inputs* what kiln ops carry as attributes (`axes`, split sizes, pads, ...).
//! Those inputs must be known when the graph is imported: constants, initializers, or values folded
//! from them; so must a `Loop`'s trip count and condition, which decide how often its body is
//! unrolled. [`ImportOptions::input_values`] may supply graph-input values for this purpose (the
//! conformance runner does so, since the node suite feeds such values as graph inputs); the import is
//! then specialised to them and [`OnnxImport::specialized_inputs`] lists which ones were used.

mod cache_interface;
mod control_flow;
pub mod dtype;
mod error;
mod graph_import;
mod loop_unroll;
mod ops;
pub mod proto;
pub mod tensor_data;

use std::collections::HashMap;
use std::path::Path;

use kiln_ir::{Model, Tensor};
use prost::Message;

pub use error::OnnxError;

use crate::FrontendError;

/// Options of an import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Values of graph inputs, by name, that the importer may use where an op needs a value at import
    /// time (see the module docs). Inputs not needed that way stay run-time inputs.
    pub input_values: HashMap<String, Tensor>,
}

/// The result of an import, with the ONNX names of the graph's inputs and outputs.
#[derive(Debug, Clone)]
pub struct OnnxImport {
    pub model: Model,
    /// The ONNX name of each IR graph input, in order.
    pub input_names: Vec<String>,
    /// The ONNX name of each IR graph output, in order.
    pub output_names: Vec<String>,
    /// Graph inputs whose values from [`ImportOptions::input_values`] the import was specialised to.
    pub specialized_inputs: Vec<String>,
    /// `Some(layers)` when the model had the ONNX Runtime / Optimum cache interface (`past_key_values.*`
    /// inputs, `present.*` outputs), which the import bound to kiln's own KV cache (see
    /// `cache_interface`): those inputs and outputs are not in the IR graph.
    pub cache_interface_layers: Option<usize>,
}

/// Imports the ONNX model at `path` (external data files are read from its directory).
pub fn load_onnx(path: &Path) -> Result<Model, FrontendError> {
    load_onnx_with(path, &ImportOptions::default()).map(|i| i.model)
}

/// [`load_onnx`] with options, returning the input and output names too.
pub fn load_onnx_with(path: &Path, options: &ImportOptions) -> Result<OnnxImport, FrontendError> {
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io { path: path.to_path_buf(), source })?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    import_bytes(&bytes, dir, &path.display().to_string(), options)
        .map_err(|error| FrontendError::Onnx { path: path.to_path_buf(), error })
}

/// Imports a serialized `ModelProto`; `model_dir` is where external data lives (`None`: refused).
pub fn import_bytes(
    bytes: &[u8],
    model_dir: Option<&Path>,
    source: &str,
    options: &ImportOptions,
) -> Result<OnnxImport, OnnxError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode { message: e.to_string() })?;
    graph_import::import_model(&model, model_dir, source, options)
}

/// Decodes a serialized `TensorProto` (the node suite's `input_N.pb` / `output_N.pb` files).
pub fn read_tensor_proto(bytes: &[u8]) -> Result<(String, Tensor), OnnxError> {
    let tp = proto::TensorProto::decode(bytes).map_err(|e| OnnxError::Decode { message: e.to_string() })?;
    let raw = tensor_data::decode_tensor(&tp, None)?;
    Ok((raw.name.clone(), raw.to_tensor()))
}
