//! Robust selection: validation origins spread over the training data,
//! baselines kept unless beaten convincingly, per-step conformal intervals,
//! and artifacts written before these fields existed still load.

use aya_forecaster::intervals::{ABS_LEVELS, Calibration, conformal_quantile};
use aya_forecaster::models::ModelSpec;
use aya_forecaster::seasonality::{self, Seasonality};
use aya_forecaster::select::{
    DEFAULT_ORIGINS, FittedAuto, SPAN_SEASONS, SelectConfig, Selection, select, validation_origins,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Normal};

fn noise(n: usize, sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let d = Normal::new(0.0, sd).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

fn random_walk(n: usize, seed: u64) -> Vec<f64> {
    let mut level = 500.0;
    noise(n, 1.0, seed)
        .into_iter()
        .map(|e| {
            level += e;
            level
        })
        .collect()
}

#[test]
fn validation_origins_are_spread_over_the_training_data() {
    // A 5-minute series of two weeks, a day-long validation horizon.
    let n = 4032;
    let o = validation_origins(n, 288, 288, 10);
    assert_eq!(o.len(), 10);
    assert!(o.windows(2).all(|w| w[0] < w[1]), "{o:?}");
    assert_eq!(
        *o.last().unwrap(),
        n - 288,
        "the last origin ends at the end"
    );
    assert!(o[0] >= n / 3, "at least a third of the data to train on");
    // Spread over more than a week, not bunched at the end.
    assert!(o[9] - o[0] > 7 * 288, "{o:?}");
    // A long series: at most SPAN_SEASONS seasons back.
    let o = validation_origins(100_000, 48, 48, 10);
    assert_eq!(o[9] - o[0], SPAN_SEASONS * 48);
    // One origin, or a series too short for any.
    assert_eq!(validation_origins(1000, 12, 24, 1), vec![988]);
    assert!(validation_origins(10, 12, 24, 5).is_empty());
    assert_eq!(SelectConfig::default().origins, DEFAULT_ORIGINS);
}

#[test]
fn on_a_random_walk_every_band_keeps_naive() {
    // Nothing beats naive on a random walk: no challenger may be convincing.
    let y = random_walk(24 * 60, 5);
    let seas = Seasonality {
        periods: Vec::new(),
        day: Some(24),
    };
    let sel = select(&y, &seas, 24, &SelectConfig::default()).unwrap();
    let naive = sel
        .specs
        .iter()
        .position(|s| *s == ModelSpec::Naive)
        .unwrap();
    assert!(
        sel.specs
            .iter()
            .any(|s| matches!(s, ModelSpec::SeasonalNaive { period: 24 })),
        "seasonal naive at one day is always a candidate"
    );
    for band in &sel.bands {
        assert_eq!(band.baseline, Some(naive), "{}", sel.describe());
        assert!(
            band.members.contains(&naive),
            "band {}-{} left naive with weak evidence: {}",
            band.from,
            band.to,
            sel.describe()
        );
        assert!(band.ratio <= 1.0 + 1e-9, "{band:?}");
    }
}

#[test]
fn a_clear_seasonal_signal_is_taken_with_its_evidence_recorded() {
    let e = noise(24 * 40, 1.0, 9);
    let y: Vec<f64> = (0..24 * 40)
        .map(|t| {
            let ph = std::f64::consts::TAU * (t % 24) as f64 / 24.0;
            200.0 + 40.0 * ph.sin() + e[t]
        })
        .collect();
    let seas = seasonality::detect(&y, 3600);
    assert_eq!(seas.primary(), Some(24));
    let sel = select(&y, &seas, 24, &SelectConfig::default()).unwrap();
    let naive = sel
        .specs
        .iter()
        .position(|s| *s == ModelSpec::Naive)
        .unwrap();
    let long = sel.bands.last().unwrap();
    assert!(!long.members.contains(&naive), "{}", sel.describe());
    assert!(long.ratio < 0.97, "{long:?}");
    assert!(long.evidence >= 1.0, "{long:?}");
    assert_eq!(sel.validation_origins.len(), DEFAULT_ORIGINS);
    // Every candidate's scores are relative to its band's baseline.
    assert!(
        sel.scores
            .iter()
            .all(|c| c.band_ratios.len() == sel.bands.len())
    );
}

#[test]
fn an_incident_on_the_last_day_is_not_repeated_a_day_later() {
    // Hourly data with a clear daily season; a three-hour incident at ten
    // times the level yesterday evening (ended well before the end of the
    // data). Theta on the seasonally adjusted series would learn it into
    // the seasonal indices and repeat part of it; fitted on the cleaned
    // series it forecasts the ordinary evening.
    let e = noise(24 * 20, 1.0, 11);
    let clean: Vec<f64> = (0..24 * 20)
        .map(|t| {
            let ph = std::f64::consts::TAU * (t % 24) as f64 / 24.0;
            200.0 + 40.0 * ph.sin() + e[t]
        })
        .collect();
    let mut y = clean.clone();
    let at = 24 * 19 + 2;
    for v in &mut y[at..at + 3] {
        *v *= 10.0;
    }
    let seas = Seasonality {
        periods: vec![24],
        day: Some(24),
    };
    let cfg = SelectConfig {
        candidates: Some(vec![ModelSpec::Theta {
            period: 24,
            theta: 2.0,
        }]),
        ..SelectConfig::default()
    };
    let forecast = |y: &[f64]| {
        let m = FittedAuto::select_and_fit(y, &seas, 24, &cfg).unwrap();
        let mut out = aya_forecaster::models::Forecast::default();
        m.predict_into(24, None, &mut out).unwrap();
        out.point
    };
    let (with_incident, without) = (forecast(&y), forecast(&clean));
    // Steps 3..=5 are the incident's hours of the next day.
    for s in 2..5 {
        let rel = (with_incident[s] - without[s]).abs() / without[s];
        assert!(
            rel < 0.05,
            "step {}: {} with the incident vs {} without",
            s + 1,
            with_incident[s],
            without[s]
        );
    }
}

#[test]
fn conformal_quantile_uses_the_finite_sample_rank() {
    let v: Vec<f64> = (1..=19).map(f64::from).collect();
    // ⌈20 × 0.8⌉ = 16th smallest.
    assert_eq!(conformal_quantile(&v, 0.8), 16.0);
    // ⌈20 × 0.95⌉ = 19th: the largest.
    assert_eq!(conformal_quantile(&v, 0.95), 19.0);
    // Beyond the sample: the largest, widened.
    assert!(conformal_quantile(&v, 0.99) > 19.0);
    assert_eq!(conformal_quantile(&[], 0.9), 0.0);
}

#[test]
fn per_step_calibration_covers_gaussian_errors_and_widens_with_the_horizon() {
    // Errors whose spread grows with the step, 30 origins, scale 2 at the
    // origins and 4 for the series being forecast (bounds double).
    let h = 24;
    let k = 30;
    let mut errors = vec![Vec::new(); h];
    for (s, row) in errors.iter_mut().enumerate() {
        *row = noise(k, 1.0 + s as f64 / 8.0, 100 + s as u64)
            .into_iter()
            .map(|e| 2.0 * e)
            .collect();
    }
    let scales = vec![2.0; k];
    let c = Calibration::from_scaled_errors(&errors, &scales, 4.0, 0.0);
    assert_eq!(c.abs_quantiles.len(), h);
    assert!(c.abs_quantiles.iter().all(|r| r.len() == ABS_LEVELS.len()));
    let width = |s: usize, level: f64| {
        let (lo, hi) = c.bounds(s, 0.0, level);
        assert!((lo + hi).abs() < 1e-9, "symmetric");
        hi
    };
    for s in 2..=h {
        assert!(width(s, 0.8) >= width(s - 1, 0.8));
    }
    assert!(width(h, 0.8) > 2.0 * width(1, 0.8));
    assert!(width(5, 0.95) > width(5, 0.8));
    assert!(width(5, 0.995) > width(5, 0.99));
    // Fresh errors from the same distributions, at the series' scale (×2).
    let mut inside = [0usize; 2];
    let mut total = 0usize;
    for (s, seed) in (0..h).zip(500u64..) {
        for e in noise(400, 1.0 + s as f64 / 8.0, seed) {
            let e = 4.0 * e;
            total += 1;
            for (i, level) in [0.8, 0.95].into_iter().enumerate() {
                if e.abs() <= width(s + 1, level) {
                    inside[i] += 1;
                }
            }
        }
    }
    let cov80 = inside[0] as f64 / total as f64;
    let cov95 = inside[1] as f64 / total as f64;
    assert!((0.72..=0.9).contains(&cov80), "80% interval covers {cov80}");
    assert!((0.9..=0.99).contains(&cov95), "95% interval covers {cov95}");
}

#[test]
fn selections_saved_before_the_robust_fields_still_load_and_forecast() {
    let y = random_walk(24 * 20, 3);
    let seas = Seasonality::default();
    let sel = select(&y, &seas, 12, &SelectConfig::default()).unwrap();
    let mut json = serde_json::to_value(&sel).unwrap();
    // Strip what older artifacts did not have.
    for band in json["bands"].as_array_mut().unwrap() {
        let b = band.as_object_mut().unwrap();
        b.remove("baseline");
        b.remove("ratio");
        b.remove("evidence");
    }
    for score in json["scores"].as_array_mut().unwrap() {
        score.as_object_mut().unwrap().remove("band_ratios");
    }
    json["calibration"]
        .as_object_mut()
        .unwrap()
        .remove("abs_quantiles");
    let old: Selection = serde_json::from_value(json).unwrap();
    assert!(
        old.bands
            .iter()
            .all(|b| b.baseline.is_none() && b.ratio.is_nan())
    );
    assert!(old.calibration.abs_quantiles.is_empty());
    let m = FittedAuto::fit(&y, old).unwrap();
    let mut f = Default::default();
    m.predict_into(12, Some(0.9), &mut f).unwrap();
    assert_eq!(f.point.len(), 12);
    // The σ(s) construction serves the bounds: finite and around the point.
    assert!(
        f.lower
            .iter()
            .zip(&f.point)
            .zip(&f.upper)
            .all(|((l, p), u)| l.is_finite() && l < p && p < u)
    );
}
