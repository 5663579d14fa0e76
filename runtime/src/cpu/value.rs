//! Values held by the executor while a graph runs: dense tensors, or stored weights that stay in their
//! stored dtype until an op reads them row by row.
//!
//! Keeping weights as [`StoredWeight`]s lets `linear`, `embedding` and `logits` dequantize on the fly;
//! any other consumer materialises them as dense tensors.

use std::borrow::Cow;
use std::sync::Arc;

use half::{bf16, f16};
use kiln_ir::{DType, StoredWeight, Tensor, TensorData, WeightPayload};

/// A value of the running graph.
#[derive(Clone, Debug)]
pub enum Value {
    Tensor(Tensor),
    Weight(Arc<StoredWeight>),
}

impl Value {
    pub fn dtype(&self) -> DType {
        match self {
            Value::Tensor(t) => t.dtype(),
            Value::Weight(w) => w.ty.dtype,
        }
    }

    pub fn shape(&self) -> Cow<'_, [usize]> {
        match self {
            Value::Tensor(t) => Cow::Borrowed(t.shape()),
            Value::Weight(w) => Cow::Owned(w.ty.shape.as_static().expect("stored weights have static shapes")),
        }
    }

    /// The value as a dense tensor (quantized weights dequantize to f32).
    pub fn to_tensor(&self) -> Cow<'_, Tensor> {
        match self {
            Value::Tensor(t) => Cow::Borrowed(t),
            Value::Weight(w) => Cow::Owned(w.to_tensor()),
        }
    }

    /// All elements as f32, borrowed when the value already is a dense f32 tensor.
    pub fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Value::Tensor(t) => match t.data() {
                TensorData::F32(v) => Cow::Borrowed(v.as_slice()),
                _ => Cow::Owned(t.to_f32_vec()),
            },
            Value::Weight(w) => {
                let k = w.row_len();
                let n: usize = self.shape().iter().product();
                let mut out = vec![0.0; n];
                if k > 0 {
                    for (r, row) in out.chunks_mut(k).enumerate() {
                        w.read_row_f32(r, row);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// A row reader over the value viewed as a matrix `[elements / last_dim, last_dim]`.
    pub fn rows(&self) -> MatrixRows<'_> {
        match self {
            Value::Tensor(t) => MatrixRows::Dense { data: self.to_f32(), cols: cols_of(t.shape()) },
            Value::Weight(w) => MatrixRows::Stored(w),
        }
    }
}

fn cols_of(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

/// Row access to a weight matrix in whatever form it is held: stored (any dtype, quantized included)
/// or a dense tensor computed by the graph.
pub enum MatrixRows<'a> {
    Stored(&'a StoredWeight),
    Dense { data: Cow<'a, [f32]>, cols: usize },
}

impl MatrixRows<'_> {
    /// Row `row` as an f32 slice without copying, when the matrix already holds f32 in memory: dense
    /// tensors, and stored f32 weights whose bytes are 4-byte aligned (an mmap'd safetensors file keeps
    /// them aligned). `None` means the row must be converted with [`MatrixRows::read_row`].
    pub fn row_slice(&self, row: usize, cols: usize) -> Option<&[f32]> {
        match self {
            MatrixRows::Dense { data, cols: c } => data.get(row * c..(row + 1) * c),
            MatrixRows::Stored(w) => match &w.payload {
                WeightPayload::Dense(bytes) if w.ty.dtype == DType::F32 && cfg!(target_endian = "little") => {
                    let bytes = bytes.as_slice().get(row * cols * 4..(row + 1) * cols * 4)?;
                    // SAFETY: every bit pattern is a valid f32, and `align_to` only hands out the part of
                    // the slice that is correctly aligned; little-endian storage is the f32 layout here.
                    let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
                    (head.is_empty() && tail.is_empty()).then_some(floats)
                }
                _ => None,
            },
        }
    }

    /// Writes row `row` as f32 into `out` (`out.len()` is the row length).
    pub fn read_row(&self, row: usize, out: &mut [f32]) {
        match self {
            MatrixRows::Stored(w) => w.read_row_f32(row, out),
            MatrixRows::Dense { data, cols } => out.copy_from_slice(&data[row * cols..(row + 1) * cols]),
        }
    }
}

/// Wraps f32 results as a tensor of `dtype`, the declared float type of the result.
pub fn f32_to_tensor(dtype: DType, shape: Vec<usize>, values: Vec<f32>) -> Result<Tensor, String> {
    let data = match dtype {
        DType::F32 => TensorData::F32(values),
        DType::F16 => TensorData::F16(values.into_iter().map(f16::from_f32).collect()),
        DType::BF16 => TensorData::BF16(values.into_iter().map(bf16::from_f32).collect()),
        DType::F64 => TensorData::F64(values.into_iter().map(f64::from).collect()),
        other => return Err(format!("the result is declared as {other}, but this op produces floating-point values")),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}
