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
            .args(["run", "--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--json"])
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
        &["run", "--prompt", "hello"],
        &["run", "--prompt-ids", "99999"],
        &["run", "--prompt-ids", "1", "--temperature", "-1"],
        &["run", "--prompt-ids", "1", "--temperature", "1", "--top-p", "0"],
    ];
    for args in cases {
        let out = kiln().args(*args).output().unwrap();
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
