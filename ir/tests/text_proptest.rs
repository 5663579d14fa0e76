//! Property tests of the text form: random graphs round-trip through print and parse, and the parser
//! answers Ok or Err (never panics) on token soup and on mutated valid texts.

use half::{bf16, f16};
use kiln_ir::text::{parse, print};
use kiln_ir::{
    BinaryOp, CompareOp, DType, Dim, GeluApprox, Graph, Op, ReduceKind, RopeScaling, RopeStyle, Shape, Tensor,
    TensorData, TensorType, UnaryOp, ValueId,
};
use proptest::prelude::*;
use proptest::strategy::Union;

/// Strings rich in what the quoting must get right: quotes, backslashes, control chars, combining marks.
fn arb_string() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '"', '\\', '\n', '\r', '\t', '\0', '\'', '\u{1b}', '\u{7f}', '\u{200b}', '\u{301}', '\u{feff}', 'é', '😀', ' ',
        '{', '}', '%', '/',
    ]);
    let ch = prop_oneof![2 => special, 1 => any::<char>(), 2 => prop::char::range('a', 'z')];
    prop::collection::vec(ch, 0..12).prop_map(|cs| cs.into_iter().collect())
}

fn arb_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![
        4 => prop::sample::select(DType::PLAIN.to_vec()),
        1 => Just(DType::Q8C),
        1 => (1u32..200, any::<bool>()).prop_map(|(g, zero_points)| DType::Q4G { group_size: g * 2, zero_points }),
    ]
}

fn arb_dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        3 => (0u64..5).prop_map(Dim::Static),
        1 => any::<u64>().prop_map(Dim::Static),
        2 => prop::sample::select(vec!["batch", "seq", "past", "_d0", "inf", "graph"]).prop_map(Dim::sym),
        1 => Just(Dim::Unknown),
    ]
}

fn arb_type() -> impl Strategy<Value = TensorType> {
    (arb_dtype(), prop::collection::vec(arb_dim(), 0..4)).prop_map(|(d, dims)| TensorType::new(d, Shape(dims)))
}

fn arb_f32() -> impl Strategy<Value = f32> {
    prop_oneof![prop::num::f32::ANY, any::<u32>().prop_map(f32::from_bits), Just(-0.0f32)]
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![prop::num::f64::ANY, any::<u64>().prop_map(f64::from_bits), Just(-0.0f64)]
}

fn arb_axes() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(prop_oneof![-4i64..4, any::<i64>()], 0..4)
}

fn arb_scaling() -> impl Strategy<Value = RopeScaling> {
    prop_oneof![
        Just(RopeScaling::None),
        arb_f64().prop_map(|factor| RopeScaling::Linear { factor }),
        (arb_f64(), arb_f64(), arb_f64(), any::<u64>()).prop_map(|(a, b, c, d)| RopeScaling::Llama3 {
            factor: a,
            low_freq_factor: b,
            high_freq_factor: c,
            original_max_position: d
        }),
        (arb_f64(), any::<u64>(), arb_f64(), arb_f64(), arb_f64()).prop_map(|(a, b, c, d, e)| RopeScaling::Yarn {
            factor: a,
            original_max_position: b,
            beta_fast: c,
            beta_slow: d,
            attention_factor: e
        }),
    ]
}

fn arb_constant() -> impl Strategy<Value = Tensor> {
    let shape = prop::collection::vec(0usize..4, 0..3);
    (prop::sample::select(DType::PLAIN.to_vec()), shape).prop_flat_map(|(dtype, shape)| {
        let n: usize = shape.iter().product();
        let data: BoxedStrategy<TensorData> = match dtype {
            DType::F32 => prop::collection::vec(arb_f32(), n).prop_map(TensorData::F32).boxed(),
            DType::F64 => prop::collection::vec(arb_f64(), n).prop_map(TensorData::F64).boxed(),
            DType::F16 => {
                prop::collection::vec(any::<u16>().prop_map(f16::from_bits), n).prop_map(TensorData::F16).boxed()
            }
            DType::BF16 => {
                prop::collection::vec(any::<u16>().prop_map(bf16::from_bits), n).prop_map(TensorData::BF16).boxed()
            }
            DType::I64 => prop::collection::vec(any::<i64>(), n).prop_map(TensorData::I64).boxed(),
            DType::I32 => prop::collection::vec(any::<i32>(), n).prop_map(TensorData::I32).boxed(),
            DType::I16 => prop::collection::vec(any::<i16>(), n).prop_map(TensorData::I16).boxed(),
            DType::I8 => prop::collection::vec(any::<i8>(), n).prop_map(TensorData::I8).boxed(),
            DType::U8 => prop::collection::vec(any::<u8>(), n).prop_map(TensorData::U8).boxed(),
            DType::U16 => prop::collection::vec(any::<u16>(), n).prop_map(TensorData::U16).boxed(),
            DType::U32 => prop::collection::vec(any::<u32>(), n).prop_map(TensorData::U32).boxed(),
            DType::U64 => prop::collection::vec(any::<u64>(), n).prop_map(TensorData::U64).boxed(),
            _ => prop::collection::vec(any::<bool>(), n).prop_map(TensorData::Bool).boxed(),
        };
        data.prop_map(move |d| Tensor::new(shape.clone(), d).expect("data generated for the shape"))
    })
}

/// Every op kind with random attributes, optional ones both absent and present.
fn arb_op() -> impl Strategy<Value = Op> {
    let opt_u32 = || prop::option::of(any::<u32>());
    let arms: Vec<BoxedStrategy<Op>> = vec![
        arb_string().prop_map(|name| Op::Weight { name }).boxed(),
        Just(Op::Embedding {}).boxed(),
        (arb_f32(), arb_f32()).prop_map(|(eps, offset)| Op::RmsNorm { eps, offset }).boxed(),
        (any::<i64>(), arb_f32()).prop_map(|(axis, eps)| Op::LayerNorm { axis, eps }).boxed(),
        Just(Op::Linear {}).boxed(),
        (prop::sample::select(RopeStyle::ALL.to_vec()), arb_f64(), any::<u32>(), arb_scaling())
            .prop_map(|(style, theta, rotary_dim, scaling)| Op::Rope { style, theta, rotary_dim, scaling })
            .boxed(),
        (opt_u32(), arb_f32(), any::<bool>(), opt_u32(), any::<u32>(), prop::option::of(arb_f32()))
            .prop_map(|(layer, scale, causal, window, sinks, softcap)| Op::Attention {
                layer,
                scale,
                causal,
                window,
                sinks,
                softcap,
            })
            .boxed(),
        Just(Op::Silu {}).boxed(),
        prop::sample::select(GeluApprox::ALL.to_vec()).prop_map(|approximate| Op::Gelu { approximate }).boxed(),
        Just(Op::Swiglu {}).boxed(),
        any::<i64>().prop_map(|axis| Op::Softmax { axis }).boxed(),
        prop::option::of(arb_f32()).prop_map(|softcap| Op::Logits { softcap }).boxed(),
        Just(Op::MatMul {}).boxed(),
        Just(Op::Where {}).boxed(),
        arb_dtype().prop_map(Op::cast).boxed(),
        (any::<i64>(), any::<bool>()).prop_map(|(axis, keepdims)| Op::ArgMax { axis, keepdims }).boxed(),
        any::<bool>().prop_map(|allowzero| Op::Reshape { allowzero }).boxed(),
        arb_axes().prop_map(|perm| Op::Transpose { perm }).boxed(),
        arb_axes().prop_map(|axes| Op::Squeeze { axes }).boxed(),
        arb_axes().prop_map(|axes| Op::Unsqueeze { axes }).boxed(),
        any::<i64>().prop_map(|axis| Op::Concat { axis }).boxed(),
        (any::<i64>(), arb_axes()).prop_map(|(axis, sizes)| Op::Split { axis, sizes }).boxed(),
        Just(Op::Slice {}).boxed(),
        any::<i64>().prop_map(|axis| Op::Gather { axis }).boxed(),
        Just(Op::Expand {}).boxed(),
        Just(Op::Range {}).boxed(),
        (any::<i64>(), any::<bool>(), any::<bool>())
            .prop_map(|(axis, exclusive, reverse)| Op::CumSum { axis, exclusive, reverse })
            .boxed(),
        (any::<i64>(), prop::option::of(any::<i64>())).prop_map(|(start, end)| Op::Shape { start, end }).boxed(),
        (arb_f64(), arb_dtype()).prop_map(|(value, dtype)| Op::ConstantOfShape { value, dtype }).boxed(),
        Just(Op::Tile {}).boxed(),
        any::<bool>().prop_map(|upper| Op::Trilu { upper }).boxed(),
        arb_constant().prop_map(|value| Op::Constant { value }).boxed(),
        prop::sample::select(UnaryOp::ALL.to_vec()).prop_map(Op::Unary).boxed(),
        prop::sample::select(BinaryOp::ALL.to_vec()).prop_map(Op::Binary).boxed(),
        prop::sample::select(CompareOp::ALL.to_vec()).prop_map(Op::Compare).boxed(),
        (prop::sample::select(ReduceKind::ALL.to_vec()), arb_axes(), any::<bool>())
            .prop_map(|(kind, axes, keepdims)| Op::Reduce { kind, axes, keepdims })
            .boxed(),
    ];
    Union::new(arms)
}

/// One node: its op, operand picks (reduced modulo the number of values, so forward references and
/// self-uses happen too) and result types (ignored for constants, which take their tensor's type).
fn arb_node() -> impl Strategy<Value = (Op, Vec<usize>, Vec<TensorType>)> {
    (arb_op(), prop::collection::vec(any::<usize>(), 0..5), prop::collection::vec(arb_type(), 0..3))
}

fn arb_graph() -> impl Strategy<Value = Graph> {
    let name = prop_oneof!["[a-zA-Z_][a-zA-Z0-9_]{0,8}", arb_string()];
    (
        name,
        prop::collection::vec(arb_type(), 0..4),
        prop::collection::vec(arb_node(), 0..8),
        prop::collection::vec(any::<usize>(), 0..4),
    )
        .prop_map(|(name, inputs, nodes, outputs)| {
            let mut g = Graph::new(name);
            for ty in inputs {
                g.add_input(ty);
            }
            let mut operands = Vec::new();
            for (op, picks, types) in nodes {
                let types = match &op {
                    Op::Constant { value } => vec![value.ty()],
                    _ => types,
                };
                g.add_node(op, Vec::new(), types);
                operands.push(picks);
            }
            let n = g.num_values();
            let pick = |p: &usize| ValueId((p % n) as u32);
            if n > 0 {
                for (node, picks) in g.order().to_vec().into_iter().zip(operands) {
                    g.node_mut(node).inputs = picks.iter().map(pick).collect();
                }
                g.set_outputs(outputs.iter().map(pick).collect());
            }
            g
        })
}

/// Parses `src`; when it parses, its printed text must be a fixed point.
fn parse_and_check_fixed_point(src: &str) -> Result<(), TestCaseError> {
    if let Ok(g) = parse(src) {
        let text = print(&g);
        let again = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(print(&again), text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn random_graphs_round_trip(g in arb_graph()) {
        let text = print(&g);
        let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(print(&parsed), text.clone());
        // The printer's numbering is the one `Graph::compacted` gives.
        prop_assert_eq!(print(&g.compacted()), text);
        prop_assert_eq!(parsed.inputs().len(), g.inputs().len());
        prop_assert_eq!(parsed.order().len(), g.order().len());
        prop_assert_eq!(parsed.outputs().len(), g.outputs().len());
        prop_assert_eq!(&parsed.name, &g.name);
        // Structurally the same graph (Debug compares NaN as equal and tells -0.0 from 0.0).
        prop_assert_eq!(format!("{parsed:?}"), format!("{g:?}"));
    }
}

const VOCABULARY: &[&str] = &[
    "graph",
    "@",
    "g",
    "\"n a\"",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "=",
    "%0",
    "%1",
    "%2",
    "%3",
    "%007",
    "%99999999999999999999999",
    "%?",
    "%",
    "f32",
    "i64",
    "bool",
    "q4g32z",
    "q4g3",
    "f8",
    "?",
    "-",
    "inf",
    "nan",
    "true",
    "return",
    "\"s\\n\\u{1F600}\"",
    "\"\\q\"",
    "\"unterminated",
    "1e-5",
    "-1",
    "0",
    "3",
    "2.5",
    "18446744073709551616",
    "split",
    "constant",
    "value",
    "axis",
    "sizes",
    "neg",
    "add",
    "rope",
    "scaling",
    "llama3",
    "yarn",
    "none",
    "weight",
    "name",
    "softmax",
    "rms_norm",
    "eps",
    "seq",
    "//c\n",
    "\n",
    "é",
    "$",
    "\\",
];

/// Whole statements, so that many soups parse and exercise forward references, duplicates and odd forms.
const STATEMENTS: &[&str] = &[
    "%1 = neg(%0) : f32[2]\n",
    "%2 = add(%1, %0) : f32[2]\n",
    "%3, %4 = split(%2) {axis = 0, sizes = [1, 1]} : f32[1], f32[1]\n",
    "split(%0) {axis = 0, sizes = []}\n",
    "%5 = range : i64[?]\n",
    "%6 = constant {value = [1.5, -inf]} : bf16[2]\n",
    "%7 = weight {name = \"w\\t\"} : q4g32z[4, 64]\n",
    "%8 = rope(%1, %5) {theta = 1e4, rotary_dim = 2, scaling = yarn(4.0, 4096, 32.0, 1.0, 1.0)} : f32[2]\n",
];

fn arb_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(STATEMENTS).prop_map(str::to_string),
        8 => prop::sample::select(VOCABULARY).prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ]
}

fn arb_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((arb_token(), prop::sample::select(vec!["", " ", "\n"])), 0..60)
        .prop_map(|toks| toks.into_iter().flat_map(|(t, sep)| [t, sep.to_string()]).collect())
}

/// A valid text to mutate: header, nodes of several shapes, constants, strings and a return.
const SEED: &str = r#"graph @seed(%0: i64[1, seq], %1: f32[?, 0]) {
  %2 = weight {name = "embed\"w\n"} : f32[32, 16]
  %3 = embedding(%2, %0) : f32[1, seq, 16]
  %4 = constant {value = [0, 0, 4, 4]} : i64[4]
  %5 = reshape(%3, %4) {allowzero = false} : f32[1, seq, 4, 4]
  %6, %7 = split(%5) {axis = -1, sizes = [2, 2]} : f32[1, seq, 4, 2], f32[1, seq, 4, 2]
  %8 = rope(%6, %0) {style = half, theta = 500000.0, rotary_dim = 2, scaling = llama3(8.0, 1.0, 4.0, 8192)} : f32[1, seq, 4, 2]
  %9 = constant {value = [-0.0, inf, -inf, nan]} : f16[2, 2]
  %10 = range : i64[?]
  return %8, %9
}
"#;

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Duplicate { at: usize, len: usize },
    Swap { a: usize, b: usize },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), arb_token()).prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
    ]
}

fn mutate(src: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for m in mutations {
        let n = chars.len() + 1;
        match m {
            Mutation::Delete { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                chars.drain(at.min(end)..end);
            }
            Mutation::Insert { at, text } => {
                let at = at % n;
                chars.splice(at..at, text.chars());
            }
            Mutation::Duplicate { at, len } => {
                let at = at % n;
                let end = (at + len).min(chars.len());
                let piece: Vec<char> = chars[at.min(end)..end].to_vec();
                chars.splice(end..end, piece);
            }
            Mutation::Swap { a, b } => {
                if !chars.is_empty() {
                    let (a, b) = (a % chars.len(), b % chars.len());
                    chars.swap(a, b);
                }
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn token_soup_never_panics(soup in arb_soup()) {
        parse_and_check_fixed_point(&soup)?;
        parse_and_check_fixed_point(&format!("graph @g(%0: f32[2]) {{\n{soup}\n  return %0\n}}"))?;
    }

    #[test]
    fn statement_soup_parses_to_fixed_points(stmts in prop::collection::vec(prop::sample::select(STATEMENTS), 0..10)) {
        parse_and_check_fixed_point(&format!("graph @g(%0: f32[2]) {{\n{}  return %0\n}}", stmts.concat()))?;
    }

    #[test]
    fn mutated_texts_never_panic(mutations in prop::collection::vec(arb_mutation(), 1..4)) {
        parse_and_check_fixed_point(&mutate(SEED, &mutations))?;
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        parse_and_check_fixed_point(&s)?;
    }
}

#[test]
fn the_mutation_seed_is_valid_and_canonical() {
    let g = parse(SEED).unwrap();
    assert_eq!(print(&g), SEED);
}
