//! Freshness: whether the telemetry is recent enough to learn from, and whether
//! the forecast is trusted (its one-interval-ahead error is scored every tick).

use super::AyaPolicy;
use crate::capacity::positive;
use crate::types::{DemandForecast, Explanation, TickInput, Time};

/// What the forecast says for this tick, and whether it is trusted.
#[derive(Debug, Clone, Copy)]
pub(super) struct ForecastView {
    pub(super) next: f64,
    pub(super) peak_upper: f64,
    /// Largest upper bound over the scale-in horizon.
    pub(super) peak_upper_in: f64,
    pub(super) trusted: bool,
}

impl AyaPolicy {
    /// Whether telemetry has stopped: no observation newer than the newest
    /// one already seen has arrived for `stale_intervals × interval` (then
    /// the models are not updated and weights are held). A *constant* delay
    /// is not staleness: metrics pipelines deliver every window a few
    /// seconds late (Envoy's stats flush, a Prometheus scrape), and a pool
    /// whose capacities are learned from windows 8 s old is still far better
    /// steered than one held at its first weights. The delay is reported as
    /// `telemetry lag`.
    /// `input.interval` is the sanitised, positive interval.
    pub(super) fn stale_telemetry(&mut self, input: &TickInput<'_>, ex: &mut Explanation) -> bool {
        let newest = input
            .backends
            .iter()
            .map(|b| b.observed_at)
            .filter(|t| t.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        if input.backends.is_empty() || !newest.is_finite() {
            return false;
        }
        let advanced = self.newest_seen.is_none_or(|(seen, _)| newest > seen);
        if advanced {
            self.newest_seen = Some((newest, input.now));
        }
        let last_arrival = self.newest_seen.map_or(input.now, |(_, at)| at);
        let lag = (input.now - newest).max(0.0);
        let stale = input.now - last_arrival > self.cfg.get().stale_intervals * input.interval;
        if stale {
            ex.rules.push(format!(
                "fallback_reactive: stale telemetry (nothing new for {:.1}s; newest {lag:.1}s old)",
                input.now - last_arrival
            ));
        } else if lag > input.interval {
            ex.inputs.push(format!("telemetry lag {lag:.1}s"));
        }
        stale
    }

    /// The calibration factor of the forecast's interval: the `level`
    /// quantile of recent |error| / claimed half-width, capped at 1; 1 until
    /// half of `interval_calibration_window` is scored (or when it is 0).
    fn interval_scale(&self, level: f64) -> f64 {
        let w = self.cfg.get().interval_calibration_window;
        if w == 0 || self.interval_ratios.len() < w.div_ceil(2).max(2) {
            return 1.0;
        }
        let mut r: Vec<f64> = self.interval_ratios.iter().copied().collect();
        r.sort_by(f64::total_cmp);
        let q = level.clamp(0.0, 1.0) * (r.len() - 1) as f64;
        let (i, frac) = (q.floor() as usize, q - q.floor());
        let v = r[i] * (1.0 - frac) + r[(i + 1).min(r.len() - 1)] * frac;
        v.clamp(0.0, 1.0)
    }

    pub(super) fn view_forecast(
        &mut self,
        input: &TickInput<'_>,
        ex: &mut Explanation,
    ) -> Option<ForecastView> {
        let c = self.cfg.get();
        // Score the prediction made one interval ago.
        if let Some((target_t, predicted, claimed)) = self.pending_prediction.take()
            && (input.now - target_t).abs() <= 0.5 * input.interval.max(1e-9)
            && input.demand_rps.is_finite()
        {
            let err = (predicted - input.demand_rps).abs() / input.demand_rps.abs().max(1.0);
            self.forecast_errors.push_back(err);
            while self.forecast_errors.len() > c.forecast_error_window {
                self.forecast_errors.pop_front();
            }
            if c.interval_calibration_window > 0 && claimed > 0.0 {
                self.interval_ratios
                    .push_back((predicted - input.demand_rps).abs() / claimed);
                while self.interval_ratios.len() > c.interval_calibration_window {
                    self.interval_ratios.pop_front();
                }
            }
        }
        let f = input.forecast?;
        let Some(next) = value_at(f, input.now + input.interval) else {
            ex.rules.push("forecast_invalid -> reactive".into());
            return None;
        };
        let scale = self.interval_scale(f.level);
        let horizon = input.replicas.boot_time.max(0.0) + input.interval + c.scale_lookahead;
        let peak_upper_up = peak_upper(f, input.now, horizon, scale)
            .unwrap_or(next)
            .max(next);
        let horizon_in = input.replicas.boot_time.max(0.0) + input.interval + c.scale_in_lookahead;
        let peak_upper_in = peak_upper(f, input.now, horizon_in, scale)
            .unwrap_or(next)
            .max(next);
        let claimed = interpolate(&f.upper, f.issued_at, f.step, input.now + input.interval)
            .map_or(0.0, |u| (u - next).max(0.0));
        self.pending_prediction = Some((input.now + input.interval, next, claimed));
        let mape = self.recent_forecast_error();
        let trusted = mape.is_none_or(|e| e <= c.forecast_error_fallback);
        ex.forecast = Some(format!(
            "issued_at={:.1} step={:.1}s next={:.1}rps peak_upper(boot+interval+lookahead={:.0}s)={:.1}rps level={:.2} interval_scale={:.2} recent_mape={} used={}",
            f.issued_at,
            f.step,
            next,
            horizon,
            peak_upper_up,
            f.level,
            scale,
            mape.map_or("n/a".to_string(), |e| format!("{e:.3}")),
            trusted
        ));
        if !trusted {
            ex.rules.push(format!(
                "fallback_reactive: forecast error {:.3} > {:.3}",
                mape.unwrap_or(0.0),
                c.forecast_error_fallback
            ));
        }
        Some(ForecastView {
            next,
            peak_upper: peak_upper_up,
            peak_upper_in,
            trusted,
        })
    }
}

/// Linear interpolation of the forecast mean at time `t` on its grid (the
/// first point is at `issued_at + step`; before it, the first value; beyond
/// the end, the last). `None` when the forecast is empty or not finite.
pub(super) fn value_at(f: &DemandForecast, t: Time) -> Option<f64> {
    interpolate(&f.mean, f.issued_at, f.step, t)
}

pub(super) fn interpolate(v: &[f64], issued_at: Time, step: f64, t: Time) -> Option<f64> {
    if v.is_empty() || !positive(step) || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let pos = (t - issued_at) / step - 1.0;
    if !pos.is_finite() || pos <= 0.0 {
        return Some(v[0]);
    }
    let i = pos.floor() as usize;
    if i + 1 >= v.len() {
        return v.last().copied();
    }
    let frac = pos - i as f64;
    Some(v[i] * (1.0 - frac) + v[i + 1] * frac)
}

/// Largest upper bound over `(now, now + horizon]` (grid points inside it and
/// the interpolated value at its end), each point's interval scaled by
/// `scale` around its mean (`mean + scale × (upper − mean)`). Falls back to
/// the mean when the forecast has no interval.
pub(super) fn peak_upper(f: &DemandForecast, now: Time, horizon: f64, scale: f64) -> Option<f64> {
    let series: Vec<f64> = if f.upper.len() == f.mean.len() && !f.upper.is_empty() {
        f.mean
            .iter()
            .zip(&f.upper)
            .map(|(m, u)| m + scale * (u - m))
            .collect()
    } else {
        f.mean.clone()
    };
    let end = now + horizon;
    let mut peak = interpolate(&series, f.issued_at, f.step, end)?;
    for (k, v) in series.iter().enumerate() {
        let t = f.issued_at + (k as f64 + 1.0) * f.step;
        if t > end {
            break;
        }
        if t > now - f.step {
            peak = peak.max(*v);
        }
    }
    Some(peak)
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::types::*;

    #[test]
    fn stale_telemetry_holds_weights_and_replicas() {
        let mut p = engine();
        let backends = [
            obs("a", 0.0, 100.0, 0.4, 0.01, 0.05),
            obs("b", 0.0, 100.0, 0.4, 0.01, 0.05),
        ];
        let d0 = p.decide(&input(0.0, &backends, 200.0, None, replicas(2)));
        let d = p.decide(&input(100.0, &backends, 5000.0, None, replicas(2)));
        assert_eq!(d.weights, d0.weights);
        assert_eq!(d.scaling.desired_replicas, 2);
        assert!(
            d.explanation
                .rules
                .iter()
                .any(|r| r.contains("stale telemetry")),
            "{:?}",
            d.explanation.rules
        );
    }

    #[test]
    fn a_constant_delay_is_not_staleness_but_a_stop_is() {
        let mut p = engine();
        // Every window arrives 25 s late (2.5 intervals of 10 s)... and keeps arriving.
        for k in 0..6 {
            let t = 100.0 + 10.0 * k as f64;
            let backends = [
                obs("a", t - 25.0, 100.0, 0.4, 0.01, 0.05),
                obs("b", t - 25.0, 100.0, 0.4, 0.01, 0.05),
            ];
            let d = p.decide(&input(t, &backends, 200.0, None, replicas(2)));
            assert!(
                !d.explanation.rules.iter().any(|r| r.contains("stale")),
                "tick {k}: {:?}",
                d.explanation.rules
            );
            assert!(
                d.explanation
                    .inputs
                    .iter()
                    .any(|r| r == "telemetry lag 25.0s"),
                "{:?}",
                d.explanation.inputs
            );
        }
        // Then nothing new: after 3 intervals it is stale.
        let backends = [
            obs("a", 125.0, 100.0, 0.4, 0.01, 0.05),
            obs("b", 125.0, 100.0, 0.4, 0.01, 0.05),
        ];
        let d = p.decide(&input(150.0, &backends, 200.0, None, replicas(2)));
        assert!(!d.explanation.rules.iter().any(|r| r.contains("stale")));
        let d = p.decide(&input(190.0, &backends, 200.0, None, replicas(2)));
        assert!(
            d.explanation
                .rules
                .iter()
                .any(|r| r.contains("stale telemetry")),
            "{:?}",
            d.explanation.rules
        );
    }

    #[test]
    fn bad_forecasts_trigger_the_reactive_fallback() {
        let mut p = engine();
        let mut saw = false;
        for k in 0..8 {
            let t = k as f64 * 10.0;
            let backends = [
                obs("a", t, 100.0, 0.4, 0.01, 0.05),
                obs("b", t, 100.0, 0.4, 0.01, 0.05),
            ];
            // Forecast says 1000 rps; 200 arrives, every time.
            let f = forecast(t, 1000.0, 1000.0, f64::INFINITY);
            let d = p.decide(&input(t, &backends, 200.0, Some(&f), replicas(2)));
            if k >= 1 {
                saw |= d
                    .explanation
                    .rules
                    .iter()
                    .any(|r| r.starts_with("fallback_reactive: forecast error"));
                assert!(
                    d.scaling.desired_replicas <= 2,
                    "scaled on an untrusted forecast: {}",
                    d.scaling.rule
                );
            }
        }
        assert!(saw);
        assert!(p.recent_forecast_error().unwrap() > 3.0);
    }

    #[test]
    fn forecast_interpolation() {
        let f = DemandForecast {
            issued_at: 0.0,
            step: 10.0,
            mean: vec![10.0, 20.0, 30.0],
            lower: vec![],
            upper: vec![],
            level: 0.9,
        };
        assert_eq!(value_at(&f, 5.0), Some(10.0));
        assert_eq!(value_at(&f, 15.0), Some(15.0));
        assert_eq!(value_at(&f, 100.0), Some(30.0));
        // No interval: the mean stands in for the upper bound.
        assert_eq!(peak_upper(&f, 0.0, 20.0, 1.0), Some(20.0));
        let bad = DemandForecast {
            mean: vec![f64::NAN],
            ..f
        };
        assert_eq!(value_at(&bad, 5.0), None);
    }

    /// A forecast whose mean is right but whose interval claims ±`half`.
    fn wide(now: f64, mean: f64, half: f64) -> DemandForecast {
        DemandForecast {
            issued_at: now,
            step: 10.0,
            mean: vec![mean; 30],
            upper: vec![mean + half; 30],
            lower: vec![(mean - half).max(0.0); 30],
            level: 0.9,
        }
    }

    fn scale_of(d: &Decision) -> f64 {
        let f = d.explanation.forecast.as_deref().unwrap();
        let v = f.split("interval_scale=").nth(1).unwrap();
        v.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    fn an_interval_the_errors_show_too_wide_is_narrowed_never_widened() {
        // Demand alternates 95 / 105 around a forecast of 100 whose interval
        // claims ±100: the errors (5) are 0.05 of the claim.
        let mut p = engine();
        let w = p.cfg.get().interval_calibration_window;
        let mut last = None;
        for k in 0..=w {
            let t = 10.0 * k as f64;
            let demand = if k % 2 == 0 { 95.0 } else { 105.0 };
            let backends = [obs("a", t, demand, 0.5, 0.01, 0.05)];
            let f = wide(t, 100.0, 100.0);
            let d = p.decide(&input(t, &backends, demand, Some(&f), replicas(4)));
            if k < w / 2 {
                assert_eq!(scale_of(&d), 1.0, "tick {k}: not enough scored yet");
            }
            last = Some(d);
        }
        let s = scale_of(last.as_ref().unwrap());
        assert!((0.04..=0.06).contains(&s), "scale {s}");
        // Errors beyond the claim (±1 claimed, ±5 realised) never widen it.
        let mut p = engine();
        let mut d = None;
        for k in 0..=w {
            let t = 10.0 * k as f64;
            let demand = if k % 2 == 0 { 95.0 } else { 105.0 };
            let backends = [obs("a", t, demand, 0.5, 0.01, 0.05)];
            let f = wide(t, 100.0, 1.0);
            d = Some(p.decide(&input(t, &backends, demand, Some(&f), replicas(4))));
        }
        assert_eq!(scale_of(d.as_ref().unwrap()), 1.0);
        // Off when the window is 0.
        let mut p = AyaPolicy::new(
            crate::config::AyaConfig {
                interval_calibration_window: 0,
                ..crate::config::AyaConfig::default()
            }
            .validate()
            .unwrap(),
        );
        let mut d = None;
        for k in 0..=w {
            let t = 10.0 * k as f64;
            let backends = [obs("a", t, 95.0, 0.5, 0.01, 0.05)];
            let f = wide(t, 100.0, 100.0);
            d = Some(p.decide(&input(t, &backends, 95.0, Some(&f), replicas(4))));
        }
        assert_eq!(scale_of(d.as_ref().unwrap()), 1.0);
    }
}
