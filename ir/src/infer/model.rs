//! Type rules of the model-level ops (`embedding`, `rms_norm`, `layer_norm`, `linear`, `rope`,
//! `attention`, `swiglu`, `softmax`, `logits`), following the layouts documented on [`crate::Op`].

use super::{Args, normalize_axis, want_bool, want_float, want_int, want_min_rank, want_rank};
use super::{dims_compatible, merge_dims};
use crate::{DType, Dim, RopeScaling, Shape, TensorType};

fn want_weight_matrix(what: &str, ty: &TensorType, layout: &str) -> Result<(), String> {
    if !ty.dtype.is_weight_like() {
        return Err(format!("{what} must be a float or quantized {layout} matrix, but it is {ty}"));
    }
    want_rank(what, ty, 2, layout)
}

fn want_positive_finite(what: &str, x: f64) -> Result<(), String> {
    if x.is_finite() && x > 0.0 { Ok(()) } else { Err(format!("{what} must be a positive finite number, not {x}")) }
}

/// Merges two dims that the layout says are the same size, or explains the clash.
fn same_dim(a: &Dim, b: &Dim, explain: impl FnOnce() -> String) -> Result<Dim, String> {
    merge_dims(a, b).ok_or_else(explain)
}

pub(super) fn embedding(a: &Args) -> Result<TensorType, String> {
    let (table, ids) = (a.ty(0), a.ty(1));
    want_weight_matrix("the table", table, "[vocab, hidden]")?;
    want_int("ids", ids)?;
    let mut dims = ids.shape.0.clone();
    dims.push(table.shape.0[1].clone());
    let dtype = if table.dtype.is_float() { table.dtype } else { DType::F32 };
    Ok(TensorType::new(dtype, Shape(dims)))
}

pub(super) fn rms_norm(eps: f32, offset: f32, a: &Args) -> Result<TensorType, String> {
    let (x, w) = (a.ty(0), a.ty(1));
    want_float("x", x)?;
    want_min_rank("x", x, 1)?;
    want_float("weight", w)?;
    want_rank("weight", w, 1, "a vector [hidden]")?;
    let h = x.shape.0.last().expect("rank checked");
    if !dims_compatible(&w.shape.0[0], h) {
        return Err(format!("weight has {} elements but the normalised dim of x is {h}", w.shape.0[0]));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("eps must be a finite non-negative number, not {eps}"));
    }
    if !offset.is_finite() {
        return Err(format!("offset must be finite, not {offset}"));
    }
    Ok(x.clone())
}

pub(super) fn layer_norm(axis: i64, eps: f32, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    want_float("x", x)?;
    let start = normalize_axis(axis, x.rank(), "axis")?;
    let normalised = Shape(x.shape.0[start..].to_vec());
    for (i, what) in [(1, "weight"), (2, "bias")] {
        let Some(t) = a.opt_ty(i) else { continue };
        want_float(what, t)?;
        let ok = t.rank() == normalised.rank()
            && t.shape.0.iter().zip(normalised.dims()).all(|(p, q)| dims_compatible(p, q));
        if !ok {
            return Err(format!(
                "{what} has shape {} but the normalised dims of x (axis {axis} to the end) are {normalised}",
                t.shape
            ));
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("eps must be a finite non-negative number, not {eps}"));
    }
    Ok(x.clone())
}

pub(super) fn linear(a: &Args) -> Result<TensorType, String> {
    let (x, w) = (a.ty(0), a.ty(1));
    want_float("x", x)?;
    want_min_rank("x", x, 1)?;
    want_weight_matrix("weight", w, "[out, in]")?;
    let k = x.shape.0.last().expect("rank checked");
    let (n, wk) = (&w.shape.0[0], &w.shape.0[1]);
    if !dims_compatible(k, wk) {
        return Err(format!("x's last dim is {k} but the weight {} has {wk} input features", w.shape));
    }
    if let Some(b) = a.opt_ty(2) {
        want_float("bias", b)?;
        want_rank("bias", b, 1, "a vector [out]")?;
        if !dims_compatible(&b.shape.0[0], n) {
            return Err(format!("bias has {} elements but the weight {} has {n} outputs", b.shape.0[0], w.shape));
        }
    }
    let mut dims = x.shape.0.clone();
    *dims.last_mut().expect("rank checked") = n.clone();
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

pub(super) fn rope(theta: f64, rotary_dim: u32, scaling: &RopeScaling, a: &Args) -> Result<TensorType, String> {
    let (x, pos) = (a.ty(0), a.ty(1));
    want_float("x", x)?;
    want_rank("x", x, 4, "[batch, seq, heads, head_dim]")?;
    want_int("positions", pos)?;
    want_rank("positions", pos, 2, "[batch, seq]")?;
    for (i, name) in [(0, "batch"), (1, "seq")] {
        if !dims_compatible(&pos.shape.0[i], &x.shape.0[i]) {
            return Err(format!("positions {} disagree with x {} in the {name} dim", pos.shape, x.shape));
        }
    }
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        return Err(format!("rotary_dim must be a positive even number, not {rotary_dim}"));
    }
    if let Dim::Static(d) = x.shape.0[3]
        && u64::from(rotary_dim) > d
    {
        return Err(format!("rotary_dim {rotary_dim} exceeds the head_dim {d} of x"));
    }
    want_positive_finite("theta", theta)?;
    match *scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => want_positive_finite("the linear scaling factor", factor)?,
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            want_positive_finite("the llama3 scaling factor", factor)?;
            want_positive_finite("low_freq_factor", low_freq_factor)?;
            want_positive_finite("high_freq_factor", high_freq_factor)?;
            if high_freq_factor <= low_freq_factor {
                return Err(format!(
                    "llama3 scaling needs high_freq_factor > low_freq_factor, but they are {high_freq_factor} \
                     and {low_freq_factor}"
                ));
            }
            if original_max_position == 0 {
                return Err("llama3 scaling needs a positive original_max_position".into());
            }
        }
        RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor } => {
            want_positive_finite("the yarn scaling factor", factor)?;
            want_positive_finite("beta_fast", beta_fast)?;
            want_positive_finite("beta_slow", beta_slow)?;
            want_positive_finite("attention_factor", attention_factor)?;
            if beta_fast <= beta_slow {
                return Err(format!(
                    "yarn scaling needs beta_fast > beta_slow, but they are {beta_fast} and {beta_slow}"
                ));
            }
            if original_max_position == 0 {
                return Err("yarn scaling needs a positive original_max_position".into());
            }
        }
    }
    Ok(x.clone())
}

pub(super) fn attention(
    layer: Option<u32>,
    scale: f32,
    window: Option<u32>,
    softcap: Option<f32>,
    a: &Args,
) -> Result<TensorType, String> {
    let (q, k, v, pos) = (a.ty(0), a.ty(1), a.ty(2), a.ty(3));
    want_float("q", q)?;
    want_rank("q", q, 4, "[batch, seq, heads, head_dim]")?;
    want_float("k", k)?;
    want_rank("k", k, 4, "[batch, kv_seq, kv_heads, head_dim]")?;
    want_float("v", v)?;
    want_rank("v", v, 4, "[batch, kv_seq, kv_heads, v_head_dim]")?;
    for (what, t) in [("k", k), ("v", v)] {
        if t.dtype != q.dtype {
            return Err(format!("{what} is {} but q is {}; q, k and v must share one dtype", t.dtype, q.dtype));
        }
    }
    want_int("positions", pos)?;
    want_rank("positions", pos, 2, "[batch, seq]")?;
    let [qb, s, h, d] = &q.shape.0[..] else { unreachable!("rank checked") };
    let [kb, skv, hk, kd] = &k.shape.0[..] else { unreachable!("rank checked") };
    let [vb, vs, vh, dv] = &v.shape.0[..] else { unreachable!("rank checked") };
    let mut b = qb.clone();
    for (what, other) in [("k", kb), ("v", vb), ("positions", &pos.shape.0[0])] {
        b = same_dim(&b, other, || format!("{what} has batch {other} but q has batch {qb}"))?;
    }
    same_dim(d, kd, || format!("k's head_dim {kd} differs from q's head_dim {d}"))?;
    same_dim(skv, vs, || format!("v holds {vs} keys but k holds {skv}"))?;
    same_dim(hk, vh, || format!("v has {vh} kv_heads but k has {hk}"))?;
    if *hk == Dim::Static(0) {
        return Err("k has 0 kv_heads".into());
    }
    if let (Dim::Static(hn), Dim::Static(hkn)) = (h, hk)
        && hn % hkn != 0
    {
        return Err(format!("{hn} heads are not a multiple of {hkn} kv_heads"));
    }
    match layer {
        Some(l) => {
            if !dims_compatible(skv, s) {
                return Err(format!(
                    "with layer = {l}, k and v hold only the new keys (the cache holds the past), so their \
                     seq {skv} must equal q's seq {s}"
                ));
            }
        }
        None => {
            if let (Dim::Static(kn), Dim::Static(qn)) = (skv, s)
                && kn < qn
            {
                return Err(format!(
                    "without `layer`, k and v hold every key, the last {qn} of them new, so they need at least \
                     {qn} keys but hold {kn}"
                ));
            }
        }
    }
    let s_out = same_dim(s, &pos.shape.0[1], || {
        format!("positions {} disagree with q's seq {s} (positions must be [batch, seq])", pos.shape)
    })?;
    if let Some(mask) = a.opt_ty(4) {
        want_bool("tree_mask", mask)?;
        want_rank("tree_mask", mask, 2, "[seq, seq]")?;
        if !mask.shape.0.iter().all(|m| dims_compatible(m, &s_out)) {
            return Err(format!("tree_mask is {} but q's seq is {s}; it must be [{s}, {s}]", mask.shape));
        }
    }
    if window == Some(0) {
        return Err("window must be positive when set (0 would hide every key)".into());
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(format!("scale must be a positive finite number, not {scale}"));
    }
    if let Some(c) = softcap {
        want_positive_finite("softcap", f64::from(c))?;
    }
    Ok(TensorType::new(q.dtype, Shape(vec![b, s_out, h.clone(), dv.clone()])))
}

pub(super) fn swiglu(a: &Args) -> Result<TensorType, String> {
    let (gate, up) = (a.ty(0), a.ty(1));
    want_float("gate", gate)?;
    want_float("up", up)?;
    if gate.dtype != up.dtype {
        return Err(format!("gate is {gate} but up is {up}; they must share one dtype"));
    }
    let mismatch = || format!("gate {} and up {} must have the same shape (no broadcasting)", gate.shape, up.shape);
    if gate.rank() != up.rank() {
        return Err(mismatch());
    }
    let dims = gate.shape.0.iter().zip(&up.shape.0).map(|(g, u)| merge_dims(g, u)).collect::<Option<Vec<_>>>();
    Ok(TensorType::new(gate.dtype, Shape(dims.ok_or_else(mismatch)?)))
}

pub(super) fn softmax(axis: i64, a: &Args) -> Result<TensorType, String> {
    let x = a.ty(0);
    want_float("x", x)?;
    normalize_axis(axis, x.rank(), "axis")?;
    Ok(x.clone())
}

pub(super) fn logits(softcap: Option<f32>, a: &Args) -> Result<TensorType, String> {
    let (x, w) = (a.ty(0), a.ty(1));
    want_float("x", x)?;
    want_min_rank("x", x, 1)?;
    want_weight_matrix("weight", w, "[vocab, hidden]")?;
    let h = x.shape.0.last().expect("rank checked");
    if !dims_compatible(h, &w.shape.0[1]) {
        return Err(format!("x's last dim is {h} but the weight {} has hidden size {}", w.shape, w.shape.0[1]));
    }
    if let Some(c) = softcap {
        want_positive_finite("softcap", f64::from(c))?;
    }
    let mut dims = x.shape.0.clone();
    *dims.last_mut().expect("rank checked") = w.shape.0[0].clone();
    Ok(TensorType::new(DType::F32, Shape(dims)))
}
