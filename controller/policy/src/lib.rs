#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aya;
pub mod baselines;
pub mod capacity;
pub mod config;
pub mod control;
pub mod registry;
pub mod scoring;
pub mod types;
pub mod weights;

pub use aya::AyaPolicy;
pub use baselines::{
    A58Config, A58Policy, HpaConfig, HpaPolicy, StaticOptions, StaticPolicy, StaticWeights,
};
pub use config::{AyaConfig, ConfigError, ValidAyaConfig, WeightObjective};
pub use control::ControlLoop;
pub use registry::{
    BoxedPolicy, BuildContext, POLICIES, PolicyError, PolicyInfo, PolicyParams, PolicySpec,
    ScorerFactory, StaticParams, by_name, lookup, policy_names,
};
pub use scoring::{AlgorithmScorer, PoolBackend, PoolSnapshot};

pub use types::*;
