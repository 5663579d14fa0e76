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
            // Four keys per tile share the loads of q; each score is still exactly dot(q, k).
            let mut chunks = visible.chunks_exact(4);
            let mut s = 0;
            for ts in &mut chunks {
                let [d] = dot_tile([qv], [key(ts[0]), key(ts[1]), key(ts[2]), key(ts[3])]);
                scores[s..s + 4].copy_from_slice(&d);
                s += 4;
            }
            for &t in chunks.remainder() {
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
            let mut sum = 0.0f32;
            for s in &mut scores {
                *s = (*s - max).exp();
                sum += *s;
            }
            o.fill(0.0);
            for (&w, &t) in scores.iter().zip(visible) {
                let vv = &values[b][(t * g.kv_heads + kvh) * g.v_dim..][..g.v_dim];
                for (oi, vi) in o.iter_mut().zip(vv) {
                    *oi += w * vi;
                }
            }
            for oi in o.iter_mut() {
                *oi /= sum;
            }
        }
    });
    out
}
