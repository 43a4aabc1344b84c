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
//!
//! Since the robust selection ([`crate::select`]) validates at many origins
//! spread over the training data, calibration is done per step ahead instead
//! ([`Calibration::from_scaled_errors`]): the absolute errors at each origin
//! are divided by that origin's in-sample scale (so that a quiet week and a
//! busy week are comparable), pooled over the origins and a few neighbouring
//! steps, and their conformal quantiles (the `⌈(m+1)·level⌉`-th smallest of
//! `m`) at a grid of levels are stored per step, re-expressed at the scale of
//! the whole training series. An interval is then `point ± q_s(level)`:
//! symmetric, widening with the horizon exactly as the validation errors
//! did. Calibrations saved before this existed (no per-step quantiles) keep
//! being served by the `σ(s)` construction.

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
    /// Per-step conformal quantiles of the absolute errors (raw units), one
    /// row per step ahead, one column per level of [`ABS_LEVELS`]; steps
    /// beyond the end reuse the last row. Empty in calibrations made by
    /// [`Calibration::from_errors`] (then `sigma`/`quantiles` are used).
    #[serde(default)]
    pub abs_quantiles: Vec<Vec<f64>>,
}

/// Levels at which [`Calibration::abs_quantiles`] are stored (others are
/// interpolated, or extrapolated with Gaussian tail ratios).
pub const ABS_LEVELS: [f64; 6] = [0.5, 0.8, 0.9, 0.95, 0.98, 0.99];

/// Fewest errors pooled for one step's quantiles (neighbouring steps are
/// added until there are this many).
pub const MIN_POOL: usize = 40;

/// Conformal quantile of `level` from `m` sorted absolute errors: the
/// `⌈(m+1)·level⌉`-th smallest, extrapolated beyond the largest with the
/// Gaussian ratio when `m` is too small for that rank.
pub fn conformal_quantile(sorted: &[f64], level: f64) -> f64 {
    let m = sorted.len();
    if m == 0 {
        return 0.0;
    }
    let k = ((m as f64 + 1.0) * level).ceil() as usize;
    if k == 0 {
        return sorted[0];
    }
    if k <= m {
        return sorted[k - 1];
    }
    // Rank beyond the sample: scale the maximum by the Gaussian tail ratio.
    let top = m as f64 / (m as f64 + 1.0);
    let ratio = normal_quantile((1.0 + level) / 2.0) / normal_quantile((1.0 + top) / 2.0);
    sorted[m - 1] * ratio.max(1.0)
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
            abs_quantiles: Vec::new(),
        }
    }

    /// Calibrate per step from scaled errors: `errors[s][o]` is the error
    /// (actual − forecast) at step `s + 1` from validation origin `o`, and
    /// `scales[o]` that origin's in-sample scale (e.g. the MASE scale of
    /// the data before it); `scale` is the scale of the series being
    /// forecast, in whose units the bounds are expressed. `floor` is the
    /// smallest half-width allowed (raw units). Rows of `errors` may be
    /// shorter than `scales` (missing origins are skipped).
    pub fn from_scaled_errors(
        errors: &[Vec<f64>],
        scales: &[f64],
        scale: f64,
        floor: f64,
    ) -> Calibration {
        let h = errors.len();
        let scaled: Vec<Vec<f64>> = errors
            .iter()
            .map(|errs| {
                errs.iter()
                    .zip(scales)
                    .filter(|(e, sc)| e.is_finite() && **sc > 0.0)
                    .map(|(e, sc)| e.abs() / sc)
                    .collect()
            })
            .collect();
        let mut rows: Vec<Vec<f64>> = Vec::with_capacity(h);
        let mut pool = Vec::new();
        for s in 0..h {
            // Steps s-w..=s+w, widened until enough errors are pooled.
            let mut w = s / 4;
            loop {
                let lo = s.saturating_sub(w);
                let hi = (s + w).min(h - 1);
                pool.clear();
                for z in &scaled[lo..=hi] {
                    pool.extend_from_slice(z);
                }
                if pool.len() >= MIN_POOL || (lo == 0 && hi == h - 1) {
                    break;
                }
                w += 1;
            }
            pool.sort_by(f64::total_cmp);
            let row: Vec<f64> = ABS_LEVELS
                .iter()
                .map(|&l| (conformal_quantile(&pool, l) * scale).max(floor))
                .collect();
            rows.push(row);
        }
        // Never narrower further ahead, nor at a higher level.
        for s in 1..h {
            let (done, rest) = rows.split_at_mut(s);
            for (cur, prev) in rest[0].iter_mut().zip(&done[s - 1]) {
                *cur = cur.max(*prev);
            }
        }
        for row in &mut rows {
            for j in 1..row.len() {
                if row[j] < row[j - 1] {
                    row[j] = row[j - 1];
                }
            }
        }
        // The σ(s) form too, for readers of the older fields.
        let raw: Vec<Vec<f64>> = errors
            .iter()
            .map(|errs| {
                errs.iter()
                    .zip(scales)
                    .filter(|(e, sc)| e.is_finite() && **sc > 0.0)
                    .map(|(e, sc)| e / sc * scale)
                    .collect()
            })
            .collect();
        let mut c = Calibration::from_errors(&raw, floor);
        c.abs_quantiles = rows;
        c
    }

    /// Half-width of the central interval at `level` for 1-based `step`
    /// from the per-step quantiles (None when there are none).
    fn abs_half_width(&self, step: usize, level: f64) -> Option<f64> {
        let len = self.abs_quantiles.len();
        if len == 0 {
            return None;
        }
        let row = &self.abs_quantiles[(step.max(1) - 1).min(len - 1)];
        if row.len() != ABS_LEVELS.len() {
            return None;
        }
        let g = &ABS_LEVELS;
        let last = g.len() - 1;
        let gauss = |l: f64| normal_quantile((1.0 + l) / 2.0);
        let level = level.clamp(1e-6, 1.0 - 1e-9);
        Some(if level <= g[0] {
            row[0] * gauss(level) / gauss(g[0])
        } else if level >= g[last] {
            row[last] * gauss(level) / gauss(g[last])
        } else {
            let i = g.iter().position(|&q| q >= level).unwrap_or(last).max(1);
            let w = (level - g[i - 1]) / (g[i] - g[i - 1]);
            row[i - 1] * (1.0 - w) + row[i] * w
        })
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
        if let Some(w) = self.abs_half_width(step, level) {
            return (point - w, point + w);
        }
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
