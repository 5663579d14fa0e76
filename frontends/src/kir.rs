//! Models written directly in kiln's text form: a `.kir` graph, with its weights in a safetensors file
//! of the same name beside it.

use std::path::Path;

use kiln_ir::{Graph, WeightStore};

use crate::FrontendError;
use crate::safetensors_weights::{load_safetensors, weights_beside};

/// A `.kir` file's source text and parsed graph (not yet verified: callers verify with the weights).
pub fn parse_kir_file(path: &Path) -> Result<(String, Graph), FrontendError> {
    let src = std::fs::read_to_string(path).map_err(|e| FrontendError::Io { path: path.to_path_buf(), source: e })?;
    let graph = kiln_ir::text::parse(&src).map_err(|error| FrontendError::Parse {
        path: path.to_path_buf(),
        src: src.clone(),
        error,
    })?;
    Ok((src, graph))
}

/// Loads `path` and its weights: `weights` when given, else `<path>.safetensors` when it exists, else an
/// empty store (a graph without `weight` ops needs none).
pub fn load_kir_model(path: &Path, weights: Option<&Path>) -> Result<(Graph, WeightStore), FrontendError> {
    let (_, graph) = parse_kir_file(path)?;
    let beside = weights_beside(path);
    let store = match weights {
        Some(w) => load_safetensors(w)?,
        None if beside.exists() => load_safetensors(&beside)?,
        None => WeightStore::new(),
    };
    Ok((graph, store))
}
