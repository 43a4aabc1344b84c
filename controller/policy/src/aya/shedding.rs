//! Step 9: a limit on the requests in flight to the cluster, so that an
//! overloaded pool sheds instead of collapsing.
//!
//! When a fault leaves the pool with less capacity than the demand, every
//! balancer keeps sending: requests queue (or, under processor sharing, slow
//! everybody down) until they pass the clients' timeout, and the backends
//! then spend their capacity on requests nobody waits for — success falls far
//! below the share the survivors could serve. A data plane that refuses the
//! excess at once (Envoy's circuit breakers: a fast 503 past `max_requests`)
//! keeps the survivors serving requests in time. With the clients' timeout
//! known ([`AyaConfig::request_timeout`]) the engine publishes
//! `max_requests = Σ full capacity × request_timeout × in_flight_timeout_share`
//! over the serving backends (at full capacity a request then waits about that
//! share of the timeout); below saturation the limit is far above what is in
//! flight and never binds. Each change is a CDS update, so the published limit
//! moves only when the computed one leaves a band of ±25 % around it (a lost
//! host tightens it at the next tick).
//!
//! [`AyaConfig::request_timeout`]: crate::AyaConfig::request_timeout

use super::AyaPolicy;
use crate::types::{BackendObservation, Explanation, TickInput};

/// The published limit stays while the computed one is within this factor
/// of it (either way).
const LIMIT_BAND: f64 = 1.25;

impl AyaPolicy {
    /// The in-flight limit to publish for `serving` (the healthy, non-ejected
    /// backends). `None` without a `request_timeout` (the data plane keeps
    /// its own); while a serving backend's capacity is unknown or the
    /// telemetry is stale, the last published limit (none before the first).
    pub(super) fn max_requests(
        &mut self,
        input: &TickInput<'_>,
        serving: &[&BackendObservation],
        stale: bool,
        ex: &mut Explanation,
    ) -> Option<u32> {
        let c = self.cfg.get();
        if c.request_timeout <= 0.0 {
            return None;
        }
        let total: Option<f64> = if stale || serving.is_empty() {
            None
        } else {
            serving
                .iter()
                .map(|b| self.full_capacity(&b.backend, input.now, 0.0))
                .sum()
        };
        let Some(total) = total else {
            if let Some(p) = self.max_requests_published {
                ex.rules.push(format!(
                    "max_requests: hold {p} (capacities unknown or telemetry stale)"
                ));
            }
            return self.max_requests_published;
        };
        let want = (total * c.request_timeout * c.in_flight_timeout_share)
            .ceil()
            .max(2.0 * serving.len() as f64)
            .min(f64::from(u32::MAX)) as u32;
        let keep = self.max_requests_published.filter(|&p| {
            let (p, w) = (f64::from(p), f64::from(want));
            w >= p / LIMIT_BAND && w <= p * LIMIT_BAND
        });
        let published = keep.unwrap_or(want);
        ex.rules.push(format!(
            "max_requests {published}: {total:.0} rps of full capacity x {:.2}s timeout x {:.2}{}",
            c.request_timeout,
            c.in_flight_timeout_share,
            if keep.is_some() && want != published {
                format!(" (computed {want}, within the band)")
            } else {
                String::new()
            }
        ));
        self.max_requests_published = Some(published);
        Some(published)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::aya::AyaPolicy;
    use crate::config::AyaConfig;
    use crate::types::{Decision, Policy};

    /// Four backends at 100 rps, CPU 0.4 each (a full capacity of 250 rps),
    /// for 12 ticks; `b3` reported unhealthy from tick `fail_at`.
    fn run(cfg: AyaConfig, fail_at: usize) -> Vec<Decision> {
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        (0..12)
            .map(|k| {
                let t = k as f64 * 10.0;
                let rate = 100.0 + 5.0 * (k % 2) as f64;
                let backends: Vec<_> = (0..4)
                    .map(|i| {
                        let mut b = obs(&format!("b{i}"), t, rate, 0.004 * rate, 0.01, 0.05);
                        b.healthy = !(i == 3 && k >= fail_at);
                        b
                    })
                    .collect();
                p.decide(&input(t, &backends, 4.0 * rate, None, replicas(4)))
            })
            .collect()
    }

    #[test]
    fn no_timeout_no_limit() {
        let ds = run(AyaConfig::default(), 99);
        assert!(ds.iter().all(|d| d.max_requests.is_none()));
    }

    #[test]
    fn the_limit_follows_the_serving_capacity_and_a_lost_host_tightens_it() {
        let cfg = AyaConfig {
            request_timeout: 2.0,
            ..AyaConfig::default()
        };
        let ds = run(cfg, 8);
        // Before any capacity model: no limit (the data plane keeps its own).
        assert_eq!(ds[0].max_requests, None);
        // 4 × 250 rps × 2 s × 0.25 = 500.
        let before = ds[7]
            .max_requests
            .expect("a limit once capacities are known");
        assert!(
            (450..=550).contains(&before),
            "{before}: {:?}",
            ds[7].explanation.rules
        );
        // Steady: the published limit does not move with the estimates' noise.
        assert!(ds[4..8].iter().all(|d| d.max_requests == Some(before)));
        // One host of four lost: 3 × 250 × 2 × 0.25 = 375, past the ±25 % band.
        let after = ds[8].max_requests.unwrap();
        assert!(
            (340..=410).contains(&after) && after < before,
            "{before} -> {after}: {:?}",
            ds[8].explanation.rules
        );
    }
}
