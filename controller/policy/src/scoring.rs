//! Scoring candidate data-plane algorithms before switching (issue #5,
//! item 5, optional part).
//!
//! The engine's algorithm rules (see [`crate::aya`]) are heuristics: "weighted
//! least request when capacities differ and service times vary", and so on.
//! Before such a rule switches every data plane to a different algorithm, a
//! driver that can predict the outcome may be asked to: the engine describes
//! the pool it would publish ([`PoolSnapshot`]: each backend's estimated full
//! capacity and weight, the forecast load, whether service times vary) and an
//! [`AlgorithmScorer`] returns the predicted p99 latency of each candidate.
//! The switch goes ahead only when the candidate is predicted to be better by
//! a margin (`AyaConfig::score_min_gain`).
//!
//! This crate cannot run the simulator (it sits below it in the dependency
//! graph and stays free of it), so the scorer is injected:
//! `aya_sim::policy::SimScorer` simulates the snapshot for a short virtual
//! horizon with a fixed seed. Scoring is opt-in (`score_algorithms`), and a
//! driver that has no scorer gets the rule-based choice, with a note in the
//! explanation.

use crate::types::LbAlgorithm;

/// One backend as the scorer should model it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolBackend {
    /// Backend name.
    pub backend: String,
    /// Estimated requests per second at 100 % utilisation.
    pub capacity_rps: f64,
    /// Weight the engine publishes for it this tick (≥ 1).
    pub weight: u32,
}

/// The pool the engine is about to publish, as the scorer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSnapshot {
    /// Backends that receive traffic (ejected ones are absent).
    pub backends: Vec<PoolBackend>,
    /// Load to score at (the forecast for the next interval), requests/s.
    pub load_rps: f64,
    /// Seconds of traffic to score over.
    pub horizon: f64,
    /// Service times vary (p99/p50 above `variable_service_ratio`): model
    /// them as exponential; otherwise as constant.
    pub variable_service: bool,
}

/// Predicts how an algorithm would do on a pool.
///
/// Implementations must be deterministic (same snapshot, same answer): the
/// engine's decisions are reproducible and the parity test relies on it.
pub trait AlgorithmScorer: Send + Sync {
    /// Predicted p99 latency in seconds of `algorithm` on `pool`; `None`
    /// when the scorer cannot tell (the rule-based choice then stands).
    fn score(&self, algorithm: LbAlgorithm, pool: &PoolSnapshot) -> Option<f64>;
}
