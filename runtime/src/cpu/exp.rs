//! `exp` over slices of f32, vectorised, with the same bits on every CPU.
//!
//! The softmax of attention and the SiLU of gated MLPs take an exponential per element; libm's scalar
//! `expf` cost about a tenth of a multi-token decode step. This one reduces the argument by Cody-Waite
//! (`x = n·ln 2 + r`, `|r| <= ln 2 / 2`, with `ln 2` split in two so that `n·ln2_hi` is exact), evaluates
//! the degree-7 Taylor polynomial of `e^r` by Horner's rule with fused multiply-adds, and scales by `2^n`
//! through the exponent bits. The truncation error of the polynomial is below 6e-9 relative, so results
//! are within about 2 ulp of the true value.
//!
//! The scalar loop (`f32::mul_add`, correctly rounded everywhere) and the AVX-512 loop perform exactly
//! the same IEEE operations per element, so the results do not depend on the instruction set, which
//! matters for the same reason as in `cpu::dot`: a token's values must not depend on how it is computed.
//!
//! Range: NaN gives NaN; arguments above 88 give +inf (`e^88` is within a factor of 2 of f32's maximum,
//! and `2^n` must stay a normal number); arguments below -87.3 give 0 (the results there would be
//! subnormal). Both ends are far from what a softmax (arguments <= 0 after subtracting the maximum,
//! where below -87 the weight is nothing next to the maximum's 1) or a sigmoid meets in practice.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` in two parts: the high part has 8 trailing zero bits in its mantissa, so `n · LN2_HI` is exact
/// for every `|n| <= 128`.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Above this the result would not be a normal f32 with `2^n` built from exponent bits: +inf.
const MAX_ARG: f32 = 88.0;
/// Below this `2^n` would be subnormal: 0.
const MIN_ARG: f32 = -87.336_55;
/// `1/k!` for k = 7 down to 2 (then 1 and 1): the Taylor coefficients of `e^r`.
const COEFFS: [f32; 6] = [1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5];

/// `e^x` for one value, by the algorithm of the module docs.
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > MAX_ARG {
        return f32::INFINITY;
    }
    if x < MIN_ARG {
        return 0.0;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let mut p = COEFFS[0];
    for c in &COEFFS[1..] {
        p = p.mul_add(r, *c);
    }
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `v = e^v` for every element.
pub fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        let done = unsafe { x86::exp_avx512(values) };
        for v in &mut values[done..] {
            *v = exp(*v);
        }
        return;
    }
    for v in values {
        *v = exp(*v);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _CMP_GT_OQ, _CMP_LT_OQ, _CMP_UNORD_Q, _MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT, _mm512_add_epi32,
        _mm512_castsi512_ps, _mm512_cmp_ps_mask, _mm512_cvtps_epi32, _mm512_fmadd_ps, _mm512_fnmadd_ps,
        _mm512_loadu_ps, _mm512_mask_blend_ps, _mm512_mul_ps, _mm512_roundscale_ps, _mm512_set1_epi32, _mm512_set1_ps,
        _mm512_slli_epi32, _mm512_storeu_ps,
    };

    use super::{COEFFS, LN2_HI, LN2_LO, LOG2E, MAX_ARG, MIN_ARG};

    /// [`super::exp`] on the longest prefix of whole 16-element groups, in place; returns its length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_avx512(values: &mut [f32]) -> usize {
        let full = values.len() / 16 * 16;
        let mut i = 0;
        while i < full {
            let p = values[i..i + 16].as_mut_ptr();
            // SAFETY: `p` points at 16 floats of `values`.
            let x = unsafe { _mm512_loadu_ps(p) };
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
                x,
                _mm512_set1_ps(LOG2E),
            ));
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
            let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
            let mut poly = _mm512_set1_ps(COEFFS[0]);
            for c in &COEFFS[1..] {
                poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(*c));
            }
            poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0));
            poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(1.0));
            // Out-of-range lanes compute garbage here and are replaced below.
            let exponent = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
            let mut y = _mm512_mul_ps(poly, _mm512_castsi512_ps(exponent));
            y = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(MIN_ARG)),
                y,
                _mm512_set1_ps(0.0),
            );
            y = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(MAX_ARG)),
                y,
                _mm512_set1_ps(f32::INFINITY),
            );
            y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x), y, x);
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(p, y) };
            i += 16;
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments() -> Vec<f32> {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.0449).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.0, 88.01, 89.0, -87.3, -87.4, -100.0, 1e30, -1e30]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 0.5, -0.5, 0.346_573_6]);
        xs
    }

    #[test]
    fn is_within_two_ulp_of_f64() {
        for x in arguments() {
            let got = exp(x);
            if x.is_nan() {
                assert!(got.is_nan());
                continue;
            }
            if x > MAX_ARG {
                assert_eq!(got, f32::INFINITY, "exp({x})");
                continue;
            }
            if x < MIN_ARG {
                assert_eq!(got, 0.0, "exp({x})");
                continue;
            }
            let want = f64::from(x).exp();
            let ulp = f64::from(f32::from_bits((want as f32).to_bits() + 1) - want as f32);
            assert!((f64::from(got) - want).abs() <= 2.0 * ulp, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn every_path_gives_the_same_bits() {
        let xs = arguments();
        let mut fast = xs.clone();
        exp_in_place(&mut fast);
        for (x, got) in xs.iter().zip(&fast) {
            let want = exp(*x);
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "exp({x}): {got} vs {want}");
        }
    }
}
