//! `aya datasets synth|fetch|check`.
//!
//! * `synth` writes Aya's built-in synthetic data (see [`aya_forecaster::synth`]);
//! * `fetch` runs `datasets/fetch.sh`, which downloads the public traces from their
//!   original homes with curl (needs internet, so it is not exercised by the tests);
//! * `check` loads every CSV under a directory with the data layer and prints what it
//!   found, so a user can see at once whether their exports are usable.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow};

use aya_forecaster::data::catalog::{check_file, convert_worldcup98, csv_files};
use aya_forecaster::data::{DataError, datasets_dir, format_interval, format_rfc3339};
use aya_forecaster::synth::{self, SynthConfig};

use super::{CheckArgs, DatasetsArgs, DatasetsCommand, FetchArgs, SynthArgs};
use crate::failure::{CliResult, Failure};

/// Run `aya datasets ...`.
pub fn run_datasets(args: &DatasetsArgs) -> CliResult {
    match &args.command {
        DatasetsCommand::Synth(a) => run_synth(a),
        DatasetsCommand::Fetch(a) => run_fetch(a),
        DatasetsCommand::Check(a) => run_check(a),
    }
}

/// Map a data-layer error to the right exit code.
pub fn data_failure(e: DataError) -> Failure {
    if e.is_usage() {
        Failure::usage(e)
    } else if e.is_io() {
        Failure::runtime(e)
    } else {
        Failure::input(e)
    }
}

fn run_synth(a: &SynthArgs) -> CliResult {
    let cfg = SynthConfig {
        seed: a.seed,
        days: a.days,
        interval_secs: a.interval,
        base_rps: a.base_rps,
        split: a.split.into(),
        ..SynthConfig::default()
    };
    let data = synth::generate(&cfg).map_err(Failure::usage)?;
    let files = data.write(&a.output).map_err(data_failure)?;
    let steps = data.timestamps.len();
    println!(
        "synthetic data, seed {}: {} days at {} s from {} ({} steps), {} backends, {} bursts",
        cfg.seed,
        cfg.days,
        cfg.interval_secs,
        format_rfc3339(cfg.start_ms),
        steps,
        data.backends.len(),
        data.bursts.len()
    );
    for f in &files {
        let rows = match f.extension().and_then(|e| e.to_str()) {
            Some("csv") if f.ends_with("traffic.csv") => format!("{steps} rows"),
            Some("csv") => format!(
                "{} rows",
                steps * data.backends.len() * synth::METRICS.len()
            ),
            _ => "metadata".to_string(),
        };
        println!("  wrote {} ({rows})", f.display());
    }
    Ok(())
}

/// `datasets/fetch.sh` of the workspace this binary was built from, else relative to
/// the current directory.
fn fetch_script() -> Option<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/fetch.sh");
    [built, PathBuf::from("datasets/fetch.sh")]
        .into_iter()
        .find(|p| p.is_file())
}

fn run_fetch(a: &FetchArgs) -> CliResult {
    let script = fetch_script().ok_or_else(|| {
        Failure::runtime(anyhow!(
            "datasets/fetch.sh not found (run from the repository root); it downloads NAB from \
             github.com/numenta/NAB, the Azure LLM traces from github.com/Azure/AzurePublicDataset \
             and WorldCup98 from github.com/nimamahmoudi/worldcup98-dataset"
        ))
    })?;
    let status = Command::new("bash")
        .arg(&script)
        .arg(&a.output)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        return Err(Failure::runtime(anyhow!(
            "{} failed ({status})",
            script.display()
        )));
    }
    let raw = a.output.join("worldcup98/invocation_count.csv");
    if raw.is_file() {
        let dst = a
            .output
            .join("worldcup98/worldcup98_requests_per_minute.csv");
        let s = convert_worldcup98(&raw, &dst).map_err(data_failure)?;
        println!(
            "converted    worldcup98/worldcup98_requests_per_minute.csv: {} minutes, {} requests",
            s.len(),
            s.values.iter().sum::<f64>()
        );
        std::fs::remove_file(&raw).with_context(|| format!("cannot remove {}", raw.display()))?;
    }
    Ok(())
}

fn run_check(a: &CheckArgs) -> CliResult {
    let dir = a.dir.clone().unwrap_or_else(datasets_dir);
    if !dir.is_dir() {
        return Err(Failure::usage(anyhow!(
            "{} is not a directory (give one, or set AYA_DATASETS)",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    csv_files(&dir, &mut files).with_context(|| format!("cannot list {}", dir.display()))?;
    if files.is_empty() {
        return Err(Failure::input(anyhow!(
            "no .csv file under {}",
            dir.display()
        )));
    }
    println!(
        "{:<58} {:>8} {:>9} {:>6} {:>8} {:>6} {:>6}  span",
        "file / series", "rows", "interval", "gaps", "missing", "dups", "order"
    );
    let mut failed = 0usize;
    for f in &files {
        let rel = f.strip_prefix(&dir).unwrap_or(f).display().to_string();
        match check_file(f) {
            Ok(series) => {
                let stem = f
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                for s in series {
                    let label =
                        format!("{rel}{}", s.name.strip_prefix(stem.as_str()).unwrap_or(""));
                    let r = &s.report;
                    let interval = if r.regular {
                        format_interval(r.detected_interval_ms)
                    } else {
                        format!("~{}", format_interval(r.detected_interval_ms))
                    };
                    println!(
                        "{:<58} {:>8} {:>9} {:>6} {:>8} {:>6} {:>6}  {} -> {}",
                        label,
                        r.rows,
                        interval,
                        r.gaps.len(),
                        r.missing_points,
                        r.duplicates,
                        r.out_of_order,
                        format_rfc3339(r.first_ms),
                        format_rfc3339(r.last_ms)
                    );
                }
            }
            Err(e) => {
                failed += 1;
                println!("{rel:<58} ERROR: {e}");
            }
        }
    }
    println!(
        "{} file(s) checked, {failed} failed. Interval `~` = irregular (median step; per-request traces).",
        files.len()
    );
    if failed > 0 {
        return Err(Failure::input(anyhow!(
            "{failed} of {} file(s) could not be loaded",
            files.len()
        )));
    }
    Ok(())
}
