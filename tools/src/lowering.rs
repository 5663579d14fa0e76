//! Running a pass pipeline over an imported model in memory (what `kiln run`, `kiln logits` and
//! `kiln ir` do before executing or printing): which pipeline a model gets by default, and keeping the
//! model's weights in step with what the passes did to its graph.

use std::path::Path;

use kiln_ir::{Model, Op, WeightStore};
use kiln_passes::{PassContext, PassError, PassManager, PassNote, PassReport};

/// The pipeline a model runs through when none is named: `onnx` for ONNX graphs (which raises exported
/// decoders to model-level ops, so they decode with the KV cache), `default` for everything else.
pub fn default_pipeline(path: &Path) -> &'static str {
    let onnx = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if onnx { "onnx" } else { "default" }
}

/// Runs `manager` over the model's graph; then adds the weights the passes created to the model and
/// drops the weights its graph no longer names (raising replaces transposed ONNX initializers by copies
/// in the layout `linear` reads, and the originals should not stay in memory). Returns the pass report
/// and the passes' notes.
pub fn run_pipeline(model: &mut Model, manager: &mut PassManager) -> Result<(PassReport, Vec<PassNote>), PassError> {
    // A text-only graph (a `.kir` file without weights) is verified without a store.
    let mut cx = if model.weights.is_empty() { PassContext::new() } else { PassContext::with_weights(&model.weights) };
    let report = manager.run(&mut model.graph, &mut cx)?;
    let PassContext { new_weights, notes, .. } = cx;
    if !new_weights.is_empty() {
        let named: std::collections::HashSet<&str> = model
            .graph
            .nodes()
            .filter_map(|(_, n)| match &n.op {
                Op::Weight { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let mut kept = WeightStore::new();
        for (name, w) in model.weights.iter().chain(new_weights.iter()) {
            if named.contains(name) {
                kept.insert(name, w.ty.clone(), w.payload.clone()).expect("passes add only weights with new names");
            }
        }
        model.weights = kept;
    }
    Ok((report, notes))
}
