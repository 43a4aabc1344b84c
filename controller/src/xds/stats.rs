//! Counters of the xDS server, shared by every ADS stream and exported on
//! `/metrics` by the service.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::metrics::ConstSumCount;

/// The last NACK received: what was rejected and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackRecord {
    /// Node id of the client that rejected the response (empty if unknown).
    pub node: String,
    /// Type URL of the rejected response.
    pub type_url: String,
    /// Nonce of the rejected response.
    pub nonce: String,
    /// Version the client still runs (its last accepted one).
    pub accepted_version: String,
    /// The client's error message (`error_detail.message`).
    pub message: String,
}

/// Live counters of the ADS server. All counters only increase, except
/// `streams_connected`, which is a gauge.
#[derive(Debug, Default)]
pub struct XdsStats {
    requests: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
    pushes: AtomicU64,
    stale: AtomicU64,
    unknown_type: AtomicU64,
    streams_total: AtomicU64,
    streams_connected: AtomicU64,
    ack_latency_micros_sum: AtomicU64,
    ack_latency_micros_last: AtomicU64,
    last_nack: Mutex<Option<NackRecord>>,
}

/// A consistent-enough copy of [`XdsStats`] (each field read atomically).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XdsStatsSnapshot {
    /// `DiscoveryRequest`s received.
    pub requests: u64,
    /// Requests that acknowledged the last response of their type.
    pub acks: u64,
    /// Requests that rejected a response (`error_detail` set).
    pub nacks: u64,
    /// `DiscoveryResponse`s sent.
    pub pushes: u64,
    /// Requests ignored because they answered an older response (stale nonce).
    pub stale: u64,
    /// Requests for a resource type Aya does not serve.
    pub unknown_type: u64,
    /// ADS streams opened since start.
    pub streams_total: u64,
    /// ADS streams open now.
    pub streams_connected: u64,
    /// Sum of push-to-ACK delays over all ACKs, microseconds.
    pub ack_latency_micros_sum: u64,
    /// Push-to-ACK delay of the latest ACK, microseconds.
    pub ack_latency_micros_last: u64,
    /// The latest NACK, if any.
    pub last_nack: Option<NackRecord>,
}

impl XdsStats {
    /// Fresh, zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copy every counter.
    pub fn snapshot(&self) -> XdsStatsSnapshot {
        XdsStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            nacks: self.nacks.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            unknown_type: self.unknown_type.load(Ordering::Relaxed),
            streams_total: self.streams_total.load(Ordering::Relaxed),
            streams_connected: self.streams_connected.load(Ordering::Relaxed),
            ack_latency_micros_sum: self.ack_latency_micros_sum.load(Ordering::Relaxed),
            ack_latency_micros_last: self.ack_latency_micros_last.load(Ordering::Relaxed),
            last_nack: self.last_nack(),
        }
    }

    /// NACKs received so far.
    pub fn nacks(&self) -> u64 {
        self.nacks.load(Ordering::Relaxed)
    }

    /// ACKs received so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// The latest NACK, if any.
    pub fn last_nack(&self) -> Option<NackRecord> {
        self.last_nack
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Register the counters (metric family names prefixed `aya_xds_`) in
    /// `registry`, with their values now, for the service's `/metrics`
    /// endpoint.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let s = self.snapshot();
        let counters: [(&str, &str, u64); 7] = [
            (
                "aya_xds_requests",
                "xDS DiscoveryRequests received",
                s.requests,
            ),
            ("aya_xds_acks", "xDS responses acknowledged", s.acks),
            (
                "aya_xds_nacks",
                "xDS responses rejected by a client (NACK)",
                s.nacks,
            ),
            ("aya_xds_pushes", "xDS DiscoveryResponses sent", s.pushes),
            (
                "aya_xds_stale_requests",
                "xDS requests ignored for a stale nonce",
                s.stale,
            ),
            (
                "aya_xds_unknown_type_requests",
                "xDS requests for a type Aya does not serve",
                s.unknown_type,
            ),
            ("aya_xds_streams", "ADS streams opened", s.streams_total),
        ];
        for (name, help, value) in counters {
            registry.register(name, help, ConstCounter::new(value));
        }
        registry.register(
            "aya_xds_ack_latency_microseconds",
            "Push-to-ACK delays",
            ConstSumCount {
                sum: s.ack_latency_micros_sum as f64,
                count: s.acks,
            },
        );
        registry.register(
            "aya_xds_streams_connected",
            "ADS streams open now",
            ConstGauge::new(i64::try_from(s.streams_connected).unwrap_or(i64::MAX)),
        );
    }

    /// The counters alone in the OpenMetrics text format.
    pub fn write_prometheus(&self, out: &mut String) {
        let mut registry = Registry::default();
        self.register_metrics(&mut registry);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(out, &registry);
    }

    pub(crate) fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_ack(&self, latency_micros: u64) {
        self.ack_latency_micros_sum
            .fetch_add(latency_micros, Ordering::Relaxed);
        self.ack_latency_micros_last
            .store(latency_micros, Ordering::Relaxed);
        self.acks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_nack(&self, record: NackRecord) {
        *self.last_nack.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_push(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_unknown_type(&self) {
        self.unknown_type.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_opened(&self) {
        self.streams_total.fetch_add(1, Ordering::Relaxed);
        self.streams_connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_closed(&self) {
        // Saturating: never wraps below zero even if called out of pairs.
        let _ = self
            .streams_connected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
}
