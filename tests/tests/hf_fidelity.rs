//! Fidelity of the Hugging Face frontend: every tiny random model under tests/fixtures/hf/ is imported
//! with `load_hf_dir`, run on the CPU executor, and compared with transformers' float32 goldens
//! (last-position logits within 1e-4 · max|logit|, and 32 greedy tokens identical).

use std::path::{Path, PathBuf};

use kiln_frontends::hf::load_hf_dir;
use kiln_runtime::{CpuExecutor, GenerateConfig, Sampling, generate};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf")
}

/// The golden file's prompts, last-position logits and greedy continuations.
struct Golden {
    prompts: Vec<Vec<u32>>,
    last_logits: Vec<Vec<f64>>,
    greedy: Vec<Vec<u32>>,
}

fn read_golden(dir: &Path) -> Golden {
    let text = std::fs::read_to_string(dir.join("golden.json")).expect("golden.json is readable");
    let v: Value = serde_json::from_str(&text).expect("golden.json parses");
    let ids = |key: &str| -> Vec<Vec<u32>> {
        v[key]
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| p.as_array().expect("a list").iter().map(|x| x.as_u64().expect("an id") as u32).collect())
            .collect()
    };
    let last_logits = v["last_logits"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|row| row.as_array().expect("a list").iter().map(|x| x.as_f64().expect("a number")).collect())
        .collect();
    Golden { prompts: ids("prompts"), last_logits, greedy: ids("greedy") }
}

/// Checks one architecture and returns its largest relative logit difference.
fn check_architecture(arch: &str) -> f64 {
    let dir = fixtures().join(arch);
    let model = load_hf_dir(&dir).unwrap_or_else(|e| panic!("{arch}: import failed: {e}"));
    assert_eq!(model.meta.architecture, arch);
    let golden = read_golden(&dir);
    assert!(golden.prompts.len() >= 3, "{arch}: the golden file has fewer than 3 prompts");
    let vocab = model.meta.vocab_size as usize;
    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap_or_else(|e| panic!("{arch}: {e}"));
    let mut worst = 0.0f64;
    for (i, prompt) in golden.prompts.iter().enumerate() {
        let n = prompt.len();
        let positions: Vec<i64> = (0..n as i64).collect();
        exec.reset();
        let inputs = kiln_runtime::decoding::decoder_inputs(exec.graph(), prompt, &positions, None).unwrap();
        let out = exec.run(&inputs).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(out[0].shape(), &[1, n, vocab]);
        let logits = out[0].to_f32_vec();
        let last = &logits[(n - 1) * vocab..];
        let want = &golden.last_logits[i];
        assert_eq!(want.len(), vocab);
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let diff = last.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        assert!(diff <= 1e-4 * scale, "{arch} prompt {i}: max|diff| {diff:e} > 1e-4 * max|logit| {scale}");
        worst = worst.max(diff / scale);

        let config =
            GenerateConfig { max_new_tokens: golden.greedy[i].len(), sampling: Sampling::Greedy, stop_tokens: vec![] };
        let generated = generate(&mut exec, prompt, &config).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(generated.tokens, golden.greedy[i], "{arch} prompt {i}: greedy tokens differ");
    }
    eprintln!("{arch}: max|diff| / max|logit| = {worst:.3e}");
    worst
}

#[test]
fn llama_matches_transformers() {
    check_architecture("llama");
}

#[test]
fn mistral_matches_transformers() {
    check_architecture("mistral");
}

#[test]
fn qwen2_matches_transformers() {
    check_architecture("qwen2");
}

#[test]
fn qwen3_matches_transformers() {
    check_architecture("qwen3");
}

#[test]
fn gemma3_matches_transformers() {
    check_architecture("gemma3");
}

#[test]
fn gpt2_matches_transformers() {
    check_architecture("gpt2");
}

/// Every fixture directory has a test above, so a new fixture cannot go untested.
#[test]
fn every_fixture_is_covered() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("config.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, ["gemma3", "gpt2", "llama", "mistral", "qwen2", "qwen3"]);
}

/// The default model shipped in models/default (bf16 weights, kept bf16 by the import): logits of its
/// four prompts against transformers float32 on the same weights, and 64 greedy tokens each.
#[test]
fn default_model_matches_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = load_hf_dir(&root.join("../models/default")).expect("the default model imports");
    assert!(model.weights.iter().all(|(_, w)| w.ty.dtype == kiln_ir::DType::BF16), "weights stay bf16");
    assert!(model.meta.tokenizer_json.is_some());
    assert_eq!(model.meta.eos_token_ids, vec![0]);
    let vocab = model.meta.vocab_size as usize;
    let gold_dir = root.join("fixtures/default_model");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(gold_dir.join("golden.json")).unwrap()).unwrap();
    let prompts = golden["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 4);
    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap();
    let mut worst = 0.0f64;
    for (i, p) in prompts.iter().enumerate() {
        let ids: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let greedy: Vec<u32> = p["greedy"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let want: Vec<f64> = std::fs::read(gold_dir.join(format!("logits_{i}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
            .collect();
        assert_eq!(want.len(), vocab);
        let n = ids.len();
        exec.reset();
        let positions: Vec<i64> = (0..n as i64).collect();
        let inputs = kiln_runtime::decoding::decoder_inputs(exec.graph(), &ids, &positions, None).unwrap();
        let logits = exec.run(&inputs).unwrap().remove(0).to_f32_vec();
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let diff =
            logits[(n - 1) * vocab..].iter().zip(&want).fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        assert!(diff <= 1e-4 * scale, "prompt {i}: max|diff| {diff:e} > 1e-4 * max|logit| {scale}");
        worst = worst.max(diff / scale);
        let config = GenerateConfig { max_new_tokens: greedy.len(), sampling: Sampling::Greedy, stop_tokens: vec![] };
        let generated = generate(&mut exec, &ids, &config).unwrap();
        assert_eq!(generated.tokens, greedy, "prompt {i}: greedy tokens differ");
    }
    eprintln!("default model: max|diff| / max|logit| = {worst:.3e}");
}
