//! Raising: recognises, in a decoder graph of generic tensor ops (an ONNX export by
//! `torch.onnx.export(dynamo=True)` of a llama, qwen2 or gpt2 model), the subgraphs that compute the
//! model-level ops, and replaces them, so that the graph decodes with the runtime KV cache and
//! speculative decoding like an imported Hugging Face model.
//!
//! What it does, in order (each family in its own file):
//! 1. positions ([`raise_positions`](crate::raise_positions)): adds the `positions: i64[1, seq]` input of
//!    the decoder contract (`kiln_ir::model`) and gives it to the subgraph that computed `0..seq` from the
//!    ids' shape;
//! 2. attention ([`raise_attention`](crate::raise_attention)): finds every `softmax(q·kᵀ·scale + mask)·v`
//!    with a causal mask, checks all of them, and only if every one matches replaces them by `attention`
//!    ops with a KV-cache `layer` each, and adds the `tree_mask` input;
//! 3. rope, norms, MLP activations, linear layers, embeddings and the logits head (each also fine alone).
//!
//! Every match is checked on values, never assumed: constants (eps, scale, rotary frequencies) are read
//! from the graph, and the "plumbing" around them (transposes, GQA head repeats, the mask construction)
//! is evaluated on test tensors ([`crate::raise_probe`]). What does not match stays as it was and the
//! reason goes to [`PassContext::notes`] (`kiln ir` prints them). When the attention is not raised, the
//! graph keeps computing the whole sequence at each step: it has no `tree_mask` input and no cached
//! attention, and the runtime recomputes (`kiln_runtime::decoding::RecomputingExecutor`).
//!
//! Assumes a verified graph whose input 0 is the token ids `i64[1, seq]` and whose output 0 is the
//! logits; leaves alone graphs with other inputs, and graphs that already have the decoder signature (so
//! running it twice changes nothing). Exports with the ONNX Runtime / Optimum cache interface
//! (`attention_mask`, `past_key_values.*` in, `present.*` out) reach it in the logits-only form: the ONNX
//! importer binds that interface to an empty past first (`kiln_frontends`' `onnx/cache_interface.rs`).

use std::collections::HashMap;

use kiln_ir::{DType, Dim, Graph, NodeId, Op, Shape, Tensor, TensorType, ValueId, WeightStore};

use crate::pass::{Changed, Pass, PassContext, PassError, PassNote};
use crate::{raise_attention, raise_linear, raise_mlp, raise_norms, raise_positions, raise_rope};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaiseDecoder;

impl RaiseDecoder {
    pub const NAME: &'static str = "raise-decoder";
}

/// The state shared by the pattern families while they rewrite one graph.
pub(crate) struct Raiser<'g> {
    pub g: &'g mut Graph,
    pub weights: Option<&'g WeightStore>,
    pub new_weights: &'g mut WeightStore,
    pub notes: Vec<String>,
    /// Nodes created by raising, each with the node it is placed just before when the order is rebuilt.
    placed_before: HashMap<NodeId, NodeId>,
    /// The `positions` graph input, once added.
    pub positions: Option<ValueId>,
}

impl<'g> Raiser<'g> {
    pub fn new(g: &'g mut Graph, weights: Option<&'g WeightStore>, new_weights: &'g mut WeightStore) -> Raiser<'g> {
        Raiser { g, weights, new_weights, notes: Vec::new(), placed_before: HashMap::new(), positions: None }
    }

    /// The op and operands of the node defining `v` (`None` for graph inputs).
    pub fn def(&self, v: ValueId) -> Option<(&Op, &[ValueId])> {
        let node = self.g.node(self.g.producer(v)?);
        Some((&node.op, &node.inputs))
    }

    /// The live nodes that use `v`, in program order.
    pub fn users(&self, v: ValueId) -> Vec<NodeId> {
        self.g.nodes().filter(|(_, n)| n.inputs.contains(&v)).map(|(id, _)| id).collect()
    }

    /// The value of a constant or small weight (see [`crate::raise_probe::known_value`]).
    pub fn known(&self, v: ValueId) -> Option<Tensor> {
        crate::raise_probe::known_value(self.g, self.weights, v)
    }

    pub fn scalar(&self, v: ValueId) -> Option<f64> {
        crate::raise_probe::known_scalar(self.g, self.weights, v)
    }

    pub fn probe(&self) -> crate::raise_probe::Probe<'_> {
        crate::raise_probe::Probe::new(self.g, self.weights)
    }

    /// A probe for a step of `n` tokens: the ids (zeros) and, once added, the positions `0..n` bound, so
    /// that the shape computations an exporter threads through every layer evaluate.
    pub fn probe_at(&self, n: usize) -> crate::raise_probe::Probe<'_> {
        let ids = Tensor::i64(vec![1, n], vec![0; n]).expect("n ids");
        let probe = self.probe().bind(self.g.inputs()[0], ids);
        match self.positions {
            Some(p) => probe.bind(p, Tensor::i64(vec![1, n], (0..n as i64).collect()).expect("n positions")),
            None => probe,
        }
    }

    /// Appends a node (result type inferred), to be placed right before the node that defines `anchor`
    /// (or at the start when `anchor` is a graph input).
    pub fn emit(&mut self, op: Op, inputs: &[ValueId], anchor: ValueId) -> Result<ValueId, String> {
        let name = op.name();
        let v = self.g.push(op, inputs).map_err(|e| format!("building `{name}`: {}", e.message))?;
        let new = self.g.producer(v).expect("a pushed node defines its result");
        let before = self.g.producer(anchor).map(|a| *self.placed_before.get(&a).unwrap_or(&a));
        if let Some(before) = before {
            self.placed_before.insert(new, before);
        }
        Ok(v)
    }

    /// A `weight` op for `name` (of type `ty`), placed like [`Raiser::emit`]'s nodes.
    pub fn emit_weight(&mut self, name: String, ty: TensorType, anchor: ValueId) -> ValueId {
        let v = self.g.add_node(Op::Weight { name }, Vec::new(), vec![ty])[0];
        let new = self.g.producer(v).expect("a node result has a producer");
        if let Some(a) = self.g.producer(anchor) {
            let before = *self.placed_before.get(&a).unwrap_or(&a);
            self.placed_before.insert(new, before);
        }
        v
    }

    /// `x` as `[b, s, heads, d]` when it is `[b, heads, s, d]`: the operand of a transpose that made it so,
    /// or a new transpose.
    pub fn swap_heads_and_seq(&mut self, x: ValueId, anchor: ValueId) -> Result<ValueId, String> {
        if let Some((Op::Transpose { perm }, &[inner])) = self.def(x)
            && perm == &[0, 2, 1, 3]
        {
            return Ok(inner);
        }
        self.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[x], anchor)
    }

    /// Rebuilds program order after raising: every node where it was, new nodes just before the node
    /// they replaced, and each node's operands pulled in front of it where raising moved a producer.
    fn reorder(&mut self) {
        let old: Vec<NodeId> = self.g.order().to_vec();
        let position: HashMap<NodeId, usize> = old.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        // Sort keys: (position of the anchor, 0 for new nodes in creation order / 1 for the anchor itself).
        let mut keyed: Vec<((usize, usize, u32), NodeId)> = old
            .iter()
            .map(|&n| match self.placed_before.get(&n) {
                Some(before) => ((position.get(before).copied().unwrap_or(0), 0, n.0), n),
                None => ((position[&n], 1, 0), n),
            })
            .collect();
        keyed.sort();
        let mut placed = vec![false; self.g.num_values().max(1)];
        let mut emitted: std::collections::HashSet<NodeId> = std::collections::HashSet::new();
        let mut order = Vec::with_capacity(keyed.len());
        let live: std::collections::HashSet<NodeId> = old.iter().copied().collect();
        for (_, n) in keyed {
            let mut stack = vec![(n, false)];
            while let Some((id, expanded)) = stack.pop() {
                if emitted.contains(&id) {
                    continue;
                }
                if expanded {
                    emitted.insert(id);
                    order.push(id);
                    for &o in &self.g.node(id).outputs {
                        if let Some(p) = placed.get_mut(o.index()) {
                            *p = true;
                        }
                    }
                    continue;
                }
                stack.push((id, true));
                for &input in self.g.node(id).inputs.iter().rev() {
                    if let Some(p) = self.g.producer(input)
                        && live.contains(&p)
                        && !emitted.contains(&p)
                    {
                        stack.push((p, false));
                    }
                }
            }
        }
        self.g.set_order(order);
    }
}

/// Why a graph is not one raising applies to, or `None` when it is.
fn unsupported_signature(g: &Graph) -> Option<String> {
    let Some(&ids) = g.inputs().first() else {
        return Some("it has no inputs".into());
    };
    let ty = g.value_type(ids);
    if ty.dtype != DType::I64 || ty.rank() != 2 || ty.shape.dims()[0] != Dim::Static(1) {
        return Some(format!("input 0 is {ty}, not the token ids i64[1, seq]"));
    }
    if g.inputs().len() > 1 {
        return Some(format!(
            "it takes {} inputs; raising handles graphs whose only input is the token ids (export logits-only \
             graphs with input_ids alone, as tools/export_onnx.py does)",
            g.inputs().len()
        ));
    }
    match g.outputs().first() {
        Some(&logits) if g.value_type(logits).dtype == DType::F32 && g.value_type(logits).rank() == 3 => None,
        Some(&logits) => Some(format!("output 0 is {}, not logits f32[1, seq, vocab]", g.value_type(logits))),
        None => Some("it has no outputs".into()),
    }
}

impl Pass for RaiseDecoder {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError> {
        // Already a decoder (an imported Hugging Face model, or a graph raised before): nothing to do.
        if g.nodes().any(|(_, n)| matches!(n.op, Op::Attention { .. }))
            || g.inputs().len() >= 2 && {
                let t = g.value_type(g.inputs()[1]);
                t.dtype == DType::I64 && t.rank() == 2
            }
        {
            return Ok(Changed::No);
        }
        let note = |message: String| PassNote { pass: Self::NAME, message };
        if let Some(why) = unsupported_signature(g) {
            cx.notes.push(note(format!("not raised: {why}")));
            return Ok(Changed::No);
        }
        let weights = cx.weights;
        let mut r = Raiser::new(g, weights, &mut cx.new_weights);
        let fail = |e: String| PassError::Failed { pass: Self::NAME, message: e };

        let seq = r.g.value_type(r.g.inputs()[0]).shape.dims()[1].clone();
        let positions = r.g.add_input(TensorType::new(DType::I64, Shape(vec![Dim::Static(1), seq.clone()])));
        r.positions = Some(positions);
        let positions_found = raise_positions::raise(&mut r).map_err(fail)?;

        // Rope first: attention matching then finds q and k already rotated by `rope` ops, in the layout
        // the attention op takes.
        if positions_found {
            raise_rope::raise(&mut r).map_err(fail)?;
        }
        let sites = if positions_found { raise_attention::find(&mut r) } else { None };
        if let Some(sites) = sites {
            let tree_mask = r.g.add_input(TensorType::new(DType::Bool, Shape(vec![seq.clone(), seq])));
            raise_attention::apply(&mut r, sites, tree_mask).map_err(fail)?;
        }
        raise_norms::raise(&mut r).map_err(fail)?;
        raise_mlp::raise(&mut r).map_err(fail)?;
        raise_linear::raise(&mut r).map_err(fail)?;
        r.reorder();
        let notes = std::mem::take(&mut r.notes);
        cx.notes.extend(notes.into_iter().map(note));
        Ok(Changed::Yes)
    }
}
