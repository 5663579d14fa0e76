//! Element values widened to their compute type, and narrowed back to a storage dtype.
//!
//! Every numeric op widens its inputs with [`Values::widen`], computes on one of five vectors, and
//! narrows with [`Values::narrow`]: f32/f16/bf16 compute in f32, f64 in f64, the signed integers and
//! u8/u16/u32 in i64 (which holds all their values; narrowed back with wrapping, like C and ONNX), u64
//! in u64 (i64 cannot hold its upper half, and its division, comparison and right shift differ from
//! i64's), bools stay bools.

use half::{bf16, f16};

use crate::{DType, TensorData};

/// Elements in their compute type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

impl Values {
    pub(crate) fn widen(data: &TensorData) -> Values {
        match data {
            TensorData::F32(v) => Values::F32(v.clone()),
            TensorData::F16(v) => Values::F32(v.iter().map(|x| x.to_f32()).collect()),
            TensorData::BF16(v) => Values::F32(v.iter().map(|x| x.to_f32()).collect()),
            TensorData::F64(v) => Values::F64(v.clone()),
            TensorData::Bool(v) => Values::Bool(v.clone()),
            TensorData::U64(v) => Values::U64(v.clone()),
            TensorData::LowBit(..) | TensorData::Str(_) => {
                unreachable!("{} values have no compute type; eval_generic refuses them before any op", data.dtype())
            }
            d => Values::I64((0..d.len()).map(|i| d.get_i64(i)).collect()),
        }
    }

    /// Back to `dtype`, which must be a dtype whose compute type these values are.
    pub(crate) fn narrow(self, dtype: DType) -> TensorData {
        match (self, dtype) {
            (Values::F32(v), DType::F32) => TensorData::F32(v),
            (Values::F32(v), DType::F16) => TensorData::F16(v.into_iter().map(f16::from_f32).collect()),
            (Values::F32(v), DType::BF16) => TensorData::BF16(v.into_iter().map(bf16::from_f32).collect()),
            (Values::F64(v), DType::F64) => TensorData::F64(v),
            (Values::Bool(v), DType::Bool) => TensorData::Bool(v),
            (Values::I64(v), DType::I64) => TensorData::I64(v),
            (Values::I64(v), DType::I32) => TensorData::I32(v.into_iter().map(|x| x as i32).collect()),
            (Values::I64(v), DType::I16) => TensorData::I16(v.into_iter().map(|x| x as i16).collect()),
            (Values::I64(v), DType::I8) => TensorData::I8(v.into_iter().map(|x| x as i8).collect()),
            (Values::I64(v), DType::U8) => TensorData::U8(v.into_iter().map(|x| x as u8).collect()),
            (Values::I64(v), DType::U16) => TensorData::U16(v.into_iter().map(|x| x as u16).collect()),
            (Values::I64(v), DType::U32) => TensorData::U32(v.into_iter().map(|x| x as u32).collect()),
            (Values::U64(v), DType::U64) => TensorData::U64(v),
            (v, d) => unreachable!("values of compute kind {} cannot narrow to {d}", v.kind()),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Values::F32(_) => "f32",
            Values::F64(_) => "f64",
            Values::I64(_) => "i64",
            Values::U64(_) => "u64",
            Values::Bool(_) => "bool",
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::U64(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }

    /// A copy with the elements where `keep` is false set to zero (false for bools).
    pub(crate) fn zero_unless(self, keep: impl Fn(usize) -> bool) -> Values {
        fn zero<T: Copy>(v: Vec<T>, z: T, keep: impl Fn(usize) -> bool) -> Vec<T> {
            v.into_iter().enumerate().map(|(i, x)| if keep(i) { x } else { z }).collect()
        }
        match self {
            Values::F32(v) => Values::F32(zero(v, 0.0, keep)),
            Values::F64(v) => Values::F64(zero(v, 0.0, keep)),
            Values::I64(v) => Values::I64(zero(v, 0, keep)),
            Values::U64(v) => Values::U64(zero(v, 0, keep)),
            Values::Bool(v) => Values::Bool(zero(v, false, keep)),
        }
    }
}

/// The float operations the ops need, implemented once for f32 and f64 so each op is written once.
pub(crate) trait Real:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Rem<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const NAN: Self;
    const NEG_INFINITY: Self;
    /// Rounds `x` to this type (used for formula constants).
    fn of(x: f64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    fn tan(self) -> Self;
    fn asin(self) -> Self;
    fn acos(self) -> Self;
    fn atan(self) -> Self;
    fn sinh(self) -> Self;
    fn cosh(self) -> Self;
    fn asinh(self) -> Self;
    fn acosh(self) -> Self;
    fn atanh(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_ties_even(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn is_nan(self) -> bool;
}

macro_rules! impl_real {
    ($t:ty, $erf:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NAN: Self = <$t>::NAN;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn of(x: f64) -> Self {
                x as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn tan(self) -> Self {
                <$t>::tan(self)
            }
            fn asin(self) -> Self {
                <$t>::asin(self)
            }
            fn acos(self) -> Self {
                <$t>::acos(self)
            }
            fn atan(self) -> Self {
                <$t>::atan(self)
            }
            fn sinh(self) -> Self {
                <$t>::sinh(self)
            }
            fn cosh(self) -> Self {
                <$t>::cosh(self)
            }
            fn asinh(self) -> Self {
                <$t>::asinh(self)
            }
            fn acosh(self) -> Self {
                <$t>::acosh(self)
            }
            fn atanh(self) -> Self {
                <$t>::atanh(self)
            }
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            fn round_ties_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

impl_real!(f32, libm::erff);
impl_real!(f64, libm::erf);

/// The integer operations the ops need, for the evaluator's two integer lanes (i64 for the signed types
/// and the narrow unsigned ones, u64 for u64), so that an op on integers is written once.
pub(crate) trait Int: Copy + Ord + std::ops::Div<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    fn wrapping_add(self, other: Self) -> Self;
    fn wrapping_mul(self, other: Self) -> Self;
    /// A count of elements as this type (group sizes: far below either type's range).
    fn of_len(n: usize) -> Self;
}

macro_rules! impl_int {
    ($t:ty) => {
        impl Int for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            fn wrapping_add(self, other: Self) -> Self {
                <$t>::wrapping_add(self, other)
            }
            fn wrapping_mul(self, other: Self) -> Self {
                <$t>::wrapping_mul(self, other)
            }
            fn of_len(n: usize) -> Self {
                n as $t
            }
        }
    };
}

impl_int!(i64);
impl_int!(u64);

/// The logistic function, written so that `exp` never overflows: for negative `x`, `e^x / (1 + e^x)`.
pub(crate) fn sigmoid<T: Real>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// Maximum that propagates NaN (numpy `maximum`, ONNX `Max`), unlike `f32::max`.
pub(crate) fn max_nan<T: Real>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::NAN
    } else if b > a {
        b
    } else {
        a
    }
}

/// Minimum that propagates NaN.
pub(crate) fn min_nan<T: Real>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::NAN
    } else if b < a {
        b
    } else {
        a
    }
}

/// The elements of all `parts` one after another; every part must have the same dtype.
pub(crate) fn concat_data(parts: &[&TensorData]) -> TensorData {
    fn cat<T: Clone>(parts: &[&TensorData], get: impl Fn(&TensorData) -> &[T]) -> Vec<T> {
        parts.iter().flat_map(|p| get(p).iter().cloned()).collect()
    }
    macro_rules! cat_as {
        ($variant:ident) => {
            TensorData::$variant(cat(parts, |p| match p {
                TensorData::$variant(v) => v.as_slice(),
                other => {
                    unreachable!("concat_data needs one dtype, got {} among {}", other.dtype(), stringify!($variant))
                }
            }))
        };
    }
    match parts.first().map(|p| p.dtype()) {
        Some(DType::F32) => cat_as!(F32),
        Some(DType::F16) => cat_as!(F16),
        Some(DType::BF16) => cat_as!(BF16),
        Some(DType::F64) => cat_as!(F64),
        Some(DType::I64) => cat_as!(I64),
        Some(DType::I32) => cat_as!(I32),
        Some(DType::I16) => cat_as!(I16),
        Some(DType::I8) => cat_as!(I8),
        Some(DType::U8) => cat_as!(U8),
        Some(DType::U16) => cat_as!(U16),
        Some(DType::U32) => cat_as!(U32),
        Some(DType::U64) => cat_as!(U64),
        Some(DType::Bool) => cat_as!(Bool),
        Some(DType::Str) => cat_as!(Str),
        Some(DType::LowBit(format)) => TensorData::LowBit(
            format,
            cat(parts, |p| match p {
                TensorData::LowBit(f, v) if *f == format => v.as_slice(),
                other => unreachable!("concat_data needs one dtype, got {} among {format}", other.dtype()),
            }),
        ),
        Some(q) => unreachable!("tensor data cannot have quantized dtype {q}"),
        None => unreachable!("concat_data needs at least one part"),
    }
}
