//! Graph-level import: opsets, scopes of names, initializers, graph inputs (dynamic dims become
//! symbolic dims), nodes in dependency order (with missing inputs and cycles reported), outputs, and
//! the [`Builder`] every op importer emits IR through (it folds small all-constant nodes, so shape
//! arithmetic is known where ops need it, and can evaluate what a value is computed from when the
//! graph's structure depends on it, as a Loop's trip count does).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use kiln_ir::{DType, Dim, Graph, Model, ModelMeta, Op, Shape, Tensor, TensorType, ValueDef, ValueId, WeightStore};

use super::dtype::dtype_of;
use super::ops::{self, NodeFail};
use super::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto, type_proto};
use super::tensor_data::{RawTensor, decode_tensor};
use super::{ImportOptions, OnnxError, OnnxImport, cache_interface};

/// Initializers and `Constant` values up to this many elements become inline `constant` ops (shape
/// arithmetic, scalars); larger ones become named weights.
pub const MAX_INLINE_ELEMENTS: usize = 1024;

/// Folded results up to this many elements replace their node by a constant.
const MAX_FOLDED_ELEMENTS: usize = 1 << 16;

/// Emits IR for one model: the graph under construction, its weights, and the name scopes.
pub struct Builder<'a> {
    pub graph: Graph,
    pub weights: WeightStore,
    /// The default-domain opset the model imports.
    pub opset: i64,
    options: &'a ImportOptions,
    model_dir: Option<&'a Path>,
    /// Innermost scope last; subgraphs (If branches) push a scope that sees the outer ones.
    scopes: Vec<HashMap<String, ValueId>>,
    /// ONNX names of the IR graph inputs, by value.
    input_names: HashMap<ValueId, String>,
    specialized: BTreeSet<String>,
}

impl<'a> Builder<'a> {
    /// The value an ONNX name refers to in the current scopes.
    pub fn lookup(&self, name: &str) -> Option<ValueId> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    pub fn bind(&mut self, name: &str, v: ValueId) {
        self.scopes.last_mut().expect("a scope is open while importing").insert(name.to_string(), v);
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.graph.value_type(v)
    }

    /// The value of `v` when it is known at import time: a constant, or a graph input whose value the
    /// options supply (the import is then specialised to it).
    pub fn known_value(&mut self, v: ValueId) -> Option<Tensor> {
        if let Some(t) = self.graph.constant_value(v) {
            return Some(t.clone());
        }
        if let ValueDef::Input(_) = self.graph.value(v).def {
            let name = self.input_names.get(&v)?;
            let t = self.options.input_values.get(name)?.clone();
            self.specialized.insert(name.clone());
            return Some(t);
        }
        None
    }

    /// The value of `v` when it can be computed at import time: [`Builder::known_value`], or the result
    /// of evaluating the generic nodes `v` is computed from, when every value they start from is known
    /// (constants, and graph inputs whose values the options supply; the import is then specialised to
    /// those inputs). `None` when some value on the way is not known, an op is not evaluable (a weight,
    /// a model-level op), evaluation fails, or a tensor on the way exceeds the folding size.
    ///
    /// Nodes folded at push time cover all-constant inputs; this reaches further, through values that
    /// stay run-time values in the graph, because a Loop's trip count decides how many times its body
    /// is imported: the graph then holds the unrolled body, specialised to the inputs recorded here.
    pub fn value_at_import(&mut self, v: ValueId) -> Option<Tensor> {
        let mut memo: HashMap<ValueId, Tensor> = HashMap::new();
        let mut used_inputs: BTreeSet<String> = BTreeSet::new();
        // Depth-first with an explicit stack (a long chain of nodes must not overflow the call stack); a
        // value is evaluated once all the inputs of its producer are in `memo`.
        let mut stack = vec![v];
        while let Some(&top) = stack.last() {
            if memo.contains_key(&top) {
                stack.pop();
                continue;
            }
            if let Some(t) = self.graph.constant_value(top) {
                memo.insert(top, t.clone());
                stack.pop();
                continue;
            }
            let node = match self.graph.value(top).def {
                ValueDef::Input(_) => {
                    let name = self.input_names.get(&top)?;
                    let t = self.options.input_values.get(name)?;
                    used_inputs.insert(name.clone());
                    memo.insert(top, t.clone());
                    stack.pop();
                    continue;
                }
                ValueDef::Node { node, .. } => self.graph.node(node),
            };
            let pending: Vec<ValueId> = node.inputs.iter().copied().filter(|i| !memo.contains_key(i)).collect();
            if !pending.is_empty() {
                stack.extend(pending);
                continue;
            }
            let args: Vec<&Tensor> = node.inputs.iter().map(|i| &memo[i]).collect();
            if args.iter().any(|t| t.len() > MAX_FOLDED_ELEMENTS) {
                return None;
            }
            let results = kiln_ir::eval::eval_generic(&node.op, &args).ok()??;
            if results.iter().any(|t| t.len() > MAX_FOLDED_ELEMENTS) || results.len() != node.outputs.len() {
                return None;
            }
            let outputs = node.outputs.clone();
            memo.extend(outputs.into_iter().zip(results));
            stack.pop();
        }
        self.specialized.extend(used_inputs);
        memo.remove(&v)
    }

    pub fn constant(&mut self, t: Tensor) -> ValueId {
        let ty = t.ty();
        self.graph.add_node(Op::Constant { value: t }, vec![], vec![ty])[0]
    }

    /// A decoded tensor as an inline constant (small) or a named weight (large).
    pub fn tensor_value(&mut self, raw: &RawTensor, fallback_name: &str) -> Result<ValueId, OnnxError> {
        // Strings have no byte layout a weight could hold, so they are constants at any size.
        if raw.num_elements() <= MAX_INLINE_ELEMENTS || raw.strings.is_some() {
            return Ok(self.constant(raw.to_tensor()));
        }
        let mut name = if raw.name.is_empty() { fallback_name.to_string() } else { raw.name.clone() };
        while self.weights.contains(&name) {
            name.push('_');
        }
        let dims: Vec<u64> = raw.shape.iter().map(|&d| d as u64).collect();
        let ty = TensorType::of(raw.dtype, &dims);
        self.weights
            .insert(name.clone(), ty.clone(), kiln_ir::WeightPayload::Dense(raw.bytes.clone()))
            .map_err(|e| OnnxError::BadTensor { name: name.clone(), message: e.to_string() })?;
        Ok(self.graph.add_node(Op::Weight { name }, vec![], vec![ty])[0])
    }

    /// Appends `op` with inferred result types; when every input is a constant and the results are
    /// small, the node is evaluated now and its results become constants.
    pub fn push_multi(&mut self, op: Op, inputs: &[ValueId]) -> Result<Vec<ValueId>, NodeFail> {
        let consts: Option<Vec<&Tensor>> = inputs.iter().map(|&v| self.graph.constant_value(v)).collect();
        if let Some(consts) = consts
            && !matches!(op, Op::Weight { .. } | Op::Constant { .. })
        {
            let small = consts.iter().all(|t| t.len() <= MAX_FOLDED_ELEMENTS);
            if small
                && let Some(results) = kiln_ir::eval::eval_generic(&op, &consts)?
                && results.iter().all(|t| t.len() <= MAX_FOLDED_ELEMENTS)
            {
                // Inference still runs, so a type error is reported as it would be without folding.
                kiln_ir::infer::infer_node(&self.graph, &op, inputs)?;
                return Ok(results.into_iter().map(|t| self.constant(t)).collect());
            }
        }
        if let Op::Shape { start, end } = &op
            && let [x] = inputs
            && let Some(dims) = self.ty(*x).shape.as_static()
        {
            let t = Tensor::new(dims.clone(), kiln_ir::TensorData::Bool(vec![false; dims.iter().product()]))
                .ok()
                .filter(|t| t.len() <= MAX_FOLDED_ELEMENTS);
            if let Some(t) = t
                && let Some(r) = kiln_ir::eval::eval_generic(&Op::Shape { start: *start, end: *end }, &[&t])?
            {
                return Ok(r.into_iter().map(|t| self.constant(t)).collect());
            }
        }
        Ok(self.graph.push_multi(op, inputs)?)
    }

    pub fn push(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, NodeFail> {
        let name = op.name();
        let mut r = self.push_multi(op, inputs)?;
        if r.len() != 1 {
            return Err(NodeFail::Bad(format!("`{name}` gave {} results where one was expected", r.len())));
        }
        Ok(r.remove(0))
    }

    pub fn push_scope(&mut self) {
        self.scopes.push(HashMap::new());
    }

    pub fn pop_scope(&mut self) {
        self.scopes.pop();
    }
}

/// The default-domain opset of the model.
fn default_opset(model: &ModelProto) -> Result<i64, OnnxError> {
    model.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map(|o| o.version()).ok_or_else(|| {
        OnnxError::BadModel { message: "the model imports no version of the default (ai.onnx) operator set".into() }
    })
}

pub fn import_model(
    model: &ModelProto,
    model_dir: Option<&Path>,
    source: &str,
    options: &ImportOptions,
) -> Result<OnnxImport, OnnxError> {
    let graph = model.graph.as_ref().ok_or(OnnxError::NoGraph)?;
    let opset = default_opset(model)?;
    let name = if graph.name().is_empty() { "onnx".to_string() } else { sanitize_name(graph.name()) };
    let mut b = Builder {
        graph: Graph::new(name),
        weights: WeightStore::new(),
        opset,
        options,
        model_dir,
        scopes: vec![HashMap::new()],
        input_names: HashMap::new(),
        specialized: BTreeSet::new(),
    };
    let initializer_names: HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let mut cache = cache_interface::detect(graph)?;
    let mut input_names = Vec::new();
    for vi in &graph.input {
        // An input with an initializer of the same name is a constant with an overridable default;
        // kiln uses the default.
        if initializer_names.contains(vi.name()) {
            continue;
        }
        // The ONNX Runtime cache interface is bound below, not a run-time input.
        if cache.as_ref().is_some_and(|c| c.binds_input(vi.name())) {
            continue;
        }
        let ty = value_info_type(vi, "graph input")?;
        let v = b.graph.add_input(ty);
        b.input_names.insert(v, vi.name().to_string());
        b.bind(vi.name(), v);
        input_names.push(vi.name().to_string());
    }
    if let Some(cache) = &mut cache {
        cache.bind_inputs(&mut b, &graph.input)?;
    }
    let outputs = import_body(&mut b, graph)?;
    for (vi, &v) in graph.output.iter().zip(&outputs) {
        let declared = value_info_type(vi, "graph output");
        // Element types must agree; declared shapes may be less precise than inferred ones.
        if let Ok(declared) = declared
            && declared.dtype != b.ty(v).dtype
        {
            return Err(OnnxError::BadModel {
                message: format!(
                    "graph output `{}` is declared {} but computes {}",
                    vi.name(),
                    declared.dtype,
                    b.ty(v).dtype
                ),
            });
        }
    }
    let (output_names, outputs): (Vec<String>, Vec<ValueId>) = graph
        .output
        .iter()
        .zip(outputs)
        .filter(|(vi, _)| !cache.as_ref().is_some_and(|c| c.drops_output(vi.name())))
        .map(|(vi, v)| (vi.name().to_string(), v))
        .unzip();
    b.graph.set_outputs(outputs);
    if let Some(cache) = &cache {
        cache.drop_empty_concats(&mut b);
    }
    let mut meta = ModelMeta { source: source.to_string(), architecture: "onnx".into(), ..ModelMeta::default() };
    if let Some(&logits) = b.graph.outputs().first()
        && let Some(Dim::Static(vocab)) = b.ty(logits).shape.dims().last()
        && b.ty(logits).dtype == DType::F32
    {
        meta.vocab_size = *vocab;
    }
    let specialized_inputs = b.specialized.iter().cloned().collect();
    Ok(OnnxImport {
        model: Model { graph: b.graph, weights: b.weights, meta },
        input_names,
        output_names,
        specialized_inputs,
        cache_interface_layers: cache.map(|c| c.layers),
    })
}

/// Imports a graph's initializers and nodes into the current scope and returns its output values.
pub fn import_body(b: &mut Builder, graph: &GraphProto) -> Result<Vec<ValueId>, OnnxError> {
    for (i, tp) in graph.initializer.iter().enumerate() {
        let raw = decode_tensor(tp, b.model_dir)?;
        let v = b.tensor_value(&raw, &format!("initializer_{i}"))?;
        b.bind(tp.name(), v);
    }
    if !graph.sparse_initializer.is_empty() {
        return Err(OnnxError::UnsupportedType { what: "the graph".into(), kind: "sparse initializer".into() });
    }
    for &i in &topological_order(b, graph)? {
        ops::import_node(b, &graph.node[i])?;
    }
    graph
        .output
        .iter()
        .map(|o| b.lookup(o.name()).ok_or_else(|| OnnxError::UnknownOutput { name: o.name().to_string() }))
        .collect()
}

/// Every name a node reads: its inputs and the free names its subgraphs read from outer scopes.
pub fn names_read(node: &NodeProto) -> Vec<&str> {
    let mut out: Vec<&str> = node.input.iter().map(String::as_str).filter(|n| !n.is_empty()).collect();
    for a in &node.attribute {
        for g in a.g.iter().chain(&a.graphs) {
            let mut defined: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
            defined.extend(g.input.iter().map(|i| i.name()));
            for n in &g.node {
                defined.extend(n.output.iter().map(String::as_str));
            }
            for n in &g.node {
                out.extend(names_read(n).into_iter().filter(|x| !defined.contains(x)));
            }
        }
    }
    out
}

/// The nodes of `graph` in an order where every node follows the producers of what it reads.
fn topological_order(b: &Builder, graph: &GraphProto) -> Result<Vec<usize>, OnnxError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    let n = graph.node.len();
    let mut pending = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in graph.node.iter().enumerate() {
        for name in names_read(node) {
            match producer.get(name) {
                Some(&p) => {
                    pending[i] += 1;
                    users[p].push(i);
                }
                None if b.lookup(name).is_some() => {}
                None => {
                    return Err(OnnxError::UnknownInput {
                        node: node_label(node, i),
                        op: node.op_type().to_string(),
                        input: name.to_string(),
                    });
                }
            }
        }
    }
    // Kahn's algorithm, taking ready nodes in file order so the IR follows the file where it can.
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() < n {
        let nodes = (0..n).filter(|&i| pending[i] > 0).map(|i| node_label(&graph.node[i], i)).collect();
        return Err(OnnxError::Cycle { nodes });
    }
    Ok(order)
}

/// A node's name for messages: its name, or its op and index when unnamed.
pub fn node_label(node: &NodeProto, index: usize) -> String {
    if node.name().is_empty() { format!("{}#{index}", node.op_type()) } else { node.name().to_string() }
}

/// The kiln type of a graph input or output.
pub fn value_info_type(vi: &ValueInfoProto, what: &str) -> Result<TensorType, OnnxError> {
    let what = format!("{what} `{}`", vi.name());
    let value = vi.r#type.as_ref().and_then(|t| t.value.as_ref());
    let tensor = match value {
        Some(type_proto::Value::TensorType(t)) => t,
        Some(type_proto::Value::SequenceType(_)) => {
            return Err(OnnxError::UnsupportedType { what, kind: "sequence".into() });
        }
        Some(type_proto::Value::OptionalType(_)) => {
            return Err(OnnxError::UnsupportedType { what, kind: "optional".into() });
        }
        Some(type_proto::Value::MapType(_)) => return Err(OnnxError::UnsupportedType { what, kind: "map".into() }),
        Some(type_proto::Value::SparseTensorType(_)) => {
            return Err(OnnxError::UnsupportedType { what, kind: "sparse tensor".into() });
        }
        Some(type_proto::Value::OpaqueType(_)) => {
            return Err(OnnxError::UnsupportedType { what, kind: "opaque".into() });
        }
        None => return Err(OnnxError::BadModel { message: format!("{what} has no type") }),
    };
    let dtype = dtype_of(tensor.elem_type(), &what)?;
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| OnnxError::UnsupportedFeature {
            node: what.clone(),
            op: "graph".into(),
            opset: 0,
            what: "a tensor of unknown rank".into(),
        })?
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => Dim::Static(*n as u64),
            Some(super::proto::tensor_shape_proto::dimension::Value::DimParam(p)) if !p.is_empty() => {
                Dim::sym(&sanitize_name(p))
            }
            _ => Dim::Unknown,
        })
        .collect();
    Ok(TensorType::new(dtype, Shape(shape)))
}

/// A name usable as an IR symbol or graph name: identifier characters only, not starting with a digit.
pub fn sanitize_name(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}
