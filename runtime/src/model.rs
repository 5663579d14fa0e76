//! [`Model`]: a compiled `.kiln` artifact ready to generate text, for applications that ship one.
//!
//! ```no_run
//! let mut model = kiln_runtime::Model::load("model.kiln".as_ref())?;
//! let out = model.generate("def read_config(path):", &model.greedy(48))?;
//! println!("{}", out.text);
//! # Ok::<(), kiln_runtime::ModelError>(())
//! ```
//!
//! The model runs on any [`DecoderExecutor`]: [`Model::load`] and [`Model::from_bytes`] build the CPU
//! executor; [`Model::with_executor`] takes another one (the CUDA executor) built from the same artifact.

use std::path::Path;

use kiln_ir::artifact::Target;

use crate::artifact::{Artifact, ArtifactError};
use crate::decoding::{
    DecoderExecutor, GenerateConfig, GenerateStats, Sampling, check_decoder_contract, generate_streaming,
};
use crate::{CpuExecutor, RuntimeError, TextTokenizer, TokenizerError};

/// Why a model could not be loaded or could not generate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("this model has no tokenizer, so text cannot be encoded; generate from token ids with `generate_ids`")]
    NoTokenizer,
    #[error(
        "this artifact was compiled for {compiled} only, not for {wanted}; compile it again with `--target {wanted}`"
    )]
    Target { wanted: Target, compiled: String },
}

/// Generated text and tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The generated tokens (not the prompt).
    pub tokens: Vec<u32>,
    /// Their text, special tokens included.
    pub text: String,
    pub stats: GenerateStats,
}

/// A loaded artifact with an executor and its tokenizer.
pub struct Model {
    artifact: Artifact,
    executor: Box<dyn DecoderExecutor>,
    tokenizer: Option<TextTokenizer>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("artifact", &self.artifact).field("tokenizer", &self.tokenizer).finish()
    }
}

impl Model {
    /// Loads the artifact at `path` (memory-mapped, validated) onto the CPU executor.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        Model::on_cpu(Artifact::load(path)?)
    }

    /// Loads an artifact held in memory (`include_bytes!`, a `Vec<u8>`) onto the CPU executor; weights
    /// stay where they are.
    pub fn from_bytes(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Result<Model, ModelError> {
        Model::on_cpu(Artifact::from_bytes(bytes)?)
    }

    /// Runs a loaded artifact on the CPU executor; the artifact must list the `cpu` target.
    pub fn on_cpu(artifact: Artifact) -> Result<Model, ModelError> {
        check_target(&artifact, Target::Cpu)?;
        let exec = CpuExecutor::new(artifact.graph().clone(), artifact.weights().clone())?;
        Model::with_executor(artifact, Box::new(exec))
    }

    /// Runs a loaded artifact on `executor` (built from the same artifact, e.g. the CUDA executor).
    pub fn with_executor(artifact: Artifact, executor: Box<dyn DecoderExecutor>) -> Result<Model, ModelError> {
        check_decoder_contract(executor.graph())?;
        let tokenizer = artifact.meta().tokenizer_json.as_deref().map(TextTokenizer::from_json).transpose()?;
        Ok(Model { artifact, executor, tokenizer })
    }

    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn executor_mut(&mut self) -> &mut dyn DecoderExecutor {
        self.executor.as_mut()
    }

    /// Greedy decoding of at most `max_new_tokens`, stopping at the model's end-of-sequence ids.
    pub fn greedy(&self, max_new_tokens: usize) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens,
            sampling: Sampling::Greedy,
            stop_tokens: self.artifact.meta().eos_token_ids.clone(),
        }
    }

    /// Continues `prompt` (encoded with the model's tokenizer, which adds a BOS if the model wants one).
    pub fn generate(&mut self, prompt: &str, config: &GenerateConfig) -> Result<Generation, ModelError> {
        let tokenizer = self.tokenizer.as_ref().ok_or(ModelError::NoTokenizer)?;
        let ids = tokenizer.encode(prompt, true)?;
        self.generate_ids(&ids, config)
    }

    /// Continues the token ids `prompt`; `text` is empty for a model without a tokenizer.
    pub fn generate_ids(&mut self, prompt: &[u32], config: &GenerateConfig) -> Result<Generation, ModelError> {
        let out = generate_streaming(self.executor.as_mut(), prompt, config, |_| {})?;
        let text = match &self.tokenizer {
            Some(t) => t.decode(&out.tokens, false)?,
            None => String::new(),
        };
        Ok(Generation { tokens: out.tokens, text, stats: out.stats })
    }
}

/// Refuses to run an artifact on a target it was not compiled for.
pub fn check_target(artifact: &Artifact, wanted: Target) -> Result<(), ModelError> {
    if artifact.targets().contains(&wanted) {
        return Ok(());
    }
    let compiled = artifact.targets().iter().map(Target::to_string).collect::<Vec<_>>().join(", ");
    Err(ModelError::Target { wanted, compiled })
}
