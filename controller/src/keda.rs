//! KEDA external scaler: Aya's desired replica count as a KEDA metric.
//!
//! KEDA (Kubernetes Event-driven Autoscaling) calls external scalers over
//! gRPC (`externalscaler.ExternalScaler`, vendored in
//! `proto/keda/externalscaler.proto`). Aya implements it so a `ScaledObject`
//! with trigger type `external` (polling) or `external-push` (streaming
//! `StreamIsActive`) scales a workload on Aya's forecast-driven decision
//! instead of on a lagging utilisation signal.
//!
//! Trigger metadata (the `ScaledObjectRef.scalerMetadata` map):
//! - `cluster` (required): the Aya cluster whose decision drives the workload;
//! - `metric` (optional): `desired_replicas` (default) or `forecast_rps`;
//! - `target_rps_per_replica` (required with `forecast_rps`): requests per
//!   second one replica should serve.
//!
//! The arithmetic (the HPA that KEDA creates uses the default `AverageValue`
//! metric type, i.e. `desired = ceil(value / target)`):
//! - `desired_replicas`: value = Aya's desired replica count, target 1, so the
//!   HPA's result is exactly Aya's decision (forecast-driven, with Aya's
//!   min/max, cooldown and boot-time rules);
//! - `forecast_rps`: value = the peak of Aya's point forecast of demand over
//!   its horizon, target = `target_rps_per_replica`, so the HPA provisions
//!   for the coming peak (930 rps at 200 per replica gives 5 replicas).
//!   The forecast comes from a [`ForecastSource`] given to
//!   [`keda_service_with_forecast`].
//!
//! `IsActive` is true while Aya wants at least one replica.
//!
//! Errors name what is wrong: a missing key, unknown metric or bad number is
//! `INVALID_ARGUMENT`, a cluster Aya has not published is `NOT_FOUND`, no
//! forecast yet is `UNAVAILABLE`, and `forecast_rps` on a server without a
//! forecast source is `FAILED_PRECONDITION`.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::publish::{ClusterSnapshot, PublishedState};

/// Generated types of the vendored `externalscaler` package (messages,
/// server and client), compiled by `aya-proto`.
pub use aya_proto::keda as pb;

use pb::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use pb::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// Metadata key naming the Aya cluster.
pub const CLUSTER_KEY: &str = "cluster";
/// Metadata key choosing the metric.
pub const METRIC_KEY: &str = "metric";
/// Metadata key giving the requests per second one replica should serve
/// (required with [`FORECAST_RPS`]).
pub const TARGET_RPS_KEY: &str = "target_rps_per_replica";
/// The metric whose value is Aya's desired replica count (target size 1).
pub const DESIRED_REPLICAS: &str = "desired_replicas";
/// The metric whose value is the peak forecast demand (requests/s) over
/// Aya's horizon (target size `target_rps_per_replica`).
pub const FORECAST_RPS: &str = "forecast_rps";
/// Every metric the scaler serves.
pub const METRICS: [&str; 2] = [DESIRED_REPLICAS, FORECAST_RPS];

/// Where `forecast_rps` comes from: the peak point forecast (requests/s)
/// over the horizon for a cluster, or `None` while there is no forecast yet.
pub type ForecastSource = Arc<dyn Fn(&str) -> Option<f64> + Send + Sync>;

/// The KEDA `ExternalScaler` service over the published state.
#[derive(Clone)]
pub struct KedaScaler {
    rx: watch::Receiver<Arc<PublishedState>>,
    forecast: Option<ForecastSource>,
}

impl std::fmt::Debug for KedaScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KedaScaler")
            .field("forecast_source", &self.forecast.is_some())
            .finish_non_exhaustive()
    }
}

/// The `ExternalScaler` gRPC service serving every cluster published on
/// `rx` (metric `desired_replicas`; `forecast_rps` answers
/// `FAILED_PRECONDITION`). Add it to a tonic router next to Aya's own services.
pub fn keda_service(rx: watch::Receiver<Arc<PublishedState>>) -> ExternalScalerServer<KedaScaler> {
    ExternalScalerServer::new(KedaScaler { rx, forecast: None })
}

/// Like [`keda_service`], also serving `forecast_rps` from `forecast`.
pub fn keda_service_with_forecast(
    rx: watch::Receiver<Arc<PublishedState>>,
    forecast: ForecastSource,
) -> ExternalScalerServer<KedaScaler> {
    ExternalScalerServer::new(KedaScaler {
        rx,
        forecast: Some(forecast),
    })
}

/// The metric a trigger asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    DesiredReplicas,
    ForecastRps { per_replica: f64 },
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::DesiredReplicas => DESIRED_REPLICAS,
            Metric::ForecastRps { .. } => FORECAST_RPS,
        }
    }

    /// The HPA target per replica.
    fn target(self) -> f64 {
        match self {
            Metric::DesiredReplicas => 1.0,
            Metric::ForecastRps { per_replica } => per_replica,
        }
    }
}

/// What a `ScaledObjectRef` asks for, validated.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    cluster: String,
    metric: Metric,
}

fn parse_target(r: &ScaledObjectRef) -> Result<Target, Status> {
    let cluster = r
        .scaler_metadata
        .get(CLUSTER_KEY)
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "ScaledObject {}/{}: trigger metadata key `{CLUSTER_KEY}` is required (the Aya cluster to scale on)",
                r.namespace, r.name
            ))
        })?;
    let metric = match r.scaler_metadata.get(METRIC_KEY).map(|m| m.trim()) {
        None | Some("") | Some(DESIRED_REPLICAS) => Metric::DesiredReplicas,
        Some(FORECAST_RPS) => {
            let raw = r
                .scaler_metadata
                .get(TARGET_RPS_KEY)
                .map(|v| v.trim())
                .unwrap_or("");
            let per_replica = raw.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "ScaledObject {}/{}: metric `{FORECAST_RPS}` needs trigger metadata `{TARGET_RPS_KEY}`, \
                     a positive number of requests/s per replica (got {raw:?})",
                    r.namespace, r.name
                ))
            })?;
            Metric::ForecastRps { per_replica }
        }
        Some(m) => {
            return Err(Status::invalid_argument(format!(
                "ScaledObject {}/{}: trigger metadata `{METRIC_KEY}` = {m:?} is not a metric Aya serves; allowed: {}",
                r.namespace,
                r.name,
                METRICS.join(", ")
            )));
        }
    };
    Ok(Target {
        cluster: cluster.to_string(),
        metric,
    })
}

/// The HPA-facing metric name: unique per cluster, only characters allowed
/// in Kubernetes metric names.
fn metric_name(target: &Target) -> String {
    let cluster: String = target
        .cluster
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("aya-{cluster}-{}", target.metric.name().replace('_', "-"))
}

fn lookup(state: &PublishedState, target: &Target) -> Result<Arc<ClusterSnapshot>, Status> {
    state.clusters.get(&target.cluster).cloned().ok_or_else(|| {
        Status::not_found(format!(
            "Aya has published no decision for cluster {:?} (trigger metadata `{CLUSTER_KEY}`); known clusters: [{}]",
            target.cluster,
            state.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

impl KedaScaler {
    /// The scaler itself (what [`keda_service_with_forecast`] wraps), e.g.
    /// to call its methods in-process.
    pub fn new(rx: watch::Receiver<Arc<PublishedState>>, forecast: Option<ForecastSource>) -> Self {
        KedaScaler { rx, forecast }
    }

    /// The metric value for `target` given the cluster's current snapshot.
    fn value_of(&self, snapshot: &ClusterSnapshot, target: &Target) -> Result<f64, Status> {
        match target.metric {
            Metric::DesiredReplicas => Ok(f64::from(snapshot.decision.scaling.desired_replicas)),
            Metric::ForecastRps { .. } => {
                let source = self.forecast.as_ref().ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "this Aya server has no forecast source: metric `{FORECAST_RPS}` is unavailable; \
                         use `{DESIRED_REPLICAS}`"
                    ))
                })?;
                source(&target.cluster).filter(|v| v.is_finite()).map(|v| v.max(0.0)).ok_or_else(|| {
                    Status::unavailable(format!(
                        "no demand forecast for cluster {:?} yet (the forecaster needs more history)",
                        target.cluster
                    ))
                })
            }
        }
    }
}

fn is_active(snapshot: &ClusterSnapshot) -> bool {
    snapshot.decision.scaling.desired_replicas > 0
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let target = parse_target(request.get_ref())?;
        let snapshot = lookup(&self.rx.borrow(), &target)?;
        Ok(Response::new(IsActiveResponse {
            result: is_active(&snapshot),
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let target = parse_target(request.get_ref())?;
        let mut rx = self.rx.clone();
        // Fail the call itself (not the stream) for an unknown cluster.
        let first = is_active(&*lookup(&rx.borrow_and_update(), &target)?);
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            if tx
                .send(Ok(IsActiveResponse { result: first }))
                .await
                .is_err()
            {
                return;
            }
            let mut last = first;
            loop {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                let now = lookup(&rx.borrow_and_update(), &target).map(|s| is_active(&s));
                match now {
                    Ok(active) if active == last => {}
                    Ok(active) => {
                        last = active;
                        if tx
                            .send(Ok(IsActiveResponse { result: active }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(status) => {
                        // The cluster was removed: tell KEDA and end the stream.
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let target = parse_target(request.get_ref())?;
        // The spec does not depend on the decision, but an unknown cluster is
        // reported here already so a misconfigured ScaledObject fails early.
        lookup(&self.rx.borrow(), &target)?;
        let target_size = target.metric.target();
        #[allow(deprecated)]
        let spec = MetricSpec {
            metric_name: metric_name(&target),
            // Deprecated integer field for old KEDA versions.
            target_size: (target_size.ceil() as i64).max(1),
            target_size_float: target_size,
        };
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![spec],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let req = request.into_inner();
        let scaled = req.scaled_object_ref.ok_or_else(|| {
            Status::invalid_argument("GetMetricsRequest.scaledObjectRef is required")
        })?;
        let target = parse_target(&scaled)?;
        let snapshot = lookup(&self.rx.borrow(), &target)?;
        let value = self.value_of(&snapshot, &target)?;
        let name = if req.metric_name.is_empty() {
            metric_name(&target)
        } else {
            req.metric_name
        };
        #[allow(deprecated)]
        let mv = MetricValue {
            metric_name: name,
            // Deprecated integer field for old KEDA versions: round up, never under-provision.
            metric_value: value.ceil() as i64,
            metric_value_float: value,
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![mv],
        }))
    }
}

#[cfg(test)]
mod tests {
    //! A KEDA-like client (tonic, over loopback) against the scaler.
    use super::pb::external_scaler_client::ExternalScalerClient;
    use super::*;
    use crate::publish::Endpoint;
    use aya_policy::{AlgorithmChoice, Decision, Explanation, LbAlgorithm, ScalingSignal};
    use std::collections::HashMap;
    use tonic::Code;
    use tonic::transport::Channel;

    fn state(version: u64, desired: u32) -> Arc<PublishedState> {
        let snap = ClusterSnapshot {
            cluster: "checkout".into(),
            version,
            decision: Decision {
                outlier_detection: None,
                max_requests: None,
                at: 0.0,
                weights: Vec::new(),
                ejected: Vec::new(),
                scaling: ScalingSignal {
                    desired_replicas: desired,
                    current_replicas: 2,
                    rule: "test".into(),
                },
                algorithm: AlgorithmChoice {
                    algorithm: LbAlgorithm::RoundRobin,
                    rule: "test".into(),
                },
                explanation: Explanation::default(),
            },
            endpoints: vec![Endpoint {
                backend: "b0".into(),
                host: "127.0.0.1".into(),
                port: 1,
                weight: 1,
            }],
        };
        let mut s = PublishedState {
            version,
            ..Default::default()
        };
        s.clusters.insert("checkout".into(), Arc::new(snap));
        Arc::new(s)
    }

    fn scaled(meta: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "checkout".into(),
            namespace: "shop".into(),
            scaler_metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    struct Harness {
        client: ExternalScalerClient<Channel>,
        tx: watch::Sender<Arc<PublishedState>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    }

    async fn start(initial: Arc<PublishedState>) -> Harness {
        let (tx, rx) = watch::channel(initial);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(keda_service(rx))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        let client = ExternalScalerClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        Harness {
            client,
            tx,
            stop: Some(stop),
            server,
        }
    }

    impl Harness {
        async fn shutdown(mut self) {
            drop(self.client);
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            let _ = self.server.await;
        }
    }

    #[tokio::test]
    async fn spec_metrics_and_is_active_follow_the_decision() {
        let mut h = start(state(1, 5)).await;
        let meta = [("cluster", "checkout"), ("scalerAddress", "aya:50051")];
        let spec = h
            .client
            .get_metric_spec(scaled(&meta))
            .await
            .expect("spec")
            .into_inner();
        assert_eq!(spec.metric_specs.len(), 1);
        let name = spec.metric_specs[0].metric_name.clone();
        assert_eq!(name, "aya-checkout-desired-replicas");
        assert_eq!(spec.metric_specs[0].target_size_float, 1.0);

        let req = GetMetricsRequest {
            scaled_object_ref: Some(scaled(&meta)),
            metric_name: name.clone(),
        };
        let m = h
            .client
            .get_metrics(req.clone())
            .await
            .expect("metrics")
            .into_inner();
        assert_eq!(
            (
                m.metric_values[0].metric_name.as_str(),
                m.metric_values[0].metric_value_float
            ),
            (name.as_str(), 5.0)
        );
        // HPA arithmetic: ceil(value / target) = desired replicas.
        assert_eq!(
            (m.metric_values[0].metric_value_float / spec.metric_specs[0].target_size_float).ceil(),
            5.0
        );
        assert!(
            h.client
                .is_active(scaled(&meta))
                .await
                .expect("active")
                .into_inner()
                .result
        );

        h.tx.send_replace(state(2, 0));
        let m = h
            .client
            .get_metrics(req)
            .await
            .expect("metrics")
            .into_inner();
        assert_eq!(m.metric_values[0].metric_value_float, 0.0);
        assert!(
            !h.client
                .is_active(scaled(&meta))
                .await
                .expect("active")
                .into_inner()
                .result
        );
        h.shutdown().await;
    }

    #[tokio::test]
    async fn errors_name_the_missing_key_unknown_metric_and_unknown_cluster() {
        let mut h = start(state(1, 3)).await;
        let e = h
            .client
            .is_active(scaled(&[]))
            .await
            .expect_err("missing cluster");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("`cluster` is required") && e.message().contains("shop/checkout"),
            "{}",
            e.message()
        );

        let e = h
            .client
            .get_metric_spec(scaled(&[("cluster", "checkout"), ("metric", "cpu")]))
            .await
            .expect_err("metric");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("\"cpu\"") && e.message().contains("desired_replicas"),
            "{}",
            e.message()
        );

        let e = h
            .client
            .get_metric_spec(scaled(&[("cluster", "nope")]))
            .await
            .expect_err("unknown");
        assert_eq!(e.code(), Code::NotFound);
        assert!(
            e.message().contains("\"nope\"") && e.message().contains("checkout"),
            "{}",
            e.message()
        );

        let e = h
            .client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: None,
                metric_name: String::new(),
            })
            .await
            .expect_err("no ref");
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = h
            .client
            .stream_is_active(scaled(&[("cluster", "nope")]))
            .await
            .expect_err("unknown stream");
        assert_eq!(e.code(), Code::NotFound);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn stream_is_active_pushes_only_changes() {
        let mut h = start(state(1, 2)).await;
        let mut stream = h
            .client
            .stream_is_active(scaled(&[("cluster", "checkout")]))
            .await
            .expect("stream")
            .into_inner();
        assert!(stream.message().await.expect("recv").expect("first").result);
        // A change that keeps it active is not re-sent; going idle is.
        h.tx.send_replace(state(2, 4));
        h.tx.send_replace(state(3, 0));
        assert!(!stream.message().await.expect("recv").expect("idle").result);
        h.tx.send_replace(state(4, 1));
        assert!(
            stream
                .message()
                .await
                .expect("recv")
                .expect("active again")
                .result
        );
        // Removing the cluster ends the stream with NOT_FOUND.
        h.tx.send_replace(Arc::new(PublishedState {
            version: 5,
            ..Default::default()
        }));
        let end = stream.message().await.expect_err("cluster removed");
        assert_eq!(end.code(), Code::NotFound);
        drop(stream);
        h.shutdown().await;
    }
}

#[cfg(test)]
mod forecast_tests {
    //! `forecast_rps` with and without a forecast source.
    use super::pb::external_scaler_client::ExternalScalerClient;
    use super::*;
    use aya_policy::{AlgorithmChoice, Decision, Explanation, LbAlgorithm, ScalingSignal};
    use tonic::Code;

    fn state() -> Arc<PublishedState> {
        let snap = ClusterSnapshot {
            cluster: "checkout".into(),
            version: 1,
            decision: Decision {
                outlier_detection: None,
                max_requests: None,
                at: 0.0,
                weights: Vec::new(),
                ejected: Vec::new(),
                scaling: ScalingSignal {
                    desired_replicas: 3,
                    current_replicas: 3,
                    rule: "hold".into(),
                },
                algorithm: AlgorithmChoice {
                    algorithm: LbAlgorithm::RoundRobin,
                    rule: "test".into(),
                },
                explanation: Explanation::default(),
            },
            endpoints: Vec::new(),
        };
        let mut s = PublishedState {
            version: 1,
            ..Default::default()
        };
        s.clusters.insert("checkout".into(), Arc::new(snap));
        s.clusters.insert(
            "fresh".into(),
            Arc::new(ClusterSnapshot {
                cluster: "fresh".into(),
                ..(*s.clusters["checkout"]).clone()
            }),
        );
        Arc::new(s)
    }

    fn scaled(meta: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "checkout".into(),
            namespace: "shop".into(),
            scaler_metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    async fn serve(
        svc: ExternalScalerServer<KedaScaler>,
    ) -> (
        ExternalScalerClient<tonic::transport::Channel>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        (
            ExternalScalerClient::connect(format!("http://{addr}"))
                .await
                .expect("connect"),
            stop,
        )
    }

    #[tokio::test]
    async fn forecast_rps_gives_hpa_the_peak_over_target_per_replica() {
        let (_tx, rx) = watch::channel(state());
        let source: ForecastSource = Arc::new(|c: &str| (c == "checkout").then_some(930.0));
        let (mut client, stop) = serve(keda_service_with_forecast(rx, source)).await;
        let meta = [
            ("cluster", "checkout"),
            ("metric", "forecast_rps"),
            ("target_rps_per_replica", "200"),
        ];
        let spec = client
            .get_metric_spec(scaled(&meta))
            .await
            .expect("spec")
            .into_inner();
        let spec = &spec.metric_specs[0];
        assert_eq!(
            (spec.metric_name.as_str(), spec.target_size_float),
            ("aya-checkout-forecast-rps", 200.0)
        );
        let m = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(scaled(&meta)),
                metric_name: spec.metric_name.clone(),
            })
            .await
            .expect("metrics")
            .into_inner();
        let v = m.metric_values[0].metric_value_float;
        assert_eq!(v, 930.0);
        assert_eq!(
            (v / spec.target_size_float).ceil(),
            5.0,
            "930 rps at 200 per replica = 5 replicas"
        );

        // No forecast yet for this cluster: UNAVAILABLE naming it.
        let fresh = [
            ("cluster", "fresh"),
            ("metric", "forecast_rps"),
            ("target_rps_per_replica", "200"),
        ];
        let e = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(scaled(&fresh)),
                metric_name: String::new(),
            })
            .await
            .expect_err("no forecast");
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains("\"fresh\""), "{}", e.message());

        for bad in ["", "0", "-5", "abc", "NaN"] {
            let meta = [
                ("cluster", "checkout"),
                ("metric", "forecast_rps"),
                ("target_rps_per_replica", bad),
            ];
            let e = client
                .get_metric_spec(scaled(&meta))
                .await
                .expect_err("bad target");
            assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}");
            assert!(
                e.message().contains("target_rps_per_replica"),
                "{}",
                e.message()
            );
        }
        let _ = stop.send(());
    }

    #[tokio::test]
    async fn forecast_rps_without_a_source_is_a_failed_precondition() {
        let (_tx, rx) = watch::channel(state());
        let (mut client, stop) = serve(keda_service(rx)).await;
        let meta = [
            ("cluster", "checkout"),
            ("metric", "forecast_rps"),
            ("target_rps_per_replica", "50"),
        ];
        let e = client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(scaled(&meta)),
                metric_name: String::new(),
            })
            .await
            .expect_err("no source");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("desired_replicas"), "{}", e.message());
        let _ = stop.send(());
    }
}
