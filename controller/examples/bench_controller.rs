//! Benchmarks of the controller service (figures, not tests):
//!
//! 1. ingest throughput: in-process server on 127.0.0.1, 2 gRPC streams
//!    sending batches of 10 000 samples, every ack awaited (durable commits);
//!    the clock starts once the connections are up and the batches built;
//!    200 series of 10 000 points, each scored by its anomaly detector
//!    (`ingest-off`: the same with `[anomaly] enabled = false`; `anomaly`:
//!    the detectors alone on the same points, as the writer calls them);
//! 2. tick-to-watcher latency: 10 000 aya.v1 watch streams (in-process
//!    `watch_stream`, no network) on one cluster; time from publish to each
//!    watcher receiving the new version;
//! 3. memory per backend: RSS growth when adding backends through the admin path;
//! 4. memory while 1 000 gRPC Watch streams stop reading and 2 000 versions
//!    are published.
//!
//! Run: `cargo run --release -p aya-controller --example bench_controller`
//! (all four), or name some: `... -- ingest watch` (`memory`, `ingest`,
//! `ingest-off`, `anomaly`, `watch`, `stalled`).

// The clock rule (controller/clippy.toml) is for the service; a benchmark measures real elapsed time.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use aya_controller::config::{BackendConfig, ClusterConfig, Config};
use aya_controller::server::{Listeners, serve_controller};
use aya_controller::state::{Controller, Override};
use aya_policy::{BackendWeight, LbAlgorithm};
use aya_proto::v1 as pb;
use futures::StreamExt;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn config(dir: &std::path::Path, backends: usize) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        init: true,
        tick_interval_seconds: 3600.0,
        default_policy: "configured".into(),
        ingest_queue_batches: 64,
        clusters: vec![ClusterConfig {
            name: "web".into(),
            policy: String::new(),
            policy_params: Default::default(),
            algorithm: LbAlgorithm::WeightedRoundRobin,
            min_replicas: 1,
            max_replicas: backends as u32,
            boot_time_seconds: 10.0,
            backends: (0..backends)
                .map(|i| BackendConfig {
                    name: format!("b{i}"),
                    address: format!("10.0.{}.{}:8080", i / 250, i % 250 + 1),
                    weight_hint: 1,
                })
                .collect(),
            warm_start: None,
            orca: None,
            events: Default::default(),
        }],
        ..Config::default()
    }
}

async fn start(
    ctl: Controller,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = grpc.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = serve_controller(
            ctl,
            Listeners {
                grpc,
                metrics: None,
            },
            async move {
                let _ = rx.await;
            },
        )
        .await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    (addr, tx, task)
}

async fn bench_ingest(detect: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = tokio::task::spawn_blocking({
        let mut c = config(dir.path(), 100);
        c.anomaly.enabled = detect;
        move || Controller::open(c)
    })
    .await
    .expect("join")
    .expect("open");
    let (addr, stop, task) = start(ctl.clone()).await;
    let streams = 2usize;
    let batches_per_stream = 100usize;
    let batch = 10_000usize;
    let base = now_ms() - 3_600_000;
    // Connect and build every batch before the clock starts, so the figure
    // measures the service (and the client's encoding), not the construction
    // of 2 M sample structs.
    let mut prepared = Vec::new();
    for s in 0..streams {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let client = pb::metrics_service_client::MetricsServiceClient::new(ch)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let batches: Vec<pb::IngestBatch> = (0..batches_per_stream)
            .map(|k| pb::IngestBatch {
                sequence: k as u64,
                samples: (0..batch)
                    .map(|i| pb::Sample {
                        cluster: "web".into(),
                        backend: format!("b{}", i % 100),
                        metric: if s == 0 {
                            "in_flight".into()
                        } else {
                            "cpu_utilization".into()
                        },
                        timestamp_ms: base + (k * batch / 100 + i / 100) as i64,
                        value: i as f64,
                        kind: 1,
                        labels: Default::default(),
                    })
                    .collect(),
            })
            .collect();
        prepared.push((client, batches));
    }
    let started = Instant::now();
    let mut joins = Vec::new();
    for (mut client, batches) in prepared {
        joins.push(tokio::spawn(async move {
            let mut acks = client
                .ingest(tokio_stream::iter(batches))
                .await
                .expect("ingest")
                .into_inner();
            let mut accepted = 0u64;
            while let Some(a) = acks.message().await.expect("ack") {
                accepted += u64::from(a.accepted);
            }
            accepted
        }));
    }
    let mut total = 0;
    for j in joins {
        total += j.await.expect("join");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest{}: {total} samples acknowledged (durable) in {secs:.2} s = {:.0} samples/s ({} streams, batches of {batch}, {} commits, {:.1} ms per commit, {} anomaly detectors)",
        if detect {
            ""
        } else {
            " (anomaly detection off)"
        },
        total as f64 / secs,
        streams,
        ctl.metrics().batches(),
        ctl.metrics().commit_seconds() * 1000.0 / ctl.metrics().batches().max(1) as f64,
        ctl.anomalies().map_or(0, |a| a.detectors())
    );
    let _ = stop.send(());
    let _ = task.await;
}

/// The anomaly detectors alone, as the ingest writer calls them: 200
/// series × 10 000 points (the ingest benchmark's values), fed in groups
/// of 20 000 points.
fn bench_anomaly_observe() {
    use aya_controller::anomaly::{Anomalies, AnomalyConfig};
    use aya_controller::store::SeriesKey;
    let a = Anomalies::new(&AnomalyConfig::default());
    let keys: Vec<SeriesKey> = (0..200)
        .map(|i| SeriesKey {
            cluster: "web".into(),
            backend: format!("b{}", i % 100),
            metric: if i < 100 {
                "in_flight"
            } else {
                "cpu_utilization"
            }
            .into(),
            kind: 1,
            labels: Default::default(),
        })
        .collect();
    let base = now_ms() - 3_600_000;
    let groups: Vec<Vec<(u32, i64, f64)>> = (0..100i64)
        .map(|k| {
            (0..20_000usize)
                .map(|j| {
                    let (id, i) = ((j / 10_000) * 100 + j % 100, j % 10_000);
                    (id as u32, base + k * 100 + (i / 100) as i64, i as f64)
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for g in &groups {
        a.observe(g, |id| keys.get(id as usize));
    }
    let secs = started.elapsed().as_secs_f64();
    let n = groups.len() * 20_000;
    let (open, closed) = a.list("", true);
    println!(
        "anomaly detectors (writer path): {n} points of {} series in {secs:.3} s = {:.0} ns per point ({} open, {} closed anomalies)",
        a.detectors(),
        secs * 1e9 / n as f64,
        open.len(),
        closed.len()
    );
}

async fn bench_watch_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = tokio::task::spawn_blocking({
        let c = config(dir.path(), 3);
        move || Controller::open(c)
    })
    .await
    .expect("join")
    .expect("open");
    let c = ctl.clone();
    tokio::task::spawn_blocking(move || c.tick_all(0.0))
        .await
        .expect("join")
        .expect("tick");
    let n = 10_000usize;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    for _ in 0..n {
        let rx = ctl.publisher().subscribe("web").expect("cluster");
        let mut s = aya_controller::api::watch_stream(rx, ctl.closing(), 0);
        let done = done_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(snap)) = s.next().await {
                let _ = done.send((snap.version, Instant::now()));
            }
        });
    }
    // Drain the initial snapshots.
    for _ in 0..n {
        let _ = done_rx.recv().await;
    }
    let mut lat = Vec::with_capacity(n * 5);
    for round in 0..5u32 {
        let c = ctl.clone();
        let t0 = Instant::now();
        let v = tokio::task::spawn_blocking(move || {
            c.publish_override(
                "web",
                Override {
                    weights: vec![BackendWeight {
                        backend: "b0".into(),
                        weight: round + 2,
                    }],
                    algorithm: None,
                    desired_replicas: None,
                },
            )
        })
        .await
        .expect("join")
        .expect("publish")
        .version;
        let mut got = 0;
        while got < n {
            let Some((ver, at)) = done_rx.recv().await else {
                break;
            };
            if ver == v {
                lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                got += 1;
            }
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "watch fan-out: {n} watchers x 5 publications (publish incl. fsync of the snapshot -> watcher has it): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    ctl.begin_shutdown();
}

async fn bench_memory_per_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = rss_kib();
    let n = 10_000usize;
    let ctl = tokio::task::spawn_blocking({
        let c = config(dir.path(), n);
        move || {
            let ctl = Controller::open(c)?;
            ctl.tick_all(0.0)?;
            Ok::<_, aya_controller::state::ControllerError>(ctl)
        }
    })
    .await
    .expect("join")
    .expect("open");
    // Give each backend live series (in_flight and cpu) so its ingest state exists too.
    let mut samples = Vec::with_capacity(2 * n);
    let t = now_ms() - 1000;
    for i in 0..n {
        for m in ["in_flight", "cpu_utilization"] {
            samples.push(pb::Sample {
                cluster: "web".into(),
                backend: format!("b{i}"),
                metric: m.into(),
                timestamp_ms: t,
                value: 0.5,
                kind: 1,
                labels: Default::default(),
            });
        }
    }
    let r = ctl
        .submit(samples)
        .await
        .expect("submit")
        .await
        .expect("ack");
    assert!(r.iter().all(|x| x.accepted));
    let c = ctl.clone();
    tokio::task::spawn_blocking(move || c.tick_all(1.0))
        .await
        .expect("join")
        .expect("tick");
    let after = rss_kib();
    println!(
        "memory per backend: {:.2} KiB ({n} backends with 2 live series each, published; RSS {before} -> {after} KiB)",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    ctl.begin_shutdown();
}

async fn bench_stalled_watchers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = tokio::task::spawn_blocking({
        let c = config(dir.path(), 50);
        move || Controller::open(c)
    })
    .await
    .expect("join")
    .expect("open");
    let (addr, stop, task) = start(ctl.clone()).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        for _ in 0..100 {
            let mut client = pb::decision_service_client::DecisionServiceClient::new(ch.clone());
            let stream = client
                .watch(pb::WatchRequest {
                    cluster: "web".into(),
                    last_version: 0,
                })
                .await
                .expect("watch")
                .into_inner();
            held.push(stream); // never read
        }
    }
    let publish = |from: u32, to: u32| {
        let c = ctl.clone();
        tokio::task::spawn_blocking(move || {
            for i in from..to {
                let weights = (0..50)
                    .map(|b| BackendWeight {
                        backend: format!("b{b}"),
                        weight: 1 + (i + b) % 7,
                    })
                    .collect();
                c.publish_override(
                    "web",
                    Override {
                        weights,
                        algorithm: None,
                        desired_replicas: None,
                    },
                )
                .expect("publish");
            }
        })
    };
    publish(0, 200).await.expect("join");
    let warm = rss_kib();
    publish(200, 2200).await.expect("join");
    let after = rss_kib();
    publish(2200, 4200).await.expect("join");
    let later = rss_kib();
    println!(
        "stalled watchers: 1000 gRPC Watch streams not reading; RSS after 200 versions {warm} KiB, after 2200 {after} KiB, after 4200 {later} KiB (growth {} KiB, then {} KiB)",
        after as i64 - warm as i64,
        later as i64 - after as i64
    );
    drop(held);
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "machine: {} cores available; {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH
    );
    let names: Vec<String> = std::env::args().skip(1).collect();
    let known = [
        "memory",
        "ingest",
        "ingest-off",
        "anomaly",
        "watch",
        "stalled",
    ];
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        eprintln!("unknown benchmark {bad:?}; choose from {known:?}");
        std::process::exit(2);
    }
    let run = |n: &str| names.is_empty() || names.iter().any(|x| x == n);
    if run("memory") {
        bench_memory_per_backend().await;
    }
    if run("ingest") {
        bench_ingest(true).await;
    }
    if names.iter().any(|x| x == "ingest-off") {
        bench_ingest(false).await;
    }
    if run("anomaly") {
        bench_anomaly_observe();
    }
    if run("watch") {
        bench_watch_latency().await;
    }
    if run("stalled") {
        bench_stalled_watchers().await;
    }
}
