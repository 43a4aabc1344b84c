//! Outlier ejection on error rate or latency, within an Envoy-style budget.

use super::AyaPolicy;
use crate::AyaConfig;
use crate::capacity::median;
use crate::types::{BackendObservation, Explanation, TickInput, Time};

/// Latency ejection needs a pool of at least this many backends with traffic:
/// with fewer, "the median" is one of the suspects.
pub(super) const MIN_POOL_FOR_LATENCY_EJECTION: usize = 3;

/// An error outlier must also exceed this multiple of the pool's median error
/// rate: when everyone fails, it is an outage, and ejecting does not help.
pub(super) const ERROR_OUTLIER_OVER_MEDIAN: f64 = 2.0;

/// Without a capacity model to make the N+1 check, a latency outlier is
/// ejected only at this multiple of the pool's median latency or more: a
/// stuck or failing host, not one of a slower tier.
pub(super) const UNVERIFIED_LATENCY_OUTLIER: f64 = 10.0;

/// Ejection state of one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ejection {
    pub(super) until: Time,
    pub(super) count: u32,
    pub(super) released_at: Option<Time>,
}

impl AyaPolicy {
    /// Decide ejections among healthy backends. Returns the set of ejected
    /// names and whether outliers were left in the pool for lack of budget.
    pub(super) fn eject(
        &mut self,
        input: &TickInput<'_>,
        healthy: &[&BackendObservation],
        ex: &mut Explanation,
    ) -> (Vec<String>, bool) {
        let c = self.cfg.get().clone();
        let now = input.now;
        let interval = input.interval.max(1e-9);
        // Release the ones whose time is up.
        for (name, e) in self.ejections.iter_mut() {
            if e.released_at.is_none() && now >= e.until {
                e.released_at = Some(now);
                ex.rules
                    .push(format!("reinstate {name}: ejection time over"));
            }
        }
        let active_ejected: Vec<String> = self
            .ejections
            .iter()
            .filter(|(n, e)| e.released_at.is_none() && healthy.iter().any(|b| &b.backend == *n))
            .map(|(n, _)| n.clone())
            .collect();

        let outliers = find_outliers(healthy, &active_ejected, interval, &c);
        let outliers = self.persistent(healthy, outliers, c.eject_latency_consecutive, ex);

        let pool = healthy.len();
        let budget = if pool >= 2 {
            ((c.max_ejection_fraction * pool as f64).floor() as usize)
                .max(1)
                .min(pool - 1)
        } else {
            0
        };
        // Full capacity (rps at 100 % busy) of each healthy backend, when
        // every one of them has an absolute estimate (only needed when
        // there is an outlier to check).
        let full: Option<Vec<(String, f64)>> = if outliers.is_empty() {
            None
        } else {
            healthy
                .iter()
                .map(|b| {
                    self.estimate(&b.backend, now, interval)
                        .filter(|e| e.absolute && e.capacity_rps > 0.0)
                        .map(|e| (b.backend.clone(), e.capacity_rps / c.target_utilization))
                })
                .collect()
        };
        let demand = input.demand_rps.max(0.0);
        let mut ejected = active_ejected;
        let mut left_over = false;
        for (ratio, name, why) in outliers {
            if ejected.len() >= budget {
                ex.rules
                    .push(format!("ejection_budget_exhausted: {name} ({why}) stays"));
                left_over = true;
                continue;
            }
            // N+1 check: ejecting a host the rest cannot do without turns a
            // slow pool into an overloaded one (and a cascade). Without a
            // capacity model of every host the check cannot be made, and a
            // host of a slower tier (a few times slower, more when queued)
            // looks like a sick one: a latency outlier is then ejected only
            // when it is far beyond what tiers differ by. The data plane's
            // least request already sends less to a host that answers slowly.
            if full.is_none() && ratio.is_finite() && ratio < UNVERIFIED_LATENCY_OUTLIER {
                ex.rules.push(format!(
                    "ejection_unverified: {name} ({why}) stays: no capacity model of every host to check that the rest can carry the load"
                ));
                left_over = true;
                continue;
            }
            if let Some(full) = &full {
                let rest: f64 = full
                    .iter()
                    .filter(|(n, _)| *n != name && !ejected.contains(n))
                    .map(|(_, c)| c)
                    .sum();
                if rest < demand {
                    ex.rules.push(format!(
                        "ejection_skipped: {name} ({why}) stays: the rest can serve {rest:.0} rps of {demand:.0}"
                    ));
                    left_over = true;
                    continue;
                }
            }
            let e = self.ejections.entry(name.clone()).or_insert(Ejection {
                until: now,
                count: 0,
                released_at: Some(now),
            });
            // Forgive past ejections after a clean spell as long as the last one.
            if let Some(r) = e.released_at
                && now - r > c.base_ejection_time * e.count.max(1) as f64
            {
                e.count = 0;
            }
            e.count = e.count.saturating_add(1);
            e.until = now + c.base_ejection_time * e.count as f64;
            e.released_at = None;
            ex.rules.push(format!(
                "eject {name}: {why}; for {:.0}s",
                c.base_ejection_time * e.count as f64
            ));
            ejected.push(name);
        }
        ejected.sort();
        (ejected, left_over)
    }
}

impl AyaPolicy {
    /// Keep error outliers, and latency outliers that have been outliers in
    /// `consecutive` observation windows in a row. A window is counted once
    /// (a tick that sees the same `observed_at` again does not count it
    /// twice); a backend seen in a new window and not an outlier starts over.
    fn persistent(
        &mut self,
        healthy: &[&BackendObservation],
        outliers: Vec<(f64, String, String)>,
        consecutive: u32,
        ex: &mut Explanation,
    ) -> Vec<(f64, String, String)> {
        for b in healthy {
            let flagged = outliers
                .iter()
                .any(|(sev, n, _)| sev.is_finite() && *n == b.backend);
            match (flagged, self.latency_streaks.get_mut(&b.backend)) {
                (true, Some((seen, n))) => {
                    if b.observed_at > *seen {
                        *seen = b.observed_at;
                        *n = n.saturating_add(1);
                    }
                }
                (true, None) => {
                    self.latency_streaks
                        .insert(b.backend.clone(), (b.observed_at, 1));
                }
                (false, Some((seen, _))) => {
                    if b.observed_at > *seen {
                        self.latency_streaks.remove(&b.backend);
                    }
                }
                (false, None) => {}
            }
        }
        outliers
            .into_iter()
            .filter(|(sev, name, why)| {
                if !sev.is_finite() {
                    return true;
                }
                let n = self.latency_streaks.get(name).map_or(0, |(_, n)| *n);
                let keep = n >= consecutive;
                if !keep {
                    ex.rules.push(format!(
                        "latency_outlier_pending: {name} ({why}) in {n} of {consecutive} consecutive windows"
                    ));
                }
                keep
            })
            .collect()
    }
}

/// The error-rate and latency outliers among the healthy backends not already
/// ejected, most extreme first, as (severity, backend, reason).
fn find_outliers(
    healthy: &[&BackendObservation],
    active_ejected: &[String],
    interval: f64,
    c: &AyaConfig,
) -> Vec<(f64, String, String)> {
    let with_traffic: Vec<&&BackendObservation> = healthy
        .iter()
        .filter(|b| !active_ejected.contains(&b.backend))
        .filter(|b| b.request_rate * interval >= 1.0 || b.in_flight >= 1.0)
        .collect();
    let lat = |b: &BackendObservation| {
        let little = b.in_flight.max(0.0) / b.request_rate.max(1.0 / interval);
        b.latency_p50.max(little)
    };
    let lats: Vec<f64> = with_traffic.iter().map(|b| lat(b)).collect();
    let errs: Vec<f64> = with_traffic.iter().map(|b| b.error_rate).collect();
    let med_lat = median(&lats);
    let med_err = median(&errs).unwrap_or(0.0);

    let mut outliers: Vec<(f64, String, String)> = Vec::new();
    for b in &with_traffic {
        if b.error_rate.is_finite()
            && b.error_rate >= c.eject_error_rate
            && b.error_rate > ERROR_OUTLIER_OVER_MEDIAN * med_err
        {
            outliers.push((
                f64::INFINITY,
                b.backend.clone(),
                format!(
                    "error_rate {:.3} >= {:.3}",
                    b.error_rate, c.eject_error_rate
                ),
            ));
            continue;
        }
        if let Some(m) = med_lat
            && with_traffic.len() >= MIN_POOL_FOR_LATENCY_EJECTION
        {
            let l = lat(b);
            if l.is_finite() && l > c.eject_latency_factor * m && l - m > c.eject_latency_min_excess
            {
                outliers.push((
                    l / m.max(1e-9),
                    b.backend.clone(),
                    format!(
                        "latency {:.3}s > {:.1} x median {:.3}s",
                        l, c.eject_latency_factor, m
                    ),
                ));
            }
        }
    }
    outliers.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    outliers
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::types::*;

    /// Before the capacity models exist, a host a few times slower than the
    /// median (a slower tier, or queued) is not ejected: nothing can check
    /// that the rest would carry its load. One far beyond (10 x) still is.
    #[test]
    fn without_a_capacity_model_only_a_far_outlier_is_ejected_on_latency() {
        let mut p = engine();
        let mut backends: Vec<_> = (0..21)
            .map(|i| obs(&format!("b{i:02}"), 0.0, 90.0, 0.45, 0.01, 0.05))
            .collect();
        backends[3].latency_p50 = 0.08; // 8 x the median
        backends[7].latency_p50 = 0.5; // 50 x
        let mut d = None;
        for t in [0.0, 1.0, 2.0] {
            for b in &mut backends {
                b.observed_at = t;
            }
            d = Some(p.decide(&input(t, &backends, 1900.0, None, replicas(21))));
        }
        let d = d.unwrap();
        assert_eq!(
            d.ejected,
            vec!["b07".to_string()],
            "{:?}",
            d.explanation.rules
        );
        assert!(
            d.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("ejection_unverified: b03")),
            "{:?}",
            d.explanation.rules
        );
    }

    #[test]
    fn stuck_backend_is_ejected_by_littles_law_before_slow_responses_complete() {
        let mut p = engine();
        let mut backends: Vec<_> = (0..11)
            .map(|i| obs(&format!("b{i:02}"), 0.0, 90.0, 0.45, 0.01, 0.05))
            .collect();
        // b05 answers nothing yet but holds 40 requests: an outlier, pending
        // until it has been one for three observation windows in a row.
        backends[5].request_rate = 1.0;
        backends[5].in_flight = 40.0;
        for t in [0.0, 1.0] {
            for b in &mut backends {
                b.observed_at = t;
            }
            let d = p.decide(&input(t, &backends, 1000.0, None, replicas(11)));
            assert!(d.ejected.is_empty(), "window {t}: {:?}", d.ejected);
            assert!(
                d.explanation
                    .rules
                    .iter()
                    .any(|r| r.starts_with("latency_outlier_pending: b05")),
                "{:?}",
                d.explanation.rules
            );
        }
        // The same window seen again does not count twice.
        let d = p.decide(&input(1.5, &backends, 1000.0, None, replicas(11)));
        assert!(d.ejected.is_empty(), "{:?}", d.ejected);
        for b in &mut backends {
            b.observed_at = 2.0;
        }
        let d = p.decide(&input(2.0, &backends, 1000.0, None, replicas(11)));
        assert_eq!(d.ejected, vec!["b05".to_string()]);
        assert!(d.weights.iter().all(|w| w.backend != "b05"));
        assert_eq!(d.weights.len(), 10);
        assert!(
            d.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("eject b05")),
            "{:?}",
            d.explanation.rules
        );
        // Still ejected on the next tick, reinstated after the ejection time.
        let later: Vec<_> = (0..11)
            .map(|i| obs(&format!("b{i:02}"), 10.0, 100.0, 0.5, 0.01, 0.05))
            .collect();
        let d = p.decide(&input(10.0, &later, 1000.0, None, replicas(11)));
        assert_eq!(d.ejected, vec!["b05".to_string()]);
        let much_later: Vec<_> = (0..11)
            .map(|i| obs(&format!("b{i:02}"), 40.0, 100.0, 0.5, 0.01, 0.05))
            .collect();
        let d = p.decide(&input(40.0, &much_later, 1000.0, None, replicas(11)));
        assert!(d.ejected.is_empty(), "{:?}", d.ejected);
        assert_eq!(d.weights.len(), 11);
    }

    #[test]
    fn error_outlier_is_ejected_but_a_pool_wide_outage_is_not() {
        let mut p = engine();
        let mut backends: Vec<_> = (0..5)
            .map(|i| obs(&format!("b{i}"), 0.0, 100.0, 0.5, 0.01, 0.05))
            .collect();
        backends[2].error_rate = 0.5;
        let d = p.decide(&input(0.0, &backends, 500.0, None, replicas(5)));
        assert_eq!(d.ejected, vec!["b2".to_string()]);

        let mut q = engine();
        let all_bad: Vec<_> = (0..5)
            .map(|i| BackendObservation {
                error_rate: 0.6,
                ..obs(&format!("b{i}"), 0.0, 100.0, 0.5, 0.01, 0.05)
            })
            .collect();
        let d = q.decide(&input(0.0, &all_bad, 500.0, None, replicas(5)));
        assert!(d.ejected.is_empty());
    }

    #[test]
    fn a_slow_host_the_rest_cannot_do_without_is_not_ejected() {
        // Four backends of ~250 rps each (CPU 0.4 at 100 rps); after the
        // models learn, b3's latency jumps to 10x the median.
        let run = |demand: f64| {
            let mut p = engine();
            let mut last = None;
            for k in 0..8 {
                let t = 10.0 * k as f64;
                let rate = demand / 4.0 + 5.0 * (k % 3) as f64;
                let mut backends: Vec<_> = (0..4)
                    .map(|i| obs(&format!("b{i}"), t, rate, 0.004 * rate, 0.01, 0.05))
                    .collect();
                // (for three windows: `eject_latency_consecutive`)
                if k >= 5 {
                    backends[3].latency_p50 = 0.2;
                    backends[3].in_flight = rate * 0.2;
                }
                last = Some(p.decide(&input(t, &backends, demand, None, replicas(4))));
            }
            last.unwrap()
        };
        // At 400 rps the other three (~750 rps) carry it: b3 is ejected.
        let d = run(400.0);
        assert_eq!(
            d.ejected,
            vec!["b3".to_string()],
            "{:?}",
            d.explanation.rules
        );
        // At 900 rps they cannot: b3 stays, and peak-EWMA steers around it.
        let d = run(900.0);
        assert!(d.ejected.is_empty(), "{:?}", d.explanation.rules);
        assert!(
            d.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("ejection_skipped: b3")),
            "{:?}",
            d.explanation.rules
        );
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::PeakEwma);
    }
}
