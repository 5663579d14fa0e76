//! The text form of graphs (`.kir`): deterministic printing and a parser with line/column errors.
//!
//! ```text
//! graph @tiny(%0: i64[1, seq]) {
//!   %1 = weight {name = "embed.weight"} : f32[32, 16]
//!   %2 = embedding(%1, %0) : f32[1, seq, 16]
//!   return %2
//! }
//! ```
//!
//! Values print densely numbered (inputs, then node results in program order); the parser accepts any
//! `%N` names. Attributes print in `Op::attrs()` order, so the text of a graph is canonical and
//! `print(parse(print(g))) == print(g)`. The parser checks syntax and names only: types, arities and
//! dominance are the verifier's job, so a use before its definition parses into a graph the verifier
//! rejects with the op printed.

mod lexer;
mod parser;
mod printer;

pub use printer::Numbering;

use crate::{Graph, NodeId};

/// A syntax or name error at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    pub line: usize,
    /// Counted in chars, not bytes.
    pub column: usize,
    /// Byte offset of the problem in the source, for diagnostics that underline it.
    pub offset: usize,
    pub message: String,
}

/// The canonical text of `g` (values numbered densely in program order).
///
/// Operands that no graph input or live node defines print as `%?<raw index>`, which does not parse:
/// such a graph is broken and the printed text says where.
pub fn print(g: &Graph) -> String {
    printer::print_graph(g)
}

/// One node's line as [`print`] writes it (same numbering, no indent, no newline).
///
/// Builds the numbering of the whole graph; to print many nodes of one graph, build a [`Numbering`] once
/// and call [`Numbering::node_line`]. Panics only if `node` is not a node of `g`.
pub fn print_node(g: &Graph, node: NodeId) -> String {
    Numbering::new(g).node_line(g, node)
}

/// Parses one graph. Undefined names and malformed syntax are errors; type and dominance problems are
/// left to the verifier.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    parser::parse_graph(src)
}
