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

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use aya_policy::{
    BackendObservation, ControlLoop, Decision, DemandForecaster, LbAlgorithm, Policy, ReplicaState,
};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use crate::dist::{Stream, mix64, stream};
use crate::lb::Balancer;
use crate::model::{BackendModel, Discipline, Dispatch, FaultKind, Model};
use crate::workload::{Arrival, ArrivalSource, WorkloadError};

/// The control loop type the engine drives.
pub type BoxedLoop = ControlLoop<Box<dyn Policy>, Box<dyn DemandForecaster>>;

/// Highest latency tracked by the histograms: 10^10 µs ≈ 2.8 hours.
const HIST_MAX_US: u64 = 10_000_000_000;

#[inline]
fn us(seconds: f64) -> u64 {
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
fn hist3() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}
fn hist2() -> Histogram<u32> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 2).expect("constant histogram bounds are valid")
}

fn q_s<T: hdrhistogram::Counter>(h: &Histogram<T>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
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
    WarmupEnd,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    t: f64,
    seq: u64,
    ev: Ev,
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

#[derive(Debug, Clone, Copy)]
struct Job {
    id: u64,
    arrival: f64,
    size: f64,
}

#[derive(Debug, Clone, Copy)]
struct PsJob {
    tag: f64,
    job: Job,
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
enum Life {
    Booting,
    Ready,
    Draining,
    Removed,
}

struct Backend {
    m: BackendModel,
    hash: u64,
    life: Life,
    speed_factor: f64,
    fixed_latency: Option<f64>,
    failed: bool,
    /// Data plane believes it is down (health checks).
    detected_down: bool,
    ejected: bool,
    epoch: u32,
    queue: VecDeque<Job>,
    slots: Vec<Option<Job>>,
    free: Vec<u32>,
    busy: u32,
    ps: BinaryHeap<PsJob>,
    ps_v: f64,
    ps_last: f64,
    ps_gen: u32,
    in_system: u32,
    last_change: f64,
    busy_int: f64,
    inflight_int: f64,
    // Telemetry window.
    tel_busy0: f64,
    tel_infl0: f64,
    tel_done: u64,
    tel_err: u64,
    tel_hist: Histogram<u32>,
    // Series window.
    ser_busy0: f64,
    ser_infl0: f64,
    ser_done: u64,
}

impl Backend {
    fn new(m: BackendModel, now: f64, life: Life) -> Backend {
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
    fn speed(&self) -> f64 {
        self.m.speed * self.speed_factor
    }

    /// Busy servers (FCFS) or busy cores (PS).
    #[inline]
    fn busy_units(&self) -> f64 {
        match self.m.discipline {
            Discipline::Fcfs => self.busy as f64,
            Discipline::Ps => (self.ps.len() as u32).min(self.m.concurrency.max(1)) as f64,
        }
    }

    #[inline]
    fn account(&mut self, now: f64) {
        let dt = now - self.last_change;
        if dt > 0.0 {
            self.busy_int += self.busy_units() * dt;
            self.inflight_int += self.in_system as f64 * dt;
            self.last_change = now;
        }
    }

    #[inline]
    fn ps_rate(&self) -> f64 {
        let n = self.ps.len() as f64;
        if n == 0.0 {
            0.0
        } else {
            self.speed() * n.min(self.m.concurrency.max(1) as f64) / n
        }
    }

    #[inline]
    fn ps_advance(&mut self, now: f64) {
        let r = self.ps_rate();
        self.ps_v += r * (now - self.ps_last);
        self.ps_last = now;
    }
}

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
}

/// Errors during a run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Workload file problem.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Model is unusable.
    #[error("invalid model: {0}")]
    Model(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Late,
    Error,
    Drop,
}

struct Pending {
    deadline: f64,
    backend: u32,
    done: bool,
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
    bs: Vec<Backend>,
    outstanding: Vec<u32>,
    weight: Vec<f64>,
    hashes: Vec<u64>,
    lb: Balancer,
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
            bs: Vec::new(),
            outstanding: Vec::new(),
            weight: Vec::new(),
            hashes: Vec::new(),
            lb: Balancer::new(algo, model.lb),
            central,
            central_q: VecDeque::new(),
            routable: Vec::new(),
            deadlines: VecDeque::new(),
            dl_base: 0,
            control,
            tel_queue: VecDeque::new(),
            latest_obs: Vec::new(),
            latest_demand: 0.0,
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
        };
        for b in &model.backends {
            s.add_backend(b.clone(), Life::Ready);
        }
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

    fn add_backend(&mut self, m: BackendModel, life: Life) -> u32 {
        let idx = self.bs.len() as u32;
        self.names.insert(m.name.clone(), idx);
        let b = Backend::new(m, self.now, life);
        self.hashes.push(b.hash);
        self.bs.push(b);
        self.outstanding.push(0);
        self.weight.push(1.0);
        idx
    }

    #[inline]
    fn schedule(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn pull(&mut self) -> Result<Option<Arrival>, SimError> {
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

    fn rebuild_routing(&mut self) {
        self.routable.clear();
        for (i, b) in self.bs.iter().enumerate() {
            if b.life == Life::Ready && !b.detected_down && !b.ejected {
                self.routable.push(i as u32);
            }
        }
        if self.routable.is_empty() {
            // Envoy's panic mode: with every host ejected, route to all ready hosts.
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

    fn alive_count(&self) -> (u32, u32, u32) {
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

    fn account_alive(&mut self) {
        if self.scoring {
            let (_, _, alive) = self.alive_count();
            self.alive_int += alive as f64 * (self.now - self.alive_last);
        }
        self.alive_last = self.now;
    }

    #[inline]
    fn account_sys(&mut self) {
        if self.scoring {
            self.sys_int += self.in_system as f64 * (self.now - self.sys_last);
        }
        self.sys_last = self.now;
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

    fn has_booting(&self) -> bool {
        self.bs.iter().any(|b| b.life == Life::Booting)
    }

    #[inline]
    fn front_deadline(&mut self) -> f64 {
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

    fn expire_front(&mut self) {
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
    fn settle(&mut self, id: u64) -> bool {
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

    /// Whether request `id` arriving at `arrival` is scored (after both warm-ups).
    #[inline]
    fn scored(&self, id: u64, arrival: f64) -> bool {
        self.scoring && arrival >= self.model.warmup && id >= self.model.warmup_requests
    }

    #[inline]
    fn outcome(&mut self, id: u64, arrival: f64, o: Outcome) {
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

    fn arrive(&mut self, a: Arrival) {
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

    #[inline]
    fn push_deadline(&mut self, arrival: f64, backend: u32) {
        if let Some(t) = self.model.timeout {
            self.deadlines.push_back(Pending {
                deadline: arrival + t,
                backend,
                done: false,
            });
        }
    }
    #[inline]
    fn push_deadline_done(&mut self) {
        if self.model.timeout.is_some() {
            self.deadlines.push_back(Pending {
                deadline: 0.0,
                backend: 0,
                done: true,
            });
        }
    }

    #[inline]
    fn start_fcfs(&mut self, h: u32, job: Job) {
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

    fn ps_reschedule(&mut self, h: u32) {
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
            Ev::WarmupEnd => {
                if !self.scoring {
                    self.start_scoring();
                }
            }
        }
    }

    fn start_scoring(&mut self) {
        self.scoring = true;
        self.score_start = self.now;
        self.sys_last = self.now;
        self.alive_last = self.now;
    }

    /// Pull the next queued job into a free FCFS server (own queue or central).
    fn next_fcfs(&mut self, h: u32) {
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
    fn complete(&mut self, h: u32, job: Job) {
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
        if self.bs[hu].life == Life::Draining && self.bs[hu].in_system == 0 {
            self.account_alive();
            self.bs[hu].life = Life::Removed;
        }
    }

    fn fail_backend(&mut self, h: u32) {
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

    fn set_speed_factor(&mut self, h: u32, factor: f64) {
        let now = self.now;
        let be = &mut self.bs[h as usize];
        be.account(now);
        be.ps_advance(now);
        be.speed_factor = factor;
        if be.m.discipline == Discipline::Ps {
            self.ps_reschedule(h);
        }
    }

    fn fault(&mut self, f: u32, start: bool) {
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

    fn degrade_step(&mut self, f: u32, step: u32) {
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

    fn telemetry(&mut self) {
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

    fn control_tick(&mut self) {
        let now = self.now;
        while self.tel_queue.front().is_some_and(|(t, _, _)| *t <= now) {
            if let Some((_, obs, d)) = self.tel_queue.pop_front() {
                self.latest_obs = obs;
                self.latest_demand = d;
            }
        }
        let (ready, booting, _) = self.alive_count();
        let (min, max, boot) = match &self.model.scaling {
            Some(s) => (s.min, s.max, s.boot_delay),
            None => (ready + booting, ready + booting, 0.0),
        };
        let replicas = ReplicaState {
            current: ready + booting,
            ready,
            min,
            max,
            boot_time: boot,
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
        self.apply(d);
        if !(self.arrivals_done && self.in_system == 0) {
            self.schedule(now + interval, Ev::Control);
        }
    }

    fn apply(&mut self, d: Decision) {
        let mut changed = false;
        if !self.central && d.algorithm.algorithm != self.lb.algorithm() {
            self.lb.set_algorithm(d.algorithm.algorithm);
            self.m.algorithm_switches += 1;
            changed = true;
        }
        for w in &d.weights {
            if let Some(&i) = self.names.get(&w.backend) {
                let nw = w.weight.max(1) as f64;
                if self.weight[i as usize] != nw {
                    self.weight[i as usize] = nw;
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

    fn series_tick(&mut self) {
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

    fn slo_tick(&mut self) {
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
        }
        self.slo_hist.reset();
        self.slo_ok = 0;
        self.slo_bad = 0;
        if !(self.arrivals_done && self.in_system == 0) {
            self.schedule(self.now + slo.window, Ev::SloWindow);
        }
    }

    fn finish(mut self, events: u64, wall: f64) -> Result<RunResult, SimError> {
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
        })
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

/// Run one replication of `model` with `seed` and an optional control loop.
pub fn simulate(
    model: &Model,
    seed: u64,
    control: Option<BoxedLoop>,
) -> Result<RunResult, SimError> {
    Sim::new(model, seed, control)?.run()
}
