//! ONNX `Attention` (opsets 23-25), composed of generic ops as its function body defines it: 3-D
//! inputs split into heads, the past cache concatenated (`present_key`/`present_value`), grouped
//! heads repeated, scaled `Q·Kᵀ`, soft-capping, boolean or additive masks, the causal mask aligned to
//! the end of the cache, sliding windows, softmax with fully masked rows giving zeros, and the
//! optional `qk_matmul_output` in each of its four modes; and `RotaryEmbedding`.

use kiln_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, UnaryOp, ValueId};

use super::{NodeCx, R, bad, unsupported};
use crate::onnx::dtype::dtype_of;

pub fn import(cx: &mut NodeCx, op: &str) -> Option<R<Vec<ValueId>>> {
    match op {
        "Attention" => Some(attention(cx)),
        "RotaryEmbedding" => Some(rotary_embedding(cx)),
        _ => None,
    }
}

fn bin(cx: &mut NodeCx, op: BinaryOp, a: ValueId, b: ValueId) -> R<ValueId> {
    cx.push(Op::Binary(op), &[a, b])
}

/// `[b, s, heads * d]` to `[b, heads, s, d]`.
fn split_heads(cx: &mut NodeCx, x: ValueId, heads: i64) -> R<ValueId> {
    if heads <= 0 {
        return bad("3-D inputs need q_num_heads and kv_num_heads");
    }
    let shape = cx.const_i64(&[0, 0, heads, -1]);
    let r = cx.push(Op::Reshape { allowzero: false }, &[x, shape])?;
    cx.push(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[r])
}

fn static_dim(cx: &NodeCx, v: ValueId, axis: usize, what: &str) -> R<i64> {
    match cx.ty(v).shape.dims().get(axis).and_then(|d| d.as_static()) {
        Some(n) => Ok(n as i64),
        None => unsupported(format!("a {what} only known at run time")),
    }
}

/// `[b, kv_heads, s, d]` with each head repeated `reps` times in place: `[b, kv_heads * reps, s, d]`.
fn repeat_heads(cx: &mut NodeCx, x: ValueId, kv_heads: i64, reps: i64) -> R<ValueId> {
    let u = cx.push(Op::Unsqueeze { axes: vec![2] }, &[x])?;
    let shape = cx.shape_of(x)?;
    let piece = |cx: &mut NodeCx, from: i64, to: i64| -> R<ValueId> {
        let (s, e) = (cx.const_i64(&[from]), cx.const_i64(&[to]));
        cx.push(Op::Slice {}, &[shape, s, e])
    };
    let (b, sd) = (piece(cx, 0, 1)?, piece(cx, 2, 4)?);
    let heads = cx.const_i64(&[kv_heads, reps]);
    let target = cx.push(Op::Concat { axis: 0 }, &[b, heads, sd])?;
    let e = cx.push(Op::Expand {}, &[u, target])?;
    let merged = cx.const_i64(&[kv_heads * reps]);
    let target = cx.push(Op::Concat { axis: 0 }, &[b, merged, sd])?;
    cx.push(Op::Reshape { allowzero: false }, &[e, target])
}

fn attention(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (mut q, mut k, mut v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (mask, past_k, past_v) = (cx.opt_input(3), cx.opt_input(4), cx.opt_input(5));
    if cx.opt_input(6).is_some() {
        return unsupported("nonpad_kv_seqlen (an external cache with per-batch lengths)");
    }
    if past_k.is_some() != past_v.is_some() {
        return bad("past_key and past_value must be given together");
    }
    let dtype = cx.dtype(q);
    let rank3 = cx.rank(q) == 3;
    if rank3 {
        let (qh, kvh) = (cx.attr_i("q_num_heads", 0), cx.attr_i("kv_num_heads", 0));
        q = split_heads(cx, q, qh)?;
        k = split_heads(cx, k, kvh)?;
        v = split_heads(cx, v, kvh)?;
    } else if cx.rank(q) != 4 {
        return bad(format!("Q must be 3-D or 4-D, not {}", cx.ty(q)));
    }
    if let (Some(pk), Some(pv)) = (past_k, past_v) {
        k = cx.push(Op::Concat { axis: 2 }, &[pk, k])?;
        v = cx.push(Op::Concat { axis: 2 }, &[pv, v])?;
    }
    let (present_k, present_v) = (k, v);
    let q_heads = static_dim(cx, q, 1, "number of query heads")?;
    let kv_heads = static_dim(cx, k, 1, "number of key/value heads")?;
    let scale = if cx.has_attr("scale") {
        cx.attr_f("scale", 1.0) as f64
    } else {
        1.0 / (static_dim(cx, q, 3, "head size")? as f64).sqrt()
    };
    if q_heads != kv_heads {
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            return bad(format!("{q_heads} query heads do not group over {kv_heads} key/value heads"));
        }
        k = repeat_heads(cx, k, kv_heads, q_heads / kv_heads)?;
        v = repeat_heads(cx, v, kv_heads, q_heads / kv_heads)?;
    }
    // Both factors scaled by sqrt(scale), as the reference does, so rounding matches in low precision.
    let s = cx.scalar(dtype, scale.sqrt())?;
    let qs = bin(cx, BinaryOp::Mul, q, s)?;
    let kt = cx.push(Op::Transpose { perm: vec![0, 1, 3, 2] }, &[k])?;
    let kts = bin(cx, BinaryOp::Mul, kt, s)?;
    let mut qk = cx.push(Op::MatMul {}, &[qs, kts])?;
    let softcap = cx.attr_f("softcap", 0.0) as f64;
    if softcap > 0.0 {
        let c = cx.scalar(dtype, softcap)?;
        let t = bin(cx, BinaryOp::Div, qk, c)?;
        let t = cx.push(Op::Unary(UnaryOp::Tanh), &[t])?;
        qk = bin(cx, BinaryOp::Mul, t, c)?;
    }
    let bias = attention_bias(cx, q, k, mask, past_k, dtype)?;
    let qkb = match bias {
        Some(b) => bin(cx, BinaryOp::Add, qk, b)?,
        None => qk,
    };
    let mode = cx.attr_i("qk_matmul_output_mode", 0);
    let precision = if cx.has_attr("softmax_precision") {
        dtype_of(cx.attr_i("softmax_precision", 1) as i32, "softmax_precision")?
    } else {
        dtype
    };
    let logits = cx.cast(qkb, precision)?;
    let probs = match bias {
        Some(b) => {
            // A row whose keys are all masked gives zeros rather than 0/0.
            let m = cx.push(Op::Reduce { kind: ReduceKind::Max, axes: vec![-1], keepdims: true }, &[b])?;
            let ninf = cx.scalar(dtype, f64::NEG_INFINITY)?;
            let dead = cx.push(Op::Compare(CompareOp::Equal), &[m, ninf])?;
            let zero = cx.scalar(precision, 0.0)?;
            let safe = cx.push(Op::Where {}, &[dead, zero, logits])?;
            let p = cx.push(Op::Softmax { axis: -1 }, &[safe])?;
            cx.push(Op::Where {}, &[dead, zero, p])?
        }
        None => cx.push(Op::Softmax { axis: -1 }, &[logits])?,
    };
    let probs = cx.cast(probs, dtype)?;
    let qk_out = match mode {
        2 => qkb,
        3 => probs,
        _ => qk,
    };
    let mut y = cx.push(Op::MatMul {}, &[probs, v])?;
    if rank3 {
        let t = cx.push(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[y])?;
        let shape = cx.const_i64(&[0, 0, -1]);
        y = cx.push(Op::Reshape { allowzero: false }, &[t, shape])?;
    }
    Ok(vec![y, present_k, present_v, qk_out])
}

/// The additive bias over `[..., q, kv]`: the mask (booleans as 0 / -inf, padded with -inf up to
/// the key count), the causal mask and the sliding window, or `None` when there is none.
fn attention_bias(
    cx: &mut NodeCx,
    q: ValueId,
    k: ValueId,
    mask: Option<ValueId>,
    past_k: Option<ValueId>,
    dtype: DType,
) -> R<Option<ValueId>> {
    let (zero, ninf) = (cx.scalar(dtype, 0.0)?, cx.scalar(dtype, f64::NEG_INFINITY)?);
    let mut bias = match mask {
        Some(m) => {
            let m =
                if cx.dtype(m) == DType::Bool { cx.push(Op::Where {}, &[m, zero, ninf])? } else { cx.cast(m, dtype)? };
            let mlen = cx.ty(m).shape.dims().last().and_then(|d| d.as_static());
            let kvlen = cx.ty(k).shape.dims()[2].as_static();
            match (mlen, kvlen) {
                (Some(a), Some(b)) if a < b => {
                    let mut dims = cx.ty(m).shape.as_static().ok_or(()).or_else(|()| {
                        unsupported("a mask shorter than the keys whose shape is only known at run time")
                    })?;
                    *dims.last_mut().expect("mask has a last dim") = (b - a) as usize;
                    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
                    let shape = cx.const_i64(&dims);
                    let pad = cx.push(Op::ConstantOfShape { value: f64::NEG_INFINITY, dtype }, &[shape])?;
                    Some(cx.push(Op::Concat { axis: -1 }, &[m, pad])?)
                }
                (Some(_), Some(_)) => Some(m),
                _ => unsupported("a mask whose length is only known at run time")?,
            }
        }
        None => None,
    };
    let causal = cx.attr_i("is_causal", 0) != 0;
    let (left, right) = (cx.attr_i("left_window_size", -1), cx.attr_i("right_window_size", -1));
    if !causal && left < 0 && right < 0 {
        return Ok(bias);
    }
    // Query i sits at position past + i; key j at position j.
    let (z, one) = (cx.scalar_i64(0), cx.scalar_i64(1));
    let ql = cx.dim_of(q, 2)?;
    let kl = cx.dim_of(k, 2)?;
    let i = cx.push(Op::Range {}, &[z, ql, one])?;
    let i = cx.push(Op::Unsqueeze { axes: vec![1] }, &[i])?;
    let i = match past_k {
        Some(pk) => {
            let p = cx.dim_of(pk, 2)?;
            bin(cx, BinaryOp::Add, i, p)?
        }
        None => i,
    };
    let j = cx.push(Op::Range {}, &[z, kl, one])?;
    let diff = bin(cx, BinaryOp::Sub, i, j)?;
    let mut allowed: Option<ValueId> = None;
    let mut and = |cx: &mut NodeCx, c: ValueId| -> R<()> {
        allowed = Some(match allowed {
            Some(a) => bin(cx, BinaryOp::And, a, c)?,
            None => c,
        });
        Ok(())
    };
    if causal {
        let c = cx.push(Op::Compare(CompareOp::GreaterEqual), &[diff, z])?;
        and(cx, c)?;
    }
    if left >= 0 {
        let l = cx.scalar_i64(left);
        let c = cx.push(Op::Compare(CompareOp::LessEqual), &[diff, l])?;
        and(cx, c)?;
    }
    if right >= 0 {
        let r = cx.scalar_i64(-right);
        let c = cx.push(Op::Compare(CompareOp::GreaterEqual), &[diff, r])?;
        and(cx, c)?;
    }
    let allowed = allowed.expect("causal or a window is set");
    let extra = cx.push(Op::Where {}, &[allowed, zero, ninf])?;
    bias = Some(match bias {
        Some(b) => bin(cx, BinaryOp::Add, b, extra)?,
        None => extra,
    });
    Ok(bias)
}

/// ONNX `RotaryEmbedding` (opset 23): rotates the first `rotary_embedding_dim` elements of each head
/// by the cached angles, in halves or interleaved pairs; the rest of the head passes through.
pub fn rotary_embedding(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (x, cos, sin) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let rank = cx.rank(x);
    // Work in [b, s, heads, d].
    let xb = match rank {
        4 => cx.push(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[x])?,
        3 => {
            let heads = cx.attr_i("num_heads", 0);
            if heads <= 0 {
                return bad("3-D input needs num_heads");
            }
            let shape = cx.const_i64(&[0, 0, heads, -1]);
            cx.push(Op::Reshape { allowzero: false }, &[x, shape])?
        }
        _ => return bad(format!("input must be 3-D or 4-D, not {}", cx.ty(x))),
    };
    let d = static_dim(cx, xb, 3, "head size")?;
    let rot = match cx.attr_i("rotary_embedding_dim", 0) {
        0 => d,
        r => r,
    };
    let (cos, sin) = match cx.opt_input(3) {
        Some(pos) => (cx.push(Op::Gather { axis: 0 }, &[cos, pos])?, cx.push(Op::Gather { axis: 0 }, &[sin, pos])?),
        None => (cos, sin),
    };
    let cos = cx.push(Op::Unsqueeze { axes: vec![2] }, &[cos])?;
    let sin = cx.push(Op::Unsqueeze { axes: vec![2] }, &[sin])?;
    let slice = |cx: &mut NodeCx, v: ValueId, from: i64, to: i64, step: i64| -> R<ValueId> {
        let (s, e, a, st) = (cx.const_i64(&[from]), cx.const_i64(&[to]), cx.const_i64(&[3]), cx.const_i64(&[step]));
        cx.push(Op::Slice {}, &[v, s, e, a, st])
    };
    let x_rot = slice(cx, xb, 0, rot, 1)?;
    let interleaved = cx.attr_i("interleaved", 0) != 0;
    let (x1, x2) = if interleaved {
        (slice(cx, x_rot, 0, rot, 2)?, slice(cx, x_rot, 1, rot, 2)?)
    } else {
        (slice(cx, x_rot, 0, rot / 2, 1)?, slice(cx, x_rot, rot / 2, rot, 1)?)
    };
    let c1 = bin(cx, BinaryOp::Mul, cos, x1)?;
    let s2 = bin(cx, BinaryOp::Mul, sin, x2)?;
    let real = bin(cx, BinaryOp::Sub, c1, s2)?;
    let s1 = bin(cx, BinaryOp::Mul, sin, x1)?;
    let c2 = bin(cx, BinaryOp::Mul, cos, x2)?;
    let imag = bin(cx, BinaryOp::Add, s1, c2)?;
    let rotated = if interleaved {
        let r = cx.push(Op::Unsqueeze { axes: vec![4] }, &[real])?;
        let i = cx.push(Op::Unsqueeze { axes: vec![4] }, &[imag])?;
        let pairs = cx.push(Op::Concat { axis: 4 }, &[r, i])?;
        let shape = cx.const_i64(&[0, 0, 0, rot]);
        cx.push(Op::Reshape { allowzero: false }, &[pairs, shape])?
    } else {
        cx.push(Op::Concat { axis: 3 }, &[real, imag])?
    };
    let y = if rot < d {
        let rest = slice(cx, xb, rot, d, 1)?;
        cx.push(Op::Concat { axis: 3 }, &[rotated, rest])?
    } else {
        rotated
    };
    let y = match rank {
        4 => cx.push(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[y])?,
        _ => {
            let shape = cx.const_i64(&[0, 0, -1]);
            cx.push(Op::Reshape { allowzero: false }, &[y, shape])?
        }
    };
    Ok(vec![y])
}
