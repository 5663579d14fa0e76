//! Which frontend reads a model path, and the default model a fresh clone runs.
//!
//! A model is one of: a `.kir` graph (weights in the `.safetensors` file of the same name), a Hugging
//! Face directory (one with a `config.json`), a `.gguf` file, a `.onnx` graph, or a compiled `.kiln` artifact. A `.kir` graph carries no tokenizer, so
//! files of the same stem beside it supply what a frontend would read from the model itself:
//! `NAME.tokenizer.json` (a `tokenizers` document), `NAME.chat_template.jinja`, and
//! `NAME.generation_config.json` (`bos_token_id`, `eos_token_id` as in Hugging Face's file).

use std::path::{Path, PathBuf};

use kiln_ir::{DType, Dim, Model, ModelMeta};

/// What the driver accepts, for messages.
const SUPPORTED_INPUTS: &str = "a `.kir` graph (weights in the `.safetensors` file of the same name), a Hugging Face \
     model directory (with config.json, model.safetensors and tokenizer.json), a `.gguf` file, a `.onnx` graph, or a `.kiln` artifact";

/// Why the driver could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Frontend(#[from] kiln_frontends::FrontendError),
    /// The CUDA kernels of a graph could not be generated or compiled.
    #[error("CUDA kernels: {0}")]
    Codegen(#[from] kiln_codegen::cuda::CodegenError),
    #[error("{}: {reason}; kiln reads {SUPPORTED_INPUTS}", path.display())]
    UnsupportedInput { path: PathBuf, reason: String },
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
    /// `--weights` names the weights of a `.kir` graph; other models carry their own.
    #[error("{}: a separate weights file only goes with a `.kir` graph; this model carries its own weights", path.display())]
    WeightsWithoutKir { path: PathBuf },
    /// A file beside a `.kir` graph (tokenizer, chat template, generation config) is unreadable or invalid.
    #[error("{}: {message}", path.display())]
    Sidecar { path: PathBuf, message: String },
    #[error(transparent)]
    Artifact(#[from] kiln_runtime::ArtifactError),
    #[error(transparent)]
    Write(#[from] crate::artifact_writer::WriteError),
    /// An unknown pipeline or pass name, or a pass that failed.
    #[error("{0}")]
    Pipeline(String),
    #[error("{}: this is already a compiled artifact; compile the model it came from (`kiln compile MODEL -o OUT.kiln`)", path.display())]
    AlreadyCompiled { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Target(#[from] kiln_ir::artifact::UnknownTarget),
}

/// The kinds of model input, told apart by [`model_kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// A `.kir` text graph.
    Kir,
    /// A Hugging Face directory (`config.json`, safetensors, tokenizer files).
    HuggingFace,
    /// A GGUF file.
    Gguf,
    /// A compiled `.kiln` artifact.
    Artifact,
    /// An ONNX graph (external data files beside it).
    Onnx,
}

/// The model `kiln run` uses when none is given: the example that ships in the repository.
pub fn default_model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default")
}

/// Which frontend reads `path`.
pub fn model_kind(path: &Path) -> Result<ModelKind, DriverError> {
    if !path.exists() {
        return Err(DriverError::NotFound { path: path.to_path_buf() });
    }
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelKind::HuggingFace);
        }
        return Err(DriverError::UnsupportedInput {
            path: path.to_path_buf(),
            reason: "this directory has no config.json".to_string(),
        });
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("kir") => Ok(ModelKind::Kir),
        Some("gguf") => Ok(ModelKind::Gguf),
        Some("kiln") => Ok(ModelKind::Artifact),
        Some("onnx") => Ok(ModelKind::Onnx),
        _ => Err(DriverError::UnsupportedInput {
            path: path.to_path_buf(),
            reason: "not a model kiln knows by its name".to_string(),
        }),
    }
}

/// Imports `path` with the frontend for its kind; `weights` overrides the weights file of a `.kir` graph.
/// An artifact is loaded (validated, weights memory-mapped) and returned as the compiled graph it holds.
pub fn load_model(path: &Path, weights: Option<&Path>) -> Result<Model, DriverError> {
    let kind = model_kind(path)?;
    if weights.is_some() && kind != ModelKind::Kir {
        return Err(DriverError::WeightsWithoutKir { path: path.to_path_buf() });
    }
    match kind {
        ModelKind::Kir => load_kir(path, weights),
        ModelKind::HuggingFace => Ok(kiln_frontends::hf::load_hf_dir(path)?),
        ModelKind::Gguf => Ok(kiln_frontends::gguf::load_gguf(path)?),
        ModelKind::Artifact => Ok(kiln_runtime::Artifact::load(path)?.to_ir_model()),
        ModelKind::Onnx => Ok(kiln_frontends::onnx::load_onnx(path)?),
    }
}

/// A `.kir` graph with its weights, and the tokenizer, chat template and generation config of the same
/// stem if they are there.
fn load_kir(path: &Path, weights: Option<&Path>) -> Result<Model, DriverError> {
    let (graph, weights) = kiln_frontends::kir::load_kir_model(path, weights)?;
    let mut meta = ModelMeta { source: path.display().to_string(), ..ModelMeta::default() };
    // The vocabulary is the last dim of the logits (output 0), when it is static.
    if let Some(&logits) = graph.outputs().first() {
        let ty = graph.value_type(logits);
        if ty.dtype == DType::F32
            && let Some(Dim::Static(vocab)) = ty.shape.dims().last()
        {
            meta.vocab_size = *vocab;
        }
    }
    meta.tokenizer_json = read_sidecar(&sidecar(path, "tokenizer.json"))?;
    meta.chat_template = read_sidecar(&sidecar(path, "chat_template.jinja"))?;
    let generation_config = sidecar(path, "generation_config.json");
    if let Some(text) = read_sidecar(&generation_config)? {
        let (bos, eos) = parse_generation_config(&text)
            .map_err(|message| DriverError::Sidecar { path: generation_config.clone(), message })?;
        meta.bos_token_id = bos;
        meta.eos_token_ids = eos;
    }
    Ok(Model { graph, weights, meta })
}

/// `dir/NAME.kir` → `dir/NAME.<suffix>`.
pub(crate) fn sidecar(kir: &Path, suffix: &str) -> PathBuf {
    let stem = kir.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    kir.with_file_name(format!("{stem}.{suffix}"))
}

fn read_sidecar(path: &Path) -> Result<Option<String>, DriverError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DriverError::Sidecar { path: path.to_path_buf(), message: format!("cannot read it: {e}") }),
    }
}

/// `bos_token_id` and `eos_token_id` (a number or a list of numbers) of a Hugging Face generation config.
fn parse_generation_config(text: &str) -> Result<(Option<u32>, Vec<u32>), String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let token_id = |field: &str, v: &serde_json::Value| {
        v.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("`{field}` must be a token id (a non-negative integer), not {v}"))
    };
    let bos = match json.get("bos_token_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(token_id("bos_token_id", v)?),
    };
    let eos = match json.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(ids)) => {
            ids.iter().map(|v| token_id("eos_token_id", v)).collect::<Result<Vec<_>, _>>()?
        }
        Some(v) => vec![token_id("eos_token_id", v)?],
    };
    Ok((bos, eos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_config_eos_is_a_number_or_a_list() {
        assert_eq!(parse_generation_config(r#"{"bos_token_id": 1, "eos_token_id": 2}"#), Ok((Some(1), vec![2])));
        assert_eq!(parse_generation_config(r#"{"eos_token_id": [7, 9]}"#), Ok((None, vec![7, 9])));
        assert_eq!(parse_generation_config(r#"{"eos_token_id": null}"#), Ok((None, vec![])));
        let err = parse_generation_config(r#"{"eos_token_id": -1}"#).unwrap_err();
        assert!(err.contains("eos_token_id"), "{err}");
        let err = parse_generation_config("{").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn kinds_by_name_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let err = model_kind(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no config.json") && err.contains(".gguf") && err.contains(".kir"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert_eq!(model_kind(dir.path()).unwrap(), ModelKind::HuggingFace);
        let gguf = dir.path().join("m.GGUF");
        std::fs::write(&gguf, "").unwrap();
        assert_eq!(model_kind(&gguf).unwrap(), ModelKind::Gguf);
        let onnx = dir.path().join("m.onnx");
        std::fs::write(&onnx, "").unwrap();
        assert_eq!(model_kind(&onnx).unwrap(), ModelKind::Onnx);
        let other = dir.path().join("m.bin");
        std::fs::write(&other, "").unwrap();
        let err = model_kind(&other).unwrap_err().to_string();
        assert!(err.contains("Hugging Face model directory"), "{err}");
        assert!(matches!(model_kind(&dir.path().join("missing.kir")), Err(DriverError::NotFound { .. })));
    }
}
