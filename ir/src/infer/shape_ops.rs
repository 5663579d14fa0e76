//! Type rules of the ops whose result shape depends on input *values*: `reshape`, `expand`, `slice`,
//! `range`, `constant_of_shape`, `tile`, plus `shape` and `trilu`. Known constant inputs give exact
//! dims; unknown ones give `?` dims of the right rank.

use super::{Args, DimProduct, broadcast_shapes, dims_compatible, normalize_axes, want_min_rank};
use crate::{DType, Dim, Shape, TensorType};

/// A 1-D integer input that carries shape numbers (a target shape, slice bounds, repeats).
struct IndexVector {
    /// Number of entries, when static.
    len: Option<usize>,
    /// The entries, when the input is a known constant.
    values: Option<Vec<i64>>,
}

fn index_vector(a: &Args, i: usize, what: &str) -> Result<IndexVector, String> {
    let ty = a.ty(i);
    if !matches!(ty.dtype, DType::I64 | DType::I32) || ty.rank() != 1 {
        return Err(format!("{what} must be a 1-D i64 (or i32) tensor, but it is {ty}"));
    }
    let values = a.value(i).map(|t| t.to_i64_vec());
    let len = values.as_ref().map(Vec::len).or_else(|| ty.shape.0[0].as_static().map(|n| n as usize));
    Ok(IndexVector { len, values })
}

/// Dims from the values of a shape input, which must not be negative.
fn dims_from_values(values: &[i64], what: &str) -> Result<Vec<Dim>, String> {
    values
        .iter()
        .map(|&v| {
            u64::try_from(v).map(Dim::Static).map_err(|_| format!("{what} {values:?} contains the negative size {v}"))
        })
        .collect()
}

pub(super) fn reshape(allowzero: bool, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let target = index_vector(a, 1, "the target shape")?;
    let Some(rank) = target.len else {
        return Err(format!(
            "the target shape {} must have a static length, because that length is the result's rank",
            a.ty(1)
        ));
    };
    let Some(values) = target.values else {
        return Ok(TensorType::new(x.dtype, Shape(vec![Dim::Unknown; rank])));
    };
    if let Some(v) = values.iter().find(|&&v| v < -1) {
        return Err(format!("the target shape {values:?} contains {v}; only -1 (inferred) may be negative"));
    }
    let inferred: Vec<usize> = (0..values.len()).filter(|&i| values[i] == -1).collect();
    if inferred.len() > 1 {
        return Err(format!("the target shape {values:?} has more than one -1"));
    }
    if allowzero && inferred.len() == 1 && values.contains(&0) {
        return Err(format!("with allowzero, the target shape {values:?} cannot hold both 0 and -1"));
    }
    let mut dims = Vec::with_capacity(rank);
    for (i, &v) in values.iter().enumerate() {
        dims.push(match v {
            0 if !allowzero => x.shape.0.get(i).cloned().ok_or_else(|| {
                format!(
                    "the target shape {values:?} has 0 at index {i}, which copies dim {i} of x, but x {} has rank {}",
                    x.shape,
                    x.rank()
                )
            })?,
            -1 => Dim::Unknown,
            v => Dim::Static(v as u64),
        });
    }
    let total = DimProduct::of(&x.shape.0);
    if let Some(&i) = inferred.first() {
        let others: Vec<Dim> = dims.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, d)| d.clone()).collect();
        let known = DimProduct::of(&others);
        if !known.unknown && known.coeff == 0 {
            return Err(format!(
                "the target shape {values:?} has -1 but its other dims multiply to 0, so -1 is undetermined"
            ));
        }
        dims[i] = total.divide(&known).ok_or_else(|| {
            format!(
                "cannot reshape x {} ({total} elements) into {values:?}: {total} is not a multiple of {known}",
                x.shape
            )
        })?;
    } else {
        let out = DimProduct::of(&dims);
        if total.certainly_differs(&out) {
            return Err(format!(
                "cannot reshape x {} ({total} elements) into {} ({out} elements)",
                x.shape,
                Shape(dims.clone())
            ));
        }
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn expand(a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let target = index_vector(a, 1, "the target shape")?;
    let Some(len) = target.len else {
        return Err(format!(
            "the target shape {} must have a static length, because it decides the result's rank",
            a.ty(1)
        ));
    };
    let dims = match &target.values {
        Some(values) => dims_from_values(values, "the target shape")?,
        None => vec![Dim::Unknown; len],
    };
    let shape = broadcast_shapes(&x.shape, &Shape(dims)).map_err(|m| format!("x cannot be expanded: {m}"))?;
    Ok(TensorType::new(x.dtype, shape))
}

/// Numbers at least this large stand for "to the end" in slice bounds: no tensor has 2^62 elements.
const UNBOUNDED: i64 = 1 << 62;

/// Length of an ONNX slice of a dim of size `d`, with ONNX's clamping of start and end.
fn slice_len(d: u64, start: i64, end: i64, step: i64) -> u64 {
    if d == 0 {
        return 0;
    }
    let d = d as i128;
    let (mut s, mut e, st) = (start as i128, end as i128, step as i128);
    if s < 0 {
        s += d;
    }
    if e < 0 {
        e += d;
    }
    let len = if st > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (e - s + st - 1).div_euclid(st)
    } else {
        let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
        (s - e + (-st) - 1).div_euclid(-st)
    };
    len.max(0) as u64
}

/// The sliced size of a non-static dim, when it is still known: the whole dim, forwards or backwards.
fn slice_symbolic(d: &Dim, start: i64, end: i64, step: i64) -> Dim {
    let whole = (step == 1 && start == 0 && end >= UNBOUNDED)
        || (step == -1 && (start == -1 || start >= UNBOUNDED) && end <= -UNBOUNDED);
    if whole { d.clone() } else { Dim::Unknown }
}

pub(super) fn slice(a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let mut vectors = vec![("starts", index_vector(a, 1, "starts")?), ("ends", index_vector(a, 2, "ends")?)];
    if a.len() > 3 {
        vectors.push(("axes", index_vector(a, 3, "axes")?));
    }
    if a.len() > 4 {
        vectors.push(("steps", index_vector(a, 4, "steps")?));
    }
    let mut n: Option<usize> = None;
    for (what, v) in &vectors {
        match (n, v.len) {
            (Some(m), Some(l)) if m != l => {
                return Err(format!(
                    "starts, ends, axes and steps must have one length, but {what} has {l} entries and starts {m}"
                ));
            }
            (None, Some(l)) => n = Some(l),
            _ => {}
        }
    }
    let unknown = || Ok(TensorType::new(x.dtype, Shape(vec![Dim::Unknown; x.rank()])));
    let axes: Vec<usize> = match vectors.get(2) {
        Some((_, v)) => match &v.values {
            Some(values) => normalize_axes(values, x.rank(), "axis")?,
            // Any axis may be sliced.
            None => return unknown(),
        },
        None => match n {
            Some(n) if n > x.rank() => {
                return Err(format!("starts has {n} entries but x {} has only {} axes", x.shape, x.rank()));
            }
            Some(n) => (0..n).collect(),
            None => return unknown(),
        },
    };
    let steps: Option<Vec<i64>> = match vectors.get(3) {
        Some((_, v)) => v.values.clone(),
        None => Some(vec![1; axes.len()]),
    };
    if let Some(steps) = &steps
        && steps.contains(&0)
    {
        return Err(format!("steps {steps:?} contain 0"));
    }
    let starts = vectors[0].1.values.as_ref();
    let ends = vectors[1].1.values.as_ref();
    let mut dims = x.shape.0.clone();
    for (j, &ax) in axes.iter().enumerate() {
        let bounds = starts.zip(ends).zip(steps.as_ref()).map(|((s, e), st)| (s[j], e[j], st[j]));
        dims[ax] = match (bounds, &x.shape.0[ax]) {
            (Some((s, e, st)), Dim::Static(d)) => Dim::Static(slice_len(*d, s, e, st)),
            (Some((s, e, st)), d) => slice_symbolic(d, s, e, st),
            (None, _) => Dim::Unknown,
        };
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn range(a: &Args) -> Result<TensorType, String> {
    let (start, limit, delta) = (a.ty(0), a.ty(1), a.ty(2));
    for (what, t) in [("start", start), ("limit", limit), ("delta", delta)] {
        if t.rank() != 0 {
            return Err(format!("{what} must be a scalar, but it is {t}"));
        }
        if t.dtype != start.dtype {
            return Err(format!("start, limit and delta must share one dtype, but start is {start} and {what} is {t}"));
        }
    }
    if !(start.dtype.is_float() || start.dtype.is_int()) {
        return Err(format!("start, limit and delta must be numbers, but they are {}", start.dtype));
    }
    let len = match (a.value(0), a.value(1), a.value(2)) {
        (Some(s), Some(l), Some(d)) if s.len() == 1 && l.len() == 1 && d.len() == 1 => {
            if start.dtype.is_int() {
                let (s, l, d) = (s.to_i64_vec()[0] as i128, l.to_i64_vec()[0] as i128, d.to_i64_vec()[0] as i128);
                if d == 0 {
                    return Err("delta must not be 0".into());
                }
                // ceil((l - s) / d) for either sign of d.
                let n = if d > 0 { (l - s + d - 1).div_euclid(d) } else { (s - l - d - 1).div_euclid(-d) };
                Dim::Static(n.max(0) as u64)
            } else {
                let (s, l, d) = (s.to_f64_vec()[0], l.to_f64_vec()[0], d.to_f64_vec()[0]);
                if d == 0.0 {
                    return Err("delta must not be 0".into());
                }
                // ONNX computes the count in the input's precision.
                let n = if start.dtype == DType::F64 {
                    ((l - s) / d).ceil()
                } else {
                    ((l - s) as f32 / d as f32).ceil() as f64
                };
                if !n.is_finite() {
                    return Err(format!("range({s}, {l}, {d}) has no finite length"));
                }
                Dim::Static(n.max(0.0) as u64)
            }
        }
        _ => Dim::Unknown,
    };
    Ok(TensorType::new(start.dtype, Shape(vec![len])))
}

pub(super) fn shape(start: i64, end: Option<i64>, a: &Args) -> Result<TensorType, String> {
    let r = a.ty(0).rank() as i64;
    // ONNX Shape-15: negative bounds count from the end, then both clamp to [0, rank].
    let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    Ok(TensorType::of(DType::I64, &[(e - s).max(0) as u64]))
}

pub(super) fn constant_of_shape(value: f64, dtype: DType, a: &Args) -> Result<TensorType, String> {
    if dtype.is_quantized() {
        return Err(format!("dtype {dtype} is quantized; quantized values exist only as stored weights"));
    }
    let fits = match dtype {
        DType::Bool => value == 0.0 || value == 1.0,
        DType::I64 => value.fract() == 0.0 && (-(2f64.powi(63))..2f64.powi(63)).contains(&value),
        DType::I32 => value.fract() == 0.0 && (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&value),
        DType::I16 => value.fract() == 0.0 && (f64::from(i16::MIN)..=f64::from(i16::MAX)).contains(&value),
        DType::I8 => value.fract() == 0.0 && (f64::from(i8::MIN)..=f64::from(i8::MAX)).contains(&value),
        DType::U8 => value.fract() == 0.0 && (0.0..=255.0).contains(&value),
        DType::U16 => value.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&value),
        DType::U32 => value.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&value),
        DType::U64 => value.fract() == 0.0 && (0.0..2f64.powi(64)).contains(&value),
        // Exactly one of the format's values (as for the integers above: a fill value is not rounded).
        DType::LowBit(t) => {
            let exact = crate::LowBitCast { saturate: false, round_mode: crate::E8m0Rounding::Nearest };
            t.to_f64(t.from_f64(value, exact)) == value
        }
        DType::Str => return Err("constant_of_shape fills numbers; it cannot make a string tensor".to_string()),
        _ => true,
    };
    if !fits {
        return Err(format!("value {value} is not representable in {dtype}"));
    }
    let target = index_vector(a, 0, "the shape")?;
    let dims = match (&target.values, target.len) {
        (Some(values), _) => dims_from_values(values, "the shape")?,
        (None, Some(len)) => vec![Dim::Unknown; len],
        (None, None) => {
            return Err(format!(
                "the shape input {} must have a static length, because that length is the result's rank",
                a.ty(0)
            ));
        }
    };
    Ok(TensorType::new(dtype, Shape(dims)))
}

pub(super) fn tile(a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let repeats = index_vector(a, 1, "repeats")?;
    if let Some(n) = repeats.len
        && n != x.rank()
    {
        return Err(format!("repeats has {n} entries but x {} has rank {}", x.shape, x.rank()));
    }
    let dims = match &repeats.values {
        None => vec![Dim::Unknown; x.rank()],
        Some(values) => {
            if let Some(v) = values.iter().find(|&&v| v < 0) {
                return Err(format!("repeats {values:?} contain the negative count {v}"));
            }
            x.shape
                .0
                .iter()
                .zip(values)
                .map(|(d, &r)| match (d, r) {
                    (_, 0) => Dim::Static(0),
                    (d, 1) => d.clone(),
                    (Dim::Static(n), r) => n.checked_mul(r as u64).map_or(Dim::Unknown, Dim::Static),
                    _ => Dim::Unknown,
                })
                .collect()
        }
    };
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn trilu(a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    want_min_rank("x", x, 2)?;
    if let Some(k) = a.opt_ty(1) {
        let one_element = k.rank() == 0 || (k.rank() == 1 && dims_compatible(&k.shape.0[0], &Dim::Static(1)));
        if k.dtype != DType::I64 || !one_element {
            return Err(format!("k must be an i64 scalar, but it is {k}"));
        }
    }
    Ok(x.clone())
}

pub(super) fn pad(a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let pads = index_vector(a, 1, "pads")?;
    if let Some(n) = pads.len
        && n != 2 * x.rank()
    {
        return Err(format!(
            "pads has {n} entries but x {} has rank {}, so it needs {}",
            x.shape,
            x.rank(),
            2 * x.rank()
        ));
    }
    if let Some(v) = a.opt_ty(2)
        && (v.dtype != x.dtype || v.shape.num_elements().is_some_and(|n| n != 1))
    {
        return Err(format!("the value {v} must be one element of x's dtype {}", x.dtype));
    }
    let dims = match &pads.values {
        None => vec![Dim::Unknown; x.rank()],
        Some(p) => {
            let r = x.rank();
            let mut dims = Vec::with_capacity(r);
            for (i, d) in x.shape.0.iter().enumerate() {
                dims.push(match d {
                    Dim::Static(n) => {
                        let len = *n as i128 + p[i] as i128 + p[i + r] as i128;
                        if len < 0 {
                            return Err(format!("pads {p:?} remove more than the {n} elements of dim {i}"));
                        }
                        Dim::Static(len as u64)
                    }
                    d if p[i] == 0 && p[i + r] == 0 => d.clone(),
                    _ => Dim::Unknown,
                });
            }
            dims
        }
    };
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn topk(axis: i64, a: &Args) -> Result<Vec<TensorType>, String> {
    let x = a.ty(0);
    if !(x.dtype.is_float() || x.dtype.is_int()) {
        return Err(format!("x must be numeric, but it is {x}"));
    }
    let ax = super::normalize_axis(axis, x.rank(), "axis")?;
    let k = index_vector(a, 1, "k")?;
    if k.len.is_some_and(|n| n != 1) {
        return Err(format!("k must hold one number, but it is {}", a.ty(1)));
    }
    let mut dims = x.shape.0.clone();
    dims[ax] = match k.values.as_deref() {
        Some([k]) if *k < 0 => return Err(format!("k must not be negative, but it is {k}")),
        Some([k]) => {
            if let Dim::Static(n) = dims[ax]
                && *k as u64 > n
            {
                return Err(format!("k = {k} exceeds the {n} elements of axis {ax}"));
            }
            Dim::Static(*k as u64)
        }
        _ => Dim::Unknown,
    };
    Ok(vec![TensorType::new(x.dtype, Shape(dims.clone())), TensorType::new(DType::I64, Shape(dims))])
}
