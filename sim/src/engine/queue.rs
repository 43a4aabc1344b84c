//! The event queue: the binary heap of timed events, the lazily pulled next
//! arrival and the FIFO of client deadlines.

use std::cmp::Ordering;

use super::scoring::Outcome;
use super::{Sim, SimError};
use crate::model::limits::MAX_IN_FLIGHT;
use crate::workload::Arrival;

#[derive(Debug, Clone, Copy)]
pub(super) enum Ev {
    Departure { b: u32, slot: u32, epoch: u32 },
    PsDeparture { b: u32, gen_: u32 },
    Boot { b: u32 },
    Telemetry,
    Control,
    Series,
    SloWindow,
    FaultStart { f: u32 },
    FaultEnd { f: u32 },
    DegradeStep { f: u32, step: u32 },
    HealthDown { b: u32, epoch: u32 },
    HealthUp { b: u32, epoch: u32 },
    OutlierReturn { b: u32 },
    WarmupEnd,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub(super) t: f64,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}
impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

pub(super) struct Pending {
    pub(super) deadline: f64,
    pub(super) backend: u32,
    pub(super) done: bool,
}

impl Sim<'_> {
    #[inline]
    pub(super) fn schedule(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            t,
            seq: self.seq,
            ev,
        });
    }

    pub(super) fn pull(&mut self) -> Result<Option<Arrival>, SimError> {
        if self.arrivals_done {
            return Ok(None);
        }
        if let Some(max) = self.model.max_requests
            && self.next_id >= max
        {
            self.arrivals_done = true;
            return Ok(None);
        }
        let a = self.src.next_arrival()?;
        match a {
            Some(a) if self.model.duration.is_none_or(|d| a.time <= d) => Ok(Some(a)),
            _ => {
                self.arrivals_done = true;
                Ok(None)
            }
        }
    }

    #[inline]
    pub(super) fn front_deadline(&mut self) -> f64 {
        while let Some(p) = self.deadlines.front() {
            if p.done {
                self.deadlines.pop_front();
                self.dl_base += 1;
            } else {
                return p.deadline;
            }
        }
        f64::INFINITY
    }

    pub(super) fn expire_front(&mut self) {
        if let Some(p) = self.deadlines.pop_front() {
            let id = self.dl_base;
            self.dl_base += 1;
            let b = p.backend as usize;
            if let Some(o) = self.outstanding.get_mut(b) {
                *o = o.saturating_sub(1);
            }
            let rtt = self.model.timeout.unwrap_or(0.0);
            self.lb.observe_rtt(p.backend, rtt, self.now);
            // The request's arrival time is deadline - timeout.
            self.outcome(id, p.deadline - rtt, Outcome::Late);
        }
    }

    /// Mark request `id` finished from the data plane's view. Returns false
    /// when the client had already given up (timed out).
    #[inline]
    pub(super) fn settle(&mut self, id: u64) -> bool {
        if self.model.timeout.is_none() {
            return true;
        }
        if id < self.dl_base {
            return false;
        }
        match self.deadlines.get_mut((id - self.dl_base) as usize) {
            Some(p) if !p.done => {
                p.done = true;
                true
            }
            _ => false,
        }
    }

    #[inline]
    pub(super) fn push_deadline(&mut self, arrival: f64, backend: u32) {
        if let Some(t) = self.model.timeout {
            self.deadlines.push_back(Pending {
                deadline: arrival + t,
                backend,
                done: false,
            });
        }
    }
    #[inline]
    pub(super) fn push_deadline_done(&mut self) {
        if self.model.timeout.is_some() {
            self.deadlines.push_back(Pending {
                deadline: 0.0,
                backend: 0,
                done: true,
            });
        }
    }

    /// Refuse to grow past [`MAX_IN_FLIGHT`] requests in the system or client
    /// deadlines pending: far past what the backends can serve, the queues
    /// would only exhaust memory.
    pub(super) fn check_backlog(&self) -> Result<(), SimError> {
        let too_large = |what, hint| SimError::TooLarge {
            at: self.now,
            what,
            limit: MAX_IN_FLIGHT,
            hint,
        };
        if self.in_system as usize > MAX_IN_FLIGHT {
            return Err(too_large(
                "requests in the system",
                "the backends cannot keep up with the workload: lower `workload.rate` (or \
                 `workload.multiplier` of a rate series), add `backends`, or bound the queues \
                 with `backends[].queue_limit`",
            ));
        }
        if self.deadlines.len() > MAX_IN_FLIGHT {
            return Err(too_large(
                "client deadlines pending",
                "`timeout` x arrival rate is too large: lower `timeout` or the workload's rate",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BinaryHeap;

    use super::*;
    use crate::engine::simulate;
    use crate::engine::test_support::model;

    #[test]
    fn the_heap_pops_the_earliest_event_and_ties_in_scheduling_order() {
        let mut h = BinaryHeap::new();
        for (t, seq) in [(2.0, 1), (1.0, 2), (1.0, 3), (0.5, 4)] {
            h.push(Entry {
                t,
                seq,
                ev: Ev::Telemetry,
            });
        }
        let order: Vec<(f64, u64)> = std::iter::from_fn(|| h.pop().map(|e| (e.t, e.seq))).collect();
        assert_eq!(order, vec![(0.5, 4), (1.0, 2), (1.0, 3), (2.0, 1)]);
    }

    #[test]
    fn settled_deadlines_are_skipped_and_late_ones_expire_in_order() {
        let mut m = model(2, 0.5, 10);
        m.timeout = Some(1.0);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.push_deadline(0.0, 0); // id 0
        s.push_deadline(0.5, 1); // id 1
        s.push_deadline_done(); // id 2, dropped at arrival
        s.push_deadline(0.7, 0); // id 3
        assert_eq!(s.front_deadline(), 1.0);
        assert!(s.settle(0));
        assert!(!s.settle(0), "a request settles once");
        assert!(!s.settle(2), "a dropped request has no deadline");
        assert_eq!(s.front_deadline(), 1.5);
        s.now = 1.5;
        s.outstanding[1] = 1;
        s.expire_front();
        assert_eq!(s.outstanding[1], 0);
        assert!(!s.settle(1), "expired: the client gave up");
        assert_eq!(s.front_deadline(), 1.7);
    }

    #[test]
    fn without_a_timeout_every_request_settles_on_time() {
        let m = model(1, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.push_deadline(0.0, 0);
        assert!(s.deadlines.is_empty());
        assert_eq!(s.front_deadline(), f64::INFINITY);
        assert!(s.settle(42));
    }

    #[test]
    fn the_backlog_is_bounded() {
        let m = model(1, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        assert!(s.check_backlog().is_ok());
        s.in_system = MAX_IN_FLIGHT as u64 + 1;
        let e = s.check_backlog().unwrap_err().to_string();
        assert!(
            e.contains("requests in the system") && e.contains("queue_limit"),
            "{e}"
        );
    }

    #[test]
    fn an_overloaded_run_stops_with_a_clear_error() {
        // 1000 times the capacity of one server, no queue limit: the
        // backlog passes the bound long before memory runs out.
        let mut m = model(1, 1000.0, u64::MAX);
        m.max_requests = None;
        m.duration = Some(1e9);
        let e = simulate(&m, 1, None).unwrap_err();
        assert!(matches!(e, SimError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("workload.rate"), "{e}");
    }
}
