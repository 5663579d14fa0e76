//! SmolLM2-135M-Instruct imported from its GGUF (Q4_1 weights kept as kiln q4g32z, the Q8_0 embedding
//! dequantized) and run on the CPU executor, against transformers float32 on the same GGUF
//! (tests/fixtures/smollm2, made by tools/make_smollm2_goldens.py): prompt token ids from the rebuilt
//! tokenizer, last-position logits within 1e-3 · max|logit|, and 64 greedy tokens identical, for the code,
//! prose, chat and math prompts.
//!
//! The GGUF comes from tools/fetch_smollm2.sh. When it is missing the test is skipped with a message, or
//! fails when KILN_REQUIRE_MODELS=1.

use std::path::{Path, PathBuf};

use kiln_frontends::gguf::load_gguf;
use kiln_ir::Tensor;
use kiln_runtime::{CpuExecutor, GenerateConfig, Sampling, generate};
use serde_json::Value;
use tokenizers::Tokenizer;

fn smollm2_path() -> Option<PathBuf> {
    let cache = std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))?;
    let path = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("KILN_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("KILN_REQUIRE_MODELS=1 but {} is missing: run tools/fetch_smollm2.sh", path.display());
    }
    eprintln!("skipping: {} is missing (run tools/fetch_smollm2.sh to fetch it)", path.display());
    None
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2")
}

fn read_logits(i: usize) -> Vec<f32> {
    let bytes = std::fs::read(fixtures().join(format!("logits_{i}.f32"))).expect("golden logits are readable");
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = smollm2_path() else { return };
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("golden.json")).unwrap()).unwrap();
    let model = load_gguf(&path).unwrap_or_else(|e| panic!("import failed: {e}"));
    assert_eq!(model.meta.architecture, "llama");
    let vocab = model.meta.vocab_size as usize;
    assert_eq!(vocab, 49152);
    let tok: Tokenizer = model.meta.tokenizer_json.as_ref().expect("a tokenizer").parse().unwrap();
    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap();

    let prompts = golden["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 4);
    let mut report = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let kind = p["kind"].as_str().unwrap();
        let text = p["text"].as_str().unwrap();
        let want_ids: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, want_ids, "{kind}: prompt token ids");

        let n = ids.len();
        let input = Tensor::i64(vec![1, n], ids.iter().map(|&t| i64::from(t)).collect()).unwrap();
        let positions = Tensor::i64(vec![1, n], (0..n as i64).collect()).unwrap();
        exec.reset();
        let out = exec.run(&[input, positions]).unwrap();
        let logits = out[0].to_f32_vec();
        let last = &logits[(n - 1) * vocab..];
        let want = read_logits(i);
        assert_eq!(want.len(), vocab);
        let scale = want.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
        let diff = last.iter().zip(&want).fold(0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs()));
        assert!(diff <= 1e-3 * scale, "{kind}: max|diff| {diff:e} > 1e-3 * max|logit| {scale}");

        let greedy: Vec<u32> = p["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let config = GenerateConfig { max_new_tokens: greedy.len(), sampling: Sampling::Greedy, stop_tokens: vec![] };
        let generated = generate(&mut exec, &ids, &config).unwrap();
        let text_out = tok.decode(&generated.tokens, false).unwrap();
        report.push(format!("{kind}: max|diff|/max|logit| = {:.2e}; {text_out:?}", diff / scale));
        assert_eq!(generated.tokens, greedy, "{kind}: greedy tokens differ; kiln wrote {text_out:?}");
    }
    for line in report {
        eprintln!("{line}");
    }
}

/// The prose prompt continues with " Paris" first: the acceptance check a person would make.
#[test]
fn smollm2_gguf_knows_the_capital_of_france() {
    let Some(path) = smollm2_path() else { return };
    let model = load_gguf(&path).unwrap();
    let tok: Tokenizer = model.meta.tokenizer_json.as_ref().unwrap().parse().unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap().get_ids().to_vec();
    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap();
    let config =
        GenerateConfig { max_new_tokens: 4, sampling: Sampling::Greedy, stop_tokens: model.meta.eos_token_ids };
    let out = generate(&mut exec, &ids, &config).unwrap();
    let text = tok.decode(&out.tokens, false).unwrap();
    assert!(text.starts_with(" Paris"), "continued with {text:?}");
}
