//! Counters of the security layer and the configured limits, appended to
//! `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::LimitsConfig;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeniedLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnLabels {
    listener: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    denied: Family<DeniedLabels, Counter>,
    open: Family<ListenerLabels, Gauge>,
    closed: Family<ConnLabels, Counter>,
    accept_errors: Family<ConnLabels, Counter>,
    limit: Family<LimitLabels, Gauge>,
    limit_hits: Family<LimitLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
}

/// Handles to the security counters (cheap to clone, shared).
#[derive(Debug, Clone)]
pub struct SecurityMetrics(Arc<Inner>);

impl SecurityMetrics {
    /// New counters; the configured `limits` are exported as `aya_limit`.
    pub fn new(limits: &LimitsConfig) -> Self {
        let mut registry = Registry::default();
        let denied = Family::<DeniedLabels, Counter>::default();
        let open = Family::<ListenerLabels, Gauge>::default();
        let closed = Family::<ConnLabels, Counter>::default();
        let accept_errors = Family::<ConnLabels, Counter>::default();
        let limit = Family::<LimitLabels, Gauge>::default();
        let limit_hits = Family::<LimitLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "aya_auth_denied",
            "Requests refused by authentication (reason unauthenticated) or authorization (permission_denied)",
            denied.clone(),
        );
        registry.register(
            "aya_connections_open",
            "Open connections per listener",
            open.clone(),
        );
        registry.register(
            "aya_connections_refused",
            "Connections closed by a limit: max_connections, handshake_timeout, handshake_failed, idle_timeout",
            closed.clone(),
        );
        registry.register(
            "aya_accept_errors",
            "Accept errors per listener; fd_exhausted (EMFILE/ENFILE) makes the accept loop back off",
            accept_errors.clone(),
        );
        registry.register(
            "aya_limit",
            "Configured value of each limit ([limits] in aya.toml)",
            limit.clone(),
        );
        registry.register(
            "aya_limit_rejections",
            "Requests refused because a limit was reached",
            limit_hits.clone(),
        );
        registry.register(
            "aya_tls_reloads",
            "Certificate reloads (result ok or error; an error keeps the previous certificates)",
            reloads.clone(),
        );
        for (name, v) in [
            ("max_connections", limits.max_connections as i64),
            (
                "max_concurrent_streams",
                i64::from(limits.max_concurrent_streams),
            ),
            (
                "handshake_timeout_ms",
                (limits.handshake_timeout_seconds * 1e3).round() as i64,
            ),
            (
                "idle_timeout_ms",
                (limits.idle_timeout_seconds * 1e3).round() as i64,
            ),
            (
                "keepalive_interval_ms",
                (limits.keepalive_interval_seconds * 1e3).round() as i64,
            ),
            (
                "keepalive_timeout_ms",
                (limits.keepalive_timeout_seconds * 1e3).round() as i64,
            ),
            ("max_clusters", limits.max_clusters as i64),
            (
                "max_backends_per_cluster",
                limits.max_backends_per_cluster as i64,
            ),
            ("max_series", limits.max_series as i64),
            (
                "max_series_per_cluster",
                limits.max_series_per_cluster as i64,
            ),
            (
                "ingest_samples_per_second",
                limits.ingest_samples_per_second.round() as i64,
            ),
            (
                "admin_requests_per_second",
                limits.admin_requests_per_second.round() as i64,
            ),
        ] {
            limit.get_or_create(&LimitLabels { limit: name }).set(v);
            // Create the series so every limit shows with a zero count.
            let _ = limit_hits.get_or_create(&LimitLabels { limit: name });
        }
        SecurityMetrics(Arc::new(Inner {
            registry,
            denied,
            open,
            closed,
            accept_errors,
            limit,
            limit_hits,
            reloads,
        }))
    }

    /// A request refused on `listener` (`grpc`, `http`) for `reason`.
    pub fn denied(&self, listener: &'static str, reason: &'static str) {
        self.0
            .denied
            .get_or_create(&DeniedLabels { listener, reason })
            .inc();
    }

    /// A connection opened (`+1`) or closed (`-1`) on `listener`.
    pub fn connection(&self, listener: &'static str, delta: i64) {
        self.0
            .open
            .get_or_create(&ListenerLabels { listener })
            .inc_by(delta);
    }

    /// Open connections on `listener`.
    pub fn open_connections(&self, listener: &'static str) -> i64 {
        self.0
            .open
            .get_or_create(&ListenerLabels { listener })
            .get()
    }

    /// A connection closed by a limit.
    pub fn refused(&self, listener: &'static str, reason: &'static str) {
        self.0
            .closed
            .get_or_create(&ConnLabels { listener, reason })
            .inc();
    }

    /// Connections closed on `listener` for `reason` so far.
    pub fn refused_count(&self, listener: &'static str, reason: &'static str) -> u64 {
        self.0
            .closed
            .get_or_create(&ConnLabels { listener, reason })
            .get()
    }

    /// An accept error (`fd_exhausted` or `other`).
    pub fn accept_error(&self, listener: &'static str, reason: &'static str) {
        self.0
            .accept_errors
            .get_or_create(&ConnLabels { listener, reason })
            .inc();
    }

    /// A request refused by `limit`.
    pub fn limit_hit(&self, limit: &'static str) {
        self.0
            .limit_hits
            .get_or_create(&LimitLabels { limit })
            .inc();
    }

    /// A certificate reload attempt.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.0.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Successful certificate reloads so far.
    pub fn reloads_ok(&self) -> u64 {
        self.0
            .reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .get()
    }

    /// The OpenMetrics text of these counters (ends with `# EOF`).
    pub fn render(&self) -> String {
        let _ = &self.0.limit;
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}
