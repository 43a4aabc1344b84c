//! Turning target shares into published integer weights: smoothing, a bounded
//! change per step, a floor, and the conversion shared by every policy.
//!
//! Internally weights are `f64` on a scale where an average backend has
//! [`WEIGHT_SCALE`]; what data planes get is the rounded value, never below
//! [`WEIGHT_FLOOR`] (Envoy and gRPC reject weight 0: drain by removal).

use std::collections::BTreeMap;

use crate::types::BackendWeight;

/// Weight of an average backend. 100 gives 1 % resolution, far finer than the
/// estimates behind it, while staying far from `u32` overflow.
pub const WEIGHT_SCALE: f64 = 100.0;

/// Smallest weight ever published.
pub const WEIGHT_FLOOR: u32 = 1;

/// Publish `w` as an integer weight ≥ [`WEIGHT_FLOOR`]. Non-finite values map
/// to the floor (they never should occur; this is the last line of defence).
pub fn to_published(w: f64) -> u32 {
    if !w.is_finite() {
        return WEIGHT_FLOOR;
    }
    let r = w.round().clamp(WEIGHT_FLOOR as f64, u32::MAX as f64 / 4.0);
    r as u32
}

/// Equal weights for `names`, in order.
pub fn equal_weights<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<BackendWeight> {
    names
        .into_iter()
        .map(|b| BackendWeight {
            backend: b.to_string(),
            weight: WEIGHT_SCALE as u32,
        })
        .collect()
}

/// Smoothed, step-bounded weights.
///
/// `targets` are the desired weights for this tick (any positive scale);
/// `previous` holds last tick's internal weights. For backends present in
/// both, the result moves from the previous weight towards the target by
/// `alpha`, and never by more than a factor `1 + max_step` either way. New
/// backends start at the mean previous weight (or the target when nothing
/// was published before). Returns the new internal weights, in the order of
/// `targets`.
pub fn smooth_bounded(
    targets: &[(String, f64)],
    previous: &BTreeMap<String, f64>,
    alpha: f64,
    max_step: f64,
) -> Vec<(String, f64)> {
    let kept: Vec<f64> = targets
        .iter()
        .filter_map(|(b, _)| previous.get(b).copied())
        .collect();
    // Targets are rescaled so that, over the backends that stay, they sum to
    // what those backends had: a pure re-split, so the bound is meaningful.
    let kept_prev_sum: f64 = kept.iter().sum();
    let kept_target_sum: f64 = targets
        .iter()
        .filter(|(b, _)| previous.contains_key(b))
        .map(|(_, t)| t.max(0.0))
        .sum();
    let target_sum: f64 = targets.iter().map(|(_, t)| t.max(0.0)).sum();
    let scale = if kept.is_empty() || kept_target_sum <= 0.0 {
        if target_sum > 0.0 {
            WEIGHT_SCALE * targets.len() as f64 / target_sum
        } else {
            1.0
        }
    } else {
        kept_prev_sum / kept_target_sum
    };
    let mean_prev = if kept.is_empty() {
        WEIGHT_SCALE
    } else {
        kept_prev_sum / kept.len() as f64
    };
    let floor = WEIGHT_FLOOR as f64;
    targets
        .iter()
        .map(|(b, t)| {
            let target = (t.max(0.0) * scale).max(floor);
            let w = match previous.get(b) {
                Some(&p) if p.is_finite() && p >= floor => {
                    let moved = alpha * target + (1.0 - alpha) * p;
                    moved
                        .clamp(p / (1.0 + max_step), p * (1.0 + max_step))
                        .max(floor)
                }
                _ => {
                    if kept.is_empty() {
                        target
                    } else {
                        mean_prev.max(floor)
                    }
                }
            };
            (b.clone(), if w.is_finite() { w } else { mean_prev })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_weights_have_a_floor() {
        assert_eq!(to_published(0.0), 1);
        assert_eq!(to_published(-5.0), 1);
        assert_eq!(to_published(f64::NAN), 1);
        assert_eq!(to_published(149.6), 150);
    }

    #[test]
    fn step_is_bounded_and_moves_towards_target() {
        let prev: BTreeMap<String, f64> =
            [("a".to_string(), 100.0), ("b".to_string(), 100.0)].into();
        let out = smooth_bounded(&[("a".into(), 1.0), ("b".into(), 9.0)], &prev, 1.0, 0.5);
        assert_eq!(out[0].1, 100.0 / 1.5);
        assert_eq!(out[1].1, 150.0);
    }

    #[test]
    fn first_tick_takes_targets_on_the_weight_scale() {
        let out = smooth_bounded(
            &[("a".into(), 1.0), ("b".into(), 3.0)],
            &BTreeMap::new(),
            0.5,
            1.0,
        );
        assert_eq!(out[0].1, 50.0);
        assert_eq!(out[1].1, 150.0);
    }
}
