//! [`AyaPolicy`]: Aya's predictive decision engine.
//!
//! Each tick, in this order (every step leaves a rule in the explanation):
//!
//! 1. **Freshness.** If the newest observation is older than
//!    `stale_intervals × interval`, the models are not updated and the
//!    previous weights are held (`fallback_reactive: stale telemetry`).
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
//!    floor ([`crate::weights`]).
//! 6. **Scaling** from the largest of observed demand, the upper forecast
//!    bound over the next `boot_time + interval` seconds and a significant
//!    short-term demand trend projected a little beyond that, at the target
//!    utilisation plus a headroom on scale-up; scale-in only when forecast
//!    and observation both fit the smaller fleet with a hysteresis margin,
//!    no rise is under way, after a cool-down, and never below what a
//!    scale-up would order.
//! 7. **Algorithm selection** (ring hash on affinity; peak-EWMA when latency
//!    outliers exceed the ejection budget; least request when service times
//!    vary; weighted round robin when capacities differ and service times are
//!    steady; round robin otherwise), switched only after it wins
//!    `algorithm_switch_ticks` ticks in a row and, when enabled and the
//!    driver provides a scorer ([`crate::scoring`]), only when the switch is
//!    predicted to help.
//!
//! The engine is deterministic: it uses no randomness and iterates per-backend
//! state in name order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::capacity::{
    CapacityEstimate, CapacityModel, MIN_TREND_POINTS, median, positive, trend_fit,
};
use crate::config::{ValidAyaConfig, WeightObjective};
use crate::scoring::{AlgorithmScorer, PoolBackend, PoolSnapshot};
use crate::types::{
    AlgorithmChoice, BackendObservation, BackendWeight, Decision, DemandForecast, Explanation,
    LbAlgorithm, Policy, ScalingSignal, TickInput, Time,
};
use crate::weights::{WEIGHT_SCALE, smooth_bounded, to_published};

/// The cost trend is extrapolated this many control intervals ahead: about
/// the time a new weight takes to show in the next window's figures plus one
/// tick, so a degrading backend is already down-weighted when it would
/// otherwise reach its knee.
const TREND_LOOKAHEAD_TICKS: f64 = 3.0;

/// Latency ejection needs a pool of at least this many backends with traffic:
/// with fewer, "the median" is one of the suspects.
const MIN_POOL_FOR_LATENCY_EJECTION: usize = 3;

/// An error outlier must also exceed this multiple of the pool's median error
/// rate: when everyone fails, it is an outage, and ejecting does not help.
const ERROR_OUTLIER_OVER_MEDIAN: f64 = 2.0;

/// Shares below this (planned or observed) are too small to correct on:
/// one window's count of a few requests is mostly noise.
const MIN_SHARE_FOR_CORRECTION: f64 = 0.005;

/// Bounds of the share-correction multiplier.
const SHARE_CORRECTION_RANGE: (f64, f64) = (0.25, 4.0);

/// Internal weights are rescaled when their mean leaves this band, so that
/// integer rounding keeps its resolution over long runs.
const WEIGHT_MEAN_BAND: (f64, f64) = (10.0, 10_000.0);

/// Ejection state of one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ejection {
    until: Time,
    count: u32,
    released_at: Option<Time>,
}

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
    pending_prediction: Option<(Time, f64)>,
    last_scale_action: Option<Time>,
    last_scale_up: Option<Time>,
    algorithm: Option<LbAlgorithm>,
    algorithm_rule: String,
    candidate: Option<(LbAlgorithm, u32)>,
    /// Observed demand per tick, for the short-term trend (oldest first).
    demand_history: VecDeque<(Time, f64)>,
    /// Predicts algorithms' p99 before a switch (see [`crate::scoring`]).
    scorer: Option<ScorerHandle>,
    /// Last scoring verdict, reused for `score_horizon` seconds.
    score_verdict: Option<ScoreVerdict>,
}

/// The injected scorer, shared (it is stateless) so the engine stays `Clone`.
#[derive(Clone)]
struct ScorerHandle(Arc<dyn AlgorithmScorer>);

impl std::fmt::Debug for ScorerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlgorithmScorer")
    }
}

/// Outcome of scoring `proposed` against `current` at `at`.
#[derive(Debug, Clone, PartialEq)]
struct ScoreVerdict {
    current: LbAlgorithm,
    proposed: LbAlgorithm,
    at: Time,
    /// Whether the proposal may go ahead.
    switch: bool,
    /// What was predicted, for the explanation.
    note: String,
}

/// A significant short-term rise of demand, projected ahead.
#[derive(Debug, Clone, Copy)]
struct DemandTrend {
    /// Requests per second gained per second.
    slope: f64,
    /// The line's value at the end of the projection horizon.
    projected: f64,
    /// That horizon, seconds from now.
    horizon: f64,
}

/// What the forecast says for this tick, and whether it is trusted.
#[derive(Debug, Clone, Copy)]
struct ForecastView {
    next: f64,
    peak_upper: f64,
    /// Largest upper bound over the scale-in horizon.
    peak_upper_in: f64,
    trusted: bool,
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
            last_scale_action: None,
            last_scale_up: None,
            algorithm: None,
            algorithm_rule: String::new(),
            candidate: None,
            demand_history: VecDeque::new(),
            scorer: None,
            score_verdict: None,
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

    /// The pool as a scorer should model it: each active backend's full
    /// capacity (from its CPU model) and the weight about to be published.
    /// `None` unless every backend has an absolute capacity estimate.
    fn snapshot(
        &self,
        input: &TickInput<'_>,
        weights: &[BackendWeight],
        load: f64,
        variable_service: bool,
    ) -> Option<PoolSnapshot> {
        let mut backends = Vec::with_capacity(weights.len());
        for w in weights {
            let e = self.estimate(&w.backend, input.now, input.interval)?;
            let line = e.cpu.filter(|_| e.absolute)?;
            let mu = (1.0 - line.intercept) / line.slope;
            if !positive(mu) {
                return None;
            }
            backends.push(PoolBackend {
                backend: w.backend.clone(),
                capacity_rps: mu,
                weight: w.weight,
            });
        }
        (!backends.is_empty() && positive(load)).then(|| PoolSnapshot {
            backends,
            load_rps: load,
            horizon: self.cfg.get().score_horizon,
            variable_service,
        })
    }

    /// Whether the proposed switch may go ahead, by prediction. `None` when
    /// scoring is off or cannot be done (the rules decide alone).
    fn scored_switch(
        &mut self,
        current: LbAlgorithm,
        proposed: LbAlgorithm,
        now: Time,
        pool: Option<&PoolSnapshot>,
        ex: &mut Explanation,
    ) -> Option<bool> {
        let c = self.cfg.get();
        if !c.score_algorithms {
            return None;
        }
        if let Some(v) = &self.score_verdict
            && v.current == current
            && v.proposed == proposed
            && now - v.at < c.score_horizon
        {
            ex.rules
                .push(format!("algorithm_scored (cached): {}", v.note));
            return Some(v.switch);
        }
        let Some(scorer) = &self.scorer else {
            ex.rules
                .push("algorithm_scoring: no scorer in this driver, rules decide".into());
            return None;
        };
        let Some(pool) = pool else {
            ex.rules
                .push("algorithm_scoring: no absolute capacity model yet, rules decide".into());
            return None;
        };
        let (Some(cur), Some(new)) = (
            scorer.0.score(current, pool).filter(|x| x.is_finite()),
            scorer.0.score(proposed, pool).filter(|x| x.is_finite()),
        ) else {
            ex.rules
                .push("algorithm_scoring: scorer could not tell, rules decide".into());
            return None;
        };
        let switch = new < cur * (1.0 - c.score_min_gain);
        let note = format!(
            "predicted p99 {current} {:.1}ms vs {proposed} {:.1}ms over {:.0}s at {:.1}rps -> {}",
            1e3 * cur,
            1e3 * new,
            pool.horizon,
            pool.load_rps,
            if switch { "switch" } else { "keep" }
        );
        ex.rules.push(format!("algorithm_scored: {note}"));
        self.score_verdict = Some(ScoreVerdict {
            current,
            proposed,
            at: now,
            switch,
            note,
        });
        Some(switch)
    }

    /// Record this tick's demand and fit the short-term trend over the last
    /// `trend_window` seconds. `Some` only for a rise whose slope is at least
    /// `trend_min_t` standard errors above zero (from four points on: three
    /// points on a line give an infinite t statistic).
    fn demand_trend(&mut self, input: &TickInput<'_>, ex: &mut Explanation) -> Option<DemandTrend> {
        let c = self.cfg.get();
        let window = c.trend_window;
        if window <= 0.0 {
            self.demand_history.clear();
            return None;
        }
        if input.demand_rps.is_finite() && input.demand_rps >= 0.0 && input.now.is_finite() {
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
        let horizon = input.replicas.boot_time.max(0.0) + input.interval + c.trend_lookahead;
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
        let c = self.cfg.get();
        self.models.get(name)?.estimate(
            c.target_utilization,
            now,
            TREND_LOOKAHEAD_TICKS * interval,
            c.capacity_min_points,
            c.trend_points,
            c.degrade_threshold,
        )
    }

    fn view_forecast(
        &mut self,
        input: &TickInput<'_>,
        ex: &mut Explanation,
    ) -> Option<ForecastView> {
        let c = self.cfg.get();
        // Score the prediction made one interval ago.
        if let Some((target_t, predicted)) = self.pending_prediction.take()
            && (input.now - target_t).abs() <= 0.5 * input.interval.max(1e-9)
            && input.demand_rps.is_finite()
        {
            let err = (predicted - input.demand_rps).abs() / input.demand_rps.abs().max(1.0);
            self.forecast_errors.push_back(err);
            while self.forecast_errors.len() > c.forecast_error_window {
                self.forecast_errors.pop_front();
            }
        }
        let f = input.forecast?;
        let Some(next) = value_at(f, input.now + input.interval) else {
            ex.rules.push("forecast_invalid -> reactive".into());
            return None;
        };
        let horizon = input.replicas.boot_time.max(0.0) + input.interval + c.scale_lookahead;
        let peak_upper_up = peak_upper(f, input.now, horizon).unwrap_or(next).max(next);
        let horizon_in = input.replicas.boot_time.max(0.0) + input.interval + c.scale_in_lookahead;
        let peak_upper_in = peak_upper(f, input.now, horizon_in)
            .unwrap_or(next)
            .max(next);
        self.pending_prediction = Some((input.now + input.interval, next));
        let mape = self.recent_forecast_error();
        let trusted = mape.is_none_or(|e| e <= c.forecast_error_fallback);
        ex.forecast = Some(format!(
            "issued_at={:.1} step={:.1}s next={:.1}rps peak_upper(boot+interval+lookahead={:.0}s)={:.1}rps level={:.2} recent_mape={} used={}",
            f.issued_at,
            f.step,
            next,
            horizon,
            peak_upper_up,
            f.level,
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

    /// Decide ejections among healthy backends. Returns the set of ejected
    /// names and whether outliers were left in the pool for lack of budget.
    fn eject(
        &mut self,
        input: &TickInput<'_>,
        healthy: &[&BackendObservation],
        ex: &mut Explanation,
    ) -> (Vec<String>, bool) {
        let c = self.cfg.get().clone();
        let now = input.now;
        let interval = input.interval.max(1e-9);
        // Release the ones whose time is up.
        for (name, e) in self.ejections.iter_mut() {
            if e.released_at.is_none() && now >= e.until {
                e.released_at = Some(now);
                ex.rules
                    .push(format!("reinstate {name}: ejection time over"));
            }
        }
        let active_ejected: Vec<String> = self
            .ejections
            .iter()
            .filter(|(n, e)| e.released_at.is_none() && healthy.iter().any(|b| &b.backend == *n))
            .map(|(n, _)| n.clone())
            .collect();

        let with_traffic: Vec<&&BackendObservation> = healthy
            .iter()
            .filter(|b| !active_ejected.contains(&b.backend))
            .filter(|b| b.request_rate * interval >= 1.0 || b.in_flight >= 1.0)
            .collect();
        let lat = |b: &BackendObservation| {
            let little = b.in_flight.max(0.0) / b.request_rate.max(1.0 / interval);
            b.latency_p50.max(little)
        };
        let lats: Vec<f64> = with_traffic.iter().map(|b| lat(b)).collect();
        let errs: Vec<f64> = with_traffic.iter().map(|b| b.error_rate).collect();
        let med_lat = median(&lats);
        let med_err = median(&errs).unwrap_or(0.0);

        let mut outliers: Vec<(f64, String, String)> = Vec::new();
        for b in &with_traffic {
            if b.error_rate.is_finite()
                && b.error_rate >= c.eject_error_rate
                && b.error_rate > ERROR_OUTLIER_OVER_MEDIAN * med_err
            {
                outliers.push((
                    f64::INFINITY,
                    b.backend.clone(),
                    format!(
                        "error_rate {:.3} >= {:.3}",
                        b.error_rate, c.eject_error_rate
                    ),
                ));
                continue;
            }
            if let Some(m) = med_lat
                && with_traffic.len() >= MIN_POOL_FOR_LATENCY_EJECTION
            {
                let l = lat(b);
                if l.is_finite()
                    && l > c.eject_latency_factor * m
                    && l - m > c.eject_latency_min_excess
                {
                    outliers.push((
                        l / m.max(1e-9),
                        b.backend.clone(),
                        format!(
                            "latency {:.3}s > {:.1} x median {:.3}s",
                            l, c.eject_latency_factor, m
                        ),
                    ));
                }
            }
        }
        outliers.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));

        let pool = healthy.len();
        let budget = if pool >= 2 {
            ((c.max_ejection_fraction * pool as f64).floor() as usize)
                .max(1)
                .min(pool - 1)
        } else {
            0
        };
        let mut ejected = active_ejected;
        let mut left_over = false;
        for (_, name, why) in outliers {
            if ejected.len() >= budget {
                ex.rules
                    .push(format!("ejection_budget_exhausted: {name} ({why}) stays"));
                left_over = true;
                continue;
            }
            let e = self.ejections.entry(name.clone()).or_insert(Ejection {
                until: now,
                count: 0,
                released_at: Some(now),
            });
            // Forgive past ejections after a clean spell as long as the last one.
            if let Some(r) = e.released_at
                && now - r > c.base_ejection_time * e.count.max(1) as f64
            {
                e.count = 0;
            }
            e.count = e.count.saturating_add(1);
            e.until = now + c.base_ejection_time * e.count as f64;
            e.released_at = None;
            ex.rules.push(format!(
                "eject {name}: {why}; for {:.0}s",
                c.base_ejection_time * e.count as f64
            ));
            ejected.push(name);
        }
        ejected.sort();
        (ejected, left_over)
    }

    fn compute_weights(
        &mut self,
        input: &TickInput<'_>,
        active: &[&BackendObservation],
        load: f64,
        stale: bool,
        ex: &mut Explanation,
    ) -> (Vec<BackendWeight>, Option<f64>) {
        let c = self.cfg.get().clone();
        if active.is_empty() {
            return (Vec::new(), None);
        }
        let names: Vec<&str> = active.iter().map(|b| b.backend.as_str()).collect();
        if stale && names.iter().all(|n| self.weights.contains_key(*n)) {
            ex.rules.push("hold_weights: stale telemetry".into());
            let out = names
                .iter()
                .map(|n| BackendWeight {
                    backend: n.to_string(),
                    weight: to_published(self.weights[*n]),
                })
                .collect();
            return (out, None);
        }
        let ests: Vec<Option<CapacityEstimate>> = names
            .iter()
            .map(|n| self.estimate(n, input.now, input.interval))
            .collect();
        for (n, e) in names.iter().zip(&ests) {
            if let Some(e) = e {
                ex.inputs.push(format!(
                    "{n}: capacity={:.1}{} cost_factor={:.2}{}",
                    e.capacity_rps,
                    if e.absolute { "rps" } else { "(relative)" },
                    e.cost_factor,
                    if e.degrading { " DEGRADING" } else { "" }
                ));
                if e.degrading {
                    ex.rules.push(format!(
                        "degrading {n}: cost per request rising x{:.2}",
                        e.cost_factor
                    ));
                }
            }
        }
        let abs_count = ests.iter().flatten().filter(|e| e.absolute).count();
        let rel_count = ests.iter().flatten().filter(|e| !e.absolute).count();
        let use_absolute = abs_count >= rel_count;
        let usable: Vec<Option<CapacityEstimate>> = ests
            .iter()
            .map(|e| e.filter(|e| e.absolute == use_absolute && e.capacity_rps > 0.0))
            .collect();
        let known: Vec<f64> = usable.iter().flatten().map(|e| e.capacity_rps).collect();

        let spread = if known.len() >= 2 {
            let (lo, hi) = known.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
            Some(hi / lo.max(1e-12))
        } else {
            None
        };
        let targets: Vec<(String, f64)> = match (median(&known), spread) {
            (None, _) => {
                ex.rules.push("weights_equal: no capacity model yet".into());
                names.iter().map(|n| (n.to_string(), 1.0)).collect()
            }
            (Some(_), Some(s))
                if s <= c.capacity_spread
                    && !usable.iter().any(|e| e.is_some_and(|e| e.degrading)) =>
            {
                ex.rules.push(format!(
                    "weights_equal: homogeneous pool (capacity spread {s:.2} <= {:.2})",
                    c.capacity_spread
                ));
                names.iter().map(|n| (n.to_string(), 1.0)).collect()
            }
            (Some(med), _) => {
                let all_cpu =
                    use_absolute && usable.iter().all(|e| e.is_some_and(|e| e.cpu.is_some()));
                if all_cpu && load > 0.0 {
                    // Equalise predicted utilisation at the forecast load.
                    let lines: Vec<(f64, f64)> = usable
                        .iter()
                        .flatten()
                        .filter_map(|e| e.cpu.map(|l| (l.intercept, l.slope)))
                        .collect();
                    let sum_inv: f64 = lines.iter().map(|(_, b)| 1.0 / b).sum();
                    let sum_ab: f64 = lines.iter().map(|(a, b)| a / b).sum();
                    let u = (load + sum_ab) / sum_inv;
                    ex.rules.push(format!(
                        "weights_equalise_utilisation: load={load:.1}rps -> predicted utilisation {u:.3} (target {:.2})",
                        c.target_utilization
                    ));
                    let mut xs: Vec<f64> =
                        lines.iter().map(|(a, b)| ((u - a) / b).max(0.0)).collect();
                    let mus: Vec<f64> = lines
                        .iter()
                        .map(|(a, b)| ((1.0 - a) / b).max(0.0))
                        .collect();
                    match c.objective {
                        WeightObjective::Latency => {
                            if let Some(split) = latency_split(&mus, load) {
                                ex.rules.push("weights_minimise_latency: square-root assignment over full capacities".into());
                                xs = split;
                            }
                        }
                        WeightObjective::Tail => {
                            if let Some(split) = tail_split(&mus, load) {
                                ex.rules.push("weights_minimise_tail: equal spare capacity over full capacities".into());
                                xs = split;
                            }
                        }
                        WeightObjective::Utilization => {}
                    }
                    if xs.iter().sum::<f64>() > 0.0 {
                        let xs = self.correct_shares(active, xs, ex);
                        names
                            .iter()
                            .zip(xs)
                            .map(|(n, x)| (n.to_string(), x))
                            .collect()
                    } else {
                        names
                            .iter()
                            .zip(&usable)
                            .map(|(n, e)| (n.to_string(), e.map_or(med, |e| e.capacity_rps)))
                            .collect()
                    }
                } else {
                    ex.rules.push("weights_proportional_to_capacity".into());
                    names
                        .iter()
                        .zip(&usable)
                        .map(|(n, e)| (n.to_string(), e.map_or(med, |e| e.capacity_rps)))
                        .collect()
                }
            }
        };
        let mut new = smooth_bounded(
            &targets,
            &self.weights,
            c.weight_smoothing,
            c.max_weight_step,
        );
        let mean = new.iter().map(|(_, w)| w).sum::<f64>() / new.len() as f64;
        if !(WEIGHT_MEAN_BAND.0..=WEIGHT_MEAN_BAND.1).contains(&mean) && mean > 0.0 {
            let k = WEIGHT_SCALE / mean;
            for (_, w) in &mut new {
                *w = (*w * k).max(1.0);
            }
            ex.rules.push("weights_rescaled".into());
        }
        self.weights = new.iter().cloned().collect();
        let out = new
            .iter()
            .map(|(n, w)| BackendWeight {
                backend: n.clone(),
                weight: to_published(*w),
            })
            .collect();
        (out, spread)
    }

    /// Close the loop from planned split to observed traffic. A weighted
    /// least-request data plane does not send traffic in proportion to the
    /// weights: busy fast backends shed picks to idle slow ones. Each
    /// backend's multiplier moves by `(planned share / observed share)^gain`
    /// per tick (clamped to [1/4, 4]), so the traffic that arrives follows
    /// the split the objective chose. `gain = 0` publishes the split as is.
    fn correct_shares(
        &mut self,
        active: &[&BackendObservation],
        xs: Vec<f64>,
        ex: &mut Explanation,
    ) -> Vec<f64> {
        let gain = self.cfg.get().share_correction;
        let present: Vec<&str> = active.iter().map(|b| b.backend.as_str()).collect();
        self.share_correction
            .retain(|k, _| present.contains(&k.as_str()));
        if gain <= 0.0 || xs.len() != active.len() {
            self.share_correction.clear();
            return xs;
        }
        let sum_x: f64 = xs.iter().sum();
        let sum_r: f64 = active
            .iter()
            .map(|b| b.request_rate)
            .filter(|r| r.is_finite() && *r > 0.0)
            .sum();
        let mut out = Vec::with_capacity(xs.len());
        for (b, x) in active.iter().zip(xs) {
            let k = self
                .share_correction
                .entry(b.backend.clone())
                .or_insert(1.0);
            let planned = x / sum_x;
            let observed = if b.request_rate.is_finite() && sum_r > 0.0 {
                b.request_rate.max(0.0) / sum_r
            } else {
                0.0
            };
            if planned >= MIN_SHARE_FOR_CORRECTION && observed >= MIN_SHARE_FOR_CORRECTION {
                let next = *k * (planned / observed).powf(gain);
                if next.is_finite() {
                    *k = next.clamp(SHARE_CORRECTION_RANGE.0, SHARE_CORRECTION_RANGE.1);
                }
            }
            out.push(x * *k);
        }
        if self
            .share_correction
            .values()
            .any(|k| (k - 1.0).abs() > 0.05)
        {
            ex.rules.push(format!(
                "weights_share_correction: {}",
                self.share_correction
                    .iter()
                    .map(|(n, k)| format!("{n}x{k:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        out
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

    fn scale(
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
        let Some(cap) = self.per_replica_capacity(input, healthy) else {
            return hold("hold_no_capacity_estimate".into());
        };
        let demand = input.demand_rps.max(0.0);
        let need =
            |rps: f64, per: f64| (rps / per).ceil().max(0.0).min(u32::MAX as f64 / 2.0) as u32;
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
        let since = |t: Option<Time>| t.map_or(f64::INFINITY, |t| input.now - t);

        let (desired, rule) = if up_target > current {
            if since(self.last_scale_up) < c.scale_up_cooldown {
                (current, "hold_scale_up_cooldown".to_string())
            } else if let Some(t) = trend
                .filter(|_| need_trend.is_some_and(|n| n >= need_obs && n >= need_fc.unwrap_or(0)))
            {
                (
                    up_target,
                    format!(
                        "scale_up_trend: demand rising {:.2} rps/s, {:.1}rps in {:.0}s needs {up_target}",
                        t.slope, t.projected, t.horizon
                    ),
                )
            } else if need_fc.is_some_and(|n| n >= need_obs) {
                (
                    up_target,
                    format!("scale_up_forecast: upper bound over boot+interval needs {up_target}"),
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
        } else {
            let shrunk = cap * (1.0 - c.scale_in_hysteresis);
            // A significant rise blocks scale-in: capacity removed now would
            // be missing a boot time later.
            let fits_obs = need(demand, shrunk).max(trend.map_or(0, |t| need(t.projected, shrunk)));
            let fits = match (fc, trusted) {
                (Some(_), Some(f)) => Some(fits_obs.max(need(f.peak_upper_in, shrunk))),
                // A forecast exists but is not trusted: no scale-in on it,
                // and none on observation alone either while it disagrees.
                (Some(_), None) => None,
                (None, _) => Some(fits_obs),
            };
            match fits {
                // Never below what the scale-up rule asks for right now
                // (its look-ahead is longer): no scale-in undone next tick.
                Some(n) if n.max(base_need) < current => {
                    let n = n.max(base_need);
                    if since(self.last_scale_action) < c.scale_in_cooldown {
                        (current, "hold_scale_in_cooldown".to_string())
                    } else {
                        let to = n.max(current.saturating_sub(c.max_scale_in_step));
                        let why = if trusted.is_some() {
                            "forecast and observation agree"
                        } else {
                            "observation (no forecast)"
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

    fn choose_algorithm(
        &mut self,
        input: &TickInput<'_>,
        active: &[&BackendObservation],
        published: (&[BackendWeight], f64),
        spread: Option<f64>,
        outliers_left: bool,
        ex: &mut Explanation,
    ) -> AlgorithmChoice {
        let c = self.cfg.get().clone();
        let ratios: Vec<f64> = active
            .iter()
            .filter(|b| b.latency_p50 > 0.0 && b.latency_p99.is_finite())
            .map(|b| b.latency_p99 / b.latency_p50)
            .collect();
        let variability = median(&ratios);
        let (want, why) = if c.affinity {
            (LbAlgorithm::RingHash, "affinity requested".to_string())
        } else if outliers_left {
            (
                LbAlgorithm::PeakEwma,
                "latency outliers beyond the ejection budget".to_string(),
            )
        } else {
            match (spread, variability) {
                (_, None) => (LbAlgorithm::LeastRequest, "insufficient data".to_string()),
                (Some(s), Some(v)) if s > c.capacity_spread => {
                    if v > c.variable_service_ratio {
                        (
                            LbAlgorithm::LeastRequest,
                            format!(
                                "unequal capacity (spread {s:.2}) and variable service (p99/p50 {v:.1}): weighted least request"
                            ),
                        )
                    } else {
                        (
                            LbAlgorithm::WeightedRoundRobin,
                            format!(
                                "unequal capacity (spread {s:.2}), steady service (p99/p50 {v:.1})"
                            ),
                        )
                    }
                }
                (_, Some(v)) if v > c.variable_service_ratio => (
                    LbAlgorithm::LeastRequest,
                    format!("homogeneous pool, variable service (p99/p50 {v:.1})"),
                ),
                (_, Some(v)) => (
                    LbAlgorithm::RoundRobin,
                    format!("homogeneous pool, steady service (p99/p50 {v:.1})"),
                ),
            }
        };
        match self.algorithm {
            None => {
                self.algorithm = Some(want);
                self.algorithm_rule = format!("{why} -> {want}");
                self.candidate = None;
            }
            Some(cur) if cur == want => {
                self.algorithm_rule = format!("{why} -> {want}");
                self.candidate = None;
            }
            Some(cur) => {
                let n = match self.candidate {
                    Some((a, n)) if a == want => n + 1,
                    _ => 1,
                };
                // Outliers and affinity act at once; the rest need persistence.
                let urgent = matches!(want, LbAlgorithm::PeakEwma | LbAlgorithm::RingHash);
                // A rule wants a switch: when a scorer can predict it, the
                // proposal must also win by prediction (not for urgent ones).
                let vetoed = !urgent && {
                    let variable = variability.is_some_and(|v| v > c.variable_service_ratio);
                    let pool = if c.score_algorithms && self.scorer.is_some() {
                        self.snapshot(input, published.0, published.1, variable)
                    } else {
                        None
                    };
                    self.scored_switch(cur, want, input.now, pool.as_ref(), ex) == Some(false)
                };
                if vetoed {
                    self.candidate = None;
                    ex.rules.push(format!(
                        "algorithm: keep {cur}; {want} proposed ({why}) but not predicted better"
                    ));
                } else if urgent || n >= c.algorithm_switch_ticks {
                    self.algorithm = Some(want);
                    self.algorithm_rule = format!("{why} -> {want} (switched from {cur})");
                    self.candidate = None;
                } else {
                    self.candidate = Some((want, n));
                    ex.rules.push(format!(
                        "algorithm candidate {want} ({n}/{}): {why}",
                        c.algorithm_switch_ticks
                    ));
                }
            }
        }
        let algorithm = self.algorithm.unwrap_or(LbAlgorithm::LeastRequest);
        ex.rules.push(format!("algorithm: {}", self.algorithm_rule));
        AlgorithmChoice {
            algorithm,
            rule: self.algorithm_rule.clone(),
        }
    }
}

/// Keep at least this fraction of total capacity spare before using the
/// latency-optimal split; closer to saturation it degenerates to "all
/// backends at 100 %", and proportional (equal utilisation) is safer.
const LATENCY_SPLIT_MIN_SLACK: f64 = 0.05;

/// Latency-optimal static split of `load` over servers of capacities `mus`
/// (M/M/1 each): `x_i = μ_i − √μ_i · (Σμ − L)/Σ√μ` over the servers that get
/// a positive share (the rest get none). `None` when the pool cannot carry
/// the load with 5 % to spare (`LATENCY_SPLIT_MIN_SLACK`).
pub fn latency_split(mus: &[f64], load: f64) -> Option<Vec<f64>> {
    water_fill(mus, load, f64::sqrt)
}

/// Tail-optimal static split of `load` over servers of capacities `mus`
/// (M/M/1 each): every server that gets traffic keeps the same spare
/// capacity, `x_i = μ_i − c` with `c = (Σμ − L)/n` over the servers used.
/// The sojourn time at server i is exponential with rate `μ_i − x_i = c`, so
/// every used server has the same tail, the largest common decay rate
/// possible. `None` when the pool cannot carry the load with 5 % to spare
/// (`LATENCY_SPLIT_MIN_SLACK`).
pub fn tail_split(mus: &[f64], load: f64) -> Option<Vec<f64>> {
    water_fill(mus, load, |_| 1.0)
}

/// Water-filling behind [`latency_split`] and [`tail_split`]: over the
/// servers used, `x_i = μ_i − g(μ_i) · k` with `k = (Σμ − L)/Σg(μ)`, so the
/// shares sum to the load. A server whose share would be negative gets none
/// and `k` is recomputed; `k` only grows as servers are dropped, so a dropped
/// server never comes back and the order of dropping does not matter.
fn water_fill(mus: &[f64], load: f64, g: impl Fn(f64) -> f64) -> Option<Vec<f64>> {
    let total: f64 = mus.iter().sum();
    if !positive(load) || !positive(total) || load > total * (1.0 - LATENCY_SPLIT_MIN_SLACK) {
        return None;
    }
    let mut used: Vec<bool> = mus.iter().map(|m| *m > 0.0).collect();
    for _ in 0..mus.len() {
        let (s_mu, s_g) = mus
            .iter()
            .zip(&used)
            .filter(|(_, u)| **u)
            .fold((0.0, 0.0), |(sm, sg), (m, _)| (sm + m, sg + g(*m)));
        if !positive(s_g) {
            return None;
        }
        let k = (s_mu - load) / s_g;
        let xs: Vec<f64> = mus
            .iter()
            .zip(&used)
            .map(|(m, u)| if *u { m - g(*m) * k } else { 0.0 })
            .collect();
        if let Some(i) = xs.iter().zip(&used).position(|(x, u)| *u && *x < 0.0) {
            used[i] = false;
            continue;
        }
        return Some(xs);
    }
    None
}

/// Linear interpolation of the forecast mean at time `t` on its grid (the
/// first point is at `issued_at + step`; before it, the first value; beyond
/// the end, the last). `None` when the forecast is empty or not finite.
fn value_at(f: &DemandForecast, t: Time) -> Option<f64> {
    interpolate(&f.mean, f.issued_at, f.step, t)
}

fn interpolate(v: &[f64], issued_at: Time, step: f64, t: Time) -> Option<f64> {
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
/// the interpolated value at its end). Falls back to the mean when the
/// forecast has no interval.
fn peak_upper(f: &DemandForecast, now: Time, horizon: f64) -> Option<f64> {
    let series = if f.upper.len() == f.mean.len() && !f.upper.is_empty() {
        &f.upper
    } else {
        &f.mean
    };
    let end = now + horizon;
    let mut peak = interpolate(series, f.issued_at, f.step, end)?;
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

        let newest = input
            .backends
            .iter()
            .map(|b| b.observed_at)
            .filter(|t| t.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let stale = !input.backends.is_empty()
            && input.now - newest > self.cfg.get().stale_intervals * interval;
        if stale {
            ex.rules.push(format!(
                "fallback_reactive: stale telemetry (newest {:.1}s old)",
                input.now - newest
            ));
        } else {
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

        let fc = self.view_forecast(&input, &mut ex);
        let load = match fc {
            Some(f) if f.trusted => f.next,
            _ => {
                if fc.is_none() {
                    ex.rules
                        .push("no forecast -> weights at observed demand".into());
                }
                input.demand_rps
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
        let algorithm = self.choose_algorithm(
            &input,
            &active,
            (&weights, load),
            spread,
            outliers_left,
            &mut ex,
        );
        Decision {
            at: input.now,
            weights,
            ejected,
            scaling,
            algorithm,
            explanation: ex,
        }
    }
}

#[cfg(test)]
mod tests;
