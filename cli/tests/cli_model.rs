//! The `aya train | forecast | backtest` contract, exercised through the
//! `run_*` functions with temporary files (argument structs parsed by clap
//! exactly as the `aya` binary does).

use std::path::Path;

use aya_cli::failure::exit;
use aya_cli::forecaster::{
    BacktestArgs, ForecastArgs, TrainArgs, run_backtest, run_forecast, run_train,
};
use aya_forecaster::data::parse_timestamp;
use clap::{Args, FromArgMatches};

fn parse<A: Args + FromArgMatches>(argv: &[&str]) -> A {
    let cmd = A::augment_args(clap::Command::new("aya"));
    let m = cmd
        .try_get_matches_from(std::iter::once("aya").chain(argv.iter().copied()))
        .unwrap();
    A::from_arg_matches(&m).unwrap()
}

/// Three days of 5-minute data with a daily cycle, `timestamp,value`.
fn write_series(path: &Path, points: usize) {
    let mut s = String::from("timestamp,value\n");
    let start = 1_700_000_000i64 / 300 * 300;
    for i in 0..points {
        let ph = 2.0 * std::f64::consts::PI * (i % 288) as f64 / 288.0;
        let v = 50.0 + 20.0 * ph.sin() + ((i * 7919) % 13) as f64 * 0.3;
        let t = chrono::DateTime::from_timestamp(start + 300 * i as i64, 0).unwrap();
        s.push_str(&format!("{},{v}\n", t.format("%Y-%m-%d %H:%M:%S")));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn forecast_trains_on_the_input_and_writes_the_contract_columns() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("cpu.csv");
    let output = dir.path().join("f.csv");
    write_series(&input, 288 * 3);
    let args: ForecastArgs = parse(&[
        "--input",
        input.to_str().unwrap(),
        "--horizon",
        "24",
        "--output",
        output.to_str().unwrap(),
        "--level",
        "0.8",
    ]);
    run_forecast(&args).unwrap();
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("timestamp,yhat,lower,upper,level"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 24);
    let start = 1_700_000_000i64 / 300 * 300;
    let last_input = (start + 300 * (288 * 3 - 1)) * 1000;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), 5);
        assert_eq!(
            parse_timestamp(r[0]).unwrap(),
            last_input + 300_000 * (i as i64 + 1),
            "{}",
            r[0]
        );
        assert!(r[0].ends_with('Z'), "RFC 3339 UTC: {}", r[0]);
        let (y, lo, hi): (f64, f64, f64) = (
            r[1].parse().unwrap(),
            r[2].parse().unwrap(),
            r[3].parse().unwrap(),
        );
        assert!(lo <= y && y <= hi, "row {i}: {lo} {y} {hi}");
        assert_eq!(r[4], "0.8");
        // The daily cycle continues.
        let ph = 2.0 * std::f64::consts::PI * ((288 * 3 + i) % 288) as f64 / 288.0;
        assert!((y - (51.8 + 20.0 * ph.sin())).abs() < 5.0, "row {i}: {y}");
    }
}

#[test]
fn train_then_forecast_from_the_saved_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.csv");
    let model = dir.path().join("model.json");
    let output = dir.path().join("f.csv");
    write_series(&input, 288 * 3);
    let args: TrainArgs = parse(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        model.to_str().unwrap(),
    ]);
    run_train(&args).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(json["format"], "aya-forecaster-model");
    assert_eq!(json["format_version"], 1);
    assert_eq!(json["training"]["points"], 288 * 3);
    assert_eq!(json["training"]["interval_ms"], 300_000);
    assert!(
        json["chosen"].as_str().unwrap().contains("13-288"),
        "{}",
        json["chosen"]
    );
    assert!(
        json["selection"]["calibration"]["sigma"]
            .as_array()
            .unwrap()
            .len()
            >= 12
    );
    assert!(json["backtest"].as_array().is_some_and(|b| !b.is_empty()));

    let args: ForecastArgs = parse(&[
        "-i",
        input.to_str().unwrap(),
        "--horizon",
        "5",
        "-o",
        output.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
    ]);
    run_forecast(&args).unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 6);

    // A file that is not a model is bad input (exit 3) naming the file.
    let args: ForecastArgs = parse(&[
        "-i",
        input.to_str().unwrap(),
        "--horizon",
        "5",
        "-o",
        output.to_str().unwrap(),
        "--model",
        input.to_str().unwrap(),
    ]);
    let err = run_forecast(&args).unwrap_err();
    assert_eq!(err.exit_code(), exit::INPUT);
    assert!(err.to_string().contains("s.csv"), "{err}");
}

#[test]
fn short_series_degrade_gracefully_and_too_short_ones_fail_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("short.csv");
    let output = dir.path().join("f.csv");
    std::fs::write(&input, "timestamp,value\n2024-01-01T00:00:00Z,5\n2024-01-01T00:01:00Z,6\n2024-01-01T00:02:00Z,8\n2024-01-01T00:03:00Z,7\n").unwrap();
    let args: ForecastArgs = parse(&[
        "-i",
        input.to_str().unwrap(),
        "--horizon",
        "3",
        "-o",
        output.to_str().unwrap(),
    ]);
    run_forecast(&args).unwrap();
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(
        text.lines().nth(1).unwrap().split(',').next(),
        Some("2024-01-01T00:04:00Z")
    );

    std::fs::write(
        &input,
        "timestamp,value\n2024-01-01T00:00:00Z,5\n2024-01-01T00:01:00Z,6\n",
    )
    .unwrap();
    let err = run_forecast(&args).unwrap_err();
    assert_eq!(err.exit_code(), exit::INPUT);
    assert!(
        err.to_string().contains("short.csv") && err.to_string().contains("at least 3"),
        "{err}"
    );

    // Malformed CSV: the data layer's error, exit 3.
    std::fs::write(
        &input,
        "timestamp,value\n2024-01-01T00:00:00Z,5\nnot a time,6\n2024-01-01T00:02:00Z,7\n",
    )
    .unwrap();
    let err = run_forecast(&args).unwrap_err();
    assert_eq!(err.exit_code(), exit::INPUT, "{err}");

    // Bad flags are usage errors.
    let args: ForecastArgs = parse(&[
        "-i",
        input.to_str().unwrap(),
        "--horizon",
        "3",
        "-o",
        output.to_str().unwrap(),
        "--level",
        "1.5",
    ]);
    assert_eq!(run_forecast(&args).unwrap_err().exit_code(), exit::USAGE);
}

#[test]
fn backtest_scores_every_model_and_writes_its_forecasts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("s.csv");
    let out = dir.path().join("bt.csv");
    write_series(&input, 288 * 6);
    let args: BacktestArgs = parse(&[
        "--input",
        input.to_str().unwrap(),
        "--horizons",
        "1,12,season",
        "--origins",
        "3",
        "--forecasts-out",
        out.to_str().unwrap(),
        "--json",
    ]);
    run_backtest(&args).unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("model,origin,origin_timestamp,step,timestamp,actual,yhat"),
        "{header}"
    );
    // 3 origins x 288 steps for the automatic method alone.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("aya_auto,")).count(),
        3 * 288
    );
    assert!(text.lines().any(|l| l.starts_with("seasonal_naive,")));

    let args: BacktestArgs = parse(&[
        "--input",
        input.to_str().unwrap(),
        "--horizons",
        "1,banana",
        "--origins",
        "3",
    ]);
    assert_eq!(run_backtest(&args).unwrap_err().exit_code(), exit::USAGE);

    std::fs::write(&input, "timestamp,value\n2024-01-01T00:00:00Z,5\n2024-01-01T00:01:00Z,6\n2024-01-01T00:02:00Z,8\n2024-01-01T00:03:00Z,7\n").unwrap();
    let args: BacktestArgs = parse(&[
        "--input",
        input.to_str().unwrap(),
        "--horizons",
        "12",
        "--origins",
        "3",
    ]);
    let err = run_backtest(&args).unwrap_err();
    assert_eq!(err.exit_code(), exit::INPUT);
    assert!(
        err.to_string().contains("too short for a backtest"),
        "{err}"
    );
}

#[test]
fn prometheus_flags_make_a_range_query_and_csv_flags_are_refused_with_them() {
    let args: TrainArgs = parse(&[
        "--prometheus",
        "http://127.0.0.1:9090",
        "--query",
        "sum(rate(http_requests_total[5m]))",
        "--step",
        "5m",
        "-o",
        "m.json",
    ]);
    let now = 1_764_547_200_000 + 123_456;
    let q = args.source.range_query(now).unwrap().unwrap();
    // Default end: now on a whole step; default start: 7 days earlier.
    assert_eq!(q.end_ms, 1_764_547_200_000);
    assert_eq!(q.start_ms, q.end_ms - 7 * 86_400_000);
    assert_eq!(q.step_ms, 300_000);
    assert_eq!(args.source.name(), "http://127.0.0.1:9090");

    let args: TrainArgs = parse(&[
        "--prometheus",
        "http://p:9090",
        "--query",
        "up",
        "--start",
        "2025-12-01T00:00:00Z",
        "--end",
        "1764550800",
        "-o",
        "m.json",
    ]);
    let q = args.source.range_query(0).unwrap().unwrap();
    assert_eq!(
        (q.start_ms, q.end_ms, q.step_ms),
        (1_764_547_200_000, 1_764_550_800_000, 60_000)
    );
    for (bad, want) in [
        (vec!["--start", "yesterday"], "--start"),
        (vec!["--step", "0"], "--step"),
        (
            vec!["--start", "1764550800", "--end", "1764547200"],
            "not before",
        ),
    ] {
        let mut argv = vec![
            "--prometheus",
            "http://p:9090",
            "--query",
            "up",
            "-o",
            "m.json",
        ];
        argv.extend(bad.iter().copied());
        let args: TrainArgs = parse(&argv);
        let e = args.source.range_query(0).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains(want), "{bad:?}: {e}");
        let failure = run_train(&args).unwrap_err();
        assert_eq!(failure.exit_code(), exit::USAGE, "{bad:?}");
    }

    // clap refuses the CSV-only flags, a query without a server, and neither source.
    let refused = |argv: &[&str]| {
        let cmd = TrainArgs::augment_args(clap::Command::new("aya"));
        cmd.try_get_matches_from(std::iter::once("aya").chain(argv.iter().copied()))
            .is_err()
    };
    assert!(refused(&[
        "--prometheus",
        "http://p",
        "--query",
        "up",
        "--column",
        "x",
        "-o",
        "m"
    ]));
    assert!(refused(&[
        "--prometheus",
        "http://p",
        "--query",
        "up",
        "--input",
        "a.csv",
        "-o",
        "m"
    ]));
    assert!(refused(&["--prometheus", "http://p", "-o", "m"]));
    assert!(refused(&["--query", "up", "--input", "a.csv", "-o", "m"]));
    assert!(refused(&["-o", "m"]));
}
