//! Raising, rotary embeddings: Hugging Face's `x·cos + rotate_half(x)·sin`, with
//! `rotate_half(x) = concat(-x[.., d/2:], x[.., :d/2])` and cos/sin computed in the graph from the
//! positions and an inverse-frequency table, becomes `rope {style = half, theta}`.
//!
//! Structure: `add(mul(x, cos), mul(concat(neg(slice(x)), slice(x)), sin))` (operands in either order).
//! Meaning: theta is read from the inverse-frequency constant (`inv_freq[i] = theta^(-2i/d)`, every entry
//! checked), then the whole subgraph is evaluated on test data at positions 5, 6, 7 and compared with rope
//! at that theta. So an attention scaling factor, partial rotary dims or a scaled table (llama3, YaRN,
//! linear) do not match, and are reported: those layers keep their generic rope, which still reads the
//! positions input, so the KV cache works either way.

use std::collections::HashSet;

use kiln_ir::{BinaryOp, Dim, Op, RopeScaling, RopeStyle, Tensor, UnaryOp, ValueId};

use crate::raise_decoder::Raiser;
use crate::raise_probe::{close, test_tensor};

/// A matched rotate-half site: the rotated input and the result.
struct Site {
    x: ValueId,
    out: ValueId,
}

/// The other operand of a binary `op` node that has `v` as one operand.
fn other_operand(r: &Raiser, node: kiln_ir::NodeId, op: BinaryOp, v: ValueId) -> Option<ValueId> {
    let n = r.g.node(node);
    match (&n.op, &n.inputs[..]) {
        (Op::Binary(o), &[a, b]) if *o == op && a == v => Some(b),
        (Op::Binary(o), &[a, b]) if *o == op && b == v => Some(a),
        _ => None,
    }
}

fn match_site(r: &Raiser, neg: ValueId) -> Option<Site> {
    let (Op::Unary(UnaryOp::Neg), &[high]) = r.def(neg)? else { return None };
    let (Op::Slice {}, &[x, ..]) = r.def(high)? else { return None };
    let [concat_node] = r.users(neg)[..] else { return None };
    let concat = r.g.node(concat_node);
    let rank = r.g.value_type(x).rank() as i64;
    match (&concat.op, &concat.inputs[..]) {
        (Op::Concat { axis }, &[a, low]) if a == neg && (*axis == -1 || *axis == rank - 1) => {
            let (Op::Slice {}, &[x2, ..]) = r.def(low)? else { return None };
            if x2 != x {
                return None;
            }
        }
        _ => return None,
    }
    let rotated = concat.outputs[0];
    let [mul_sin] = r.users(rotated)[..] else { return None };
    other_operand(r, mul_sin, BinaryOp::Mul, rotated)?;
    let rotated_sin = r.g.node(mul_sin).outputs[0];
    for add in r.users(rotated_sin) {
        let Some(other) = other_operand(r, add, BinaryOp::Add, rotated_sin) else { continue };
        let Some((Op::Binary(BinaryOp::Mul), &[a, b])) = r.def(other) else { continue };
        if a == x || b == x {
            return Some(Site { x, out: r.g.node(add).outputs[0] });
        }
    }
    None
}

/// The inverse-frequency table in the subgraph behind `out` (not behind `x`): a float constant or small
/// weight of `half` elements starting at 1 and decreasing.
fn inverse_frequencies(r: &Raiser, out: ValueId, x: ValueId, half: usize) -> Option<Vec<f64>> {
    let mut seen = HashSet::new();
    let mut stack = vec![out];
    while let Some(v) = stack.pop() {
        if v == x || !seen.insert(v) || seen.len() > 200 {
            continue;
        }
        let Some((op, inputs)) = r.def(v) else { continue };
        if matches!(op, Op::Constant { .. } | Op::Weight { .. }) {
            if let Some(t) = r.known(v)
                && t.dtype().is_float()
                && t.len() == half
            {
                let f = t.to_f64_vec();
                if f[0] == 1.0 && f.windows(2).all(|w| w[1] < w[0] && w[1] > 0.0) {
                    return Some(f);
                }
            }
            continue;
        }
        stack.extend(inputs.iter().copied());
    }
    None
}

/// Rope (half style, no scaling) of `x` with the sequence on `seq_axis` (1 or 2 of 4) and heads on the
/// other, in f64.
fn reference(x: &Tensor, seq_axis: usize, positions: &[i64], theta: f64) -> Tensor {
    let shape = x.shape().to_vec();
    let d = shape[3];
    let half = d / 2;
    let values = x.to_f64_vec();
    let mut out = vec![0f32; values.len()];
    let strides = kiln_ir::tensor::contiguous_strides(&shape);
    for row in 0..values.len() / d {
        let base = row * d;
        let s = (base / strides[seq_axis]) % shape[seq_axis];
        let p = positions[s] as f64;
        for i in 0..half {
            let angle = p * theta.powf(-2.0 * i as f64 / d as f64);
            let (sin, cos) = angle.sin_cos();
            let (a, b) = (values[base + i], values[base + i + half]);
            out[base + i] = (a * cos - b * sin) as f32;
            out[base + i + half] = (b * cos + a * sin) as f32;
        }
    }
    Tensor::f32(shape, out).expect("same shape as x")
}

/// Checks a site by value; `Ok(theta, seq_axis)` or why not.
fn check(r: &Raiser, site: &Site) -> Result<(f64, usize), String> {
    let ty = r.g.value_type(site.x);
    let dims = ty.shape.dims();
    let (Some(d), 4) = (dims.last().and_then(Dim::as_static), ty.rank()) else {
        return Err(format!("the rotated tensor is {ty}, not [batch, heads, seq, head_dim] with a static head_dim"));
    };
    let seq_axis = match (dims[1].as_static(), dims[2].as_static()) {
        (Some(_), None) => 2,
        (None, Some(_)) => 1,
        _ => return Err(format!("cannot tell the sequence axis of {ty}")),
    };
    let d = d as usize;
    if d < 4 || !d.is_multiple_of(2) {
        return Err(format!("head_dim {d} is too small or odd"));
    }
    let inv = inverse_frequencies(r, site.out, site.x, d / 2)
        .ok_or_else(|| format!("no inverse-frequency table of {} entries found", d / 2))?;
    let k = inv.len() - 1;
    let fitted = (-inv[k].ln() * d as f64 / (2.0 * k as f64)).exp();
    // The table is f32, so the fit is off in the 7th digit; bases are round numbers (10000, 5e5, 1e6),
    // and the check below holds the rounded one to the same tolerance as the fit.
    let theta = if ((fitted.round() - fitted) / fitted).abs() < 1e-5 { fitted.round() } else { fitted };
    for (i, &f) in inv.iter().enumerate() {
        let want = theta.powf(-2.0 * i as f64 / d as f64);
        if ((f - want) / want).abs() > 1e-5 {
            return Err(format!(
                "inverse frequency {i} is {f}, not theta^(-2i/d) = {want} for theta {theta}: a scaled rope (llama3, YaRN, \
                 linear) is not raised"
            ));
        }
    }
    let mut shape: Vec<usize> = dims.iter().map(|d| d.as_static().map_or(3, |n| n as usize)).collect();
    shape[seq_axis] = 3;
    let x = test_tensor(shape, 3);
    let positions = [5i64, 6, 7];
    let position_input = r.positions.expect("positions are added before rope is raised");
    let got = r
        .probe_at(3)
        .bind(site.x, x.clone())
        .bind(position_input, Tensor::i64(vec![1, 3], positions.to_vec()).expect("3 positions"))
        .eval(site.out)
        .ok_or("the cos/sin subgraph is not computed from the positions alone")?;
    if !close(&got, &reference(&x, seq_axis, &positions, theta), 1e-4) {
        return Err(format!("the subgraph does not compute rope with theta {theta} (checked at positions 5, 6, 7)"));
    }
    Ok((theta, seq_axis))
}

/// Raises every rotate-half site that checks out.
pub(crate) fn raise(r: &mut Raiser) -> Result<(), String> {
    if r.positions.is_none() {
        return Ok(());
    }
    let negs: Vec<ValueId> =
        r.g.nodes().filter(|(_, n)| matches!(n.op, Op::Unary(UnaryOp::Neg))).map(|(_, n)| n.outputs[0]).collect();
    let sites: Vec<Site> = negs.into_iter().filter_map(|n| match_site(r, n)).collect();
    let positions = r.positions.expect("checked above");
    let mut failures = Vec::new();
    let total = sites.len();
    for (i, site) in sites.into_iter().enumerate() {
        let (theta, seq_axis) = match check(r, &site) {
            Ok(found) => found,
            Err(why) => {
                failures.push(format!("rope {} of {total}: {why}", i + 1));
                continue;
            }
        };
        let d = r.g.value_type(site.x).shape.dims()[3].as_static().expect("checked static") as u32;
        let op = Op::Rope { style: RopeStyle::Half, theta, rotary_dim: d, scaling: RopeScaling::None };
        let result = if seq_axis == 2 {
            let x = r.swap_heads_and_seq(site.x, site.out)?;
            let rotated = r.emit(op, &[x, positions], site.out)?;
            r.emit(Op::Transpose { perm: vec![0, 2, 1, 3] }, &[rotated], site.out)?
        } else {
            r.emit(op, &[site.x, positions], site.out)?
        };
        r.g.replace_all_uses(site.out, result);
    }
    // One note for a family of identical failures (every layer fails the same way).
    failures.dedup_by(|a, b| a.split_once(": ").map(|x| x.1) == b.split_once(": ").map(|x| x.1));
    r.notes.extend(failures);
    Ok(())
}
