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

pub mod generate;
pub mod report;
pub mod run;

use std::path::Path;

pub use generate::{Kind, Split, SuiteConfig, SuiteScenario, generate};
pub use run::{AutoRow, BalRow, SuiteResult, Summary, run_suite};

/// Generate, run and write the report (`suite.md`, `suite.html`,
/// `suite.json`) into `out`; returns the result.
pub fn run_and_report(cfg: &SuiteConfig, out: &Path) -> anyhow::Result<SuiteResult> {
    std::fs::create_dir_all(out)?;
    let scenarios = generate(cfg, &out.join("data"))?;
    let t0 = std::time::Instant::now();
    let mut res = run_suite(&scenarios)?;
    res.wall_seconds = t0.elapsed().as_secs_f64();
    std::fs::write(out.join("suite.md"), report::markdown(&res))?;
    std::fs::write(out.join("suite.html"), report::html(&res))?;
    std::fs::write(out.join("suite.json"), serde_json::to_string_pretty(&res)?)?;
    Ok(res)
}
