//! Progress display for long work (import, passes, writing an artifact, long generations): `indicatif`
//! spinners and bars on stderr when a person is watching, nothing otherwise.
//!
//! The library reports progress through [`Progress`]; the CLI decides whether it is drawn (stderr is a
//! terminal and `--json` was not given). Hidden bars cost nothing, so library code reports
//! unconditionally.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes: drawn on stderr, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Progress that is never drawn (library use, pipes, `--json`).
    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    /// Progress drawn on stderr when it is a terminal and `quiet` is false.
    pub fn on_terminal(quiet: bool) -> Progress {
        use std::io::IsTerminal;
        Progress { visible: !quiet && std::io::stderr().is_terminal() }
    }

    pub fn is_visible(&self) -> bool {
        self.visible
    }

    /// A spinner for work of unknown length; clear it with `finish_and_clear` when done.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner().with_message(message.into());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// A bar over `total` bytes.
    pub fn bytes_bar(&self, total: u64, message: impl Into<String>) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total).with_message(message.into());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    }

    /// A bar over `total` items (tokens, passes).
    pub fn count_bar(&self, total: u64, message: impl Into<String>) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total).with_message(message.into());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    }
}
