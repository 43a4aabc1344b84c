//! # aya-policy: Aya's decision engine
//!
//! Forecasts and observations in; per-backend weights, scaling signals and the
//! data-plane algorithm out. This crate is the *one* piece of decision code
//! that both drivers run: the controller service (`aya serve`, wall-clock
//! time) and the simulator (`aya sim`, virtual time). That is what makes the
//! simulator's scores meaningful for production.
//!
//! Rules this crate keeps:
//! - no I/O and no async; time is always an argument ([`Time`]);
//! - randomness is injected and seeded by the caller;
//! - outputs are plain data ([`Decision`]) with an [`Explanation`].

#![forbid(unsafe_code)]

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
pub use baselines::{A58Config, A58Policy, HpaConfig, HpaPolicy, StaticPolicy};
pub use config::{AyaConfig, ConfigError, ValidAyaConfig, WeightObjective};
pub use control::ControlLoop;
pub use registry::{BoxedPolicy, POLICIES, PolicyError, by_name};
pub use scoring::{AlgorithmScorer, PoolBackend, PoolSnapshot};

pub use types::*;
