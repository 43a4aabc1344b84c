//! Policies constructible by name for `aya serve`.
//!
//! The controller is generic over [`aya_policy::Policy`]: every cluster runs a
//! `Box<dyn Policy + Send>` chosen by the name in its configuration. `configured`
//! is the controller's own baseline: it publishes the configured weight hints,
//! the configured algorithm and asks for the current number of backends
//! (clamped to min/max replicas). It is what a static Envoy configuration
//! would do: the reference a forecasting policy must beat, and a deterministic
//! choice for tests and for operators who set weights by hand.

use aya_policy::{
    AlgorithmChoice, BackendWeight, Decision, Explanation, LbAlgorithm, Policy, ScalingSignal,
    TickInput,
};
use std::collections::BTreeMap;

/// The controller's own policy: configured weight hints and algorithm.
pub const CONFIGURED: &str = "configured";

/// Check that `name` is a policy this build can construct: `configured` or
/// one of [`aya_policy::POLICIES`].
pub fn check_name(name: &str) -> Result<(), String> {
    let norm = name.trim().to_ascii_lowercase().replace('-', "_");
    if norm == CONFIGURED
        || aya_policy::POLICIES.iter().any(|(n, _)| *n == norm)
        || matches!(norm.as_str(), "rr" | "ewma")
    {
        Ok(())
    } else {
        let mut allowed = vec![CONFIGURED];
        allowed.extend(aya_policy::POLICIES.iter().map(|(n, _)| *n));
        Err(format!(
            "unknown policy {name:?}; allowed: {}",
            allowed.join(", ")
        ))
    }
}

/// What a policy needs from a cluster's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyContext {
    /// Weight hint per backend name (used by `configured`).
    pub weight_hints: BTreeMap<String, u32>,
    /// Configured algorithm (used by `configured`).
    pub algorithm: LbAlgorithm,
    /// Parameters of an `aya_policy` policy (JSON object).
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Build the policy called `name`: `configured` here, every other name
/// through [`aya_policy::by_name`] (seed 0: the engine's policies are deterministic).
pub fn build(name: &str, ctx: PolicyContext) -> Result<Box<dyn Policy + Send>, String> {
    check_name(name)?;
    if name.trim().eq_ignore_ascii_case(CONFIGURED) {
        return Ok(Box::new(ConfiguredPolicy { ctx }));
    }
    aya_policy::by_name(name, &ctx.params, 0).map_err(|e| e.to_string())
}

/// Configured weights and algorithm; replicas follow the backend count.
#[derive(Debug, Clone)]
pub struct ConfiguredPolicy {
    ctx: PolicyContext,
}

impl Policy for ConfiguredPolicy {
    fn name(&self) -> &str {
        "configured"
    }

    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        let weights = input
            .backends
            .iter()
            .map(|b| BackendWeight {
                backend: b.backend.clone(),
                weight: self
                    .ctx
                    .weight_hints
                    .get(&b.backend)
                    .copied()
                    .unwrap_or(1)
                    .max(1),
            })
            .collect();
        let r = input.replicas;
        let desired = (input.backends.len() as u32).clamp(r.min.min(r.max), r.max.max(r.min));
        Decision {
            at: input.now,
            weights,
            ejected: Vec::new(),
            scaling: ScalingSignal {
                desired_replicas: desired,
                current_replicas: r.current,
                rule: "configured_backend_count".into(),
            },
            algorithm: AlgorithmChoice {
                algorithm: self.ctx.algorithm,
                rule: "configured".into(),
            },
            explanation: Explanation {
                inputs: vec![
                    format!("demand_rps={:.3}", input.demand_rps),
                    format!("backends={}", input.backends.len()),
                ],
                forecast: input
                    .forecast
                    .and_then(|f| f.mean.first().map(|m| format!("next_step_mean={m:.3}"))),
                rules: vec!["configured".into()],
            },
        }
    }
}
