//! Replaying the test period in the simulator under Aya and the baselines.
//!
//! Two scenarios, written as ordinary scenario files into the output directory
//! (so `aya sim <file>` reproduces them outside the demo):
//!
//! * **balancing**: the synthetic pool of unequal backends (1×, 1×, 2×, 4×)
//!   receives the test day's traffic; one backend degrades gradually during
//!   the afternoon peak. Replicas are fixed; the policies differ in weights and
//!   data-plane algorithm: Aya against Envoy least request (P2C), gRPC A58
//!   weighted round robin, Linkerd peak-EWMA and plain round robin.
//! * **scaling**: the same traffic on a pool of identical replicas that can
//!   scale, with a boot delay: Aya's forecast-driven scaling against the
//!   Kubernetes HPA formula.
//!
//! Aya's control loop gets the forecaster trained on the history (the same
//! model for every seed); the baselines are reactive and get none. Policies
//! and seeds run in parallel on scoped threads; every replication's result
//! depends only on its seed, so the scoreboard is identical run to run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aya_policy::DemandForecaster;
use aya_sim::engine::{RunResult, simulate};
use aya_sim::run::{ScenarioResult, control_loop, control_loop_with};
use aya_sim::scenario::Scenario;

use super::DemoError;
use super::history::History;
use super::plan::Plan;

/// Builds a fresh forecaster for one of Aya's replications (`None`: no forecast).
pub type ForecasterFactory<'a> = &'a (dyn Fn() -> Option<Box<dyn DemandForecaster>> + Sync);

/// Which of the demo's two scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Unequal backends, fixed replicas, one degrading backend.
    Balancing,
    /// Identical replicas with autoscaling and a boot delay.
    Scaling,
}

impl Kind {
    /// Both, in report order.
    pub const ALL: [Kind; 2] = [Kind::Balancing, Kind::Scaling];

    /// Short name (file names, JSON keys).
    pub fn key(self) -> &'static str {
        match self {
            Kind::Balancing => "balancing",
            Kind::Scaling => "scaling",
        }
    }

    /// Policies compared, Aya first (the reference of the paired comparisons).
    pub fn policies(self) -> &'static [&'static str] {
        match self {
            Kind::Balancing => &["aya", "p2c", "a58", "peak_ewma", "round_robin"],
            Kind::Scaling => &["aya", "hpa"],
        }
    }
}

/// Mean request size in seconds on a speed-1 backend: the synthetic pool's
/// worker service rate (one capacity unit = 4 workers).
fn service_mean(history: &History) -> f64 {
    history
        .data
        .backends
        .first()
        .map(|b| 1.0 / b.service_rate)
        .filter(|m| m.is_finite() && *m > 0.0)
        .unwrap_or(0.1)
}

/// The scenario file text for `kind`.
pub fn scenario_toml(
    kind: Kind,
    plan: &Plan,
    history: &History,
    workload: &Path,
    seeds: &[u64],
) -> String {
    let v = |series_secs: f64| plan.virtual_secs(series_secs);
    let duration = plan.test_virtual_secs();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Written by `aya demo` (plan `{}`). Run it alone with `aya sim <this file>`.",
        plan.name
    );
    let _ = writeln!(
        t,
        "# Time is compressed {}x: {} s of the series per virtual second.",
        plan.compression, plan.compression
    );
    let _ = writeln!(t, "name = \"demo-{}\"", kind.key());
    let desc = match kind {
        Kind::Balancing => format!(
            "Test period of the synthetic history ({} h) on 4 unequal backends (1x, 1x, 2x, 4x); \
             b3 degrades to 0.3x speed from the early afternoon. Fixed replicas.",
            plan.test_hours
        ),
        Kind::Scaling => format!(
            "Test period of the synthetic history ({} h) on identical replicas (min 2, max 24) \
             with a {} s (series time) boot delay.",
            plan.test_hours, plan.boot_secs
        ),
    };
    let _ = writeln!(t, "description = \"{desc}\"");
    let _ = writeln!(t, "duration = {duration}");
    let _ = writeln!(t, "warmup = {}", v(600.0));
    let _ = writeln!(t, "timeout = 2.0");
    let _ = writeln!(t, "seeds = {seeds:?}");
    let _ = writeln!(t);
    let _ = writeln!(t, "[workload]");
    let _ = writeln!(t, "kind = \"rate_series\"");
    let wl = workload
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(t, "path = \"{wl}\"");
    let _ = writeln!(t, "value = \"rate\"");
    let _ = writeln!(t, "compression = {}", plan.compression);
    // Keep the recorded request rate: only the envelope is compressed.
    let _ = writeln!(t, "multiplier = {}", 1.0 / plan.compression);
    let _ = writeln!(t);
    let _ = writeln!(t, "[service]");
    let _ = writeln!(t, "kind = \"lognormal\"");
    let _ = writeln!(t, "mean = {}", service_mean(history));
    let _ = writeln!(t, "cv = 1.0");
    let _ = writeln!(t);
    toml_backends(&mut t, kind, plan, history);
    toml_control(&mut t, plan);
    toml_policies(&mut t, kind, plan);
    t
}

/// The backends (with the balancing fault) or the autoscaling sections of a demo scenario.
fn toml_backends(t: &mut String, kind: Kind, plan: &Plan, history: &History) {
    let v = |series_secs: f64| plan.virtual_secs(series_secs);
    let duration = plan.test_virtual_secs();
    let workers = history.data.config.workers_per_unit;
    match kind {
        Kind::Balancing => {
            for b in &history.data.backends {
                let _ = writeln!(t, "[[backends]]");
                let _ = writeln!(t, "name = \"{}\"", b.name);
                let _ = writeln!(t, "speed = {}", b.capacity);
                let _ = writeln!(t, "concurrency = {workers}");
                let _ = writeln!(t, "queue_limit = {}", workers * 25);
                let _ = writeln!(t);
            }
            // Afternoon degradation of the 2x backend (b3): from 13:00 (or 40%
            // into a test period that does not contain 13:00) it slows to 0.3x
            // over up to two hours of series time and stays slow.
            let into = 13.0 - f64::from(plan.test_start_hour);
            let start_h = if into >= 0.0 && into < f64::from(plan.test_hours) {
                into
            } else {
                f64::from(plan.test_hours) * 0.4
            };
            let _ = writeln!(t, "[[faults]]");
            let _ = writeln!(t, "backend = \"b3\"");
            let _ = writeln!(t, "kind = \"degrade\"");
            let _ = writeln!(t, "factor = 0.3");
            let _ = writeln!(t, "start = {}", v(start_h * 3600.0));
            let _ = writeln!(t, "duration = {}", v(2.0 * 3600.0).min(duration * 0.3));
            let _ = writeln!(t);
        }
        Kind::Scaling => {
            let _ = writeln!(t, "[[backends]]");
            let _ = writeln!(t, "name = \"r\"");
            let _ = writeln!(t, "count = 4");
            let _ = writeln!(t, "speed = 1.0");
            let _ = writeln!(t, "concurrency = {workers}");
            let _ = writeln!(t, "queue_limit = {}", workers * 25);
            let _ = writeln!(t);
            let _ = writeln!(t, "[autoscaling]");
            let _ = writeln!(t, "min = 2");
            let _ = writeln!(t, "max = 24");
            let _ = writeln!(t, "boot_delay = {}", v(plan.boot_secs));
            let _ = writeln!(t);
        }
    }
}

/// The data-plane, control, SLO and output sections of a demo scenario.
fn toml_control(t: &mut String, plan: &Plan) {
    let v = |series_secs: f64| plan.virtual_secs(series_secs);
    let _ = writeln!(t, "[data_plane]");
    let _ = writeln!(t, "algorithm = \"least_request\"");
    let _ = writeln!(t, "health_check_delay = {}", v(30.0));
    let _ = writeln!(t);
    let _ = writeln!(t, "[control]");
    let _ = writeln!(t, "interval = {}", v(plan.control_interval_secs));
    let _ = writeln!(t, "telemetry_interval = {}", v(30.0));
    let _ = writeln!(t, "telemetry_delay = {}", v(30.0));
    let _ = writeln!(t, "forecast_horizon = {}", plan.forecast_horizon);
    let _ = writeln!(t);
    let _ = writeln!(t, "[slo]");
    let _ = writeln!(t, "window = 60.0");
    let _ = writeln!(t, "p99 = 1.0");
    let _ = writeln!(t, "success = 0.99");
    let _ = writeln!(t);
    let _ = writeln!(t, "[output]");
    let _ = writeln!(t, "window = {}", v(300.0));
}

/// One `[[policy]]` table per compared policy, with its time constants compressed.
fn toml_policies(t: &mut String, kind: Kind, plan: &Plan) {
    let v = |series_secs: f64| plan.virtual_secs(series_secs);
    for p in kind.policies() {
        let _ = writeln!(t);
        let _ = writeln!(t, "[[policy]]");
        let _ = writeln!(t, "name = \"{p}\"");
        // Time constants of the scaling policies are series durations too.
        match *p {
            "aya" => {
                // Every duration of Aya's scaling rules, so that the
                // compressed replay sees the same rules as a real-time one.
                let d = aya_policy::AyaConfig::default();
                let _ = writeln!(t, "[policy.params]");
                let _ = writeln!(t, "scale_in_cooldown = {}", v(600.0));
                let _ = writeln!(t, "scale_up_cooldown = {}", v(d.scale_up_cooldown));
                let _ = writeln!(t, "scale_lookahead = {}", v(d.scale_lookahead));
                let _ = writeln!(t, "trend_window = {}", v(d.trend_window));
                let _ = writeln!(t, "trend_lookahead = {}", v(d.trend_lookahead));
            }
            "hpa" => {
                let _ = writeln!(t, "[policy.params]");
                let _ = writeln!(t, "scale_down_stabilization = {}", v(300.0));
            }
            _ => {}
        }
    }
}

/// Write the scenario file for `kind` into `dir` and load it back through the
/// simulator's own parser (so the file on disk is exactly what ran).
pub fn write_scenario(
    kind: Kind,
    plan: &Plan,
    history: &History,
    workload: &Path,
    seeds: &[u64],
    dir: &Path,
) -> Result<Scenario, DemoError> {
    let path = dir.join(format!("scenario_{}.toml", kind.key()));
    let text = scenario_toml(kind, plan, history, workload, seeds);
    std::fs::write(&path, text).map_err(|source| DemoError::Io {
        path: path.clone(),
        source,
    })?;
    Scenario::load(&path).map_err(|e| DemoError::Replay(e.to_string()))
}

/// Run every policy of `sc` on every seed, on up to `threads` threads; Aya's
/// replications get a forecaster from `aya_forecaster`. `on_done` is called
/// after each replication (progress).
pub fn run(
    sc: &Scenario,
    aya_forecaster: ForecasterFactory<'_>,
    threads: usize,
    on_done: &(dyn Fn(&str) + Sync),
) -> Result<ScenarioResult, DemoError> {
    let jobs: Vec<(usize, usize)> = (0..sc.policies.len())
        .flat_map(|p| (0..sc.seeds.len()).map(move |s| (p, s)))
        .collect();
    let slots: Mutex<Vec<Option<Result<RunResult, DemoError>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(p, s)) = jobs.get(i) else { break };
                    let spec = &sc.policies[p];
                    let result = run_one(sc, p, s, aya_forecaster);
                    on_done(spec.label());
                    if let Ok(mut guard) = slots.lock() {
                        guard[i] = Some(result);
                    }
                }
            });
        }
    });
    let slots = slots
        .into_inner()
        .map_err(|_| DemoError::Replay("a simulation thread panicked".into()))?;
    let mut per_policy: Vec<Vec<RunResult>> = (0..sc.policies.len()).map(|_| Vec::new()).collect();
    for (slot, &(p, s)) in slots.into_iter().zip(&jobs) {
        let r = slot.ok_or_else(|| {
            DemoError::Replay(format!(
                "replication {} / seed {} did not finish",
                sc.policies[p].label(),
                sc.seeds[s]
            ))
        })?;
        per_policy[p].push(r?);
    }
    if per_policy.iter().any(Vec::is_empty) {
        return Err(DemoError::Replay("no replication ran".into()));
    }
    Ok(aya_sim::run::assemble(sc, per_policy))
}

/// One replication, its loop built as the simulator builds every loop
/// ([`control_loop`]); Aya's gets the demo's forecaster instead of the
/// scenario's ([`control_loop_with`]).
fn run_one(
    sc: &Scenario,
    p: usize,
    s: usize,
    aya_forecaster: ForecasterFactory<'_>,
) -> Result<RunResult, DemoError> {
    let spec = &sc.policies[p];
    let seed = sc.seeds[s];
    let ctl = if spec.name == "aya" {
        control_loop_with(sc, spec, seed, aya_forecaster())
    } else {
        control_loop(sc, spec, seed)
    }
    .map_err(|e| DemoError::Replay(e.to_string()))?;
    simulate(&sc.model, seed, Some(ctl))
        .map_err(|e| DemoError::Replay(format!("{} seed {seed}: {e}", spec.label())))
}

/// Where each scenario's simulator report goes.
pub fn report_dir(out: &Path, kind: Kind) -> PathBuf {
    out.join(format!("sim_{}", kind.key()))
}
