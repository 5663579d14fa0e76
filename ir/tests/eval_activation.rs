//! `softmax`, `silu`, `gelu` and `swiglu` against f64 formulas, including large logits, half
//! precision inputs and error cases.

// References are index loops on purpose: they mirror the math, not the implementation.
#![allow(clippy::needless_range_loop)]

mod eval_support;

use eval_support::*;
use kiln_ir::{GeluApprox, Op};

/// erf by its Maclaurin series, independent of the implementation's libm.
fn erf_series(x: f64) -> f64 {
    let mut sum = 0.0;
    let mut term = x;
    for n in 0..80 {
        sum += term / (2 * n + 1) as f64;
        term *= -x * x / (n + 1) as f64;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

/// Softmax along axis `axis` of a [d0, d1, d2] tensor: plain exp in f64 (the inputs stay below
/// f64's overflow), normalised by the sum.
fn softmax_ref(x: &[f64], shape: [usize; 3], axis: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (i, o) in out.iter_mut().enumerate() {
        let c = coords(i, &shape);
        let sum: f64 = (0..shape[axis])
            .map(|k| {
                let mut ck = c.clone();
                ck[axis] = k;
                x[flat(&ck, &shape)].exp()
            })
            .sum();
        *o = x[i].exp() / sum;
    }
    out
}

#[test]
fn softmax_along_each_axis_is_stable() {
    let mut v: Vec<f32> = values(24, 2, -4.0, 4.0).into_iter().map(|x| x as f32).collect();
    // Logits whose exp overflows f32 (e^100 > f32::MAX) must still normalise.
    v[0] = 100.0;
    v[1] = 95.0;
    v[5] = -100.0;
    let x = f32t(&[2, 3, 4], &v);
    let xv = x.to_f64_vec();
    for axis in 0..3 {
        let want = softmax_ref(&xv, [2, 3, 4], axis);
        assert_close(&run1(&Op::Softmax { axis: axis as i64 }, &[&x]), &[2, 3, 4], &want);
        assert_close(&run1(&Op::Softmax { axis: axis as i64 - 3 }, &[&x]), &[2, 3, 4], &want);
        let x64 = f64t(&[2, 3, 4], &xv);
        assert_close_tol(&run1(&Op::Softmax { axis: axis as i64 }, &[&x64]), &[2, 3, 4], &want, 1e-12);
    }
    let small = rand_f32(&[2, 3, 4], 3);
    for h in [to_f16(&small), to_bf16(&small)] {
        let want = softmax_ref(&h.to_f64_vec(), [2, 3, 4], 2);
        let got = run1(&Op::Softmax { axis: -1 }, &[&h]);
        assert_eq!(got.dtype(), h.dtype());
        assert_close_half(&got, &[2, 3, 4], &want);
    }
    assert_fails(&Op::Softmax { axis: 3 }, &[&x], "softmax: axis 3 is out of range for rank 3");
    assert_fails(&Op::Softmax { axis: -1 }, &[&i64t(&[2], &[1, 2])], "input must be a float tensor, got i64[2]");
}

fn silu_ref(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

#[test]
fn silu_and_gelu_match_formulas() {
    let mut v: Vec<f32> = values(30, 5, -6.0, 6.0).into_iter().map(|x| x as f32).collect();
    v[0] = -90.0;
    v[1] = 90.0;
    let x = f32t(&[5, 6], &v);
    let xv = x.to_f64_vec();
    let gelu_exact = |a: f64| 0.5 * a * (1.0 + erf_series(a / 2f64.sqrt()));
    let gelu_tanh =
        |a: f64| 0.5 * a * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (a + 0.044715 * a.powi(3))).tanh());
    let cases: [(Op, &dyn Fn(f64) -> f64); 3] = [
        (Op::Silu {}, &silu_ref),
        (Op::Gelu { approximate: GeluApprox::None }, &gelu_exact),
        (Op::Gelu { approximate: GeluApprox::Tanh }, &gelu_tanh),
    ];
    for (op, f) in cases {
        // The erf series loses accuracy far out; beyond |x| = 6 erf is 1 to f64 precision.
        let want: Vec<f64> = xv.iter().map(|&a| if a.abs() > 6.0 { a.max(0.0) } else { f(a) }).collect();
        assert_close(&run1(&op, &[&x]), &[5, 6], &want);
        // The series reference itself is only good to ~1e-11 near |x| = 6.
        let x64 = f64t(&[5, 6], &xv);
        assert_close_tol(&run1(&op, &[&x64]), &[5, 6], &want, 1e-9);
        for h in [to_f16(&rand_f32(&[4, 2], 9)), to_bf16(&rand_f32(&[4, 2], 9))] {
            let want: Vec<f64> = h.to_f64_vec().into_iter().map(f).collect();
            let got = run1(&op, &[&h]);
            assert_eq!(got.dtype(), h.dtype());
            assert_close_half(&got, &[4, 2], &want);
        }
        assert_fails(&op, &[&i64t(&[1], &[1])], "input must be a float tensor");
    }
}

#[test]
fn swiglu_is_silu_gate_times_up() {
    let gate = rand_f32(&[3, 4], 11);
    let up = rand_f32(&[3, 4], 12);
    let want: Vec<f64> = gate.to_f64_vec().iter().zip(up.to_f64_vec()).map(|(&g, u)| silu_ref(g) * u).collect();
    assert_close(&run1(&Op::Swiglu {}, &[&gate, &up]), &[3, 4], &want);
    let (hg, hu) = (to_bf16(&gate), to_bf16(&up));
    let want: Vec<f64> = hg.to_f64_vec().iter().zip(hu.to_f64_vec()).map(|(&g, u)| silu_ref(g) * u).collect();
    assert_close_half(&run1(&Op::Swiglu {}, &[&hg, &hu]), &[3, 4], &want);

    assert_fails(
        &Op::Swiglu {},
        &[&gate, &rand_f32(&[3, 5], 1)],
        "swiglu: gate f32[3, 4] and up f32[3, 5] must have the same dtype and shape",
    );
    assert_fails(&Op::Swiglu {}, &[&gate, &hu], "same dtype and shape");
    let i = i64t(&[1], &[1]);
    assert_fails(&Op::Swiglu {}, &[&i, &i], "inputs must be float tensors");
    assert_fails(&Op::Swiglu {}, &[&gate], "expected 2 inputs, got 1");
}
