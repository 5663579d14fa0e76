//! Decoding of ggml's block formats, written from the format definitions (ggml-common.h's block
//! structs and gguf-py's reference dequantizers were read to learn them; no code was taken).
//!
//! Two things happen here:
//! - Q4_0 and Q4_1 are *repacked* into kiln's `q4g32` / `q4g32z` (same numbers, kiln's layout): ggml
//!   stores elements 0..15 of a block in the low nibbles of its 16 bytes and 16..31 in the high nibbles,
//!   kiln stores element `2j` in the low and `2j+1` in the high nibble of byte `j`; scales become f32.
//! - Every supported type can be *dequantized* to f32, row by row. Q8_0, Q5_0, Q4_K and Q6_K are imported
//!   this way because kiln has no dtype with their layout yet (`q8c` has one scale per row, Q8_0 one per 32
//!   elements; kiln has no 5-bit or super-block formats). That costs memory (4 bytes an element) but
//!   keeps their exact values; a quantization pass can requantize them into a kiln format afterwards.

use half::{bf16, f16};

use super::ggml_type::GgmlType;

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Dequantizes one row of `ty` (`src` holds exactly the row's bytes) into `out` (`out.len()` = row length).
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    debug_assert_eq!(Some(src.len()), ty.row_bytes(out.len()));
    let bb = ty.block_bytes();
    let bl = ty.block_len();
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::F64 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        GgmlType::I8 => {
            for (o, &c) in out.iter_mut().zip(src) {
                *o = c as i8 as f32;
            }
        }
        GgmlType::I16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = i16::from_le_bytes([c[0], c[1]]) as f32;
            }
        }
        GgmlType::I32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32;
            }
        }
        GgmlType::I64 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(8)) {
                *o = i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for (block, y) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
                let d = f16_at(block, 0);
                let (m, qs) = if ty == GgmlType::Q4_1 { (f16_at(block, 2), &block[4..]) } else { (0.0, &block[2..]) };
                for (j, &q) in qs.iter().enumerate() {
                    let (lo, hi) = ((q & 0x0f) as f32, (q >> 4) as f32);
                    if ty == GgmlType::Q4_1 {
                        y[j] = lo * d + m;
                        y[j + 16] = hi * d + m;
                    } else {
                        y[j] = (lo - 8.0) * d;
                        y[j + 16] = (hi - 8.0) * d;
                    }
                }
            }
        }
        GgmlType::Q5_0 => {
            for (block, y) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
                let d = f16_at(block, 0);
                // Bit j of `high` is the fifth bit of element j (elements 0..31).
                let high = u32::from_le_bytes(block[2..6].try_into().expect("4 bytes"));
                for (j, &q) in block[6..22].iter().enumerate() {
                    let lo = (q & 0x0f) as u32 | (((high >> j) & 1) << 4);
                    let hi = (q >> 4) as u32 | (((high >> (j + 16)) & 1) << 4);
                    y[j] = (lo as f32 - 16.0) * d;
                    y[j + 16] = (hi as f32 - 16.0) * d;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (block, y) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
                let d = f16_at(block, 0);
                for (o, &q) in y.iter_mut().zip(&block[2..34]) {
                    *o = q as i8 as f32 * d;
                }
            }
        }
        GgmlType::Q4_K => {
            for (block, y) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
                let d = f16_at(block, 0);
                let dmin = f16_at(block, 2);
                let packed = &block[4..16];
                let qs = &block[16..144];
                // Eight sub-blocks of 32; sub-block s uses the low nibbles (s even) or high nibbles (s odd)
                // of the 32 bytes qs[32*(s/2)..].
                for s in 0..8 {
                    let (sc, mn) = q4k_scale_min(packed, s);
                    let (scale, min) = (d * sc as f32, dmin * mn as f32);
                    let bytes = &qs[32 * (s / 2)..32 * (s / 2) + 32];
                    let shift = 4 * (s % 2);
                    for (o, &q) in y[32 * s..32 * s + 32].iter_mut().zip(bytes) {
                        *o = scale * ((q >> shift) & 0x0f) as f32 - min;
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for (block, y) in src.chunks_exact(bb).zip(out.chunks_exact_mut(bl)) {
                let ql = &block[0..128];
                let qh = &block[128..192];
                let scales = &block[192..208];
                let d = f16_at(block, 208);
                // Two halves of 128 elements; in each, element l + 32*i (i in 0..4, l in 0..32) takes its low
                // four bits from ql (low nibble for i < 2, high for i >= 2, byte l + 32*(i%2)) and its top two
                // bits from bits 2i..2i+1 of qh[l]; the sub-scale covers 16 elements.
                for half in 0..2 {
                    let (ql, qh, sc, y) =
                        (&ql[64 * half..], &qh[32 * half..], &scales[8 * half..], &mut y[128 * half..128 * half + 128]);
                    for i in 0..4 {
                        for l in 0..32 {
                            let low = (ql[l + 32 * (i % 2)] >> (4 * (i / 2))) & 0x0f;
                            let top = (qh[l] >> (2 * i)) & 0x03;
                            let q = (low | (top << 4)) as i32 - 32;
                            let s = sc[l / 16 + 2 * i] as i8 as f32;
                            y[l + 32 * i] = d * s * q as f32;
                        }
                    }
                }
            }
        }
    }
}

/// Sub-block `s` (0..8) scale and minimum of a Q4_K super-block, 6 bits each: for `s < 4` the low six bits
/// of bytes `s` and `s + 4`; for `s >= 4` a nibble of byte `s + 4` with the top two bits of bytes `s - 4`
/// (scale) and `s` (minimum) above it.
fn q4k_scale_min(packed: &[u8], s: usize) -> (u8, u8) {
    if s < 4 {
        (packed[s] & 0x3f, packed[s + 4] & 0x3f)
    } else {
        ((packed[s + 4] & 0x0f) | ((packed[s - 4] >> 6) << 4), (packed[s + 4] >> 4) | ((packed[s] >> 6) << 4))
    }
}

/// kiln `q4g32[z]` buffers being filled row by row.
#[derive(Default)]
pub struct Q4Buffers {
    pub data: Vec<u8>,
    pub scales: Vec<u8>,
    pub zeros: Vec<u8>,
}

/// Repacks one row of Q4_0 (`zero_points == false`) or Q4_1 into kiln's `q4g32` / `q4g32z` layout.
///
/// Q4_0 maps exactly: ggml's `(q - 8) * d` is kiln's `(q - 8) * scale`.
/// Q4_1 stores `q * d + m`; kiln's `q4g32z` computes `(q - z) * scale`, so `scale = d` and `z = -m / d`.
/// The values agree up to float rounding: `z` is rounded to f32 and `(q - z) * d` rounds twice where ggml
/// rounds `q * d + m` once or twice (a fused multiply-add or not), so the two differ by a few ulps of
/// `max(|q * d|, |m|)` (relative error around 1e-7). A block with `d == 0` holds the constant `m`; it is
/// written exactly as nibbles 0, scale 1 and zero point `-m`.
pub fn repack_q4_row(src: &[u8], zero_points: bool, out: &mut Q4Buffers) {
    let ty = if zero_points { GgmlType::Q4_1 } else { GgmlType::Q4_0 };
    for block in src.chunks_exact(ty.block_bytes()) {
        let d = f16_at(block, 0);
        let qs = if zero_points { &block[4..20] } else { &block[2..18] };
        let nibble = |e: usize| if e < 16 { qs[e] & 0x0f } else { qs[e - 16] >> 4 };
        let constant_block = zero_points && d == 0.0;
        for j in 0..16 {
            let byte = if constant_block { 0 } else { nibble(2 * j) | (nibble(2 * j + 1) << 4) };
            out.data.push(byte);
        }
        if zero_points {
            let m = f16_at(block, 2);
            let (scale, zero) = if constant_block { (1.0f32, -m) } else { (d, -m / d) };
            out.scales.extend_from_slice(&scale.to_le_bytes());
            out.zeros.extend_from_slice(&zero.to_le_bytes());
        } else {
            out.scales.extend_from_slice(&d.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, quant};

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_repack_matches_ggml_values() {
        // Two Q4_1 blocks and two Q4_0 blocks with every nibble value present.
        let mut q41 = Vec::new();
        let mut q40 = Vec::new();
        for (d, m) in [(0.125f32, -1.5f32), (0.0, 0.75)] {
            q41.extend_from_slice(&f16_bytes(d));
            q41.extend_from_slice(&f16_bytes(m));
            q40.extend_from_slice(&f16_bytes(d + 0.5));
            for j in 0..16u8 {
                let b = j | ((15 - j) << 4);
                q41.push(b);
                q40.push(b.rotate_left(3));
            }
        }
        for (src, zp) in [(&q41, true), (&q40, false)] {
            let ty = if zp { GgmlType::Q4_1 } else { GgmlType::Q4_0 };
            let mut want = vec![0.0; 64];
            dequantize_row(ty, src, &mut want);
            let mut b = Q4Buffers::default();
            repack_q4_row(src, zp, &mut b);
            let mut got = vec![0.0; 64];
            let dtype = DType::Q4G { group_size: 32, zero_points: zp };
            quant::dequantize_row(dtype, 64, 0, &b.data, &b.scales, zp.then_some(&b.zeros[..]), &mut got);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{ty} element {i}: {g} vs {w}");
            }
        }
        // The d == 0 block of Q4_1 is the constant m, exactly.
        let mut want = vec![0.0; 64];
        dequantize_row(GgmlType::Q4_1, &q41, &mut want);
        assert!(want[32..].iter().all(|&x| x == 0.75));
    }

    #[test]
    fn q4k_scales_unpack_six_bits() {
        let mut packed = [0u8; 12];
        packed[0] = 0b11_000001; // scale 0 = 1, top bits of scale 4 = 3
        packed[4] = 0b10_000010; // min 0 = 2, top bits of min 4 = 2
        packed[8] = 0x5a; // scale 4 low nibble 0xa, min 4 low nibble 0x5
        assert_eq!(q4k_scale_min(&packed, 0), (1, 2));
        assert_eq!(q4k_scale_min(&packed, 4), (0x3a, 0x25));
    }
}
