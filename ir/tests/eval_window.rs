//! Sliding-window ops (`conv`, `pool`) against values computed with numpy loops over padded arrays.

mod eval_support;

use eval_support::*;
use kiln_ir::{DType, Op, PoolKind, TensorType, infer::infer_types};

#[test]
fn grouped_strided_padded_conv_matches_numpy() {
    let x = f32t(&[1, 2, 4, 4], &(0..32).map(|i| i as f32 / 10.0).collect::<Vec<_>>());
    let w = f32t(&[2, 1, 3, 3], &(0..18).map(|i| (i as f32 - 8.0) / 5.0).collect::<Vec<_>>());
    let b = f32t(&[2], &[0.5, -1.0]);
    let op = Op::Conv { strides: vec![2, 2], pads: vec![1, 1, 1, 1], dilations: vec![1, 1], group: 2 };
    let got = run1(&op, &[&x, &w, &b]);
    // numpy: b[m] + sum(pad(x)[group m, i*2:i*2+3, j*2:j*2+3] * w[m]) for each (m, i, j).
    assert_close(&got, &[1, 2, 2, 2], &[0.36, -0.26, -2.08, -5.14, 9.62, 15.04, 16.16, 23.96]);
    let inferred = infer_types(&op, &[&x.ty(), &w.ty(), &b.ty()], &[]).unwrap();
    assert_eq!(inferred, vec![got.ty()]);
    let bad_w = TensorType::of(DType::F32, &[2, 2, 3, 3]);
    let err = infer_types(&op, &[&x.ty(), &bad_w], &[]).unwrap_err().message;
    assert!(err.contains("2 channels but w expects 2 per group times 2 groups"), "{err}");
}

#[test]
fn pools_match_numpy_over_padded_windows() {
    let x = f32t(&[1, 1, 4, 4], &(0..16).map(|i| i as f32).collect::<Vec<_>>());
    let pool = |kind, count_include_pad| Op::Pool {
        kind,
        kernel: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![],
        ceil_mode: false,
        count_include_pad,
        p: 2,
    };
    // numpy: nanmean / nansum / 9 / nanmax over windows of the NaN-padded input.
    assert_close(&run1(&pool(PoolKind::Avg, false), &[&x]), &[1, 1, 2, 2], &[2.5, 4.0, 8.5, 10.0]);
    let incl = [10.0 / 9.0, 24.0 / 9.0, 51.0 / 9.0, 90.0 / 9.0];
    assert_close(&run1(&pool(PoolKind::Avg, true), &[&x]), &[1, 1, 2, 2], &incl);
    assert_close(&run1(&pool(PoolKind::Max, false), &[&x]), &[1, 1, 2, 2], &[5.0, 7.0, 13.0, 15.0]);
    // Lp with p = 2 over 2x2 windows, e.g. [[0, 1], [4, 5]]: sqrt(0 + 1 + 16 + 25).
    let lp = Op::Pool {
        kind: PoolKind::Lp,
        kernel: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![],
        dilations: vec![],
        ceil_mode: false,
        count_include_pad: false,
        p: 2,
    };
    assert_close(&run1(&lp, &[&x]), &[1, 1, 2, 2], &[42f64.sqrt(), 98f64.sqrt(), 458f64.sqrt(), 642f64.sqrt()]);
    assert_fails(&pool(PoolKind::Max, false), &[&f32t(&[4], &[0.0; 4])], "does not fit");
}
