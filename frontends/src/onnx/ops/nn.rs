//! Neural-network ONNX ops: `MatMul`, `Gemm`, `Einsum`, and the normalisations (`LayerNormalization`,
//! `RMSNormalization`, `BatchNormalization`, `InstanceNormalization`, `GroupNormalization`,
//! `MeanVarianceNormalization`, `LpNormalization`).
//!
//! Layer and RMS normalisation of f32 tensors with full-size scales map onto kiln's model-level
//! `layer_norm` and `rms_norm`; every other form is composed of generic ops in the stash type, as the
//! ONNX function bodies define them.

use kiln_ir::{BinaryOp, DType, Op, ReduceKind, Shape, UnaryOp, ValueId};

use super::{NodeCx, R, bad, unsupported};
use crate::onnx::dtype::dtype_of;

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let r = match op {
        "MatMul" => (|| {
            let (a, b) = (cx.input(0)?, cx.input(1)?);
            Ok(vec![cx.push(Op::MatMul {}, &[a, b])?])
        })(),
        "Gemm" => gemm(cx),
        "Einsum" => (|| {
            let inputs = cx.all_inputs()?;
            let equation = cx.attr_s("equation", "");
            Ok(vec![cx.push(Op::Einsum { equation }, &inputs)?])
        })(),
        "LayerNormalization" => layer_norm(cx),
        "RMSNormalization" => rms_norm(cx),
        "BatchNormalization" => batch_norm(cx),
        "InstanceNormalization" => instance_norm(cx),
        "GroupNormalization" => group_norm(cx),
        "MeanVarianceNormalization" => mvn(cx),
        "LpNormalization" => lp_norm(cx),
        _ => return None,
    };
    Some(r)
}

fn bin(cx: &mut NodeCx, op: BinaryOp, a: ValueId, b: ValueId) -> R<ValueId> {
    cx.push(Op::Binary(op), &[a, b])
}

fn gemm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (mut a, mut b) = (cx.input(0)?, cx.input(1)?);
    if cx.attr_i("transA", 0) != 0 {
        a = cx.push(Op::Transpose { perm: vec![1, 0] }, &[a])?;
    }
    if cx.attr_i("transB", 0) != 0 {
        b = cx.push(Op::Transpose { perm: vec![1, 0] }, &[b])?;
    }
    let (alpha, beta) = (cx.attr_f("alpha", 1.0) as f64, cx.attr_f("beta", 1.0) as f64);
    let mut y = cx.push(Op::MatMul {}, &[a, b])?;
    if alpha != 1.0 {
        let s = cx.scalar_like(y, alpha)?;
        y = bin(cx, BinaryOp::Mul, y, s)?;
    }
    if let Some(mut c) = cx.opt_input(2) {
        if beta != 1.0 {
            let s = cx.scalar_like(c, beta)?;
            c = bin(cx, BinaryOp::Mul, c, s)?;
        }
        y = bin(cx, BinaryOp::Add, y, c)?;
    }
    Ok(vec![y])
}

/// The compute type of a normalisation: `stash_type` (float by default) for its statistics.
fn stash_type(cx: &NodeCx) -> R<DType> {
    Ok(dtype_of(cx.attr_i("stash_type", 1) as i32, "stash_type")?)
}

/// `(x - mean) * 1/sqrt(var + eps)` over `axes` (keepdims), returning (normalised, mean, inv_std_dev).
fn standardize(cx: &mut NodeCx, x: ValueId, axes: Vec<i64>, eps: f64) -> R<(ValueId, ValueId, ValueId)> {
    let red = |kind| Op::Reduce { kind, axes: axes.clone(), keepdims: true };
    let mean = cx.push(red(ReduceKind::Mean), &[x])?;
    let d = bin(cx, BinaryOp::Sub, x, mean)?;
    let sq = bin(cx, BinaryOp::Mul, d, d)?;
    let var = cx.push(red(ReduceKind::Mean), &[sq])?;
    let e = cx.scalar_like(x, eps)?;
    let ve = bin(cx, BinaryOp::Add, var, e)?;
    let sd = cx.push(Op::Unary(UnaryOp::Sqrt), &[ve])?;
    let inv = cx.push(Op::Unary(UnaryOp::Reciprocal), &[sd])?;
    Ok((bin(cx, BinaryOp::Mul, d, inv)?, mean, inv))
}

fn layer_norm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, scale, bias) = (cx.input(0)?, cx.input(1)?, cx.opt_input(2));
    let rank = cx.rank(x);
    let axis = cx.axis(cx.attr_i("axis", -1), rank)?;
    let eps = cx.attr_f("epsilon", 1e-5);
    let normalized = Shape(cx.ty(x).shape.dims()[axis..].to_vec());
    let full = |cx: &NodeCx, v: ValueId| cx.ty(v).shape == normalized && cx.dtype(v) == DType::F32;
    if cx.dtype(x) == DType::F32
        && stash_type(cx)? == DType::F32
        && cx.n_outputs() <= 1
        && full(cx, scale)
        && bias.is_none_or(|b| full(cx, b))
    {
        let mut inputs = vec![x, scale];
        inputs.extend(bias);
        return Ok(vec![cx.push(Op::LayerNorm { axis: axis as i64, eps }, &inputs)?]);
    }
    let dtype = cx.dtype(x);
    let xs = cx.cast(x, stash_type(cx)?)?;
    let axes: Vec<i64> = (axis as i64..rank as i64).collect();
    let (n, mean, inv) = standardize(cx, xs, axes, eps as f64)?;
    let n = cx.cast(n, dtype)?;
    let mut y = bin(cx, BinaryOp::Mul, n, scale)?;
    if let Some(b) = bias {
        y = bin(cx, BinaryOp::Add, y, b)?;
    }
    Ok(vec![y, mean, inv])
}

fn rms_norm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, scale) = (cx.input(0)?, cx.input(1)?);
    let rank = cx.rank(x);
    let axis = cx.axis(cx.attr_i("axis", -1), rank)?;
    let eps = cx.attr_f("epsilon", 1e-5);
    let last = cx.ty(x).shape.dims().last().cloned();
    if cx.dtype(x) == DType::F32
        && cx.dtype(scale) == DType::F32
        && stash_type(cx)? == DType::F32
        && axis + 1 == rank
        && cx.ty(scale).shape.dims().len() == 1
        && last.as_ref() == cx.ty(scale).shape.dims().first()
    {
        return Ok(vec![cx.push(Op::RmsNorm { eps, offset: 0.0 }, &[x, scale])?]);
    }
    let dtype = cx.dtype(x);
    let xs = cx.cast(x, stash_type(cx)?)?;
    let axes: Vec<i64> = (axis as i64..rank as i64).collect();
    let sq = bin(cx, BinaryOp::Mul, xs, xs)?;
    let ms = cx.push(Op::Reduce { kind: ReduceKind::Mean, axes, keepdims: true }, &[sq])?;
    let e = cx.scalar_like(xs, eps as f64)?;
    let me = bin(cx, BinaryOp::Add, ms, e)?;
    let rms = cx.push(Op::Unary(UnaryOp::Sqrt), &[me])?;
    let n = bin(cx, BinaryOp::Div, xs, rms)?;
    let n = cx.cast(n, dtype)?;
    Ok(vec![bin(cx, BinaryOp::Mul, n, scale)?])
}

/// `v[C]` reshaped to `[C, 1, ...]` so it broadcasts over the channel axis 1 of a rank-`rank` input.
fn per_channel(cx: &mut NodeCx, v: ValueId, rank: usize) -> R<ValueId> {
    let trailing: Vec<i64> = (1..rank as i64 - 1).collect();
    if trailing.is_empty() { Ok(v) } else { cx.push(Op::Unsqueeze { axes: trailing }, &[v]) }
}

fn batch_norm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let (scale, b, mean, var) = (cx.input(1)?, cx.input(2)?, cx.input(3)?, cx.input(4)?);
    if cx.attr_i("training_mode", 0) != 0 || cx.n_outputs() > 1 {
        return unsupported("training mode (running statistics outputs)");
    }
    let rank = cx.rank(x);
    let eps = cx.attr_f("epsilon", 1e-5) as f64;
    let [scale, b, mean, var] = [scale, b, mean, var].map(|v| per_channel(cx, v, rank));
    let (scale, b, mean, var) = (scale?, b?, mean?, var?);
    let e = cx.scalar_like(var, eps)?;
    let ve = bin(cx, BinaryOp::Add, var, e)?;
    let sd = cx.push(Op::Unary(UnaryOp::Sqrt), &[ve])?;
    let d = bin(cx, BinaryOp::Sub, x, mean)?;
    let n = bin(cx, BinaryOp::Div, d, sd)?;
    let y = bin(cx, BinaryOp::Mul, n, scale)?;
    Ok(vec![bin(cx, BinaryOp::Add, y, b)?])
}

fn instance_norm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, scale, b) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let rank = cx.rank(x);
    if rank < 3 {
        return bad(format!("input must have rank 3 or more, not {}", cx.ty(x)));
    }
    let eps = cx.attr_f("epsilon", 1e-5) as f64;
    let (n, _, _) = standardize(cx, x, (2..rank as i64).collect(), eps)?;
    let scale = per_channel(cx, scale, rank)?;
    let b = per_channel(cx, b, rank)?;
    let y = bin(cx, BinaryOp::Mul, n, scale)?;
    Ok(vec![bin(cx, BinaryOp::Add, y, b)?])
}

fn group_norm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, scale, b) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let rank = cx.rank(x);
    let groups = cx.attr_i("num_groups", 0);
    let eps = cx.attr_f("epsilon", 1e-5) as f64;
    let Some(c) = cx.ty(x).shape.dims().get(1).and_then(|d| d.as_static()) else {
        return unsupported("a channel count only known at run time");
    };
    if rank < 3 || groups <= 0 || c as i64 % groups != 0 {
        return bad(format!("{} channels of {} do not split into {groups} groups", c, cx.ty(x)));
    }
    let dtype = cx.dtype(x);
    let xs = cx.cast(x, stash_type(cx)?)?;
    // [N, G, C/G * spatial]: each group's elements on the last axis.
    let grouped_shape = cx.const_i64(&[0, groups, -1]);
    let g = cx.push(Op::Reshape { allowzero: false }, &[xs, grouped_shape])?;
    let (n, _, _) = standardize(cx, g, vec![2], eps)?;
    let shape = cx.shape_of(x)?;
    let n = cx.push(Op::Reshape { allowzero: false }, &[n, shape])?;
    let n = cx.cast(n, dtype)?;
    let per_group =
        cx.ty(scale).shape.dims().first().and_then(|d| d.as_static()) == Some(groups as u64) && groups as u64 != c;
    let (scale, b) = if per_group {
        // Opset 18 had one scale per group; repeat each over its channels.
        let reps = c as i64 / groups;
        let mut out = Vec::new();
        for v in [scale, b] {
            let u = cx.push(Op::Unsqueeze { axes: vec![1] }, &[v])?;
            let t = cx.const_i64(&[1, reps]);
            let t = cx.push(Op::Tile {}, &[u, t])?;
            let flat = cx.const_i64(&[c as i64]);
            out.push(cx.push(Op::Reshape { allowzero: false }, &[t, flat])?);
        }
        (out[0], out[1])
    } else {
        (scale, b)
    };
    let scale = per_channel(cx, scale, rank)?;
    let b = per_channel(cx, b, rank)?;
    let y = bin(cx, BinaryOp::Mul, n, scale)?;
    Ok(vec![bin(cx, BinaryOp::Add, y, b)?])
}

fn mvn(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let axes = cx.attr_ints("axes").unwrap_or_else(|| vec![0, 2, 3]);
    let red = |kind| Op::Reduce { kind, axes: axes.clone(), keepdims: true };
    let mean = cx.push(red(ReduceKind::Mean), &[x])?;
    let sq = bin(cx, BinaryOp::Mul, x, x)?;
    let mean_sq = cx.push(red(ReduceKind::Mean), &[sq])?;
    let m2 = bin(cx, BinaryOp::Mul, mean, mean)?;
    let var = bin(cx, BinaryOp::Sub, mean_sq, m2)?;
    let sd = cx.push(Op::Unary(UnaryOp::Sqrt), &[var])?;
    let e = cx.scalar_like(x, 1e-9)?;
    let sde = bin(cx, BinaryOp::Add, sd, e)?;
    let d = bin(cx, BinaryOp::Sub, x, mean)?;
    Ok(vec![bin(cx, BinaryOp::Div, d, sde)?])
}

fn lp_norm(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let axis = cx.attr_i("axis", -1);
    let red = Op::Reduce { kind: ReduceKind::Sum, axes: vec![axis], keepdims: true };
    let norm = match cx.attr_i("p", 2) {
        1 => {
            let a = cx.push(Op::Unary(UnaryOp::Abs), &[x])?;
            cx.push(red, &[a])?
        }
        2 => {
            let sq = bin(cx, BinaryOp::Mul, x, x)?;
            let s = cx.push(red, &[sq])?;
            cx.push(Op::Unary(UnaryOp::Sqrt), &[s])?
        }
        p => return bad(format!("p must be 1 or 2, not {p}")),
    };
    Ok(vec![bin(cx, BinaryOp::Div, x, norm)?])
}
