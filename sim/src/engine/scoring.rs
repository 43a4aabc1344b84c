//! Scoring: outcomes, latency histograms, SLO windows and the final metrics.

use aya_policy::Decision;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::queue::Ev;
use super::telemetry::WindowRow;
use super::{Sim, SimError};

/// Highest latency tracked by the histograms: 10^10 µs ≈ 2.8 hours.
pub(super) const HIST_MAX_US: u64 = 10_000_000_000;

#[inline]
pub(super) fn us(seconds: f64) -> u64 {
    let v = seconds * 1e6 + 0.5;
    if v < 1.0 {
        1
    } else if v >= HIST_MAX_US as f64 {
        HIST_MAX_US
    } else {
        v as u64
    }
}

// Constant, valid bounds: construction cannot fail.
pub(super) fn hist3() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}
pub(super) fn hist2() -> Histogram<u32> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 2).expect("constant histogram bounds are valid")
}

pub(super) fn q_s<T: hdrhistogram::Counter>(h: &Histogram<T>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

/// Scalar results of one replication.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Seed of the replication.
    pub seed: u64,
    /// Requests that arrived after warm-up.
    pub arrived: u64,
    /// Completed by a backend (on time or late).
    pub completed: u64,
    /// Completed within the timeout.
    pub succeeded: u64,
    /// Timed out (client deadline passed) or unfinished at the end.
    pub timed_out: u64,
    /// Failed on a failed backend.
    pub errors: u64,
    /// Dropped (queue full or no routable backend).
    pub dropped: u64,
    /// succeeded / arrived.
    pub success_rate: f64,
    /// Mean response time of completed requests, seconds.
    pub mean: f64,
    /// p50, seconds.
    pub p50: f64,
    /// p90, seconds.
    pub p90: f64,
    /// p99, seconds.
    pub p99: f64,
    /// p99.9, seconds.
    pub p999: f64,
    /// Max, seconds.
    pub max: f64,
    /// SLO windows that violated the SLO.
    pub slo_violation_windows: u64,
    /// SLO-violation minutes (= windows × window / 60).
    pub slo_violation_minutes: f64,
    /// SLO windows evaluated.
    pub slo_windows: u64,
    /// Mean over windows of max/mean backend utilisation.
    pub imbalance_max_mean: f64,
    /// Mean over windows of the CV of backend utilisation.
    pub imbalance_cv: f64,
    /// Mean utilisation of ready backends.
    pub mean_utilization: f64,
    /// Replica-hours (booting + ready + draining) over the scored period.
    pub replica_hours: f64,
    /// Scaling actions applied.
    pub scaling_actions: u64,
    /// Algorithm switches applied.
    pub algorithm_switches: u64,
    /// Time-average number in system over the scored period (Little's L).
    pub little_l: f64,
    /// Arrival rate over the scored period (Little's λ).
    pub little_lambda: f64,
    /// Scored period length, virtual seconds.
    pub scored_seconds: f64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds of the run (speed figure only; not part of the model).
    pub wall_seconds: f64,
    /// events / wall_seconds.
    pub events_per_second: f64,
}

/// Results of one replication.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Scalars.
    pub metrics: RunMetrics,
    /// Time series (empty when disabled).
    pub series: Vec<WindowRow>,
    /// Decisions that changed something, with time (at most 1000 kept).
    pub decisions: Vec<Decision>,
    /// Every control tick's inputs and decision, when the run was traced
    /// ([`super::simulate_traced`]); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub control_trace: Vec<super::ControlTick>,
    /// The headroom forecast of every control tick that had one (virtual
    /// time, headroom): what the predictive alert reads (docs/alerts.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headroom: Vec<(f64, aya_policy::Headroom)>,
    /// Every scored SLO window and whether it was violated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slo_windows: Vec<crate::alerts::SloWindow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    Late,
    Error,
    Drop,
}

impl Sim<'_> {
    pub(super) fn account_alive(&mut self) {
        if self.scoring {
            let (_, _, alive) = self.alive_count();
            self.alive_int += alive as f64 * (self.now - self.alive_last);
        }
        self.alive_last = self.now;
    }

    #[inline]
    pub(super) fn account_sys(&mut self) {
        if self.scoring {
            self.sys_int += self.in_system as f64 * (self.now - self.sys_last);
        }
        self.sys_last = self.now;
    }

    /// Whether request `id` arriving at `arrival` is scored (after both warm-ups).
    #[inline]
    pub(super) fn scored(&self, id: u64, arrival: f64) -> bool {
        self.scoring && arrival >= self.model.warmup && id >= self.model.warmup_requests
    }

    #[inline]
    pub(super) fn outcome(&mut self, id: u64, arrival: f64, o: Outcome) {
        let ok = o == Outcome::Success;
        if ok {
            self.ser_ok += 1;
        } else {
            self.ser_bad += 1;
        }
        if !self.scored(id, arrival) {
            return;
        }
        if ok {
            self.slo_ok += 1;
        } else {
            self.slo_bad += 1;
        }
        match o {
            Outcome::Success => self.m.succeeded += 1,
            Outcome::Late => self.m.timed_out += 1,
            Outcome::Error => self.m.errors += 1,
            Outcome::Drop => self.m.dropped += 1,
        }
    }

    pub(super) fn start_scoring(&mut self) {
        self.scoring = true;
        self.score_start = self.now;
        self.sys_last = self.now;
        self.alive_last = self.now;
    }

    pub(super) fn slo_tick(&mut self) {
        let slo = self.model.slo;
        let n = self.slo_ok + self.slo_bad;
        if self.scoring && n > 0 {
            self.m.slo_windows += 1;
            let p99 = q_s(&self.slo_hist, 0.99);
            let success = self.slo_ok as f64 / n as f64;
            let bad = slo.p99.is_some_and(|x| p99 > x) || slo.success.is_some_and(|y| success < y);
            if bad {
                self.m.slo_violation_windows += 1;
            }
            self.slo_log.push(crate::alerts::SloWindow {
                start: self.now - slo.window,
                violated: bad,
            });
        }
        self.slo_hist.reset();
        self.slo_ok = 0;
        self.slo_bad = 0;
        if !(self.arrivals_done && self.in_system == 0) {
            self.schedule(self.now + slo.window, Ev::SloWindow);
        }
    }

    pub(super) fn finish(mut self, events: u64, wall: f64) -> Result<RunResult, SimError> {
        // Requests still in the system at the hard end count as timed out.
        let unfinished = self.in_system;
        self.account_sys();
        self.account_alive();
        if self.model.series_window.is_some() && self.now > self.ser_start {
            self.series_tick();
        }
        let mut m = std::mem::take(&mut self.m);
        m.timed_out += unfinished.min(
            m.arrived
                .saturating_sub(m.succeeded + m.errors + m.dropped + m.timed_out),
        );
        m.success_rate = if m.arrived > 0 {
            m.succeeded as f64 / m.arrived as f64
        } else {
            0.0
        };
        m.mean = if m.completed > 0 {
            self.lat_sum / m.completed as f64
        } else {
            0.0
        };
        m.p50 = q_s(&self.hist, 0.5);
        m.p90 = q_s(&self.hist, 0.9);
        m.p99 = q_s(&self.hist, 0.99);
        m.p999 = q_s(&self.hist, 0.999);
        m.max = if self.hist.is_empty() {
            0.0
        } else {
            self.hist.max() as f64 / 1e6
        };
        m.slo_violation_minutes = m.slo_violation_windows as f64 * self.model.slo.window / 60.0;
        if self.imb_n > 0 {
            m.imbalance_max_mean = self.imb_sum / self.imb_n as f64;
            m.imbalance_cv = self.imb_cv_sum / self.imb_n as f64;
            m.mean_utilization = self.util_sum / self.imb_n as f64;
        }
        let scored = (self.now - self.score_start).max(0.0);
        m.scored_seconds = scored;
        m.replica_hours = self.alive_int / 3600.0;
        if scored > 0.0 {
            m.little_l = self.sys_int / scored;
            m.little_lambda = m.arrived as f64 / scored;
        }
        m.events = events;
        m.wall_seconds = wall;
        m.events_per_second = if wall > 0.0 {
            events as f64 / wall
        } else {
            0.0
        };
        Ok(RunResult {
            metrics: m,
            series: self.series,
            decisions: self.decisions,
            control_trace: self.trace.unwrap_or_default(),
            headroom: self.headroom,
            slo_windows: self.slo_log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::model;

    #[test]
    fn microseconds_are_clamped_to_the_histogram_range() {
        assert_eq!(us(0.0), 1);
        assert_eq!(us(1.5e-6), 2);
        assert_eq!(us(1.0), 1_000_000);
        assert_eq!(us(1e12), HIST_MAX_US);
        assert_eq!(q_s(&hist2(), 0.99), 0.0);
    }

    #[test]
    fn outcomes_count_only_after_the_warm_up() {
        let mut m = model(1, 0.5, 10);
        m.warmup = 5.0;
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.outcome(0, 1.0, Outcome::Success);
        assert_eq!((s.m.succeeded, s.ser_ok), (0, 1));
        s.now = 5.0;
        s.start_scoring();
        s.outcome(1, 6.0, Outcome::Drop);
        s.outcome(2, 6.0, Outcome::Late);
        assert_eq!((s.m.dropped, s.m.timed_out, s.slo_bad), (1, 1, 2));
    }

    #[test]
    fn an_slo_window_violates_on_success_rate() {
        let mut m = model(1, 0.5, 10);
        m.slo.success = Some(0.9);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.slo_ok = 8;
        s.slo_bad = 2;
        s.slo_tick();
        assert_eq!((s.m.slo_windows, s.m.slo_violation_windows), (1, 1));
        s.slo_ok = 10;
        s.slo_tick();
        assert_eq!((s.m.slo_windows, s.m.slo_violation_windows), (2, 1));
    }

    #[test]
    fn finishing_counts_unfinished_requests_as_timed_out() {
        let m = model(1, 0.5, 10);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.m.arrived = 4;
        s.m.succeeded = 2;
        s.in_system = 2;
        s.now = 10.0;
        let r = s.finish(1, 0.0).unwrap();
        assert_eq!(r.metrics.timed_out, 2);
        assert_eq!(r.metrics.success_rate, 0.5);
        assert_eq!(r.metrics.events_per_second, 0.0);
    }
}
