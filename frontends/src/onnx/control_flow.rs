//! Control flow: `If`. A condition known when the graph is imported selects its branch, which is
//! inlined; otherwise both branches are inlined and their outputs selected with `where`, which is
//! exact because the branches have no side effects (it needs outputs of one type in both branches).

use kiln_ir::{Op, ValueId};

use super::graph_import::import_body;
use super::ops::{NodeCx, NodeFail, R, bad, unsupported};

pub fn import_if(cx: &mut NodeCx) -> R<Vec<ValueId>> {
    let cond = cx.input(0)?;
    let then_branch = cx.attr_graph("then_branch")?.clone();
    let else_branch = cx.attr_graph("else_branch")?.clone();
    if let Some(c) = cx.b.known_value(cond) {
        if c.len() != 1 {
            return bad(format!("the condition must hold one element, not {}", c.ty()));
        }
        let branch = if c.to_f64_vec()[0] != 0.0 { &then_branch } else { &else_branch };
        return branch_outputs(cx, branch);
    }
    let then_out = branch_outputs(cx, &then_branch)?;
    let else_out = branch_outputs(cx, &else_branch)?;
    if then_out.len() != else_out.len() {
        return bad(format!("the branches give {} and {} outputs", then_out.len(), else_out.len()));
    }
    let mut outs = Vec::new();
    for (&t, &e) in then_out.iter().zip(&else_out) {
        if cx.ty(t) != cx.ty(e) {
            return unsupported(format!(
                "a run-time condition choosing between outputs of different types ({} and {})",
                cx.ty(t),
                cx.ty(e)
            ));
        }
        outs.push(cx.push(Op::Where {}, &[cond, t, e])?);
    }
    Ok(outs)
}

/// Imports a branch in its own scope (it sees the enclosing names) and returns its outputs.
fn branch_outputs(cx: &mut NodeCx, graph: &super::proto::GraphProto) -> R<Vec<ValueId>> {
    cx.b.push_scope();
    let result = import_body(cx.b, graph);
    cx.b.pop_scope();
    result.map_err(NodeFail::Onnx)
}
