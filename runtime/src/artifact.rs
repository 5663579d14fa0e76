//! The `.kiln` artifact loader: memory-maps (or borrows) the file, validates every size, offset, dtype,
//! shape, hash and record against the file before anything uses it, and hands out the graph, a
//! [`WeightStore`] whose weights are ranges of the file (never copied), the model's metadata and the
//! compiled kernels. The schema is [`kiln_ir::artifact`].
//!
//! Order of the checks, so that each failure gets the most useful message: the safetensors framing
//! (header length, JSON, tensor offsets inside the file; the `safetensors` crate), that the file is a
//! kiln artifact, its format version (a newer one is refused as such, before anything else of it is
//! read), the integrity hash over every byte, then the records, the weights, the kernels, and last the
//! IR text, parsed and verified against the weights.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_ir::artifact::{
    self, FORMAT_NAME, FORMAT_VERSION, INTEGRITY_PLACEHOLDER, KERNEL_TENSOR_PREFIX, KernelEntry, KernelTarget,
    KernelsManifest, ModelRecord, PipelineRecord, Target, WeightsManifest, keys,
};
use kiln_ir::{DType, Graph, ModelMeta, Shape, TensorType, WeightBytes, WeightPayload, WeightStore};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype as StDtype, SafeTensorError, SafeTensors};

/// The largest header the loader reads: the limit of the `safetensors` format itself.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Why an artifact cannot be loaded. Every variant says what is wrong and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// An error in the named file.
    #[error("{}: {error}", path.display())]
    InFile { path: PathBuf, error: Box<ArtifactError> },
    /// The safetensors framing is broken (truncated file, bad header, offsets outside the data).
    #[error("not a valid artifact: {0}")]
    Framing(String),
    /// A valid safetensors file without the kiln metadata.
    #[error(
        "this safetensors file is not a kiln artifact ({0}); compile a model into one with `kiln compile MODEL -o OUT.kiln`"
    )]
    NotKiln(String),
    #[error(
        "this artifact has format version {found}, newer than the newest this kiln reads ({supported}); update kiln, \
         or compile the model again with this version"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error(
        "the artifact's data does not match its integrity hash (stored {stored}, computed {computed}): the file is corrupt or was modified after `kiln compile` wrote it; compile it again"
    )]
    Integrity { stored: String, computed: String },
    /// A metadata entry that is missing or does not parse.
    #[error("metadata entry `{key}`: {message}")]
    Metadata { key: String, message: String },
    #[error("the IR text (metadata `{}`) does not parse: line {line}, column {column}: {message}", keys::IR)]
    Ir { line: usize, column: usize, message: String },
    #[error("the graph in the artifact is invalid:\n{0}")]
    Verify(kiln_ir::VerifyErrors),
    #[error("weights: {0}")]
    Weights(String),
    #[error("kernels: {0}")]
    Kernels(String),
}

impl ArtifactError {
    /// The error without the file it happened in.
    pub fn innermost(&self) -> &ArtifactError {
        match self {
            ArtifactError::InFile { error, .. } => error.innermost(),
            other => other,
        }
    }
}

/// The safetensors dtype that stores a plain kiln dtype (`None` for quantized formats, which are stored as
/// packed buffers, and for the storage-only dtypes — low-bit formats and strings — which the artifact does
/// not store: safetensors has no FNUZ, E2M1-unpacked or sub-byte integer dtype, and no strings).
pub fn safetensors_dtype(dtype: DType) -> Option<StDtype> {
    Some(match dtype {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F64 => StDtype::F64,
        DType::I64 => StDtype::I64,
        DType::I32 => StDtype::I32,
        DType::I16 => StDtype::I16,
        DType::I8 => StDtype::I8,
        DType::U8 => StDtype::U8,
        DType::U16 => StDtype::U16,
        DType::U32 => StDtype::U32,
        DType::U64 => StDtype::U64,
        DType::Bool => StDtype::BOOL,
        DType::Q8C | DType::Q4G { .. } | DType::LowBit(_) | DType::Str => return None,
    })
}

/// The kiln dtype of a safetensors dtype (`None` for those kiln has no equivalent of).
pub fn kiln_dtype(dtype: StDtype) -> Option<DType> {
    Some(match dtype {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        StDtype::I64 => DType::I64,
        StDtype::I32 => DType::I32,
        StDtype::I16 => DType::I16,
        StDtype::I8 => DType::I8,
        StDtype::U8 => DType::U8,
        StDtype::U16 => DType::U16,
        StDtype::U32 => DType::U32,
        StDtype::U64 => DType::U64,
        StDtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Where the integrity hash's 64 hex digits sit in the file: after `"kiln.integrity":"blake3:` in the
/// header, which must occur exactly once (the writer emits compact JSON; anything else is refused).
pub fn integrity_digits(file: &[u8], header: Range<usize>) -> Option<Range<usize>> {
    let needle = format!("\"{}\":\"blake3:", keys::INTEGRITY);
    let h = &file[header.clone()];
    let mut found = h.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle.as_bytes()).map(|(i, _)| i);
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let start = header.start + first + needle.len();
    let end = start + INTEGRITY_PLACEHOLDER.len();
    (end < header.end && file[end] == b'"').then_some(start..end)
}

/// BLAKE3 of `file` with the bytes in `digits` read as the placeholder `0`s.
pub fn integrity_hash(file: &[u8], digits: Range<usize>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&file[..digits.start]);
    h.update(INTEGRITY_PLACEHOLDER.as_bytes());
    // Large models hash on every core; the hash covers every byte, so loading reads the whole file once.
    h.update_rayon(&file[digits.end..]);
    format!("blake3:{}", h.finalize().to_hex())
}

/// A compiled kernel inside the artifact.
#[derive(Clone, Copy, Debug)]
pub struct KernelRef<'a> {
    pub module: &'a str,
    pub target: KernelTarget,
    pub bytes: &'a [u8],
}

/// A loaded, validated artifact.
pub struct Artifact {
    bytes: Arc<dyn AsRef<[u8]> + Send + Sync>,
    format_version: u32,
    writer: Option<String>,
    graph: Graph,
    ir_text: String,
    weights: WeightStore,
    meta: ModelMeta,
    record: ModelRecord,
    pipeline: PipelineRecord,
    targets: Vec<Target>,
    kernels: Vec<(KernelEntry, Range<usize>)>,
    kernel_plan: serde_json::Value,
    content_hash: String,
    integrity_hash: String,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("bytes", &self.file_len())
            .field("graph", &self.graph.name)
            .field("weights", &self.weights.len())
            .field("kernels", &self.kernels.len())
            .field("content_hash", &self.content_hash)
            .finish()
    }
}

impl Artifact {
    /// Memory-maps and validates the artifact at `path`.
    pub fn load(path: &Path) -> Result<Artifact, ArtifactError> {
        let io = |e: std::io::Error| ArtifactError::Io { path: path.to_path_buf(), source: e };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only. A file truncated by another process while mapped can fault;
        // that is the documented limitation of every mmap-based loader and the price of not copying
        // multi-gigabyte weights. Everything read from it is validated first.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Artifact::from_bytes(mmap)
            .map_err(|error| ArtifactError::InFile { path: path.to_path_buf(), error: Box::new(error) })
    }

    /// Validates an artifact held in memory: an embedded `&'static [u8]` (`include_bytes!`), a `Vec<u8>`,
    /// an mmap. Weights are ranges of `bytes`, never copied.
    pub fn from_bytes(bytes: impl AsRef<[u8]> + Send + Sync + 'static) -> Result<Artifact, ArtifactError> {
        let bytes: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(bytes);
        let file: &[u8] = (*bytes).as_ref();
        let (header, st) = framing(file)?;
        let meta_map = st.metadata().clone().unwrap_or_default();
        let entry = |key: &str| meta_map.get(key).map(String::as_str);
        let required = |key: &str| {
            entry(key).ok_or_else(|| ArtifactError::Metadata {
                key: key.to_string(),
                message: "missing; the artifact is incomplete (compile it again)".to_string(),
            })
        };

        match entry(keys::FORMAT) {
            Some(FORMAT_NAME) => {}
            Some(other) => return Err(ArtifactError::NotKiln(format!("`{}` is `{other}`", keys::FORMAT))),
            None => return Err(ArtifactError::NotKiln(format!("its metadata has no `{}`", keys::FORMAT))),
        }
        let version_text = required(keys::FORMAT_VERSION)?;
        let format_version: u32 = version_text.parse().map_err(|_| ArtifactError::Metadata {
            key: keys::FORMAT_VERSION.to_string(),
            message: format!("`{version_text}` is not a version number"),
        })?;
        if format_version > FORMAT_VERSION {
            return Err(ArtifactError::NewerFormat { found: format_version, supported: FORMAT_VERSION });
        }
        if format_version == 0 {
            return Err(ArtifactError::Metadata {
                key: keys::FORMAT_VERSION.to_string(),
                message: "version 0 does not exist".to_string(),
            });
        }

        let stored = required(keys::INTEGRITY)?;
        let digits =
            integrity_digits(file, header.clone()).filter(|_| artifact::is_hash_string(stored)).ok_or_else(|| {
                ArtifactError::Metadata {
                    key: keys::INTEGRITY.to_string(),
                    message: "not a hash written by kiln (`blake3:` and 64 hex digits, once in the header)".to_string(),
                }
            })?;
        let computed = integrity_hash(file, digits);
        if computed != stored {
            return Err(ArtifactError::Integrity { stored: stored.to_string(), computed });
        }

        let json = |key: &str| -> Result<serde_json::Value, ArtifactError> {
            serde_json::from_str(required(key)?)
                .map_err(|e| ArtifactError::Metadata { key: key.to_string(), message: format!("not valid JSON: {e}") })
        };
        fn record<T: serde::de::DeserializeOwned>(key: &str, v: serde_json::Value) -> Result<T, ArtifactError> {
            serde_json::from_value(v)
                .map_err(|e| ArtifactError::Metadata { key: key.to_string(), message: e.to_string() })
        }
        let model: ModelRecord = record(keys::MODEL, json(keys::MODEL)?)?;
        let pipeline: PipelineRecord = record(keys::PIPELINE, json(keys::PIPELINE)?)?;
        let targets: Vec<Target> = record(keys::TARGETS, json(keys::TARGETS)?)?;
        if targets.is_empty() {
            return Err(ArtifactError::Metadata {
                key: keys::TARGETS.to_string(),
                message: "the list of targets is empty".to_string(),
            });
        }
        let weights_manifest: WeightsManifest = record(keys::WEIGHTS, json(keys::WEIGHTS)?)?;
        let kernels_manifest: KernelsManifest = record(keys::KERNELS, json(keys::KERNELS)?)?;
        let content_hash = required(keys::CONTENT_HASH)?.to_string();
        if !artifact::is_hash_string(&content_hash) {
            return Err(ArtifactError::Metadata {
                key: keys::CONTENT_HASH.to_string(),
                message: format!("`{content_hash}` is not `blake3:` and 64 hex digits"),
            });
        }

        let infos: BTreeMap<String, TensorInfo> =
            st.tensors().into_iter().map(|(name, info)| (name, info.clone())).collect();
        let data_start = header.end;
        let range_of = |info: &TensorInfo| data_start + info.data_offsets.0..data_start + info.data_offsets.1;
        let (weights, claimed) = weight_store(&bytes, &infos, &weights_manifest, &range_of)?;
        let kernels = kernels(file, &infos, &kernels_manifest, &range_of)?;
        let unclaimed: Vec<&String> = infos
            .keys()
            .filter(|n| n.starts_with(KERNEL_TENSOR_PREFIX) && !kernels.iter().any(|(k, _)| &k.tensor == *n))
            .collect();
        if let Some(name) = unclaimed.first() {
            return Err(ArtifactError::Kernels(format!("tensor `{name}` is not listed in the kernels manifest")));
        }
        debug_assert!(claimed.iter().all(|n| infos.contains_key(n)));

        let ir_text = required(keys::IR)?.to_string();
        let graph = kiln_ir::text::parse(&ir_text).map_err(|e| ArtifactError::Ir {
            line: e.line,
            column: e.column,
            message: e.message,
        })?;
        kiln_ir::verify(&graph, Some(&weights)).map_err(ArtifactError::Verify)?;

        let meta = ModelMeta {
            architecture: model.architecture.clone(),
            source: model.source.clone(),
            config_json: entry(keys::CONFIG).map(str::to_string),
            tokenizer_json: entry(keys::TOKENIZER).map(str::to_string),
            chat_template: entry(keys::CHAT_TEMPLATE).map(str::to_string),
            bos_token_id: model.bos_token_id,
            eos_token_ids: model.eos_token_ids.clone(),
            max_position: model.max_position,
            vocab_size: model.vocab_size,
        };
        let writer = entry(keys::WRITER).map(str::to_string);
        let integrity_hash = stored.to_string();
        drop(st);
        Ok(Artifact {
            bytes,
            format_version,
            writer,
            graph,
            ir_text,
            weights,
            meta,
            record: model,
            pipeline,
            targets,
            kernels,
            kernel_plan: kernels_manifest.plan,
            content_hash,
            integrity_hash,
        })
    }

    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// The version of kiln that wrote the file, if it said.
    pub fn writer(&self) -> Option<&str> {
        self.writer.as_deref()
    }

    /// The decoder graph, as the pipeline left it.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The IR text as stored.
    pub fn ir_text(&self) -> &str {
        &self.ir_text
    }

    /// The weights: ranges of the artifact's bytes.
    pub fn weights(&self) -> &WeightStore {
        &self.weights
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    pub fn record(&self) -> &ModelRecord {
        &self.record
    }

    pub fn pipeline(&self) -> &PipelineRecord {
        &self.pipeline
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// The compiled kernels, in manifest order.
    pub fn kernels(&self) -> impl Iterator<Item = KernelRef<'_>> {
        let file: &[u8] = (*self.bytes).as_ref();
        self.kernels.iter().map(move |(entry, range)| KernelRef {
            module: &entry.module,
            target: entry.target,
            bytes: &file[range.clone()],
        })
    }

    /// The manifest entries of the kernels (with their hashes and tensor names).
    pub fn kernel_entries(&self) -> impl Iterator<Item = &KernelEntry> {
        self.kernels.iter().map(|(e, _)| e)
    }

    /// The CUDA runtime's launch plan (`null` without kernels).
    pub fn kernel_plan(&self) -> &serde_json::Value {
        &self.kernel_plan
    }

    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    pub fn integrity_hash(&self) -> &str {
        &self.integrity_hash
    }

    /// Size of the artifact in bytes.
    pub fn file_len(&self) -> usize {
        (*self.bytes).as_ref().len()
    }

    /// The model as the compiler's IR types describe it (graph, weights sharing the artifact's bytes,
    /// metadata), for tools that treat an artifact like an imported model.
    pub fn to_ir_model(&self) -> kiln_ir::Model {
        kiln_ir::Model { graph: self.graph.clone(), weights: self.weights.clone(), meta: self.meta.clone() }
    }
}

/// Checks the safetensors framing with clear messages for the common failures, then lets the
/// `safetensors` crate validate every tensor's offsets and size. Returns the header's byte range.
fn framing(file: &[u8]) -> Result<(Range<usize>, Metadata), ArtifactError> {
    let bad = |m: String| ArtifactError::Framing(m);
    let Some(len_bytes) = file.get(..8) else {
        return Err(bad(format!(
            "the file has {} bytes, fewer than the 8-byte header length that starts every artifact (it is truncated)",
            file.len()
        )));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "the header length field says {n} bytes, more than the {MAX_HEADER_BYTES} a safetensors header may have: \
             the file is corrupt or not an artifact"
        )));
    }
    let n = n as usize;
    if 8 + n > file.len() {
        return Err(bad(format!(
            "the header length field says {n} bytes but only {} follow it: the file is truncated",
            file.len() - 8
        )));
    }
    let (_, metadata) = SafeTensors::read_metadata(file).map_err(|e| bad(explain(&e, file.len(), n)))?;
    Ok((8..8 + n, metadata))
}

fn explain(e: &SafeTensorError, file_len: usize, header_len: usize) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "the tensors' data offsets do not end where the file ends ({} bytes of data after the header): the file \
             is truncated, has bytes appended, or its offsets point outside it",
            file_len - 8 - header_len
        ),
        SafeTensorError::InvalidHeaderDeserialization(json) => format!("the header is not valid JSON: {json}"),
        SafeTensorError::InvalidHeader(utf8) => format!("the header is not UTF-8: {utf8}"),
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor `{name}` has data offsets that overlap, leave a gap, or run backwards")
        }
        other => format!("{other}"),
    }
}

/// Builds the weight store: plain tensors under their names, quantized weights from their buffers.
/// Returns the store and the names of the tensors it used.
fn weight_store(
    bytes: &Arc<dyn AsRef<[u8]> + Send + Sync>,
    infos: &BTreeMap<String, TensorInfo>,
    manifest: &WeightsManifest,
    range_of: &dyn Fn(&TensorInfo) -> Range<usize>,
) -> Result<(WeightStore, BTreeSet<String>), ArtifactError> {
    let bad = |m: String| ArtifactError::Weights(m);
    let mut store = WeightStore::new();
    let mut claimed = BTreeSet::new();
    let slice = |name: &str, want: &[StDtype]| -> Result<WeightBytes, ArtifactError> {
        let info = infos.get(name).ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
        if !want.contains(&info.dtype) || info.shape.len() != 1 {
            return Err(bad(format!(
                "tensor `{name}` is {:?}{:?}, not a one-dimensional {:?} buffer",
                info.dtype, info.shape, want
            )));
        }
        WeightBytes::new(bytes.clone(), range_of(info)).map_err(|e| bad(format!("tensor `{name}`: {e}")))
    };
    for q in &manifest.quantized {
        let dtype = q.kiln_dtype().map_err(bad)?;
        let ty = TensorType::new(dtype, Shape::of(&q.shape));
        let data = slice(&q.data, &[StDtype::U8, StDtype::I8])?;
        let scales = slice(&q.scales, &[StDtype::F32])?;
        let zeros = q.zeros.as_deref().map(|z| slice(z, &[StDtype::F32])).transpose()?;
        for part in [Some(&q.data), Some(&q.scales), q.zeros.as_ref()].into_iter().flatten() {
            if !claimed.insert(part.clone()) {
                return Err(bad(format!("tensor `{part}` is claimed by two quantized weights")));
            }
        }
        store
            .insert(q.name.clone(), ty, WeightPayload::Quantized { data, scales, zeros })
            .map_err(|e| bad(e.to_string()))?;
    }
    for (name, info) in infos {
        if claimed.contains(name) || name.starts_with(KERNEL_TENSOR_PREFIX) {
            continue;
        }
        let dtype = kiln_dtype(info.dtype)
            .ok_or_else(|| bad(format!("tensor `{name}` has dtype {:?}, which kiln cannot hold", info.dtype)))?;
        let dims: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        let data = WeightBytes::new(bytes.clone(), range_of(info)).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        store
            .insert(name.clone(), TensorType::new(dtype, Shape::of(&dims)), WeightPayload::Dense(data))
            .map_err(|e| bad(e.to_string()))?;
        claimed.insert(name.clone());
    }
    Ok((store, claimed))
}

/// Checks every manifest entry against its tensor (name, dtype, length, hash).
fn kernels(
    file: &[u8],
    infos: &BTreeMap<String, TensorInfo>,
    manifest: &KernelsManifest,
    range_of: &dyn Fn(&TensorInfo) -> Range<usize>,
) -> Result<Vec<(KernelEntry, Range<usize>)>, ArtifactError> {
    let bad = |m: String| ArtifactError::Kernels(m);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for k in &manifest.kernels {
        if !artifact::is_valid_module_name(&k.module) {
            return Err(bad(format!("`{}` is not a valid kernel module name", k.module)));
        }
        let expected = artifact::kernel_tensor_name(&k.module, k.target);
        if k.tensor != expected {
            return Err(bad(format!(
                "module `{}` ({}) must be in tensor `{expected}`, not `{}`",
                k.module, k.target, k.tensor
            )));
        }
        if !seen.insert(k.tensor.clone()) {
            return Err(bad(format!("tensor `{}` is listed twice", k.tensor)));
        }
        let info = infos.get(&k.tensor).ok_or_else(|| bad(format!("tensor `{}` is missing", k.tensor)))?;
        if info.dtype != StDtype::U8 || info.shape.len() != 1 || info.shape[0] as u64 != k.bytes {
            return Err(bad(format!(
                "tensor `{}` is {:?}{:?}, not the U8[{}] the manifest lists",
                k.tensor, info.dtype, info.shape, k.bytes
            )));
        }
        let range = range_of(info);
        let hash = format!("blake3:{}", blake3::hash(&file[range.clone()]).to_hex());
        if hash != k.hash {
            return Err(bad(format!("the bytes of `{}` do not match the manifest's hash", k.tensor)));
        }
        out.push((k.clone(), range));
    }
    Ok(out)
}
