//! Configuration reload (`SIGHUP` in `aya serve`): the clusters of the new
//! file are applied, as an operator's admin changes would be; settings that
//! need a restart are named and left as they are.
//!
//! Clusters are compared with the file *as last applied*, not with the
//! running registry, so admin-API changes survive a reload of an unchanged
//! file: a cluster the file adds or changes is upserted (the file wins), a
//! cluster the file no longer names is deleted, a cluster the file names
//! unchanged is left alone, and clusters created over the admin API are
//! never touched.

use super::{Controller, ControllerError, lock};
use crate::config::{ClusterConfig, Config};

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Clusters added or changed by the file (upserted), sorted.
    pub upserted: Vec<String>,
    /// Clusters the file no longer names (deleted), sorted.
    pub deleted: Vec<String>,
    /// Top-level settings that differ but take effect only after a
    /// restart (listeners, store, TLS, auth, limits, intervals, ...).
    pub restart_needed: Vec<String>,
}

/// Top-level keys of `a` and `b` (as written in `aya.toml`) whose values
/// differ, `clusters` excluded.
fn changed_settings(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec!["(the configuration could not be compared)".into()];
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| k.as_str() != "clusters" && k.as_str() != "init")
        .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

impl Controller {
    /// Apply a new, validated configuration file (see the module docs).
    /// Each cluster change is audited (`aya::audit`, identity
    /// `config-reload`). Stops at the first cluster that cannot be applied;
    /// the ones before it stay applied and the error names the cluster.
    pub fn reload(&self, new: &Config) -> Result<ReloadReport, ControllerError> {
        let old = lock(&self.inner.applied).clone();
        let mut report = ReloadReport {
            restart_needed: changed_settings(&self.inner.config, new),
            ..ReloadReport::default()
        };
        let before = |name: &str| -> Option<&ClusterConfig> { old.iter().find(|c| c.name == name) };
        let text = |c: Option<ClusterConfig>| {
            c.and_then(|c| serde_json::to_string(&c).ok())
                .unwrap_or_else(|| "-".into())
        };
        // The same audit line as an admin RPC's, by identity `config-reload`.
        let caller = crate::auth::Caller {
            identity: "config-reload".into(),
            via: "config",
        };
        let audit = |resource: &str, before: String, after: String| {
            crate::auth::audit(&caller, "reload", resource, &before, &after);
        };
        // Kept up to date cluster by cluster, so that a reload stopped by an
        // error leaves `applied` saying what was applied.
        let mut applied = old.clone();
        for c in &new.clusters {
            if before(&c.name) == Some(c) {
                continue;
            }
            let running = self.cluster(&c.name);
            // Events added over the admin API belong to the cluster, not to
            // the file: they survive the file's changes.
            let mut c_new = c.clone();
            if let Some(r) = &running {
                c_new.events.added = r.events.added.clone();
            }
            let stored = self.upsert_cluster(c_new).map_err(|e| {
                ControllerError::Invalid(format!("reload: cluster {:?}: {e}", c.name))
            })?;
            audit(&c.name, text(running), text(Some(stored)));
            applied.retain(|x| x.name != c.name);
            applied.push(c.clone());
            *lock(&self.inner.applied) = applied.clone();
            report.upserted.push(c.name.clone());
        }
        for c in &old {
            if new.clusters.iter().any(|n| n.name == c.name) {
                continue;
            }
            let running = self.cluster(&c.name);
            self.delete_cluster(&c.name)?;
            audit(&c.name, text(running), "-".into());
            applied.retain(|x| x.name != c.name);
            *lock(&self.inner.applied) = applied.clone();
            report.deleted.push(c.name.clone());
        }
        report.upserted.sort();
        report.deleted.sort();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn cluster(name: &str, ports: &[u16]) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            policy: "configured".into(),
            policy_params: Default::default(),
            algorithm: aya_policy::LbAlgorithm::WeightedRoundRobin,
            min_replicas: 1,
            max_replicas: 5,
            boot_time_seconds: 10.0,
            backends: ports
                .iter()
                .map(|p| BackendConfig {
                    name: format!("b{p}"),
                    address: format!("127.0.0.1:{p}"),
                    weight_hint: 1,
                })
                .collect(),
            warm_start: None,
            orca: None,
            events: Default::default(),
        }
    }

    fn config(dir: &std::path::Path, clusters: Vec<ClusterConfig>) -> Config {
        Config {
            listen: "127.0.0.1:0".into(),
            metrics_listen: "127.0.0.1:0".into(),
            data_dir: dir.to_path_buf(),
            init: true,
            tick_interval_seconds: 3600.0,
            clusters,
            ..Config::default()
        }
    }

    #[test]
    fn a_reload_applies_the_files_cluster_changes_and_keeps_admin_ones() {
        let dir = tempfile::tempdir().unwrap();
        let start = config(
            dir.path(),
            vec![cluster("web", &[9001, 9002]), cluster("old", &[9101])],
        );
        let ctl =
            Controller::open_with_clock(start.clone(), crate::clock::Clock::manual(0)).unwrap();
        // An admin-made cluster, and an admin change to a file cluster.
        ctl.upsert_cluster(cluster("adm", &[9201])).unwrap();
        ctl.upsert_backend(
            "old",
            BackendConfig {
                name: "extra".into(),
                address: "127.0.0.1:9102".into(),
                weight_hint: 1,
            },
        )
        .unwrap();

        // The same file again: nothing changes, admin changes survive.
        let report = ctl.reload(&start).unwrap();
        assert_eq!(report, ReloadReport::default());
        assert_eq!(ctl.cluster("old").unwrap().backends.len(), 2);

        // The file changes `web`, drops `old`, adds `api`, and moves the listener.
        let mut next = config(
            dir.path(),
            vec![cluster("web", &[9001, 9003]), cluster("api", &[9301])],
        );
        next.listen = "127.0.0.1:5999".into();
        let report = ctl.reload(&next).unwrap();
        assert_eq!(report.upserted, vec!["api".to_string(), "web".to_string()]);
        assert_eq!(report.deleted, vec!["old".to_string()]);
        assert_eq!(report.restart_needed, vec!["listen".to_string()]);
        let names: Vec<String> = ctl.clusters().into_iter().map(|c| c.name).collect();
        assert_eq!(names, vec!["adm", "api", "web"]);
        let web: Vec<String> = ctl
            .cluster("web")
            .unwrap()
            .backends
            .into_iter()
            .map(|b| b.address)
            .collect();
        assert_eq!(web, vec!["127.0.0.1:9001", "127.0.0.1:9003"]);
        assert!(ctl.publisher().current("api").is_some(), "api is published");

        // Applied once: the same file again does nothing.
        assert_eq!(
            ctl.reload(&next).unwrap(),
            ReloadReport {
                restart_needed: vec!["listen".into()],
                ..ReloadReport::default()
            }
        );
        ctl.close(std::time::Duration::from_secs(5));
    }
}
