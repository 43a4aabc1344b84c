//! Regression models: a series explained by its own lags and calendar terms
//! ([`LagRegression`], forecast recursively), or by other series
//! ([`ExogRegression`], e.g. CPU utilisation from request rate).
//!
//! Two estimators: ordinary least squares from linfa-linear (fast,
//! interpretable coefficients) and a random forest from smartcore (captures
//! thresholds and saturation, slower). Calendar terms are Fourier pairs of the
//! phase within the season, so a daily profile costs a handful of columns.

use std::f64::consts::PI;

use linfa::Dataset;
use linfa::traits::Fit as _;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use serde_json::json;
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::{Fit, Forecast, ModelError, Predict, check_finite, too_short};

/// Which estimator a regression model uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Estimator {
    /// Ordinary least squares with intercept (linfa-linear).
    Linear,
    /// Random forest (smartcore), seeded.
    RandomForest {
        /// Number of trees.
        trees: usize,
        /// Maximum depth.
        max_depth: u16,
        /// Seed of the bootstrap and feature sampling.
        seed: u64,
    },
}

/// A fitted estimator: predicts one row of features.
enum FittedEstimator {
    Linear { coef: Vec<f64>, intercept: f64 },
    Forest(Box<RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>>),
}

impl FittedEstimator {
    fn fit(est: &Estimator, rows: &[Vec<f64>], target: &[f64]) -> Result<Self, ModelError> {
        let width = rows.first().map_or(0, Vec::len);
        match est {
            Estimator::Linear => {
                let flat: Vec<f64> = rows.iter().flatten().copied().collect();
                let x = Array2::from_shape_vec((rows.len(), width), flat)
                    .map_err(|e| ModelError::Invalid(e.to_string()))?;
                let ds = Dataset::new(x, Array1::from_vec(target.to_vec()));
                let fitted = LinearRegression::new()
                    .fit(&ds)
                    .map_err(|e| ModelError::Fit {
                        model: "linear regression".into(),
                        message: e.to_string(),
                    })?;
                let coef = fitted.params().to_vec();
                let intercept = fitted.intercept();
                if !intercept.is_finite() || coef.iter().any(|c| !c.is_finite()) {
                    return Err(ModelError::Fit {
                        model: "linear regression".into(),
                        message: "least squares gave non-finite coefficients".into(),
                    });
                }
                Ok(FittedEstimator::Linear { coef, intercept })
            }
            Estimator::RandomForest {
                trees,
                max_depth,
                seed,
            } => {
                let x = DenseMatrix::from_2d_vec(&rows.to_vec()).map_err(|e| ModelError::Fit {
                    model: "random forest".into(),
                    message: e.to_string(),
                })?;
                let params = RandomForestRegressorParameters::default()
                    .with_n_trees(*trees)
                    .with_max_depth(*max_depth)
                    .with_min_samples_leaf(3)
                    .with_seed(*seed);
                let forest =
                    RandomForestRegressor::fit(&x, &target.to_vec(), params).map_err(|e| {
                        ModelError::Fit {
                            model: "random forest".into(),
                            message: e.to_string(),
                        }
                    })?;
                Ok(FittedEstimator::Forest(Box::new(forest)))
            }
        }
    }

    fn predict_row(&self, row: &[f64]) -> Result<f64, ModelError> {
        match self {
            FittedEstimator::Linear { coef, intercept } => {
                Ok(intercept + coef.iter().zip(row).map(|(c, x)| c * x).sum::<f64>())
            }
            FittedEstimator::Forest(f) => {
                let x = DenseMatrix::from_2d_vec(&vec![row.to_vec()])
                    .map_err(|e| ModelError::Invalid(format!("random forest input: {e}")))?;
                let y = f
                    .predict(&x)
                    .map_err(|e| ModelError::Invalid(e.to_string()))?;
                y.first()
                    .copied()
                    .ok_or_else(|| ModelError::Invalid("empty prediction".into()))
            }
        }
    }

    fn describe(&self) -> serde_json::Value {
        match self {
            FittedEstimator::Linear { coef, intercept } => {
                json!({ "estimator": "linear", "intercept": intercept, "coefficients": coef })
            }
            FittedEstimator::Forest(_) => json!({ "estimator": "random_forest" }),
        }
    }
}

fn push_fourier(row: &mut Vec<f64>, t: usize, period: usize, k: usize) {
    if period > 1 {
        let phase = (t % period) as f64 / period as f64;
        for j in 1..=k {
            let a = 2.0 * PI * j as f64 * phase;
            row.push(a.sin());
            row.push(a.cos());
        }
    }
}

/// Regression of `y[t]` on `y[t - lag]` for each lag and Fourier terms of the
/// phase `t mod period`; multi-step forecasts feed predictions back as lags.
#[derive(Debug, Clone)]
pub struct LagRegression {
    /// Lags in steps (each ≥ 1).
    pub lags: Vec<usize>,
    /// Season of the calendar terms (1 = none).
    pub period: usize,
    /// Fourier pairs.
    pub fourier: usize,
    /// Estimator.
    pub estimator: Estimator,
    /// Use at most this many trailing rows (0 = all).
    pub max_rows: usize,
}

/// A fitted [`LagRegression`].
pub struct FittedLagRegression {
    spec: LagRegression,
    history: Vec<f64>,
    n: usize,
    estimator: FittedEstimator,
}

impl std::fmt::Debug for FittedLagRegression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FittedLagRegression")
            .field("lags", &self.spec.lags)
            .finish_non_exhaustive()
    }
}

impl FittedLagRegression {
    /// Intercept and coefficients (lags first, then Fourier sin/cos pairs), linear estimator only.
    pub fn coefficients(&self) -> Option<(f64, &[f64])> {
        match &self.estimator {
            FittedEstimator::Linear { coef, intercept } => Some((*intercept, coef)),
            FittedEstimator::Forest(_) => None,
        }
    }
}

impl LagRegression {
    fn row(&self, buf: &[f64], t: usize, row: &mut Vec<f64>) {
        row.clear();
        for &l in &self.lags {
            row.push(buf[t - l]);
        }
        push_fourier(row, t, self.period, self.fourier);
    }
}

impl Fit for LagRegression {
    type Fitted = FittedLagRegression;
    fn fit(&self, y: &[f64]) -> Result<FittedLagRegression, ModelError> {
        check_finite(y)?;
        if self.lags.is_empty() || self.lags.contains(&0) {
            return Err(ModelError::Invalid("lag regression needs lags >= 1".into()));
        }
        let max_lag = self.lags.iter().copied().max().unwrap_or(1);
        let width = self.lags.len() + 2 * self.fourier * usize::from(self.period > 1);
        let needed = max_lag + 3 * (width + 1);
        if y.len() < needed {
            return Err(too_short("lag regression", needed, y.len()));
        }
        let mut start = max_lag;
        if self.max_rows > 0 && y.len() - start > self.max_rows {
            start = y.len() - self.max_rows;
        }
        let mut rows = Vec::with_capacity(y.len() - start);
        for t in start..y.len() {
            let mut row = Vec::with_capacity(width);
            self.row(y, t, &mut row);
            rows.push(row);
        }
        let estimator = FittedEstimator::fit(&self.estimator, &rows, &y[start..])?;
        let keep = y.len().min(max_lag);
        Ok(FittedLagRegression {
            spec: self.clone(),
            history: y[y.len() - keep..].to_vec(),
            n: y.len(),
            estimator,
        })
    }
}

impl Predict for FittedLagRegression {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        // buf index i corresponds to time n - history.len() + i; the Fourier
        // phase needs absolute time, so keep an offset.
        let offset = self.n - self.history.len();
        let mut buf = Vec::with_capacity(self.history.len() + horizon);
        buf.extend_from_slice(&self.history);
        let mut row = Vec::new();
        for _ in 0..horizon {
            let i = buf.len();
            row.clear();
            for &l in &self.spec.lags {
                row.push(buf[i - l]);
            }
            push_fourier(&mut row, offset + i, self.spec.period, self.spec.fourier);
            let v = self.estimator.predict_row(&row)?;
            buf.push(v);
            out.point.push(v);
        }
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "lags": self.spec.lags, "period": self.spec.period,
                "fourier": self.spec.fourier, "fit": self.estimator.describe() })
    }
}

/// Regression of a series on exogenous series measured at the same times
/// (e.g. CPU from request rate), optionally with Fourier calendar terms.
#[derive(Debug, Clone)]
pub struct ExogRegression {
    /// Season of the calendar terms (1 = none).
    pub period: usize,
    /// Fourier pairs.
    pub fourier: usize,
    /// Estimator.
    pub estimator: Estimator,
}

/// A fitted [`ExogRegression`].
pub struct FittedExogRegression {
    spec: ExogRegression,
    columns: usize,
    estimator: FittedEstimator,
}

impl std::fmt::Debug for FittedExogRegression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FittedExogRegression")
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl ExogRegression {
    /// Fit `y[t] ~ exog[0][t], exog[1][t], ..., calendar(t)`. `exog` holds columns.
    pub fn fit(&self, y: &[f64], exog: &[Vec<f64>]) -> Result<FittedExogRegression, ModelError> {
        check_finite(y)?;
        if exog.is_empty() {
            return Err(ModelError::Invalid(
                "exogenous regression needs at least one column".into(),
            ));
        }
        for (j, col) in exog.iter().enumerate() {
            if col.len() != y.len() {
                return Err(ModelError::Invalid(format!(
                    "exogenous column {j} has {} values, the target has {}",
                    col.len(),
                    y.len()
                )));
            }
            check_finite(col)?;
        }
        let width = exog.len() + 2 * self.fourier * usize::from(self.period > 1);
        if y.len() < 2 * (width + 1) {
            return Err(too_short("exogenous regression", 2 * (width + 1), y.len()));
        }
        let rows: Vec<Vec<f64>> = (0..y.len()).map(|t| self.row(exog, t, t)).collect();
        let estimator = FittedEstimator::fit(&self.estimator, &rows, y)?;
        Ok(FittedExogRegression {
            spec: self.clone(),
            columns: exog.len(),
            estimator,
        })
    }

    fn row(&self, exog: &[Vec<f64>], i: usize, t: usize) -> Vec<f64> {
        let mut row: Vec<f64> = exog.iter().map(|c| c[i]).collect();
        push_fourier(&mut row, t, self.period, self.fourier);
        row
    }
}

impl FittedExogRegression {
    /// Predict the target for future exogenous values (columns, same order as
    /// in training); `t0` is the time index of the first row (for calendar terms).
    pub fn predict(&self, exog: &[Vec<f64>], t0: usize) -> Result<Vec<f64>, ModelError> {
        if exog.len() != self.columns {
            return Err(ModelError::Invalid(format!(
                "expected {} exogenous columns, got {}",
                self.columns,
                exog.len()
            )));
        }
        let len = exog.first().map_or(0, Vec::len);
        if exog.iter().any(|c| c.len() != len) {
            return Err(ModelError::Invalid(
                "exogenous columns differ in length".into(),
            ));
        }
        (0..len)
            .map(|i| self.estimator.predict_row(&self.spec.row(exog, i, t0 + i)))
            .collect()
    }

    /// Intercept and coefficients (exogenous columns first), linear estimator only.
    pub fn coefficients(&self) -> Option<(f64, &[f64])> {
        match &self.estimator {
            FittedEstimator::Linear { coef, intercept } => Some((*intercept, coef)),
            FittedEstimator::Forest(_) => None,
        }
    }
}
