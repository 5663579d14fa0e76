//! Bad input never panics: every generic op is evaluated on every combination of a set of awkward
//! tensors (wrong dtypes, scalars, empty tensors, negative and extreme values) and attributes (axes
//! out of range, extreme sizes); each call must return `Ok` or an `EvalError`.

mod eval_support;

use eval_support::*;
use kiln_ir::eval::eval_generic;
use kiln_ir::{BinaryOp, CompareOp, DType, GeluApprox, Op, ReduceKind, Tensor, TensorData, UnaryOp};

fn awkward_tensors() -> Vec<Tensor> {
    vec![
        rand_f32(&[2, 3], 1),
        to_f16(&rand_f32(&[3], 2)),
        Tensor::scalar_f32(f32::NAN),
        i64t(&[2], &[2, 3]),
        i64t(&[1], &[-1]),
        i64t(&[], &[0]),
        i32t(&[2], &[0, -5]),
        i64t(&[3], &[i64::MAX, i64::MIN, 0]),
        boolt(&[2, 1], &[true, false]),
        Tensor::new(vec![0], TensorData::U8(vec![])).unwrap(),
        f32t(&[1, 0, 2], &[]),
    ]
}

fn ops() -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    ops.extend(UnaryOp::ALL.iter().map(|&u| Op::Unary(u)));
    ops.extend(BinaryOp::ALL.iter().map(|&b| Op::Binary(b)));
    ops.extend(CompareOp::ALL.iter().map(|&c| Op::Compare(c)));
    for &kind in ReduceKind::ALL {
        for axes in [vec![], vec![-1], vec![5], vec![0, 0], vec![i64::MIN]] {
            ops.push(Op::Reduce { kind, axes, keepdims: false });
        }
    }
    for axis in [0, -1, 7, i64::MIN, i64::MAX] {
        ops.push(Op::ArgMax { axis, keepdims: true });
        ops.push(Op::Concat { axis });
        ops.push(Op::Gather { axis });
        ops.push(Op::Softmax { axis });
        ops.push(Op::CumSum { axis, exclusive: true, reverse: true });
        ops.push(Op::Split { axis, sizes: vec![1, 1] });
        ops.push(Op::Split { axis, sizes: vec![i64::MAX, i64::MAX, 5] });
        ops.push(Op::Shape { start: axis, end: Some(-axis.saturating_abs()) });
        ops.push(Op::Transpose { perm: vec![axis, 0] });
        ops.push(Op::Squeeze { axes: vec![axis] });
        ops.push(Op::Unsqueeze { axes: vec![axis, 0] });
    }
    for to in DType::PLAIN {
        ops.push(Op::cast(to));
        ops.push(Op::ConstantOfShape { value: 2.0, dtype: to });
    }
    ops.push(Op::ConstantOfShape { value: f64::NAN, dtype: DType::I64 });
    ops.extend([
        Op::MatMul {},
        Op::Where {},
        Op::Reshape { allowzero: false },
        Op::Reshape { allowzero: true },
        Op::Slice {},
        Op::Expand {},
        Op::Range {},
        Op::Tile {},
        Op::Trilu { upper: true },
        Op::Trilu { upper: false },
        Op::Silu {},
        Op::Gelu { approximate: GeluApprox::None },
        Op::Gelu { approximate: GeluApprox::Tanh },
        Op::Swiglu {},
        Op::Squeeze { axes: vec![] },
    ]);
    ops
}

/// Calls `f` with every sequence of `len` items drawn (with repetition) from `pool`.
fn for_each_sequence<'a>(pool: &'a [Tensor], len: usize, f: &mut dyn FnMut(&[&'a Tensor])) {
    let mut picks = vec![0usize; len];
    loop {
        let inputs: Vec<&Tensor> = picks.iter().map(|&i| &pool[i]).collect();
        f(&inputs);
        let Some(pos) = (0..len).rev().find(|&p| picks[p] + 1 < pool.len()) else { return };
        picks[pos] += 1;
        picks[pos + 1..].iter_mut().for_each(|p| *p = 0);
    }
}

#[test]
fn no_input_panics() {
    let pool = awkward_tensors();
    let mut calls = 0usize;
    let mut errors = 0usize;
    for op in ops() {
        let (min, max) = op.input_arity();
        // Arities just outside the valid range too; at most 3 inputs keeps the product small.
        for len in min.saturating_sub(1)..=(max.min(3) + 1).min(4) {
            if len > 3 && min <= 3 {
                // Slice's optional 4th/5th inputs: probe with the shape-like tensors only.
                let small: Vec<Tensor> = pool[3..8].to_vec();
                for_each_sequence(&small, len, &mut |inputs| {
                    let mut all = vec![&pool[0]];
                    all.extend_from_slice(&inputs[1..]);
                    calls += 1;
                    errors += eval_generic(&op, &all).is_err() as usize;
                });
                continue;
            }
            for_each_sequence(&pool, len, &mut |inputs| {
                calls += 1;
                errors += eval_generic(&op, inputs).is_err() as usize;
            });
        }
    }
    // Most combinations are invalid; some must succeed, or the pool is not exercising the ops.
    assert!(calls > 10_000, "{calls} calls");
    assert!(errors < calls && errors > calls / 2, "{errors} errors in {calls} calls");
}
