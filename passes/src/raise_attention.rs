//! Raising, attention: `softmax(q·kᵀ·scale + mask)·v` over heads, as the exporter writes
//! `scaled_dot_product_attention` (or eager attention), becomes one `attention` op with a KV-cache layer.
//!
//! The pattern, from the softmax outwards:
//! - `p = softmax(s, -1)`, optionally `where(isnan(p), 0, p)` (SDPA's guard for fully masked rows);
//! - `o = matmul(p, v)`;
//! - `s = matmul(q·c1, kᵀ·c2)·c3 + mask`, each `c` an optional scalar constant (`mul` or `div`): the
//!   scale is their product, read from the graph;
//! - `mask` must evaluate to the causal mask (0 on and below the diagonal, -inf or the float minimum
//!   above) for every length tried: a sliding window or a padding mask does not match;
//! - `kᵀ` must evaluate to `k` with its last two dims swapped, whatever reshapes and transposes spell it;
//! - `k` and `v` may be GQA repeats `reshape(expand(unsqueeze(k')))` of fewer kv heads: the repeat is
//!   checked by evaluation and peeled off, so the KV cache holds the kv heads only.
//!
//! All sites are matched first; the graph is rewritten only if every one matched, because one generic
//! attention left among cached ones would see only the new tokens. Layers are numbered in program order.

use std::collections::HashMap;

use kiln_ir::{BinaryOp, Op, Tensor, UnaryOp, ValueId};

use crate::raise_decoder::Raiser;
use crate::raise_probe::{close, probe_shape, test_tensor};

/// One matched attention: `q: [b, heads, s, d]`, `k, v: [b, kv_heads, s, d]`, `out = softmax(..)·v`.
pub(crate) struct Site {
    q: ValueId,
    k: ValueId,
    v: ValueId,
    out: ValueId,
    scale: f64,
}

/// `v` with a scalar factor peeled off: `(x, factor)` for `x·c`, `c·x` or `x/c`, else `(v, 1)`.
fn peel_scale(r: &Raiser, v: ValueId) -> (ValueId, f64) {
    if let Some((Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Div)), &[a, b])) = r.def(v) {
        if let Some(c) = r.scalar(b) {
            return (a, if *op == BinaryOp::Mul { c } else { 1.0 / c });
        }
        if *op == BinaryOp::Mul
            && let Some(c) = r.scalar(a)
        {
            return (b, c);
        }
    }
    (v, 1.0)
}

/// The longest sequence a mask is evaluated at: a sliding window wider than this looks causal to the
/// check (real windows are 4096 tokens at most so far).
const MAX_MASK_PROBE: usize = 4098;

/// The sequence lengths to check a mask at: a few short ones, and just past every integer constant in the
/// mask's subgraph that could be a sliding-window size, where such a window would first show.
fn mask_probe_lengths(r: &Raiser, mask: ValueId) -> Vec<usize> {
    let mut lengths = vec![1usize, 2, 5];
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![mask];
    while let Some(v) = stack.pop() {
        if !seen.insert(v) || seen.len() > 400 {
            continue;
        }
        let Some((op, inputs)) = r.def(v) else { continue };
        if let Op::Constant { value } = op {
            if value.dtype().is_int() && value.len() == 1 {
                let c = value.to_i64_vec()[0];
                if c > 3 && (c as usize) < MAX_MASK_PROBE {
                    lengths.extend([c as usize + 1, c as usize + 2]);
                }
            }
            continue;
        }
        stack.extend(inputs.iter().copied());
    }
    lengths.sort_unstable();
    lengths.dedup();
    lengths
}

/// Whether `mask` evaluates to an additive causal mask for ids of several lengths.
fn is_causal_mask(r: &Raiser, mask: ValueId) -> Result<(), String> {
    for n in mask_probe_lengths(r, mask) {
        let t = r.probe_at(n).eval(mask).ok_or("the mask is not computed from the ids' length alone")?;
        let shape = t.shape();
        let rows_cols = shape.len() >= 2 && shape[shape.len() - 2..] == [n, n];
        if !rows_cols || shape[..shape.len() - 2].iter().any(|&d| d != 1) {
            return Err(format!("for {n} tokens the mask has shape {shape:?}, not [.., {n}, {n}]"));
        }
        let values = t.to_f64_vec();
        for i in 0..n {
            for j in 0..n {
                let x = values[i * n + j];
                let ok = if j <= i { x == 0.0 } else { x <= -1e30 };
                if !ok {
                    return Err(format!(
                        "for {n} tokens the mask is {x} at row {i}, column {j}: not the causal mask (a sliding window \
                         or padding mask is not raised)"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The value `xt` is the transpose of (last two dims swapped), searched among its nearest ancestors.
fn transposed_source(r: &Raiser, xt: ValueId) -> Option<ValueId> {
    let mut candidate = xt;
    for _ in 0..8 {
        let (_, inputs) = r.def(candidate)?;
        candidate = *inputs.first()?;
        if r.g.value_type(candidate).rank() != 4 {
            continue;
        }
        let Some(shape) = probe_shape(r.g, candidate, 3) else { continue };
        let x = test_tensor(shape.clone(), 7);
        let Some(got) = r.probe_at(3).bind(candidate, x.clone()).eval(xt) else { continue };
        let want = kiln_ir::eval::eval_generic(&Op::Transpose { perm: vec![0, 1, 3, 2] }, &[&x]).ok()??.remove(0);
        if close(&got, &want, 0.0) {
            return Some(candidate);
        }
    }
    None
}

/// `x` (`[b, heads, s, d]`) without a GQA head repeat: the nearest ancestor `x'` (`[b, kv_heads, s, d]`)
/// of which `x` is each head repeated `heads / kv_heads` times, or `x` itself.
fn unrepeated(r: &Raiser, x: ValueId) -> ValueId {
    let heads = r.g.value_type(x).shape.dims().get(1).and_then(|d| d.as_static());
    let mut candidate = x;
    for _ in 0..4 {
        let Some((_, inputs)) = r.def(candidate) else { break };
        let Some(&next) = inputs.first() else { break };
        candidate = next;
        let ty = r.g.value_type(candidate);
        let kv_heads = ty.shape.dims().get(1).and_then(|d| d.as_static());
        let (Some(heads), Some(kv_heads)) = (heads, kv_heads) else { continue };
        if ty.rank() != 4 || kv_heads == 0 || kv_heads >= heads || !heads.is_multiple_of(kv_heads) {
            continue;
        }
        let Some(shape) = probe_shape(r.g, candidate, 3) else { continue };
        let src = test_tensor(shape.clone(), 11);
        let Some(got) = r.probe_at(3).bind(candidate, src.clone()).eval(x) else { continue };
        let rep = (heads / kv_heads) as usize;
        let (b, kvh, s, d) = (shape[0], shape[1], shape[2], shape[3]);
        let values = src.to_f32_vec();
        let mut want = Vec::with_capacity(b * kvh * rep * s * d);
        for bi in 0..b {
            for h in 0..kvh {
                for _ in 0..rep {
                    let start = ((bi * kvh + h) * s) * d;
                    want.extend_from_slice(&values[start..start + s * d]);
                }
            }
        }
        let want = Tensor::f32(vec![b, kvh * rep, s, d], want).expect("repeated heads fill the shape");
        if close(&got, &want, 0.0) {
            return candidate;
        }
    }
    x
}

/// Matches the attention around one softmax node's result `p`.
/// `masks` remembers the masks already checked (every layer usually shares one).
fn match_site(r: &Raiser, softmax: ValueId, masks: &mut HashMap<ValueId, Result<(), String>>) -> Result<Site, String> {
    let Some((Op::Softmax { axis }, &[scores])) = r.def(softmax) else { unreachable!("called on softmax results") };
    let rank = r.g.value_type(scores).rank() as i64;
    if *axis != -1 && *axis != rank - 1 {
        return Err(format!("the softmax is over axis {axis}, not the keys (the last axis)"));
    }
    // The probabilities, through SDPA's NaN guard.
    let mut p = softmax;
    let users = r.users(p);
    if users.len() == 2 || users.len() == 1 {
        for &u in &users {
            let n = r.g.node(u);
            if let (Op::Unary(UnaryOp::IsNan), Some(&isnan)) = (&n.op, n.outputs.first())
                && let [w] = r.users(isnan)[..]
                && let (Op::Where {}, [c, zero, x]) = (&r.g.node(w).op, &r.g.node(w).inputs[..])
                && *c == isnan
                && *x == p
                && r.scalar(*zero) == Some(0.0)
            {
                p = r.g.node(w).outputs[0];
                break;
            }
        }
    }
    let users = r.users(p);
    let [pv] = users[..] else {
        return Err(format!("the attention probabilities have {} users, not one `matmul` with v", users.len()));
    };
    let node = r.g.node(pv);
    let (Op::MatMul {}, &[lhs, v_rep]) = (&node.op, &node.inputs[..]) else {
        return Err(format!("the attention probabilities feed `{}`, not `matmul` with v", node.op.name()));
    };
    if lhs != p {
        return Err("the probabilities are the right operand of their matmul".into());
    }
    let out = node.outputs[0];

    // Scores: scaled q·kᵀ plus the mask.
    let (qk_scaled, mask) =
        match r.def(scores) {
            Some((Op::Binary(BinaryOp::Add), &[a, b])) => {
                if matches!(r.def(peel_scale(r, a).0), Some((Op::MatMul {}, _))) { (a, b) } else { (b, a) }
            }
            _ => return Err("the scores have no additive mask, so the attention is not causal".into()),
        };
    let (qk, c3) = peel_scale(r, qk_scaled);
    let Some((Op::MatMul {}, &[q_scaled, kt_scaled])) = r.def(qk) else {
        return Err("the scores are not a `matmul` of q and kᵀ".into());
    };
    let (q, c1) = peel_scale(r, q_scaled);
    let (kt, c2) = peel_scale(r, kt_scaled);
    let scale = c1 * c2 * c3;
    masks.entry(mask).or_insert_with(|| is_causal_mask(r, mask)).clone()?;
    let k_rep = transposed_source(r, kt).ok_or("the key operand is not a transposed key tensor")?;

    let (q_ty, k_rep_ty, v_ty) = (r.g.value_type(q), r.g.value_type(k_rep), r.g.value_type(v_rep));
    for (what, ty) in [("q", q_ty), ("k", k_rep_ty), ("v", v_ty)] {
        let d = ty.shape.dims();
        if ty.rank() != 4 || d[1].as_static().is_none() || d[3].as_static().is_none() {
            return Err(format!("{what} is {ty}, not [batch, heads, seq, head_dim] with static heads and head_dim"));
        }
    }
    let k = unrepeated(r, k_rep);
    let v = unrepeated(r, v_rep);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(format!("the scale {scale} is not a positive number"));
    }
    Ok(Site { q, k, v, out, scale })
}

/// Matches every attention; `None` (with a note per failure) unless all of them match.
pub(crate) fn find(r: &mut Raiser) -> Option<Vec<Site>> {
    let softmaxes: Vec<ValueId> =
        r.g.nodes().filter(|(_, n)| matches!(n.op, Op::Softmax { .. })).map(|(_, n)| n.outputs[0]).collect();
    if softmaxes.is_empty() {
        r.notes.push("attention: no softmax found, so there is no attention to give a KV cache".into());
        return None;
    }
    let mut sites = Vec::new();
    let mut failed = Vec::new();
    let mut masks = HashMap::new();
    for (i, &s) in softmaxes.iter().enumerate() {
        match match_site(r, s, &mut masks) {
            Ok(site) => sites.push(site),
            Err(why) => failed.push((i + 1, why)),
        }
    }
    if failed.is_empty() {
        return Some(sites);
    }
    // One note per reason, naming the attentions (softmaxes in program order) it applies to.
    let n = softmaxes.len();
    let mut reasons: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, why) in failed {
        match reasons.iter_mut().find(|(w, _)| *w == why) {
            Some((_, which)) => which.push(i),
            None => reasons.push((why, vec![i])),
        }
    }
    for (why, which) in reasons {
        let which: Vec<String> = which.iter().map(usize::to_string).collect();
        r.notes.push(format!("attention {} of {n}: {why}", which.join(", ")));
    }
    r.notes.push(format!(
        "attention: {} of {} attention subgraphs did not match, so none is raised: the graph has no KV cache and \
         recomputes the whole sequence at each step",
        softmaxes.len() - sites.len(),
        softmaxes.len()
    ));
    None
}

/// Replaces every matched site by an `attention` op with its layer.
pub(crate) fn apply(r: &mut Raiser, sites: Vec<Site>, tree_mask: ValueId) -> Result<(), String> {
    let positions = r.positions.expect("positions are added before attention is raised");
    for (layer, site) in sites.into_iter().enumerate() {
        let q = r.swap_heads_and_seq(site.q, site.out)?;
        let k = r.swap_heads_and_seq(site.k, site.out)?;
        let v = r.swap_heads_and_seq(site.v, site.out)?;
        let op = Op::Attention {
            layer: Some(layer as u32),
            scale: site.scale as f32,
            causal: true,
            window: None,
            sinks: 0,
            softcap: None,
        };
        let attn = r.emit(op, &[q, k, v, positions, tree_mask], site.out)?;
        // The result back in the graph's [b, heads, s, d] layout; usually transposed straight back by the
        // graph, which then reads `attn` directly.
        for user in r.users(site.out) {
            let node = r.g.node(user);
            if let Op::Transpose { perm } = &node.op
                && perm == &[0, 2, 1, 3]
            {
                let t = node.outputs[0];
                r.g.replace_all_uses(t, attn);
            }
        }
        if !r.users(site.out).is_empty() || r.g.outputs().contains(&site.out) {
            let back = r.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[attn], site.out)?;
            r.g.replace_all_uses(site.out, back);
        }
    }
    Ok(())
}
