#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod anomalies;
pub mod bench;
pub mod controller;
pub mod demo;
pub mod failure;
pub mod forecaster;
pub mod league;
pub mod sim;
pub mod store;
