//! Per-backend capacity model, learned online from observations.
//!
//! Why a model and not just the last window's utilisation: weights must be
//! right *at the forecast load*, not at the load the backend happened to get
//! (which our own weights chose). Two ordinary least-squares fits over a
//! rolling window (linfa-linear) give utilisation and latency as functions of
//! request rate:
//!
//! - `cpu = a + b·rate` → capacity at target utilisation `u*` is `(u* - a)/b`;
//! - `latency = c + d·rate` → predicted latency at a given load (explanations,
//!   and a relative capacity when a backend reports no CPU).
//!
//! Degradation is a *trend* of the per-request cost (CPU per request, or
//! latency when there is no CPU) over the last few windows: a second
//! least-squares fit of cost against time, extrapolated a few ticks ahead.
//! A backend whose cost rises is down-weighted before it saturates, instead of
//! after its queue has already grown (which is all a reactive rule can see).

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};

use crate::types::{BackendObservation, Time};

/// A fitted line `y = intercept + slope·x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineFit {
    /// Value at x = 0.
    pub intercept: f64,
    /// Change of y per unit of x.
    pub slope: f64,
}

impl LineFit {
    /// y at `x`.
    pub fn predict(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// Least squares with linfa-linear. `None` when the fit is not identifiable:
/// fewer than two points, no spread in x (every window at the same rate, which
/// is the normal case for a steady pool), or a non-finite result.
pub fn fit_line(xs: &[f64], ys: &[f64]) -> Option<LineFit> {
    let n = xs.len();
    if n < 2 || ys.len() != n {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    // Relative spread below 1 % carries no slope information, only noise.
    if var.is_nan() || var.sqrt() <= 0.01 * mean.abs().max(1e-9) {
        return None;
    }
    let records = Array2::from_shape_vec((n, 1), xs.to_vec()).ok()?;
    let targets = Array1::from(ys.to_vec());
    let dataset = Dataset::new(records, targets);
    let fitted = LinearRegression::new().fit(&dataset).ok()?;
    let slope = *fitted.params().first()?;
    let intercept = fitted.intercept();
    (slope.is_finite() && intercept.is_finite()).then_some(LineFit { intercept, slope })
}

/// One window's figures as the model keeps them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    t: Time,
    rate: f64,
    cpu: Option<f64>,
    latency: f64,
}

/// What the model currently believes about one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityEstimate {
    /// Requests per second at the target utilisation. Absolute when the
    /// backend reports CPU, relative (1 / predicted latency) otherwise.
    pub capacity_rps: f64,
    /// Whether `capacity_rps` is in requests per second (CPU-based).
    pub absolute: bool,
    /// Utilisation as a function of rate (intercept, effective slope), when CPU is reported.
    pub cpu: Option<LineFit>,
    /// Latency (p50, seconds) as a function of rate, when identifiable.
    pub latency: Option<LineFit>,
    /// Predicted per-request cost at the lookahead divided by the window's
    /// median cost: > 1 means the backend is getting slower.
    pub cost_factor: f64,
    /// The recent pooled cost divided by the window's: what the backend
    /// costs now, without the trend's extrapolation (equal to
    /// `cost_factor` unless `degrading`).
    pub current_cost_factor: f64,
    /// The cost trend crossed the degradation threshold.
    pub degrading: bool,
    /// Relative standard error of the per-request cost the estimate rests
    /// on (the recent windows'), so also of `capacity_rps`: how far noise
    /// alone moves the estimate. 0 when fewer than two windows tell.
    pub rel_se: f64,
}

/// Rolling-window capacity model of one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityModel {
    samples: VecDeque<Sample>,
    window: usize,
}

/// Below this many completed requests per second a window says nothing
/// reliable about cost (CPU per request divides by the rate).
const MIN_RATE_FOR_COST: f64 = 1e-3;

/// Bounds on the cost factor: one window can at most quadruple or quarter
/// the capacity estimate; the weight step bound limits it further.
const COST_FACTOR_RANGE: (f64, f64) = (0.25, 4.0);

impl CapacityModel {
    /// An empty model keeping `window` points.
    pub fn new(window: usize) -> Self {
        CapacityModel {
            samples: VecDeque::with_capacity(window),
            window: window.max(2),
        }
    }

    /// Number of points held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Add one observation window. Windows without completed requests, with
    /// non-finite figures, or repeated (same `observed_at`) are skipped:
    /// they carry no information about cost.
    pub fn observe(&mut self, obs: &BackendObservation) {
        let finite = obs.request_rate.is_finite()
            && obs.latency_p50.is_finite()
            && obs.observed_at.is_finite();
        if !finite || obs.request_rate <= MIN_RATE_FOR_COST {
            return;
        }
        if let Some(last) = self.samples.back()
            && last.t >= obs.observed_at
        {
            return;
        }
        let cpu = obs.cpu_utilization.filter(|c| c.is_finite() && *c >= 0.0);
        if self.samples.len() == self.window {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            t: obs.observed_at,
            rate: obs.request_rate,
            cpu,
            latency: obs.latency_p50.max(0.0),
        });
    }

    /// Estimate capacity at `target` utilisation, extrapolating the cost trend
    /// to `now + lookahead`. `None` until `min_points` windows are held.
    ///
    /// Costs are ratios of sums (total CPU over total rate, or
    /// request-weighted latency), not means of per-window ratios: a window
    /// with few requests then counts for little, which keeps exponential
    /// service-time noise out of the estimate.
    pub fn estimate(
        &self,
        target: f64,
        now: Time,
        lookahead: f64,
        min_points: usize,
        trend_points: usize,
        degrade_threshold: f64,
    ) -> Option<CapacityEstimate> {
        if self.samples.len() < min_points.max(1) {
            return None;
        }
        let with_cpu = self.samples.iter().all(|s| s.cpu.is_some());
        let rates: Vec<f64> = self.samples.iter().map(|s| s.rate).collect();
        let lats: Vec<f64> = self.samples.iter().map(|s| s.latency).collect();
        let latency = fit_line(&rates, &lats).filter(|f| f.slope >= 0.0 && f.intercept >= 0.0);

        let cost_of = |s: &Sample| match (with_cpu, s.cpu) {
            (true, Some(c)) => c / s.rate,
            _ => s.latency,
        };
        let pooled = |xs: &[Sample]| {
            let w: f64 = xs.iter().map(|s| s.rate).sum();
            xs.iter().map(|s| cost_of(s) * s.rate).sum::<f64>() / w
        };
        let all: Vec<Sample> = self.samples.iter().copied().collect();
        let window_cost = pooled(&all);
        if !(window_cost > 0.0 && window_cost.is_finite()) {
            return None;
        }
        let k = trend_points.min(all.len());
        let recent = &all[all.len() - k..];
        let recent_cost = pooled(recent);
        // Standard error of the rate-weighted mean cost over the windows
        // that set the estimate (the recent ones, else the whole window).
        let rel_se = {
            let xs = if recent.len() >= 2 { recent } else { &all[..] };
            let n = xs.len() as f64;
            let mean = pooled(xs);
            let w: f64 = xs.iter().map(|s| s.rate).sum();
            let v: f64 = xs
                .iter()
                .map(|s| (s.rate * (cost_of(s) - mean)).powi(2))
                .sum();
            let se = if n >= 2.0 {
                (v * n / (n - 1.0)).sqrt() / w
            } else {
                0.0
            };
            let r = se / mean;
            if r.is_finite() && r > 0.0 { r } else { 0.0 }
        };
        let recent_t: Vec<f64> = recent.iter().map(|s| s.t - now).collect();
        let recent_c: Vec<f64> = recent.iter().map(cost_of).collect();
        let (predicted, degrading) = match trend_fit(&recent_t, &recent_c) {
            Some((trend, t_stat)) if k >= MIN_TREND_POINTS => {
                let start = trend.predict(recent_t[0]).max(f64::MIN_POSITIVE);
                let ahead = trend.predict(lookahead.max(0.0));
                let rising = trend.slope > 0.0
                    && t_stat >= TREND_MIN_T
                    && (ahead - start) / start > degrade_threshold
                    && recent_cost > window_cost * (1.0 + 0.5 * degrade_threshold);
                // Only extrapolate a significant rise that the recent pooled
                // cost confirms; otherwise use what was seen.
                (
                    if rising {
                        ahead.max(recent_cost)
                    } else {
                        recent_cost
                    },
                    rising,
                )
            }
            _ => (recent_cost, false),
        };
        let cost_factor = (predicted / window_cost).clamp(COST_FACTOR_RANGE.0, COST_FACTOR_RANGE.1);
        let current_cost_factor =
            (recent_cost / window_cost).clamp(COST_FACTOR_RANGE.0, COST_FACTOR_RANGE.1);

        if with_cpu {
            let cpus: Vec<f64> = self.samples.iter().filter_map(|s| s.cpu).collect();
            let through_origin = LineFit {
                intercept: 0.0,
                slope: window_cost,
            };
            let mean_rate = rates.iter().sum::<f64>() / rates.len() as f64;
            let rate_cv = (rates.iter().map(|r| (r - mean_rate).powi(2)).sum::<f64>()
                / rates.len() as f64)
                .sqrt()
                / mean_rate.max(1e-12);
            let base = if rate_cv >= MIN_RATE_CV_FOR_REGRESSION
                && rates.len() >= MIN_POINTS_FOR_REGRESSION
            {
                fit_line(&rates, &cpus)
                    .filter(|f| {
                        f.slope >= MIN_SLOPE_OVER_POOLED_COST * window_cost
                            && f.intercept >= 0.0
                            && f.intercept < 0.5 * target
                    })
                    .unwrap_or(through_origin)
            } else {
                through_origin
            };
            let cpu = LineFit {
                intercept: base.intercept,
                slope: base.slope * cost_factor,
            };
            if !positive(cpu.slope) {
                return None;
            }
            let capacity_rps = ((target - cpu.intercept) / cpu.slope).max(0.0);
            Some(CapacityEstimate {
                capacity_rps,
                absolute: true,
                cpu: Some(cpu),
                latency,
                cost_factor,
                current_cost_factor,
                degrading,
                rel_se,
            })
        } else {
            let cost = window_cost * cost_factor;
            Some(CapacityEstimate {
                capacity_rps: 1.0 / cost,
                absolute: false,
                cpu: None,
                latency,
                cost_factor,
                current_cost_factor,
                degrading,
                rel_se,
            })
        }
    }
}

/// Fewest points for a cost trend.
pub(crate) const MIN_TREND_POINTS: usize = 4;

/// A cost trend counts only when its slope is this many standard errors
/// above zero (about the 1 % one-sided level for a handful of points):
/// per-window costs of exponential service times are noisy, and a false
/// "degrading" costs a healthy backend its traffic.
const TREND_MIN_T: f64 = 3.0;

/// The load → CPU regression is used only when the observed rates vary by
/// at least this coefficient of variation; below it the intercept is noise
/// and the pooled cost (a line through the origin) is the better estimate.
const MIN_RATE_CV_FOR_REGRESSION: f64 = 0.10;

/// The load → CPU regression needs at least this many windows: with fewer,
/// a few noisy points can put most of the CPU into the intercept and make a
/// backend look several times larger than it is.
const MIN_POINTS_FOR_REGRESSION: usize = 10;

/// A fitted CPU slope below this fraction of the pooled cost per request
/// means the intercept (idle CPU) explains more than half of the CPU at the
/// observed load: for a serving process that is noise, not overhead, and the
/// pooled cost (a line through the origin) is used instead.
const MIN_SLOPE_OVER_POOLED_COST: f64 = 0.5;

/// Least-squares line with the t statistic of its slope.
pub(crate) fn trend_fit(xs: &[f64], ys: &[f64]) -> Option<(LineFit, f64)> {
    let f = fit_line(xs, ys)?;
    let n = xs.len();
    if n < 3 {
        return None;
    }
    let mx = xs.iter().sum::<f64>() / n as f64;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let ssr: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (y - f.predict(*x)).powi(2))
        .sum();
    let se = (ssr / (n - 2) as f64 / sxx).sqrt();
    let t = if se > 0.0 {
        f.slope / se
    } else if f.slope > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    Some((f, t))
}

/// True for a finite number above zero (false for NaN).
pub fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Median of finite values; `None` for an empty slice.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(t: f64, rate: f64, cpu: Option<f64>, lat: f64) -> BackendObservation {
        BackendObservation {
            backend: "b".into(),
            healthy: true,
            request_rate: rate,
            in_flight: 0.0,
            latency_p50: lat,
            latency_p90: lat,
            latency_p99: lat,
            error_rate: 0.0,
            cpu_utilization: cpu,
            memory_utilization: None,
            observed_at: t,
        }
    }

    #[test]
    fn fit_line_recovers_a_line() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        let ys: Vec<f64> = xs.iter().map(|x| 0.1 + 0.02 * x).collect();
        let f = fit_line(&xs, &ys).unwrap();
        assert!(
            (f.intercept - 0.1).abs() < 1e-9 && (f.slope - 0.02).abs() < 1e-9,
            "{f:?}"
        );
    }

    #[test]
    fn fit_line_refuses_constant_x() {
        assert!(fit_line(&[5.0, 5.0, 5.0], &[1.0, 2.0, 3.0]).is_none());
    }

    #[test]
    fn capacity_from_cpu_regression() {
        let mut m = CapacityModel::new(20);
        // cpu = 0.05 + 0.005·rate → capacity at 0.7 = 130 rps.
        let rates = [40.0, 60.0, 80.0, 100.0, 50.0, 90.0];
        for i in 0..12 {
            let rate = rates[i % rates.len()];
            m.observe(&obs(i as f64, rate, Some(0.05 + 0.005 * rate), 0.01));
        }
        let e = m.estimate(0.7, 12.0, 3.0, 3, 4, 0.1).unwrap();
        assert!(e.absolute);
        let line = e.cpu.unwrap();
        assert!((line.intercept - 0.05).abs() < 1e-6, "{e:?}");
        // The slope carries the recent-cost factor (the last windows' mix of
        // rates): within a few per cent of the true 0.005.
        assert!((line.slope / e.cost_factor - 0.005).abs() < 1e-9, "{e:?}");
        assert!((e.capacity_rps - 130.0).abs() < 5.0, "{e:?}");
    }

    #[test]
    fn a_regression_that_puts_most_cpu_in_the_intercept_is_not_trusted() {
        // Twelve windows whose CPU hardly moves with the rate: the fit would
        // say "idle CPU 0.3, 0.0005 per request" and a capacity of 800 rps.
        // The pooled cost (a line through the origin) is used instead.
        let mut m = CapacityModel::new(20);
        let rates = [40.0, 60.0, 80.0, 100.0, 50.0, 90.0];
        for i in 0..12 {
            let rate = rates[i % rates.len()];
            m.observe(&obs(i as f64, rate, Some(0.3 + 0.0005 * rate), 0.01));
        }
        let e = m.estimate(0.7, 12.0, 3.0, 3, 4, 0.1).unwrap();
        let line = e.cpu.unwrap();
        assert_eq!(line.intercept, 0.0, "{e:?}");
        // Pooled cost: (0.3 + 0.0005·70)/70 per request at the mean rate 70.
        let pooled = (0.3 + 0.0005 * 70.0) / 70.0;
        assert!((line.slope / e.cost_factor - pooled).abs() < 1e-9, "{e:?}");
        assert!(e.capacity_rps < 200.0, "{e:?}");
    }

    #[test]
    fn few_windows_use_the_pooled_cost() {
        let mut m = CapacityModel::new(20);
        for (i, rate) in [40.0, 60.0, 80.0, 100.0, 50.0, 90.0]
            .into_iter()
            .enumerate()
        {
            m.observe(&obs(i as f64, rate, Some(0.05 + 0.005 * rate), 0.01));
        }
        let e = m.estimate(0.7, 6.0, 3.0, 3, 4, 0.1).unwrap();
        assert_eq!(e.cpu.unwrap().intercept, 0.0, "{e:?}");
    }

    #[test]
    fn rising_cost_is_degrading_and_lowers_capacity() {
        let mut m = CapacityModel::new(30);
        for i in 0..20 {
            m.observe(&obs(i as f64, 100.0, Some(0.5), 0.01));
        }
        let steady = m.estimate(0.7, 20.0, 3.0, 3, 6, 0.1).unwrap();
        assert!(!steady.degrading);
        // Cost per request rises 5 % per window.
        for i in 20..26 {
            let c = 0.5 * 1.05f64.powi(i - 19);
            m.observe(&obs(i as f64, 100.0, Some(c), 0.01));
        }
        let worse = m.estimate(0.7, 26.0, 3.0, 3, 6, 0.1).unwrap();
        assert!(worse.degrading, "{worse:?}");
        assert!(
            worse.capacity_rps < steady.capacity_rps * 0.8,
            "{worse:?} vs {steady:?}"
        );
    }

    #[test]
    fn no_cpu_gives_relative_capacity_from_latency() {
        let mut fast = CapacityModel::new(10);
        let mut slow = CapacityModel::new(10);
        for i in 0..5 {
            fast.observe(&obs(i as f64, 100.0, None, 0.01));
            slow.observe(&obs(i as f64, 100.0, None, 0.04));
        }
        let f = fast.estimate(0.7, 5.0, 1.0, 3, 4, 0.1).unwrap();
        let s = slow.estimate(0.7, 5.0, 1.0, 3, 4, 0.1).unwrap();
        assert!(!f.absolute);
        assert!((f.capacity_rps / s.capacity_rps - 4.0).abs() < 1e-6);
    }

    #[test]
    fn empty_windows_and_repeats_are_skipped() {
        let mut m = CapacityModel::new(10);
        m.observe(&obs(1.0, 0.0, Some(0.0), 0.0));
        m.observe(&obs(2.0, 10.0, Some(0.1), 0.01));
        m.observe(&obs(2.0, 10.0, Some(0.1), 0.01));
        m.observe(&obs(3.0, f64::NAN, Some(0.1), 0.01));
        assert_eq!(m.len(), 1);
    }
}
