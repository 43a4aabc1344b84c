//! Benchmarks every forecaster must beat, and the fallbacks for short series:
//! mean, naive (last value), drift, seasonal naive and the seasonal window
//! average.

use serde_json::json;

use super::{Fit, Forecast, ModelError, Predict, too_short};

/// Mean of the last `window` values (0 = all values).
#[derive(Debug, Clone, Copy)]
pub struct Mean {
    /// Trailing window (0 = everything).
    pub window: usize,
}

/// Fitted [`Mean`].
#[derive(Debug, Clone)]
pub struct FittedMean {
    mean: f64,
}

impl Fit for Mean {
    type Fitted = FittedMean;
    fn fit(&self, y: &[f64]) -> Result<FittedMean, ModelError> {
        if y.is_empty() {
            return Err(too_short("mean", 1, 0));
        }
        let start = if self.window == 0 {
            0
        } else {
            y.len().saturating_sub(self.window)
        };
        let tail = &y[start..];
        Ok(FittedMean {
            mean: tail.iter().sum::<f64>() / tail.len() as f64,
        })
    }
}

impl Predict for FittedMean {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        out.point.resize(horizon, self.mean);
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "mean": self.mean })
    }
}

/// The last value, repeated.
#[derive(Debug, Clone, Copy)]
pub struct Naive;

/// Fitted [`Naive`].
#[derive(Debug, Clone)]
pub struct FittedNaive {
    last: f64,
}

impl Fit for Naive {
    type Fitted = FittedNaive;
    fn fit(&self, y: &[f64]) -> Result<FittedNaive, ModelError> {
        match y.last() {
            Some(&last) => Ok(FittedNaive { last }),
            None => Err(too_short("naive", 1, 0)),
        }
    }
}

impl Predict for FittedNaive {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        out.point.resize(horizon, self.last);
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "last": self.last })
    }
}

/// The last value plus the average slope of the whole series.
#[derive(Debug, Clone, Copy)]
pub struct Drift;

/// Fitted [`Drift`].
#[derive(Debug, Clone)]
pub struct FittedDrift {
    last: f64,
    slope: f64,
}

impl Fit for Drift {
    type Fitted = FittedDrift;
    fn fit(&self, y: &[f64]) -> Result<FittedDrift, ModelError> {
        if y.len() < 2 {
            return Err(too_short("drift", 2, y.len()));
        }
        let slope = (y[y.len() - 1] - y[0]) / (y.len() - 1) as f64;
        Ok(FittedDrift {
            last: y[y.len() - 1],
            slope,
        })
    }
}

impl Predict for FittedDrift {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        out.point
            .extend((1..=horizon).map(|h| self.last + self.slope * h as f64));
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "last": self.last, "slope": self.slope })
    }
}

/// The value one season ago.
#[derive(Debug, Clone, Copy)]
pub struct SeasonalNaive {
    /// Season length in steps.
    pub period: usize,
}

/// Fitted [`SeasonalNaive`]: the last season of the training data.
#[derive(Debug, Clone)]
pub struct FittedSeasonalNaive {
    last_season: Vec<f64>,
}

impl Fit for SeasonalNaive {
    type Fitted = FittedSeasonalNaive;
    fn fit(&self, y: &[f64]) -> Result<FittedSeasonalNaive, ModelError> {
        let p = self.period.max(1);
        if y.len() < p {
            return Err(too_short("seasonal_naive", p, y.len()));
        }
        Ok(FittedSeasonalNaive {
            last_season: y[y.len() - p..].to_vec(),
        })
    }
}

impl Predict for FittedSeasonalNaive {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        let p = self.last_season.len();
        out.point
            .extend((0..horizon).map(|h| self.last_season[h % p]));
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({ "period": self.last_season.len() })
    }
}

/// Mean of the same phase over the last `seasons` seasons.
#[derive(Debug, Clone, Copy)]
pub struct SeasonalWindowAverage {
    /// Season length in steps.
    pub period: usize,
    /// Seasons to average (at most those available).
    pub seasons: usize,
}

impl Fit for SeasonalWindowAverage {
    type Fitted = FittedSeasonalNaive;
    fn fit(&self, y: &[f64]) -> Result<FittedSeasonalNaive, ModelError> {
        let p = self.period.max(1);
        if y.len() < p {
            return Err(too_short("seasonal_window_average", p, y.len()));
        }
        let k = (y.len() / p).clamp(1, self.seasons.max(1));
        let n = y.len();
        let profile = (0..p)
            .map(|j| (1..=k).map(|s| y[n - s * p + j]).sum::<f64>() / k as f64)
            .collect();
        Ok(FittedSeasonalNaive {
            last_season: profile,
        })
    }
}
