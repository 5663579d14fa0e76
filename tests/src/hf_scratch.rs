//! Scratch copies of the Hugging Face fixtures for tests that break or rewrite one file, and a minimal
//! safetensors reader/writer so tests can edit headers without trusting the code under test.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// tests/fixtures/hf/<arch>.
pub fn fixture_dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf").join(arch)
}

/// A temporary copy of a fixture directory, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    /// Copies every file of fixture `arch` into a fresh directory named after `test`.
    pub fn copy_of(arch: &str, test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-hf-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        for entry in std::fs::read_dir(fixture_dir(arch)).expect("fixture dir") {
            let entry = entry.expect("dir entry");
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy fixture file");
        }
        Scratch { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn read_json(&self, file: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(file)).expect("read")).expect("parse")
    }

    pub fn write_json(&self, file: &str, v: &Value) {
        std::fs::write(self.path(file), serde_json::to_string_pretty(v).expect("serialise")).expect("write");
    }

    /// Edits config.json in place.
    pub fn edit_config(&self, f: impl FnOnce(&mut Map<String, Value>)) {
        let mut v = self.read_json("config.json");
        f(v.as_object_mut().expect("config is an object"));
        self.write_json("config.json", &v);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A safetensors file split into its JSON header and its data section.
pub struct RawSafetensors {
    pub header: Map<String, Value>,
    pub data: Vec<u8>,
}

impl RawSafetensors {
    pub fn read(path: &Path) -> RawSafetensors {
        let bytes = std::fs::read(path).expect("read safetensors");
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        let header = serde_json::from_slice::<Value>(&bytes[8..8 + n]).expect("header JSON");
        let Value::Object(header) = header else { panic!("header is not an object") };
        RawSafetensors { header, data: bytes[8 + n..].to_vec() }
    }

    pub fn write(&self, path: &Path) {
        let header = serde_json::to_vec(&self.header).expect("serialise header");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&self.data);
        std::fs::write(path, bytes).expect("write safetensors");
    }

    /// Tensor names (without `__metadata__`), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.header.keys().filter(|k| *k != "__metadata__").cloned().collect();
        names.sort();
        names
    }

    pub fn entry(&mut self, name: &str) -> &mut Map<String, Value> {
        self.header.get_mut(name).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("no tensor `{name}`"))
    }

    /// A tensor's data bytes.
    pub fn bytes(&self, name: &str) -> &[u8] {
        let off = self.header[name]["data_offsets"].as_array().expect("offsets");
        let (s, e) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        &self.data[s..e]
    }

    /// Builds a file from tensors given as (name, dtype, shape, bytes), laid out contiguously.
    pub fn from_tensors(tensors: Vec<(String, String, Vec<u64>, Vec<u8>)>) -> RawSafetensors {
        let mut header = Map::new();
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let start = data.len();
            data.extend_from_slice(&bytes);
            header
                .insert(name, serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
        }
        RawSafetensors { header, data }
    }
}
