//! `aya anomalies --input CSV` (or `--prometheus URL --query PROMQL`): score
//! every point of a series with the streaming anomaly detector
//! (`aya_forecaster::anomaly`), in order, each point once, with no
//! look-ahead: the same scores `aya serve` would give it live.

use std::io::Write as _;
use std::path::PathBuf;

use aya_forecaster::anomaly::{DetectorConfig, detect_series};
use aya_forecaster::data::format_rfc3339;
use clap::Args;

use crate::failure::{CliResult, Failure};
use crate::forecaster::SeriesArgs;

/// `aya anomalies`.
#[derive(Debug, Args)]
pub struct AnomaliesArgs {
    /// How to read the series.
    #[command(flatten)]
    pub source: SeriesArgs,
    /// Print only points whose score is at least this (0 to 1; 0.5 is an anomaly
    /// likelihood of 1 - 1e-5). Default: every point.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Write the CSV here instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// Run `aya anomalies`: `timestamp,value,score,likelihood,reason` per point.
pub fn run_anomalies(args: &AnomaliesArgs) -> CliResult {
    if let Some(t) = args.threshold
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Failure::usage(anyhow::anyhow!(
            "--threshold must be between 0 and 1, got {t}"
        )));
    }
    let series = args.source.load()?;
    let scores = detect_series(
        &DetectorConfig::default(),
        &series.timestamps,
        &series.values,
    );
    let mut text = String::from("timestamp,value,score,likelihood,reason\n");
    for ((t, v), s) in series.timestamps.iter().zip(&series.values).zip(&scores) {
        if args.threshold.is_some_and(|th| s.value < th) {
            continue;
        }
        text.push_str(&format!(
            "{},{v},{:.6},{:.6},{:?}\n",
            format_rfc3339(*t),
            s.value,
            s.likelihood,
            s.reason
        ));
    }
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot write {}: {e}", path.display()))),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| Failure::runtime(anyhow::anyhow!("stdout: {e}")))
        }
    }
}
