//! Backends: jobs, the FCFS and processor-sharing service disciplines, and the
//! replica life cycle.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use hdrhistogram::Histogram;

use super::Sim;
use super::queue::Ev;
use super::scoring::{Outcome, hist2, us};
use crate::dist::mix64;
use crate::model::{BackendModel, Discipline};

#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    pub(super) id: u64,
    pub(super) arrival: f64,
    pub(super) size: f64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PsJob {
    pub(super) tag: f64,
    pub(super) job: Job,
}
impl PartialEq for PsJob {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for PsJob {}
impl PartialOrd for PsJob {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for PsJob {
    fn cmp(&self, o: &Self) -> Ordering {
        o.tag.total_cmp(&self.tag).then(o.job.id.cmp(&self.job.id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    Booting,
    Ready,
    Draining,
    Removed,
}

pub(super) struct Backend {
    pub(super) m: BackendModel,
    pub(super) hash: u64,
    pub(super) life: Life,
    pub(super) speed_factor: f64,
    pub(super) fixed_latency: Option<f64>,
    pub(super) failed: bool,
    /// Data plane believes it is down (health checks).
    pub(super) detected_down: bool,
    pub(super) ejected: bool,
    /// Ejected by the data plane's outlier detection (consecutive errors).
    pub(super) od_ejected: bool,
    /// Errors in a row (outlier detection).
    pub(super) od_consecutive: u32,
    /// Outlier ejections so far (the n-th lasts n base ejection times).
    pub(super) od_times: u32,
    /// When the current outlier ejection ends.
    pub(super) od_until: f64,
    /// Named in an earlier decision's weights but left out of the latest
    /// one: like an endpoint dropped from Envoy's EDS assignment, it gets no
    /// traffic (until a decision lists it again).
    pub(super) unlisted: bool,
    /// Named in some decision's weights so far.
    pub(super) listed: bool,
    pub(super) epoch: u32,
    pub(super) queue: VecDeque<Job>,
    pub(super) slots: Vec<Option<Job>>,
    pub(super) free: Vec<u32>,
    pub(super) busy: u32,
    pub(super) ps: BinaryHeap<PsJob>,
    pub(super) ps_v: f64,
    pub(super) ps_last: f64,
    pub(super) ps_gen: u32,
    pub(super) in_system: u32,
    pub(super) last_change: f64,
    pub(super) busy_int: f64,
    pub(super) inflight_int: f64,
    // Telemetry window.
    pub(super) tel_busy0: f64,
    pub(super) tel_infl0: f64,
    pub(super) tel_done: u64,
    pub(super) tel_err: u64,
    pub(super) tel_hist: Histogram<u32>,
    // Series window.
    pub(super) ser_busy0: f64,
    pub(super) ser_infl0: f64,
    pub(super) ser_done: u64,
}

impl Backend {
    pub(super) fn new(m: BackendModel, now: f64, life: Life) -> Backend {
        let hash = mix64(m.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
            (h ^ c as u64).wrapping_mul(0x100_0000_01b3)
        }));
        let c = m.concurrency.max(1);
        Backend {
            hash,
            life,
            speed_factor: 1.0,
            fixed_latency: None,
            failed: false,
            detected_down: false,
            ejected: false,
            od_ejected: false,
            od_consecutive: 0,
            od_times: 0,
            od_until: 0.0,
            unlisted: false,
            listed: false,
            epoch: 0,
            queue: VecDeque::new(),
            slots: vec![
                None;
                if m.discipline == Discipline::Fcfs {
                    c as usize
                } else {
                    0
                }
            ],
            free: (0..c).rev().collect(),
            busy: 0,
            ps: BinaryHeap::new(),
            ps_v: 0.0,
            ps_last: now,
            ps_gen: 0,
            in_system: 0,
            last_change: now,
            busy_int: 0.0,
            inflight_int: 0.0,
            tel_busy0: 0.0,
            tel_infl0: 0.0,
            tel_done: 0,
            tel_err: 0,
            tel_hist: hist2(),
            ser_busy0: 0.0,
            ser_infl0: 0.0,
            ser_done: 0,
            m,
        }
    }

    #[inline]
    pub(super) fn speed(&self) -> f64 {
        self.m.speed * self.speed_factor
    }

    /// Busy servers (FCFS) or busy cores (PS).
    #[inline]
    pub(super) fn busy_units(&self) -> f64 {
        match self.m.discipline {
            Discipline::Fcfs => self.busy as f64,
            Discipline::Ps => (self.ps.len() as u32).min(self.m.concurrency.max(1)) as f64,
        }
    }

    #[inline]
    pub(super) fn account(&mut self, now: f64) {
        let dt = now - self.last_change;
        if dt > 0.0 {
            self.busy_int += self.busy_units() * dt;
            self.inflight_int += self.in_system as f64 * dt;
            self.last_change = now;
        }
    }

    #[inline]
    pub(super) fn ps_rate(&self) -> f64 {
        let n = self.ps.len() as f64;
        if n == 0.0 {
            0.0
        } else {
            self.speed() * n.min(self.m.concurrency.max(1) as f64) / n
        }
    }

    #[inline]
    pub(super) fn ps_advance(&mut self, now: f64) {
        let r = self.ps_rate();
        self.ps_v += r * (now - self.ps_last);
        self.ps_last = now;
    }
}

impl Sim<'_> {
    pub(super) fn add_backend(&mut self, m: BackendModel, life: Life) -> u32 {
        let idx = self.bs.len() as u32;
        self.names.insert(m.name.clone(), idx);
        let b = Backend::new(m, self.now, life);
        self.hashes.push(b.hash);
        self.bs.push(b);
        self.outstanding.push(0);
        self.weight.push(1.0);
        idx
    }

    pub(super) fn alive_count(&self) -> (u32, u32, u32) {
        let mut ready = 0;
        let mut booting = 0;
        let mut alive = 0;
        for b in &self.bs {
            match b.life {
                Life::Ready => {
                    ready += 1;
                    alive += 1
                }
                Life::Booting => {
                    booting += 1;
                    alive += 1
                }
                Life::Draining => alive += 1,
                Life::Removed => {}
            }
        }
        (ready, booting, alive)
    }

    pub(super) fn has_booting(&self) -> bool {
        self.bs.iter().any(|b| b.life == Life::Booting)
    }

    #[inline]
    pub(super) fn start_fcfs(&mut self, h: u32, job: Job) {
        let now = self.now;
        let b = &mut self.bs[h as usize];
        let service = match b.fixed_latency {
            Some(l) => l,
            None => job.size / b.speed(),
        };
        let slot = b.free.pop().unwrap_or(0);
        if let Some(s) = b.slots.get_mut(slot as usize) {
            *s = Some(job);
        }
        b.busy += 1;
        let epoch = b.epoch;
        self.schedule(now + service, Ev::Departure { b: h, slot, epoch });
    }

    pub(super) fn ps_reschedule(&mut self, h: u32) {
        let b = &mut self.bs[h as usize];
        b.ps_gen = b.ps_gen.wrapping_add(1);
        let gen_ = b.ps_gen;
        if let Some(top) = b.ps.peek() {
            let r = b.ps_rate();
            if r > 0.0 {
                let t = self.now + ((top.tag - b.ps_v).max(0.0)) / r;
                self.schedule(t, Ev::PsDeparture { b: h, gen_ });
            }
        }
    }

    /// Pull the next queued job into a free FCFS server (own queue or central).
    pub(super) fn next_fcfs(&mut self, h: u32) {
        loop {
            let b = &mut self.bs[h as usize];
            if b.busy >= b.m.concurrency.max(1) || b.failed {
                return;
            }
            let job = if self.central {
                if b.life != Life::Ready {
                    return;
                }
                match self.central_q.pop_front() {
                    Some(j) => {
                        b.account(self.now);
                        b.in_system += 1;
                        self.outstanding[h as usize] += 1;
                        j
                    }
                    None => return,
                }
            } else {
                match b.queue.pop_front() {
                    Some(j) => j,
                    None => return,
                }
            };
            // Expired while queued: the server discards it if configured to.
            if let (true, Some(t)) = (self.bs[h as usize].m.drop_expired, self.model.timeout)
                && self.now - job.arrival > t
            {
                let be = &mut self.bs[h as usize];
                be.account(self.now);
                be.in_system -= 1;
                self.account_sys();
                self.in_system -= 1;
                if self.settle(job.id) {
                    self.outstanding[h as usize] = self.outstanding[h as usize].saturating_sub(1);
                    self.outcome(job.id, job.arrival, Outcome::Late);
                }
                continue;
            }
            self.start_fcfs(h, job);
            return;
        }
    }

    #[inline]
    pub(super) fn complete(&mut self, h: u32, job: Job) {
        let hu = h as usize;
        let rt = self.now - job.arrival;
        self.account_sys();
        self.in_system -= 1;
        let on_time = self.settle(job.id);
        if on_time {
            self.outstanding[hu] = self.outstanding[hu].saturating_sub(1);
            self.lb.observe_rtt(h, rt, self.now);
        }
        let v = us(rt);
        let be = &mut self.bs[hu];
        be.in_system -= 1;
        be.tel_done += 1;
        be.ser_done += 1;
        be.tel_hist.saturating_record(v as u32 as u64);
        self.ser_done += 1;
        self.ser_hist.saturating_record(v);
        if self.scored(job.id, job.arrival) {
            self.m.completed += 1;
            self.lat_sum += rt;
            self.hist.saturating_record(v);
            self.slo_hist.saturating_record(v);
        }
        if on_time {
            self.outcome(job.id, job.arrival, Outcome::Success);
        }
        self.bs[hu].od_consecutive = 0;
        if self.bs[hu].life == Life::Draining && self.bs[hu].in_system == 0 {
            self.account_alive();
            self.bs[hu].life = Life::Removed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(discipline: Discipline, concurrency: u32) -> Backend {
        Backend::new(
            BackendModel {
                name: "b".into(),
                speed: 2.0,
                concurrency,
                discipline,
                queue_limit: None,
                drop_expired: false,
            },
            0.0,
            Life::Ready,
        )
    }

    #[test]
    fn fcfs_backends_have_one_slot_per_server_and_ps_backends_none() {
        let f = backend(Discipline::Fcfs, 3);
        assert_eq!(f.slots.len(), 3);
        assert_eq!(f.free, vec![2, 1, 0]);
        let p = backend(Discipline::Ps, 3);
        assert!(p.slots.is_empty());
        assert_eq!(
            f.hash,
            backend(Discipline::Ps, 1).hash,
            "the hash is the name's"
        );
    }

    #[test]
    fn processor_sharing_splits_the_cores_among_the_jobs() {
        let mut b = backend(Discipline::Ps, 2);
        assert_eq!(b.ps_rate(), 0.0);
        for id in 0..4 {
            b.ps.push(PsJob {
                tag: 1.0,
                job: Job {
                    id,
                    arrival: 0.0,
                    size: 1.0,
                },
            });
        }
        // Two cores of speed 2 over four jobs: 1 unit of work per second each.
        assert_eq!(b.ps_rate(), 1.0);
        b.ps_advance(0.5);
        assert_eq!(b.ps_v, 0.5);
        assert_eq!(b.busy_units(), 2.0);
    }

    #[test]
    fn busy_and_in_flight_time_integrate_between_changes() {
        let mut b = backend(Discipline::Fcfs, 2);
        b.busy = 1;
        b.in_system = 3;
        b.account(2.0);
        assert_eq!(b.busy_int, 2.0);
        assert_eq!(b.inflight_int, 6.0);
        b.account(2.0);
        assert_eq!(b.busy_int, 2.0, "no time passed");
    }

    #[test]
    fn the_ps_heap_serves_the_smallest_finish_tag_first() {
        let mut h = BinaryHeap::new();
        for (id, tag) in [(1, 3.0), (2, 1.0), (3, 1.0)] {
            h.push(PsJob {
                tag,
                job: Job {
                    id,
                    arrival: 0.0,
                    size: tag,
                },
            });
        }
        let ids: Vec<u64> = std::iter::from_fn(|| h.pop().map(|p| p.job.id)).collect();
        assert_eq!(ids, vec![2, 3, 1]);
    }
}
