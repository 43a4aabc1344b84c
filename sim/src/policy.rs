//! Control policies and forecasters the simulator can run, selected by name
//! from a scenario's `[policy]` / `[forecaster]` sections.
//!
//! The decision engine and its baselines live in `aya-policy`; this module is
//! the *factory* that maps a [`PolicySpec`] to a boxed [`Policy`]. Until the
//! engine lands it offers [`StaticPolicy`] (equal weights, fixed replicas,
//! fixed algorithm). To add a policy, add a row to [`POLICIES`].

use aya_policy::{
    AlgorithmChoice, AlgorithmScorer, BackendWeight, Decision, DemandForecast, DemandForecaster,
    Explanation, LbAlgorithm, Policy, PoolSnapshot, ScalingSignal, TickInput, Time,
};

use crate::scenario::{ForecasterSpec, PolicySpec, ScenarioError};

/// What a policy factory may use besides its own parameters.
#[derive(Debug, Clone)]
pub struct PolicyContext {
    /// Seed for the policy's own randomness (derived from the replication seed).
    pub seed: u64,
    /// The scenario's data-plane algorithm (None in central-queue mode).
    pub algorithm: Option<LbAlgorithm>,
    /// Scenario file, for error messages.
    pub path: std::path::PathBuf,
}

/// A policy constructor.
pub type PolicyFactory = fn(&PolicySpec, &PolicyContext) -> Result<Box<dyn Policy>, ScenarioError>;

/// Registered policies: name → factory.
pub const POLICIES: &[(&str, PolicyFactory)] = &[
    ("static", make_static),
    // Aya and the baselines of aya-policy (issue #5), built by `aya_policy::by_name`.
    ("aya", make_engine_policy),
    ("round_robin", make_engine_policy),
    ("a58", make_engine_policy),
    ("peak_ewma", make_engine_policy),
    ("p2c", make_engine_policy),
    ("hpa", make_engine_policy),
];

/// Build a policy of `aya-policy` by name; its parameters (a TOML table)
/// are handed over as JSON, and its errors name the offending key. Aya with
/// `score_algorithms = true` gets a [`SimScorer`] (seeded from the
/// replication seed), so it can predict an algorithm switch before making it.
fn make_engine_policy(
    spec: &PolicySpec,
    ctx: &PolicyContext,
) -> Result<Box<dyn Policy>, ScenarioError> {
    let params = match serde_json::to_value(&spec.params) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(param_err(ctx, "*", "parameters must be a table")),
    };
    if spec.name == "aya"
        && params
            .get("score_algorithms")
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    {
        let invalid = |message: String| ScenarioError::Invalid {
            path: ctx.path.clone(),
            field: "policy.params".into(),
            message,
        };
        let cfg: aya_policy::AyaConfig =
            serde_json::from_value(serde_json::Value::Object(params.clone()))
                .map_err(|e| invalid(format!("aya: {e}")))?;
        let valid = cfg.validate().map_err(|e| invalid(format!("aya: {e}")))?;
        let scorer = std::sync::Arc::new(SimScorer::new(ctx.seed));
        return Ok(Box::new(aya_policy::AyaPolicy::with_scorer(valid, scorer)));
    }
    aya_policy::by_name(&spec.name, &params, ctx.seed)
        .map(|p| -> Box<dyn Policy> { p })
        .map_err(|e| ScenarioError::Invalid {
            path: ctx.path.clone(),
            field: "policy.params".into(),
            message: e.to_string(),
        })
}

/// Names of the registered policies.
pub fn policy_names() -> Vec<&'static str> {
    POLICIES.iter().map(|(n, _)| *n).collect()
}

/// Build the policy named by `spec`.
pub fn make_policy(
    spec: &PolicySpec,
    ctx: &PolicyContext,
) -> Result<Box<dyn Policy>, ScenarioError> {
    match POLICIES.iter().find(|(n, _)| *n == spec.name) {
        Some((_, f)) => f(spec, ctx),
        None => Err(ScenarioError::UnknownPolicy {
            path: ctx.path.clone(),
            name: spec.name.clone(),
            allowed: policy_names().join(", "),
        }),
    }
}

fn param_err(ctx: &PolicyContext, key: &str, msg: &str) -> ScenarioError {
    ScenarioError::Invalid {
        path: ctx.path.clone(),
        field: format!("policy.params.{key}"),
        message: msg.into(),
    }
}

fn make_static(spec: &PolicySpec, ctx: &PolicyContext) -> Result<Box<dyn Policy>, ScenarioError> {
    let mut algorithm = ctx.algorithm.unwrap_or(LbAlgorithm::LeastRequest);
    let mut replicas = None;
    for (k, v) in &spec.params {
        match k.as_str() {
            "algorithm" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| param_err(ctx, k, "must be a string"))?;
                algorithm = s
                    .parse()
                    .map_err(|e: aya_policy::UnknownAlgorithm| param_err(ctx, k, &e.to_string()))?;
            }
            "replicas" => {
                let n = v
                    .as_integer()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| param_err(ctx, k, "must be an integer >= 1"))?;
                replicas = Some(n as u32);
            }
            _ => {
                return Err(param_err(
                    ctx,
                    k,
                    "unknown parameter; allowed: algorithm, replicas",
                ));
            }
        }
    }
    Ok(Box::new(StaticPolicy {
        algorithm,
        replicas,
    }))
}

/// Equal weights, fixed replica count, fixed algorithm: the "do nothing" baseline.
#[derive(Debug, Clone)]
pub struct StaticPolicy {
    /// Algorithm to keep.
    pub algorithm: LbAlgorithm,
    /// Replica count to hold (None: keep the current count).
    pub replicas: Option<u32>,
}

impl Policy for StaticPolicy {
    fn name(&self) -> &str {
        "static"
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        let current = input.replicas.current;
        let desired = self.replicas.unwrap_or(current).clamp(
            input.replicas.min,
            input.replicas.max.max(input.replicas.min),
        );
        Decision {
            at: input.now,
            weights: input
                .backends
                .iter()
                .map(|b| BackendWeight {
                    backend: b.backend.clone(),
                    weight: 1,
                })
                .collect(),
            ejected: Vec::new(),
            scaling: ScalingSignal {
                desired_replicas: desired,
                current_replicas: current,
                rule: "static".into(),
            },
            algorithm: AlgorithmChoice {
                algorithm: self.algorithm,
                rule: "static".into(),
            },
            explanation: Explanation {
                inputs: vec![
                    format!("demand_rps={:.1}", input.demand_rps),
                    format!("backends={}", input.backends.len()),
                ],
                forecast: None,
                rules: vec!["static: equal weights, fixed replicas, fixed algorithm".into()],
            },
        }
    }
}

/// Scores a candidate algorithm by simulating the engine's [`PoolSnapshot`]
/// for its horizon: every backend a single FCFS server whose speed is its
/// estimated capacity, Poisson arrivals at the snapshot's load, service times
/// exponential (or constant when they are steady), the snapshot's weights
/// published at t = 0, a 20 % warm-up. Deterministic: one fixed seed, the
/// same for every candidate (common random numbers), so two candidates differ
/// only by the algorithm. Backends with several workers are modelled as one
/// faster server, which overstates queueing for every candidate alike: the
/// ranking, not the absolute figure, is what the engine uses.
#[derive(Debug, Clone)]
pub struct SimScorer {
    seed: u64,
}

/// Most requests one scoring run simulates (bounds its cost at high load).
const SCORER_MAX_REQUESTS: f64 = 200_000.0;

impl SimScorer {
    /// A scorer drawing its arrivals and service times from `seed`.
    pub fn new(seed: u64) -> SimScorer {
        SimScorer { seed }
    }

    fn model(&self, algorithm: LbAlgorithm, pool: &PoolSnapshot) -> Option<crate::model::Model> {
        use crate::dist::ServiceDist;
        use crate::model::{BackendModel, Discipline, Dispatch, Model};
        let caps: Vec<f64> = pool.backends.iter().map(|b| b.capacity_rps).collect();
        if caps.is_empty()
            || caps.iter().any(|c| !(c.is_finite() && *c > 0.0))
            || !(pool.load_rps.is_finite() && pool.load_rps > 0.0)
            || !(pool.horizon.is_finite() && pool.horizon > 0.0)
        {
            return None;
        }
        let mut sorted = caps.clone();
        sorted.sort_by(f64::total_cmp);
        let reference = sorted[sorted.len() / 2];
        let mean = 1.0 / reference;
        let horizon = pool
            .horizon
            .min(SCORER_MAX_REQUESTS / pool.load_rps)
            .max(1.0);
        let mut m = Model::textbook(
            1,
            0.5,
            if pool.variable_service {
                ServiceDist::Exponential { mean }
            } else {
                ServiceDist::Deterministic { mean }
            },
            Dispatch::Balancer(algorithm),
            0,
        );
        m.arrivals = crate::workload::ArrivalSpec::Poisson {
            rate: pool.load_rps,
        };
        m.max_requests = None;
        m.warmup_requests = 0;
        m.duration = Some(horizon);
        m.warmup = 0.2 * horizon;
        m.drain_limit = horizon;
        m.backends = pool
            .backends
            .iter()
            .map(|b| BackendModel {
                name: b.backend.clone(),
                speed: b.capacity_rps / reference,
                concurrency: 1,
                discipline: Discipline::Fcfs,
                queue_limit: None,
                drop_expired: false,
            })
            .collect();
        m.control_interval = Some(horizon);
        Some(m)
    }
}

impl AlgorithmScorer for SimScorer {
    fn score(&self, algorithm: LbAlgorithm, pool: &PoolSnapshot) -> Option<f64> {
        let model = self.model(algorithm, pool)?;
        let publish = FixedDecision {
            weights: pool
                .backends
                .iter()
                .map(|b| BackendWeight {
                    backend: b.backend.clone(),
                    weight: b.weight.max(1),
                })
                .collect(),
            algorithm,
        };
        let control: crate::engine::BoxedLoop =
            aya_policy::ControlLoop::new(Box::new(publish), None, 0);
        let run = crate::engine::simulate(&model, self.seed, Some(control)).ok()?;
        let p99 = run.metrics.p99;
        (p99.is_finite() && run.metrics.completed > 0).then_some(p99)
    }
}

/// Publishes the same weights and algorithm at every tick (the scorer's
/// stand-in for the engine during a scoring run).
#[derive(Debug, Clone)]
struct FixedDecision {
    weights: Vec<BackendWeight>,
    algorithm: LbAlgorithm,
}

impl Policy for FixedDecision {
    fn name(&self) -> &str {
        "fixed"
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        Decision {
            at: input.now,
            weights: self.weights.clone(),
            ejected: Vec::new(),
            scaling: ScalingSignal {
                desired_replicas: input.replicas.current,
                current_replicas: input.replicas.current,
                rule: "fixed".into(),
            },
            algorithm: AlgorithmChoice {
                algorithm: self.algorithm,
                rule: "scoring".into(),
            },
            explanation: Explanation::default(),
        }
    }
}

/// A forecaster constructor (`Ok(None)` = no forecaster).
pub type ForecasterFactory =
    fn(&ForecasterSpec, &PolicyContext) -> Result<Option<Box<dyn DemandForecaster>>, ScenarioError>;

/// Registered forecasters.
pub const FORECASTERS: &[(&str, ForecasterFactory)] = &[
    ("none", |_, _| Ok(None)),
    ("naive", make_naive),
    // The controller's forecaster (`aya serve` builds the same one), grid `step_seconds` (default 60).
    ("online", |spec, ctx| {
        let mut cfg = aya_forecaster::online::OnlineConfig::default();
        for (k, v) in &spec.params {
            match (
                k.as_str(),
                v.as_float().or(v.as_integer().map(|i| i as f64)),
            ) {
                ("step_seconds", Some(s)) if s.is_finite() && s > 0.0 => cfg.step_s = s,
                _ => {
                    return Err(ScenarioError::Invalid {
                        path: ctx.path.clone(),
                        field: format!("forecaster.params.{k}"),
                        message:
                            "unknown parameter or bad value; allowed: step_seconds (a number > 0)"
                                .into(),
                    });
                }
            }
        }
        let f = aya_forecaster::online::OnlineForecaster::new(cfg);
        Ok(Some(Box::new(f) as Box<dyn DemandForecaster>))
    }),
];

/// Names of the registered forecasters.
pub fn forecaster_names() -> Vec<&'static str> {
    FORECASTERS.iter().map(|(n, _)| *n).collect()
}

/// Build the forecaster named by `spec` (None when `spec` is None).
pub fn make_forecaster(
    spec: Option<&ForecasterSpec>,
    ctx: &PolicyContext,
) -> Result<Option<Box<dyn DemandForecaster>>, ScenarioError> {
    let Some(spec) = spec else { return Ok(None) };
    match FORECASTERS.iter().find(|(n, _)| *n == spec.name) {
        Some((_, f)) => f(spec, ctx),
        None => Err(ScenarioError::Invalid {
            path: ctx.path.clone(),
            field: "forecaster.name".into(),
            message: format!(
                "unknown forecaster {:?}; allowed: {}",
                spec.name,
                forecaster_names().join(", ")
            ),
        }),
    }
}

fn make_naive(
    spec: &ForecasterSpec,
    ctx: &PolicyContext,
) -> Result<Option<Box<dyn DemandForecaster>>, ScenarioError> {
    let mut window = 12usize;
    for (k, v) in &spec.params {
        match k.as_str() {
            "window" => {
                window =
                    v.as_integer()
                        .filter(|n| *n >= 2)
                        .ok_or_else(|| ScenarioError::Invalid {
                            path: ctx.path.clone(),
                            field: "forecaster.params.window".into(),
                            message: "must be an integer >= 2".into(),
                        })? as usize
            }
            _ => {
                return Err(ScenarioError::Invalid {
                    path: ctx.path.clone(),
                    field: format!("forecaster.params.{k}"),
                    message: "unknown parameter; allowed: window".into(),
                });
            }
        }
    }
    Ok(Some(Box::new(NaiveForecaster::new(window))))
}

/// Last-value forecaster with a 95% interval from the spread of recent
/// one-step changes (random-walk model): a simple, honest reference.
#[derive(Debug, Clone)]
pub struct NaiveForecaster {
    history: std::collections::VecDeque<(Time, f64)>,
    window: usize,
    step: f64,
}

impl NaiveForecaster {
    /// Keep `window` recent observations.
    pub fn new(window: usize) -> NaiveForecaster {
        NaiveForecaster {
            history: Default::default(),
            window: window.max(2),
            step: 0.0,
        }
    }
}

impl DemandForecaster for NaiveForecaster {
    fn observe(&mut self, t: Time, demand_rps: f64) {
        if let Some((lt, _)) = self.history.back()
            && t > *lt
        {
            self.step = t - lt;
        }
        self.history.push_back((t, demand_rps));
        while self.history.len() > self.window {
            self.history.pop_front();
        }
    }

    fn forecast_into(&mut self, now: Time, horizon: usize, out: &mut DemandForecast) -> bool {
        out.clear();
        if self.history.len() < 2 || self.step <= 0.0 {
            return false;
        }
        let last = self.history.back().map(|x| x.1).unwrap_or(0.0);
        let diffs: Vec<f64> = self
            .history
            .iter()
            .zip(self.history.iter().skip(1))
            .map(|(a, b)| b.1 - a.1)
            .collect();
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
        out.issued_at = now;
        out.step = self.step;
        out.level = 0.95;
        for h in 1..=horizon {
            let w = 1.96 * sd * (h as f64).sqrt();
            out.mean.push(last);
            out.lower.push((last - w).max(0.0));
            out.upper.push(last + w);
        }
        true
    }

    fn step(&self) -> f64 {
        self.step
    }
}

#[cfg(test)]
mod scorer_tests {
    use super::*;
    use aya_policy::PoolBackend;

    fn pool(variable_service: bool) -> PoolSnapshot {
        // 1x / 2x / 4x capacities, weights from the tail split at 500 rps.
        let caps = [100.0, 200.0, 400.0];
        let weights = [1, 60, 240];
        PoolSnapshot {
            backends: caps
                .iter()
                .zip(weights)
                .enumerate()
                .map(|(i, (c, w))| PoolBackend {
                    backend: format!("b{i}"),
                    capacity_rps: *c,
                    weight: w,
                })
                .collect(),
            load_rps: 500.0,
            horizon: 20.0,
            variable_service,
        }
    }

    #[test]
    fn scorer_is_deterministic_and_prefers_least_request_for_variable_service() {
        let s = SimScorer::new(7);
        let p = pool(true);
        let lr = s.score(LbAlgorithm::LeastRequest, &p).unwrap();
        let wrr = s.score(LbAlgorithm::WeightedRoundRobin, &p).unwrap();
        assert_eq!(Some(lr), s.score(LbAlgorithm::LeastRequest, &p));
        // The slow server's queue makes the static split's tail far worse.
        assert!(lr < wrr, "least request {lr} vs wrr {wrr}");
        // Plain round robin ignores the weights: the 1x server is overloaded.
        let rr = s.score(LbAlgorithm::RoundRobin, &p).unwrap();
        assert!(rr > 2.0 * lr, "round robin {rr} vs least request {lr}");
    }

    #[test]
    fn scorer_refuses_nonsense() {
        let s = SimScorer::new(1);
        let mut p = pool(false);
        p.load_rps = f64::NAN;
        assert_eq!(s.score(LbAlgorithm::LeastRequest, &p), None);
        let mut p = pool(false);
        p.backends.clear();
        assert_eq!(s.score(LbAlgorithm::LeastRequest, &p), None);
    }

    #[test]
    fn aya_with_score_algorithms_builds_with_a_scorer_and_checks_its_params() {
        let ctx = PolicyContext {
            seed: 1,
            algorithm: None,
            path: "x.toml".into(),
        };
        let mut spec = PolicySpec::named("aya");
        spec.params
            .insert("score_algorithms".into(), toml::Value::Boolean(true));
        assert!(make_policy(&spec, &ctx).is_ok());
        spec.params
            .insert("score_min_gain".into(), toml::Value::Float(2.0));
        let err = make_policy(&spec, &ctx).err().unwrap().to_string();
        assert!(err.contains("score_min_gain"), "{err}");
    }
}
