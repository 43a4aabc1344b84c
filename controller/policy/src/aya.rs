//! [`AyaPolicy`]: Aya's predictive decision engine.
//!
//! Each tick, in this order (every step leaves a rule in the explanation):
//!
//! 1. **Freshness.** If no new observation has arrived for
//!    `stale_intervals × interval`, the models are not updated and the
//!    previous weights are held (`fallback_reactive: stale telemetry`). A
//!    constant delay is not staleness; it is reported as the telemetry lag.
//! 2. **Capacity models** ([`crate::capacity`]) absorb each healthy backend's
//!    window: load → CPU and load → latency regressions plus a cost trend.
//! 3. **Forecast check.** The forecast made one interval ago is scored
//!    against the demand that arrived; when the recent mean absolute
//!    percentage error exceeds `forecast_error_fallback` (or there is no
//!    forecast) the engine uses the observed demand instead (reactive).
//! 4. **Outlier ejection** on error rate or latency (p50, or in-flight/rate
//!    by Little's law, which sees a stuck backend before any slow response
//!    completes), within an Envoy-style ejection budget and time.
//! 5. **Weights** for the forecast load `L` over backends of full capacity
//!    `μ_i`: by default (`objective = tail`) every backend that gets traffic
//!    keeps the same spare capacity `μ_i − x_i` ([`tail_split`]); or the
//!    mean-latency square-root rule ([`latency_split`]); or equal predicted
//!    utilisation (`u = (L + Σ a_i/b_i) / Σ 1/b_i`, `x_i = (u - a_i)/b_i`).
//!    A share correction steers the traffic the data plane actually sends
//!    towards the planned split. A homogeneous pool gets equal weights (so
//!    least request stays unbiased). Then smoothing, a bounded step and a
//!    floor ([`crate::weights`]). Two blast-radius bounds follow: no
//!    backend plans more than `max_capacity_share` × its share of the
//!    pool's capacity, and a backend seen unhealthy or erroring within
//!    `suspicion_window` seconds gets at most the mean weight.
//! 6. **Scaling** from the largest of observed demand, the upper forecast
//!    bound over the next `boot_time + interval` seconds and a significant
//!    short-term demand trend projected a little beyond that, at the target
//!    utilisation plus a headroom on scale-up; scale-in only when forecast
//!    and observation both fit the smaller fleet with a hysteresis margin,
//!    no rise is under way, after a cool-down, and never below what a
//!    scale-up would order.
//! 7. **Algorithm selection**: ring hash on affinity; peak-EWMA when latency
//!    outliers exceed the ejection budget; otherwise least request (weighted
//!    by the split when capacities differ), which reacts to slow or stuck
//!    hosts the telemetry has not shown yet. On a pool known to be
//!    homogeneous whose data plane ejects failing hosts (step 8), least
//!    request compares every host instead of two random picks
//!    (`join_shortest_queue`, Envoy's `FULL_SCAN`). Weighted round robin is chosen
//!    only when `score_algorithms` is on and the driver's scorer
//!    ([`crate::scoring`]) predicts it better. A switch back from an urgent
//!    choice waits `algorithm_switch_ticks` ticks in a row.
//! 8. **Data-plane outlier detection** ([`outlier`]): Envoy's consecutive-5xx
//!    ejection is published on while the pool can lose the hosts it may
//!    eject (`outlier_detection_5xx`, `outlier_detection_utilization`).
//! 9. **In-flight limit** ([`shedding`]): with the clients' timeout known,
//!    the data plane may keep at most the serving pool's full capacity ×
//!    `request_timeout` × `in_flight_timeout_share` requests in flight; under
//!    overload the excess is refused at once instead of timing out.
//!
//! The engine is deterministic: it uses no randomness and iterates per-backend
//! state in name order.

mod algorithm;
use algorithm::PoolShape;
mod ejection;
mod freshness;
mod outlier;
mod scaling;
mod shedding;
mod weights;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::capacity::{CapacityEstimate, CapacityModel};
use crate::config::ValidAyaConfig;
use crate::scoring::AlgorithmScorer;
use crate::types::{
    BackendObservation, Decision, Explanation, Headroom, LbAlgorithm, Policy, TickInput, Time,
};

use algorithm::{ScoreVerdict, ScorerHandle};
use ejection::Ejection;

pub use weights::{latency_split, tail_split};

/// The cost trend is extrapolated this many control intervals ahead: about
/// the time a new weight takes to show in the next window's figures plus one
/// tick, so a degrading backend is already down-weighted when it would
/// otherwise reach its knee.
const TREND_LOOKAHEAD_TICKS: f64 = 3.0;

/// Aya's predictive policy. Build with [`AyaPolicy::new`] from a checked
/// configuration.
#[derive(Debug, Clone)]
pub struct AyaPolicy {
    cfg: ValidAyaConfig,
    models: BTreeMap<String, CapacityModel>,
    weights: BTreeMap<String, f64>,
    /// Per-backend multiplier that maps the planned split to weights.
    share_correction: BTreeMap<String, f64>,
    ejections: BTreeMap<String, Ejection>,
    forecast_errors: VecDeque<f64>,
    /// The prediction made one interval ago: (target time, mean, the
    /// interval's upper half-width there), scored at the next tick.
    pending_prediction: Option<(Time, f64, f64)>,
    /// Recent |error| / claimed half-width of the one-interval-ahead
    /// forecasts: the interval calibration's sample.
    interval_ratios: VecDeque<f64>,
    last_scale_action: Option<Time>,
    last_scale_up: Option<Time>,
    algorithm: Option<LbAlgorithm>,
    algorithm_rule: String,
    candidate: Option<(LbAlgorithm, u32)>,
    /// Observed demand per tick, for the short-term trend (oldest first).
    demand_history: VecDeque<(Time, f64)>,
    /// Replicas the observed demand needed at each recent tick (scale-in
    /// margin included), for the reactive scale-in's stabilisation window.
    recent_needs: VecDeque<(Time, u32)>,
    /// Predicts algorithms' p99 before a switch (see [`crate::scoring`]).
    scorer: Option<ScorerHandle>,
    /// Last scoring verdict, reused for `score_horizon` seconds.
    score_verdict: Option<ScoreVerdict>,
    /// Newest observation time seen and the tick time it first arrived.
    newest_seen: Option<(Time, Time)>,
    /// When each backend was last seen in trouble (unhealthy, or erroring
    /// at the ejection threshold): its share stays capped for a while.
    last_trouble: BTreeMap<String, Time>,
    /// Consecutive observation windows each backend has been a latency
    /// outlier in, with the newest window counted.
    latency_streaks: BTreeMap<String, (Time, u32)>,
    /// The data plane's outlier detection last published, and when it changed.
    od_published: crate::types::OutlierDetection,
    od_changed_at: Option<Time>,
    /// Whether the capacity spread last showed a homogeneous pool (changes
    /// only on evidence, see `classify_spread`).
    pool_homogeneous: bool,
    /// The in-flight limit last published (see [`shedding`]).
    max_requests_published: Option<u32>,
}

impl AyaPolicy {
    /// A fresh engine. It keeps no randomness: identical inputs give
    /// identical decisions.
    pub fn new(cfg: ValidAyaConfig) -> Self {
        AyaPolicy {
            cfg,
            models: BTreeMap::new(),
            weights: BTreeMap::new(),
            share_correction: BTreeMap::new(),
            ejections: BTreeMap::new(),
            forecast_errors: VecDeque::new(),
            pending_prediction: None,
            interval_ratios: VecDeque::new(),
            last_scale_action: None,
            last_scale_up: None,
            algorithm: None,
            algorithm_rule: String::new(),
            candidate: None,
            demand_history: VecDeque::new(),
            recent_needs: VecDeque::new(),
            scorer: None,
            score_verdict: None,
            newest_seen: None,
            last_trouble: BTreeMap::new(),
            latency_streaks: BTreeMap::new(),
            od_published: crate::types::OutlierDetection::OFF,
            od_changed_at: None,
            pool_homogeneous: true,
            max_requests_published: None,
        }
    }

    /// An engine that asks `scorer` to predict the outcome of an algorithm
    /// switch before making it (when `score_algorithms` is set).
    pub fn with_scorer(cfg: ValidAyaConfig, scorer: Arc<dyn AlgorithmScorer>) -> Self {
        AyaPolicy {
            scorer: Some(ScorerHandle(scorer)),
            ..AyaPolicy::new(cfg)
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ValidAyaConfig {
        &self.cfg
    }

    /// Mean absolute percentage error of recent one-interval-ahead forecasts.
    pub fn recent_forecast_error(&self) -> Option<f64> {
        (!self.forecast_errors.is_empty())
            .then(|| self.forecast_errors.iter().sum::<f64>() / self.forecast_errors.len() as f64)
    }

    fn estimate(&self, name: &str, now: Time, interval: f64) -> Option<CapacityEstimate> {
        self.estimate_at(
            name,
            self.cfg.get().target_utilization,
            now,
            TREND_LOOKAHEAD_TICKS * interval,
        )
    }

    /// The capacity model's estimate for `name` at utilisation `target`,
    /// its cost trend extrapolated `lookahead` seconds.
    fn estimate_at(
        &self,
        name: &str,
        target: f64,
        now: Time,
        lookahead: f64,
    ) -> Option<CapacityEstimate> {
        let c = self.cfg.get();
        self.models.get(name)?.estimate(
            target,
            now,
            lookahead,
            c.capacity_min_points,
            c.trend_points,
            c.degrade_threshold,
        )
    }

    /// Full (100 % utilisation) capacity of `name` in requests per second,
    /// when its model gives an absolute, positive one.
    fn full_capacity(&self, name: &str, now: Time, lookahead: f64) -> Option<f64> {
        self.estimate_at(name, 1.0, now, lookahead)
            .filter(|e| e.absolute && e.capacity_rps.is_finite() && e.capacity_rps > 0.0)
            .map(|e| e.capacity_rps)
    }
}

impl AyaPolicy {
    /// When the forecast runs the serving backends out of capacity (at full
    /// utilisation, from their capacity models): the predictive alert's
    /// inputs. `None` without a forecast, or while any serving backend has
    /// no capacity model yet (the pool's capacity is then unknown).
    fn headroom(&self, input: &TickInput<'_>, serving: &[&BackendObservation]) -> Option<Headroom> {
        let f = input.forecast?;
        if serving.is_empty()
            || f.step.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
            || f.mean.is_empty()
        {
            return None;
        }
        let mut capacity = 0.0;
        for b in serving {
            capacity += self.full_capacity(
                &b.backend,
                input.now,
                TREND_LOOKAHEAD_TICKS * input.interval,
            )?;
        }
        let ahead = |k: usize| f.issued_at + (k + 1) as f64 * f.step - input.now;
        let first_over = |xs: &[f64]| -> Option<f64> {
            if input.demand_rps > capacity {
                return Some(0.0);
            }
            xs.iter()
                .position(|v| *v > capacity)
                .map(|k| ahead(k).max(0.0))
        };
        let upper = first_over(&f.upper);
        Some(Headroom {
            capacity_rps: capacity,
            horizon_seconds: ahead(f.mean.len() - 1).max(0.0),
            exhausted_upper_in: upper,
            exhausted_mean_in: first_over(&f.mean),
            exhausted_lower_in: first_over(&f.lower),
            scale_up_deadline_in: upper.map(|u| u - input.replicas.boot_time.max(0.0)),
        })
    }
}

/// The explanation line of a headroom forecast.
fn headroom_rule(h: &Headroom) -> String {
    let at = |t: Option<f64>| t.map_or_else(|| "-".to_string(), |t| format!("{t:.0}s"));
    match h.exhausted_upper_in {
        None => format!(
            "headroom: capacity {:.1} rps not exhausted within {:.0}s by the forecast's upper bound",
            h.capacity_rps, h.horizon_seconds
        ),
        Some(u) => format!(
            "headroom: capacity {:.1} rps exhausted in {} (upper) / {} (mean) / {} (lower); scale-up must start within {:.0}s",
            h.capacity_rps,
            at(Some(u)),
            at(h.exhausted_mean_in),
            at(h.exhausted_lower_in),
            h.scale_up_deadline_in.unwrap_or(u)
        ),
    }
}

impl Policy for AyaPolicy {
    fn name(&self) -> &str {
        "aya"
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        let mut ex = Explanation::default();
        let interval = if input.interval.is_finite() && input.interval > 0.0 {
            input.interval
        } else {
            1.0
        };
        let input = TickInput { interval, ..*input };
        let healthy: Vec<&BackendObservation> =
            input.backends.iter().filter(|b| b.healthy).collect();
        ex.inputs.push(format!(
            "now={:.1} interval={:.1}s demand_rps={:.1}",
            input.now, interval, input.demand_rps
        ));
        ex.inputs.push(format!(
            "backends healthy={}/{} replicas current={} ready={} min={} max={} boot_time={:.0}s",
            healthy.len(),
            input.backends.len(),
            input.replicas.current,
            input.replicas.ready,
            input.replicas.min,
            input.replicas.max,
            input.replicas.boot_time
        ));

        let stale = self.stale_telemetry(&input, &mut ex);
        if !stale {
            for b in &healthy {
                self.models
                    .entry(b.backend.clone())
                    .or_insert_with(|| CapacityModel::new(self.cfg.get().capacity_window))
                    .observe(b);
            }
        }
        // Forget state of backends that left the cluster.
        let present: Vec<&str> = input.backends.iter().map(|b| b.backend.as_str()).collect();
        self.models.retain(|k, _| present.contains(&k.as_str()));
        self.ejections.retain(|k, _| present.contains(&k.as_str()));
        self.last_trouble
            .retain(|k, _| present.contains(&k.as_str()));
        self.latency_streaks
            .retain(|k, _| present.contains(&k.as_str()));
        if !stale {
            self.note_trouble(&input);
        }

        let fc = self.view_forecast(&input, &mut ex);
        let load = match fc {
            Some(f) if f.trusted => f.next,
            _ => {
                if fc.is_none() {
                    ex.rules
                        .push("no forecast -> weights at observed demand".into());
                }
                // Unknown (no telemetry yet): the weights see an idle pool.
                if scaling::known_demand(input.demand_rps) {
                    input.demand_rps
                } else {
                    0.0
                }
            }
        };

        let (ejected, outliers_left) = if stale {
            (Vec::new(), false)
        } else {
            self.eject(&input, &healthy, &mut ex)
        };
        let mut active: Vec<&BackendObservation> = healthy
            .iter()
            .copied()
            .filter(|b| !ejected.contains(&b.backend))
            .collect();
        if input.backends.is_empty() {
            ex.rules.push("no observations yet".into());
        } else if active.is_empty() {
            // Panic mode (as Envoy's panic threshold): with nothing healthy,
            // spreading over everything beats sending nowhere.
            ex.rules
                .push("panic: no healthy backend, weighting all".into());
            active = input.backends.iter().collect();
        }
        let (weights, spread) = self.compute_weights(&input, &active, load, stale, &mut ex);
        let trend = self.demand_trend(&input, &mut ex);
        let scaling = self.scale(&input, &healthy, fc, trend, stale, &mut ex);
        ex.rules.push(format!("scaling: {}", scaling.rule));
        if !stale {
            ex.headroom = self.headroom(&input, &active);
            if let Some(h) = &ex.headroom {
                ex.rules.push(headroom_rule(h));
            }
        }
        let outlier_detection =
            self.outlier_detection(&input, &active, load.max(input.demand_rps), stale, &mut ex);
        let data_plane_ejects = outlier_detection.is_some_and(|o| o.consecutive_5xx > 0);
        let algorithm = self.choose_algorithm(
            &input,
            &active,
            (&weights, load),
            PoolShape {
                spread,
                outliers_left,
                data_plane_ejects,
            },
            &mut ex,
        );
        let max_requests = self.max_requests(&input, &active, stale, &mut ex);
        Decision {
            at: input.now,
            weights,
            ejected,
            scaling,
            algorithm,
            outlier_detection,
            max_requests,
            explanation: ex,
        }
    }
}

#[cfg(test)]
mod tests;
