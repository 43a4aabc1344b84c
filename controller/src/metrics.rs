//! Prometheus metrics of the service, served as text on a separate HTTP
//! listener (`/metrics`), plus the xDS counters of the ADS server.
//!
//! Plain atomics: the hot path (ingest) only does relaxed increments.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aya_proto::v1::RejectReason;

use crate::publish::Publisher;
use crate::xds::XdsStats;

const REASONS: usize = 12;

/// Service counters.
#[derive(Debug, Default)]
pub struct Metrics {
    accepted: AtomicU64,
    rejected: [AtomicU64; REASONS],
    batches: AtomicU64,
    commit_seconds_sum_micros: AtomicU64,
    committed_samples: AtomicU64,
    ticks: AtomicU64,
    tick_seconds_sum_micros: AtomicU64,
    tick_last_micros: AtomicU64,
    publications: AtomicU64,
    retention_deleted: AtomicU64,
    stored: AtomicU64,
    forecast_mae: Mutex<Vec<(String, f64, u64)>>,
    retrains: Mutex<std::collections::BTreeMap<String, RetrainStats>>,
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

/// Retrain counters and last scores of one cluster.
#[derive(Debug, Clone, Default)]
struct RetrainStats {
    counts: [u64; 4],
    candidate_mase: f64,
    current_mase: f64,
    scored: bool,
    last_seconds: f64,
}

impl Metrics {
    /// Count one sample's outcome.
    pub fn count_sample(&self, accepted: bool, reason: i32) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            let i = (reason.max(0) as usize).min(REASONS - 1);
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    /// Count `n` accepted samples.
    pub fn count_accepted(&self, n: u64) {
        self.accepted.fetch_add(n, Ordering::Relaxed);
    }
    /// Record a committed segment.
    pub fn observe_commit(&self, seconds: f64, samples: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.commit_seconds_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.committed_samples.fetch_add(samples, Ordering::Relaxed);
        self.stored.fetch_add(samples, Ordering::Relaxed);
    }
    /// Set the number of stored samples (at start).
    pub fn set_stored(&self, n: u64) {
        self.stored.store(n, Ordering::Relaxed);
    }
    /// Record samples deleted by retention.
    pub fn retention_deleted(&self, n: u64) {
        self.retention_deleted.fetch_add(n, Ordering::Relaxed);
        let _ = self
            .stored
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    /// Record one control tick over every cluster.
    pub fn observe_tick(&self, seconds: f64) {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let micros = (seconds * 1e6) as u64;
        self.tick_seconds_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.tick_last_micros.store(micros, Ordering::Relaxed);
    }
    /// Count one published snapshot.
    pub fn published(&self) {
        self.publications.fetch_add(1, Ordering::Relaxed);
    }
    /// Set the per-cluster one-step forecast mean absolute error.
    pub fn set_forecast_error(&self, errors: Vec<(String, f64, u64)>) {
        *self.forecast_mae.lock().unwrap_or_else(|p| p.into_inner()) = errors;
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
        let mut m = self.retrains.lock().unwrap_or_else(|p| p.into_inner());
        let st = m.entry(cluster.to_string()).or_default();
        if let Some(i) = RetrainOutcome::ALL.iter().position(|o| *o == outcome) {
            st.counts[i] += 1;
        }
        if candidate_mase.is_finite() || current_mase.is_finite() {
            st.candidate_mase = candidate_mase;
            st.current_mase = current_mase;
            st.scored = true;
        }
        st.last_seconds = seconds;
    }

    /// Retrains of `cluster` with `outcome` so far.
    pub fn retrains(&self, cluster: &str, outcome: RetrainOutcome) -> u64 {
        let m = self.retrains.lock().unwrap_or_else(|p| p.into_inner());
        let i = RetrainOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        m.get(cluster).map_or(0, |s| s.counts[i])
    }

    /// Forget a deleted cluster's retrain series.
    pub fn forget_cluster(&self, cluster: &str) {
        self.retrains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster);
    }

    /// Samples accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Samples rejected so far (all reasons).
    pub fn rejected(&self) -> u64 {
        self.rejected
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
    /// Segments committed.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
    /// Seconds spent committing ingest transactions (fsync included).
    pub fn commit_seconds(&self) -> f64 {
        self.commit_seconds_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }
    /// Samples in the store.
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }
    /// Ticks run.
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
    /// Snapshots published.
    pub fn publications(&self) -> u64 {
        self.publications.load(Ordering::Relaxed)
    }

    /// Render the Prometheus text exposition format.
    pub fn render(&self, publisher: &Publisher, xds: &XdsStats) -> String {
        let mut o = String::with_capacity(4096);
        let r = Ordering::Relaxed;
        let _ = writeln!(
            o,
            "# HELP aya_ingest_samples_accepted_total Samples durably stored."
        );
        let _ = writeln!(o, "# TYPE aya_ingest_samples_accepted_total counter");
        let _ = writeln!(
            o,
            "aya_ingest_samples_accepted_total {}",
            self.accepted.load(r)
        );
        let _ = writeln!(
            o,
            "# HELP aya_ingest_samples_rejected_total Samples rejected, by reason."
        );
        let _ = writeln!(o, "# TYPE aya_ingest_samples_rejected_total counter");
        for (i, c) in self.rejected.iter().enumerate().skip(1) {
            let name = RejectReason::try_from(i as i32)
                .map(|x| x.as_str_name())
                .unwrap_or("UNKNOWN");
            let reason = name
                .trim_start_matches("REJECT_REASON_")
                .to_ascii_lowercase();
            let _ = writeln!(
                o,
                "aya_ingest_samples_rejected_total{{reason=\"{reason}\"}} {}",
                c.load(r)
            );
        }
        let _ = writeln!(
            o,
            "# HELP aya_store_commits_total Ingest transactions committed (fsynced)."
        );
        let _ = writeln!(o, "# TYPE aya_store_commits_total counter");
        let _ = writeln!(o, "aya_store_commits_total {}", self.batches.load(r));
        let _ = writeln!(
            o,
            "# HELP aya_store_commit_seconds_sum Time spent committing ingest transactions."
        );
        let _ = writeln!(o, "# TYPE aya_store_commit_seconds_sum counter");
        let _ = writeln!(
            o,
            "aya_store_commit_seconds_sum {}",
            self.commit_seconds_sum_micros.load(r) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "# HELP aya_store_samples Samples in the store (after retention)."
        );
        let _ = writeln!(o, "# TYPE aya_store_samples gauge");
        let _ = writeln!(o, "aya_store_samples {}", self.stored.load(r));
        let _ = writeln!(
            o,
            "# HELP aya_store_retention_deleted_total Samples deleted by retention."
        );
        let _ = writeln!(o, "# TYPE aya_store_retention_deleted_total counter");
        let _ = writeln!(
            o,
            "aya_store_retention_deleted_total {}",
            self.retention_deleted.load(r)
        );
        let _ = writeln!(
            o,
            "# HELP aya_tick_duration_seconds Duration of control ticks (all clusters)."
        );
        let _ = writeln!(o, "# TYPE aya_tick_duration_seconds summary");
        let _ = writeln!(
            o,
            "aya_tick_duration_seconds_sum {}",
            self.tick_seconds_sum_micros.load(r) as f64 / 1e6
        );
        let _ = writeln!(o, "aya_tick_duration_seconds_count {}", self.ticks.load(r));
        let _ = writeln!(
            o,
            "# HELP aya_tick_last_duration_seconds Duration of the last control tick."
        );
        let _ = writeln!(o, "# TYPE aya_tick_last_duration_seconds gauge");
        let _ = writeln!(
            o,
            "aya_tick_last_duration_seconds {}",
            self.tick_last_micros.load(r) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "# HELP aya_publications_total Snapshots published (decision or endpoints changed)."
        );
        let _ = writeln!(o, "# TYPE aya_publications_total counter");
        let _ = writeln!(o, "aya_publications_total {}", self.publications.load(r));
        let state = publisher.state();
        let _ = writeln!(
            o,
            "# HELP aya_published_state_version Version of the whole published state (changes with any cluster)."
        );
        let _ = writeln!(o, "# TYPE aya_published_state_version gauge");
        let _ = writeln!(o, "aya_published_state_version {}", state.version);
        let _ = writeln!(
            o,
            "# HELP aya_published_version Current published version, per cluster."
        );
        let _ = writeln!(o, "# TYPE aya_published_version gauge");
        for (name, snap) in &state.clusters {
            let _ = writeln!(
                o,
                "aya_published_version{{cluster=\"{}\"}} {}",
                escape(name),
                snap.version
            );
        }
        let _ = writeln!(
            o,
            "# HELP aya_watchers Current subscribers of published state (aya.v1 Watch streams, xDS, KEDA)."
        );
        let _ = writeln!(o, "# TYPE aya_watchers gauge");
        let _ = writeln!(o, "aya_watchers {}", publisher.receiver_count());
        let _ = writeln!(
            o,
            "# HELP aya_forecast_one_step_mae One-step-ahead mean absolute error of the demand forecast (requests/s)."
        );
        let _ = writeln!(o, "# TYPE aya_forecast_one_step_mae gauge");
        for (cluster, mae, n) in self
            .forecast_mae
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if *n > 0 {
                let _ = writeln!(
                    o,
                    "aya_forecast_one_step_mae{{cluster=\"{}\"}} {mae}",
                    escape(cluster)
                );
            }
        }
        self.render_retrains(&mut o);
        xds.write_prometheus(&mut o);
        o
    }

    fn render_retrains(&self, o: &mut String) {
        let m = self.retrains.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            o,
            "# HELP aya_retrains_total Background retrains of a cluster's demand model, by outcome."
        );
        let _ = writeln!(o, "# TYPE aya_retrains_total counter");
        for (cluster, st) in m.iter() {
            for (i, outcome) in RetrainOutcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "aya_retrains_total{{cluster=\"{}\",outcome=\"{}\"}} {}",
                    escape(cluster),
                    outcome.as_str(),
                    st.counts[i]
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP aya_retrain_candidate_mase Holdout MASE of the last retrain's candidate model."
        );
        let _ = writeln!(o, "# TYPE aya_retrain_candidate_mase gauge");
        for (cluster, st) in m.iter().filter(|(_, s)| s.scored) {
            let _ = writeln!(
                o,
                "aya_retrain_candidate_mase{{cluster=\"{}\"}} {}",
                escape(cluster),
                st.candidate_mase
            );
        }
        let _ = writeln!(
            o,
            "# HELP aya_retrain_current_mase Holdout MASE of the model in use at the last retrain (NaN when there was none)."
        );
        let _ = writeln!(o, "# TYPE aya_retrain_current_mase gauge");
        for (cluster, st) in m.iter().filter(|(_, s)| s.scored) {
            let _ = writeln!(
                o,
                "aya_retrain_current_mase{{cluster=\"{}\"}} {}",
                escape(cluster),
                st.current_mase
            );
        }
        let _ = writeln!(
            o,
            "# HELP aya_retrain_last_duration_seconds Duration of the last retrain of the cluster."
        );
        let _ = writeln!(o, "# TYPE aya_retrain_last_duration_seconds gauge");
        for (cluster, st) in m.iter() {
            let _ = writeln!(
                o,
                "aya_retrain_last_duration_seconds{{cluster=\"{}\"}} {}",
                escape(cluster),
                st.last_seconds
            );
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` HTTP router.
pub fn router(metrics: Arc<Metrics>, publisher: Publisher, xds: Arc<XdsStats>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&publisher, &xds);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    body,
                )
            }
        }),
    )
}
