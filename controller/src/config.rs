//! Service configuration: a TOML file, overridden by flags and `AYA_*`
//! environment variables (see `cli::ServeArgs`).
//!
//! Every key has a default, so an empty file (or none) gives a working
//! controller with no clusters; clusters can then be added through the admin API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use aya_policy::LbAlgorithm;
use serde::{Deserialize, Serialize};

/// Errors reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type (the message names line and key).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `clusters[0].backends[1].address`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The whole service configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (aya.v1, xDS, KEDA, health).
    pub listen: String,
    /// Prometheus `/metrics` HTTP listen address; empty disables it.
    pub metrics_listen: String,
    /// Data directory (the redb store `aya.redb` lives there).
    pub data_dir: PathBuf,
    /// Seconds between control ticks.
    pub tick_interval_seconds: f64,
    /// Metric history older than this is deleted (and rejected on ingest).
    pub retention_seconds: f64,
    /// Seconds between retention sweeps.
    pub retention_check_seconds: f64,
    /// Samples more than this ahead of the server clock are rejected.
    pub max_future_skew_seconds: f64,
    /// Largest batch accepted on the ingest stream.
    pub max_batch_samples: usize,
    /// Batches queued for the store writer before ingest streams are slowed down.
    pub ingest_queue_batches: usize,
    /// Observations older than this are treated as absent by the control loop.
    pub stale_after_seconds: f64,
    /// Policy used by clusters that do not name one.
    pub default_policy: String,
    /// Forecast horizon, in forecaster steps.
    pub forecast_horizon: usize,
    /// Grid step of the demand forecaster, seconds (0 disables forecasting).
    pub forecast_step_seconds: f64,
    /// Seconds between guarded background retrains of each cluster's demand
    /// model from its stored history (0 disables them; the forecaster then
    /// reselects inline on its own schedule, like the simulator's).
    pub retrain_interval_seconds: f64,
    /// Holdout origins on which a retrain's candidate and the current model
    /// are both backtested.
    pub retrain_holdout_origins: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log_filter: String,
    /// OTLP metrics ingest: which attribute names the cluster and the
    /// backend, which source metric feeds which Aya metric, per cluster
    /// (`[otlp.clusters.NAME]`), with built-in defaults for Envoy's
    /// OpenTelemetry stats sink and the OpenTelemetry semantic conventions
    /// (docs/otlp.md).
    pub otlp: crate::otlp::IngestMapping,
    /// An extra listener serving only OTLP `MetricsService/Export` (e.g.
    /// `127.0.0.1:4317`, the OTLP/gRPC default port); empty: OTLP is served
    /// on `listen` only.
    pub otlp_listen: String,
    /// Clusters declared in the file. On start, clusters already in the store
    /// (including admin API changes) are kept as stored; the others are added.
    pub clusters: Vec<ClusterConfig>,
    /// `aya serve --init`: create a new, empty store where none is (an
    /// existing data directory without `aya.redb`, or a zero-length one).
    /// Not a file key: only the command line sets it. Never overwrites a
    /// non-empty store.
    #[serde(skip)]
    pub init: bool,
    /// Optional separate listener for the mutating admin RPCs (empty: they
    /// are served on `listen`). When set, `listen` refuses them.
    pub admin_listen: String,
    /// Serve without authentication on a non-loopback address. Without it a
    /// non-loopback `listen`, `metrics_listen` or `admin_listen` and no
    /// `[auth]` credentials is refused at start.
    pub insecure: bool,
    /// Bearer tokens and certificate identities, mapped to roles.
    pub auth: AuthConfig,
    /// TLS (and mTLS) on every listener; `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Resource limits of the listeners and the cluster registry.
    pub limits: LimitsConfig,
    /// `[[haproxy]]`: HAProxy backends steered through their runtime API,
    /// one entry per (cluster, HAProxy backend) (docs/haproxy.md). Read from
    /// the file at every start (not stored), so they may name clusters
    /// added through the admin API.
    pub haproxy: Vec<crate::haproxy::HaproxyConfig>,
    /// `[anomaly]`: streaming anomaly detection on every ingested series
    /// (docs/anomaly.md).
    pub anomaly: crate::anomaly::AnomalyConfig,
    /// `[ha]`: run as one replica of a group on etcd (docs/ha.md); `None`:
    /// a single replica.
    pub ha: Option<crate::ha::HaConfig>,
}

/// A role: what a credential may call (see `crate::auth::RPC_ROLES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Data planes: aya.v1 Watch/GetSnapshot, Envoy ADS, KEDA external scaler.
    Watch,
    /// aya.v1 Ingest, OTLP Export, Prometheus remote-write.
    Ingest,
    /// Mutating admin RPCs (clusters, backends, overrides).
    Admin,
    /// History, forecasts, cluster list, stats, `/metrics`.
    Read,
}

impl Role {
    /// The name used in `aya.toml` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Watch => "watch",
            Role::Ingest => "ingest",
            Role::Admin => "admin",
            Role::Read => "read",
        }
    }
}

/// `[auth]`: who may call what.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`: bearer tokens (`authorization: Bearer TOKEN`).
    pub tokens: Vec<TokenConfig>,
    /// `[[auth.identities]]`: client-certificate identities (mTLS), by
    /// subject CN or a DNS/URI SAN.
    pub identities: Vec<IdentityConfig>,
    /// Serve `/metrics` without credentials even when auth is on (by
    /// default it needs the `read` role).
    pub public_metrics: bool,
}

/// One bearer token. Its value is never logged (`Debug` redacts it).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The identity requests with this token act as (audit lines name it).
    pub name: String,
    /// Roles granted.
    pub roles: Vec<Role>,
    /// The token itself (give this or `token_file`).
    #[serde(default)]
    pub token: String,
    /// A file holding the token (surrounding whitespace is trimmed); read at start.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// One client-certificate identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Matched against the certificate's subject CN and its DNS and URI SANs.
    pub subject: String,
    /// Roles granted.
    pub roles: Vec<Role>,
}

/// `[tls]`: certificate and key (PEM) of every listener, optional client CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM (leaf first).
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle, PEM: when set, every client must present a certificate it
    /// signed (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Seconds between checks of the files' modification times; changed
    /// files are reloaded without a restart (new handshakes use them).
    #[serde(default = "default_reload")]
    pub reload_check_seconds: f64,
}

fn default_reload() -> f64 {
    10.0
}

/// `[limits]`: bounds on connections and on the cluster registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections per listener; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams per gRPC connection.
    pub max_concurrent_streams: u32,
    /// Seconds a new connection has to finish its TLS handshake (or, in
    /// plaintext, send the HTTP/2 preface).
    pub handshake_timeout_seconds: f64,
    /// A connection from which nothing was read for this long is closed
    /// (live HTTP/2 peers answer the keepalive pings).
    pub idle_timeout_seconds: f64,
    /// Seconds between HTTP/2 keepalive pings on the gRPC listener.
    pub keepalive_interval_seconds: f64,
    /// Seconds to wait for a ping's answer before closing the connection.
    pub keepalive_timeout_seconds: f64,
    /// Clusters the registry holds (file and admin API).
    pub max_clusters: usize,
    /// Backends one cluster holds.
    pub max_backends_per_cluster: usize,
    /// Series (cluster, backend, metric, kind, labels) the service tracks in
    /// all; a sample that would start one more is rejected (`SERIES_LIMIT`).
    pub max_series: usize,
    /// Series one cluster may have.
    pub max_series_per_cluster: usize,
    /// Samples per second one client may ingest (aya.v1 ingest and OTLP),
    /// token bucket with a burst of one second's worth; 0 turns it off. A
    /// client is its token or certificate identity, else its IP address.
    pub ingest_samples_per_second: f64,
    /// Admin requests (cluster, backend and override changes, retrains)
    /// per second one client may make, burst of
    /// `max(1, 2 × rate)`; 0 turns it off.
    pub admin_requests_per_second: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1024,
            max_concurrent_streams: 256,
            handshake_timeout_seconds: 10.0,
            idle_timeout_seconds: 300.0,
            keepalive_interval_seconds: 30.0,
            keepalive_timeout_seconds: 20.0,
            max_clusters: 1000,
            max_backends_per_cluster: 1000,
            max_series: 1_000_000,
            max_series_per_cluster: 100_000,
            ingest_samples_per_second: 5_000_000.0,
            admin_requests_per_second: 20.0,
        }
    }
}

impl AuthConfig {
    /// Whether any credential is configured (tokens or identities).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.identities.is_empty()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9464".into(),
            data_dir: PathBuf::from("aya-data"),
            tick_interval_seconds: 5.0,
            retention_seconds: 7.0 * 86_400.0,
            retention_check_seconds: 60.0,
            max_future_skew_seconds: 60.0,
            max_batch_samples: 100_000,
            ingest_queue_batches: 64,
            stale_after_seconds: 60.0,
            default_policy: "aya".into(),
            forecast_horizon: 12,
            forecast_step_seconds: 60.0,
            retrain_interval_seconds: 3600.0,
            retrain_holdout_origins: 4,
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            otlp: crate::otlp::IngestMapping::default(),
            otlp_listen: String::new(),
            clusters: Vec::new(),
            init: false,
            admin_listen: String::new(),
            insecure: false,
            auth: AuthConfig::default(),
            tls: None,
            limits: LimitsConfig::default(),
            haproxy: Vec::new(),
            anomaly: crate::anomaly::AnomalyConfig::default(),
            ha: None,
        }
    }
}

/// One cluster (a service with interchangeable backends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name (the Envoy cluster name).
    pub name: String,
    /// Policy name; empty means `default_policy`.
    #[serde(default)]
    pub policy: String,
    /// Parameters of the policy (a table; keys as documented by the policy).
    #[serde(default)]
    pub policy_params: serde_json::Map<String, serde_json::Value>,
    /// Algorithm published before the policy decides and by the static policy.
    #[serde(default = "default_algorithm")]
    pub algorithm: LbAlgorithm,
    /// Minimum replicas (default 1).
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Maximum replicas (default: the number of backends, at least 1; an
    /// explicit 0 in a file is refused).
    #[serde(default, deserialize_with = "max_replicas_nonzero")]
    pub max_replicas: u32,
    /// Seconds from scale-up to ready.
    #[serde(default = "default_boot")]
    pub boot_time_seconds: f64,
    /// Backends.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Where the demand history comes from when the store has too little of
    /// it at start (`[clusters.warm_start]`). Read from the configuration
    /// file at every start (see `Controller::warm_start_all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<WarmStart>,
    /// Known events the cluster's forecaster uses (`[clusters.events]`,
    /// docs/events.md): a calendar file, and the events added over the
    /// admin API.
    #[serde(default, skip_serializing_if = "ClusterEvents::is_empty")]
    pub events: ClusterEvents,
    /// `[clusters.orca]`: read the backends' ORCA load reports (gRFC A51,
    /// `OpenRcaService/StreamCoreMetrics`) as their metrics, one out-of-band
    /// stream per backend (docs/orca.md). Read from the configuration file
    /// at every start and reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orca: Option<crate::orca::OrcaConfig>,
}

/// Most events the admin API may add to one cluster.
pub const MAX_ADDED_EVENTS: usize = 10_000;

/// `[clusters.events]`: the cluster's calendar of known events.
///
/// In the configuration file only `file` is written: the service replaces
/// `from_file` with the file's events whenever it reads it (at every start
/// and every reload), and `added` (refused in the file) holds the events
/// added over the admin API (`AdminService.AddEvent`). Both are stored
/// with the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEvents {
    /// A calendar file, CSV (or TOML when its name ends in `.toml`) in the
    /// formats of docs/events.md. A relative path is taken from the
    /// service's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The file's events (recurrences expanded) as last read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_file: Vec<aya_forecaster::events::Event>,
    /// Events added over the admin API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<AddedEvent>,
}

/// An event added over the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedEvent {
    /// Identifier within the cluster (`api-N`), assigned when added.
    pub id: String,
    /// The event.
    pub event: aya_forecaster::events::Event,
}

impl ClusterEvents {
    /// True without file and events.
    pub fn is_empty(&self) -> bool {
        self.file.is_none() && self.from_file.is_empty() && self.added.is_empty()
    }

    /// Every event of the cluster: the file's, then the added ones.
    pub fn calendar(&self) -> aya_forecaster::events::Calendar {
        aya_forecaster::events::Calendar {
            events: self
                .from_file
                .iter()
                .cloned()
                .chain(self.added.iter().map(|a| a.event.clone()))
                .collect(),
        }
    }

    /// Read `file` into `from_file` (`field` names it in errors, e.g.
    /// `clusters[0].events.file`). Without a file, `from_file` is emptied.
    pub fn load_file(&mut self, field: &str) -> Result<(), ConfigError> {
        self.from_file = match &self.file {
            None => Vec::new(),
            Some(path) => {
                aya_forecaster::events::Calendar::load(path)
                    .map_err(|e| invalid(field, e.to_string()))?
                    .events
            }
        };
        Ok(())
    }
}

/// Check one event added over the admin API (`field` names it in errors).
pub fn check_event(field: &str, e: &aya_forecaster::events::Event) -> Result<(), ConfigError> {
    if e.name.trim().is_empty() || e.name.chars().count() > 256 {
        return Err(invalid(
            format!("{field}.name"),
            "must be 1..=256 characters, not only spaces",
        ));
    }
    if e.category.is_empty() || !valid_name(&e.category) {
        return Err(invalid(
            format!("{field}.category"),
            format!(
                "{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]",
                e.category
            ),
        ));
    }
    // Years 1970..=9999: what RFC 3339 can show.
    const MAX_MS: i64 = 253_402_300_799_999;
    for (name, v) in [("start_ms", e.start_ms), ("end_ms", e.end_ms)] {
        if !(0..=MAX_MS).contains(&v) {
            return Err(invalid(
                format!("{field}.{name}"),
                format!("{v} is not a unix time in milliseconds between 1970 and 9999"),
            ));
        }
    }
    if e.end_ms < e.start_ms {
        return Err(invalid(
            format!("{field}.end_ms"),
            format!("{} is before start_ms {}", e.end_ms, e.start_ms),
        ));
    }
    Ok(())
}

/// `[clusters.warm_start]`: a history source for a cluster whose store holds
/// less than `min_stored_points` demand points at start. Exactly one of
/// `prometheus_url` (with `query`), `csv` or `artifact`. The history (or the
/// artifact's model) goes through the guarded retrain: it replaces the
/// cluster's model only if it backtests no worse (docs/prometheus.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmStart {
    /// A Prometheus server (`http://` or `https://`) to read the demand from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// PEM file of the CA that signs an https Prometheus' certificate
    /// (default: the Mozilla root set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_ca: Option<PathBuf>,
    /// File holding a bearer token for Prometheus (read at each warm start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// File holding `user:password` for Prometheus' basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_basic_auth_file: Option<PathBuf>,
    /// The PromQL expression giving the cluster's demand in requests per
    /// second (summed over its backends), e.g. `sum(rate(http_requests_total{job="web"}[5m]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// When the query returns several series: the labels of the one to use.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub series_labels: std::collections::BTreeMap<String, String>,
    /// Drop NaN and infinite values from Prometheus as gaps (default: the
    /// warm start fails on them, naming the first).
    #[serde(default)]
    pub skip_non_finite: bool,
    /// A `timestamp,value` CSV of the demand (any form `aya train --input` reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<PathBuf>,
    /// A model artifact written by `aya train` (at the forecast step): its
    /// model is the candidate, scored on the stored history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<PathBuf>,
    /// Warm-start only when the store has fewer demand points than this in
    /// the forecaster's window (default: one day of forecast steps, at most
    /// the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_stored_points: Option<usize>,
}

impl WarmStart {
    /// Check that exactly one source is named and that it is usable.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let sources = [
            self.prometheus_url.is_some(),
            self.csv.is_some(),
            self.artifact.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                field,
                "give exactly one of prometheus_url (with query), csv or artifact",
            ));
        }
        if let Some(url) = &self.prometheus_url {
            aya_forecaster::data::prometheus::RangeQuery::new(url.clone(), "", 0, 1, 1)
                .endpoint()
                .map_err(|e| invalid(format!("{field}.prometheus_url"), e.to_string()))?;
            if self.query.as_deref().is_none_or(|q| q.trim().is_empty()) {
                return Err(invalid(
                    format!("{field}.query"),
                    "prometheus_url needs a PromQL query giving the demand in requests/s",
                ));
            }
        } else if self.query.is_some()
            || !self.series_labels.is_empty()
            || self.skip_non_finite
            || self.prometheus_ca.is_some()
            || self.prometheus_bearer_token_file.is_some()
            || self.prometheus_basic_auth_file.is_some()
        {
            return Err(invalid(
                field,
                "query, series_labels, skip_non_finite, prometheus_ca, \
                 prometheus_bearer_token_file and prometheus_basic_auth_file go with prometheus_url",
            ));
        }
        for (key, path) in [
            ("prometheus_ca", &self.prometheus_ca),
            (
                "prometheus_bearer_token_file",
                &self.prometheus_bearer_token_file,
            ),
            (
                "prometheus_basic_auth_file",
                &self.prometheus_basic_auth_file,
            ),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                return Err(invalid(
                    format!("{field}.{key}"),
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        for (key, path) in [("csv", &self.csv), ("artifact", &self.artifact)] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(format!("{field}.{key}"), "must not be empty"));
            }
        }
        if self.min_stored_points == Some(0) {
            return Err(invalid(
                format!("{field}.min_stored_points"),
                "must be at least 1 (omit warm_start to never warm-start)",
            ));
        }
        Ok(())
    }
}

/// One backend of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name within the cluster.
    pub name: String,
    /// `host:port` data planes connect to.
    pub address: String,
    /// Weight before data arrives (and under the static policy), ≥ 1.
    #[serde(default = "one", deserialize_with = "weight_hint_nonzero")]
    pub weight_hint: u32,
}

fn one() -> u32 {
    1
}

fn nonzero<'de, D: serde::Deserializer<'de>>(d: D, what: &str) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(serde::de::Error::custom(what));
    }
    Ok(v)
}
fn max_replicas_nonzero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    nonzero(
        d,
        "max_replicas = 0: must be ≥ 1 (omit it for the default, the number of backends)",
    )
}
fn weight_hint_nonzero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    nonzero(d, "weight_hint = 0: must be ≥ 1")
}
fn default_boot() -> f64 {
    30.0
}
fn default_algorithm() -> LbAlgorithm {
    LbAlgorithm::WeightedRoundRobin
}

impl BackendConfig {
    /// Split `address` into host and port.
    pub fn host_port(&self) -> Result<(String, u16), crate::validate::InvalidValue> {
        split_host_port(&self.address)
    }
}

/// Split `host:port` (IPv6 as `[::1]:80`; unbracketed IPv6 is refused; port ≥ 1).
pub fn split_host_port(address: &str) -> Result<(String, u16), crate::validate::InvalidValue> {
    crate::validate::host_port(address, false)
}

impl ClusterConfig {
    /// Fill defaults that depend on other fields and check every value.
    /// `field` is the dotted path used in error messages.
    pub fn normalise(&mut self, field: &str) -> Result<(), ConfigError> {
        if !valid_name(&self.name) {
            return Err(invalid(
                format!("{field}.name"),
                format!(
                    "{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]",
                    self.name
                ),
            ));
        }
        if self.min_replicas == 0 {
            self.min_replicas = 1;
        }
        if self.max_replicas == 0 {
            self.max_replicas = (self.backends.len() as u32).max(self.min_replicas);
        }
        if self.max_replicas > crate::validate::MAX_REPLICAS {
            return Err(invalid(
                format!("{field}.max_replicas"),
                format!(
                    "{} is above the limit {}",
                    self.max_replicas,
                    crate::validate::MAX_REPLICAS
                ),
            ));
        }
        if self.max_replicas < self.min_replicas {
            return Err(invalid(
                format!("{field}.max_replicas"),
                format!(
                    "{} is below min_replicas {}",
                    self.max_replicas, self.min_replicas
                ),
            ));
        }
        if !(self.boot_time_seconds.is_finite()
            && (0.0..=crate::validate::BOOT_TIME_MAX_SECONDS).contains(&self.boot_time_seconds))
        {
            return Err(invalid(
                format!("{field}.boot_time_seconds"),
                format!(
                    "{} is out of range: must be a number of seconds in [0, {}]",
                    self.boot_time_seconds,
                    crate::validate::BOOT_TIME_MAX_SECONDS
                ),
            ));
        }
        if let Some(w) = &self.warm_start {
            w.validate(&format!("{field}.warm_start"))?;
        }
        if let Some(o) = &self.orca {
            o.validate(&format!("{field}.orca"))
                .map_err(|(f, m)| invalid(f, m))?;
        }
        if self.events.added.len() > MAX_ADDED_EVENTS {
            return Err(invalid(
                format!("{field}.events.added"),
                format!(
                    "{} events exceed the limit {MAX_ADDED_EVENTS}",
                    self.events.added.len()
                ),
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, a) in self.events.added.iter().enumerate() {
            let ef = format!("{field}.events.added[{i}]");
            check_event(&ef, &a.event)?;
            if !ids.insert(a.id.as_str()) {
                return Err(invalid(
                    format!("{ef}.id"),
                    format!("duplicate event id {:?}", a.id),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (i, b) in self.backends.iter_mut().enumerate() {
            let bf = format!("{field}.backends[{i}]");
            if !valid_name(&b.name) {
                return Err(invalid(
                    format!("{bf}.name"),
                    format!("{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]", b.name),
                ));
            }
            if !seen.insert(b.name.clone()) {
                return Err(invalid(
                    format!("{bf}.name"),
                    format!("duplicate backend {:?}", b.name),
                ));
            }
            let (host, port) = b
                .host_port()
                .map_err(|m| invalid(format!("{bf}.address"), m))?;
            if !addresses.insert((host.to_ascii_lowercase(), port)) {
                return Err(invalid(
                    format!("{bf}.address"),
                    format!(
                        "duplicate backend address {:?} (another backend of the cluster has it)",
                        b.address
                    ),
                ));
            }
            if b.weight_hint == 0 {
                return Err(invalid(format!("{bf}.weight_hint"), "0: must be ≥ 1"));
            }
        }
        self.backends.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }
}

/// Names of clusters, backends: 1..=128 characters of `[A-Za-z0-9_.:-]`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

/// A token file longer than this is refused (a token has at most 4096
/// characters); the read stops there, so `/dev/zero` or a wrong, huge
/// file is an error instead of an unbounded read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Read a `token_file`, at most [`MAX_TOKEN_FILE_BYTES`] of it.
fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_TOKEN_FILE_BYTES} bytes: not a token file",
            path.display()
        ));
    }
    Ok(text)
}

impl Config {
    /// How the store is opened (`init` → [`crate::store::OpenMode::Init`]).
    pub fn store_open_mode(&self) -> crate::store::OpenMode {
        if self.init {
            crate::store::OpenMode::Init
        } else {
            crate::store::OpenMode::Existing
        }
    }

    /// Parse a TOML document (`path` is only used in error messages).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Check every value and fill derived defaults.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        use crate::validate;
        for (field, v) in [
            ("tick_interval_seconds", self.tick_interval_seconds),
            ("retention_seconds", self.retention_seconds),
            ("retention_check_seconds", self.retention_check_seconds),
            ("max_future_skew_seconds", self.max_future_skew_seconds),
            ("stale_after_seconds", self.stale_after_seconds),
            ("forecast_step_seconds", self.forecast_step_seconds),
            ("retrain_interval_seconds", self.retrain_interval_seconds),
        ] {
            if let Some(b) = validate::seconds_bound(field) {
                validate::seconds(b, v).map_err(|m| invalid(field, m))?;
            }
        }
        if !(1..=validate::MAX_BATCH_SAMPLES).contains(&self.max_batch_samples) {
            return Err(invalid(
                "max_batch_samples",
                format!(
                    "{} is out of range: must be in 1..={}",
                    self.max_batch_samples,
                    validate::MAX_BATCH_SAMPLES
                ),
            ));
        }
        if !(1..=validate::MAX_INGEST_QUEUE_BATCHES).contains(&self.ingest_queue_batches) {
            return Err(invalid(
                "ingest_queue_batches",
                format!(
                    "{} is out of range: must be in 1..={}",
                    self.ingest_queue_batches,
                    validate::MAX_INGEST_QUEUE_BATCHES
                ),
            ));
        }
        validate::host_port(&self.listen, true).map_err(|m| invalid("listen", m))?;
        if !self.metrics_listen.is_empty() {
            validate::host_port(&self.metrics_listen, true)
                .map_err(|m| invalid("metrics_listen", m))?;
        }
        if !self.otlp_listen.is_empty() {
            validate::host_port(&self.otlp_listen, true).map_err(|m| invalid("otlp_listen", m))?;
        }
        self.otlp
            .validate()
            .map_err(|(f, m)| invalid(format!("otlp.{f}"), m))?;
        validate::log_filter(&self.log_filter).map_err(|m| invalid("log_filter", m))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.retrain_holdout_origins == 0 || self.retrain_holdout_origins > 100 {
            return Err(invalid("retrain_holdout_origins", "must be in 1..=100"));
        }
        if self.forecast_horizon == 0 || self.forecast_horizon > 10_000 {
            return Err(invalid("forecast_horizon", "must be in 1..=10000"));
        }
        crate::policies::check_name(&self.default_policy)
            .map_err(|e| invalid("default_policy", e.to_string()))?;
        self.validate_security()?;
        crate::haproxy::validate_all(&self.haproxy).map_err(|(f, m)| invalid(f, m))?;
        self.anomaly
            .validate()
            .map_err(|(f, m)| invalid(format!("anomaly.{f}"), m))?;
        if let Some(ha) = &self.ha {
            ha.validate()
                .map_err(|(f, m)| invalid(format!("ha.{f}"), m))?;
        }
        if self.clusters.len() > self.limits.max_clusters {
            return Err(invalid(
                "clusters",
                format!(
                    "{} clusters exceed limits.max_clusters = {}",
                    self.clusters.len(),
                    self.limits.max_clusters
                ),
            ));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if c.backends.len() > self.limits.max_backends_per_cluster {
                return Err(invalid(
                    format!("clusters[{i}].backends"),
                    format!(
                        "{} backends exceed limits.max_backends_per_cluster = {}",
                        c.backends.len(),
                        self.limits.max_backends_per_cluster
                    ),
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, c) in self.clusters.iter_mut().enumerate() {
            let f = format!("clusters[{i}]");
            if !c.events.added.is_empty() {
                return Err(invalid(
                    format!("{f}.events.added"),
                    "written by the admin API (AddEvent), not in the configuration file",
                ));
            }
            c.events.load_file(&format!("{f}.events.file"))?;
            c.normalise(&f)?;
            if !c.policy.is_empty() {
                crate::policies::check_name(&c.policy)
                    .map_err(|e| invalid(format!("{f}.policy"), e.to_string()))?;
            }
            let policy = if c.policy.is_empty() {
                &self.default_policy
            } else {
                &c.policy
            };
            crate::policies::check(policy, &c.policy_params)
                .map_err(|e| invalid(format!("{f}.policy_params"), e.to_string()))?;
            if !seen.insert(c.name.clone()) {
                return Err(invalid(
                    format!("{f}.name"),
                    format!("duplicate cluster {:?}", c.name),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Check `[auth]`, `[tls]`, `[limits]`, `admin_listen`, and refuse a
    /// non-loopback listener without credentials unless `insecure = true`.
    /// Token files are read here (into `token`), so a missing file fails
    /// the start, naming it.
    fn validate_security(&mut self) -> Result<(), ConfigError> {
        use crate::validate;
        if !self.admin_listen.is_empty() {
            validate::host_port(&self.admin_listen, true)
                .map_err(|m| invalid("admin_listen", m))?;
        }
        self.validate_tokens()?;
        self.validate_identities_and_tls()?;
        self.validate_limits()?;
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if !self.auth.enabled() && !mtls && !self.insecure {
            for (field, addr) in [
                ("listen", &self.listen),
                ("metrics_listen", &self.metrics_listen),
                ("admin_listen", &self.admin_listen),
            ] {
                if !addr.is_empty() && !validate::is_loopback(addr) {
                    return Err(invalid(
                        field,
                        format!(
                            "{addr:?} is not a loopback address and no credentials are configured: \
                             anyone who reaches it could steer traffic. Configure [[auth.tokens]] \
                             (or mTLS with tls.client_ca), or set insecure = true to serve without \
                             authentication"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[[auth.tokens]]`: names, roles, one of token / token_file (read
    /// here), the token's shape, no value given twice.
    fn validate_tokens(&mut self) -> Result<(), ConfigError> {
        use crate::validate;
        let mut names = BTreeSet::new();
        for (i, t) in self.auth.tokens.iter_mut().enumerate() {
            let f = format!("auth.tokens[{i}]");
            if !valid_name(&t.name) {
                return Err(invalid(
                    format!("{f}.name"),
                    format!("{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]", t.name),
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid(
                    format!("{f}.name"),
                    format!("duplicate token name {:?}", t.name),
                ));
            }
            if t.roles.is_empty() {
                return Err(invalid(format!("{f}.roles"), "must name at least one role"));
            }
            match (&t.token_file, t.token.is_empty()) {
                (Some(_), false) => {
                    return Err(invalid(
                        format!("{f}.token"),
                        "give either token or token_file, not both",
                    ));
                }
                (None, true) => {
                    return Err(invalid(
                        format!("{f}.token"),
                        "token or token_file is required",
                    ));
                }
                (Some(path), true) => {
                    let text =
                        read_token_file(path).map_err(|m| invalid(format!("{f}.token_file"), m))?;
                    t.token = text.trim().to_string();
                    t.token_file = None;
                }
                (None, false) => {}
            }
            validate::token(&t.token).map_err(|m| invalid(format!("{f}.token"), m))?;
        }
        let mut tokens = BTreeSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            if !tokens.insert(t.token.as_str()) {
                return Err(invalid(
                    format!("auth.tokens[{i}].token"),
                    "the same token value is given twice",
                ));
            }
        }
        Ok(())
    }

    /// `[[auth.identities]]` and `[tls]`.
    fn validate_identities_and_tls(&self) -> Result<(), ConfigError> {
        use crate::validate;
        for (i, id) in self.auth.identities.iter().enumerate() {
            let f = format!("auth.identities[{i}]");
            if id.subject.is_empty()
                || id.subject.len() > 1024
                || id.subject.contains(char::is_control)
            {
                return Err(invalid(
                    format!("{f}.subject"),
                    "must be 1..=1024 characters without control characters",
                ));
            }
            if id.roles.is_empty() {
                return Err(invalid(format!("{f}.roles"), "must name at least one role"));
            }
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [
                ("tls.cert", Some(&tls.cert)),
                ("tls.key", Some(&tls.key)),
                ("tls.client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(p) = path
                    && p.as_os_str().is_empty()
                {
                    return Err(invalid(field, "must not be empty"));
                }
            }
            validate::seconds(validate::TLS_RELOAD_SECONDS, tls.reload_check_seconds)
                .map_err(|m| invalid("tls.reload_check_seconds", m))?;
        }
        if !self.auth.identities.is_empty()
            && self
                .tls
                .as_ref()
                .and_then(|t| t.client_ca.as_ref())
                .is_none()
        {
            return Err(invalid(
                "auth.identities",
                "certificate identities need mTLS: set tls.client_ca",
            ));
        }
        Ok(())
    }

    /// `[limits]`: every bound in its range, timeouts consistent.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        use crate::validate;
        let l = &self.limits;
        for (field, v) in [
            (
                "limits.ingest_samples_per_second",
                l.ingest_samples_per_second,
            ),
            (
                "limits.admin_requests_per_second",
                l.admin_requests_per_second,
            ),
        ] {
            if !(v.is_finite() && (0.0..=validate::MAX_RATE).contains(&v)) {
                return Err(invalid(
                    field,
                    format!(
                        "{v} is out of range: must be a rate in [0, {:e}] per second (0 turns it off)",
                        validate::MAX_RATE
                    ),
                ));
            }
        }
        for (field, v, (lo, hi)) in [
            (
                "limits.max_connections",
                l.max_connections,
                validate::MAX_CONNECTIONS,
            ),
            (
                "limits.max_concurrent_streams",
                l.max_concurrent_streams as usize,
                validate::MAX_CONCURRENT_STREAMS,
            ),
            (
                "limits.max_clusters",
                l.max_clusters,
                validate::MAX_CLUSTERS,
            ),
            (
                "limits.max_backends_per_cluster",
                l.max_backends_per_cluster,
                validate::MAX_BACKENDS,
            ),
            ("limits.max_series", l.max_series, validate::MAX_SERIES),
            (
                "limits.max_series_per_cluster",
                l.max_series_per_cluster,
                validate::MAX_SERIES,
            ),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(invalid(
                    field,
                    format!("{v} is out of range: must be in {lo}..={hi}"),
                ));
            }
        }
        for (field, v, b) in [
            (
                "limits.handshake_timeout_seconds",
                l.handshake_timeout_seconds,
                validate::HANDSHAKE_SECONDS,
            ),
            (
                "limits.idle_timeout_seconds",
                l.idle_timeout_seconds,
                validate::IDLE_SECONDS,
            ),
            (
                "limits.keepalive_interval_seconds",
                l.keepalive_interval_seconds,
                validate::KEEPALIVE_SECONDS,
            ),
            (
                "limits.keepalive_timeout_seconds",
                l.keepalive_timeout_seconds,
                validate::KEEPALIVE_SECONDS,
            ),
        ] {
            validate::seconds(b, v).map_err(|m| invalid(field, m))?;
        }
        if l.keepalive_interval_seconds + l.keepalive_timeout_seconds >= l.idle_timeout_seconds {
            return Err(invalid(
                "limits.idle_timeout_seconds",
                format!(
                    "{} must exceed keepalive_interval_seconds + keepalive_timeout_seconds ({}), or idle but live connections are closed",
                    l.idle_timeout_seconds,
                    l.keepalive_interval_seconds + l.keepalive_timeout_seconds
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_token_file_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            read_token_file(&ok).unwrap().trim(),
            "0123456789abcdef0123456789abcdef"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_TOKEN_FILE_BYTES as usize + 1]).unwrap();
        let e = read_token_file(&big).unwrap_err();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        // An endless file ends at the cap instead of filling the memory.
        let e = read_token_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("/dev/zero is larger than"), "{e}");
        let mut c = Config::default();
        c.auth.tokens = vec![TokenConfig {
            name: "x".into(),
            roles: vec![Role::Admin],
            token: String::new(),
            token_file: Some(big),
        }];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("auth.tokens[0].token_file"), "{e}");
    }

    #[test]
    fn full_file_parses_and_validates() {
        let text = r#"
listen = "127.0.0.1:0"
tick_interval_seconds = 1.0
[[clusters]]
name = "web"
algorithm = "least_request"
[[clusters.backends]]
name = "b"
address = "127.0.0.1:8081"
weight_hint = 3
[[clusters.backends]]
name = "a"
address = "[::1]:8080"
"#;
        let mut c = Config::from_toml(text, Path::new("x.toml")).unwrap();
        c.validate().unwrap();
        let web = &c.clusters[0];
        assert_eq!(web.algorithm, LbAlgorithm::LeastRequest);
        assert_eq!(web.max_replicas, 2);
        assert_eq!(web.backends[0].name, "a");
        assert_eq!(
            web.backends[0].host_port().unwrap(),
            ("::1".to_string(), 8080)
        );
    }

    #[test]
    fn otlp_mapping_per_cluster_parses() {
        let text = r#"
otlp_listen = "127.0.0.1:4317"
[otlp.clusters.checkout]
backend_attributes = [["server.address", "server.port"]]
derive_latency = false
[otlp.clusters.checkout.metrics]
"app.requests" = "requests_total"
"cluster.endpoint.cx_active" = "ignore"
"#;
        let mut c = Config::from_toml(text, Path::new("x.toml")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.otlp_listen, "127.0.0.1:4317");
        let m = c.otlp.cluster("checkout");
        assert_eq!(
            m.backend_attributes,
            vec![vec![
                "server.address".to_string(),
                "server.port".to_string()
            ]]
        );
        assert!(!m.derive_latency);
        assert_eq!(
            m.target("app.requests", crate::otlp::mapping::OTLP_BUILTIN),
            Some("requests_total")
        );
        // Other clusters keep the defaults (Envoy's names, Little's law on).
        let d = c.otlp.cluster("web");
        assert!(d.derive_latency);
        assert_eq!(
            d.target(
                "cluster.endpoint.rq_active",
                crate::otlp::mapping::OTLP_BUILTIN
            ),
            Some("in_flight")
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("tick_interval_seconds = -1.0", "tick_interval_seconds"),
            (
                "retrain_interval_seconds = -5.0",
                "retrain_interval_seconds",
            ),
            ("retrain_holdout_origins = 0", "retrain_holdout_origins"),
            ("[[clusters]]\nname = \"\"", "clusters[0].name"),
            (
                "[[clusters]]\nname = \"w\"\n[[clusters.backends]]\nname = \"a\"\naddress = \"nope\"",
                "clusters[0].backends[0].address",
            ),
            (
                "[[clusters]]\nname = \"w\"\npolicy = \"nonsense\"",
                "clusters[0].policy",
            ),
            ("otlp_listen = \"nope\"", "otlp_listen"),
            ("[otlp]\nmax_series = 0", "otlp.max_series"),
            ("[anomaly]\nthreshold = 0.0", "anomaly.threshold"),
            ("[anomaly]\nthreshold = 1.5", "anomaly.threshold"),
            ("[anomaly]\nquiet_seconds = -1.0", "anomaly.quiet_seconds"),
            ("[anomaly]\nmax_detectors = 0", "anomaly.max_detectors"),
            ("[anomaly]\nhistory = 5", "anomaly.history"),
            (
                "[anomaly]\nwebhook_url = \"https://alerts.example/aya\"",
                "anomaly.webhook_url",
            ),
            ("[anomaly]\nwebhook_queue = 0", "anomaly.webhook_queue"),
            (
                "[anomaly]\nwebhook_timeout_seconds = 0.0",
                "anomaly.webhook_timeout_seconds",
            ),
            (
                "[otlp.clusters.web]\nbackend_attributes = [[]]",
                "otlp.clusters.web.backend_attributes[0]",
            ),
            (
                "[otlp.clusters.web.metrics]\n\"app.requests\" = \"requests total\"",
                "otlp.clusters.web.metrics.\"app.requests\"",
            ),
            (
                "[otlp.default]\nbackend_attributes = [[\"server.address\", \"\"]]",
                "otlp.default.backend_attributes[0][1]",
            ),
            ("[otlp]\ncluster_attributes = []", "otlp.cluster_attributes"),
            (
                "[[haproxy]]\ncluster = \"web\"\nruntime_api = \"127.0.0.1\"\nbackend = \"be\"",
                "haproxy[0].runtime_api",
            ),
            (
                "[[haproxy]]\ncluster = \"web\"\nruntime_api = \"127.0.0.1:9999\"\nbackend = \"\"",
                "haproxy[0].backend",
            ),
            (
                "[[haproxy]]\ncluster = \"web\"\nruntime_api = \"/run/h.sock\"\nbackend = \"be\"\n[haproxy.servers]\na = \"\"",
                "haproxy[0].servers.\"a\"",
            ),
        ];
        for (text, field) in cases {
            let mut c = Config::from_toml(text, Path::new("x.toml")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let err = Config::from_toml("listen = 3", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.toml") && err.contains("line 1"), "{err}");
        let err = Config::from_toml("bogus = 3", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
