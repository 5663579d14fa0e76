//! Type rules of the sliding-window ops `conv` and `pool` (ONNX output-size rules).

use super::{Args, want_float};
use crate::{Dim, Shape, TensorType};

/// Validates the per-spatial-dim attributes and computes the output spatial dims.
pub(crate) fn output_dims(
    spatial: &[Dim],
    kernel: &[Option<u64>],
    strides: &[i64],
    pads: &[i64],
    dilations: &[i64],
    ceil_mode: bool,
) -> Result<Vec<Dim>, String> {
    let r = spatial.len();
    let ok_len = |v: &[i64], n: usize| v.is_empty() || v.len() == n;
    if !ok_len(strides, r) || !ok_len(dilations, r) || !ok_len(pads, 2 * r) || kernel.len() != r {
        return Err(format!("kernel, strides and dilations need {r} entries and pads {} for {r} spatial dims", 2 * r));
    }
    let get = |v: &[i64], i: usize, d: i64| v.get(i).copied().unwrap_or(d);
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let (s, d, pb, pe) = (get(strides, i, 1), get(dilations, i, 1), get(pads, i, 0), get(pads, i + r, 0));
        if s <= 0 || d <= 0 || pb < 0 || pe < 0 {
            return Err(format!("strides and dilations must be positive and pads non-negative (dim {i})"));
        }
        out.push(match (&spatial[i], kernel[i]) {
            (Dim::Static(n), Some(k)) => {
                let span = (k as i64 - 1) * d + 1;
                let room = *n as i64 + pb + pe - span;
                if room < 0 {
                    return Err(format!(
                        "the window ({span} wide) is larger than padded dim {i} ({})",
                        *n as i64 + pb + pe
                    ));
                }
                let mut o = if ceil_mode { (room + s - 1) / s + 1 } else { room / s + 1 };
                // A last window that would start in the end padding is dropped.
                if ceil_mode && (o - 1) * s >= *n as i64 + pb {
                    o -= 1;
                }
                Dim::Static(o as u64)
            }
            _ => Dim::Unknown,
        });
    }
    Ok(out)
}

pub(super) fn conv(
    strides: &[i64],
    pads: &[i64],
    dilations: &[i64],
    group: i64,
    a: &Args,
) -> Result<TensorType, String> {
    let (x, w) = (a.ty(0), a.ty(1));
    want_float("x", x)?;
    if x.rank() < 3 || w.rank() != x.rank() || w.dtype != x.dtype {
        return Err(format!("x {x} must be [n, c, spatial...] and w {w} [m, c / group, kernel...] of its dtype"));
    }
    if group <= 0 {
        return Err(format!("group must be positive, not {group}"));
    }
    if let (Some(c), Some(cg)) = (x.shape.0[1].as_static(), w.shape.0[1].as_static())
        && c != cg * group as u64
    {
        return Err(format!("x has {c} channels but w expects {cg} per group times {group} groups"));
    }
    if let Some(b) = a.opt_ty(2)
        && (b.rank() != 1 || b.dtype != x.dtype)
    {
        return Err(format!("the bias {b} must be a vector of x's dtype"));
    }
    let kernel: Vec<Option<u64>> = w.shape.0[2..].iter().map(Dim::as_static).collect();
    let mut dims = vec![x.shape.0[0].clone(), w.shape.0[0].clone()];
    dims.extend(output_dims(&x.shape.0[2..], &kernel, strides, pads, dilations, false)?);
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn pool(
    kernel: &[i64],
    strides: &[i64],
    pads: &[i64],
    dilations: &[i64],
    ceil_mode: bool,
    a: &Args,
) -> Result<TensorType, String> {
    let x = a.ty(0);
    if x.rank() < 3 {
        return Err(format!("x {x} must be [n, c, spatial...]"));
    }
    if kernel.iter().any(|&k| k <= 0) {
        return Err(format!("kernel {kernel:?} must be positive"));
    }
    let k: Vec<Option<u64>> = kernel.iter().map(|&k| Some(k as u64)).collect();
    let mut dims = x.shape.0[..2].to_vec();
    dims.extend(output_dims(&x.shape.0[2..], &k, strides, pads, dilations, ceil_mode)?);
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn resize(scales: &[f64], sizes: &[i64], a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    if scales.len() != x.rank() || sizes.len() != x.rank() {
        return Err(format!("scales {scales:?} and sizes {sizes:?} need one entry per dim of x {x}"));
    }
    if sizes.iter().any(|&s| s < 0) || scales.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(format!("sizes {sizes:?} must be non-negative and scales {scales:?} positive"));
    }
    if !(x.dtype.is_float() || x.dtype.is_int()) {
        return Err(format!("x must be numeric, but it is {x}"));
    }
    Ok(TensorType::new(x.dtype, Shape::of(&sizes.iter().map(|&s| s as u64).collect::<Vec<_>>())))
}
