//! The SSA graph: values with types, nodes in program order, graph inputs and outputs.
//!
//! A graph may be invalid while it is being built or after the parser read a broken file; the
//! verifier ([`crate::verify`]) decides validity and reports every problem. So nothing here panics on
//! malformed structure, except indexing with an id that does not belong to the graph.

use std::fmt;

use crate::{Op, TensorType};

/// An SSA value, printed `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

/// A node (one op application).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    /// The i-th graph input.
    Input(usize),
    /// Result `index` of a node.
    Node { node: NodeId, index: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    pub ty: TensorType,
    pub def: ValueDef,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// A computation graph. Nodes live in an arena; `order` lists the live ones in program order, so
/// removing a node is removing it from `order`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    values: Vec<ValueData>,
    nodes: Vec<Node>,
    order: Vec<NodeId>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds a graph input of type `ty`.
    pub fn add_input(&mut self, ty: TensorType) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(ValueData { ty, def: ValueDef::Input(self.inputs.len()) });
        self.inputs.push(id);
        id
    }

    /// Appends a node with explicitly given result types (one per result); no checking happens here.
    pub fn add_node(&mut self, op: Op, inputs: Vec<ValueId>, output_types: Vec<TensorType>) -> Vec<ValueId> {
        let node = NodeId(self.nodes.len() as u32);
        let outputs: Vec<ValueId> = output_types
            .into_iter()
            .enumerate()
            .map(|(index, ty)| {
                let id = ValueId(self.values.len() as u32);
                self.values.push(ValueData { ty, def: ValueDef::Node { node, index } });
                id
            })
            .collect();
        self.nodes.push(Node { op, inputs, outputs: outputs.clone() });
        self.order.push(node);
        outputs
    }

    /// Appends a single-result node with its result type inferred from the inputs.
    pub fn push(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, crate::infer::InferError> {
        let types = crate::infer::infer_node(self, &op, inputs)?;
        if types.len() != 1 {
            return Err(crate::infer::InferError::new(format!(
                "`{}` has {} results; use push_multi",
                op.name(),
                types.len()
            )));
        }
        Ok(self.add_node(op, inputs.to_vec(), types)[0])
    }

    /// Appends a node with its result types inferred from the inputs.
    pub fn push_multi(&mut self, op: Op, inputs: &[ValueId]) -> Result<Vec<ValueId>, crate::infer::InferError> {
        let types = crate::infer::infer_node(self, &op, inputs)?;
        Ok(self.add_node(op, inputs.to_vec(), types))
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn outputs_mut(&mut self) -> &mut Vec<ValueId> {
        &mut self.outputs
    }

    /// Live nodes in program order.
    pub fn order(&self) -> &[NodeId] {
        &self.order
    }

    /// Live nodes in program order with their ids.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.order.iter().map(|&id| (id, &self.nodes[id.index()]))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// Whether `id` names a value of this graph.
    pub fn contains_value(&self, id: ValueId) -> bool {
        id.index() < self.values.len()
    }

    pub fn value(&self, id: ValueId) -> &ValueData {
        &self.values[id.index()]
    }

    pub fn value_type(&self, id: ValueId) -> &TensorType {
        &self.values[id.index()].ty
    }

    pub fn set_value_type(&mut self, id: ValueId, ty: TensorType) {
        self.values[id.index()].ty = ty;
    }

    /// Number of values ever created (ids are below this).
    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    /// The node defining `id`, if it is not a graph input.
    pub fn producer(&self, id: ValueId) -> Option<NodeId> {
        match self.values[id.index()].def {
            ValueDef::Node { node, .. } => Some(node),
            ValueDef::Input(_) => None,
        }
    }

    /// The `constant` tensor behind `id`, if it is produced by a `constant` node.
    pub fn constant_value(&self, id: ValueId) -> Option<&crate::Tensor> {
        if !self.contains_value(id) {
            return None;
        }
        match &self.node(self.producer(id)?).op {
            Op::Constant { value } => Some(value),
            _ => None,
        }
    }

    /// Removes nodes from program order (their values become dangling; the verifier catches uses).
    pub fn remove_nodes(&mut self, dead: &std::collections::HashSet<NodeId>) {
        self.order.retain(|n| !dead.contains(n));
    }

    /// Replaces the live node order, e.g. after a pass inserted nodes; `order` must hold existing ids.
    pub fn set_order(&mut self, order: Vec<NodeId>) {
        self.order = order;
    }

    /// Rewrites every use of `from` (node operands and graph outputs) to `to`.
    pub fn replace_all_uses(&mut self, from: ValueId, to: ValueId) {
        for &n in &self.order {
            for v in &mut self.nodes[n.index()].inputs {
                if *v == from {
                    *v = to;
                }
            }
        }
        for v in &mut self.outputs {
            if *v == from {
                *v = to;
            }
        }
    }

    /// For each value, how many live operands and graph outputs use it.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.values.len()];
        for (_, node) in self.nodes() {
            for v in &node.inputs {
                if let Some(c) = counts.get_mut(v.index()) {
                    *c += 1;
                }
            }
        }
        for v in &self.outputs {
            if let Some(c) = counts.get_mut(v.index()) {
                *c += 1;
            }
        }
        counts
    }

    /// A copy with live nodes and values renumbered densely in program order (inputs first), which is
    /// the numbering the text form prints.
    pub fn compacted(&self) -> Graph {
        let mut g = Graph::new(self.name.clone());
        let mut map = vec![None; self.values.len()];
        for &v in &self.inputs {
            map[v.index()] = Some(g.add_input(self.value_type(v).clone()));
        }
        // A use of a value that no live node defines keeps an id past the end, so the verifier of the
        // copy still reports it.
        let remap =
            |map: &Vec<Option<ValueId>>, v: ValueId| map.get(v.index()).copied().flatten().unwrap_or(ValueId(u32::MAX));
        let mut pending = Vec::new();
        for (_, node) in self.nodes() {
            let types = node.outputs.iter().map(|&o| self.value_type(o).clone()).collect();
            let new_outputs = g.add_node(node.op.clone(), Vec::new(), types);
            for (&old, &new) in node.outputs.iter().zip(&new_outputs) {
                map[old.index()] = Some(new);
            }
            pending.push(node.inputs.clone());
        }
        let order = g.order.clone();
        for (nid, inputs) in order.into_iter().zip(pending) {
            let new_inputs = inputs.iter().map(|&v| remap(&map, v)).collect();
            g.node_mut(nid).inputs = new_inputs;
        }
        g.outputs = self.outputs.iter().map(|&v| remap(&map, v)).collect();
        g
    }
}
