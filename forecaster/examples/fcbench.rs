//! Aya's forecasts in the forecast bench's protocol
//! ([`aya_forecaster::fcbench`]), for `shared/tools/forecast-bench/fcbench.py
//! score` to put next to statsforecast's. Each origin's wall time, selection
//! included, is written in the bench's timings format.
//!
//! ```text
//! fcbench.py prepare --data-dir ../shared/datasets --manifest forecaster/bench/day_ahead/test.csv --out /tmp/prep_test
//! cargo run --release -p aya-forecaster --example fcbench -- --prep /tmp/prep_test \
//!     --out /tmp/aya_test.csv --timings /tmp/aya_test_timings.csv [--threads 1]
//! fcbench.py score --prep /tmp/prep_test --pred Aya=/tmp/aya_test.csv ... --timings /tmp/aya_test_timings.csv
//! ```
//!
//! `--threads 1` (the default) gives per-origin timings of one core; more
//! threads run series in parallel (faster, noisier timings). `--series a,b`
//! keeps the series whose name contains one of the parts.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use aya_forecaster::fcbench::{
    PREDICTIONS_HEADER, SeriesForecasts, TIMINGS_HEADER, forecast_series, load_prep,
};
use aya_forecaster::select::SelectConfig;
use rayon::prelude::*;

struct Args {
    prep: PathBuf,
    out: PathBuf,
    timings: Option<PathBuf>,
    threads: usize,
    only: Vec<String>,
    /// Restricts the default candidates to these names (experiments).
    candidates: Vec<String>,
    /// Largest ensemble (`None`: the selection's default).
    ensemble: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut prep = None;
    let mut out = None;
    let mut timings = None;
    let mut threads = 1usize;
    let mut only = Vec::new();
    let mut candidates = Vec::new();
    let mut ensemble = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--prep" => prep = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--timings" => timings = Some(PathBuf::from(value()?)),
            "--threads" => {
                threads = value()?
                    .parse()
                    .ok()
                    .filter(|&k: &usize| k > 0)
                    .context("--threads needs a positive integer")?
            }
            "--series" | "--only" => only.extend(
                value()?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            ),
            "--candidates" => candidates.extend(
                value()?
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            ),
            "--ensemble" => {
                ensemble = Some(
                    value()?
                        .parse()
                        .ok()
                        .filter(|&k: &usize| k > 0)
                        .context("--ensemble needs a positive integer")?,
                )
            }
            other => bail!(
                "unknown argument {other:?} (use --prep DIR --out FILE [--timings FILE] [--threads N] [--series A,B])"
            ),
        }
    }
    Ok(Args {
        prep: prep.context("--prep DIR is required (made by fcbench.py prepare)")?,
        out: out.context("--out FILE is required")?,
        timings,
        threads,
        only,
        candidates,
        ensemble,
    })
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let jobs = load_prep(&args.prep, &args.only)?;
    let mut cfg = SelectConfig::default();
    if let Some(k) = args.ensemble {
        cfg.ensemble = k;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let started = Instant::now();
    let results: Vec<Result<SeriesForecasts, _>> = pool.install(|| {
        jobs.par_iter()
            .map(|j| forecast_series(j, &cfg, &args.candidates))
            .collect()
    });
    let mut preds = format!("{PREDICTIONS_HEADER}\n");
    let mut times = format!("{TIMINGS_HEADER}\n");
    for (job, r) in jobs.iter().zip(results) {
        let f = r?;
        preds.push_str(&f.predictions);
        times.push_str(&f.timings);
        let mean = f.ms.iter().sum::<f64>() / f.ms.len().max(1) as f64;
        let max = f.ms.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "{:40} {:6} points, {:2} origins, {mean:6.1} ms mean / {max:6.1} ms max per origin; last: {}",
            job.name,
            job.values.len(),
            f.ms.len(),
            f.last_choice
        );
    }
    std::fs::write(&args.out, preds).with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(t) = &args.timings {
        std::fs::write(t, times).with_context(|| format!("writing {}", t.display()))?;
    }
    eprintln!(
        "{} series in {:.1} s ({} threads)",
        jobs.len(),
        started.elapsed().as_secs_f64(),
        args.threads
    );
    Ok(())
}
