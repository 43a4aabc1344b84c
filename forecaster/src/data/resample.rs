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

#[cfg(test)]
mod tests {
    use super::*;

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
