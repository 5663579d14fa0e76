//! Guards DESIGN.md section 2: dependencies between kiln crates point only towards `kiln-ir`, and the
//! runtime never depends on the compiler crates (a deployed binary must stay small).

use std::collections::{BTreeMap, BTreeSet};

/// The allowed kiln-internal dependency edges (normal and build dependencies) for each kiln crate.
fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    let compiler = ["kiln-ir", "kiln-frontends", "kiln-passes", "kiln-codegen", "kiln-runtime"];
    BTreeMap::from([
        ("kiln-ir", BTreeSet::new()),
        ("kiln-frontends", BTreeSet::from(["kiln-ir"])),
        ("kiln-passes", BTreeSet::from(["kiln-ir"])),
        ("kiln-codegen", BTreeSet::from(["kiln-ir"])),
        ("kiln-runtime", BTreeSet::from(["kiln-ir"])),
        ("kiln", BTreeSet::from(compiler)),
        ("kiln-tests", BTreeSet::from_iter(compiler.into_iter().chain(["kiln"]))),
        // The build.rs example: the compiler in its build script, only the runtime in the program.
        ("embed-default-model", BTreeSet::from(["kiln-runtime", "kiln"])),
    ])
}

#[test]
fn crate_dependencies_follow_the_design_dag() {
    let meta = cargo_metadata::MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .no_deps()
        .exec()
        .expect("cargo metadata runs on the workspace");
    let allowed = allowed();
    let members: BTreeSet<String> = meta.workspace_packages().iter().map(|p| p.name.to_string()).collect();
    let expected: BTreeSet<String> = allowed.keys().map(|s| s.to_string()).collect();
    assert_eq!(members, expected, "workspace members changed: update DESIGN.md and this test together");

    let mut violations = Vec::new();
    for pkg in meta.workspace_packages() {
        let ok = &allowed[pkg.name.as_str()];
        for dep in &pkg.dependencies {
            // Dev-dependencies may reach further (tests of one crate may use another's builders), but
            // only for kiln-tests; a library's dev-dependency on a crate above it would still hide a cycle.
            let is_dev = dep.kind == cargo_metadata::DependencyKind::Development;
            if members.contains(&dep.name)
                && !ok.contains(dep.name.as_str())
                && !(is_dev && pkg.name.as_str() == "kiln-tests")
            {
                violations.push(format!("{} -> {} ({:?})", pkg.name, dep.name, dep.kind));
            }
        }
    }
    assert!(violations.is_empty(), "dependency edges outside the DESIGN.md DAG:\n{}", violations.join("\n"));
}

#[test]
fn runtime_pulls_in_no_compiler_crate_transitively() {
    let meta = cargo_metadata::MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .exec()
        .expect("cargo metadata runs on the workspace");
    let resolve = meta.resolve.as_ref().expect("metadata has a resolve graph");
    let runtime = meta.workspace_packages().into_iter().find(|p| p.name.as_str() == "kiln-runtime").expect("runtime");
    let by_id: BTreeMap<_, _> = resolve.nodes.iter().map(|n| (n.id.clone(), n)).collect();
    let names: BTreeMap<_, _> = meta.packages.iter().map(|p| (p.id.clone(), p.name.to_string())).collect();
    let mut stack = vec![runtime.id.clone()];
    let mut seen = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in &by_id[&id].deps {
            // Only normal dependencies end up in a deployed binary.
            if dep.dep_kinds.iter().any(|k| k.kind == cargo_metadata::DependencyKind::Normal) {
                stack.push(dep.pkg.clone());
            }
        }
    }
    let reached: BTreeSet<&str> = seen.iter().map(|id| names[id].as_str()).collect();
    for forbidden in ["kiln-frontends", "kiln-passes", "kiln-codegen", "kiln"] {
        assert!(!reached.contains(forbidden), "kiln-runtime depends on {forbidden} (transitively)");
    }
    assert!(reached.contains("kiln-ir"));
}
