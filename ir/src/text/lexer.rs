//! Tokens of the text form, produced on demand so that errors are reported in source order.

use std::fmt;

/// What a token is; text-carrying kinds borrow from the source except strings, which are unescaped.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenKind<'s> {
    /// `%N`, with its number.
    Value(u64),
    /// An identifier: op names, keywords, dtypes, symbols, attribute names and enum values.
    Ident(&'s str),
    /// A numeric literal as written, sign included: `3`, `-1`, `1e-5`, `0.5`.
    Num(&'s str),
    /// A string literal, unescaped.
    Str(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Equals,
    At,
    Question,
    /// A `-` not followed by a digit (only `-inf` uses it).
    Minus,
    Eof,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token<'s> {
    pub kind: TokenKind<'s>,
    /// Byte range in the source.
    pub start: usize,
    pub end: usize,
}

/// A lexical error at a byte offset; the parser turns it into a `ParseError` with line and column.
#[derive(Debug)]
pub(crate) struct LexError {
    pub offset: usize,
    pub message: String,
}

/// How a token reads in an error message: "`:`", "end of input", "string \"a\"".
pub(crate) struct Found<'a, 's>(pub &'a Token<'s>, pub &'s str);

impl fmt::Display for Found<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Found(tok, src) = self;
        match &tok.kind {
            TokenKind::Eof => f.write_str("end of input"),
            TokenKind::Str(s) => write!(f, "string {s:?}"),
            _ => write!(f, "`{}`", &src[tok.start..tok.end]),
        }
    }
}

pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Lexer<'s> {
        Lexer { src, pos: 0 }
    }

    fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_char_at(&self, skip: usize) -> Option<char> {
        self.rest().chars().nth(skip)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek_char().is_some_and(&pred) {
            self.bump();
        }
    }

    fn skip_trivia(&mut self) {
        loop {
            self.eat_while(char::is_whitespace);
            if self.rest().starts_with("//") {
                self.eat_while(|c| c != '\n');
            } else {
                return;
            }
        }
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, LexError> {
        Err(LexError { offset, message: message.into() })
    }

    pub fn next_token(&mut self) -> Result<Token<'s>, LexError> {
        self.skip_trivia();
        let start = self.pos;
        let Some(c) = self.bump() else {
            return Ok(Token { kind: TokenKind::Eof, start, end: start });
        };
        let kind = match c {
            '(' => TokenKind::LParen,
            ')' => TokenKind::RParen,
            '{' => TokenKind::LBrace,
            '}' => TokenKind::RBrace,
            '[' => TokenKind::LBracket,
            ']' => TokenKind::RBracket,
            ',' => TokenKind::Comma,
            ':' => TokenKind::Colon,
            '=' => TokenKind::Equals,
            '@' => TokenKind::At,
            '?' => TokenKind::Question,
            '"' => TokenKind::Str(self.string(start)?),
            '%' => self.value(start)?,
            '-' if self.peek_char().is_some_and(|c| c.is_ascii_digit()) => self.number(start),
            '-' => TokenKind::Minus,
            c if c.is_ascii_digit() => self.number(start),
            c if is_ident_start(c) => {
                self.eat_while(is_ident_continue);
                TokenKind::Ident(&self.src[start..self.pos])
            }
            c => return self.err(start, format!("unexpected character {c:?}")),
        };
        Ok(Token { kind, start, end: self.pos })
    }

    fn value(&mut self, start: usize) -> Result<TokenKind<'s>, LexError> {
        let digits_start = self.pos;
        self.eat_while(|c| c.is_ascii_digit());
        let digits = &self.src[digits_start..self.pos];
        if digits.is_empty() {
            return match self.peek_char() {
                Some('?') => self.err(
                    start,
                    "`%?` marks a value that no node defines (the printer's notation for dangling \
                     operands); it cannot be parsed",
                ),
                Some(c) => self.err(start, format!("expected a value number after `%`, found {c:?}")),
                None => self.err(start, "expected a value number after `%`, found end of input"),
            };
        }
        if self.peek_char().is_some_and(is_ident_continue) {
            self.eat_while(is_ident_continue);
            return self
                .err(start, format!("value names are `%` and digits only, found `{}`", &self.src[start..self.pos]));
        }
        match digits.parse::<u64>() {
            Ok(n) => Ok(TokenKind::Value(n)),
            Err(_) => self.err(start, format!("value number `%{digits}` is too large")),
        }
    }

    /// Digits, an optional fraction and an optional exponent, as Rust's float `Debug` writes them.
    fn number(&mut self, start: usize) -> TokenKind<'s> {
        self.eat_while(|c| c.is_ascii_digit());
        if self.peek_char() == Some('.') && self.peek_char_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            self.eat_while(|c| c.is_ascii_digit());
        }
        if matches!(self.peek_char(), Some('e' | 'E')) {
            let digit_at = if matches!(self.peek_char_at(1), Some('+' | '-')) { 2 } else { 1 };
            if self.peek_char_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                for _ in 0..digit_at {
                    self.bump();
                }
                self.eat_while(|c| c.is_ascii_digit());
            }
        }
        TokenKind::Num(&self.src[start..self.pos])
    }

    /// The body of a string after its opening quote, undoing Rust's `Debug` escapes.
    fn string(&mut self, start: usize) -> Result<String, LexError> {
        let mut out = String::new();
        loop {
            let at = self.pos;
            let Some(c) = self.bump() else {
                return self.err(start, "unterminated string (no closing `\"` before the end of input)");
            };
            match c {
                '"' => return Ok(out),
                '\\' => out.push(self.escape(at)?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, at: usize) -> Result<char, LexError> {
        Ok(match self.bump() {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('\'') => '\'',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('0') => '\0',
            Some('u') => {
                if self.bump() != Some('{') {
                    return self.err(at, "expected `{` after `\\u` in a string escape");
                }
                let hex_start = self.pos;
                self.eat_while(|c| c.is_ascii_hexdigit());
                let hex = &self.src[hex_start..self.pos];
                if self.bump() != Some('}') || hex.is_empty() || hex.len() > 6 {
                    return self.err(at, "a `\\u{...}` escape needs 1 to 6 hex digits and a closing `}`");
                }
                let code = u32::from_str_radix(hex, 16).expect("1 to 6 hex digits fit in u32");
                match char::from_u32(code) {
                    Some(c) => c,
                    None => return self.err(at, format!("`\\u{{{hex}}}` is not a Unicode scalar value")),
                }
            }
            Some(c) => return self.err(at, format!("unknown string escape `\\{c}`")),
            None => return self.err(at, "unterminated string (no closing `\"` before the end of input)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind<'_>> {
        let mut lx = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token().unwrap();
            if t.kind == TokenKind::Eof {
                return out;
            }
            out.push(t.kind);
        }
    }

    #[test]
    fn numbers_keep_their_text() {
        use TokenKind::*;
        assert_eq!(
            kinds("3 -1 1e-5 0.5 -0.0 3.4028235e38 1E+7 - inf"),
            vec![
                Num("3"),
                Num("-1"),
                Num("1e-5"),
                Num("0.5"),
                Num("-0.0"),
                Num("3.4028235e38"),
                Num("1E+7"),
                Minus,
                Ident("inf")
            ]
        );
        // An `e` not followed by digits belongs to the next token.
        assert_eq!(kinds("2ex"), vec![Num("2"), Ident("ex")]);
    }

    #[test]
    fn strings_undo_debug_escapes() {
        let s = "a\"b\\c\n\r\t\0'\u{1b}\u{200b}é😀";
        let printed = format!("{s:?}");
        assert_eq!(kinds(&printed), vec![TokenKind::Str(s.to_string())]);
        assert_eq!(kinds(r#""\'\u{41}""#), vec![TokenKind::Str("'A".into())]);
    }

    #[test]
    fn comments_and_values() {
        assert_eq!(kinds("// x\n%0 %12 // y\n@"), vec![TokenKind::Value(0), TokenKind::Value(12), TokenKind::At]);
    }

    #[test]
    fn lexical_errors() {
        let err = |s: &str| {
            let mut lx = Lexer::new(s);
            loop {
                match lx.next_token() {
                    Ok(t) if t.kind == TokenKind::Eof => panic!("no error in {s:?}"),
                    Ok(_) => {}
                    Err(e) => return (e.offset, e.message),
                }
            }
        };
        assert_eq!(err("  \"abc").0, 2);
        assert!(err("\"abc").1.contains("unterminated string"));
        assert!(err(r#""\q""#).1.contains("unknown string escape `\\q`"));
        assert!(err(r#""\u{d800}""#).1.contains("not a Unicode scalar value"));
        assert!(err(r#""\u{1234567}""#).1.contains("1 to 6 hex digits"));
        assert!(err("%x").1.contains("expected a value number after `%`"));
        assert!(err("%?3").1.contains("cannot be parsed"));
        assert!(err("%99999999999999999999999").1.contains("too large"));
        assert!(err("%3a").1.contains("digits only"));
        assert_eq!(err("a $"), (2, "unexpected character '$'".to_string()));
    }
}
