//! The closed loop's short version (issue 12, deliverable 6): `aya bench
//! closed-loop --smoke` runs a REAL Envoy in front of six emulated backends of
//! unequal capacity at 60 % load, once with Envoy's LEAST_REQUEST and once
//! steered by Aya (fed by the backends' `aya.v1` metrics), and Aya must be no
//! worse: p99 no higher (within the noise allowance below) and success no
//! lower. The full table (more arms, 80 % load, a slowdown, repeats) is
//! docs/closed-loop.md's command, not a test.
//!
//! Envoy comes from `AYA_ENVOY_BIN` or `<workspace>/.venv-envoy/bin/envoy`;
//! without it the test prints a skip note, unless `AYA_REQUIRE_ENVOY=1` (CI).

use std::path::{Path, PathBuf};
use std::process::Command;

fn envoy_binary() -> Option<PathBuf> {
    let candidate = match std::env::var_os("AYA_ENVOY_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-envoy/bin/envoy"),
    };
    if candidate.is_file() {
        return Some(candidate);
    }
    let msg = format!(
        "Envoy not found at {} — `bash scripts/install-envoy.sh` or set AYA_ENVOY_BIN",
        candidate.display()
    );
    if std::env::var("AYA_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
        panic!("AYA_REQUIRE_ENVOY=1: {msg}");
    }
    eprintln!("SKIPPED real-Envoy test: {msg}");
    None
}

/// One run of the JSON: (arm, p50, p99, success, requests, shares, last weights).
struct Run {
    arm: String,
    p99: f64,
    success: f64,
    requests: u64,
    rate: f64,
    shares: serde_json::Map<String, serde_json::Value>,
    last_weights: Option<serde_json::Map<String, serde_json::Value>>,
}

#[test]
fn aya_steering_a_real_envoy_is_no_worse_than_least_request() {
    let Some(envoy) = envoy_binary() else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let run = Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(["bench", "closed-loop", "--smoke", "--envoy"])
        .arg(&envoy)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("aya bench runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    eprintln!("{stderr}\n{stdout}");
    assert!(run.status.success(), "aya bench closed-loop --smoke failed");
    assert!(stdout.contains("| load60 | least_request |"), "{stdout}");

    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("closed-loop.json")).expect("closed-loop.json"),
    )
    .expect("valid JSON");
    let runs: Vec<Run> = json["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| Run {
            arm: r["arm"].as_str().unwrap_or("").to_string(),
            p99: r["summary"]["p99"].as_f64().unwrap_or(f64::NAN),
            success: r["summary"]["success"].as_f64().unwrap_or(0.0),
            requests: r["summary"]["requests"].as_u64().unwrap_or(0),
            rate: r["rate"].as_f64().unwrap_or(0.0),
            shares: r["shares"].as_object().cloned().unwrap_or_default(),
            last_weights: r["decisions"]
                .as_array()
                .and_then(|d| d.last())
                .and_then(|d| d["weights"].as_object().cloned()),
        })
        .collect();
    let get = |arm: &str| {
        runs.iter()
            .find(|r| r.arm == arm)
            .unwrap_or_else(|| panic!("no {arm} run"))
    };
    let (lr, aya) = (get("least_request"), get("aya_api"));

    for r in [lr, aya] {
        // The open-loop generator offered what it was asked (20 s measured at 420/s).
        let expected = r.rate * 20.0;
        assert!(
            (r.requests as f64) > 0.85 * expected && (r.requests as f64) < 1.15 * expected,
            "{}: {} requests scheduled, expected ≈ {expected:.0}",
            r.arm,
            r.requests
        );
        // Every backend served some of them.
        assert_eq!(r.shares.len(), 6, "{}: shares {:?}", r.arm, r.shares);
    }
    // Aya learned the pool: its last published weights favour the 4× backends
    // (b5, b6) over the 1× ones (b1, b2).
    let w = aya.last_weights.as_ref().expect("Aya published decisions");
    let weight = |b: &str| w.get(b).and_then(|v| v.as_f64()).unwrap_or(0.0);
    assert!(
        weight("b5").min(weight("b6")) > weight("b1").max(weight("b2")),
        "Aya's weights {w:?} do not favour the 4× backends"
    );
    // No worse than LEAST_REQUEST: success no lower (0.5 pp allowance for a
    // stray timeout), p99 no higher. The allowance on p99 is 10 % because the
    // two runs are sequential on a shared 2-core machine; the full benchmark
    // (docs/closed-loop.md) measures Aya's p99 at well under LEAST_REQUEST's.
    assert!(
        aya.success >= lr.success - 0.005,
        "Aya's success {:.4} is below LEAST_REQUEST's {:.4}",
        aya.success,
        lr.success
    );
    assert!(
        aya.p99 <= 1.10 * lr.p99,
        "Aya's p99 {:.1} ms is worse than LEAST_REQUEST's {:.1} ms",
        aya.p99 * 1e3,
        lr.p99 * 1e3
    );
}
