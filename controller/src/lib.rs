//! # aya-controller
//!
//! The long-running controller service (`aya serve`) and the `aya` binary's
//! subcommands that need it.
//!
//! Data flow: metric samples arrive on the aya.v1 `Ingest` stream
//! ([`api`]), are validated and durably stored by the single ingest writer
//! ([`ingest`], [`store`]); every tick the control loop ([`state`]) turns the
//! latest values into observations, runs the cluster's policy
//! ([`policies`]) with its forecaster ([`forecasting`]) and publishes a new
//! versioned snapshot when the decision changed ([`publish`]). Data planes
//! follow the snapshots over aya.v1 `Watch`, Envoy xDS ([`xds`]) or KEDA
//! ([`keda`]). [`server`] wires it together; [`metrics`] exports counters.
//! The demand each tick observes is stored too, and a background task
//! retrains every cluster's demand model from it on a schedule, installing a
//! candidate only when it backtests no worse than the model in use
//! ([`state::Controller::retrain_cluster`], `aya_forecaster::retrain`).

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod convert;
pub mod demo;
pub mod forecasting;
pub mod ingest;
pub mod keda;
pub mod metrics;
pub mod otlp;
pub mod policies;
pub mod publish;
pub mod remote_write;
pub mod server;
pub mod state;
pub mod store;
pub mod xds;
