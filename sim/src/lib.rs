//! # aya-sim: Aya's discrete-event simulator
//!
//! Replays traffic (synthetic, a rate series, or a per-request trace) through
//! modelled data planes (Envoy / gRPC / Linkerd algorithms) and backends
//! (FCFS or processor sharing, unequal speeds, faults, autoscaling), drives
//! the decision engine ([`aya_policy::ControlLoop`]) in virtual time, and
//! scores policies with confidence intervals.
//!
//! Layout: [`dist`] (random streams, service distributions), [`workload`]
//! (arrival sources), [`lb`] (data-plane algorithms), [`model`] (what one
//! replication runs), [`engine`] (the event loop and scoring), [`scenario`]
//! (TOML files and validation), [`policy`] (static policy and the policy
//! factory), [`stats`] (replications, CIs, paired comparisons), [`theory`]
//! (queueing formulas used for validation), [`report`] (JSON, CSV, HTML).

#![forbid(unsafe_code)]

pub mod cli;
pub mod dist;
pub mod engine;
pub mod lb;
pub mod league;
pub mod model;
pub mod policy;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod suite;
pub mod theory;
pub mod workload;
