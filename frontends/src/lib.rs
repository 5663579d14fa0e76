//! kiln-frontends: importers from model files into kiln IR.
//!
//! Now: `.kir` text graphs with safetensors weights. The Hugging Face, GGUF and ONNX importers land with
//! the model-import and ONNX issues, beside these modules.

pub mod kir;
pub mod safetensors_weights;

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
}
