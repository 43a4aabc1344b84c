//! Configuration of Aya's engine ([`AyaConfig`]) and its checked form
//! ([`ValidAyaConfig`]).
//!
//! The configuration is read from TOML (service config, scenario files) or
//! JSON (policy parameters), so every field has a serde default and unknown
//! fields are rejected. It is checked *once*, by [`AyaConfig::validate`]; the
//! engine only ever holds a [`ValidAyaConfig`], so its hot path never has to
//! re-check ranges (the linfa "checked hyperparameters" habit).

use serde::{Deserialize, Serialize};

/// Why a configuration was rejected: the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid policy parameter `{field}` = {value}: {rule}")]
pub struct ConfigError {
    /// Field name as written in the configuration.
    pub field: &'static str,
    /// The value that was given, formatted.
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

/// What the weights optimise when backends differ in capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightObjective {
    /// Minimise predicted mean latency (M/M/1 per backend: the square-root
    /// assignment of Bell and Stidham), which keeps slow backends lightly loaded.
    Latency,
    /// Equalise predicted utilisation at the forecast load.
    Utilization,
    /// Minimise extreme latency quantiles (p99.9): equalise each backend's
    /// predicted spare capacity `μ_i − x_i`. With M/M/1 backends the sojourn
    /// time of backend i is exponential with rate `μ_i − x_i`, so the tail of
    /// the mixture is ruled by the smallest spare capacity; making them all
    /// equal maximises it. Slow backends get a small share (or none).
    #[default]
    Tail,
}

/// Tunables of [`crate::AyaPolicy`]. Defaults are the values the league table
/// was run with; each is explained on its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AyaConfig {
    /// Utilisation (CPU busy fraction) a replica should run at. 0.7 leaves the
    /// headroom that keeps M/M/c-like queues short (waiting grows as 1/(1-ρ)).
    pub target_utilization: f64,
    /// What weights optimise when capacities differ (`tail`, `latency` or `utilization`).
    pub objective: WeightObjective,
    /// Gain of the share correction (0 disables it): each tick a backend's
    /// weight multiplier moves by `(planned share / observed share)^gain`, so
    /// that the traffic a weighted least-request data plane actually sends
    /// follows the split the objective chose (it does not send in proportion
    /// to weights: busy fast backends shed picks to idle slow ones).
    pub share_correction: f64,
    /// Smoothing of weights: new = α·target + (1-α)·previous. 0.5 halves the
    /// distance each tick: fast enough to follow a degrading backend in a few
    /// ticks, slow enough not to chase one noisy window.
    pub weight_smoothing: f64,
    /// Largest relative weight change per tick: a weight moves at most by a
    /// factor (1 + this) up or down. Bounds the blast radius of one bad
    /// estimate (data planes apply weights within ~100 ms).
    pub max_weight_step: f64,
    /// Points kept per backend for the load → CPU/latency regressions.
    pub capacity_window: usize,
    /// Minimum points before a backend's capacity model is trusted.
    pub capacity_min_points: usize,
    /// Points (most recent) used to detect a trend in cost per request.
    pub trend_points: usize,
    /// Relative rise of the per-request cost over the trend window that marks
    /// a backend as degrading (0.10 = 10 %).
    pub degrade_threshold: f64,
    /// Error rate at or above which a backend is an error outlier (when it is
    /// also well above the pool's median).
    pub eject_error_rate: f64,
    /// A backend whose latency estimate exceeds this multiple of the pool's
    /// median is a latency outlier.
    pub eject_latency_factor: f64,
    /// ...and exceeds the median by at least this many seconds (so that
    /// microsecond jitter on a fast pool never ejects anything).
    pub eject_latency_min_excess: f64,
    /// ...in this many consecutive observation windows (as Envoy's
    /// `consecutive_5xx`): one window's latency of a few requests is noise on
    /// a high-variance service, and ejecting a healthy host overloads the rest.
    pub eject_latency_consecutive: u32,
    /// Most of the pool that may be ejected at once, as a fraction (Envoy's
    /// `max_ejection_percent`, default 10 %; at least one host may always be
    /// ejected when the pool has two or more).
    pub max_ejection_fraction: f64,
    /// Base ejection time in seconds, multiplied by the number of times the
    /// backend was ejected (Envoy's `base_ejection_time`, default 30 s).
    pub base_ejection_time: f64,
    /// Consecutive errors at which the data plane itself ejects a host
    /// (Envoy's `outlier_detection.consecutive_5xx`, published by Aya's CDS;
    /// 0: Aya never turns it on). Passive detection in the data plane sees a
    /// failing host at its first few requests, long before telemetry does;
    /// Aya turns it on only while the pool can lose the hosts it may eject
    /// ([`AyaConfig::outlier_detection_utilization`]).
    pub outlier_detection_5xx: u32,
    /// Data-plane outlier detection stays on only while the healthy hosts
    /// left after ejecting the `k` largest (at least one: Envoy always may
    /// eject one) would run at no more than this utilisation at the demand
    /// (the larger of forecast and observed); `max_ejection_percent` is set
    /// to that `k`. Off when not even the largest host can be lost.
    pub outlier_detection_utilization: f64,
    /// The clients' request timeout, seconds (your route's `timeout`); 0:
    /// unknown, and the engine publishes no in-flight limit. A request that
    /// waits longer is lost to its client even if a backend serves it later.
    pub request_timeout: f64,
    /// With `request_timeout` set, the data plane may keep at most
    /// `Σ full capacity × request_timeout × in_flight_timeout_share`
    /// requests in flight to the cluster (Envoy circuit breakers): at full
    /// capacity a request then waits about this share of the timeout, and
    /// under overload the excess is refused at once instead of queueing
    /// until everybody's requests time out.
    pub in_flight_timeout_share: f64,
    /// Largest share of the traffic a backend's weight may plan for, as a
    /// multiple of its share of the pool's capacity (0 disables): the
    /// blast-radius bound on concentrating traffic on the fastest hosts.
    pub max_capacity_share: f64,
    /// Seconds a backend seen unhealthy or erroring (at `eject_error_rate`)
    /// keeps its weight capped at the pool's mean weight (0 disables): a
    /// blast-radius bound for hosts that fail again (flapping, crash loops).
    pub suspicion_window: f64,
    /// Observations older than this many control intervals are stale: the
    /// engine stops acting on its models and falls back to reactive rules.
    pub stale_intervals: f64,
    /// Mean absolute percentage error of recent one-interval-ahead forecasts
    /// above which the forecast is ignored (reactive fallback).
    pub forecast_error_fallback: f64,
    /// Forecast errors averaged for the fallback test.
    pub forecast_error_window: usize,
    /// Online calibration of the forecast's interval (0 disables): over the
    /// last this-many ticks, the engine compares each one-interval-ahead
    /// error with the half-width the forecast claimed for it; once half
    /// the window is scored, the upper bound it scales on is
    /// `mean + s × (upper − mean)` with `s` the `level` quantile of those
    /// ratios, capped at 1 (an interval shown too wide by the realised
    /// errors is narrowed, never widened).
    pub interval_calibration_window: usize,
    /// Relative hysteresis band for scaling in: the smaller fleet must stay
    /// below `target × (1 - this)` by both forecast and observation.
    pub scale_in_hysteresis: f64,
    /// Seconds after any scaling action before a scale-in may happen (240 s,
    /// a little under Kubernetes' 300 s scale-down stabilisation window:
    /// capacity removed too early comes back only a boot time later, but a
    /// fleet held at its peak size long after the peak is pure cost).
    pub scale_in_cooldown: f64,
    /// Seconds after a scale-up before another scale-up (60 s: the replicas
    /// ordered last time must show up in `current` before more are ordered;
    /// the look-ahead already sized that order for the ramp).
    pub scale_up_cooldown: f64,
    /// Most replicas removed in one scale-in (10: one action to the size both
    /// forecast and observation agree on, rather than many small ones).
    pub max_scale_in_step: u32,
    /// A scale-up ordered by a prediction (the forecast's upper bound or the
    /// demand trend) asks for at most `max(current × max_scale_up_factor,
    /// current + max_scale_up_pods)` replicas (Kubernetes' HPA scale-up
    /// policy: 100 % or 4 pods), or for what the observed demand needs if
    /// that is more. A young forecaster's wide band, a projected warm-up
    /// ramp or a burst of noise then costs one doubling per
    /// `scale_up_cooldown`, not a jump to the maximum; demand that is there
    /// is never held back.
    pub max_scale_up_factor: f64,
    /// See `max_scale_up_factor`.
    pub max_scale_up_pods: u32,
    /// Seconds beyond `boot_time + interval` that the scale-up rule looks at
    /// in the forecast's upper bound (default 0: exactly the issue's "upper
    /// quantile over the next boot time plus control interval"). A longer
    /// look buys more of a ramp per action but holds capacity for a peak
    /// that a random-walk interval merely allows; `scale_up_headroom` and
    /// the demand trend make the steps large enough instead.
    pub scale_lookahead: f64,
    /// Extra capacity ordered on a scale-up, as a fraction of the replicas
    /// needed (rounded up). A ramp then takes a few larger steps instead of
    /// one replica per cool-down: fewer scaling actions, and each order
    /// stays ahead of the ramp a little longer.
    pub scale_up_headroom: f64,
    /// Seconds beyond `boot_time + interval` that the scale-in rule checks
    /// the forecast's upper bound over. Shorter than `scale_lookahead`:
    /// a replica removed now can be back one boot time later, so a scale-in
    /// only has to be safe for that long; a longer look keeps the fleet
    /// sized for the whole past peak while demand falls.
    pub scale_in_lookahead: f64,
    /// Seconds of observed demand the short-term trend is fitted over
    /// (0 disables it). A forecaster fitted on minutes of history, or a
    /// random walk, sees a ramp only after it happened; a least-squares line
    /// over the last few ticks sees it while it happens. When its slope is
    /// significantly positive (`trend_min_t` standard errors), the line
    /// projected over `boot_time + interval + trend_lookahead` also sizes
    /// scale-ups, and blocks scale-ins.
    pub trend_window: f64,
    /// t statistic the demand slope needs before the trend acts (2 ≈ the
    /// 5 % one-sided level for a handful of points): Poisson noise alone
    /// must not order replicas.
    pub trend_min_t: f64,
    /// Seconds beyond `boot_time + interval` that the demand trend is
    /// projected. Ordering for a little more than one boot makes one
    /// scale-up cover more of a ramp (fewer, larger actions).
    pub trend_lookahead: f64,
    /// Requests pinned to backends by key: choose ring hash.
    pub affinity: bool,
    /// Ratio of largest to smallest estimated capacity above which the pool is
    /// treated as unequal (weighted algorithms).
    pub capacity_spread: f64,
    /// p99/p50 latency ratio above which service times count as variable
    /// (exponential service gives ≈6.6, deterministic ≈1).
    pub variable_service_ratio: f64,
    /// Ask the driver's [`crate::AlgorithmScorer`] (when it has one) to
    /// predict the current and the proposed algorithm's p99 before a rule
    /// switches algorithms, and switch only when the proposal wins by
    /// `score_min_gain`. Off by default: it costs a short simulation per
    /// proposed switch, and the service has no scorer.
    pub score_algorithms: bool,
    /// Relative p99 improvement a proposed algorithm must be predicted to
    /// bring before it replaces the current one (0.1 = 10 %).
    pub score_min_gain: f64,
    /// Seconds of traffic each scoring simulates; also how long a verdict
    /// is reused for the same (current, proposed) pair.
    pub score_horizon: f64,
    /// Consecutive ticks a new algorithm must win before it is published
    /// (avoids flapping data planes between lb policies).
    pub algorithm_switch_ticks: u32,
}

impl Default for AyaConfig {
    fn default() -> Self {
        AyaConfig {
            target_utilization: 0.7,
            objective: WeightObjective::Tail,
            share_correction: 0.25,
            weight_smoothing: 0.5,
            max_weight_step: 1.0,
            capacity_window: 60,
            capacity_min_points: 5,
            trend_points: 8,
            degrade_threshold: 0.10,
            eject_error_rate: 0.2,
            eject_latency_factor: 4.0,
            eject_latency_min_excess: 0.05,
            eject_latency_consecutive: 3,
            max_ejection_fraction: 0.10,
            base_ejection_time: 30.0,
            suspicion_window: 60.0,
            max_capacity_share: 1.25,
            outlier_detection_5xx: 5,
            outlier_detection_utilization: 0.85,
            request_timeout: 0.0,
            in_flight_timeout_share: 0.25,
            stale_intervals: 3.0,
            forecast_error_fallback: 0.35,
            forecast_error_window: 10,
            interval_calibration_window: 20,
            scale_in_hysteresis: 0.10,
            scale_in_cooldown: 240.0,
            scale_up_cooldown: 60.0,
            max_scale_in_step: 10,
            max_scale_up_factor: 2.0,
            max_scale_up_pods: 4,
            scale_lookahead: 0.0,
            scale_up_headroom: 0.1,
            scale_in_lookahead: 0.0,
            trend_window: 60.0,
            trend_min_t: 2.0,
            trend_lookahead: 90.0,
            affinity: false,
            capacity_spread: 1.3,
            variable_service_ratio: 2.0,
            algorithm_switch_ticks: 3,
            score_algorithms: false,
            score_min_gain: 0.1,
            score_horizon: 60.0,
        }
    }
}

/// An [`AyaConfig`] whose every field has been range-checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidAyaConfig(AyaConfig);

impl ValidAyaConfig {
    /// The checked values.
    pub fn get(&self) -> &AyaConfig {
        &self.0
    }
}

impl ConfigError {
    /// `field` = `value` broke `rule`.
    pub fn new(field: &'static str, value: impl ToString, rule: &'static str) -> Self {
        ConfigError {
            field,
            value: value.to_string(),
            rule,
        }
    }
}

fn check(
    ok: bool,
    field: &'static str,
    value: impl ToString,
    rule: &'static str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, value, rule))
    }
}

fn open_unit(x: f64) -> bool {
    x.is_finite() && x > 0.0 && x < 1.0
}

fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

fn non_negative(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

/// `(0, 1]`.
fn unit(x: f64) -> bool {
    x.is_finite() && x > 0.0 && x <= 1.0
}

/// `[0, 1]`.
fn closed_unit(x: f64) -> bool {
    non_negative(x) && x <= 1.0
}

/// `[0, 1)`.
fn half_open_unit(x: f64) -> bool {
    non_negative(x) && x < 1.0
}

/// A rule on one `f64` field: predicate and its wording.
type Rule = (fn(f64) -> bool, &'static str);

const OPEN_UNIT: Rule = (open_unit, "must be in (0, 1)");
const UNIT: Rule = (unit, "must be in (0, 1]");
const CLOSED_UNIT: Rule = (closed_unit, "must be in [0, 1]");
const HALF_OPEN_UNIT: Rule = (half_open_unit, "must be in [0, 1)");
const POSITIVE: Rule = (positive, "must be > 0");
const NON_NEGATIVE: Rule = (non_negative, "must be >= 0");
const AT_LEAST_ONE: Rule = (at_least_one, "must be >= 1");

fn at_least_one(x: f64) -> bool {
    x.is_finite() && x >= 1.0
}

/// Check `(field, value, rule)` rows in order; the first broken one is the error.
fn check_all(rows: &[(&'static str, f64, Rule)]) -> Result<(), ConfigError> {
    for &(field, value, (ok, rule)) in rows {
        check(ok(value), field, value, rule)?;
    }
    Ok(())
}

impl AyaConfig {
    /// Check every field once. The error names the field and its rule.
    /// The checks are grouped by the part of the engine that reads them.
    pub fn validate(self) -> Result<ValidAyaConfig, ConfigError> {
        self.check_weights()?;
        self.check_capacity()?;
        self.check_ejection()?;
        self.check_freshness()?;
        self.check_scaling()?;
        self.check_algorithm()?;
        Ok(ValidAyaConfig(self))
    }

    /// Weight computation: target, smoothing, share correction, step bound.
    fn check_weights(&self) -> Result<(), ConfigError> {
        check_all(&[
            ("target_utilization", self.target_utilization, OPEN_UNIT),
            ("weight_smoothing", self.weight_smoothing, UNIT),
            ("share_correction", self.share_correction, CLOSED_UNIT),
            ("max_weight_step", self.max_weight_step, POSITIVE),
        ])
    }

    /// Capacity models: regression window, trust threshold, trend detection.
    fn check_capacity(&self) -> Result<(), ConfigError> {
        let c = self;
        check(
            c.capacity_window >= 2,
            "capacity_window",
            c.capacity_window,
            "must be >= 2",
        )?;
        check(
            c.capacity_min_points >= 1 && c.capacity_min_points <= c.capacity_window,
            "capacity_min_points",
            c.capacity_min_points,
            "must be in [1, capacity_window]",
        )?;
        check(
            c.trend_points >= 3 && c.trend_points <= c.capacity_window,
            "trend_points",
            c.trend_points,
            "must be in [3, capacity_window]",
        )?;
        check_all(&[("degrade_threshold", c.degrade_threshold, POSITIVE)])
    }

    /// Outlier ejection thresholds and budget.
    fn check_ejection(&self) -> Result<(), ConfigError> {
        let c = self;
        check_all(&[("eject_error_rate", c.eject_error_rate, UNIT)])?;
        check(
            (1..=100).contains(&c.eject_latency_consecutive),
            "eject_latency_consecutive",
            c.eject_latency_consecutive,
            "must be in [1, 100]",
        )?;
        check(
            c.eject_latency_factor.is_finite() && c.eject_latency_factor > 1.0,
            "eject_latency_factor",
            c.eject_latency_factor,
            "must be > 1",
        )?;
        check_all(&[
            (
                "eject_latency_min_excess",
                c.eject_latency_min_excess,
                NON_NEGATIVE,
            ),
            (
                "max_ejection_fraction",
                c.max_ejection_fraction,
                CLOSED_UNIT,
            ),
            ("base_ejection_time", c.base_ejection_time, POSITIVE),
            ("suspicion_window", c.suspicion_window, NON_NEGATIVE),
            ("max_capacity_share", c.max_capacity_share, NON_NEGATIVE),
            (
                "outlier_detection_utilization",
                c.outlier_detection_utilization,
                UNIT,
            ),
            ("request_timeout", c.request_timeout, NON_NEGATIVE),
            (
                "in_flight_timeout_share",
                c.in_flight_timeout_share,
                POSITIVE,
            ),
        ])?;
        check(
            c.outlier_detection_5xx <= 1000,
            "outlier_detection_5xx",
            c.outlier_detection_5xx,
            "must be in [0, 1000]",
        )
    }

    /// Staleness of telemetry and the forecast-error fallback.
    fn check_freshness(&self) -> Result<(), ConfigError> {
        let c = self;
        check_all(&[
            ("stale_intervals", c.stale_intervals, POSITIVE),
            (
                "forecast_error_fallback",
                c.forecast_error_fallback,
                POSITIVE,
            ),
        ])?;
        check(
            c.forecast_error_window >= 1,
            "forecast_error_window",
            c.forecast_error_window,
            "must be >= 1",
        )
    }

    /// Scaling rules: hysteresis, cool-downs, look-aheads, headroom, trend.
    fn check_scaling(&self) -> Result<(), ConfigError> {
        let c = self;
        check_all(&[
            ("scale_in_hysteresis", c.scale_in_hysteresis, HALF_OPEN_UNIT),
            ("scale_in_cooldown", c.scale_in_cooldown, NON_NEGATIVE),
            ("scale_up_cooldown", c.scale_up_cooldown, NON_NEGATIVE),
            ("scale_lookahead", c.scale_lookahead, NON_NEGATIVE),
        ])?;
        check(
            c.max_scale_in_step >= 1,
            "max_scale_in_step",
            c.max_scale_in_step,
            "must be >= 1",
        )?;
        check(
            c.max_scale_up_factor.is_finite() && c.max_scale_up_factor >= 1.0,
            "max_scale_up_factor",
            c.max_scale_up_factor,
            "must be a number >= 1",
        )?;
        check_all(&[
            ("scale_up_headroom", c.scale_up_headroom, CLOSED_UNIT),
            ("scale_in_lookahead", c.scale_in_lookahead, NON_NEGATIVE),
            ("trend_window", c.trend_window, NON_NEGATIVE),
            ("trend_min_t", c.trend_min_t, NON_NEGATIVE),
            ("trend_lookahead", c.trend_lookahead, NON_NEGATIVE),
        ])
    }

    /// Algorithm selection: pool spread, service variability, scoring, switching.
    fn check_algorithm(&self) -> Result<(), ConfigError> {
        let c = self;
        check_all(&[
            ("capacity_spread", c.capacity_spread, AT_LEAST_ONE),
            (
                "variable_service_ratio",
                c.variable_service_ratio,
                AT_LEAST_ONE,
            ),
            ("score_min_gain", c.score_min_gain, HALF_OPEN_UNIT),
            ("score_horizon", c.score_horizon, POSITIVE),
        ])?;
        check(
            c.algorithm_switch_ticks >= 1,
            "algorithm_switch_ticks",
            c.algorithm_switch_ticks,
            "must be >= 1",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(AyaConfig::default().validate().is_ok());
    }

    #[test]
    fn bad_target_names_the_field() {
        let err = AyaConfig {
            target_utilization: 1.5,
            ..AyaConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "target_utilization");
        assert!(err.to_string().contains("(0, 1)"), "{err}");
    }

    #[test]
    fn nan_is_rejected() {
        let err = AyaConfig {
            weight_smoothing: f64::NAN,
            ..AyaConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "weight_smoothing");
    }

    #[test]
    fn every_group_reports_its_field() {
        let cases: [(AyaConfig, &str); 6] = [
            (
                AyaConfig {
                    share_correction: 1.5,
                    ..AyaConfig::default()
                },
                "share_correction",
            ),
            (
                AyaConfig {
                    trend_points: 2,
                    ..AyaConfig::default()
                },
                "trend_points",
            ),
            (
                AyaConfig {
                    eject_latency_factor: 1.0,
                    ..AyaConfig::default()
                },
                "eject_latency_factor",
            ),
            (
                AyaConfig {
                    forecast_error_window: 0,
                    ..AyaConfig::default()
                },
                "forecast_error_window",
            ),
            (
                AyaConfig {
                    scale_up_headroom: -0.1,
                    ..AyaConfig::default()
                },
                "scale_up_headroom",
            ),
            (
                AyaConfig {
                    score_min_gain: 1.0,
                    ..AyaConfig::default()
                },
                "score_min_gain",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(cfg.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn unknown_field_is_rejected_by_serde() {
        let err = serde_json::from_str::<AyaConfig>(r#"{"target_utilisation": 0.5}"#).unwrap_err();
        assert!(err.to_string().contains("target_utilisation"), "{err}");
    }
}
