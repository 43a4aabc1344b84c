//! Decisions: the control tick and how a decision is applied to the data plane
//! and the fleet.

use aya_policy::{BackendObservation, Decision, ReplicaState};
use serde::{Deserialize, Serialize};

use super::Sim;
use super::backends::Life;
use super::queue::Ev;

/// One control tick as the simulator ran it: what the control loop was
/// given and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlTick {
    /// Virtual time of the tick, seconds.
    pub now: f64,
    /// Seconds since the previous tick (the control interval).
    pub interval: f64,
    /// The latest delivered observations (one per backend).
    pub observations: Vec<BackendObservation>,
    /// Demand of the latest delivered telemetry, requests/s (arrivals);
    /// `NaN` (`null` in JSON) before the first telemetry arrives.
    #[serde(with = "nan_as_null")]
    pub demand_rps: f64,
    /// Replica state given to the loop.
    pub replicas: ReplicaState,
    /// The loop's decision.
    pub decision: Decision,
}

impl Sim<'_> {
    pub(super) fn control_tick(&mut self) {
        let now = self.now;
        while self.tel_queue.front().is_some_and(|(t, _, _)| *t <= now) {
            if let Some((_, obs, d)) = self.tel_queue.pop_front() {
                self.latest_obs = obs;
                self.latest_demand = d;
            }
        }
        let (ready, booting, _) = self.alive_count();
        let replicas = match &self.model.scaling {
            // The orchestrator knows which replicas are ready and which boot.
            Some(s) => ReplicaState::new(ready, booting).with_bounds(s.min, s.max, s.boot_delay),
            // A fixed pool, as `aya serve` sees one: every backend exists and
            // it is ready when its latest observation says it is healthy.
            None => {
                let current = ready + booting;
                let healthy = self.latest_obs.iter().filter(|o| o.healthy).count() as u32;
                let ready = healthy.min(current);
                ReplicaState::new(ready, current - ready)
            }
        };
        let interval = self.model.control_interval.unwrap_or(10.0);
        let Some(ctl) = self.control.as_mut() else {
            return;
        };
        let d = ctl.tick(
            now,
            interval,
            &self.latest_obs,
            self.latest_demand,
            replicas,
        );
        if let Some(h) = d.explanation.headroom
            && self.headroom.len() < 100_000
        {
            self.headroom.push((now, h));
        }
        if let Some(trace) = self.trace.as_mut() {
            trace.push(ControlTick {
                now,
                interval,
                observations: self.latest_obs.clone(),
                demand_rps: self.latest_demand,
                replicas,
                decision: d.clone(),
            });
        }
        self.apply(d);
        if !(self.arrivals_done && self.in_system == 0) {
            self.schedule(now + interval, Ev::Control);
        }
    }

    pub(super) fn apply(&mut self, d: Decision) {
        // A decision without a limit leaves the data plane's as it is.
        if let Some(limit) = d.max_requests
            && !self.central
        {
            self.max_requests = Some(u64::from(limit));
        }
        let mut changed = false;
        if !self.central && d.algorithm.algorithm != self.lb.algorithm() {
            self.lb.set_algorithm(d.algorithm.algorithm, self.now);
            self.m.algorithm_switches += 1;
            changed = true;
        }
        if let Some(od) = d.outlier_detection
            && !self.central
            && self.set_outlier_detection(od)
        {
            changed = true;
        }
        let mut named = vec![false; self.bs.len()];
        for w in &d.weights {
            if let Some(&i) = self.names.get(&w.backend) {
                if let Some(n) = named.get_mut(i as usize) {
                    *n = true;
                }
                let nw = w.weight.max(1) as f64;
                if self.weight[i as usize] != nw {
                    self.weight[i as usize] = nw;
                    changed = true;
                }
            }
        }
        // EDS semantics: a decision that publishes weights publishes the
        // whole assignment; a backend it names no longer (e.g. one the
        // policy saw unhealthy) stops receiving traffic, as Envoy removes an
        // endpoint missing from a ClusterLoadAssignment. A backend never
        // named yet (a replica that just booted) keeps being served.
        if !d.weights.is_empty() {
            for (be, named) in self.bs.iter_mut().zip(named) {
                be.listed |= named;
                let unlisted = be.listed && !named;
                if be.unlisted != unlisted {
                    be.unlisted = unlisted;
                    changed = true;
                }
            }
        }
        for (i, be) in self.bs.iter_mut().enumerate() {
            let ej = d
                .ejected
                .iter()
                .any(|n| self.names.get(n) == Some(&(i as u32)));
            if be.ejected != ej {
                be.ejected = ej;
                changed = true;
            }
        }
        if let Some(sc) = self.model.scaling.clone() {
            let (ready, booting, _) = self.alive_count();
            let current = ready + booting;
            let desired = d
                .scaling
                .desired_replicas
                .clamp(sc.min.max(1), sc.max.max(1));
            if desired != current {
                self.account_alive();
                self.m.scaling_actions += 1;
                changed = true;
                if desired > current {
                    for _ in current..desired {
                        self.template_counter += 1;
                        let mut m = sc.template.clone();
                        m.name = format!("{}-{}", sc.template.name, self.template_counter);
                        let h = self.add_backend(m, Life::Booting);
                        self.schedule(self.now + sc.boot_delay, Ev::Boot { b: h });
                    }
                } else {
                    let mut to_remove = current - desired;
                    // Booting replicas first (newest first), then ready ones (highest index).
                    for life in [Life::Booting, Life::Ready] {
                        for i in (0..self.bs.len()).rev() {
                            if to_remove == 0 {
                                break;
                            }
                            if self.bs[i].life == life {
                                to_remove -= 1;
                                self.bs[i].life = if self.bs[i].in_system == 0 {
                                    Life::Removed
                                } else {
                                    Life::Draining
                                };
                            }
                        }
                    }
                }
            }
        }
        if changed {
            self.rebuild_routing();
        }
        let differs = self
            .last_decision
            .as_ref()
            .is_none_or(|l| d.differs_from(l));
        if differs && self.decisions.len() < 1000 {
            self.decisions.push(d.clone());
        }
        self.last_decision = Some(d);
    }
}

/// An `f64` that may be `NaN` (unknown) as JSON: `null` both ways.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_some(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use aya_policy::{AlgorithmChoice, BackendWeight, Decision, LbAlgorithm, ScalingSignal};

    use crate::engine::Sim;
    use crate::engine::backends::Life;
    use crate::engine::test_support::model;
    use crate::model::Scaling;

    fn decision(weights: &[(&str, u32)], ejected: &[&str], replicas: u32) -> Decision {
        Decision {
            outlier_detection: None,
            max_requests: None,
            at: 0.0,
            weights: weights
                .iter()
                .map(|(b, w)| BackendWeight {
                    backend: b.to_string(),
                    weight: *w,
                })
                .collect(),
            ejected: ejected.iter().map(|s| s.to_string()).collect(),
            scaling: ScalingSignal {
                desired_replicas: replicas,
                current_replicas: replicas,
                rule: String::new(),
            },
            algorithm: AlgorithmChoice {
                algorithm: LbAlgorithm::RoundRobin,
                rule: String::new(),
            },
            explanation: Default::default(),
        }
    }

    #[test]
    fn weights_and_ejections_are_applied_and_changes_recorded() {
        let m = model(2, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.apply(decision(&[("b0", 3), ("b1", 1)], &["b1"], 2));
        assert_eq!(s.weight, vec![3.0, 1.0]);
        assert!(s.bs[1].ejected && !s.bs[0].ejected);
        assert_eq!(s.routable, vec![0]);
        s.apply(decision(&[("b0", 3), ("b1", 1)], &["b1"], 2));
        assert_eq!(
            s.decisions.len(),
            1,
            "an unchanged decision is not recorded twice"
        );
        s.apply(decision(&[("b0", 0)], &[], 2));
        assert_eq!(s.weight[0], 1.0, "weights are at least 1");
    }

    #[test]
    fn a_backend_left_out_of_the_assignment_gets_no_traffic() {
        let m = model(3, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        // b2 was never named: it stays routable (a replica that just booted).
        s.apply(decision(&[("b0", 1), ("b1", 1)], &[], 3));
        assert_eq!(s.routable, vec![0, 1, 2]);
        s.apply(decision(&[("b0", 1), ("b1", 1), ("b2", 1)], &[], 3));
        // Now b1 is dropped from the published set, as Envoy drops an
        // endpoint missing from its ClusterLoadAssignment.
        s.apply(decision(&[("b0", 1), ("b2", 1)], &[], 3));
        assert_eq!(s.routable, vec![0, 2]);
        // Listed again: routable again. A decision without weights changes nothing.
        s.apply(decision(&[("b0", 1), ("b1", 1), ("b2", 1)], &[], 3));
        assert_eq!(s.routable, vec![0, 1, 2]);
        s.apply(decision(&[], &[], 3));
        assert_eq!(s.routable, vec![0, 1, 2]);
    }

    #[test]
    fn scaling_boots_new_replicas_and_drains_the_newest_first() {
        let mut m = model(2, 0.5, 10);
        let template = m.backends[0].clone();
        m.scaling = Some(Scaling {
            min: 1,
            max: 4,
            boot_delay: 30.0,
            template,
        });
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.apply(decision(&[], &[], 4));
        assert_eq!(s.m.scaling_actions, 1);
        assert_eq!(s.alive_count(), (2, 2, 4));
        assert_eq!(s.bs[3].m.name, "b0-2");
        s.apply(decision(&[], &[], 9));
        assert_eq!(s.alive_count(), (2, 2, 4), "clamped to max");
        s.apply(decision(&[], &[], 1));
        assert_eq!(s.alive_count(), (1, 0, 1));
        assert_eq!(
            s.bs[1].life,
            Life::Removed,
            "an idle replica is removed at once"
        );
    }
}
