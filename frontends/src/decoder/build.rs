//! Emits the decoder graph of a [`DecoderSpec`], checking every weight it names against the store.
//!
//! Weights are checked while the graph is emitted: a missing or misshapen weight is recorded and replaced
//! by a stand-in of the expected type, so one run reports every missing tensor at once instead of the
//! first. Activations are f32 throughout; weights keep their stored dtype (the ops that take weights
//! accept any float or quantized dtype), so nothing is converted here.

use kiln_ir::{DType, Dim, Graph, Op, Shape, Tensor, TensorType, ValueId, WeightStore};

use super::names::WeightNames;
use super::{Activation, DecoderError, DecoderSpec, MlpKind, NormKind, PositionKind};

/// What a weight is used as, which decides the dtypes it may have.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// A `linear`/`embedding`/`logits` matrix: any float or quantized dtype.
    Matrix,
    /// A norm weight or a bias: a plain float vector.
    Vector,
}

impl Role {
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Role::Matrix => ("a projection or embedding matrix", "a float (f32, f16, bf16) or quantized dtype"),
            Role::Vector => ("a norm weight or bias", "a float dtype (f32, f16, bf16)"),
        }
    }
}

struct Builder<'a> {
    spec: &'a DecoderSpec,
    store: &'a WeightStore,
    g: Graph,
    missing: Vec<String>,
    bad: Vec<DecoderError>,
}

/// Builds and verifies the decoder graph of `spec` over `store` (keyed by the names in `spec.names`).
pub fn build_decoder(spec: &DecoderSpec, store: &WeightStore) -> Result<Graph, DecoderError> {
    check_spec(spec)?;
    let mut b = Builder { spec, store, g: Graph::new(spec.name.clone()), missing: Vec::new(), bad: Vec::new() };
    let logits = b.emit()?;
    if !b.missing.is_empty() {
        b.missing.sort();
        b.missing.dedup();
        return Err(DecoderError::MissingTensors(b.missing));
    }
    if let Some(e) = b.bad.into_iter().next() {
        return Err(e);
    }
    let mut g = b.g;
    g.set_outputs(vec![logits]);
    kiln_ir::verify(&g, Some(store)).map_err(DecoderError::Verify)?;
    Ok(g)
}

fn check_spec(s: &DecoderSpec) -> Result<(), DecoderError> {
    let bad = |m: String| Err(DecoderError::BadSpec(m));
    for (what, v) in [
        ("vocab size", s.vocab),
        ("hidden size", s.hidden),
        ("attention heads", s.heads),
        ("key/value heads", s.kv_heads),
        ("head dim", s.head_dim),
        ("intermediate size", s.intermediate),
    ] {
        if v == 0 {
            return bad(format!("the {what} is 0"));
        }
    }
    if s.layers.is_empty() {
        return bad("the model has no layers".into());
    }
    if !s.heads.is_multiple_of(s.kv_heads) {
        return bad(format!("{} attention heads are not a multiple of {} key/value heads", s.heads, s.kv_heads));
    }
    if let PositionKind::Rotary { rotary_dim, .. } = s.positions
        && (rotary_dim == 0 || !rotary_dim.is_multiple_of(2) || u64::from(rotary_dim) > s.head_dim)
    {
        return bad(format!("the rotary dim {rotary_dim} must be even, positive and at most the head dim {}", s.head_dim));
    }
    if !(s.norm_eps.is_finite() && s.norm_eps >= 0.0) {
        return bad(format!("the norm epsilon {} must be finite and non-negative", s.norm_eps));
    }
    Ok(())
}

impl Builder<'_> {
    fn push(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, DecoderError> {
        let name = op.name();
        self.g.push(op, inputs).map_err(|e| DecoderError::Infer { op: name.to_string(), message: e.message })
    }

    fn constant(&mut self, value: Tensor) -> Result<ValueId, DecoderError> {
        self.push(Op::Constant { value }, &[])
    }

    fn shape_constant(&mut self, dims: &[i64]) -> Result<ValueId, DecoderError> {
        self.constant(Tensor::i64(vec![dims.len()], dims.to_vec()).expect("length matches"))
    }

    /// A `weight` op for `name` of the expected shape. A missing weight, or one of the wrong shape or dtype,
    /// is recorded and replaced by an f32 stand-in of the expected shape so emission can go on.
    fn weight(&mut self, name: String, dims: &[u64], role: Role) -> ValueId {
        let expected = Shape::of(dims);
        let ty = match self.store.get(&name) {
            Err(_) => {
                self.missing.push(name.clone());
                TensorType::new(DType::F32, expected)
            }
            Ok(stored) if stored.ty.shape != expected => {
                self.bad.push(DecoderError::TensorShape {
                    name: name.clone(),
                    expected: expected.to_string(),
                    actual: stored.ty.shape.to_string(),
                });
                TensorType::new(DType::F32, expected)
            }
            Ok(stored) => {
                let ok = match role {
                    Role::Matrix => stored.ty.dtype.is_weight_like(),
                    Role::Vector => stored.ty.dtype.is_float(),
                };
                if !ok {
                    let (role, allowed) = role.describe();
                    self.bad.push(DecoderError::TensorDType {
                        name: name.clone(),
                        dtype: stored.ty.dtype.to_string(),
                        role,
                        allowed,
                    });
                    TensorType::new(DType::F32, expected)
                } else {
                    stored.ty.clone()
                }
            }
        };
        self.g.add_node(Op::Weight { name }, Vec::new(), vec![ty])[0]
    }

    /// `linear(x, base.weight [out, in], base.bias?)`.
    fn linear(&mut self, x: ValueId, base: &str, out: u64, inp: u64, bias: bool) -> Result<ValueId, DecoderError> {
        let w = self.weight(WeightNames::weight(base), &[out, inp], Role::Matrix);
        let mut args = vec![x, w];
        if bias {
            args.push(self.weight(WeightNames::bias(base), &[out], Role::Vector));
        }
        self.push(Op::Linear {}, &args)
    }

    /// The model's norm over the last dim (`size` elements) with the weights under `base`.
    fn norm(&mut self, x: ValueId, base: &str, size: u64) -> Result<ValueId, DecoderError> {
        let w = self.weight(WeightNames::weight(base), &[size], Role::Vector);
        let eps = self.spec.norm_eps;
        match self.spec.norm {
            NormKind::Rms { offset } => self.push(Op::RmsNorm { eps, offset }, &[x, w]),
            NormKind::Layer => {
                let b = self.weight(WeightNames::bias(base), &[size], Role::Vector);
                self.push(Op::LayerNorm { axis: -1, eps }, &[x, w, b])
            }
        }
    }

    fn activation(&mut self, x: ValueId, act: Activation) -> Result<ValueId, DecoderError> {
        match act {
            Activation::Silu => self.push(Op::Silu {}, &[x]),
            Activation::Gelu(approximate) => self.push(Op::Gelu { approximate }, &[x]),
        }
    }

    fn to_f32(&mut self, x: ValueId) -> Result<ValueId, DecoderError> {
        if self.g.value_type(x).dtype == DType::F32 { Ok(x) } else { self.push(Op::Cast { to: DType::F32 }, &[x]) }
    }

    fn emit(&mut self) -> Result<ValueId, DecoderError> {
        let s = self.spec;
        let seq_ty = TensorType::new(DType::I64, Shape(vec![Dim::Static(1), Dim::sym("seq")]));
        let ids = self.g.add_input(seq_ty.clone());
        let positions = self.g.add_input(seq_ty);

        let embed = self.weight(WeightNames::weight(&s.names.embed), &[s.vocab, s.hidden], Role::Matrix);
        let x = self.push(Op::Embedding {}, &[embed, ids])?;
        let mut x = self.to_f32(x)?;
        if let Some(scale) = s.embedding_scale {
            let c = self.constant(Tensor::scalar_f32(scale))?;
            x = self.push(Op::Binary(kiln_ir::BinaryOp::Mul), &[x, c])?;
        }
        if let PositionKind::Learned { max_positions } = s.positions {
            let table = self.weight(WeightNames::weight(&s.names.positions), &[max_positions, s.hidden], Role::Matrix);
            let p = self.push(Op::Embedding {}, &[table, positions])?;
            let p = self.to_f32(p)?;
            x = self.push(Op::Binary(kiln_ir::BinaryOp::Add), &[x, p])?;
        }

        for i in 0..s.layers.len() {
            x = self.layer(i, x, positions)?;
        }

        let x = self.norm(x, &s.names.final_norm.clone(), s.hidden)?;
        let head = if s.tied_embeddings {
            embed
        } else {
            self.weight(WeightNames::weight(&s.names.lm_head), &[s.vocab, s.hidden], Role::Matrix)
        };
        self.push(Op::Logits { softcap: s.final_softcap }, &[x, head])
    }

    fn layer(&mut self, i: usize, x: ValueId, positions: ValueId) -> Result<ValueId, DecoderError> {
        let s = self.spec;
        let n = &s.names.layer;
        let at = |t: &str| WeightNames::at(t, i);
        let (h, q_out, kv_out) = (s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let (heads, kv_heads, hd) = (s.heads as i64, s.kv_heads as i64, s.head_dim as i64);

        // Attention block.
        let a = self.norm(x, &at(&n.attn_norm), h)?;
        let (q, k, v) = if s.fused_qkv {
            let qkv = self.linear(a, &at(&n.q), q_out + 2 * kv_out, h, s.qkv_bias)?;
            let sizes = vec![q_out as i64, kv_out as i64, kv_out as i64];
            let parts = self
                .g
                .push_multi(Op::Split { axis: -1, sizes }, &[qkv])
                .map_err(|e| DecoderError::Infer { op: "split".into(), message: e.message })?;
            (parts[0], parts[1], parts[2])
        } else {
            (
                self.linear(a, &at(&n.q), q_out, h, s.qkv_bias)?,
                self.linear(a, &at(&n.k), kv_out, h, s.qkv_bias)?,
                self.linear(a, &at(&n.v), kv_out, h, s.qkv_bias)?,
            )
        };
        let q_shape = self.shape_constant(&[0, 0, heads, hd])?;
        let kv_shape = self.shape_constant(&[0, 0, kv_heads, hd])?;
        let mut q = self.push(Op::Reshape { allowzero: false }, &[q, q_shape])?;
        let mut k = self.push(Op::Reshape { allowzero: false }, &[k, kv_shape])?;
        let v = self.push(Op::Reshape { allowzero: false }, &[v, kv_shape])?;
        if s.qk_norm {
            q = self.norm(q, &at(&n.q_norm), s.head_dim)?;
            k = self.norm(k, &at(&n.k_norm), s.head_dim)?;
        }
        let layer = &s.layers[i];
        if let PositionKind::Rotary { style, rotary_dim } = s.positions {
            let rope = Op::Rope { style, theta: layer.rope_theta, rotary_dim, scaling: layer.rope_scaling };
            q = self.push(rope.clone(), &[q, positions])?;
            k = self.push(rope, &[k, positions])?;
        }
        let attention = Op::Attention {
            layer: Some(u32::try_from(i).map_err(|_| DecoderError::BadSpec(format!("layer index {i} is too large")))?),
            scale: layer.attention_scale,
            causal: true,
            window: layer.window,
            sinks: 0,
            softcap: s.attention_softcap,
        };
        let o = self.push(attention, &[q, k, v, positions])?;
        let merged = self.shape_constant(&[0, 0, heads * hd])?;
        let o = self.push(Op::Reshape { allowzero: false }, &[o, merged])?;
        let mut o = self.linear(o, &at(&n.o), h, q_out, s.out_bias)?;
        if let Some(post) = &n.attn_out_norm
            && s.sandwich_norms
        {
            o = self.norm(o, &at(post), h)?;
        }
        let x = self.push(Op::Binary(kiln_ir::BinaryOp::Add), &[x, o])?;

        // MLP block.
        let m = self.norm(x, &at(&n.mlp_norm), h)?;
        let f = s.intermediate;
        let mut d = match s.mlp {
            MlpKind::Gated(act) => {
                let gate = self.linear(m, &at(&n.gate), f, h, s.mlp_bias)?;
                let up = self.linear(m, &at(&n.up), f, h, s.mlp_bias)?;
                let y = match act {
                    Activation::Silu => self.push(Op::Swiglu {}, &[gate, up])?,
                    act => {
                        let g = self.activation(gate, act)?;
                        self.push(Op::Binary(kiln_ir::BinaryOp::Mul), &[g, up])?
                    }
                };
                self.linear(y, &at(&n.down), h, f, s.mlp_bias)?
            }
            MlpKind::Plain(act) => {
                let y = self.linear(m, &at(&n.up), f, h, s.mlp_bias)?;
                let y = self.activation(y, act)?;
                self.linear(y, &at(&n.down), h, f, s.mlp_bias)?
            }
        };
        if let Some(post) = &n.mlp_out_norm
            && s.sandwich_norms
        {
            d = self.norm(d, &at(post), h)?;
        }
        self.push(Op::Binary(kiln_ir::BinaryOp::Add), &[x, d])
    }
}
