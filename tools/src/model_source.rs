//! Which frontend reads a model path, and the default model a fresh clone runs.

use std::path::{Path, PathBuf};

use kiln_ir::{Graph, WeightStore};

/// Why the driver could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Frontend(#[from] kiln_frontends::FrontendError),
    #[error("{}: kiln cannot import this kind of model yet; supported inputs are `.kir` graphs (with weights in a `.safetensors` file of the same name)", path.display())]
    UnsupportedInput { path: PathBuf },
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
}

/// A graph and the weights it names, as a frontend produced them.
pub struct LoadedModel {
    pub path: PathBuf,
    pub graph: Graph,
    pub weights: WeightStore,
}

/// The model `kiln run` uses when none is given: the example that ships in the repository.
pub fn default_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-llama.kir")
}

/// Imports `path` with the frontend its extension names; `weights` overrides the weights file.
pub fn load_model(path: &Path, weights: Option<&Path>) -> Result<LoadedModel, DriverError> {
    if !path.exists() {
        return Err(DriverError::NotFound { path: path.to_path_buf() });
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("kir") => {
            let (graph, weights) = kiln_frontends::kir::load_kir_model(path, weights)?;
            Ok(LoadedModel { path: path.to_path_buf(), graph, weights })
        }
        _ => Err(DriverError::UnsupportedInput { path: path.to_path_buf() }),
    }
}
