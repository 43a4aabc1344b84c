//! `aya train`, `aya forecast` and `aya backtest` on every shared dataset (issue 3,
//! "Done when"): for each CSV under `$AYA_DATASETS` (default `../shared/datasets`),
//! the three commands run through the same `run_*` entry points the `aya` binary
//! calls, with arguments parsed by clap exactly as the binary parses them:
//!
//! ```text
//! aya train    --input F [FORM] --output model.json [--no-backtest]
//! aya forecast --input F [FORM] --model model.json --horizon 48 --output out.csv
//! aya backtest --input F [FORM] --horizons 1,12 --origins 2
//! ```
//!
//! `FORM` is empty for the regular NAB and WorldCup98 series (`--allow-negative` for the
//! one signed NAB series). The Azure LLM traces
//! have one row per request; they are forecast as requests per minute
//! (`--column ContextTokens --keep-duplicates --resample 60 --aggregate count`)
//! and as context tokens per minute (`--aggregate sum`).
//!
//! The regular series are trained with `--no-backtest`, the per-request traces
//! with `aya train`'s defaults. The artifact's own backtest is `backtest::run` of
//! the automatic method (5 origins, h = 1, 12 and one day), the same code that
//! scores `aya_auto` in the `aya backtest` step right after; on every long series
//! it would double the test's time in a debug build (about 40 s instead of 22 s on
//! two cores, WorldCup98's one-day horizon alone about 15 s). The traces, which
//! are too short for a one-day backtest, check that the artifact still records
//! one at the horizons they can hold.
//!
//! The backtest is called through [`backtest`], which is
//! [`aya_cli::forecaster::run_backtest`] without the final `print!`, so that its
//! scores and the printed text can be checked.
//!
//! Checked for every file: the artifact loads and records the input's grid (and,
//! for the traces, its own backtest with finite MASE); the
//! forecast CSV has the contract header, exactly `HORIZON` rows, finite
//! non-negative values with `lower ≤ yhat ≤ upper`, and timestamps that continue the
//! input's interval after its last timestamp; the backtest scores every model at
//! both horizons with finite MASE and prints a row for each. For the traces, the
//! default `--horizons 1,12,season` also runs (one day does not fit in an hour of
//! data, so it scores 1 and 12).
//!
//! As in `tests/datasets.rs`, a missing datasets directory prints a note and the
//! test returns (a fresh clone without `../shared`); a directory that exists but
//! lacks one of the files below, or holds a CSV not listed, fails the test.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aya_cli::forecaster::{
    BacktestArgs, ForecastArgs, TrainArgs, backtest, run_forecast, run_train,
};
use aya_forecaster::artifact::Artifact;
use aya_forecaster::data::catalog::csv_files;
use aya_forecaster::data::{datasets_dir, parse_timestamp};
use clap::{Args, FromArgMatches};

/// Steps forecast from each saved model.
const HORIZON: usize = 48;

/// Files run as `timestamp,value`, with their nominal interval in seconds (from the
/// dataset READMEs).
const REGULAR: &[(&str, i64)] = &[
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv", 300),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv", 300),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv", 300),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv", 300),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv", 300),
    ("nab/realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv", 300),
    ("nab/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv", 300),
    ("nab/realAWSCloudwatch/ec2_disk_write_bytes_c0d644.csv", 300),
    ("nab/realAWSCloudwatch/ec2_network_in_257a54.csv", 300),
    ("nab/realAWSCloudwatch/ec2_network_in_5abac7.csv", 300),
    ("nab/realAWSCloudwatch/elb_request_count_8c0756.csv", 300),
    ("nab/realAWSCloudwatch/grok_asg_anomaly.csv", 300),
    (
        "nab/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
        300,
    ),
    ("nab/realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv", 300),
    ("nab/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv", 300),
    (
        "nab/realKnownCause/cpu_utilization_asg_misconfiguration.csv",
        300,
    ),
    (
        "nab/realKnownCause/ec2_request_latency_system_failure.csv",
        300,
    ),
    ("nab/realKnownCause/nyc_taxi.csv", 1800),
    ("nab/realTweets/Twitter_volume_AAPL.csv", 300),
    ("nab/realTweets/Twitter_volume_AMZN.csv", 300),
    ("nab/realTweets/Twitter_volume_CRM.csv", 300),
    ("nab/realTweets/Twitter_volume_CVS.csv", 300),
    ("nab/realTweets/Twitter_volume_FB.csv", 300),
    ("nab/realTweets/Twitter_volume_GOOG.csv", 300),
    ("nab/realTweets/Twitter_volume_IBM.csv", 300),
    ("nab/realTweets/Twitter_volume_KO.csv", 300),
    ("nab/realTweets/Twitter_volume_PFE.csv", 300),
    ("nab/realTweets/Twitter_volume_UPS.csv", 300),
    ("nab/artificialNoAnomaly/art_daily_no_noise.csv", 300),
    (
        "nab/artificialNoAnomaly/art_daily_perfect_square_wave.csv",
        300,
    ),
    ("nab/artificialNoAnomaly/art_daily_small_noise.csv", 300),
    ("nab/artificialNoAnomaly/art_flatline.csv", 300),
    ("nab/artificialNoAnomaly/art_noisy.csv", 300),
    ("nab/artificialWithAnomaly/art_daily_flatmiddle.csv", 300),
    ("nab/artificialWithAnomaly/art_daily_jumpsdown.csv", 300),
    ("nab/artificialWithAnomaly/art_daily_jumpsup.csv", 300),
    ("nab/artificialWithAnomaly/art_daily_nojump.csv", 300),
    (
        "nab/artificialWithAnomaly/art_increase_spike_density.csv",
        300,
    ),
    (
        "nab/artificialWithAnomaly/art_load_balancer_spikes.csv",
        300,
    ),
    ("nab/realAdExchange/exchange-2_cpc_results.csv", 3600),
    ("nab/realAdExchange/exchange-2_cpm_results.csv", 3600),
    ("nab/realAdExchange/exchange-3_cpc_results.csv", 3600),
    ("nab/realAdExchange/exchange-3_cpm_results.csv", 3600),
    ("nab/realAdExchange/exchange-4_cpc_results.csv", 3600),
    ("nab/realAdExchange/exchange-4_cpm_results.csv", 3600),
    (
        "nab/realKnownCause/ambient_temperature_system_failure.csv",
        3600,
    ),
    (
        "nab/realKnownCause/machine_temperature_system_failure.csv",
        300,
    ),
    ("nab/realKnownCause/rogue_agent_key_hold.csv", 300),
    ("nab/realKnownCause/rogue_agent_key_updown.csv", 300),
    ("nab/realTraffic/TravelTime_387.csv", 600),
    ("nab/realTraffic/TravelTime_451.csv", 600),
    ("nab/realTraffic/occupancy_6005.csv", 300),
    ("nab/realTraffic/occupancy_t4013.csv", 300),
    ("nab/realTraffic/speed_6005.csv", 300),
    ("nab/realTraffic/speed_7578.csv", 300),
    ("nab/realTraffic/speed_t4013.csv", 300),
    ("worldcup98/worldcup98_requests_per_minute.csv", 60),
];

/// Signed series (NAB's artificial "flat middle" dips below zero): run with
/// `--allow-negative`, and their forecasts may be negative.
const SIGNED: &[&str] = &["nab/artificialWithAnomaly/art_daily_flatmiddle.csv"];

/// Per-request traces: one row per request, aggregated per minute.
const TRACES: &[&str] = &[
    "azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv",
    "azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv",
];

/// The CSV-form flags for a per-request trace: requests per minute, or context
/// tokens per minute.
const TRACE_FORMS: &[&[&str]] = &[
    &[
        "--column",
        "ContextTokens",
        "--keep-duplicates",
        "--resample",
        "60",
        "--aggregate",
        "count",
    ],
    &[
        "--column",
        "ContextTokens",
        "--keep-duplicates",
        "--resample",
        "60",
        "--aggregate",
        "sum",
    ],
];

/// One command line's worth of work: a file, its form flags and its grid interval.
struct Job {
    rel: String,
    path: PathBuf,
    form: Vec<&'static str>,
    interval_ms: i64,
    /// Signed data: forecasts may go below zero.
    signed: bool,
    /// Pass `--no-backtest` to `train` (the regular series, see the module docs).
    skip_train_backtest: bool,
}

/// Parse `argv` into a clap `Args` struct as the `aya` binary does.
fn parse<A: Args + FromArgMatches>(argv: &[String]) -> Result<A, String> {
    let cmd = A::augment_args(clap::Command::new("aya"));
    let m = cmd
        .try_get_matches_from(std::iter::once("aya".to_string()).chain(argv.iter().cloned()))
        .map_err(|e| format!("{argv:?}: {e}"))?;
    A::from_arg_matches(&m).map_err(|e| format!("{argv:?}: {e}"))
}

fn argv(job: &Job, rest: &[&str]) -> Vec<String> {
    let mut v = vec!["--input".to_string(), job.path.display().to_string()];
    v.extend(job.form.iter().map(|s| s.to_string()));
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

/// Timestamp of the last data row of a CSV whose first column is the time (true of
/// every shared file; they are sorted, as `tests/datasets.rs` checks).
fn last_timestamp(path: &Path) -> Result<i64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("empty file")?;
    let cell = line.split(',').next().unwrap_or_default();
    parse_timestamp(cell).map_err(|e| format!("last row {line:?}: {e}"))
}

fn number(cell: &str, what: &str, row: usize) -> Result<f64, String> {
    let v: f64 = cell
        .parse()
        .map_err(|e| format!("forecast row {row}: {what} {cell:?}: {e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("forecast row {row}: {what} is not finite ({v})"))
    }
}

/// Train, forecast and backtest one file; returns (grid points, seconds for each step).
fn run_one(job: &Job, dir: &Path) -> Result<(usize, [f64; 3]), String> {
    let model = dir.join("model.json");
    let out = dir.join("out.csv");
    let model_s = model.display().to_string();
    let out_s = out.display().to_string();

    // aya train
    let t0 = Instant::now();
    let mut train = vec!["--output", model_s.as_str()];
    if job.skip_train_backtest {
        train.push("--no-backtest");
    }
    let args: TrainArgs = parse(&argv(job, &train))?;
    run_train(&args).map_err(|e| format!("train: {e}"))?;
    let train_s = t0.elapsed().as_secs_f64();
    let artifact = Artifact::load(&model).map_err(|e| format!("artifact: {e}"))?;
    if artifact.training.interval_ms != job.interval_ms {
        return Err(format!(
            "artifact interval {} ms, expected {} ms",
            artifact.training.interval_ms, job.interval_ms
        ));
    }
    let points = artifact.training.points;
    match &artifact.backtest {
        None if job.skip_train_backtest => {}
        Some(scores)
            if !scores.is_empty()
                && scores.iter().any(|s| s.horizon == 12)
                && scores
                    .iter()
                    .all(|s| s.model == "aya_auto" && s.mase.is_finite()) => {}
        other => return Err(format!("artifact backtest: {other:?}")),
    }
    let start = parse_timestamp(&artifact.training.start).map_err(|e| e.to_string())?;
    let end = parse_timestamp(&artifact.training.end).map_err(|e| e.to_string())?;
    if end - start != (points as i64 - 1) * job.interval_ms {
        return Err(format!(
            "artifact window {} .. {} does not hold {points} points at {} ms",
            artifact.training.start, artifact.training.end, job.interval_ms
        ));
    }
    let last_input = last_timestamp(&job.path)?;
    if !(end <= last_input && last_input < end + job.interval_ms) {
        return Err(format!(
            "artifact ends at {} but the input's last timestamp is {last_input} ms",
            artifact.training.end
        ));
    }

    // aya forecast --model
    let t0 = Instant::now();
    let horizon = HORIZON.to_string();
    let args: ForecastArgs = parse(&argv(
        job,
        &[
            "--model",
            &model_s,
            "--horizon",
            &horizon,
            "--output",
            &out_s,
        ],
    ))?;
    run_forecast(&args).map_err(|e| format!("forecast: {e}"))?;
    let forecast_s = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&out).map_err(|e| format!("forecast output: {e}"))?;
    let mut lines = text.lines();
    if lines.next() != Some("timestamp,yhat,lower,upper,level") {
        return Err(format!(
            "forecast header: {:?}",
            text.lines().next().unwrap_or_default()
        ));
    }
    let rows: Vec<&str> = lines.collect();
    if rows.len() != HORIZON {
        return Err(format!(
            "forecast has {} rows, expected {HORIZON}",
            rows.len()
        ));
    }
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        let [ts, yhat, lower, upper, level] = cells[..] else {
            return Err(format!("forecast row {i}: {row:?} is not 5 fields"));
        };
        let ts = parse_timestamp(ts).map_err(|e| format!("forecast row {i}: {e}"))?;
        if ts != end + job.interval_ms * (i as i64 + 1) {
            return Err(format!(
                "forecast row {i}: timestamp {ts} ms does not continue the grid ending at {end} ms by {} ms",
                job.interval_ms
            ));
        }
        let (y, lo, hi) = (
            number(yhat, "yhat", i)?,
            number(lower, "lower", i)?,
            number(upper, "upper", i)?,
        );
        if !((job.signed || 0.0 <= lo) && lo <= y && y <= hi) {
            return Err(format!(
                "forecast row {i}: want 0 <= lower <= yhat <= upper, got {lo} {y} {hi}"
            ));
        }
        if level != "0.95" {
            return Err(format!("forecast row {i}: level {level:?}, expected 0.95"));
        }
    }

    // aya backtest
    let t0 = Instant::now();
    let args: BacktestArgs = parse(&argv(job, &["--horizons", "1,12", "--origins", "2"]))?;
    let bt = backtest(&args).map_err(|e| format!("backtest: {e}"))?;
    let backtest_s = t0.elapsed().as_secs_f64();
    if bt.points != points {
        return Err(format!("backtest saw {} points, train {points}", bt.points));
    }
    if !(1..=2).contains(&bt.report.origins.len()) {
        return Err(format!("backtest origins {:?}", bt.report.origins));
    }
    let mut models: Vec<&str> = bt.report.scores.iter().map(|s| s.model.as_str()).collect();
    models.dedup();
    if models.first() != Some(&"aya_auto") || !models.contains(&"naive") || models.len() < 3 {
        return Err(format!(
            "backtest models {models:?}: expected aya_auto first, naive and at least one more"
        ));
    }
    let table = bt.render(false).map_err(|e| format!("render: {e}"))?;
    for m in &models {
        for h in [1usize, 12] {
            let Some(sc) = bt
                .report
                .scores
                .iter()
                .find(|s| s.model == *m && s.horizon == h)
            else {
                return Err(format!("backtest: no score for {m} at h={h}"));
            };
            if !(sc.mase.is_finite() && sc.mase >= 0.0) {
                return Err(format!("backtest: {m} h={h} MASE {}", sc.mase));
            }
            let printed = table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() == 7
                    && f[0] == *m
                    && f[1] == h.to_string()
                    && f[2]
                        .parse::<f64>()
                        .is_ok_and(|v| (v - sc.mase).abs() <= 5e-4)
            });
            if !printed {
                return Err(format!("backtest table has no row for {m} h={h}:\n{table}"));
            }
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(&bt.render(true).map_err(|e| format!("render: {e}"))?)
            .map_err(|e| format!("backtest --json output is not JSON: {e}"))?;
    if json["scores"].as_array().map(Vec::len) != Some(bt.report.scores.len()) {
        return Err("backtest --json: scores missing".to_string());
    }
    if !job.skip_train_backtest {
        // An hour of per-minute data cannot be backtested one day (1,440 steps) ahead:
        // the default `--horizons 1,12,season` leaves `season` out instead of failing.
        let args: BacktestArgs = parse(&argv(job, &["--origins", "2", "--auto-only"]))?;
        let bt = backtest(&args).map_err(|e| format!("backtest, default horizons: {e}"))?;
        let hs: Vec<usize> = bt.report.scores.iter().map(|s| s.horizon).collect();
        if hs != [1, 12] {
            return Err(format!("backtest, default horizons: scored {hs:?}"));
        }
    }
    Ok((points, [train_s, forecast_s, backtest_s]))
}

#[test]
fn train_forecast_and_backtest_work_on_every_shared_dataset() {
    let dir = datasets_dir();
    if !dir.is_dir() {
        println!(
            "note: {} does not exist; skipping the real-data checks",
            dir.display()
        );
        return;
    }
    let mut files = Vec::new();
    csv_files(&dir, &mut files).expect("list the datasets dir");
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&dir)
            .expect("under dir")
            .to_string_lossy()
            .replace('\\', "/");
        if let Some(&(_, interval_s)) = REGULAR.iter().find(|r| r.0 == rel) {
            let signed = SIGNED.contains(&rel.as_str());
            jobs.push(Job {
                rel: rel.clone(),
                path: f.clone(),
                form: if signed {
                    vec!["--allow-negative"]
                } else {
                    Vec::new()
                },
                signed,
                interval_ms: interval_s * 1000,
                skip_train_backtest: true,
            });
        } else if TRACES.contains(&rel.as_str()) {
            for form in TRACE_FORMS {
                jobs.push(Job {
                    rel: format!("{rel} (--aggregate {})", form[form.len() - 1]),
                    path: f.clone(),
                    form: form.to_vec(),
                    signed: false,
                    interval_ms: 60_000,
                    skip_train_backtest: false,
                });
            }
        } else {
            problems.push(format!("{rel}: CSV not in the table (update this test)"));
        }
    }
    for rel in REGULAR.iter().map(|r| r.0).chain(TRACES.iter().copied()) {
        if !dir.join(rel).is_file() {
            problems.push(format!("{rel}: missing under {}", dir.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(jobs.len(), REGULAR.len() + 2 * TRACES.len());

    // Two workers: the files are independent and CI has two cores. The largest
    // (WorldCup98) goes first so that it does not finish last alone.
    jobs.sort_by_key(|j| std::cmp::Reverse(std::fs::metadata(&j.path).map_or(0, |m| m.len())));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let tmp = tempfile::tempdir().expect("tempdir");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = run_one(job, tmp.path());
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((job.rel.clone(), r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results.len(), jobs.len());
    println!(
        "{:<66} {:>7} {:>8} {:>8} {:>8}",
        "dataset", "points", "train s", "fcst s", "bt s"
    );
    for (rel, r) in &results {
        match r {
            Ok((points, [t, f, b])) => {
                println!("{rel:<66} {points:>7} {t:>8.2} {f:>8.2} {b:>8.2}")
            }
            Err(e) => problems.push(format!("{rel}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
