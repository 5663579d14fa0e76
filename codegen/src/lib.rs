//! kiln-codegen: code generators for kiln IR graphs.
//!
//! [`cuda`] writes the CUDA C of a graph (the hand-written kernel templates plus kernels derived from the
//! graph, such as fused elementwise chains) and compiles it ahead of time with NVRTC into PTX and cubins
//! that go into the artifact. An MLIR emitter will sit beside it.

pub mod cuda;

pub use cuda::{CodegenError, CudaSource, cuda_source};
