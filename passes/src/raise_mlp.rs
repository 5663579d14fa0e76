//! Raising, MLP activations: `x · sigmoid(x)` becomes `silu(x)`, then `silu(g) · u` becomes
//! `swiglu(g, u)` (the gated MLP of llama and qwen2); GELU written out with `tanh` (GPT-2's `gelu_new`,
//! `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`) or with `erf` becomes `gelu`.
//!
//! The GELU match is structural around the `tanh`/`erf` (`mul(mul(x, 0.5), add(t, 1))`) and then checked
//! on test data against the formula, so the constants inside are verified, not assumed. Leaves alone:
//! anything that does not check out (reported), and activations with casts inside.

use kiln_ir::{BinaryOp, GeluApprox, Op, Tensor, UnaryOp, ValueId};

use crate::raise_decoder::Raiser;
use crate::raise_probe::{close, probe_shape, test_tensor};

/// `mul(a, b)` operands of the node defining `v`.
fn mul_operands(r: &Raiser, v: ValueId) -> Option<(ValueId, ValueId)> {
    match r.def(v)? {
        (Op::Binary(BinaryOp::Mul), &[a, b]) => Some((a, b)),
        _ => None,
    }
}

fn raise_silu(r: &mut Raiser) -> Result<(), String> {
    let muls: Vec<ValueId> =
        r.g.nodes().filter(|(_, n)| n.op == Op::Binary(BinaryOp::Mul)).map(|(_, n)| n.outputs[0]).collect();
    for m in muls {
        let Some((a, b)) = mul_operands(r, m) else { continue };
        let x = match (r.def(a), r.def(b)) {
            (_, Some((Op::Unary(UnaryOp::Sigmoid), &[x]))) if x == a => x,
            (Some((Op::Unary(UnaryOp::Sigmoid), &[x])), _) if x == b => x,
            _ => continue,
        };
        let silu = r.emit(Op::Silu {}, &[x], m)?;
        r.g.replace_all_uses(m, silu);
    }
    let muls: Vec<ValueId> =
        r.g.nodes().filter(|(_, n)| n.op == Op::Binary(BinaryOp::Mul)).map(|(_, n)| n.outputs[0]).collect();
    for m in muls {
        let Some((a, b)) = mul_operands(r, m) else { continue };
        let (gate, up) = match (r.def(a), r.def(b)) {
            (Some((Op::Silu {}, &[g])), _) => (g, b),
            (_, Some((Op::Silu {}, &[g]))) => (g, a),
            _ => continue,
        };
        if r.g.value_type(gate) != r.g.value_type(up) {
            continue;
        }
        let swiglu = r.emit(Op::Swiglu {}, &[gate, up], m)?;
        r.g.replace_all_uses(m, swiglu);
    }
    Ok(())
}

/// GELU in f64: exact (erf) or with the tanh approximation.
fn gelu(x: f64, approximate: GeluApprox) -> f64 {
    match approximate {
        GeluApprox::Tanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
        GeluApprox::None => 0.5 * x * (1.0 + erf_series(x / std::f64::consts::SQRT_2)),
    }
}

/// erf by its Maclaurin series, `2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))`: accurate to ~1e-15 on the
/// probe's inputs (|x| < 2 / √2), where 60 terms are far more than enough. (Rust's std has no erf, and
/// the short rational approximations are too coarse for the 1e-5 check.)
fn erf_series(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    for n in 0..60 {
        sum += term / (2 * n + 1) as f64;
        term *= -x * x / (n + 1) as f64;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

fn raise_gelu(r: &mut Raiser) -> Result<(), String> {
    let roots: Vec<(ValueId, GeluApprox)> =
        r.g.nodes()
            .filter_map(|(_, n)| match n.op {
                Op::Unary(UnaryOp::Tanh) => Some((n.outputs[0], GeluApprox::Tanh)),
                Op::Unary(UnaryOp::Erf) => Some((n.outputs[0], GeluApprox::None)),
                _ => None,
            })
            .collect();
    let mut unchecked = 0;
    for (t, approximate) in roots {
        // add(t, 1) -> mul(mul(x, 0.5), ·)
        let [add] = r.users(t)[..] else { continue };
        let add_node = r.g.node(add);
        let (Op::Binary(BinaryOp::Add), &[a, b]) = (&add_node.op, &add_node.inputs[..]) else { continue };
        let one = if a == t { b } else { a };
        if r.scalar(one) != Some(1.0) {
            continue;
        }
        let plus_one = add_node.outputs[0];
        let [mul] = r.users(plus_one)[..] else { continue };
        let mul_node = r.g.node(mul);
        let (Op::Binary(BinaryOp::Mul), &[a, b]) = (&mul_node.op, &mul_node.inputs[..]) else { continue };
        let out = mul_node.outputs[0];
        let half_x = if a == plus_one { b } else { a };
        let Some((p, q)) = mul_operands(r, half_x) else { continue };
        let x = if r.scalar(q) == Some(0.5) {
            p
        } else if r.scalar(p) == Some(0.5) {
            q
        } else {
            continue;
        };
        let Some(shape) = probe_shape(r.g, x, 3) else { continue };
        let probe_x = Tensor::f32(shape.clone(), test_tensor(shape, 9).to_f32_vec().iter().map(|v| v * 2.0).collect())
            .expect("same shape");
        let want = Tensor::f32(
            probe_x.shape().to_vec(),
            probe_x.to_f64_vec().iter().map(|&v| gelu(v, approximate) as f32).collect(),
        )
        .expect("same shape");
        match r.probe_at(3).bind(x, probe_x).eval(out) {
            Some(got) if close(&got, &want, 1e-5) => {
                let g = r.emit(Op::Gelu { approximate }, &[x], out)?;
                r.g.replace_all_uses(out, g);
            }
            _ => unchecked += 1,
        }
    }
    if unchecked > 0 {
        r.notes.push(format!(
            "gelu: {unchecked} subgraph(s) shaped like GELU did not compute it on test data; left generic"
        ));
    }
    Ok(())
}

pub(crate) fn raise(r: &mut Raiser) -> Result<(), String> {
    raise_silu(r)?;
    raise_gelu(r)
}
