#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alerts;
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
