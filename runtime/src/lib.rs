//! kiln-runtime: executes kiln IR graphs (the CPU reference executor, [`cpu`]) and runs the generation
//! loop over them ([`decoding`]), with the text side of a model: its tokenizer ([`tokenizer`]) and chat
//! template ([`chat`]); it loads `.kiln` artifacts ([`artifact`]) and runs them as a [`Model`]. It depends
//! only on `kiln-ir`, so a deployed binary stays small.

pub mod artifact;
pub mod chat;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod decoding;
mod error;
pub mod model;
pub mod tokenizer;

pub use artifact::{Artifact, ArtifactError, KernelRef};
pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use cpu::CpuExecutor;
pub use decoding::{GenerateConfig, GenerateOutput, GenerateStats, Sampling, generate, generate_streaming};
pub use error::RuntimeError;
pub use model::{Generation, Model, ModelError};
pub use tokenizer::{TextStream, TextTokenizer, TokenizerError};
