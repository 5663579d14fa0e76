//! kiln-frontends: importers from model files into kiln IR.
//!
//! Now: `.kir` text graphs with safetensors weights, and GGUF files ([`gguf`], with their tokenizer rebuilt
//! by [`tokenizer`]). The Hugging Face and ONNX importers land beside these modules.

pub mod gguf;
pub mod kir;
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
    #[error("{}: {error}", path.display())]
    Gguf { path: PathBuf, error: gguf::GgufError },
}
