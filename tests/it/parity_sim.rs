//! Parity of the whole control path: the simulator's own telemetry and
//! control ticks against the running service on an injected clock.
//!
//! `parity` feeds one hand-written observation trace to both drivers. This
//! test lets the simulator make the trace: a scenario (four backends of
//! speeds 1×, 1×, 2× and 4×, exponential service at 70 % load, the 4× host
//! failing for 40 s while a 1× host slows down, telemetry every 2 s delivered
//! 1 s late, a control tick every 2 s) runs through `aya_sim`'s engine with
//! `[[policy]] name = "aya"` and the `online` forecaster, and every control
//! tick is recorded as the engine ran it (the backends are named in the
//! order the service keeps them, sorted by name, so that both hand the
//! policy its observations in the same order): the observations its telemetry
//! path delivered, the demand it counted, the replica state and the
//! decision ([`aya_sim::engine::simulate_traced`]).
//!
//! The service then lives through the same ticks, in-process on
//! `127.0.0.1:0`, on a [`Clock::manual`] that stands at the simulator's
//! virtual time: before each tick the observations the simulator had
//! delivered by then go over the aya.v1 `MetricsService.Ingest` stream (one
//! gauge per figure, stamped with the time the simulator measured them, and
//! the cluster-level demand as a sample with an empty backend), the test
//! moves the clock to the tick's time, the service's own background ticker
//! runs the tick (no `tick_cluster` call, no real sleep), and the published
//! snapshots are read back over `DecisionService.Watch`. The service must
//! publish exactly when the simulator's decision differs from the last one
//! published, and what it publishes must equal the simulator's decision
//! field for field, explanation included.
//!
//! The service runs with `retrain_interval_seconds = 0`: its forecaster then
//! re-selects its model inline, on the forecaster's own schedule, exactly as
//! the simulator's `online` forecaster does. With a background retrain (the
//! default) the service moves model selection off the tick to the guarded
//! retrain instead (`aya_controller::forecasting::online_config`), which the
//! simulator does not model; the two then differ from the first inline
//! re-selection on (tick 77 here).

use std::time::Duration;

use aya_controller::clock::Clock;
use aya_controller::config::Config;
use aya_controller::convert::decision_to_wire;
use aya_controller::server::{Listeners, serve_controller};
use aya_controller::state::Controller;
use aya_policy::{BackendObservation, Decision};
use aya_proto::v1::decision_service_client::DecisionServiceClient;
use aya_proto::v1::metrics_service_client::MetricsServiceClient;
use aya_proto::v1::{ClusterSnapshot, IngestAck, IngestBatch, MetricKind, Sample, WatchRequest};
use aya_sim::engine::{ControlTick, simulate_traced};
use aya_sim::scenario::Scenario;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CLUSTER: &str = "parity-sim";
/// Control interval, telemetry interval and forecaster step, seconds.
const INTERVAL: f64 = 2.0;
const HORIZON: usize = 6;
/// Guard against hanging forever (not a timing assertion).
const WAIT: Duration = Duration::from_secs(15);

const SCENARIO: &str = r#"
name = "parity_sim"
description = "4 FCFS backends 1x/1x/2x/4x, exponential 10 ms at 1x, Poisson 560 req/s (rho = 0.7); d-fast fails 60-100 s, b-slow slows to 0.5x from 120 s."
duration = 200.0
timeout = 5.0
replications = 1

[workload]
kind = "poisson"
rate = 560.0

[service]
kind = "exponential"
mean = 0.01

[[backends]]
name = "a-slow"
speed = 1.0

[[backends]]
name = "b-slow"
speed = 1.0

[[backends]]
name = "c-mid"
speed = 2.0

[[backends]]
name = "d-fast"
speed = 4.0

[data_plane]
algorithm = "least_request"

[[faults]]
backend = "d-fast"
kind = "failure"
start = 60.0
duration = 40.0

[[faults]]
backend = "b-slow"
kind = "slowdown"
factor = 0.5
start = 120.0

[control]
interval = 2.0
telemetry_interval = 2.0
telemetry_delay = 1.0
forecast_horizon = 6

[forecaster]
name = "online"
params = { step_seconds = 2.0 }

[[policy]]
name = "aya"
"#;

/// The simulator's run: scenario, and every control tick it made.
fn simulator_trace() -> (Scenario, Vec<ControlTick>) {
    let sc = Scenario::parse(SCENARIO, std::path::Path::new("parity_sim.toml"))
        .expect("the parity scenario parses");
    assert_eq!(sc.model.control_interval, Some(INTERVAL));
    assert_eq!(sc.model.forecast_horizon, HORIZON);
    let seed = sc.seeds[0];
    let ctl = aya_sim::run::control_loop(&sc, &sc.policies[0], seed).expect("the aya loop");
    let run = simulate_traced(&sc.model, seed, Some(ctl)).expect("the simulation runs");
    assert!(
        run.metrics.completed > 50_000,
        "the scenario carried traffic"
    );
    (sc, run.control_trace)
}

fn service_config(sc: &Scenario, data_dir: &std::path::Path) -> Config {
    let n = sc.model.backends.len();
    let mut text = format!(
        "data_dir = {:?}\n\
         tick_interval_seconds = {INTERVAL:?}\n\
         forecast_step_seconds = {INTERVAL:?}\n\
         forecast_horizon = {HORIZON}\n\
         max_future_skew_seconds = 10.0\n\
         retrain_interval_seconds = 0.0\n\
         stale_after_seconds = 60.0\n\
         [[clusters]]\n\
         name = {CLUSTER:?}\n\
         policy = \"aya\"\n\
         algorithm = \"least_request\"\n\
         min_replicas = {n}\n\
         max_replicas = {n}\n\
         boot_time_seconds = 0.0\n\
         [clusters.policy_params]\n\
         request_timeout = {:?}\n",
        data_dir.display().to_string(),
        // The simulator tells Aya the clients' timeout; a user sets the
        // same from their route's.
        sc.model.timeout.expect("the parity scenario has a timeout"),
    );
    for (i, b) in sc.model.backends.iter().enumerate() {
        text.push_str(&format!(
            "[[clusters.backends]]\nname = {:?}\naddress = \"10.0.0.{}:8080\"\n",
            b.name,
            i + 1
        ));
    }
    Config::from_toml(&text, std::path::Path::new("parity-sim.toml")).expect("valid test config")
}

fn gauge(backend: &str, metric: &str, at: f64, value: f64) -> Sample {
    Sample {
        cluster: CLUSTER.into(),
        backend: backend.into(),
        metric: metric.into(),
        timestamp_ms: (at * 1000.0).round() as i64,
        value,
        kind: MetricKind::Gauge as i32,
        labels: Default::default(),
    }
}

/// The samples a metrics pipeline sends for one delivered observation.
fn samples_of(o: &BackendObservation) -> Vec<Sample> {
    let mut out = vec![
        gauge(&o.backend, "request_rate", o.observed_at, o.request_rate),
        gauge(&o.backend, "in_flight", o.observed_at, o.in_flight),
        gauge(
            &o.backend,
            "latency_p50_seconds",
            o.observed_at,
            o.latency_p50,
        ),
        gauge(
            &o.backend,
            "latency_p90_seconds",
            o.observed_at,
            o.latency_p90,
        ),
        gauge(
            &o.backend,
            "latency_p99_seconds",
            o.observed_at,
            o.latency_p99,
        ),
        gauge(&o.backend, "error_rate", o.observed_at, o.error_rate),
        gauge(
            &o.backend,
            "healthy",
            o.observed_at,
            if o.healthy { 1.0 } else { 0.0 },
        ),
    ];
    if let Some(cpu) = o.cpu_utilization {
        out.push(gauge(&o.backend, "cpu_utilization", o.observed_at, cpu));
    }
    out
}

async fn next_snapshot(
    watch: &mut tonic::Streaming<ClusterSnapshot>,
) -> anyhow::Result<ClusterSnapshot> {
    tokio::time::timeout(WAIT, watch.message())
        .await
        .map_err(|_| anyhow::anyhow!("no snapshot on the Watch stream within {WAIT:?}"))??
        .ok_or_else(|| anyhow::anyhow!("the Watch stream ended"))
}

fn check(snap: &ClusterSnapshot, want: &Decision, what: &str) {
    let got = snap
        .decision
        .as_ref()
        .expect("a published snapshot carries its decision");
    assert_eq!(
        got,
        &decision_to_wire(want),
        "{what}: the service's decision differs from the simulator's"
    );
    let got: Vec<(&str, u32)> = snap
        .endpoints
        .iter()
        .map(|e| (e.backend.as_str(), e.weight))
        .collect();
    let want: Vec<(&str, u32)> = want
        .weights
        .iter()
        .map(|w| (w.backend.as_str(), w.weight.max(1)))
        .collect();
    assert_eq!(got, want, "{what}: endpoint weights");
}

/// Wait until the service has run `n` control ticks (its tick counter): the
/// background ticker runs on a blocking thread once the clock passed its
/// deadline. Polls without advancing time.
async fn ticked(ctl: &Controller, n: u64) -> anyhow::Result<()> {
    tokio::time::timeout(WAIT, async {
        while ctl.metrics().ticks() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the service did not run tick {n} within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_on_a_manual_clock_replays_the_simulators_control_path() -> anyhow::Result<()> {
    let (sc, trace) = tokio::task::spawn_blocking(simulator_trace).await?;
    assert!(
        trace.len() >= 100,
        "one tick every 2 s for 200 s (and the drain)"
    );
    assert_eq!(trace[0].now, 0.0, "the first tick is at t = 0");

    let dir = tempfile::tempdir()?;
    let config = Config {
        init: true,
        ..service_config(&sc, dir.path())
    };
    // The service's clock stands at the simulator's t = 0 (the unix epoch).
    let clock = Clock::manual(0);
    let ctl = {
        let clock = clock.clone();
        tokio::task::spawn_blocking(move || Controller::open_with_clock(config, clock)).await??
    };
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

    // Tick 0 is the service's start-up tick: no telemetry yet on either side.
    ticked(&ctl, 1).await?;
    let first = next_snapshot(&mut watch).await?;
    assert_eq!(first.version, 1);
    check(&first, &trace[0].decision, "tick 0 (start-up)");
    let mut published = trace[0].decision.clone();
    let mut version = 1;
    let mut publications = 1usize;
    let mut sent_at = f64::NEG_INFINITY;
    let mut sequence = 0u64;

    for (k, tick) in trace.iter().enumerate().skip(1) {
        // What the simulator had delivered by this tick and the service has
        // not seen yet.
        let batch_at = tick
            .observations
            .iter()
            .map(|o| o.observed_at)
            .fold(f64::NEG_INFINITY, f64::max);
        if batch_at > sent_at && tick.observations.iter().any(|o| o.observed_at > 0.0) {
            let mut batch: Vec<Sample> = tick
                .observations
                .iter()
                .filter(|o| o.observed_at > sent_at)
                .flat_map(samples_of)
                .collect();
            batch.push(gauge("", "request_rate", batch_at, tick.demand_rps));
            let n = batch.len() as u32;
            sequence += 1;
            batch_tx
                .send(IngestBatch {
                    sequence,
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
            sent_at = batch_at;
        }

        // The service's ticker runs this tick when its clock reaches it.
        clock.set_ms((tick.now * 1000.0).round() as i64)?;
        ticked(&ctl, k as u64 + 1).await?;

        let want = &tick.decision;
        let must_publish = want.differs_from(&published);
        let current = ctl
            .publisher()
            .current(CLUSTER)
            .ok_or_else(|| anyhow::anyhow!("cluster {CLUSTER} vanished"))?;
        assert_eq!(
            current.version > version,
            must_publish,
            "tick {k} (t = {} s): the service {} a version, the simulator says it {}",
            tick.now,
            if current.version > version {
                "published"
            } else {
                "did not publish"
            },
            if must_publish { "must" } else { "must not" },
        );
        if must_publish {
            let snap = next_snapshot(&mut watch).await?;
            assert_eq!(snap.version, version + 1, "tick {k}: consecutive versions");
            check(&snap, want, &format!("tick {k} (t = {} s)", tick.now));
            version = snap.version;
            published = want.clone();
            publications += 1;
        }
    }

    // The run must exercise what the comparison covers.
    let decisions: Vec<&Decision> = trace.iter().map(|t| &t.decision).collect();
    assert!(publications >= 5, "only {publications} publications");
    assert!(
        decisions
            .iter()
            .any(|d| d.weights.iter().all(|w| w.backend != "d-fast")
                || d.ejected.iter().any(|b| b == "d-fast")),
        "the failed backend is never drained or ejected"
    );
    assert!(
        trace.iter().any(|t| t.replicas.ready < t.replicas.current),
        "no tick saw an unready replica"
    );
    assert!(
        decisions.iter().any(|d| d.explanation.forecast.is_some()),
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
