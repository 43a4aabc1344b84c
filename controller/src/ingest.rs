//! Metrics ingest: validation of every sample and the single store writer.
//!
//! Ingest streams hand batches to one writer thread through a bounded queue
//! (`ingest_queue_batches`): when the store is behind, `send` waits, the
//! stream stops reading, and HTTP/2 flow control pushes back on the client.
//! The writer takes every batch waiting in the queue (group commit), validates
//! each sample against the cluster registry and the per-series state, writes
//! the accepted ones as one segment in one fsynced transaction, and only then
//! answers each batch. A failed commit turns every accepted sample of the group
//! into a `STORAGE_ERROR` rejection and rolls the series state back.
//!
//! The writer is the one serial stage of ingest, so its per-sample path is
//! kept lean: the series of a sample is found with one keyed hash of its
//! identity (not one lookup per level), the cluster of the previous sample is
//! reused when it is the same, a backend is checked against the position it
//! had when its series was last seen before falling back to a binary search,
//! the series touched by a group are tracked with a stamp instead of a map,
//! the segment buffer is reused between groups, and the decoded batches are
//! freed on a helper thread rather than on the writer.
//!
//! Everything here works on the domain types of [`sample`] ([`Sample`],
//! [`MetricKind`], [`Rejection`]); the gRPC, OTLP and remote-write receivers
//! convert their wire messages at their edge.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot};

pub mod sample;

pub use sample::{MetricKind, Outcome, RejectReason, Rejection, Sample};

use crate::anomaly::{Anomalies, Point};
use crate::clock::Clock;
use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::store::{SegmentWrite, SeriesKey, Store, StoredSeries};

/// Most labels a sample may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, and longest metric name, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Most samples committed in one transaction.
const GROUP_MAX_SAMPLES: usize = 1_000_000;

/// Per-series state kept in memory: last accepted point and, for counters
/// and deltas, the rate it implies.
#[derive(Debug, Clone)]
pub struct SeriesState {
    /// Identity.
    pub key: SeriesKey,
    /// Last accepted timestamp (ms), `i64::MIN` when none.
    pub last_ms: i64,
    /// Last accepted value (NaN when none).
    pub last_value: f64,
    /// Per-second rate implied by the last two points (counters and deltas).
    pub rate: Option<f64>,
    /// Last writer group that touched the series (see [`IngestState::begin_group`]).
    group: u64,
    /// Position of the series' backend in its cluster's sorted backend list
    /// when last validated (a hint; checked before use).
    backend_pos: u32,
}

impl SeriesState {
    fn new(key: SeriesKey, last_ms: i64) -> SeriesState {
        SeriesState {
            key,
            last_ms,
            last_value: f64::NAN,
            rate: None,
            group: 0,
            backend_pos: u32::MAX,
        }
    }
}

impl SeriesState {
    fn apply(&mut self, ts_ms: i64, value: f64) {
        let kind = MetricKind::from_code(self.key.kind);
        if self.last_ms != i64::MIN && ts_ms > self.last_ms {
            let dt = (ts_ms - self.last_ms) as f64 / 1000.0;
            if kind == MetricKind::Counter {
                // A decrease is a counter reset: the new value counts from zero.
                let inc = if value >= self.last_value {
                    value - self.last_value
                } else {
                    value
                };
                self.rate = Some(inc / dt);
            } else if kind == MetricKind::Delta {
                self.rate = Some(value / dt);
            }
        }
        self.last_ms = ts_ms;
        self.last_value = value;
    }
}

/// Hasher of the series index, whose keys are already keyed hashes.
#[derive(Debug, Default, Clone, Copy)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type PreHashedBuild = std::hash::BuildHasherDefault<PreHashed>;

/// Series index and state shared by the writer (which mutates it) and the
/// control loop (which reads it at each tick).
#[derive(Debug, Default)]
pub struct IngestState {
    /// Keyed hash of (cluster, backend, metric, kind, labels) → series ids
    /// (the identity is compared on lookup, so collisions are harmless).
    index: HashMap<u64, Vec<u32>, PreHashedBuild>,
    /// Random key of the index hash (collisions cannot be planned by clients).
    hasher: std::collections::hash_map::RandomState,
    /// cluster → backend → series ids (for the control loop and queries).
    by_backend: HashMap<String, HashMap<String, Vec<u32>>>,
    /// Series state by id.
    pub series: Vec<SeriesState>,
    next_segment: u64,
    /// Writer groups begun (stamps `SeriesState::group`).
    groups: u64,
    /// Indexed series per cluster (what the series limits count).
    per_cluster: HashMap<String, usize>,
    /// Indexed series in all.
    live: usize,
}

impl IngestState {
    /// Rebuild from the store's series table.
    pub fn restore(series: Vec<StoredSeries>, next_segment: u64) -> IngestState {
        let mut st = IngestState {
            next_segment,
            ..Default::default()
        };
        let mut sorted = series;
        sorted.sort_by_key(|s| s.id);
        for s in sorted {
            // Ids are dense from 0; a gap (impossible unless the file was edited) is padded.
            while st.series.len() < s.id as usize {
                st.series.push(SeriesState::new(
                    SeriesKey {
                        cluster: String::new(),
                        backend: String::new(),
                        metric: String::new(),
                        kind: 0,
                        labels: BTreeMap::new(),
                    },
                    i64::MAX,
                ));
            }
            st.insert_index(&s.key, s.id);
            st.series.push(SeriesState::new(s.key, s.last_ms));
        }
        st
    }

    fn key_hash(
        &self,
        cluster: &str,
        backend: &str,
        metric: &str,
        kind: i32,
        labels: &BTreeMap<String, String>,
    ) -> u64 {
        self.hasher
            .hash_one((cluster, backend, metric, kind, labels))
    }

    fn series_hash(&self, key: &SeriesKey) -> u64 {
        self.key_hash(
            &key.cluster,
            &key.backend,
            &key.metric,
            key.kind,
            &key.labels,
        )
    }

    fn insert_index(&mut self, key: &SeriesKey, id: u32) {
        let h = self.series_hash(key);
        self.index.entry(h).or_default().push(id);
        *self.per_cluster.entry(key.cluster.clone()).or_default() += 1;
        self.live += 1;
        self.by_backend
            .entry(key.cluster.clone())
            .or_default()
            .entry(key.backend.clone())
            .or_default()
            .push(id);
    }

    /// Remove series ids `from..` from the indexes (rollback of a failed group).
    fn unindex_from(&mut self, from: usize) {
        for id in from..self.series.len() {
            let key = &self.series[id].key;
            let h = self.series_hash(key);
            if let Some(v) = self.index.get_mut(&h) {
                v.retain(|&i| (i as usize) < from);
                if v.is_empty() {
                    self.index.remove(&h);
                }
            }
            if let Some(v) = self
                .by_backend
                .get_mut(&key.cluster)
                .and_then(|c| c.get_mut(&key.backend))
            {
                v.retain(|&i| (i as usize) < from);
            }
            if let Some(n) = self.per_cluster.get_mut(&key.cluster) {
                *n = n.saturating_sub(1);
            }
            self.live = self.live.saturating_sub(1);
        }
    }

    /// Indexed series: in all, and of `cluster`.
    pub fn series_count(&self, cluster: &str) -> (usize, usize) {
        (
            self.live,
            self.per_cluster.get(cluster).copied().unwrap_or(0),
        )
    }

    /// Whether a new series of `cluster` fits the limits; the rejection otherwise.
    fn series_room(&self, cluster: &str, limits: &Limits) -> Result<(), Rejection> {
        let (all, of_cluster) = self.series_count(cluster);
        if all >= limits.max_series {
            return Err(reject(
                RejectReason::SeriesLimit,
                format!(
                    "a new series would exceed limits.max_series = {} (the service tracks {all})",
                    limits.max_series
                ),
            ));
        }
        if of_cluster >= limits.max_series_per_cluster {
            return Err(reject(
                RejectReason::SeriesLimit,
                format!(
                    "a new series would exceed limits.max_series_per_cluster = {} (cluster {:?} has {of_cluster})",
                    limits.max_series_per_cluster,
                    crate::validate::truncate_for_message(cluster, 128)
                ),
            ));
        }
        Ok(())
    }

    fn lookup(&self, h: u64, s: &Sample, kind: i32) -> Option<u32> {
        self.index.get(&h)?.iter().copied().find(|&id| {
            self.series.get(id as usize).is_some_and(|st| {
                let k = &st.key;
                k.kind == kind
                    && k.metric == s.metric
                    && k.backend == s.backend
                    && k.cluster == s.cluster
                    && k.labels == s.labels
            })
        })
    }

    /// Start a writer group: returns its stamp.
    fn begin_group(&mut self) -> u64 {
        self.groups += 1;
        self.groups
    }

    /// Replay a stored point (at start) into the series state.
    pub fn replay(&mut self, id: u32, ts_ms: i64, value: f64) {
        if let Some(s) = self.series.get_mut(id as usize) {
            if s.last_value.is_nan() || ts_ms > s.last_ms || s.last_ms == i64::MIN {
                s.apply(ts_ms, value);
            } else if ts_ms == s.last_ms {
                s.last_value = value;
            }
        }
    }

    /// [`replay`](Self::replay) one stored sample and return what the
    /// anomaly detectors score for it (the value; the per-second rate for
    /// counters and deltas, none at their first point) with its series key.
    pub fn replay_scored(&mut self, id: u32, ts_ms: i64, value: f64) -> Option<(f64, &SeriesKey)> {
        let s = self.series.get_mut(id as usize)?;
        if !(s.last_ms == i64::MIN || s.last_value.is_nan() || ts_ms > s.last_ms) {
            return None;
        }
        s.apply(ts_ms, value);
        let v = if MetricKind::from_code(s.key.kind).is_count() {
            s.rate?
        } else {
            value
        };
        Some((v, &s.key))
    }

    /// Ids of the series of one backend.
    pub fn backend_series(
        &self,
        cluster: &str,
        backend: &str,
    ) -> impl Iterator<Item = &SeriesState> + '_ {
        self.by_backend
            .get(cluster)
            .and_then(|c| c.get(backend))
            .into_iter()
            .flat_map(|v| v.iter())
            .filter_map(|id| self.series.get(*id as usize))
    }

    /// Series of a cluster (for history queries).
    pub fn cluster_series(&self, cluster: &str) -> Vec<(u32, SeriesKey)> {
        let mut out = Vec::new();
        if let Some(c) = self.by_backend.get(cluster) {
            for v in c.values() {
                for id in v {
                    if let Some(s) = self.series.get(*id as usize) {
                        out.push((*id, s.key.clone()));
                    }
                }
            }
        }
        out
    }

    /// Forget the series of a deleted cluster from the lookup index (their
    /// stored history stays until retention removes it).
    pub fn forget_cluster(&mut self, cluster: &str) {
        let Some(c) = self.by_backend.remove(cluster) else {
            return;
        };
        let forgotten = self.per_cluster.remove(cluster).unwrap_or(0);
        self.live = self.live.saturating_sub(forgotten);
        for id in c.into_values().flatten() {
            let Some(st) = self.series.get(id as usize) else {
                continue;
            };
            let h = self.series_hash(&st.key);
            if let Some(v) = self.index.get_mut(&h) {
                v.retain(|&i| i != id);
                if v.is_empty() {
                    self.index.remove(&h);
                }
            }
        }
    }
}

/// One batch waiting for the writer.
#[derive(Debug)]
pub struct Job {
    /// Samples.
    pub samples: Vec<Sample>,
    /// Where the outcomes go (one per sample, in order).
    pub reply: oneshot::Sender<Vec<Outcome>>,
}

/// Limits used by validation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted batch.
    pub max_batch_samples: usize,
    /// Largest accepted skew into the future, ms.
    pub max_future_ms: i64,
    /// Retention, ms (older samples are rejected).
    pub retention_ms: i64,
    /// Series the service tracks in all (a new one beyond it is rejected).
    pub max_series: usize,
    /// Series one cluster may have.
    pub max_series_per_cluster: usize,
}

impl Limits {
    /// The limits a configuration sets.
    pub fn of(config: &crate::config::Config) -> Limits {
        Limits {
            max_batch_samples: config.max_batch_samples,
            max_future_ms: (config.max_future_skew_seconds * 1000.0) as i64,
            retention_ms: (config.retention_seconds * 1000.0) as i64,
            max_series: config.limits.max_series,
            max_series_per_cluster: config.limits.max_series_per_cluster,
        }
    }
}

fn reject(reason: RejectReason, message: String) -> Rejection {
    Rejection { reason, message }
}

fn valid_metric(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_BYTES
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'.'))
}

fn unknown_cluster(s: &Sample) -> Rejection {
    reject(
        RejectReason::UnknownCluster,
        format!("cluster {:?} is not configured", s.cluster),
    )
}

/// Position of the sample's backend in `cluster` (backends are kept sorted
/// by name, `ClusterConfig::normalise`); `hint` is tried first.
/// A sample with an empty backend is the cluster's own: the data plane's
/// count of the requests the cluster received (its demand), which a sum of
/// the backends' completions under-counts when requests fail or queue.
/// Only these metrics are accepted at cluster level.
pub const CLUSTER_LEVEL_METRICS: [&str; 2] = ["request_rate", "requests_total"];

/// Empty the reused segment buffer and reserve room for every sample of the group.
fn reset_segment(seg: &mut SegmentWrite, jobs: &[Job]) {
    let total: usize = jobs.iter().map(|j| j.samples.len()).sum();
    seg.packed.clear();
    seg.packed.reserve(total * crate::store::SAMPLE_BYTES);
    seg.new_series.clear();
    seg.last.clear();
    seg.max_ms = i64::MIN;
}

/// Index a sample's new series and record it in the segment; its id.
fn new_series(state: &mut IngestState, seg: &mut SegmentWrite, s: &Sample, kind: i32) -> u32 {
    let id = state.series.len() as u32;
    let key = SeriesKey {
        cluster: s.cluster.clone(),
        backend: s.backend.clone(),
        metric: s.metric.clone(),
        kind,
        labels: s.labels.clone(),
    };
    state.insert_index(&key, id);
    seg.new_series.push((id, key.clone()));
    state.series.push(SeriesState::new(key, i64::MIN));
    id
}

fn backend_position(cluster: &ClusterConfig, s: &Sample, hint: u32) -> Result<u32, Rejection> {
    if s.backend.is_empty() {
        if CLUSTER_LEVEL_METRICS.contains(&s.metric.as_str()) {
            return Ok(u32::MAX);
        }
        return Err(reject(
            RejectReason::UnknownBackend,
            format!(
                "a sample of cluster {:?} without a backend is cluster-level and must be one of {:?}, not {:?}",
                s.cluster, CLUSTER_LEVEL_METRICS, s.metric
            ),
        ));
    }
    if cluster
        .backends
        .get(hint as usize)
        .is_some_and(|b| b.name == s.backend)
    {
        return Ok(hint);
    }
    cluster
        .backends
        .binary_search_by(|b| b.name.as_str().cmp(&s.backend))
        .map(|p| p as u32)
        .map_err(|_| {
            reject(
                RejectReason::UnknownBackend,
                format!(
                    "backend {:?} is not configured in cluster {:?}",
                    s.backend, s.cluster
                ),
            )
        })
}

/// Check the metric name and labels (the identity of a new series; an
/// existing series passed these checks when it was created).
fn check_identity(s: &Sample, metric_ok: bool) -> Result<(), Rejection> {
    if !metric_ok {
        return Err(reject(
            RejectReason::InvalidMetricName,
            format!(
                "metric name {:?} must be 1..={MAX_LABEL_BYTES} bytes of [A-Za-z0-9_:.]",
                s.metric
            ),
        ));
    }
    if s.labels.len() > MAX_LABELS {
        return Err(reject(
            RejectReason::LabelsTooLarge,
            format!("{} labels, at most {MAX_LABELS} allowed", s.labels.len()),
        ));
    }
    crate::validate::labels(&s.labels)?;
    if let Some((k, v)) = s
        .labels
        .iter()
        .find(|(k, v)| k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES)
    {
        let what = if k.len() > MAX_LABEL_BYTES {
            format!("key of {} bytes", k.len())
        } else {
            format!("value of {} bytes", v.len())
        };
        return Err(reject(
            RejectReason::LabelsTooLarge,
            format!("label {:?}: {what}, at most {MAX_LABEL_BYTES}", truncate(k)),
        ));
    }
    Ok(())
}

/// Check the value and timestamp of a sample.
fn check_value(s: &Sample, now_ms: i64, limits: &Limits) -> Result<(), Rejection> {
    if !s.value.is_finite() {
        return Err(reject(
            RejectReason::NotFinite,
            format!("value {} is not finite", s.value),
        ));
    }
    if s.kind.is_count() && s.value < 0.0 {
        return Err(reject(
            RejectReason::NegativeCounter,
            format!(
                "{} value {} of metric {:?} is negative",
                if s.kind == MetricKind::Counter {
                    "counter"
                } else {
                    "delta"
                },
                s.value,
                s.metric
            ),
        ));
    }
    if s.timestamp_ms > now_ms.saturating_add(limits.max_future_ms) {
        return Err(reject(
            RejectReason::FarFuture,
            format!(
                "timestamp {} ms is {} ms ahead of the server clock (limit {} ms)",
                s.timestamp_ms,
                s.timestamp_ms - now_ms,
                limits.max_future_ms
            ),
        ));
    }
    if s.timestamp_ms < now_ms.saturating_sub(limits.retention_ms) {
        return Err(reject(
            RejectReason::TooOld,
            format!(
                "timestamp {} ms is older than the retention window ({} ms)",
                s.timestamp_ms, limits.retention_ms
            ),
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Everything the writer thread needs.
pub struct Writer {
    /// The store.
    pub store: Store,
    /// Series state (shared with the control loop).
    pub state: Arc<Mutex<IngestState>>,
    /// Cluster registry (shared with the admin API).
    pub registry: Arc<RwLock<BTreeMap<String, ClusterConfig>>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    /// The time samples are validated against (future skew, retention) and
    /// commits are measured on.
    pub clock: Clock,
    /// The anomaly detectors fed every committed sample (`None`: off).
    pub anomalies: Option<Arc<Anomalies>>,
}

impl Writer {
    /// Run until every sender is dropped. Call on a dedicated thread.
    pub fn run(self, mut rx: mpsc::Receiver<Job>) {
        // Freeing a decoded batch (three strings per sample) costs as much as
        // validating it; a helper thread does it off the serial path.
        let (drop_tx, drop_rx) = std::sync::mpsc::channel::<Vec<Vec<Sample>>>();
        let dropper = std::thread::Builder::new()
            .name("aya-ingest-free".into())
            .spawn(move || while drop_rx.recv().is_ok() {})
            .ok();
        let mut seg = SegmentWrite::default();
        while let Some(first) = rx.blocking_recv() {
            let mut n = first.samples.len();
            let mut jobs = vec![first];
            while n < GROUP_MAX_SAMPLES {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.samples.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            let done = self.process_into(jobs, &mut seg);
            if dropper.is_some() {
                let _ = drop_tx.send(done);
            }
        }
        drop(drop_tx);
        if let Some(d) = dropper {
            let _ = d.join();
        }
    }

    /// Validate, commit and answer a group of batches.
    pub fn process(&self, jobs: Vec<Job>) {
        let mut seg = SegmentWrite::default();
        drop(self.process_into(jobs, &mut seg));
    }

    /// [`process`](Self::process) with a reusable segment buffer; returns
    /// the answered jobs (their samples) for the caller to free.
    fn process_into(&self, jobs: Vec<Job>, seg: &mut SegmentWrite) -> Vec<Vec<Sample>> {
        let now = self.clock.now_ms();
        let mut results: Vec<Vec<Outcome>> = Vec::with_capacity(jobs.len());
        reset_segment(seg, &jobs);
        // Rollback information: series state before the group touched it,
        // and every series the group touched (once each).
        let mut saved: Vec<(u32, SeriesState)> = Vec::new();
        let mut touched: Vec<u32> = Vec::new();
        // What the anomaly detectors score once the group is committed.
        let mut scored: Vec<Point> = Vec::new();
        if self.anomalies.is_some() {
            scored.reserve(jobs.iter().map(|j| j.samples.len()).sum());
        }
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = state.begin_group();
        let series_before = state.series.len();
        for job in &jobs {
            if job.samples.len() > self.limits.max_batch_samples {
                results.push(self.too_large(job.samples.len()));
                continue;
            }
            let mut out = Vec::with_capacity(job.samples.len());
            let mut last_cluster: Option<(&str, &ClusterConfig)> = None;
            let mut last_metric_ok: Option<&str> = None;
            for s in &job.samples {
                let cluster = match last_cluster {
                    Some((name, c)) if name == s.cluster => c,
                    _ => match registry.get(&s.cluster) {
                        Some(c) => {
                            last_cluster = Some((s.cluster.as_str(), c));
                            c
                        }
                        None => {
                            out.push(Err(unknown_cluster(s)));
                            continue;
                        }
                    },
                };
                if let Err(r) = crate::validate::metric_kind(s.kind) {
                    out.push(Err(r));
                    continue;
                }
                let kind = s.kind.code();
                let h = state.key_hash(&s.cluster, &s.backend, &s.metric, kind, &s.labels);
                let found = state.lookup(h, s, kind);
                let hint = found
                    .and_then(|id| state.series.get(id as usize))
                    .map_or(u32::MAX, |st| st.backend_pos);
                let pos = match backend_position(cluster, s, hint) {
                    Ok(p) => p,
                    Err(r) => {
                        out.push(Err(r));
                        continue;
                    }
                };
                if found.is_none() {
                    let metric_ok = last_metric_ok == Some(s.metric.as_str()) || {
                        let ok = valid_metric(&s.metric);
                        if ok {
                            last_metric_ok = Some(s.metric.as_str());
                        }
                        ok
                    };
                    if let Err(r) = check_identity(s, metric_ok)
                        .and_then(|()| state.series_room(&s.cluster, &self.limits))
                    {
                        out.push(Err(r));
                        continue;
                    }
                }
                if let Err(r) = check_value(s, now, &self.limits) {
                    out.push(Err(r));
                    continue;
                }
                let id = match found {
                    Some(id) => id,
                    None => new_series(&mut state, seg, s, kind),
                };
                let Some(ser) = state.series.get_mut(id as usize) else {
                    out.push(Err(reject(
                        RejectReason::StorageError,
                        format!("series index {id} missing"),
                    )));
                    continue;
                };
                ser.backend_pos = pos;
                if s.timestamp_ms <= ser.last_ms {
                    out.push(Err(reject(
                        RejectReason::OutOfOrder,
                        format!(
                            "timestamp {} ms is not after the series' previous sample at {} ms",
                            s.timestamp_ms, ser.last_ms
                        ),
                    )));
                    continue;
                }
                if ser.group != stamp {
                    if (id as usize) < series_before {
                        saved.push((id, ser.clone()));
                    }
                    ser.group = stamp;
                    touched.push(id);
                }
                ser.apply(s.timestamp_ms, s.value);
                seg.push(id, s.timestamp_ms, s.value);
                if self.anomalies.is_some() {
                    // Counters and deltas are scored on their rate (none at their first point).
                    let v = if s.kind.is_count() {
                        ser.rate
                    } else {
                        Some(s.value)
                    };
                    if let Some(v) = v {
                        scored.push((id, s.timestamp_ms, v));
                    }
                }
                out.push(Ok(()));
            }
            results.push(out);
        }
        let committed = self.commit_group(
            &mut state,
            seg,
            &touched,
            saved,
            series_before,
            &mut results,
        );
        if committed && let Some(a) = &self.anomalies {
            a.observe(&scored, |id| state.series.get(id as usize).map(|s| &s.key));
        }
        drop(state);
        drop(registry);
        self.answer(jobs, results)
    }

    /// Every sample of a batch over `max_batch_samples`, rejected.
    fn too_large(&self, n: usize) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(n);
        let msg = format!(
            "batch of {} samples exceeds max_batch_samples {}",
            n, self.limits.max_batch_samples
        );
        out.resize(n, Err(reject(RejectReason::BatchTooLarge, msg)));
        out
    }

    /// Write the group's segment; on failure, restore the series it touched
    /// and turn its accepted samples into storage errors (and return false).
    fn commit_group(
        &self,
        state: &mut IngestState,
        seg: &mut SegmentWrite,
        touched: &[u32],
        saved: Vec<(u32, SeriesState)>,
        series_before: usize,
        results: &mut [Vec<Outcome>],
    ) -> bool {
        if !seg.is_empty() {
            seg.last = touched
                .iter()
                .filter_map(|&id| state.series.get(id as usize).map(|s| (id, s.last_ms)))
                .collect();
            let segment = state.next_segment;
            let started = self.clock.stopwatch();
            match self.store.write_segment(segment, seg) {
                Ok(()) => {
                    state.next_segment += 1;
                    self.metrics
                        .observe_commit(started.seconds(), seg.len() as u64);
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, samples = seg.len(), "ingest commit failed; rejecting the group");
                    for (id, old) in saved {
                        if let Some(s) = state.series.get_mut(id as usize) {
                            *s = old;
                        }
                    }
                    state.unindex_from(series_before);
                    state.series.truncate(series_before);
                    let msg = format!("store write failed: {e}");
                    for r in results.iter_mut().flatten().filter(|r| r.is_ok()) {
                        *r = Err(reject(RejectReason::StorageError, msg.clone()));
                    }
                    false
                }
            }
        } else {
            true
        }
    }

    /// Count and send every job's outcomes; hand back the sample buffers.
    fn answer(&self, jobs: Vec<Job>, results: Vec<Vec<Outcome>>) -> Vec<Vec<Sample>> {
        let mut answered = Vec::with_capacity(jobs.len());
        for (Job { samples, reply }, res) in jobs.into_iter().zip(results) {
            let mut accepted = 0u64;
            for r in &res {
                match r {
                    Ok(()) => accepted += 1,
                    Err(e) => self.metrics.count_rejected(e.reason),
                }
            }
            self.metrics.count_accepted(accepted);
            // The stream may have gone away; its results are simply dropped.
            let _ = reply.send(res);
            answered.push(samples);
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn cluster(backends: &[&str]) -> ClusterConfig {
        ClusterConfig {
            name: "c".into(),
            policy: String::new(),
            policy_params: Default::default(),
            algorithm: aya_policy::LbAlgorithm::WeightedRoundRobin,
            min_replicas: 1,
            max_replicas: 3,
            boot_time_seconds: 1.0,
            backends: backends
                .iter()
                .map(|b| BackendConfig {
                    name: b.to_string(),
                    address: "127.0.0.1:80".into(),
                    weight_hint: 1,
                })
                .collect(),
            warm_start: None,
            orca: None,
            events: Default::default(),
        }
    }

    fn sample(backend: &str, metric: &str, ts: i64, value: f64) -> Sample {
        Sample::new("c", backend, metric, MetricKind::Gauge, ts, value)
    }

    fn run(w: &Writer, batches: Vec<Vec<Sample>>) -> Vec<Vec<Option<RejectReason>>> {
        let mut rxs = Vec::new();
        let jobs = batches
            .into_iter()
            .map(|samples| {
                let (reply, rx) = oneshot::channel();
                rxs.push(rx);
                Job { samples, reply }
            })
            .collect();
        w.process(jobs);
        rxs.into_iter()
            .map(|mut rx| {
                rx.try_recv()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_ref().err().map(|e| e.reason))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_writer_validates_with_its_caches_and_the_index_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), crate::store::OpenMode::Init).unwrap();
        let mut reg = BTreeMap::new();
        reg.insert("c".to_string(), cluster(&["a", "b"]));
        let registry = Arc::new(RwLock::new(reg));
        let state = Arc::new(Mutex::new(IngestState::default()));
        let w = Writer {
            store: store.clone(),
            state: state.clone(),
            registry: registry.clone(),
            metrics: Arc::new(Metrics::default()),
            limits: Limits {
                max_batch_samples: 100,
                max_future_ms: 60_000,
                retention_ms: i64::MAX / 4,
                max_series: 1000,
                max_series_per_cluster: 1000,
            },
            clock: Clock::manual(1_767_225_600_000),
            anomalies: None,
        };
        let t = w.clock.now_ms();
        let mut other = sample("a", "m", t, 1.0);
        other.cluster = "zz".into();
        let r = run(
            &w,
            vec![
                vec![
                    sample("a", "m", t, 1.0),
                    sample("b", "m", t, 2.0),
                    sample("a", "m", t, 3.0), // same series, same timestamp
                    sample("x", "m", t, 1.0),
                    sample("a", "bad metric", t, 1.0),
                    other,
                ],
                // A second batch of the same group sees the first one's state.
                vec![sample("a", "m", t + 1, 4.0), sample("b", "m", t - 1, 5.0)],
            ],
        );
        let (ooo, unk_b, bad_m, unk_c) = (
            Some(RejectReason::OutOfOrder),
            Some(RejectReason::UnknownBackend),
            Some(RejectReason::InvalidMetricName),
            Some(RejectReason::UnknownCluster),
        );
        assert_eq!(
            r,
            vec![vec![None, None, ooo, unk_b, bad_m, unk_c], vec![None, ooo]]
        );
        {
            let st = state.lock().unwrap();
            assert_eq!(st.series.len(), 2);
            let a: Vec<f64> = st.backend_series("c", "a").map(|s| s.last_value).collect();
            assert_eq!(a, vec![4.0]);
            assert_eq!(st.cluster_series("c").len(), 2);
        }
        // Removing backend `b` makes its existing series' samples unknown
        // (the remembered position is only a hint).
        registry
            .write()
            .unwrap()
            .insert("c".into(), cluster(&["a", "c"]));
        let r = run(
            &w,
            vec![vec![
                sample("b", "m", t + 5, 1.0),
                sample("a", "m", t + 5, 1.0),
            ]],
        );
        assert_eq!(r, vec![vec![unk_b, None]]);
        // A restart rebuilds the same index from the store.
        let restored = store.restore().unwrap();
        let st2 = IngestState::restore(restored.series, restored.next_segment);
        assert_eq!(st2.cluster_series("c").len(), 2);
        let s = sample("a", "m", 0, 0.0);
        let h = st2.key_hash("c", "a", "m", MetricKind::GAUGE_CODE, &s.labels);
        assert_eq!(st2.lookup(h, &s, MetricKind::GAUGE_CODE), Some(0));
        // Forgetting the cluster empties both indexes; rolling back new ids too.
        let mut st = state.lock().unwrap();
        let h = st.key_hash("c", "a", "m", MetricKind::GAUGE_CODE, &s.labels);
        st.forget_cluster("c");
        assert!(st.lookup(h, &s, MetricKind::GAUGE_CODE).is_none());
        assert!(st.cluster_series("c").is_empty());
        drop(st);
        let mut st3 = IngestState::restore(store.restore().unwrap().series, 0);
        st3.unindex_from(1);
        let h = st3.key_hash("c", "a", "m", MetricKind::GAUGE_CODE, &s.labels);
        assert!(st3.lookup(h, &s, MetricKind::GAUGE_CODE).is_some());
        let sb = sample("b", "m", 0, 0.0);
        let hb = st3.key_hash("c", "b", "m", MetricKind::GAUGE_CODE, &sb.labels);
        assert!(st3.lookup(hb, &sb, MetricKind::GAUGE_CODE).is_none());
    }

    #[test]
    fn new_series_beyond_the_limits_are_rejected_and_existing_ones_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), crate::store::OpenMode::Init).unwrap();
        let mut reg = BTreeMap::new();
        reg.insert("c".to_string(), cluster(&["a", "b"]));
        let mut d = cluster(&["a"]);
        d.name = "d".into();
        reg.insert("d".to_string(), d);
        let state = Arc::new(Mutex::new(IngestState::default()));
        let w = Writer {
            store,
            state: state.clone(),
            registry: Arc::new(RwLock::new(reg)),
            metrics: Arc::new(Metrics::default()),
            limits: Limits {
                max_batch_samples: 100,
                max_future_ms: 60_000,
                retention_ms: i64::MAX / 4,
                max_series: 3,
                max_series_per_cluster: 2,
            },
            clock: Clock::manual(1_767_225_600_000),
            anomalies: None,
        };
        let t = w.clock.now_ms();
        let in_d = |metric: &str, ts: i64| {
            let mut s = sample("a", metric, ts, 1.0);
            s.cluster = "d".into();
            s
        };
        let limit = Some(RejectReason::SeriesLimit);
        let r = run(
            &w,
            vec![vec![
                sample("a", "m", t, 1.0),
                sample("b", "m", t, 1.0),
                sample("a", "other", t, 1.0), // third series of c
                sample("a", "m", t + 1, 2.0), // existing series: accepted
                in_d("m", t),                 // third series in all
                in_d("n", t),                 // fourth: over max_series
            ]],
        );
        assert_eq!(r, vec![vec![None, None, limit, None, None, limit]]);
        assert_eq!(state.lock().unwrap().series_count("c"), (3, 2));
        // Forgetting a cluster frees its series.
        state.lock().unwrap().forget_cluster("d");
        let r = run(
            &w,
            vec![vec![sample("a", "m", t + 2, 3.0), in_d("n", t + 1)]],
        );
        assert_eq!(r, vec![vec![None, None]], "d's series were forgotten");
        assert_eq!(state.lock().unwrap().series_count("d"), (3, 1));
    }
}
