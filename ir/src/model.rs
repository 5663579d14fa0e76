//! A whole imported model: the decoder graph, its weights, and what the runtime needs beyond them
//! (tokenizer, special tokens, chat template). Frontends produce it; the artifact stores it.
//!
//! The decoder-graph contract every frontend follows: inputs `ids: i64[1, seq]`,
//! `positions: i64[1, seq]` and `tree_mask: bool[seq, seq]`; output 0 is `logits: f32[1, seq, vocab]`.
//! Attention ops carry `layer` indices, so the executor owns one KV cache per layer, and every attention
//! op takes the tree mask as its fifth operand (`tree_mask[i][j]`: token i of the step sees new token j;
//! see `Op::Attention`). Plain steps pass the causal mask; speculative decoding passes a token tree's
//! ancestry, with each node at position root + depth, to verify the whole tree in one step.
//!
//! The mask input is optional for hand-written graphs (`.kir` files): a graph with only ids and positions
//! runs plain decoding and speculation with single chains (causal attention is a chain's mask), and the
//! runtime refuses token trees for it with a message saying so.

use crate::{Graph, WeightStore};

/// Facts about a model that are not part of its computation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelMeta {
    /// The architecture as the frontend named it: `llama`, `mistral`, `qwen2`, `qwen3`, `gemma3`, `gpt2`.
    pub architecture: String,
    /// Where it was imported from (a path, for messages and `kiln inspect`).
    pub source: String,
    /// The source configuration as JSON (a Hugging Face `config.json`, or the equivalent built from GGUF).
    pub config_json: Option<String>,
    /// A Hugging Face `tokenizers` JSON document.
    pub tokenizer_json: Option<String>,
    /// A Jinja chat template (tokenizer_config.json, chat_template.jinja or GGUF metadata).
    pub chat_template: Option<String>,
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<u32>,
    /// The longest context the model was trained for.
    pub max_position: Option<u64>,
    pub vocab_size: u64,
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    pub weights: WeightStore,
    pub meta: ModelMeta,
}
