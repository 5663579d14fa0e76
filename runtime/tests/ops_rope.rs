//! `rope` against the Hugging Face transformers formulas (`modeling_rope_utils.py` and
//! `apply_rotary_pos_emb`), written out here in f64: both pairing styles, partial rotary dims, and the
//! linear, llama3 and yarn frequency scalings.

mod common;

use std::f64::consts::PI;

use common::{Operand, assert_close, f32_type, random_tensor, run_one};
use kiln_ir::{Op, RopeScaling, RopeStyle, Tensor, WeightStore};

const HEAD_DIM: usize = 16;
const HEADS: usize = 3;

/// HF's default inverse frequencies: `1 / base^(arange(0, dim, 2) / dim)`.
fn hf_default(base: f64, dim: usize) -> Vec<f64> {
    (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f64 / dim as f64)).collect()
}

/// HF `_compute_llama3_parameters`.
fn hf_llama3(base: f64, dim: usize, factor: f64, low_freq_factor: f64, high_freq_factor: f64, old: f64) -> Vec<f64> {
    let low_freq_wavelen = old / low_freq_factor;
    let high_freq_wavelen = old / high_freq_factor;
    hf_default(base, dim)
        .into_iter()
        .map(|inv_freq| {
            let wavelen = 2.0 * PI / inv_freq;
            let inv_freq_llama = if wavelen > low_freq_wavelen { inv_freq / factor } else { inv_freq };
            let smooth_factor = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            let smoothed = (1.0 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama;
            let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
            if is_medium { smoothed } else { inv_freq_llama }
        })
        .collect()
}

/// HF `_compute_yarn_parameters` (with `truncate = True`); the attention factor is passed through.
fn hf_yarn(base: f64, dim: usize, factor: f64, orig: f64, beta_fast: f64, beta_slow: f64) -> Vec<f64> {
    let find_correction_dim =
        |num_rotations: f64| (dim as f64 * (orig / (num_rotations * 2.0 * PI)).ln()) / (2.0 * base.ln());
    let low = find_correction_dim(beta_fast).floor().max(0.0);
    let high = find_correction_dim(beta_slow).ceil().min(dim as f64 - 1.0);
    let linear_ramp_factor = |min: f64, mut max: f64, n: usize| -> Vec<f64> {
        if min == max {
            max += 0.001;
        }
        (0..n).map(|i| ((i as f64 - min) / (max - min)).clamp(0.0, 1.0)).collect()
    };
    let pos_freqs: Vec<f64> = (0..dim).step_by(2).map(|i| base.powf(i as f64 / dim as f64)).collect();
    let extrapolation_factor: Vec<f64> = linear_ramp_factor(low, high, dim / 2).iter().map(|r| 1.0 - r).collect();
    pos_freqs.iter().zip(&extrapolation_factor).map(|(p, e)| (1.0 / (factor * p)) * (1.0 - e) + (1.0 / p) * e).collect()
}

/// HF's rotation: `q * cos + rotate_half(q) * sin` on the first `rotary_dim` elements of each head
/// (or its interleaved counterpart), with `cos`/`sin` multiplied by `magnitude`.
fn reference(x: &[f32], positions: &[i64], inv_freq: &[f64], magnitude: f64, interleaved: bool) -> Vec<f64> {
    let rot = 2 * inv_freq.len();
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (token, &p) in positions.iter().enumerate() {
        for h in 0..HEADS {
            let base = (token * HEADS + h) * HEAD_DIM;
            let head: Vec<f64> = out[base..base + HEAD_DIM].to_vec();
            for (i, f) in inv_freq.iter().enumerate() {
                let (cos, sin) = ((p as f64 * f).cos() * magnitude, (p as f64 * f).sin() * magnitude);
                let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + rot / 2) };
                out[base + a] = head[a] * cos - head[b] * sin;
                out[base + b] = head[b] * cos + head[a] * sin;
            }
        }
    }
    out
}

fn run_rope(style: RopeStyle, rotary_dim: usize, scaling: RopeScaling, theta: f64) -> (Vec<f32>, Vec<f64>, Vec<i64>) {
    let x = random_tensor(1, &[2, 3, HEADS, HEAD_DIM], 1.0);
    let positions = vec![0, 1, 2, 5, 17, 3000];
    let y = run_one(
        Op::Rope { style, theta, rotary_dim: rotary_dim as u32, scaling },
        vec![Operand::Input(x.clone()), Operand::Input(Tensor::i64(vec![2, 3], positions.clone()).unwrap())],
        WeightStore::new(),
        f32_type(&[2, 3, HEADS, HEAD_DIM]),
    )
    .unwrap();
    (y.to_f32_vec(), x.to_f64_vec(), positions)
}

fn check(style: RopeStyle, rotary_dim: usize, scaling: RopeScaling, inv_freq: &[f64], magnitude: f64) {
    let theta = 10000.0;
    let (y, x, positions) = run_rope(style, rotary_dim, scaling, theta);
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let expected = reference(&xf, &positions, inv_freq, magnitude, style == RopeStyle::Interleaved);
    assert_close(&y, &expected, 1e-5, &format!("rope {style:?} rotary {rotary_dim} {scaling:?}"));
}

#[test]
fn rope_half_and_interleaved_full_rotary() {
    let inv = hf_default(10000.0, HEAD_DIM);
    check(RopeStyle::Half, HEAD_DIM, RopeScaling::None, &inv, 1.0);
    check(RopeStyle::Interleaved, HEAD_DIM, RopeScaling::None, &inv, 1.0);
}

#[test]
fn rope_partial_rotary_leaves_the_rest_unchanged() {
    let inv = hf_default(10000.0, 8);
    check(RopeStyle::Half, 8, RopeScaling::None, &inv, 1.0);
    check(RopeStyle::Interleaved, 8, RopeScaling::None, &inv, 1.0);
    let (y, x, _) = run_rope(RopeStyle::Half, 8, RopeScaling::None, 10000.0);
    for token in 0..6 * HEADS {
        for d in 8..HEAD_DIM {
            assert_eq!(y[token * HEAD_DIM + d] as f64, x[token * HEAD_DIM + d]);
        }
    }
}

#[test]
fn rope_linear_scaling() {
    let inv: Vec<f64> = hf_default(10000.0, HEAD_DIM).iter().map(|f| f / 4.0).collect();
    check(RopeStyle::Half, HEAD_DIM, RopeScaling::Linear { factor: 4.0 }, &inv, 1.0);
}

#[test]
fn rope_llama3_scaling_covers_all_three_bands() {
    let scaling =
        RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 1024 };
    let inv = hf_llama3(10000.0, HEAD_DIM, 8.0, 1.0, 4.0, 1024.0);
    let base = hf_default(10000.0, HEAD_DIM);
    // The test is meaningful only if some frequencies are kept, some divided and some smoothed.
    let kept = inv.iter().zip(&base).filter(|(a, b)| a == b).count();
    let divided = inv.iter().zip(&base).filter(|(a, b)| (*a - *b / 8.0).abs() < 1e-15).count();
    assert!(kept > 0 && divided > 0 && kept + divided < inv.len(), "kept {kept}, divided {divided}");
    check(RopeStyle::Half, HEAD_DIM, scaling, &inv, 1.0);
    check(RopeStyle::Interleaved, HEAD_DIM, scaling, &inv, 1.0);
}

#[test]
fn rope_yarn_scaling_with_attention_factor() {
    let scaling = RopeScaling::Yarn {
        factor: 4.0,
        original_max_position: 2048,
        beta_fast: 32.0,
        beta_slow: 1.0,
        attention_factor: 1.2,
    };
    let inv = hf_yarn(10000.0, HEAD_DIM, 4.0, 2048.0, 32.0, 1.0);
    check(RopeStyle::Half, HEAD_DIM, scaling, &inv, 1.2);
    // Partial rotary: yarn's dims are the rotary dims.
    let inv = hf_yarn(10000.0, 8, 4.0, 2048.0, 32.0, 1.0);
    check(RopeStyle::Half, 8, scaling, &inv, 1.2);
}

#[test]
fn rope_rejects_odd_or_oversized_rotary_dims() {
    for rotary_dim in [7u32, 18] {
        let x = random_tensor(1, &[1, 2, HEADS, HEAD_DIM], 1.0);
        let e = run_one(
            Op::Rope { style: RopeStyle::Half, theta: 1e4, rotary_dim, scaling: RopeScaling::None },
            vec![Operand::Input(x), Operand::Input(Tensor::i64(vec![1, 2], vec![0, 1]).unwrap())],
            WeightStore::new(),
            f32_type(&[1, 2, HEADS, HEAD_DIM]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rotary_dim"), "{e}");
    }
}
