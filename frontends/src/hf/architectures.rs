//! From a Hugging Face config to a [`DecoderSpec`]: one function per architecture family, each reading
//! the fields transformers reads, with transformers' defaults for the optional ones.

use kiln_ir::{GeluApprox, RopeScaling, RopeStyle};

use super::config::Config;
use crate::FrontendError;
use crate::decoder::{Activation, DecoderSpec, LayerSpec, MlpKind, NormKind, PositionKind, WeightNames};

/// The architectures (`config.json` `architectures[0]`) this frontend imports.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma3ForCausalLM",
    "GPT2LMHeadModel",
];

/// The rope scalings (`rope_type`) this frontend imports.
const SUPPORTED_ROPE_TYPES: &str = "default, linear, llama3, yarn";

/// Architecture families, named as [`kiln_ir::ModelMeta::architecture`] names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
    Gpt2,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma3 => "gemma3",
            Family::Gpt2 => "gpt2",
        }
    }
}

/// The architecture named by `architectures[0]`, or by `model_type` when that list is absent.
pub fn family(cfg: &Config) -> Result<Family, FrontendError> {
    let arch = match cfg.get("architectures") {
        Some(serde_json::Value::Array(list)) if !list.is_empty() => list[0]
            .as_str()
            .ok_or_else(|| cfg.error(format!("field `architectures` must list strings, but it is {}", list[0])))?
            .to_string(),
        Some(v) => return Err(cfg.error(format!("field `architectures` must be a non-empty list, but it is {v}"))),
        None => match cfg.opt_str("model_type")? {
            Some(t) => match t {
                "llama" => "LlamaForCausalLM",
                "mistral" => "MistralForCausalLM",
                "qwen2" => "Qwen2ForCausalLM",
                "qwen3" => "Qwen3ForCausalLM",
                "gemma3_text" => "Gemma3ForCausalLM",
                "gpt2" => "GPT2LMHeadModel",
                other => other,
            }
            .to_string(),
            None => return Err(cfg.error("missing field `architectures` (or `model_type`)".into())),
        },
    };
    Ok(match arch.as_str() {
        "LlamaForCausalLM" => Family::Llama,
        "MistralForCausalLM" => Family::Mistral,
        "Qwen2ForCausalLM" => Family::Qwen2,
        "Qwen3ForCausalLM" => Family::Qwen3,
        "Gemma3ForCausalLM" => Family::Gemma3,
        "GPT2LMHeadModel" => Family::Gpt2,
        _ => {
            return Err(FrontendError::Unsupported {
                file: cfg.file.into(),
                what: "architecture".into(),
                value: arch,
                supported: SUPPORTED_ARCHITECTURES.join(", "),
            });
        }
    })
}

fn unsupported(cfg: &Config, what: &str, value: &str, supported: &str) -> FrontendError {
    FrontendError::Unsupported {
        file: cfg.file.into(),
        what: what.into(),
        value: value.into(),
        supported: supported.into(),
    }
}

fn activation(cfg: &Config, key: &str, default: &str) -> Result<Activation, FrontendError> {
    let name = cfg.opt_str(key)?.unwrap_or(default);
    Ok(match name {
        "silu" | "swish" => Activation::Silu,
        // transformers' `gelu_new` and `gelu_pytorch_tanh` are both the tanh approximation.
        "gelu_new" | "gelu_pytorch_tanh" => Activation::Gelu(GeluApprox::Tanh),
        "gelu" => Activation::Gelu(GeluApprox::None),
        other => {
            return Err(unsupported(
                cfg,
                &format!("activation (`{key}`)"),
                other,
                "silu, gelu, gelu_new, gelu_pytorch_tanh",
            ));
        }
    })
}

/// Whether each layer uses sliding-window attention.
fn sliding_layers(cfg: &Config, family: Family, layers: usize) -> Result<Vec<bool>, FrontendError> {
    if let Some(types) = cfg.get("layer_types") {
        let list =
            types.as_array().ok_or_else(|| cfg.error(format!("field `layer_types` must be a list, not {types}")))?;
        if list.len() != layers {
            return Err(cfg.error(format!(
                "field `layer_types` lists {} layers but `num_hidden_layers` is {layers}",
                list.len()
            )));
        }
        return list
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(false),
                Some("sliding_attention") => Ok(true),
                _ => Err(unsupported(cfg, "layer type", &t.to_string(), "full_attention, sliding_attention")),
            })
            .collect();
    }
    let window = cfg.opt_u64("sliding_window")?;
    Ok(match family {
        Family::Gemma3 => {
            let pattern = match cfg.opt_u64("sliding_window_pattern")? {
                Some(p) => p,
                None => cfg.opt_u64("_sliding_window_pattern")?.unwrap_or(6),
            };
            if pattern == 0 {
                return Err(cfg.error("field `sliding_window_pattern` must be positive".into()));
            }
            (0..layers).map(|i| !(i as u64 + 1).is_multiple_of(pattern)).collect()
        }
        Family::Mistral => vec![window.is_some(); layers],
        Family::Qwen2 | Family::Qwen3 => {
            let on = cfg.bool_or("use_sliding_window", false)? && window.is_some();
            let from = cfg.opt_u64("max_window_layers")?.unwrap_or(28);
            (0..layers).map(|i| on && i as u64 >= from).collect()
        }
        Family::Llama | Family::Gpt2 => vec![false; layers],
    })
}

/// A rope scaling object (v4 `rope_scaling`, or one v5 `rope_parameters` entry).
fn rope_scaling(cfg: &Config, params: Option<&Config>) -> Result<RopeScaling, FrontendError> {
    let Some(p) = params else { return Ok(RopeScaling::None) };
    let kind = match p.opt_str("rope_type")? {
        Some(t) => t,
        None => p.opt_str("type")?.unwrap_or("default"),
    };
    let factor = || p.opt_f64("factor")?.ok_or_else(|| p.error(format!("rope scaling `{kind}` needs field `factor`")));
    let original = || -> Result<u64, FrontendError> {
        match p.opt_u64("original_max_position_embeddings")? {
            Some(v) => Ok(v),
            None => cfg.u64("max_position_embeddings"),
        }
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: p.f64_or("low_freq_factor", 1.0)?,
            high_freq_factor: p.f64_or("high_freq_factor", 4.0)?,
            original_max_position: p.u64("original_max_position_embeddings")?,
        },
        "yarn" => {
            let factor = factor()?;
            // transformers' `get_mscale`: 0.1 * mscale * ln(factor) + 1 for factor > 1.
            let mscale = |scale: f64| if factor <= 1.0 { 1.0 } else { 0.1 * scale * factor.ln() + 1.0 };
            let attention_factor = match p.opt_f64("attention_factor")? {
                Some(a) => a,
                None => match (p.opt_f64("mscale")?, p.opt_f64("mscale_all_dim")?) {
                    (Some(m), Some(all)) => mscale(m) / mscale(all),
                    _ => mscale(1.0),
                },
            };
            RopeScaling::Yarn {
                factor,
                original_max_position: original()?,
                beta_fast: p.f64_or("beta_fast", 32.0)?,
                beta_slow: p.f64_or("beta_slow", 1.0)?,
                attention_factor,
            }
        }
        other => return Err(unsupported(p, "rope scaling type", other, SUPPORTED_ROPE_TYPES)),
    })
}

/// Rope theta and scaling for a layer of `layer_type` (`full_attention` / `sliding_attention`).
fn rope_for(
    cfg: &Config,
    family: Family,
    layer_type: &str,
    default_theta: f64,
) -> Result<(f64, RopeScaling), FrontendError> {
    // transformers v5: `rope_parameters`, flat or keyed by layer type.
    if let Some(params) = cfg.opt_object("rope_parameters")? {
        let entry = if params.get("rope_type").is_some() || params.get("rope_theta").is_some() {
            params
        } else {
            params.opt_object(layer_type)?.ok_or_else(|| {
                cfg.error(format!("field `rope_parameters` has no entry for layer type `{layer_type}`"))
            })?
        };
        let theta = match entry.opt_f64("rope_theta")? {
            Some(t) => t,
            None => cfg.f64_or("rope_theta", default_theta)?,
        };
        return Ok((theta, rope_scaling(cfg, Some(&entry))?));
    }
    // transformers v4: `rope_theta` and `rope_scaling`; Gemma 3's sliding layers use
    // `rope_local_base_freq` and no scaling.
    if family == Family::Gemma3 && layer_type == "sliding_attention" {
        return Ok((cfg.f64_or("rope_local_base_freq", 10000.0)?, RopeScaling::None));
    }
    let theta = cfg.f64_or("rope_theta", default_theta)?;
    Ok((theta, rope_scaling(cfg, cfg.opt_object("rope_scaling")?.as_ref())?))
}

fn f32_of(cfg: &Config, key: &str, x: f64) -> Result<f32, FrontendError> {
    let y = x as f32;
    if y.is_finite() { Ok(y) } else { Err(cfg.error(format!("field `{key}` = {x} does not fit an f32"))) }
}

/// The decoder spec of a Llama-like architecture (Llama, Mistral, Qwen2, Qwen3, Gemma 3).
fn llama_like(cfg: &Config, family: Family) -> Result<DecoderSpec, FrontendError> {
    let hidden = cfg.u64("hidden_size")?;
    let heads = cfg.u64("num_attention_heads")?;
    let layers = cfg.u64("num_hidden_layers")? as usize;
    let kv_heads = cfg.opt_u64("num_key_value_heads")?.unwrap_or(heads);
    if heads == 0 {
        return Err(cfg.error("field `num_attention_heads` must be positive".into()));
    }
    let head_dim = match cfg.opt_u64("head_dim")? {
        Some(d) => d,
        None => hidden / heads,
    };
    let is_gemma = family == Family::Gemma3;
    let sliding = sliding_layers(cfg, family, layers)?;
    let window = if sliding.iter().any(|&s| s) {
        let w = cfg.u64("sliding_window")?;
        Some(u32::try_from(w).map_err(|_| cfg.error(format!("field `sliding_window` = {w} is too large")))?)
    } else {
        None
    };
    let default_theta = if matches!(family, Family::Gemma3 | Family::Qwen3 | Family::Qwen2) { 1e6 } else { 1e4 };
    let scale = match family {
        Family::Gemma3 => cfg.f64_or("query_pre_attn_scalar", 256.0)?.powf(-0.5),
        _ => (head_dim as f64).powf(-0.5),
    };
    let attention_scale = f32_of(cfg, "head_dim", scale)?;
    let layer_specs = sliding
        .iter()
        .map(|&s| {
            let layer_type = if s { "sliding_attention" } else { "full_attention" };
            let (rope_theta, rope_scaling) = rope_for(cfg, family, layer_type, default_theta)?;
            Ok(LayerSpec { window: if s { window } else { None }, rope_theta, rope_scaling, attention_scale })
        })
        .collect::<Result<Vec<_>, FrontendError>>()?;
    let partial = cfg.f64_or("partial_rotary_factor", 1.0)?;
    let rotary_dim = (head_dim as f64 * partial) as u32;
    let attention_bias = cfg.bool_or("attention_bias", false)?;
    let softcap = |key: &str| -> Result<Option<f32>, FrontendError> {
        cfg.opt_f64(key)?.map(|c| f32_of(cfg, key, c)).transpose()
    };
    Ok(DecoderSpec {
        name: family.name().into(),
        vocab: cfg.u64("vocab_size")?,
        hidden,
        heads,
        kv_heads,
        head_dim,
        intermediate: cfg.u64("intermediate_size")?,
        norm: NormKind::Rms { offset: if is_gemma { 1.0 } else { 0.0 } },
        norm_eps: f32_of(cfg, "rms_norm_eps", cfg.f64_or("rms_norm_eps", 1e-6)?)?,
        positions: PositionKind::Rotary { style: RopeStyle::Half, rotary_dim },
        layers: layer_specs,
        // Qwen2 always has q/k/v biases and no output bias; the others follow `attention_bias`.
        qkv_bias: family == Family::Qwen2 || attention_bias,
        out_bias: family != Family::Qwen2 && attention_bias,
        mlp_bias: cfg.bool_or("mlp_bias", false)?,
        fused_qkv: false,
        qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
        sandwich_norms: is_gemma,
        mlp: MlpKind::Gated(if is_gemma {
            activation(cfg, "hidden_activation", "gelu_pytorch_tanh")?
        } else {
            activation(cfg, "hidden_act", "silu")?
        }),
        tied_embeddings: cfg.bool_or("tie_word_embeddings", is_gemma)?,
        // Gemma multiplies embeddings by sqrt(hidden) rounded to the activation dtype (f32 here).
        embedding_scale: is_gemma.then(|| (hidden as f64).sqrt() as f32),
        attention_softcap: if is_gemma { softcap("attn_logit_softcapping")? } else { None },
        final_softcap: if is_gemma { softcap("final_logit_softcapping")? } else { None },
        names: if is_gemma { WeightNames::gemma_style() } else { WeightNames::llama_style() },
    })
}

fn gpt2(cfg: &Config) -> Result<DecoderSpec, FrontendError> {
    let hidden = cfg.u64_any(&["n_embd", "hidden_size"])?;
    let heads = cfg.u64_any(&["n_head", "num_attention_heads"])?;
    let layers = cfg.u64_any(&["n_layer", "num_hidden_layers"])? as usize;
    if heads == 0 {
        return Err(cfg.error("field `n_head` must be positive".into()));
    }
    let head_dim = hidden / heads;
    let intermediate = cfg.opt_u64("n_inner")?.unwrap_or(4 * hidden);
    let base_scale = if cfg.bool_or("scale_attn_weights", true)? { (head_dim as f64).powf(-0.5) } else { 1.0 };
    let by_layer = cfg.bool_or("scale_attn_by_inverse_layer_idx", false)?;
    let layer_specs = (0..layers)
        .map(|i| {
            let scale = if by_layer { base_scale / (i as f64 + 1.0) } else { base_scale };
            Ok(LayerSpec {
                window: None,
                rope_theta: 0.0,
                rope_scaling: RopeScaling::None,
                attention_scale: f32_of(cfg, "n_head", scale)?,
            })
        })
        .collect::<Result<Vec<_>, FrontendError>>()?;
    Ok(DecoderSpec {
        name: Family::Gpt2.name().into(),
        vocab: cfg.u64("vocab_size")?,
        hidden,
        heads,
        kv_heads: heads,
        head_dim,
        intermediate,
        norm: NormKind::Layer,
        norm_eps: f32_of(cfg, "layer_norm_epsilon", cfg.f64_or("layer_norm_epsilon", 1e-5)?)?,
        positions: PositionKind::Learned { max_positions: cfg.u64_any(&["n_positions", "max_position_embeddings"])? },
        layers: layer_specs,
        qkv_bias: true,
        out_bias: true,
        mlp_bias: true,
        fused_qkv: true,
        qk_norm: false,
        sandwich_norms: false,
        mlp: MlpKind::Plain(activation(cfg, "activation_function", "gelu_new")?),
        tied_embeddings: cfg.bool_or("tie_word_embeddings", true)?,
        embedding_scale: None,
        attention_softcap: None,
        final_softcap: None,
        names: WeightNames::gpt2(),
    })
}

/// The decoder spec of `family` from its config.
pub fn decoder_spec(cfg: &Config, family: Family) -> Result<DecoderSpec, FrontendError> {
    match family {
        Family::Gpt2 => gpt2(cfg),
        _ => llama_like(cfg, family),
    }
}

/// The longest context the config declares.
pub fn max_position(cfg: &Config) -> Result<Option<u64>, FrontendError> {
    Ok(match cfg.opt_u64("max_position_embeddings")? {
        Some(v) => Some(v),
        None => cfg.opt_u64("n_positions")?,
    })
}
