//! Reductions and ops along one axis: `Reduce*` (with `axes` as attribute or, from opset 13/18, as
//! input, and `noop_with_empty_axes`), the composite reductions (L1, L2, LogSum, LogSumExp,
//! SumSquare), `ArgMax`/`ArgMin` (with `select_last_index`), `CumSum`, `CumProd`, and `Softmax`, `LogSoftmax`
//! and `Hardmax` (before opset 13 these work on the input flattened to 2-D at `axis`).

use kiln_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, UnaryOp, ValueId};

use super::shape::flatten_shape;
use super::{NodeCx, R, bad};

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let r = match op {
        "ReduceSum" => reduce(cx, op, 13),
        "ReduceMean" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2" | "ReduceLogSum"
        | "ReduceLogSumExp" | "ReduceSumSquare" => reduce(cx, op, 18),
        "ArgMax" => arg(cx, false),
        "ArgMin" => arg(cx, true),
        "CumSum" => cumulative(cx, false),
        "CumProd" => cumulative(cx, true),
        "TopK" => topk(cx),
        "Softmax" => softmax_like(cx, Normalizer::Softmax),
        "LogSoftmax" => softmax_like(cx, Normalizer::LogSoftmax),
        "Hardmax" => softmax_like(cx, Normalizer::Hardmax),
        _ => return None,
    };
    Some(r)
}

fn reduce(cx: &mut NodeCx, op: &str, axes_input_since: i64) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let keepdims = cx.attr_i("keepdims", 1) != 0;
    let axes = if cx.opset >= axes_input_since {
        match cx.opt_input(1) {
            Some(a) => cx.known_ints(a, "axes")?,
            None => Vec::new(),
        }
    } else {
        cx.attr_ints("axes").unwrap_or_default()
    };
    if axes.is_empty() && cx.attr_i("noop_with_empty_axes", 0) != 0 {
        return Ok(vec![x]);
    }
    let red = |kind| Op::Reduce { kind, axes: axes.clone(), keepdims };
    if cx.dtype(x) == DType::Bool && matches!(op, "ReduceMax" | "ReduceMin") {
        // On bools max is "any" and min is "all": the same reductions over 0/1.
        let kind = if op == "ReduceMax" { ReduceKind::Max } else { ReduceKind::Min };
        let u = cx.cast(x, DType::U8)?;
        let r = cx.push(red(kind), &[u])?;
        return Ok(vec![cx.cast(r, DType::Bool)?]);
    }
    let y = match op {
        "ReduceSum" => cx.push(red(ReduceKind::Sum), &[x])?,
        "ReduceMean" => cx.push(red(ReduceKind::Mean), &[x])?,
        "ReduceMax" => cx.push(red(ReduceKind::Max), &[x])?,
        "ReduceMin" => cx.push(red(ReduceKind::Min), &[x])?,
        "ReduceProd" => cx.push(red(ReduceKind::Prod), &[x])?,
        "ReduceL1" => {
            let a = cx.push(Op::Unary(UnaryOp::Abs), &[x])?;
            cx.push(red(ReduceKind::Sum), &[a])?
        }
        "ReduceL2" | "ReduceSumSquare" => {
            let sq = cx.push(Op::Binary(BinaryOp::Mul), &[x, x])?;
            let s = cx.push(red(ReduceKind::Sum), &[sq])?;
            if op == "ReduceL2" { sqrt_any(cx, s)? } else { s }
        }
        "ReduceLogSum" => {
            let s = cx.push(red(ReduceKind::Sum), &[x])?;
            cx.push(Op::Unary(UnaryOp::Log), &[s])?
        }
        "ReduceLogSumExp" => {
            let e = cx.push(Op::Unary(UnaryOp::Exp), &[x])?;
            let s = cx.push(red(ReduceKind::Sum), &[e])?;
            cx.push(Op::Unary(UnaryOp::Log), &[s])?
        }
        _ => unreachable!("dispatched on the reduce ops above"),
    };
    Ok(vec![y])
}

/// Square root; integers go through f64 and are truncated back (as the reference does).
fn sqrt_any(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let dtype = cx.dtype(x);
    if dtype.is_float() {
        return cx.push(Op::Unary(UnaryOp::Sqrt), &[x]);
    }
    let f = cx.cast(x, DType::F64)?;
    let r = cx.push(Op::Unary(UnaryOp::Sqrt), &[f])?;
    cx.cast(r, dtype)
}

/// `ArgMax`, or `ArgMin` as the argmax of the negation; `select_last_index` reverses the axis first.
fn arg(cx: &mut NodeCx, min: bool) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let rank = cx.rank(x);
    let axis = cx.axis(cx.attr_i("axis", 0), rank)?;
    let keepdims = cx.attr_i("keepdims", 1) != 0;
    let last = cx.attr_i("select_last_index", 0) != 0;
    let mut v = x;
    if min {
        if !cx.dtype(v).is_float() {
            v = cx.cast(v, DType::I64)?;
        }
        v = cx.push(Op::Unary(UnaryOp::Neg), &[v])?;
    }
    if last {
        let (s, e, a, st) =
            (cx.const_i64(&[-1]), cx.const_i64(&[i64::MIN]), cx.const_i64(&[axis as i64]), cx.const_i64(&[-1]));
        v = cx.push(Op::Slice {}, &[v, s, e, a, st])?;
    }
    let idx = cx.push(Op::ArgMax { axis: axis as i64, keepdims }, &[v])?;
    if !last {
        return Ok(vec![idx]);
    }
    // Index i in the reversed axis is n - 1 - i in the original.
    let n = cx.dim_of(x, axis)?;
    let one = cx.scalar_i64(1);
    let n1 = cx.push(Op::Binary(BinaryOp::Sub), &[n, one])?;
    Ok(vec![cx.push(Op::Binary(BinaryOp::Sub), &[n1, idx])?])
}

fn cumulative(cx: &mut NodeCx, product: bool) -> R<Vec<ValueId>> {
    let (x, a) = (cx.input(0)?, cx.input(1)?);
    let axis = match cx.known_ints(a, "axis")?.as_slice() {
        [axis] => *axis,
        other => return bad(format!("axis must be one integer, not {other:?}")),
    };
    let exclusive = cx.attr_i("exclusive", 0) != 0;
    let reverse = cx.attr_i("reverse", 0) != 0;
    let op = if product { Op::CumProd { axis, exclusive, reverse } } else { Op::CumSum { axis, exclusive, reverse } };
    Ok(vec![cx.push(op, &[x])?])
}

fn topk(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let k = if cx.opset < 10 { cx.const_i64(&[cx.attr_i("k", 0)]) } else { cx.input(1)? };
    let axis = cx.attr_i("axis", -1);
    let largest = cx.attr_i("largest", 1) != 0;
    cx.push_multi(Op::TopK { axis, largest }, &[x, k])
}

#[derive(Clone, Copy, PartialEq)]
enum Normalizer {
    Softmax,
    LogSoftmax,
    Hardmax,
}

fn softmax_like(cx: &mut NodeCx, kind: Normalizer) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let rank = cx.rank(x);
    if cx.opset >= 13 {
        let axis = cx.axis(cx.attr_i("axis", -1), rank)?;
        return Ok(vec![normalize(cx, kind, x, axis)?]);
    }
    // Before opset 13 the input is viewed as 2-D [prod(dims[..axis]), prod(dims[axis..])].
    let axis = cx.attr_i("axis", 1);
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    if axis < 0 || axis > rank as i64 {
        return bad(format!("axis {} is out of range for rank {rank}", cx.attr_i("axis", 1)));
    }
    let flat_shape = flatten_shape(cx, x, axis as usize)?;
    let flat = cx.push(Op::Reshape { allowzero: false }, &[x, flat_shape])?;
    let y = normalize(cx, kind, flat, 1)?;
    let shape = cx.shape_of(x)?;
    Ok(vec![cx.push(Op::Reshape { allowzero: false }, &[y, shape])?])
}

fn normalize(cx: &mut NodeCx, kind: Normalizer, x: ValueId, axis: usize) -> R<ValueId> {
    match kind {
        Normalizer::Softmax => cx.push(Op::Softmax { axis: axis as i64 }, &[x]),
        Normalizer::LogSoftmax => {
            // x - max - log(sum(exp(x - max))): no overflow, and exact for large negative inputs.
            let red = |kind| Op::Reduce { kind, axes: vec![axis as i64], keepdims: true };
            let m = cx.push(red(ReduceKind::Max), &[x])?;
            let y = cx.push(Op::Binary(BinaryOp::Sub), &[x, m])?;
            let e = cx.push(Op::Unary(UnaryOp::Exp), &[y])?;
            let s = cx.push(red(ReduceKind::Sum), &[e])?;
            let l = cx.push(Op::Unary(UnaryOp::Log), &[s])?;
            cx.push(Op::Binary(BinaryOp::Sub), &[y, l])
        }
        Normalizer::Hardmax => {
            let idx = cx.push(Op::ArgMax { axis: axis as i64, keepdims: true }, &[x])?;
            let n = cx.dim_of(x, axis)?;
            let (zero, one) = (cx.scalar_i64(0), cx.scalar_i64(1));
            let r = cx.push(Op::Range {}, &[zero, n, one])?;
            let trailing: Vec<i64> = (1..(cx.rank(x) - axis) as i64).collect();
            let r = if trailing.is_empty() { r } else { cx.push(Op::Unsqueeze { axes: trailing }, &[r])? };
            let hit = cx.push(Op::Compare(CompareOp::Equal), &[idx, r])?;
            let dtype = cx.dtype(x);
            cx.cast(hit, dtype)
        }
    }
}
