//! kiln-runtime: executes kiln IR graphs (the CPU reference executor, [`cpu`]) and runs the generation
//! loop over them ([`decoding`]). It depends only on `kiln-ir`, so a deployed binary stays small.

pub mod cpu;
pub mod decoding;
mod error;

pub use cpu::CpuExecutor;
pub use decoding::{GenerateConfig, GenerateOutput, GenerateStats, Sampling, generate};
pub use error::RuntimeError;
