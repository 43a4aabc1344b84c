//! Policies by name: how scenario files, the simulator and the controller
//! service select a policy without knowing its type.
//!
//! Parameters arrive as a JSON object (TOML tables convert to it losslessly
//! through serde); each policy's parameters are a `deny_unknown_fields`
//! struct, so a misspelt key is an error naming it, not a silent default.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::aya::AyaPolicy;
use crate::baselines::{A58Config, A58Policy, HpaConfig, HpaPolicy, StaticPolicy};
use crate::config::{AyaConfig, ConfigError};
use crate::types::{LbAlgorithm, Policy, UnknownAlgorithm};

/// Every policy name [`by_name`] accepts, with a one-line description.
pub const POLICIES: [(&str, &str); 7] = [
    (
        "aya",
        "Aya: predictive weights, ejection, forecast-driven scaling, algorithm selection",
    ),
    (
        "static",
        "equal weights, fixed algorithm (param `algorithm`, default round_robin)",
    ),
    ("round_robin", "equal weights, round robin"),
    (
        "a58",
        "gRPC A58 weighted round robin weights from load reports",
    ),
    (
        "peak_ewma",
        "equal weights, Linkerd peak-EWMA P2C in the data plane",
    ),
    (
        "p2c",
        "equal weights, Envoy least request (power of two choices)",
    ),
    (
        "hpa",
        "Kubernetes HPA reactive autoscaling (10% tolerance, 300 s scale-down window)",
    ),
];

/// Why a policy could not be built.
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
        policy: String,
        /// The parser's message (names the field).
        message: String,
    },
    /// A parameter is out of range.
    #[error("parameters of policy `{policy}`: {source}")]
    Invalid {
        /// Policy name.
        policy: String,
        /// The failed check.
        source: ConfigError,
    },
    /// An algorithm parameter is not a known algorithm.
    #[error("parameters of policy `{policy}`: {source}")]
    Algorithm {
        /// Policy name.
        policy: String,
        /// The parse error.
        source: UnknownAlgorithm,
    },
}

/// A policy that can be moved to a worker thread (the simulator runs
/// replications in parallel).
pub type BoxedPolicy = Box<dyn Policy + Send>;

fn parse<T: DeserializeOwned + Default>(
    policy: &str,
    params: &Map<String, Value>,
) -> Result<T, PolicyError> {
    if params.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_value(Value::Object(params.clone())).map_err(|e| PolicyError::Params {
        policy: policy.to_string(),
        message: e.to_string(),
    })
}

fn no_params(policy: &str, params: &Map<String, Value>) -> Result<(), PolicyError> {
    match params.keys().next() {
        None => Ok(()),
        Some(k) => Err(PolicyError::Params {
            policy: policy.to_string(),
            message: format!("takes no parameters, got `{k}`"),
        }),
    }
}

/// Build the policy called `name` with `params`.
///
/// `seed` is accepted so that every policy is constructed the same way; the
/// current policies are fully deterministic and draw no random numbers.
pub fn by_name(
    name: &str,
    params: &Map<String, Value>,
    seed: u64,
) -> Result<BoxedPolicy, PolicyError> {
    let _ = seed;
    let norm = name.trim().to_ascii_lowercase().replace('-', "_");
    match norm.as_str() {
        "aya" => {
            let cfg: AyaConfig = parse("aya", params)?;
            let valid = cfg.validate().map_err(|source| PolicyError::Invalid {
                policy: "aya".into(),
                source,
            })?;
            Ok(Box::new(AyaPolicy::new(valid)))
        }
        "static" => {
            let mut algorithm = LbAlgorithm::RoundRobin;
            for (k, v) in params {
                match (k.as_str(), v) {
                    ("algorithm", Value::String(s)) => {
                        algorithm = s.parse().map_err(|source| PolicyError::Algorithm {
                            policy: "static".into(),
                            source,
                        })?;
                    }
                    _ => {
                        return Err(PolicyError::Params {
                            policy: "static".into(),
                            message: format!(
                                "unknown or mistyped parameter `{k}` (allowed: algorithm = \"<name>\")"
                            ),
                        });
                    }
                }
            }
            Ok(Box::new(StaticPolicy::new("static", algorithm)))
        }
        "round_robin" | "rr" => {
            no_params(&norm, params)?;
            Ok(Box::new(StaticPolicy::new(
                "round_robin",
                LbAlgorithm::RoundRobin,
            )))
        }
        "peak_ewma" | "ewma" => {
            no_params(&norm, params)?;
            Ok(Box::new(StaticPolicy::new(
                "peak_ewma",
                LbAlgorithm::PeakEwma,
            )))
        }
        "p2c" | "least_request" => {
            no_params(&norm, params)?;
            Ok(Box::new(StaticPolicy::new(
                "p2c",
                LbAlgorithm::LeastRequest,
            )))
        }
        "a58" | "wrr" => Ok(Box::new(A58Policy::new(parse::<A58Config>("a58", params)?))),
        "hpa" => {
            let cfg: HpaConfig = parse("hpa", params)?;
            if !(cfg.target_utilization > 0.0 && cfg.target_utilization <= 1.0) {
                return Err(PolicyError::Invalid {
                    policy: "hpa".into(),
                    source: ConfigError {
                        field: "target_utilization",
                        value: cfg.target_utilization.to_string(),
                        rule: "must be in (0, 1]",
                    },
                });
            }
            if !(cfg.tolerance >= 0.0 && cfg.tolerance < 1.0) {
                return Err(PolicyError::Invalid {
                    policy: "hpa".into(),
                    source: ConfigError {
                        field: "tolerance",
                        value: cfg.tolerance.to_string(),
                        rule: "must be in [0, 1)",
                    },
                });
            }
            if !(cfg.scale_down_stabilization >= 0.0 && cfg.scale_down_stabilization.is_finite()) {
                return Err(PolicyError::Invalid {
                    policy: "hpa".into(),
                    source: ConfigError {
                        field: "scale_down_stabilization",
                        value: cfg.scale_down_stabilization.to_string(),
                        rule: "must be >= 0",
                    },
                });
            }
            Ok(Box::new(HpaPolicy::new(cfg)))
        }
        _ => Err(PolicyError::UnknownPolicy {
            given: name.to_string(),
            allowed: POLICIES.map(|(n, _)| n).join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn every_listed_policy_builds_with_defaults() {
        for (name, _) in POLICIES {
            let p = by_name(name, &Map::new(), 1).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!p.name().is_empty());
        }
    }

    #[test]
    fn unknown_policy_lists_the_allowed_names() {
        let err = by_name("magic", &Map::new(), 1).err().unwrap();
        assert!(err.to_string().contains("a58"), "{err}");
    }

    #[test]
    fn misspelt_parameter_is_named() {
        let err = by_name("aya", &params(r#"{"target_utilisation": 0.6}"#), 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("target_utilisation"), "{err}");
        let err = by_name("hpa", &params(r#"{"target_utilization": 2.0}"#), 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("target_utilization"), "{err}");
        let err = by_name("static", &params(r#"{"algorithm": "fastest"}"#), 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("fastest"), "{err}");
    }

    #[test]
    fn parameters_are_applied() {
        let p = by_name(
            "hpa",
            &params(r#"{"target_utilization": 0.5, "algorithm": "round_robin"}"#),
            1,
        )
        .unwrap();
        assert_eq!(p.name(), "hpa");
    }
}
