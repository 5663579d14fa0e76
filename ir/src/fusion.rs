//! Elementwise fusion groups: the chains of elementwise ops that a backend runs as one kernel.
//!
//! The CUDA code generator emits one kernel per group and the CUDA runtime launches it in place of the
//! group's nodes; both call [`elementwise_groups`] on the same graph, so they agree on the groups without
//! recording them in the artifact. A group is a chain: each member after the first takes the previous
//! member's result, which nothing else uses (so it never has to reach memory), and every member's result
//! has the shape of the group's result. The other operands of the members are the group's inputs, read
//! with numpy broadcasting, except single-element constants, which a kernel carries as literals.

use crate::{Graph, NodeId, Op, ValueId};

/// At most this many tensor operands per group (the fused kernels take a fixed-size argument block).
pub const MAX_GROUP_INPUTS: usize = 8;

/// One fused chain of elementwise nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementwiseGroup {
    /// The members, in program order; each after the first consumes the previous one's result.
    pub nodes: Vec<NodeId>,
    /// Tensor operands read from memory, in first-use order (single-element constants excluded).
    pub inputs: Vec<ValueId>,
    /// The last member's result, the only value the group writes.
    pub output: ValueId,
    /// The group's place in [`elementwise_groups`]' order, which names its kernel.
    pub index: usize,
}

impl ElementwiseGroup {
    /// The deterministic kernel name for this group. It is named after its place in program order, not
    /// after node ids, so that the name survives the renumbering of a graph written to an artifact as text
    /// and parsed back.
    pub fn kernel_name(&self) -> String {
        format!("kiln_fused_{}", self.index)
    }
}

/// Whether `op` is computed element by element (with broadcasting) and so can join a fused group.
pub fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_)
            | Op::Binary(_)
            | Op::Compare(_)
            | Op::Where { .. }
            | Op::Cast { .. }
            | Op::Silu { .. }
            | Op::Gelu { .. }
            | Op::Swiglu { .. }
    )
}

/// Whether `v` is a constant of one element, which fused kernels inline as a literal.
pub fn is_inline_constant(g: &Graph, v: ValueId) -> bool {
    g.constant_value(v).is_some_and(|t| t.len() == 1 && !t.dtype().is_quantized())
}

/// The elementwise groups of `g`, in program order of their last node.
pub fn elementwise_groups(g: &Graph) -> Vec<ElementwiseGroup> {
    let uses = g.use_counts();
    let is_output = |v: ValueId| g.outputs().contains(&v);
    let mut groups: Vec<ElementwiseGroup> = Vec::new();
    // The group whose result is this value, while the group can still grow.
    let mut open: std::collections::HashMap<ValueId, usize> = std::collections::HashMap::new();
    for &id in g.order() {
        let node = g.node(id);
        if !is_elementwise(&node.op) || node.outputs.len() != 1 {
            continue;
        }
        let out = node.outputs[0];
        let extend = node.inputs.iter().enumerate().find_map(|(slot, &v)| {
            let &gi = open.get(&v)?;
            let fits = uses[v.index()] == 1
                && !is_output(v)
                && g.value_type(v).shape == g.value_type(out).shape
                && !node.inputs[..slot].contains(&v);
            fits.then_some((gi, v))
        });
        let new_inputs = |group_inputs: &[ValueId], chained: Option<ValueId>| -> Vec<ValueId> {
            let mut inputs = group_inputs.to_vec();
            for &v in &node.inputs {
                if Some(v) != chained && !is_inline_constant(g, v) && !inputs.contains(&v) {
                    inputs.push(v);
                }
            }
            inputs
        };
        if let Some((gi, chained)) = extend {
            let inputs = new_inputs(&groups[gi].inputs, Some(chained));
            if inputs.len() <= MAX_GROUP_INPUTS {
                open.remove(&chained);
                let group = &mut groups[gi];
                group.nodes.push(id);
                group.inputs = inputs;
                group.output = out;
                open.insert(out, gi);
                continue;
            }
        }
        let inputs = new_inputs(&[], None);
        groups.push(ElementwiseGroup { nodes: vec![id], inputs, output: out, index: 0 });
        open.insert(out, groups.len() - 1);
    }
    let position: std::collections::HashMap<NodeId, usize> =
        g.order().iter().enumerate().map(|(i, &n)| (n, i)).collect();
    groups.sort_by_key(|grp| position[grp.nodes.last().expect("groups are non-empty")]);
    for (i, grp) in groups.iter_mut().enumerate() {
        grp.index = i;
    }
    groups
}
