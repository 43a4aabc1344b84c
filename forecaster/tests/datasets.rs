//! The shared real traces load with the row counts, spans and intervals stated in
//! each folder's README, and the synthetic data is deterministic and loads back.
//!
//! The expected figures below are copied from `../shared/datasets/*/README.md`. If the
//! shared folder is absent (fresh clone without it), the real-data tests print a note
//! and return; the synthetic-data tests always run.

use std::path::{Path, PathBuf};

use aya_forecaster::data::{
    Duplicates, LoadOptions, datasets_dir, format_rfc3339, load_csv, load_csv_all, parse_timestamp,
};
use aya_forecaster::synth::{self, METRICS, SynthConfig};

/// (path under the datasets dir, rows, interval s, irregular steps, first, last) from the NAB
/// and WorldCup98 READMEs. "irregular steps" is the README's count of consecutive-row steps
/// that are not the nominal interval (0 where the README mentions none).
const REGULAR: &[(&str, usize, i64, usize, &str, &str)] = &[
    (
        "nab/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
        4032,
        300,
        0,
        "2014-02-14 14:30:00",
        "2014-02-28 14:25:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv",
        4032,
        300,
        0,
        "2014-02-14 14:30:00",
        "2014-02-28 14:25:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv",
        4032,
        300,
        0,
        "2014-04-02 14:25:00",
        "2014-04-16 14:20:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
        4032,
        300,
        2,
        "2014-04-10 00:04:00",
        "2014-04-24 00:09:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv",
        4032,
        300,
        0,
        "2014-04-02 14:29:00",
        "2014-04-16 14:24:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv",
        4032,
        300,
        0,
        "2014-02-14 14:27:00",
        "2014-02-28 14:22:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv",
        4730,
        300,
        13,
        "2014-03-01 17:34:00",
        "2014-03-18 03:39:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_disk_write_bytes_c0d644.csv",
        4032,
        300,
        0,
        "2014-04-02 14:25:00",
        "2014-04-16 14:20:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_network_in_257a54.csv",
        4032,
        300,
        2,
        "2014-04-10 00:04:00",
        "2014-04-24 00:09:00",
    ),
    (
        "nab/realAWSCloudwatch/ec2_network_in_5abac7.csv",
        4730,
        300,
        13,
        "2014-03-01 17:36:00",
        "2014-03-18 03:41:00",
    ),
    (
        "nab/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
        1243,
        300,
        0,
        "2013-10-09 16:25:00",
        "2013-10-13 23:55:00",
    ),
    (
        "nab/realAWSCloudwatch/elb_request_count_8c0756.csv",
        4032,
        300,
        8,
        "2014-04-10 00:04:00",
        "2014-04-24 00:39:00",
    ),
    (
        "nab/realAWSCloudwatch/grok_asg_anomaly.csv",
        4621,
        300,
        0,
        "2014-01-16 00:00:00",
        "2014-02-01 01:00:00",
    ),
    (
        "nab/realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv",
        4032,
        300,
        1,
        "2014-02-14 14:30:00",
        "2014-02-28 14:30:00",
    ),
    (
        "nab/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
        4032,
        300,
        0,
        "2014-04-10 00:02:00",
        "2014-04-23 23:57:00",
    ),
    (
        "nab/realKnownCause/ec2_request_latency_system_failure.csv",
        4032,
        300,
        14,
        "2014-03-07 03:41:00",
        "2014-03-21 03:41:00",
    ),
    (
        "nab/realKnownCause/cpu_utilization_asg_misconfiguration.csv",
        18050,
        300,
        0,
        "2014-05-14 01:14:00",
        "2014-07-15 17:19:00",
    ),
    (
        "nab/realKnownCause/nyc_taxi.csv",
        10320,
        1800,
        0,
        "2014-07-01 00:00:00",
        "2015-01-31 23:30:00",
    ),
    (
        "nab/realTweets/Twitter_volume_AAPL.csv",
        15902,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-23 02:47:53",
    ),
    (
        "nab/realTweets/Twitter_volume_AMZN.csv",
        15831,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 20:52:53",
    ),
    (
        "nab/realTweets/Twitter_volume_CRM.csv",
        15902,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-23 02:47:53",
    ),
    (
        "nab/realTweets/Twitter_volume_CVS.csv",
        15853,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 22:42:53",
    ),
    (
        "nab/realTweets/Twitter_volume_FB.csv",
        15833,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 21:02:53",
    ),
    (
        "nab/realTweets/Twitter_volume_GOOG.csv",
        15842,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 21:47:53",
    ),
    (
        "nab/realTweets/Twitter_volume_IBM.csv",
        15893,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-23 02:02:53",
    ),
    (
        "nab/realTweets/Twitter_volume_KO.csv",
        15851,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 22:32:53",
    ),
    (
        "nab/realTweets/Twitter_volume_PFE.csv",
        15858,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 23:07:53",
    ),
    (
        "nab/realTweets/Twitter_volume_UPS.csv",
        15866,
        300,
        0,
        "2015-02-26 21:42:53",
        "2015-04-22 23:47:53",
    ),
    (
        "worldcup98/worldcup98_requests_per_minute.csv",
        125_310,
        60,
        0,
        "1998-04-30T21:30:00Z",
        "1998-07-26T21:59:00Z",
    ),
];

/// (path, rows, first arrival, last arrival (both to 10 ms, as in the README),
/// ContextTokens min/median/max, GeneratedTokens min/median/max) from the Azure README.
type AzureRow = (
    &'static str,
    usize,
    &'static str,
    &'static str,
    [f64; 3],
    [f64; 3],
);
const AZURE: &[AzureRow] = &[
    (
        "azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv",
        8819,
        "2023-11-16 18:17:03.98",
        "2023-11-16 19:14:19.93",
        [3.0, 1469.0, 7437.0],
        [6.0, 13.0, 1899.0],
    ),
    (
        "azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv",
        19_366,
        "2023-11-16 18:15:46.68",
        "2023-11-16 19:14:08.40",
        [2.0, 1020.0, 14050.0],
        [7.0, 129.0, 1000.0],
    ),
];

fn shared_dir() -> Option<PathBuf> {
    let dir = datasets_dir();
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "note: {} does not exist; skipping the real-data checks",
            dir.display()
        );
        None
    }
}

fn csv_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            csv_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "csv") {
            out.push(p);
        }
    }
}

fn ms(s: &str) -> i64 {
    parse_timestamp(s).unwrap_or_else(|e| panic!("{e}"))
}

fn min_median_max(v: &[f64]) -> [f64; 3] {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    [s[0], s[s.len() / 2], s[s.len() - 1]]
}

#[test]
fn every_shared_csv_matches_its_readme() {
    let Some(dir) = shared_dir() else { return };
    let mut files = Vec::new();
    csv_files(&dir, &mut files);
    let mut problems = Vec::new();
    let mut seen = 0;
    for f in &files {
        let rel = f
            .strip_prefix(&dir)
            .expect("under dir")
            .to_string_lossy()
            .replace('\\', "/");
        if let Some(&(_, rows, interval_s, irregular, first, last)) =
            REGULAR.iter().find(|r| r.0 == rel)
        {
            seen += 1;
            let s = match load_csv(f, &LoadOptions::default()) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{rel}: {e}"));
                    continue;
                }
            };
            let r = &s.report;
            let got = (
                r.rows,
                s.len(),
                s.interval_ms,
                r.regular,
                r.irregular_steps,
                r.duplicates,
                r.out_of_order,
                s.timestamps[0],
                s.timestamps[s.len() - 1],
            );
            let want = (
                rows,
                rows,
                interval_s * 1000,
                true,
                irregular,
                0,
                0,
                ms(first),
                ms(last),
            );
            if got != want {
                problems.push(format!("{rel}: got {got:?}, README says {want:?}"));
            }
            if irregular == 0 && !r.gaps.is_empty() {
                problems.push(format!("{rel}: unexpected gaps {:?}", r.gaps));
            }
        } else if let Some(&(_, rows, first, last, ctx, generated)) =
            AZURE.iter().find(|r| r.0 == rel)
        {
            seen += 1;
            for (column, stats) in [("ContextTokens", ctx), ("GeneratedTokens", generated)] {
                let opts = LoadOptions {
                    value_column: Some(column.into()),
                    duplicates: Duplicates::KeepAll,
                    ..LoadOptions::default()
                };
                let s = match load_csv(f, &opts) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(format!("{rel}: {e}"));
                        continue;
                    }
                };
                let r = &s.report;
                // Per-request arrivals: irregular, every request kept, README span to 10 ms.
                let got = (
                    r.rows,
                    s.len(),
                    r.regular,
                    r.out_of_order,
                    s.timestamps[0] / 10,
                    s.timestamps[s.len() - 1] / 10,
                    min_median_max(&s.values),
                );
                let want = (rows, rows, false, 0, ms(first) / 10, ms(last) / 10, stats);
                if got != want {
                    problems.push(format!("{rel} {column}: got {got:?}, README says {want:?}"));
                }
                if !(s.interval_ms > 0 && s.interval_ms < 10_000) {
                    problems.push(format!("{rel}: odd median step {} ms", s.interval_ms));
                }
            }
        } else {
            problems.push(format!(
                "{rel}: CSV not in the expected table (update this test)"
            ));
        }
    }
    assert_eq!(seen, REGULAR.len() + AZURE.len(), "files found: {files:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn worldcup98_total_and_peak_match_the_readme() {
    let Some(dir) = shared_dir() else { return };
    let s = load_csv(
        &dir.join("worldcup98/worldcup98_requests_per_minute.csv"),
        &LoadOptions::default(),
    )
    .expect("loads");
    assert!(s.report.is_clean(), "{}", s.report);
    let total: f64 = s.values.iter().sum();
    assert_eq!(total, 1_352_804_107.0, "ITA total");
    let (imax, max) =
        s.values.iter().enumerate().fold(
            (0, f64::MIN),
            |acc, (i, v)| if *v > acc.1 { (i, *v) } else { acc },
        );
    assert_eq!(max, 229_426.0);
    assert_eq!(format_rfc3339(s.timestamps[imax]), "1998-07-07T21:41:00Z");
}

#[test]
fn azure_trace_needs_a_column_and_keeps_every_request() {
    let Some(dir) = shared_dir() else { return };
    let path = dir.join("azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv");
    let err = load_csv(&path, &LoadOptions::default()).expect_err("two numeric columns");
    assert!(
        err.to_string().ends_with(
            "line 1: cannot tell which column holds the values: several numeric columns \
             (ContextTokens, GeneratedTokens); pick one with --column"
        ),
        "{err}"
    );
    // Default duplicate handling keeps the last request of each millisecond and says so.
    let opts = LoadOptions {
        value_column: Some("ContextTokens".into()),
        ..LoadOptions::default()
    };
    let s = load_csv(&path, &opts).expect("loads");
    assert_eq!(s.report.rows, 8819);
    assert!(s.report.duplicates > 0);
    assert_eq!(s.len() + s.report.duplicates, 8819);
    // Resampled to 10 s it becomes a regular series.
    let opts = LoadOptions {
        value_column: Some("ContextTokens".into()),
        duplicates: Duplicates::KeepAll,
        resample_ms: Some(10_000),
        ..LoadOptions::default()
    };
    let s = load_csv(&path, &opts).expect("loads");
    assert_eq!(s.interval_ms, 10_000);
    assert!(s.timestamps.windows(2).all(|w| w[1] - w[0] == 10_000));
}

fn synth_config() -> SynthConfig {
    SynthConfig {
        seed: 7,
        days: 8,
        interval_secs: 300,
        ..SynthConfig::default()
    }
}

#[test]
fn synth_files_are_byte_identical_for_a_seed() {
    let (a, b, c) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let cfg = synth_config();
    synth::generate(&cfg)
        .expect("valid")
        .write(a.path())
        .expect("write a");
    synth::generate(&cfg)
        .expect("valid")
        .write(b.path())
        .expect("write b");
    synth::generate(&SynthConfig { seed: 8, ..cfg })
        .expect("valid")
        .write(c.path())
        .expect("write c");
    for name in ["traffic.csv", "backends.csv", "synth.json"] {
        let read = |d: &Path| std::fs::read(d.join(name)).expect("read back");
        assert_eq!(
            read(a.path()),
            read(b.path()),
            "{name} differs for the same seed"
        );
        if name != "synth.json" {
            assert_ne!(
                read(a.path()),
                read(c.path()),
                "{name} same for another seed"
            );
        }
    }
}

#[test]
fn synth_files_load_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = synth::generate(&synth_config()).expect("valid");
    data.write(dir.path()).expect("write");
    let traffic =
        load_csv(&dir.path().join("traffic.csv"), &LoadOptions::default()).expect("traffic");
    assert_eq!(traffic.timestamps, data.timestamps);
    assert_eq!(traffic.values, data.traffic);
    assert_eq!(traffic.interval_ms, 300_000);
    assert!(traffic.report.is_clean());

    let backends = dir.path().join("backends.csv");
    let all = load_csv_all(&backends, &LoadOptions::default()).expect("long form");
    assert_eq!(all.len(), data.backends.len() * METRICS.len());
    for b in &data.backends {
        for m in METRICS {
            let opts = LoadOptions {
                filters: vec![
                    ("backend".into(), b.name.clone()),
                    ("metric".into(), m.into()),
                ],
                ..LoadOptions::default()
            };
            let s = load_csv(&backends, &opts).expect("one series");
            assert_eq!(Some(s.values.as_slice()), b.metric(m), "{} {m}", b.name);
            assert_eq!(s.timestamps, data.timestamps);
            let same = data.metric_series(&b.name, m).expect("exists");
            assert_eq!(s.name, same.name);
        }
    }
}
