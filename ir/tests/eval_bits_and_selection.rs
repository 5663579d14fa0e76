//! Bitwise ops and shifts at their storage width, `topk` and `cumprod`, against numpy
//! (`left_shift` through the unsigned view, `right_shift`, `&`, `~`, stable `argsort`, `cumprod`).

mod eval_support;

use eval_support::*;
use kiln_ir::{BinaryOp, Op, Tensor, TensorData, UnaryOp};

fn i8t(data: &[i8]) -> Tensor {
    Tensor::new(vec![data.len()], TensorData::I8(data.to_vec())).unwrap()
}

#[test]
fn shifts_and_bitwise_ops_wrap_at_the_storage_width() {
    let a = i8t(&[-128, -3, 5, 127]);
    let b = i8t(&[1, 2, 7, 8]);
    // numpy: left_shift(a.view(uint8), b).view(int8); a shift of 8 is out of range and gives 0.
    let shl = run1(&Op::Binary(BinaryOp::ShiftLeft), &[&a, &b]);
    assert_eq!(shl.to_i64_vec(), [0, -12, -128, 0]);
    // numpy: right_shift(a, b) is arithmetic; out of range gives 0 for 127 (and -1 for negatives).
    let shr = run1(&Op::Binary(BinaryOp::ShiftRight), &[&a, &b]);
    assert_eq!(shr.to_i64_vec(), [-64, -1, 0, 0]);
    let neg = run1(&Op::Binary(BinaryOp::ShiftRight), &[&i8t(&[-5]), &i8t(&[9])]);
    assert_eq!(neg.to_i64_vec(), [-1]);
    let six = i8t(&[6, 6, 6, 6]);
    assert_eq!(run1(&Op::Binary(BinaryOp::BitAnd), &[&a, &six]).to_i64_vec(), [0, 4, 4, 6]);
    assert_eq!(run1(&Op::Unary(UnaryOp::BitNot), &[&a]).to_i64_vec(), [127, 2, -6, -128]);
    let u = Tensor::new(vec![1], TensorData::U8(vec![5])).unwrap();
    assert_eq!(run1(&Op::Unary(UnaryOp::BitNot), &[&u]).to_i64_vec(), [250]);
    assert_fails(&Op::Binary(BinaryOp::BitOr), &[&f32t(&[1], &[1.0]), &f32t(&[1], &[2.0])], "not defined");
}

#[test]
fn topk_and_cumprod_match_numpy() {
    let x = f32t(&[2, 4], &[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]);
    // numpy: i = argsort(-x, axis=1, kind="stable")[:, :2]; take_along_axis(x, i, 1)
    let out = run(&Op::TopK { axis: 1, largest: true }, &[&x, &i64t(&[1], &[2])]);
    assert_eq!(out[0].to_f32_vec(), [4.0, 3.0, 9.0, 6.0]);
    assert_eq!(out[1].to_i64_vec(), [2, 0, 1, 3]);
    let small = run(&Op::TopK { axis: 1, largest: false }, &[&x, &i64t(&[1], &[2])]);
    // Equal values keep index order: the two 1.0s of row 0 come out as indices 1 then 3.
    assert_eq!(small[1].to_i64_vec(), [1, 3, 2, 0]);
    assert_fails(&Op::TopK { axis: 1, largest: true }, &[&x, &i64t(&[1], &[5])], "k = 5 is not between 0 and the 4");
    // numpy: cumprod(x, axis=1)
    let cp = run1(&Op::CumProd { axis: 1, exclusive: false, reverse: false }, &[&x]);
    assert_eq!(cp.to_f32_vec(), [3.0, 3.0, 12.0, 12.0, 5.0, 45.0, 90.0, 540.0]);
    let ex = run1(&Op::CumProd { axis: 1, exclusive: true, reverse: true }, &[&x]);
    assert_eq!(ex.to_f32_vec(), [4.0, 4.0, 1.0, 1.0, 108.0, 12.0, 6.0, 1.0]);
}

#[test]
fn einsum_matches_numpy() {
    let a = f32t(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let b = f32t(&[3, 4], &(0..12).map(|i| i as f32 / 2.0).collect::<Vec<_>>());
    let op = |e: &str| Op::Einsum { equation: e.into() };
    // numpy: einsum("ij,jk->ik", a, b), einsum("...ii->...i", x), einsum("ij->", a)
    let mm = run1(&op("ij,jk->ik"), &[&a, &b]);
    assert_eq!(mm.to_f32_vec(), [10.0, 11.5, 13.0, 14.5, 28.0, 34.0, 40.0, 46.0]);
    let x = f32t(&[2, 2, 2], &(0..8).map(|i| i as f32).collect::<Vec<_>>());
    let diag = run1(&op("...ii->...i"), &[&x]);
    assert_eq!((diag.shape(), diag.to_f32_vec()), (&[2usize, 2][..], vec![0.0, 3.0, 4.0, 7.0]));
    assert_eq!(run1(&op("ij->"), &[&a]).to_f32_vec(), [15.0]);
    assert_eq!(run1(&op("ij"), &[&a]), a);
    assert_fails(&op("ij,jk->ik"), &[&a, &a], "label `j` has sizes 3 and 2");
}

#[test]
fn resize_matches_the_onnx_formulas() {
    use kiln_ir::{NearestRounding, ResizeCoord, ResizeMode};
    let x = f32t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let resize = |mode, coord, nearest| Op::Resize {
        mode,
        coord,
        nearest,
        cubic_a: -0.75,
        exclude_outside: false,
        scales: vec![1.0, 1.0, 2.0, 2.0],
        sizes: vec![1, 1, 4, 4],
    };
    // Nearest, asymmetric, floor: output i reads input floor(i / 2).
    let near = run1(&resize(ResizeMode::Nearest, ResizeCoord::Asymmetric, NearestRounding::Floor), &[&x]);
    assert_eq!(near.to_f32_vec()[..8], [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
    // Linear, half_pixel: coordinates (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1];
    // the first row is 1 + (2 - 1) * [0, 0.25, 0.75, 1] (numpy reference of onnx's linear resize).
    let lin = run1(&resize(ResizeMode::Linear, ResizeCoord::HalfPixel, NearestRounding::Floor), &[&x]);
    assert_close(&lin, &[1, 1, 4, 4], &{
        let row = |a: f64, b: f64| [a, a + (b - a) * 0.25, a + (b - a) * 0.75, b];
        let (top, bottom) = (row(1.0, 2.0), row(3.0, 4.0));
        let mix = |t: f64| (0..4).map(move |j| top[j] + (bottom[j] - top[j]) * t);
        [0.0, 0.25, 0.75, 1.0].into_iter().flat_map(mix).collect::<Vec<_>>()
    });
}
