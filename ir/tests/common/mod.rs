//! Shared helpers for the inference and verifier tests: a tiny type-string reader (independent of the
//! text-form parser) and wrappers that run `infer_types` and render its results as strings.

#![allow(dead_code)]

use kiln_ir::infer::infer_types;
use kiln_ir::{DType, Dim, Op, Shape, Tensor, TensorType};

/// `"f32[2, seq, ?]"` -> the type; panics on malformed test input.
pub fn ty(s: &str) -> TensorType {
    let (dtype, rest) = s.split_once('[').expect("type has [");
    let dims = rest.strip_suffix(']').expect("type ends with ]");
    let dims = if dims.trim().is_empty() {
        Vec::new()
    } else {
        dims.split(',')
            .map(|d| match d.trim() {
                "?" => Dim::Unknown,
                d => d.parse::<u64>().map(Dim::Static).unwrap_or_else(|_| Dim::sym(d)),
            })
            .collect()
    };
    TensorType::new(dtype.parse::<DType>().expect("dtype"), Shape(dims))
}

fn render(r: Result<Vec<TensorType>, kiln_ir::infer::InferError>) -> Result<String, String> {
    r.map(|ts| ts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")).map_err(|e| e.message)
}

/// Infers with no constant inputs; the result types joined by ", ".
pub fn infer(op: &Op, inputs: &[&str]) -> Result<String, String> {
    let types: Vec<TensorType> = inputs.iter().map(|s| ty(s)).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    render(infer_types(op, &refs, &[]))
}

/// Infers with some inputs given as constants (their type is the tensor's type).
pub fn infer_c(op: &Op, inputs: &[Input]) -> Result<String, String> {
    let types: Vec<TensorType> = inputs
        .iter()
        .map(|i| match i {
            Input::Ty(s) => ty(s),
            Input::Const(t) => t.ty(),
        })
        .collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let consts: Vec<Option<&Tensor>> = inputs
        .iter()
        .map(|i| match i {
            Input::Ty(_) => None,
            Input::Const(t) => Some(t),
        })
        .collect();
    render(infer_types(op, &refs, &consts))
}

pub enum Input {
    Ty(&'static str),
    Const(Tensor),
}

pub fn i64s(v: &[i64]) -> Input {
    Input::Const(Tensor::i64(vec![v.len()], v.to_vec()).unwrap())
}

pub fn scalar_i64(v: i64) -> Input {
    Input::Const(Tensor::scalar_i64(v))
}

/// Asserts success and returns the rendered result types.
#[track_caller]
pub fn ok(op: &Op, inputs: &[&str]) -> String {
    infer(op, inputs).unwrap_or_else(|e| panic!("{} on {inputs:?} failed: {e}", op.name()))
}

/// Asserts failure and that the message contains `needle`.
#[track_caller]
pub fn fails(op: &Op, inputs: &[&str], needle: &str) {
    match infer(op, inputs) {
        Ok(t) => panic!("{} on {inputs:?} gave {t}, expected an error containing {needle:?}", op.name()),
        Err(e) => assert!(e.contains(needle), "message {e:?} lacks {needle:?}"),
    }
}

#[track_caller]
pub fn ok_c(op: &Op, inputs: &[Input]) -> String {
    infer_c(op, inputs).unwrap_or_else(|e| panic!("{} failed: {e}", op.name()))
}

#[track_caller]
pub fn fails_c(op: &Op, inputs: &[Input], needle: &str) {
    match infer_c(op, inputs) {
        Ok(t) => panic!("{} gave {t}, expected an error containing {needle:?}", op.name()),
        Err(e) => assert!(e.contains(needle), "message {e:?} lacks {needle:?}"),
    }
}
