//! The vocabulary shared by every driver of the decision engine: the controller
//! service, the simulator and the tests.
//!
//! Everything here is plain data. Time is a value ([`Time`], seconds since an
//! epoch the driver chooses: unix time in the service, virtual time in the
//! simulator). Nothing in this crate reads a clock or an entropy source.

use serde::{Deserialize, Serialize};

/// Seconds since an epoch chosen by the driver (unix seconds in `aya serve`,
/// virtual seconds in `aya sim`). A plain `f64` so that both drivers perform
/// exactly the same arithmetic on it.
pub type Time = f64;

/// What a data plane (Envoy, gRPC, Linkerd, the simulator) uses to pick a
/// backend for each request. Names follow Envoy's `lb_policy` where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum LbAlgorithm {
    /// Plain round robin, ignoring weights.
    RoundRobin,
    /// Weighted round robin (Envoy's EDF scheduler over endpoint weights).
    WeightedRoundRobin,
    /// Uniform random choice.
    Random,
    /// Random choice in proportion to weight.
    WeightedRandom,
    /// Envoy LEAST_REQUEST: power of two choices on active requests, with
    /// `active_request_bias` when weights differ.
    LeastRequest,
    /// Full join-shortest-queue over every backend (a lower bound, not a real data plane).
    JoinShortestQueue,
    /// Linkerd / Finagle peak-EWMA latency × (in-flight + 1), power of two choices.
    PeakEwma,
    /// Envoy RING_HASH (Ketama) on a request key.
    RingHash,
    /// Envoy MAGLEV on a request key.
    Maglev,
    /// Hash of the client's source address modulo the backend count.
    SourceIpHash,
}

impl LbAlgorithm {
    /// Every algorithm, in a stable order (for help text and error messages).
    pub const ALL: [LbAlgorithm; 10] = [
        LbAlgorithm::RoundRobin,
        LbAlgorithm::WeightedRoundRobin,
        LbAlgorithm::Random,
        LbAlgorithm::WeightedRandom,
        LbAlgorithm::LeastRequest,
        LbAlgorithm::JoinShortestQueue,
        LbAlgorithm::PeakEwma,
        LbAlgorithm::RingHash,
        LbAlgorithm::Maglev,
        LbAlgorithm::SourceIpHash,
    ];

    /// The snake_case name used in configuration, scenario files and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            LbAlgorithm::RoundRobin => "round_robin",
            LbAlgorithm::WeightedRoundRobin => "weighted_round_robin",
            LbAlgorithm::Random => "random",
            LbAlgorithm::WeightedRandom => "weighted_random",
            LbAlgorithm::LeastRequest => "least_request",
            LbAlgorithm::JoinShortestQueue => "join_shortest_queue",
            LbAlgorithm::PeakEwma => "peak_ewma",
            LbAlgorithm::RingHash => "ring_hash",
            LbAlgorithm::Maglev => "maglev",
            LbAlgorithm::SourceIpHash => "source_ip_hash",
        }
    }
}

impl std::fmt::Display for LbAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an algorithm name that is not one of [`LbAlgorithm::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown load-balancing algorithm {given:?}; allowed: {allowed}")]
pub struct UnknownAlgorithm {
    /// What was given.
    pub given: String,
    /// The allowed names, comma separated.
    pub allowed: String,
}

impl std::str::FromStr for LbAlgorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match norm.as_str() {
            "rr" => Some(LbAlgorithm::RoundRobin),
            "wrr" => Some(LbAlgorithm::WeightedRoundRobin),
            "p2c" | "least_req" => Some(LbAlgorithm::LeastRequest),
            "jsq" => Some(LbAlgorithm::JoinShortestQueue),
            "ewma" => Some(LbAlgorithm::PeakEwma),
            _ => None,
        };
        alias
            .or_else(|| LbAlgorithm::ALL.into_iter().find(|a| a.as_str() == norm))
            .ok_or_else(|| UnknownAlgorithm {
                given: s.to_string(),
                allowed: LbAlgorithm::ALL.map(|a| a.as_str()).join(", "),
            })
    }
}

/// What the control loop knows about one backend at a tick. Values are
/// aggregates over the last telemetry window, as a metrics pipeline would
/// deliver them (possibly late: see `observed_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendObservation {
    /// Backend name, unique within its cluster (e.g. `10.0.0.7:8080` or `web-3`).
    pub backend: String,
    /// Whether the backend is ready to serve (health checks pass and boot is over).
    pub healthy: bool,
    /// Requests completed per second over the window.
    pub request_rate: f64,
    /// Requests in flight at the end of the window (mean over the window if available).
    pub in_flight: f64,
    /// Latency percentiles over the window, in seconds. `NaN`-free: drivers
    /// put 0.0 when no request completed.
    pub latency_p50: f64,
    /// 90th percentile latency, seconds.
    pub latency_p90: f64,
    /// 99th percentile latency, seconds.
    pub latency_p99: f64,
    /// Fraction of requests that failed (0..=1).
    pub error_rate: f64,
    /// CPU utilisation (0..=1), when the backend reports it.
    pub cpu_utilization: Option<f64>,
    /// Memory utilisation (0..=1), when the backend reports it.
    pub memory_utilization: Option<f64>,
    /// End of the window these figures describe (telemetry can lag `now`).
    pub observed_at: Time,
}

impl BackendObservation {
    /// A backend with no telemetry yet at `now`: healthy, idle, every figure
    /// zero and no utilisation reported. Drivers start from this and fill in
    /// what their metrics provide.
    pub fn unobserved(backend: impl Into<String>, now: Time) -> Self {
        BackendObservation {
            backend: backend.into(),
            healthy: true,
            request_rate: 0.0,
            in_flight: 0.0,
            latency_p50: 0.0,
            latency_p90: 0.0,
            latency_p99: 0.0,
            error_rate: 0.0,
            cpu_utilization: None,
            memory_utilization: None,
            observed_at: now,
        }
    }
}

/// A service-level demand forecast (requests per second) on a regular grid
/// starting one `step` after `issued_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DemandForecast {
    /// When the forecast was made.
    pub issued_at: Time,
    /// Grid step in seconds.
    pub step: f64,
    /// Point forecast per step.
    pub mean: Vec<f64>,
    /// Lower bound of the prediction interval per step.
    pub lower: Vec<f64>,
    /// Upper bound of the prediction interval per step.
    pub upper: Vec<f64>,
    /// Coverage of the interval, e.g. 0.95.
    pub level: f64,
}

impl DemandForecast {
    /// Clear the buffers, keeping their allocations.
    pub fn clear(&mut self) {
        self.mean.clear();
        self.lower.clear();
        self.upper.clear();
    }
}

/// The narrow trait through which the engine consumes forecasts. The
/// forecaster crate implements it; tests implement it with constants.
pub trait DemandForecaster {
    /// Record the demand (requests per second) observed over the window ending at `t`.
    fn observe(&mut self, t: Time, demand_rps: f64);

    /// Forecast the next `horizon` steps after `now` into `out` (buffers are
    /// cleared first). Returns `false` when no forecast can be made yet (too
    /// little history); the engine then falls back to reactive rules.
    fn forecast_into(&mut self, now: Time, horizon: usize, out: &mut DemandForecast) -> bool;

    /// Grid step of the forecasts in seconds.
    fn step(&self) -> f64;
}

/// Replica state of the service, as the orchestrator reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Replicas that exist (ready or booting).
    pub current: u32,
    /// Replicas ready to serve.
    pub ready: u32,
    /// Lower bound the engine must respect.
    pub min: u32,
    /// Upper bound the engine must respect.
    pub max: u32,
    /// Seconds from "scale up" to "ready to serve".
    pub boot_time: f64,
}

impl ReplicaState {
    /// `ready` replicas serving and `starting` more that exist but do not
    /// serve yet: booting replicas in the simulator, configured backends
    /// that are not healthy in the service. `current` is their sum. Until
    /// [`with_bounds`](ReplicaState::with_bounds) the fleet is fixed:
    /// `min = max = current`, no boot time (the simulator without
    /// autoscaling).
    pub fn new(ready: u32, starting: u32) -> Self {
        let current = ready.saturating_add(starting);
        ReplicaState {
            current,
            ready,
            min: current,
            max: current,
            boot_time: 0.0,
        }
    }

    /// The orchestrator's bounds and the seconds a new replica takes to boot.
    pub fn with_bounds(self, min: u32, max: u32, boot_time: f64) -> Self {
        ReplicaState {
            min,
            max,
            boot_time,
            ..self
        }
    }
}

/// Everything the engine gets at one control tick.
#[derive(Debug, Clone, Copy)]
pub struct TickInput<'a> {
    /// Current time (virtual in the simulator).
    pub now: Time,
    /// Seconds between ticks.
    pub interval: f64,
    /// Per-backend observations.
    pub backends: &'a [BackendObservation],
    /// Service-level demand observed over the last window, requests per second.
    /// `NaN` when it is unknown — no telemetry has arrived yet, or none is
    /// fresh — which is not the same as no demand: a driver must not report
    /// missing telemetry as 0 (the trend rule would read the first real
    /// measurement as a rise, the forecaster would learn a jump from zero,
    /// and scale-in would see an idle pool). The engine holds the replica
    /// count on an unknown demand and records nothing for it.
    pub demand_rps: f64,
    /// Forecast of demand, when one is available.
    pub forecast: Option<&'a DemandForecast>,
    /// Replica state.
    pub replicas: ReplicaState,
}

/// Weight of one backend as published to data planes. Always ≥ 1: Envoy and
/// gRPC NACK a zero weight; a backend is drained by removing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendWeight {
    /// Backend name.
    pub backend: String,
    /// Weight, ≥ 1.
    pub weight: u32,
}

/// Desired replica count and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ScalingSignal {
    /// Replicas the service should have.
    pub desired_replicas: u32,
    /// Replicas it had when the decision was made.
    pub current_replicas: u32,
    /// The rule that fired, e.g. `scale_up_forecast` or `hold_cooldown`.
    pub rule: String,
}

/// Algorithm choice and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmChoice {
    /// The algorithm data planes should use.
    pub algorithm: LbAlgorithm,
    /// The rule that fired, e.g. `unequal_capacity -> weighted_round_robin`.
    pub rule: String,
}

/// What went in, what was forecast and which rules fired, for logs and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Explanation {
    /// Short human-readable facts about the inputs (e.g. `demand_rps=950.0`).
    pub inputs: Vec<String>,
    /// Summary of the forecast that was used, if any.
    pub forecast: Option<String>,
    /// Rules that fired, in order.
    pub rules: Vec<String>,
    /// When the serving pool runs out of headroom by the demand forecast
    /// (Aya's engine with a capacity model and a forecast; `None` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom: Option<Headroom>,
}

/// A predictive alert's inputs: when the demand forecast crosses what the
/// healthy backends can serve, and how soon a scale-up must start to have
/// replicas ready by then. Times are seconds from the decision; `None`
/// means "not within the forecast's horizon".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Headroom {
    /// What the healthy, serving backends can carry at full utilisation,
    /// requests per second (sum of their capacity models).
    pub capacity_rps: f64,
    /// The forecast's horizon, seconds: beyond it nothing is claimed.
    pub horizon_seconds: f64,
    /// First time the forecast's upper bound exceeds the capacity (the
    /// early end of the interval; 0 when demand already does).
    pub exhausted_upper_in: Option<f64>,
    /// First time the forecast's mean exceeds it (the central estimate).
    pub exhausted_mean_in: Option<f64>,
    /// First time the forecast's lower bound exceeds it (the late end).
    pub exhausted_lower_in: Option<f64>,
    /// `exhausted_upper_in − boot_time`: the time left to order replicas
    /// that are ready before the upper bound runs out of capacity
    /// (negative: already too late for a full boot).
    pub scale_up_deadline_in: Option<f64>,
}

/// One tick's decisions: what the controller publishes and the simulator applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Time of the tick that made it.
    pub at: Time,
    /// Weights of the backends that should receive traffic (ejected ones are absent).
    pub weights: Vec<BackendWeight>,
    /// Backends ejected as outliers at this tick.
    pub ejected: Vec<String>,
    /// Scaling signal.
    pub scaling: ScalingSignal,
    /// Data-plane algorithm.
    pub algorithm: AlgorithmChoice,
    /// The data plane's own passive outlier detection, when the policy
    /// manages it (`None`: the data plane keeps whatever it was configured
    /// with; Aya's engine always says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// The most requests the data plane may have in flight to the cluster
    /// at once (Envoy's circuit-breaker `max_requests`); the excess is
    /// refused at once (a fast 503) instead of queueing on backends that
    /// cannot serve it before the client gives up. `None`: the data plane
    /// keeps its own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// Why.
    pub explanation: Explanation,
}

/// Passive outlier detection in the data plane, as Envoy's cluster
/// `outlier_detection` (consecutive-5xx ejection).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Errors in a row that eject a host; 0 = detection off.
    pub consecutive_5xx: u32,
    /// The n-th ejection of a host lasts n times this (seconds).
    pub base_ejection_time: f64,
    /// At most this share of the hosts is ejected at once (percent).
    pub max_ejection_percent: f64,
}

impl OutlierDetection {
    /// Detection off.
    pub const OFF: OutlierDetection = OutlierDetection {
        consecutive_5xx: 0,
        base_ejection_time: 30.0,
        max_ejection_percent: 0.0,
    };

    /// Whether hosts can be ejected.
    pub fn enabled(&self) -> bool {
        self.consecutive_5xx > 0
    }
}

impl Decision {
    /// True when what data planes would see differs (weights, ejections,
    /// replicas, algorithm); explanations and time are ignored. The
    /// controller publishes a new version only when this is true.
    pub fn differs_from(&self, other: &Decision) -> bool {
        self.weights != other.weights
            || self.ejected != other.ejected
            || self.scaling.desired_replicas != other.scaling.desired_replicas
            || self.algorithm.algorithm != other.algorithm.algorithm
            || self.outlier_detection != other.outlier_detection
            || self.max_requests != other.max_requests
    }
}

/// A decision policy: Aya's engine or one of the baselines. Implementations
/// are deterministic given their construction seed and the inputs.
pub trait Policy {
    /// Stable name used in league tables (e.g. `aya`, `static`, `a58`, `hpa`).
    fn name(&self) -> &str;

    /// Make this tick's decision.
    fn decide(&mut self, input: &TickInput<'_>) -> Decision;
}

impl<T: Policy + ?Sized> Policy for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        (**self).decide(input)
    }
}

/// A sendable boxed policy is a boxed policy (drivers that keep policies on
/// one thread, like the simulator, hold `Box<dyn Policy>`).
impl From<Box<dyn Policy + Send>> for Box<dyn Policy> {
    fn from(p: Box<dyn Policy + Send>) -> Self {
        p
    }
}

impl<T: DemandForecaster + ?Sized> DemandForecaster for Box<T> {
    fn observe(&mut self, t: Time, demand_rps: f64) {
        (**self).observe(t, demand_rps)
    }
    fn forecast_into(&mut self, now: Time, horizon: usize, out: &mut DemandForecast) -> bool {
        (**self).forecast_into(now, horizon, out)
    }
    fn step(&self) -> f64 {
        (**self).step()
    }
}
