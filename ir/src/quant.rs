//! Memory layout of the quantized weight dtypes, with reference quantization and dequantization.
//!
//! A quantized weight has a logical shape `[N, K]` (rows are output channels, or vocabulary entries
//! for embedding tables) and is stored as separate buffers:
//! - `q8c`: `data` i8 `[N*K]`, `scales` f32 `[N]`.
//! - `q4g<G>[z]`: `data` u8 `[N*K/2]`, two elements per byte, the even column in the low nibble;
//!   `scales` f32 `[N*K/G]`; with `z`, `zeros` f32 `[N*K/G]`. `K` must be a multiple of `G`.
//!
//! All buffers are little-endian. Dequantization of one row is what executors call in their inner
//! loops, so it works row by row into a caller-provided buffer.

use crate::DType;

/// Buffer sizes in bytes that a quantized `[n, k]` weight of `dtype` needs: (data, scales, zeros).
pub fn buffer_sizes(dtype: DType, n: usize, k: usize) -> Option<(usize, usize, usize)> {
    match dtype {
        DType::Q8C => Some((n * k, n * 4, 0)),
        DType::Q4G { group_size, zero_points } => {
            let g = group_size as usize;
            if !k.is_multiple_of(g) || !g.is_multiple_of(2) {
                return None;
            }
            let groups = n * k / g;
            Some((n * k / 2, groups * 4, if zero_points { groups * 4 } else { 0 }))
        }
        _ => None,
    }
}

fn read_f32(bytes: &[u8], i: usize) -> f32 {
    f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
}

/// Dequantizes row `row` of a `[n, k]` weight into `out` (`out.len() == k`). Buffers must have the sizes
/// of [`buffer_sizes`]; the weight store checks that when a weight is added.
pub fn dequantize_row(
    dtype: DType,
    k: usize,
    row: usize,
    data: &[u8],
    scales: &[u8],
    zeros: Option<&[u8]>,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), k);
    match dtype {
        DType::Q8C => {
            let s = read_f32(scales, row);
            for (o, &q) in out.iter_mut().zip(&data[row * k..(row + 1) * k]) {
                *o = (q as i8) as f32 * s;
            }
        }
        DType::Q4G { group_size, .. } => {
            let g = group_size as usize;
            let groups_per_row = k / g;
            let row_bytes = &data[row * k / 2..(row + 1) * k / 2];
            for grp in 0..groups_per_row {
                let gi = row * groups_per_row + grp;
                let s = read_f32(scales, gi);
                let z = zeros.map_or(8.0, |z| read_f32(z, gi));
                for j in 0..g / 2 {
                    let byte = row_bytes[grp * g / 2 + j];
                    out[grp * g + 2 * j] = ((byte & 0x0f) as f32 - z) * s;
                    out[grp * g + 2 * j + 1] = ((byte >> 4) as f32 - z) * s;
                }
            }
        }
        other => unreachable!("dequantize_row called with plain dtype {other}"),
    }
}

/// Quantized buffers produced by [`quantize`].
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedBuffers {
    pub data: Vec<u8>,
    pub scales: Vec<u8>,
    pub zeros: Option<Vec<u8>>,
}

/// Reference round-to-nearest quantization of a row-major `[n, k]` f32 matrix.
/// Symmetric formats use absmax scaling; `q4g..z` uses min/max per group.
pub fn quantize(dtype: DType, n: usize, k: usize, w: &[f32]) -> Option<QuantizedBuffers> {
    buffer_sizes(dtype, n, k)?;
    assert_eq!(w.len(), n * k, "quantize: matrix has {} elements, not {n}x{k}", w.len());
    let mut scales = Vec::new();
    match dtype {
        DType::Q8C => {
            let mut data = Vec::with_capacity(n * k);
            for row in w.chunks(k) {
                let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                scales.extend_from_slice(&s.to_le_bytes());
                data.extend(row.iter().map(|x| (x / s).round().clamp(-127.0, 127.0) as i8 as u8));
            }
            Some(QuantizedBuffers { data, scales, zeros: None })
        }
        DType::Q4G { group_size, zero_points } => {
            let mut data = Vec::with_capacity(n * k / 2);
            let mut zeros = zero_points.then(Vec::new);
            for group in w.chunks(group_size as usize) {
                let (s, z) = if let Some(zeros) = zeros.as_mut() {
                    let lo = group.iter().fold(f32::INFINITY, |m, &x| m.min(x));
                    let hi = group.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    let s = if hi > lo { (hi - lo) / 15.0 } else { 1.0 };
                    let z = -lo / s;
                    zeros.extend_from_slice(&z.to_le_bytes());
                    (s, z)
                } else {
                    let amax = group.iter().fold(0f32, |m, x| m.max(x.abs()));
                    (if amax > 0.0 { amax / 7.0 } else { 1.0 }, 8.0)
                };
                scales.extend_from_slice(&s.to_le_bytes());
                let q = |x: f32| (x / s + z).round().clamp(0.0, 15.0) as u8;
                for pair in group.chunks(2) {
                    data.push(q(pair[0]) | (q(pair[1]) << 4));
                }
            }
            Some(QuantizedBuffers { data, scales, zeros })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(dtype: DType, n: usize, k: usize) -> f32 {
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let b = quantize(dtype, n, k, &w).unwrap();
        let mut out = vec![0.0; k];
        let mut max_err = 0f32;
        for r in 0..n {
            dequantize_row(dtype, k, r, &b.data, &b.scales, b.zeros.as_deref(), &mut out);
            for (a, b) in out.iter().zip(&w[r * k..(r + 1) * k]) {
                max_err = max_err.max((a - b).abs());
            }
        }
        max_err
    }

    #[test]
    fn quantization_error_is_within_half_a_step() {
        let range = 50.0 / 17.0;
        assert!(round_trip(DType::Q8C, 4, 64) <= range / 127.0 * 0.5 + 1e-6);
        assert!(round_trip(DType::Q4G { group_size: 32, zero_points: false }, 4, 64) <= range / 7.0 * 0.5 + 1e-6);
        assert!(round_trip(DType::Q4G { group_size: 16, zero_points: true }, 4, 64) <= 2.0 * range / 15.0 * 0.5 + 1e-6);
    }

    #[test]
    fn sizes_require_whole_groups() {
        assert_eq!(buffer_sizes(DType::Q4G { group_size: 32, zero_points: true }, 2, 64), Some((64, 16, 16)));
        assert_eq!(buffer_sizes(DType::Q4G { group_size: 32, zero_points: false }, 2, 48), None);
        assert_eq!(buffer_sizes(DType::F32, 2, 2), None);
    }
}
