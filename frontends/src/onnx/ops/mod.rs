//! The per-op import table: one function per ONNX operator (grouped by kind in the sibling files),
//! each mapping a node onto one or a few kiln IR ops, with the semantics of the model's opset.
//!
//! [`NodeCx`] gives an importer its inputs, attributes and opset; it emits IR through the
//! [`Builder`](super::graph_import::Builder). Composite ONNX ops (LayerNormalization, Gemm, the loss
//! functions, ...) become several IR ops.

mod activation;
mod attention;
mod elementwise;
mod loss;
mod nn;
mod reduce;
mod shape;
mod window;

use kiln_ir::{DType, Op, Tensor, TensorData, TensorType, ValueId};

use super::OnnxError;
use super::graph_import::{Builder, node_label};
use super::proto::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};
use super::tensor_data::decode_tensor;

/// Why a node could not be imported.
#[derive(Debug)]
pub enum NodeFail {
    /// The node is invalid (bad attributes, types that do not fit).
    Bad(String),
    /// A feature of the op that kiln does not implement.
    Unsupported(String),
    /// The op itself is unknown to kiln.
    UnknownOp,
    Onnx(OnnxError),
}

impl From<kiln_ir::infer::InferError> for NodeFail {
    fn from(e: kiln_ir::infer::InferError) -> Self {
        NodeFail::Bad(e.message)
    }
}

impl From<kiln_ir::eval::EvalError> for NodeFail {
    fn from(e: kiln_ir::eval::EvalError) -> Self {
        NodeFail::Bad(e.to_string())
    }
}

impl From<OnnxError> for NodeFail {
    fn from(e: OnnxError) -> Self {
        NodeFail::Onnx(e)
    }
}

pub type R<T> = Result<T, NodeFail>;

pub fn bad<T>(message: impl Into<String>) -> R<T> {
    Err(NodeFail::Bad(message.into()))
}

pub fn unsupported<T>(what: impl Into<String>) -> R<T> {
    Err(NodeFail::Unsupported(what.into()))
}

/// One node being imported.
pub struct NodeCx<'b, 'a> {
    pub b: &'b mut Builder<'a>,
    pub node: &'b NodeProto,
    pub opset: i64,
    inputs: Vec<Option<ValueId>>,
}

impl NodeCx<'_, '_> {
    pub fn n_inputs(&self) -> usize {
        self.inputs.len()
    }

    /// Required input `i`.
    pub fn input(&self, i: usize) -> R<ValueId> {
        match self.inputs.get(i).copied().flatten() {
            Some(v) => Ok(v),
            None => bad(format!("input {i} is required but missing")),
        }
    }

    /// Optional input `i` (absent or given as the empty name).
    pub fn opt_input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }

    pub fn all_inputs(&self) -> R<Vec<ValueId>> {
        (0..self.inputs.len()).map(|i| self.input(i)).collect()
    }

    /// How many named outputs the node declares.
    pub fn n_outputs(&self) -> usize {
        self.node.output.iter().rposition(|o| !o.is_empty()).map_or(0, |i| i + 1)
    }

    pub fn wants_output(&self, i: usize) -> bool {
        self.node.output.get(i).is_some_and(|o| !o.is_empty())
    }

    pub fn ty(&self, v: ValueId) -> TensorType {
        self.b.ty(v).clone()
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.b.ty(v).dtype
    }

    pub fn rank(&self, v: ValueId) -> usize {
        self.b.ty(v).rank()
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i())
    }

    pub fn attr_f(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f())
    }

    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    pub fn attr_floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }

    pub fn attr_s(&self, name: &str, default: &str) -> String {
        self.attr(name).map_or(default.to_string(), |a| String::from_utf8_lossy(a.s()).into_owned())
    }

    pub fn attr_graph(&self, name: &str) -> R<&GraphProto> {
        match self.attr(name) {
            Some(a) if a.r#type() == AttributeType::Graph || a.g.is_some() => {
                a.g.as_ref().ok_or_else(|| NodeFail::Bad(format!("attribute `{name}` holds no graph")))
            }
            _ => bad(format!("attribute `{name}` (a graph) is required")),
        }
    }

    pub fn attr_tensor(&self, name: &str) -> R<Option<Tensor>> {
        match self.attr(name).and_then(|a| a.t.as_ref()) {
            Some(tp) => Ok(Some(decode_tensor(tp, None)?.to_tensor())),
            None => Ok(None),
        }
    }

    pub fn push(&mut self, op: Op, inputs: &[ValueId]) -> R<ValueId> {
        self.b.push(op, inputs)
    }

    pub fn push_multi(&mut self, op: Op, inputs: &[ValueId]) -> R<Vec<ValueId>> {
        self.b.push_multi(op, inputs)
    }

    pub fn constant(&mut self, t: Tensor) -> ValueId {
        self.b.constant(t)
    }

    pub fn const_i64(&mut self, values: &[i64]) -> ValueId {
        self.b.constant(Tensor::i64(vec![values.len()], values.to_vec()).expect("1-D"))
    }

    pub fn scalar_i64(&mut self, x: i64) -> ValueId {
        self.b.constant(Tensor::scalar_i64(x))
    }

    /// A rank-0 constant of `dtype` holding `x`.
    pub fn scalar(&mut self, dtype: DType, x: f64) -> R<ValueId> {
        let data = TensorData::from_f64(dtype, [x]).map_err(|e| NodeFail::Bad(e.to_string()))?;
        Ok(self.b.constant(Tensor::new(vec![], data).expect("scalar")))
    }

    /// A scalar of `v`'s dtype.
    pub fn scalar_like(&mut self, v: ValueId, x: f64) -> R<ValueId> {
        let d = self.dtype(v);
        self.scalar(d, x)
    }

    /// The value of input `v` at import time, or an "unsupported" error naming `what`.
    pub fn known(&mut self, v: ValueId, what: &str) -> R<Tensor> {
        match self.b.known_value(v) {
            Some(t) => Ok(t),
            None => unsupported(format!("`{what}` computed at run time (kiln needs it when the graph is imported)")),
        }
    }

    pub fn known_ints(&mut self, v: ValueId, what: &str) -> R<Vec<i64>> {
        let t = self.known(v, what)?;
        if !t.dtype().is_int() {
            return bad(format!("`{what}` must be integers, not {}", t.ty()));
        }
        Ok(t.to_i64_vec())
    }

    /// Casts `v` to `dtype` unless it already has it.
    pub fn cast(&mut self, v: ValueId, dtype: DType) -> R<ValueId> {
        if self.dtype(v) == dtype { Ok(v) } else { self.push(Op::cast(dtype), &[v]) }
    }

    /// `Shape(v)` as a 1-D i64 value.
    pub fn shape_of(&mut self, v: ValueId) -> R<ValueId> {
        self.push(Op::Shape { start: 0, end: None }, &[v])
    }

    /// Dim `axis` of `v` as an i64 scalar.
    pub fn dim_of(&mut self, v: ValueId, axis: usize) -> R<ValueId> {
        let s = self.push(Op::Shape { start: axis as i64, end: Some(axis as i64 + 1) }, &[v])?;
        self.push(Op::Squeeze { axes: vec![0] }, &[s])
    }

    /// Normalises `axis` against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> R<usize> {
        kiln_ir::infer::normalize_axis(axis, rank, "axis").map_err(NodeFail::Bad)
    }
}

/// Imports one node, binding its outputs in the current scope.
pub fn import_node(b: &mut Builder, node: &NodeProto) -> Result<(), OnnxError> {
    let label = node_label(node, 0);
    let op_type = node.op_type().to_string();
    let opset = b.opset;
    if !matches!(node.domain(), "" | "ai.onnx") {
        return Err(OnnxError::UnsupportedOp { node: label, op: op_type, domain: node.domain().into(), opset });
    }
    let inputs = node
        .input
        .iter()
        .map(|n| {
            if n.is_empty() {
                Ok(None)
            } else {
                b.lookup(n).map(Some).ok_or_else(|| OnnxError::UnknownInput {
                    node: label.clone(),
                    op: op_type.clone(),
                    input: n.clone(),
                })
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut cx = NodeCx { b, node, opset, inputs };
    let result = dispatch(&mut cx, &op_type);
    let outputs = result.map_err(|f| match f {
        NodeFail::Bad(message) => OnnxError::BadNode { node: label.clone(), op: op_type.clone(), opset, message },
        NodeFail::Unsupported(what) => {
            OnnxError::UnsupportedFeature { node: label.clone(), op: op_type.clone(), opset, what }
        }
        NodeFail::UnknownOp => {
            OnnxError::UnsupportedOp { node: label.clone(), op: op_type.clone(), domain: String::new(), opset }
        }
        NodeFail::Onnx(e) => e,
    })?;
    for (i, name) in node.output.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        match outputs.get(i) {
            Some(&v) => b.bind(name, v),
            None => {
                return Err(OnnxError::UnsupportedFeature {
                    node: label,
                    op: op_type,
                    opset,
                    what: format!("output {i} (`{name}`)"),
                });
            }
        }
    }
    Ok(())
}

fn dispatch(cx: &mut NodeCx, op_type: &str) -> R<Vec<ValueId>> {
    if let Some(r) = elementwise::import(cx, op_type) {
        return r;
    }
    if let Some(r) = activation::import(cx, op_type) {
        return r;
    }
    if let Some(r) = shape::import(cx, op_type) {
        return r;
    }
    if let Some(r) = reduce::import(cx, op_type) {
        return r;
    }
    if let Some(r) = attention::import(cx, op_type) {
        return r;
    }
    if let Some(r) = window::import(cx, op_type) {
        return r;
    }
    if let Some(r) = loss::import(cx, op_type) {
        return r;
    }
    if let Some(r) = nn::import(cx, op_type) {
        return r;
    }
    if op_type == "If" {
        return super::control_flow::import_if(cx);
    }
    if op_type == "Loop" {
        return super::loop_unroll::import_loop(cx);
    }
    Err(NodeFail::UnknownOp)
}
