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
//! (queueing formulas used for validation), [`report`] (JSON, CSV, HTML),
//! [`league`] (the league table's targets, calibration and Markdown). A
//! library only: the `aya sim` and `aya league` commands are in `aya-cli`.

#![forbid(unsafe_code)]

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
pub mod theory;
pub mod workload;
