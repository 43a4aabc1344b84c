//! Streaming anomaly detection in the running service (issue 15): samples
//! ingested over gRPC are scored, an anomaly opens on a spike and shows in
//! `AdminService.ListAnomalies` and on `/metrics`, closes after the quiet
//! period, each change posted to the webhook; a series refused by the
//! series limits gets no detector; deleted backends and clusters leave
//! nothing behind.

mod common;

use aya_proto::v1 as pb;
use aya_proto::v1::admin_service_client::AdminServiceClient;
use common::{config, ingest, now_ms, prometheus, sample, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

async fn list(ch: &Channel, cluster: &str) -> Result<pb::ListAnomaliesResponse, tonic::Status> {
    AdminServiceClient::new(ch.clone())
        .list_anomalies(pb::ListAnomaliesRequest {
            cluster: cluster.into(),
            include_closed: true,
        })
        .await
        .map(|r| r.into_inner())
}

/// A webhook receiver on 127.0.0.1:0: every request's body, in order
/// (HTTP/1.1 with keep-alive, as the sender's agent pools connections).
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    assert!(head.starts_with("post /hook "), "{head}");
                    assert!(head.contains("content-type: application/json"), "{head}");
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                    let _ = tx.send(serde_json::from_slice(&body).unwrap());
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

async fn event(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) -> serde_json::Value {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("no webhook event within 10 s")
        .unwrap()
}

/// One batch per call, every sample accepted or not as `expect` says.
async fn send(ch: &Channel, samples: Vec<pb::Sample>, expect: &[bool]) {
    let acks = ingest(
        ch.clone(),
        vec![pb::IngestBatch {
            sequence: 1,
            samples,
        }],
    )
    .await;
    let got: Vec<bool> = acks[0].results.iter().map(|r| r.accepted).collect();
    assert_eq!(got, expect, "{:?}", acks[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_opens_an_anomaly_that_closes_after_the_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.anomaly.quiet_seconds = 10.0;
    let (url, mut events) = receiver().await;
    cfg.anomaly.webhook_url = url;
    // Three series fit: the fourth is refused and gets no detector.
    cfg.limits.max_series = 3;
    let srv = start(cfg).await;
    let ch = srv.channel().await;
    let t0 = now_ms() - 600_000;
    // 300 steady points a second apart on three series (warm-up is 150).
    let mut steady = Vec::new();
    for i in 0..300i64 {
        let wiggle = (i % 3) as f64 * 0.01;
        let ts = t0 + i * 1000;
        steady.push(sample("a", "latency_p99_seconds", ts, 0.2 + wiggle));
        steady.push(sample("b", "cpu_utilization", ts, 0.5 + wiggle));
        steady.push(sample("", "request_rate", ts, 100.0 + wiggle * 100.0));
    }
    let n = steady.len();
    send(&ch, steady, &vec![true; n]).await;
    send(&ch, vec![sample("c", "error_rate", t0, 0.0)], &[false]).await;
    let r = list(&ch, "web").await.unwrap();
    assert!(r.enabled);
    assert!(r.open.is_empty() && r.closed.is_empty(), "{r:?}");

    // A latency spike on backend a.
    let spike_ts = t0 + 300_000;
    send(
        &ch,
        vec![sample("a", "latency_p99_seconds", spike_ts, 2.5)],
        &[true],
    )
    .await;
    let r = list(&ch, "web").await.unwrap();
    assert_eq!(r.open.len(), 1, "{r:?}");
    let o = &r.open[0];
    assert_eq!(
        (o.cluster.as_str(), o.backend.as_str(), o.metric.as_str()),
        ("web", "a", "latency_p99_seconds")
    );
    assert_eq!((o.opened_at_ms, o.closed_at_ms), (spike_ts, 0));
    assert_eq!((o.peak_score, o.last_score, o.value), (1.0, 1.0, 2.5));
    assert!(
        o.explanation.contains("above the highest value seen"),
        "{}",
        o.explanation
    );
    metrics_show_the_open_anomaly(srv.metrics_addr).await;
    let e = event(&mut events).await;
    assert_eq!(
        (&e["event"], &e["backend"], &e["metric"], &e["opened_at_ms"]),
        (
            &"opened".into(),
            &"a".into(),
            &"latency_p99_seconds".into(),
            &spike_ts.into()
        ),
        "{e}"
    );
    assert_eq!(
        (&e["closed_at_ms"], &e["reason"]),
        (&serde_json::Value::Null, &"new_high".into())
    );

    // Calm again: still open until the scores stay low for 10 s of series time.
    let calm = |from: i64, to: i64| {
        (from..to)
            .map(|i| sample("a", "latency_p99_seconds", spike_ts + i * 1000, 0.2))
            .collect::<Vec<_>>()
    };
    send(&ch, calm(1, 6), &[true; 5]).await;
    assert_eq!(list(&ch, "web").await.unwrap().open.len(), 1);
    send(&ch, calm(6, 20), &[true; 14]).await;
    let r = list(&ch, "web").await.unwrap();
    assert!(r.open.is_empty(), "{r:?}");
    assert_eq!(r.closed.len(), 1, "{r:?}");
    let c = &r.closed[0];
    assert_eq!((c.opened_at_ms, c.peak_score), (spike_ts, 1.0));
    assert!(
        c.closed_at_ms >= spike_ts + 11_000 && c.closed_at_ms < spike_ts + 20_000,
        "{c:?}"
    );
    let body = prometheus(srv.metrics_addr).await;
    assert!(
        body.contains("aya_anomalies_open{cluster=\"web\"} 0\n"),
        "{body}"
    );
    assert!(!body.contains("aya_anomaly_peak_score{"), "{body}");
    let e = event(&mut events).await;
    assert_eq!(e["event"], "closed", "{e}");
    assert_eq!(e["closed_at_ms"], c.closed_at_ms, "{e}");
    assert_eq!(e["peak_score"], 1.0, "{e}");
    webhook_counted(srv.metrics_addr).await;

    // A deleted backend drops its detector; a deleted cluster everything.
    deletions_leave_nothing(&ch, srv.metrics_addr).await;
    srv.stop().await;
}

/// `/metrics` while backend a's latency anomaly is open; no series for the refused one.
async fn metrics_show_the_open_anomaly(metrics: std::net::SocketAddr) {
    let body = prometheus(metrics).await;
    for line in [
        "aya_anomalies_open{cluster=\"web\"} 1\n",
        "aya_anomalies_opened_total{cluster=\"web\",metric=\"latency_p99_seconds\"} 1\n",
        "aya_anomaly_score{cluster=\"web\",backend=\"a\",metric=\"latency_p99_seconds\"} 1.0\n",
        "aya_anomaly_peak_score{cluster=\"web\",backend=\"a\",metric=\"latency_p99_seconds\",reason=\"new_high\"} 1.0\n",
        "aya_anomaly_score{cluster=\"web\",backend=\"\",metric=\"request_rate\"} ",
        "aya_anomaly_score{cluster=\"web\",backend=\"b\",metric=\"cpu_utilization\"} ",
        "aya_anomaly_detectors 3\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    assert!(!body.contains("backend=\"c\""), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
}

/// The webhook's counters once both events (opened, closed) were answered.
async fn webhook_counted(metrics: std::net::SocketAddr) {
    // Counted once the receiver's answer is read.
    let mut body = String::new();
    for _ in 0..250 {
        body = prometheus(metrics).await;
        if body.contains("aya_anomaly_webhook_sent_total 2\n") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for line in [
        "aya_anomaly_webhook_sent_total 2\n",
        "aya_anomaly_webhook_failed_total 0\n",
        "aya_anomaly_webhook_dropped_total 0\n",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
}

/// `DeleteBackend b` drops b's detector; `DeleteCluster web` leaves no anomaly nor series.
async fn deletions_leave_nothing(ch: &Channel, metrics: std::net::SocketAddr) {
    let mut admin = AdminServiceClient::new(ch.clone());
    admin
        .delete_backend(pb::DeleteBackendRequest {
            cluster: "web".into(),
            backend: "b".into(),
        })
        .await
        .unwrap();
    let body = prometheus(metrics).await;
    assert!(body.contains("aya_anomaly_detectors 2\n"), "{body}");
    assert!(!body.contains("backend=\"b\""), "{body}");
    admin
        .delete_cluster(pb::DeleteClusterRequest { name: "web".into() })
        .await
        .unwrap();
    let e = list(ch, "web").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let all = list(ch, "").await.unwrap();
    assert!(all.open.is_empty() && all.closed.is_empty(), "{all:?}");
    let body = prometheus(metrics).await;
    assert!(body.contains("aya_anomaly_detectors 0\n"), "{body}");
    let left: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("aya_anomal") && l.contains("cluster=\"web\""))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.anomaly.enabled = false;
    let srv = start(cfg).await;
    let ch = srv.channel().await;
    send(
        &ch,
        vec![sample("a", "latency_p99_seconds", now_ms() - 1000, 0.2)],
        &[true],
    )
    .await;
    let r = list(&ch, "").await.unwrap();
    assert!(!r.enabled && r.open.is_empty(), "{r:?}");
    let body = prometheus(srv.metrics_addr).await;
    assert!(!body.contains("aya_anomal"), "{body}");
    srv.stop().await;
}
