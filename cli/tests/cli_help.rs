//! The `aya` binary lists every user job in its help and uses the documented
//! exit codes for usage errors.

use std::process::Command;

fn aya(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(args)
        .output()
        .expect("the aya binary runs")
}

/// Every user job `aya` has.
const JOBS: [&str; 11] = [
    "demo",
    "serve",
    "train",
    "forecast",
    "backtest",
    "sim",
    "league",
    "datasets",
    "anomalies",
    "store",
    "bench",
];

#[test]
fn help_lists_every_job() {
    let out = aya(&["--help"]);
    assert!(out.status.success(), "aya --help failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for job in JOBS {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(job)),
            "`aya --help` does not list `{job}`:\n{text}"
        );
    }
    assert!(
        text.contains("Exit codes"),
        "help explains exit codes:\n{text}"
    );
}

#[test]
fn every_job_has_its_own_help() {
    for job in JOBS {
        let out = aya(&[job, "--help"]);
        assert!(out.status.success(), "aya {job} --help failed: {out:?}");
        assert!(!out.stdout.is_empty(), "aya {job} --help printed nothing");
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = aya(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
