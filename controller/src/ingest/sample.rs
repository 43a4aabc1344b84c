//! The domain types of ingest: a [`Sample`] as the writer validates it, its
//! [`MetricKind`], and the [`Rejection`] of a sample the writer refuses.
//!
//! Nothing here depends on a wire format. The gRPC service, the OTLP receiver
//! and the Prometheus remote-write receiver convert their messages into
//! these types at their edge ([`crate::convert`], [`crate::otlp`]); the writer,
//! the series state, the control loop and the metrics only see these.

use std::collections::BTreeMap;

/// How a metric's values are read.
///
/// The wire may carry a kind number that names no kind (a client built
/// against a newer contract, or a bad one): it is kept as [`Unknown`] so that
/// the writer rejects it at the same point of its checks as any other fault,
/// and names the number it got.
///
/// [`Unknown`]: MetricKind::Unknown
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// A value at a point in time (in-flight requests, latency, utilisation).
    Gauge,
    /// A cumulative count, differentiated into a rate (a decrease is a reset).
    Counter,
    /// A count over the interval since the previous sample.
    Delta,
    /// A kind number that is none of the above; never stored.
    Unknown(i32),
}

impl MetricKind {
    /// The store's number of a gauge (the store keeps the kind as an `i32`).
    pub const GAUGE_CODE: i32 = 1;
    /// The store's number of a counter.
    pub const COUNTER_CODE: i32 = 2;
    /// The store's number of a delta.
    pub const DELTA_CODE: i32 = 3;

    /// The kind the store's number `code` denotes (0, the unspecified kind,
    /// is a gauge).
    pub fn from_code(code: i32) -> MetricKind {
        match code {
            0 | Self::GAUGE_CODE => MetricKind::Gauge,
            Self::COUNTER_CODE => MetricKind::Counter,
            Self::DELTA_CODE => MetricKind::Delta,
            n => MetricKind::Unknown(n),
        }
    }

    /// The number the store keeps for this kind (an unknown kind keeps the
    /// number it came with).
    pub fn code(self) -> i32 {
        match self {
            MetricKind::Gauge => Self::GAUGE_CODE,
            MetricKind::Counter => Self::COUNTER_CODE,
            MetricKind::Delta => Self::DELTA_CODE,
            MetricKind::Unknown(n) => n,
        }
    }

    /// Whether values count events (counter or delta), so must be ≥ 0.
    pub fn is_count(self) -> bool {
        matches!(self, MetricKind::Counter | MetricKind::Delta)
    }
}

/// One measurement of one metric of one backend, as ingest validates it.
///
/// Built with [`Sample::new`] (and [`Sample::with_labels`]); the writer
/// checks it against the cluster registry, the series state and the clock
/// ([`crate::ingest::Writer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Cluster the backend belongs to.
    pub cluster: String,
    /// Backend name.
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// How the values are read.
    pub kind: MetricKind,
    /// Extra labels (part of the series identity).
    pub labels: BTreeMap<String, String>,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// A sample without labels.
    pub fn new(
        cluster: impl Into<String>,
        backend: impl Into<String>,
        metric: impl Into<String>,
        kind: MetricKind,
        timestamp_ms: i64,
        value: f64,
    ) -> Sample {
        Sample {
            cluster: cluster.into(),
            backend: backend.into(),
            metric: metric.into(),
            kind,
            labels: BTreeMap::new(),
            timestamp_ms,
            value,
        }
    }

    /// The same sample with `labels`.
    pub fn with_labels(self, labels: BTreeMap<String, String>) -> Sample {
        Sample { labels, ..self }
    }
}

/// Why the writer refused a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The cluster is not configured.
    UnknownCluster,
    /// The backend is not configured in the cluster.
    UnknownBackend,
    /// The value is NaN or infinite.
    NotFinite,
    /// A counter or delta value is negative.
    NegativeCounter,
    /// The timestamp is not after the series' previous accepted sample.
    OutOfOrder,
    /// The timestamp is too far ahead of the server's clock.
    FarFuture,
    /// The timestamp is older than the retention window.
    TooOld,
    /// Too many labels, a label key or value too long, or a bad label.
    LabelsTooLarge,
    /// The metric name (or its kind) is not valid.
    InvalidMetricName,
    /// The batch has more samples than the server accepts.
    BatchTooLarge,
    /// The store failed to write the batch.
    StorageError,
    /// The sample would start a new series beyond `limits.max_series` or
    /// `limits.max_series_per_cluster` (existing series keep being accepted).
    SeriesLimit,
    /// The client sent more samples per second than
    /// `limits.ingest_samples_per_second` allows; retry later.
    RateLimited,
}

impl RejectReason {
    /// Every reason, in the order of the aya.v1 enum.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::UnknownCluster,
        RejectReason::UnknownBackend,
        RejectReason::NotFinite,
        RejectReason::NegativeCounter,
        RejectReason::OutOfOrder,
        RejectReason::FarFuture,
        RejectReason::TooOld,
        RejectReason::LabelsTooLarge,
        RejectReason::InvalidMetricName,
        RejectReason::BatchTooLarge,
        RejectReason::StorageError,
        RejectReason::SeriesLimit,
        RejectReason::RateLimited,
    ];

    /// Position in [`ALL`](Self::ALL) (e.g. to index per-reason counters).
    pub fn index(self) -> usize {
        match self {
            RejectReason::UnknownCluster => 0,
            RejectReason::UnknownBackend => 1,
            RejectReason::NotFinite => 2,
            RejectReason::NegativeCounter => 3,
            RejectReason::OutOfOrder => 4,
            RejectReason::FarFuture => 5,
            RejectReason::TooOld => 6,
            RejectReason::LabelsTooLarge => 7,
            RejectReason::InvalidMetricName => 8,
            RejectReason::BatchTooLarge => 9,
            RejectReason::StorageError => 10,
            RejectReason::SeriesLimit => 11,
            RejectReason::RateLimited => 12,
        }
    }

    /// Snake-case name (`unknown_backend`), the `reason` label of the
    /// rejection counter.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownCluster => "unknown_cluster",
            RejectReason::UnknownBackend => "unknown_backend",
            RejectReason::NotFinite => "not_finite",
            RejectReason::NegativeCounter => "negative_counter",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::FarFuture => "far_future",
            RejectReason::TooOld => "too_old",
            RejectReason::LabelsTooLarge => "labels_too_large",
            RejectReason::InvalidMetricName => "invalid_metric_name",
            RejectReason::BatchTooLarge => "batch_too_large",
            RejectReason::StorageError => "storage_error",
            RejectReason::SeriesLimit => "series_limit",
            RejectReason::RateLimited => "rate_limited",
        }
    }
}

/// A refused sample: the reason and a message naming the field and value at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// What, naming the offending field and value.
    pub message: String,
}

impl Rejection {
    /// A rejection for `reason` with `message`.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// The writer's answer for one sample: stored, or why not.
pub type Outcome = Result<(), Rejection>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_store_numbers_and_unknown_numbers() {
        for k in [MetricKind::Gauge, MetricKind::Counter, MetricKind::Delta] {
            assert_eq!(MetricKind::from_code(k.code()), k);
        }
        assert_eq!(MetricKind::from_code(0), MetricKind::Gauge);
        assert_eq!(MetricKind::from_code(7), MetricKind::Unknown(7));
        assert_eq!(MetricKind::Unknown(-2).code(), -2);
        assert!(MetricKind::Counter.is_count() && MetricKind::Delta.is_count());
        assert!(!MetricKind::Gauge.is_count());
    }

    #[test]
    fn reasons_are_indexed_in_order_and_named() {
        for (i, r) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        assert_eq!(RejectReason::UnknownBackend.as_str(), "unknown_backend");
        let s = Sample::new("c", "b", "m", MetricKind::Gauge, 1, 2.0)
            .with_labels(BTreeMap::from([("k".to_string(), "v".to_string())]));
        assert_eq!(s.labels.len(), 1);
        let r = Rejection::new(RejectReason::TooOld, "old");
        assert_eq!(r.to_string(), "old");
    }
}
