//! The CPU reference executor ([`CpuExecutor`]) and the kernels of the model-level ops it implements.
//!
//! It is the reference the CUDA path and every pass are checked against, so kernels favour clarity,
//! then speed: f32 accumulation everywhere, weights dequantized on the fly, `gemm` for matrix products
//! and `rayon` for parallelism.

mod activation;
mod attention;
mod dot;
mod embedding;
mod executor;
mod exp;
mod kv_cache;
mod linear;
mod norm;
mod profile;
pub(crate) mod rope;
mod shapes;
mod value;

pub use executor::CpuExecutor;
pub use linear::ROW_INDEPENDENT_MAX_ROWS;
