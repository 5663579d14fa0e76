//! Ops that make tensors from scalars and shapes (`range`, `shape`, `constant_of_shape`), `cumsum` and
//! `cumprod`.

use super::compute::{Real, Values};
use super::{Cx, EvalError, MAX_ELEMENTS, outer_axis_inner};
use crate::{DType, Tensor, TensorData};

/// `start, start + delta, ...` while before `limit` (ONNX Range): `max(ceil((limit - start) / delta), 0)`
/// elements, element `i` being `start + i * delta`, computed in the inputs' compute type.
pub(super) fn range(cx: Cx, start: &Tensor, limit: &Tensor, delta: &Tensor) -> Result<Tensor, EvalError> {
    let dtype = start.dtype();
    if limit.dtype() != dtype || delta.dtype() != dtype {
        return Err(cx.err(format!(
            "start, limit and delta must have the same dtype, got {}, {} and {}",
            start.ty(),
            limit.ty(),
            delta.ty()
        )));
    }
    let scalars = [cx.scalar_of(start, "start")?, cx.scalar_of(limit, "limit")?, cx.scalar_of(delta, "delta")?];
    let [s, l, d] = scalars.map(|t| Values::widen(t.data()));
    let too_many = |count: f64| cx.err(format!("the range has {count} elements, more than {MAX_ELEMENTS}"));
    let out = match (s, l, d) {
        (Values::F32(s), Values::F32(l), Values::F32(d)) => Values::F32(float_range(cx, s[0], l[0], d[0])?),
        (Values::F64(s), Values::F64(l), Values::F64(d)) => Values::F64(float_range(cx, s[0], l[0], d[0])?),
        (Values::I64(s), Values::I64(l), Values::I64(d)) => {
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return Err(cx.err("delta is 0"));
            }
            // Ceiling division in i128, where `limit - start` cannot overflow; flipping both signs
            // makes the divisor positive, where euclidean division rounds down.
            let (span, step) = (l as i128 - s as i128, d as i128);
            let (span, step) = if step < 0 { (-span, -step) } else { (span, step) };
            let count = (span.div_euclid(step) + i128::from(span.rem_euclid(step) != 0)).max(0);
            if count > MAX_ELEMENTS as i128 {
                return Err(too_many(count as f64));
            }
            Values::I64((0..count as i64).map(|i| s.wrapping_add(i.wrapping_mul(d))).collect())
        }
        (Values::U64(s), Values::U64(l), Values::U64(d)) => {
            // An unsigned delta is never negative: the range only counts up.
            let (s, l, d) = (s[0], l[0], d[0]);
            if d == 0 {
                return Err(cx.err("delta is 0"));
            }
            let count = l.saturating_sub(s).div_ceil(d);
            if count > MAX_ELEMENTS as u64 {
                return Err(too_many(count as f64));
            }
            Values::U64((0..count).map(|i| s + i * d).collect())
        }
        _ => return Err(cx.err(format!("not defined on bool tensors (inputs {})", start.ty()))),
    };
    Ok(cx.tensor(vec![out.len()], out.narrow(dtype)))
}

fn float_range<T: Real + Into<f64>>(cx: Cx, start: T, limit: T, delta: T) -> Result<Vec<T>, EvalError> {
    if delta == T::ZERO {
        return Err(cx.err("delta is 0"));
    }
    let count: f64 = ((limit - start) / delta).ceil().into();
    if !count.is_finite() {
        return Err(cx.err(format!(
            "start {}, limit {} and delta {} give no finite element count",
            start.into(),
            limit.into(),
            delta.into()
        )));
    }
    if count > MAX_ELEMENTS as f64 {
        return Err(cx.err(format!("the range has {count} elements, more than {MAX_ELEMENTS}")));
    }
    let count = count.max(0.0) as usize;
    Ok((0..count).map(|i| start + T::of(i as f64) * delta).collect())
}

/// Running sums (or products) along `axis`; `exclusive` leaves out the element itself, `reverse`
/// accumulates from the end.
pub(super) fn cumulative(
    cx: Cx,
    x: &Tensor,
    axis: i64,
    (exclusive, reverse): (bool, bool),
    product: bool,
) -> Result<Tensor, EvalError> {
    let axis = cx.axis(axis, x.shape().len())?;
    let (outer, len, inner) = outer_axis_inner(x.shape(), axis);
    fn scan<T: Copy>(
        v: &[T],
        (outer, len, inner): (usize, usize, usize),
        (exclusive, reverse): (bool, bool),
        identity: T,
        add: impl Fn(T, T) -> T,
    ) -> Vec<T> {
        let mut out = vec![identity; v.len()];
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = identity;
                for step in 0..len {
                    let k = if reverse { len - 1 - step } else { step };
                    let at = (o * len + k) * inner + i;
                    if exclusive {
                        out[at] = acc;
                        acc = add(acc, v[at]);
                    } else {
                        acc = add(acc, v[at]);
                        out[at] = acc;
                    }
                }
            }
        }
        out
    }
    let dims = (outer, len, inner);
    let flags = (exclusive, reverse);
    let out = match Values::widen(x.data()) {
        Values::F32(v) if product => Values::F32(scan(&v, dims, flags, 1.0, |a, b| a * b)),
        Values::F64(v) if product => Values::F64(scan(&v, dims, flags, 1.0, |a, b| a * b)),
        Values::I64(v) if product => Values::I64(scan(&v, dims, flags, 1, i64::wrapping_mul)),
        Values::U64(v) if product => Values::U64(scan(&v, dims, flags, 1, u64::wrapping_mul)),
        Values::F32(v) => Values::F32(scan(&v, dims, flags, 0.0, |a, b| a + b)),
        Values::F64(v) => Values::F64(scan(&v, dims, flags, 0.0, |a, b| a + b)),
        Values::I64(v) => Values::I64(scan(&v, dims, flags, 0, i64::wrapping_add)),
        Values::U64(v) => Values::U64(scan(&v, dims, flags, 0, u64::wrapping_add)),
        Values::Bool(_) => return Err(cx.err(format!("not defined on bool tensors (input {})", x.ty()))),
    };
    Ok(cx.tensor(x.shape().to_vec(), out.narrow(x.dtype())))
}

/// The input's dims `start..end` as i64 (ONNX Shape-15): negative bounds count from the end, both are
/// clamped to `[0, rank]`, and `start >= end` gives an empty result.
pub(super) fn shape(cx: Cx, x: &Tensor, start: i64, end: Option<i64>) -> Result<Tensor, EvalError> {
    let rank = x.shape().len() as i64;
    let clamp = |v: i64| (if v < 0 { v.saturating_add(rank) } else { v }).clamp(0, rank) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(rank)));
    let dims: Vec<i64> = x.shape()[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Ok(cx.tensor(vec![dims.len()], TensorData::I64(dims)))
}

/// A tensor of `dtype` and the given shape, every element `value`. Float dtypes round `value`; for
/// integer and bool dtypes it must be exactly representable.
pub(super) fn constant_of_shape(cx: Cx, shape: &Tensor, value: f64, dtype: DType) -> Result<Tensor, EvalError> {
    if dtype.is_quantized() {
        return Err(cx.err(format!("dtype {dtype} is quantized; constants must be plain")));
    }
    let dims = cx.shape_list(shape, "shape")?;
    let n = cx.numel(&dims)?;
    let one = TensorData::from_f64(dtype, [value]).map_err(|e| cx.err(e.to_string()))?;
    if !dtype.is_float() && one.get_f64(0) != value {
        return Err(cx.err(format!("value {value} is not representable in {dtype}")));
    }
    let data = one.gather_flat(&vec![0; n]);
    Ok(cx.tensor(dims, data))
}
