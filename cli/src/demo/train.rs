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

use aya_forecaster::backtest::{coverage, mase, mase_scale, smape};
use aya_forecaster::models::{Forecast, ModelSpec};
use aya_forecaster::seasonality::{self, Seasonality};
use aya_forecaster::select::{FittedAuto, SelectConfig, Selection, default_candidates, select};
use aya_policy::{DemandForecast, DemandForecaster, Time};

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

/// The trained selection as the decision engine's [`DemandForecaster`], for
/// the simulator's virtual time.
///
/// The simulator calls `observe` every control tick with the demand of the
/// last window; this averages those into buckets of one forecast step
/// (virtual seconds) and appends each full bucket to the training history.
/// The selected models are refitted on the extended history every
/// `refit_every` buckets (as the service retrains on a schedule); between
/// refits the last fit forecasts further ahead and the steps already past are
/// dropped, so every forecast starts at the next bucket.
pub struct SelectionForecaster {
    selection: Selection,
    history: Vec<f64>,
    fitted: Option<FittedAuto>,
    /// Buckets appended since the last fit.
    since_fit: usize,
    refit_every: usize,
    step: f64,
    level: f64,
    bucket_start: Option<Time>,
    bucket_sum: f64,
    bucket_n: u32,
    scratch: Forecast,
}

impl SelectionForecaster {
    /// Start from `history` (demand per step, oldest first) with `selection`;
    /// one step lasts `step` virtual seconds.
    pub fn new(
        selection: Selection,
        history: &[f64],
        step: f64,
        refit_every: usize,
    ) -> SelectionForecaster {
        let history = tail(history, MAX_TRAIN).to_vec();
        let fitted = FittedAuto::fit(&history, selection.clone()).ok();
        SelectionForecaster {
            selection,
            history,
            fitted,
            since_fit: 0,
            refit_every: refit_every.max(1),
            step,
            level: 0.95,
            bucket_start: None,
            bucket_sum: 0.0,
            bucket_n: 0,
            scratch: Forecast::default(),
        }
    }
}

impl DemandForecaster for SelectionForecaster {
    fn observe(&mut self, t: Time, demand_rps: f64) {
        if !demand_rps.is_finite() || demand_rps < 0.0 {
            return;
        }
        let start = *self.bucket_start.get_or_insert(t);
        if t - start >= self.step && self.bucket_n > 0 {
            self.history
                .push(self.bucket_sum / f64::from(self.bucket_n));
            if self.history.len() > 2 * MAX_TRAIN {
                self.history.drain(..self.history.len() - MAX_TRAIN);
            }
            self.since_fit += 1;
            self.bucket_start = Some(start + self.step * ((t - start) / self.step).floor());
            self.bucket_sum = 0.0;
            self.bucket_n = 0;
            if self.since_fit >= self.refit_every
                && let Ok(f) = FittedAuto::fit(&self.history, self.selection.clone())
            {
                self.fitted = Some(f);
                self.since_fit = 0;
            }
        }
        self.bucket_sum += demand_rps;
        self.bucket_n += 1;
    }

    fn forecast_into(&mut self, now: Time, horizon: usize, out: &mut DemandForecast) -> bool {
        out.clear();
        let Some(fitted) = &self.fitted else {
            return false;
        };
        let skip = self.since_fit;
        if fitted
            .predict_into(skip + horizon, Some(self.level), &mut self.scratch)
            .is_err()
        {
            return false;
        }
        out.issued_at = now;
        out.step = self.step;
        out.level = self.level;
        out.mean
            .extend_from_slice(&self.scratch.point[skip.min(self.scratch.point.len())..]);
        out.lower
            .extend_from_slice(&self.scratch.lower[skip.min(self.scratch.lower.len())..]);
        out.upper
            .extend_from_slice(&self.scratch.upper[skip.min(self.scratch.upper.len())..]);
        !out.mean.is_empty()
    }

    fn step(&self) -> f64 {
        self.step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + 50.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin())
            .collect()
    }

    #[test]
    fn selection_forecaster_forecasts_from_the_next_bucket() {
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
        let mut f = SelectionForecaster::new(sel, &y, 10.0, 1000);
        let mut out = DemandForecast::default();
        assert!(f.forecast_into(0.0, 12, &mut out));
        assert_eq!(out.mean.len(), 12);
        let first = out.mean[0];
        // Two full buckets later the forecast has moved on by two steps.
        for k in 0..=20 {
            f.observe(f64::from(k), y[k as usize % y.len()]);
        }
        assert!(f.forecast_into(20.0, 12, &mut out));
        assert_eq!(out.mean.len(), 12);
        assert!(out.mean.iter().zip(&out.upper).all(|(m, u)| u >= m));
        assert_ne!(out.mean[0], first);
        assert_eq!(f.step(), 10.0);
    }

    #[test]
    fn bad_observations_are_ignored() {
        let y = daily(288 * 2);
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
        let mut f = SelectionForecaster::new(sel, &y, 10.0, 1);
        f.observe(0.0, f64::NAN);
        f.observe(1.0, -5.0);
        assert_eq!(f.bucket_n, 0);
    }
}
