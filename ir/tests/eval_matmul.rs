//! `matmul` against an f64 triple loop written per case, covering numpy's 1-D promotion and batch
//! broadcasting, integer and half-precision operands, and shape errors.

// References are index loops on purpose: they mirror the math, not the implementation.
#![allow(clippy::needless_range_loop)]

mod eval_support;

use eval_support::*;
use kiln_ir::{Op, Tensor, TensorData};

/// `a[m, k] @ b[k, n]` on row-major f64 slices.
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                out[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    out
}

fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    run1(&Op::MatMul {}, &[a, b])
}

#[test]
fn plain_and_one_dimensional_operands() {
    let a = rand_f32(&[3, 4], 1);
    let b = rand_f32(&[4, 5], 2);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    assert_close(&matmul(&a, &b), &[3, 5], &mm(&av, &bv, 3, 4, 5));

    let v = rand_f32(&[4], 3);
    let vv = v.to_f64_vec();
    assert_close(&matmul(&v, &b), &[5], &mm(&vv, &bv, 1, 4, 5));
    assert_close(&matmul(&a, &v), &[3], &mm(&av, &vv, 3, 4, 1));
    assert_close(&matmul(&v, &v), &[], &mm(&vv, &vv, 1, 4, 1));

    // 1-D against a batched operand: [4] @ [2, 4, 5] -> [2, 5].
    let bb = rand_f32(&[2, 4, 5], 4);
    let bbv = bb.to_f64_vec();
    let want: Vec<f64> = (0..2).flat_map(|q| mm(&vv, &bbv[q * 20..(q + 1) * 20], 1, 4, 5)).collect();
    assert_close(&matmul(&v, &bb), &[2, 5], &want);
    // [2, 3, 4] @ [4] -> [2, 3]
    let ab = rand_f32(&[2, 3, 4], 5);
    let abv = ab.to_f64_vec();
    let want: Vec<f64> = (0..2).flat_map(|q| mm(&abv[q * 12..(q + 1) * 12], &vv, 3, 4, 1)).collect();
    assert_close(&matmul(&ab, &v), &[2, 3], &want);
}

#[test]
fn batch_dims_broadcast() {
    // [2, 1, 3, 4] @ [3, 4, 5] -> [2, 3, 3, 5]: out[p, q] = a[p, 0] @ b[q].
    let a = rand_f32(&[2, 1, 3, 4], 6);
    let b = rand_f32(&[3, 4, 5], 7);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut want = Vec::new();
    for p in 0..2 {
        for q in 0..3 {
            want.extend(mm(&av[p * 12..(p + 1) * 12], &bv[q * 20..(q + 1) * 20], 3, 4, 5));
        }
    }
    assert_close(&matmul(&a, &b), &[2, 3, 3, 5], &want);

    let a64 = f64t(&[2, 1, 3, 4], &av);
    let b64 = f64t(&[3, 4, 5], &bv);
    assert_close_tol(&matmul(&a64, &b64), &[2, 3, 3, 5], &want, 1e-12);
}

#[test]
fn half_precision_and_integers() {
    let a = rand_f32(&[3, 8], 8);
    let b = rand_f32(&[8, 2], 9);
    for (ha, hb) in [(to_f16(&a), to_f16(&b)), (to_bf16(&a), to_bf16(&b))] {
        let got = matmul(&ha, &hb);
        assert_eq!(got.dtype(), ha.dtype());
        assert_close_half(&got, &[3, 2], &mm(&ha.to_f64_vec(), &hb.to_f64_vec(), 3, 8, 2));
    }

    let ia = i64t(&[2, 3], &[1, -2, 3, 4, 5, -6]);
    let ib = i64t(&[3, 2], &[7, 8, 9, 10, -11, 12]);
    let want: Vec<i64> = mm(&ia.to_f64_vec(), &ib.to_f64_vec(), 2, 3, 2).into_iter().map(|v| v as i64).collect();
    assert_eq!(matmul(&ia, &ib), i64t(&[2, 2], &want));
    // i8 accumulates in i64 and wraps when narrowed: 100*2 + 100*2 = 400 -> 400 - 256 = 144 -> -112.
    let x = Tensor::new(vec![1, 2], TensorData::I8(vec![100, 100])).unwrap();
    let y = Tensor::new(vec![2, 1], TensorData::I8(vec![2, 2])).unwrap();
    assert_eq!(matmul(&x, &y).into_data(), TensorData::I8(vec![400i64 as i8]));
}

#[test]
fn matmul_errors() {
    let op = Op::MatMul {};
    let a = rand_f32(&[3, 4], 1);
    assert_fails(
        &op,
        &[&a, &rand_f32(&[5, 2], 1)],
        "matmul: inner dims differ: f32[3, 4] has 4 columns but f32[5, 2] has 5 rows",
    );
    assert_fails(
        &op,
        &[&rand_f32(&[2, 3, 4], 1), &rand_f32(&[3, 4, 2], 1)],
        "batch dims [2] of f32[2, 3, 4] and [3] of f32[3, 4, 2] do not broadcast",
    );
    assert_fails(&op, &[&Tensor::scalar_f32(1.0), &a], "rank >= 1");
    assert_fails(&op, &[&a, &to_f16(&a)], "same dtype");
    assert_fails(&op, &[&boolt(&[1, 1], &[true]), &boolt(&[1, 1], &[true])], "not defined on bool");
}
