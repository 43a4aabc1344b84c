//! # The broad generated scenario suite (issue 11)
//!
//! [`generate`] builds ≥ 80 balancing and ≥ 30 autoscaling scenarios,
//! deterministically from a suite seed, as TOML text parsed by the
//! simulator's own [`crate::scenario::Scenario::parse`]; each carries a
//! `tune`/`test` [`Split`] fixed by a hash of its id, stratified by family.
//! [`run::run_suite`] replays Aya and the baselines on them and checks the
//! issue's acceptance; [`report`] writes markdown and HTML with inline SVG.
//!
//! Entry point for a CLI: [`run_and_report`].

/// Return early with a [`SuiteError`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::suite::SuiteError(format!($($arg)*)))
    };
}

/// A [`SuiteError`] built like `format!`.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::suite::SuiteError(format!($($arg)*))
    };
}

pub mod generate;
pub mod report;
pub mod run;

use std::path::Path;

pub use generate::{Kind, Split, SuiteConfig, SuiteForecaster, SuiteScenario, generate};
pub use run::{AutoRow, BalRow, SuiteResult, Summary, run_suite};

/// An error generating, running or reporting the suite; the message names
/// the scenario, file or policy it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SuiteError(pub String);

/// The suite's result type.
pub type Result<T> = std::result::Result<T, SuiteError>;

/// Adds what was being done to an error, as `what: error`.
pub trait Context<T> {
    /// Wrap the error with the message `f` returns.
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| SuiteError(format!("{}: {e}", f())))
    }
}

/// Generate, run and write the report (`suite.md`, `suite.html`,
/// `suite.json`) into `out`; returns the result.
pub fn run_and_report(cfg: &SuiteConfig, out: &Path) -> Result<SuiteResult> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let scenarios = generate(cfg, &out.join("data"))?;
    // Every scenario is a valid `aya sim` file: keep them beside the report
    // so a row of the table can be replayed (and its decisions read) alone.
    let dir = out.join("scenarios");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for s in &scenarios {
        let path = dir.join(format!("{}.toml", s.id));
        std::fs::write(&path, &s.toml).with_context(|| format!("writing {}", path.display()))?;
    }
    let t0 = std::time::Instant::now();
    let mut res = run_suite(&scenarios)?;
    res.wall_seconds = t0.elapsed().as_secs_f64();
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("suite.md", report::markdown(&res))?;
    write("suite.html", report::html(&res))?;
    let json = serde_json::to_string_pretty(&res).with_context(|| "suite.json".to_string())?;
    write("suite.json", json)?;
    Ok(res)
}
