//! kiln: the compiler driver library behind the `kiln` command-line tool.
//!
//! It picks a frontend for a model path, runs a named pass pipeline, and hands graphs to the runtime.
//! The CLI (`src/main.rs`) is a thin shell over it; build scripts will use it directly.

pub mod lowering;
pub mod model_source;

pub use model_source::{DriverError, ModelKind, load_model, model_kind};
