//! Data-movement and shape ONNX ops: `Constant`, `Reshape`, `Flatten`, `Transpose`, `Squeeze`,
//! `Unsqueeze`, `Concat`, `Split`, `Slice`, `Gather`, `Expand`, `Tile`, `Shape`, `Size`,
//! `ConstantOfShape`, `Range`, `Trilu`, `GatherElements`, `ScatterElements`, `GatherND`, `ScatterND`,
//! `Pad`, `CenterCropPad`, `OneHot`, `EyeLike`, `DepthToSpace` and `SpaceToDepth`.
//!
//! Where an opset moved an attribute to an input (`axes` of Squeeze/Unsqueeze in 13, `split` in 13,
//! Slice's bounds in 10), both forms are read.

use kiln_ir::{BinaryOp, CompareOp, DType, Op, PadMode, ReduceKind, ScatterReduction, Tensor, ValueId};

use super::{NodeCx, R, bad, unsupported};
use crate::onnx::dtype::dtype_of;

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let r = match op {
        "Constant" => constant(cx),
        "Reshape" => reshape(cx),
        "Flatten" => flatten(cx),
        "Transpose" => transpose(cx),
        "Squeeze" => squeeze(cx, true),
        "Unsqueeze" => squeeze(cx, false),
        "Concat" => (|| {
            let inputs = cx.all_inputs()?;
            let axis = cx.attr_i("axis", 0);
            Ok(vec![cx.push(Op::Concat { axis }, &inputs)?])
        })(),
        "Split" => split(cx),
        "Slice" => slice(cx),
        "Gather" => (|| {
            let (x, i) = (cx.input(0)?, cx.input(1)?);
            Ok(vec![cx.push(Op::Gather { axis: cx.attr_i("axis", 0) }, &[x, i])?])
        })(),
        "Expand" => two(cx, Op::Expand {}),
        "Tile" => two(cx, Op::Tile {}),
        "Shape" => (|| {
            let x = cx.input(0)?;
            let start = cx.attr_i("start", 0);
            let end = if cx.has_attr("end") { Some(cx.attr_i("end", 0)) } else { None };
            Ok(vec![cx.push(Op::Shape { start, end }, &[x])?])
        })(),
        "Size" => (|| {
            let x = cx.input(0)?;
            let s = cx.shape_of(x)?;
            Ok(vec![cx.push(Op::Reduce { kind: ReduceKind::Prod, axes: vec![], keepdims: false }, &[s])?])
        })(),
        "ConstantOfShape" => constant_of_shape(cx),
        "Range" => (|| {
            let (s, l, d) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            Ok(vec![cx.push(Op::Range {}, &[s, l, d])?])
        })(),
        "Trilu" => (|| {
            let x = cx.input(0)?;
            let upper = cx.attr_i("upper", 1) != 0;
            let mut inputs = vec![x];
            if let Some(k) = cx.opt_input(1) {
                inputs.push(k);
            }
            Ok(vec![cx.push(Op::Trilu { upper }, &inputs)?])
        })(),
        "GatherElements" => (|| {
            let (x, i) = (cx.input(0)?, cx.input(1)?);
            Ok(vec![cx.push(Op::GatherElements { axis: cx.attr_i("axis", 0) }, &[x, i])?])
        })(),
        "ScatterElements" | "Scatter" => (|| {
            let (x, i, u) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let reduction = reduction(cx)?;
            Ok(vec![cx.push(Op::ScatterElements { axis: cx.attr_i("axis", 0), reduction }, &[x, i, u])?])
        })(),
        "GatherND" => (|| {
            let (x, i) = (cx.input(0)?, cx.input(1)?);
            Ok(vec![cx.push(Op::GatherNd { batch_dims: cx.attr_i("batch_dims", 0) }, &[x, i])?])
        })(),
        "ScatterND" => (|| {
            let (x, i, u) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let reduction = reduction(cx)?;
            Ok(vec![cx.push(Op::ScatterNd { reduction }, &[x, i, u])?])
        })(),
        "Pad" => pad(cx),
        "CenterCropPad" => center_crop_pad(cx),
        "OneHot" => one_hot(cx),
        "EyeLike" => eye_like(cx),
        "DepthToSpace" => depth_to_space(cx),
        "SpaceToDepth" => space_to_depth(cx),
        _ => return None,
    };
    Some(r)
}

fn reduction(cx: &NodeCx) -> R<ScatterReduction> {
    let r = cx.attr_s("reduction", "none");
    match ScatterReduction::from_name(&r) {
        Some(r) => Ok(r),
        None => bad(format!("unknown reduction `{r}` (expected none, add, mul, max or min)")),
    }
}

fn pad(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let mode_name = cx.attr_s("mode", "constant");
    let Some(mode) = PadMode::from_name(&mode_name) else {
        return bad(format!("unknown mode `{mode_name}` (expected constant, reflect, edge or wrap)"));
    };
    let rank = cx.rank(x) as i64;
    let (pads, value) = if cx.opset < 11 {
        let p = cx.attr_ints("pads").unwrap_or_default();
        let v = cx.scalar_like(x, cx.attr_f("value", 0.0) as f64)?;
        (cx.const_i64(&p), Some(v))
    } else {
        let pads = cx.input(1)?;
        let pads = match cx.opt_input(3) {
            Some(axes) => {
                // Pads for the listed axes only: spread them over every axis, zero elsewhere.
                let axes = cx.known_ints(axes, "axes")?;
                let given = cx.known_ints(pads, "pads")?;
                if given.len() != 2 * axes.len() {
                    return bad(format!("pads {given:?} must have two entries per axis of {axes:?}"));
                }
                let mut full = vec![0; 2 * rank as usize];
                for (i, &a) in axes.iter().enumerate() {
                    let a = cx.axis(a, rank as usize)?;
                    full[a] = given[i];
                    full[a + rank as usize] = given[i + axes.len()];
                }
                cx.const_i64(&full)
            }
            None => cx.cast(pads, DType::I64)?,
        };
        (pads, cx.opt_input(2))
    };
    let mut inputs = vec![x, pads];
    inputs.extend(value);
    Ok(vec![cx.push(Op::Pad { mode }, &inputs)?])
}

/// Crops (centred, the extra element at the end) or pads (centred, zeros) each listed axis to the
/// target size; needs static input dims and a known target.
fn center_crop_pad(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, shape) = (cx.input(0)?, cx.input(1)?);
    let Some(dims) = cx.ty(x).shape.as_static() else {
        return unsupported("an input whose shape is only known at run time");
    };
    let rank = dims.len();
    let target = cx.known_ints(shape, "shape")?;
    let axes: Vec<usize> = match cx.attr_ints("axes") {
        Some(a) => a.iter().map(|&a| cx.axis(a, rank)).collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    if target.len() != axes.len() {
        return bad(format!("shape {target:?} needs one entry per axis of {axes:?}"));
    }
    let mut pads = vec![0i64; 2 * rank];
    for (&a, &t) in axes.iter().zip(&target) {
        let diff = t - dims[a] as i64;
        // Cropping removes, and padding adds, the smaller half before (Rust's `/` truncates toward 0).
        let before = diff / 2;
        let after = diff - before;
        pads[a] = before;
        pads[a + rank] = after;
    }
    let pads = cx.const_i64(&pads);
    Ok(vec![cx.push(Op::Pad { mode: PadMode::Constant }, &[x, pads])?])
}

fn two(cx: &mut NodeCx, op: Op) -> R<Vec<ValueId>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    Ok(vec![cx.push(op, &[a, b])?])
}

fn constant(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let t = if let Some(t) = cx.attr_tensor("value")? {
        t
    } else if cx.has_attr("value_float") {
        Tensor::scalar_f32(cx.attr_f("value_float", 0.0))
    } else if let Some(v) = cx.attr_floats("value_floats").filter(|_| cx.has_attr("value_floats")) {
        Tensor::f32(vec![v.len()], v).expect("1-D")
    } else if cx.has_attr("value_int") {
        Tensor::scalar_i64(cx.attr_i("value_int", 0))
    } else if let Some(v) = cx.attr_ints("value_ints") {
        Tensor::i64(vec![v.len()], v).expect("1-D")
    } else if cx.has_attr("sparse_value") {
        return unsupported("a sparse `value`");
    } else if cx.has_attr("value_string") || cx.has_attr("value_strings") {
        return unsupported("string constants");
    } else {
        return bad("Constant needs one of value, value_float(s), value_int(s)");
    };
    Ok(vec![cx.constant(t)])
}

fn reshape(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let shape = if cx.opset < 5 {
        let s = cx.attr_ints("shape").unwrap_or_default();
        cx.const_i64(&s)
    } else {
        cx.input(1)?
    };
    let allowzero = cx.attr_i("allowzero", 0) != 0;
    Ok(vec![cx.push(Op::Reshape { allowzero }, &[x, shape])?])
}

/// `[prod(dims[..axis]), prod(dims[axis..])]`, computed from `Shape` so dynamic dims work.
fn flatten(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let rank = cx.rank(x);
    let axis = cx.attr_i("axis", 1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    if axis < 0 || axis > rank as i64 {
        return bad(format!("axis {} is out of range for rank {rank}", cx.attr_i("axis", 1)));
    }
    let target = flatten_shape(cx, x, axis as usize)?;
    Ok(vec![cx.push(Op::Reshape { allowzero: false }, &[x, target])?])
}

/// The 2-D shape `[prod(dims[..axis]), prod(dims[axis..])]` of `x` as an i64 value.
pub fn flatten_shape(cx: &mut NodeCx, x: ValueId, axis: usize) -> R<ValueId> {
    let s = cx.shape_of(x)?;
    let rank = cx.rank(x) as i64;
    let mut parts = Vec::new();
    for (start, end) in [(0, axis as i64), (axis as i64, rank)] {
        let starts = cx.const_i64(&[start]);
        let ends = cx.const_i64(&[end]);
        let piece = cx.push(Op::Slice {}, &[s, starts, ends])?;
        // The product of no dims is 1, which reduce_prod gives for an empty input.
        parts.push(cx.push(Op::Reduce { kind: ReduceKind::Prod, axes: vec![0], keepdims: true }, &[piece])?);
    }
    cx.push(Op::Concat { axis: 0 }, &parts)
}

fn transpose(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let perm = cx.attr_ints("perm").unwrap_or_else(|| (0..cx.rank(x) as i64).rev().collect());
    Ok(vec![cx.push(Op::Transpose { perm }, &[x])?])
}

fn squeeze(cx: &mut NodeCx, squeeze: bool) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let axes = if cx.opset < 13 {
        cx.attr_ints("axes").unwrap_or_default()
    } else {
        match cx.opt_input(1) {
            Some(a) => cx.known_ints(a, "axes")?,
            None => Vec::new(),
        }
    };
    let op = if squeeze { Op::Squeeze { axes } } else { Op::Unsqueeze { axes } };
    Ok(vec![cx.push(op, &[x])?])
}

fn split(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let rank = cx.rank(x);
    let axis = cx.axis(cx.attr_i("axis", 0), rank)?;
    let given = if cx.opset < 13 {
        cx.attr_ints("split")
    } else {
        match cx.opt_input(1) {
            Some(s) => Some(cx.known_ints(s, "split")?),
            None => None,
        }
    };
    let sizes = match given {
        Some(s) if !s.is_empty() => s,
        _ => {
            let Some(dim) = cx.ty(x).shape.dims()[axis].as_static() else {
                return unsupported("an even split of a dim whose size is only known at run time");
            };
            let parts = if cx.has_attr("num_outputs") { cx.attr_i("num_outputs", 1) } else { cx.n_outputs() as i64 };
            if parts <= 0 {
                return bad(format!("cannot split into {parts} parts"));
            }
            // Opset 18: chunks of ceil(dim / parts), the last one smaller when it does not divide.
            let chunk = (dim as i64 + parts - 1) / parts;
            let mut sizes = Vec::new();
            let mut left = dim as i64;
            while sizes.len() < parts as usize {
                let s = chunk.min(left);
                sizes.push(s);
                left -= s;
            }
            sizes
        }
    };
    cx.push_multi(Op::Split { axis: axis as i64, sizes }, &[x])
}

fn slice(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    if cx.opset < 10 {
        let starts = cx.attr_ints("starts").unwrap_or_default();
        let ends = cx.attr_ints("ends").unwrap_or_default();
        let (s, e) = (cx.const_i64(&starts), cx.const_i64(&ends));
        let mut inputs = vec![x, s, e];
        if let Some(axes) = cx.attr_ints("axes") {
            inputs.push(cx.const_i64(&axes));
        }
        return Ok(vec![cx.push(Op::Slice {}, &inputs)?]);
    }
    let (s, e) = (cx.input(1)?, cx.input(2)?);
    let mut inputs = vec![x, s, e];
    let n = cx.ty(s).shape.dims().first().and_then(|d| d.as_static());
    match (cx.opt_input(3), cx.opt_input(4)) {
        (Some(a), Some(st)) => inputs.extend([a, st]),
        (Some(a), None) => inputs.push(a),
        (None, Some(st)) => {
            // Steps without axes: the axes are 0..n.
            let Some(n) = n else { return unsupported("steps without axes when starts has a run-time length") };
            let axes: Vec<i64> = (0..n as i64).collect();
            inputs.push(cx.const_i64(&axes));
            inputs.push(st);
        }
        (None, None) => {}
    }
    Ok(vec![cx.push(Op::Slice {}, &inputs)?])
}

fn constant_of_shape(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let shape = cx.input(0)?;
    let (value, dtype) = match cx.attr_tensor("value")? {
        Some(t) if t.len() == 1 => (t.to_f64_vec()[0], t.dtype()),
        Some(t) => return bad(format!("value must hold one element, not {}", t.ty())),
        None => (0.0, DType::F32),
    };
    Ok(vec![cx.push(Op::ConstantOfShape { value, dtype }, &[shape])?])
}

/// `where(unsqueeze(indices, axis) == range(depth), on, off)`, with negative indices counted from
/// the end.
fn one_hot(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (indices, depth, values) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let rank = cx.rank(indices);
    let axis = cx.axis(cx.attr_i("axis", -1), rank + 1)?;
    let idx = cx.cast(indices, DType::I64)?;
    let depth = cx.cast(depth, DType::I64)?;
    let depth = if cx.rank(depth) == 1 { cx.push(Op::Squeeze { axes: vec![0] }, &[depth])? } else { depth };
    let zero = cx.scalar_i64(0);
    let neg = cx.push(Op::Compare(CompareOp::Less), &[idx, zero])?;
    let wrapped = cx.push(Op::Binary(BinaryOp::Add), &[idx, depth])?;
    let idx = cx.push(Op::Where {}, &[neg, wrapped, idx])?;
    let one = cx.scalar_i64(1);
    let classes = cx.push(Op::Range {}, &[zero, depth, one])?;
    let trailing: Vec<i64> = (1..=(rank - axis) as i64).collect();
    let classes = if trailing.is_empty() { classes } else { cx.push(Op::Unsqueeze { axes: trailing }, &[classes])? };
    let idx = cx.push(Op::Unsqueeze { axes: vec![axis as i64] }, &[idx])?;
    let hit = cx.push(Op::Compare(CompareOp::Equal), &[idx, classes])?;
    let (i0, i1) = (cx.scalar_i64(0), cx.scalar_i64(1));
    let off = cx.push(Op::Gather { axis: 0 }, &[values, i0])?;
    let on = cx.push(Op::Gather { axis: 0 }, &[values, i1])?;
    Ok(vec![cx.push(Op::Where {}, &[hit, on, off])?])
}

fn eye_like(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    if cx.rank(x) != 2 {
        return bad(format!("input must be 2-D, not {}", cx.ty(x)));
    }
    let dtype = if cx.has_attr("dtype") { dtype_of(cx.attr_i("dtype", 1) as i32, "dtype")? } else { cx.dtype(x) };
    let k = cx.attr_i("k", 0);
    let (rows, cols) = (cx.dim_of(x, 0)?, cx.dim_of(x, 1)?);
    let (zero, one) = (cx.scalar_i64(0), cx.scalar_i64(1));
    let r = cx.push(Op::Range {}, &[zero, rows, one])?;
    let r = cx.push(Op::Unsqueeze { axes: vec![1] }, &[r])?;
    let c = cx.push(Op::Range {}, &[zero, cols, one])?;
    let diff = cx.push(Op::Binary(BinaryOp::Sub), &[c, r])?;
    let k = cx.scalar_i64(k);
    let eq = cx.push(Op::Compare(CompareOp::Equal), &[diff, k])?;
    Ok(vec![cx.cast(eq, dtype)?])
}

/// The static `[n, c, h, w]` of a 4-D input.
fn nchw(cx: &NodeCx, x: ValueId) -> R<[i64; 4]> {
    match cx.ty(x).shape.as_static().as_deref() {
        Some(&[n, c, h, w]) => Ok([n as i64, c as i64, h as i64, w as i64]),
        Some(_) => bad(format!("input must be 4-D, not {}", cx.ty(x))),
        None => unsupported("an input whose shape is only known at run time"),
    }
}

fn reshape_to(cx: &mut NodeCx, x: ValueId, dims: &[i64]) -> R<ValueId> {
    let s = cx.const_i64(dims);
    cx.push(Op::Reshape { allowzero: false }, &[x, s])
}

fn depth_to_space(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let [n, c, h, w] = nchw(cx, x)?;
    let b = cx.attr_i("blocksize", 1);
    if b <= 0 || c % (b * b) != 0 {
        return bad(format!("blocksize {b} does not divide the {c} channels into blocks"));
    }
    let crd = cx.attr_s("mode", "DCR") == "CRD";
    let (t, perm) = if crd {
        (reshape_to(cx, x, &[n, c / (b * b), b, b, h, w])?, vec![0, 1, 4, 2, 5, 3])
    } else {
        (reshape_to(cx, x, &[n, b, b, c / (b * b), h, w])?, vec![0, 3, 4, 1, 5, 2])
    };
    let t = cx.push(Op::Transpose { perm }, &[t])?;
    Ok(vec![reshape_to(cx, t, &[n, c / (b * b), h * b, w * b])?])
}

fn space_to_depth(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let [n, c, h, w] = nchw(cx, x)?;
    let b = cx.attr_i("blocksize", 1);
    if b <= 0 || h % b != 0 || w % b != 0 {
        return bad(format!("blocksize {b} does not divide the spatial dims {h}x{w}"));
    }
    let t = reshape_to(cx, x, &[n, c, h / b, b, w / b, b])?;
    let t = cx.push(Op::Transpose { perm: vec![0, 3, 5, 1, 2, 4] }, &[t])?;
    Ok(vec![reshape_to(cx, t, &[n, c * b * b, h / b, w / b])?])
}
