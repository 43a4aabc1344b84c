//! Scaling: the short-term demand trend, the per-replica capacity and the
//! scale-up and scale-in rules.

use super::AyaPolicy;
use super::freshness::ForecastView;
use crate::capacity::{MIN_TREND_POINTS, median, trend_fit};
use crate::types::{BackendObservation, Explanation, ScalingSignal, TickInput, Time};

/// Whether `demand_rps` is a measurement ([`TickInput::demand_rps`] is
/// `NaN` while it is unknown).
pub(super) fn known_demand(demand_rps: f64) -> bool {
    demand_rps.is_finite() && demand_rps >= 0.0
}

/// A significant short-term rise of demand, projected ahead.
#[derive(Debug, Clone, Copy)]
pub(super) struct DemandTrend {
    /// Requests per second gained per second.
    pub(super) slope: f64,
    /// The line's value at the end of the projection horizon.
    pub(super) projected: f64,
    /// That horizon, seconds from now.
    pub(super) horizon: f64,
}

impl AyaPolicy {
    /// Record this tick's demand and fit the short-term trend over the last
    /// `trend_window` seconds. `Some` only for a rise whose slope is at least
    /// `trend_min_t` standard errors above zero (from four points on: three
    /// points on a line give an infinite t statistic).
    pub(super) fn demand_trend(
        &mut self,
        input: &TickInput<'_>,
        ex: &mut Explanation,
    ) -> Option<DemandTrend> {
        let c = self.cfg.get();
        let window = c.trend_window;
        if window <= 0.0 {
            self.demand_history.clear();
            return None;
        }
        if known_demand(input.demand_rps) && input.now.is_finite() {
            if self
                .demand_history
                .back()
                .is_some_and(|(t, _)| *t >= input.now)
            {
                // Time went backwards or repeated: start over rather than fit nonsense.
                self.demand_history.clear();
            }
            self.demand_history.push_back((input.now, input.demand_rps));
        }
        while self
            .demand_history
            .front()
            .is_some_and(|(t, _)| input.now - t > window + 1e-9)
        {
            self.demand_history.pop_front();
        }
        if self.demand_history.len() < MIN_TREND_POINTS {
            return None;
        }
        let ts: Vec<f64> = self
            .demand_history
            .iter()
            .map(|(t, _)| t - input.now)
            .collect();
        let ds: Vec<f64> = self.demand_history.iter().map(|(_, d)| *d).collect();
        let (line, t_stat) = trend_fit(&ts, &ds)?;
        if !(line.slope > 0.0 && t_stat >= c.trend_min_t) {
            return None;
        }
        // No further ahead than the data the line was fitted on: a slope of
        // one window says little about the demand several windows later.
        let horizon =
            (input.replicas.boot_time.max(0.0) + input.interval + c.trend_lookahead).min(window);
        let projected = line.predict(horizon);
        if !projected.is_finite() {
            return None;
        }
        ex.rules.push(format!(
            "demand_trend: rising {:.2} rps/s (t={:.1}) over {:.0}s -> {:.1} rps in {:.0}s",
            line.slope,
            t_stat.min(999.0),
            window,
            projected,
            horizon
        ));
        Some(DemandTrend {
            slope: line.slope,
            projected,
            horizon,
        })
    }

    fn per_replica_capacity(
        &self,
        input: &TickInput<'_>,
        healthy: &[&BackendObservation],
    ) -> Option<f64> {
        let caps: Vec<f64> = healthy
            .iter()
            .filter_map(|b| self.estimate(&b.backend, input.now, input.interval))
            .filter(|e| e.absolute && e.capacity_rps > 0.0)
            .map(|e| e.capacity_rps)
            .collect();
        if let Some(m) = median(&caps) {
            return Some(m);
        }
        // No model yet: infer from this window, assuming utilisation ∝ rate.
        let cpus: Vec<f64> = healthy
            .iter()
            .filter_map(|b| b.cpu_utilization)
            .filter(|c| c.is_finite())
            .collect();
        let rate: f64 = healthy
            .iter()
            .map(|b| b.request_rate)
            .filter(|r| r.is_finite())
            .sum();
        let mean_cpu = cpus.iter().sum::<f64>() / cpus.len().max(1) as f64;
        (cpus.len() == healthy.len() && !healthy.is_empty() && mean_cpu > 0.01 && rate > 0.0)
            .then(|| rate / healthy.len() as f64 * self.cfg.get().target_utilization / mean_cpu)
    }

    /// The replica count to ask for, and the rule that chose it.
    pub(super) fn scale(
        &mut self,
        input: &TickInput<'_>,
        healthy: &[&BackendObservation],
        fc: Option<ForecastView>,
        trend: Option<DemandTrend>,
        stale: bool,
        ex: &mut Explanation,
    ) -> ScalingSignal {
        let c = self.cfg.get().clone();
        let r = input.replicas;
        let (lo, hi) = (r.min, r.max.max(r.min));
        let current = r.current;
        let hold = |rule: String| ScalingSignal {
            desired_replicas: current.clamp(lo, hi),
            current_replicas: current,
            rule,
        };
        if stale {
            return hold("hold_stale_telemetry".into());
        }
        if !known_demand(input.demand_rps) {
            return hold("hold_unknown_demand: no demand measured yet".into());
        }
        let Some(cap) = self.per_replica_capacity(input, healthy) else {
            return hold("hold_no_capacity_estimate".into());
        };
        let demand = input.demand_rps.max(0.0);
        let need_obs = need(demand, cap);
        let trusted = fc.filter(|f| f.trusted);
        let need_fc = trusted.map(|f| need(f.peak_upper, cap));
        ex.inputs.push(format!(
            "replica_capacity={cap:.1}rps at target {:.2}",
            c.target_utilization
        ));
        let need_trend = trend.map(|t| need(t.projected, cap));
        let base_need = need_obs
            .max(need_fc.unwrap_or(0))
            .max(need_trend.unwrap_or(0));
        let up_target = if base_need > current {
            // Order a little beyond the need: fewer, larger steps up a ramp.
            let extra = (base_need as f64 * c.scale_up_headroom)
                .ceil()
                .min(u32::MAX as f64 / 4.0);
            base_need.saturating_add(extra as u32)
        } else {
            base_need
        };
        let needs = Needs {
            demand,
            cap,
            obs: need_obs,
            forecast: need_fc,
            trend: need_trend,
            base: base_need,
        };
        let (desired, rule) = if up_target > current {
            self.scale_up_rule(input.now, &needs, up_target, current, trend, trusted)
        } else {
            self.scale_in_rule(input.now, &needs, current, fc, trend)
        };
        let desired = desired.clamp(lo, hi);
        if desired != current {
            self.last_scale_action = Some(input.now);
            if desired > current {
                self.last_scale_up = Some(input.now);
            }
        }
        ScalingSignal {
            desired_replicas: desired,
            current_replicas: current,
            rule,
        }
    }

    /// The most a prediction may order in one action: `max(current ×
    /// max_scale_up_factor, current + max_scale_up_pods)` (Kubernetes' HPA
    /// scale-up policy, 100 % or 4 pods), or what `supported` asks for if
    /// that is more, headroom included. `supported` is the observed need for
    /// a forecast order, and the larger of the observed and forecast needs
    /// for a trend order. A projected warm-up ramp, a burst of noise or a
    /// young forecaster's wide band then costs one doubling per
    /// `scale_up_cooldown`, not a jump to the maximum; observed demand is
    /// never held back.
    fn prediction_limit(&self, current: u32, supported: u32) -> u32 {
        let c = self.cfg.get();
        let by_factor = (current as f64 * c.max_scale_up_factor)
            .floor()
            .min(u32::MAX as f64 / 2.0) as u32;
        let supported = supported.saturating_add(
            (supported as f64 * c.scale_up_headroom)
                .ceil()
                .min(u32::MAX as f64 / 4.0) as u32,
        );
        by_factor
            .max(current.saturating_add(c.max_scale_up_pods))
            .max(supported)
    }

    /// `up_target` within [`prediction_limit`](Self::prediction_limit), and
    /// the note saying so when it was cut.
    fn limited(&self, up_target: u32, current: u32, supported: u32) -> (u32, String) {
        let to = up_target.min(self.prediction_limit(current, supported));
        let note = if to < up_target {
            format!(" (limited to {to}: max_scale_up_factor, max_scale_up_pods)")
        } else {
            String::new()
        };
        (to, note)
    }

    /// Scale up to `up_target` (after the cool-down), naming what asked for it:
    /// the trend, the forecast, or the observed demand.
    fn scale_up_rule(
        &self,
        now: Time,
        needs: &Needs,
        up_target: u32,
        current: u32,
        trend: Option<DemandTrend>,
        trusted: Option<ForecastView>,
    ) -> (u32, String) {
        let c = self.cfg.get();
        let demand = needs.demand;
        if since(now, self.last_scale_up) < c.scale_up_cooldown {
            (current, "hold_scale_up_cooldown".to_string())
        } else if let Some(t) = trend.filter(|_| {
            needs
                .trend
                .is_some_and(|n| n >= needs.obs && n >= needs.forecast.unwrap_or(0))
        }) {
            let supported = needs.obs.max(needs.forecast.unwrap_or(0));
            let (to, limited) = self.limited(up_target, current, supported);
            (
                to,
                format!(
                    "scale_up_trend: demand rising {:.2} rps/s, {:.1}rps in {:.0}s needs {up_target}{limited}",
                    t.slope, t.projected, t.horizon
                ),
            )
        } else if needs.forecast.is_some_and(|n| n >= needs.obs) {
            let (to, limited) = self.limited(up_target, current, needs.obs);
            (
                to,
                format!(
                    "scale_up_forecast: upper bound over boot+interval needs {up_target}{limited}"
                ),
            )
        } else if trusted.is_some() {
            (
                up_target,
                format!("scale_up_observed: demand {demand:.1}rps needs {up_target}"),
            )
        } else {
            (
                up_target,
                format!(
                    "scale_up_reactive: demand {demand:.1}rps needs {up_target} (no trusted forecast)"
                ),
            )
        }
    }

    /// Scale in only when forecast and observation both fit the smaller
    /// fleet with the hysteresis margin, no rise is under way, after the
    /// cool-down, and never below what a scale-up would order.
    fn scale_in_rule(
        &mut self,
        now: Time,
        needs: &Needs,
        current: u32,
        fc: Option<ForecastView>,
        trend: Option<DemandTrend>,
    ) -> (u32, String) {
        let c = self.cfg.get();
        let trusted = fc.filter(|f| f.trusted);
        let shrunk = needs.cap * (1.0 - c.scale_in_hysteresis);
        // A significant rise blocks scale-in: capacity removed now would
        // be missing a boot time later.
        let fits_obs =
            need(needs.demand, shrunk).max(trend.map_or(0, |t| need(t.projected, shrunk)));
        // The most any tick of the stabilisation window needed (the window
        // is `scale_in_cooldown` long): Kubernetes' scale-down rule.
        self.recent_needs.push_back((now, fits_obs));
        while self
            .recent_needs
            .front()
            .is_some_and(|(t, _)| now - t > c.scale_in_cooldown + 1e-9)
        {
            self.recent_needs.pop_front();
        }
        let stabilised = self
            .recent_needs
            .iter()
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(fits_obs);
        let fits = match (fc, trusted) {
            (Some(_), Some(f)) => Some(fits_obs.max(need(f.peak_upper_in, shrunk))),
            // A forecast exists but is not trusted: no scale-in on it, but
            // the reactive rule still applies, as stable as HPA's: only to
            // what every tick of the last window fitted.
            (Some(_), None) => Some(stabilised),
            (None, _) => Some(fits_obs),
        };
        // Never below what the scale-up rule would order right now, its
        // headroom included (its look-ahead is longer): a scale-in that left
        // no margin would be undone by the next tick's noise.
        let floor = needs.base.saturating_add(
            (needs.base as f64 * c.scale_up_headroom)
                .ceil()
                .min(u32::MAX as f64 / 4.0) as u32,
        );
        match fits {
            Some(n) if n.max(floor) < current => {
                let n = n.max(floor);
                if since(now, self.last_scale_action) < c.scale_in_cooldown {
                    (current, "hold_scale_in_cooldown".to_string())
                } else {
                    let to = n.max(current.saturating_sub(c.max_scale_in_step));
                    let why = match (fc, trusted) {
                        (_, Some(_)) => "forecast and observation agree",
                        (Some(_), None) => {
                            "observation over the stabilisation window (forecast untrusted)"
                        }
                        (None, _) => "observation (no forecast)",
                    };
                    (
                        to,
                        format!(
                            "scale_in: {why}; {n} replicas fit with {:.0}% margin",
                            100.0 * c.scale_in_hysteresis
                        ),
                    )
                }
            }
            Some(_) => (current, "hold_within_band".to_string()),
            None => (current, "hold_untrusted_forecast".to_string()),
        }
    }
}

/// Replicas needed to carry `rps` at `per` requests per second each.
fn need(rps: f64, per: f64) -> u32 {
    (rps / per).ceil().max(0.0).min(u32::MAX as f64 / 2.0) as u32
}

/// Seconds since `t` (infinite when it never happened).
fn since(now: Time, t: Option<Time>) -> f64 {
    t.map_or(f64::INFINITY, |t| now - t)
}

/// What this tick needs, in replicas, by each signal.
struct Needs {
    /// Observed demand, requests per second.
    demand: f64,
    /// Per-replica capacity at the target utilisation.
    cap: f64,
    /// For the observed demand.
    obs: u32,
    /// For the trusted forecast's upper bound.
    forecast: Option<u32>,
    /// For the projected trend.
    trend: Option<u32>,
    /// The largest of the three.
    base: u32,
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::aya::AyaPolicy;
    use crate::config::AyaConfig;
    use crate::types::*;

    #[test]
    fn scale_up_happens_one_boot_time_ahead_of_a_forecast_ramp() {
        let mut p = engine();
        // Two replicas at cpu = 0.005/rps: capacity at 0.7 is 140 rps each.
        let mut first_up = None;
        let ramp_at = 400.0;
        for k in 0..40 {
            let t = k as f64 * 10.0;
            let rate = 100.0 + 4.0 * (k % 3) as f64;
            let backends = [
                obs("a", t, rate, 0.005 * rate, 0.01, 0.06),
                obs("b", t, rate, 0.005 * rate, 0.01, 0.06),
            ];
            let f = forecast(t, 2.0 * rate, 800.0, ramp_at);
            let d = p.decide(&input(t, &backends, 2.0 * rate, Some(&f), replicas(2)));
            if d.scaling.desired_replicas > 2 && first_up.is_none() {
                first_up = Some((t, d.scaling.desired_replicas, d.scaling.rule.clone()));
            }
        }
        let (t, n, rule) = first_up.expect("never scaled up");
        // boot 60 s + interval 10 s + lookahead before the ramp (the first
        // tick whose look-ahead window reaches it).
        let lead = 60.0 + 10.0 + AyaConfig::default().scale_lookahead;
        assert_eq!(t, ramp_at - (lead / 10.0).floor() * 10.0, "scaled at {t}");
        // 800 × 1.1 upper / 140 = 6.3 → 7, plus scale_up_headroom: ceil(0.1 × 7)
        // = 1: 8, of which one action may order max(2 × 2, 2 + 4) = 6.
        assert_eq!(n, 6);
        assert!(rule.starts_with("scale_up_forecast"), "{rule}");
        assert!(rule.contains("needs 8 (limited to 6"), "{rule}");
    }

    #[test]
    fn scale_in_needs_forecast_and_observation_to_agree() {
        // The demand jumps below are deliberate surprises; keep the forecast
        // trusted so that this test isolates the agreement rule.
        let cfg = AyaConfig {
            scale_in_cooldown: 0.0,
            forecast_error_fallback: 100.0,
            max_scale_in_step: 2,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let r = replicas(6);
        let mut run = |t: f64, demand: f64, fc: f64| {
            let per = demand / 6.0;
            let backends: Vec<_> = (0..6)
                .map(|i| {
                    obs(
                        &format!("r{i}"),
                        t,
                        per + (t / 10.0) % 3.0,
                        0.005 * (per + (t / 10.0) % 3.0),
                        0.01,
                        0.06,
                    )
                })
                .collect();
            let f = forecast(t, fc, fc, f64::INFINITY);
            p.decide(&input(t, &backends, demand, Some(&f), r))
        };
        // Warm up the capacity model (140 rps per replica at 0.7).
        for k in 0..5 {
            run(k as f64 * 10.0, 700.0, 700.0);
        }
        // Observation low, forecast high: hold.
        let d = run(50.0, 150.0, 700.0);
        assert_eq!(d.scaling.desired_replicas, 6, "{}", d.scaling.rule);
        // Forecast low, observation high: hold.
        let d = run(60.0, 700.0, 150.0);
        assert_eq!(d.scaling.desired_replicas, 6, "{}", d.scaling.rule);
        // Both low: scale in by at most max_scale_in_step.
        let d = run(70.0, 150.0, 150.0);
        assert_eq!(d.scaling.desired_replicas, 4, "{}", d.scaling.rule);
        assert!(d.scaling.rule.starts_with("scale_in"), "{}", d.scaling.rule);
    }

    #[test]
    fn scale_in_waits_for_the_cooldown() {
        let cfg = AyaConfig {
            forecast_error_fallback: 100.0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let backends: Vec<_> = (0..4)
            .map(|i| obs(&format!("r{i}"), 0.0, 10.0, 0.05, 0.01, 0.06))
            .collect();
        let f = forecast(0.0, 40.0, 40.0, f64::INFINITY);
        // A scale-up at t=0 (observation needs more than 4 at 700 rps).
        let hot: Vec<_> = (0..4)
            .map(|i| obs(&format!("r{i}"), 0.0, 175.0, 0.875, 0.01, 0.06))
            .collect();
        let fh = forecast(0.0, 700.0, 700.0, f64::INFINITY);
        let d = p.decide(&input(0.0, &hot, 700.0, Some(&fh), replicas(4)));
        assert!(
            d.scaling.desired_replicas > 4,
            "{} {:?}",
            d.scaling.rule,
            d.explanation
        );
        let quiet: Vec<_> = backends
            .iter()
            .map(|b| BackendObservation {
                observed_at: 10.0,
                ..b.clone()
            })
            .collect();
        let d = p.decide(&input(10.0, &quiet, 40.0, Some(&f), replicas(6)));
        assert_eq!(d.scaling.desired_replicas, 6, "{}", d.scaling.rule);
        assert_eq!(d.scaling.rule, "hold_scale_in_cooldown");
    }

    #[test]
    fn replicas_stay_within_bounds() {
        let mut p = engine();
        let backends: Vec<_> = (0..2)
            .map(|i| obs(&format!("r{i}"), 0.0, 500.0, 1.0, 0.5, 2.0))
            .collect();
        let f = forecast(0.0, 1e6, 1e6, 0.0);
        let r = ReplicaState {
            current: 2,
            ready: 2,
            min: 2,
            max: 5,
            boot_time: 30.0,
        };
        let d = p.decide(&input(0.0, &backends, 1e6, Some(&f), r));
        assert_eq!(d.scaling.desired_replicas, 5);
    }

    #[test]
    fn a_significant_demand_rise_orders_capacity_for_the_projected_load() {
        let mut p = engine();
        // Flat at 300 rps, with a little noise: no trend, no scaling.
        for k in 0..10 {
            let d = pool_tick(&mut p, k as f64 * 10.0, 3, 300.0 + [0.0, 3.0, -2.0][k % 3]);
            assert_eq!(d.scaling.desired_replicas, 3, "{:?}", d.explanation);
            assert!(
                !d.explanation
                    .rules
                    .iter()
                    .any(|r| r.starts_with("demand_trend")),
                "{:?}",
                d.explanation
            );
        }
        // Rising 2 rps/s: still within 3 × 140 rps now, but the line projected
        // over boot (60 s) + interval (10 s) + trend_lookahead (90 s) is not.
        let mut up = None;
        for k in 10..15 {
            let t = k as f64 * 10.0;
            let d = pool_tick(&mut p, t, 3, 300.0 + 20.0 * (k - 9) as f64);
            if d.scaling.desired_replicas > 3 {
                up = Some((t, d));
                break;
            }
        }
        let (t, d) = up.expect("a steady rise never scaled up");
        let demand_now = 300.0 + 20.0 * (t / 10.0 - 9.0);
        assert!(demand_now <= 3.0 * 140.0, "only trend can explain it");
        assert!(
            d.scaling.rule.starts_with("scale_up_trend"),
            "{}",
            d.scaling.rule
        );
        // More than the observation needs, at most what the true line
        // (2 rps/s over 160 s) needs plus the 10 % headroom.
        let got = d.scaling.desired_replicas as f64;
        assert!(got > (demand_now / 140.0).ceil(), "{:?}", d.explanation);
        let need = ((demand_now + 2.0 * 160.0) / 140.0).ceil();
        assert!(got <= need + (0.1 * need).ceil(), "{:?}", d.explanation);
    }

    #[test]
    fn an_unknown_demand_is_neither_a_rise_nor_a_reason_to_scale() {
        // The first tick comes before any telemetry. Reported as 0 (what the
        // drivers did), it enters the trend's history as a measurement (and
        // the first real one reads as a rise from zero); unknown, it does not.
        let run = |first: f64| {
            let mut p = engine();
            let d0 = p.decide(&input(0.0, &[], first, None, replicas(3)));
            let rules: Vec<String> = (1..4)
                .flat_map(|k| {
                    let d = pool_tick(&mut p, k as f64 * 10.0, 3, 300.0);
                    d.explanation.rules.into_iter().chain([d.scaling.rule])
                })
                .collect();
            let first_t = p.demand_history.front().map(|(t, _)| *t);
            (d0, rules, first_t)
        };
        let (d0, rules, first_t) = run(f64::NAN);
        assert_eq!(d0.scaling.desired_replicas, 3, "{:?}", d0.scaling);
        assert!(d0.scaling.rule.starts_with("hold_"), "{}", d0.scaling.rule);
        assert!(!rules.iter().any(|r| r.contains("trend")), "{rules:?}");
        assert_eq!(first_t, Some(10.0));
        assert_eq!(run(0.0).2, Some(0.0));
        // Unknown demand with a capacity model in place holds too (no scale-in
        // on an "idle" pool whose telemetry stopped).
        let mut p = engine();
        for k in 0..6 {
            pool_tick(&mut p, k as f64 * 10.0, 6, 300.0);
        }
        let backends: Vec<_> = (0..6)
            .map(|i| obs(&format!("r{i}"), 60.0, 50.0, 0.25, 0.01, 0.06))
            .collect();
        let d = p.decide(&input(60.0, &backends, f64::NAN, None, replicas(6)));
        assert_eq!(d.scaling.desired_replicas, 6, "{:?}", d.scaling);
        assert!(
            d.scaling.rule.starts_with("hold_unknown_demand"),
            "{}",
            d.scaling.rule
        );
    }

    #[test]
    fn trend_can_be_switched_off() {
        let cfg = AyaConfig {
            trend_window: 0.0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        for k in 0..16 {
            let d = pool_tick(&mut p, k as f64 * 10.0, 3, 200.0 + 20.0 * k as f64);
            assert!(
                !d.explanation.rules.iter().any(|r| r.contains("trend")),
                "{:?}",
                d.explanation
            );
        }
    }

    #[test]
    fn scale_in_never_goes_below_what_scale_up_would_order() {
        // Scale-in looks at the forecast over boot + interval, scale-up over a
        // longer horizon here; a peak only the longer look sees must stop the
        // scale-in at the scale-up level, not let it flap down and back up.
        let cfg = AyaConfig {
            scale_in_cooldown: 0.0,
            forecast_error_fallback: 100.0,
            scale_lookahead: 200.0,
            trend_window: 0.0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let n = 8;
        let run = |p: &mut AyaPolicy, t: f64, demand: f64, f: &DemandForecast| {
            let per = demand / n as f64;
            let backends: Vec<_> = (0..n)
                .map(|i| {
                    let rate = per + (t / 10.0) % 3.0;
                    obs(&format!("r{i}"), t, rate, 0.005 * rate, 0.01, 0.06)
                })
                .collect();
            p.decide(&input(t, &backends, demand, Some(f), replicas(n)))
        };
        for k in 0..5 {
            let t = k as f64 * 10.0;
            run(
                &mut p,
                t,
                1000.0,
                &forecast(t, 1000.0, 1000.0, f64::INFINITY),
            );
        }
        // Demand falls to 150 rps; the forecast is low for the next 150 s but
        // back at 500 rps 200 s out.
        let t = 50.0;
        let d = run(&mut p, t, 150.0, &forecast(t, 150.0, 500.0, t + 200.0));
        // Scale-up level: 500 × 1.1 (upper) / 140 → 4, plus the headroom a
        // scale-up would order (ceil(0.1 × 4) = 1): 5.
        assert_eq!(d.scaling.desired_replicas, 5, "{:?}", d.explanation);
        assert!(d.scaling.rule.starts_with("scale_in"), "{}", d.scaling.rule);
    }

    #[test]
    fn a_steep_trend_orders_at_most_a_doubling_and_no_further_than_its_window() {
        // A warm-up ramp: 2 replicas, demand climbing 10 → 200 rps in 40 s.
        // The line fitted over the 60 s window, projected over boot + interval
        // + lookahead (160 s), would ask for (200 + 4.75 × 160) / 140 ≈ 7;
        // projected no further than the window (60 s) and limited to a
        // doubling (or +4 replicas) of the 2 there are, it asks for 6.
        let first_trend_order = |n: u32, demands: &[f64]| {
            let mut p = engine();
            let mut seen = Vec::new();
            for (k, demand) in demands.iter().enumerate() {
                let d = pool_tick(&mut p, k as f64 * 10.0, n, *demand);
                seen.push((d.scaling.desired_replicas, d.scaling.rule.clone()));
                if d.scaling.rule.starts_with("scale_up_trend") {
                    return (*demand, d.scaling.desired_replicas, d.scaling.rule, seen);
                }
            }
            panic!("no trend order: {seen:?}")
        };
        // 5 rps/s: the line at +60 s (not +160 s) asks for ceil(460 / 140) +
        // headroom = 5.
        let (demand, got, rule, seen) = first_trend_order(2, &[10.0, 60.0, 110.0, 160.0, 210.0]);
        assert!(
            rule.contains("in 60s"),
            "projected over the window only: {rule}"
        );
        assert_eq!(got, 5, "{seen:?}");
        assert!(
            got > (demand / 140.0_f64).ceil() as u32,
            "still ahead of the reactive need"
        );
        // 30 rps/s on 10 replicas (1,400 rps at the target): the line at
        // +60 s (3,000 rps) asks for 22 + 3, but an extrapolation may at most
        // double the pool (the observed 1,200 rps need 9 + 1).
        let (_, got, rule, seen) = first_trend_order(10, &[300.0, 600.0, 900.0, 1200.0]);
        assert_eq!(got, 20, "{seen:?}");
        assert!(rule.contains("limited to 20"), "{rule}");
    }

    #[test]
    fn an_untrusted_forecast_scales_in_only_after_a_low_window() {
        // Forecast errors above the fallback make the forecast untrusted; the
        // reactive scale-in then waits until every tick of the last
        // `scale_in_cooldown` seconds fitted the smaller fleet (HPA's rule),
        // instead of holding the fleet forever.
        let cfg = AyaConfig {
            forecast_error_fallback: 0.001,
            trend_window: 0.0,
            ..AyaConfig::default()
        };
        let window = cfg.scale_in_cooldown;
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let n = 8;
        let tick = |p: &mut AyaPolicy, t: f64, demand: f64| {
            let per = demand / n as f64;
            let backends: Vec<_> = (0..n)
                .map(|i| obs(&format!("r{i}"), t, per, 0.005 * per, 0.01, 0.06))
                .collect();
            // A forecast that is always far off: never trusted.
            let f = forecast(t, demand * 3.0, demand * 3.0, f64::INFINITY);
            p.decide(&input(t, &backends, demand, Some(&f), replicas(n)))
        };
        let mut t = 0.0;
        for _ in 0..5 {
            tick(&mut p, t, 1000.0);
            t += 10.0;
        }
        // Demand drops to 200 rps (2 replicas' worth): no scale-in while the
        // window still holds the busy ticks.
        let low_from = t;
        let mut first_in = None;
        while t < low_from + window + 60.0 {
            let d = tick(&mut p, t, 200.0);
            if d.scaling.desired_replicas < n && first_in.is_none() {
                first_in = Some((t, d.scaling.rule.clone()));
            }
            t += 10.0;
        }
        let (at, rule) = first_in.expect("an untrusted forecast held the fleet");
        assert!(
            at - low_from >= window - 10.0,
            "scaled in after {} s",
            at - low_from
        );
        assert!(rule.contains("forecast untrusted"), "{rule}");
    }
}
