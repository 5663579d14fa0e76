//! Common subexpression elimination: a node that applies the same op (attributes included) to the same
//! operands as an earlier node, with the same result types, is removed and its uses are redirected to
//! the earlier node's results.
//!
//! Assumes a valid graph (operands defined before use), so one walk in program order also merges chains
//! of duplicates (a duplicated `rms_norm` and everything computed from it). Equality is exact:
//! `constant`s compare by dtype, shape and the bit pattern of every element, so `0.0` and `-0.0` stay
//! apart while two constants holding the same NaN merge; `weight`s merge when they name the same
//! weight. Deliberately left alone: ops with side effects (`attention` with a KV-cache layer; two of
//! them append twice), commutative operand orders (`add(a, b)` vs `add(b, a)`), and nodes whose
//! declared result types differ (e.g. one refined, one `?`; run shape inference first).

use std::collections::HashMap;

use kiln_ir::{DType, Graph, Op, Tensor, TensorData, TensorType, ValueId};

use crate::pass::{Changed, Pass, PassContext, PassError};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommonSubexpressionElimination;

impl CommonSubexpressionElimination {
    pub const NAME: &'static str = "cse";
}

/// Everything that makes two nodes compute the same values.
#[derive(PartialEq, Eq, Hash)]
struct NodeKey {
    op: OpKey,
    inputs: Vec<ValueId>,
    result_types: Vec<TensorType>,
}

#[derive(PartialEq, Eq, Hash)]
enum OpKey {
    /// Any op but `constant`: its name and attributes in their canonical text form. Floats print as the
    /// shortest text that parses back to the same value, so distinct values print differently (`-0.0`).
    Attrs { name: &'static str, attrs: Vec<String> },
    /// A constant by dtype, shape and element bit patterns.
    Constant { dtype: DType, shape: Vec<usize>, bits: Vec<u64> },
}

fn constant_bits(t: &Tensor) -> Vec<u64> {
    match t.data() {
        TensorData::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::F16(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
        TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        // Integers and bools are exact in i64; the dtype is part of the key, so widening loses nothing.
        d => (0..d.len()).map(|i| d.get_i64(i) as u64).collect(),
    }
}

fn op_key(op: &Op) -> OpKey {
    match op {
        Op::Constant { value } => {
            OpKey::Constant { dtype: value.dtype(), shape: value.shape().to_vec(), bits: constant_bits(value) }
        }
        _ => OpKey::Attrs {
            name: op.name(),
            attrs: op.attrs().into_iter().map(|(name, value)| format!("{name}={value}")).collect(),
        },
    }
}

impl Pass for CommonSubexpressionElimination {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
        // Uses are rewritten as the walk reaches them rather than with `replace_all_uses` per merge,
        // which would make the pass quadratic in graph size.
        let mut replacement: HashMap<ValueId, ValueId> = HashMap::new();
        let mut first: HashMap<NodeKey, Vec<ValueId>> = HashMap::new();
        let mut merged = std::collections::HashSet::new();
        for id in g.order().to_vec() {
            let node = g.node_mut(id);
            for v in &mut node.inputs {
                if let Some(&r) = replacement.get(v) {
                    *v = r;
                }
            }
            if node.op.has_side_effects() {
                continue;
            }
            let node = g.node(id);
            let key = NodeKey {
                op: op_key(&node.op),
                inputs: node.inputs.clone(),
                result_types: node.outputs.iter().map(|&v| g.value_type(v).clone()).collect(),
            };
            match first.get(&key) {
                Some(earlier) => {
                    for (&dup, &kept) in node.outputs.iter().zip(earlier) {
                        replacement.insert(dup, kept);
                    }
                    merged.insert(id);
                }
                None => {
                    let outputs = node.outputs.clone();
                    first.insert(key, outputs);
                }
            }
        }
        for v in g.outputs_mut() {
            if let Some(&r) = replacement.get(v) {
                *v = r;
            }
        }
        g.remove_nodes(&merged);
        Ok(Changed::from(!merged.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use kiln_ir::{BinaryOp, Dim, Op, Shape, TensorType};

    use super::*;

    fn f32_ty(dims: &[u64]) -> TensorType {
        TensorType::of(DType::F32, dims)
    }

    fn run(g: &mut Graph) -> Changed {
        CommonSubexpressionElimination.run(g, &mut PassContext::new()).unwrap()
    }

    fn constant(g: &mut Graph, value: f32) -> ValueId {
        let t = Tensor::scalar_f32(value);
        let ty = t.ty();
        g.add_node(Op::Constant { value: t }, vec![], vec![ty])[0]
    }

    #[test]
    fn merges_duplicated_norm_chain_and_redirects_uses() {
        let mut g = Graph::new("g");
        let x = g.add_input(f32_ty(&[2, 8]));
        let w1 = g.add_node(Op::Weight { name: "norm.weight".into() }, vec![], vec![f32_ty(&[8])])[0];
        let w2 = g.add_node(Op::Weight { name: "norm.weight".into() }, vec![], vec![f32_ty(&[8])])[0];
        let n1 = g.add_node(Op::RmsNorm { eps: 1e-5, offset: 0.0 }, vec![x, w1], vec![f32_ty(&[2, 8])])[0];
        let n2 = g.add_node(Op::RmsNorm { eps: 1e-5, offset: 0.0 }, vec![x, w2], vec![f32_ty(&[2, 8])])[0];
        let sum = g.add_node(Op::Binary(BinaryOp::Add), vec![n1, n2], vec![f32_ty(&[2, 8])])[0];
        g.set_outputs(vec![sum, n2]);

        assert_eq!(run(&mut g), Changed::Yes);
        let names: Vec<_> = g.nodes().map(|(_, n)| n.op.name()).collect();
        assert_eq!(names, ["weight", "rms_norm", "add"]);
        let (_, add) = g.nodes().last().unwrap();
        assert_eq!(add.inputs, [n1, n1]);
        assert_eq!(g.outputs(), [sum, n1]);
        assert_eq!(g.node(g.producer(n1).unwrap()).inputs, [x, w1]);
        assert_eq!(run(&mut g), Changed::No);
    }

    #[test]
    fn different_attributes_operands_or_types_are_not_merged() {
        let mut g = Graph::new("g");
        let x = g.add_input(f32_ty(&[2, 8]));
        let y = g.add_input(f32_ty(&[2, 8]));
        let w = g.add_node(Op::Weight { name: "a".into() }, vec![], vec![f32_ty(&[8])])[0];
        let other_w = g.add_node(Op::Weight { name: "b".into() }, vec![], vec![f32_ty(&[8])])[0];
        let mut outs = vec![other_w];
        for (eps, offset, input) in [(1e-5, 0.0, x), (1e-6, 0.0, x), (1e-5, 1.0, x), (1e-5, 0.0, y)] {
            outs.push(g.add_node(Op::RmsNorm { eps, offset }, vec![input, w], vec![f32_ty(&[2, 8])])[0]);
        }
        // Same op and operands, but one result type is less refined: left for shape inference.
        let unrefined = TensorType::new(DType::F32, Shape(vec![Dim::Unknown, Dim::Static(8)]));
        outs.push(g.add_node(Op::RmsNorm { eps: 1e-5, offset: 0.0 }, vec![x, w], vec![unrefined])[0]);
        // Non-commutative reuse of operands in a different order.
        outs.push(g.add_node(Op::Binary(BinaryOp::Sub), vec![x, y], vec![f32_ty(&[2, 8])])[0]);
        outs.push(g.add_node(Op::Binary(BinaryOp::Sub), vec![y, x], vec![f32_ty(&[2, 8])])[0]);
        g.set_outputs(outs);
        let before = g.clone();
        assert_eq!(run(&mut g), Changed::No);
        assert_eq!(g, before);
    }

    #[test]
    fn constants_compare_by_bit_pattern() {
        let mut g = Graph::new("g");
        let zero = constant(&mut g, 0.0);
        let neg_zero = constant(&mut g, -0.0);
        let nan = constant(&mut g, f32::NAN);
        let same_nan = constant(&mut g, f32::NAN);
        let other_nan = constant(&mut g, f32::from_bits(f32::NAN.to_bits() | 1));
        let zero_again = constant(&mut g, 0.0);
        let int_zero = {
            let t = Tensor::scalar_i64(0);
            let ty = t.ty();
            g.add_node(Op::Constant { value: t }, vec![], vec![ty])[0]
        };
        g.set_outputs(vec![zero, neg_zero, nan, same_nan, other_nan, zero_again, int_zero]);

        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(g.outputs(), [zero, neg_zero, nan, nan, other_nan, zero, int_zero]);
        assert_eq!(g.order().len(), 5);
    }

    #[test]
    fn side_effecting_attention_is_never_merged() {
        let mut g = Graph::new("g");
        let qkv = TensorType::new(DType::F32, Shape(vec![Dim::Static(1), Dim::sym("seq"), 2u64.into(), 4u64.into()]));
        let q = g.add_input(qkv.clone());
        let pos = g.add_input(TensorType::new(DType::I64, Shape(vec![Dim::Static(1), Dim::sym("seq")])));
        let attn = |layer| Op::Attention { layer, scale: 0.5, causal: true, window: None, sinks: 0, softcap: None };
        let cached1 = g.add_node(attn(Some(0)), vec![q, q, q, pos], vec![qkv.clone()])[0];
        let cached2 = g.add_node(attn(Some(0)), vec![q, q, q, pos], vec![qkv.clone()])[0];
        let pure1 = g.add_node(attn(None), vec![q, q, q, pos], vec![qkv.clone()])[0];
        let pure2 = g.add_node(attn(None), vec![q, q, q, pos], vec![qkv.clone()])[0];
        g.set_outputs(vec![cached1, cached2, pure1, pure2]);

        assert_eq!(run(&mut g), Changed::Yes);
        assert_eq!(g.outputs(), [cached1, cached2, pure1, pure1]);
        assert_eq!(g.order().len(), 3);
    }
}
