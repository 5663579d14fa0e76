//! Type rules of the index-driven ops: `gather_elements`, `scatter_elements`, `gather_nd` and
//! `scatter_nd` (ONNX semantics).

use super::{Args, dims_compatible, normalize_axis, shapes_compatible, want_int};
use crate::{Dim, Shape, TensorType};

pub(super) fn gather_elements(axis: i64, a: &Args) -> Result<TensorType, String> {
    let (x, idx) = (a.ty(0), a.ty(1));
    want_int("indices", idx)?;
    normalize_axis(axis, x.rank(), "axis")?;
    if idx.rank() != x.rank() {
        return Err(format!("indices {idx} must have the rank of x {x}"));
    }
    Ok(TensorType::new(x.dtype, idx.shape.clone()))
}

pub(super) fn scatter_elements(axis: i64, a: &Args) -> Result<TensorType, String> {
    let (x, idx, upd) = (a.ty(0), a.ty(1), a.ty(2));
    want_int("indices", idx)?;
    normalize_axis(axis, x.rank(), "axis")?;
    if idx.rank() != x.rank() || !shapes_compatible(&idx.shape, &upd.shape) {
        return Err(format!("indices {idx} and updates {upd} must have one shape, of the rank of x {x}"));
    }
    if upd.dtype != x.dtype {
        return Err(format!("updates {upd} must have the dtype of x {x}"));
    }
    Ok(x.clone())
}

/// The length of the index tuples: the static last dim of `indices`.
fn tuple_len(idx: &TensorType) -> Result<usize, String> {
    match idx.shape.dims().last() {
        Some(Dim::Static(k)) => Ok(*k as usize),
        _ => Err(format!("indices {idx} must have a static last dim (the length of each index tuple)")),
    }
}

pub(super) fn gather_nd(batch_dims: i64, a: &Args) -> Result<TensorType, String> {
    let (x, idx) = (a.ty(0), a.ty(1));
    want_int("indices", idx)?;
    let k = tuple_len(idx)?;
    let b = usize::try_from(batch_dims).map_err(|_| format!("batch_dims {batch_dims} must not be negative"))?;
    if b >= idx.rank() || b + k > x.rank() {
        return Err(format!("batch_dims {b} and index tuples of length {k} do not fit x {x} and indices {idx}"));
    }
    for i in 0..b {
        if !dims_compatible(&x.shape.dims()[i], &idx.shape.dims()[i]) {
            return Err(format!("the batch dims of x {x} and indices {idx} differ"));
        }
    }
    let mut dims = idx.shape.dims()[..idx.rank() - 1].to_vec();
    dims.extend_from_slice(&x.shape.dims()[b + k..]);
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn scatter_nd(a: &Args) -> Result<TensorType, String> {
    let (x, idx, upd) = (a.ty(0), a.ty(1), a.ty(2));
    want_int("indices", idx)?;
    let k = tuple_len(idx)?;
    if idx.rank() == 0 || k > x.rank() {
        return Err(format!("index tuples of length {k} do not fit x {x}"));
    }
    let mut want = idx.shape.dims()[..idx.rank() - 1].to_vec();
    want.extend_from_slice(&x.shape.dims()[k..]);
    if upd.dtype != x.dtype || !shapes_compatible(&upd.shape, &Shape(want.clone())) {
        return Err(format!("updates {upd} must be {}{}", x.dtype, Shape(want)));
    }
    Ok(x.clone())
}
