//! Prometheus metrics of the service, served in the OpenMetrics text format on
//! a separate HTTP listener (`/metrics`), plus the xDS counters of the ADS
//! server.
//!
//! The exposition is written by the Prometheus project's `prometheus-client`
//! crate. The hot path (ingest) only does relaxed atomic increments: the
//! counters are `prometheus-client` handles over atomics, and the per-reason
//! rejection counters are created once, up front, so that counting a sample
//! never takes the family's lock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::ingest::RejectReason;
use crate::publish::Publisher;
use crate::xds::XdsStats;

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A float gauge (`f64` stored in an `AtomicU64`).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Label set of the per-reason rejection counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// Label set of the per-cluster series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

/// Label set of the per-cluster retrain counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetrainLabels {
    cluster: String,
    outcome: &'static str,
}

/// Label set of the headroom-exhaustion gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BoundLabels {
    cluster: String,
    bound: &'static str,
}

/// A running sum and count of durations, exposed as a histogram with the
/// single `+Inf` bucket (`NAME_sum`, `NAME_count`, `NAME_bucket{le="+Inf"}`).
///
/// Two relaxed atomics, no lock, unlike `prometheus_client`'s `Histogram`.
/// Clones share the values (like the crate's own metric handles).
#[derive(Debug, Default, Clone)]
pub(crate) struct SumCount {
    /// Sum of the observations, in millionths of the unit.
    sum_micros: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
}

impl SumCount {
    /// Record one observation of `value` (in the metric's unit).
    pub(crate) fn observe(&self, value: f64) {
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A fixed sum and count, encoded like [`SumCount`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConstSumCount {
    /// Sum of the observations.
    pub(crate) sum: f64,
    /// Number of observations.
    pub(crate) count: u64,
}

impl EncodeMetric for ConstSumCount {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.sum,
            self.count,
            &[(f64::INFINITY, self.count)],
            None,
        )
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl EncodeMetric for SumCount {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        ConstSumCount {
            sum: self.sum(),
            count: self.count(),
        }
        .encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Service counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepted: Counter,
    /// One handle into the `reason` family per [`RejectReason::index`].
    rejected: Vec<Counter>,
    commits: Counter,
    commit_seconds: SumCount,
    stored: Gauge,
    retention_deleted: Counter,
    ticks: SumCount,
    tick_last: FloatGauge,
    publications: Counter,
    forecast_mae: Mutex<Vec<(String, f64, u64)>>,
    /// The latest tick's headroom forecast per cluster (predictive alerts).
    headroom: Mutex<std::collections::BTreeMap<String, aya_policy::Headroom>>,
    retrains: Family<RetrainLabels, Counter>,
    candidate_mase: Family<ClusterLabels, FloatGauge>,
    current_mase: Family<ClusterLabels, FloatGauge>,
    retrain_seconds: Family<ClusterLabels, FloatGauge>,
    /// Configuration reloads by result (`success`, `failure`).
    reloads: Family<ResultLabels, Counter>,
    reload_ok: Gauge,
    reload_ok_at: FloatGauge,
}

/// Label set of the configuration reload counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Outcome of one background retrain of a cluster's demand model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrainOutcome {
    /// The candidate backtested no worse and replaced the current model.
    Accepted,
    /// The candidate backtested worse (or could not be scored); the current model stays.
    Rejected,
    /// The retrain could not run to a verdict (storage error, selection error, model changed meanwhile).
    Failed,
    /// Not enough stored history yet for the holdout.
    Skipped,
}

impl RetrainOutcome {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrainOutcome::Accepted => "accepted",
            RetrainOutcome::Rejected => "rejected",
            RetrainOutcome::Failed => "failed",
            RetrainOutcome::Skipped => "skipped",
        }
    }
    const ALL: [RetrainOutcome; 4] = [
        RetrainOutcome::Accepted,
        RetrainOutcome::Rejected,
        RetrainOutcome::Failed,
        RetrainOutcome::Skipped,
    ];
}

impl Metrics {
    /// Fresh counters, registered with their names and help texts.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let accepted = Counter::default();
        registry.register(
            "aya_ingest_samples_accepted",
            "Samples durably stored",
            accepted.clone(),
        );
        let reasons = Family::<ReasonLabels, Counter>::default();
        let rejected = RejectReason::ALL
            .iter()
            .map(|r| {
                reasons
                    .get_or_create(&ReasonLabels {
                        reason: r.as_str().to_string(),
                    })
                    .clone()
            })
            .collect();
        registry.register(
            "aya_ingest_samples_rejected",
            "Samples rejected, by reason",
            reasons,
        );
        let commits = Counter::default();
        registry.register(
            "aya_store_commits",
            "Ingest transactions committed (fsynced)",
            commits.clone(),
        );
        let commit_seconds = SumCount::default();
        registry.register(
            "aya_store_commit_seconds",
            "Time spent committing ingest transactions",
            commit_seconds.clone(),
        );
        let stored = Gauge::default();
        registry.register(
            "aya_store_samples",
            "Samples in the store (after retention)",
            stored.clone(),
        );
        let retention_deleted = Counter::default();
        registry.register(
            "aya_store_retention_deleted",
            "Samples deleted by retention",
            retention_deleted.clone(),
        );
        let ticks = SumCount::default();
        registry.register(
            "aya_tick_duration_seconds",
            "Duration of control ticks (all clusters)",
            ticks.clone(),
        );
        let tick_last = FloatGauge::default();
        registry.register(
            "aya_tick_last_duration_seconds",
            "Duration of the last control tick",
            tick_last.clone(),
        );
        let publications = Counter::default();
        registry.register(
            "aya_publications",
            "Snapshots published (decision or endpoints changed)",
            publications.clone(),
        );
        let retrains = Family::<RetrainLabels, Counter>::default();
        registry.register(
            "aya_retrains",
            "Background retrains of a cluster's demand model, by outcome",
            retrains.clone(),
        );
        let candidate_mase = Family::<ClusterLabels, FloatGauge>::default();
        registry.register(
            "aya_retrain_candidate_mase",
            "Holdout MASE of the last retrain's candidate model",
            candidate_mase.clone(),
        );
        let current_mase = Family::<ClusterLabels, FloatGauge>::default();
        registry.register(
            "aya_retrain_current_mase",
            "Holdout MASE of the model in use at the last retrain (NaN when there was none)",
            current_mase.clone(),
        );
        let retrain_seconds = Family::<ClusterLabels, FloatGauge>::default();
        registry.register(
            "aya_retrain_last_duration_seconds",
            "Duration of the last retrain of the cluster",
            retrain_seconds.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "aya_config_reloads",
            "Configuration reloads (SIGHUP), by result",
            reloads.clone(),
        );
        let reload_ok = Gauge::default();
        reload_ok.set(1);
        registry.register(
            "aya_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1 until one fails)",
            reload_ok.clone(),
        );
        let reload_ok_at = FloatGauge::default();
        registry.register(
            "aya_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload (0: none yet)",
            reload_ok_at.clone(),
        );
        Metrics {
            reloads,
            reload_ok,
            reload_ok_at,
            registry,
            accepted,
            rejected,
            commits,
            commit_seconds,
            stored,
            retention_deleted,
            ticks,
            tick_last,
            publications,
            forecast_mae: Mutex::new(Vec::new()),
            headroom: Mutex::new(std::collections::BTreeMap::new()),
            retrains,
            candidate_mase,
            current_mase,
            retrain_seconds,
        }
    }

    /// The predictive-alert gauges of every cluster's latest tick. A time
    /// beyond the forecast's horizon is `+Inf`, so that an alert rule such as
    /// `aya_headroom_exhausted_seconds{bound="upper"} < 900` reads naturally.
    fn register_headroom(&self, now: &mut Registry) {
        let capacity = Family::<ClusterLabels, FloatGauge>::default();
        let horizon = Family::<ClusterLabels, FloatGauge>::default();
        let exhausted = Family::<BoundLabels, FloatGauge>::default();
        let deadline = Family::<ClusterLabels, FloatGauge>::default();
        let or_inf = |t: Option<f64>| t.unwrap_or(f64::INFINITY);
        for (cluster, h) in self
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let c = ClusterLabels {
                cluster: cluster.clone(),
            };
            capacity.get_or_create(&c).set(h.capacity_rps);
            horizon.get_or_create(&c).set(h.horizon_seconds);
            deadline
                .get_or_create(&c)
                .set(or_inf(h.scale_up_deadline_in));
            for (bound, t) in [
                ("upper", h.exhausted_upper_in),
                ("mean", h.exhausted_mean_in),
                ("lower", h.exhausted_lower_in),
            ] {
                exhausted
                    .get_or_create(&BoundLabels {
                        cluster: cluster.clone(),
                        bound,
                    })
                    .set(or_inf(t));
            }
        }
        now.register(
            "aya_headroom_capacity_rps",
            "What the healthy serving backends carry at full utilisation, by their capacity models (requests/s)",
            capacity,
        );
        now.register(
            "aya_headroom_horizon_seconds",
            "How far ahead the demand forecast behind the headroom gauges reaches",
            horizon,
        );
        now.register(
            "aya_headroom_exhausted_seconds",
            "Seconds until the demand forecast (bound = upper, mean, lower) exceeds the capacity; +Inf beyond the horizon",
            exhausted,
        );
        now.register(
            "aya_scale_up_deadline_seconds",
            "Seconds left to order replicas that are ready before the forecast's upper bound exceeds the capacity (exhaustion minus boot time; negative: late); +Inf beyond the horizon",
            deadline,
        );
    }

    /// Count one rejected sample.
    pub fn count_rejected(&self, reason: RejectReason) {
        if let Some(c) = self.rejected.get(reason.index()) {
            c.inc();
        }
    }
    /// Count `n` samples rejected for `reason`.
    pub fn count_rejected_n(&self, reason: RejectReason, n: usize) {
        if let Some(c) = self.rejected.get(reason.index()) {
            c.inc_by(n as u64);
        }
    }
    /// Count `n` accepted samples.
    pub fn count_accepted(&self, n: u64) {
        self.accepted.inc_by(n);
    }
    /// Record a committed segment.
    pub fn observe_commit(&self, seconds: f64, samples: u64) {
        self.commits.inc();
        self.commit_seconds.observe(seconds);
        self.stored
            .inc_by(i64::try_from(samples).unwrap_or(i64::MAX));
    }
    /// Set the number of stored samples (at start).
    pub fn set_stored(&self, n: u64) {
        self.stored.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    /// Record samples deleted by retention.
    pub fn retention_deleted(&self, n: u64) {
        self.retention_deleted.inc_by(n);
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let _ = self
            .stored
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n).max(0))
            });
    }
    /// Record one control tick over every cluster.
    pub fn observe_tick(&self, seconds: f64) {
        self.ticks.observe(seconds);
        // The last duration as shown before: whole microseconds.
        self.tick_last.set(((seconds * 1e6) as u64) as f64 / 1e6);
    }
    /// Count one published snapshot.
    pub fn published(&self) {
        self.publications.inc();
    }
    /// Set the per-cluster one-step forecast mean absolute error.
    pub fn set_forecast_error(&self, errors: Vec<(String, f64, u64)>) {
        *self.forecast_mae.lock().unwrap_or_else(|p| p.into_inner()) = errors;
    }
    /// The headroom forecast of `cluster`'s latest tick (`None`: none could
    /// be made, the series disappear).
    pub fn set_headroom(&self, cluster: &str, h: Option<aya_policy::Headroom>) {
        let mut m = self.headroom.lock().unwrap_or_else(|p| p.into_inner());
        match h {
            Some(h) => {
                m.insert(cluster.to_string(), h);
            }
            None => {
                m.remove(cluster);
            }
        }
    }

    /// Record a configuration reload: its result and, when it succeeded,
    /// its time (unix seconds).
    pub fn observe_reload(&self, ok: bool, now_secs: f64) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_ok_at.set(now_secs);
        }
    }

    /// Record one retrain of `cluster`: its outcome, the holdout MASE of the
    /// candidate and of the current model (NaN when not scored) and its duration.
    pub fn observe_retrain(
        &self,
        cluster: &str,
        outcome: RetrainOutcome,
        candidate_mase: f64,
        current_mase: f64,
        seconds: f64,
    ) {
        // Every outcome's series exists once the cluster has retrained.
        for o in RetrainOutcome::ALL {
            let c = self.retrains.get_or_create(&RetrainLabels {
                cluster: cluster.to_string(),
                outcome: o.as_str(),
            });
            if o == outcome {
                c.inc();
            }
        }
        let labels = ClusterLabels {
            cluster: cluster.to_string(),
        };
        if candidate_mase.is_finite() || current_mase.is_finite() {
            self.candidate_mase
                .get_or_create(&labels)
                .set(candidate_mase);
            self.current_mase.get_or_create(&labels).set(current_mase);
        }
        self.retrain_seconds.get_or_create(&labels).set(seconds);
    }

    /// Retrains of `cluster` with `outcome` so far.
    pub fn retrains(&self, cluster: &str, outcome: RetrainOutcome) -> u64 {
        self.retrains
            .get(&RetrainLabels {
                cluster: cluster.to_string(),
                outcome: outcome.as_str(),
            })
            .map_or(0, |c| c.get())
    }

    /// Forget a deleted cluster's retrain series.
    pub fn forget_cluster(&self, cluster: &str) {
        self.set_headroom(cluster, None);
        for o in RetrainOutcome::ALL {
            self.retrains.remove(&RetrainLabels {
                cluster: cluster.to_string(),
                outcome: o.as_str(),
            });
        }
        let labels = ClusterLabels {
            cluster: cluster.to_string(),
        };
        self.candidate_mase.remove(&labels);
        self.current_mase.remove(&labels);
        self.retrain_seconds.remove(&labels);
    }

    /// Samples accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }
    /// Samples rejected so far (all reasons).
    pub fn rejected(&self) -> u64 {
        self.rejected.iter().map(Counter::get).sum()
    }
    /// Segments committed.
    pub fn batches(&self) -> u64 {
        self.commits.get()
    }
    /// Seconds spent committing ingest transactions (fsync included).
    pub fn commit_seconds(&self) -> f64 {
        self.commit_seconds.sum()
    }
    /// Samples in the store.
    pub fn stored(&self) -> u64 {
        u64::try_from(self.stored.get()).unwrap_or(0)
    }
    /// Ticks run.
    pub fn ticks(&self) -> u64 {
        self.ticks.count()
    }
    /// Snapshots published.
    pub fn publications(&self) -> u64 {
        self.publications.get()
    }

    /// Render the OpenMetrics text exposition (ending in `# EOF`).
    pub fn render(&self, publisher: &Publisher, xds: &XdsStats) -> String {
        // Series read from other parts at scrape time: a registry per scrape.
        let mut now = Registry::default();
        let state = publisher.state();
        now.register(
            "aya_published_state_version",
            "Version of the whole published state (changes with any cluster)",
            ConstGauge::new(clamp_i64(state.version)),
        );
        let versions = Family::<ClusterLabels, Gauge>::default();
        for (name, snap) in &state.clusters {
            versions
                .get_or_create(&ClusterLabels {
                    cluster: name.clone(),
                })
                .set(clamp_i64(snap.version));
        }
        now.register(
            "aya_published_version",
            "Current published version, per cluster",
            versions,
        );
        now.register(
            "aya_watchers",
            "Current subscribers of published state (aya.v1 Watch streams, xDS, KEDA)",
            ConstGauge::new(i64::try_from(publisher.receiver_count()).unwrap_or(i64::MAX)),
        );
        let mae = Family::<ClusterLabels, FloatGauge>::default();
        for (cluster, value, n) in self
            .forecast_mae
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if *n > 0 {
                mae.get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(*value);
            }
        }
        self.register_headroom(&mut now);
        now.register(
            "aya_forecast_one_step_mae",
            "One-step-ahead mean absolute error of the demand forecast (requests/s)",
            mae,
        );
        xds.register_metrics(&mut now);

        let mut o = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut o, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut o, &now);
        let _ = prometheus_client::encoding::text::encode_eof(&mut o);
        o
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The `/metrics` HTTP router.
pub fn router(metrics: Arc<Metrics>, publisher: Publisher, xds: Arc<XdsStats>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&publisher, &xds);
            async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_keeps_the_series_names() {
        let m = Metrics::new();
        m.count_accepted(1);
        m.count_rejected(RejectReason::UnknownBackend);
        m.count_rejected(RejectReason::StorageError);
        m.observe_commit(0.25, 3);
        m.retention_deleted(1);
        m.observe_tick(0.5);
        m.published();
        m.set_forecast_error(vec![("web".into(), 1.5, 4), ("idle".into(), 0.0, 0)]);
        m.set_headroom(
            "web",
            Some(aya_policy::Headroom {
                capacity_rps: 400.0,
                horizon_seconds: 300.0,
                exhausted_upper_in: Some(100.0),
                exhausted_mean_in: Some(150.0),
                exhausted_lower_in: None,
                scale_up_deadline_in: Some(40.0),
            }),
        );
        m.observe_retrain("web", RetrainOutcome::Accepted, 0.8, f64::NAN, 2.0);
        let text = m.render(&Publisher::new(7), &XdsStats::new());
        println!("{text}");
        for line in [
            "aya_ingest_samples_accepted_total 1\n",
            "aya_headroom_capacity_rps{cluster=\"web\"} 400.0\n",
            "aya_headroom_exhausted_seconds{cluster=\"web\",bound=\"upper\"} 100.0\n",
            "aya_headroom_exhausted_seconds{cluster=\"web\",bound=\"lower\"} inf\n",
            "aya_scale_up_deadline_seconds{cluster=\"web\"} 40.0\n",
            "aya_ingest_samples_rejected_total{reason=\"unknown_backend\"} 1\n",
            "aya_ingest_samples_rejected_total{reason=\"too_old\"} 0\n",
            "aya_store_commits_total 1\n",
            "aya_store_commit_seconds_sum 0.25\n",
            "aya_store_samples 2\n",
            "aya_store_retention_deleted_total 1\n",
            "aya_tick_duration_seconds_sum 0.5\n",
            "aya_tick_duration_seconds_count 1\n",
            "aya_tick_last_duration_seconds 0.5\n",
            "aya_publications_total 1\n",
            "aya_published_state_version 7\n",
            "aya_watchers 0\n",
            "aya_forecast_one_step_mae{cluster=\"web\"} 1.5\n",
            "aya_retrains_total{cluster=\"web\",outcome=\"accepted\"} 1\n",
            "aya_retrains_total{cluster=\"web\",outcome=\"skipped\"} 0\n",
            "aya_retrain_candidate_mase{cluster=\"web\"} 0.8\n",
            "aya_retrain_current_mase{cluster=\"web\"} NaN\n",
            "aya_retrain_last_duration_seconds{cluster=\"web\"} 2.0\n",
            "aya_xds_nacks_total 0\n",
            "aya_xds_ack_latency_microseconds_count 0\n",
            "aya_xds_streams_connected 0\n",
            "# TYPE aya_ingest_samples_accepted counter\n",
            "# HELP aya_ingest_samples_accepted Samples durably stored.\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("idle"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(m.rejected(), 2);
        m.forget_cluster("web");
        assert_eq!(m.retrains("web", RetrainOutcome::Accepted), 0);
        let text = m.render(&Publisher::new(7), &XdsStats::new());
        assert!(!text.contains("aya_retrains_total{"), "{text}");
    }
}
