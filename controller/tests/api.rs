//! In-process tests of the aya.v1 API: ingest validation, watch semantics,
//! admin changes, restart, health and metrics. Each test runs the whole
//! service on 127.0.0.1:0 and stops it.

mod common;

use std::collections::BTreeMap;

use aya_proto::v1 as pb;
use aya_proto::v1::RejectReason as R;
use common::*;
use pb::admin_service_client::AdminServiceClient;
use pb::decision_service_client::DecisionServiceClient;
use pb::metrics_service_client::MetricsServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_accepts_good_samples_and_rejects_bad_ones_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let now = now_ms();
    let mut counter = sample("a", "requests_total", now - 1000, -5.0);
    counter.kind = pb::MetricKind::Counter as i32;
    let mut many_labels = sample("a", "in_flight", now - 1000, 1.0);
    many_labels.labels = (0..17)
        .map(|i| (format!("k{i}"), "v".to_string()))
        .collect();
    let mut long_label = sample("a", "in_flight", now - 1000, 1.0);
    long_label.labels = BTreeMap::from([("k".to_string(), "x".repeat(129))]);
    let mut unknown_cluster = sample("a", "in_flight", now - 1000, 1.0);
    unknown_cluster.cluster = "nope".into();
    let table: Vec<(pb::Sample, Option<R>)> = vec![
        (sample("a", "in_flight", now - 2000, 3.0), None),
        (unknown_cluster, Some(R::UnknownCluster)),
        (
            sample("zz", "in_flight", now - 1000, 1.0),
            Some(R::UnknownBackend),
        ),
        (
            sample("a", "in_flight", now - 1000, f64::NAN),
            Some(R::NotFinite),
        ),
        (
            sample("a", "in_flight", now - 1000, f64::INFINITY),
            Some(R::NotFinite),
        ),
        (counter, Some(R::NegativeCounter)),
        (
            sample("a", "in_flight", now - 3000, 1.0),
            Some(R::OutOfOrder),
        ),
        (
            sample("a", "in_flight", now - 2000, 1.0),
            Some(R::OutOfOrder),
        ),
        (
            sample("a", "in_flight", now + 3_600_000, 1.0),
            Some(R::FarFuture),
        ),
        (
            sample("a", "in_flight", now - 30 * 86_400_000, 1.0),
            Some(R::TooOld),
        ),
        (many_labels, Some(R::LabelsTooLarge)),
        (long_label, Some(R::LabelsTooLarge)),
        (
            sample("a", "bad name!", now - 1000, 1.0),
            Some(R::InvalidMetricName),
        ),
        (sample("b", "latency_p99_seconds", now - 1000, 0.25), None),
    ];
    let batch = pb::IngestBatch {
        sequence: 7,
        samples: table.iter().map(|(s, _)| s.clone()).collect(),
    };
    let second = pb::IngestBatch {
        sequence: 8,
        samples: vec![sample("a", "in_flight", now - 500, 4.0)],
    };
    let acks = ingest(srv.channel().await, vec![batch, second]).await;
    assert_eq!(acks.len(), 2, "the stream survives rejected samples");
    assert_eq!(acks[0].sequence, 7);
    assert_eq!(acks[0].results.len(), table.len());
    for (i, ((_, want), got)) in table.iter().zip(&acks[0].results).enumerate() {
        match want {
            None => assert!(got.accepted, "row {i}: {got:?}"),
            Some(r) => {
                assert!(!got.accepted, "row {i} should be rejected");
                assert_eq!(got.reason, *r as i32, "row {i}: {}", got.message);
                assert!(!got.message.is_empty(), "row {i} has a message");
            }
        }
    }
    assert_eq!(acks[0].accepted, 2);
    assert_eq!(acks[0].rejected, table.len() as u32 - 2);
    assert_eq!((acks[1].sequence, acks[1].accepted), (8, 1));

    // Accepted samples are readable back; rejected ones are not stored.
    let mut m = MetricsServiceClient::new(srv.channel().await);
    let h = m
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            backend: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.series.len(), 1);
    let pts: Vec<(i64, f64)> = h.series[0]
        .points
        .iter()
        .map(|p| (p.timestamp_ms, p.value))
        .collect();
    assert_eq!(pts, vec![(now - 2000, 3.0), (now - 500, 4.0)]);

    // A batch over the limit is rejected as a whole, and counted.
    let big = pb::IngestBatch {
        sequence: 9,
        samples: (0..100_001)
            .map(|i| sample("c", "in_flight", now - 100_000 + i / 100, 1.0))
            .collect(),
    };
    let acks = ingest(srv.channel().await, vec![big]).await;
    assert_eq!(acks[0].accepted, 0);
    assert!(
        acks[0]
            .results
            .iter()
            .all(|r| r.reason == R::BatchTooLarge as i32)
    );

    let mut admin = AdminServiceClient::new(srv.channel().await);
    let stats = admin
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.samples_accepted, 3);
    assert_eq!(stats.samples_rejected, 12 + 100_001);
    srv.stop().await;
}

/// Sends raw bytes as gRPC messages, to feed the server garbage.
#[derive(Debug, Clone, Default)]
struct RawCodec;
struct RawEnc;
struct RawDec;
impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}
impl tonic::codec::Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}
impl tonic::codec::Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_ingest_stream_ends_that_stream_only() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut grpc = tonic::client::Grpc::new(srv.channel().await);
    grpc.ready().await.unwrap();
    let garbage = vec![vec![0xffu8; 64], vec![0x0a, 0xff, 0xff, 0xff]];
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/aya.v1.MetricsService/Ingest");
    let res = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(garbage)),
            path,
            RawCodec,
        )
        .await;
    let err = match res {
        Err(s) => s,
        Ok(resp) => resp
            .into_inner()
            .message()
            .await
            .expect_err("garbage must not be acknowledged"),
    };
    assert_ne!(err.code(), tonic::Code::Ok);

    // The server is alive and accepts good data on a new stream.
    let acks = ingest(
        srv.channel().await,
        vec![pb::IngestBatch {
            sequence: 1,
            samples: vec![sample("a", "in_flight", now_ms() - 10, 1.0)],
        }],
    )
    .await;
    assert_eq!(acks[0].accepted, 1);
    srv.stop().await;
}

fn weights(s: &pb::ClusterSnapshot) -> Vec<(String, u32)> {
    s.endpoints
        .iter()
        .map(|e| (e.backend.clone(), e.weight))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_current_snapshot_at_once_and_resumes_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut dec = DecisionServiceClient::new(srv.channel().await);
    let mut w = dec
        .watch(pb::WatchRequest {
            cluster: "web".into(),
            last_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = w.message().await.unwrap().unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(
        weights(&first),
        vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
    );
    assert_eq!(first.endpoints[1].port, 9002);

    // A watcher resuming at the current version gets nothing until the next publication.
    let mut resumed = dec
        .watch(pb::WatchRequest {
            cluster: "web".into(),
            last_version: first.version,
        })
        .await
        .unwrap()
        .into_inner();
    // One resuming at an old version gets the current one at once.
    let mut stale = dec
        .watch(pb::WatchRequest {
            cluster: "web".into(),
            last_version: 99,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stale.message().await.unwrap().unwrap().version, 1);

    let mut admin = AdminServiceClient::new(srv.channel().await);
    let set = admin
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: [("a", 1), ("b", 3), ("c", 6)]
                .iter()
                .map(|(b, w)| pb::BackendWeight {
                    backend: b.to_string(),
                    weight: *w,
                })
                .collect(),
            algorithm: pb::LbAlgorithm::LeastRequest as i32,
            desired_replicas: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.version, 2);
    for stream in [&mut resumed, &mut w] {
        let next = stream.message().await.unwrap().unwrap();
        assert_eq!(next.version, 2);
        assert_eq!(
            weights(&next),
            vec![("a".into(), 1), ("b".into(), 3), ("c".into(), 6)]
        );
        let alg = next.decision.unwrap().algorithm.unwrap().algorithm;
        assert_eq!(alg, pb::LbAlgorithm::LeastRequest as i32);
    }
    // Bad overrides are refused with a reason.
    let err = admin
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: vec![pb::BackendWeight {
                backend: "a".into(),
                weight: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = dec
        .watch(pb::WatchRequest {
            cluster: "nope".into(),
            last_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Clearing the override goes back to the policy's decision.
    assert!(
        admin
            .clear_override(pb::ClearOverrideRequest {
                cluster: "web".into()
            })
            .await
            .unwrap()
            .into_inner()
            .cleared
    );
    let back = w.message().await.unwrap().unwrap();
    assert_eq!(back.version, 3);
    assert_eq!(
        weights(&back),
        vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_only_sees_the_latest_snapshot() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let ctl = tokio::task::spawn_blocking(move || aya_controller::state::Controller::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let c = ctl.clone();
    tokio::task::spawn_blocking(move || c.tick_all(1.0))
        .await
        .unwrap()
        .unwrap();
    let rx = ctl.publisher().subscribe("web").unwrap();
    let mut stream = aya_controller::api::watch_stream(rx, ctl.closing(), 0);
    // The watcher does not read while 50 versions are published.
    let c = ctl.clone();
    tokio::task::spawn_blocking(move || {
        for i in 1..=50u32 {
            let o = aya_controller::state::Override {
                weights: vec![aya_policy::BackendWeight {
                    backend: "a".into(),
                    weight: i,
                }],
                algorithm: None,
                desired_replicas: None,
            };
            c.publish_override("web", o).unwrap();
        }
    })
    .await
    .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(
        first.version, 51,
        "the first message is the latest version, not a backlog"
    );
    assert_eq!(weights(&first), vec![("a".into(), 50)]);
    // Nothing else is queued.
    let more = tokio::time::timeout(std::time::Duration::from_millis(200), stream.next()).await;
    assert!(more.is_err(), "no backlog after the latest snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_backend_changes_change_the_published_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut dec = DecisionServiceClient::new(srv.channel().await);
    let mut admin = AdminServiceClient::new(srv.channel().await);
    let mut w = dec
        .watch(pb::WatchRequest {
            cluster: "web".into(),
            last_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.message().await.unwrap().unwrap().endpoints.len(), 3);

    let c = admin
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "d".into(),
                address: "127.0.0.1:9004".into(),
                weight_hint: 4,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.backends.len(), 4);
    let s = w.message().await.unwrap().unwrap();
    assert_eq!(
        weights(&s),
        vec![
            ("a".into(), 1),
            ("b".into(), 2),
            ("c".into(), 3),
            ("d".into(), 4)
        ]
    );
    assert_eq!(s.endpoints[3].port, 9004);

    admin
        .delete_backend(pb::DeleteBackendRequest {
            cluster: "web".into(),
            backend: "b".into(),
        })
        .await
        .unwrap();
    let s = w.message().await.unwrap().unwrap();
    assert_eq!(
        weights(&s),
        vec![("a".into(), 1), ("c".into(), 3), ("d".into(), 4)]
    );

    let err = admin
        .delete_backend(pb::DeleteBackendRequest {
            cluster: "web".into(),
            backend: "b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = admin
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "e".into(),
                address: "no-port".into(),
                weight_hint: 1,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("address"), "{}", err.message());

    // A new cluster, then its deletion ends its watchers' streams.
    admin
        .upsert_cluster(pb::UpsertClusterRequest {
            cluster: Some(pb::Cluster {
                name: "api".into(),
                backends: vec![pb::Backend {
                    name: "x".into(),
                    address: "127.0.0.1:9100".into(),
                    weight_hint: 1,
                }],
                policy: "configured".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut wa = dec
        .watch(pb::WatchRequest {
            cluster: "api".into(),
            last_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        weights(&wa.message().await.unwrap().unwrap()),
        vec![("x".into(), 1)]
    );
    let names: Vec<String> = admin
        .list_clusters(pb::ListClustersRequest {})
        .await
        .unwrap()
        .into_inner()
        .clusters
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["api".to_string(), "web".to_string()]);
    assert!(
        admin
            .delete_cluster(pb::DeleteClusterRequest { name: "api".into() })
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    assert_eq!(
        wa.message().await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_history_clusters_overrides_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let srv = start(config(dir.path())).await;
    let samples: Vec<pb::Sample> = (0..100)
        .map(|i| sample("a", "in_flight", now - 10_000 + i * 10, i as f64))
        .collect();
    let acks = ingest(
        srv.channel().await,
        vec![pb::IngestBatch {
            sequence: 1,
            samples,
        }],
    )
    .await;
    assert_eq!(acks[0].accepted, 100);
    let mut admin = AdminServiceClient::new(srv.channel().await);
    admin
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "d".into(),
                address: "127.0.0.1:9004".into(),
                weight_hint: 2,
            }),
        })
        .await
        .unwrap();
    let set = admin
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: vec![pb::BackendWeight {
                backend: "d".into(),
                weight: 9,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    srv.stop().await;

    let srv = start(config(dir.path())).await;
    let mut dec = DecisionServiceClient::new(srv.channel().await);
    let snap = dec
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        snap.version, set.version,
        "same decision after restart: no new version"
    );
    assert_eq!(weights(&snap), vec![("d".into(), 9)]);
    let mut admin = AdminServiceClient::new(srv.channel().await);
    let clusters = admin
        .list_clusters(pb::ListClustersRequest {})
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(
        clusters[0].backends.len(),
        4,
        "admin changes survive the restart"
    );
    let mut m = MetricsServiceClient::new(srv.channel().await);
    let h = m
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.series[0].points.len(), 100);
    // Out-of-order detection survives the restart too.
    let acks = ingest(
        srv.channel().await,
        vec![pb::IngestBatch {
            sequence: 2,
            samples: vec![sample("a", "in_flight", now - 10_000, 1.0)],
        }],
    )
    .await;
    assert_eq!(acks[0].results[0].reason, R::OutOfOrder as i32);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_prometheus_metrics_respond() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(config(dir.path())).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(srv.channel().await);
    for service in ["", "aya.v1.MetricsService", "aya.v1.DecisionService"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let mut bad = sample("a", "in_flight", now_ms(), f64::NAN);
    bad.backend = "zz".into();
    ingest(
        srv.channel().await,
        vec![pb::IngestBatch {
            sequence: 1,
            samples: vec![bad, sample("a", "x", now_ms() - 1, 1.0)],
        }],
    )
    .await;

    let body = common::prometheus(srv.metrics_addr).await;
    for needle in [
        "aya_ingest_samples_accepted_total 1",
        "aya_ingest_samples_rejected_total{reason=\"unknown_backend\"} 1",
        "aya_tick_duration_seconds_count 1",
        "aya_published_version{cluster=\"web\"} 1",
        "aya_published_state_version ",
        "aya_watchers ",
        "aya_xds_nacks_total 0",
    ] {
        assert!(body.contains(needle), "missing {needle:?} in\n{body}");
    }
    // Issue 12: no series with an empty cluster beside the real ones.
    assert!(!body.contains("cluster=\"\""), "{body}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_query_returns_the_control_loops_forecast_with_intervals() {
    use aya_proto::v1::forecast_service_server::ForecastService;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.forecast_step_seconds = 1.0;
    cfg.forecast_horizon = 5;
    let ctl = tokio::task::spawn_blocking(move || aya_controller::state::Controller::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let api = aya_controller::api::AyaApi::new(ctl.clone());
    let before = api
        .get_forecast(tonic::Request::new(pb::ForecastRequest {
            cluster: "web".into(),
            horizon: 0,
        }))
        .await;
    assert_eq!(
        before.unwrap_err().code(),
        tonic::Code::Unavailable,
        "no forecast before any tick"
    );

    let base = now_ms() - 120_000;
    for i in 0..40i64 {
        let ts = base + i * 1000;
        let rate = 100.0 + 10.0 * (i % 4) as f64;
        let r = ctl
            .submit(vec![sample("a", "request_rate", ts, rate)])
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(r[0].accepted, "{}", r[0].message);
        let c = ctl.clone();
        tokio::task::spawn_blocking(move || c.tick_cluster("web", ts as f64 / 1000.0))
            .await
            .unwrap()
            .unwrap();
    }
    let f = api
        .get_forecast(tonic::Request::new(pb::ForecastRequest {
            cluster: "web".into(),
            horizon: 3,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(f.mean.len(), 3);
    assert_eq!(f.step, 1.0);
    for i in 0..3 {
        assert!(f.lower[i] <= f.mean[i] && f.mean[i] <= f.upper[i], "{f:?}");
        assert!(
            f.mean[i] > 50.0 && f.mean[i] < 200.0,
            "forecast near the observed demand: {f:?}"
        );
    }
    assert!(f.one_step_mae.is_finite() && f.one_step_mae >= 0.0, "{f:?}");
    let err = api
        .get_forecast(tonic::Request::new(pb::ForecastRequest {
            cluster: "nope".into(),
            horizon: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aya_policy_runs_in_the_control_loop_and_publishes_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.default_policy = "aya".into();
    cfg.forecast_step_seconds = 5.0;
    let ctl = tokio::task::spawn_blocking(move || aya_controller::state::Controller::open(cfg))
        .await
        .unwrap()
        .unwrap();
    let base = now_ms() - 300_000;
    let mut versions = Vec::new();
    for i in 0..30i64 {
        let ts = base + i * 5000;
        let mut batch = Vec::new();
        for (b, rate, lat) in [("a", 50.0, 0.02), ("b", 100.0, 0.02), ("c", 150.0, 0.03)] {
            batch.push(sample(b, "request_rate", ts, rate));
            batch.push(sample(b, "latency_p99_seconds", ts, lat));
            batch.push(sample(b, "in_flight", ts, rate * lat));
            batch.push(sample(b, "cpu_utilization", ts, 0.3));
        }
        let r = ctl.submit(batch).await.unwrap().await.unwrap();
        assert!(r.iter().all(|x| x.accepted));
        let c = ctl.clone();
        let snap = tokio::task::spawn_blocking(move || c.tick_cluster("web", ts as f64 / 1000.0))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!snap.endpoints.is_empty());
        assert!(snap.endpoints.iter().all(|e| e.weight >= 1));
        versions.push(snap.version);
    }
    // Versions only move when the decision changes: never more than one per tick.
    assert!(
        versions
            .windows(2)
            .all(|w| w[1] == w[0] || w[1] == w[0] + 1),
        "{versions:?}"
    );
    assert_eq!(ctl.metrics().publications(), *versions.last().unwrap());
}
