//! Models recover known structure on generated series; metrics, intervals,
//! selection, artifacts and the online forecaster behave as documented.

use aya_forecaster::artifact::{Artifact, ArtifactError};
use aya_forecaster::backtest::{self, BacktestConfig, Method, mase, mase_scale, smape};
use aya_forecaster::intervals::{Calibration, normal_quantile};
use aya_forecaster::models::{
    Estimator, Ets, ExogRegression, Fit, LagRegression, ModelError, ModelSpec, Mstl, Predict,
    SeasonalNaive, Theta,
};
use aya_forecaster::online::{OnlineConfig, OnlineForecaster};
use aya_forecaster::seasonality::{self, Seasonality};
use aya_forecaster::select::{FittedAuto, SelectConfig, SelectError, select};
use aya_policy::{DemandForecast, DemandForecaster};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Normal};

fn noise(n: usize, sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let d = Normal::new(0.0, sd).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

fn daily(n: usize, period: usize, seed: u64) -> Vec<f64> {
    let e = noise(n, 1.0, seed);
    (0..n)
        .map(|t| {
            let ph = 2.0 * std::f64::consts::PI * (t % period) as f64 / period as f64;
            100.0 + 30.0 * ph.sin() + 10.0 * (2.0 * ph).cos() + e[t]
        })
        .collect()
}

#[test]
fn seasonal_naive_is_exact_on_a_periodic_series() {
    let pattern = [3.0, 7.0, 1.0, 9.0, 4.0];
    let y: Vec<f64> = (0..23).map(|t| pattern[t % 5]).collect();
    let f = SeasonalNaive { period: 5 }
        .fit(&y)
        .unwrap()
        .predict(12)
        .unwrap();
    let expected: Vec<f64> = (23..35).map(|t| pattern[t % 5]).collect();
    assert_eq!(f.point, expected);
}

#[test]
fn theta_as_ses_recovers_the_smoothing_parameter_of_a_local_level_process() {
    // y_t = l_{t-1} + e_t, l_t = l_{t-1} + alpha e_t with alpha = 0.3.
    let e = noise(4000, 1.0, 7);
    let mut level = 50.0;
    let y: Vec<f64> = e
        .iter()
        .map(|&e| {
            let v = level + e;
            level += 0.3 * e;
            v
        })
        .collect();
    let fitted = Theta {
        period: 1,
        theta: 1.0,
    }
    .fit(&y)
    .unwrap();
    assert!(
        (fitted.alpha() - 0.3).abs() < 0.05,
        "alpha {}",
        fitted.alpha()
    );
    // SES forecasts are flat at the final level.
    let f = fitted.predict(3).unwrap();
    assert!((f.point[0] - f.point[2]).abs() < 1e-9);
    assert!((f.point[0] - fitted.level()).abs() < 1e-9);
}

#[test]
fn theta_extrapolates_half_the_linear_trend_and_restores_the_season() {
    let period = 24;
    let y: Vec<f64> = (0..24 * 20)
        .map(|t| {
            let s = 1.0
                + 0.3 * (2.0 * std::f64::consts::PI * (t % period) as f64 / period as f64).sin();
            (200.0 + 0.5 * t as f64) * s
        })
        .collect();
    let fitted = Theta { period, theta: 2.0 }.fit(&y).unwrap();
    assert!(fitted.seasonal());
    assert!(
        (fitted.slope() - 0.5).abs() < 0.05,
        "slope {}",
        fitted.slope()
    );
    let f = fitted.predict(period).unwrap();
    let truth: Vec<f64> = (y.len()..y.len() + period)
        .map(|t| {
            let s = 1.0
                + 0.3 * (2.0 * std::f64::consts::PI * (t % period) as f64 / period as f64).sin();
            (200.0 + 0.5 * t as f64) * s
        })
        .collect();
    let mape: f64 = f
        .point
        .iter()
        .zip(&truth)
        .map(|(a, b)| ((a - b) / b).abs())
        .sum::<f64>()
        / period as f64;
    assert!(mape < 0.03, "MAPE {mape}");
}

#[test]
fn ets_continues_a_noiseless_linear_trend() {
    let y: Vec<f64> = (0..200).map(|t| 10.0 + 0.5 * t as f64).collect();
    let f = Ets { period: 1 }.fit(&y).unwrap().predict(10).unwrap();
    for (h, v) in f.point.iter().enumerate() {
        let truth = 10.0 + 0.5 * (200 + h) as f64;
        assert!((v - truth).abs() < 0.5, "h={h}: {v} vs {truth}");
    }
}

#[test]
fn ets_on_seasonally_adjusted_data_tracks_trend_and_season() {
    let period = 24;
    let e = noise(24 * 15, 0.5, 3);
    // Positive data: the season is removed multiplicatively.
    let truth = |t: usize| {
        (20.0 + 0.1 * t as f64)
            * (1.0 + 0.2 * (2.0 * std::f64::consts::PI * (t % period) as f64 / period as f64).sin())
    };
    let y: Vec<f64> = (0..24 * 15).map(|t| truth(t) + e[t]).collect();
    let f = Ets { period }.fit(&y).unwrap().predict(period).unwrap();
    let mae = f
        .point
        .iter()
        .enumerate()
        .map(|(h, v)| (v - truth(y.len() + h)).abs())
        .sum::<f64>()
        / period as f64;
    assert!(mae < 1.5, "MAE {mae}");
}

#[test]
fn mstl_handles_two_seasons() {
    let (p1, p2) = (12, 84);
    let truth = |t: usize| {
        let a = 2.0 * std::f64::consts::PI * (t % p1) as f64 / p1 as f64;
        let b = 2.0 * std::f64::consts::PI * (t % p2) as f64 / p2 as f64;
        50.0 + 5.0 * a.sin() + 8.0 * b.cos()
    };
    let e = noise(84 * 8, 0.3, 11);
    let y: Vec<f64> = (0..84 * 8).map(|t| truth(t) + e[t]).collect();
    let f = Mstl {
        periods: vec![p1, p2],
    }
    .fit(&y)
    .unwrap()
    .predict(p2)
    .unwrap();
    let mae = f
        .point
        .iter()
        .enumerate()
        .map(|(h, v)| (v - truth(y.len() + h)).abs())
        .sum::<f64>()
        / p2 as f64;
    assert!(mae < 1.0, "MAE {mae}");
}

#[test]
fn lag_regression_recovers_ar_coefficients() {
    let e = noise(3000, 0.1, 5);
    let mut y = vec![10.0, 10.0];
    for t in 2..3000 {
        let v = 5.0 + 0.6 * y[t - 1] - 0.2 * y[t - 2] + e[t];
        y.push(v);
    }
    let spec = LagRegression {
        lags: vec![1, 2],
        period: 1,
        fourier: 0,
        estimator: Estimator::Linear,
        max_rows: 0,
    };
    let fitted = spec.fit(&y).unwrap();
    let (intercept, coef) = fitted.coefficients().unwrap();
    assert!((coef[0] - 0.6).abs() < 0.05, "{coef:?}");
    assert!((coef[1] + 0.2).abs() < 0.05, "{coef:?}");
    assert!((intercept - 5.0).abs() < 0.5, "{intercept}");
    // Long-run forecast converges to the process mean 5 / (1 - 0.6 + 0.2) = 8.33.
    let f = fitted.predict(200).unwrap();
    assert!((f.point[199] - 5.0 / 0.6).abs() < 0.3, "{}", f.point[199]);
}

#[test]
fn exogenous_linear_regression_recovers_coefficients() {
    let x1: Vec<f64> = (0..100).map(|t| (t as f64 * 0.37).sin() * 10.0).collect();
    let x2: Vec<f64> = (0..100).map(|t| (t % 7) as f64).collect();
    let y: Vec<f64> = (0..100).map(|t| 2.0 + 3.0 * x1[t] - x2[t]).collect();
    let spec = ExogRegression {
        period: 1,
        fourier: 0,
        estimator: Estimator::Linear,
    };
    let fitted = spec.fit(&y, &[x1.clone(), x2.clone()]).unwrap();
    let (b0, b) = fitted.coefficients().unwrap();
    assert!((b0 - 2.0).abs() < 1e-6 && (b[0] - 3.0).abs() < 1e-6 && (b[1] + 1.0).abs() < 1e-6);
    let p = fitted.predict(&[vec![1.0], vec![2.0]], 100).unwrap();
    assert!((p[0] - 3.0).abs() < 1e-6);
    // Mismatched inputs are precise errors, not panics.
    let err = spec.fit(&y, &[x1[..50].to_vec()]).unwrap_err();
    assert!(err.to_string().contains("column 0 has 50 values"), "{err}");
}

#[test]
fn random_forest_learns_a_saturating_relation() {
    // CPU saturates at 1.0 as requests grow: a shape a line cannot fit.
    let x: Vec<f64> = (0..400).map(|t| (t % 100) as f64).collect();
    let y: Vec<f64> = x.iter().map(|&r| (r / 50.0).min(1.0)).collect();
    let spec = ExogRegression {
        period: 1,
        fourier: 0,
        estimator: Estimator::RandomForest {
            trees: 20,
            max_depth: 8,
            seed: 1,
        },
    };
    let fitted = spec.fit(&y, &[x]).unwrap();
    let p = fitted.predict(&[vec![10.0, 90.0]], 0).unwrap();
    assert!((p[0] - 0.2).abs() < 0.05, "{p:?}");
    assert!((p[1] - 1.0).abs() < 0.05, "{p:?}");
}

#[test]
fn daily_season_is_detected_from_the_interval() {
    let y = daily(288 * 5, 288, 1);
    let s = seasonality::detect(&y, 300);
    assert_eq!(s.periods, vec![288]);
    assert_eq!(s.day, Some(288));
    let flat = noise(288 * 5, 1.0, 2);
    assert!(seasonality::detect(&flat, 300).periods.is_empty());
}

#[test]
fn metrics_match_hand_computed_values() {
    assert_eq!(mase(&[1.0, 2.0], &[1.0, 2.0], 1.0), 0.0);
    assert!((mase(&[1.0, 2.0], &[2.0, 4.0], 0.5) - 3.0).abs() < 1e-12);
    // |1-3|/(1+3) = 0.5 -> 200 * 0.5 / 1 = 100.
    assert!((smape(&[1.0], &[3.0]) - 100.0).abs() < 1e-12);
    assert_eq!(smape(&[0.0], &[0.0]), 0.0);
    // Seasonal-naive scale at lag 2 of 1,2,1,2,5: |1-1|,|2-2|,|5-1| -> 4/3.
    assert!((mase_scale(&[1.0, 2.0, 1.0, 2.0, 5.0], 2) - 4.0 / 3.0).abs() < 1e-12);
    assert_eq!(backtest::origins(100, 3, 10, 0.2), vec![80, 85, 90]);
    assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
}

#[test]
fn intervals_cover_near_nominal_on_white_noise() {
    let y: Vec<f64> = noise(3000, 2.0, 9).iter().map(|e| 20.0 + e).collect();
    let cfg = BacktestConfig {
        horizons: vec![1, 12],
        origins: 40,
        test_fraction: 0.5,
        seasonality: Seasonality::default(),
        scale_season: 1,
        methods: vec![Method::Auto(SelectConfig {
            candidates: Some(vec![ModelSpec::Mean { window: 0 }, ModelSpec::Naive]),
            ..SelectConfig::default()
        })],
    };
    let rep = backtest::run(&y, &cfg).unwrap();
    let s12 = rep.scores.iter().find(|s| s.horizon == 12).unwrap();
    assert!(
        (0.65..=0.95).contains(&s12.coverage80),
        "80%: {}",
        s12.coverage80
    );
    assert!(
        (0.85..=1.0).contains(&s12.coverage95),
        "95%: {}",
        s12.coverage95
    );
    // The mean wins over naive on white noise.
    assert!(rep.last_choice.unwrap().contains("mean"));
}

#[test]
fn calibration_widens_with_the_horizon_and_matches_gaussian_errors() {
    // Gaussian errors whose spread grows slowly with the step (sd = 1 + 0.05 s).
    let e = noise(40_000, 1.0, 4);
    let errors: Vec<Vec<f64>> = (0..20)
        .map(|s| {
            e[s * 2000..(s + 1) * 2000]
                .iter()
                .map(|v| v * (1.0 + 0.05 * s as f64))
                .collect()
        })
        .collect();
    let c = Calibration::from_errors(&errors, 0.0);
    assert!(c.sigma.windows(2).all(|w| w[1] >= w[0]));
    for step in [1usize, 10, 20] {
        let sd = 1.0 + 0.05 * (step - 1) as f64;
        let (lo, hi) = c.bounds(step, 0.0, 0.95);
        assert!(
            (hi / sd - 1.96).abs() < 0.2 && (lo / sd + 1.96).abs() < 0.2,
            "step {step}: {lo} {hi}"
        );
    }
}

#[test]
fn too_short_and_non_finite_inputs_are_precise_errors() {
    let seas = Seasonality::default();
    let err = select(&[1.0, 2.0], &seas, 5, &SelectConfig::default()).unwrap_err();
    assert_eq!(err, SelectError::TooShort { got: 2, needed: 3 });
    assert_eq!(
        err.to_string(),
        "series has 2 points; at least 3 are needed to forecast"
    );
    let err = ModelSpec::Naive.fit(&[1.0, f64::NAN, 3.0]).err().unwrap();
    assert!(
        matches!(err, ModelError::NonFinite { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("index 1"), "{err}");
    let err = ModelSpec::SeasonalNaive { period: 24 }
        .fit(&[1.0; 10])
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "seasonal_naive needs at least 24 points, got 10"
    );
}

#[test]
fn very_short_series_still_forecast_with_intervals() {
    let m = FittedAuto::select_and_fit(
        &[5.0, 6.0, 7.0],
        &Seasonality::default(),
        4,
        &SelectConfig::default(),
    )
    .unwrap();
    let mut f = Default::default();
    m.predict_into(4, Some(0.8), &mut f).unwrap();
    assert_eq!(f.point.len(), 4);
    assert!(
        f.lower
            .iter()
            .zip(&f.point)
            .zip(&f.upper)
            .all(|((l, p), u)| l <= p && p <= u)
    );
}

#[test]
fn selection_prefers_seasonal_models_on_seasonal_data_and_round_trips_through_an_artifact() {
    let y = daily(288 * 6, 288, 21);
    let seas = seasonality::detect(&y, 300);
    let m = FittedAuto::select_and_fit(&y, &seas, 288, &SelectConfig::default()).unwrap();
    let sel = m.selection().clone();
    let naive = sel
        .specs
        .iter()
        .position(|s| *s == ModelSpec::Naive)
        .unwrap();
    let long_band = sel.bands.last().unwrap();
    assert!(
        !long_band.members.contains(&naive) || long_band.members.len() > 1,
        "{}",
        sel.describe()
    );
    let mut f = Default::default();
    m.predict_into(288, Some(0.95), &mut f).unwrap();
    let truth = daily(288 * 7, 288, 21);
    let mae = f
        .point
        .iter()
        .zip(&truth[288 * 6..])
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / 288.0;
    assert!(mae < 2.0, "MAE {mae} with {}", sel.describe());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    let artifact = Artifact {
        format: aya_forecaster::artifact::FORMAT.into(),
        format_version: aya_forecaster::artifact::FORMAT_VERSION,
        created_by: "test".into(),
        training: aya_forecaster::artifact::TrainingWindow {
            series: "synthetic".into(),
            start: "2024-01-01T00:00:00Z".into(),
            end: "2024-01-07T00:00:00Z".into(),
            points: y.len(),
            interval_ms: 300_000,
        },
        horizon: 288,
        chosen: sel.describe(),
        selection: sel.clone(),
        parameters: m.params(),
        backtest: None,
    };
    artifact.save(&path).unwrap();
    let back = Artifact::load(&path).unwrap();
    assert_eq!(back.selection.bands, sel.bands);
    assert_eq!(back.selection.specs, sel.specs);
    let refit = FittedAuto::fit(&y, back.selection).unwrap();
    let mut g = Default::default();
    refit.predict_into(288, Some(0.95), &mut g).unwrap();
    assert_eq!(f.point, g.point);

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    let err = Artifact::from_json(&path, &text).unwrap_err();
    assert!(
        matches!(err, ArtifactError::Version { found: 99, .. }),
        "{err}"
    );
    let err = Artifact::from_json(&path, "{\"format\": \"other\"}").unwrap_err();
    assert!(err.to_string().contains("not an aya model file"), "{err}");
    let err = Artifact::from_json(&path, "{\n  \"format\": ").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn online_forecaster_aggregates_to_the_grid_and_forecasts_the_season() {
    let cfg = OnlineConfig {
        step_s: 60.0,
        season: Some(60),
        detect_season: false,
        ..OnlineConfig::default()
    };
    let mut f = OnlineForecaster::new(cfg);
    let mut out = DemandForecast::default();
    assert!(!f.forecast_into(0.0, 10, &mut out), "no history yet");
    let truth =
        |k: usize| 100.0 + 40.0 * (2.0 * std::f64::consts::PI * (k % 60) as f64 / 60.0).sin();
    // Two observations per minute (at :30 and :60) average into one bucket.
    for k in 1..=600usize {
        let v = truth(k);
        f.observe(k as f64 * 60.0 - 30.0, v - 1.0);
        f.observe(k as f64 * 60.0, v + 1.0);
    }
    assert_eq!(f.history().len(), 600);
    assert!((f.history()[599] - truth(600)).abs() < 1e-9);
    assert!(f.forecast_into(600.0 * 60.0, 30, &mut out));
    assert_eq!(out.mean.len(), 30);
    assert_eq!(out.step, 60.0);
    for (h, v) in out.mean.iter().enumerate() {
        assert!(
            (v - truth(601 + h)).abs() < 3.0,
            "h={h}: {v} vs {}",
            truth(601 + h)
        );
    }
    assert!(out.lower.iter().zip(&out.upper).all(|(l, u)| l <= u));
    // Deterministic: a second forecaster fed the same data says the same.
    let mut g = OnlineForecaster::new(f.config().clone());
    for k in 1..=600usize {
        g.observe(k as f64 * 60.0 - 30.0, truth(k) - 1.0);
        g.observe(k as f64 * 60.0, truth(k) + 1.0);
    }
    let mut out2 = DemandForecast::default();
    assert!(g.forecast_into(600.0 * 60.0, 30, &mut out2));
    assert_eq!(out, out2);
    // Forecasting from later than the last bucket skips the elapsed steps.
    assert!(f.forecast_into(602.0 * 60.0, 5, &mut out));
    assert!((out.mean[0] - truth(603)).abs() < 3.0);
}
