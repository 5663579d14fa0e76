//! ONNX `GatherND` (opset 11/12/13, `batch_dims = 0`) as existing IR ops: the index tuples become flat
//! row numbers of the data viewed as `[d0·…·d(k-1), rest...]`, which one `gather` along axis 0 reads.
//! The exporter's causal-mask construction uses it (Hugging Face's packed-sequence check), so every
//! `torch.onnx.export` of a llama/qwen2/mistral decoder needs it.
//!
//! With `data: [d0, …, d(r-1)]` and `indices: [i0, …, i(q-2), k]`: `strides[j] = d(j+1)·…·d(k-1)`,
//! `flat = Σ_j normalise(indices[.., j]) · strides[j]` (negative indices count from the end of their dim),
//! `out = gather(reshape(data, [-1, d(k)…]), flat, axis 0)`: `[i0, …, i(q-2), d(k), …]`. Dims are read
//! with `shape` at run time, so dynamic dims work; a static `k` (the last dim of `indices`) is required.

use kiln_ir::{BinaryOp, CompareOp, Dim, Op, ReduceKind, ValueId};

use super::{NodeCx, R, bad, unsupported};

pub fn import(cx: &mut NodeCx, op_type: &str) -> Option<R<Vec<ValueId>>> {
    (op_type == "GatherND").then(|| gather_nd(cx))
}

fn gather_nd(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let (data, indices) = (cx.input(0)?, cx.input(1)?);
    if cx.attr_i("batch_dims", 0) != 0 {
        return unsupported("batch_dims other than 0");
    }
    let (r, q) = (cx.rank(data), cx.rank(indices));
    if q == 0 || !cx.dtype(indices).is_int() {
        return bad("indices must be an integer tensor of rank >= 1");
    }
    let k = match cx.ty(indices).shape.dims()[q - 1] {
        Dim::Static(k) => k as usize,
        _ => return unsupported("indices whose last dim (the index tuple length) is not static"),
    };
    if k == 0 || k > r {
        return bad(format!("index tuples of length {k} for data of rank {r}"));
    }
    let indices = cx.cast(indices, kiln_ir::DType::I64)?;
    let shape = cx.shape_of(data)?;
    // dims[0..k] and the strides of those dims in a row-major [d0, ..., d(k-1)] block.
    let lead = slice(cx, shape, 0, k)?;
    let mut strides = Vec::with_capacity(k);
    for j in 0..k {
        let tail = slice(cx, shape, j + 1, k)?;
        strides.push(cx.push(Op::Reduce { kind: ReduceKind::Prod, axes: vec![0], keepdims: true }, &[tail])?);
    }
    let strides = cx.push(Op::Concat { axis: 0 }, &strides)?;
    let zero = cx.scalar_i64(0);
    let negative = cx.push(Op::Compare(CompareOp::Less), &[indices, zero])?;
    let wrapped = cx.push(Op::Binary(BinaryOp::Add), &[indices, lead])?;
    let normalised = cx.push(Op::Where {}, &[negative, wrapped, indices])?;
    let scaled = cx.push(Op::Binary(BinaryOp::Mul), &[normalised, strides])?;
    let flat = cx.push(Op::Reduce { kind: ReduceKind::Sum, axes: vec![-1], keepdims: false }, &[scaled])?;
    let rest = slice(cx, shape, k, r)?;
    let minus_one = cx.const_i64(&[-1]);
    let rows_shape = cx.push(Op::Concat { axis: 0 }, &[minus_one, rest])?;
    let rows = cx.push(Op::Reshape { allowzero: false }, &[data, rows_shape])?;
    Ok(vec![cx.push(Op::Gather { axis: 0 }, &[rows, flat])?])
}

/// Elements `start..end` of a 1-D value.
fn slice(cx: &mut NodeCx, v: ValueId, start: usize, end: usize) -> R<ValueId> {
    let (s, e) = (cx.const_i64(&[start as i64]), cx.const_i64(&[end as i64]));
    cx.push(Op::Slice {}, &[v, s, e])
}
