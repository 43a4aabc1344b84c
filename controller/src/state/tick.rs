//! Control ticks: observations from the latest ingested values, one run of a
//! cluster's control loop, and publishing a new version when what data
//! planes see changed.

use std::sync::Arc;

use aya_policy::{
    AlgorithmChoice, BackendObservation, Decision, Explanation, ReplicaState, ScalingSignal,
};

use super::runtime::{ClusterRuntime, new_runtime, new_runtime_with, runtime_key};
use super::{Controller, ControllerError, Override, lock};
use crate::config::ClusterConfig;
use crate::publish::{ClusterSnapshot, Endpoint};

impl Controller {
    /// Observations of a cluster's backends at `now` (seconds), built from
    /// the latest ingested values, and the service demand (requests/s): the
    /// cluster-level `request_rate` / `requests_total` (samples with an empty
    /// backend, the data plane's own count) when one is fresh, else the sum
    /// of the backends' request rates. The demand is `NaN` (unknown, see
    /// [`aya_policy::TickInput::demand_rps`]) while no fresh series measures
    /// a request rate: before the first metrics arrive, after they all went
    /// stale, or while a counter has only its first sample.
    pub fn observations(&self, cfg: &ClusterConfig, now: f64) -> (Vec<BackendObservation>, f64) {
        let stale_ms = (self.inner.config.stale_after_seconds * 1000.0) as i64;
        let now_ms = (now * 1000.0) as i64;
        let fresh = |s: &&crate::ingest::SeriesState| {
            s.last_ms != i64::MIN && s.last_ms >= now_ms - stale_ms && s.last_value.is_finite()
        };
        let ingest = lock(&self.inner.ingest);
        let mut out = Vec::with_capacity(cfg.backends.len());
        let mut demand = 0.0;
        let mut measured = false;
        for b in &cfg.backends {
            let mut o = BackendObservation::unobserved(b.name.clone(), now);
            let mut newest = i64::MIN;
            for s in ingest.backend_series(&cfg.name, &b.name).filter(fresh) {
                newest = newest.max(s.last_ms);
                measured |= measures_rate(&s.key.metric, s.rate);
                observe(&mut o, &s.key.metric, s.last_value, s.rate);
            }
            if newest != i64::MIN {
                o.observed_at = newest as f64 / 1000.0;
            }
            demand += o.request_rate;
            out.push(o);
        }
        let mut cluster_level = None;
        for s in ingest.backend_series(&cfg.name, "").filter(fresh) {
            let v = match s.key.metric.as_str() {
                "requests_total" => match s.rate {
                    Some(r) => r,
                    None => continue,
                },
                "request_rate" => s.last_value.max(0.0),
                _ => continue,
            };
            *cluster_level.get_or_insert(0.0) += v;
        }
        let demand = match cluster_level {
            Some(d) => d,
            None if measured => demand,
            None => f64::NAN,
        };
        (out, demand)
    }

    /// Run every cluster's control loop once at `now` (seconds).
    pub fn tick_all(&self, now: f64) -> Result<(), ControllerError> {
        let started = self.inner.clock.stopwatch();
        let mut first_err = None;
        for name in self.inner.cluster_names() {
            if let Err(e) = self.tick_cluster(&name, now) {
                tracing::error!(cluster = %name, error = %e, "control tick failed");
                first_err.get_or_insert(e);
            }
        }
        self.inner.flush_demand();
        if let Some(a) = &self.inner.anomalies {
            // A series that stopped reporting does not keep its anomaly open.
            let silence = a
                .config()
                .quiet_seconds
                .max(self.inner.config.stale_after_seconds);
            let closed = a.close_stale((now * 1000.0) as i64, (silence * 1000.0) as i64);
            if closed > 0 {
                tracing::info!(
                    closed,
                    silence_seconds = silence,
                    "closed the anomalies of series that stopped reporting"
                );
            }
        }
        let errors = lock(&self.inner.runtimes)
            .iter()
            .map(|(n, rt)| {
                let r = lock(&rt.record);
                (n.clone(), r.mae(), r.n)
            })
            .collect();
        self.inner.metrics.set_forecast_error(errors);
        self.inner.metrics.observe_tick(started.seconds());
        first_err.map_or(Ok(()), Err)
    }

    /// Run one cluster's control loop at `now` and publish a new version if
    /// what data planes see changed. Returns the current snapshot.
    pub fn tick_cluster(
        &self,
        name: &str,
        now: f64,
    ) -> Result<Option<Arc<ClusterSnapshot>>, ControllerError> {
        let Some(cfg) = self.cluster(name) else {
            return Ok(None);
        };
        let (obs, demand) = self.observations(&cfg, now);
        let decision = {
            let mut rts = lock(&self.inner.runtimes);
            let rt = self.runtime_for(&mut rts, &cfg)?;
            let mut decision = if cfg.backends.is_empty() {
                no_backends(&cfg, now)
            } else {
                if rt.forecaster.is_some() && demand.is_finite() {
                    // What the forecaster observes is the history a retrain learns from.
                    lock(&self.inner.pending_demand).push((
                        name.to_string(),
                        (now * 1000.0) as i64,
                        demand,
                    ));
                }
                let replicas = replica_state(&cfg, &obs);
                let interval = self.inner.config.tick_interval_seconds;
                rt.control.tick(now, interval, &obs, demand, replicas)
            };
            self.inner
                .metrics
                .set_headroom(name, decision.explanation.headroom);
            if let Some(o) = &rt.override_ {
                apply_override(&mut decision, o);
            }
            decision
        };
        self.publish_if_changed(&cfg, decision)
    }

    /// The runtime of `cfg`, built on first use and rebuilt (keeping its
    /// forecaster, record and override) when its configuration changed.
    fn runtime_for<'a>(
        &self,
        rts: &'a mut std::collections::BTreeMap<String, ClusterRuntime>,
        cfg: &ClusterConfig,
    ) -> Result<&'a mut ClusterRuntime, ControllerError> {
        let inner = &self.inner;
        let rt = match rts.entry(cfg.name.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(new_runtime(&inner.config, &inner.store, cfg, &inner.clock)?)
            }
        };
        if rt.built_from != runtime_key(&inner.config, cfg)? {
            let fresh =
                new_runtime_with(&inner.config, cfg, rt.forecaster.clone(), rt.record.clone())?;
            let o = rt.override_.take();
            let events = std::mem::take(&mut rt.events);
            *rt = fresh;
            rt.override_ = o;
            rt.events = events;
        }
        rt.follow_events(cfg);
        Ok(rt)
    }

    /// Store and publish `decision` as the cluster's next version unless it
    /// shows data planes what the current snapshot already does. Returns
    /// the current snapshot (`None` only on an HA follower before the
    /// leader published the cluster).
    fn publish_if_changed(
        &self,
        cfg: &ClusterConfig,
        decision: Decision,
    ) -> Result<Option<Arc<ClusterSnapshot>>, ControllerError> {
        let name = cfg.name.as_str();
        let endpoints = endpoints(cfg, &decision);
        let current = self.inner.publisher.current(name);
        let changed = match &current {
            None => true,
            Some(prev) => decision.differs_from(&prev.decision) || prev.endpoints != endpoints,
        };
        if let (false, Some(current)) = (changed, &current) {
            return Ok(Some(current.clone()));
        }
        if let Some(replica) = self.replica() {
            if !replica.is_leader() {
                // A hot standby: it ran the control loop (its forecaster,
                // demand history and control state stay warm for a
                // takeover) but only the leader publishes.
                return Ok(current);
            }
            return self
                .publish_replicated(replica, name, decision, endpoints)
                .map(Some);
        }
        let version = current.map_or(1, |c| c.version + 1);
        let snap = ClusterSnapshot {
            cluster: name.to_string(),
            version,
            decision,
            endpoints,
        };
        let json =
            serde_json::to_string(&snap).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        self.inner.store.put_snapshot(name, Some(&json))?;
        let published = self.inner.publisher.publish(snap);
        self.inner.metrics.published();
        tracing::info!(cluster = %name, version, weights = ?published.endpoints.iter().map(|e| (&e.backend, e.weight)).collect::<Vec<_>>(),
            algorithm = %published.decision.algorithm.algorithm, desired_replicas = published.decision.scaling.desired_replicas,
            reasons = ?published.decision.explanation.rules, "published");
        Ok(Some(published))
    }
}

impl Controller {
    /// The HA leader's publication: the snapshot goes to etcd first,
    /// fenced by the leadership (see [`crate::ha`]); its version is the
    /// revision of that write. Followers publish it from there; this
    /// replica publishes it at once.
    fn publish_replicated(
        &self,
        replica: &crate::ha::Replica,
        name: &str,
        decision: Decision,
        endpoints: Vec<Endpoint>,
    ) -> Result<Arc<ClusterSnapshot>, ControllerError> {
        let mut snap = ClusterSnapshot {
            cluster: name.to_string(),
            version: 0,
            decision,
            endpoints,
        };
        let json =
            serde_json::to_vec(&snap).map_err(|e| ControllerError::Invalid(e.to_string()))?;
        snap.version = replica
            .publish_snapshot_blocking(name, json)
            .map_err(|e| ControllerError::Ha(format!("cluster {name:?}: {e}")))?;
        let version = snap.version;
        self.apply_replicated_snapshot(snap)?;
        let published = self
            .inner
            .publisher
            .current(name)
            .ok_or_else(|| ControllerError::UnknownCluster(name.into()))?;
        self.inner.metrics.published();
        tracing::info!(cluster = %name, version, weights = ?published.endpoints.iter().map(|e| (&e.backend, e.weight)).collect::<Vec<_>>(),
            algorithm = %published.decision.algorithm.algorithm, desired_replicas = published.decision.scaling.desired_replicas,
            reasons = ?published.decision.explanation.rules, "published (HA leader)");
        Ok(published)
    }
}

/// Fold the latest value `v` (and the counter's `rate`) of one metric into
/// a backend's observation; unknown metrics are ignored.
/// Whether a fresh series of `metric` measures a request rate (a counter
/// does from its second sample on).
fn measures_rate(metric: &str, rate: Option<f64>) -> bool {
    match metric {
        "requests_total" => rate.is_some(),
        "request_rate" => true,
        _ => false,
    }
}

fn observe(o: &mut BackendObservation, metric: &str, v: f64, rate: Option<f64>) {
    match metric {
        "requests_total" => o.request_rate += rate.unwrap_or(0.0),
        "request_rate" => o.request_rate += v.max(0.0),
        "in_flight" => o.in_flight += v.max(0.0),
        "latency_p50_seconds" => o.latency_p50 = o.latency_p50.max(v.max(0.0)),
        // Little's-law mean (OTLP from Envoy: no per-endpoint histogram) stands in for p50.
        "latency_mean_seconds" => o.latency_p50 = o.latency_p50.max(v.max(0.0)),
        "latency_p90_seconds" => o.latency_p90 = o.latency_p90.max(v.max(0.0)),
        "latency_p99_seconds" => o.latency_p99 = o.latency_p99.max(v.max(0.0)),
        "error_rate" => o.error_rate = o.error_rate.max(v.clamp(0.0, 1.0)),
        "cpu_utilization" => o.cpu_utilization = Some(v.clamp(0.0, 1.0)),
        "memory_utilization" => o.memory_utilization = Some(v.clamp(0.0, 1.0)),
        "healthy" => o.healthy = o.healthy && v >= 0.5,
        _ => {}
    }
}

/// The controller's view of a cluster's replicas: one per backend, ready
/// when observed healthy.
fn replica_state(cfg: &ClusterConfig, obs: &[BackendObservation]) -> ReplicaState {
    let backends = cfg.backends.len() as u32;
    let ready = obs.iter().filter(|o| o.healthy).count() as u32;
    // `obs` has one observation per configured backend, so `ready <= backends`.
    ReplicaState::new(ready, backends.saturating_sub(ready)).with_bounds(
        cfg.min_replicas,
        cfg.max_replicas,
        cfg.boot_time_seconds,
    )
}

/// The decision of a cluster without backends: nothing to weigh, the
/// minimum replicas.
fn no_backends(cfg: &ClusterConfig, now: f64) -> Decision {
    Decision {
        outlier_detection: None,
        max_requests: None,
        at: now,
        weights: Vec::new(),
        ejected: Vec::new(),
        scaling: ScalingSignal {
            desired_replicas: cfg.min_replicas,
            current_replicas: 0,
            rule: "no_backends".into(),
        },
        algorithm: AlgorithmChoice {
            algorithm: cfg.algorithm,
            rule: "no_backends".into(),
        },
        explanation: Explanation {
            inputs: vec!["backends=0".into()],
            forecast: None,
            rules: vec!["no_backends".into()],
            headroom: None,
        },
    }
}

fn apply_override(d: &mut Decision, o: &Override) {
    let mut weights = o.weights.clone();
    weights.sort_by(|a, b| a.backend.cmp(&b.backend));
    d.weights = weights;
    d.ejected
        .retain(|e| !o.weights.iter().any(|w| &w.backend == e));
    if let Some(a) = o.algorithm {
        d.algorithm = AlgorithmChoice {
            algorithm: a,
            rule: "operator_override".into(),
        };
    }
    if let Some(r) = o.desired_replicas {
        d.scaling.desired_replicas = r;
        d.scaling.rule = "operator_override".into();
    }
    d.explanation.rules.push("operator_override".into());
}

/// The endpoints data planes see: every weighted backend with a valid
/// address, weight at least 1, sorted by backend.
fn endpoints(cfg: &ClusterConfig, d: &Decision) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = d
        .weights
        .iter()
        .filter_map(|w| {
            let b = cfg.backends.iter().find(|b| b.name == w.backend)?;
            let (host, port) = b.host_port().ok()?;
            Some(Endpoint {
                backend: b.name.clone(),
                host,
                port,
                weight: w.weight.max(1),
            })
        })
        .collect();
    out.sort_by(|a, b| a.backend.cmp(&b.backend));
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use aya_policy::{BackendWeight, LbAlgorithm};

    fn secs(ms: i64) -> f64 {
        ms as f64 / 1000.0
    }

    #[test]
    fn observations_fold_fresh_values_and_skip_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let stale = (ctl.config().stale_after_seconds * 1000.0) as i64;
        let ok = ingest(
            &ctl,
            vec![
                sample("a", "request_rate", T0_MS - 1_000, 10.0),
                sample("a", "latency_p99_seconds", T0_MS - 500, 0.2),
                sample("a", "error_rate", T0_MS - 500, 3.0),
                sample("a", "healthy", T0_MS - 500, 0.0),
                sample("b", "request_rate", T0_MS - stale - 1_000, 99.0),
                sample("c", "unknown_metric", T0_MS - 500, 5.0),
            ],
        );
        assert_eq!(ok, vec![true; 6]);
        let web = ctl.cluster("web").unwrap();
        let (obs, demand) = ctl.observations(&web, secs(T0_MS));
        assert_eq!(demand, 10.0);
        assert_eq!(obs[0].request_rate, 10.0);
        assert_eq!(obs[0].latency_p99, 0.2);
        assert_eq!(obs[0].error_rate, 1.0);
        assert!(!obs[0].healthy);
        assert_eq!(obs[0].observed_at, secs(T0_MS - 500));
        // b's value is stale: b is unobserved at `now`.
        assert_eq!(obs[1].request_rate, 0.0);
        assert_eq!(obs[1].observed_at, secs(T0_MS));
        assert_eq!(obs[2].observed_at, secs(T0_MS - 500));
        assert_eq!(replica_state(&web, &obs).ready, 2);
    }

    #[test]
    fn a_cluster_level_request_rate_is_the_demand() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let web = ctl.cluster("web").unwrap();
        let ok = ingest(
            &ctl,
            vec![
                sample("a", "request_rate", T0_MS - 1_000, 10.0),
                sample("b", "request_rate", T0_MS - 1_000, 5.0),
            ],
        );
        assert_eq!(ok, vec![true; 2]);
        assert_eq!(
            ctl.observations(&web, secs(T0_MS)).1,
            15.0,
            "sum of backends"
        );
        // The data plane's own count (requests that failed or queue included).
        let ok = ingest(
            &ctl,
            vec![
                sample("", "request_rate", T0_MS - 1_000, 40.0),
                sample("", "latency_p99_seconds", T0_MS - 1_000, 1.0),
            ],
        );
        assert_eq!(
            ok,
            vec![true, false],
            "only demand metrics at cluster level"
        );
        let (obs, demand) = ctl.observations(&web, secs(T0_MS));
        assert_eq!(demand, 40.0);
        assert_eq!(obs.len(), 3, "the cluster-level series is no backend");
        // Stale cluster-level demand falls back to the sum; with every
        // series stale the demand is unknown, not 0.
        let later = secs(T0_MS) + ctl.config().stale_after_seconds + 5.0;
        assert!(ctl.observations(&web, later).1.is_nan());
    }

    #[test]
    fn a_tick_closes_the_anomaly_of_a_series_that_stopped_reporting() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let mut batch: Vec<_> = (0..300)
            .map(|i| {
                let ts = T0_MS - 400_000 + i * 1000;
                sample("a", "latency_p99_seconds", ts, 0.1 + (i % 3) as f64 * 0.001)
            })
            .collect();
        batch.push(sample("a", "latency_p99_seconds", T0_MS - 99_000, 5.0));
        assert!(ingest(&ctl, batch).iter().all(|ok| *ok));
        let a = ctl
            .anomalies()
            .expect("anomaly detection is on by default")
            .clone();
        assert_eq!(a.list("web", false).0.len(), 1, "the spike opened one");
        // Silence allowed: max(quiet_seconds 300, stale_after_seconds).
        let silence = a
            .config()
            .quiet_seconds
            .max(ctl.config().stale_after_seconds);
        ctl.tick_all(secs(T0_MS)).unwrap();
        assert_eq!(
            a.list("web", false).0.len(),
            1,
            "99 s of silence is not stale"
        );
        ctl.tick_all(secs(T0_MS - 99_000) + silence + 1.0).unwrap();
        let (open, closed) = a.list("web", true);
        assert!(open.is_empty());
        assert_eq!(closed[0].episode.closed_by, Some("stale"));
    }

    #[test]
    fn demand_is_unknown_until_a_rate_is_measured() {
        use crate::ingest::{MetricKind, Sample};
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let web = ctl.cluster("web").unwrap();
        // Nothing ingested yet: unknown, and a tick neither scales on it nor
        // stores it as history.
        assert!(ctl.observations(&web, secs(T0_MS)).1.is_nan());
        // Latency alone, or a counter's first sample, measures no rate.
        let counter =
            |ts: i64, v: f64| Sample::new("web", "a", "requests_total", MetricKind::Counter, ts, v);
        let ok = ingest(
            &ctl,
            vec![
                sample("b", "latency_p99_seconds", T0_MS - 2_000, 0.2),
                counter(T0_MS - 2_000, 100.0),
            ],
        );
        assert_eq!(ok, vec![true; 2]);
        assert!(ctl.observations(&web, secs(T0_MS)).1.is_nan());
        // The counter's second sample gives a rate: the demand is known.
        assert_eq!(
            ingest(&ctl, vec![counter(T0_MS - 1_000, 130.0)]),
            vec![true]
        );
        assert_eq!(ctl.observations(&web, secs(T0_MS)).1, 30.0);
    }

    #[test]
    fn a_tick_publishes_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let first = ctl.tick_cluster("web", secs(T0_MS)).unwrap().unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(first.endpoints.len(), 3);
        let again = ctl
            .tick_cluster("web", secs(T0_MS) + 10.0)
            .unwrap()
            .unwrap();
        assert_eq!(again.version, 1, "same decision, same version");
        assert_eq!(ctl.metrics().publications(), 1);
        assert!(ctl.tick_cluster("nope", secs(T0_MS)).unwrap().is_none());
        ctl.tick_all(secs(T0_MS) + 20.0).unwrap();
        assert_eq!(ctl.metrics().ticks(), 1);
    }

    #[test]
    fn a_cluster_without_backends_asks_for_its_minimum() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let mut cfg = ctl.cluster("web").unwrap();
        cfg.backends.clear();
        ctl.upsert_cluster(cfg).unwrap();
        let snap = ctl.publisher().current("web").unwrap();
        assert!(snap.endpoints.is_empty());
        assert_eq!(snap.decision.scaling.rule, "no_backends");
        assert_eq!(snap.decision.scaling.desired_replicas, 1);
    }

    #[test]
    fn an_override_replaces_weights_algorithm_and_replicas() {
        let mut d = no_backends(&config(std::path::Path::new("x")).clusters[0], 1.0);
        d.ejected = vec!["b".into(), "c".into()];
        let o = Override {
            weights: vec![
                BackendWeight {
                    backend: "c".into(),
                    weight: 2,
                },
                BackendWeight {
                    backend: "a".into(),
                    weight: 1,
                },
            ],
            algorithm: Some(LbAlgorithm::LeastRequest),
            desired_replicas: Some(4),
        };
        apply_override(&mut d, &o);
        let names: Vec<_> = d.weights.iter().map(|w| w.backend.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(d.ejected, vec!["b".to_string()]);
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::LeastRequest);
        assert_eq!(d.algorithm.rule, "operator_override");
        assert_eq!(d.scaling.desired_replicas, 4);
        assert_eq!(d.explanation.rules.last().unwrap(), "operator_override");
    }

    #[test]
    fn endpoints_skip_unknown_backends_and_weigh_at_least_one() {
        let cfg = config(std::path::Path::new("x")).clusters[0].clone();
        let mut d = no_backends(&cfg, 1.0);
        d.weights = ["c", "zz", "a"]
            .iter()
            .map(|b| BackendWeight {
                backend: b.to_string(),
                weight: 0,
            })
            .collect();
        let e = endpoints(&cfg, &d);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].backend.as_str(), e[0].port, e[0].weight),
            ("a", 9001, 1)
        );
        assert_eq!(e[1].backend, "c");
    }
}
