//! Recursive-descent parser of the text form.
//!
//! Values are allocated as their definitions are read (inputs, then node results in order, which is
//! exactly the order `Graph::add_input`/`add_node` allocate ids in), and uses are resolved after the whole
//! body is read. So a use before its definition is not a parse error: the graph is built as written and
//! the verifier reports the dominance problem with the op printed.

use std::collections::{BTreeMap, HashMap};

use super::ParseError;
use super::lexer::{Found, LexError, Lexer, Token, TokenKind};
use crate::op::OpError;
use crate::{Attr, DType, Dim, Graph, NodeId, Op, Shape, TensorType, ValueId};

/// Attribute lists and calls may nest this deep; deeper input is an error instead of a stack overflow.
pub(crate) const MAX_ATTR_DEPTH: usize = 64;

pub(crate) fn parse_graph(src: &str) -> Result<Graph, ParseError> {
    let mut p = Parser { src, lexer: Lexer::new(src), peeked: None, defs: HashMap::new(), graph: Graph::default() };
    p.file()?;
    Ok(p.graph)
}

/// The 1-based line and column (in chars) of a byte offset.
fn position(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    // Offsets come from token boundaries, which are char boundaries; fall back to the whole text if not.
    let before = src.get(..offset).unwrap_or(src);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

pub(crate) fn error_at(src: &str, offset: usize, message: impl Into<String>) -> ParseError {
    let (line, column) = position(src, offset);
    ParseError { line, column, offset, message: message.into() }
}

/// A use of `%number` at a source offset, resolved once every definition has been seen.
struct Use {
    number: u64,
    offset: usize,
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    peeked: Option<Token<'s>>,
    /// Each defined `%N` and the value it became.
    defs: HashMap<u64, ValueId>,
    graph: Graph,
}

impl<'s> Parser<'s> {
    fn error(&self, offset: usize, message: impl Into<String>) -> ParseError {
        error_at(self.src, offset, message)
    }

    fn lex_error(&self, e: LexError) -> ParseError {
        self.error(e.offset, e.message)
    }

    fn peek(&mut self) -> Result<&Token<'s>, ParseError> {
        if self.peeked.is_none() {
            let t = self.lexer.next_token().map_err(|e| self.lex_error(e))?;
            self.peeked = Some(t);
        }
        Ok(self.peeked.as_ref().expect("filled just above"))
    }

    fn next(&mut self) -> Result<Token<'s>, ParseError> {
        self.peek()?;
        Ok(self.peeked.take().expect("peek filled it"))
    }

    fn peek_is(&mut self, kind: &TokenKind<'_>) -> Result<bool, ParseError> {
        Ok(&self.peek()?.kind == kind)
    }

    /// Consumes the next token if it is `kind`.
    fn eat(&mut self, kind: &TokenKind<'_>) -> Result<bool, ParseError> {
        let yes = self.peek_is(kind)?;
        if yes {
            self.next()?;
        }
        Ok(yes)
    }

    fn unexpected(&self, tok: &Token<'s>, expected: &str) -> ParseError {
        self.error(tok.start, format!("expected {expected}, found {}", Found(tok, self.src)))
    }

    /// Consumes `kind` or fails with "expected {what}, found ...".
    fn expect(&mut self, kind: &TokenKind<'_>, what: &str) -> Result<Token<'s>, ParseError> {
        let tok = self.next()?;
        if &tok.kind == kind { Ok(tok) } else { Err(self.unexpected(&tok, what)) }
    }

    fn define(&mut self, number: u64, offset: usize, value: ValueId) -> Result<(), ParseError> {
        if self.defs.insert(number, value).is_some() {
            return Err(self.error(offset, format!("value %{number} is defined twice")));
        }
        Ok(())
    }

    fn resolve(&self, u: &Use) -> Result<ValueId, ParseError> {
        self.defs
            .get(&u.number)
            .copied()
            .ok_or_else(|| self.error(u.offset, format!("value %{} is used but never defined", u.number)))
    }

    fn file(&mut self) -> Result<(), ParseError> {
        let tok = self.next()?;
        if tok.kind != TokenKind::Ident("graph") {
            return Err(self.unexpected(&tok, "`graph` at the start of the file"));
        }
        self.expect(&TokenKind::At, "`@` and the graph name after `graph`")?;
        let tok = self.next()?;
        self.graph.name = match tok.kind {
            TokenKind::Ident(name) => name.to_string(),
            TokenKind::Str(name) => name,
            _ => return Err(self.unexpected(&tok, "the graph name (an identifier or a string) after `@`")),
        };
        self.expect(&TokenKind::LParen, "`(` and the graph inputs after the graph name")?;
        if !self.eat(&TokenKind::RParen)? {
            loop {
                self.input()?;
                let tok = self.next()?;
                match tok.kind {
                    TokenKind::Comma => {}
                    TokenKind::RParen => break,
                    _ => return Err(self.unexpected(&tok, "`,` or `)` after a graph input")),
                }
            }
        }
        self.expect(&TokenKind::LBrace, "`{` to open the graph body")?;

        let mut pending: Vec<(NodeId, Vec<Use>)> = Vec::new();
        let returns = loop {
            let tok = self.peek()?.clone();
            match tok.kind {
                TokenKind::Ident("return") => {
                    self.next()?;
                    break self.return_values()?;
                }
                TokenKind::RBrace => {
                    return Err(self.error(tok.start, "missing `return` at the end of the graph body"));
                }
                TokenKind::Value(_) | TokenKind::Ident(_) => pending.push(self.node()?),
                _ => return Err(self.unexpected(&tok, "a node (`%N = op ...`) or `return`")),
            }
        };
        let tok = self.next()?;
        if tok.kind != TokenKind::Eof {
            return Err(self.error(
                tok.start,
                format!(
                    "unexpected {} after the closing `}}` of the graph (a file holds one graph)",
                    Found(&tok, self.src)
                ),
            ));
        }

        for (node, uses) in &pending {
            let inputs = uses.iter().map(|u| self.resolve(u)).collect::<Result<Vec<_>, _>>()?;
            self.graph.node_mut(*node).inputs = inputs;
        }
        let outputs = returns.iter().map(|u| self.resolve(u)).collect::<Result<Vec<_>, _>>()?;
        self.graph.set_outputs(outputs);
        Ok(())
    }

    fn input(&mut self) -> Result<(), ParseError> {
        let tok = self.next()?;
        let TokenKind::Value(number) = tok.kind else {
            return Err(self.unexpected(&tok, "a graph input `%N: type`"));
        };
        self.expect(&TokenKind::Colon, &format!("`:` and a type after input %{number}"))?;
        let ty = self.tensor_type()?;
        let value = self.graph.add_input(ty);
        self.define(number, tok.start, value)
    }

    /// After `return`: zero or more values up to the closing `}`.
    fn return_values(&mut self) -> Result<Vec<Use>, ParseError> {
        let mut uses = Vec::new();
        if self.eat(&TokenKind::RBrace)? {
            return Ok(uses);
        }
        loop {
            let tok = self.next()?;
            match tok.kind {
                TokenKind::Value(number) => uses.push(Use { number, offset: tok.start }),
                _ if uses.is_empty() => {
                    return Err(self.unexpected(&tok, "values or `}` after `return` (`return` ends the graph)"));
                }
                _ => return Err(self.unexpected(&tok, "a value after `,` in `return`")),
            }
            let tok = self.next()?;
            match tok.kind {
                TokenKind::Comma => {}
                TokenKind::RBrace => return Ok(uses),
                _ => {
                    return Err(self
                        .unexpected(&tok, "`,` or the closing `}` after a returned value (`return` ends the graph)"));
                }
            }
        }
    }

    /// `[%a, %b =] op [(%x, %y)] [{k = v, ...}] [: type, type]`, added to the graph with unresolved operands.
    fn node(&mut self) -> Result<(NodeId, Vec<Use>), ParseError> {
        let mut results = Vec::new();
        if matches!(self.peek()?.kind, TokenKind::Value(_)) {
            loop {
                let tok = self.next()?;
                let TokenKind::Value(number) = tok.kind else {
                    return Err(self.unexpected(&tok, "a result value after `,`"));
                };
                results.push((number, tok.start));
                let tok = self.next()?;
                match tok.kind {
                    TokenKind::Comma => {}
                    TokenKind::Equals => break,
                    _ => return Err(self.unexpected(&tok, "`,` or `=` after a result value")),
                }
            }
        }
        let op_tok = self.next()?;
        let TokenKind::Ident(op_name) = op_tok.kind else {
            return Err(self.unexpected(&op_tok, "an op name"));
        };

        let mut operands = Vec::new();
        if self.eat(&TokenKind::LParen)? && !self.eat(&TokenKind::RParen)? {
            loop {
                let tok = self.next()?;
                let TokenKind::Value(number) = tok.kind else {
                    return Err(self.unexpected(&tok, "an operand value `%N`"));
                };
                operands.push(Use { number, offset: tok.start });
                let tok = self.next()?;
                match tok.kind {
                    TokenKind::Comma => {}
                    TokenKind::RParen => break,
                    _ => return Err(self.unexpected(&tok, "`)` after operands")),
                }
            }
        }

        // Each attribute with the offsets of its name and value, for errors that point at them.
        let mut attrs: BTreeMap<String, Attr> = BTreeMap::new();
        let mut attr_offsets: HashMap<String, (usize, usize)> = HashMap::new();
        if self.eat(&TokenKind::LBrace)? && !self.eat(&TokenKind::RBrace)? {
            loop {
                let key = self.next()?;
                let TokenKind::Ident(name) = key.kind else {
                    return Err(self.unexpected(&key, "an attribute name"));
                };
                self.expect(&TokenKind::Equals, &format!("`=` after attribute name `{name}`"))?;
                let value_offset = self.peek()?.start;
                let value = self.attr_value(1)?;
                if attrs.insert(name.to_string(), value).is_some() {
                    return Err(self.error(key.start, format!("attribute `{name}` is given twice")));
                }
                attr_offsets.insert(name.to_string(), (key.start, value_offset));
                let tok = self.next()?;
                match tok.kind {
                    TokenKind::Comma => {}
                    TokenKind::RBrace => break,
                    _ => return Err(self.unexpected(&tok, "`,` or `}` after an attribute")),
                }
            }
        }

        let mut types = Vec::new();
        let colon = self.peek()?.clone();
        if colon.kind == TokenKind::Colon {
            self.next()?;
            loop {
                types.push(self.tensor_type()?);
                if !self.eat(&TokenKind::Comma)? {
                    break;
                }
            }
            if types.len() != results.len() {
                return Err(self.error(
                    colon.start,
                    format!(
                        "node declares {} but lists {}",
                        plural(results.len(), "result"),
                        plural(types.len(), "type")
                    ),
                ));
            }
        } else if !results.is_empty() {
            return Err(self.unexpected(&colon, "`:` and the result types"));
        }

        let op = self.build_op(op_name, op_tok.start, attrs, &attr_offsets, &types)?;
        let values = self.graph.add_node(op, Vec::new(), types);
        for (&(number, offset), &value) in results.iter().zip(&values) {
            self.define(number, offset, value)?;
        }
        let node = *self.graph.order().last().expect("add_node appended a node");
        Ok((node, operands))
    }

    fn build_op(
        &self,
        name: &str,
        name_offset: usize,
        mut attrs: BTreeMap<String, Attr>,
        offsets: &HashMap<String, (usize, usize)>,
        types: &[TensorType],
    ) -> Result<Op, ParseError> {
        let op_error = |e: OpError| {
            let offset = match &e {
                OpError::UnknownAttr { attr, .. } => offsets.get(attr).map(|o| o.0),
                OpError::BadAttr { attr, .. } => offsets.get(attr).map(|o| o.1),
                OpError::UnknownOp { .. } | OpError::MissingAttr { .. } => None,
            };
            self.error(offset.unwrap_or(name_offset), e.to_string())
        };
        if name != "constant" {
            return Op::from_parts(name, attrs).map_err(op_error);
        }
        // A constant's literal is typed by its result type, so it is built here rather than by from_parts.
        let value = attrs.remove("value");
        if let Some(extra) = attrs.keys().next() {
            return Err(op_error(OpError::UnknownAttr { op: name.into(), attr: extra.clone(), valid: "value".into() }));
        }
        let value = value.ok_or_else(|| op_error(OpError::MissingAttr { op: name.into(), attr: "value".into() }))?;
        let Some(ty) = types.first() else {
            return Err(self.error(name_offset, "a `constant` needs a result type, which types its value"));
        };
        Op::constant_from_attr(&value, ty).map_err(op_error)
    }

    /// `dtype[d0, d1, ...]`.
    fn tensor_type(&mut self) -> Result<TensorType, ParseError> {
        let tok = self.next()?;
        let TokenKind::Ident(name) = tok.kind else {
            return Err(self.unexpected(&tok, "a type such as `f32[2, seq]`"));
        };
        let dtype: DType =
            name.parse().map_err(|e: crate::dtype::UnknownDType| self.error(tok.start, e.to_string()))?;
        self.expect(&TokenKind::LBracket, &format!("`[` and the dims after dtype `{name}`"))?;
        let mut dims = Vec::new();
        if !self.eat(&TokenKind::RBracket)? {
            loop {
                dims.push(self.dim()?);
                let tok = self.next()?;
                match tok.kind {
                    TokenKind::Comma => {}
                    TokenKind::RBracket => break,
                    _ => return Err(self.unexpected(&tok, "`,` or `]` after a dimension")),
                }
            }
        }
        Ok(TensorType::new(dtype, Shape(dims)))
    }

    fn dim(&mut self) -> Result<Dim, ParseError> {
        let tok = self.next()?;
        match tok.kind {
            TokenKind::Num(text) if text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse::<u64>()
                .map(Dim::Static)
                .map_err(|_| self.error(tok.start, format!("dimension `{text}` is too large"))),
            TokenKind::Ident(name) => Ok(Dim::sym(name)),
            TokenKind::Question => Ok(Dim::Unknown),
            _ => Err(self.unexpected(&tok, "a dimension (a non-negative integer, a symbol or `?`)")),
        }
    }

    fn attr_value(&mut self, depth: usize) -> Result<Attr, ParseError> {
        let tok = self.next()?;
        if depth > MAX_ATTR_DEPTH {
            return Err(self.error(tok.start, format!("attribute value nested more than {MAX_ATTR_DEPTH} levels deep")));
        }
        Ok(match tok.kind {
            TokenKind::Num(text) => Attr::Num(text.to_string()),
            TokenKind::Minus => {
                let inf = self.next()?;
                if inf.kind != TokenKind::Ident("inf") {
                    return Err(self.unexpected(&inf, "a number or `inf` after `-`"));
                }
                Attr::Num("-inf".into())
            }
            TokenKind::Ident("true") => Attr::Bool(true),
            TokenKind::Ident("false") => Attr::Bool(false),
            TokenKind::Ident(text @ ("inf" | "nan")) => Attr::Num(text.to_string()),
            TokenKind::Ident(name) => {
                if self.eat(&TokenKind::LParen)? {
                    Attr::Call(name.to_string(), self.attr_items(&TokenKind::RParen, "`)`", depth)?)
                } else {
                    Attr::Ident(name.to_string())
                }
            }
            TokenKind::Str(s) => Attr::Str(s),
            TokenKind::LBracket => Attr::List(self.attr_items(&TokenKind::RBracket, "`]`", depth)?),
            _ => return Err(self.unexpected(&tok, "an attribute value")),
        })
    }

    /// Comma-separated attribute values after an opening bracket, up to and including `close`.
    fn attr_items(&mut self, close: &TokenKind<'_>, close_text: &str, depth: usize) -> Result<Vec<Attr>, ParseError> {
        let mut items = Vec::new();
        if self.eat(close)? {
            return Ok(items);
        }
        loop {
            items.push(self.attr_value(depth + 1)?);
            let tok = self.next()?;
            if tok.kind == TokenKind::Comma {
                continue;
            }
            if &tok.kind == close {
                return Ok(items);
            }
            return Err(self.unexpected(&tok, &format!("`,` or {close_text} in an attribute list")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_chars() {
        let src = "ab\né😀x\n";
        assert_eq!(position(src, 0), (1, 1));
        assert_eq!(position(src, 3), (2, 1));
        assert_eq!(position(src, src.find('x').unwrap()), (2, 3));
        assert_eq!(position(src, src.len()), (3, 1));
    }
}
