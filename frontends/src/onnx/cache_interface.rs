//! Decoders exported with the ONNX Runtime / Optimum cache interface: besides `input_ids` they take
//! `attention_mask`, usually `position_ids`, and for every layer `past_key_values.{i}.key` and
//! `past_key_values.{i}.value` (`[batch, kv_heads, past, head_dim]`), and they return, besides `logits`,
//! `present.{i}.key` / `present.{i}.value`, the past with this step's keys and values appended.
//!
//! kiln keeps the cache itself (the runtime KV cache that raised `attention` ops read and append to), so
//! the import binds that interface to the state of a first step from an empty cache, which is what a
//! logits-only export computes:
//! - each past is an empty constant (`past = 0`), and each `Concat(past, new)` that builds a present is
//!   replaced by its new part;
//! - `attention_mask` is ones over the ids (`[1, seq]`: kiln decodes one unpadded sequence);
//! - `position_ids` is `range(0, seq)` over the ids' length, the form the positions raising recognises
//!   and replaces by the decoder's `positions` input;
//! - the `present.*` outputs are dropped, leaving the logits.
//!
//! The raising passes then see the same graph as for a logits-only export and give its attention the
//! runtime cache. Where they do not match, the bound graph still computes correct logits for the whole
//! sequence (empty past, full mask), and the runtime recomputes it at each step.

use std::collections::HashSet;

use kiln_ir::{DType, Dim, Op, Tensor, TensorType, ValueId};

use super::OnnxError;
use super::graph_import::{Builder, value_info_type};
use super::proto::{GraphProto, ValueInfoProto};

pub const MASK_INPUT: &str = "attention_mask";
pub const POSITIONS_INPUT: &str = "position_ids";
pub const IDS_INPUT: &str = "input_ids";

/// The cache interface of a graph, when it has one.
pub struct CacheInterface {
    pub layers: usize,
    /// `past_key_values.*` input names.
    past: HashSet<String>,
    /// `present.*` output names.
    present: HashSet<String>,
    /// The empty constants bound to the past inputs.
    empty_pasts: HashSet<ValueId>,
}

fn past_name(layer: usize, kind: &str) -> String {
    format!("past_key_values.{layer}.{kind}")
}

fn present_name(layer: usize, kind: &str) -> String {
    format!("present.{layer}.{kind}")
}

/// Finds the interface from the graph's input and output names: `None` when no input is named
/// `past_key_values.*`, an error when the interface is incomplete.
pub fn detect(graph: &GraphProto) -> Result<Option<CacheInterface>, OnnxError> {
    let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
    let past: HashSet<String> =
        inputs.iter().filter(|n| n.starts_with("past_key_values.")).map(|n| n.to_string()).collect();
    if past.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| OnnxError::BadModel {
        message: format!(
            "{message}; kiln reads the ONNX Runtime / Optimum cache interface as `input_ids`, `attention_mask`, \
             optional `position_ids`, `past_key_values.{{i}}.key|value` inputs and `present.{{i}}.key|value` \
             outputs for every layer i = 0..L, or no cache inputs at all (a logits-only export)"
        ),
    };
    // Layers 0..L, L one past the highest layer index named.
    let mut layers = 0;
    for name in &past {
        let index =
            name.strip_prefix("past_key_values.").and_then(|rest| rest.split('.').next()?.parse::<usize>().ok());
        let Some(index) = index else {
            return Err(bad(format!("input `{name}` is not named `past_key_values.{{layer}}.key|value`")));
        };
        layers = layers.max(index + 1);
    }
    for layer in 0..layers {
        for kind in ["key", "value"] {
            if !past.contains(&past_name(layer, kind)) {
                return Err(bad(format!("input `{}` is missing", past_name(layer, kind))));
            }
        }
    }
    if past.len() != 2 * layers {
        return Err(bad(format!("the {} `past_key_values.*` inputs are not a key and a value per layer", past.len())));
    }
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
    let present: HashSet<String> = (0..layers)
        .flat_map(|l| [present_name(l, "key"), present_name(l, "value")])
        .filter(|n| outputs.contains(n.as_str()))
        .collect();
    if present.len() != 2 * layers {
        return Err(bad(format!(
            "the graph takes past keys and values for {layers} layers but returns {} of the `present.*` outputs",
            present.len()
        )));
    }
    if !inputs.contains(IDS_INPUT) {
        return Err(bad(format!("it has cache inputs but no `{IDS_INPUT}` input")));
    }
    Ok(Some(CacheInterface { layers, past, present, empty_pasts: HashSet::new() }))
}

impl CacheInterface {
    /// Whether graph input `name` is bound by this interface instead of staying a run-time input.
    pub fn binds_input(&self, name: &str) -> bool {
        self.past.contains(name) || name == MASK_INPUT || name == POSITIONS_INPUT
    }

    /// Whether graph output `name` is one of the presents, which the bound graph does not return.
    pub fn drops_output(&self, name: &str) -> bool {
        self.present.contains(name)
    }

    /// Binds the interface's inputs in `b` once the run-time inputs (`input_ids`) are bound.
    pub fn bind_inputs(&mut self, b: &mut Builder<'_>, inputs: &[ValueInfoProto]) -> Result<(), OnnxError> {
        let ids = b.lookup(IDS_INPUT).expect("detect checked that input_ids exists, and it is bound first");
        let build = |e: kiln_ir::infer::InferError| OnnxError::BadModel {
            message: format!("binding the cache interface: {}", e.message),
        };
        let bound: Vec<&ValueInfoProto> = inputs.iter().filter(|vi| self.binds_input(vi.name())).collect();
        for vi in bound {
            let ty = value_info_type(vi, "graph input")?;
            let name = vi.name();
            let v = if self.past.contains(name) {
                let empty = empty_past(&ty).ok_or_else(|| OnnxError::BadModel {
                    message: format!(
                        "cache input `{name}` is {ty}; kiln needs [batch, kv_heads, past, head_dim] with static \
                         kv_heads and head_dim"
                    ),
                })?;
                let v = b.constant(empty);
                self.empty_pasts.insert(v);
                v
            } else if name == MASK_INPUT {
                let shape = b.graph.push(Op::Shape { start: 0, end: None }, &[ids]).map_err(build)?;
                b.graph.push(Op::ConstantOfShape { value: 1.0, dtype: ty.dtype }, &[shape]).map_err(build)?
            } else {
                let seq = b.graph.push(Op::Shape { start: 1, end: Some(2) }, &[ids]).map_err(build)?;
                let seq = b.graph.push(Op::Squeeze { axes: vec![0] }, &[seq]).map_err(build)?;
                let (zero, one) = (b.constant(Tensor::scalar_i64(0)), b.constant(Tensor::scalar_i64(1)));
                let range = b.graph.push(Op::Range {}, &[zero, seq, one]).map_err(build)?;
                let mut p = b.graph.push(Op::Unsqueeze { axes: vec![0] }, &[range]).map_err(build)?;
                if ty.dtype != DType::I64 {
                    p = b.graph.push(Op::cast(ty.dtype), &[p]).map_err(build)?;
                }
                p
            };
            b.bind(name, v);
        }
        Ok(())
    }

    /// After the body is imported: every `concat` of a bound (empty) past with new keys or values is
    /// replaced by its new part, so that attention reads the step's own keys as in a logits-only export.
    pub fn drop_empty_concats(&self, b: &mut Builder<'_>) {
        let concats: Vec<(ValueId, Vec<ValueId>)> = b
            .graph
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Concat { .. }) && n.inputs.iter().any(|v| self.empty_pasts.contains(v)))
            .map(|(_, n)| (n.outputs[0], n.inputs.iter().copied().filter(|v| !self.empty_pasts.contains(v)).collect()))
            .collect();
        for (out, rest) in concats {
            if let [only] = rest[..]
                && b.graph.value_type(only).dtype == b.graph.value_type(out).dtype
            {
                b.graph.replace_all_uses(out, only);
            }
        }
    }
}

/// A zero-length past of type `ty`: `[batch (1 if symbolic), kv_heads, 0, head_dim]`.
fn empty_past(ty: &TensorType) -> Option<Tensor> {
    let dims = ty.shape.dims();
    let [batch, Dim::Static(heads), _, Dim::Static(head_dim)] = dims else { return None };
    let batch = match batch {
        Dim::Static(b) => *b as usize,
        _ => 1,
    };
    Tensor::zeros(ty.dtype, vec![batch, *heads as usize, 0, *head_dim as usize]).ok()
}
