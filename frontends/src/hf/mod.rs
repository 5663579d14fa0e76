//! The Hugging Face frontend: a model directory (`config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, tokenizer and generation files) into a [`kiln_ir::Model`].
//!
//! [`load_hf_dir`] reads the files; [`build_model`] turns a config and a weight store keyed by Hugging
//! Face tensor names into the decoder graph, and is shared with the GGUF frontend (which maps its tensors
//! to Hugging Face names and builds an equivalent config). Weights stay memory-mapped in their stored
//! dtype; the only copy is GPT-2's Conv1D transposition (see [`conv1d`]).

mod architectures;
mod config;
mod conv1d;
mod files;

use std::path::Path;

use kiln_ir::{Model, ModelMeta, Op, WeightStore};
use serde_json::Value;

pub use architectures::SUPPORTED_ARCHITECTURES;
pub use conv1d::CONV1D_LAYOUT_KEY;

use crate::FrontendError;
use crate::decoder::{DecoderError, build_decoder};
use config::Config;

/// Imports the Hugging Face model directory at `dir`.
pub fn load_hf_dir(dir: &Path) -> Result<Model, FrontendError> {
    let config_path = dir.join("config.json");
    let config = files::read_json(&config_path)?;
    let weights = files::load_weights(dir)?;
    let mut meta = ModelMeta { source: dir.display().to_string(), ..ModelMeta::default() };
    files::read_tokenizer_files(dir, &mut meta)?;
    let labels = Labels { config: config_path.display().to_string(), weights: weights.label };
    let generation_path = dir.join("generation_config.json");
    let generation = if generation_path.exists() { Some(files::read_json(&generation_path)?) } else { None };
    let generation_label = generation_path.display().to_string();
    build(&config, weights.store, meta, &labels, generation.as_ref().map(|g| (g, generation_label.as_str())))
}

/// Builds the model of `config` (a Hugging Face `config.json`) over `weights` keyed by Hugging Face
/// tensor names (`model.layers.0.self_attn.q_proj.weight`, ...), of any float or quantized dtype.
///
/// `meta` is completed: architecture, config JSON, vocabulary size, context length, and the bos/eos ids
/// from the config when `meta` has none. Errors name `meta.source` as the file. GPT-2's Conv1D weights
/// are expected in Hugging Face's `[in, out]` layout unless the config sets [`CONV1D_LAYOUT_KEY`] to
/// `"out_in"` (what GGUF stores; quantized Conv1D weights must come that way).
pub fn build_model(config: &Value, weights: WeightStore, meta: ModelMeta) -> Result<Model, FrontendError> {
    let labels = Labels { config: meta.source.clone(), weights: meta.source.clone() };
    build(config, weights, meta, &labels, None)
}

/// The file names errors about the config and about the weights refer to.
struct Labels {
    config: String,
    weights: String,
}

fn build(
    config: &Value,
    weights: WeightStore,
    mut meta: ModelMeta,
    labels: &Labels,
    generation: Option<(&Value, &str)>,
) -> Result<Model, FrontendError> {
    let cfg = Config::new(config, &labels.config)?;
    let family = architectures::family(&cfg)?;
    let spec = architectures::decoder_spec(&cfg, family)?;
    let weights = conv1d::normalize_gpt2_weights(&cfg, family, weights, &labels.weights)?;
    let graph = build_decoder(&spec, &weights).map_err(|error| match error {
        // An inconsistent spec comes from the config, not from the weights.
        DecoderError::BadSpec(message) => FrontendError::Config { file: labels.config.clone(), message },
        error => FrontendError::Decoder { file: labels.weights.clone(), error },
    })?;
    let weights = keep_used_weights(&graph, weights);

    meta.architecture = family.name().to_string();
    if meta.config_json.is_none() {
        meta.config_json = Some(config.to_string());
    }
    meta.vocab_size = spec.vocab;
    if meta.max_position.is_none() {
        meta.max_position = architectures::max_position(&cfg)?;
    }
    // generation_config.json decides the special tokens; config.json is the fallback.
    let generation = generation.map(|(g, file)| Config::new(g, file)).transpose()?;
    if meta.eos_token_ids.is_empty() {
        meta.eos_token_ids = match generation.as_ref().map(|g| g.token_ids("eos_token_id")).transpose()? {
            Some(ids) if !ids.is_empty() => ids,
            _ => cfg.token_ids("eos_token_id")?,
        };
    }
    if meta.bos_token_id.is_none() {
        meta.bos_token_id = match generation.as_ref().map(|g| g.token_ids("bos_token_id")).transpose()? {
            Some(ids) if !ids.is_empty() => ids.first().copied(),
            _ => cfg.token_ids("bos_token_id")?.first().copied(),
        };
    }
    Ok(Model { graph, weights, meta })
}

/// The store restricted to the weights the graph names, so an artifact never carries unused tensors
/// (a tied checkpoint's duplicate head, rotary buffers, attention-mask buffers).
fn keep_used_weights(graph: &kiln_ir::Graph, weights: WeightStore) -> WeightStore {
    let mut used = WeightStore::new();
    for (_, node) in graph.nodes() {
        if let Op::Weight { name } = &node.op
            && !used.contains(name)
        {
            let w = weights.get(name).expect("the builder checked every weight it names");
            used.insert(name.clone(), w.ty.clone(), w.payload.clone()).expect("a stored weight is valid");
        }
    }
    used
}
