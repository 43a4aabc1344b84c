//! OTLP metrics ingest over gRPC on loopback, with the generated
//! opentelemetry-proto client: gauges, cumulative sums with a reset,
//! histograms and exponential histograms, `partial_success`; and the whole
//! service storing what Envoy's OTel stats sink would send.

mod common;

use std::sync::{Arc, Mutex};

use aya_controller::otlp::{self, IngestMapping, Sink, Translated};
use aya_proto::v1 as pb;
use aya_proto::v1::MetricKind;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio_stream::wrappers::TcpListenerStream;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn kvi(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SEC;

fn number(attrs: Vec<KeyValue>, start: u64, t: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

/// One resource `service.name=web`, `server.address=10.0.0.1`, `server.port=8080`.
fn export(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "web"),
                    kv("server.address", "10.0.0.1"),
                    kvi("server.port", 8080),
                ],
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

/// An SDK's export at `t`: cpu gauge, cumulative request counter
/// (`envoy`-style name mapped by override), cumulative duration histogram.
fn sdk_export(t: u64, start: u64, requests: f64, hist: [u64; 4]) -> ExportMetricsServiceRequest {
    export(vec![
        metric(
            "process.cpu.utilization",
            "1",
            Data::Gauge(Gauge {
                data_points: vec![number(vec![], 0, t, 0.25)],
            }),
        ),
        metric(
            "app.requests",
            "{request}",
            Data::Sum(Sum {
                data_points: vec![number(vec![], start, t, requests)],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "http.server.request.duration",
            "s",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![kvi("http.response.status_code", 200)],
                    start_time_unix_nano: start,
                    time_unix_nano: t,
                    count: hist.iter().sum(),
                    bucket_counts: hist.to_vec(),
                    explicit_bounds: vec![0.1, 0.2, 0.4],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        ),
    ])
}

type Got = Arc<Mutex<Vec<Translated>>>;

/// A sink that records every sample and rejects those of backend `bad`.
fn recording_sink() -> (Sink, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let sink: Sink = otlp::sink_fn(move |batch: Vec<Translated>| {
        let g = g.clone();
        async move {
            let res = batch
                .iter()
                .map(|t| (t.backend == "bad").then(|| "unknown backend \"bad\"".to_string()))
                .collect();
            g.lock().unwrap().extend(batch);
            Ok(res)
        }
    });
    (sink, got)
}

async fn start(
    mapping: IngestMapping,
    sink: Sink,
) -> (
    MetricsServiceClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(otlp::metrics_service(mapping, sink))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            }),
    );
    let client = MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, tx)
}

fn take(got: &Got) -> Vec<Translated> {
    std::mem::take(&mut *got.lock().unwrap())
}

fn value(v: &[Translated], metric: &str) -> Option<f64> {
    v.iter().find(|t| t.metric == metric).map(|t| t.value)
}

#[tokio::test]
async fn gauges_cumulative_sums_with_reset_and_histograms() {
    let mut mapping = IngestMapping::default();
    mapping
        .default
        .metrics
        .insert("app.requests".into(), "requests_total".into());
    let (sink, got) = recording_sink();
    let (mut client, stop) = start(mapping, sink).await;

    // First export: the gauge passes; the counter and histogram set baselines.
    let r = client
        .export(sdk_export(T0, T0 - 10 * SEC, 100.0, [10, 0, 0, 0]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.partial_success, None);
    let v = take(&got);
    assert_eq!(
        v,
        vec![Translated {
            cluster: "web".into(),
            backend: "10.0.0.1:8080".into(),
            metric: "cpu_utilization".into(),
            kind: MetricKind::Gauge,
            timestamp_ms: (T0 / 1_000_000) as i64,
            value: 0.25,
        }]
    );

    // Second: 50 more requests counted, 100 more observations in the histogram.
    client
        .export(sdk_export(T0 + SEC, T0 - 10 * SEC, 150.0, [10, 50, 50, 0]))
        .await
        .unwrap();
    let v = take(&got);
    // 50 from the counter + 100 from the histogram's count.
    assert_eq!(value(&v, "requests_total"), Some(150.0));
    assert!(
        v.iter()
            .all(|t| t.metric != "requests_total" || t.kind == MetricKind::Delta)
    );
    assert!((value(&v, "latency_p50_seconds").unwrap() - 0.2).abs() < 1e-9);
    assert!((value(&v, "latency_p90_seconds").unwrap() - 0.36).abs() < 1e-9);
    assert!((value(&v, "latency_p99_seconds").unwrap() - 0.396).abs() < 1e-9);
    assert_eq!(value(&v, "error_rate"), Some(0.0));

    // Third: the process restarted (new start time, lower values).
    client
        .export(sdk_export(
            T0 + 2 * SEC,
            T0 + 2 * SEC - 1,
            30.0,
            [4, 0, 0, 0],
        ))
        .await
        .unwrap();
    let v = take(&got);
    assert_eq!(value(&v, "requests_total"), Some(34.0));
    assert!((value(&v, "latency_p50_seconds").unwrap() - 0.05).abs() < 1e-9);
    let _ = stop.send(());
}

#[tokio::test]
async fn exponential_histogram_and_envoy_deltas() {
    let (sink, got) = recording_sink();
    let (mut client, stop) = start(IngestMapping::default(), sink).await;
    // rpc.server.duration in ms, delta: scale 0 (base 2), offset 6:
    // (64, 128] ms holds 10, (128, 256] ms holds 10.
    let exp = metric(
        "rpc.server.duration",
        "ms",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: T0,
                start_time_unix_nano: T0 - SEC,
                count: 20,
                scale: 0,
                positive: Some(Buckets {
                    offset: 6,
                    bucket_counts: vec![10, 10],
                }),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    );
    // Envoy's stats sink: per-endpoint deltas named by attributes.
    let envoy = |name: &str, ep: &str, v: f64| {
        metric(
            name,
            "",
            Data::Sum(Sum {
                data_points: vec![number(
                    vec![
                        kv("envoy.cluster_name", "edge"),
                        kv("envoy.endpoint_address", ep),
                    ],
                    T0 - SEC,
                    T0,
                    v,
                )],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        )
    };
    let active = metric(
        "cluster.endpoint.rq_active",
        "",
        Data::Gauge(Gauge {
            data_points: vec![number(
                vec![
                    kv("envoy.cluster_name", "edge"),
                    kv("envoy.endpoint_address", "10.0.0.9:80"),
                ],
                0,
                T0,
                3.0,
            )],
        }),
    );
    let r = client
        .export(export(vec![
            exp,
            envoy("cluster.endpoint.rq_total", "10.0.0.9:80", 40.0),
            envoy("cluster.endpoint.rq_success", "10.0.0.9:80", 30.0),
            envoy("cluster.endpoint.rq_total", "bad", 5.0),
            active,
            // Hundreds of other Envoy stats are dropped silently.
            envoy("cluster.upstream_cx_total", "10.0.0.9:80", 1.0),
        ]))
        .await
        .unwrap()
        .into_inner();
    // The sink rejected the `bad` backend's requests_total.
    let ps = r.partial_success.expect("partial success");
    assert_eq!(ps.rejected_data_points, 1, "{ps:?}");
    assert!(
        ps.error_message.contains("unknown backend"),
        "{}",
        ps.error_message
    );

    let v = take(&got);
    let web: Vec<_> = v.iter().filter(|t| t.cluster == "web").cloned().collect();
    let p50 = value(&web, "latency_p50_seconds").unwrap();
    assert!((p50 - 0.128).abs() < 1e-9, "{p50}");
    assert!((value(&web, "latency_p99_seconds").unwrap() - 0.25344).abs() < 1e-9);
    assert_eq!(value(&web, "requests_total"), Some(20.0));

    let edge: Vec<_> = v
        .iter()
        .filter(|t| t.cluster == "edge" && t.backend == "10.0.0.9:80")
        .cloned()
        .collect();
    assert_eq!(value(&edge, "requests_total"), Some(40.0));
    assert_eq!(value(&edge, "success_total"), Some(30.0));
    assert_eq!(value(&edge, "error_rate"), Some(0.25));
    assert_eq!(value(&edge, "in_flight"), Some(3.0));
    assert!(v.iter().all(|t| !t.metric.contains("cx_total")));
    let _ = stop.send(());
}

#[tokio::test]
async fn malformed_points_are_rejected_with_reasons() {
    let (sink, got) = recording_sink();
    let (mut client, stop) = start(IngestMapping::default(), sink).await;
    let bad_hist = metric(
        "http.server.request.duration",
        "s",
        Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: T0,
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![0.1, 0.2, 0.3],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    );
    let bad_unit = metric(
        "http.server.request.duration",
        "By",
        Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: T0,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    );
    let summary = metric(
        "http.server.request.duration",
        "s",
        Data::Summary(Summary {
            data_points: vec![SummaryDataPoint::default(), SummaryDataPoint::default()],
        }),
    );
    let nan = metric(
        "process.cpu.utilization",
        "1",
        Data::Gauge(Gauge {
            data_points: vec![number(vec![], 0, T0, f64::NAN), number(vec![], 0, 0, 0.5)],
        }),
    );
    let no_data = Metric {
        name: "process.cpu.utilization".into(),
        ..Default::default()
    };
    let bad_exp = metric(
        "rpc.server.duration",
        "ms",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: T0,
                scale: 50,
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        }),
    );
    let r = client
        .export(export(vec![
            bad_hist, bad_unit, summary, nan, no_data, bad_exp,
        ]))
        .await
        .unwrap()
        .into_inner();
    let ps = r.partial_success.expect("partial success");
    assert_eq!(ps.rejected_data_points, 8, "{ps:?}");
    for want in [
        "bucket counts",
        "not a time unit",
        "summaries are not supported",
        "not finite",
        "time_unix_nano is 0",
        "no data",
    ] {
        assert!(
            ps.error_message.contains(want),
            "{want:?} not in {}",
            ps.error_message
        );
    }
    assert!(take(&got).is_empty());

    // A point with no backend attribute at all.
    let mut req = export(vec![metric(
        "process.cpu.utilization",
        "1",
        Data::Gauge(Gauge {
            data_points: vec![number(vec![], 0, T0, 0.5)],
        }),
    )]);
    req.resource_metrics[0].resource = Some(Resource {
        attributes: vec![kv("service.name", "web")],
        ..Default::default()
    });
    let ps = client
        .export(req)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert!(
        ps.error_message.contains("no backend attribute"),
        "{}",
        ps.error_message
    );
    let _ = stop.send(());
}

/// The whole service: Envoy-style deltas and gauges for cluster `web`'s
/// backends named by address are stored under the backend names.
#[tokio::test]
async fn service_stores_envoy_stats_under_backend_names() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start(common::config(dir.path())).await;
    let mut client = MetricsServiceClient::new(running.channel().await);
    let now = common::now_ms() as u64 * 1_000_000;
    let pt = |ep: &str, t: u64, v: f64| {
        number(
            vec![
                kv("envoy.cluster_name", "web"),
                kv("envoy.endpoint_address", ep),
            ],
            t - SEC,
            t,
            v,
        )
    };
    for (i, t) in [now - 2 * SEC, now - SEC].into_iter().enumerate() {
        let r = client
            .export(export(vec![
                metric(
                    "cluster.endpoint.rq_total",
                    "",
                    Data::Sum(Sum {
                        data_points: vec![
                            pt("127.0.0.1:9001", t, 10.0 + i as f64),
                            pt("127.0.0.1:9999", t, 1.0),
                        ],
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    }),
                ),
                metric(
                    "cluster.endpoint.rq_active",
                    "",
                    Data::Gauge(Gauge {
                        data_points: vec![pt("127.0.0.1:9002", t, 4.0)],
                    }),
                ),
            ]))
            .await
            .unwrap()
            .into_inner();
        // The unknown endpoint is rejected by ingest, with its reason.
        let ps = r.partial_success.expect("unknown endpoint rejected");
        assert_eq!(ps.rejected_data_points, 1, "{ps:?}");
        assert!(
            ps.error_message.contains("127.0.0.1:9999"),
            "{}",
            ps.error_message
        );
    }
    let mut ms = pb::metrics_service_client::MetricsServiceClient::new(running.channel().await);
    let h = ms
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let series = |b: &str, m: &str| {
        h.series
            .iter()
            .find(|s| s.backend == b && s.metric == m)
            .map(|s| s.points.iter().map(|p| p.value).collect::<Vec<_>>())
    };
    assert_eq!(
        series("a", "requests_total"),
        Some(vec![10.0, 11.0]),
        "{h:?}"
    );
    assert_eq!(series("b", "in_flight"), Some(vec![4.0, 4.0]));
    running.stop().await;
}

#[tokio::test]
async fn otlp_exports_share_the_clients_ingest_rate_limit() {
    // A burst of 3 data points per client, refilled at 3 per second: the first
    // export (3 points) is served, the second, sent at once, is throttled with
    // RESOURCE_EXHAUSTED (OTLP's "retry later") and stores nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.limits.ingest_samples_per_second = 3.0;
    let running = common::start(cfg).await;
    let mut client = MetricsServiceClient::new(running.channel().await);
    let now = common::now_ms() as u64 * 1_000_000;
    let req = |t: u64| {
        export(vec![metric(
            "cluster.endpoint.rq_active",
            "",
            Data::Gauge(Gauge {
                data_points: ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
                    .iter()
                    .map(|ep| {
                        number(
                            vec![
                                kv("envoy.cluster_name", "web"),
                                kv("envoy.endpoint_address", ep),
                            ],
                            t - SEC,
                            t,
                            2.0,
                        )
                    })
                    .collect(),
            }),
        )])
    };
    let first = client
        .export(req(now - 2 * SEC))
        .await
        .unwrap()
        .into_inner();
    assert!(first.partial_success.is_none(), "{first:?}");
    let err = client.export(req(now - SEC)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("limits.ingest_samples_per_second"),
        "{}",
        err.message()
    );
    let mut ms = pb::metrics_service_client::MetricsServiceClient::new(running.channel().await);
    let h = ms
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let points: usize = h.series.iter().map(|s| s.points.len()).sum();
    assert_eq!(points, 3, "only the first export was stored: {h:?}");
    running.stop().await;
}
