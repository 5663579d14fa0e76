//! Reductions (`reduce_sum`, `reduce_mean`, `reduce_max`, `reduce_min`, `reduce_prod`), `argmax` and
//! `topk`.
//!
//! Floats accumulate in their compute type (f32 for f32/f16/bf16, f64 for f64); integers in i64 with
//! wrapping (u64 in u64). `reduce_max`/`reduce_min` propagate NaN; an empty reduction is 0 for sum, 1 for prod, NaN
//! for a float mean, and an error for max, min and an integer mean (there is no value to give).

use super::compute::{Int, Real, Values, max_nan, min_nan};
use super::{Cx, EvalError, strided_indices};
use crate::tensor::contiguous_strides;
use crate::{DType, ReduceKind, Tensor, TensorData};

/// The flat input indices of every reduced group, one group per output element (row-major), and the
/// output shape.
struct Groups {
    out_shape: Vec<usize>,
    group_len: usize,
    /// `indices[g * group_len..][..group_len]` are the elements of group `g`.
    indices: Vec<usize>,
}

fn groups(shape: &[usize], reduced: &[usize], keepdims: bool) -> Groups {
    let strides = contiguous_strides(shape);
    let kept: Vec<usize> = (0..shape.len()).filter(|a| !reduced.contains(a)).collect();
    // Visit kept axes outermost and reduced axes innermost, so each group is contiguous in the order.
    let order: Vec<usize> = kept.iter().chain(reduced).copied().collect();
    let perm_shape: Vec<usize> = order.iter().map(|&a| shape[a]).collect();
    let perm_strides: Vec<usize> = order.iter().map(|&a| strides[a]).collect();
    let out_shape = if keepdims {
        (0..shape.len()).map(|a| if reduced.contains(&a) { 1 } else { shape[a] }).collect()
    } else {
        kept.iter().map(|&a| shape[a]).collect()
    };
    Groups {
        out_shape,
        group_len: reduced.iter().map(|&a| shape[a]).product(),
        indices: strided_indices(&perm_shape, &perm_strides, 0),
    }
}

impl Groups {
    fn count(&self) -> usize {
        self.out_shape.iter().product()
    }

    /// Applies `f` to the values of each group.
    fn map<T: Copy, U>(&self, values: &[T], f: impl Fn(&mut dyn Iterator<Item = T>) -> U) -> Vec<U> {
        (0..self.count())
            .map(|g| {
                let idx = &self.indices[g * self.group_len..(g + 1) * self.group_len];
                f(&mut idx.iter().map(|&i| values[i]))
            })
            .collect()
    }
}

pub(super) fn reduce(cx: Cx, kind: ReduceKind, axes: &[i64], keepdims: bool, x: &Tensor) -> Result<Tensor, EvalError> {
    let rank = x.shape().len();
    let reduced: Vec<usize> = if axes.is_empty() { (0..rank).collect() } else { cx.distinct_axes(axes, rank)? };
    let g = groups(x.shape(), &reduced, keepdims);
    let empty_groups = g.group_len == 0 && g.count() > 0;
    if empty_groups && matches!(kind, ReduceKind::Max | ReduceKind::Min) {
        return Err(cx.err(format!("reducing over axes {axes:?} of {}, which hold no elements", x.ty())));
    }
    if empty_groups && kind == ReduceKind::Mean && x.dtype().is_int() {
        return Err(cx.err(format!("integer mean over axes {axes:?} of {}, which hold no elements", x.ty())));
    }
    let out = match Values::widen(x.data()) {
        Values::F32(v) => Values::F32(g.map(&v, |it| reduce_float(kind, it, g.group_len))),
        Values::F64(v) => Values::F64(g.map(&v, |it| reduce_float(kind, it, g.group_len))),
        Values::I64(v) => Values::I64(g.map(&v, |it| reduce_int(kind, it, g.group_len))),
        Values::U64(v) => Values::U64(g.map(&v, |it| reduce_int(kind, it, g.group_len))),
        Values::Bool(_) => return Err(cx.err(format!("not defined on bool tensors (input {})", x.ty()))),
    };
    Ok(cx.tensor(g.out_shape, out.narrow(x.dtype())))
}

fn reduce_float<T: Real>(kind: ReduceKind, it: &mut dyn Iterator<Item = T>, n: usize) -> T {
    match kind {
        ReduceKind::Sum => it.fold(T::ZERO, |a, b| a + b),
        ReduceKind::Prod => it.fold(T::ONE, |a, b| a * b),
        ReduceKind::Mean => it.fold(T::ZERO, |a, b| a + b) / T::of(n as f64),
        ReduceKind::Max => it.reduce(max_nan).expect("empty groups rejected before"),
        ReduceKind::Min => it.reduce(min_nan).expect("empty groups rejected before"),
    }
}

fn reduce_int<T: Int>(kind: ReduceKind, it: &mut dyn Iterator<Item = T>, n: usize) -> T {
    match kind {
        ReduceKind::Sum => it.fold(T::ZERO, T::wrapping_add),
        ReduceKind::Prod => it.fold(T::ONE, T::wrapping_mul),
        // Integer mean truncates toward zero, like integer division.
        ReduceKind::Mean => it.fold(T::ZERO, T::wrapping_add) / T::of_len(n),
        ReduceKind::Max => it.max().expect("empty groups rejected before"),
        ReduceKind::Min => it.min().expect("empty groups rejected before"),
    }
}

/// Index of the largest element along `axis` as i64. The first of equal maxima wins; NaN counts as
/// larger than every number (as in numpy), so the first NaN wins when there is one.
pub(super) fn argmax(cx: Cx, axis: i64, keepdims: bool, x: &Tensor) -> Result<Tensor, EvalError> {
    if x.dtype() == DType::Bool {
        return Err(cx.err(format!("not defined on bool tensors (input {})", x.ty())));
    }
    let axis = cx.axis(axis, x.shape().len())?;
    let g = groups(x.shape(), &[axis], keepdims);
    if g.group_len == 0 && g.count() > 0 {
        return Err(cx.err(format!("axis {axis} of {} is empty, so it has no maximum", x.ty())));
    }
    let first_max = |it: &mut dyn Iterator<Item = f64>| -> i64 {
        let mut best: Option<(usize, f64)> = None;
        for (i, v) in it.enumerate() {
            let better = match best {
                None => true,
                Some((_, b)) => !b.is_nan() && (v.is_nan() || v > b),
            };
            if better {
                best = Some((i, v));
            }
        }
        best.map_or(0, |(i, _)| i as i64)
    };
    let out = match Values::widen(x.data()) {
        Values::F32(v) => g.map(&v.iter().map(|&a| a as f64).collect::<Vec<_>>(), first_max),
        Values::F64(v) => g.map(&v, first_max),
        // Integers compare exactly, not through f64.
        Values::I64(v) => g.map(&v, first_int_max),
        Values::U64(v) => g.map(&v, first_int_max),
        Values::Bool(_) => unreachable!("bool rejected above"),
    };
    Ok(cx.tensor(g.out_shape, TensorData::I64(out)))
}

/// The index of the first largest of integers.
fn first_int_max<T: Ord + Copy>(it: &mut dyn Iterator<Item = T>) -> i64 {
    let mut best: Option<(usize, T)> = None;
    for (i, a) in it.enumerate() {
        if best.is_none_or(|(_, b)| a > b) {
            best = Some((i, a));
        }
    }
    best.map_or(0, |(i, _)| i as i64)
}

/// The `k` largest (or smallest) elements along `axis` and their indices, sorted, equal values in
/// index order. Floats compare in f64 (exact for every float), integers exactly.
pub(super) fn topk(cx: Cx, x: &Tensor, k: &Tensor, axis: i64, largest: bool) -> Result<Vec<Tensor>, EvalError> {
    let k = match cx.int_list(k, "k")?.as_slice() {
        [k] => *k,
        other => return Err(cx.err(format!("k must hold one number, got {other:?}"))),
    };
    if x.dtype() == DType::Bool {
        return Err(cx.err(format!("not defined on bool tensors (input {})", x.ty())));
    }
    let axis = cx.axis(axis, x.shape().len())?;
    let n = x.shape()[axis];
    let k = usize::try_from(k)
        .ok()
        .filter(|&k| k <= n)
        .ok_or_else(|| cx.err(format!("k = {k} is not between 0 and the {n} elements of axis {axis} of {}", x.ty())))?;
    let (outer, _, inner) = super::outer_axis_inner(x.shape(), axis);
    let v = SortKeys::of(x);
    let mut picks = Vec::with_capacity(outer * k * inner);
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut chosen = vec![0usize; outer * k * inner];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * n + j) * inner + i;
            order.clear();
            order.extend(0..n);
            // A stable sort keeps equal values in index order.
            order.sort_by(|&a, &b| {
                let (a, b) = (at(a), at(b));
                if largest { v.cmp(b, a) } else { v.cmp(a, b) }
            });
            for (r, &j) in order[..k].iter().enumerate() {
                chosen[(o * k + r) * inner + i] = j;
            }
        }
    }
    for (flat, &j) in chosen.iter().enumerate() {
        let (o, i) = (flat / (k * inner), flat % inner);
        picks.push((o * n + j) * inner + i);
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = k;
    let values = cx.tensor(shape.clone(), x.data().gather_flat(&picks));
    let indices = cx.tensor(shape, TensorData::I64(chosen.iter().map(|&j| j as i64).collect()));
    Ok(vec![values, indices])
}

/// Elements as keys that order exactly: floats as f64 (with `total_cmp`), integers as i128, which
/// holds every i64 and u64.
enum SortKeys {
    Float(Vec<f64>),
    Int(Vec<i128>),
}

impl SortKeys {
    fn of(x: &Tensor) -> SortKeys {
        match x.data() {
            TensorData::U64(v) => SortKeys::Int(v.iter().map(|&a| i128::from(a)).collect()),
            d if x.dtype().is_int() => SortKeys::Int((0..d.len()).map(|i| i128::from(d.get_i64(i))).collect()),
            _ => SortKeys::Float(x.to_f64_vec()),
        }
    }

    fn cmp(&self, a: usize, b: usize) -> std::cmp::Ordering {
        match self {
            SortKeys::Float(v) => v[a].total_cmp(&v[b]),
            SortKeys::Int(v) => v[a].cmp(&v[b]),
        }
    }
}
