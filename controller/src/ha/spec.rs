//! Replicated admin changes: what operators change over the admin API
//! (clusters and their backends, events and policies, and overrides)
//! reaches every replica of the group through etcd.
//!
//! Keys, next to the snapshots so that one watch follows both in revision
//! order (`{prefix}/snapshot/` < `{prefix}/spec/`):
//!
//! | key | value |
//! |---|---|
//! | `{prefix}/spec/cluster/{name}` | the cluster's configuration (JSON), `null` once deleted |
//! | `{prefix}/spec/override/{name}` | the cluster's operator override (JSON), `null` once cleared |
//!
//! A change is made at whichever replica receives it: one transaction that
//! succeeds only if each key is still at the revision this replica last
//! applied (compare-and-set, so a replica that has not yet seen another
//! replica's change to the same cluster cannot overwrite it: the caller
//! gets `ABORTED` and retries), then the local change, under the lock that
//! also serialises the changes replicated from the others. Every replica
//! (the one that made it included, which skips it) applies each key's newer
//! revisions from the watch; the leader ticks on them and publishes.
//! Tombstones (`null`) stay, so a replica restarted on an old store does
//! not bring a deleted cluster back.

use std::sync::atomic::Ordering;

use super::etcd::{self, KeyValue, compare, request_op};
use super::{Replica, lock};
use crate::config::ClusterConfig;
use crate::state::{Controller, ControllerError, Override};

/// One replicated admin change, as read from its key.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// A cluster's configuration; `None`: deleted.
    Cluster(String, Option<Box<ClusterConfig>>),
    /// A cluster's override; `None`: cleared.
    Override(String, Option<Override>),
}

impl Replica {
    /// The key of cluster `name`'s configuration.
    pub fn spec_cluster_key(&self, name: &str) -> Vec<u8> {
        format!("{}cluster/{name}", self.inner.spec_prefix).into_bytes()
    }

    /// The key of cluster `name`'s override.
    pub fn spec_override_key(&self, name: &str) -> Vec<u8> {
        format!("{}override/{name}", self.inner.spec_prefix).into_bytes()
    }

    /// The key of cluster `name`'s published snapshot.
    pub fn snapshot_key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.inner.snapshot_prefix).into_bytes()
    }

    /// Make an admin change in the group: put `puts` (compare-and-set on
    /// the revisions this replica last applied) and delete `deletes` in one
    /// etcd transaction, then run `apply` (the same change on this replica)
    /// and record the write's revision for the keys. Blocks: call from a
    /// blocking thread. Nothing is changed anywhere if etcd refuses or
    /// cannot be reached; if `apply` fails, the watch applies the change
    /// here again.
    pub fn change_spec<T>(
        &self,
        puts: Vec<(Vec<u8>, Vec<u8>)>,
        deletes: Vec<Vec<u8>>,
        apply: impl FnOnce() -> Result<T, ControllerError>,
    ) -> Result<T, ControllerError> {
        let mut revs = lock(&self.inner.spec_revs);
        let compare = puts
            .iter()
            .map(|(k, _)| etcd::Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: k.clone(),
                target_union: Some(compare::TargetUnion::ModRevision(
                    revs.get(k).copied().unwrap_or(0),
                )),
            })
            .collect();
        let mut success: Vec<etcd::RequestOp> = puts
            .iter()
            .map(|(k, v)| etcd::RequestOp {
                request: Some(request_op::Request::RequestPut(
                    aya_proto::etcd::PutRequest {
                        key: k.clone(),
                        value: v.clone(),
                        lease: 0,
                    },
                )),
            })
            .collect();
        success.extend(deletes.into_iter().map(|k| etcd::RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                aya_proto::etcd::DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                },
            )),
        }));
        let txn = etcd::TxnRequest {
            compare,
            success,
            failure: Vec::new(),
        };
        let r = self
            .inner
            .runtime
            .block_on(self.inner.etcd.txn(txn))
            .map_err(|e| {
                ControllerError::Unavailable(format!(
                    "not changed: the change could not be written to etcd for the HA group: {e}"
                ))
            })?;
        if !r.succeeded {
            self.inner
                .stats
                .spec_conflicts
                .fetch_add(1, Ordering::Relaxed);
            return Err(ControllerError::Conflict(format!(
                "not changed: another replica of the HA group changed the same cluster and replica {:?} has not applied it yet; retry",
                self.id()
            )));
        }
        let rev = r.header.map_or(0, |h| h.revision);
        let out = apply()?;
        for (k, _) in puts {
            revs.insert(k, rev);
        }
        Ok(out)
    }

    /// Decode a spec key's value (`None` for a key that is not a spec).
    fn decode_spec(&self, kv: &KeyValue) -> Option<Result<Spec, String>> {
        let key = std::str::from_utf8(&kv.key).ok()?;
        let rest = key.strip_prefix(&self.inner.spec_prefix)?;
        let (kind, name) = rest.split_once('/')?;
        let name = name.to_string();
        Some(match kind {
            "cluster" => serde_json::from_slice::<Option<Box<ClusterConfig>>>(&kv.value)
                .map(|c| Spec::Cluster(name, c))
                .map_err(|e| e.to_string()),
            "override" => serde_json::from_slice::<Option<Override>>(&kv.value)
                .map(|o| Spec::Override(name, o))
                .map_err(|e| e.to_string()),
            other => Err(format!("unknown kind {other:?}")),
        })
    }

    /// Apply one spec key read from etcd if it is newer than what this
    /// replica applied. Blocks (the controller's changes are synchronous).
    pub(super) fn apply_spec_blocking(&self, ctl: &Controller, kv: &KeyValue) {
        let mut revs = lock(&self.inner.spec_revs);
        if revs
            .get(&kv.key)
            .is_some_and(|applied| *applied >= kv.mod_revision)
        {
            return;
        }
        let key = String::from_utf8_lossy(&kv.key).into_owned();
        match self.decode_spec(kv) {
            None => return,
            Some(Err(e)) => {
                tracing::error!(key, error = %e, "HA: undecodable admin change in etcd; skipped");
            }
            Some(Ok(spec)) => match ctl.apply_replicated_spec(spec) {
                Ok(()) => {
                    self.inner
                        .stats
                        .specs_applied
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(key, error = %e, "HA: applying an admin change of the group failed here; skipped");
                }
            },
        }
        // Recorded even when it failed: the next change of the key is
        // applied, this one is not retried forever.
        revs.insert(kv.key.clone(), kv.mod_revision);
    }

    /// Whether `kv` is a spec key.
    pub(super) fn is_spec(&self, kv: &KeyValue) -> bool {
        kv.key.starts_with(self.inner.spec_prefix.as_bytes())
    }
}
