//! Scenario files (TOML): workload, backends, faults, data plane, control
//! policy, seeds and SLO, validated into a [`Model`] with errors that say
//! what is wrong, where (file, line or field) and what is allowed.
//!
//! The format is documented in `/work/notes/sim.md` (section "Scenario
//! format") and by the examples in `scenarios/examples/`.

use std::path::{Path, PathBuf};

use aya_policy::LbAlgorithm;
use serde::{Deserialize, Serialize};

use crate::dist::ServiceDist;
use crate::lb::LbParams;
use crate::model::{BackendModel, Discipline, Dispatch, Fault, FaultKind, Model, Scaling, Slo};
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
        raw.workload
            .validate()
            .map_err(|m| invalid(p, "workload", m))?;
        let service = raw
            .service
            .clone()
            .unwrap_or(ServiceDist::Exponential { mean: 0.01 });
        service.validate().map_err(|m| invalid(p, "service", m))?;
        if raw.service.is_none()
            && !matches!(raw.workload, ArrivalSpec::Trace { cost: Some(_), .. })
        {
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

        if raw.backends.is_empty() {
            return Err(invalid(
                p,
                "backends",
                "at least one `[[backends]]` group is required",
            ));
        }
        let mut backends = Vec::new();
        for (gi, g) in raw.backends.iter().enumerate() {
            let f = |x: &str| format!("backends[{gi}].{x}");
            if g.count == 0 {
                return Err(invalid(p, f("count"), "must be >= 1"));
            }
            check_pos(p, &f("speed"), g.speed)?;
            if g.concurrency == 0 {
                return Err(invalid(p, f("concurrency"), "must be >= 1"));
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
        {
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
        }

        let dp = RawDataPlane::from_table(raw.data_plane.clone().unwrap_or_default(), p)?;
        dp.params
            .validate()
            .map_err(|m| invalid(p, "data_plane", m))?;
        if !(dp.health_check_delay.is_finite() && dp.health_check_delay >= 0.0) {
            return Err(invalid(
                p,
                "data_plane.health_check_delay",
                "must be >= 0 seconds",
            ));
        }
        let (dispatch, algorithm) = if dp.algorithm.trim() == "central" {
            (Dispatch::Central, None)
        } else {
            let a: LbAlgorithm =
                dp.algorithm
                    .parse()
                    .map_err(|e: aya_policy::UnknownAlgorithm| {
                        invalid(p, "data_plane.algorithm", format!("{e}, central"))
                    })?;
            (Dispatch::Balancer(a), Some(a))
        };

        let mut faults = Vec::new();
        for (i, f) in raw.faults.iter().enumerate() {
            let fld = |x: &str| format!("faults[{i}].{x}");
            let idx = match &f.backend {
                toml::Value::String(s) => {
                    backends.iter().position(|b| &b.name == s).ok_or_else(|| {
                        invalid(
                            p,
                            fld("backend"),
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
                    })?
                }
                toml::Value::Integer(n) if *n >= 0 && (*n as usize) < backends.len() => *n as usize,
                v => {
                    return Err(invalid(
                        p,
                        fld("backend"),
                        format!(
                            "{v} is not a backend name or an index in 0..{}",
                            backends.len()
                        ),
                    ));
                }
            };
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
                let v = v.ok_or_else(|| {
                    invalid(p, fld(name), format!("required for kind = {:?}", f.kind))
                })?;
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
            faults.push(Fault {
                backend: idx,
                kind,
                start: f.start,
                duration,
            });
        }

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

        let scaling = match &raw.autoscaling {
            Some(s) => {
                if s.min == 0 || s.min > s.max {
                    return Err(invalid(
                        p,
                        "autoscaling",
                        format!("need 1 <= min <= max, got min={} max={}", s.min, s.max),
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
                Some(Scaling {
                    min: s.min,
                    max: s.max,
                    boot_delay: s.boot_delay,
                    template,
                })
            }
            None => None,
        };

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

        let seeds = match (&raw.seeds, raw.replications) {
            (Some(s), None) if !s.is_empty() => s.clone(),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    p,
                    "seeds",
                    "give either `seeds = [...]` or `replications = N`, not both",
                ));
            }
            (Some(_), None) => return Err(invalid(p, "seeds", "must not be empty")),
            (None, Some(0)) => return Err(invalid(p, "replications", "must be >= 1")),
            (None, n) => {
                let base = raw.seed.unwrap_or(1);
                (0..n.unwrap_or(1) as u64).map(|i| base + i).collect()
            }
        };

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
        if let Some(f) = &raw.forecaster
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

        let base_dir = p
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
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
            forecaster: raw.forecaster,
            algorithm,
        })
    }
}
