//! Malformed CSV inputs: every error names the file, the 1-based line and the column.
//! The table gives the input, the options and the exact message expected.

use std::path::{Path, PathBuf};

use aya_forecaster::data::{DataError, Duplicates, LoadOptions, Series, load_csv, load_csv_all};

/// Write `content` as `<dir>/<name>` and return the path.
fn file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write temp file");
    p
}

fn load(dir: &Path, content: &str, opts: &LoadOptions) -> Result<Series, DataError> {
    load_csv(&file(dir, "bad.csv", content), opts)
}

const OK_HEAD: &str = "timestamp,value\n2014-01-01 00:00:00,1\n";

struct Case {
    what: &'static str,
    content: String,
    opts: LoadOptions,
    /// Expected message with `{f}` standing for the file path.
    expected: &'static str,
}

fn case(what: &'static str, content: &str, expected: &'static str) -> Case {
    Case {
        what,
        content: content.to_string(),
        opts: LoadOptions::default(),
        expected,
    }
}

fn with(mut c: Case, opts: LoadOptions) -> Case {
    c.opts = opts;
    c
}

#[test]
fn malformed_inputs_name_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let strict = LoadOptions {
        duplicates: Duplicates::Reject,
        reject_out_of_order: true,
        ..LoadOptions::default()
    };
    let cases = vec![
        case(
            "empty file",
            "",
            "{f}: the file is empty (expected a header line such as `timestamp,value`)",
        ),
        case(
            "blank lines only",
            "\n\n  \n",
            "{f}: the file is empty (expected a header line such as `timestamp,value`)",
        ),
        case(
            "missing header",
            "2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n",
            "{f} line 1: missing header: the first line (`2014-01-01 00:00:00,1`) looks like data; \
             the first line must name the columns, e.g. `timestamp,value`",
        ),
        case(
            "header only",
            "timestamp,value\n",
            "{f}: no data rows after the header",
        ),
        with(
            case(
                "unknown value column",
                "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n",
                "{f} line 1: no column \"cpu\" (--column); the columns are: timestamp, value",
            ),
            LoadOptions {
                value_column: Some("cpu".into()),
                ..LoadOptions::default()
            },
        ),
        with(
            case(
                "unknown time column",
                "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n",
                "{f} line 1: no column \"when\" (--time-column); the columns are: timestamp, value",
            ),
            LoadOptions {
                time_column: Some("when".into()),
                ..LoadOptions::default()
            },
        ),
        case(
            "no time column",
            "a,value\nx,1\ny,2\n",
            "{f} line 1: no timestamp column: none of the columns (a, value) is named like one \
             (timestamp, time, ts, date, datetime...) and the first column does not hold timestamps; \
             name it with --time-column",
        ),
        case(
            "bad month",
            &format!("{OK_HEAD}2014-13-01 00:05:00,2\n"),
            "{f} line 3, column \"timestamp\": `2014-13-01 00:05:00`: month 13 is outside 1..=12",
        ),
        case(
            "unrecognised timestamp",
            &format!("{OK_HEAD}2014-01-01 00:05:00,2\nyesterday,3\n"),
            "{f} line 4, column \"timestamp\": `yesterday` is not a timestamp: expected \
             `YYYY-MM-DD HH:MM:SS[.fff]`, RFC 3339 (e.g. `2024-01-31T12:00:00Z`, \
             `2024-01-31T12:00:00.5+02:00`) or unix seconds/milliseconds",
        ),
        case(
            "empty timestamp",
            &format!("{OK_HEAD},3\n"),
            "{f} line 3, column \"timestamp\": empty timestamp",
        ),
        case(
            "NaN",
            &format!("{OK_HEAD}2014-01-01 00:05:00,2\n2014-01-01 00:10:00,NaN\n"),
            "{f} line 4, column \"value\": NaN is not allowed (`NaN`)",
        ),
        case(
            "inf",
            &format!("{OK_HEAD}2014-01-01 00:05:00,inf\n"),
            "{f} line 3, column \"value\": infinite value `inf` is not allowed",
        ),
        case(
            "negative",
            &format!("{OK_HEAD}2014-01-01 00:05:00,-3.5\n"),
            "{f} line 3, column \"value\": negative value -3.5 is not allowed (counts and rates \
             cannot be negative; use --allow-negative for signed data)",
        ),
        case(
            "empty value",
            &format!("{OK_HEAD}2014-01-01 00:05:00,\n"),
            "{f} line 3, column \"value\": empty value",
        ),
        case(
            "not a number",
            &format!("{OK_HEAD}2014-01-01 00:05:00,12abc\n"),
            "{f} line 3, column \"value\": `12abc` is not a number",
        ),
        case(
            "too many fields",
            &format!("{OK_HEAD}2014-01-01 00:05:00,2,7\n"),
            "{f} line 3: expected 2 fields as in the header (timestamp,value), found 3",
        ),
        case(
            "too few fields",
            &format!("{OK_HEAD}2014-01-01 00:05:00,2\n2014-01-01 00:10:00\n"),
            "{f} line 4: expected 2 fields as in the header (timestamp,value), found 1",
        ),
        case(
            "unterminated quote",
            &format!("{OK_HEAD}2014-01-01 00:05:00,\"2\n2014-01-01 00:10:00,3\n"),
            "{f} line 3: unterminated quoted field",
        ),
        case(
            "duplicate column name",
            "timestamp,value,value\n2014-01-01 00:00:00,1,2\n",
            "{f} line 1: column name \"value\" appears twice (columns 2 and 3)",
        ),
        case(
            "single row",
            OK_HEAD,
            "{f}: only 1 distinct timestamp(s); at least 2 are needed to detect the sampling interval",
        ),
        with(
            case(
                "duplicate timestamp (strict)",
                &format!("{OK_HEAD}2014-01-01 00:05:00,2\n2014-01-01 00:05:00,3\n"),
                "{f} line 4, column \"timestamp\": duplicate timestamp 2014-01-01T00:05:00Z (same as line 3)",
            ),
            strict.clone(),
        ),
        with(
            case(
                "out of order (strict)",
                &format!("{OK_HEAD}2014-01-01 00:10:00,2\n2014-01-01 00:05:00,3\n"),
                "{f} line 4, column \"timestamp\": timestamp 2014-01-01T00:05:00Z is earlier than \
                 the previous row's (line 3: 2014-01-01T00:10:00Z); rows must be in time order",
            ),
            strict.clone(),
        ),
        case(
            "line numbers survive blank lines and CRLF",
            "timestamp,value\r\n2014-01-01 00:00:00,1\r\n\r\n2014-01-01 00:05:00,2\r\n2014-01-01 00:10:00,nan\r\n",
            "{f} line 5, column \"value\": NaN is not allowed (`nan`)",
        ),
        case(
            "line numbers survive a quoted newline",
            "timestamp,host,value\n2014-01-01 00:00:00,\"a\nb\",1\n2014-01-01 00:05:00,\"a\nb\",-1\n",
            "{f} line 4, column \"value\": negative value -1 is not allowed (counts and rates \
             cannot be negative; use --allow-negative for signed data)",
        ),
        case(
            "ambiguous long form",
            "timestamp,backend,metric,value\n\
             2014-01-01 00:00:00,b1,cpu,1\n2014-01-01 00:00:00,b2,cpu,2\n\
             2014-01-01 00:00:00,b1,rps,3\n2014-01-01 00:00:00,b2,rps,4\n",
            "{f}: 4 series remain in this long-form file; choose one with --filter \
             (backend: b1, b2; metric: cpu, rps)",
        ),
        with(
            case(
                "filter narrows but not enough",
                "timestamp,backend,metric,value\n\
                 2014-01-01 00:00:00,b1,cpu,1\n2014-01-01 00:00:00,b2,cpu,2\n\
                 2014-01-01 00:00:00,b1,rps,3\n",
                "{f}: 2 series remain in this long-form file; choose one with --filter (backend: b1, b2)",
            ),
            LoadOptions {
                filters: vec![("metric".into(), "cpu".into())],
                ..LoadOptions::default()
            },
        ),
        with(
            case(
                "filter matches nothing",
                "timestamp,backend,value\n2014-01-01 00:00:00,b1,1\n2014-01-01 00:00:00,b2,2\n",
                "{f}: no row has backend=b9; values of column \"backend\" are: b1, b2",
            ),
            LoadOptions {
                filters: vec![("backend".into(), "b9".into())],
                ..LoadOptions::default()
            },
        ),
        with(
            case(
                "filter on unknown label",
                "timestamp,backend,value\n2014-01-01 00:00:00,b1,1\n",
                "{f} line 1: no column \"host\" (--filter); the columns are: timestamp, backend, value",
            ),
            LoadOptions {
                filters: vec![("host".into(), "a".into())],
                ..LoadOptions::default()
            },
        ),
        case(
            "wide form without --column",
            "time,cpu,mem\n2014-01-01 00:00:00,1,2\n2014-01-01 00:05:00,1,2\n",
            "{f} line 1: cannot tell which column holds the values: several numeric columns \
             (cpu, mem); pick one with --column",
        ),
        with(
            case(
                "bad value in the selected long-form rows only",
                "timestamp,backend,value\n2014-01-01 00:00:00,b1,oops\n2014-01-01 00:00:00,b2,1\n\
                 2014-01-01 00:05:00,b1,2\n2014-01-01 00:05:00,b2,-\n",
                "{f} line 5, column \"value\": `-` is not a number",
            ),
            LoadOptions {
                filters: vec![("backend".into(), "b2".into())],
                ..LoadOptions::default()
            },
        ),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let path = file(dir.path(), "bad.csv", &c.content);
        let expected = c.expected.replace("{f}", &path.display().to_string());
        match load_csv(&path, &c.opts) {
            Ok(s) => failures.push(format!(
                "{}: loaded {} rows, expected error\n  {expected}",
                c.what,
                s.len()
            )),
            Err(e) if e.to_string() != expected => failures.push(format!(
                "{}:\n  got      {e}\n  expected {expected}",
                c.what
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn lenient_mode_repairs_and_reports_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let content = "timestamp,value\n\
        2014-01-01 00:00:00,1\n\
        2014-01-01 00:05:00,2\n\
        2014-01-01 00:05:00,3\n\
        2014-01-01 00:20:00,5\n\
        2014-01-01 00:10:00,4\n";
    let s = load(dir.path(), content, &LoadOptions::default()).expect("repairs");
    let r = &s.report;
    assert_eq!(r.rows, 5);
    assert_eq!(
        (
            r.duplicates,
            r.duplicate_examples[0].line,
            r.duplicate_examples[0].other_line
        ),
        (1, 4, 3)
    );
    assert_eq!((r.out_of_order, r.out_of_order_examples[0].line), (1, 6));
    assert_eq!(
        s.values,
        vec![1.0, 3.0, 4.0, 5.0],
        "sorted, last duplicate kept"
    );
    assert_eq!(s.interval_ms, 300_000);
    assert_eq!(r.gaps.len(), 1);
    assert_eq!((r.gaps[0].missing, r.gaps[0].line), (1, 5));
    let text = r.to_string();
    assert!(
        text.contains("1 duplicate(s) (first at line 4, same time as line 3)"),
        "{text}"
    );
    assert!(text.contains("1 out of order (first at line 6)"), "{text}");
}

#[test]
fn negative_values_allowed_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LoadOptions {
        allow_negative: true,
        ..LoadOptions::default()
    };
    let s = load(
        dir.path(),
        &format!("{OK_HEAD}2014-01-01 00:05:00,-3.5\n"),
        &opts,
    )
    .expect("loads");
    assert_eq!(s.values, vec![1.0, -3.5]);
}

#[test]
fn the_three_forms_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (a) timestamp,value with unix seconds.
    let a = load(
        dir.path(),
        "ts,value\n1400000000,1\n1400000060,2\n1400000120,3\n",
        &LoadOptions::default(),
    )
    .expect("(a)");
    assert_eq!(
        a.timestamps,
        vec![1_400_000_000_000, 1_400_000_060_000, 1_400_000_120_000]
    );
    assert_eq!(a.interval_ms, 60_000);
    assert_eq!(a.name, "bad");
    // (b) long form with filters; numeric-looking label values are fine when filtered.
    let long = "timestamp,backend,metric,value\n\
        2024-01-01T00:00:00Z,b1,cpu,10\n2024-01-01T00:00:00Z,b2,cpu,20\n\
        2024-01-01T00:00:00Z,b1,rps,5\n2024-01-01T00:01:00Z,b1,cpu,11\n\
        2024-01-01T00:01:00Z,b2,cpu,21\n2024-01-01T00:01:00Z,b1,rps,6\n";
    let opts = LoadOptions {
        filters: vec![
            ("backend".into(), "b2".into()),
            ("metric".into(), "cpu".into()),
        ],
        ..LoadOptions::default()
    };
    let b = load(dir.path(), long, &opts).expect("(b)");
    assert_eq!(b.values, vec![20.0, 21.0]);
    assert_eq!(b.name, "bad{backend=b2,metric=cpu}");
    assert_eq!(b.report.filtered_out, 4);
    let all =
        load_csv_all(&file(dir.path(), "long.csv", long), &LoadOptions::default()).expect("all");
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "long{backend=b1,metric=cpu}",
            "long{backend=b2,metric=cpu}",
            "long{backend=b1,metric=rps}"
        ]
    );
    // (c) wide form, column chosen; epoch milliseconds; a non-numeric column is a label.
    let wide = "time,cpu,mem,host\n1700000000000,1.5,2,a\n1700000030000,1.25,3,a\n";
    let opts = LoadOptions {
        value_column: Some("mem".into()),
        ..LoadOptions::default()
    };
    let c = load(dir.path(), wide, &opts).expect("(c)");
    assert_eq!((c.values.clone(), c.interval_ms), (vec![2.0, 3.0], 30_000));
    assert_eq!(c.name, "bad:mem{host=a}");
}

#[test]
fn resampling_from_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let content = "timestamp,value\n\
        2024-01-01T00:00:10Z,2\n2024-01-01T00:00:40Z,4\n2024-01-01T00:03:05Z,12\n";
    let opts = LoadOptions {
        resample_ms: Some(60_000),
        ..LoadOptions::default()
    };
    let s = load(dir.path(), content, &opts).expect("resamples");
    assert_eq!(s.interval_ms, 60_000);
    assert_eq!(s.values, vec![3.0, 6.0, 9.0, 12.0]);
    let r = s.report.resampled.expect("resample report");
    assert_eq!((r.points, r.interpolated, r.merged), (4, 2, 1));
}
