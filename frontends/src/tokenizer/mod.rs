//! Rebuilds a Hugging Face `tokenizers` tokenizer from GGUF's `tokenizer.ggml.*` metadata, so text is
//! tokenized the way transformers tokenizes it for the original model.
//!
//! Two vocabulary kinds exist in GGUF files:
//! - `gpt2`: byte-level BPE. Tokens and merges are stored in their byte-level form (`Ġthe`), so they go
//!   into a BPE model unchanged; the pre-tokenizer is chosen by `tokenizer.ggml.pre` with the regexes
//!   llama.cpp uses for that name, written the way the models' own `tokenizer.json` files write them.
//! - `llama`: SentencePiece BPE. Tokens come with scores and no merges; the merges are derived from the
//!   scores the way transformers' SentencePiece converter derives them (every split of a piece into two
//!   pieces, ranked by the merged piece's score), with `<0xXX>` byte fallback and `▁` for spaces.
//!
//! Control tokens (token type 3) and the unknown token become special added tokens, user-defined ones
//! (type 4) plain added tokens, so they are matched before the model runs, as in transformers.

use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

use crate::gguf::GgufError;
use crate::gguf::arch::SpecialIds;
use crate::gguf::value::MetadataLookup;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_UNKNOWN: i128 = 2;
const TOKEN_CONTROL: i128 = 3;
const TOKEN_USER_DEFINED: i128 = 4;
const TOKEN_BYTE: i128 = 6;

/// A tokenizer rebuilt from GGUF metadata, with the facts about it the model needs.
#[derive(Clone, Debug)]
pub struct GgufTokenizer {
    /// A `tokenizers` JSON document (`Tokenizer::to_string`).
    pub json: String,
    pub ids: SpecialIds,
    /// Generation stops at these: `eos_token_id`, then `eot_token_id` and `eom_token_id` when present.
    pub eos_token_ids: Vec<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

/// Byte-level pre-tokenizer variants, by the names `tokenizer.ggml.pre` uses.
const GPT2_PRE: &[&str] = &["gpt-2", "gpt2", "mpt", "olmo", "jais"];
const DIGITS_PRE: &[&str] = &["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"];
const LLAMA3_PRE: &[&str] = &["llama-bpe", "llama3", "dbrx", "smaug-bpe"];
const QWEN2_PRE: &[&str] = &["qwen2", "stablelm2", "deepseek-r1-qwen"];

// `gpt-2` style names need no regex here: HF's ByteLevel pre-tokenizer with `use_regex` applies GPT-2's.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's fallback for BPE vocabularies with no (or the `default`) pre-tokenizer name.
const DEFAULT_REGEXES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"\p{N}+",
    "[0-9][0-9][0-9]",
];

/// Rebuilds the tokenizer described by `md`; token ids must be below `vocab_size` (the embedding rows).
pub fn tokenizer_from_gguf(md: &impl MetadataLookup, vocab_size: u64) -> Result<GgufTokenizer, GgufError> {
    let model = md.require_str("tokenizer.ggml.model")?;
    let tokens = md
        .get_strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.tokens".into()))?;
    if tokens.is_empty() || tokens.len() as u64 > vocab_size {
        return Err(GgufError::Tokenizer(format!(
            "`tokenizer.ggml.tokens` has {} tokens, but the embedding has {vocab_size} rows",
            tokens.len()
        )));
    }
    let types = token_types(md, tokens.len())?;
    let id_key = |k: &str| -> Result<Option<u32>, GgufError> {
        let key = format!("tokenizer.ggml.{k}");
        match md.get_u32(&key)? {
            Some(id) if id as usize >= tokens.len() => Err(GgufError::BadValue {
                key,
                value: id.to_string(),
                reason: format!("there are only {} tokens", tokens.len()),
            }),
            other => Ok(other),
        }
    };
    let ids =
        SpecialIds { bos: id_key("bos_token_id")?, eos: id_key("eos_token_id")?, pad: id_key("padding_token_id")? };
    let unk = id_key("unknown_token_id")?;
    let mut eos_token_ids: Vec<u32> = Vec::new();
    for id in [ids.eos, id_key("eot_token_id")?, id_key("eom_token_id")?].into_iter().flatten() {
        if !eos_token_ids.contains(&id) {
            eos_token_ids.push(id);
        }
    }
    let spm = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(GgufError::Tokenizer(format!(
                "`tokenizer.ggml.model` is {other:?}; kiln rebuilds `gpt2` (byte-level BPE) and `llama` (SentencePiece) vocabularies"
            )));
        }
    };
    let add_bos = md.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm);
    let add_eos = md.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

    let added_tokens: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|&(id, &t)| {
            t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED || (spm && (t == TOKEN_UNKNOWN || Some(id as u32) == unk))
        })
        .map(|(id, &t)| {
            json!({
                "id": id, "content": tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": t != TOKEN_USER_DEFINED,
            })
        })
        .collect();

    let mut vocab = Map::new();
    for (id, tok) in tokens.iter().enumerate() {
        // A duplicated token string keeps its first id, as a dictionary built in id order would.
        vocab.entry(tok.to_string()).or_insert(Value::from(id));
    }

    let mut doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
    });
    let obj = doc.as_object_mut().expect("built as an object");
    if spm {
        let scores = md
            .get_array("tokenizer.ggml.scores")?
            .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.scores".into()))?;
        if scores.len() != tokens.len() {
            return Err(GgufError::Tokenizer(format!(
                "`tokenizer.ggml.scores` has {} entries for {} tokens",
                scores.len(),
                tokens.len()
            )));
        }
        let scores: Vec<f64> = scores
            .iter()
            .map(|s| s.as_f64().ok_or_else(|| GgufError::Tokenizer("`tokenizer.ggml.scores` must hold numbers".into())))
            .collect::<Result<_, _>>()?;
        let add_space_prefix = md.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let mut normalizers = Vec::new();
        if add_space_prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
        }
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
        obj.insert("normalizer".into(), json!({"type": "Sequence", "normalizers": normalizers}));
        obj.insert("pre_tokenizer".into(), Value::Null);
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_space_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        obj.insert("decoder".into(), json!({"type": "Sequence", "decoders": decoders}));
        let merges = sentencepiece_merges(&tokens, &scores);
        obj.insert(
            "model".into(),
            json!({
                "type": "BPE", "dropout": null,
                "unk_token": unk.map(|u| tokens[u as usize]),
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": types.contains(&TOKEN_BYTE), "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            }),
        );
    } else {
        let pre = md.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let (normalizer, pre_tokenizer) = byte_level_pre_tokenizer(pre)?;
        obj.insert("normalizer".into(), normalizer);
        obj.insert("pre_tokenizer".into(), pre_tokenizer);
        obj.insert(
            "decoder".into(),
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        );
        let merges = md
            .get_strings("tokenizer.ggml.merges")?
            .ok_or_else(|| GgufError::MissingKey("tokenizer.ggml.merges".into()))?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| json!([a, b]))
                    .ok_or_else(|| GgufError::Tokenizer(format!("merge {m:?} is not two tokens separated by a space")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        obj.insert(
            "model".into(),
            json!({
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false,
                // Llama 3's tokenizer looks whole pre-tokens up in the vocabulary before merging.
                "ignore_merges": LLAMA3_PRE.contains(&pre),
                "vocab": vocab, "merges": merges,
            }),
        );
    }
    obj.insert(
        "post_processor".into(),
        post_processor(&tokens, add_bos.then_some(ids.bos).flatten(), add_eos.then_some(ids.eos).flatten()),
    );

    let tokenizer: Tokenizer = doc
        .to_string()
        .parse()
        .map_err(|e| GgufError::Tokenizer(format!("the rebuilt tokenizer does not load: {e}")))?;
    let json = tokenizer
        .to_string(false)
        .map_err(|e| GgufError::Tokenizer(format!("the rebuilt tokenizer does not serialize: {e}")))?;
    let chat_template = md.get_str("tokenizer.chat_template")?.map(str::to_string);
    Ok(GgufTokenizer { json, ids, eos_token_ids, add_bos, chat_template })
}

fn token_types(md: &impl MetadataLookup, n: usize) -> Result<Vec<i128>, GgufError> {
    let Some(types) = md.get_array("tokenizer.ggml.token_type")? else {
        return Ok(vec![1; n]);
    };
    if types.len() != n {
        return Err(GgufError::Tokenizer(format!(
            "`tokenizer.ggml.token_type` has {} entries for {n} tokens",
            types.len()
        )));
    }
    types
        .iter()
        .map(|t| {
            t.as_i128().ok_or_else(|| GgufError::Tokenizer("`tokenizer.ggml.token_type` must hold integers".into()))
        })
        .collect()
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// (normalizer, pre-tokenizer) for a byte-level BPE vocabulary whose `tokenizer.ggml.pre` is `pre`.
fn byte_level_pre_tokenizer(pre: &str) -> Result<(Value, Value), GgufError> {
    let seq = |v: Vec<Value>| json!({"type": "Sequence", "pretokenizers": v});
    Ok(if GPT2_PRE.contains(&pre) {
        (Value::Null, byte_level(true))
    } else if DIGITS_PRE.contains(&pre) {
        (Value::Null, seq(vec![json!({"type": "Digits", "individual_digits": true}), byte_level(true)]))
    } else if LLAMA3_PRE.contains(&pre) {
        (Value::Null, seq(vec![split(LLAMA3_REGEX), byte_level(false)]))
    } else if QWEN2_PRE.contains(&pre) {
        (json!({"type": "NFC"}), seq(vec![split(QWEN2_REGEX), byte_level(false)]))
    } else if pre == "default" {
        let mut v: Vec<Value> = DEFAULT_REGEXES.iter().map(|r| split(r)).collect();
        v.push(byte_level(false));
        (Value::Null, seq(v))
    } else {
        let known: Vec<&str> = [GPT2_PRE, DIGITS_PRE, LLAMA3_PRE, QWEN2_PRE, &["default"]].concat();
        return Err(GgufError::Tokenizer(format!(
            "`tokenizer.ggml.pre` is {pre:?}, a pre-tokenizer kiln does not know (known: {})",
            known.join(", ")
        )));
    })
}

fn post_processor(tokens: &[&str], bos: Option<u32>, eos: Option<u32>) -> Value {
    if bos.is_none() && eos.is_none() {
        return Value::Null;
    }
    let piece = |id: u32| json!({"SpecialToken": {"id": tokens[id as usize], "type_id": 0}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Map::new();
    for (seq, out) in [("A", &mut single), ("B", &mut pair)] {
        if let Some(b) = bos {
            out.push(piece(b));
        }
        out.push(json!({"Sequence": {"id": seq, "type_id": 0}}));
        if let Some(e) = eos {
            out.push(piece(e));
        }
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    for id in [bos, eos].into_iter().flatten() {
        let t = tokens[id as usize];
        specials.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// Merges for a SentencePiece BPE vocabulary: every way to split a piece into two pieces of the vocabulary,
/// ordered by the merged piece's score (highest first), ties by the merged piece's id, then by the ids of
/// the two halves, which is the order transformers' SentencePiece converter produces.
fn sentencepiece_merges(tokens: &[&str], scores: &[f64]) -> Vec<Value> {
    let mut ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        ids.entry(t).or_insert(i);
    }
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (merged, piece) in tokens.iter().enumerate() {
        if ids.get(piece) != Some(&merged) {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                merges.push((scores[merged], merged, li, ri));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    merges.into_iter().map(|(_, _, l, r)| json!([tokens[l], tokens[r]])).collect()
}
