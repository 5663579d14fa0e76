//! The f32 dot products every row-independent `linear` output goes through.
//!
//! Sixteen independent accumulators ("lanes") let the compiler keep the products in vector registers (a
//! single running sum cannot be vectorised without reordering additions, which Rust does not do on its
//! own). Lane l accumulates the products of elements `i ≡ l (mod 16)` in increasing `i`, each as one fused
//! multiply-add (`a·b + acc` rounded once); then the products past the last full group of 16 are added to
//! lanes 0, 1, ... the same way, and the lanes are reduced pairwise (lane l takes lane l + width, for width
//! 8, 4, 2, 1). That order is fixed by this code, not by the instruction set: the portable loop
//! (`f32::mul_add`, which is correctly rounded everywhere, in software where the CPU has no FMA), the
//! AVX2+FMA path (two 8-wide registers per accumulator) and the AVX-512 path (one 16-wide register)
//! perform exactly the same IEEE operations on every lane, so results are bit-identical on every CPU.
//!
//! [`dot_tile`] computes a tile of such dot products, `C` weight rows by `R` input rows, loading each
//! weight and input vector once per tile instead of once per product. Every product keeps its own
//! accumulators, updated in the order above, so each output of a tile is bit-identical to [`dot`] of its
//! two rows, whatever the tile's shape and whichever other rows share it. This is what makes a
//! verification step of several tokens compute each token's logits exactly as a one-token step does,
//! while costing little more than one (a one-token step streams every weight from memory; a tile reuses
//! each loaded weight for `R` tokens).

const LANES: usize = 16;

/// Adds the products of the elements past the last full group of 16 into the lanes, then reduces the
/// lanes pairwise. Every path ends here or in a vector reduction that performs the same additions.
#[inline(always)]
fn finish(mut acc: [f32; LANES], a_tail: &[f32], b_tail: &[f32]) -> f32 {
    for (l, (x, y)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[l] = x.mul_add(*y, acc[l]);
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// The portable loop: lane l accumulates the products of elements `i ≡ l (mod 16)`.
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    finish(acc, ca.remainder(), cb.remainder())
}

/// `Σ a[i]·b[i]` over the common length, accumulated in f32 in the fixed order of the module docs.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    dot_tile::<1, 1>([&a[..n]], [&b[..n]])[0][0]
}

/// `out[c][r] = dot(w[c], x[r])`, bit for bit, for rows that all have the same length.
pub fn dot_tile<const C: usize, const R: usize>(w: [&[f32]; C], x: [&[f32]; R]) -> [[f32; R]; C] {
    let n = w.first().or(x.first()).map_or(0, |v| v.len());
    assert!(
        w.iter().chain(&x).all(|v| v.len() == n),
        "dot_tile needs rows of one length (callers slice them to the matrix width)"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { x86::tile_avx512(w, x) };
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            return unsafe { x86::tile_avx2(w, x) };
        }
    }
    w.map(|wc| x.map(|xr| dot_lanes(wc, xr)))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m128, __m256, __m512, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm256_add_ps,
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps, _mm512_add_ps, _mm512_castpd_ps, _mm512_castps_pd, _mm512_castps512_ps256, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps,
        _mm512_unpackhi_pd, _mm512_unpacklo_pd,
    };

    use super::{LANES, finish};

    /// The pairwise reduction of [`finish`] (with no tail) on lanes 0-7 already summed with lanes 8-15:
    /// lanes 0-3 take 4-7, then 0-1 take 2-3, then 0 takes 1, the same additions in the same order.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn reduce8(s: __m256) -> f32 {
        let s4: __m128 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2)))
    }

    /// [`super::dot_tile`] with AVX2 and FMA: per weight row, the `R` products share each weight load; an
    /// accumulator is two 8-wide registers holding lanes 0-7 and 8-15, updated by fused multiply-adds as
    /// in the portable loop.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_avx2<const C: usize, const R: usize>(w: [&[f32]; C], x: [&[f32]; R]) -> [[f32; R]; C] {
        let n = x.first().map_or(0, |v| v.len());
        let full = n / LANES * LANES;
        let px = x.map(<[f32]>::as_ptr);
        let mut out = [[0.0f32; R]; C];
        for (c, wc) in w.iter().enumerate() {
            let pw = wc.as_ptr();
            let mut lo: [__m256; R] = [_mm256_setzero_ps(); R];
            let mut hi: [__m256; R] = [_mm256_setzero_ps(); R];
            let mut i = 0;
            while i < full {
                // SAFETY: `i + 16 <= full <= n`, the length of every row (checked by the caller).
                let (wl, wh) = unsafe { (_mm256_loadu_ps(pw.add(i)), _mm256_loadu_ps(pw.add(i + 8))) };
                for r in 0..R {
                    // SAFETY: as above.
                    let (xl, xh) = unsafe { (_mm256_loadu_ps(px[r].add(i)), _mm256_loadu_ps(px[r].add(i + 8))) };
                    lo[r] = _mm256_fmadd_ps(wl, xl, lo[r]);
                    hi[r] = _mm256_fmadd_ps(wh, xh, hi[r]);
                }
                i += LANES;
            }
            for r in 0..R {
                out[c][r] = if full == n {
                    reduce8(_mm256_add_ps(lo[r], hi[r]))
                } else {
                    let mut acc = [0.0f32; LANES];
                    // SAFETY: `acc` holds 16 floats: 8 from offset 0, 8 from offset 8.
                    unsafe {
                        _mm256_storeu_ps(acc.as_mut_ptr(), lo[r]);
                        _mm256_storeu_ps(acc.as_mut_ptr().add(8), hi[r]);
                    }
                    finish(acc, &wc[full..], &x[r][full..])
                };
            }
        }
        out
    }

    /// The pairwise reduction of [`finish`] (with no tail) of sixteen accumulators at once, each lane
    /// sum computed with exactly the additions of the one-register reduction, but the sixteen reductions
    /// interleaved so that every shuffle and add works on full registers: about 45 instructions for 16
    /// sums instead of about 8 per sum.
    ///
    /// Level by level (widths 8, 4, 2, 1, as in [`finish`]), pairs of registers are shuffled so that
    /// one register holds the lower halves of both and another the upper halves; adding them performs
    /// the `lane l += lane l + width` step of both accumulators in one instruction. After the four
    /// levels, 128-bit block `m` holds the sums of accumulators `m, m + 4, m + 8, m + 12`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce16(acc: [__m512; 16]) -> [f32; 16] {
        // Width 8: accumulators 2i and 2i+1 -> blocks [2i: lanes 0-3, 4-7; 2i+1: lanes 0-3, 4-7].
        let l8: [__m512; 8] = std::array::from_fn(|i| {
            let (a, b) = (acc[2 * i], acc[2 * i + 1]);
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b))
        });
        // Width 4: block m of register j holds accumulator 4j + m's four partial sums.
        let l4: [__m512; 4] = std::array::from_fn(|j| {
            let (u, v) = (l8[2 * j], l8[2 * j + 1]);
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(u, v), _mm512_shuffle_f32x4::<0b11_01_11_01>(u, v))
        });
        // Width 2: block m of register p holds accumulators 8p + m and 8p + 4 + m, two sums each.
        let l2: [__m512; 2] = std::array::from_fn(|p| {
            let (u, v) = (_mm512_castps_pd(l4[2 * p]), _mm512_castps_pd(l4[2 * p + 1]));
            _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(u, v)), _mm512_castpd_ps(_mm512_unpackhi_pd(u, v)))
        });
        // Width 1: block m holds the sums of accumulators m, m + 4, m + 8, m + 12.
        let (u, v) = (l2[0], l2[1]);
        let sums = _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(u, v), _mm512_shuffle_ps::<0b11_01_11_01>(u, v));
        let mut lanes = [0.0f32; 16];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sums) };
        std::array::from_fn(|k| lanes[4 * (k % 4) + k / 4])
    }

    /// [`super::dot_tile`] with AVX-512: an accumulator is one 16-wide register, so a tile of `C × R`
    /// products (up to 24 of the 32 registers) loads `C + R` vectors per 16 elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_avx512<const C: usize, const R: usize>(w: [&[f32]; C], x: [&[f32]; R]) -> [[f32; R]; C] {
        let n = x.first().map_or(0, |v| v.len());
        let full = n / LANES * LANES;
        let pw = w.map(<[f32]>::as_ptr);
        let px = x.map(<[f32]>::as_ptr);
        let mut acc: [[__m512; R]; C] = [[_mm512_setzero_ps(); R]; C];
        let mut i = 0;
        while i < full {
            let mut wv: [__m512; C] = [_mm512_setzero_ps(); C];
            for c in 0..C {
                // SAFETY: `i + 16 <= full <= n`, the length of every row (checked by the caller).
                wv[c] = unsafe { _mm512_loadu_ps(pw[c].add(i)) };
            }
            for r in 0..R {
                // SAFETY: as above.
                let xv = unsafe { _mm512_loadu_ps(px[r].add(i)) };
                for c in 0..C {
                    acc[c][r] = _mm512_fmadd_ps(wv[c], xv, acc[c][r]);
                }
            }
            i += LANES;
        }
        let mut out = [[0.0f32; R]; C];
        if C * R == 16 && full == n {
            let flat: [__m512; 16] = std::array::from_fn(|i| acc[i / R][i % R]);
            let sums = reduce16(flat);
            for c in 0..C {
                for r in 0..R {
                    out[c][r] = sums[c * R + r];
                }
            }
            return out;
        }
        for c in 0..C {
            for r in 0..R {
                let v = acc[c][r];
                out[c][r] = if full == n {
                    // Lanes 0-7 take lanes 8-15: the upper 256 bits moved down, added as the second operand.
                    let upper = _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v);
                    reduce8(_mm512_castps512_ps256(_mm512_add_ps(v, upper)))
                } else {
                    let mut lanes = [0.0f32; LANES];
                    // SAFETY: `lanes` holds 16 floats.
                    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
                    finish(lanes, &w[c][full..], &x[r][full..])
                };
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(n: usize, mul: usize, modulo: usize, shift: f32, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i * mul % modulo) as f32 - shift) / scale).collect()
    }

    #[test]
    fn matches_f64_and_is_the_same_on_every_path() {
        for n in [0usize, 1, 7, 16, 17, 100, 576, 1537] {
            let a = vector(n, 7919, 1000, 500.0, 250.0);
            let b = vector(n, 104_729, 997, 498.0, 300.0);
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(&a, &b);
            let scale: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 * *y as f64).abs()).sum::<f64>().max(1.0);
            assert!((got as f64 - exact).abs() <= 1e-6 * scale, "n={n}: {got} vs {exact}");
            assert_eq!(got.to_bits(), dot_lanes(&a, &b).to_bits(), "n={n}: dispatch changed the result");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: AVX2 and FMA are there, checked just above; the rows have one length.
                let avx2 = unsafe { x86::tile_avx2([&a], [&b]) }[0][0];
                assert_eq!(avx2.to_bits(), got.to_bits(), "n={n}: the AVX2 path differs");
            }
        }
    }

    /// Every output of a tile has `dot`'s exact bits, for every tile shape the kernels use, on every path
    /// this CPU has.
    #[test]
    fn every_tile_output_is_the_dot_of_its_rows() {
        fn check<const C: usize, const R: usize>(n: usize) {
            let w: Vec<Vec<f32>> = (0..C).map(|c| vector(n, 7919 + 31 * c, 1000, 500.0, 250.0)).collect();
            let x: Vec<Vec<f32>> = (0..R).map(|r| vector(n, 104_729 + 17 * r, 997, 498.0, 300.0)).collect();
            let ws: [&[f32]; C] = std::array::from_fn(|c| w[c].as_slice());
            let xs: [&[f32]; R] = std::array::from_fn(|r| x[r].as_slice());
            let mut tiles = vec![dot_tile(ws, xs)];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F is there, checked just above; the rows have one length.
                tiles.push(unsafe { x86::tile_avx512(ws, xs) });
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: AVX2 and FMA are there, checked just above; the rows have one length.
                tiles.push(unsafe { x86::tile_avx2(ws, xs) });
            }
            for tile in tiles {
                for c in 0..C {
                    for r in 0..R {
                        let want = dot_lanes(&w[c], &x[r]);
                        assert_eq!(tile[c][r].to_bits(), want.to_bits(), "{C}x{R} tile, n={n}: [{c}][{r}]");
                    }
                }
            }
        }
        for n in [0usize, 5, 16, 48, 64, 577, 1536] {
            check::<1, 1>(n);
            check::<4, 1>(n);
            check::<4, 3>(n);
            check::<4, 4>(n);
            check::<3, 8>(n);
            // Sixteen products: the interleaved reduction.
            check::<1, 16>(n);
            check::<2, 8>(n);
            check::<16, 1>(n);
        }
    }
}
