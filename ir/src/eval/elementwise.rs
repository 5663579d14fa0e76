//! Elementwise ops: unary functions, binary arithmetic and logic, comparisons, `where` and `cast`.
//!
//! Binary ops, comparisons and `where` broadcast numpy-style. Integer arithmetic wraps in i64 (u64 in
//! u64) and is narrowed to the storage type; integer division truncates toward zero and division (or
//! `mod`) by zero is an error. Float `max`/`min` propagate NaN.

use super::compute::{Real, Values, concat_data, max_nan, min_nan, sigmoid};
use super::{Cx, EvalError, broadcast_indices, broadcast_shapes};
use crate::{BinaryOp, CompareOp, DType, LowBitCast, Tensor, TensorData, UnaryOp};

pub(super) fn unary(cx: Cx, u: UnaryOp, x: &Tensor) -> Result<Tensor, EvalError> {
    let dtype = x.dtype();
    let not_defined = || cx.err(format!("not defined on {} (input {})", dtype_class(dtype), x.ty()));
    let (out, out_dtype) = match (u, Values::widen(x.data())) {
        (UnaryOp::Not, Values::Bool(v)) => (Values::Bool(v.into_iter().map(|b| !b).collect()), DType::Bool),
        (UnaryOp::IsNan, Values::F32(v)) => (Values::Bool(v.into_iter().map(f32::is_nan).collect()), DType::Bool),
        (UnaryOp::IsNan, Values::F64(v)) => (Values::Bool(v.into_iter().map(f64::is_nan).collect()), DType::Bool),
        (UnaryOp::IsInf, Values::F32(v)) => (Values::Bool(v.into_iter().map(f32::is_infinite).collect()), DType::Bool),
        (UnaryOp::IsInf, Values::F64(v)) => (Values::Bool(v.into_iter().map(f64::is_infinite).collect()), DType::Bool),
        (UnaryOp::Not | UnaryOp::IsNan | UnaryOp::IsInf, _) => return Err(not_defined()),
        (UnaryOp::BitNot, Values::I64(v)) => (Values::I64(v.into_iter().map(|a| !a).collect()), dtype),
        (UnaryOp::BitNot, Values::U64(v)) => (Values::U64(v.into_iter().map(|a| !a).collect()), dtype),
        (UnaryOp::BitNot, _) => return Err(not_defined()),
        (_, Values::F32(v)) => (Values::F32(v.into_iter().map(|a| unary_float(u, a)).collect()), dtype),
        (_, Values::F64(v)) => (Values::F64(v.into_iter().map(|a| unary_float(u, a)).collect()), dtype),
        (_, Values::I64(v)) => {
            let f: fn(i64) -> i64 = match u {
                UnaryOp::Neg => i64::wrapping_neg,
                UnaryOp::Abs => i64::wrapping_abs,
                UnaryOp::Sign => i64::signum,
                UnaryOp::Relu => |a| a.max(0),
                _ => return Err(not_defined()),
            };
            (Values::I64(v.into_iter().map(f).collect()), dtype)
        }
        (_, Values::U64(v)) => {
            let f: fn(u64) -> u64 = match u {
                UnaryOp::Abs | UnaryOp::Relu => |a| a,
                UnaryOp::Sign => |a| u64::from(a != 0),
                _ => return Err(not_defined()),
            };
            (Values::U64(v.into_iter().map(f).collect()), dtype)
        }
        (_, Values::Bool(_)) => return Err(not_defined()),
    };
    Ok(cx.tensor(x.shape().to_vec(), out.narrow(out_dtype)))
}

/// A float unary function; the bool-valued and bool-only functions are handled by the caller.
fn unary_float<T: Real>(u: UnaryOp, a: T) -> T {
    match u {
        UnaryOp::Neg => -a,
        UnaryOp::Abs => a.abs(),
        UnaryOp::Exp => a.exp(),
        UnaryOp::Log => a.ln(),
        UnaryOp::Sqrt => a.sqrt(),
        UnaryOp::Rsqrt => T::ONE / a.sqrt(),
        UnaryOp::Reciprocal => T::ONE / a,
        UnaryOp::Sin => a.sin(),
        UnaryOp::Cos => a.cos(),
        UnaryOp::Tanh => a.tanh(),
        UnaryOp::Sigmoid => sigmoid(a),
        UnaryOp::Erf => a.erf(),
        UnaryOp::Tan => a.tan(),
        UnaryOp::Asin => a.asin(),
        UnaryOp::Acos => a.acos(),
        UnaryOp::Atan => a.atan(),
        UnaryOp::Sinh => a.sinh(),
        UnaryOp::Cosh => a.cosh(),
        UnaryOp::Asinh => a.asinh(),
        UnaryOp::Acosh => a.acosh(),
        UnaryOp::Atanh => a.atanh(),
        UnaryOp::Floor => a.floor(),
        UnaryOp::Ceil => a.ceil(),
        // ONNX Round: halves go to the even neighbour.
        UnaryOp::Round => a.round_ties_even(),
        // max_nan keeps NaN as NaN (relu(NaN) = NaN).
        UnaryOp::Relu => max_nan(a, T::ZERO),
        // Zero (of either sign) and NaN map to themselves, unlike `f32::signum`.
        UnaryOp::Sign => {
            if a > T::ZERO {
                T::ONE
            } else if a < T::ZERO {
                -T::ONE
            } else {
                a
            }
        }
        UnaryOp::Not | UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::BitNot => {
            unreachable!("{} is not a float-valued function", u.name())
        }
    }
}

fn dtype_class(dtype: DType) -> String {
    if dtype.is_float() {
        format!("float tensors ({dtype})")
    } else if dtype == DType::Bool {
        "bool tensors".to_string()
    } else {
        format!("integer tensors ({dtype})")
    }
}

/// The result shape of a broadcast pair and, for each result element, the flat index into each operand.
type PairIndices = (Vec<usize>, Vec<usize>, Vec<usize>);

/// Checks that two operands share a dtype and broadcast.
fn broadcast_pair(cx: Cx, a: &Tensor, b: &Tensor) -> Result<PairIndices, EvalError> {
    if a.dtype() != b.dtype() {
        return Err(cx.err(format!("operands must have the same dtype, got {} and {}", a.ty(), b.ty())));
    }
    let shape = broadcast_shapes(a.shape(), b.shape())
        .ok_or_else(|| cx.err(format!("shapes {:?} and {:?} do not broadcast", a.shape(), b.shape())))?;
    cx.numel(&shape)?;
    let ia = broadcast_indices(a.shape(), &shape);
    let ib = broadcast_indices(b.shape(), &shape);
    Ok((shape, ia, ib))
}

fn zip_with<T: Copy, U>(x: &[T], y: &[T], ia: &[usize], ib: &[usize], f: impl Fn(T, T) -> U) -> Vec<U> {
    ia.iter().zip(ib).map(|(&i, &j)| f(x[i], y[j])).collect()
}

pub(super) fn binary(cx: Cx, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, EvalError> {
    if let Some(result) = binary_f32_suffix(op, a, b) {
        return Ok(result);
    }
    let (shape, ia, ib) = broadcast_pair(cx, a, b)?;
    let dtype = a.dtype();
    let not_defined = || cx.err(format!("not defined on {} (inputs {} and {})", dtype_class(dtype), a.ty(), b.ty()));
    let logical = matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor);
    if logical != (dtype == DType::Bool) {
        return Err(not_defined());
    }
    let bitwise = matches!(
        op,
        BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::ShiftLeft | BinaryOp::ShiftRight
    );
    if bitwise && !dtype.is_int() {
        return Err(not_defined());
    }
    let out = match (Values::widen(a.data()), Values::widen(b.data())) {
        (Values::F32(x), Values::F32(y)) => Values::F32(zip_with(&x, &y, &ia, &ib, |p, q| binary_float(op, p, q))),
        (Values::F64(x), Values::F64(y)) => Values::F64(zip_with(&x, &y, &ia, &ib, |p, q| binary_float(op, p, q))),
        (Values::I64(x), Values::I64(y)) => {
            let width = 8 * dtype.size_of().expect("integer dtypes are plain") as i64;
            let results = zip_with(&x, &y, &ia, &ib, |p, q| binary_int(op, p, q, width));
            Values::I64(results.into_iter().collect::<Result<_, _>>().map_err(|m| cx.err(m))?)
        }
        (Values::U64(x), Values::U64(y)) => {
            let results = zip_with(&x, &y, &ia, &ib, |p, q| binary_u64(op, p, q));
            Values::U64(results.into_iter().collect::<Result<_, _>>().map_err(|m| cx.err(m))?)
        }
        (Values::Bool(x), Values::Bool(y)) => Values::Bool(zip_with(&x, &y, &ia, &ib, |p, q| match op {
            BinaryOp::And => p && q,
            BinaryOp::Or => p || q,
            BinaryOp::Xor => p != q,
            _ => unreachable!("arithmetic on bool is rejected above"),
        })),
        _ => unreachable!("operands of one dtype widen to one compute kind"),
    };
    Ok(cx.tensor(shape, out.narrow(dtype)))
}

/// Float arithmetic on two f32 tensors where one operand's shape is a suffix of the other's (equal
/// shapes included: a residual add, a scale by a per-channel vector), computed straight from the slices.
/// The general path builds an index vector per operand and widens copies of both; this one gives the
/// same values (the same `binary_float` on the same element pairs) without them, which is what the
/// decoding hot path meets. `None` hands every other case to the general path.
fn binary_f32_suffix(op: BinaryOp, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let arithmetic =
        matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min);
    let (TensorData::F32(x), TensorData::F32(y)) = (a.data(), b.data()) else { return None };
    if !arithmetic || x.is_empty() || y.is_empty() {
        return None;
    }
    let is_suffix = |short: &[usize], long: &[usize]| short.len() <= long.len() && long.ends_with(short);
    // One loop per op, so that each compiles to a vector loop.
    fn apply(op: BinaryOp, x: &[f32], y: &[f32], out: &mut Vec<f32>) {
        match op {
            BinaryOp::Add => out.extend(x.iter().zip(y).map(|(p, q)| p + q)),
            BinaryOp::Sub => out.extend(x.iter().zip(y).map(|(p, q)| p - q)),
            BinaryOp::Mul => out.extend(x.iter().zip(y).map(|(p, q)| p * q)),
            _ => out.extend(x.iter().zip(y).map(|(&p, &q)| binary_float(op, p, q))),
        }
    }
    let mut values = Vec::with_capacity(x.len().max(y.len()));
    if is_suffix(b.shape(), a.shape()) {
        x.chunks_exact(y.len()).for_each(|xs| apply(op, xs, y, &mut values));
    } else if is_suffix(a.shape(), b.shape()) {
        y.chunks_exact(x.len()).for_each(|ys| apply(op, x, ys, &mut values));
    } else {
        return None;
    }
    let shape = if a.shape().len() >= b.shape().len() { a.shape() } else { b.shape() };
    Tensor::new(shape.to_vec(), TensorData::F32(values)).ok()
}

fn binary_float<T: Real>(op: BinaryOp, a: T, b: T) -> T {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => a.powf(b),
        BinaryOp::Max => max_nan(a, b),
        BinaryOp::Min => min_nan(a, b),
        // Rust's float `%` is C fmod: the result has the sign of the dividend.
        BinaryOp::Mod => a % b,
        BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Xor
        | BinaryOp::BitAnd
        | BinaryOp::BitOr
        | BinaryOp::BitXor
        | BinaryOp::ShiftLeft
        | BinaryOp::ShiftRight => unreachable!("logical and bitwise ops on floats are rejected before"),
    }
}

/// `op` on integers widened to i64 from a storage type of `width` bits (the result is narrowed back
/// with wrapping, which keeps two's-complement bit patterns).
fn binary_int(op: BinaryOp, a: i64, b: i64, width: i64) -> Result<i64, String> {
    Ok(match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div => {
            if b == 0 {
                return Err(format!("integer division by zero ({a} / 0)"));
            }
            a.wrapping_div(b)
        }
        BinaryOp::Mod => {
            if b == 0 {
                return Err(format!("integer mod by zero ({a} mod 0)"));
            }
            let r = a.wrapping_rem(b);
            // ONNX Mod with fmod = 0: the remainder takes the sign of the divisor.
            if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r }
        }
        BinaryOp::Pow => int_pow(a, b)?,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::BitAnd => a & b,
        BinaryOp::BitOr => a | b,
        BinaryOp::BitXor => a ^ b,
        BinaryOp::ShiftLeft if (0..width).contains(&b) => a.wrapping_shl(b as u32),
        BinaryOp::ShiftRight if (0..width).contains(&b) => a >> b,
        BinaryOp::ShiftLeft => 0,
        BinaryOp::ShiftRight => {
            if a < 0 {
                -1
            } else {
                0
            }
        }
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => unreachable!("logical ops are rejected before"),
    })
}

/// `op` on u64, which has no wider type here: arithmetic wraps modulo 2^64, division truncates, and
/// shifts by 64 bits or more give 0 (every bit shifted out).
fn binary_u64(op: BinaryOp, a: u64, b: u64) -> Result<u64, String> {
    Ok(match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div => a.checked_div(b).ok_or_else(|| format!("integer division by zero ({a} / 0)"))?,
        BinaryOp::Mod => a.checked_rem(b).ok_or_else(|| format!("integer mod by zero ({a} mod 0)"))?,
        BinaryOp::Pow => {
            let (mut result, mut square, mut e) = (1u64, a, b);
            while e > 0 {
                if e & 1 == 1 {
                    result = result.wrapping_mul(square);
                }
                square = square.wrapping_mul(square);
                e >>= 1;
            }
            result
        }
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::BitAnd => a & b,
        BinaryOp::BitOr => a | b,
        BinaryOp::BitXor => a ^ b,
        BinaryOp::ShiftLeft => a.checked_shl(u32::try_from(b).unwrap_or(u32::MAX)).unwrap_or(0),
        BinaryOp::ShiftRight => a.checked_shr(u32::try_from(b).unwrap_or(u32::MAX)).unwrap_or(0),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => unreachable!("logical ops are rejected before"),
    })
}

/// `base^exp` by repeated squaring, wrapping on overflow. A negative exponent gives `1 / base^-exp`
/// truncated toward zero, like integer division: 0 unless `base` is 1 or -1.
fn int_pow(base: i64, exp: i64) -> Result<i64, String> {
    if exp < 0 {
        return match base {
            0 => Err(format!("integer pow of zero to negative power {exp} divides by zero")),
            1 => Ok(1),
            -1 => Ok(if exp % 2 == 0 { 1 } else { -1 }),
            _ => Ok(0),
        };
    }
    let (mut result, mut square, mut e) = (1i64, base, exp as u64);
    while e > 0 {
        if e & 1 == 1 {
            result = result.wrapping_mul(square);
        }
        square = square.wrapping_mul(square);
        e >>= 1;
    }
    Ok(result)
}

pub(super) fn compare(cx: Cx, op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor, EvalError> {
    let (shape, ia, ib) = broadcast_pair(cx, a, b)?;
    if let (TensorData::Str(x), TensorData::Str(y)) = (a.data(), b.data()) {
        // Only equality reaches here (eval_generic refuses the orderings on strings): byte-wise, as ONNX.
        let equal = ia.iter().zip(&ib).map(|(&i, &j)| x[i] == y[j]).collect();
        return Ok(cx.tensor(shape, TensorData::Bool(equal)));
    }
    fn cmp<T: PartialOrd>(op: CompareOp, p: T, q: T) -> bool {
        match op {
            CompareOp::Equal => p == q,
            CompareOp::Less => p < q,
            CompareOp::LessEqual => p <= q,
            CompareOp::Greater => p > q,
            CompareOp::GreaterEqual => p >= q,
        }
    }
    let out = match (Values::widen(a.data()), Values::widen(b.data())) {
        (Values::F32(x), Values::F32(y)) => zip_with(&x, &y, &ia, &ib, |p, q| cmp(op, p, q)),
        (Values::F64(x), Values::F64(y)) => zip_with(&x, &y, &ia, &ib, |p, q| cmp(op, p, q)),
        (Values::I64(x), Values::I64(y)) => zip_with(&x, &y, &ia, &ib, |p, q| cmp(op, p, q)),
        (Values::U64(x), Values::U64(y)) => zip_with(&x, &y, &ia, &ib, |p, q| cmp(op, p, q)),
        (Values::Bool(x), Values::Bool(y)) if op == CompareOp::Equal => zip_with(&x, &y, &ia, &ib, |p, q| p == q),
        (Values::Bool(_), Values::Bool(_)) => {
            return Err(cx.err(format!(
                "ordering comparisons are not defined on bool (inputs {} and {})",
                a.ty(),
                b.ty()
            )));
        }
        _ => unreachable!("operands of one dtype widen to one compute kind"),
    };
    Ok(cx.tensor(shape, TensorData::Bool(out)))
}

pub(super) fn where_(cx: Cx, cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, EvalError> {
    if cond.dtype() != DType::Bool {
        return Err(cx.err(format!("condition must be bool, got {}", cond.ty())));
    }
    if a.dtype() != b.dtype() {
        return Err(cx.err(format!("the two branches must have the same dtype, got {} and {}", a.ty(), b.ty())));
    }
    let shape =
        broadcast_shapes(cond.shape(), a.shape()).and_then(|s| broadcast_shapes(&s, b.shape())).ok_or_else(|| {
            cx.err(format!(
                "shapes {:?} (condition), {:?} and {:?} do not broadcast",
                cond.shape(),
                a.shape(),
                b.shape()
            ))
        })?;
    cx.numel(&shape)?;
    let ic = broadcast_indices(cond.shape(), &shape);
    let ia = broadcast_indices(a.shape(), &shape);
    let ib = broadcast_indices(b.shape(), &shape);
    let TensorData::Bool(c) = cond.data() else { unreachable!("dtype checked above") };
    // Both branches as one flat buffer: a's elements, then b's, so the result is one gather.
    let a_len = a.len();
    let picks: Vec<usize> = (0..ic.len()).map(|k| if c[ic[k]] { ia[k] } else { a_len + ib[k] }).collect();
    let both = concat_data(&[a.data(), b.data()]);
    Ok(cx.tensor(shape, both.gather_flat(&picks)))
}

/// Casts between plain dtypes. Float to integer truncates toward zero and saturates at the target's
/// range, NaN giving 0; integer to integer wraps (keeps the low bits: -1 becomes u64::MAX, as in
/// numpy); anything to bool is `!= 0` (NaN is true); bool is 0/1. Low-bit values read as their exact
/// value (floats through f64, integers through i64) and low-bit targets convert as [`crate::lowbit`]
/// says, under the cast attributes `how`.
pub(super) fn cast(cx: Cx, x: &Tensor, to: DType, how: LowBitCast) -> Result<Tensor, EvalError> {
    if to.is_quantized() {
        return Err(cx.err(format!("cannot cast to quantized dtype {to}; quantization is a weight-packing step")));
    }
    if to == DType::Str || x.dtype() == DType::Str {
        return Err(cx.err(format!("casting {} to {to} is not supported (kiln does not convert strings)", x.ty())));
    }
    let from = x.dtype();
    let from_float = from.is_float() || matches!(from, DType::LowBit(t) if !t.is_int());
    let data = if from_float {
        // f64 holds every f32/f16/bf16 and low-bit float value exactly, so going through it rounds only
        // once. Rust's float-to-int `as` truncates, saturates and maps NaN to 0.
        TensorData::from_f64_with(to, x.to_f64_vec(), how)
    } else if let TensorData::U64(v) = x.data() {
        match to {
            // From the unsigned value: through i64 the upper half would turn negative.
            DType::F32 => Ok(TensorData::F32(v.iter().map(|&i| i as f32).collect())),
            DType::F64 => Ok(TensorData::F64(v.iter().map(|&i| i as f64).collect())),
            DType::F16 | DType::BF16 => TensorData::from_f64(to, v.iter().map(|&i| i as f64)),
            DType::LowBit(t) if !t.is_int() => TensorData::from_f64_with(to, v.iter().map(|&i| i as f64), how),
            // The bit pattern as i64; narrowing to the target keeps its low bits.
            _ => TensorData::from_i64(to, v.iter().map(|&i| i as i64)),
        }
    } else {
        let ints = x.to_i64_vec();
        match to {
            // Directly from the integer, so the value is rounded once even beyond 2^53.
            DType::F32 => Ok(TensorData::F32(ints.into_iter().map(|i| i as f32).collect())),
            DType::F64 => Ok(TensorData::F64(ints.into_iter().map(|i| i as f64).collect())),
            DType::LowBit(t) if !t.is_int() => TensorData::from_f64_with(to, ints.into_iter().map(|i| i as f64), how),
            _ => TensorData::from_i64(to, ints),
        }
    }
    .map_err(|e| cx.err(e.to_string()))?;
    Ok(cx.tensor(x.shape().to_vec(), data))
}
