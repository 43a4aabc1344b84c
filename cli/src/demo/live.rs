//! The live part of the demo: the real controller service, in-process, fed
//! over real gRPC, watched by a real data-plane client.
//!
//! 1. `server::serve` starts on `127.0.0.1:0` with one cluster (`demo`: the
//!    four synthetic backends) and a short tick interval;
//! 2. a data-plane client opens an aya.v1 `Watch` on the cluster and records
//!    every snapshot (version, weights, algorithm, desired replicas) it gets;
//! 3. a metrics client replays recent history over the aya.v1 `Ingest`
//!    stream, one minute of series time per `step_wall` of wall time, each
//!    sample stamped with the current wall-clock time (the service rejects
//!    samples from the past beyond its retention, and a live feed is what it
//!    is built for), and counts the per-sample acknowledgements;
//! 4. the service is shut down through its shutdown future.
//!
//! This is an open loop: the replayed metrics were recorded under equal
//! weights, so they do not react to what Aya publishes. The closed loop is
//! what the simulator stage measures. Wall-clock figures here are reported,
//! never put on the scoreboard (which must be identical run to run).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aya_controller::config::{BackendConfig, ClusterConfig, Config};
use aya_controller::server::{Listeners, serve};
use aya_proto::v1::decision_service_client::DecisionServiceClient;
use aya_proto::v1::metrics_service_client::MetricsServiceClient;
use aya_proto::v1::{IngestBatch, MetricKind, Sample, WatchRequest};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::DemoError;
use super::history::History;
use super::plan::Plan;
use super::progress::Bar;

/// The cluster the demo declares.
pub const CLUSTER: &str = "demo";

/// One snapshot as the watching data plane received it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SeenSnapshot {
    /// Snapshot version.
    pub version: u64,
    /// Milliseconds after the watch opened.
    pub after_ms: u64,
    /// Weights per backend.
    pub weights: Vec<(String, u32)>,
    /// Data-plane algorithm (aya.v1 enum name).
    pub algorithm: String,
    /// Desired replicas.
    pub desired_replicas: u32,
    /// Rules that fired.
    pub rules: Vec<String>,
}

/// What the live stage did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LiveSummary {
    /// Address the controller listened on.
    pub address: String,
    /// Minutes of history replayed.
    pub minutes: usize,
    /// Samples sent.
    pub samples_sent: u64,
    /// Samples acknowledged as accepted.
    pub accepted: u64,
    /// Samples rejected (with reasons counted in `reject_reasons`).
    pub rejected: u64,
    /// Rejection reasons and counts.
    pub reject_reasons: Vec<(String, u64)>,
    /// Snapshots the watcher received, in order.
    pub snapshots: Vec<SeenSnapshot>,
    /// Wall-clock seconds of the stage.
    pub wall_seconds: f64,
}

impl LiveSummary {
    /// One-paragraph text summary (stderr).
    pub fn text(&self) -> String {
        let mut s = format!(
            "controller on {}: replayed {} min of metrics, {} samples sent, {} accepted, {} rejected; watcher received {} snapshot(s)",
            self.address,
            self.minutes,
            self.samples_sent,
            self.accepted,
            self.rejected,
            self.snapshots.len()
        );
        if let Some(last) = self.snapshots.last() {
            let w: Vec<String> = last
                .weights
                .iter()
                .map(|(b, w)| format!("{b}={w}"))
                .collect();
            let _ = write!(
                s,
                "; last v{}: weights {} algorithm {} replicas {}",
                last.version,
                w.join(" "),
                last.algorithm,
                last.desired_replicas
            );
        }
        s
    }

    /// HTML section for the report.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<p>Controller served on <code>{}</code>. The metrics client replayed {} minutes of per-backend metrics \
             ({} samples) over <code>aya.v1.MetricsService/Ingest</code>: {} accepted, {} rejected{}. A data-plane \
             client watching <code>aya.v1.DecisionService/Watch</code> received {} snapshot(s). Stage took {:.1} s.</p>",
            self.address,
            self.minutes,
            self.samples_sent,
            self.accepted,
            self.rejected,
            if self.reject_reasons.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.reject_reasons
                        .iter()
                        .map(|(r, n)| format!("{r}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.snapshots.len(),
            self.wall_seconds
        );
        h.push_str("<table><tr><th>version</th><th>ms after watch</th><th>weights</th><th>algorithm</th><th>replicas</th><th>rules</th></tr>");
        // The first and the last few snapshots: enough to see the weights move.
        let n = self.snapshots.len();
        for (i, s) in self.snapshots.iter().enumerate() {
            if n > 12 && i == 6 {
                let _ = write!(
                    h,
                    "<tr><td colspan=\"6\" class=\"l\">… {} more …</td></tr>",
                    n - 12
                );
            }
            if n > 12 && (6..n - 6).contains(&i) {
                continue;
            }
            let w: Vec<String> = s.weights.iter().map(|(b, w)| format!("{b}={w}")).collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"nw\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                s.version,
                s.after_ms,
                w.join(" "),
                s.algorithm,
                s.desired_replicas,
                s.rules
                    .join("; ")
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
            );
        }
        h.push_str("</table>");
        h
    }
}

/// The metrics the service understands, from the synthetic ones: (synthetic
/// name, service name, conversion).
fn convert(metric: &str, value: f64, rps: f64) -> Option<(&'static str, f64)> {
    Some(match metric {
        "rps" => ("request_rate", value),
        "cpu" => ("cpu_utilization", (value / 100.0).clamp(0.0, 1.0)),
        "latency_p50" => ("latency_p50_seconds", value),
        "latency_p99" => ("latency_p99_seconds", value),
        "in_flight" => ("in_flight", value),
        "errors" => (
            "error_rate",
            if rps > 0.0 {
                (value / rps).clamp(0.0, 1.0)
            } else {
                0.0
            },
        ),
        _ => return None,
    })
}

/// The steps of the history to replay: the `plan.stream_hours` leading up to
/// 14:00 (the daily peak) of the day before the test day, when the small
/// backends run hot under equal weights.
fn replay_range(history: &History, plan: &Plan) -> std::ops::Range<usize> {
    let per_min = (60 / plan.interval_secs.max(1)).max(1) as usize;
    let per_day = (86_400 / plan.interval_secs) as usize;
    let previous_day_start = history.data.traffic.len().saturating_sub(2 * per_day);
    let end = previous_day_start + 14 * 60 * per_min;
    let len = plan.stream_hours as usize * 60 * per_min;
    end.saturating_sub(len)..end.min(history.test_start)
}

/// Run the live stage. `data_dir` is the controller's store (created fresh);
/// `step_wall` is the wall time per replayed minute.
pub fn run(
    history: &History,
    plan: &Plan,
    data_dir: &Path,
    step_wall: Duration,
    bar: &Bar,
) -> Result<LiveSummary, DemoError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DemoError::Live(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(run_async(history, plan, data_dir, step_wall, bar))
}

async fn run_async(
    history: &History,
    plan: &Plan,
    data_dir: &Path,
    step_wall: Duration,
    bar: &Bar,
) -> Result<LiveSummary, DemoError> {
    let started = Instant::now();
    if data_dir.exists() {
        std::fs::remove_dir_all(data_dir).map_err(|source| DemoError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
    }
    let live = |m: String| DemoError::Live(m);
    let backends: Vec<BackendConfig> = history
        .data
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| BackendConfig {
            name: b.name.clone(),
            address: format!("127.0.0.1:{}", 18081 + i),
            weight_hint: 1,
        })
        .collect();
    let config = Config {
        data_dir: data_dir.to_path_buf(),
        metrics_listen: String::new(),
        tick_interval_seconds: step_wall.as_secs_f64().max(0.05),
        stale_after_seconds: 30.0,
        clusters: vec![ClusterConfig {
            name: CLUSTER.into(),
            policy: "aya".into(),
            policy_params: serde_json::Map::new(),
            algorithm: aya_policy::LbAlgorithm::LeastRequest,
            min_replicas: 1,
            max_replicas: 16,
            boot_time_seconds: plan.boot_secs,
            backends,
            warm_start: None,
            orca: None,
            events: Default::default(),
        }],
        ..Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| live(format!("cannot bind 127.0.0.1:0: {e}")))?;
    let addr = listener.local_addr().map_err(|e| live(e.to_string()))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        Listeners {
            grpc: listener,
            metrics: None,
        },
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let outcome = drive(history, plan, &format!("http://{addr}"), step_wall, bar).await;
    let _ = stop_tx.send(());
    let served = server.await;
    let mut summary = outcome?;
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(live(format!("controller failed: {e}"))),
        Err(e) => return Err(live(format!("controller task failed: {e}"))),
    }
    summary.address = addr.to_string();
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn connect<T>(
    url: &str,
    make: impl Fn(tonic::transport::Channel) -> T,
) -> Result<T, DemoError> {
    let mut last = String::new();
    for _ in 0..50 {
        match tonic::transport::Endpoint::from_shared(url.to_string()) {
            Ok(ep) => match ep.connect().await {
                Ok(ch) => return Ok(make(ch)),
                Err(e) => last = e.to_string(),
            },
            Err(e) => return Err(DemoError::Live(format!("bad address {url}: {e}"))),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(DemoError::Live(format!(
        "cannot connect to the controller at {url}: {last}"
    )))
}

async fn drive(
    history: &History,
    plan: &Plan,
    url: &str,
    step_wall: Duration,
    bar: &Bar,
) -> Result<LiveSummary, DemoError> {
    let live = |m: String| DemoError::Live(m);
    // The data plane: watch the cluster and record every snapshot.
    let mut decisions = connect(url, DecisionServiceClient::new).await?;
    let mut watch = decisions
        .watch(WatchRequest {
            cluster: CLUSTER.into(),
            last_version: 0,
        })
        .await
        .map_err(|s| live(format!("Watch({CLUSTER}) failed: {}", s.message())))?
        .into_inner();
    let watch_opened = Instant::now();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(item) = watch.next().await {
            let Ok(snap) = item else { break };
            let snapshot = seen_snapshot(snap, watch_opened);
            if let Ok(mut v) = sink.lock() {
                v.push(snapshot);
            }
        }
    });

    // The metrics pipeline: one batch per replayed minute, stamped "now".
    let mut metrics = connect(url, MetricsServiceClient::new).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<IngestBatch>(4);
    let mut acks = metrics
        .ingest(ReceiverStream::new(rx))
        .await
        .map_err(|s| live(format!("Ingest failed: {}", s.message())))?
        .into_inner();
    let ack_reader = tokio::spawn(async move {
        let (mut ok, mut bad) = (0u64, 0u64);
        let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
        while let Some(item) = acks.next().await {
            let Ok(ack) = item else { break };
            ok += u64::from(ack.accepted);
            bad += u64::from(ack.rejected);
            for r in ack.results.iter().filter(|r| !r.accepted) {
                let name = aya_proto::v1::RejectReason::try_from(r.reason)
                    .map(|x| x.as_str_name().to_string())
                    .unwrap_or_default();
                *reasons.entry(name).or_default() += 1;
            }
        }
        (ok, bad, reasons)
    });
    let range = replay_range(history, plan);
    let minutes = range.len();
    let mut sent = 0u64;
    let mut ticker = tokio::time::interval(step_wall);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for (seq, i) in range.enumerate() {
        ticker.tick().await;
        let ts = aya_controller::clock::Clock::system().now_ms();
        let samples = minute_samples(history, i, ts);
        sent += samples.len() as u64;
        if tx
            .send(IngestBatch {
                sequence: seq as u64 + 1,
                samples,
            })
            .await
            .is_err()
        {
            break;
        }
        bar.inc(&format!("minute {}/{minutes}", seq + 1));
    }
    drop(tx);
    let (accepted, rejected, reasons) = ack_reader.await.map_err(|e| live(e.to_string()))?;
    // Let the controller tick on the last minute, then stop watching.
    tokio::time::sleep(step_wall * 3).await;
    watcher.abort();
    let _ = watcher.await;
    let snapshots = seen.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(LiveSummary {
        address: String::new(),
        minutes,
        samples_sent: sent,
        accepted,
        rejected,
        reject_reasons: reasons.into_iter().collect(),
        snapshots,
        wall_seconds: 0.0,
    })
}

/// What the data plane recorded of one watched cluster snapshot.
fn seen_snapshot(snap: aya_proto::v1::ClusterSnapshot, watch_opened: Instant) -> SeenSnapshot {
    let d = snap.decision.unwrap_or_default();
    let alg = aya_proto::v1::LbAlgorithm::try_from(d.algorithm.as_ref().map_or(0, |a| a.algorithm))
        .map(|a| {
            a.as_str_name()
                .trim_start_matches("LB_ALGORITHM_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into());
    SeenSnapshot {
        version: snap.version,
        after_ms: watch_opened.elapsed().as_millis() as u64,
        weights: d
            .weights
            .iter()
            .map(|w| (w.backend.clone(), w.weight))
            .collect(),
        algorithm: alg,
        desired_replicas: d.scaling.as_ref().map_or(0, |s| s.desired_replicas),
        rules: d.explanation.map(|e| e.rules).unwrap_or_default(),
    }
}

/// The gauge samples of every backend for one replayed minute, stamped `ts`.
fn minute_samples(history: &History, i: usize, ts: i64) -> Vec<Sample> {
    let mut samples = Vec::new();
    for b in &history.data.backends {
        let rps = b.rps.get(i).copied().unwrap_or(0.0);
        for m in aya_forecaster::synth::METRICS {
            let Some(v) = b.metric(m).and_then(|s| s.get(i)).copied() else {
                continue;
            };
            let Some((name, value)) = convert(m, v, rps) else {
                continue;
            };
            samples.push(Sample {
                cluster: CLUSTER.into(),
                backend: b.name.clone(),
                metric: name.into(),
                timestamp_ms: ts,
                value,
                kind: MetricKind::Gauge as i32,
                labels: Default::default(),
            });
        }
    }
    samples
}
