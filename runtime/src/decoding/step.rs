//! One forward step of a decoder graph: building its inputs (ids, positions and, where the graph takes
//! one, the tree mask) and checking its signature against the decoder-graph contract.

use kiln_ir::{DType, Graph, Tensor, TensorData};

use super::executor::DecoderExecutor;
use crate::RuntimeError;

/// Checks a graph's signature against the decoder-graph contract (see [`crate::decoding`]).
pub fn check_decoder_contract(g: &Graph) -> Result<(), RuntimeError> {
    let bad = |message: String| RuntimeError::DecoderContract { message };
    let n = g.inputs().len();
    if n != 2 && n != 3 {
        return Err(bad(format!("it takes {n} inputs, not 2 (ids, positions) or 3 (ids, positions, tree_mask)")));
    }
    for (&v, name) in g.inputs().iter().zip(["ids", "positions"]) {
        let ty = g.value_type(v);
        if ty.dtype != DType::I64 || ty.rank() != 2 {
            return Err(bad(format!("input `{name}` is {ty}, not i64[1, seq]")));
        }
    }
    if let Some(&mask) = g.inputs().get(2) {
        let ty = g.value_type(mask);
        if ty.dtype != DType::Bool || ty.rank() != 2 {
            return Err(bad(format!("input `tree_mask` is {ty}, not bool[seq, seq]")));
        }
    }
    let Some(&logits) = g.outputs().first() else {
        return Err(bad("it has no outputs; output 0 must be the logits".to_string()));
    };
    let ty = g.value_type(logits);
    if ty.dtype != DType::F32 || ty.rank() != 3 {
        return Err(bad(format!("output 0 is {ty}, not f32[1, seq, vocab]")));
    }
    Ok(())
}

/// Whether the decoder graph takes a `tree_mask` input (and so can verify token trees in one step).
pub fn has_tree_mask(g: &Graph) -> bool {
    g.inputs().len() == 3
}

/// The inputs of one step of a decoder graph: `ids` at `positions`, and for a graph with a `tree_mask`
/// input, `mask` (row-major `[seq, seq]`, `mask[i * seq + j]`: token i sees new token j), or the causal
/// mask when `mask` is `None`. A graph without the input gets no mask: its attention is causal, so a
/// `mask` other than the causal one is an error there.
pub fn decoder_inputs(
    g: &Graph,
    ids: &[u32],
    positions: &[i64],
    mask: Option<&[bool]>,
) -> Result<Vec<Tensor>, RuntimeError> {
    let n = ids.len();
    let bad = |message: String| RuntimeError::DecoderContract { message };
    if positions.len() != n {
        return Err(bad(format!("{n} ids but {} positions", positions.len())));
    }
    let causal = || -> Vec<bool> { (0..n * n).map(|e| e % n <= e / n).collect() };
    if let Some(m) = mask {
        if m.len() != n * n {
            return Err(bad(format!("a mask of {} entries for {n} tokens, not {}", m.len(), n * n)));
        }
        if !has_tree_mask(g) && m != causal().as_slice() {
            return Err(bad(
                "verifying a token tree needs a decoder graph with a `tree_mask: bool[seq, seq]` input, and this \
                 graph has only ids and positions (re-import the model, or speculate with chains)"
                    .to_string(),
            ));
        }
    }
    let mut inputs = vec![
        Tensor::i64(vec![1, n], ids.iter().map(|&t| i64::from(t)).collect()).expect("ids fill [1, n]"),
        Tensor::i64(vec![1, n], positions.to_vec()).expect("positions fill [1, n]"),
    ];
    if has_tree_mask(g) {
        let bits = mask.map_or_else(causal, <[bool]>::to_vec);
        inputs.push(Tensor::new(vec![n, n], TensorData::Bool(bits)).expect("the mask fills [n, n]"));
    }
    Ok(inputs)
}

/// Runs one step and returns its logits, `[ids.len(), vocab]` row-major, and the vocabulary size.
pub fn run_step(
    exec: &mut dyn DecoderExecutor,
    ids: &[u32],
    positions: &[i64],
    mask: Option<&[bool]>,
) -> Result<(Vec<f32>, usize), RuntimeError> {
    exec.step(ids, positions, mask)
}
