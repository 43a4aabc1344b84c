//! Envoy feeds Aya with no extra software (issue 12, deliverable 2), against
//! a REAL Envoy.
//!
//! All on 127.0.0.1: four HTTP backends of unequal capacity (two fast ones:
//! 5 ms service time, 8 requests at a time; two slow ones: 40 ms, 2 at a
//! time; the service time is slept, so the 2-core machine is not the
//! bottleneck), the whole Aya service in-process (policy `aya`, one tick a
//! second, starting on `least_request` with equal weights), and an Envoy
//! whose bootstrap is the one docs/envoy.md documents: CDS and EDS from Aya
//! over ADS, and the OpenTelemetry stats sink pushing to Aya's gRPC port.
//! **No metrics source but Envoy itself**: Aya's CDS turns on
//! `per_endpoint_stats`, Envoy exports `cluster.endpoint.*` every second, Aya
//! maps them to its per-backend metrics (Little's law gives the latency) and
//! the weights it publishes over EDS must move toward the fast backends.
//!
//! A second stats sink points at a recorder in the test, so the test also
//! checks (and prints) what Envoy actually exports.
//!
//! Envoy comes from `AYA_ENVOY_BIN` or `<workspace>/.venv-envoy/bin/envoy`;
//! without it the test prints a skip note, unless `AYA_REQUIRE_ENVOY=1` (CI).

// The clock rule (controller/clippy.toml) is for the service; a real Envoy runs in real time.
#![allow(clippy::disallowed_methods)]

mod common;

use common::envoy::{EnvoyGuard, free_port};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya_controller::config::{BackendConfig, ClusterConfig, Config};
use aya_policy::LbAlgorithm;
use aya_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};

const CLUSTER: &str = "web";

/// (service time, concurrency) of each backend: b0, b1 fast; b2, b3 slow.
const BACKENDS: [(Duration, usize); 4] = [
    (Duration::from_millis(5), 8),
    (Duration::from_millis(5), 8),
    (Duration::from_millis(40), 2),
    (Duration::from_millis(40), 2),
];
const FAST: [usize; 2] = [0, 1];
const SLOW: [usize; 2] = [2, 3];

/// Closed-loop clients through Envoy.
const CLIENTS: usize = 12;

// ---------------------------------------------------------------- Envoy binary

// ---------------------------------------------------------------- backends

/// An HTTP/1.1 keep-alive backend answering with its own port after
/// `service` (slept), at most `concurrency` requests at a time (the others
/// queue).
async fn start_backend(service: Duration, concurrency: usize) -> (u16, oneshot::Sender<()>) {
    start_backend_answering(service, concurrency, 200).await
}

/// [`start_backend`] answering every request with `status`.
async fn start_backend_answering(
    service: Duration,
    concurrency: usize,
    status: u16,
) -> (u16, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let port = listener.local_addr().expect("backend addr").port();
    let slots = Arc::new(Semaphore::new(concurrency));
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => return,
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else { return };
                    tokio::spawn(serve_conn(sock, port, service, slots.clone(), status));
                }
            }
        }
    });
    (port, stop_tx)
}

async fn serve_conn(
    sock: TcpStream,
    port: u16,
    service: Duration,
    slots: Arc<Semaphore>,
    status: u16,
) {
    let _ = sock.set_nodelay(true);
    let mut reader = BufReader::new(sock);
    let body = port.to_string();
    let mut line = String::new();
    loop {
        let mut saw_request = false;
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if saw_request {
                    break;
                }
                continue;
            }
            saw_request = true;
        }
        {
            let Ok(_slot) = slots.acquire().await else {
                return;
            };
            tokio::time::sleep(service).await;
        }
        let resp = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            if status == 200 { "OK" } else { "Error" },
            body.len()
        );
        if reader.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- HTTP client

/// `GET /` on a keep-alive connection: (status, body). Envoy answers with
/// `content-length` bodies here (the backends send one).
async fn get(reader: &mut BufReader<TcpStream>) -> Result<(u16, String), String> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("connection closed in headers".into());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| format!("bad {l:?}"))?;
        }
    }
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn admin_get(admin: u16, path: &str) -> Result<String, String> {
    common::envoy::admin_text(admin, path).await
}

/// Requests per backend port, from when the clients started.
#[derive(Default)]
struct Traffic {
    per_port: HashMap<u16, u64>,
    errors: u64,
}

/// `CLIENTS` closed-loop clients through Envoy until `stop` is set.
fn start_load(
    listen: u16,
    stop: Arc<AtomicBool>,
    traffic: Arc<Mutex<Traffic>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (stop, traffic) = (stop.clone(), traffic.clone());
            tokio::spawn(async move {
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        match TcpStream::connect(("127.0.0.1", listen)).await {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                conn = Some(BufReader::new(s));
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let r = get(c).await;
                    let mut t = traffic.lock().expect("traffic lock");
                    match r {
                        Ok((200, body)) => match body.trim().parse::<u16>() {
                            Ok(p) => *t.per_port.entry(p).or_insert(0) += 1,
                            Err(_) => t.errors += 1,
                        },
                        Ok(_) => t.errors += 1,
                        Err(_) => {
                            t.errors += 1;
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect()
}

// ---------------------------------------------------------------- what Envoy exports

/// One exported metric as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    name: String,
    kind: String,
    attributes: BTreeSet<String>,
    example: String,
}

/// A second OTLP receiver Envoy pushes to: remembers the cluster- and
/// endpoint-level metrics of cluster `web` (names, types, attribute keys).
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<BTreeMap<String, Seen>>>,
    exports: Arc<Mutex<u64>>,
}

#[tonic::async_trait]
impl MetricsService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        let mut seen = self.seen.lock().expect("recorder lock");
        *self.exports.lock().expect("recorder lock") += 1;
        for rm in &req.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let interesting = m.name.contains("endpoint")
                        || m.name.contains("upstream_rq_time")
                        || m.name == "cluster.upstream_rq_total";
                    if !interesting || seen.contains_key(&m.name) {
                        continue;
                    }
                    let (kind, attrs, example) = describe(m);
                    if !attrs.iter().any(|a| a.contains(CLUSTER)) {
                        continue;
                    }
                    seen.insert(
                        m.name.clone(),
                        Seen {
                            name: m.name.clone(),
                            kind,
                            attributes: attrs
                                .iter()
                                .map(|a| a.split('=').next().unwrap_or("").to_string())
                                .collect(),
                            example,
                        },
                    );
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Kind (with temporality), `key=value` attributes and timing of the first
/// data point of `m`.
fn describe(m: &opentelemetry_proto::tonic::metrics::v1::Metric) -> (String, Vec<String>, String) {
    let kv = |a: &[opentelemetry_proto::tonic::common::v1::KeyValue]| -> Vec<String> {
        a.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    other => format!("{other:?}"),
                };
                format!("{}={v}", kv.key)
            })
            .collect()
    };
    let timing = |start: u64, t: u64| {
        format!(
            "start={start} time={t} span_ms={}",
            t.saturating_sub(start) / 1_000_000
        )
    };
    match &m.data {
        Some(Data::Gauge(g)) => g.data_points.first().map_or_else(
            || ("gauge".into(), vec![], String::new()),
            |p| {
                (
                    "gauge".into(),
                    kv(&p.attributes),
                    format!(
                        "{:?} {}",
                        p.value,
                        timing(p.start_time_unix_nano, p.time_unix_nano)
                    ),
                )
            },
        ),
        Some(Data::Sum(s)) => s.data_points.first().map_or_else(
            || ("sum".into(), vec![], String::new()),
            |p| {
                (
                    format!(
                        "sum temporality={} monotonic={}",
                        s.aggregation_temporality, s.is_monotonic
                    ),
                    kv(&p.attributes),
                    format!(
                        "{:?} {}",
                        p.value,
                        timing(p.start_time_unix_nano, p.time_unix_nano)
                    ),
                )
            },
        ),
        Some(Data::Histogram(h)) => h.data_points.first().map_or_else(
            || ("histogram".into(), vec![], String::new()),
            |p| {
                (
                    format!(
                        "histogram temporality={} unit={:?}",
                        h.aggregation_temporality, m.unit
                    ),
                    kv(&p.attributes),
                    format!(
                        "count={} bounds={} {}",
                        p.count,
                        p.explicit_bounds.len(),
                        timing(p.start_time_unix_nano, p.time_unix_nano)
                    ),
                )
            },
        ),
        other => (
            format!("{other:?}").chars().take(40).collect(),
            vec![],
            String::new(),
        ),
    }
}

// ---------------------------------------------------------------- Envoy process

/// The bootstrap of docs/envoy.md ("Envoy with Aya, no other software"),
/// with the test's ports, plus a second stats sink to the test's recorder.
fn bootstrap(aya_port: u16, recorder_port: u16, listen_port: u16, admin_port: u16) -> String {
    format!(
        r#"node: {{id: envoy-1, cluster: edge}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: aya}}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
stats_flush_interval: 1s
stats_sinks:
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service: {{envoy_grpc: {{cluster_name: aya}}}}
    report_counters_as_deltas: true
    report_histograms_as_deltas: true
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service: {{envoy_grpc: {{cluster_name: recorder}}}}
    report_counters_as_deltas: true
    report_histograms_as_deltas: true
static_resources:
  clusters:
  - name: aya
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: aya
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {aya_port}}}}}}}}}]}}]
  - name: recorder
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: recorder
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {recorder_port}}}}}}}}}]}}]
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
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
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: {CLUSTER}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

fn start_envoy(bin: &Path, aya_port: u16, recorder_port: u16) -> (EnvoyGuard, u16, u16) {
    let (listen, admin) = (free_port(), free_port());
    let yaml = bootstrap(aya_port, recorder_port, listen, admin);
    (common::envoy::spawn(bin, &yaml, "warning"), listen, admin)
}

// ---------------------------------------------------------------- Aya side

fn aya_config(dir: &Path, ports: &[u16]) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        init: true,
        tick_interval_seconds: 1.0,
        stale_after_seconds: 10.0,
        forecast_step_seconds: 0.0,
        retrain_interval_seconds: 0.0,
        default_policy: "aya".into(),
        clusters: vec![ClusterConfig {
            name: CLUSTER.into(),
            policy: String::new(),
            policy_params: Default::default(),
            algorithm: LbAlgorithm::LeastRequest,
            min_replicas: 1,
            max_replicas: ports.len() as u32,
            boot_time_seconds: 10.0,
            backends: ports
                .iter()
                .enumerate()
                .map(|(i, p)| BackendConfig {
                    name: format!("b{i}"),
                    address: format!("127.0.0.1:{p}"),
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

/// Published weight per backend name (an ejected backend is absent: 0).
fn weights(snap: &pb::ClusterSnapshot) -> Vec<u32> {
    (0..BACKENDS.len())
        .map(|i| {
            snap.endpoints
                .iter()
                .find(|e| e.backend == format!("b{i}"))
                .map_or(0, |e| e.weight)
        })
        .collect()
}

/// The fast backends each weigh at least `margin` times every slow one.
fn favours_fast(w: &[u32], margin: f64) -> bool {
    let fast_min = FAST.iter().map(|&i| w[i]).min().unwrap_or(0);
    let slow_max = SLOW.iter().map(|&i| w[i]).max().unwrap_or(0);
    fast_min > 0 && f64::from(fast_min) >= margin * f64::from(slow_max)
}

// ---------------------------------------------------------------- the test

/// Weights converge toward the fast backends from Envoy's own stats alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_converge_to_fast_backends_from_envoy_stats_alone() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let t_start = Instant::now();

    let mut ports = Vec::new();
    let mut stops = Vec::new();
    for (service, concurrency) in BACKENDS {
        let (p, s) = start_backend(service, concurrency).await;
        ports.push(p);
        stops.push(s);
    }

    let recorder = Recorder::default();
    let rec_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind recorder");
    let rec_port = rec_listener.local_addr().expect("recorder addr").port();
    let (rec_stop, rec_stop_rx) = oneshot::channel::<()>();
    let rec_task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(recorder.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(rec_listener),
                async {
                    let _ = rec_stop_rx.await;
                },
            ),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let aya = common::start(aya_config(dir.path(), &ports)).await;
    let decisions = pb::decision_service_client::DecisionServiceClient::new(aya.channel().await);
    let snapshot = |mut c: pb::decision_service_client::DecisionServiceClient<
        tonic::transport::Channel,
    >| async move {
        c.get_snapshot(pb::GetSnapshotRequest {
            cluster: CLUSTER.into(),
        })
        .await
        .map(|r| r.into_inner())
    };
    let first = snapshot(decisions.clone()).await.expect("initial snapshot");
    let w0 = weights(&first);
    assert!(
        w0.iter().all(|w| *w > 0 && *w == w0[0]),
        "starts with equal weights: {w0:?}"
    );

    let (envoy, listen, admin) = start_envoy(&bin, aya.addr.port(), rec_port);

    // Wait until Envoy has the cluster from Aya's CDS/EDS (a hang guard).
    let t0 = Instant::now();
    loop {
        let clusters = admin_get(admin, "/clusters").await.unwrap_or_default();
        if ports
            .iter()
            .all(|p| clusters.contains(&format!("{CLUSTER}::127.0.0.1:{p}::")))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "Envoy never got cluster {CLUSTER} from Aya\nenvoy log tail:\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("Envoy has the cluster after {:?}", t_start.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let clients = start_load(listen, stop.clone(), traffic.clone());
    let load_started = Instant::now();

    // Converged: the fast backends weigh ≥ 2× every slow one on three
    // consecutive checks a second apart. Give up after 40 s of load.
    let mut streak = 0;
    let mut last = first.clone();
    while load_started.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(snap) = snapshot(decisions.clone()).await else {
            continue;
        };
        let w = weights(&snap);
        eprintln!(
            "t={:>4.1}s v{} weights {w:?} algorithm {:?}",
            load_started.elapsed().as_secs_f64(),
            snap.version,
            snap.decision
                .as_ref()
                .and_then(|d| d.algorithm.as_ref())
                .map(|a| a.algorithm)
        );
        streak = if favours_fast(&w, 2.0) { streak + 1 } else { 0 };
        last = snap;
        if streak >= 3 {
            break;
        }
    }
    let converged_after = load_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }

    let seen: Vec<Seen> = recorder
        .seen
        .lock()
        .expect("recorder lock")
        .values()
        .cloned()
        .collect();
    eprintln!(
        "Envoy exported ({} exports to the recorder), cluster {CLUSTER}:",
        recorder.exports.lock().map(|e| *e).unwrap_or(0)
    );
    for s in &seen {
        eprintln!(
            "  {} [{}] attributes {:?} e.g. {}",
            s.name, s.kind, s.attributes, s.example
        );
    }
    let (per_port, errors) = {
        let t = traffic.lock().expect("traffic lock");
        (t.per_port.clone(), t.errors)
    };
    eprintln!(
        "requests per backend {:?}, errors {errors}",
        ports
            .iter()
            .map(|p| per_port.get(p).copied().unwrap_or(0))
            .collect::<Vec<_>>()
    );
    if let Some(d) = &last.decision
        && let Some(ex) = &d.explanation
    {
        eprintln!("last decision: inputs {:?} rules {:?}", ex.inputs, ex.rules);
    }

    // What Aya learned came from Envoy: the stored series of a fast backend.
    let mut metrics_client =
        pb::metrics_service_client::MetricsServiceClient::new(aya.channel().await);
    let history = metrics_client
        .query_history(pb::QueryHistoryRequest {
            cluster: CLUSTER.into(),
            backend: "b0".into(),
            metric: String::new(),
            start_ms: 0,
            end_ms: 0,
            limit: 0,
        })
        .await
        .expect("query history")
        .into_inner();
    let stored: BTreeSet<String> = history.series.iter().map(|s| s.metric.clone()).collect();
    // The Little's-law latency of the fast backend is a plausible time (its
    // 5 ms service plus Envoy's and the debug build's overhead), not off by
    // the unit of Envoy's start times. The average over the run: one flush
    // samples `rq_active` once, so single points are often 0.
    let mean_latency = history
        .series
        .iter()
        .find(|s| s.metric == "latency_mean_seconds")
        .filter(|s| !s.points.is_empty())
        .map(|s| s.points.iter().map(|p| p.value).sum::<f64>() / s.points.len() as f64);
    eprintln!(
        "Aya stored for b0 (from Envoy only): {stored:?}; average latency_mean_seconds {mean_latency:?}"
    );
    eprintln!("total test time {:?}", t_start.elapsed());

    drop(envoy);
    aya.stop().await;
    let _ = rec_stop.send(());
    let _ = rec_task.await;
    drop(stops);

    // Envoy exports the per-endpoint stats Aya's CDS turned on, with the
    // attributes the default mapping reads.
    for name in [
        "cluster.endpoint.rq_total",
        "cluster.endpoint.rq_success",
        "cluster.endpoint.rq_active",
        "cluster.endpoint.healthy",
    ] {
        let s = seen.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "Envoy did not export {name}; saw {:?}",
                seen.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
        for a in ["envoy.cluster_name", "envoy.endpoint_address"] {
            assert!(
                s.attributes.contains(a),
                "{name} lacks attribute {a}: {s:?}"
            );
        }
    }
    for m in [
        "requests_total",
        "in_flight",
        "healthy",
        "error_rate",
        "latency_mean_seconds",
    ] {
        assert!(stored.contains(m), "Aya stored no {m} for b0: {stored:?}");
    }
    assert!(
        mean_latency.is_some_and(|l| (0.0005..0.5).contains(&l)),
        "b0's latency_mean_seconds {mean_latency:?} is not a plausible time for a 5 ms backend"
    );
    let w = weights(&last);
    assert!(
        favours_fast(&w, 2.0),
        "after {converged_after:?} of load the weights {w:?} do not favour the fast backends \
         b0, b1 (5 ms, 8 at a time) over b2, b3 (40 ms, 2 at a time) by 2x"
    );
    let total: u64 = per_port.values().sum();
    assert!(
        total > 0 && errors * 100 <= total,
        "{errors} errors in {total} requests"
    );
    eprintln!("converged after {converged_after:?} of load");
}

/// `otlp_listen`: a second port serving only OTLP Export, feeding the same
/// ingest (no Envoy needed). The aya.v1 services are not on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_listen_serves_only_export_into_the_same_ingest() {
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, number_data_point,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let otlp_port = free_port();
    let mut config = aya_config(dir.path(), &[18080, 18081, 18082, 18083]);
    config.otlp_listen = format!("127.0.0.1:{otlp_port}");
    let aya = common::start(config).await;

    let endpoint = format!("http://127.0.0.1:{otlp_port}");
    let mut client = None;
    for _ in 0..100 {
        if let Ok(c) = MetricsServiceClient::connect(endpoint.clone()).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.expect("otlp_listen accepts connections");
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let now_ns = u64::try_from(common::now_ms()).expect("clock after 1970") * 1_000_000;
    let req = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "cluster.endpoint.rq_active".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![
                                kv("envoy.cluster_name", CLUSTER),
                                kv("envoy.endpoint_address", "127.0.0.1:18081"),
                            ],
                            time_unix_nano: now_ns,
                            value: Some(number_data_point::Value::AsInt(3)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let resp = client.export(req).await.expect("export").into_inner();
    assert_eq!(resp.partial_success, None, "accepted whole");

    let mut history = pb::metrics_service_client::MetricsServiceClient::new(aya.channel().await)
        .query_history(pb::QueryHistoryRequest {
            cluster: CLUSTER.into(),
            backend: "b1".into(),
            metric: "in_flight".into(),
            start_ms: 0,
            end_ms: 0,
            limit: 0,
        })
        .await
        .expect("query history")
        .into_inner();
    let points = history.series.pop().map(|s| s.points).unwrap_or_default();
    assert_eq!(
        points.len(),
        1,
        "stored under the backend with that address"
    );
    assert_eq!(points[0].value, 3.0);

    // Only OTLP is served there.
    let channel = tonic::transport::Channel::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let status = pb::decision_service_client::DecisionServiceClient::new(channel)
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: CLUSTER.into(),
        })
        .await
        .expect_err("aya.v1 is not on otlp_listen");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    aya.stop().await;
}

/// An Envoy whose cluster `web` is static, with consecutive-5xx outlier
/// detection and per-endpoint stats, pushing its stats to Aya only.
fn static_od_bootstrap(aya_port: u16, listen_port: u16, admin_port: u16, ports: &[u16]) -> String {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}"
            )
        })
        .collect();
    let endpoints = endpoints.join(", ");
    format!(
        r#"node: {{id: envoy-od, cluster: edge}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
stats_flush_interval: 1s
stats_sinks:
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service: {{envoy_grpc: {{cluster_name: aya}}}}
    report_counters_as_deltas: true
    report_histograms_as_deltas: true
static_resources:
  clusters:
  - name: aya
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: aya
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {aya_port}}}}}}}}}]}}]
  - name: {CLUSTER}
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    track_cluster_stats: {{per_endpoint_stats: true}}
    outlier_detection:
      consecutive_5xx: 3
      enforcing_consecutive_5xx: 100
      interval: 1s
      base_ejection_time: 3s
      max_ejection_percent: 50
      enforcing_success_rate: 0
      enforcing_consecutive_gateway_failure: 0
      enforcing_failure_percentage: 0
    load_assignment:
      cluster_name: {CLUSTER}
      endpoints: [{{lb_endpoints: [{endpoints}]}}]
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: {CLUSTER}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

/// What Envoy's stats sink says about a host its outlier detection ejected
/// (docs/xds.md left it open until session 13): its per-endpoint `healthy`
/// gauge drops to 0, so Aya, fed by Envoy alone, sees the ejection as the
/// backend being unhealthy, and the healthy host stays at 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_host_is_exported_unhealthy_and_aya_reads_it_back() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let (good, good_stop) = start_backend(Duration::from_millis(1), 8).await;
    let (bad, bad_stop) = start_backend_answering(Duration::from_millis(1), 8, 503).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let aya = common::start(aya_config(dir.path(), &[good, bad])).await;
    let (listen, admin) = (free_port(), free_port());
    let yaml = static_od_bootstrap(aya.addr.port(), listen, admin, &[good, bad]);
    let envoy = common::envoy::spawn(&bin, &yaml, "warning");

    // Requests until Envoy has ejected the failing host (hang guard 20 s).
    let t0 = Instant::now();
    let bad_host = format!("{CLUSTER}::127.0.0.1:{bad}::health_flags::");
    let (mut ok, mut failed) = (0u32, 0u32);
    loop {
        if let Ok(sock) = TcpStream::connect(("127.0.0.1", listen)).await {
            let mut reader = BufReader::new(sock);
            for _ in 0..10 {
                match get(&mut reader).await {
                    Ok((200, _)) => ok += 1,
                    Ok(_) => failed += 1,
                    Err(_) => break,
                }
            }
        }
        let clusters = admin_get(admin, "/clusters").await.unwrap_or_default();
        let flags = clusters
            .lines()
            .find(|l| l.starts_with(&bad_host))
            .unwrap_or("")
            .to_string();
        if flags.contains("failed_outlier_check") {
            eprintln!("ejected after {ok} ok / {failed} failed: {flags}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "Envoy never ejected the failing host ({ok} ok / {failed} failed)\n{clusters}\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ejected_at = common::now_ms();

    // Aya's stored `healthy` series of each backend, from Envoy's sink.
    let mut metrics = pb::metrics_service_client::MetricsServiceClient::new(aya.channel().await);
    let latest = |series: &[pb::HistorySeries], backend: &str| {
        series
            .iter()
            .filter(|s| s.backend == backend)
            .flat_map(|s| s.points.iter())
            .filter(|p| p.timestamp_ms >= ejected_at)
            .max_by_key(|p| p.timestamp_ms)
            .map(|p| p.value)
    };
    let t1 = Instant::now();
    let (good_h, bad_h) = loop {
        let series = metrics
            .query_history(pb::QueryHistoryRequest {
                cluster: CLUSTER.into(),
                metric: "healthy".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().series)
            .unwrap_or_default();
        let (g, b) = (latest(&series, "b0"), latest(&series, "b1"));
        if g.is_some() && b.is_some() {
            break (g, b);
        }
        assert!(
            t1.elapsed() < Duration::from_secs(15),
            "no `healthy` from Envoy's sink after the ejection: {series:?}\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("after the ejection Aya read healthy b0={good_h:?} b1={bad_h:?}");
    assert_eq!(bad_h, Some(0.0), "the ejected host is exported unhealthy");
    assert_eq!(good_h, Some(1.0), "the healthy host stays healthy");

    // With no more traffic, Envoy returns the host after its ejection time
    // (3 s) and the gauge goes back to 1: it follows the ejection itself.
    let t2 = Instant::now();
    loop {
        let series = metrics
            .query_history(pb::QueryHistoryRequest {
                cluster: CLUSTER.into(),
                backend: "b1".into(),
                metric: "healthy".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().series)
            .unwrap_or_default();
        let zero_at = series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.value == 0.0)
            .map(|p| p.timestamp_ms)
            .min();
        let back = series
            .iter()
            .flat_map(|s| s.points.iter())
            .any(|p| p.value == 1.0 && zero_at.is_some_and(|z| p.timestamp_ms > z));
        if back {
            eprintln!("returned to healthy {:?} after the ejection", t2.elapsed());
            break;
        }
        assert!(
            t2.elapsed() < Duration::from_secs(20),
            "the ejected host never came back healthy: {series:?}\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    drop(envoy);
    aya.stop().await;
    let _ = good_stop.send(());
    let _ = bad_stop.send(());
}
