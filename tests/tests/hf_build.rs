//! The Hugging Face frontend beyond the fixtures as saved: quantized and bf16 weights through
//! `build_model`, transformers v4 config forms, GPT-2 checkpoint variants, sharded weights, the tokenizer
//! and generation metadata, and config features the tiny fixtures do not exercise.

use kiln_frontends::hf::{CONV1D_LAYOUT_KEY, build_model, load_hf_dir};
use kiln_frontends::safetensors_weights::load_safetensors;
use kiln_ir::{DType, Model, ModelMeta, Op, RopeScaling, Tensor, WeightStore};
use kiln_runtime::CpuExecutor;
use kiln_tests::hf_scratch::{RawSafetensors, Scratch, fixture_dir};
use serde_json::{Value, json};

fn fixture_config(arch: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_dir(arch).join("config.json")).unwrap()).unwrap()
}

fn fixture_weights(arch: &str) -> WeightStore {
    load_safetensors(&fixture_dir(arch).join("model.safetensors")).unwrap()
}

fn meta(source: &str) -> ModelMeta {
    ModelMeta { source: source.into(), ..ModelMeta::default() }
}

/// Last-position logits of `prompt`.
fn last_logits(model: &Model, prompt: &[i64]) -> Vec<f32> {
    let mut exec = CpuExecutor::new(model.graph.clone(), model.weights.clone()).unwrap();
    let n = prompt.len();
    let ids: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
    let positions: Vec<i64> = (0..n as i64).collect();
    let inputs = kiln_runtime::decoding::decoder_inputs(exec.graph(), &ids, &positions, None).unwrap();
    let out = exec.run(&inputs).unwrap().remove(0).to_f32_vec();
    let vocab = model.meta.vocab_size as usize;
    out[(n - 1) * vocab..].to_vec()
}

/// The golden last-position logits of the fixture's first prompt.
fn golden_first(arch: &str) -> (Vec<i64>, Vec<f64>) {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir(arch).join("golden.json")).unwrap()).unwrap();
    let prompt = g["prompts"][0].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    let logits = g["last_logits"][0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    (prompt, logits)
}

/// max|a - b| / max|b|.
fn relative_diff(a: &[f32], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs())) / scale
}

fn weight_types(model: &Model) -> Vec<(String, DType)> {
    model.weights.iter().map(|(n, w)| (n.to_string(), w.ty.dtype)).collect()
}

#[test]
fn quantized_weights_import_without_conversion() {
    let source = fixture_weights("llama");
    let mut store = WeightStore::new();
    for (name, w) in source.iter() {
        let dims = w.ty.shape.as_static().unwrap();
        let values = w.to_tensor().to_f32_vec();
        match dims[..] {
            [n, k] if name.contains("embed") => store.insert_quantized(name, DType::Q8C, n, k, &values).unwrap(),
            [n, k] => {
                store.insert_quantized(name, DType::Q4G { group_size: 32, zero_points: true }, n, k, &values).unwrap()
            }
            _ => store.insert(name, w.ty.clone(), w.payload.clone()).unwrap(),
        }
    }
    // The reference: the same quantized values, dequantized to f32 in the test.
    let mut dequantized = WeightStore::new();
    for (name, w) in store.iter() {
        dequantized.insert_tensor(name, &w.to_tensor()).unwrap();
    }
    let model = build_model(&fixture_config("llama"), store, meta("quantized llama")).unwrap();
    for (name, dtype) in weight_types(&model) {
        let want = if name.contains("norm") {
            DType::F32
        } else if name.contains("embed") {
            DType::Q8C
        } else {
            DType::Q4G { group_size: 32, zero_points: true }
        };
        assert_eq!(dtype, want, "{name}");
    }
    let reference = build_model(&fixture_config("llama"), dequantized, meta("dequantized llama")).unwrap();
    let (prompt, golden) = golden_first("llama");
    let got = last_logits(&model, &prompt);
    let want: Vec<f64> = last_logits(&reference, &prompt).into_iter().map(f64::from).collect();
    let diff = relative_diff(&got, &want);
    assert!(diff <= 1e-5, "quantized vs dequantized weights: relative logit difference {diff}");
    // And quantization did change the model (the weights were not silently kept in f32).
    assert!(relative_diff(&got, &golden) > 1e-3);
}

#[test]
fn bf16_checkpoints_keep_their_dtype() {
    let s = Scratch::copy_of("gemma3", "bf16");
    let raw = RawSafetensors::read(&s.path("model.safetensors"));
    let tensors = raw
        .names()
        .into_iter()
        .map(|name| {
            let bytes: Vec<u8> = raw
                .bytes(&name)
                .chunks_exact(4)
                .flat_map(|c| half::bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
                .collect();
            let shape = raw.header[&name]["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
            (name, "BF16".to_string(), shape, bytes)
        })
        .collect();
    RawSafetensors::from_tensors(tensors).write(&s.path("model.safetensors"));
    let model = load_hf_dir(&s.dir).unwrap();
    assert!(weight_types(&model).iter().all(|(_, d)| *d == DType::BF16));
    // Activations are f32: the bf16 embedding is cast once, right after the lookup.
    let casts = model.graph.nodes().filter(|(_, n)| matches!(n.op, Op::Cast { to: DType::F32, .. })).count();
    assert_eq!(casts, 1);
    let (prompt, golden) = golden_first("gemma3");
    let diff = relative_diff(&last_logits(&model, &prompt), &golden);
    assert!(diff > 1e-6 && diff < 0.05, "relative logit difference {diff}");
}

/// A transformers v4 config (rope_theta / rope_scaling / rope_local_base_freq / sliding_window_pattern)
/// builds the same graph as the v5 config (rope_parameters / layer_types) of the same model.
#[test]
fn transformers_v4_configs_build_the_same_graph() {
    let v5 = fixture_config("gemma3");
    let mut v4 = v5.clone();
    let c = v4.as_object_mut().unwrap();
    for k in ["rope_parameters", "layer_types", "_sliding_window_pattern"] {
        c.remove(k);
    }
    c.insert("rope_theta".into(), json!(1000000.0));
    c.insert("rope_local_base_freq".into(), json!(10000.0));
    c.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": 8.0}));
    c.insert("sliding_window_pattern".into(), json!(4));
    let print = |config: &Value| {
        let model = build_model(config, fixture_weights("gemma3"), meta("gemma3")).unwrap();
        kiln_ir::text::print(&model.graph)
    };
    assert_eq!(print(&v4), print(&v5));

    let v5 = fixture_config("llama");
    let mut v4 = v5.clone();
    let c = v4.as_object_mut().unwrap();
    let params = c.remove("rope_parameters").unwrap();
    c.insert("rope_theta".into(), params["rope_theta"].clone());
    c.insert(
        "rope_scaling".into(),
        json!({"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}),
    );
    let print = |config: &Value| {
        let model = build_model(config, fixture_weights("llama"), meta("llama")).unwrap();
        kiln_ir::text::print(&model.graph)
    };
    assert_eq!(print(&v4), print(&v5));
    assert!(print(&v5).contains("llama3(8.0, 1.0, 4.0, 32)"));
}

#[test]
fn gpt2_checkpoint_variants_agree() {
    let config = fixture_config("gpt2");
    let reference = build_model(&config, fixture_weights("gpt2"), meta("gpt2")).unwrap();
    let prompt = [5, 17, 200, 3];
    let want = last_logits(&reference, &prompt);

    // OpenAI-converted checkpoints name tensors without the `transformer.` prefix.
    let mut unprefixed = WeightStore::new();
    for (name, w) in fixture_weights("gpt2").iter() {
        let name = name.strip_prefix("transformer.").unwrap_or(name);
        unprefixed.insert(name, w.ty.clone(), w.payload.clone()).unwrap();
    }
    let model = build_model(&config, unprefixed, meta("gpt2 unprefixed")).unwrap();
    assert_eq!(last_logits(&model, &prompt), want);

    // GGUF-style `[out, in]` Conv1D weights, announced in the config.
    let mut out_in = WeightStore::new();
    for (name, w) in fixture_weights("gpt2").iter() {
        let conv1d = name.starts_with("transformer.h.") && name.ends_with("weight") && !name.contains(".ln_");
        if conv1d {
            let t = w.to_tensor();
            let (rows, cols) = (t.shape()[0], t.shape()[1]);
            let v = t.to_f32_vec();
            let transposed: Vec<f32> = (0..cols * rows).map(|i| v[(i % rows) * cols + i / rows]).collect();
            out_in.insert_tensor(name, &Tensor::f32(vec![cols, rows], transposed).unwrap()).unwrap();
        } else {
            out_in.insert(name, w.ty.clone(), w.payload.clone()).unwrap();
        }
    }
    let mut config_out_in = config.clone();
    config_out_in[CONV1D_LAYOUT_KEY] = json!("out_in");
    let model = build_model(&config_out_in, out_in.clone(), meta("gpt2 out_in")).unwrap();
    assert_eq!(last_logits(&model, &prompt), want);

    // Without the key, those weights are read as [in, out]: c_attn's shape no longer fits the config.
    let e = build_model(&config, out_in, meta("gpt2 mislabelled")).unwrap_err().to_string();
    assert!(e.contains("gpt2 mislabelled") && e.contains("c_attn.weight") && e.contains("[192, 64]"), "{e}");
}

#[test]
fn sharded_weights_load_like_a_single_file() {
    let s = Scratch::copy_of("qwen2", "sharded");
    let raw = RawSafetensors::read(&s.path("model.safetensors"));
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    let names = raw.names();
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in names.chunks(names.len() / 2 + 1).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", shard + 1);
        let tensors = part
            .iter()
            .map(|n| {
                weight_map.insert(n.clone(), json!(file));
                let shape = raw.header[n]["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
                (n.clone(), "F32".to_string(), shape, raw.bytes(n).to_vec())
            })
            .collect();
        RawSafetensors::from_tensors(tensors).write(&s.path(&file));
    }
    s.write_json("model.safetensors.index.json", &json!({"metadata": {}, "weight_map": weight_map}));
    let sharded = load_hf_dir(&s.dir).unwrap();
    let single = load_hf_dir(&fixture_dir("qwen2")).unwrap();
    let prompt = [1, 2, 3, 250, 7];
    assert_eq!(last_logits(&sharded, &prompt), last_logits(&single, &prompt));

    // An index listing a tensor that no shard holds.
    weight_map.insert("model.layers.9.mlp.up_proj.weight".into(), json!("model-00001-of-00002.safetensors"));
    s.write_json("model.safetensors.index.json", &json!({"weight_map": weight_map}));
    let e = load_hf_dir(&s.dir).unwrap_err().to_string();
    assert!(e.contains("model.safetensors.index.json") && e.contains("model.layers.9.mlp.up_proj.weight"), "{e}");
}

#[test]
fn tokenizer_chat_template_and_special_tokens() {
    let s = Scratch::copy_of("llama", "meta");
    let tokenizer = r#"{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}"#;
    std::fs::write(s.path("tokenizer.json"), tokenizer).unwrap();
    s.write_json("tokenizer_config.json", &json!({"chat_template": "{{ messages }}", "bos_token": "<s>"}));
    s.write_json("generation_config.json", &json!({"eos_token_id": [2, 7], "bos_token_id": 1}));
    let model = load_hf_dir(&s.dir).unwrap();
    let m = &model.meta;
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.tokenizer_json.as_deref(), Some(tokenizer));
    assert_eq!(m.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(m.eos_token_ids, vec![2, 7]);
    assert_eq!(m.bos_token_id, Some(1));
    assert_eq!((m.vocab_size, m.max_position), (256, Some(256)));
    assert_eq!(m.source, s.dir.display().to_string());
    let config: Value = serde_json::from_str(m.config_json.as_deref().unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 64);

    // chat_template.jinja wins over tokenizer_config.json, as in transformers; named template lists work.
    std::fs::write(s.path("chat_template.jinja"), "jinja {{ x }}").unwrap();
    assert_eq!(load_hf_dir(&s.dir).unwrap().meta.chat_template.as_deref(), Some("jinja {{ x }}"));
    std::fs::remove_file(s.path("chat_template.jinja")).unwrap();
    s.write_json(
        "tokenizer_config.json",
        &json!({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}),
    );
    assert_eq!(load_hf_dir(&s.dir).unwrap().meta.chat_template.as_deref(), Some("D"));

    // Without generation_config.json the ids come from config.json.
    std::fs::remove_file(s.path("generation_config.json")).unwrap();
    let m = load_hf_dir(&s.dir).unwrap().meta;
    assert_eq!((m.eos_token_ids, m.bos_token_id), (vec![2], Some(1)));
}

/// An attention node's `layer`, `window` and `softcap`.
type AttentionAttrs = (Option<u32>, Option<u32>, Option<f32>);
/// A rope node's `theta`, `rotary_dim` and `scaling`.
type RopeAttrs = (f64, u32, RopeScaling);

/// Every attention node's and every rope node's attributes, in program order.
fn attention_and_rope(model: &Model) -> (Vec<AttentionAttrs>, Vec<RopeAttrs>) {
    let mut attention = Vec::new();
    let mut rope = Vec::new();
    for (_, node) in model.graph.nodes() {
        match &node.op {
            Op::Attention { layer, window, softcap, .. } => attention.push((*layer, *window, *softcap)),
            Op::Rope { theta, rotary_dim, scaling, .. } => rope.push((*theta, *rotary_dim, *scaling)),
            _ => {}
        }
    }
    (attention, rope)
}

#[test]
fn fixture_graphs_carry_each_layers_window_and_rope() {
    let model = load_hf_dir(&fixture_dir("gemma3")).unwrap();
    let (attention, rope) = attention_and_rope(&model);
    let w = Some(8);
    assert_eq!(attention, vec![(Some(0), w, None), (Some(1), w, None), (Some(2), w, None), (Some(3), None, None)]);
    // Two rope nodes (q and k) per layer: local theta on sliding layers, scaled global theta on the last.
    let per_layer: Vec<_> = rope.chunks(2).map(|c| c[0]).collect();
    assert_eq!(per_layer[0], (10000.0, 16, RopeScaling::None));
    assert_eq!(per_layer[3], (1000000.0, 16, RopeScaling::Linear { factor: 8.0 }));
    let text = kiln_ir::text::print(&model.graph);
    assert!(text.contains("rms_norm") && text.contains("offset = 1.0"), "Gemma norms use the (1 + w) offset");
    assert!(text.contains("logits(") && text.contains("softcap = 30.0"));
}

/// Config features without a fixture: attention/MLP biases, Qwen2's sliding layers, partial rotary, yarn,
/// Gemma's attention soft-capping. Each builds, verifies, runs, and carries the feature in its graph.
#[test]
fn config_features_without_fixtures() {
    // Llama with biases everywhere: the biases are read and change the output.
    let mut config = fixture_config("llama");
    config["attention_bias"] = json!(true);
    config["mlp_bias"] = json!(true);
    let base = fixture_weights("llama");
    let mut store = WeightStore::new();
    for (name, w) in base.iter() {
        store.insert(name, w.ty.clone(), w.payload.clone()).unwrap();
        if name.contains("_proj.weight") {
            let rows = w.ty.shape.as_static().unwrap()[0];
            let bias: Vec<f32> = (0..rows).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.05).collect();
            store.insert_tensor(name.replace(".weight", ".bias"), &Tensor::f32(vec![rows], bias).unwrap()).unwrap();
        }
    }
    let e = build_model(&config, base, meta("llama without biases")).unwrap_err().to_string();
    assert!(e.contains("missing tensors") && e.contains("model.layers.0.self_attn.o_proj.bias"), "{e}");
    let biased = build_model(&config, store, meta("llama with biases")).unwrap();
    let linears_with_bias = biased.graph.nodes().filter(|(_, n)| matches!(n.op, Op::Linear {}) && n.inputs.len() == 3);
    assert_eq!(linears_with_bias.count(), 2 * 7);
    let plain = load_hf_dir(&fixture_dir("llama")).unwrap();
    assert_ne!(last_logits(&biased, &[3, 4, 5]), last_logits(&plain, &[3, 4, 5]));

    // Qwen2 with sliding windows from layer 1 on (transformers v4 form, no layer_types).
    let mut config = fixture_config("qwen2");
    config.as_object_mut().unwrap().remove("layer_types");
    config["use_sliding_window"] = json!(true);
    config["sliding_window"] = json!(4);
    config["max_window_layers"] = json!(1);
    let model = build_model(&config, fixture_weights("qwen2"), meta("qwen2")).unwrap();
    let (attention, _) = attention_and_rope(&model);
    assert_eq!(attention, vec![(Some(0), None, None), (Some(1), Some(4), None)]);
    assert!(last_logits(&model, &[9; 12]).iter().all(|x| x.is_finite()));

    // Partial rotary and yarn scaling.
    let mut config = fixture_config("llama");
    config["partial_rotary_factor"] = json!(0.5);
    config["rope_parameters"] =
        json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0});
    let model = build_model(&config, fixture_weights("llama"), meta("llama yarn")).unwrap();
    let (_, rope) = attention_and_rope(&model);
    let RopeScaling::Yarn { factor, original_max_position, beta_fast, beta_slow, attention_factor } = rope[0].2 else {
        panic!("expected yarn, got {:?}", rope[0].2)
    };
    assert_eq!((rope[0].1, factor, original_max_position, beta_fast, beta_slow), (8, 4.0, 64, 32.0, 1.0));
    assert!((attention_factor - (0.1 * 4.0f64.ln() + 1.0)).abs() < 1e-12);
    assert!(last_logits(&model, &[1, 2, 3]).iter().all(|x| x.is_finite()));

    // Gemma 3 with attention soft-capping.
    let mut config = fixture_config("gemma3");
    config["attn_logit_softcapping"] = json!(50.0);
    let model = build_model(&config, fixture_weights("gemma3"), meta("gemma3")).unwrap();
    let (attention, _) = attention_and_rope(&model);
    assert!(attention.iter().all(|a| a.2 == Some(50.0)));
    assert!(last_logits(&model, &[1, 2, 3]).iter().all(|x| x.is_finite()));
}
