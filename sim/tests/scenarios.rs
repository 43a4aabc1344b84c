//! Scenario files: the shipped examples load and run, invalid files give
//! clear errors, runs are reproducible, and common random numbers hold.

use std::path::{Path, PathBuf};

use aya_policy::{
    AlgorithmChoice, BackendWeight, ControlLoop, Decision, DemandForecaster, Explanation,
    LbAlgorithm, Policy, ScalingSignal, TickInput,
};
use aya_sim::engine::simulate;
use aya_sim::run::{run_one, run_scenario};
use aya_sim::scenario::{Scenario, ScenarioError};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> Scenario {
    Scenario::load(&root().join("scenarios/examples").join(name))
        .expect("example scenario is valid")
}

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::parse(text, Path::new("test.toml"))
}

const BASE: &str = r#"
duration = 20.0
[workload]
kind = "poisson"
rate = 100.0
[service]
kind = "exponential"
mean = 0.01
[[backends]]
count = 4
"#;

#[test]
fn every_example_scenario_is_valid() {
    let dir = root().join("scenarios/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            Scenario::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "expected at least 5 example scenarios, found {n}");
}

#[test]
fn slow_replica_example_reproduces_known_levels() {
    let mut sc = example("slow_replica.toml");
    sc.seeds = vec![1, 2];
    let res = run_scenario(&sc).expect("runs");
    let success = |label: &str| {
        res.policies
            .iter()
            .find(|p| p.label == label)
            .expect("policy present")
            .summary["success_rate"]
            .mean
    };
    // 1/11 of the traffic for half the run goes into a 2 s replica: ≈ 95.5% at best.
    let rr = success("round_robin");
    assert!((0.93..0.965).contains(&rr), "round robin success {rr}");
    assert!(
        success("peak_ewma") >= 0.999,
        "peak-EWMA success {}",
        success("peak_ewma")
    );
    // Paired comparison against the first policy is present and significant.
    let c = &res.comparisons[1];
    assert_eq!(c.policy, "peak_ewma");
    assert!(c.metrics["success_rate"].significant);
}

#[test]
fn runs_are_reproducible_and_share_arrivals() {
    let sc = example("identical.toml");
    let a = run_one(&sc, &sc.policies[0], 11).expect("runs").metrics;
    let b = run_one(&sc, &sc.policies[0], 11).expect("runs").metrics;
    assert_eq!(
        (a.arrived, a.completed, a.mean, a.p99),
        (b.arrived, b.completed, b.mean, b.p99)
    );
    // Another algorithm, same seed: same arrivals (common random numbers), different latencies.
    let c = run_one(&sc, &sc.policies[1], 11).expect("runs").metrics;
    assert_eq!(a.arrived, c.arrived);
    assert_ne!(a.mean, c.mean);
    // A different seed gives different arrivals.
    let d = run_one(&sc, &sc.policies[0], 12).expect("runs").metrics;
    assert_ne!(a.arrived, d.arrived);
}

#[test]
fn trace_replay_streams_every_request() {
    let text = r#"
[workload]
kind = "trace"
path = "datasets:azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv"
cost = { base = 0.01, per_context_token = 0.00001, per_generated_token = 0.001 }
[[backends]]
count = 4
concurrency = 8
discipline = "ps"
"#;
    let sc = parse(text).expect("valid");
    let r = run_one(&sc, &sc.policies[0], 1).expect("runs").metrics;
    assert_eq!(r.arrived, 8819, "the code trace has 8,819 requests");
    assert_eq!(r.completed, 8819);
}

#[test]
fn rate_series_replay_matches_the_counts() {
    // 1998-05-01 00:00 .. 01:00 (60 rows), compressed 60x: one virtual second per minute.
    let text = r#"
duration = 60.0
[workload]
kind = "rate_series"
path = "datasets:worldcup98/worldcup98_requests_per_minute.csv"
start = "1998-05-01T00:00:00Z"
compression = 60.0
[service]
kind = "deterministic"
mean = 0.0001
[[backends]]
count = 2
concurrency = 64
"#;
    let sc = parse(text).expect("valid");
    let r = run_one(&sc, &sc.policies[0], 3).expect("runs").metrics;
    // Sum of the 60 per-minute counts from the file.
    let csv = std::fs::read_to_string(aya_sim::workload::resolve_path(
        Path::new("datasets:worldcup98/worldcup98_requests_per_minute.csv"),
        Path::new("."),
    ))
    .expect("dataset present");
    let expected: f64 = csv
        .lines()
        .filter(|l| l.starts_with("1998-05-01T00:"))
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum();
    let got = r.arrived as f64;
    assert!(expected > 1000.0);
    assert!(
        (got - expected).abs() < 5.0 * expected.sqrt(),
        "arrivals {got} vs counts {expected}"
    );
}

#[test]
fn queue_limits_drop_and_failures_error() {
    let text = format!(
        "timeout = 0.5
{BASE}
[[faults]]
backend = 1
kind = \"failure\"
start = 5.0
duration = 5.0
[data_plane]
algorithm = \"round_robin\"
health_check_delay = 1.0
"
    );
    let sc = parse(&text).expect("valid");
    let r = run_one(&sc, &sc.policies[0], 1).expect("runs").metrics;
    assert!(
        r.errors > 0,
        "a failed backend fails requests until health checks notice"
    );
    // Health checks notice after 1 s: at most ~1 s of 1/4 of 100 req/s plus in-flight ones.
    assert!(r.errors < 60, "errors {}", r.errors);

    let over = r#"
duration = 20.0
[workload]
kind = "poisson"
rate = 300.0
[service]
kind = "exponential"
mean = 0.01
[[backends]]
count = 2
queue_limit = 5
"#;
    let sc = parse(over).expect("valid");
    let r = run_one(&sc, &sc.policies[0], 1).expect("runs").metrics;
    assert!(
        r.dropped > 100,
        "an overloaded backend with a queue limit drops ({})",
        r.dropped
    );
    assert_eq!(r.arrived, r.succeeded + r.dropped + r.timed_out + r.errors);
}

/// A test policy: fixed weights, a fixed replica count, weighted round robin.
struct Fixed {
    weights: Vec<(String, u32)>,
    replicas: u32,
}

impl Policy for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn decide(&mut self, input: &TickInput<'_>) -> Decision {
        Decision {
            outlier_detection: None,
            max_requests: None,
            at: input.now,
            weights: self
                .weights
                .iter()
                .map(|(b, w)| BackendWeight {
                    backend: b.clone(),
                    weight: *w,
                })
                .collect(),
            ejected: vec![],
            scaling: ScalingSignal {
                desired_replicas: self.replicas,
                current_replicas: input.replicas.current,
                rule: "fixed".into(),
            },
            algorithm: AlgorithmChoice {
                algorithm: LbAlgorithm::WeightedRoundRobin,
                rule: "fixed".into(),
            },
            explanation: Explanation::default(),
        }
    }
}

#[test]
fn control_loop_applies_weights_algorithm_and_replicas() {
    let text = r#"
duration = 200.0
[workload]
kind = "poisson"
rate = 200.0
[service]
kind = "exponential"
mean = 0.005
[[backends]]
count = 2
[control]
interval = 10.0
telemetry_interval = 5.0
telemetry_delay = 2.0
[autoscaling]
min = 1
max = 4
boot_delay = 30.0
"#;
    let sc = parse(text).expect("valid");
    let policy: Box<dyn Policy> = Box::new(Fixed {
        weights: vec![("b0".into(), 3), ("b1".into(), 1)],
        replicas: 4,
    });
    let ctl = ControlLoop::new(policy, None::<Box<dyn DemandForecaster>>, 4);
    let r = simulate(&sc.model, 1, Some(ctl)).expect("runs");
    assert_eq!(r.metrics.scaling_actions, 1);
    assert_eq!(r.metrics.algorithm_switches, 1);
    // 2 replicas for 200 s, 2 more from t=10 s (booting 30 s, counted).
    let expected_hours = (2.0 * 200.0 + 2.0 * 190.0) / 3600.0;
    assert!(
        (r.metrics.replica_hours - expected_hours).abs() < 0.01,
        "{}",
        r.metrics.replica_hours
    );
    // Weighted round robin 3:1 before the new replicas are ready.
    let w = r
        .series
        .iter()
        .find(|w| w.t >= 10.0 && w.t < 30.0)
        .expect("window");
    let rate = |n: &str| {
        w.backends
            .iter()
            .find(|b| b.backend == n)
            .map(|b| b.rate)
            .unwrap_or(0.0)
    };
    let share = rate("b0") / (rate("b0") + rate("b1"));
    assert!((share - 0.75).abs() < 0.05, "share of b0 {share}");
    // After boot, four replicas are ready.
    assert_eq!(r.series.last().map(|w| w.ready), Some(4));
}

#[test]
fn invalid_scenarios_say_what_where_and_what_is_allowed() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            BASE.replace("rate = 100.0", "rate = -1.0"),
            vec!["workload", "rate", "> 0"],
        ),
        (
            format!("{BASE}[data_plane]\nalgorithm = \"fastest\"\n"),
            vec![
                "data_plane.algorithm",
                "fastest",
                "round_robin",
                "maglev",
                "central",
            ],
        ),
        (
            format!("{BASE}[data_plane]\nmaglev_table_size = 1000\n"),
            vec!["data_plane", "prime"],
        ),
        (
            format!("{BASE}[data_plane]\nchoices = 3\n"),
            vec!["data_plane", "choices", "choice_count"],
        ),
        (
            BASE.replace("[service]\nkind = \"exponential\"\nmean = 0.01\n", ""),
            vec!["service", "missing", "exponential"],
        ),
        (
            BASE.replace("kind = \"exponential\"", "kind = \"pareto\""),
            vec!["line", "pareto", "lognormal"],
        ),
        (
            format!("{BASE}[[faults]]\nbackend = \"web-9\"\nkind = \"failure\"\nstart = 1.0\n"),
            vec!["faults[0].backend", "web-9", "b0"],
        ),
        (
            format!("{BASE}[[faults]]\nbackend = 0\nkind = \"explode\"\nstart = 1.0\n"),
            vec!["faults[0].kind", "explode", "slowdown"],
        ),
        (
            format!("{BASE}[[faults]]\nbackend = 0\nkind = \"slowdown\"\nstart = 1.0\n"),
            vec!["faults[0].factor", "required"],
        ),
        (
            format!("{BASE}[policy]\nname = \"oracle\"\n"),
            vec!["policy.name", "oracle", "static"],
        ),
        (
            format!("{BASE}warmup_time = 3\n"),
            vec!["unknown field", "warmup_time"],
        ),
        (
            format!("warmup = 30.0\n{BASE}"),
            vec!["warmup", "shorter than `duration`"],
        ),
        (
            format!("{BASE}[autoscaling]\nmin = 5\nmax = 2\n"),
            vec!["autoscaling", "min <= max"],
        ),
        (
            format!("{BASE}[slo]\nsuccess = 1.5\n"),
            vec!["slo.success", "[0, 1]"],
        ),
        ("duration = 1.0\n[workload\n".to_string(), vec!["line 2"]),
        (
            BASE.replace("count = 4", "count = 0"),
            vec!["backends[0].count", ">= 1"],
        ),
    ];
    for (text, needles) in cases {
        let err = parse(&text)
            .expect_err("invalid scenario must be rejected")
            .to_string();
        assert!(err.contains("test.toml"), "error names the file: {err}");
        for n in needles {
            assert!(err.contains(n), "error {err:?} should mention {n:?}");
        }
    }
}

#[test]
fn bad_workload_file_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("rates.csv");
    std::fs::write(
        &csv,
        "timestamp,value\n2024-01-01T00:00:00Z,10\n2024-01-01T00:01:00Z,abc\n",
    )
    .expect("write");
    let text = format!(
        "duration = 100.0\n[workload]\nkind = \"rate_series\"\npath = {:?}\n[service]\nkind = \"deterministic\"\nmean = 0.001\n[[backends]]\ncount = 1\n",
        csv.display().to_string()
    );
    let sc = parse(&text).expect("valid");
    let err = run_one(&sc, &sc.policies[0], 1)
        .expect_err("bad value")
        .to_string();
    assert!(err.contains("rates.csv:3") && err.contains("abc"), "{err}");
}

#[test]
fn processor_sharing_mean_matches_mm1() {
    // M/M/1-PS has the same mean sojourn as FCFS: 1/(μ−λ) = 2 at ρ = 0.5.
    let text = r#"
max_requests = 300000
warmup = 1000.0
[workload]
kind = "poisson"
rate = 2.0
[service]
kind = "exponential"
mean = 1.0
[[backends]]
count = 4
discipline = "ps"
[data_plane]
algorithm = "random"
"#;
    let sc = parse(text).expect("valid");
    let r = run_one(&sc, &sc.policies[0], 5).expect("runs").metrics;
    assert!((r.mean - 2.0).abs() / 2.0 < 0.03, "PS mean {}", r.mean);
}

#[test]
fn simulator_sizes_are_bounded_before_anything_is_allocated() {
    // Each refused at parse time, naming the field.
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            BASE.replace("rate = 100.0", "rate = 4294967296"),
            vec!["workload.rate", "limit"],
        ),
        (
            BASE.replace("count = 4", "count = 4000000000"),
            vec!["backends[0].count", "limit"],
        ),
        (
            BASE.replace("count = 4", "count = 4\nconcurrency = 4000000000"),
            vec!["backends[0].concurrency", "limit"],
        ),
        (
            format!("{BASE}[autoscaling]\nmin = 1\nmax = 4000000000\n"),
            vec!["autoscaling.max", "limit"],
        ),
        (
            format!("{BASE}[control]\nforecast_horizon = 10000000000\n"),
            vec!["control.forecast_horizon", "limit"],
        ),
    ];
    for (text, needles) in cases {
        let err = parse(&text)
            .expect_err("a huge size must be rejected")
            .to_string();
        for n in needles {
            assert!(err.contains(n), "error {err:?} should mention {n:?}");
        }
    }
}

#[test]
fn a_rate_series_past_the_rate_limit_names_the_multiplier() {
    // The shipped WorldCup98 series at 1e6 x its rate: refused on the first
    // row, before the run queues anything.
    let text = r#"
duration = 60.0
[workload]
kind = "rate_series"
path = "datasets:worldcup98/worldcup98_requests_per_minute.csv"
compression = 60.0
multiplier = 1000000.0
[service]
kind = "deterministic"
mean = 0.0001
[[backends]]
count = 2
"#;
    let sc = parse(text).expect("valid until the file is read");
    let err = run_one(&sc, &sc.policies[0], 1)
        .expect_err("too fast")
        .to_string();
    assert!(
        err.contains("workload.multiplier") && err.contains("limit"),
        "{err}"
    );
}

#[test]
fn a_warm_start_feeds_the_forecaster_the_history_before_start() {
    // Two hours of a per-minute series at 600/min, then the replayed hour at
    // 1200/min; compression 10, so the replay is 360 virtual seconds.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("s.csv");
    let mut text = String::from("timestamp,value\n");
    for m in 0..180 {
        let v = if m < 120 { 600 } else { 1200 };
        text.push_str(&format!("{},{v}\n", 1_000_000_000 + 60 * m));
    }
    std::fs::write(&csv, text).unwrap();
    let scenario = |warm: &str| {
        format!(
            r#"
duration = 300.0
[workload]
kind = "rate_series"
path = "s.csv"
compression = 10.0
start = "{}"
[service]
kind = "exponential"
mean = 0.005
[[backends]]
count = 4
[control]
interval = 15.0
telemetry_interval = 15.0
[forecaster]
name = "online"
params = {{ step_seconds = 15.0 }}
{warm}
[[policy]]
name = "aya"
"#,
            1_000_000_000 + 60 * 120
        )
    };
    let path = dir.path().join("sc.toml");
    let cold = Scenario::parse(&scenario(""), &path).unwrap();
    assert!(cold.warm_history.is_empty());
    let warm = Scenario::parse(&scenario("warm_start = 7200.0"), &path).unwrap();
    // 7200 series seconds = 720 virtual seconds = 48 control intervals of 15 s,
    // each at 600/min × 10 = 100 requests per virtual second.
    assert_eq!(warm.warm_history.len(), 48);
    assert_eq!(warm.warm_history.last().unwrap().0, 0.0);
    assert!(
        warm.warm_history
            .iter()
            .all(|(t, r)| *t <= 0.0 && (r - 100.0).abs() < 1e-9),
        "{:?}",
        &warm.warm_history[..3]
    );
    // The first tick (t = 0, before any telemetry) sees the history's last
    // demand and, warm, already has a forecast to act on.
    let first_tick = |sc: &Scenario| {
        let ctl = aya_sim::run::control_loop(sc, &sc.policies[0], 1).unwrap();
        let run = aya_sim::engine::simulate_traced(&sc.model, 1, Some(ctl)).unwrap();
        run.control_trace[0].clone()
    };
    let (c, w) = (first_tick(&cold), first_tick(&warm));
    // Cold, the demand is unknown until the first telemetry (not 0).
    assert!(c.now == 0.0 && c.demand_rps.is_nan(), "{:?}", c.demand_rps);
    assert!(
        c.decision.scaling.rule.starts_with("hold_"),
        "{}",
        c.decision.scaling.rule
    );
    assert_eq!((w.now, w.demand_rps), (0.0, 100.0));
    assert!(
        w.decision.explanation.forecast.is_some() && c.decision.explanation.forecast.is_none(),
        "warm {:?} / cold {:?}",
        w.decision.explanation.forecast,
        c.decision.explanation.forecast
    );

    // What cannot be warm-started is refused naming the field.
    let no_start = scenario("warm_start = 7200.0")
        .replace(&format!("start = \"{}\"\n", 1_000_000_000 + 60 * 120), "");
    let e = Scenario::parse(&no_start, &path).unwrap_err().to_string();
    assert!(
        e.contains("forecaster.warm_start") && e.contains("`start`"),
        "{e}"
    );
    let e = Scenario::parse(&scenario("warm_start = -1.0"), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("forecaster.warm_start"), "{e}");
}
