//! Numerical probing for the raising passes: evaluates the subgraph that computes a value from a few
//! chosen values bound to test tensors, with the reference evaluator.
//!
//! Raising matches structure first, then checks meaning by probing: "this chain of reshapes and
//! transposes is `k` with its last two dims swapped", "this mask subgraph is the causal mask for every
//! length tried", "this rotate-half subgraph is rope with theta 10000 at positions 5, 6, 7". That verifies
//! the exporter's many spellings of one computation without enumerating them, and never assumes a
//! constant it has not read. A probe fails (gives `None`) when the subgraph reaches an unbound graph
//! input, a model-level op, a large weight, or more nodes than a local pattern can have.

use std::collections::HashMap;

use kiln_ir::{Dim, Graph, Op, Tensor, TensorData, ValueId, WeightStore};

/// The most nodes one probe evaluates: patterns are local, so reaching further means a wrong guess.
const MAX_NODES: usize = 400;
/// The largest weight a probe reads (rotary tables and norm weights are far smaller; matrices are not
/// part of any probed subgraph).
const MAX_WEIGHT_ELEMENTS: usize = 1 << 16;

/// An evaluation of values of `g` from bound values, memoised.
pub(crate) struct Probe<'a> {
    g: &'a Graph,
    weights: Option<&'a WeightStore>,
    values: HashMap<ValueId, Tensor>,
    evaluated: usize,
}

impl<'a> Probe<'a> {
    pub fn new(g: &'a Graph, weights: Option<&'a WeightStore>) -> Probe<'a> {
        Probe { g, weights, values: HashMap::new(), evaluated: 0 }
    }

    /// Binds `v` to `t` (the probe does not look behind a bound value).
    pub fn bind(mut self, v: ValueId, t: Tensor) -> Probe<'a> {
        self.values.insert(v, t);
        self
    }

    /// The value of `v`, or `None` when it cannot be computed from the bindings (see the module doc).
    pub fn eval(&mut self, v: ValueId) -> Option<Tensor> {
        if let Some(t) = self.values.get(&v) {
            return Some(t.clone());
        }
        let node_id = self.g.producer(v)?;
        self.evaluated += 1;
        if self.evaluated > MAX_NODES {
            return None;
        }
        let node = self.g.node(node_id);
        let results = match &node.op {
            Op::Weight { name } => {
                let w = self.weights?.get(name).ok()?;
                if w.ty.shape.num_elements()? > MAX_WEIGHT_ELEMENTS as u64 {
                    return None;
                }
                vec![w.to_tensor()]
            }
            op => {
                let mut operands = Vec::with_capacity(node.inputs.len());
                for &input in &node.inputs {
                    operands.push(self.eval(input)?);
                }
                let refs: Vec<&Tensor> = operands.iter().collect();
                kiln_ir::eval::eval_generic(op, &refs).ok()??
            }
        };
        for (&out, t) in node.outputs.iter().zip(results) {
            self.values.insert(out, t);
        }
        self.values.get(&v).cloned()
    }
}

/// A constant's or a small weight's value (the two ways an ONNX initializer can reach the IR).
pub(crate) fn known_value(g: &Graph, weights: Option<&WeightStore>, v: ValueId) -> Option<Tensor> {
    match &g.node(g.producer(v)?).op {
        Op::Constant { value } => Some(value.clone()),
        Op::Weight { .. } => Probe::new(g, weights).eval(v),
        _ => None,
    }
}

/// The single element of a one-element constant or weight, as f64.
pub(crate) fn known_scalar(g: &Graph, weights: Option<&WeightStore>, v: ValueId) -> Option<f64> {
    let t = known_value(g, weights, v)?;
    (t.len() == 1 && !matches!(t.data(), TensorData::Bool(_))).then(|| t.to_f64_vec()[0])
}

/// A concrete shape for a value's type: static dims as they are, every other dim `fill`. `None` for
/// more than one non-static dim (which one is the sequence would be a guess).
pub(crate) fn probe_shape(g: &Graph, v: ValueId, fill: usize) -> Option<Vec<usize>> {
    let dims = g.value_type(v).shape.dims();
    if dims.iter().filter(|d| !matches!(d, Dim::Static(_))).count() > 1 {
        return None;
    }
    Some(dims.iter().map(|d| d.as_static().map_or(fill, |n| n as usize)).collect())
}

/// Deterministic test data in [-1, 1): a small linear congruential sequence, so probes are reproducible.
pub(crate) fn test_tensor(shape: Vec<usize>, seed: u64) -> Tensor {
    let n = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let data = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::f32(shape, data).expect("n elements for the shape")
}

/// Whether two float tensors have the same shape and agree within `tol` (absolute) everywhere.
pub(crate) fn close(a: &Tensor, b: &Tensor, tol: f64) -> bool {
    a.shape() == b.shape() && a.to_f64_vec().iter().zip(b.to_f64_vec()).all(|(x, y)| (x - y).abs() <= tol)
}
