//! Synthetic traffic and per-backend metrics: Aya's built-in data.
//!
//! The real traces in `../shared/datasets` are not always there (fresh clone, CI
//! without the shared folder) and none of them has request rate *and* per-backend
//! metrics of a heterogeneous pool. So Aya generates its own, deterministically
//! from a seed, with the structure a predictive controller has to deal with:
//!
//! * **traffic** (requests per second): a daily cycle (trough at night, peak in
//!   the afternoon, UTC), a weekly cycle (quieter weekends), a linear trend, slow
//!   AR(1) noise on the log scale, and flash-crowd **bursts** (fast rise,
//!   exponential decay) arriving as a Poisson process. Requests per step are a
//!   Poisson draw around that rate, so counts are noisy like real ones;
//! * **backends** of unequal capacity (default 1×, 1×, 2×, 4×), fed by that
//!   traffic with a fixed split (equal weights, like round robin, or proportional
//!   to capacity) through a queueing model: each backend is an M/M/c queue (c
//!   workers, exponential service) evaluated per step with Erlang C for the
//!   steady-state waiting, plus a fluid backlog that builds up when arrivals exceed
//!   capacity and drains afterwards, bounded by a queue limit beyond which requests
//!   are dropped. From it come CPU (busy fraction of workers), latency p50/p99 (exact
//!   quantiles of the M/M/c response time, shifted by the backlog wait), in-flight
//!   requests (Little's law) and the error rate (a small base failure rate,
//!   requests over the timeout, and drops).
//!
//! With the defaults and equal weights, the small backends saturate at daily peaks
//! and during bursts while the large one idles: exactly the situation Aya's weights
//! and scaling signals are meant to fix. All randomness comes from one
//! `SmallRng::seed_from_u64(seed)` consumed in a fixed order, so the same
//! configuration gives byte-identical files.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Binomial, Distribution, Poisson, StandardNormal};
use serde::Serialize;

use crate::data::timestamp::push_rfc3339;
use crate::data::{DataError, Series, format_rfc3339, write_series_csv};

/// The metrics written for each backend, in file order. Units: `rps` requests/s
/// received, `cpu` percent busy (0–100), `latency_p50` / `latency_p99` seconds,
/// `in_flight` requests in the backend (queued + in service), `errors` failed
/// requests/s.
pub const METRICS: [&str; 6] = [
    "rps",
    "cpu",
    "latency_p50",
    "latency_p99",
    "in_flight",
    "errors",
];

/// How the traffic is split among backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Equal weights (what plain round robin does): small backends overload first.
    Equal,
    /// Weights proportional to capacity (the static ideal).
    Capacity,
}

/// One backend of the synthetic pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSpec {
    /// Name written in the `backend` column.
    pub name: String,
    /// Relative capacity (1.0 = one unit).
    pub capacity: f64,
}

/// Everything that determines the generated data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthConfig {
    /// RNG seed.
    pub seed: u64,
    /// Days of data.
    pub days: u32,
    /// Step in seconds.
    pub interval_secs: u32,
    /// First timestamp (unix ms). Default 2024-01-01T00:00:00Z, a Monday.
    pub start_ms: i64,
    /// Mean request rate before trend and bursts (requests/s).
    pub base_rps: f64,
    /// Amplitude of the daily cycle (fraction of the base).
    pub daily_amplitude: f64,
    /// Hour of the daily peak (UTC).
    pub peak_hour: f64,
    /// Traffic level of each weekday, Monday first (interpolated between days' noons).
    pub weekly_levels: [f64; 7],
    /// Growth per week (0.04 = +4 % a week).
    pub trend_per_week: f64,
    /// Standard deviation of the log-scale AR(1) noise.
    pub noise_sigma: f64,
    /// Correlation time of the noise in seconds.
    pub noise_tau_secs: f64,
    /// Mean bursts per day.
    pub bursts_per_day: f64,
    /// Burst peak multiplier range.
    pub burst_peak: (f64, f64),
    /// Burst duration range in minutes.
    pub burst_minutes: (f64, f64),
    /// The backends.
    pub backends: Vec<BackendSpec>,
    /// How traffic is split.
    pub split: Split,
    /// Service capacity of one capacity unit, as a fraction of `base_rps`
    /// (0.45: the four default backends, 8 units, serve 3.6 × the base rate).
    pub unit_capacity_fraction: f64,
    /// Workers (M/M/c servers) per capacity unit.
    pub workers_per_unit: u32,
    /// Requests that may wait per worker before new ones are dropped.
    pub queue_per_worker: f64,
    /// Requests slower than this (seconds) count as errors (client timeout).
    pub timeout_secs: f64,
    /// Failure probability of a request that is served in time.
    pub base_error_rate: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 42,
            days: 14,
            interval_secs: 60,
            start_ms: 1_704_067_200_000,
            base_rps: 100.0,
            daily_amplitude: 0.55,
            peak_hour: 14.0,
            weekly_levels: [1.0, 1.03, 1.04, 1.02, 0.97, 0.72, 0.66],
            trend_per_week: 0.04,
            noise_sigma: 0.06,
            noise_tau_secs: 1800.0,
            bursts_per_day: 0.6,
            burst_peak: (1.5, 3.0),
            burst_minutes: (10.0, 90.0),
            backends: vec![
                BackendSpec {
                    name: "b1".into(),
                    capacity: 1.0,
                },
                BackendSpec {
                    name: "b2".into(),
                    capacity: 1.0,
                },
                BackendSpec {
                    name: "b3".into(),
                    capacity: 2.0,
                },
                BackendSpec {
                    name: "b4".into(),
                    capacity: 4.0,
                },
            ],
            split: Split::Equal,
            unit_capacity_fraction: 0.45,
            workers_per_unit: 4,
            queue_per_worker: 25.0,
            timeout_secs: 2.0,
            base_error_rate: 0.0005,
        }
    }
}

/// A configuration that cannot generate data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid synthetic-data configuration: {0}")]
pub struct SynthConfigError(pub String);

impl SynthConfig {
    /// Check ranges (positive days, interval, rates; at least one backend...).
    pub fn validate(&self) -> Result<(), SynthConfigError> {
        let bad = |m: &str| Err(SynthConfigError(m.to_string()));
        if self.days == 0 {
            return bad("days must be at least 1");
        }
        if self.interval_secs == 0 {
            return bad("interval must be at least 1 second");
        }
        if u64::from(self.days) * 86_400 / u64::from(self.interval_secs) > 10_000_000 {
            return bad("days / interval gives more than 10 million steps");
        }
        if !(self.base_rps.is_finite() && self.base_rps > 0.0) {
            return bad("base_rps must be positive");
        }
        if !(0.0..1.0).contains(&self.daily_amplitude) {
            return bad("daily_amplitude must be in [0, 1)");
        }
        if self
            .weekly_levels
            .iter()
            .any(|l| !(l.is_finite() && *l > 0.0))
        {
            return bad("weekly levels must be positive");
        }
        if self.backends.is_empty() {
            return bad("at least one backend is needed");
        }
        if self
            .backends
            .iter()
            .any(|b| !(b.capacity.is_finite() && b.capacity > 0.0))
        {
            return bad("backend capacities must be positive");
        }
        if self.workers_per_unit == 0
            || !(self.unit_capacity_fraction.is_finite() && self.unit_capacity_fraction > 0.0)
        {
            return bad("workers_per_unit and unit_capacity_fraction must be positive");
        }
        let (lo, hi) = self.burst_peak;
        let (dlo, dhi) = self.burst_minutes;
        if !(lo >= 1.0 && hi >= lo && dlo > 0.0 && dhi >= dlo) {
            return bad("burst ranges must be ordered, peaks >= 1 and durations > 0");
        }
        if !(self.noise_sigma >= 0.0 && self.noise_tau_secs > 0.0 && self.bursts_per_day >= 0.0) {
            return bad("noise sigma and burst rate must be >= 0, noise tau > 0");
        }
        if !(self.timeout_secs > 0.0 && (0.0..1.0).contains(&self.base_error_rate)) {
            return bad("timeout must be positive and base_error_rate in [0, 1)");
        }
        Ok(())
    }
}

/// An injected burst (ground truth for burst detection).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Burst {
    /// Start (unix ms).
    pub start_ms: i64,
    /// Duration (ms).
    pub duration_ms: i64,
    /// Peak multiplier of the traffic.
    pub peak: f64,
}

/// Generated metrics of one backend, one value per step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendMetrics {
    /// Name.
    pub name: String,
    /// Relative capacity.
    pub capacity: f64,
    /// Share of the traffic sent to it.
    pub weight: f64,
    /// M/M/c workers.
    pub workers: u32,
    /// Service rate of one worker (requests/s).
    pub service_rate: f64,
    /// Requests received per second.
    #[serde(skip)]
    pub rps: Vec<f64>,
    /// CPU percent.
    #[serde(skip)]
    pub cpu: Vec<f64>,
    /// Median latency (s).
    #[serde(skip)]
    pub latency_p50: Vec<f64>,
    /// 99th percentile latency (s).
    #[serde(skip)]
    pub latency_p99: Vec<f64>,
    /// Requests in the backend.
    #[serde(skip)]
    pub in_flight: Vec<f64>,
    /// Errors per second.
    #[serde(skip)]
    pub errors: Vec<f64>,
}

impl BackendMetrics {
    /// A metric by name (one of [`METRICS`]).
    pub fn metric(&self, name: &str) -> Option<&[f64]> {
        Some(match name {
            "rps" => &self.rps,
            "cpu" => &self.cpu,
            "latency_p50" => &self.latency_p50,
            "latency_p99" => &self.latency_p99,
            "in_flight" => &self.in_flight,
            "errors" => &self.errors,
            _ => return None,
        })
    }

    /// Maximum request rate it can serve (requests/s).
    pub fn capacity_rps(&self) -> f64 {
        f64::from(self.workers) * self.service_rate
    }
}

/// The generated data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthData {
    /// The configuration used.
    pub config: SynthConfig,
    /// Step timestamps (unix ms).
    #[serde(skip)]
    pub timestamps: Vec<i64>,
    /// Requests per second arriving at the pool, per step.
    #[serde(skip)]
    pub traffic: Vec<f64>,
    /// The expected rate before Poisson sampling (the "true" signal), per step.
    #[serde(skip)]
    pub expected_traffic: Vec<f64>,
    /// Per-backend metrics.
    pub backends: Vec<BackendMetrics>,
    /// Injected bursts.
    pub bursts: Vec<Burst>,
}

impl SynthData {
    /// The traffic as a [`Series`] named `traffic`.
    pub fn traffic_series(&self) -> Series {
        let mut s = Series::regular(
            "traffic",
            self.config.start_ms,
            i64::from(self.config.interval_secs) * 1000,
            self.traffic.clone(),
        );
        s.timestamps.clone_from(&self.timestamps);
        s
    }

    /// One backend metric as a [`Series`] named like `backends{backend=b1,metric=cpu}`.
    pub fn metric_series(&self, backend: &str, metric: &str) -> Option<Series> {
        let b = self.backends.iter().find(|b| b.name == backend)?;
        let values = b.metric(metric)?.to_vec();
        Some(Series::regular(
            format!("backends{{backend={backend},metric={metric}}}"),
            self.config.start_ms,
            i64::from(self.config.interval_secs) * 1000,
            values,
        ))
    }

    /// Write `traffic.csv`, `backends.csv` and `synth.json` (configuration, backend
    /// capacities and the injected bursts) into `dir`. Returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, DataError> {
        std::fs::create_dir_all(dir).map_err(|source| DataError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let traffic = dir.join("traffic.csv");
        write_series_csv(&traffic, &self.timestamps, &self.traffic)?;
        let backends = dir.join("backends.csv");
        self.write_backends(&backends)?;
        let meta = dir.join("synth.json");
        let json = serde_json::to_string_pretty(self).map_err(|e| DataError::Write {
            path: meta.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&meta, json + "\n").map_err(|source| DataError::Write {
            path: meta.clone(),
            source,
        })?;
        Ok(vec![traffic, backends, meta])
    }

    fn write_backends(&self, path: &Path) -> Result<(), DataError> {
        let err = |source| DataError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut w = BufWriter::new(File::create(path).map_err(err)?);
        w.write_all(b"timestamp,backend,metric,value\n")
            .map_err(err)?;
        let mut line = String::with_capacity(64);
        for (i, t) in self.timestamps.iter().enumerate() {
            let mut ts = String::with_capacity(24);
            push_rfc3339(&mut ts, *t);
            for b in &self.backends {
                for m in METRICS {
                    let v = b.metric(m).and_then(|v| v.get(i)).copied().unwrap_or(0.0);
                    line.clear();
                    line.push_str(&ts);
                    line.push(',');
                    line.push_str(&b.name);
                    line.push(',');
                    line.push_str(m);
                    line.push(',');
                    crate::data::write::push_value(&mut line, v);
                    line.push('\n');
                    w.write_all(line.as_bytes()).map_err(err)?;
                }
            }
        }
        w.flush().map_err(err)
    }
}

/// Round to `d` decimals (so that files and in-memory values agree exactly).
fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (x * f).round() / f
}

/// Generate the data set described by `cfg`.
pub fn generate(cfg: &SynthConfig) -> Result<SynthData, SynthConfigError> {
    cfg.validate()?;
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let dt = f64::from(cfg.interval_secs);
    let step_ms = i64::from(cfg.interval_secs) * 1000;
    let steps = (u64::from(cfg.days) * 86_400 / u64::from(cfg.interval_secs)) as usize;
    let span_ms = steps as i64 * step_ms;

    // Bursts first: a Poisson process over the span.
    let mut bursts = Vec::new();
    if cfg.bursts_per_day > 0.0 {
        let mean_gap_ms = 86_400_000.0 / cfg.bursts_per_day;
        let mut t = 0.0f64;
        loop {
            let u: f64 = rand::Rng::random(&mut rng);
            t += -mean_gap_ms * (1.0 - u).ln();
            if t >= span_ms as f64 {
                break;
            }
            let u1: f64 = rand::Rng::random(&mut rng);
            let u2: f64 = rand::Rng::random(&mut rng);
            let minutes = cfg.burst_minutes.0 + (cfg.burst_minutes.1 - cfg.burst_minutes.0) * u1;
            let peak = cfg.burst_peak.0 + (cfg.burst_peak.1 - cfg.burst_peak.0) * u2;
            bursts.push(Burst {
                start_ms: cfg.start_ms + t as i64,
                duration_ms: (minutes * 60_000.0) as i64,
                peak: round(peak, 3),
            });
        }
    }

    // Backends.
    let unit_rps = cfg.base_rps * cfg.unit_capacity_fraction;
    let total_cap: f64 = cfg.backends.iter().map(|b| b.capacity).sum();
    let mut states: Vec<BackendState> = cfg
        .backends
        .iter()
        .map(|b| {
            let workers = ((b.capacity * f64::from(cfg.workers_per_unit)).round() as u32).max(1);
            BackendState {
                weight: match cfg.split {
                    Split::Equal => 1.0 / cfg.backends.len() as f64,
                    Split::Capacity => b.capacity / total_cap,
                },
                workers,
                mu: b.capacity * unit_rps / f64::from(workers),
                backlog: 0.0,
                out: BackendMetrics {
                    name: b.name.clone(),
                    capacity: b.capacity,
                    weight: 0.0,
                    workers,
                    service_rate: 0.0,
                    rps: Vec::with_capacity(steps),
                    cpu: Vec::with_capacity(steps),
                    latency_p50: Vec::with_capacity(steps),
                    latency_p99: Vec::with_capacity(steps),
                    in_flight: Vec::with_capacity(steps),
                    errors: Vec::with_capacity(steps),
                },
            }
        })
        .collect();
    for s in &mut states {
        s.out.weight = s.weight;
        s.out.service_rate = s.mu;
    }

    let phi = (-dt / cfg.noise_tau_secs).exp();
    let innov = cfg.noise_sigma * (1.0 - phi * phi).sqrt();
    let mut noise: f64 = cfg.noise_sigma * sample_normal(&mut rng);
    let mut timestamps = Vec::with_capacity(steps);
    let mut traffic = Vec::with_capacity(steps);
    let mut expected = Vec::with_capacity(steps);

    for k in 0..steps {
        let t_ms = cfg.start_ms + k as i64 * step_ms;
        timestamps.push(t_ms);
        noise = phi * noise + innov * sample_normal(&mut rng);
        let rate = cfg.base_rps
            * daily(cfg, t_ms)
            * weekly(cfg, t_ms)
            * (1.0 + cfg.trend_per_week * (t_ms - cfg.start_ms) as f64 / 604_800_000.0)
            * burst_factor(&bursts, t_ms)
            * noise.exp();
        expected.push(round(rate, 3));
        let count = sample_poisson(&mut rng, rate * dt);
        traffic.push(round(count as f64 / dt, 3));

        // Split the arrivals (sequential binomials = multinomial).
        let mut remaining = count;
        let mut remaining_w = 1.0f64;
        let last = states.len() - 1;
        for (i, s) in states.iter_mut().enumerate() {
            let n_i = if i == last {
                remaining
            } else {
                let p = (s.weight / remaining_w).clamp(0.0, 1.0);
                remaining_w -= s.weight;
                sample_binomial(&mut rng, remaining, p)
            };
            remaining -= n_i;
            s.step(cfg, &mut rng, n_i, dt);
        }
    }

    Ok(SynthData {
        config: cfg.clone(),
        timestamps,
        traffic,
        expected_traffic: expected,
        backends: states.into_iter().map(|s| s.out).collect(),
        bursts,
    })
}

struct BackendState {
    weight: f64,
    workers: u32,
    /// Service rate of one worker.
    mu: f64,
    /// Requests waiting beyond the steady-state queue (fluid overload backlog).
    backlog: f64,
    out: BackendMetrics,
}

impl BackendState {
    /// Advance one step with `arrivals` requests over `dt` seconds and record metrics.
    fn step(&mut self, cfg: &SynthConfig, rng: &mut SmallRng, arrivals: u64, dt: f64) {
        let c = f64::from(self.workers);
        let cap = c * self.mu;
        let lambda = arrivals as f64 / dt;
        // Fluid backlog: grows when arrivals exceed capacity, drains otherwise,
        // bounded by the queue limit (the excess is dropped).
        let limit = cfg.queue_per_worker * c;
        let before = self.backlog;
        let mut after = before + (lambda - cap) * dt;
        let mut dropped = 0.0;
        if after < 0.0 {
            after = 0.0;
        }
        if after > limit {
            dropped = after - limit;
            after = limit;
        }
        self.backlog = after;
        let backlog = 0.5 * (before + after);
        let served = if backlog > 0.0 { cap } else { lambda.min(cap) };
        // Steady-state M/M/c part at the (capped) offered load.
        let lam_ss = lambda.min(0.97 * cap);
        let q = MmcQueue::new(self.workers, self.mu, lam_ss);
        let shift = backlog / cap;
        let p50 = shift + q.quantile(0.5);
        let p99 = shift + q.quantile(0.99);
        let mean_t = q.mean_response();
        let in_flight = served * mean_t + backlog;
        let late = if cfg.timeout_secs > shift {
            q.tail(cfg.timeout_secs - shift)
        } else {
            1.0
        };
        let p_err = cfg.base_error_rate + (1.0 - cfg.base_error_rate) * late;
        let admitted = ((arrivals as f64) - dropped).max(0.0).round() as u64;
        let failed = sample_binomial(rng, admitted, p_err.clamp(0.0, 1.0)) as f64 + dropped;
        let jitter = (0.03 * sample_normal(rng)).exp();
        let cpu_noise = sample_normal(rng);

        let o = &mut self.out;
        o.rps.push(round(lambda, 3));
        o.cpu.push(round(
            (2.0 + 98.0 * served / cap + cpu_noise).clamp(0.0, 100.0),
            2,
        ));
        o.latency_p50.push(round(p50 * jitter, 5));
        o.latency_p99
            .push(round((p99 * jitter).max(p50 * jitter), 5));
        o.in_flight.push(round(in_flight, 2));
        o.errors.push(round(failed / dt, 4));
    }
}

/// Response time of an M/M/c queue: exponential service at `mu` per worker, wait 0 with
/// probability 1 − P(wait) (Erlang C), else exponential at `c·mu − lambda`.
struct MmcQueue {
    mu: f64,
    p_wait: f64,
    theta: f64,
}

impl MmcQueue {
    /// Requires `lambda < c·mu`.
    fn new(c: u32, mu: f64, lambda: f64) -> Self {
        let a = lambda / mu;
        // Erlang B by recursion (stable), then Erlang C.
        let mut b = 1.0f64;
        for k in 1..=c {
            b = a * b / (f64::from(k) + a * b);
        }
        let cf = f64::from(c);
        let denom = cf - a * (1.0 - b);
        let p_wait = if denom > 0.0 {
            (cf * b / denom).clamp(0.0, 1.0)
        } else {
            1.0
        };
        MmcQueue {
            mu,
            p_wait,
            theta: (cf * mu - lambda).max(1e-9),
        }
    }

    fn mean_response(&self) -> f64 {
        1.0 / self.mu + self.p_wait / self.theta
    }

    /// P(response time > t).
    fn tail(&self, t: f64) -> f64 {
        let (mu, th) = (self.mu, self.theta);
        let service = (-mu * t).exp();
        let hypo = if (th - mu).abs() < 1e-9 * mu {
            (-mu * t).exp() * (1.0 + mu * t)
        } else {
            (th * (-mu * t).exp() - mu * (-th * t).exp()) / (th - mu)
        };
        ((1.0 - self.p_wait) * service + self.p_wait * hypo).clamp(0.0, 1.0)
    }

    /// The `p` quantile of the response time, by bisection on the tail.
    fn quantile(&self, p: f64) -> f64 {
        let target = 1.0 - p;
        let mut hi = 1.0 / self.mu;
        while self.tail(hi) > target && hi < 1e6 {
            hi *= 2.0;
        }
        let mut lo = 0.0;
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if self.tail(mid) > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }
}

/// Daily multiplier: main peak at `peak_hour`, a secondary harmonic for a morning shoulder.
fn daily(cfg: &SynthConfig, t_ms: i64) -> f64 {
    let h = t_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
    let tau = std::f64::consts::TAU;
    1.0 + cfg.daily_amplitude * (tau * (h - cfg.peak_hour) / 24.0).cos()
        + 0.12 * (2.0 * tau * (h - cfg.peak_hour + 4.0) / 24.0).cos()
}

/// Weekly multiplier: each weekday's level at its noon, linear in between.
fn weekly(cfg: &SynthConfig, t_ms: i64) -> f64 {
    // 1970-01-01 was a Thursday: day index 0 = Monday.
    let days = t_ms.div_euclid(86_400_000);
    let frac = t_ms.rem_euclid(86_400_000) as f64 / 86_400_000.0;
    let dow = (days + 3).rem_euclid(7) as usize;
    let pos = frac - 0.5; // relative to today's noon
    let (a, b, w) = if pos >= 0.0 {
        (dow, (dow + 1) % 7, pos)
    } else {
        ((dow + 6) % 7, dow, 1.0 + pos)
    };
    cfg.weekly_levels[a] * (1.0 - w) + cfg.weekly_levels[b] * w
}

/// Product of the active bursts' multipliers: linear rise over min(5 min, d/4), then
/// exponential decay reaching 5 % at the end of the burst.
fn burst_factor(bursts: &[Burst], t_ms: i64) -> f64 {
    let mut f = 1.0;
    for b in bursts {
        let dt = (t_ms - b.start_ms) as f64;
        let d = b.duration_ms as f64;
        if dt < 0.0 || dt >= d {
            continue;
        }
        let rise = (d / 4.0).min(300_000.0);
        let shape = if dt < rise {
            dt / rise
        } else {
            (-3.0 * (dt - rise) / (d - rise)).exp()
        };
        f *= 1.0 + (b.peak - 1.0) * shape;
    }
    f
}

fn sample_normal(rng: &mut SmallRng) -> f64 {
    StandardNormal.sample(rng)
}

fn sample_poisson(rng: &mut SmallRng, mean: f64) -> u64 {
    if mean.is_nan() || mean <= 0.0 {
        return 0;
    }
    match Poisson::new(mean) {
        Ok(p) => {
            let x: f64 = p.sample(rng);
            x.max(0.0) as u64
        }
        Err(_) => mean.round() as u64,
    }
}

fn sample_binomial(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 {
        return 0;
    }
    match Binomial::new(n, p.min(1.0)) {
        Ok(b) => b.sample(rng),
        Err(_) => (n as f64 * p).round() as u64,
    }
}

/// First timestamp of the default configuration, as RFC 3339 (for docs and messages).
pub fn default_start() -> String {
    format_rfc3339(SynthConfig::default().start_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            days: 14,
            interval_secs: 300,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn erlang_c_matches_mm1() {
        // M/M/1: P(wait) = rho, response ~ Exp(mu - lambda).
        let q = MmcQueue::new(1, 10.0, 5.0);
        assert!((q.p_wait - 0.5).abs() < 1e-12);
        assert!((q.mean_response() - 0.2).abs() < 1e-12);
        let p99 = q.quantile(0.99);
        assert!((p99 - (100f64).ln() / 5.0).abs() < 1e-6, "{p99}");
    }

    #[test]
    fn erlang_c_known_value() {
        // c = 2, a = 1 (rho = 0.5): C = 1/3.
        let q = MmcQueue::new(2, 1.0, 1.0);
        assert!((q.p_wait - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn deterministic_by_seed() {
        let a = generate(&small()).expect("valid");
        let b = generate(&small()).expect("valid");
        assert_eq!(a, b);
        let c = generate(&SynthConfig { seed: 7, ..small() }).expect("valid");
        assert_ne!(a.traffic, c.traffic);
    }

    #[test]
    fn seasonality_trend_and_split() {
        let d = generate(&small()).expect("valid");
        assert_eq!(d.traffic.len(), 14 * 288);
        let mean_at = |hour: i64, weekend: bool| {
            let v: Vec<f64> = d
                .timestamps
                .iter()
                .zip(&d.expected_traffic)
                .filter(|(t, _)| {
                    let dow = (t.div_euclid(86_400_000) + 3).rem_euclid(7);
                    t.rem_euclid(86_400_000) / 3_600_000 == hour && (dow >= 5) == weekend
                })
                .map(|(_, v)| *v)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(
            mean_at(14, false) > 2.0 * mean_at(2, false),
            "daily peak vs night"
        );
        assert!(
            mean_at(14, false) > 1.2 * mean_at(14, true),
            "weekday vs weekend"
        );
        let week = |w: usize| {
            d.expected_traffic[w * 2016..(w + 1) * 2016]
                .iter()
                .sum::<f64>()
        };
        assert!(week(1) > week(0), "trend");
        // Equal split: the 1x backend is busier and slower than the 4x one.
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (b1, b4) = (&d.backends[0], &d.backends[3]);
        assert!((mean(&b1.rps) / mean(&b4.rps) - 1.0).abs() < 0.05);
        assert!(mean(&b1.cpu) > 2.0 * mean(&b4.cpu));
        assert!(mean(&b1.latency_p99) > mean(&b4.latency_p99));
        assert!(mean(&b1.errors) > mean(&b4.errors));
        // Capacity split evens out CPU.
        let e = generate(&SynthConfig {
            split: Split::Capacity,
            ..small()
        })
        .expect("valid");
        let (c1, c4) = (mean(&e.backends[0].cpu), mean(&e.backends[3].cpu));
        assert!((c1 - c4).abs() < 5.0, "{c1} vs {c4}");
        // p99 >= p50 everywhere, all values finite and non-negative.
        for b in &d.backends {
            for m in METRICS {
                assert!(
                    b.metric(m)
                        .is_some_and(|v| v.iter().all(|x| x.is_finite() && *x >= 0.0))
                );
            }
            assert!(
                b.latency_p50
                    .iter()
                    .zip(&b.latency_p99)
                    .all(|(a, b)| b >= a)
            );
        }
    }

    #[test]
    fn bursts_raise_traffic() {
        let d = generate(&SynthConfig {
            bursts_per_day: 2.0,
            ..small()
        })
        .expect("valid");
        assert!(!d.bursts.is_empty());
        let b = d.bursts[0];
        let step = 300_000;
        let idx = ((b.start_ms - d.config.start_ms) / step) as usize + 1;
        assert!(idx < d.timestamps.len());
        assert!(burst_factor(&d.bursts, d.timestamps[idx]) > 1.0);
        // The traffic around the burst is above the expected level without it.
        let i0 = idx.saturating_sub(1);
        assert!(d.expected_traffic[idx + 1] > d.expected_traffic[i0] * 0.9);
    }

    #[test]
    fn invalid_configs() {
        assert!(
            generate(&SynthConfig {
                days: 0,
                ..SynthConfig::default()
            })
            .is_err()
        );
        assert!(
            generate(&SynthConfig {
                backends: vec![],
                ..SynthConfig::default()
            })
            .is_err()
        );
        assert!(
            generate(&SynthConfig {
                base_rps: f64::NAN,
                ..SynthConfig::default()
            })
            .is_err()
        );
        assert_eq!(default_start(), "2024-01-01T00:00:00Z");
    }
}
