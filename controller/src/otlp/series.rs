//! Per-series state shared by OTLP and remote-write: cumulative counters and
//! histograms are differenced into per-interval deltas (a value below the
//! previous one, or a new start time, is a reset: the new value counts from
//! zero), under a bound on the number of series kept; and quantiles are
//! interpolated from bucket counts.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// One histogram bucket: `(lower, upper]` holding `count` observations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Exclusive lower bound.
    pub lower: f64,
    /// Inclusive upper bound (may be `+inf`).
    pub upper: f64,
    /// Observations in the bucket.
    pub count: f64,
}

#[derive(Debug, Clone)]
enum Prev {
    Counter(f64),
    Buckets(Vec<Bucket>),
}

#[derive(Debug, Clone)]
struct Entry {
    start_ns: u64,
    last_ms: i64,
    prev: Prev,
}

/// Why a point could not be differenced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// The cardinality bound is reached.
    #[error("too many series: the limit of {0} series is reached")]
    TooMany(usize),
    /// The timestamp is not after the previous point of the series.
    #[error("timestamp {got} ms is not after the series' previous point at {prev} ms")]
    OutOfOrder {
        /// This point's timestamp.
        got: i64,
        /// The previous point's timestamp.
        prev: i64,
    },
}

/// Differencing state of cumulative series, keyed by a series hash.
#[derive(Debug)]
pub struct SeriesTable {
    entries: HashMap<u64, Entry>,
    max_series: usize,
    idle_ms: i64,
}

/// A stable hash of a series identity (its parts in order).
pub fn series_key<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
        0xffu8.hash(&mut h);
    }
    h.finish()
}

impl SeriesTable {
    /// At most `max_series` series; idle ones (no point for `idle_ms`) are
    /// evicted when the table is full.
    pub fn new(max_series: usize, idle_ms: i64) -> Self {
        SeriesTable {
            entries: HashMap::new(),
            max_series: max_series.max(1),
            idle_ms,
        }
    }

    /// Number of series kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no series is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The timestamp (ms) of the series' previous point, if it has one.
    pub fn last_ms(&self, key: u64) -> Option<i64> {
        self.entries.get(&key).map(|e| e.last_ms)
    }

    /// Record a point of a delta series at `ts_ms` and return the time of
    /// its previous point (`None` for the first one, an out-of-order point,
    /// or when the table is full: deltas need no state, this is only the
    /// fallback interval when a point's start time is unusable).
    pub fn touch(&mut self, key: u64, ts_ms: i64) -> Option<i64> {
        if let Some(e) = self.entries.get_mut(&key) {
            let prev = e.last_ms;
            if ts_ms <= prev {
                return None;
            }
            e.last_ms = ts_ms;
            return Some(prev);
        }
        if self.room(ts_ms).is_ok() {
            self.entries.insert(
                key,
                Entry {
                    start_ns: 0,
                    last_ms: ts_ms,
                    prev: Prev::Counter(f64::NAN),
                },
            );
        }
        None
    }

    fn room(&mut self, now_ms: i64) -> Result<(), SeriesError> {
        if self.entries.len() < self.max_series {
            return Ok(());
        }
        let idle = self.idle_ms;
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.last_ms) < idle);
        if self.entries.len() < self.max_series {
            Ok(())
        } else {
            Err(SeriesError::TooMany(self.max_series))
        }
    }

    fn check(&self, key: u64, ts_ms: i64) -> Result<Option<&Entry>, SeriesError> {
        match self.entries.get(&key) {
            Some(e) if ts_ms <= e.last_ms => Err(SeriesError::OutOfOrder {
                got: ts_ms,
                prev: e.last_ms,
            }),
            e => Ok(e),
        }
    }

    /// A cumulative counter's increase since its previous point; `None` for
    /// the first point of a series (its baseline). `start_ns` is the series'
    /// start time (0 when unknown).
    pub fn counter(
        &mut self,
        key: u64,
        start_ns: u64,
        ts_ms: i64,
        value: f64,
    ) -> Result<Option<f64>, SeriesError> {
        let delta = match self.check(key, ts_ms)? {
            Some(e) => {
                let prev = match e.prev {
                    Prev::Counter(v) => v,
                    Prev::Buckets(_) => f64::NAN,
                };
                let restarted = start_ns != 0 && e.start_ns != 0 && start_ns != e.start_ns;
                Some(if restarted || prev.is_nan() || value < prev {
                    value
                } else {
                    value - prev
                })
            }
            None => {
                self.room(ts_ms)?;
                None
            }
        };
        self.entries.insert(
            key,
            Entry {
                start_ns,
                last_ms: ts_ms,
                prev: Prev::Counter(value),
            },
        );
        Ok(delta)
    }

    /// A cumulative histogram's bucket counts since its previous point;
    /// `None` for the first point. Buckets are matched by their bounds; a
    /// count below the previous one, a vanished bucket or a new start time
    /// is a reset (the current counts are the delta).
    pub fn histogram(
        &mut self,
        key: u64,
        start_ns: u64,
        ts_ms: i64,
        buckets: Vec<Bucket>,
    ) -> Result<Option<Vec<Bucket>>, SeriesError> {
        let delta = match self.check(key, ts_ms)? {
            Some(e) => Some(match &e.prev {
                Prev::Buckets(prev)
                    if !(start_ns != 0 && e.start_ns != 0 && start_ns != e.start_ns) =>
                {
                    difference(prev, &buckets).unwrap_or_else(|| buckets.clone())
                }
                _ => buckets.clone(),
            }),
            None => {
                self.room(ts_ms)?;
                None
            }
        };
        self.entries.insert(
            key,
            Entry {
                start_ns,
                last_ms: ts_ms,
                prev: Prev::Buckets(buckets),
            },
        );
        Ok(delta)
    }
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

/// `cur - prev` bucket by bucket, or `None` when it is a reset.
fn difference(prev: &[Bucket], cur: &[Bucket]) -> Option<Vec<Bucket>> {
    let mut out = Vec::with_capacity(cur.len());
    let mut matched = 0usize;
    for b in cur {
        let p = prev
            .iter()
            .find(|p| same(p.lower, b.lower) && same(p.upper, b.upper));
        let before = match p {
            Some(p) => {
                matched += 1;
                p.count
            }
            None => 0.0,
        };
        if b.count < before {
            return None;
        }
        out.push(Bucket {
            count: b.count - before,
            ..*b
        });
    }
    // A previous bucket with observations that is gone: re-bucketed.
    let lost = prev.iter().any(|p| {
        p.count > 0.0
            && !cur
                .iter()
                .any(|b| same(p.lower, b.lower) && same(p.upper, b.upper))
    });
    if lost || (matched == 0 && !prev.is_empty() && prev.iter().any(|p| p.count > 0.0)) {
        return None;
    }
    Some(out)
}

/// Buckets of an explicit-bounds histogram: `counts[i]` is in
/// `(bounds[i-1], bounds[i]]`, the first from 0 (or `-inf` when the first
/// bound is negative), the last to `+inf`. `None` when the lengths disagree
/// or the bounds are not increasing.
pub fn explicit_buckets(bounds: &[f64], counts: &[f64]) -> Option<Vec<Bucket>> {
    if counts.len() != bounds.len() + 1
        || bounds.windows(2).any(|w| w[0] >= w[1])
        || bounds.iter().any(|b| b.is_nan())
    {
        return None;
    }
    let mut out = Vec::with_capacity(counts.len());
    let mut lower = match bounds.first() {
        Some(&b) if b < 0.0 => f64::NEG_INFINITY,
        _ => 0.0,
    };
    for (i, &count) in counts.iter().enumerate() {
        let upper = bounds.get(i).copied().unwrap_or(f64::INFINITY);
        out.push(Bucket {
            lower,
            upper,
            count,
        });
        lower = upper;
    }
    Some(out)
}

/// Buckets of an exponential histogram's positive range: bucket `offset + i`
/// is `(base^(offset+i), base^(offset+i+1)]` with `base = 2^(2^-scale)`;
/// `zero_count` goes in `[0, zero_threshold]`. `None` for a scale outside
/// the OTLP range `-10..=20`.
pub fn exponential_buckets(
    scale: i32,
    offset: i32,
    counts: &[f64],
    zero_count: f64,
    zero_threshold: f64,
) -> Option<Vec<Bucket>> {
    if !(-10..=20).contains(&scale) {
        return None;
    }
    let base = 2f64.powf(2f64.powi(-scale));
    let mut out = Vec::with_capacity(counts.len() + 1);
    if zero_count > 0.0 {
        out.push(Bucket {
            lower: 0.0,
            upper: zero_threshold.max(0.0),
            count: zero_count,
        });
    }
    for (i, &count) in counts.iter().enumerate() {
        let idx = i64::from(offset) + i as i64;
        let lower = base.powf(idx as f64);
        let upper = base.powf((idx + 1) as f64);
        if !(lower.is_finite() && upper.is_finite()) {
            return None;
        }
        out.push(Bucket {
            lower,
            upper,
            count,
        });
    }
    Some(out)
}

/// Total observations in `buckets`.
pub fn total(buckets: &[Bucket]) -> f64 {
    buckets.iter().map(|b| b.count).sum()
}

/// The `q` quantile (0..=1), interpolated linearly inside the bucket holding
/// rank `q * total` (buckets sorted by upper bound; overlapping buckets from
/// merged series are approximated). An observation in the `+inf` bucket is
/// reported at that bucket's lower bound, as Prometheus' `histogram_quantile`
/// does. `None` when the buckets are empty.
pub fn quantile(buckets: &[Bucket], q: f64) -> Option<f64> {
    let mut sorted: Vec<Bucket> = buckets.iter().copied().filter(|b| b.count > 0.0).collect();
    sorted.sort_by(|a, b| {
        a.upper
            .total_cmp(&b.upper)
            .then(a.lower.total_cmp(&b.lower))
    });
    let n = total(&sorted);
    if n.is_nan() || n <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * n;
    let mut seen = 0.0;
    for b in &sorted {
        if seen + b.count >= rank {
            if b.upper.is_infinite() {
                return Some(b.lower.max(0.0));
            }
            let lower = if b.lower.is_finite() {
                b.lower
            } else {
                b.upper.min(0.0)
            };
            let frac = ((rank - seen) / b.count).clamp(0.0, 1.0);
            return Some(lower + (b.upper - lower) * frac);
        }
        seen += b.count;
    }
    sorted.last().map(|b| {
        if b.upper.is_finite() {
            b.upper
        } else {
            b.lower
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_baseline_delta_and_reset() {
        let mut t = SeriesTable::new(10, 60_000);
        assert_eq!(t.counter(1, 5, 1000, 100.0), Ok(None));
        assert_eq!(t.counter(1, 5, 2000, 150.0), Ok(Some(50.0)));
        // A value below the previous one: the process restarted.
        assert_eq!(t.counter(1, 5, 3000, 30.0), Ok(Some(30.0)));
        // A new start time with a higher value is a restart too.
        assert_eq!(t.counter(1, 9, 4000, 40.0), Ok(Some(40.0)));
        assert_eq!(
            t.counter(1, 9, 4000, 41.0),
            Err(SeriesError::OutOfOrder {
                got: 4000,
                prev: 4000
            })
        );
    }

    #[test]
    fn cardinality_bound_evicts_idle_then_rejects() {
        let mut t = SeriesTable::new(2, 10_000);
        t.counter(1, 0, 1000, 1.0).unwrap();
        t.counter(2, 0, 1000, 1.0).unwrap();
        assert_eq!(t.counter(3, 0, 2000, 1.0), Err(SeriesError::TooMany(2)));
        // Once the old ones are idle they make room.
        assert_eq!(t.counter(3, 0, 20_000, 1.0), Ok(None));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn histogram_difference_and_quantiles() {
        let bounds = [0.1, 0.2, 0.4];
        let mut t = SeriesTable::new(10, 60_000);
        let a = explicit_buckets(&bounds, &[10.0, 0.0, 0.0, 0.0]).unwrap();
        let b = explicit_buckets(&bounds, &[10.0, 50.0, 50.0, 0.0]).unwrap();
        assert_eq!(t.histogram(7, 0, 1000, a), Ok(None));
        let d = t.histogram(7, 0, 2000, b).unwrap().unwrap();
        assert_eq!(total(&d), 100.0);
        // 50 in (0.1, 0.2], 50 in (0.2, 0.4]: the median is 0.2, p90 0.36.
        assert!((quantile(&d, 0.5).unwrap() - 0.2).abs() < 1e-12);
        assert!((quantile(&d, 0.9).unwrap() - 0.36).abs() < 1e-12);
        // Reset: counts drop.
        let c = explicit_buckets(&bounds, &[1.0, 0.0, 0.0, 0.0]).unwrap();
        let d = t.histogram(7, 0, 3000, c).unwrap().unwrap();
        assert_eq!(total(&d), 1.0);
        assert!((quantile(&d, 0.5).unwrap() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn bad_buckets_are_refused() {
        assert!(explicit_buckets(&[0.2, 0.1], &[1.0, 1.0, 1.0]).is_none());
        assert!(explicit_buckets(&[0.1], &[1.0]).is_none());
        assert!(exponential_buckets(99, 0, &[1.0], 0.0, 0.0).is_none());
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn exponential_quantile() {
        // scale 0: base 2, offset -4: buckets (1/16,1/8], (1/8,1/4].
        let b = exponential_buckets(0, -4, &[0.0, 10.0], 0.0, 0.0).unwrap();
        let p50 = quantile(&b, 0.5).unwrap();
        assert!((p50 - 0.1875).abs() < 1e-12, "{p50}");
        // The +inf bucket reports its lower bound.
        let e = explicit_buckets(&[1.0], &[0.0, 3.0]).unwrap();
        assert_eq!(quantile(&e, 0.99), Some(1.0));
    }
}
