//! kiln: the compiler driver library behind the `kiln` command-line tool.
//!
//! It picks a frontend for a model path, runs a named pass pipeline, writes `.kiln` artifacts
//! ([`compile()`], [`Build`] for build scripts) and hands graphs to the runtime. The CLI (`src/main.rs`) is
//! a thin shell over it.

pub mod artifact_writer;
pub mod build_script;
pub mod compile;
pub mod cuda_kernels;
pub mod lowering;
pub mod model_source;
pub mod progress;

pub use build_script::{Build, BuildOutcome};
pub use compile::{CompileOptions, CompileSummary, compile};
pub use cuda_kernels::compile_cuda_kernels;
pub use model_source::{DriverError, ModelKind, load_model, model_kind};
pub use progress::Progress;
