//! Data-movement ops: reshape, transpose, squeeze, unsqueeze, concat, split, slice, gather, expand,
//! tile, pad and trilu.
//!
//! Each computes, for every result element, the flat index of the input element it copies, and gathers
//! the data once; values are never converted, so every dtype moves exactly.

use super::compute::{Values, concat_data};
use super::{Cx, EvalError, broadcast_indices, broadcast_shapes, cartesian_indices, outer_axis_inner, strided_indices};
use crate::tensor::contiguous_strides;
use crate::{DType, PadMode, Tensor, TensorData};

/// The product of `dims`, or `None` on overflow.
fn checked_product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// ONNX Reshape: a 0 copies the input dim at the same position (unless `allowzero`, where it is a real
/// 0), and one -1 is inferred from the element count.
pub(super) fn reshape(cx: Cx, x: &Tensor, shape: &Tensor, allowzero: bool) -> Result<Tensor, EvalError> {
    let spec = cx.int_list(shape, "shape")?;
    if allowzero && spec.contains(&0) && spec.contains(&-1) {
        return Err(cx.err(format!("shape {spec:?} has both 0 and -1, which allowzero makes ambiguous")));
    }
    let mut dims = Vec::with_capacity(spec.len());
    let mut inferred = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if inferred.is_some() => return Err(cx.err(format!("shape {spec:?} has more than one -1"))),
            -1 => {
                inferred = Some(i);
                dims.push(1);
            }
            0 if !allowzero => match x.shape().get(i) {
                Some(&copied) => dims.push(copied),
                None => {
                    return Err(cx.err(format!(
                        "shape {spec:?} has 0 at position {i}, which copies an input dim, but the input {} has rank {}",
                        x.ty(),
                        x.shape().len()
                    )));
                }
            },
            d if d < 0 => return Err(cx.err(format!("shape {spec:?} has invalid dim {d} (only -1 may be negative)"))),
            d => dims.push(d as usize),
        }
    }
    if let Some(i) = inferred {
        let known = checked_product(&dims).ok_or_else(|| cx.err(format!("shape {spec:?} overflows")))?;
        if known == 0 || !x.len().is_multiple_of(known) {
            return Err(cx.err(format!(
                "cannot infer the -1 in shape {spec:?}: the other dims multiply to {known}, which does not divide the {} elements of {}",
                x.len(),
                x.ty()
            )));
        }
        dims[i] = x.len() / known;
    }
    if checked_product(&dims) != Some(x.len()) {
        return Err(cx.err(format!("cannot reshape {} ({} elements) to {dims:?}", x.ty(), x.len())));
    }
    Ok(cx.tensor(dims, x.data().clone()))
}

pub(super) fn transpose(cx: Cx, x: &Tensor, perm: &[i64]) -> Result<Tensor, EvalError> {
    let rank = x.shape().len();
    if perm.len() != rank {
        return Err(cx.err(format!(
            "perm {perm:?} has {} entries but the input {} has rank {rank}",
            perm.len(),
            x.ty()
        )));
    }
    let perm = cx.distinct_axes(perm, rank)?;
    let strides = contiguous_strides(x.shape());
    let out_shape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
    let out_strides: Vec<usize> = perm.iter().map(|&a| strides[a]).collect();
    let indices = strided_indices(&out_shape, &out_strides, 0);
    Ok(cx.tensor(out_shape, x.data().gather_flat(&indices)))
}

/// Removes the listed dims, which must be 1; with no axes, removes every dim of size 1.
pub(super) fn squeeze(cx: Cx, x: &Tensor, axes: &[i64]) -> Result<Tensor, EvalError> {
    let shape = x.shape();
    let axes = if axes.is_empty() {
        (0..shape.len()).filter(|&a| shape[a] == 1).collect()
    } else {
        let normalized = cx.distinct_axes(axes, shape.len())?;
        if let Some(&a) = normalized.iter().find(|&&a| shape[a] != 1) {
            return Err(cx.err(format!("cannot squeeze axis {a} of {}: its size is {}, not 1", x.ty(), shape[a])));
        }
        normalized
    };
    let out: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).map(|a| shape[a]).collect();
    Ok(cx.tensor(out, x.data().clone()))
}

/// Inserts dims of size 1 at `axes`, which index the result (so -1 appends).
pub(super) fn unsqueeze(cx: Cx, x: &Tensor, axes: &[i64]) -> Result<Tensor, EvalError> {
    let out_rank = x.shape().len() + axes.len();
    let axes = cx.distinct_axes(axes, out_rank)?;
    let mut rest = x.shape().iter();
    let out: Vec<usize> = (0..out_rank)
        .map(|a| if axes.contains(&a) { 1 } else { *rest.next().expect("rank counts the remaining dims") })
        .collect();
    Ok(cx.tensor(out, x.data().clone()))
}

pub(super) fn concat(cx: Cx, inputs: &[&Tensor], axis: i64) -> Result<Tensor, EvalError> {
    let first = inputs[0];
    let rank = first.shape().len();
    if rank == 0 {
        return Err(cx.err(format!("cannot concatenate scalars ({})", first.ty())));
    }
    let axis = cx.axis(axis, rank)?;
    for (i, t) in inputs.iter().enumerate().skip(1) {
        let same_other_dims =
            t.shape().len() == rank && (0..rank).all(|a| a == axis || t.shape()[a] == first.shape()[a]);
        if t.dtype() != first.dtype() || !same_other_dims {
            return Err(cx.err(format!(
                "input {i} ({}) does not match input 0 ({}): inputs need one dtype, one rank and equal dims except axis {axis}",
                t.ty(),
                first.ty()
            )));
        }
    }
    let mut out_shape = first.shape().to_vec();
    out_shape[axis] = inputs.iter().map(|t| t.shape()[axis]).sum();
    cx.numel(&out_shape)?;
    // Index into all inputs' data laid end to end: for each outer position, each input's block in turn.
    let (outer, _, inner) = outer_axis_inner(first.shape(), axis);
    let mut offsets = Vec::with_capacity(inputs.len());
    let mut total = 0;
    for t in inputs {
        offsets.push(total);
        total += t.len();
    }
    let mut indices = Vec::with_capacity(total);
    for o in 0..outer {
        for (t, &offset) in inputs.iter().zip(&offsets) {
            let block = t.shape()[axis] * inner;
            indices.extend(offset + o * block..offset + (o + 1) * block);
        }
    }
    let all = concat_data(&inputs.iter().map(|t| t.data()).collect::<Vec<_>>());
    Ok(cx.tensor(out_shape, all.gather_flat(&indices)))
}

pub(super) fn split(cx: Cx, x: &Tensor, axis: i64, sizes: &[i64]) -> Result<Vec<Tensor>, EvalError> {
    let rank = x.shape().len();
    let axis = cx.axis(axis, rank)?;
    if let Some(s) = sizes.iter().find(|&&s| s < 0) {
        return Err(cx.err(format!("sizes {sizes:?} has negative size {s}")));
    }
    let dim = x.shape()[axis];
    // Summed in i128 so that absurd sizes cannot overflow.
    if sizes.iter().map(|&s| s as i128).sum::<i128>() != dim as i128 {
        return Err(cx.err(format!("sizes {sizes:?} do not add up to {dim}, the size of axis {axis} of {}", x.ty())));
    }
    let strides = contiguous_strides(x.shape());
    let mut start = 0usize;
    let mut outs = Vec::with_capacity(sizes.len());
    for &s in sizes {
        let s = s as usize;
        let coords: Vec<Vec<usize>> = (0..rank)
            .map(|a| if a == axis { (start..start + s).collect() } else { (0..x.shape()[a]).collect() })
            .collect();
        let mut shape = x.shape().to_vec();
        shape[axis] = s;
        outs.push(cx.tensor(shape, x.data().gather_flat(&cartesian_indices(&strides, &coords))));
        start += s;
    }
    Ok(outs)
}

/// ONNX Slice: negative starts/ends count from the end, then are clamped to the dim (to `[0, d]` for
/// positive steps, `[-1, d-1]` for negative ones), so out-of-range bounds select what exists.
pub(super) fn slice(cx: Cx, inputs: &[&Tensor]) -> Result<Tensor, EvalError> {
    let x = inputs[0];
    let rank = x.shape().len();
    let starts = cx.int_list(inputs[1], "starts")?;
    let ends = cx.int_list(inputs[2], "ends")?;
    let n = starts.len();
    let axes = match inputs.get(3) {
        Some(t) => cx.int_list(t, "axes")?,
        None => (0..n as i64).collect(),
    };
    let steps = match inputs.get(4) {
        Some(t) => cx.int_list(t, "steps")?,
        None => vec![1; n],
    };
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(cx.err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have the same length"
        )));
    }
    let axes = cx.distinct_axes(&axes, rank)?;
    let mut coords: Vec<Vec<usize>> = x.shape().iter().map(|&d| (0..d).collect()).collect();
    for i in 0..n {
        let (axis, step) = (axes[i], steps[i]);
        if step == 0 {
            return Err(cx.err(format!("steps {steps:?} has a 0 step (for axis {axis})")));
        }
        let d = x.shape()[axis] as i64;
        let from_end = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (start, end) = (from_end(starts[i]), from_end(ends[i]));
        let picked: Vec<usize> = if step > 0 {
            let (start, end) = (start.clamp(0, d), end.clamp(0, d));
            (start..end).step_by(step as usize).map(|c| c as usize).collect()
        } else {
            let (start, end) = (start.clamp(-1, d - 1), end.clamp(-1, d - 1));
            // `(end + 1..=start).rev()` walks start, start-1, ..., end+1; step_by thins it.
            (end + 1..=start).rev().step_by(step.unsigned_abs() as usize).map(|c| c as usize).collect()
        };
        coords[axis] = picked;
    }
    let shape: Vec<usize> = coords.iter().map(Vec::len).collect();
    let indices = cartesian_indices(&contiguous_strides(x.shape()), &coords);
    Ok(cx.tensor(shape, x.data().gather_flat(&indices)))
}

/// Picks entries along `axis` by index; indices may be negative (from the end) but must be in range.
pub(super) fn gather(cx: Cx, x: &Tensor, indices: &Tensor, axis: i64) -> Result<Tensor, EvalError> {
    if !matches!(indices.dtype(), DType::I64 | DType::I32) {
        return Err(cx.err(format!("indices must be i64 or i32, got {}", indices.ty())));
    }
    let rank = x.shape().len();
    if rank == 0 {
        return Err(cx.err(format!("cannot gather from a scalar ({})", x.ty())));
    }
    let axis = cx.axis(axis, rank)?;
    let (outer, d, inner) = outer_axis_inner(x.shape(), axis);
    let picks = indices
        .to_i64_vec()
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + d as i64 } else { i };
            if (0..d as i64).contains(&j) {
                Ok(j as usize)
            } else {
                Err(cx.err(format!("index {i} is out of range for axis {axis} of {} (size {d})", x.ty())))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut shape = x.shape()[..axis].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&x.shape()[axis + 1..]);
    cx.numel(&shape)?;
    let mut flat = Vec::with_capacity(outer * picks.len() * inner);
    for o in 0..outer {
        for &p in &picks {
            let base = (o * d + p) * inner;
            flat.extend(base..base + inner);
        }
    }
    Ok(cx.tensor(shape, x.data().gather_flat(&flat)))
}

/// Broadcasts `x` against `shape` (both ways, as ONNX Expand does: a 1 in `shape` keeps `x`'s dim).
pub(super) fn expand(cx: Cx, x: &Tensor, shape: &Tensor) -> Result<Tensor, EvalError> {
    let target = cx.shape_list(shape, "shape")?;
    let out = broadcast_shapes(x.shape(), &target)
        .ok_or_else(|| cx.err(format!("cannot expand {} to {target:?}: the shapes do not broadcast", x.ty())))?;
    cx.numel(&out)?;
    let indices = broadcast_indices(x.shape(), &out);
    Ok(cx.tensor(out, x.data().gather_flat(&indices)))
}

/// Repeats `x` `repeats[a]` times along each axis `a`.
pub(super) fn tile(cx: Cx, x: &Tensor, repeats: &Tensor) -> Result<Tensor, EvalError> {
    let reps = cx.shape_list(repeats, "repeats")?;
    if reps.len() != x.shape().len() {
        return Err(cx.err(format!(
            "repeats {reps:?} has {} entries but the input {} has rank {}",
            reps.len(),
            x.ty(),
            x.shape().len()
        )));
    }
    let out: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<_>>()
        .ok_or_else(|| cx.err(format!("tiling {} by {reps:?} overflows", x.ty())))?;
    cx.numel(&out)?;
    let coords: Vec<Vec<usize>> = x.shape().iter().zip(&out).map(|(&d, &n)| (0..n).map(|i| i % d).collect()).collect();
    let indices = cartesian_indices(&contiguous_strides(x.shape()), &coords);
    Ok(cx.tensor(out, x.data().gather_flat(&indices)))
}

/// Keeps the upper (`col - row >= k`) or lower (`col - row <= k`) triangle of the last two dims of
/// every matrix in the batch, zeroing the rest.
pub(super) fn trilu(cx: Cx, x: &Tensor, k: Option<&Tensor>, upper: bool) -> Result<Tensor, EvalError> {
    let rank = x.shape().len();
    if rank < 2 {
        return Err(cx.err(format!("input must have rank >= 2, got {}", x.ty())));
    }
    let k = match k {
        Some(t) => {
            let t = cx.scalar_of(t, "k")?;
            if !matches!(t.dtype(), DType::I64 | DType::I32) {
                return Err(cx.err(format!("k must be i64 or i32, got {}", t.ty())));
            }
            t.to_i64_vec()[0]
        }
        None => 0,
    };
    let (rows, cols) = (x.shape()[rank - 2], x.shape()[rank - 1]);
    let keep = |flat: usize| {
        let (row, col) = ((flat / cols.max(1)) % rows.max(1), flat % cols.max(1));
        let diagonal = col as i64 - row as i64;
        if upper { diagonal >= k } else { diagonal <= k }
    };
    let out = Values::widen(x.data()).zero_unless(keep).narrow(x.dtype());
    Ok(cx.tensor(x.shape().to_vec(), out))
}

/// ONNX Pad: result coordinate `c` along an axis reads input coordinate `c - before`; outside the
/// input, `constant` uses `value`, `edge` clamps, `reflect` mirrors without repeating the edge, and
/// `wrap` repeats periodically.
pub(super) fn pad(
    cx: Cx,
    x: &Tensor,
    pads: &Tensor,
    value: Option<&Tensor>,
    mode: PadMode,
) -> Result<Tensor, EvalError> {
    let p = cx.int_list(pads, "pads")?;
    let rank = x.shape().len();
    if p.len() != 2 * rank {
        return Err(cx.err(format!("pads {p:?} must have {} entries for {}", 2 * rank, x.ty())));
    }
    let mut out_shape = Vec::with_capacity(rank);
    for (a, &d) in x.shape().iter().enumerate() {
        let len = d as i128 + p[a] as i128 + p[a + rank] as i128;
        if len < 0 {
            return Err(cx.err(format!("pads {p:?} remove more than the {d} elements of axis {a} of {}", x.ty())));
        }
        out_shape.push(usize::try_from(len).map_err(|_| cx.err(format!("pads {p:?} overflow")))?);
    }
    let n = cx.numel(&out_shape)?;
    if n > 0 && mode != PadMode::Constant && x.shape().iter().zip(&out_shape).any(|(&d, &o)| d == 0 && o > 0) {
        return Err(cx.err(format!("{} mode cannot pad an empty axis of {}", mode.name(), x.ty())));
    }
    let fill = match value {
        Some(v) => {
            let v = cx.scalar_of(v, "value")?;
            if v.dtype() != x.dtype() {
                return Err(cx.err(format!("value {} must have the dtype of x {}", v.ty(), x.ty())));
            }
            v.data().clone()
        }
        None => TensorData::from_f64(x.dtype(), [0.0]).map_err(|e| cx.err(e.to_string()))?,
    };
    // Per axis, the input coordinate each result coordinate reads, or None for the fill value.
    let coords: Vec<Vec<Option<usize>>> = (0..rank)
        .map(|a| {
            let d = x.shape()[a] as i64;
            (0..out_shape[a] as i64)
                .map(|c| {
                    let s = c - p[a];
                    if (0..d).contains(&s) {
                        return Some(s as usize);
                    }
                    match mode {
                        PadMode::Constant => None,
                        PadMode::Edge => Some(s.clamp(0, d - 1) as usize),
                        PadMode::Wrap => Some(s.rem_euclid(d) as usize),
                        PadMode::Reflect => {
                            let period = 2 * (d - 1);
                            if period == 0 {
                                return Some(0);
                            }
                            let m = s.rem_euclid(period);
                            Some(if m < d { m } else { period - m } as usize)
                        }
                    }
                })
                .collect()
        })
        .collect();
    let strides = contiguous_strides(x.shape());
    let fill_at = x.len();
    let mut indices = Vec::with_capacity(n);
    let mut at = vec![0usize; rank];
    for _ in 0..n {
        let mut flat = Some(0usize);
        for a in 0..rank {
            flat = flat.zip(coords[a][at[a]]).map(|(f, c)| f + c * strides[a]);
        }
        indices.push(flat.unwrap_or(fill_at));
        for a in (0..rank).rev() {
            at[a] += 1;
            if at[a] < out_shape[a] {
                break;
            }
            at[a] = 0;
        }
    }
    let all = concat_data(&[x.data(), &fill]);
    Ok(cx.tensor(out_shape, all.gather_flat(&indices)))
}
