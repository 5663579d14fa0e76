//! The table of weight names a decoder graph refers to, so that each frontend states its naming once.
//!
//! Names are full tensor names without the `.weight` / `.bias` suffix; per-layer names are templates in
//! which `{i}` stands for the layer index.

/// Per-layer weight names (templates with `{i}`). Optional entries exist only for the architectures
/// that have them.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeightNames {
    /// The norm before attention.
    pub attn_norm: String,
    /// The norm on the attention output (sandwich norms only).
    pub attn_out_norm: Option<String>,
    /// The norm before the MLP.
    pub mlp_norm: String,
    /// The norm on the MLP output (sandwich norms only).
    pub mlp_out_norm: Option<String>,
    /// Separate q, k, v projections, or one fused projection in `q`'s place when the spec says so.
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    pub q_norm: String,
    pub k_norm: String,
    /// Gated MLP: gate, up, down. Plain MLP: `up` is the first projection and `down` the second.
    pub gate: String,
    pub up: String,
    pub down: String,
}

/// Every weight name of a decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightNames {
    pub embed: String,
    /// The learned position table (learned positions only).
    pub positions: String,
    pub final_norm: String,
    /// The output head (untied embeddings only).
    pub lm_head: String,
    pub layer: LayerWeightNames,
}

impl WeightNames {
    /// `base.weight`.
    pub fn weight(base: &str) -> String {
        format!("{base}.weight")
    }

    /// `base.bias`.
    pub fn bias(base: &str) -> String {
        format!("{base}.bias")
    }

    /// A per-layer template with `{i}` replaced by `layer`.
    pub fn at(template: &str, layer: usize) -> String {
        template.replace("{i}", &layer.to_string())
    }

    /// The names Llama, Mistral, Qwen2/3 and Gemma 3 checkpoints use in transformers.
    pub fn llama_style() -> WeightNames {
        let l = |s: &str| format!("model.layers.{{i}}.{s}");
        WeightNames {
            embed: "model.embed_tokens".into(),
            positions: String::new(),
            final_norm: "model.norm".into(),
            lm_head: "lm_head".into(),
            layer: LayerWeightNames {
                attn_norm: l("input_layernorm"),
                attn_out_norm: None,
                mlp_norm: l("post_attention_layernorm"),
                mlp_out_norm: None,
                q: l("self_attn.q_proj"),
                k: l("self_attn.k_proj"),
                v: l("self_attn.v_proj"),
                o: l("self_attn.o_proj"),
                q_norm: l("self_attn.q_norm"),
                k_norm: l("self_attn.k_norm"),
                gate: l("mlp.gate_proj"),
                up: l("mlp.up_proj"),
                down: l("mlp.down_proj"),
            },
        }
    }

    /// Gemma 2/3: the Llama names plus sandwich norms, where `post_attention_layernorm` is the norm on
    /// the attention output and `pre_feedforward_layernorm` the one before the MLP.
    pub fn gemma_style() -> WeightNames {
        let mut n = WeightNames::llama_style();
        let l = |s: &str| format!("model.layers.{{i}}.{s}");
        n.layer.attn_out_norm = Some(l("post_attention_layernorm"));
        n.layer.mlp_norm = l("pre_feedforward_layernorm");
        n.layer.mlp_out_norm = Some(l("post_feedforward_layernorm"));
        n
    }

    /// GPT-2 (`GPT2LMHeadModel`): fused `c_attn`, `c_proj`, `c_fc`, learned positions `wpe`.
    pub fn gpt2() -> WeightNames {
        let l = |s: &str| format!("transformer.h.{{i}}.{s}");
        WeightNames {
            embed: "transformer.wte".into(),
            positions: "transformer.wpe".into(),
            final_norm: "transformer.ln_f".into(),
            lm_head: "lm_head".into(),
            layer: LayerWeightNames {
                attn_norm: l("ln_1"),
                attn_out_norm: None,
                mlp_norm: l("ln_2"),
                mlp_out_norm: None,
                q: l("attn.c_attn"),
                k: String::new(),
                v: String::new(),
                o: l("attn.c_proj"),
                q_norm: String::new(),
                k_norm: String::new(),
                gate: String::new(),
                up: l("mlp.c_fc"),
                down: l("mlp.c_proj"),
            },
        }
    }
}
