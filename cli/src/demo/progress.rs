//! Progress display on stderr (indicatif). Bars draw only on a terminal; when
//! stderr is not one (CI, tests, pipes) each stage prints one plain line
//! instead, so logs stay readable and stdout carries only the scoreboard.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::train::Steps;

/// Stage reporting for one demo run.
#[derive(Debug, Clone)]
pub struct Progress {
    enabled: bool,
    interactive: bool,
    started: Instant,
}

impl Progress {
    /// `enabled = false` prints nothing at all.
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            interactive: enabled && std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// Announce a stage (`[2/6] training ...`).
    pub fn stage(&self, n: usize, total: usize, what: &str) {
        if self.enabled {
            eprintln!(
                "[{n}/{total}] {what}  (t+{:.1} s)",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// A plain note under the current stage.
    pub fn note(&self, what: &str) {
        if self.enabled {
            eprintln!("      {what}");
        }
    }

    /// A bar of `len` units (hidden unless stderr is a terminal).
    pub fn bar(&self, len: u64, label: &str) -> Bar {
        let pb = if self.interactive {
            let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "      {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            pb.set_style(style);
            pb.set_prefix(label.to_string());
            pb.enable_steady_tick(Duration::from_millis(200));
            pb
        } else {
            ProgressBar::hidden()
        };
        Bar { pb }
    }

    /// Seconds since the demo started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// One progress bar.
#[derive(Debug, Clone)]
pub struct Bar {
    pb: ProgressBar,
}

impl Bar {
    /// One unit done.
    pub fn inc(&self, msg: &str) {
        self.pb.set_message(msg.to_string());
        self.pb.inc(1);
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

impl Steps for Bar {
    fn start(&self, total: u64) {
        self.pb.set_length(total);
    }
    fn step(&self, msg: &str) {
        self.inc(msg);
    }
}
