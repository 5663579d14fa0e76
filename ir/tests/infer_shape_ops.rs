//! Type inference of ops whose result shape depends on input values (reshape, expand, slice, range,
//! constant_of_shape, tile) plus shape and trilu: exact dims from constant inputs, `?` dims of the
//! right rank otherwise, and the ONNX edge cases (reshape 0/-1/allowzero, slice clamping and negative
//! steps, shape's start/end clamping).

mod common;

use common::{Input, fails, fails_c, i64s, ok, ok_c, scalar_i64};
use kiln_ir::{DType, Op, Tensor};

const T: fn(&'static str) -> Input = Input::Ty;

fn reshape() -> Op {
    Op::Reshape { allowzero: false }
}

#[test]
fn reshape_with_constant_shapes() {
    assert_eq!(ok_c(&reshape(), &[T("f32[2, 3, 4]"), i64s(&[6, 4])]), "f32[6, 4]");
    // 0 copies the input dim at that index (symbols included); -1 takes the rest.
    assert_eq!(ok_c(&reshape(), &[T("f32[1, seq, 16]"), i64s(&[0, 0, 4, 4])]), "f32[1, seq, 4, 4]");
    assert_eq!(ok_c(&reshape(), &[T("f32[2, 3, 4]"), i64s(&[-1, 4])]), "f32[6, 4]");
    assert_eq!(ok_c(&reshape(), &[T("f32[2, 3, 4]"), i64s(&[0, -1])]), "f32[2, 12]");
    assert_eq!(ok_c(&reshape(), &[T("f32[2, 3, 4]"), i64s(&[-1])]), "f32[24]");
    assert_eq!(ok_c(&reshape(), &[T("f32[]"), i64s(&[1, -1])]), "f32[1, 1]");
    // -1 cancels symbols: [1, seq, 16] -> [1, -1, 4, 4] gives seq.
    assert_eq!(ok_c(&reshape(), &[T("f32[1, seq, 16]"), i64s(&[1, -1, 4, 4])]), "f32[1, seq, 4, 4]");
    assert_eq!(ok_c(&reshape(), &[T("f32[b, s, 8, 64]"), i64s(&[0, 0, -1])]), "f32[b, s, 512]");
    // What -1 stands for is not a single dim: unknown.
    assert_eq!(ok_c(&reshape(), &[T("f32[b, s, 8]"), i64s(&[-1, 8])]), "f32[?, 8]");
    assert_eq!(ok_c(&reshape(), &[T("f32[?, 8]"), i64s(&[-1, 4])]), "f32[?, 4]");
    // allowzero keeps 0 as a real zero dim.
    let az = Op::Reshape { allowzero: true };
    assert_eq!(ok_c(&az, &[T("f32[0, 3]"), i64s(&[3, 0])]), "f32[3, 0]");
    // Without it the same 0 copies dim 1 of x, which makes the element counts disagree.
    fails_c(
        &reshape(),
        &[T("f32[0, 3]"), i64s(&[3, 0])],
        "cannot reshape x [0, 3] (0 elements) into [3, 3] (9 elements)",
    );
}

#[test]
fn reshape_errors() {
    fails_c(
        &reshape(),
        &[T("f32[2, 3]"), i64s(&[4, 2])],
        "reshape: cannot reshape x [2, 3] (6 elements) into [4, 2] (8 elements)",
    );
    fails_c(
        &reshape(),
        &[T("f32[2, 3]"), i64s(&[-1, 4])],
        "cannot reshape x [2, 3] (6 elements) into [-1, 4]: 6 is not a multiple of 4",
    );
    fails_c(&reshape(), &[T("f32[s, 3]"), i64s(&[0, 4])], "(3*s elements) into [s, 4] (4*s elements)");
    fails_c(&reshape(), &[T("f32[6]"), i64s(&[-1, -1])], "the target shape [-1, -1] has more than one -1");
    fails_c(
        &reshape(),
        &[T("f32[6]"), i64s(&[-2, 3])],
        "the target shape [-2, 3] contains -2; only -1 (inferred) may be negative",
    );
    fails_c(
        &reshape(),
        &[T("f32[6]"), i64s(&[6, 0])],
        "has 0 at index 1, which copies dim 1 of x, but x [6] has rank 1",
    );
    fails_c(
        &Op::Reshape { allowzero: true },
        &[T("f32[0]"), i64s(&[0, -1])],
        "with allowzero, the target shape [0, -1] cannot hold both 0 and -1",
    );
    fails_c(&Op::Reshape { allowzero: true }, &[T("f32[0, 5]"), i64s(&[-1, 0])], "cannot hold both 0 and -1");
    fails_c(
        &reshape(),
        &[T("f32[6]"), Input::Const(Tensor::f32(vec![2], vec![2.0, 3.0]).unwrap())],
        "the target shape must be a 1-D i64 (or i32) tensor, but it is f32[2]",
    );
    fails(&reshape(), &["f32[6]", "i64[n]"], "the target shape i64[n] must have a static length");
}

#[test]
fn reshape_with_unknown_shape_values_keeps_the_rank() {
    assert_eq!(ok(&reshape(), &["f32[2, 3]", "i64[3]"]), "f32[?, ?, ?]");
    assert_eq!(ok(&reshape(), &["f32[2, 3]", "i32[0]"]), "f32[]");
}

#[test]
fn slice_static_dims_and_onnx_clamping() {
    let s = Op::Slice {};
    // x[1:3] on axis 0.
    assert_eq!(ok_c(&s, &[T("f32[5, 4]"), i64s(&[1]), i64s(&[3])]), "f32[2, 4]");
    // Negative start, end past the dim (clamped), explicit axes.
    assert_eq!(ok_c(&s, &[T("f32[5, 4]"), i64s(&[-3]), i64s(&[100]), i64s(&[-1])]), "f32[5, 3]");
    // Negative steps: x[::-1] with start -1 and end -inf-like, and x[3:0:-2].
    let end_min = i64::MIN;
    assert_eq!(ok_c(&s, &[T("f32[5]"), i64s(&[-1]), i64s(&[end_min]), i64s(&[0]), i64s(&[-1])]), "f32[5]");
    assert_eq!(ok_c(&s, &[T("f32[5]"), i64s(&[3]), i64s(&[0]), i64s(&[0]), i64s(&[-2])]), "f32[2]");
    assert_eq!(ok_c(&s, &[T("f32[5]"), i64s(&[10]), i64s(&[-10]), i64s(&[0]), i64s(&[-1])]), "f32[5]");
    // Step 2 rounds up; empty and inverted ranges give 0.
    assert_eq!(ok_c(&s, &[T("f32[7]"), i64s(&[0]), i64s(&[7]), i64s(&[0]), i64s(&[2])]), "f32[4]");
    assert_eq!(ok_c(&s, &[T("f32[7]"), i64s(&[5]), i64s(&[2]), i64s(&[0]), i64s(&[1])]), "f32[0]");
    assert_eq!(ok_c(&s, &[T("f32[0]"), i64s(&[0]), i64s(&[5]), i64s(&[0]), i64s(&[-1])]), "f32[0]");
    // Several axes at once.
    assert_eq!(ok_c(&s, &[T("f32[4, 6, 8]"), i64s(&[1, 0]), i64s(&[-1, 4]), i64s(&[2, 0])]), "f32[4, 6, 6]");
}

/// Independent reference: the slice length by enumerating the indices Python-style after ONNX clamping.
fn slice_len_reference(d: i64, start: i64, end: i64, step: i64) -> usize {
    let adj = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (mut s, mut e) = (adj(start), adj(end));
    if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
    } else {
        s = s.clamp(0, (d - 1).max(0));
        e = e.clamp(-1, d - 1);
        if d == 0 {
            return 0;
        }
    }
    let mut n = 0;
    let mut i = s;
    while (step > 0 && i < e) || (step < 0 && i > e) {
        n += 1;
        i += step;
    }
    n
}

#[test]
fn slice_lengths_match_an_enumerating_reference() {
    let s = Op::Slice {};
    for d in [0i64, 1, 2, 5, 8] {
        for start in [-10, -3, -1, 0, 1, 3, 7, 10] {
            for end in [-10, -2, -1, 0, 2, 5, 9, i64::MAX] {
                for step in [-3, -1, 1, 2] {
                    let got = ok_c(
                        &s,
                        &[
                            Input::Ty(Box::leak(format!("f32[{d}]").into_boxed_str())),
                            i64s(&[start]),
                            i64s(&[end]),
                            i64s(&[0]),
                            i64s(&[step]),
                        ],
                    );
                    let want = format!("f32[{}]", slice_len_reference(d, start, end, step));
                    assert_eq!(got, want, "d={d} start={start} end={end} step={step}");
                }
            }
        }
    }
}

#[test]
fn slice_symbolic_and_unknown() {
    let s = Op::Slice {};
    // The whole of a symbolic dim stays that dim; anything else is unknown.
    assert_eq!(ok_c(&s, &[T("f32[b, seq]"), i64s(&[0]), i64s(&[i64::MAX]), i64s(&[1])]), "f32[b, seq]");
    assert_eq!(ok_c(&s, &[T("f32[b, seq]"), i64s(&[-1]), i64s(&[i64::MIN]), i64s(&[1]), i64s(&[-1])]), "f32[b, seq]");
    assert_eq!(ok_c(&s, &[T("f32[b, seq]"), i64s(&[1]), i64s(&[i64::MAX]), i64s(&[1])]), "f32[b, ?]");
    // Unknown bounds: that axis is unknown; unknown axes: every dim is.
    assert_eq!(ok_c(&s, &[T("f32[3, 4]"), T("i64[1]"), i64s(&[2]), i64s(&[1])]), "f32[3, ?]");
    assert_eq!(ok_c(&s, &[T("f32[3, 4]"), i64s(&[0]), i64s(&[2]), T("i64[1]")]), "f32[?, ?]");
    assert_eq!(ok_c(&s, &[T("f32[3, 4]"), i64s(&[0]), i64s(&[2]), i64s(&[1]), T("i64[1]")]), "f32[3, ?]");
}

#[test]
fn slice_errors() {
    let s = Op::Slice {};
    fails_c(&s, &[T("f32[3, 4]"), i64s(&[0]), i64s(&[2]), i64s(&[1]), i64s(&[0])], "slice: steps [0] contain 0");
    fails_c(
        &s,
        &[T("f32[3, 4]"), i64s(&[0, 0]), i64s(&[2])],
        "must have one length, but ends has 1 entries and starts 2",
    );
    fails_c(&s, &[T("f32[3, 4]"), i64s(&[0]), i64s(&[2]), i64s(&[2])], "slice: axis 2 is out of range for rank 2");
    fails_c(&s, &[T("f32[3, 4]"), i64s(&[0, 0]), i64s(&[2, 2]), i64s(&[1, -1])], "the axes [1, -1] name axis 1 twice");
    fails_c(&s, &[T("f32[3]"), i64s(&[0, 0]), i64s(&[2, 2])], "starts has 2 entries but x [3] has only 1 axes");
    fails(&s, &["f32[3]", "f32[1]", "i64[1]"], "starts must be a 1-D i64 (or i32) tensor, but it is f32[1]");
}

#[test]
fn expand() {
    let e = Op::Expand {};
    assert_eq!(ok_c(&e, &[T("f32[3, 1]"), i64s(&[2, 3, 4])]), "f32[2, 3, 4]");
    // Target dims of 1 keep the input's dim (bidirectional broadcast).
    assert_eq!(ok_c(&e, &[T("f32[s, 4]"), i64s(&[1, 1])]), "f32[s, 4]");
    assert_eq!(ok(&e, &["f32[s, 4]", "i64[3]"]), "f32[?, ?, 4]");
    fails_c(
        &e,
        &[T("f32[3, 2]"), i64s(&[3, 4])],
        "expand: x cannot be expanded: shapes [3, 2] and [3, 4] cannot be broadcast",
    );
    fails_c(&e, &[T("f32[3]"), i64s(&[-1, 3])], "the target shape [-1, 3] contains the negative size -1");
    fails(&e, &["f32[3]", "i64[?]"], "must have a static length");
}

#[test]
fn range() {
    let r = Op::Range {};
    let f = |x: f32| Input::Const(Tensor::scalar_f32(x));
    assert_eq!(ok_c(&r, &[scalar_i64(0), scalar_i64(10), scalar_i64(3)]), "i64[4]");
    assert_eq!(ok_c(&r, &[scalar_i64(10), scalar_i64(0), scalar_i64(-3)]), "i64[4]");
    assert_eq!(ok_c(&r, &[scalar_i64(5), scalar_i64(0), scalar_i64(1)]), "i64[0]");
    assert_eq!(ok_c(&r, &[f(0.0), f(1.0), f(0.25)]), "f32[4]");
    assert_eq!(ok_c(&r, &[f(1.0), f(0.0), f(0.3)]), "f32[0]");
    assert_eq!(ok_c(&r, &[scalar_i64(0), T("i64[]"), scalar_i64(1)]), "i64[?]");
    fails_c(&r, &[scalar_i64(0), scalar_i64(10), scalar_i64(0)], "range: delta must not be 0");
    fails(&r, &["i64[]", "i64[1]", "i64[]"], "limit must be a scalar, but it is i64[1]");
    fails(&r, &["i64[]", "i32[]", "i64[]"], "start, limit and delta must share one dtype");
    fails(&r, &["bool[]", "bool[]", "bool[]"], "must be numbers");
}

#[test]
fn shape_clamps_start_and_end() {
    let sh = |start, end| Op::Shape { start, end };
    assert_eq!(ok(&sh(0, None), &["f32[b, s, 8]"]), "i64[3]");
    assert_eq!(ok(&sh(1, None), &["f32[b, s, 8]"]), "i64[2]");
    assert_eq!(ok(&sh(-1, None), &["f32[b, s, 8]"]), "i64[1]");
    assert_eq!(ok(&sh(0, Some(-1)), &["f32[b, s, 8]"]), "i64[2]");
    assert_eq!(ok(&sh(-10, Some(10)), &["f32[b, s, 8]"]), "i64[3]");
    assert_eq!(ok(&sh(2, Some(1)), &["f32[b, s, 8]"]), "i64[0]");
    assert_eq!(ok(&sh(0, None), &["bool[]"]), "i64[0]");
    fails(&sh(0, None), &[], "shape takes 1 input but was given 0");
}

#[test]
fn constant_of_shape() {
    let c = |value, dtype| Op::ConstantOfShape { value, dtype };
    assert_eq!(ok_c(&c(0.0, DType::F32), &[i64s(&[2, 3])]), "f32[2, 3]");
    assert_eq!(ok_c(&c(1.0, DType::Bool), &[i64s(&[])]), "bool[]");
    assert_eq!(ok(&c(7.0, DType::I64), &["i64[2]"]), "i64[?, ?]");
    fails_c(&c(0.5, DType::I64), &[i64s(&[2])], "constant_of_shape: value 0.5 is not representable in i64");
    fails_c(&c(300.0, DType::U8), &[i64s(&[2])], "value 300 is not representable in u8");
    fails_c(&c(2.0, DType::Bool), &[i64s(&[2])], "value 2 is not representable in bool");
    fails_c(&c(0.0, DType::F32), &[i64s(&[2, -3])], "the shape [2, -3] contains the negative size -3");
    fails(&c(0.0, DType::Q8C), &["i64[2]"], "dtype q8c is quantized");
    fails(&c(0.0, DType::F32), &["i64[n]"], "the shape input i64[n] must have a static length");
}

#[test]
fn tile() {
    let t = Op::Tile {};
    assert_eq!(ok_c(&t, &[T("f32[2, s, 3]"), i64s(&[3, 1, 0])]), "f32[6, s, 0]");
    assert_eq!(ok_c(&t, &[T("f32[2, s]"), i64s(&[1, 2])]), "f32[2, ?]");
    assert_eq!(ok(&t, &["f32[2, s]", "i64[2]"]), "f32[?, ?]");
    assert_eq!(ok(&t, &["f32[2, s]", "i64[?]"]), "f32[?, ?]");
    fails_c(&t, &[T("f32[2, 3]"), i64s(&[2])], "tile: repeats has 1 entries but x [2, 3] has rank 2");
    fails_c(&t, &[T("f32[2]"), i64s(&[-1])], "repeats [-1] contain the negative count -1");
}

#[test]
fn trilu() {
    let t = Op::Trilu { upper: false };
    assert_eq!(ok(&t, &["f32[b, s, s]"]), "f32[b, s, s]");
    assert_eq!(ok_c(&t, &[T("bool[4, 4]"), scalar_i64(-1)]), "bool[4, 4]");
    assert_eq!(ok(&t, &["f32[4, 4]", "i64[1]"]), "f32[4, 4]");
    fails(&t, &["f32[4]"], "trilu: x must have rank 2 or more, but it is f32[4]");
    fails(&t, &["f32[4, 4]", "i64[2]"], "k must be an i64 scalar, but it is i64[2]");
    fails(&t, &["f32[4, 4]", "f32[]"], "k must be an i64 scalar");
}
