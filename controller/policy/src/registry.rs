//! The one policy registry: every policy the controller service, the
//! simulator, the demo and the tests can run, with its aliases and its typed
//! parameters.
//!
//! A driver turns a name and a table of parameters (a TOML table of a
//! scenario file or of the service configuration, a JSON object of the admin
//! API) into a checked [`PolicySpec`] with [`PolicySpec::parse`]: the name is
//! looked up in [`POLICIES`] (aliases included), the table is deserialised
//! into that policy's parameter struct ([`PolicyParams`]; every struct is
//! `deny_unknown_fields`, so a misspelt key is an error naming the key and the
//! policy) and the values are range-checked, all in this one place. Drivers
//! call it when they load their configuration, so a bad parameter stops the
//! load instead of failing later at a tick. [`PolicySpec::build`] then makes
//! the policy, with what only the driver knows ([`BuildContext`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use crate::aya::AyaPolicy;
use crate::baselines::{
    A58Config, A58Policy, HpaConfig, HpaPolicy, StaticOptions, StaticPolicy, StaticWeights,
};
use crate::config::{AyaConfig, ConfigError, ValidAyaConfig};
use crate::scoring::AlgorithmScorer;
use crate::types::{LbAlgorithm, Policy};

/// One policy of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Canonical name (league tables, results, `Policy::name`).
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// One line: what it is and its parameters.
    pub summary: &'static str,
}

/// Every policy, in help order. Names are matched case-insensitively, with
/// `-` read as `_`.
pub const POLICIES: [PolicyInfo; 7] = [
    PolicyInfo {
        name: "aya",
        aliases: &[],
        summary: "Aya: predictive weights, ejection, forecast-driven scaling, algorithm selection (params: AyaConfig)",
    },
    PolicyInfo {
        name: "static",
        aliases: &["configured"],
        summary: "a static data-plane configuration: weight hints (1 by default) on every backend, the driver's configured algorithm, fixed replicas (params: algorithm, replicas)",
    },
    PolicyInfo {
        name: "round_robin",
        aliases: &["rr"],
        summary: "equal weights on the healthy backends, round robin",
    },
    PolicyInfo {
        name: "a58",
        aliases: &["wrr"],
        summary: "gRPC A58 weighted round robin weights from load reports (params: blackout_period, weight_expiration_period, error_utilization_penalty)",
    },
    PolicyInfo {
        name: "peak_ewma",
        aliases: &["ewma"],
        summary: "equal weights on the healthy backends, Linkerd peak-EWMA P2C in the data plane",
    },
    PolicyInfo {
        name: "p2c",
        aliases: &["least_request"],
        summary: "equal weights on the healthy backends, Envoy least request (power of two choices)",
    },
    PolicyInfo {
        name: "hpa",
        aliases: &[],
        summary: "Kubernetes HPA reactive autoscaling, 10 % tolerance, 300 s scale-down window (params: target_utilization, tolerance, scale_down_stabilization, algorithm)",
    },
];

/// The canonical names of [`POLICIES`], in order.
pub fn policy_names() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|p| p.name)
}

/// The registry entry called `name` (or one of its aliases).
pub fn lookup(name: &str) -> Result<&'static PolicyInfo, PolicyError> {
    let norm = name.trim().to_ascii_lowercase().replace('-', "_");
    POLICIES
        .iter()
        .find(|p| p.name == norm || p.aliases.contains(&norm.as_str()))
        .ok_or_else(|| PolicyError::UnknownPolicy {
            given: name.to_string(),
            allowed: policy_names().collect::<Vec<_>>().join(", "),
        })
}

/// Why a policy could not be specified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// The name is not one of [`POLICIES`].
    #[error("unknown policy {given:?}; allowed: {allowed}")]
    UnknownPolicy {
        /// What was given.
        given: String,
        /// Allowed names, comma separated.
        allowed: String,
    },
    /// Parameters did not parse (unknown key, wrong type).
    #[error("parameters of policy `{policy}`: {message}")]
    Params {
        /// Policy name.
        policy: &'static str,
        /// The parser's message (names the key).
        message: String,
    },
    /// A parameter is out of range.
    #[error("parameters of policy `{policy}`: {source}")]
    Invalid {
        /// Policy name.
        policy: &'static str,
        /// The failed check.
        source: ConfigError,
    },
}

/// Parameters of the `static` policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticParams {
    /// Algorithm to publish (any name `LbAlgorithm` parses, aliases
    /// included). Default: the driver's configured algorithm (the scenario's
    /// `[data_plane] algorithm`, the cluster's `algorithm`), else
    /// `least_request`.
    #[serde(deserialize_with = "algorithm_by_name")]
    pub algorithm: Option<LbAlgorithm>,
    /// Replicas to ask for, ≥ 1 (clamped to the driver's bounds). Default:
    /// hold the current count.
    pub replicas: Option<u32>,
}

fn algorithm_by_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LbAlgorithm>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// A policy without parameters: any key is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// The typed parameters of every policy, one variant per registry entry.
/// Written as a table (TOML or JSON) whose keys are the fields of the
/// variant's struct; see [`PolicySpec::parse`].
// Built once per configuration load, never on a hot path: boxing Aya's
// parameters would only make them clumsier to write.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyParams {
    /// `aya`: every field of [`AyaConfig`].
    Aya(AyaConfig),
    /// `static`: [`StaticParams`].
    Static(StaticParams),
    /// `round_robin`: no parameters.
    RoundRobin,
    /// `a58`: [`A58Config`].
    A58(A58Config),
    /// `peak_ewma`: no parameters.
    PeakEwma,
    /// `p2c`: no parameters.
    P2c,
    /// `hpa`: [`HpaConfig`].
    Hpa(HpaConfig),
}

impl PolicyParams {
    /// The canonical name of the policy these parameters are for.
    pub fn policy(&self) -> &'static str {
        match self {
            PolicyParams::Aya(_) => "aya",
            PolicyParams::Static(_) => "static",
            PolicyParams::RoundRobin => "round_robin",
            PolicyParams::A58(_) => "a58",
            PolicyParams::PeakEwma => "peak_ewma",
            PolicyParams::P2c => "p2c",
            PolicyParams::Hpa(_) => "hpa",
        }
    }

    /// Deserialise `params` (a table: `toml::Value`, `serde_json::Value`, ...)
    /// as the parameters of the policy called `name` (not range-checked yet:
    /// see [`PolicySpec::new`]).
    pub fn deserialize<'de, D: Deserializer<'de>>(
        name: &str,
        params: D,
    ) -> Result<PolicyParams, PolicyError> {
        let info = lookup(name)?;
        let policy = info.name;
        let err = |e: D::Error| PolicyError::Params {
            policy,
            message: e.to_string(),
        };
        Ok(match policy {
            "aya" => PolicyParams::Aya(AyaConfig::deserialize(params).map_err(err)?),
            "static" => PolicyParams::Static(StaticParams::deserialize(params).map_err(err)?),
            "a58" => PolicyParams::A58(A58Config::deserialize(params).map_err(err)?),
            "hpa" => PolicyParams::Hpa(HpaConfig::deserialize(params).map_err(err)?),
            other => {
                NoParams::deserialize(params).map_err(err)?;
                match other {
                    "round_robin" => PolicyParams::RoundRobin,
                    "peak_ewma" => PolicyParams::PeakEwma,
                    _ => PolicyParams::P2c,
                }
            }
        })
    }

    /// The defaults of the policy called `name`.
    pub fn defaults(name: &str) -> Result<PolicyParams, PolicyError> {
        Ok(match lookup(name)?.name {
            "aya" => PolicyParams::Aya(AyaConfig::default()),
            "static" => PolicyParams::Static(StaticParams::default()),
            "round_robin" => PolicyParams::RoundRobin,
            "a58" => PolicyParams::A58(A58Config::default()),
            "peak_ewma" => PolicyParams::PeakEwma,
            "p2c" => PolicyParams::P2c,
            _ => PolicyParams::Hpa(HpaConfig::default()),
        })
    }
}

/// Builds the scorer Aya's `score_algorithms` consults, from the policy's
/// seed (the simulator: `aya_sim::policy::SimScorer`).
pub type ScorerFactory = fn(u64) -> Arc<dyn AlgorithmScorer>;

/// What only the driver knows when it builds a policy.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Seed of the policy's own randomness: handed to the scorer factory
    /// (the registry's policies are otherwise deterministic and draw none).
    /// The simulator derives it from the replication seed; the service uses 0.
    pub seed: u64,
    /// The algorithm the driver's data plane is configured with (`static`'s default).
    pub algorithm: Option<LbAlgorithm>,
    /// Weight hint per backend name (`static` publishes them, 1 for the others).
    pub weight_hints: BTreeMap<String, u32>,
    /// Scorer for Aya's `score_algorithms` (None: the rules alone decide).
    pub scorer: Option<ScorerFactory>,
}

/// Checked parameters, in the form the constructors take.
#[allow(clippy::large_enum_variant)] // one per configured policy, as `PolicyParams`
#[derive(Debug, Clone, PartialEq)]
enum Checked {
    Aya(ValidAyaConfig),
    Static(StaticParams),
    /// Equal weights on the serving backends with this algorithm.
    Equal(LbAlgorithm),
    A58(A58Config),
    Hpa(HpaConfig),
}

/// A policy name with checked parameters: what a driver keeps after loading
/// its configuration, and builds a policy from at every (re)start.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    params: PolicyParams,
    checked: Checked,
}

impl PolicySpec {
    /// Range-check `params`: the one place every policy parameter is
    /// validated. The error names the policy, the field and the rule.
    pub fn new(params: PolicyParams) -> Result<PolicySpec, PolicyError> {
        let policy = params.policy();
        let invalid = |source| PolicyError::Invalid { policy, source };
        let checked = match &params {
            PolicyParams::Aya(cfg) => Checked::Aya(cfg.clone().validate().map_err(invalid)?),
            PolicyParams::Static(p) => {
                if p.replicas == Some(0) {
                    return Err(invalid(ConfigError::new("replicas", 0, "must be >= 1")));
                }
                Checked::Static(p.clone())
            }
            PolicyParams::RoundRobin => Checked::Equal(LbAlgorithm::RoundRobin),
            PolicyParams::A58(cfg) => Checked::A58(cfg.clone()),
            PolicyParams::PeakEwma => Checked::Equal(LbAlgorithm::PeakEwma),
            PolicyParams::P2c => Checked::Equal(LbAlgorithm::LeastRequest),
            PolicyParams::Hpa(cfg) => {
                cfg.validate().map_err(invalid)?;
                Checked::Hpa(cfg.clone())
            }
        };
        Ok(PolicySpec { params, checked })
    }

    /// Parse and check the parameters `params` (a table) of the policy
    /// called `name` (see the module docs).
    pub fn parse<'de, D: Deserializer<'de>>(
        name: &str,
        params: D,
    ) -> Result<PolicySpec, PolicyError> {
        PolicySpec::new(PolicyParams::deserialize(name, params)?)
    }

    /// The policy called `name` with its default parameters.
    pub fn named(name: &str) -> Result<PolicySpec, PolicyError> {
        PolicySpec::new(PolicyParams::defaults(name)?)
    }

    /// Canonical policy name.
    pub fn name(&self) -> &'static str {
        self.params.policy()
    }

    /// The parameters.
    pub fn params(&self) -> &PolicyParams {
        &self.params
    }

    /// Build the policy.
    pub fn build(&self, ctx: &BuildContext) -> BoxedPolicy {
        let name = self.name();
        match &self.checked {
            Checked::Aya(cfg) => match ctx.scorer {
                Some(scorer) if cfg.get().score_algorithms => {
                    Box::new(AyaPolicy::with_scorer(cfg.clone(), scorer(ctx.seed)))
                }
                _ => Box::new(AyaPolicy::new(cfg.clone())),
            },
            Checked::Static(p) => Box::new(StaticPolicy::new(
                name,
                StaticOptions {
                    algorithm: p
                        .algorithm
                        .or(ctx.algorithm)
                        .unwrap_or(LbAlgorithm::LeastRequest),
                    weights: StaticWeights::Hints(ctx.weight_hints.clone()),
                    replicas: p.replicas,
                },
            )),
            Checked::Equal(algorithm) => Box::new(StaticPolicy::equal(name, *algorithm)),
            Checked::A58(cfg) => Box::new(A58Policy::new(cfg.clone())),
            Checked::Hpa(cfg) => Box::new(HpaPolicy::new(cfg.clone())),
        }
    }
}

/// A policy that can be moved to a worker thread (the simulator runs
/// replications in parallel).
pub type BoxedPolicy = Box<dyn Policy + Send>;

/// Parse, check and build in one call: [`PolicySpec::parse`] then
/// [`PolicySpec::build`].
pub fn by_name<'de, D: Deserializer<'de>>(
    name: &str,
    params: D,
    ctx: &BuildContext,
) -> Result<BoxedPolicy, PolicyError> {
    Ok(PolicySpec::parse(name, params)?.build(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoring::PoolSnapshot;
    use crate::types::{BackendObservation, ReplicaState, TickInput};
    use serde_json::{Value, json};

    fn obs(names: &[&str]) -> Vec<BackendObservation> {
        names
            .iter()
            .map(|n| BackendObservation::unobserved(*n, 0.0))
            .collect()
    }

    fn decide(p: &mut BoxedPolicy, backends: &[BackendObservation]) -> crate::types::Decision {
        p.decide(&TickInput {
            now: 0.0,
            interval: 10.0,
            backends,
            demand_rps: 0.0,
            forecast: None,
            replicas: ReplicaState::new(backends.len() as u32, 0).with_bounds(1, 10, 0.0),
        })
    }

    #[test]
    fn every_listed_policy_builds_with_defaults_and_an_empty_table() {
        for name in policy_names() {
            let spec = PolicySpec::named(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(spec.name(), name);
            let parsed = PolicySpec::parse(name, json!({})).unwrap();
            assert_eq!(parsed, spec, "{name}: empty table = defaults");
            assert_eq!(spec.build(&BuildContext::default()).name(), name);
        }
    }

    #[test]
    fn aliases_resolve_to_one_entry() {
        for (alias, name) in [
            ("RR", "round_robin"),
            ("configured", "static"),
            ("least-request", "p2c"),
            ("wrr", "a58"),
            ("ewma", "peak_ewma"),
        ] {
            assert_eq!(lookup(alias).unwrap().name, name);
        }
    }

    #[test]
    fn unknown_policy_lists_the_allowed_names() {
        let err = lookup("magic").unwrap_err();
        assert!(err.to_string().contains("a58"), "{err}");
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_policy() {
        for (policy, params, key) in [
            (
                "aya",
                json!({"target_utilisation": 0.6}),
                "target_utilisation",
            ),
            ("round_robin", json!({"algorithm": "p2c"}), "algorithm"),
            ("static", json!({"replica": 3}), "replica"),
            ("hpa", json!({"window": 3}), "window"),
        ] {
            let err = PolicySpec::parse(policy, params).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(policy), "{err}");
        }
    }

    #[test]
    fn out_of_range_and_mistyped_values_are_named() {
        let err = PolicySpec::parse("hpa", json!({"target_utilization": 2.0})).unwrap_err();
        assert!(err.to_string().contains("target_utilization"), "{err}");
        let err = PolicySpec::parse("static", json!({"algorithm": "fastest"})).unwrap_err();
        assert!(err.to_string().contains("fastest"), "{err}");
        let err = PolicySpec::parse("static", json!({"replicas": 0})).unwrap_err();
        assert!(err.to_string().contains("replicas"), "{err}");
        let err = PolicySpec::parse("aya", json!({"score_min_gain": 2.0})).unwrap_err();
        assert!(err.to_string().contains("score_min_gain"), "{err}");
    }

    #[test]
    fn parameters_are_applied() {
        let spec = PolicySpec::parse(
            "hpa",
            json!({"target_utilization": 0.5, "algorithm": "round_robin"}),
        )
        .unwrap();
        match spec.params() {
            PolicyParams::Hpa(c) => {
                assert_eq!(c.target_utilization, 0.5);
                assert_eq!(c.algorithm, LbAlgorithm::RoundRobin);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn static_uses_the_drivers_algorithm_and_hints_unless_told() {
        let ctx = BuildContext {
            algorithm: Some(LbAlgorithm::Maglev),
            weight_hints: BTreeMap::from([("b".to_string(), 4)]),
            ..BuildContext::default()
        };
        let backends = obs(&["a", "b"]);
        let mut p = PolicySpec::named("configured").unwrap().build(&ctx);
        let d = decide(&mut p, &backends);
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::Maglev);
        let w: Vec<u32> = d.weights.iter().map(|w| w.weight).collect();
        assert_eq!(w, [1, 4]);
        let mut p = PolicySpec::parse("static", json!({"algorithm": "rr", "replicas": 5}))
            .unwrap()
            .build(&BuildContext::default());
        let d = decide(&mut p, &backends);
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::RoundRobin);
        assert_eq!(d.scaling.desired_replicas, 5);
        let mut p = PolicySpec::named("static")
            .unwrap()
            .build(&BuildContext::default());
        assert_eq!(
            decide(&mut p, &backends).algorithm.algorithm,
            LbAlgorithm::LeastRequest
        );
    }

    struct Fixed;
    impl AlgorithmScorer for Fixed {
        fn score(&self, _: LbAlgorithm, _: &PoolSnapshot) -> Option<f64> {
            None
        }
    }

    #[test]
    fn the_seed_reaches_the_scorer_factory_when_aya_scores() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEEN: AtomicU64 = AtomicU64::new(0);
        fn factory(seed: u64) -> Arc<dyn AlgorithmScorer> {
            SEEN.store(seed, Ordering::SeqCst);
            Arc::new(Fixed)
        }
        let ctx = BuildContext {
            seed: 42,
            scorer: Some(factory),
            ..BuildContext::default()
        };
        PolicySpec::named("aya").unwrap().build(&ctx);
        assert_eq!(SEEN.load(Ordering::SeqCst), 0, "no scoring: no scorer");
        PolicySpec::parse("aya", json!({"score_algorithms": true}))
            .unwrap()
            .build(&ctx);
        assert_eq!(SEEN.load(Ordering::SeqCst), 42);
    }

    #[test]
    fn any_table_format_parses() {
        let v: Value = serde_json::from_str(r#"{"blackout_period": 5}"#).unwrap();
        let spec = PolicySpec::parse("a58", v).unwrap();
        assert_eq!(
            spec.params(),
            &PolicyParams::A58(A58Config {
                blackout_period: 5.0,
                ..A58Config::default()
            })
        );
    }
}
