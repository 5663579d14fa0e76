//! Shared helpers of the `eval_*` tests: running an op, deterministic test data, and comparisons
//! against float64 references that each test computes on its own.

#![allow(dead_code)]

use kiln_ir::eval::eval_generic;
use kiln_ir::{Op, Tensor, TensorData};

/// Evaluates `op`, expecting success.
pub fn run(op: &Op, inputs: &[&Tensor]) -> Vec<Tensor> {
    eval_generic(op, inputs)
        .unwrap_or_else(|e| panic!("{} failed: {e}", op.name()))
        .unwrap_or_else(|| panic!("{} is not evaluated by eval_generic", op.name()))
}

/// Evaluates a single-result `op`, expecting success.
pub fn run1(op: &Op, inputs: &[&Tensor]) -> Tensor {
    let mut out = run(op, inputs);
    assert_eq!(out.len(), 1, "{} gave {} results", op.name(), out.len());
    out.remove(0)
}

/// Evaluates `op`, expecting an error, and returns its message (which includes the op name).
pub fn fails(op: &Op, inputs: &[&Tensor]) -> String {
    match eval_generic(op, inputs) {
        Err(e) => e.to_string(),
        Ok(r) => panic!("{} should fail but gave {r:?}", op.name()),
    }
}

/// Asserts that evaluating `op` fails with a message containing `needle`.
pub fn assert_fails(op: &Op, inputs: &[&Tensor], needle: &str) {
    let msg = fails(op, inputs);
    assert!(msg.contains(needle), "error `{msg}` does not mention `{needle}`");
}

/// Deterministic values in `[lo, hi)` (a 64-bit LCG, so tests need no random crate or seed files).
pub fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            lo + unit * (hi - lo)
        })
        .collect()
}

/// An f32 tensor of deterministic values in `[-3, 3)`.
pub fn rand_f32(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::f32(shape.to_vec(), values(n, seed, -3.0, 3.0).into_iter().map(|x| x as f32).collect()).unwrap()
}

pub fn f32t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), data.to_vec()).unwrap()
}

pub fn f64t(shape: &[usize], data: &[f64]) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::F64(data.to_vec())).unwrap()
}

pub fn i64t(shape: &[usize], data: &[i64]) -> Tensor {
    Tensor::i64(shape.to_vec(), data.to_vec()).unwrap()
}

pub fn i32t(shape: &[usize], data: &[i32]) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I32(data.to_vec())).unwrap()
}

pub fn boolt(shape: &[usize], data: &[bool]) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::Bool(data.to_vec())).unwrap()
}

/// The same values stored as f16 (rounded).
pub fn to_f16(t: &Tensor) -> Tensor {
    Tensor::new(t.shape().to_vec(), TensorData::F16(t.to_f64_vec().into_iter().map(half::f16::from_f64).collect()))
        .unwrap()
}

/// The same values stored as bf16 (rounded).
pub fn to_bf16(t: &Tensor) -> Tensor {
    Tensor::new(t.shape().to_vec(), TensorData::BF16(t.to_f64_vec().into_iter().map(half::bf16::from_f64).collect()))
        .unwrap()
}

/// Asserts shape and `|got - want| <= tol * max(1, |want|)` elementwise; NaN must match NaN.
pub fn assert_close_tol(got: &Tensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.shape(), shape, "shape");
    let g = got.to_f64_vec();
    assert_eq!(g.len(), want.len(), "element count");
    for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
        if b.is_nan() {
            assert!(a.is_nan(), "element {i}: got {a}, want NaN");
        } else if b.is_infinite() {
            assert_eq!(a, b, "element {i}");
        } else {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "element {i}: got {a}, want {b} (tol {tol})");
        }
    }
}

/// The f32 accuracy bar: relative error at most 1e-5.
pub fn assert_close(got: &Tensor, shape: &[usize], want: &[f64]) {
    assert_close_tol(got, shape, want, 1e-5);
}

/// Half-precision results: the reference rounded to the storage type must match exactly up to one
/// rounding step (relative 2^-10 for f16, 2^-7 for bf16), since computing in f32 then rounding can
/// land on the neighbour of a correctly rounded value.
pub fn assert_close_half(got: &Tensor, shape: &[usize], want: &[f64]) {
    let tol = match got.dtype() {
        kiln_ir::DType::F16 => 1.0 / 1024.0,
        kiln_ir::DType::BF16 => 1.0 / 128.0,
        d => panic!("assert_close_half on {d}"),
    };
    assert_close_tol(got, shape, want, tol);
}

/// Row-major coordinates of flat index `i` in `shape` (for references written over coordinates).
pub fn coords(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for a in (0..shape.len()).rev() {
        c[a] = i % shape[a];
        i /= shape[a];
    }
    c
}

/// Flat row-major index of coordinates `c` in `shape`.
pub fn flat(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |acc, (&x, &d)| acc * d + x)
}
