//! The ONNX exports under tests/fixtures/onnx/: graphs exported by tools/export_onnx.py with
//! `--detach-weights`, whose weights live in an external data file that is not committed. This rebuilds
//! that file from the Hugging Face safetensors the export came from, with the manifest the export wrote
//! (`model.weights.json`: for each initializer its source tensor, whether it is transposed, its offset and
//! length; float32 little-endian), so CI gets the exact exported model without torch.

use std::path::{Path, PathBuf};

use kiln_ir::TensorData;
use serde_json::Value;

/// The committed export `tests/fixtures/onnx/<name>/`.
pub fn fixture_dir(name: &str) -> PathBuf {
    // Relative to the crate, so this file also compiles into the `kiln` crate's tests (tools/tests/).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/onnx").join(name)
}

/// Copies the export `fixture` (a directory with model.onnx and model.weights.json) into `out_dir` and
/// writes its external data there from `source_dir/model.safetensors`. Returns the path of the model.
/// Reuses `out_dir` when it already holds this export (same graph bytes and data length).
pub fn materialize(fixture: &Path, source_dir: &Path, out_dir: &Path) -> PathBuf {
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture.join("model.weights.json")).expect("the export has a weights manifest"),
    )
    .expect("the manifest is JSON");
    let graph = std::fs::read(fixture.join("model.onnx")).expect("the export has model.onnx");
    let data_name = manifest["data_file"].as_str().expect("data_file");
    let tensors = manifest["tensors"].as_array().expect("tensors");
    let total: u64 = tensors.iter().map(|t| t["length"].as_u64().expect("length")).sum();

    let model = out_dir.join("model.onnx");
    let data = out_dir.join(data_name);
    let up_to_date =
        std::fs::read(&model).is_ok_and(|g| g == graph) && std::fs::metadata(&data).is_ok_and(|m| m.len() == total);
    if up_to_date {
        return model;
    }
    std::fs::create_dir_all(out_dir).expect("the output directory can be created");
    let source = source_dir.join(manifest["source"].as_str().expect("source"));
    let store = kiln_frontends::safetensors_weights::load_safetensors(&source)
        .unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let mut bytes = Vec::with_capacity(total as usize);
    for t in tensors {
        let name = t["source"].as_str().expect("source tensor");
        assert_eq!(t["offset"].as_u64(), Some(bytes.len() as u64), "the manifest lists tensors in file order");
        let w = store.get(name).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        let tensor = w.to_tensor();
        let values: Vec<f32> = match tensor.data() {
            TensorData::F32(v) => v.clone(),
            _ => tensor.to_f32_vec(),
        };
        let values = if t["transposed"].as_bool() == Some(true) {
            let [rows, cols] = tensor.shape()[..] else { panic!("{name}: only matrices are stored transposed") };
            let mut out = vec![0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
            out
        } else {
            values
        };
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(bytes.len() as u64, t["offset"].as_u64().unwrap() + t["length"].as_u64().unwrap(), "{name}");
    }
    // Data first, then the graph: a crash in between leaves a graph that does not match, so the next run
    // rebuilds.
    std::fs::write(&data, bytes).expect("the data file can be written");
    std::fs::write(&model, graph).expect("the graph can be written");
    model
}
