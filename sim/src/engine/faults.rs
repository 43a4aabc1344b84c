//! Faults: failures, slowdowns, fixed latencies and gradual degradation.

use super::Sim;
use super::backends::{Job, Life};
use super::queue::Ev;
use super::scoring::Outcome;
use crate::model::{Discipline, FaultKind};

impl Sim<'_> {
    pub(super) fn fail_backend(&mut self, h: u32) {
        let hu = h as usize;
        let now = self.now;
        let be = &mut self.bs[hu];
        be.account(now);
        be.ps_advance(now);
        be.failed = true;
        be.epoch = be.epoch.wrapping_add(1);
        be.ps_gen = be.ps_gen.wrapping_add(1);
        let mut jobs: Vec<Job> = be.queue.drain(..).collect();
        jobs.extend(be.slots.iter_mut().filter_map(|s| s.take()));
        jobs.extend(be.ps.drain().map(|p| p.job));
        let c = be.m.concurrency.max(1);
        be.free = (0..c).rev().collect();
        be.busy = 0;
        be.in_system = 0;
        be.tel_err += jobs.len() as u64;
        for j in jobs {
            self.account_sys();
            self.in_system -= 1;
            if self.settle(j.id) {
                self.outstanding[hu] = self.outstanding[hu].saturating_sub(1);
                self.outcome(j.id, j.arrival, Outcome::Error);
            }
            self.outlier_error(h);
        }
        let epoch = self.bs[hu].epoch;
        self.schedule(
            now + self.model.health_check_delay,
            Ev::HealthDown { b: h, epoch },
        );
        if self.bs[hu].life == Life::Draining {
            self.account_alive();
            self.bs[hu].life = Life::Removed;
        }
    }

    pub(super) fn set_speed_factor(&mut self, h: u32, factor: f64) {
        let now = self.now;
        let be = &mut self.bs[h as usize];
        be.account(now);
        be.ps_advance(now);
        be.speed_factor = factor;
        if be.m.discipline == Discipline::Ps {
            self.ps_reschedule(h);
        }
    }

    pub(super) fn fault(&mut self, f: u32, start: bool) {
        let Some(fault) = self.model.faults.get(f as usize).cloned() else {
            return;
        };
        let h = fault.backend as u32;
        if fault.backend >= self.bs.len() {
            return;
        }
        match fault.kind {
            FaultKind::Slowdown { factor } => {
                self.set_speed_factor(h, if start { factor } else { 1.0 })
            }
            FaultKind::Latency { latency } => {
                self.bs[h as usize].fixed_latency = if start { Some(latency) } else { None };
            }
            FaultKind::Degrade { .. } => {
                if start {
                    self.degrade_step(f, 0);
                }
            }
            FaultKind::Failure => {
                if start {
                    if !self.bs[h as usize].failed {
                        self.fail_backend(h);
                    }
                } else if self.bs[h as usize].failed {
                    let be = &mut self.bs[h as usize];
                    be.failed = false;
                    be.epoch = be.epoch.wrapping_add(1);
                    be.last_change = self.now;
                    be.ps_last = self.now;
                    let epoch = be.epoch;
                    self.schedule(
                        self.now + self.model.health_check_delay,
                        Ev::HealthUp { b: h, epoch },
                    );
                }
            }
        }
    }

    pub(super) fn degrade_step(&mut self, f: u32, step: u32) {
        const STEPS: u32 = 20;
        let Some(fault) = self.model.faults.get(f as usize).cloned() else {
            return;
        };
        let FaultKind::Degrade { factor } = fault.kind else {
            return;
        };
        let frac = (step as f64 / STEPS as f64).min(1.0);
        self.set_speed_factor(fault.backend as u32, 1.0 + (factor - 1.0) * frac);
        if step < STEPS {
            let dt = if fault.duration.is_finite() {
                fault.duration / STEPS as f64
            } else {
                0.0
            };
            self.schedule(self.now + dt, Ev::DegradeStep { f, step: step + 1 });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::Sim;
    use crate::engine::test_support::model;
    use crate::model::{Fault, FaultKind};
    use crate::workload::Arrival;

    #[test]
    fn a_failure_errors_every_request_on_the_backend() {
        let m = model(1, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        for _ in 0..3 {
            s.arrive(Arrival {
                time: 0.0,
                size: 1.0,
                key: 0,
            });
        }
        assert_eq!(s.in_system, 3);
        s.fail_backend(0);
        assert_eq!(s.in_system, 0);
        assert_eq!(s.m.errors, 3);
        assert!(s.bs[0].failed && !s.bs[0].detected_down);
        assert_eq!(s.bs[0].busy, 0);
    }

    #[test]
    fn a_degrade_fault_ramps_the_speed_in_steps() {
        let mut m = model(1, 0.5, 10);
        m.faults.push(Fault {
            backend: 0,
            kind: FaultKind::Degrade { factor: 0.5 },
            start: 0.0,
            duration: 20.0,
        });
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.degrade_step(0, 0);
        assert_eq!(s.bs[0].speed_factor, 1.0);
        s.degrade_step(0, 10);
        assert!((s.bs[0].speed_factor - 0.75).abs() < 1e-12);
        s.degrade_step(0, 20);
        assert_eq!(s.bs[0].speed_factor, 0.5);
    }

    #[test]
    fn a_slowdown_ends_with_the_fault() {
        let mut m = model(1, 0.5, 10);
        m.faults.push(Fault {
            backend: 0,
            kind: FaultKind::Slowdown { factor: 0.25 },
            start: 1.0,
            duration: 2.0,
        });
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.fault(0, true);
        assert_eq!(s.bs[0].speed(), 0.25);
        s.fault(0, false);
        assert_eq!(s.bs[0].speed(), 1.0);
    }
}
