//! `matmul` with numpy rules: 1-D operands are promoted (a row for `a`, a column for `b`) and the
//! promoted dim is dropped from the result; leading batch dims broadcast.
//!
//! A plain triple loop: f32/f16/bf16 accumulate in f32, f64 in f64, integers in i64 with wrapping.
//! The CPU executor has its own fast path; this is the reference it is checked against. `einsum`
//! enumerates every label combination.

use super::compute::Values;
use super::{Cx, EvalError, broadcast_indices, broadcast_shapes};
use crate::Tensor;

pub(super) fn matmul(cx: Cx, a: &Tensor, b: &Tensor) -> Result<Tensor, EvalError> {
    if a.dtype() != b.dtype() {
        return Err(cx.err(format!("operands must have the same dtype, got {} and {}", a.ty(), b.ty())));
    }
    if a.shape().is_empty() || b.shape().is_empty() {
        return Err(cx.err(format!("operands must have rank >= 1, got {} and {}", a.ty(), b.ty())));
    }
    let a_shape: Vec<usize> = if a.shape().len() == 1 { vec![1, a.shape()[0]] } else { a.shape().to_vec() };
    let b_shape: Vec<usize> = if b.shape().len() == 1 { vec![b.shape()[0], 1] } else { b.shape().to_vec() };
    let (a_batch, a_mat) = a_shape.split_at(a_shape.len() - 2);
    let (b_batch, b_mat) = b_shape.split_at(b_shape.len() - 2);
    let (m, k, k2, n) = (a_mat[0], a_mat[1], b_mat[0], b_mat[1]);
    if k != k2 {
        return Err(cx.err(format!("inner dims differ: {} has {k} columns but {} has {k2} rows", a.ty(), b.ty())));
    }
    let batch = broadcast_shapes(a_batch, b_batch).ok_or_else(|| {
        cx.err(format!("batch dims {a_batch:?} of {} and {b_batch:?} of {} do not broadcast", a.ty(), b.ty()))
    })?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    cx.numel(&out_shape)?;
    // Batch index of each operand's matrix for every result matrix.
    let a_mats = broadcast_indices(a_batch, &batch);
    let b_mats = broadcast_indices(b_batch, &batch);

    fn product<T: Copy>(
        x: &[T],
        y: &[T],
        (a_mats, b_mats): (&[usize], &[usize]),
        (m, k, n): (usize, usize, usize),
        zero: T,
        mul_add: impl Fn(T, T, T) -> T,
    ) -> Vec<T> {
        let mut out = Vec::with_capacity(a_mats.len() * m * n);
        for (&am, &bm) in a_mats.iter().zip(b_mats) {
            let (xa, yb) = (&x[am * m * k..][..m * k], &y[bm * k * n..][..k * n]);
            for i in 0..m {
                for j in 0..n {
                    out.push((0..k).fold(zero, |acc, p| mul_add(acc, xa[i * k + p], yb[p * n + j])));
                }
            }
        }
        out
    }
    let mats = (a_mats.as_slice(), b_mats.as_slice());
    let out = match (Values::widen(a.data()), Values::widen(b.data())) {
        (Values::F32(x), Values::F32(y)) => Values::F32(product(&x, &y, mats, (m, k, n), 0.0, |s, p, q| s + p * q)),
        (Values::F64(x), Values::F64(y)) => Values::F64(product(&x, &y, mats, (m, k, n), 0.0, |s, p, q| s + p * q)),
        (Values::I64(x), Values::I64(y)) => {
            Values::I64(product(&x, &y, mats, (m, k, n), 0, |s, p, q| s.wrapping_add(p.wrapping_mul(q))))
        }
        (Values::U64(x), Values::U64(y)) => {
            Values::U64(product(&x, &y, mats, (m, k, n), 0, |s, p, q| s.wrapping_add(p.wrapping_mul(q))))
        }
        (Values::Bool(_), Values::Bool(_)) => {
            return Err(cx.err(format!("not defined on bool tensors (inputs {} and {})", a.ty(), b.ty())));
        }
        _ => unreachable!("operands of one dtype widen to one compute kind"),
    };
    // Drop the dims that 1-D operands were promoted with.
    if b.shape().len() == 1 {
        out_shape.pop();
    }
    if a.shape().len() == 1 {
        out_shape.remove(out_shape.len() - if b.shape().len() == 1 { 1 } else { 2 });
    }
    Ok(cx.tensor(out_shape, out.narrow(a.dtype())))
}

/// Einstein summation by direct enumeration of every label combination, accumulating in f64.
pub(super) fn einsum(cx: Cx, equation: &str, inputs: &[&Tensor]) -> Result<Tensor, EvalError> {
    use crate::Dim;
    let ranks: Vec<usize> = inputs.iter().map(|t| t.shape().len()).collect();
    let eq = crate::infer::einsum::parse(equation, &ranks).map_err(|m| cx.err(m))?;
    let dims_of: Vec<Vec<Dim>> =
        inputs.iter().map(|t| t.shape().iter().map(|&d| Dim::Static(d as u64)).collect()).collect();
    let shapes: Vec<&[Dim]> = dims_of.iter().map(Vec::as_slice).collect();
    let labels = crate::infer::einsum::label_dims(&eq, &shapes).map_err(|m| cx.err(m))?;
    let size = |c: char| labels.iter().find(|(l, _)| *l == c).and_then(|(_, d)| d.as_static()).unwrap_or(1) as usize;
    let out_shape: Vec<usize> = eq.output.iter().map(|&c| size(c)).collect();
    let summed: Vec<char> = labels.iter().map(|(c, _)| *c).filter(|c| !eq.output.contains(c)).collect();
    let sum_shape: Vec<usize> = summed.iter().map(|&c| size(c)).collect();
    let n_out = cx.numel(&out_shape)?;
    let n_sum = cx.numel(&sum_shape)?;
    cx.numel(&[n_out, n_sum])?;
    let values: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec()).collect();
    let strides: Vec<Vec<usize>> = inputs.iter().map(|t| crate::tensor::contiguous_strides(t.shape())).collect();
    let all: Vec<char> = eq.output.iter().chain(&summed).copied().collect();
    let mut out = vec![0.0f64; n_out];
    let mut coord = vec![0usize; all.len()];
    for (o, slot) in out.iter_mut().enumerate() {
        let mut rem = o;
        for k in (0..eq.output.len()).rev() {
            coord[k] = rem % out_shape[k];
            rem /= out_shape[k];
        }
        let mut acc = 0.0;
        for s in 0..n_sum {
            let mut rem = s;
            for k in (0..summed.len()).rev() {
                coord[eq.output.len() + k] = rem % sum_shape[k];
                rem /= sum_shape[k];
            }
            let mut prod = 1.0;
            for (i, labels) in eq.inputs.iter().enumerate() {
                let mut flat = 0;
                for (a, c) in labels.iter().enumerate() {
                    let pos = all.iter().position(|l| l == c).expect("every label is in all");
                    // A size-1 ellipsis dim broadcasts: it always reads index 0.
                    let idx = if inputs[i].shape()[a] == 1 { 0 } else { coord[pos] };
                    flat += idx * strides[i][a];
                }
                prod *= values[i][flat];
            }
            acc += prod;
        }
        *slot = acc;
    }
    let data = crate::TensorData::from_f64(inputs[0].dtype(), out).map_err(|e| cx.err(e.to_string()))?;
    Ok(cx.tensor(out_shape, data))
}
