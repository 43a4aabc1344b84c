//! Which attribute names the cluster and the backend, and which source
//! metric feeds which Aya metric: a serde struct a configuration can embed,
//! with defaults for Envoy's OpenTelemetry stats sink, OpenTelemetry SDKs
//! using the semantic conventions, and Prometheus remote-write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Aya metric a histogram maps to: it yields `latency_p50_seconds`,
/// `latency_p90_seconds`, `latency_p99_seconds`, `requests_total` (the count)
/// and `error_rate` (from the count of points carrying an error attribute).
pub const LATENCY: &str = "latency_seconds";
/// Target name that drops a source metric without reporting it.
pub const IGNORE: &str = "ignore";
/// Internal Aya metric: successful requests over the interval (turned into
/// `error_rate` together with `requests_total`; also stored).
pub const SUCCESS_TOTAL: &str = "success_total";
/// Internal Aya metric: failed requests over the interval (turned into
/// `error_rate` together with `requests_total`; also stored).
pub const ERROR_TOTAL: &str = "error_total";

/// How series are mapped onto Aya's clusters, backends and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestMapping {
    /// Attributes (or labels) naming the cluster, tried in order; each is
    /// looked up on the data point, then the scope, then the resource.
    pub cluster_attributes: Vec<String>,
    /// Cluster used when none of `cluster_attributes` is present (empty:
    /// such points are rejected).
    pub default_cluster: String,
    /// Mapping used for clusters not in `clusters`.
    pub default: ClusterMapping,
    /// Per-cluster mappings, by Aya cluster name.
    pub clusters: BTreeMap<String, ClusterMapping>,
    /// Most series whose previous value is kept for differencing; a new
    /// series beyond it is rejected (series idle for `series_idle_seconds`
    /// are evicted first).
    pub max_series: usize,
    /// Idle time after which a series' differencing state may be evicted.
    pub series_idle_seconds: f64,
    /// Report points of metrics with no mapping in `partial_success`
    /// (false: they are dropped silently, as Envoy sends hundreds of stats).
    pub report_unmapped: bool,
}

/// How one cluster's series are mapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterMapping {
    /// Ways to name the backend, tried in order: each is a list of attributes
    /// whose values are joined with `:` (e.g. `["server.address",
    /// "server.port"]` gives `10.0.0.7:8080`). The result is matched against
    /// the cluster's backend names, then their addresses.
    pub backend_attributes: Vec<Vec<String>>,
    /// Source metric name → Aya metric name (`latency_seconds` for a
    /// histogram, `ignore` to drop). Entries here override the built-in table.
    pub metrics: BTreeMap<String, String>,
    /// Whether the built-in table applies (under `metrics`).
    pub builtin_metrics: bool,
    /// Derive `latency_mean_seconds` by Little's law (`in_flight` over the
    /// request rate of the same export) for a backend whose export carries
    /// no latency histogram: Envoy's per-endpoint stats have no latency, and
    /// this is how the engine gets a per-backend cost from Envoy alone.
    pub derive_latency: bool,
}

impl Default for ClusterMapping {
    fn default() -> Self {
        ClusterMapping {
            backend_attributes: vec![
                vec!["aya.backend".into()],
                vec!["envoy.endpoint_address".into()],
                vec!["server.address".into(), "server.port".into()],
                vec!["service.instance.id".into()],
                vec!["host.name".into()],
            ],
            metrics: BTreeMap::new(),
            builtin_metrics: true,
            derive_latency: true,
        }
    }
}

impl Default for IngestMapping {
    /// Defaults for OTLP: Envoy's stats sink and OpenTelemetry SDKs.
    fn default() -> Self {
        IngestMapping {
            cluster_attributes: vec![
                "aya.cluster".into(),
                "envoy.cluster_name".into(),
                "service.name".into(),
            ],
            default_cluster: String::new(),
            default: ClusterMapping::default(),
            clusters: BTreeMap::new(),
            max_series: 100_000,
            series_idle_seconds: 600.0,
            report_unmapped: false,
        }
    }
}

/// OpenTelemetry semantic conventions and Envoy's OTel stats sink names.
pub const OTLP_BUILTIN: &[(&str, &str)] = &[
    // Envoy, `track_cluster_stats.per_endpoint_stats: true`, attributes
    // `envoy.cluster_name` and `envoy.endpoint_address`.
    ("cluster.endpoint.rq_total", "requests_total"),
    ("cluster.endpoint.rq_success", SUCCESS_TOTAL),
    ("cluster.endpoint.rq_error", ERROR_TOTAL),
    ("cluster.endpoint.rq_active", "in_flight"),
    ("cluster.endpoint.cx_active", "connections_active"),
    ("cluster.endpoint.healthy", "healthy"),
    // OpenTelemetry semantic conventions.
    ("http.server.request.duration", LATENCY),
    ("http.server.active_requests", "in_flight"),
    ("rpc.server.duration", LATENCY),
    ("process.cpu.utilization", "cpu_utilization"),
    ("system.cpu.utilization", "cpu_utilization"),
    ("container.cpu.utilization", "cpu_utilization"),
    ("system.memory.utilization", "memory_utilization"),
    ("process.memory.utilization", "memory_utilization"),
];

/// Prometheus names (remote-write): Envoy's `/stats/prometheus` and the
/// OpenTelemetry conventions as Prometheus exporters spell them. Histograms
/// are named by their base name (`_bucket` series carry `le`).
pub const PROMETHEUS_BUILTIN: &[(&str, &str)] = &[
    ("envoy_cluster_endpoint_rq_total", "requests_total"),
    ("envoy_cluster_endpoint_rq_success", SUCCESS_TOTAL),
    ("envoy_cluster_endpoint_rq_error", ERROR_TOTAL),
    ("envoy_cluster_endpoint_rq_active", "in_flight"),
    ("envoy_cluster_endpoint_cx_active", "connections_active"),
    ("envoy_cluster_endpoint_healthy", "healthy"),
    ("http_server_request_duration_seconds", LATENCY),
    ("http_server_active_requests", "in_flight"),
    ("http_requests_total", "requests_total"),
    ("process_cpu_utilization", "cpu_utilization"),
    ("process_cpu_utilization_ratio", "cpu_utilization"),
    ("system_cpu_utilization_ratio", "cpu_utilization"),
    ("system_memory_utilization_ratio", "memory_utilization"),
];

impl IngestMapping {
    /// Defaults for Prometheus remote-write: the cluster from `aya_cluster`,
    /// `envoy_cluster_name` or `job`, the backend from `aya_backend`,
    /// `envoy_endpoint_address` or `instance`.
    pub fn prometheus() -> Self {
        IngestMapping {
            cluster_attributes: vec![
                "aya_cluster".into(),
                "envoy_cluster_name".into(),
                "job".into(),
            ],
            default: ClusterMapping {
                backend_attributes: vec![
                    vec!["aya_backend".into()],
                    vec!["envoy_endpoint_address".into()],
                    vec!["instance".into()],
                ],
                ..ClusterMapping::default()
            },
            ..IngestMapping::default()
        }
    }

    /// The mapping of `cluster`.
    pub fn cluster(&self, cluster: &str) -> &ClusterMapping {
        self.clusters.get(cluster).unwrap_or(&self.default)
    }

    /// Check the values. The error names the field at fault (relative to
    /// the mapping, e.g. `clusters.web.metrics."app.requests"`) and says
    /// what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if self.max_series == 0 {
            return err("max_series", "must be at least 1".into());
        }
        if !(self.series_idle_seconds.is_finite() && self.series_idle_seconds > 0.0) {
            return err(
                "series_idle_seconds",
                format!("must be finite and > 0, got {}", self.series_idle_seconds),
            );
        }
        if let Some(i) = self.cluster_attributes.iter().position(|a| a.is_empty()) {
            return err(
                &format!("cluster_attributes[{i}]"),
                "an attribute name must not be empty".into(),
            );
        }
        if self.cluster_attributes.is_empty() && self.default_cluster.is_empty() {
            return err(
                "cluster_attributes",
                "is empty and default_cluster is not set: no point could name its cluster".into(),
            );
        }
        if !self.default_cluster.is_empty() && !crate::config::valid_name(&self.default_cluster) {
            return err(
                "default_cluster",
                format!(
                    "{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]",
                    self.default_cluster
                ),
            );
        }
        self.default
            .validate()
            .map_err(|(sub, msg)| (format!("default.{sub}"), msg))?;
        for (name, m) in &self.clusters {
            let f = if name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
            {
                format!("clusters.{name}")
            } else {
                format!("clusters.{name:?}")
            };
            if !crate::config::valid_name(name) {
                return err(
                    &f,
                    format!(
                        "{name:?} is not a cluster name (1..=128 characters of [A-Za-z0-9_.:-])"
                    ),
                );
            }
            m.validate()
                .map_err(|(sub, msg)| (format!("{f}.{sub}"), msg))?;
        }
        Ok(())
    }
}

/// Whether `name` is a metric name ingest accepts: 1..=128 bytes of
/// `[A-Za-z0-9_:.]`.
pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'.'))
}

impl ClusterMapping {
    /// Check the values; the error names the field relative to this mapping.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.backend_attributes.is_empty() {
            return Err((
                "backend_attributes".into(),
                "is empty: no point could name its backend".into(),
            ));
        }
        for (i, parts) in self.backend_attributes.iter().enumerate() {
            if parts.is_empty() {
                return Err((
                    format!("backend_attributes[{i}]"),
                    "is an empty list (give one attribute, or several joined with ':')".into(),
                ));
            }
            if let Some(j) = parts.iter().position(|p| p.is_empty()) {
                return Err((
                    format!("backend_attributes[{i}][{j}]"),
                    "an attribute name must not be empty".into(),
                ));
            }
        }
        for (source, target) in &self.metrics {
            if source.is_empty() {
                return Err((
                    "metrics".into(),
                    "a source metric name must not be empty".into(),
                ));
            }
            if !(target == IGNORE || target == LATENCY || valid_metric_name(target)) {
                return Err((
                    format!("metrics.{source:?}"),
                    format!(
                        "{target:?} is not an Aya metric name (1..=128 bytes of [A-Za-z0-9_:.]), \
                         {LATENCY:?} (a histogram) or {IGNORE:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The Aya metric `source` maps to, if any (`table` is the built-in one).
    pub fn target<'a>(&'a self, source: &str, table: &'a [(&'a str, &'a str)]) -> Option<&'a str> {
        if let Some(t) = self.metrics.get(source) {
            return Some(t.as_str());
        }
        if !self.builtin_metrics {
            return None;
        }
        table.iter().find(|(s, _)| *s == source).map(|(_, t)| *t)
    }
}

/// Whether an Aya metric name counts events (differenced into deltas).
pub fn is_count(metric: &str) -> bool {
    metric.ends_with("_total")
}
