//! Text to token ids and back: a Hugging Face `tokenizers` tokenizer built from the JSON document a
//! model carries, plus [`TextStream`], which turns generated ids into text as they arrive.
//!
//! Whether a BOS (or any other special token) is added around the text is the tokenizer's own
//! post-processor's decision, as in `transformers`: frontends bake the model's `add_bos_token` into the
//! JSON they produce, and `encode(text, true)` honours it.

use tokenizers::Tokenizer;

/// Why text could not be tokenized or ids decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer JSON is not a valid `tokenizers` document.
    #[error("the tokenizer JSON does not parse: {message}")]
    Parse { message: String },
    #[error("cannot encode the text: {message}")]
    Encode { message: String },
    #[error("cannot decode token ids: {message}")]
    Decode { message: String },
}

/// A tokenizer for a model's text.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

impl TextTokenizer {
    /// Builds the tokenizer from a `tokenizer.json` document.
    pub fn from_json(json: &str) -> Result<Self, TokenizerError> {
        // Parse with serde_json first: its messages name the line, column and missing field.
        let inner: Tokenizer =
            serde_json::from_str(json).map_err(|e| TokenizerError::Parse { message: e.to_string() })?;
        Ok(Self { inner })
    }

    /// The ids of `text`. With `add_special_tokens`, the tokenizer's post-processor adds what the model
    /// expects around a sequence (a BOS for Llama-style models); special tokens written in the text
    /// itself (`<|im_start|>`) become their ids either way.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| TokenizerError::Encode { message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens (BOS, EOS, ...) are left out.
    /// Ids outside the vocabulary decode to nothing.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| TokenizerError::Decode { message: e.to_string() })
    }

    /// The token string of `id` (`<|im_end|>`, `Ġthe`), if the vocabulary has it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string, if the vocabulary (or the added tokens) has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A decoder for ids that arrive one at a time (see [`TextStream`]).
    pub fn stream(&self, skip_special_tokens: bool) -> TextStream<'_> {
        TextStream { tokenizer: self, skip_special_tokens, ids: Vec::new(), prefix: 0, read: 0 }
    }
}

/// Incremental decoding: [`TextStream::push`] returns the text a new id adds, once it is complete.
///
/// Decoding token by token is wrong in two ways: byte-level tokens can hold part of a UTF-8 character
/// (decoding one alone gives `\u{FFFD}`), and decoders such as SentencePiece's drop the leading space of
/// the first token they see. So the stream decodes a short window of recent ids and emits only what the
/// newest ids add to the window's earlier text, holding ids back while the text ends in an incomplete
/// character. The pieces, followed by [`TextStream::finish`], concatenate to the decoding of all ids
/// (except after a run of SentencePiece fallback bytes that is not UTF-8: the decoder turns the whole run
/// into U+FFFD, including bytes whose text was already emitted).
#[derive(Debug)]
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    skip_special_tokens: bool,
    /// The window: ids from the start of the text already emitted as context, then the pending ones.
    ids: Vec<u32>,
    /// `ids[..prefix]` is context only; `ids[prefix..read]` has been emitted; `ids[read..]` has not.
    prefix: usize,
    read: usize,
}

impl TextStream<'_> {
    /// Seeds the stream with ids whose text is not to be emitted (the end of the prompt), so that the
    /// first generated token decodes as it would after them (with its leading space, for example).
    pub fn with_context(mut self, context: &[u32]) -> Self {
        self.ids = context.to_vec();
        self.prefix = 0;
        self.read = self.ids.len();
        self
    }

    /// Adds one id; returns the new text if it ends on a complete character.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let emitted = self.tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
        let all = self.tokenizer.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        if all.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let Some(new) = all.strip_prefix(emitted.as_str()) else {
            // The newest id changed earlier text (a decoder cleaning up across tokens); emitting it
            // would repeat text, so wait for more ids.
            return Ok(None);
        };
        if new.is_empty() {
            return Ok(None);
        }
        let new = new.to_string();
        // The emitted ids become the next window's context; older ids are no longer needed.
        self.ids.drain(..self.prefix);
        self.prefix = self.read - self.prefix;
        self.read = self.ids.len();
        Ok(Some(new))
    }

    /// The text of ids still held back (an incomplete character at the end is decoded as `\u{FFFD}`).
    pub fn finish(self) -> Result<String, TokenizerError> {
        if self.read == self.ids.len() {
            return Ok(String::new());
        }
        let emitted = self.tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
        let all = self.tokenizer.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        // If the held-back ids rewrote earlier text, emit what lies past the emitted length rather
        // than repeat it.
        Ok(match all.strip_prefix(emitted.as_str()) {
            Some(new) => new.to_string(),
            None => all.get(emitted.len()..).unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    /// GPT-2's byte-to-character map (printable bytes stand for themselves, the others shift to 256..).
    fn byte_char(b: u8) -> char {
        let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        if printable(b) {
            return char::from(b);
        }
        let shift = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + shift).unwrap()
    }

    /// A GPT-2 style byte-level BPE: ids 0..=255 are the bytes, then merges up to `hello` and `Ġworld`,
    /// then `<|bos|>` (265, added in front of every sequence) and `<|eos|>` (266).
    fn byte_level_json() -> String {
        let mut vocab = serde_json::Map::new();
        for b in 0..=255u8 {
            vocab.insert(byte_char(b).to_string(), json!(b));
        }
        let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w")];
        let merges2 = [("o", "r"), ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d")];
        let all: Vec<_> = merges.iter().chain(&merges2).collect();
        for (i, (a, b)) in all.iter().enumerate() {
            vocab.insert(format!("{a}{b}"), json!(256 + i));
        }
        let special = |id: u32, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        };
        let bos = json!({"SpecialToken": {"id": "<|bos|>", "type_id": 0}});
        let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
        json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(265, "<|bos|>"), special(266, "<|eos|>")],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [bos.clone(), seq("A")],
                "pair": [bos, seq("A"), seq("B")],
                "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [265], "tokens": ["<|bos|>"]}}
            },
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab,
                "merges": all.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>()
            }
        })
        .to_string()
    }

    /// A Llama-2 style SentencePiece BPE with byte fallback: `<unk>` 0, `<s>` 1 (added in front), `</s>` 2,
    /// `<0x00>`..`<0xFF>` 3..=258, then `▁` 259, `h` 260, `i` 261, `▁h` 262, `▁hi` 263.
    fn sentencepiece_json() -> String {
        let mut vocab = serde_json::Map::new();
        for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
            vocab.insert(t.to_string(), json!(i));
        }
        for b in 0..=255u32 {
            vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
        }
        for (i, t) in ["▁", "h", "i", "▁h", "▁hi"].iter().enumerate() {
            vocab.insert(t.to_string(), json!(259 + i));
        }
        let special = |id: u32, content: &str| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        };
        let bos = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
        let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
        json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]},
            "pre_tokenizer": null,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [bos.clone(), seq("A")],
                "pair": [bos, seq("A"), seq("B")],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            },
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": [["▁", "h"], ["▁h", "i"]]
            }
        })
        .to_string()
    }

    fn byte_level() -> TextTokenizer {
        TextTokenizer::from_json(&byte_level_json()).unwrap()
    }

    fn sentencepiece() -> TextTokenizer {
        TextTokenizer::from_json(&sentencepiece_json()).unwrap()
    }

    /// Pushes every id, then finishes; returns the pieces as they came out (`None` while held back).
    fn stream_pieces(stream: TextStream<'_>, ids: &[u32]) -> (Vec<Option<String>>, String) {
        let mut stream = stream;
        let pieces = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
        (pieces, stream.finish().unwrap())
    }

    #[test]
    fn byte_level_encodes_with_merges_bytes_and_special_tokens() {
        let t = byte_level();
        assert_eq!(t.vocab_size(), 267);
        assert_eq!(t.encode("hello world", false).unwrap(), vec![259, 264]);
        assert_eq!(t.encode("hello world", true).unwrap(), vec![265, 259, 264]);
        // `é` is two bytes (C3 A9); `!` is byte 0x21.
        assert_eq!(t.encode("hello é!", false).unwrap(), vec![259, 0x20, 0xC3, 0xA9, 0x21]);
        // A special token written in the text is its id, and the post-processor still adds the BOS.
        assert_eq!(t.encode("<|eos|>hello", true).unwrap(), vec![265, 266, 259]);
        assert_eq!(t.encode("", false).unwrap(), Vec::<u32>::new());
        assert_eq!(t.token_to_id("Ġworld"), Some(264));
        assert_eq!(t.id_to_token(266).as_deref(), Some("<|eos|>"));
    }

    #[test]
    fn byte_level_decodes_and_skips_special_tokens_on_request() {
        let t = byte_level();
        assert_eq!(t.decode(&[265, 259, 264, 0x21, 266], false).unwrap(), "<|bos|>hello world!<|eos|>");
        assert_eq!(t.decode(&[265, 259, 264, 0x21, 266], true).unwrap(), "hello world!");
        for text in ["hello world", "naïve café — “quotes” 🎉", "tabs\tand\nnewlines\r\n", "  two  spaces"] {
            assert_eq!(t.decode(&t.encode(text, false).unwrap(), false).unwrap(), text);
        }
    }

    #[test]
    fn sentencepiece_adds_bos_and_falls_back_to_bytes() {
        let t = sentencepiece();
        assert_eq!(t.encode("hi hi", false).unwrap(), vec![263, 263]);
        assert_eq!(t.encode("hi hi", true).unwrap(), vec![1, 263, 263]);
        // 🎉 is not in the vocabulary: its four UTF-8 bytes F0 9F 8E 89 are tokens 3 + byte.
        let party = [3 + 0xF0, 3 + 0x9F, 3 + 0x8E, 3 + 0x89];
        assert_eq!(t.encode("hi 🎉", false).unwrap(), [&[263, 259][..], &party].concat());
        assert_eq!(t.decode(&[1, 263, 259, party[0], party[1], party[2], party[3]], true).unwrap(), "hi 🎉");
        assert_eq!(t.decode(&[1, 263, 263, 2], false).unwrap(), "<s> hi hi</s>");
    }

    #[test]
    fn stream_holds_back_incomplete_characters() {
        let t = byte_level();
        // hello, Ġworld, then é as its two bytes, then !
        let (pieces, rest) = stream_pieces(t.stream(false), &[259, 264, 0xC3, 0xA9, 0x21]);
        let expected = [Some("hello"), Some(" world"), None, Some("é"), Some("!")];
        assert_eq!(pieces, expected.map(|p| p.map(String::from)));
        assert_eq!(rest, "");

        // Stopped in the middle of a character: `finish` gives what is left, as U+FFFD.
        let (pieces, rest) = stream_pieces(t.stream(false), &[259, 0xC3]);
        assert_eq!(pieces, vec![Some("hello".to_string()), None]);
        assert_eq!(rest, "\u{FFFD}");
    }

    #[test]
    fn stream_keeps_sentencepiece_spaces_and_byte_fallback_characters() {
        let t = sentencepiece();
        let ids = [263, 259, 3 + 0xF0, 3 + 0x9F, 3 + 0x8E, 3 + 0x89, 263];
        let (pieces, rest) = stream_pieces(t.stream(false), &ids);
        let expected = [Some("hi"), Some(" "), None, None, None, Some("🎉"), Some(" hi")];
        assert_eq!(pieces, expected.map(|p| p.map(String::from)));
        assert_eq!(rest, "");
        // Decoding alone drops the first token's leading space; after context it is kept.
        let (pieces, _) = stream_pieces(t.stream(false).with_context(&[1, 263]), &[263]);
        assert_eq!(pieces, vec![Some(" hi".to_string())]);
        let (pieces, _) = stream_pieces(t.stream(false), &[263]);
        assert_eq!(pieces, vec![Some("hi".to_string())]);
    }

    #[test]
    fn stream_pieces_concatenate_to_the_decoding_of_all_ids() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (byte_level, sentencepiece) = (byte_level(), sentencepiece());
        for skip_special in [false, true] {
            for _ in 0..300 {
                // Byte-level: any ids at all, invalid UTF-8 included.
                let n = rng.random_range(1..12);
                let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..267)).collect();
                let (pieces, rest) = stream_pieces(byte_level.stream(skip_special), &ids);
                let streamed: String = pieces.into_iter().flatten().chain([rest]).collect();
                assert_eq!(streamed, byte_level.decode(&ids, skip_special).unwrap(), "ids {ids:?}");

                // SentencePiece: pieces, special tokens and characters spelled as fallback bytes. (A run of
                // fallback bytes that is not UTF-8 decodes to one U+FFFD a byte as a whole, which text
                // already shown cannot follow; models do not write such runs.)
                let mut ids = Vec::new();
                for _ in 0..rng.random_range(1..8) {
                    match rng.random_range(0..3) {
                        0 => ids.push(rng.random_range(0..3)),
                        1 => ids.push(rng.random_range(259..264)),
                        _ => {
                            let c = char::from_u32(rng.random_range(0x20..0x1F000)).unwrap_or('?');
                            ids.extend(c.to_string().bytes().map(|b| 3 + u32::from(b)));
                        }
                    }
                }
                let (pieces, rest) = stream_pieces(sentencepiece.stream(skip_special), &ids);
                let streamed: String = pieces.into_iter().flatten().chain([rest]).collect();
                assert_eq!(streamed, sentencepiece.decode(&ids, skip_special).unwrap(), "ids {ids:?}");
            }
        }
    }

    #[test]
    fn malformed_json_is_an_error_naming_the_problem() {
        let err = TextTokenizer::from_json("{\"model\": ").unwrap_err();
        assert!(matches!(err, TokenizerError::Parse { .. }));
        assert!(err.to_string().contains("does not parse") && err.to_string().contains("line 1"), "{err}");
        let err = TextTokenizer::from_json(r#"{"version": "1.0"}"#).unwrap_err().to_string();
        assert!(err.contains("Model missing"), "{err}");
        let broken = byte_level_json().replace(r#""type":"BPE""#, r#""type":"NoSuchModel""#);
        assert_ne!(broken, byte_level_json());
        let err = TextTokenizer::from_json(&broken).unwrap_err().to_string();
        assert!(err.contains("does not parse"), "{err}");
    }
}
