//! Exponential smoothing (ETS) with automatic component choice, from augurs
//! (`AutoETS`, the Hyndman et al. state-space search by AICc).
//!
//! augurs' AutoETS, like statsforecast's, cannot fit seasons of hundreds of
//! steps (a day at 5 minutes is 288), so a long season is removed first by
//! classical decomposition and put back on the forecasts: ETS then models the
//! level and trend of the seasonally adjusted series.

use augurs::ets::AutoETS;
use augurs::{Fit as _, Predict as _};
use serde_json::json;

use super::{Fit, Forecast, ModelError, Predict, too_short};
use crate::seasonality::{SeasonalIndices, significant_season};

/// ETS is fitted on at most this many trailing points: it is a local model
/// (older data barely moves its states), and AutoETS's optimiser cost grows
/// linearly with the length. The seasonal indices still use all the data.
pub const ETS_MAX_POINTS: usize = 1008;

/// ETS specification.
#[derive(Debug, Clone, Copy)]
pub struct Ets {
    /// Season removed before smoothing (1 = none).
    pub period: usize,
}

/// A fitted [`Ets`] model.
#[derive(Debug)]
pub struct FittedEts {
    season: Option<SeasonalIndices>,
    n: usize,
    model: augurs::ets::FittedAutoETS,
}

impl FittedEts {
    /// The ETS model type chosen by AICc, e.g. `ETS(A,Ad,N)`.
    pub fn model_type(&self) -> String {
        let m = self.model.model();
        format!(
            "{}{}",
            m.model_type(),
            if m.damped() { " damped" } else { "" }
        )
    }
}

impl Fit for Ets {
    type Fitted = FittedEts;
    fn fit(&self, y: &[f64]) -> Result<FittedEts, ModelError> {
        if y.len() < 10 {
            return Err(too_short("ets", 10, y.len()));
        }
        let season = if self.period > 1 && significant_season(y, self.period) {
            SeasonalIndices::estimate(y, self.period)
        } else {
            None
        };
        let x = match &season {
            Some(s) => s.adjust_all(y),
            None => y.to_vec(),
        };
        // Additive error, additive (possibly damped) or no trend: the
        // multiplicative variants rarely win on monitoring data and double the search.
        let x = &x[x.len().saturating_sub(ETS_MAX_POINTS)..];
        let model = AutoETS::new(1, "AZN")
            .map_err(|e| ModelError::Fit {
                model: "ets".into(),
                message: e.to_string(),
            })?
            .fit(x)
            .map_err(|e| ModelError::Fit {
                model: "ets".into(),
                message: e.to_string(),
            })?;
        Ok(FittedEts {
            season,
            n: y.len(),
            model,
        })
    }
}

impl Predict for FittedEts {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        let f = self
            .model
            .predict(horizon, None)
            .map_err(|e| ModelError::Fit {
                model: "ets".into(),
                message: e.to_string(),
            })?;
        out.point.extend(
            f.point
                .iter()
                .enumerate()
                .map(|(i, &x)| match &self.season {
                    Some(s) => s.restore(self.n + i, x),
                    None => x,
                }),
        );
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        let m = self.model.model();
        json!({
            "model": self.model_type(),
            "aicc": m.aicc(),
            "mse": m.mse(),
            "seasonal_adjustment": self.season.as_ref().map(|s| json!({
                "period": s.period(), "multiplicative": s.multiplicative })),
        })
    }
}
