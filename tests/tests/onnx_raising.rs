//! ONNX exports of decoders (tools/export_onnx.py: `torch.onnx.export(dynamo=True)`, logits-only) raised
//! to model-level ops: before and after raising, kiln's last-position logits match transformers' goldens;
//! after raising the graph has one cached `attention` per layer and decodes, with the KV cache and with
//! speculative decoding, the greedy tokens of transformers and of kiln's Hugging Face import. A graph whose
//! attention cannot be raised (a sliding window) still decodes, by recomputing, with a note saying why.
//! An export with the ONNX Runtime / Optimum cache interface (past_key_values in, presents out) is bound to
//! kiln's own cache on import and then decodes the same way.

use std::path::{Path, PathBuf};

use kiln_ir::{Model, Op, Tensor};
use kiln_passes::PassNote;
use kiln_runtime::decoding::{DecoderExecutor, NgramConfig, NgramDrafter, RecomputingExecutor, generate_speculative};
use kiln_runtime::{CpuExecutor, GenerateConfig, Sampling, generate};
use kiln_tests::onnx_exports::{fixture_dir, materialize};
use kiln_tests::reference_outputs::{check_against_goldens, model_cache, real_model};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The export `name` with its weights rebuilt from `source_dir`, under the model cache.
fn export(name: &str, source_dir: &Path) -> PathBuf {
    materialize(&fixture_dir(name), source_dir, &model_cache().join("onnx").join(name))
}

fn tiny_export(arch: &str) -> PathBuf {
    export(arch, &repo().join("tests/fixtures/hf").join(arch))
}

/// The model after `pipeline`, with the passes' notes.
fn lowered(path: &Path, pipeline: &str) -> (Model, Vec<PassNote>) {
    let mut model = kiln::load_model(path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut pm = kiln_passes::pipeline(pipeline).unwrap();
    let (_, notes) = kiln::lowering::run_pipeline(&mut model, &mut pm).unwrap_or_else(|e| panic!("{e}"));
    (model, notes)
}

fn count(model: &Model, f: impl Fn(&Op) -> bool) -> usize {
    model.graph.nodes().filter(|(_, n)| f(&n.op)).count()
}

/// Last-position logits of `ids` for a graph that takes the ids alone or follows the decoder contract.
fn last_logits(exec: &mut CpuExecutor, ids: &[u32]) -> Vec<f32> {
    let n = ids.len();
    exec.reset();
    let inputs = if exec.graph().inputs().len() == 1 {
        vec![Tensor::i64(vec![1, n], ids.iter().map(|&t| i64::from(t)).collect()).unwrap()]
    } else {
        let positions: Vec<i64> = (0..n as i64).collect();
        kiln_runtime::decoding::decoder_inputs(exec.graph(), ids, &positions, None).unwrap()
    };
    let out = exec.run(&inputs).unwrap_or_else(|e| panic!("{e}"));
    let all = out[0].to_f32_vec();
    let vocab = all.len() / n;
    all[(n - 1) * vocab..].to_vec()
}

fn max_rel_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "vocabulary sizes differ");
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    got.iter().zip(want).fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs())) / scale
}

/// A tiny fixture's goldens: prompts, last-position logits, greedy continuations.
type TinyGolden = (Vec<Vec<u32>>, Vec<Vec<f64>>, Vec<Vec<u32>>);

fn tiny_golden(arch: &str) -> TinyGolden {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/hf").join(arch).join("golden.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let ids = |key: &str| -> Vec<Vec<u32>> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect())
            .collect()
    };
    let logits = v["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    (ids("prompts"), logits, ids("greedy"))
}

fn greedy(n: usize) -> GenerateConfig {
    GenerateConfig { max_new_tokens: n, sampling: Sampling::Greedy, stop_tokens: vec![] }
}

fn ngram_drafter() -> NgramDrafter {
    NgramDrafter::new(NgramConfig { ngram_max: 4, draft_len: 5, branches: 1 }).unwrap()
}

/// Checks a raised tiny export against its goldens, with the KV cache and with n-gram speculation.
fn check_tiny(arch: &str, layers: usize, expect_rope: bool, expect_rms: bool) -> Vec<PassNote> {
    let path = tiny_export(arch);
    let (prompts, want_logits, want_greedy) = tiny_golden(arch);

    // Unraised: the exported graph as imported (full sequence, no KV cache).
    let (plain, _) = lowered(&path, "default");
    assert_eq!(count(&plain, |op| matches!(op, Op::Attention { .. })), 0);
    let mut exec = CpuExecutor::new(plain.graph, plain.weights).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let rel = max_rel_diff(&last_logits(&mut exec, p), &want_logits[i]);
        assert!(rel <= 1e-3, "{arch} unraised prompt {i}: logits differ by {rel:e} of max|logit|");
    }

    let (model, notes) = lowered(&path, "onnx");
    let cached = count(&model, |op| matches!(op, Op::Attention { layer: Some(_), .. }));
    assert_eq!(cached, layers, "{arch}: cached attention ops; notes: {notes:?}");
    assert_eq!(count(&model, |op| matches!(op, Op::Softmax { .. })), 0, "{arch}: a generic softmax is left");
    assert_eq!(count(&model, |op| matches!(op, Op::Rope { .. })) > 0, expect_rope, "{arch}: rope; notes: {notes:?}");
    assert_eq!(count(&model, |op| matches!(op, Op::RmsNorm { .. })) > 0, expect_rms, "{arch}: rms_norm");
    // Every projection became `linear`; a generic rope keeps its one `matmul` (frequencies × positions).
    let matmuls = count(&model, |op| matches!(op, Op::MatMul {}));
    assert_eq!(matmuls, usize::from(!expect_rope && arch != "gpt2"), "{arch}: matmuls left");
    assert_eq!(count(&model, |op| matches!(op, Op::Logits { .. })), 1, "{arch}: logits");

    let mut exec = CpuExecutor::new(model.graph, model.weights).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let rel = max_rel_diff(&last_logits(&mut exec, p), &want_logits[i]);
        assert!(rel <= 1e-3, "{arch} raised prompt {i}: logits differ by {rel:e} of max|logit|");
        let out = generate(&mut exec, p, &greedy(want_greedy[i].len())).unwrap();
        assert_eq!(out.tokens, want_greedy[i], "{arch} prompt {i}: greedy tokens with the KV cache");
        assert_eq!(exec.kv_len(), p.len() + want_greedy[i].len() - 1, "{arch}: the KV cache holds the sequence");
        let spec = generate_speculative(&mut exec, &mut ngram_drafter(), p, &greedy(want_greedy[i].len())).unwrap();
        assert_eq!(spec.tokens, want_greedy[i], "{arch} prompt {i}: greedy tokens with n-gram speculation");
    }
    notes
}

#[test]
fn tiny_llama_export_is_raised_and_matches_transformers() {
    // The fixture uses llama3 rope scaling, which raising does not recognise: its rope stays generic (and
    // reads the positions input), which the note says.
    let notes = check_tiny("llama", 2, false, true);
    assert!(notes.iter().any(|n| n.message.contains("scaled rope")), "{notes:?}");
}

#[test]
fn tiny_qwen2_export_is_raised_and_matches_transformers() {
    check_tiny("qwen2", 2, true, true);
}

#[test]
fn tiny_gpt2_export_is_raised_and_matches_transformers() {
    let path = tiny_export("gpt2");
    check_tiny("gpt2", 2, false, false);
    let (model, _) = lowered(&path, "onnx");
    assert!(count(&model, |op| matches!(op, Op::Gelu { .. })) == 2, "gelu_new is raised in both layers");
    assert!(count(&model, |op| matches!(op, Op::LayerNorm { .. })) == 5);
}

#[test]
fn sliding_window_attention_is_not_raised_and_the_graph_recomputes() {
    let path = tiny_export("mistral");
    let (prompts, want_logits, want_greedy) = tiny_golden("mistral");
    let (model, notes) = lowered(&path, "onnx");
    assert_eq!(count(&model, |op| matches!(op, Op::Attention { .. })), 0);
    let text: Vec<String> = notes.iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|n| n.contains("not the causal mask")), "{text:?}");
    assert!(text.iter().any(|n| n.contains("recomputes")), "{text:?}");
    // The graph follows the decoder contract without a tree mask, and decodes by recomputing.
    assert_eq!(model.graph.inputs().len(), 2);
    let exec = CpuExecutor::new(model.graph, model.weights).unwrap();
    let mut exec = RecomputingExecutor::new(exec).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        exec.reset();
        let (logits, vocab) = exec.step(p, &(0..p.len() as i64).collect::<Vec<_>>(), None).unwrap();
        let rel = max_rel_diff(&logits[logits.len() - vocab..], &want_logits[i]);
        assert!(rel <= 1e-3, "mistral prompt {i}: logits differ by {rel:e}");
        let out = generate(&mut exec, p, &greedy(want_greedy[i].len())).unwrap();
        assert_eq!(out.tokens, want_greedy[i], "mistral prompt {i}: greedy tokens by recomputing");
        let spec = generate_speculative(&mut exec, &mut ngram_drafter(), p, &greedy(want_greedy[i].len())).unwrap();
        assert_eq!(spec.tokens, want_greedy[i], "mistral prompt {i}: n-gram speculation by recomputing");
    }
}

/// Greedy tokens of `exec` plain and with n-gram speculation (which must agree).
fn decode_both(exec: &mut dyn DecoderExecutor, prompt: &[u32], n: usize) -> Vec<u32> {
    let plain = generate(exec, prompt, &greedy(n)).unwrap().tokens;
    let spec = generate_speculative(exec, &mut ngram_drafter(), prompt, &greedy(n)).unwrap().tokens;
    assert_eq!(spec, plain, "speculative decoding changed the greedy tokens");
    plain
}

/// A raised export against transformers' goldens and against kiln's own import of the same HF directory.
fn check_real(name: &str, hf_dir: &Path, golden_dir: &Path) {
    let path = export(name, hf_dir);
    let (plain, _) = lowered(&path, "default");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir.join("golden.json")).unwrap()).unwrap();
    let mut exec = CpuExecutor::new(plain.graph, plain.weights).unwrap();
    for (i, p) in golden["prompts"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let bytes = std::fs::read(golden_dir.join(format!("logits_{i}.f32"))).unwrap();
        let want: Vec<f64> =
            bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect();
        let rel = max_rel_diff(&last_logits(&mut exec, &ids), &want);
        assert!(rel <= 1e-3, "{name} unraised prompt {i}: logits differ by {rel:e} of max|logit|");
    }
    drop(exec);

    let (model, notes) = lowered(&path, "onnx");
    let layers = count(&model, |op| matches!(op, Op::Attention { layer: Some(_), .. }));
    assert!(layers > 0, "{name}: no cached attention; notes: {notes:?}");
    assert_eq!(count(&model, |op| matches!(op, Op::Rope { .. })), 2 * layers, "{name}: rope on q and k");
    assert_eq!(count(&model, |op| matches!(op, Op::RmsNorm { .. })), 2 * layers + 1, "{name}: rms_norm");
    assert_eq!(count(&model, |op| matches!(op, Op::Swiglu { .. })), layers, "{name}: swiglu");
    // transformers' goldens: logits within 1e-3 · max|logit| and the greedy tokens, decoded with the cache.
    let agreement = check_against_goldens(name, model.clone(), golden_dir, 1e-3, 64);
    eprintln!("{name}: raised ONNX export within {:.2e} of transformers", agreement.worst_relative_diff);

    // kiln's Hugging Face import of the same model decodes the same tokens, plain and speculative.
    let hf = kiln::load_model(hf_dir, None).unwrap();
    let mut hf_exec = CpuExecutor::new(hf.graph, hf.weights).unwrap();
    let mut onnx_exec = CpuExecutor::new(model.graph, model.weights).unwrap();
    for p in golden["prompts"].as_array().unwrap() {
        let ids: Vec<u32> = p["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(decode_both(&mut onnx_exec, &ids, 48), decode_both(&mut hf_exec, &ids, 48), "{name}");
    }
}

#[test]
fn default_model_export_is_raised_and_decodes_like_the_hf_import() {
    check_real("default", &repo().join("models/default"), &repo().join("tests/fixtures/default_model"));
}

/// The default model exported with the ONNX Runtime / Optimum cache interface (`tools/export_onnx.py
/// --with-past`: past_key_values inputs, present outputs): the import binds that interface to kiln's own
/// KV cache, and the graph is raised and decodes exactly like the logits-only export.
#[test]
fn default_model_export_with_the_onnx_runtime_cache_interface_decodes_with_kilns_cache() {
    let path = export("default-past", &repo().join("models/default"));
    let imported = kiln_frontends::onnx::load_onnx_with(&path, &Default::default()).unwrap();
    assert_eq!(imported.cache_interface_layers, Some(4));
    assert_eq!(imported.input_names, ["input_ids"]);
    assert_eq!(imported.output_names, ["logits"]);
    check_real("default-past", &repo().join("models/default"), &repo().join("tests/fixtures/default_model"));
}

/// [`check_real`] on the SmolLM2 export `name`, when the model cache has SmolLM2.
fn check_smollm2(name: &str) {
    let Some(hf) = real_model(model_cache().join("smollm2/hf"), "run tools/fetch_smollm2.sh and tools/gguf_to_hf.py")
    else {
        return;
    };
    check_real(name, &hf, &repo().join("tests/fixtures/smollm2"));
}

#[test]
fn smollm2_export_is_raised_and_decodes_like_the_hf_import() {
    check_smollm2("smollm2");
}

#[test]
fn smollm2_export_with_the_onnx_runtime_cache_interface_decodes_with_kilns_cache() {
    check_smollm2("smollm2-past");
}

#[test]
fn raised_tiny_qwen2_graph_snapshot() {
    // The whole `onnx` pipeline with the weights: what `kiln ir model.onnx --pipeline onnx` prints. One
    // `attention` per layer reading the KV cache, `rope` on q and k, `rms_norm`, `linear` with the q/k/v
    // biases, `swiglu`, and the tied head as `logits` over the embedding table.
    let (model, notes) = lowered(&tiny_export("qwen2"), "onnx");
    assert!(notes.is_empty(), "{notes:?}");
    insta::with_settings!({ omit_expression => true, prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("onnx_qwen2_raised", kiln_ir::text::print(&model.graph));
    });
}
