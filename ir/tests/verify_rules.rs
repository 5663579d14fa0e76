//! The verifier: one test per rule, each graph breaking exactly that rule, checking the message and
//! that `op_text` shows the offending op; plus multi-error reporting and valid graphs.

mod common;

use std::collections::HashSet;

use common::ty;
use kiln_ir::{BinaryOp, Graph, NodeId, Op, ReduceKind, Tensor, ValueId, VerifyError, WeightStore, verify};

fn add() -> Op {
    Op::Binary(BinaryOp::Add)
}

/// The errors of a graph that must fail verification.
fn errors(g: &Graph, store: Option<&WeightStore>) -> Vec<VerifyError> {
    match verify(g, store) {
        Ok(()) => panic!("graph verified but should not have"),
        Err(e) => e.errors,
    }
}

/// Asserts exactly one error, whose message contains `needle` and whose op_text contains `op_text`.
#[track_caller]
fn single(g: &Graph, store: Option<&WeightStore>, needle: &str, op_text: &str) -> VerifyError {
    let errs = errors(g, store);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let e = errs.into_iter().next().unwrap();
    assert!(e.message.contains(needle), "message {:?} lacks {needle:?}", e.message);
    assert!(e.op_text.contains(op_text), "op_text {:?} lacks {op_text:?}", e.op_text);
    e
}

/// The graph of the common brief, built with inferred types (weights declared).
fn tiny() -> (Graph, WeightStore) {
    let mut g = Graph::new("tiny");
    let ids = g.add_input(ty("i64[1, seq]"));
    let _pos = g.add_input(ty("i64[1, seq]"));
    let table = g.add_node(Op::Weight { name: "embed.weight".into() }, vec![], vec![ty("f32[32, 16]")])[0];
    let x = g.push(Op::Embedding {}, &[table, ids]).unwrap();
    let shape = g.push(Op::Constant { value: Tensor::i64(vec![4], vec![0, 0, 4, 4]).unwrap() }, &[]).unwrap();
    let r = g.push(Op::Reshape { allowzero: false }, &[x, shape]).unwrap();
    let parts = g.push_multi(Op::Split { axis: -1, sizes: vec![2, 2] }, &[r]).unwrap();
    let sum = g.push(Op::Reduce { kind: ReduceKind::Sum, axes: vec![-1], keepdims: true }, &[parts[0]]).unwrap();
    g.push(Op::Constant { value: Tensor::scalar_f32(1.5) }, &[]).unwrap();
    g.set_outputs(vec![parts[0], sum]);
    let mut store = WeightStore::new();
    store.insert_tensor("embed.weight", &Tensor::f32(vec![32, 16], vec![0.5; 512]).unwrap()).unwrap();
    (g, store)
}

#[test]
fn a_valid_graph_verifies_with_and_without_a_store() {
    let (g, store) = tiny();
    assert_eq!(g.value_type(ValueId(3)).to_string(), "f32[1, seq, 16]");
    assert_eq!(g.value_type(ValueId(5)).to_string(), "f32[1, seq, 4, 4]");
    assert_eq!(g.value_type(ValueId(8)).to_string(), "f32[1, seq, 4, 1]");
    verify(&g, None).unwrap();
    verify(&g, Some(&store)).unwrap();
}

#[test]
fn declared_unknown_dims_accept_any_inferred_dim() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2, s]"));
    let b = g.add_node(add(), vec![a, a], vec![ty("f32[?, ?]")])[0];
    // And an inferred `?` accepts any declared dim.
    let shape = g.add_input(ty("i64[2]"));
    let c = g.add_node(Op::Reshape { allowzero: false }, vec![b, shape], vec![ty("f32[s, 2]")])[0];
    g.set_outputs(vec![c, c]); // a value may be returned twice
    verify(&g, None).unwrap();
}

#[test]
fn operand_does_not_exist() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    let b = g.add_node(add(), vec![a, ValueId(99)], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![b]);
    let e = single(&g, None, "operand %?99 does not exist (the graph has 2 values)", "= add(%0, %?99)");
    assert!(e.op_text.contains("f32[2]"), "{}", e.op_text);
}

#[test]
fn operand_used_before_it_is_defined() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    // %1 uses %2, which the next node defines.
    let b = g.add_node(add(), vec![a, ValueId(2)], vec![ty("f32[2]")])[0];
    let c = g.add_node(Op::Silu {}, vec![a], vec![ty("f32[2]")])[0];
    assert_eq!(c, ValueId(2));
    g.set_outputs(vec![b]);
    single(
        &g,
        None,
        "operand %2 is used before it is defined: its `silu` node comes later in program order",
        "add(%0, %2)",
    );
}

#[test]
fn operand_defined_by_the_same_node() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    let b = g.add_node(add(), vec![a, ValueId(1)], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![b]);
    single(&g, None, "operand %1 is a result of this same node", "%1 = add(%0, %1)");
}

#[test]
fn operand_defined_by_a_removed_node() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    let b = g.add_node(Op::Silu {}, vec![a], vec![ty("f32[2]")])[0];
    let c = g.add_node(add(), vec![a, b], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![c]);
    g.remove_nodes(&HashSet::from([NodeId(0)]));
    single(&g, None, "operand %?1 is defined by a `silu` node that is no longer in program order", "add(%0, %?1)");
}

#[test]
fn node_listed_twice_in_program_order() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    let b = g.add_node(Op::Silu {}, vec![a], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![b]);
    g.set_order(vec![NodeId(0), NodeId(0)]);
    single(&g, None, "node `silu` appears more than once in program order", "silu(%0)");
}

#[test]
fn input_count_outside_the_arity() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    let b = g.add_node(add(), vec![a, a, a], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![b]);
    single(&g, None, "add takes 2 inputs but was given 3", "add(%0, %0, %0)");
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2, 4]"));
    let w = g.add_input(ty("f32[3, 4]"));
    let b = g.add_node(Op::Linear {}, vec![a], vec![ty("f32[2, 3]")])[0];
    g.set_outputs(vec![b, w]);
    single(&g, None, "linear takes 2 to 3 inputs but was given 1", "= linear(%0)");
}

#[test]
fn result_count_differs_from_the_op() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[4]"));
    let parts = g.add_node(Op::Split { axis: 0, sizes: vec![2, 2] }, vec![a], vec![ty("f32[2]")]);
    g.set_outputs(parts);
    single(&g, None, "`split` produces 2 results but the node declares 1", "split(%0) {axis = 0, sizes = [2, 2]}");
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[4]"));
    let outs = g.add_node(Op::Silu {}, vec![a], vec![ty("f32[4]"), ty("f32[4]")]);
    g.set_outputs(outs);
    single(&g, None, "`silu` produces 1 result but the node declares 2", "%1, %2 = silu(%0)");
}

#[test]
fn declared_dtype_differs_from_the_inferred_one() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2, 3]"));
    let b =
        g.add_node(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: false }, vec![a], vec![ty("f16[2]")])
            [0];
    g.set_outputs(vec![b]);
    single(
        &g,
        None,
        "result %1 is declared f16[2] but `reduce_sum` gives f32[2]: the dtype should be f32, not f16",
        "reduce_sum(%0)",
    );
}

#[test]
fn declared_rank_differs_from_the_inferred_one() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2, 3]"));
    let b =
        g.add_node(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: true }, vec![a], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![b]);
    single(&g, None, "gives f32[2, 1]: the rank should be 2, not 1", "{axes = [1], keepdims = true}");
}

#[test]
fn declared_dim_differs_from_the_inferred_one() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[b, s, 64]"));
    let w = g.add_input(ty("f32[128, 64]"));
    let y = g.add_node(Op::Linear {}, vec![x, w], vec![ty("f32[b, s, 64]")])[0];
    g.set_outputs(vec![y]);
    single(
        &g,
        None,
        "result %2 is declared f32[b, s, 64] but `linear` gives f32[b, s, 128]: dim 2 should be 128, not 64",
        "linear(%0, %1)",
    );
    // Different symbols are different dims.
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[b, s]"));
    let y = g.add_node(Op::Silu {}, vec![x], vec![ty("f32[b, t]")])[0];
    g.set_outputs(vec![y]);
    single(&g, None, "dim 1 should be s, not t", "silu(%0)");
}

#[test]
fn op_specific_errors_come_from_inference() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[b, s, 576]"));
    let w = g.add_node(Op::Weight { name: "norm".into() }, vec![], vec![ty("f32[512]")])[0];
    let y = g.add_node(Op::RmsNorm { eps: 1e-5, offset: 0.0 }, vec![x, w], vec![ty("f32[b, s, 576]")])[0];
    g.set_outputs(vec![y]);
    single(
        &g,
        None,
        "rms_norm: weight has 512 elements but the normalised dim of x is 576",
        "rms_norm(%0, %1) {eps = 1e-5, offset = 0.0}",
    );
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[2, 3, 4]"));
    let y = g.add_node(Op::Transpose { perm: vec![0, 0, 1] }, vec![x], vec![ty("f32[2, 2, 3]")])[0];
    g.set_outputs(vec![y]);
    single(&g, None, "transpose: perm [0, 0, 1] is not a permutation of 0..3", "transpose(%0) {perm = [0, 0, 1]}");
}

#[test]
fn graph_with_no_outputs() {
    let mut g = Graph::new("empty");
    let a = g.add_input(ty("f32[2]"));
    g.add_node(Op::Silu {}, vec![a], vec![ty("f32[2]")]);
    single(&g, None, "the graph has no outputs", "graph @empty(%0: f32[2])");
}

#[test]
fn graph_output_does_not_exist() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    g.set_outputs(vec![a, ValueId(7)]);
    single(&g, None, "graph output %?7 does not exist (the graph has 1 values)", "return %0, %?7");
}

#[test]
fn graph_output_from_a_removed_node() {
    let mut g = Graph::new("g");
    let a = g.add_input(ty("f32[2]"));
    let b = g.add_node(Op::Silu {}, vec![a], vec![ty("f32[2]")])[0];
    g.set_outputs(vec![b]);
    g.remove_nodes(&HashSet::from([NodeId(0)]));
    single(&g, None, "graph output %?1 is a result of a `silu` node that is no longer in program order", "return %?1");
}

#[test]
fn weight_type_must_be_static() {
    let mut g = Graph::new("g");
    let w = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![ty("f32[n, 4]")])[0];
    g.set_outputs(vec![w]);
    single(
        &g,
        None,
        "weight `w` has type f32[n, 4], but a weight's type must be static",
        "weight {name = \"w\"} : f32[n, 4]",
    );
}

#[test]
fn weight_declared_twice_with_different_types() {
    let mut g = Graph::new("g");
    let w1 = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![ty("f32[4, 4]")])[0];
    let w2 = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![ty("f32[4, 4]")])[0];
    // The same name with the same type is fine.
    g.set_outputs(vec![w1, w2]);
    verify(&g, None).unwrap();
    let w3 = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![ty("bf16[4, 4]")])[0];
    g.set_outputs(vec![w1, w2, w3]);
    single(
        &g,
        None,
        "weight `w` is declared as bf16[4, 4] here but as f32[4, 4] by an earlier weight node",
        "%2 = weight {name = \"w\"} : bf16[4, 4]",
    );
}

#[test]
fn weight_missing_from_the_store() {
    let mut g = Graph::new("g");
    let w = g.add_node(Op::Weight { name: "lm_head".into() }, vec![], vec![ty("f32[4, 4]")])[0];
    g.set_outputs(vec![w]);
    verify(&g, None).unwrap();
    single(&g, Some(&WeightStore::new()), "weight `lm_head` is not in the weight store", "weight {name = \"lm_head\"}");
}

#[test]
fn weight_type_differs_from_the_store() {
    let mut g = Graph::new("g");
    let w = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![ty("f32[4, 4]")])[0];
    g.set_outputs(vec![w]);
    let mut store = WeightStore::new();
    store.insert_quantized("w", "q8c".parse().unwrap(), 4, 32, &[0.25; 128]).unwrap();
    single(
        &g,
        Some(&store),
        "weight `w` is declared as f32[4, 4] but the weight store holds q8c[4, 32]",
        "weight {name = \"w\"}",
    );
}

#[test]
fn constant_type_differs_from_its_value() {
    let mut g = Graph::new("g");
    let c =
        g.add_node(Op::Constant { value: Tensor::i64(vec![3], vec![1, 2, 3]).unwrap() }, vec![], vec![ty("i64[4]")])[0];
    g.set_outputs(vec![c]);
    single(
        &g,
        None,
        "the constant's value has type i64[3] but the declared result type is i64[4]",
        "constant {value = [1, 2, 3]}",
    );
}

#[test]
fn three_independent_errors_are_all_reported_in_order() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[2, 3]"));
    let a = g.add_node(Op::Silu {}, vec![x], vec![ty("f32[2, 4]")])[0]; // wrong dim
    let b = g.add_node(Op::Softmax { axis: 5 }, vec![a], vec![ty("f32[2, 4]")])[0]; // bad axis
    let c = g.add_node(add(), vec![b, ValueId(42)], vec![ty("f32[2, 4]")])[0]; // missing operand
    g.set_outputs(vec![c]);
    let errs = errors(&g, None);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].message.contains("dim 1 should be 3, not 4") && errs[0].op_text.contains("silu"), "{:?}", errs[0]);
    assert!(
        errs[1].message.contains("softmax: axis 5 is out of range") && errs[1].op_text.contains("softmax"),
        "{:?}",
        errs[1]
    );
    assert!(
        errs[2].message.contains("operand %?42 does not exist") && errs[2].op_text.contains("add"),
        "{:?}",
        errs[2]
    );
    // The Display of the whole set lists each problem with its op.
    let shown = verify(&g, None).unwrap_err().to_string();
    assert!(
        shown.contains("operand %?42 does not exist (the graph has 4 values)\n  in: %3 = add(%2, %?42) : f32[2, 4]"),
        "{shown}"
    );
}

#[test]
fn later_nodes_see_declared_types_so_errors_do_not_cascade() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[2, 3]"));
    // Declared wrongly as [2, 4]; the users below agree with the declaration, so they are fine.
    let a = g.add_node(Op::Silu {}, vec![x], vec![ty("f32[2, 4]")])[0];
    let w = g.add_input(ty("f32[5, 4]"));
    let b = g.add_node(Op::Linear {}, vec![a, w], vec![ty("f32[2, 5]")])[0];
    g.set_outputs(vec![b]);
    single(&g, None, "result %2 is declared f32[2, 4] but `silu` gives f32[2, 3]", "silu(%0)");
}

#[test]
fn a_node_with_a_broken_operand_is_not_type_checked() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[2]"));
    // Both a missing operand and a wrong declared type: only the operand is reported for this node.
    let y = g.add_node(add(), vec![x, ValueId(9)], vec![ty("i64[7, 7]")])[0];
    g.set_outputs(vec![y]);
    single(&g, None, "operand %?9 does not exist (the graph has 2 values)", "add(%0, %?9)");
}

#[test]
fn push_infers_types_and_refuses_weights() {
    let mut g = Graph::new("g");
    let x = g.add_input(ty("f32[b, s, 64]"));
    let w = g.add_input(ty("q4g32[128, 64]"));
    let y = g.push(Op::Linear {}, &[x, w]).unwrap();
    assert_eq!(g.value_type(y).to_string(), "f32[b, s, 128]");
    let e = g.push(Op::Weight { name: "w".into() }, &[]).unwrap_err();
    assert!(e.message.contains("cannot be inferred from inputs"), "{e}");
    let e = g.push(Op::Silu {}, &[ValueId(50)]).unwrap_err();
    assert_eq!(e.message, "operand %50 does not exist");
    let e = g.push(Op::Silu {}, &[w]).unwrap_err();
    assert!(e.message.starts_with("silu: input 0 has quantized type q4g32[128, 64]"), "{e}");
}

#[test]
fn parsed_graphs_report_the_source_line_of_the_offending_op() {
    let src = "graph @g(%0: f32[2]) {\n  %1 = add(%0, %2) : f32[2]\n  %2 = silu(%0) : f32[2]\n  return %1\n}\n";
    let g = kiln_ir::text::parse(src).unwrap();
    let e = single(&g, None, "operand %2 is used before it is defined: its `silu` node comes later", "");
    assert_eq!(e.op_text, "%1 = add(%0, %2) : f32[2]");
    assert!(src.contains(&e.op_text));
}

#[test]
fn the_brief_example_parses_and_verifies_against_a_store() {
    let src = r#"
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
    let g = kiln_ir::text::parse(src).unwrap();
    let (built, store) = tiny();
    verify(&g, Some(&store)).unwrap();
    assert_eq!(kiln_ir::text::print(&g), kiln_ir::text::print(&built));
    // The same text with a wrong reshape result names the dim.
    let bad = src.replace("%5 = reshape(%3, %4) : f32[1, seq, 4, 4]", "%5 = reshape(%3, %4) : f32[1, seq, 2, 8]");
    let g = kiln_ir::text::parse(&bad).unwrap();
    let errs = errors(&g, Some(&store));
    assert!(errs[0].message.contains("dim 2 should be 4, not 2"), "{errs:#?}");
    assert_eq!(errs[0].op_text, "%5 = reshape(%3, %4) {allowzero = false} : f32[1, seq, 2, 8]");
}
