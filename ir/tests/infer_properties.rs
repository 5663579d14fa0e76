//! Properties of type inference over random ops, types and constant inputs: it never panics, it gives
//! one type per result, and it is monotone in `?` (forgetting a dim never turns a valid application
//! invalid, except where a static dim is documented as required, and never contradicts the result).

use kiln_ir::infer::{infer_types, shapes_compatible};
use kiln_ir::{
    BinaryOp, CompareOp, DType, Dim, GeluApprox, Graph, Op, ReduceKind, RopeScaling, RopeStyle, Shape, Tensor,
    TensorType, UnaryOp, verify,
};
use proptest::prelude::*;

fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        4 => prop_oneof![Just(1u64), Just(2), Just(4)].prop_map(Dim::Static),
        1 => Just(Dim::Static(0)),
        2 => Just(Dim::sym("a")),
        1 => Just(Dim::sym("b")),
        1 => Just(Dim::Unknown),
    ]
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![
        5 => Just(DType::F32),
        1 => Just(DType::BF16),
        4 => Just(DType::I64),
        1 => Just(DType::I32),
        1 => Just(DType::U8),
        2 => Just(DType::Bool),
        1 => Just(DType::Q8C),
    ]
}

fn tensor_type() -> impl Strategy<Value = TensorType> {
    (dtype(), prop::collection::vec(dim(), 0..5)).prop_map(|(d, dims)| TensorType::new(d, Shape(dims)))
}

fn index() -> impl Strategy<Value = i64> {
    prop_oneof![8 => -2i64..5, 1 => Just(i64::MIN), 1 => Just(i64::MAX), 1 => Just(1 << 40), 1 => Just(-5)]
}

/// An i64 constant with a few entries (its length need not match anything).
fn const_input() -> impl Strategy<Value = Option<Tensor>> {
    prop::option::weighted(
        0.3,
        prop::collection::vec(index(), 0..4).prop_map(|v| Tensor::i64(vec![v.len()], v).unwrap()),
    )
}

fn op() -> impl Strategy<Value = Op> {
    let small = -4i64..5;
    (0usize..40, small.clone(), small, prop::collection::vec(-3i64..5, 0..4), any::<bool>(), 0u32..5).prop_map(
        |(k, a, b, list, flag, u)| match k {
            0 => Op::Embedding {},
            1 => Op::RmsNorm { eps: 1e-5, offset: a as f32 },
            2 => Op::LayerNorm { axis: a, eps: 1e-5 },
            3 => Op::Linear {},
            4 => Op::Rope { style: RopeStyle::Half, theta: 1e4, rotary_dim: u * 2, scaling: RopeScaling::None },
            5 => Op::Attention {
                layer: flag.then_some(0),
                scale: 0.5,
                causal: true,
                window: (u > 2).then(|| u - 2),
                sinks: 0,
                softcap: None,
            },
            6 => Op::Silu {},
            7 => Op::Gelu { approximate: GeluApprox::Tanh },
            8 => Op::Swiglu {},
            9 => Op::Softmax { axis: a },
            10 => Op::Logits { softcap: None },
            11 => Op::MatMul {},
            12 => Op::Where {},
            13 => Op::cast(DType::F16),
            14 => Op::ArgMax { axis: a, keepdims: flag },
            15 => Op::Reshape { allowzero: flag },
            16 => Op::Transpose { perm: list },
            17 => Op::Squeeze { axes: list },
            18 => Op::Unsqueeze { axes: list },
            19 => Op::Concat { axis: a },
            20 => Op::Split { axis: a, sizes: list },
            21 => Op::Slice {},
            22 => Op::Gather { axis: a },
            23 => Op::Expand {},
            24 => Op::Range {},
            25 => Op::CumSum { axis: a, exclusive: flag, reverse: false },
            26 => Op::Shape { start: a, end: flag.then_some(b) },
            27 => Op::ConstantOfShape { value: a as f64, dtype: DType::I32 },
            28 => Op::Tile {},
            29 => Op::Trilu { upper: flag },
            30 => Op::Unary(UnaryOp::ALL[u as usize * 4 % UnaryOp::ALL.len()]),
            31 => Op::Unary(UnaryOp::Not),
            32 => Op::Binary(BinaryOp::ALL[(a + 4) as usize % BinaryOp::ALL.len()]),
            33 => Op::Compare(CompareOp::ALL[u as usize % CompareOp::ALL.len()]),
            34 => Op::Reduce { kind: ReduceKind::Sum, axes: list, keepdims: flag },
            35 => Op::Weight { name: "w".into() },
            36 => Op::Constant { value: Tensor::scalar_i64(a) },
            37 => Op::Unary(UnaryOp::IsNan),
            38 => Op::Binary(BinaryOp::And),
            _ => Op::Attention { layer: None, scale: 1.0, causal: false, window: None, sinks: 2, softcap: Some(30.0) },
        },
    )
}

fn case() -> impl Strategy<Value = (Op, Vec<TensorType>, Vec<Option<Tensor>>)> {
    // Mostly as many inputs as the op takes, so that many cases get past the arity check.
    op().prop_flat_map(|op| {
        let (min, max) = op.input_arity();
        let n = prop_oneof![9 => min..=max.min(min + 2), 1 => 0usize..6];
        (Just(op), n).prop_flat_map(|(op, n)| {
            (Just(op), prop::collection::vec((tensor_type(), const_input()), n)).prop_map(|(op, inputs)| {
                let (types, consts) = inputs.into_iter().unzip();
                (op, types, consts)
            })
        })
    })
}

/// Where a static dim is a documented requirement, forgetting it may make the op fail.
fn needs_static(message: &str) -> bool {
    message.contains("must be static") || message.contains("static length")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn inference_never_panics_and_is_monotone_in_unknown_dims((op, types, consts) in case(), pick in any::<usize>()) {
        let refs: Vec<&TensorType> = types.iter().collect();
        let crefs: Vec<Option<&Tensor>> = consts.iter().map(Option::as_ref).collect();
        let Ok(result) = infer_types(&op, &refs, &crefs) else { return Ok(()) };
        prop_assert_eq!(result.len(), op.num_outputs());
        // Forget one dim of one input that is not a constant.
        let candidates: Vec<(usize, usize)> = types
            .iter()
            .enumerate()
            .filter(|(i, _)| consts[*i].is_none())
            .flat_map(|(i, t)| (0..t.rank()).map(move |j| (i, j)))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let (i, j) = candidates[pick % candidates.len()];
        let mut looser = types.clone();
        looser[i].shape.0[j] = Dim::Unknown;
        let refs: Vec<&TensorType> = looser.iter().collect();
        match infer_types(&op, &refs, &crefs) {
            Ok(loose) => {
                prop_assert_eq!(loose.len(), result.len());
                for (l, r) in loose.iter().zip(&result) {
                    prop_assert_eq!(l.dtype, r.dtype);
                    prop_assert!(shapes_compatible(&l.shape, &r.shape), "{} vs {} for {:?}", l, r, op);
                }
            }
            Err(e) => prop_assert!(needs_static(&e.message), "{:?} on {:?}: {}", op, looser, e.message),
        }
    }

    #[test]
    fn the_verifier_never_panics((op, types, consts) in case(), declared in prop::collection::vec(tensor_type(), 0..3)) {
        let mut g = Graph::new("fuzz");
        let mut inputs = Vec::new();
        for (t, c) in types.iter().zip(&consts) {
            inputs.push(match c {
                Some(c) => g.add_node(Op::Constant { value: c.clone() }, vec![], vec![c.ty()])[0],
                None => g.add_input(t.clone()),
            });
        }
        let outs = g.add_node(op, inputs, declared);
        g.set_outputs(outs);
        let _ = verify(&g, None);
    }
}

/// Checks that every way of forgetting one input dim keeps `op` valid with a compatible result.
fn forgetting_any_dim_keeps_it_valid(
    op: &Op,
    types: &[TensorType],
    expected: &TensorType,
) -> Result<(), TestCaseError> {
    let refs: Vec<&TensorType> = types.iter().collect();
    let got = infer_types(op, &refs, &[]).map_err(|e| TestCaseError::fail(format!("{op:?} on {types:?}: {e}")))?;
    prop_assert_eq!(&got[0], expected);
    for i in 0..types.len() {
        for j in 0..types[i].rank() {
            let mut looser = types.to_vec();
            looser[i].shape.0[j] = Dim::Unknown;
            let refs: Vec<&TensorType> = looser.iter().collect();
            let loose = infer_types(op, &refs, &[]).map_err(|e| TestCaseError::fail(format!("{looser:?}: {e}")))?;
            prop_assert_eq!(loose[0].dtype, expected.dtype);
            prop_assert!(shapes_compatible(&loose[0].shape, &expected.shape), "{} vs {}", loose[0], expected);
        }
    }
    Ok(())
}

fn ty(dtype: DType, dims: &[&Dim]) -> TensorType {
    TensorType::new(dtype, Shape(dims.iter().map(|d| (*d).clone()).collect()))
}

/// A dim for model shapes: a size or a symbol.
fn model_dim() -> impl Strategy<Value = Dim> {
    prop_oneof![(1u64..5).prop_map(Dim::Static), Just(Dim::sym("s")), Just(Dim::sym("t"))]
}

proptest! {
    #[test]
    fn attention_is_valid_for_consistent_layouts(
        b in model_dim(), s in model_dim(), extra in 0u64..3, hk in 1u64..4, group in 1u64..4, d in model_dim(),
        dv in model_dim(), cached in any::<bool>(), masked in any::<bool>(),
    ) {
        // With a cache k/v hold exactly the new keys; without, `extra` more past keys when s is static.
        let skv = match (&s, cached) {
            (Dim::Static(n), false) => Dim::Static(n + extra),
            _ => s.clone(),
        };
        let (h, hk) = (Dim::Static(hk * group), Dim::Static(hk));
        let mut types = vec![
            ty(DType::BF16, &[&b, &s, &h, &d]),
            ty(DType::BF16, &[&b, &skv, &hk, &d]),
            ty(DType::BF16, &[&b, &skv, &hk, &dv]),
            ty(DType::I64, &[&b, &s]),
        ];
        if masked {
            types.push(ty(DType::Bool, &[&s, &s]));
        }
        let op = Op::Attention { layer: cached.then_some(3), scale: 0.1, causal: true, window: None, sinks: 0, softcap: None };
        forgetting_any_dim_keeps_it_valid(&op, &types, &ty(DType::BF16, &[&b, &s, &h, &dv]))?;
    }

    #[test]
    fn linear_logits_rope_norm_embedding_matmul_are_valid_for_consistent_layouts(
        b in model_dim(), s in model_dim(), k in model_dim(), n in model_dim(), half in 1u32..4,
    ) {
        let f32_ = DType::F32;
        forgetting_any_dim_keeps_it_valid(&Op::Linear {}, &[ty(f32_, &[&b, &s, &k]), ty(f32_, &[&n, &k]), ty(f32_, &[&n])], &ty(f32_, &[&b, &s, &n]))?;
        forgetting_any_dim_keeps_it_valid(&Op::Logits { softcap: None }, &[ty(DType::BF16, &[&s, &k]), ty(DType::BF16, &[&n, &k])], &ty(f32_, &[&s, &n]))?;
        forgetting_any_dim_keeps_it_valid(&Op::RmsNorm { eps: 1e-6, offset: 1.0 }, &[ty(f32_, &[&b, &k]), ty(f32_, &[&k])], &ty(f32_, &[&b, &k]))?;
        forgetting_any_dim_keeps_it_valid(&Op::LayerNorm { axis: -2, eps: 1e-6 }, &[ty(f32_, &[&b, &s, &k]), ty(f32_, &[&s, &k]), ty(f32_, &[&s, &k])], &ty(f32_, &[&b, &s, &k]))?;
        forgetting_any_dim_keeps_it_valid(&Op::Embedding {}, &[ty(DType::BF16, &[&n, &k]), ty(DType::I32, &[&b, &s])], &ty(DType::BF16, &[&b, &s, &k]))?;
        forgetting_any_dim_keeps_it_valid(&Op::MatMul {}, &[ty(f32_, &[&b, &s, &k]), ty(f32_, &[&k, &n])], &ty(f32_, &[&b, &s, &n]))?;
        let d = Dim::Static(u64::from(half) * 4);
        let rope = Op::Rope { style: RopeStyle::Interleaved, theta: 1e4, rotary_dim: half * 2, scaling: RopeScaling::None };
        forgetting_any_dim_keeps_it_valid(&rope, &[ty(f32_, &[&b, &s, &n, &d]), ty(DType::I64, &[&b, &s])], &ty(f32_, &[&b, &s, &n, &d]))?;
    }
}
