//! `KILN_CPU_PROFILE=1`: wall time per op kind, printed when the executor is dropped.
//!
//! Steps are grouped by how many tokens they carry (one-token decode steps, multi-token steps of up to
//! [`super::linear::ROW_INDEPENDENT_MAX_ROWS`] tokens such as speculative verification, and longer
//! prefills), because what dominates differs between them and a verification step is read against a
//! decode step.

use std::collections::HashMap;
use std::time::Duration;

use super::linear::ROW_INDEPENDENT_MAX_ROWS;

/// Which table a step belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum StepKind {
    Decode,
    MultiToken,
    Prefill,
}

impl StepKind {
    pub(super) fn of_tokens(tokens: usize) -> StepKind {
        match tokens {
            0 | 1 => StepKind::Decode,
            t if t <= ROW_INDEPENDENT_MAX_ROWS => StepKind::MultiToken,
            _ => StepKind::Prefill,
        }
    }

    fn describe(self) -> String {
        match self {
            StepKind::Decode => "one-token steps".to_string(),
            StepKind::MultiToken => format!("steps of 2-{ROW_INDEPENDENT_MAX_ROWS} tokens"),
            StepKind::Prefill => format!("steps of more than {ROW_INDEPENDENT_MAX_ROWS} tokens"),
        }
    }
}

#[derive(Default, Debug)]
struct Table {
    /// op name -> (evaluations, total time)
    ops: HashMap<&'static str, (u64, Duration)>,
    steps: u64,
    tokens: u64,
    /// Whole steps, including what happens between ops (bookkeeping, freeing values).
    wall: Duration,
}

/// Per-op wall time of every step run while profiling is on.
#[derive(Default, Debug)]
pub(super) struct CpuProfile {
    tables: HashMap<StepKind, Table>,
}

impl CpuProfile {
    /// A profile when `KILN_CPU_PROFILE=1`.
    pub(super) fn from_env() -> Option<CpuProfile> {
        std::env::var("KILN_CPU_PROFILE").is_ok_and(|v| v == "1").then(CpuProfile::default)
    }

    pub(super) fn record_op(&mut self, kind: StepKind, op: &'static str, took: Duration) {
        let entry = self.tables.entry(kind).or_default().ops.entry(op).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    pub(super) fn record_step(&mut self, kind: StepKind, tokens: usize, took: Duration) {
        let table = self.tables.entry(kind).or_default();
        table.steps += 1;
        table.tokens += tokens as u64;
        table.wall += took;
    }

    /// The tables, one-token steps first, ops by time spent.
    pub(super) fn report(&self) -> String {
        let mut kinds: Vec<_> = self.tables.iter().filter(|(_, t)| t.steps > 0).collect();
        kinds.sort_by_key(|(k, _)| **k);
        let mut out = String::new();
        for (kind, table) in kinds {
            let steps = table.steps as f64;
            let mut rows: Vec<_> = table.ops.iter().collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
            let in_ops: Duration = rows.iter().map(|r| r.1.1).sum();
            out.push_str(&format!(
                "kiln CPU profile: {} {} ({} tokens), {:.3} ms per step ({:.3} ms in ops)\n{:<16} {:>8} {:>10} {:>10} {:>7}\n",
                table.steps,
                kind.describe(),
                table.tokens,
                1e3 * table.wall.as_secs_f64() / steps,
                1e3 * in_ops.as_secs_f64() / steps,
                "op",
                "evals",
                "us/eval",
                "us/step",
                "share"
            ));
            for (op, (count, took)) in rows {
                let us = 1e6 * took.as_secs_f64();
                out.push_str(&format!(
                    "{op:<16} {count:>8} {:>10.1} {:>10.1} {:>6.1}%\n",
                    us / *count as f64,
                    us / steps,
                    100.0 * took.as_secs_f64() / table.wall.as_secs_f64().max(1e-12)
                ));
            }
        }
        out
    }
}
