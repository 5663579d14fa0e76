//! Memory-mapped safetensors files as a kiln [`WeightStore`].
//!
//! Tensor bytes are never copied: each stored weight is a range of one shared mmap. The safetensors
//! crate validates the header (offsets inside the file, no overlaps, sizes matching dtypes), so a
//! truncated or hostile file is an error here, not an out-of-bounds read later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_ir::{DType, Shape, TensorType, WeightBytes, WeightPayload, WeightStore};
use safetensors::{Dtype as StDtype, SafeTensorError, SafeTensors};

use crate::FrontendError;

/// Maps a safetensors dtype onto kiln's; `None` for the ones kiln does not import. The 8-bit float
/// dtypes (F8_E4M3, F8_E5M2, F8_E8M0) have kiln dtypes, but kiln computes nothing on them (they are
/// storage-only), so a checkpoint holding them is refused here, where the message can name the tensor,
/// rather than deep inside a `linear` that cannot take them.
fn kiln_dtype(dtype: StDtype) -> Option<DType> {
    Some(match dtype {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        StDtype::I64 => DType::I64,
        StDtype::I32 => DType::I32,
        StDtype::I16 => DType::I16,
        StDtype::I8 => DType::I8,
        StDtype::U8 => DType::U8,
        StDtype::U16 => DType::U16,
        StDtype::U32 => DType::U32,
        StDtype::U64 => DType::U64,
        StDtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Opens `path` and adds every tensor in it to `store` under its safetensors name.
pub fn load_safetensors_into(path: &Path, store: &mut WeightStore) -> Result<(), FrontendError> {
    let io = |e: std::io::Error| FrontendError::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the mapping is read-only. A file truncated by another process while mapped can fault;
    // that is the documented limitation of every mmap-based loader (safetensors, llama.cpp) and the
    // price of not copying multi-gigabyte weights.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let mmap: Arc<memmap2::Mmap> = Arc::new(mmap);
    let bad = |message: String| FrontendError::BadWeights { path: path.to_path_buf(), message };
    let (header_len, _) = SafeTensors::read_metadata(&mmap[..]).map_err(|e| bad(explain(&mmap[..], &e)))?;
    let parsed = SafeTensors::deserialize(&mmap[..]).map_err(|e| bad(explain(&mmap[..], &e)))?;
    // Data offsets in the header are relative to the byte after the 8-byte length and the JSON header.
    let data_start = 8 + header_len;
    let source: Arc<dyn AsRef<[u8]> + Send + Sync> = mmap.clone();
    let mut names: Vec<String> = parsed.names().into_iter().map(str::to_string).collect();
    names.sort();
    for name in names {
        let view = parsed.tensor(&name).map_err(|e| bad(e.to_string()))?;
        let dtype = kiln_dtype(view.dtype()).ok_or_else(|| {
            bad(format!("tensor `{name}` has dtype {:?}, which kiln cannot import (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, U16, U32, U64, BOOL)", view.dtype()))
        })?;
        let data = view.data();
        let start = data.as_ptr() as usize - mmap.as_ptr() as usize;
        debug_assert!(start >= data_start);
        let bytes = WeightBytes::new(source.clone(), start..start + data.len()).map_err(|e| bad(e.to_string()))?;
        let ty = TensorType::new(dtype, Shape::of(&view.shape().iter().map(|&d| d as u64).collect::<Vec<_>>()));
        store.insert(name, ty, WeightPayload::Dense(bytes)).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// The safetensors crate's validation error, with the facts of the file that make it actionable
/// (which tensors overlap, how far the data runs past the end of the file).
fn explain(file: &[u8], error: &SafeTensorError) -> String {
    let crate_message = error.to_string();
    let header_len = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let data_len = header_len.and_then(|n| (file.len() as u64).checked_sub(8 + n));
    match error {
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooSmall => match header_len {
            Some(n) => format!(
                "{crate_message}: the header length field says {n} bytes but only {} follow it (is the file truncated?)",
                file.len() - 8
            ),
            None => format!("{crate_message}: the file has {} bytes, fewer than the 8-byte header length", file.len()),
        },
        SafeTensorError::InvalidOffset(name) => {
            let tensors = header_ranges(file);
            let Some(i) = tensors.iter().position(|(n, _)| n == name) else { return crate_message };
            let (_, range) = &tensors[i];
            if range.end < range.start {
                return format!("tensor `{name}` has data_offsets {range:?}, which end before they start");
            }
            match i.checked_sub(1).map(|p| &tensors[p]) {
                Some((prev, prev_range)) if range.start < prev_range.end => format!(
                    "tensor `{name}` (data bytes {range:?}) overlaps tensor `{prev}` (data bytes {prev_range:?})"
                ),
                Some((prev, prev_range)) => format!(
                    "tensor `{name}` starts at data byte {} but the previous tensor `{prev}` ends at {}: tensors must be \
                     contiguous",
                    range.start, prev_range.end
                ),
                None => format!("the first tensor `{name}` starts at data byte {} instead of 0", range.start),
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            let tensors = header_ranges(file);
            match (tensors.last(), data_len) {
                (Some((name, range)), Some(have)) if range.end as u64 > have => format!(
                    "tensor `{name}` runs to data byte {} but the file holds only {have} bytes of tensor data: the file \
                     is truncated or its header's offsets point outside it",
                    range.end
                ),
                (Some((_, range)), Some(have)) => {
                    format!("{} bytes follow the last tensor's data at the end of the file", have - range.end as u64)
                }
                _ => crate_message,
            }
        }
        _ => crate_message,
    }
}

/// The tensors of a safetensors header sorted by their data offsets, read leniently (for explaining an
/// error the crate found, so nothing here is trusted for reading data).
fn header_ranges(file: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let Some(n) = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else {
        return Vec::new();
    };
    let Some(header) = file.get(8..8usize.saturating_add(n)) else { return Vec::new() };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(header) else { return Vec::new() };
    let mut out: Vec<(String, std::ops::Range<usize>)> = map
        .iter()
        .filter_map(|(name, info)| {
            let offsets = info.get("data_offsets")?.as_array()?;
            let start = offsets.first()?.as_u64()? as usize;
            let end = offsets.get(1)?.as_u64()? as usize;
            Some((name.clone(), start..end))
        })
        .collect();
    out.sort_by_key(|(name, r)| (r.start, r.end, name.clone()));
    out
}

/// Loads one safetensors file as a new store.
pub fn load_safetensors(path: &Path) -> Result<WeightStore, FrontendError> {
    let mut store = WeightStore::new();
    load_safetensors_into(path, &mut store)?;
    Ok(store)
}

/// The weights file that belongs to a `.kir` graph: the same path with the `.safetensors` extension.
pub fn weights_beside(kir: &Path) -> PathBuf {
    kir.with_extension("safetensors")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a safetensors file by hand (8-byte header length, JSON header, data), so the test does
    /// not depend on the writer of the crate it is testing against.
    fn write_file(path: &Path, header: &str, data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_tensors_without_copying_and_checks_the_header() {
        let dir = std::env::temp_dir().join(format!("kiln-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let a: Vec<u8> = [1.0f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let b: Vec<u8> = [half::bf16::from_f32(0.5)].iter().flat_map(|x| x.to_le_bytes()).collect();
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}"#;
        write_file(&path, header, &[a, b].concat());
        let store = load_safetensors(&path).unwrap();
        assert_eq!(store.get("a").unwrap().to_tensor().to_f32_vec(), vec![1.0, -2.0]);
        assert_eq!(store.get("b").unwrap().ty.to_string(), "bf16[1, 1]");
        assert_eq!(store.get("b").unwrap().to_tensor().to_f32_vec(), vec![0.5]);

        // Offsets past the end of the file are refused with a message naming the file.
        let bad = dir.join("bad.safetensors");
        write_file(&bad, r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, &[0u8; 8]);
        let e = load_safetensors(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.safetensors"), "{e}");

        // An 8-bit float tensor is refused naming the tensor and its dtype.
        let fp8 = dir.join("fp8.safetensors");
        write_file(&fp8, r#"{"q":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#, &[0x38, 0x7e]);
        let e = load_safetensors(&fp8).unwrap_err().to_string();
        assert!(e.contains("tensor `q` has dtype F8_E4M3, which kiln cannot import"), "{e}");

        // A truncated header is an error, not a panic.
        std::fs::write(&bad, [3u8, 0, 0]).unwrap();
        assert!(load_safetensors(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
