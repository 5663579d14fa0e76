//! The canonical printer of the text form: dense value numbering and one line per node.
//!
//! The printer never fails and never panics on a malformed graph (dangling operands, nodes listed twice
//! in program order), because the verifier prints the offending ops of exactly such graphs.

use std::fmt::Write;

use crate::{Graph, NodeId, Op, ValueId};

/// The dense numbers the text form gives values: graph inputs first, then node results in program order.
///
/// Building one is linear in the graph size; reuse it when printing many nodes of one graph.
#[derive(Clone, Debug)]
pub struct Numbering {
    numbers: Vec<Option<u32>>,
}

impl Numbering {
    pub fn new(g: &Graph) -> Numbering {
        let mut numbers = vec![None; g.num_values()];
        let mut next = 0u32;
        let mut define = |v: ValueId| {
            // A value defined twice (a node listed twice in program order) keeps its first number, so the
            // printed text shows the duplicate definition instead of hiding it.
            if let Some(slot @ None) = numbers.get_mut(v.index()) {
                *slot = Some(next);
                next += 1;
            }
        };
        for &v in g.inputs() {
            define(v);
        }
        for (_, node) in g.nodes() {
            for &v in &node.outputs {
                define(v);
            }
        }
        Numbering { numbers }
    }

    /// The dense number of `v`, or `None` when no graph input or live node defines it.
    pub fn number(&self, v: ValueId) -> Option<u32> {
        self.numbers.get(v.index()).copied().flatten()
    }

    /// `%N` for a defined value, `%?<raw index>` for one that nothing live defines.
    pub fn name(&self, v: ValueId) -> String {
        match self.number(v) {
            Some(n) => format!("%{n}"),
            None => format!("%?{}", v.0),
        }
    }

    /// One node's line (no indent, no newline).
    pub fn node_line(&self, g: &Graph, node: NodeId) -> String {
        let n = g.node(node);
        let mut out = String::new();
        if !n.outputs.is_empty() {
            out.push_str(&self.names(&n.outputs));
            out.push_str(" = ");
        }
        out.push_str(n.op.name());
        if !n.inputs.is_empty() {
            let _ = write!(out, "({})", self.names(&n.inputs));
        }
        let attrs = match &n.op {
            Op::Constant { value } => vec![("value", Op::constant_attr(value))],
            op => op.attrs(),
        };
        if !attrs.is_empty() {
            out.push_str(" {");
            for (i, (key, value)) in attrs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{key} = {value}");
            }
            out.push('}');
        }
        if !n.outputs.is_empty() {
            out.push_str(" : ");
            for (i, &v) in n.outputs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if g.contains_value(v) {
                    let _ = write!(out, "{}", g.value_type(v));
                } else {
                    // Only reachable by editing a node's outputs by hand; print something visibly wrong.
                    out.push_str("<no type>");
                }
            }
        }
        out
    }

    fn names(&self, values: &[ValueId]) -> String {
        values.iter().map(|&v| self.name(v)).collect::<Vec<_>>().join(", ")
    }
}

/// Whether `name` prints bare after `@` (otherwise it is quoted).
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn print_graph(g: &Graph) -> String {
    let numbering = Numbering::new(g);
    let mut out = String::from("graph @");
    if is_identifier(&g.name) {
        out.push_str(&g.name);
    } else {
        let _ = write!(out, "{:?}", g.name);
    }
    out.push('(');
    for (i, &v) in g.inputs().iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}: {}", numbering.name(v), g.value_type(v));
    }
    out.push_str(") {\n");
    for &node in g.order() {
        out.push_str("  ");
        out.push_str(&numbering.node_line(g, node));
        out.push('\n');
    }
    out.push_str("  return");
    if !g.outputs().is_empty() {
        out.push(' ');
        out.push_str(&numbering.names(g.outputs()));
    }
    out.push_str("\n}\n");
    out
}
