//! `kiln compile`, `inspect`, `bench`, and `run`/`logits`/`ir` on artifacts, driven through the real
//! binary: an artifact gives exactly what the model it was compiled from gives.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn kiln() -> Command {
    Command::cargo_bin("kiln").expect("the kiln binary is built")
}

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default")
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-artifact-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The default model compiled once (through the CLI, with --json), and what `compile --json` said.
fn compiled() -> &'static (PathBuf, Value) {
    static ARTIFACT: OnceLock<(PathBuf, Value)> = OnceLock::new();
    ARTIFACT.get_or_init(|| {
        let out = scratch().join("default.kiln");
        let o = kiln().arg("compile").arg(default_model()).arg("-o").arg(&out).arg("--json").output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (out, serde_json::from_slice(&o.stdout).unwrap())
    })
}

fn json_of(args: &[&str], model: &Path) -> Value {
    let o = kiln().args(&args[..1]).arg(model).args(&args[1..]).output().unwrap();
    assert!(o.status.success(), "kiln {args:?} {}: {}", model.display(), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn run_on_the_artifact_gives_exactly_the_tokens_of_run_on_the_model() {
    let (artifact, _) = compiled();
    let prompt = ["--prompt", "def read_config(path):", "--max-new-tokens", "40", "--json"];
    for extra in [
        &[][..],
        &["--speculate", "ngram"][..],
        &["--speculate", "tree"][..],
        &["--temperature", "0.8", "--top-p", "0.9", "--seed", "7"][..],
    ] {
        let args: Vec<&str> = ["run"].iter().chain(&prompt).chain(extra).copied().collect();
        let a = json_of(&args, artifact);
        let m = json_of(&args, &default_model());
        assert_eq!(a["token_ids"], m["token_ids"], "{extra:?}");
        assert_eq!(a["text"], m["text"], "{extra:?}");
        assert_eq!(a["token_ids"].as_array().unwrap().len(), 40, "{extra:?}");
    }
}

#[test]
fn logits_and_ir_accept_artifacts() {
    let (artifact, _) = compiled();
    let args = ["logits", "--prompt", "import os", "--json"];
    assert_eq!(json_of(&args, artifact), json_of(&args, &default_model()));
    let from_artifact = kiln().arg("ir").arg(artifact).output().unwrap();
    let from_model = kiln().arg("ir").arg(default_model()).args(["--pipeline", "default"]).output().unwrap();
    assert!(from_artifact.status.success());
    assert_eq!(from_artifact.stdout, from_model.stdout);
}

#[test]
fn inspect_shows_what_is_inside_and_how_it_was_made() {
    let (artifact, compile) = compiled();
    let j = json_of(&["inspect", "--json"], artifact);
    assert_eq!(j["format_version"], 1);
    assert_eq!(j["model"]["architecture"], "llama");
    assert_eq!(j["model"]["parameters"], 3_410_176);
    assert_eq!(j["model"]["tokenizer"], true);
    assert_eq!(j["weights"]["by_dtype"]["bf16"]["parameters"], 3_410_176);
    assert_eq!(j["weights"]["by_dtype"]["bf16"]["bytes"], 2 * 3_410_176);
    assert_eq!(j["pipeline"]["name"], "default");
    assert_eq!(j["targets"], serde_json::json!(["cpu"]));
    assert_eq!(j["kernels"]["count"], 0);
    assert_eq!(j["content_hash"], compile["content_hash"]);
    assert_eq!(j["integrity_hash"], compile["integrity_hash"]);
    assert_eq!(j["bytes"], compile["bytes"]);
    kiln()
        .arg("inspect")
        .arg(artifact)
        .assert()
        .success()
        .stdout(predicate::str::contains("llama from"))
        .stdout(predicate::str::contains("pipeline       default: shape-inference, constant-folding, cse, dce"))
        .stdout(predicate::str::contains("(verified)"));
}

#[test]
fn compile_records_targets_and_pipeline_options() {
    let out = scratch().join("targets.kiln");
    kiln()
        .arg("compile")
        .arg(default_model())
        .args(["--target", "cuda:sm_90", "--target", "cpu", "--pipeline", "default", "--disable-pass", "cse", "-o"])
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("targets cpu, cuda:sm_90"));
    let j = json_of(&["inspect", "--json"], &out);
    assert_eq!(j["targets"], serde_json::json!(["cpu", "cuda:sm_90"]));
    assert_eq!(j["pipeline"]["disabled"], serde_json::json!(["cse"]));
    assert_eq!(j["pipeline"]["passes"], serde_json::json!(["shape-inference", "constant-folding", "dce"]));
}

#[test]
fn bad_requests_exit_1_with_the_fix() {
    let (artifact, _) = compiled();
    let out = scratch().join("never.kiln");
    let (model, art, o) = (default_model(), artifact.display().to_string(), out.display().to_string());
    let model = model.display().to_string();
    let config = default_model().join("config.json").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["compile", &model, "--target", "gpu", "-o", &o], "cuda:sm_NN"),
        (vec!["compile", &art, "-o", &o], "already a compiled artifact"),
        (vec!["compile", &model, "--pipeline", "O7", "-o", &o], "O7"),
        (vec!["run", &art, "--prompt", "x", "--pipeline", "O0"], "compiled with pipeline `default`"),
        // Compiled for the CPU only: the fix is named whether or not this machine has a GPU.
        (
            vec!["run", &art, "--prompt", "x", "--device", "cuda"],
            "has no CUDA kernels; compile it with `--target cuda:sm_XX`",
        ),
        (vec!["bench", &art, "--device", "cuda"], "has no CUDA kernels"),
        (vec!["inspect", &config], "not a valid artifact"),
    ];
    for (args, message) in cases {
        let o = kiln().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = one_paragraph(&o.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert!(!out.exists(), "a failed compile left a file behind");
    // From the source model the kernels are compiled in memory, so what is missing on a machine without a GPU
    // is the driver or the device, and the error says which (on a GPU machine this simply runs).
    let o =
        kiln().args(["run", &model, "--prompt", "x", "--max-new-tokens", "2", "--device", "cuda"]).output().unwrap();
    if !o.status.success() {
        assert_eq!(o.status.code(), Some(1));
        let err = one_paragraph(&o.stderr);
        assert!(err.contains("no CUDA driver") || err.contains("no GPU 0"), "{err}");
    }
    // A corrupted artifact: an error naming the integrity hash, never a panic.
    let mut bytes = std::fs::read(artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let bad = scratch().join("corrupt.kiln");
    std::fs::write(&bad, bytes).unwrap();
    let o = kiln().arg("run").arg(&bad).args(["--prompt", "x"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = one_paragraph(&o.stderr);
    assert!(err.contains("corrupt.kiln") && err.contains("integrity hash"), "{err}");
}

/// An error report with miette's line wrapping and frame undone.
fn one_paragraph(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr).replace(['│', '×'], " ");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn bench_reports_spread_and_the_speedup_of_speculation() {
    let (artifact, _) = compiled();
    let args = [
        "bench",
        "--prompt-tokens",
        "48",
        "--new-tokens",
        "24",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--speculate",
        "ngram",
        "--json",
    ];
    let j = json_of(&args, artifact);
    assert_eq!(j["prompt_tokens"], 48);
    assert_eq!(j["repeats"], 3);
    for mode in ["plain", "speculative"] {
        for rate in ["prefill_tokens_per_s", "decode_tokens_per_s"] {
            let s = &j[mode][rate];
            let (min, med, max) =
                (s["min"].as_f64().unwrap(), s["median"].as_f64().unwrap(), s["max"].as_f64().unwrap());
            assert!(0.0 < min && min <= med && med <= max, "{mode} {rate}: {s}");
        }
    }
    // Plain decoding takes one step per token after the prefill; the default prompt is code that the
    // n-gram drafter predicts, so speculation needs fewer.
    assert_eq!(j["plain"]["steps"], 24);
    assert_eq!(j["plain"]["accepted_per_step"], 1.0);
    assert!(j["speculative"]["steps"].as_u64().unwrap() < 24, "{j}");
    assert!(j["speculative"]["accepted_per_step"].as_f64().unwrap() > 1.0, "{j}");
    assert!(j["speedup"].as_f64().unwrap() > 0.0);
    // Without --speculate: plain only, as a table.
    kiln()
        .arg("bench")
        .args(["--new-tokens", "4", "--repeats", "1", "--warmup", "0"])
        .assert()
        .success()
        .stdout(predicate::str::contains("none"))
        .stdout(predicate::str::contains("prefill"))
        .stdout(predicate::str::contains("speedup").not());
}

#[test]
fn bench_measures_sampled_decoding_when_given_a_temperature() {
    let (artifact, _) = compiled();
    let args = [
        "bench",
        "--new-tokens",
        "12",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--temperature",
        "0.8",
        "--top-k",
        "40",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--json",
    ];
    let j = json_of(&args, artifact);
    assert_eq!(j["sampling"], serde_json::json!({"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 3}), "{j}");
    assert_eq!(j["plain"]["steps"], 12);
    assert!(j["plain"]["decode_tokens_per_s"]["min"].as_f64().unwrap() > 0.0, "{j}");
    // Greedy unless a temperature is given, and the table says which.
    let greedy = json_of(&["bench", "--new-tokens", "4", "--repeats", "1", "--warmup", "0", "--json"], artifact);
    assert!(greedy["sampling"].is_null(), "{greedy}");
    kiln()
        .arg("bench")
        .arg(artifact)
        .args(["--new-tokens", "4", "--repeats", "1", "--warmup", "0", "--temperature", "0.7", "--seed", "5"])
        .assert()
        .success()
        .stdout(predicate::str::contains("sampled (temperature 0.7, top-p 1, seed 5)"));
    // Settings the sampler refuses are named, not run.
    let out = kiln()
        .arg("bench")
        .arg(artifact)
        .args(["--new-tokens", "4", "--repeats", "1", "--temperature", "0.8", "--top-p", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = one_paragraph(&out.stderr);
    assert!(err.contains("top_p must be in (0, 1], not 1.5"), "{err}");
}

#[test]
fn verbose_logs_the_stages_on_stderr() {
    let out = scratch().join("verbose.kiln");
    kiln()
        .arg("-v")
        .arg("compile")
        .arg(default_model())
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stderr(predicate::str::contains("content hash"))
        .stderr(predicate::str::contains("wrote artifact"));
    // Quiet by default: only the summary line.
    let o = kiln().arg("compile").arg(default_model()).arg("-o").arg(&out).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&o.stderr));
}
