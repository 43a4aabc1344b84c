//! Control policies and forecasters the simulator can run, selected by name
//! from a scenario's `[policy]` / `[forecaster]` sections.
//!
//! The decision engine and its baselines live in `aya-policy`; this module is
//! the *factory* that maps a [`PolicySpec`] to a boxed [`Policy`]. Until the
//! engine lands it offers [`StaticPolicy`] (equal weights, fixed replicas,
//! fixed algorithm). To add a policy, add a row to [`POLICIES`].

use aya_policy::{
    AlgorithmChoice, BackendWeight, Decision, DemandForecast, DemandForecaster, Explanation,
    LbAlgorithm, Policy, ScalingSignal, TickInput, Time,
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
/// are handed over as JSON, and its errors name the offending key.
fn make_engine_policy(
    spec: &PolicySpec,
    ctx: &PolicyContext,
) -> Result<Box<dyn Policy>, ScenarioError> {
    let params = match serde_json::to_value(&spec.params) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(param_err(ctx, "*", "parameters must be a table")),
    };
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
