#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod anomaly;
pub mod artifact;
pub mod backtest;
pub mod data;
pub mod events;
pub mod fcbench;
pub mod intervals;
pub mod models;
pub mod online;
pub mod retrain;
pub mod seasonality;
pub mod select;
pub mod shift;
pub mod synth;
