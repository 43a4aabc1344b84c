//! The resolved simulation model: what one replication runs. Built from a
//! scenario file ([`crate::scenario`]) or from the one-line textbook form.

use std::path::PathBuf;

use aya_policy::LbAlgorithm;
use serde::{Deserialize, Serialize};

use crate::dist::ServiceDist;
use crate::lb::LbParams;
use crate::workload::{ArrivalSpec, KeySpec};

/// Bounds on simulator sizes. A scenario past one is refused with an error
/// naming the field before the run allocates anything in proportion to it;
/// a run whose backlog outgrows [`limits::MAX_IN_FLIGHT`] stops with an error.
pub mod limits {
    /// Backends in all: the initial groups, or `autoscaling.max`.
    pub const MAX_BACKENDS: u32 = 10_000;
    /// Servers in all (backends × `concurrency`): FCFS slots or PS cores.
    pub const MAX_SERVERS: u64 = 1_000_000;
    /// Steps of the forecast the control loop asks for (`control.forecast_horizon`).
    pub const MAX_FORECAST_HORIZON: usize = 100_000;
    /// Arrival rate, requests per virtual second (synthetic workloads, and each
    /// row of a rate series after compression and multiplier).
    pub const MAX_RATE: f64 = 1e7;
    /// Longest forecaster warm start, in seconds of the series (one year).
    pub const MAX_WARM_START_S: f64 = 366.0 * 86_400.0;
    /// Requests in the system, or client deadlines pending, at once (about
    /// 100 MB of queues): past it the backends cannot keep up by orders of
    /// magnitude and the run stops instead of exhausting memory.
    pub const MAX_IN_FLIGHT: usize = 4_000_000;
}

/// A model parameter that cannot be used: which field, and what is wrong
/// with it and what is allowed. Displays as "`field` problem".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct ParamError {
    /// The field, e.g. `mean`, `rates[]` or `cost.base`.
    pub field: &'static str,
    /// What is wrong and what is allowed, e.g. "must be a finite number > 0, got -1".
    pub problem: String,
}

impl ParamError {
    /// `field` with `problem`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> ParamError {
        ParamError {
            field,
            problem: problem.into(),
        }
    }

    /// `field` must be a finite number > 0.
    pub fn check_positive(field: &'static str, v: f64) -> Result<(), ParamError> {
        if v.is_finite() && v > 0.0 {
            Ok(())
        } else {
            Err(ParamError::new(
                field,
                format!("must be a finite number > 0, got {v}"),
            ))
        }
    }
}

/// Scheduling discipline of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Discipline {
    /// First come first served with `concurrency` parallel servers and a FIFO queue.
    #[default]
    Fcfs,
    /// Processor sharing: all requests in the backend share `concurrency` cores equally.
    Ps,
}

/// One backend's capacity model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendModel {
    /// Unique name.
    pub name: String,
    /// Speed factor: a request of size `s` takes `s / speed` seconds of service.
    pub speed: f64,
    /// Parallel servers (FCFS) or cores (PS).
    pub concurrency: u32,
    /// Discipline.
    pub discipline: Discipline,
    /// Maximum number of waiting requests (beyond those in service); more are dropped.
    pub queue_limit: Option<u32>,
    /// Discard queued requests whose client deadline passed before service starts.
    pub drop_expired: bool,
}

/// How requests reach backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// A data-plane algorithm routes each request to a backend's own queue.
    Balancer(LbAlgorithm),
    /// One central FCFS queue feeding every backend (M/M/c when backends have c=1).
    Central,
}

/// A timed fault on one backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Backend index.
    pub backend: usize,
    /// What happens.
    pub kind: FaultKind,
    /// Start, virtual seconds.
    pub start: f64,
    /// Duration, seconds (`inf` = until the end).
    pub duration: f64,
}

/// Fault kinds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Speed multiplied by `factor` (0 < factor) while active.
    Slowdown {
        /// Multiplier.
        factor: f64,
    },
    /// Speed ramps linearly from 1× to `factor`× over the duration and stays there.
    Degrade {
        /// Final multiplier.
        factor: f64,
    },
    /// Every request started while active takes exactly `latency` seconds.
    Latency {
        /// Seconds.
        latency: f64,
    },
    /// The backend is down: in-flight requests fail, new ones fail until the
    /// data plane's health checks remove it.
    Failure,
}

/// Autoscaling bounds and the template for new replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Minimum replicas.
    pub min: u32,
    /// Maximum replicas.
    pub max: u32,
    /// Seconds from scale-up to ready.
    pub boot_delay: f64,
    /// Template for new replicas (the name gets a numeric suffix).
    pub template: BackendModel,
}

/// SLO used to count violation minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Window length, seconds (default 60).
    #[serde(default = "d_slo_window")]
    pub window: f64,
    /// A window violates the SLO when its p99 latency exceeds this (seconds).
    #[serde(default)]
    pub p99: Option<f64>,
    /// A window violates the SLO when its success rate is below this (0..1).
    #[serde(default)]
    pub success: Option<f64>,
}

fn d_slo_window() -> f64 {
    60.0
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            window: 60.0,
            p99: None,
            success: None,
        }
    }
}

/// Everything one replication needs.
#[derive(Debug, Clone)]
pub struct Model {
    /// Arrival process.
    pub arrivals: ArrivalSpec,
    /// Request size distribution (seconds of work at speed 1).
    pub service: ServiceDist,
    /// Request keys.
    pub keys: KeySpec,
    /// Directory against which workload paths are resolved.
    pub base_dir: PathBuf,
    /// Stop generating arrivals after this virtual time.
    pub duration: Option<f64>,
    /// Stop generating arrivals after this many requests.
    pub max_requests: Option<u64>,
    /// Requests arriving before this time are not scored.
    pub warmup: f64,
    /// The first `warmup_requests` requests are not scored.
    pub warmup_requests: u64,
    /// Initial backends.
    pub backends: Vec<BackendModel>,
    /// Dispatch.
    pub dispatch: Dispatch,
    /// Algorithm parameters.
    pub lb: LbParams,
    /// Client timeout, seconds.
    pub timeout: Option<f64>,
    /// Seconds for the data plane's health checks to notice a failure or recovery.
    pub health_check_delay: f64,
    /// Faults.
    pub faults: Vec<Fault>,
    /// Telemetry sampling interval, seconds.
    pub telemetry_interval: f64,
    /// Telemetry delivery delay, seconds.
    pub telemetry_delay: f64,
    /// Control interval, seconds (`None`: no control loop).
    pub control_interval: Option<f64>,
    /// Forecast horizon in forecaster steps.
    pub forecast_horizon: usize,
    /// Autoscaling (None: fixed replicas).
    pub scaling: Option<Scaling>,
    /// SLO.
    pub slo: Slo,
    /// Time-series window, seconds (`None`: no time series).
    pub series_window: Option<f64>,
    /// After arrivals stop, keep simulating at most this long to drain.
    pub drain_limit: f64,
}

impl Model {
    /// A textbook model: `servers` identical unbounded FCFS c=1 backends with
    /// mean service 1, Poisson arrivals at `rho × servers`, `requests` requests.
    pub fn textbook(
        servers: u32,
        rho: f64,
        service: ServiceDist,
        dispatch: Dispatch,
        requests: u64,
    ) -> Model {
        let backends = (0..servers)
            .map(|i| BackendModel {
                name: format!("b{i}"),
                speed: 1.0,
                concurrency: 1,
                discipline: Discipline::Fcfs,
                queue_limit: None,
                drop_expired: false,
            })
            .collect();
        Model {
            arrivals: ArrivalSpec::Poisson {
                rate: rho * servers as f64 / service.mean(),
            },
            service,
            keys: KeySpec::default(),
            base_dir: PathBuf::from("."),
            duration: None,
            max_requests: Some(requests),
            warmup: 0.0,
            warmup_requests: requests / 10,
            backends,
            dispatch,
            lb: LbParams::default(),
            timeout: None,
            health_check_delay: 0.0,
            faults: Vec::new(),
            telemetry_interval: 0.0,
            telemetry_delay: 0.0,
            control_interval: None,
            forecast_horizon: 0,
            scaling: None,
            slo: Slo::default(),
            series_window: None,
            drain_limit: f64::INFINITY,
        }
    }
}
