//! `kiln compile` as a library function: import a model, run a named pipeline, and write a `.kiln`
//! artifact, with the content hash of the inputs and options that lets [`crate::Build`] skip unchanged
//! work.
//!
//! The content hash covers: the artifact format version and the kiln version, every input file (its name
//! relative to the model and its bytes; [`input_files`] says which), the pipeline with its passes and
//! disabled passes, and the targets. Paths do not enter it, so a moved model keeps its hash.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_ir::artifact::{CompiledKernel, FORMAT_VERSION, PipelineRecord, Target};
use tracing::info;

use crate::artifact_writer::{ArtifactContents, WrittenArtifact, write_artifact};
use crate::model_source::{DriverError, ModelKind, load_model, model_kind, sidecar};
use crate::progress::Progress;

/// What to compile and how.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    /// The pass pipeline (`O0`, `default`, ...).
    pub pipeline: String,
    /// Passes of the pipeline to leave out.
    pub disabled_passes: Vec<String>,
    /// What the artifact is for; `cpu` when empty.
    pub targets: Vec<Target>,
    /// The weights of a `.kir` graph, if not the `.safetensors` file of the same name.
    pub weights: Option<PathBuf>,
}

impl Default for CompileOptions {
    fn default() -> CompileOptions {
        CompileOptions {
            pipeline: "default".to_string(),
            disabled_passes: Vec::new(),
            targets: vec![Target::Cpu],
            weights: None,
        }
    }
}

impl CompileOptions {
    /// The targets, `cpu` when none were given, without repeats, in a fixed order.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = if self.targets.is_empty() { vec![Target::Cpu] } else { self.targets.clone() };
        t.sort();
        t.dedup();
        t
    }

    /// The pipeline's record as it will run (before running it: the passes are known from the name).
    pub fn pipeline_record(&self) -> Result<PipelineRecord, DriverError> {
        let mut manager = kiln_passes::pipelines::pipeline(&self.pipeline).map_err(pass_error)?;
        for name in &self.disabled_passes {
            manager.disable(name).map_err(pass_error)?;
        }
        let passes =
            manager.pass_names().into_iter().filter(|p| !self.disabled_passes.iter().any(|d| d == p)).map(String::from);
        Ok(PipelineRecord {
            name: self.pipeline.clone(),
            passes: passes.collect(),
            disabled: self.disabled_passes.clone(),
        })
    }
}

fn pass_error(e: kiln_passes::PassError) -> DriverError {
    DriverError::Pipeline(e.to_string())
}

/// What a compile did, with the time of each stage.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileSummary {
    pub artifact: WrittenArtifact,
    pub content_hash: String,
    pub pipeline: PipelineRecord,
    pub targets: Vec<Target>,
    pub hash_seconds: f64,
    pub import_seconds: f64,
    pub passes_seconds: f64,
    pub write_seconds: f64,
}

/// The files a model is read from, in a fixed order: a `.gguf` file itself; a `.kir` graph, its weights
/// and the files of the same stem beside it that exist (tokenizer, chat template, generation config);
/// for a Hugging Face directory every top-level file a frontend may read (`*.json`, `*.jinja`,
/// `*.safetensors`, `*.txt`, `*.model`); for an ONNX graph, it and the files beside it whose names start
/// with its file name (its external data).
pub fn input_files(model: &Path, weights: Option<&Path>) -> Result<Vec<PathBuf>, DriverError> {
    let io = |e: std::io::Error| DriverError::Io { path: model.to_path_buf(), source: e };
    let mut files = match model_kind(model)? {
        ModelKind::Gguf => vec![model.to_path_buf()],
        ModelKind::Kir => {
            let mut f = vec![model.to_path_buf()];
            let w = weights.map(Path::to_path_buf).unwrap_or_else(|| model.with_extension("safetensors"));
            if weights.is_some() || w.is_file() {
                f.push(w);
            }
            for suffix in ["tokenizer.json", "chat_template.jinja", "generation_config.json"] {
                let s = sidecar(model, suffix);
                if s.is_file() {
                    f.push(s);
                }
            }
            f
        }
        ModelKind::HuggingFace => {
            let mut f = Vec::new();
            for entry in std::fs::read_dir(model).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
                let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
                if path.is_file() && !hidden && matches!(ext, "json" | "jinja" | "safetensors" | "txt" | "model") {
                    f.push(path);
                }
            }
            f.sort();
            f
        }
        ModelKind::Onnx => {
            // The graph and its external data, which exporters name after it (`model.onnx.data`).
            let mut f = vec![model.to_path_buf()];
            let stem = model.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let dir = model.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if path.is_file() && name != stem && name.starts_with(&stem) {
                    f.push(path);
                }
            }
            f.sort();
            f
        }
        ModelKind::Artifact => return Err(DriverError::AlreadyCompiled { path: model.to_path_buf() }),
    };
    files.dedup();
    Ok(files)
}

/// The content hash of the inputs and options (see the module docs), `blake3:<hex>`.
pub fn content_hash(
    model: &Path,
    files: &[PathBuf],
    pipeline: &PipelineRecord,
    targets: &[Target],
) -> Result<String, DriverError> {
    let mut h = blake3::Hasher::new();
    let field = |h: &mut blake3::Hasher, bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(&mut h, b"kiln content hash");
    field(&mut h, FORMAT_VERSION.to_string().as_bytes());
    field(&mut h, env!("CARGO_PKG_VERSION").as_bytes());
    let base = if model.is_dir() { model } else { model.parent().unwrap_or(Path::new("")) };
    for file in files {
        let name = file.strip_prefix(base).unwrap_or(file);
        field(&mut h, name.to_string_lossy().as_bytes());
        let io = |e: std::io::Error| DriverError::Io { path: file.clone(), source: e };
        let mut f = std::fs::File::open(file).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        h.update(&len.to_le_bytes());
        // Read through a buffer rather than an mmap: the pages stay out of this process's memory.
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    field(&mut h, serde_json::to_string(pipeline).expect("plain data").as_bytes());
    field(&mut h, serde_json::to_string(targets).expect("plain data").as_bytes());
    Ok(format!("blake3:{}", h.finalize().to_hex()))
}

/// Compiles `model` into the artifact `out`, with the CUDA kernels (PTX plus a cubin per `cuda:sm_NN`
/// target) when a CUDA target is asked for.
pub fn compile(
    model: &Path,
    out: &Path,
    options: &CompileOptions,
    progress: &Progress,
) -> Result<CompileSummary, DriverError> {
    compile_with_kernels(model, out, options, progress, &cuda_kernels_for_targets)
}

/// The CUDA kernels for `targets`: none without a CUDA target; else the PTX (for any other GPU) and a
/// cubin per `cuda:sm_NN`. The runtime derives its launch plan from the graph, so the plan is `null`.
pub fn cuda_kernels_for_targets(
    graph: &kiln_ir::Graph,
    targets: &[Target],
) -> Result<(Vec<CompiledKernel>, serde_json::Value), DriverError> {
    let sms: Vec<u32> =
        targets.iter().filter_map(|t| if let Target::Cuda { sm } = t { Some(*sm) } else { None }).collect();
    if sms.is_empty() {
        return Ok((Vec::new(), serde_json::Value::Null));
    }
    Ok((crate::compile_cuda_kernels(graph, &sms)?, serde_json::Value::Null))
}

/// Produces the kernels (and the launch plan) for a compiled graph and its targets.
pub type KernelGenerator<'a> =
    dyn Fn(&kiln_ir::Graph, &[Target]) -> Result<(Vec<CompiledKernel>, serde_json::Value), DriverError> + 'a;

/// [`compile`] with the kernels from `kernels` (called with the graph after the pipeline).
pub fn compile_with_kernels(
    model: &Path,
    out: &Path,
    options: &CompileOptions,
    progress: &Progress,
    kernels: &KernelGenerator<'_>,
) -> Result<CompileSummary, DriverError> {
    let targets = options.targets();
    let pipeline = options.pipeline_record()?;
    let files = input_files(model, options.weights.as_deref())?;

    let started = Instant::now();
    let spinner = progress.spinner(format!("hashing {} input files", files.len()));
    let hash = content_hash(model, &files, &pipeline, &targets)?;
    spinner.finish_and_clear();
    let hash_seconds = started.elapsed().as_secs_f64();
    info!(%hash, files = files.len(), seconds = hash_seconds, "content hash");

    let started = Instant::now();
    let spinner = progress.spinner(format!("importing {}", model.display()));
    let imported = load_model(model, options.weights.as_deref())?;
    spinner.finish_and_clear();
    let import_seconds = started.elapsed().as_secs_f64();
    info!(weights = imported.weights.len(), seconds = import_seconds, "imported");

    let started = Instant::now();
    let spinner = progress.spinner(format!("running pipeline `{}`", pipeline.name));
    let mut imported = imported;
    let mut manager = kiln_passes::pipelines::pipeline(&options.pipeline).map_err(pass_error)?;
    for name in &options.disabled_passes {
        manager.disable(name).map_err(pass_error)?;
    }
    // Through `lowering`, so that weights the passes create (raising an ONNX graph) go into the artifact.
    let (report, _notes) = crate::lowering::run_pipeline(&mut imported, &mut manager)
        .map_err(|e| DriverError::Pipeline(format!("{}: {e}", model.display())))?;
    let graph = imported.graph.clone();
    spinner.finish_and_clear();
    let passes_seconds = started.elapsed().as_secs_f64();
    info!(seconds = passes_seconds, "pipeline {}:\n{report}", pipeline.name);

    let (kernels, kernel_plan) = kernels(&graph, &targets)?;
    let started = Instant::now();
    let contents = ArtifactContents {
        graph: &graph,
        weights: &imported.weights,
        meta: &imported.meta,
        pipeline: pipeline.clone(),
        targets: targets.clone(),
        kernels,
        kernel_plan,
        content_hash: hash.clone(),
    };
    let artifact = write_artifact(out, &contents, progress)?;
    let write_seconds = started.elapsed().as_secs_f64();
    info!(bytes = artifact.bytes, seconds = write_seconds, path = %out.display(), "wrote artifact");
    Ok(CompileSummary {
        artifact,
        content_hash: hash,
        pipeline,
        targets,
        hash_seconds,
        import_seconds,
        passes_seconds,
        write_seconds,
    })
}
