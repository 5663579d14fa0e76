//! The description of a decoder-only transformer that [`super::build_decoder`] turns into a graph.

use kiln_ir::{GeluApprox, RopeScaling, RopeStyle};

use super::WeightNames;

/// Which normalisation the model uses everywhere (blocks, q/k norms, the final norm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// `x * rsqrt(mean(x^2) + eps) * (w + offset)`; Gemma uses offset 1.
    Rms { offset: f32 },
    /// LayerNorm with a weight and a bias (GPT-2).
    Layer,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PositionKind {
    /// Rotary embeddings on q and k, on the first `rotary_dim` elements of each head.
    Rotary { style: RopeStyle, rotary_dim: u32 },
    /// A learned table `[max_positions, hidden]` added to the token embeddings (GPT-2).
    Learned { max_positions: u64 },
}

/// The MLP's activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Silu,
    Gelu(GeluApprox),
}

/// The MLP's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MlpKind {
    /// `down(act(gate(x)) * up(x))` (Llama, Qwen, Gemma).
    Gated(Activation),
    /// `proj(act(fc(x)))` (GPT-2).
    Plain(Activation),
}

/// What differs from layer to layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// Sliding-window size: keys at distance >= window are hidden. `None` for full attention.
    pub window: Option<u32>,
    /// Rotary base of this layer (Gemma 3 uses one per layer type); ignored with learned positions.
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// The factor on `q·k` (usually `head_dim^-0.5`).
    pub attention_scale: f32,
}

/// A decoder-only transformer, as far as its graph is concerned.
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderSpec {
    /// The graph's name (the architecture).
    pub name: String,
    pub vocab: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub intermediate: u64,
    pub norm: NormKind,
    pub norm_eps: f32,
    pub positions: PositionKind,
    /// One entry per layer.
    pub layers: Vec<LayerSpec>,
    /// q, k and v projections have biases (Qwen2, GPT-2).
    pub qkv_bias: bool,
    /// The attention output projection has a bias (GPT-2).
    pub out_bias: bool,
    /// The MLP projections have biases (GPT-2).
    pub mlp_bias: bool,
    /// q, k and v come from one fused projection `[q; k; v]` (GPT-2's `c_attn`).
    pub fused_qkv: bool,
    /// An RMSNorm over `head_dim` on q and k before rope (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Norms on the attention output and the MLP output before the residual add (Gemma 2/3).
    pub sandwich_norms: bool,
    pub mlp: MlpKind,
    /// The logits use the embedding table instead of a separate head.
    pub tied_embeddings: bool,
    /// Embeddings are multiplied by this (Gemma: `sqrt(hidden)` rounded to f32).
    pub embedding_scale: Option<f32>,
    /// Attention scores are soft-capped: `cap * tanh(s / cap)` (Gemma 2, optional in Gemma 3).
    pub attention_softcap: Option<f32>,
    /// Final logits are soft-capped the same way.
    pub final_softcap: Option<f32>,
    pub names: WeightNames,
}
