//! Tokenizers rebuilt from `tokenizer.ggml.*`: a SentencePiece-style (`llama`) vocabulary with scores and
//! byte fallback, and byte-level BPE pre-tokenizer choices, checked on hand-computed tokenizations.

use std::collections::HashMap;

use kiln_frontends::gguf::{MetaValue, MetadataLookup, ValueType};
use kiln_frontends::tokenizer::tokenizer_from_gguf;
use tokenizers::Tokenizer;

struct Md(HashMap<String, MetaValue>);

impl MetadataLookup for Md {
    fn value(&self, key: &str) -> Option<&MetaValue> {
        self.0.get(key)
    }
}

fn strs(v: &[String]) -> MetaValue {
    MetaValue::Array { elem: ValueType::String, items: v.iter().map(|s| MetaValue::String(s.clone())).collect() }
}

/// A SentencePiece vocabulary: unk/bos/eos, 256 byte tokens, then pieces with scores chosen so that
/// "▁hello" is reached through ll, ▁h, llo, ▁he (in that order of priority).
fn spm_metadata() -> Md {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in [
        ("▁", -10.0),
        ("h", -11.0),
        ("e", -12.0),
        ("l", -13.0),
        ("o", -14.0),
        ("ll", -1.0),
        ("▁h", -2.0),
        ("llo", -3.0),
        ("▁he", -4.0),
        ("▁hello", -5.0),
    ] {
        tokens.push(piece.into());
        types.push(1);
        scores.push(score);
    }
    let mut m = HashMap::new();
    m.insert("tokenizer.ggml.model".into(), MetaValue::String("llama".into()));
    m.insert("tokenizer.ggml.tokens".into(), strs(&tokens));
    m.insert(
        "tokenizer.ggml.token_type".into(),
        MetaValue::Array { elem: ValueType::I32, items: types.into_iter().map(MetaValue::I32).collect() },
    );
    m.insert(
        "tokenizer.ggml.scores".into(),
        MetaValue::Array { elem: ValueType::F32, items: scores.into_iter().map(MetaValue::F32).collect() },
    );
    m.insert("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1));
    m.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2));
    m.insert("tokenizer.ggml.unknown_token_id".into(), MetaValue::U32(0));
    Md(m)
}

fn id(tok: &Tokenizer, t: &str) -> u32 {
    tok.token_to_id(t).unwrap_or_else(|| panic!("{t} not in vocab"))
}

#[test]
fn sentencepiece_vocabulary_with_byte_fallback() {
    let md = spm_metadata();
    let built = tokenizer_from_gguf(&md, 300).unwrap();
    assert!(built.add_bos, "llama vocabularies add BOS unless the file says otherwise");
    assert_eq!(built.eos_token_ids, vec![2]);
    let tok: Tokenizer = built.json.parse().unwrap();

    // "hello hi✓": a space prefix is added, spaces become ▁, unknown characters fall back to bytes.
    let enc = tok.encode("hello hi✓", true).unwrap();
    let want = [
        1,
        id(&tok, "▁hello"),
        id(&tok, "▁h"),
        id(&tok, "<0x69>"),
        id(&tok, "<0xE2>"),
        id(&tok, "<0x9C>"),
        id(&tok, "<0x93>"),
    ];
    assert_eq!(enc.get_ids(), &want[..], "{:?}", enc.get_tokens());
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello hi✓");
    // Control tokens in the text are matched whole.
    let enc = tok.encode("<s>hello</s>", false).unwrap();
    assert_eq!(enc.get_ids(), &[1, id(&tok, "▁hello"), 2]);

    // Without the space prefix (Gemma's setting) the first word has no ▁.
    let mut md = spm_metadata();
    md.0.insert("tokenizer.ggml.add_space_prefix".into(), MetaValue::Bool(false));
    md.0.insert("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(false));
    let tok: Tokenizer = tokenizer_from_gguf(&md, 300).unwrap().json.parse().unwrap();
    let enc = tok.encode("hello", true).unwrap();
    assert_eq!(enc.get_ids(), &[id(&tok, "h"), id(&tok, "e"), id(&tok, "llo")], "{:?}", enc.get_tokens());
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "hello");
}

#[test]
fn bad_tokenizer_metadata_is_an_error() {
    let mut md = spm_metadata();
    md.0.remove("tokenizer.ggml.scores");
    assert!(tokenizer_from_gguf(&md, 300).unwrap_err().to_string().contains("`tokenizer.ggml.scores` is missing"));
    let md = spm_metadata();
    let e = tokenizer_from_gguf(&md, 100).unwrap_err().to_string();
    assert!(e.contains("269 tokens") && e.contains("100 rows"), "{e}");
    let mut md = spm_metadata();
    md.0.insert("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(5000));
    assert!(tokenizer_from_gguf(&md, 300).unwrap_err().to_string().contains("only 269 tokens"));
    let mut md = spm_metadata();
    md.0.insert("tokenizer.ggml.model".into(), MetaValue::String("bert".into()));
    assert!(tokenizer_from_gguf(&md, 300).unwrap_err().to_string().contains("\"bert\""));
}

/// Byte-level BPE with each pre-tokenizer family: digits split one by one (smollm), in runs of up to three
/// (llama-bpe), or kept whole (gpt-2).
#[test]
fn byte_level_pre_tokenizers_split_digits_as_their_models_do() {
    let chars: Vec<String> = (b'!'..=b'~').map(|b| (b as char).to_string()).chain(["Ġ".to_string()]).collect();
    let mut tokens = chars.clone();
    for t in ["12", "123", "1234", "Ġ1"] {
        tokens.push(t.into());
    }
    let merges: Vec<String> = ["1 2", "12 3", "123 4", "Ġ 1"].iter().map(|s| s.to_string()).collect();
    let md = |pre: &str| {
        let mut m = HashMap::new();
        m.insert("tokenizer.ggml.model".into(), MetaValue::String("gpt2".into()));
        m.insert("tokenizer.ggml.pre".into(), MetaValue::String(pre.into()));
        m.insert("tokenizer.ggml.tokens".into(), strs(&tokens));
        m.insert("tokenizer.ggml.merges".into(), strs(&merges));
        Md(m)
    };
    let pieces = |pre: &str, text: &str| -> Vec<String> {
        let tok: Tokenizer = tokenizer_from_gguf(&md(pre), tokens.len() as u64).unwrap().json.parse().unwrap();
        tok.encode(text, false).unwrap().get_tokens().to_vec()
    };
    assert_eq!(pieces("smollm", "1234"), ["1", "2", "3", "4"]);
    assert_eq!(pieces("llama-bpe", "1234"), ["123", "4"]);
    assert_eq!(pieces("gpt-2", "1234 1"), ["1234", "Ġ1"]);
    assert_eq!(pieces("qwen2", "1234"), ["1", "2", "3", "4"]);
    assert_eq!(pieces("default", "1234"), ["123", "4"]);
}
