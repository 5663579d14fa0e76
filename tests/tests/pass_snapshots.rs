//! IR snapshot tests of the passes: every `tests/passes/<pass>/*.kir` is parsed, verified, run through
//! the pass its directory names (and, separately, through the `default` pipeline), verified again and
//! printed; the printed graph is an `insta` snapshot, so a change in what a pass does shows up in review
//! as a diff of IR text.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use kiln_ir::text::{parse, print};
use kiln_ir::{Graph, verify};
use kiln_passes::{Changed, PassContext, PassError, PrintAfter, pass_by_name, pass_names, pipeline};

/// Where the snapshot inputs live, one directory per pass name.
fn inputs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("passes")
}

/// `(pass directory, input file)` for every input, in a stable order.
fn inputs() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(inputs_dir()).expect("tests/passes exists") {
        let dir = dir.expect("readable directory entry").path();
        if !dir.is_dir() {
            continue;
        }
        let pass = dir.file_name().and_then(|n| n.to_str()).expect("a UTF-8 directory name").to_string();
        for file in std::fs::read_dir(&dir).expect("readable pass directory") {
            let file = file.expect("readable directory entry").path();
            if file.extension().is_some_and(|e| e == "kir") {
                found.push((pass.clone(), file));
            }
        }
    }
    found.sort();
    found
}

fn stem(path: &Path) -> &str {
    path.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 file name")
}

/// Parses and verifies an input; a broken input is a broken test, reported with its path.
fn load(path: &Path) -> Graph {
    let src = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let g = parse(&src).unwrap_or_else(|e| panic!("{}:{e}", path.display()));
    if let Err(e) = verify(&g, None) {
        panic!("{} is not a valid graph:\n{e}", path.display());
    }
    g
}

/// Prints `g`, checking that the text is valid and reads back to itself.
fn print_checked(g: &Graph, what: &str) -> String {
    if let Err(e) = verify(g, None) {
        panic!("{what} left an invalid graph:\n{e}\n{}", print(g));
    }
    let text = print(g);
    let reparsed = parse(&text).unwrap_or_else(|e| panic!("{what}: printed graph does not parse: {e}\n{text}"));
    assert_eq!(print(&reparsed), text, "{what}: printed graph does not round-trip");
    text
}

fn snapshot(name: &str, description: String, text: &str) {
    insta::with_settings!({ description => description, omit_expression => true, prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn every_pass_has_at_least_three_inputs_and_every_directory_names_a_pass() {
    let inputs = inputs();
    for &pass in pass_names() {
        let n = inputs.iter().filter(|(p, _)| p == pass).count();
        assert!(n >= 3, "tests/passes/{pass} has {n} .kir inputs; every pass needs at least 3");
    }
    for (pass, path) in &inputs {
        assert!(pass_by_name(pass).is_ok(), "{} is in a directory that names no pass", path.display());
    }
}

#[test]
fn single_pass_snapshots() {
    for (pass_name, path) in inputs() {
        let what = format!("`{pass_name}` on {}", path.display());
        let mut g = load(&path);
        let before = print(&g);
        let pass = pass_by_name(&pass_name).expect("directory names a pass");
        let changed = pass.run(&mut g, &mut PassContext::new()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let after = print_checked(&g, &what);
        // `Changed` must be honest in both directions.
        match changed {
            Changed::Yes => assert_ne!(after, before, "{what} reported a change but the graph is the same"),
            Changed::No => assert_eq!(after, before, "{what} reported no change but changed the graph"),
        }
        // A second run has nothing left to do.
        let again = pass.run(&mut g, &mut PassContext::new()).unwrap();
        assert_eq!(again, Changed::No, "{what}: a second run still changed the graph:\n{}", print(&g));
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        snapshot(
            &format!("{pass_name}__{}", stem(&path)),
            format!("`{pass_name}` on tests/passes/{pass_name}/{file} (changed: {changed})"),
            &after,
        );
    }
}

#[test]
fn default_pipeline_snapshots_with_one_dump_per_pass() {
    let expected_runs = pipeline("default").unwrap().pass_names();
    for (pass_name, path) in inputs() {
        let what = format!("`default` on {}", path.display());
        let mut g = load(&path);
        let mut pm = pipeline("default").unwrap();
        pm.verify_each(true);
        let dumps = Rc::new(RefCell::new(Vec::<(String, String)>::new()));
        let sink = dumps.clone();
        pm.set_print_sink(move |pass, text| sink.borrow_mut().push((pass.to_string(), text.to_string())));
        pm.print_after(PrintAfter::All).unwrap();
        let report = pm.run(&mut g, &mut PassContext::new()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let after = print_checked(&g, &what);

        let dumped: Vec<_> = dumps.borrow().iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(dumped, expected_runs, "{what}: one dump per pass run, in order");
        assert_eq!(dumps.borrow().last().map(|(_, t)| t.as_str()), Some(after.as_str()));
        for (pass, text) in dumps.borrow().iter() {
            assert!(parse(text).is_ok(), "{what}: the dump after {pass} does not parse");
        }
        let table = report.to_string();
        for name in &expected_runs {
            assert!(table.lines().any(|l| l.starts_with(&format!("{name} ")) && l.ends_with(" ms")), "{table}");
        }
        assert_eq!(report.runs.len(), expected_runs.len());

        snapshot(
            &format!("default__{pass_name}__{}", stem(&path)),
            format!("`default` pipeline on tests/passes/{pass_name}/{}", path.file_name().unwrap().to_string_lossy()),
            &after,
        );
    }
}

#[test]
fn o0_only_verifies() {
    for (_, path) in inputs() {
        let mut g = load(&path);
        let before = print(&g);
        let report = pipeline("O0").unwrap().run(&mut g, &mut PassContext::new()).unwrap();
        assert!(report.runs.is_empty());
        assert_eq!(print(&g), before);
    }
    // ... and rejects a broken graph before doing anything else.
    let mut g = load(&inputs_dir().join("dce").join("dead_branches.kir"));
    let dead: std::collections::HashSet<_> = g.order().iter().copied().take(1).collect();
    g.remove_nodes(&dead);
    let e = pipeline("O0").unwrap().run(&mut g, &mut PassContext::new()).unwrap_err();
    assert!(matches!(e, PassError::InvalidInput { .. }), "{e:?}");
}

#[test]
fn disabling_constant_folding_keeps_the_shape_chain() {
    let path = inputs_dir().join("constant-folding").join("onnx_reshape_heads.kir");
    let folded = {
        let mut g = load(&path);
        pipeline("default").unwrap().run(&mut g, &mut PassContext::new()).unwrap();
        print(&g)
    };
    let mut g = load(&path);
    let mut pm = pipeline("default").unwrap();
    pm.disable("constant-folding").unwrap();
    let report = pm.run(&mut g, &mut PassContext::new()).unwrap();
    assert!(report.runs.iter().all(|r| r.name != "constant-folding"));
    assert_eq!(report.disabled, ["constant-folding"]);
    let unfolded = print(&g);
    assert!(unfolded.contains("= shape(") && unfolded.contains("= concat("), "{unfolded}");
    assert!(!folded.contains("= shape(") && !folded.contains("= concat("), "{folded}");
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let mut pm = pipeline("default").unwrap();
    let e = pm.disable("constant-fold").unwrap_err().to_string();
    assert_eq!(e, "unknown pass `constant-fold`; valid passes are: shape-inference, constant-folding, cse, dce");
    let e = pm.print_after(PrintAfter::Pass("DCE".into())).unwrap_err().to_string();
    assert_eq!(e, "unknown pass `DCE`; valid passes are: shape-inference, constant-folding, cse, dce");
    let e = pipeline("O2").unwrap_err().to_string();
    assert_eq!(e, "unknown pipeline `O2`; valid pipelines are: O0, default, onnx");
    let e = pass_by_name("gvn").err().unwrap().to_string();
    assert_eq!(e, "unknown pass `gvn`; valid passes are: shape-inference, constant-folding, cse, dce, raise-decoder");
}
