//! `aya demo --quick` end to end through the real binary: it prints the
//! scoreboard, writes the report and its companions, streams metrics into the
//! live controller over gRPC and sees published weights, and the scoreboard is
//! identical for the same seed and different for another seed.

use std::path::Path;
use std::process::{Command, Output};

fn demo(seed: u64, out: &Path) -> std::thread::JoinHandle<Output> {
    let out = out.to_path_buf();
    std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_aya"))
            .args([
                "demo",
                "--quick",
                "--quiet",
                "--threads",
                "1",
                "--seed",
                &seed.to_string(),
                "--output",
            ])
            .arg(&out)
            .output()
            .expect("aya binary runs")
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_ok(o: &Output) {
    assert!(
        o.status.success(),
        "aya demo failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn quick_demo_is_complete_and_deterministic_by_seed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let ja = demo(7, &a);
    let jb = demo(7, &b);
    let oa = ja.join().expect("thread");
    let ob = jb.join().expect("thread");
    check_ok(&oa);
    check_ok(&ob);
    let oc = demo(8, &c).join().expect("thread");
    check_ok(&oc);

    // The scoreboard is printed and saved, and identical for the same seed.
    let board_a = read(&a.join("scoreboard.txt"));
    assert_eq!(
        String::from_utf8_lossy(&oa.stdout).trim_end(),
        board_a.trim_end()
    );
    assert_eq!(
        board_a,
        read(&b.join("scoreboard.txt")),
        "same seed, different scoreboard"
    );
    assert_eq!(
        read(&a.join("scoreboard.json")),
        read(&b.join("scoreboard.json"))
    );
    assert_ne!(
        board_a,
        read(&c.join("scoreboard.txt")),
        "another seed gave the same scoreboard"
    );
    assert!(board_a.contains("seed 7, plan quick"), "{board_a}");

    // Every policy of both scenarios is on it, Aya first.
    let json: serde_json::Value =
        serde_json::from_str(&read(&a.join("scoreboard.json"))).expect("scoreboard.json parses");
    let tables = json["tables"].as_array().expect("tables");
    let policies = |key: &str| -> Vec<String> {
        let t = tables
            .iter()
            .find(|t| t["key"] == key)
            .unwrap_or_else(|| panic!("no table {key}"));
        t["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["policy"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(
        policies("balancing"),
        ["aya", "p2c", "a58", "peak_ewma", "round_robin"]
    );
    assert_eq!(policies("scaling"), ["aya", "hpa"]);
    for t in tables {
        for r in t["rows"].as_array().expect("rows") {
            let p99 = r["p99"]["mean"].as_f64().expect("p99");
            let ok = r["success_rate"]["mean"].as_f64().expect("success");
            assert!(p99 > 0.0 && p99.is_finite(), "{r}");
            assert!((0.0..=1.0).contains(&ok), "{r}");
        }
    }
    let rows = json["forecast"]["rows"].as_array().expect("forecast rows");
    assert!(
        rows.iter().any(|r| r["model"] == "aya (selected)"),
        "{rows:?}"
    );
    assert!(rows.len() >= 3);

    // The live controller accepted every streamed sample and the watcher saw weights.
    let live: serde_json::Value =
        serde_json::from_str(&read(&a.join("live.json"))).expect("live.json parses");
    let sent = live["samples_sent"].as_u64().expect("samples_sent");
    assert!(sent > 0);
    assert_eq!(live["accepted"].as_u64(), Some(sent), "{live}");
    let snaps = live["snapshots"].as_array().expect("snapshots");
    assert!(!snaps.is_empty(), "the watcher received no snapshot");
    let last = &snaps[snaps.len() - 1]["weights"];
    assert_eq!(last.as_array().map(Vec::len), Some(4), "{last}");

    // The report is one self-contained file with plots, plus the simulator's reports.
    let html = read(&a.join("report.html"));
    for needle in [
        "<svg",
        "Scoreboard",
        "Live controller over gRPC",
        "p2c",
        "hpa",
        "aya (selected)",
        // Aya's engine forecasts headroom in the scaling scenario: its alert strip is drawn.
        "Predictive alert timeline",
        "aya: predictive alerts vs SLO violations",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
    assert!(
        !html.contains("<script"),
        "the report must not need JavaScript"
    );
    for f in [
        "sim_balancing/report.html",
        "sim_scaling/report.html",
        "scenario_balancing.toml",
        "history/traffic.csv",
        "test_traffic.csv",
    ] {
        assert!(a.join(f).is_file(), "missing {f}");
    }
}

#[test]
fn bad_threads_flag_is_a_usage_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(["demo", "--quick", "--threads", "0", "--output"])
        .arg(std::env::temp_dir().join("aya-demo-never-written"))
        .output()
        .expect("aya binary runs");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--threads"));
}
