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

use std::path::Path;
use std::time::Instant;

use aya_forecaster::backtest::{self, BacktestConfig, Method, mase_scale};
use aya_forecaster::data::{LoadOptions, Series, datasets_dir, load_csv, parse_timestamp};
use aya_forecaster::events::{Calendar, EventConfig, EventGrid, split_by_event_days};
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
    let rep = backtest::run_with_events(y, &cfg, Some(&grid))?;
    let secs = t.elapsed().as_secs_f64();
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
    for method in ["aya_auto", "aya_auto_events"] {
        for &h in &horizons {
            let all = rep
                .scores
                .iter()
                .find(|s| s.model == method && s.horizon == h)
                .map_or(f64::NAN, |s| s.mase);
            let (on, off) = split_by_event_days(
                &rep.records,
                method,
                h,
                &calendar,
                |o| mase_scale(&y[..o], day),
                |i| t0 + dt * i as i64,
            );
            println!(
                "| {method} | {h} | {all:.3} | {:.3} | {:.3} | {} / {} |",
                on.0, off.0, on.1, off.1
            );
        }
    }
    Ok(())
}
