//! The demand forecaster each cluster's control loop runs, wrapped so the
//! service can read the latest forecast (for the `GetForecast` RPC) and score
//! it (one-step-ahead absolute error, exported on `/metrics`).
//!
//! The forecaster is shared (`Arc<Mutex<..>>`) so rebuilding a cluster's
//! control loop after an admin change keeps its learnt history, and so the
//! background retrain (`crate::state::Controller::retrain_cluster`) can read
//! its selection and install a better one between ticks.

use std::sync::{Arc, Mutex};

use aya_forecaster::online::{OnlineConfig, OnlineForecaster};
use aya_policy::{DemandForecast, DemandForecaster, Time};

/// The latest forecast and its running error.
#[derive(Debug, Clone, Default)]
pub struct ForecastRecord {
    /// Latest forecast issued (empty `mean` before the first).
    pub last: DemandForecast,
    /// True once a forecast has been issued.
    pub have: bool,
    /// Sum of absolute one-step-ahead errors.
    pub abs_err_sum: f64,
    /// Number of errors summed.
    pub n: u64,
}

impl ForecastRecord {
    /// Mean absolute one-step error, NaN before any.
    pub fn mae(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.abs_err_sum / self.n as f64
        }
    }
}

/// A forecaster shared between rebuilds of a control loop.
pub type SharedForecaster = Arc<Mutex<OnlineForecaster>>;

/// Forwards to the shared forecaster and records what it forecasts.
pub struct Recording {
    /// The forecaster.
    pub inner: SharedForecaster,
    /// What it forecast last.
    pub record: Arc<Mutex<ForecastRecord>>,
}

impl DemandForecaster for Recording {
    fn observe(&mut self, t: Time, demand_rps: f64) {
        if !demand_rps.is_finite() {
            return; // unknown demand: nothing to score or learn
        }
        {
            let mut rec = self.record.lock().unwrap_or_else(|p| p.into_inner());
            let step = rec.last.step;
            let first = rec.last.mean.first().copied().filter(|m| m.is_finite());
            if let (true, Some(m)) = (rec.have && step > 0.0, first) {
                // Score the forecast made one step before this observation.
                if (t - (rec.last.issued_at + step)).abs() <= step * 0.5 {
                    rec.abs_err_sum += (m - demand_rps).abs();
                    rec.n += 1;
                }
            }
        }
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(t, demand_rps);
    }

    fn forecast_into(&mut self, now: Time, horizon: usize, out: &mut DemandForecast) -> bool {
        let ok = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forecast_into(now, horizon, out);
        if ok {
            let mut rec = self.record.lock().unwrap_or_else(|p| p.into_inner());
            rec.last.clone_from(out);
            rec.have = true;
        }
        ok
    }

    fn step(&self) -> f64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).step()
    }
}

/// The forecaster configuration of the service: the forecaster crate's
/// [`OnlineForecaster`] on a grid of `step` seconds. With
/// `background_retrain`, periodic model selection leaves the tick and is done
/// by the guarded background retrain; without, it re-runs inline on the
/// forecaster's own schedule (exactly the simulator's `online` forecaster).
/// `None` when `step == 0` (forecasting disabled: the policies then use their
/// reactive rules only).
pub fn online_config(step: f64, background_retrain: bool) -> Option<OnlineConfig> {
    (step.is_finite() && step > 0.0).then(|| OnlineConfig {
        step_s: step,
        inline_reselect: !background_retrain,
        ..OnlineConfig::default()
    })
}

/// The forecaster a new cluster starts with (see [`online_config`]).
pub fn build(step: f64, background_retrain: bool) -> Option<OnlineForecaster> {
    online_config(step, background_retrain).map(OnlineForecaster::new)
}
