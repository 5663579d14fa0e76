//! The loss functions `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss`, composed as their
//! ONNX function bodies define them: the target class's (log-)probability picked with
//! `gather_elements`, class weights, `ignore_index`, and `none`/`sum`/`mean` reduction (the mean
//! weighted by the weights of the targets that count).

use kiln_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, UnaryOp, ValueId};

use super::{NodeCx, R, bad};

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let r = match op {
        "NegativeLogLikelihoodLoss" => (|| {
            let (x, t) = (cx.input(0)?, cx.input(1)?);
            Ok(vec![nll(cx, x, t, cx.opt_input(2))?])
        })(),
        "SoftmaxCrossEntropyLoss" => (|| {
            let (scores, labels) = (cx.input(0)?, cx.input(1)?);
            // log_softmax over the class axis 1, stable.
            let red = |kind| Op::Reduce { kind, axes: vec![1], keepdims: true };
            let m = cx.push(red(ReduceKind::Max), &[scores])?;
            let y = cx.push(Op::Binary(BinaryOp::Sub), &[scores, m])?;
            let e = cx.push(Op::Unary(UnaryOp::Exp), &[y])?;
            let s = cx.push(red(ReduceKind::Sum), &[e])?;
            let l = cx.push(Op::Unary(UnaryOp::Log), &[s])?;
            let log_prob = cx.push(Op::Binary(BinaryOp::Sub), &[y, l])?;
            let loss = nll(cx, log_prob, labels, cx.opt_input(2))?;
            Ok(vec![loss, log_prob])
        })(),
        _ => return None,
    };
    Some(r)
}

fn bin(cx: &mut NodeCx, op: BinaryOp, a: ValueId, b: ValueId) -> R<ValueId> {
    cx.push(Op::Binary(op), &[a, b])
}

/// `-x[n, target[n, ...], ...] * weight[target]`, reduced.
fn nll(cx: &mut NodeCx, x: ValueId, target: ValueId, weight: Option<ValueId>) -> R<ValueId> {
    let reduction = cx.attr_s("reduction", "mean");
    if !matches!(reduction.as_str(), "none" | "sum" | "mean") {
        return bad(format!("unknown reduction `{reduction}` (expected none, sum or mean)"));
    }
    let t = cx.cast(target, DType::I64)?;
    let ignored = if cx.has_attr("ignore_index") {
        let ii = cx.scalar_i64(cx.attr_i("ignore_index", 0));
        let hit = cx.push(Op::Compare(CompareOp::Equal), &[t, ii])?;
        Some(hit)
    } else {
        None
    };
    // Ignored targets may be out of range; they read class 0 and get weight 0.
    let t = match ignored {
        Some(hit) => {
            let zero = cx.scalar_i64(0);
            cx.push(Op::Where {}, &[hit, zero, t])?
        }
        None => t,
    };
    let idx = cx.push(Op::Unsqueeze { axes: vec![1] }, &[t])?;
    let picked = cx.push(Op::GatherElements { axis: 1 }, &[x, idx])?;
    let picked = cx.push(Op::Squeeze { axes: vec![1] }, &[picked])?;
    let neg = cx.push(Op::Unary(UnaryOp::Neg), &[picked])?;
    let w = match weight {
        Some(w) => Some(cx.push(Op::Gather { axis: 0 }, &[w, t])?),
        None => None,
    };
    let w = match (w, ignored) {
        (w, Some(hit)) => {
            let zero = cx.scalar_like(neg, 0.0)?;
            let base = match w {
                Some(w) => w,
                None => {
                    let shape = cx.shape_of(t)?;
                    let dtype = cx.dtype(neg);
                    cx.push(Op::ConstantOfShape { value: 1.0, dtype }, &[shape])?
                }
            };
            Some(cx.push(Op::Where {}, &[hit, zero, base])?)
        }
        (w, None) => w,
    };
    let loss = match w {
        Some(w) => bin(cx, BinaryOp::Mul, neg, w)?,
        None => neg,
    };
    let sum = |cx: &mut NodeCx, v| cx.push(Op::Reduce { kind: ReduceKind::Sum, axes: vec![], keepdims: false }, &[v]);
    match reduction.as_str() {
        "none" => Ok(loss),
        "sum" => sum(cx, loss),
        _ => match w {
            Some(w) => {
                let total = sum(cx, loss)?;
                let wsum = sum(cx, w)?;
                bin(cx, BinaryOp::Div, total, wsum)
            }
            None => cx.push(Op::Reduce { kind: ReduceKind::Mean, axes: vec![], keepdims: false }, &[loss]),
        },
    }
}
