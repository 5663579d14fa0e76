//! Opening what `run`, `logits` and `bench` are given: a model, imported and put through a pipeline in
//! memory, or a compiled artifact, run as it was compiled; and the executor for `--device`.

use std::path::Path;

use kiln::{ModelKind, Progress};
use kiln_ir::Model;
use kiln_ir::artifact::Target;
use kiln_runtime::CpuExecutor;
use kiln_runtime::decoding::DecoderExecutor;
use miette::{Result, miette};

use super::diagnostics::report;

/// The pipeline a model runs through when `--pipeline` is not given.
pub const DEFAULT_PIPELINE: &str = "default";

/// Where generation runs (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU reference executor.
    Cpu,
    /// An NVIDIA GPU through the CUDA runtime.
    Cuda,
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
            // The CUDA executor checks the architecture itself; any CUDA target will do here.
            Device::Cuda => return Ok(artifact.to_ir_model()),
        };
        kiln_runtime::model::check_target(&artifact, wanted).map_err(|e| miette!("{}: {e}", path.display()))?;
        return Ok(artifact.to_ir_model());
    }
    let spinner = progress.spinner(format!("importing {}", path.display()));
    let mut model = kiln::load_model(path, weights).map_err(report)?;
    spinner.finish_and_clear();
    let name = pipeline.unwrap_or(DEFAULT_PIPELINE);
    let spinner = progress.spinner(format!("running pipeline `{name}`"));
    let mut manager = kiln_passes::pipelines::pipeline(name).map_err(|e| miette!("{e}"))?;
    let report = manager
        .run(&mut model.graph, &mut kiln_passes::PassContext::with_weights(&model.weights))
        .map_err(|e| miette!("{}: {e}", path.display()))?;
    spinner.finish_and_clear();
    tracing::info!("pipeline {name} on {}:\n{report}", path.display());
    Ok(model)
}

/// The CPU executor of a prepared model.
pub fn cpu_executor(model: Model, path: &Path) -> Result<CpuExecutor> {
    CpuExecutor::new(model.graph, model.weights).map_err(|e| miette!("{}: {e}", path.display()))
}

/// The executor `--device` asks for.
pub fn decoder_executor(model: Model, device: Device, path: &Path) -> Result<Box<dyn DecoderExecutor>> {
    match device {
        Device::Cpu => Ok(Box::new(cpu_executor(model, path)?)),
        Device::Cuda => Err(miette!(
            "--device cuda: this kiln was built without the CUDA runtime; run on the CPU with --device cpu"
        )),
    }
}
