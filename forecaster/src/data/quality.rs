//! From parsed rows to a clean series: ordering, duplicates, interval detection and
//! the quality report.
//!
//! Real exports are rarely perfect: NAB series have a few shifted steps, scrapers
//! miss samples, concatenated exports repeat or reorder rows. A forecaster needs a
//! sorted series without duplicate timestamps and a nominal step, and the user needs
//! to know what was repaired. So this module repairs what can be repaired safely
//! (sort, keep the last of duplicates) and reports every repair with line numbers;
//! with the strict options it refuses instead.

use std::fmt;
use std::path::Path;

use super::error::DataError;
use super::timestamp::format_rfc3339;
use super::{Duplicates, LoadOptions};

/// How many example locations a report keeps for each kind of problem.
pub const MAX_EXAMPLES: usize = 10;

/// One parsed data row: timestamp, value and the 1-based line it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Unix milliseconds, UTC.
    pub ts: i64,
    /// The value.
    pub value: f64,
    /// 1-based line number in the source (or 1-based position for in-memory data).
    pub line: usize,
}

/// A stretch of missing samples in a regular series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Timestamp of the last sample before the gap (unix ms).
    pub after_ms: i64,
    /// Timestamp of the first sample after the gap (unix ms).
    pub before_ms: i64,
    /// Number of samples missing at the nominal interval.
    pub missing: usize,
    /// Line of the first row after the gap.
    pub line: usize,
}

/// A row involved in a duplicate or out-of-order problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowIssue {
    /// Line of the row.
    pub line: usize,
    /// Its timestamp (unix ms).
    pub ts: i64,
    /// The other line involved: for a duplicate, the line with the same timestamp
    /// that comes earlier in the file; for an out-of-order row, the previous row.
    pub other_line: usize,
}

/// What resampling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResampleReport {
    /// Target interval (ms).
    pub interval_ms: i64,
    /// Output points.
    pub points: usize,
    /// Empty buckets filled by linear interpolation.
    pub interpolated: usize,
    /// Buckets that averaged more than one input sample.
    pub merged: usize,
}

/// What was found (and repaired) while loading a series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QualityReport {
    /// Data rows of this series read from the input (after label filtering, before
    /// removing duplicates).
    pub rows: usize,
    /// Rows of the file skipped because they belong to other series (long form).
    pub filtered_out: usize,
    /// First timestamp (unix ms).
    pub first_ms: i64,
    /// Last timestamp (unix ms).
    pub last_ms: i64,
    /// Detected nominal interval (ms), before any resampling.
    pub detected_interval_ms: i64,
    /// True when most steps equal the nominal interval (within 10 %): gaps are only
    /// meaningful for regular series. Per-request traces are irregular.
    pub regular: bool,
    /// Consecutive steps (between distinct timestamps) that differ from the nominal
    /// interval, gaps included.
    pub irregular_steps: usize,
    /// Gaps (regular series only): steps of about two or more intervals.
    pub gaps: Vec<Gap>,
    /// Total samples missing in all gaps.
    pub missing_points: usize,
    /// Rows whose timestamp equals that of an earlier row.
    pub duplicates: usize,
    /// The first few duplicates.
    pub duplicate_examples: Vec<RowIssue>,
    /// Rows whose timestamp is earlier than the previous row's.
    pub out_of_order: usize,
    /// The first few out-of-order rows.
    pub out_of_order_examples: Vec<RowIssue>,
    /// Set when the series was resampled.
    pub resampled: Option<ResampleReport>,
}

impl QualityReport {
    /// True when nothing had to be repaired and there are no gaps.
    pub fn is_clean(&self) -> bool {
        self.gaps.is_empty() && self.duplicates == 0 && self.out_of_order == 0
    }
}

impl fmt::Display for QualityReport {
    /// One line: `4032 rows, interval 300 s, 2 gaps (3 missing; first at line 17, ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rows, {} interval {}",
            self.rows,
            if self.regular { "regular" } else { "irregular" },
            format_interval(self.detected_interval_ms)
        )?;
        write!(f, ", {} gap(s)", self.gaps.len())?;
        if let Some(g) = self.gaps.first() {
            write!(
                f,
                " ({} missing; first before line {}: {} -> {})",
                self.missing_points,
                g.line,
                format_rfc3339(g.after_ms),
                format_rfc3339(g.before_ms)
            )?;
        }
        write!(f, ", {} duplicate(s)", self.duplicates)?;
        if let Some(d) = self.duplicate_examples.first() {
            write!(
                f,
                " (first at line {}, same time as line {})",
                d.line, d.other_line
            )?;
        }
        write!(f, ", {} out of order", self.out_of_order)?;
        if let Some(o) = self.out_of_order_examples.first() {
            write!(f, " (first at line {})", o.line)?;
        }
        if let Some(r) = &self.resampled {
            write!(
                f,
                "; resampled to {}: {} points, {} interpolated",
                format_interval(r.interval_ms),
                r.points,
                r.interpolated
            )?;
        }
        Ok(())
    }
}

/// `300 s`, `1.5 s`, `250 ms`, `30 min`, `1 h`.
pub fn format_interval(ms: i64) -> String {
    if ms >= 3_600_000 && ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms >= 60_000 && ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms >= 1000 {
        format!("{} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// The result of cleaning rows: sorted timestamps and values plus the report.
pub(crate) struct Cleaned {
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    pub report: QualityReport,
}

/// Sort, handle duplicates, detect the interval and fill the report.
/// `time_column` is used in error messages.
pub(crate) fn clean(
    path: &Path,
    time_column: &str,
    mut rows: Vec<Row>,
    opts: &LoadOptions,
) -> Result<Cleaned, DataError> {
    let mut report = QualityReport {
        rows: rows.len(),
        ..QualityReport::default()
    };
    let field_err = |line: usize, message: String| DataError::Field {
        path: path.to_path_buf(),
        line,
        column: time_column.to_string(),
        message,
    };

    order_rows(&mut rows, &mut report, opts, &field_err)?;
    rows = dedupe_rows(rows, &mut report, opts, &field_err)?;

    // Interval from the steps between distinct timestamps.
    let mut deltas: Vec<i64> = rows
        .windows(2)
        .map(|w| w[1].ts - w[0].ts)
        .filter(|d| *d > 0)
        .collect();
    if deltas.is_empty() {
        return Err(DataError::TooShort {
            path: path.to_path_buf(),
            distinct: usize::from(!rows.is_empty()),
        });
    }
    let (interval, regular) = detect_interval(&mut deltas);
    report.detected_interval_ms = interval;
    report.regular = regular;
    report.first_ms = rows.first().map_or(0, |r| r.ts);
    report.last_ms = rows.last().map_or(0, |r| r.ts);

    count_gaps(&rows, interval, regular, &mut report);

    let timestamps = rows.iter().map(|r| r.ts).collect();
    let values = rows.iter().map(|r| r.value).collect();
    Ok(Cleaned {
        timestamps,
        values,
        report,
    })
}

/// Count (or reject) rows earlier than the row before them, and sort them into time order.
fn order_rows(
    rows: &mut [Row],
    report: &mut QualityReport,
    opts: &LoadOptions,
    field_err: &impl Fn(usize, String) -> DataError,
) -> Result<(), DataError> {
    // Out-of-order rows: earlier than the row just before them.
    for w in rows.windows(2) {
        if w[1].ts < w[0].ts {
            if opts.reject_out_of_order {
                return Err(field_err(
                    w[1].line,
                    format!(
                        "timestamp {} is earlier than the previous row's (line {}: {}); \
                         rows must be in time order",
                        format_rfc3339(w[1].ts),
                        w[0].line,
                        format_rfc3339(w[0].ts)
                    ),
                ));
            }
            report.out_of_order += 1;
            if report.out_of_order_examples.len() < MAX_EXAMPLES {
                report.out_of_order_examples.push(RowIssue {
                    line: w[1].line,
                    ts: w[1].ts,
                    other_line: w[0].line,
                });
            }
        }
    }
    if report.out_of_order > 0 {
        // Stable: rows with equal timestamps keep file order, so "last" means last in the file.
        rows.sort_by_key(|r| r.ts);
    }
    Ok(())
}

/// Count duplicate timestamps, then reject them, keep the last of each run, or keep them all.
fn dedupe_rows(
    mut rows: Vec<Row>,
    report: &mut QualityReport,
    opts: &LoadOptions,
    field_err: &impl Fn(usize, String) -> DataError,
) -> Result<Vec<Row>, DataError> {
    // Duplicates: equal timestamps are adjacent now. Within a run, file order is kept.
    let mut dup_lines: Vec<RowIssue> = Vec::new();
    for w in rows.windows(2) {
        if w[1].ts == w[0].ts {
            report.duplicates += 1;
            if dup_lines.len() < MAX_EXAMPLES || opts.duplicates == Duplicates::Reject {
                dup_lines.push(RowIssue {
                    line: w[1].line,
                    ts: w[1].ts,
                    other_line: w[0].line,
                });
            }
        }
    }
    if report.duplicates > 0 && opts.duplicates == Duplicates::Reject {
        // Report the duplicate that appears first in the file.
        let first = dup_lines.iter().min_by_key(|d| d.line).copied();
        if let Some(d) = first {
            return Err(field_err(
                d.line,
                format!(
                    "duplicate timestamp {} (same as line {})",
                    format_rfc3339(d.ts),
                    d.other_line
                ),
            ));
        }
    }
    dup_lines.sort_by_key(|d| d.line);
    dup_lines.truncate(MAX_EXAMPLES);
    report.duplicate_examples = dup_lines;
    if report.duplicates > 0 && opts.duplicates == Duplicates::KeepLast {
        let mut kept: Vec<Row> = Vec::with_capacity(rows.len() - report.duplicates);
        for r in rows {
            match kept.last_mut() {
                Some(last) if last.ts == r.ts => *last = r,
                _ => kept.push(r),
            }
        }
        rows = kept;
    }
    Ok(rows)
}

/// Count the irregular steps and, on a regular grid, the gaps and their missing points.
fn count_gaps(rows: &[Row], interval: i64, regular: bool, report: &mut QualityReport) {
    for w in rows.windows(2) {
        let d = w[1].ts - w[0].ts;
        if d <= 0 || d == interval {
            continue;
        }
        report.irregular_steps += 1;
        if regular {
            let steps = (d as f64 / interval as f64).round() as i64;
            if steps >= 2 {
                let missing = usize::try_from(steps - 1).unwrap_or(usize::MAX);
                report.missing_points = report.missing_points.saturating_add(missing);
                report.gaps.push(Gap {
                    after_ms: w[0].ts,
                    before_ms: w[1].ts,
                    missing,
                    line: w[1].line,
                });
            }
        }
    }
}

/// Nominal interval of positive steps and whether the series is regular.
///
/// The mode is the nominal step when at least half of the steps equal it (a regular
/// series with a few gaps or shifted samples). Otherwise (jittery scrapes, event
/// traces) the median is used, and the series counts as regular only if at least half
/// of the steps are within 10 % of it. Sorts `deltas` in place.
pub fn detect_interval(deltas: &mut [i64]) -> (i64, bool) {
    if deltas.is_empty() {
        return (0, false);
    }
    deltas.sort_unstable();
    let (mut best, mut best_n) = (deltas[0], 0usize);
    let mut i = 0;
    while i < deltas.len() {
        let mut j = i;
        while j < deltas.len() && deltas[j] == deltas[i] {
            j += 1;
        }
        if j - i > best_n {
            best = deltas[i];
            best_n = j - i;
        }
        i = j;
    }
    if best_n * 2 >= deltas.len() {
        return (best, true);
    }
    let median = deltas[deltas.len() / 2];
    let tol = median / 10;
    let near = deltas
        .iter()
        .filter(|d| (**d - median).abs() <= tol)
        .count();
    (median, near * 2 >= deltas.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ts: &[i64]) -> Vec<Row> {
        ts.iter()
            .enumerate()
            .map(|(i, t)| Row {
                ts: *t,
                value: i as f64,
                line: i + 2,
            })
            .collect()
    }

    #[test]
    fn interval_mode_and_median() {
        assert_eq!(detect_interval(&mut [60, 60, 60, 120, 61]), (60, true));
        // Jitter around 15 s: no dominant mode, but regular.
        assert!(detect_interval(&mut [14_999, 15_001, 15_000, 15_002, 14_998, 15_003]).1);
        // Event trace: irregular.
        let (m, regular) = detect_interval(&mut [1, 500, 30, 7, 2000, 90, 3]);
        assert_eq!((m, regular), (30, false));
    }

    #[test]
    fn gaps_duplicates_and_order() {
        let opts = LoadOptions::default();
        // Seconds: 0, 60, 120, (180 missing), 300, 300 again, 360, then 240 out of order.
        let ts: Vec<i64> = [0, 60, 120, 300, 300, 360, 240]
            .iter()
            .map(|s| s * 1000)
            .collect();
        let c = clean(Path::new("x.csv"), "t", rows(&ts), &opts).expect("cleans");
        assert_eq!(c.report.rows, 7);
        assert_eq!(c.report.out_of_order, 1);
        assert_eq!(
            c.report.out_of_order_examples[0],
            RowIssue {
                line: 8,
                ts: 240_000,
                other_line: 7
            }
        );
        assert_eq!(c.report.duplicates, 1);
        assert_eq!(
            c.report.duplicate_examples[0],
            RowIssue {
                line: 6,
                ts: 300_000,
                other_line: 5
            }
        );
        assert_eq!(
            c.timestamps,
            vec![0, 60_000, 120_000, 240_000, 300_000, 360_000]
        );
        // Keep last: 300 s takes the value of line 6 (index 4); 240 s keeps its own.
        assert_eq!(c.values, vec![0.0, 1.0, 2.0, 6.0, 4.0, 5.0]);
        assert_eq!(c.report.detected_interval_ms, 60_000);
        assert!(c.report.regular);
        assert_eq!(c.report.irregular_steps, 1);
        assert_eq!(c.report.missing_points, 1);
        assert_eq!(
            c.report.gaps,
            vec![Gap {
                after_ms: 120_000,
                before_ms: 240_000,
                missing: 1,
                line: 8
            }]
        );
    }

    #[test]
    fn strict_options_reject() {
        let opts = LoadOptions {
            duplicates: Duplicates::Reject,
            ..LoadOptions::default()
        };
        let e = clean(Path::new("x.csv"), "t", rows(&[0, 60_000, 60_000]), &opts)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "x.csv line 4, column \"t\": duplicate timestamp 1970-01-01T00:01:00Z (same as line 3)"
            )
        );
        let opts = LoadOptions {
            reject_out_of_order: true,
            ..LoadOptions::default()
        };
        let e = clean(Path::new("x.csv"), "t", rows(&[0, 60_000, 30_000]), &opts)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("x.csv line 4, column \"t\": timestamp")));
    }

    #[test]
    fn keep_all_keeps_events() {
        let opts = LoadOptions {
            duplicates: Duplicates::KeepAll,
            ..LoadOptions::default()
        };
        let c = clean(Path::new("x.csv"), "t", rows(&[0, 0, 5, 9, 9, 9]), &opts).expect("cleans");
        assert_eq!(c.timestamps.len(), 6);
        assert_eq!(c.report.duplicates, 3);
    }

    #[test]
    fn too_short() {
        let opts = LoadOptions::default();
        assert!(matches!(
            clean(Path::new("x.csv"), "t", rows(&[5, 5]), &opts),
            Err(DataError::TooShort { distinct: 1, .. })
        ));
    }
}
