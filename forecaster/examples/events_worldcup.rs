//! WorldCup98 with the 1998 match schedule: MASE on match days vs other days,
//! with and without the calendar, over a rolling-origin backtest on the
//! tournament (docs/events.md).
//!
//! ```text
//! cargo build --workspace --example events_worldcup
//! AYA_DATASETS=../shared/datasets target/debug/examples/events_worldcup \
//!     [--resample 3600] [--origins 30] [--test-fraction 0.45] [--horizons 1,6,24]
//! ```
//!
//! The per-minute trace is cut at the end of the final's day (1998-07-13T00:00Z),
//! resampled (bucket means), and the origins are spread over the last
//! `--test-fraction` of it (0.45 ≈ from 10 June, the opening match).
//! Seasonality is detected on the data before the first origin.
//!
//! Peers in the same protocol: `--export DIR` writes the resampled series and
//! the tasks (origin, horizon) in the forecast bench's prep format, for
//! `shared/tools/forecast-bench/fcbench.py run --prep DIR --out DIR/run`;
//! `--pred NAME=FILE` (repeatable) scores such a prediction file
//! (`series,origin,h,step,y_hat`) in the same table, split the same way.

use std::path::Path;
use std::time::Instant;

use aya_forecaster::backtest::{self, BacktestConfig, ForecastRecord, Method, mase_scale};
use aya_forecaster::data::{LoadOptions, Series, datasets_dir, load_csv, parse_timestamp};
use aya_forecaster::events::{Calendar, EventConfig, EventGrid, split_by_event_days};
use aya_forecaster::fcbench;
use aya_forecaster::seasonality;
use aya_forecaster::select::SelectConfig;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{name} needs a value")),
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let resample: i64 = arg(&args, "--resample", 3600)?;
    let origins: usize = arg(&args, "--origins", 30)?;
    let test_fraction: f64 = arg(&args, "--test-fraction", 0.45)?;
    let horizons: String = arg(&args, "--horizons", "1,6,24".to_string())?;
    let horizons: Vec<usize> = horizons
        .split(',')
        .map(|h| h.trim().parse())
        .collect::<Result<_, _>>()?;

    let path = datasets_dir().join("worldcup98/worldcup98_requests_per_minute.csv");
    let opts = LoadOptions {
        resample_ms: Some(resample * 1000),
        ..LoadOptions::default()
    };
    let full = load_csv(&path, &opts)?;
    let until = parse_timestamp("1998-07-13T00:00:00Z")?;
    let keep = full.timestamps.iter().take_while(|&&t| t < until).count();
    let series = Series::from_parts(
        "worldcup98",
        full.timestamps[..keep].to_vec(),
        full.values[..keep].to_vec(),
    )?;
    let y = &series.values;
    let cal_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/worldcup98_matches.csv");
    let calendar = Calendar::load(&cal_path)?;
    let t0 = series.timestamps[0];
    let dt = series.interval_ms;
    let grid = EventGrid::new(&calendar, t0, dt, EventConfig::default());

    let interval_s = dt / 1000;
    let day = (seasonality::DAY_S / interval_s.max(1)) as usize;
    let first_origin = (y.len() as f64 * (1.0 - test_fraction)) as usize;
    let seas = seasonality::detect(&y[..first_origin], interval_s);
    let cfg = BacktestConfig {
        horizons: horizons.clone(),
        origins,
        test_fraction,
        seasonality: seas.clone(),
        scale_season: day,
        methods: vec![
            Method::Auto(SelectConfig::default()),
            Method::AutoEvents(SelectConfig::default()),
        ],
    };
    let t = Instant::now();
    let mut rep = backtest::run_with_events(y, &cfg, Some(&grid))?;
    let secs = t.elapsed().as_secs_f64();
    if let Some(dir) = value_of(&args, "--export") {
        // Seasons for the peers: one day, and one week when three are there.
        let weekly = if y.len() >= 3 * 7 * day { 7 * day } else { 0 };
        fcbench::write_prep(
            Path::new(&dir),
            &series,
            day,
            weekly,
            &rep.origins,
            &horizons,
        )?;
        println!(
            "exported the series and {} tasks to {dir}",
            rep.origins.len() * horizons.len()
        );
    }
    let mut methods: Vec<String> = vec!["aya_auto".into(), "aya_auto_events".into()];
    for spec in values_of(&args, "--pred") {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--pred takes NAME=FILE, got {spec:?}"))?;
        let records = external_records(name, Path::new(file), y, &rep.origins, &horizons)?;
        rep.records.extend(records);
        methods.push(name.to_string());
    }
    let o0 = rep.origins.first().copied().unwrap_or(0);
    let o1 = rep.origins.last().copied().unwrap_or(0);
    let ts = |i: usize| aya_forecaster::data::format_rfc3339(t0 + dt * i as i64);
    println!(
        "worldcup98 at {resample} s, {} points, seasons {:?}; {} origins {} .. {}; MASE scale: seasonal naive at lag {day} ({secs:.0} s)",
        y.len(),
        seas.periods,
        rep.origins.len(),
        ts(o0),
        ts(o1)
    );
    if let Some(c) = &rep.last_choice {
        println!("aya_auto chose (last origin): {c}");
    }
    if let Some(c) = &rep.last_choice_events {
        println!("aya_auto_events chose (last origin): {c}");
    }
    println!();
    println!(
        "| method | horizon (steps) | MASE all | MASE match days | MASE other days | steps match / other |"
    );
    println!("|---|---|---|---|---|---|");
    for method in &methods {
        for &h in &horizons {
            let (on, off) = split_by_event_days(
                &rep.records,
                method,
                h,
                &calendar,
                |o| mase_scale(&y[..o], day),
                |i| t0 + dt * i as i64,
            );
            // Every origin scores h steps with one scale, so the pooled mean
            // of the scaled errors is the mean of the per-origin MASE.
            let all = if on.1 + off.1 > 0 {
                (on.0 * on.1 as f64 + off.0 * off.1 as f64) / (on.1 + off.1) as f64
            } else {
                f64::NAN
            };
            println!(
                "| {method} | {h} | {all:.3} | {:.3} | {:.3} | {} / {} |",
                on.0, off.0, on.1, off.1
            );
        }
    }
    Ok(())
}

/// The value after `name` (`None` when absent).
fn value_of(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Every value given after `name`.
fn values_of(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

/// A prediction file of the bench (the longest horizon's rows used) as
/// backtest records named `name`, at the backtest's origins.
fn external_records(
    name: &str,
    file: &Path,
    y: &[f64],
    origins: &[usize],
    horizons: &[usize],
) -> anyhow::Result<Vec<ForecastRecord>> {
    let max_h = horizons.iter().copied().max().unwrap_or(1);
    let pred = fcbench::read_predictions(file)?;
    let mut out = Vec::new();
    for &o in origins {
        for s in 1..=max_h {
            let Some(&yhat) = pred.get(&("worldcup98".to_string(), o, max_h, s)) else {
                anyhow::bail!("{}: no forecast for origin {o} step {s}", file.display());
            };
            out.push(ForecastRecord {
                model: name.to_string(),
                origin: o,
                step: s,
                actual: y[o + s - 1],
                yhat,
                lower80: f64::NAN,
                upper80: f64::NAN,
                lower95: f64::NAN,
                upper95: f64::NAN,
            });
        }
    }
    Ok(out)
}
