//! Activation functions that ONNX defines as compositions (`LeakyRelu`, `Elu`, `Selu`, `Celu`,
//! `HardSigmoid`, `HardSwish`, `Softplus`, `Softsign`, `Mish`, `Swish`, `ThresholdedRelu`, `Shrink`,
//! `PRelu`), imported as the elementwise IR ops they are made of, and `Gelu` as kiln's `gelu`.

use kiln_ir::{BinaryOp, CompareOp, GeluApprox, Op, UnaryOp, ValueId};

use super::{NodeCx, R, bad};

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let f: fn(&mut NodeCx, ValueId) -> R<ValueId> = match op {
        "LeakyRelu" => leaky_relu,
        "Elu" => elu,
        "Selu" => selu,
        "Celu" => celu,
        "HardSigmoid" => |cx, x| {
            let (a, b) = (cx.attr_f("alpha", 0.2) as f64, cx.attr_f("beta", 0.5) as f64);
            hard_sigmoid(cx, x, a, b)
        },
        "HardSwish" => |cx, x| {
            let h = hard_sigmoid(cx, x, 1.0 / 6.0, 0.5)?;
            cx.push(Op::Binary(BinaryOp::Mul), &[x, h])
        },
        "Softplus" => softplus,
        "Softsign" => |cx, x| {
            let a = cx.push(Op::Unary(UnaryOp::Abs), &[x])?;
            let one = cx.scalar_like(x, 1.0)?;
            let d = cx.push(Op::Binary(BinaryOp::Add), &[a, one])?;
            cx.push(Op::Binary(BinaryOp::Div), &[x, d])
        },
        "Mish" => |cx, x| {
            let s = softplus(cx, x)?;
            let t = cx.push(Op::Unary(UnaryOp::Tanh), &[s])?;
            cx.push(Op::Binary(BinaryOp::Mul), &[x, t])
        },
        "Swish" => |cx, x| {
            let alpha = cx.attr_f("alpha", 1.0) as f64;
            let a = cx.scalar_like(x, alpha)?;
            let ax = cx.push(Op::Binary(BinaryOp::Mul), &[x, a])?;
            let s = cx.push(Op::Unary(UnaryOp::Sigmoid), &[ax])?;
            cx.push(Op::Binary(BinaryOp::Mul), &[x, s])
        },
        "ThresholdedRelu" => |cx, x| {
            let alpha = cx.attr_f("alpha", 1.0) as f64;
            let a = cx.scalar_like(x, alpha)?;
            let zero = cx.scalar_like(x, 0.0)?;
            let above = cx.push(Op::Compare(CompareOp::Greater), &[x, a])?;
            cx.push(Op::Where {}, &[above, x, zero])
        },
        "Shrink" => shrink,
        "PRelu" => |cx, x| {
            let slope = cx.input(1)?;
            let zero = cx.scalar_like(x, 0.0)?;
            let neg = cx.push(Op::Compare(CompareOp::Less), &[x, zero])?;
            let scaled = cx.push(Op::Binary(BinaryOp::Mul), &[x, slope])?;
            cx.push(Op::Where {}, &[neg, scaled, x])
        },
        "Gelu" => |cx, x| {
            let approximate = match cx.attr_s("approximate", "none").as_str() {
                "none" => GeluApprox::None,
                "tanh" => GeluApprox::Tanh,
                other => return bad(format!("unknown approximate `{other}` (expected none or tanh)")),
            };
            cx.push(Op::Gelu { approximate }, &[x])
        },
        _ => return None,
    };
    Some(cx.input(0).and_then(|x| f(cx, x)).map(|v| vec![v]))
}

/// `where(x < 0, neg(x), x)`.
fn negative_part(cx: &mut NodeCx, x: ValueId, neg: ValueId, strict: bool) -> R<ValueId> {
    let zero = cx.scalar_like(x, 0.0)?;
    let cmp = if strict { CompareOp::Less } else { CompareOp::LessEqual };
    let is_neg = cx.push(Op::Compare(cmp), &[x, zero])?;
    cx.push(Op::Where {}, &[is_neg, neg, x])
}

fn leaky_relu(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let alpha = cx.attr_f("alpha", 0.01) as f64;
    let a = cx.scalar_like(x, alpha)?;
    let ax = cx.push(Op::Binary(BinaryOp::Mul), &[x, a])?;
    negative_part(cx, x, ax, true)
}

/// `alpha * (exp(x) - 1)`.
fn exp_minus_one(cx: &mut NodeCx, x: ValueId, alpha: f64) -> R<ValueId> {
    let e = cx.push(Op::Unary(UnaryOp::Exp), &[x])?;
    let one = cx.scalar_like(x, 1.0)?;
    let em1 = cx.push(Op::Binary(BinaryOp::Sub), &[e, one])?;
    let a = cx.scalar_like(x, alpha)?;
    cx.push(Op::Binary(BinaryOp::Mul), &[a, em1])
}

fn elu(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let alpha = cx.attr_f("alpha", 1.0) as f64;
    let neg = exp_minus_one(cx, x, alpha)?;
    negative_part(cx, x, neg, true)
}

fn selu(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let alpha = cx.attr_f("alpha", 1.673_263_2) as f64;
    let gamma = cx.attr_f("gamma", 1.050_701) as f64;
    let neg = exp_minus_one(cx, x, alpha)?;
    let y = negative_part(cx, x, neg, false)?;
    let g = cx.scalar_like(x, gamma)?;
    cx.push(Op::Binary(BinaryOp::Mul), &[g, y])
}

/// `max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`.
fn celu(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let alpha = cx.attr_f("alpha", 1.0) as f64;
    let a = cx.scalar_like(x, alpha)?;
    let xa = cx.push(Op::Binary(BinaryOp::Div), &[x, a])?;
    let neg = exp_minus_one(cx, xa, alpha)?;
    let zero = cx.scalar_like(x, 0.0)?;
    let pos = cx.push(Op::Binary(BinaryOp::Max), &[x, zero])?;
    let neg = cx.push(Op::Binary(BinaryOp::Min), &[neg, zero])?;
    cx.push(Op::Binary(BinaryOp::Add), &[pos, neg])
}

/// `max(0, min(1, alpha * x + beta))`.
fn hard_sigmoid(cx: &mut NodeCx, x: ValueId, alpha: f64, beta: f64) -> R<ValueId> {
    let a = cx.scalar_like(x, alpha)?;
    let b = cx.scalar_like(x, beta)?;
    let ax = cx.push(Op::Binary(BinaryOp::Mul), &[x, a])?;
    let y = cx.push(Op::Binary(BinaryOp::Add), &[ax, b])?;
    let (zero, one) = (cx.scalar_like(x, 0.0)?, cx.scalar_like(x, 1.0)?);
    let y = cx.push(Op::Binary(BinaryOp::Min), &[y, one])?;
    cx.push(Op::Binary(BinaryOp::Max), &[y, zero])
}

/// `log(exp(x) + 1)`.
fn softplus(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let e = cx.push(Op::Unary(UnaryOp::Exp), &[x])?;
    let one = cx.scalar_like(x, 1.0)?;
    let s = cx.push(Op::Binary(BinaryOp::Add), &[e, one])?;
    cx.push(Op::Unary(UnaryOp::Log), &[s])
}

/// `x < -lambd: x + bias; x > lambd: x - bias; else 0`.
fn shrink(cx: &mut NodeCx, x: ValueId) -> R<ValueId> {
    let (bias, lambd) = (cx.attr_f("bias", 0.0) as f64, cx.attr_f("lambd", 0.5) as f64);
    let (b, l, nl, zero) =
        (cx.scalar_like(x, bias)?, cx.scalar_like(x, lambd)?, cx.scalar_like(x, -lambd)?, cx.scalar_like(x, 0.0)?);
    let low = cx.push(Op::Compare(CompareOp::Less), &[x, nl])?;
    let high = cx.push(Op::Compare(CompareOp::Greater), &[x, l])?;
    let plus = cx.push(Op::Binary(BinaryOp::Add), &[x, b])?;
    let minus = cx.push(Op::Binary(BinaryOp::Sub), &[x, b])?;
    let hi = cx.push(Op::Where {}, &[high, minus, zero])?;
    cx.push(Op::Where {}, &[low, plus, hi])
}
