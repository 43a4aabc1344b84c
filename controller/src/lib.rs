#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
// The command line and the demo measure real elapsed time for their progress
// output; they move to the `aya-cli` crate (issue 14), outside the service.
#[allow(clippy::disallowed_methods)]
pub mod cli;
pub mod clock;
pub mod config;
pub mod convert;
#[allow(clippy::disallowed_methods)]
pub mod demo;
pub mod forecasting;
pub mod ingest;
pub mod keda;
pub mod metrics;
pub mod policies;
pub mod publish;
pub mod server;
pub mod state;
pub mod store;
pub mod validate;
pub mod xds;
