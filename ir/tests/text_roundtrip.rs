//! Round trips of the text form on hand-written graphs: every op, every literal corner case, and the exact
//! canonical text for the cases a reader relies on.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use half::{bf16, f16};
use kiln_ir::text::{Numbering, parse, print, print_node};
use kiln_ir::{
    BinaryOp, DType, Dim, E8m0Rounding, GeluApprox, Graph, LowBitType, Op, ReduceKind, RopeScaling, RopeStyle, Shape,
    Tensor, TensorData, TensorType, UnaryOp, ValueId,
};

fn ty(s: &str) -> TensorType {
    // A tiny independent type reader for test fixtures: `f32[2, seq, ?]`.
    let (dtype, rest) = s.split_once('[').unwrap();
    let dims = rest.trim_end_matches(']');
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(", ")
            .map(|d| match d {
                "?" => Dim::Unknown,
                d => d.parse().map(Dim::Static).unwrap_or_else(|_| Dim::sym(d)),
            })
            .collect()
    };
    TensorType::new(dtype.parse().unwrap(), Shape(dims))
}

/// Asserts the text is a fixed point of parse∘print and returns it.
fn round_trip(g: &Graph) -> String {
    let text = print(g);
    let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&parsed), text);
    text
}

/// Op variants for one op name, covering optional attributes absent and present.
fn variants(name: &str) -> Vec<Op> {
    let scaling = [
        RopeScaling::None,
        RopeScaling::Linear { factor: 8.0 },
        RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192 },
        RopeScaling::Yarn {
            factor: 4.0,
            original_max_position: 32768,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: 1.1,
        },
    ];
    match name {
        "weight" => vec![
            Op::Weight { name: "model.embed_tokens.weight".into() },
            Op::Weight { name: "quote\" back\\ nl\n tab\t nul\0 esc\u{1b} é 😀 \u{200b}".into() },
            Op::Weight { name: String::new() },
        ],
        "rms_norm" => vec![Op::RmsNorm { eps: 1e-6, offset: 0.0 }, Op::RmsNorm { eps: 1e-5, offset: 1.0 }],
        "layer_norm" => vec![Op::LayerNorm { axis: -1, eps: 1e-5 }, Op::LayerNorm { axis: 2, eps: 0.001 }],
        "rope" => scaling
            .iter()
            .zip([RopeStyle::Half, RopeStyle::Interleaved].iter().cycle())
            .map(|(&scaling, &style)| Op::Rope { style, theta: 500000.0, rotary_dim: 64, scaling })
            .collect(),
        "attention" => vec![
            Op::Attention { layer: None, scale: 0.125, causal: true, window: None, sinks: 0, softcap: None },
            Op::Attention {
                layer: Some(3),
                scale: 0.088388346,
                causal: false,
                window: Some(4096),
                sinks: 4,
                softcap: Some(50.0),
            },
        ],
        "gelu" => vec![Op::Gelu { approximate: GeluApprox::None }, Op::Gelu { approximate: GeluApprox::Tanh }],
        "softmax" => vec![Op::Softmax { axis: -1 }, Op::Softmax { axis: 0 }],
        "logits" => vec![Op::Logits { softcap: None }, Op::Logits { softcap: Some(30.0) }],
        "cast" => [DType::BF16, DType::Bool, DType::Q8C, DType::Q4G { group_size: 128, zero_points: true }]
            .into_iter()
            .chain(DType::STORAGE_ONLY)
            .map(Op::cast)
            .chain([
                Op::Cast { to: DType::LowBit(LowBitType::F8E5M2), saturate: Some(false), round_mode: None },
                Op::Cast {
                    to: DType::LowBit(LowBitType::F8E8M0),
                    saturate: Some(true),
                    round_mode: Some(E8m0Rounding::Down),
                },
            ])
            .collect(),
        "argmax" => vec![Op::ArgMax { axis: -1, keepdims: false }],
        "reshape" => vec![Op::Reshape { allowzero: true }],
        "transpose" => vec![Op::Transpose { perm: vec![0, 2, 1, 3] }, Op::Transpose { perm: vec![] }],
        "squeeze" => vec![Op::Squeeze { axes: vec![-1] }],
        "unsqueeze" => vec![Op::Unsqueeze { axes: vec![0, 3] }],
        "concat" => vec![Op::Concat { axis: -2 }],
        "split" => vec![
            Op::Split { axis: -1, sizes: vec![2, 2] },
            Op::Split { axis: 0, sizes: vec![1] },
            Op::Split { axis: 1, sizes: vec![] },
        ],
        "gather" => vec![Op::Gather { axis: 1 }],
        "cumsum" => vec![Op::CumSum { axis: 0, exclusive: true, reverse: false }],
        "einsum" => vec![Op::Einsum { equation: "bij,bjk->bik".into() }],
        "resize" => vec![Op::Resize {
            mode: kiln_ir::ResizeMode::Cubic,
            coord: kiln_ir::ResizeCoord::AlignCorners,
            nearest: kiln_ir::NearestRounding::Ceil,
            cubic_a: -0.5,
            exclude_outside: true,
            scales: vec![1.0, 2.5],
            sizes: vec![3, 10],
        }],
        "cumprod" => vec![Op::CumProd { axis: -1, exclusive: false, reverse: true }],
        "conv" => vec![Op::Conv { strides: vec![2, 1], pads: vec![1, 0, 1, 0], dilations: vec![1, 2], group: 2 }],
        "pool" => vec![Op::Pool {
            kind: kiln_ir::PoolKind::Avg,
            kernel: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![],
            ceil_mode: true,
            count_include_pad: true,
            p: 2,
        }],
        "shape" => vec![Op::Shape { start: 0, end: None }, Op::Shape { start: -2, end: Some(-1) }],
        "constant_of_shape" => vec![
            Op::ConstantOfShape { value: 0.0, dtype: DType::F32 },
            Op::ConstantOfShape { value: f64::NEG_INFINITY, dtype: DType::F16 },
        ],
        "trilu" => vec![Op::Trilu { upper: false }],
        "constant" => constants(),
        n if ReduceKind::from_name(n).is_some() => vec![
            Op::Reduce { kind: ReduceKind::from_name(n).unwrap(), axes: vec![-1], keepdims: true },
            Op::Reduce { kind: ReduceKind::from_name(n).unwrap(), axes: vec![], keepdims: false },
        ],
        // Ops without attributes, or whose attributes all have defaults.
        n => vec![Op::from_parts(n, BTreeMap::new()).unwrap_or_else(|e| panic!("no sample for `{n}`: {e}"))],
    }
}

fn constants() -> Vec<Op> {
    let t = |shape: Vec<usize>, data| Op::Constant { value: Tensor::new(shape, data).unwrap() };
    vec![
        Op::Constant { value: Tensor::scalar_f32(1.5) },
        Op::Constant { value: Tensor::scalar_i64(-7) },
        t(vec![6], TensorData::F32(vec![-0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-45, f32::MAX, 0.1])),
        t(vec![2, 2], TensorData::F64(vec![-0.0, 1e300, 5e-324, 1.0 / 3.0])),
        t(vec![3], TensorData::F16(vec![f16::from_f32(0.1), f16::MIN_POSITIVE_SUBNORMAL, f16::MAX])),
        t(vec![2], TensorData::BF16(vec![bf16::from_f32(-2.71875), bf16::NEG_INFINITY])),
        t(vec![0, 3], TensorData::I32(vec![])),
        t(vec![2], TensorData::I64(vec![i64::MIN, i64::MAX])),
        t(vec![3], TensorData::U8(vec![0, 128, 255])),
        t(vec![2], TensorData::U16(vec![0, u16::MAX])),
        t(vec![2], TensorData::U32(vec![7, u32::MAX])),
        t(vec![3], TensorData::U64(vec![0, (1 << 63) + 5, u64::MAX])),
        t(vec![2], TensorData::I8(vec![-128, 127])),
        t(vec![1], TensorData::I16(vec![-300])),
        t(vec![2, 1], TensorData::Bool(vec![true, false])),
        t(vec![], TensorData::Bool(vec![true])),
        t(vec![4], TensorData::LowBit(LowBitType::F8E4M3FN, vec![0x7e, 0x80, 0x01, 0xaa])),
        t(vec![2], TensorData::LowBit(LowBitType::F8E5M2, vec![0x7c, 0xfb])),
        t(vec![2], TensorData::LowBit(LowBitType::F8E8M0, vec![0, 254])),
        t(vec![3], TensorData::LowBit(LowBitType::F4E2M1, vec![0x7, 0x9, 0x8])),
        t(vec![3], TensorData::LowBit(LowBitType::I4, vec![0x8, 0x7, 0xf])),
        t(vec![2], TensorData::LowBit(LowBitType::U2, vec![0, 3])),
        t(vec![3], TensorData::Str(vec![String::new(), "a \"quoted\" word".into(), "π\n".into()])),
    ]
}

/// A graph with one node per op variant, operands taken from the inputs and types chosen freely (the
/// text form does no type checking).
fn every_op_graph() -> Graph {
    let mut g = Graph::new("every_op");
    let inputs: Vec<ValueId> = ["f32[batch, seq, 4, 8]", "i64[batch, seq]", "bf16[]", "q4g32z[16, 64]", "bool[?, 0]"]
        .iter()
        .map(|t| g.add_input(ty(t)))
        .collect();
    for name in Op::all_names() {
        for op in variants(name) {
            let (min, max) = op.input_arity();
            let arity = if max > 5 { 3 } else { max.max(min) };
            let operands = (0..arity).map(|i| inputs[i % inputs.len()]).collect();
            let types = match &op {
                Op::Constant { value } => vec![value.ty()],
                _ => (0..op.num_outputs()).map(|i| ty(["f32[batch, seq, 4, 8]", "f16[2, ?]"][i % 2])).collect(),
            };
            g.add_node(op, operands, types);
        }
    }
    let last = ValueId(g.num_values() as u32 - 1);
    g.set_outputs(vec![last, inputs[0], last]);
    g
}

#[test]
fn every_op_round_trips() {
    let g = every_op_graph();
    let text = round_trip(&g);
    // The graph is built densely and holds no NaN, so the parsed graph equals it exactly.
    assert_eq!(parse(&text).unwrap(), g);
    let printed_ops: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(_, rest)| rest).or(Some(l.trim())))
        .filter_map(|rest| rest.split(['(', ' ']).next())
        .collect();
    for name in Op::all_names() {
        assert!(printed_ops.contains(name), "op `{name}` is not covered:\n{text}");
    }
}

#[test]
fn nan_constants_and_attributes_print_as_nan() {
    let mut g = Graph::new("nan");
    let c = g.add_node(
        Op::Constant { value: Tensor::f32(vec![2], vec![f32::NAN, -f32::NAN]).unwrap() },
        vec![],
        vec![ty("f32[2]")],
    );
    let h = g.add_node(
        Op::Constant { value: Tensor::new(vec![], TensorData::F16(vec![f16::NAN])).unwrap() },
        vec![],
        vec![ty("f16[]")],
    );
    let r = g.add_node(Op::ConstantOfShape { value: f64::NAN, dtype: DType::F64 }, c.clone(), vec![ty("f64[?]")]);
    g.set_outputs(vec![c[0], h[0], r[0]]);
    let text = round_trip(&g);
    assert!(text.contains("%0 = constant {value = [nan, nan]} : f32[2]"), "{text}");
    assert!(text.contains("%1 = constant {value = nan} : f16[]"), "{text}");
    assert!(text.contains("{value = nan, dtype = f64}"), "{text}");
    let parsed = parse(&text).unwrap();
    let Op::Constant { value } = &parsed.node(parsed.order()[0]).op else { panic!("not a constant") };
    assert!(value.to_f32_vec().iter().all(|x| x.is_nan()));
}

#[test]
fn canonical_text_of_the_spec_example() {
    let src = r#"
// comments run to the end of the line
graph @tiny(%0: i64[1, seq], %1: i64[1, seq]) {
  %2 = weight {name = "embed.weight"} : f32[32, 16]
  %3 = embedding(%2, %0) : f32[1, seq, 16]
  %4 = constant {value = [0, 0, 4, 4]} : i64[4]
  %5 = reshape(%3, %4) : f32[1, seq, 4, 4]
  %6, %7 = split(%5) {axis = -1, sizes = [2, 2]} : f32[1, seq, 4, 2], f32[1, seq, 4, 2]
  %8 = reduce_sum(%6) {axes = [-1], keepdims = true} : f32[1, seq, 4, 1]
  %9 = constant {value = 1.5} : f32[]
  return %6, %8
}
"#;
    let g = parse(src).unwrap();
    // `reshape` gains its defaulted attribute; everything else prints as written.
    let expected = r#"graph @tiny(%0: i64[1, seq], %1: i64[1, seq]) {
  %2 = weight {name = "embed.weight"} : f32[32, 16]
  %3 = embedding(%2, %0) : f32[1, seq, 16]
  %4 = constant {value = [0, 0, 4, 4]} : i64[4]
  %5 = reshape(%3, %4) {allowzero = false} : f32[1, seq, 4, 4]
  %6, %7 = split(%5) {axis = -1, sizes = [2, 2]} : f32[1, seq, 4, 2], f32[1, seq, 4, 2]
  %8 = reduce_sum(%6) {axes = [-1], keepdims = true} : f32[1, seq, 4, 1]
  %9 = constant {value = 1.5} : f32[]
  return %6, %8
}
"#;
    assert_eq!(print(&g), expected);
    assert_eq!(g.name, "tiny");
    assert_eq!(g.inputs().len(), 2);
    assert_eq!(g.order().len(), 7);
    let split = g.node(g.order()[4]);
    assert_eq!(split.op, Op::Split { axis: -1, sizes: vec![2, 2] });
    assert_eq!(split.inputs, g.node(g.order()[3]).outputs);
    assert_eq!(g.outputs(), &[split.outputs[0], g.node(g.order()[5]).outputs[0]]);
    assert_eq!(g.constant_value(ValueId(4)).unwrap().to_i64_vec(), vec![0, 0, 4, 4]);
}

#[test]
fn parser_renumbers_any_names_densely() {
    let src = "graph @g(%100: f32[2], %7: f32[2]) {
      %42 = add(%7, %100) : f32[2]
      %0 = neg(%42) : f32[2]
      return %0, %100
    }";
    let expected = "graph @g(%0: f32[2], %1: f32[2]) {
  %2 = add(%1, %0) : f32[2]
  %3 = neg(%2) : f32[2]
  return %3, %0
}
";
    let g = parse(src).unwrap();
    assert_eq!(print(&g), expected);
    assert_eq!(g.node(g.order()[0]).op, Op::Binary(BinaryOp::Add));
}

#[test]
fn names_dims_and_shapes_print_canonically() {
    for (name, printed) in [
        ("tiny", "@tiny("),
        ("_x9", "@_x9("),
        ("", "@\"\"("),
        ("9lives", "@\"9lives\"("),
        ("meta-llama/Llama-3.2-1B", "@\"meta-llama/Llama-3.2-1B\"("),
        ("a\"b\\c\nd", "@\"a\\\"b\\\\c\\nd\"("),
        ("ünï", "@\"ünï\"("),
    ] {
        let mut g = Graph::new(name);
        g.add_input(ty("f32[]"));
        g.add_input(ty("q4g128[0, ?, seq, 18446744073709551615]"));
        g.add_input(ty("q8c[1]"));
        let text = round_trip(&g);
        assert!(text.starts_with(&format!("graph {printed}")), "{text}");
        assert_eq!(parse(&text).unwrap().name, name);
        assert!(
            text.contains("(%0: f32[], %1: q4g128[0, ?, seq, 18446744073709551615], %2: q8c[1]) {\n  return\n}\n"),
            "{text}"
        );
    }
}

#[test]
fn node_forms_print_exactly() {
    let mut g = Graph::new("forms");
    let x = g.add_input(ty("f32[2, 3]"));
    // No operands, no attributes: neither parentheses nor braces.
    let a = g.add_node(Op::Range {}, vec![], vec![ty("i64[?]")]);
    // No results (a split into zero pieces): no `=` and no types.
    g.add_node(Op::Split { axis: 0, sizes: vec![] }, vec![x], vec![]);
    let b = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![ty("f32[2, 3]")]);
    let s = g.add_node(Op::Split { axis: 1, sizes: vec![1, 2] }, vec![b[0]], vec![ty("f32[2, 1]"), ty("f32[2, 2]")]);
    g.set_outputs(vec![s[1], a[0]]);
    let expected = r#"graph @forms(%0: f32[2, 3]) {
  %1 = range : i64[?]
  split(%0) {axis = 0, sizes = []}
  %2 = exp(%0) : f32[2, 3]
  %3, %4 = split(%2) {axis = 1, sizes = [1, 2]} : f32[2, 1], f32[2, 2]
  return %4, %1
}
"#;
    assert_eq!(round_trip(&g), expected);
    assert_eq!(parse(expected).unwrap(), g);
    // Explicit empty operand and attribute lists are accepted and print away.
    let loose = "graph @forms(%0: f32[2, 3]) { %1 = range() {} : i64[?] split(%0) {axis = 0, sizes = []} \
                 %2 = exp(%0) : f32[2, 3] %3, %4 = split(%2) {axis = 1, sizes = [1, 2]} : f32[2, 1], f32[2, 2] \
                 return %4, %1 }";
    assert_eq!(print(&parse(loose).unwrap()), expected);
}

#[test]
fn literals_print_exactly() {
    let mut g = Graph::new("lits");
    let consts = [
        (Tensor::f32(vec![4], vec![-0.0, 1e-5, 10000.0, f32::NEG_INFINITY]).unwrap(), "[-0.0, 1e-5, 10000.0, -inf]"),
        (Tensor::new(vec![2], TensorData::F16(vec![f16::from_f32(0.1), f16::INFINITY])).unwrap(), "[0.099975586, inf]"),
        (Tensor::new(vec![1], TensorData::BF16(vec![bf16::from_f32(0.1)])).unwrap(), "[0.100097656]"),
        (Tensor::new(vec![0], TensorData::F32(vec![])).unwrap(), "[]"),
        (Tensor::scalar_i64(-3), "-3"),
        (Tensor::new(vec![2], TensorData::Bool(vec![false, true])).unwrap(), "[false, true]"),
        (
            Tensor::new(vec![3], TensorData::LowBit(LowBitType::F8E4M3FN, vec![0x7e, 0xaa, 0x80])).unwrap(),
            "[448.0, -0.3125, -0.0]",
        ),
        (Tensor::new(vec![2], TensorData::LowBit(LowBitType::I4, vec![0x8, 0x7])).unwrap(), "[-8, 7]"),
        (Tensor::new(vec![2], TensorData::Str(vec!["x".into(), "y z".into()])).unwrap(), "[\"x\", \"y z\"]"),
    ];
    for (t, _) in &consts {
        g.add_node(Op::Constant { value: t.clone() }, vec![], vec![t.ty()]);
    }
    g.add_node(
        Op::Rope {
            style: RopeStyle::Interleaved,
            theta: 1e6,
            rotary_dim: 32,
            scaling: RopeScaling::Linear { factor: 2.0 },
        },
        vec![],
        vec![ty("f32[]")],
    );
    let text = round_trip(&g);
    for (i, (t, lit)) in consts.iter().enumerate() {
        let line = format!("  %{i} = constant {{value = {lit}}} : {}\n", t.ty());
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("rope {style = interleaved, theta = 1000000.0, rotary_dim = 32, scaling = linear(2.0)}"));
    assert_eq!(parse(&text).unwrap(), g);
}

#[test]
fn print_node_uses_the_graph_numbering_and_marks_dangling_operands() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[4]"));
    let a = g.add_node(Op::Unary(UnaryOp::Neg), vec![x], vec![ty("f32[4]")]);
    let b = g.add_node(Op::Binary(BinaryOp::Mul), vec![a[0], x], vec![ty("f32[4]")]);
    let c = g.add_node(Op::Softmax { axis: -1 }, vec![b[0], ValueId(99)], vec![ty("f32[4]")]);
    g.set_outputs(vec![c[0]]);
    let dead = g.order()[0];
    let (mul, softmax) = (g.order()[1], g.order()[2]);
    assert_eq!(print_node(&g, mul), "%2 = mul(%1, %0) : f32[4]");
    g.remove_nodes(&HashSet::from([dead]));
    // Numbering is dense over what is live; the removed node's result has no number any more.
    assert_eq!(print_node(&g, mul), "%1 = mul(%?1, %0) : f32[4]");
    assert_eq!(print_node(&g, softmax), "%2 = softmax(%1, %?99) {axis = -1} : f32[4]");
    let numbering = Numbering::new(&g);
    assert_eq!(numbering.node_line(&g, dead), "%?1 = neg(%0) : f32[4]");
    assert_eq!(numbering.number(x), Some(0));
    assert_eq!(numbering.number(a[0]), None);
    let text = print(&g);
    assert!(text.contains("  %1 = mul(%?1, %0) : f32[4]\n"), "{text}");
    // The dangling marker does not parse back: the text of a broken graph must not pass as valid.
    let err = parse(&text).unwrap_err();
    assert!(err.message.contains("no node defines"), "{err}");
}

#[test]
fn forward_references_parse_into_the_graph_as_written() {
    let src = "graph @fwd(%0: f32[2]) {
  %1 = neg(%2) : f32[2]
  %2 = exp(%0) : f32[2]
  return %1
}
";
    let g = parse(src).unwrap();
    let (first, second) = (g.node(g.order()[0]), g.node(g.order()[1]));
    assert_eq!(first.inputs, second.outputs);
    assert_eq!(second.inputs, vec![g.inputs()[0]]);
    assert_eq!(print(&g), src);
}

#[test]
fn graph_with_no_return_values_and_a_self_use() {
    let src = "graph @loop() {\n  %0 = neg(%0) : f32[]\n  return\n}\n";
    let g = parse(src).unwrap();
    assert!(g.outputs().is_empty());
    let n = g.node(g.order()[0]);
    assert_eq!(n.inputs, n.outputs);
    assert_eq!(print(&g), src);
}
