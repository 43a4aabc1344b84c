//! The discrete-event engine: one replication of a [`Model`].
//!
//! Virtual time is an `f64` of seconds and nothing here reads the wall clock
//! except the optional speed figure (`wall_seconds`) reported next to the
//! results. Events live in a binary heap keyed by `(time, sequence)`, so
//! simultaneous events run in the order they were scheduled and runs are
//! bit-for-bit reproducible. Two event sources stay outside the heap because
//! they are already time-ordered: the next arrival (pulled lazily from the
//! workload stream) and the FIFO of client deadlines (arrival + constant
//! timeout). That keeps the heap small and the hot path allocation-free.

mod backends;
mod decisions;
mod faults;
mod queue;
mod routing;
mod scoring;
mod telemetry;

use std::collections::{BinaryHeap, HashMap, VecDeque};

use aya_policy::{
    BackendObservation, ControlLoop, Decision, DemandForecaster, LbAlgorithm, OutlierDetection,
    Policy,
};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;

use crate::dist::{Stream, stream};
use crate::lb::Balancer;
use crate::model::{Dispatch, FaultKind, Model};
use crate::workload::{Arrival, ArrivalSource, WorkloadError};

use backends::{Backend, Job, Life};
use queue::{Entry, Ev, Pending};
use scoring::{hist2, hist3};

pub use decisions::ControlTick;
pub use scoring::{RunMetrics, RunResult};
pub use telemetry::{BackendLoad, WindowRow, imbalance};

/// The control loop type the engine drives.
pub type BoxedLoop = ControlLoop<Box<dyn Policy>, Box<dyn DemandForecaster>>;

/// Errors during a run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Workload file problem.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Model is unusable.
    #[error("invalid model: {0}")]
    Model(String),
    /// The backlog outgrew [`crate::model::limits::MAX_IN_FLIGHT`].
    #[error("at t = {at:.1} s: {what} passed the simulator's limit of {limit}; {hint}")]
    TooLarge {
        /// Virtual time, seconds.
        at: f64,
        /// What grew.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// Which fields to change.
        hint: &'static str,
    },
}

/// One replication in progress.
pub struct Sim<'a> {
    model: &'a Model,
    now: f64,
    heap: BinaryHeap<Entry>,
    seq: u64,
    src: ArrivalSource,
    next: Option<Arrival>,
    arrivals_done: bool,
    next_id: u64,
    routing: SmallRng,
    /// The data plane's limit on requests in flight to the cluster (Envoy
    /// circuit breakers' `max_requests`), when a decision set one.
    pub(super) max_requests: Option<u64>,
    bs: Vec<Backend>,
    outstanding: Vec<u32>,
    weight: Vec<f64>,
    hashes: Vec<u64>,
    lb: Balancer,
    /// The data plane's outlier detection in force.
    od: OutlierDetection,
    central: bool,
    central_q: VecDeque<Job>,
    routable: Vec<u32>,
    deadlines: VecDeque<Pending>,
    dl_base: u64,
    control: Option<BoxedLoop>,
    tel_queue: VecDeque<(f64, Vec<BackendObservation>, f64)>,
    latest_obs: Vec<BackendObservation>,
    latest_demand: f64,
    tel_arrivals: u64,
    names: HashMap<String, u32>,
    template_counter: u32,
    // Scoring.
    scoring: bool,
    in_system: u64,
    sys_int: f64,
    sys_last: f64,
    alive_int: f64,
    alive_last: f64,
    score_start: f64,
    m: RunMetrics,
    lat_sum: f64,
    hist: Histogram<u64>,
    slo_hist: Histogram<u32>,
    slo_ok: u64,
    slo_bad: u64,
    ser_hist: Histogram<u32>,
    ser_arr: u64,
    ser_done: u64,
    ser_ok: u64,
    ser_bad: u64,
    ser_start: f64,
    series: Vec<WindowRow>,
    imb_sum: f64,
    imb_cv_sum: f64,
    util_sum: f64,
    imb_n: u64,
    decisions: Vec<Decision>,
    last_decision: Option<Decision>,
    slo_start: f64,
    trace: Option<Vec<ControlTick>>,
    headroom: Vec<(f64, aya_policy::Headroom)>,
    slo_log: Vec<crate::alerts::SloWindow>,
}

impl<'a> Sim<'a> {
    /// Prepare a replication of `model` with `seed`, driven by `control` (if any).
    pub fn new(
        model: &'a Model,
        seed: u64,
        control: Option<BoxedLoop>,
    ) -> Result<Sim<'a>, SimError> {
        if model.backends.is_empty() {
            return Err(SimError::Model("no backends".into()));
        }
        // A warm-started loop reports the history's last demand until the
        // first telemetry arrives (a cold one: nothing measured, 0).
        let warm_demand = control.as_ref().and_then(|c| c.warm_demand());
        let src = ArrivalSource::new(
            &model.arrivals,
            &model.service,
            &model.keys,
            seed,
            &model.base_dir,
        )?;
        let (algo, central) = match model.dispatch {
            Dispatch::Balancer(a) => (a, false),
            Dispatch::Central => (LbAlgorithm::Random, true),
        };
        let mut s = Sim {
            model,
            now: 0.0,
            heap: BinaryHeap::with_capacity(1024),
            seq: 0,
            src,
            next: None,
            arrivals_done: false,
            next_id: 0,
            routing: stream(seed, Stream::Routing),
            max_requests: None,
            bs: Vec::new(),
            outstanding: Vec::new(),
            weight: Vec::new(),
            hashes: Vec::new(),
            lb: Balancer::new(algo, model.lb),
            od: OutlierDetection {
                consecutive_5xx: model.lb.outlier_consecutive_5xx,
                base_ejection_time: model.lb.outlier_base_ejection_time,
                max_ejection_percent: model.lb.outlier_max_ejection_percent,
            },
            central,
            central_q: VecDeque::new(),
            routable: Vec::new(),
            deadlines: VecDeque::new(),
            dl_base: 0,
            control,
            tel_queue: VecDeque::new(),
            latest_obs: Vec::new(),
            // Unknown until the first telemetry is delivered (not 0).
            latest_demand: warm_demand.unwrap_or(f64::NAN),
            tel_arrivals: 0,
            names: HashMap::new(),
            template_counter: 0,
            scoring: model.warmup <= 0.0 && model.warmup_requests == 0,
            in_system: 0,
            sys_int: 0.0,
            sys_last: 0.0,
            alive_int: 0.0,
            alive_last: 0.0,
            score_start: 0.0,
            m: RunMetrics {
                seed,
                ..RunMetrics::default()
            },
            lat_sum: 0.0,
            hist: hist3(),
            slo_hist: hist2(),
            slo_ok: 0,
            slo_bad: 0,
            ser_hist: hist2(),
            ser_arr: 0,
            ser_done: 0,
            ser_ok: 0,
            ser_bad: 0,
            ser_start: 0.0,
            series: Vec::new(),
            imb_sum: 0.0,
            imb_cv_sum: 0.0,
            util_sum: 0.0,
            imb_n: 0,
            decisions: Vec::new(),
            last_decision: None,
            slo_start: model.warmup.max(0.0),
            trace: None,
            headroom: Vec::new(),
            slo_log: Vec::new(),
        };
        for b in &model.backends {
            s.add_backend(b.clone(), Life::Ready);
        }
        // Before the first telemetry the control loop knows the configured
        // backends and nothing about them, as the service does: one
        // unobserved observation per backend.
        s.latest_obs = model
            .backends
            .iter()
            .map(|b| BackendObservation::unobserved(b.name.clone(), 0.0))
            .collect();
        s.rebuild_routing();
        s.next = s.pull()?;
        if model.warmup > 0.0 {
            s.schedule(model.warmup, Ev::WarmupEnd);
        }
        if model.telemetry_interval > 0.0 && model.control_interval.is_some() {
            s.schedule(model.telemetry_interval, Ev::Telemetry);
        }
        if let Some(ci) = model.control_interval
            && s.control.is_some()
            && ci > 0.0
        {
            // First tick at t = 0: the controller publishes its initial decision
            // (e.g. the algorithm) before traffic starts, with no observations yet.
            s.schedule(0.0, Ev::Control);
        }
        if let Some(w) = model.series_window {
            s.schedule(w, Ev::Series);
        }
        if model.slo.p99.is_some() || model.slo.success.is_some() {
            s.schedule(s.slo_start + model.slo.window, Ev::SloWindow);
        }
        for (i, f) in model.faults.iter().enumerate() {
            s.schedule(f.start, Ev::FaultStart { f: i as u32 });
            if f.duration.is_finite() && !matches!(f.kind, FaultKind::Degrade { .. }) {
                s.schedule(f.start + f.duration, Ev::FaultEnd { f: i as u32 });
            }
        }
        Ok(s)
    }

    /// Run to the end and score.
    pub fn run(mut self) -> Result<RunResult, SimError> {
        let wall = std::time::Instant::now();
        let mut drain_set = false;
        let mut hard_end = self
            .model
            .duration
            .map(|d| d + self.model.drain_limit)
            .unwrap_or(f64::INFINITY);
        let mut events: u64 = 0;
        loop {
            let t_heap = self.heap.peek().map(|e| e.t).unwrap_or(f64::INFINITY);
            let t_arr = self.next.map(|a| a.time).unwrap_or(f64::INFINITY);
            let t_dl = self.front_deadline();
            if self.arrivals_done && self.in_system == 0 && !self.has_booting() {
                break;
            }
            if self.arrivals_done && !drain_set {
                // A trace without `duration` ends at its last arrival: drain from there.
                drain_set = true;
                hard_end = hard_end.min(self.now + self.model.drain_limit);
            }
            let t = t_heap.min(t_arr).min(t_dl);
            if !t.is_finite() || t > hard_end {
                break;
            }
            events += 1;
            if t_heap <= t_arr && t_heap <= t_dl {
                let Some(e) = self.heap.pop() else { break };
                self.now = e.t;
                self.handle(e.ev);
            } else if t_dl <= t_arr {
                self.now = t_dl;
                self.expire_front();
            } else if let Some(a) = self.next.take() {
                self.now = a.time;
                self.arrive(a);
                self.check_backlog()?;
                self.next = self.pull()?;
            }
        }
        if self.model.duration.is_some() && !self.now.is_nan() {
            self.now = self
                .now
                .max(self.model.duration.unwrap_or(0.0))
                .min(hard_end);
        }
        self.finish(events, wall.elapsed().as_secs_f64())
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Departure { b, slot, epoch } => {
                let bu = b as usize;
                if self.bs[bu].epoch != epoch {
                    return;
                }
                let Some(job) = self.bs[bu]
                    .slots
                    .get_mut(slot as usize)
                    .and_then(|s| s.take())
                else {
                    return;
                };
                let be = &mut self.bs[bu];
                be.account(self.now);
                be.busy -= 1;
                be.free.push(slot);
                self.complete(b, job);
                self.next_fcfs(b);
            }
            Ev::PsDeparture { b, gen_ } => {
                let bu = b as usize;
                if self.bs[bu].ps_gen != gen_ {
                    return;
                }
                let be = &mut self.bs[bu];
                be.account(self.now);
                be.ps_advance(self.now);
                let Some(pj) = be.ps.pop() else { return };
                self.complete(b, pj.job);
                self.ps_reschedule(b);
            }
            Ev::Boot { b } => {
                let bu = b as usize;
                if self.bs[bu].life == Life::Booting {
                    self.bs[bu].life = Life::Ready;
                    self.bs[bu].last_change = self.now;
                    self.rebuild_routing();
                }
            }
            Ev::Telemetry => self.telemetry(),
            Ev::Control => self.control_tick(),
            Ev::Series => self.series_tick(),
            Ev::SloWindow => self.slo_tick(),
            Ev::FaultStart { f } => self.fault(f, true),
            Ev::FaultEnd { f } => self.fault(f, false),
            Ev::DegradeStep { f, step } => self.degrade_step(f, step),
            Ev::HealthDown { b, epoch } => {
                let be = &mut self.bs[b as usize];
                if be.epoch == epoch && be.failed {
                    be.detected_down = true;
                    self.rebuild_routing();
                }
            }
            Ev::HealthUp { b, epoch } => {
                let be = &mut self.bs[b as usize];
                if be.epoch == epoch && !be.failed {
                    be.detected_down = false;
                    self.rebuild_routing();
                }
            }
            Ev::OutlierReturn { b } => {
                let be = &mut self.bs[b as usize];
                // Not the return of an ejection ended early (detection
                // turned off) and made again since.
                if be.od_ejected && self.now >= be.od_until {
                    be.od_ejected = false;
                    be.od_consecutive = 0;
                    self.rebuild_routing();
                }
            }
            Ev::WarmupEnd => {
                if !self.scoring {
                    self.start_scoring();
                }
            }
        }
    }
}

/// Run one replication of `model` with `seed` and an optional control loop.
pub fn simulate(
    model: &Model,
    seed: u64,
    control: Option<BoxedLoop>,
) -> Result<RunResult, SimError> {
    Sim::new(model, seed, control)?.run()
}

/// [`simulate`], recording every control tick's inputs (the observations,
/// demand and replica state the loop was given) and its decision in
/// [`RunResult::control_trace`]: what the parity test replays through the
/// service.
pub fn simulate_traced(
    model: &Model,
    seed: u64,
    control: Option<BoxedLoop>,
) -> Result<RunResult, SimError> {
    let mut sim = Sim::new(model, seed, control)?;
    sim.trace = Some(Vec::new());
    sim.run()
}

#[cfg(test)]
pub(super) mod test_support {
    //! Small models for the unit tests of the engine's modules.

    use aya_policy::LbAlgorithm;

    use crate::dist::ServiceDist;
    use crate::model::{Dispatch, Model};

    /// `servers` c=1 FCFS backends behind round robin, deterministic service
    /// of 0.1 s, Poisson arrivals at `rho` utilisation, `requests` requests.
    pub(crate) fn model(servers: u32, rho: f64, requests: u64) -> Model {
        let mut m = Model::textbook(
            servers,
            rho,
            ServiceDist::Deterministic { mean: 0.1 },
            Dispatch::Balancer(LbAlgorithm::RoundRobin),
            requests,
        );
        m.warmup_requests = 0;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::model;
    use super::*;

    #[test]
    fn a_run_is_reproducible_by_seed_and_conserves_requests() {
        let m = model(3, 0.7, 2_000);
        let a = simulate(&m, 7, None).unwrap();
        let b = simulate(&m, 7, None).unwrap();
        let c = simulate(&m, 8, None).unwrap();
        assert_eq!(a.metrics.arrived, 2_000);
        let outcomes =
            a.metrics.succeeded + a.metrics.timed_out + a.metrics.errors + a.metrics.dropped;
        assert_eq!(outcomes, a.metrics.arrived);
        assert_eq!(a.metrics.p99.to_bits(), b.metrics.p99.to_bits());
        assert_eq!(a.metrics.events, b.metrics.events);
        assert_ne!(a.metrics.mean.to_bits(), c.metrics.mean.to_bits());
    }

    #[test]
    fn a_model_without_backends_is_refused() {
        let mut m = model(1, 0.5, 10);
        m.backends.clear();
        assert!(matches!(Sim::new(&m, 1, None), Err(SimError::Model(_))));
    }

    #[test]
    fn a_deterministic_server_below_saturation_serves_at_its_service_time() {
        // One server, spaced arrivals: with rho = 0.5 Poisson some requests
        // wait, but the fastest is exactly one service time.
        let m = model(1, 0.5, 500);
        let r = simulate(&m, 3, None).unwrap();
        assert!(r.metrics.p50 >= 0.099, "{}", r.metrics.p50);
        assert!(
            r.metrics.mean > 0.1 && r.metrics.mean < 0.3,
            "{}",
            r.metrics.mean
        );
    }
}
