//! The f32 dot product every GEMV row goes through.
//!
//! Sixteen independent accumulators let the compiler keep the products in vector registers (a single
//! running sum cannot be vectorised without reordering additions, which Rust does not do on its own).
//! The summation order is fixed by this code, not by the instruction set: the AVX2 build of the same
//! function adds in exactly the same order (Rust never contracts `a * b + c` into an FMA by itself), so
//! results are bit-identical on every x86-64 CPU and on other architectures.

const LANES: usize = 16;

/// Adds the products of the elements past the last full group of 16 into the lanes, then reduces the
/// lanes pairwise (lane l takes lane l + width, for width 8, 4, 2, 1). Both paths end here.
#[inline(always)]
fn finish(mut acc: [f32; LANES], a_tail: &[f32], b_tail: &[f32]) -> f32 {
    for (l, (x, y)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[l] += x * y;
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

/// Lane l accumulates the products of elements `i ≡ l (mod 16)`, each a multiply then an add.
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    finish(acc, ca.remainder(), cb.remainder())
}

/// The same computation with two 8-wide registers holding lanes 0-7 and 8-15: separate multiply and add
/// (no FMA), so every lane sees exactly the operations of [`dot_lanes`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let n = a.len().min(b.len());
    let full = n / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    // SAFETY: every load reads 8 floats at an offset below `full - 8 + 1` of slices at least `full` long;
    // unaligned loads and stores are used throughout.
    unsafe {
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        while i < full {
            lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))));
            hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8))));
            i += LANES;
        }
        _mm256_storeu_ps(acc.as_mut_ptr(), lo);
        _mm256_storeu_ps(acc.as_mut_ptr().add(8), hi);
    }
    finish(acc, &a[full..n], &b[full..n])
}

/// `Σ a[i]·b[i]` over the common length, accumulated in f32 in a fixed order.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

/// [`dot`] of one vector `a` with four vectors `b` at once: each result is bit-identical to `dot(a, b[r])`
/// (every row keeps its own 16 lanes, updated in the same order), while each load of `a` serves four rows.
pub fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { dot4_avx2(a, b) };
    }
    b.map(|br| dot_lanes(a, br))
}

/// [`dot4`] with AVX2: per row the two 8-wide accumulators of [`dot_avx2`] (8 registers in all), with
/// separate multiply and add as there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let n = b.iter().fold(a.len(), |n, br| n.min(br.len()));
    let full = n / LANES * LANES;
    let mut acc = [[0.0f32; LANES]; 4];
    // SAFETY: every load reads 8 floats at an offset below `full - 8 + 1` of slices at least `full` long;
    // unaligned loads and stores are used throughout.
    unsafe {
        let mut lo: [__m256; 4] = [_mm256_setzero_ps(); 4];
        let mut hi: [__m256; 4] = [_mm256_setzero_ps(); 4];
        let pa = a.as_ptr();
        let pb = b.map(<[f32]>::as_ptr);
        let mut i = 0;
        while i < full {
            let (wa, wb) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pa.add(i + 8)));
            for r in 0..4 {
                lo[r] = _mm256_add_ps(lo[r], _mm256_mul_ps(wa, _mm256_loadu_ps(pb[r].add(i))));
                hi[r] = _mm256_add_ps(hi[r], _mm256_mul_ps(wb, _mm256_loadu_ps(pb[r].add(i + 8))));
            }
            i += LANES;
        }
        for r in 0..4 {
            _mm256_storeu_ps(acc[r].as_mut_ptr(), lo[r]);
            _mm256_storeu_ps(acc[r].as_mut_ptr().add(8), hi[r]);
        }
    }
    let mut out = [0.0f32; 4];
    for r in 0..4 {
        out[r] = finish(acc[r], &a[full..n], &b[r][full..n]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_and_is_the_same_on_every_path() {
        for n in [0usize, 1, 7, 16, 17, 100, 576, 1537] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 300.0).collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let got = dot(&a, &b);
            let scale: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64 * *y as f64).abs()).sum::<f64>().max(1.0);
            assert!((got as f64 - exact).abs() <= 1e-6 * scale, "n={n}: {got} vs {exact}");
            assert_eq!(got.to_bits(), dot_lanes(&a, &b).to_bits(), "n={n}: dispatch changed the result");
            let c: Vec<f32> = b.iter().map(|x| x * 0.75 - 0.1).collect();
            let four = dot4(&a, [&b, &c, &a, &b]);
            let one = [dot(&a, &b), dot(&a, &c), dot(&a, &a), dot(&a, &b)];
            assert_eq!(four.map(f32::to_bits), one.map(f32::to_bits), "n={n}: dot4 differs from dot");
        }
    }
}
