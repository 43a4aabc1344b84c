//! # aya-forecaster
//!
//! The data layer (CSV exports of monitoring systems → regular time series)
//! and the forecasting models Aya trains, selects and serves. A library only:
//! the `aya train | forecast | backtest | datasets` commands are in `aya-cli`.

#![forbid(unsafe_code)]

pub mod anomaly;
pub mod artifact;
pub mod backtest;
pub mod data;
pub mod intervals;
pub mod models;
pub mod online;
pub mod retrain;
pub mod seasonality;
pub mod select;
pub mod shift;
pub mod synth;
