//! Seasonality: which periods a series has, and classical seasonal
//! decomposition for the models that forecast a seasonally adjusted series.
//!
//! Monitoring data is dominated by the day (and for request counts the week),
//! so detection starts from the calendar: the candidate periods are one day and
//! one week at the series' interval, kept when the series is long enough to
//! see them at least twice and its autocorrelation at that lag is clearly
//! positive. When the interval is unknown or not a divisor of a day, the
//! periodogram of augurs-seasons proposes candidates instead.

use serde::{Deserialize, Serialize};

/// Seconds in a day.
pub const DAY_S: i64 = 86_400;
/// Seconds in a week.
pub const WEEK_S: i64 = 7 * DAY_S;

/// Seasonal periods found in a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Seasonality {
    /// Detected periods in steps, ascending (may be empty).
    pub periods: Vec<usize>,
    /// One day in steps when the interval divides a day (the MASE season of the protocol).
    pub day: Option<usize>,
}

impl Seasonality {
    /// The main (shortest) detected period, if any.
    pub fn primary(&self) -> Option<usize> {
        self.periods.first().copied()
    }

    /// The season used for MASE scaling and the `season` horizon: the primary
    /// period, else one day, else 1.
    pub fn season(&self) -> usize {
        self.primary().or(self.day).unwrap_or(1).max(1)
    }
}

/// Sample autocorrelation of `y` at `lag` (0 when undefined).
pub fn acf(y: &[f64], lag: usize) -> f64 {
    let n = y.len();
    if lag == 0 {
        return 1.0;
    }
    if lag >= n {
        return 0.0;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let denom: f64 = y.iter().map(|v| (v - mean) * (v - mean)).sum();
    if denom <= 0.0 {
        return 0.0;
    }
    let num: f64 = (lag..n).map(|t| (y[t] - mean) * (y[t - lag] - mean)).sum();
    num / denom
}

/// Detect seasonal periods from the values and the sampling interval in seconds.
///
/// Candidates are one day and one week (when the interval divides them); a
/// candidate is kept when at least two full cycles are present and the
/// autocorrelation at that lag exceeds `0.2`. Without calendar candidates the
/// augurs periodogram is used.
pub fn detect(y: &[f64], interval_s: i64) -> Seasonality {
    let day = (interval_s > 0 && DAY_S % interval_s == 0 && DAY_S / interval_s > 1)
        .then(|| (DAY_S / interval_s) as usize);
    let mut periods = Vec::new();
    if let Some(d) = day {
        for p in [d, d * 7] {
            if y.len() >= 2 * p && acf(y, p) > 0.2 {
                periods.push(p);
            }
        }
    } else if y.len() >= 8 {
        use augurs::seasons::{Detector, PeriodogramDetector};
        let detector = PeriodogramDetector::builder().min_period(2).build();
        let mut found: Vec<usize> = detector
            .detect(y)
            .into_iter()
            .map(|p| p as usize)
            .filter(|&p| p >= 2 && y.len() >= 2 * p && acf(y, p) > 0.2)
            .collect();
        found.sort_unstable();
        found.dedup();
        periods = found.into_iter().take(2).collect();
    }
    Seasonality { periods, day }
}

/// The seasonality test of the Theta method (as in statsforecast / forecast::thetaf):
/// the autocorrelation at lag `m` is significant at 90% given the
/// autocorrelations below it.
pub fn significant_season(y: &[f64], m: usize) -> bool {
    let n = y.len();
    if m < 2 || n < 2 * m {
        return false;
    }
    let mean = y.iter().sum::<f64>() / n as f64;
    let c: Vec<f64> = y.iter().map(|v| v - mean).collect();
    let denom: f64 = c.iter().map(|v| v * v).sum();
    if denom <= 0.0 {
        return false;
    }
    let r = |lag: usize| (lag..n).map(|t| c[t] * c[t - lag]).sum::<f64>() / denom;
    // The variance term uses lags below m; for long seasons subsample them
    // (every lag up to 48, then every 4th) to keep this cheap.
    let mut sum_sq = 0.0;
    let mut k = 1;
    while k < m {
        let step = if k < 48 { 1 } else { 4 };
        let rk = r(k);
        sum_sq += rk * rk * step as f64;
        k += step;
    }
    let rm = r(m);
    rm.abs() > 1.645 * ((1.0 + 2.0 * sum_sq) / n as f64).sqrt()
}

/// Seasonal indices from a classical decomposition (centred moving average trend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalIndices {
    /// Index per phase (`t mod period`, phase 0 = first training point).
    pub indices: Vec<f64>,
    /// Multiplicative (ratio) or additive (difference) indices.
    pub multiplicative: bool,
}

impl SeasonalIndices {
    /// Estimate indices of period `m` on `y` (requires `y.len() >= 2m`).
    /// Multiplicative when every value is positive, additive otherwise.
    pub fn estimate(y: &[f64], m: usize) -> Option<SeasonalIndices> {
        let n = y.len();
        if m < 2 || n < 2 * m {
            return None;
        }
        let multiplicative = y.iter().all(|&v| v > 0.0);
        // Centred moving average of order m (2×m when m is even).
        let half = m / 2;
        let mut prefix = Vec::with_capacity(n + 1);
        prefix.push(0.0);
        for v in y {
            prefix.push(prefix[prefix.len() - 1] + v);
        }
        let window_sum = |a: usize, b: usize| prefix[b] - prefix[a]; // sum of y[a..b]
        let mut sums = vec![0.0; m];
        let mut counts = vec![0usize; m];
        for t in half..n.saturating_sub(half) {
            let trend = if m % 2 == 1 {
                window_sum(t - half, t + half + 1) / m as f64
            } else {
                if t + half >= n {
                    continue;
                }
                (window_sum(t - half, t + half) + window_sum(t - half + 1, t + half + 1))
                    / (2.0 * m as f64)
            };
            let ratio = if multiplicative {
                if trend <= 0.0 {
                    continue;
                }
                y[t] / trend
            } else {
                y[t] - trend
            };
            sums[t % m] += ratio;
            counts[t % m] += 1;
        }
        if counts.contains(&0) {
            return None;
        }
        let mut indices: Vec<f64> = sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s / c as f64)
            .collect();
        let mean = indices.iter().sum::<f64>() / m as f64;
        if multiplicative {
            if mean <= 0.0 {
                return None;
            }
            indices.iter_mut().for_each(|v| *v /= mean);
            if indices.iter().any(|&v| v <= 1e-6) {
                return None;
            }
        } else {
            indices.iter_mut().for_each(|v| *v -= mean);
        }
        Some(SeasonalIndices {
            indices,
            multiplicative,
        })
    }

    /// Season length.
    pub fn period(&self) -> usize {
        self.indices.len()
    }

    /// Remove the season from value `v` at time index `t`.
    pub fn adjust(&self, t: usize, v: f64) -> f64 {
        let s = self.indices[t % self.indices.len()];
        if self.multiplicative { v / s } else { v - s }
    }

    /// Put the season back on value `v` at time index `t`.
    pub fn restore(&self, t: usize, v: f64) -> f64 {
        let s = self.indices[t % self.indices.len()];
        if self.multiplicative { v * s } else { v + s }
    }

    /// The seasonally adjusted series.
    pub fn adjust_all(&self, y: &[f64]) -> Vec<f64> {
        y.iter()
            .enumerate()
            .map(|(t, &v)| self.adjust(t, v))
            .collect()
    }
}
