//! Type inference of the generic ops whose shapes follow from input shapes and attributes, and of
//! numpy broadcasting with static, symbolic and unknown dims.

mod common;

use common::{Input, fails, fails_c, i64s, ok, ok_c};
use kiln_ir::infer::{broadcast_dim, broadcast_shapes};
use kiln_ir::{BinaryOp, CompareOp, DType, Dim, Op, ReduceKind, Shape, UnaryOp};

fn add() -> Op {
    Op::Binary(BinaryOp::Add)
}

#[test]
fn broadcasting_static_dims() {
    assert_eq!(ok(&add(), &["f32[2, 3]", "f32[3]"]), "f32[2, 3]");
    assert_eq!(ok(&add(), &["f32[2, 1]", "f32[1, 3]"]), "f32[2, 3]");
    assert_eq!(ok(&add(), &["f32[]", "f32[4, 5]"]), "f32[4, 5]");
    assert_eq!(ok(&add(), &["f32[0, 1]", "f32[1, 7]"]), "f32[0, 7]");
    fails(
        &add(),
        &["f32[2, 3]", "f32[4]"],
        "add: shapes [2, 3] and [4] cannot be broadcast: dim 3 does not match dim 4 (1st from the end)",
    );
    fails(&add(), &["f32[2, 3]", "f32[5, 3]"], "dim 2 does not match dim 5 (2nd from the end)");
}

#[test]
fn broadcasting_symbolic_and_unknown_dims() {
    // Same symbol: equal. 1 broadcasts against anything.
    assert_eq!(ok(&add(), &["f32[b, s, 8]", "f32[b, 1, 8]"]), "f32[b, s, 8]");
    assert_eq!(ok(&add(), &["f32[1, s]", "f32[s, 1]"]), "f32[s, s]");
    // Different symbols, or ? against a symbol: either could be the 1 that broadcasts.
    assert_eq!(ok(&add(), &["f32[s]", "f32[t]"]), "f32[?]");
    assert_eq!(ok(&add(), &["f32[?]", "f32[s]"]), "f32[?]");
    assert_eq!(ok(&add(), &["f32[?]", "f32[?]"]), "f32[?]");
    // A static size other than 1 wins: the other side must be 1 or equal to it.
    assert_eq!(ok(&add(), &["f32[?, s]", "f32[4, 7]"]), "f32[4, 7]");
    assert_eq!(ok(&add(), &["f32[?]", "f32[1]"]), "f32[?]");
    assert_eq!(broadcast_dim(&Dim::Static(3), &Dim::Static(4)), None);
    assert_eq!(broadcast_dim(&Dim::sym("s"), &Dim::Static(1)), Some(Dim::sym("s")));
    let e = broadcast_shapes(&Shape::of(&[2]), &Shape::of(&[3])).unwrap_err();
    assert!(e.contains("cannot be broadcast"), "{e}");
}

#[test]
fn where_broadcasts_three_ways() {
    let op = Op::Where {};
    assert_eq!(ok(&op, &["bool[s, 1, 1]", "f32[1, 4, 1]", "f32[5]"]), "f32[s, 4, 5]");
    assert_eq!(ok(&op, &["bool[]", "i64[]", "i64[]"]), "i64[]");
    fails(&op, &["bool[3]", "f32[3]", "f32[4]"], "where: shapes [3] and [4] cannot be broadcast");
    fails(&op, &["f32[3]", "f32[3]", "f32[3]"], "where: the condition must be a bool tensor, but it is f32[3]");
    fails(
        &op,
        &["bool[3]", "f32[3]", "f16[3]"],
        "the two branches must share one dtype, but they are f32[3] and f16[3]",
    );
}

#[test]
fn matmul_numpy_rules() {
    let mm = Op::MatMul {};
    assert_eq!(ok(&mm, &["f32[2, 3]", "f32[3, 4]"]), "f32[2, 4]");
    assert_eq!(ok(&mm, &["f32[b, 8, s, 64]", "f32[b, 8, 64, t]"]), "f32[b, 8, s, t]");
    // Batch dims broadcast.
    assert_eq!(ok(&mm, &["f32[5, 1, 2, 3]", "f32[4, 3, 6]"]), "f32[5, 4, 2, 6]");
    // 1-D operands: a as a row, b as a column, the added dim dropped.
    assert_eq!(ok(&mm, &["f32[3]", "f32[3, 4]"]), "f32[4]");
    assert_eq!(ok(&mm, &["f32[7, 2, 3]", "f32[3]"]), "f32[7, 2]");
    assert_eq!(ok(&mm, &["f32[3]", "f32[3]"]), "f32[]");
    assert_eq!(ok(&mm, &["f32[3]", "f32[2, 3, 4]"]), "f32[2, 4]");
    assert_eq!(ok(&mm, &["i32[2, ?]", "i32[k, 4]"]), "i32[2, 4]");
    fails(
        &mm,
        &["f32[2, 3]", "f32[4, 5]"],
        "matmul: the contracted dims differ: a [2, 3] has 3 columns but b [4, 5] has 4 rows",
    );
    fails(&mm, &["f32[3]", "f32[4]"], "a [3] has 3 columns but b [4] has 4 rows");
    fails(&mm, &["f32[2, 2, 3]", "f32[5, 3, 4]"], "matmul: batch dims: shapes [2] and [5] cannot be broadcast");
    fails(&mm, &["f32[2, 3]", "f16[3, 4]"], "a and b must share one dtype, but they are f32[2, 3] and f16[3, 4]");
    fails(&mm, &["f32[]", "f32[3]"], "a must have rank 1 or more");
    fails(&mm, &["bool[2, 2]", "bool[2, 2]"], "a must be a numeric (float or integer) tensor");
}

#[test]
fn cast() {
    assert_eq!(ok(&Op::cast(DType::BF16), &["f32[b, 3]"]), "bf16[b, 3]");
    assert_eq!(ok(&Op::cast(DType::Bool), &["i64[]"]), "bool[]");
    fails(
        &Op::cast(DType::Q4G { group_size: 32, zero_points: false }),
        &["f32[4]"],
        "cast: cannot cast to quantized dtype q4g32",
    );
}

#[test]
fn argmax() {
    assert_eq!(ok(&Op::ArgMax { axis: -1, keepdims: true }, &["f32[b, s, v]"]), "i64[b, s, 1]");
    assert_eq!(ok(&Op::ArgMax { axis: -1, keepdims: false }, &["f32[b, s, v]"]), "i64[b, s]");
    assert_eq!(ok(&Op::ArgMax { axis: 0, keepdims: false }, &["i32[5]"]), "i64[]");
    fails(&Op::ArgMax { axis: 3, keepdims: true }, &["f32[2, 3]"], "argmax: axis 3 is out of range for rank 2");
    fails(&Op::ArgMax { axis: 1, keepdims: true }, &["f32[2, 0]"], "axis 1 of x [2, 0] is empty");
    fails(&Op::ArgMax { axis: 0, keepdims: true }, &["bool[2]"], "x must be a numeric");
}

#[test]
fn transpose() {
    let t = |perm: &[i64]| Op::Transpose { perm: perm.to_vec() };
    assert_eq!(ok(&t(&[0, 2, 1, 3]), &["f32[b, s, h, d]"]), "f32[b, h, s, d]");
    assert_eq!(ok(&t(&[]), &["f32[]"]), "f32[]");
    fails(&t(&[0, 0, 1]), &["f32[2, 3, 4]"], "transpose: perm [0, 0, 1] is not a permutation of 0..3");
    fails(&t(&[1, 0]), &["f32[2, 3, 4]"], "perm [1, 0] is not a permutation of 0..3");
    fails(&t(&[0, 1, 3]), &["f32[2, 3, 4]"], "is not a permutation of 0..3");
    fails(&t(&[-1, 0]), &["f32[2, 3]"], "perm [-1, 0] is not a permutation of 0..2");
}

#[test]
fn squeeze_and_unsqueeze() {
    let sq = |axes: &[i64]| Op::Squeeze { axes: axes.to_vec() };
    let unsq = |axes: &[i64]| Op::Unsqueeze { axes: axes.to_vec() };
    assert_eq!(ok(&sq(&[1]), &["f32[b, 1, 8]"]), "f32[b, 8]");
    assert_eq!(ok(&sq(&[-1, 0]), &["f32[1, 8, 1]"]), "f32[8]");
    // A symbolic dim may be squeezed: it is asserted to be 1.
    assert_eq!(ok(&sq(&[0]), &["f32[s, 8]"]), "f32[8]");
    // No axes: every static 1 goes.
    assert_eq!(ok(&sq(&[]), &["f32[1, 8, 1, 2]"]), "f32[8, 2]");
    fails(
        &sq(&[]),
        &["f32[1, s]"],
        "squeeze: without axes every dim of size 1 is removed, so every dim must be static, but x [1, s] has dim s",
    );
    fails(&sq(&[1]), &["f32[1, 8]"], "squeeze: cannot squeeze axis 1 of x [1, 8]: its size is 8, not 1");
    fails(&sq(&[0, -2]), &["f32[1, 1]"], "squeeze: the axes [0, -2] name axis 0 twice");
    fails(&sq(&[2]), &["f32[1, 1]"], "axis 2 is out of range for rank 2");
    assert_eq!(ok(&unsq(&[0]), &["f32[s, 8]"]), "f32[1, s, 8]");
    assert_eq!(ok(&unsq(&[-1]), &["f32[s, 8]"]), "f32[s, 8, 1]");
    assert_eq!(ok(&unsq(&[0, 3]), &["f32[s, 8]"]), "f32[1, s, 8, 1]");
    assert_eq!(ok(&unsq(&[1, 0]), &["i64[]"]), "i64[1, 1]");
    fails(&unsq(&[3]), &["f32[s, 8]"], "unsqueeze: axis 3 is out of range for rank 3");
    fails(&unsq(&[1, -3]), &["f32[s, 8]"], "unsqueeze: the axes [1, -3] name axis 1 twice");
    fails(&unsq(&[]), &["f32[s, 8]"], "unsqueeze: axes must not be empty");
}

#[test]
fn concat() {
    let c = |axis| Op::Concat { axis };
    assert_eq!(ok(&c(-1), &["f32[b, 2]", "f32[b, 3]", "f32[?, 4]"]), "f32[b, 9]");
    assert_eq!(ok(&c(1), &["f32[b, past, 8]", "f32[b, s, 8]"]), "f32[b, ?, 8]");
    assert_eq!(ok(&c(0), &["i64[s]"]), "i64[s]");
    fails(
        &c(0),
        &["f32[2, 3]", "f32[2, 4]"],
        "concat: input 1 [2, 4] differs from the others in dim 1 (4 vs 3), which is not the concat axis",
    );
    fails(
        &c(0),
        &["f32[2, 3]", "f16[2, 3]"],
        "input 1 is f16[2, 3] but input 0 is f32[2, 3]; all inputs must share one dtype",
    );
    fails(&c(0), &["f32[2, 3]", "f32[2]"], "all inputs must have the same rank");
    fails(&c(2), &["f32[2, 3]", "f32[2, 3]"], "axis 2 is out of range");
    fails(&c(0), &[], "concat takes at least 1 input but was given 0");
}

#[test]
fn split() {
    let s = |axis, sizes: &[i64]| Op::Split { axis, sizes: sizes.to_vec() };
    assert_eq!(ok(&s(-1, &[2, 2]), &["f32[1, s, 4, 4]"]), "f32[1, s, 4, 2], f32[1, s, 4, 2]");
    assert_eq!(ok(&s(1, &[1, 3, 0]), &["i64[2, n]"]), "i64[2, 1], i64[2, 3], i64[2, 0]");
    fails(&s(-1, &[2, 3]), &["f32[1, 4]"], "split: sizes [2, 3] add up to 5 but axis 1 of x [1, 4] has size 4");
    fails(&s(0, &[2, -1]), &["f32[1]"], "sizes [2, -1] contain the negative size -1");
    fails(&s(0, &[]), &["f32[1]"], "sizes must not be empty");
    fails(&s(1, &[1]), &["f32[1]"], "axis 1 is out of range for rank 1");
}

#[test]
fn gather() {
    let g = |axis| Op::Gather { axis };
    assert_eq!(ok(&g(0), &["f32[v, h]", "i64[b, s]"]), "f32[b, s, h]");
    assert_eq!(ok(&g(-1), &["f32[2, 3, 4]", "i32[5]"]), "f32[2, 3, 5]");
    assert_eq!(ok(&g(1), &["f32[2, 3, 4]", "i64[]"]), "f32[2, 4]");
    // Negative indices within range are fine; out-of-range constants are caught.
    assert_eq!(ok_c(&g(1), &[Input::Ty("f32[2, 3]"), i64s(&[-3, 2])]), "f32[2, 2]");
    fails_c(
        &g(1),
        &[Input::Ty("f32[2, 3]"), i64s(&[0, 3])],
        "gather: index 3 is out of range for axis 1 of x [2, 3], of size 3",
    );
    fails_c(&g(-1), &[Input::Ty("f32[2, 3]"), i64s(&[-4])], "index -4 is out of range");
    fails(&g(2), &["f32[2, 3]", "i64[]"], "gather: axis 2 is out of range for rank 2");
    fails(&g(0), &["f32[2, 3]", "f32[1]"], "indices must be an integer tensor");
}

#[test]
fn cumsum() {
    let c = |axis| Op::CumSum { axis, exclusive: false, reverse: true };
    assert_eq!(ok(&c(-1), &["i64[1, s]"]), "i64[1, s]");
    fails(&c(2), &["f32[2, 3]"], "cumsum: axis 2 is out of range");
    fails(&c(0), &["bool[2]"], "x must be a numeric");
}

#[test]
fn unary_dtype_rules() {
    for u in [UnaryOp::Exp, UnaryOp::Rsqrt, UnaryOp::Erf, UnaryOp::Floor, UnaryOp::Sigmoid, UnaryOp::Tanh] {
        assert_eq!(ok(&Op::Unary(u), &["f16[s, 2]"]), "f16[s, 2]");
        fails(&Op::Unary(u), &["i64[s, 2]"], &format!("{}: x must be a float tensor, but it is i64[s, 2]", u.name()));
    }
    for u in [UnaryOp::Abs, UnaryOp::Relu, UnaryOp::Sign] {
        assert_eq!(ok(&Op::Unary(u), &["i32[3]"]), "i32[3]");
        fails(&Op::Unary(u), &["bool[3]"], "must be a numeric");
    }
    assert_eq!(ok(&Op::Unary(UnaryOp::Neg), &["i8[3]"]), "i8[3]");
    fails(&Op::Unary(UnaryOp::Neg), &["u8[3]"], "neg: x must be a float or signed integer tensor, but it is u8[3]");
    assert_eq!(ok(&Op::Unary(UnaryOp::Not), &["bool[s]"]), "bool[s]");
    fails(&Op::Unary(UnaryOp::Not), &["i64[s]"], "not: x must be a bool tensor, but it is i64[s]");
    assert_eq!(ok(&Op::Unary(UnaryOp::IsNan), &["bf16[2, ?]"]), "bool[2, ?]");
    assert_eq!(ok(&Op::Unary(UnaryOp::IsInf), &["f64[]"]), "bool[]");
    fails(&Op::Unary(UnaryOp::IsInf), &["i32[2]"], "isinf: x must be a float tensor");
}

#[test]
fn binary_dtype_rules() {
    for b in [BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Max, BinaryOp::Min, BinaryOp::Mod] {
        let op = Op::Binary(b);
        assert_eq!(ok(&op, &["i64[3]", "i64[]"]), "i64[3]");
        fails(
            &op,
            &["f32[3]", "f64[3]"],
            &format!("{}: a and b must share one dtype, but they are f32[3] and f64[3]", b.name()),
        );
        fails(&op, &["bool[3]", "bool[3]"], "a must be a numeric");
    }
    for b in [BinaryOp::And, BinaryOp::Or, BinaryOp::Xor] {
        let op = Op::Binary(b);
        assert_eq!(ok(&op, &["bool[s, 1]", "bool[4]"]), "bool[s, 4]");
        fails(&op, &["bool[3]", "i64[3]"], &format!("{}: b must be a bool tensor, but it is i64[3]", b.name()));
        fails(&op, &["f32[3]", "bool[3]"], "a must be a bool tensor");
    }
}

#[test]
fn compare_gives_bool() {
    for c in [CompareOp::Equal, CompareOp::Less, CompareOp::LessEqual, CompareOp::Greater, CompareOp::GreaterEqual] {
        let op = Op::Compare(c);
        assert_eq!(ok(&op, &["i64[s, 1]", "i64[1, s]"]), "bool[s, s]");
        fails(&op, &["i64[3]", "i32[3]"], "a and b must share one dtype");
        fails(&op, &["f32[3]", "f32[2]"], "cannot be broadcast");
    }
    assert_eq!(ok(&Op::Compare(CompareOp::Equal), &["bool[2]", "bool[]"]), "bool[2]");
    fails(&Op::Compare(CompareOp::Less), &["bool[2]", "bool[]"], "less: a must be a numeric");
}

#[test]
fn reductions() {
    let r = |axes: &[i64], keepdims| Op::Reduce { kind: ReduceKind::Sum, axes: axes.to_vec(), keepdims };
    assert_eq!(ok(&r(&[-1], true), &["f32[1, s, 4, 2]"]), "f32[1, s, 4, 1]");
    assert_eq!(ok(&r(&[1, -1], false), &["f32[1, s, 4, 2]"]), "f32[1, 4]");
    // Empty axes reduce everything.
    assert_eq!(ok(&r(&[], true), &["f32[1, s, 4]"]), "f32[1, 1, 1]");
    assert_eq!(ok(&r(&[], false), &["f32[1, s, 4]"]), "f32[]");
    assert_eq!(ok(&r(&[], false), &["i64[]"]), "i64[]");
    let mean = Op::Reduce { kind: ReduceKind::Mean, axes: vec![2], keepdims: true };
    fails(&mean, &["f32[1, 2]"], "reduce_mean: axis 2 is out of range for rank 2");
    fails(&r(&[0, -2], true), &["f32[3, 2]"], "name axis 0 twice");
    fails(
        &Op::Reduce { kind: ReduceKind::Max, axes: vec![], keepdims: true },
        &["bool[3]"],
        "reduce_max: x must be a numeric",
    );
}
