//! The Theta method (Assimakopoulos & Nikolopoulos 2000, in the state-space
//! form of Hyndman & Billah 2003): simple exponential smoothing of the
//! seasonally adjusted series plus a drift equal to `(1 - 1/θ)` times the
//! slope of its linear trend. θ = 2 is the standard Theta method (the M3
//! winner); θ = 1 is plain SES. No crate implements it, so it is written here.
//!
//! The series is seasonally adjusted by classical decomposition when the
//! Theta seasonality test finds the period significant (multiplicative for
//! positive data, additive otherwise), exactly as `forecast::thetaf` and
//! statsforecast do.

use serde_json::json;

use super::{Fit, Forecast, ModelError, Predict, too_short};
use crate::seasonality::{SeasonalIndices, significant_season};

/// Theta model specification.
#[derive(Debug, Clone, Copy)]
pub struct Theta {
    /// Season length (1 = non-seasonal).
    pub period: usize,
    /// Theta coefficient (2 = standard Theta, 1 = SES).
    pub theta: f64,
}

/// A fitted [`Theta`] model.
#[derive(Debug, Clone)]
pub struct FittedTheta {
    season: Option<SeasonalIndices>,
    n: usize,
    alpha: f64,
    level: f64,
    slope: f64,
    theta: f64,
}

impl FittedTheta {
    /// Smoothing parameter chosen by least squares.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    /// Final SES level (seasonally adjusted units).
    pub fn level(&self) -> f64 {
        self.level
    }
    /// Slope of the linear trend of the adjusted series.
    pub fn slope(&self) -> f64 {
        self.slope
    }
    /// Whether a seasonal adjustment was applied.
    pub fn seasonal(&self) -> bool {
        self.season.is_some()
    }
}

/// SSE of one-step SES forecasts with smoothing `alpha` and initial level `x[0]`;
/// returns (sse, final level).
pub(crate) fn ses(x: &[f64], alpha: f64) -> (f64, f64) {
    let mut level = x[0];
    let mut sse = 0.0;
    for &v in &x[1..] {
        let e = v - level;
        sse += e * e;
        level += alpha * e;
    }
    (sse, level)
}

/// Least-squares smoothing parameter of SES on `x` by golden-section search on [0.01, 0.99].
pub(crate) fn optimise_alpha(x: &[f64]) -> f64 {
    let (mut a, mut b) = (0.01_f64, 0.99_f64);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let mut fc = ses(x, c).0;
    let mut fd = ses(x, d).0;
    for _ in 0..40 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = ses(x, c).0;
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = ses(x, d).0;
        }
        if (b - a).abs() < 1e-4 {
            break;
        }
    }
    (a + b) / 2.0
}

/// Least-squares slope of `x` against 0..n.
pub(crate) fn ols_slope(x: &[f64]) -> f64 {
    let n = x.len() as f64;
    let tm = (n - 1.0) / 2.0;
    let xm = x.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, &v) in x.iter().enumerate() {
        let dt = t as f64 - tm;
        sxy += dt * (v - xm);
        sxx += dt * dt;
    }
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

impl Fit for Theta {
    type Fitted = FittedTheta;
    fn fit(&self, y: &[f64]) -> Result<FittedTheta, ModelError> {
        if y.len() < 4 {
            return Err(too_short("theta", 4, y.len()));
        }
        if self.theta.is_nan() || self.theta < 1.0 {
            return Err(ModelError::Invalid(format!(
                "theta must be >= 1, got {}",
                self.theta
            )));
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
        let alpha = optimise_alpha(&x);
        let (_, level) = ses(&x, alpha);
        let slope = ols_slope(&x);
        Ok(FittedTheta {
            season,
            n: y.len(),
            alpha,
            level,
            slope,
            theta: self.theta,
        })
    }
}

impl Predict for FittedTheta {
    fn predict_into(&self, horizon: usize, out: &mut Forecast) -> Result<(), ModelError> {
        out.clear();
        let a = self.alpha;
        let adj = (1.0 - (1.0 - a).powi(self.n.min(i32::MAX as usize) as i32)) / a;
        let drift = (1.0 - 1.0 / self.theta) * self.slope;
        out.point.extend((1..=horizon).map(|h| {
            let x = self.level + drift * (adj + h as f64 - 1.0);
            match &self.season {
                Some(s) => s.restore(self.n + h - 1, x),
                None => x,
            }
        }));
        Ok(())
    }
    fn params(&self) -> serde_json::Value {
        json!({
            "theta": self.theta,
            "alpha": self.alpha,
            "level": self.level,
            "slope": self.slope,
            "seasonal": self.season.as_ref().map(|s| json!({
                "period": s.period(), "multiplicative": s.multiplicative })),
        })
    }
}
