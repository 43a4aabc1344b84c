//! Writes the generated seed files of the `proto` and `store` targets into
//! `fuzz/corpus/` (run by hand after a wire or store format change:
//! `fuzz/target/release/seeds fuzz/corpus`). The other targets' seeds are
//! copies of the repo's own examples (see docs/fuzzing.md).

use std::path::Path;

use aya_controller::clock::Clock;
use aya_controller::remote_write::{self, Label, PromSample, TimeSeries, WriteRequest};
use aya_controller::state::Controller;
use aya_controller::store::STORE_FILE;
use aya_fuzz::{T0_MS, controller_config};
use aya_proto::v1 as pb;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

fn sample(backend: &str, metric: &str, kind: pb::MetricKind, ts: i64, value: f64) -> pb::Sample {
    pb::Sample {
        cluster: "web".into(),
        backend: backend.into(),
        metric: metric.into(),
        timestamp_ms: ts,
        value,
        kind: kind as i32,
        labels: Default::default(),
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn otlp() -> ExportMetricsServiceRequest {
    let ns = (T0_MS as u64 - 1000) * 1_000_000;
    let point = |v: f64| NumberDataPoint {
        attributes: vec![kv("aya.backend", "a")],
        time_unix_nano: ns,
        start_time_unix_nano: ns - 10_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let metrics = vec![
        Metric {
            name: "http.server.active_requests".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![point(3.0)],
            })),
            ..Default::default()
        },
        Metric {
            name: "cluster.endpoint.rq_total".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![point(120.0)],
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Metric {
            name: "http.server.request.duration".into(),
            unit: "s".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![kv("aya.backend", "b")],
                    time_unix_nano: ns,
                    count: 6,
                    sum: Some(0.3),
                    bucket_counts: vec![1, 4, 1],
                    explicit_bounds: vec![0.01, 0.1],
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            })),
            ..Default::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("aya.cluster", "web")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn remote_write_body() -> Vec<u8> {
    let series = |name: &str, backend: &str, extra: &[(&str, &str)], value: f64| TimeSeries {
        labels: [
            ("__name__", name),
            ("aya_cluster", "web"),
            ("aya_backend", backend),
        ]
        .iter()
        .chain(extra)
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect(),
        samples: vec![PromSample {
            value,
            timestamp: T0_MS - 1000,
        }],
    };
    let req = WriteRequest {
        timeseries: vec![
            series("http_server_active_requests", "a", &[], 2.0),
            series("http_requests_total", "b", &[], 40.0),
            series(
                "http_server_request_duration_seconds_bucket",
                "c",
                &[("le", "0.1")],
                5.0,
            ),
            series(
                "http_server_request_duration_seconds_bucket",
                "c",
                &[("le", "+Inf")],
                7.0,
            ),
        ],
    };
    remote_write::encode(&req).expect("snappy encodes")
}

fn proto_seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    use pb::MetricKind::{Counter, Gauge};
    let batch = pb::IngestBatch {
        sequence: 1,
        samples: vec![
            sample("a", "in_flight", Gauge, T0_MS - 1000, 4.0),
            sample("b", "requests_total", Counter, T0_MS - 1000, 100.0),
            sample("c", "latency_p99", Gauge, T0_MS - 500, 0.25),
        ],
    };
    let cluster = pb::Cluster {
        name: "api".into(),
        backends: vec![pb::Backend {
            name: "x".into(),
            address: "127.0.0.1:9100".into(),
            weight_hint: 2,
        }],
        policy: "configured".into(),
        min_replicas: 1,
        max_replicas: 4,
        boot_time_seconds: 5.0,
        algorithm: 0,
        policy_params_json: String::new(),
    };
    let web = || "web".to_string();
    vec![
        ("ingest", 0, batch.encode_to_vec()),
        (
            "query_history",
            1,
            pb::QueryHistoryRequest {
                cluster: web(),
                backend: "a".into(),
                metric: "in_flight".into(),
                start_ms: T0_MS - 60_000,
                end_ms: T0_MS,
                limit: 100,
            }
            .encode_to_vec(),
        ),
        (
            "watch",
            2,
            pb::WatchRequest {
                cluster: web(),
                last_version: 0,
            }
            .encode_to_vec(),
        ),
        (
            "get_snapshot",
            3,
            pb::GetSnapshotRequest { cluster: web() }.encode_to_vec(),
        ),
        (
            "get_forecast",
            4,
            pb::ForecastRequest {
                cluster: web(),
                horizon: 6,
            }
            .encode_to_vec(),
        ),
        ("list_clusters", 5, Vec::new()),
        (
            "upsert_cluster",
            6,
            pb::UpsertClusterRequest {
                cluster: Some(cluster),
            }
            .encode_to_vec(),
        ),
        (
            "delete_cluster",
            7,
            pb::DeleteClusterRequest { name: "api".into() }.encode_to_vec(),
        ),
        (
            "upsert_backend",
            8,
            pb::UpsertBackendRequest {
                cluster: web(),
                backend: Some(pb::Backend {
                    name: "d".into(),
                    address: "127.0.0.1:9004".into(),
                    weight_hint: 1,
                }),
            }
            .encode_to_vec(),
        ),
        (
            "delete_backend",
            9,
            pb::DeleteBackendRequest {
                cluster: web(),
                backend: "d".into(),
            }
            .encode_to_vec(),
        ),
        (
            "set_override",
            10,
            pb::SetOverrideRequest {
                cluster: web(),
                weights: vec![pb::BackendWeight {
                    backend: "a".into(),
                    weight: 3,
                }],
                algorithm: 0,
                desired_replicas: 3,
            }
            .encode_to_vec(),
        ),
        (
            "clear_override",
            11,
            pb::ClearOverrideRequest { cluster: web() }.encode_to_vec(),
        ),
        ("get_stats", 12, Vec::new()),
        ("otlp_export", 13, otlp().encode_to_vec()),
        ("remote_write", 14, remote_write_body()),
        (
            "warm_start",
            15,
            pb::WarmStartRequest {
                cluster: web(),
                force: true,
            }
            .encode_to_vec(),
        ),
        (
            "list_anomalies",
            16,
            pb::ListAnomaliesRequest {
                cluster: web(),
                include_closed: true,
            }
            .encode_to_vec(),
        ),
        (
            "list_events",
            17,
            pb::ListEventsRequest {
                cluster: web(),
                from_ms: T0_MS - 86_400_000,
            }
            .encode_to_vec(),
        ),
        (
            "add_event",
            18,
            pb::AddEventRequest {
                cluster: web(),
                event: Some(pb::KnownEvent {
                    id: String::new(),
                    name: "launch".into(),
                    start_ms: T0_MS + 3_600_000,
                    end_ms: T0_MS + 7_200_000,
                    category: "release".into(),
                    source: String::new(),
                }),
            }
            .encode_to_vec(),
        ),
        (
            "delete_event",
            19,
            pb::DeleteEventRequest {
                cluster: web(),
                id: "api-1".into(),
            }
            .encode_to_vec(),
        ),
        ("keda_is_active", 20, keda_ref().encode_to_vec()),
        ("keda_stream_is_active", 21, keda_ref().encode_to_vec()),
        ("keda_get_metric_spec", 22, keda_ref().encode_to_vec()),
        (
            "keda_get_metrics",
            23,
            aya_proto::keda::GetMetricsRequest {
                scaled_object_ref: Some(keda_ref()),
                metric_name: "forecast_rps".into(),
            }
            .encode_to_vec(),
        ),
        ("ads", 24, ads_requests()),
    ]
}

/// A KEDA trigger on cluster `web`'s forecast.
fn keda_ref() -> aya_proto::keda::ScaledObjectRef {
    aya_proto::keda::ScaledObjectRef {
        name: "web".into(),
        namespace: "default".into(),
        scaler_metadata: [
            ("cluster", "web"),
            ("metric", "forecast_rps"),
            ("target_rps_per_replica", "100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

/// An Envoy's first ADS exchange: CDS (wildcard), its ACK, then EDS for
/// `web`, each length-prefixed (2 bytes, big-endian).
fn ads_requests() -> Vec<u8> {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    let eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    let node = Some(Node {
        id: "envoy-1".into(),
        cluster: "edge".into(),
        ..Default::default()
    });
    let requests = [
        DiscoveryRequest {
            node,
            type_url: cds.into(),
            ..Default::default()
        },
        DiscoveryRequest {
            version_info: "1".into(),
            response_nonce: "1".into(),
            type_url: cds.into(),
            ..Default::default()
        },
        DiscoveryRequest {
            resource_names: vec!["web".into()],
            type_url: eds.into(),
            ..Default::default()
        },
    ];
    let mut out = Vec::new();
    for r in requests {
        let body = r.encode_to_vec();
        out.extend((body.len() as u16).to_be_bytes());
        out.extend(body);
    }
    out
}

/// A small real store: the `proto` target's controller after one ingest
/// batch, closed; and the first 4 KiB of it (a cut-off file).
fn store_seed(out: &Path) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let ctl = Controller::open_with_clock(controller_config(dir.path()), Clock::manual(T0_MS))
        .expect("the seed controller opens");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (_, _, batch) = &proto_seeds()[0];
    let batch = pb::IngestBatch::decode(batch.as_slice()).expect("the ingest seed decodes");
    rt.block_on(async {
        let done = ctl
            .submit(batch.samples)
            .await
            .expect("the batch is queued");
        done.await.expect("the batch is committed");
    });
    assert!(
        ctl.close(std::time::Duration::from_secs(10)),
        "the seed store closes"
    );
    let bytes = std::fs::read(dir.path().join(STORE_FILE)).expect("the store file");
    std::fs::write(out.join("store/small.redb"), &bytes).expect("the store seed is written");
    let cut = &bytes[..bytes.len().min(4096)];
    std::fs::write(out.join("store/truncated.redb"), cut).expect("the store seed is written");
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    for (name, which, body) in proto_seeds() {
        let mut bytes = vec![which];
        bytes.extend(body);
        std::fs::write(out.join("proto").join(name), bytes).expect("a proto seed is written");
    }
    store_seed(out);
}
