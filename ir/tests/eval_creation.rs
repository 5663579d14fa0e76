//! `range`, `cumsum`, `shape` and `constant_of_shape` against references written in the tests.

// References are index loops on purpose: they mirror the math, not the implementation.
#![allow(clippy::needless_range_loop)]

mod eval_support;

use eval_support::*;
use kiln_ir::{DType, Op, Tensor, TensorData};

fn range(s: &Tensor, l: &Tensor, d: &Tensor) -> Tensor {
    run1(&Op::Range {}, &[s, l, d])
}

#[test]
fn integer_ranges() {
    let r = |s, l, d| range(&i64t(&[], &[s]), &i64t(&[], &[l]), &i64t(&[], &[d]));
    assert_eq!(r(0, 10, 3), i64t(&[4], &[0, 3, 6, 9]));
    assert_eq!(r(10, 0, -3), i64t(&[4], &[10, 7, 4, 1]));
    assert_eq!(r(0, -10, -3), i64t(&[4], &[0, -3, -6, -9]));
    assert_eq!(r(0, -9, -3), i64t(&[3], &[0, -3, -6]));
    assert_eq!(r(-2, 2, 1), i64t(&[4], &[-2, -1, 0, 1]));
    assert_eq!(r(0, 0, 1), i64t(&[0], &[]));
    assert_eq!(r(5, 1, 1), i64t(&[0], &[]));
    assert_eq!(r(i64::MAX - 1, i64::MAX, 5), i64t(&[1], &[i64::MAX - 1]));
    let got = range(&i32t(&[1], &[1]), &i32t(&[], &[7]), &i32t(&[], &[2]));
    assert_eq!(got, i32t(&[3], &[1, 3, 5]));
}

#[test]
fn float_ranges() {
    for (s, l, d) in [(1.0f64, 2.0, 0.3), (0.0, -1.0, -0.25), (-3.5, 4.0, 0.7), (2.0, 2.0, 1.0)] {
        let count = ((l - s) / d).ceil().max(0.0) as usize;
        let want: Vec<f64> = (0..count).map(|i| s + i as f64 * d).collect();
        let f = |v: f64| Tensor::scalar_f32(v as f32);
        assert_close(&range(&f(s), &f(l), &f(d)), &[count], &want);
        let g = |v: f64| f64t(&[], &[v]);
        assert_close_tol(&range(&g(s), &g(l), &g(d)), &[count], &want, 1e-12);
        let h = |v: f64| to_f16(&f(v));
        let got = range(&h(s), &h(l), &h(d));
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(got.len(), count);
    }
}

#[test]
fn range_errors() {
    let z = i64t(&[], &[0]);
    let one = i64t(&[], &[1]);
    assert_fails(&Op::Range {}, &[&z, &one, &z], "range: delta is 0");
    assert_fails(&Op::Range {}, &[&z, &one, &Tensor::scalar_f32(1.0)], "must have the same dtype");
    assert_fails(&Op::Range {}, &[&z, &i64t(&[2], &[1, 2]), &one], "limit must be a scalar, got i64[2]");
    let b = boolt(&[], &[true]);
    assert_fails(&Op::Range {}, &[&b, &b, &b], "not defined on bool");
    let f = Tensor::scalar_f32;
    assert_fails(&Op::Range {}, &[&f(0.0), &f(f32::NAN), &f(1.0)], "no finite element count");
    assert_fails(&Op::Range {}, &[&f(0.0), &f(1.0), &f(0.0)], "delta is 0");
    assert_fails(&Op::Range {}, &[&z, &i64t(&[], &[i64::MAX]), &one], "more than");
}

/// Reference cumsum along axis 1 of a [d0, d1, d2] tensor, by explicit loops.
fn cumsum_ref(x: &[f64], [d0, d1, d2]: [usize; 3], exclusive: bool, reverse: bool) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for i in 0..d0 {
        for k in 0..d2 {
            let at = |j: usize| (i * d1 + j) * d2 + k;
            for j in 0..d1 {
                // Indices included in position j's sum.
                let included: Vec<usize> = if reverse {
                    (if exclusive { j + 1 } else { j }..d1).collect()
                } else {
                    (0..if exclusive { j } else { j + 1 }).collect()
                };
                out[at(j)] = included.iter().map(|&m| x[at(m)]).sum();
            }
        }
    }
    out
}

#[test]
fn cumsum_exclusive_and_reverse() {
    let x = rand_f32(&[2, 5, 3], 4);
    let xv = x.to_f64_vec();
    for exclusive in [false, true] {
        for reverse in [false, true] {
            let want = cumsum_ref(&xv, [2, 5, 3], exclusive, reverse);
            for axis in [1, -2] {
                let got = run1(&Op::CumSum { axis, exclusive, reverse }, &[&x]);
                assert_close(&got, &[2, 5, 3], &want);
            }
            let bf = to_bf16(&x);
            let got = run1(&Op::CumSum { axis: 1, exclusive, reverse }, &[&bf]);
            assert_close_half(&got, &[2, 5, 3], &cumsum_ref(&bf.to_f64_vec(), [2, 5, 3], exclusive, reverse));
        }
    }
    let i = i64t(&[4], &[1, 2, 3, 4]);
    let cs = |exclusive, reverse| run1(&Op::CumSum { axis: 0, exclusive, reverse }, &[&i]);
    assert_eq!(cs(false, false), i64t(&[4], &[1, 3, 6, 10]));
    assert_eq!(cs(true, false), i64t(&[4], &[0, 1, 3, 6]));
    assert_eq!(cs(false, true), i64t(&[4], &[10, 9, 7, 4]));
    assert_eq!(cs(true, true), i64t(&[4], &[9, 7, 4, 0]));
    assert_fails(
        &Op::CumSum { axis: 1, exclusive: false, reverse: false },
        &[&i],
        "cumsum: axis 1 is out of range for rank 1",
    );
    assert_fails(
        &Op::CumSum { axis: 0, exclusive: false, reverse: false },
        &[&boolt(&[1], &[true])],
        "not defined on bool",
    );
}

#[test]
fn shape_with_start_and_end() {
    let x = f32t(&[2, 3, 4, 5], &[0.0; 120]);
    let shape = |start, end| run1(&Op::Shape { start, end }, &[&x]);
    assert_eq!(shape(0, None), i64t(&[4], &[2, 3, 4, 5]));
    assert_eq!(shape(1, None), i64t(&[3], &[3, 4, 5]));
    assert_eq!(shape(-2, None), i64t(&[2], &[4, 5]));
    assert_eq!(shape(0, Some(-1)), i64t(&[3], &[2, 3, 4]));
    assert_eq!(shape(10, None), i64t(&[0], &[]));
    assert_eq!(shape(-10, Some(2)), i64t(&[2], &[2, 3]));
    assert_eq!(shape(3, Some(1)), i64t(&[0], &[]));
    assert_eq!(shape(1, Some(100)), i64t(&[3], &[3, 4, 5]));
    assert_eq!(run1(&Op::Shape { start: 0, end: None }, &[&Tensor::scalar_f32(1.0)]), i64t(&[0], &[]));
}

#[test]
fn constant_of_shape_fills() {
    let got = run1(&Op::ConstantOfShape { value: 1.5, dtype: DType::F32 }, &[&i64t(&[2], &[2, 3])]);
    assert_eq!(got, f32t(&[2, 3], &[1.5; 6]));
    let got = run1(&Op::ConstantOfShape { value: 7.0, dtype: DType::I64 }, &[&i64t(&[0], &[])]);
    assert_eq!(got, i64t(&[], &[7]));
    let got = run1(&Op::ConstantOfShape { value: 1.0, dtype: DType::Bool }, &[&i64t(&[1], &[2])]);
    assert_eq!(got, boolt(&[2], &[true, true]));
    let got = run1(&Op::ConstantOfShape { value: 0.1, dtype: DType::BF16 }, &[&i64t(&[2], &[1, 0])]);
    assert_eq!(got.shape(), &[1, 0]);
    let got = run1(&Op::ConstantOfShape { value: 0.1, dtype: DType::F16 }, &[&i64t(&[1], &[1])]);
    assert_eq!(got.into_data(), TensorData::F16(vec![half::f16::from_f64(0.1)]));

    let op = |value, dtype| Op::ConstantOfShape { value, dtype };
    assert_fails(
        &op(1.5, DType::I32),
        &[&i64t(&[1], &[2])],
        "constant_of_shape: value 1.5 is not representable in i32",
    );
    assert_fails(&op(300.0, DType::U8), &[&i64t(&[1], &[2])], "not representable in u8");
    assert_fails(&op(0.0, DType::F32), &[&i64t(&[2], &[2, -3])], "shape [2, -3] has negative dim -3");
    assert_fails(&op(0.0, DType::Q8C), &[&i64t(&[1], &[2])], "quantized");
    assert_fails(&op(0.0, DType::F32), &[&i64t(&[2], &[1 << 40, 1 << 40])], "more than");
}
