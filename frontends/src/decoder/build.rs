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
        return bad(format!(
            "the rotary dim {rotary_dim} must be even, positive and at most the head dim {}",
            s.head_dim
        ));
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

    fn cast_to_f32(&mut self, x: ValueId) -> Result<ValueId, DecoderError> {
        if self.g.value_type(x).dtype == DType::F32 { Ok(x) } else { self.push(Op::cast(DType::F32), &[x]) }
    }

    fn emit(&mut self) -> Result<ValueId, DecoderError> {
        let s = self.spec;
        let seq_ty = TensorType::new(DType::I64, Shape(vec![Dim::Static(1), Dim::sym("seq")]));
        let ids = self.g.add_input(seq_ty.clone());
        let positions = self.g.add_input(seq_ty);
        // The speculative-decoding tree mask (see the contract in `kiln_ir::model`): plain steps pass the
        // causal mask, token-tree verification steps the tree's ancestry.
        let seq = || Dim::sym("seq");
        let tree_mask = self.g.add_input(TensorType::new(DType::Bool, Shape(vec![seq(), seq()])));

        let embed = self.weight(WeightNames::weight(&s.names.embed), &[s.vocab, s.hidden], Role::Matrix);
        let x = self.push(Op::Embedding {}, &[embed, ids])?;
        let mut x = self.cast_to_f32(x)?;
        if let Some(scale) = s.embedding_scale {
            let c = self.constant(Tensor::scalar_f32(scale))?;
            x = self.push(Op::Binary(kiln_ir::BinaryOp::Mul), &[x, c])?;
        }
        if let PositionKind::Learned { max_positions } = s.positions {
            let table = self.weight(WeightNames::weight(&s.names.positions), &[max_positions, s.hidden], Role::Matrix);
            let p = self.push(Op::Embedding {}, &[table, positions])?;
            let p = self.cast_to_f32(p)?;
            x = self.push(Op::Binary(kiln_ir::BinaryOp::Add), &[x, p])?;
        }

        for i in 0..s.layers.len() {
            x = self.layer(i, x, positions, tree_mask)?;
        }

        let x = self.norm(x, &s.names.final_norm.clone(), s.hidden)?;
        let head = if s.tied_embeddings {
            embed
        } else {
            self.weight(WeightNames::weight(&s.names.lm_head), &[s.vocab, s.hidden], Role::Matrix)
        };
        self.push(Op::Logits { softcap: s.final_softcap }, &[x, head])
    }

    fn layer(&mut self, i: usize, x: ValueId, positions: ValueId, tree_mask: ValueId) -> Result<ValueId, DecoderError> {
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
        let o = self.push(attention, &[q, k, v, positions, tree_mask])?;
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

#[cfg(test)]
mod tests {
    use kiln_ir::{GeluApprox, RopeScaling, RopeStyle};

    use super::*;
    use crate::decoder::{LayerSpec, PositionKind};

    fn spec(layers: usize) -> DecoderSpec {
        DecoderSpec {
            name: "tiny".into(),
            vocab: 32,
            hidden: 16,
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
            intermediate: 24,
            norm: NormKind::Rms { offset: 0.0 },
            norm_eps: 1e-6,
            positions: PositionKind::Rotary { style: RopeStyle::Half, rotary_dim: 4 },
            layers: vec![
                LayerSpec {
                    window: Some(3),
                    rope_theta: 10000.0,
                    rope_scaling: RopeScaling::None,
                    attention_scale: 0.5
                };
                layers
            ],
            qkv_bias: false,
            out_bias: false,
            mlp_bias: false,
            fused_qkv: false,
            qk_norm: true,
            sandwich_norms: false,
            mlp: MlpKind::Gated(Activation::Gelu(GeluApprox::Tanh)),
            tied_embeddings: true,
            embedding_scale: Some(4.0),
            attention_softcap: None,
            final_softcap: Some(30.0),
            names: WeightNames::llama_style(),
        }
    }

    /// Deterministic pseudo-random weights of every tensor `spec(layers)` names, in `dtype`.
    fn store(layers: usize, dtype: DType) -> WeightStore {
        let mut s = WeightStore::new();
        let mut seed = 1u32;
        let mut add = |name: String, dims: &[usize]| {
            let n: usize = dims.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            let t = Tensor::f32(dims.to_vec(), v).unwrap();
            let t = Tensor::new(dims.to_vec(), kiln_ir::TensorData::from_f64(dtype, t.to_f64_vec()).unwrap()).unwrap();
            s.insert_tensor(name, &t).unwrap();
        };
        add("model.embed_tokens.weight".into(), &[32, 16]);
        add("model.norm.weight".into(), &[16]);
        for i in 0..layers {
            let l = |n: &str| format!("model.layers.{i}.{n}.weight");
            for (n, dims) in [
                ("input_layernorm", vec![16]),
                ("post_attention_layernorm", vec![16]),
                ("self_attn.q_proj", vec![16, 16]),
                ("self_attn.k_proj", vec![8, 16]),
                ("self_attn.v_proj", vec![8, 16]),
                ("self_attn.o_proj", vec![16, 16]),
                ("self_attn.q_norm", vec![4]),
                ("self_attn.k_norm", vec![4]),
                ("mlp.gate_proj", vec![24, 16]),
                ("mlp.up_proj", vec![24, 16]),
                ("mlp.down_proj", vec![16, 24]),
            ] {
                add(l(n), &dims);
            }
        }
        s
    }

    #[test]
    fn builds_a_verified_decoder_graph_over_stored_dtypes() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let g = build_decoder(&spec(2), &store(2, dtype)).unwrap();
            let text = kiln_ir::text::print(&g);
            assert!(text.contains(&format!("{dtype}[32, 16]")), "weights keep their dtype:\n{text}");
            // Activations are f32: only a half-precision embedding needs a cast, once.
            let casts = g.nodes().filter(|(_, n)| matches!(n.op, Op::Cast { .. })).count();
            assert_eq!(casts, usize::from(dtype != DType::F32), "{text}");
            let attention: Vec<_> =
                g.nodes().filter_map(|(_, n)| matches!(n.op, Op::Attention { .. }).then_some(n.op.clone())).collect();
            assert_eq!(attention.len(), 2);
            assert_eq!(g.value_type(g.outputs()[0]).to_string(), "f32[1, seq, 32]");
            assert_eq!(g.inputs().len(), 3, "ids, positions, tree_mask");
            assert_eq!(g.value_type(g.inputs()[2]).to_string(), "bool[seq, seq]");
            let mask = g.inputs()[2];
            let masked =
                g.nodes().filter(|(_, n)| n.op.name() == "attention" && n.inputs.get(4) == Some(&mask)).count();
            assert_eq!(masked, 2, "every attention op takes the tree mask");
        }
    }

    #[test]
    fn reports_every_missing_tensor_at_once() {
        let mut partial = WeightStore::new();
        for (name, w) in store(2, DType::F32).iter() {
            if !name.contains("layers.1.mlp") && !name.contains("q_norm") {
                partial.insert(name, w.ty.clone(), w.payload.clone()).unwrap();
            }
        }
        let DecoderError::MissingTensors(names) = build_decoder(&spec(2), &partial).unwrap_err() else {
            panic!("expected missing tensors")
        };
        assert_eq!(
            names,
            [
                "model.layers.0.self_attn.q_norm.weight",
                "model.layers.1.mlp.down_proj.weight",
                "model.layers.1.mlp.gate_proj.weight",
                "model.layers.1.mlp.up_proj.weight",
                "model.layers.1.self_attn.q_norm.weight",
            ]
        );
    }

    #[test]
    fn refuses_weights_that_cannot_serve_their_role() {
        let mut s = WeightStore::new();
        for (name, w) in store(1, DType::F32).iter() {
            if name == "model.norm.weight" {
                continue;
            }
            s.insert(name, w.ty.clone(), w.payload.clone()).unwrap();
        }
        s.insert_tensor("model.norm.weight", &Tensor::i64(vec![16], vec![1; 16]).unwrap()).unwrap();
        let e = build_decoder(&spec(1), &s).unwrap_err().to_string();
        assert!(e.contains("model.norm.weight") && e.contains("i64") && e.contains("norm weight"), "{e}");

        let mut bad = spec(1);
        bad.kv_heads = 3;
        assert!(matches!(build_decoder(&bad, &store(1, DType::F32)), Err(DecoderError::BadSpec(_))));
        let mut bad = spec(1);
        bad.positions = PositionKind::Rotary { style: RopeStyle::Half, rotary_dim: 6 };
        assert!(matches!(build_decoder(&bad, &store(1, DType::F32)), Err(DecoderError::BadSpec(_))));
    }
}
