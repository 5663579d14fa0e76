//! Control flow: `Loop`, unrolled when the graph is imported. kiln's IR has no loops, so the body is
//! imported once per iteration, in its own scope, with the iteration number and condition bound to
//! constants and the loop-carried values to the previous iteration's results; scan outputs are
//! stacked along a new axis 0. This needs the trip count `M` and the condition when the graph is
//! imported: constants, values computed from them, or graph inputs whose values the options supply
//! (see [`Builder::value_at_import`](super::graph_import::Builder::value_at_import)). A Loop whose
//! iteration count is only known at run time is reported as unsupported, and the unrolling stops with
//! an error past [`MAX_LOOP_ITERATIONS`] iterations or [`MAX_UNROLLED_NODES`] nodes.
//!
//! Loop's signature is the same in every opset (1, 11, 13, 16, 19, 21, 23, 24): inputs `M`, `cond`
//! (each optional) and the initial loop-carried values; body inputs `(iteration_num, cond,
//! carried...)`, body outputs `(cond, carried..., scan...)`. Without `M` the loop runs while `cond`
//! holds; without `cond` the body's condition output is ignored (a for loop); with neither it would
//! never end. Later opsets only admit sequence and optional values, which kiln does not import.

use kiln_ir::{DType, Op, Tensor, TensorData, ValueId};

use super::graph_import::{import_body, value_info_type};
use super::ops::{NodeCx, NodeFail, R, bad, unsupported};
use super::proto::GraphProto;

/// The most iterations a Loop is unrolled to.
pub const MAX_LOOP_ITERATIONS: u64 = 4096;

/// The most IR nodes the unrolled iterations of one Loop may add.
pub const MAX_UNROLLED_NODES: usize = 1 << 18;

pub fn import_loop(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let body = cx.attr_graph("body")?.clone();
    let initial: Vec<ValueId> = (2..cx.n_inputs()).map(|i| cx.input(i)).collect::<R<_>>()?;
    let n_carried = initial.len();
    if body.input.len() != n_carried + 2 {
        return bad(format!(
            "the body takes {} inputs, but the Loop gives it {} (the iteration number, the condition and {n_carried} \
             loop-carried values)",
            body.input.len(),
            n_carried + 2
        ));
    }
    if body.output.len() < n_carried + 1 {
        return bad(format!(
            "the body gives {} outputs, fewer than the condition and the {n_carried} loop-carried values",
            body.output.len()
        ));
    }
    let n_scan = body.output.len() - 1 - n_carried;
    let trip_count = match cx.opt_input(0) {
        Some(m) => Some(trip_count_of(cx, m)?),
        None => None,
    };
    let mut cond = match cx.opt_input(1) {
        Some(c) => Some(condition_of(cx, c, "the condition input `cond`")?),
        None => None,
    };
    match (trip_count, cond) {
        (None, None) => {
            return bad("it has neither a trip count `M` nor a condition `cond`, so it would never end");
        }
        (Some(m), None) if m > MAX_LOOP_ITERATIONS => {
            return unsupported(format!(
                "a trip count of {m} (kiln unrolls Loop when the graph is imported, up to {MAX_LOOP_ITERATIONS} \
                 iterations)"
            ));
        }
        _ => {}
    }
    let nodes_before = cx.b.graph.order().len();
    let mut carried = initial;
    let mut scans: Vec<Vec<ValueId>> = vec![Vec::new(); n_scan];
    let mut iteration = 0u64;
    while trip_count.is_none_or(|m| iteration < m) && cond.unwrap_or(true) {
        if iteration == MAX_LOOP_ITERATIONS {
            return unsupported(format!(
                "more than {MAX_LOOP_ITERATIONS} iterations (kiln unrolls Loop when the graph is imported, up to \
                 {MAX_LOOP_ITERATIONS} iterations)"
            ));
        }
        let outputs = import_iteration(cx, &body, iteration, cond.unwrap_or(true), &carried)?;
        if cx.b.graph.order().len() - nodes_before > MAX_UNROLLED_NODES {
            return unsupported(format!(
                "a body that unrolls to more than {MAX_UNROLLED_NODES} nodes (reached at iteration {iteration})"
            ));
        }
        // Without a `cond` input the body's condition output is ignored.
        if cond.is_some() {
            cond = Some(condition_of(cx, outputs[0], &format!("the condition computed by iteration {iteration}"))?);
        }
        for (k, (&new, old)) in outputs[1..=n_carried].iter().zip(&mut carried).enumerate() {
            if cx.dtype(new) != cx.dtype(*old) {
                return bad(format!(
                    "loop-carried value {k} (`{}`) changes type from {} to {} in iteration {iteration}",
                    body.output[k + 1].name(),
                    cx.ty(*old),
                    cx.ty(new)
                ));
            }
            *old = new;
        }
        for (scan, &v) in scans.iter_mut().zip(&outputs[n_carried + 1..]) {
            scan.push(v);
        }
        iteration += 1;
    }
    let mut results = carried;
    for (k, scan) in scans.iter().enumerate() {
        results.push(stack(cx, scan, &body, n_carried + 1 + k)?);
    }
    Ok(results)
}

/// `M` as an iteration count: a one-element integer tensor; a negative count runs no iterations.
fn trip_count_of(cx: &mut NodeCx, m: ValueId) -> R<u64> {
    let Some(t) = cx.b.value_at_import(m) else {
        return unsupported(
            "a trip count `M` computed at run time (kiln unrolls Loop when the graph is imported, so it needs the \
             trip count then: a constant, or a value computed from constants and specialised inputs)",
        );
    };
    if !t.dtype().is_int() || t.len() != 1 {
        return bad(format!("the trip count `M` must be one integer, not {}", t.ty()));
    }
    Ok(match t.data() {
        TensorData::U64(v) => v[0],
        d => u64::try_from(d.get_i64(0)).unwrap_or(0),
    })
}

/// A loop condition known at import time: a one-element bool tensor.
fn condition_of(cx: &mut NodeCx, c: ValueId, what: &str) -> R<bool> {
    let Some(t) = cx.b.value_at_import(c) else {
        return unsupported(format!(
            "{what} computed at run time (kiln unrolls Loop when the graph is imported, so it needs the condition \
             then)"
        ));
    };
    match t.data() {
        TensorData::Bool(v) if v.len() == 1 => Ok(v[0]),
        _ => bad(format!("{what} must be one bool, not {}", t.ty())),
    }
}

/// Imports the body once, in its own scope, and returns its outputs.
fn import_iteration(
    cx: &mut NodeCx,
    body: &GraphProto,
    iteration: u64,
    cond: bool,
    carried: &[ValueId],
) -> R<Vec<ValueId>> {
    let iteration_num = cx.constant(Tensor::scalar_i64(iteration as i64));
    let cond = cx.constant(Tensor::new(vec![], TensorData::Bool(vec![cond])).expect("a scalar"));
    cx.b.push_scope();
    for (input, &v) in body.input.iter().zip([iteration_num, cond].iter().chain(carried)) {
        cx.b.bind(input.name(), v);
    }
    let result = import_body(cx.b, body);
    cx.b.pop_scope();
    result.map_err(NodeFail::Onnx)
}

/// The per-iteration values of scan output `index` of the body, stacked along a new axis 0.
fn stack(cx: &mut NodeCx, values: &[ValueId], body: &GraphProto, index: usize) -> R<ValueId> {
    let name = body.output[index].name();
    if values.is_empty() {
        // No iteration ran: the result is empty, with the element type and shape the body declares.
        let declared = value_info_type(&body.output[index], "Loop body output").ok();
        let Some((dtype, dims)) = declared.and_then(|t| Some((t.dtype, t.shape.as_static()?))) else {
            return unsupported(format!(
                "a Loop that runs no iterations, whose scan output `{name}` has no static type in the body (kiln \
                 needs it to build the empty result)"
            ));
        };
        return empty_scan(cx, dtype, &dims);
    }
    let mut rows = Vec::with_capacity(values.len());
    for &v in values {
        rows.push(cx.push(Op::Unsqueeze { axes: vec![0] }, &[v])?);
    }
    if rows.len() == 1 {
        return Ok(rows[0]);
    }
    cx.push(Op::Concat { axis: 0 }, &rows).map_err(|e| match e {
        NodeFail::Bad(m) => NodeFail::Bad(format!("scan output `{name}` differs in shape between iterations: {m}")),
        other => other,
    })
}

fn empty_scan(cx: &mut NodeCx, dtype: DType, dims: &[usize]) -> R<ValueId> {
    let shape: Vec<usize> = std::iter::once(0).chain(dims.iter().copied()).collect();
    let t = Tensor::zeros(dtype, shape).map_err(|e| NodeFail::Bad(e.to_string()))?;
    Ok(cx.constant(t))
}
