//! Arrival processes: synthetic (Poisson, deterministic, MMPP, sinusoidal),
//! replay of a rate series as a non-homogeneous Poisson process, and replay of
//! per-request traces with job sizes.
//!
//! Every source yields [`Arrival`]s in time order, with the request's size
//! (service demand on a speed-1 backend) and key already attached, drawn from
//! their own random streams. That is what gives common random numbers across
//! policies. File-backed sources are *streamed* line by line so memory stays
//! flat whatever the trace length.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use crate::dist::{Sampler, ServiceDist, Stream, exp1, stream};
use crate::model::ParamError;

/// One request entering the system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Virtual arrival time, seconds.
    pub time: f64,
    /// Service demand, seconds of work on a speed-1 backend.
    pub size: f64,
    /// Client / session key (for hash-based algorithms).
    pub key: u64,
}

/// Errors while reading a workload file.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line cannot be used.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong (names the field).
        msg: String,
    },
}

/// How requests are keyed (client / session identifiers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Number of distinct clients.
    #[serde(default = "default_clients")]
    pub clients: u64,
    /// Zipf exponent of client popularity (0 = uniform).
    #[serde(default)]
    pub zipf: f64,
}

fn default_clients() -> u64 {
    10_000
}

impl Default for KeySpec {
    fn default() -> Self {
        KeySpec {
            clients: default_clients(),
            zipf: 0.0,
        }
    }
}

/// Linear cost model turning trace token counts into seconds of work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCost {
    /// Fixed seconds per request.
    #[serde(default)]
    pub base: f64,
    /// Seconds per prompt (context) token.
    #[serde(default)]
    pub per_context_token: f64,
    /// Seconds per generated token.
    #[serde(default)]
    pub per_generated_token: f64,
}

/// What the `value` column of a rate series means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// Number of requests in the interval starting at the timestamp.
    #[default]
    Count,
    /// Requests per second.
    Rate,
}

/// The arrival process of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArrivalSpec {
    /// Poisson arrivals at `rate` per second.
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    /// Evenly spaced arrivals at `rate` per second.
    Deterministic {
        /// Requests per second.
        rate: f64,
    },
    /// Markov-modulated Poisson: state `i` lasts Exp(mean `durations[i]`) seconds
    /// with Poisson rate `rates[i]`, states visited cyclically.
    Mmpp {
        /// Rate per state, requests per second.
        rates: Vec<f64>,
        /// Mean sojourn per state, seconds.
        durations: Vec<f64>,
    },
    /// Poisson with rate `mean × (1 + amplitude × sin(2πt / period))` (thinning).
    Sinusoid {
        /// Mean rate, requests per second.
        mean: f64,
        /// Relative amplitude in [0, 1].
        amplitude: f64,
        /// Period, seconds.
        period: f64,
    },
    /// A `timestamp,value` CSV replayed as piecewise-constant non-homogeneous Poisson.
    RateSeries {
        /// CSV file (relative to the scenario file, or `datasets:<path>`).
        path: PathBuf,
        /// Time compression: `k` seconds of the series per virtual second (rates × k).
        #[serde(default = "one")]
        compression: f64,
        /// Extra rate multiplier.
        #[serde(default = "one")]
        multiplier: f64,
        /// Meaning of `value`.
        #[serde(default)]
        value: ValueKind,
        /// Skip rows before this timestamp.
        #[serde(default)]
        start: Option<String>,
    },
    /// A per-request trace `TIMESTAMP,ContextTokens,GeneratedTokens` (Azure LLM format).
    Trace {
        /// CSV file (relative to the scenario file, or `datasets:<path>`).
        path: PathBuf,
        /// Time compression (`k` trace seconds per virtual second).
        #[serde(default = "one")]
        compression: f64,
        /// Token → seconds cost model; when absent the scenario's `service`
        /// distribution gives sizes instead.
        #[serde(default)]
        cost: Option<TokenCost>,
    },
}

fn one() -> f64 {
    1.0
}

impl ArrivalSpec {
    /// Check parameters; the error names the field.
    pub fn validate(&self) -> Result<(), ParamError> {
        let pos = ParamError::check_positive;
        match self {
            ArrivalSpec::Poisson { rate } | ArrivalSpec::Deterministic { rate } => {
                pos("rate", *rate)
            }
            ArrivalSpec::Mmpp { rates, durations } => {
                if rates.is_empty() || rates.len() != durations.len() {
                    return Err(ParamError::new(
                        "rates",
                        format!(
                            "and `durations` must be non-empty and of equal length (got {} and {})",
                            rates.len(),
                            durations.len()
                        ),
                    ));
                }
                for r in rates {
                    if !(r.is_finite() && *r >= 0.0) {
                        return Err(ParamError::new(
                            "rates[]",
                            format!("must be finite and >= 0, got {r}"),
                        ));
                    }
                }
                durations.iter().try_for_each(|d| pos("durations[]", *d))
            }
            ArrivalSpec::Sinusoid {
                mean,
                amplitude,
                period,
            } => {
                pos("mean", *mean)?;
                pos("period", *period)?;
                if !(0.0..=1.0).contains(amplitude) {
                    return Err(ParamError::new(
                        "amplitude",
                        format!("must be in [0, 1], got {amplitude}"),
                    ));
                }
                Ok(())
            }
            ArrivalSpec::RateSeries {
                compression,
                multiplier,
                ..
            } => {
                pos("compression", *compression)?;
                pos("multiplier", *multiplier)
            }
            ArrivalSpec::Trace {
                compression, cost, ..
            } => {
                pos("compression", *compression)?;
                if let Some(c) = cost {
                    for (n, v) in [
                        ("cost.base", c.base),
                        ("cost.per_context_token", c.per_context_token),
                        ("cost.per_generated_token", c.per_generated_token),
                    ] {
                        if !(v.is_finite() && v >= 0.0) {
                            return Err(ParamError::new(
                                n,
                                format!("must be finite and >= 0, got {v}"),
                            ));
                        }
                    }
                    if c.base + c.per_context_token + c.per_generated_token <= 0.0 {
                        return Err(ParamError::new(
                            "cost",
                            "gives every request zero work; set `base` or a per-token cost",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// Long-run mean arrival rate when known without reading a file.
    pub fn mean_rate(&self) -> Option<f64> {
        match self {
            ArrivalSpec::Poisson { rate } | ArrivalSpec::Deterministic { rate } => Some(*rate),
            ArrivalSpec::Sinusoid { mean, .. } => Some(*mean),
            ArrivalSpec::Mmpp { rates, durations } => {
                let t: f64 = durations.iter().sum();
                Some(rates.iter().zip(durations).map(|(r, d)| r * d).sum::<f64>() / t)
            }
            _ => None,
        }
    }
}

/// Resolve a workload path: `datasets:<rel>` means `<rel>` inside the shared
/// datasets directory (`$AYA_DATASETS`, see `aya_forecaster::data::datasets_dir`);
/// other relative paths are relative to the scenario file's directory.
pub fn resolve_path(p: &Path, base_dir: &Path) -> PathBuf {
    if let Some(rest) = p.to_str().and_then(|s| s.strip_prefix("datasets:")) {
        let dir = aya_forecaster::data::datasets_dir();
        // A relative `$AYA_DATASETS` is meant relative to the workspace root;
        // fall back to the root this crate was built in when the current
        // directory is elsewhere (e.g. tests run from `sim/`).
        if dir.is_relative() && !dir.is_dir() {
            let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&dir);
            if built.is_dir() {
                return built.join(rest);
            }
        }
        return dir.join(rest);
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Parse a timestamp cell to unix seconds (via the forecaster's data layer).
pub fn parse_ts(s: &str) -> Result<f64, aya_forecaster::data::TimestampError> {
    aya_forecaster::data::parse_timestamp(s).map(|ms| ms as f64 / 1000.0)
}

/// A streaming CSV line reader with line numbers and a reused buffer.
struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    buf: String,
    line: u64,
}

impl Lines {
    fn open(path: &Path) -> Result<Lines, WorkloadError> {
        let f = File::open(path).map_err(|source| WorkloadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Lines {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, f),
            buf: String::new(),
            line: 0,
        })
    }

    /// Advance to the next non-empty line; false at end of file.
    fn advance(&mut self) -> Result<bool, WorkloadError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_line(&mut self.buf)
                .map_err(|source| WorkloadError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(false);
            }
            self.line += 1;
            if !self.buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }

    /// The current line, trimmed.
    fn text(&self) -> &str {
        self.buf.trim()
    }

    fn err(&self, msg: impl Into<String>) -> WorkloadError {
        WorkloadError::Parse {
            path: self.path.clone(),
            line: self.line,
            msg: msg.into(),
        }
    }
}

/// The state of a running arrival process.
enum Process {
    Poisson {
        rate: f64,
    },
    Deterministic {
        gap: f64,
        n: u64,
    },
    Mmpp {
        rates: Vec<f64>,
        durations: Vec<f64>,
        state: usize,
        state_end: f64,
    },
    Sinusoid {
        mean: f64,
        amplitude: f64,
        omega: f64,
    },
    RateSeries(Box<RateSeriesState>),
    Trace(Box<TraceState>),
}

struct RateSeriesState {
    lines: Lines,
    scale: f64,
    value: ValueKind,
    /// Virtual time origin (unix seconds of the first used row).
    origin: Option<f64>,
    compression: f64,
    /// Current segment: [start, end) virtual, rate per virtual second.
    seg_end: f64,
    rate: f64,
    /// Look-ahead row: (unix seconds, value).
    next_row: Option<(f64, f64)>,
    last_step: f64,
    start: Option<f64>,
}

struct TraceState {
    lines: Lines,
    compression: f64,
    origin: Option<f64>,
    cost: Option<TokenCost>,
}

/// A streaming arrival source.
pub struct ArrivalSource {
    process: Process,
    t: f64,
    arrivals: SmallRng,
    sizes: SmallRng,
    keys: SmallRng,
    sampler: Sampler,
    zipf: Option<Zipf<f64>>,
    clients: u64,
}

impl ArrivalSource {
    /// Build a source for replication `seed`. `base_dir` resolves relative paths.
    pub fn new(
        spec: &ArrivalSpec,
        service: &ServiceDist,
        keys: &KeySpec,
        seed: u64,
        base_dir: &Path,
    ) -> Result<ArrivalSource, WorkloadError> {
        let sampler = service.sampler().map_err(|e| WorkloadError::Parse {
            path: PathBuf::from("<service>"),
            line: 0,
            msg: e.to_string(),
        })?;
        let resolve = |p: &Path| resolve_path(p, base_dir);
        let process = match spec {
            ArrivalSpec::Poisson { rate } => Process::Poisson { rate: *rate },
            ArrivalSpec::Deterministic { rate } => Process::Deterministic {
                gap: 1.0 / rate,
                n: 0,
            },
            ArrivalSpec::Mmpp { rates, durations } => Process::Mmpp {
                rates: rates.clone(),
                durations: durations.clone(),
                state: 0,
                state_end: f64::NAN,
            },
            ArrivalSpec::Sinusoid {
                mean,
                amplitude,
                period,
            } => Process::Sinusoid {
                mean: *mean,
                amplitude: *amplitude,
                omega: 2.0 * std::f64::consts::PI / period,
            },
            ArrivalSpec::RateSeries {
                path,
                compression,
                multiplier,
                value,
                start,
            } => {
                let start = match start {
                    Some(s) => Some(parse_ts(s).map_err(|msg| WorkloadError::Parse {
                        path: PathBuf::from("<scenario>"),
                        line: 0,
                        msg: format!("workload.start: {msg}"),
                    })?),
                    None => None,
                };
                let mut st = RateSeriesState {
                    lines: Lines::open(&resolve(path))?,
                    scale: compression * multiplier,
                    value: *value,
                    origin: None,
                    compression: *compression,
                    seg_end: 0.0,
                    rate: 0.0,
                    next_row: None,
                    last_step: 60.0,
                    start,
                };
                st.skip_header()?;
                st.next_row = st.read_row()?;
                Process::RateSeries(Box::new(st))
            }
            ArrivalSpec::Trace {
                path,
                compression,
                cost,
            } => {
                let mut lines = Lines::open(&resolve(path))?;
                // Header.
                if lines.advance()? {
                    let h = lines.text();
                    if !h.to_ascii_lowercase().starts_with("timestamp") {
                        return Err(lines.err(format!(
                            "expected the header `TIMESTAMP,ContextTokens,GeneratedTokens`, found {h:?}"
                        )));
                    }
                }
                Process::Trace(Box::new(TraceState {
                    lines,
                    compression: *compression,
                    origin: None,
                    cost: *cost,
                }))
            }
        };
        let zipf = if keys.zipf > 0.0 {
            Some(
                Zipf::new(keys.clients.max(1) as f64, keys.zipf).map_err(|e| {
                    WorkloadError::Parse {
                        path: PathBuf::from("<scenario>"),
                        line: 0,
                        msg: format!("workload.keys: {e}"),
                    }
                })?,
            )
        } else {
            None
        };
        Ok(ArrivalSource {
            process,
            t: 0.0,
            arrivals: stream(seed, Stream::Arrivals),
            sizes: stream(seed, Stream::Sizes),
            keys: stream(seed, Stream::Keys),
            sampler,
            zipf,
            clients: keys.clients.max(1),
        })
    }

    #[inline]
    fn key(&mut self) -> u64 {
        match &self.zipf {
            Some(z) => z.sample(&mut self.keys) as u64,
            None => self.keys.random_range(0..self.clients),
        }
    }

    /// The next arrival, or `None` when the source is exhausted.
    #[inline]
    pub fn next_arrival(&mut self) -> Result<Option<Arrival>, WorkloadError> {
        let time = match &mut self.process {
            Process::Poisson { rate } => self.t + exp1(&mut self.arrivals) / *rate,
            Process::Deterministic { gap, n } => {
                *n += 1;
                *n as f64 * *gap
            }
            Process::Mmpp {
                rates,
                durations,
                state,
                state_end,
            } => {
                if state_end.is_nan() {
                    *state_end = durations[0] * exp1(&mut self.arrivals);
                }
                let mut t = self.t;
                loop {
                    let r = rates[*state];
                    let cand = if r > 0.0 {
                        t + exp1(&mut self.arrivals) / r
                    } else {
                        f64::INFINITY
                    };
                    if cand <= *state_end {
                        break cand;
                    }
                    t = *state_end;
                    *state = (*state + 1) % rates.len();
                    *state_end = t + durations[*state] * exp1(&mut self.arrivals);
                }
            }
            Process::Sinusoid {
                mean,
                amplitude,
                omega,
            } => {
                let max = *mean * (1.0 + *amplitude);
                let mut t = self.t;
                loop {
                    t += exp1(&mut self.arrivals) / max;
                    let r = *mean * (1.0 + *amplitude * (*omega * t).sin());
                    if self.arrivals.random::<f64>() * max <= r {
                        break t;
                    }
                }
            }
            Process::RateSeries(st) => {
                let mut t = self.t;
                loop {
                    if t < st.seg_end && st.rate > 0.0 {
                        let cand = t + exp1(&mut self.arrivals) / st.rate;
                        if cand < st.seg_end {
                            break cand;
                        }
                    }
                    t = t.max(st.seg_end);
                    if !st.advance()? {
                        return Ok(None);
                    }
                }
            }
            Process::Trace(st) => {
                if !st.lines.advance()? {
                    return Ok(None);
                }
                let mut it = st.lines.text().split(',');
                let ts = it.next().unwrap_or("");
                let ctx = it.next();
                let gen_ = it.next();
                let unix = parse_ts(ts).map_err(|m| st.lines.err(format!("TIMESTAMP: {m}")))?;
                let origin = *st.origin.get_or_insert(unix);
                let t = ((unix - origin) / st.compression).max(self.t);
                let time = t;
                if let Some(c) = st.cost {
                    let parse = |v: Option<&str>, name: &str| -> Result<f64, WorkloadError> {
                        let v = v.ok_or_else(|| st.lines.err(format!("missing column {name}")))?;
                        v.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite() && *x >= 0.0)
                            .ok_or_else(|| {
                                st.lines
                                    .err(format!("{name}: {v:?} is not a non-negative number"))
                            })
                    };
                    let ctx = parse(ctx, "ContextTokens")?;
                    let gen_ = parse(gen_, "GeneratedTokens")?;
                    let size = c.base + c.per_context_token * ctx + c.per_generated_token * gen_;
                    self.t = time;
                    let key = self.key();
                    return Ok(Some(Arrival {
                        time,
                        size: size.max(1e-9),
                        key,
                    }));
                }
                time
            }
        };
        self.t = time;
        let size = self.sampler.sample(&mut self.sizes);
        let key = self.key();
        Ok(Some(Arrival { time, size, key }))
    }
}

/// The history of a `rate_series` workload before its `start`: the last
/// `seconds` of the series (series time) before `start`, converted like the
/// replay (× compression × multiplier) and averaged over control intervals
/// of `interval` virtual seconds ending at t = 0, as
/// `(interval end ≤ 0, requests per virtual second)`, oldest first. This is
/// what a controller that had been running before the replay would have
/// observed: a forecaster's warm start.
pub fn rate_history(
    spec: &ArrivalSpec,
    base_dir: &Path,
    seconds: f64,
    interval: f64,
) -> Result<Vec<(f64, f64)>, WorkloadError> {
    let needs = || WorkloadError::Parse {
        path: PathBuf::from("<scenario>"),
        line: 0,
        msg: "a warm start needs a `rate_series` workload with `start`: the rows before \
              `start` are the history"
            .into(),
    };
    let ArrivalSpec::RateSeries {
        path,
        compression,
        multiplier,
        value,
        start: Some(start),
    } = spec
    else {
        return Err(needs());
    };
    let start = parse_ts(start).map_err(|msg| WorkloadError::Parse {
        path: PathBuf::from("<scenario>"),
        line: 0,
        msg: format!("workload.start: {msg}"),
    })?;
    let from = start - seconds;
    let mut st = RateSeriesState {
        lines: Lines::open(&resolve_path(path, base_dir))?,
        scale: compression * multiplier,
        value: *value,
        origin: Some(start),
        compression: *compression,
        seg_end: 0.0,
        rate: 0.0,
        next_row: None,
        last_step: 60.0,
        start: None,
    };
    st.skip_header()?;
    // Segments [a, b) in virtual time (≤ 0) with their rate.
    let mut segs: Vec<(f64, f64, f64)> = Vec::new();
    let mut prev: Option<(f64, f64)> = None;
    while let Some((ts, val)) = st.read_row()? {
        if let Some((pts, pval)) = prev {
            if ts <= pts {
                return Err(st.lines.err(format!(
                    "timestamps must increase (row at unix {ts} follows unix {pts})"
                )));
            }
            if pts >= from {
                let rate = match st.value {
                    ValueKind::Count => pval / (ts - pts),
                    ValueKind::Rate => pval,
                } * st.scale;
                let (a, b) = (
                    (pts - start) / st.compression,
                    (ts.min(start) - start) / st.compression,
                );
                if b > a {
                    segs.push((a, b, rate));
                }
            }
        }
        if ts >= start {
            break;
        }
        prev = Some((ts, val));
    }
    if segs.is_empty() {
        return Err(WorkloadError::Parse {
            path: resolve_path(path, base_dir),
            line: 0,
            msg: format!(
                "no rows in the {seconds} s before workload.start (the warm start's history)"
            ),
        });
    }
    Ok(per_interval(&segs, interval))
}

/// Average piecewise-constant `(from, to, rate)` segments (increasing, all
/// ≤ 0) over intervals `(−(k+1)·interval, −k·interval]`, oldest first; an
/// interval only partly covered averages over its covered part.
fn per_interval(segs: &[(f64, f64, f64)], interval: f64) -> Vec<(f64, f64)> {
    let first = segs[0].0;
    let n = ((-first) / interval).ceil().max(1.0) as usize;
    let mut sum = vec![0.0; n];
    let mut covered = vec![0.0; n];
    for &(a, b, rate) in segs {
        // Bucket j (0 = oldest) covers (−(n−j)·interval, −(n−j−1)·interval].
        let lo = ((a / interval + n as f64).floor().max(0.0)) as usize;
        for (j, (sj, cj)) in sum.iter_mut().zip(covered.iter_mut()).enumerate().skip(lo) {
            let (ba, bb) = (
                -((n - j) as f64) * interval,
                -((n - j - 1) as f64) * interval,
            );
            if ba >= b {
                break;
            }
            let overlap = b.min(bb) - a.max(ba);
            if overlap > 0.0 {
                *sj += rate * overlap;
                *cj += overlap;
            }
        }
    }
    (0..n)
        .filter(|&j| covered[j] > 0.0)
        .map(|j| (-((n - j - 1) as f64) * interval, sum[j] / covered[j]))
        .collect()
}

impl RateSeriesState {
    fn skip_header(&mut self) -> Result<(), WorkloadError> {
        if !self.lines.advance()? {
            return Err(self
                .lines
                .err("empty file: expected the header `timestamp,value`"));
        }
        let h = self.lines.text();
        if h.to_ascii_lowercase().starts_with("timestamp") {
            Ok(())
        } else {
            Err(self.lines.err(format!(
                "expected the header `timestamp,value`, found {h:?}"
            )))
        }
    }

    fn read_row(&mut self) -> Result<Option<(f64, f64)>, WorkloadError> {
        loop {
            if !self.lines.advance()? {
                return Ok(None);
            }
            let (ts, v) = self
                .lines
                .text()
                .split_once(',')
                .ok_or_else(|| self.lines.err("expected two columns `timestamp,value`"))?;
            let v = v.trim();
            let unix = parse_ts(ts).map_err(|m| self.lines.err(format!("timestamp: {m}")))?;
            let val = v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    self.lines
                        .err(format!("value: {v:?} is not a non-negative number"))
                })?;
            if self.start.is_some_and(|s| unix < s) {
                continue;
            }
            return Ok(Some((unix, val)));
        }
    }

    /// Move to the next segment; false at end of series.
    fn advance(&mut self) -> Result<bool, WorkloadError> {
        let Some((ts, val)) = self.next_row else {
            return Ok(false);
        };
        self.next_row = self.read_row()?;
        let step = match self.next_row {
            Some((nts, _)) if nts > ts => nts - ts,
            Some((nts, _)) => {
                return Err(self.lines.err(format!(
                    "timestamps must increase (row at unix {nts} follows unix {ts})"
                )));
            }
            None => self.last_step,
        };
        self.last_step = step;
        let origin = *self.origin.get_or_insert(ts);
        let rate_per_series_sec = match self.value {
            ValueKind::Count => val / step,
            ValueKind::Rate => val,
        };
        self.rate = rate_per_series_sec * self.scale;
        if self.rate > crate::model::limits::MAX_RATE {
            return Err(self.lines.err(format!(
                "value {val} gives {:.3e} requests per virtual second (x compression x multiplier), \
                 more than the simulator's limit of {:e}: lower `workload.multiplier` or `workload.compression`",
                self.rate,
                crate::model::limits::MAX_RATE
            )));
        }
        self.seg_end = (ts + step - origin) / self.compression;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(spec: ArrivalSpec, horizon: f64) -> (u64, f64) {
        let mut src = ArrivalSource::new(
            &spec,
            &ServiceDist::Exponential { mean: 1.0 },
            &KeySpec::default(),
            7,
            Path::new("."),
        )
        .expect("source");
        let (mut n, mut size) = (0u64, 0.0);
        let mut last = 0.0;
        while let Some(a) = src.next_arrival().expect("synthetic") {
            assert!(a.time >= last, "arrivals are time-ordered");
            last = a.time;
            if a.time > horizon {
                break;
            }
            n += 1;
            size += a.size;
        }
        (n, size / n.max(1) as f64)
    }

    #[test]
    fn synthetic_processes_have_their_mean_rate() {
        let specs = [
            ArrivalSpec::Poisson { rate: 50.0 },
            ArrivalSpec::Deterministic { rate: 50.0 },
            ArrivalSpec::Mmpp {
                rates: vec![20.0, 80.0],
                durations: vec![5.0, 5.0],
            },
            ArrivalSpec::Sinusoid {
                mean: 50.0,
                amplitude: 0.8,
                period: 100.0,
            },
        ];
        for s in specs {
            let (n, mean_size) = count(s.clone(), 2000.0);
            let rate = n as f64 / 2000.0;
            let want = s.mean_rate().expect("synthetic");
            assert!(
                (rate - want).abs() / want < 0.05,
                "{s:?}: rate {rate} vs {want}"
            );
            assert!(
                (mean_size - 1.0).abs() < 0.05,
                "{s:?}: mean size {mean_size}"
            );
        }
    }

    #[test]
    fn sizes_do_not_depend_on_the_arrival_process() {
        // Common random numbers: the size stream is separate from the arrival stream.
        let sizes = |spec: ArrivalSpec| {
            let mut src = ArrivalSource::new(
                &spec,
                &ServiceDist::Lognormal { mean: 1.0, cv: 2.0 },
                &KeySpec::default(),
                3,
                Path::new("."),
            )
            .expect("source");
            (0..100)
                .map(|_| src.next_arrival().expect("ok").expect("some").size)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sizes(ArrivalSpec::Poisson { rate: 1.0 }),
            sizes(ArrivalSpec::Deterministic { rate: 9.0 })
        );
    }

    fn series(dir: &Path, rows: &[(i64, f64)]) -> PathBuf {
        let path = dir.join("s.csv");
        let mut text = String::from("timestamp,value\n");
        for (t, v) in rows {
            text.push_str(&format!("{t},{v}\n"));
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn rate_series(path: PathBuf, start: Option<&str>) -> ArrivalSpec {
        ArrivalSpec::RateSeries {
            path,
            compression: 10.0,
            multiplier: 2.0,
            value: ValueKind::Count,
            start: start.map(str::to_string),
        }
    }

    #[test]
    fn rate_history_is_the_series_before_start_on_the_control_grid() {
        let dir = tempfile::tempdir().unwrap();
        // One row a minute: 60, 120, 180, ... requests, then the replay from t = 600.
        let rows: Vec<(i64, f64)> = (0..20).map(|k| (k * 60, 60.0 * (k + 1) as f64)).collect();
        let path = series(dir.path(), &rows);
        // 300 s of history before unix 600: rows 5..9; virtual = series / 10,
        // rate = count / 60 s × 10 × 2. Control interval 12 virtual seconds:
        // two rows (6 virtual s each) per interval.
        let h = rate_history(&rate_series(path, Some("600")), dir.path(), 300.0, 12.0).unwrap();
        let rate = |k: usize| 60.0 * (k + 1) as f64 / 60.0 * 20.0;
        assert_eq!(h.len(), 3, "{h:?}");
        // (-30, -24]: only row 5 (virtual -30..-24) is covered.
        assert_eq!(h[0], (-24.0, rate(5)));
        assert_eq!(h[1], (-12.0, (rate(6) + rate(7)) / 2.0));
        assert_eq!(h[2], (0.0, (rate(8) + rate(9)) / 2.0));
        // The replay itself still starts at `start`.
        let mut src = ArrivalSource::new(
            &rate_series(dir.path().join("s.csv"), Some("600")),
            &ServiceDist::Exponential { mean: 1.0 },
            &KeySpec::default(),
            1,
            dir.path(),
        )
        .unwrap();
        assert!(src.next_arrival().unwrap().is_some());
    }

    #[test]
    fn rate_history_refuses_what_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = series(dir.path(), &[(0, 1.0), (60, 2.0), (120, 3.0)]);
        let no_start = rate_history(&rate_series(path.clone(), None), dir.path(), 60.0, 15.0);
        assert!(
            no_start
                .unwrap_err()
                .to_string()
                .contains("needs a `rate_series` workload with `start`")
        );
        let poisson = rate_history(&ArrivalSpec::Poisson { rate: 1.0 }, dir.path(), 60.0, 15.0);
        assert!(poisson.is_err());
        // Nothing before the start.
        let e = rate_history(
            &rate_series(path.clone(), Some("0")),
            dir.path(),
            60.0,
            15.0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no rows in the 60 s before workload.start"),
            "{e}"
        );
        // Out-of-order history is named with its line.
        let bad = series(dir.path(), &[(0, 1.0), (120, 2.0), (60, 3.0), (180, 1.0)]);
        let e = rate_history(&rate_series(bad, Some("180")), dir.path(), 600.0, 15.0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.csv:4") && e.contains("timestamps must increase"),
            "{e}"
        );
    }
}
