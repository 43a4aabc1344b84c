//! Resampling to a fixed interval.
//!
//! Models assume one value per step. Bucketing to a fixed grid aligned on the unix
//! epoch (so two series resampled to the same interval line up) with the mean of
//! each bucket handles faster or jittery sampling; empty buckets between samples
//! are filled by linear interpolation between the neighbouring buckets, which is the
//! least surprising fill for rates and utilisations. Nothing is extrapolated: the
//! grid runs from the first to the last non-empty bucket.

use std::path::Path;

use super::Series;
use super::error::DataError;
use super::quality::ResampleReport;

/// Most points a resampled series may have (guards against `--resample 1` on a year).
pub const MAX_RESAMPLED_POINTS: u64 = 20_000_000;

/// Resample `series` to `interval_ms` (bucket means, linear interpolation across empty
/// buckets). `path` is only used in messages.
pub fn resample(path: &Path, series: Series, interval_ms: i64) -> Result<Series, DataError> {
    resample_with(path, series, interval_ms, Aggregate::Mean)
}

/// How samples falling in one resampling bucket are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    /// Mean of the bucket; empty buckets are linearly interpolated (gauges, rates). Default.
    #[default]
    Mean,
    /// Sum of the bucket; empty buckets are 0 (per-interval counts re-bucketed).
    Sum,
    /// Number of rows in the bucket; empty buckets are 0 (event traces -> events per
    /// bucket; load them with [`super::Duplicates::KeepAll`] so that simultaneous events
    /// all count).
    Count,
}

/// [`resample`] with a choice of aggregation.
pub fn resample_with(
    path: &Path,
    series: Series,
    interval_ms: i64,
    aggregate: Aggregate,
) -> Result<Series, DataError> {
    if interval_ms <= 0 {
        return Err(DataError::BadOption(format!(
            "resample interval must be positive, got {interval_ms} ms"
        )));
    }
    let (Some(&first), Some(&last)) = (series.timestamps.first(), series.timestamps.last()) else {
        return Ok(series);
    };
    let b0 = first.div_euclid(interval_ms);
    let b1 = last.div_euclid(interval_ms);
    let points = u64::try_from(b1 - b0 + 1).unwrap_or(u64::MAX);
    if points > MAX_RESAMPLED_POINTS {
        return Err(DataError::ResampleTooLarge {
            path: path.to_path_buf(),
            interval_ms,
            points,
            limit: MAX_RESAMPLED_POINTS,
        });
    }
    let n = points as usize;
    let mut sum = vec![0.0f64; n];
    let mut count = vec![0u32; n];
    for (t, v) in series.timestamps.iter().zip(&series.values) {
        // Timestamps are sorted and within [first, last], so the index is in range.
        let k = (t.div_euclid(interval_ms) - b0) as usize;
        if let (Some(s), Some(c)) = (sum.get_mut(k), count.get_mut(k)) {
            *s += v;
            *c += 1;
        }
    }
    let mut values = vec![0.0f64; n];
    let mut interpolated = 0usize;
    let mut merged = 0usize;
    match aggregate {
        Aggregate::Sum | Aggregate::Count => {
            for ((v, c), s) in values.iter_mut().zip(&count).zip(&sum) {
                merged += usize::from(*c > 1);
                *v = if aggregate == Aggregate::Count {
                    f64::from(*c)
                } else {
                    *s
                };
            }
        }
        Aggregate::Mean => {
            let mut prev: Option<usize> = None;
            for k in 0..n {
                if count[k] == 0 {
                    continue;
                }
                if count[k] > 1 {
                    merged += 1;
                }
                values[k] = sum[k] / f64::from(count[k]);
                if let Some(p) = prev {
                    let (vp, vk) = (values[p], values[k]);
                    let span = (k - p) as f64;
                    for (j, slot) in values.iter_mut().enumerate().take(k).skip(p + 1) {
                        *slot = vp + (vk - vp) * ((j - p) as f64 / span);
                        interpolated += 1;
                    }
                }
                prev = Some(k);
            }
        }
    }
    let timestamps = (0..n as i64).map(|k| (b0 + k) * interval_ms).collect();
    let mut report = series.report;
    report.resampled = Some(ResampleReport {
        interval_ms,
        points: n,
        interpolated,
        merged,
    });
    Ok(Series {
        name: series.name,
        timestamps,
        values,
        interval_ms,
        report,
    })
}

/// Insert the samples missing from a regular series (the gaps of its report), with
/// `value`. For counts, a missing step usually means "nothing happened" (e.g. a minute
/// without requests in a log aggregation), so `fill_gaps(s, 0.0)` is the right repair
/// there, while [`resample`] interpolates. Steps off the grid are left as they are.
pub fn fill_gaps(series: Series, value: f64) -> Series {
    let step = series.interval_ms;
    if step <= 0 || series.report.gaps.is_empty() {
        return series;
    }
    let extra: usize = series.report.gaps.iter().map(|g| g.missing).sum();
    let mut timestamps = Vec::with_capacity(series.len() + extra);
    let mut values = Vec::with_capacity(series.len() + extra);
    let mut prev: Option<i64> = None;
    for (t, v) in series.timestamps.iter().zip(&series.values) {
        if let Some(p) = prev {
            let mut next = p + step;
            while next < *t && (t - next) % step == 0 {
                timestamps.push(next);
                values.push(value);
                next += step;
            }
        }
        timestamps.push(*t);
        values.push(*v);
        prev = Some(*t);
    }
    Series {
        timestamps,
        values,
        ..series
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_gaps_inserts_constant_steps() {
        let s = Series::from_parts(
            "x",
            vec![0, 60_000, 240_000, 300_000, 330_000],
            vec![1.0, 2.0, 3.0, 4.0, 5.0],
        )
        .expect("valid");
        let f = fill_gaps(s, 0.0);
        assert_eq!(
            f.timestamps,
            vec![0, 60_000, 120_000, 180_000, 240_000, 300_000, 330_000]
        );
        assert_eq!(f.values, vec![1.0, 2.0, 0.0, 0.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn means_and_interpolation() {
        // 0 s: 1, 30 s: 3 (same 60 s bucket); 120 s: 10; bucket 60 s is empty.
        let s =
            Series::from_parts("x", vec![0, 30_000, 120_000], vec![1.0, 3.0, 10.0]).expect("valid");
        let r = resample(Path::new("x"), s, 60_000).expect("resamples");
        assert_eq!(r.timestamps, vec![0, 60_000, 120_000]);
        assert_eq!(r.values, vec![2.0, 6.0, 10.0]);
        assert_eq!(r.interval_ms, 60_000);
        let rep = r.report.resampled.expect("report");
        assert_eq!((rep.points, rep.interpolated, rep.merged), (3, 1, 1));
    }

    #[test]
    fn sum_and_count_fill_with_zero() {
        let s =
            Series::from_parts("x", vec![0, 30_000, 150_000], vec![1.0, 3.0, 10.0]).expect("valid");
        let sum = resample_with(Path::new("x"), s.clone(), 60_000, Aggregate::Sum).expect("sum");
        assert_eq!(sum.values, vec![4.0, 0.0, 10.0]);
        let count = resample_with(Path::new("x"), s, 60_000, Aggregate::Count).expect("count");
        assert_eq!(count.values, vec![2.0, 0.0, 1.0]);
        assert_eq!(count.report.resampled.map(|r| r.interpolated), Some(0));
    }

    #[test]
    fn grid_is_epoch_aligned_and_bounded() {
        let s = Series::from_parts("x", vec![61_000, 179_000], vec![1.0, 2.0]).expect("valid");
        let r = resample(Path::new("x"), s.clone(), 60_000).expect("resamples");
        assert_eq!(r.timestamps, vec![60_000, 120_000]);
        assert!(matches!(
            resample(Path::new("x"), s.clone(), 0),
            Err(DataError::BadOption(_))
        ));
        let far =
            Series::from_parts("x", vec![0, 1_000_000_000_000], vec![1.0, 2.0]).expect("valid");
        assert!(matches!(
            resample(Path::new("x"), far, 1),
            Err(DataError::ResampleTooLarge { .. })
        ));
    }
}
