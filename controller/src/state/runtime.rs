//! A cluster's runtime: the control loop running its policy with its
//! forecaster, rebuilt when the part of the configuration it was built from
//! changes (the forecaster and its record survive a rebuild).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aya_policy::{ControlLoop, LbAlgorithm, Policy, PolicySpec};

use super::Override;
use super::restore::restore_forecaster;
use super::{ControllerError, lock};
use crate::clock::Clock;
use crate::config::{ClusterConfig, ClusterEvents, Config};
use crate::forecasting::{ForecastRecord, Recording, SharedForecaster};
use crate::policies::{self, PolicyContext};
use crate::store::Store;

type Loop = ControlLoop<Box<dyn Policy + Send>, Recording>;

/// What a runtime is built from: the typed, checked policy (name and
/// parameters), the backends' weight hints and the configured algorithm.
pub(super) type RuntimeKey = (PolicySpec, BTreeMap<String, u32>, LbAlgorithm);

pub(super) struct ClusterRuntime {
    /// What the loop was built from; rebuilt when it changes.
    pub(super) built_from: RuntimeKey,
    pub(super) control: Loop,
    pub(super) forecaster: Option<SharedForecaster>,
    pub(super) record: Arc<Mutex<ForecastRecord>>,
    pub(super) override_: Option<Override>,
    /// The cluster's events as last given to the forecaster.
    pub(super) events: ClusterEvents,
}

impl ClusterRuntime {
    /// Give the forecaster `cfg`'s calendar if it changed since the last time.
    pub(super) fn follow_events(&mut self, cfg: &ClusterConfig) {
        if self.events == cfg.events {
            return;
        }
        self.events = cfg.events.clone();
        if let Some(f) = &self.forecaster {
            let cal = self.events.calendar();
            let n = cal.events.len();
            lock(f).set_calendar((n > 0).then(|| Arc::new(cal)));
            tracing::info!(cluster = %cfg.name, events = n, "the forecaster's event calendar changed");
        }
    }
}

/// The key of `cfg`: its policy (the service default when it names none)
/// with its parameters, weight hints and algorithm. Fails only for a
/// configuration that skipped validation.
pub(super) fn runtime_key(
    config: &Config,
    cfg: &ClusterConfig,
) -> Result<RuntimeKey, ControllerError> {
    let policy = if cfg.policy.is_empty() {
        &config.default_policy
    } else {
        &cfg.policy
    };
    let spec = policies::spec(policy, &cfg.policy_params).map_err(|source| {
        ControllerError::ClusterPolicy {
            cluster: cfg.name.clone(),
            source,
        }
    })?;
    let hints = cfg
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.weight_hint))
        .collect();
    Ok((spec, hints, cfg.algorithm))
}

/// A fresh runtime for `cfg`, its forecaster (if forecasting is on) given
/// the stored demand history up to the clock's now and the stored model.
pub(super) fn new_runtime(
    config: &Config,
    store: &Store,
    cfg: &ClusterConfig,
    clock: &Clock,
) -> Result<ClusterRuntime, ControllerError> {
    let forecaster = crate::forecasting::build(
        config.forecast_step_seconds,
        config.retrain_interval_seconds > 0.0,
    )
    .map(|mut f| {
        restore_forecaster(store, &cfg.name, &mut f, clock.now_ms());
        Arc::new(Mutex::new(f))
    });
    let mut rt = new_runtime_with(
        config,
        cfg,
        forecaster,
        Arc::new(Mutex::new(ForecastRecord::default())),
    )?;
    rt.follow_events(cfg);
    Ok(rt)
}

/// A runtime for `cfg` around an existing forecaster and record.
pub(super) fn new_runtime_with(
    config: &Config,
    cfg: &ClusterConfig,
    forecaster: Option<SharedForecaster>,
    record: Arc<Mutex<ForecastRecord>>,
) -> Result<ClusterRuntime, ControllerError> {
    let key = runtime_key(config, cfg)?;
    let rec = forecaster.clone().map(|inner| Recording {
        inner,
        record: record.clone(),
    });
    let control = policies::control_loop(
        &key.0,
        PolicyContext {
            weight_hints: key.1.clone(),
            algorithm: key.2,
        },
        rec,
        config.forecast_horizon,
    );
    Ok(ClusterRuntime {
        built_from: key,
        control,
        forecaster,
        record,
        override_: None,
        events: ClusterEvents::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn the_key_falls_back_to_the_default_policy_and_follows_hints() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let mut cfg = config.clusters[0].clone();
        let key = runtime_key(&config, &cfg).unwrap();
        assert_eq!(
            key.0.name(),
            "static",
            "`configured` is the registry's `static`"
        );
        assert_eq!(key.1.get("c"), Some(&3));
        cfg.policy = "aya".into();
        assert_eq!(runtime_key(&config, &cfg).unwrap().0.name(), "aya");
        cfg.policy_params
            .insert("target_utilization".into(), serde_json::json!(0.5));
        let tuned = runtime_key(&config, &cfg).unwrap();
        assert_ne!(
            tuned.0,
            PolicySpec::named("aya").unwrap(),
            "typed parameters are compared"
        );
        cfg.backends[0].weight_hint = 9;
        assert_ne!(runtime_key(&config, &cfg).unwrap().1, key.1);
    }

    #[test]
    fn a_runtime_has_a_forecaster_only_when_forecasting_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), crate::store::OpenMode::Init).unwrap();
        let clock = Clock::manual(T0_MS);
        let mut config = config(dir.path());
        let cfg = config.clusters[0].clone();
        let rt = new_runtime(&config, &store, &cfg, &clock).unwrap();
        assert_eq!(rt.forecaster.is_some(), config.forecast_step_seconds > 0.0);
        assert_eq!(
            rt.control.policy().name(),
            "static",
            "`configured` is an alias of `static`"
        );
        config.forecast_step_seconds = 0.0;
        let rt = new_runtime(&config, &store, &cfg, &clock).unwrap();
        assert!(rt.forecaster.is_none());
        let mut bad = cfg.clone();
        bad.policy = "no-such-policy".into();
        let err = new_runtime(&config, &store, &bad, &clock).err().unwrap();
        assert!(err.to_string().contains("cluster \"web\""), "{err}");
    }
}
