//! SmolLM2-135M-Instruct against transformers float32 (tests/fixtures/smollm2, made by
//! tools/make_smollm2_goldens.py): last-position logits within 1e-3 · max|logit| and 64 greedy tokens
//! identical for the code, prose, chat-formatted and math prompts.
//!
//! The model is not in the repository: `tools/fetch_smollm2.sh` downloads the GGUF and
//! `tools/gguf_to_hf.py` converts it into a Hugging Face directory; CI does both.

use std::path::Path;

use kiln_tests::reference_outputs::{check_against_goldens, model_cache, real_model};

fn goldens() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/smollm2")
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
