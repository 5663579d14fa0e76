//! The weight store: named tensors that `weight` ops refer to, backed by memory the store does not
//! copy (an mmap of a safetensors or GGUF file, or buffers a pass packed).
//!
//! Sizes are checked when a weight is added, so readers can index the buffers without further checks.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use half::{bf16, f16};

use crate::{DType, Tensor, TensorData, TensorType, quant};

/// A byte range of shared backing memory (an mmap, or an owned buffer).
#[derive(Clone)]
pub struct WeightBytes {
    source: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl WeightBytes {
    /// A range of `source`; fails when the range is outside it.
    pub fn new(source: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Result<WeightBytes, WeightError> {
        let len = (*source).as_ref().len();
        if range.start > range.end || range.end > len {
            return Err(WeightError::OutOfBounds { range, len });
        }
        Ok(WeightBytes { source, range })
    }

    pub fn from_vec(bytes: Vec<u8>) -> WeightBytes {
        let len = bytes.len();
        WeightBytes { source: Arc::new(bytes), range: 0..len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.source).as_ref()[self.range.clone()]
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl fmt::Debug for WeightBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WeightBytes({} bytes)", self.len())
    }
}

/// How a weight's elements are stored.
#[derive(Clone, Debug)]
pub enum WeightPayload {
    /// Little-endian elements of a plain dtype, row-major.
    Dense(WeightBytes),
    /// The buffers of a quantized dtype, laid out as [`crate::quant`] describes.
    Quantized { data: WeightBytes, scales: WeightBytes, zeros: Option<WeightBytes> },
}

/// One stored weight: its static type and its bytes.
#[derive(Clone, Debug)]
pub struct StoredWeight {
    pub ty: TensorType,
    pub payload: WeightPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightError {
    #[error("byte range {range:?} is outside a buffer of {len} bytes")]
    OutOfBounds { range: Range<usize>, len: usize },
    #[error("weight `{name}` of type {ty} needs {expected} bytes of {part} but {actual} were given")]
    Size { name: String, ty: String, part: &'static str, expected: usize, actual: usize },
    #[error("weight `{name}` has type {ty}, which a weight cannot have: {reason}")]
    BadType { name: String, ty: String, reason: String },
    #[error("weight `{0}` is defined twice")]
    Duplicate(String),
    #[error("no weight named `{0}` in the weight store")]
    Missing(String),
}

/// Named weights, in name order so iteration is deterministic.
#[derive(Clone, Debug, Default)]
pub struct WeightStore {
    weights: BTreeMap<String, Arc<StoredWeight>>,
}

impl WeightStore {
    pub fn new() -> WeightStore {
        WeightStore::default()
    }

    /// Adds a weight after checking its buffers against its type.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
        payload: WeightPayload,
    ) -> Result<(), WeightError> {
        let name = name.into();
        let bad_type =
            |reason: &str| WeightError::BadType { name: name.clone(), ty: ty.to_string(), reason: reason.into() };
        let dims = ty.shape.as_static().ok_or_else(|| bad_type("its shape must be static"))?;
        if ty.dtype == DType::Str {
            return Err(bad_type("strings have no byte layout; string tensors are graph constants"));
        }
        let size_err = |part: &'static str, expected: usize, actual: usize| {
            if expected == actual {
                Ok(())
            } else {
                Err(WeightError::Size { name: name.clone(), ty: ty.to_string(), part, expected, actual })
            }
        };
        match (&payload, ty.dtype.size_of()) {
            (WeightPayload::Dense(bytes), Some(elem)) => {
                size_err("data", dims.iter().product::<usize>() * elem, bytes.len())?;
            }
            (WeightPayload::Quantized { data, scales, zeros }, None) => {
                let [n, k] = dims[..] else {
                    return Err(bad_type("quantized weights are matrices [rows, cols]"));
                };
                let (d, s, z) = quant::buffer_sizes(ty.dtype, n, k)
                    .ok_or_else(|| bad_type("the row length must be a multiple of the group size"))?;
                size_err("data", d, data.len())?;
                size_err("scales", s, scales.len())?;
                size_err("zero points", z, zeros.as_ref().map_or(0, WeightBytes::len))?;
                if zeros.is_some() != matches!(ty.dtype, DType::Q4G { zero_points: true, .. }) {
                    return Err(bad_type("zero points are given exactly for the `z` formats"));
                }
            }
            (WeightPayload::Dense(_), None) => return Err(bad_type("quantized dtypes need quantized buffers")),
            (WeightPayload::Quantized { .. }, Some(_)) => return Err(bad_type("plain dtypes need dense bytes")),
        }
        if self.weights.contains_key(&name) {
            return Err(WeightError::Duplicate(name));
        }
        self.weights.insert(name, Arc::new(StoredWeight { ty, payload }));
        Ok(())
    }

    /// Adds a dense tensor (copied into an owned buffer); for tests and small packed weights.
    pub fn insert_tensor(&mut self, name: impl Into<String>, t: &Tensor) -> Result<(), WeightError> {
        if t.dtype() == DType::Str {
            // Refused before the bytes are built, since strings have none.
            return self.insert(name, t.ty(), WeightPayload::Dense(WeightBytes::from_vec(Vec::new())));
        }
        self.insert(name, t.ty(), WeightPayload::Dense(WeightBytes::from_vec(tensor_to_le_bytes(t))))
    }

    /// Quantizes a row-major f32 `[n, k]` matrix into `dtype` and adds it.
    pub fn insert_quantized(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        n: usize,
        k: usize,
        w: &[f32],
    ) -> Result<(), WeightError> {
        let name = name.into();
        let ty = TensorType::of(dtype, &[n as u64, k as u64]);
        let b = quant::quantize(dtype, n, k, w).ok_or_else(|| WeightError::BadType {
            name: name.clone(),
            ty: ty.to_string(),
            reason: "not a quantized format, or the row length is not a multiple of the group size".into(),
        })?;
        let payload = WeightPayload::Quantized {
            data: WeightBytes::from_vec(b.data),
            scales: WeightBytes::from_vec(b.scales),
            zeros: b.zeros.map(WeightBytes::from_vec),
        };
        self.insert(name, ty, payload)
    }

    pub fn get(&self, name: &str) -> Result<&Arc<StoredWeight>, WeightError> {
        self.weights.get(name).ok_or_else(|| WeightError::Missing(name.to_string()))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<StoredWeight>)> {
        self.weights.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

impl StoredWeight {
    fn dims(&self) -> Vec<usize> {
        self.ty.shape.as_static().expect("checked static on insert")
    }

    /// Row length: the last dim (1 for scalars).
    pub fn row_len(&self) -> usize {
        self.dims().last().copied().unwrap_or(1)
    }

    /// Writes row `row` (of the weight viewed as `[elements / row_len, row_len]`) as f32 into `out`.
    pub fn read_row_f32(&self, row: usize, out: &mut [f32]) {
        let k = self.row_len();
        match &self.payload {
            WeightPayload::Dense(bytes) => {
                let elem = self.ty.dtype.size_of().expect("dense dtype");
                let b = &bytes.as_slice()[row * k * elem..(row + 1) * k * elem];
                decode_le_into(self.ty.dtype, b, out);
            }
            WeightPayload::Quantized { data, scales, zeros } => quant::dequantize_row(
                self.ty.dtype,
                k,
                row,
                data.as_slice(),
                scales.as_slice(),
                zeros.as_ref().map(WeightBytes::as_slice),
                out,
            ),
        }
    }

    /// The whole weight as a dense tensor: plain dtypes keep their dtype, quantized ones become f32.
    pub fn to_tensor(&self) -> Tensor {
        let dims = self.dims();
        match &self.payload {
            WeightPayload::Dense(bytes) => {
                let data = decode_le(self.ty.dtype, bytes.as_slice());
                Tensor::new(dims, data).expect("size checked on insert")
            }
            WeightPayload::Quantized { .. } => {
                let k = self.row_len();
                let rows = dims.iter().product::<usize>() / k.max(1);
                let mut out = vec![0.0; rows * k];
                for r in 0..rows {
                    self.read_row_f32(r, &mut out[r * k..(r + 1) * k]);
                }
                Tensor::f32(dims, out).expect("size checked on insert")
            }
        }
    }
}

/// Little-endian bytes of a tensor's elements (bool as one byte 0/1, low-bit types one code a byte).
/// Strings have no byte layout: callers refuse string tensors first ([`WeightStore::insert`] does).
pub fn tensor_to_le_bytes(t: &Tensor) -> Vec<u8> {
    fn cat<const N: usize, T: Copy>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    match t.data() {
        TensorData::F32(v) => cat(v, f32::to_le_bytes),
        TensorData::F16(v) => cat(v, f16::to_le_bytes),
        TensorData::BF16(v) => cat(v, bf16::to_le_bytes),
        TensorData::F64(v) => cat(v, f64::to_le_bytes),
        TensorData::I64(v) => cat(v, i64::to_le_bytes),
        TensorData::I32(v) => cat(v, i32::to_le_bytes),
        TensorData::I16(v) => cat(v, i16::to_le_bytes),
        TensorData::I8(v) => cat(v, i8::to_le_bytes),
        TensorData::U8(v) => v.clone(),
        TensorData::U16(v) => cat(v, u16::to_le_bytes),
        TensorData::U32(v) => cat(v, u32::to_le_bytes),
        TensorData::U64(v) => cat(v, u64::to_le_bytes),
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        TensorData::LowBit(_, v) => v.clone(),
        TensorData::Str(_) => unreachable!("tensor_to_le_bytes of a string tensor: callers refuse strings first"),
    }
}

/// Decodes little-endian elements of a plain dtype (`bytes.len()` a multiple of its size).
pub fn decode_le(dtype: DType, bytes: &[u8]) -> TensorData {
    fn split<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N).map(|c| f(c.try_into().expect("chunk size"))).collect()
    }
    match dtype {
        DType::F32 => TensorData::F32(split(bytes, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(split(bytes, f16::from_le_bytes)),
        DType::BF16 => TensorData::BF16(split(bytes, bf16::from_le_bytes)),
        DType::F64 => TensorData::F64(split(bytes, f64::from_le_bytes)),
        DType::I64 => TensorData::I64(split(bytes, i64::from_le_bytes)),
        DType::I32 => TensorData::I32(split(bytes, i32::from_le_bytes)),
        DType::I16 => TensorData::I16(split(bytes, i16::from_le_bytes)),
        DType::I8 => TensorData::I8(split(bytes, i8::from_le_bytes)),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::U16 => TensorData::U16(split(bytes, u16::from_le_bytes)),
        DType::U32 => TensorData::U32(split(bytes, u32::from_le_bytes)),
        DType::U64 => TensorData::U64(split(bytes, u64::from_le_bytes)),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::LowBit(t) => TensorData::LowBit(t, bytes.to_vec()),
        q => unreachable!("decode_le of dtype {q}, which has no dense byte layout"),
    }
}

/// Decodes little-endian elements of a plain numeric dtype straight into f32 (the executor's hot path).
pub fn decode_le_into(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        other => {
            let data = decode_le(other, bytes);
            for (i, o) in out.iter_mut().enumerate() {
                *o = data.get_f64(i) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_on_insert() {
        let mut s = WeightStore::new();
        let e = s
            .insert("w", TensorType::of(DType::BF16, &[2, 3]), WeightPayload::Dense(WeightBytes::from_vec(vec![0; 11])))
            .unwrap_err();
        assert!(e.to_string().contains("needs 12 bytes of data but 11"), "{e}");
        s.insert_tensor("w", &Tensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap()).unwrap();
        assert!(matches!(s.insert_tensor("w", &Tensor::scalar_f32(0.0)), Err(WeightError::Duplicate(_))));
        let mut row = [0.0; 2];
        s.get("w").unwrap().read_row_f32(1, &mut row);
        assert_eq!(row, [3.0, 4.0]);
    }

    #[test]
    fn ranges_outside_the_source_are_refused() {
        let src: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![0u8; 8]);
        assert!(WeightBytes::new(src.clone(), 4..12).is_err());
        assert_eq!(WeightBytes::new(src, 4..8).unwrap().len(), 4);
    }

    #[test]
    fn quantized_weights_dequantize() {
        let mut s = WeightStore::new();
        let w: Vec<f32> = (0..64).map(|i| i as f32 / 10.0 - 3.0).collect();
        s.insert_quantized("q", DType::Q8C, 2, 32, &w).unwrap();
        let t = s.get("q").unwrap().to_tensor();
        for (a, b) in t.to_f32_vec().iter().zip(&w) {
            assert!((a - b).abs() < 0.02);
        }
    }
}
