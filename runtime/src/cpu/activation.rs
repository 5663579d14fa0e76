//! `swiglu` on f32 tensors: `silu(gate) · up`, with the exponentials of [`super::exp`].
//!
//! The generic evaluator (`kiln_ir::eval`) defines the op for every float dtype with libm's `exp`; this is
//! the executor's path for the f32 activations of a decoding step, where that `exp` was a visible part
//! of a multi-token step. It uses the same numerically stable sigmoid, `1 / (1 + e^-g)` for `g >= 0` and
//! `e^g / (1 + e^g)` below, both written with `t = e^-|g|` so that one vectorised pass computes every `t`.

use super::exp::exp_in_place;

/// `silu(gate[i]) · up[i]` for operands of one length.
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    debug_assert_eq!(gate.len(), up.len());
    let mut t: Vec<f32> = gate.iter().map(|g| -g.abs()).collect();
    exp_in_place(&mut t);
    gate.iter()
        .zip(up)
        .zip(&t)
        .map(|((&g, &u), &t)| {
            let sigmoid = if g >= 0.0 { 1.0 / (1.0 + t) } else { t / (1.0 + t) };
            g * sigmoid * u
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64() {
        let gate: Vec<f32> = (-400..400).map(|i| i as f32 * 0.05).chain([f32::NAN, 100.0, -100.0]).collect();
        let up: Vec<f32> = gate.iter().map(|g| 1.5 - g * 0.25).collect();
        let got = swiglu(&gate, &up);
        for ((&g, &u), &y) in gate.iter().zip(&up).zip(&got) {
            if g.is_nan() {
                assert!(y.is_nan());
                continue;
            }
            let (g64, u64) = (f64::from(g), f64::from(u));
            let want = g64 / (1.0 + (-g64).exp()) * u64;
            assert!((f64::from(y) - want).abs() <= 1e-6 * want.abs().max(1e-30), "swiglu({g}, {u}) = {y}, want {want}");
        }
    }
}
