//! Shared by the fuzz targets and the seed writer: the in-memory
//! controller's configuration and clock.

use std::path::Path;

use aya_controller::config::{BackendConfig, ClusterConfig, Config};

/// 2026-01-01T00:00:00Z: the manual clock of the `proto` target's
/// controller, and the time of the seeds' samples.
pub const T0_MS: i64 = 1_767_225_600_000;

/// Cluster `web` with backends a, b, c on 127.0.0.1:9001..9003, the
/// deterministic `configured` policy, a new store in `dir`.
pub fn controller_config(dir: &Path) -> Config {
    let backends = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| BackendConfig {
            name: n.to_string(),
            address: format!("127.0.0.1:{}", 9001 + i),
            weight_hint: i as u32 + 1,
        })
        .collect();
    Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        init: true,
        tick_interval_seconds: 3600.0,
        default_policy: "configured".into(),
        clusters: vec![ClusterConfig {
            name: "web".into(),
            policy: String::new(),
            policy_params: Default::default(),
            algorithm: aya_policy::LbAlgorithm::WeightedRoundRobin,
            min_replicas: 1,
            max_replicas: 5,
            boot_time_seconds: 10.0,
            backends,
            warm_start: None,
            orca: None,
            events: Default::default(),
        }],
        ..Config::default()
    }
}
