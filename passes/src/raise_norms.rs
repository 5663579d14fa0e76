//! Raising, norms: RMSNorm written out as `w · (x · 1/sqrt(mean(x², -1) + eps))` becomes
//! `rms_norm {eps}`. (LayerNorm needs no raising: the exporter emits ONNX `LayerNormalization`, which
//! imports as `layer_norm`.)
//!
//! Structure: `reduce_mean(pow(x, 2) | mul(x, x), axes = [-1], keepdims)`, `add(·, eps)` with a scalar
//! constant eps, `reciprocal(sqrt(·))` or `rsqrt(·)` or `div(1, sqrt(·))`, `mul(x, ·)` with the same `x`,
//! then `mul(w, ·)` with a one-dimensional weight of the hidden size (operands in either order). Meaning:
//! the match is evaluated on test data and compared with rms_norm at the eps read from the graph.
//! Leaves alone: norms without a weight, over other axes, or with casts inside (f16 exports).

use kiln_ir::{BinaryOp, Op, ReduceKind, Tensor, UnaryOp, ValueId};

use crate::raise_decoder::Raiser;
use crate::raise_probe::{close, probe_shape, test_tensor};

struct Site {
    x: ValueId,
    w: ValueId,
    eps: f64,
    out: ValueId,
}

/// For a `binary op` node with `v` as one operand, its other operand and its result.
fn with_operand(r: &Raiser, node: kiln_ir::NodeId, op: BinaryOp, v: ValueId) -> Option<(ValueId, ValueId)> {
    let n = r.g.node(node);
    match (&n.op, &n.inputs[..]) {
        (Op::Binary(o), &[a, b]) if *o == op && a == v => Some((b, n.outputs[0])),
        (Op::Binary(o), &[a, b]) if *o == op && b == v => Some((a, n.outputs[0])),
        _ => None,
    }
}

fn single_user(r: &Raiser, v: ValueId) -> Option<kiln_ir::NodeId> {
    match r.users(v)[..] {
        [u] => Some(u),
        _ => None,
    }
}

fn match_site(r: &Raiser, mean: ValueId) -> Option<Site> {
    let (Op::Reduce { kind: ReduceKind::Mean, axes, keepdims: true }, &[squares]) = r.def(mean)? else {
        return None;
    };
    let rank = r.g.value_type(squares).rank() as i64;
    if axes.len() != 1 || (axes[0] != -1 && axes[0] != rank - 1) {
        return None;
    }
    let x = match r.def(squares)? {
        (Op::Binary(BinaryOp::Pow), &[x, two]) if r.scalar(two) == Some(2.0) => x,
        (Op::Binary(BinaryOp::Mul), &[x, x2]) if x == x2 => x,
        _ => return None,
    };
    let (eps_value, shifted) = with_operand(r, single_user(r, mean)?, BinaryOp::Add, mean)?;
    let eps = r.scalar(eps_value)?;
    let user = single_user(r, shifted)?;
    let inv = match &r.g.node(user).op {
        Op::Unary(UnaryOp::Rsqrt) => r.g.node(user).outputs[0],
        Op::Unary(UnaryOp::Sqrt) => {
            let root = r.g.node(user).outputs[0];
            let n = r.g.node(single_user(r, root)?);
            match (&n.op, &n.inputs[..]) {
                (Op::Unary(UnaryOp::Reciprocal), _) => n.outputs[0],
                (Op::Binary(BinaryOp::Div), &[one, d]) if d == root && r.scalar(one) == Some(1.0) => n.outputs[0],
                _ => return None,
            }
        }
        _ => return None,
    };
    let (x2, normed) = with_operand(r, single_user(r, inv)?, BinaryOp::Mul, inv)?;
    if x2 != x {
        return None;
    }
    let (w, out) = with_operand(r, single_user(r, normed)?, BinaryOp::Mul, normed)?;
    let hidden = r.g.value_type(x).shape.dims().last()?.as_static()?;
    let w_ty = r.g.value_type(w);
    if w_ty.rank() != 1 || w_ty.shape.dims()[0].as_static() != Some(hidden) || !w_ty.dtype.is_float() {
        return None;
    }
    matches!(r.def(w)?.0, Op::Weight { .. } | Op::Constant { .. }).then_some(Site { x, w, eps, out })
}

/// rms_norm of `x` over its last axis, in f64, times `w`.
fn reference(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let h = *x.shape().last().expect("rank >= 1");
    let (xs, ws) = (x.to_f64_vec(), w.to_f64_vec());
    let out = xs
        .chunks(h)
        .flat_map(|row| {
            let scale = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / h as f64 + eps).sqrt();
            row.iter().zip(&ws).map(move |(v, w)| (v * scale * w) as f32).collect::<Vec<_>>()
        })
        .collect();
    Tensor::f32(x.shape().to_vec(), out).expect("same shape as x")
}

fn check(r: &Raiser, site: &Site) -> bool {
    let Some(shape) = probe_shape(r.g, site.x, 3) else { return false };
    let Some(w) = r.known(site.w) else { return false };
    let x = test_tensor(shape, 5);
    let Some(got) = r.probe_at(3).bind(site.x, x.clone()).eval(site.out) else { return false };
    close(&got, &reference(&x, &w, site.eps), 1e-4 * w.to_f64_vec().iter().fold(1.0, |m: f64, v| m.max(v.abs())))
}

pub(crate) fn raise(r: &mut Raiser) -> Result<(), String> {
    let means: Vec<ValueId> =
        r.g.nodes()
            .filter(|(_, n)| matches!(n.op, Op::Reduce { kind: ReduceKind::Mean, .. }))
            .map(|(_, n)| n.outputs[0])
            .collect();
    let mut unchecked = 0;
    for mean in means {
        let Some(site) = match_site(r, mean) else { continue };
        if !check(r, &site) {
            unchecked += 1;
            continue;
        }
        let norm = r.emit(Op::RmsNorm { eps: site.eps as f32, offset: 0.0 }, &[site.x, site.w], site.out)?;
        r.g.replace_all_uses(site.out, norm);
    }
    if unchecked > 0 {
        r.notes.push(format!(
            "rms_norm: {unchecked} subgraph(s) shaped like RMSNorm did not compute it on test data; left generic"
        ));
    }
    Ok(())
}
