//! Shape inference: fills in result dims that a graph declares unknown (`?`) with what type inference
//! derives from the operands (a static size or a symbol such as `seq`).
//!
//! Walks the nodes in program order and refines each node's results before inferring its users, so a
//! refinement propagates down a chain in one run. Assumes a valid graph. Deliberately left alone: a dim
//! that is already known (static or symbolic) is never changed, even where inference disagrees (that is
//! a contradiction for the verifier to report, not for this pass to paper over); dtypes and ranks are
//! never changed; graph inputs keep their declared types, since they are the caller's contract; nodes
//! whose types cannot be inferred are skipped for the same reason as contradictions. Constant folding
//! applies the same per-node refinement as it walks (`refine_node`).

use kiln_ir::{Dim, Graph, NodeId, Shape, TensorType};

use crate::pass::{Changed, Pass, PassContext, PassError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShapeInference;

impl ShapeInference {
    pub const NAME: &'static str = "shape-inference";
}

/// `declared` with its `?` dims replaced by the corresponding known dims of `inferred`, or `None` when
/// nothing would change (or the two types are not comparable).
fn refine(declared: &TensorType, inferred: &TensorType) -> Option<TensorType> {
    if declared.dtype != inferred.dtype || declared.rank() != inferred.rank() {
        return None;
    }
    let mut changed = false;
    let dims = declared
        .shape
        .dims()
        .iter()
        .zip(inferred.shape.dims())
        .map(|(d, i)| match (d, i) {
            (Dim::Unknown, Dim::Static(_) | Dim::Sym(_)) => {
                changed = true;
                i.clone()
            }
            _ => d.clone(),
        })
        .collect();
    changed.then(|| TensorType::new(declared.dtype, Shape(dims)))
}

impl Pass for ShapeInference {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut changed = Changed::No;
        for id in g.order().to_vec() {
            changed |= refine_node(g, id);
        }
        Ok(changed)
    }
}

/// Refines the `?` dims of node `id`'s results from what inference derives from its operands' current
/// types. Shared with constant folding, which interleaves it with folding (see there why).
pub(crate) fn refine_node(g: &mut Graph, id: NodeId) -> Changed {
    let node = g.node(id);
    let Ok(inferred) = kiln_ir::infer::infer_node(g, &node.op, &node.inputs) else {
        return Changed::No;
    };
    if inferred.len() != node.outputs.len() {
        return Changed::No;
    }
    let refinements: Vec<_> = node
        .outputs
        .iter()
        .zip(&inferred)
        .filter_map(|(&v, inf)| refine(g.value_type(v), inf).map(|ty| (v, ty)))
        .collect();
    let changed = Changed::from(!refinements.is_empty());
    for (v, ty) in refinements {
        g.set_value_type(v, ty);
    }
    changed
}

#[cfg(test)]
mod tests {
    use kiln_ir::{BinaryOp, DType, Op, Tensor, UnaryOp};

    use super::*;

    fn shape(dims: &[Dim]) -> Shape {
        Shape(dims.to_vec())
    }

    #[test]
    fn refine_only_fills_unknown_dims() {
        let declared = TensorType::new(DType::F32, shape(&[Dim::Unknown, Dim::Static(4), Dim::Unknown, Dim::sym("a")]));
        let inferred =
            TensorType::new(DType::F32, shape(&[Dim::sym("seq"), Dim::Static(5), Dim::Unknown, Dim::sym("b")]));
        assert_eq!(
            refine(&declared, &inferred).unwrap(),
            TensorType::new(DType::F32, shape(&[Dim::sym("seq"), Dim::Static(4), Dim::Unknown, Dim::sym("a")]))
        );
        assert_eq!(refine(&declared, &declared), None);
        let other_rank = TensorType::of(DType::F32, &[1, 2]);
        assert_eq!(refine(&declared, &other_rank), None);
    }

    #[test]
    fn fills_unknown_dims_down_a_chain() {
        let mut g = Graph::new("g");
        let seq = Dim::sym("seq");
        let x = g.add_input(TensorType::new(DType::F32, shape(&[Dim::Static(1), seq.clone(), Dim::Static(8)])));
        let unknown3 = TensorType::new(DType::F32, shape(&[Dim::Unknown, Dim::Unknown, Dim::Unknown]));
        let a = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![unknown3.clone()])[0];
        let b = g.add_node(Op::Binary(BinaryOp::Mul), vec![a, x], vec![unknown3.clone()])[0];
        // Reshape to a constant target: the result dims come from the constant's values (0 copies the
        // input dim, symbol included).
        let target = Tensor::i64(vec![4], vec![0, 0, 2, 4]).unwrap();
        let t = g.add_node(Op::Constant { value: target.clone() }, vec![], vec![target.ty()])[0];
        let unknown4 = TensorType::new(DType::F32, shape(&[Dim::Unknown, Dim::Unknown, Dim::Unknown, Dim::Unknown]));
        let r = g.add_node(Op::Reshape { allowzero: false }, vec![b, t], vec![unknown4])[0];
        g.set_outputs(vec![r]);

        let mut cx = PassContext::new();
        assert_eq!(ShapeInference.run(&mut g, &mut cx).unwrap(), Changed::Yes);
        let full = TensorType::new(DType::F32, shape(&[Dim::Static(1), seq.clone(), Dim::Static(8)]));
        assert_eq!(g.value_type(a), &full);
        assert_eq!(g.value_type(b), &full);
        let split_heads = shape(&[Dim::Static(1), seq.clone(), Dim::Static(2), Dim::Static(4)]);
        assert_eq!(g.value_type(r), &TensorType::new(DType::F32, split_heads));
        assert_eq!(ShapeInference.run(&mut g, &mut cx).unwrap(), Changed::No);
    }

    #[test]
    fn never_changes_known_dims_or_inputs() {
        let mut g = Graph::new("g");
        let x = g.add_input(TensorType::new(DType::F32, shape(&[Dim::Unknown, Dim::Static(8)])));
        // Declared `n` where inference would say `?`: a known dim, kept.
        let declared = TensorType::new(DType::F32, shape(&[Dim::sym("n"), Dim::Static(8)]));
        let a = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![declared.clone()])[0];
        g.set_outputs(vec![a]);
        let before = g.clone();
        assert_eq!(ShapeInference.run(&mut g, &mut PassContext::new()).unwrap(), Changed::No);
        assert_eq!(g, before);
    }
}
