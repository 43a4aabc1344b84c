//! Routing: the set of routable hosts and the arrival of a request at the data plane.

use super::Sim;
use super::backends::{Job, Life, PsJob};
use super::queue::Ev;
use super::scoring::Outcome;
use crate::model::Discipline;
use crate::workload::Arrival;
use aya_policy::OutlierDetection;

impl Sim<'_> {
    pub(super) fn rebuild_routing(&mut self) {
        self.routable.clear();
        for (i, b) in self.bs.iter().enumerate() {
            if b.life == Life::Ready
                && !b.detected_down
                && !b.ejected
                && !b.unlisted
                && !b.od_ejected
            {
                self.routable.push(i as u32);
            }
        }
        if self.routable.is_empty() {
            // Envoy's panic mode: with every host ejected (or dropped from
            // the assignment), route to all ready hosts.
            for (i, b) in self.bs.iter().enumerate() {
                if b.life == Life::Ready && !b.detected_down {
                    self.routable.push(i as u32);
                }
            }
        }
        let hosts = std::mem::take(&mut self.routable);
        self.lb
            .rebuild(&hosts, &self.weight, &self.hashes, &self.outstanding);
        self.routable = hosts;
    }

    /// Envoy's `consecutive_5xx` outlier detection (the scenario's
    /// `[data_plane]` settings, or what the policy's decisions publish): an
    /// error from host `h`; at `consecutive_5xx` in a row the host is ejected
    /// for its n-th `base_ejection_time`, as Envoy decides it: at once when
    /// no host is ejected, otherwise while `ejected × 100 / hosts` is below
    /// `max_ejection_percent`; routing is rebuilt.
    pub(super) fn outlier_error(&mut self, h: u32) {
        let p = self.od;
        let hu = h as usize;
        if !p.enabled() || self.bs[hu].od_ejected {
            return;
        }
        self.bs[hu].od_consecutive += 1;
        if self.bs[hu].od_consecutive < p.consecutive_5xx {
            return;
        }
        let hosts = self.bs.iter().filter(|b| b.life == Life::Ready).count();
        let ejected = self.bs.iter().filter(|b| b.od_ejected).count();
        if ejected > 0 && ejected as f64 * 100.0 / hosts.max(1) as f64 >= p.max_ejection_percent {
            return;
        }
        let be = &mut self.bs[hu];
        be.od_ejected = true;
        be.od_consecutive = 0;
        be.od_times += 1;
        let back = self.now + p.base_ejection_time * be.od_times as f64;
        be.od_until = back;
        self.schedule(back, Ev::OutlierReturn { b: h });
        self.rebuild_routing();
    }

    /// Outlier detection as a decision publishes it: a changed setting
    /// applies from now on; turning it off returns every ejected host (Envoy
    /// rebuilds the cluster, and its outlier state with it).
    pub(super) fn set_outlier_detection(&mut self, od: OutlierDetection) -> bool {
        if od == self.od {
            return false;
        }
        self.od = od;
        if !od.enabled() {
            let mut any = false;
            for be in &mut self.bs {
                any |= be.od_ejected;
                be.od_ejected = false;
                be.od_consecutive = 0;
            }
            if any {
                self.rebuild_routing();
            }
        }
        true
    }

    pub(super) fn arrive(&mut self, a: Arrival) {
        let id = self.next_id;
        self.next_id += 1;
        if id == self.model.warmup_requests && self.model.warmup_requests > 0 && !self.scoring {
            self.start_scoring();
        }
        self.tel_arrivals += 1;
        self.ser_arr += 1;
        if self.scored(id, a.time) {
            self.m.arrived += 1;
        }
        let job = Job {
            id,
            arrival: a.time,
            size: a.size,
        };
        if self.central {
            self.push_deadline(a.time, u32::MAX);
            self.account_sys();
            self.in_system += 1;
            // First idle routable backend, else the central queue.
            let mut idle = None;
            for &h in &self.routable {
                let b = &self.bs[h as usize];
                if !b.failed
                    && b.busy < b.m.concurrency.max(1)
                    && b.m.discipline == Discipline::Fcfs
                {
                    idle = Some(h);
                    break;
                }
            }
            match idle {
                Some(h) => {
                    self.outstanding[h as usize] += 1;
                    self.bs[h as usize].account(self.now);
                    self.bs[h as usize].in_system += 1;
                    self.start_fcfs(h, job);
                }
                None => self.central_q.push_back(job),
            }
            return;
        }
        // Envoy's circuit breaker: past `max_requests` in flight, a fast 503.
        if let Some(cap) = self.max_requests
            && self.outstanding.iter().map(|&o| o as u64).sum::<u64>() >= cap
        {
            self.push_deadline_done();
            self.outcome(id, a.time, Outcome::Drop);
            return;
        }
        let Some(h) = self
            .lb
            .pick(a.key, self.now, &self.outstanding, &mut self.routing)
        else {
            self.push_deadline_done();
            self.outcome(id, a.time, Outcome::Drop);
            return;
        };
        let hu = h as usize;
        if self.bs[hu].failed {
            self.push_deadline_done();
            self.outcome(id, a.time, Outcome::Error);
            self.bs[hu].tel_err += 1;
            self.outlier_error(h);
            return;
        }
        let limit = self.bs[hu]
            .m
            .queue_limit
            .map(|l| l as u64)
            .unwrap_or(u64::MAX);
        let waiting = match self.bs[hu].m.discipline {
            Discipline::Fcfs => self.bs[hu].queue.len() as u64,
            Discipline::Ps => {
                (self.bs[hu].ps.len() as u64).saturating_sub(self.bs[hu].m.concurrency as u64)
            }
        };
        let full = match self.bs[hu].m.discipline {
            Discipline::Fcfs => {
                self.bs[hu].busy >= self.bs[hu].m.concurrency.max(1) && waiting >= limit
            }
            Discipline::Ps => waiting >= limit,
        };
        if full {
            self.push_deadline_done();
            self.outcome(id, a.time, Outcome::Drop);
            return;
        }
        self.push_deadline(a.time, h);
        self.account_sys();
        self.in_system += 1;
        self.outstanding[hu] += 1;
        let b = &mut self.bs[hu];
        b.account(self.now);
        b.in_system += 1;
        match b.m.discipline {
            Discipline::Fcfs => {
                if b.busy < b.m.concurrency.max(1) {
                    self.start_fcfs(h, job);
                } else {
                    b.queue.push_back(job);
                }
            }
            Discipline::Ps => {
                b.ps_advance(self.now);
                let size = match b.fixed_latency {
                    // Fixed latency under PS: scale work so an uncontended request takes `latency`.
                    Some(l) => l * b.speed(),
                    None => job.size,
                };
                let tag = b.ps_v + size;
                b.ps.push(PsJob { tag, job });
                self.ps_reschedule(h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::Sim;
    use crate::engine::queue::Ev;
    use crate::engine::test_support::model;
    use crate::workload::Arrival;
    use aya_policy::OutlierDetection;

    #[test]
    fn ejected_backends_leave_the_routable_set_until_all_are_ejected() {
        let m = model(3, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        assert_eq!(s.routable, vec![0, 1, 2]);
        s.bs[1].ejected = true;
        s.rebuild_routing();
        assert_eq!(s.routable, vec![0, 2]);
        for b in &mut s.bs {
            b.ejected = true;
        }
        s.rebuild_routing();
        assert_eq!(
            s.routable,
            vec![0, 1, 2],
            "panic mode routes to every ready host"
        );
        s.bs[0].detected_down = true;
        s.rebuild_routing();
        assert_eq!(
            s.routable,
            vec![1, 2],
            "a host known down is never routed to"
        );
    }

    #[test]
    fn a_full_queue_drops_and_a_failed_backend_errors() {
        let mut m = model(1, 0.5, 10);
        m.backends[0].queue_limit = Some(1);
        let mut s = Sim::new(&m, 1, None).unwrap();
        let a = |time| Arrival {
            time,
            size: 1.0,
            key: 0,
        };
        s.arrive(a(0.0)); // served
        s.arrive(a(0.0)); // queued
        s.arrive(a(0.0)); // dropped
        assert_eq!(s.in_system, 2);
        assert_eq!(s.m.dropped, 1);
        s.bs[0].failed = true;
        s.arrive(a(0.0));
        assert_eq!(s.m.errors, 1);
        assert_eq!(s.bs[0].tel_err, 1);
    }

    #[test]
    fn past_the_in_flight_limit_requests_are_refused_at_once() {
        let m = model(2, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.max_requests = Some(2);
        let a = |time| Arrival {
            time,
            size: 1.0,
            key: 0,
        };
        s.arrive(a(0.0));
        s.arrive(a(0.0));
        assert_eq!(
            (s.in_system, s.m.dropped),
            (2, 0),
            "two in flight: within the limit"
        );
        s.arrive(a(0.0));
        assert_eq!((s.in_system, s.m.dropped), (2, 1), "the third is refused");
        s.max_requests = None;
        s.arrive(a(0.0));
        assert_eq!((s.in_system, s.m.dropped), (3, 1), "no limit: served");
    }

    #[test]
    fn outlier_detection_ejects_after_consecutive_errors_within_its_share() {
        let mut m = model(10, 0.5, 10);
        m.lb.outlier_consecutive_5xx = 3;
        m.lb.outlier_base_ejection_time = 30.0;
        m.lb.outlier_max_ejection_percent = 10.0;
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.bs[0].failed = true;
        s.bs[1].failed = true;
        s.outlier_error(0);
        s.outlier_error(0);
        assert!(!s.bs[0].od_ejected, "two errors in a row are not three");
        s.outlier_error(0);
        assert!(s.bs[0].od_ejected && !s.routable.contains(&0));
        assert_eq!(s.bs[0].od_times, 1);
        // 10 % of 10 hosts: one at a time, so b1 stays routable.
        for _ in 0..5 {
            s.outlier_error(1);
        }
        assert!(!s.bs[1].od_ejected && s.routable.contains(&1));
        // A success resets the count.
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.outlier_error(2);
        s.outlier_error(2);
        s.bs[2].od_consecutive = 0; // as a completed request does
        s.outlier_error(2);
        assert!(!s.bs[2].od_ejected);
        // Off by default: no ejection however many errors.
        let m = model(3, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        for _ in 0..100 {
            s.outlier_error(0);
        }
        assert!(!s.bs[0].od_ejected);
    }

    #[test]
    fn published_outlier_detection_applies_and_turning_it_off_returns_hosts() {
        // The scenario has none; a decision turns it on for two of four hosts.
        let m = model(4, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.outlier_error(0);
        assert!(!s.bs[0].od_ejected, "off in the scenario");
        let on = OutlierDetection {
            consecutive_5xx: 1,
            base_ejection_time: 10.0,
            max_ejection_percent: 50.0,
        };
        assert!(s.set_outlier_detection(on));
        assert!(!s.set_outlier_detection(on), "unchanged");
        for h in 0..3 {
            s.outlier_error(h);
        }
        // Envoy's budget: eject while ejected × 100 / hosts < 50.
        let ejected: Vec<bool> = s.bs.iter().map(|b| b.od_ejected).collect();
        assert_eq!(ejected, vec![true, true, false, false]);
        assert_eq!(s.routable, vec![2, 3]);
        // Off: every ejected host is back at once.
        assert!(s.set_outlier_detection(OutlierDetection::OFF));
        assert!(s.bs.iter().all(|b| !b.od_ejected));
        assert_eq!(s.routable, vec![0, 1, 2, 3]);
        // On again: host 0 is ejected anew (its second ejection, 20 s); the
        // first ejection's return at 10 s does not end it.
        assert!(s.set_outlier_detection(on));
        s.now = 5.0;
        s.outlier_error(0);
        s.now = 10.0;
        s.handle(Ev::OutlierReturn { b: 0 });
        assert!(s.bs[0].od_ejected, "a stale return is ignored");
        s.now = 25.0;
        s.handle(Ev::OutlierReturn { b: 0 });
        assert!(!s.bs[0].od_ejected);
    }

    #[test]
    fn an_outlier_ejected_host_returns_after_its_ejection_time() {
        let mut m = model(2, 0.5, 10);
        m.lb.outlier_consecutive_5xx = 1;
        m.lb.outlier_base_ejection_time = 5.0;
        let mut s = Sim::new(&m, 1, None).unwrap();
        let returns = |s: &Sim<'_>| -> Vec<f64> {
            s.heap
                .iter()
                .filter(|e| matches!(e.ev, Ev::OutlierReturn { b: 1 }))
                .map(|e| e.t)
                .collect()
        };
        s.now = 2.0;
        s.outlier_error(1);
        assert!(s.bs[1].od_ejected && s.routable == vec![0]);
        assert_eq!(returns(&s), vec![7.0], "back one base ejection time later");
        s.now = 7.0;
        s.handle(Ev::OutlierReturn { b: 1 });
        assert!(!s.bs[1].od_ejected && s.routable == vec![0, 1]);
        // The second ejection lasts twice as long (Envoy's multiplier).
        s.outlier_error(1);
        assert!(returns(&s).contains(&17.0), "{:?}", returns(&s));
    }
}
