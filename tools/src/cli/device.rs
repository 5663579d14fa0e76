//! `--device cpu|cuda`: which executor runs a model, shared by the commands that run one.

use std::path::Path;

use kiln_ir::Model;
use kiln_runtime::cpu::CpuExecutor;
use kiln_runtime::decoding::DecoderExecutor;
use miette::{Result, miette};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU reference executor.
    #[default]
    Cpu,
    /// An NVIDIA GPU (kernels compiled with NVRTC for the GPU at hand).
    Cuda,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Tokens the GPU's KV cache holds (prompt plus generation).
    #[arg(long, default_value_t = 4096)]
    pub max_context: usize,
}

/// Runs `pipeline` over the model's graph and builds the executor `device` asks for.
pub fn executor(model: Model, pipeline: &str, path: &Path, device: &DeviceArgs) -> Result<Box<dyn DecoderExecutor>> {
    let mut graph = model.graph;
    let weights = model.weights;
    let mut manager = kiln_passes::pipelines::pipeline(pipeline).map_err(|e| miette!("{e}"))?;
    manager
        .run(&mut graph, &mut kiln_passes::PassContext::with_weights(&weights))
        .map_err(|e| miette!("{}: {e}", path.display()))?;
    match device.device {
        DeviceKind::Cpu => {
            Ok(Box::new(CpuExecutor::new(graph, weights).map_err(|e| miette!("{}: {e}", path.display()))?))
        }
        DeviceKind::Cuda => cuda_executor(graph, &weights, path, device),
    }
}

fn cuda_executor(
    graph: kiln_ir::Graph,
    weights: &kiln_ir::WeightStore,
    path: &Path,
    device: &DeviceArgs,
) -> Result<Box<dyn DecoderExecutor>> {
    use kiln_runtime::cuda::{CudaExecutor, CudaOptions, device_sm};
    let sm = device_sm(0).map_err(|e| miette!("{e}"))?;
    // A cubin for this GPU when NVRTC knows its architecture; the PTX alone otherwise.
    // KILN_CUDA_SM=87 (say) builds for another architecture instead, which makes this GPU run the PTX:
    // how the GPU tests check that an artifact built for Jetson Orin still runs on a datacenter GPU.
    let sms: Vec<u32> = match std::env::var("KILN_CUDA_SM") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse::<u32>().map_err(|_| miette!("KILN_CUDA_SM={list}: expected numbers like 87,90")))
            .collect::<Result<_>>()?,
        Err(_) => kiln_codegen::cuda::CUBIN_ARCHS.iter().copied().filter(|&a| a == sm).collect(),
    };
    let kernels = kiln::compile_cuda_kernels(&graph, &sms).map_err(|e| miette!("{}: {e}", path.display()))?;
    let options = CudaOptions { max_context: device.max_context, ..CudaOptions::default() };
    let exec = CudaExecutor::new(graph, weights, &kernels, options).map_err(|e| miette!("{}: {e}", path.display()))?;
    Ok(Box::new(exec))
}
