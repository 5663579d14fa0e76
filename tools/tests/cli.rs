//! The `kiln` binary driven end to end: exit codes, error positions, pipelines and generation.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn kiln() -> Command {
    Command::cargo_bin("kiln").expect("the kiln binary is built")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tiny-llama.kir")
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn ir_prints_the_canonical_form_which_parses_back_to_itself() {
    let out = kiln().args(["ir"]).arg(example()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.starts_with("graph @tiny_llama(%0: i64[1, seq], %1: i64[1, seq]) {"), "{printed}");
    let again = kiln_ir::text::print(&kiln_ir::text::parse(&printed).unwrap());
    assert_eq!(again, printed);
}

#[test]
fn malformed_file_exits_1_with_line_and_column() {
    let path = temp_file("bad.kir", "graph @g(%0: f32[2]) {\n  %1 = neg(%0) : f32[2\n  return %1\n}\n");
    kiln()
        .arg("ir")
        .arg(&path)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("bad.kir:3:"))
        .stderr(predicate::str::contains("expected"));
}

#[test]
fn invalid_graph_reports_every_error() {
    let src = "graph @g(%0: f32[2, 3], %1: f32[4]) {\n  %2 = add(%0, %1) : f32[2, 3]\n  %3 = transpose(%0) {perm = [0, 0]} : f32[3, 2]\n  %4 = neg(%0) : i64[2, 3]\n  return %2, %3, %4\n}\n";
    let path = temp_file("three.kir", src);
    let out = kiln().arg("ir").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 errors"), "{err}");
    for op in ["add(", "transpose(", "neg("] {
        assert!(err.contains(op), "error output does not show `{op}`:\n{err}");
    }
}

#[test]
fn pipelines_print_after_and_disable() {
    let out = kiln().args(["ir", "--pipeline", "default", "--print-after", "all"]).arg(example()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.matches("// ----- after ").count() >= 4, "{text}");

    kiln()
        .args(["ir", "--pipeline", "fastest"])
        .arg(example())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("default"))
        .stderr(predicate::str::contains("O0"));
    kiln()
        .args(["ir", "--pipeline", "default", "--disable-pass", "no-such-pass"])
        .arg(example())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no-such-pass"));
    kiln()
        .args(["ir", "--pipeline", "default", "--timings"])
        .arg(example())
        .assert()
        .success()
        .stderr(predicate::str::contains("dce"));
}

#[test]
fn run_generates_deterministically_and_reports_stats() {
    let run = |extra: &[&str]| {
        let out = kiln()
            .arg("run")
            .arg(example())
            .args(["--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let greedy = run(&[]);
    assert_eq!(greedy["token_ids"].as_array().unwrap().len(), 6);
    assert_eq!(greedy["stats"]["new_tokens"], 6);
    assert!(greedy["stats"]["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(run(&[])["token_ids"], greedy["token_ids"]);
    let a = run(&["--temperature", "1.0", "--seed", "7"]);
    let b = run(&["--temperature", "1.0", "--seed", "7"]);
    assert_eq!(a["token_ids"], b["token_ids"]);
}

#[test]
fn bad_inputs_exit_1_never_panic() {
    let cases: &[&[&str]] = &[
        &["ir", "/no/such/file.kir"],
        &["ir", "Cargo.toml"],
        &["run", "--prompt-ids", "1,x"],
        &["run", "--prompt-ids", ""],
        &["run", "--chat"],
        &["run", "models/default/tokenizer.json", "--prompt", "x"],
        &["run", "--prompt-ids", "99999"],
        &["run", "--prompt-ids", "1", "--temperature", "-1"],
        &["run", "--prompt-ids", "1", "--temperature", "1", "--top-p", "0"],
    ];
    for args in cases {
        let out = kiln().current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).args(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Every prefix of a valid file is either valid or a clean error.
    let src = std::fs::read_to_string(example()).unwrap();
    for cut in (0..src.len()).step_by(97) {
        let path = temp_file("prefix.kir", &src[..cut]);
        let out = kiln().arg("ir").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "prefix of {cut} bytes");
    }
}

/// Words of the test tokenizer: ids 0..=4 are `<unk>`, `<s>`, `</s>`, `<|user|>`, `<|assistant|>`, then one
/// word an id up to the example model's vocabulary of 64.
fn test_vocab() -> Vec<String> {
    let special = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"];
    let words = "the a cat dog sat on mat and ran to of in it is was he she they we you big small red blue \
                 green fast slow up down left right day night sun moon star tree house car road hill sea sky \
                 one two three four five six seven eight nine ten yes no old new hot cold";
    let vocab: Vec<String> =
        special.iter().map(|s| s.to_string()).chain(words.split_whitespace().map(String::from)).collect();
    assert_eq!(vocab.len(), 64, "the example model has 64 token ids");
    vocab
}

/// A word-level tokenizer over [`test_vocab`] that puts `<s>` in front of every sequence; with no decoder,
/// `tokenizers` joins the tokens with spaces.
fn test_tokenizer_json() -> String {
    let vocab = test_vocab();
    let special = |id: usize| {
        serde_json::json!({"id": id, "content": vocab[id], "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    let bos = serde_json::json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
    let seq = |id: &str| serde_json::json!({"Sequence": {"id": id, "type_id": 0}});
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": (0..5).map(special).collect::<Vec<_>>(),
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos.clone(), seq("A")],
            "pair": [bos, seq("A"), seq("B")],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {
            "type": "WordLevel", "unk_token": "<unk>",
            "vocab": vocab.iter().enumerate().map(|(i, w)| (w.clone(), serde_json::json!(i))).collect::<serde_json::Map<_, _>>()
        }
    })
    .to_string()
}

const TEST_CHAT_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|> {{ m.content.strip() }} \
                                  {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

/// A copy of the example model as `DIR/m.kir` with the given files of the same stem beside it
/// (`("tokenizer.json", ...)` becomes `m.tokenizer.json`).
fn model_dir(sidecars: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let kir = dir.path().join("m.kir");
    std::fs::copy(example(), &kir).unwrap();
    std::fs::copy(example().with_extension("safetensors"), dir.path().join("m.safetensors")).unwrap();
    for (suffix, contents) in sidecars {
        std::fs::write(dir.path().join(format!("m.{suffix}")), contents).unwrap();
    }
    (dir, kir)
}

fn run_json(model: &Path, args: &[&str]) -> serde_json::Value {
    let out = kiln().arg("run").arg(model).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids_of(json: &serde_json::Value) -> Vec<u32> {
    json["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// An error report with miette's line wrapping undone, so that phrases can be searched for.
fn unwrapped(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(|l| l.trim_start().trim_start_matches(['│', '×']).trim()).collect();
    lines.join(" ")
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn prompt_text_needs_a_tokenizer() {
    let (_dir, kir) = model_dir(&[]);
    kiln().arg("run").arg(&kir).args(["--prompt", "the cat"]).assert().code(1).stderr(predicate::function(
        |e: &[u8]| {
            let e = unwrapped(e);
            e.contains("this model has no tokenizer") && e.contains("pass token ids with --prompt-ids")
        },
    ));
}

#[test]
fn chat_needs_a_chat_template() {
    let (_dir, kir) = model_dir(&[("tokenizer.json", &test_tokenizer_json())]);
    kiln().arg("run").arg(&kir).args(["--prompt", "the cat", "--chat"]).assert().code(1).stderr(predicate::function(
        |e: &[u8]| {
            let e = unwrapped(e);
            e.contains("this model has no chat template") && e.contains("leave out --chat")
        },
    ));
}

#[test]
fn prompt_text_is_encoded_and_new_tokens_decoded() {
    let (_dir, kir) = model_dir(&[("tokenizer.json", &test_tokenizer_json())]);
    let vocab = test_vocab();
    let id = |w: &str| vocab.iter().position(|v| v == w).unwrap() as u32;

    let by_text = run_json(&kir, &["--prompt", "the big cat sat", "--max-new-tokens", "8"]);
    // The tokenizer's post-processor puts <s> first.
    let prompt = [1, id("the"), id("big"), id("cat"), id("sat")];
    assert_eq!(by_text["stats"]["prompt_tokens"], 5);
    let by_ids = run_json(&kir, &["--prompt-ids", &join_ids(&prompt), "--max-new-tokens", "8"]);
    assert_eq!(by_text["token_ids"], by_ids["token_ids"]);
    let ids = ids_of(&by_text);
    assert_eq!(ids.len(), 8);
    let expected: Vec<&str> = ids.iter().map(|&i| vocab[i as usize].as_str()).collect();
    assert_eq!(by_text["text"], expected.join(" "));
    assert_eq!(by_ids["text"], expected.join(" "));
    assert_eq!(by_text["stats"]["new_tokens"], 8);
    assert!(by_text["stats"]["accepted_per_step"].as_f64().unwrap() > 0.0);

    // Without --json (and not on a terminal) the text is printed whole, then a newline.
    let out =
        kiln().arg("run").arg(&kir).args(["--prompt", "the big cat sat", "--max-new-tokens", "8"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", expected.join(" ")));
}

#[test]
fn chat_renders_one_user_message_through_the_template() {
    let (_dir, kir) = model_dir(&[
        ("tokenizer.json", &test_tokenizer_json()),
        ("chat_template.jinja", TEST_CHAT_TEMPLATE),
        ("generation_config.json", r#"{"bos_token_id": 1, "eos_token_id": 2}"#),
    ]);
    let vocab = test_vocab();
    let id = |w: &str| vocab.iter().position(|v| v == w).unwrap() as u32;
    let chat = run_json(&kir, &["--prompt", "  red sun ", "--chat", "--max-new-tokens", "6"]);
    // `<s><|user|> red sun <|assistant|>`, encoded without adding a second <s>.
    let prompt = [1, 3, id("red"), id("sun"), 4];
    assert_eq!(chat["stats"]["prompt_tokens"], prompt.len());
    let by_ids = run_json(&kir, &["--prompt-ids", &join_ids(&prompt), "--max-new-tokens", "6"]);
    assert_eq!(chat["token_ids"], by_ids["token_ids"]);
    assert_eq!(chat["text"], by_ids["text"]);
}

#[test]
fn generation_stops_at_the_models_eos_ids() {
    let (_dir, kir) = model_dir(&[]);
    let free = ids_of(&run_json(&kir, &["--prompt-ids", "1,2,3", "--max-new-tokens", "16"]));
    assert_eq!(free.len(), 16);
    // The last token that appears for the first time, so that stopping there is visible.
    let stop_at = (0..free.len()).rev().find(|&k| !free[..k].contains(&free[k])).unwrap();
    let eos = free[stop_at];
    let unused = (0..64).find(|t| !free.contains(t)).unwrap_or(63);

    let config = format!(r#"{{"eos_token_id": [{unused}, {eos}]}}"#);
    let (_dir2, kir2) = model_dir(&[("generation_config.json", &config)]);
    let stopped = run_json(&kir2, &["--prompt-ids", "1,2,3", "--max-new-tokens", "16"]);
    assert_eq!(ids_of(&stopped), free[..=stop_at].to_vec(), "stop token {eos}");
    assert_eq!(stopped["stats"]["new_tokens"], stop_at + 1);
    assert_eq!(stopped["stats"]["steps"], stop_at + 1);
}

#[test]
fn logits_are_the_last_positions_and_agree_with_greedy_decoding() {
    let (_dir, kir) = model_dir(&[("tokenizer.json", &test_tokenizer_json())]);
    let out = kiln().arg("logits").arg(&kir).args(["--prompt", "the cat", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logits: Vec<f64> = json["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(logits.len(), 64);
    let argmax = (0..64).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as u64;
    let greedy = run_json(&kir, &["--prompt", "the cat", "--max-new-tokens", "1"]);
    assert_eq!(greedy["token_ids"][0], argmax);
    assert_eq!(json["prompt_ids"].as_array().unwrap().len(), 3);

    let out = kiln().arg("logits").arg(&kir).args(["--prompt", "the cat"]).output().unwrap();
    assert!(out.status.success());
    let first = String::from_utf8(out.stdout).unwrap().lines().next().unwrap().to_string();
    assert!(first.trim_start().starts_with(&format!("{argmax} ")), "{first}");
}

#[test]
fn bad_text_side_inputs_exit_1_never_panic() {
    let tok = test_tokenizer_json();
    let (_ok, kir) = model_dir(&[("tokenizer.json", &tok), ("chat_template.jinja", TEST_CHAT_TEMPLATE)]);
    let (_bad_tok, bad_tok) = model_dir(&[("tokenizer.json", &tok[..tok.len() / 2])]);
    let (_bad_tpl, bad_tpl) = model_dir(&[("tokenizer.json", &tok), ("chat_template.jinja", "{% for %}")]);
    let raising = "{{ raise_exception('only system messages, please') }}";
    let (_raise, raise) = model_dir(&[("tokenizer.json", &tok), ("chat_template.jinja", raising)]);
    let (_bad_gen, bad_gen) = model_dir(&[("generation_config.json", r#"{"eos_token_id": "two"}"#)]);
    let mut no_bos: serde_json::Value = serde_json::from_str(&tok).unwrap();
    no_bos["post_processor"] = serde_json::Value::Null;
    let (_no_bos, no_bos) = model_dir(&[("tokenizer.json", &no_bos.to_string())]);
    let empty_dir = tempfile::tempdir().unwrap();
    let onnx = temp_file("model.onnx", "not a model");
    let bad_gguf = temp_file("model.gguf", "GGUX and the rest is not a GGUF file either");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["run".into(), s(&bad_tok), "--prompt-ids".into(), "1".into()], "tokenizer JSON does not parse"),
        (vec!["run".into(), s(&bad_tpl), "--prompt".into(), "a".into(), "--chat".into()], "does not compile"),
        (vec!["run".into(), s(&raise), "--prompt".into(), "a".into(), "--chat".into()], "only system messages"),
        (vec!["run".into(), s(&bad_gen), "--prompt-ids".into(), "1".into()], "eos_token_id"),
        (vec!["run".into(), s(&no_bos), "--prompt".into(), "".into()], "encodes to no tokens"),
        (vec!["run".into(), s(&kir), "--chat".into()], "--prompt"),
        (vec!["run".into(), s(&kir), "--chat".into(), "--prompt-ids".into(), "1".into()], "--prompt-ids"),
        (vec!["run".into(), s(&kir)], "give a prompt"),
        (vec!["run".into(), s(empty_dir.path()), "--prompt-ids".into(), "1".into()], "no config.json"),
        (vec!["run".into(), s(&onnx), "--prompt-ids".into(), "1".into()], "not an ONNX model"),
        (vec!["run".into(), s(&bad_gguf), "--prompt-ids".into(), "1".into()], "model.gguf"),
        (vec!["ir".into(), s(&bad_gguf)], "model.gguf"),
        (vec!["logits".into(), s(&kir), "--prompt-ids".into(), "64".into()], "64"),
        (vec!["logits".into(), s(&kir)], "give a prompt"),
        (vec!["logits".into(), s(&bad_tok), "--prompt".into(), "a".into()], "tokenizer JSON does not parse"),
    ];
    for (args, expected) in cases {
        let out = kiln().args(&args).output().unwrap();
        let err = unwrapped(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: stderr does not say `{expected}`:\n{err}");
    }
}

fn default_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default")
}

#[test]
fn hf_default_model_encodes_like_transformers_and_decodes_its_greedy_text() {
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/default_model/golden.json");
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    let model = default_model_dir();
    for prompt in golden["prompts"].as_array().unwrap().iter().take(2) {
        let text = prompt["text"].as_str().unwrap();
        let out = kiln().arg("logits").arg(&model).args(["--prompt", text, "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let logits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(logits["prompt_ids"], prompt["ids"], "{text:?}");

        let run = run_json(&model, &["--prompt", text, "--max-new-tokens", "24"]);
        let greedy: Vec<u32> =
            prompt["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(ids_of(&run), greedy[..24].to_vec(), "{text:?}");
        // The golden text decodes all 64 greedy tokens; ours is its first 24 tokens' worth.
        let ours = run["text"].as_str().unwrap();
        assert!(!ours.is_empty() && prompt["greedy_text"].as_str().unwrap().starts_with(ours), "{ours:?}");
    }
}

#[test]
fn hf_models_need_no_weights_option_and_reject_one() {
    kiln()
        .arg("run")
        .arg(default_model_dir())
        .args(["--prompt-ids", "1", "--weights", "x.safetensors"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("a separate weights file"));
}

/// SmolLM2-135M-Instruct's GGUF from tools/fetch_smollm2.sh, if it is in the cache (required when
/// KILN_REQUIRE_MODELS=1).
fn smollm2_gguf() -> Option<PathBuf> {
    let cache = std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))?;
    let path = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        return Some(path);
    }
    assert_ne!(std::env::var("KILN_REQUIRE_MODELS").as_deref(), Ok("1"), "{} is missing", path.display());
    eprintln!("skipping: {} is missing (run tools/fetch_smollm2.sh to fetch it)", path.display());
    None
}

#[test]
fn gguf_chat_prompt_matches_transformers_and_answers() {
    let Some(gguf) = smollm2_gguf() else { return };
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/golden.json");
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    let chat = golden["prompts"].as_array().unwrap().iter().find(|p| p["kind"] == "chat").unwrap();

    // The GGUF's own template renders the message; its tokenizer encodes the text as transformers did.
    let args = ["--prompt", "What is the capital of France?", "--chat", "--json"];
    let out = kiln().arg("logits").arg(&gguf).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logits: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(logits["prompt_ids"], chat["ids"]);

    // The GGUF names <|im_end|> (2) as its EOS: generation stops there, 8 tokens into the golden greedy
    // continuation, though 12 are allowed.
    let args = ["--prompt", "What is the capital of France?", "--chat", "--max-new-tokens", "12"];
    let run = run_json(&gguf, &args);
    let greedy: Vec<u32> = chat["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(ids_of(&run), greedy[..8].to_vec());
    assert_eq!(greedy[7], 2);
    assert_eq!(run["stats"]["new_tokens"], 8);
    assert_eq!(run["text"], "The capital of France is Paris.<|im_end|>");
}

/// Python that repeats itself, the kind of prompt where drafting from the context pays.
const REPETITIVE_CODE: &str = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n    return a * b\n\ndef div(a, b):\n";

#[test]
fn speculative_runs_emit_the_plain_greedy_tokens_in_fewer_steps() {
    let model = default_model_dir();
    let args = |speculate: &str| -> Vec<String> {
        ["--prompt", REPETITIVE_CODE, "--max-new-tokens", "64", "--ignore-eos", "--speculate", speculate]
            .map(String::from)
            .to_vec()
    };
    let run = |speculate: &str| {
        let a = args(speculate);
        run_json(&model, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let plain = run("none");
    assert_eq!(ids_of(&plain).len(), 64);
    assert_eq!(plain["stats"]["steps"], 64);
    assert_eq!(plain["stats"]["accepted_per_step"], 1.0);
    let draft = format!("draft:{}", model.display());
    for speculate in ["ngram", "tree", draft.as_str()] {
        let spec = run(speculate);
        assert_eq!(ids_of(&spec), ids_of(&plain), "--speculate {speculate}: tokens differ from plain greedy");
        let stats = &spec["stats"];
        let per_step = stats["accepted_per_step"].as_f64().unwrap();
        assert!(per_step > 1.5, "--speculate {speculate}: {stats}");
        let rate = stats["acceptance_rate"].as_f64().unwrap();
        assert!(rate > 0.0 && rate <= 1.0, "--speculate {speculate}: {stats}");
        assert!(stats["steps"].as_u64().unwrap() < 64, "--speculate {speculate}: {stats}");
        assert_eq!(stats["speculate"], speculate);
    }
}

#[test]
fn bad_speculation_options_exit_nonzero_with_a_reason() {
    let model = default_model_dir();
    let fails = |args: &[&str], phrase: &str| {
        let out = kiln().arg("run").args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = unwrapped(&out.stderr);
        assert!(err.contains(phrase), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    };
    let m = model.to_str().unwrap();
    fails(&[m, "--prompt", "x", "--speculate", "sometimes"], "none, ngram, tree, draft:PATH");
    fails(&[m, "--prompt", "x", "--speculate", "draft:"], "needs the draft model's path");
    let fixture = default_model_dir().join("../../tests/fixtures/hf/llama");
    let draft = format!("draft:{}", fixture.display());
    fails(&[m, "--prompt", "x", "--speculate", &draft], "share a tokenizer");
    // A hand-written graph without a tree mask input: chains work, trees are refused.
    let e = example();
    let e = e.to_str().unwrap();
    fails(&[e, "--prompt-ids", "1,2,3", "--speculate", "tree"], "tree_mask");
    let chain = kiln().args(["run", e, "--prompt-ids", "1,2,3,1,2,3,1,2", "--json", "--speculate", "ngram"]).output();
    let chain = chain.unwrap();
    assert!(chain.status.success(), "{}", String::from_utf8_lossy(&chain.stderr));
}

#[test]
fn run_on_cuda_without_a_gpu_says_so() {
    // CI machines have no NVIDIA driver: the CUDA executor must refuse clearly, not crash.
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        return;
    }
    let out =
        kiln().args(["run", "--prompt-ids", "1,2,3", "--max-new-tokens", "2", "--device", "cuda"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CUDA") && err.contains("--device cpu"), "{err}");
}
