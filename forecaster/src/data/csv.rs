//! Reading monitoring CSV exports into [`Series`].
//!
//! The file is read in three passes, each with a job:
//!
//! 1. a structural scan (quote-aware, byte level) finds the header and the 1-based
//!    line of every data record, and rejects records whose field count differs from
//!    the header's, naming the line. polars would either pad such a row with nulls
//!    or fail without a line number, and every later message needs line numbers;
//! 2. polars parses the CSV with every column as a string (no type inference, so a
//!    bad cell cannot turn a whole column into nulls or make the reader guess);
//! 3. our code picks the columns, applies the label filters and parses timestamps and
//!    values row by row, so any error names the file, line and column.
//!
//! Which columns mean what is decided from the header:
//! * time column: `--time-column`, else the first column named like a time
//!   (`timestamp`, `time`, `ts`, `date`, `datetime`, ...), else the first column if its
//!   first cell is a timestamp;
//! * value column: `--column`, else a column named `value`, else the only numeric
//!   column;
//! * label columns (long form): the columns named in filters, plus every other
//!   column holding some non-numeric text. Numeric columns other than the value
//!   column are other series of a wide file and are ignored.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::Path;

use polars::prelude::{CsvReadOptions, DataFrame, SerReader};

use super::error::DataError;
use super::quality::{self, Row};
use super::resample::resample_with;
use super::timestamp::parse_timestamp;
use super::{LoadOptions, Series};

/// Names recognised as the time column (compared case-insensitively), in order of preference.
const TIME_NAMES: &[&str] = &[
    "timestamp",
    "time",
    "ts",
    "datetime",
    "date_time",
    "date",
    "@timestamp",
    "_time",
    "time_stamp",
    "event_time",
    "period",
    "t",
];

/// How many distinct label values an error message lists.
const MAX_LISTED: usize = 20;

/// Load one series from a CSV file. See the module docs for how columns are chosen.
pub fn load_csv(path: &Path, opts: &LoadOptions) -> Result<Series, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_csv_bytes(path, &bytes, opts)
}

/// Load one series from CSV bytes; `path` is only used in messages and the series name.
pub fn load_csv_bytes(path: &Path, bytes: &[u8], opts: &LoadOptions) -> Result<Series, DataError> {
    let mut all = load_impl(path, bytes, opts, false)?;
    match all.pop() {
        Some(s) if all.is_empty() => Ok(s),
        // load_impl returns exactly one series when `all_series` is false.
        _ => Err(DataError::NoRows {
            path: path.to_path_buf(),
            filtered: !opts.filters.is_empty(),
        }),
    }
}

/// Load every series of a file: for a long-form file, one series per combination of
/// label values (in order of first appearance) that matches the filters; for the
/// other forms, the one series. Series names carry their labels, e.g.
/// `backends{backend=b1,metric=cpu}`.
pub fn load_csv_all(path: &Path, opts: &LoadOptions) -> Result<Vec<Series>, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_csv_all_bytes(path, &bytes, opts)
}

/// [`load_csv_all`] on CSV bytes; `path` is only used in messages and the series names.
pub fn load_csv_all_bytes(
    path: &Path,
    bytes: &[u8],
    opts: &LoadOptions,
) -> Result<Vec<Series>, DataError> {
    load_impl(path, bytes, opts, true)
}

/// The header and the line of each data record.
struct Layout {
    header: Vec<String>,
    lines: Vec<usize>,
    /// Byte range of every record, header included (without the line end).
    ranges: Vec<(usize, usize)>,
    /// True when blank lines were skipped (polars would read some of them as rows).
    had_blank: bool,
}

/// Quote-aware scan: header fields and the 1-based line of each data record. Blank
/// lines are skipped (and removed from what polars reads, so rows stay aligned).
fn scan(path: &Path, bytes: &[u8]) -> Result<Layout, DataError> {
    let malformed = |line: usize, message: String| DataError::Malformed {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut header: Option<Vec<String>> = None;
    let mut lines = Vec::new();
    let mut ranges = Vec::new();
    let mut had_blank = false;
    let mut line = 1usize;
    let mut rec_line = 1usize;
    let mut fields = 1usize;
    let mut blank = true;
    let mut in_quotes = false;
    let mut rec_start = 0usize;
    let mut i = 0usize;
    let n = bytes.len();

    let mut end_record = |start: usize,
                          end: usize,
                          rec_line: usize,
                          fields: usize,
                          blank: bool|
     -> Result<(), DataError> {
        if blank && fields == 1 {
            had_blank |= start < end || end < n;
            return Ok(());
        }
        ranges.push((start, end));
        match &header {
            None => header = Some(split_header(&bytes[start..end])),
            Some(h) if fields != h.len() => {
                return Err(malformed(
                    rec_line,
                    format!(
                        "expected {} fields as in the header ({}), found {fields}",
                        h.len(),
                        h.join(",")
                    ),
                ));
            }
            Some(_) => lines.push(rec_line),
        }
        Ok(())
    };

    while i < n {
        let b = bytes[i];
        if in_quotes {
            match b {
                b'"' if bytes.get(i + 1) == Some(&b'"') => i += 1,
                b'"' => in_quotes = false,
                b'\n' => line += 1,
                _ => {}
            }
        } else {
            match b {
                b'"' => {
                    in_quotes = true;
                    blank = false;
                }
                b',' => fields += 1,
                b'\n' => {
                    end_record(rec_start, i, rec_line, fields, blank)?;
                    line += 1;
                    rec_line = line;
                    rec_start = i + 1;
                    fields = 1;
                    blank = true;
                }
                b'\r' | b' ' | b'\t' => {}
                _ => blank = false,
            }
        }
        i += 1;
    }
    if in_quotes {
        return Err(malformed(rec_line, "unterminated quoted field".to_string()));
    }
    end_record(rec_start, n, rec_line, fields, blank)?;
    match header {
        Some(header) => Ok(Layout {
            header,
            lines,
            ranges,
            had_blank,
        }),
        None => Err(DataError::Empty {
            path: path.to_path_buf(),
        }),
    }
}

/// Split a header record into trimmed, unquoted names. Empty names become `column_N`.
fn split_header(rec: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(rec);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.trim().trim_end_matches('\r').trim();
            if s.is_empty() {
                format!("column_{}", i + 1)
            } else {
                s.to_string()
            }
        })
        .collect()
}

/// A cell that a number parser accepts (including `NaN`/`inf`, which are rejected later
/// with a precise message).
fn is_numeric(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok()
}

fn find_column(header: &[String], name: &str) -> Option<usize> {
    header
        .iter()
        .position(|h| h == name)
        .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(name)))
}

fn load_impl(
    path: &Path,
    bytes: &[u8],
    opts: &LoadOptions,
    all_series: bool,
) -> Result<Vec<Series>, DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let layout = scan(path, bytes)?;
    let header = &layout.header;
    check_header(path, header)?;
    if layout.lines.is_empty() {
        return Err(DataError::NoRows {
            path: path.to_path_buf(),
            filtered: false,
        });
    }
    let df = read_frame(path, bytes, &layout)?;
    let cols = string_columns(path, &df)?;
    let picked = pick_columns(path, header, &cols, opts)?;
    let table = Table {
        path,
        header,
        cols: &cols,
        n_rows: layout.lines.len(),
    };
    let selected = table.select_rows(&picked.filters)?;
    let (free, groups) = table.group_rows(&picked, selected, all_series)?;

    let stem = path
        .file_stem()
        .map_or_else(|| "series".into(), |s| s.to_string_lossy().into_owned());
    let value_name = &header[picked.value_col];
    let mut out = Vec::with_capacity(groups.len());
    for (key, rows_idx) in groups {
        let rows = parse_rows(
            path,
            header,
            &layout.lines,
            &cols,
            picked.time_col,
            picked.value_col,
            &rows_idx,
            opts,
        )?;
        let mut name = stem.clone();
        if !value_name.eq_ignore_ascii_case("value") {
            name.push(':');
            name.push_str(value_name);
        }
        let mut labels: Vec<String> = picked
            .filters
            .iter()
            .map(|(c, v)| format!("{}={v}", header[*c]))
            .collect();
        labels.extend(
            free.iter()
                .zip(&key)
                .map(|(c, v)| format!("{}={v}", header[*c])),
        );
        if !labels.is_empty() {
            name = format!("{name}{{{}}}", labels.join(","));
        }
        let cleaned = quality::clean(path, &header[picked.time_col], rows, opts)?;
        let mut series = Series {
            name,
            interval_ms: cleaned.report.detected_interval_ms,
            timestamps: cleaned.timestamps,
            values: cleaned.values,
            report: cleaned.report,
        };
        series.report.filtered_out = layout.lines.len() - series.report.rows;
        if let Some(r) = opts.resample_ms {
            series = resample_with(path, series, r, opts.aggregate)?;
        }
        out.push(series);
    }
    Ok(out)
}

/// A header made of data (the commonest mistake with headerless exports), or
/// a column name that appears twice.
fn check_header(path: &Path, header: &[String]) -> Result<(), DataError> {
    if header.iter().any(|h| {
        parse_timestamp(h).is_ok() || h.parse::<f64>().map(f64::is_finite).unwrap_or(false)
    }) {
        let first_line = header.join(",");
        let first_line = if first_line.len() > 80 {
            format!("{}...", first_line.chars().take(80).collect::<String>())
        } else {
            first_line
        };
        return Err(DataError::MissingHeader {
            path: path.to_path_buf(),
            first_line,
        });
    }
    // First position of each name: linear in the number of columns.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(header.len());
    for (i, h) in header.iter().enumerate() {
        if let Some(j) = first.get(h.as_str()) {
            return Err(DataError::Malformed {
                path: path.to_path_buf(),
                line: 1,
                message: format!(
                    "column name {h:?} appears twice (columns {} and {})",
                    j + 1,
                    i + 1
                ),
            });
        }
        first.insert(h, i);
    }
    Ok(())
}

/// Every column as strings (blank lines left out), checked against the scan.
fn read_frame(path: &Path, bytes: &[u8], layout: &Layout) -> Result<DataFrame, DataError> {
    let df = if layout.had_blank {
        let mut compact = Vec::with_capacity(bytes.len());
        for (a, b) in &layout.ranges {
            compact.extend_from_slice(&bytes[*a..*b]);
            compact.push(b'\n');
        }
        read_strings(path, &compact)?
    } else {
        read_strings(path, bytes)?
    };
    if df.height() != layout.lines.len() || df.width() != layout.header.len() {
        return Err(DataError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            message: format!(
                "CSV reader found {} rows x {} columns where the line scan found {} x {}",
                df.height(),
                df.width(),
                layout.lines.len(),
                layout.header.len()
            ),
        });
    }
    Ok(df)
}

/// The cells of every column of `df`.
fn string_columns<'a>(
    path: &Path,
    df: &'a DataFrame,
) -> Result<Vec<Vec<Option<&'a str>>>, DataError> {
    let mut cols: Vec<Vec<Option<&str>>> = Vec::with_capacity(df.width());
    for c in df.columns() {
        let ca = c.str().map_err(|source| DataError::Polars {
            path: path.to_path_buf(),
            source,
        })?;
        cols.push(ca.iter().collect());
    }
    Ok(cols)
}

/// Which columns mean what (see the module docs).
struct Picked<'o> {
    time_col: usize,
    value_col: usize,
    /// Label filters: column and wanted value.
    filters: Vec<(usize, &'o str)>,
    /// Filtered label columns plus any other non-numeric column.
    label_cols: Vec<usize>,
}

/// The time, value, filter and label columns, from the header and options.
fn pick_columns<'o>(
    path: &Path,
    header: &[String],
    cols: &[Vec<Option<&str>>],
    opts: &'o LoadOptions,
) -> Result<Picked<'o>, DataError> {
    let available = || header.to_vec();
    let unknown = |column: &str, why: &str| DataError::UnknownColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        why: why.to_string(),
        available: available(),
    };

    // Time column.
    let time_col = match &opts.time_column {
        Some(name) => find_column(header, name).ok_or_else(|| unknown(name, "--time-column"))?,
        None => TIME_NAMES
            .iter()
            .find_map(|n| header.iter().position(|h| h.eq_ignore_ascii_case(n)))
            .or_else(|| cols[0][0].filter(|s| parse_timestamp(s).is_ok()).map(|_| 0))
            .ok_or_else(|| DataError::NoTimeColumn {
                path: path.to_path_buf(),
                available: available(),
            })?,
    };

    // Filters name label columns.
    let mut filters: Vec<(usize, &str)> = Vec::with_capacity(opts.filters.len());
    for (k, v) in &opts.filters {
        let c = find_column(header, k).ok_or_else(|| unknown(k, "--filter"))?;
        if c == time_col {
            return Err(DataError::BadOption(format!(
                "--filter {k}={v}: {k:?} is the timestamp column, not a label"
            )));
        }
        filters.push((c, v.as_str()));
    }
    let column_is_numeric = |c: usize| {
        cols[c]
            .iter()
            .all(|v| v.is_none_or(|s| s.trim().is_empty() || is_numeric(s)))
    };

    // Value column.
    let value_col = match &opts.value_column {
        Some(name) => find_column(header, name).ok_or_else(|| unknown(name, "--column"))?,
        None => match find_column(header, "value") {
            Some(c) => c,
            None => {
                let candidates: Vec<usize> = (0..header.len())
                    .filter(|c| *c != time_col && !filters.iter().any(|(f, _)| f == c))
                    .filter(|c| column_is_numeric(*c))
                    .collect();
                match candidates.as_slice() {
                    [one] => *one,
                    _ => {
                        return Err(DataError::AmbiguousValueColumn {
                            path: path.to_path_buf(),
                            candidates: candidates.iter().map(|c| header[*c].clone()).collect(),
                        });
                    }
                }
            }
        },
    };
    if value_col == time_col {
        return Err(DataError::BadOption(format!(
            "column {:?} cannot be both the timestamp and the value column",
            header[value_col]
        )));
    }
    if let Some((c, _)) = filters.iter().find(|(c, _)| *c == value_col) {
        return Err(DataError::BadOption(format!(
            "--filter on {:?}: that is the value column, not a label",
            header[*c]
        )));
    }

    // Label columns: filtered ones plus any other non-numeric column.
    let label_cols: Vec<usize> = (0..header.len())
        .filter(|c| *c != time_col && *c != value_col)
        .filter(|c| filters.iter().any(|(f, _)| f == c) || !column_is_numeric(*c))
        .collect();
    Ok(Picked {
        time_col,
        value_col,
        filters,
        label_cols,
    })
}

/// Rows selected by label values: `(values of the free label columns, rows)`.
type Groups<'a> = Vec<(Vec<&'a str>, Vec<usize>)>;

/// The parsed cells of a file, for selecting and grouping rows.
struct Table<'a> {
    path: &'a Path,
    header: &'a [String],
    cols: &'a [Vec<Option<&'a str>>],
    n_rows: usize,
}

impl<'a> Table<'a> {
    fn cell(&self, c: usize, r: usize) -> &'a str {
        self.cols[c][r].map_or("", str::trim)
    }

    /// Rows selected by the filters; none is an error naming the filter
    /// whose value never occurs (with the values that do).
    fn select_rows(&self, filters: &[(usize, &str)]) -> Result<Vec<usize>, DataError> {
        let selected: Vec<usize> = (0..self.n_rows)
            .filter(|r| filters.iter().all(|(c, v)| self.cell(*c, *r) == *v))
            .collect();
        if !selected.is_empty() {
            return Ok(selected);
        }
        for (c, v) in filters {
            if !(0..self.n_rows).any(|r| self.cell(*c, r) == *v) {
                return Err(DataError::NoMatch {
                    path: self.path.to_path_buf(),
                    label: self.header[*c].clone(),
                    value: (*v).to_string(),
                    values: distinct(
                        &self.cols[*c],
                        (0..self.n_rows).collect::<Vec<_>>().as_slice(),
                    ),
                });
            }
        }
        Err(DataError::NoRows {
            path: self.path.to_path_buf(),
            filtered: true,
        })
    }

    /// Group the selected rows by the free (unfiltered) label columns, in
    /// order of first appearance; more than one group is an error unless
    /// `all_series`. Returns the free columns and the groups.
    fn group_rows(
        &self,
        picked: &Picked<'_>,
        selected: Vec<usize>,
        all_series: bool,
    ) -> Result<(Vec<usize>, Groups<'a>), DataError> {
        let free: Vec<usize> = picked
            .label_cols
            .iter()
            .copied()
            .filter(|c| !picked.filters.iter().any(|(f, _)| f == c))
            .collect();
        let mut groups: Groups<'a> = Vec::new();
        if free.is_empty() {
            groups.push((Vec::new(), selected));
        } else {
            let mut index: HashMap<Vec<&str>, usize> = HashMap::new();
            for r in selected {
                let key: Vec<&str> = free.iter().map(|c| self.cell(*c, r)).collect();
                let g = *index.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[g].1.push(r);
            }
        }
        if groups.len() > 1 && !all_series {
            let all_rows: Vec<usize> = groups.iter().flat_map(|g| g.1.iter().copied()).collect();
            let labels = free
                .iter()
                .map(|c| (self.header[*c].clone(), distinct(&self.cols[*c], &all_rows)))
                .filter(|(_, v)| v.len() > 1)
                .collect();
            return Err(DataError::AmbiguousSeries {
                path: self.path.to_path_buf(),
                count: groups.len(),
                labels,
            });
        }
        Ok((free, groups))
    }
}

/// Distinct trimmed values of `col` over `rows`, in order of first appearance, at most
/// [`MAX_LISTED`] (with a `...` marker when there are more).
fn distinct(col: &[Option<&str>], rows: &[usize]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in rows {
        let v = col.get(*r).copied().flatten().map_or("", str::trim);
        if seen.insert(v) {
            if out.len() == MAX_LISTED {
                out.push("...".to_string());
                break;
            }
            out.push(if v.is_empty() {
                "(empty)".to_string()
            } else {
                v.to_string()
            });
        }
    }
    out
}

/// Parse the timestamp and value of each selected row, validating as we go.
#[allow(clippy::too_many_arguments)]
fn parse_rows(
    path: &Path,
    header: &[String],
    lines: &[usize],
    cols: &[Vec<Option<&str>>],
    time_col: usize,
    value_col: usize,
    rows_idx: &[usize],
    opts: &LoadOptions,
) -> Result<Vec<Row>, DataError> {
    let field = |line: usize, c: usize, message: String| DataError::Field {
        path: path.to_path_buf(),
        line,
        column: header[c].clone(),
        message,
    };
    let mut rows = Vec::with_capacity(rows_idx.len());
    for &r in rows_idx {
        let line = lines[r];
        let t = cols[time_col][r].map_or("", str::trim);
        let ts = parse_timestamp(t).map_err(|e| field(line, time_col, e.to_string()))?;
        let v = cols[value_col][r].map_or("", str::trim);
        let value = parse_value(v, opts.allow_negative).map_err(|m| field(line, value_col, m))?;
        rows.push(Row { ts, value, line });
    }
    Ok(rows)
}

/// A value cell: finite, and non-negative unless allowed.
pub(crate) fn parse_value(v: &str, allow_negative: bool) -> Result<f64, String> {
    if v.is_empty() {
        return Err("empty value".to_string());
    }
    let x: f64 = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
    if x.is_nan() {
        return Err(format!("NaN is not allowed (`{v}`)"));
    }
    if x.is_infinite() {
        return Err(format!("infinite value `{v}` is not allowed"));
    }
    if x < 0.0 && !allow_negative {
        return Err(format!(
            "negative value {v} is not allowed (counts and rates cannot be negative; \
             use --allow-negative for signed data)"
        ));
    }
    Ok(x)
}

/// Read all columns as strings with polars.
fn read_strings(path: &Path, bytes: &[u8]) -> Result<DataFrame, DataError> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .with_raise_if_empty(false)
        .with_rechunk(true)
        .into_reader_with_file_handle(Cursor::new(bytes))
        .finish()
        .map_err(|source| DataError::Polars {
            path: path.to_path_buf(),
            source,
        })
}
