//! Compiling a graph's CUDA kernels with the code generator, for an artifact's targets or for running a
//! model on the GPU straight from its source.

use kiln_codegen::cuda::{self, CodegenError};
use kiln_ir::{CompiledKernel, Graph};

/// The kernel images of `graph`: PTX (which any supported GPU can run) and a cubin for each of `sms`. With
/// `KILN_CUDA_TRACE=1` set they are the launch-trace build (a diagnostic: see `kiln_runtime`'s trace).
pub fn compile_cuda_kernels(graph: &Graph, sms: &[u32]) -> Result<Vec<CompiledKernel>, CodegenError> {
    let mut source = cuda::cuda_source(graph)?;
    if std::env::var("KILN_CUDA_TRACE").as_deref() == Ok("1") {
        source = cuda::with_launch_trace(source);
    }
    Ok(cuda::compile_module(&source, sms)?)
}
