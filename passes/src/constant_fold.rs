//! Constant folding: replaces a node whose operands are all `constant`s by `constant` nodes holding its
//! results, computed with the reference evaluator (`kiln_ir::eval::eval_generic`); and replaces
//! `shape` of any value by a constant when the dims it reads are static, even if the value is not,
//! and likewise `gather(shape(x), constant indices)` when the dims picked are static.
//!
//! That turns ONNX-style shape arithmetic (`shape -> gather -> unsqueeze -> concat -> reshape`) into a
//! constant target shape, which lets shape inference and codegen see static dims. A folded node is
//! replaced at its own position in program order, so the text diff of the pass reads line for line.
//!
//! Folding and shape inference feed each other: a folded target makes a `reshape`'s result dims
//! inferable, which makes a later `shape` of that result foldable, and so on down the graph. So the walk
//! also refines each node's `?` result dims, with the same rule as the shape inference pass, before
//! trying to fold the node's users; one walk then reaches what alternating the two passes would need
//! as many rounds for as the chain is deep.
//!
//! Assumes a valid graph. Deliberately left alone:
//! - results with more than `max_elements` elements in total (see [`DEFAULT_MAX_ELEMENTS`]);
//! - ops the evaluator does not cover (norms, `linear`, `rope`, `attention`, ...) and `weight`s
//!   (weights are large and live in the weight store, not in the graph);
//! - nodes with side effects;
//! - nodes the evaluator rejects (e.g. a constant index out of range): the executor reports the same
//!   error at run time, with the node, and a compiler pass is not the place to fail on it;
//! - the operands of folded nodes, which become dead but are removed by dead code elimination.

use std::collections::HashMap;

use kiln_ir::{Dim, Graph, NodeId, Op, Tensor, TensorType, ValueId};

use crate::pass::{Changed, Pass, PassContext, PassError};
use crate::shape_inference::refine_node;

/// The default cap on the elements a folded node may produce. Folded values are inlined in the IR text,
/// which the artifact stores and every `--print-after` dump shows; shape arithmetic, scalars and small
/// index tables fit well below it, while the things above it (a causal mask over the whole context,
/// rotary tables, a zero-filled cache) are cheaper to compute at run time than to store as text.
/// The cap is checked on the inferred result types before evaluating, so a huge constant is never
/// materialised at compile time either.
pub const DEFAULT_MAX_ELEMENTS: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConstantFolding {
    /// The most elements (summed over all results) a node may produce and still be folded.
    pub max_elements: u64,
}

impl Default for ConstantFolding {
    fn default() -> ConstantFolding {
        ConstantFolding { max_elements: DEFAULT_MAX_ELEMENTS }
    }
}

impl ConstantFolding {
    pub const NAME: &'static str = "constant-folding";

    /// The results of node `id` as constants, or `None` when it is not folded.
    fn fold(&self, g: &Graph, id: NodeId) -> Result<Option<Vec<Tensor>>, PassError> {
        let node = g.node(id);
        if matches!(node.op, Op::Constant { .. } | Op::Weight { .. }) || node.op.has_side_effects() {
            return Ok(None);
        }
        if let Op::Shape { start, end } = node.op
            && let [input] = node.inputs[..]
        {
            return Ok(fold_shape(g.value_type(input), start, end));
        }
        if let Some(dims) = gather_of_shape(g, &node.op, &node.inputs) {
            return Ok(Some(vec![dims]));
        }
        if node.inputs.is_empty() {
            return Ok(None);
        }
        let Some(operands) = node.inputs.iter().map(|&v| g.constant_value(v)).collect::<Option<Vec<&Tensor>>>() else {
            return Ok(None);
        };

        // Bound the result size before computing it.
        let Ok(types) = kiln_ir::infer::infer_node(g, &node.op, &node.inputs) else {
            return Ok(None);
        };
        let Some(elements) = types.iter().map(|t| t.shape.num_elements()).sum::<Option<u64>>() else {
            return Ok(None);
        };
        if elements > self.max_elements {
            return Ok(None);
        }

        let Ok(Some(results)) = kiln_ir::eval::eval_generic(&node.op, &operands) else {
            return Ok(None);
        };
        if results.len() != node.outputs.len() {
            return Err(self.disagreement(g, id, format!("{} results", results.len())));
        }
        for (t, &v) in results.iter().zip(&node.outputs) {
            if !fits(&t.ty(), g.value_type(v)) {
                return Err(self.disagreement(g, id, format!("a result of type {}", t.ty())));
            }
        }
        if results.iter().map(|t| t.len() as u64).sum::<u64>() > self.max_elements {
            return Ok(None);
        }
        Ok(Some(results))
    }

    /// Evaluation and the declared types of a verified graph disagree: a bug in the evaluator or in type
    /// inference, reported instead of folding a wrong constant.
    fn disagreement(&self, g: &Graph, id: NodeId, got: String) -> PassError {
        PassError::Failed {
            pass: Self::NAME,
            message: format!(
                "evaluating a node with constant operands gave {got}, which its declared types do not \
                 allow (a bug in evaluation or type inference)\n  in: {}",
                kiln_ir::text::print_node(g, id)
            ),
        }
    }
}

/// ONNX Shape-15: the dims `start..end` of `ty` (negative bounds count from the end, both are clamped
/// to the rank) as an i64 vector, when all of them are static.
fn fold_shape(ty: &TensorType, start: i64, end: Option<i64>) -> Option<Vec<Tensor>> {
    let dims = fold_shape_dims(ty, start, end)?;
    let values = dims.iter().map(|d| d.as_static().map(|n| n as i64)).collect::<Option<Vec<i64>>>()?;
    let len = values.len();
    Some(vec![Tensor::i64(vec![len], values).expect("a vector of `len` elements has shape [len]")])
}

/// The dims of `ty` that `shape {start, end}` reads.
fn fold_shape_dims(ty: &TensorType, start: i64, end: Option<i64>) -> Option<&[Dim]> {
    let rank = ty.rank() as i64;
    let clamp = |i: i64| if i < 0 { (i + rank).max(0) } else { i.min(rank) };
    let (start, end) = (clamp(start), clamp(end.unwrap_or(rank)));
    ty.shape.dims().get(start as usize..end.max(start) as usize)
}

/// `gather(shape(x), indices)` along axis 0 with constant indices that all pick static dims of `x`:
/// the dims, even when other dims of `x` are not static. This is how ONNX exporters read a dim (the
/// batch size, the hidden size) out of an activation whose sequence length is dynamic.
fn gather_of_shape(g: &Graph, op: &Op, inputs: &[ValueId]) -> Option<Tensor> {
    let (Op::Gather { axis: 0 | -1 }, &[shape, indices]) = (op, inputs) else {
        return None;
    };
    let indices = g.constant_value(indices)?;
    if !indices.dtype().is_int() {
        return None;
    }
    let Op::Shape { start, end } = g.node(g.producer(shape)?).op else {
        return None;
    };
    let [source] = g.node(g.producer(shape)?).inputs[..] else {
        return None;
    };
    let read = fold_shape_dims(g.value_type(source), start, end)?;
    let len = read.len() as i64;
    let values = indices
        .to_i64_vec()
        .into_iter()
        .map(|i| {
            let i = if i < 0 { i + len } else { i };
            if (0..len).contains(&i) { read[i as usize].as_static().map(|n| n as i64) } else { None }
        })
        .collect::<Option<Vec<i64>>>()?;
    Some(Tensor::i64(indices.shape().to_vec(), values).expect("one value per index"))
}

/// Whether a computed constant's type is the declared type, or a refinement of its unknown dims.
fn fits(computed: &TensorType, declared: &TensorType) -> bool {
    computed.dtype == declared.dtype
        && computed.rank() == declared.rank()
        && computed.shape.dims().iter().zip(declared.shape.dims()).all(|(c, d)| match d {
            Dim::Static(_) => c == d,
            Dim::Sym(_) | Dim::Unknown => true,
        })
}

impl Pass for ConstantFolding {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let old_order = g.order().to_vec();
        let mut order = Vec::with_capacity(old_order.len());
        // Uses are redirected as the walk reaches them (one pass, not one graph scan per fold); a node
        // folded early thereby makes its users' operands constant for their own turn.
        let mut replacement: HashMap<ValueId, ValueId> = HashMap::new();
        let mut refined = Changed::No;
        for id in old_order {
            for v in &mut g.node_mut(id).inputs {
                if let Some(&r) = replacement.get(v) {
                    *v = r;
                }
            }
            let Some(results) = self.fold(g, id)? else {
                refined |= refine_node(g, id);
                order.push(id);
                continue;
            };
            let outputs = g.node(id).outputs.clone();
            for (old, value) in outputs.into_iter().zip(results) {
                let ty = value.ty();
                let new = g.add_node(Op::Constant { value }, Vec::new(), vec![ty])[0];
                order.push(g.producer(new).expect("a node result has a producer"));
                replacement.insert(old, new);
            }
        }
        for v in g.outputs_mut() {
            if let Some(&r) = replacement.get(v) {
                *v = r;
            }
        }
        g.set_order(order);
        Ok(refined | Changed::from(!replacement.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use kiln_ir::{BinaryOp, DType, Shape, UnaryOp};

    use super::*;

    fn constant(g: &mut Graph, value: Tensor) -> ValueId {
        let ty = value.ty();
        g.add_node(Op::Constant { value }, vec![], vec![ty])[0]
    }

    fn i64_ty(dims: &[u64]) -> TensorType {
        TensorType::of(DType::I64, dims)
    }

    fn run(g: &mut Graph) -> Changed {
        ConstantFolding::default().run(g, &mut PassContext::new()).unwrap()
    }

    fn op_names(g: &Graph) -> Vec<&'static str> {
        g.nodes().map(|(_, n)| n.op.name()).collect()
    }

    #[test]
    fn folds_an_onnx_shape_chain_into_the_reshape_target() {
        let mut g = Graph::new("g");
        let x = g.add_input(TensorType::of(DType::F32, &[2, 6, 64]));
        let s = g.add_node(Op::Shape { start: 0, end: None }, vec![x], vec![i64_ty(&[3])])[0];
        let mut pieces = Vec::new();
        for axis in [0, 1] {
            let i = constant(&mut g, Tensor::scalar_i64(axis));
            let d = g.add_node(Op::Gather { axis: 0 }, vec![s, i], vec![i64_ty(&[])])[0];
            pieces.push(g.add_node(Op::Unsqueeze { axes: vec![0] }, vec![d], vec![i64_ty(&[1])])[0]);
        }
        pieces.push(constant(&mut g, Tensor::i64(vec![2], vec![4, 16]).unwrap()));
        let target = g.add_node(Op::Concat { axis: 0 }, pieces, vec![i64_ty(&[4])])[0];
        let unknown4 = TensorType::new(DType::F32, Shape(vec![Dim::Unknown; 4]));
        let r = g.add_node(Op::Reshape { allowzero: false }, vec![x, target], vec![unknown4])[0];
        g.set_outputs(vec![r]);

        assert_eq!(run(&mut g), Changed::Yes);
        // Every node of the chain became a constant in its place; the reshape reads the last one.
        assert_eq!(
            op_names(&g),
            [
                "constant", "constant", "constant", "constant", "constant", "constant", "constant", "constant",
                "constant", "reshape"
            ]
        );
        let (_, reshape) = g.nodes().last().unwrap();
        let folded = g.constant_value(reshape.inputs[1]).expect("reshape target is a constant");
        assert_eq!(folded, &Tensor::i64(vec![4], vec![2, 6, 4, 16]).unwrap());
        assert_eq!(reshape.inputs[0], x);
        assert_eq!(g.outputs(), [r]);
        assert_eq!(run(&mut g), Changed::No);
    }

    #[test]
    fn folds_through_types_it_refines_in_one_walk() {
        let mut g = Graph::new("g");
        let x = g.add_input(TensorType::of(DType::F32, &[2, 12]));
        let target = constant(&mut g, Tensor::i64(vec![3], vec![0, 3, 4]).unwrap());
        // Declared without dims: only inferable once `target` is known to be constant.
        let unknown3 = TensorType::new(DType::F32, Shape(vec![Dim::Unknown; 3]));
        let heads = g.add_node(Op::Reshape { allowzero: false }, vec![x, target], vec![unknown3.clone()])[0];
        let activated = g.add_node(Op::Unary(UnaryOp::Exp), vec![heads], vec![unknown3])[0];
        let s = g.add_node(Op::Shape { start: 1, end: None }, vec![activated], vec![i64_ty(&[2])])[0];
        let product = g.add_node(
            Op::Reduce { kind: kiln_ir::ReduceKind::Prod, axes: vec![], keepdims: true },
            vec![s],
            vec![i64_ty(&[1])],
        )[0];
        g.set_outputs(vec![activated, product]);

        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(g.value_type(heads), &TensorType::of(DType::F32, &[2, 3, 4]));
        assert_eq!(g.value_type(activated), &TensorType::of(DType::F32, &[2, 3, 4]));
        assert_eq!(g.constant_value(g.outputs()[1]).unwrap(), &Tensor::i64(vec![1], vec![12]).unwrap());
        assert_eq!(run(&mut g), Changed::No);
    }

    #[test]
    fn folds_shape_of_static_dims_of_a_non_constant_value() {
        let mut g = Graph::new("g");
        let ty = TensorType::new(DType::F32, Shape(vec![Dim::Static(1), Dim::sym("seq"), Dim::Static(64)]));
        let x = g.add_input(ty);
        let tail = g.add_node(Op::Shape { start: -1, end: None }, vec![x], vec![i64_ty(&[1])])[0];
        let head = g.add_node(Op::Shape { start: 0, end: Some(1) }, vec![x], vec![i64_ty(&[1])])[0];
        let empty = g.add_node(Op::Shape { start: 2, end: Some(1) }, vec![x], vec![i64_ty(&[0])])[0];
        let all = g.add_node(Op::Shape { start: 0, end: None }, vec![x], vec![i64_ty(&[3])])[0];
        g.set_outputs(vec![tail, head, empty, all]);

        assert_eq!(run(&mut g), Changed::Yes);
        let values: Vec<_> = g.outputs().iter().map(|&v| g.constant_value(v).map(|t| t.to_i64_vec())).collect();
        assert_eq!(values, [Some(vec![64]), Some(vec![1]), Some(vec![]), None], "`seq` is not static");
    }

    #[test]
    fn folds_gathers_of_static_dims_from_a_partly_symbolic_shape() {
        let mut g = Graph::new("g");
        let ty = TensorType::new(DType::F32, Shape(vec![Dim::Static(1), Dim::sym("seq"), Dim::Static(64)]));
        let x = g.add_input(ty);
        let s = g.add_node(Op::Shape { start: 0, end: None }, vec![x], vec![i64_ty(&[3])])[0];
        let gather = |g: &mut Graph, index: Tensor| {
            let ty = TensorType::of(DType::I64, &index.shape().iter().map(|&d| d as u64).collect::<Vec<_>>());
            let i = constant(g, index);
            g.add_node(Op::Gather { axis: 0 }, vec![s, i], vec![ty])[0]
        };
        let batch = gather(&mut g, Tensor::scalar_i64(0));
        let hidden = gather(&mut g, Tensor::scalar_i64(-1));
        let both = gather(&mut g, Tensor::i64(vec![2], vec![2, 0]).unwrap());
        let seq = gather(&mut g, Tensor::scalar_i64(1));
        let out_of_range = gather(&mut g, Tensor::scalar_i64(3));
        g.set_outputs(vec![batch, hidden, both, seq, out_of_range]);

        assert_eq!(run(&mut g), Changed::Yes);
        let values: Vec<_> = g.outputs().iter().map(|&v| g.constant_value(v).cloned()).collect();
        assert_eq!(
            values,
            [
                Some(Tensor::scalar_i64(1)),
                Some(Tensor::scalar_i64(64)),
                Some(Tensor::i64(vec![2], vec![64, 1]).unwrap()),
                None,
                None
            ]
        );
    }

    #[test]
    fn folds_arithmetic_and_multi_result_ops_in_place() {
        let mut g = Graph::new("g");
        let x = g.add_input(TensorType::of(DType::F32, &[2]));
        let a = constant(&mut g, Tensor::f32(vec![2], vec![1.5, 2.0]).unwrap());
        let b = constant(&mut g, Tensor::f32(vec![2], vec![0.25, -2.0]).unwrap());
        let sum = g.add_node(Op::Binary(BinaryOp::Add), vec![a, b], vec![TensorType::of(DType::F32, &[2])])[0];
        let halves = g.add_node(
            Op::Split { axis: 0, sizes: vec![1, 1] },
            vec![sum],
            vec![TensorType::of(DType::F32, &[1]), TensorType::of(DType::F32, &[1])],
        );
        let y = g.add_node(Op::Binary(BinaryOp::Mul), vec![x, sum], vec![TensorType::of(DType::F32, &[2])])[0];
        g.set_outputs(vec![halves[0], halves[1], y]);

        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(op_names(&g), ["constant", "constant", "constant", "constant", "constant", "mul"]);
        let expected: [f64; 2] = [1.5 + 0.25, 2.0 - 2.0];
        let got = |v: ValueId| g.constant_value(v).unwrap().to_f64_vec();
        assert_eq!(got(g.outputs()[0]), [expected[0]]);
        assert_eq!(got(g.outputs()[1]), [expected[1]]);
        let (_, mul) = g.nodes().last().unwrap();
        assert_eq!(got(mul.inputs[1]), expected);
    }

    #[test]
    fn does_not_fold_huge_results_model_ops_or_non_constants() {
        let mut g = Graph::new("g");
        let x = g.add_input(TensorType::of(DType::F32, &[4]));
        let big_shape = constant(&mut g, Tensor::i64(vec![2], vec![1024, 1024]).unwrap());
        let big = g.add_node(
            Op::ConstantOfShape { value: 1.0, dtype: DType::F32 },
            vec![big_shape],
            vec![TensorType::of(DType::F32, &[1024, 1024])],
        )[0];
        let small_shape = constant(&mut g, Tensor::i64(vec![2], vec![2, 3]).unwrap());
        let small = g.add_node(
            Op::ConstantOfShape { value: 1.5, dtype: DType::F32 },
            vec![small_shape],
            vec![TensorType::of(DType::F32, &[2, 3])],
        )[0];
        let c = constant(&mut g, Tensor::f32(vec![4], vec![1.0, -1.0, 0.5, 2.0]).unwrap());
        let w = constant(&mut g, Tensor::f32(vec![4], vec![1.0; 4]).unwrap());
        let model_level =
            g.add_node(Op::RmsNorm { eps: 1e-5, offset: 0.0 }, vec![c, w], vec![TensorType::of(DType::F32, &[4])])[0];
        let not_constant = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![TensorType::of(DType::F32, &[4])])[0];
        g.set_outputs(vec![big, small, model_level, not_constant]);

        assert_eq!(run(&mut g), Changed::Yes);
        let producer_op = |v: ValueId| g.node(g.producer(v).unwrap()).op.name();
        let outs = g.outputs().to_vec();
        assert_eq!(producer_op(outs[0]), "constant_of_shape");
        assert_eq!(g.constant_value(outs[1]).unwrap().to_f64_vec(), vec![1.5; 6]);
        assert_eq!(producer_op(outs[2]), "rms_norm");
        assert_eq!(producer_op(outs[3]), "exp");

        // Exactly at the cap folds; one element over does not.
        let mut g = Graph::new("g");
        let shape = constant(&mut g, Tensor::i64(vec![1], vec![8]).unwrap());
        let fill = g.add_node(
            Op::ConstantOfShape { value: 0.0, dtype: DType::I64 },
            vec![shape],
            vec![TensorType::of(DType::I64, &[8])],
        )[0];
        g.set_outputs(vec![fill]);
        let mut tight = g.clone();
        let over = ConstantFolding { max_elements: 7 }.run(&mut tight, &mut PassContext::new()).unwrap();
        assert_eq!(over, Changed::No);
        assert_eq!(ConstantFolding { max_elements: 8 }.run(&mut g, &mut PassContext::new()).unwrap(), Changed::Yes);
    }
}
