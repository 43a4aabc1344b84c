//! Robustness to incidents: short bursts (outliers) in the training data.
//!
//! Monitoring series contain incidents and scheduled events (a deploy, an
//! outage, a football match) that last minutes to hours and are many times
//! the usual level. Models with a seasonal or autoregressive structure learn
//! them as part of the pattern and repeat them a season later, which is the
//! worst thing a capacity forecast can do the day after an incident. The
//! baselines (naive, seasonal naive) are left as they are; the structured
//! models are fitted on a copy of the series in which such bursts are
//! winsorised by a *causal* Hampel filter: each value is compared with the
//! median and the MAD of the season before it (one full cycle, so the
//! ordinary daily swing is inside that spread), and pulled back to
//! median ± [`HAMPEL_K`] robust standard deviations when it is further out.
//!
//! Causal means the cleaned value at `t` depends only on values up to `t`,
//! so cleaning a whole series once and slicing it at validation origins
//! never lets a backtest see its test region.

/// Hampel's threshold in robust standard deviations (1.4826 × MAD): the
/// conventional choice for the Hampel identifier (three sigma).
pub const HAMPEL_K: f64 = 3.0;

/// Shortest window the filter runs with (shorter seasons are not cleaned:
/// a median of a handful of points is no reference).
pub const MIN_WINDOW: usize = 24;

/// Consistency constant of the MAD for the normal distribution.
const MAD_TO_SD: f64 = 1.482_6;

/// Median of `v` (reorders it); `None` when empty.
fn median_in_place(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let (_, m, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *m;
    if n % 2 == 1 {
        return Some(hi);
    }
    let lo = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(0.5 * (lo + hi))
}

/// The series with bursts winsorised by a causal Hampel filter over the
/// trailing `window` values (see the module docs). Values in the first
/// `window` points, and every value when `window < MIN_WINDOW`, are kept.
/// The reference (median and MAD of the trailing window) is refreshed every
/// `window / 24` steps, which bounds the cost at about 24 medians per window.
pub fn clean_outliers(y: &[f64], window: usize) -> Vec<f64> {
    let mut out = y.to_vec();
    if window < MIN_WINDOW || y.len() <= window {
        return out;
    }
    let stride = (window / 24).max(1);
    let mut scratch = Vec::with_capacity(window);
    let (mut med, mut band) = (0.0, f64::INFINITY);
    for t in window..y.len() {
        if (t - window).is_multiple_of(stride) {
            scratch.clear();
            scratch.extend_from_slice(&y[t - window..t]);
            let Some(m) = median_in_place(&mut scratch) else {
                continue;
            };
            scratch.iter_mut().for_each(|v| *v = (*v - m).abs());
            let mad = median_in_place(&mut scratch).unwrap_or(0.0);
            med = m;
            // A flat window (MAD 0) gives no scale: leave values alone.
            band = if mad > 0.0 {
                HAMPEL_K * MAD_TO_SD * mad
            } else {
                f64::INFINITY
            };
        }
        let v = y[t];
        if v > med + band {
            out[t] = med + band;
        } else if v < med - band {
            out[t] = med - band;
        }
    }
    out
}

/// The last this many values are never cleaned for fitting: at the end of
/// the data a causal filter cannot tell a burst from a new level (it has
/// neither ended nor persisted), and the short horizons (the first 12
/// steps, the forecaster's short band) need the current state.
pub const KEEP_RAW: usize = 12;

/// `cleaned` with its last [`KEEP_RAW`] values replaced by those of `raw`
/// (both aligned at their ends), written into `buf`.
pub fn with_recent_raw<'a>(cleaned: &[f64], raw: &[f64], buf: &'a mut Vec<f64>) -> &'a [f64] {
    buf.clear();
    buf.extend_from_slice(cleaned);
    let k = KEEP_RAW.min(buf.len()).min(raw.len());
    let (nb, nr) = (buf.len(), raw.len());
    buf[nb - k..].copy_from_slice(&raw[nr - k..]);
    buf
}

/// Whether the filter changed any of the last [`KEEP_RAW`] values
/// (`cleaned` and `raw` aligned at their ends).
pub fn recent_clipped(cleaned: &[f64], raw: &[f64]) -> bool {
    cleaned
        .iter()
        .rev()
        .zip(raw.iter().rev())
        .take(KEEP_RAW)
        .any(|(c, r)| c != r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use rand_distr::{Distribution, Normal};

    /// A daily sine (period `p`) around 100 with Gaussian noise of sd 2.
    fn daily(n: usize, p: usize, seed: u64) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let noise = Normal::new(0.0, 2.0).unwrap();
        (0..n)
            .map(|t| {
                100.0
                    + 30.0 * (std::f64::consts::TAU * t as f64 / p as f64).sin()
                    + noise.sample(&mut rng)
            })
            .collect()
    }

    fn changed(y: &[f64], c: &[f64]) -> Vec<usize> {
        (0..y.len()).filter(|&t| y[t] != c[t]).collect()
    }

    #[test]
    fn a_stationary_seasonal_series_is_left_alone() {
        let y = daily(24 * 20, 24, 1);
        let c = clean_outliers(&y, 24);
        assert!(changed(&y, &c).is_empty(), "{:?}", changed(&y, &c));
    }

    #[test]
    fn bursts_are_detected_and_winsorised_causally() {
        let mut y = daily(24 * 20, 24, 2);
        // A two-hour incident at ten times the level on day 12.
        for v in &mut y[12 * 24 + 20..12 * 24 + 22] {
            *v *= 10.0;
        }
        let c = clean_outliers(&y, 24);
        assert_eq!(changed(&y, &c), vec![12 * 24 + 20, 12 * 24 + 21]);
        // Pulled back to the edge of the ordinary spread (median 100, MAD
        // of a sine of amplitude 30 ≈ 21, so about 100 + 3 × 1.48 × 21),
        // far below the burst (≈ 700).
        assert!(
            c[12 * 24 + 20..12 * 24 + 22].iter().all(|&v| v < 250.0),
            "{:?}",
            &c[12 * 24 + 20..12 * 24 + 22]
        );
        // Causal: cleaning a prefix gives the prefix of the cleaned series.
        let m = 12 * 24 + 21;
        assert_eq!(clean_outliers(&y[..m], 24), c[..m]);
        // Too short a window: nothing is cleaned.
        assert_eq!(clean_outliers(&y, MIN_WINDOW - 1), y);
    }

    #[test]
    fn a_level_shift_with_a_broken_season_is_clipped_only_until_the_window_catches_up() {
        // Ten seasonal days, then the pattern collapses to a flat level
        // three times higher (a new regime, not a burst).
        let mut y = daily(24 * 10, 24, 3);
        y.extend(std::iter::repeat_n(300.0, 24 * 3));
        let c = clean_outliers(&y, 24);
        let ch = changed(&y, &c);
        // The shift is detected at once ...
        assert_eq!(ch.first(), Some(&(24 * 10)), "{ch:?}");
        // ... and followed within one window: the new level is kept.
        assert!(ch.iter().all(|&t| t < 24 * 11), "{ch:?}");
        assert_eq!(c[24 * 11..], y[24 * 11..]);
        // The last values of a shift in progress are clipped, and
        // `with_recent_raw` restores them for the short horizons.
        let end = 24 * 10 + 6;
        let (raw, cut) = (&y[..end], &c[..end]);
        assert!(recent_clipped(cut, raw));
        let mut buf = Vec::new();
        let r = with_recent_raw(cut, raw, &mut buf);
        assert_eq!(r[end - KEEP_RAW..], raw[end - KEEP_RAW..]);
        assert_eq!(r[..end - KEEP_RAW], cut[..end - KEEP_RAW]);
        assert!(!recent_clipped(&c[..24 * 12], &y[..24 * 12]));
    }
}
