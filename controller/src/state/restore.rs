//! Opening the controller: the store is read back (clusters, overrides,
//! published snapshots, series and their recent values), the configuration's
//! new clusters are added, and the ingest writer thread starts. A cluster's
//! forecaster gets its stored demand history and model when it is built.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::runtime::new_runtime;
use super::{Controller, ControllerError, Inner, Override, lock_read, model_key};
use crate::anomaly::{Anomalies, Point};
use crate::clock::Clock;
use crate::config::{ClusterConfig, Config};
use crate::ingest::{IngestState, Job, Limits, Writer};
use crate::metrics::Metrics;
use crate::publish::{ClusterSnapshot, Publisher};
use crate::store::{Restored, Store, StoreError};
use crate::xds::XdsStats;

/// Recent-history window replayed at start to restore the latest values.
pub const REPLAY_WINDOW_MS: i64 = 15 * 60 * 1000;

/// Stored points handed to the anomaly detectors at once during the warm start.
const WARM_CHUNK: usize = 4096;

fn corrupt(table: &'static str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        table,
        message: e.to_string(),
    }
}

impl Controller {
    /// Open the store in `config.data_dir`, restore everything, add the
    /// clusters of the configuration that the store does not know, publish
    /// the restored snapshots, and start the ingest writer thread. Runs on
    /// the system clock.
    pub fn open(config: Config) -> Result<Controller, ControllerError> {
        Controller::open_with_clock(config, Clock::system())
    }

    /// [`open`](Self::open) on a given clock: every "now" of the controller
    /// (ingest validation, retention, the initial and periodic ticks of the
    /// server, measured durations) comes from `clock`.
    pub fn open_with_clock(
        mut config: Config,
        clock: Clock,
    ) -> Result<Controller, ControllerError> {
        config.validate()?;
        let store = Store::open_with(&config.data_dir, config.store_open_mode())?;
        let restored = store.restore()?;
        let metrics = Arc::new(Metrics::default());
        metrics.set_stored(restored.samples);

        let registry = restore_registry(&store, &restored, &config)?;
        let overrides = restore_overrides(&restored)?;
        let publisher = restore_snapshots(&restored, &registry)?;
        let anomalies = match config.anomaly.enabled {
            true => Some(Arc::new(Anomalies::start(&config.anomaly).map_err(
                |e| ControllerError::Invalid(format!("starting the anomaly webhook thread: {e}")),
            )?)),
            false => None,
        };
        let now = clock.now_ms();
        let replay_from = now - REPLAY_WINDOW_MS;
        let warm_ms = match &anomalies {
            Some(_) => (config.anomaly.warm_start_seconds * 1000.0) as i64,
            None => 0,
        };
        // The detectors learn from their own history: a second state whose
        // only use is the rates counters imply, over the warm-start window.
        let mut scratch = (warm_ms > 0)
            .then(|| IngestState::restore(restored.series.clone(), restored.next_segment));
        let mut ingest = IngestState::restore(restored.series, restored.next_segment);
        let mut chunk: Vec<Point> = Vec::new();
        let mut warmed = 0usize;
        // Only series of the clusters and backends that exist now.
        let known = |k: &crate::store::SeriesKey| {
            registry.get(&k.cluster).is_some_and(|c| {
                k.backend.is_empty() || c.backends.iter().any(|b| b.name == k.backend)
            })
        };
        let flush = |chunk: &mut Vec<Point>, scratch: &IngestState| {
            if let Some(a) = &anomalies {
                a.warm(chunk, |id| {
                    scratch
                        .series
                        .get(id as usize)
                        .map(|s| &s.key)
                        .filter(|k| known(k))
                });
            }
            chunk.clear();
        };
        store.scan(replay_from.min(now - warm_ms), |id, ts, v| {
            if ts >= replay_from {
                ingest.replay(id, ts, v);
            }
            if let Some(sc) = scratch.as_mut() {
                if let Some((scored, _)) = sc.replay_scored(id, ts, v) {
                    chunk.push((id, ts, scored));
                    warmed += 1;
                }
                if chunk.len() >= WARM_CHUNK {
                    flush(&mut chunk, sc);
                }
            }
        })?;
        if let Some(sc) = scratch.as_ref() {
            flush(&mut chunk, sc);
            tracing::info!(
                points = warmed,
                seconds = config.anomaly.warm_start_seconds,
                "anomaly detectors warm-started from the store"
            );
        }

        let registry = Arc::new(RwLock::new(registry));
        let ingest = Arc::new(Mutex::new(ingest));
        let (tx, rx) = mpsc::channel(config.ingest_queue_batches);
        let writer = Writer {
            store: store.clone(),
            state: ingest.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            limits: Limits::of(&config),
            clock: clock.clone(),
            anomalies: anomalies.clone(),
        };
        let writer = start_writer(writer, rx)?;

        let mut runtimes = BTreeMap::new();
        for (name, o) in overrides {
            if let Some(cfg) = lock_read(&registry).get(&name).cloned() {
                let mut rt = new_runtime(&config, &store, &cfg, &clock)?;
                rt.override_ = Some(o);
                runtimes.insert(name, rt);
            }
        }
        Ok(Controller {
            inner: Arc::new(Inner {
                applied: Mutex::new(config.clusters.clone()),
                config,
                clock,
                store,
                registry,
                ingest,
                ingest_tx: tx,
                runtimes: Mutex::new(runtimes),
                publisher,
                metrics,
                xds_stats: Arc::new(XdsStats::new()),
                closing: tokio::sync::watch::channel(false).0,
                writer: Mutex::new(Some(writer)),
                pending_demand: Mutex::new(Vec::new()),
                anomalies,
                replica: std::sync::OnceLock::new(),
            }),
        })
    }
}

/// The stored clusters, plus the configuration's clusters the store does not
/// know (stored now).
fn restore_registry(
    store: &Store,
    restored: &Restored,
    config: &Config,
) -> Result<BTreeMap<String, ClusterConfig>, ControllerError> {
    let mut registry = BTreeMap::new();
    for json in &restored.clusters {
        let mut c: ClusterConfig =
            serde_json::from_str(json).map_err(|e| corrupt("clusters", e))?;
        // Stored clusters were normalised when written; doing it again
        // keeps the invariants (sorted backends) even for older files.
        let field = format!("stored cluster {:?}", c.name);
        c.normalise(&field)?;
        registry.insert(c.name.clone(), c);
    }
    for c in &config.clusters {
        match registry.get_mut(&c.name) {
            None => {
                let json = serde_json::to_string(c).map_err(|e| corrupt("clusters", e))?;
                store.put_cluster(&c.name, Some(&json))?;
                registry.insert(c.name.clone(), c.clone());
            }
            // The calendar file is read at every start: a stored cluster
            // the file names takes the file's calendar (its added events stay).
            Some(stored)
                if stored.events.file != c.events.file
                    || stored.events.from_file != c.events.from_file =>
            {
                stored.events.file = c.events.file.clone();
                stored.events.from_file = c.events.from_file.clone();
                let json = serde_json::to_string(&*stored).map_err(|e| corrupt("clusters", e))?;
                store.put_cluster(&c.name, Some(&json))?;
            }
            Some(_) => {}
        }
    }
    Ok(registry)
}

/// The stored operator overrides by cluster.
fn restore_overrides(restored: &Restored) -> Result<BTreeMap<String, Override>, ControllerError> {
    let mut overrides = BTreeMap::new();
    for json in &restored.overrides {
        let (cluster, o): (String, Override) =
            serde_json::from_str(json).map_err(|e| corrupt("overrides", e))?;
        overrides.insert(cluster, o);
    }
    Ok(overrides)
}

/// A publisher holding the stored snapshots of the registry's clusters.
fn restore_snapshots(
    restored: &Restored,
    registry: &BTreeMap<String, ClusterConfig>,
) -> Result<Publisher, ControllerError> {
    let publisher = Publisher::new(0);
    for json in &restored.snapshots {
        let snap: ClusterSnapshot =
            serde_json::from_str(json).map_err(|e| corrupt("snapshots", e))?;
        if registry.contains_key(&snap.cluster) {
            publisher.publish(snap);
        }
    }
    Ok(publisher)
}

fn start_writer(
    writer: Writer,
    rx: mpsc::Receiver<Job>,
) -> Result<std::thread::JoinHandle<()>, ControllerError> {
    std::thread::Builder::new()
        .name("aya-ingest-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| {
            ControllerError::Invalid(format!("cannot start the ingest writer thread: {e}"))
        })
}

/// Give a new forecaster the cluster's stored demand history (the window it
/// keeps, up to `now_ms`) and the model the last accepted retrain stored.
/// Problems are logged, not fatal: the forecaster then starts from what it has.
pub(super) fn restore_forecaster(
    store: &Store,
    cluster: &str,
    f: &mut aya_forecaster::online::OnlineForecaster,
    now_ms: i64,
) {
    let cfg = f.config().clone();
    let window_ms = (cfg.max_history as f64 * cfg.step_s * 1000.0) as i64;
    match store.demand(cluster, now_ms - window_ms) {
        Ok(points) => {
            for (ts, v) in points {
                aya_policy::DemandForecaster::observe(f, ts as f64 / 1000.0, v);
            }
        }
        Err(e) => tracing::warn!(cluster, error = %e, "cannot read the stored demand history"),
    }
    let key = model_key(cluster);
    match store.get_model(&key) {
        Ok(Some(bytes)) => {
            let text = String::from_utf8_lossy(&bytes);
            let path = std::path::PathBuf::from(format!("store:models/{key}"));
            match aya_forecaster::artifact::Artifact::from_json(&path, &text) {
                Ok(a) => {
                    tracing::info!(cluster, model = %a.chosen, "restored the stored demand model");
                    f.install(a.selection);
                }
                Err(e) => tracing::warn!(cluster, error = %e, "ignoring the stored demand model"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(cluster, error = %e, "cannot read the stored demand model"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use aya_policy::BackendWeight;

    #[test]
    fn a_reopen_restores_clusters_overrides_snapshots_and_latest_values() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let ok = ingest(&ctl, vec![sample("a", "in_flight", T0_MS - 1_000, 7.0)]);
        assert_eq!(ok, vec![true]);
        let o = Override {
            weights: vec![BackendWeight {
                backend: "b".into(),
                weight: 5,
            }],
            algorithm: None,
            desired_replicas: Some(2),
        };
        let snap = ctl.publish_override("web", o.clone()).unwrap();
        assert!(ctl.close(std::time::Duration::from_secs(5)));

        // The configuration no longer lists `web`: the store still does.
        let mut cfg = config(dir.path());
        cfg.clusters.clear();
        let again = Controller::open_with_clock(cfg, Clock::manual(T0_MS)).unwrap();
        assert_eq!(again.clusters().len(), 1);
        assert_eq!(again.metrics().stored(), 1);
        let restored = again.publisher().current("web").unwrap();
        assert_eq!(restored.version, snap.version);
        assert_eq!(restored.endpoints, snap.endpoints);
        let web = again.cluster("web").unwrap();
        let (obs, _) = again.observations(&web, T0_MS as f64 / 1000.0);
        assert_eq!(obs[0].in_flight, 7.0);
        // The override survives: the next tick keeps its weights.
        let after = again
            .tick_cluster("web", T0_MS as f64 / 1000.0)
            .unwrap()
            .unwrap();
        assert_eq!(after.endpoints, snap.endpoints);
        assert_eq!(after.decision.scaling.desired_replicas, 2);
    }

    #[test]
    fn anomaly_detectors_warm_start_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        // 300 steady points of a latency and of a counter, then a spike on the latency.
        let mut batch = Vec::new();
        for i in 0..300 {
            let ts = T0_MS - 400_000 + i * 1000;
            batch.push(sample(
                "a",
                "latency_p99_seconds",
                ts,
                0.1 + (i % 3) as f64 * 0.001,
            ));
            batch.push(crate::ingest::Sample::new(
                "web",
                "b",
                "requests_total",
                crate::ingest::MetricKind::Counter,
                ts,
                (i * 10 + i % 2) as f64,
            ));
        }
        batch.push(sample("a", "latency_p99_seconds", T0_MS - 99_000, 5.0));
        assert!(ingest(&ctl, batch).iter().all(|ok| *ok));
        let before = ctl.anomalies().unwrap().list("web", false).0;
        assert_eq!(before.len(), 1);
        assert!(ctl.close(std::time::Duration::from_secs(5)));

        let reopen = |warm: f64| {
            let mut cfg = config(dir.path());
            cfg.anomaly.warm_start_seconds = warm;
            Controller::open_with_clock(cfg, Clock::manual(T0_MS)).unwrap()
        };
        let again = reopen(3600.0);
        let a = again.anomalies().unwrap();
        assert_eq!(a.detectors(), 2, "both series learnt again");
        let open = a.list("web", false).0;
        assert_eq!(open.len(), 1, "the anomaly open at shutdown is open again");
        assert_eq!(open[0].episode.opened_at_ms, before[0].episode.opened_at_ms);
        assert_eq!(open[0].episode.peak_score, before[0].episode.peak_score);
        let text = a.render();
        assert!(
            !text.contains("aya_anomalies_opened_total{"),
            "not counted twice: {text}"
        );
        // A steady next point is not news to a warm detector.
        assert!(
            ingest(
                &again,
                vec![sample("a", "latency_p99_seconds", T0_MS - 1_000, 0.1)]
            )
            .iter()
            .all(|ok| *ok)
        );
        assert!(again.close(std::time::Duration::from_secs(5)));

        // Off: nothing replayed.
        let cold = reopen(0.0);
        let a = cold.anomalies().unwrap();
        assert_eq!(a.detectors(), 0);
        assert!(a.list("web", false).0.is_empty());
    }

    #[test]
    fn values_older_than_the_replay_window_are_not_latest_values() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        assert_eq!(
            ingest(&ctl, vec![sample("a", "in_flight", T0_MS - 1_000, 7.0)]),
            vec![true]
        );
        assert!(ctl.close(std::time::Duration::from_secs(5)));
        let later = Clock::manual(T0_MS + REPLAY_WINDOW_MS + 1);
        let again = Controller::open_with_clock(config(dir.path()), later).unwrap();
        let web = again.cluster("web").unwrap();
        let (obs, _) = again.observations(&web, (T0_MS - 1_000) as f64 / 1000.0);
        assert_eq!(obs[0].in_flight, 0.0);
    }

    #[test]
    fn a_corrupt_stored_cluster_is_an_error_naming_the_table() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_with(dir.path(), crate::store::OpenMode::Init).unwrap();
            store.put_cluster("bad", Some("{not json")).unwrap();
            store.sync().unwrap();
        }
        let err = Controller::open_with_clock(config(dir.path()), Clock::manual(T0_MS))
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusters"), "{err}");
    }
}
