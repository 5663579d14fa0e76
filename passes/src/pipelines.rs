//! The named pipelines (`--pipeline NAME`) and the registry of passes by name.
//!
//! Every pipeline is spelled out here, in one place, with a comment per entry saying why it sits where
//! it does; the artifact records the pipeline name, so changing an entry changes what that name means.

use crate::pass::{Pass, PassError};
use crate::{
    CommonSubexpressionElimination, ConstantFolding, DeadCodeElimination, PassManager, RaiseDecoder, ShapeInference,
};

/// Every pipeline name, in the order `--help` lists them.
pub fn names() -> &'static [&'static str] {
    &["O0", "default", "onnx"]
}

/// Builds the pipeline called `name`.
pub fn pipeline(name: &str) -> Result<PassManager, PassError> {
    let mut pm = PassManager::new();
    match name {
        // No transformation at all: what the frontend produced, verified (the manager always verifies
        // its input). For bisecting a miscompile and for checking a frontend in isolation.
        "O0" => {}
        "default" => {
            // First, so that constant folding sees every dim the graph implies: `shape` folds only
            // when the dims it reads are static, and frontends often leave them `?`. (Folding refines
            // the types it walks past too, but this pass still completes them when folding is disabled.)
            pm.add(ShapeInference);
            // Turns ONNX-style shape arithmetic (shape -> gather -> concat -> reshape) into constants,
            // refining result types as it goes. Before CSE, because the constants it creates are often
            // equal (the same shape folded in every layer), and CSE merges equal constants.
            pm.add(ConstantFolding::default());
            // Merges duplicated work (a norm computed twice, repeated masks and positions, equal
            // folded constants). After folding and refinement, so that nodes which only now have equal
            // operands and equal types are merged.
            pm.add(CommonSubexpressionElimination);
            // Last: removes whatever the passes above left unused (the shape computations that were
            // folded away, the operands of merged nodes) and dead branches from the frontend.
            pm.add(DeadCodeElimination);
        }
        // What the driver runs on ONNX models: `default` with raising in the middle.
        "onnx" => {
            // As in `default`: static dims first, so that folding can turn the exporter's shape arithmetic
            // (shape -> gather -> concat -> reshape) into constants...
            pm.add(ShapeInference);
            // ...which raising reads: reshape targets give it static head counts and head dims, and the
            // patterns it matches no longer hide behind shape computations.
            pm.add(ConstantFolding::default());
            // Turns the generic subgraphs of an exported decoder into model-level ops (attention with a
            // KV cache, rope, rms_norm, linear, ...). Before CSE and DCE, which merge the transposes and
            // positions it introduces per layer and remove the mask construction and rotary tables it
            // made dead.
            pm.add(RaiseDecoder);
            pm.add(CommonSubexpressionElimination);
            pm.add(DeadCodeElimination);
        }
        _ => return Err(PassError::UnknownPipeline { name: name.to_string(), valid: names().to_vec() }),
    }
    Ok(pm)
}

/// Every pass `pass_by_name` knows, in the order `--help` lists them.
pub fn pass_names() -> &'static [&'static str] {
    &[
        ShapeInference::NAME,
        ConstantFolding::NAME,
        CommonSubexpressionElimination::NAME,
        DeadCodeElimination::NAME,
        RaiseDecoder::NAME,
    ]
}

/// A pass with its default options, by the name it reports.
pub fn pass_by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    Ok(match name {
        ShapeInference::NAME => Box::new(ShapeInference),
        ConstantFolding::NAME => Box::new(ConstantFolding::default()),
        CommonSubexpressionElimination::NAME => Box::new(CommonSubexpressionElimination),
        DeadCodeElimination::NAME => Box::new(DeadCodeElimination),
        RaiseDecoder::NAME => Box::new(RaiseDecoder),
        _ => return Err(PassError::UnknownPass { name: name.to_string(), valid: pass_names().to_vec() }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_name_builds_the_pass_that_reports_it() {
        for &name in pass_names() {
            assert_eq!(pass_by_name(name).unwrap().name(), name);
        }
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = pass_by_name("constant-fold").err().unwrap();
        assert_eq!(
            e.to_string(),
            "unknown pass `constant-fold`; valid passes are: shape-inference, constant-folding, cse, dce, raise-decoder"
        );
        let e = pipeline("O3").unwrap_err();
        assert_eq!(e.to_string(), "unknown pipeline `O3`; valid pipelines are: O0, default, onnx");
    }

    #[test]
    fn every_listed_pipeline_builds() {
        for &name in names() {
            pipeline(name).unwrap();
        }
        assert!(pipeline("O0").unwrap().pass_names().is_empty());
        assert_eq!(pipeline("default").unwrap().pass_names(), ["shape-inference", "constant-folding", "cse", "dce"]);
    }
}
