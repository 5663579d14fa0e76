//! Activations: `softmax`, `silu`, `gelu` (exact erf form and tanh approximation) and `swiglu`.
//!
//! All are defined on float tensors only and compute in the compute type (f32 for f16/bf16).

use super::compute::{Real, Values, sigmoid};
use super::{Cx, EvalError, outer_axis_inner};
use crate::{GeluApprox, Tensor};

/// Applies `f` to every element of a float tensor.
fn map_float(
    cx: Cx,
    x: &Tensor,
    f32_fn: impl Fn(f32) -> f32,
    f64_fn: impl Fn(f64) -> f64,
) -> Result<Tensor, EvalError> {
    let out = match Values::widen(x.data()) {
        Values::F32(v) => Values::F32(v.into_iter().map(f32_fn).collect()),
        Values::F64(v) => Values::F64(v.into_iter().map(f64_fn).collect()),
        _ => return Err(cx.err(format!("input must be a float tensor, got {}", x.ty()))),
    };
    Ok(cx.tensor(x.shape().to_vec(), out.narrow(x.dtype())))
}

/// `exp(x - max) / sum(exp(x - max))` along `axis`; subtracting the maximum keeps `exp` from
/// overflowing without changing the result. A slice that is all `-inf` (or holds a NaN) gives NaN, as
/// 0/0 does.
pub(super) fn softmax(cx: Cx, x: &Tensor, axis: i64) -> Result<Tensor, EvalError> {
    let axis = cx.axis(axis, x.shape().len())?;
    let dims = outer_axis_inner(x.shape(), axis);
    fn rows<T: Real>(v: &mut [T], (outer, len, inner): (usize, usize, usize)) {
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * len + k) * inner + i;
                let max = (0..len).map(|k| v[at(k)]).fold(T::NEG_INFINITY, |m, a| if a > m { a } else { m });
                let mut sum = T::ZERO;
                for k in 0..len {
                    let e = (v[at(k)] - max).exp();
                    v[at(k)] = e;
                    sum = sum + e;
                }
                for k in 0..len {
                    v[at(k)] = v[at(k)] / sum;
                }
            }
        }
    }
    let out = match Values::widen(x.data()) {
        Values::F32(mut v) => {
            rows(&mut v, dims);
            Values::F32(v)
        }
        Values::F64(mut v) => {
            rows(&mut v, dims);
            Values::F64(v)
        }
        _ => return Err(cx.err(format!("input must be a float tensor, got {}", x.ty()))),
    };
    Ok(cx.tensor(x.shape().to_vec(), out.narrow(x.dtype())))
}

fn silu_of<T: Real>(x: T) -> T {
    x * sigmoid(x)
}

/// `x * sigmoid(x)`.
pub(super) fn silu(cx: Cx, x: &Tensor) -> Result<Tensor, EvalError> {
    map_float(cx, x, silu_of, silu_of)
}

fn gelu_of<T: Real>(x: T, approximate: GeluApprox) -> T {
    let half = T::of(0.5);
    match approximate {
        GeluApprox::None => half * x * (T::ONE + (x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erf()),
        GeluApprox::Tanh => {
            let inner = T::of((2.0 / std::f64::consts::PI).sqrt()) * (x + T::of(0.044715) * x * x * x);
            half * x * (T::ONE + inner.tanh())
        }
    }
}

/// `0.5 x (1 + erf(x / sqrt 2))`, or with `tanh`, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub(super) fn gelu(cx: Cx, x: &Tensor, approximate: GeluApprox) -> Result<Tensor, EvalError> {
    map_float(cx, x, |a| gelu_of(a, approximate), |a| gelu_of(a, approximate))
}

/// `silu(gate) * up`; both operands must have the same dtype and shape.
pub(super) fn swiglu(cx: Cx, gate: &Tensor, up: &Tensor) -> Result<Tensor, EvalError> {
    if gate.dtype() != up.dtype() || gate.shape() != up.shape() {
        return Err(cx.err(format!("gate {} and up {} must have the same dtype and shape", gate.ty(), up.ty())));
    }
    let out = match (Values::widen(gate.data()), Values::widen(up.data())) {
        (Values::F32(g), Values::F32(u)) => Values::F32(g.into_iter().zip(u).map(|(g, u)| silu_of(g) * u).collect()),
        (Values::F64(g), Values::F64(u)) => Values::F64(g.into_iter().zip(u).map(|(g, u)| silu_of(g) * u).collect()),
        _ => return Err(cx.err(format!("inputs must be float tensors, got {} and {}", gate.ty(), up.ty()))),
    };
    Ok(cx.tensor(gate.shape().to_vec(), out.narrow(gate.dtype())))
}
