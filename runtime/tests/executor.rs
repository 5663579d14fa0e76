//! The executor's contract beyond single-op numerics: input checking, symbolic dims, structural
//! checks at construction, declared result types, weights as values, and cache rollback on failure.

mod common;

use common::{Operand, assert_close, f32_type, random_tensor, random_vec, run_one, sym_type};
use kiln_ir::{DType, Graph, Op, Tensor, TensorType, WeightStore};
use kiln_runtime::{CpuExecutor, RuntimeError};

/// `rms_norm(x: f32[b, 4], w)` with `b` symbolic.
fn norm_graph() -> (Graph, WeightStore) {
    let mut store = WeightStore::new();
    store.insert_tensor("w", &Tensor::f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap()).unwrap();
    let mut g = Graph::new("norm");
    let x = g.add_input(sym_type(DType::F32, &[Err("b"), Ok(4)]));
    let w = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![f32_type(&[4])])[0];
    let y =
        g.add_node(Op::RmsNorm { eps: 1e-6, offset: 0.0 }, vec![x, w], vec![sym_type(DType::F32, &[Err("b"), Ok(4)])]);
    g.set_outputs(y);
    (g, store)
}

#[test]
fn inputs_are_checked_against_the_signature() {
    let (g, store) = norm_graph();
    let mut exec = CpuExecutor::new(g, store).unwrap();
    let ok = random_tensor(1, &[3, 4], 1.0);
    assert_eq!(exec.run(std::slice::from_ref(&ok)).unwrap()[0].shape(), &[3, 4]);
    assert_eq!(exec.run(&[random_tensor(1, &[5, 4], 1.0)]).unwrap()[0].shape(), &[5, 4], "b binds per run");

    let e = exec.run(&[]).unwrap_err();
    assert_eq!(e, RuntimeError::InputCount { expected: 1, actual: 0 });
    let e = exec.run(&[ok.clone(), ok.clone()]).unwrap_err();
    assert_eq!(e, RuntimeError::InputCount { expected: 1, actual: 2 });
    let e = exec.run(&[Tensor::i64(vec![3, 4], vec![0; 12]).unwrap()]).unwrap_err();
    assert!(matches!(e, RuntimeError::InputDType { index: 0, expected: DType::F32, actual: DType::I64, .. }), "{e}");
    let e = exec.run(&[random_tensor(1, &[12], 1.0)]).unwrap_err();
    assert!(matches!(e, RuntimeError::InputRank { index: 0, expected: 2, .. }), "{e}");
    let e = exec.run(&[random_tensor(1, &[3, 5], 1.0)]).unwrap_err();
    assert!(matches!(e, RuntimeError::InputDim { index: 0, axis: 1, expected: 4, actual: 5, .. }), "{e}");
    assert!(e.to_string().contains("dim 1 must be 4"), "{e}");
}

#[test]
fn a_symbol_bound_to_two_sizes_is_an_error() {
    let mut g = Graph::new("two_inputs");
    let a = g.add_input(sym_type(DType::F32, &[Err("n"), Ok(4)]));
    let b = g.add_input(sym_type(DType::F32, &[Err("n"), Ok(4)]));
    g.set_outputs(vec![a, b]);
    let mut exec = CpuExecutor::new(g, WeightStore::new()).unwrap();
    let out = exec.run(&[random_tensor(1, &[2, 4], 1.0), random_tensor(2, &[2, 4], 1.0)]).unwrap();
    assert_eq!(out.len(), 2);
    let e = exec.run(&[random_tensor(1, &[2, 4], 1.0), random_tensor(2, &[3, 4], 1.0)]).unwrap_err();
    assert!(matches!(&e, RuntimeError::SymbolConflict { symbol, bound: 2, actual: 3, .. } if symbol == "n"), "{e}");
}

#[test]
fn construction_checks_weights_and_structure() {
    let (g, _) = norm_graph();
    let e = CpuExecutor::new(g.clone(), WeightStore::new()).unwrap_err();
    assert!(matches!(&e, RuntimeError::Verify { .. }), "{e}");
    assert!(e.to_string().contains("weight `w` is not in the weight store"), "{e}");

    let mut store = WeightStore::new();
    store.insert_tensor("w", &Tensor::f32(vec![5], vec![0.0; 5]).unwrap()).unwrap();
    let e = CpuExecutor::new(g, store).unwrap_err();
    assert!(matches!(&e, RuntimeError::Verify { .. }), "{e}");
    assert!(e.to_string().contains("f32[5]"), "{e}");

    // An operand used before it is defined.
    let mut g = Graph::new("bad_order");
    let x = g.add_input(f32_type(&[4]));
    let later = kiln_ir::ValueId(5);
    let y = g.add_node(Op::Silu {}, vec![later], vec![f32_type(&[4])]);
    g.set_outputs(vec![x, y[0]]);
    let e = CpuExecutor::new(g, WeightStore::new()).unwrap_err();
    assert!(matches!(e, RuntimeError::Verify { .. }), "{e}");

    // Wrong operand count.
    let mut g = Graph::new("bad_arity");
    let x = g.add_input(f32_type(&[4]));
    let y = g.add_node(Op::Linear {}, vec![x], vec![f32_type(&[4])]);
    g.set_outputs(y);
    let e = CpuExecutor::new(g, WeightStore::new()).unwrap_err();
    assert!(matches!(e, RuntimeError::Verify { .. }), "{e}");
}

#[test]
fn results_must_match_their_declared_types() {
    let mut store = WeightStore::new();
    store.insert_tensor("w", &random_tensor(1, &[3, 4], 1.0)).unwrap();
    let x = random_tensor(2, &[2, 4], 1.0);
    let e =
        run_one(Op::Linear {}, vec![Operand::Input(x), Operand::Weight("w")], store, f32_type(&[2, 5])).unwrap_err();
    assert!(matches!(&e, RuntimeError::Verify { .. }), "statically wrong types are the verifier's: {e}");

    // A shape known only at run time is checked against the declared type when it is computed.
    let mut g = Graph::new("dynamic_reshape");
    let x = g.add_input(f32_type(&[12]));
    let shape = g.add_input(TensorType::of(DType::I64, &[2]));
    let y = g.add_node(Op::Reshape { allowzero: false }, vec![x, shape], vec![f32_type(&[3, 4])]);
    g.set_outputs(y);
    let mut exec = CpuExecutor::new(g, WeightStore::new()).unwrap();
    let x = random_tensor(3, &[12], 1.0);
    let ok = exec.run(&[x.clone(), Tensor::i64(vec![2], vec![3, 4]).unwrap()]).unwrap();
    assert_eq!(ok[0].shape(), &[3, 4]);
    let e = exec.run(&[x, Tensor::i64(vec![2], vec![4, 3]).unwrap()]).unwrap_err();
    assert!(matches!(&e, RuntimeError::ResultType { actual_shape, .. } if actual_shape == &[4, 3]), "{e}");
}

#[test]
fn activations_must_be_floats() {
    let mut store = WeightStore::new();
    store.insert_tensor("w", &random_tensor(1, &[4], 1.0)).unwrap();
    let x = Tensor::i64(vec![1, 4], vec![1, 2, 3, 4]).unwrap();
    let e = run_one(
        Op::RmsNorm { eps: 1e-6, offset: 0.0 },
        vec![Operand::Input(x), Operand::Weight("w")],
        store,
        f32_type(&[1, 4]),
    )
    .unwrap_err();
    assert!(matches!(&e, RuntimeError::Verify { .. }), "{e}");
    assert!(e.to_string().contains("x must be a float tensor"), "{e}");
}

#[test]
fn weights_can_be_outputs_and_computed_tensors_can_be_weights() {
    let mut store = WeightStore::new();
    let w = random_vec(3, 6 * 32, 1.0);
    store.insert_quantized("q", DType::Q8C, 6, 32, &w).unwrap();
    let mut g = Graph::new("weight_out");
    let q = g.add_node(Op::Weight { name: "q".into() }, vec![], vec![TensorType::of(DType::Q8C, &[6, 32])]);
    g.set_outputs(q);
    let mut exec = CpuExecutor::new(g, store.clone()).unwrap();
    let out = exec.run(&[]).unwrap().remove(0);
    assert_eq!(out.dtype(), DType::F32);
    assert_eq!(out, store.get("q").unwrap().to_tensor());

    // `linear` with a weight that is a graph input rather than a stored weight.
    let x = random_tensor(4, &[3, 8], 1.0);
    let wt = random_tensor(5, &[5, 8], 1.0);
    let y = run_one(
        Op::Linear {},
        vec![Operand::Input(x.clone()), Operand::Input(wt.clone())],
        WeightStore::new(),
        f32_type(&[3, 5]),
    )
    .unwrap();
    let (xv, wv) = (x.to_f64_vec(), wt.to_f64_vec());
    let expected: Vec<f64> = (0..15).map(|i| (0..8).map(|k| xv[(i / 5) * 8 + k] * wv[(i % 5) * 8 + k]).sum()).collect();
    assert_close(&y.to_f32_vec(), &expected, 1e-5, "linear with an input weight");
}

#[test]
fn a_failed_run_leaves_the_kv_cache_as_it_was() {
    // attention (layer 0) then an embedding whose ids may be out of range.
    let mut store = WeightStore::new();
    store.insert_tensor("table", &random_tensor(1, &[4, 2], 1.0)).unwrap();
    let mut g = Graph::new("attend_then_fail");
    let act = sym_type(DType::F32, &[Ok(1), Err("s"), Ok(1), Ok(4)]);
    let q = g.add_input(act.clone());
    let k = g.add_input(act.clone());
    let v = g.add_input(act.clone());
    let pos = g.add_input(sym_type(DType::I64, &[Ok(1), Err("s")]));
    let ids = g.add_input(TensorType::of(DType::I64, &[1]));
    let attn = Op::Attention { layer: Some(0), scale: 0.5, causal: true, window: None, sinks: 0, softcap: None };
    let a = g.add_node(attn, vec![q, k, v, pos], vec![act])[0];
    let table = g.add_node(Op::Weight { name: "table".into() }, vec![], vec![f32_type(&[4, 2])])[0];
    let e = g.add_node(Op::Embedding {}, vec![table, ids], vec![f32_type(&[1, 2])])[0];
    g.set_outputs(vec![a, e]);
    let mut exec = CpuExecutor::new(g, store).unwrap();
    let t = || random_tensor(7, &[1, 2, 1, 4], 1.0);
    let pos = Tensor::i64(vec![1, 2], vec![0, 1]).unwrap();
    exec.run(&[t(), t(), t(), pos, Tensor::i64(vec![1], vec![3]).unwrap()]).unwrap();
    assert_eq!(exec.kv_len(), 2);
    let pos = Tensor::i64(vec![1, 2], vec![2, 3]).unwrap();
    let e = exec.run(&[t(), t(), t(), pos, Tensor::i64(vec![1], vec![4]).unwrap()]).unwrap_err();
    assert!(e.to_string().contains("id 4 is outside"), "{e}");
    assert_eq!(exec.kv_len(), 2, "the failed run's keys were rolled back");
}

#[test]
fn generic_ops_run_through_the_reference_evaluator() {
    // softmax(x + w) with a stored weight materialised for the generic `add`.
    let mut store = WeightStore::new();
    let w = random_vec(8, 6, 1.0);
    store.insert_tensor("w", &Tensor::f32(vec![6], w.clone()).unwrap()).unwrap();
    let mut g = Graph::new("generic");
    let x = g.add_input(f32_type(&[2, 6]));
    let wv = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![f32_type(&[6])])[0];
    let s = g.add_node(Op::Binary(kiln_ir::BinaryOp::Add), vec![x, wv], vec![f32_type(&[2, 6])])[0];
    let y = g.add_node(Op::Softmax { axis: -1 }, vec![s], vec![f32_type(&[2, 6])]);
    g.set_outputs(y);
    let mut exec = CpuExecutor::new(g, store).unwrap();
    let xt = random_tensor(9, &[2, 6], 2.0);
    let out = exec.run(std::slice::from_ref(&xt)).unwrap().remove(0);
    let xv = xt.to_f64_vec();
    let mut expected = Vec::new();
    for r in 0..2 {
        let e: Vec<f64> = (0..6).map(|i| (xv[r * 6 + i] + w[i] as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        expected.extend(e.iter().map(|v| v / z));
    }
    assert_close(&out.to_f32_vec(), &expected, 1e-5, "softmax(x + w)");

    // An evaluator failure (a reshape whose element count is known only at run time) is reported
    // with the node.
    let mut g = Graph::new("bad_reshape");
    let x = g.add_input(sym_type(DType::F32, &[Err("n"), Ok(6)]));
    let shape = Tensor::i64(vec![2], vec![5, 5]).unwrap();
    let c = g.add_node(Op::Constant { value: shape.clone() }, vec![], vec![shape.ty()])[0];
    let y = g.add_node(Op::Reshape { allowzero: false }, vec![x, c], vec![f32_type(&[5, 5])]);
    g.set_outputs(y);
    let e = CpuExecutor::new(g, WeightStore::new()).unwrap().run(&[xt]).unwrap_err();
    assert!(matches!(&e, RuntimeError::Eval { node, .. } if node.contains("reshape")), "{e}");
}
