//! Anomaly detection: a streaming detector for any metric Aya ingests ([`detector`]), and the
//! Numenta Anomaly Benchmark's scoring rules to measure it ([`nab`]), validated with a port of
//! NAB's windowed-Gaussian baseline ([`gaussian`]).

pub mod detector;
pub mod gaussian;
pub mod nab;

pub use detector::{Detector, DetectorConfig, Score, detect_series};
