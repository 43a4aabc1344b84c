//! The data layer: monitoring CSV exports in, clean regular time series out.
//!
//! Everything Aya learns from arrives as a CSV exported by some monitoring system,
//! and those exports differ in shape (one series per file, long form with label
//! columns, wide form), in timestamp format, and in quality (gaps, repeated and
//! reordered rows, NaNs). This module accepts all of them without a schema file,
//! turns them into one [`Series`] type (unix-millisecond UTC timestamps, `f64`
//! values, a detected interval), and says precisely what was wrong or repaired:
//! every error names the file, the 1-based line and the column, and every repair
//! is counted in a [`QualityReport`].
//!
//! * [`load_csv`]: read one series; [`load_csv_all`]: every series of a long-form file.
//! * [`parse_timestamp`]: the timestamp detector, also used by the simulator to
//!   stream per-request traces.
//! * [`write_series_csv`]: the canonical `timestamp,value` writer.
//! * [`datasets_dir`]: where the shared real traces live.
//! * [`prometheus`]: the same [`Series`] read from a Prometheus server's
//!   `query_range` API instead of a file.
//!
//! polars (CSV feature only) does the CSV tokenising; validation is ours so that it
//! can point at lines. See [`csv`] for how columns are chosen.

pub mod catalog;
pub mod csv;
pub mod error;
pub mod prometheus;
pub mod quality;
pub mod resample;
pub mod timestamp;
pub mod write;

use std::path::{Path, PathBuf};

pub use self::csv::{load_csv, load_csv_all, load_csv_all_bytes, load_csv_bytes};
pub use self::error::DataError;
pub use self::quality::{
    Gap, QualityReport, ResampleReport, RowIssue, detect_interval, format_interval,
};
pub use self::resample::{Aggregate, fill_gaps, resample, resample_with};
pub use self::timestamp::{TimestampError, format_rfc3339, parse_timestamp};
pub use self::write::{write_series, write_series_csv};

/// Environment variable naming the directory of the shared real traces.
pub const DATASETS_ENV: &str = "AYA_DATASETS";

/// A time series ready for modelling: sorted timestamps, no duplicates (unless
/// [`Duplicates::KeepAll`] was asked for), finite values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Name: the file stem, plus `:column` for a non-`value` column and `{label=value,...}`
    /// for long-form selections (e.g. `backends{backend=b1,metric=cpu}`).
    pub name: String,
    /// Unix milliseconds, UTC (naive timestamps are taken as UTC), ascending.
    pub timestamps: Vec<i64>,
    /// One value per timestamp.
    pub values: Vec<f64>,
    /// Nominal sampling interval (ms): the detected one, or the resampling interval.
    pub interval_ms: i64,
    /// What was found and repaired while loading.
    pub report: QualityReport,
}

impl Series {
    /// Build a series from in-memory parts with the same cleaning as [`load_csv`]
    /// (default options: sort, keep the last duplicate, reject NaN/inf/negative).
    /// Positions (1-based) stand in for line numbers in errors.
    pub fn from_parts(
        name: impl Into<String>,
        timestamps: Vec<i64>,
        values: Vec<f64>,
    ) -> Result<Series, DataError> {
        Self::from_parts_with(name, timestamps, values, &LoadOptions::default())
    }

    /// [`Series::from_parts`] with explicit options (`allow_negative`, `duplicates`,
    /// `reject_out_of_order`, `resample_ms`; column options are ignored).
    pub fn from_parts_with(
        name: impl Into<String>,
        timestamps: Vec<i64>,
        values: Vec<f64>,
        opts: &LoadOptions,
    ) -> Result<Series, DataError> {
        let name = name.into();
        let path = PathBuf::from(&name);
        if timestamps.len() != values.len() {
            return Err(DataError::BadOption(format!(
                "{name}: {} timestamps but {} values",
                timestamps.len(),
                values.len()
            )));
        }
        let mut rows = Vec::with_capacity(values.len());
        for (i, (ts, value)) in timestamps.into_iter().zip(values).enumerate() {
            let check = if value.is_nan() {
                Err("NaN is not allowed".to_string())
            } else if value.is_infinite() {
                Err(format!("infinite value {value} is not allowed"))
            } else if value < 0.0 && !opts.allow_negative {
                Err(format!("negative value {value} is not allowed"))
            } else {
                Ok(())
            };
            check.map_err(|message| DataError::Field {
                path: path.clone(),
                line: i + 1,
                column: "value".to_string(),
                message,
            })?;
            rows.push(quality::Row {
                ts,
                value,
                line: i + 1,
            });
        }
        let cleaned = quality::clean(&path, "timestamp", rows, opts)?;
        let series = Series {
            name,
            interval_ms: cleaned.report.detected_interval_ms,
            timestamps: cleaned.timestamps,
            values: cleaned.values,
            report: cleaned.report,
        };
        match opts.resample_ms {
            Some(r) => resample_with(&path, series, r, opts.aggregate),
            None => Ok(series),
        }
    }

    /// A regular series starting at `start_ms` with one value every `interval_ms`
    /// (no validation of the values; for generated data and tests).
    pub fn regular(
        name: impl Into<String>,
        start_ms: i64,
        interval_ms: i64,
        values: Vec<f64>,
    ) -> Series {
        let timestamps: Vec<i64> = (0..values.len() as i64)
            .map(|i| start_ms + i * interval_ms)
            .collect();
        let report = QualityReport {
            rows: values.len(),
            first_ms: timestamps.first().copied().unwrap_or(start_ms),
            last_ms: timestamps.last().copied().unwrap_or(start_ms),
            detected_interval_ms: interval_ms,
            regular: true,
            ..QualityReport::default()
        };
        Series {
            name: name.into(),
            timestamps,
            values,
            interval_ms,
            report,
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The interval in seconds.
    pub fn interval_secs(&self) -> f64 {
        self.interval_ms as f64 / 1000.0
    }

    /// Timestamps as seconds since the epoch (the `Time` unit of `aya-policy`).
    pub fn times_secs(&self) -> Vec<f64> {
        self.timestamps.iter().map(|t| *t as f64 / 1000.0).collect()
    }

    /// Write the series as `timestamp,value` (RFC 3339).
    pub fn write_csv(&self, path: &Path) -> Result<(), DataError> {
        write_series_csv(path, &self.timestamps, &self.values)
    }
}

/// What to do with rows that share a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Duplicates {
    /// Keep the last row in file order (a re-exported sample overrides the old one). Default.
    #[default]
    KeepLast,
    /// Keep every row: for event traces (one row per request) where equal timestamps
    /// are distinct events. Timestamps are then non-decreasing instead of increasing.
    KeepAll,
    /// Fail, naming the line.
    Reject,
}

/// How to read a CSV. `LoadOptions::default()` reads `timestamp,value` files.
/// Construct with `..LoadOptions::default()` so that new fields do not break callers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    /// Value column (wide form). Default: `value`, else the only numeric column.
    pub value_column: Option<String>,
    /// Time column. Default: detected by name, else the first column.
    pub time_column: Option<String>,
    /// Long-form label filters, `(label column, value)`; all must match.
    pub filters: Vec<(String, String)>,
    /// Resample to this interval (ms): bucket means, linear interpolation across gaps.
    pub resample_ms: Option<i64>,
    /// How resampling combines a bucket (mean, sum or count).
    pub aggregate: Aggregate,
    /// Accept negative values (signed data such as deltas). Default: rejected.
    pub allow_negative: bool,
    /// Rows sharing a timestamp.
    pub duplicates: Duplicates,
    /// Fail on a row earlier than its predecessor instead of sorting.
    pub reject_out_of_order: bool,
}

/// Parse `label=value`.
pub fn parse_filter(f: &str) -> Result<(String, String), DataError> {
    match f.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(DataError::BadOption(format!(
            "--filter {f:?}: expected LABEL=VALUE, e.g. --filter backend=web-1"
        ))),
    }
}

/// Where the shared real traces live: `$AYA_DATASETS` if set, else
/// `<workspace root>/../shared/datasets` (the workspace root this crate was built in)
/// when that exists, else `../shared/datasets` relative to the current directory.
pub fn datasets_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATASETS_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets");
    if built.is_dir() {
        return built;
    }
    PathBuf::from("../shared/datasets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        assert_eq!(
            parse_filter("backend=b1").ok(),
            Some(("backend".into(), "b1".into()))
        );
        assert_eq!(
            parse_filter("a = b=c").ok(),
            Some(("a".into(), "b=c".into()))
        );
        assert!(parse_filter("backend").is_err());
        assert!(parse_filter("=x").is_err());
    }

    #[test]
    fn from_parts_validates_with_positions() {
        let e = Series::from_parts("s", vec![0, 1000, 2000], vec![1.0, f64::NAN, 2.0]);
        assert_eq!(
            e.err().map(|e| e.to_string()).as_deref(),
            Some("s line 2, column \"value\": NaN is not allowed")
        );
        let s = Series::from_parts("s", vec![2000, 0, 1000], vec![3.0, 1.0, 2.0]).expect("valid");
        assert_eq!(s.values, vec![1.0, 2.0, 3.0]);
        assert_eq!(s.interval_ms, 1000);
        assert_eq!(s.report.out_of_order, 1);
    }

    #[test]
    fn regular_builder() {
        let s = Series::regular("r", 60_000, 60_000, vec![1.0, 2.0]);
        assert_eq!(s.timestamps, vec![60_000, 120_000]);
        assert_eq!(s.interval_secs(), 60.0);
        assert_eq!(s.times_secs(), vec![60.0, 120.0]);
    }
}
