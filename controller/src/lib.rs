#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod anomaly;
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod convert;
pub mod forecasting;
pub mod ha;
pub mod haproxy;
pub mod ingest;
pub mod keda;
pub mod metrics;
pub mod orca;
pub mod otlp;
pub mod policies;
pub mod publish;
pub mod remote_write;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod validate;
pub mod xds;
