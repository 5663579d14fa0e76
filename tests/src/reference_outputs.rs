//! Comparing a model with reference outputs from transformers stored as golden.json plus
//! `logits_<i>.f32` (the format of tools/make_smollm2_goldens.py and tools/train_default_model.py):
//! last-position logits within a relative bound, and greedy continuations token for token.

use std::path::{Path, PathBuf};

use kiln_ir::Model;
use kiln_runtime::{CpuExecutor, GenerateConfig, Sampling, generate};
use serde_json::Value;

/// The worst relative logit difference over the prompts and how many greedy tokens were compared.
pub struct Agreement {
    pub worst_relative_diff: f64,
    pub greedy_tokens_compared: usize,
}

/// Runs every prompt of `golden_dir/golden.json` through `model`: asserts last-position logits within
/// `rel_tol * max|logit|` and identical greedy tokens (all of them, `greedy_tokens` at most).
pub fn check_against_goldens(
    name: &str,
    model: Model,
    golden_dir: &Path,
    rel_tol: f64,
    greedy_tokens: usize,
) -> Agreement {
    let text = std::fs::read_to_string(golden_dir.join("golden.json")).expect("golden.json is readable");
    let golden: Value = serde_json::from_str(&text).expect("golden.json parses");
    let prompts = golden["prompts"].as_array().expect("prompts");
    let ids_of =
        |v: &Value| -> Vec<u32> { v.as_array().expect("ids").iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut worst = 0.0f64;
    let mut compared = 0;
    for (i, p) in prompts.iter().enumerate() {
        let ids = ids_of(&p["ids"]);
        let bytes = std::fs::read(golden_dir.join(format!("logits_{i}.f32"))).expect("logits file");
        let want: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let n = ids.len();
        exec.reset();
        let out = exec
            .run(
                &kiln_runtime::decoding::decoder_inputs(exec.graph(), &ids, &(0..n as i64).collect::<Vec<_>>(), None)
                    .unwrap(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let all = out[0].to_f32_vec();
        let got = &all[all.len() - want.len()..];
        let max_abs = want.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
        let diff = got.iter().zip(&want).fold(0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs()));
        let rel = diff / max_abs;
        assert!(
            rel <= rel_tol,
            "{name} prompt {i}: max|diff| {diff:.3e} is {rel:.3e} of max|logit| (bound {rel_tol:.0e})"
        );
        worst = worst.max(rel);

        let want_greedy: Vec<u32> = ids_of(&p["greedy"]).into_iter().take(greedy_tokens).collect();
        let config =
            GenerateConfig { max_new_tokens: want_greedy.len(), sampling: Sampling::Greedy, stop_tokens: vec![] };
        let got_greedy = generate(&mut exec, &ids, &config).unwrap_or_else(|e| panic!("{name}: {e}")).tokens;
        assert_eq!(got_greedy, want_greedy, "{name} prompt {i}: greedy tokens differ from transformers");
        compared += want_greedy.len();
    }
    Agreement { worst_relative_diff: worst, greedy_tokens_compared: compared }
}

/// Where tools/fetch_smollm2.sh and tools/gguf_to_hf.py put SmolLM2: `$KILN_CACHE` or ~/.cache/kiln.
pub fn model_cache() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kiln"))
}

/// `path` when it exists. When it does not: a failure if `KILN_REQUIRE_MODELS=1` (CI sets it, so a
/// missing download cannot pass silently), else `None` with a note on how to fetch it.
pub fn real_model(path: PathBuf, how_to_get_it: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("KILN_REQUIRE_MODELS").as_deref() != Ok("1"),
        "{} is missing and KILN_REQUIRE_MODELS=1: {how_to_get_it}",
        path.display()
    );
    eprintln!("skipping: {} is missing ({how_to_get_it})", path.display());
    None
}
