//! Test helpers shared by the GGUF tests: a GGUF writer written from the format description (so tests do
//! not depend on the reader they test), tiny model files built with it, and the SmolLM2 file lookup.

#![allow(dead_code)]

use std::path::PathBuf;

/// A metadata value to write.
#[derive(Clone, Debug)]
pub enum V {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Element type id and elements.
    Arr(u32, Vec<V>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl V {
    pub fn type_id(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) => 8,
            V::Arr(..) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
        }
    }

    pub fn s(s: &str) -> V {
        V::Str(s.to_string())
    }

    pub fn strs<S: AsRef<str>>(items: &[S]) -> V {
        V::Arr(8, items.iter().map(|s| V::s(s.as_ref())).collect())
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(v) => out.push(*v),
            V::I8(v) => out.extend(v.to_le_bytes()),
            V::U16(v) => out.extend(v.to_le_bytes()),
            V::I16(v) => out.extend(v.to_le_bytes()),
            V::U32(v) => out.extend(v.to_le_bytes()),
            V::I32(v) => out.extend(v.to_le_bytes()),
            V::F32(v) => out.extend(v.to_le_bytes()),
            V::Bool(v) => out.push(*v as u8),
            V::Str(s) => write_str(out, s),
            V::Arr(elem, items) => {
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    i.write(out);
                }
            }
            V::U64(v) => out.extend(v.to_le_bytes()),
            V::I64(v) => out.extend(v.to_le_bytes()),
            V::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// One tensor to write: dims innermost first, as GGUF stores them.
#[derive(Clone, Debug)]
pub struct T {
    pub name: String,
    pub ggml_dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

/// Builds a GGUF image in memory.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<(String, V)>,
    pub tensors: Vec<T>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        GgufBuilder { version: 3, alignment: 32, kv: Vec::new(), tensors: Vec::new() }
    }
}

impl GgufBuilder {
    pub fn kv(&mut self, key: &str, v: V) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.to_string(), v));
        self
    }

    pub fn remove_kv(&mut self, key: &str) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }

    /// An f32 tensor whose PyTorch-order shape is `shape` (written reversed, as GGUF does).
    pub fn f32_tensor(&mut self, name: &str, shape: &[u64], values: &[f32]) -> &mut Self {
        assert_eq!(values.len() as u64, shape.iter().product::<u64>());
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_tensor(name, shape, 0, data)
    }

    pub fn raw_tensor(&mut self, name: &str, shape: &[u64], type_id: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.retain(|t| t.name != name);
        self.tensors.push(T {
            name: name.to_string(),
            ggml_dims: shape.iter().rev().copied().collect(),
            type_id,
            data,
        });
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            write_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            out.extend((t.ggml_dims.len() as u32).to_le_bytes());
            for d in &t.ggml_dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.type_id.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.data.len() as u64);
        }
        let data_start = align(out.len() as u64);
        out.resize(data_start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(&t.data);
        }
        out
    }

    /// Writes the image to a fresh file under the system temp dir and returns its path.
    pub fn write(&self, name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-gguf-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, self.build()).unwrap();
        path
    }
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the others for 256 + n.
pub fn byte_level_chars() -> Vec<char> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut map = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if printable.contains(&b) {
            map[b as usize] = char::from_u32(b).unwrap();
        } else {
            map[b as usize] = char::from_u32(256 + extra).unwrap();
            extra += 1;
        }
    }
    map
}

/// A byte-level BPE vocabulary: the 256 byte characters, a few merges, and ChatML control tokens.
/// Returns (tokens, token types, merges).
pub fn tiny_bpe_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    let mut types = vec![3, 3, 3];
    for c in byte_level_chars() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types, merges.iter().map(|s| s.to_string()).collect())
}

/// Model dimensions for a tiny test model.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub ffn: u64,
}

pub const TINY: Dims = Dims { layers: 1, hidden: 32, heads: 2, kv_heads: 1, head_dim: 16, ffn: 32 };

/// Deterministic test values.
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) % 1000) as f32 / 1000.0 - 0.5
        })
        .collect()
}

/// A small but complete llama-style GGUF (f32 tensors, byte-level BPE tokenizer) of architecture `arch`.
pub fn tiny_model(arch: &str, d: Dims) -> GgufBuilder {
    let mut b = GgufBuilder::default();
    let k = |s: &str| format!("{arch}.{s}");
    b.kv("general.architecture", V::s(arch));
    b.kv(&k("block_count"), V::U32(d.layers as u32));
    b.kv(&k("context_length"), V::U32(256));
    b.kv(&k("embedding_length"), V::U32(d.hidden as u32));
    b.kv(&k("feed_forward_length"), V::U32(d.ffn as u32));
    b.kv(&k("attention.head_count"), V::U32(d.heads as u32));
    b.kv(&k("attention.head_count_kv"), V::U32(d.kv_heads as u32));
    b.kv(&k("attention.key_length"), V::U32(d.head_dim as u32));
    b.kv(&k("rope.freq_base"), V::F32(10000.0));
    b.kv(&k("attention.layer_norm_rms_epsilon"), V::F32(1e-6));
    b.kv(&k("attention.layer_norm_epsilon"), V::F32(1e-5));
    if arch == "gemma3" {
        b.kv(&k("attention.sliding_window"), V::U32(64));
    }
    let (tokens, types, merges) = tiny_bpe_vocab();
    b.kv("tokenizer.ggml.model", V::s("gpt2"));
    b.kv("tokenizer.ggml.pre", V::s("gpt-2"));
    b.kv("tokenizer.ggml.tokens", V::strs(&tokens));
    b.kv("tokenizer.ggml.token_type", V::Arr(5, types.iter().map(|&t| V::I32(t)).collect()));
    b.kv("tokenizer.ggml.merges", V::strs(&merges));
    b.kv("tokenizer.ggml.bos_token_id", V::U32(1));
    b.kv("tokenizer.ggml.eos_token_id", V::U32(2));
    b.kv("tokenizer.chat_template", V::s("{{ messages }}"));
    let vocab = tokens.len() as u64;
    let (h, q, kv, f) = (d.hidden, d.heads * d.head_dim, d.kv_heads * d.head_dim, d.ffn);
    let mut seed = 0;
    let mut t = |b: &mut GgufBuilder, name: &str, shape: &[u64]| {
        seed += 1;
        b.f32_tensor(name, shape, &values(shape.iter().product::<u64>() as usize, seed));
    };
    t(&mut b, "token_embd.weight", &[vocab, h]);
    t(&mut b, "output_norm.weight", &[h]);
    for l in 0..d.layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        if arch == "gpt2" {
            t(&mut b, &n("attn_norm.weight"), &[h]);
            t(&mut b, &n("attn_norm.bias"), &[h]);
            t(&mut b, &n("attn_qkv.weight"), &[3 * h, h]);
            t(&mut b, &n("attn_qkv.bias"), &[3 * h]);
            t(&mut b, &n("attn_output.weight"), &[h, h]);
            t(&mut b, &n("attn_output.bias"), &[h]);
            t(&mut b, &n("ffn_norm.weight"), &[h]);
            t(&mut b, &n("ffn_norm.bias"), &[h]);
            t(&mut b, &n("ffn_up.weight"), &[f, h]);
            t(&mut b, &n("ffn_up.bias"), &[f]);
            t(&mut b, &n("ffn_down.weight"), &[h, f]);
            t(&mut b, &n("ffn_down.bias"), &[h]);
            continue;
        }
        t(&mut b, &n("attn_norm.weight"), &[h]);
        t(&mut b, &n("attn_q.weight"), &[q, h]);
        t(&mut b, &n("attn_k.weight"), &[kv, h]);
        t(&mut b, &n("attn_v.weight"), &[kv, h]);
        t(&mut b, &n("attn_output.weight"), &[h, q]);
        t(&mut b, &n("ffn_norm.weight"), &[h]);
        t(&mut b, &n("ffn_gate.weight"), &[f, h]);
        t(&mut b, &n("ffn_up.weight"), &[f, h]);
        t(&mut b, &n("ffn_down.weight"), &[h, f]);
        if arch == "qwen2" {
            t(&mut b, &n("attn_q.bias"), &[q]);
            t(&mut b, &n("attn_k.bias"), &[kv]);
            t(&mut b, &n("attn_v.bias"), &[kv]);
        }
        if arch == "qwen3" || arch == "gemma3" {
            t(&mut b, &n("attn_q_norm.weight"), &[d.head_dim]);
            t(&mut b, &n("attn_k_norm.weight"), &[d.head_dim]);
        }
        if arch == "gemma3" {
            t(&mut b, &n("post_attention_norm.weight"), &[h]);
            t(&mut b, &n("post_ffw_norm.weight"), &[h]);
        }
    }
    if arch == "gpt2" {
        t(&mut b, "position_embd.weight", &[256, h]);
        t(&mut b, "output_norm.bias", &[h]);
    }
    b
}

/// The SmolLM2 GGUF at the fetch script's cache path, `None` (after saying how to get it) when absent;
/// with `KILN_REQUIRE_MODELS=1` a missing file fails the test instead.
pub fn smollm2_path() -> Option<PathBuf> {
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
