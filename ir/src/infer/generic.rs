//! Type rules of the generic tensor ops whose result shape follows from input shapes and attributes
//! alone (elementwise ops, reductions, matmul, layout ops). ONNX semantics throughout.

use super::{Args, broadcast_shapes, merge_dims, normalize_axes, normalize_axis};
use super::{want_bool, want_float, want_int, want_min_rank, want_numeric};
use crate::{BinaryOp, CompareOp, DType, Dim, Shape, TensorType, UnaryOp};

fn want_same_dtype(op_inputs: &str, a: &TensorType, b: &TensorType) -> Result<(), String> {
    if a.dtype == b.dtype { Ok(()) } else { Err(format!("{op_inputs} must share one dtype, but they are {a} and {b}")) }
}

pub(super) fn matmul(a: &Args) -> Result<TensorType, String> {
    let (x, y) = (a.ty(0), a.ty(1));
    want_numeric("a", x)?;
    want_same_dtype("a and b", x, y)?;
    want_min_rank("a", x, 1)?;
    want_min_rank("b", y, 1)?;
    // Numpy: a 1-D `a` is a row vector [1, K] and a 1-D `b` a column vector [K, 1]; the added dim is
    // dropped from the result.
    let xd: Vec<Dim> = if x.rank() == 1 { vec![Dim::Static(1), x.shape.0[0].clone()] } else { x.shape.0.clone() };
    let yd: Vec<Dim> = if y.rank() == 1 { vec![y.shape.0[0].clone(), Dim::Static(1)] } else { y.shape.0.clone() };
    let (ka, kb) = (&xd[xd.len() - 1], &yd[yd.len() - 2]);
    if merge_dims(ka, kb).is_none() {
        return Err(format!(
            "the contracted dims differ: a {} has {ka} columns but b {} has {kb} rows",
            x.shape, y.shape
        ));
    }
    let batch = broadcast_shapes(&Shape(xd[..xd.len() - 2].to_vec()), &Shape(yd[..yd.len() - 2].to_vec()))
        .map_err(|m| format!("batch dims: {m}"))?;
    let mut dims = batch.0;
    if x.rank() > 1 {
        dims.push(xd[xd.len() - 2].clone());
    }
    if y.rank() > 1 {
        dims.push(yd[yd.len() - 1].clone());
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn where_(a: &Args) -> Result<TensorType, String> {
    let (c, x, y) = (a.ty(0), a.ty(1), a.ty(2));
    want_bool("the condition", c)?;
    want_same_dtype("the two branches", x, y)?;
    let s = broadcast_shapes(&c.shape, &x.shape)?;
    let s = broadcast_shapes(&s, &y.shape)?;
    Ok(TensorType::new(x.dtype, s))
}

pub(super) fn cast(to: DType, a: &Args) -> Result<TensorType, String> {
    if to.is_quantized() {
        return Err(format!("cannot cast to quantized dtype {to}; quantized values exist only as stored weights"));
    }
    if to == DType::Str {
        return Err(format!("casting {} to strings is not supported", a.ty(0)));
    }
    Ok(TensorType::new(to, a.ty(0).shape.clone()))
}

/// The shape left after reducing `axes` (all of them when `keepdims`, they become 1).
fn reduced(shape: &Shape, axes: &[usize], keepdims: bool) -> Shape {
    let mut dims = Vec::new();
    for (i, d) in shape.0.iter().enumerate() {
        if !axes.contains(&i) {
            dims.push(d.clone());
        } else if keepdims {
            dims.push(Dim::Static(1));
        }
    }
    Shape(dims)
}

pub(super) fn argmax(axis: i64, keepdims: bool, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    want_numeric("x", x)?;
    let ax = normalize_axis(axis, x.rank(), "axis")?;
    if x.shape.0[ax] == Dim::Static(0) {
        return Err(format!("axis {axis} of x {} is empty, so it has no maximum", x.shape));
    }
    Ok(TensorType::new(DType::I64, reduced(&x.shape, &[ax], keepdims)))
}

pub(super) fn transpose(perm: &[i64], a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let r = x.rank();
    let mut seen = vec![false; r];
    let is_perm = perm.len() == r
        && perm.iter().all(|&p| {
            usize::try_from(p).ok().filter(|&p| p < r).is_some_and(|p| !std::mem::replace(&mut seen[p], true))
        });
    if !is_perm {
        return Err(format!("perm {perm:?} is not a permutation of 0..{r} (x is {x})"));
    }
    let dims = perm.iter().map(|&p| x.shape.0[p as usize].clone()).collect();
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn squeeze(axes: &[i64], a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    let drop: Vec<usize> = if axes.is_empty() {
        // ONNX: no axes squeezes every dim of size 1, which is only decidable when all dims are known.
        if let Some(d) = x.shape.0.iter().find(|d| d.as_static().is_none()) {
            return Err(format!(
                "without axes every dim of size 1 is removed, so every dim must be static, but x {} has dim {d}",
                x.shape
            ));
        }
        (0..x.rank()).filter(|&i| x.shape.0[i] == Dim::Static(1)).collect()
    } else {
        let n = normalize_axes(axes, x.rank(), "axis")?;
        for &i in &n {
            if let Dim::Static(d) = x.shape.0[i]
                && d != 1
            {
                return Err(format!("cannot squeeze axis {i} of x {}: its size is {d}, not 1", x.shape));
            }
        }
        n
    };
    Ok(TensorType::new(x.dtype, reduced(&x.shape, &drop, false)))
}

pub(super) fn unsqueeze(axes: &[i64], a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    if axes.is_empty() {
        return Err("axes must not be empty".into());
    }
    let out_rank = x.rank() + axes.len();
    let new = normalize_axes(axes, out_rank, "axis")?;
    let mut rest = x.shape.0.iter();
    let dims = (0..out_rank)
        .map(|i| if new.contains(&i) { Dim::Static(1) } else { rest.next().expect("counts add up").clone() })
        .collect();
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn concat(axis: i64, a: &Args) -> Result<TensorType, String> {
    let first = a.ty(0);
    let ax = normalize_axis(axis, first.rank(), "axis")?;
    let mut dims = first.shape.0.clone();
    let mut total: Option<u64> = first.shape.0[ax].as_static();
    for i in 1..a.len() {
        let t = a.ty(i);
        if t.dtype != first.dtype {
            return Err(format!("input {i} is {t} but input 0 is {first}; all inputs must share one dtype"));
        }
        if t.rank() != first.rank() {
            return Err(format!("input {i} is {t} but input 0 is {first}; all inputs must have the same rank"));
        }
        for (j, d) in t.shape.0.iter().enumerate() {
            if j == ax {
                total = total.zip(d.as_static()).and_then(|(x, y)| x.checked_add(y));
            } else {
                dims[j] = merge_dims(&dims[j], d).ok_or_else(|| {
                    format!(
                        "input {i} {} differs from the others in dim {j} ({d} vs {}), which is not the concat axis",
                        t.shape, dims[j]
                    )
                })?;
            }
        }
    }
    // A single input keeps its (possibly symbolic) dim; a sum of non-static dims is not a dim we can name.
    if a.len() > 1 {
        dims[ax] = total.map_or(Dim::Unknown, Dim::Static);
    }
    Ok(TensorType::new(first.dtype, Shape(dims)))
}

pub(super) fn split(axis: i64, sizes: &[i64], a: &Args) -> Result<Vec<TensorType>, String> {
    let x = a.ty(0);
    let ax = normalize_axis(axis, x.rank(), "axis")?;
    if sizes.is_empty() {
        return Err("sizes must not be empty (one result per entry)".into());
    }
    if let Some(s) = sizes.iter().find(|&&s| s < 0) {
        return Err(format!("sizes {sizes:?} contain the negative size {s}"));
    }
    if let Dim::Static(n) = x.shape.0[ax] {
        let sum: i128 = sizes.iter().map(|&s| s as i128).sum();
        if sum != n as i128 {
            return Err(format!("sizes {sizes:?} add up to {sum} but axis {ax} of x {} has size {n}", x.shape));
        }
    }
    Ok(sizes
        .iter()
        .map(|&s| {
            let mut dims = x.shape.0.clone();
            dims[ax] = Dim::Static(s as u64);
            TensorType::new(x.dtype, Shape(dims))
        })
        .collect())
}

pub(super) fn gather(axis: i64, a: &Args) -> Result<TensorType, String> {
    let (x, idx) = (a.ty(0), a.ty(1));
    want_int("indices", idx)?;
    let ax = normalize_axis(axis, x.rank(), "axis")?;
    if let (Some(values), Dim::Static(n)) = (a.value(1), &x.shape.0[ax]) {
        let n = *n as i128;
        if let Some(bad) = values.to_i64_vec().into_iter().find(|&i| (i as i128) < -n || (i as i128) >= n) {
            return Err(format!("index {bad} is out of range for axis {ax} of x {}, of size {n}", x.shape));
        }
    }
    let mut dims = x.shape.0[..ax].to_vec();
    dims.extend(idx.shape.0.iter().cloned());
    dims.extend(x.shape.0[ax + 1..].iter().cloned());
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn cumsum(axis: i64, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    want_numeric("x", x)?;
    normalize_axis(axis, x.rank(), "axis")?;
    Ok(x.clone())
}

pub(super) fn unary(u: UnaryOp, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    match u {
        UnaryOp::Not => {
            want_bool("x", x)?;
            Ok(x.clone())
        }
        UnaryOp::BitNot => {
            want_int("x", x)?;
            Ok(x.clone())
        }
        UnaryOp::IsNan | UnaryOp::IsInf => {
            want_float("x", x)?;
            Ok(TensorType::new(DType::Bool, x.shape.clone()))
        }
        UnaryOp::Neg => {
            if x.dtype.is_float() || matches!(x.dtype, DType::I64 | DType::I32 | DType::I16 | DType::I8) {
                Ok(x.clone())
            } else {
                Err(format!("x must be a float or signed integer tensor, but it is {x}"))
            }
        }
        UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Relu => {
            want_numeric("x", x)?;
            Ok(x.clone())
        }
        UnaryOp::Exp
        | UnaryOp::Log
        | UnaryOp::Sqrt
        | UnaryOp::Rsqrt
        | UnaryOp::Reciprocal
        | UnaryOp::Sin
        | UnaryOp::Cos
        | UnaryOp::Tanh
        | UnaryOp::Sigmoid
        | UnaryOp::Erf
        | UnaryOp::Floor
        | UnaryOp::Ceil
        | UnaryOp::Round
        | UnaryOp::Tan
        | UnaryOp::Asin
        | UnaryOp::Acos
        | UnaryOp::Atan
        | UnaryOp::Sinh
        | UnaryOp::Cosh
        | UnaryOp::Asinh
        | UnaryOp::Acosh
        | UnaryOp::Atanh => {
            want_float("x", x)?;
            Ok(x.clone())
        }
    }
}

pub(super) fn binary(b: BinaryOp, a: &Args) -> Result<TensorType, String> {
    let (x, y) = (a.ty(0), a.ty(1));
    match b {
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
            want_bool("a", x)?;
            want_bool("b", y)?;
        }
        BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::ShiftLeft | BinaryOp::ShiftRight => {
            want_int("a", x)?;
            want_same_dtype("a and b", x, y)?;
        }
        _ => {
            want_numeric("a", x)?;
            want_same_dtype("a and b", x, y)?;
        }
    }
    Ok(TensorType::new(x.dtype, broadcast_shapes(&x.shape, &y.shape)?))
}

pub(super) fn compare(c: CompareOp, a: &Args) -> Result<TensorType, String> {
    let (x, y) = (a.ty(0), a.ty(1));
    if c != CompareOp::Equal {
        want_numeric("a", x)?;
    }
    want_same_dtype("a and b", x, y)?;
    Ok(TensorType::new(DType::Bool, broadcast_shapes(&x.shape, &y.shape)?))
}

pub(super) fn reduce(axes: &[i64], keepdims: bool, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    want_numeric("x", x)?;
    let axes = if axes.is_empty() { (0..x.rank()).collect() } else { normalize_axes(axes, x.rank(), "axis")? };
    Ok(TensorType::new(x.dtype, reduced(&x.shape, &axes, keepdims)))
}
