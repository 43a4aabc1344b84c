//! Aya's streaming anomaly detector: one [`Detector`] per metric, fed each point once, in order,
//! with no look-ahead and O(1) amortised work per point.
//!
//! Every point gets two *raw surprises* in [0, 1]:
//! - **sequence surprise**: how unexpected the value's quantised level is after the recent
//!   sub-sequence of levels, from counts of what followed the same context in the whole history
//!   (an order-`k` Markov memory of quantised values; the "how unusual is the recent
//!   sub-sequence" question that HTM and ARTime ask, answered with a count table);
//! - **deviation surprise**: the distance of the value from a robust running level, in units of the
//!   running typical absolute deviation (catches level shifts and spikes on noisy series whose
//!   levels never repeat exactly).
//!
//! Each raw surprise is turned into an *anomaly likelihood* the way Numenta's `AnomalyLikelihood`
//! does: the mean of the last few raw values is compared with the distribution (mean, variance)
//! of those short means over a long history, and the Gaussian upper-tail probability says how
//! rare the recent stretch is. The score is the larger likelihood on NAB's log scale
//! (`ln(1 - L) / ln(1e-10)`, 0.5 for `L = 1 - 1e-5`), with a red-zone filter (a likelihood that
//! stays in the red zone is downgraded after its first point, so one anomaly raises one alert).
//! A value beyond the range seen so far by more than a tolerance scores 1 (a *spatial* anomaly,
//! as in Numenta's NAB detector).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// The detector's few constants. Defaults were tuned on the "tune" half of NAB (see
/// `docs/anomaly.md`); each is explained on its field.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Points used to fix the quantisation step (range of the first points / `levels`); no score
    /// above 0 before that. NAB's shortest file has 1127 rows, probation 169.
    pub warmup: usize,
    /// Quantisation levels across the warm-up range (resolution of the sequence memory).
    pub levels: f64,
    /// Context length of the sequence memory (number of preceding levels).
    pub order: usize,
    /// Raw surprises averaged before the likelihood (Numenta: 10).
    pub short_window: usize,
    /// History of averaged surprises the likelihood compares against (Numenta: 8640).
    pub history: usize,
    /// Smoothing of the deviation surprise's running level and scale (EWMA weight per point).
    pub level_alpha: f64,
    /// Relative range tolerance of a spatial anomaly (Numenta's NAB detector: 0.05).
    pub spatial_tolerance: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            warmup: 150,
            levels: 8.0,
            order: 2,
            short_window: 10,
            history: 8640,
            level_alpha: 0.02,
            spatial_tolerance: 0.05,
        }
    }
}

/// Why a point scored what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Still learning the series (score 0).
    Warmup,
    /// Nothing unusual (score below 0.5).
    Normal,
    /// The recent sub-sequence of levels is unusual given the history.
    UnusualSequence,
    /// The recent values are far from the running level.
    Deviation,
    /// The value is above the highest value seen so far.
    NewHigh,
    /// The value is below the lowest value seen so far.
    NewLow,
}

/// One point's anomaly score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Anomaly score in [0, 1]; 0.5 means a likelihood of 1 - 1e-5.
    pub value: f64,
    /// The largest anomaly likelihood of the two surprises, in [0, 1].
    pub likelihood: f64,
    /// The dominant reason.
    pub reason: Reason,
}

impl Score {
    /// A short, human-readable explanation.
    pub fn explanation(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            Reason::Warmup => "learning the series",
            Reason::Normal => "normal",
            Reason::UnusualSequence => "unusual sequence of values for this series",
            Reason::Deviation => "values far from the recent level",
            Reason::NewHigh => "above the highest value seen",
            Reason::NewLow => "below the lowest value seen",
        };
        write!(
            f,
            "score {:.3} ({what}; likelihood {:.6})",
            self.value, self.likelihood
        )
    }
}

/// FNV-style hasher for the integer keys of the sequence memory (SipHash is needlessly slow here).
#[derive(Default)]
struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let x = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }
    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
}

type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Numenta-style anomaly likelihood of a raw surprise stream.
#[derive(Debug, Clone)]
struct Likelihood {
    short: VecDeque<f64>,
    short_sum: f64,
    history: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
    short_window: usize,
    capacity: usize,
    previous_red: bool,
}

/// Numenta's lower bounds on the averaged surprises' distribution (`estimateNormal`).
const MIN_MEAN: f64 = 0.03;
const MIN_VARIANCE: f64 = 0.0003;
/// Numenta's red and yellow zones (`_filterLikelihoods`): 1 - 1e-5 and 1 - 1e-3.
const RED: f64 = 1.0 - 1e-5;
const YELLOW: f64 = 1.0 - 1e-3;

impl Likelihood {
    fn new(short_window: usize, capacity: usize) -> Self {
        Likelihood {
            short: VecDeque::with_capacity(short_window + 1),
            short_sum: 0.0,
            history: VecDeque::with_capacity(capacity + 1),
            sum: 0.0,
            sum_sq: 0.0,
            short_window: short_window.max(1),
            capacity: capacity.max(2),
            previous_red: false,
        }
    }

    /// Adds a raw surprise and returns the likelihood of the recent mean (before the filter).
    fn update(&mut self, raw: f64) -> f64 {
        self.short.push_back(raw);
        self.short_sum += raw;
        if self.short.len() > self.short_window {
            self.short_sum -= self.short.pop_front().unwrap_or(0.0);
        }
        let average = self.short_sum / self.short.len() as f64;
        let likelihood = if self.history.len() < 2 {
            0.5
        } else {
            let n = self.history.len() as f64;
            let mean = (self.sum / n).max(MIN_MEAN);
            let variance = (self.sum_sq / n - (self.sum / n).powi(2)).max(MIN_VARIANCE);
            let z = (average - mean) / variance.sqrt();
            1.0 - super::gaussian::normal_tail(z)
        };
        self.history.push_back(average);
        self.sum += average;
        self.sum_sq += average * average;
        if self.history.len() > self.capacity {
            let old = self.history.pop_front().unwrap_or(0.0);
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        likelihood
    }

    /// Numenta's red-zone filter: a likelihood that stays in the red zone is downgraded to the
    /// yellow zone after its first point.
    fn filter(&mut self, likelihood: f64) -> f64 {
        let red = likelihood >= RED;
        let out = if red && self.previous_red {
            YELLOW
        } else {
            likelihood
        };
        self.previous_red = red;
        out
    }
}

/// Numenta's log scale for likelihoods: 0 for L ≤ 0, 0.5 at 1 - 1e-5, 1 at 1 - 1e-10.
fn log_likelihood(likelihood: f64) -> f64 {
    ((1.000_000_000_1 - likelihood).ln() / (1.0f64 - 0.999_999_999_9).ln()).clamp(0.0, 1.0)
}

/// Streaming anomaly detector for one metric.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    seen: usize,
    warmup_values: Vec<f64>,
    step: f64,
    min: f64,
    max: f64,
    context: VecDeque<i64>,
    /// (context hash, level) → count, and context hash → total.
    transitions: IntMap<(u64, i64), u32>,
    contexts: IntMap<u64, u32>,
    level: f64,
    scale: f64,
    sequence: Likelihood,
    deviation: Likelihood,
}

impl Default for Detector {
    fn default() -> Self {
        Self::new(DetectorConfig::default())
    }
}

impl Detector {
    /// A fresh detector.
    pub fn new(config: DetectorConfig) -> Self {
        Detector {
            sequence: Likelihood::new(config.short_window, config.history),
            deviation: Likelihood::new(config.short_window, config.history),
            warmup_values: Vec::with_capacity(config.warmup),
            seen: 0,
            step: 1.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            context: VecDeque::with_capacity(config.order + 1),
            transitions: IntMap::default(),
            contexts: IntMap::default(),
            level: 0.0,
            scale: 0.0,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Points seen.
    pub fn seen(&self) -> usize {
        self.seen
    }

    fn context_hash(&self) -> u64 {
        let mut h = IntHasher::default();
        for &l in &self.context {
            h.write_i64(l);
        }
        h.finish()
    }

    /// Scores the next point (`ts_ms` is the point's time; the detector only needs the order).
    /// A non-finite value scores 0 and is not learned.
    pub fn update(&mut self, _ts_ms: i64, value: f64) -> Score {
        if !value.is_finite() {
            return Score {
                value: 0.0,
                likelihood: 0.0,
                reason: Reason::Normal,
            };
        }
        self.seen += 1;
        if self.seen <= self.config.warmup.max(1) {
            self.warmup_values.push(value);
            self.min = self.min.min(value);
            self.max = self.max.max(value);
            if self.seen == self.config.warmup.max(1) {
                self.finish_warmup();
            }
            return Score {
                value: 0.0,
                likelihood: 0.0,
                reason: Reason::Warmup,
            };
        }
        let level = (value / self.step).floor() as i64;

        // Sequence surprise: how often `level` (or a neighbour, at half weight) followed this
        // context before.
        let ctx = self.context_hash();
        let total = self.contexts.get(&ctx).copied().unwrap_or(0);
        let seq_raw = if total == 0 {
            1.0
        } else {
            let count = |l: i64| f64::from(self.transitions.get(&(ctx, l)).copied().unwrap_or(0));
            let hits = count(level) + 0.5 * (count(level - 1) + count(level + 1));
            1.0 - (hits / f64::from(total)).min(1.0)
        };
        *self.transitions.entry((ctx, level)).or_insert(0) += 1;
        *self.contexts.entry(ctx).or_insert(0) += 1;
        self.context.push_back(level);
        if self.context.len() > self.config.order {
            self.context.pop_front();
        }

        // Deviation surprise: distance from the running level in running-scale units, squashed.
        let dist = (value - self.level).abs();
        let dev_raw = if self.scale > 0.0 {
            1.0 - (-dist / (3.0 * self.scale)).exp()
        } else {
            0.0
        };
        let a = self.config.level_alpha;
        self.level += a * (value - self.level);
        self.scale += a * (dist - self.scale);

        let l_seq = self.sequence.update(seq_raw);
        let l_dev = self.deviation.update(dev_raw);
        let (likelihood, mut reason) = if l_seq >= l_dev {
            (l_seq, Reason::UnusualSequence)
        } else {
            (l_dev, Reason::Deviation)
        };
        let l_seq = self.sequence.filter(l_seq);
        let l_dev = self.deviation.filter(l_dev);
        let mut score = log_likelihood(l_seq.max(l_dev));
        if score < 0.5 {
            reason = Reason::Normal;
        }

        let tolerance = self.config.spatial_tolerance * (self.max - self.min);
        if value > self.max + tolerance {
            score = 1.0;
            reason = Reason::NewHigh;
        } else if value < self.min - tolerance {
            score = 1.0;
            reason = Reason::NewLow;
        }
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        Score {
            value: score,
            likelihood,
            reason,
        }
    }

    fn finish_warmup(&mut self) {
        let n = self.warmup_values.len() as f64;
        let range = self.max - self.min;
        let magnitude = self.warmup_values.iter().map(|v| v.abs()).sum::<f64>() / n;
        self.step = (range / self.config.levels).max(magnitude * 1e-3).max(1e-9);
        self.level = self.warmup_values.iter().sum::<f64>() / n;
        self.scale = self
            .warmup_values
            .iter()
            .map(|v| (v - self.level).abs())
            .sum::<f64>()
            / n;
        for &v in &self.warmup_values.clone() {
            let level = (v / self.step).floor() as i64;
            let ctx = self.context_hash();
            *self.transitions.entry((ctx, level)).or_insert(0) += 1;
            *self.contexts.entry(ctx).or_insert(0) += 1;
            self.context.push_back(level);
            if self.context.len() > self.config.order {
                self.context.pop_front();
            }
        }
        self.warmup_values = Vec::new();
    }
}

/// Scores a whole series in order with a fresh detector (the batch path: `aya anomalies`).
pub fn detect_series(config: &DetectorConfig, timestamps: &[i64], values: &[f64]) -> Vec<Score> {
    let mut d = Detector::new(config.clone());
    timestamps
        .iter()
        .zip(values)
        .map(|(&t, &v)| d.update(t, v))
        .collect()
}
