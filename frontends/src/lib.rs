//! kiln-frontends: importers from model files into kiln IR.
//!
//! `.kir` text graphs with safetensors weights ([`kir`]); Hugging Face model directories ([`hf`]), which
//! describe their architecture in a [`decoder::DecoderSpec`] that the shared [`decoder`] builder turns
//! into a graph; GGUF files ([`gguf`]), mapped onto Hugging Face names and configs and built by the same
//! builder, with their tokenizer rebuilt by [`tokenizer`]; ONNX graphs ([`onnx`]) imported op by op into generic IR ops.

pub mod decoder;
pub mod gguf;
pub mod hf;
pub mod kir;
pub mod onnx;
pub mod safetensors_weights;
pub mod tokenizer;

use std::path::PathBuf;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{error}", path.display())]
    Parse { path: PathBuf, src: String, error: kiln_ir::text::ParseError },
    #[error("{}: not a valid safetensors weights file: {message}", path.display())]
    BadWeights { path: PathBuf, message: String },
    /// A JSON file (config, generation config, tokenizer, shard index) that does not parse.
    #[error("{}: not valid JSON: {message}", path.display())]
    BadJson { path: PathBuf, message: String },
    /// A model configuration with a missing or ill-typed field.
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    /// A configuration value kiln does not implement.
    #[error("{file}: unsupported {what} `{value}`; supported: {supported}")]
    Unsupported { file: String, what: String, value: String, supported: String },
    /// The weights do not fit the configuration (missing tensors, wrong shapes or dtypes).
    #[error("{file}: {error}")]
    Decoder { file: String, error: decoder::DecoderError },
    #[error("{}: {error}", path.display())]
    Gguf { path: PathBuf, error: gguf::GgufError },
    #[error("{}: {error}", path.display())]
    Onnx { path: PathBuf, error: onnx::OnnxError },
}
