//! Telemetry: the observation windows the control loop sees and the time series.

use aya_policy::BackendObservation;
use serde::{Deserialize, Serialize};

use super::Sim;
use super::backends::Life;
use super::queue::Ev;
use super::scoring::q_s;

/// One window of the time series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowRow {
    /// Window start, virtual seconds.
    pub t: f64,
    /// Arrivals per second (demand).
    pub demand_rps: f64,
    /// Completions per second.
    pub throughput_rps: f64,
    /// Successful completions / outcomes decided in the window.
    pub success_rate: f64,
    /// Latency percentiles of completions in the window, seconds.
    pub p50: f64,
    /// p99, seconds.
    pub p99: f64,
    /// Ready replicas at the end of the window.
    pub ready: u32,
    /// Existing replicas (booting + ready + draining) at the end of the window.
    pub alive: u32,
    /// Max/mean utilisation over ready backends.
    pub imbalance_max_mean: f64,
    /// Coefficient of variation of utilisation over ready backends.
    pub imbalance_cv: f64,
    /// Per-backend load.
    pub backends: Vec<BackendLoad>,
}

/// One backend's load in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendLoad {
    /// Backend name.
    pub backend: String,
    /// Busy fraction (0..1).
    pub utilization: f64,
    /// Completions per second.
    pub rate: f64,
    /// Mean requests in the backend.
    pub in_flight: f64,
}

impl Sim<'_> {
    pub(super) fn telemetry(&mut self) {
        let iv = self.model.telemetry_interval;
        let now = self.now;
        let mut obs = Vec::with_capacity(self.bs.len());
        for be in self.bs.iter_mut() {
            be.account(now);
            if be.life == Life::Removed || be.life == Life::Draining {
                be.tel_busy0 = be.busy_int;
                be.tel_infl0 = be.inflight_int;
                continue;
            }
            let done = be.tel_done as f64;
            let err = be.tel_err as f64;
            let c = be.m.concurrency.max(1) as f64;
            let mut q = [0.0; 3];
            if !be.tel_hist.is_empty() {
                for (i, v) in be
                    .tel_hist
                    .value_at_quantiles([0.5, 0.9, 0.99])
                    .enumerate()
                    .take(3)
                {
                    q[i] = v as f64 / 1e6;
                }
            }
            obs.push(BackendObservation {
                backend: be.m.name.clone(),
                healthy: be.life == Life::Ready && !be.failed,
                request_rate: done / iv,
                in_flight: (be.inflight_int - be.tel_infl0) / iv,
                latency_p50: q[0],
                latency_p90: q[1],
                latency_p99: q[2],
                error_rate: if done + err > 0.0 {
                    err / (done + err)
                } else {
                    0.0
                },
                cpu_utilization: Some(((be.busy_int - be.tel_busy0) / (c * iv)).clamp(0.0, 1.0)),
                memory_utilization: None,
                observed_at: now,
            });
            be.tel_busy0 = be.busy_int;
            be.tel_infl0 = be.inflight_int;
            be.tel_done = 0;
            be.tel_err = 0;
            be.tel_hist.reset();
        }
        let demand = self.tel_arrivals as f64 / iv;
        self.tel_arrivals = 0;
        self.tel_queue
            .push_back((now + self.model.telemetry_delay, obs, demand));
        if !(self.arrivals_done && self.in_system == 0) {
            self.schedule(now + iv, Ev::Telemetry);
        }
    }

    pub(super) fn series_tick(&mut self) {
        let Some(w) = self.model.series_window else {
            return;
        };
        let now = self.now;
        let dt = (now - self.ser_start).max(1e-12);
        let mut loads = Vec::new();
        let mut utils = Vec::new();
        for be in self.bs.iter_mut() {
            be.account(now);
            let c = be.m.concurrency.max(1) as f64;
            let u = ((be.busy_int - be.ser_busy0) / (c * dt)).clamp(0.0, 1.0);
            let infl = (be.inflight_int - be.ser_infl0) / dt;
            let rate = be.ser_done as f64 / dt;
            if be.life != Life::Removed || rate > 0.0 || u > 0.0 {
                loads.push(BackendLoad {
                    backend: be.m.name.clone(),
                    utilization: u,
                    rate,
                    in_flight: infl,
                });
            }
            if be.life == Life::Ready && !be.failed {
                utils.push(u);
            }
            be.ser_busy0 = be.busy_int;
            be.ser_infl0 = be.inflight_int;
            be.ser_done = 0;
        }
        let (imb, cv, mean) = imbalance(&utils);
        if self.scoring && mean > 0.0 {
            self.imb_sum += imb;
            self.imb_cv_sum += cv;
            self.util_sum += mean;
            self.imb_n += 1;
        }
        let (ready, _, alive) = self.alive_count();
        let outcomes = self.ser_ok + self.ser_bad;
        self.series.push(WindowRow {
            t: self.ser_start,
            demand_rps: self.ser_arr as f64 / dt,
            throughput_rps: self.ser_done as f64 / dt,
            success_rate: if outcomes > 0 {
                self.ser_ok as f64 / outcomes as f64
            } else {
                1.0
            },
            p50: q_s(&self.ser_hist, 0.5),
            p99: q_s(&self.ser_hist, 0.99),
            ready,
            alive,
            imbalance_max_mean: imb,
            imbalance_cv: cv,
            backends: loads,
        });
        self.ser_hist.reset();
        self.ser_arr = 0;
        self.ser_done = 0;
        self.ser_ok = 0;
        self.ser_bad = 0;
        self.ser_start = now;
        if !(self.arrivals_done && self.in_system == 0) {
            self.schedule(now + w, Ev::Series);
        }
    }
}

/// (max/mean, coefficient of variation, mean) of utilisations.
pub fn imbalance(u: &[f64]) -> (f64, f64, f64) {
    if u.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = u.len() as f64;
    let mean = u.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let max = u.iter().cloned().fold(0.0, f64::max);
    let var = u.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (max / mean, var.sqrt() / mean, mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::model;

    #[test]
    fn imbalance_of_equal_and_unequal_utilisations() {
        assert_eq!(imbalance(&[]), (0.0, 0.0, 0.0));
        assert_eq!(imbalance(&[0.0, 0.0]), (0.0, 0.0, 0.0));
        assert_eq!(imbalance(&[0.5, 0.5]), (1.0, 0.0, 0.5));
        let (mm, cv, mean) = imbalance(&[0.2, 0.6]);
        assert!((mm - 1.5).abs() < 1e-12 && (cv - 0.5).abs() < 1e-12 && (mean - 0.4).abs() < 1e-12);
    }

    #[test]
    fn a_telemetry_window_reports_rates_and_utilisation_then_resets() {
        let mut m = model(2, 0.5, 10);
        m.telemetry_interval = 10.0;
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.tel_arrivals = 50;
        s.bs[0].tel_done = 40;
        s.bs[0].tel_err = 10;
        s.bs[0].busy = 1;
        s.now = 10.0;
        s.telemetry();
        let (at, obs, demand) = s.tel_queue.pop_front().unwrap();
        assert_eq!(at, 10.0);
        assert_eq!(demand, 5.0);
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].request_rate, 4.0);
        assert_eq!(obs[0].error_rate, 0.2);
        assert_eq!(obs[0].cpu_utilization, Some(1.0));
        assert_eq!(obs[1].cpu_utilization, Some(0.0));
        assert_eq!(s.bs[0].tel_done, 0);
        assert_eq!(s.tel_arrivals, 0);
    }

    #[test]
    fn a_series_window_records_demand_and_ready_replicas() {
        let mut m = model(3, 0.5, 10);
        m.series_window = Some(5.0);
        let mut s = Sim::new(&m, 1, None).unwrap();
        s.ser_arr = 10;
        s.now = 5.0;
        s.series_tick();
        let row = &s.series[0];
        assert_eq!(row.t, 0.0);
        assert_eq!(row.demand_rps, 2.0);
        assert_eq!((row.ready, row.alive), (3, 3));
        assert_eq!(row.success_rate, 1.0, "no outcome: nothing failed");
        assert_eq!(s.ser_start, 5.0);
    }
}
