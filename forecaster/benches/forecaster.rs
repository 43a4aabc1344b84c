//! Speed of the forecaster (criterion): what one series costs.
//!
//! * `select_fit_forecast`: seasonality detection, rolling-origin selection
//!   (every default candidate refitted at every validation origin), the
//!   final fit and a one-day forecast with calibrated 80% bounds, on the
//!   last 4,032 points of real series (what the accuracy example and the
//!   controller's retraining pay per series).
//! * `fit_forecast_day`: one model fitted on those 4,032 points and a
//!   one-day forecast, for every default candidate.
//!
//! ```text
//! cargo bench -p aya-forecaster --bench forecaster
//! ```
//!
//! The series come from the shared datasets (`$AYA_DATASETS`); when they are
//! absent a deterministic synthetic daily series of the same length is used.

use std::hint::black_box;

use aya_forecaster::backtest;
use aya_forecaster::data::{LoadOptions, datasets_dir, load_csv};
use aya_forecaster::models::Forecast;
use aya_forecaster::seasonality;
use aya_forecaster::select::{FittedAuto, SelectConfig, default_candidates};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const POINTS: usize = 4032;

/// (name, path under the datasets dir)
const SERIES: &[(&str, &str)] = &[
    (
        "ec2_cpu_53ea38",
        "nab/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv",
    ),
    (
        "ec2_cpu_825cc2",
        "nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    ),
    ("nyc_taxi", "nab/realKnownCause/nyc_taxi.csv"),
];

/// Tail of a shared series and its interval in seconds, or a synthetic
/// 5-minute daily series (seeded, so every run measures the same work).
fn load(rel: &str) -> (Vec<f64>, i64) {
    let path = datasets_dir().join(rel);
    let loaded = load_csv(&path, &LoadOptions::default())
        .ok()
        .and_then(|s| backtest::regularise(&path, s).ok());
    match loaded {
        Some(s) if s.values.len() >= POINTS && s.interval_ms >= 1000 => {
            let v = s.values[s.values.len() - POINTS..].to_vec();
            (v, s.interval_ms / 1000)
        }
        _ => {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64;
            let v = (0..POINTS)
                .map(|t| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let noise = (state % 1000) as f64 / 100.0 - 5.0;
                    let ph = std::f64::consts::TAU * (t % 288) as f64 / 288.0;
                    100.0 + 30.0 * ph.sin() + noise
                })
                .collect();
            (v, 300)
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_fit_forecast");
    group.sample_size(10);
    let loaded: Vec<(&str, Vec<f64>, i64)> = SERIES
        .iter()
        .map(|&(name, rel)| {
            let (y, interval) = load(rel);
            (name, y, interval)
        })
        .collect();
    for (name, y, interval) in &loaded {
        let day = (seasonality::DAY_S / interval.max(&1)) as usize;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            let mut out = Forecast::default();
            b.iter(|| {
                let seas = seasonality::detect(y, *interval);
                let m = FittedAuto::select_and_fit(y, &seas, day, &SelectConfig::default())
                    .expect("selection on a regular series");
                m.predict_into(day, Some(0.8), &mut out).expect("forecast");
                black_box(&out);
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("fit_forecast_day");
    group.sample_size(20);
    for (name, y, interval) in &loaded {
        let day = (seasonality::DAY_S / interval.max(&1)) as usize;
        let seas = seasonality::detect(y, *interval);
        for spec in default_candidates(&seas, y.len()) {
            let id = format!("{name}/{}", spec.name());
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    let m = spec.fit(y).expect("fit");
                    black_box(m.predict(day).expect("forecast"));
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
