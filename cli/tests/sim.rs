//! The one-line textbook form of `aya sim` (what users and cross-crate tests call).

use aya_cli::sim::{SimArgs, textbook};

fn args(algorithm: &str, service: &str, utilization: f64) -> SimArgs {
    SimArgs {
        scenario: None,
        servers: Some(4),
        utilization: Some(utilization),
        service: service.into(),
        algorithm: algorithm.into(),
        requests: 200_000,
        seed: 3,
        json: true,
        output: None,
    }
}

#[test]
fn textbook_json_has_the_documented_fields() {
    let r = textbook(&args("random", "exp", 0.5)).expect("runs");
    let v = serde_json::to_value(&r).expect("serialises");
    for k in [
        "mean",
        "p50",
        "p90",
        "p99",
        "p999",
        "requests_completed",
        "events_processed",
        "events_per_second",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    // First 10% discarded as warm-up; every request arrives and departs once.
    assert_eq!(r.requests_completed, 180_000);
    assert_eq!(r.events_processed, 400_000);
    assert!(r.p50 < r.p90 && r.p90 < r.p99 && r.p99 < r.p999);
    assert!((r.mean - 2.0).abs() < 0.1, "M/M/1 at 0.5: mean {}", r.mean);
    assert_eq!(r.theory_mean, Some(2.0));
}

#[test]
fn deterministic_service_beats_exponential_and_central_beats_random() {
    let det = textbook(&args("random", "det", 0.7)).expect("runs");
    let exp = textbook(&args("random", "exp", 0.7)).expect("runs");
    // M/D/1 waits half as long as M/M/1 (Pollaczek-Khinchine).
    let md1 = 1.0 + 0.7 / (2.0 * 0.3);
    assert!(
        (det.mean - md1).abs() / md1 < 0.05,
        "M/D/1 mean {} vs {md1}",
        det.mean
    );
    let central = textbook(&args("central", "exp", 0.7)).expect("runs");
    let jsq = textbook(&args("jsq", "exp", 0.7)).expect("runs");
    assert!(central.mean < jsq.mean && jsq.mean < exp.mean);
    let ln = textbook(&args("p2c", "lognormal:2", 0.7)).expect("runs");
    assert!(ln.p999 > ln.p99);
}

#[test]
fn bad_flags_are_usage_errors() {
    for (a, s, u, needle) in [
        ("random", "exp", 1.0, "--utilization"),
        ("fastest", "exp", 0.5, "allowed"),
        ("random", "pareto", 0.5, "exp, det, lognormal:<cv>"),
        ("random", "lognormal:x", 0.5, "cv"),
    ] {
        let e = textbook(&args(a, s, u)).expect_err("rejected");
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains(needle),
            "{e} should mention {needle}"
        );
    }
}
