//! Raising, positions: an exported logits-only graph computes the token positions itself, as
//! `range(0, seq, 1)` over the length of its ids (`torch.arange` in the model's forward); the decoder
//! contract gives them as the `positions` input instead, so that a decode step at position 41 is not
//! treated as position 0. Every value that computes `0..seq` from the ids' shape alone is replaced by the
//! positions input (squeezed to `[seq]`); this is checked by evaluating the value for several lengths.
//!
//! Leaves alone: ranges that depend on anything else or do not give `0..seq`. Finding none is reported
//! (rope and attention then stay generic and the graph recomputes the sequence at each step).

use kiln_ir::{Op, Tensor, ValueId};

use crate::raise_decoder::Raiser;

/// Whether `v` evaluates to `0..n` for ids of length `n`, for every `n` tried.
fn is_arange_of_ids(r: &Raiser, v: ValueId) -> bool {
    let ids = r.g.inputs()[0];
    [1usize, 2, 5].iter().all(|&n| {
        let zeros = Tensor::i64(vec![1, n], vec![0; n]).expect("n zeros");
        let mut probe = r.probe().bind(ids, zeros);
        match probe.eval(v) {
            Some(t) => t.shape() == [n] && t.dtype().is_int() && t.to_i64_vec() == (0..n as i64).collect::<Vec<_>>(),
            None => false,
        }
    })
}

/// Replaces the in-graph `0..seq` by the positions input; whether any was found.
pub(crate) fn raise(r: &mut Raiser) -> Result<bool, String> {
    let positions = r.positions.expect("the positions input is added first");
    let ranges: Vec<ValueId> =
        r.g.nodes()
            .filter(|(_, n)| matches!(n.op, Op::Range {}))
            .map(|(_, n)| n.outputs[0])
            .filter(|&v| is_arange_of_ids(r, v))
            .collect();
    if ranges.is_empty() {
        r.notes.push(
            "positions: no `range(0, seq)` over the ids' length found, so the graph computes positions some other \
             way; rope and attention are not raised and the sequence is recomputed at each step"
                .into(),
        );
        return Ok(false);
    }
    for v in ranges {
        let dtype = r.g.value_type(v).dtype;
        let mut p = r.emit(Op::Squeeze { axes: vec![0] }, &[positions], v)?;
        if dtype != kiln_ir::DType::I64 {
            p = r.emit(Op::cast(dtype), &[p], v)?;
        }
        r.g.replace_all_uses(v, p);
    }
    Ok(true)
}
