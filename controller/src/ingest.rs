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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use aya_proto::v1::{MetricKind, RejectReason, Sample, SampleResult};
use tokio::sync::{mpsc, oneshot};

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
}

impl SeriesState {
    fn apply(&mut self, ts_ms: i64, value: f64) {
        let kind = self.key.kind;
        if self.last_ms != i64::MIN && ts_ms > self.last_ms {
            let dt = (ts_ms - self.last_ms) as f64 / 1000.0;
            if kind == MetricKind::Counter as i32 {
                // A decrease is a counter reset: the new value counts from zero.
                let inc = if value >= self.last_value {
                    value - self.last_value
                } else {
                    value
                };
                self.rate = Some(inc / dt);
            } else if kind == MetricKind::Delta as i32 {
                self.rate = Some(value / dt);
            }
        }
        self.last_ms = ts_ms;
        self.last_value = value;
    }
}

type LabelSets = Vec<(BTreeMap<String, String>, i32, u32)>;

/// Series index and state shared by the writer (which mutates it) and the
/// control loop (which reads it at each tick).
#[derive(Debug, Default)]
pub struct IngestState {
    /// cluster → backend → metric → (labels, kind, series id).
    index: HashMap<String, HashMap<String, HashMap<String, LabelSets>>>,
    /// Series state by id.
    pub series: Vec<SeriesState>,
    next_segment: u64,
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
                st.series.push(SeriesState {
                    key: SeriesKey {
                        cluster: String::new(),
                        backend: String::new(),
                        metric: String::new(),
                        kind: 0,
                        labels: BTreeMap::new(),
                    },
                    last_ms: i64::MAX,
                    last_value: f64::NAN,
                    rate: None,
                });
            }
            st.insert_index(&s.key, s.id);
            st.series.push(SeriesState {
                key: s.key,
                last_ms: s.last_ms,
                last_value: f64::NAN,
                rate: None,
            });
        }
        st
    }

    fn insert_index(&mut self, key: &SeriesKey, id: u32) {
        self.index
            .entry(key.cluster.clone())
            .or_default()
            .entry(key.backend.clone())
            .or_default()
            .entry(key.metric.clone())
            .or_default()
            .push((key.labels.clone(), key.kind, id));
    }

    fn lookup(&self, s: &Sample, kind: i32) -> Option<u32> {
        self.index
            .get(&s.cluster)?
            .get(&s.backend)?
            .get(&s.metric)?
            .iter()
            .find(|(l, k, _)| *k == kind && *l == s.labels)
            .map(|(_, _, id)| *id)
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

    /// Ids of the series of one backend.
    pub fn backend_series(
        &self,
        cluster: &str,
        backend: &str,
    ) -> impl Iterator<Item = &SeriesState> + '_ {
        self.index
            .get(cluster)
            .and_then(|c| c.get(backend))
            .into_iter()
            .flat_map(|m| m.values())
            .flat_map(|v| v.iter())
            .filter_map(|(_, _, id)| self.series.get(*id as usize))
    }

    /// Series of a cluster (for history queries).
    pub fn cluster_series(&self, cluster: &str) -> Vec<(u32, SeriesKey)> {
        let mut out = Vec::new();
        if let Some(c) = self.index.get(cluster) {
            for m in c.values() {
                for v in m.values() {
                    for (_, _, id) in v {
                        if let Some(s) = self.series.get(*id as usize) {
                            out.push((*id, s.key.clone()));
                        }
                    }
                }
            }
        }
        out
    }

    /// Forget the series of a deleted cluster from the lookup index (their
    /// stored history stays until retention removes it).
    pub fn forget_cluster(&mut self, cluster: &str) {
        self.index.remove(cluster);
    }
}

/// One batch waiting for the writer.
#[derive(Debug)]
pub struct Job {
    /// Samples.
    pub samples: Vec<Sample>,
    /// Where the results go (one per sample).
    pub reply: oneshot::Sender<Vec<SampleResult>>,
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
}

fn reject(reason: RejectReason, message: String) -> SampleResult {
    SampleResult {
        accepted: false,
        reason: reason as i32,
        message,
    }
}

fn valid_metric(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_BYTES
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'.'))
}

/// Check what can be checked without series state. `Ok(kind)` when it passes.
fn check_static(
    s: &Sample,
    registry: &BTreeMap<String, ClusterConfig>,
    now_ms: i64,
    limits: &Limits,
) -> Result<i32, SampleResult> {
    let Some(cluster) = registry.get(&s.cluster) else {
        return Err(reject(
            RejectReason::UnknownCluster,
            format!("cluster {:?} is not configured", s.cluster),
        ));
    };
    // Backends are kept sorted by name (`ClusterConfig::normalise`).
    if cluster
        .backends
        .binary_search_by(|b| b.name.as_str().cmp(&s.backend))
        .is_err()
    {
        return Err(reject(
            RejectReason::UnknownBackend,
            format!(
                "backend {:?} is not configured in cluster {:?}",
                s.backend, s.cluster
            ),
        ));
    }
    if !valid_metric(&s.metric) {
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
    if !s.value.is_finite() {
        return Err(reject(
            RejectReason::NotFinite,
            format!("value {} is not finite", s.value),
        ));
    }
    let kind = match MetricKind::try_from(s.kind) {
        Ok(MetricKind::Unspecified) | Ok(MetricKind::Gauge) => MetricKind::Gauge as i32,
        Ok(k) => k as i32,
        Err(_) => MetricKind::Gauge as i32,
    };
    if kind != MetricKind::Gauge as i32 && s.value < 0.0 {
        return Err(reject(
            RejectReason::NegativeCounter,
            format!(
                "{} value {} of metric {:?} is negative",
                if kind == MetricKind::Counter as i32 {
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
    Ok(kind)
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
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Writer {
    /// Run until every sender is dropped. Call on a dedicated thread.
    pub fn run(self, mut rx: mpsc::Receiver<Job>) {
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
            self.process(jobs);
        }
    }

    /// Validate, commit and answer a group of batches.
    pub fn process(&self, jobs: Vec<Job>) {
        let now = now_ms();
        let mut results: Vec<Vec<SampleResult>> = Vec::with_capacity(jobs.len());
        let mut seg = SegmentWrite::default();
        // Rollback information: series state before the group touched it.
        let mut saved: HashMap<u32, SeriesState> = HashMap::new();
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let series_before = state.series.len();
        for job in &jobs {
            let mut out = Vec::with_capacity(job.samples.len());
            if job.samples.len() > self.limits.max_batch_samples {
                let msg = format!(
                    "batch of {} samples exceeds max_batch_samples {}",
                    job.samples.len(),
                    self.limits.max_batch_samples
                );
                out.resize(job.samples.len(), reject(RejectReason::BatchTooLarge, msg));
                results.push(out);
                continue;
            }
            for s in &job.samples {
                let kind = match check_static(s, &registry, now, &self.limits) {
                    Ok(k) => k,
                    Err(r) => {
                        out.push(r);
                        continue;
                    }
                };
                let id = match state.lookup(s, kind) {
                    Some(id) => id,
                    None => {
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
                        state.series.push(SeriesState {
                            key,
                            last_ms: i64::MIN,
                            last_value: f64::NAN,
                            rate: None,
                        });
                        id
                    }
                };
                let Some(ser) = state.series.get_mut(id as usize) else {
                    out.push(reject(
                        RejectReason::StorageError,
                        format!("series index {id} missing"),
                    ));
                    continue;
                };
                if s.timestamp_ms <= ser.last_ms {
                    out.push(reject(
                        RejectReason::OutOfOrder,
                        format!(
                            "timestamp {} ms is not after the series' previous sample at {} ms",
                            s.timestamp_ms, ser.last_ms
                        ),
                    ));
                    continue;
                }
                if (id as usize) < series_before {
                    saved.entry(id).or_insert_with(|| ser.clone());
                }
                ser.apply(s.timestamp_ms, s.value);
                seg.push(id, s.timestamp_ms, s.value);
                out.push(SampleResult {
                    accepted: true,
                    reason: 0,
                    message: String::new(),
                });
            }
            results.push(out);
        }
        if !seg.is_empty() {
            let mut touched: HashMap<u32, i64> = HashMap::new();
            for (id, ts, _) in crate::store::unpack(&seg.packed) {
                touched.insert(id, ts);
            }
            seg.last = touched.into_iter().collect();
            let segment = state.next_segment;
            let started = std::time::Instant::now();
            match self.store.write_segment(segment, &seg) {
                Ok(()) => {
                    state.next_segment += 1;
                    self.metrics
                        .observe_commit(started.elapsed().as_secs_f64(), seg.len() as u64);
                }
                Err(e) => {
                    tracing::error!(error = %e, samples = seg.len(), "ingest commit failed; rejecting the group");
                    for (id, old) in saved {
                        if let Some(s) = state.series.get_mut(id as usize) {
                            *s = old;
                        }
                    }
                    let new: Vec<SeriesKey> =
                        state.series.drain(series_before..).map(|s| s.key).collect();
                    for key in new {
                        if let Some(v) = state
                            .index
                            .get_mut(&key.cluster)
                            .and_then(|c| c.get_mut(&key.backend))
                            .and_then(|m| m.get_mut(&key.metric))
                        {
                            v.retain(|(_, _, id)| (*id as usize) < series_before);
                        }
                    }
                    let msg = format!("store write failed: {e}");
                    for r in results.iter_mut().flatten().filter(|r| r.accepted) {
                        *r = reject(RejectReason::StorageError, msg.clone());
                    }
                }
            }
        }
        drop(state);
        drop(registry);
        for (job, res) in jobs.into_iter().zip(results) {
            for r in &res {
                self.metrics.count_sample(r.accepted, r.reason);
            }
            // The stream may have gone away; its results are simply dropped.
            let _ = job.reply.send(res);
        }
    }
}
