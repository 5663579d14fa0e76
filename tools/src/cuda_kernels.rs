//! Compiling a graph's CUDA kernels with the code generator, for an artifact's targets or for running a
//! model on the GPU straight from its source.

use kiln_codegen::cuda::{self, CodegenError};
use kiln_ir::{CompiledKernel, Graph};

/// The kernel images of `graph`: PTX (which any supported GPU can run) and a cubin for each of `sms`.
pub fn compile_cuda_kernels(graph: &Graph, sms: &[u32]) -> Result<Vec<CompiledKernel>, CodegenError> {
    let source = cuda::cuda_source(graph)?;
    Ok(cuda::compile_module(&source, sms)?)
}
