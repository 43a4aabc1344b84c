//! Aya's forecasts in the forecast bench's protocol, for
//! `shared/tools/forecast-bench/fcbench.py score` to put next to
//! statsforecast's: for every task of `PREP/tasks.csv` (series, origin, h)
//! the forecast of steps 1..h made from the rows `[0, origin)` of
//! `PREP/series/<series>.csv` only. At each origin Aya does what `aya train`
//! does on that history: detect the seasons, select and fit by rolling-origin
//! backtest, forecast the longest horizon once (the shorter ones are its first
//! steps). Each origin's wall time, selection included, is written in the
//! bench's timings format.
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use aya_forecaster::models::{Forecast, ModelSpec};
use aya_forecaster::seasonality;
use aya_forecaster::select::{FittedAuto, SelectConfig, default_candidates};
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

/// One prepared series: its grid step and the tasks' origins and horizons.
struct Job {
    name: String,
    step_s: i64,
    y: Vec<f64>,
    tasks: BTreeMap<usize, Vec<usize>>,
}

/// Reads a CSV with a header into rows of named fields.
fn read_table(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("{}: empty file", path.display()))?
        .split(',')
        .collect();
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let cells: Vec<&str> = l.split(',').collect();
            if cells.len() != header.len() {
                bail!(
                    "{} line {}: {} fields, the header has {}",
                    path.display(),
                    i + 2,
                    cells.len(),
                    header.len()
                );
            }
            Ok(header
                .iter()
                .zip(cells)
                .map(|(h, c)| (h.to_string(), c.to_string()))
                .collect())
        })
        .collect()
}

fn field<'a>(
    row: &'a BTreeMap<String, String>,
    name: &str,
    path: &Path,
) -> anyhow::Result<&'a str> {
    row.get(name)
        .map(String::as_str)
        .with_context(|| format!("{}: no column {name:?}", path.display()))
}

fn load_jobs(args: &Args) -> anyhow::Result<Vec<Job>> {
    let meta_path = args.prep.join("meta.csv");
    let tasks_path = args.prep.join("tasks.csv");
    let mut tasks: BTreeMap<String, BTreeMap<usize, Vec<usize>>> = BTreeMap::new();
    for row in read_table(&tasks_path)? {
        let series = field(&row, "series", &tasks_path)?.to_string();
        let origin: usize = field(&row, "origin", &tasks_path)?.parse()?;
        let h: usize = field(&row, "h", &tasks_path)?.parse()?;
        tasks
            .entry(series)
            .or_default()
            .entry(origin)
            .or_default()
            .push(h);
    }
    let mut jobs = Vec::new();
    for row in read_table(&meta_path)? {
        let name = field(&row, "series", &meta_path)?.to_string();
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let step_s: i64 = field(&row, "step_s", &meta_path)?.parse()?;
        let path = args.prep.join("series").join(format!("{name}.csv"));
        let y = read_table(&path)?
            .iter()
            .map(|r| {
                field(r, "value", &path)?
                    .parse::<f64>()
                    .with_context(|| format!("{}: value", path.display()))
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        let tasks = tasks.remove(&name).unwrap_or_default();
        jobs.push(Job {
            name,
            step_s,
            y,
            tasks,
        });
    }
    Ok(jobs)
}

/// What one series gives: prediction rows, timing rows, milliseconds per
/// origin and the last origin's selection.
type SeriesOutput = (String, String, Vec<f64>, String);

/// Forecasts every origin of one series.
fn run(job: &Job, args: &Args) -> anyhow::Result<SeriesOutput> {
    let mut preds = String::new();
    let mut times = String::new();
    let mut ms = Vec::new();
    let mut f = Forecast::default();
    let mut choice = String::new();
    for (&o, hs) in &job.tasks {
        let max_h = hs.iter().copied().max().unwrap_or(1);
        let train = job
            .y
            .get(..o)
            .with_context(|| format!("{}: origin {o} beyond the series", job.name))?;
        let t0 = Instant::now();
        let seas = seasonality::detect(train, job.step_s);
        let mut cfg = SelectConfig::default();
        if let Some(k) = args.ensemble {
            cfg.ensemble = k;
        }
        if !args.candidates.is_empty() {
            let keep: Vec<ModelSpec> = default_candidates(&seas, train.len().min(cfg.max_train))
                .into_iter()
                .filter(|c| args.candidates.iter().any(|n| *n == c.name()))
                .collect();
            if keep.is_empty() {
                bail!(
                    "{} origin {o}: none of {:?} is a default candidate",
                    job.name,
                    args.candidates
                );
            }
            cfg.candidates = Some(keep);
        }
        let model = FittedAuto::select_and_fit(train, &seas, max_h, &cfg)
            .with_context(|| format!("{} origin {o}", job.name))?;
        model.predict_into(max_h, None, &mut f)?;
        choice = model.selection().describe();
        let dt = t0.elapsed().as_secs_f64();
        ms.push(dt * 1000.0);
        writeln!(times, "{},Aya,{o},{o},{dt:.6},{dt:.6}", job.name)?;
        for &h in hs {
            for (s, v) in f.point.iter().take(h).enumerate() {
                writeln!(preds, "{},{o},{h},{},{v}", job.name, s + 1)?;
            }
        }
    }
    Ok((preds, times, ms, choice))
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let jobs = load_jobs(&args)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()?;
    let started = Instant::now();
    let results: Vec<anyhow::Result<SeriesOutput>> =
        pool.install(|| jobs.par_iter().map(|j| run(j, &args)).collect());
    let mut preds = String::from("series,origin,h,step,y_hat\n");
    let mut times = String::from("series,model,origin,train_len,seconds,cpu_seconds\n");
    for (job, r) in jobs.iter().zip(results) {
        let (p, t, ms, choice) = r?;
        preds.push_str(&p);
        times.push_str(&t);
        let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        let max = ms.iter().copied().fold(0.0, f64::max);
        eprintln!(
            "{:40} {:6} points, {:2} origins, {mean:6.1} ms mean / {max:6.1} ms max per origin; last: {choice}",
            job.name,
            job.y.len(),
            ms.len()
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
