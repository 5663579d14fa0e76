//! Low-bit element types: conversions against values computed independently, casts through the
//! evaluator, and the refusal of every other op.
//!
//! Expected codes were computed with ml_dtypes 0.6.0 and onnx 1.23.2 in ~/.cache/kiln/onnx-venv:
//! `onnx.numpy_helper.saturate_cast(x, ml_dtypes.float8_*)` (saturating casts), `x.astype(ml_dtypes.float8_*)`
//! (non-saturating), `onnx.numpy_helper.to_float8e8m0(x, saturate, round_mode)`, and
//! `x.astype(ml_dtypes.float4_e2m1fn / int4 / uint4 / int2 / uint2)`, each `.view(np.uint8)`.

use kiln_ir::eval::eval_generic;
use kiln_ir::{CompareOp, DType, E8m0Rounding, LowBitCast, LowBitType, Op, Tensor, TensorData, UnaryOp};

const SAT: LowBitCast = LowBitCast { saturate: true, round_mode: E8m0Rounding::Up };
const NO_SAT: LowBitCast = LowBitCast { saturate: false, round_mode: E8m0Rounding::Up };

/// The f32 inputs of the float8 tables below (in this order).
const F8_INPUTS: [f32; 32] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    448.0,
    449.0,
    464.0,
    465.0,
    480.0,
    1000.0,
    -1000.0,
    240.0,
    248.0,
    57344.0,
    61440.0,
    61441.0,
    1e6,
    0.001953125,
    0.0009765625,
    3.0 / 2048.0,
    1.0 / 131072.0,
    1.0 / 262144.0,
    1.0625,
    1.125,
    1.1875,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    0.3,
    2.5,
    3.5,
];

/// (format, saturating codes, non-saturating codes) from ml_dtypes.
#[rustfmt::skip]
const F8_TABLE: [(LowBitType, [u8; 32], [u8; 32]); 4] = [
    (LowBitType::F8E4M3FN,
     [0x0, 0x80, 0x38, 0xb8, 0x1d, 0x7e, 0x7e, 0x7e, 0x7e, 0x7e, 0x7e, 0xfe, 0x77, 0x78, 0x7e, 0x7e, 0x7e, 0x7e, 0x1, 0x0, 0x1, 0x0, 0x0, 0x38, 0x39, 0x3a, 0x7e, 0xfe, 0x7f, 0x2a, 0x42, 0x46],
     [0x0, 0x80, 0x38, 0xb8, 0x1d, 0x7e, 0x7e, 0x7e, 0x7f, 0x7f, 0x7f, 0xff, 0x77, 0x78, 0x7f, 0x7f, 0x7f, 0x7f, 0x1, 0x0, 0x1, 0x0, 0x0, 0x38, 0x39, 0x3a, 0x7f, 0xff, 0x7f, 0x2a, 0x42, 0x46]),
    (LowBitType::F8E4M3FNUZ,
     [0x0, 0x0, 0x40, 0xc0, 0x25, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0xff, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x2, 0x1, 0x2, 0x0, 0x0, 0x40, 0x41, 0x42, 0x7f, 0xff, 0x80, 0x32, 0x4a, 0x4e],
     [0x0, 0x0, 0x40, 0xc0, 0x25, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x2, 0x1, 0x2, 0x0, 0x0, 0x40, 0x41, 0x42, 0x80, 0x80, 0x80, 0x32, 0x4a, 0x4e]),
    (LowBitType::F8E5M2,
     [0x0, 0x80, 0x3c, 0xbc, 0x2e, 0x5f, 0x5f, 0x5f, 0x5f, 0x60, 0x64, 0xe4, 0x5c, 0x5c, 0x7b, 0x7b, 0x7b, 0x7b, 0x18, 0x14, 0x16, 0x0, 0x0, 0x3c, 0x3c, 0x3d, 0x7b, 0xfb, 0x7e, 0x35, 0x41, 0x43],
     [0x0, 0x80, 0x3c, 0xbc, 0x2e, 0x5f, 0x5f, 0x5f, 0x5f, 0x60, 0x64, 0xe4, 0x5c, 0x5c, 0x7b, 0x7c, 0x7c, 0x7c, 0x18, 0x14, 0x16, 0x0, 0x0, 0x3c, 0x3c, 0x3d, 0x7c, 0xfc, 0x7e, 0x35, 0x41, 0x43]),
    (LowBitType::F8E5M2FNUZ,
     [0x0, 0x0, 0x40, 0xc0, 0x32, 0x63, 0x63, 0x63, 0x63, 0x64, 0x68, 0xe8, 0x60, 0x60, 0x7f, 0x7f, 0x7f, 0x7f, 0x1c, 0x18, 0x1a, 0x1, 0x0, 0x40, 0x40, 0x41, 0x7f, 0xff, 0x80, 0x39, 0x45, 0x47],
     [0x0, 0x0, 0x40, 0xc0, 0x32, 0x63, 0x63, 0x63, 0x63, 0x64, 0x68, 0xe8, 0x60, 0x60, 0x7f, 0x80, 0x80, 0x80, 0x1c, 0x18, 0x1a, 0x1, 0x0, 0x40, 0x40, 0x41, 0x80, 0x80, 0x80, 0x39, 0x45, 0x47]),
];

/// Same value, NaN equal to NaN (E4M3FN and E5M2 have several NaN codes; ml_dtypes picks 0x7F/0x7E).
fn same_value(t: LowBitType, a: u8, b: u8) -> bool {
    let (x, y) = (t.to_f64(a), t.to_f64(b));
    (x.is_nan() && y.is_nan()) || (x == y && x.is_sign_negative() == y.is_sign_negative())
}

#[test]
fn float8_encodings_match_ml_dtypes() {
    for (t, sat, no_sat) in F8_TABLE {
        for (i, &x) in F8_INPUTS.iter().enumerate() {
            for (how, want) in [(SAT, sat[i]), (NO_SAT, no_sat[i])] {
                let got = t.from_f64(f64::from(x), how);
                assert!(same_value(t, got, want), "{t} {x} saturate={}: got {got:#x}, want {want:#x}", how.saturate);
            }
        }
    }
}

#[test]
fn float8_hand_checked_values() {
    let e4 = LowBitType::F8E4M3FN;
    assert_eq!(e4.to_f64(0x7E), 448.0);
    assert!(e4.to_f64(0x7F).is_nan() && e4.to_f64(0xFF).is_nan());
    assert_eq!(e4.from_f64(1000.0, SAT), 0x7E);
    assert!(e4.to_f64(e4.from_f64(1000.0, NO_SAT)).is_nan());
    // 464 lies halfway between 448 (mantissa 110) and 480 (111): the even one wins.
    assert_eq!(e4.from_f64(464.0, SAT), 0x7E);
    // Smallest subnormal 2^-9, and a tie below it (2^-10) goes to the even code 0.
    assert_eq!(e4.to_f64(0x01), 2f64.powi(-9));
    assert_eq!(e4.from_f64(2f64.powi(-10), SAT), 0x00);
    let e5 = LowBitType::F8E5M2;
    assert_eq!(e5.to_f64(0x7B), 57344.0);
    assert_eq!(e5.to_f64(0x7C), f64::INFINITY);
    assert_eq!(e5.to_f64(0xFC), f64::NEG_INFINITY);
    assert_eq!(e5.from_f64(f64::INFINITY, NO_SAT), 0x7C);
    assert_eq!(e5.from_f64(f64::INFINITY, SAT), 0x7B);
    for fnuz in [LowBitType::F8E4M3FNUZ, LowBitType::F8E5M2FNUZ] {
        assert_eq!(fnuz.from_f64(-0.0, SAT), 0x00, "{fnuz}: no negative zero");
        assert_eq!(fnuz.from_f64(-1e-30, SAT), 0x00, "{fnuz}: a negative underflow is +0");
        assert_eq!(fnuz.from_f64(f64::NAN, SAT), 0x80);
        assert!(fnuz.to_f64(0x80).is_nan());
    }
    assert_eq!(LowBitType::F8E4M3FNUZ.to_f64(0x7F), 240.0);
    assert_eq!(LowBitType::F8E5M2FNUZ.to_f64(0x7F), 57344.0);
    // Every code decodes and encodes back to itself (NaNs to a NaN, -0 of FNUZ does not exist).
    for (t, _, _) in F8_TABLE {
        for code in 0..=255u8 {
            let back = t.from_f64(t.to_f64(code), NO_SAT);
            assert!(same_value(t, back, code), "{t} code {code:#x} came back as {back:#x}");
        }
    }
}

#[test]
fn e8m0_round_modes_match_the_reference() {
    let t = LowBitType::F8E8M0;
    let inputs = [0.0f32, 0.124, 0.25, 0.5, 0.75, 1.1, 1.5, 1.4999, 3.0, 1.5 * 2f32.powi(127), f32::INFINITY];
    // onnx.numpy_helper.to_float8e8m0 on the same f32 values (for saturating modes; the infinity and the
    // zero of the non-saturating modes follow the spec's table instead, see below).
    let table: [(E8m0Rounding, [u8; 10]); 3] = [
        (E8m0Rounding::Up, [0, 124, 125, 126, 127, 128, 128, 128, 129, 254]),
        (E8m0Rounding::Down, [0, 123, 125, 126, 126, 127, 127, 127, 128, 254]),
        (E8m0Rounding::Nearest, [0, 124, 125, 126, 127, 127, 128, 127, 129, 254]),
    ];
    for (round_mode, want) in table {
        let how = LowBitCast { saturate: true, round_mode };
        for (x, w) in inputs.iter().zip(want) {
            assert_eq!(t.from_f64(f64::from(*x), how), w, "{x} {round_mode:?}");
        }
        // The spec's table: an infinity saturates to the largest power (the reference gives NaN).
        assert_eq!(t.from_f64(f64::INFINITY, how), 0xFE);
        let strict = LowBitCast { saturate: false, round_mode };
        assert_eq!(t.from_f64(0.0, strict), 0xFF, "no E8M0 code is zero");
        assert_eq!(t.from_f64(f64::INFINITY, strict), 0xFF);
    }
    let strict_up = LowBitCast { saturate: false, round_mode: E8m0Rounding::Up };
    assert_eq!(t.from_f64(1.5 * 2f64.powi(127), strict_up), 0xFF, "rounds up past 2^127");
    assert_eq!(t.from_f64(f64::NAN, SAT), 0xFF);
    assert!(t.to_f64(0xFF).is_nan());
    assert_eq!(t.to_f64(0), 2f64.powi(-127));
    assert_eq!(t.to_f64(127), 1.0);
    assert_eq!(t.to_f64(254), 2f64.powi(127));
    // Exact powers of two are codes in every mode, down to 2^-127 (an f32 subnormal, which the reference
    // implementation misreads as 2^-126 in "up" mode).
    for k in -127..=127 {
        for &round_mode in E8m0Rounding::ALL {
            assert_eq!(t.from_f64(2f64.powi(k), LowBitCast { saturate: false, round_mode }), (k + 127) as u8);
        }
    }
}

#[test]
fn e2m1_values_and_rounding_match_ml_dtypes() {
    let t = LowBitType::F4E2M1;
    let values: Vec<f64> = (0..16u8).map(|c| t.to_f64(c)).collect();
    assert_eq!(values[..8], [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
    assert_eq!(values[8..].iter().map(|v| -v).collect::<Vec<_>>(), [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
    // x.astype(ml_dtypes.float4_e2m1fn).view(np.uint8)
    let cases: [(f32, u8); 24] = [
        (0.48, 1),
        (0.25, 0),
        (1.05, 2),
        (-3.5, 14),
        (-8.0, 15),
        (9.0, 7),
        (1e6, 7),
        (1e-7, 0),
        (f32::NAN, 8),
        (f32::INFINITY, 7),
        (f32::NEG_INFINITY, 15),
        (-4.0, 14),
        (0.01, 0),
        (-0.0, 8),
        (2.5, 4),
        (5.0, 6),
        (7.0, 7),
        (0.75, 2),
        (0.24, 0),
        (0.26, 1),
        (6.5, 7),
        (3.5, 6),
        (1.25, 2),
        (1.75, 4),
    ];
    for (x, want) in cases {
        // saturate = false does not apply to E2M1, which has no NaN or infinity.
        for how in [SAT, NO_SAT] {
            assert_eq!(t.from_f64(f64::from(x), how), want, "{x}");
        }
    }
    assert_eq!(t.from_f64(-f64::NAN, SAT), 0, "ml_dtypes flips the sign of a NaN into its zero");
}

#[test]
fn small_integers_truncate_and_wrap_like_ml_dtypes() {
    let inputs: Vec<f64> = (-9..16).map(f64::from).collect();
    // np.arange(-9, 16).astype(np.float32).astype(ml_dtypes.int4 / uint4).astype(np.int8)
    let want_i4 = [7, -8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1];
    let want_u4 = [7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    for (t, want) in [(LowBitType::I4, want_i4), (LowBitType::U4, want_u4)] {
        let got: Vec<i64> = inputs.iter().map(|&x| t.int_value(t.from_f64(x, SAT)).unwrap()).collect();
        assert_eq!(got, want, "{t}");
    }
    // [2.5, 3.5, -2.5, 0.5, 1.5, -0.7, 7.9, 8, 100, -100, nan, inf, -inf]: truncation, then the low bits.
    let odd = [2.5, 3.5, -2.5, 0.5, 1.5, -0.7, 7.9, 8.0, 100.0, -100.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
    let expect: [(LowBitType, [i64; 13]); 4] = [
        (LowBitType::I4, [2, 3, -2, 0, 1, 0, 7, -8, 4, -4, 0, 0, 0]),
        (LowBitType::U4, [2, 3, 14, 0, 1, 0, 7, 8, 4, 12, 0, 0, 0]),
        (LowBitType::I2, [-2, -1, -2, 0, 1, 0, -1, 0, 0, 0, 0, 0, 0]),
        (LowBitType::U2, [2, 3, 2, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0]),
    ];
    for (t, want) in expect {
        let got: Vec<i64> = odd.iter().map(|&x| t.int_value(t.from_f64(x, SAT)).unwrap()).collect();
        assert_eq!(got, want, "{t}");
    }
    // From integers: the low bits, sign-extended for the signed types.
    assert_eq!(LowBitType::I4.int_value(LowBitType::I4.from_i64(-9)), Some(7));
    assert_eq!(LowBitType::I2.int_value(LowBitType::I2.from_i64(3)), Some(-1));
    assert_eq!(LowBitType::U2.int_value(LowBitType::U2.from_i64(-1)), Some(3));
}

fn run(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    eval_generic(op, inputs).map(|r| r.expect("generic op")).map_err(|e| e.to_string())
}

#[test]
fn casts_through_the_evaluator() {
    let f8 = DType::LowBit(LowBitType::F8E4M3FN);
    let x = Tensor::f32(vec![4], vec![1000.0, -0.3, f32::NAN, 3.0]).unwrap();
    let sat = &run(&Op::cast(f8), &[&x]).unwrap()[0];
    assert_eq!(sat.data(), &TensorData::LowBit(LowBitType::F8E4M3FN, vec![0x7E, 0xAA, 0x7F, 0x44]));
    let strict = Op::Cast { to: f8, saturate: Some(false), round_mode: None };
    let y = &run(&strict, &[&x]).unwrap()[0];
    assert!(y.data().get_f64(0).is_nan());
    // Back to f16 and i8 (exact values; the i8 cast truncates -0.3125 to 0 and NaN to 0).
    let h = &run(&Op::cast(DType::F16), &[sat]).unwrap()[0];
    assert_eq!(h.to_f64_vec()[..2], [448.0, -0.3125]);
    assert!(h.to_f64_vec()[2].is_nan());
    let i = &run(&Op::cast(DType::I8), &[sat]).unwrap()[0];
    assert_eq!(i.to_i64_vec(), vec![127, 0, 0, 3]);
    // e8m0 with round_mode from the op.
    let e8 = DType::LowBit(LowBitType::F8E8M0);
    let v = Tensor::f32(vec![3], vec![1.1, 1.5, 3.0]).unwrap();
    for (mode, want) in [(None, [128, 128, 129]), (Some(E8m0Rounding::Down), [127, 127, 128])] {
        let op = Op::Cast { to: e8, saturate: None, round_mode: mode };
        assert_eq!(run(&op, &[&v]).unwrap()[0].data(), &TensorData::LowBit(LowBitType::F8E8M0, want.to_vec()));
    }
    // int4 <-> int8, and between low-bit types.
    let i8s = Tensor::new(vec![3], TensorData::I8(vec![-9, 7, -8])).unwrap();
    let i4 = &run(&Op::cast(DType::LowBit(LowBitType::I4)), &[&i8s]).unwrap()[0];
    assert_eq!(i4.to_i64_vec(), vec![7, 7, -8]);
    let f4 = &run(&Op::cast(DType::LowBit(LowBitType::F4E2M1)), &[i4]).unwrap()[0];
    assert_eq!(f4.to_f64_vec(), vec![6.0, 6.0, -6.0]);
}

#[test]
fn other_ops_refuse_low_bit_and_string_tensors() {
    let f8 = Tensor::new(vec![2], TensorData::LowBit(LowBitType::F8E5M2, vec![0x3C, 0x40])).unwrap();
    let e = run(&Op::Binary(kiln_ir::BinaryOp::Add), &[&f8, &f8]).unwrap_err();
    assert!(e.contains("`add` is not defined on f8e5m2 tensors") && e.contains("cast them to f32"), "{e}");
    let e = run(&Op::Unary(UnaryOp::Neg), &[&f8]).unwrap_err();
    assert!(e.contains("`neg` is not defined on f8e5m2"), "{e}");
    let s = Tensor::new(vec![2], TensorData::Str(vec!["a".into(), "b".into()])).unwrap();
    let e = run(&Op::Compare(CompareOp::Less), &[&s, &s]).unwrap_err();
    assert!(e.contains("`less` is not defined on str tensors"), "{e}");
    let e = run(&Op::cast(DType::F32), &[&s]).unwrap_err();
    assert!(e.contains("`cast` is not defined on str"), "{e}");
    // Data movement works on both.
    let t = &run(&Op::Transpose { perm: vec![0] }, &[&f8]).unwrap()[0];
    assert_eq!(t, &f8);
    let c = &run(&Op::Concat { axis: 0 }, &[&s, &s]).unwrap()[0];
    assert_eq!(c.data(), &TensorData::Str(vec!["a".into(), "b".into(), "a".into(), "b".into()]));
}

#[test]
fn string_equality_broadcasts() {
    let x = Tensor::new(vec![2, 2], TensorData::Str(vec!["a".into(), "b".into(), "c".into(), "a".into()])).unwrap();
    let y = Tensor::new(vec![1], TensorData::Str(vec!["a".into()])).unwrap();
    let z = &run(&Op::Compare(CompareOp::Equal), &[&x, &y]).unwrap()[0];
    assert_eq!(z.shape(), &[2, 2]);
    assert_eq!(z.data(), &TensorData::Bool(vec![true, false, false, true]));
}

#[test]
fn constant_of_shape_fills_exact_low_bit_values_only() {
    let shape = Tensor::i64(vec![1], vec![2]).unwrap();
    let f4 = DType::LowBit(LowBitType::F4E2M1);
    let fill = |value, dtype| {
        let op = Op::ConstantOfShape { value, dtype };
        let types = kiln_ir::infer::infer_types(&op, &[&shape.ty()], &[Some(&shape)]).map_err(|e| e.to_string());
        types.and_then(|_| run(&op, &[&shape]))
    };
    let t = &fill(1.5, f4).unwrap()[0];
    assert_eq!(t.data(), &TensorData::LowBit(LowBitType::F4E2M1, vec![3, 3]));
    let e = fill(2.5, f4).unwrap_err();
    assert!(e.contains("value 2.5 is not representable in f4e2m1"), "{e}");
    let e = fill(0.0, DType::Str).unwrap_err();
    assert!(e.contains("cannot make a string tensor"), "{e}");
}
