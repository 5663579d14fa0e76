//! Writes a `.kiln` artifact (the schema is [`kiln_ir::artifact`]): a safetensors file whose tensors are
//! the weights the graph uses and the compiled kernels, with the IR, model facts, pipeline, targets and
//! hashes in its `__metadata__`.
//!
//! Weights are streamed from wherever the weight store holds them (usually an mmap of the source files)
//! straight into the output through a 1 MiB buffer, and hashed on the way, so memory stays flat whatever
//! the model's size. The file is written beside the destination and renamed into place when complete,
//! so a failed or interrupted compile never leaves a half-written artifact behind.

use std::collections::{BTreeSet, HashMap};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kiln_ir::artifact::{
    self, CompiledKernel, FORMAT_NAME, FORMAT_VERSION, INTEGRITY_PLACEHOLDER, KernelEntry, KernelsManifest,
    ModelRecord, PipelineRecord, QuantizedWeight, Target, WeightsManifest, keys,
};
use kiln_ir::{Graph, ModelMeta, Op, WeightPayload, WeightStore};
use safetensors::Dtype as StDtype;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::progress::Progress;

/// Everything that goes into an artifact.
pub struct ArtifactContents<'a> {
    /// The graph as the pipeline left it.
    pub graph: &'a Graph,
    /// The weights; only those the graph names are written.
    pub weights: &'a WeightStore,
    pub meta: &'a ModelMeta,
    pub pipeline: PipelineRecord,
    pub targets: Vec<Target>,
    /// Kernels from the code generators (empty for CPU-only artifacts).
    pub kernels: Vec<CompiledKernel>,
    /// The CUDA runtime's launch plan (`null` without kernels).
    pub kernel_plan: serde_json::Value,
    /// The content hash of the inputs and options (see [`crate::compile::content_hash`]).
    pub content_hash: String,
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct WrittenArtifact {
    pub path: PathBuf,
    /// Size of the file.
    pub bytes: u64,
    pub integrity_hash: String,
    /// Elements of every weight written.
    pub parameters: u64,
}

/// Why an artifact could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write the artifact: {0}")]
    Contents(String),
}

/// One tensor of the output: its safetensors header entry and where its bytes come from.
struct OutTensor<'a> {
    name: String,
    dtype: StDtype,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

/// Writes `contents` to `path` (replacing it only once the new file is complete).
pub fn write_artifact(
    path: &Path,
    contents: &ArtifactContents<'_>,
    progress: &Progress,
) -> Result<WrittenArtifact, WriteError> {
    let bad = |m: String| WriteError::Contents(m);
    if !artifact::is_hash_string(&contents.content_hash) {
        return Err(bad(format!("content hash `{}` is not `blake3:` and 64 hex digits", contents.content_hash)));
    }
    if contents.targets.is_empty() {
        return Err(bad("no targets: give at least one (cpu, cuda:sm_NN)".to_string()));
    }

    let used: BTreeSet<&str> = contents
        .graph
        .nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::Weight { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut tensors: Vec<OutTensor<'_>> = Vec::new();
    let mut quantized = Vec::new();
    let mut parameters = 0u64;
    for (name, w) in contents.weights.iter().filter(|(name, _)| used.contains(name)) {
        parameters += w.ty.shape.num_elements().unwrap_or(0);
        let dims = w.ty.shape.as_static().ok_or_else(|| bad(format!("weight `{name}` has a non-static shape")))?;
        match &w.payload {
            WeightPayload::Dense(b) => {
                let dtype = kiln_runtime::artifact::safetensors_dtype(w.ty.dtype).ok_or_else(|| {
                    if w.ty.dtype.is_storage_only() {
                        bad(format!(
                            "weight `{name}` has dtype {}, which a .kiln artifact does not store (safetensors has \
                             no such dtype); keep it a graph constant or cast it to a plain dtype first",
                            w.ty.dtype
                        ))
                    } else {
                        bad(format!("weight `{name}` has dtype {} but dense bytes", w.ty.dtype))
                    }
                })?;
                tensors.push(OutTensor { name: name.to_string(), dtype, shape: dims, bytes: b.as_slice() });
            }
            WeightPayload::Quantized { data, scales, zeros } => {
                let (data_name, scales_name, zeros_name) = artifact::quantized_tensor_names(name);
                tensors.push(OutTensor {
                    name: data_name.clone(),
                    dtype: StDtype::U8,
                    shape: vec![data.len()],
                    bytes: data.as_slice(),
                });
                tensors.push(OutTensor {
                    name: scales_name.clone(),
                    dtype: StDtype::F32,
                    shape: vec![scales.len() / 4],
                    bytes: scales.as_slice(),
                });
                if let Some(z) = zeros {
                    tensors.push(OutTensor {
                        name: zeros_name.clone(),
                        dtype: StDtype::F32,
                        shape: vec![z.len() / 4],
                        bytes: z.as_slice(),
                    });
                }
                quantized.push(QuantizedWeight {
                    name: name.to_string(),
                    dtype: w.ty.dtype.to_string(),
                    shape: dims.iter().map(|&d| d as u64).collect(),
                    data: data_name,
                    scales: scales_name,
                    zeros: zeros.as_ref().map(|_| zeros_name),
                });
            }
        }
    }
    let mut kernel_entries = Vec::new();
    for k in &contents.kernels {
        if !artifact::is_valid_module_name(&k.module) {
            return Err(bad(format!(
                "kernel module name `{}` must be letters, digits, `_`, `-` and `.` (it becomes a tensor name)",
                k.module
            )));
        }
        let tensor = k.tensor_name();
        kernel_entries.push(KernelEntry {
            module: k.module.clone(),
            target: k.target,
            tensor: tensor.clone(),
            bytes: k.bytes.len() as u64,
            hash: format!("blake3:{}", blake3::hash(&k.bytes).to_hex()),
        });
        tensors.push(OutTensor { name: tensor, dtype: StDtype::U8, shape: vec![k.bytes.len()], bytes: &k.bytes });
    }
    let mut names = BTreeSet::new();
    if let Some(dup) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(bad(format!("two tensors would both be named `{}`", dup.name)));
    }
    // Widest elements first, so every tensor starts aligned to its element size (the data section
    // starts 8-aligned); then by name, so the layout is deterministic.
    tensors.sort_by(|a, b| b.dtype.bitsize().cmp(&a.dtype.bitsize()).then_with(|| a.name.cmp(&b.name)));

    let meta = contents.meta;
    let record = ModelRecord {
        architecture: meta.architecture.clone(),
        source: meta.source.clone(),
        bos_token_id: meta.bos_token_id,
        eos_token_ids: meta.eos_token_ids.clone(),
        max_position: meta.max_position,
        vocab_size: meta.vocab_size,
        parameters,
    };
    let mut metadata: HashMap<String, String> = HashMap::from([
        (keys::FORMAT.to_string(), FORMAT_NAME.to_string()),
        (keys::FORMAT_VERSION.to_string(), FORMAT_VERSION.to_string()),
        (keys::WRITER.to_string(), format!("kiln {}", env!("CARGO_PKG_VERSION"))),
        (keys::IR.to_string(), kiln_ir::text::print(contents.graph)),
        (keys::MODEL.to_string(), json(&record)),
        (keys::PIPELINE.to_string(), json(&contents.pipeline)),
        (keys::TARGETS.to_string(), json(&contents.targets)),
        (keys::WEIGHTS.to_string(), json(&WeightsManifest { quantized })),
        (
            keys::KERNELS.to_string(),
            json(&KernelsManifest { kernels: kernel_entries, plan: contents.kernel_plan.clone() }),
        ),
        (keys::CONTENT_HASH.to_string(), contents.content_hash.clone()),
        (keys::INTEGRITY.to_string(), format!("blake3:{INTEGRITY_PLACEHOLDER}")),
    ]);
    for (key, text) in [
        (keys::CONFIG, &meta.config_json),
        (keys::TOKENIZER, &meta.tokenizer_json),
        (keys::CHAT_TEMPLATE, &meta.chat_template),
    ] {
        if let Some(text) = text {
            metadata.insert(key.to_string(), text.clone());
        }
    }

    let mut offset = 0;
    let mut infos = Vec::with_capacity(tensors.len());
    for t in &tensors {
        infos.push((
            t.name.clone(),
            TensorInfo { dtype: t.dtype, shape: t.shape.clone(), data_offsets: (offset, offset + t.bytes.len()) },
        ));
        offset += t.bytes.len();
    }
    let header = Metadata::new(Some(metadata), infos).map_err(|e| bad(format!("invalid tensor table: {e}")))?;
    let mut header = serde_json::to_string(&header).map_err(|e| bad(e.to_string()))?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() as u64 > kiln_runtime::artifact::MAX_HEADER_BYTES {
        return Err(bad(format!(
            "the metadata takes {} bytes, more than the {} a safetensors header may have (is the tokenizer that large?)",
            header.len(),
            kiln_runtime::artifact::MAX_HEADER_BYTES
        )));
    }
    let digits = kiln_runtime::artifact::integrity_digits(
        &[&(header.len() as u64).to_le_bytes()[..], &header].concat(),
        8..8 + header.len(),
    )
    .expect("the writer emits the integrity key once, in compact JSON");

    let tmp = temp_path(path);
    let io = |e: std::io::Error| WriteError::Io { path: path.to_path_buf(), source: e };
    let total = 8 + header.len() as u64 + offset as u64;
    let bar = progress.bytes_bar(total, "writing");
    let written = (|| -> std::io::Result<String> {
        let file = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = blake3::Hasher::new();
        let mut put = |out: &mut std::io::BufWriter<std::fs::File>, bytes: &[u8]| -> std::io::Result<()> {
            hasher.update(bytes);
            out.write_all(bytes)?;
            bar.inc(bytes.len() as u64);
            Ok(())
        };
        put(&mut out, &(header.len() as u64).to_le_bytes())?;
        put(&mut out, &header)?;
        for t in &tensors {
            // In slices, so that the bar moves within a large tensor too.
            for chunk in t.bytes.chunks(16 << 20) {
                put(&mut out, chunk)?;
            }
        }
        let hash = hasher.finalize().to_hex().to_string();
        let mut file = out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(digits.start as u64))?;
        file.write_all(hash.as_bytes())?;
        file.flush()?;
        Ok(format!("blake3:{hash}"))
    })();
    bar.finish_and_clear();
    let integrity_hash = match written {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
    };
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })?;
    Ok(WrittenArtifact { path: path.to_path_buf(), bytes: total, integrity_hash, parameters })
}

/// `dir/.NAME.partial-<pid>` beside `path`, on the same file system so the rename is atomic.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Compact JSON of a metadata record.
fn json<T: serde::Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("metadata records are plain data and always serialize")
}

#[cfg(test)]
mod tests {
    use kiln_ir::{DType, LowBitType, Tensor, TensorData, TensorType, WeightBytes};

    use super::*;

    fn contents<'a>(graph: &'a Graph, weights: &'a WeightStore, meta: &'a ModelMeta) -> ArtifactContents<'a> {
        ArtifactContents {
            graph,
            weights,
            meta,
            pipeline: PipelineRecord { name: "O0".into(), passes: vec![], disabled: vec![] },
            targets: vec![Target::Cpu],
            kernels: vec![],
            kernel_plan: serde_json::Value::Null,
            content_hash: format!("blake3:{}", "cd".repeat(32)),
        }
    }

    #[test]
    fn low_bit_weights_are_refused_naming_the_dtype_and_low_bit_constants_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let meta = ModelMeta::default();
        let f8 = DType::LowBit(LowBitType::F8E4M3FN);

        // A weight of a low-bit dtype: refused, naming the weight and its dtype.
        let mut weights = WeightStore::new();
        let ty = TensorType::of(f8, &[2]);
        weights.insert("w", ty.clone(), WeightPayload::Dense(WeightBytes::from_vec(vec![0x38, 0x7e]))).unwrap();
        let mut g = Graph::new("w");
        let w = g.add_node(Op::Weight { name: "w".into() }, vec![], vec![ty])[0];
        let y = g.add_node(Op::cast(DType::F32), vec![w], vec![TensorType::of(DType::F32, &[2])])[0];
        g.set_outputs(vec![y]);
        let e = write_artifact(&dir.path().join("w.kiln"), &contents(&g, &weights, &meta), &Progress::hidden())
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight `w` has dtype f8e4m3fn, which a .kiln artifact does not store"), "{e}");

        // The same values as a constant live in the IR text and come back exactly.
        let value = Tensor::new(vec![2], TensorData::LowBit(LowBitType::F8E4M3FN, vec![0x38, 0x7e])).unwrap();
        let mut g = Graph::new("c");
        let c = g.add_node(Op::Constant { value: value.clone() }, vec![], vec![value.ty()])[0];
        let y = g.add_node(Op::cast(DType::F32), vec![c], vec![TensorType::of(DType::F32, &[2])])[0];
        g.set_outputs(vec![y]);
        let path = dir.path().join("c.kiln");
        write_artifact(&path, &contents(&g, &WeightStore::new(), &meta), &Progress::hidden()).unwrap();
        let loaded = kiln_runtime::Artifact::load(&path).unwrap();
        assert_eq!(loaded.graph().constant_value(kiln_ir::ValueId(0)), Some(&value));
    }
}
