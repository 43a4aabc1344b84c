//! Scenario files (TOML): workload, backends, faults, data plane, control
//! policy, seeds and SLO, validated into a [`Model`] with errors that say
//! what is wrong, where (file, line or field) and what is allowed.
//!
//! The format is documented in `docs/sim.md` (section "Scenario format (TOML)")
//! and by the examples in `scenarios/examples/`. Sizes are bounded by
//! [`crate::model::limits`].

use std::path::{Path, PathBuf};

use aya_policy::LbAlgorithm;
use serde::{Deserialize, Serialize};

use crate::dist::ServiceDist;
use crate::lb::LbParams;
use crate::model::{
    BackendModel, Discipline, Dispatch, Fault, FaultKind, Model, Scaling, Slo, limits,
};
use crate::workload::{ArrivalSpec, KeySpec};

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML, or a field has the wrong type / an unknown name
    /// (the message carries line and column).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: `{field}`: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Dotted field path, e.g. `backends[1].speed`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The policy name is not registered.
    #[error("{path}: `policy.name`: unknown policy {name:?}; allowed: {allowed}")]
    UnknownPolicy {
        /// File.
        path: PathBuf,
        /// Given name.
        name: String,
        /// Registered names.
        allowed: String,
    },
}

/// A control policy by name, with free-form parameters for its factory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Registered policy name (see [`crate::policy::policy_names`]).
    pub name: String,
    /// Label in results (defaults to `name`); lets one policy appear twice with different params.
    #[serde(default)]
    pub label: Option<String>,
    /// Parameters, interpreted by the policy's factory.
    #[serde(default)]
    pub params: toml::Table,
}

impl PolicySpec {
    /// A spec with no parameters.
    pub fn named(name: &str) -> PolicySpec {
        PolicySpec {
            name: name.to_string(),
            label: None,
            params: toml::Table::new(),
        }
    }
    /// Label used in results.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

/// A demand forecaster by name, with free-form parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterSpec {
    /// Registered forecaster name (see [`crate::policy::forecaster_names`]).
    pub name: String,
    /// Parameters.
    #[serde(default)]
    pub params: toml::Table,
    /// Warm start: seconds of the workload's own series *before*
    /// `workload.start` (a `rate_series` workload), fed to the forecaster on
    /// the control grid before the replay begins — the history a deployed
    /// Aya would hold in its store. None: the forecaster starts cold.
    #[serde(default)]
    pub warm_start: Option<f64>,
    /// A calendar of known events (CSV or TOML, docs/events.md; relative to
    /// the scenario file, or `datasets:<path>`), in the trace's time: placed
    /// on the virtual time line through `workload.start` and `compression`
    /// (a `rate_series` workload with a `start`). Only the `online`
    /// forecaster uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<PathBuf>,
    /// The calendar on the virtual time line (milliseconds) and how it is
    /// placed on the forecaster's grid (ramp and aftermath compressed as
    /// the trace is); filled when the scenario is read.
    #[serde(skip)]
    pub calendar: Option<(
        std::sync::Arc<aya_forecaster::events::Calendar>,
        aya_forecaster::events::EventConfig,
    )>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackends {
    #[serde(default = "one_u32")]
    count: u32,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "one_f64")]
    speed: f64,
    #[serde(default = "one_u32")]
    concurrency: u32,
    #[serde(default)]
    discipline: Discipline,
    #[serde(default)]
    queue_limit: Option<u32>,
    #[serde(default)]
    drop_expired: bool,
}

fn one_u32() -> u32 {
    1
}
fn one_f64() -> f64 {
    1.0
}

#[derive(Debug, Clone)]
struct RawDataPlane {
    algorithm: String,
    health_check_delay: f64,
    params: LbParams,
}

impl RawDataPlane {
    /// `[data_plane]`: `algorithm`, `health_check_delay` and the [`LbParams`] fields, flat.
    fn from_table(mut t: toml::Table, p: &Path) -> Result<RawDataPlane, ScenarioError> {
        let algorithm = match t.remove("algorithm") {
            None => d_algo(),
            Some(toml::Value::String(s)) => s,
            Some(v) => {
                return Err(invalid(
                    p,
                    "data_plane.algorithm",
                    format!("must be a string, got {v}"),
                ));
            }
        };
        let health_check_delay = match t.remove("health_check_delay") {
            None => d_hc(),
            Some(toml::Value::Float(f)) => f,
            Some(toml::Value::Integer(i)) => i as f64,
            Some(v) => {
                return Err(invalid(
                    p,
                    "data_plane.health_check_delay",
                    format!("must be a number, got {v}"),
                ));
            }
        };
        let params: LbParams = toml::Value::Table(t)
            .try_into()
            .map_err(|e: toml::de::Error| {
                invalid(
                    p,
                    "data_plane",
                    format!(
                        "{} (also allowed: algorithm, health_check_delay)",
                        e.message()
                    ),
                )
            })?;
        Ok(RawDataPlane {
            algorithm,
            health_check_delay,
            params,
        })
    }
}

fn d_algo() -> String {
    "least_request".into()
}
fn d_hc() -> f64 {
    5.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    backend: toml::Value,
    kind: String,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    latency: Option<f64>,
    start: f64,
    #[serde(default)]
    duration: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    #[serde(default = "d_ctl")]
    interval: f64,
    #[serde(default = "d_tel")]
    telemetry_interval: f64,
    #[serde(default = "d_tel")]
    telemetry_delay: f64,
    #[serde(default = "d_hor")]
    forecast_horizon: usize,
}
fn d_ctl() -> f64 {
    10.0
}
fn d_tel() -> f64 {
    5.0
}
fn d_hor() -> usize {
    12
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    min: u32,
    max: u32,
    #[serde(default = "d_boot")]
    boot_delay: f64,
}
fn d_boot() -> f64 {
    60.0
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    #[serde(default)]
    window: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    duration: Option<f64>,
    #[serde(default)]
    max_requests: Option<u64>,
    #[serde(default)]
    warmup: f64,
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    replications: Option<u32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    drain_limit: Option<f64>,
    workload: ArrivalSpec,
    #[serde(default)]
    keys: Option<KeySpec>,
    #[serde(default)]
    service: Option<ServiceDist>,
    backends: Vec<RawBackends>,
    #[serde(default)]
    data_plane: Option<toml::Table>,
    #[serde(default)]
    faults: Vec<RawFault>,
    #[serde(default)]
    control: Option<RawControl>,
    #[serde(default)]
    autoscaling: Option<RawScaling>,
    #[serde(default)]
    policy: Option<OneOrMany<PolicySpec>>,
    #[serde(default)]
    forecaster: Option<ForecasterSpec>,
    #[serde(default)]
    slo: Option<Slo>,
    #[serde(default)]
    output: RawOutput,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Where it was read from.
    pub path: PathBuf,
    /// Name (file stem when absent).
    pub name: String,
    /// Free text.
    pub description: String,
    /// The simulation model.
    pub model: Model,
    /// Seeds, one replication each.
    pub seeds: Vec<u64>,
    /// Policies to compare (the first is the reference of paired comparisons).
    pub policies: Vec<PolicySpec>,
    /// Forecaster, if any.
    pub forecaster: Option<ForecasterSpec>,
    /// Demand the forecaster observes before t = 0 (`forecaster.warm_start`):
    /// `(virtual end time ≤ 0, requests per virtual second)` per control
    /// interval, oldest first; empty for a cold start.
    pub warm_history: Vec<(f64, f64)>,
    /// Scenario's data-plane algorithm (the static policy keeps it).
    pub algorithm: Option<LbAlgorithm>,
}

fn invalid(path: &Path, field: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

fn check_pos(path: &Path, field: &str, v: f64) -> Result<(), ScenarioError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            path,
            field,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

impl Scenario {
    /// Read and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parse and validate scenario text; `path` names it in errors and
    /// resolves relative workload paths.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let p = path;
        check_run_length(&raw, p)?;
        let (service, keys) = check_workload(&raw, p)?;
        let backends = build_backends(&raw.backends, p)?;
        let dp = RawDataPlane::from_table(raw.data_plane.clone().unwrap_or_default(), p)?;
        let (dispatch, algorithm) = check_data_plane(&dp, p)?;
        let faults = raw
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| build_fault(i, f, &backends, p))
            .collect::<Result<Vec<_>, _>>()?;
        let ctl = check_control(&raw, p)?;
        let scaling = build_scaling(raw.autoscaling.as_ref(), &backends, p)?;
        let slo = check_slo_and_output(&raw, p)?;
        let seeds = build_seeds(&raw, p)?;
        let policies = build_policies(&raw, p)?;
        check_forecaster(raw.forecaster.as_ref(), p)?;

        let base_dir = p
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut forecaster = raw.forecaster.clone();
        if let Some(f) = &mut forecaster {
            f.calendar = virtual_calendar(f, &raw.workload, &base_dir, p)?;
        }
        let warm_history = warm_history(&raw, &base_dir, ctl.interval, p)?;
        let duration = raw.duration;
        let model = Model {
            arrivals: raw.workload.clone(),
            service,
            keys,
            base_dir,
            duration,
            max_requests: raw.max_requests,
            warmup: raw.warmup,
            warmup_requests: 0,
            backends,
            dispatch,
            lb: dp.params,
            timeout: raw.timeout,
            health_check_delay: dp.health_check_delay,
            faults,
            telemetry_interval: ctl.telemetry_interval,
            telemetry_delay: ctl.telemetry_delay,
            control_interval: Some(ctl.interval),
            forecast_horizon: ctl.forecast_horizon,
            scaling,
            slo,
            series_window: Some(raw.output.window.unwrap_or(10.0)),
            drain_limit: raw
                .drain_limit
                .unwrap_or(raw.timeout.map(|t| t * 2.0).unwrap_or(60.0)),
        };
        let name = raw.name.clone().unwrap_or_else(|| {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".into())
        });
        Ok(Scenario {
            path: p.to_path_buf(),
            name,
            description: raw.description.unwrap_or_default(),
            model,
            seeds,
            policies,
            forecaster,
            warm_history,
            algorithm,
        })
    }
}

/// `duration`, `warmup` and `timeout`: positive, and a synthetic workload ends.
fn check_run_length(raw: &RawScenario, p: &Path) -> Result<(), ScenarioError> {
    if let Some(d) = raw.duration {
        check_pos(p, "duration", d)?;
    }
    if raw.duration.is_none()
        && raw.max_requests.is_none()
        && !matches!(
            raw.workload,
            ArrivalSpec::RateSeries { .. } | ArrivalSpec::Trace { .. }
        )
    {
        return Err(invalid(
            p,
            "duration",
            "a synthetic workload needs `duration` (seconds) or `max_requests`",
        ));
    }
    if !(raw.warmup.is_finite() && raw.warmup >= 0.0) {
        return Err(invalid(
            p,
            "warmup",
            format!("must be >= 0 seconds, got {}", raw.warmup),
        ));
    }
    if let (Some(d), w) = (raw.duration, raw.warmup)
        && w >= d
    {
        return Err(invalid(
            p,
            "warmup",
            format!("warm-up ({w} s) must be shorter than `duration` ({d} s)"),
        ));
    }
    if let Some(t) = raw.timeout {
        check_pos(p, "timeout", t)?;
    }
    Ok(())
}

/// `[workload]`, `[service]` and `[keys]`.
fn check_workload(raw: &RawScenario, p: &Path) -> Result<(ServiceDist, KeySpec), ScenarioError> {
    raw.workload
        .validate()
        .map_err(|m| invalid(p, "workload", m.to_string()))?;
    check_workload_size(&raw.workload, p)?;
    let service = raw
        .service
        .clone()
        .unwrap_or(ServiceDist::Exponential { mean: 0.01 });
    service
        .validate()
        .map_err(|m| invalid(p, "service", m.to_string()))?;
    if raw.service.is_none() && !matches!(raw.workload, ArrivalSpec::Trace { cost: Some(_), .. }) {
        return Err(invalid(
            p,
            "service",
            "missing: give the request-size distribution, e.g. `[service] kind = \"exponential\", mean = 0.01` \
             (kinds: exponential, deterministic, lognormal, empirical)",
        ));
    }
    let keys = raw.keys.clone().unwrap_or_default();
    if keys.clients == 0 {
        return Err(invalid(p, "keys.clients", "must be >= 1"));
    }
    if !(keys.zipf.is_finite() && keys.zipf >= 0.0) {
        return Err(invalid(p, "keys.zipf", "must be >= 0"));
    }
    Ok((service, keys))
}

/// `[[backends]]` groups expanded into named backends.
fn build_backends(groups: &[RawBackends], p: &Path) -> Result<Vec<BackendModel>, ScenarioError> {
    if groups.is_empty() {
        return Err(invalid(
            p,
            "backends",
            "at least one `[[backends]]` group is required",
        ));
    }
    let mut backends = Vec::new();
    let mut total: u64 = 0;
    let mut servers: u64 = 0;
    for (gi, g) in groups.iter().enumerate() {
        let f = |x: &str| format!("backends[{gi}].{x}");
        if g.count == 0 {
            return Err(invalid(p, f("count"), "must be >= 1"));
        }
        total += u64::from(g.count);
        if total > limits::MAX_BACKENDS as u64 {
            return Err(invalid(
                p,
                f("count"),
                format!(
                    "{} backends in all is more than the simulator's limit of {}",
                    total,
                    limits::MAX_BACKENDS
                ),
            ));
        }
        check_pos(p, &f("speed"), g.speed)?;
        if g.concurrency == 0 {
            return Err(invalid(p, f("concurrency"), "must be >= 1"));
        }
        servers += u64::from(g.count) * u64::from(g.concurrency);
        if servers > limits::MAX_SERVERS {
            return Err(invalid(
                p,
                f("concurrency"),
                format!(
                    "{servers} servers in all (count x concurrency) is more than the simulator's limit of {}",
                    limits::MAX_SERVERS
                ),
            ));
        }
        for i in 0..g.count {
            let name = match &g.name {
                Some(n) if g.count == 1 => n.clone(),
                Some(n) => format!("{n}{i}"),
                None => format!("b{}", backends.len()),
            };
            backends.push(BackendModel {
                name,
                speed: g.speed,
                concurrency: g.concurrency,
                discipline: g.discipline,
                queue_limit: g.queue_limit,
                drop_expired: g.drop_expired,
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for b in &backends {
        if !seen.insert(b.name.clone()) {
            return Err(invalid(
                p,
                "backends",
                format!(
                    "duplicate backend name {:?}; give each group a distinct `name`",
                    b.name
                ),
            ));
        }
    }
    Ok(backends)
}

/// `[data_plane]`: its parameters, health-check delay and algorithm.
fn check_data_plane(
    dp: &RawDataPlane,
    p: &Path,
) -> Result<(Dispatch, Option<LbAlgorithm>), ScenarioError> {
    dp.params
        .validate()
        .map_err(|m| invalid(p, "data_plane", m.to_string()))?;
    if !(dp.health_check_delay.is_finite() && dp.health_check_delay >= 0.0) {
        return Err(invalid(
            p,
            "data_plane.health_check_delay",
            "must be >= 0 seconds",
        ));
    }
    if dp.algorithm.trim() == "central" {
        return Ok((Dispatch::Central, None));
    }
    let a: LbAlgorithm = dp
        .algorithm
        .parse()
        .map_err(|e: aya_policy::UnknownAlgorithm| {
            invalid(p, "data_plane.algorithm", format!("{e}, central"))
        })?;
    Ok((Dispatch::Balancer(a), Some(a)))
}

/// `faults[i]`: its backend (by name or index), timing and kind.
fn build_fault(
    i: usize,
    f: &RawFault,
    backends: &[BackendModel],
    p: &Path,
) -> Result<Fault, ScenarioError> {
    let fld = |x: &str| format!("faults[{i}].{x}");
    let idx = fault_backend(&f.backend, backends, p, &fld("backend"))?;
    if !(f.start.is_finite() && f.start >= 0.0) {
        return Err(invalid(p, fld("start"), "must be >= 0 seconds"));
    }
    let duration = f.duration.unwrap_or(f64::INFINITY);
    if duration.is_nan() || duration <= 0.0 {
        return Err(invalid(
            p,
            fld("duration"),
            "must be > 0 seconds (omit for `until the end`)",
        ));
    }
    let need = |v: Option<f64>, name: &str| -> Result<f64, ScenarioError> {
        let v =
            v.ok_or_else(|| invalid(p, fld(name), format!("required for kind = {:?}", f.kind)))?;
        check_pos(p, &fld(name), v)?;
        Ok(v)
    };
    let kind = match f.kind.as_str() {
        "slowdown" => FaultKind::Slowdown {
            factor: need(f.factor, "factor")?,
        },
        "degrade" => FaultKind::Degrade {
            factor: need(f.factor, "factor")?,
        },
        "latency" => FaultKind::Latency {
            latency: need(f.latency, "latency")?,
        },
        "failure" => FaultKind::Failure,
        other => {
            return Err(invalid(
                p,
                fld("kind"),
                format!(
                    "unknown fault kind {other:?}; allowed: slowdown, degrade, latency, failure"
                ),
            ));
        }
    };
    if matches!(kind, FaultKind::Degrade { .. }) && !duration.is_finite() {
        return Err(invalid(
            p,
            fld("duration"),
            "a `degrade` fault needs the ramp `duration`",
        ));
    }
    Ok(Fault {
        backend: idx,
        kind,
        start: f.start,
        duration,
    })
}

/// A fault's `backend`: a backend name or an index into the backends.
fn fault_backend(
    v: &toml::Value,
    backends: &[BackendModel],
    p: &Path,
    field: &str,
) -> Result<usize, ScenarioError> {
    match v {
        toml::Value::String(s) => backends.iter().position(|b| &b.name == s).ok_or_else(|| {
            invalid(
                p,
                field,
                format!(
                    "no backend named {s:?}; names are {}",
                    backends
                        .iter()
                        .map(|b| b.name.as_str())
                        .take(20)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }),
        toml::Value::Integer(n) if *n >= 0 && (*n as usize) < backends.len() => Ok(*n as usize),
        v => Err(invalid(
            p,
            field,
            format!(
                "{v} is not a backend name or an index in 0..{}",
                backends.len()
            ),
        )),
    }
}

/// `[control]`, with its defaults.
fn check_control(raw: &RawScenario, p: &Path) -> Result<RawControl, ScenarioError> {
    let ctl = raw.control.clone().unwrap_or(RawControl {
        interval: d_ctl(),
        telemetry_interval: d_tel(),
        telemetry_delay: d_tel(),
        forecast_horizon: d_hor(),
    });
    check_pos(p, "control.interval", ctl.interval)?;
    check_pos(p, "control.telemetry_interval", ctl.telemetry_interval)?;
    if !(ctl.telemetry_delay.is_finite() && ctl.telemetry_delay >= 0.0) {
        return Err(invalid(
            p,
            "control.telemetry_delay",
            "must be >= 0 seconds",
        ));
    }
    if ctl.forecast_horizon > limits::MAX_FORECAST_HORIZON {
        return Err(invalid(
            p,
            "control.forecast_horizon",
            format!(
                "{} steps is more than the simulator's limit of {}",
                ctl.forecast_horizon,
                limits::MAX_FORECAST_HORIZON
            ),
        ));
    }
    Ok(ctl)
}

/// `[autoscaling]`: bounds that hold the initial backends; the last backend
/// is the template of new replicas.
fn build_scaling(
    s: Option<&RawScaling>,
    backends: &[BackendModel],
    p: &Path,
) -> Result<Option<Scaling>, ScenarioError> {
    let Some(s) = s else {
        return Ok(None);
    };
    if s.min == 0 || s.min > s.max {
        return Err(invalid(
            p,
            "autoscaling",
            format!("need 1 <= min <= max, got min={} max={}", s.min, s.max),
        ));
    }
    let per = backends.last().map_or(1, |b| u64::from(b.concurrency));
    if s.max > limits::MAX_BACKENDS || u64::from(s.max) * per > limits::MAX_SERVERS {
        return Err(invalid(
            p,
            "autoscaling.max",
            format!(
                "{} replicas of {per} servers is more than the simulator's limit of {} backends or {} servers",
                s.max,
                limits::MAX_BACKENDS,
                limits::MAX_SERVERS
            ),
        ));
    }
    if !(s.boot_delay.is_finite() && s.boot_delay >= 0.0) {
        return Err(invalid(p, "autoscaling.boot_delay", "must be >= 0 seconds"));
    }
    let n = backends.len() as u32;
    if n < s.min || n > s.max {
        return Err(invalid(
            p,
            "autoscaling",
            format!(
                "the initial {n} backends are outside [min={}, max={}]",
                s.min, s.max
            ),
        ));
    }
    let mut template = backends
        .last()
        .cloned()
        .ok_or_else(|| invalid(p, "backends", "empty"))?;
    template.name = "scaled".into();
    Ok(Some(Scaling {
        min: s.min,
        max: s.max,
        boot_delay: s.boot_delay,
        template,
    }))
}

/// `[slo]` and `[output]`.
fn check_slo_and_output(raw: &RawScenario, p: &Path) -> Result<Slo, ScenarioError> {
    let slo = raw.slo.unwrap_or_default();
    check_pos(p, "slo.window", slo.window)?;
    if let Some(x) = slo.p99 {
        check_pos(p, "slo.p99", x)?;
    }
    if let Some(y) = slo.success
        && !(0.0..=1.0).contains(&y)
    {
        return Err(invalid(
            p,
            "slo.success",
            format!("must be in [0, 1], got {y}"),
        ));
    }
    if let Some(w) = raw.output.window {
        check_pos(p, "output.window", w)?;
    }
    Ok(slo)
}

/// `seeds = [...]`, or `replications = N` from `seed` (default 1).
fn build_seeds(raw: &RawScenario, p: &Path) -> Result<Vec<u64>, ScenarioError> {
    match (&raw.seeds, raw.replications) {
        (Some(s), None) if !s.is_empty() => Ok(s.clone()),
        (Some(_), Some(_)) => Err(invalid(
            p,
            "seeds",
            "give either `seeds = [...]` or `replications = N`, not both",
        )),
        (Some(_), None) => Err(invalid(p, "seeds", "must not be empty")),
        (None, Some(0)) => Err(invalid(p, "replications", "must be >= 1")),
        (None, n) => {
            let base = raw.seed.unwrap_or(1);
            Ok((0..n.unwrap_or(1) as u64).map(|i| base + i).collect())
        }
    }
}

/// `[policy]` or `[[policy]]`, each a registered name (default `static`).
fn build_policies(raw: &RawScenario, p: &Path) -> Result<Vec<PolicySpec>, ScenarioError> {
    let policies = match raw.policy.clone() {
        None => vec![PolicySpec::named("static")],
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) if v.is_empty() => {
            return Err(invalid(p, "policy", "must not be empty"));
        }
        Some(OneOrMany::Many(v)) => v,
    };
    for (i, spec) in policies.iter().enumerate() {
        if !crate::policy::policy_names().contains(&spec.name.as_str()) {
            return Err(ScenarioError::UnknownPolicy {
                path: p.to_path_buf(),
                name: format!("{} (policy[{i}])", spec.name),
                allowed: crate::policy::policy_names().join(", "),
            });
        }
    }
    Ok(policies)
}

/// `[forecaster]`: a registered name.
fn check_forecaster(f: Option<&ForecasterSpec>, p: &Path) -> Result<(), ScenarioError> {
    if let Some(f) = f
        && !crate::policy::forecaster_names().contains(&f.name.as_str())
    {
        return Err(invalid(
            p,
            "forecaster.name",
            format!(
                "unknown forecaster {:?}; allowed: {}",
                f.name,
                crate::policy::forecaster_names().join(", ")
            ),
        ));
    }
    Ok(())
}

/// `forecaster.events` read and placed on the virtual time line: an event
/// at trace time `T` is at virtual `(T − workload.start) / compression`; the
/// ramp and aftermath around each event (one and two hours of trace time
/// by default) shrink the same way.
#[allow(clippy::type_complexity)]
fn virtual_calendar(
    f: &ForecasterSpec,
    workload: &ArrivalSpec,
    base_dir: &Path,
    p: &Path,
) -> Result<
    Option<(
        std::sync::Arc<aya_forecaster::events::Calendar>,
        aya_forecaster::events::EventConfig,
    )>,
    ScenarioError,
> {
    use aya_forecaster::events::{Calendar, EventConfig};
    let Some(path) = &f.events else {
        return Ok(None);
    };
    if f.name != "online" {
        return Err(invalid(
            p,
            "forecaster.events",
            format!(
                "only the `online` forecaster uses a calendar (this one is {:?})",
                f.name
            ),
        ));
    }
    let ArrivalSpec::RateSeries {
        compression,
        start: Some(start),
        ..
    } = workload
    else {
        return Err(invalid(
            p,
            "forecaster.events",
            "needs a `rate_series` workload with a `start` (the calendar is in the trace's time)",
        ));
    };
    let start_ms = aya_forecaster::data::parse_timestamp(start)
        .map_err(|m| invalid(p, "workload.start", m.to_string()))?;
    let cal = Calendar::load(&crate::workload::resolve_path(path, base_dir))
        .map_err(|e| invalid(p, "forecaster.events", e.to_string()))?;
    let k = *compression;
    let to_virtual = |ms: i64| ((ms - start_ms) as f64 / k).round() as i64;
    let events = cal
        .events
        .into_iter()
        .map(|mut e| {
            e.start_ms = to_virtual(e.start_ms);
            e.end_ms = to_virtual(e.end_ms);
            e
        })
        .collect();
    let d = EventConfig::default();
    let placement = EventConfig {
        pre_ms: (d.pre_ms as f64 / k).round() as i64,
        post_ms: (d.post_ms as f64 / k).round() as i64,
    };
    Ok(Some((std::sync::Arc::new(Calendar { events }), placement)))
}

/// The demand before t = 0 that `forecaster.warm_start` asks for, averaged
/// per control interval (see [`crate::workload::rate_history`]).
fn warm_history(
    raw: &RawScenario,
    base_dir: &Path,
    interval: f64,
    p: &Path,
) -> Result<Vec<(f64, f64)>, ScenarioError> {
    let Some(secs) = raw.forecaster.as_ref().and_then(|f| f.warm_start) else {
        return Ok(Vec::new());
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= limits::MAX_WARM_START_S) {
        return Err(invalid(
            p,
            "forecaster.warm_start",
            format!(
                "must be a number of seconds in (0, {}], got {secs}",
                limits::MAX_WARM_START_S
            ),
        ));
    }
    crate::workload::rate_history(&raw.workload, base_dir, secs, interval)
        .map_err(|e| invalid(p, "forecaster.warm_start", e.to_string()))
}

/// Arrival rates a synthetic workload states outright, within [`limits::MAX_RATE`].
fn check_workload_size(w: &ArrivalSpec, p: &Path) -> Result<(), ScenarioError> {
    let too_fast = |field: &str, rate: f64| {
        invalid(
            p,
            field,
            format!(
                "{rate} requests per second is more than the simulator's limit of {:e}",
                limits::MAX_RATE
            ),
        )
    };
    match w {
        ArrivalSpec::Poisson { rate } | ArrivalSpec::Deterministic { rate }
            if *rate > limits::MAX_RATE =>
        {
            Err(too_fast("workload.rate", *rate))
        }
        ArrivalSpec::Mmpp { rates, .. } => match rates.iter().find(|r| **r > limits::MAX_RATE) {
            Some(r) => Err(too_fast("workload.rates", *r)),
            None => Ok(()),
        },
        ArrivalSpec::Sinusoid {
            mean, amplitude, ..
        } if mean * (1.0 + amplitude) > limits::MAX_RATE => {
            Err(too_fast("workload.mean", mean * (1.0 + amplitude)))
        }
        _ => Ok(()),
    }
}
