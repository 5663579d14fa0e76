//! Reading the files of a Hugging Face model directory: JSON documents, the (possibly sharded)
//! safetensors weights, and the tokenizer and chat template.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kiln_ir::{ModelMeta, WeightStore};
use serde::Deserialize;
use serde_json::Value;

use crate::FrontendError;
use crate::safetensors_weights::load_safetensors_into;

fn read_text(path: &Path) -> Result<String, FrontendError> {
    std::fs::read_to_string(path).map_err(|source| FrontendError::Io { path: path.to_path_buf(), source })
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, FrontendError> {
    serde_json::from_str(text).map_err(|e| FrontendError::BadJson { path: path.to_path_buf(), message: e.to_string() })
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Result<Value, FrontendError> {
    parse_json(path, &read_text(path)?)
}

/// The weights of a directory and the file that errors about them should name.
pub struct LoadedWeights {
    pub store: WeightStore,
    pub label: String,
}

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Memory-maps `model.safetensors`, or every shard listed in `model.safetensors.index.json`.
pub fn load_weights(dir: &Path) -> Result<LoadedWeights, FrontendError> {
    let single = dir.join("model.safetensors");
    let index_path = dir.join("model.safetensors.index.json");
    let mut store = WeightStore::new();
    if single.exists() {
        load_safetensors_into(&single, &mut store)?;
        return Ok(LoadedWeights { store, label: single.display().to_string() });
    }
    if !index_path.exists() {
        return Err(FrontendError::Config {
            file: dir.display().to_string(),
            message: "no weights: neither model.safetensors nor model.safetensors.index.json is in the directory"
                .into(),
        });
    }
    let index: ShardIndex = parse_json(&index_path, &read_text(&index_path)?)?;
    let shards: BTreeSet<&str> = index.weight_map.values().map(String::as_str).collect();
    for shard in shards {
        // Shard names are file names beside the index; anything else would read outside the directory.
        if shard.contains(['/', '\\']) || shard == ".." {
            return Err(FrontendError::BadJson {
                path: index_path.clone(),
                message: format!("shard `{shard}` is not a file name in the model directory"),
            });
        }
        load_safetensors_into(&dir.join(shard), &mut store)?;
    }
    let absent: Vec<String> = index.weight_map.keys().filter(|n| !store.contains(n)).cloned().collect();
    if !absent.is_empty() {
        return Err(FrontendError::Decoder {
            file: index_path.display().to_string(),
            error: crate::decoder::DecoderError::MissingTensors(absent),
        });
    }
    Ok(LoadedWeights { store, label: index_path.display().to_string() })
}

/// Fills the tokenizer JSON and the chat template of `meta` from the files present in `dir`.
pub fn read_tokenizer_files(dir: &Path, meta: &mut ModelMeta) -> Result<(), FrontendError> {
    let tokenizer = dir.join("tokenizer.json");
    if tokenizer.exists() {
        let text = read_text(&tokenizer)?;
        // Checked here so that a broken tokenizer is reported at import, naming its file.
        parse_json::<Value>(&tokenizer, &text)?;
        meta.tokenizer_json = Some(text);
    }
    // transformers prefers a chat_template.jinja file over the template inside tokenizer_config.json.
    let jinja = dir.join("chat_template.jinja");
    let tokenizer_config = dir.join("tokenizer_config.json");
    if jinja.exists() {
        meta.chat_template = Some(read_text(&jinja)?);
    } else if tokenizer_config.exists() {
        let value = read_json(&tokenizer_config)?;
        meta.chat_template = match value.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(t.clone()),
            // A list of named templates: the one named "default", else the first.
            Some(Value::Array(list)) => {
                let named = |want: Option<&str>| {
                    list.iter().find(|t| want.is_none_or(|w| t.get("name").and_then(Value::as_str) == Some(w)))
                };
                named(Some("default"))
                    .or_else(|| named(None))
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }
            Some(other) => {
                return Err(FrontendError::BadJson {
                    path: tokenizer_config,
                    message: format!("`chat_template` must be a string or a list of named templates, not {other}"),
                });
            }
        };
    }
    Ok(())
}
