//! Index-driven ops: `gather_elements`, `scatter_elements`, `gather_nd` and `scatter_nd`.
//!
//! Indices may be negative (counted from the end of their dim) but must be in range; scatters copy
//! `x` and apply the updates in index order (so with repeated indices and no reduction the last wins,
//! as in the ONNX reference), combining in the compute type.

use super::compute::{Int, Values, max_nan, min_nan};
use super::{Cx, EvalError};
use crate::tensor::contiguous_strides;
use crate::{DType, ScatterReduction, Tensor};

fn want_indices(cx: Cx, t: &Tensor) -> Result<Vec<i64>, EvalError> {
    if !matches!(t.dtype(), DType::I64 | DType::I32) {
        return Err(cx.err(format!("indices must be i64 or i32, got {}", t.ty())));
    }
    Ok(t.to_i64_vec())
}

/// `i` resolved against a dim of size `d`, or an error naming where it came from.
fn resolve(cx: Cx, i: i64, d: usize, what: &str) -> Result<usize, EvalError> {
    let j = if i < 0 { i + d as i64 } else { i };
    if (0..d as i64).contains(&j) {
        Ok(j as usize)
    } else {
        Err(cx.err(format!("index {i} is out of range for {what} (size {d})")))
    }
}

/// For each element of `indices` (row-major), the flat index of `x` it addresses along `axis`.
fn element_targets(cx: Cx, x: &Tensor, indices: &Tensor, axis: i64) -> Result<Vec<usize>, EvalError> {
    let rank = x.shape().len();
    let axis = cx.axis(axis, rank)?;
    if indices.shape().len() != rank {
        return Err(cx.err(format!("indices {} must have the rank of x {}", indices.ty(), x.ty())));
    }
    for a in 0..rank {
        if a != axis && indices.shape()[a] > x.shape()[a] {
            return Err(cx.err(format!("indices {} do not fit in x {} at dim {a}", indices.ty(), x.ty())));
        }
    }
    let idx = want_indices(cx, indices)?;
    let x_strides = contiguous_strides(x.shape());
    let i_strides = contiguous_strides(indices.shape());
    let what = format!("axis {axis} of {}", x.ty());
    idx.iter()
        .enumerate()
        .map(|(flat, &i)| {
            let mut at = 0;
            for a in 0..rank {
                let c = (flat / i_strides[a]) % indices.shape()[a];
                at += if a == axis { resolve(cx, i, x.shape()[axis], &what)? } else { c } * x_strides[a];
            }
            Ok(at)
        })
        .collect()
}

pub(super) fn gather_elements(cx: Cx, x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor, EvalError> {
    let targets = element_targets(cx, x, indices, axis)?;
    Ok(cx.tensor(indices.shape().to_vec(), x.data().gather_flat(&targets)))
}

/// Writes `updates` into a copy of `x`: slice `u` of `updates` (of `slice` elements) goes to
/// `starts[u]`.
fn scatter(
    cx: Cx,
    x: &Tensor,
    updates: &Tensor,
    starts: &[usize],
    slice: usize,
    reduction: ScatterReduction,
) -> Result<Tensor, EvalError> {
    if updates.dtype() != x.dtype() {
        return Err(cx.err(format!("updates {} must have the dtype of x {}", updates.ty(), x.ty())));
    }
    if updates.len() != starts.len() * slice {
        return Err(cx.err(format!("updates {} do not match the indices", updates.ty())));
    }
    fn run<T: Copy>(out: &mut [T], upd: &[T], starts: &[usize], slice: usize, f: impl Fn(T, T) -> T) {
        for (u, &s) in starts.iter().enumerate() {
            for e in 0..slice {
                out[s + e] = f(out[s + e], upd[u * slice + e]);
            }
        }
    }
    use ScatterReduction as S;
    let out = match (Values::widen(x.data()), Values::widen(updates.data())) {
        (Values::F32(mut o), Values::F32(u)) => {
            run(&mut o, &u, starts, slice, |a, b| match reduction {
                S::None => b,
                S::Add => a + b,
                S::Mul => a * b,
                S::Max => max_nan(a, b),
                S::Min => min_nan(a, b),
            });
            Values::F32(o)
        }
        (Values::F64(mut o), Values::F64(u)) => {
            run(&mut o, &u, starts, slice, |a, b| match reduction {
                S::None => b,
                S::Add => a + b,
                S::Mul => a * b,
                S::Max => max_nan(a, b),
                S::Min => min_nan(a, b),
            });
            Values::F64(o)
        }
        (Values::I64(mut o), Values::I64(u)) => {
            run(&mut o, &u, starts, slice, |a, b| scatter_int(reduction, a, b));
            Values::I64(o)
        }
        (Values::U64(mut o), Values::U64(u)) => {
            run(&mut o, &u, starts, slice, |a, b| scatter_int(reduction, a, b));
            Values::U64(o)
        }
        (Values::Bool(mut o), Values::Bool(u)) => {
            run(&mut o, &u, starts, slice, |a, b| match reduction {
                S::None => b,
                S::Add | S::Max => a || b,
                S::Mul | S::Min => a && b,
            });
            Values::Bool(o)
        }
        _ => unreachable!("x and updates share one dtype, checked above"),
    };
    Ok(cx.tensor(x.shape().to_vec(), out.narrow(x.dtype())))
}

/// An integer scatter's combination of the present value `a` with the update `b`.
fn scatter_int<T: Int>(reduction: ScatterReduction, a: T, b: T) -> T {
    match reduction {
        ScatterReduction::None => b,
        ScatterReduction::Add => a.wrapping_add(b),
        ScatterReduction::Mul => a.wrapping_mul(b),
        ScatterReduction::Max => a.max(b),
        ScatterReduction::Min => a.min(b),
    }
}

pub(super) fn scatter_elements(
    cx: Cx,
    x: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
    axis: i64,
    reduction: ScatterReduction,
) -> Result<Tensor, EvalError> {
    if updates.shape() != indices.shape() {
        return Err(cx.err(format!("updates {} must have the shape of indices {}", updates.ty(), indices.ty())));
    }
    let targets = element_targets(cx, x, indices, axis)?;
    scatter(cx, x, updates, &targets, 1, reduction)
}

/// The flat start of the slice each index tuple of `indices[..., k]` names in `x` (after `batch`
/// leading dims shared by both), and the slice length.
fn nd_starts(cx: Cx, x: &Tensor, indices: &Tensor, batch: usize) -> Result<(Vec<usize>, usize), EvalError> {
    let idx = want_indices(cx, indices)?;
    let ir = indices.shape().len();
    if ir == 0 {
        return Err(cx.err("indices must have rank 1 or more"));
    }
    let k = indices.shape()[ir - 1];
    let xr = x.shape().len();
    if batch >= ir || batch + k > xr || x.shape()[..batch] != indices.shape()[..batch] {
        return Err(cx.err(format!(
            "index tuples of length {k} after {batch} batch dims do not fit x {} and indices {}",
            x.ty(),
            indices.ty()
        )));
    }
    let strides = contiguous_strides(x.shape());
    let slice: usize = x.shape()[batch + k..].iter().product();
    let batch_size: usize = x.shape()[batch..].iter().product();
    let tuples = idx.len().checked_div(k).unwrap_or_else(|| indices.shape()[..ir - 1].iter().product());
    let per_batch = tuples / indices.shape()[..batch].iter().product::<usize>().max(1);
    let mut starts = Vec::with_capacity(tuples);
    for t in 0..tuples {
        let mut at = (t / per_batch.max(1)) * batch_size;
        for j in 0..k {
            let a = batch + j;
            at += resolve(cx, idx[t * k + j], x.shape()[a], &format!("dim {a} of {}", x.ty()))? * strides[a];
        }
        starts.push(at);
    }
    Ok((starts, slice))
}

pub(super) fn gather_nd(cx: Cx, x: &Tensor, indices: &Tensor, batch_dims: i64) -> Result<Tensor, EvalError> {
    let batch = usize::try_from(batch_dims).map_err(|_| cx.err(format!("batch_dims {batch_dims} is negative")))?;
    let (starts, slice) = nd_starts(cx, x, indices, batch)?;
    let k = indices.shape()[indices.shape().len() - 1];
    let mut shape = indices.shape()[..indices.shape().len() - 1].to_vec();
    shape.extend_from_slice(&x.shape()[batch + k..]);
    cx.numel(&shape)?;
    let flat: Vec<usize> = starts.iter().flat_map(|&s| s..s + slice).collect();
    Ok(cx.tensor(shape, x.data().gather_flat(&flat)))
}

pub(super) fn scatter_nd(
    cx: Cx,
    x: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
    reduction: ScatterReduction,
) -> Result<Tensor, EvalError> {
    let (starts, slice) = nd_starts(cx, x, indices, 0)?;
    let k = indices.shape()[indices.shape().len() - 1];
    let mut want = indices.shape()[..indices.shape().len() - 1].to_vec();
    want.extend_from_slice(&x.shape()[k..]);
    if updates.shape() != want.as_slice() {
        return Err(cx.err(format!("updates {} must have shape {want:?}", updates.ty())));
    }
    scatter(cx, x, updates, &starts, slice, reduction)
}
