//! Shared helpers for kiln's cross-crate and end-to-end tests.

pub mod hf_scratch;
pub mod onnx_exports;
pub mod reference_outputs;
