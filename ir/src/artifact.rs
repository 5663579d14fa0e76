//! The `.kiln` artifact schema: what the compiler writes and the runtime reads (DESIGN.md section 7).
//!
//! An artifact is one safetensors file. Its tensors are the weights as the pipeline left them (plain
//! dtypes under their own names; quantized weights as their byte buffers, see [`QuantizedWeight`]) and
//! the compiled kernels (`U8` tensors under [`KERNEL_TENSOR_PREFIX`]). Its `__metadata__` (a map of
//! strings, as safetensors requires) holds the entries named in [`keys`]: small JSON records defined
//! here, and large texts (IR, tokenizer, config, chat template) stored as they are so that any
//! safetensors reader shows them without a second layer of escaping.
//!
//! Two hashes, both BLAKE3 in the form `blake3:<64 hex digits>`:
//! - the *content hash* ([`keys::CONTENT_HASH`]) of the inputs and options (model files, pipeline,
//!   targets, format version): a build that would produce the same artifact can skip the work;
//! - the *integrity hash* ([`keys::INTEGRITY`]) of the whole file as written, with the hash's own 64 hex
//!   digits replaced by `0`s ([`INTEGRITY_PLACEHOLDER`]): a flipped byte anywhere, header or data, makes
//!   the loader refuse the file.
//!
//! Only types live here: the writer is in the compiler driver, the loader in `kiln-runtime`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DType;

/// The artifact format this build writes and the newest it reads. Bump it for any change an older
/// loader would misread; a loader refuses files of a newer version with a message saying so.
pub const FORMAT_VERSION: u32 = 1;

/// The value of [`keys::FORMAT`], which marks a safetensors file as a kiln artifact.
pub const FORMAT_NAME: &str = "kiln";

/// Tensors whose names start with this hold compiled kernels (see [`KernelEntry::tensor`]).
pub const KERNEL_TENSOR_PREFIX: &str = "__kernels__/";

/// The 64 hex digits written in place of the integrity hash while it is computed.
pub const INTEGRITY_PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `__metadata__` keys of an artifact.
pub mod keys {
    /// Always [`super::FORMAT_NAME`].
    pub const FORMAT: &str = "kiln.format";
    /// [`super::FORMAT_VERSION`] of the writer, as a decimal number.
    pub const FORMAT_VERSION: &str = "kiln.format_version";
    /// The version of the `kiln` crate that wrote the file (for messages; never checked).
    pub const WRITER: &str = "kiln.writer";
    /// The decoder graph in the IR text form, after the pipeline.
    pub const IR: &str = "kiln.ir";
    /// [`super::ModelRecord`] as JSON.
    pub const MODEL: &str = "kiln.model";
    /// The source configuration (a Hugging Face `config.json`), when the frontend had one.
    pub const CONFIG: &str = "kiln.config";
    /// A Hugging Face `tokenizers` JSON document, when the model has a tokenizer.
    pub const TOKENIZER: &str = "kiln.tokenizer";
    /// The Jinja chat template, when the model has one.
    pub const CHAT_TEMPLATE: &str = "kiln.chat_template";
    /// [`super::PipelineRecord`] as JSON.
    pub const PIPELINE: &str = "kiln.pipeline";
    /// The targets as a JSON list of strings ([`super::Target`]).
    pub const TARGETS: &str = "kiln.targets";
    /// [`super::WeightsManifest`] as JSON.
    pub const WEIGHTS: &str = "kiln.weights";
    /// [`super::KernelsManifest`] as JSON.
    pub const KERNELS: &str = "kiln.kernels";
    /// The content hash of the inputs and options.
    pub const CONTENT_HASH: &str = "kiln.content_hash";
    /// The integrity hash of the file (see the module docs).
    pub const INTEGRITY: &str = "kiln.integrity";
}

/// What a hash string must look like: `blake3:` and 64 lowercase hex digits.
pub fn is_hash_string(s: &str) -> bool {
    s.strip_prefix("blake3:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Facts about the model beyond its graph and weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecord {
    /// The architecture as the frontend named it (`llama`, `qwen2`, ...; empty for `.kir` graphs).
    pub architecture: String,
    /// Where the model was imported from, as given to the compiler.
    pub source: String,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub max_position: Option<u64>,
    pub vocab_size: u64,
    /// Elements of every weight (a quantized `[n, k]` weight counts `n * k`).
    pub parameters: u64,
}

/// Which pipeline produced the graph, with its passes in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRecord {
    /// The pipeline name (`O0`, `default`, ...).
    pub name: String,
    /// The passes that ran, in order (their names as `--disable-pass` takes them).
    pub passes: Vec<String>,
    /// Passes of the pipeline that `--disable-pass` left out.
    pub disabled: Vec<String>,
}

/// A device an artifact is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The CPU reference executor: the graph and weights suffice.
    Cpu,
    /// An NVIDIA GPU of compute capability `sm / 10`.`sm % 10` (`sm_90` is 90).
    Cuda { sm: u32 },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cpu => f.write_str("cpu"),
            Target::Cuda { sm } => write!(f, "cuda:sm_{sm}"),
        }
    }
}

/// A target name that is not `cpu` or `cuda:sm_NN`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown target `{0}`: expected `cpu` or `cuda:sm_NN` (for example cuda:sm_90 for H100, cuda:sm_87 for Jetson Orin)"
)]
pub struct UnknownTarget(pub String);

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(s: &str) -> Result<Target, UnknownTarget> {
        if s == "cpu" {
            return Ok(Target::Cpu);
        }
        let sm = s
            .strip_prefix("cuda:sm_")
            .filter(|d| !d.is_empty() && d.len() <= 4 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
            .filter(|&sm| sm >= 10)
            .ok_or_else(|| UnknownTarget(s.to_string()))?;
        Ok(Target::Cuda { sm })
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How the bytes of a compiled kernel are to be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelTarget {
    /// PTX text, which the driver compiles for whatever GPU it runs on.
    Ptx,
    /// A cubin for exactly compute capability `sm`.
    Cubin { sm: u32 },
}

impl KernelTarget {
    /// The file-name suffix of the kernel's tensor: `ptx`, `sm_90.cubin`.
    pub fn suffix(self) -> String {
        match self {
            KernelTarget::Ptx => "ptx".to_string(),
            KernelTarget::Cubin { sm } => format!("sm_{sm}.cubin"),
        }
    }
}

impl fmt::Display for KernelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelTarget::Ptx => f.write_str("ptx"),
            KernelTarget::Cubin { sm } => write!(f, "cubin:sm_{sm}"),
        }
    }
}

impl FromStr for KernelTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<KernelTarget, String> {
        if s == "ptx" {
            return Ok(KernelTarget::Ptx);
        }
        s.strip_prefix("cubin:sm_")
            .filter(|d| !d.is_empty() && d.len() <= 4 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
            .map(|sm| KernelTarget::Cubin { sm })
            .ok_or_else(|| format!("unknown kernel target `{s}`: expected `ptx` or `cubin:sm_NN`"))
    }
}

impl Serialize for KernelTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KernelTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KernelTarget, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The marker kernel of the CUDA kernels' calling conventions (`common.cuh` in kiln-codegen defines it): the
/// CUDA runtime refuses a module without it, which an older kiln compiled with other argument lists or launch
/// contracts. Version 17: a ring kernel (`kiln_gemvr_*`) with a folded norm no longer stages the norm's weights
/// in its dynamic shared memory, so its rings start right after the normalised x.
pub const CUDA_KERNEL_ABI_MARKER: &str = "kiln_kernel_abi_v17";

/// The token-choice kernels every CUDA module carries (the argmax and the draw of choose.cu): kiln-codegen
/// emits them from its templates, and the CUDA runtime resolves them when it loads a module.
pub const CUDA_TOKEN_CHOICE_KERNELS: [&str; 6] = [
    "kiln_argmax_f32",
    "kiln_argmax_split_f32",
    "kiln_sample_prepare_f32",
    "kiln_sample_hist_f32",
    "kiln_sample_compact_f32",
    "kiln_sample_finish_f32",
];

/// A kernel module compiled by a backend, as handed to the artifact writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledKernel {
    /// The module name (deterministic, a valid file-name stem: letters, digits, `_`, `-`, `.`).
    pub module: String,
    pub target: KernelTarget,
    pub bytes: Vec<u8>,
}

impl CompiledKernel {
    /// The tensor that holds the kernel: `__kernels__/<module>.ptx` or `__kernels__/<module>.sm_90.cubin`.
    pub fn tensor_name(&self) -> String {
        kernel_tensor_name(&self.module, self.target)
    }
}

/// The tensor name of a kernel module's bytes.
pub fn kernel_tensor_name(module: &str, target: KernelTarget) -> String {
    format!("{KERNEL_TENSOR_PREFIX}{module}.{}", target.suffix())
}

/// Whether `module` is a valid kernel module name.
pub fn is_valid_module_name(module: &str) -> bool {
    !module.is_empty()
        && module.len() <= 200
        && module.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// One kernel in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelEntry {
    pub module: String,
    pub target: KernelTarget,
    /// The `U8` tensor holding its bytes ([`kernel_tensor_name`]).
    pub tensor: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// BLAKE3 of its bytes.
    pub hash: String,
}

/// The compiled kernels, and the launch plan the CUDA runtime follows (opaque here; `null` when the
/// artifact has no kernels).
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelsManifest {
    pub kernels: Vec<KernelEntry>,
    pub plan: serde_json::Value,
}

/// A quantized weight's buffers, stored as separate tensors because safetensors has no quantized dtypes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizedWeight {
    /// The weight's name in the graph.
    pub name: String,
    /// The kiln dtype (`q8c`, `q4g32`, `q4g32z`, ...).
    pub dtype: String,
    /// The logical shape `[n, k]`.
    pub shape: Vec<u64>,
    /// The `U8` (`q4g`) or `I8` (`q8c`) tensor of packed elements: [`quantized_tensor_names`].
    pub data: String,
    /// The `F32` tensor of scales.
    pub scales: String,
    /// The `F32` tensor of zero points (the `z` formats only).
    pub zeros: Option<String>,
}

/// The tensors holding a quantized weight `name`: `(data, scales, zeros)`.
pub fn quantized_tensor_names(name: &str) -> (String, String, String) {
    (format!("{name}::data"), format!("{name}::scales"), format!("{name}::zeros"))
}

/// How the weights are laid out beyond plain tensors.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsManifest {
    /// Every quantized weight; all other non-kernel tensors are plain weights under their own names.
    pub quantized: Vec<QuantizedWeight>,
}

impl QuantizedWeight {
    /// The parsed dtype; an error message when it is not a quantized kiln dtype.
    pub fn kiln_dtype(&self) -> Result<DType, String> {
        let d: DType = self.dtype.parse().map_err(|e| format!("quantized weight `{}`: {e}", self.name))?;
        if !d.is_quantized() {
            return Err(format!("quantized weight `{}` has the plain dtype {d}", self.name));
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_bad_names_explain_the_form() {
        for t in [Target::Cpu, Target::Cuda { sm: 90 }, Target::Cuda { sm: 87 }] {
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
        }
        for bad in ["gpu", "cuda", "cuda:sm_", "cuda:90", "cuda:sm_9x", "cuda:sm_5", "cuda:sm_123456"] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains("cuda:sm_NN"), "{e}");
        }
    }

    #[test]
    fn kernel_targets_name_their_tensors() {
        let k = CompiledKernel { module: "decode_step".into(), target: KernelTarget::Cubin { sm: 90 }, bytes: vec![] };
        assert_eq!(k.tensor_name(), "__kernels__/decode_step.sm_90.cubin");
        assert_eq!(kernel_tensor_name("m", KernelTarget::Ptx), "__kernels__/m.ptx");
        for t in [KernelTarget::Ptx, KernelTarget::Cubin { sm: 87 }] {
            assert_eq!(t.to_string().parse::<KernelTarget>().unwrap(), t);
        }
        assert!("cubin".parse::<KernelTarget>().is_err());
        assert!(is_valid_module_name("gemv_q4g32.v2") && !is_valid_module_name("a/b") && !is_valid_module_name(""));
    }

    #[test]
    fn records_refuse_unknown_fields() {
        let e = serde_json::from_str::<PipelineRecord>(r#"{"name":"O0","passes":[],"disabled":[],"x":1}"#);
        assert!(e.is_err());
        assert!(is_hash_string(&format!("blake3:{INTEGRITY_PLACEHOLDER}")));
        assert!(!is_hash_string("blake3:00") && !is_hash_string(INTEGRITY_PLACEHOLDER));
    }
}
