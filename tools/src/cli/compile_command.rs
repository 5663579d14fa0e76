//! `kiln compile`: import a model, run a pipeline, and write a `.kiln` artifact.

use std::io::Write;
use std::path::PathBuf;

use kiln::{CompileOptions, Progress};
use kiln_ir::artifact::Target;
use miette::{IntoDiagnostic, Result};

use super::diagnostics::report;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The model: a Hugging Face directory, a `.gguf` file or a `.kir` graph.
    model: PathBuf,
    /// Where to write the artifact (conventionally NAME.kiln).
    #[arg(short, long, value_name = "OUT.kiln")]
    output: PathBuf,
    /// The pass pipeline.
    #[arg(long, default_value = "default")]
    pipeline: String,
    /// Leave this pass out of the pipeline (repeatable).
    #[arg(long = "disable-pass", value_name = "PASS")]
    disable_pass: Vec<String>,
    /// What the artifact is for (repeatable): `cpu` (default), `cuda:sm_90`, `cuda:sm_87`, ...
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<Target>,
    /// Weights for a `.kir` graph (default: the `.safetensors` file of the same name).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Print one JSON object describing the artifact instead of a summary line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: CompileArgs) -> Result<()> {
    let options = CompileOptions {
        pipeline: args.pipeline,
        disabled_passes: args.disable_pass,
        targets: args.targets,
        weights: args.weights,
    };
    let progress = Progress::on_terminal(args.json);
    let s = kiln::compile(&args.model, &args.output, &options, &progress).map_err(report)?;
    let total = s.hash_seconds + s.import_seconds + s.passes_seconds + s.write_seconds;
    let targets: Vec<String> = s.targets.iter().map(Target::to_string).collect();
    if args.json {
        let json = serde_json::json!({
            "path": s.artifact.path,
            "bytes": s.artifact.bytes,
            "parameters": s.artifact.parameters,
            "pipeline": s.pipeline,
            "targets": targets,
            "content_hash": s.content_hash,
            "integrity_hash": s.artifact.integrity_hash,
            "seconds": {
                "total": total,
                "hash": s.hash_seconds,
                "import": s.import_seconds,
                "passes": s.passes_seconds,
                "write": s.write_seconds,
            },
        });
        writeln!(std::io::stdout(), "{json}").into_diagnostic()?;
    } else {
        eprintln!(
            "wrote {} ({:.1} MB, {:.2}M parameters, pipeline {}, targets {}) in {total:.2} s: hash {:.2} s, import \
             {:.2} s, passes {:.2} s, write {:.2} s",
            s.artifact.path.display(),
            s.artifact.bytes as f64 / 1e6,
            s.artifact.parameters as f64 / 1e6,
            s.pipeline.name,
            targets.join(", "),
            s.hash_seconds,
            s.import_seconds,
            s.passes_seconds,
            s.write_seconds,
        );
    }
    Ok(())
}
