//! `aya datasets synth` and `aya datasets check` through the entry point `main`
//! calls (the data layer itself is tested in `forecaster/tests/datasets.rs`).

use std::path::PathBuf;

use aya_cli::forecaster::{
    CheckArgs, DatasetsArgs, DatasetsCommand, SplitArg, SynthArgs, run_datasets,
};
use aya_forecaster::data::{LoadOptions, load_csv};

/// The `aya datasets synth` and `check` entry points, called as `main` calls them.
#[test]
fn cli_synth_then_check() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("synth");
    let synth = DatasetsArgs {
        command: DatasetsCommand::Synth(SynthArgs {
            output: out.clone(),
            seed: 3,
            days: 2,
            interval: 300,
            base_rps: 50.0,
            split: SplitArg::Capacity,
        }),
    };
    run_datasets(&synth).expect("synth runs");
    let traffic = load_csv(&out.join("traffic.csv"), &LoadOptions::default()).expect("traffic");
    assert_eq!((traffic.len(), traffic.interval_ms), (576, 300_000));
    let check = |dir: PathBuf| DatasetsArgs {
        command: DatasetsCommand::Check(CheckArgs { dir: Some(dir) }),
    };
    run_datasets(&check(out.clone())).expect("check passes on synthetic data");
    std::fs::write(
        out.join("broken.csv"),
        "timestamp,value\n2024-01-01T00:00:00Z,NaN\n",
    )
    .expect("write");
    let err = run_datasets(&check(out.clone())).expect_err("a broken file fails the check");
    assert_eq!(err.exit_code(), 3);
    assert_eq!(err.to_string(), "1 of 3 file(s) could not be loaded");
    let bad_synth = DatasetsArgs {
        command: DatasetsCommand::Synth(SynthArgs {
            output: out,
            seed: 3,
            days: 0,
            interval: 300,
            base_rps: 50.0,
            split: SplitArg::Equal,
        }),
    };
    assert_eq!(run_datasets(&bad_synth).expect_err("0 days").exit_code(), 2);
}
