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
                kiln_ir::verify(g, cx.weights).map_err(|errors| PassError::Verify { pass: name, errors })?;
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
