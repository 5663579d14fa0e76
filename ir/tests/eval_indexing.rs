//! Index-driven ops (`gather_elements`, `scatter_elements`, `gather_nd`, `scatter_nd`): results
//! against values computed with numpy (`take_along_axis` and explicit index loops), type inference,
//! and their errors.

mod eval_support;

use eval_support::*;
use kiln_ir::{DType, Op, ScatterReduction, Tensor, TensorType, infer::infer_types};

fn types(ts: &[&Tensor]) -> Vec<TensorType> {
    ts.iter().map(|t| t.ty()).collect()
}

/// Inference agrees with the evaluated result's type.
fn check_type(op: &Op, inputs: &[&Tensor], got: &Tensor) {
    let tys = types(inputs);
    let refs: Vec<&TensorType> = tys.iter().collect();
    assert_eq!(infer_types(op, &refs, &[]).unwrap(), vec![got.ty()], "{}", op.name());
}

#[test]
fn gather_elements_matches_numpy_take_along_axis() {
    let x = f32t(&[3, 4], &(0..12).map(|i| i as f32).collect::<Vec<_>>());
    let i = i64t(&[3, 2], &[0, 2, -1, 1, 1, 0]);
    let op = Op::GatherElements { axis: 1 };
    let got = run1(&op, &[&x, &i]);
    // numpy: np.take_along_axis(x, where(i < 0, i + 4, i), axis=1)
    assert_eq!(got.to_f32_vec(), [0.0, 2.0, 7.0, 5.0, 9.0, 8.0]);
    check_type(&op, &[&x, &i], &got);
    assert_fails(&op, &[&x, &i64t(&[3, 1], &[0, 4, 1])], "index 4 is out of range for axis 1");
}

#[test]
fn scatter_elements_adds_repeated_indices_like_numpy() {
    let x = f32t(&[3, 3], &[0.0; 9]);
    let i = i64t(&[2, 3], &[1, 0, 2, 0, 2, 1]);
    let u = f32t(&[2, 3], &[1.0, 1.1, 1.2, 2.0, 2.1, 2.2]);
    let op = Op::ScatterElements { axis: 0, reduction: ScatterReduction::Add };
    let got = run1(&op, &[&x, &i, &u]);
    // numpy: out[idx[a, b], b] += upd[a, b] for every (a, b).
    let want = [2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2];
    assert_close(&got, &[3, 3], &want);
    check_type(&op, &[&x, &i, &u], &got);
    let none = run1(&Op::ScatterElements { axis: 0, reduction: ScatterReduction::None }, &[&x, &i, &u]);
    assert_eq!(none.to_f32_vec()[3], 1.0);
}

#[test]
fn gather_nd_with_and_without_batch_dims() {
    let x = i64t(&[2, 2, 2], &(0..8).collect::<Vec<_>>());
    // numpy: stack([x[b][tuple(ind[b])] for b in range(2)])
    let batched = run1(&Op::GatherNd { batch_dims: 1 }, &[&x, &i64t(&[2, 1], &[1, 0])]);
    assert_eq!(batched.shape(), &[2, 2]);
    assert_eq!(batched.to_i64_vec(), [2, 3, 4, 5]);
    let op = Op::GatherNd { batch_dims: 0 };
    let i = i64t(&[2, 2], &[0, 1, 1, 0]);
    let plain = run1(&op, &[&x, &i]);
    assert_eq!(plain.to_i64_vec(), [2, 3, 4, 5]);
    check_type(&op, &[&x, &i], &plain);
    assert_fails(&op, &[&x, &i64t(&[1, 4], &[0, 0, 0, 0])], "do not fit");
}

#[test]
fn scatter_nd_multiplies_slices_like_numpy() {
    let x = f32t(&[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let i = i64t(&[3, 1], &[3, 1, 3]);
    let u = f32t(&[3, 2], &[2.0, 2.0, 3.0, 3.0, 10.0, 10.0]);
    let op = Op::ScatterNd { reduction: ScatterReduction::Mul };
    let got = run1(&op, &[&x, &i, &u]);
    // numpy: for t, v in zip(ind, upd): out[tuple(t)] *= v
    assert_eq!(got.to_f32_vec(), [1.0, 2.0, 9.0, 12.0, 5.0, 6.0, 140.0, 160.0]);
    check_type(&op, &[&x, &i, &u], &got);
    let replaced = run1(&Op::ScatterNd { reduction: ScatterReduction::None }, &[&x, &i, &u]);
    assert_eq!(replaced.to_f32_vec()[6..], [10.0, 10.0]);
    assert_fails(&op, &[&x, &i, &f32t(&[3], &[0.0; 3])], "updates f32[3] must have shape [3, 2]");
    assert_eq!(
        infer_types(&op, &[&x.ty(), &TensorType::of(DType::F32, &[3, 1]), &u.ty()], &[]).unwrap_err().message,
        "scatter_nd: indices must be an integer tensor, but it is f32[3, 1]"
    );
}
