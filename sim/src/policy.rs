//! Control policies and forecasters the simulator can run, selected by name
//! from a scenario's `[policy]` / `[forecaster]` sections.
//!
//! Policies come from the one registry of `aya-policy`
//! ([`aya_policy::POLICIES`]): this module maps a scenario's [`PolicySpec`]
//! to a checked [`aya_policy::PolicySpec`] (its errors name the scenario
//! file, the key and the policy) and gives the registry what only the
//! simulator knows: the replication's seed, the scenario's data-plane
//! algorithm (the `static` policy keeps it) and [`SimScorer`] (for Aya's
//! `score_algorithms`). Forecasters are the forecaster crate's
//! [`OnlineForecaster`](aya_forecaster::online::OnlineForecaster), the one the
//! service runs, in its selected (`online`) or random-walk (`naive`) mode.

use aya_forecaster::online::{OnlineConfig, OnlineForecaster};
use aya_policy::{
    AlgorithmChoice, AlgorithmScorer, BackendWeight, BuildContext, Decision, DemandForecaster,
    Explanation, LbAlgorithm, Policy, PolicyError, PoolSnapshot, ScalingSignal, TickInput,
};
use serde::Deserialize;

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

impl PolicyContext {
    /// What the registry needs from the simulator to build a policy.
    pub fn build_context(&self) -> BuildContext {
        BuildContext {
            seed: self.seed,
            algorithm: self.algorithm,
            weight_hints: Default::default(),
            scorer: Some(|seed| std::sync::Arc::new(SimScorer::new(seed))),
        }
    }
}

/// Names of the registered policies (the registry's canonical names).
pub fn policy_names() -> Vec<&'static str> {
    aya_policy::policy_names().collect()
}

/// Parse and check the parameters of `spec` (a scenario's `[[policy]]`)
/// with the registry; errors name `path`, the key and the policy.
pub fn policy_spec(
    spec: &PolicySpec,
    path: &std::path::Path,
) -> Result<aya_policy::PolicySpec, ScenarioError> {
    aya_policy::PolicySpec::parse(&spec.name, toml::Value::Table(spec.params.clone())).map_err(
        |e| match e {
            PolicyError::UnknownPolicy { allowed, .. } => ScenarioError::UnknownPolicy {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                allowed,
            },
            other => ScenarioError::Invalid {
                path: path.to_path_buf(),
                field: "policy.params".into(),
                message: other.to_string(),
            },
        },
    )
}

/// Build the policy named by `spec`.
pub fn make_policy(
    spec: &PolicySpec,
    ctx: &PolicyContext,
) -> Result<Box<dyn Policy>, ScenarioError> {
    Ok(policy_spec(spec, &ctx.path)?
        .build(&ctx.build_context())
        .into())
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
            outlier_detection: None,
            max_requests: None,
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

/// Parameters of the `online` forecaster.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnlineParams {
    /// Grid step in seconds (default 60).
    #[serde(default = "sixty")]
    step_seconds: f64,
    /// Season in grid steps (e.g. a compressed trace's day); none: detected
    /// from the step (daily / weekly periods of real time).
    #[serde(default)]
    season: Option<usize>,
    /// Validation origins of the model selection (default 3; with a
    /// calendar at least 20, see `OnlineConfig::event_origins`).
    #[serde(default)]
    origins: Option<usize>,
}

fn sixty() -> f64 {
    60.0
}

/// Parameters of the `naive` forecaster.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct NaiveParams {
    /// Buckets the random walk's spread is computed over (default 12, ≥ 2).
    #[serde(default = "twelve")]
    window: usize,
}

fn twelve() -> usize {
    12
}

/// A forecaster constructor (`Ok(None)` = no forecaster).
pub type ForecasterFactory =
    fn(&ForecasterSpec, &PolicyContext) -> Result<Option<Box<dyn DemandForecaster>>, ScenarioError>;

/// Registered forecasters.
pub const FORECASTERS: &[(&str, ForecasterFactory)] = &[
    ("none", |_, _| Ok(None)),
    // The random-walk reference: the online forecaster's naive mode, one
    // bucket per control tick (the step is the spacing of the first two ticks).
    ("naive", |spec, ctx| {
        let p: NaiveParams = forecaster_params(spec, ctx)?;
        if p.window < 2 {
            return Err(forecaster_err(ctx, "window", "must be an integer >= 2"));
        }
        Ok(Some(online(OnlineConfig::naive(p.window))))
    }),
    // The controller's forecaster (`aya serve` builds the same one), grid `step_seconds` (default 60).
    ("online", |spec, ctx| {
        let p: OnlineParams = forecaster_params(spec, ctx)?;
        if !(p.step_seconds.is_finite() && p.step_seconds > 0.0) {
            return Err(forecaster_err(ctx, "step_seconds", "must be a number > 0"));
        }
        if p.season.is_some_and(|m| m < 2) {
            return Err(forecaster_err(
                ctx,
                "season",
                "must be an integer >= 2 (steps)",
            ));
        }
        if p.origins.is_some_and(|o| !(1..=100).contains(&o)) {
            return Err(forecaster_err(
                ctx,
                "origins",
                "must be an integer in 1..=100",
            ));
        }
        let mut cfg = OnlineConfig {
            step_s: p.step_seconds,
            season: p.season,
            ..OnlineConfig::default()
        };
        if let Some(o) = p.origins {
            cfg.select.origins = o;
        }
        let Some((calendar, placement)) = &spec.calendar else {
            return Ok(Some(online(cfg)));
        };
        // Known events (`forecaster.events`), on the virtual time line.
        cfg.event_placement = *placement;
        let mut f = OnlineForecaster::new(cfg);
        f.set_calendar(Some(calendar.clone()));
        Ok(Some(Box::new(f)))
    }),
];

fn online(cfg: OnlineConfig) -> Box<dyn DemandForecaster> {
    Box::new(OnlineForecaster::new(cfg))
}

fn forecaster_err(ctx: &PolicyContext, key: &str, message: &str) -> ScenarioError {
    ScenarioError::Invalid {
        path: ctx.path.clone(),
        field: format!("forecaster.params.{key}"),
        message: message.into(),
    }
}

fn forecaster_params<T: serde::de::DeserializeOwned>(
    spec: &ForecasterSpec,
    ctx: &PolicyContext,
) -> Result<T, ScenarioError> {
    T::deserialize(toml::Value::Table(spec.params.clone())).map_err(|e| ScenarioError::Invalid {
        path: ctx.path.clone(),
        field: "forecaster.params".into(),
        message: format!("forecaster `{}`: {e}", spec.name),
    })
}

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

    fn ctx() -> PolicyContext {
        PolicyContext {
            seed: 1,
            algorithm: Some(LbAlgorithm::Maglev),
            path: "x.toml".into(),
        }
    }

    #[test]
    fn static_keeps_the_scenarios_algorithm_and_publishes_weight_one_everywhere() {
        let mut p = make_policy(&PolicySpec::named("static"), &ctx()).unwrap();
        let mut backends = vec![
            aya_policy::BackendObservation::unobserved("a", 0.0),
            aya_policy::BackendObservation::unobserved("b", 0.0),
        ];
        backends[1].healthy = false;
        let d = p.decide(&TickInput {
            now: 0.0,
            interval: 1.0,
            backends: &backends,
            demand_rps: 0.0,
            forecast: None,
            replicas: aya_policy::ReplicaState::new(1, 1),
        });
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::Maglev);
        assert!(d.weights.len() == 2 && d.weights.iter().all(|w| w.weight == 1));
        assert_eq!(d.scaling.desired_replicas, 2);
    }

    #[test]
    fn forecaster_params_are_typed() {
        let mut spec = ForecasterSpec {
            name: "naive".into(),
            params: toml::Table::new(),
            warm_start: None,
            events: None,
            calendar: None,
        };
        spec.params.insert("windw".into(), toml::Value::Integer(3));
        let err = make_forecaster(Some(&spec), &ctx())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("windw") && err.contains("naive"), "{err}");
        spec.params.clear();
        spec.params.insert("window".into(), toml::Value::Integer(1));
        let err = make_forecaster(Some(&spec), &ctx())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("window"), "{err}");
    }

    /// The naive mode is the random walk the simulator's `naive` forecaster
    /// always was: at a tick every `interval`, the last demand with a 95 %
    /// interval `±1.96·sd·√h` from the one-step changes of the last `window`.
    #[test]
    fn naive_forecasts_the_last_tick_with_a_random_walk_interval() {
        let spec = ForecasterSpec {
            name: "naive".into(),
            params: toml::Table::new(),
            warm_start: None,
            events: None,
            calendar: None,
        };
        let mut f = make_forecaster(Some(&spec), &ctx()).unwrap().unwrap();
        let demand: Vec<f64> = (0..20)
            .map(|k| 100.0 + ((k * 7) % 5) as f64 * 10.0)
            .collect();
        let mut out = aya_policy::DemandForecast::default();
        for (k, d) in demand.iter().enumerate() {
            let t = 15.0 * k as f64;
            f.observe(t, *d);
            let ok = f.forecast_into(t, 4, &mut out);
            assert_eq!(ok, k >= 1, "tick {k}");
            if !ok {
                continue;
            }
            let recent = &demand[(k + 1).saturating_sub(12)..=k];
            let diffs: Vec<f64> = recent.windows(2).map(|w| w[1] - w[0]).collect();
            let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
            assert_eq!(out.step, 15.0);
            assert_eq!(out.mean, vec![*d; 4]);
            for h in 1..=4 {
                let w = 1.96 * sd * (h as f64).sqrt();
                assert_eq!(out.upper[h - 1], d + w);
                assert_eq!(out.lower[h - 1], (d - w).max(0.0));
            }
        }
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
