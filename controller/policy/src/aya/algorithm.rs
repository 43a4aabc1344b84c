//! Algorithm selection: the rule that fits the pool's shape, persistence and,
//! when a scorer is injected, a predicted-p99 veto.

use std::sync::Arc;

use super::AyaPolicy;
use super::weights::Spread;
use crate::capacity::{median, positive};
use crate::scoring::{AlgorithmScorer, PoolBackend, PoolSnapshot};
use crate::types::{
    AlgorithmChoice, BackendObservation, BackendWeight, Explanation, LbAlgorithm, TickInput, Time,
};

/// The injected scorer, shared (it is stateless) so the engine stays `Clone`.
/// What the algorithm rules know of the pool this tick.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolShape {
    /// Capacity spread, when two or more capacities are known.
    pub(super) spread: Option<Spread>,
    /// Latency outliers left in the pool beyond the ejection budget.
    pub(super) outliers_left: bool,
    /// The data plane's consecutive-5xx ejection is published on.
    pub(super) data_plane_ejects: bool,
}

#[derive(Clone)]
pub(super) struct ScorerHandle(pub(super) Arc<dyn AlgorithmScorer>);

impl std::fmt::Debug for ScorerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlgorithmScorer")
    }
}

/// Outcome of scoring `proposed` against `current` at `at`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ScoreVerdict {
    current: LbAlgorithm,
    proposed: LbAlgorithm,
    at: Time,
    /// Whether the proposal may go ahead.
    switch: bool,
    /// What was predicted, for the explanation.
    note: String,
}

impl AyaPolicy {
    /// The pool as a scorer should model it: each active backend's full
    /// capacity (from its CPU model) and the weight about to be published.
    /// `None` unless every backend has an absolute capacity estimate.
    fn snapshot(
        &self,
        input: &TickInput<'_>,
        weights: &[BackendWeight],
        load: f64,
        variable_service: bool,
    ) -> Option<PoolSnapshot> {
        let mut backends = Vec::with_capacity(weights.len());
        for w in weights {
            let e = self.estimate(&w.backend, input.now, input.interval)?;
            let line = e.cpu.filter(|_| e.absolute)?;
            let mu = (1.0 - line.intercept) / line.slope;
            if !positive(mu) {
                return None;
            }
            backends.push(PoolBackend {
                backend: w.backend.clone(),
                capacity_rps: mu,
                weight: w.weight,
            });
        }
        (!backends.is_empty() && positive(load)).then(|| PoolSnapshot {
            backends,
            load_rps: load,
            horizon: self.cfg.get().score_horizon,
            variable_service,
        })
    }

    /// Whether the proposed switch may go ahead, by prediction. `None` when
    /// scoring is off or cannot be done (the rules decide alone).
    fn scored_switch(
        &mut self,
        current: LbAlgorithm,
        proposed: LbAlgorithm,
        now: Time,
        pool: Option<&PoolSnapshot>,
        ex: &mut Explanation,
    ) -> Option<bool> {
        let c = self.cfg.get();
        if !c.score_algorithms {
            return None;
        }
        if let Some(v) = &self.score_verdict
            && v.current == current
            && v.proposed == proposed
            && now - v.at < c.score_horizon
        {
            ex.rules
                .push(format!("algorithm_scored (cached): {}", v.note));
            return Some(v.switch);
        }
        let Some(scorer) = &self.scorer else {
            ex.rules
                .push("algorithm_scoring: no scorer in this driver, rules decide".into());
            return None;
        };
        let Some(pool) = pool else {
            ex.rules
                .push("algorithm_scoring: no absolute capacity model yet, rules decide".into());
            return None;
        };
        let (Some(cur), Some(new)) = (
            scorer.0.score(current, pool).filter(|x| x.is_finite()),
            scorer.0.score(proposed, pool).filter(|x| x.is_finite()),
        ) else {
            ex.rules
                .push("algorithm_scoring: scorer could not tell, rules decide".into());
            return None;
        };
        let switch = new < cur * (1.0 - c.score_min_gain);
        let note = format!(
            "predicted p99 {current} {:.1}ms vs {proposed} {:.1}ms over {:.0}s at {:.1}rps -> {}",
            1e3 * cur,
            1e3 * new,
            pool.horizon,
            pool.load_rps,
            if switch { "switch" } else { "keep" }
        );
        ex.rules.push(format!("algorithm_scored: {note}"));
        self.score_verdict = Some(ScoreVerdict {
            current,
            proposed,
            at: now,
            switch,
            note,
        });
        Some(switch)
    }

    pub(super) fn choose_algorithm(
        &mut self,
        input: &TickInput<'_>,
        active: &[&BackendObservation],
        published: (&[BackendWeight], f64),
        shape: PoolShape,
        ex: &mut Explanation,
    ) -> AlgorithmChoice {
        let c = self.cfg.get().clone();
        let ratios: Vec<f64> = active
            .iter()
            .filter(|b| b.latency_p50 > 0.0 && b.latency_p99.is_finite())
            .map(|b| b.latency_p99 / b.latency_p50)
            .collect();
        let variability = median(&ratios);
        let (want, why) = self.rule_algorithm(shape, variability);
        match self.algorithm {
            None => {
                self.algorithm = Some(want);
                self.algorithm_rule = format!("{why} -> {want}");
                self.candidate = None;
            }
            Some(cur) if cur == want => {
                self.algorithm_rule = format!("{why} -> {want}");
                self.candidate = None;
            }
            Some(cur) => {
                // Outliers and affinity act at once; the rest need persistence.
                let urgent = matches!(want, LbAlgorithm::PeakEwma | LbAlgorithm::RingHash);
                // A rule wants a switch: when a scorer can predict it, the
                // proposal must also win by prediction (not for urgent ones).
                let vetoed = !urgent && {
                    let variable = variability.is_some_and(|v| v > c.variable_service_ratio);
                    let pool = if c.score_algorithms && self.scorer.is_some() {
                        self.snapshot(input, published.0, published.1, variable)
                    } else {
                        None
                    };
                    let verdict = self.scored_switch(cur, want, input.now, pool.as_ref(), ex);
                    // Weighted round robin needs a prediction in its favour;
                    // other proposals go ahead unless predicted worse.
                    if want == LbAlgorithm::WeightedRoundRobin {
                        verdict != Some(true)
                    } else {
                        verdict == Some(false)
                    }
                };
                // Join shortest queue was chosen while the pool looked
                // homogeneous; once capacities differ and weighted round
                // robin is not predicted better, the rules' other choice
                // (weighted least request) is the one to move to.
                let (want, vetoed) = if vetoed
                    && want == LbAlgorithm::WeightedRoundRobin
                    && cur == LbAlgorithm::JoinShortestQueue
                {
                    (LbAlgorithm::LeastRequest, false)
                } else {
                    (want, vetoed)
                };
                let n = match self.candidate {
                    Some((a, n)) if a == want => n + 1,
                    _ => 1,
                };
                if vetoed {
                    self.candidate = None;
                    ex.rules.push(format!(
                        "algorithm: keep {cur}; {want} proposed ({why}) but not predicted better"
                    ));
                } else if urgent || n >= c.algorithm_switch_ticks {
                    self.algorithm = Some(want);
                    self.algorithm_rule = format!("{why} -> {want} (switched from {cur})");
                    self.candidate = None;
                } else {
                    self.candidate = Some((want, n));
                    ex.rules.push(format!(
                        "algorithm candidate {want} ({n}/{}): {why}",
                        c.algorithm_switch_ticks
                    ));
                }
            }
        }
        let algorithm = self.algorithm.unwrap_or(LbAlgorithm::LeastRequest);
        ex.rules.push(format!("algorithm: {}", self.algorithm_rule));
        AlgorithmChoice {
            algorithm,
            rule: self.algorithm_rule.clone(),
        }
    }

    /// The algorithm the rules want for this pool, and why: ring hash on
    /// affinity, peak-EWMA for outliers left in the pool, else by capacity
    /// spread and service-time variability (p99/p50).
    fn rule_algorithm(&self, shape: PoolShape, variability: Option<f64>) -> (LbAlgorithm, String) {
        let c = self.cfg.get();
        let PoolShape {
            spread,
            outliers_left,
            data_plane_ejects,
        } = shape;
        if c.affinity {
            (LbAlgorithm::RingHash, "affinity requested".to_string())
        } else if outliers_left {
            (
                LbAlgorithm::PeakEwma,
                "latency outliers beyond the ejection budget".to_string(),
            )
        } else {
            // Least request (weighted by Aya's split when capacities differ)
            // is the one choice that reacts to what it cannot see: a slow or
            // stuck host accumulates active requests and loses picks at once,
            // whatever the telemetry delay. Round robin and weighted round
            // robin only follow the weights, so a slowdown, a latency spike
            // or a wrong capacity estimate hits them until the next windows
            // arrive; on the broad suite's tune split they lost to least
            // request on every fault kind (docs/suite.md).
            if c.score_algorithms
                && let (Some(s), Some(v)) = (spread, variability)
                && !s.homogeneous
                && v <= c.variable_service_ratio
            {
                let s = s.lower;
                // Only a simulation of the learned pool may choose weighted
                // round robin (see `choose_algorithm`): it wins on steady
                // service when the capacity model is right.
                return (
                    LbAlgorithm::WeightedRoundRobin,
                    format!(
                        "unequal capacity (spread {s:.2}), steady service (p99/p50 {v:.1}): weighted round robin if predicted better"
                    ),
                );
            }
            let v = variability.map_or(String::new(), |v| format!(", p99/p50 {v:.1}"));
            match spread {
                Some(s) if !s.homogeneous => (
                    LbAlgorithm::LeastRequest,
                    format!(
                        "unequal capacity (spread {:.2}..{:.2}): weighted least request",
                        s.lower, s.upper
                    ),
                ),
                // Two random picks (Envoy's N_CHOICES, with replacement)
                // compare the same host with itself 1/n of the time: half
                // the picks of a two-host pool are random. Comparing every
                // host is better on an equal-weight pool, but a host that
                // fails fast has no requests in flight and would win nearly
                // every pick until something ejects it; with the data
                // plane's consecutive-5xx ejection on, it takes 5.
                Some(s) if data_plane_ejects => (
                    LbAlgorithm::JoinShortestQueue,
                    format!(
                        "homogeneous pool (spread {:.2}{v}), data-plane ejection on: least request over every host",
                        s.lower
                    ),
                ),
                Some(s) => (
                    LbAlgorithm::LeastRequest,
                    format!(
                        "homogeneous pool (spread {:.2}{v}): least request (two picks: no data-plane ejection to stop a full scan feeding a failing host)",
                        s.lower
                    ),
                ),
                None => (
                    LbAlgorithm::LeastRequest,
                    "capacities not known yet: least request".to_string(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use crate::aya::AyaPolicy;
    use crate::config::AyaConfig;
    use crate::types::*;

    #[test]
    fn outliers_beyond_the_ejection_budget_switch_to_peak_ewma() {
        let mut p = engine();
        let mut backends: Vec<_> = (0..11)
            .map(|i| obs(&format!("b{i:02}"), 0.0, 90.0, 0.45, 0.01, 0.05))
            .collect();
        for i in [3, 7] {
            backends[i].latency_p50 = 2.0;
            backends[i].latency_p99 = 2.0;
        }
        // Latency outliers count once they persist for
        // `eject_latency_consecutive` (3) observation windows.
        let mut d = None;
        for t in [0.0, 1.0, 2.0] {
            for b in &mut backends {
                b.observed_at = t;
            }
            d = Some(p.decide(&input(t, &backends, 1000.0, None, replicas(11))));
        }
        let d = d.unwrap();
        assert_eq!(d.ejected.len(), 1, "10% of 11 → one ejection");
        assert_eq!(
            d.algorithm.algorithm,
            LbAlgorithm::PeakEwma,
            "{}",
            d.algorithm.rule
        );
    }

    #[test]
    fn algorithm_follows_pool_shape() {
        let pick = |p50: f64, p99: f64, speeds: &[f64], cfg: AyaConfig| {
            let mut p = AyaPolicy::new(cfg.validate().unwrap());
            let mut d = None;
            for k in 0..12 {
                let t = k as f64 * 10.0;
                let rate = 100.0 + 5.0 * (k % 2) as f64;
                let backends: Vec<_> = speeds
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        obs(
                            &format!("b{i}"),
                            t,
                            rate,
                            0.004 * rate / s,
                            p50 / s,
                            p99 / s,
                        )
                    })
                    .collect();
                d = Some(p.decide(&input(
                    t,
                    &backends,
                    rate * speeds.len() as f64,
                    None,
                    replicas(speeds.len() as u32),
                )));
            }
            d.unwrap().algorithm
        };
        let equal = [1.0, 1.0, 1.0, 1.0];
        let mixed = [1.0, 2.0, 4.0, 4.0];
        // Exponential service: p99/p50 = ln 100 / ln 2 ≈ 6.6. A homogeneous
        // pool whose data plane ejects failing hosts (this one can lose one
        // of four at 40 % CPU) compares every host on each pick.
        let scan = pick(0.01, 0.066, &equal, AyaConfig::default());
        assert_eq!(scan.algorithm, LbAlgorithm::JoinShortestQueue);
        assert!(scan.rule.contains("ejection on"), "{}", scan.rule);
        // Without the data plane's ejection a fast-failing host would draw
        // nearly every request of a full scan: two picks.
        let no_ejection = AyaConfig {
            outlier_detection_5xx: 0,
            ..AyaConfig::default()
        };
        let two = pick(0.01, 0.066, &equal, no_ejection.clone());
        assert_eq!(two.algorithm, LbAlgorithm::LeastRequest);
        assert!(two.rule.contains("no data-plane ejection"), "{}", two.rule);
        // Steady (deterministic-like) service no longer selects round robin
        // or weighted round robin: least request reacts to faults they miss.
        let steady = pick(0.01, 0.011, &equal, no_ejection);
        assert_eq!(steady.algorithm, LbAlgorithm::LeastRequest);
        assert!(steady.rule.contains("homogeneous"), "{}", steady.rule);
        let steady_mixed = pick(0.01, 0.011, &mixed, AyaConfig::default());
        assert_eq!(steady_mixed.algorithm, LbAlgorithm::LeastRequest);
        assert!(
            steady_mixed.rule.contains("weighted least request"),
            "{}",
            steady_mixed.rule
        );
        assert_eq!(
            pick(0.01, 0.066, &mixed, AyaConfig::default()).algorithm,
            LbAlgorithm::LeastRequest
        );
        let affinity = AyaConfig {
            affinity: true,
            ..AyaConfig::default()
        };
        let choice = pick(0.01, 0.066, &equal, affinity);
        assert_eq!(choice.algorithm, LbAlgorithm::RingHash);
        assert!(choice.rule.contains("affinity"), "{}", choice.rule);
    }

    #[test]
    fn algorithm_switch_needs_persistence() {
        // Two of eleven backends are latency outliers: one is ejected, the
        // other is left in the pool, so peak-EWMA is chosen at once.
        let mut p = engine();
        let pool = |t: f64, slow: bool| -> Vec<BackendObservation> {
            (0..11)
                .map(|i| {
                    let mut b = obs(&format!("b{i:02}"), t, 90.0, 0.45, 0.01, 0.066);
                    if slow && (i == 3 || i == 7) {
                        b.latency_p50 = 2.0;
                        b.latency_p99 = 2.0;
                    }
                    b
                })
                .collect()
        };
        // (once they have persisted for three observation windows)
        for t in [0.0, 1.0] {
            let d = p.decide(&input(t, &pool(t, true), 1000.0, None, replicas(11)));
            assert!(d.ejected.is_empty(), "window {t}: {:?}", d.ejected);
        }
        let d = p.decide(&input(2.0, &pool(2.0, true), 1000.0, None, replicas(11)));
        assert_eq!(d.algorithm.algorithm, LbAlgorithm::PeakEwma);
        // The outliers recover: a proposal goes ahead only after
        // `algorithm_switch_ticks` (3) ticks in a row of the same one. The
        // first tick proposes least request (capacities not known yet); from
        // the second the pool is known homogeneous with the data plane's
        // ejection on, and join shortest queue starts its own count.
        for k in 1..=4 {
            let t = k as f64 * 10.0;
            let d = p.decide(&input(t, &pool(t, false), 1000.0, None, replicas(11)));
            let expected = if k < 4 {
                LbAlgorithm::PeakEwma
            } else {
                LbAlgorithm::JoinShortestQueue
            };
            assert_eq!(
                d.algorithm.algorithm, expected,
                "tick {k}: {}",
                d.algorithm.rule
            );
        }
    }

    /// A scorer with fixed predictions per algorithm, counting its calls.
    struct FakeScorer {
        lr: f64,
        wrr: f64,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl crate::scoring::AlgorithmScorer for FakeScorer {
        fn score(
            &self,
            algorithm: LbAlgorithm,
            pool: &crate::scoring::PoolSnapshot,
        ) -> Option<f64> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            assert!(!pool.backends.is_empty() && pool.load_rps > 0.0);
            assert!(
                pool.backends
                    .iter()
                    .all(|b| b.capacity_rps > 0.0 && b.weight >= 1)
            );
            match algorithm {
                LbAlgorithm::LeastRequest | LbAlgorithm::JoinShortestQueue => Some(self.lr),
                LbAlgorithm::WeightedRoundRobin => Some(self.wrr),
                _ => None,
            }
        }
    }

    /// Variable service on a homogeneous pool (least request), then steady
    /// service on unequal capacities: with scoring on, the rules propose
    /// weighted round robin.
    /// Returns the algorithm published at the end and every rule seen.
    fn run_switch(p: &mut AyaPolicy) -> (LbAlgorithm, Vec<String>) {
        let mut rules = Vec::new();
        let mut last = None;
        for k in 0..30 {
            let t = k as f64 * 10.0;
            let rate = 100.0 + 5.0 * (k % 3) as f64;
            let (cost_b, p99_ratio) = if k < 10 { (0.004, 6.0) } else { (0.001, 1.2) };
            let backends = [
                obs("a", t, rate, 0.004 * rate, 0.02, 0.02 * p99_ratio),
                obs("b", t, rate, cost_b * rate, 0.02, 0.02 * p99_ratio),
            ];
            let d = p.decide(&input(t, &backends, 2.0 * rate, None, replicas(2)));
            rules.extend(d.explanation.rules.iter().cloned());
            last = Some(d.algorithm.algorithm);
        }
        (last.unwrap(), rules)
    }

    fn scoring_cfg() -> crate::config::ValidAyaConfig {
        AyaConfig {
            score_algorithms: true,
            ..AyaConfig::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn without_scoring_steady_unequal_pools_stay_on_least_request() {
        let (algo, rules) = run_switch(&mut engine());
        assert_eq!(algo, LbAlgorithm::LeastRequest);
        assert!(!rules.iter().any(|r| r.contains("scor")), "{rules:?}");
    }

    #[test]
    fn a_switch_predicted_worse_is_vetoed() {
        let scorer = std::sync::Arc::new(FakeScorer {
            lr: 0.030,
            wrr: 0.200,
            calls: Default::default(),
        });
        let mut p = AyaPolicy::with_scorer(scoring_cfg(), scorer.clone());
        let (algo, rules) = run_switch(&mut p);
        assert_eq!(algo, LbAlgorithm::LeastRequest, "{rules:?}");
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with("algorithm_scored:") && r.ends_with("keep")),
            "{rules:?}"
        );
        // Verdicts are reused for score_horizon (60 s): at most one scoring
        // (two calls) per started minute of the 200 s of proposals, not two
        // calls per tick (40).
        let calls = scorer.calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!((2..=10).contains(&calls), "{calls} calls");
    }

    #[test]
    fn a_switch_predicted_better_goes_ahead() {
        let scorer = std::sync::Arc::new(FakeScorer {
            lr: 0.200,
            wrr: 0.030,
            calls: Default::default(),
        });
        let mut p = AyaPolicy::with_scorer(scoring_cfg(), scorer);
        let (algo, rules) = run_switch(&mut p);
        assert_eq!(algo, LbAlgorithm::WeightedRoundRobin, "{rules:?}");
        assert!(
            rules
                .iter()
                .any(|r| r.starts_with("algorithm_scored:") && r.ends_with("switch")),
            "{rules:?}"
        );
    }

    #[test]
    fn weighted_round_robin_needs_a_prediction_in_its_favour() {
        // Scoring on, but this driver has no scorer: no prediction, no switch.
        let mut p = AyaPolicy::new(scoring_cfg());
        let (algo, rules) = run_switch(&mut p);
        assert_eq!(algo, LbAlgorithm::LeastRequest);
        assert!(
            rules.iter().any(|r| r.contains("no scorer in this driver")),
            "{rules:?}"
        );
    }
}
