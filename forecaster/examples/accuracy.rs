//! Accuracy and speed benchmark of the forecaster on the shared real traces,
//! in the protocol of the forecaster issue (and of `fcbench.py`): every series
//! on its regular grid, 10 origins evenly spaced over the last 20%, horizons
//! 1, 12 and one day, MASE scaled by the in-sample seasonal-naive error
//! (season = one day), summarised as the geometric mean over series of
//! MASE(method) / MASE(seasonal naive). Series run in parallel (rayon).
//!
//! ```text
//! cargo run --release -p aya-forecaster --example accuracy [-- --origins 10 --series nyc,aapl]
//! ```
//!
//! `--series` (alias `--only`) keeps the series whose name contains one of
//! the comma-separated parts (for quick iterations on a subset).
//!
//! Prints a markdown table (paste-able into the README) and per-series details.

use std::path::Path;
use std::time::Instant;

use aya_forecaster::backtest::{self, BacktestConfig, Method, Score};
use aya_forecaster::data::{LoadOptions, datasets_dir, load_csv};
use aya_forecaster::models::{ModelSpec, Predict};
use aya_forecaster::seasonality;
use aya_forecaster::select::{SelectConfig, default_candidates};
use rayon::prelude::*;

/// (name, path under the datasets dir, resample seconds)
const SERIES: &[(&str, &str, Option<i64>)] = &[
    (
        "elb_request_count_8c0756",
        "nab/realAWSCloudwatch/elb_request_count_8c0756.csv",
        None,
    ),
    (
        "ec2_cpu_53ea38",
        "nab/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv",
        None,
    ),
    (
        "ec2_cpu_825cc2",
        "nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
        None,
    ),
    (
        "rds_cpu_cc0c53",
        "nab/realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
        None,
    ),
    (
        "rds_cpu_e47b3b",
        "nab/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
        None,
    ),
    (
        "ec2_network_in_257a54",
        "nab/realAWSCloudwatch/ec2_network_in_257a54.csv",
        None,
    ),
    ("nyc_taxi", "nab/realKnownCause/nyc_taxi.csv", None),
    (
        "twitter_aapl",
        "nab/realTweets/Twitter_volume_AAPL.csv",
        None,
    ),
    (
        "twitter_goog",
        "nab/realTweets/Twitter_volume_GOOG.csv",
        None,
    ),
    (
        "worldcup98_5min",
        "worldcup98/worldcup98_requests_per_minute.csv",
        Some(300),
    ),
];

struct SeriesResult {
    name: String,
    n: usize,
    day: usize,
    scores: Vec<Score>,
    choice: Option<String>,
    single_fit_ms: f64,
    slowest_model: String,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut origins = 10usize;
    let mut only: Vec<String> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--origins" => {
                origins = match args.get(i + 1).map(|v| v.parse::<usize>()) {
                    Some(Ok(k)) if k > 0 => k,
                    _ => anyhow::bail!("--origins needs a positive integer"),
                };
                i += 1;
            }
            "--only" | "--series" => {
                let Some(v) = args.get(i + 1) else {
                    anyhow::bail!("{} needs a value, e.g. --series nyc,aapl", args[i]);
                };
                only.extend(v.split(',').filter(|p| !p.is_empty()).map(str::to_string));
                i += 1;
            }
            other => {
                anyhow::bail!(
                    "unknown argument {other:?} (use --origins N, --series NAME[,NAME...])"
                )
            }
        }
        i += 1;
    }
    let dir = datasets_dir();
    let started = Instant::now();
    let results: Vec<anyhow::Result<SeriesResult>> = SERIES
        .par_iter()
        .filter(|(name, _, _)| only.is_empty() || only.iter().any(|o| name.contains(o.as_str())))
        .map(|&(name, rel, resample)| run_series(&dir.join(rel), name, resample, origins))
        .collect();
    let wall = started.elapsed().as_secs_f64();
    let mut ok = Vec::new();
    for r in results {
        match r {
            Ok(r) => ok.push(r),
            Err(e) => eprintln!("skipped: {e:#}"),
        }
    }
    report(&ok, origins, wall);
    Ok(())
}

fn run_series(
    path: &Path,
    name: &str,
    resample: Option<i64>,
    origins: usize,
) -> anyhow::Result<SeriesResult> {
    let opts = LoadOptions {
        resample_ms: resample.map(|s| s * 1000),
        ..LoadOptions::default()
    };
    let series = load_csv(path, &opts)?;
    let series = backtest::regularise(path, series)?;
    let y = &series.values;
    let interval_s = series.interval_ms / 1000;
    let day = (seasonality::DAY_S / interval_s.max(1)) as usize;
    // Seasonality is detected on the part before the test region only.
    let first_origin = (y.len() as f64 * 0.8) as usize;
    let seas = seasonality::detect(&y[..first_origin], interval_s);
    let mut methods = vec![Method::Auto(SelectConfig::default())];
    for spec in default_candidates(&seas, first_origin) {
        if matches!(spec, ModelSpec::Mean { .. }) {
            continue;
        }
        methods.push(Method::Single {
            spec,
            intervals: false,
        });
    }
    if !methods.iter().any(|m| {
        matches!(
            m,
            Method::Single {
                spec: ModelSpec::SeasonalNaive { .. },
                ..
            }
        )
    }) {
        methods.push(Method::Single {
            spec: ModelSpec::SeasonalNaive { period: day },
            intervals: false,
        });
    }
    let cfg = BacktestConfig {
        horizons: vec![1, 12, day],
        origins,
        test_fraction: 0.2,
        seasonality: seas.clone(),
        scale_season: day,
        methods,
    };
    let rep = backtest::run(y, &cfg)?;
    // Single model fit + one-day forecast on the last 4,000 points, best of
    // 3, for every default candidate: the slowest one is reported.
    let tail = &y[y.len().saturating_sub(4000)..];
    let mut slowest = (0.0f64, String::from("-"));
    for spec in default_candidates(&seas, tail.len()) {
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t0 = Instant::now();
            let m = spec.fit(tail)?;
            let f = m.predict(day)?;
            std::hint::black_box(&f);
            best = best.min(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if best > slowest.0 {
            slowest = (best, spec.name());
        }
    }
    Ok(SeriesResult {
        name: name.to_string(),
        n: y.len(),
        day,
        scores: rep.scores,
        choice: rep.last_choice,
        single_fit_ms: slowest.0,
        slowest_model: slowest.1,
    })
}

fn geo_mean(v: &[f64]) -> f64 {
    let v: Vec<f64> = v
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

fn report(results: &[SeriesResult], origins: usize, wall: f64) {
    let mut models: Vec<String> = Vec::new();
    for r in results {
        for s in &r.scores {
            if !models.contains(&s.model) {
                models.push(s.model.clone());
            }
        }
    }
    report_methods(results, &models, origins);
    report_series(results);
    report_coverage(results, &models);
    println!(
        "\nwall time {wall:.1} s ({} rayon threads)",
        rayon::current_num_threads()
    );
}

/// The score of `model` on series `r` at horizon index `hi` (1, 12, one day).
fn get<'a>(r: &'a SeriesResult, model: &str, hi: usize) -> Option<&'a Score> {
    let h = [1, 12, r.day][hi];
    r.scores.iter().find(|s| s.model == model && s.horizon == h)
}

/// The per-method table: relative MASE per horizon, worst ratio and time per origin.
fn report_methods(results: &[SeriesResult], models: &[String], origins: usize) {
    println!(
        "## Accuracy: geometric mean of MASE / MASE(seasonal naive) over {} series, {origins} origins over the last 20%\n",
        results.len()
    );
    println!(
        "| method | h=1 | h=12 | h=one day | worst ratio to min(naive, snaive) @12 | ms per origin (mean) |"
    );
    println!("|---|---|---|---|---|---|");
    for m in models {
        let mut cells = Vec::new();
        for hi in 0..3 {
            let rel: Vec<f64> = results
                .iter()
                .filter_map(|r| {
                    let a = get(r, m, hi)?.mase;
                    let b = get(r, "seasonal_naive", hi)?.mase;
                    Some(a / b)
                })
                .collect();
            cells.push(format!("{:.3}", geo_mean(&rel)));
        }
        let worst = results
            .iter()
            .filter_map(|r| {
                let a = get(r, m, 1)?.mase;
                let b = get(r, "naive", 1)?
                    .mase
                    .min(get(r, "seasonal_naive", 1)?.mase);
                Some(a / b)
            })
            .fold(f64::NAN, f64::max);
        let ms: Vec<f64> = results
            .iter()
            .filter_map(|r| get(r, m, 0).map(|s| s.ms_per_origin))
            .collect();
        let ms = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        println!(
            "| {m} | {} | {} | {} | {worst:.2} | {ms:.1} |",
            cells[0], cells[1], cells[2]
        );
    }
}

/// The per-series table of `aya_auto`: MASE, worst ratio, coverage and timings.
fn report_series(results: &[SeriesResult]) {
    println!(
        "\n## aya_auto per series: MASE (h=1 / 12 / day), worst ratio to min(naive, snaive) over the three horizons, coverage of the 80% / 95% intervals per horizon (1 / 12 / day)\n"
    );
    println!(
        "| series | points | MASE 1 | MASE 12 | MASE day | worst ratio | cov80 1/12/day | cov95 1/12/day | ms/origin | slowest single fit+day ms | last choice |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let mut cells = Vec::new();
        let mut worst: f64 = 0.0;
        for hi in 0..3 {
            let a = get(r, "aya_auto", hi).map_or(f64::NAN, |s| s.mase);
            let b = match (get(r, "naive", hi), get(r, "seasonal_naive", hi)) {
                (Some(x), Some(y)) => x.mase.min(y.mase),
                _ => f64::NAN,
            };
            worst = worst.max(a / b);
            cells.push(format!("{a:.3}"));
        }
        let d = get(r, "aya_auto", 2);
        let cov = |f: fn(&Score) -> f64| {
            (0..3)
                .map(|hi| get(r, "aya_auto", hi).map_or("-".into(), |s| format!("{:.2}", f(s))))
                .collect::<Vec<String>>()
                .join(" / ")
        };
        println!(
            "| {} | {} | {} | {} | {} | {worst:.2} | {} | {} | {:.1} | {:.2} ({}) | {} |",
            r.name,
            r.n,
            cells[0],
            cells[1],
            cells[2],
            cov(|s| s.coverage80),
            cov(|s| s.coverage95),
            d.map_or(f64::NAN, |s| s.ms_per_origin),
            r.single_fit_ms,
            r.slowest_model,
            r.choice.as_deref().unwrap_or("-"),
        );
    }
}

/// Mean interval coverage per level and every method's per-series MASE.
fn report_coverage(results: &[SeriesResult], models: &[String]) {
    for (level, f) in [
        (80, (|s: &Score| s.coverage80) as fn(&Score) -> f64),
        (95, |s: &Score| s.coverage95),
    ] {
        let cells: Vec<String> = (0..3)
            .map(|hi| {
                let v: Vec<f64> = results
                    .iter()
                    .filter_map(|r| get(r, "aya_auto", hi).map(f))
                    .filter(|v| v.is_finite())
                    .collect();
                format!("{:.3}", v.iter().sum::<f64>() / v.len().max(1) as f64)
            })
            .collect();
        println!(
            "\nmean coverage of the {level}% interval at h=1 / 12 / day: {}",
            cells.join(" / ")
        );
    }
    println!("\nper-series MASE of every method (h=1/12/day):");
    for r in results {
        for m in models {
            let c: Vec<String> = (0..3)
                .map(|hi| get(r, m, hi).map_or("-".into(), |s| format!("{:.3}", s.mase)))
                .collect();
            println!("  {:24} {:24} {}", r.name, m, c.join(" / "));
        }
    }
}
