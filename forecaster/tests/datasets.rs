//! The shared real traces load with the row counts, spans and intervals stated in
//! each folder's README, and the synthetic data is deterministic and loads back.
//!
//! The expected figures below are copied from `../shared/datasets/*/README.md`. If the
//! shared folder is absent (fresh clone without it), the real-data tests print a note
//! and return; the synthetic-data tests always run.

use std::path::{Path, PathBuf};

use aya_forecaster::data::catalog::{check_file, convert_worldcup98, csv_files};
use aya_forecaster::data::{
    Aggregate, Duplicates, LoadOptions, datasets_dir, format_rfc3339, load_csv, load_csv_all,
    parse_timestamp,
};
use aya_forecaster::synth::{self, METRICS, SynthConfig};

/// (path under the datasets dir, rows, interval s, irregular steps, first, last) from the NAB
/// and WorldCup98 READMEs. "irregular steps" is the README's count of consecutive-row steps
/// that are not the nominal interval (0 where the README mentions none); zero steps between
/// rows with the same timestamp count among them.
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
        "nab/artificialNoAnomaly/art_daily_no_noise.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialNoAnomaly/art_daily_perfect_square_wave.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialNoAnomaly/art_daily_small_noise.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialNoAnomaly/art_flatline.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialNoAnomaly/art_noisy.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialWithAnomaly/art_daily_flatmiddle.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialWithAnomaly/art_daily_jumpsdown.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialWithAnomaly/art_daily_jumpsup.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialWithAnomaly/art_daily_nojump.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialWithAnomaly/art_increase_spike_density.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/artificialWithAnomaly/art_load_balancer_spikes.csv",
        4032,
        300,
        0,
        "2014-04-01 00:00:00",
        "2014-04-14 23:55:00",
    ),
    (
        "nab/realAdExchange/exchange-2_cpc_results.csv",
        1624,
        3600,
        6,
        "2011-07-01 00:00:01",
        "2011-09-07 15:00:01",
    ),
    (
        "nab/realAdExchange/exchange-2_cpm_results.csv",
        1624,
        3600,
        6,
        "2011-07-01 00:00:01",
        "2011-09-07 15:00:01",
    ),
    (
        "nab/realAdExchange/exchange-3_cpc_results.csv",
        1538,
        3600,
        64,
        "2011-07-01 00:15:01",
        "2011-09-07 14:15:01",
    ),
    (
        "nab/realAdExchange/exchange-3_cpm_results.csv",
        1538,
        3600,
        64,
        "2011-07-01 00:15:01",
        "2011-09-07 14:15:01",
    ),
    (
        "nab/realAdExchange/exchange-4_cpc_results.csv",
        1643,
        3600,
        4,
        "2011-07-01 00:15:01",
        "2011-09-07 14:15:01",
    ),
    (
        "nab/realAdExchange/exchange-4_cpm_results.csv",
        1643,
        3600,
        4,
        "2011-07-01 00:15:01",
        "2011-09-07 14:15:01",
    ),
    (
        "nab/realKnownCause/ambient_temperature_system_failure.csv",
        7267,
        3600,
        10,
        "2013-07-04 00:00:00",
        "2014-05-28 15:00:00",
    ),
    (
        "nab/realKnownCause/machine_temperature_system_failure.csv",
        22695,
        300,
        1,
        "2013-12-02 21:15:00",
        "2014-02-19 15:25:00",
    ),
    (
        "nab/realKnownCause/rogue_agent_key_hold.csv",
        1882,
        300,
        91,
        "2014-07-06 20:10:00",
        "2014-07-25 08:55:00",
    ),
    (
        "nab/realKnownCause/rogue_agent_key_updown.csv",
        5315,
        300,
        10,
        "2014-07-06 20:10:00",
        "2014-07-25 08:55:00",
    ),
    (
        "nab/realTraffic/TravelTime_387.csv",
        2500,
        600,
        909,
        "2015-07-10 14:24:00",
        "2015-09-17 17:10:00",
    ),
    (
        "nab/realTraffic/TravelTime_451.csv",
        2162,
        600,
        1372,
        "2015-07-28 11:56:00",
        "2015-09-17 17:09:00",
    ),
    (
        "nab/realTraffic/occupancy_6005.csv",
        2380,
        300,
        625,
        "2015-09-01 13:45:00",
        "2015-09-17 16:24:00",
    ),
    (
        "nab/realTraffic/occupancy_t4013.csv",
        2500,
        300,
        590,
        "2015-09-01 11:30:00",
        "2015-09-17 16:24:00",
    ),
    (
        "nab/realTraffic/speed_6005.csv",
        2500,
        300,
        677,
        "2015-08-31 18:22:00",
        "2015-09-17 16:24:00",
    ),
    (
        "nab/realTraffic/speed_7578.csv",
        1127,
        300,
        391,
        "2015-09-08 11:39:00",
        "2015-09-17 14:05:00",
    ),
    (
        "nab/realTraffic/speed_t4013.csv",
        2495,
        300,
        591,
        "2015-09-01 11:25:00",
        "2015-09-17 16:19:00",
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

/// Files with repeated timestamps (found by inspecting the data, not stated in the READMEs):
/// (path, duplicates, out-of-order rows, first repeated timestamp). Loading sorts the rows,
/// keeps the last of each repeated timestamp and counts the rest as duplicates.
/// - Three AWS exports have 12 rows stamped `2014-03-09 03:00:00`, the night US daylight
///   saving time started, so the exporter wrote local time: 11 duplicates, then an
///   11-sample gap where the hour was squeezed.
/// - Two ad-exchange series repeat `2011-08-24 12:00:01`, two freeway sensors
///   `2015-09-10 05:33:00`: one duplicate each.
/// - `machine_temperature_system_failure` repeats the hour 02:00–02:55 of 2014-01-07: the
///   file steps back once (the README's one irregular step) and then replays 12 rows.
const DUPLICATES: &[(&str, usize, usize, &str)] = &[
    (
        "nab/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv",
        11,
        0,
        "2014-03-09T03:00:00Z",
    ),
    (
        "nab/realAWSCloudwatch/ec2_network_in_5abac7.csv",
        11,
        0,
        "2014-03-09T03:00:00Z",
    ),
    (
        "nab/realKnownCause/ec2_request_latency_system_failure.csv",
        11,
        0,
        "2014-03-09T03:00:00Z",
    ),
    (
        "nab/realAdExchange/exchange-2_cpc_results.csv",
        1,
        0,
        "2011-08-24T12:00:01Z",
    ),
    (
        "nab/realAdExchange/exchange-2_cpm_results.csv",
        1,
        0,
        "2011-08-24T12:00:01Z",
    ),
    (
        "nab/realTraffic/occupancy_t4013.csv",
        1,
        0,
        "2015-09-10T05:33:00Z",
    ),
    (
        "nab/realTraffic/speed_t4013.csv",
        1,
        0,
        "2015-09-10T05:33:00Z",
    ),
    (
        "nab/realKnownCause/machine_temperature_system_failure.csv",
        12,
        1,
        "2014-01-07T02:00:00Z",
    ),
];

/// Signed series: NAB's artificial "flat middle" series dips below zero, so it loads with
/// `allow_negative` (`--allow-negative` on the command line).
const SIGNED: &[&str] = &["nab/artificialWithAnomaly/art_daily_flatmiddle.csv"];

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
    csv_files(&dir, &mut files).expect("list the datasets dir");
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
            let opts = LoadOptions {
                allow_negative: SIGNED.contains(&rel.as_str()),
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
            let (dups, out_of_order, first_dup) = DUPLICATES
                .iter()
                .find(|d| d.0 == rel)
                .map_or((0, 0, ""), |d| (d.1, d.2, d.3));
            let got = (
                r.rows,
                s.len(),
                s.interval_ms,
                r.regular,
                r.irregular_steps + r.duplicates,
                r.duplicates,
                r.out_of_order,
                s.timestamps[0],
                s.timestamps[s.len() - 1],
            );
            // The README counts steps in file order; a backward step is one irregular step
            // there, while the loader sorts first and sees each replayed row as a duplicate.
            let want = (
                rows,
                rows - dups,
                interval_s * 1000,
                true,
                irregular - out_of_order + if out_of_order > 0 { dups } else { 0 },
                dups,
                out_of_order,
                ms(first),
                ms(last),
            );
            if dups > 0 {
                let ex = r.duplicate_examples.first().map(|d| format_rfc3339(d.ts));
                if ex.as_deref() != Some(first_dup) || (dups == 11 && r.missing_points < 11) {
                    problems.push(format!(
                        "{rel}: expected the duplicates at {first_dup}, got {r}"
                    ));
                }
            }
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
                // The README rounds the span to 10 ms; we truncate 100 ns digits to ms.
                let near = |a: i64, b: &str| (a - ms(b)).abs() <= 10;
                let got = (
                    r.rows,
                    s.len(),
                    r.regular,
                    r.out_of_order,
                    near(s.timestamps[0], first),
                    near(s.timestamps[s.len() - 1], last),
                    min_median_max(&s.values),
                );
                let want = (rows, rows, false, 0, true, true, stats);
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
    // Requests per minute: every request counted once.
    let opts = LoadOptions {
        value_column: Some("ContextTokens".into()),
        duplicates: Duplicates::KeepAll,
        resample_ms: Some(60_000),
        aggregate: Aggregate::Count,
        ..LoadOptions::default()
    };
    let per_minute = load_csv(&path, &opts).expect("loads");
    assert_eq!(per_minute.values.iter().sum::<f64>(), 8819.0);
    assert_eq!(per_minute.len(), 58, "18:17 to 19:14 inclusive");
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

/// The minutes that the shared WorldCup98 copy inserted with value 0 (its README).
const WC_INSERTED: &[&str] = &[
    "1998-05-08T03:22:00Z",
    "1998-05-17T06:09:00Z",
    "1998-05-17T06:19:00Z",
    "1998-05-17T06:20:00Z",
    "1998-05-17T06:25:00Z",
    "1998-05-17T09:43:00Z",
    "1998-05-17T09:44:00Z",
    "1998-05-17T09:45:00Z",
    "1998-05-17T09:47:00Z",
    "1998-05-18T11:03:00Z",
];

/// `aya datasets fetch` converts the GitHub source (`period,count`, naive, ten minutes
/// absent) into the shared copy. Rebuild the source from the shared copy and check that
/// the conversion gives the shared file back byte for byte.
/// The GitHub source of the WorldCup98 series, rebuilt from the shared copy: header
/// `period,count`, naive timestamps, the ten inserted zero minutes removed.
fn worldcup98_source(shared: &Path) -> String {
    let s = load_csv(shared, &LoadOptions::default()).expect("loads");
    let drop: Vec<i64> = WC_INSERTED.iter().map(|t| ms(t)).collect();
    let mut source = String::from("period,count\n");
    for (t, v) in s.timestamps.iter().zip(&s.values) {
        if drop.contains(t) {
            assert_eq!(*v, 0.0, "inserted minutes are zeros");
            continue;
        }
        // `1998-04-30T21:30:00Z` -> `1998-04-30 21:30:00`
        let iso = format_rfc3339(*t);
        source.push_str(&format!("{} {},{}\n", &iso[..10], &iso[11..19], v));
    }
    source
}

/// `aya datasets fetch` converts the GitHub source (`period,count`, naive, ten minutes
/// absent) into the shared copy. Rebuild the source from the shared copy and check that
/// the conversion gives the shared file back byte for byte.
#[test]
fn worldcup98_conversion_reproduces_the_shared_copy() {
    let Some(dir) = shared_dir() else { return };
    let shared = dir.join("worldcup98/worldcup98_requests_per_minute.csv");
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("invocation_count.csv");
    std::fs::write(&src, worldcup98_source(&shared)).expect("write source");
    let raw = load_csv(&src, &LoadOptions::default()).expect("source loads");
    assert_eq!(raw.report.gaps.len(), 7, "10 missing minutes in 7 gaps");
    assert_eq!(raw.report.missing_points, 10);
    let dst = tmp.path().join("out.csv");
    let converted = convert_worldcup98(&src, &dst).expect("converts");
    assert_eq!(converted.len(), 125_310);
    assert_eq!(
        std::fs::read(&dst).expect("read converted"),
        std::fs::read(&shared).expect("read shared")
    );
}

/// A stand-in for curl that serves the pinned URLs from the shared folder, so that
/// `datasets/fetch.sh` can be exercised offline (URL layout, checksums, caching).
const FAKE_CURL: &str = r#"#!/usr/bin/env bash
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --output) out="$2"; shift 2;;
    --retry) shift 2;;
    --*) shift;;
    *) url="$1"; shift;;
  esac
done
echo "$url" >> "$FAKE_LOG"
case "$url" in
  https://raw.githubusercontent.com/numenta/NAB/ea702d75cc2258d9d7dd35ca8e5e2539d71f3140/data/*) src="$SHARED/nab/${url#*/data/}";;
  https://raw.githubusercontent.com/numenta/NAB/ea702d75cc2258d9d7dd35ca8e5e2539d71f3140/LICENSE.txt) src="$SHARED/nab/LICENSE.txt";;
  https://raw.githubusercontent.com/numenta/NAB/ea702d75cc2258d9d7dd35ca8e5e2539d71f3140/labels/combined_windows.json) src="$SHARED/nab/labels/combined_windows.json";;
  https://raw.githubusercontent.com/Azure/AzurePublicDataset/b469a113cedca53ddc3bdea71a143dc4b7d8700c/data/*) src="$SHARED/azure_llm_inference_2023/${url##*/}";;
  https://raw.githubusercontent.com/Azure/AzurePublicDataset/b469a113cedca53ddc3bdea71a143dc4b7d8700c/LICENSE) src="$SHARED/azure_llm_inference_2023/README.md";;
  https://raw.githubusercontent.com/nimamahmoudi/worldcup98-dataset/82460213f0d5a86fa57b6d4b0b5f260e606e713b/invocation_count.csv) src="$WC_SOURCE";;
  *) echo "curl: (22) The requested URL returned error: 404 $url" >&2; exit 22;;
esac
cp "$src" "$out" || exit 23
if [ -n "${FAKE_CORRUPT:-}" ]; then printf x >> "$out"; fi
"#;

#[test]
fn fetch_script_downloads_verifies_and_caches_offline() {
    let Some(dir) = shared_dir() else { return };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/fetch.sh");
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let curl = bin.join("curl");
    std::fs::write(&curl, FAKE_CURL).expect("write fake curl");
    let chmod = std::process::Command::new("chmod")
        .arg("+x")
        .arg(&curl)
        .status();
    if !chmod.is_ok_and(|s| s.success()) {
        println!("note: cannot chmod; skipping the fetch.sh check");
        return;
    }
    let wc = tmp.path().join("invocation_count.csv");
    std::fs::write(
        &wc,
        worldcup98_source(&dir.join("worldcup98/worldcup98_requests_per_minute.csv")),
    )
    .expect("write source");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tmp.path().join("out");
    let log = tmp.path().join("urls.log");
    let run = |corrupt: bool| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg(&script)
            .arg(&out)
            .env("PATH", &path)
            .env("SHARED", &dir)
            .env("WC_SOURCE", &wc)
            .env("FAKE_LOG", &log);
        if corrupt {
            cmd.env("FAKE_CORRUPT", "1");
        }
        cmd.output().expect("run bash")
    };
    let first = run(false);
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(first.status.success(), "fetch.sh failed: {stderr}");
    let urls = std::fs::read_to_string(&log).expect("log");
    assert_eq!(urls.lines().count(), 62, "{urls}");
    for (rel, ..) in REGULAR.iter().filter(|r| r.0.starts_with("nab/")) {
        assert_eq!(
            std::fs::read(out.join(rel)).expect("fetched"),
            std::fs::read(dir.join(rel)).expect("shared"),
            "{rel}"
        );
    }
    for (rel, ..) in AZURE {
        assert!(out.join(rel).is_file(), "{rel}");
    }
    // Second run: checksummed files are cached, only the unchecked ones are fetched again.
    let second = run(false);
    assert!(second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(stdout.matches("ok (cached)").count(), 58, "{stdout}");
    // A corrupted download is rejected and the script fails.
    std::fs::remove_file(out.join(AZURE[0].0)).expect("remove");
    let third = run(true);
    assert!(!third.status.success());
    let stderr = String::from_utf8_lossy(&third.stderr).into_owned();
    assert!(
        stderr.contains("CHECKSUM     azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv"),
        "{stderr}"
    );
    assert!(!out.join(AZURE[0].0).exists(), "corrupt file not kept");
}

#[test]
fn check_loads_every_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    synth::generate(&synth_config())
        .expect("valid")
        .write(dir.path())
        .expect("write");
    std::fs::write(
        dir.path().join("trace.csv"),
        "TIMESTAMP,ContextTokens,GeneratedTokens\n\
         2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n\
         2023-11-16 18:17:04.0319600,100,8\n",
    )
    .expect("write trace");
    let mut files = Vec::new();
    csv_files(dir.path(), &mut files).expect("list");
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, vec!["backends.csv", "trace.csv", "traffic.csv"]);
    let backends = check_file(&files[0]).expect("long form");
    assert_eq!(backends.len(), 4 * METRICS.len());
    let trace = check_file(&files[1]).expect("first numeric column");
    assert_eq!(trace.len(), 1);
    assert_eq!(trace[0].name, "trace:ContextTokens");
    assert_eq!((trace[0].report.rows, trace[0].report.duplicates), (3, 1));
    assert_eq!(check_file(&files[2]).expect("traffic").len(), 1);
}

/// The examples in `datasets/schemas/` (documented in `datasets/README.md`) load as described.
#[test]
fn schema_examples_load_as_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/schemas");
    let a = load_csv(&dir.join("timestamp_value.csv"), &LoadOptions::default()).expect("(a)");
    assert_eq!(
        (a.len(), a.interval_ms, a.report.missing_points),
        (5, 300_000, 1)
    );

    let opts = LoadOptions {
        filters: vec![
            ("backend".into(), "b1".into()),
            ("metric".into(), "cpu".into()),
        ],
        ..LoadOptions::default()
    };
    let b = load_csv(&dir.join("long_form.csv"), &opts).expect("(b)");
    assert_eq!(
        (b.values.clone(), b.interval_ms),
        (vec![41.5, 43.0, 44.75], 60_000)
    );
    assert_eq!(
        load_csv_all(&dir.join("long_form.csv"), &LoadOptions::default())
            .map(|v| v.len())
            .ok(),
        Some(4)
    );

    let opts = LoadOptions {
        value_column: Some("rps".into()),
        ..LoadOptions::default()
    };
    let c = load_csv(&dir.join("wide_form.csv"), &opts).expect("(c)");
    assert_eq!(
        (c.values.clone(), c.interval_ms),
        (vec![120.5, 122.0, 118.25, 131.0], 15_000)
    );
    assert_eq!(c.timestamps[0], 1_704_067_200_000);

    let opts = LoadOptions {
        value_column: Some("ContextTokens".into()),
        duplicates: Duplicates::KeepAll,
        ..LoadOptions::default()
    };
    let d = load_csv(&dir.join("request_trace.csv"), &opts).expect("trace");
    assert_eq!((d.len(), d.report.duplicates), (4, 1));
    assert_eq!(
        d.timestamps[1], d.timestamps[2],
        "both requests of one instant kept"
    );
}
