//! The baselines Aya is compared with, implemented in the same engine so the
//! league table measures policies, not plumbing.
//!
//! - [`StaticPolicy`]: equal weights, a fixed algorithm, no scaling.
//! - [`A58Policy`]: gRPC's client-side weighted round robin weights (gRFC A58,
//!   Envoy `client_side_weighted_round_robin`), computed from load reports.
//! - [`AlgorithmOnlyPolicy`]: equal weights with a data-plane algorithm that
//!   does the work itself (peak-EWMA as Linkerd, P2C least request as Envoy).
//! - [`HpaPolicy`]: reactive autoscaling with the Kubernetes HPA formula.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::capacity::positive;
use crate::config::ConfigError;
use crate::types::{
    AlgorithmChoice, BackendObservation, BackendWeight, Decision, Explanation, LbAlgorithm, Policy,
    ScalingSignal, TickInput, Time,
};
use crate::weights::{WEIGHT_SCALE, equal_weights, to_published};

fn hold_scaling(input: &TickInput<'_>, rule: &str) -> ScalingSignal {
    let r = input.replicas;
    ScalingSignal {
        desired_replicas: r.current.clamp(r.min, r.max.max(r.min)),
        current_replicas: r.current,
        rule: rule.to_string(),
    }
}

fn inputs_summary(input: &TickInput<'_>) -> Vec<String> {
    vec![format!(
        "now={:.1} demand_rps={:.1} backends={} replicas={}/{}",
        input.now,
        input.demand_rps,
        input.backends.len(),
        input.replicas.ready,
        input.replicas.current
    )]
}

/// Backends that should receive traffic: the healthy ones, or all of them
/// when none is healthy (panic mode).
fn serving<'a>(input: &TickInput<'a>) -> Vec<&'a BackendObservation> {
    let healthy: Vec<&BackendObservation> = input.backends.iter().filter(|b| b.healthy).collect();
    if healthy.is_empty() {
        input.backends.iter().collect()
    } else {
        healthy
    }
}

/// Which weights a [`StaticPolicy`] publishes: the one behaviour in which
/// the "do nothing" baselines really differ.
#[derive(Debug, Clone, PartialEq)]
pub enum StaticWeights {
    /// The same weight ([`WEIGHT_SCALE`]) for every serving backend: the
    /// healthy ones, or all of them when none is healthy (panic mode).
    /// Unhealthy backends are left out, i.e. drained by the control plane.
    /// The algorithm-only baselines (`round_robin`, `peak_ewma`, `p2c`) use
    /// this: they model a data plane whose control plane removes failed hosts.
    Equal,
    /// Each backend's configured hint (1 when it has none), every backend
    /// listed, healthy or not: what a static data-plane configuration
    /// publishes, leaving health to the data plane's own checks. The `static`
    /// policy uses this, in the service (`weight_hint` of each backend) and in
    /// the simulator (no hints: weight 1 everywhere, so the scenario's data
    /// plane alone decides, as its example scenarios expect).
    Hints(BTreeMap<String, u32>),
}

/// Options of [`StaticPolicy`].
#[derive(Debug, Clone, PartialEq)]
pub struct StaticOptions {
    /// Algorithm published at every tick.
    pub algorithm: LbAlgorithm,
    /// Which weights are published.
    pub weights: StaticWeights,
    /// Replica count to ask for (clamped to the driver's bounds); `None`
    /// holds the current count.
    pub replicas: Option<u32>,
}

/// The "do nothing" baseline: fixed weights, a fixed algorithm, a fixed (or
/// the current) replica count. Every static policy of the registry is this
/// type with different [`StaticOptions`].
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    name: String,
    opts: StaticOptions,
}

impl StaticPolicy {
    /// A static policy named `name` with `opts`.
    pub fn new(name: impl Into<String>, opts: StaticOptions) -> Self {
        StaticPolicy {
            name: name.into(),
            opts,
        }
    }

    /// Equal weights on the serving backends, `algorithm`, current replicas
    /// (the algorithm-only baselines).
    pub fn equal(name: impl Into<String>, algorithm: LbAlgorithm) -> Self {
        StaticPolicy::new(
            name,
            StaticOptions {
                algorithm,
                weights: StaticWeights::Equal,
                replicas: None,
            },
        )
    }

    /// The options.
    pub fn options(&self) -> &StaticOptions {
        &self.opts
    }
}

impl Policy for StaticPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        let algorithm = self.opts.algorithm;
        let (weights, rule) = match &self.opts.weights {
            StaticWeights::Equal => (
                equal_weights(serving(input).iter().map(|b| b.backend.as_str())),
                format!("equal weights, {algorithm}"),
            ),
            StaticWeights::Hints(hints) => (
                input
                    .backends
                    .iter()
                    .map(|b| BackendWeight {
                        backend: b.backend.clone(),
                        weight: hints.get(&b.backend).copied().unwrap_or(1).max(1),
                    })
                    .collect(),
                format!("configured weights (hint or 1), {algorithm}"),
            ),
        };
        let r = input.replicas;
        let desired = self
            .opts
            .replicas
            .unwrap_or(r.current)
            .clamp(r.min, r.max.max(r.min));
        Decision {
            outlier_detection: None,
            max_requests: None,
            at: input.now,
            weights,
            ejected: Vec::new(),
            scaling: ScalingSignal {
                desired_replicas: desired,
                current_replicas: r.current,
                rule: "static".into(),
            },
            algorithm: AlgorithmChoice {
                algorithm,
                rule: "static".into(),
            },
            explanation: Explanation {
                inputs: inputs_summary(input),
                forecast: None,
                rules: vec![rule],
                headroom: None,
            },
        }
    }
}

/// Equal weights and a data-plane algorithm that balances on its own
/// signals: `peak_ewma` (Linkerd) or `p2c` (Envoy least request).
pub type AlgorithmOnlyPolicy = StaticPolicy;

/// Parameters of [`A58Policy`]; defaults are gRFC A58's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct A58Config {
    /// Seconds after a backend's first non-empty report before its weight is used.
    pub blackout_period: f64,
    /// Seconds without a non-empty report after which a weight expires.
    pub weight_expiration_period: f64,
    /// Multiplier of eps/qps added to utilisation.
    pub error_utilization_penalty: f64,
}

impl Default for A58Config {
    fn default() -> Self {
        A58Config {
            blackout_period: 10.0,
            weight_expiration_period: 180.0,
            error_utilization_penalty: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct A58State {
    non_empty_since: Time,
    last_update: Time,
    weight: f64,
}

/// gRFC A58 weights: `qps / (utilization + eps/qps × penalty)` per backend,
/// from load reports (here: the observation's rate, CPU and error rate).
/// A backend's weight counts only after the blackout period and expires after
/// the expiration period without reports; zero or unknown weights take the
/// mean of the known ones; with fewer than two known weights, all are equal
/// (A58 then behaves as round robin).
#[derive(Debug, Clone)]
pub struct A58Policy {
    cfg: A58Config,
    state: BTreeMap<String, A58State>,
}

impl A58Policy {
    /// A58 with `cfg`.
    pub fn new(cfg: A58Config) -> Self {
        A58Policy {
            cfg,
            state: BTreeMap::new(),
        }
    }

    /// The A58 weight of one load report; 0 when it cannot be computed.
    pub fn report_weight(qps: f64, utilization: f64, eps: f64, penalty: f64) -> f64 {
        if !positive(qps) || !positive(utilization) {
            return 0.0;
        }
        let penalty_term = if eps.is_finite() && eps > 0.0 {
            eps / qps * penalty
        } else {
            0.0
        };
        let w = qps / (utilization + penalty_term);
        if w.is_finite() { w } else { 0.0 }
    }
}

impl Policy for A58Policy {
    fn name(&self) -> &str {
        "a58"
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        let now = input.now;
        let serving = serving(input);
        let mut rules = Vec::new();
        for b in &serving {
            let util = b.cpu_utilization.unwrap_or(0.0);
            let eps = b.error_rate.max(0.0) * b.request_rate.max(0.0);
            let w = Self::report_weight(
                b.request_rate,
                util,
                eps,
                self.cfg.error_utilization_penalty,
            );
            let s = self.state.entry(b.backend.clone()).or_insert(A58State {
                non_empty_since: now,
                last_update: now,
                weight: 0.0,
            });
            if w > 0.0 {
                // A58: a report after expiry restarts the blackout.
                if s.weight <= 0.0 || now - s.last_update >= self.cfg.weight_expiration_period {
                    s.non_empty_since = now;
                }
                s.weight = w;
                s.last_update = now;
            }
        }
        let present: Vec<&str> = input.backends.iter().map(|b| b.backend.as_str()).collect();
        self.state.retain(|k, _| present.contains(&k.as_str()));

        let usable: Vec<Option<f64>> = serving
            .iter()
            .map(|b| {
                let s = self.state.get(&b.backend)?;
                let fresh = now - s.last_update < self.cfg.weight_expiration_period;
                let out_of_blackout = now - s.non_empty_since >= self.cfg.blackout_period;
                (s.weight > 0.0 && fresh && out_of_blackout).then_some(s.weight)
            })
            .collect();
        let known: Vec<f64> = usable.iter().flatten().copied().collect();
        let weights = if known.len() < 2 {
            rules.push(format!(
                "fewer than two weights ({}) -> equal (round robin)",
                known.len()
            ));
            equal_weights(serving.iter().map(|b| b.backend.as_str()))
        } else {
            let mean = known.iter().sum::<f64>() / known.len() as f64;
            rules.push(format!(
                "{} weights, missing -> mean {mean:.2}",
                known.len()
            ));
            serving
                .iter()
                .zip(&usable)
                .map(|(b, w)| BackendWeight {
                    backend: b.backend.clone(),
                    weight: to_published(w.unwrap_or(mean) / mean * WEIGHT_SCALE),
                })
                .collect()
        };
        Decision {
            outlier_detection: None,
            max_requests: None,
            at: now,
            weights,
            ejected: Vec::new(),
            scaling: hold_scaling(input, "a58: no scaling"),
            algorithm: AlgorithmChoice {
                algorithm: LbAlgorithm::WeightedRoundRobin,
                rule: "a58: weighted round robin".into(),
            },
            explanation: Explanation {
                inputs: inputs_summary(input),
                forecast: None,
                rules,
                headroom: None,
            },
        }
    }
}

/// Parameters of [`HpaPolicy`]; defaults are Kubernetes'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HpaConfig {
    /// Target average CPU utilisation of ready pods (0..1).
    pub target_utilization: f64,
    /// No change while |ratio - 1| ≤ tolerance (`--horizontal-pod-autoscaler-tolerance`, 0.1).
    pub tolerance: f64,
    /// Scale-down stabilisation window in seconds (300): the desired count is
    /// the largest recommendation within it.
    pub scale_down_stabilization: f64,
    /// Data-plane algorithm published alongside (HPA does not choose one).
    pub algorithm: LbAlgorithm,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            target_utilization: 0.7,
            tolerance: 0.1,
            scale_down_stabilization: 300.0,
            algorithm: LbAlgorithm::LeastRequest,
        }
    }
}

impl HpaConfig {
    /// Check every field once. The error names the field and its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if !(c.target_utilization > 0.0 && c.target_utilization <= 1.0) {
            return Err(ConfigError::new(
                "target_utilization",
                c.target_utilization,
                "must be in (0, 1]",
            ));
        }
        if !(c.tolerance >= 0.0 && c.tolerance < 1.0) {
            return Err(ConfigError::new(
                "tolerance",
                c.tolerance,
                "must be in [0, 1)",
            ));
        }
        if !(c.scale_down_stabilization >= 0.0 && c.scale_down_stabilization.is_finite()) {
            return Err(ConfigError::new(
                "scale_down_stabilization",
                c.scale_down_stabilization,
                "must be >= 0",
            ));
        }
        Ok(())
    }
}

/// Kubernetes' default scale-up limit per 15 s period: the larger of doubling
/// (100 %) or adding four pods.
const HPA_SCALE_UP_PODS: u32 = 4;

/// Reactive autoscaling with the HPA algorithm:
/// `desired = ceil(current × currentUtilisation / target)`, no change within
/// the tolerance, scale-up at once (with unready pods counted at 0 % so that
/// booting replicas are not ordered twice, as the HPA controller does), and
/// scale-down to the largest recommendation of the last
/// `scale_down_stabilization` seconds.
#[derive(Debug, Clone)]
pub struct HpaPolicy {
    cfg: HpaConfig,
    recommendations: VecDeque<(Time, u32)>,
}

impl HpaPolicy {
    /// HPA with `cfg`.
    pub fn new(cfg: HpaConfig) -> Self {
        HpaPolicy {
            cfg,
            recommendations: VecDeque::new(),
        }
    }

    /// The raw recommendation (before stabilisation) and the rule that made it.
    fn recommend(&self, input: &TickInput<'_>) -> (u32, String) {
        let r = input.replicas;
        let ready: Vec<f64> = input
            .backends
            .iter()
            .filter(|b| b.healthy)
            .filter_map(|b| b.cpu_utilization)
            .filter(|c| c.is_finite() && *c >= 0.0)
            .collect();
        if ready.is_empty() {
            return (r.current, "no metrics: hold".into());
        }
        let sum: f64 = ready.iter().sum();
        let ratio = sum / ready.len() as f64 / self.cfg.target_utilization;
        if (ratio - 1.0).abs() <= self.cfg.tolerance {
            return (r.current, format!("ratio {ratio:.3} within tolerance"));
        }
        if ratio > 1.0 && r.current as usize > ready.len() {
            // Missing (booting) pods count as 0 % when scaling up.
            let ratio2 = sum / r.current.max(1) as f64 / self.cfg.target_utilization;
            if ratio2 <= 1.0 + self.cfg.tolerance {
                return (
                    r.current,
                    format!("ratio {ratio:.3}, {ratio2:.3} with booting pods at 0%: hold"),
                );
            }
            let n = (ratio2 * r.current as f64).ceil() as u32;
            return (
                n,
                format!("ratio {ratio2:.3} with booting pods at 0% -> {n}"),
            );
        }
        let n = (ratio * ready.len() as f64).ceil().max(0.0) as u32;
        (n, format!("ratio {ratio:.3} -> {n}"))
    }
}

impl Policy for HpaPolicy {
    fn name(&self) -> &str {
        "hpa"
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        let r = input.replicas;
        let (lo, hi) = (r.min, r.max.max(r.min));
        let (rec, why) = self.recommend(input);
        let rec = rec.clamp(lo, hi);
        self.recommendations.push_back((input.now, rec));
        while let Some(&(t, _)) = self.recommendations.front() {
            if input.now - t > self.cfg.scale_down_stabilization {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
        let (desired, rule) = if rec > r.current {
            let limit =
                (r.current.saturating_mul(2)).max(r.current.saturating_add(HPA_SCALE_UP_PODS));
            (rec.min(limit), format!("scale_up: {why}"))
        } else {
            let stabilised = self
                .recommendations
                .iter()
                .map(|&(_, n)| n)
                .max()
                .unwrap_or(rec)
                .min(r.current);
            if stabilised < r.current {
                (
                    stabilised,
                    format!(
                        "scale_down (max over {:.0}s window): {why}",
                        self.cfg.scale_down_stabilization
                    ),
                )
            } else if rec < r.current {
                (r.current, format!("hold_stabilization: {why}"))
            } else {
                (r.current, format!("hold: {why}"))
            }
        };
        let serving = serving(input);
        Decision {
            outlier_detection: None,
            max_requests: None,
            at: input.now,
            weights: equal_weights(serving.iter().map(|b| b.backend.as_str())),
            ejected: Vec::new(),
            scaling: ScalingSignal {
                desired_replicas: desired.clamp(lo, hi),
                current_replicas: r.current,
                rule: rule.clone(),
            },
            algorithm: AlgorithmChoice {
                algorithm: self.cfg.algorithm,
                rule: "hpa: fixed algorithm".into(),
            },
            explanation: Explanation {
                inputs: inputs_summary(input),
                forecast: None,
                rules: vec![rule],
                headroom: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ReplicaState;

    fn b(name: &str, rate: f64, cpu: f64) -> BackendObservation {
        BackendObservation {
            backend: name.into(),
            healthy: true,
            request_rate: rate,
            in_flight: 1.0,
            latency_p50: 0.01,
            latency_p90: 0.02,
            latency_p99: 0.05,
            error_rate: 0.0,
            cpu_utilization: Some(cpu),
            memory_utilization: None,
            observed_at: 0.0,
        }
    }

    fn replicas(current: u32) -> ReplicaState {
        ReplicaState {
            current,
            ready: current,
            min: 1,
            max: 100,
            boot_time: 60.0,
        }
    }

    fn tick<'a>(now: f64, backends: &'a [BackendObservation], r: ReplicaState) -> TickInput<'a> {
        TickInput {
            now,
            interval: 15.0,
            backends,
            demand_rps: 100.0,
            forecast: None,
            replicas: r,
        }
    }

    #[test]
    fn a58_formula() {
        assert_eq!(A58Policy::report_weight(100.0, 0.5, 0.0, 1.0), 200.0);
        // 10 errors/s at 100 qps with penalty 1 adds 0.1 to utilisation.
        assert!((A58Policy::report_weight(100.0, 0.4, 10.0, 1.0) - 200.0).abs() < 1e-9);
        assert_eq!(A58Policy::report_weight(0.0, 0.5, 0.0, 1.0), 0.0);
    }

    #[test]
    fn a58_blackout_then_weights_then_expiry() {
        let mut p = A58Policy::new(A58Config::default());
        let obs = [b("a", 100.0, 0.9), b("b", 100.0, 0.1)];
        let d = p.decide(&tick(0.0, &obs, replicas(2)));
        assert_eq!(d.weights[0].weight, d.weights[1].weight, "blackout: equal");
        let d = p.decide(&tick(10.0, &obs, replicas(2)));
        assert!(
            d.weights[1].weight > 8 * d.weights[0].weight,
            "{:?}",
            d.weights
        );
        // No more reports (zero qps) for 3 minutes: weights expire.
        let quiet = [b("a", 0.0, 0.0), b("b", 0.0, 0.0)];
        let d = p.decide(&tick(200.0, &quiet, replicas(2)));
        assert_eq!(d.weights[0].weight, d.weights[1].weight);
    }

    #[test]
    fn a58_missing_weight_takes_the_mean() {
        let mut p = A58Policy::new(A58Config {
            blackout_period: 0.0,
            ..A58Config::default()
        });
        let obs = [b("a", 100.0, 0.5), b("b", 100.0, 0.25), b("c", 0.0, 0.0)];
        let d = p.decide(&tick(0.0, &obs, replicas(3)));
        assert_eq!(d.weights[2].weight, 100, "{:?}", d.weights);
    }

    #[test]
    fn hpa_formula_and_tolerance() {
        let mut p = HpaPolicy::new(HpaConfig::default());
        let obs: Vec<_> = (0..4).map(|i| b(&format!("r{i}"), 100.0, 0.74)).collect();
        let d = p.decide(&tick(0.0, &obs, replicas(4)));
        assert_eq!(d.scaling.desired_replicas, 4, "within 10% tolerance");
        let obs: Vec<_> = (0..4).map(|i| b(&format!("r{i}"), 100.0, 1.0)).collect();
        let d = p.decide(&tick(15.0, &obs, replicas(4)));
        assert_eq!(d.scaling.desired_replicas, 6, "ceil(4 × 1.0/0.7) = 6");
    }

    #[test]
    fn hpa_scale_down_waits_for_the_stabilisation_window() {
        let mut p = HpaPolicy::new(HpaConfig::default());
        let busy: Vec<_> = (0..6).map(|i| b(&format!("r{i}"), 100.0, 0.7)).collect();
        let idle: Vec<_> = (0..6).map(|i| b(&format!("r{i}"), 10.0, 0.2)).collect();
        p.decide(&tick(0.0, &busy, replicas(6)));
        for t in (15..=300).step_by(15) {
            let d = p.decide(&tick(t as f64, &idle, replicas(6)));
            assert_eq!(
                d.scaling.desired_replicas, 6,
                "t={t}: the 6 at t=0 is still in the window"
            );
        }
        let d = p.decide(&tick(315.0, &idle, replicas(6)));
        assert_eq!(
            d.scaling.desired_replicas, 2,
            "ceil(6 × 0.2/0.7) = 2 once the window has passed"
        );
    }

    #[test]
    fn hpa_counts_booting_pods_at_zero_when_scaling_up() {
        let mut p = HpaPolicy::new(HpaConfig::default());
        let obs: Vec<_> = (0..4).map(|i| b(&format!("r{i}"), 100.0, 0.9)).collect();
        let r = ReplicaState {
            current: 6,
            ready: 4,
            min: 1,
            max: 100,
            boot_time: 60.0,
        };
        let d = p.decide(&tick(0.0, &obs, r));
        // 3.6 / 6 / 0.7 = 0.857: direction flips, hold.
        assert_eq!(d.scaling.desired_replicas, 6);
    }

    #[test]
    fn static_weights_are_equal() {
        let mut p = StaticPolicy::equal("round_robin", LbAlgorithm::RoundRobin);
        let mut obs = [b("a", 1.0, 0.1), b("b", 50.0, 0.9), b("c", 5.0, 0.2)];
        obs[2].healthy = false;
        let d = p.decide(&tick(0.0, &obs, replicas(3)));
        assert_eq!(d.weights.len(), 2, "the unhealthy backend is drained");
        assert!(d.weights.iter().all(|w| w.weight == 100));
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::RoundRobin);
        assert_eq!(d.scaling.desired_replicas, 3);
    }

    #[test]
    fn static_hints_list_every_backend_and_fixed_replicas_are_clamped() {
        let hints = BTreeMap::from([("b".to_string(), 3), ("c".to_string(), 0)]);
        let mut p = StaticPolicy::new(
            "static",
            StaticOptions {
                algorithm: LbAlgorithm::LeastRequest,
                weights: StaticWeights::Hints(hints),
                replicas: Some(500),
            },
        );
        let mut obs = [b("a", 1.0, 0.1), b("b", 50.0, 0.9), b("c", 5.0, 0.2)];
        obs[0].healthy = false;
        let d = p.decide(&tick(0.0, &obs, replicas(3)));
        let w: Vec<(&str, u32)> = d
            .weights
            .iter()
            .map(|w| (w.backend.as_str(), w.weight))
            .collect();
        assert_eq!(w, [("a", 1), ("b", 3), ("c", 1)]);
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::LeastRequest);
        assert_eq!(d.scaling.desired_replicas, 100, "clamped to max");
    }
}
