//! The controller's state and operations, independent of gRPC: the cluster
//! registry, ingest, control ticks, publishing and admin changes. The tonic
//! services (`api`) and the background tasks (`server`) call into it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use aya_policy::{
    AlgorithmChoice, BackendObservation, BackendWeight, ControlLoop, Decision, Explanation,
    LbAlgorithm, Policy, ReplicaState, ScalingSignal,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{ClusterConfig, Config, ConfigError};
use crate::forecasting::{ForecastRecord, Recording, SharedForecaster};
use crate::ingest::{IngestState, Job, Limits, Writer, now_ms};
use crate::metrics::{Metrics, RetrainOutcome};
use crate::policies::{self, PolicyContext};
use crate::publish::{ClusterSnapshot, Endpoint, Publisher};
use crate::store::{Store, StoreError};
use crate::xds::XdsStats;

/// Errors of controller operations.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Invalid configuration or admin request.
    #[error(transparent)]
    Config(#[from] ConfigError),
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

type Loop = ControlLoop<Box<dyn Policy + Send>, Recording>;

struct ClusterRuntime {
    /// What the loop was built from; rebuilt when it changes.
    built_from: (
        String,
        serde_json::Map<String, serde_json::Value>,
        BTreeMap<String, u32>,
        LbAlgorithm,
    ),
    control: Loop,
    forecaster: Option<SharedForecaster>,
    record: Arc<Mutex<ForecastRecord>>,
    override_: Option<Override>,
}

/// The controller. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
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
}

impl Inner {
    /// Append the demand observed since the last flush to the store.
    fn flush_demand(&self) {
        let points = std::mem::take(&mut *lock(&self.pending_demand));
        if let Err(e) = self.store.append_demand(&points) {
            tracing::warn!(error = %e, points = points.len(), "storing observed demand failed; the retrain history misses these ticks");
        }
    }
}

/// What one background retrain of a cluster did (see [`Controller::retrain_cluster`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainReport {
    /// Cluster.
    pub cluster: String,
    /// Outcome.
    pub outcome: RetrainOutcome,
    /// Holdout MASE of the candidate (NaN when not scored).
    pub candidate_mase: f64,
    /// Holdout MASE of the model in use (NaN when there was none or not scored).
    pub current_mase: f64,
    /// The candidate's choice per horizon band (empty when none was made).
    pub candidate: String,
    /// Demand points on the forecaster's grid the retrain learnt from.
    pub points: usize,
    /// Why, in words.
    pub message: String,
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

/// Seconds since the unix epoch.
pub fn now_secs() -> f64 {
    now_ms() as f64 / 1000.0
}

fn corrupt(table: &'static str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table,
        message: e.to_string(),
    }
}

/// Recent-history window replayed at start to restore the latest values.
const REPLAY_WINDOW_MS: i64 = 15 * 60 * 1000;

impl Controller {
    /// Open the store in `config.data_dir`, restore everything, add the
    /// clusters of the configuration that the store does not know, publish
    /// the restored snapshots, and start the ingest writer thread.
    pub fn open(mut config: Config) -> Result<Controller, ControllerError> {
        config.validate()?;
        let store = Store::open(&config.data_dir)?;
        let restored = store.restore()?;
        let metrics = Arc::new(Metrics::default());
        metrics.set_stored(restored.samples);

        let mut registry = BTreeMap::new();
        for json in &restored.clusters {
            let mut c: ClusterConfig =
                serde_json::from_str(json).map_err(|e| corrupt("clusters", e))?;
            // Stored clusters were normalised when written; doing it again
            // keeps the invariants (sorted backends) even for older files.
            let field = format!("stored cluster {:?}", c.name);
            c.normalise(&field)?;
            registry.insert(c.name.clone(), c);
        }
        for c in &config.clusters {
            if !registry.contains_key(&c.name) {
                let json = serde_json::to_string(c).map_err(|e| corrupt("clusters", e))?;
                store.put_cluster(&c.name, Some(&json))?;
                registry.insert(c.name.clone(), c.clone());
            }
        }
        let mut overrides = BTreeMap::new();
        for json in &restored.overrides {
            let (cluster, o): (String, Override) =
                serde_json::from_str(json).map_err(|e| corrupt("overrides", e))?;
            overrides.insert(cluster, o);
        }
        let publisher = Publisher::new(0);
        for json in &restored.snapshots {
            let snap: ClusterSnapshot =
                serde_json::from_str(json).map_err(|e| corrupt("snapshots", e))?;
            if registry.contains_key(&snap.cluster) {
                publisher.publish(snap);
            }
        }
        let mut ingest = IngestState::restore(restored.series, restored.next_segment);
        store.scan(now_ms() - REPLAY_WINDOW_MS, |id, ts, v| {
            ingest.replay(id, ts, v)
        })?;

        let registry = Arc::new(RwLock::new(registry));
        let ingest = Arc::new(Mutex::new(ingest));
        let (tx, rx) = mpsc::channel(config.ingest_queue_batches);
        let writer = Writer {
            store: store.clone(),
            state: ingest.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            limits: Limits {
                max_batch_samples: config.max_batch_samples,
                max_future_ms: (config.max_future_skew_seconds * 1000.0) as i64,
                retention_ms: (config.retention_seconds * 1000.0) as i64,
            },
        };
        let writer = std::thread::Builder::new()
            .name("aya-ingest-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                ControllerError::Invalid(format!("cannot start the ingest writer thread: {e}"))
            })?;

        let mut runtimes = BTreeMap::new();
        for (name, o) in overrides {
            if let Some(cfg) = lock_read(&registry).get(&name).cloned() {
                let mut rt = new_runtime(&config, &store, &cfg)?;
                rt.override_ = Some(o);
                runtimes.insert(name, rt);
            }
        }
        Ok(Controller {
            inner: Arc::new(Inner {
                config,
                store,
                registry,
                ingest,
                ingest_tx: tx,
                runtimes: Mutex::new(runtimes),
                publisher,
                metrics,
                xds_stats: Arc::new(XdsStats::new()),
                closing: tokio::sync::watch::channel(false).0,
                writer: Mutex::new(Some(writer)),
                pending_demand: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Signal long-lived streams (Watch, Ingest) to end: graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.inner.closing.send_replace(true);
    }

    /// Receiver that becomes `true` when shutdown begins.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Close the store: wait (up to `timeout`) until this is the last handle
    /// to the controller, then stop the ingest writer and release the
    /// database file, so that the same data directory can be opened again
    /// in this process. Returns `false` if other handles stayed alive (the
    /// file is then released when the last one is dropped).
    pub fn close(self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while Arc::strong_count(&self.inner) > 1 {
            if std::time::Instant::now() >= deadline {
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

    /// Queue a batch for validation and durable storage; the receiver gets
    /// one result per sample once the batch is committed. Waits while the
    /// writer's queue is full (backpressure).
    pub async fn submit(
        &self,
        samples: Vec<aya_proto::v1::Sample>,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<aya_proto::v1::SampleResult>>, ControllerError>
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.inner
            .ingest_tx
            .send(Job { samples, reply })
            .await
            .map_err(|_| ControllerError::WriterGone)?;
        Ok(rx)
    }

    /// Every cluster's configuration, sorted by name.
    pub fn clusters(&self) -> Vec<ClusterConfig> {
        lock_read(&self.inner.registry).values().cloned().collect()
    }

    /// One cluster's configuration.
    pub fn cluster(&self, name: &str) -> Option<ClusterConfig> {
        lock_read(&self.inner.registry).get(name).cloned()
    }

    /// Create or replace a cluster, store it and publish its new state.
    pub fn upsert_cluster(&self, mut cfg: ClusterConfig) -> Result<ClusterConfig, ControllerError> {
        cfg.normalise("cluster")?;
        let policy = if cfg.policy.is_empty() {
            &self.inner.config.default_policy
        } else {
            &cfg.policy
        };
        policies::check(policy, &cfg.policy_params).map_err(ControllerError::Invalid)?;
        let json =
            serde_json::to_string(&cfg).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.inner.store.put_cluster(&cfg.name, Some(&json))?;
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cfg.name.clone(), cfg.clone());
        self.tick_cluster(&cfg.name, now_secs())?;
        Ok(cfg)
    }

    /// Delete a cluster; its watchers' streams end. Returns whether it existed.
    pub fn delete_cluster(&self, name: &str) -> Result<bool, ControllerError> {
        let existed = self
            .inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some();
        if existed {
            self.inner.store.put_cluster(name, None)?;
            self.inner.store.put_snapshot(name, None)?;
            self.inner.store.put_override(name, None)?;
            lock(&self.inner.runtimes).remove(name);
            lock(&self.inner.ingest).forget_cluster(name);
            self.inner.publisher.remove(name);
            lock(&self.inner.pending_demand).retain(|(c, _, _)| c != name);
            self.inner.store.retain_demand(name, i64::MAX)?;
            self.inner.store.delete_model(&model_key(name))?;
            self.inner.metrics.forget_cluster(name);
        }
        Ok(existed)
    }

    /// Add or replace a backend.
    pub fn upsert_backend(
        &self,
        cluster: &str,
        backend: crate::config::BackendConfig,
    ) -> Result<ClusterConfig, ControllerError> {
        let mut cfg = self
            .cluster(cluster)
            .ok_or_else(|| ControllerError::UnknownCluster(cluster.into()))?;
        cfg.backends.retain(|b| b.name != backend.name);
        cfg.backends.push(backend);
        self.upsert_cluster(cfg)
    }

    /// Remove a backend.
    pub fn delete_backend(
        &self,
        cluster: &str,
        backend: &str,
    ) -> Result<ClusterConfig, ControllerError> {
        let mut cfg = self
            .cluster(cluster)
            .ok_or_else(|| ControllerError::UnknownCluster(cluster.into()))?;
        let before = cfg.backends.len();
        cfg.backends.retain(|b| b.name != backend);
        if cfg.backends.len() == before {
            return Err(ControllerError::UnknownBackend {
                cluster: cluster.into(),
                backend: backend.into(),
            });
        }
        self.upsert_cluster(cfg)
    }

    /// Pin a cluster's decision (see [`Override`]) and publish it at once.
    pub fn publish_override(
        &self,
        cluster: &str,
        o: Override,
    ) -> Result<Arc<ClusterSnapshot>, ControllerError> {
        let cfg = self
            .cluster(cluster)
            .ok_or_else(|| ControllerError::UnknownCluster(cluster.into()))?;
        for w in &o.weights {
            if w.weight == 0 {
                return Err(ControllerError::Invalid(format!(
                    "weight of backend {:?} is 0; weights must be ≥ 1",
                    w.backend
                )));
            }
            if !cfg.backends.iter().any(|b| b.name == w.backend) {
                return Err(ControllerError::UnknownBackend {
                    cluster: cluster.into(),
                    backend: w.backend.clone(),
                });
            }
        }
        if o.weights.is_empty() {
            return Err(ControllerError::Invalid(
                "an override needs at least one weight".into(),
            ));
        }
        let json = serde_json::to_string(&(cluster, &o))
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.inner.store.put_override(cluster, Some(&json))?;
        {
            let mut rts = lock(&self.inner.runtimes);
            let rt = match rts.entry(cluster.to_string()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(new_runtime(&self.inner.config, &self.inner.store, &cfg)?)
                }
            };
            rt.override_ = Some(o);
        }
        self.tick_cluster(cluster, now_secs())?
            .ok_or_else(|| ControllerError::UnknownCluster(cluster.into()))
    }

    /// Remove an override. Returns whether one was set.
    pub fn clear_override(&self, cluster: &str) -> Result<bool, ControllerError> {
        let had = lock(&self.inner.runtimes)
            .get_mut(cluster)
            .and_then(|rt| rt.override_.take())
            .is_some();
        if had {
            self.inner.store.put_override(cluster, None)?;
            self.tick_cluster(cluster, now_secs())?;
        }
        Ok(had)
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

    /// Observations of a cluster's backends at `now` (seconds), built from
    /// the latest ingested values, and the service demand (requests/s).
    pub fn observations(&self, cfg: &ClusterConfig, now: f64) -> (Vec<BackendObservation>, f64) {
        let stale_ms = (self.inner.config.stale_after_seconds * 1000.0) as i64;
        let now_ms = (now * 1000.0) as i64;
        let ingest = lock(&self.inner.ingest);
        let mut out = Vec::with_capacity(cfg.backends.len());
        let mut demand = 0.0;
        for b in &cfg.backends {
            let mut o = BackendObservation::unobserved(b.name.clone(), now);
            let mut newest = i64::MIN;
            for s in ingest.backend_series(&cfg.name, &b.name) {
                if s.last_ms == i64::MIN
                    || s.last_ms < now_ms - stale_ms
                    || !s.last_value.is_finite()
                {
                    continue;
                }
                newest = newest.max(s.last_ms);
                let v = s.last_value;
                match s.key.metric.as_str() {
                    "requests_total" => o.request_rate += s.rate.unwrap_or(0.0),
                    "request_rate" => o.request_rate += v.max(0.0),
                    "in_flight" => o.in_flight += v.max(0.0),
                    "latency_p50_seconds" => o.latency_p50 = o.latency_p50.max(v.max(0.0)),
                    "latency_p90_seconds" => o.latency_p90 = o.latency_p90.max(v.max(0.0)),
                    "latency_p99_seconds" => o.latency_p99 = o.latency_p99.max(v.max(0.0)),
                    "error_rate" => o.error_rate = o.error_rate.max(v.clamp(0.0, 1.0)),
                    "cpu_utilization" => o.cpu_utilization = Some(v.clamp(0.0, 1.0)),
                    "memory_utilization" => o.memory_utilization = Some(v.clamp(0.0, 1.0)),
                    "healthy" => o.healthy = o.healthy && v >= 0.5,
                    _ => {}
                }
            }
            if newest != i64::MIN {
                o.observed_at = newest as f64 / 1000.0;
            }
            demand += o.request_rate;
            out.push(o);
        }
        (out, demand)
    }

    /// Run every cluster's control loop once at `now` (seconds).
    pub fn tick_all(&self, now: f64) -> Result<(), ControllerError> {
        let started = std::time::Instant::now();
        let names: Vec<String> = lock_read(&self.inner.registry).keys().cloned().collect();
        let mut first_err = None;
        for name in names {
            if let Err(e) = self.tick_cluster(&name, now) {
                tracing::error!(cluster = %name, error = %e, "control tick failed");
                first_err.get_or_insert(e);
            }
        }
        self.inner.flush_demand();
        let errors = lock(&self.inner.runtimes)
            .iter()
            .map(|(n, rt)| {
                let r = lock(&rt.record);
                (n.clone(), r.mae(), r.n)
            })
            .collect();
        self.inner.metrics.set_forecast_error(errors);
        self.inner
            .metrics
            .observe_tick(started.elapsed().as_secs_f64());
        first_err.map_or(Ok(()), Err)
    }

    /// Run one cluster's control loop at `now` and publish a new version if
    /// what data planes see changed. Returns the current snapshot.
    pub fn tick_cluster(
        &self,
        name: &str,
        now: f64,
    ) -> Result<Option<Arc<ClusterSnapshot>>, ControllerError> {
        let Some(cfg) = self.cluster(name) else {
            return Ok(None);
        };
        let (obs, demand) = self.observations(&cfg, now);
        let mut rts = lock(&self.inner.runtimes);
        let rt = match rts.entry(name.to_string()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(new_runtime(&self.inner.config, &self.inner.store, &cfg)?)
            }
        };
        let key = runtime_key(&self.inner.config, &cfg);
        if rt.built_from != key {
            let fresh = new_runtime_with(
                &self.inner.config,
                &cfg,
                rt.forecaster.clone(),
                rt.record.clone(),
            )?;
            let o = rt.override_.take();
            *rt = fresh;
            rt.override_ = o;
        }
        let ready = obs.iter().filter(|o| o.healthy).count() as u32;
        let replicas = ReplicaState {
            current: cfg.backends.len() as u32,
            ready,
            min: cfg.min_replicas,
            max: cfg.max_replicas,
            boot_time: cfg.boot_time_seconds,
        };
        let mut decision = if cfg.backends.is_empty() {
            Decision {
                at: now,
                weights: Vec::new(),
                ejected: Vec::new(),
                scaling: ScalingSignal {
                    desired_replicas: cfg.min_replicas,
                    current_replicas: 0,
                    rule: "no_backends".into(),
                },
                algorithm: AlgorithmChoice {
                    algorithm: cfg.algorithm,
                    rule: "no_backends".into(),
                },
                explanation: Explanation {
                    inputs: vec!["backends=0".into()],
                    forecast: None,
                    rules: vec!["no_backends".into()],
                },
            }
        } else {
            if rt.forecaster.is_some() {
                // What the forecaster observes is the history a retrain learns from.
                lock(&self.inner.pending_demand).push((
                    name.to_string(),
                    (now * 1000.0) as i64,
                    demand,
                ));
            }
            rt.control.tick(
                now,
                self.inner.config.tick_interval_seconds,
                &obs,
                demand,
                replicas,
            )
        };
        if let Some(o) = &rt.override_ {
            apply_override(&mut decision, o);
        }
        drop(rts);
        let endpoints = endpoints(&cfg, &decision);
        let current = self.inner.publisher.current(name);
        let changed = match &current {
            None => true,
            Some(prev) => decision.differs_from(&prev.decision) || prev.endpoints != endpoints,
        };
        if !changed {
            return Ok(current);
        }
        let version = current.map_or(1, |c| c.version + 1);
        let snap = ClusterSnapshot {
            cluster: name.to_string(),
            version,
            decision,
            endpoints,
        };
        let json =
            serde_json::to_string(&snap).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.inner.store.put_snapshot(name, Some(&json))?;
        let published = self.inner.publisher.publish(snap);
        self.inner.metrics.published();
        tracing::info!(cluster = %name, version, weights = ?published.endpoints.iter().map(|e| (&e.backend, e.weight)).collect::<Vec<_>>(),
            algorithm = %published.decision.algorithm.algorithm, desired_replicas = published.decision.scaling.desired_replicas, "published");
        Ok(Some(published))
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
        let cutoff = now_ms() - (self.inner.config.retention_seconds * 1000.0) as i64;
        let n = self.inner.store.retain(cutoff)?;
        self.inner.metrics.retention_deleted(n);
        let names: Vec<String> = lock_read(&self.inner.registry).keys().cloned().collect();
        for name in names {
            self.inner.store.retain_demand(&name, cutoff)?;
        }
        Ok(n)
    }

    /// The model selection a cluster's forecaster currently uses (`None`
    /// before its first forecast or with forecasting disabled).
    pub fn model(&self, cluster: &str) -> Option<aya_forecaster::select::Selection> {
        let f = lock(&self.inner.runtimes)
            .get(cluster)
            .and_then(|rt| rt.forecaster.clone())?;
        lock(&f).selection().cloned()
    }

    /// Retrain every cluster's demand model in turn (see
    /// [`retrain_cluster`](Self::retrain_cluster)); stops early when the
    /// service begins shutting down. CPU-heavy: call off the async workers.
    pub fn retrain_all(&self, now: f64) -> Vec<RetrainReport> {
        let names: Vec<String> = lock_read(&self.inner.registry).keys().cloned().collect();
        let closing = self.closing();
        let mut out = Vec::new();
        for name in names {
            if *closing.borrow() {
                break;
            }
            match self.retrain_cluster(&name, now) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(cluster = %name, error = %e, "retrain skipped"),
            }
        }
        out
    }

    /// Guarded retrain of one cluster's demand model at `now` (seconds):
    /// select a candidate from the stored demand history, backtest it and
    /// the current model on the same holdout origins, and install and
    /// persist the candidate only if it scores no worse
    /// ([`aya_forecaster::retrain`]). The forecaster is locked only to read
    /// its selection and to install the new one, never during the
    /// computation, so ticks carry on meanwhile. CPU-heavy: call off the
    /// async workers.
    pub fn retrain_cluster(&self, name: &str, now: f64) -> Result<RetrainReport, ControllerError> {
        self.retrain_cluster_with(name, now, None)
    }

    /// [`retrain_cluster`](Self::retrain_cluster) with a given candidate
    /// instead of a fresh selection: the candidate goes through the same
    /// guard (the tests use it to show that a worse model is rejected).
    pub fn retrain_cluster_with(
        &self,
        name: &str,
        now: f64,
        candidate: Option<aya_forecaster::select::Selection>,
    ) -> Result<RetrainReport, ControllerError> {
        if self.cluster(name).is_none() {
            return Err(ControllerError::UnknownCluster(name.into()));
        }
        let started = std::time::Instant::now();
        let report = self.run_retrain(name, now, candidate);
        let seconds = started.elapsed().as_secs_f64();
        self.inner.metrics.observe_retrain(
            name,
            report.outcome,
            report.candidate_mase,
            report.current_mase,
            seconds,
        );
        match report.outcome {
            RetrainOutcome::Failed => tracing::warn!(
                cluster = %name, outcome = report.outcome.as_str(), candidate_mase = report.candidate_mase,
                current_mase = report.current_mase, points = report.points, seconds, message = %report.message, "retrain"
            ),
            RetrainOutcome::Skipped => tracing::debug!(
                cluster = %name, outcome = report.outcome.as_str(), points = report.points, message = %report.message, "retrain"
            ),
            _ => tracing::info!(
                cluster = %name, outcome = report.outcome.as_str(), candidate_mase = report.candidate_mase,
                current_mase = report.current_mase, candidate = %report.candidate, points = report.points, seconds,
                message = %report.message, "retrain"
            ),
        }
        Ok(report)
    }

    fn run_retrain(
        &self,
        name: &str,
        now: f64,
        injected: Option<aya_forecaster::select::Selection>,
    ) -> RetrainReport {
        use aya_forecaster::online::OnlineForecaster;
        use aya_forecaster::retrain::{RetrainConfig, RetrainError, evaluate_candidate};
        let mut report = RetrainReport {
            cluster: name.to_string(),
            outcome: RetrainOutcome::Skipped,
            candidate_mase: f64::NAN,
            current_mase: f64::NAN,
            candidate: String::new(),
            points: 0,
            message: String::new(),
        };
        let fail = |mut r: RetrainReport, m: String| {
            r.outcome = RetrainOutcome::Failed;
            r.message = m;
            r
        };
        self.inner.flush_demand();
        let forecaster = lock(&self.inner.runtimes)
            .get(name)
            .and_then(|rt| rt.forecaster.clone());
        let Some(forecaster) = forecaster else {
            report.message =
                "the cluster has no forecaster (not ticked yet, or forecasting disabled)".into();
            return report;
        };
        let (ocfg, current, generation) = {
            let f = lock(&forecaster);
            (f.config().clone(), f.selection().cloned(), f.generation())
        };
        // The stored demand on the forecaster's grid, bucketed exactly as the
        // live forecaster buckets it.
        let window_ms = (ocfg.max_history as f64 * ocfg.step_s * 1000.0) as i64;
        let points = match self
            .inner
            .store
            .demand(name, (now * 1000.0) as i64 - window_ms)
        {
            Ok(p) => p,
            Err(e) => return fail(report, format!("reading the stored demand: {e}")),
        };
        let mut grid = OnlineForecaster::new(ocfg.clone());
        for &(ts, v) in &points {
            aya_policy::DemandForecaster::observe(&mut grid, ts as f64 / 1000.0, v);
        }
        let hist = grid.history();
        let y = &hist[hist.len().saturating_sub(ocfg.max_history)..];
        report.points = y.len();
        let rcfg = RetrainConfig {
            horizon: self.inner.config.forecast_horizon,
            origins: self.inner.config.retrain_holdout_origins,
            select: ocfg.select.clone(),
        };
        let evaluation = match injected {
            Some(c) => evaluate_candidate(y, c, current.as_ref(), &rcfg),
            None => grid.evaluate_retrain(current.as_ref(), &rcfg),
        };
        let ev = match evaluation {
            Ok(ev) => ev,
            Err(e @ RetrainError::TooShort { .. }) => {
                report.message = e.to_string();
                return report;
            }
            Err(e) => return fail(report, e.to_string()),
        };
        report.candidate_mase = ev.candidate_score.mase;
        report.current_mase = ev.current_score.as_ref().map_or(f64::NAN, |s| s.mase);
        report.candidate = ev.candidate.describe();
        let summary = format!(
            "{:?}: candidate MASE {:.4} vs current {:.4} on {} holdout origins of {} steps",
            ev.verdict,
            report.candidate_mase,
            report.current_mase,
            ev.origins.len(),
            ev.horizon
        );
        if !ev.verdict.accepted() {
            report.outcome = RetrainOutcome::Rejected;
            report.message = format!("{summary}; the current model stays");
            return report;
        }
        let superseded = "the forecaster's model changed while the retrain ran; retrying next time";
        // Persist first, then install: a restart never comes back with a
        // model older than the one that ran.
        let artifact = match demand_artifact(name, &points, y, &ocfg, &ev) {
            Ok(a) => a,
            Err(m) => return fail(report, m),
        };
        if lock(&forecaster).generation() != generation {
            return fail(report, superseded.into());
        }
        let json = match serde_json::to_vec(&artifact) {
            Ok(j) => j,
            Err(e) => return fail(report, format!("encoding the model artifact: {e}")),
        };
        if let Err(e) = self.inner.store.put_model(&model_key(name), &json) {
            return fail(report, format!("storing the model artifact: {e}"));
        }
        {
            let mut f = lock(&forecaster);
            if f.generation() != generation {
                drop(f);
                return fail(report, superseded.into());
            }
            f.install(ev.candidate);
        }
        report.outcome = RetrainOutcome::Accepted;
        report.message = format!("{summary}; installed and stored");
        report
    }
}

/// The artifact stored for an accepted retrain: the forecaster crate's model
/// format, with the holdout scores of the candidate and of the model it replaced.
fn demand_artifact(
    cluster: &str,
    points: &[(i64, f64)],
    y: &[f64],
    ocfg: &aya_forecaster::online::OnlineConfig,
    ev: &aya_forecaster::retrain::Evaluation,
) -> Result<aya_forecaster::artifact::Artifact, String> {
    use aya_forecaster::artifact::{Artifact, TrainingWindow};
    let fitted = aya_forecaster::select::FittedAuto::fit(y, ev.candidate.clone())
        .map_err(|e| format!("fitting the candidate on the whole history: {e}"))?;
    // The same timestamp form `aya train` writes.
    let rfc = aya_forecaster::data::timestamp::format_rfc3339;
    let mut backtest = vec![ev.candidate_score.score.clone()];
    if let Some(c) = &ev.current_score {
        backtest.push(c.score.clone());
    }
    Ok(Artifact::new(
        format!("aya-controller {}", env!("CARGO_PKG_VERSION")),
        TrainingWindow {
            series: format!("{cluster}/demand"),
            start: rfc(points.first().map_or(0, |p| p.0)),
            end: rfc(points.last().map_or(0, |p| p.0)),
            points: y.len(),
            interval_ms: (ocfg.step_s * 1000.0) as i64,
        },
        ev.horizon,
        &fitted,
        Some(backtest),
    ))
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn apply_override(d: &mut Decision, o: &Override) {
    let mut weights = o.weights.clone();
    weights.sort_by(|a, b| a.backend.cmp(&b.backend));
    d.weights = weights;
    d.ejected
        .retain(|e| !o.weights.iter().any(|w| &w.backend == e));
    if let Some(a) = o.algorithm {
        d.algorithm = AlgorithmChoice {
            algorithm: a,
            rule: "operator_override".into(),
        };
    }
    if let Some(r) = o.desired_replicas {
        d.scaling.desired_replicas = r;
        d.scaling.rule = "operator_override".into();
    }
    d.explanation.rules.push("operator_override".into());
}

fn endpoints(cfg: &ClusterConfig, d: &Decision) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = d
        .weights
        .iter()
        .filter_map(|w| {
            let b = cfg.backends.iter().find(|b| b.name == w.backend)?;
            let (host, port) = b.host_port().ok()?;
            Some(Endpoint {
                backend: b.name.clone(),
                host,
                port,
                weight: w.weight.max(1),
            })
        })
        .collect();
    out.sort_by(|a, b| a.backend.cmp(&b.backend));
    out
}

type RuntimeKey = (
    String,
    serde_json::Map<String, serde_json::Value>,
    BTreeMap<String, u32>,
    LbAlgorithm,
);

fn runtime_key(config: &Config, cfg: &ClusterConfig) -> RuntimeKey {
    let policy = if cfg.policy.is_empty() {
        config.default_policy.clone()
    } else {
        cfg.policy.clone()
    };
    let hints = cfg
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.weight_hint))
        .collect();
    (policy, cfg.policy_params.clone(), hints, cfg.algorithm)
}

fn new_runtime(
    config: &Config,
    store: &Store,
    cfg: &ClusterConfig,
) -> Result<ClusterRuntime, ControllerError> {
    let forecaster = crate::forecasting::build(
        config.forecast_step_seconds,
        config.retrain_interval_seconds > 0.0,
    )
    .map(|mut f| {
        restore_forecaster(store, &cfg.name, &mut f);
        Arc::new(Mutex::new(f))
    });
    new_runtime_with(
        config,
        cfg,
        forecaster,
        Arc::new(Mutex::new(ForecastRecord::default())),
    )
}

/// Give a new forecaster the cluster's stored demand history (the window it
/// keeps) and the model the last accepted retrain stored. Problems are logged,
/// not fatal: the forecaster then starts from what it has.
fn restore_forecaster(
    store: &Store,
    cluster: &str,
    f: &mut aya_forecaster::online::OnlineForecaster,
) {
    let cfg = f.config().clone();
    let window_ms = (cfg.max_history as f64 * cfg.step_s * 1000.0) as i64;
    match store.demand(cluster, now_ms() - window_ms) {
        Ok(points) => {
            for (ts, v) in points {
                aya_policy::DemandForecaster::observe(f, ts as f64 / 1000.0, v);
            }
        }
        Err(e) => tracing::warn!(cluster, error = %e, "cannot read the stored demand history"),
    }
    let key = model_key(cluster);
    match store.get_model(&key) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            let path = std::path::PathBuf::from(format!("store:models/{key}"));
            match aya_forecaster::artifact::Artifact::from_json(&path, &text) {
                Ok(a) => {
                    tracing::info!(cluster, model = %a.chosen, "restored the stored demand model");
                    f.install(a.selection);
                }
                Err(e) => tracing::warn!(cluster, error = %e, "ignoring the stored demand model"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(cluster, error = %e, "cannot read the stored demand model"),
    }
}

fn new_runtime_with(
    config: &Config,
    cfg: &ClusterConfig,
    forecaster: Option<SharedForecaster>,
    record: Arc<Mutex<ForecastRecord>>,
) -> Result<ClusterRuntime, ControllerError> {
    let key = runtime_key(config, cfg);
    let policy = policies::build(
        &key.0,
        PolicyContext {
            weight_hints: key.2.clone(),
            algorithm: key.3,
            params: key.1.clone(),
        },
    )
    .map_err(|m| ControllerError::Invalid(format!("cluster {:?}: {m}", cfg.name)))?;
    let rec = forecaster.clone().map(|inner| Recording {
        inner,
        record: record.clone(),
    });
    Ok(ClusterRuntime {
        built_from: key,
        control: ControlLoop::new(policy, rec, config.forecast_horizon),
        forecaster,
        record,
        override_: None,
    })
}
