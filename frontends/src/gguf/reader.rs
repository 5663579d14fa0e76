//! The GGUF container: header, metadata and tensor infos, read from a memory map with every count,
//! length and offset checked against the file size before it is used. A hostile file gets an error,
//! never a panic, an out-of-bounds read or an allocation larger than the file.
//!
//! Layout (versions 2 and 3; version 1 used 32-bit counts and is long gone):
//! `"GGUF"`, u32 version, u64 tensor count, u64 metadata count, the metadata key/value pairs, the tensor
//! infos (name, u32 rank, u64 dims innermost first, u32 type, u64 offset), padding to `general.alignment`
//! (32 when absent), then the tensor data, each tensor at its offset from the start of the data section.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::GgufError;
use super::ggml_type::{GgmlType, supported_list};
use super::value::{MetaValue, MetadataLookup, ValueType};
use crate::FrontendError;

/// Arrays nested deeper than this are refused (the format allows nesting; real files use one level).
const MAX_ARRAY_DEPTH: usize = 8;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// Where one tensor's bytes are and how to read them.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as the file lists them: innermost (contiguous) first.
    pub ggml_dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    /// Dimensions outermost first, as kiln and PyTorch write shapes.
    pub fn shape(&self) -> Vec<u64> {
        self.ggml_dims.iter().rev().copied().collect()
    }

    /// The innermost dimension: the length of a row.
    pub fn row_len(&self) -> usize {
        self.ggml_dims.first().map_or(1, |&d| d as usize)
    }

    /// The number of rows: the product of every dimension but the innermost.
    pub fn rows(&self) -> usize {
        self.ggml_dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A parsed GGUF file whose tensor bytes stay in the (shared) memory map.
pub struct GgufFile {
    bytes: Arc<dyn AsRef<[u8]> + Send + Sync>,
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: usize,
    metadata: Vec<(String, MetaValue)>,
    by_key: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl MetadataLookup for GgufFile {
    fn value(&self, key: &str) -> Option<&MetaValue> {
        self.by_key.get(key).map(|&i| &self.metadata[i].1)
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> Result<GgufFile, FrontendError> {
        let io = |e: std::io::Error| FrontendError::Io { path: path.to_path_buf(), source: e };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only. A file truncated by another process while mapped can fault;
        // that is the documented limitation of every mmap-based loader and the price of not copying weights.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        GgufFile::parse(Arc::new(mmap)).map_err(|error| FrontendError::Gguf { path: path.to_path_buf(), error })
    }

    /// Parses a GGUF image held in memory (an mmap or a buffer).
    pub fn parse(bytes: Arc<dyn AsRef<[u8]> + Send + Sync>) -> Result<GgufFile, GgufError> {
        let buf: &[u8] = (*bytes).as_ref();
        let mut r = Cursor { buf, pos: 0 };
        let magic = r.take(4, "the magic")?;
        if magic != b"GGUF" {
            return Err(GgufError::BadMagic { found: magic.to_vec() });
        }
        let version = r.u32("the version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = r.u64("the tensor count")?;
        let kv_count = r.u64("the metadata count")?;
        // Smallest metadata entry: empty key (8) + type (4) + one byte; smallest tensor info: empty name (8)
        // + rank (4) + type (4) + offset (8).
        r.check_count(kv_count, 13, "the metadata count")?;
        r.check_count(tensor_count, 24, "the tensor count")?;

        let mut metadata = Vec::with_capacity(kv_count as usize);
        let mut by_key = HashMap::with_capacity(kv_count as usize);
        for i in 0..kv_count {
            let key = r.string(&format!("the key of metadata entry {i}"))?;
            let type_id = r.u32(&format!("the type of metadata `{key}`"))?;
            let ty =
                ValueType::from_id(type_id).ok_or_else(|| GgufError::BadValueType { key: key.clone(), type_id })?;
            let value = r.value(ty, &key, 0)?;
            if by_key.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            metadata.push((key, value));
        }

        let alignment = match by_key.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                let a = v.as_i128().ok_or_else(|| GgufError::WrongValueType {
                    key: "general.alignment".into(),
                    expected: "an integer".into(),
                    found: v.describe(),
                })?;
                match u64::try_from(a) {
                    Ok(a) if a.is_power_of_two() => a,
                    _ => return Err(GgufError::BadAlignment(a.clamp(0, u64::MAX as i128) as u64)),
                }
            }
        };

        struct RawInfo {
            name: String,
            dims: Vec<u64>,
            type_id: u32,
            offset: u64,
        }
        let mut raw = Vec::with_capacity(tensor_count as usize);
        for i in 0..tensor_count {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let n_dims = r.u32(&format!("the rank of tensor `{name}`"))?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(r.u64(&format!("dimension {d} of tensor `{name}`"))?);
            }
            let type_id = r.u32(&format!("the type of tensor `{name}`"))?;
            let offset = r.u64(&format!("the data offset of tensor `{name}`"))?;
            raw.push(RawInfo { name, dims, type_id, offset });
        }

        let file_len = buf.len() as u64;
        let data_offset = (r.pos as u64).div_ceil(alignment).saturating_mul(alignment);
        if data_offset > file_len && tensor_count > 0 {
            return Err(GgufError::Truncated {
                what: "the padding before the tensor data".into(),
                offset: r.pos as u64,
                needed: data_offset - r.pos as u64,
                len: file_len,
            });
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for RawInfo { name, dims, type_id, offset } in raw {
            let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnsupportedTensorType {
                name: name.clone(),
                type_id,
                type_name: GgmlType::name_of_id(type_id).unwrap_or("unknown").to_string(),
                supported: supported_list(),
            })?;
            let overflow = || GgufError::ShapeOverflow { name: name.clone(), dims: dims.clone() };
            let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
            let row_len = dims.first().copied().unwrap_or(1);
            if !row_len.is_multiple_of(ty.block_len() as u64) {
                return Err(GgufError::PartialBlock { name, ty: ty.to_string(), row_len, block: ty.block_len() });
            }
            let byte_len =
                (elements / ty.block_len() as u64).checked_mul(ty.block_bytes() as u64).ok_or_else(overflow)?;
            if !offset.is_multiple_of(alignment) {
                return Err(GgufError::MisalignedTensor { name, offset, alignment });
            }
            let start = data_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(byte_len));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => {
                    if by_name.insert(name.clone(), tensors.len()).is_some() {
                        return Err(GgufError::DuplicateTensor(name));
                    }
                    tensors.push(TensorInfo {
                        name,
                        ggml_dims: dims,
                        ty,
                        start: start as usize,
                        len: byte_len as usize,
                    });
                }
                _ => {
                    return Err(GgufError::TensorOutOfFile {
                        name,
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        len: file_len,
                    });
                }
            }
        }

        Ok(GgufFile {
            version,
            alignment,
            data_offset: data_offset.min(file_len) as usize,
            metadata,
            by_key,
            tensors,
            by_name,
            bytes,
        })
    }

    /// Metadata entries in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of `info` (checked against the file when it was parsed).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &(*self.bytes).as_ref()[info.start..info.start + info.len]
    }

    /// The shared backing memory, for weights that are ranges of it.
    pub fn source(&self) -> &Arc<dyn AsRef<[u8]> + Send + Sync> {
        &self.bytes
    }
}

/// A bounds-checked little-endian reader over the file image.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("took exactly N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Refuses `count` items of at least `min_len` bytes each when the rest of the file cannot hold them.
    fn check_count(&self, count: u64, min_len: u64, what: &str) -> Result<(), GgufError> {
        if count.saturating_mul(min_len) > self.remaining() {
            return Err(GgufError::CountTooLarge { what: what.to_string(), count, remaining: self.remaining() });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(&format!("the length of {what}"))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 { what: what.to_string() })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        let what = || format!("the value of `{key}`");
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(u8::from_le_bytes(self.array(&what())?)),
            ValueType::I8 => MetaValue::I8(i8::from_le_bytes(self.array(&what())?)),
            ValueType::U16 => MetaValue::U16(u16::from_le_bytes(self.array(&what())?)),
            ValueType::I16 => MetaValue::I16(i16::from_le_bytes(self.array(&what())?)),
            ValueType::U32 => MetaValue::U32(u32::from_le_bytes(self.array(&what())?)),
            ValueType::I32 => MetaValue::I32(i32::from_le_bytes(self.array(&what())?)),
            ValueType::F32 => MetaValue::F32(f32::from_le_bytes(self.array(&what())?)),
            ValueType::U64 => MetaValue::U64(u64::from_le_bytes(self.array(&what())?)),
            ValueType::I64 => MetaValue::I64(i64::from_le_bytes(self.array(&what())?)),
            ValueType::F64 => MetaValue::F64(f64::from_le_bytes(self.array(&what())?)),
            ValueType::Bool => {
                let [b] = self.array(&what())?;
                // The format says 0 or 1; anything else is read as true, as llama.cpp does.
                MetaValue::Bool(b != 0)
            }
            ValueType::String => MetaValue::String(self.string(&what())?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooDeep { key: key.to_string(), max: MAX_ARRAY_DEPTH });
                }
                let type_id = self.u32(&format!("the element type of `{key}`"))?;
                let elem = ValueType::from_id(type_id)
                    .ok_or_else(|| GgufError::BadValueType { key: key.to_string(), type_id })?;
                let count = self.u64(&format!("the length of `{key}`"))?;
                self.check_count(count, elem.min_encoded_len(), &format!("array `{key}`"))?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array { elem, items }
            }
        })
    }
}
