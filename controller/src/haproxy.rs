//! HAProxy as a data plane: Aya steers a HAProxy backend through its runtime
//! API (the "stats socket" at `level admin`, over TCP or a unix socket).
//!
//! One publisher per `[[haproxy]]` entry of `aya.toml` follows its cluster's
//! published snapshots ([`crate::publish::Publisher::subscribe_all`]) and
//! applies them with the commands verified against HAProxy 2.6:
//!
//! - `set server BE/SRV weight N`: Aya's weights, scaled into HAProxy's
//!   0..=256 range keeping their proportions (unchanged when they fit);
//! - `set server BE/SRV state drain` for backends Aya ejected or left out,
//!   `state ready` when they return;
//! - `add server BE/SRV HOST:PORT weight N` + `enable server BE/SRV` for a
//!   backend of the cluster HAProxy lacks, and `set server BE/SRV state maint`
//!   then `del server BE/SRV` for a server no backend of the cluster maps to
//!   (dynamic servers, HAProxy ≥ 2.5; each can be turned off).
//!
//! Only changes are sent: the publisher diffs the wanted state against what
//! it last applied successfully on the current connection. A new connection
//! (HAProxy restarted, or the socket closed) starts from nothing, so
//! everything is re-applied. Every `resync_seconds` it reads
//! `show servers state BE`, which keeps the connection alive, learns which
//! servers exist, and re-applies any server whose weight or state was changed
//! behind its back ("drift").
//!
//! HAProxy's `balance` algorithm is a configuration-file setting the runtime
//! API cannot change: Aya publishes weights and states only, and logs which
//! `balance` matches the algorithm the engine chose (see [`balance_for`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aya_policy::LbAlgorithm;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{ClusterConfig, valid_name};

pub mod stats;
use crate::publish::{ClusterSnapshot, PublishedState};

/// HAProxy's largest server weight.
pub const MAX_WEIGHT: u32 = 256;

/// Shortest wait before a reconnect.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// A command HAProxy refused is sent again no sooner than this (unless the
/// connection is renewed), so a permanent refusal (e.g. weights on a
/// `static-rr` backend) is not repeated at every resync.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// `[[haproxy]]`: one HAProxy backend steered from one Aya cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyConfig {
    /// The Aya cluster whose snapshots are applied.
    pub cluster: String,
    /// The runtime API (`stats socket … level admin`): `host:port` for a TCP
    /// socket, or a unix socket path (`/run/haproxy/admin.sock` or
    /// `unix:/run/haproxy/admin.sock`).
    pub runtime_api: String,
    /// The HAProxy backend (`backend NAME` in haproxy.cfg).
    pub backend: String,
    /// Aya backend name → HAProxy server name, for backends whose server is
    /// named differently (default: the same name).
    #[serde(default)]
    pub servers: BTreeMap<String, String>,
    /// Add (`add server` + `enable server`) backends of the cluster HAProxy
    /// does not have (needs dynamic servers, HAProxy ≥ 2.5).
    #[serde(default = "yes")]
    pub add_servers: bool,
    /// Put in maintenance and delete (`del server`) servers of the HAProxy
    /// backend that no backend of the cluster maps to: the backend is then
    /// Aya's alone. `false` leaves such servers untouched.
    #[serde(default = "yes")]
    pub remove_servers: bool,
    /// Seconds between `show servers state` probes (keep it below HAProxy's
    /// `stats timeout`, 10 s by default, or the idle socket is closed).
    #[serde(default = "default_resync")]
    pub resync_seconds: f64,
    /// Seconds one command may take before the connection is dropped.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: f64,
    /// Longest wait between reconnect attempts (the wait doubles from 0.1 s).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_seconds: f64,
    /// Also read HAProxy's own per-server statistics (`show stat`) at every
    /// probe and ingest them as the cluster's backend metrics (requests,
    /// in-flight, errors, latency, health): HAProxy as a metrics source, no
    /// code in the backends (docs/haproxy.md).
    #[serde(default)]
    pub stats: bool,
}

fn yes() -> bool {
    true
}
fn default_resync() -> f64 {
    2.0
}
fn default_timeout() -> f64 {
    2.0
}
fn default_max_backoff() -> f64 {
    10.0
}

/// Where the runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeApi {
    /// A TCP socket (`stats socket ipv4@127.0.0.1:9999 level admin`).
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeApi::Tcp(a) => f.write_str(a),
            RuntimeApi::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parse `runtime_api`: a unix socket path (absolute, or after `unix:`) or `host:port`.
pub fn parse_runtime_api(s: &str) -> Result<RuntimeApi, String> {
    let path = s.strip_prefix("unix:").or(s.starts_with('/').then_some(s));
    if let Some(p) = path {
        if p.is_empty() || p.contains('\0') {
            return Err(format!("{s:?}: the unix socket path is empty or invalid"));
        }
        return Ok(RuntimeApi::Unix(PathBuf::from(p)));
    }
    crate::validate::host_port(s, false)
        .map(|_| RuntimeApi::Tcp(s.to_string()))
        .map_err(|e| {
            format!("{e} (give host:port for a TCP stats socket or an absolute unix socket path)")
        })
}

/// HAProxy proxy and server names: what haproxy.cfg accepts.
fn valid_haproxy_name(s: &str) -> bool {
    valid_name(s)
}

impl HaproxyConfig {
    /// Check every value; `field` is the dotted path used in messages
    /// (e.g. `haproxy[0]`). Errors are `(field, message)`.
    pub fn validate(&self, field: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("{field}.{k}"), m));
        if !valid_name(&self.cluster) {
            return bad(
                "cluster",
                format!(
                    "{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]",
                    self.cluster
                ),
            );
        }
        if let Err(m) = parse_runtime_api(&self.runtime_api) {
            return bad("runtime_api", m);
        }
        if self.backend.is_empty() {
            return bad("backend", "must not be empty".into());
        }
        if !valid_haproxy_name(&self.backend) {
            return bad(
                "backend",
                format!(
                    "{:?} must be 1..=128 characters of [A-Za-z0-9_.:-]",
                    self.backend
                ),
            );
        }
        let mut targets = BTreeMap::new();
        for (aya, srv) in &self.servers {
            if !valid_name(aya) {
                return bad(
                    &format!("servers.{aya:?}"),
                    "the key must be an Aya backend name (1..=128 characters of [A-Za-z0-9_.:-])"
                        .into(),
                );
            }
            if !valid_haproxy_name(srv) {
                return bad(
                    &format!("servers.{aya:?}"),
                    format!(
                        "{srv:?} is not a HAProxy server name (1..=128 characters of [A-Za-z0-9_.:-])"
                    ),
                );
            }
            if let Some(other) = targets.insert(srv.as_str(), aya.as_str()) {
                return bad(
                    &format!("servers.{aya:?}"),
                    format!("server {srv:?} is already the server of backend {other:?}"),
                );
            }
        }
        for (k, v, lo, hi) in [
            ("resync_seconds", self.resync_seconds, 0.05, 3600.0),
            ("timeout_seconds", self.timeout_seconds, 0.05, 600.0),
            ("max_backoff_seconds", self.max_backoff_seconds, 0.1, 3600.0),
        ] {
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return bad(
                    k,
                    format!("{v} is out of range: must be a number of seconds in [{lo}, {hi}]"),
                );
            }
        }
        Ok(())
    }

    /// The HAProxy server name of Aya backend `backend`.
    pub fn server_name<'a>(&'a self, backend: &'a str) -> &'a str {
        self.servers.get(backend).map_or(backend, String::as_str)
    }
}

/// Check a whole `[[haproxy]]` list: each entry, and no HAProxy backend
/// steered twice.
pub fn validate_all(list: &[HaproxyConfig]) -> Result<(), (String, String)> {
    let mut seen = BTreeMap::new();
    for (i, h) in list.iter().enumerate() {
        let f = format!("haproxy[{i}]");
        h.validate(&f)?;
        let key = (
            parse_runtime_api(&h.runtime_api)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            h.backend.clone(),
        );
        if let Some(j) = seen.insert(key, i) {
            return Err((
                format!("{f}.backend"),
                format!(
                    "backend {:?} on {} is already steered by haproxy[{j}]",
                    h.backend, h.runtime_api
                ),
            ));
        }
    }
    Ok(())
}

/// The HAProxy `balance` setting closest to `algorithm` (the runtime API
/// cannot set it: the operator writes it in haproxy.cfg).
pub fn balance_for(algorithm: LbAlgorithm) -> &'static str {
    match algorithm {
        LbAlgorithm::RoundRobin | LbAlgorithm::WeightedRoundRobin => "roundrobin",
        LbAlgorithm::Random | LbAlgorithm::WeightedRandom => "random",
        LbAlgorithm::LeastRequest | LbAlgorithm::JoinShortestQueue | LbAlgorithm::PeakEwma => {
            "leastconn"
        }
        LbAlgorithm::RingHash | LbAlgorithm::Maglev => {
            "uri (or hdr(NAME)) with hash-type consistent"
        }
        LbAlgorithm::SourceIpHash => "source with hash-type consistent",
    }
}

/// Errors of a HAProxy publisher. None is fatal: the publisher logs and
/// counts them, backs off and retries.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// The runtime API could not be reached.
    #[error("cannot connect to the HAProxy runtime API at {api}: {source}")]
    Connect {
        /// The address.
        api: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("HAProxy runtime API at {api}: {source}")]
    Io {
        /// The address.
        api: String,
        /// Why.
        source: std::io::Error,
    },
    /// HAProxy closed the connection.
    #[error("HAProxy runtime API at {api} closed the connection")]
    Closed {
        /// The address.
        api: String,
    },
    /// A command got no complete reply in time.
    #[error("HAProxy runtime API at {api}: no reply to {command:?} within {seconds} s")]
    Timeout {
        /// The address.
        api: String,
        /// The command.
        command: String,
        /// The timeout.
        seconds: f64,
    },
    /// HAProxy does not know the backend (`Can't find backend.`).
    #[error("HAProxy has no backend {backend:?}: {reply}")]
    NoBackend {
        /// The backend.
        backend: String,
        /// HAProxy's reply.
        reply: String,
    },
    /// HAProxy refused a command.
    #[error("HAProxy refused {command:?} for server {server:?}: {reply}")]
    Refused {
        /// The server.
        server: String,
        /// The command.
        command: String,
        /// HAProxy's reply.
        reply: String,
    },
    /// A backend of the cluster has no server in HAProxy and cannot be added
    /// (`add_servers = false`, no address, or HAProxy without dynamic servers).
    #[error("HAProxy backend {backend:?} has no server {server:?} ({why})")]
    MissingServer {
        /// The HAProxy backend.
        backend: String,
        /// The server.
        server: String,
        /// Why it was not added.
        why: &'static str,
    },
    /// A reply could not be parsed.
    #[error("unexpected reply to {command:?}: {reply}")]
    BadReply {
        /// The command.
        command: String,
        /// The reply.
        reply: String,
    },
}

impl HaproxyError {
    /// The `kind` label on `aya_haproxy_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            HaproxyError::Connect { .. } => "connect",
            HaproxyError::Io { .. } => "io",
            HaproxyError::Closed { .. } => "closed",
            HaproxyError::Timeout { .. } => "timeout",
            HaproxyError::NoBackend { .. } => "no_backend",
            HaproxyError::Refused { .. } => "refused",
            HaproxyError::MissingServer { .. } => "missing_server",
            HaproxyError::BadReply { .. } => "bad_reply",
        }
    }
}

/// What one HAProxy server should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedServer {
    /// The Aya backend it stands for.
    pub backend: String,
    /// `host:port`, when known (needed to add it).
    pub address: Option<String>,
    /// Scaled weight (0..=256); `None` for a drained server (its weight is
    /// left as it is).
    pub weight: Option<u32>,
    /// Ready (receives traffic) or drained.
    pub ready: bool,
}

/// Scale Aya's weights into 1..=256 keeping their proportions: unchanged
/// when the largest fits, else multiplied by 256 / largest and rounded (at
/// least 1: Aya never publishes a zero weight for a backend it keeps).
pub fn scale_weights(weights: &[(String, u32)]) -> BTreeMap<String, u32> {
    let max = weights.iter().map(|(_, w)| *w).max().unwrap_or(0);
    weights
        .iter()
        .map(|(b, w)| {
            let s = if max <= MAX_WEIGHT {
                (*w).max(1)
            } else {
                let x = (f64::from(*w) * f64::from(MAX_WEIGHT) / f64::from(max)).round() as u32;
                x.clamp(1, MAX_WEIGHT)
            };
            (b.clone(), s)
        })
        .collect()
}

/// The wanted state of every server, by HAProxy server name: the
/// snapshot's endpoints ready with their scaled weights; every other
/// backend of the cluster (ejected, or left out) drained.
pub fn wanted(
    cfg: &HaproxyConfig,
    snap: &ClusterSnapshot,
    cluster: Option<&ClusterConfig>,
) -> BTreeMap<String, WantedServer> {
    let raw: Vec<(String, u32)> = snap
        .endpoints
        .iter()
        .map(|e| (e.backend.clone(), e.weight))
        .collect();
    let scaled = scale_weights(&raw);
    let mut out = BTreeMap::new();
    for e in &snap.endpoints {
        let address = if e.host.contains(':') {
            format!("[{}]:{}", e.host, e.port)
        } else {
            format!("{}:{}", e.host, e.port)
        };
        out.insert(
            cfg.server_name(&e.backend).to_string(),
            WantedServer {
                backend: e.backend.clone(),
                address: Some(address),
                weight: scaled.get(&e.backend).copied(),
                ready: true,
            },
        );
    }
    let others = cluster
        .map(|c| {
            c.backends
                .iter()
                .map(|b| (b.name.clone(), Some(b.address.clone())))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(snap.decision.ejected.iter().map(|b| (b.clone(), None)));
    for (backend, address) in others {
        let name = cfg.server_name(&backend).to_string();
        out.entry(name).or_insert(WantedServer {
            backend,
            address,
            weight: None,
            ready: false,
        });
    }
    out
}

/// What HAProxy reports for one server (`show servers state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    /// Current (user) weight.
    pub weight: u32,
    /// Administrative state flags (`srv_admin_state`).
    pub admin: u32,
}

/// `srv_admin_state` flags set by `state maint` and `state drain`.
const ADMIN_FORCED_MAINT: u32 = 0x01;
const ADMIN_FORCED_DRAIN: u32 = 0x08;

impl ServerState {
    /// Whether the server is ready as far as Aya's commands go (neither
    /// forced into maintenance nor drained).
    pub fn ready(&self) -> bool {
        self.admin & (ADMIN_FORCED_MAINT | ADMIN_FORCED_DRAIN) == 0
    }
}

/// Parse the reply of `show servers state BACKEND` (format version 1).
pub fn parse_servers_state(
    backend: &str,
    reply: &str,
) -> Result<BTreeMap<String, ServerState>, HaproxyError> {
    let bad = || HaproxyError::BadReply {
        command: format!("show servers state {backend}"),
        reply: crate::validate::truncate_for_message(reply, 300),
    };
    let mut lines = reply.lines();
    match lines.next().map(str::trim) {
        Some("1") => {}
        Some(l) if l.starts_with("Can't find backend") => {
            return Err(HaproxyError::NoBackend {
                backend: backend.to_string(),
                reply: l.to_string(),
            });
        }
        _ => return Err(bad()),
    }
    let mut out = BTreeMap::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight …
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(bad());
        }
        if f[1] != backend {
            continue;
        }
        let admin = f[6].parse().map_err(|_| bad())?;
        let weight = f[7].parse().map_err(|_| bad())?;
        out.insert(f[3].to_string(), ServerState { weight, admin });
    }
    Ok(out)
}

/// What was last applied successfully to one server on this connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Weight last set.
    pub weight: Option<u32>,
    /// State last set (ready or drain).
    pub ready: Option<bool>,
}

/// One runtime API command and the server it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The server.
    pub server: String,
    /// The command line.
    pub command: String,
    /// What applying it successfully changes.
    pub effect: Effect,
}

/// The bookkeeping effect of a successful [`Step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The server now exists (in maintenance, with this weight).
    Added(u32),
    /// The weight is now this.
    Weight(u32),
    /// The state is now ready (`true`) or drained (`false`).
    Ready(bool),
    /// The server is in maintenance (about to be deleted).
    Maint,
    /// The server is gone.
    Deleted,
}

/// Options of [`plan`].
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Add missing servers.
    pub add: bool,
    /// Remove servers no backend maps to.
    pub remove: bool,
    /// HAProxy supports dynamic servers (`add server`/`del server`).
    pub dynamic: bool,
}

/// The commands that take HAProxy from `applied` (and the servers it has,
/// `present`) to `wanted`, plus the servers that are missing and cannot be
/// added. Order: additions, weights, servers becoming ready, drains,
/// removals, so capacity is added before it is taken away.
pub fn plan(
    backend: &str,
    wanted: &BTreeMap<String, WantedServer>,
    applied: &BTreeMap<String, Applied>,
    present: &BTreeMap<String, ServerState>,
    opts: PlanOptions,
) -> (Vec<Step>, Vec<HaproxyError>) {
    let (mut adds, mut weights, mut readies, mut drains, mut removals) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut missing = vec![];
    let step = |server: &str, command: String, effect| Step {
        server: server.to_string(),
        command,
        effect,
    };
    for (srv, w) in wanted {
        let a = applied.get(srv).copied().unwrap_or_default();
        if !present.contains_key(srv) {
            let why = if !opts.add {
                Some("add_servers = false")
            } else if !opts.dynamic {
                Some("this HAProxy has no dynamic servers (needs 2.5 or later)")
            } else if w.address.is_none() {
                Some("its address is unknown")
            } else {
                None
            };
            if let Some(why) = why {
                missing.push(HaproxyError::MissingServer {
                    backend: backend.to_string(),
                    server: srv.clone(),
                    why,
                });
                continue;
            }
            let weight = w.weight.unwrap_or(1);
            let addr = w.address.as_deref().unwrap_or_default();
            adds.push(step(
                srv,
                format!("add server {backend}/{srv} {addr} weight {weight}"),
                Effect::Added(weight),
            ));
            // A new server starts in maintenance: enable it, or drain it.
            if w.ready {
                adds.push(step(
                    srv,
                    format!("enable server {backend}/{srv}"),
                    Effect::Ready(true),
                ));
            } else {
                adds.push(step(
                    srv,
                    format!("set server {backend}/{srv} state drain"),
                    Effect::Ready(false),
                ));
            }
            continue;
        }
        if let Some(weight) = w.weight
            && a.weight != Some(weight)
        {
            weights.push(step(
                srv,
                format!("set server {backend}/{srv} weight {weight}"),
                Effect::Weight(weight),
            ));
        }
        if a.ready != Some(w.ready) {
            let (list, state) = if w.ready {
                (&mut readies, "ready")
            } else {
                (&mut drains, "drain")
            };
            list.push(step(
                srv,
                format!("set server {backend}/{srv} state {state}"),
                Effect::Ready(w.ready),
            ));
        }
    }
    if opts.remove && opts.dynamic {
        for (srv, s) in present {
            if wanted.contains_key(srv) {
                continue;
            }
            if s.admin & ADMIN_FORCED_MAINT == 0 {
                removals.push(step(
                    srv,
                    format!("set server {backend}/{srv} state maint"),
                    Effect::Maint,
                ));
            }
            removals.push(step(
                srv,
                format!("del server {backend}/{srv}"),
                Effect::Deleted,
            ));
        }
    }
    let mut steps = adds;
    steps.extend(weights);
    steps.extend(readies);
    steps.extend(drains);
    steps.extend(removals);
    (steps, missing)
}

/// Whether `reply` is HAProxy's success answer to `command`.
fn succeeded(command: &str, reply: &str) -> bool {
    reply.is_empty()
        || (command.starts_with("add server") && reply.starts_with("New server registered"))
        || (command.starts_with("del server") && reply.starts_with("Server deleted"))
}

/// Whether a refusal may pass by itself (`del server` while the server
/// still has connections): such commands are retried at every resync.
fn transient_refusal(reply: &str) -> bool {
    reply.contains("still has")
}

/// Parse `Version: 2.6.12-1+deb12u3` out of `show info`: (major, minor).
pub fn parse_version(info: &str) -> Option<(u32, u32)> {
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))?
        .trim();
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Labels of the HAProxy publishers' series: the Aya cluster and the HAProxy backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    cluster: String,
    backend: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    cluster: String,
    backend: String,
    kind: &'static str,
}

#[derive(Debug)]
struct MetricsInner {
    registry: Registry,
    commands: Family<TargetLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    connects: Family<TargetLabels, Counter>,
    connected: Family<TargetLabels, Gauge>,
    drift: Family<TargetLabels, Counter>,
    applied_version: Family<TargetLabels, Gauge>,
    stats_samples: Family<StatsLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatsLabels {
    cluster: String,
    backend: String,
    result: &'static str,
}

/// Handles to the HAProxy publishers' counters (cheap to clone, shared).
#[derive(Debug, Clone)]
pub struct HaproxyMetrics(Arc<MetricsInner>);

impl Default for HaproxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl HaproxyMetrics {
    /// New, zero counters.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let commands = Family::<TargetLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let connects = Family::<TargetLabels, Counter>::default();
        let connected = Family::<TargetLabels, Gauge>::default();
        let drift = Family::<TargetLabels, Counter>::default();
        let applied_version = Family::<TargetLabels, Gauge>::default();
        let stats_samples = Family::<StatsLabels, Counter>::default();
        registry.register(
            "aya_haproxy_stats_samples",
            "Samples read from HAProxy's `show stat` (`stats = true`) and handed to ingest, by result (accepted, rejected)",
            stats_samples.clone(),
        );
        registry.register(
            "aya_haproxy_commands",
            "Runtime API commands HAProxy accepted (weights, states, added and deleted servers)",
            commands.clone(),
        );
        registry.register(
            "aya_haproxy_errors",
            "HAProxy publisher errors by kind (connect, io, closed, timeout, no_backend, refused, missing_server, bad_reply)",
            errors.clone(),
        );
        registry.register(
            "aya_haproxy_connects",
            "Connections opened to the HAProxy runtime API (each one re-applies everything)",
            connects.clone(),
        );
        registry.register(
            "aya_haproxy_connected",
            "1 while the HAProxy runtime API is connected",
            connected.clone(),
        );
        registry.register(
            "aya_haproxy_drift",
            "Servers whose weight or state HAProxy reported different from what Aya applied (re-applied)",
            drift.clone(),
        );
        registry.register(
            "aya_haproxy_applied_version",
            "Version of the cluster snapshot last applied in full to HAProxy",
            applied_version.clone(),
        );
        HaproxyMetrics(Arc::new(MetricsInner {
            registry,
            commands,
            errors,
            connects,
            connected,
            drift,
            applied_version,
            stats_samples,
        }))
    }

    fn labels(cfg: &HaproxyConfig) -> TargetLabels {
        TargetLabels {
            cluster: cfg.cluster.clone(),
            backend: cfg.backend.clone(),
        }
    }

    fn error(&self, cfg: &HaproxyConfig, e: &HaproxyError) {
        self.0
            .errors
            .get_or_create(&ErrorLabels {
                cluster: cfg.cluster.clone(),
                backend: cfg.backend.clone(),
                kind: e.kind(),
            })
            .inc();
    }

    fn stats_samples(&self, cfg: &HaproxyConfig, result: &'static str, n: u64) {
        self.0
            .stats_samples
            .get_or_create(&StatsLabels {
                cluster: cfg.cluster.clone(),
                backend: cfg.backend.clone(),
                result,
            })
            .inc_by(n);
    }

    /// Samples read from `show stat` for (`cluster`, HAProxy `backend`) with `result` so far.
    pub fn stats_sample_count(&self, cluster: &str, backend: &str, result: &'static str) -> u64 {
        self.0
            .stats_samples
            .get_or_create(&StatsLabels {
                cluster: cluster.into(),
                backend: backend.into(),
                result,
            })
            .get()
    }

    /// Errors of kind `kind` for (`cluster`, HAProxy `backend`) so far.
    pub fn errors(&self, cluster: &str, backend: &str, kind: &'static str) -> u64 {
        self.0
            .errors
            .get_or_create(&ErrorLabels {
                cluster: cluster.into(),
                backend: backend.into(),
                kind,
            })
            .get()
    }

    /// The exposition (OpenMetrics text, ending in `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One interactive (`prompt`) runtime API session.
struct Session {
    io: Box<dyn Io>,
    api: String,
    timeout: Duration,
    buf: Vec<u8>,
}

impl Session {
    async fn connect(api: &RuntimeApi, timeout: Duration) -> Result<Session, HaproxyError> {
        let name = api.to_string();
        let connect_err = |source| HaproxyError::Connect {
            api: name.clone(),
            source,
        };
        let timed_out = || {
            connect_err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        };
        let io: Box<dyn Io> = match api {
            RuntimeApi::Tcp(a) => {
                let s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a.as_str()))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(connect_err)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            #[cfg(unix)]
            RuntimeApi::Unix(p) => Box::new(
                tokio::time::timeout(timeout, tokio::net::UnixStream::connect(p))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(connect_err)?,
            ),
            #[cfg(not(unix))]
            RuntimeApi::Unix(_) => {
                return Err(connect_err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "unix sockets are not supported on this platform",
                )));
            }
        };
        let mut s = Session {
            io,
            api: name,
            timeout,
            buf: Vec::with_capacity(4096),
        };
        // Interactive mode: the connection stays open and every reply ends
        // with the "> " prompt.
        s.command("prompt").await?;
        Ok(s)
    }

    /// Send one command and return its reply (without the prompt and the
    /// trailing newlines).
    async fn command(&mut self, command: &str) -> Result<String, HaproxyError> {
        let timeout = self.timeout;
        let api = self.api.clone();
        match tokio::time::timeout(timeout, self.exchange(command)).await {
            Ok(r) => r,
            Err(_) => Err(HaproxyError::Timeout {
                api,
                command: command.to_string(),
                seconds: timeout.as_secs_f64(),
            }),
        }
    }

    async fn exchange(&mut self, command: &str) -> Result<String, HaproxyError> {
        let io_err = |source| HaproxyError::Io {
            api: self.api.clone(),
            source,
        };
        let mut line = Vec::with_capacity(command.len() + 1);
        line.extend_from_slice(command.as_bytes());
        line.push(b'\n');
        self.io.write_all(&line).await.map_err(io_err)?;
        self.io.flush().await.map_err(io_err)?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            if self.buf.ends_with(b"\n> ") || self.buf == b"> " {
                break;
            }
            let n = self
                .io
                .read(&mut chunk)
                .await
                .map_err(|source| HaproxyError::Io {
                    api: self.api.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(HaproxyError::Closed {
                    api: self.api.clone(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = &self.buf[..self.buf.len() - 2];
        Ok(String::from_utf8_lossy(body).trim_end().to_string())
    }
}

/// Start one task per `[[haproxy]]` entry; they stop when `stop` turns true.
pub fn spawn_all(
    list: &[HaproxyConfig],
    ctl: crate::state::Controller,
    metrics: HaproxyMetrics,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    list.iter()
        .map(|cfg| {
            let p = Publisher {
                cfg: cfg.clone(),
                api: parse_runtime_api(&cfg.runtime_api)
                    .unwrap_or_else(|_| RuntimeApi::Tcp(cfg.runtime_api.clone())),
                ctl: ctl.clone(),
                clock: ctl.clock().clone(),
                metrics: metrics.clone(),
                applied: BTreeMap::new(),
                present: BTreeMap::new(),
                dynamic: true,
                last_algorithm: None,
                reported_missing: BTreeSet::new(),
                refused: BTreeMap::new(),
                unpublished_warned: false,
                stats: stats::StatsState::default(),
                stats_warned: false,
            };
            tokio::spawn(p.run(ctl.publisher().subscribe_all(), stop.clone()))
        })
        .collect()
}

/// One HAProxy publisher's state.
struct Publisher {
    cfg: HaproxyConfig,
    api: RuntimeApi,
    ctl: crate::state::Controller,
    clock: Clock,
    metrics: HaproxyMetrics,
    applied: BTreeMap<String, Applied>,
    present: BTreeMap<String, ServerState>,
    dynamic: bool,
    last_algorithm: Option<LbAlgorithm>,
    reported_missing: BTreeSet<String>,
    /// (server, command) HAProxy refused on this connection, and when
    /// (clock elapsed); a server's are forgotten once it is put in maintenance.
    refused: BTreeMap<(String, String), Duration>,
    /// The missing cluster was reported (once until it appears).
    unpublished_warned: bool,
    /// Counters of the previous `show stat` (`stats = true`).
    stats: stats::StatsState,
    /// A stats problem was logged (once until stats work again).
    stats_warned: bool,
}

/// Resolves once `rx` holds `true` (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Why a session ended.
enum End {
    Stop,
    Failed(HaproxyError),
}

impl Publisher {
    fn labels(&self) -> TargetLabels {
        HaproxyMetrics::labels(&self.cfg)
    }

    fn fail(&self, e: &HaproxyError) {
        self.metrics.error(&self.cfg, e);
    }

    async fn run(
        mut self,
        mut rx: watch::Receiver<Arc<PublishedState>>,
        stop: watch::Receiver<bool>,
    ) {
        let timeout = Duration::from_secs_f64(self.cfg.timeout_seconds);
        let max_backoff = Duration::from_secs_f64(self.cfg.max_backoff_seconds).max(MIN_BACKOFF);
        let mut backoff = MIN_BACKOFF;
        let mut stop_rx = stop.clone();
        tracing::info!(
            cluster = %self.cfg.cluster,
            haproxy_backend = %self.cfg.backend,
            runtime_api = %self.api,
            "HAProxy publisher started"
        );
        loop {
            if *stop.borrow() {
                break;
            }
            let connected = tokio::select! {
                r = Session::connect(&self.api, timeout) => r,
                _ = stopped(&mut stop_rx) => break,
            };
            match connected {
                Ok(mut session) => {
                    backoff = MIN_BACKOFF;
                    self.metrics.0.connects.get_or_create(&self.labels()).inc();
                    self.metrics
                        .0
                        .connected
                        .get_or_create(&self.labels())
                        .set(1);
                    tracing::info!(
                        cluster = %self.cfg.cluster,
                        haproxy_backend = %self.cfg.backend,
                        runtime_api = %self.api,
                        "connected to the HAProxy runtime API; applying the whole state"
                    );
                    let end = self.session(&mut session, &mut rx, stop.clone()).await;
                    self.metrics
                        .0
                        .connected
                        .get_or_create(&self.labels())
                        .set(0);
                    match end {
                        End::Stop => break,
                        End::Failed(e) => {
                            self.fail(&e);
                            tracing::warn!(
                                cluster = %self.cfg.cluster,
                                haproxy_backend = %self.cfg.backend,
                                error = %e,
                                "HAProxy runtime API session ended; reconnecting"
                            );
                        }
                    }
                }
                Err(e) => {
                    self.fail(&e);
                    tracing::warn!(
                        cluster = %self.cfg.cluster,
                        haproxy_backend = %self.cfg.backend,
                        error = %e,
                        retry_in_seconds = backoff.as_secs_f64(),
                        "HAProxy runtime API unreachable"
                    );
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
            tokio::select! {
                _ = self.clock.sleep(backoff) => {}
                _ = stopped(&mut stop_rx) => break,
            }
        }
        self.metrics
            .0
            .connected
            .get_or_create(&self.labels())
            .set(0);
        tracing::info!(cluster = %self.cfg.cluster, haproxy_backend = %self.cfg.backend, "HAProxy publisher stopped");
    }

    /// Serve one connection until it fails or the service stops.
    async fn session(
        &mut self,
        s: &mut Session,
        rx: &mut watch::Receiver<Arc<PublishedState>>,
        mut stop: watch::Receiver<bool>,
    ) -> End {
        // A new connection starts from nothing: everything is re-applied.
        self.applied.clear();
        self.reported_missing.clear();
        self.refused.clear();
        match s.command("show info").await {
            Ok(info) => {
                self.dynamic = parse_version(&info).is_none_or(|v| v >= (2, 5));
                if !self.dynamic {
                    tracing::warn!(
                        cluster = %self.cfg.cluster,
                        haproxy_backend = %self.cfg.backend,
                        "this HAProxy predates dynamic servers (2.5): servers are neither added nor deleted"
                    );
                }
            }
            Err(e) => return End::Failed(e),
        }
        if let Err(e) = self.refresh(s).await {
            return End::Failed(e);
        }
        let resync = Duration::from_secs_f64(self.cfg.resync_seconds);
        // A deadline, not a fresh sleep per wake-up: snapshots arriving more
        // often than `resync_seconds` must not postpone the probe (an idle
        // session would hit HAProxy's `stats timeout`).
        let mut next_resync = self.clock.elapsed() + resync;
        loop {
            let snap = rx
                .borrow_and_update()
                .clusters
                .get(&self.cfg.cluster)
                .cloned();
            match snap {
                Some(snap) => {
                    self.unpublished_warned = false;
                    if let Err(e) = self.apply(s, &snap).await {
                        return End::Failed(e);
                    }
                }
                None if !self.unpublished_warned => {
                    self.unpublished_warned = true;
                    tracing::warn!(
                        cluster = %self.cfg.cluster,
                        haproxy_backend = %self.cfg.backend,
                        "the cluster has no published snapshot (unknown or removed): HAProxy is left as it is"
                    );
                }
                None => {}
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The publisher is gone: the service is stopping.
                        return End::Stop;
                    }
                }
                _ = self.clock.sleep_until(next_resync) => {
                    next_resync = self.clock.elapsed() + resync;
                    if let Err(e) = self.refresh(s).await {
                        return End::Failed(e);
                    }
                }
                _ = stopped(&mut stop) => return End::Stop,
            }
        }
    }

    /// Read `show servers state`: which servers exist, and forget what was
    /// applied to any server whose weight or state differs (drift).
    async fn refresh(&mut self, s: &mut Session) -> Result<(), HaproxyError> {
        let reply = s
            .command(&format!("show servers state {}", self.cfg.backend))
            .await?;
        let present = parse_servers_state(&self.cfg.backend, &reply)?;
        let mut drifted = Vec::new();
        for (srv, a) in &self.applied {
            let differs = match present.get(srv) {
                None => true,
                Some(p) => {
                    a.weight.is_some_and(|w| w != p.weight)
                        || a.ready.is_some_and(|r| r != p.ready())
                }
            };
            if differs {
                drifted.push(srv.clone());
            }
        }
        for srv in drifted {
            self.applied.remove(&srv);
            self.metrics.0.drift.get_or_create(&self.labels()).inc();
            tracing::info!(
                cluster = %self.cfg.cluster,
                haproxy_backend = %self.cfg.backend,
                server = %srv,
                "HAProxy reports a server unlike what Aya applied; re-applying it"
            );
        }
        self.present = present;
        if self.cfg.stats {
            self.read_stats(s).await?;
        }
        Ok(())
    }

    /// `show stat BE 4 -1` → the cluster's backend metrics (see [`stats`]).
    /// A reply Aya cannot read is counted (`bad_reply`) and logged once, and
    /// the session goes on: steering does not depend on it.
    async fn read_stats(&mut self, s: &mut Session) -> Result<(), HaproxyError> {
        let command = format!("show stat {} 4 -1", self.cfg.backend);
        let reply = s.command(&command).await?;
        let parsed = match stats::parse_show_stat(&self.cfg.backend, &reply) {
            Ok(p) => p,
            Err(reason) => {
                let e = HaproxyError::BadReply {
                    command,
                    reply: reason,
                };
                self.fail(&e);
                if !self.stats_warned {
                    self.stats_warned = true;
                    tracing::warn!(cluster = %self.cfg.cluster, haproxy_backend = %self.cfg.backend, error = %e, "HAProxy statistics not read");
                }
                return Ok(());
            }
        };
        let Some(cluster) = self.ctl.cluster(&self.cfg.cluster) else {
            return Ok(());
        };
        // HAProxy server → Aya backend: the `servers` map, else the same name.
        let backend_of = |server: &str| -> Option<String> {
            self.cfg
                .servers
                .iter()
                .find(|(_, srv)| srv.as_str() == server)
                .map(|(b, _)| b.clone())
                .or_else(|| {
                    (!self.cfg.servers.values().any(|v| v == server)).then(|| server.to_string())
                })
                .filter(|b| cluster.backends.iter().any(|x| &x.name == b))
        };
        let samples =
            self.stats
                .samples(&self.cfg.cluster, &parsed, backend_of, self.clock.now_ms());
        if samples.is_empty() {
            return Ok(());
        }
        let outcomes = match self.ctl.submit_samples(samples).await {
            Ok(rx) => rx.await.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(error = %e, "HAProxy statistics not ingested");
                return Ok(());
            }
        };
        let rejected: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().err().map(|r| r.message.clone()))
            .collect();
        self.metrics.stats_samples(
            &self.cfg,
            "accepted",
            (outcomes.len() - rejected.len()) as u64,
        );
        self.metrics
            .stats_samples(&self.cfg, "rejected", rejected.len() as u64);
        if let Some(first) = rejected.first() {
            if !self.stats_warned {
                self.stats_warned = true;
                tracing::warn!(cluster = %self.cfg.cluster, haproxy_backend = %self.cfg.backend, rejected = rejected.len(), first = %first, "HAProxy statistics partly rejected by ingest");
            }
        } else {
            self.stats_warned = false;
        }
        Ok(())
    }

    /// Send the commands that take HAProxy to `snap`.
    async fn apply(&mut self, s: &mut Session, snap: &ClusterSnapshot) -> Result<(), HaproxyError> {
        let algorithm = snap.decision.algorithm.algorithm;
        if self.last_algorithm != Some(algorithm) {
            self.last_algorithm = Some(algorithm);
            tracing::info!(
                cluster = %self.cfg.cluster,
                haproxy_backend = %self.cfg.backend,
                algorithm = %algorithm,
                haproxy_balance = balance_for(algorithm),
                "the runtime API cannot change HAProxy's `balance` (a haproxy.cfg setting): \
                 Aya publishes weights and server states only; the closest setting is shown"
            );
        }
        let cluster = self.ctl.cluster(&self.cfg.cluster);
        let wanted = wanted(&self.cfg, snap, cluster.as_ref());
        let opts = PlanOptions {
            add: self.cfg.add_servers,
            remove: self.cfg.remove_servers,
            dynamic: self.dynamic,
        };
        let (steps, missing) = plan(
            &self.cfg.backend,
            &wanted,
            &self.applied,
            &self.present,
            opts,
        );
        for e in missing {
            if let HaproxyError::MissingServer { server, .. } = &e
                && self.reported_missing.insert(server.clone())
            {
                self.fail(&e);
                tracing::warn!(cluster = %self.cfg.cluster, server = %server, error = %e, "server not steered");
            }
        }
        let mut failed = false;
        // Servers whose addition (or maintenance before deletion) failed
        // get no further step this round.
        let mut skip = BTreeSet::new();
        let now = self.clock.elapsed();
        self.refused
            .retain(|_, at| now.saturating_sub(*at) < REFUSED_RETRY);
        for step in steps {
            if skip.contains(&step.server) {
                continue;
            }
            let key = (step.server.clone(), step.command.clone());
            if self.refused.contains_key(&key) {
                failed = true;
                if matches!(step.effect, Effect::Added(_) | Effect::Maint) {
                    skip.insert(step.server.clone());
                }
                continue;
            }
            let reply = s.command(&step.command).await?;
            if !succeeded(&step.command, &reply) {
                failed = true;
                // A server that could not be added gets no state command;
                // a refused weight does not stop a drain.
                if matches!(step.effect, Effect::Added(_) | Effect::Maint) {
                    skip.insert(step.server.clone());
                }
                if !transient_refusal(&reply) {
                    self.refused.insert(key, now);
                }
                let e = HaproxyError::Refused {
                    server: step.server.clone(),
                    command: step.command.clone(),
                    reply,
                };
                self.fail(&e);
                tracing::warn!(
                    cluster = %self.cfg.cluster,
                    haproxy_backend = %self.cfg.backend,
                    server = %step.server,
                    error = %e,
                    "HAProxy refused a command; it is sent again in 30 s, on a new connection, or when the wanted value changes"
                );
                continue;
            }
            self.metrics.0.commands.get_or_create(&self.labels()).inc();
            if step.effect == Effect::Maint {
                // In maintenance now: a refused `del server` may pass.
                self.refused.retain(|(srv, _), _| *srv != step.server);
            }
            tracing::debug!(cluster = %self.cfg.cluster, command = %step.command, "applied");
            self.record_effect(&step);
        }
        if !failed {
            self.metrics
                .0
                .applied_version
                .get_or_create(&self.labels())
                .set(i64::try_from(snap.version).unwrap_or(i64::MAX));
        }
        Ok(())
    }

    /// Record in `applied` and `present` what a step HAProxy accepted changed.
    fn record_effect(&mut self, step: &Step) {
        let a = self.applied.entry(step.server.clone()).or_default();
        match step.effect {
            Effect::Added(w) => {
                *a = Applied {
                    weight: Some(w),
                    ready: None,
                };
                self.present.insert(
                    step.server.clone(),
                    ServerState {
                        weight: w,
                        admin: ADMIN_FORCED_MAINT,
                    },
                );
            }
            Effect::Weight(w) => a.weight = Some(w),
            Effect::Ready(r) => {
                a.ready = Some(r);
                if let Some(p) = self.present.get_mut(&step.server) {
                    p.admin &= !(ADMIN_FORCED_MAINT | ADMIN_FORCED_DRAIN);
                    if !r {
                        p.admin |= ADMIN_FORCED_DRAIN;
                    }
                }
            }
            Effect::Maint => {
                a.ready = None;
                if let Some(p) = self.present.get_mut(&step.server) {
                    p.admin |= ADMIN_FORCED_MAINT;
                }
            }
            Effect::Deleted => {
                self.applied.remove(&step.server);
                self.present.remove(&step.server);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::Endpoint;

    fn cfg() -> HaproxyConfig {
        HaproxyConfig {
            cluster: "web".into(),
            runtime_api: "127.0.0.1:9999".into(),
            backend: "be_web".into(),
            servers: BTreeMap::new(),
            add_servers: true,
            remove_servers: true,
            resync_seconds: 2.0,
            timeout_seconds: 2.0,
            max_backoff_seconds: 10.0,
            stats: false,
        }
    }

    fn w(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(b, w)| (b.to_string(), *w)).collect()
    }

    #[test]
    fn weights_are_scaled_into_haproxy_range_keeping_proportions() {
        let s = scale_weights(&w(&[("a", 1), ("b", 3), ("c", 6)]));
        assert_eq!(s.values().copied().collect::<Vec<_>>(), vec![1, 3, 6]);
        let s = scale_weights(&w(&[("a", 1000), ("b", 3000), ("c", 1)]));
        assert_eq!(s["b"], 256);
        assert_eq!(s["a"], 85);
        // Never 0 for a kept backend.
        assert_eq!(s["c"], 1);
        let s = scale_weights(&w(&[("a", u32::MAX), ("b", u32::MAX / 2)]));
        assert_eq!((s["a"], s["b"]), (256, 128));
        assert!(scale_weights(&[]).is_empty());
    }

    fn snapshot(endpoints: &[(&str, u32)], ejected: &[&str]) -> ClusterSnapshot {
        let decision = aya_policy::Decision {
            outlier_detection: None,
            max_requests: None,
            at: Default::default(),
            weights: vec![],
            ejected: ejected.iter().map(|s| s.to_string()).collect(),
            scaling: Default::default(),
            algorithm: aya_policy::AlgorithmChoice {
                algorithm: LbAlgorithm::PeakEwma,
                rule: String::new(),
            },
            explanation: Default::default(),
        };
        ClusterSnapshot {
            cluster: "web".into(),
            version: 3,
            decision,
            endpoints: endpoints
                .iter()
                .enumerate()
                .map(|(i, (b, w))| Endpoint {
                    backend: b.to_string(),
                    host: "127.0.0.1".into(),
                    port: 9000 + i as u16,
                    weight: *w,
                })
                .collect(),
        }
    }

    fn present(list: &[(&str, u32, u32)]) -> BTreeMap<String, ServerState> {
        list.iter()
            .map(|(s, weight, admin)| {
                (
                    s.to_string(),
                    ServerState {
                        weight: *weight,
                        admin: *admin,
                    },
                )
            })
            .collect()
    }

    const ALL: PlanOptions = PlanOptions {
        add: true,
        remove: true,
        dynamic: true,
    };

    #[test]
    fn plan_sends_weights_states_adds_and_removals_then_only_changes() {
        let mut c = cfg();
        c.servers.insert("a".into(), "srv_a".into());
        let snap = snapshot(&[("a", 1), ("b", 3), ("d", 2)], &["c"]);
        let want = wanted(&c, &snap, None);
        assert_eq!(want["srv_a"].weight, Some(1));
        assert!(!want["c"].ready && want["c"].weight.is_none());
        let have = present(&[("srv_a", 1, 0), ("b", 1, 0), ("c", 1, 0), ("x", 1, 0)]);
        let (steps, missing) = plan("be_web", &want, &BTreeMap::new(), &have, ALL);
        assert!(missing.is_empty());
        let cmds: Vec<&str> = steps.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            cmds,
            vec![
                "add server be_web/d 127.0.0.1:9002 weight 2",
                "enable server be_web/d",
                "set server be_web/b weight 3",
                "set server be_web/srv_a weight 1",
                "set server be_web/b state ready",
                "set server be_web/srv_a state ready",
                "set server be_web/c state drain",
                "set server be_web/x state maint",
                "del server be_web/x",
            ]
        );
        // Once applied, the same wanted state needs nothing; a changed weight one command.
        let mut applied = BTreeMap::new();
        for s in &steps {
            let a: &mut Applied = applied.entry(s.server.clone()).or_default();
            match s.effect {
                Effect::Added(w) | Effect::Weight(w) => a.weight = Some(w),
                Effect::Ready(r) => a.ready = Some(r),
                _ => {}
            }
        }
        let have = present(&[("srv_a", 1, 0), ("b", 3, 0), ("c", 1, 8), ("d", 2, 0)]);
        let (steps, _) = plan("be_web", &want, &applied, &have, ALL);
        assert!(steps.is_empty(), "{steps:?}");
        let want2 = wanted(&c, &snapshot(&[("a", 1), ("b", 5), ("d", 2)], &["c"]), None);
        let (steps, _) = plan("be_web", &want2, &applied, &have, ALL);
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].command, "set server be_web/b weight 5");
    }

    #[test]
    fn missing_servers_are_reported_when_they_cannot_be_added() {
        let want = wanted(&cfg(), &snapshot(&[("a", 1), ("d", 2)], &[]), None);
        let have = present(&[("a", 1, 0), ("x", 1, 0)]);
        for opts in [
            PlanOptions { add: false, ..ALL },
            PlanOptions {
                dynamic: false,
                ..ALL
            },
        ] {
            let (steps, missing) = plan("be_web", &want, &BTreeMap::new(), &have, opts);
            assert_eq!(missing.len(), 1);
            assert_eq!(missing[0].kind(), "missing_server");
            assert!(missing[0].to_string().contains("\"d\""), "{}", missing[0]);
            assert!(steps.iter().all(|s| s.server != "d"));
        }
        // Without remove_servers, unknown servers are left alone.
        let (steps, _) = plan(
            "be_web",
            &want,
            &BTreeMap::new(),
            &have,
            PlanOptions {
                remove: false,
                ..ALL
            },
        );
        assert!(steps.iter().all(|s| s.server != "x"), "{steps:?}");
    }

    #[test]
    fn servers_state_and_version_replies_parse() {
        let reply = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change\n\
3 be_web 1 a 127.0.0.1 2 0 3 1 1 1 0 2 0 0 0 0 - 19001 - 0 0 - - 0\n\
3 be_web 2 b 127.0.0.1 2 8 1 1 0 1 0 2 0 0 0 0 - 19002 - 0 0 - - 0";
        let s = parse_servers_state("be_web", reply).unwrap();
        assert_eq!(
            s["a"],
            ServerState {
                weight: 3,
                admin: 0
            }
        );
        assert!(s["a"].ready() && !s["b"].ready());
        let e = parse_servers_state("nope", "Can't find backend.").unwrap_err();
        assert_eq!(e.kind(), "no_backend");
        assert_eq!(
            parse_servers_state("be_web", "garbage").unwrap_err().kind(),
            "bad_reply"
        );
        assert_eq!(
            parse_version("Name: HAProxy\nVersion: 2.6.12-1+deb12u3\n"),
            Some((2, 6))
        );
        assert!(succeeded(
            "add server x/y 1.2.3.4:5",
            "New server registered."
        ));
        assert!(!succeeded("set server x/y weight 3", "No such server."));
        assert!(transient_refusal(
            "Server still has connections attached to it, cannot remove it."
        ));
        assert!(!transient_refusal(
            "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
        ));
    }

    #[test]
    fn config_errors_name_the_field() {
        assert!(validate_all(&[cfg()]).is_ok());
        let mut unix = cfg();
        unix.runtime_api = "/run/haproxy/admin.sock".into();
        assert_eq!(
            parse_runtime_api(&unix.runtime_api).unwrap(),
            RuntimeApi::Unix("/run/haproxy/admin.sock".into())
        );
        assert!(unix.validate("haproxy[0]").is_ok());
        type Edit = Box<dyn Fn(&mut HaproxyConfig)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.runtime_api = "nope".into()),
                "haproxy[0].runtime_api",
            ),
            (
                Box::new(|c| c.runtime_api = "unix:".into()),
                "haproxy[0].runtime_api",
            ),
            (
                Box::new(|c| c.backend = String::new()),
                "haproxy[0].backend",
            ),
            (
                Box::new(|c| c.backend = "be web".into()),
                "haproxy[0].backend",
            ),
            (
                Box::new(|c| c.cluster = String::new()),
                "haproxy[0].cluster",
            ),
            (
                Box::new(|c| {
                    c.servers.insert("a".into(), "s/1".into());
                }),
                "haproxy[0].servers.\"a\"",
            ),
            (
                Box::new(|c| {
                    c.servers.insert("a".into(), "s1".into());
                    c.servers.insert("b".into(), "s1".into());
                }),
                "haproxy[0].servers.\"b\"",
            ),
            (
                Box::new(|c| c.resync_seconds = 0.0),
                "haproxy[0].resync_seconds",
            ),
            (
                Box::new(|c| c.timeout_seconds = f64::NAN),
                "haproxy[0].timeout_seconds",
            ),
        ];
        for (edit, field) in cases {
            let mut c = cfg();
            edit(&mut c);
            let (f, m) = validate_all(&[c]).unwrap_err();
            assert_eq!(f, field, "{m}");
        }
        let (f, _) = validate_all(&[cfg(), cfg()]).unwrap_err();
        assert_eq!(f, "haproxy[1].backend");
    }
}
