//! The cluster registry: clusters and their backends (stored, and
//! published again at once when they change), and operator overrides.

use std::sync::Arc;

use super::runtime::new_runtime;
use super::{Controller, ControllerError, Override, lock, lock_read, model_key};
use crate::config::{
    AddedEvent, BackendConfig, ClusterConfig, ClusterEvents, MAX_ADDED_EVENTS, check_event,
};
use aya_forecaster::events::Event;

/// Id prefix of the events added over the admin API (`api-1`, ...).
pub const ADDED_PREFIX: &str = "api-";
/// Id prefix of a calendar file's events (`file-1` is its first event).
pub const FILE_PREFIX: &str = "file-";
use crate::policies;
use crate::publish::ClusterSnapshot;

impl Controller {
    /// Every cluster's configuration, sorted by name.
    pub fn clusters(&self) -> Vec<ClusterConfig> {
        lock_read(&self.inner.registry).values().cloned().collect()
    }

    /// One cluster's configuration.
    pub fn cluster(&self, name: &str) -> Option<ClusterConfig> {
        lock_read(&self.inner.registry).get(name).cloned()
    }

    /// The cluster as the configuration file declares it (at start or the
    /// last reload), if the file names it: what file-only settings such as
    /// `[clusters.orca]` are read from.
    pub fn file_cluster(&self, name: &str) -> Option<ClusterConfig> {
        lock(&self.inner.applied)
            .iter()
            .find(|c| c.name == name)
            .cloned()
    }

    /// Create or replace a cluster, store it and publish its new state.
    /// In an HA group the change is made through etcd and reaches every
    /// replica ([`crate::ha::spec`]); the leader publishes it.
    pub fn upsert_cluster(&self, mut cfg: ClusterConfig) -> Result<ClusterConfig, ControllerError> {
        cfg.normalise("cluster")?;
        let policy = if cfg.policy.is_empty() {
            &self.inner.config.default_policy
        } else {
            &cfg.policy
        };
        policies::check(policy, &cfg.policy_params)?;
        match self.replica() {
            None => self.store_cluster(&cfg)?,
            // Already so (e.g. a reload of the file another replica's reload
            // replicated): nothing to write.
            Some(_) if self.cluster(&cfg.name).as_ref() == Some(&cfg) => return Ok(cfg),
            Some(r) => {
                let json = serde_json::to_vec(&Some(&cfg))
                    .map_err(|e| ControllerError::Invalid(e.to_string()))?;
                r.change_spec(
                    vec![(r.spec_cluster_key(&cfg.name), json)],
                    Vec::new(),
                    || self.store_cluster(&cfg),
                )?;
            }
        }
        self.tick_cluster(&cfg.name, self.inner.clock.now_secs())?;
        Ok(cfg)
    }

    /// Store a (normalised, checked) cluster configuration and put it in
    /// the registry.
    fn store_cluster(&self, cfg: &ClusterConfig) -> Result<(), ControllerError> {
        let json =
            serde_json::to_string(cfg).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.inner.store.put_cluster(&cfg.name, Some(&json))?;
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cfg.name.clone(), cfg.clone());
        if let Some(a) = &self.inner.anomalies {
            let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
            a.retain_backends(&cfg.name, &names);
        }
        Ok(())
    }

    /// Delete a cluster; its watchers' streams end. Returns whether it
    /// existed. In an HA group the deletion reaches every replica (and
    /// removes the cluster's snapshot and override from etcd).
    pub fn delete_cluster(&self, name: &str) -> Result<bool, ControllerError> {
        match self.replica() {
            None => self.remove_cluster(name),
            Some(_) if self.cluster(name).is_none() => Ok(false),
            Some(r) => r.change_spec(
                vec![
                    (r.spec_cluster_key(name), b"null".to_vec()),
                    (r.spec_override_key(name), b"null".to_vec()),
                ],
                vec![r.snapshot_key(name)],
                || self.remove_cluster(name),
            ),
        }
    }

    /// Remove a cluster and everything of it from this replica.
    fn remove_cluster(&self, name: &str) -> Result<bool, ControllerError> {
        let existed = self
            .inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some();
        if existed {
            self.inner.store.put_cluster(name, None)?;
            self.inner.store.put_snapshot(name, None)?;
            self.inner.store.put_override(name, None)?;
            lock(&self.inner.runtimes).remove(name);
            lock(&self.inner.ingest).forget_cluster(name);
            self.inner.publisher.remove(name);
            lock(&self.inner.pending_demand).retain(|(c, _, _)| c != name);
            self.inner.store.retain_demand(name, i64::MAX)?;
            self.inner.store.delete_model(&model_key(name))?;
            self.inner.metrics.forget_cluster(name);
            if let Some(a) = &self.inner.anomalies {
                a.forget_cluster(name);
            }
        }
        Ok(existed)
    }

    /// Add or replace a backend.
    pub fn upsert_backend(
        &self,
        cluster: &str,
        backend: BackendConfig,
    ) -> Result<ClusterConfig, ControllerError> {
        let mut cfg = self.known(cluster)?;
        cfg.backends.retain(|b| b.name != backend.name);
        cfg.backends.push(backend);
        self.upsert_cluster(cfg)
    }

    /// Remove a backend.
    pub fn delete_backend(
        &self,
        cluster: &str,
        backend: &str,
    ) -> Result<ClusterConfig, ControllerError> {
        let mut cfg = self.known(cluster)?;
        let before = cfg.backends.len();
        cfg.backends.retain(|b| b.name != backend);
        if cfg.backends.len() == before {
            return Err(ControllerError::UnknownBackend {
                cluster: cluster.into(),
                backend: backend.into(),
            });
        }
        self.upsert_cluster(cfg)
    }

    /// Pin a cluster's decision (see [`Override`]) and publish it at once.
    /// In an HA group the override reaches every replica; on a follower
    /// this returns once the leader's snapshot with it arrived (or, after
    /// a few seconds without it, the current snapshot).
    pub fn publish_override(
        &self,
        cluster: &str,
        o: Override,
    ) -> Result<Arc<ClusterSnapshot>, ControllerError> {
        let cfg = self.known(cluster)?;
        check_override(&cfg, &o)?;
        let before = self
            .inner
            .publisher
            .current(cluster)
            .map_or(0, |s| s.version);
        match self.replica() {
            None => self.set_override(&cfg, o)?,
            Some(r) => {
                let json = serde_json::to_vec(&Some(&o))
                    .map_err(|e| ControllerError::Invalid(e.to_string()))?;
                r.change_spec(
                    vec![(r.spec_override_key(cluster), json)],
                    Vec::new(),
                    || self.set_override(&cfg, o.clone()),
                )?;
            }
        }
        let snap = self.tick_cluster(cluster, self.inner.clock.now_secs())?;
        match self.replica() {
            Some(r) if !r.is_leader() => self.await_override(cluster, before),
            _ => snap,
        }
        .ok_or_else(|| ControllerError::UnknownCluster(cluster.into()))
    }

    /// An HA follower's wait for the leader's snapshot that carries a new
    /// override: the first snapshot above `before` with the
    /// `operator_override` rule, else, after a bound, the current one.
    fn await_override(&self, cluster: &str, before: u64) -> Option<Arc<ClusterSnapshot>> {
        let bound = std::time::Duration::from_secs(5);
        // Wall time (a transport bound, not the controller's clock).
        let started = crate::clock::transport_now();
        loop {
            let current = self.inner.publisher.current(cluster);
            let arrived = current.as_ref().is_some_and(|s| {
                s.version > before
                    && s.decision
                        .explanation
                        .rules
                        .iter()
                        .any(|r| r == "operator_override")
            });
            if arrived || started.elapsed() >= bound {
                if !arrived {
                    tracing::warn!(
                        cluster,
                        "HA: the override is stored in the group, but the leader's snapshot with it has not arrived here within {bound:?}"
                    );
                }
                return current;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Store an override and give it to the cluster's runtime.
    fn set_override(&self, cfg: &ClusterConfig, o: Override) -> Result<(), ControllerError> {
        let json = serde_json::to_string(&(&cfg.name, &o))
            .map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.inner.store.put_override(&cfg.name, Some(&json))?;
        let mut rts = lock(&self.inner.runtimes);
        let rt = match rts.entry(cfg.name.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(new_runtime(
                &self.inner.config,
                &self.inner.store,
                cfg,
                &self.inner.clock,
            )?),
        };
        rt.override_ = Some(o);
        Ok(())
    }

    /// Remove an override. Returns whether one was set.
    pub fn clear_override(&self, cluster: &str) -> Result<bool, ControllerError> {
        let set = lock(&self.inner.runtimes)
            .get(cluster)
            .is_some_and(|rt| rt.override_.is_some());
        if !set {
            return Ok(false);
        }
        let had = match self.replica() {
            None => self.unset_override(cluster)?,
            Some(r) => r.change_spec(
                vec![(r.spec_override_key(cluster), b"null".to_vec())],
                Vec::new(),
                || self.unset_override(cluster),
            )?,
        };
        if had {
            self.tick_cluster(cluster, self.inner.clock.now_secs())?;
        }
        Ok(had)
    }

    fn unset_override(&self, cluster: &str) -> Result<bool, ControllerError> {
        let had = lock(&self.inner.runtimes)
            .get_mut(cluster)
            .and_then(|rt| rt.override_.take())
            .is_some();
        if had {
            self.inner.store.put_override(cluster, None)?;
        }
        Ok(had)
    }

    /// Apply an admin change another replica of the HA group made (read
    /// from etcd, see [`crate::ha::spec`]) on this replica; the leader
    /// ticks on it (and so publishes it).
    pub fn apply_replicated_spec(
        &self,
        spec: crate::ha::spec::Spec,
    ) -> Result<(), ControllerError> {
        use crate::ha::spec::Spec;
        let now = self.inner.clock.now_secs();
        match spec {
            Spec::Cluster(name, Some(mut cfg)) => {
                cfg.normalise(&format!("replicated cluster {name:?}"))?;
                if cfg.name != name {
                    return Err(ControllerError::Invalid(format!(
                        "the replicated cluster under the key of {name:?} is named {:?}",
                        cfg.name
                    )));
                }
                self.store_cluster(&cfg)?;
                self.tick_cluster(&name, now)?;
            }
            Spec::Cluster(name, None) => {
                self.remove_cluster(&name)?;
            }
            Spec::Override(name, Some(o)) => {
                // A cluster this replica does not know (deleted since) has
                // no override to keep.
                if let Some(cfg) = self.cluster(&name) {
                    self.set_override(&cfg, o)?;
                    self.tick_cluster(&name, now)?;
                }
            }
            Spec::Override(name, None) => {
                if self.unset_override(&name)? {
                    self.tick_cluster(&name, now)?;
                }
            }
        }
        Ok(())
    }

    /// A cluster's known events (its calendar file's and the added ones).
    pub fn events(&self, cluster: &str) -> Result<ClusterEvents, ControllerError> {
        Ok(self.known(cluster)?.events)
    }

    /// Add an event to a cluster's calendar (stored with the cluster; its
    /// forecaster uses it from the next tick). Returns it with its id.
    pub fn add_event(&self, cluster: &str, event: Event) -> Result<AddedEvent, ControllerError> {
        let mut cfg = self.known(cluster)?;
        check_event("event", &event)?;
        if cfg.events.added.len() >= MAX_ADDED_EVENTS {
            return Err(ControllerError::Invalid(format!(
                "cluster {cluster:?} has {MAX_ADDED_EVENTS} added events, the limit: delete some first"
            )));
        }
        let next = cfg
            .events
            .added
            .iter()
            .filter_map(|a| a.id.strip_prefix(ADDED_PREFIX)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let added = AddedEvent {
            id: format!("{ADDED_PREFIX}{next}"),
            event,
        };
        cfg.events.added.push(added.clone());
        self.upsert_cluster(cfg)?;
        Ok(added)
    }

    /// Delete an added event by id; `None` when the cluster has no added
    /// event with that id. The events of the calendar file (ids `file-N`)
    /// are changed by editing the file and reloading.
    pub fn delete_event(
        &self,
        cluster: &str,
        id: &str,
    ) -> Result<Option<AddedEvent>, ControllerError> {
        let mut cfg = self.known(cluster)?;
        if id.starts_with(FILE_PREFIX) {
            let file = cfg
                .events
                .file
                .as_ref()
                .map_or_else(|| "-".into(), |p| p.display().to_string());
            return Err(ControllerError::Invalid(format!(
                "event {id:?} comes from the calendar file {file}: edit the file and reload the configuration (SIGHUP)"
            )));
        }
        let Some(i) = cfg.events.added.iter().position(|a| a.id == id) else {
            return Ok(None);
        };
        let removed = cfg.events.added.remove(i);
        self.upsert_cluster(cfg)?;
        Ok(Some(removed))
    }

    /// The configuration of a cluster that must exist.
    fn known(&self, cluster: &str) -> Result<ClusterConfig, ControllerError> {
        self.cluster(cluster)
            .ok_or_else(|| ControllerError::UnknownCluster(cluster.into()))
    }
}

/// An override names only backends of the cluster, each with a weight ≥ 1,
/// and at least one.
fn check_override(cfg: &ClusterConfig, o: &Override) -> Result<(), ControllerError> {
    for w in &o.weights {
        if w.weight == 0 {
            return Err(ControllerError::Invalid(format!(
                "weight of backend {:?} is 0; weights must be ≥ 1",
                w.backend
            )));
        }
        if !cfg.backends.iter().any(|b| b.name == w.backend) {
            return Err(ControllerError::UnknownBackend {
                cluster: cfg.name.clone(),
                backend: w.backend.clone(),
            });
        }
    }
    if o.weights.is_empty() {
        return Err(ControllerError::Invalid(
            "an override needs at least one weight".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use aya_policy::BackendWeight;

    fn weights(s: &ClusterSnapshot) -> Vec<(String, u32)> {
        s.endpoints
            .iter()
            .map(|e| (e.backend.clone(), e.weight))
            .collect()
    }

    fn pin(backend: &str, weight: u32) -> Override {
        Override {
            weights: vec![BackendWeight {
                backend: backend.into(),
                weight,
            }],
            algorithm: None,
            desired_replicas: None,
        }
    }

    #[test]
    fn backend_changes_are_stored_and_published_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let d = BackendConfig {
            name: "d".into(),
            address: "127.0.0.1:9004".into(),
            weight_hint: 4,
        };
        let cfg = ctl.upsert_backend("web", d).unwrap();
        assert_eq!(cfg.backends.len(), 4);
        let snap = ctl.publisher().current("web").unwrap();
        assert_eq!(snap.version, 1);
        assert_eq!(
            weights(&snap),
            vec![
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 3),
                ("d".into(), 4)
            ]
        );
        ctl.delete_backend("web", "a").unwrap();
        let snap = ctl.publisher().current("web").unwrap();
        assert_eq!(snap.version, 2);
        assert_eq!(snap.endpoints.len(), 3);
        assert!(matches!(
            ctl.delete_backend("web", "a"),
            Err(ControllerError::UnknownBackend { .. })
        ));
        assert!(matches!(
            ctl.delete_backend("nope", "a"),
            Err(ControllerError::UnknownCluster(_))
        ));
        assert_eq!(ctl.store().restore().unwrap().clusters.len(), 1);
    }

    #[test]
    fn deleting_a_cluster_forgets_it_everywhere() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        ctl.tick_all(ctl.clock().now_secs()).unwrap();
        assert!(ctl.publisher().current("web").is_some());
        assert!(ctl.delete_cluster("web").unwrap());
        assert!(!ctl.delete_cluster("web").unwrap());
        assert!(ctl.cluster("web").is_none());
        assert!(ctl.publisher().current("web").is_none());
        let restored = ctl.store().restore().unwrap();
        assert!(restored.clusters.is_empty() && restored.snapshots.is_empty());
    }

    #[test]
    fn an_unknown_policy_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let mut cfg = ctl.cluster("web").unwrap();
        cfg.policy = "no-such-policy".into();
        assert!(matches!(
            ctl.upsert_cluster(cfg),
            Err(ControllerError::Policy(e)) if e.to_string().contains("no-such-policy")
        ));
    }

    #[test]
    fn overrides_are_validated_published_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        assert!(matches!(
            ctl.publish_override("web", pin("b", 0)),
            Err(ControllerError::Invalid(m)) if m.contains("≥ 1")
        ));
        assert!(matches!(
            ctl.publish_override("web", pin("zz", 1)),
            Err(ControllerError::UnknownBackend { backend, .. }) if backend == "zz"
        ));
        let empty = Override {
            weights: Vec::new(),
            ..pin("b", 1)
        };
        assert!(matches!(
            ctl.publish_override("web", empty),
            Err(ControllerError::Invalid(_))
        ));
        let snap = ctl.publish_override("web", pin("b", 7)).unwrap();
        assert_eq!(weights(&snap), vec![("b".into(), 7)]);
        assert!(
            snap.decision
                .explanation
                .rules
                .contains(&"operator_override".to_string())
        );
        assert!(ctl.clear_override("web").unwrap());
        assert!(!ctl.clear_override("web").unwrap());
        let snap = ctl.publisher().current("web").unwrap();
        assert_eq!(snap.endpoints.len(), 3);
    }
}
