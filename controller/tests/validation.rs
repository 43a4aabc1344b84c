//! Validation at the boundary: every configured value the docs constrain is
//! refused at start with its field named, and request values are refused
//! at the API with their field named.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use aya_controller::clock::Clock;
use aya_controller::config::Config;
use aya_controller::server::{Listeners, serve_ready};
use aya_controller::store::STORE_FILE;
use aya_proto::v1 as pb;
use common::{config, ingest, now_ms, sample, start};
use pb::admin_service_client::AdminServiceClient;

/// The error of validating `text` (parse or validate), as text.
fn refusal(text: &str) -> String {
    match Config::from_toml(text, Path::new("aya.toml")) {
        Err(e) => e.to_string(),
        Ok(mut c) => match c.validate() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted: {text}"),
        },
    }
}

const CLUSTER: &str = "[[clusters]]\nname = \"w\"\n";
const BACKEND_A: &str = "[[clusters.backends]]\nname = \"a\"\naddress = \"127.0.0.1:80\"\n";

#[test]
fn out_of_range_config_values_are_refused_naming_the_field() {
    let mut cases: Vec<(String, &str)> = Vec::new();
    for field in [
        "tick_interval_seconds",
        "retention_seconds",
        "retention_check_seconds",
        "max_future_skew_seconds",
        "stale_after_seconds",
        "forecast_step_seconds",
        "retrain_interval_seconds",
    ] {
        for v in ["1e300", "-1.0", "nan", "inf"] {
            cases.push((format!("{field} = {v}"), field));
        }
    }
    // 9,400 ticks per second, and every other too-small interval.
    cases.push((
        "tick_interval_seconds = 1e-9".into(),
        "tick_interval_seconds",
    ));
    cases.push((
        "retention_check_seconds = 0.001".into(),
        "retention_check_seconds",
    ));
    cases.push((
        "retrain_interval_seconds = 0.01".into(),
        "retrain_interval_seconds",
    ));
    cases.push((
        "forecast_step_seconds = 0.5".into(),
        "forecast_step_seconds",
    ));
    cases.push(("retention_seconds = 1.0".into(), "retention_seconds"));
    cases.push(("max_batch_samples = 0".into(), "max_batch_samples"));
    cases.push(("max_batch_samples = 100000000".into(), "max_batch_samples"));
    cases.push(("ingest_queue_batches = 0".into(), "ingest_queue_batches"));
    cases.push((
        "ingest_queue_batches = 1000000".into(),
        "ingest_queue_batches",
    ));
    cases.push(("log_filter = \"aya=notalevel\"".into(), "log_filter"));
    cases.push(("log_filter = \"[[[\"".into(), "log_filter"));
    cases.push(("listen = \"::1:50051\"".into(), "listen"));
    cases.push(("listen = \"nope\"".into(), "listen"));
    cases.push(("metrics_listen = \"127.0.0.1\"".into(), "metrics_listen"));
    cases.push(("data_dir = \"\"".into(), "data_dir"));
    cases.push((
        format!("{CLUSTER}[[clusters.backends]]\nname = \"a\"\naddress = \"1.2.3.4:80\"\nweight_hint = 0\n"),
        "weight_hint",
    ));
    cases.push((
        format!("{CLUSTER}max_replicas = 0\n{BACKEND_A}"),
        "max_replicas",
    ));
    cases.push((
        format!("{CLUSTER}max_replicas = 1000000\n{BACKEND_A}"),
        "clusters[0].max_replicas",
    ));
    cases.push((
        format!("{CLUSTER}boot_time_seconds = 1e300\n{BACKEND_A}"),
        "clusters[0].boot_time_seconds",
    ));
    cases.push((
        format!("{CLUSTER}[[clusters.backends]]\nname = \"a\"\naddress = \"::1:80\"\n"),
        "clusters[0].backends[0].address",
    ));
    cases.push((
        format!("{CLUSTER}[[clusters.backends]]\nname = \"a\"\naddress = \"[::1:80\"\n"),
        "clusters[0].backends[0].address",
    ));
    cases.push((
        format!(
            "{CLUSTER}{BACKEND_A}[[clusters.backends]]\nname = \"b\"\naddress = \"127.0.0.1:80\"\n"
        ),
        "clusters[0].backends[1].address",
    ));
    for (text, field) in &cases {
        let err = refusal(text);
        assert!(err.contains(field), "{text:?} → {err}");
    }
    // What the bounds admit still validates (0 disables where documented).
    let mut ok = Config::from_toml(
        &format!(
            "tick_interval_seconds = 0.05\nretrain_interval_seconds = 0\nforecast_step_seconds = 0\nlog_filter = \"aya_controller=debug,warn\"\nlisten = \"[::1]:0\"\n{CLUSTER}[[clusters.backends]]\nname = \"a\"\naddress = \"[::1]:80\"\n[[clusters.backends]]\nname = \"b\"\naddress = \"[::1]:81\"\n"
        ),
        Path::new("aya.toml"),
    )
    .unwrap();
    ok.validate().unwrap();
    assert_eq!(
        ok.clusters[0].max_replicas, 2,
        "omitted max_replicas defaults"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sample_kind_and_labels_are_rejected_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let now = now_ms();
    let mut kind = sample("a", "in_flight", now - 1000, 1.0);
    kind.kind = 99;
    let mut empty_key = sample("a", "in_flight", now - 1000, 1.0);
    empty_key.labels = BTreeMap::from([(String::new(), "v".to_string())]);
    let mut nul_value = sample("a", "in_flight", now - 1000, 1.0);
    nul_value.labels = BTreeMap::from([("zone".to_string(), "a\0b".to_string())]);
    let mut nul_key = sample("a", "in_flight", now - 1000, 1.0);
    nul_key.labels = BTreeMap::from([("zo\0ne".to_string(), "a".to_string())]);
    let good = sample("a", "in_flight", now - 1000, 1.0);
    let batch = pb::IngestBatch {
        sequence: 1,
        samples: vec![kind, empty_key, nul_value, nul_key, good],
    };
    let acks = ingest(srv.channel().await, vec![batch]).await;
    let results = &acks[0].results;
    let want = ["kind", "labels", "labels[\"zone\"]", "labels"];
    for (r, field) in results.iter().zip(want) {
        assert!(!r.accepted, "{r:?}");
        assert!(r.message.contains(field), "{field}: {}", r.message);
    }
    assert!(results[4].accepted, "{:?}", results[4]);

    // Admin API: an unbracketed IPv6 address and duplicate addresses name the field.
    let mut admin = AdminServiceClient::new(srv.channel().await);
    let backend = |name: &str, address: &str| pb::Backend {
        name: name.into(),
        address: address.into(),
        weight_hint: 1,
    };
    for (backends, field) in [
        (vec![backend("x", "::1:80")], "address"),
        (
            vec![backend("x", "10.0.0.1:80"), backend("y", "10.0.0.1:80")],
            "duplicate backend address",
        ),
    ] {
        let err = admin
            .upsert_cluster(pb::UpsertClusterRequest {
                cluster: Some(pb::Cluster {
                    name: "v".into(),
                    backends,
                    policy: "configured".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(field), "{}", err.message());
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_ready_only_after_its_store_opened() {
    // A zero-length store: serving fails naming the file, and `ready` (where
    // `aya serve` prints `listening on`) is never called.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STORE_FILE), b"").unwrap();
    let mut cfg = config(dir.path());
    cfg.init = false;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let r = serve_ready(
        Listeners {
            grpc,
            metrics: None,
        },
        cfg.clone(),
        Clock::system(),
        async {},
        move || flag.store(true, std::sync::atomic::Ordering::SeqCst),
    )
    .await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains(STORE_FILE) && err.contains("0 bytes"), "{err}");
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));

    // With init it starts, and `ready` runs before serving.
    cfg.init = true;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flag = called.clone();
    serve_ready(
        Listeners {
            grpc,
            metrics: None,
        },
        cfg,
        Clock::system(),
        async {},
        move || flag.store(true, std::sync::atomic::Ordering::SeqCst),
    )
    .await
    .unwrap();
    assert!(called.load(std::sync::atomic::Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_and_per_client_rate_limits_refuse_with_a_reason_and_a_compact_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_series_per_cluster = 4;
    // A burst of 2 samples, refilled at 2 per second.
    cfg.limits.ingest_samples_per_second = 2.0;
    // A burst of one admin request, refilled every 10 s.
    cfg.limits.admin_requests_per_second = 0.1;
    let srv = start(cfg).await;
    let now = now_ms();
    let first: Vec<pb::Sample> = [
        "in_flight",
        "request_rate",
        "error_rate",
        "healthy",
        "cpu_utilization",
    ]
    .iter()
    .map(|m| sample("a", m, now - 1000, 1.0))
    .collect();
    let flood: Vec<pb::Sample> = (0..1000)
        .map(|i| sample("a", "in_flight", now - 900 + i / 10, 1.0))
        .collect();
    let acks = ingest(
        srv.channel().await,
        vec![
            pb::IngestBatch {
                sequence: 1,
                samples: first,
            },
            pb::IngestBatch {
                sequence: 2,
                samples: flood,
            },
        ],
    )
    .await;
    // The fifth new series of the cluster is refused; the others are stored.
    let r = &acks[0].results;
    assert_eq!((acks[0].accepted, acks[0].rejected), (4, 1));
    assert_eq!(r[4].reason, pb::RejectReason::SeriesLimit as i32);
    assert!(
        r[4].message.contains("limits.max_series_per_cluster = 4"),
        "{}",
        r[4].message
    );
    // The first batch spent the client's burst: the second is refused as a
    // whole, in one compact result instead of 1,000.
    let a = &acks[1];
    assert_eq!((a.accepted, a.rejected), (0, 1000));
    assert!(a.results.is_empty(), "a whole-batch refusal is compact");
    let why = a
        .batch_rejection
        .as_ref()
        .expect("the batch's one rejection");
    assert_eq!(why.reason, pb::RejectReason::RateLimited as i32);
    assert!(
        why.message.contains("limits.ingest_samples_per_second"),
        "{}",
        why.message
    );

    // Admin: the second request within 10 s is refused.
    let mut admin = AdminServiceClient::new(srv.channel().await);
    let clear = || pb::ClearOverrideRequest {
        cluster: "web".into(),
    };
    admin.clear_override(clear()).await.unwrap();
    let err = admin.clear_override(clear()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("limits.admin_requests_per_second"),
        "{}",
        err.message()
    );

    // Both limits and their hits are on /metrics.
    let body = reqwest_metrics(srv.metrics_addr).await;
    for want in [
        "aya_limit{limit=\"max_series_per_cluster\"} 4",
        "aya_limit_rejections_total{limit=\"ingest_samples_per_second\"} 1",
        "aya_limit_rejections_total{limit=\"admin_requests_per_second\"} 1",
        "aya_ingest_samples_rejected_total{reason=\"series_limit\"} 1",
        "aya_ingest_samples_rejected_total{reason=\"rate_limited\"} 1000",
    ] {
        assert!(body.contains(want), "{want} missing from /metrics:\n{body}");
    }
    srv.stop().await;
}

/// The `/metrics` page of a running service (plain HTTP/1.1 GET).
async fn reqwest_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: aya\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
