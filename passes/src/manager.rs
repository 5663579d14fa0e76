//! The [`PassManager`]: runs an ordered list of passes with verification, `--print-after` dumps,
//! `--disable-pass` and per-pass timing.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use kiln_ir::Graph;

use crate::pass::{Changed, Pass, PassContext, PassError};

/// After which passes the graph is printed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum PrintAfter {
    #[default]
    None,
    All,
    /// Every run of the pass with this name.
    Pass(String),
}

/// Receives `(pass name, printed graph)` after each pass selected by [`PrintAfter`].
pub type PrintSink = Box<dyn FnMut(&str, &str)>;

/// An ordered list of passes and the options that govern running them.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    disabled: BTreeSet<&'static str>,
    print_after: PrintAfter,
    sink: Option<PrintSink>,
    verify_each: bool,
}

impl Default for PassManager {
    fn default() -> PassManager {
        PassManager::new()
    }
}

impl fmt::Debug for PassManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PassManager")
            .field("passes", &self.pass_names())
            .field("disabled", &self.disabled)
            .field("print_after", &self.print_after)
            .field("verify_each", &self.verify_each)
            .finish_non_exhaustive()
    }
}

impl PassManager {
    /// An empty pipeline. Verification after each pass is on in debug builds (and so in tests), where
    /// catching a pass that breaks the graph at the pass that did it is worth its cost.
    pub fn new() -> PassManager {
        PassManager {
            passes: Vec::new(),
            disabled: BTreeSet::new(),
            print_after: PrintAfter::None,
            sink: None,
            verify_each: cfg!(debug_assertions),
        }
    }

    /// Appends a pass to the pipeline.
    pub fn add(&mut self, pass: impl Pass + 'static) -> &mut PassManager {
        self.passes.push(Box::new(pass));
        self
    }

    /// Appends an already boxed pass (as [`crate::pass_by_name`] returns it).
    pub fn add_boxed(&mut self, pass: Box<dyn Pass>) -> &mut PassManager {
        self.passes.push(pass);
        self
    }

    /// The passes in run order, repeated names included.
    pub fn pass_names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Each pass name once, in first-run order (what `disable` and `print_after` accept).
    fn distinct_pass_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for name in self.pass_names() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// Resolves a user-given pass name against this pipeline.
    fn lookup(&self, name: &str) -> Result<&'static str, PassError> {
        if let Some(found) = self.passes.iter().map(|p| p.name()).find(|n| *n == name) {
            return Ok(found);
        }
        if crate::pipelines::pass_names().contains(&name) {
            Err(PassError::NotInPipeline { name: name.to_string(), in_pipeline: self.distinct_pass_names() })
        } else {
            Err(PassError::UnknownPass { name: name.to_string(), valid: self.distinct_pass_names() })
        }
    }

    /// Skips every run of the pass named `name`.
    pub fn disable(&mut self, name: &str) -> Result<(), PassError> {
        let name = self.lookup(name)?;
        self.disabled.insert(name);
        Ok(())
    }

    /// Selects the passes after which the graph is printed to the sink.
    pub fn print_after(&mut self, which: PrintAfter) -> Result<(), PassError> {
        if let PrintAfter::Pass(name) = &which {
            self.lookup(name)?;
        }
        self.print_after = which;
        Ok(())
    }

    /// Where `print_after` dumps go. Without a sink they go to stderr under a
    /// `// ----- after <pass> -----` header.
    pub fn set_print_sink(&mut self, sink: impl FnMut(&str, &str) + 'static) {
        self.sink = Some(Box::new(sink));
    }

    /// Whether the verifier runs after each pass (default: in debug builds).
    pub fn verify_each(&mut self, on: bool) {
        self.verify_each = on;
    }

    fn prints_after(&self, pass: &str) -> bool {
        match &self.print_after {
            PrintAfter::None => false,
            PrintAfter::All => true,
            PrintAfter::Pass(name) => name == pass,
        }
    }

    /// Runs the enabled passes in order.
    ///
    /// The input graph is always verified first, so a broken frontend is reported as such and not
    /// blamed on the first pass (and because every pass assumes a valid graph). With `verify_each`, the
    /// graph is verified again after each pass and a failure names that pass.
    pub fn run(&mut self, g: &mut Graph, cx: &mut PassContext) -> Result<PassReport, PassError> {
        let mut report = PassReport::default();
        let started = Instant::now();
        kiln_ir::verify(g, cx.weights).map_err(|errors| PassError::InvalidInput { errors })?;
        report.verify_time += started.elapsed();

        for pass in &self.passes {
            let name = pass.name();
            if self.disabled.contains(name) {
                report.disabled.push(name);
                continue;
            }
            let started = Instant::now();
            let changed = pass.run(g, cx)?;
            let time = started.elapsed();
            report.runs.push(PassRun { name, changed, time });

            if self.verify_each {
                let started = Instant::now();
                let weights = cx.merged_weights();
                kiln_ir::verify(g, weights.as_deref()).map_err(|errors| PassError::Verify { pass: name, errors })?;
                report.verify_time += started.elapsed();
            }
            if self.prints_after(name) {
                let text = kiln_ir::text::print(g);
                match &mut self.sink {
                    Some(sink) => sink(name, &text),
                    None => eprint!("// ----- after {name} -----\n{text}"),
                }
            }
        }
        Ok(report)
    }
}

/// One pass run: its name, whether it changed the graph, and how long it took (verification and
/// printing excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassRun {
    pub name: &'static str,
    pub changed: Changed,
    pub time: Duration,
}

/// What a [`PassManager::run`] did, in run order. Its `Display` is the timing table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub runs: Vec<PassRun>,
    /// Passes skipped because they were disabled, once per skipped run.
    pub disabled: Vec<&'static str>,
    /// Time spent verifying the input and, with `verify_each`, after each pass.
    pub verify_time: Duration,
}

impl PassReport {
    /// Whether any pass changed the graph.
    pub fn changed(&self) -> Changed {
        self.runs.iter().fold(Changed::No, |acc, r| acc | r.changed)
    }

    /// Total time spent in passes.
    pub fn pass_time(&self) -> Duration {
        self.runs.iter().map(|r| r.time).sum()
    }
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.runs.iter().map(|r| r.name.len()).chain(["verification".len()]).max().unwrap_or(0);
        writeln!(f, "{:<width$}  {:<7}  {:>12}", "pass", "changed", "time")?;
        for run in &self.runs {
            writeln!(f, "{:<width$}  {:<7}  {:>12}", run.name, run.changed.to_string(), millis(run.time))?;
        }
        writeln!(f, "{:<width$}  {:<7}  {:>12}", "verification", "", millis(self.verify_time))?;
        writeln!(f, "{:<width$}  {:<7}  {:>12}", "total", "", millis(self.pass_time() + self.verify_time))?;
        if !self.disabled.is_empty() {
            writeln!(f, "disabled: {}", self.disabled.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::rc::Rc;

    use kiln_ir::{DType, Op, TensorType, UnaryOp};

    use super::*;
    use crate::{CommonSubexpressionElimination, DeadCodeElimination};

    /// A pass that breaks the graph on purpose: drops every node, leaving the outputs undefined.
    struct DropEverything;

    impl Pass for DropEverything {
        fn name(&self) -> &'static str {
            "drop-everything"
        }
        fn run(&self, g: &mut Graph, _cx: &mut PassContext) -> Result<Changed, PassError> {
            let all: HashSet<_> = g.order().iter().copied().collect();
            g.remove_nodes(&all);
            Ok(Changed::Yes)
        }
    }

    /// `exp(x)` computed twice and an unused `neg`: CSE and DCE both have work.
    fn sample() -> Graph {
        let ty = TensorType::of(DType::F32, &[4]);
        let mut g = Graph::new("sample");
        let x = g.add_input(ty.clone());
        let a = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![ty.clone()])[0];
        let b = g.add_node(Op::Unary(UnaryOp::Exp), vec![x], vec![ty.clone()])[0];
        g.add_node(Op::Unary(UnaryOp::Neg), vec![x], vec![ty.clone()]);
        g.set_outputs(vec![a, b]);
        g
    }

    fn cse_then_dce() -> PassManager {
        let mut pm = PassManager::new();
        pm.add(CommonSubexpressionElimination).add(DeadCodeElimination);
        pm
    }

    fn capture(pm: &mut PassManager) -> Rc<RefCell<Vec<(String, String)>>> {
        let dumps = Rc::new(RefCell::new(Vec::new()));
        let sink = dumps.clone();
        pm.set_print_sink(move |pass, text| sink.borrow_mut().push((pass.to_string(), text.to_string())));
        dumps
    }

    #[test]
    fn runs_passes_in_order_and_reports_each() {
        let mut g = sample();
        let report = cse_then_dce().run(&mut g, &mut PassContext::new()).unwrap();
        let runs: Vec<_> = report.runs.iter().map(|r| (r.name, r.changed)).collect();
        assert_eq!(runs, [("cse", Changed::Yes), ("dce", Changed::Yes)]);
        assert_eq!(g.order().len(), 1);
        let table = report.to_string();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("pass") && lines[0].contains("changed") && lines[0].contains("time"));
        assert!(lines[1].starts_with("cse ") && lines[1].contains("yes") && lines[1].ends_with(" ms"), "{table}");
        assert!(lines[2].starts_with("dce ") && lines[2].contains("yes") && lines[2].ends_with(" ms"), "{table}");
        assert!(lines[3].starts_with("verification"), "{table}");
        assert!(lines[4].starts_with("total"), "{table}");
    }

    #[test]
    fn print_after_all_and_one_pass() {
        let mut pm = cse_then_dce();
        let dumps = capture(&mut pm);
        pm.print_after(PrintAfter::All).unwrap();
        let mut g = sample();
        pm.run(&mut g, &mut PassContext::new()).unwrap();
        let names: Vec<_> = dumps.borrow().iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(names, ["cse", "dce"]);
        // The dump after DCE is the final graph, and the one after CSE still has the dead `neg`.
        assert_eq!(dumps.borrow()[1].1, kiln_ir::text::print(&g));
        assert!(dumps.borrow()[0].1.contains("neg"));
        assert!(!dumps.borrow()[1].1.contains("neg"));

        let mut pm = cse_then_dce();
        let dumps = capture(&mut pm);
        pm.print_after(PrintAfter::Pass("dce".into())).unwrap();
        pm.run(&mut sample(), &mut PassContext::new()).unwrap();
        assert_eq!(dumps.borrow().len(), 1);
        assert_eq!(dumps.borrow()[0].0, "dce");
    }

    #[test]
    fn disabled_passes_do_not_run() {
        let mut pm = cse_then_dce();
        pm.disable("cse").unwrap();
        let mut g = sample();
        let report = pm.run(&mut g, &mut PassContext::new()).unwrap();
        assert_eq!(report.runs.iter().map(|r| r.name).collect::<Vec<_>>(), ["dce"]);
        assert_eq!(report.disabled, ["cse"]);
        assert!(report.to_string().contains("disabled: cse"));
        // Both `exp`s survive; only the unused `neg` is gone.
        assert_eq!(g.nodes().map(|(_, n)| n.op.name()).collect::<Vec<_>>(), ["exp", "exp"]);
    }

    #[test]
    fn unknown_names_list_the_pipeline_passes() {
        let mut pm = cse_then_dce();
        let e = pm.disable("cs").unwrap_err();
        assert_eq!(e.to_string(), "unknown pass `cs`; valid passes are: cse, dce");
        let e = pm.print_after(PrintAfter::Pass("dead-code".into())).unwrap_err();
        assert_eq!(e.to_string(), "unknown pass `dead-code`; valid passes are: cse, dce");
        let e = pm.disable("constant-folding").unwrap_err();
        assert_eq!(e.to_string(), "pass `constant-folding` is not in this pipeline; its passes are: cse, dce");
        let e = PassManager::new().disable("cse").unwrap_err();
        assert_eq!(e.to_string(), "pass `cse` is not in this pipeline; its passes are: (none)");
    }

    #[test]
    fn a_pass_that_breaks_the_graph_is_named() {
        let mut pm = PassManager::new();
        pm.add(CommonSubexpressionElimination).add(DropEverything).add(DeadCodeElimination);
        pm.verify_each(true);
        let e = pm.run(&mut sample(), &mut PassContext::new()).unwrap_err();
        match &e {
            PassError::Verify { pass, errors } => {
                assert_eq!(*pass, "drop-everything");
                assert!(!errors.errors.is_empty());
            }
            other => panic!("expected a verification failure, got {other:?}"),
        }
        assert!(e.to_string().starts_with("the graph is invalid after pass `drop-everything`"), "{e}");

        // Without verification the manager does not look.
        pm.verify_each(false);
        assert!(pm.run(&mut sample(), &mut PassContext::new()).is_ok());
    }

    #[test]
    fn an_invalid_input_is_reported_before_any_pass_runs() {
        let mut g = sample();
        let all: HashSet<_> = g.order().iter().copied().collect();
        g.remove_nodes(&all);
        let mut pm = PassManager::new();
        pm.add(DropEverything);
        let dumps = capture(&mut pm);
        pm.print_after(PrintAfter::All).unwrap();
        let e = pm.run(&mut g, &mut PassContext::new()).unwrap_err();
        assert!(matches!(e, PassError::InvalidInput { .. }), "{e:?}");
        assert!(dumps.borrow().is_empty());
    }
}
