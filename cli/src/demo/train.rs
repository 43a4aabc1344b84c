//! Training and selecting the demand forecaster on the history, and scoring
//! it on the held-out test period.
//!
//! Selection (`aya_forecaster::select`) sees only the training period: it
//! backtests every candidate at rolling origins at the end of the training
//! data and picks a model (or a small ensemble) per horizon band. The demo
//! then does what a user would do to trust it: fit every candidate on the
//! training period, forecast the whole unseen test period, and compare them
//! with the selection's forecast (MASE against in-sample seasonal naive, one
//! day season) and check interval coverage.

use aya_controller::config::Config as ServiceConfig;
use aya_forecaster::backtest::{coverage, mase, mase_scale, smape};
use aya_forecaster::models::{Forecast, ModelSpec};
use aya_forecaster::online::OnlineForecaster;
use aya_forecaster::seasonality::{self, Seasonality};
use aya_forecaster::select::{FittedAuto, SelectConfig, Selection, default_candidates, select};

use super::DemoError;
use super::history::History;
use super::plan::Plan;
use super::scoreboard::{ForecastBoard, ForecastRow};

/// Models are fitted on at most this many trailing points (two weeks at 5 min).
const MAX_TRAIN: usize = 4032;

/// What training produced.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The selection (what to fit, how to combine, interval calibration).
    pub selection: Selection,
    /// Detected seasonality of the demand.
    pub seasonality: Seasonality,
    /// Point forecast of the test period from the end of training.
    pub point: Vec<f64>,
    /// 80% interval.
    pub band80: (Vec<f64>, Vec<f64>),
    /// 95% interval.
    pub band95: (Vec<f64>, Vec<f64>),
    /// The scoreboard's forecasting part.
    pub board: ForecastBoard,
}

/// Progress hooks: `start(total)` once, then `step(message)` per unit of work.
pub trait Steps {
    /// Total units of work.
    fn start(&self, total: u64);
    /// One unit done; `msg` says what is running next.
    fn step(&self, msg: &str);
}

/// A candidate's name, with the parameter that tells variants apart.
fn model_name(spec: &ModelSpec) -> String {
    match spec {
        ModelSpec::Theta { theta, .. } => format!("theta(θ={theta})"),
        other => other.name(),
    }
}

fn tail(y: &[f64], n: usize) -> &[f64] {
    if y.len() > n { &y[y.len() - n..] } else { y }
}

/// Train, select and score on `history`.
pub fn train(history: &History, plan: &Plan, steps: &dyn Steps) -> Result<Trained, DemoError> {
    let y = &history.train_demand;
    let test = &history.test_demand;
    let h = test.len();
    let step = i64::from(history.demand_step_secs);
    let day = (86_400 / history.demand_step_secs) as usize;
    let seas = seasonality::detect(y, step);
    let specs = default_candidates(&seas, y.len());
    steps.start(specs.len() as u64 + 2);
    let scale = mase_scale(y, day);
    let train = tail(y, MAX_TRAIN);
    let mut rows = Vec::new();
    for spec in &specs {
        let name = model_name(spec);
        steps.step(&format!("fitting {name}"));
        // A candidate that cannot fit this series is left out of the table,
        // as selection leaves it out of the choice.
        let Ok(fitted) = spec.fit(train) else {
            continue;
        };
        let Ok(fc) = fitted.predict(h) else { continue };
        rows.push(ForecastRow {
            model: name,
            mase: mase(test, &fc.point, scale),
            smape: smape(test, &fc.point),
        });
    }
    steps.step("selecting by rolling-origin backtest");
    let cfg = SelectConfig {
        origins: plan.origins,
        max_train: MAX_TRAIN,
        ..SelectConfig::default()
    };
    let selection = select(y, &seas, h, &cfg).map_err(|e| DemoError::Train(e.to_string()))?;
    steps.step("fitting the selection");
    let fitted =
        FittedAuto::fit(y, selection.clone()).map_err(|e| DemoError::Train(e.to_string()))?;
    let mut fc = Forecast::default();
    fitted
        .predict_into(h, Some(0.8), &mut fc)
        .map_err(|e| DemoError::Train(e.to_string()))?;
    let band80 = (fc.lower.clone(), fc.upper.clone());
    let band95 = fitted.bounds(&fc.point, 0.95);
    rows.push(ForecastRow {
        model: "aya (selected)".into(),
        mase: mase(test, &fc.point, scale),
        smape: smape(test, &fc.point),
    });
    rows.sort_by(|a, b| {
        a.mase
            .total_cmp(&b.mase)
            .then_with(|| a.model.cmp(&b.model))
    });
    let board = ForecastBoard {
        selected: selection.describe(),
        train_points: y.len(),
        step_secs: history.demand_step_secs,
        horizon: h,
        coverage_80: coverage(test, &band80.0, &band80.1),
        coverage_95: coverage(test, &band95.0, &band95.1),
        rows,
    };
    Ok(Trained {
        selection,
        seasonality: seas,
        point: fc.point,
        band80,
        band95,
        board,
    })
}

/// The forecaster `aya serve` runs for a cluster
/// ([`aya_controller::forecasting::build`], with the service's default
/// configuration: background retrain on, so the installed models stay until a
/// retrain replaces them), started as the service starts one after a restart
/// ([`aya_controller`]'s restore): the training period laid on the forecast
/// grid as its stored demand history, ending at virtual time 0 where the
/// replay starts, and the trained selection installed as the stored model.
/// One grid step lasts `step` virtual seconds. `None` when `step` is not a
/// positive number of seconds (the service would not forecast either).
pub fn service_forecaster(
    selection: &Selection,
    history: &[f64],
    step: f64,
) -> Option<OnlineForecaster> {
    let background_retrain = ServiceConfig::default().retrain_interval_seconds > 0.0;
    let mut f = aya_controller::forecasting::build(step, background_retrain)?;
    f.observe_history(history, 0.0);
    f.install(selection.clone());
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_policy::{DemandForecast, DemandForecaster};

    fn daily(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + 50.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin())
            .collect()
    }

    #[test]
    fn the_service_forecaster_starts_from_the_history_and_the_selection() {
        let y = daily(288 * 3);
        let sel = select(
            &y,
            &seasonality::detect(&y, 300),
            12,
            &SelectConfig {
                origins: 2,
                ..SelectConfig::default()
            },
        )
        .unwrap();
        let mut f = service_forecaster(&sel, &y, 10.0).unwrap();
        assert_eq!(f.history().len(), y.len());
        // (Selections hold NaN scores of failed candidates: compare what they choose.)
        assert_eq!(f.selection().map(Selection::describe), Some(sel.describe()));
        assert!(
            !f.config().inline_reselect,
            "the service retrains in the background"
        );
        let mut out = DemandForecast::default();
        assert!(f.forecast_into(0.0, 12, &mut out));
        assert_eq!(out.mean.len(), 12);
        assert_eq!(out.step, 10.0);
        let first = out.mean[0];
        // Two full buckets later the forecast has moved on by two steps.
        for k in 1..=20 {
            f.observe(f64::from(k), y[k as usize % y.len()]);
        }
        assert!(f.forecast_into(20.0, 12, &mut out));
        assert_eq!(out.mean.len(), 12);
        assert!(out.mean.iter().zip(&out.upper).all(|(m, u)| u >= m));
        assert_ne!(out.mean[0], first);
        assert_eq!(f.step(), 10.0);
        assert!(service_forecaster(&sel, &y, 0.0).is_none());
    }
}
