//! kiln-passes: the Pass trait, the PassManager, named pipelines and the passes.
//!
//! SKELETON: filled in by the passes work.
