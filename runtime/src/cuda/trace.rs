//! The launch trace (`KILN_CUDA_TRACE=1`): where a decode step's time goes inside its CUDA graph.
//!
//! Per-launch events (`KILN_CUDA_PROFILE=1`) time kernels one at a time, outside graphs and without the
//! overlap programmatic dependent launch gives, so they cannot say what a kernel costs in the captured step.
//! Kernels compiled with `KILN_TRACE` (the code generator defines it when `KILN_CUDA_TRACE=1` is set, see
//! common.cuh) have thread 0 of every block record its grid, when it entered, when its wait for the previous
//! kernel returned and when it exited, in `%globaltimer` nanoseconds. The runtime clears the record count
//! before each traced decode step and reads the records after it. Grouped by grid and ordered by first entry,
//! they give each launch's share of the step: from its first block passing the wait to the next launch's
//! first block doing so (the critical path), its run time, and the boundary between its last exit and the
//! next launch's start. The report is printed when the executor is dropped.

use std::collections::HashMap;

use cudarc::driver::{CudaSlice, DevicePtr, result};

use super::device::{Device, cuda_error};
use crate::RuntimeError;

/// Records the buffer holds (a decode step of the 8B shape writes about 50,000).
const TRACE_CAPACITY: usize = 1 << 18;
/// 64-bit words per record (`KilnTraceRecord` in common.cuh: grid, entered, waited, exited, name, block|sm).
const RECORD_WORDS: usize = 6;

/// The device side of the trace.
pub(crate) struct LaunchTrace {
    _records: CudaSlice<u64>,
    records_at: u64,
    count_at: u64,
    /// Kernel names by the address of their name string in the module.
    names: HashMap<u64, String>,
    pub report: TraceReport,
}

/// What the trace has gathered over the decode steps, by launch.
#[derive(Default)]
pub(crate) struct TraceReport {
    /// Labels of a decode step's kernel launches, in launch order (taken while the step's graph is captured).
    pub labels: Vec<String>,
    /// Per label, in the order the labels first appear in a step, summed over the traced steps: the launch's
    /// totals, and per block index when the block passed its wait and when it exited.
    totals: Vec<(String, LaunchTotals, HashMap<u32, BlockTotals>)>,
    steps: u64,
    step_ns: f64,
    /// Steps whose records did not match the captured launches (the buffer overflowed, or the step was
    /// not the captured one), left out of the report.
    mismatched: u64,
}

impl LaunchTrace {
    /// The trace, when `KILN_CUDA_TRACE=1` is set and the module was compiled with it.
    pub fn open(device: &Device) -> Result<Option<LaunchTrace>, RuntimeError> {
        if std::env::var("KILN_CUDA_TRACE").as_deref() != Ok("1") {
            return Ok(None);
        }
        let stream = &device.stream;
        let (records_global, count_at, capacity_at) = match (
            device.module.get_global("kiln_trace_records", stream),
            device.module.get_global("kiln_trace_count", stream),
            device.module.get_global("kiln_trace_capacity", stream),
        ) {
            (Ok(r), Ok(c), Ok(cap)) => (r.device_ptr(stream).0, c.device_ptr(stream).0, cap.device_ptr(stream).0),
            _ => {
                eprintln!(
                    "kiln: KILN_CUDA_TRACE=1, but this model's kernels were compiled without the trace; compile \
                     them with KILN_CUDA_TRACE=1 set as well (running from a source model compiles them then)"
                );
                return Ok(None);
            }
        };
        let records = stream
            .alloc_zeros::<u64>(TRACE_CAPACITY * RECORD_WORDS)
            .map_err(cuda_error("allocating the launch trace"))?;
        let buffer = records.device_ptr(stream).0;
        let cu = stream.cu_stream();
        // SAFETY: the globals are a pointer and a u32 of the loaded module; the values outlive the copies,
        // which the synchronize below completes.
        unsafe {
            result::memcpy_htod_async(records_global, &[buffer], cu)
                .map_err(cuda_error("starting the launch trace"))?;
            result::memcpy_htod_async(capacity_at, &[TRACE_CAPACITY as u32], cu)
                .map_err(cuda_error("starting the launch trace"))?;
        }
        stream.synchronize().map_err(cuda_error("starting the launch trace"))?;
        Ok(Some(LaunchTrace {
            _records: records,
            records_at: buffer,
            count_at,
            names: HashMap::new(),
            report: TraceReport::default(),
        }))
    }

    /// Clears the record count before a traced step (ordered on the stream).
    pub fn clear(&self, device: &Device) -> Result<(), RuntimeError> {
        // SAFETY: the count is a u32 global of the module.
        unsafe { result::memset_d8_async(self.count_at, 0, 4, device.stream.cu_stream()) }
            .map_err(cuda_error("clearing the launch trace"))
    }

    /// Reads the records of the step just run (the caller has waited for it) and adds them to the totals.
    pub fn collect(&mut self, device: &Device) -> Result<(), RuntimeError> {
        let mut count = [0u32];
        // SAFETY: the count is a u32 global of the module.
        unsafe { device.read_back(&mut count, self.count_at, "reading the launch trace") }?;
        let n = (count[0] as usize).min(TRACE_CAPACITY);
        let mut words = vec![0u64; n * RECORD_WORDS];
        // SAFETY: the buffer holds TRACE_CAPACITY records.
        unsafe { device.read_back(&mut words, self.records_at, "reading the launch trace") }?;
        let overflowed = count[0] as usize > TRACE_CAPACITY;
        self.report.add_step(&words, overflowed, |at| kernel_name(&mut self.names, device, at));
        Ok(())
    }
}

impl TraceReport {
    /// Adds one step's records (RECORD_WORDS words each, in any order) to the totals; `name_of` gives the
    /// kernel name a record's name address points at.
    pub fn add_step(&mut self, words: &[u64], overflowed: bool, mut name_of: impl FnMut(u64) -> String) {
        let mut grids: HashMap<u64, Grid> = HashMap::new();
        for r in words.chunks_exact(RECORD_WORDS) {
            let (grid, entered, waited, exited, name) = (r[0], r[1], r[2], r[3], r[4]);
            // The last word is the block index and the multiprocessor, two u32s.
            let block = r[5] as u32;
            let g = grids.entry(grid).or_insert(Grid {
                entered: u64::MAX,
                waited: u64::MAX,
                last_waited: 0,
                exited: 0,
                name,
                records: Vec::new(),
            });
            g.entered = g.entered.min(entered);
            g.waited = g.waited.min(waited);
            g.last_waited = g.last_waited.max(waited);
            g.exited = g.exited.max(exited);
            g.records.push((block, waited, exited));
        }
        let mut grids: Vec<Grid> = grids.into_values().collect();
        // A kernel starts only once every block of the one before it has let it (or exited), and every block
        // records its entry before that: first entries follow the launch order.
        // %globaltimer ticks coarsely on some GPUs: equal entries are ordered by their first wait.
        grids.sort_by_key(|g| (g.entered, g.waited));
        // Launches after the graph (the device's choice of the token) come last and are not the step's.
        if overflowed || grids.len() < self.labels.len() || self.labels.is_empty() {
            self.mismatched += 1;
            return;
        }
        grids.truncate(self.labels.len());
        let step_end = grids.iter().map(|g| g.exited).max().unwrap_or(0);
        self.step_ns += step_end.saturating_sub(grids[0].waited) as f64;
        self.steps += 1;
        for (i, g) in grids.iter().enumerate() {
            let next_start = grids.get(i + 1).map_or(g.exited, |n| n.waited);
            let label = if self.shares_label(i) {
                format!("{} / {}", self.labels[i], name_of(g.name))
            } else {
                self.labels[i].clone()
            };
            let at = match self.totals.iter().position(|(l, _, _)| *l == label) {
                Some(at) => at,
                None => {
                    self.totals.push((label, LaunchTotals::default(), HashMap::new()));
                    self.totals.len() - 1
                }
            };
            let (_, t, blocks) = &mut self.totals[at];
            t.launches += 1.0;
            t.blocks += g.records.len() as f64;
            t.critical_ns += next_start.saturating_sub(g.waited) as f64;
            t.run_ns += g.exited.saturating_sub(g.waited) as f64;
            t.boundary_ns += next_start as f64 - g.exited as f64;
            t.lead_ns += g.waited.saturating_sub(g.entered) as f64;
            let block_ns: u64 = g.records.iter().map(|&(_, waited, exited)| exited.saturating_sub(waited)).sum();
            t.block_ns += block_ns as f64 / g.records.len().max(1) as f64;
            t.spread_ns += g.last_waited.saturating_sub(g.waited) as f64;
            // The block that set the launch's end in this step (the lowest index among equal exits).
            let last = g.records.iter().max_by_key(|&&(block, _, exited)| (exited, std::cmp::Reverse(block)));
            if let Some(&(block, waited, exited)) = last {
                let b = blocks.entry(block).or_default();
                b.last += 1.0;
                b.waited_ns += waited.saturating_sub(g.waited) as f64;
                b.exited_ns += exited.saturating_sub(g.waited) as f64;
            }
        }
    }

    /// Whether launch `i` is one of several CUDA launches of the same plan launch (an attention's split
    /// and merge kernels): their labels are then told apart by the kernel's name.
    fn shares_label(&self, i: usize) -> bool {
        (i > 0 && self.labels[i - 1] == self.labels[i]) || self.labels.get(i + 1) == Some(&self.labels[i])
    }

    /// The table printed when the executor is dropped.
    pub fn table(&self) -> String {
        let steps = self.steps.max(1) as f64;
        let step_us = self.step_ns / steps / 1e3;
        let mut out = format!(
            "kiln CUDA trace: {} decode steps in their graph ({} left out), {step_us:.1} us per step from the \
             first kernel's start to the last exit\n{:<64} {:>6} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>9}\n",
            self.steps,
            self.mismatched,
            "launch (in step order)",
            "/step",
            "us/step",
            "share",
            "run us",
            "bound us",
            "lead us",
            "block us",
            "spread us"
        );
        for (label, t, _) in &self.totals {
            let per_launch = |ns: f64| ns / t.launches.max(1.0) / 1e3;
            out.push_str(&format!(
                "{label:<64} {:>6.0} {:>9.2} {:>5.1}% {:>8.2} {:>9.2} {:>8.2} {:>8.2} {:>9.2}\n",
                t.launches / steps,
                t.critical_ns / steps / 1e3,
                100.0 * t.critical_ns / self.step_ns.max(1.0),
                per_launch(t.run_ns),
                per_launch(t.boundary_ns),
                per_launch(t.lead_ns),
                per_launch(t.block_ns),
                per_launch(t.spread_ns),
            ));
        }
        out.push_str(
            "us/step: from the launch's first block passing its wait to the next launch's (its share of the \
             step's critical path); run: first wait to last exit; bound: last exit to the next launch's first \
             wait; lead: how long its first block was resident before the wait returned; block: a block's \
             mean time from its wait to its exit; spread: from the first block's wait to the last one's.\n",
        );
        out.push_str(&format!(
            "the blocks that end each launch, by launch (the blocks most often the launch's last to exit: the \
             share of the steps they were, and their mean wait and exit in those steps, us after the launch's \
             first wait; block: the index x + gridDim.x * (y + gridDim.y * z)):\n{:<64} {}\n",
            "launch", "block: share last, waited -> exited"
        ));
        for (label, t, blocks) in self.totals.iter().filter(|(_, t, _)| t.blocks > t.launches) {
            let mut last: Vec<(u32, BlockTotals)> = blocks.iter().map(|(&i, &b)| (i, b)).collect();
            last.sort_by(|a, b| b.1.last.total_cmp(&a.1.last).then(a.0.cmp(&b.0)));
            let shown: Vec<String> = last
                .iter()
                .take(LAST_BLOCKS_SHOWN)
                .map(|(i, b)| {
                    let share = 100.0 * b.last / t.launches.max(1.0);
                    format!("{i}: {share:.0}%, {:.2} -> {:.2}", b.mean_waited(), b.mean_exited())
                })
                .collect();
            out.push_str(&format!("{label:<64} {}\n", shown.join(", ")));
        }
        out
    }
}

/// One label's sums over the traced steps (nanoseconds; the columns of [`TraceReport::table`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct LaunchTotals {
    launches: f64,
    /// Blocks, over its launches.
    blocks: f64,
    /// From the launch's first wait to the next launch's first wait.
    critical_ns: f64,
    /// From its first wait to its last exit.
    run_ns: f64,
    /// From its last exit to the next launch's first wait.
    boundary_ns: f64,
    /// From its first entry to its first wait.
    lead_ns: f64,
    /// A block's mean time from its wait to its exit.
    block_ns: f64,
    /// From its first block's wait to its last one's.
    spread_ns: f64,
}

/// The blocks the table lists per launch, the most often last to exit first.
const LAST_BLOCKS_SHOWN: usize = 4;

/// One block index's sums over the traced steps in which it was its launch's last to exit (nanoseconds
/// after the launch's first wait). Which block ends a launch changes with the step (a decode's attention
/// grid has more active splits as the context grows), so a mean over every step would mix the cases.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct BlockTotals {
    last: f64,
    waited_ns: f64,
    exited_ns: f64,
}

impl BlockTotals {
    fn mean_waited(&self) -> f64 {
        self.waited_ns / self.last.max(1.0) / 1e3
    }
    fn mean_exited(&self) -> f64 {
        self.exited_ns / self.last.max(1.0) / 1e3
    }
}

/// One grid's records: its earliest entry and wait, its last exit, and each block's (index, wait, exit).
struct Grid {
    entered: u64,
    waited: u64,
    last_waited: u64,
    exited: u64,
    name: u64,
    records: Vec<(u32, u64, u64)>,
}

/// The kernel name a record points at (read from the module once per kernel), shortened to its name.
fn kernel_name(names: &mut HashMap<u64, String>, device: &Device, at: u64) -> String {
    if let Some(n) = names.get(&at) {
        return n.clone();
    }
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 32];
    while bytes.len() < 512 {
        // SAFETY: `at` is the address of a NUL-terminated string in the module's data, read in small chunks
        // so as not to run far past its end; a failed read ends the name.
        let ok = unsafe { device.read_back(&mut chunk, at + bytes.len() as u64, "reading a kernel name") }.is_ok();
        if !ok {
            break;
        }
        match chunk.iter().position(|&b| b == 0) {
            Some(end) => {
                bytes.extend_from_slice(&chunk[..end]);
                break;
            }
            None => bytes.extend_from_slice(&chunk),
        }
    }
    let full = String::from_utf8_lossy(&bytes).into_owned();
    // "void kiln_attention_combine_xbf16(AttentionArgs)" -> "kiln_attention_combine_xbf16"; in a kernel whose
    // body is a device function, that function's name ("attention_split<X, DR, WARPS>").
    let short = full.split('(').next().unwrap_or(&full).trim().trim_start_matches("void ").to_string();
    names.insert(at, short.clone());
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record of block 0: grid, entered, waited, exited, name address, block|sm.
    fn record(grid: u64, entered: u64, waited: u64, exited: u64, name: u64) -> [u64; RECORD_WORDS] {
        [grid, entered, waited, exited, name, 0]
    }

    /// The same record of block `block`, on multiprocessor 7.
    fn of_block(mut r: [u64; RECORD_WORDS], block: u32) -> [u64; RECORD_WORDS] {
        r[5] = u64::from(block) | (7 << 32);
        r
    }

    fn step(records: &[[u64; RECORD_WORDS]]) -> Vec<u64> {
        records.iter().flatten().copied().collect()
    }

    #[test]
    fn a_step_is_cut_into_each_launch_s_share_of_the_critical_path() {
        let mut report = TraceReport {
            labels: vec!["norm".into(), "attention".into(), "attention".into(), "linear".into()],
            ..TraceReport::default()
        };
        // Grid ids are not in launch order, and records come in any order: entries order the grids. The
        // attention's two launches (split and merge) are told apart by their kernel names.
        let words = step(&[
            record(70, 3_000, 9_000, 14_000, 2), // merge, block 0 (resident early, waits for the split)
            record(9, 0, 1_000, 2_000, 1),       // norm
            record(40, 1_500, 2_500, 8_000, 3),  // split, block 0
            of_block(record(40, 1_800, 3_500, 8_500, 3), 1), // split, block 1: the last exit and the last wait
            of_block(record(70, 3_200, 9_200, 13_000, 2), 1), // merge, block 1
            record(12, 13_500, 15_000, 20_000, 4), // linear
            record(99, 20_500, 20_600, 21_000, 5), // after the graph (the token's choice): not the step's
        ]);
        let names = |at: u64| match at {
            2 => "merge".to_string(),
            3 => "split".to_string(),
            _ => panic!("only launches sharing a label are named"),
        };
        report.add_step(&words, false, names);
        assert_eq!((report.steps, report.mismatched), (1, 0));
        // First wait (1 us) to the last exit of the step's last launch (20 us).
        assert_eq!(report.step_ns, 19_000.0);
        let totals = |label: &str| report.totals.iter().find(|(l, _, _)| l == label).expect("reported").1;
        // critical path: its first wait (2.5 us) to the merge's (9 us); run: to its last exit (8.5 us);
        // boundary: its last exit to the merge's first wait; lead: first entry to first wait; block: the
        // mean of 5.5 and 5 us; spread: first to last wait.
        assert_eq!(
            totals("attention / split"),
            LaunchTotals {
                launches: 1.0,
                blocks: 2.0,
                critical_ns: 6_500.0,
                run_ns: 6_000.0,
                boundary_ns: 500.0,
                lead_ns: 1_000.0,
                block_ns: 5_250.0,
                spread_ns: 1_000.0
            }
        );
        assert_eq!(totals("attention / merge").critical_ns, 6_000.0);
        assert_eq!(totals("norm").critical_ns, 1_500.0);
        // The last launch's share ends at its own last exit.
        assert_eq!(totals("linear").critical_ns, 5_000.0);
        let table = report.table();
        let order: Vec<usize> = ["norm", "attention / split", "attention / merge", "linear"]
            .iter()
            .map(|l| table.find(l).expect("every launch is reported"))
            .collect();
        assert!(order.is_sorted(), "the table follows the step's order:\n{table}");
        // The block that ended each launch, with its wait and exit after the launch's first wait: the split's
        // block 1 (it waited 1 us after block 0 and exited 0.5 us after it), the merge's block 0. Launches
        // of one block are not listed.
        assert!(
            last_blocks(&table, "attention / split").is_some_and(|l| l.ends_with("1: 100%, 1.00 -> 6.00")),
            "{table}"
        );
        assert!(
            last_blocks(&table, "attention / merge").is_some_and(|l| l.ends_with("0: 100%, 0.00 -> 5.00")),
            "{table}"
        );
        assert!(last_blocks(&table, "norm").is_none() && last_blocks(&table, "linear").is_none(), "{table}");

        // A second step in which the split's block 0 ends the launch: each block ended half the steps, and
        // each one's times are those of its own step, not means over both.
        report.add_step(
            &step(&[
                record(9, 0, 1_000, 2_000, 1),
                record(40, 1_500, 2_500, 9_000, 3),
                of_block(record(40, 1_800, 2_600, 7_000, 3), 1),
                record(70, 9_200, 9_300, 10_000, 2),
                of_block(record(70, 9_200, 9_300, 10_000, 2), 1),
                record(12, 10_500, 11_000, 12_000, 4),
            ]),
            false,
            names,
        );
        let table = report.table();
        assert!(
            last_blocks(&table, "attention / split")
                .is_some_and(|l| l.ends_with("0: 50%, 0.00 -> 6.50, 1: 50%, 1.00 -> 6.00")),
            "{table}"
        );
        // Equal exits: the lower index ended it.
        assert!(
            last_blocks(&table, "attention / merge").is_some_and(|l| l.ends_with("0: 100%, 0.00 -> 2.85")),
            "{table}"
        );
    }

    /// The line of the table's last-blocks listing for `label`.
    fn last_blocks<'a>(table: &'a str, label: &str) -> Option<&'a str> {
        table
            .lines()
            .skip_while(|l| !l.starts_with("the blocks that end"))
            .find(|l| l.starts_with(label))
            .map(str::trim_end)
    }

    #[test]
    fn steps_that_do_not_match_the_captured_launches_are_left_out() {
        let mut report = TraceReport { labels: vec!["a".into(), "b".into()], ..TraceReport::default() };
        let one_grid = step(&[record(1, 0, 10, 20, 0)]);
        report.add_step(&one_grid, false, |_| unreachable!());
        let two_grids = step(&[record(1, 0, 10, 20, 0), record(2, 15, 25, 30, 0)]);
        report.add_step(&two_grids, true, |_| unreachable!());
        assert_eq!((report.steps, report.mismatched), (0, 2));
        report.add_step(&two_grids, false, |_| unreachable!());
        assert_eq!((report.steps, report.mismatched), (1, 2));
        assert!(report.table().contains("1 decode steps in their graph (2 left out)"));
    }
}
