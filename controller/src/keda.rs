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
//! - `metric` (optional, default `desired_replicas`): the only metric so far.
//!
//! The arithmetic: the metric value is Aya's desired replica count and the
//! target size is 1, so the HPA that KEDA creates computes
//! `ceil(value / target) = desired replicas` (the default `AverageValue`
//! metric type). `IsActive` is true while Aya wants at least one replica.
//!
//! Errors name what is wrong: a missing `cluster` key or unknown metric is
//! `INVALID_ARGUMENT`, a cluster Aya has not published is `NOT_FOUND`.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::publish::{ClusterSnapshot, PublishedState};

/// Generated types of the vendored `externalscaler` package (messages,
/// server and client).
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    tonic::include_proto!("externalscaler");
}

use pb::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use pb::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// Metadata key naming the Aya cluster.
pub const CLUSTER_KEY: &str = "cluster";
/// Metadata key choosing the metric.
pub const METRIC_KEY: &str = "metric";
/// The metric whose value is Aya's desired replica count (target size 1).
pub const DESIRED_REPLICAS: &str = "desired_replicas";
/// Every metric the scaler serves.
pub const METRICS: [&str; 1] = [DESIRED_REPLICAS];

/// The KEDA `ExternalScaler` service over the published state.
#[derive(Debug, Clone)]
pub struct KedaScaler {
    rx: watch::Receiver<Arc<PublishedState>>,
}

/// The `ExternalScaler` gRPC service serving every cluster published on
/// `rx`. Add it to a tonic router next to Aya's own services.
pub fn keda_service(rx: watch::Receiver<Arc<PublishedState>>) -> ExternalScalerServer<KedaScaler> {
    ExternalScalerServer::new(KedaScaler { rx })
}

/// What a `ScaledObjectRef` asks for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    cluster: String,
    metric: &'static str,
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
        None | Some("") => DESIRED_REPLICAS,
        Some(m) => METRICS.into_iter().find(|known| *known == m).ok_or_else(|| {
            Status::invalid_argument(format!(
                "ScaledObject {}/{}: trigger metadata `{METRIC_KEY}` = {m:?} is not a metric Aya serves; allowed: {}",
                r.namespace,
                r.name,
                METRICS.join(", ")
            ))
        })?,
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
    format!("aya-{cluster}-{}", target.metric.replace('_', "-"))
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

/// The value of `metric` for `snapshot` (`parse_target` only lets known
/// metrics through).
fn value_of(snapshot: &ClusterSnapshot, metric: &'static str) -> f64 {
    debug_assert_eq!(metric, DESIRED_REPLICAS);
    f64::from(snapshot.decision.scaling.desired_replicas)
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
        #[allow(deprecated)]
        let spec = MetricSpec {
            metric_name: metric_name(&target),
            target_size: 1,
            target_size_float: 1.0,
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
        let value = value_of(&snapshot, target.metric);
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
