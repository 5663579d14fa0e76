//! kiln-codegen: CUDA C emission (compiled with NVRTC) and MLIR emission for kiln IR graphs.
//!
//! The backends land with the CUDA-backend issue; this crate exists now so the workspace has its final
//! shape and the dependency-direction test guards it from the start.
