//! The verifier: checks every invariant of a graph and reports all violations at once.
//!
//! It keeps going after an error: a node whose operands are broken is skipped for type checking, and
//! later nodes see every value with its declared type, so one mistake is reported once rather than
//! cascading. Errors come in program order, graph-level ones (outputs, signature) last.
//!
//! Each error carries the offending node printed by the text form ([`crate::text::Numbering`]), and its
//! message names values with the same dense numbers, so `%3` in a message is `%3` in the printed graph;
//! a value that nothing live defines is `%?<raw id>`, as the printer shows it.

use std::collections::HashMap;

use crate::infer::{self, dims_compatible};
use crate::text::Numbering;
use crate::{Dim, Graph, NodeId, Op, TensorType, ValueDef, ValueId, WeightStore};

/// One violated invariant, with the offending op printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// The node's text form; for problems with the graph's outputs the `return` line, for other
    /// graph-level problems the graph signature.
    pub op_text: String,
    pub message: String,
}

/// Every problem found in a graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| format!("{}\n  in: {}", e.message, e.op_text)).collect::<Vec<_>>().join("\n"))]
pub struct VerifyErrors {
    pub errors: Vec<VerifyError>,
}

/// Checks `g`; with `weights`, also that every `weight` op names a stored weight of the declared type.
pub fn verify(g: &Graph, weights: Option<&WeightStore>) -> Result<(), VerifyErrors> {
    let mut v = Verifier { g, numbering: Numbering::new(g), errors: Vec::new(), defined: vec![false; g.num_values()] };
    v.run(weights);
    if v.errors.is_empty() { Ok(()) } else { Err(VerifyErrors { errors: v.errors }) }
}

struct Verifier<'g> {
    g: &'g Graph,
    /// The text form's value numbers, so that messages name values as `op_text` prints them.
    numbering: Numbering,
    errors: Vec<VerifyError>,
    /// Values defined so far in program order (graph inputs from the start).
    defined: Vec<bool>,
}

impl Verifier<'_> {
    fn run(&mut self, weights: Option<&WeightStore>) {
        let g = self.g;
        for &v in g.inputs() {
            if let Some(d) = self.defined.get_mut(v.index()) {
                *d = true;
            }
        }
        let mut position: HashMap<NodeId, usize> = HashMap::new();
        for (p, &n) in g.order().iter().enumerate() {
            position.entry(n).or_insert(p);
        }
        // The first node to declare each weight name, with its declared type.
        let mut weight_decls: HashMap<&str, (NodeId, &TensorType)> = HashMap::new();
        for (p, (id, node)) in g.nodes().enumerate() {
            let text = self.numbering.node_line(g, id);
            let numbering = &self.numbering;
            let mut report = |message: String| self.errors.push(VerifyError { op_text: text.clone(), message });
            if position[&id] != p {
                report(format!("node `{}` appears more than once in program order", node.op.name()));
                continue;
            }
            let mut operands_ok = true;
            for &operand in &node.inputs {
                if let Some(m) = operand_problem(g, numbering, &self.defined, &position, p, operand) {
                    report(m);
                    operands_ok = false;
                }
            }
            let arity_message = infer::arity_message(&node.op, node.inputs.len());
            if let Some(m) = &arity_message {
                report(m.clone());
            }
            let expected_results = node.op.num_outputs();
            if node.outputs.len() != expected_results {
                report(format!(
                    "`{}` produces {expected_results} result{} but the node declares {}",
                    node.op.name(),
                    if expected_results == 1 { "" } else { "s" },
                    node.outputs.len()
                ));
            }
            let declared: Vec<&TensorType> = node.outputs.iter().map(|&o| g.value_type(o)).collect();
            match &node.op {
                Op::Weight { name } => {
                    if let Some(&ty) = declared.first() {
                        check_weight(name, ty, id, &mut weight_decls, weights, &mut report);
                    }
                }
                Op::Constant { value } => {
                    if let [ty] = declared[..]
                        && value.ty() != *ty
                    {
                        report(format!(
                            "the constant's value has type {} but the declared result type is {ty}",
                            value.ty()
                        ));
                    }
                }
                op if operands_ok && arity_message.is_none() => {
                    let types: Vec<&TensorType> = node.inputs.iter().map(|&o| g.value_type(o)).collect();
                    let consts: Vec<_> = node.inputs.iter().map(|&o| g.constant_value(o)).collect();
                    match infer::infer_types(op, &types, &consts) {
                        Err(e) => report(e.message),
                        Ok(inferred) if inferred.len() == declared.len() => {
                            for ((&out, want), got) in node.outputs.iter().zip(&declared).zip(&inferred) {
                                if let Some(m) = type_mismatch(got, want) {
                                    report(format!(
                                        "result {} is declared {want} but `{}` gives {got}: {m}",
                                        numbering.name(out),
                                        op.name()
                                    ));
                                }
                            }
                        }
                        // The result count was reported above.
                        Ok(_) => {}
                    }
                }
                _ => {}
            }
            for &out in &node.outputs {
                if let Some(d) = self.defined.get_mut(out.index()) {
                    *d = true;
                }
            }
        }
        self.check_outputs();
    }

    fn check_outputs(&mut self) {
        let g = self.g;
        if g.outputs().is_empty() {
            self.errors.push(VerifyError {
                op_text: signature_text(g, &self.numbering),
                message: "the graph has no outputs; it must return at least one value".into(),
            });
            return;
        }
        let text = return_text(g, &self.numbering);
        for &out in g.outputs() {
            let name = self.numbering.name(out);
            let message = if !g.contains_value(out) {
                format!("graph output {name} does not exist (the graph has {} values)", g.num_values())
            } else if !self.defined[out.index()] {
                match g.value(out).def {
                    ValueDef::Node { node, .. } => format!(
                        "graph output {name} is a result of a `{}` node that is no longer in program order",
                        g.node(node).op.name()
                    ),
                    ValueDef::Input(_) => unreachable!("graph inputs are defined from the start"),
                }
            } else {
                continue;
            };
            self.errors.push(VerifyError { op_text: text.clone(), message });
        }
    }
}

/// Why `operand`, used by the node at program position `p`, is not available there.
fn operand_problem(
    g: &Graph,
    numbering: &Numbering,
    defined: &[bool],
    position: &HashMap<NodeId, usize>,
    p: usize,
    operand: ValueId,
) -> Option<String> {
    let shown = numbering.name(operand);
    if !g.contains_value(operand) {
        return Some(format!("operand {shown} does not exist (the graph has {} values)", g.num_values()));
    }
    if defined[operand.index()] {
        return None;
    }
    let ValueDef::Node { node, .. } = g.value(operand).def else {
        unreachable!("graph inputs are defined from the start")
    };
    let name = g.node(node).op.name();
    Some(match position.get(&node) {
        Some(&q) if q == p => format!("operand {shown} is a result of this same node"),
        Some(_) => {
            format!("operand {shown} is used before it is defined: its `{name}` node comes later in program order")
        }
        None => format!("operand {shown} is defined by a `{name}` node that is no longer in program order"),
    })
}

/// The checks on one `weight` node: a static type, one type per name, and agreement with the store.
fn check_weight<'g>(
    name: &'g str,
    ty: &'g TensorType,
    id: NodeId,
    decls: &mut HashMap<&'g str, (NodeId, &'g TensorType)>,
    store: Option<&WeightStore>,
    report: &mut impl FnMut(String),
) {
    if ty.shape.as_static().is_none() {
        report(format!("weight `{name}` has type {ty}, but a weight's type must be static (no symbols or `?`)"));
    }
    match decls.get(name) {
        Some(&(_, first)) if first != ty => {
            report(format!("weight `{name}` is declared as {ty} here but as {first} by an earlier weight node"))
        }
        Some(_) => {}
        None => {
            decls.insert(name, (id, ty));
        }
    }
    if let Some(store) = store {
        match store.get(name) {
            Err(_) => report(format!("weight `{name}` is not in the weight store")),
            Ok(w) if w.ty != *ty => {
                report(format!("weight `{name}` is declared as {ty} but the weight store holds {}", w.ty))
            }
            Ok(_) => {}
        }
    }
}

/// Why an inferred type is not compatible with a declared one (dims compatible when equal or either
/// is `?`), or `None` when it is.
fn type_mismatch(inferred: &TensorType, declared: &TensorType) -> Option<String> {
    if inferred.dtype != declared.dtype {
        return Some(format!("the dtype should be {}, not {}", inferred.dtype, declared.dtype));
    }
    if inferred.rank() != declared.rank() {
        return Some(format!("the rank should be {}, not {}", inferred.rank(), declared.rank()));
    }
    let (i, (got, want)) = inferred
        .shape
        .dims()
        .iter()
        .zip(declared.shape.dims())
        .enumerate()
        .find(|(_, (got, want))| !dims_compatible(got, want))?;
    Some(format!("dim {i} should be {got}, not {want}"))
}

/// The graph's first line as the text form prints it.
fn signature_text(g: &Graph, numbering: &Numbering) -> String {
    let inputs: Vec<String> =
        g.inputs().iter().map(|&v| format!("{}: {}", numbering.name(v), g.value_type(v))).collect();
    // Graph names that are not identifiers are quoted, as the printer does.
    let name = if Dim::is_valid_symbol(&g.name) { g.name.clone() } else { format!("{:?}", g.name) };
    format!("graph @{name}({})", inputs.join(", "))
}

/// The graph's `return` line as the text form prints it.
fn return_text(g: &Graph, numbering: &Numbering) -> String {
    let outs: Vec<String> = g.outputs().iter().map(|&v| numbering.name(v)).collect();
    format!("return {}", outs.join(", "))
}
