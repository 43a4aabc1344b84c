//! Running a scenario: every policy × every seed, in parallel (rayon), then
//! per-policy 95% CIs and paired comparisons against the first policy.
//!
//! Each replication builds its own policy and forecaster inside the worker
//! thread, so neither needs to be `Send`.

use std::collections::BTreeMap;

use aya_policy::{ControlLoop, DemandForecaster};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dist::{Stream, stream_seed};
use crate::engine::{BoxedLoop, RunMetrics, RunResult, SimError, WindowRow, simulate};
use crate::policy::{PolicyContext, make_forecaster, policy_spec};
use crate::scenario::{PolicySpec, Scenario, ScenarioError};
use crate::stats::{Estimate, Paired, paired};
use aya_policy::Decision;

/// Errors of a scenario run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Scenario / policy construction.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Simulation.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// Reads one metric from a replication's results.
pub type MetricFn = fn(&RunMetrics) -> f64;

/// The metrics summarised across replications, with how to read them.
pub const METRICS: &[(&str, MetricFn)] = &[
    ("success_rate", |m| m.success_rate),
    ("mean", |m| m.mean),
    ("p50", |m| m.p50),
    ("p90", |m| m.p90),
    ("p99", |m| m.p99),
    ("p999", |m| m.p999),
    ("timed_out", |m| m.timed_out as f64),
    ("errors", |m| m.errors as f64),
    ("dropped", |m| m.dropped as f64),
    ("slo_violation_minutes", |m| m.slo_violation_minutes),
    ("imbalance_max_mean", |m| m.imbalance_max_mean),
    ("imbalance_cv", |m| m.imbalance_cv),
    ("mean_utilization", |m| m.mean_utilization),
    ("replica_hours", |m| m.replica_hours),
    ("scaling_actions", |m| m.scaling_actions as f64),
    ("events_per_second", |m| m.events_per_second),
];

/// All replications of one policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyRuns {
    /// Label (policy name unless overridden).
    pub label: String,
    /// Per-seed metrics, in seed order.
    pub runs: Vec<RunMetrics>,
    /// Mean ± 95% CI per metric.
    pub summary: BTreeMap<String, Estimate>,
    /// Time series of the first seed.
    pub series: Vec<WindowRow>,
    /// Decisions that changed something, first seed.
    pub decisions: Vec<Decision>,
    /// The headroom forecast at every control tick that had one, first seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headroom: Vec<(f64, aya_policy::Headroom)>,
    /// The scored SLO windows, first seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo_windows: Vec<crate::alerts::SloWindow>,
}

/// A known event of the scenario's calendar (`forecaster.events`) on the
/// virtual time line, as the report shades it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSpan {
    /// Name, e.g. `Brazil v Chile`.
    pub name: String,
    /// Category, e.g. `match`.
    pub category: String,
    /// Start, virtual seconds.
    pub start: f64,
    /// End (exclusive), virtual seconds.
    pub end: f64,
}

/// The events of the scenario's calendar that overlap the simulated
/// period `[0, duration)` (from 0 on without a duration), in calendar
/// order; empty without a calendar.
pub fn event_spans(sc: &Scenario) -> Vec<EventSpan> {
    let Some((cal, _)) = sc.forecaster.as_ref().and_then(|f| f.calendar.as_ref()) else {
        return Vec::new();
    };
    cal.events
        .iter()
        .map(|e| EventSpan {
            name: e.name.clone(),
            category: e.category.clone(),
            start: e.start_ms as f64 / 1000.0,
            end: e.end_ms as f64 / 1000.0,
        })
        .filter(|e| e.end > 0.0 && sc.model.duration.is_none_or(|d| e.start < d))
        .collect()
}

/// Paired comparison of one policy against the reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// Reference label.
    pub reference: String,
    /// Compared label.
    pub policy: String,
    /// Per metric: policy − reference.
    pub metrics: BTreeMap<String, Paired>,
}

/// Results of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Seeds used.
    pub seeds: Vec<u64>,
    /// Per policy.
    pub policies: Vec<PolicyRuns>,
    /// Paired comparisons against the first policy.
    pub comparisons: Vec<Comparison>,
    /// The calendar's events within the simulated period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventSpan>,
}

/// The context the registry builds one replication's policy with: the
/// replication's policy seed and the scenario's data-plane algorithm.
pub fn policy_context(sc: &Scenario, seed: u64) -> PolicyContext {
    PolicyContext {
        seed: stream_seed(seed, Stream::Policy),
        algorithm: sc.algorithm,
        path: sc.path.clone(),
    }
}

/// Build the control loop for one replication: the policy of `spec` and the
/// scenario's `[forecaster]`.
pub fn control_loop(
    sc: &Scenario,
    spec: &PolicySpec,
    seed: u64,
) -> Result<BoxedLoop, ScenarioError> {
    let ctx = policy_context(sc, seed);
    let forecaster = make_forecaster(sc.forecaster.as_ref(), &ctx)?;
    let mut ctl = control_loop_with(sc, spec, seed, forecaster)?;
    ctl.warm(&sc.warm_history);
    Ok(ctl)
}

/// The control loop of one replication with a forecaster of the driver's
/// own (e.g. `aya demo`'s, trained on a history) instead of the scenario's.
pub fn control_loop_with(
    sc: &Scenario,
    spec: &PolicySpec,
    seed: u64,
    forecaster: Option<Box<dyn DemandForecaster>>,
) -> Result<BoxedLoop, ScenarioError> {
    let ctx = policy_context(sc, seed);
    let policy = policy_spec(&with_client_timeout(sc, spec), &ctx.path)?;
    Ok(ControlLoop::for_policy(
        &policy,
        &ctx.build_context(),
        forecaster,
        sc.model.forecast_horizon,
    ))
}

/// Aya's `request_timeout` is the clients' timeout, which a user sets to
/// their route's: the simulator tells Aya the scenario's `timeout` unless the
/// scenario's parameters say otherwise.
fn with_client_timeout(sc: &Scenario, spec: &PolicySpec) -> PolicySpec {
    let mut spec = spec.clone();
    if spec.name.eq_ignore_ascii_case("aya")
        && let Some(t) = sc.model.timeout
        && !spec.params.contains_key("request_timeout")
    {
        spec.params
            .insert("request_timeout".into(), toml::Value::Float(t));
    }
    spec
}

/// One replication of `spec` on `sc` with `seed`.
pub fn run_one(sc: &Scenario, spec: &PolicySpec, seed: u64) -> Result<RunResult, RunError> {
    let ctl = control_loop(sc, spec, seed)?;
    Ok(simulate(&sc.model, seed, Some(ctl))?)
}

/// Summarise per-seed metrics.
pub fn summarize(runs: &[RunMetrics]) -> BTreeMap<String, Estimate> {
    METRICS
        .iter()
        .map(|(n, f)| {
            (
                n.to_string(),
                Estimate::of(&runs.iter().map(f).collect::<Vec<_>>()),
            )
        })
        .collect()
}

/// Run every policy of `sc` on every seed (in parallel) and summarise.
pub fn run_scenario(sc: &Scenario) -> Result<ScenarioResult, RunError> {
    let jobs: Vec<(usize, usize)> = (0..sc.policies.len())
        .flat_map(|p| (0..sc.seeds.len()).map(move |s| (p, s)))
        .collect();
    let results: Vec<Result<RunResult, RunError>> = jobs
        .par_iter()
        .map(|&(p, s)| run_one(sc, &sc.policies[p], sc.seeds[s]))
        .collect();
    let mut per_policy: Vec<Vec<RunResult>> = (0..sc.policies.len()).map(|_| Vec::new()).collect();
    for (r, &(p, _)) in results.into_iter().zip(&jobs) {
        per_policy[p].push(r?);
    }
    Ok(assemble(sc, per_policy))
}

/// Build a scenario's result from its replications, grouped per policy in
/// the scenario's policy order (each group in seed order): per-policy
/// summaries, the first seed's time series and decisions, and paired
/// comparisons against the first policy. Policies without any replication
/// are left out. Shared by [`run_scenario`] and drivers that schedule the
/// replications themselves (e.g. `aya demo`).
pub fn assemble(sc: &Scenario, per_policy: Vec<Vec<RunResult>>) -> ScenarioResult {
    let mut policies = Vec::new();
    for (spec, rr) in sc.policies.iter().zip(per_policy) {
        let runs: Vec<RunMetrics> = rr.iter().map(|r| r.metrics.clone()).collect();
        let Some(first) = rr.into_iter().next() else {
            continue;
        };
        policies.push(PolicyRuns {
            label: spec.label().to_string(),
            summary: summarize(&runs),
            runs,
            series: first.series,
            decisions: first.decisions,
            headroom: first.headroom,
            slo_windows: first.slo_windows,
        });
    }
    let mut comparisons = Vec::new();
    if let Some(reference) = policies.first() {
        for other in policies.iter().skip(1) {
            let metrics = METRICS
                .iter()
                .map(|(n, f)| {
                    let a: Vec<f64> = reference.runs.iter().map(f).collect();
                    let b: Vec<f64> = other.runs.iter().map(f).collect();
                    (n.to_string(), paired(&a, &b))
                })
                .collect();
            comparisons.push(Comparison {
                reference: reference.label.clone(),
                policy: other.label.clone(),
                metrics,
            });
        }
    }
    ScenarioResult {
        name: sc.name.clone(),
        description: sc.description.clone(),
        seeds: sc.seeds.clone(),
        policies,
        comparisons,
        events: event_spans(sc),
    }
}
