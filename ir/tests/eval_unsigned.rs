//! The unsigned integer dtypes (u16, u32, u64) against hand-computed values: wrapping arithmetic,
//! truncating division, comparisons and max/min of u64 values above `i64::MAX` (which must compare as
//! unsigned, not as the negative i64 of the same bits), shifts, pow, casts to and from every other
//! dtype, and the reductions, scans and sorts that read them.

mod eval_support;

use eval_support::*;
use kiln_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, Tensor, TensorData, UnaryOp};

fn u16t(data: &[u16]) -> Tensor {
    Tensor::new(vec![data.len()], TensorData::U16(data.to_vec())).unwrap()
}

fn u32t(data: &[u32]) -> Tensor {
    Tensor::new(vec![data.len()], TensorData::U32(data.to_vec())).unwrap()
}

fn u64t(data: &[u64]) -> Tensor {
    Tensor::new(vec![data.len()], TensorData::U64(data.to_vec())).unwrap()
}

fn bin(op: BinaryOp, a: &Tensor, b: &Tensor) -> TensorData {
    run1(&Op::Binary(op), &[a, b]).into_data()
}

fn cmp(op: CompareOp, a: &Tensor, b: &Tensor) -> Vec<bool> {
    match run1(&Op::Compare(op), &[a, b]).into_data() {
        TensorData::Bool(v) => v,
        other => panic!("a comparison gave {}", other.dtype()),
    }
}

const BIG: u64 = (1 << 63) + 5; // above i64::MAX: as i64 it would be negative

#[test]
fn u32_arithmetic_wraps_modulo_2_pow_32() {
    let a = u32t(&[0, u32::MAX, 7, 100, 1 << 31]);
    let b = u32t(&[1, 1, 2, 7, 2]);
    assert_eq!(bin(BinaryOp::Sub, &a, &b), TensorData::U32(vec![u32::MAX, u32::MAX - 1, 5, 93, (1 << 31) - 2]));
    assert_eq!(bin(BinaryOp::Add, &a, &b), TensorData::U32(vec![1, 0, 9, 107, (1 << 31) + 2]));
    assert_eq!(bin(BinaryOp::Mul, &a, &b), TensorData::U32(vec![0, u32::MAX, 14, 700, 0]));
    assert_eq!(bin(BinaryOp::Div, &a, &b), TensorData::U32(vec![0, u32::MAX, 3, 14, 1 << 30]));
    assert_eq!(bin(BinaryOp::Mod, &a, &b), TensorData::U32(vec![0, 0, 1, 2, 0]));
    assert_eq!(bin(BinaryOp::Max, &a, &b), TensorData::U32(vec![1, u32::MAX, 7, 100, 1 << 31]));
    assert_eq!(bin(BinaryOp::Min, &a, &b), TensorData::U32(vec![0, 1, 2, 7, 2]));
    // 7^2 = 49, 100^7 = 10^14 mod 2^32 = 276447232, (2^31)^2 = 2^62 mod 2^32 = 0.
    assert_eq!(bin(BinaryOp::Pow, &a, &b), TensorData::U32(vec![0, u32::MAX, 49, 276_447_232, 0]));
}

#[test]
fn u16_arithmetic_wraps_modulo_2_pow_16() {
    let a = u16t(&[0, 65535, 300]);
    let b = u16t(&[1, 2, 300]);
    assert_eq!(bin(BinaryOp::Sub, &a, &b), TensorData::U16(vec![65535, 65533, 0]));
    assert_eq!(bin(BinaryOp::Add, &a, &b), TensorData::U16(vec![1, 1, 600]));
    // 300 * 300 = 90000 = 65536 + 24464.
    assert_eq!(bin(BinaryOp::Mul, &a, &b), TensorData::U16(vec![0, 65534, 24464]));
    assert_eq!(cmp(CompareOp::Greater, &a, &b), vec![false, true, false]);
}

#[test]
fn u64_above_i64_max_adds_and_compares_as_unsigned() {
    let a = u64t(&[BIG, BIG, u64::MAX, 3]);
    let b = u64t(&[1, 1 << 62, 1, u64::MAX]);
    assert_eq!(bin(BinaryOp::Add, &a, &b), TensorData::U64(vec![BIG + 1, BIG + (1 << 62), 0, 2]));
    assert_eq!(bin(BinaryOp::Sub, &a, &b), TensorData::U64(vec![BIG - 1, BIG - (1 << 62), u64::MAX - 1, 4]));
    assert_eq!(bin(BinaryOp::Mul, &a, &b), TensorData::U64(vec![BIG, 1 << 62, u64::MAX, u64::MAX - 2]));
    // (2^63 + 5) * 2^62 = 2^125 + 2^64 + 2^62, which is 2^62 modulo 2^64.
    // Truncating unsigned division: as i64 the first would be a negative quotient.
    assert_eq!(bin(BinaryOp::Div, &a, &b), TensorData::U64(vec![BIG, 2, u64::MAX, 0]));
    assert_eq!(bin(BinaryOp::Mod, &a, &b), TensorData::U64(vec![0, 5, 0, 3]));
    assert_eq!(bin(BinaryOp::Max, &a, &b), TensorData::U64(vec![BIG, BIG, u64::MAX, u64::MAX]));
    assert_eq!(bin(BinaryOp::Min, &a, &b), TensorData::U64(vec![1, 1 << 62, 1, 3]));
    assert_eq!(cmp(CompareOp::Greater, &a, &b), vec![true, true, true, false]);
    assert_eq!(cmp(CompareOp::Less, &a, &b), vec![false, false, false, true]);
    assert_eq!(cmp(CompareOp::GreaterEqual, &a, &a), vec![true; 4]);
    assert_eq!(cmp(CompareOp::LessEqual, &b, &a), vec![true, true, true, false]);
    assert_eq!(cmp(CompareOp::Equal, &a, &u64t(&[BIG])), vec![true, true, false, false]);
    // 2^32 squared wraps to 0; 3^40 = 12157665459056928801 fits in u64 but not in i64.
    let base = u64t(&[1 << 32, 3]);
    let exp = u64t(&[2, 40]);
    assert_eq!(bin(BinaryOp::Pow, &base, &exp), TensorData::U64(vec![0, 12_157_665_459_056_928_801]));
}

#[test]
fn unsigned_division_by_zero_is_an_error() {
    assert_fails(&Op::Binary(BinaryOp::Div), &[&u64t(&[BIG]), &u64t(&[0])], "integer division by zero");
    assert_fails(&Op::Binary(BinaryOp::Mod), &[&u64t(&[1]), &u64t(&[0])], "integer mod by zero");
    assert_fails(&Op::Binary(BinaryOp::Div), &[&u32t(&[1]), &u32t(&[0])], "integer division by zero");
}

#[test]
fn unsigned_shifts_and_bitwise_ops() {
    let x = u64t(&[BIG, 1, u64::MAX, 16]);
    let s = u64t(&[1, 63, 64, 2]);
    // A logical right shift: the top bit does not spread as it would in an i64.
    assert_eq!(bin(BinaryOp::ShiftRight, &x, &s), TensorData::U64(vec![BIG >> 1, 0, 0, 4]));
    assert_eq!(bin(BinaryOp::ShiftLeft, &x, &s), TensorData::U64(vec![10, 1 << 63, 0, 64]));
    assert_eq!(bin(BinaryOp::BitAnd, &x, &u64t(&[1 << 63])), TensorData::U64(vec![1 << 63, 0, 1 << 63, 0]));
    assert_eq!(bin(BinaryOp::BitOr, &x, &u64t(&[2])), TensorData::U64(vec![BIG | 2, 3, u64::MAX, 18]));
    assert_eq!(bin(BinaryOp::BitXor, &x, &u64t(&[u64::MAX])), TensorData::U64(vec![!BIG, !1, 0, !16]));
    assert_eq!(run1(&Op::Unary(UnaryOp::BitNot), &[&x]).into_data(), TensorData::U64(vec![!BIG, !1, 0, !16]));

    let y = u32t(&[0x8000_0001, 3, 5]);
    let t = u32t(&[1, 31, 32]);
    assert_eq!(bin(BinaryOp::ShiftRight, &y, &t), TensorData::U32(vec![0x4000_0000, 0, 0]));
    assert_eq!(bin(BinaryOp::ShiftLeft, &y, &t), TensorData::U32(vec![2, 1 << 31, 0]));
    assert_eq!(
        run1(&Op::Unary(UnaryOp::BitNot), &[&u16t(&[0, 0x00ff])]).into_data(),
        TensorData::U16(vec![0xffff, 0xff00])
    );
}

#[test]
fn unsigned_unary_functions() {
    let x = u64t(&[0, BIG]);
    assert_eq!(run1(&Op::Unary(UnaryOp::Abs), &[&x]).into_data(), TensorData::U64(vec![0, BIG]));
    assert_eq!(run1(&Op::Unary(UnaryOp::Sign), &[&x]).into_data(), TensorData::U64(vec![0, 1]));
    assert_eq!(run1(&Op::Unary(UnaryOp::Relu), &[&x]).into_data(), TensorData::U64(vec![0, BIG]));
    assert_fails(&Op::Unary(UnaryOp::Exp), &[&x], "not defined on integer tensors (u64)");
}

#[test]
fn casts_to_and_from_unsigned() {
    let cast = |x: &Tensor, to| run1(&Op::cast(to), &[x]).into_data();
    let x = u64t(&[BIG, u64::MAX, 300]);
    // To floats from the unsigned value, not from the negative i64 of the same bits.
    assert_eq!(cast(&x, DType::F64), TensorData::F64(vec![BIG as f64, u64::MAX as f64, 300.0]));
    assert_eq!(cast(&x, DType::F32), TensorData::F32(vec![BIG as f32, u64::MAX as f32, 300.0]));
    // To narrower integers: the low bits.
    assert_eq!(cast(&x, DType::I64), TensorData::I64(vec![i64::MIN + 5, -1, 300]));
    assert_eq!(cast(&x, DType::U32), TensorData::U32(vec![5, u32::MAX, 300]));
    assert_eq!(cast(&x, DType::U8), TensorData::U8(vec![5, 255, 44]));
    assert_eq!(cast(&x, DType::I16), TensorData::I16(vec![5, -1, 300]));
    assert_eq!(cast(&x, DType::Bool), TensorData::Bool(vec![true, true, true]));

    // Signed to unsigned keeps the two's-complement bits, as numpy's astype does.
    let i = i64t(&[3], &[-1, 70000, 5]);
    assert_eq!(cast(&i, DType::U64), TensorData::U64(vec![u64::MAX, 70000, 5]));
    assert_eq!(cast(&i, DType::U32), TensorData::U32(vec![u32::MAX, 70000, 5]));
    // 70000 - 65536 = 4464.
    assert_eq!(cast(&i, DType::U16), TensorData::U16(vec![u16::MAX, 4464, 5]));
    // Floats truncate and saturate: negative to 0, beyond the range to the maximum, NaN to 0.
    let f = f64t(&[5], &[2.9, -3.0, 1e30, f64::NAN, 65535.5]);
    assert_eq!(cast(&f, DType::U64), TensorData::U64(vec![2, 0, u64::MAX, 0, 65535]));
    assert_eq!(cast(&f, DType::U32), TensorData::U32(vec![2, 0, u32::MAX, 0, 65535]));
    assert_eq!(cast(&f, DType::U16), TensorData::U16(vec![2, 0, u16::MAX, 0, 65535]));
    let u = u32t(&[u32::MAX]);
    assert_eq!(cast(&u, DType::I64), TensorData::I64(vec![u32::MAX as i64]));
    assert_eq!(cast(&u, DType::I32), TensorData::I32(vec![-1]));
    assert_eq!(cast(&u, DType::F64), TensorData::F64(vec![u32::MAX as f64]));
}

#[test]
fn float_pow_with_an_unsigned_exponent_after_a_cast() {
    // The ONNX importer casts the exponent to the base's type; the cast must read u64 as unsigned.
    let e = run1(&Op::cast(DType::F32), &[&u64t(&[3, 0])]);
    let got = run1(&Op::Binary(BinaryOp::Pow), &[&f32t(&[2], &[2.0, 5.0]), &e]);
    assert_eq!(got.into_data(), TensorData::F32(vec![8.0, 1.0]));
}

#[test]
fn reductions_scans_and_sorts_of_u64_are_exact() {
    let x = Tensor::new(vec![2, 2], TensorData::U64(vec![BIG, 1, u64::MAX, 2])).unwrap();
    let reduce = |kind| run1(&Op::Reduce { kind, axes: vec![1], keepdims: false }, &[&x]).into_data();
    assert_eq!(reduce(ReduceKind::Max), TensorData::U64(vec![BIG, u64::MAX]));
    assert_eq!(reduce(ReduceKind::Min), TensorData::U64(vec![1, 2]));
    assert_eq!(reduce(ReduceKind::Sum), TensorData::U64(vec![BIG + 1, 1]));
    let argmax = run1(&Op::ArgMax { axis: 1, keepdims: false }, &[&x]);
    assert_eq!(argmax.into_data(), TensorData::I64(vec![0, 0]));

    // Two values that f64 cannot tell apart (both round to 2^64) still sort in order.
    let close = u64t(&[u64::MAX - 1, 7, u64::MAX, BIG]);
    let top = run(&Op::TopK { axis: 0, largest: true }, &[&close, &i64t(&[1], &[3])]);
    assert_eq!(top[0].data(), &TensorData::U64(vec![u64::MAX, u64::MAX - 1, BIG]));
    assert_eq!(top[1].data(), &TensorData::I64(vec![2, 0, 3]));

    let cum = run1(&Op::CumSum { axis: 0, exclusive: false, reverse: false }, &[&u64t(&[u64::MAX, 2, BIG])]);
    assert_eq!(cum.into_data(), TensorData::U64(vec![u64::MAX, 1, BIG + 1]));

    let a = Tensor::new(vec![1, 2], TensorData::U64(vec![BIG, 2])).unwrap();
    let b = Tensor::new(vec![2, 1], TensorData::U64(vec![1, 3])).unwrap();
    assert_eq!(run1(&Op::MatMul {}, &[&a, &b]).into_data(), TensorData::U64(vec![BIG + 6]));
}

#[test]
fn unsigned_ranges_count_up() {
    let s = |v: u64| Tensor::new(vec![], TensorData::U64(vec![v])).unwrap();
    let got = run1(&Op::Range {}, &[&s(BIG), &s(BIG + 7), &s(3)]);
    assert_eq!(got.into_data(), TensorData::U64(vec![BIG, BIG + 3, BIG + 6]));
    assert_eq!(run1(&Op::Range {}, &[&s(5), &s(2), &s(1)]).len(), 0);
    assert_fails(&Op::Range {}, &[&s(0), &s(2), &s(0)], "delta is 0");
}
