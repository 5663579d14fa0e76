//! `rope`: rotary position embeddings, with the frequency scalings real checkpoints use, computed as
//! Hugging Face transformers computes them (`modeling_rope_utils.py`), but in f64.
//!
//! With `r = rotary_dim` and `i = 0 .. r/2`, the base inverse frequencies are
//! `inv_freq[i] = 1 / theta^(2i / r)`. Scalings rewrite them:
//! - `linear(factor)`: `inv_freq[i] / factor` (positions divided by `factor`).
//! - `llama3(factor, low, high, orig)`: with `wavelen = 2π / inv_freq[i]`,
//!   `low_wavelen = orig / low`, `high_wavelen = orig / high`:
//!   `wavelen < high_wavelen` keeps `inv_freq`; `wavelen > low_wavelen` gives `inv_freq / factor`;
//!   in between, with `smooth = (orig / wavelen - low) / (high - low)`,
//!   `(1 - smooth) · inv_freq / factor + smooth · inv_freq`.
//! - `yarn(factor, orig, beta_fast, beta_slow, attention_factor)`: with
//!   `corr(rot) = r · ln(orig / (rot · 2π)) / (2 ln theta)`, `low = max(floor(corr(beta_fast)), 0)`,
//!   `high = min(ceil(corr(beta_slow)), r - 1)` (`high += 0.001` when equal), the ramp
//!   `ramp[i] = clamp((i - low) / (high - low), 0, 1)` and `extrapolation[i] = 1 - ramp[i]`:
//!   `inv_freq[i] · (1 - extrapolation[i]) / factor + inv_freq[i] · extrapolation[i]`, and cos and
//!   sin are multiplied by `attention_factor`.
//!
//! The angle of pair `i` at position `p` is `p · inv_freq[i]`; `cos` and `sin` are taken in f64 and
//! rounded to f32. The `half` style rotates element `i` with element `i + r/2`, the `interleaved`
//! style element `2i` with `2i + 1`:
//! `(a, b) -> (a · cos - b · sin, b · cos + a · sin)`. Elements from `r` on pass through unchanged.

use std::f64::consts::PI;

use kiln_ir::{RopeScaling, RopeStyle};
use rayon::prelude::*;

/// False for NaN too, unlike `x <= 0.0`.
fn is_positive(x: f64) -> bool {
    x > 0.0
}

/// Inverse frequencies of the `rotary_dim / 2` pairs, and the factor applied to cos and sin.
pub fn inverse_frequencies(theta: f64, rotary_dim: usize, scaling: &RopeScaling) -> Result<(Vec<f64>, f64), String> {
    if !is_positive(theta) {
        return Err(format!("theta must be positive, not {theta}"));
    }
    let r = rotary_dim as f64;
    let base: Vec<f64> = (0..rotary_dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f64 / r)).collect();
    Ok(match *scaling {
        RopeScaling::None => (base, 1.0),
        RopeScaling::Linear { factor } => {
            if !is_positive(factor) {
                return Err(format!("linear scaling factor must be positive, not {factor}"));
            }
            (base.iter().map(|f| f / factor).collect(), 1.0)
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            if !is_positive(factor) || !is_positive(high_freq_factor - low_freq_factor) || !is_positive(low_freq_factor)
            {
                return Err(format!(
                    "llama3 scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0, not \
                     factor {factor}, low {low_freq_factor}, high {high_freq_factor}"
                ));
            }
            let orig = original_max_position as f64;
            let low_wavelen = orig / low_freq_factor;
            let high_wavelen = orig / high_freq_factor;
            let scaled = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (orig / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (scaled, 1.0)
        }
        RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor } => {
            if !is_positive(factor) || !is_positive(beta_fast) || !is_positive(beta_slow) {
                return Err(format!(
                    "yarn scaling needs positive factor and betas, not factor {factor}, beta_fast {beta_fast}, \
                     beta_slow {beta_slow}"
                ));
            }
            let orig = original_max_position as f64;
            let correction_dim = |rotations: f64| r * (orig / (rotations * 2.0 * PI)).ln() / (2.0 * theta.ln());
            let low = correction_dim(beta_fast).floor().max(0.0);
            let mut high = correction_dim(beta_slow).ceil().min(r - 1.0);
            if low == high {
                high += 0.001;
            }
            let scaled = base
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    f / factor * (1.0 - extrapolation) + f * extrapolation
                })
                .collect();
            (scaled, attention_factor)
        }
    })
}

/// The attributes of a `rope` op.
#[derive(Clone, Copy, Debug)]
pub struct RopeParams<'a> {
    pub style: RopeStyle,
    pub theta: f64,
    pub rotary_dim: usize,
    pub scaling: &'a RopeScaling,
}

/// Applies rotary embeddings to `x[batch, seq, heads, head_dim]` at `positions[batch, seq]`.
pub fn rope(
    x: &[f32],
    x_shape: &[usize],
    positions: &[i64],
    positions_shape: &[usize],
    params: RopeParams<'_>,
) -> Result<Vec<f32>, String> {
    let RopeParams { style, theta, rotary_dim, scaling } = params;
    let &[batch, seq, heads, head_dim] = x_shape else {
        return Err(format!("the input must be [batch, seq, heads, head_dim], but has shape {x_shape:?}"));
    };
    if positions_shape != [batch, seq] {
        return Err(format!("positions must have shape [{batch}, {seq}] to match the input, not {positions_shape:?}"));
    }
    if rotary_dim > head_dim || rotary_dim % 2 != 0 {
        return Err(format!("rotary_dim {rotary_dim} must be even and at most head_dim {head_dim}"));
    }
    let (inv_freq, magnitude) = inverse_frequencies(theta, rotary_dim, scaling)?;
    let half = rotary_dim / 2;
    let mut out = x.to_vec();
    if head_dim == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(heads * head_dim).zip(positions.par_iter()).for_each(|(token, &pos)| {
        let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
            .iter()
            .map(|&f| {
                let angle = pos as f64 * f;
                ((angle.cos() * magnitude) as f32, (angle.sin() * magnitude) as f32)
            })
            .unzip();
        for head in token.chunks_mut(head_dim) {
            for i in 0..half {
                let (ia, ib) = match style {
                    RopeStyle::Half => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (a, b) = (head[ia], head[ib]);
                head[ia] = a * cos[i] - b * sin[i];
                head[ib] = b * cos[i] + a * sin[i];
            }
        }
    });
    Ok(out)
}
