//! The CUDA executor: runs a decoder graph on an NVIDIA GPU with kernels compiled ahead of time.
//!
//! It loads the artifact's kernel images (the cubin for the running GPU's architecture, else the PTX,
//! which the driver compiles), uploads the weights once into one device arena that also holds every
//! activation (offsets planned from value lifetimes) and the KV cache, and runs a step by launching one
//! kernel per op (one per fused elementwise chain) in graph order on one stream, without host
//! synchronisation until the logits are copied back. Greedy speculative decoding is exact here too: see
//! the exactness notes of the linear and attention kernels in `kiln-codegen`'s templates.
//!
//! The CUDA driver library is loaded at run time, so a machine without one gets an error, not a crash.

mod choose;
mod device;
mod executor;
mod plan;
mod trace;

pub use choose::{DeviceDraw, DeviceSampler};
pub use device::device_sm;
pub use executor::{CUDA_EXACT_STEP_ROWS, CudaExecutor, CudaOptions};
