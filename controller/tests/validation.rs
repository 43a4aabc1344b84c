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
