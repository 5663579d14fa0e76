//! Reductions and argmax against references that scatter every input element into its output slot
//! (the implementation gathers groups instead).

// References are index loops on purpose: they mirror the math, not the implementation.
#![allow(clippy::needless_range_loop)]

mod eval_support;

use eval_support::*;
use kiln_ir::{DType, Op, ReduceKind, Tensor, TensorData};

/// Reference reduction: every input element is folded into the output element its kept coordinates
/// name. Returns the output shape and values.
fn reduce_ref(x: &[f64], shape: &[usize], axes: &[usize], keepdims: bool, kind: ReduceKind) -> (Vec<usize>, Vec<f64>) {
    let out_full: Vec<usize> = (0..shape.len()).map(|a| if axes.contains(&a) { 1 } else { shape[a] }).collect();
    let n_out: usize = out_full.iter().product();
    let init = match kind {
        ReduceKind::Sum | ReduceKind::Mean => 0.0,
        ReduceKind::Prod => 1.0,
        ReduceKind::Max => f64::NEG_INFINITY,
        ReduceKind::Min => f64::INFINITY,
    };
    let mut acc = vec![init; n_out];
    for (i, &v) in x.iter().enumerate() {
        let mut c = coords(i, shape);
        for &a in axes {
            c[a] = 0;
        }
        let o = flat(&c, &out_full);
        acc[o] = match kind {
            ReduceKind::Sum | ReduceKind::Mean => acc[o] + v,
            ReduceKind::Prod => acc[o] * v,
            ReduceKind::Max => acc[o].max(v),
            ReduceKind::Min => acc[o].min(v),
        };
    }
    if kind == ReduceKind::Mean {
        let count: usize = axes.iter().map(|&a| shape[a]).product();
        acc.iter_mut().for_each(|v| *v /= count as f64);
    }
    let out_shape =
        if keepdims { out_full } else { (0..shape.len()).filter(|a| !axes.contains(a)).map(|a| shape[a]).collect() };
    (out_shape, acc)
}

#[test]
fn float_reductions_over_axis_sets() {
    let shape = [2, 3, 4];
    // Values near 1 keep products well scaled.
    let x = f32t(&shape, &values(24, 3, 0.5, 1.5).into_iter().map(|v| v as f32).collect::<Vec<_>>());
    let xv = x.to_f64_vec();
    let cases: [(&[i64], &[usize]); 6] = [
        (&[], &[0, 1, 2]),
        (&[1], &[1]),
        (&[-1], &[2]),
        (&[0, 2], &[0, 2]),
        (&[2, -3], &[0, 2]),
        (&[0, 1, 2], &[0, 1, 2]),
    ];
    for kind in ReduceKind::ALL {
        for (axes, normalized) in cases {
            for keepdims in [true, false] {
                let op = Op::Reduce { kind: *kind, axes: axes.to_vec(), keepdims };
                let (want_shape, want) = reduce_ref(&xv, &shape, normalized, keepdims, *kind);
                assert_close(&run1(&op, &[&x]), &want_shape, &want);
                let x64 = f64t(&shape, &xv);
                assert_close_tol(&run1(&op, &[&x64]), &want_shape, &want, 1e-12);
            }
        }
    }
}

#[test]
fn half_and_integer_reductions() {
    let x = rand_f32(&[3, 5], 9);
    for h in [to_f16(&x), to_bf16(&x)] {
        let (shape, want) = reduce_ref(&h.to_f64_vec(), &[3, 5], &[1], false, ReduceKind::Sum);
        let got = run1(&Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdims: false }, &[&h]);
        assert_eq!(got.dtype(), h.dtype());
        assert_close_half(&got, &shape, &want);
    }
    let i = i64t(&[2, 3], &[-7, 0, 0, 5, 2, 2]);
    let red = |kind, axes: Vec<i64>| run1(&Op::Reduce { kind, axes, keepdims: false }, &[&i]);
    assert_eq!(red(ReduceKind::Sum, vec![1]), i64t(&[2], &[-7, 9]));
    // Integer mean truncates toward zero: -7/3 -> -2.
    assert_eq!(red(ReduceKind::Mean, vec![1]), i64t(&[2], &[-2, 3]));
    assert_eq!(red(ReduceKind::Max, vec![0]), i64t(&[3], &[5, 2, 2]));
    assert_eq!(red(ReduceKind::Min, vec![]), i64t(&[], &[-7]));
    assert_eq!(red(ReduceKind::Prod, vec![0]), i64t(&[3], &[-35, 0, 0]));
    let u = Tensor::new(vec![3], TensorData::U8(vec![200, 100, 1])).unwrap();
    let got = run1(&Op::Reduce { kind: ReduceKind::Sum, axes: vec![], keepdims: true }, &[&u]);
    assert_eq!(got, Tensor::new(vec![1], TensorData::U8(vec![45])).unwrap());
}

#[test]
fn empty_reductions_and_nan() {
    let e = f32t(&[2, 0], &[]);
    let op = |kind| Op::Reduce { kind, axes: vec![1], keepdims: false };
    assert_eq!(run1(&op(ReduceKind::Sum), &[&e]).to_f64_vec(), vec![0.0, 0.0]);
    assert_eq!(run1(&op(ReduceKind::Prod), &[&e]).to_f64_vec(), vec![1.0, 1.0]);
    assert!(run1(&op(ReduceKind::Mean), &[&e]).to_f64_vec().iter().all(|v| v.is_nan()));
    assert_fails(
        &op(ReduceKind::Max),
        &[&e],
        "reduce_max: reducing over axes [1] of f32[2, 0], which hold no elements",
    );
    assert_fails(&op(ReduceKind::Mean), &[&i64t(&[2, 0], &[])], "integer mean");
    let n = f32t(&[3], &[1.0, f32::NAN, 2.0]);
    assert!(run1(&op(ReduceKind::Max), &[&f32t(&[1, 3], &n.to_f32_vec())]).to_f64_vec()[0].is_nan());
    assert!(run1(&Op::Reduce { kind: ReduceKind::Min, axes: vec![], keepdims: false }, &[&n]).to_f64_vec()[0].is_nan());
}

#[test]
fn reduce_errors() {
    let x = rand_f32(&[2, 3], 1);
    let op = |axes| Op::Reduce { kind: ReduceKind::Sum, axes, keepdims: true };
    assert_fails(&op(vec![2]), &[&x], "reduce_sum: axis 2 is out of range for rank 2 (valid: -2 to 1)");
    assert_fails(&op(vec![1, -1]), &[&x], "axis -1 appears more than once in [1, -1]");
    assert_fails(&op(vec![]), &[&boolt(&[1], &[true])], "not defined on bool tensors");
}

/// First index of the maximum along `axis` of a [d0, d1, d2] tensor, by explicit loops.
fn argmax_ref(x: &[f64], shape: [usize; 3], axis: usize) -> Vec<i64> {
    let mut out = Vec::new();
    let strides = [shape[1] * shape[2], shape[2], 1];
    let kept: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    for p in 0..shape[kept[0]] {
        for q in 0..shape[kept[1]] {
            let base = p * strides[kept[0]] + q * strides[kept[1]];
            let mut best = 0;
            for k in 1..shape[axis] {
                if x[base + k * strides[axis]] > x[base + best * strides[axis]] {
                    best = k;
                }
            }
            out.push(best as i64);
        }
    }
    out
}

#[test]
fn argmax_along_each_axis() {
    let x = rand_f32(&[3, 4, 5], 21);
    let xv = x.to_f64_vec();
    for axis in 0..3 {
        let want = argmax_ref(&xv, [3, 4, 5], axis);
        let mut shape = vec![3, 4, 5];
        shape.remove(axis);
        let got = run1(&Op::ArgMax { axis: axis as i64 - 3, keepdims: false }, &[&x]);
        assert_eq!(got, i64t(&shape, &want), "axis {axis}");
        let mut kept = vec![3, 4, 5];
        kept[axis] = 1;
        assert_eq!(run1(&Op::ArgMax { axis: axis as i64, keepdims: true }, &[&x]), i64t(&kept, &want));
    }
}

#[test]
fn argmax_ties_nan_and_integers() {
    let x = f32t(&[2, 3], &[1.0, 5.0, 5.0, 7.0, 2.0, 7.0]);
    assert_eq!(run1(&Op::ArgMax { axis: 1, keepdims: false }, &[&x]), i64t(&[2], &[1, 0]));
    let n = f32t(&[5], &[1.0, f32::NAN, 9.0, f32::NAN, 3.0]);
    assert_eq!(run1(&Op::ArgMax { axis: 0, keepdims: false }, &[&n]), i64t(&[], &[1]));
    let i = i32t(&[4], &[-5, 3, 3, -1]);
    assert_eq!(run1(&Op::ArgMax { axis: -1, keepdims: true }, &[&i]), i64t(&[1], &[1]));
    let big = i64t(&[2], &[(1 << 60) + 1, (1 << 60) + 2]);
    assert_eq!(run1(&Op::ArgMax { axis: 0, keepdims: false }, &[&big]), i64t(&[], &[1]));
    let h = to_bf16(&x);
    assert_eq!(run1(&Op::ArgMax { axis: 0, keepdims: false }, &[&h]), i64t(&[3], &[1, 0, 1]));
    assert_eq!(h.dtype(), DType::BF16);

    assert_fails(&Op::ArgMax { axis: 2, keepdims: true }, &[&x], "argmax: axis 2 is out of range for rank 2");
    assert_fails(&Op::ArgMax { axis: 1, keepdims: true }, &[&f32t(&[2, 0], &[])], "is empty");
    assert_fails(&Op::ArgMax { axis: 0, keepdims: true }, &[&boolt(&[1], &[true])], "not defined on bool");
}
