//! Data-movement ops: exact results against references built from coordinates (or written out by
//! hand for ONNX edge cases), and their error messages.

// References are index loops on purpose: they mirror the math, not the implementation.
#![allow(clippy::needless_range_loop)]

mod eval_support;

use eval_support::*;
use kiln_ir::{Op, Tensor, TensorData};

/// `0, 1, 2, ...` as i64 of the given shape, so every element names its own flat index.
fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    i64t(shape, &(0..n as i64).collect::<Vec<_>>())
}

#[test]
fn reshape_follows_onnx_zero_and_minus_one() {
    let x = rand_f32(&[2, 3, 4], 1);
    let reshape = |spec: &[i64], allowzero| run1(&Op::Reshape { allowzero }, &[&x, &i64t(&[spec.len()], spec)]);
    for (spec, want) in [
        (&[0, -1][..], &[2, 12][..]),
        (&[-1], &[24]),
        (&[4, 0, 2], &[4, 3, 2]),
        (&[0, 0, 0], &[2, 3, 4]),
        (&[2, -1, 2, 1], &[2, 6, 2, 1]),
    ] {
        let got = reshape(spec, false);
        assert_eq!(got.shape(), want, "{spec:?}");
        assert_eq!(got.data(), x.data());
    }
    let empty = f32t(&[2, 0, 3], &[]);
    let got = run1(&Op::Reshape { allowzero: true }, &[&empty, &i64t(&[2], &[0, 7])]);
    assert_eq!(got.shape(), &[0, 7]);
    // i32 shape tensors are accepted too.
    let got = run1(&Op::Reshape { allowzero: false }, &[&x, &i32t(&[2], &[6, 4])]);
    assert_eq!(got.shape(), &[6, 4]);

    let op = Op::Reshape { allowzero: false };
    let err = |spec: &[i64]| fails(&op, &[&x, &i64t(&[spec.len()], spec)]);
    assert!(err(&[-1, -1]).contains("more than one -1"));
    assert!(err(&[-2, 12]).contains("invalid dim -2"));
    assert!(err(&[0, 0, 0, 0]).contains("has 0 at position 3"));
    assert!(err(&[5, 5]).contains("cannot reshape f32[2, 3, 4] (24 elements) to [5, 5]"));
    assert!(err(&[5, -1]).contains("cannot infer the -1"));
    assert!(fails(&Op::Reshape { allowzero: true }, &[&x, &i64t(&[2], &[0, -1])]).contains("has both 0 and -1"));
    assert_fails(&op, &[&x, &f32t(&[1], &[24.0])], "reshape: shape must be i64 or i32, got f32[1]");
    assert_fails(&op, &[&x, &i64t(&[1, 1], &[24])], "shape must be 1-D");
}

#[test]
fn transpose_permutes_coordinates() {
    let shape = [2, 3, 4];
    let x = iota(&shape);
    for perm in [[2, 0, 1], [-1, 0, 1], [0, 2, 1], [1, 0, 2]] {
        let p: Vec<usize> = perm.iter().map(|&a| if a < 0 { (a + 3) as usize } else { a as usize }).collect();
        let out_shape: Vec<usize> = p.iter().map(|&a| shape[a]).collect();
        let n = 24;
        let want: Vec<i64> = (0..n)
            .map(|o| {
                let oc = coords(o, &out_shape);
                let mut ic = vec![0; 3];
                for (i, &a) in p.iter().enumerate() {
                    ic[a] = oc[i];
                }
                flat(&ic, &shape) as i64
            })
            .collect();
        assert_eq!(run1(&Op::Transpose { perm: perm.to_vec() }, &[&x]), i64t(&out_shape, &want), "{perm:?}");
    }
    let h = to_bf16(&rand_f32(&[2, 3], 4));
    let t = run1(&Op::Transpose { perm: vec![1, 0] }, &[&h]);
    let hv = h.to_f64_vec();
    assert_eq!(t.to_f64_vec(), vec![hv[0], hv[3], hv[1], hv[4], hv[2], hv[5]]);
    assert_fails(
        &Op::Transpose { perm: vec![1, 0] },
        &[&x],
        "perm [1, 0] has 2 entries but the input i64[2, 3, 4] has rank 3",
    );
    assert_fails(&Op::Transpose { perm: vec![0, 0, 1] }, &[&x], "axis 0 appears more than once");
}

#[test]
fn squeeze_and_unsqueeze() {
    let x = rand_f32(&[1, 3, 1, 2], 2);
    let sq = |axes: Vec<i64>| run1(&Op::Squeeze { axes }, &[&x]);
    assert_eq!(sq(vec![]).shape(), &[3, 2]);
    assert_eq!(sq(vec![-2]).shape(), &[1, 3, 2]);
    assert_eq!(sq(vec![0, 2]).shape(), &[3, 2]);
    assert_eq!(sq(vec![0]).data(), x.data());
    assert_fails(
        &Op::Squeeze { axes: vec![1] },
        &[&x],
        "squeeze: cannot squeeze axis 1 of f32[1, 3, 1, 2]: its size is 3, not 1",
    );
    assert_fails(&Op::Squeeze { axes: vec![4] }, &[&x], "axis 4 is out of range for rank 4");

    let y = rand_f32(&[3, 2], 3);
    let un = |axes: Vec<i64>| run1(&Op::Unsqueeze { axes }, &[&y]);
    assert_eq!(un(vec![0, -1]).shape(), &[1, 3, 2, 1]);
    assert_eq!(un(vec![1]).shape(), &[3, 1, 2]);
    assert_eq!(un(vec![3, 0]).shape(), &[1, 3, 2, 1]);
    assert_eq!(un(vec![2]).data(), y.data());
    assert_fails(&Op::Unsqueeze { axes: vec![1, 1] }, &[&y], "appears more than once");
    assert_fails(&Op::Unsqueeze { axes: vec![3] }, &[&y], "axis 3 is out of range for rank 3");
}

#[test]
fn concat_along_an_axis() {
    let parts = [rand_f32(&[2, 1, 3], 1), rand_f32(&[2, 2, 3], 2), f32t(&[2, 0, 3], &[]), rand_f32(&[2, 1, 3], 3)];
    let refs: Vec<&Tensor> = parts.iter().collect();
    let got = run1(&Op::Concat { axis: 1 }, &refs);
    let mut want = Vec::new();
    for i in 0..2 {
        for p in &parts {
            let pv = p.to_f64_vec();
            let d = p.shape()[1];
            for j in 0..d {
                for k in 0..3 {
                    want.push(pv[(i * d + j) * 3 + k]);
                }
            }
        }
    }
    assert_eq!(got.shape(), &[2, 4, 3]);
    assert_eq!(got.to_f64_vec(), want);

    let a = i64t(&[2, 2], &[1, 2, 3, 4]);
    let b = i64t(&[2, 1], &[9, 8]);
    assert_eq!(run1(&Op::Concat { axis: -1 }, &[&a, &b]), i64t(&[2, 3], &[1, 2, 9, 3, 4, 8]));
    assert_eq!(run1(&Op::Concat { axis: 0 }, &[&a, &a]), i64t(&[4, 2], &[1, 2, 3, 4, 1, 2, 3, 4]));
    assert_eq!(run1(&Op::Concat { axis: 0 }, &[&a]), a);

    assert_fails(&Op::Concat { axis: 0 }, &[&a, &b], "input 1 (i64[2, 1]) does not match input 0 (i64[2, 2])");
    assert_fails(&Op::Concat { axis: 1 }, &[&a, &f32t(&[2, 1], &[0.0, 0.0])], "does not match");
    assert_fails(&Op::Concat { axis: 0 }, &[&i64t(&[], &[1])], "cannot concatenate scalars");
    assert_fails(&Op::Concat { axis: 0 }, &[], "expected at least 1 inputs, got 0");
}

#[test]
fn split_into_sizes() {
    let x = iota(&[2, 5]);
    let outs = run(&Op::Split { axis: -1, sizes: vec![2, 0, 3] }, &[&x]);
    assert_eq!(outs, vec![i64t(&[2, 2], &[0, 1, 5, 6]), i64t(&[2, 0], &[]), i64t(&[2, 3], &[2, 3, 4, 7, 8, 9])]);
    let outs = run(&Op::Split { axis: 0, sizes: vec![1, 1] }, &[&x]);
    assert_eq!(outs, vec![i64t(&[1, 5], &[0, 1, 2, 3, 4]), i64t(&[1, 5], &[5, 6, 7, 8, 9])]);
    assert_fails(&Op::Split { axis: 1, sizes: vec![2, 2] }, &[&x], "split: sizes [2, 2] do not add up to 5");
    assert_fails(&Op::Split { axis: 1, sizes: vec![6, -1] }, &[&x], "negative size -1");
}

#[test]
fn slice_follows_onnx_clamping_and_negative_steps() {
    let x = iota(&[4, 5]);
    let slice = |starts: &[i64], ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>| {
        let mut ins = vec![x.clone(), i64t(&[starts.len()], starts), i64t(&[ends.len()], ends)];
        if let Some(a) = axes {
            ins.push(i64t(&[a.len()], a));
        }
        if let Some(s) = steps {
            ins.push(i64t(&[s.len()], s));
        }
        let refs: Vec<&Tensor> = ins.iter().collect();
        run1(&Op::Slice {}, &refs)
    };
    // Rows 1..3 (axes default to 0..n).
    assert_eq!(slice(&[1], &[3], None, None), i64t(&[2, 5], &[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]));
    // Reversed columns: start -1 -> 4, end far below -> clamped to -1 (exclusive).
    assert_eq!(
        slice(&[-1], &[-1000], Some(&[1]), Some(&[-1])),
        i64t(&[4, 5], &[4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 14, 13, 12, 11, 10, 19, 18, 17, 16, 15])
    );
    // Out-of-range start clamps to d-1 = 4 for a negative step: columns 4, 2, 0.
    assert_eq!(
        slice(&[10], &[-10], Some(&[-1]), Some(&[-2])),
        i64t(&[4, 3], &[4, 2, 0, 9, 7, 5, 14, 12, 10, 19, 17, 15])
    );
    // Two axes, listed out of order, with i64::MAX as "to the end".
    assert_eq!(
        slice(&[0, 1], &[i64::MAX, 100], Some(&[-1, 0]), Some(&[2, 1])),
        i64t(&[3, 3], &[5, 7, 9, 10, 12, 14, 15, 17, 19])
    );
    // Rows 3, 1 with step -2 stopping before 0.
    assert_eq!(slice(&[3], &[0], Some(&[0]), Some(&[-2])), i64t(&[2, 5], &[15, 16, 17, 18, 19, 5, 6, 7, 8, 9]));
    // Empty selections.
    assert_eq!(slice(&[3], &[1], None, None).shape(), &[0, 5]);
    assert_eq!(slice(&[1], &[3], Some(&[1]), Some(&[-1])).shape(), &[4, 0]);
    assert_eq!(slice(&[i64::MIN], &[i64::MIN], Some(&[0]), None).shape(), &[0, 5]);

    let bad = |ins: &[&Tensor]| fails(&Op::Slice {}, ins);
    let one = i64t(&[1], &[1]);
    assert!(bad(&[&x, &one, &one, &one, &i64t(&[1], &[0])]).contains("has a 0 step"));
    assert!(bad(&[&x, &one, &i64t(&[2], &[1, 2])]).contains("must have the same length"));
    assert!(bad(&[&x, &one, &one, &i64t(&[1], &[2])]).contains("axis 2 is out of range"));
    assert!(
        bad(&[&x, &i64t(&[2], &[0, 0]), &i64t(&[2], &[1, 1]), &i64t(&[2], &[0, -2])])
            .contains("appears more than once")
    );
    assert!(bad(&[&x, &f32t(&[1], &[0.0]), &one]).contains("starts must be i64 or i32"));
}

#[test]
fn gather_along_any_axis() {
    let x = rand_f32(&[3, 4], 5);
    let xv = x.to_f64_vec();
    let idx = i64t(&[2, 2], &[2, -1, 0, 1]);
    let got = run1(&Op::Gather { axis: 0 }, &[&x, &idx]);
    let mut want = Vec::new();
    for r in [2, 2, 0, 1] {
        want.extend_from_slice(&xv[r * 4..(r + 1) * 4]);
    }
    assert_eq!(got.shape(), &[2, 2, 4]);
    assert_eq!(got.to_f64_vec(), want);

    let idx = i32t(&[2], &[-4, 3]);
    let got = run1(&Op::Gather { axis: -1 }, &[&x, &idx]);
    let want: Vec<f64> = (0..3).flat_map(|r| [xv[r * 4], xv[r * 4 + 3]]).collect();
    assert_eq!(got.shape(), &[3, 2]);
    assert_eq!(got.to_f64_vec(), want);

    // A scalar index drops the axis.
    let got = run1(&Op::Gather { axis: 1 }, &[&x, &i64t(&[], &[1])]);
    assert_eq!(got.to_f64_vec(), vec![xv[1], xv[5], xv[9]]);
    assert_eq!(got.shape(), &[3]);

    assert_fails(
        &Op::Gather { axis: 0 },
        &[&x, &i64t(&[1], &[3])],
        "gather: index 3 is out of range for axis 0 of f32[3, 4] (size 3)",
    );
    assert_fails(&Op::Gather { axis: 0 }, &[&x, &i64t(&[1], &[-4])], "index -4 is out of range");
    assert_fails(&Op::Gather { axis: 2 }, &[&x, &i64t(&[1], &[0])], "axis 2 is out of range");
    assert_fails(&Op::Gather { axis: 0 }, &[&x, &f32t(&[1], &[0.0])], "indices must be i64 or i32");
    assert_fails(
        &Op::Gather { axis: 0 },
        &[&Tensor::scalar_f32(1.0), &i64t(&[1], &[0])],
        "cannot gather from a scalar",
    );
}

#[test]
fn expand_broadcasts_both_ways() {
    let x = rand_f32(&[3, 1], 6);
    let xv = x.to_f64_vec();
    let got = run1(&Op::Expand {}, &[&x, &i64t(&[3], &[2, 1, 4])]);
    let mut want = Vec::new();
    for _ in 0..2 {
        for &v in &xv {
            want.extend([v; 4]);
        }
    }
    assert_eq!(got.shape(), &[2, 3, 4]);
    assert_eq!(got.to_f64_vec(), want);
    // A 1 in the target keeps the input dim (ONNX Expand is bidirectional).
    let got = run1(&Op::Expand {}, &[&x, &i64t(&[1], &[1])]);
    assert_eq!(got, x);
    assert_fails(&Op::Expand {}, &[&x, &i64t(&[2], &[2, 2])], "expand: cannot expand f32[3, 1] to [2, 2]");
    assert_fails(&Op::Expand {}, &[&x, &i64t(&[2], &[-1, 2])], "negative dim -1");
}

#[test]
fn tile_repeats_each_axis() {
    let x = iota(&[2, 3]);
    let got = run1(&Op::Tile {}, &[&x, &i64t(&[2], &[2, 3])]);
    let want: Vec<i64> = (0..4).flat_map(|i| (0..9).map(move |j| ((i % 2) * 3 + j % 3) as i64)).collect();
    assert_eq!(got, i64t(&[4, 9], &want));
    assert_eq!(run1(&Op::Tile {}, &[&x, &i64t(&[2], &[0, 1])]).shape(), &[0, 3]);
    assert_fails(
        &Op::Tile {},
        &[&x, &i64t(&[1], &[2])],
        "tile: repeats [2] has 1 entries but the input i64[2, 3] has rank 2",
    );
    assert_fails(&Op::Tile {}, &[&x, &i64t(&[2], &[1, -2])], "negative dim -2");
}

#[test]
fn trilu_keeps_a_triangle_per_matrix() {
    let x = rand_f32(&[2, 3, 4], 8);
    let xv = x.to_f64_vec();
    for upper in [true, false] {
        for k in [None, Some(-1i64), Some(0), Some(2), Some(-5), Some(9)] {
            let kk = k.unwrap_or(0);
            let mut want = Vec::new();
            for b in 0..2 {
                for i in 0..3i64 {
                    for j in 0..4i64 {
                        let keep = if upper { j >= i + kk } else { j <= i + kk };
                        want.push(if keep { xv[(b * 3 + i as usize) * 4 + j as usize] } else { 0.0 });
                    }
                }
            }
            let kt = k.map(|v| i64t(&[], &[v]));
            let mut ins = vec![&x];
            ins.extend(kt.as_ref());
            let got = run1(&Op::Trilu { upper }, &ins);
            assert_eq!(got.shape(), &[2, 3, 4]);
            assert_eq!(got.to_f64_vec(), want, "upper {upper} k {k:?}");
        }
    }
    let b = boolt(&[2, 2], &[true, true, true, true]);
    assert_eq!(run1(&Op::Trilu { upper: false }, &[&b]), boolt(&[2, 2], &[true, false, true, true]));
    let h = to_f16(&x);
    assert_eq!(run1(&Op::Trilu { upper: true }, &[&h, &i64t(&[1], &[1])]).into_data(), {
        let v = match h.data() {
            TensorData::F16(v) => v.clone(),
            _ => unreachable!(),
        };
        TensorData::F16(
            v.iter().enumerate().map(|(n, &e)| if n % 4 > (n / 4) % 3 { e } else { half::f16::ZERO }).collect(),
        )
    });
    assert_fails(&Op::Trilu { upper: true }, &[&f32t(&[3], &[0.0; 3])], "trilu: input must have rank >= 2, got f32[3]");
    assert_fails(&Op::Trilu { upper: true }, &[&x, &f32t(&[], &[1.0])], "k must be i64 or i32");
    assert_fails(&Op::Trilu { upper: true }, &[&x, &i64t(&[2], &[1, 2])], "k must be a scalar");
}

#[test]
fn pad_modes_match_numpy_pad() {
    use kiln_ir::PadMode;
    let x = f32t(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    // numpy: np.pad(x, ((1, 0), (2, 1)), mode=m)
    let pads = i64t(&[4], &[1, 2, 0, 1]);
    let cases: [(PadMode, [f32; 18]); 3] = [
        (PadMode::Reflect, [5., 4., 3., 4., 5., 4., 2., 1., 0., 1., 2., 1., 5., 4., 3., 4., 5., 4.]),
        (PadMode::Edge, [0., 0., 0., 1., 2., 2., 0., 0., 0., 1., 2., 2., 3., 3., 3., 4., 5., 5.]),
        (PadMode::Wrap, [4., 5., 3., 4., 5., 3., 1., 2., 0., 1., 2., 0., 4., 5., 3., 4., 5., 3.]),
    ];
    for (mode, want) in cases {
        let got = run1(&Op::Pad { mode }, &[&x, &pads]);
        assert_eq!(got.shape(), &[3, 6], "{}", mode.name());
        assert_eq!(got.to_f32_vec(), want, "{}", mode.name());
    }
    // numpy: np.pad(x, ((0, 1), (1, 0)), constant_values=9), then the last column cropped by a -1.
    let got = run1(&Op::Pad { mode: PadMode::Constant }, &[&x, &i64t(&[4], &[0, 1, 1, -1]), &f32t(&[], &[9.0])]);
    assert_eq!(got.to_f32_vec(), [9.0, 0.0, 1.0, 9.0, 3.0, 4.0, 9.0, 9.0, 9.0]);
    assert_fails(&Op::Pad { mode: PadMode::Constant }, &[&x, &i64t(&[2], &[1, 1])], "must have 4 entries");
    assert_fails(&Op::Pad { mode: PadMode::Edge }, &[&x, &i64t(&[4], &[0, -4, 0, 0])], "remove more than");
}
