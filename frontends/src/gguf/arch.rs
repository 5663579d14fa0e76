//! Architectures as llama.cpp names them, mapped back to Hugging Face terms: GGUF hyperparameters
//! (`<arch>.block_count`, ...) into an HF-style `config.json`, and llama.cpp tensor names
//! (`blk.N.attn_q.weight`, ...) into HF parameter names, with the few value changes llama.cpp's converter
//! made on the way in (Q/K row permutation for `llama`, `1 +` baked into Gemma norms). GPT-2's Conv1D
//! weights, which llama.cpp transposed to `[out, in]`, stay that way: the config says so to the HF builder
//! (`kiln_conv1d_layout = "out_in"`), so quantized ones need no requantization.

use serde_json::{Value, json};

use super::GgufError;
use super::value::{MetaValue, MetadataLookup};

/// A supported architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
    Gpt2,
}

impl Arch {
    pub const SUPPORTED: [Arch; 5] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3, Arch::Gpt2];

    /// The name llama.cpp writes in `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Gpt2 => "gpt2",
        }
    }

    pub fn from_gguf_name(name: &str) -> Result<Arch, GgufError> {
        Arch::SUPPORTED.into_iter().find(|a| a.gguf_name() == name).ok_or_else(|| GgufError::UnknownArchitecture {
            found: name.to_string(),
            supported: Arch::SUPPORTED.map(Arch::gguf_name).join(", "),
        })
    }

    fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Gemma3 => "Gemma3ForCausalLM",
            Arch::Gpt2 => "GPT2LMHeadModel",
        }
    }

    fn hf_model_type(self) -> &'static str {
        match self {
            Arch::Gemma3 => "gemma3_text",
            other => other.gguf_name(),
        }
    }
}

/// The hyperparameters every supported architecture has.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    pub arch: Arch,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub ffn: u64,
    pub context: u64,
}

impl Hparams {
    pub fn read(arch: Arch, md: &impl MetadataLookup) -> Result<Hparams, GgufError> {
        let a = arch.gguf_name();
        let key = |k: &str| format!("{a}.{k}");
        let positive = |k: &str| -> Result<u64, GgufError> {
            let v = md.require_u64(&key(k))?;
            if v == 0 {
                return Err(GgufError::BadValue {
                    key: key(k),
                    value: "0".into(),
                    reason: "it must be positive".into(),
                });
            }
            Ok(v)
        };
        let layers = positive("block_count")?;
        let hidden = positive("embedding_length")?;
        let heads = positive("attention.head_count")?;
        let kv_heads = md.get_u64(&key("attention.head_count_kv"))?.unwrap_or(heads);
        if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(GgufError::BadValue {
                key: key("attention.head_count_kv"),
                value: kv_heads.to_string(),
                reason: format!("it must divide the head count {heads}"),
            });
        }
        let head_dim = match md.get_u64(&key("attention.key_length"))? {
            Some(d) if d > 0 => d,
            Some(_) => {
                return Err(GgufError::BadValue {
                    key: key("attention.key_length"),
                    value: "0".into(),
                    reason: "it must be positive".into(),
                });
            }
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => {
                return Err(GgufError::BadValue {
                    key: key("attention.head_count"),
                    value: heads.to_string(),
                    reason: format!(
                        "it must divide the embedding length {hidden} when `{a}.attention.key_length` is absent"
                    ),
                });
            }
        };
        Ok(Hparams {
            arch,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            ffn: positive("feed_forward_length")?,
            context: positive("context_length")?,
        })
    }
}

/// What the importer must know about the tensors to write the config.
pub struct TensorFacts {
    pub vocab_size: u64,
    pub tied_embeddings: bool,
    pub attention_bias: bool,
}

/// Token ids from the tokenizer metadata that HF configs carry.
#[derive(Clone, Debug, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
}

/// An HF-style `config.json` for the model, with the names and defaults transformers uses.
pub fn hf_config(
    hp: &Hparams,
    md: &impl MetadataLookup,
    facts: &TensorFacts,
    ids: &SpecialIds,
) -> Result<Value, GgufError> {
    let a = hp.arch.gguf_name();
    let key = |k: &str| format!("{a}.{k}");
    let mut c = json!({
        "architectures": [hp.arch.hf_class()],
        "model_type": hp.arch.hf_model_type(),
        "vocab_size": facts.vocab_size,
        "tie_word_embeddings": facts.tied_embeddings,
        "torch_dtype": "float32",
    });
    let obj = c.as_object_mut().expect("built as an object");
    let id = |v: Option<u32>| v.map_or(Value::Null, Value::from);
    obj.insert("bos_token_id".into(), id(ids.bos));
    obj.insert("eos_token_id".into(), id(ids.eos));
    obj.insert("pad_token_id".into(), id(ids.pad));

    if hp.arch == Arch::Gpt2 {
        obj.insert("n_embd".into(), hp.hidden.into());
        obj.insert("n_layer".into(), hp.layers.into());
        obj.insert("n_head".into(), hp.heads.into());
        obj.insert("n_positions".into(), hp.context.into());
        obj.insert("n_ctx".into(), hp.context.into());
        obj.insert("n_inner".into(), hp.ffn.into());
        obj.insert("layer_norm_epsilon".into(), md.require_f64(&key("attention.layer_norm_epsilon"))?.into());
        obj.insert("activation_function".into(), "gelu_new".into());
        obj.insert(crate::hf::CONV1D_LAYOUT_KEY.into(), "out_in".into());
        return Ok(c);
    }

    obj.insert("hidden_size".into(), hp.hidden.into());
    obj.insert("intermediate_size".into(), hp.ffn.into());
    obj.insert("num_hidden_layers".into(), hp.layers.into());
    obj.insert("num_attention_heads".into(), hp.heads.into());
    obj.insert("num_key_value_heads".into(), hp.kv_heads.into());
    obj.insert("head_dim".into(), hp.head_dim.into());
    obj.insert("max_position_embeddings".into(), hp.context.into());
    obj.insert("rms_norm_eps".into(), md.require_f64(&key("attention.layer_norm_rms_epsilon"))?.into());
    let default_theta = if hp.arch == Arch::Gemma3 { 1_000_000.0 } else { 10_000.0 };
    obj.insert("rope_theta".into(), md.get_f64(&key("rope.freq_base"))?.unwrap_or(default_theta).into());
    if let Some(rope_dims) = md.get_u64(&key("rope.dimension_count"))?
        && rope_dims != hp.head_dim
    {
        // Partial rotary embeddings are not part of these architectures' HF configs.
        return Err(GgufError::BadValue {
            key: key("rope.dimension_count"),
            value: rope_dims.to_string(),
            reason: format!("kiln supports rotary embeddings over the whole head ({})", hp.head_dim),
        });
    }
    obj.insert("rope_scaling".into(), rope_scaling(md, &key)?);
    obj.insert("attention_bias".into(), facts.attention_bias.into());
    obj.insert("attention_dropout".into(), 0.0.into());

    match hp.arch {
        Arch::Llama => {
            obj.insert("hidden_act".into(), "silu".into());
            obj.insert("mlp_bias".into(), false.into());
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            obj.insert("hidden_act".into(), "silu".into());
            obj.insert("use_sliding_window".into(), false.into());
            obj.insert("sliding_window".into(), Value::Null);
        }
        Arch::Gemma3 => {
            obj.insert("hidden_activation".into(), "gelu_pytorch_tanh".into());
            let window = md.require_u64(&key("attention.sliding_window"))?;
            obj.insert("sliding_window".into(), window.into());
            // llama.cpp fixes Gemma 3's local layers at rope base 10000 and one global layer in six, unless
            // newer files say otherwise.
            let local_theta = md.get_f64(&key("rope.freq_base_swa"))?.unwrap_or(10_000.0);
            obj.insert("rope_local_base_freq".into(), local_theta.into());
            let pattern_key = key("attention.sliding_window_pattern");
            let layer_types: Vec<&str> = match md.value(&pattern_key) {
                // Newer files list, per layer, whether it uses the sliding window.
                Some(v @ MetaValue::Array { items, .. }) => {
                    if items.len() as u64 != hp.layers {
                        return Err(GgufError::BadValue {
                            key: pattern_key,
                            value: v.describe(),
                            reason: format!("it must have one entry for each of the {} layers", hp.layers),
                        });
                    }
                    items
                        .iter()
                        .map(|i| match i.as_bool() {
                            Some(true) => Ok("sliding_attention"),
                            Some(false) => Ok("full_attention"),
                            None => Err(md.wrong(&pattern_key, "an array of bools", v)),
                        })
                        .collect::<Result<_, _>>()?
                }
                _ => {
                    let pattern = md.get_u64(&pattern_key)?.unwrap_or(6).max(1);
                    obj.insert("sliding_window_pattern".into(), pattern.into());
                    (0..hp.layers)
                        .map(|i| if (i + 1) % pattern == 0 { "full_attention" } else { "sliding_attention" })
                        .collect()
                }
            };
            obj.insert("layer_types".into(), json!(layer_types));
            // llama.cpp scales queries by 1/sqrt(head_dim), except for the 62-layer 27B model whose
            // query_pre_attn_scalar is hidden/heads; transformers reads the scalar from the config.
            let scalar = if hp.layers == 62 { hp.hidden / hp.heads } else { hp.head_dim };
            obj.insert("query_pre_attn_scalar".into(), scalar.into());
            let softcap = |k: &str| md.get_f64(&key(k)).map(|v| v.map_or(Value::Null, Value::from));
            obj.insert("final_logit_softcapping".into(), softcap("final_logit_softcapping")?);
            obj.insert("attn_logit_softcapping".into(), softcap("attn_logit_softcapping")?);
        }
        Arch::Gpt2 => unreachable!("handled above"),
    }
    Ok(c)
}

fn rope_scaling(md: &impl MetadataLookup, key: &dyn Fn(&str) -> String) -> Result<Value, GgufError> {
    let kind = md.get_str(&key("rope.scaling.type"))?;
    match kind {
        None | Some("none") => Ok(Value::Null),
        Some("linear") => {
            let factor = md.require_f64(&key("rope.scaling.factor"))?;
            Ok(json!({"rope_type": "linear", "type": "linear", "factor": factor}))
        }
        Some(other) => Err(GgufError::BadValue {
            key: key("rope.scaling.type"),
            value: format!("{other:?}"),
            reason: "kiln imports GGUF rope scaling `none` and `linear` only".into(),
        }),
    }
}

/// How a tensor's values must change on the way back to HF layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fixup {
    /// Undo llama.cpp's Q/K permutation with this many heads.
    pub unpermute_heads: Option<u64>,
    /// Subtract the 1 llama.cpp added to Gemma norm weights.
    pub subtract_one: bool,
}

/// The HF parameter name of a llama.cpp tensor and the fixup its values need; `None` for names the
/// architecture does not have.
pub fn hf_tensor(hp: &Hparams, gguf_name: &str) -> Result<Option<(String, Fixup)>, GgufError> {
    let arch = hp.arch;
    let none = Fixup::default();
    if arch == Arch::Gpt2 {
        let top = match gguf_name {
            "token_embd.weight" => Some("transformer.wte.weight"),
            "position_embd.weight" => Some("transformer.wpe.weight"),
            "output_norm.weight" => Some("transformer.ln_f.weight"),
            "output_norm.bias" => Some("transformer.ln_f.bias"),
            "output.weight" => Some("lm_head.weight"),
            _ => None,
        };
        if let Some(t) = top {
            return Ok(Some((t.to_string(), none)));
        }
        let Some((layer, rest)) = split_block(gguf_name, hp.layers) else { return Ok(None) };
        let (stem, suffix) = match rest.rsplit_once('.') {
            Some((s, x @ ("weight" | "bias"))) => (s, x),
            _ => return Ok(None),
        };
        let hf = match stem {
            "attn_norm" => "ln_1",
            "attn_qkv" => "attn.c_attn",
            "attn_output" => "attn.c_proj",
            "ffn_norm" => "ln_2",
            "ffn_up" => "mlp.c_fc",
            "ffn_down" => "mlp.c_proj",
            _ => return Ok(None),
        };
        return Ok(Some((format!("transformer.h.{layer}.{hf}.{suffix}"), none)));
    }

    let gemma_norm = |name: &str| Fixup { subtract_one: arch == Arch::Gemma3 && name.ends_with("norm.weight"), ..none };
    let top = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Ok(Some((t.to_string(), gemma_norm(gguf_name))));
    }
    let Some((layer, rest)) = split_block(gguf_name, hp.layers) else { return Ok(None) };
    let (stem, suffix) = match rest.rsplit_once('.') {
        Some((s, x @ ("weight" | "bias"))) => (s, x),
        _ => return Ok(None),
    };
    let gemma = arch == Arch::Gemma3;
    let hf = match stem {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" if matches!(arch, Arch::Qwen3 | Arch::Gemma3) => "self_attn.q_norm",
        "attn_k_norm" if matches!(arch, Arch::Qwen3 | Arch::Gemma3) => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" if gemma => "post_attention_layernorm",
        "post_ffw_norm" if gemma => "post_feedforward_layernorm",
        _ => return Ok(None),
    };
    let mut fix = gemma_norm(gguf_name);
    if arch == Arch::Llama {
        fix.unpermute_heads = match stem {
            "attn_q" => Some(hp.heads),
            "attn_k" => Some(hp.kv_heads),
            _ => None,
        };
    }
    Ok(Some((format!("model.layers.{layer}.{hf}.{suffix}"), fix)))
}

/// `blk.N.rest` with `N` a layer index below `layers`.
fn split_block(name: &str, layers: u64) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, rest) = rest.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = n.parse().ok().filter(|&n| n < layers)?;
    Some((n, rest))
}

/// The source row of each output row when undoing llama.cpp's Q/K permutation.
///
/// llama.cpp's converter views each head's `head_dim` rows as `[2, head_dim/2]` (the two rotary halves,
/// as HF's rotate-half RoPE uses them) and transposes that to `[head_dim/2, 2]` (interleaved pairs, as
/// ggml's RoPE uses them). So HF row `h*hd + i*hd/2 + j` is GGUF row `h*hd + 2*j + i`.
pub fn unpermute_rows(rows: usize, heads: usize) -> Option<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(heads) {
        return None;
    }
    let hd = rows / heads;
    if !hd.is_multiple_of(2) {
        return None;
    }
    let half = hd / 2;
    Some(
        (0..rows)
            .map(|r| {
                let (h, within) = (r / hd, r % hd);
                let (i, j) = (within / half, within % half);
                h * hd + 2 * j + i
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp's permutation, written the way its converter describes it: reshape [heads, 2, hd/2],
        // swap the last two axes. Row r of the result comes from row perm[r] of the input.
        let (heads, hd) = (3usize, 8usize);
        let mut permuted_from = vec![0; heads * hd];
        for h in 0..heads {
            for j in 0..hd / 2 {
                for i in 0..2 {
                    permuted_from[h * hd + j * 2 + i] = h * hd + i * hd / 2 + j;
                }
            }
        }
        let undo = unpermute_rows(heads * hd, heads).unwrap();
        for (hf_row, &gguf_row) in undo.iter().enumerate() {
            assert_eq!(permuted_from[gguf_row], hf_row);
        }
        assert!(unpermute_rows(10, 3).is_none());
        assert!(unpermute_rows(9, 3).is_none());
    }

    #[test]
    fn block_names_need_a_layer_in_range() {
        assert_eq!(split_block("blk.3.attn_q.weight", 4), Some((3, "attn_q.weight")));
        assert_eq!(split_block("blk.4.attn_q.weight", 4), None);
        assert_eq!(split_block("blk.x.attn_q.weight", 4), None);
        assert_eq!(split_block("blk.+1.attn_q.weight", 4), None);
    }
}
