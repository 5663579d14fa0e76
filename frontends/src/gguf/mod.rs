//! GGUF import: llama.cpp's model files (llama, qwen2, qwen3, gemma3, gpt2) into a kiln [`Model`].
//!
//! The file is memory-mapped and parsed by [`reader`]; hyperparameters become an HF-style config and
//! tensor names become HF names ([`arch`]); tensors become kiln weights ([`import`], [`blocks`]); the
//! tokenizer is rebuilt from `tokenizer.ggml.*` ([`crate::tokenizer`]). The decoder graph is then built
//! by the Hugging Face frontend from that config and those weights, so both paths share one graph builder.

pub mod arch;
pub mod blocks;
pub mod error;
pub mod ggml_type;
pub mod import;
pub mod reader;
pub mod value;

use std::path::Path;

use kiln_ir::{Model, ModelMeta, WeightStore};

pub use arch::Arch;
pub use error::GgufError;
pub use ggml_type::GgmlType;
pub use reader::{GgufFile, TensorInfo};
pub use value::{MetaValue, MetadataLookup, ValueType};

use crate::FrontendError;
use crate::tokenizer::tokenizer_from_gguf;

/// Everything a GGUF file gives, before the graph is built.
#[derive(Debug)]
pub struct GgufImport {
    /// HF-style `config.json` contents.
    pub config: serde_json::Value,
    /// Weights under their Hugging Face names.
    pub weights: WeightStore,
    pub meta: ModelMeta,
}

/// Reads a GGUF file and imports it as a kiln [`Model`]: the decoder graph is built by
/// [`crate::hf::build_model`] from the HF-style config and HF-named weights [`import_gguf`] produces.
pub fn load_gguf(path: &Path) -> Result<Model, FrontendError> {
    let GgufImport { config, weights, meta } = import_gguf(path)?;
    crate::hf::build_model(&config, weights, meta)
}

/// Reads a GGUF file into an HF-style config, HF-named weights and model metadata.
pub fn import_gguf(path: &Path) -> Result<GgufImport, FrontendError> {
    let file = GgufFile::open(path)?;
    import_parsed(&file, path).map_err(|error| FrontendError::Gguf { path: path.to_path_buf(), error })
}

/// [`import_gguf`] for an already parsed file; `path` is recorded as the model's source.
pub fn import_parsed(file: &GgufFile, path: &Path) -> Result<GgufImport, GgufError> {
    let arch = Arch::from_gguf_name(file.require_str("general.architecture")?)?;
    let hp = arch::Hparams::read(arch, file)?;

    let embed = file.tensor("token_embd.weight").ok_or_else(|| GgufError::MissingTensor("token_embd.weight".into()))?;
    let embed_shape = embed.shape();
    if embed_shape.len() != 2 || embed_shape[1] != hp.hidden {
        return Err(GgufError::TensorShape {
            name: embed.name.clone(),
            found: embed_shape,
            expected: vec![file.get_u64(&format!("{}.vocab_size", arch.gguf_name()))?.unwrap_or(0), hp.hidden],
        });
    }
    let vocab_size = embed_shape[0];
    check_attention_shapes(file, &hp)?;

    let tok = tokenizer_from_gguf(file, vocab_size)?;

    let mut weights = WeightStore::new();
    let mut attention_bias = false;
    for info in file.tensors() {
        let (hf_name, fix) = arch::hf_tensor(&hp, &info.name)?
            .ok_or_else(|| GgufError::UnknownTensor { name: info.name.clone(), arch: arch.gguf_name().into() })?;
        attention_bias |= info.name.ends_with(".attn_q.bias") || info.name.ends_with(".attn_qkv.bias");
        let (ty, payload) = import::import_tensor(file, info, fix)?;
        weights
            .insert(hf_name, ty, payload)
            .map_err(|e| GgufError::Weight { name: info.name.clone(), message: e.to_string() })?;
    }
    let facts =
        arch::TensorFacts { vocab_size, tied_embeddings: file.tensor("output.weight").is_none(), attention_bias };
    let config = arch::hf_config(&hp, file, &facts, &tok.ids)?;

    let meta = ModelMeta {
        architecture: arch.gguf_name().to_string(),
        source: path.display().to_string(),
        config_json: Some(serde_json::to_string_pretty(&config).expect("a JSON value serializes")),
        tokenizer_json: Some(tok.json),
        chat_template: tok.chat_template,
        bos_token_id: tok.ids.bos,
        eos_token_ids: tok.eos_token_ids,
        max_position: Some(hp.context),
        vocab_size,
    };
    Ok(GgufImport { config, weights, meta })
}

/// Q and K projections must have `heads * head_dim` rows for the head structure (and, for `llama`,
/// undoing the row permutation) to mean anything.
fn check_attention_shapes(file: &GgufFile, hp: &arch::Hparams) -> Result<(), GgufError> {
    if hp.arch == Arch::Gpt2 {
        return Ok(());
    }
    for layer in 0..hp.layers {
        for (stem, heads) in [("attn_q", hp.heads), ("attn_k", hp.kv_heads), ("attn_v", hp.kv_heads)] {
            let name = format!("blk.{layer}.{stem}.weight");
            let info = file.tensor(&name).ok_or_else(|| GgufError::MissingTensor(name.clone()))?;
            let expected = vec![heads * hp.head_dim, hp.hidden];
            if info.shape() != expected {
                return Err(GgufError::TensorShape { name, found: info.shape(), expected });
            }
        }
    }
    Ok(())
}
