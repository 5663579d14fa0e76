//! Elementwise ONNX ops: unary math, binary arithmetic with numpy broadcasting, comparisons and
//! logic, bitwise ops and shifts, the variadic `Sum`/`Mean`/`Max`/`Min`, `Where`, `Cast`/`CastLike`, `Clip`, `Mod`, `Pow`,
//! `IsInf`, and the identities (`Identity`, inference-mode `Dropout`).

use kiln_ir::{BinaryOp, CompareOp, DType, E8m0Rounding, Op, UnaryOp, ValueId};

use super::{NodeCx, R, bad, unsupported};
use crate::onnx::dtype::dtype_of;

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    let unary = Some;
    let u = match op {
        "Neg" => unary(UnaryOp::Neg),
        "Abs" => unary(UnaryOp::Abs),
        "Exp" => unary(UnaryOp::Exp),
        "Log" => unary(UnaryOp::Log),
        "Sqrt" => unary(UnaryOp::Sqrt),
        "Reciprocal" => unary(UnaryOp::Reciprocal),
        "Sin" => unary(UnaryOp::Sin),
        "Cos" => unary(UnaryOp::Cos),
        "Tan" => unary(UnaryOp::Tan),
        "Asin" => unary(UnaryOp::Asin),
        "Acos" => unary(UnaryOp::Acos),
        "Atan" => unary(UnaryOp::Atan),
        "Sinh" => unary(UnaryOp::Sinh),
        "Cosh" => unary(UnaryOp::Cosh),
        "Asinh" => unary(UnaryOp::Asinh),
        "Acosh" => unary(UnaryOp::Acosh),
        "Atanh" => unary(UnaryOp::Atanh),
        "Tanh" => unary(UnaryOp::Tanh),
        "Sigmoid" => unary(UnaryOp::Sigmoid),
        "Erf" => unary(UnaryOp::Erf),
        "Floor" => unary(UnaryOp::Floor),
        "Ceil" => unary(UnaryOp::Ceil),
        "Round" => unary(UnaryOp::Round),
        "Relu" => unary(UnaryOp::Relu),
        "Sign" => unary(UnaryOp::Sign),
        "Not" => unary(UnaryOp::Not),
        "IsNaN" => unary(UnaryOp::IsNan),
        "BitwiseNot" => unary(UnaryOp::BitNot),
        _ => None,
    };
    if let Some(u) = u {
        return Some(cx.input(0).and_then(|x| cx.push(Op::Unary(u), &[x])).map(|v| vec![v]));
    }
    let binary = match op {
        "Add" => Some(BinaryOp::Add),
        "Sub" => Some(BinaryOp::Sub),
        "Mul" => Some(BinaryOp::Mul),
        "Div" => Some(BinaryOp::Div),
        "And" => Some(BinaryOp::And),
        "Or" => Some(BinaryOp::Or),
        "Xor" => Some(BinaryOp::Xor),
        "BitwiseAnd" => Some(BinaryOp::BitAnd),
        "BitwiseOr" => Some(BinaryOp::BitOr),
        "BitwiseXor" => Some(BinaryOp::BitXor),
        _ => None,
    };
    if let Some(bop) = binary {
        return Some(binary_node(cx, bop).map(|v| vec![v]));
    }
    let compare = match op {
        "Equal" => Some(CompareOp::Equal),
        "Less" => Some(CompareOp::Less),
        "LessOrEqual" => Some(CompareOp::LessEqual),
        "Greater" => Some(CompareOp::Greater),
        "GreaterOrEqual" => Some(CompareOp::GreaterEqual),
        _ => None,
    };
    if let Some(c) = compare {
        return Some(
            (|| {
                let (a, b) = (cx.input(0)?, cx.input(1)?);
                cx.push(Op::Compare(c), &[a, b])
            })()
            .map(|v| vec![v]),
        );
    }
    let r = match op {
        "Identity" => cx.input(0).map(|x| vec![x]),
        "Sum" => variadic(cx, BinaryOp::Add),
        "Max" => variadic(cx, BinaryOp::Max),
        "Min" => variadic(cx, BinaryOp::Min),
        "Mean" => mean(cx),
        "Where" => (|| {
            let (c, a, b) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            cx.push(Op::Where {}, &[c, a, b]).map(|v| vec![v])
        })(),
        "Cast" => cast(cx),
        "CastLike" => (|| {
            let (x, like) = (cx.input(0)?, cx.input(1)?);
            let to = cx.dtype(like);
            cast_to(cx, x, to)
        })(),
        "Clip" => clip(cx),
        "Mod" => modulo(cx),
        "Pow" => pow(cx),
        "IsInf" => is_inf(cx),
        "Dropout" => dropout(cx),
        "BitShift" => (|| {
            let op = match cx.attr_s("direction", "").as_str() {
                "LEFT" => BinaryOp::ShiftLeft,
                "RIGHT" => BinaryOp::ShiftRight,
                other => return bad(format!("direction must be LEFT or RIGHT, not `{other}`")),
            };
            binary_node(cx, op).map(|v| vec![v])
        })(),
        _ => return None,
    };
    Some(r)
}

fn binary_node(cx: &mut NodeCx, op: BinaryOp) -> R<ValueId> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if cx.opset < 7 && cx.attr_i("broadcast", 0) != 0 && cx.has_attr("axis") {
        return unsupported("legacy broadcasting with `axis` (opset < 7)");
    }
    cx.push(Op::Binary(op), &[a, b])
}

/// Folds the inputs left to right with `op` (numpy broadcasting at every step).
fn variadic(cx: &mut NodeCx, op: BinaryOp) -> R<Vec<ValueId>> {
    let inputs = cx.all_inputs()?;
    let Some((&first, rest)) = inputs.split_first() else { return bad("needs at least one input") };
    let mut acc = first;
    for &x in rest {
        acc = cx.push(Op::Binary(op), &[acc, x])?;
    }
    Ok(vec![acc])
}

fn mean(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let sum = variadic(cx, BinaryOp::Add)?[0];
    let n = cx.n_inputs() as f64;
    let n = cx.scalar_like(sum, n)?;
    Ok(vec![cx.push(Op::Binary(BinaryOp::Div), &[sum, n])?])
}

fn cast(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let to = dtype_of(cx.attr_i("to", 0) as i32, "Cast's `to`")?;
    cast_to(cx, x, to)
}

/// `Cast`/`CastLike` of `x` to `to` with the node's `saturate` and `round_mode` (opset 19 and 24 on),
/// recorded on the IR cast only when they differ from the defaults, so ordinary casts print as before.
fn cast_to(cx: &mut NodeCx, x: ValueId, to: DType) -> R<Vec<ValueId>> {
    let saturate = (cx.attr_i("saturate", 1) == 0).then_some(false);
    let round_mode = match cx.attr_s("round_mode", "up").as_str() {
        "up" => None,
        other => Some(
            E8m0Rounding::from_name(other)
                .map_or_else(|| bad(format!("round_mode `{other}` is not one of up, down, nearest")), Ok)?,
        ),
    };
    if cx.dtype(x) == to {
        return Ok(vec![x]);
    }
    Ok(vec![cx.push(Op::Cast { to, saturate, round_mode }, &[x])?])
}

fn clip(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let (lo, hi) = if cx.opset < 11 {
        let lo = if cx.has_attr("min") { Some(cx.scalar_like(x, cx.attr_f("min", 0.0) as f64)?) } else { None };
        let hi = if cx.has_attr("max") { Some(cx.scalar_like(x, cx.attr_f("max", 0.0) as f64)?) } else { None };
        (lo, hi)
    } else {
        (cx.opt_input(1), cx.opt_input(2))
    };
    let mut y = x;
    if let Some(lo) = lo {
        y = cx.push(Op::Binary(BinaryOp::Max), &[y, lo])?;
    }
    if let Some(hi) = hi {
        y = cx.push(Op::Binary(BinaryOp::Min), &[y, hi])?;
    }
    Ok(vec![y])
}

/// `fmod = 1`: the remainder has the dividend's sign (C `fmod`); `fmod = 0`: the divisor's sign.
fn modulo(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let fmod = cx.attr_i("fmod", 0) != 0;
    let dtype = cx.dtype(a);
    if dtype.is_float() && !fmod {
        // numpy's mod: C fmod, moved by one divisor when it is non-zero and its sign differs from b's.
        let r = cx.push(Op::Binary(BinaryOp::Mod), &[a, b])?;
        let zero = cx.scalar_like(a, 0.0)?;
        let nonzero = cx.push(Op::Compare(CompareOp::Equal), &[r, zero])?;
        let nonzero = cx.push(Op::Unary(UnaryOp::Not), &[nonzero])?;
        let r_neg = cx.push(Op::Compare(CompareOp::Less), &[r, zero])?;
        let b_neg = cx.push(Op::Compare(CompareOp::Less), &[b, zero])?;
        let differ = cx.push(Op::Binary(BinaryOp::Xor), &[r_neg, b_neg])?;
        let shift = cx.push(Op::Binary(BinaryOp::And), &[nonzero, differ])?;
        let moved = cx.push(Op::Binary(BinaryOp::Add), &[r, b])?;
        return Ok(vec![cx.push(Op::Where {}, &[shift, moved, r])?]);
    }
    if dtype.is_float() || !fmod {
        // kiln's `mod` is C fmod on floats and takes the divisor's sign on integers.
        return Ok(vec![cx.push(Op::Binary(BinaryOp::Mod), &[a, b])?]);
    }
    // Integer fmod: a - trunc(a / b) * b, kiln's integer division truncating toward zero.
    let q = cx.push(Op::Binary(BinaryOp::Div), &[a, b])?;
    let qb = cx.push(Op::Binary(BinaryOp::Mul), &[q, b])?;
    Ok(vec![cx.push(Op::Binary(BinaryOp::Sub), &[a, qb])?])
}

/// ONNX lets the exponent have another numeric type than the base; it is cast to the base's type.
fn pow(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let base = cx.dtype(a);
    let e = cx.dtype(b);
    if base.is_int() && e.is_float() {
        // Computed in the exponent's float type, then truncated back like numpy's `astype`.
        let af = cx.cast(a, e)?;
        let p = cx.push(Op::Binary(BinaryOp::Pow), &[af, b])?;
        return Ok(vec![cx.cast(p, base)?]);
    }
    let b = cx.cast(b, base)?;
    Ok(vec![cx.push(Op::Binary(BinaryOp::Pow), &[a, b])?])
}

fn is_inf(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let inf = cx.push(Op::Unary(UnaryOp::IsInf), &[x])?;
    let (neg, pos) = (cx.attr_i("detect_negative", 1) != 0, cx.attr_i("detect_positive", 1) != 0);
    if neg && pos {
        return Ok(vec![inf]);
    }
    if !neg && !pos {
        let not_inf = cx.push(Op::Unary(UnaryOp::Not), &[inf])?;
        return Ok(vec![cx.push(Op::Binary(BinaryOp::And), &[inf, not_inf])?]);
    }
    let zero = cx.scalar_like(x, 0.0)?;
    let sign = if neg { CompareOp::Less } else { CompareOp::Greater };
    let side = cx.push(Op::Compare(sign), &[x, zero])?;
    Ok(vec![cx.push(Op::Binary(BinaryOp::And), &[inf, side])?])
}

/// Inference-mode dropout: the input unchanged, and an all-true mask.
fn dropout(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let x = cx.input(0)?;
    let training = match cx.opt_input(2) {
        Some(t) => cx.known(t, "training_mode")?.to_i64_vec().first().copied().unwrap_or(0) != 0,
        None => cx.opset < 7 && cx.attr_i("is_test", 0) == 0,
    };
    let ratio = match cx.opt_input(1) {
        Some(r) => cx.known(r, "ratio")?.to_f64_vec().first().copied().unwrap_or(0.5),
        None if cx.opset < 12 => cx.attr_f("ratio", 0.5) as f64,
        None => 0.5,
    };
    if training && ratio != 0.0 {
        return unsupported("training-mode dropout (random masks)");
    }
    let mut out = vec![x];
    if cx.wants_output(1) {
        let shape = cx.shape_of(x)?;
        out.push(cx.push(Op::ConstantOfShape { value: 1.0, dtype: DType::Bool }, &[shape])?);
    }
    Ok(out)
}
