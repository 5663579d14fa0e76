//! Opening what `run`, `logits` and `bench` are given: a model, imported and put through a pipeline in
//! memory, or a compiled artifact, run as it was compiled; and the executor for `--device`.

use std::path::Path;

use kiln::{ModelKind, Progress};
use kiln_ir::artifact::Target;
use kiln_ir::{CompiledKernel, Model};
use kiln_runtime::CpuExecutor;
use kiln_runtime::decoding::{DecoderExecutor, RecomputingExecutor, uses_kv_cache};
use miette::{Result, miette};

use super::diagnostics::report;

/// Where generation runs (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU reference executor.
    Cpu,
    /// An NVIDIA GPU through the CUDA runtime.
    Cuda,
}

/// Cache room beyond the prompt and the new tokens: a speculative step's draft tokens are cached before
/// the rejected ones are dropped (`CUDA_EXACT_STEP_ROWS` bounds a step).
pub const SPECULATIVE_STEP_SLACK: usize = kiln_runtime::cuda::CUDA_EXACT_STEP_ROWS;

/// `--device` and what the GPU executor is sized for, shared by `run`, `logits` and `bench`.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct DeviceArgs {
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Tokens the GPU's KV cache holds (the prompt, the generated tokens and one speculative step). The
    /// default is 4096, raised to what the request needs; the attention kernel keeps a row of scores per
    /// token in shared memory, which bounds it (about 50,000 on an H100). The CPU cache grows as needed.
    #[arg(long, value_name = "TOKENS")]
    pub max_context: Option<usize>,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// A model ready to run: the graph after its pipeline, the weights and the metadata.
pub fn open_prepared(
    path: &Path,
    weights: Option<&Path>,
    pipeline: Option<&str>,
    device: Device,
    progress: &Progress,
) -> Result<Model> {
    open_with_kernels(path, weights, pipeline, device, progress).map(|(model, _)| model)
}

/// [`open_prepared`], with an artifact's compiled CUDA kernels (none for a model, whose kernels are
/// compiled when a CUDA executor is built).
pub fn open_with_kernels(
    path: &Path,
    weights: Option<&Path>,
    pipeline: Option<&str>,
    device: Device,
    progress: &Progress,
) -> Result<(Model, Option<Vec<CompiledKernel>>)> {
    if kiln::model_kind(path).map_err(report)? == ModelKind::Artifact {
        let spinner = progress.spinner(format!("loading {}", path.display()));
        let artifact = kiln_runtime::Artifact::load(path).map_err(|e| miette!("{e}"))?;
        spinner.finish_and_clear();
        let compiled = &artifact.pipeline().name;
        if let Some(p) = pipeline.filter(|p| p != compiled) {
            return Err(miette!(
                "{}: this artifact was compiled with pipeline `{compiled}`; --pipeline {p} applies to models, so \
                 compile the model again with `kiln compile --pipeline {p}` or leave --pipeline out",
                path.display()
            ));
        }
        if weights.is_some() {
            return Err(miette!("{}: an artifact carries its own weights; leave out --weights", path.display()));
        }
        let wanted = match device {
            Device::Cpu => Target::Cpu,
            // The CUDA executor picks the cubin of its GPU or the PTX itself, and says so when there is neither.
            Device::Cuda => {
                let kernels = artifact
                    .kernels()
                    .map(|k| CompiledKernel { module: k.module.to_string(), target: k.target, bytes: k.bytes.to_vec() })
                    .collect();
                return Ok((artifact.to_ir_model(), Some(kernels)));
            }
        };
        kiln_runtime::model::check_target(&artifact, wanted).map_err(|e| miette!("{}: {e}", path.display()))?;
        return Ok((artifact.to_ir_model(), None));
    }
    let spinner = progress.spinner(format!("importing {}", path.display()));
    let mut model = kiln::load_model(path, weights).map_err(report)?;
    spinner.finish_and_clear();
    let name = pipeline.unwrap_or_else(|| kiln::lowering::default_pipeline(path));
    let spinner = progress.spinner(format!("running pipeline `{name}`"));
    let mut manager = kiln_passes::pipelines::pipeline(name).map_err(|e| miette!("{e}"))?;
    let (report, notes) =
        kiln::lowering::run_pipeline(&mut model, &mut manager).map_err(|e| miette!("{}: {e}", path.display()))?;
    spinner.finish_and_clear();
    tracing::info!("pipeline {name} on {}:\n{report}", path.display());
    for note in notes {
        tracing::info!("{note}");
    }
    Ok((model, None))
}

/// The CPU executor of a prepared model.
pub fn cpu_executor(model: Model, path: &Path) -> Result<CpuExecutor> {
    CpuExecutor::new(model.graph, model.weights).map_err(|e| miette!("{}: {e}", path.display()))
}

/// The executor `--device` asks for. For CUDA, `kernels` are an artifact's; without them (a model run
/// from its source) the kernels are compiled now with NVRTC, for this GPU.
///
/// `needed_context` is how many tokens the request will put in the KV cache; the GPU cache is sized for
/// at least that unless `--max-context` says otherwise.
pub fn decoder_executor(
    model: Model,
    kernels: Option<Vec<CompiledKernel>>,
    device: DeviceArgs,
    needed_context: usize,
    path: &Path,
) -> Result<Box<dyn DecoderExecutor>> {
    match device.device {
        Device::Cpu => {
            let exec = cpu_executor(model, path)?;
            if uses_kv_cache(exec.graph()) {
                return Ok(Box::new(exec));
            }
            eprintln!(
                "note: {}: the graph has no KV-cache attention (see `kiln ir MODEL --pipeline onnx` for why), so each \
                 step recomputes the whole sequence",
                path.display()
            );
            Ok(Box::new(RecomputingExecutor::new(exec).map_err(|e| miette!("{}: {e}", path.display()))?))
        }
        Device::Cuda => {
            let defaults = kiln_runtime::cuda::CudaOptions::default();
            let max_context = device.max_context.unwrap_or(defaults.max_context.max(needed_context));
            if max_context == 0 {
                return Err(miette!("--max-context must be at least 1"));
            }
            cuda_executor(model, kernels, kiln_runtime::cuda::CudaOptions { max_context, ..defaults }, path)
        }
    }
}

fn cuda_executor(
    model: Model,
    kernels: Option<Vec<CompiledKernel>>,
    options: kiln_runtime::cuda::CudaOptions,
    path: &Path,
) -> Result<Box<dyn DecoderExecutor>> {
    use kiln_runtime::cuda::{CudaExecutor, device_sm};
    let kernels = match kernels {
        Some(k) => k,
        None => {
            let sm = device_sm(0).map_err(|e| miette!("{e}"))?;
            // A cubin for this GPU when NVRTC knows its architecture, the PTX otherwise. KILN_CUDA_SM=87 (say)
            // builds for another architecture instead, which makes this GPU run the PTX: how the GPU tests
            // check that kernels built for Jetson Orin still run on a datacenter GPU.
            let sms: Vec<u32> = match std::env::var("KILN_CUDA_SM") {
                Ok(list) => list
                    .split(',')
                    .map(|s| {
                        s.trim().parse::<u32>().map_err(|_| miette!("KILN_CUDA_SM={list}: expected numbers like 87,90"))
                    })
                    .collect::<Result<_>>()?,
                Err(_) => kiln_codegen::cuda::CUBIN_ARCHS.iter().copied().filter(|&a| a == sm).collect(),
            };
            kiln::compile_cuda_kernels(&model.graph, &sms).map_err(|e| miette!("{}: {e}", path.display()))?
        }
    };
    let exec = CudaExecutor::new(model.graph, &model.weights, &kernels, options)
        .map_err(|e| miette!("{}: {e}", path.display()))?;
    Ok(Box::new(exec))
}
