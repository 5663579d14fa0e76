//! Raising, weights: `matmul(x, W)` with a stored `W: [K, N]` becomes `linear(x, Wᵀ)` (plus the bias of
//! an `add` of a `[N]` weight that follows it), the matmul that produces the logits becomes `logits`, and
//! `gather(table, ids)` along axis 0 of a stored table becomes `embedding`.
//!
//! The exporter folds PyTorch's `x @ W.T` into a pre-transposed initializer, while `linear` and `logits`
//! read rows of a `[N, K]` weight (the layout their decode kernels stream). So the pass adds the
//! transposed weight to [`PassContext::new_weights`](crate::PassContext) under `NAME.T`, once per weight,
//! unless an existing embedding table already holds exactly those values (tied embeddings: the exported
//! head is the transposed table, and the table itself is reused instead of copied). The original
//! initializer becomes unused; the driver drops unused weights.
//!
//! Leaves alone: matmuls of two activations (attention), weights of other ranks, and weights behind
//! anything but a plain `weight` op or a `cast` of one.

use kiln_ir::{BinaryOp, DType, Op, Tensor, ValueId, WeightStore};

use crate::raise_decoder::Raiser;

/// How a matmul's right operand reaches a stored weight.
enum WeightOperand {
    /// `W: [K, N]` itself (directly or through a cast to f32): `linear` needs its transpose.
    Stored(String),
    /// `transpose(W, [1, 0])` of a stored `W: [N, K]` (a tied head, where the exporter keeps the table):
    /// already the layout `linear` reads.
    Transposed(ValueId),
}

fn stored_weight(r: &Raiser, v: ValueId) -> Option<WeightOperand> {
    match r.def(v)? {
        (Op::Weight { name }, _) => Some(WeightOperand::Stored(name.clone())),
        (Op::Cast { to: DType::F32, .. }, &[w]) => match r.def(w)? {
            (Op::Weight { name }, _) => Some(WeightOperand::Stored(name.clone())),
            _ => None,
        },
        (Op::Transpose { perm }, &[w]) if perm == &[1, 0] => match r.def(w)? {
            (Op::Weight { .. }, _) => Some(WeightOperand::Transposed(w)),
            _ => None,
        },
        _ => None,
    }
}

fn lookup<'s>(r: &'s Raiser, name: &str) -> Option<&'s std::sync::Arc<kiln_ir::StoredWeight>> {
    r.new_weights.get(name).ok().or_else(|| r.weights.and_then(|w| w.get(name).ok()))
}

/// A `weight` op for the transpose of the stored 2-D weight `name`, or `None` when weights are not
/// available (a text-only graph).
fn transposed_weight(
    r: &mut Raiser,
    name: &str,
    tables: &[String],
    anchor: ValueId,
) -> Result<Option<ValueId>, String> {
    let Some(w) = lookup(r, name) else { return Ok(None) };
    if w.ty.dtype.is_quantized() || w.ty.rank() != 2 {
        return Ok(None);
    }
    let t = w.to_tensor();
    let transposed = kiln_ir::eval::eval_generic(&Op::Transpose { perm: vec![1, 0] }, &[&t])
        .map_err(|e| format!("transposing `{name}`: {e}"))?
        .expect("transpose is a generic op")
        .remove(0);
    let mut target = None;
    for table in tables {
        if let Some(tw) = lookup(r, table)
            && tw.ty == transposed.ty()
            && same_values(&tw.to_tensor(), &transposed)
        {
            target = Some(table.clone());
            break;
        }
    }
    let target = match target {
        Some(t) => t,
        None => {
            let new_name = format!("{name}.T");
            if lookup(r, &new_name).is_none() {
                insert(r.new_weights, &new_name, &transposed)?;
            }
            new_name
        }
    };
    Ok(Some(r.emit_weight(target, transposed.ty(), anchor)))
}

fn same_values(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape() && a.dtype() == b.dtype() && a.data() == b.data()
}

fn insert(store: &mut WeightStore, name: &str, t: &Tensor) -> Result<(), String> {
    store.insert_tensor(name, t).map_err(|e| format!("adding weight `{name}`: {e}"))
}

pub(crate) fn raise(r: &mut Raiser) -> Result<(), String> {
    // Embedding tables first: the logits head may be one of them, transposed.
    let gathers: Vec<ValueId> =
        r.g.nodes().filter(|(_, n)| matches!(n.op, Op::Gather { axis: 0 })).map(|(_, n)| n.outputs[0]).collect();
    let mut tables = Vec::new();
    for v in gathers {
        let Some((Op::Gather { .. }, &[table, ids])) = r.def(v) else { continue };
        let (t_ty, i_ty) = (r.g.value_type(table), r.g.value_type(ids));
        if !matches!(r.def(table), Some((Op::Weight { .. }, _))) || t_ty.rank() != 2 || !i_ty.dtype.is_int() {
            continue;
        }
        if t_ty.dtype != r.g.value_type(v).dtype {
            continue;
        }
        if let Some((Op::Weight { name }, _)) = r.def(table) {
            tables.push(name.clone());
        }
        let e = r.emit(Op::Embedding {}, &[table, ids], v)?;
        r.g.replace_all_uses(v, e);
    }

    let logits = r.g.outputs().first().copied();
    let matmuls: Vec<ValueId> =
        r.g.nodes().filter(|(_, n)| matches!(n.op, Op::MatMul {})).map(|(_, n)| n.outputs[0]).collect();
    let mut skipped = 0;
    for m in matmuls {
        let Some((Op::MatMul {}, &[x, w])) = r.def(m) else { continue };
        let Some(operand) = stored_weight(r, w) else { continue };
        if r.g.value_type(w).rank() != 2 || !r.g.value_type(x).dtype.is_float() {
            continue;
        }
        let wt = match operand {
            WeightOperand::Transposed(wt) => wt,
            WeightOperand::Stored(name) => match transposed_weight(r, &name, &tables, m)? {
                Some(wt) => wt,
                None => {
                    skipped += 1;
                    continue;
                }
            },
        };
        if Some(m) == logits && r.g.value_type(m).dtype == DType::F32 {
            let l = r.emit(Op::Logits { softcap: None }, &[x, wt], m)?;
            r.g.replace_all_uses(m, l);
            continue;
        }
        // A bias added right after: `add(matmul, b)` with b a [N] weight.
        let n = r.g.value_type(w).shape.dims()[1].clone();
        let mut bias = None;
        if let [user] = r.users(m)[..]
            && !r.g.outputs().contains(&m)
        {
            let node = r.g.node(user);
            if let (Op::Binary(BinaryOp::Add), &[a, b]) = (&node.op, &node.inputs[..]) {
                let other = if a == m { b } else { a };
                let ty = r.g.value_type(other);
                let stored = matches!(r.def(other), Some((Op::Weight { .. } | Op::Constant { .. }, _)));
                if ty.rank() == 1 && ty.shape.dims()[0] == n && ty.dtype.is_float() && stored {
                    bias = Some((other, node.outputs[0]));
                }
            }
        }
        match bias {
            Some((b, sum)) => {
                let l = r.emit(Op::Linear {}, &[x, wt, b], sum)?;
                r.g.replace_all_uses(sum, l);
            }
            None => {
                let l = r.emit(Op::Linear {}, &[x, wt], m)?;
                r.g.replace_all_uses(m, l);
            }
        }
    }
    if skipped > 0 {
        r.notes.push(format!(
            "linear: {skipped} matmul(s) with a weight operand kept as `matmul`: the weights are not available to \
             the pass (a graph without its weight store)"
        ));
    }
    Ok(())
}
