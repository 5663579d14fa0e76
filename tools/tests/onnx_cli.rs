//! `kiln run` / `kiln ir` on ONNX exports (tests/fixtures/onnx/, weights rebuilt from the Hugging Face
//! safetensors they were exported from): a raised export decodes with the KV cache and with n-gram
//! speculation the same greedy tokens as the Hugging Face import; `kiln ir` shows the raised graph and says
//! why a pattern did not match; an export whose attention is not raised still runs, by recomputing.

#[path = "../../tests/src/onnx_exports.rs"]
mod onnx_exports;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn kiln() -> Command {
    Command::cargo_bin("kiln").expect("the kiln binary is built")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The export `name` with its weights rebuilt from `source` into a temporary directory.
fn export(name: &str, source: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = onnx_exports::materialize(&onnx_exports::fixture_dir(name), source, dir.path());
    (dir, model)
}

fn run_json(model: &Path, args: &[&str]) -> serde_json::Value {
    let out = kiln().arg("run").arg(model).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn raised_default_model_export_decodes_like_the_hf_import_plain_and_speculative() {
    let hf = repo().join("models/default");
    let (_dir, onnx) = export("default", &hf);
    // An ONNX export has no tokenizer: the ids of "def fibonacci(n):" in the default model's tokenizer.
    let args = ["--prompt-ids", "325,282,849,264,917,539,8,78,324", "--max-new-tokens", "40", "--ignore-eos"];
    let want = run_json(&hf, &args);
    let plain = run_json(&onnx, &args);
    assert_eq!(plain["token_ids"], want["token_ids"]);
    assert_eq!(plain["stats"]["steps"], 40, "plain decoding: one step per token");
    let mut spec_args = args.to_vec();
    spec_args.extend(["--speculate", "ngram"]);
    let spec = run_json(&onnx, &spec_args);
    assert_eq!(spec["token_ids"], want["token_ids"]);
    assert!(spec["stats"]["steps"].as_u64().unwrap() < 40, "n-gram speculation accepts drafts: {}", spec["stats"]);
    let mut tree_args = args.to_vec();
    tree_args.extend(["--speculate", "tree"]);
    assert_eq!(run_json(&onnx, &tree_args)["token_ids"], want["token_ids"]);

    let out = kiln().arg("ir").arg(&onnx).args(["--pipeline", "onnx"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ir = String::from_utf8(out.stdout).unwrap();
    for layer in 0..4 {
        assert!(ir.contains(&format!("{{layer = {layer}, scale = ")), "attention layer {layer}:\n{ir}");
    }
    assert!(ir.contains("= rope(") && ir.contains("= rms_norm(") && ir.contains("= logits("), "{ir}");
    assert!(out.stderr.is_empty(), "no notes for a fully raised graph: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn unraised_attention_is_explained_and_the_export_still_runs() {
    let hf = repo().join("tests/fixtures/hf/mistral");
    let (_dir, onnx) = export("mistral", &hf);
    let out = kiln().arg("ir").arg(&onnx).args(["--pipeline", "onnx"]).output().unwrap();
    assert!(out.status.success());
    let notes = String::from_utf8(out.stderr).unwrap();
    assert!(
        notes.contains("note: raise-decoder: attention 1, 2 of 2:") && notes.contains("not the causal mask"),
        "{notes}"
    );

    let ids = ["--prompt-ids", "5,17,33,2,9,41,7,7,12,3,5,17,33"];
    let want = run_json(&hf, &[&ids[..], &["--max-new-tokens", "12"]].concat());
    let out = kiln().arg("run").arg(&onnx).args(ids).args(["--max-new-tokens", "12", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recomputes the whole sequence"));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["token_ids"], want["token_ids"]);
    // Token trees need cached attention: refused with a message, not wrong tokens.
    let out = kiln().arg("run").arg(&onnx).args(ids).args(["--speculate", "tree"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tree_mask"), "{}", String::from_utf8_lossy(&out.stderr));
}
