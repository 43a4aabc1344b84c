//! Step 4b: the data plane's own outlier detection, within a blast-radius
//! bound.
//!
//! A data plane with passive outlier detection (Envoy's consecutive-5xx
//! ejection) drops a failing host after its first few errors, seconds before
//! the failure shows in the telemetry Aya acts on; without it, a weighted
//! least-request data plane even favours a host that fails fast (it never has
//! requests in flight). But an ejection moves the host's traffic onto the
//! rest, and Envoy always may eject one host: on a pool that cannot carry the
//! loss of its largest host, detection turns a partial failure into an
//! overload of everything. So the engine publishes detection only while the
//! healthy hosts left after ejecting the `k ≥ 1` largest would run at no more
//! than [`AyaConfig::outlier_detection_utilization`] at the demand, with
//! `max_ejection_percent` allowing exactly those `k`. Every change is a CDS
//! update, which rebuilds the data plane's cluster, so the setting moves
//! rarely: a budget is cut at once only when the hosts left would pass
//! halfway from that utilisation to saturation, and raised (or turned on
//! again) only once the current setting has stood one `base_ejection_time`.
//!
//! [`AyaConfig::outlier_detection_utilization`]: crate::AyaConfig::outlier_detection_utilization

use super::AyaPolicy;
use crate::types::{BackendObservation, Explanation, OutlierDetection, TickInput};

impl AyaPolicy {
    /// The outlier detection to publish for `serving` (the healthy,
    /// non-ejected backends) at `demand` requests per second; `None` when
    /// the engine does not manage it (`outlier_detection_5xx = 0`).
    pub(super) fn outlier_detection(
        &mut self,
        input: &TickInput<'_>,
        serving: &[&BackendObservation],
        demand: f64,
        stale: bool,
        ex: &mut Explanation,
    ) -> Option<OutlierDetection> {
        let c = self.cfg.get();
        if c.outlier_detection_5xx == 0 {
            return None;
        }
        let n = serving.len();
        // Full capacities of the serving hosts; without a model for every
        // one of them (or on stale telemetry) the previous choice stands.
        let caps: Option<Vec<f64>> = if stale {
            None
        } else {
            serving
                .iter()
                .map(|b| self.full_capacity(&b.backend, input.now, 0.0))
                .collect()
        };
        let keep_u = (1.0 + c.outlier_detection_utilization) / 2.0;
        // (losable at the turn-on level, at the keep level)
        let losable = caps
            .filter(|_| n >= 2 && demand.is_finite())
            .map(|mut caps| {
                // Largest first.
                caps.sort_by(|a, b| b.total_cmp(a));
                let total: f64 = caps.iter().sum();
                let demand = demand.max(0.0);
                // Largest k (at most n − 1) whose loss leaves `demand` at or
                // below utilisation `u` on the rest.
                let losable = |u: f64| {
                    let mut left = total;
                    let mut k = 0;
                    for &cap in &caps[..n - 1] {
                        left -= cap;
                        if demand > u * left {
                            break;
                        }
                        k += 1;
                    }
                    k
                };
                (losable(c.outlier_detection_utilization), losable(keep_u))
            });
        let current = self.od_published;
        // Hosts Envoy may eject under the published setting: while
        // `ejected × 100 / n < max_ejection_percent`, and always one.
        let allowed = ejectable(&current, n);
        let setting = |k: usize| {
            if k == 0 {
                OutlierDetection {
                    base_ejection_time: c.base_ejection_time,
                    ..OutlierDetection::OFF
                }
            } else {
                // The floor allows exactly k of up to 100 hosts.
                OutlierDetection {
                    consecutive_5xx: c.outlier_detection_5xx,
                    base_ejection_time: c.base_ejection_time,
                    max_ejection_percent: (100.0 * k as f64 / n as f64).floor(),
                }
            }
        };
        // Every change is a CDS update (the data plane rebuilds the
        // cluster): a budget the pool can no longer carry is cut at once,
        // a larger one waits until the setting has stood one ejection time.
        let settled = self
            .od_changed_at
            .is_none_or(|t| input.now - t >= c.base_ejection_time);
        let next = match losable {
            _ if n < 2 && current.enabled() => setting(0),
            Some((_, keep)) if allowed > keep => setting(keep),
            Some((on, _)) if on > allowed && settled => setting(on),
            _ => current,
        };
        if next != current {
            self.od_published = next;
            self.od_changed_at = Some(input.now);
        }
        if next.enabled() {
            let k = ejectable(&next, n);
            ex.rules.push(format!(
                "data-plane outlier detection: consecutive_5xx {} on, up to {k} of {n} hosts ({:.0} %)",
                next.consecutive_5xx, next.max_ejection_percent
            ));
        } else {
            ex.rules.push(format!(
                "data-plane outlier detection off: the pool cannot lose its largest host at {demand:.1} rps (or no capacity model yet)"
            ));
        }
        Some(next)
    }
}

/// Hosts of `n` that Envoy ejects at most under `od`: while `ejected × 100 / n`
/// is below `max_ejection_percent`, and always one (0 when detection is off).
fn ejectable(od: &OutlierDetection, n: usize) -> usize {
    if od.enabled() {
        ((od.max_ejection_percent * n as f64 / 100.0).ceil() as usize).max(1)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{engine, input, obs, replicas};
    use crate::config::AyaConfig;
    use crate::types::{Decision, OutlierDetection};
    use crate::{AyaPolicy, Policy};

    /// A 400 rps host and a 100 rps one (CPU per request 0.0025 and 0.01 s),
    /// at `demand` split 4:1; ticks every 10 s from `t`.
    fn ticks(p: &mut AyaPolicy, t: &mut f64, demand: f64, n: usize) -> Decision {
        let mut last = None;
        for i in 0..n {
            let wiggle = 1.0 + 0.02 * (i % 3) as f64;
            let (rb, rs) = (0.8 * demand * wiggle, 0.2 * demand * wiggle);
            let backends = [
                obs("big", *t, rb, rb * 0.0025, 0.01, 0.05),
                obs("small", *t, rs, rs * 0.01, 0.01, 0.05),
            ];
            last = Some(p.decide(&input(*t, &backends, demand, None, replicas(2))));
            *t += 10.0;
        }
        last.expect("n > 0")
    }

    fn od(d: &Decision) -> OutlierDetection {
        d.outlier_detection.expect("the engine manages it")
    }

    fn has_rule(d: &Decision, part: &str) -> bool {
        d.explanation.rules.iter().any(|r| r.contains(part))
    }

    #[test]
    fn detection_is_on_only_while_the_pool_can_lose_its_largest_host() {
        let mut p = engine();
        let mut t = 0.0;
        // Before any capacity model: off.
        let d = ticks(&mut p, &mut t, 60.0, 1);
        assert!(!od(&d).enabled(), "{:?}", d.explanation.rules);
        // 60 rps: the small host alone would run at 60 % (≤ 85 %): one of
        // two hosts may be ejected (50 %).
        let d = ticks(&mut p, &mut t, 60.0, 8);
        let o = od(&d);
        assert_eq!(
            (o.consecutive_5xx, o.max_ejection_percent),
            (5, 50.0),
            "{:?}",
            d.explanation.rules
        );
        assert!(
            has_rule(&d, "up to 1 of 2 hosts"),
            "{:?}",
            d.explanation.rules
        );
        // 90 rps (90 % of the small host's capacity): above the 85 % that
        // turns it on, below the 92.5 % that keeps it: stays on.
        let d = ticks(&mut p, &mut t, 90.0, 8);
        assert!(od(&d).enabled(), "{:?}", d.explanation.rules);
        // 300 rps: losing the big host would overload the small one 3×: off.
        let d = ticks(&mut p, &mut t, 300.0, 8);
        assert!(!od(&d).enabled(), "{:?}", d.explanation.rules);
        assert!(
            has_rule(&d, "cannot lose its largest host"),
            "{:?}",
            d.explanation.rules
        );
        // 90 rps again: not turned on from off (needs ≤ 85 rps).
        let d = ticks(&mut p, &mut t, 90.0, 8);
        assert!(!od(&d).enabled(), "{:?}", d.explanation.rules);
        // 60 rps: on again (the last change was long ago).
        assert!(od(&ticks(&mut p, &mut t, 60.0, 1)).enabled());
        // One tick at 300 rps cuts it at once; back at 60 rps it stays off
        // until the cut has stood one base ejection time (30 s).
        assert!(!od(&ticks(&mut p, &mut t, 300.0, 1)).enabled());
        let cut_at = t - 10.0;
        for _ in 0..2 {
            let d = ticks(&mut p, &mut t, 60.0, 1);
            assert!(!od(&d).enabled(), "{} s after the cut", d.at - cut_at);
        }
        let d = ticks(&mut p, &mut t, 60.0, 1);
        assert_eq!(d.at - cut_at, 30.0);
        assert!(od(&d).enabled(), "{:?}", d.explanation.rules);
    }

    #[test]
    fn zero_consecutive_errors_leaves_detection_to_the_data_plane() {
        let cfg = AyaConfig {
            outlier_detection_5xx: 0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let mut t = 0.0;
        let d = ticks(&mut p, &mut t, 60.0, 8);
        assert!(d.outlier_detection.is_none());
        assert!(
            AyaConfig {
                outlier_detection_utilization: 0.0,
                ..AyaConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
