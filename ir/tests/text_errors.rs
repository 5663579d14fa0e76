//! Parse errors of the text form: each class of mistake reports the right line, column, offset and a
//! message saying what was expected and what was found.

use kiln_ir::text::{ParseError, parse};

/// Parses `marked` with its single `^` removed and checks the error sits where the `^` was and that its
/// message contains `message`.
#[track_caller]
fn fails_at(marked: &str, message: &str) -> ParseError {
    let offset = marked.find('^').expect("test source marks the error position with ^");
    assert_eq!(marked.matches('^').count(), 1, "one marker only");
    let src = marked.replacen('^', "", 1);
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap().chars().count() + 1;
    let err = parse(&src).expect_err("source must not parse");
    assert!(err.message.contains(message), "message {:?} lacks {message:?}", err.message);
    assert_eq!((err.line, err.column, err.offset), (line, column, offset), "position of {:?}", err.message);
    assert_eq!(err.to_string(), format!("{line}:{column}: {}", err.message));
    err
}

fn body(lines: &str) -> String {
    format!("graph @g(%0: f32[4]) {{\n{lines}\n}}\n")
}

#[test]
fn syntax_errors_say_what_was_expected_and_found() {
    let e = fails_at(&body("  %1 = neg(%0 ^: f32[4]\n  return %1"), "expected `)` after operands, found `:`");
    assert_eq!((e.line, e.column), (2, 15));
    fails_at(&body("  %1 = neg(^x) : f32[4]\n  return %1"), "expected an operand value `%N`, found `x`");
    fails_at(&body("  %1 = neg(%0)\n  ^return %1"), "expected `:` and the result types, found `return`");
    fails_at(&body("  %1 ^neg(%0) : f32[4]\n  return %1"), "expected `,` or `=` after a result value, found `neg`");
    fails_at(&body("  %1 = ^: f32[4]\n  return %1"), "expected an op name, found `:`");
    fails_at(&body("  ^[\n  return"), "expected a node (`%N = op ...`) or `return`, found `[`");
    fails_at(&body("  %1 = softmax(%0) {axis ^1} : f32[4]\n  return %1"), "expected `=` after attribute name `axis`");
    fails_at(&body("  %1 = softmax(%0) {^1 = 1} : f32[4]\n  return %1"), "expected an attribute name, found `1`");
    fails_at(
        &body("  %1 = softmax(%0) {axis = 1 ^: f32[4]\n  return %1"),
        "expected `,` or `}` after an attribute, found `:`",
    );
    fails_at(
        &body("  %1 = transpose(%0) {perm = [1 ^2]} : f32[4]\n  return %1"),
        "expected `,` or `]` in an attribute list, found `2`",
    );
    fails_at(&body("  %1 = softmax(%0) {axis = ^}} : f32[4]\n  return %1"), "expected an attribute value, found `}`");
    fails_at(
        &body("  %1 = gelu(%0) {approximate = -^tanh} : f32[4]\n  return %1"),
        "expected a number or `inf` after `-`",
    );
    fails_at(&body("  %1 = neg(%0) : f32[4 ^4]\n  return %1"), "expected `,` or `]` after a dimension, found `4`");
    fails_at(
        &body("  %1 = neg(%0) : f32[^-1]\n  return %1"),
        "expected a dimension (a non-negative integer, a symbol or `?`), found `-1`",
    );
    fails_at(&body("  %1 = neg(%0) : f32[^2.5]\n  return %1"), "found `2.5`");
    fails_at(&body("  %1 = neg(%0) : f32^(4)\n  return %1"), "expected `[` and the dims after dtype `f32`, found `(`");
    fails_at(&body("  %1 = neg(%0) : ^[4]\n  return %1"), "expected a type such as `f32[2, seq]`, found `[`");
    fails_at(
        &body("  return %0 ^%0"),
        "expected `,` or the closing `}` after a returned value (`return` ends the graph), found `%0`",
    );
    fails_at(&body("  return ^: f32"), "expected values or `}` after `return` (`return` ends the graph), found `:`");
    fails_at("graph @g(%0 ^f32[1]) {\n  return\n}", "expected `:` and a type after input %0, found `f32`");
    fails_at("graph @g(^f32[1]) {\n  return\n}", "expected a graph input `%N: type`, found `f32`");
    fails_at("graph @g(%0: f32[1] ^{\n  return\n}", "expected `,` or `)` after a graph input, found `{`");
    fails_at("graph @g() ^return\n}", "expected `{` to open the graph body, found `return`");
    fails_at("graph ^g() {\n  return\n}", "expected `@` and the graph name after `graph`, found `g`");
    fails_at("graph @^() {\n  return\n}", "expected the graph name (an identifier or a string) after `@`, found `(`");
    fails_at("graph @g ^{\n  return\n}", "expected `(` and the graph inputs after the graph name, found `{`");
    fails_at("^grph @g() {\n  return\n}", "expected `graph` at the start of the file, found `grph`");
    fails_at("^", "expected `graph` at the start of the file, found end of input");
    fails_at("  // only a comment\n^", "found end of input");
    fails_at("graph @g() {\n  return %0, ^", "expected a value after `,` in `return`, found end of input");
}

#[test]
fn lexical_errors() {
    fails_at(&body("  %1 = weight {name = ^\"abc} : f32[4]\n  return %1"), "unterminated string");
    fails_at(&body("  %1 = weight {name = \"a^\\qc\"} : f32[4]\n  return %1"), "unknown string escape `\\q`");
    fails_at(&body("  %1 = neg(%0) : f32[4] ^$\n  return %1"), "unexpected character '$'");
    fails_at(&body("  %1 = neg(^%?3) : f32[4]\n  return %1"), "no node defines");
    fails_at(&body("  %1 = neg(^%x) : f32[4]\n  return %1"), "expected a value number after `%`");
    fails_at(
        &body("  ^%99999999999999999999999 = neg(%0) : f32[4]\n  return"),
        "value number `%99999999999999999999999` is too large",
    );
    fails_at(
        &body("  %1 = neg(%0) : f32[^99999999999999999999999]\n  return %1"),
        "dimension `99999999999999999999999` is too large",
    );
}

#[test]
fn columns_count_chars_not_bytes() {
    let e = fails_at(&body("  %1 = weight {name = \"😀éè\"} : ^f33[4]\n  return %1"), "unknown dtype `f33`");
    assert_eq!((e.line, e.column), (2, 32));
    assert!(e.offset > 33, "byte offset counts the multi-byte chars");
}

#[test]
fn name_errors() {
    let e = fails_at(&body("  %1 = neg(^%7) : f32[4]\n  return %1"), "value %7 is used but never defined");
    assert_eq!(e.message, "value %7 is used but never defined");
    fails_at(&body("  %1 = neg(%0) : f32[4]\n  return %1, ^%5"), "value %5 is used but never defined");
    let e =
        fails_at(&body("  %1 = neg(%0) : f32[4]\n  ^%1 = exp(%0) : f32[4]\n  return %1"), "value %1 is defined twice");
    assert_eq!(e.message, "value %1 is defined twice");
    fails_at("graph @g(%3: f32[], ^%3: f32[]) {\n  return\n}", "value %3 is defined twice");
    fails_at(
        &body("  %1, ^%1 = split(%0) {axis = 0, sizes = [2, 2]} : f32[2], f32[2]\n  return"),
        "value %1 is defined twice",
    );
    // Names compare by number, so leading zeros name the same value.
    fails_at(&body("  %1 = neg(%0) : f32[4]\n  ^%01 = neg(%0) : f32[4]\n  return"), "value %1 is defined twice");
}

#[test]
fn result_and_type_counts_must_agree() {
    let e = fails_at(
        &body("  %1, %2 = split(%0) {axis = 0, sizes = [2, 2]} ^: f32[2]\n  return %1"),
        "node declares 2 results but lists 1 type",
    );
    assert_eq!(e.message, "node declares 2 results but lists 1 type");
    fails_at(&body("  %1 = neg(%0) ^: f32[4], f32[4]\n  return %1"), "node declares 1 result but lists 2 types");
    fails_at(&body("  neg(%0) ^: f32[4]\n  return"), "node declares 0 results but lists 1 type");
}

#[test]
fn op_and_attribute_errors() {
    let e = fails_at(
        &body("  %1 = ^frobnicate(%0) : f32[4]\n  return %1"),
        "unknown op `frobnicate`; valid ops are: weight,",
    );
    for name in kiln_ir::Op::all_names() {
        assert!(e.message.contains(name), "the message lists `{name}`");
    }
    fails_at(
        &body("  %1 = rms_norm(%0, %0) {eps = ^true} : f32[4]\n  return %1"),
        "attribute `eps` of `rms_norm`: expected a number, found `true`",
    );
    fails_at(
        &body("  %1 = silu(%0) {^x = 1} : f32[4]\n  return %1"),
        "op `silu` has no attribute `x`; its attributes are: (none)",
    );
    fails_at(&body("  %1 = ^rms_norm(%0, %0) : f32[4]\n  return %1"), "op `rms_norm` needs attribute `eps`");
    fails_at(
        &body("  %1 = softmax(%0) {axis = 1, ^axis = 2} : f32[4]\n  return %1"),
        "attribute `axis` is given twice",
    );
    fails_at(
        &body("  %1 = gelu(%0) {approximate = ^exact} : f32[4]\n  return %1"),
        "unknown GeluApprox `exact` (expected one of none, tanh)",
    );
    fails_at(&body("  %1 = cast(%0) {to = ^f8} : f32[4]\n  return %1"), "unknown dtype `f8`");
    fails_at(
        &body("  %1 = softmax(%0) {axis = ^99999999999999999999} : f32[4]\n  return %1"),
        "`99999999999999999999` is not an integer in the range of i64",
    );
    fails_at(
        &body("  %1 = rope(%0, %0) {theta = 1.0, rotary_dim = 2, scaling = ^linear()} : f32[4]\n  return %1"),
        "unknown rope scaling `linear()`",
    );
    fails_at(
        "graph @g(%0: ^f8[4]) {\n  return\n}",
        "unknown dtype `f8` (expected one of f32, f16, bf16, f64, i64, i32, i16, i8, u8, u16, u32, u64, bool, q8c, q4g<group>, q4g<group>z, f8e4m3fn, f8e4m3fnuz, f8e5m2, f8e5m2fnuz, f8e8m0, f4e2m1, i4, u4, i2, u2, str)",
    );
    fails_at("graph @g(%0: ^q4g3[4]) {\n  return\n}", "unknown dtype `q4g3`");
}

#[test]
fn constant_errors() {
    fails_at(
        &body("  %1 = constant {value = ^[1.0, 2.0]} : f32[3]\n  return %1"),
        "attribute `value` of `constant`: 2 values given for type f32[3], which holds 3",
    );
    fails_at(&body("  %1 = constant {value = ^1} : f32[seq]\n  return %1"), "a constant needs a static shape");
    fails_at(&body("  %1 = constant {value = ^true} : i64[]\n  return %1"), "expected an integer, found `true`");
    fails_at(
        &body("  %1 = constant {value = ^300} : i8[]\n  return %1"),
        "attribute `value` of `constant`: 300 is out of range for i8",
    );
    fails_at(&body("  %1 = constant {value = ^[0, -1]} : u8[2]\n  return %1"), "-1 is out of range for u8");
    fails_at(&body("  %1 = ^constant : f32[]\n  return %1"), "op `constant` needs attribute `value`");
    fails_at(
        &body("  %1 = constant {value = 1, ^axis = 0} : f32[]\n  return %1"),
        "op `constant` has no attribute `axis`",
    );
    fails_at(&body("  ^constant {value = 1}\n  return"), "a `constant` needs a result type");
}

#[test]
fn structure_errors() {
    let e = fails_at(
        "graph @g(%0: f32[4]) {\n  %1 = neg(%0) : f32[4]\n^}\n",
        "missing `return` at the end of the graph body",
    );
    assert_eq!(e.message, "missing `return` at the end of the graph body");
    fails_at("graph @g() {\n^}\n", "missing `return`");
    fails_at(
        "graph @g() {\n  return\n^",
        "expected values or `}` after `return` (`return` ends the graph), found end of input",
    );
    let e = fails_at("graph @g() {\n  return\n}\n^graph @h() {\n  return\n}\n", "after the closing `}` of the graph");
    assert_eq!(e.message, "unexpected `graph` after the closing `}` of the graph (a file holds one graph)");
    fails_at("graph @g() {\n  return\n} ^}", "unexpected `}` after the closing `}`");
    // A statement after `return` fails at its first token.
    fails_at(
        &body("  return %0\n  ^%1 = neg(%0) : f32[4]"),
        "expected `,` or the closing `}` after a returned value (`return` ends the graph), found `%1`",
    );
}

#[test]
fn attribute_nesting_is_bounded() {
    let depth_ok = 64;
    let src = body(&format!(
        "  %1 = transpose(%0) {{perm = {}{}}} : f32[4]\n  return %1",
        "[".repeat(depth_ok),
        "]".repeat(depth_ok)
    ));
    // Nesting itself parses; the op then rejects the nested list as its attribute.
    let e = parse(&src).unwrap_err();
    assert!(e.message.contains("attribute `perm` of `transpose`"), "{e}");
    let marked =
        body(&format!("  %1 = transpose(%0) {{perm = {}^[]{}}} : f32[4]\n  return %1", "[".repeat(64), "]".repeat(64)));
    fails_at(&marked, "attribute value nested more than 64 levels deep");
    // Far deeper input fails the same way instead of overflowing the stack.
    let deep = body(&format!("  %1 = rope(%0) {{scaling = {}}} : f32[4]\n  return", "yarn([".repeat(200_000)));
    assert!(parse(&deep).unwrap_err().message.contains("nested more than 64 levels deep"));
}

#[test]
fn forward_references_and_empty_returns_are_not_parse_errors() {
    assert!(parse(&body("  %1 = neg(%2) : f32[4]\n  %2 = neg(%0) : f32[4]\n  return %1")).is_ok());
    assert!(parse(&body("  return")).is_ok());
    assert!(parse("graph @\"\"() { return }").is_ok());
}
