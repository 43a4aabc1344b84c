//! Prediction intervals calibrated on out-of-sample errors.
//!
//! Model-based intervals (Gaussian, from in-sample residuals) are too narrow on
//! monitoring data: errors are heavy-tailed and grow with the horizon in ways
//! no single model captures. Aya calibrates instead on the errors its own
//! rolling-origin selection already produced: for each step ahead `s` a
//! scale `σ(s)` (root mean square of the errors at steps near `s`, made
//! non-decreasing in `s`), and one set of empirical quantiles of the
//! standardised errors `e/σ(s)` pooled over all steps and origins (a
//! split-conformal construction). Any level can then be served, asymmetric
//! when the errors are.

use serde::{Deserialize, Serialize};

/// Probabilities at which standardised-error quantiles are stored.
pub const QUANTILE_GRID: [f64; 19] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95,
    0.975, 0.99, 0.995,
];

/// Interval calibration: per-step error scale and standardised quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Error scale per step ahead (index 0 = one step); steps beyond the end reuse the last.
    pub sigma: Vec<f64>,
    /// Quantiles of the standardised errors at [`QUANTILE_GRID`].
    pub quantiles: Vec<f64>,
    /// How many errors the calibration is based on.
    pub errors: usize,
}

/// Empirical quantile (linear interpolation) of sorted values.
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

impl Calibration {
    /// Calibrate from raw errors (actual − forecast): `errors[s]` holds the
    /// errors at step `s + 1` over every origin. `floor` is the smallest
    /// scale allowed (e.g. a fraction of the series' typical step change),
    /// which keeps intervals non-degenerate on flat training data.
    pub fn from_errors(errors: &[Vec<f64>], floor: f64) -> Calibration {
        let h = errors.len();
        let mut sigma = Vec::with_capacity(h);
        for s in 0..h {
            let w = (s / 4).max(1);
            let lo = s.saturating_sub(w);
            let hi = (s + w).min(h.saturating_sub(1));
            let (mut ss, mut c) = (0.0, 0usize);
            for errs in &errors[lo..=hi] {
                for e in errs {
                    ss += e * e;
                    c += 1;
                }
            }
            let v = if c > 0 { (ss / c as f64).sqrt() } else { 0.0 };
            sigma.push(v.max(floor).max(1e-12));
        }
        for s in 1..h {
            if sigma[s] < sigma[s - 1] {
                sigma[s] = sigma[s - 1];
            }
        }
        let mut z: Vec<f64> = errors
            .iter()
            .zip(&sigma)
            .flat_map(|(errs, sg)| errs.iter().map(move |e| e / sg))
            .collect();
        z.sort_by(f64::total_cmp);
        let quantiles = if z.len() >= 8 {
            QUANTILE_GRID
                .iter()
                .map(|&p| quantile_sorted(&z, p))
                .collect()
        } else {
            // Too few errors for empirical tails: Gaussian quantiles, widened.
            QUANTILE_GRID
                .iter()
                .map(|&p| 1.5 * normal_quantile(p))
                .collect()
        };
        Calibration {
            sigma,
            quantiles,
            errors: z.len(),
        }
    }

    /// Standardised quantile at probability `p`, interpolated on the grid
    /// (extrapolated with a Gaussian tail ratio outside it).
    pub fn z(&self, p: f64) -> f64 {
        let g = &QUANTILE_GRID;
        if p <= g[0] {
            return self.quantiles[0] * normal_quantile(p) / normal_quantile(g[0]);
        }
        if p >= g[g.len() - 1] {
            return self.quantiles[g.len() - 1] * normal_quantile(p)
                / normal_quantile(g[g.len() - 1]);
        }
        let i = g.iter().position(|&q| q >= p).unwrap_or(g.len() - 1).max(1);
        let w = (p - g[i - 1]) / (g[i] - g[i - 1]);
        self.quantiles[i - 1] * (1.0 - w) + self.quantiles[i] * w
    }

    /// Bounds of the central interval at `level` around `point` at step `step` (1-based).
    pub fn bounds(&self, step: usize, point: f64, level: f64) -> (f64, f64) {
        let s = match self.sigma.len() {
            0 => 0.0,
            len => self.sigma[(step.max(1) - 1).min(len - 1)],
        };
        let lo = self.z((1.0 - level) / 2.0);
        let hi = self.z((1.0 + level) / 2.0);
        (point + s * lo.min(0.0), point + s * hi.max(0.0))
    }
}

/// Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let pl = 0.02425;
    if p < pl {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - pl {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}
