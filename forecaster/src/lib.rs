//! # aya-forecaster
//!
//! The data layer (CSV exports of monitoring systems → regular time series)
//! and the forecasting models Aya trains, selects and serves.

#![forbid(unsafe_code)]

pub mod cli;
pub mod cli_support;
pub mod data;
pub mod synth;
pub mod models;
pub mod seasonality;
pub mod backtest;
pub mod intervals;
pub mod select;
pub mod artifact;
pub mod online;
