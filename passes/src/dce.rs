//! Dead code elimination: removes every node none of whose results the graph outputs use, directly or
//! through other nodes.
//!
//! Assumes a valid graph, in particular that operands are defined before their uses, so one walk
//! backwards over program order finds every live node. Deliberately kept: nodes with side effects
//! (`attention` appending to the KV cache; see `Op::has_side_effects`) even when their result is unused,
//! because the cache write is their point; graph inputs, even unused ones, because they are the
//! signature callers bind to. Unused `weight` nodes are removed like any other node; the weight store is
//! not touched.

use std::collections::HashSet;

use kiln_ir::Graph;

use crate::pass::{Changed, Pass, PassContext, PassError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadCodeElimination;

impl DeadCodeElimination {
    pub const NAME: &'static str = "dce";
}

impl Pass for DeadCodeElimination {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        let mut live_values = vec![false; g.num_values()];
        for &v in g.outputs() {
            if let Some(live) = live_values.get_mut(v.index()) {
                *live = true;
            }
        }
        let mut dead = HashSet::new();
        for (id, node) in g.nodes().collect::<Vec<_>>().into_iter().rev() {
            let used = node.outputs.iter().any(|v| live_values.get(v.index()).copied().unwrap_or(false));
            if used || node.op.has_side_effects() {
                for v in &node.inputs {
                    if let Some(live) = live_values.get_mut(v.index()) {
                        *live = true;
                    }
                }
            } else {
                dead.insert(id);
            }
        }
        g.remove_nodes(&dead);
        Ok(Changed::from(!dead.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use kiln_ir::{BinaryOp, DType, Dim, Op, Shape, TensorType, UnaryOp};

    use super::*;

    fn ty(dims: &[u64]) -> TensorType {
        TensorType::of(DType::F32, dims)
    }

    fn run(g: &mut Graph) -> Changed {
        DeadCodeElimination.run(g, &mut PassContext::new()).unwrap()
    }

    fn op_names(g: &Graph) -> Vec<&'static str> {
        g.nodes().map(|(_, n)| n.op.name()).collect()
    }

    #[test]
    fn removes_dead_chains_and_keeps_what_outputs_use() {
        let mut g = Graph::new("g");
        let x = g.add_input(ty(&[4]));
        let live = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![ty(&[4])])[0];
        // A chain of three nodes whose end nobody uses, one of which uses a live value.
        let d1 = g.add_node(Op::Unary(UnaryOp::Neg), vec![x], vec![ty(&[4])])[0];
        let d2 = g.add_node(Op::Binary(BinaryOp::Add), vec![d1, live], vec![ty(&[4])])[0];
        g.add_node(Op::Unary(UnaryOp::Sqrt), vec![d2], vec![ty(&[4])]);
        let out = g.add_node(Op::Unary(UnaryOp::Abs), vec![live], vec![ty(&[4])])[0];
        g.set_outputs(vec![out]);

        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(op_names(&g), ["exp", "abs"]);
        assert_eq!(run(&mut g), Changed::No, "a second run finds nothing");
    }

    #[test]
    fn keeps_side_effecting_attention_and_its_operands() {
        let mut g = Graph::new("g");
        let qkv = TensorType::new(DType::F32, Shape(vec![Dim::Static(1), Dim::sym("seq"), 2u64.into(), 4u64.into()]));
        let q = g.add_input(qkv.clone());
        let pos = g.add_input(TensorType::new(DType::I64, Shape(vec![Dim::Static(1), Dim::sym("seq")])));
        let k = g.add_node(Op::Unary(UnaryOp::Neg), vec![q], vec![qkv.clone()])[0];
        let attn = |layer| Op::Attention { layer, scale: 0.5, causal: true, window: None, sinks: 0, softcap: None };
        // Result unused but it appends k/v to layer 0's cache: must stay, and so must `k`.
        g.add_node(attn(Some(0)), vec![q, k, k, pos], vec![qkv.clone()]);
        // Without a layer it is pure, so unused means dead.
        g.add_node(attn(None), vec![q, q, q, pos], vec![qkv.clone()]);
        g.set_outputs(vec![q]);

        assert_eq!(run(&mut g), Changed::Yes);
        let kept: Vec<_> = g.nodes().map(|(_, n)| n.op.clone()).collect();
        assert_eq!(kept, [Op::Unary(UnaryOp::Neg), attn(Some(0))]);
    }

    #[test]
    fn leaves_a_graph_without_dead_nodes_alone() {
        let mut g = Graph::new("g");
        let x = g.add_input(ty(&[2]));
        let unused_input = g.add_input(ty(&[3]));
        let a = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![ty(&[2])])[0];
        let parts = g.add_node(Op::Split { axis: 0, sizes: vec![1, 1] }, vec![a], vec![ty(&[1]), ty(&[1])]);
        // Only the second result of the split is used; the node is still live.
        g.set_outputs(vec![parts[1]]);
        let before = g.clone();
        assert_eq!(run(&mut g), Changed::No);
        assert_eq!(g, before);
        assert_eq!(g.inputs(), [x, unused_input]);
    }
}
