//! Errors of the data layer. Every variant that comes from a file names the file,
//! and, where there is one, the 1-based line and the column, so a user can open
//! the file at the right place: `data.csv line 17, column "value": NaN is not allowed`.

use std::path::PathBuf;

use thiserror::Error;

/// A CSV that cannot be turned into a series, or a series that cannot be written.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has no bytes, or only blank lines.
    #[error("{}: the file is empty (expected a header line such as `timestamp,value`)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The first line looks like data, not column names.
    #[error(
        "{} line 1: missing header: the first line (`{first_line}`) looks like data; \
         the first line must name the columns, e.g. `timestamp,value`",
        path.display()
    )]
    MissingHeader {
        /// The file.
        path: PathBuf,
        /// The first line as found (shortened).
        first_line: String,
    },
    /// The file is not well-formed CSV at one line (wrong field count, unterminated quote,
    /// duplicate column name...).
    #[error("{} line {line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A column named by an option (or needed, like the time column) is not in the header.
    #[error(
        "{} line 1: no column {column:?} ({why}); the columns are: {}",
        path.display(),
        available.join(", ")
    )]
    UnknownColumn {
        /// The file.
        path: PathBuf,
        /// The column that was asked for.
        column: String,
        /// Where the name came from, e.g. `--column`, `--filter`, `time column`.
        why: String,
        /// The header's column names.
        available: Vec<String>,
    },
    /// No column could be recognised as the time column.
    #[error(
        "{} line 1: no timestamp column: none of the columns ({}) is named like one \
         (timestamp, time, ts, date, datetime...) and the first column does not hold timestamps; \
         name it with --time-column",
        path.display(),
        available.join(", ")
    )]
    NoTimeColumn {
        /// The file.
        path: PathBuf,
        /// The header's column names.
        available: Vec<String>,
    },
    /// No value column was given and the choice is not obvious.
    #[error(
        "{} line 1: cannot tell which column holds the values: {}; pick one with --column",
        path.display(),
        candidates_text(candidates)
    )]
    AmbiguousValueColumn {
        /// The file.
        path: PathBuf,
        /// The numeric columns that could be meant (empty if there are none).
        candidates: Vec<String>,
    },
    /// Long-form data holds several series and the filters do not narrow it to one.
    #[error(
        "{}: {count} series remain in this long-form file; choose one with --filter ({})",
        path.display(),
        labels_text(labels)
    )]
    AmbiguousSeries {
        /// The file.
        path: PathBuf,
        /// Number of distinct label combinations left after filtering.
        count: usize,
        /// For each label column with more than one value left: its distinct values
        /// (at most 20 listed).
        labels: Vec<(String, Vec<String>)>,
    },
    /// A filter selects no row.
    #[error(
        "{}: no row has {label}={value}; values of column {label:?} are: {}",
        path.display(),
        values.join(", ")
    )]
    NoMatch {
        /// The file.
        path: PathBuf,
        /// The label column.
        label: String,
        /// The value asked for.
        value: String,
        /// The distinct values present (at most 20 listed).
        values: Vec<String>,
    },
    /// One cell is invalid: bad timestamp, NaN, inf, negative, empty, not a number,
    /// or a duplicate / out-of-order timestamp when those are rejected.
    #[error("{} line {line}, column {column:?}: {message}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Column name (from the header).
        column: String,
        /// What is wrong with the cell.
        message: String,
    },
    /// The header is there but there is no data row (after filtering).
    #[error("{}: no data rows{}", path.display(), if *filtered { " match the filters" } else { " after the header" })]
    NoRows {
        /// The file.
        path: PathBuf,
        /// True when rows exist but none matches the filters.
        filtered: bool,
    },
    /// Fewer than two distinct timestamps: no sampling interval can be detected.
    #[error(
        "{}: only {distinct} distinct timestamp(s); at least 2 are needed to detect the sampling interval",
        path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Distinct timestamps found.
        distinct: usize,
    },
    /// An option value that cannot be used (bad `--filter`, non-positive `--resample`...).
    /// This is a usage error, not a data error.
    #[error("{0}")]
    BadOption(String),
    /// Resampling would produce an unreasonable number of points.
    #[error(
        "{}: resampling to {interval_ms} ms would create {points} points (limit {limit}); \
         choose a larger interval",
        path.display()
    )]
    ResampleTooLarge {
        /// The file.
        path: PathBuf,
        /// Requested interval.
        interval_ms: i64,
        /// Points it would create.
        points: u64,
        /// The limit.
        limit: u64,
    },
    /// polars failed to read a file that passed the structural checks.
    #[error("{}: CSV reader failed: {source}", path.display())]
    Polars {
        /// The file.
        path: PathBuf,
        /// The polars error.
        source: polars::error::PolarsError,
    },
}

impl DataError {
    /// True for errors caused by option values (exit code 2) rather than by the data (exit code 3).
    pub fn is_usage(&self) -> bool {
        matches!(self, DataError::BadOption(_))
    }

    /// True for I/O failures (exit code 1).
    pub fn is_io(&self) -> bool {
        matches!(self, DataError::Read { .. } | DataError::Write { .. })
    }
}

fn candidates_text(c: &[String]) -> String {
    if c.is_empty() {
        "no column other than the timestamp holds numbers".to_string()
    } else {
        format!("several numeric columns ({})", c.join(", "))
    }
}

fn labels_text(labels: &[(String, Vec<String>)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}
