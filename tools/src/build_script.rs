//! [`Build`]: compile a model from a Cargo build script.
//!
//! ```no_run
//! // build.rs
//! let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("model.kiln");
//! kiln::Build::new("models/default").pipeline("default").target("cpu").compile_to(&out).unwrap();
//! ```
//!
//! It tells Cargo which files the artifact depends on (`cargo:rerun-if-changed`), so the build script
//! runs again only when one of them changes; and when it does run, an existing artifact whose content
//! hash matches the inputs and options is kept as it is, with no compile.

use std::path::{Path, PathBuf};

use kiln_ir::artifact::Target;

use crate::compile::{CompileOptions, CompileSummary, compile, content_hash, input_files};
use crate::model_source::DriverError;
use crate::progress::Progress;

/// A compile request for a build script.
#[derive(Clone, Debug)]
pub struct Build {
    model: PathBuf,
    pipeline: String,
    disabled_passes: Vec<String>,
    targets: Vec<String>,
    weights: Option<PathBuf>,
    cargo_directives: bool,
}

/// What [`Build::compile_to`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum BuildOutcome {
    /// The artifact was written.
    Compiled(Box<CompileSummary>),
    /// The artifact at the destination already had this content hash; nothing was done.
    UpToDate { content_hash: String },
}

impl Build {
    /// Compiles `model` (a Hugging Face directory, `.gguf` or `.kir`), with the `default` pipeline for the
    /// `cpu` target unless told otherwise. A relative path is taken from the current directory, which
    /// for a build script is the package's root.
    pub fn new(model: impl AsRef<Path>) -> Build {
        Build {
            model: model.as_ref().to_path_buf(),
            pipeline: "default".to_string(),
            disabled_passes: Vec::new(),
            targets: Vec::new(),
            weights: None,
            // Print `cargo:` lines only inside a build script (Cargo sets OUT_DIR for those).
            cargo_directives: std::env::var_os("OUT_DIR").is_some(),
        }
    }

    /// The pass pipeline (`O0`, `default`, ...).
    pub fn pipeline(mut self, name: &str) -> Build {
        self.pipeline = name.to_string();
        self
    }

    /// Adds a target (`cpu`, `cuda:sm_90`, `cuda:sm_87`); `cpu` when none is given.
    pub fn target(mut self, target: &str) -> Build {
        self.targets.push(target.to_string());
        self
    }

    /// Leaves a pass of the pipeline out.
    pub fn disable_pass(mut self, name: &str) -> Build {
        self.disabled_passes.push(name.to_string());
        self
    }

    /// The weights of a `.kir` graph, if not the `.safetensors` file of the same name.
    pub fn weights(mut self, path: impl AsRef<Path>) -> Build {
        self.weights = Some(path.as_ref().to_path_buf());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` lines (default: when running inside a build script).
    pub fn cargo_directives(mut self, on: bool) -> Build {
        self.cargo_directives = on;
        self
    }

    /// Writes the artifact to `out`, unless `out` already holds a valid artifact with the same content
    /// hash.
    pub fn compile_to(self, out: impl AsRef<Path>) -> Result<BuildOutcome, DriverError> {
        let out = out.as_ref();
        let targets = self.targets.iter().map(|t| t.parse::<Target>()).collect::<Result<Vec<_>, _>>()?;
        let options = CompileOptions {
            pipeline: self.pipeline,
            disabled_passes: self.disabled_passes,
            targets,
            weights: self.weights,
        };
        let files = input_files(&self.model, options.weights.as_deref())?;
        if self.cargo_directives {
            // The directory too, so that a file added to a model directory counts as a change.
            if self.model.is_dir() {
                println!("cargo:rerun-if-changed={}", self.model.display());
            }
            for f in &files {
                println!("cargo:rerun-if-changed={}", f.display());
            }
        }
        let hash = content_hash(&self.model, &files, &options.pipeline_record()?, &options.targets())?;
        if out.exists()
            && let Ok(existing) = kiln_runtime::Artifact::load(out)
            && existing.content_hash() == hash
        {
            tracing::info!(path = %out.display(), %hash, "artifact up to date");
            return Ok(BuildOutcome::UpToDate { content_hash: hash });
        }
        let summary = compile(&self.model, out, &options, &Progress::hidden())?;
        Ok(BuildOutcome::Compiled(Box::new(summary)))
    }
}
