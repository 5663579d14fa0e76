//! SmolLM2-135M-Instruct against transformers float32 (tests/fixtures/smollm2, made by
//! tools/make_smollm2_goldens.py from the same GGUF), through both importers: last-position logits within
//! 1e-3 · max|logit| and 64 greedy tokens identical for the code, prose, chat-formatted and math prompts.
//!
//! The model is not in the repository: `tools/fetch_smollm2.sh` downloads the GGUF (Q4_1 weights, kept
//! as kiln `q4g32z`; the Q8_0 embedding is dequantized) and `tools/gguf_to_hf.py` converts it into a
//! float32 Hugging Face directory. CI does both and sets KILN_REQUIRE_MODELS=1.

use std::path::{Path, PathBuf};

use kiln_frontends::gguf::load_gguf;
use kiln_runtime::{CpuExecutor, GenerateConfig, Sampling, generate};
use kiln_tests::reference_outputs::{check_against_goldens, model_cache, real_model};
use serde_json::Value;
use tokenizers::Tokenizer;

fn goldens() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2")
}

fn gguf() -> Option<PathBuf> {
    real_model(model_cache().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), "run tools/fetch_smollm2.sh")
}

#[test]
fn gguf_import_matches_transformers() {
    let Some(path) = gguf() else { return };
    let model = load_gguf(&path).unwrap_or_else(|e| panic!("import failed: {e}"));
    assert_eq!((model.meta.architecture.as_str(), model.meta.vocab_size), ("llama", 49152));

    // The tokenizer rebuilt from GGUF metadata gives transformers' prompt ids.
    let tok: Tokenizer = model.meta.tokenizer_json.as_ref().expect("a tokenizer").parse().unwrap();
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(goldens().join("golden.json")).unwrap()).unwrap();
    for p in golden["prompts"].as_array().unwrap() {
        let want: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(p["text"].as_str().unwrap(), false).unwrap().get_ids(), want.as_slice(), "{}", p["kind"]);
    }

    let a = check_against_goldens("SmolLM2 (GGUF)", model, &goldens(), 1e-3, 64);
    assert_eq!(a.greedy_tokens_compared, 4 * 64);
    eprintln!("SmolLM2 via GGUF: worst relative logit diff {:.2e}", a.worst_relative_diff);
}

#[test]
fn converted_hugging_face_directory_matches_transformers() {
    let Some(dir) = real_model(
        model_cache().join("smollm2/hf"),
        "run tools/fetch_smollm2.sh, then python3 tools/gguf_to_hf.py <the .gguf> ~/.cache/kiln/smollm2/hf",
    ) else {
        return;
    };
    let model = kiln_frontends::hf::load_hf_dir(&dir).expect("the converted directory imports");
    let a = check_against_goldens("SmolLM2 (HF)", model, &goldens(), 1e-3, 64);
    assert_eq!(a.greedy_tokens_compared, 4 * 64);
    eprintln!("SmolLM2 via HF directory: worst relative logit diff {:.2e}", a.worst_relative_diff);
}

/// The prose prompt continues with " Paris", stopping at the model's EOS: the check a person would make.
#[test]
fn gguf_model_knows_the_capital_of_france() {
    let Some(path) = gguf() else { return };
    let model = load_gguf(&path).unwrap();
    let tok: Tokenizer = model.meta.tokenizer_json.as_ref().unwrap().parse().unwrap();
    let ids = tok.encode("The capital of France is", false).unwrap().get_ids().to_vec();
    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap();
    let config =
        GenerateConfig { max_new_tokens: 4, sampling: Sampling::Greedy, stop_tokens: model.meta.eos_token_ids };
    let text = tok.decode(&generate(&mut exec, &ids, &config).unwrap().tokens, false).unwrap();
    assert!(text.starts_with(" Paris"), "continued with {text:?}");
}
