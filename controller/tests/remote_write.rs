//! Prometheus remote-write 1.0 receiver on loopback: snappy-compressed
//! `WriteRequest`s built in the test, counter differencing, `_bucket`
//! histograms, status codes for malformed requests; and the whole service
//! storing what it receives.

mod common;

use std::sync::{Arc, Mutex};

use aya_controller::otlp::{self, IngestMapping, Sink, Translated};
use aya_controller::remote_write::{self, Label, PromSample, TimeSeries, WriteRequest};
use aya_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| PromSample { value, timestamp })
            .collect(),
    }
}

/// POST `body` to `addr` with the given headers; the status and body.
async fn post(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        remote_write::PATH,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

const GOOD: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

type Got = Arc<Mutex<Vec<Translated>>>;

async fn start() -> (std::net::SocketAddr, Got, tokio::sync::oneshot::Sender<()>) {
    let got: Got = Arc::default();
    let g = got.clone();
    let sink: Sink = otlp::sink_fn(move |batch: Vec<Translated>| {
        let g = g.clone();
        async move {
            let n = batch.len();
            g.lock().unwrap().extend(batch);
            Ok(vec![None; n])
        }
    });
    let app = remote_write::router(IngestMapping::prometheus(), sink);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(l, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    (addr, got, tx)
}

fn value(v: &[Translated], metric: &str, ts: i64) -> Option<f64> {
    v.iter()
        .find(|t| t.metric == metric && t.timestamp_ms == ts)
        .map(|t| t.value)
}

const EP: &[(&str, &str)] = &[
    ("envoy_cluster_name", "edge"),
    ("envoy_endpoint_address", "10.0.0.9:80"),
    ("instance", "envoy:9901"),
    ("job", "envoy"),
];

fn with(name: &str, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
    let mut l: Vec<(&str, String)> = vec![("__name__", name.to_string())];
    l.extend(EP.iter().map(|(k, v)| (*k, v.to_string())));
    l.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    l
}

fn ts(labels: Vec<(&str, String)>, samples: &[(i64, f64)]) -> TimeSeries {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    series(&l, samples)
}

#[tokio::test]
async fn counters_gauges_and_histograms() {
    let (addr, got, stop) = start().await;
    let bucket = |le: &'static str, a: f64, b: f64, c: f64| {
        ts(
            with("http_server_request_duration_seconds_bucket", &[("le", le)]),
            &[(1000, a), (2000, b), (3000, c)],
        )
    };
    let req = WriteRequest {
        timeseries: vec![
            // 100, 150, then a restart at 30.
            ts(
                with("envoy_cluster_endpoint_rq_total", &[]),
                &[(1000, 100.0), (2000, 150.0), (3000, 30.0)],
            ),
            ts(
                with("envoy_cluster_endpoint_rq_active", &[]),
                &[(1000, 2.0), (2000, 5.0), (3000, 1.0)],
            ),
            bucket("0.1", 10.0, 10.0, 10.0),
            bucket("0.2", 10.0, 60.0, 60.0),
            bucket("0.4", 10.0, 110.0, 110.0),
            bucket("+Inf", 10.0, 110.0, 110.0),
            // _count and _sum of the histogram are covered by the buckets.
            ts(
                with("http_server_request_duration_seconds_count", &[]),
                &[(1000, 10.0)],
            ),
            // Unmapped: dropped silently.
            ts(with("envoy_server_uptime", &[]), &[(1000, 10.0)]),
            // Staleness marker: skipped.
            ts(
                with("envoy_cluster_endpoint_healthy", &[]),
                &[(1000, f64::from_bits(remote_write::STALE_NAN))],
            ),
        ],
    };
    let (status, body) = post(addr, GOOD, &remote_write::encode(&req).unwrap()).await;
    assert_eq!(status, 204, "{body}");
    let v = std::mem::take(&mut *got.lock().unwrap());
    assert!(
        v.iter()
            .all(|t| t.cluster == "edge" && t.backend == "10.0.0.9:80"),
        "{v:?}"
    );
    assert_eq!(value(&v, "in_flight", 1000), Some(2.0));
    assert_eq!(value(&v, "in_flight", 3000), Some(1.0));
    // The first point is the baseline; then 50 + 100 histogram observations.
    assert_eq!(value(&v, "requests_total", 1000), None);
    assert_eq!(value(&v, "requests_total", 2000), Some(150.0));
    assert!((value(&v, "latency_p50_seconds", 2000).unwrap() - 0.2).abs() < 1e-9);
    assert!((value(&v, "latency_p90_seconds", 2000).unwrap() - 0.36).abs() < 1e-9);
    // Restart: the counter counts 30 from zero; no new observations.
    assert_eq!(value(&v, "requests_total", 3000), Some(30.0));
    assert_eq!(value(&v, "latency_p50_seconds", 3000), None);
    assert!(v.iter().all(|t| t.metric != "healthy"));

    // A repeated timestamp is rejected (400, not retried), with the reason.
    let again = WriteRequest {
        timeseries: vec![ts(
            with("envoy_cluster_endpoint_rq_total", &[]),
            &[(3000, 40.0)],
        )],
    };
    let (status, body) = post(addr, GOOD, &remote_write::encode(&again).unwrap()).await;
    assert_eq!(status, 400);
    assert!(body.contains("not after"), "{body}");
    let _ = stop.send(());
}

#[tokio::test]
async fn malformed_requests_get_clear_status_codes() {
    let (addr, got, stop) = start().await;
    let ok = remote_write::encode(&WriteRequest::default()).unwrap();
    let (s, _) = post(addr, GOOD, &ok).await;
    assert_eq!(s, 204);
    let (s, b) = post(
        addr,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "snappy"),
        ],
        &ok,
    )
    .await;
    assert_eq!(s, 415);
    assert!(b.contains("content-type"), "{b}");
    let (s, b) = post(addr, &[("Content-Type", "application/x-protobuf")], &ok).await;
    assert_eq!(s, 415);
    assert!(b.contains("content-encoding"), "{b}");
    let (s, b) = post(addr, GOOD, b"definitely not snappy").await;
    assert_eq!(s, 400);
    assert!(b.contains("snappy"), "{b}");
    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
    let (s, b) = post(addr, GOOD, &garbage).await;
    assert_eq!(s, 400);
    assert!(b.contains("WriteRequest"), "{b}");
    // Missing backend label and missing __name__.
    let req = WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "http_requests_total"), ("job", "web")],
                &[(1000, 1.0)],
            ),
            series(&[("job", "web")], &[(1000, 1.0)]),
            series(
                &[
                    ("__name__", "http_server_request_duration_seconds_bucket"),
                    ("job", "web"),
                    ("instance", "x:1"),
                    ("le", "abc"),
                ],
                &[(1000, 1.0)],
            ),
        ],
    };
    let (s, b) = post(addr, GOOD, &remote_write::encode(&req).unwrap()).await;
    assert_eq!(s, 400);
    for want in ["no backend label", "no __name__", "no numeric le"] {
        assert!(b.contains(want), "{want:?} not in {b}");
    }
    assert!(got.lock().unwrap().is_empty());
    let _ = stop.send(());
}

/// The whole service: remote-write on the metrics listener stores the
/// samples under the backend named by its `instance` address.
#[tokio::test]
async fn service_receives_remote_write() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start(common::config(dir.path())).await;
    let now = common::now_ms();
    let req = WriteRequest {
        timeseries: vec![series(
            &[
                ("__name__", "http_server_active_requests"),
                ("job", "web"),
                ("instance", "127.0.0.1:9003"),
            ],
            &[(now - 2000, 3.0), (now - 1000, 7.0)],
        )],
    };
    let (s, b) = post(
        running.metrics_addr,
        GOOD,
        &remote_write::encode(&req).unwrap(),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let mut ms = pb::metrics_service_client::MetricsServiceClient::new(running.channel().await);
    let h = ms
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            backend: "c".into(),
            metric: "in_flight".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let pts: Vec<f64> = h
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.value))
        .collect();
    assert_eq!(pts, vec![3.0, 7.0]);
    running.stop().await;
}

#[tokio::test]
async fn remote_write_shares_the_clients_ingest_rate_limit() {
    // A burst of 2 samples, refilled at 2 per second: a request of 2 samples
    // is stored, the next one at once gets 429 with Retry-After (the sender
    // retries with back-off) and stores nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.limits.ingest_samples_per_second = 2.0;
    let running = common::start(cfg).await;
    let now = common::now_ms();
    let req = |t: i64| WriteRequest {
        timeseries: vec![series(
            &[
                ("__name__", "http_server_active_requests"),
                ("job", "web"),
                ("instance", "127.0.0.1:9003"),
            ],
            &[(t - 1000, 3.0), (t, 7.0)],
        )],
    };
    let (s, b) = post(
        running.metrics_addr,
        GOOD,
        &remote_write::encode(&req(now - 5000)).unwrap(),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = post(
        running.metrics_addr,
        GOOD,
        &remote_write::encode(&req(now - 1000)).unwrap(),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    assert!(b.contains("limits.ingest_samples_per_second"), "{b}");
    let mut ms = pb::metrics_service_client::MetricsServiceClient::new(running.channel().await);
    let h = ms
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let n: usize = h.series.iter().map(|s| s.points.len()).sum();
    assert_eq!(n, 2, "only the first request was stored");
    running.stop().await;
}

/// A real Prometheus (Debian's `prometheus`) scrapes a tiny exporter on
/// loopback and remote-writes to the receiver. Skipped, with a note, when
/// the binary is absent (a failure when `AYA_REQUIRE_PROMETHEUS` is set,
/// as `.ci/run` does after installing it).
#[tokio::test]
async fn real_prometheus_remote_writes_to_aya() {
    let bin = std::env::var("AYA_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    if std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("AYA_REQUIRE_PROMETHEUS").is_none(),
            "AYA_REQUIRE_PROMETHEUS is set but `{bin}` does not run"
        );
        eprintln!("skipped: no `{bin}` binary (apt-get install -y prometheus)");
        return;
    }
    let (addr, got, stop) = start().await;
    // The exporter: a gauge named as the OTel conventions spell it in Prometheus.
    let exporter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exp_addr = exporter.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            "# TYPE http_server_active_requests gauge\nhttp_server_active_requests 5\n"
        }),
    );
    tokio::spawn(async move { axum::serve(exporter, app).await });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{ scrape_interval: 1s }}\n\
             scrape_configs:\n- job_name: web\n  static_configs: [{{ targets: ['{exp_addr}'] }}]\n\
             remote_write:\n- url: http://{addr}{}\n  queue_config: {{ batch_send_deadline: 1s }}\n",
            remote_write::PATH
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--storage.remote.flush-deadline=1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let want = |v: &[Translated]| {
        v.iter().any(|t| {
            t.cluster == "web"
                && t.backend == exp_addr.to_string()
                && t.metric == "in_flight"
                && t.value == 5.0
        })
    };
    let mut ok = false;
    for _ in 0..300 {
        if want(&got.lock().unwrap()) {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Stop Prometheus before the receiver (its shutdown waits on the queue).
    let _ = child.kill().await;
    let _ = stop.send(());
    assert!(
        ok,
        "no in_flight sample from Prometheus within 30 s: {:?}",
        got.lock().unwrap()
    );
}
