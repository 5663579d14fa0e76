//! Sliding-window ONNX ops: `Conv`, `MaxPool`, `AveragePool`, `LpPool` and the global pools, with
//! `auto_pad` resolved to explicit pads (which needs static spatial dims); and `Resize`/`Upsample`,
//! whose output sizes are resolved when the graph is imported.

use kiln_ir::{BinaryOp, NearestRounding, Op, PoolKind, ReduceKind, ResizeCoord, ResizeMode, UnaryOp, ValueId};

use super::{NodeCx, R, bad, unsupported};

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let r = match op {
        "Conv" => conv(cx),
        "MaxPool" => pool(cx, PoolKind::Max),
        "AveragePool" => pool(cx, PoolKind::Avg),
        "LpPool" => pool(cx, PoolKind::Lp),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool(cx, op),
        "Resize" | "Upsample" => resize(cx, op),
        _ => return None,
    };
    Some(r)
}

/// Explicit pads (begins then ends) for `auto_pad`, or the `pads` attribute.
fn resolve_pads(cx: &NodeCx, x: ValueId, kernel: &[i64], strides: &[i64], dilations: &[i64]) -> R<Vec<i64>> {
    let r = kernel.len();
    let auto = cx.attr_s("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => Ok(cx.attr_ints("pads").unwrap_or_else(|| vec![0; 2 * r])),
        "VALID" => Ok(vec![0; 2 * r]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let Some(dims) = cx.ty(x).shape.as_static() else {
                return unsupported("auto_pad SAME with spatial dims only known at run time");
            };
            if dims.len() != r + 2 {
                return bad(format!(
                    "the kernel has {r} spatial dims but the input {} has {}; the input must be [N, C, D1, ..., D{r}]",
                    cx.ty(x),
                    dims.len().saturating_sub(2)
                ));
            }
            let mut pads = vec![0; 2 * r];
            for i in 0..r {
                let n = dims[i + 2] as i64;
                let (s, d) = (strides.get(i).copied().unwrap_or(1), dilations.get(i).copied().unwrap_or(1));
                let span = (kernel[i] - 1) * d + 1;
                let total = (((n + s - 1) / s - 1) * s + span - n).max(0);
                let small = total / 2;
                let (b, e) = if auto == "SAME_UPPER" { (small, total - small) } else { (total - small, small) };
                pads[i] = b;
                pads[i + r] = e;
            }
            Ok(pads)
        }
        other => bad(format!("unknown auto_pad `{other}`")),
    }
}

fn conv(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, w) = (cx.input(0)?, cx.input(1)?);
    let kernel: Vec<i64> = match cx.attr_ints("kernel_shape") {
        Some(k) => k,
        None => match cx.ty(w).shape.as_static() {
            Some(d) if d.len() >= 3 => d[2..].iter().map(|&k| k as i64).collect(),
            _ => return unsupported("a kernel whose shape is only known at run time"),
        },
    };
    let r = kernel.len();
    let strides = cx.attr_ints("strides").unwrap_or_else(|| vec![1; r]);
    let dilations = cx.attr_ints("dilations").unwrap_or_else(|| vec![1; r]);
    let pads = resolve_pads(cx, x, &kernel, &strides, &dilations)?;
    let group = cx.attr_i("group", 1);
    let mut inputs = vec![x, w];
    inputs.extend(cx.opt_input(2));
    Ok(vec![cx.push(Op::Conv { strides, pads, dilations, group }, &inputs)?])
}

fn pool(cx: &mut NodeCx, kind: PoolKind) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    if cx.n_outputs() > 1 {
        return unsupported("the Indices output of MaxPool");
    }
    if cx.attr_i("storage_order", 0) != 0 {
        return unsupported("storage_order 1");
    }
    let Some(kernel) = cx.attr_ints("kernel_shape") else { return bad("kernel_shape is required") };
    let r = kernel.len();
    let strides = cx.attr_ints("strides").unwrap_or_else(|| vec![1; r]);
    let dilations = cx.attr_ints("dilations").unwrap_or_else(|| vec![1; r]);
    let pads = resolve_pads(cx, x, &kernel, &strides, &dilations)?;
    let op = Op::Pool {
        kind,
        kernel,
        strides,
        pads,
        dilations,
        ceil_mode: cx.attr_i("ceil_mode", 0) != 0,
        count_include_pad: cx.attr_i("count_include_pad", 0) != 0,
        p: cx.attr_i("p", 2),
    };
    Ok(vec![cx.push(op, &[x])?])
}

/// A reduction over every spatial axis, keeping them as size 1.
fn global_pool(cx: &mut NodeCx, op: &str) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let axes: Vec<i64> = (2..cx.rank(x) as i64).collect();
    let red = |kind| Op::Reduce { kind, axes: axes.clone(), keepdims: true };
    let y = match op {
        "GlobalAveragePool" => cx.push(red(ReduceKind::Mean), &[x])?,
        "GlobalMaxPool" => cx.push(red(ReduceKind::Max), &[x])?,
        _ => {
            let p = cx.attr_i("p", 2);
            let a = cx.push(Op::Unary(UnaryOp::Abs), &[x])?;
            let pv = cx.scalar_like(x, p as f64)?;
            let ap = cx.push(Op::Binary(BinaryOp::Pow), &[a, pv])?;
            let s = cx.push(red(ReduceKind::Sum), &[ap])?;
            let inv = cx.scalar_like(x, 1.0 / p as f64)?;
            cx.push(Op::Binary(BinaryOp::Pow), &[s, inv])?
        }
    };
    Ok(vec![y])
}

fn resize(cx: &mut NodeCx, op: &str) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let Some(dims) = cx.ty(x).shape.as_static() else {
        return unsupported("resizing an input whose shape is only known at run time");
    };
    let rank = dims.len();
    if cx.attr_i("antialias", 0) != 0 {
        return unsupported("antialias");
    }
    let mode = match cx.attr_s("mode", "nearest").as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" => ResizeMode::Cubic,
        other => return bad(format!("unknown mode `{other}`")),
    };
    let legacy = op == "Upsample" || cx.opset < 11;
    let coord_name =
        if legacy { "asymmetric".to_string() } else { cx.attr_s("coordinate_transformation_mode", "half_pixel") };
    let Some(coord) = ResizeCoord::from_name(&coord_name) else {
        return unsupported(format!("coordinate_transformation_mode `{coord_name}`"));
    };
    // Upsample and Resize-10 round nearest coordinates down.
    let nearest_name = if legacy { "floor".to_string() } else { cx.attr_s("nearest_mode", "round_prefer_floor") };
    let Some(nearest) = NearestRounding::from_name(&nearest_name) else {
        return bad(format!("unknown nearest_mode `{nearest_name}`"));
    };
    let axes: Vec<usize> = match cx.attr_ints("axes") {
        Some(a) => a.iter().map(|&a| cx.axis(a, rank)).collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    let (scales_in, sizes_in) = if op == "Upsample" && cx.opset < 9 {
        (cx.attr_floats("scales").map(|v| v.into_iter().map(f64::from).collect()), None)
    } else if legacy {
        (Some(cx.known(cx.input(1)?, "scales")?.to_f64_vec()), None)
    } else {
        let scales = match cx.opt_input(2) {
            Some(s) => Some(cx.known(s, "scales")?.to_f64_vec()).filter(|v| !v.is_empty()),
            None => None,
        };
        let sizes = match cx.opt_input(3) {
            Some(s) => Some(cx.known_ints(s, "sizes")?).filter(|v| !v.is_empty()),
            None => None,
        };
        (scales, sizes)
    };
    let mut scales = vec![1.0f64; rank];
    let mut sizes: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    match (scales_in, sizes_in) {
        (_, Some(sz)) => {
            if sz.len() != axes.len() {
                return bad(format!("sizes {sz:?} need one entry per axis of {axes:?}"));
            }
            let ratios: Vec<f64> = axes.iter().zip(&sz).map(|(&a, &s)| s as f64 / dims[a] as f64).collect();
            let policy = cx.attr_s("keep_aspect_ratio_policy", "stretch");
            let common = match policy.as_str() {
                "stretch" => None,
                "not_larger" => Some(ratios.iter().cloned().fold(f64::INFINITY, f64::min)),
                "not_smaller" => Some(ratios.iter().cloned().fold(0.0, f64::max)),
                other => return bad(format!("unknown keep_aspect_ratio_policy `{other}`")),
            };
            for (i, &a) in axes.iter().enumerate() {
                match common {
                    Some(c) => {
                        scales[a] = c;
                        sizes[a] = (c * dims[a] as f64).round() as i64;
                    }
                    None => {
                        scales[a] = ratios[i];
                        sizes[a] = sz[i];
                    }
                }
            }
        }
        (Some(sc), None) => {
            if sc.len() != axes.len() {
                return bad(format!("scales {sc:?} need one entry per axis of {axes:?}"));
            }
            for (&a, &s) in axes.iter().zip(&sc) {
                scales[a] = s;
                sizes[a] = (dims[a] as f64 * s).floor() as i64;
            }
        }
        (None, None) => return bad("one of scales and sizes is required"),
    }
    let op = Op::Resize {
        mode,
        coord,
        nearest,
        cubic_a: cx.attr_f("cubic_coeff_a", -0.75) as f64,
        exclude_outside: cx.attr_i("exclude_outside", 0) != 0,
        scales,
        sizes,
    };
    Ok(vec![cx.push(op, &[x])?])
}
