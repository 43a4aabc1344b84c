//! Exponential smoothing (ETS) with automatic component choice, from augurs
//! (the Hyndman et al. state-space models, fitted by maximum likelihood with
//! augurs' Nelder–Mead, chosen by AICc).
//!
//! augurs' AutoETS, like statsforecast's, cannot fit seasons of hundreds of
//! steps (a day at 5 minutes is 288), so a long season is removed first by
//! classical decomposition and put back on the forecasts: ETS then models the
//! level and trend of the seasonally adjusted series.
//!
//! Speed: selection refits ETS at every validation origin, so the search is
//! bounded. Only the two additive-error forms that matter on monitoring data
//! are fitted — `ETS(A,N,N)` (local level) and `ETS(A,Ad,N)` (damped local
//! trend; the undamped `A,A,N` extrapolates level shifts for ever and rarely
//! wins out of sample) — each with at most [`ETS_MAX_ITER`] optimiser
//! iterations, on at most the last [`ETS_MAX_POINTS`] points. That is
//! about 2 ms per fit instead of 7–20 ms for the full `AZN` AutoETS search.

use augurs::Predict as _;
use augurs::ets::model::{
    ErrorComponent, Model, ModelType, SeasonalComponent, TrendComponent, Unfit,
};
use serde_json::json;

use super::{Fit, Forecast, ModelError, Predict, too_short};
use crate::seasonality::{SeasonalIndices, significant_season};

/// ETS is fitted on at most this many trailing points: it is a local model
/// (older data barely moves its states), and the optimiser's cost grows
/// linearly with the length. The seasonal indices still use all the data.
pub const ETS_MAX_POINTS: usize = 576;

/// Most Nelder–Mead iterations per ETS form.
pub const ETS_MAX_ITER: usize = 150;

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
    model: Model,
}

impl FittedEts {
    /// The ETS model type chosen by AICc, e.g. `ANN` or `AAN damped`.
    pub fn model_type(&self) -> String {
        format!(
            "{}{}",
            self.model.model_type(),
            if self.model.damped() { " damped" } else { "" }
        )
    }
}

fn fit_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Fit {
        model: "ets".into(),
        message: e.to_string(),
    }
}

/// Fit `ETS(A,N,N)` and `ETS(A,Ad,N)` on `x` and keep the one with the lower AICc.
pub(crate) fn fit_local(x: &[f64]) -> Result<Model, ModelError> {
    let forms = [
        (TrendComponent::None, false),
        (TrendComponent::Additive, true),
    ];
    let mut best: Option<Model> = None;
    let mut last_err = None;
    for (trend, damped) in forms {
        let fitted = Unfit::new(ModelType {
            error: ErrorComponent::Additive,
            trend,
            season: SeasonalComponent::None,
        })
        .damped(damped)
        .max_iterations(ETS_MAX_ITER)
        .fit(x);
        match fitted {
            Ok(m) if m.aicc().is_finite() => {
                if best.as_ref().is_none_or(|b| m.aicc() < b.aicc()) {
                    best = Some(m);
                }
            }
            Ok(_) => last_err = Some("non-finite AICc".to_string()),
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    best.ok_or_else(|| fit_err(last_err.unwrap_or_else(|| "no ETS form could be fitted".into())))
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
        let x = &x[x.len().saturating_sub(ETS_MAX_POINTS)..];
        let model = fit_local(x)?;
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
        let f = self.model.predict(horizon, None).map_err(fit_err)?;
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
        json!({
            "model": self.model_type(),
            "aicc": self.model.aicc(),
            "mse": self.model.mse(),
            "seasonal_adjustment": self.season.as_ref().map(|s| json!({
                "period": s.period(), "multiplicative": s.multiplicative })),
        })
    }
}

/// The bounded ETS search as an MSTL trend model: fits the last
/// [`ETS_MAX_POINTS`] points of the deseasonalised series.
#[derive(Debug, Clone, Copy, Default)]
pub struct EtsTrend;

#[derive(Debug)]
struct FittedEtsTrend {
    model: Model,
    n: usize,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl augurs::mstl::TrendModel for EtsTrend {
    fn name(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed("ETS(A,{N,Ad},N)")
    }

    fn fit(
        &self,
        y: &[f64],
    ) -> Result<Box<dyn augurs::mstl::FittedTrendModel + Sync + Send>, BoxError> {
        let x = &y[y.len().saturating_sub(ETS_MAX_POINTS)..];
        let model = fit_local(x)?;
        Ok(Box::new(FittedEtsTrend { model, n: y.len() }))
    }
}

impl augurs::mstl::FittedTrendModel for FittedEtsTrend {
    fn predict_inplace(
        &self,
        horizon: usize,
        level: Option<f64>,
        forecast: &mut augurs::Forecast,
    ) -> Result<(), BoxError> {
        self.model
            .predict_inplace(horizon, level, forecast)
            .map_err(Into::into)
    }

    fn predict_in_sample_inplace(
        &self,
        level: Option<f64>,
        forecast: &mut augurs::Forecast,
    ) -> Result<(), BoxError> {
        // In-sample values exist only for the fitted tail: pad the start
        // with the first fitted value so the length matches the series.
        self.model.predict_in_sample_inplace(level, forecast)?;
        let missing = self.n.saturating_sub(forecast.point.len());
        if missing > 0 {
            let first = forecast.point.first().copied().unwrap_or(0.0);
            forecast
                .point
                .splice(0..0, std::iter::repeat_n(first, missing));
            if let Some(iv) = forecast.intervals.as_mut() {
                let lo = iv.lower.first().copied().unwrap_or(first);
                let hi = iv.upper.first().copied().unwrap_or(first);
                iv.lower.splice(0..0, std::iter::repeat_n(lo, missing));
                iv.upper.splice(0..0, std::iter::repeat_n(hi, missing));
            }
        }
        Ok(())
    }

    fn training_data_size(&self) -> Option<usize> {
        Some(self.n)
    }
}
