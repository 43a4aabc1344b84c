//! ORCA as a metrics source, end to end on loopback: in-process
//! `xds.service.orca.v3.OpenRcaService` servers (one per backend, on
//! 127.0.0.1:0) and the whole service with `[clusters.orca]` and no other
//! metrics source. The reports arrive as the backends' samples, the engine
//! moves weight toward the backend that costs less CPU per request, a
//! report with a NaN CPU is rejected and counted, a backend added over the
//! admin API gets its stream, a backend that goes away is reconnected,
//! TLS to the backends verifies their certificate, and with mutual TLS Aya
//! presents its client certificate (a backend that requires one refuses Aya
//! without it).

mod common;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aya_controller::config::Config;
use aya_controller::orca::OrcaConfig;
use aya_proto::v1 as pb;
use aya_proto::v1::admin_service_client::AdminServiceClient;
use aya_proto::v1::decision_service_client::DecisionServiceClient;
use aya_proto::v1::metrics_service_client::MetricsServiceClient;
use aya_proto::xds::data::orca::v3::OrcaLoadReport;
use aya_proto::xds::service::orca::v3::OrcaLoadReportRequest;
use aya_proto::xds::service::orca::v3::open_rca_service_server::{
    OpenRcaService, OpenRcaServiceServer,
};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use common::prometheus;

/// What one fake backend reports, and how its streams end.
#[derive(Clone)]
struct Backend {
    cpu: f64,
    rps: f64,
    /// End each stream with UNAVAILABLE after this many reports (0: never).
    reports_per_stream: usize,
    /// Streams opened so far.
    streams: Arc<AtomicUsize>,
    /// Cleared when the backend goes away: its open streams end with
    /// UNAVAILABLE and new ones are refused.
    alive: Arc<AtomicBool>,
}

impl Backend {
    fn new(cpu: f64, rps: f64) -> Backend {
        Backend {
            cpu,
            rps,
            reports_per_stream: 0,
            streams: Arc::new(AtomicUsize::new(0)),
            alive: Arc::new(AtomicBool::new(true)),
        }
    }
}

type ReportStream = Pin<Box<dyn Stream<Item = Result<OrcaLoadReport, Status>> + Send>>;

#[tonic::async_trait]
impl OpenRcaService for Backend {
    type StreamCoreMetricsStream = ReportStream;

    async fn stream_core_metrics(
        &self,
        request: Request<OrcaLoadReportRequest>,
    ) -> Result<Response<ReportStream>, Status> {
        if !self.alive.load(Ordering::SeqCst) {
            return Err(Status::unavailable("gone"));
        }
        self.streams.fetch_add(1, Ordering::SeqCst);
        let d = request.into_inner().report_interval.unwrap_or_default();
        let interval = Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
            .max(Duration::from_millis(50));
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let me = self.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                if !me.alive.load(Ordering::SeqCst) {
                    let _ = tx.send(Err(Status::unavailable("gone"))).await;
                    return;
                }
                let report = OrcaLoadReport {
                    cpu_utilization: me.cpu,
                    mem_utilization: 0.5,
                    rps_fractional: me.rps,
                    eps: 0.0,
                    ..Default::default()
                };
                if tx.send(Ok(report)).await.is_err() {
                    return;
                }
                n += 1;
                if me.reports_per_stream > 0 && n >= me.reports_per_stream {
                    let _ = tx.send(Err(Status::unavailable("going away"))).await;
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serve `backend` on `listener`; the task is aborted to make it go away.
fn serve(listener: TcpListener, backend: Backend) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(OpenRcaServiceServer::new(backend))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    })
}

async fn orca_server(backend: Backend) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (addr, serve(l, backend))
}

/// Cluster `web` of `common::config` with backends a and b at `addrs`,
/// the `aya` policy ticking every 0.2 s, and ORCA reports every 0.1 s.
fn orca_config(dir: &std::path::Path, addrs: &[SocketAddr]) -> Config {
    let mut cfg = common::config(dir);
    cfg.tick_interval_seconds = 0.2;
    cfg.default_policy = "aya".into();
    let c = &mut cfg.clusters[0];
    c.backends.truncate(addrs.len());
    for (b, a) in c.backends.iter_mut().zip(addrs) {
        b.address = a.to_string();
        b.weight_hint = 1;
    }
    c.policy_params = serde_json::json!({ "capacity_min_points": 3 })
        .as_object()
        .unwrap()
        .clone();
    c.orca = Some(OrcaConfig {
        report_interval_seconds: 0.1,
        max_backoff_seconds: 0.4,
        ..OrcaConfig::default()
    });
    cfg
}

/// The value of the series `name{labels}` in the exposition (0 when absent).
fn series(body: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{{labels}}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Poll `check` on the exposition every 100 ms for up to 20 s.
async fn until(addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    for _ in 0..200 {
        let body = prometheus(addr).await;
        if check(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}:\n{}", prometheus(addr).await);
}

fn labels(backend: &str) -> String {
    format!("cluster=\"web\",backend=\"{backend}\"")
}

async fn weights(ch: tonic::transport::Channel) -> Vec<(String, u32)> {
    DecisionServiceClient::new(ch)
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: "web".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .endpoints
        .iter()
        .map(|e| (e.backend.clone(), e.weight))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orca_reports_feed_the_engine_and_weights_favour_the_cheaper_backend() {
    // Same request rate; b spends twice the CPU per request.
    let (a_addr, a) = orca_server(Backend::new(0.2, 50.0)).await;
    let (b_addr, b) = orca_server(Backend::new(0.4, 50.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = common::start(orca_config(dir.path(), &[a_addr, b_addr])).await;

    until(srv.metrics_addr, "both streams and reports", |m| {
        ["a", "b"].iter().all(|b| {
            series(m, "aya_orca_streams_connected", &labels(b)) == 1.0
                && series(m, "aya_orca_reports_total", &labels(b)) >= 3.0
        })
    })
    .await;

    // The samples are stored as the backends' own metrics.
    let mut m = MetricsServiceClient::new(srv.channel().await);
    for (backend, cpu) in [("a", 0.2), ("b", 0.4)] {
        let h = m
            .query_history(pb::QueryHistoryRequest {
                cluster: "web".into(),
                backend: backend.into(),
                metric: "cpu_utilization".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(h.series.len(), 1, "{backend}: {h:?}");
        assert!(!h.series[0].points.is_empty());
        assert!(h.series[0].points.iter().all(|p| p.value == cpu));
        let rr = m
            .query_history(pb::QueryHistoryRequest {
                cluster: "web".into(),
                backend: backend.into(),
                metric: "request_rate".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(rr.series[0].points.iter().all(|p| p.value == 50.0));
    }

    // The engine moves weight to a, which costs half as much per request.
    let ch = srv.channel().await;
    let mut last = Vec::new();
    let mut moved = false;
    for _ in 0..150 {
        last = weights(ch.clone()).await;
        let w = |n: &str| last.iter().find(|(b, _)| b == n).map_or(0, |(_, w)| *w);
        if w("a") > w("b") && w("b") > 0 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "weights did not favour a: {last:?}");
    eprintln!("published weights: {last:?}");

    // No report was rejected.
    let body = prometheus(srv.metrics_addr).await;
    assert!(!body.contains("aya_orca_reports_rejected_total{"), "{body}");
    srv.stop().await;
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_report_is_rejected_and_counted_and_nothing_of_it_is_stored() {
    let (a_addr, a) = orca_server(Backend::new(f64::NAN, 10.0)).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = common::start(orca_config(dir.path(), &[a_addr])).await;
    until(srv.metrics_addr, "rejected reports", |m| {
        series(
            m,
            "aya_orca_reports_rejected_total",
            &format!("{},reason=\"not_finite\"", labels("a")),
        ) >= 2.0
    })
    .await;
    let h = MetricsServiceClient::new(srv.channel().await)
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            backend: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        h.series.iter().all(|s| s.points.is_empty()),
        "a rejected report stores nothing: {h:?}"
    );
    srv.stop().await;
    a.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_new_backends_and_reconnect_when_a_backend_goes_away() {
    // a ends every stream after two reports (UNAVAILABLE).
    let mut flaky = Backend::new(0.3, 20.0);
    flaky.reports_per_stream = 2;
    let opened = flaky.streams.clone();
    let (a_addr, a) = orca_server(flaky).await;
    let dir = tempfile::tempdir().unwrap();
    let srv = common::start(orca_config(dir.path(), &[a_addr])).await;
    until(srv.metrics_addr, "a's reconnects", |m| {
        series(m, "aya_orca_reconnects_total", &labels("a")) >= 2.0
            && series(m, "aya_orca_reports_total", &labels("a")) >= 6.0
    })
    .await;
    assert!(opened.load(Ordering::SeqCst) >= 3);

    // A backend added over the admin API gets its stream.
    let steady = Backend::new(0.1, 20.0);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = l.local_addr().unwrap();
    let b = serve(l, steady.clone());
    AdminServiceClient::new(srv.channel().await)
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "b".into(),
                address: b_addr.to_string(),
                weight_hint: 1,
            }),
        })
        .await
        .unwrap();
    until(srv.metrics_addr, "b's stream", |m| {
        series(m, "aya_orca_streams_connected", &labels("b")) == 1.0
            && series(m, "aya_orca_reports_total", &labels("b")) >= 2.0
    })
    .await;

    // b goes away (its server and connections are dropped): the stream is
    // counted down and retried; when b is back on its port it resumes.
    steady.alive.store(false, Ordering::SeqCst);
    b.abort();
    let _ = b.await;
    let body = until(srv.metrics_addr, "b disconnected", |m| {
        series(m, "aya_orca_streams_connected", &labels("b")) == 0.0
    })
    .await;
    let reports = series(&body, "aya_orca_reports_total", &labels("b"));
    let retries = series(&body, "aya_orca_reconnects_total", &labels("b"));
    let l = TcpListener::bind(b_addr).await.unwrap();
    let b = serve(l, Backend::new(0.1, 20.0));
    until(srv.metrics_addr, "b reconnected", |m| {
        series(m, "aya_orca_streams_connected", &labels("b")) == 1.0
            && series(m, "aya_orca_reports_total", &labels("b")) > reports + 1.0
            && series(m, "aya_orca_reconnects_total", &labels("b")) > retries
    })
    .await;

    // Removing b stops its stream.
    AdminServiceClient::new(srv.channel().await)
        .delete_backend(pb::DeleteBackendRequest {
            cluster: "web".into(),
            backend: "b".into(),
        })
        .await
        .unwrap();
    until(srv.metrics_addr, "b's stream stopped", |m| {
        series(m, "aya_orca_streams_connected", &labels("b")) == 0.0
    })
    .await;
    srv.stop().await;
    a.abort();
    b.abort();
}

/// An ORCA backend on 127.0.0.1:0 serving TLS with the PKI's server
/// certificate; with `client_auth`, it requires a client certificate signed
/// by the PKI's CA.
async fn tls_backend(
    pki: &common::pki::Pki,
    client_auth: bool,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let identity =
        tonic::transport::Identity::from_pem(pki.read("server.pem"), pki.read("server.key"));
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if client_auth {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(pki.read("ca.pem")));
    }
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(OpenRcaServiceServer::new(Backend::new(0.25, 30.0)))
            .serve_with_incoming(TcpListenerStream::new(l))
            .await;
    });
    (addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orca_over_tls_verifies_the_backends_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path());
    let (addr, server) = tls_backend(&pki, false).await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = orca_config(data.path(), &[addr]);
    let orca = cfg.clusters[0].orca.as_mut().unwrap();
    orca.tls_ca = Some(pki.path("ca.pem"));
    orca.tls_server_name = Some("localhost".into());
    let srv = common::start(cfg).await;
    until(srv.metrics_addr, "reports over TLS", |m| {
        series(m, "aya_orca_streams_connected", &labels("a")) == 1.0
            && series(m, "aya_orca_reports_total", &labels("a")) >= 2.0
    })
    .await;
    srv.stop().await;

    // A name the certificate does not carry: never connected, retried.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = orca_config(data.path(), &[addr]);
    let orca = cfg.clusters[0].orca.as_mut().unwrap();
    orca.tls_ca = Some(pki.path("ca.pem"));
    orca.tls_server_name = Some("not-the-server.example".into());
    let srv = common::start(cfg).await;
    let body = until(srv.metrics_addr, "TLS retries", |m| {
        series(m, "aya_orca_reconnects_total", &labels("a")) >= 2.0
    })
    .await;
    assert_eq!(series(&body, "aya_orca_reports_total", &labels("a")), 0.0);
    assert_eq!(
        series(&body, "aya_orca_streams_connected", &labels("a")),
        0.0
    );
    srv.stop().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orca_over_mutual_tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path());
    // The backend asks every client for a certificate signed by the CA.
    let (addr, server) = tls_backend(&pki, true).await;
    let with_ca = |cfg: &mut aya_controller::config::Config| {
        let orca = cfg.clusters[0].orca.as_mut().unwrap();
        orca.tls_ca = Some(pki.path("ca.pem"));
        orca.tls_server_name = Some("localhost".into());
    };

    // Without a client certificate the backend refuses the handshake.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = orca_config(data.path(), &[addr]);
    with_ca(&mut cfg);
    let srv = common::start(cfg).await;
    let body = until(
        srv.metrics_addr,
        "refused without a client certificate",
        |m| series(m, "aya_orca_reconnects_total", &labels("a")) >= 2.0,
    )
    .await;
    assert_eq!(series(&body, "aya_orca_reports_total", &labels("a")), 0.0);
    srv.stop().await;

    // With Aya's client certificate and key: reports flow.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = orca_config(data.path(), &[addr]);
    with_ca(&mut cfg);
    let orca = cfg.clusters[0].orca.as_mut().unwrap();
    orca.tls_cert = Some(pki.path("client.pem"));
    orca.tls_key = Some(pki.path("client.key"));
    let srv = common::start(cfg).await;
    until(srv.metrics_addr, "reports over mutual TLS", |m| {
        series(m, "aya_orca_streams_connected", &labels("a")) == 1.0
            && series(m, "aya_orca_reports_total", &labels("a")) >= 2.0
    })
    .await;
    srv.stop().await;
    server.abort();
}
