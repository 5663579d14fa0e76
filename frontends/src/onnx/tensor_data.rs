//! `TensorProto` payloads (initializers, `Constant` values, test data): `raw_data`, the typed repeated
//! fields, and external data files beside the model, all turned into little-endian element bytes.
//!
//! Every size is checked against the declared shape before anything is indexed, and external data
//! paths must stay inside the model's directory (no absolute paths, no `..`, no symlink leading out).
//!
//! Low-bit types arrive packed — 4-bit types two to a byte, 2-bit types four, the first element in the
//! lowest bits, an incomplete last byte padded — in `raw_data` and external data, and in `int32_data` one
//! packed byte per entry (8-bit types one code per entry); they are unpacked here to kiln's one code a
//! byte. Strings come from `string_data` and must be UTF-8.

use std::path::{Component, Path};
use std::sync::Arc;

use half::{bf16, f16};
use kiln_ir::{DType, LowBitType, Tensor, TensorData, WeightBytes};

use super::OnnxError;
use super::dtype::dtype_of;
use super::proto::{TensorProto, tensor_proto::DataLocation};

/// A decoded tensor: dtype, static shape, and little-endian element bytes (bool and low-bit codes as one
/// byte each); string tensors have no bytes and carry their elements in `strings`.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: WeightBytes,
    /// The elements of a `str` tensor (`None` for every other dtype).
    pub strings: Option<Vec<String>>,
}

impl RawTensor {
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn to_tensor(&self) -> Tensor {
        if let Some(strings) = &self.strings {
            return Tensor::new(self.shape.clone(), TensorData::Str(strings.clone()))
                .expect("string count checked against the shape when decoded");
        }
        let data = kiln_ir::weights::decode_le(self.dtype, self.bytes.as_slice());
        Tensor::new(self.shape.clone(), data).expect("byte length checked against the shape when decoded")
    }
}

/// Decodes `tp`; `model_dir` is where external data files live (`None`: external data is refused).
pub fn decode_tensor(tp: &TensorProto, model_dir: Option<&Path>) -> Result<RawTensor, OnnxError> {
    let name = tp.name().to_string();
    let bad = |message: String| OnnxError::BadTensor { name: name.clone(), message };
    let dtype = dtype_of(tp.data_type(), &format!("tensor `{name}`"))?;
    if tp.segment.is_some() {
        return Err(OnnxError::UnsupportedType { what: format!("tensor `{name}`"), kind: "segmented tensor".into() });
    }
    let mut shape = Vec::with_capacity(tp.dims.len());
    for &d in &tp.dims {
        shape.push(usize::try_from(d).map_err(|_| bad(format!("dims {:?} contain the negative size {d}", tp.dims)))?);
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= kiln_ir::eval::MAX_ELEMENTS)
        .ok_or_else(|| {
            bad(format!("dims {:?} describe more than {} elements", tp.dims, kiln_ir::eval::MAX_ELEMENTS))
        })?;
    if dtype == DType::Str {
        if tp.data_location() == DataLocation::External || tp.raw_data.is_some() {
            return Err(bad(
                "a string tensor must hold its elements in string_data (ONNX stores no raw strings)".into()
            ));
        }
        if tp.string_data.len() != count {
            return Err(bad(format!(
                "its shape {shape:?} holds {count} elements but string_data holds {}",
                tp.string_data.len()
            )));
        }
        let strings = tp
            .string_data
            .iter()
            .enumerate()
            .map(|(i, b)| {
                String::from_utf8(b.clone()).map_err(|_| OnnxError::UnsupportedType {
                    what: format!("tensor `{name}`"),
                    kind: format!("non-UTF-8 string (element {i})"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(RawTensor { name, dtype, shape, bytes: WeightBytes::from_vec(Vec::new()), strings: Some(strings) });
    }
    let elem = dtype.size_of().expect("ONNX dtypes map to plain kiln dtypes");
    // Bytes in the file: low-bit types are packed there.
    let expected_bytes = match dtype {
        DType::LowBit(t) => (count * t.bits() as usize).div_ceil(8),
        _ => count * elem,
    };
    let size_error = |what: &str, actual: usize, unit: &str| {
        bad(format!(
            "its shape {shape:?} holds {count} elements ({expected_bytes} bytes of {dtype}) but {what} holds {actual} {unit}"
        ))
    };
    let bytes = if tp.data_location() == DataLocation::External {
        let dir = model_dir.ok_or_else(|| OnnxError::ExternalData {
            name: name.clone(),
            message: "the model was read from memory, so there is no directory to read external data from".into(),
        })?;
        let bytes = read_external(tp, dir)?;
        if bytes.len() != expected_bytes {
            return Err(size_error("the external data", bytes.len(), "bytes"));
        }
        bytes
    } else if let Some(raw) = &tp.raw_data {
        if raw.len() != expected_bytes {
            return Err(size_error("raw_data", raw.len(), "bytes"));
        }
        WeightBytes::from_vec(raw.clone())
    } else {
        let typed = typed_bytes(tp, dtype, count).map_err(|(field, n)| size_error(field, n, "values"))?;
        WeightBytes::from_vec(typed)
    };
    let bytes = match dtype {
        DType::LowBit(t) if t.bits() < 8 => WeightBytes::from_vec(unpack_codes(t, bytes.as_slice(), count)),
        _ => bytes,
    };
    Ok(RawTensor { name, dtype, shape, bytes, strings: None })
}

/// The `count` codes of a packed sub-byte buffer, one a byte: element `i` sits in byte `i * bits / 8` at
/// bit `(i * bits) % 8`, the first element in the lowest bits. `packed` holds enough bytes (checked by
/// the caller); padding bits of the last byte are ignored.
pub fn unpack_codes(t: LowBitType, packed: &[u8], count: usize) -> Vec<u8> {
    let bits = t.bits() as usize;
    let per_byte = 8 / bits;
    let mask = ((1u32 << bits) - 1) as u8;
    (0..count).map(|i| (packed[i / per_byte] >> ((i % per_byte) * bits)) & mask).collect()
}

/// Element bytes from the typed repeated field that holds `dtype` (ONNX's layout: small ints, uint16
/// and 16-bit floats widened into `int32_data`; uint32 and uint64 in `uint64_data`), or the field name
/// and its length when it disagrees.
fn typed_bytes(tp: &TensorProto, dtype: DType, count: usize) -> Result<Vec<u8>, (&'static str, usize)> {
    fn check<T>(field: &'static str, v: &[T], count: usize) -> Result<(), (&'static str, usize)> {
        if v.len() == count { Ok(()) } else { Err((field, v.len())) }
    }
    let ints = || check("int32_data", &tp.int32_data, count).map(|()| tp.int32_data.iter());
    // Low-bit types: one int32 per packed byte (so one per element for the 8-bit types).
    let packed_ints = |t: LowBitType| {
        let entries = (count * t.bits() as usize).div_ceil(8);
        check("int32_data", &tp.int32_data, entries).map(|()| tp.int32_data.iter().map(|&x| x as u8).collect())
    };
    let uints = || check("uint64_data", &tp.uint64_data, count).map(|()| tp.uint64_data.iter());
    Ok(match dtype {
        DType::F32 => {
            check("float_data", &tp.float_data, count)?;
            tp.float_data.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        DType::F64 => {
            check("double_data", &tp.double_data, count)?;
            tp.double_data.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        DType::I64 => {
            check("int64_data", &tp.int64_data, count)?;
            tp.int64_data.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        DType::I32 => ints()?.flat_map(|x| x.to_le_bytes()).collect(),
        DType::I16 => ints()?.flat_map(|&x| (x as i16).to_le_bytes()).collect(),
        DType::I8 => ints()?.map(|&x| x as i8 as u8).collect(),
        DType::U8 => ints()?.map(|&x| x as u8).collect(),
        DType::U16 => ints()?.flat_map(|&x| (x as u16).to_le_bytes()).collect(),
        DType::U32 => uints()?.flat_map(|&x| (x as u32).to_le_bytes()).collect(),
        DType::U64 => uints()?.flat_map(|x| x.to_le_bytes()).collect(),
        DType::Bool => ints()?.map(|&x| u8::from(x != 0)).collect(),
        // 16-bit floats are stored as their bit patterns.
        DType::F16 => ints()?.flat_map(|&x| f16::from_bits(x as u16).to_le_bytes()).collect(),
        DType::BF16 => ints()?.flat_map(|&x| bf16::from_bits(x as u16).to_le_bytes()).collect(),
        DType::LowBit(t) => packed_ints(t)?,
        DType::Q8C | DType::Q4G { .. } | DType::Str => {
            unreachable!("ONNX dtypes map to plain kiln dtypes; strings are decoded before")
        }
    })
}

/// Reads the external data of `tp` from a file inside `dir`, memory-mapped.
fn read_external(tp: &TensorProto, dir: &Path) -> Result<WeightBytes, OnnxError> {
    let name = tp.name();
    let err = |message: String| OnnxError::ExternalData { name: name.to_string(), message };
    let (mut location, mut offset, mut length) = (None, 0usize, None);
    for entry in &tp.external_data {
        let parse =
            |v: &str| v.parse::<usize>().map_err(|_| err(format!("`{}` = `{v}` is not a byte count", entry.key())));
        match entry.key() {
            "location" => location = Some(entry.value().to_string()),
            "offset" => offset = parse(entry.value())?,
            "length" => length = Some(parse(entry.value())?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| err("it has no `location` entry".into()))?;
    let relative = Path::new(&location);
    if relative.as_os_str().is_empty()
        || !relative.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(err(format!(
            "location `{location}` must be a relative path inside the model's directory (no `..`, no absolute path)"
        )));
    }
    let io = |what: &str, e: std::io::Error| err(format!("cannot {what} `{location}` beside the model: {e}"));
    let root = dir.canonicalize().map_err(|e| io("resolve the directory of", e))?;
    let file = root.join(relative).canonicalize().map_err(|e| io("open", e))?;
    if !file.starts_with(&root) {
        return Err(err(format!(
            "location `{location}` resolves to {}, outside the model's directory {} (a symlink leads out)",
            file.display(),
            root.display()
        )));
    }
    let f = std::fs::File::open(&file).map_err(|e| io("open", e))?;
    // SAFETY: the map is read-only; like every mmap-based loader we rely on the file not being
    // truncated while the model is in use.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io("map", e))?;
    let len = map.len();
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(len),
    }
    .filter(|&e| e <= len && offset <= e)
    .ok_or_else(|| {
        err(format!("the range at offset {offset} of length {length:?} is outside `{location}` ({len} bytes)"))
    })?;
    let source: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(map);
    WeightBytes::new(source, offset..end).map_err(|e| err(e.to_string()))
}
