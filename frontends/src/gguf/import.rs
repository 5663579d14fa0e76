//! GGUF tensors into kiln weights: plain tensors stay ranges of the memory map; Q4_0/Q4_1 are repacked
//! into kiln's `q4g32`/`q4g32z`; other block formats are dequantized to f32 (see [`super::blocks`]); and
//! tensors whose values must change on the way back to HF layout (see [`super::arch::Fixup`]) get owned
//! buffers.

use kiln_ir::{DType, Shape, TensorType, WeightBytes, WeightPayload};

use super::GgufError;
use super::arch::{Fixup, unpermute_rows};
use super::blocks::{Q4Buffers, dequantize_row, repack_q4_row};
use super::ggml_type::GgmlType;
use super::reader::{GgufFile, TensorInfo};

/// The kiln dtype of a plain ggml type; `None` for block formats.
fn plain_dtype(ty: GgmlType) -> Option<DType> {
    Some(match ty {
        GgmlType::F32 => DType::F32,
        GgmlType::F16 => DType::F16,
        GgmlType::BF16 => DType::BF16,
        GgmlType::F64 => DType::F64,
        GgmlType::I8 => DType::I8,
        GgmlType::I16 => DType::I16,
        GgmlType::I32 => DType::I32,
        GgmlType::I64 => DType::I64,
        _ => return None,
    })
}

/// The kiln type and payload of one tensor after `fix`.
pub fn import_tensor(file: &GgufFile, info: &TensorInfo, fix: Fixup) -> Result<(TensorType, WeightPayload), GgufError> {
    let shape = info.shape();
    let (rows, k) = (info.rows(), info.row_len());
    let row_bytes = info.ty.row_bytes(k).expect("whole blocks checked when the file was parsed");
    let bytes = file.tensor_bytes(info);
    let bad = |message: String| GgufError::Weight { name: info.name.clone(), message };

    // Row order: identity, or llama.cpp's Q/K permutation undone. A 1-D tensor (a bias) is a column of
    // one-element rows for this purpose.
    let vector = info.ggml_dims.len() <= 1;
    let perm = match fix.unpermute_heads {
        None => None,
        Some(heads) => {
            let n = if vector { k } else { rows };
            Some(unpermute_rows(n, heads as usize).ok_or_else(|| {
                bad(format!("its {n} rows cannot be split into {heads} heads of an even size, so the Q/K permutation cannot be undone"))
            })?)
        }
    };
    let src_row = |r: usize| -> &[u8] {
        let s = match (&perm, vector) {
            (Some(p), false) => p[r],
            _ => r,
        };
        &bytes[s * row_bytes..(s + 1) * row_bytes]
    };

    let needs_f32 = fix.subtract_one || (perm.is_some() && vector);
    let q4 = matches!(info.ty, GgmlType::Q4_0 | GgmlType::Q4_1) && shape.len() == 2;

    if !needs_f32 && q4 {
        let zero_points = info.ty == GgmlType::Q4_1;
        let groups = rows * k / 32;
        let mut b = Q4Buffers {
            data: Vec::with_capacity(rows * k / 2),
            scales: Vec::with_capacity(groups * 4),
            zeros: Vec::with_capacity(if zero_points { groups * 4 } else { 0 }),
        };
        for r in 0..rows {
            repack_q4_row(src_row(r), zero_points, &mut b);
        }
        let ty = TensorType::new(DType::Q4G { group_size: 32, zero_points }, Shape::of(&shape));
        let payload = WeightPayload::Quantized {
            data: WeightBytes::from_vec(b.data),
            scales: WeightBytes::from_vec(b.scales),
            zeros: zero_points.then(|| WeightBytes::from_vec(b.zeros)),
        };
        return Ok((ty, payload));
    }

    if !needs_f32 && let Some(dtype) = plain_dtype(info.ty) {
        let ty = TensorType::new(dtype, Shape::of(&shape));
        let payload = match &perm {
            // Untouched plain tensors are views of the memory map: nothing is copied.
            None => WeightPayload::Dense(
                WeightBytes::new(file.source().clone(), info.start..info.start + info.len)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            Some(_) => WeightPayload::Dense(WeightBytes::from_vec((0..rows).flat_map(src_row).copied().collect())),
        };
        return Ok((ty, payload));
    }

    // Everything else becomes f32.
    let mut values = vec![0f32; rows * k];
    for (r, out) in values.chunks_exact_mut(k.max(1)).enumerate() {
        dequantize_row(info.ty, src_row(r), out);
    }
    if let (Some(p), true) = (&perm, vector) {
        values = p.iter().map(|&s| values[s]).collect();
    }
    if fix.subtract_one {
        // llama.cpp stored 1 + w in f32; w comes back up to one f32 rounding of 1 + w (~6e-8 absolute).
        values.iter_mut().for_each(|v| *v -= 1.0);
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((TensorType::new(DType::F32, Shape::of(&shape)), WeightPayload::Dense(WeightBytes::from_vec(bytes))))
}
