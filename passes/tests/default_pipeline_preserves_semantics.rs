//! Property test: on random graphs of generic ops (with duplicated work, dead nodes, constant
//! subgraphs, shape arithmetic and `?` dims), the `default` pipeline leaves a valid graph that computes
//! bit-for-bit the same outputs, evaluated node by node with the reference evaluator.

use std::collections::HashMap;

use kiln_ir::eval::eval_generic;
use kiln_ir::{BinaryOp, DType, Dim, Graph, Op, Shape, Tensor, TensorData, TensorType, UnaryOp, ValueId};
use kiln_passes::{PassContext, pipeline};
use proptest::prelude::*;

/// One step of a random graph; operands are indices into the values built so far (taken modulo).
#[derive(Clone, Debug)]
enum Step {
    Constant([f32; 4]),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    /// `reshape(a, concat(unsqueeze(gather(shape(b), 1)), unsqueeze(gather(shape(b), 0))))`: the ONNX
    /// way of writing a reshape to `b`'s transposed shape, which is `[2, 2]` again.
    ReshapeLike(usize, usize),
}

/// Values the generator draws constants from: signed zeros, NaN and infinity included, so folding and
/// CSE are exercised on the values they must not confuse.
fn element() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![0.0, -0.0, 1.0, -1.5, 2.0, 0.5, f32::NAN, f32::INFINITY])
}

fn step() -> impl Strategy<Value = Step> {
    let unary = prop::sample::select(vec![UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Exp, UnaryOp::Sqrt, UnaryOp::Floor]);
    let binary = prop::sample::select(vec![
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Max,
        BinaryOp::Min,
    ]);
    prop_oneof![
        2 => prop::array::uniform4(element()).prop_map(Step::Constant),
        3 => (unary, any::<usize>()).prop_map(|(u, a)| Step::Unary(u, a)),
        4 => (binary, any::<usize>(), any::<usize>()).prop_map(|(b, x, y)| Step::Binary(b, x, y)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Step::ReshapeLike(a, b)),
    ]
}

fn constant(g: &mut Graph, value: Tensor) -> ValueId {
    let ty = value.ty();
    g.add_node(Op::Constant { value }, vec![], vec![ty])[0]
}

fn i64_ty(dims: &[u64]) -> TensorType {
    TensorType::of(DType::I64, dims)
}

/// Builds the graph; `erase[i]` turns the declared dims of the i-th step's result into `?`, as an
/// importer without shape information would leave them.
fn build(steps: &[Step], erase: &[bool], outputs: &[usize]) -> Graph {
    let square = TensorType::of(DType::F32, &[2, 2]);
    let mut g = Graph::new("random");
    let mut values = vec![g.add_input(square.clone()), g.add_input(square.clone())];
    for (i, s) in steps.iter().enumerate() {
        let pick = |k: usize| values[k % values.len()];
        let v = match *s {
            Step::Constant(v) => constant(&mut g, Tensor::f32(vec![2, 2], v.to_vec()).expect("4 elements")),
            Step::Unary(u, a) => g.add_node(Op::Unary(u), vec![pick(a)], vec![square.clone()])[0],
            Step::Binary(b, x, y) => g.add_node(Op::Binary(b), vec![pick(x), pick(y)], vec![square.clone()])[0],
            Step::ReshapeLike(a, b) => {
                let (a, b) = (pick(a), pick(b));
                let shape = g.add_node(Op::Shape { start: 0, end: None }, vec![b], vec![i64_ty(&[2])])[0];
                let mut dims = Vec::new();
                for index in [1, 0] {
                    let i = constant(&mut g, Tensor::scalar_i64(index));
                    let d = g.add_node(Op::Gather { axis: 0 }, vec![shape, i], vec![i64_ty(&[])])[0];
                    dims.push(g.add_node(Op::Unsqueeze { axes: vec![0] }, vec![d], vec![i64_ty(&[1])])[0]);
                }
                let target = g.add_node(Op::Concat { axis: 0 }, dims, vec![i64_ty(&[2])])[0];
                g.add_node(Op::Reshape { allowzero: false }, vec![a, target], vec![square.clone()])[0]
            }
        };
        if erase[i] && !matches!(s, Step::Constant(_)) {
            g.set_value_type(v, TensorType::new(DType::F32, Shape(vec![Dim::Unknown, Dim::Unknown])));
        }
        values.push(v);
    }
    let outs = outputs.iter().map(|&k| values[k % values.len()]).collect();
    g.set_outputs(outs);
    g
}

/// Evaluates `g` on `inputs` node by node with the reference evaluator.
fn evaluate(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut env: HashMap<ValueId, Tensor> = g.inputs().iter().copied().zip(inputs.iter().cloned()).collect();
    for (_, node) in g.nodes() {
        let args: Vec<&Tensor> = node.inputs.iter().map(|v| &env[v]).collect();
        let results = eval_generic(&node.op, &args).expect("valid graph evaluates").expect("generic op");
        for (&v, t) in node.outputs.iter().zip(results) {
            env.insert(v, t);
        }
    }
    g.outputs().iter().map(|v| env[v].clone()).collect()
}

fn bits(t: &Tensor) -> (Vec<usize>, Vec<u32>) {
    match t.data() {
        TensorData::F32(v) => (t.shape().to_vec(), v.iter().map(|x| x.to_bits()).collect()),
        other => panic!("outputs are f32, got {:?}", other.dtype()),
    }
}

proptest! {
    #[test]
    fn default_pipeline_keeps_graphs_valid_and_results_identical(
        steps in prop::collection::vec(step(), 1..24),
        erase in prop::collection::vec(any::<bool>(), 24),
        outputs in prop::collection::vec(any::<usize>(), 1..4),
        x in prop::array::uniform4(element()),
        y in prop::array::uniform4(-4.0f32..4.0),
    ) {
        let original = build(&steps, &erase, &outputs);
        kiln_ir::verify(&original, None).map_err(|e| TestCaseError::fail(format!("generator bug: {e}")))?;
        let inputs = [Tensor::f32(vec![2, 2], x.to_vec()).unwrap(), Tensor::f32(vec![2, 2], y.to_vec()).unwrap()];

        let mut optimised = original.clone();
        let mut pm = pipeline("default").unwrap();
        pm.verify_each(true);
        pm.run(&mut optimised, &mut PassContext::new())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", kiln_ir::text::print(&original))))?;

        let before: Vec<_> = evaluate(&original, &inputs).iter().map(bits).collect();
        let after: Vec<_> = evaluate(&optimised, &inputs).iter().map(bits).collect();
        prop_assert_eq!(
            before,
            after,
            "before:\n{}\nafter:\n{}",
            kiln_ir::text::print(&original),
            kiln_ir::text::print(&optimised)
        );
        prop_assert!(optimised.order().len() <= original.order().len());
        // Everything left is needed: a second run of the pipeline removes nothing more.
        let mut again = optimised.clone();
        pipeline("default").unwrap().run(&mut again, &mut PassContext::new()).unwrap();
        prop_assert_eq!(again.order().len(), optimised.order().len());
    }
}
