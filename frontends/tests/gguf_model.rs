//! GGUF models into HF-style configs and HF-named weights: each architecture's hyperparameters and tensor
//! names, the value fixups llama.cpp's converter made (Q/K row permutation, Gemma's `1 +`, GPT-2's
//! transposed Conv1D weights), errors for unknown architectures and missing keys, and a property test
//! that no truncated or corrupted file makes the importer panic.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Dims, GgufBuilder, TINY, V, tiny_model, values};
use kiln_frontends::gguf::{GgufFile, import_gguf, import_parsed};
use kiln_ir::DType;
use proptest::prelude::*;

fn import(b: &GgufBuilder) -> Result<kiln_frontends::gguf::GgufImport, kiln_frontends::gguf::GgufError> {
    let f = GgufFile::parse(Arc::new(b.build()))?;
    import_parsed(&f, Path::new("mem.gguf"))
}

fn weight_f32(imp: &kiln_frontends::gguf::GgufImport, name: &str) -> (Vec<usize>, Vec<f32>) {
    let w = imp.weights.get(name).unwrap_or_else(|_| panic!("no weight {name}"));
    (w.ty.shape.as_static().unwrap(), w.to_tensor().to_f32_vec())
}

/// llama.cpp's converter permutation of Q/K rows (reshape [heads, 2, hd/2, ...], swap axes 1 and 2),
/// written here from its description: GGUF row h*hd + 2j + i holds HF row h*hd + i*hd/2 + j.
fn llama_cpp_permute(hf: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0.0; hf.len()];
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let (dst, src) = (h * hd + 2 * j + i, h * hd + i * hd / 2 + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&hf[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn llama_config_names_and_unpermuted_qk() {
    let d = Dims { layers: 2, ..TINY };
    let mut b = tiny_model("llama", d);
    let (q_rows, k_rows, h) = ((d.heads * d.head_dim) as usize, (d.kv_heads * d.head_dim) as usize, d.hidden as usize);
    let hf_q = values(q_rows * h, 101);
    let hf_k = values(k_rows * h, 102);
    b.f32_tensor(
        "blk.1.attn_q.weight",
        &[q_rows as u64, h as u64],
        &llama_cpp_permute(&hf_q, q_rows, h, d.heads as usize),
    );
    b.f32_tensor(
        "blk.1.attn_k.weight",
        &[k_rows as u64, h as u64],
        &llama_cpp_permute(&hf_k, k_rows, h, d.kv_heads as usize),
    );
    // Q4_0 rows move whole: a quantized K is unpermuted too (one block of 32 per row here).
    let q40_rows: Vec<Vec<u8>> = (0..k_rows)
        .map(|r| {
            let mut blk = half::f16::from_f32(0.01 * (r + 1) as f32).to_le_bytes().to_vec();
            blk.extend((0..16).map(|j| (j as u8) ^ (r as u8 * 7)));
            blk
        })
        .collect();
    let hd = d.head_dim as usize;
    let mut permuted = Vec::new();
    for dst in 0..k_rows {
        let (head, within) = (dst / hd, dst % hd);
        let (j, i) = (within / 2, within % 2);
        permuted.extend(&q40_rows[head * hd + i * hd / 2 + j]);
    }
    b.raw_tensor("blk.0.attn_k.weight", &[k_rows as u64, h as u64], 2, permuted);

    let imp = import(&b).unwrap();
    let c = &imp.config;
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["hidden_size"], 32);
    assert_eq!(c["num_hidden_layers"], 2);
    assert_eq!(c["num_attention_heads"], 2);
    assert_eq!(c["num_key_value_heads"], 1);
    assert_eq!(c["head_dim"], 16);
    assert_eq!(c["intermediate_size"], 32);
    assert_eq!(c["max_position_embeddings"], 256);
    assert_eq!(c["rms_norm_eps"], 1e-6);
    assert_eq!(c["rope_theta"], 10000.0);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["vocab_size"], imp.meta.vocab_size);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);
    assert_eq!(imp.meta.architecture, "llama");
    assert_eq!(imp.meta.eos_token_ids, vec![2]);
    assert_eq!(imp.meta.bos_token_id, Some(1));
    assert_eq!(imp.meta.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(imp.meta.max_position, Some(256));

    let names: Vec<&str> = imp.weights.iter().map(|(n, _)| n).collect();
    for n in [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(!names.contains(&"lm_head.weight"));

    assert_eq!(weight_f32(&imp, "model.layers.1.self_attn.q_proj.weight"), (vec![q_rows, h], hf_q));
    assert_eq!(weight_f32(&imp, "model.layers.1.self_attn.k_proj.weight"), (vec![k_rows, h], hf_k));
    let k0 = imp.weights.get("model.layers.0.self_attn.k_proj.weight").unwrap();
    assert_eq!(k0.ty.dtype, DType::Q4G { group_size: 32, zero_points: false });
    let mut row = vec![0.0; h];
    for (r, blk) in q40_rows.iter().enumerate() {
        k0.read_row_f32(r, &mut row);
        let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f64();
        for (c, &got) in row.iter().enumerate() {
            let nib = if c < 16 { blk[2 + c] & 15 } else { blk[2 + c - 16] >> 4 };
            assert_eq!(got as f64, (nib as f64 - 8.0) * d, "row {r} col {c}");
        }
    }
    // V and the output projection are not permuted.
    let f = GgufFile::parse(Arc::new(b.build())).unwrap();
    let v_info = f.tensor("blk.1.attn_v.weight").unwrap();
    let v_raw: Vec<f32> = f.tensor_bytes(v_info).chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(weight_f32(&imp, "model.layers.1.self_attn.v_proj.weight").1, v_raw);
}

#[test]
fn untied_output_and_qwen2_biases() {
    let mut b = tiny_model("qwen2", TINY);
    let vocab = b.tensors.iter().find(|t| t.name == "token_embd.weight").unwrap().ggml_dims[1];
    b.f32_tensor("output.weight", &[vocab, 32], &values(vocab as usize * 32, 7));
    let imp = import(&b).unwrap();
    assert_eq!(imp.config["architectures"][0], "Qwen2ForCausalLM");
    assert_eq!(imp.config["tie_word_embeddings"], false);
    assert_eq!(imp.config["attention_bias"], true);
    assert!(imp.weights.contains("lm_head.weight"));
    assert!(imp.weights.contains("model.layers.0.self_attn.q_proj.bias"));
    // Qwen2 GGUFs are not permuted: Q comes through as stored.
    let f = GgufFile::parse(Arc::new(b.build())).unwrap();
    let raw: Vec<f32> = f
        .tensor_bytes(f.tensor("blk.0.attn_q.weight").unwrap())
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(weight_f32(&imp, "model.layers.0.self_attn.q_proj.weight").1, raw);
}

#[test]
fn qwen3_has_qk_norms() {
    let imp = import(&tiny_model("qwen3", TINY)).unwrap();
    assert_eq!(imp.config["architectures"][0], "Qwen3ForCausalLM");
    assert!(imp.weights.contains("model.layers.0.self_attn.q_norm.weight"));
    assert!(imp.weights.contains("model.layers.0.self_attn.k_norm.weight"));
}

#[test]
fn gemma3_norms_lose_the_baked_in_one() {
    let mut b = tiny_model("gemma3", Dims { layers: 6, ..TINY });
    let norm: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 / 64.0).collect();
    b.f32_tensor("blk.2.post_ffw_norm.weight", &[32], &norm);
    let imp = import(&b).unwrap();
    let c = &imp.config;
    assert_eq!(c["architectures"][0], "Gemma3ForCausalLM");
    assert_eq!(c["model_type"], "gemma3_text");
    assert_eq!(c["sliding_window"], 64);
    assert_eq!(c["hidden_activation"], "gelu_pytorch_tanh");
    assert_eq!(c["query_pre_attn_scalar"], 16);
    assert_eq!(c["rope_local_base_freq"], 10000.0);
    let types: Vec<&str> = c["layer_types"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(types, ["sliding_attention"; 5].iter().copied().chain(["full_attention"]).collect::<Vec<_>>());
    let (_, w) = weight_f32(&imp, "model.layers.2.post_feedforward_layernorm.weight");
    for (g, n) in w.iter().zip(&norm) {
        assert!((g - (n - 1.0)).abs() < 1e-7, "{g} vs {}", n - 1.0);
    }
    for n in ["pre_feedforward_layernorm", "post_attention_layernorm", "self_attn.q_norm", "self_attn.k_norm"] {
        assert!(imp.weights.contains(&format!("model.layers.0.{n}.weight")), "{n}");
    }
    // Projections keep their values (only norms shift).
    let f = GgufFile::parse(Arc::new(b.build())).unwrap();
    let raw: Vec<f32> = f
        .tensor_bytes(f.tensor("blk.0.ffn_up.weight").unwrap())
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(weight_f32(&imp, "model.layers.0.mlp.up_proj.weight").1, raw);
}

#[test]
fn gpt2_keeps_llama_cpp_out_in_layout() {
    let b = tiny_model("gpt2", TINY);
    let imp = import(&b).unwrap();
    let c = &imp.config;
    assert_eq!(c["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(c["n_embd"], 32);
    assert_eq!(c["n_layer"], 1);
    assert_eq!(c["n_head"], 2);
    assert_eq!(c["n_positions"], 256);
    assert_eq!(c["n_inner"], 32);
    assert_eq!(c["layer_norm_epsilon"], 1e-5);
    // llama.cpp transposed Conv1D weights to [out, in]; the config tells the HF builder so.
    assert_eq!(c[kiln_frontends::hf::CONV1D_LAYOUT_KEY], "out_in");
    let f = GgufFile::parse(Arc::new(b.build())).unwrap();
    let raw: Vec<f32> = f
        .tensor_bytes(f.tensor("blk.0.attn_qkv.weight").unwrap())
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(weight_f32(&imp, "transformer.h.0.attn.c_attn.weight"), (vec![96, 32], raw));
    for n in
        ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.bias", "transformer.h.0.ln_2.weight"]
    {
        assert!(imp.weights.contains(n), "{n}");
    }
    assert_eq!(imp.weights.get("transformer.h.0.attn.c_attn.bias").unwrap().ty.to_string(), "f32[96]");
}

#[test]
fn unknown_architecture_and_missing_keys_are_named() {
    let mut b = tiny_model("llama", TINY);
    b.kv("general.architecture", V::s("mamba"));
    let path = b.write("mamba.gguf");
    let e = import_gguf(&path).unwrap_err().to_string();
    assert!(e.contains("mamba.gguf") && e.contains("`mamba` is not supported"), "{e}");
    assert!(e.contains("llama, qwen2, qwen3, gemma3, gpt2"), "{e}");

    let mut b = tiny_model("llama", TINY);
    b.remove_kv("llama.embedding_length");
    let path = b.write("no_embd.gguf");
    let e = import_gguf(&path).unwrap_err().to_string();
    assert!(e.contains("no_embd.gguf") && e.contains("`llama.embedding_length` is missing"), "{e}");

    let mut b = tiny_model("llama", TINY);
    b.remove_kv("general.architecture");
    assert!(import(&b).unwrap_err().to_string().contains("`general.architecture` is missing"));

    let mut b = tiny_model("llama", TINY);
    b.kv("llama.attention.head_count", V::U32(4));
    let e = import(&b).unwrap_err().to_string();
    assert!(e.contains("blk.0.attn_q.weight") && e.contains("implies [64, 32]"), "{e}");

    let mut b = tiny_model("llama", TINY);
    b.f32_tensor("blk.0.mystery.weight", &[4], &[0.0; 4]);
    assert!(import(&b).unwrap_err().to_string().contains("`blk.0.mystery.weight` is not used by the llama"));

    let mut b = tiny_model("llama", TINY);
    b.kv("tokenizer.ggml.pre", V::s("klingon"));
    let e = import(&b).unwrap_err().to_string();
    assert!(e.contains("\"klingon\"") && e.contains("smollm"), "{e}");
}

fn fuzz_base() -> Vec<u8> {
    tiny_model("llama", TINY).build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Truncating the file anywhere, or changing any bytes, gives Ok or Err: never a panic, never an
    /// allocation beyond what the file can back.
    #[test]
    fn truncated_or_corrupted_files_never_panic(
        cut in 0usize..100_000,
        flips in proptest::collection::vec((0usize..100_000, any::<u8>()), 0..6),
        truncate in any::<bool>(),
    ) {
        let mut bytes = fuzz_base();
        let len = bytes.len();
        // Most corruption goes into the header, metadata and tensor infos, where parsing happens.
        let header_len = len - 40_000.min(len / 2);
        for (at, v) in flips {
            let at = if at % 4 == 0 { at % len } else { at % header_len };
            bytes[at] ^= v;
        }
        if truncate {
            bytes.truncate(cut % (len + 1));
        }
        if let Ok(f) = GgufFile::parse(Arc::new(bytes))
            && let Ok(imp) = import_parsed(&f, Path::new("fuzz.gguf"))
        {
            let _ = kiln_frontends::hf::build_model(&imp.config, imp.weights, imp.meta);
        }
    }
}

#[test]
fn the_fuzz_base_imports() {
    import(&tiny_model("llama", TINY)).unwrap();
}

/// The HF-style config and names each architecture's GGUF maps onto are ones the HF builder accepts: every
/// architecture builds a verified decoder graph, with its weights stored as the GGUF had them.
#[test]
fn every_architecture_builds_a_decoder_graph() {
    for arch in ["llama", "qwen2", "qwen3", "gemma3", "gpt2"] {
        let mut b = tiny_model(arch, Dims { layers: 2, ..TINY });
        // A quantized projection goes through as kiln q4g32z.
        let q41: Vec<u8> = (0..32 * 32 / 32)
            .flat_map(|i| {
                let mut blk = half::f16::from_f32(0.01).to_le_bytes().to_vec();
                blk.extend(half::f16::from_f32(-0.05 * i as f32).to_le_bytes());
                blk.extend((0..16).map(|j| (i * 16 + j) as u8));
                blk
            })
            .collect();
        let name = if arch == "gpt2" { "blk.1.attn_output.weight" } else { "blk.1.ffn_up.weight" };
        b.raw_tensor(name, &[32, 32], 3, q41);
        let path = b.write(&format!("tiny_{arch}.gguf"));
        let model = kiln_frontends::gguf::load_gguf(&path).unwrap_or_else(|e| panic!("{arch}: {e}"));
        kiln_ir::verify(&model.graph, Some(&model.weights)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(model.meta.architecture, arch);
        assert!(model.meta.tokenizer_json.is_some());
        let q4 = model
            .weights
            .iter()
            .filter(|(_, w)| w.ty.dtype == DType::Q4G { group_size: 32, zero_points: true })
            .count();
        assert_eq!(q4, 1, "{arch}: the Q4_1 weight is kept quantized");
    }
}
