//! Dense tensors with concrete data: constants in graphs, and values during reference evaluation.
//!
//! The dtype is derived from the data variant, so the two can never disagree. Quantized formats never
//! appear here: they exist only as stored weights (see [`crate::weights`]). Low-bit types are one
//! variant carrying the format, one code a byte (see [`crate::lowbit`] for why); strings are owned
//! `String`s. Neither has arithmetic: code that reads elements as numbers ([`TensorData::get_f64`]) gets
//! low-bit values decoded exactly, and strings as NaN (every op checks dtypes before reading).

use half::{bf16, f16};

use crate::DType;
use crate::lowbit::{LowBitCast, LowBitType};

/// Element storage of a [`Tensor`], row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I16(Vec<i16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    /// Codes of a low-bit format, one a byte in the low bits.
    LowBit(LowBitType, Vec<u8>),
    Str(Vec<String>),
}

/// A dense row-major tensor with a fully static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// A tensor whose element count does not match its shape, or a dtype that cannot be dense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} elements but {actual} were given")]
    ElementCount { shape: Vec<usize>, expected: usize, actual: usize },
    #[error("dtype {0} has no dense representation (quantized formats exist only as stored weights)")]
    NotDense(DType),
    #[error("dtype {0} holds no numbers, so it cannot be built from numeric values")]
    NotNumeric(DType),
}

macro_rules! for_each_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => $body,
            TensorData::F16($v) => $body,
            TensorData::BF16($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I16($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::U16($v) => $body,
            TensorData::U32($v) => $body,
            TensorData::U64($v) => $body,
            TensorData::Bool($v) => $body,
            TensorData::LowBit(_, $v) => $body,
            TensorData::Str($v) => $body,
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::I16(_) => DType::I16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::U16(_) => DType::U16,
            TensorData::U32(_) => DType::U32,
            TensorData::U64(_) => DType::U64,
            TensorData::Bool(_) => DType::Bool,
            TensorData::LowBit(t, _) => DType::LowBit(*t),
            TensorData::Str(_) => DType::Str,
        }
    }

    pub fn len(&self) -> usize {
        for_each_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` widened to f64 (bool as 0/1, low-bit codes decoded exactly). i64 and u64 values
    /// beyond 2^53 are rounded. Strings hold no numbers and read as NaN: callers check the dtype first.
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            TensorData::F32(v) => v[i] as f64,
            TensorData::F16(v) => v[i].to_f64(),
            TensorData::BF16(v) => v[i].to_f64(),
            TensorData::F64(v) => v[i],
            TensorData::I64(v) => v[i] as f64,
            TensorData::I32(v) => v[i] as f64,
            TensorData::I16(v) => v[i] as f64,
            TensorData::I8(v) => v[i] as f64,
            TensorData::U8(v) => v[i] as f64,
            TensorData::U16(v) => v[i] as f64,
            TensorData::U32(v) => v[i] as f64,
            TensorData::U64(v) => v[i] as f64,
            TensorData::Bool(v) => v[i] as u8 as f64,
            TensorData::LowBit(t, v) => t.to_f64(v[i]),
            // Not a number. Callers check the dtype first (every op does); NaN rather than a panic keeps a
            // missed check in a pass's pattern probe from aborting the process on a string constant.
            TensorData::Str(_) => f64::NAN,
        }
    }

    /// Element `i` as i64 for integer and bool data; floats truncate toward zero. A u64 above
    /// `i64::MAX` wraps to a negative number (its bit pattern), like a C cast; code that must tell it
    /// from a negative value reads [`TensorData::U64`] itself.
    pub fn get_i64(&self, i: usize) -> i64 {
        match self {
            TensorData::I64(v) => v[i],
            TensorData::I32(v) => v[i] as i64,
            TensorData::I16(v) => v[i] as i64,
            TensorData::I8(v) => v[i] as i64,
            TensorData::U8(v) => v[i] as i64,
            TensorData::U16(v) => v[i] as i64,
            TensorData::U32(v) => v[i] as i64,
            TensorData::U64(v) => v[i] as i64,
            TensorData::Bool(v) => v[i] as i64,
            TensorData::LowBit(t, v) if t.is_int() => t.int_value(v[i]).expect("integer format"),
            _ => self.get_f64(i) as i64,
        }
    }

    /// Builds data of `dtype` from f64 values (rounding to the target type, saturating for ints; low-bit
    /// types under the default cast attributes, see [`TensorData::from_f64_with`]).
    pub fn from_f64(dtype: DType, values: impl IntoIterator<Item = f64>) -> Result<TensorData, TensorError> {
        TensorData::from_f64_with(dtype, values, LowBitCast::default())
    }

    /// [`TensorData::from_f64`] with the cast attributes `how` for low-bit targets.
    pub fn from_f64_with(
        dtype: DType,
        values: impl IntoIterator<Item = f64>,
        how: LowBitCast,
    ) -> Result<TensorData, TensorError> {
        let it = values.into_iter();
        Ok(match dtype {
            DType::F32 => TensorData::F32(it.map(|x| x as f32).collect()),
            DType::F16 => TensorData::F16(it.map(f16::from_f64).collect()),
            DType::BF16 => TensorData::BF16(it.map(bf16::from_f64).collect()),
            DType::F64 => TensorData::F64(it.collect()),
            DType::I64 => TensorData::I64(it.map(|x| x as i64).collect()),
            DType::I32 => TensorData::I32(it.map(|x| x as i32).collect()),
            DType::I16 => TensorData::I16(it.map(|x| x as i16).collect()),
            DType::I8 => TensorData::I8(it.map(|x| x as i8).collect()),
            DType::U8 => TensorData::U8(it.map(|x| x as u8).collect()),
            DType::U16 => TensorData::U16(it.map(|x| x as u16).collect()),
            DType::U32 => TensorData::U32(it.map(|x| x as u32).collect()),
            DType::U64 => TensorData::U64(it.map(|x| x as u64).collect()),
            DType::Bool => TensorData::Bool(it.map(|x| x != 0.0).collect()),
            DType::LowBit(t) => TensorData::LowBit(t, it.map(|x| t.from_f64(x, how)).collect()),
            DType::Str => return Err(TensorError::NotNumeric(DType::Str)),
            q => return Err(TensorError::NotDense(q)),
        })
    }

    /// Builds data of `dtype` from i64 values (exact for every integer dtype that holds them; narrower
    /// integers keep the low bits, so a negative value becomes its two's-complement pattern in u64).
    pub fn from_i64(dtype: DType, values: impl IntoIterator<Item = i64>) -> Result<TensorData, TensorError> {
        let it = values.into_iter();
        Ok(match dtype {
            DType::I64 => TensorData::I64(it.collect()),
            DType::I32 => TensorData::I32(it.map(|x| x as i32).collect()),
            DType::I16 => TensorData::I16(it.map(|x| x as i16).collect()),
            DType::I8 => TensorData::I8(it.map(|x| x as i8).collect()),
            DType::U8 => TensorData::U8(it.map(|x| x as u8).collect()),
            DType::U16 => TensorData::U16(it.map(|x| x as u16).collect()),
            DType::U32 => TensorData::U32(it.map(|x| x as u32).collect()),
            DType::U64 => TensorData::U64(it.map(|x| x as u64).collect()),
            DType::Bool => TensorData::Bool(it.map(|x| x != 0).collect()),
            DType::LowBit(t) if t.is_int() => TensorData::LowBit(t, it.map(|x| t.from_i64(x)).collect()),
            other => return TensorData::from_f64(other, it.map(|x| x as f64)),
        })
    }

    /// A copy with elements picked by `indices` (used by every data-movement op).
    pub fn gather_flat(&self, indices: &[usize]) -> TensorData {
        fn pick<T: Clone>(v: &[T], idx: &[usize]) -> Vec<T> {
            idx.iter().map(|&i| v[i].clone()).collect()
        }
        match self {
            TensorData::F32(v) => TensorData::F32(pick(v, indices)),
            TensorData::F16(v) => TensorData::F16(pick(v, indices)),
            TensorData::BF16(v) => TensorData::BF16(pick(v, indices)),
            TensorData::F64(v) => TensorData::F64(pick(v, indices)),
            TensorData::I64(v) => TensorData::I64(pick(v, indices)),
            TensorData::I32(v) => TensorData::I32(pick(v, indices)),
            TensorData::I16(v) => TensorData::I16(pick(v, indices)),
            TensorData::I8(v) => TensorData::I8(pick(v, indices)),
            TensorData::U8(v) => TensorData::U8(pick(v, indices)),
            TensorData::U16(v) => TensorData::U16(pick(v, indices)),
            TensorData::U32(v) => TensorData::U32(pick(v, indices)),
            TensorData::U64(v) => TensorData::U64(pick(v, indices)),
            TensorData::Bool(v) => TensorData::Bool(pick(v, indices)),
            TensorData::LowBit(t, v) => TensorData::LowBit(*t, pick(v, indices)),
            TensorData::Str(v) => TensorData::Str(pick(v, indices)),
        }
    }
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, TensorError> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(TensorError::ElementCount { shape, expected, actual: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, TensorData::F32(data))
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, TensorData::I64(data))
    }

    pub fn scalar_f32(x: f32) -> Tensor {
        Tensor { shape: vec![], data: TensorData::F32(vec![x]) }
    }

    pub fn scalar_i64(x: i64) -> Tensor {
        Tensor { shape: vec![], data: TensorData::I64(vec![x]) }
    }

    /// All zeros of a plain dtype.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = shape.iter().product();
        Tensor::new(shape, TensorData::from_f64(dtype, std::iter::repeat_n(0.0, n))?)
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The IR type of this tensor.
    pub fn ty(&self) -> crate::TensorType {
        crate::TensorType::of(self.dtype(), &self.shape.iter().map(|&d| d as u64).collect::<Vec<_>>())
    }

    /// Same data, new shape with the same element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.data)
    }

    /// All elements widened to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.data.get_f64(i)).collect()
    }

    /// All elements converted to f32 (the executor's compute type).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            d => (0..d.len()).map(|i| d.get_f64(i) as f32).collect(),
        }
    }

    /// All elements as i64 (integers and bool exactly; floats truncated).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        (0..self.len()).map(|i| self.data.get_i64(i)).collect()
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        contiguous_strides(&self.shape)
    }
}

/// Row-major strides in elements for `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_count_is_checked() {
        assert!(Tensor::f32(vec![2, 3], vec![0.0; 5]).is_err());
        assert_eq!(Tensor::f32(vec![2, 3], vec![0.0; 6]).unwrap().ty().to_string(), "f32[2, 3]");
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
    }
}
