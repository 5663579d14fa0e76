//! The CPU reference executor: runs a graph node by node in program order on dense f32-computing
//! kernels, owning the KV cache that `attention` ops with a `layer` read and append to.
//!
//! Model-level ops (`embedding`, `rms_norm`, `layer_norm`, `linear`, `rope`, `attention`, `logits`) are
//! implemented in this module's siblings; every other op is evaluated by
//! [`kiln_ir::eval::eval_generic`], so generic semantics are written once. Weights stay in their stored
//! dtype and are read row by row by the ops that take them; other consumers get them materialised.
//! Intermediate values are freed after their last use.

use std::borrow::Cow;

use kiln_ir::{DType, Graph, Node, Op, Tensor, ValueDef, WeightStore};

use super::attention::{self, AttentionInputs, AttentionParams, View};
use super::kv_cache::KvCache;
use super::profile::{CpuProfile, StepKind};
use super::rope::RopeParams;
use super::shapes::{SymbolBindings, check_input, check_result};
use super::value::{Value, f32_to_tensor};
use super::{activation, embedding, linear, norm, rope};
use crate::RuntimeError;

/// Executes one graph on the CPU, keeping a KV cache across runs.
#[derive(Debug)]
pub struct CpuExecutor {
    graph: Graph,
    weights: WeightStore,
    kv: KvCache,
    /// For each value, how many operands and graph outputs use it.
    use_counts: Vec<usize>,
    /// Wall time per op when `KILN_CPU_PROFILE=1`, printed when the executor is dropped.
    profile: Option<CpuProfile>,
}

impl Drop for CpuExecutor {
    fn drop(&mut self) {
        if let Some(p) = &self.profile {
            eprint!("{}", p.report());
        }
    }
}

impl CpuExecutor {
    /// Builds an executor for `graph` with the weights it names, after [`kiln_ir::verify`] accepted
    /// both (every problem it finds is reported at once in [`RuntimeError::Verify`]).
    pub fn new(graph: Graph, weights: WeightStore) -> Result<CpuExecutor, RuntimeError> {
        kiln_ir::verify(&graph, Some(&weights))
            .map_err(|errors| RuntimeError::Verify { graph: graph.name.clone(), errors })?;
        // The verifier covers these too; the executor re-checks the few facts its indexing relies on,
        // so that a verifier gap can never become an out-of-bounds panic.
        check_structure(&graph, &weights)?;
        let use_counts = graph.use_counts();
        Ok(CpuExecutor { graph, weights, kv: KvCache::default(), use_counts, profile: CpuProfile::from_env() })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn weights(&self) -> &WeightStore {
        &self.weights
    }

    /// Number of tokens in the KV cache (every layer holds this many after a complete run).
    pub fn kv_len(&self) -> usize {
        self.kv.len()
    }

    /// Empties the KV cache, e.g. before a new, unrelated sequence.
    pub fn reset(&mut self) {
        self.kv.reset();
    }

    /// Keeps only the first `len` cached tokens (rolling back rejected speculative tokens).
    /// `len` above [`CpuExecutor::kv_len`] is an error.
    pub fn truncate_kv(&mut self, len: usize) -> Result<(), RuntimeError> {
        self.kv.truncate(len)
    }

    /// Keeps exactly the cache slots `keep`, in that order: slot `keep[i]` becomes slot `i` and the
    /// cache holds `keep.len()` tokens. Tree speculation uses it to keep the accepted path of a verified
    /// token tree. Since slot `j` is the token at position `j`, the kept slots must be the tokens of
    /// positions `0..keep.len()`. Indices at or past [`CpuExecutor::kv_len`], and repeated indices, are
    /// errors.
    pub fn compact_kv(&mut self, keep: &[usize]) -> Result<(), RuntimeError> {
        self.kv.compact(keep)
    }

    /// Runs the graph on `inputs` (one per graph input, matching the declared types; symbolic dims bind
    /// to the sizes they meet and must agree everywhere) and returns the graph outputs. A failed run
    /// leaves the KV cache as it was before the run.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let kv_before = self.kv.lengths();
        let result = self.run_nodes(inputs);
        if result.is_err() {
            self.kv.restore_lengths(&kv_before);
        }
        result
    }

    fn run_nodes(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let graph = &self.graph;
        if inputs.len() != graph.inputs().len() {
            return Err(RuntimeError::InputCount { expected: graph.inputs().len(), actual: inputs.len() });
        }
        let mut bindings = SymbolBindings::default();
        let mut values: Vec<Option<Value>> = vec![None; graph.num_values()];
        let mut remaining = self.use_counts.clone();
        // Tokens of the step (the ids' element count, the first input), for the profile's grouping.
        let step_tokens: usize = inputs.first().map_or(0, |t| t.shape().iter().product());
        let step_kind = StepKind::of_tokens(step_tokens);
        let step_started = self.profile.is_some().then(std::time::Instant::now);
        for (index, (&id, t)) in graph.inputs().iter().zip(inputs).enumerate() {
            check_input(index, graph.value_type(id), t, &mut bindings)?;
            if remaining[id.index()] > 0 {
                values[id.index()] = Some(Value::Tensor(t.clone()));
            }
        }
        for (node_id, node) in graph.nodes() {
            let describe = || kiln_ir::text::print_node(graph, node_id);
            let results = {
                let args: Vec<&Value> = node
                    .inputs
                    .iter()
                    .map(|v| values[v.index()].as_ref().expect("operands are defined before use (checked in new)"))
                    .collect();
                let op_started = self.profile.is_some().then(std::time::Instant::now);
                let results = eval_node(graph, &self.weights, &mut self.kv, node, &args, &describe)?;
                if let (Some(profile), Some(started)) = (&mut self.profile, op_started) {
                    profile.record_op(step_kind, node.op.name(), started.elapsed());
                }
                results
            };
            if results.len() != node.outputs.len() {
                return Err(RuntimeError::Op {
                    node: describe(),
                    message: format!("produced {} results, not {}", results.len(), node.outputs.len()),
                });
            }
            for (index, (&out, value)) in node.outputs.iter().zip(results).enumerate() {
                check_result(&describe, index, graph.value_type(out), value.dtype(), &value.shape(), &mut bindings)?;
                if remaining[out.index()] > 0 {
                    values[out.index()] = Some(value);
                }
            }
            for v in &node.inputs {
                remaining[v.index()] -= 1;
                if remaining[v.index()] == 0 {
                    values[v.index()] = None;
                }
            }
        }
        if let (Some(profile), Some(started)) = (&mut self.profile, step_started) {
            profile.record_step(step_kind, step_tokens, started.elapsed());
        }
        let mut outputs = Vec::with_capacity(graph.outputs().len());
        for v in graph.outputs() {
            remaining[v.index()] -= 1;
            let value = if remaining[v.index()] == 0 { values[v.index()].take() } else { values[v.index()].clone() };
            let value = value.expect("graph outputs are defined (checked in new)");
            outputs.push(match value {
                Value::Tensor(t) => t,
                Value::Weight(w) => w.to_tensor(),
            });
        }
        Ok(outputs)
    }
}

/// Checks the structure the executor relies on, so that running never indexes out of bounds.
fn check_structure(graph: &Graph, weights: &WeightStore) -> Result<(), RuntimeError> {
    let invalid = |message: String| RuntimeError::InvalidGraph { graph: graph.name.clone(), message };
    let mut defined = vec![false; graph.num_values()];
    for &v in graph.inputs() {
        defined[v.index()] = true;
    }
    for (id, node) in graph.nodes() {
        let op = node.op.name();
        for &v in &node.inputs {
            if !defined.get(v.index()).copied().unwrap_or(false) {
                return Err(invalid(format!("operand {v} of `{op}` (node {}) is not defined before it", id.0)));
            }
        }
        let (min, max) = node.op.input_arity();
        if node.inputs.len() < min || node.inputs.len() > max {
            return Err(invalid(format!(
                "`{op}` (node {}) takes {min}..={max} operands but has {}",
                id.0,
                node.inputs.len()
            )));
        }
        if node.outputs.len() != node.op.num_outputs() {
            return Err(invalid(format!(
                "`{op}` (node {}) has {} results but the op produces {}",
                id.0,
                node.outputs.len(),
                node.op.num_outputs()
            )));
        }
        for &out in &node.outputs {
            let ok = graph.contains_value(out)
                && matches!(graph.value(out).def, ValueDef::Node { node: n, .. } if n == id)
                && !defined[out.index()];
            if !ok {
                return Err(invalid(format!("result {out} of `{op}` (node {}) is not a fresh value of it", id.0)));
            }
            defined[out.index()] = true;
        }
        if let Op::Weight { name } = &node.op {
            let stored =
                weights.get(name).map_err(|e| RuntimeError::Weight { name: name.clone(), message: e.to_string() })?;
            let declared = graph.value_type(node.outputs[0]);
            if &stored.ty != declared {
                return Err(RuntimeError::Weight {
                    name: name.clone(),
                    message: format!("the graph declares it as {declared} but the store holds {}", stored.ty),
                });
            }
        }
    }
    for &v in graph.outputs() {
        if !defined.get(v.index()).copied().unwrap_or(false) {
            return Err(invalid(format!("graph output {v} is not defined")));
        }
    }
    Ok(())
}

fn op_err(describe: &dyn Fn() -> String) -> impl Fn(String) -> RuntimeError + '_ {
    move |message| RuntimeError::Op { node: describe(), message }
}

/// Requires a floating-point operand (activations) or an integer one (ids, positions).
fn require(
    describe: &dyn Fn() -> String,
    what: &str,
    value: &Value,
    ok: fn(DType) -> bool,
    kind: &str,
) -> Result<(), RuntimeError> {
    if ok(value.dtype()) {
        Ok(())
    } else {
        Err(op_err(describe)(format!("{what} must be {kind}, not {}", value.dtype())))
    }
}

fn is_float(d: DType) -> bool {
    d.is_float()
}

fn is_int(d: DType) -> bool {
    d.is_int()
}

fn is_weight_like(d: DType) -> bool {
    d.is_weight_like()
}

fn is_bool(d: DType) -> bool {
    d == DType::Bool
}

fn eval_node(
    graph: &Graph,
    weights: &WeightStore,
    kv: &mut KvCache,
    node: &Node,
    args: &[&Value],
    describe: &dyn Fn() -> String,
) -> Result<Vec<Value>, RuntimeError> {
    let err = op_err(describe);
    let declared = |i: usize| graph.value_type(node.outputs[i]).dtype;
    let float_result = |values: Vec<f32>, shape: Vec<usize>| -> Result<Vec<Value>, RuntimeError> {
        Ok(vec![Value::Tensor(f32_to_tensor(declared(0), shape, values).map_err(&err)?)])
    };
    match &node.op {
        Op::Weight { name } => {
            let w = weights.get(name).expect("weights are checked in new");
            Ok(vec![Value::Weight(w.clone())])
        }
        Op::Embedding {} => {
            require(describe, "the table", args[0], is_weight_like, "a float or quantized weight")?;
            require(describe, "the ids", args[1], is_int, "integers")?;
            let ids = args[1].to_tensor().to_i64_vec();
            let (out, shape) =
                embedding::embedding(&args[0].rows(), &args[0].shape(), &ids, &args[1].shape()).map_err(&err)?;
            float_result(out, shape)
        }
        Op::RmsNorm { eps, offset } => {
            require(describe, "the input", args[0], is_float, "floating-point")?;
            require(describe, "the weight", args[1], is_weight_like, "a float or quantized weight")?;
            let out =
                norm::rms_norm(&args[0].to_f32(), &args[0].shape(), &args[1].to_f32(), *eps, *offset).map_err(&err)?;
            float_result(out, args[0].shape().into_owned())
        }
        Op::LayerNorm { axis, eps } => {
            require(describe, "the input", args[0], is_float, "floating-point")?;
            require(describe, "the scale", args[1], is_weight_like, "a float or quantized weight")?;
            let bias = match args.get(2) {
                Some(b) => {
                    require(describe, "the bias", b, is_weight_like, "a float or quantized weight")?;
                    Some(b.to_f32())
                }
                None => None,
            };
            let out =
                norm::layer_norm(&args[0].to_f32(), &args[0].shape(), *axis, &args[1].to_f32(), bias.as_deref(), *eps)
                    .map_err(&err)?;
            float_result(out, args[0].shape().into_owned())
        }
        Op::Linear {} => {
            require(describe, "the input", args[0], is_float, "floating-point")?;
            require(describe, "the weight", args[1], is_weight_like, "a float or quantized weight")?;
            let bias = match args.get(2) {
                Some(b) => {
                    require(describe, "the bias", b, is_weight_like, "a float or quantized weight")?;
                    Some(b.to_f32())
                }
                None => None,
            };
            let (out, shape) =
                linear::linear(&args[0].to_f32(), &args[0].shape(), &args[1].rows(), &args[1].shape(), bias.as_deref())
                    .map_err(&err)?;
            float_result(out, shape)
        }
        Op::Logits { softcap } => {
            require(describe, "the input", args[0], is_float, "floating-point")?;
            require(describe, "the weight", args[1], is_weight_like, "a float or quantized weight")?;
            let (out, shape) =
                linear::logits(&args[0].to_f32(), &args[0].shape(), &args[1].rows(), &args[1].shape(), *softcap)
                    .map_err(&err)?;
            float_result(out, shape)
        }
        Op::Rope { style, theta, rotary_dim, scaling } => {
            require(describe, "the input", args[0], is_float, "floating-point")?;
            require(describe, "the positions", args[1], is_int, "integers")?;
            let positions = args[1].to_tensor().to_i64_vec();
            let params = RopeParams { style: *style, theta: *theta, rotary_dim: *rotary_dim as usize, scaling };
            let out =
                rope::rope(&args[0].to_f32(), &args[0].shape(), &positions, &args[1].shape(), params).map_err(&err)?;
            float_result(out, args[0].shape().into_owned())
        }
        Op::Attention { layer, scale, causal, window, sinks, softcap } => {
            for (i, what) in ["q", "k", "v"].iter().enumerate() {
                require(describe, what, args[i], is_float, "floating-point")?;
            }
            require(describe, "the positions", args[3], is_int, "integers")?;
            let mask = match args.get(4) {
                Some(m) => {
                    require(describe, "the tree mask", m, is_bool, "bool")?;
                    let t = m.to_tensor();
                    let kiln_ir::TensorData::Bool(bits) = t.data() else { unreachable!("dtype checked as bool") };
                    Some((bits.clone(), t.shape().to_vec()))
                }
                None => None,
            };
            let (q, k, v) = (args[0].to_f32(), args[1].to_f32(), args[2].to_f32());
            let (qs, ks, vs, ps) = (args[0].shape(), args[1].shape(), args[2].shape(), args[3].shape());
            let positions = args[3].to_tensor().to_i64_vec();
            let inputs = AttentionInputs {
                q: View { data: &q, shape: &qs },
                k: View { data: &k, shape: &ks },
                v: View { data: &v, shape: &vs },
                positions: View { data: &positions, shape: &ps },
                tree_mask: mask.as_ref().map(|(data, shape)| View { data: data.as_slice(), shape: shape.as_slice() }),
            };
            let params =
                AttentionParams { scale: *scale, causal: *causal, window: *window, sinks: *sinks, softcap: *softcap };
            let (out, shape) = attention::attention(inputs, params, layer.map(|l| (l, &mut *kv))).map_err(&err)?;
            float_result(out, shape)
        }
        Op::Swiglu {} if args.iter().all(|a| a.dtype() == DType::F32) && args[0].shape() == args[1].shape() => {
            float_result(activation::swiglu(&args[0].to_f32(), &args[1].to_f32()), args[0].shape().into_owned())
        }
        op => {
            let tensors: Vec<Cow<'_, Tensor>> = args.iter().map(|a| a.to_tensor()).collect();
            let refs: Vec<&Tensor> = tensors.iter().map(|t| t.as_ref()).collect();
            match kiln_ir::eval::eval_generic(op, &refs) {
                Ok(Some(results)) => Ok(results.into_iter().map(Value::Tensor).collect()),
                Ok(None) => Err(RuntimeError::UnsupportedOp { node: describe(), op: op.name().to_string() }),
                Err(source) => Err(RuntimeError::Eval { node: describe(), source }),
            }
        }
    }
}
