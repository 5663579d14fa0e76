//! Elementwise ops against float64 references: every unary op, binary arithmetic/logic with
//! broadcasting, comparisons, `where`, `cast`, and their error cases.

// References are index loops on purpose: they mirror the math, not the implementation.
#![allow(clippy::needless_range_loop)]

mod eval_support;

use eval_support::*;
use kiln_ir::{BinaryOp, CompareOp, DType, Op, Tensor, TensorData, UnaryOp};

/// erf by its Maclaurin series, independent of the implementation's libm (accurate to ~1e-13 for |x| <= 3).
fn erf_series(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x; // x^(2n+1) (-1)^n / n!
    for n in 0..80 {
        sum += term / (2 * n + 1) as f64;
        term *= -x * x / (n + 1) as f64;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

fn unary_ref(u: UnaryOp, x: f64) -> f64 {
    match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Erf => erf_series(x),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        UnaryOp::Tan => x.tan(),
        UnaryOp::Asin => x.asin(),
        UnaryOp::Acos => x.acos(),
        UnaryOp::Atan => x.atan(),
        UnaryOp::Sinh => x.sinh(),
        UnaryOp::Cosh => x.cosh(),
        UnaryOp::Asinh => x.asinh(),
        UnaryOp::Acosh => x.acosh(),
        UnaryOp::Atanh => x.atanh(),
        UnaryOp::Not | UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::BitNot => unreachable!(),
    }
}

const FLOAT_UNARY: [UnaryOp; 26] = [
    UnaryOp::Tan,
    UnaryOp::Asin,
    UnaryOp::Acos,
    UnaryOp::Atan,
    UnaryOp::Sinh,
    UnaryOp::Cosh,
    UnaryOp::Asinh,
    UnaryOp::Acosh,
    UnaryOp::Atanh,
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Reciprocal,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Erf,
    UnaryOp::Floor,
    UnaryOp::Ceil,
    UnaryOp::Round,
    UnaryOp::Relu,
    UnaryOp::Sign,
];

/// Inputs inside each function's domain: positive for log/sqrt/rsqrt, away from 0 for reciprocal.
fn unary_input(u: UnaryOp, seed: u64) -> Tensor {
    let (lo, hi) = match u {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => (0.05, 5.0),
        UnaryOp::Reciprocal => (0.25, 4.0),
        // Inside the domains of asin/acos/atanh (|x| < 1) and acosh (x >= 1); tan away from its poles.
        UnaryOp::Asin | UnaryOp::Acos | UnaryOp::Atanh | UnaryOp::Tan => (-0.95, 0.95),
        UnaryOp::Acosh => (1.0, 5.0),
        _ => (-3.0, 3.0),
    };
    let mut v: Vec<f32> = values(24, seed, lo, hi).into_iter().map(|x| x as f32).collect();
    if matches!(u, UnaryOp::Round | UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Sign | UnaryOp::Relu) {
        // Exact halves and zero probe ties-to-even and signs.
        v[..6].copy_from_slice(&[0.5, 1.5, 2.5, -0.5, -2.5, 0.0]);
    }
    f32t(&[2, 3, 4], &v)
}

#[test]
fn float_unary_ops_match_f64_reference() {
    for (seed, u) in FLOAT_UNARY.into_iter().enumerate() {
        let x = unary_input(u, seed as u64);
        let want: Vec<f64> = x.to_f64_vec().into_iter().map(|a| unary_ref(u, a)).collect();
        let got = run1(&Op::Unary(u), &[&x]);
        assert_eq!(got.dtype(), DType::F32, "{}", u.name());
        assert_close(&got, &[2, 3, 4], &want);

        let x64 = f64t(&[2, 3, 4], &x.to_f64_vec());
        let got64 = run1(&Op::Unary(u), &[&x64]);
        assert_eq!(got64.dtype(), DType::F64);
        assert_close_tol(&got64, &[2, 3, 4], &want, 1e-12);
    }
}

#[test]
fn half_unary_ops_round_to_storage_type() {
    for u in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Erf, UnaryOp::Neg, UnaryOp::Round] {
        let x32 = unary_input(u, 7);
        for x in [to_f16(&x32), to_bf16(&x32)] {
            let want: Vec<f64> = x.to_f64_vec().into_iter().map(|a| unary_ref(u, a)).collect();
            let got = run1(&Op::Unary(u), &[&x]);
            assert_eq!(got.dtype(), x.dtype());
            assert_close_half(&got, &[2, 3, 4], &want);
        }
    }
}

#[test]
fn special_float_values() {
    let x = f32t(&[5], &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1.0]);
    let isnan = run1(&Op::Unary(UnaryOp::IsNan), &[&x]);
    assert_eq!(isnan, boolt(&[5], &[true, false, false, false, false]));
    let isinf = run1(&Op::Unary(UnaryOp::IsInf), &[&x]);
    assert_eq!(isinf, boolt(&[5], &[false, true, true, false, false]));
    let sign = run1(&Op::Unary(UnaryOp::Sign), &[&x]).to_f64_vec();
    assert!(sign[0].is_nan());
    assert_eq!(&sign[1..], &[1.0, -1.0, 0.0, 1.0]);
    let relu = run1(&Op::Unary(UnaryOp::Relu), &[&x]).to_f64_vec();
    assert!(relu[0].is_nan());
    assert_eq!(&relu[1..], &[f64::INFINITY, 0.0, 0.0, 1.0]);
    // Sigmoid of large magnitudes neither overflows nor becomes NaN.
    let big = f32t(&[2], &[-200.0, 200.0]);
    assert_eq!(run1(&Op::Unary(UnaryOp::Sigmoid), &[&big]).to_f64_vec(), vec![0.0, 1.0]);
}

#[test]
fn bool_unary_ops() {
    let x = boolt(&[3], &[true, false, true]);
    assert_eq!(run1(&Op::Unary(UnaryOp::Not), &[&x]), boolt(&[3], &[false, true, false]));
}

#[test]
fn integer_unary_ops_wrap() {
    let x = Tensor::new(vec![5], TensorData::I8(vec![-128, -3, 0, 5, 127])).unwrap();
    let get = |u| run1(&Op::Unary(u), &[&x]);
    assert_eq!(get(UnaryOp::Neg).into_data(), TensorData::I8(vec![-128, 3, 0, -5, -127]));
    assert_eq!(get(UnaryOp::Abs).into_data(), TensorData::I8(vec![-128, 3, 0, 5, 127]));
    assert_eq!(get(UnaryOp::Sign).into_data(), TensorData::I8(vec![-1, -1, 0, 1, 1]));
    assert_eq!(get(UnaryOp::Relu).into_data(), TensorData::I8(vec![0, 0, 0, 5, 127]));
}

#[test]
fn unary_errors_name_the_dtype() {
    assert_fails(&Op::Unary(UnaryOp::Exp), &[&i64t(&[1], &[1])], "exp: not defined on integer tensors (i64)");
    assert_fails(&Op::Unary(UnaryOp::Not), &[&f32t(&[1], &[1.0])], "not: not defined on float tensors (f32)");
    assert_fails(&Op::Unary(UnaryOp::Neg), &[&boolt(&[1], &[true])], "neg: not defined on bool tensors");
    assert_fails(&Op::Unary(UnaryOp::IsNan), &[&i64t(&[1], &[1])], "not defined on integer");
    assert_fails(&Op::Unary(UnaryOp::Exp), &[], "expected 1 inputs, got 0");
}

fn binary_ref(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Mod => a % b,
        _ => unreachable!(),
    }
}

#[test]
fn float_binary_ops_broadcast() {
    // a[2, 1, 4] (op) b[3, 1] -> [2, 3, 4]
    for (seed, op) in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Mod,
    ]
    .into_iter()
    .enumerate()
    {
        let seed = seed as u64 * 2;
        let a = rand_f32(&[2, 1, 4], seed);
        let mut b = rand_f32(&[3, 1], seed + 1);
        if op == BinaryOp::Pow {
            // Positive bases keep powf real.
            let positive: Vec<f32> = a.to_f32_vec().iter().map(|x| x.abs() + 0.1).collect();
            let a = f32t(&[2, 1, 4], &positive);
            check_binary(op, &a, &b);
            continue;
        }
        if matches!(op, BinaryOp::Div | BinaryOp::Mod) {
            b = f32t(&[3, 1], &[0.7, -1.3, 2.1]);
        }
        check_binary(op, &a, &b);
    }
}

fn check_binary(op: BinaryOp, a: &Tensor, b: &Tensor) {
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                want.push(binary_ref(op, av[i * 4 + k], bv[j]));
            }
        }
    }
    assert_close(&run1(&Op::Binary(op), &[a, b]), &[2, 3, 4], &want);
    // Swapped operands broadcast the same way.
    let mut want_swapped = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                want_swapped.push(binary_ref(op, bv[j], av[i * 4 + k]));
            }
        }
    }
    assert_close(&run1(&Op::Binary(op), &[b, a]), &[2, 3, 4], &want_swapped);
}

#[test]
fn pow_broadcasts_too() {
    let a = f32t(&[2, 1, 4], &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 0.2, 0.9]);
    let b = f32t(&[3, 1], &[-1.5, 0.0, 2.3]);
    check_binary(BinaryOp::Pow, &a, &b);
}

#[test]
fn scalar_and_f64_and_half_binary() {
    let a = rand_f32(&[4, 3], 11);
    let s = Tensor::scalar_f32(2.5);
    let want: Vec<f64> = a.to_f64_vec().iter().map(|x| x * 2.5).collect();
    assert_close(&run1(&Op::Binary(BinaryOp::Mul), &[&a, &s]), &[4, 3], &want);

    let a64 = f64t(&[3], &[1.0, 2.0, 3.0]);
    let b64 = f64t(&[3], &[1e-17, 0.0, -3.0]);
    let got = run1(&Op::Binary(BinaryOp::Add), &[&a64, &b64]);
    assert_eq!(got.into_data(), TensorData::F64(vec![1.0 + 1e-17, 2.0, 0.0]));

    let b = rand_f32(&[4, 3], 12);
    for (ha, hb) in [(to_f16(&a), to_f16(&b)), (to_bf16(&a), to_bf16(&b))] {
        let want: Vec<f64> = ha.to_f64_vec().iter().zip(hb.to_f64_vec()).map(|(x, y)| x / y).collect();
        let got = run1(&Op::Binary(BinaryOp::Div), &[&ha, &hb]);
        assert_eq!(got.dtype(), ha.dtype());
        assert_close_half(&got, &[4, 3], &want);
    }
}

#[test]
fn float_max_min_propagate_nan_and_division_by_zero_is_inf() {
    let a = f32t(&[3], &[f32::NAN, 1.0, 1.0]);
    let b = f32t(&[3], &[1.0, f32::NAN, 0.0]);
    let max = run1(&Op::Binary(BinaryOp::Max), &[&a, &b]).to_f64_vec();
    assert!(max[0].is_nan() && max[1].is_nan());
    assert_eq!(max[2], 1.0);
    let div = run1(&Op::Binary(BinaryOp::Div), &[&a, &b]).to_f64_vec();
    assert_eq!(div[2], f64::INFINITY);
}

#[test]
fn integer_division_mod_and_pow_follow_onnx() {
    let a = i64t(&[4], &[7, -7, 7, -7]);
    let b = i64t(&[4], &[2, 2, -2, -2]);
    assert_eq!(run1(&Op::Binary(BinaryOp::Div), &[&a, &b]), i64t(&[4], &[3, -3, -3, 3]));
    assert_eq!(run1(&Op::Binary(BinaryOp::Mod), &[&a, &b]), i64t(&[4], &[1, 1, -1, -1]));
    let fa = f32t(&[4], &[7.5, -7.5, 7.5, -7.5]);
    let fb = f32t(&[4], &[2.0, 2.0, -2.0, -2.0]);
    assert_eq!(run1(&Op::Binary(BinaryOp::Mod), &[&fa, &fb]).to_f64_vec(), vec![1.5, -1.5, 1.5, -1.5]);

    let base = i64t(&[7], &[3, 2, -2, 2, 1, -1, 5]);
    let exp = i64t(&[7], &[4, 62, 3, -1, -5, -3, 0]);
    assert_eq!(run1(&Op::Binary(BinaryOp::Pow), &[&base, &exp]), i64t(&[7], &[81, 1 << 62, -8, 0, 1, -1, 1]));

    let x = i32t(&[3], &[i32::MAX, -5, 9]);
    let y = i32t(&[1], &[2]);
    assert_eq!(run1(&Op::Binary(BinaryOp::Add), &[&x, &y]), i32t(&[3], &[i32::MIN + 1, -3, 11]));
    assert_eq!(run1(&Op::Binary(BinaryOp::Max), &[&x, &y]), i32t(&[3], &[i32::MAX, 2, 9]));
    assert_eq!(run1(&Op::Binary(BinaryOp::Min), &[&x, &y]), i32t(&[3], &[2, -5, 2]));
    assert_eq!(run1(&Op::Binary(BinaryOp::Sub), &[&x, &y]), i32t(&[3], &[i32::MAX - 2, -7, 7]));
    assert_eq!(run1(&Op::Binary(BinaryOp::Mul), &[&x, &y]), i32t(&[3], &[-2, -10, 18]));

    let u = Tensor::new(vec![2], TensorData::U8(vec![200, 3])).unwrap();
    let v = Tensor::new(vec![2], TensorData::U8(vec![100, 5])).unwrap();
    assert_eq!(run1(&Op::Binary(BinaryOp::Add), &[&u, &v]).into_data(), TensorData::U8(vec![44, 8]));
    assert_eq!(run1(&Op::Binary(BinaryOp::Sub), &[&u, &v]).into_data(), TensorData::U8(vec![100, 254]));
}

#[test]
fn integer_division_by_zero_is_an_error() {
    let a = i64t(&[2], &[1, 2]);
    let b = i64t(&[2], &[1, 0]);
    assert_fails(&Op::Binary(BinaryOp::Div), &[&a, &b], "div: integer division by zero (2 / 0)");
    assert_fails(&Op::Binary(BinaryOp::Mod), &[&a, &b], "integer mod by zero");
    let zero = i64t(&[], &[0]);
    let neg = i64t(&[], &[-1]);
    assert_fails(&Op::Binary(BinaryOp::Pow), &[&zero, &neg], "negative power");
}

#[test]
fn logical_ops_broadcast() {
    let a = boolt(&[2, 1], &[false, true]);
    let b = boolt(&[2], &[false, true]);
    let table = |op| run1(&Op::Binary(op), &[&a, &b]);
    assert_eq!(table(BinaryOp::And), boolt(&[2, 2], &[false, false, false, true]));
    assert_eq!(table(BinaryOp::Or), boolt(&[2, 2], &[false, true, true, true]));
    assert_eq!(table(BinaryOp::Xor), boolt(&[2, 2], &[false, true, true, false]));
}

#[test]
fn binary_errors() {
    let f = f32t(&[2, 3], &[0.0; 6]);
    assert_fails(
        &Op::Binary(BinaryOp::Add),
        &[&f, &to_f16(&f)],
        "add: operands must have the same dtype, got f32[2, 3] and f16[2, 3]",
    );
    assert_fails(&Op::Binary(BinaryOp::Add), &[&f, &f32t(&[2], &[0.0; 2])], "shapes [2, 3] and [2] do not broadcast");
    assert_fails(&Op::Binary(BinaryOp::And), &[&f, &f], "and: not defined on float tensors");
    let b = boolt(&[1], &[true]);
    assert_fails(&Op::Binary(BinaryOp::Add), &[&b, &b], "add: not defined on bool tensors");
    assert_fails(&Op::Binary(BinaryOp::Or), &[&i64t(&[0], &[]), &i64t(&[0], &[])], "not defined on integer");
    assert_fails(&Op::Binary(BinaryOp::Add), &[&f], "expected 2 inputs, got 1");
}

fn compare_ref(op: CompareOp, a: f64, b: f64) -> bool {
    match op {
        CompareOp::Equal => a == b,
        CompareOp::Less => a < b,
        CompareOp::LessEqual => a <= b,
        CompareOp::Greater => a > b,
        CompareOp::GreaterEqual => a >= b,
    }
}

#[test]
fn comparisons_broadcast_for_floats_and_ints() {
    // Small integers as floats so that equality occurs.
    let a = f32t(&[3, 1], &[0.0, 1.0, f32::NAN]);
    let b = f32t(&[4], &[-1.0, 0.0, 1.0, 2.0]);
    let ai = i64t(&[3, 1], &[0, 1, 5]);
    let bi = i64t(&[4], &[-1, 0, 1, 2]);
    for op in CompareOp::ALL {
        let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
        let want: Vec<bool> =
            (0..3).flat_map(|i| (0..4).map(move |j| (i, j))).map(|(i, j)| compare_ref(*op, av[i], bv[j])).collect();
        assert_eq!(run1(&Op::Compare(*op), &[&a, &b]), boolt(&[3, 4], &want), "{}", op.name());
        let (av, bv) = (ai.to_f64_vec(), bi.to_f64_vec());
        let want: Vec<bool> =
            (0..3).flat_map(|i| (0..4).map(move |j| (i, j))).map(|(i, j)| compare_ref(*op, av[i], bv[j])).collect();
        assert_eq!(run1(&Op::Compare(*op), &[&ai, &bi]), boolt(&[3, 4], &want), "{}", op.name());
    }
    let p = boolt(&[2], &[true, false]);
    let q = boolt(&[2], &[true, true]);
    assert_eq!(run1(&Op::Compare(CompareOp::Equal), &[&p, &q]), boolt(&[2], &[true, false]));
    assert_fails(&Op::Compare(CompareOp::Less), &[&p, &q], "less: ordering comparisons are not defined on bool");
    assert_fails(&Op::Compare(CompareOp::Equal), &[&p, &ai], "same dtype");
}

#[test]
fn where_broadcasts_three_ways() {
    let cond = boolt(&[2, 1], &[true, false]);
    let a = rand_f32(&[1, 3], 5);
    let b = Tensor::scalar_f32(-9.0);
    let av = a.to_f64_vec();
    let mut want = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            want.push(if i == 0 { av[j] } else { -9.0 });
        }
    }
    let got = run1(&Op::Where {}, &[&cond, &a, &b]);
    assert_eq!(got.shape(), &[2, 3]);
    assert_eq!(got.to_f64_vec(), want);

    let ia = i32t(&[3], &[1, 2, 3]);
    let ib = i32t(&[3], &[-1, -2, -3]);
    let c = boolt(&[3], &[false, true, false]);
    assert_eq!(run1(&Op::Where {}, &[&c, &ia, &ib]), i32t(&[3], &[-1, 2, -3]));

    assert_fails(&Op::Where {}, &[&ia, &ia, &ib], "where: condition must be bool, got i32[3]");
    assert_fails(&Op::Where {}, &[&c, &ia, &a], "the two branches must have the same dtype");
    assert_fails(&Op::Where {}, &[&c, &rand_f32(&[2], 1), &b], "do not broadcast");
}

#[test]
fn cast_between_plain_dtypes() {
    let cast = |x: &Tensor, to| run1(&Op::cast(to), &[x]).into_data();
    let f = f32t(&[6], &[1.7, -1.7, f32::NAN, 1e10, -0.5, 0.0]);
    assert_eq!(cast(&f, DType::I32), TensorData::I32(vec![1, -1, 0, i32::MAX, 0, 0]));
    assert_eq!(cast(&f, DType::I64), TensorData::I64(vec![1, -1, 0, 10_000_000_000, 0, 0]));
    assert_eq!(cast(&f, DType::U8), TensorData::U8(vec![1, 0, 0, 255, 0, 0]));
    assert_eq!(cast(&f, DType::I8), TensorData::I8(vec![1, -1, 0, 127, 0, 0]));
    assert_eq!(cast(&f, DType::Bool), TensorData::Bool(vec![true, true, true, true, true, false]));

    let third = f32t(&[1], &[1.0 / 3.0]);
    assert_eq!(cast(&third, DType::F16), TensorData::F16(vec![half::f16::from_f32(1.0 / 3.0)]));
    assert_eq!(cast(&third, DType::BF16), TensorData::BF16(vec![half::bf16::from_f32(1.0 / 3.0)]));
    assert_eq!(cast(&third, DType::F64), TensorData::F64(vec![(1.0f32 / 3.0) as f64]));
    let d = f64t(&[1], &[0.1]);
    assert_eq!(cast(&d, DType::F32), TensorData::F32(vec![0.1f32]));
    assert_eq!(cast(&to_f16(&third), DType::F32), TensorData::F32(vec![half::f16::from_f32(1.0 / 3.0).to_f32()]));

    let i = i64t(&[4], &[300, -1, 0, (1 << 40) + 1]);
    assert_eq!(cast(&i, DType::U8), TensorData::U8(vec![44, 255, 0, 1]));
    assert_eq!(cast(&i, DType::I8), TensorData::I8(vec![44, -1, 0, 1]));
    assert_eq!(cast(&i, DType::I16), TensorData::I16(vec![300, -1, 0, 1]));
    assert_eq!(cast(&i, DType::Bool), TensorData::Bool(vec![true, true, false, true]));
    assert_eq!(cast(&i, DType::F32), TensorData::F32(vec![300.0, -1.0, 0.0, ((1u64 << 40) + 1) as f32]));
    assert_eq!(cast(&i, DType::F16).len(), 4);
    let big = i64t(&[1], &[(1 << 53) + 1]);
    assert_eq!(cast(&big, DType::F32), TensorData::F32(vec![((1u64 << 53) + 1) as f32]));

    let b = boolt(&[2], &[true, false]);
    assert_eq!(cast(&b, DType::F32), TensorData::F32(vec![1.0, 0.0]));
    assert_eq!(cast(&b, DType::I64), TensorData::I64(vec![1, 0]));
    assert_eq!(cast(&b, DType::BF16), TensorData::BF16(vec![half::bf16::ONE, half::bf16::ZERO]));

    // Every plain pair is accepted and keeps the shape.
    let sample = i64t(&[2, 1], &[1, 0]);
    for from in DType::PLAIN {
        let x = run1(&Op::cast(from), &[&sample]);
        for to in DType::PLAIN {
            let y = run1(&Op::cast(to), &[&x]);
            assert_eq!(
                (y.dtype(), y.shape(), y.to_f64_vec()),
                (to, &[2usize, 1][..], vec![1.0, 0.0]),
                "{from} -> {to}"
            );
        }
    }
    assert_fails(&Op::cast(DType::Q8C), &[&f], "cast: cannot cast to quantized dtype q8c");
}

#[test]
fn model_level_ops_are_not_evaluated_here() {
    let x = rand_f32(&[2, 4], 1);
    assert!(kiln_ir::eval::eval_generic(&Op::Weight { name: "w".into() }, &[]).unwrap().is_none());
    assert!(kiln_ir::eval::eval_generic(&Op::Linear {}, &[&x, &x]).unwrap().is_none());
    assert!(kiln_ir::eval::eval_generic(&Op::RmsNorm { eps: 1e-5, offset: 0.0 }, &[&x, &x]).unwrap().is_none());
    let c = Op::Constant { value: x.clone() };
    assert_eq!(run1(&c, &[]), x);
    assert_fails(&c, &[&x], "constant: expected 0 inputs, got 1");
}
