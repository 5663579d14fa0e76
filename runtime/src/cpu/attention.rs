//! `attention`: scaled dot-product attention with GQA/MQA head grouping, causal and tree masks, sliding
//! windows with sink tokens, logit soft-capping, and the executor's KV cache.
//!
//! Semantics are those of `Op::Attention`. Keys are "past" then "new". With a cache layer, past is the
//! layer's cache (slot `j` at position `j`) and the new k/v are appended to it before attending; without
//! one, the given k/v hold every key, the last `seq` being new and the others at positions `0, 1, ...`.
//! A new key sits at the position of its query. For query `i` at position `p`:
//! - a past key at position `t` is visible when `t <= p` (every past key when `causal` is false);
//! - new key `j` is visible when `tree_mask[i][j]` if a tree mask is given, else when `j <= i` if
//!   `causal`, else always;
//! - with `window = w`, a visible key at distance `|p - t| >= w` is hidden unless `t < sinks`.
//!
//! Scores are `q·k · scale`, then `cap · tanh(s / cap)` with a softcap; the softmax subtracts the row
//! maximum and accumulates in f32. A query that sees no key at all gets zeros.

use rayon::prelude::*;

use super::dot::{dot, dot_tile};
use super::exp::exp_in_place;
use super::kv_cache::KvCache;

/// False for NaN too, unlike `x <= 0.0`.
fn is_positive(x: f32) -> bool {
    x > 0.0
}

/// A borrowed tensor: row-major data and its shape.
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub shape: &'a [usize],
}

/// The attributes of an `attention` op (its `layer` is passed with the cache).
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub scale: f32,
    pub causal: bool,
    pub window: Option<u32>,
    pub sinks: u32,
    pub softcap: Option<f32>,
}

/// The operands of an `attention` op.
#[derive(Clone, Copy, Debug)]
pub struct AttentionInputs<'a> {
    pub q: View<'a, f32>,
    pub k: View<'a, f32>,
    pub v: View<'a, f32>,
    pub positions: View<'a, i64>,
    pub tree_mask: Option<View<'a, bool>>,
}

#[derive(Clone, Copy)]
struct Geometry {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    v_dim: usize,
    /// Keys per batch row in the given k/v.
    given_keys: usize,
}

fn check(inputs: &AttentionInputs<'_>) -> Result<Geometry, String> {
    let &[batch, seq, heads, head_dim] = inputs.q.shape else {
        return Err(format!("q must be [batch, seq, heads, head_dim], not {:?}", inputs.q.shape));
    };
    let &[kb, given_keys, kv_heads, kd] = inputs.k.shape else {
        return Err(format!("k must be [batch, seq, kv_heads, head_dim], not {:?}", inputs.k.shape));
    };
    let &[vb, vs, vh, v_dim] = inputs.v.shape else {
        return Err(format!("v must be [batch, seq, kv_heads, v_dim], not {:?}", inputs.v.shape));
    };
    if kb != batch || kd != head_dim {
        return Err(format!("k {:?} does not match q {:?} in batch or head_dim", inputs.k.shape, inputs.q.shape));
    }
    if (vb, vs, vh) != (batch, given_keys, kv_heads) {
        return Err(format!("v {:?} does not match k {:?} in batch, seq or kv_heads", inputs.v.shape, inputs.k.shape));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(format!("heads ({heads}) must be a multiple of kv_heads ({kv_heads})"));
    }
    if inputs.positions.shape != [batch, seq] {
        return Err(format!("positions must have shape [{batch}, {seq}], not {:?}", inputs.positions.shape));
    }
    if let Some(m) = inputs.tree_mask
        && m.shape != [seq, seq]
    {
        return Err(format!("the tree mask must have shape [{seq}, {seq}], not {:?}", m.shape));
    }
    Ok(Geometry { batch, seq, heads, kv_heads, head_dim, v_dim, given_keys })
}

/// Runs attention; with `cache = Some((layer, kv))` the new k/v are appended to that layer first.
/// Returns the result `[batch, seq, heads, v_dim]` and its shape.
pub fn attention(
    inputs: AttentionInputs<'_>,
    params: AttentionParams,
    cache: Option<(u32, &mut KvCache)>,
) -> Result<(Vec<f32>, Vec<usize>), String> {
    let g = check(&inputs)?;
    if let Some(cap) = params.softcap
        && !is_positive(cap)
    {
        return Err(format!("softcap must be positive, not {cap}"));
    }
    if params.window == Some(0) {
        return Err("a window of 0 hides every key".to_string());
    }
    let out = match cache {
        Some((layer, kv)) => {
            if g.given_keys != g.seq {
                return Err(format!(
                    "with a KV cache, k and v hold only the {} new tokens, but they hold {}",
                    g.seq, g.given_keys
                ));
            }
            let layer_cache = kv.layer_mut(layer, g.batch, g.kv_heads, g.head_dim, g.v_dim)?;
            layer_cache.append(inputs.k.data, inputs.v.data, g.seq);
            let total = layer_cache.len();
            let keys: Vec<&[f32]> = (0..g.batch).map(|b| layer_cache.keys(b)).collect();
            let values: Vec<&[f32]> = (0..g.batch).map(|b| layer_cache.values(b)).collect();
            attend(&inputs, g, params, &keys, &values, total)
        }
        None => {
            if g.given_keys < g.seq {
                return Err(format!("k and v hold {} keys, fewer than the {} new tokens", g.given_keys, g.seq));
            }
            let kr = g.given_keys * g.kv_heads * g.head_dim;
            let vr = g.given_keys * g.kv_heads * g.v_dim;
            let keys: Vec<&[f32]> = inputs.k.data.chunks(kr.max(1)).take(g.batch).collect();
            let values: Vec<&[f32]> = inputs.v.data.chunks(vr.max(1)).take(g.batch).collect();
            attend(&inputs, g, params, &keys, &values, g.given_keys)
        }
    };
    Ok((out, vec![g.batch, g.seq, g.heads, g.v_dim]))
}

/// Attention of every query over `total` keys per batch row, the last `seq` of which are new.
///
/// One task per (query, kv head), so that a one-token decode step still uses every core. Each score is
/// `dot(q, k)` with the fixed-order kernel of `cpu::dot`, and a query visits its visible keys in slot
/// order, so a query's result depends on its own q, position and visible keys only: the same query
/// gives the same bits whatever else is in the step (what exact speculative verification relies on).
fn attend(
    inputs: &AttentionInputs<'_>,
    g: Geometry,
    params: AttentionParams,
    keys: &[&[f32]],
    values: &[&[f32]],
    total: usize,
) -> Vec<f32> {
    let past = total - g.seq;
    let group = g.heads / g.kv_heads;
    let positions = inputs.positions.data;
    let mut out = vec![0.0f32; g.batch * g.seq * g.heads * g.v_dim];
    if out.is_empty() {
        return out;
    }
    let visible: Vec<Vec<usize>> = (0..g.batch * g.seq)
        .into_par_iter()
        .map(|token| {
            let (b, i) = (token / g.seq, token % g.seq);
            let p = positions[token];
            let key_position = |t: usize| if t < past { t as i64 } else { positions[b * g.seq + t - past] };
            (0..total)
                .filter(|&t| {
                    let seen = if t < past {
                        !params.causal || t as i64 <= p
                    } else {
                        let j = t - past;
                        match inputs.tree_mask {
                            Some(m) => m.data[i * g.seq + j],
                            None => !params.causal || j <= i,
                        }
                    };
                    let in_window = params.window.is_none_or(|w| {
                        let tp = key_position(t);
                        tp.abs_diff(p) < u64::from(w) || tp < i64::from(params.sinks)
                    });
                    seen && in_window
                })
                .collect()
        })
        .collect();
    // The heads of one kv head are adjacent in the output: [batch, seq, kv_heads, group, v_dim].
    out.par_chunks_mut(group * g.v_dim).enumerate().for_each(|(task, dst)| {
        let (token, kvh) = (task / g.kv_heads, task % g.kv_heads);
        let b = token / g.seq;
        let visible = &visible[token];
        if visible.is_empty() {
            return;
        }
        let key = |t: usize| &keys[b][(t * g.kv_heads + kvh) * g.head_dim..][..g.head_dim];
        let mut scores = vec![0.0f32; visible.len()];
        for (hg, o) in dst.chunks_mut(g.v_dim).enumerate() {
            let h = kvh * group + hg;
            let qv = &inputs.q.data[(token * g.heads + h) * g.head_dim..][..g.head_dim];
            // Sixteen (then four) keys per tile share the loads of q; each score is still exactly
            // dot(q, k), whichever tile it falls in.
            let mut by_16 = visible.chunks_exact(16);
            let mut s = 0;
            for ts in &mut by_16 {
                // Fixed-size copies (a slice copy of variable length is a memmove call).
                let [d] = dot_tile::<1, 16>([qv], std::array::from_fn(|i| key(ts[i])));
                *<&mut [f32; 16]>::try_from(&mut scores[s..s + 16]).expect("16 scores") = d;
                s += 16;
            }
            let mut by_4 = by_16.remainder().chunks_exact(4);
            for ts in &mut by_4 {
                let [d] = dot_tile::<1, 4>([qv], std::array::from_fn(|i| key(ts[i])));
                *<&mut [f32; 4]>::try_from(&mut scores[s..s + 4]).expect("4 scores") = d;
                s += 4;
            }
            for &t in by_4.remainder() {
                scores[s] = dot(qv, key(t));
                s += 1;
            }
            for sc in &mut scores {
                *sc *= params.scale;
                if let Some(cap) = params.softcap {
                    *sc = cap * (*sc / cap).tanh();
                }
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for s in &mut scores {
                *s -= max;
            }
            exp_in_place(&mut scores);
            let sum = scores.iter().fold(0.0f32, |sum, s| sum + s);
            let value = |t: usize| &values[b][(t * g.kv_heads + kvh) * g.v_dim..][..g.v_dim];
            weighted_sum(o, &scores, visible.iter().map(|&t| value(t)));
            for oi in o.iter_mut() {
                *oi /= sum;
            }
        }
    });
    out
}

/// `out = Σ_j weights[j] · rows[j]`, each element accumulated in the order of `rows` as
/// `acc = acc + w · v` (a product rounded, then a sum rounded: no fused multiply-add), starting from
/// zero. Every path performs exactly these operations per element, so the bits do not depend on the
/// CPU; the vector path only keeps sixteen columns' accumulators in one register across all rows.
fn weighted_sum<'a>(out: &mut [f32], weights: &[f32], rows: impl Iterator<Item = &'a [f32]> + Clone) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        unsafe { x86::weighted_sum_avx512(out, weights, rows) };
        return;
    }
    weighted_sum_columns(out, 0, weights, rows);
}

/// The portable loop of [`weighted_sum`] for the columns from `first` on.
fn weighted_sum_columns<'a>(out: &mut [f32], first: usize, weights: &[f32], rows: impl Iterator<Item = &'a [f32]>) {
    out[first..].fill(0.0);
    for (&w, row) in weights.iter().zip(rows) {
        for (o, v) in out[first..].iter_mut().zip(&row[first..]) {
            *o += w * v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm512_add_ps, _mm512_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// [`super::weighted_sum`] with AVX-512: four registers (64 columns) of accumulators per pass over
    /// the rows, then one register at a time, then the portable loop for the last columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weighted_sum_avx512<'a>(
        out: &mut [f32],
        weights: &[f32],
        rows: impl Iterator<Item = &'a [f32]> + Clone,
    ) {
        let n = out.len();
        let mut col = 0;
        while col + 64 <= n {
            let mut acc = [_mm512_setzero_ps(); 4];
            for (&w, row) in weights.iter().zip(rows.clone()) {
                let wv = _mm512_set1_ps(w);
                let p = row[col..col + 64].as_ptr();
                for (i, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `p` points at 64 readable floats (the slice just taken).
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(wv, unsafe { _mm512_loadu_ps(p.add(16 * i)) }));
                }
            }
            for (i, a) in acc.iter().enumerate() {
                // SAFETY: `out[col..col + 64]` is in bounds (`col + 64 <= n`).
                unsafe { _mm512_storeu_ps(out[col + 16 * i..].as_mut_ptr(), *a) };
            }
            col += 64;
        }
        while col + 16 <= n {
            let mut acc = _mm512_setzero_ps();
            for (&w, row) in weights.iter().zip(rows.clone()) {
                // SAFETY: `row[col..col + 16]` is in bounds (rows are as long as `out`).
                let v = unsafe { _mm512_loadu_ps(row[col..col + 16].as_ptr()) };
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(w), v));
            }
            // SAFETY: `out[col..col + 16]` is in bounds.
            unsafe { _mm512_storeu_ps(out[col..].as_mut_ptr(), acc) };
            col += 16;
        }
        if col < n {
            super::weighted_sum_columns(out, col, weights, rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector path of the value accumulation gives the portable loop's exact bits, for widths that
    /// use all three of its column loops.
    #[test]
    fn weighted_sum_is_the_same_on_every_path() {
        for width in [1usize, 5, 16, 64, 80, 100, 128, 200] {
            let rows: Vec<Vec<f32>> =
                (0..37).map(|r| (0..width).map(|c| ((r * 131 + c * 17) % 97) as f32 / 13.0 - 3.0).collect()).collect();
            let weights: Vec<f32> = (0..37).map(|r| ((r * 7919) % 101) as f32 / 101.0).collect();
            let mut fast = vec![f32::NAN; width];
            weighted_sum(&mut fast, &weights, rows.iter().map(Vec::as_slice));
            let mut portable = vec![f32::NAN; width];
            weighted_sum_columns(&mut portable, 0, &weights, rows.iter().map(Vec::as_slice));
            for c in 0..width {
                assert_eq!(fast[c].to_bits(), portable[c].to_bits(), "width {width}, column {c}");
                let exact: f64 = weights.iter().zip(&rows).map(|(&w, r)| f64::from(w) * f64::from(r[c])).sum();
                assert!((f64::from(fast[c]) - exact).abs() < 1e-3, "width {width}, column {c}");
            }
        }
    }
}
