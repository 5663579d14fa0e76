//! Malformed Hugging Face directories: each is a fixture copy with one thing broken, and each error must
//! name the file and the problem (and never panic).

use kiln_frontends::hf::load_hf_dir;
use kiln_tests::hf_scratch::{RawSafetensors, Scratch};
use serde_json::json;

/// Imports `s.dir`, expecting an error; returns its message.
fn import_error(s: &Scratch) -> String {
    match load_hf_dir(&s.dir) {
        Ok(_) => panic!("importing {} succeeded but should have failed", s.dir.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "error message lacks `{p}`:\n{message}");
    }
}

fn edit_weights(s: &Scratch, f: impl FnOnce(&mut RawSafetensors)) {
    let path = s.path("model.safetensors");
    let mut raw = RawSafetensors::read(&path);
    f(&mut raw);
    raw.write(&path);
}

#[test]
fn truncated_safetensors() {
    let s = Scratch::copy_of("llama", "truncated");
    let path = s.path("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = import_error(&s);
    assert_mentions(&e, &["model.safetensors", "model.norm.weight", "truncated"]);

    // Cut inside the header itself.
    std::fs::write(&path, &bytes[..100]).unwrap();
    let e = import_error(&s);
    assert_mentions(&e, &["model.safetensors", "header length", "truncated"]);
}

#[test]
fn offsets_outside_the_file() {
    let s = Scratch::copy_of("llama", "outside");
    edit_weights(&s, |raw| {
        // A consistent header (shape matches the byte count) whose last tensor runs past the end of the data.
        let e = raw.entry("model.norm.weight");
        e.insert("shape".into(), json!([128]));
        e.insert("data_offsets".into(), json!([427008, 427520]));
    });
    let e = import_error(&s);
    assert_mentions(&e, &["model.safetensors", "model.norm.weight", "427520", "holds only 427264", "outside"]);
}

#[test]
fn overlapping_tensors() {
    let s = Scratch::copy_of("llama", "overlap");
    edit_weights(&s, |raw| {
        // Layer 1's q_proj starts inside o_proj (402432 is where o_proj ends).
        raw.entry("model.layers.1.self_attn.q_proj.weight").insert("data_offsets".into(), json!([400000, 416384]));
    });
    let e = import_error(&s);
    assert_mentions(
        &e,
        &["model.safetensors", "model.layers.1.self_attn.q_proj.weight", "overlaps", "model.layers.1.self_attn.o_proj"],
    );
}

#[test]
fn missing_tensors_are_all_named() {
    let s = Scratch::copy_of("llama", "missing");
    edit_weights(&s, |raw| {
        for name in ["model.layers.1.mlp.up_proj.weight", "model.norm.weight"] {
            let v = raw.header.remove(name).unwrap();
            raw.header.insert(format!("{name}.renamed"), v);
        }
    });
    let e = import_error(&s);
    assert_mentions(
        &e,
        &["model.safetensors", "missing tensors", "model.layers.1.mlp.up_proj.weight", "model.norm.weight"],
    );
}

#[test]
fn untied_model_without_its_head() {
    let s = Scratch::copy_of("llama", "no-head");
    edit_weights(&s, |raw| {
        let v = raw.header.remove("lm_head.weight").unwrap();
        raw.header.insert("unused.weight".into(), v);
    });
    assert_mentions(&import_error(&s), &["model.safetensors", "missing tensors: lm_head.weight"]);
}

#[test]
fn tensor_shape_disagreeing_with_the_config() {
    let s = Scratch::copy_of("llama", "shape");
    edit_weights(&s, |raw| {
        raw.entry("model.layers.0.self_attn.q_proj.weight").insert("shape".into(), json!([32, 128]));
    });
    let e = import_error(&s);
    assert_mentions(
        &e,
        &["model.safetensors", "model.layers.0.self_attn.q_proj.weight", "[32, 128]", "config implies [64, 64]"],
    );

    // The same disagreement seen from the config side.
    let s = Scratch::copy_of("gemma3", "shape-config");
    s.edit_config(|c| {
        c.insert("intermediate_size".into(), json!(96));
    });
    assert_mentions(&import_error(&s), &["model.layers.0.mlp.gate_proj.weight", "[128, 64]", "[96, 64]"]);
}

#[test]
fn missing_config_fields() {
    for (arch, field) in [("llama", "hidden_size"), ("qwen3", "num_hidden_layers"), ("gpt2", "n_embd")] {
        let s = Scratch::copy_of(arch, &format!("field-{field}"));
        s.edit_config(|c| {
            c.remove(field);
        });
        assert_mentions(&import_error(&s), &["config.json", &format!("missing field `{field}`")]);
    }
    // A field of the wrong type is named too.
    let s = Scratch::copy_of("mistral", "field-type");
    s.edit_config(|c| {
        c.insert("num_attention_heads".into(), json!("four"));
    });
    assert_mentions(&import_error(&s), &["config.json", "`num_attention_heads`", "integer"]);
    // A directory without config.json.
    let s = Scratch::copy_of("qwen2", "no-config");
    std::fs::remove_file(s.path("config.json")).unwrap();
    assert_mentions(&import_error(&s), &["config.json", "cannot read"]);
}

#[test]
fn unknown_architecture() {
    let s = Scratch::copy_of("llama", "arch");
    s.edit_config(|c| {
        c.insert("architectures".into(), json!(["FalconForCausalLM"]));
    });
    let e = import_error(&s);
    assert_mentions(
        &e,
        &["config.json", "unsupported architecture `FalconForCausalLM`", "LlamaForCausalLM", "GPT2LMHeadModel"],
    );
}

#[test]
fn unsupported_rope_scaling() {
    // transformers v5 form.
    let s = Scratch::copy_of("llama", "rope-v5");
    s.edit_config(|c| {
        c.insert("rope_parameters".into(), json!({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}));
    });
    assert_mentions(&import_error(&s), &["config.json", "unsupported rope scaling type `dynamic`", "llama3", "yarn"]);
    // transformers v4 form.
    let s = Scratch::copy_of("mistral", "rope-v4");
    s.edit_config(|c| {
        c.remove("rope_parameters");
        c.insert("rope_scaling".into(), json!({"type": "longrope", "factor": 2.0}));
    });
    assert_mentions(&import_error(&s), &["config.json", "unsupported rope scaling type `longrope`"]);
}

#[test]
fn tokenizer_json_that_does_not_parse() {
    let s = Scratch::copy_of("qwen3", "tokenizer");
    std::fs::write(s.path("tokenizer.json"), r#"{"version": "1.0", "model": {"type": "BPE", "vocab": "#).unwrap();
    assert_mentions(&import_error(&s), &["tokenizer.json", "not valid JSON"]);
}

#[test]
fn json_files_that_do_not_parse() {
    for file in ["config.json", "generation_config.json"] {
        let s = Scratch::copy_of("gpt2", &format!("json-{file}"));
        std::fs::write(s.path(file), "{\"vocab_size\": 256,").unwrap();
        assert_mentions(&import_error(&s), &[file, "not valid JSON"]);
    }
}

#[test]
fn inconsistent_configs_are_errors_not_panics() {
    let cases = [
        ("num_key_value_heads", json!(3)),
        ("num_attention_heads", json!(0)),
        ("hidden_size", json!(0)),
        ("vocab_size", json!(0)),
        ("layer_types", json!(["full_attention"])),
        ("rms_norm_eps", json!(-1.0)),
        ("head_dim", json!(15)),
    ];
    for (i, (field, value)) in cases.into_iter().enumerate() {
        let s = Scratch::copy_of("qwen3", &format!("inconsistent-{i}"));
        s.edit_config(|c| {
            c.insert(field.into(), value.clone());
        });
        let e = import_error(&s);
        assert!(e.contains("config.json"), "{field} = {value}: {e}");
    }
}

#[test]
fn sharded_index_naming_an_absent_shard() {
    let s = Scratch::copy_of("llama", "shard-absent");
    let raw = RawSafetensors::read(&s.path("model.safetensors"));
    std::fs::remove_file(s.path("model.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> =
        raw.names().into_iter().map(|n| (n, json!("model-00001-of-00001.safetensors"))).collect();
    s.write_json("model.safetensors.index.json", &json!({"metadata": {}, "weight_map": map}));
    assert_mentions(&import_error(&s), &["model-00001-of-00001.safetensors", "cannot read"]);
}
