//! The controller's state and operations, independent of gRPC. The tonic
//! services (`api`) and the background tasks (`server`) call into it.
//!
//! - [`restore`]: opening the store and restoring clusters, overrides,
//!   snapshots, series and models at start;
//! - [`registry`]: the clusters and their backends, operator overrides;
//! - [`runtime`]: each cluster's control loop and forecaster, built from
//!   its configuration;
//! - [`tick`]: observations from the latest ingested values, control ticks
//!   and publishing;
//! - [`retrain`]: the guarded background retrain of demand models;
//! - [`warm`]: the warm start of a cluster with too little stored demand
//!   history, from Prometheus, a CSV or an artifact, through that retrain.
//!
//! Time comes from the [`Clock`] the controller was opened with
//! ([`Controller::open_with_clock`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use aya_policy::{BackendWeight, LbAlgorithm};

use crate::clock::{Clock, RealDeadline};
use crate::config::{ClusterConfig, Config, ConfigError};
use crate::forecasting::ForecastRecord;
use crate::ingest::{IngestState, Job, Outcome, Sample};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::store::{Store, StoreError};
use crate::xds::XdsStats;

pub mod registry;
pub mod reload;
pub mod restore;
pub mod retrain;
pub mod runtime;
pub mod tick;
pub mod warm;

pub use retrain::RetrainReport;
pub use warm::WarmStartReport;

use runtime::ClusterRuntime;

/// Errors of controller operations.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Invalid configuration or admin request.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A policy name or its parameters are invalid.
    #[error(transparent)]
    Policy(#[from] aya_policy::PolicyError),
    /// The policy of a stored or configured cluster is invalid.
    #[error("cluster {cluster:?}: {source}")]
    ClusterPolicy {
        /// The cluster.
        cluster: String,
        /// Why.
        source: aya_policy::PolicyError,
    },
    /// The cluster does not exist.
    #[error("cluster {0:?} does not exist")]
    UnknownCluster(String),
    /// The backend does not exist.
    #[error("backend {backend:?} does not exist in cluster {cluster:?}")]
    UnknownBackend {
        /// Cluster.
        cluster: String,
        /// Backend.
        backend: String,
    },
    /// A request value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The ingest writer has stopped (the service is shutting down).
    #[error("ingest writer has stopped")]
    WriterGone,
    /// Not possible in (or refused by) the HA mode (`[ha]`).
    #[error("{0}")]
    Ha(String),
    /// Another replica of the HA group changed the same thing first; retry.
    #[error("{0}")]
    Conflict(String),
    /// The HA group's coordination store (etcd) could not be reached; retry.
    #[error("{0}")]
    Unavailable(String),
}

/// An operator override of a cluster's decision (also the test hook used to
/// publish chosen weights and algorithms deterministically).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// Weights to publish; backends not listed receive no traffic.
    pub weights: Vec<BackendWeight>,
    /// Algorithm to publish; `None` keeps the policy's.
    pub algorithm: Option<LbAlgorithm>,
    /// Desired replicas; `None` keeps the policy's.
    pub desired_replicas: Option<u32>,
}

/// One series of a history query: its identity and `(timestamp ms, value)` points.
pub type HistorySeries = (crate::store::SeriesKey, Vec<(i64, f64)>);

/// The controller. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    clock: Clock,
    store: Store,
    registry: Arc<RwLock<BTreeMap<String, ClusterConfig>>>,
    ingest: Arc<Mutex<IngestState>>,
    ingest_tx: mpsc::Sender<Job>,
    runtimes: Mutex<BTreeMap<String, ClusterRuntime>>,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    xds_stats: Arc<XdsStats>,
    closing: tokio::sync::watch::Sender<bool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Demand observed by ticks, not yet appended to the store.
    pending_demand: Mutex<Vec<(String, i64, f64)>>,
    /// The anomaly detectors (`None` when `[anomaly] enabled = false`).
    anomalies: Option<Arc<crate::anomaly::Anomalies>>,
    /// The configuration file's clusters as last applied (at start or by a
    /// reload): what a reload compares the new file with.
    applied: Mutex<Vec<ClusterConfig>>,
    /// This replica's HA group (`[ha]`), set once the service joined it.
    replica: std::sync::OnceLock<crate::ha::Replica>,
}

impl Inner {
    /// Append the demand observed since the last flush to the store.
    fn flush_demand(&self) {
        let points = std::mem::take(&mut *lock(&self.pending_demand));
        if let Err(e) = self.store.append_demand(&points) {
            tracing::warn!(error = %e, points = points.len(), "storing observed demand failed; the retrain history misses these ticks");
        }
    }

    /// Names of every cluster, sorted.
    fn cluster_names(&self) -> Vec<String> {
        lock_read(&self.registry).keys().cloned().collect()
    }
}

/// Key of a cluster's demand model in the store's model table.
pub fn model_key(cluster: &str) -> String {
    format!("demand/{cluster}")
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the unix epoch on the system clock, for callers outside
/// the service (a running controller's time is [`Controller::clock`]).
pub fn now_secs() -> f64 {
    Clock::system().now_secs()
}

impl Controller {
    /// Signal long-lived streams (Watch, Ingest) to end: graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Receiver that becomes `true` when shutdown begins.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Close the store: wait (up to `timeout`, real time) until this is the
    /// last handle to the controller, then stop the ingest writer and
    /// release the database file, so that the same data directory can be
    /// opened again in this process. Returns `false` if other handles stayed
    /// alive (the file is then released when the last one is dropped).
    pub fn close(self, timeout: std::time::Duration) -> bool {
        let deadline = RealDeadline::after(timeout);
        while Arc::strong_count(&self.inner) > 1 {
            if deadline.passed() {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                inner.flush_demand();
                if let Err(e) = inner.store.sync() {
                    tracing::warn!(error = %e, "final store sync failed");
                }
                let writer = lock(&inner.writer).take();
                // Dropping the sender ends the writer loop; joining it
                // releases its handle on the database.
                drop(inner);
                if let Some(w) = writer {
                    let _ = w.join();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    /// The clock the controller runs on.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }
    /// The publisher (subscribe to snapshots here).
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }
    /// Service counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
    /// Counters of the xDS server.
    pub fn xds_stats(&self) -> &Arc<XdsStats> {
        &self.inner.xds_stats
    }
    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    /// The anomaly detectors (`None` when `[anomaly] enabled = false`).
    pub fn anomalies(&self) -> Option<&Arc<crate::anomaly::Anomalies>> {
        self.inner.anomalies.as_ref()
    }

    /// This replica's HA group, once joined (`None` without `[ha]`).
    pub fn replica(&self) -> Option<&crate::ha::Replica> {
        self.inner.replica.get()
    }

    /// Join an HA group (once; the service does it at start).
    pub fn set_replica(&self, replica: crate::ha::Replica) {
        let _ = self.inner.replica.set(replica);
    }

    /// Publish a snapshot replicated from the HA group (its version is the
    /// etcd revision of its write) and store it, if it is newer than this
    /// replica's. Returns whether it was.
    pub fn apply_replicated_snapshot(
        &self,
        snap: crate::publish::ClusterSnapshot,
    ) -> Result<bool, ControllerError> {
        let json =
            serde_json::to_string(&snap).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        let name = snap.cluster.clone();
        if self.inner.publisher.publish_replicated(snap).is_none() {
            return Ok(false);
        }
        self.inner.store.put_snapshot(&name, Some(&json))?;
        Ok(true)
    }

    /// Queue a batch for validation and durable storage; the receiver gets
    /// one outcome per sample once the batch is committed (with `[ha]`:
    /// once the accepted samples are also in the group's ingest log, see
    /// [`crate::ha`]). Waits while the writer's queue is full
    /// (backpressure). (The gRPC edge's wire-typed entry is
    /// [`Controller::submit`], in [`crate::api`].)
    pub async fn submit_samples(
        &self,
        samples: Vec<Sample>,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<Outcome>>, ControllerError> {
        let Some(replica) = self.replica() else {
            return self.submit_local(samples).await;
        };
        let copy = samples.clone();
        let local = self.submit_local(samples).await?;
        replica
            .enqueue(copy, local)
            .await
            .ok_or(ControllerError::WriterGone)
    }

    /// [`Controller::submit_samples`] to this replica's store only (what
    /// the HA mode applies from the other replicas' ingest log).
    pub async fn submit_local(
        &self,
        samples: Vec<Sample>,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<Outcome>>, ControllerError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.inner
            .ingest_tx
            .send(Job { samples, reply })
            .await
            .map_err(|_| ControllerError::WriterGone)?;
        Ok(rx)
    }

    /// The latest forecast of a cluster and its one-step MAE.
    pub fn forecast(
        &self,
        cluster: &str,
    ) -> Result<Option<(ForecastRecord, String)>, ControllerError> {
        if self.cluster(cluster).is_none() {
            return Err(ControllerError::UnknownCluster(cluster.into()));
        }
        let rts = lock(&self.inner.runtimes);
        Ok(rts.get(cluster).and_then(|rt| {
            let rec = lock(&rt.record).clone();
            rec.have
                .then(|| (rec, rt.control.policy().name().to_string()))
        }))
    }

    /// Stored history of `cluster` (see the `QueryHistory` RPC).
    pub fn history(
        &self,
        cluster: &str,
        backend: &str,
        metric: &str,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
    ) -> Result<(Vec<HistorySeries>, bool), ControllerError> {
        let series = lock(&self.inner.ingest).cluster_series(cluster);
        let wanted: BTreeMap<u32, crate::store::SeriesKey> = series
            .into_iter()
            .filter(|(_, k)| {
                (backend.is_empty() || k.backend == backend)
                    && (metric.is_empty() || k.metric == metric)
            })
            .collect();
        let mut points: BTreeMap<u32, Vec<(i64, f64)>> = BTreeMap::new();
        let mut total = 0usize;
        let mut truncated = false;
        self.inner.store.scan(start_ms, |id, ts, v| {
            if wanted.contains_key(&id) && ts >= start_ms && (end_ms == 0 || ts < end_ms) {
                if total >= limit {
                    truncated = true;
                } else {
                    total += 1;
                    points.entry(id).or_default().push((ts, v));
                }
            }
        })?;
        let mut out: Vec<_> = points
            .into_iter()
            .filter_map(|(id, mut p)| {
                p.sort_by_key(|x| x.0);
                wanted.get(&id).map(|k| (k.clone(), p))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((out, truncated))
    }

    /// Delete history older than the retention window. Returns samples deleted.
    pub fn apply_retention(&self) -> Result<u64, ControllerError> {
        let cutoff =
            self.inner.clock.now_ms() - (self.inner.config.retention_seconds * 1000.0) as i64;
        let n = self.inner.store.retain(cutoff)?;
        self.inner.metrics.retention_deleted(n);
        for name in self.inner.cluster_names() {
            self.inner.store.retain_demand(&name, cutoff)?;
        }
        Ok(n)
    }
}

/// Shared fixtures of the state modules' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::BackendConfig;
    use crate::ingest::MetricKind;

    /// 2026-01-01T00:00:00Z.
    pub const T0_MS: i64 = 1_767_225_600_000;

    /// Cluster `web` with backends a, b, c (weight hints 1, 2, 3) and the
    /// deterministic `configured` policy; ticks only when a test asks.
    pub fn config(dir: &std::path::Path) -> Config {
        let backends = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| BackendConfig {
                name: n.to_string(),
                address: format!("127.0.0.1:{}", 9001 + i),
                weight_hint: i as u32 + 1,
            })
            .collect();
        Config {
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            data_dir: dir.to_path_buf(),
            tick_interval_seconds: 3600.0,
            default_policy: "configured".into(),
            clusters: vec![ClusterConfig {
                name: "web".into(),
                policy: String::new(),
                policy_params: Default::default(),
                algorithm: LbAlgorithm::WeightedRoundRobin,
                min_replicas: 1,
                max_replicas: 5,
                boot_time_seconds: 10.0,
                backends,
                warm_start: None,
                orca: None,
                events: Default::default(),
            }],
            init: true,
            ..Config::default()
        }
    }

    /// A controller on a manual clock at [`T0_MS`] in a fresh directory.
    pub fn open(dir: &tempfile::TempDir) -> Controller {
        Controller::open_with_clock(config(dir.path()), Clock::manual(T0_MS)).unwrap()
    }

    /// A gauge sample of cluster `web`.
    pub fn sample(backend: &str, metric: &str, ts: i64, value: f64) -> Sample {
        Sample::new("web", backend, metric, MetricKind::Gauge, ts, value)
    }

    /// Ingest `samples` through the writer and wait for the results.
    pub fn ingest(ctl: &Controller, samples: Vec<Sample>) -> Vec<bool> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let rx = ctl.submit_samples(samples).await.unwrap();
            rx.await.unwrap().into_iter().map(|r| r.is_ok()).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn history_filters_by_backend_and_metric_and_truncates_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let ok = ingest(
            &ctl,
            vec![
                sample("a", "in_flight", T0_MS - 3_000, 1.0),
                sample("a", "in_flight", T0_MS - 2_000, 2.0),
                sample("b", "in_flight", T0_MS - 2_000, 3.0),
                sample("a", "cpu_utilization", T0_MS - 1_000, 0.5),
            ],
        );
        assert_eq!(ok, vec![true; 4]);
        let (all, truncated) = ctl.history("web", "", "", 0, 0, 100).unwrap();
        assert!(!truncated);
        assert_eq!(all.len(), 3);
        let (a, _) = ctl.history("web", "a", "in_flight", 0, 0, 100).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].1, vec![(T0_MS - 3_000, 1.0), (T0_MS - 2_000, 2.0)]);
        let (end, _) = ctl
            .history("web", "a", "in_flight", 0, T0_MS - 2_000, 100)
            .unwrap();
        assert_eq!(end[0].1, vec![(T0_MS - 3_000, 1.0)]);
        let (_, truncated) = ctl.history("web", "", "", 0, 0, 2).unwrap();
        assert!(truncated);
    }

    #[test]
    fn retention_follows_the_controllers_clock() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let ok = ingest(&ctl, vec![sample("a", "in_flight", T0_MS - 1_000, 1.0)]);
        assert_eq!(ok, vec![true]);
        assert_eq!(ctl.apply_retention().unwrap(), 0);
        let retention = std::time::Duration::from_secs_f64(ctl.config().retention_seconds);
        ctl.clock().advance(retention).unwrap();
        assert_eq!(ctl.apply_retention().unwrap(), 1);
        assert!(ctl.close(std::time::Duration::from_secs(5)));
    }

    #[test]
    fn close_reports_other_live_handles() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let other = ctl.clone();
        assert!(!ctl.close(std::time::Duration::from_millis(20)));
        assert!(other.close(std::time::Duration::from_secs(5)));
    }
}
