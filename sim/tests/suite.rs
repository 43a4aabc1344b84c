//! The broad suite: generation is deterministic and complete, the split is
//! balanced per family, and a smoke subset runs end to end.

use aya_sim::suite::{Kind, Split, SuiteConfig, generate, report, run_suite};

fn cfg() -> SuiteConfig {
    let mut c = SuiteConfig::new();
    if std::env::var_os("AYA_DATASETS").is_none() {
        c.datasets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets");
    }
    c
}

#[test]
fn full_suite_is_deterministic_broad_and_split_per_family() {
    let c = cfg();
    if !c.datasets.join("worldcup98").exists() {
        eprintln!("skipping: no shared datasets at {}", c.datasets.display());
        return;
    }
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a = generate(&c, d1.path()).unwrap();
    let b = generate(&c, d2.path()).unwrap();
    let strip = |s: &str, d: &std::path::Path| s.replace(&d.display().to_string(), "DIR");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.split, y.split);
        assert_eq!(strip(&x.toml, d1.path()), strip(&y.toml, d2.path()));
    }
    let bal = a.iter().filter(|s| s.kind == Kind::Balancing).count();
    let auto = a.iter().filter(|s| s.kind == Kind::Autoscaling).count();
    assert!(bal >= 80, "{bal} balancing");
    assert!(auto >= 30, "{auto} autoscaling");
    let mut ids: Vec<&str> = a.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.len(), "ids unique");
    // Per family the split differs by at most one.
    let mut fams: Vec<&str> = a.iter().map(|s| s.family.as_str()).collect();
    fams.sort();
    fams.dedup();
    for f in fams {
        let tune = a
            .iter()
            .filter(|s| s.family == f && s.split == Split::Tune)
            .count() as i64;
        let test = a
            .iter()
            .filter(|s| s.family == f && s.split == Split::Test)
            .count() as i64;
        assert!((tune - test).abs() <= 1, "{f}: {tune} tune vs {test} test");
    }
    // Breadth: sizes, fault kinds, service kinds, disciplines.
    let all: String = a.iter().map(|s| s.toml.as_str()).collect();
    for needle in [
        "\"failure\"",
        "\"slowdown\"",
        "\"degrade\"",
        "\"latency\"",
        "\"lognormal\"",
        "\"deterministic\"",
        "\"empirical\"",
        "\"ps\"",
        "\"fcfs\"",
    ] {
        assert!(all.contains(needle), "no {needle} in the suite");
    }
    let sizes: Vec<usize> = a
        .iter()
        .filter(|s| s.kind == Kind::Balancing)
        .map(|s| s.scenario.model.backends.len())
        .collect();
    assert!(sizes.contains(&2) && sizes.contains(&64), "{sizes:?}");
}

#[test]
fn smoke_subset_runs_and_reports() {
    let mut c = cfg();
    c.smoke = true;
    let dir = tempfile::tempdir().unwrap();
    let sc = generate(&c, dir.path()).unwrap();
    assert!(sc.iter().any(|s| s.kind == Kind::Balancing));
    assert!(sc.iter().any(|s| s.kind == Kind::Autoscaling));
    let res = run_suite(&sc).unwrap();
    assert_eq!(res.balancing.len() + res.autoscaling.len(), sc.len());
    for r in &res.balancing {
        assert!(
            r.p99.iter().all(|x| x.is_finite() && *x > 0.0),
            "{}: {:?}",
            r.id,
            r.p99
        );
        assert!(r.ratio_best.is_finite());
    }
    for r in &res.autoscaling {
        assert_eq!(
            r.hpa.len(),
            aya_sim::suite::generate::HPA_TARGETS.len(),
            "{}",
            r.id
        );
        assert!(
            r.aya.replica_hours > 0.0 && r.hpa_at_aya.is_finite(),
            "{}",
            r.id
        );
    }
    let md = report::markdown(&res);
    assert!(md.contains("## Acceptance") && md.contains("balancing acceptance"));
    let html = report::html(&res);
    assert!(html.contains("<svg") && html.contains("</html>"));
}

/// `data_plane_outlier_5xx` puts Envoy's outlier detection on every
/// balancing scenario's data plane (so the baselines run with it), and
/// nowhere by default; the scenarios still parse.
#[test]
fn data_plane_outlier_detection_is_configured_on_request() {
    let mut c = cfg();
    if !c.datasets.join("worldcup98").exists() {
        eprintln!("skipping: no shared datasets at {}", c.datasets.display());
        return;
    }
    c.kind = Some(Kind::Balancing);
    let d = tempfile::tempdir().unwrap();
    let plain = generate(&c, d.path()).unwrap();
    assert!(
        plain
            .iter()
            .all(|s| !s.toml.contains("outlier_consecutive_5xx"))
    );
    c.data_plane_outlier_5xx = 5;
    let with = generate(&c, d.path()).unwrap();
    assert_eq!(with.len(), plain.len());
    for s in &with {
        assert!(s.toml.contains("outlier_consecutive_5xx = 5"), "{}", s.id);
        let sc = aya_sim::scenario::Scenario::parse(&s.toml, &d.path().join("s.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", s.id));
        assert_eq!(sc.model.lb.outlier_consecutive_5xx, 5, "{}", s.id);
    }
}
