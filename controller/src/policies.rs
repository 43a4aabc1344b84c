//! Policies for `aya serve`: the registry of `aya-policy`
//! ([`aya_policy::POLICIES`]) with what only the service knows.
//!
//! The controller is generic over [`aya_policy::Policy`]: every cluster runs a
//! `Box<dyn Policy + Send>` chosen by the name in its configuration and
//! parameterised by its `policy_params` table, both checked by the registry
//! when the configuration is loaded or changed ([`check`]). `static` (alias
//! `configured`) publishes the backends' weight hints and the cluster's
//! `algorithm` and holds the current number of backends: what a static Envoy
//! configuration would do, the reference a forecasting policy must beat, and
//! a deterministic choice for tests and for operators who set weights by hand.

use aya_policy::{
    BuildContext, ControlLoop, DemandForecaster, LbAlgorithm, Policy, PolicyError, PolicySpec,
};
use std::collections::BTreeMap;

/// The controller's own policy name, an alias of the registry's `static`.
pub const CONFIGURED: &str = "configured";

/// Check that `name` is a policy of the registry (or one of its aliases).
pub fn check_name(name: &str) -> Result<(), PolicyError> {
    aya_policy::lookup(name).map(|_| ())
}

/// Check that `params` are valid parameters of the policy `name`: unknown
/// keys, wrong types and out-of-range values are errors naming the key and
/// the policy. Call it where a configuration is loaded or changed, so that a
/// bad parameter is refused there instead of failing at every tick.
pub fn check(
    name: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), PolicyError> {
    spec(name, params).map(|_| ())
}

/// The typed, checked policy of a configuration: the policy called `name`
/// with its `policy_params` table parsed into the registry's
/// [`aya_policy::PolicyParams`] and range-checked by [`PolicySpec::new`],
/// the one place every parameter is validated. The table is only the
/// written form (TOML in `aya.toml`, JSON over the admin API and in the
/// store); everything past this call uses the typed spec.
pub fn spec(
    name: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<PolicySpec, PolicyError> {
    PolicySpec::parse(name, serde_json::Value::Object(params.clone()))
}

/// What a policy needs from a cluster's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyContext {
    /// Weight hint per backend name (published by `static`).
    pub weight_hints: BTreeMap<String, u32>,
    /// Configured algorithm (published by `static` unless its params name one).
    pub algorithm: LbAlgorithm,
}

/// The registry's build context of a cluster (seed 0: the service has no
/// scorer, and the registry's policies draw no random numbers).
fn build_context(ctx: PolicyContext) -> BuildContext {
    BuildContext {
        seed: 0,
        algorithm: Some(ctx.algorithm),
        weight_hints: ctx.weight_hints,
        scorer: None,
    }
}

/// Build the policy of `spec` for a cluster.
pub fn build(spec: &PolicySpec, ctx: PolicyContext) -> Box<dyn Policy + Send> {
    spec.build(&build_context(ctx))
}

/// A cluster's control loop: the policy of `spec` with `ctx`, forecasting
/// `horizon` steps ahead with `forecaster` (if any), built by
/// [`ControlLoop::for_policy`] as the simulator builds its loops.
pub fn control_loop<F: DemandForecaster>(
    spec: &PolicySpec,
    ctx: PolicyContext,
    forecaster: Option<F>,
    horizon: usize,
) -> ControlLoop<Box<dyn Policy + Send>, F> {
    ControlLoop::for_policy(spec, &build_context(ctx), forecaster, horizon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_policy::{BackendObservation, ReplicaState, TickInput};

    fn params(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match json {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn configured_publishes_hints_and_the_cluster_algorithm() {
        let ctx = PolicyContext {
            weight_hints: BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 3)]),
            algorithm: LbAlgorithm::WeightedRoundRobin,
        };
        let spec = spec(CONFIGURED, &serde_json::Map::new()).unwrap();
        let mut p = build(&spec, ctx);
        let backends = [
            BackendObservation::unobserved("a", 0.0),
            BackendObservation::unobserved("b", 0.0),
            BackendObservation::unobserved("c", 0.0),
        ];
        let d = p.decide(&TickInput {
            now: 0.0,
            interval: 5.0,
            backends: &backends,
            demand_rps: 0.0,
            forecast: None,
            replicas: ReplicaState::new(3, 0).with_bounds(1, 5, 30.0),
        });
        let w: Vec<u32> = d.weights.iter().map(|w| w.weight).collect();
        assert_eq!(w, [2, 3, 1]);
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::WeightedRoundRobin);
        assert_eq!(d.scaling.desired_replicas, 3);
    }

    #[test]
    fn unknown_params_are_refused_with_key_and_policy() {
        let err = check(
            "aya",
            &params(serde_json::json!({"target_utilisation": 0.5})),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("target_utilisation") && err.contains("aya"),
            "{err}"
        );
        assert!(check("hpa", &params(serde_json::json!({"tolerance": 0.2}))).is_ok());
        assert!(check_name("rr").is_ok() && check_name("wrr").is_ok());
        let err = check_name("magic").unwrap_err().to_string();
        assert!(err.contains("magic") && err.contains("static"), "{err}");
    }
}
