//! The [`Pass`] trait every graph transformation implements, the context passes run in, and the
//! errors a pass or the [`crate::PassManager`] can report.

use std::fmt;

use kiln_ir::{Graph, VerifyErrors, WeightStore};

/// A transformation of a graph. Options live in the implementing struct, so a pass is fully described
/// by its value and can be recorded in an artifact's pipeline record.
pub trait Pass {
    /// The name used by `--disable-pass`, `--print-after` and the timing report (kebab-case).
    fn name(&self) -> &'static str;

    /// Transforms `g` in place. A pass may assume `g` is valid (the verifier accepts it) and must leave
    /// it valid; the [`crate::PassManager`] checks that after each pass when `verify_each` is on.
    fn run(&self, g: &mut Graph, cx: &mut PassContext) -> Result<Changed, PassError>;
}

/// What a pass may consult besides the graph, and what it leaves for the caller.
#[derive(Clone, Debug, Default)]
pub struct PassContext<'a> {
    /// The weights `weight` ops name, when the caller has them (the verifier then also checks that
    /// each `weight` op matches its stored tensor). Text-only graphs run without.
    pub weights: Option<&'a WeightStore>,
    /// Weights that passes created (a transposed copy of an ONNX `MatMul` operand for `linear`, ...).
    /// `weight` ops may name them as soon as they are here; the caller adds them to the model's store
    /// after the pipeline ([`PassContext::merged_weights`]). A pass never replaces an existing weight.
    pub new_weights: WeightStore,
    /// What passes want the user to know about the graph, in run order: above all why a pattern did
    /// not apply (`kiln ir` prints them).
    pub notes: Vec<PassNote>,
}

/// A message from a pass about the graph it transformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassNote {
    pub pass: &'static str,
    pub message: String,
}

impl fmt::Display for PassNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pass, self.message)
    }
}

impl<'a> PassContext<'a> {
    /// A context without weights.
    pub fn new() -> PassContext<'a> {
        PassContext { weights: None, new_weights: WeightStore::new(), notes: Vec::new() }
    }

    pub fn with_weights(weights: &'a WeightStore) -> PassContext<'a> {
        PassContext { weights: Some(weights), ..PassContext::new() }
    }

    /// The caller's weights plus those passes created, or `None` when there are neither (a text-only
    /// graph). Cheap: stores share their tensors.
    pub fn merged_weights(&self) -> Option<std::borrow::Cow<'a, WeightStore>> {
        use std::borrow::Cow;
        if self.new_weights.is_empty() {
            return self.weights.map(Cow::Borrowed);
        }
        let mut all = self.weights.cloned().unwrap_or_default();
        for (name, w) in self.new_weights.iter() {
            all.insert(name, w.ty.clone(), w.payload.clone()).expect("passes add only weights with new names");
        }
        Some(Cow::Owned(all))
    }
}

/// Whether a pass modified the graph. Passes report `No` only when the graph is exactly as before, so
/// a driver may iterate a pass to a fixed point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Changed {
    No,
    Yes,
}

impl Changed {
    pub fn is_yes(self) -> bool {
        self == Changed::Yes
    }
}

impl From<bool> for Changed {
    fn from(changed: bool) -> Changed {
        if changed { Changed::Yes } else { Changed::No }
    }
}

impl std::ops::BitOr for Changed {
    type Output = Changed;

    fn bitor(self, rhs: Changed) -> Changed {
        Changed::from(self.is_yes() || rhs.is_yes())
    }
}

impl std::ops::BitOrAssign for Changed {
    fn bitor_assign(&mut self, rhs: Changed) {
        *self = *self | rhs;
    }
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_yes() { "yes" } else { "no" })
    }
}

/// Everything that can go wrong while building or running a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// The graph handed to the pass manager was already invalid, so no pass is to blame.
    #[error("the input graph is invalid (before any pass ran):\n{errors}")]
    InvalidInput { errors: VerifyErrors },
    /// A pass left the graph invalid: a bug in that pass.
    #[error("the graph is invalid after pass `{pass}` (a bug in that pass):\n{errors}")]
    Verify { pass: &'static str, errors: VerifyErrors },
    #[error("unknown pipeline `{name}`; valid pipelines are: {}", .valid.join(", "))]
    UnknownPipeline { name: String, valid: Vec<&'static str> },
    #[error("unknown pass `{name}`; valid passes are: {}", list_or_none(.valid))]
    UnknownPass { name: String, valid: Vec<&'static str> },
    /// A known pass that the pipeline being configured does not contain.
    #[error("pass `{name}` is not in this pipeline; its passes are: {}", list_or_none(.in_pipeline))]
    NotInPipeline { name: String, in_pipeline: Vec<&'static str> },
    /// A pass could not do its work on a graph it was given.
    #[error("pass `{pass}` failed: {message}")]
    Failed { pass: &'static str, message: String },
}

fn list_or_none(names: &[&'static str]) -> String {
    if names.is_empty() { "(none)".to_string() } else { names.join(", ") }
}
