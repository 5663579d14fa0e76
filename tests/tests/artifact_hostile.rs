//! Hostile `.kiln` artifacts: truncated, bit-flipped, re-signed with broken contents, absurd header
//! lengths, offsets outside the file, bad JSON, bad IR, a newer format version. Each must be refused with
//! an error that names the problem, never a panic or an out-of-bounds read.
//!
//! Files whose integrity hash would catch the damage first are also *re-signed* (the hash recomputed
//! after the edit, as an attacker could), so that the checks behind the hash are exercised too.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln_ir::artifact::{INTEGRITY_PLACEHOLDER, keys};
use kiln_runtime::artifact::{integrity_digits, integrity_hash};
use kiln_runtime::{Artifact, ArtifactError, Model};
use serde_json::Value;

/// The tiny example model compiled once into an artifact; its bytes.
fn artifact_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kiln-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("tiny.kiln");
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-llama.kir");
        kiln::compile(&model, &out, &kiln::CompileOptions::default(), &kiln::Progress::hidden()).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        bytes
    })
}

fn load(bytes: Vec<u8>) -> Result<Artifact, ArtifactError> {
    Artifact::from_bytes(bytes)
}

fn err(bytes: Vec<u8>) -> String {
    match load(bytes) {
        Ok(_) => panic!("a hostile artifact loaded"),
        Err(e) => e.to_string(),
    }
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// The header as JSON and the data section.
fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = header_len(bytes);
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), bytes[8 + n..].to_vec())
}

/// Reassembles a file from a header and data, as they are.
fn reassemble(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut h = serde_json::to_vec(header).unwrap();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut file = (h.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&h);
    file.extend_from_slice(data);
    file
}

/// Reassembles a file from a header and data and signs it with a correct integrity hash.
fn resign(mut header: Value, data: &[u8]) -> Vec<u8> {
    header["__metadata__"][keys::INTEGRITY] = Value::String(format!("blake3:{INTEGRITY_PLACEHOLDER}"));
    let mut file = reassemble(&header, data);
    let h_len = header_len(&file);
    let digits = integrity_digits(&file, 8..8 + h_len).expect("one integrity entry");
    let hash = integrity_hash(&file, digits.clone());
    file[digits].copy_from_slice(hash.strip_prefix("blake3:").unwrap().as_bytes());
    file
}

/// A re-signed copy with one metadata entry replaced.
fn with_metadata(key: &str, value: &str) -> Vec<u8> {
    let (mut header, data) = split(artifact_bytes());
    header["__metadata__"][key] = Value::String(value.to_string());
    resign(header, &data)
}

#[test]
fn the_unmodified_artifact_loads_and_resigning_it_changes_nothing() {
    let a = load(artifact_bytes().to_vec()).unwrap();
    assert_eq!(a.graph().name, "tiny_llama");
    let (header, data) = split(artifact_bytes());
    // The helper itself must produce loadable files, or every re-signed test below proves nothing.
    load(resign(header, &data)).unwrap();
}

#[test]
fn truncation_at_any_point_is_an_error() {
    let full = artifact_bytes();
    let header_end = 8 + header_len(full);
    // Every cut inside the length field and the header, and every 7th byte of the data.
    let cuts = (0..header_end + 16).chain((header_end..full.len()).step_by(7)).filter(|&c| c < full.len());
    let mut n = 0;
    for cut in cuts {
        let e = err(full[..cut].to_vec());
        assert!(e.contains("not a valid artifact") || e.contains("truncated"), "cut at {cut}: {e}");
        n += 1;
    }
    assert!(n > 1000, "only {n} cut points");
}

#[test]
fn a_flipped_byte_in_the_header_is_an_error() {
    let full = artifact_bytes();
    let header_end = 8 + header_len(full);
    for pos in 0..header_end {
        for bit in [0x01u8, 0x80] {
            let mut b = full.to_vec();
            b[pos] ^= bit;
            assert!(load(b).is_err(), "flipping bit {bit:#x} of header byte {pos} went unnoticed");
        }
    }
}

#[test]
fn a_flipped_byte_in_the_data_fails_the_integrity_hash() {
    let full = artifact_bytes();
    let header_end = 8 + header_len(full);
    for pos in (header_end..full.len()).step_by(37).chain([full.len() - 1]) {
        let mut b = full.to_vec();
        b[pos] ^= 0x10;
        let e = load(b).unwrap_err();
        assert!(matches!(e, ArtifactError::Integrity { .. }), "byte {pos}: {e}");
        assert!(e.to_string().contains("compile it again"), "{e}");
    }
}

#[test]
fn a_hash_that_does_not_match_is_refused() {
    let full = artifact_bytes();
    let digits = integrity_digits(full, 8..8 + header_len(full)).unwrap();
    let mut b = full.to_vec();
    // A well-formed hash of something else.
    let other = blake3::hash(b"something else").to_hex().to_string();
    b[digits].copy_from_slice(other.as_bytes());
    let e = err(b);
    assert!(e.contains("does not match its integrity hash") && e.contains(&other), "{e}");
    // A hash in the wrong form.
    let (mut header, data) = split(full);
    header["__metadata__"][keys::INTEGRITY] = Value::String("md5:1234".into());
    let e = err(reassemble(&header, &data));
    assert!(e.contains(keys::INTEGRITY), "{e}");
}

#[test]
fn offsets_outside_the_file_are_refused() {
    let (mut header, data) = split(artifact_bytes());
    let name = header.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
    let offsets = header[&name]["data_offsets"].as_array().unwrap().clone();
    let end = offsets[1].as_u64().unwrap();
    // Point past the end of the data, and far past it (an address-space-sized offset).
    for bad_end in [end + data.len() as u64 + 64, u64::MAX / 2] {
        header[&name]["data_offsets"] = serde_json::json!([offsets[0], bad_end]);
        let e = err(resign(header.clone(), &data));
        assert!(e.contains("not a valid artifact"), "{e}");
    }
    // Data appended after the last tensor is refused as well.
    let (header, mut data) = split(artifact_bytes());
    data.extend_from_slice(&[0; 8]);
    let e = err(resign(header, &data));
    assert!(e.contains("do not end where the file ends"), "{e}");
}

#[test]
fn a_header_length_of_several_gigabytes_is_refused_without_reading_it() {
    for claimed in [5_000_000_000u64, u64::MAX, 100_000_001] {
        let mut b = artifact_bytes().to_vec();
        b[..8].copy_from_slice(&claimed.to_le_bytes());
        let e = err(b);
        assert!(e.contains("header length field says") && e.contains("corrupt"), "{claimed}: {e}");
    }
    // A plausible length that runs past the end of the file.
    let mut b = artifact_bytes()[..1000].to_vec();
    b[..8].copy_from_slice(&5000u64.to_le_bytes());
    assert!(err(b).contains("truncated"));
}

#[test]
fn metadata_that_is_not_valid_json_is_refused() {
    for key in [keys::MODEL, keys::PIPELINE, keys::TARGETS, keys::WEIGHTS, keys::KERNELS] {
        let e = err(with_metadata(key, "{\"name\": "));
        assert!(e.contains(key) && e.contains("not valid JSON"), "{key}: {e}");
        // Valid JSON of the wrong shape.
        let e = err(with_metadata(key, "[1, 2, 3]"));
        assert!(e.contains(key), "{key}: {e}");
    }
    // The header itself not being JSON.
    let mut b = artifact_bytes().to_vec();
    b[8] = b'[';
    assert!(err(b).contains("not a valid artifact"));
}

#[test]
fn ir_text_that_does_not_parse_is_refused_with_its_position() {
    let (header, _) = split(artifact_bytes());
    let ir = header["__metadata__"][keys::IR].as_str().unwrap();
    let broken = ir.replacen("embedding(", "embedding((", 1);
    let e = err(with_metadata(keys::IR, &broken));
    assert!(e.contains("IR text") && e.contains("line") && e.contains("column"), "{e}");
    // Text that parses but does not fit the weights: the verifier's message.
    let wrong = ir.replacen(": f32[64, 32]", ": f32[64, 31]", 1);
    assert_ne!(wrong, ir, "the example's embedding type changed; update this test");
    let e = err(with_metadata(keys::IR, &wrong));
    assert!(e.contains("graph in the artifact is invalid"), "{e}");
}

#[test]
fn a_newer_format_version_says_so() {
    let e = err(with_metadata(keys::FORMAT_VERSION, "999"));
    assert!(e.contains("format version 999") && e.contains("newer") && e.contains("update kiln"), "{e}");
    // Even when the rest of it is unreadable by this version: the version is checked first.
    let (mut header, data) = split(artifact_bytes());
    header["__metadata__"][keys::FORMAT_VERSION] = Value::String("2".into());
    header["__metadata__"][keys::MODEL] = Value::String("a shape this version does not know".into());
    assert!(err(resign(header, &data)).contains("newer"));
    for bad in ["0", "one", "-1"] {
        assert!(err(with_metadata(keys::FORMAT_VERSION, bad)).contains(keys::FORMAT_VERSION), "{bad}");
    }
}

#[test]
fn a_plain_safetensors_file_is_not_an_artifact() {
    let (mut header, data) = split(artifact_bytes());
    header["__metadata__"].as_object_mut().unwrap().remove(keys::FORMAT);
    let e = err(resign(header, &data));
    assert!(e.contains("not a kiln artifact") && e.contains("kiln compile"), "{e}");
}

#[test]
fn tensors_that_do_not_fit_the_manifests_are_refused() {
    // A tensor with a dtype kiln cannot hold (8-bit floats: one byte per element).
    let (mut header, data) = split(artifact_bytes());
    let name = header.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
    let shape = header[&name]["shape"].as_array().unwrap().clone();
    let elements: u64 = shape.iter().map(|d| d.as_u64().unwrap()).product();
    let bytes = elements * 4; // the f32 weight's bytes
    header[&name]["dtype"] = "F8_E4M3".into();
    header[&name]["shape"] = serde_json::json!([bytes]);
    let e = err(resign(header, &data));
    assert!(e.contains("weights") && e.contains("F8_E4M3"), "{e}");

    // A dtype kiln holds, but not the one the graph declares for that weight.
    let (mut header, data) = split(artifact_bytes());
    header[&name]["dtype"] = "U32".into();
    header[&name]["shape"] = serde_json::json!([elements]);
    let e = err(resign(header, &data));
    assert!(e.contains("declared as") && e.contains("u32"), "{e}");

    // A kernel tensor the manifest does not list.
    let (mut header, mut data) = split(artifact_bytes());
    let end = data.len();
    data.extend_from_slice(b"ptx!");
    header["__kernels__/stray.ptx"] = serde_json::json!({"dtype": "U8", "shape": [4], "data_offsets": [end, end + 4]});
    let e = err(resign(header, &data));
    assert!(e.contains("not listed in the kernels manifest"), "{e}");

    // A quantized weight whose buffers are missing.
    let e = err(with_metadata(
        keys::WEIGHTS,
        r#"{"quantized":[{"name":"w","dtype":"q8c","shape":[2,2],"data":"w::data","scales":"w::scales","zeros":null}]}"#,
    ));
    assert!(e.contains("w::data") && e.contains("missing"), "{e}");
}

#[test]
fn the_model_loader_reports_the_same_errors() {
    let mut b = artifact_bytes().to_vec();
    let last = b.len() - 1;
    b[last] ^= 1;
    let e = Model::from_bytes(b).unwrap_err().to_string();
    assert!(e.contains("integrity hash"), "{e}");
    let path: PathBuf = std::env::temp_dir().join(format!("kiln-hostile-missing-{}.kiln", std::process::id()));
    let e = Model::load(&path).unwrap_err().to_string();
    assert!(e.contains("cannot read") && e.contains("kiln-hostile-missing"), "{e}");
}
