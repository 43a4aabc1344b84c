//! ORCA as a metrics source: Aya as an out-of-band ORCA client (gRFC A51).
//!
//! For every cluster with `[clusters.orca] enabled = true`, one task per
//! backend opens `xds.service.orca.v3.OpenRcaService/StreamCoreMetrics` on
//! the backend (its `address`, or its host with `orca.port`; TLS verified
//! with `tls_ca` when set), asks for a
//! report every `report_interval_seconds`, and turns each
//! `OrcaLoadReport` into the backend's samples ([`report_samples`]), which
//! go through the same ingest writer as every other source (validation,
//! the store, per-sample rejection reasons). No other metrics shipper is
//! needed for those backends.
//!
//! | Aya metric | from the `OrcaLoadReport` |
//! |---|---|
//! | `cpu_utilization` | `application_utilization` when > 0, else `cpu_utilization` (gRFC A58's choice) |
//! | `memory_utilization` | `mem_utilization` |
//! | `request_rate` | `rps_fractional` when > 0, else the deprecated `rps` |
//! | `error_rate` | `eps / request_rate` (capped at 1), only when the request rate is > 0 |
//! | `in_flight`, `latency_p50_seconds`, `latency_p90_seconds`, `latency_p99_seconds`, `latency_mean_seconds` | the `named_metrics` entry of exactly that name, when the backend sends one |
//!
//! A report with a NaN, infinite, negative or out-of-range value is
//! rejected whole (nothing of it is ingested) and counted by reason in
//! `aya_orca_reports_rejected_total`. The supervisor ([`spawn`]) follows the
//! registry: backends added, removed or moved (admin API, reload) get their
//! streams started, stopped or restarted within a second. In the HA mode
//! only the leader opens streams. Streams reconnect
//! with an exponential backoff from 0.1 s to `max_backoff_seconds`, and stop
//! when the service does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aya_proto::xds::data::orca::v3::OrcaLoadReport;
use aya_proto::xds::service::orca::v3::OrcaLoadReportRequest;
use aya_proto::xds::service::orca::v3::open_rca_service_client::OpenRcaServiceClient;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::ingest::{MetricKind, Sample};
use crate::state::Controller;

/// Shortest wait before a reconnect.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How often the supervisor compares its streams with the registry (also
/// woken by every publish).
const RESYNC: Duration = Duration::from_secs(1);

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest `cpu_utilization` / `application_utilization` accepted: ORCA
/// allows values above 1 (a backend over its limit), not without bound.
pub const MAX_UTILIZATION: f64 = 100.0;

/// Bounds of `report_interval_seconds`.
pub const REPORT_INTERVAL_BOUNDS: (f64, f64) = (0.1, 60.0);

/// `named_metrics` entries ingested under the same name (Aya's backend
/// gauges); every other named metric is ignored.
pub const NAMED_METRICS: [&str; 5] = [
    "in_flight",
    "latency_p50_seconds",
    "latency_p90_seconds",
    "latency_p99_seconds",
    "latency_mean_seconds",
];

/// `[clusters.orca]`: read the cluster's backends' ORCA load reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrcaConfig {
    /// Open the streams (default `true` once the table is written; `false`
    /// keeps the settings but opens none).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The backends' ORCA port, when it is not the port of their `address`
    /// (the host is the address's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Seconds between two reports, asked of the backend (it may raise it
    /// to its own minimum), in [0.1, 60].
    #[serde(default = "default_interval")]
    pub report_interval_seconds: f64,
    /// Longest wait between reconnect attempts (the wait doubles from 0.1 s).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: f64,
    /// PEM file of the CA that signs the backends' ORCA certificates: when
    /// set, the streams use TLS (`https://`). Read at every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The name the backends' certificates are verified against (default:
    /// the host of each backend's address); only with `tls_ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// PEM certificate (chain) Aya presents to backends that ask for a
    /// client certificate (mutual TLS); with `tls_key`, only with `tls_ca`.
    /// Read at every connection, so a rotated certificate is picked up at the
    /// next reconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<std::path::PathBuf>,
}

fn yes() -> bool {
    true
}
fn default_interval() -> f64 {
    1.0
}
fn default_max_backoff() -> f64 {
    10.0
}

impl Default for OrcaConfig {
    fn default() -> Self {
        OrcaConfig {
            enabled: true,
            port: None,
            report_interval_seconds: default_interval(),
            max_backoff_seconds: default_max_backoff(),
            tls_ca: None,
            tls_server_name: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl OrcaConfig {
    /// Check every value; `field` is the dotted path used in messages
    /// (e.g. `clusters[0].orca`). Errors are `(field, message)`.
    pub fn validate(&self, field: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("{field}.{k}"), m));
        if self.port == Some(0) {
            return bad("port", "0: must be a TCP port in 1..=65535".into());
        }
        let (lo, hi) = REPORT_INTERVAL_BOUNDS;
        for (k, v, lo, hi) in [
            (
                "report_interval_seconds",
                self.report_interval_seconds,
                lo,
                hi,
            ),
            ("max_backoff_seconds", self.max_backoff_seconds, 0.1, 3600.0),
        ] {
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return bad(
                    k,
                    format!("{v} is out of range: must be a number of seconds in [{lo}, {hi}]"),
                );
            }
        }
        if let Some(p) = &self.tls_ca
            && !p.is_file()
        {
            return bad("tls_ca", format!("{} is not a readable file", p.display()));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls_key", "missing: tls_cert needs its key".into()),
            (None, Some(_)) => {
                return bad("tls_cert", "missing: tls_key needs its certificate".into());
            }
            (Some(c), Some(k)) => {
                if self.tls_ca.is_none() {
                    return bad(
                        "tls_cert",
                        "goes with tls_ca (a client certificate is only sent over TLS)".into(),
                    );
                }
                for (name, p) in [("tls_cert", c), ("tls_key", k)] {
                    if !p.is_file() {
                        return bad(name, format!("{} is not a readable file", p.display()));
                    }
                }
            }
            (None, None) => {}
        }
        if let Some(n) = &self.tls_server_name {
            if self.tls_ca.is_none() {
                return bad(
                    "tls_server_name",
                    "goes with tls_ca (TLS to the backends)".into(),
                );
            }
            if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
                return bad(
                    "tls_server_name",
                    format!("{n:?} is not a DNS name or an IP address"),
                );
            }
        }
        Ok(())
    }
}

/// Why a report was refused before ingest (the `reason` label of
/// `aya_orca_reports_rejected_total`; ingest's own reasons, such as
/// `unknown_backend`, are counted under their names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReport {
    /// `not_finite`, `negative` or `out_of_range`.
    pub reason: &'static str,
    /// The field and value at fault.
    pub message: String,
}

/// The samples of one report of `backend` at `timestamp_ms` (see the
/// module docs for the mapping), or why the whole report is refused.
pub fn report_samples(
    cluster: &str,
    backend: &str,
    report: &OrcaLoadReport,
    timestamp_ms: i64,
) -> Result<Vec<Sample>, BadReport> {
    let check = |field: &str, v: f64, max: f64| -> Result<f64, BadReport> {
        let (reason, why) = if !v.is_finite() {
            ("not_finite", "is not a finite number")
        } else if v < 0.0 {
            ("negative", "is negative")
        } else if v > max {
            ("out_of_range", "is out of range")
        } else {
            return Ok(v);
        };
        Err(BadReport {
            reason,
            message: format!("{field} = {v} {why} (must be in [0, {max}])"),
        })
    };
    let cpu = check("cpu_utilization", report.cpu_utilization, MAX_UTILIZATION)?;
    let app = check(
        "application_utilization",
        report.application_utilization,
        MAX_UTILIZATION,
    )?;
    let mem = check("mem_utilization", report.mem_utilization, 1.0)?;
    let rps_fractional = check("rps_fractional", report.rps_fractional, f64::MAX)?;
    let eps = check("eps", report.eps, f64::MAX)?;
    let mut named = Vec::new();
    for name in NAMED_METRICS {
        if let Some(v) = report.named_metrics.get(name) {
            named.push((
                name,
                check(&format!("named_metrics[{name:?}]"), *v, f64::MAX)?,
            ));
        }
    }
    #[allow(deprecated)]
    let rps = if rps_fractional > 0.0 {
        rps_fractional
    } else {
        report.rps as f64
    };
    let utilization = if app > 0.0 { app } else { cpu };
    let gauge = |metric: &str, value: f64| {
        Sample::new(
            cluster,
            backend,
            metric,
            MetricKind::Gauge,
            timestamp_ms,
            value,
        )
    };
    let mut out = vec![
        gauge("cpu_utilization", utilization),
        gauge("memory_utilization", mem),
        gauge("request_rate", rps),
    ];
    if rps > 0.0 {
        out.push(gauge("error_rate", (eps / rps).min(1.0)));
    }
    out.extend(named.into_iter().map(|(n, v)| gauge(n, v)));
    Ok(out)
}

/// Where one backend's stream goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The cluster.
    pub cluster: String,
    /// The backend.
    pub backend: String,
    /// `http://host:port`.
    pub uri: String,
    /// Asked report interval.
    pub interval: Duration,
    /// Longest reconnect wait.
    pub max_backoff: Duration,
    /// TLS (`None`: plaintext).
    pub tls: Option<TargetTls>,
}

/// TLS to one backend's ORCA service.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetTls {
    /// PEM file of the CA that signs the backend's certificate.
    pub ca: std::path::PathBuf,
    /// The name the backend's certificate is verified against.
    pub server_name: String,
    /// Aya's client certificate and key files (mutual TLS).
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The streams a cluster wants: one per backend when `orca` is enabled.
/// A backend whose address cannot be split is skipped (config validation
/// refuses such addresses).
pub fn targets(cluster: &ClusterConfig, orca: Option<&OrcaConfig>) -> Vec<Target> {
    let Some(orca) = orca.filter(|o| o.enabled) else {
        return Vec::new();
    };
    cluster
        .backends
        .iter()
        .filter_map(|b| {
            let (host, port) = b.host_port().ok()?;
            let port = orca.port.unwrap_or(port);
            let tls = orca.tls_ca.clone().map(|ca| TargetTls {
                ca,
                server_name: orca.tls_server_name.clone().unwrap_or_else(|| host.clone()),
                identity: orca.tls_cert.clone().zip(orca.tls_key.clone()),
            });
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            Some(Target {
                cluster: cluster.name.clone(),
                backend: b.name.clone(),
                uri: format!("{scheme}://{host}:{port}"),
                tls,
                interval: Duration::from_secs_f64(orca.report_interval_seconds),
                max_backoff: Duration::from_secs_f64(orca.max_backoff_seconds).max(MIN_BACKOFF),
            })
        })
        .collect()
}

/// Labels of the per-backend series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    cluster: String,
    backend: String,
}

/// Labels of the rejection counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    cluster: String,
    backend: String,
    reason: String,
}

#[derive(Debug)]
struct MetricsInner {
    registry: Registry,
    connected: Family<BackendLabels, Gauge>,
    reports: Family<BackendLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    reconnects: Family<BackendLabels, Counter>,
}

/// Handles to the ORCA clients' series (cheap to clone, shared).
#[derive(Debug, Clone)]
pub struct OrcaMetrics(Arc<MetricsInner>);

impl Default for OrcaMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OrcaMetrics {
    /// New, zero series.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected = Family::<BackendLabels, Gauge>::default();
        let reports = Family::<BackendLabels, Counter>::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        let reconnects = Family::<BackendLabels, Counter>::default();
        registry.register(
            "aya_orca_streams_connected",
            "1 while the backend's ORCA StreamCoreMetrics stream is open",
            connected.clone(),
        );
        registry.register(
            "aya_orca_reports",
            "ORCA load reports received from the backend",
            reports.clone(),
        );
        registry.register(
            "aya_orca_reports_rejected",
            "ORCA load reports not ingested whole, by reason (not_finite, negative, out_of_range, \
             ingest_unavailable, or the ingest rejection reason of one of its samples)",
            rejected.clone(),
        );
        registry.register(
            "aya_orca_reconnects",
            "Attempts to open the backend's ORCA stream again after it ended or could not be opened",
            reconnects.clone(),
        );
        OrcaMetrics(Arc::new(MetricsInner {
            registry,
            connected,
            reports,
            rejected,
            reconnects,
        }))
    }

    fn labels(cluster: &str, backend: &str) -> BackendLabels {
        BackendLabels {
            cluster: cluster.into(),
            backend: backend.into(),
        }
    }

    /// Whether the stream of (`cluster`, `backend`) is open.
    pub fn connected(&self, cluster: &str, backend: &str) -> bool {
        self.0
            .connected
            .get_or_create(&Self::labels(cluster, backend))
            .get()
            > 0
    }

    /// Reports received from (`cluster`, `backend`) so far.
    pub fn reports(&self, cluster: &str, backend: &str) -> u64 {
        self.0
            .reports
            .get_or_create(&Self::labels(cluster, backend))
            .get()
    }

    /// Reports of (`cluster`, `backend`) rejected with `reason` so far.
    pub fn rejected(&self, cluster: &str, backend: &str, reason: &str) -> u64 {
        self.0
            .rejected
            .get_or_create(&RejectLabels {
                cluster: cluster.into(),
                backend: backend.into(),
                reason: reason.into(),
            })
            .get()
    }

    /// Reconnect attempts of (`cluster`, `backend`) so far.
    pub fn reconnects(&self, cluster: &str, backend: &str) -> u64 {
        self.0
            .reconnects
            .get_or_create(&Self::labels(cluster, backend))
            .get()
    }

    fn reject(&self, t: &Target, reason: &str) {
        self.0
            .rejected
            .get_or_create(&RejectLabels {
                cluster: t.cluster.clone(),
                backend: t.backend.clone(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The exposition (OpenMetrics text, ending in `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

/// The ORCA settings of cluster `c`: the configuration file's (as last
/// started or reloaded), else the stored cluster's.
fn orca_of(ctl: &Controller, c: &ClusterConfig) -> Option<OrcaConfig> {
    ctl.file_cluster(&c.name)
        .and_then(|f| f.orca)
        .or_else(|| c.orca.clone())
}

/// Every stream the registry wants now, by (cluster, backend). In the HA
/// mode only the leader reads ORCA (its samples reach the other replicas
/// through the ingest log), so a follower wants none.
fn wanted(ctl: &Controller) -> BTreeMap<(String, String), Target> {
    if ctl.replica().is_some_and(|r| !r.is_leader()) {
        return BTreeMap::new();
    }
    ctl.clusters()
        .iter()
        .flat_map(|c| targets(c, orca_of(ctl, c).as_ref()))
        .map(|t| ((t.cluster.clone(), t.backend.clone()), t))
        .collect()
}

/// One running client task.
struct Running {
    target: Target,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Start the supervisor of every ORCA stream; it and its streams stop when
/// `stop` turns true.
pub fn spawn(
    ctl: Controller,
    metrics: OrcaMetrics,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(ctl, metrics, stop))
}

async fn supervise(ctl: Controller, metrics: OrcaMetrics, mut stop: watch::Receiver<bool>) {
    let clock = ctl.clock().clone();
    let mut published = ctl.publisher().subscribe_all();
    let mut running: BTreeMap<(String, String), Running> = BTreeMap::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let want = wanted(&ctl);
        let gone: Vec<_> = running
            .iter()
            .filter(|(k, r)| want.get(*k) != Some(&r.target))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(r) = running.remove(&k) {
                tracing::info!(cluster = %k.0, backend = %k.1, "ORCA stream no longer wanted (backend removed, moved or orca turned off); stopping it");
                r.stop.send_replace(true);
                let _ = r.task.await;
                metrics
                    .0
                    .connected
                    .get_or_create(&OrcaMetrics::labels(&k.0, &k.1))
                    .set(0);
            }
        }
        for (k, t) in want {
            if running.contains_key(&k) {
                continue;
            }
            let (tx, rx) = watch::channel(false);
            let client = Client {
                target: t.clone(),
                ctl: ctl.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                last_ms: i64::MIN,
            };
            running.insert(
                k,
                Running {
                    target: t,
                    stop: tx,
                    task: tokio::spawn(client.run(rx)),
                },
            );
        }
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = clock.sleep(RESYNC) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for r in running.values() {
        r.stop.send_replace(true);
    }
    for (_, r) in running {
        let _ = r.task.await;
    }
}

/// One backend's ORCA client.
struct Client {
    target: Target,
    ctl: Controller,
    clock: Clock,
    metrics: OrcaMetrics,
    /// Timestamp of the last report's samples (the next is later).
    last_ms: i64,
}

/// Why a stream ended.
enum End {
    Stop,
    Failed(String),
}

impl Client {
    fn labels(&self) -> BackendLabels {
        OrcaMetrics::labels(&self.target.cluster, &self.target.backend)
    }

    async fn run(mut self, stop: watch::Receiver<bool>) {
        let mut stop_rx = stop.clone();
        let mut backoff = MIN_BACKOFF;
        let mut first = true;
        tracing::info!(cluster = %self.target.cluster, backend = %self.target.backend, uri = %self.target.uri, "ORCA client started");
        loop {
            if *stop.borrow() {
                break;
            }
            if !first {
                self.metrics
                    .0
                    .reconnects
                    .get_or_create(&self.labels())
                    .inc();
            }
            first = false;
            let end = tokio::select! {
                end = self.stream(&mut backoff) => end,
                _ = stop_rx.wait_for(|s| *s) => End::Stop,
            };
            self.metrics
                .0
                .connected
                .get_or_create(&self.labels())
                .set(0);
            match end {
                End::Stop => break,
                End::Failed(e) => {
                    tracing::warn!(cluster = %self.target.cluster, backend = %self.target.backend, uri = %self.target.uri, error = %e, retry_in_seconds = backoff.as_secs_f64(), "ORCA stream ended; reconnecting");
                }
            }
            tokio::select! {
                _ = self.clock.sleep(backoff) => {}
                _ = stop_rx.wait_for(|s| *s) => break,
            }
            backoff = (backoff * 2).min(self.target.max_backoff);
        }
        self.metrics
            .0
            .connected
            .get_or_create(&self.labels())
            .set(0);
        tracing::info!(cluster = %self.target.cluster, backend = %self.target.backend, "ORCA client stopped");
    }

    /// Connect, open the stream and ingest its reports until it ends. The
    /// backoff is reset by the first report.
    async fn stream(&mut self, backoff: &mut Duration) -> End {
        let endpoint = match tonic::transport::Endpoint::from_shared(self.target.uri.clone()) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(20)),
            Err(e) => return End::Failed(format!("invalid URI {}: {e}", self.target.uri)),
        };
        let endpoint = match &self.target.tls {
            None => endpoint,
            Some(t) => {
                let identity = t
                    .identity
                    .as_ref()
                    .map(|(c, k)| (("tls_cert", c.as_path()), ("tls_key", k.as_path())));
                let tls =
                    match crate::tls::client_tls(("tls_ca", &t.ca), identity, Some(&t.server_name))
                    {
                        Ok(tls) => tls,
                        Err(e) => return End::Failed(e),
                    };
                match endpoint.tls_config(tls) {
                    Ok(e) => e,
                    Err(e) => return End::Failed(format!("TLS configuration: {e}")),
                }
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return End::Failed(format!("cannot connect: {e}")),
        };
        let request = OrcaLoadReportRequest {
            report_interval: Some(prost_types::Duration {
                seconds: self.target.interval.as_secs() as i64,
                nanos: self.target.interval.subsec_nanos() as i32,
            }),
            request_cost_names: Vec::new(),
        };
        let mut stream = match OpenRcaServiceClient::new(channel)
            .stream_core_metrics(request)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return End::Failed(format!("StreamCoreMetrics refused: {s}")),
        };
        self.metrics
            .0
            .connected
            .get_or_create(&self.labels())
            .set(1);
        tracing::info!(cluster = %self.target.cluster, backend = %self.target.backend, uri = %self.target.uri, "ORCA stream open");
        loop {
            match stream.message().await {
                Ok(Some(report)) => {
                    *backoff = MIN_BACKOFF;
                    self.metrics.0.reports.get_or_create(&self.labels()).inc();
                    self.ingest(&report).await;
                }
                Ok(None) => return End::Failed("the backend ended the stream".into()),
                Err(s) => return End::Failed(format!("stream error: {s}")),
            }
        }
    }

    /// Map one report and hand its samples to ingest, counting a refusal.
    async fn ingest(&mut self, report: &OrcaLoadReport) {
        let t = &self.target;
        // Strictly increasing per series, even for two reports in one millisecond.
        let now_ms = self.clock.now_ms().max(self.last_ms.saturating_add(1));
        let samples = match report_samples(&t.cluster, &t.backend, report, now_ms) {
            Ok(s) => s,
            Err(bad) => {
                self.metrics.reject(t, bad.reason);
                tracing::debug!(cluster = %t.cluster, backend = %t.backend, reason = bad.reason, error = %bad.message, "ORCA report rejected");
                return;
            }
        };
        self.last_ms = now_ms;
        let outcomes = match self.ctl.submit_samples(samples).await {
            Ok(rx) => rx.await.ok(),
            Err(_) => None,
        };
        let Some(outcomes) = outcomes else {
            self.metrics.reject(t, "ingest_unavailable");
            return;
        };
        if let Some(r) = outcomes.iter().find_map(|o| o.as_ref().err()) {
            self.metrics.reject(t, r.reason.as_str());
            tracing::debug!(cluster = %t.cluster, backend = %t.backend, reason = r.reason.as_str(), error = %r.message, "ORCA report partly rejected by ingest");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn value(samples: &[Sample], metric: &str) -> Option<f64> {
        samples.iter().find(|s| s.metric == metric).map(|s| s.value)
    }

    #[test]
    fn a_report_maps_to_the_backends_metrics() {
        let report = OrcaLoadReport {
            cpu_utilization: 0.4,
            mem_utilization: 0.25,
            rps_fractional: 50.0,
            eps: 5.0,
            named_metrics: [
                ("in_flight".to_string(), 3.0),
                ("latency_p99_seconds".to_string(), 0.2),
                ("something_else".to_string(), 9.0),
            ]
            .into(),
            ..Default::default()
        };
        let s = report_samples("web", "a", &report, 1_000).unwrap();
        assert_eq!(value(&s, "cpu_utilization"), Some(0.4));
        assert_eq!(value(&s, "memory_utilization"), Some(0.25));
        assert_eq!(value(&s, "request_rate"), Some(50.0));
        assert_eq!(value(&s, "error_rate"), Some(0.1));
        assert_eq!(value(&s, "in_flight"), Some(3.0));
        assert_eq!(value(&s, "latency_p99_seconds"), Some(0.2));
        assert_eq!(value(&s, "something_else"), None);
        assert!(s.iter().all(|x| x.cluster == "web"
            && x.backend == "a"
            && x.timestamp_ms == 1_000
            && x.kind == MetricKind::Gauge));
    }

    #[test]
    #[allow(deprecated)]
    fn application_utilization_and_rps_fallbacks() {
        let report = OrcaLoadReport {
            cpu_utilization: 0.9,
            application_utilization: 0.3,
            rps: 20,
            ..Default::default()
        };
        let s = report_samples("web", "a", &report, 1).unwrap();
        assert_eq!(value(&s, "cpu_utilization"), Some(0.3), "application first");
        assert_eq!(value(&s, "request_rate"), Some(20.0), "the deprecated rps");
        assert_eq!(value(&s, "error_rate"), Some(0.0));
        // No requests: no error rate; eps above rps is capped at 1.
        let idle = report_samples("web", "a", &OrcaLoadReport::default(), 1).unwrap();
        assert_eq!(value(&idle, "request_rate"), Some(0.0));
        assert_eq!(value(&idle, "error_rate"), None);
        let over = OrcaLoadReport {
            rps_fractional: 1.0,
            eps: 3.0,
            ..Default::default()
        };
        let s = report_samples("web", "a", &over, 1).unwrap();
        assert_eq!(value(&s, "error_rate"), Some(1.0));
        // Over its limit: accepted above 1 (the engine caps it).
        let hot = OrcaLoadReport {
            cpu_utilization: 1.5,
            ..Default::default()
        };
        assert!(report_samples("web", "a", &hot, 1).is_ok());
    }

    #[test]
    fn bad_values_reject_the_whole_report_with_a_reason() {
        let cases = [
            (
                OrcaLoadReport {
                    cpu_utilization: f64::NAN,
                    ..Default::default()
                },
                "not_finite",
                "cpu_utilization",
            ),
            (
                OrcaLoadReport {
                    rps_fractional: -1.0,
                    ..Default::default()
                },
                "negative",
                "rps_fractional",
            ),
            (
                OrcaLoadReport {
                    mem_utilization: 1.5,
                    ..Default::default()
                },
                "out_of_range",
                "mem_utilization",
            ),
            (
                OrcaLoadReport {
                    application_utilization: 1000.0,
                    ..Default::default()
                },
                "out_of_range",
                "application_utilization",
            ),
            (
                OrcaLoadReport {
                    eps: f64::INFINITY,
                    ..Default::default()
                },
                "not_finite",
                "eps",
            ),
            (
                OrcaLoadReport {
                    named_metrics: [("in_flight".to_string(), -2.0)].into(),
                    ..Default::default()
                },
                "negative",
                "in_flight",
            ),
        ];
        for (report, reason, field) in cases {
            let e = report_samples("web", "a", &report, 1).unwrap_err();
            assert_eq!(e.reason, reason, "{e:?}");
            assert!(e.message.contains(field), "{e:?}");
        }
    }

    #[test]
    fn config_is_validated_naming_the_field() {
        let ok = OrcaConfig::default();
        assert!(ok.validate("clusters[0].orca").is_ok());
        let cases = [
            (
                OrcaConfig {
                    report_interval_seconds: 0.01,
                    ..OrcaConfig::default()
                },
                "clusters[0].orca.report_interval_seconds",
            ),
            (
                OrcaConfig {
                    report_interval_seconds: f64::NAN,
                    ..OrcaConfig::default()
                },
                "clusters[0].orca.report_interval_seconds",
            ),
            (
                OrcaConfig {
                    report_interval_seconds: 61.0,
                    ..OrcaConfig::default()
                },
                "clusters[0].orca.report_interval_seconds",
            ),
            (
                OrcaConfig {
                    port: Some(0),
                    ..OrcaConfig::default()
                },
                "clusters[0].orca.port",
            ),
            (
                OrcaConfig {
                    max_backoff_seconds: 0.0,
                    ..OrcaConfig::default()
                },
                "clusters[0].orca.max_backoff_seconds",
            ),
        ];
        for (cfg, field) in cases {
            let (f, m) = cfg.validate("clusters[0].orca").unwrap_err();
            assert_eq!(f, field, "{m}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not checked here").unwrap();
        let tls_cases = [
            (None, Some("localhost"), "tls_server_name"),
            (Some(dir.path().join("missing.pem")), None, "tls_ca"),
            (Some(ca.clone()), Some("not a name!"), "tls_server_name"),
        ];
        for (tls_ca, name, key) in tls_cases {
            let cfg = OrcaConfig {
                tls_ca,
                tls_server_name: name.map(str::to_string),
                ..OrcaConfig::default()
            };
            let (f, m) = cfg.validate("o").unwrap_err();
            assert_eq!(f, format!("o.{key}"), "{m}");
        }
        let tls = OrcaConfig {
            tls_ca: Some(ca.clone()),
            tls_server_name: Some("orca.internal".into()),
            ..OrcaConfig::default()
        };
        assert!(tls.validate("o").is_ok());
        // Client certificate: both files, readable, and only over TLS.
        let cert = dir.path().join("aya.pem");
        std::fs::write(&cert, "not checked here").unwrap();
        let missing = dir.path().join("missing.key");
        let mtls_cases = [
            (Some(ca.clone()), Some(cert.clone()), None, "tls_key"),
            (Some(ca.clone()), None, Some(cert.clone()), "tls_cert"),
            (None, Some(cert.clone()), Some(cert.clone()), "tls_cert"),
            (
                Some(ca.clone()),
                Some(cert.clone()),
                Some(missing),
                "tls_key",
            ),
        ];
        for (tls_ca, tls_cert, tls_key, key) in mtls_cases {
            let cfg = OrcaConfig {
                tls_ca,
                tls_cert,
                tls_key,
                ..OrcaConfig::default()
            };
            let (f, m) = cfg.validate("o").unwrap_err();
            assert_eq!(f, format!("o.{key}"), "{m}");
        }
        let mtls = OrcaConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(cert),
            ..tls
        };
        assert!(mtls.validate("o").is_ok());
    }

    #[test]
    fn the_file_section_parses_and_is_checked_at_start() {
        let base = "[[clusters]]\nname = \"web\"\n[[clusters.backends]]\nname = \"a\"\naddress = \"127.0.0.1:9001\"\n";
        let path = std::path::Path::new("aya.toml");
        let mut cfg = crate::config::Config::from_toml(
            &format!("{base}[clusters.orca]\nport = 9100\nreport_interval_seconds = 0.5\n"),
            path,
        )
        .unwrap();
        cfg.validate().unwrap();
        let orca = cfg.clusters[0].orca.clone().unwrap();
        assert!(orca.enabled);
        assert_eq!(orca.port, Some(9100));
        let t = targets(&cfg.clusters[0], Some(&orca));
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].uri, "http://127.0.0.1:9100");
        assert_eq!(t[0].interval, Duration::from_millis(500));

        let mut bad = crate::config::Config::from_toml(
            &format!("{base}[clusters.orca]\nreport_interval_seconds = 120\n"),
            path,
        )
        .unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("clusters[0].orca.report_interval_seconds"),
            "{e}"
        );
        let unknown = crate::config::Config::from_toml(
            &format!("{base}[clusters.orca]\nintervall = 1\n"),
            path,
        );
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_wanted_streams_follow_reloads_and_admin_backend_changes() {
        use crate::state::testing::{T0_MS, config};
        let dir = tempfile::tempdir().unwrap();
        let plain = config(dir.path());
        let ctl = Controller::open_with_clock(plain.clone(), Clock::manual(T0_MS)).unwrap();
        assert!(wanted(&ctl).is_empty(), "no [clusters.orca]: no streams");

        // A reload adds [clusters.orca] with its own port: a stream per backend.
        let mut with_orca = plain.clone();
        with_orca.clusters[0].orca = Some(OrcaConfig {
            port: Some(9100),
            ..OrcaConfig::default()
        });
        ctl.reload(&with_orca).unwrap();
        let w = wanted(&ctl);
        let keys: Vec<&str> = w.keys().map(|(_, b)| b.as_str()).collect();
        assert_eq!(keys, vec!["a", "b", "c"]);
        assert!(w.values().all(|t| t.uri == "http://127.0.0.1:9100"));

        // An admin-added backend is followed; a deleted one is dropped.
        ctl.upsert_backend(
            "web",
            BackendConfig {
                name: "d".into(),
                address: "127.0.0.2:9004".into(),
                weight_hint: 1,
            },
        )
        .unwrap();
        ctl.delete_backend("web", "a").unwrap();
        let w = wanted(&ctl);
        let keys: Vec<&str> = w.keys().map(|(_, b)| b.as_str()).collect();
        assert_eq!(keys, vec!["b", "c", "d"]);
        assert_eq!(
            w[&("web".to_string(), "d".to_string())].uri,
            "http://127.0.0.2:9100"
        );

        // A reload turning it off stops them all.
        let mut off = with_orca.clone();
        off.clusters[0].orca.as_mut().unwrap().enabled = false;
        ctl.reload(&off).unwrap();
        assert!(wanted(&ctl).is_empty());
        ctl.close(Duration::from_secs(5));
    }

    #[test]
    fn targets_follow_the_backends_and_the_switch() {
        let cluster = ClusterConfig {
            name: "web".into(),
            policy: String::new(),
            policy_params: Default::default(),
            algorithm: aya_policy::LbAlgorithm::WeightedRoundRobin,
            min_replicas: 1,
            max_replicas: 2,
            boot_time_seconds: 1.0,
            backends: vec![
                BackendConfig {
                    name: "a".into(),
                    address: "127.0.0.1:9001".into(),
                    weight_hint: 1,
                },
                BackendConfig {
                    name: "b".into(),
                    address: "[::1]:9002".into(),
                    weight_hint: 1,
                },
            ],
            warm_start: None,
            events: Default::default(),
            orca: None,
        };
        assert!(targets(&cluster, None).is_empty());
        let off = OrcaConfig {
            enabled: false,
            ..OrcaConfig::default()
        };
        assert!(targets(&cluster, Some(&off)).is_empty());
        let t = targets(&cluster, Some(&OrcaConfig::default()));
        let uris: Vec<&str> = t.iter().map(|t| t.uri.as_str()).collect();
        assert_eq!(uris, vec!["http://127.0.0.1:9001", "http://[::1]:9002"]);
        assert!(t.iter().all(|t| t.tls.is_none()));
        // TLS: https, and each backend's host is the name verified by default.
        let tls = OrcaConfig {
            tls_ca: Some("ca.pem".into()),
            ..OrcaConfig::default()
        };
        let t = targets(&cluster, Some(&tls));
        let uris: Vec<&str> = t.iter().map(|t| t.uri.as_str()).collect();
        assert_eq!(uris, vec!["https://127.0.0.1:9001", "https://[::1]:9002"]);
        let names: Vec<&str> = t
            .iter()
            .map(|t| t.tls.as_ref().unwrap().server_name.as_str())
            .collect();
        assert_eq!(names, vec!["127.0.0.1", "::1"]);
        assert!(t.iter().all(|t| t.tls.as_ref().unwrap().identity.is_none()));
        // Mutual TLS: every stream presents the client certificate.
        let mtls = OrcaConfig {
            tls_cert: Some("aya.pem".into()),
            tls_key: Some("aya.key".into()),
            ..tls
        };
        let t = targets(&cluster, Some(&mtls));
        assert!(t.iter().all(
            |t| t.tls.as_ref().unwrap().identity == Some(("aya.pem".into(), "aya.key".into()))
        ));
    }
}
