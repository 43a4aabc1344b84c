//! Forecasting models behind one small interface.
//!
//! The shape follows augurs: an unfitted model ([`Fit`]) is a specification;
//! fitting it on a slice of values returns a *different* type, the fitted
//! model ([`Predict`]), which writes forecasts into a caller-owned
//! [`Forecast`] buffer so that the control loop can forecast at every tick
//! without allocating. Keeping the two types apart makes "predict before fit"
//! unrepresentable.
//!
//! [`ModelSpec`] is the serialisable catalogue of every model Aya knows; the
//! selector, the artifacts and the online forecaster all work with it.

use serde::{Deserialize, Serialize};

pub mod ets;
pub mod mstl;
pub mod naive;
pub mod regression;
pub mod theta;

pub use ets::Ets;
pub use mstl::Mstl;
pub use naive::{Drift, Mean, Naive, SeasonalNaive, SeasonalWindowAverage};
pub use regression::{Estimator, ExogRegression, LagRegression};
pub use theta::Theta;

/// Why a model could not be fitted or could not forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The series is shorter than the model needs.
    #[error("{model} needs at least {needed} points, got {got}")]
    TooShort {
        /// Model name.
        model: String,
        /// Points needed.
        needed: usize,
        /// Points given.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error("value at index {index} is not finite ({value})")]
    NonFinite {
        /// Position in the series.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The underlying estimator failed.
    #[error("{model} failed to fit: {message}")]
    Fit {
        /// Model name.
        model: String,
        /// What the estimator said.
        message: String,
    },
    /// Inputs that do not fit together (e.g. exogenous columns of the wrong length).
    #[error("{0}")]
    Invalid(String),
}

/// A forecast buffer: point forecasts and, when intervals were requested, the
/// lower and upper bounds at `level`. Models write `point` only; the
/// interval calibration ([`crate::intervals`]) fills `lower`/`upper`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Point forecast per step.
    pub point: Vec<f64>,
    /// Lower bound per step (empty when no interval was computed).
    pub lower: Vec<f64>,
    /// Upper bound per step (empty when no interval was computed).
    pub upper: Vec<f64>,
    /// Interval level (e.g. 0.95) when `lower`/`upper` are filled.
    pub level: Option<f64>,
}

impl Forecast {
    /// An empty forecast with room for `horizon` steps.
    pub fn with_capacity(horizon: usize) -> Self {
        Forecast {
            point: Vec::with_capacity(horizon),
            lower: Vec::with_capacity(horizon),
            upper: Vec::with_capacity(horizon),
            level: None,
        }
    }

    /// Clear every buffer, keeping allocations.
    pub fn clear(&mut self) {
        self.point.clear();
        self.lower.clear();
        self.upper.clear();
        self.level = None;
    }
}

/// An unfitted model: a specification that can be fitted to a series.
pub trait Fit {
    /// The fitted model.
    type Fitted: Predict;
    /// Fit on `y` (regular grid, oldest first, all finite).
    fn fit(&self, y: &[f64]) -> Result<Self::Fitted, ModelError>;
}

/// A fitted model that forecasts the steps after the end of its training data.
pub trait Predict {
    /// Write the point forecasts of the next `horizon` steps into `out`
    /// (cleared first; intervals are left empty).
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError>;

    /// Allocating convenience around [`Predict::predict_into`].
    fn predict(&self, horizon: usize) -> Result<Forecast, ModelError> {
        let mut f = Forecast::with_capacity(horizon);
        self.predict_into(horizon, &mut f)?;
        Ok(f)
    }

    /// Fitted parameters, for artifacts and reports.
    fn params(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

impl<P: Predict + ?Sized> Predict for Box<P> {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        (**self).predict_into(horizon, out)
    }
    fn params(&self) -> serde_json::Value {
        (**self).params()
    }
}

/// A fitted model of any kind.
pub type BoxedFitted = Box<dyn Predict + Send + Sync>;

/// Check that every value is finite (models are fitted on regular, gap-filled series).
pub fn check_finite(y: &[f64]) -> Result<(), ModelError> {
    match y.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(ModelError::NonFinite {
            index,
            value: y[index],
        }),
        None => Ok(()),
    }
}

pub(crate) fn too_short(model: &str, needed: usize, got: usize) -> ModelError {
    ModelError::TooShort {
        model: model.to_string(),
        needed,
        got,
    }
}

/// Every model Aya can fit, as serialisable data (what artifacts record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Mean of the last `window` values (the last resort for very short series).
    Mean {
        /// How many trailing values to average (0 = all).
        window: usize,
    },
    /// Last value repeated.
    Naive,
    /// Last value plus the average historical slope.
    Drift,
    /// Value one season ago.
    SeasonalNaive {
        /// Season length in steps.
        period: usize,
    },
    /// Mean of the same phase over the last `seasons` seasons.
    SeasonalWindowAverage {
        /// Season length in steps.
        period: usize,
        /// How many past seasons to average.
        seasons: usize,
    },
    /// Exponential smoothing with automatic components (augurs AutoETS) on the
    /// seasonally adjusted series when `period` > 1.
    Ets {
        /// Season removed by classical decomposition before smoothing (1 = none).
        period: usize,
    },
    /// MSTL decomposition (augurs) with an AutoETS trend.
    Mstl {
        /// Season lengths, ascending.
        periods: Vec<usize>,
    },
    /// Theta method on the seasonally adjusted series.
    Theta {
        /// Season length (1 = non-seasonal).
        period: usize,
        /// Theta coefficient (2 = standard Theta method).
        theta: f64,
    },
    /// Regression on lags and calendar (Fourier) terms, forecast recursively.
    LagRegression {
        /// Lags in steps.
        lags: Vec<usize>,
        /// Season for the Fourier terms (1 = none).
        period: usize,
        /// Fourier pairs.
        fourier: usize,
        /// Estimator.
        estimator: Estimator,
        /// Train on at most this many trailing rows (0 = all).
        max_rows: usize,
    },
}

impl ModelSpec {
    /// A short stable name, used in tables and CSV output.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Mean { .. } => "mean".into(),
            ModelSpec::Naive => "naive".into(),
            ModelSpec::Drift => "drift".into(),
            ModelSpec::SeasonalNaive { .. } => "seasonal_naive".into(),
            ModelSpec::SeasonalWindowAverage { .. } => "seasonal_window_average".into(),
            ModelSpec::Ets { period } if *period > 1 => "ets_deseasonalised".into(),
            ModelSpec::Ets { .. } => "ets".into(),
            ModelSpec::Mstl { .. } => "mstl_ets".into(),
            ModelSpec::Theta { .. } => "theta".into(),
            ModelSpec::LagRegression {
                estimator: Estimator::Linear,
                ..
            } => "lag_linear".into(),
            ModelSpec::LagRegression {
                estimator: Estimator::RandomForest { .. },
                ..
            } => "lag_forest".into(),
        }
    }

    /// The fewest points this model can be fitted on.
    pub fn min_len(&self) -> usize {
        match self {
            ModelSpec::Mean { .. } | ModelSpec::Naive => 1,
            ModelSpec::Drift => 2,
            ModelSpec::SeasonalNaive { period } => *period,
            ModelSpec::SeasonalWindowAverage { period, .. } => *period,
            ModelSpec::Ets { period } => {
                if *period > 1 {
                    2 * period
                } else {
                    10
                }
            }
            ModelSpec::Mstl { periods } => 2 * periods.iter().copied().min().unwrap_or(1) + 1,
            ModelSpec::Theta { period, .. } => (2 * period).max(4),
            ModelSpec::LagRegression { lags, .. } => {
                let max_lag = lags.iter().copied().max().unwrap_or(1);
                max_lag + 3 * (lags.len() + 2)
            }
        }
    }

    /// Fit this model on `y`.
    pub fn fit(&self, y: &[f64]) -> Result<BoxedFitted, ModelError> {
        check_finite(y)?;
        if y.len() < self.min_len() {
            return Err(too_short(&self.name(), self.min_len(), y.len()));
        }
        Ok(match self {
            ModelSpec::Mean { window } => Box::new(Mean { window: *window }.fit(y)?),
            ModelSpec::Naive => Box::new(Naive.fit(y)?),
            ModelSpec::Drift => Box::new(Drift.fit(y)?),
            ModelSpec::SeasonalNaive { period } => {
                Box::new(SeasonalNaive { period: *period }.fit(y)?)
            }
            ModelSpec::SeasonalWindowAverage { period, seasons } => Box::new(
                SeasonalWindowAverage {
                    period: *period,
                    seasons: *seasons,
                }
                .fit(y)?,
            ),
            ModelSpec::Ets { period } => Box::new(Ets { period: *period }.fit(y)?),
            ModelSpec::Mstl { periods } => Box::new(
                Mstl {
                    periods: periods.clone(),
                }
                .fit(y)?,
            ),
            ModelSpec::Theta { period, theta } => Box::new(
                Theta {
                    period: *period,
                    theta: *theta,
                }
                .fit(y)?,
            ),
            ModelSpec::LagRegression {
                lags,
                period,
                fourier,
                estimator,
                max_rows,
            } => Box::new(
                LagRegression {
                    lags: lags.clone(),
                    period: *period,
                    fourier: *fourier,
                    estimator: estimator.clone(),
                    max_rows: *max_rows,
                }
                .fit(y)?,
            ),
        })
    }
}
