//! The real SmolLM2-135M-Instruct GGUF (fetched by tools/fetch_smollm2.sh; skipped with a message when
//! absent, a failure when KILN_REQUIRE_MODELS=1): every tensor with its type, Q4_1 rows against an f64
//! computation from the raw block bytes, and the rebuilt tokenizer against transformers' token ids
//! (tests/fixtures/smollm2/golden.json, made by tools/make_smollm2_goldens.py).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use kiln_frontends::gguf::{GgmlType, GgufFile, MetadataLookup, import_gguf};
use kiln_ir::DType;
use tokenizers::Tokenizer;

fn golden() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/golden.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn every_tensor_reads_with_its_type() {
    let Some(path) = common::smollm2_path() else { return };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.tensors().len(), 272);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in f.tensors() {
        *counts.entry(t.ty.name()).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([("F32", 61), ("Q4_1", 210), ("Q8_0", 1)]));
    assert_eq!(f.tensor("token_embd.weight").unwrap().ty, GgmlType::Q8_0);
    assert_eq!(f.tensor("token_embd.weight").unwrap().shape(), vec![49152, 576]);
    assert_eq!(f.require_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.require_u64("llama.block_count").unwrap(), 30);

    let imp = import_gguf(&path).unwrap();
    assert_eq!(imp.weights.len(), 272);
    let q4 = DType::Q4G { group_size: 32, zero_points: true };
    assert_eq!(imp.weights.iter().filter(|(_, w)| w.ty.dtype == q4).count(), 210);
    assert_eq!(imp.weights.iter().filter(|(_, w)| w.ty.dtype == DType::F32).count(), 62);
    assert_eq!(imp.weights.get("model.embed_tokens.weight").unwrap().ty.to_string(), "f32[49152, 576]");
    assert_eq!(imp.weights.get("model.layers.7.self_attn.k_proj.weight").unwrap().ty.to_string(), "q4g32z[192, 576]");
    let c = &imp.config;
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(
        (&c["num_hidden_layers"], &c["hidden_size"], &c["num_attention_heads"], &c["num_key_value_heads"]),
        (&30.into(), &576.into(), &9.into(), &3.into())
    );
    assert_eq!((&c["head_dim"], &c["intermediate_size"], &c["vocab_size"]), (&64.into(), &1536.into(), &49152.into()));
    assert_eq!((&c["max_position_embeddings"], &c["rope_theta"]), (&8192.into(), &100000.0.into()));
    assert_eq!(c["rms_norm_eps"], 1e-5);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(imp.meta.bos_token_id, Some(1));
    assert_eq!(imp.meta.eos_token_ids, vec![2], "<|im_end|> ends a turn");
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/chat_template.jinja"),
    )
    .unwrap();
    assert_eq!(imp.meta.chat_template.as_deref().map(str::trim_end), Some(template.trim_end()));
}

/// Row `row` of a Q4_1 matrix with `k` columns, computed in f64 from the block bytes as the format defines
/// it: per 32 elements an f16 scale d, an f16 minimum m, then 16 bytes whose low nibbles are elements
/// 0..15 and high nibbles 16..31; w = q * d + m.
fn q4_1_row_f64(bytes: &[u8], k: usize, row: usize) -> Vec<f64> {
    let row_bytes = k / 32 * 20;
    let mut out = Vec::with_capacity(k);
    for blk in bytes[row * row_bytes..(row + 1) * row_bytes].chunks(20) {
        let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f64();
        let m = half::f16::from_le_bytes([blk[2], blk[3]]).to_f64();
        let q = |e: usize| if e < 16 { blk[4 + e] & 15 } else { blk[4 + e - 16] >> 4 } as f64;
        out.extend((0..32).map(|e| q(e) * d + m));
    }
    out
}

#[test]
fn q4_1_rows_match_an_f64_reference() {
    let Some(path) = common::smollm2_path() else { return };
    let f = GgufFile::open(&path).unwrap();
    let imp = import_gguf(&path).unwrap();
    // ffn_down is stored as is; attn_q's rows were permuted by llama.cpp (9 heads of 64): HF row
    // h*64 + i*32 + j is GGUF row h*64 + 2j + i.
    let cases = [
        ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight", false),
        ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight", false),
        ("blk.5.attn_q.weight", "model.layers.5.self_attn.q_proj.weight", true),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", true),
    ];
    for (gguf_name, hf_name, permuted) in cases {
        let info = f.tensor(gguf_name).unwrap();
        assert_eq!(info.ty, GgmlType::Q4_1);
        let (rows, k) = (info.rows(), info.row_len());
        let w = imp.weights.get(hf_name).unwrap();
        let mut got = vec![0f32; k];
        let mut max_rel = 0f64;
        for hf_row in [0, 1, 31, 32, 33, 63, 64, 100, rows - 1] {
            let src = if permuted {
                let (h, within) = (hf_row / 64, hf_row % 64);
                h * 64 + 2 * (within % 32) + within / 32
            } else {
                hf_row
            };
            let want = q4_1_row_f64(f.tensor_bytes(info), k, src);
            w.read_row_f32(hf_row, &mut got);
            let scale = want.iter().fold(0f64, |a, x| a.max(x.abs()));
            for (g, w) in got.iter().zip(&want) {
                max_rel = max_rel.max((*g as f64 - w).abs() / scale);
            }
        }
        assert!(max_rel < 1e-6, "{gguf_name}: max error {max_rel} of the row's largest value");
    }
}

#[test]
fn tokenizer_matches_transformers_ids() {
    let Some(path) = common::smollm2_path() else { return };
    let imp = import_gguf(&path).unwrap();
    let tok: Tokenizer = imp.meta.tokenizer_json.as_ref().unwrap().parse().unwrap();
    let g = golden();
    let mut cases: Vec<(String, Vec<u32>)> = Vec::new();
    for c in g["tokenizer_cases"].as_array().unwrap().iter().chain(g["prompts"].as_array().unwrap()) {
        let ids = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        cases.push((c["text"].as_str().unwrap().to_string(), ids));
    }
    assert!(cases.len() >= 14);
    for (text, want) in &cases {
        let enc = tok.encode(text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), &want[..], "{text:?}");
        // Nothing is lost: decoding gives the text back.
        assert_eq!(&tok.decode(enc.get_ids(), false).unwrap(), text);
    }
    // add_bos_token is false for SmolLM2: encoding with special tokens adds nothing.
    assert_eq!(tok.encode("def", true).unwrap().get_ids(), tok.encode("def", false).unwrap().get_ids());
    assert_eq!(tok.encode("def", false).unwrap().get_ids().len(), 1);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    // Special tokens are skipped when asked.
    assert_eq!(tok.decode(&[1, 4093, 198, 6004, 2], true).unwrap(), "user\nhi");
}
