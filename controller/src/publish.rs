//! Publishing: the one place where decisions become visible to data planes.
//!
//! Every consumer (aya.v1 `Watch` streams, the Envoy xDS server, the KEDA
//! external scaler) reads the same state through `tokio::sync::watch`
//! receivers. A `watch` channel holds exactly one value, so a slow consumer
//! only ever sees the latest snapshot and nothing queues up: memory stays flat
//! however many watchers stop reading.
//!
//! Two levels are published:
//! - per cluster, a `watch::Sender<Arc<ClusterSnapshot>>` (what `Watch` streams
//!   for one cluster subscribe to);
//! - the whole set, a `watch::Sender<Arc<PublishedState>>` (what xDS and KEDA
//!   subscribe to: they serve every cluster on one stream).
//!
//! Versions: each cluster snapshot carries its own monotonically increasing
//! version; [`PublishedState::version`] increases whenever any cluster's
//! snapshot changes (or a cluster is added or removed). Versions survive
//! restarts (the store keeps the last published snapshots).
//!
//! This module is a stable interface for the xDS and KEDA servers:
//! - `Publisher::subscribe_all()` returns a `watch::Receiver<Arc<PublishedState>>`;
//! - `Publisher::subscribe(cluster)` returns a `watch::Receiver<Arc<ClusterSnapshot>>`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aya_policy::Decision;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One backend as data planes must see it: where it is and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Backend name, unique within its cluster.
    pub backend: String,
    /// Host (IP address or DNS name) of the backend.
    pub host: String,
    /// TCP port of the backend.
    pub port: u16,
    /// Published weight, always ≥ 1 (Envoy and gRPC NACK a zero weight).
    pub weight: u32,
}

/// The decisions of one cluster at one version: what every data plane of that
/// cluster applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    /// Cluster name (the Envoy cluster name, the KEDA scaled object's cluster).
    pub cluster: String,
    /// Version of this cluster's snapshot, increasing by one per publication.
    pub version: u64,
    /// The decision that was published (weights, ejections, scaling, algorithm).
    pub decision: Decision,
    /// Endpoints that should receive traffic (backends present in
    /// `decision.weights`, joined with their addresses), sorted by backend name.
    pub endpoints: Vec<Endpoint>,
}

/// Every cluster's current snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PublishedState {
    /// Increases whenever any cluster's snapshot changes or the cluster set changes.
    pub version: u64,
    /// Current snapshot per cluster name.
    pub clusters: BTreeMap<String, Arc<ClusterSnapshot>>,
}

struct Inner {
    all: watch::Sender<Arc<PublishedState>>,
    per_cluster: BTreeMap<String, watch::Sender<Arc<ClusterSnapshot>>>,
}

/// Owner of the published state. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Default for Publisher {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Publisher {
    /// An empty publisher whose global version starts at `version`.
    pub fn new(version: u64) -> Self {
        let (all, _) = watch::channel(Arc::new(PublishedState {
            version,
            clusters: BTreeMap::new(),
        }));
        Publisher {
            inner: Arc::new(Mutex::new(Inner {
                all,
                per_cluster: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps inconsistent
        // (every update is a single insert), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Receiver of every cluster's state (for xDS, KEDA and metrics). The
    /// receiver's current value is the latest state.
    pub fn subscribe_all(&self) -> watch::Receiver<Arc<PublishedState>> {
        self.lock().all.subscribe()
    }

    /// Receiver of one cluster's snapshots, or `None` when the cluster has
    /// never been published. The sender is dropped (and the receiver sees
    /// `changed()` fail) when the cluster is removed.
    pub fn subscribe(&self, cluster: &str) -> Option<watch::Receiver<Arc<ClusterSnapshot>>> {
        self.lock().per_cluster.get(cluster).map(|s| s.subscribe())
    }

    /// The current snapshot of `cluster`.
    pub fn current(&self, cluster: &str) -> Option<Arc<ClusterSnapshot>> {
        self.lock()
            .per_cluster
            .get(cluster)
            .map(|s| s.borrow().clone())
    }

    /// The current state of every cluster.
    pub fn state(&self) -> Arc<PublishedState> {
        self.lock().all.borrow().clone()
    }

    /// Publish `snapshot` as the current one of its cluster. The caller sets
    /// the version (the controller increments it and stores it first).
    pub fn publish(&self, snapshot: ClusterSnapshot) -> Arc<ClusterSnapshot> {
        let mut inner = self.lock();
        Self::publish_locked(&mut inner, snapshot, |prev| prev + 1)
    }

    /// Publish a snapshot replicated from an HA group, whose version is the
    /// etcd revision of its write: only when it is newer than the cluster's
    /// current snapshot (else `None`). The whole state's version becomes
    /// that revision (or the previous version plus one, if that is higher),
    /// so replicas that applied the same writes report the same versions,
    /// and they only grow.
    ///
    /// A snapshot this replica already has still raises the whole state's
    /// version to its revision (nothing changes for data planes): a replica
    /// restarted on its store, where the whole state's version counts its
    /// restores, then reports the group's version like the others.
    pub fn publish_replicated(&self, snapshot: ClusterSnapshot) -> Option<Arc<ClusterSnapshot>> {
        let mut inner = self.lock();
        if let Some(tx) = inner.per_cluster.get(&snapshot.cluster)
            && tx.borrow().version >= snapshot.version
        {
            let prev = inner.all.borrow().clone();
            if prev.version < snapshot.version {
                inner.all.send_replace(Arc::new(PublishedState {
                    version: snapshot.version,
                    clusters: prev.clusters.clone(),
                }));
            }
            return None;
        }
        let v = snapshot.version;
        Some(Self::publish_locked(&mut inner, snapshot, |prev| {
            v.max(prev + 1)
        }))
    }

    fn publish_locked(
        inner: &mut Inner,
        snapshot: ClusterSnapshot,
        next_version: impl FnOnce(u64) -> u64,
    ) -> Arc<ClusterSnapshot> {
        let snap = Arc::new(snapshot);
        match inner.per_cluster.get(&snap.cluster) {
            Some(tx) => {
                tx.send_replace(snap.clone());
            }
            None => {
                let (tx, _) = watch::channel(snap.clone());
                inner.per_cluster.insert(snap.cluster.clone(), tx);
            }
        }
        let prev = inner.all.borrow().clone();
        let mut clusters = prev.clusters.clone();
        clusters.insert(snap.cluster.clone(), snap.clone());
        inner.all.send_replace(Arc::new(PublishedState {
            version: next_version(prev.version),
            clusters,
        }));
        snap
    }

    /// Remove `cluster`: its watchers see the end of their stream.
    pub fn remove(&self, cluster: &str) {
        let mut inner = self.lock();
        if inner.per_cluster.remove(cluster).is_some() {
            let prev = inner.all.borrow().clone();
            let mut clusters = prev.clusters.clone();
            clusters.remove(cluster);
            inner.all.send_replace(Arc::new(PublishedState {
                version: prev.version + 1,
                clusters,
            }));
        }
    }

    /// Number of live receivers across all clusters (per-cluster watchers plus
    /// whole-state subscribers), for the `aya_watchers` gauge.
    pub fn receiver_count(&self) -> usize {
        let inner = self.lock();
        inner
            .per_cluster
            .values()
            .map(|s| s.receiver_count())
            .sum::<usize>()
            + inner.all.receiver_count()
    }
}

/// A snapshot for unit tests.
#[cfg(test)]
pub(crate) fn test_snapshot(cluster: &str, version: u64, replicas: u32) -> ClusterSnapshot {
    tests::snap(cluster, version, replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn snap(cluster: &str, version: u64, replicas: u32) -> ClusterSnapshot {
        let mut decision = Decision {
            outlier_detection: None,
            max_requests: None,
            at: 0.0,
            weights: Vec::new(),
            ejected: Vec::new(),
            scaling: Default::default(),
            algorithm: aya_policy::AlgorithmChoice {
                algorithm: aya_policy::LbAlgorithm::RoundRobin,
                rule: "test".into(),
            },
            explanation: Default::default(),
        };
        decision.scaling.desired_replicas = replicas;
        ClusterSnapshot {
            cluster: cluster.into(),
            version,
            decision,
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn replicated_snapshots_apply_only_when_newer_and_set_the_state_version() {
        let p = Publisher::new(3);
        let first = p.publish_replicated(snap("web", 40, 1)).unwrap();
        assert_eq!(first.version, 40);
        assert_eq!(p.state().version, 40, "the revision, not 3 + 1");
        assert!(p.publish_replicated(snap("web", 40, 2)).is_none(), "same");
        assert!(p.publish_replicated(snap("web", 39, 2)).is_none(), "older");
        assert_eq!(
            p.current("web").unwrap().decision.scaling.desired_replicas,
            1
        );
        p.publish_replicated(snap("api", 41, 1)).unwrap();
        p.publish_replicated(snap("web", 57, 2)).unwrap();
        assert_eq!(p.state().version, 57);
        assert_eq!(p.state().clusters.len(), 2);
        // A replica restarted on its store: the snapshot is restored at its
        // revision, the whole state's version counts restores; the same
        // snapshot from etcd raises it to the revision.
        let r = Publisher::new(0);
        r.publish(snap("web", 57, 2));
        assert_eq!(r.state().version, 1);
        assert!(r.publish_replicated(snap("web", 57, 2)).is_none());
        assert_eq!(r.state().version, 57);
        // Never below the previous state version plus one.
        let q = Publisher::new(100);
        q.publish_replicated(snap("web", 7, 1)).unwrap();
        assert_eq!(q.state().version, 101);
    }
}
