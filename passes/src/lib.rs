//! kiln-passes: the [`Pass`] trait, the [`PassManager`], the named [`pipelines`] and the passes, one
//! file each.

pub mod constant_fold;
pub mod cse;
pub mod dce;
pub mod manager;
pub mod pass;
pub mod pipelines;
pub mod raise_attention;
pub mod raise_decoder;
pub mod raise_linear;
pub mod raise_mlp;
pub mod raise_norms;
pub mod raise_positions;
pub mod raise_probe;
pub mod raise_rope;
pub mod shape_inference;

pub use constant_fold::ConstantFolding;
pub use cse::CommonSubexpressionElimination;
pub use dce::DeadCodeElimination;
pub use manager::{PassManager, PassReport, PassRun, PrintAfter, PrintSink};
pub use pass::{Changed, Pass, PassContext, PassError, PassNote};
pub use pipelines::{pass_by_name, pass_names, pipeline};
pub use raise_decoder::RaiseDecoder;
pub use shape_inference::ShapeInference;
