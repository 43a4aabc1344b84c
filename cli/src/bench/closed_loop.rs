//! `aya bench closed-loop`: Aya steering a real Envoy, measured against
//! Envoy's own balancers (issue 12, deliverable 6).
//!
//! Six emulated HTTP backends of unequal capacity (1×, 1×, 2×, 2×, 4×, 4×:
//! worker pools and slept exponential service times, see [`super::backend`]),
//! one real Envoy in front of them, and an open-loop Poisson load generator
//! measuring from the scheduled arrival ([`super::load`]). Arms:
//!
//! - `least_request`, `round_robin`: Envoy's own balancers on a static cluster,
//!   equal weights (what a user runs without Aya);
//! - `cswrr_orca`: Envoy's `client_side_weighted_round_robin` policy, weights
//!   from the ORCA `endpoint-load-metrics` header every backend response
//!   carries (utilisation of the worker pool and request rate);
//! - `aya_api`: Envoy takes CDS/EDS from Aya over ADS; the backends stream
//!   their metrics to Aya's `aya.v1` ingest every second;
//! - `aya_otel`: the same, but Aya's only metrics source is Envoy's own
//!   OpenTelemetry stats sink (docs/envoy.md).
//!
//! Conditions: `load60` and `load80` (Poisson arrivals at 60 % / 80 % of the
//! pool's capacity) and `slowdown60` (60 %, then one 4× backend's service
//! time triples a third of the way into the measured window). Each
//! (condition, arm) runs `repeats` times with a fresh Envoy, fresh backends
//! and a fresh Aya; arms are rotated between repeats so that the machine's
//! noise does not favour one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use aya_controller::config::{BackendConfig, ClusterConfig, Config};
use aya_policy::LbAlgorithm;
use aya_proto::v1 as pb;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backend::{self, Backend, BackendSpec, BackendState};
use super::load::{self, Outcome, Summary};

/// The cluster's name everywhere.
const CLUSTER: &str = "web";

/// An arm: who balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Arm {
    /// Envoy LEAST_REQUEST (power of two choices on active requests), equal weights.
    LeastRequest,
    /// Envoy ROUND_ROBIN, equal weights.
    RoundRobin,
    /// Envoy client-side WRR from the backends' ORCA headers.
    CswrrOrca,
    /// Aya over ADS, fed by the backends through `aya.v1` ingest.
    AyaApi,
    /// Aya over ADS, fed only by Envoy's OpenTelemetry stats sink.
    AyaOtel,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::LeastRequest => "least_request",
            Arm::RoundRobin => "round_robin",
            Arm::CswrrOrca => "cswrr_orca",
            Arm::AyaApi => "aya_api",
            Arm::AyaOtel => "aya_otel",
        }
    }
    fn is_aya(self) -> bool {
        matches!(self, Arm::AyaApi | Arm::AyaOtel)
    }
}

/// A load condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Condition {
    /// Poisson arrivals at 60 % of capacity.
    Load60,
    /// Poisson arrivals at 80 % of capacity.
    Load80,
    /// 60 %, and a 4× backend's service time triples a third into the measured window.
    Slowdown60,
}

impl Condition {
    pub fn name(self) -> &'static str {
        match self {
            Condition::Load60 => "load60",
            Condition::Load80 => "load80",
            Condition::Slowdown60 => "slowdown60",
        }
    }
    fn load(self) -> f64 {
        match self {
            Condition::Load60 | Condition::Slowdown60 => 0.6,
            Condition::Load80 => 0.8,
        }
    }
}

/// Index of the backend [`Condition::Slowdown60`] slows down, and by how much.
const SLOWED: usize = 5;
const SLOWDOWN: f64 = 3.0;

/// The pool: (workers, mean service ms) of b1..b6 — capacities 50, 50, 100,
/// 100, 200, 200 requests/s (1×, 1×, 2×, 2×, 4×, 4×), 700 in all.
const POOL: [(usize, u64); 6] = [(2, 40), (2, 40), (4, 40), (4, 40), (4, 20), (4, 20)];

fn pool() -> Vec<BackendSpec> {
    POOL.iter()
        .enumerate()
        .map(|(i, &(workers, ms))| BackendSpec {
            name: format!("b{}", i + 1),
            workers,
            service: Duration::from_millis(ms),
        })
        .collect()
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Envoy binary.
    pub envoy: PathBuf,
    /// Arms, in order.
    pub arms: Vec<Arm>,
    /// Conditions, in order.
    pub conditions: Vec<Condition>,
    /// Runs per (condition, arm).
    pub repeats: usize,
    /// Seconds of load before the measured window (Aya learns meanwhile).
    pub warmup: f64,
    /// Seconds of the measured window.
    pub measure: f64,
    /// Per-request timeout, seconds (Envoy's route timeout is 1 s less).
    pub timeout: f64,
    /// Seed of arrivals and service times.
    pub seed: u64,
    /// Where runs keep Envoy's logs and Aya's store.
    pub work_dir: PathBuf,
}

/// One run's result.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Arm.
    pub arm: Arm,
    /// Condition.
    pub condition: Condition,
    /// Repeat index.
    pub repeat: usize,
    /// Offered load, requests/s.
    pub rate: f64,
    /// Latency and success over the measured window.
    pub summary: Summary,
    /// Share of the measured window's answered requests per backend.
    pub shares: BTreeMap<String, f64>,
    /// Slowdown only: seconds from the slowdown until the slowed backend's
    /// per-second share stays (3 s in a row) within 1.25× of its new share of
    /// the capacity; `None` if it never does.
    pub reconverge_seconds: Option<f64>,
    /// Aya arms: the published snapshot each second (t, version, algorithm, weights).
    pub decisions: Vec<DecisionPoint>,
}

/// One poll of Aya's published snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionPoint {
    /// Seconds since the load started.
    pub t: f64,
    /// Snapshot version.
    pub version: u64,
    /// Algorithm published.
    pub algorithm: String,
    /// Weight per backend (0 = not published / ejected).
    pub weights: BTreeMap<String, u32>,
}

/// Run every (condition, arm, repeat) of `plan`, calling `progress` after each run.
pub async fn run(
    plan: &Plan,
    mut progress: impl FnMut(&RunResult),
) -> anyhow::Result<Vec<RunResult>> {
    std::fs::create_dir_all(&plan.work_dir)
        .with_context(|| format!("cannot create {}", plan.work_dir.display()))?;
    let mut results = Vec::new();
    for repeat in 0..plan.repeats {
        for &condition in &plan.conditions {
            let n = plan.arms.len();
            for k in 0..n {
                let arm = plan.arms[(k + repeat) % n];
                let seed = plan
                    .seed
                    .wrapping_add(repeat as u64 * 1000)
                    .wrapping_add(condition as u64 * 100);
                let r = run_one(plan, arm, condition, repeat, seed)
                    .await
                    .with_context(|| {
                        format!("{} / {} / repeat {repeat}", condition.name(), arm.name())
                    })?;
                progress(&r);
                results.push(r);
            }
        }
    }
    Ok(results)
}

async fn run_one(
    plan: &Plan,
    arm: Arm,
    condition: Condition,
    repeat: usize,
    seed: u64,
) -> anyhow::Result<RunResult> {
    let dir = plan
        .work_dir
        .join(format!("{}-{}-{repeat}", condition.name(), arm.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let specs = pool();
    let capacity: f64 = specs.iter().map(BackendSpec::capacity_rps).sum();
    let rate = condition.load() * capacity;
    let mut backends: Vec<Backend> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        backends.push(
            backend::start(s.clone(), seed ^ ((i as u64 + 1) << 32))
                .await
                .context("cannot start a backend")?,
        );
    }
    if arm == Arm::CswrrOrca {
        for b in &backends {
            b.state.orca_header.store(true, Ordering::Relaxed);
        }
    }

    // Aya, in process, for its arms.
    let aya = if arm.is_aya() {
        Some(Aya::start(&dir, &backends, plan.timeout - 1.0).await?)
    } else {
        None
    };
    let pusher = match (&aya, arm) {
        (Some(a), Arm::AyaApi) => Some(tokio::spawn(push_metrics(
            a.addr,
            backends
                .iter()
                .map(|b| (b.spec.name.clone(), b.state.clone()))
                .collect(),
        ))),
        _ => None,
    };

    let (listen, admin) = free_port_pair()?;
    let yaml = bootstrap(
        arm,
        listen,
        admin,
        aya.as_ref().map(|a| a.addr.port()),
        &backends,
        plan.timeout - 1.0,
    );
    let envoy = Envoy::spawn(&plan.envoy, &dir, &yaml)?;
    envoy
        .wait_ready(admin, &backends, Duration::from_secs(20))
        .await?;

    let started = Instant::now();
    let decision_log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let poller = aya
        .as_ref()
        .map(|a| tokio::spawn(poll_decisions(a.addr, started, decision_log.clone())));
    let slowed = backends[SLOWED].state.clone();
    let slow_at = plan.warmup + plan.measure / 3.0;
    let slow = condition == Condition::Slowdown60;
    let outcomes = load::run(
        listen,
        rate,
        Duration::from_secs_f64(plan.warmup + plan.measure),
        Duration::from_secs_f64(plan.timeout),
        seed,
        move |s| {
            if slow && s as f64 >= slow_at && (s as f64) < slow_at + 1.0 {
                slowed.set_slowdown(SLOWDOWN);
            }
        },
    )
    .await;
    if let Some(p) = poller {
        p.abort();
    }
    let decisions = std::mem::take(&mut *decision_log.lock().unwrap_or_else(|e| e.into_inner()));
    if let Some(p) = pusher {
        p.abort();
    }
    drop(envoy);
    if let Some(a) = aya {
        a.stop().await;
    }

    let measured: Vec<&Outcome> = outcomes.iter().filter(|o| o.at >= plan.warmup).collect();
    let summary = load::summarise(measured.iter().copied());
    let mut shares: BTreeMap<String, f64> = BTreeMap::new();
    let answered = measured
        .iter()
        .filter(|o| o.backend.is_some())
        .count()
        .max(1);
    for o in &measured {
        if let Some(b) = &o.backend {
            *shares.entry(b.clone()).or_insert(0.0) += 1.0 / answered as f64;
        }
    }
    let reconverge_seconds = if slow {
        let caps: Vec<f64> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| s.capacity_rps() / if i == SLOWED { SLOWDOWN } else { 1.0 })
            .collect();
        let target = caps[SLOWED] / caps.iter().sum::<f64>();
        reconvergence(&outcomes, &specs[SLOWED].name, slow_at, target * 1.25)
    } else {
        None
    };
    Ok(RunResult {
        arm,
        condition,
        repeat,
        rate,
        summary,
        shares,
        reconverge_seconds,
        decisions,
    })
}

/// Seconds after `from` until `backend`'s per-second share is ≤ `bound` for
/// three whole seconds in a row (the first of them counts).
fn reconvergence(outcomes: &[Outcome], backend: &str, from: f64, bound: f64) -> Option<f64> {
    let per_second = load::per_second_shares(outcomes);
    let first = from.ceil() as u64;
    let mut streak = 0;
    for (&s, counts) in per_second.range(first..) {
        let total: u64 = counts.values().sum();
        let mine = counts.get(backend).copied().unwrap_or(0);
        if total > 0 && (mine as f64 / total as f64) <= bound {
            streak += 1;
            if streak == 3 {
                return Some((s - 2) as f64 - from + 1.0);
            }
        } else {
            streak = 0;
        }
    }
    None
}

/// Two distinct free loopback ports (both held until both are known: a
/// port released by the first bind may be the second bind's).
fn free_port_pair() -> anyhow::Result<(u16, u16)> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

// ------------------------------------------------------------------ Aya

struct Aya {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), aya_controller::server::ServeError>>,
}

impl Aya {
    /// `route_timeout`: Envoy's route timeout in this run, which Aya is told
    /// as the clients' `request_timeout` (docs/policy.md step 9), as a user
    /// who configured both would.
    async fn start(dir: &Path, backends: &[Backend], route_timeout: f64) -> anyhow::Result<Aya> {
        let mut policy_params = serde_json::Map::new();
        policy_params.insert("request_timeout".into(), serde_json::json!(route_timeout));
        let config = Config {
            listen: "127.0.0.1:0".into(),
            metrics_listen: String::new(),
            data_dir: dir.join("aya"),
            init: true,
            tick_interval_seconds: 1.0,
            stale_after_seconds: 10.0,
            forecast_step_seconds: 0.0,
            retrain_interval_seconds: 0.0,
            default_policy: "aya".into(),
            clusters: vec![ClusterConfig {
                name: CLUSTER.into(),
                policy: String::new(),
                policy_params,
                algorithm: LbAlgorithm::LeastRequest,
                min_replicas: 1,
                max_replicas: backends.len() as u32,
                boot_time_seconds: 30.0,
                backends: backends
                    .iter()
                    .map(|b| BackendConfig {
                        name: b.spec.name.clone(),
                        address: format!("127.0.0.1:{}", b.port),
                        weight_hint: 1,
                    })
                    .collect(),
                warm_start: None,
                orca: None,
                events: Default::default(),
            }],
            ..Config::default()
        };
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(aya_controller::server::serve(
            aya_controller::server::Listeners {
                grpc,
                metrics: None,
            },
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        let t0 = Instant::now();
        loop {
            if task.is_finished() {
                let r = task.await.map_err(|e| anyhow!("aya task: {e}"))?;
                r.map_err(|e| anyhow!("aya serve failed: {e}"))?;
                bail!("aya serve stopped at start");
            }
            if channel(addr).await.is_ok() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("aya serve did not answer on {addr} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Aya { addr, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn channel(addr: std::net::SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(
        tonic::transport::Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    )
}

/// What each backend would report: every second, on one ingest stream.
async fn push_metrics(addr: std::net::SocketAddr, backends: Vec<(String, Arc<BackendState>)>) {
    for (_, s) in &backends {
        s.keep_latencies.store(true, Ordering::Relaxed);
    }
    let Ok(ch) = channel(addr).await else { return };
    let mut client = pb::metrics_service_client::MetricsServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestBatch>(4);
    let Ok(resp) = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut acks = resp.into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = acks.message().await {} });
    let mut prev: Vec<(f64, Instant)> = backends
        .iter()
        .map(|(_, s)| (s.busy_seconds(), Instant::now()))
        .collect();
    let mut sequence = 0u64;
    let mut last_ms = 0i64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now_ms = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0))
        .max(last_ms + 1);
        last_ms = now_ms;
        let mut samples = Vec::new();
        for (i, (name, s)) in backends.iter().enumerate() {
            let mut sample = |metric: &str, value: f64, kind: pb::MetricKind| {
                samples.push(pb::Sample {
                    cluster: CLUSTER.into(),
                    backend: name.clone(),
                    metric: metric.into(),
                    timestamp_ms: now_ms,
                    value,
                    kind: kind as i32,
                    labels: Default::default(),
                });
            };
            let gauge = pb::MetricKind::Gauge;
            sample(
                "requests_total",
                s.requests.load(Ordering::Relaxed) as f64,
                pb::MetricKind::Counter,
            );
            sample(
                "in_flight",
                s.in_flight.load(Ordering::Relaxed).max(0) as f64,
                gauge,
            );
            let (busy, t) = (s.busy_seconds(), Instant::now());
            let dt = t.duration_since(prev[i].1).as_secs_f64().max(1e-3);
            let util = ((busy - prev[i].0) / (s.workers() as f64 * dt)).clamp(0.0, 1.0);
            prev[i] = (busy, t);
            sample("cpu_utilization", util, gauge);
            sample("healthy", 1.0, gauge);
            sample("error_rate", 0.0, gauge);
            let mut lat = s.take_latencies();
            if !lat.is_empty() {
                lat.sort_by(f64::total_cmp);
                let q = |p: f64| load::quantile(&lat, p);
                sample("latency_p50_seconds", q(0.5), gauge);
                sample("latency_p90_seconds", q(0.9), gauge);
                sample("latency_p99_seconds", q(0.99), gauge);
            }
        }
        sequence += 1;
        if tx
            .send(pb::IngestBatch { sequence, samples })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Aya's published snapshot of the cluster once a second, into `sink`
/// (times from `t0`), until aborted.
async fn poll_decisions(
    addr: std::net::SocketAddr,
    t0: Instant,
    sink: Arc<std::sync::Mutex<Vec<DecisionPoint>>>,
) {
    let Ok(ch) = channel(addr).await else {
        return;
    };
    let mut client = pb::decision_service_client::DecisionServiceClient::new(ch);
    loop {
        if let Ok(snap) = client
            .get_snapshot(pb::GetSnapshotRequest {
                cluster: CLUSTER.into(),
            })
            .await
        {
            let snap = snap.into_inner();
            let point = DecisionPoint {
                t: t0.elapsed().as_secs_f64(),
                version: snap.version,
                algorithm: snap
                    .decision
                    .as_ref()
                    .and_then(|d| d.algorithm.as_ref())
                    .and_then(|a| pb::LbAlgorithm::try_from(a.algorithm).ok())
                    .map(|a| a.as_str_name().to_string())
                    .unwrap_or_default(),
                weights: snap
                    .endpoints
                    .iter()
                    .map(|e| (e.backend.clone(), e.weight))
                    .collect(),
            };
            let mut v = sink.lock().unwrap_or_else(|e| e.into_inner());
            if v.len() < 10_000 {
                v.push(point);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ------------------------------------------------------------------ Envoy

struct Envoy {
    child: Child,
    log: PathBuf,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static BASE_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Envoy {
    fn spawn(bin: &Path, dir: &Path, yaml: &str) -> anyhow::Result<Envoy> {
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, yaml).with_context(|| format!("cannot write {}", cfg.display()))?;
        let log = dir.join("envoy.log");
        let log_file = std::fs::File::create(&log)?;
        let base_id =
            (std::process::id() % 100_000) * 10 + BASE_ID.fetch_add(1, Ordering::Relaxed) % 10;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&cfg)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .args(["--base-id", &base_id.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("cannot start Envoy {}", bin.display()))?;
        Ok(Envoy { child, log })
    }

    /// Until Envoy's admin lists every backend of cluster `web`.
    async fn wait_ready(
        &self,
        admin: u16,
        backends: &[Backend],
        limit: Duration,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let clusters = admin_text(admin, "/clusters").await.unwrap_or_default();
            if backends
                .iter()
                .all(|b| clusters.contains(&format!("{CLUSTER}::127.0.0.1:{}::", b.port)))
            {
                return Ok(());
            }
            if t0.elapsed() > limit {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "Envoy did not get cluster {CLUSTER} within {limit:?}; log tail:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn admin_text(admin: u16, path: &str) -> Result<String, std::io::Error> {
    let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await?;
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    sock.read_to_string(&mut text).await?;
    Ok(text)
}

/// Envoy's bootstrap for `arm`.
fn bootstrap(
    arm: Arm,
    listen: u16,
    admin: u16,
    aya: Option<u16>,
    backends: &[Backend],
    route_timeout: f64,
) -> String {
    let grpc_cluster = |name: &str, port: u16| {
        format!(
            r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"#
        )
    };
    let endpoints: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}",
                b.port
            )
        })
        .collect();
    let static_web = |policy: &str| {
        format!(
            r#"  - name: {CLUSTER}
    type: STATIC
    connect_timeout: 1s
{policy}
    load_assignment:
      cluster_name: {CLUSTER}
      endpoints: [{{lb_endpoints: [{}]}}]
"#,
            endpoints.join(", ")
        )
    };
    let (dynamic, clusters, sinks) = match (arm, aya) {
        (Arm::LeastRequest, _) => (
            String::new(),
            static_web("    lb_policy: LEAST_REQUEST"),
            String::new(),
        ),
        (Arm::RoundRobin, _) => (
            String::new(),
            static_web("    lb_policy: ROUND_ROBIN"),
            String::new(),
        ),
        (Arm::CswrrOrca, _) => (
            String::new(),
            static_web(
                r#"    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.client_side_weighted_round_robin
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"#,
            ),
            String::new(),
        ),
        (Arm::AyaApi | Arm::AyaOtel, Some(port)) => {
            let dynamic = r#"dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: aya}}]
  cds_config: {ads: {}, resource_api_version: V3}
"#
            .to_string();
            let sinks = if arm == Arm::AyaOtel {
                r#"stats_sinks:
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service: {envoy_grpc: {cluster_name: aya}}
    report_counters_as_deltas: true
    report_histograms_as_deltas: true
"#
                .to_string()
            } else {
                String::new()
            };
            (dynamic, grpc_cluster("aya", port), sinks)
        }
        (Arm::AyaApi | Arm::AyaOtel, None) => unreachable!("Aya arms start Aya"),
    };
    format!(
        r#"node: {{id: bench, cluster: bench}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
{dynamic}stats_flush_interval: 1s
{sinks}static_resources:
  clusters:
{clusters}  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            validate_clusters: false
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: {CLUSTER}, timeout: {route_timeout}s}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

// ------------------------------------------------------------------ report

/// One (condition, arm) row of the table: medians over repeats.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Condition.
    pub condition: Condition,
    /// Arm.
    pub arm: Arm,
    /// Runs.
    pub runs: usize,
    /// Median of the runs' p50, seconds.
    pub p50: f64,
    /// Median of the runs' p99, seconds.
    pub p99: f64,
    /// Smallest and largest p99 of the runs.
    pub p99_range: (f64, f64),
    /// Lowest success of the runs (0..1).
    pub success_min: f64,
    /// Median over repeats of p99 / least_request's p99 in the same repeat.
    pub p99_vs_least_request: Option<f64>,
    /// Largest over repeats of that ratio.
    pub p99_vs_least_request_max: Option<f64>,
    /// Median re-convergence seconds (slowdown; runs that never re-converged count as infinite).
    pub reconverge_seconds: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Aggregate runs into rows, in the order conditions then arms first appear.
pub fn rows(results: &[RunResult]) -> Vec<Row> {
    let mut keys: Vec<(Condition, Arm)> = Vec::new();
    for r in results {
        if !keys.contains(&(r.condition, r.arm)) {
            keys.push((r.condition, r.arm));
        }
    }
    keys.sort_by_key(|&(c, _)| c);
    keys.into_iter()
        .map(|(condition, arm)| {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.condition == condition && r.arm == arm)
                .collect();
            let p99s: Vec<f64> = runs.iter().map(|r| r.summary.p99).collect();
            let ratios: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    results
                        .iter()
                        .find(|b| {
                            b.condition == condition
                                && b.arm == Arm::LeastRequest
                                && b.repeat == r.repeat
                        })
                        .map(|b| r.summary.p99 / b.summary.p99)
                })
                .collect();
            let reconv: Vec<f64> = runs
                .iter()
                .map(|r| r.reconverge_seconds.unwrap_or(f64::INFINITY))
                .collect();
            Row {
                condition,
                arm,
                runs: runs.len(),
                p50: median(runs.iter().map(|r| r.summary.p50).collect()),
                p99: median(p99s.clone()),
                p99_range: (
                    p99s.iter().copied().fold(f64::INFINITY, f64::min),
                    p99s.iter().copied().fold(0.0, f64::max),
                ),
                success_min: runs.iter().map(|r| r.summary.success).fold(1.0, f64::min),
                p99_vs_least_request: (!ratios.is_empty()).then(|| median(ratios.clone())),
                p99_vs_least_request_max: ratios.iter().copied().reduce(f64::max),
                reconverge_seconds: (condition == Condition::Slowdown60).then(|| median(reconv)),
            }
        })
        .collect()
}

/// The table as markdown.
pub fn markdown(rows: &[Row], plan: &Plan) -> String {
    let mut s = format!(
        "Closed loop: real Envoy, 6 backends (capacity 50/50/100/100/200/200 rps), open-loop Poisson; \
         {} repeat(s), {:.0} s warm-up + {:.0} s measured per run\n\n\
         | condition | arm | runs | p50 ms | p99 ms (min–max) | success (min) | p99 / LEAST_REQUEST (median, max) | re-converge s |\n\
         |---|---|---|---|---|---|---|---|\n",
        plan.repeats, plan.warmup, plan.measure
    );
    for r in rows {
        let ratio = match (r.p99_vs_least_request, r.p99_vs_least_request_max) {
            (Some(m), Some(x)) => format!("{m:.2} ({x:.2})"),
            _ => "–".into(),
        };
        let reconv = match r.reconverge_seconds {
            Some(x) if x.is_finite() => format!("{x:.0}"),
            Some(_) => "never".into(),
            None => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} ({:.0}–{:.0}) | {:.2} % | {ratio} | {reconv} |\n",
            r.condition.name(),
            r.arm.name(),
            r.runs,
            r.p50 * 1e3,
            r.p99 * 1e3,
            r.p99_range.0 * 1e3,
            r.p99_range.1 * 1e3,
            r.success_min * 100.0,
        ));
    }
    s
}
