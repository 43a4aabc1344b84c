//! The aya.v1 gRPC services: metrics ingest, decision watch, forecast query
//! and admin. Thin adapters over [`Controller`]: they convert wire types,
//! map errors to gRPC statuses and move blocking store work off the async
//! workers.

use std::pin::Pin;
use std::sync::Arc;

use aya_proto::v1 as pb;
use aya_proto::v1::admin_service_server::AdminService;
use aya_proto::v1::decision_service_server::DecisionService;
use aya_proto::v1::forecast_service_server::ForecastService;
use aya_proto::v1::metrics_service_server::MetricsService;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Caller, ClientKey, RateLimits, SecurityMetrics, audit};
use crate::convert;
use crate::ingest::{Outcome, RejectReason, Rejection};
use crate::publish::ClusterSnapshot;
use crate::state::{Controller, ControllerError, Override};

/// Batches of one stream that may be waiting for their commit at once.
const ACK_PIPELINE: usize = 8;
/// Server limit on history points per query.
const MAX_HISTORY_POINTS: usize = 1_000_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn status(e: ControllerError) -> Status {
    match e {
        ControllerError::UnknownCluster(_) | ControllerError::UnknownBackend { .. } => {
            Status::not_found(e.to_string())
        }
        ControllerError::Invalid(_)
        | ControllerError::Config(_)
        | ControllerError::Policy(_)
        | ControllerError::ClusterPolicy { .. } => Status::invalid_argument(e.to_string()),
        ControllerError::WriterGone => Status::unavailable(e.to_string()),
        ControllerError::Ha(_) => Status::failed_precondition(e.to_string()),
        ControllerError::Conflict(_) => Status::aborted(e.to_string()),
        ControllerError::Unavailable(_) => Status::unavailable(e.to_string()),
        ControllerError::Store(_) => Status::internal(e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ControllerError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(status)
}

/// Implements every aya.v1 service over one [`Controller`].
#[derive(Debug, Clone)]
pub struct AyaApi {
    ctl: Controller,
    security: SecurityMetrics,
    rates: Arc<RateLimits>,
}

impl AyaApi {
    /// Services over `ctl`.
    pub fn new(ctl: Controller) -> Self {
        let security = SecurityMetrics::new(&ctl.config().limits);
        AyaApi {
            ctl,
            security,
            rates: Arc::new(RateLimits::none()),
        }
    }

    /// Count each client's ingested samples against `rates.ingest`.
    pub fn with_rate_limits(mut self, rates: Arc<RateLimits>) -> Self {
        self.rates = rates;
        self
    }

    /// Count limit rejections on `metrics` (the server's `/metrics` ones).
    pub fn with_security(mut self, metrics: SecurityMetrics) -> Self {
        self.security = metrics;
        self
    }

    /// Refuse a cluster change that would exceed `limits.max_clusters` or
    /// `limits.max_backends_per_cluster`.
    fn check_limits(&self, cluster: &str, backends: usize) -> Result<(), Status> {
        let limits = &self.ctl.config().limits;
        if backends > limits.max_backends_per_cluster {
            self.security.limit_hit("max_backends_per_cluster");
            return Err(Status::resource_exhausted(format!(
                "cluster {}: {backends} backends exceed limits.max_backends_per_cluster = {}",
                crate::validate::truncate_for_message(cluster, 128),
                limits.max_backends_per_cluster
            )));
        }
        if self.ctl.cluster(cluster).is_none() && self.ctl.clusters().len() >= limits.max_clusters {
            self.security.limit_hit("max_clusters");
            return Err(Status::resource_exhausted(format!(
                "limits.max_clusters = {} reached: delete a cluster first",
                limits.max_clusters
            )));
        }
        Ok(())
    }
}

/// A compact JSON form of a value for an audit line (`absent` for `None`).
fn audit_json<T: serde::Serialize>(v: Option<&T>) -> String {
    v.map_or_else(
        || "absent".to_string(),
        |v| serde_json::to_string(v).unwrap_or_else(|e| format!("<{e}>")),
    )
}

/// A published decision in an audit line: weights, algorithm, replicas.
fn audit_decision(s: Option<&ClusterSnapshot>) -> String {
    let Some(s) = s else {
        return "absent".to_string();
    };
    let d = &s.decision;
    let weights: Vec<String> = d
        .weights
        .iter()
        .map(|w| format!("{}={}", w.backend, w.weight))
        .collect();
    format!(
        "weights [{}] algorithm {:?} replicas {}",
        weights.join(","),
        d.algorithm.algorithm,
        d.scaling.desired_replicas
    )
}

impl Controller {
    /// The wire-level ingest entry (the aya.v1 `Ingest` stream's, and any
    /// caller holding aya.v1 samples): converts the samples to ingest's
    /// domain types, queues them with [`Controller::submit_samples`], and
    /// resolves to one aya.v1 result per sample once the batch is committed
    /// (an error when the writer stopped first).
    pub async fn submit(
        &self,
        samples: Vec<pb::Sample>,
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<pb::SampleResult>, oneshot::error::RecvError>>
        + Send
        + 'static,
        ControllerError,
    > {
        let rx = self
            .submit_samples(samples.into_iter().map(convert::sample_from_wire).collect())
            .await?;
        Ok(async move { rx.await.map(results_to_wire) })
    }
}

fn results_to_wire(outcomes: Vec<Outcome>) -> Vec<pb::SampleResult> {
    outcomes.into_iter().map(convert::outcome_to_wire).collect()
}

/// The rejection of a batch of `n` samples over `client`'s ingest limit.
fn rate_limited(rates: &RateLimits, client: &ClientKey, n: usize) -> Option<Rejection> {
    let limiter = rates.ingest.as_ref()?;
    let l = limiter.try_take(&client.0, n as f64).err()?;
    Some(Rejection::new(
        RejectReason::RateLimited,
        format!(
            "ingest rate limit: at most {} samples per second per client (limits.ingest_samples_per_second); nothing of this batch was stored, retry in {:.2} s",
            limiter.rate(),
            l.retry_after_seconds
        ),
    ))
}

enum Pending {
    Wait(u64, oneshot::Receiver<Vec<Outcome>>),
    Done(pb::IngestAck),
    Fail(Status),
}

/// The ack of a batch: one result per sample, or, when every sample was
/// refused with the same reason and message (a whole-batch refusal), that
/// one result in `batch_rejection` and no per-sample list: a refused
/// 100,000-sample batch costs one short message, not 100,000.
fn ack(sequence: u64, outcomes: Vec<Outcome>) -> pb::IngestAck {
    let n = outcomes.len() as u32;
    let accepted = outcomes.iter().filter(|o| o.is_ok()).count() as u32;
    let whole = match outcomes.first() {
        Some(Err(first)) if n > 1 && outcomes.iter().all(|o| o.as_ref().err() == Some(first)) => {
            Some(convert::outcome_to_wire(Err(first.clone())))
        }
        _ => None,
    };
    match whole {
        Some(batch_rejection) => pb::IngestAck {
            sequence,
            results: Vec::new(),
            accepted: 0,
            rejected: n,
            batch_rejection: Some(batch_rejection),
        },
        None => pb::IngestAck {
            sequence,
            results: results_to_wire(outcomes),
            accepted,
            rejected: n - accepted,
            batch_rejection: None,
        },
    }
}

#[tonic::async_trait]
impl MetricsService for AyaApi {
    type IngestStream = BoxStream<pb::IngestAck>;

    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestBatch>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let client = ClientKey::of_request(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Pending>(ACK_PIPELINE);
        let ctl = self.ctl.clone();
        let rates = self.rates.clone();
        let security = self.security.clone();
        let closing = self.ctl.closing();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => Some(m),
                    _ = until_closed(closing.clone()) => None,
                };
                let Some(msg) = msg else {
                    let _ = tx
                        .send(Pending::Fail(Status::unavailable(
                            "server is shutting down",
                        )))
                        .await;
                    break;
                };
                match msg {
                    Ok(Some(batch)) => {
                        let seq = batch.sequence;
                        if let Some(limited) = rate_limited(&rates, &client, batch.samples.len()) {
                            security.limit_hit("ingest_samples_per_second");
                            ctl.metrics()
                                .count_rejected_n(RejectReason::RateLimited, batch.samples.len());
                            let outcomes = vec![Err(limited); batch.samples.len()];
                            if tx.send(Pending::Done(ack(seq, outcomes))).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        let samples = batch
                            .samples
                            .into_iter()
                            .map(convert::sample_from_wire)
                            .collect();
                        match ctl.submit_samples(samples).await {
                            Ok(r) => {
                                if tx.send(Pending::Wait(seq, r)).await.is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Pending::Fail(status(e))).await;
                                break;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(s) => {
                        tracing::warn!(error = %s.message(), "ingest stream: undecodable message; closing the stream");
                        let _ = tx.send(Pending::Fail(s)).await;
                        break;
                    }
                }
            }
        });
        let out = ReceiverStream::new(rx).then(|p| async move {
            match p {
                Pending::Wait(seq, r) => match r.await {
                    Ok(results) => Ok(ack(seq, results)),
                    Err(_) => Err(Status::unavailable(
                        "ingest writer stopped before committing the batch",
                    )),
                },
                Pending::Done(a) => Ok(a),
                Pending::Fail(s) => Err(s),
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn query_history(
        &self,
        request: Request<pb::QueryHistoryRequest>,
    ) -> Result<Response<pb::QueryHistoryResponse>, Status> {
        let q = request.into_inner();
        if q.cluster.is_empty() {
            return Err(Status::invalid_argument("cluster is required"));
        }
        let limit = if q.limit == 0 {
            MAX_HISTORY_POINTS
        } else {
            (q.limit as usize).min(MAX_HISTORY_POINTS)
        };
        let ctl = self.ctl.clone();
        let (series, truncated) = blocking(move || {
            ctl.history(
                &q.cluster, &q.backend, &q.metric, q.start_ms, q.end_ms, limit,
            )
        })
        .await?;
        Ok(Response::new(pb::QueryHistoryResponse {
            series: series
                .into_iter()
                .map(|(k, pts)| pb::HistorySeries {
                    backend: k.backend,
                    metric: k.metric,
                    kind: k.kind,
                    labels: k.labels,
                    points: pts
                        .into_iter()
                        .map(|(t, v)| pb::HistoryPoint {
                            timestamp_ms: t,
                            value: v,
                        })
                        .collect(),
                })
                .collect(),
            truncated,
        }))
    }
}

impl WatchState {
    fn is_new(&self, version: u64) -> bool {
        if self.monotonic {
            version > self.last_version
        } else {
            version != self.last_version
        }
    }
}

/// Resolves when `rx` becomes true (or its sender is gone).
async fn until_closed(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

struct WatchState {
    rx: watch::Receiver<Arc<ClusterSnapshot>>,
    closing: watch::Receiver<bool>,
    first: bool,
    last_version: u64,
    /// Send only versions above `last_version` (HA: a replica that lags
    /// another never shows a reconnecting watcher an older version).
    monotonic: bool,
    done: bool,
}

/// A stream of a cluster's snapshots: the current one at once (unless the
/// client has `last_version` already), then each new one; a slow reader
/// only sees the latest. The stream ends with UNAVAILABLE when `closing`
/// becomes true (graceful shutdown) and NOT_FOUND when the cluster is deleted.
pub fn watch_stream(
    rx: watch::Receiver<Arc<ClusterSnapshot>>,
    closing: watch::Receiver<bool>,
    last_version: u64,
) -> BoxStream<pb::ClusterSnapshot> {
    watch_stream_with(rx, closing, last_version, false)
}

/// [`watch_stream`]; with `monotonic`, only snapshots whose version is
/// above the last one sent (or the client's `last_version`) are sent: what
/// the HA mode serves, where versions are etcd revisions and a replica
/// may lag the one the client saw before.
pub fn watch_stream_with(
    rx: watch::Receiver<Arc<ClusterSnapshot>>,
    closing: watch::Receiver<bool>,
    last_version: u64,
    monotonic: bool,
) -> BoxStream<pb::ClusterSnapshot> {
    let st = WatchState {
        rx,
        closing,
        first: true,
        last_version,
        monotonic,
        done: false,
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        if st.first {
            st.first = false;
            let cur = st.rx.borrow_and_update().clone();
            if st.is_new(cur.version) {
                st.last_version = cur.version;
                return Some((Ok(convert::snapshot_to_wire(&cur)), st));
            }
        }
        loop {
            let r = tokio::select! {
                r = st.rx.changed() => Some(r),
                _ = until_closed(st.closing.clone()) => None,
            };
            let Some(r) = r else {
                st.done = true;
                return Some((
                    Err(Status::unavailable(
                        "server is shutting down; reconnect with last_version",
                    )),
                    st,
                ));
            };
            if r.is_err() {
                st.done = true;
                return Some((Err(Status::not_found("cluster was deleted")), st));
            }
            let cur = st.rx.borrow_and_update().clone();
            if st.is_new(cur.version) {
                st.last_version = cur.version;
                return Some((Ok(convert::snapshot_to_wire(&cur)), st));
            }
        }
    }))
}

#[tonic::async_trait]
impl DecisionService for AyaApi {
    type WatchStream = BoxStream<pb::ClusterSnapshot>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let rx = self
            .ctl
            .publisher()
            .subscribe(&req.cluster)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "cluster {:?} does not exist or has not been published",
                    req.cluster
                ))
            })?;
        Ok(Response::new(watch_stream_with(
            rx,
            self.ctl.closing(),
            req.last_version,
            self.ctl.replica().is_some(),
        )))
    }

    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::ClusterSnapshot>, Status> {
        let req = request.into_inner();
        let snap = self.ctl.publisher().current(&req.cluster).ok_or_else(|| {
            Status::not_found(format!(
                "cluster {:?} has no published snapshot",
                req.cluster
            ))
        })?;
        Ok(Response::new(convert::snapshot_to_wire(&snap)))
    }
}

#[tonic::async_trait]
impl ForecastService for AyaApi {
    async fn get_forecast(
        &self,
        request: Request<pb::ForecastRequest>,
    ) -> Result<Response<pb::ForecastResponse>, Status> {
        let req = request.into_inner();
        if req.horizon > 10_000 {
            return Err(Status::invalid_argument(format!(
                "horizon {} exceeds 10000",
                req.horizon
            )));
        }
        let Some((rec, model)) = self.ctl.forecast(&req.cluster).map_err(status)? else {
            return Err(Status::unavailable(format!(
                "no forecast for cluster {:?} yet (no forecaster configured, or too little history)",
                req.cluster
            )));
        };
        let n = if req.horizon == 0 {
            rec.last.mean.len()
        } else {
            (req.horizon as usize).min(rec.last.mean.len())
        };
        let mae = rec.mae();
        let f = rec.last;
        Ok(Response::new(pb::ForecastResponse {
            cluster: req.cluster,
            issued_at: f.issued_at,
            step: f.step,
            mean: f.mean.into_iter().take(n).collect(),
            lower: f.lower.into_iter().take(n).collect(),
            upper: f.upper.into_iter().take(n).collect(),
            level: f.level,
            model,
            one_step_mae: mae,
        }))
    }
}

#[tonic::async_trait]
impl AdminService for AyaApi {
    async fn list_clusters(
        &self,
        _r: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        Ok(Response::new(pb::ListClustersResponse {
            clusters: self
                .ctl
                .clusters()
                .iter()
                .map(convert::cluster_to_wire)
                .collect(),
        }))
    }

    async fn upsert_cluster(
        &self,
        r: Request<pb::UpsertClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let caller = Caller::of(&r);
        let c = r
            .into_inner()
            .cluster
            .ok_or_else(|| Status::invalid_argument("cluster is required"))?;
        let cfg =
            convert::cluster_from_wire(&c).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_limits(&cfg.name, cfg.backends.len())?;
        let before = self.ctl.cluster(&cfg.name);
        // The wire cluster has no calendar: its events (file and added) stay.
        let mut cfg = cfg;
        if let Some(b) = &before {
            cfg.events = b.events.clone();
        }
        let ctl = self.ctl.clone();
        let out = blocking(move || ctl.upsert_cluster(cfg)).await?;
        audit(
            &caller,
            "UpsertCluster",
            &out.name,
            &audit_json(before.as_ref()),
            &audit_json(Some(&out)),
        );
        Ok(Response::new(convert::cluster_to_wire(&out)))
    }

    async fn delete_cluster(
        &self,
        r: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteClusterResponse>, Status> {
        let caller = Caller::of(&r);
        let name = r.into_inner().name;
        let before = self.ctl.cluster(&name);
        let ctl = self.ctl.clone();
        let target = name.clone();
        let deleted = blocking(move || ctl.delete_cluster(&name)).await?;
        if deleted {
            audit(
                &caller,
                "DeleteCluster",
                &target,
                &audit_json(before.as_ref()),
                "absent",
            );
        }
        Ok(Response::new(pb::DeleteClusterResponse { deleted }))
    }

    async fn upsert_backend(
        &self,
        r: Request<pb::UpsertBackendRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let caller = Caller::of(&r);
        let r = r.into_inner();
        let b = r
            .backend
            .ok_or_else(|| Status::invalid_argument("backend is required"))?;
        let b = convert::backend_from_wire(&b);
        let existing = self.ctl.cluster(&r.cluster);
        let before = existing
            .as_ref()
            .and_then(|c| c.backends.iter().find(|x| x.name == b.name).cloned());
        if let Some(c) = &existing
            && before.is_none()
        {
            self.check_limits(&r.cluster, c.backends.len() + 1)?;
        }
        let target = format!("{}/{}", r.cluster, b.name);
        let name = b.name.clone();
        let ctl = self.ctl.clone();
        let out = blocking(move || ctl.upsert_backend(&r.cluster, b)).await?;
        let after = out.backends.iter().find(|x| x.name == name);
        audit(
            &caller,
            "UpsertBackend",
            &target,
            &audit_json(before.as_ref()),
            &audit_json(after),
        );
        Ok(Response::new(convert::cluster_to_wire(&out)))
    }

    async fn delete_backend(
        &self,
        r: Request<pb::DeleteBackendRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let caller = Caller::of(&r);
        let r = r.into_inner();
        let before = self
            .ctl
            .cluster(&r.cluster)
            .and_then(|c| c.backends.into_iter().find(|x| x.name == r.backend));
        let target = format!("{}/{}", r.cluster, r.backend);
        let ctl = self.ctl.clone();
        let out = blocking(move || ctl.delete_backend(&r.cluster, &r.backend)).await?;
        audit(
            &caller,
            "DeleteBackend",
            &target,
            &audit_json(before.as_ref()),
            "absent",
        );
        Ok(Response::new(convert::cluster_to_wire(&out)))
    }

    async fn set_override(
        &self,
        r: Request<pb::SetOverrideRequest>,
    ) -> Result<Response<pb::ClusterSnapshot>, Status> {
        let caller = Caller::of(&r);
        let r = r.into_inner();
        let algorithm = match r.algorithm {
            0 => None,
            n => Some(convert::algorithm_from_wire(n).ok_or_else(|| {
                Status::invalid_argument(format!("algorithm: unknown value {n}"))
            })?),
        };
        let o = Override {
            weights: r
                .weights
                .iter()
                .map(|w| aya_policy::BackendWeight {
                    backend: w.backend.clone(),
                    weight: w.weight,
                })
                .collect(),
            algorithm,
            desired_replicas: (r.desired_replicas > 0).then_some(r.desired_replicas),
        };
        let before = self.ctl.publisher().current(&r.cluster);
        let target = r.cluster.clone();
        let ctl = self.ctl.clone();
        let snap = blocking(move || ctl.publish_override(&r.cluster, o)).await?;
        audit(
            &caller,
            "SetOverride",
            &target,
            &audit_decision(before.as_deref()),
            &audit_decision(Some(&snap)),
        );
        Ok(Response::new(convert::snapshot_to_wire(&snap)))
    }

    async fn warm_start(
        &self,
        r: Request<pb::WarmStartRequest>,
    ) -> Result<Response<pb::WarmStartResponse>, Status> {
        let caller = Caller::of(&r);
        let r = r.into_inner();
        let ctl = self.ctl.clone();
        let model_before = ctl.model(&r.cluster).map(|m| m.describe());
        let (cluster, force) = (r.cluster.clone(), r.force);
        let report = blocking(move || {
            let now = ctl.clock().now_secs();
            ctl.warm_start_requested(&cluster, force, now)
        })
        .await?;
        let model_after = self.ctl.model(&r.cluster).map(|m| m.describe());
        audit(
            &caller,
            "WarmStart",
            &r.cluster,
            &format!("model {}", model_before.as_deref().unwrap_or("none")),
            &format!(
                "model {} ({}; {} points added from {})",
                model_after.as_deref().unwrap_or("none"),
                report
                    .retrain
                    .as_ref()
                    .map_or("no retrain", |x| x.outcome.as_str()),
                report.added_points,
                report.source
            ),
        );
        if report.failed {
            return Err(Status::failed_precondition(format!(
                "warm start of cluster {:?} from {} failed: {}",
                r.cluster, report.source, report.message
            )));
        }
        Ok(Response::new(pb::WarmStartResponse {
            source: report.source,
            stored_points: report.stored_points as u64,
            added_points: report.added_points as u64,
            retrain_outcome: report
                .retrain
                .as_ref()
                .map_or(String::new(), |x| x.outcome.as_str().to_string()),
            candidate_mase: report
                .retrain
                .as_ref()
                .map_or(f64::NAN, |x| x.candidate_mase),
            current_mase: report.retrain.as_ref().map_or(f64::NAN, |x| x.current_mase),
            installed_unscored: report.installed_unscored,
            message: report.message,
        }))
    }

    async fn clear_override(
        &self,
        r: Request<pb::ClearOverrideRequest>,
    ) -> Result<Response<pb::ClearOverrideResponse>, Status> {
        let caller = Caller::of(&r);
        let cluster = r.into_inner().cluster;
        let before = self.ctl.publisher().current(&cluster);
        let ctl = self.ctl.clone();
        let target = cluster.clone();
        let cleared = blocking(move || ctl.clear_override(&cluster)).await?;
        if cleared {
            let after = self.ctl.publisher().current(&target);
            audit(
                &caller,
                "ClearOverride",
                &target,
                &audit_decision(before.as_deref()),
                &audit_decision(after.as_deref()),
            );
        }
        Ok(Response::new(pb::ClearOverrideResponse { cleared }))
    }

    async fn get_stats(
        &self,
        _r: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        let m = self.ctl.metrics();
        Ok(Response::new(pb::Stats {
            samples_accepted: m.accepted(),
            samples_rejected: m.rejected(),
            batches_committed: m.batches(),
            samples_stored: m.stored(),
            ticks: m.ticks(),
            publications: m.publications(),
            watchers: self.ctl.publisher().receiver_count() as u64,
        }))
    }

    async fn list_anomalies(
        &self,
        r: Request<pb::ListAnomaliesRequest>,
    ) -> Result<Response<pb::ListAnomaliesResponse>, Status> {
        let r = r.into_inner();
        if !r.cluster.is_empty() && self.ctl.cluster(&r.cluster).is_none() {
            return Err(status(ControllerError::UnknownCluster(r.cluster)));
        }
        let Some(a) = self.ctl.anomalies() else {
            return Ok(Response::new(pb::ListAnomaliesResponse::default()));
        };
        let (open, closed) = a.list(&r.cluster, r.include_closed);
        Ok(Response::new(pb::ListAnomaliesResponse {
            open: open.into_iter().map(convert::anomaly_to_wire).collect(),
            closed: closed.into_iter().map(convert::anomaly_to_wire).collect(),
            enabled: true,
        }))
    }

    async fn list_events(
        &self,
        r: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = r.into_inner();
        let ev = self.ctl.events(&r.cluster).map_err(status)?;
        Ok(Response::new(convert::events_to_wire(&ev, r.from_ms)))
    }

    async fn add_event(
        &self,
        r: Request<pb::AddEventRequest>,
    ) -> Result<Response<pb::KnownEvent>, Status> {
        let caller = Caller::of(&r);
        let r = r.into_inner();
        let e = r
            .event
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("event is required"))?;
        let event = convert::event_from_wire(e);
        let cluster = r.cluster.clone();
        let ctl = self.ctl.clone();
        let added = blocking(move || ctl.add_event(&cluster, event)).await?;
        audit(
            &caller,
            "AddEvent",
            &format!("{}/events/{}", r.cluster, added.id),
            "absent",
            &audit_json(Some(&added.event)),
        );
        Ok(Response::new(convert::added_event_to_wire(&added)))
    }

    async fn delete_event(
        &self,
        r: Request<pb::DeleteEventRequest>,
    ) -> Result<Response<pb::DeleteEventResponse>, Status> {
        let caller = Caller::of(&r);
        let r = r.into_inner();
        let (cluster, id) = (r.cluster.clone(), r.id.clone());
        let ctl = self.ctl.clone();
        let removed = blocking(move || ctl.delete_event(&cluster, &id)).await?;
        if let Some(a) = &removed {
            audit(
                &caller,
                "DeleteEvent",
                &format!("{}/events/{}", r.cluster, a.id),
                &audit_json(Some(&a.event)),
                "absent",
            );
        }
        Ok(Response::new(pb::DeleteEventResponse {
            deleted: removed.is_some(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::test_snapshot;

    #[tokio::test]
    async fn a_monotonic_watch_never_sends_a_version_below_the_clients() {
        let (tx, rx) = watch::channel(Arc::new(test_snapshot("web", 5, 1)));
        let (_closing_tx, closing) = watch::channel(false);
        // Plain: a different version is news (a recreated cluster restarts at 1).
        let mut plain = watch_stream(rx.clone(), closing.clone(), 9);
        assert_eq!(plain.next().await.unwrap().unwrap().version, 5);
        // HA: the client has 9 from another replica; 5 and 7 are older.
        let mut ha = watch_stream_with(rx, closing, 9, true);
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), ha.next());
        assert!(quiet.await.is_err(), "version 5 is below the client's 9");
        tx.send_replace(Arc::new(test_snapshot("web", 7, 1)));
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), ha.next());
        assert!(quiet.await.is_err(), "version 7 is below the client's 9");
        tx.send_replace(Arc::new(test_snapshot("web", 12, 2)));
        let s = ha.next().await.unwrap().unwrap();
        assert_eq!(
            (
                s.version,
                s.decision.unwrap().scaling.unwrap().desired_replicas
            ),
            (12, 2)
        );
    }
}
