//! `kiln onnx-conformance DIR [--json]`: runs every ONNX node-suite case under DIR (a directory with
//! `model.onnx` and `test_data_set_N/{input,output}_K.pb`, as `tools/gen_onnx_node_suite.py` writes
//! them) on the CPU executor and reports each as pass, fail (a numerical mismatch, a wrong type, or an
//! error while importing or running) or unsupported (an op, opset feature or dtype kiln lacks).
//!
//! Floats compare with `|got - want| <= atol + rtol * |want|` (rtol 1e-3, atol 1e-4, NaN equal to
//! NaN); low-bit floats (float8, e8m0, float4) exactly by value, NaN equal to NaN whatever its code;
//! integers (low-bit ones included), bools and strings exactly. Graph inputs that an op needs at import time (Squeeze's `axes`
//! given as an input, ...) are specialised to the case's values (see `kiln_frontends::onnx`).

use std::collections::HashMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use kiln_frontends::FrontendError;
use kiln_frontends::onnx::{ImportOptions, load_onnx_with, read_tensor_proto};
use kiln_ir::{Tensor, TensorData};
use miette::{IntoDiagnostic, Result, miette};

const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;

#[derive(clap::Args, Debug)]
pub struct OnnxConformanceArgs {
    /// Directory of cases (each a directory with model.onnx and test_data_set_*), or one case.
    dir: PathBuf,
    /// Print `{"cases": [{"name", "status", "detail"}], "passed", "failed", "unsupported"}`.
    #[arg(long)]
    json: bool,
    /// Only run cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Pass,
    Fail,
    Unsupported,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unsupported => "unsupported",
        }
    }
}

pub fn run(args: OnnxConformanceArgs) -> Result<()> {
    let cases = find_cases(&args.dir)?;
    let cases: Vec<PathBuf> = match &args.filter {
        Some(f) => cases.into_iter().filter(|c| case_name(c).contains(f.as_str())).collect(),
        None => cases,
    };
    if cases.is_empty() {
        return Err(miette!(
            "{}: no ONNX test cases (directories with model.onnx) found; generate the node suite with \
             `python3 tools/gen_onnx_node_suite.py`",
            args.dir.display()
        ));
    }
    // A panic inside a case is reported as that case's failure; the default hook would also print it.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut results = Vec::with_capacity(cases.len());
    for case in &cases {
        let (status, detail) = match std::panic::catch_unwind(AssertUnwindSafe(|| run_case(case))) {
            Ok(r) => r,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                (Status::Fail, format!("panicked (a kiln bug): {msg}"))
            }
        };
        results.push((case_name(case), status, detail));
    }
    std::panic::set_hook(hook);
    let count = |s: Status| results.iter().filter(|r| r.1 == s).count();
    let (passed, failed, unsupported) = (count(Status::Pass), count(Status::Fail), count(Status::Unsupported));
    let mut out = std::io::stdout().lock();
    if args.json {
        let cases: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, status, detail)| serde_json::json!({"name": name, "status": status.name(), "detail": detail}))
            .collect();
        let json = serde_json::json!({"cases": cases, "passed": passed, "failed": failed, "unsupported": unsupported});
        writeln!(out, "{json}").into_diagnostic()?;
    } else {
        for (name, status, detail) in &results {
            if *status == Status::Pass {
                writeln!(out, "pass         {name}").into_diagnostic()?;
            } else {
                writeln!(out, "{:<12} {name}: {detail}", status.name()).into_diagnostic()?;
            }
        }
        writeln!(out, "{} cases: {passed} passed, {failed} failed, {unsupported} unsupported", results.len())
            .into_diagnostic()?;
    }
    Ok(())
}

fn case_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| dir.display().to_string())
}

/// `dir` itself when it is a case, else its sub-directories that are cases, sorted by name.
fn find_cases(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join("model.onnx").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| miette!("cannot read {}: {e}", dir.display()))?;
    let mut cases: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("model.onnx").is_file()).collect();
    cases.sort();
    Ok(cases)
}

/// The `prefix_N.pb` files of a data set, in order of N.
fn numbered(dir: &Path, prefix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name.strip_prefix(prefix)?.strip_suffix(".pb")?.parse().ok()?;
            Some((n, p.clone()))
        })
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn run_case(case: &Path) -> (Status, String) {
    let mut sets: Vec<PathBuf> = match std::fs::read_dir(case) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && case_name(p).starts_with("test_data_set_"))
            .collect(),
        Err(e) => return (Status::Fail, format!("cannot read the case: {e}")),
    };
    sets.sort();
    if sets.is_empty() {
        return (Status::Fail, "no test_data_set_* directory".into());
    }
    for set in &sets {
        match run_data_set(case, set) {
            Ok(()) => {}
            Err(r) => return r,
        }
    }
    (Status::Pass, String::new())
}

fn read_pb(path: &Path) -> std::result::Result<(String, Tensor), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    read_tensor_proto(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn run_data_set(case: &Path, set: &Path) -> std::result::Result<(), (Status, String)> {
    let fail = |m: String| (Status::Fail, m);
    let set_name = case_name(set);
    let input_files = numbered(set, "input_").map_err(|e| fail(e.to_string()))?;
    let output_files = numbered(set, "output_").map_err(|e| fail(e.to_string()))?;
    // Inputs that are not tensors (sequences, optionals) fail to decode here; the import then reports
    // the graph input's type as unsupported.
    let inputs: Vec<Option<(String, Tensor)>> = input_files.iter().map(|p| read_pb(p).ok()).collect();
    let options = ImportOptions {
        input_values: inputs.iter().flatten().map(|(n, t)| (n.clone(), t.clone())).collect::<HashMap<_, _>>(),
    };
    let import = match load_onnx_with(&case.join("model.onnx"), &options) {
        Ok(i) => i,
        Err(FrontendError::Onnx { error, .. }) if error.is_unsupported() => {
            return Err((Status::Unsupported, error.to_string()));
        }
        Err(e) => return Err(fail(format!("import: {e}"))),
    };
    let by_name: HashMap<&str, &Tensor> = inputs.iter().flatten().map(|(n, t)| (n.as_str(), t)).collect();
    let mut feed = Vec::with_capacity(import.input_names.len());
    for (i, name) in import.input_names.iter().enumerate() {
        let t = by_name
            .get(name.as_str())
            .copied()
            .or_else(|| inputs.get(i).and_then(|o| o.as_ref()).filter(|(n, _)| n.is_empty()).map(|(_, t)| t))
            .ok_or_else(|| fail(format!("{set_name}: no readable input file for graph input `{name}`")))?;
        feed.push(t.clone());
    }
    let graph = import.model.graph;
    let mut exec = kiln_runtime::cpu::CpuExecutor::new(graph, import.model.weights)
        .map_err(|e| fail(format!("the imported graph is invalid: {e}")))?;
    let got = exec.run(&feed).map_err(|e| match e {
        kiln_runtime::RuntimeError::UnsupportedOp { .. } => (Status::Unsupported, e.to_string()),
        e => fail(format!("{set_name}: run: {e}")),
    })?;
    if got.len() != output_files.len() {
        return Err(fail(format!("{set_name}: {} outputs computed, {} expected", got.len(), output_files.len())));
    }
    for (k, (g, file)) in got.iter().zip(&output_files).enumerate() {
        let (_, want) = read_pb(file).map_err(fail)?;
        compare(g, &want).map_err(|m| fail(format!("{set_name}: output {k}: {m}")))?;
    }
    Ok(())
}

/// Whether `got` matches `want`: same dtype and shape, floats within tolerance, the rest exactly.
fn compare(got: &Tensor, want: &Tensor) -> std::result::Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {} but expected {}", got.ty(), want.ty()));
    }
    if want.dtype().is_float() {
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        let mut worst: Option<(usize, f64)> = None;
        for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * b.abs();
            if !ok {
                let err = if (a - b).is_nan() { f64::INFINITY } else { (a - b).abs() };
                if worst.is_none_or(|(_, e)| err > e) {
                    worst = Some((i, err));
                }
            }
        }
        if let Some((i, _)) = worst {
            return Err(format!("element {i} is {} but expected {} (rtol {RTOL}, atol {ATOL})", g[i], w[i]));
        }
        return Ok(());
    }
    if let (TensorData::Str(a), TensorData::Str(b)) = (got.data(), want.data()) {
        return match a.iter().zip(b).position(|(x, y)| x != y) {
            Some(i) => Err(format!("element {i} is {:?} but expected {:?}", a[i], b[i])),
            None => Ok(()),
        };
    }
    let exact = match (got.data(), want.data()) {
        (TensorData::Bool(a), TensorData::Bool(b)) => a.iter().zip(b).position(|(x, y)| x != y),
        // Two codes are the same value when they decode to equal numbers (+0 and -0 included) or both
        // decode to NaN (E4M3FN and E5M2 have several NaN codes).
        (TensorData::LowBit(t, a), TensorData::LowBit(_, b)) if !t.is_int() => a.iter().zip(b).position(|(&x, &y)| {
            let (x, y) = (t.to_f64(x), t.to_f64(y));
            !(x == y || x.is_nan() && y.is_nan())
        }),
        _ => got.to_i64_vec().iter().zip(want.to_i64_vec()).position(|(x, y)| *x != y),
    };
    match exact {
        Some(i) => Err(format!(
            "element {i} is {} but expected {} (exact comparison)",
            got.data().get_f64(i),
            want.data().get_f64(i)
        )),
        None => Ok(()),
    }
}
