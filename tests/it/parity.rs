//! Parity between the simulator's control path and the running service.
//!
//! The product promise is that what `aya sim` / `aya league` measure is what
//! `aya serve` does: every decision comes from `aya_policy::ControlLoop`, and
//! the drivers only translate inputs and outputs. This test holds both drivers
//! to that. One deterministic observation trace (four backends, unequal
//! capacity, one of them degrading, turning unhealthy and recovering, under a
//! rising and oscillating demand) is fed
//!
//! (a) to a `ControlLoop` built exactly as the simulator builds it
//!     (`aya_policy::ControlLoop::for_policy` on the registry's spec of
//!     `aya`, checked by `aya_sim::policy::policy_spec`, with the simulator's
//!     build context and its forecaster `online`, the one the service runs),
//!     and
//! (b) to the real service, in-process on `127.0.0.1:0`: samples go over the
//!     aya.v1 `MetricsService.Ingest` stream, the control tick of each trace
//!     time is driven through `Controller::tick_cluster` (the service's own
//!     tick entry point; the background ticker's period is longer than the
//!     test), and every published snapshot is read back over the aya.v1
//!     `DecisionService.Watch` stream.
//!
//! At every tick the test predicts from (a) whether the service must publish
//! (`Decision::differs_from` the last published decision) and then requires
//! the published wire decision to equal (a)'s decision field for field:
//! time, weights, ejections, desired and current replicas, algorithm, and the
//! explanation (rules and forecast summary). Any decision logic living in the
//! service instead of `aya-policy` shows up as a mismatch or as a publication
//! at the wrong tick.

use std::time::Duration;

use aya_controller::config::Config;
use aya_controller::convert::decision_to_wire;
use aya_controller::server::{Listeners, serve_controller};
use aya_controller::state::{Controller, now_secs};
use aya_policy::{BackendObservation, Decision, ReplicaState};
use aya_proto::v1::decision_service_client::DecisionServiceClient;
use aya_proto::v1::metrics_service_client::MetricsServiceClient;
use aya_proto::v1::{ClusterSnapshot, IngestAck, IngestBatch, MetricKind, Sample, WatchRequest};
use aya_sim::engine::BoxedLoop;
use aya_sim::policy::{PolicyContext, make_forecaster, policy_spec};
use aya_sim::scenario::{ForecasterSpec, PolicySpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CLUSTER: &str = "parity";
/// Seconds between control ticks; also the forecaster's grid step, so the
/// forecaster closes one bucket per tick. Longer than the test runs, so the
/// service's own wall-clock ticker never fires during it.
const INTERVAL: f64 = 600.0;
/// Trace length in ticks.
const TICKS: usize = 48;
/// Forecast horizon in steps, on both sides.
const HORIZON: usize = 6;
const MIN_REPLICAS: u32 = 2;
const MAX_REPLICAS: u32 = 8;
const BOOT_TIME: f64 = 30.0;
/// Backends (sorted by name, as the service keeps them) and addresses.
const BACKENDS: [(&str, &str); 4] = [
    ("web-1", "10.0.0.1:8080"),
    ("web-2", "10.0.0.2:8080"),
    ("web-3", "10.0.0.3:8080"),
    ("web-4", "10.0.0.4:8080"),
];
/// How long to wait for one gRPC answer before failing (not a timing assertion:
/// only a guard against hanging forever).
const WAIT: Duration = Duration::from_secs(15);

/// One backend's telemetry at one tick, as a metrics pipeline would send it.
#[derive(Debug, Clone, Copy)]
struct Telemetry {
    request_rate: f64,
    in_flight: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    error_rate: f64,
    cpu: f64,
    healthy: bool,
}

/// The deterministic trace: demand rises and oscillates; `web-3` has half the
/// capacity of the others; `web-4` degrades from tick 14 (latency and errors
/// climb), is unhealthy for ticks 26..32, then recovers.
fn telemetry(k: usize, b: usize) -> Telemetry {
    let kf = k as f64;
    let demand = 400.0 + 12.0 * kf + 250.0 * (kf / 5.0).sin() + if k >= 34 { 600.0 } else { 0.0 };
    let capacity = [300.0, 300.0, 150.0, 300.0][b];
    let share = [0.3, 0.3, 0.15, 0.25][b];
    let rate = demand * share;
    let rho = (rate / capacity).min(0.98);
    let mut base = 0.020 / (1.0 - rho);
    let mut error_rate = 0.001;
    let mut healthy = true;
    if b == 3 && (14..38).contains(&k) {
        let worse = (k - 13) as f64;
        base *= 1.0 + 0.8 * worse;
        error_rate = (0.01 * worse).min(0.4);
        healthy = !(26..32).contains(&k);
    }
    // Service times are near-constant for the first ticks (tight tail), then
    // variable (a long tail), which changes the algorithm the engine picks.
    let tail = if k < 10 { 1.3 } else { 4.6 };
    Telemetry {
        request_rate: rate,
        in_flight: rate * base,
        p50: base,
        p90: base * (1.0 + (tail - 1.0) * 0.36),
        p99: base * tail,
        error_rate,
        cpu: rho,
        healthy,
    }
}

fn tick_time(base: f64, k: usize) -> f64 {
    base + k as f64 * INTERVAL
}

/// The samples the service receives for tick `k` (metric names of the aya.v1
/// ingest contract, one gauge per figure).
fn samples(base: f64, k: usize) -> Vec<Sample> {
    let ts = (tick_time(base, k) * 1000.0) as i64;
    let mut out = Vec::new();
    for (b, (name, _)) in BACKENDS.iter().enumerate() {
        let t = telemetry(k, b);
        for (metric, value) in [
            ("request_rate", t.request_rate),
            ("in_flight", t.in_flight),
            ("latency_p50_seconds", t.p50),
            ("latency_p90_seconds", t.p90),
            ("latency_p99_seconds", t.p99),
            ("error_rate", t.error_rate),
            ("cpu_utilization", t.cpu),
            ("healthy", if t.healthy { 1.0 } else { 0.0 }),
        ] {
            out.push(Sample {
                cluster: CLUSTER.into(),
                backend: (*name).into(),
                metric: metric.into(),
                timestamp_ms: ts,
                value,
                kind: MetricKind::Gauge as i32,
                labels: Default::default(),
            });
        }
    }
    out
}

/// The same tick as the simulator's control path sees it: observations,
/// demand and replica state. `k == None` is the service's start-up tick,
/// made before any telemetry arrived.
fn sim_inputs(now: f64, k: Option<usize>) -> (Vec<BackendObservation>, f64, ReplicaState) {
    let obs: Vec<BackendObservation> = BACKENDS
        .iter()
        .enumerate()
        .map(|(b, (name, _))| match k {
            Some(k) => {
                let t = telemetry(k, b);
                BackendObservation {
                    backend: (*name).into(),
                    healthy: t.healthy,
                    request_rate: t.request_rate,
                    in_flight: t.in_flight,
                    latency_p50: t.p50,
                    latency_p90: t.p90,
                    latency_p99: t.p99,
                    error_rate: t.error_rate,
                    cpu_utilization: Some(t.cpu),
                    memory_utilization: None,
                    observed_at: now,
                }
            }
            None => BackendObservation::unobserved(*name, now),
        })
        .collect();
    // Before any telemetry the demand is unknown (NaN), not 0.
    let demand = match k {
        Some(_) => obs.iter().map(|o| o.request_rate).sum(),
        None => f64::NAN,
    };
    let ready = obs.iter().filter(|o| o.healthy).count() as u32;
    let replicas = ReplicaState::new(ready, BACKENDS.len() as u32 - ready).with_bounds(
        MIN_REPLICAS,
        MAX_REPLICAS,
        BOOT_TIME,
    );
    (obs, demand, replicas)
}

/// The control loop exactly as the simulator constructs it for a scenario
/// with `[[policy]] name = "aya"` and `[forecaster] name = "online"`.
fn sim_loop() -> BoxedLoop {
    let ctx = PolicyContext {
        seed: 7,
        algorithm: None,
        path: "parity-test".into(),
    };
    let policy = policy_spec(&PolicySpec::named("aya"), &ctx.path).expect("policy aya");
    let mut params = toml::Table::new();
    params.insert("step_seconds".into(), toml::Value::Float(INTERVAL));
    let spec = ForecasterSpec {
        name: "online".into(),
        params,
        warm_start: None,
        events: None,
        calendar: None,
    };
    let forecaster = make_forecaster(Some(&spec), &ctx).expect("forecaster online");
    assert!(forecaster.is_some(), "the online forecaster is registered");
    aya_policy::ControlLoop::for_policy(&policy, &ctx.build_context(), forecaster, HORIZON)
}

fn service_config(data_dir: &std::path::Path) -> Config {
    let mut text = format!(
        "data_dir = {:?}\n\
         tick_interval_seconds = {INTERVAL:?}\n\
         forecast_step_seconds = {INTERVAL:?}\n\
         forecast_horizon = {HORIZON}\n\
         max_future_skew_seconds = 172800.0\n\
         stale_after_seconds = 60.0\n\
         [[clusters]]\n\
         name = {CLUSTER:?}\n\
         policy = \"aya\"\n\
         min_replicas = {MIN_REPLICAS}\n\
         max_replicas = {MAX_REPLICAS}\n\
         boot_time_seconds = {BOOT_TIME:?}\n",
        data_dir.display().to_string(),
    );
    for (name, address) in BACKENDS {
        text.push_str(&format!(
            "[[clusters.backends]]\nname = {name:?}\naddress = {address:?}\n"
        ));
    }
    Config::from_toml(&text, std::path::Path::new("parity.toml")).expect("valid test config")
}

async fn next_snapshot(
    watch: &mut tonic::Streaming<ClusterSnapshot>,
) -> anyhow::Result<ClusterSnapshot> {
    tokio::time::timeout(WAIT, watch.message())
        .await
        .map_err(|_| anyhow::anyhow!("no snapshot on the Watch stream within {WAIT:?}"))??
        .ok_or_else(|| anyhow::anyhow!("the Watch stream ended"))
}

/// Check one published snapshot against the simulator path's decision.
fn check(snap: &ClusterSnapshot, want: &Decision, what: &str) {
    let got = snap
        .decision
        .as_ref()
        .expect("a published snapshot carries its decision");
    assert_eq!(
        got,
        &decision_to_wire(want),
        "{what}: published decision differs from the simulator path's"
    );
    let endpoint_weights: Vec<(&str, u32)> = snap
        .endpoints
        .iter()
        .map(|e| (e.backend.as_str(), e.weight))
        .collect();
    let want_weights: Vec<(&str, u32)> = want
        .weights
        .iter()
        .map(|w| (w.backend.as_str(), w.weight))
        .collect();
    assert_eq!(endpoint_weights, want_weights, "{what}: endpoint weights");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_publishes_exactly_the_simulator_paths_decisions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        init: true,
        ..service_config(dir.path())
    };
    let ctl = tokio::task::spawn_blocking(move || Controller::open(config)).await??;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = grpc.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_controller(
        ctl.clone(),
        Listeners {
            grpc,
            metrics: None,
        },
        async move {
            let _ = stop_rx.await;
        },
    ));

    let endpoint = format!("http://{addr}");
    let mut decisions = DecisionServiceClient::connect(endpoint.clone()).await?;
    let mut watch = decisions
        .watch(WatchRequest {
            cluster: CLUSTER.into(),
            last_version: 0,
        })
        .await?
        .into_inner();
    let mut metrics = MetricsServiceClient::connect(endpoint).await?;
    let (batch_tx, batch_rx) = mpsc::channel::<IngestBatch>(4);
    let mut acks: tonic::Streaming<IngestAck> = metrics
        .ingest(ReceiverStream::new(batch_rx))
        .await?
        .into_inner();

    // The service ticked once at start-up (wall clock, no telemetry yet) and
    // published version 1; the simulator path makes the same tick.
    let mut sim = sim_loop();
    let first = next_snapshot(&mut watch).await?;
    assert_eq!(first.version, 1, "the start-up publication is version 1");
    let t0 = first.decision.as_ref().map_or(f64::NAN, |d| d.at);
    assert!(t0.is_finite(), "start-up decision carries its time");
    let (obs, demand, replicas) = sim_inputs(t0, None);
    let mut published = sim.tick(t0, INTERVAL, &obs, demand, replicas);
    check(&first, &published, "start-up tick");
    let mut version = first.version;

    // Trace ticks on whole forecaster steps after the start-up tick (ahead
    // of the wall clock, which the configured future skew allows).
    let base = ((now_secs() / INTERVAL).ceil() + 1.0) * INTERVAL;
    let mut publications = 1usize;
    let mut sim_decisions = Vec::with_capacity(TICKS);
    for k in 0..TICKS {
        let now = tick_time(base, k);
        let batch = samples(base, k);
        let n = batch.len() as u32;
        batch_tx
            .send(IngestBatch {
                sequence: k as u64 + 1,
                samples: batch,
            })
            .await?;
        let ack = tokio::time::timeout(WAIT, acks.message())
            .await
            .map_err(|_| anyhow::anyhow!("no ingest ack within {WAIT:?}"))??
            .ok_or_else(|| anyhow::anyhow!("the ingest stream ended"))?;
        assert_eq!(
            (ack.accepted, ack.rejected),
            (n, 0),
            "tick {k}: every sample accepted: {:?}",
            ack.results.iter().find(|r| !r.accepted)
        );

        let c = ctl.clone();
        let current = tokio::task::spawn_blocking(move || c.tick_cluster(CLUSTER, now))
            .await??
            .ok_or_else(|| anyhow::anyhow!("cluster {CLUSTER} vanished"))?;

        let (obs, demand, replicas) = sim_inputs(now, Some(k));
        let want = sim.tick(now, INTERVAL, &obs, demand, replicas);
        let must_publish = want.differs_from(&published);
        assert_eq!(
            current.version > version,
            must_publish,
            "tick {k}: the service {} a version, the simulator path says it {}",
            if current.version > version {
                "published"
            } else {
                "did not publish"
            },
            if must_publish { "must" } else { "must not" },
        );
        if must_publish {
            let snap = next_snapshot(&mut watch).await?;
            assert_eq!(
                snap.version,
                version + 1,
                "tick {k}: versions are consecutive"
            );
            check(
                &snap,
                &want,
                &format!("tick {k} (version {})", snap.version),
            );
            version = snap.version;
            published = want.clone();
            publications += 1;
        }
        sim_decisions.push(want);
    }

    // The trace must make decisions change in every dimension the test
    // compares, or the equality above would prove little.
    assert!(publications >= 4, "only {publications} publications");
    assert!(
        sim_decisions
            .iter()
            .any(|d| !d.ejected.is_empty() || d.weights.len() < BACKENDS.len()),
        "the degrading backend is never ejected or drained"
    );
    assert!(
        sim_decisions
            .iter()
            .any(|d| d.weights != sim_decisions[0].weights),
        "weights never change"
    );
    let replica_counts: std::collections::BTreeSet<_> = sim_decisions
        .iter()
        .map(|d| d.scaling.desired_replicas)
        .collect();
    assert!(replica_counts.len() >= 2, "desired replicas never change");
    assert!(
        sim_decisions
            .iter()
            .any(|d| d.algorithm.algorithm != sim_decisions[0].algorithm.algorithm),
        "the algorithm never changes"
    );
    assert!(
        sim_decisions
            .iter()
            .any(|d| d.explanation.forecast.is_some()),
        "the forecaster never produced a forecast"
    );

    drop(batch_tx);
    drop(acks);
    drop(watch);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), server).await???;
    let closed = tokio::task::spawn_blocking(move || ctl.close(Duration::from_secs(10))).await?;
    assert!(closed, "the controller released its store");
    Ok(())
}
