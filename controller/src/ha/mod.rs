//! High availability: several `aya serve` replicas on one etcd
//! (`[ha]` in `aya.toml`, docs/ha.md).
//!
//! - **Election.** Each replica campaigns for the key `{prefix}/leader`
//!   with a transaction "create it if absent", attached to a lease of
//!   `lease_ttl_seconds`; the winner keeps the lease alive. Followers watch
//!   the key and campaign again when it is deleted (the leader's lease
//!   expired or was revoked at shutdown).
//! - **Fencing.** A leader counts itself leader only until its last
//!   confirmed keep-alive plus the TTL minus a margin ([`Replica::is_leader`]),
//!   so it stops ticking before etcd can let another replica win; and every
//!   publication is a transaction that succeeds only while the leader key
//!   is still the one it created (compare on the key's create revision),
//!   so a stale leader (paused, partitioned) cannot publish.
//! - **Decisions.** Only the leader ticks. It writes each new cluster
//!   snapshot to `{prefix}/snapshot/{cluster}`; every replica (the leader
//!   included) publishes the snapshots it reads there, with the key's etcd
//!   revision as the cluster's version and as the whole state's version.
//!   Revisions only grow, so a watcher or an Envoy that moves from one
//!   replica to another never sees a version go backwards.
//! - **Ingest.** Any replica accepts samples. It stores them in its own
//!   store, appends the accepted ones to the ingest log
//!   (`{prefix}/ingest/{replica}/…`, keys on a lease of
//!   `ingest_log_ttl_seconds`), and acknowledges only after etcd committed
//!   them; every other replica applies the log to its own store. A sample
//!   acknowledged by any replica is thus in etcd and on every live replica,
//!   and a new leader ticks on the same latest values.

pub mod etcd;
pub mod spec;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::ingest::{Outcome, RejectReason, Rejection, Sample};
use crate::publish::ClusterSnapshot;
use crate::state::Controller;
use etcd::{Etcd, EtcdError, KeyValue};

/// `[ha]`: the replica's place in a group of replicas on one etcd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaConfig {
    /// etcd client URLs, `http://host:port` (at least one).
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this group in etcd (starts with `/`, no trailing `/`).
    pub prefix: String,
    /// This replica's name, unique in the group.
    pub replica_id: String,
    /// TTL of the leader's lease: a killed leader is replaced about this
    /// long after its last keep-alive (2..=60; etcd's minimum is 2).
    pub lease_ttl_seconds: u64,
    /// How long ingest-log entries stay in etcd (60..=604800).
    pub ingest_log_ttl_seconds: u64,
    /// Deadline of each etcd call.
    pub etcd_timeout_seconds: f64,
    /// TLS to etcd (`https://` endpoints): the PEM file of the CA that
    /// signed etcd's server certificate (required with `https://`).
    pub etcd_ca_file: Option<PathBuf>,
    /// This replica's client certificate (PEM), for etcd's
    /// `--client-cert-auth`; with `etcd_key_file`.
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub etcd_key_file: Option<PathBuf>,
    /// The name etcd's certificate is verified against (default: each
    /// endpoint's host).
    pub etcd_server_name: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            etcd_endpoints: Vec::new(),
            prefix: "/aya".into(),
            replica_id: String::new(),
            lease_ttl_seconds: 3,
            ingest_log_ttl_seconds: 600,
            etcd_timeout_seconds: 2.0,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_server_name: None,
        }
    }
}

impl HaConfig {
    /// Check every value; the error names the field (relative to `[ha]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.etcd_endpoints.is_empty() {
            return Err((
                "etcd_endpoints".into(),
                "at least one etcd client URL (http://host:port) is required".into(),
            ));
        }
        let tls = self.etcd_ca_file.is_some();
        let scheme = if tls { "https://" } else { "http://" };
        for (i, e) in self.etcd_endpoints.iter().enumerate() {
            let field = format!("etcd_endpoints[{i}]");
            let Some(rest) = e.strip_prefix(scheme) else {
                let why = match (tls, e.starts_with("https://")) {
                    (false, true) => {
                        "is https://: give etcd_ca_file (the CA of etcd's certificate) for TLS to etcd"
                    }
                    (true, _) => {
                        "must be https://host:port: etcd_ca_file is set, so every endpoint is TLS"
                    }
                    (false, false) => {
                        "must be http://host:port (or https://host:port with etcd_ca_file)"
                    }
                };
                return Err((field, format!("{e:?} {why}")));
            };
            crate::validate::host_port(rest.trim_end_matches('/'), false)
                .map_err(|m| (field, format!("{e:?}: {m}")))?;
        }
        match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(_), None) => {
                return Err((
                    "etcd_key_file".into(),
                    "is required with etcd_cert_file (the client certificate's key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "etcd_cert_file".into(),
                    "is required with etcd_key_file (the client certificate)".into(),
                ));
            }
            (Some(_), Some(_)) if !tls => {
                return Err((
                    "etcd_ca_file".into(),
                    "is required with a client certificate (TLS to etcd)".into(),
                ));
            }
            _ => {}
        }
        if let Some(n) = &self.etcd_server_name {
            if !tls {
                return Err((
                    "etcd_server_name".into(),
                    "is only used with TLS to etcd (etcd_ca_file)".into(),
                ));
            }
            if n.is_empty()
                || n.len() > 253
                || rustls_pki_types::ServerName::try_from(n.as_str()).is_err()
            {
                return Err((
                    "etcd_server_name".into(),
                    format!("{n:?} is not a DNS name or IP address"),
                ));
            }
        }
        let p = &self.prefix;
        if !(p.starts_with('/')
            && !p.ends_with('/')
            && (2..=128).contains(&p.len())
            && p.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-' | b'/')
            }))
        {
            return Err((
                "prefix".into(),
                format!(
                    "{p:?} must be 2..=128 characters of [A-Za-z0-9_.:/-], start with / and not end with /"
                ),
            ));
        }
        if !crate::config::valid_name(&self.replica_id) {
            return Err((
                "replica_id".into(),
                format!(
                    "{:?} must be 1..=128 characters of [A-Za-z0-9_.:-], unique among the replicas",
                    self.replica_id
                ),
            ));
        }
        if !(2..=60).contains(&self.lease_ttl_seconds) {
            return Err((
                "lease_ttl_seconds".into(),
                format!("{} must be in 2..=60", self.lease_ttl_seconds),
            ));
        }
        if !(60..=604_800).contains(&self.ingest_log_ttl_seconds) {
            return Err((
                "ingest_log_ttl_seconds".into(),
                format!("{} must be in 60..=604800", self.ingest_log_ttl_seconds),
            ));
        }
        let t = self.etcd_timeout_seconds;
        if !(0.1..=30.0).contains(&t) {
            return Err((
                "etcd_timeout_seconds".into(),
                format!("{t} must be in 0.1..=30"),
            ));
        }
        Ok(())
    }
}

/// What this replica is in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not campaigned yet.
    Starting,
    /// Another replica leads (its id, empty when unknown).
    Follower {
        /// The leader's `replica_id`.
        leader: String,
    },
    /// This replica leads.
    Leader,
}

/// The value of the leader key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The leader's `replica_id`.
    pub replica_id: String,
    /// The leader's gRPC address.
    pub listen: String,
}

/// The client TLS settings of `[ha]` (`None` without `etcd_ca_file`);
/// a file that cannot be read is an error naming its field.
fn etcd_tls(cfg: &HaConfig) -> Result<Option<tonic::transport::ClientTlsConfig>, EtcdError> {
    let Some(ca) = &cfg.etcd_ca_file else {
        return Ok(None);
    };
    let identity = cfg
        .etcd_cert_file
        .as_deref()
        .zip(cfg.etcd_key_file.as_deref())
        .map(|(c, k)| (("ha.etcd_cert_file", c), ("ha.etcd_key_file", k)));
    crate::tls::client_tls(
        ("ha.etcd_ca_file", ca),
        identity,
        cfg.etcd_server_name.as_deref(),
    )
    .map(Some)
    .map_err(|message| EtcdError::Endpoint {
        endpoint: cfg.etcd_endpoints.join(","),
        message,
    })
}

/// The leader key of the group under `prefix`.
pub fn leader_key(prefix: &str) -> String {
    format!("{prefix}/leader")
}

/// Counters of the HA mode, on `/metrics`.
#[derive(Debug, Default)]
struct Stats {
    elected: AtomicU64,
    lost: AtomicU64,
    snapshots_applied: AtomicU64,
    publish_failed: AtomicU64,
    ingest_batches_logged: AtomicU64,
    ingest_log_failed: AtomicU64,
    ingest_batches_applied: AtomicU64,
    ingest_samples_refused: AtomicU64,
    specs_applied: AtomicU64,
    spec_conflicts: AtomicU64,
}

struct Leadership {
    /// The leader key's create revision: the fencing token.
    revision: i64,
    /// This replica stops counting itself leader at this instant unless a
    /// keep-alive moves it.
    valid_until: Instant,
}

struct Shared {
    etcd: Etcd,
    cfg: HaConfig,
    listen: String,
    runtime: tokio::runtime::Handle,
    leader_key: Vec<u8>,
    snapshot_prefix: String,
    /// Replicated admin changes (see [`spec`]).
    spec_prefix: String,
    /// The revision of each spec key this replica applied last; its lock
    /// serialises this replica's admin changes with the replicated ones.
    spec_revs: Mutex<std::collections::BTreeMap<Vec<u8>, i64>>,
    ingest_prefix: String,
    leadership: Mutex<Option<Leadership>>,
    role: watch::Sender<Role>,
    ingest_lease: tokio::sync::Mutex<Option<(i64, Instant)>>,
    /// Distinguishes this start's ingest-log keys from an earlier one's.
    nonce: u64,
    seq: AtomicU64,
    log_tx: Mutex<Option<mpsc::Sender<LogJob>>>,
    stats: Stats,
}

/// One batch on its way to the ingest log: the local writer's outcomes,
/// the samples, and where to send the outcomes once etcd committed.
struct LogJob {
    samples: Vec<Sample>,
    local: oneshot::Receiver<Vec<Outcome>>,
    reply: oneshot::Sender<Vec<Outcome>>,
}

/// This replica's handle on its group. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("replica_id", &self.inner.cfg.replica_id)
            .finish_non_exhaustive()
    }
}

/// Largest ingest-log value (etcd refuses requests over 1.5 MiB by default).
const MAX_LOG_VALUE_BYTES: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    /// Connect to etcd (one read, so an unreachable etcd fails the start
    /// here). `listen` is this replica's gRPC address, recorded in the
    /// leader key while it leads. Call from within a Tokio runtime.
    pub async fn connect(cfg: &HaConfig, listen: &str) -> Result<Replica, EtcdError> {
        let etcd = Etcd::with_tls(
            &cfg.etcd_endpoints,
            Duration::from_secs_f64(cfg.etcd_timeout_seconds),
            etcd_tls(cfg)?,
        )?;
        let leader_key = leader_key(&cfg.prefix).into_bytes();
        etcd.get(&leader_key).await?;
        let (role, _) = watch::channel(Role::Starting);
        let nonce = crate::clock::Clock::system().now_ms().max(0) as u64;
        Ok(Replica {
            inner: Arc::new(Shared {
                etcd,
                listen: listen.to_string(),
                runtime: tokio::runtime::Handle::current(),
                leader_key,
                snapshot_prefix: format!("{}/snapshot/", cfg.prefix),
                spec_prefix: format!("{}/spec/", cfg.prefix),
                spec_revs: Mutex::new(Default::default()),
                ingest_prefix: format!("{}/ingest/", cfg.prefix),
                leadership: Mutex::new(None),
                role,
                ingest_lease: tokio::sync::Mutex::new(None),
                nonce,
                seq: AtomicU64::new(0),
                log_tx: Mutex::new(None),
                stats: Stats::default(),
                cfg: cfg.clone(),
            }),
        })
    }

    /// This replica's `replica_id`.
    pub fn id(&self) -> &str {
        &self.inner.cfg.replica_id
    }

    /// The etcd client.
    pub fn etcd(&self) -> &Etcd {
        &self.inner.etcd
    }

    /// Receiver of this replica's role.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.inner.role.subscribe()
    }

    /// Whether this replica leads now: it won the election and its lease
    /// is certainly still alive (last confirmed keep-alive + TTL − margin).
    pub fn is_leader(&self) -> bool {
        self.fencing_token().is_some()
    }

    fn fencing_token(&self) -> Option<i64> {
        lock(&self.inner.leadership)
            .as_ref()
            .filter(|l| crate::clock::transport_now() < l.valid_until)
            .map(|l| l.revision)
    }

    /// How long after a confirmed keep-alive (sent at `sent`) with TTL
    /// `ttl` this replica may still count itself leader: the TTL less a
    /// quarter of it (at least 0.5 s) for clock rates and delays.
    fn valid_until(sent: Instant, ttl_seconds: i64) -> Instant {
        let ttl = ttl_seconds.max(1) as f64;
        sent + Duration::from_secs_f64(ttl - (ttl / 4.0).max(0.5))
    }

    fn step_down(&self, why: &str) {
        let was = lock(&self.inner.leadership).take().is_some();
        if was {
            self.inner.stats.lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(replica = %self.id(), why, "HA: no longer the leader; ticks stop");
            self.inner.role.send_replace(Role::Follower {
                leader: String::new(),
            });
        }
    }

    /// Write a cluster's snapshot (JSON) as the leader, fenced by the
    /// leader key's create revision; returns the write's revision (the
    /// snapshot's version). Blocks: call from a blocking thread.
    pub fn publish_snapshot_blocking(&self, cluster: &str, json: Vec<u8>) -> Result<u64, String> {
        self.inner
            .runtime
            .block_on(self.publish_snapshot(cluster, json))
    }

    /// [`Replica::publish_snapshot_blocking`] on the async side.
    pub async fn publish_snapshot(&self, cluster: &str, json: Vec<u8>) -> Result<u64, String> {
        use etcd::{compare, request_op};
        let Some(token) = self.fencing_token() else {
            return Err(format!(
                "replica {:?} is not the leader: only the leader publishes",
                self.id()
            ));
        };
        let key = format!("{}{cluster}", self.inner.snapshot_prefix).into_bytes();
        let txn = etcd::TxnRequest {
            compare: vec![etcd::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: self.inner.leader_key.clone(),
                target_union: Some(compare::TargetUnion::CreateRevision(token)),
            }],
            success: vec![etcd::RequestOp {
                request: Some(request_op::Request::RequestPut(
                    aya_proto::etcd::PutRequest {
                        key,
                        value: json,
                        lease: 0,
                    },
                )),
            }],
            failure: Vec::new(),
        };
        let r = match self.inner.etcd.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                self.inner
                    .stats
                    .publish_failed
                    .fetch_add(1, Ordering::Relaxed);
                return Err(format!("publishing to etcd failed: {e}"));
            }
        };
        if !r.succeeded {
            self.inner
                .stats
                .publish_failed
                .fetch_add(1, Ordering::Relaxed);
            self.step_down("the leader key is no longer this replica's (fenced)");
            return Err("fenced: another replica holds the leader key".into());
        }
        Ok(r.header.map_or(0, |h| h.revision).max(0) as u64)
    }

    // ------------------------------------------------------------ election

    /// Campaign, lead, and campaign again, until `stop` turns true; then
    /// give the leadership up at once (lease revoked) so that a follower
    /// takes over without waiting for the TTL. `on_leader` runs each time
    /// this replica wins.
    pub async fn run_election(
        self,
        on_leader: Arc<dyn Fn() + Send + Sync>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            match self.campaign_once(&on_leader, &mut stop).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    self.step_down("etcd call failed");
                    tracing::warn!(replica = %self.id(), error = %e, "HA election: etcd call failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn campaign_once(
        &self,
        on_leader: &Arc<dyn Fn() + Send + Sync>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), EtcdError> {
        use etcd::{compare, request_op};
        let etcd = &self.inner.etcd;
        let (lease, ttl) = etcd.grant(self.inner.cfg.lease_ttl_seconds as i64).await?;
        let value = serde_json::to_vec(&LeaderRecord {
            replica_id: self.id().to_string(),
            listen: self.inner.listen.clone(),
        })
        .unwrap_or_default();
        let key = self.inner.leader_key.clone();
        let txn = etcd::TxnRequest {
            compare: vec![etcd::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
            }],
            success: vec![etcd::RequestOp {
                request: Some(request_op::Request::RequestPut(
                    aya_proto::etcd::PutRequest {
                        key: key.clone(),
                        value,
                        lease,
                    },
                )),
            }],
            failure: vec![etcd::RequestOp {
                request: Some(request_op::Request::RequestRange(
                    aya_proto::etcd::RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    },
                )),
            }],
        };
        let sent = crate::clock::transport_now();
        let r = etcd.txn(txn).await?;
        let revision = r.header.as_ref().map_or(0, |h| h.revision);
        if r.succeeded {
            *lock(&self.inner.leadership) = Some(Leadership {
                revision,
                valid_until: Self::valid_until(sent, ttl),
            });
            self.inner.stats.elected.fetch_add(1, Ordering::Relaxed);
            self.inner.role.send_replace(Role::Leader);
            tracing::info!(replica = %self.id(), revision, lease_ttl = ttl, "HA: elected leader");
            on_leader();
            let held = self.hold(lease, ttl, stop).await;
            self.step_down(if held.is_ok() {
                "shutting down"
            } else {
                "lease keep-alive failed"
            });
            // No longer leading: revoke the lease so that the followers see
            // the key deleted at once (at shutdown, or when etcd is
            // reachable again after a failed keep-alive).
            let _ = etcd.revoke(lease).await;
            return held;
        }
        let _ = etcd.revoke(lease).await;
        let leader = r
            .responses
            .into_iter()
            .find_map(|op| match op.response {
                Some(aya_proto::etcd::response_op::Response::ResponseRange(rr)) => {
                    rr.kvs.into_iter().next()
                }
                _ => None,
            })
            .and_then(|kv| serde_json::from_slice::<LeaderRecord>(&kv.value).ok())
            .map_or_else(String::new, |l| l.replica_id);
        if leader == self.id() {
            // Our own key (an earlier leadership, of this start or an
            // earlier one) still alive: wait for its lease to expire like
            // any other leader's.
            tracing::warn!(replica = %self.id(), "HA: the leader key still names this replica from an earlier leadership; waiting for its lease to expire");
        }
        self.inner.role.send_replace(Role::Follower {
            leader: leader.clone(),
        });
        tracing::info!(replica = %self.id(), leader = %leader, "HA: following");
        let mut w = etcd.watch_key(&key, revision + 1).await?;
        loop {
            tokio::select! {
                r = w.next() => {
                    let r = r?;
                    if r.events.iter().any(|e| e.r#type == etcd::event::EventType::Delete as i32) {
                        return Ok(());
                    }
                }
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    /// Keep the leader's lease alive until a keep-alive fails past the
    /// point where the lease may have expired (error) or `stop` (Ok).
    async fn hold(
        &self,
        lease: i64,
        ttl: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), EtcdError> {
        let etcd = &self.inner.etcd;
        let period = Duration::from_secs_f64(ttl.max(1) as f64 / 3.0);
        let sent = crate::clock::transport_now();
        let (mut ka, t) = etcd.keep_alive(lease, period).await?;
        self.renewed(sent, t)?;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            let sent = crate::clock::transport_now();
            match ka.renew().await {
                Ok(t) => self.renewed(sent, t)?,
                Err(e) => {
                    if !self.is_leader() {
                        return Err(e);
                    }
                    tracing::warn!(replica = %self.id(), error = %e, "HA: lease keep-alive failed; retrying while the lease may still be alive");
                    let sent = crate::clock::transport_now();
                    match etcd.keep_alive(lease, period).await {
                        Ok((k, t)) => {
                            ka = k;
                            self.renewed(sent, t)?;
                        }
                        Err(e) if !self.is_leader() => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// A keep-alive sent at `sent` was answered with TTL `ttl`: extend the
    /// leadership, or end it if the lease is gone.
    fn renewed(&self, sent: Instant, ttl: i64) -> Result<(), EtcdError> {
        if ttl <= 0 {
            return Err(EtcdError::Refused {
                call: "LeaseKeepAlive",
                message: "the lease expired".into(),
            });
        }
        if let Some(l) = lock(&self.inner.leadership).as_mut() {
            l.valid_until = Self::valid_until(sent, ttl);
        }
        Ok(())
    }

    // ------------------------------------------------------------ followers

    /// The range of keys one watch follows: the snapshots and the
    /// replicated admin changes (`{prefix}/snapshot/` sorts before
    /// `{prefix}/spec/`, and no other key of the group lies between).
    fn state_range(&self) -> (Vec<u8>, Vec<u8>) {
        (
            self.inner.snapshot_prefix.as_bytes().to_vec(),
            etcd::prefix_end(self.inner.spec_prefix.as_bytes()),
        )
    }

    /// Read every replicated admin change and snapshot (at one revision)
    /// and apply the newer ones, the admin changes first; returns the
    /// revision to watch from.
    pub async fn sync_snapshots(&self, ctl: &Controller) -> Result<i64, EtcdError> {
        let (start, end) = self.state_range();
        let (kvs, rev) = self.inner.etcd.get_range(&start, end).await?;
        let (specs, snaps): (Vec<KeyValue>, Vec<KeyValue>) =
            kvs.into_iter().partition(|kv| self.is_spec(kv));
        self.apply_specs(ctl, specs).await;
        for kv in snaps {
            self.apply_snapshot(ctl, kv).await;
        }
        Ok(rev + 1)
    }

    async fn apply_specs(&self, ctl: &Controller, kvs: Vec<KeyValue>) {
        if kvs.is_empty() {
            return;
        }
        let (me, c) = (self.clone(), ctl.clone());
        let done = tokio::task::spawn_blocking(move || {
            for kv in &kvs {
                me.apply_spec_blocking(&c, kv);
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "HA: applying admin changes of the group failed");
        }
    }

    async fn apply_snapshot(&self, ctl: &Controller, kv: KeyValue) {
        let mut snap: ClusterSnapshot = match serde_json::from_slice(&kv.value) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(&kv.key), error = %e, "HA: undecodable snapshot in etcd; skipped");
                return;
            }
        };
        if ctl.cluster(&snap.cluster).is_none() {
            // Deleted (its admin change came first: one watch, in revision
            // order), or a cluster this replica's file does not declare.
            tracing::debug!(cluster = %snap.cluster, "HA: snapshot of a cluster this replica does not know; skipped");
            return;
        }
        snap.version = kv.mod_revision.max(0) as u64;
        let c = ctl.clone();
        match tokio::task::spawn_blocking(move || c.apply_replicated_snapshot(snap)).await {
            Ok(Ok(true)) => {
                self.inner
                    .stats
                    .snapshots_applied
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "HA: storing a replicated snapshot failed (it is published)")
            }
            Err(e) => tracing::error!(error = %e, "HA: applying a replicated snapshot failed"),
        }
    }

    /// Follow the snapshots and the admin changes from revision `from`
    /// until `stop`, applying every newer one in revision order; after a
    /// broken watch, read them all again and go on.
    pub async fn follow_snapshots(
        self,
        ctl: Controller,
        mut from: i64,
        mut stop: watch::Receiver<bool>,
    ) {
        let (start, end) = self.state_range();
        while !*stop.borrow() {
            match self.inner.etcd.watch_range(&start, end.clone(), from).await {
                Ok(mut w) => loop {
                    let r = tokio::select! {
                        r = w.next() => r,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    match r {
                        Ok(r) => {
                            for ev in r.events {
                                let Some(kv) = ev.kv else { continue };
                                from = from.max(kv.mod_revision + 1);
                                if ev.r#type != etcd::event::EventType::Put as i32 {
                                    continue;
                                }
                                if self.is_spec(&kv) {
                                    self.apply_specs(&ctl, vec![kv]).await;
                                } else {
                                    self.apply_snapshot(&ctl, kv).await;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "HA: snapshot watch broke; resyncing");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "HA: cannot watch snapshots; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.sync_snapshots(&ctl).await {
                Ok(next) => from = from.max(next),
                Err(e) => tracing::warn!(error = %e, "HA: snapshot resync failed; retrying"),
            }
        }
    }

    // ------------------------------------------------------------ ingest log

    /// Start the ingest-log writer: batches are logged in the order they
    /// were queued (so a series' samples reach the other replicas in
    /// order). Ends when `stop` turns true.
    pub fn start_log(&self, stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(64);
        *lock(&self.inner.log_tx) = Some(tx);
        tokio::spawn(self.clone().log_loop(rx, stop))
    }

    async fn log_loop(self, mut rx: mpsc::Receiver<LogJob>, mut stop: watch::Receiver<bool>) {
        loop {
            let job = tokio::select! {
                j = rx.recv() => match j { Some(j) => j, None => return },
                _ = stop.wait_for(|s| *s) => return,
            };
            let Ok(mut outcomes) = job.local.await else {
                // The local writer stopped: the caller sees the batch fail.
                continue;
            };
            let accepted: Vec<Sample> = job
                .samples
                .into_iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.is_ok())
                .map(|(s, _)| s)
                .collect();
            if !accepted.is_empty()
                && let Err(e) = self.log_samples(&accepted).await
            {
                self.inner
                    .stats
                    .ingest_log_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, samples = accepted.len(), "HA: appending to the ingest log failed; the batch is not acknowledged");
                let refusal = Rejection::new(
                    RejectReason::StorageError,
                    format!(
                        "stored on replica {:?} but not replicated to etcd ({e}): not acknowledged, retry",
                        self.id()
                    ),
                );
                for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *o = Err(refusal.clone());
                }
            }
            let _ = job.reply.send(outcomes);
        }
    }

    /// Queue a batch: `local` resolves to the local writer's outcomes; the
    /// returned receiver gets them once the accepted samples are in etcd.
    pub async fn enqueue(
        &self,
        samples: Vec<Sample>,
        local: oneshot::Receiver<Vec<Outcome>>,
    ) -> Option<oneshot::Receiver<Vec<Outcome>>> {
        let tx = lock(&self.inner.log_tx).clone()?;
        let (reply, rx) = oneshot::channel();
        tx.send(LogJob {
            samples,
            local,
            reply,
        })
        .await
        .ok()?;
        Some(rx)
    }

    async fn ingest_lease(&self) -> Result<i64, EtcdError> {
        let ttl = self.inner.cfg.ingest_log_ttl_seconds;
        let mut g = self.inner.ingest_lease.lock().await;
        if let Some((id, at)) = *g
            && at.elapsed() < Duration::from_secs(ttl / 2)
        {
            return Ok(id);
        }
        // A new lease every half TTL, never kept alive: entries live
        // between half the TTL and the TTL.
        let (id, _) = self.inner.etcd.grant(ttl as i64).await?;
        *g = Some((id, crate::clock::transport_now()));
        Ok(id)
    }

    async fn log_samples(&self, samples: &[Sample]) -> Result<(), EtcdError> {
        let lease = self.ingest_lease().await?;
        let mut chunk = Vec::new();
        let mut size = 0usize;
        for s in samples {
            let w = crate::convert::sample_to_wire(s);
            let n = w.encoded_len() + 8;
            if size + n > MAX_LOG_VALUE_BYTES && !chunk.is_empty() {
                self.put_log(std::mem::take(&mut chunk), lease).await?;
                size = 0;
            }
            size += n;
            chunk.push(w);
        }
        if !chunk.is_empty() {
            self.put_log(chunk, lease).await?;
        }
        Ok(())
    }

    async fn put_log(
        &self,
        samples: Vec<aya_proto::v1::Sample>,
        lease: i64,
    ) -> Result<(), EtcdError> {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "{}{}/{:x}-{seq:010}",
            self.inner.ingest_prefix,
            self.id(),
            self.inner.nonce
        );
        let value = aya_proto::v1::IngestBatch {
            sequence: seq,
            samples,
        }
        .encode_to_vec();
        self.inner.etcd.put(key.as_bytes(), value, lease).await?;
        self.inner
            .stats
            .ingest_batches_logged
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The current revision of etcd (where the ingest log is followed from).
    pub async fn revision(&self) -> Result<i64, EtcdError> {
        self.inner
            .etcd
            .get(&self.inner.leader_key)
            .await
            .map(|(_, rev)| rev)
    }

    /// Apply the other replicas' ingest-log entries from revision `from`
    /// to the local store, in log order, until `stop`.
    pub async fn follow_ingest(
        self,
        ctl: Controller,
        mut from: i64,
        mut stop: watch::Receiver<bool>,
    ) {
        let prefix = self.inner.ingest_prefix.clone();
        let own = format!("{prefix}{}/", self.id());
        while !*stop.borrow() {
            match self.inner.etcd.watch_prefix(prefix.as_bytes(), from).await {
                Ok(mut w) => loop {
                    let r = tokio::select! {
                        r = w.next() => r,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    match r {
                        Ok(r) => {
                            for ev in r.events {
                                let Some(kv) = ev.kv else { continue };
                                from = from.max(kv.mod_revision + 1);
                                if ev.r#type != etcd::event::EventType::Put as i32
                                    || kv.key.starts_with(own.as_bytes())
                                {
                                    continue;
                                }
                                self.apply_log_entry(&ctl, &kv).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "HA: ingest-log watch broke; resuming");
                            if matches!(e, EtcdError::Refused { .. }) {
                                // Compacted: what is gone is gone; go on from now.
                                tracing::error!(
                                    "HA: ingest-log entries were compacted before this replica read them: it misses those samples"
                                );
                                if let Ok(rev) = self.revision().await {
                                    from = rev + 1;
                                }
                            }
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "HA: cannot watch the ingest log; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn apply_log_entry(&self, ctl: &Controller, kv: &KeyValue) {
        let batch = match aya_proto::v1::IngestBatch::decode(kv.value.as_slice()) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(&kv.key), error = %e, "HA: undecodable ingest-log entry; skipped");
                return;
            }
        };
        let samples = batch
            .samples
            .into_iter()
            .map(crate::convert::sample_from_wire)
            .collect();
        match ctl.submit_local(samples).await {
            Ok(rx) => {
                self.inner
                    .stats
                    .ingest_batches_applied
                    .fetch_add(1, Ordering::Relaxed);
                let me = self.clone();
                tokio::spawn(async move {
                    if let Ok(outcomes) = rx.await {
                        let refused = outcomes.iter().filter(|o| o.is_err()).count() as u64;
                        if refused > 0 {
                            me.inner
                                .stats
                                .ingest_samples_refused
                                .fetch_add(refused, Ordering::Relaxed);
                            tracing::debug!(refused, "HA: samples of the ingest log refused here");
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "HA: applying the ingest log failed"),
        }
    }

    /// The HA lines of `/metrics` (OpenMetrics text, no `# EOF`).
    pub fn render(&self) -> String {
        let s = &self.inner.stats;
        let id = self.id();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# TYPE {name} {kind}\n# HELP {name} {help}\n{name}{}{{replica=\"{id}\"}} {value}\n",
                if kind == "counter" { "_total" } else { "" }
            ));
        };
        line(
            "aya_ha_leader",
            "gauge",
            "1 while this replica leads its HA group.",
            self.is_leader() as u64,
        );
        line(
            "aya_ha_elections_won",
            "counter",
            "Elections this replica won.",
            g(&s.elected),
        );
        line(
            "aya_ha_leadership_lost",
            "counter",
            "Times this replica stopped leading (fenced, keep-alive failed, shutdown).",
            g(&s.lost),
        );
        line(
            "aya_ha_snapshot_publish_failures",
            "counter",
            "Snapshot writes to etcd that failed or were fenced.",
            g(&s.publish_failed),
        );
        line(
            "aya_ha_snapshots_applied",
            "counter",
            "Replicated snapshots published by this replica.",
            g(&s.snapshots_applied),
        );
        line(
            "aya_ha_specs_applied",
            "counter",
            "Admin changes of other replicas (clusters, backends, events, overrides) applied here.",
            g(&s.specs_applied),
        );
        line(
            "aya_ha_spec_conflicts",
            "counter",
            "Admin changes refused here (ABORTED) because another replica changed the same cluster first.",
            g(&s.spec_conflicts),
        );
        line(
            "aya_ha_ingest_batches_logged",
            "counter",
            "Ingest-log entries this replica wrote.",
            g(&s.ingest_batches_logged),
        );
        line(
            "aya_ha_ingest_log_failures",
            "counter",
            "Batches not acknowledged because the ingest log could not be written.",
            g(&s.ingest_log_failed),
        );
        line(
            "aya_ha_ingest_batches_applied",
            "counter",
            "Other replicas' ingest-log entries applied here.",
            g(&s.ingest_batches_applied),
        );
        line(
            "aya_ha_ingest_samples_refused",
            "counter",
            "Samples of other replicas' entries this replica's writer refused (e.g. out of order).",
            g(&s.ingest_samples_refused),
        );
        out
    }
}

/// The running HA tasks of a replica.
#[derive(Debug)]
pub struct HaTasks {
    election: tokio::task::JoinHandle<()>,
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl HaTasks {
    /// Wait for the election to give the leadership up, then for the others.
    pub async fn join(self) {
        let _ = self.election.await;
        for t in self.others {
            let _ = t.await;
        }
    }
}

/// Run `ctl`'s part in the group it joined ([`Controller::set_replica`]):
/// publish the replicated snapshots, start following them and the ingest
/// log, start the ingest-log writer and the election (whose wins tick at
/// once). Every task stops when `stop` turns true. `None` without a group.
pub async fn start(
    ctl: &Controller,
    stop: &watch::Receiver<bool>,
) -> Option<Result<HaTasks, EtcdError>> {
    let replica = ctl.replica()?.clone();
    Some(start_replica(ctl, replica, stop).await)
}

async fn start_replica(
    ctl: &Controller,
    replica: Replica,
    stop: &watch::Receiver<bool>,
) -> Result<HaTasks, EtcdError> {
    let from = replica.sync_snapshots(ctl).await?;
    let mut others = vec![
        tokio::spawn(
            replica
                .clone()
                .follow_snapshots(ctl.clone(), from, stop.clone()),
        ),
        tokio::spawn(
            replica
                .clone()
                .follow_ingest(ctl.clone(), from, stop.clone()),
        ),
    ];
    others.push(replica.start_log(stop.clone()));
    let c = ctl.clone();
    let on_leader: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        let c = c.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = c.tick_all(c.clock().now_secs()) {
                tracing::error!(error = %e, "first tick as the new leader failed");
            }
        });
    });
    let election = tokio::spawn(replica.run_election(on_leader, stop.clone()));
    Ok(HaTasks { election, others })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> HaConfig {
        HaConfig {
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            replica_id: "a".into(),
            ..HaConfig::default()
        }
    }

    #[test]
    fn every_ha_value_is_checked_with_its_field_named() {
        assert_eq!(valid().validate(), Ok(()));
        type Change = Box<dyn Fn(&mut HaConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.etcd_endpoints.clear()), "etcd_endpoints"),
            (
                Box::new(|c| c.etcd_endpoints = vec!["https://127.0.0.1:2379".into()]),
                "etcd_endpoints[0]",
            ),
            (
                Box::new(|c| c.etcd_endpoints = vec!["http://127.0.0.1".into()]),
                "etcd_endpoints[0]",
            ),
            (Box::new(|c| c.prefix = "aya".into()), "prefix"),
            (Box::new(|c| c.prefix = "/aya/".into()), "prefix"),
            (Box::new(|c| c.replica_id = String::new()), "replica_id"),
            (Box::new(|c| c.replica_id = "a b".into()), "replica_id"),
            (Box::new(|c| c.lease_ttl_seconds = 1), "lease_ttl_seconds"),
            (Box::new(|c| c.lease_ttl_seconds = 61), "lease_ttl_seconds"),
            (
                Box::new(|c| c.ingest_log_ttl_seconds = 59),
                "ingest_log_ttl_seconds",
            ),
            (
                Box::new(|c| c.etcd_timeout_seconds = f64::NAN),
                "etcd_timeout_seconds",
            ),
            // TLS to etcd: https needs the CA, and the CA means https everywhere.
            (
                Box::new(|c| c.etcd_ca_file = Some("ca.pem".into())),
                "etcd_endpoints[0]",
            ),
            (
                Box::new(|c| {
                    c.etcd_ca_file = Some("ca.pem".into());
                    c.etcd_endpoints = vec![
                        "https://127.0.0.1:2379".into(),
                        "http://127.0.0.1:2380".into(),
                    ];
                }),
                "etcd_endpoints[1]",
            ),
            (
                Box::new(|c| {
                    c.etcd_endpoints = vec!["https://127.0.0.1:2379".into()];
                    c.etcd_ca_file = Some("ca.pem".into());
                    c.etcd_cert_file = Some("client.pem".into());
                }),
                "etcd_key_file",
            ),
            (
                Box::new(|c| c.etcd_key_file = Some("client.key".into())),
                "etcd_cert_file",
            ),
            (
                Box::new(|c| {
                    c.etcd_cert_file = Some("client.pem".into());
                    c.etcd_key_file = Some("client.key".into());
                }),
                "etcd_ca_file",
            ),
            (
                Box::new(|c| c.etcd_server_name = Some("etcd".into())),
                "etcd_server_name",
            ),
            (
                Box::new(|c| {
                    c.etcd_endpoints = vec!["https://127.0.0.1:2379".into()];
                    c.etcd_ca_file = Some("ca.pem".into());
                    c.etcd_server_name = Some("not a name".into());
                }),
                "etcd_server_name",
            ),
        ];
        let mut tls = valid();
        tls.etcd_endpoints = vec!["https://10.0.0.5:2379".into()];
        tls.etcd_ca_file = Some("ca.pem".into());
        tls.etcd_cert_file = Some("client.pem".into());
        tls.etcd_key_file = Some("client.key".into());
        tls.etcd_server_name = Some("etcd.internal".into());
        assert_eq!(tls.validate(), Ok(()));
        for (change, field) in cases {
            let mut c = valid();
            change(&mut c);
            let (f, m) = c.validate().unwrap_err();
            assert_eq!(f, field, "{m}");
        }
    }

    #[test]
    fn the_ha_section_is_read_from_aya_toml_and_checked_at_start() {
        use crate::config::Config;
        let path = std::path::Path::new("aya.toml");
        let text = "[ha]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nreplica_id = \"a\"\n";
        let mut c = Config::from_toml(text, path).unwrap();
        c.validate().unwrap();
        assert_eq!(c.ha.as_ref().unwrap().lease_ttl_seconds, 3);
        let mut c = Config::from_toml(&format!("{text}lease_ttl_seconds = 1\n"), path).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("ha.lease_ttl_seconds"), "{e}");
        let e = Config::from_toml("[ha]\nreplicas = 3\n", path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("replicas"), "{e}");
        assert!(Config::default().ha.is_none(), "off by default");
    }

    #[test]
    fn leadership_ends_before_the_lease_can_expire() {
        let t = crate::clock::transport_now();
        assert_eq!(Replica::valid_until(t, 2), t + Duration::from_millis(1500));
        assert_eq!(Replica::valid_until(t, 8), t + Duration::from_secs(6));
    }
}
