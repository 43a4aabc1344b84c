//! One test per rule of the engine.

use super::*;
use crate::config::AyaConfig;
use crate::types::ReplicaState;

fn obs(name: &str, t: f64, rate: f64, cpu: f64, p50: f64, p99: f64) -> BackendObservation {
    BackendObservation {
        backend: name.into(),
        healthy: true,
        request_rate: rate,
        in_flight: rate * p50,
        latency_p50: p50,
        latency_p90: p50 * 2.0,
        latency_p99: p99,
        error_rate: 0.0,
        cpu_utilization: Some(cpu),
        memory_utilization: None,
        observed_at: t,
    }
}

fn engine() -> AyaPolicy {
    AyaPolicy::new(AyaConfig::default().validate().unwrap())
}

fn replicas(current: u32) -> ReplicaState {
    ReplicaState {
        current,
        ready: current,
        min: 1,
        max: 50,
        boot_time: 60.0,
    }
}

fn input<'a>(
    now: f64,
    backends: &'a [BackendObservation],
    demand: f64,
    forecast: Option<&'a DemandForecast>,
    r: ReplicaState,
) -> TickInput<'a> {
    TickInput {
        now,
        interval: 10.0,
        backends,
        demand_rps: demand,
        forecast,
        replicas: r,
    }
}

fn weight(d: &Decision, name: &str) -> u32 {
    d.weights
        .iter()
        .find(|w| w.backend == name)
        .map(|w| w.weight)
        .unwrap_or(0)
}

/// Flat forecast at `level` rps, stepping to `after` from `ramp_at` on.
fn forecast(now: f64, level: f64, after: f64, ramp_at: f64) -> DemandForecast {
    let step = 10.0;
    let mean: Vec<f64> = (1..=30)
        .map(|k| {
            if now + k as f64 * step >= ramp_at {
                after
            } else {
                level
            }
        })
        .collect();
    DemandForecast {
        issued_at: now,
        step,
        upper: mean.iter().map(|m| m * 1.1).collect(),
        lower: mean.iter().map(|m| m * 0.9).collect(),
        mean,
        level: 0.9,
    }
}

#[test]
fn degrading_backend_loses_weight_before_it_saturates() {
    let mut p = engine();
    let names = ["a", "b", "c", "d"];
    let mut last = None;
    for k in 0..30 {
        let t = k as f64 * 10.0;
        // Load varies a little so the load → CPU fit is identifiable.
        let rate = 100.0 + 10.0 * ((k % 5) as f64 - 2.0);
        // Backend d's cost per request rises 4 % per tick from tick 15.
        let d_cost = 0.004 * if k >= 15 { 1.04f64.powi(k - 14) } else { 1.0 };
        let backends: Vec<_> = names
            .iter()
            .map(|n| {
                let c = if *n == "d" { d_cost } else { 0.004 };
                obs(n, t, rate, c * rate, 0.01, 0.06)
            })
            .collect();
        let d_cpu = d_cost * rate;
        let dec = p.decide(&input(t, &backends, rate * 4.0, None, replicas(4)));
        if k == 14 {
            assert_eq!(
                weight(&dec, "d"),
                weight(&dec, "a"),
                "steady pool: equal weights"
            );
        }
        if k >= 15 && weight(&dec, "d") < weight(&dec, "a") * 9 / 10 && last.is_none() {
            last = Some((k, d_cpu));
        }
    }
    let (k, cpu) = last.expect("d never lost weight");
    assert!(
        cpu < 0.6,
        "down-weighted at tick {k} while its CPU was still {cpu:.2}"
    );
}

#[test]
fn unequal_capacities_get_weights_that_equalise_utilisation() {
    let cfg = AyaConfig {
        objective: crate::config::WeightObjective::Utilization,
        // The observed rates below are fixed; this test checks the split itself.
        share_correction: 0.0,
        ..AyaConfig::default()
    };
    let mut p = AyaPolicy::new(cfg.validate().unwrap());
    let mut dec = None;
    for k in 0..20 {
        let t = k as f64 * 10.0;
        let rate = 100.0 + 5.0 * (k % 3) as f64;
        // b is twice as fast: half the CPU per request.
        let backends = [
            obs("a", t, rate, 0.004 * rate, 0.02, 0.12),
            obs("b", t, rate, 0.002 * rate, 0.01, 0.06),
        ];
        dec = Some(p.decide(&input(t, &backends, 2.0 * rate, None, replicas(2))));
    }
    let dec = dec.unwrap();
    let ratio = weight(&dec, "b") as f64 / weight(&dec, "a") as f64;
    // This test runs the utilisation objective (see its config below).
    assert!((ratio - 2.0).abs() < 0.15, "weights {:?}", dec.weights);
    assert!(
        dec.explanation
            .rules
            .iter()
            .any(|r| r.starts_with("weights_equalise_utilisation")),
        "{:?}",
        dec.explanation
    );
}

#[test]
fn scale_up_happens_one_boot_time_ahead_of_a_forecast_ramp() {
    let mut p = engine();
    // Two replicas at cpu = 0.005/rps: capacity at 0.7 is 140 rps each.
    let mut first_up = None;
    let ramp_at = 400.0;
    for k in 0..40 {
        let t = k as f64 * 10.0;
        let rate = 100.0 + 4.0 * (k % 3) as f64;
        let backends = [
            obs("a", t, rate, 0.005 * rate, 0.01, 0.06),
            obs("b", t, rate, 0.005 * rate, 0.01, 0.06),
        ];
        let f = forecast(t, 2.0 * rate, 800.0, ramp_at);
        let d = p.decide(&input(t, &backends, 2.0 * rate, Some(&f), replicas(2)));
        if d.scaling.desired_replicas > 2 && first_up.is_none() {
            first_up = Some((t, d.scaling.desired_replicas, d.scaling.rule.clone()));
        }
    }
    let (t, n, rule) = first_up.expect("never scaled up");
    // boot 60 s + interval 10 s + lookahead before the ramp (the first
    // tick whose look-ahead window reaches it).
    let lead = 60.0 + 10.0 + AyaConfig::default().scale_lookahead;
    assert_eq!(t, ramp_at - (lead / 10.0).floor() * 10.0, "scaled at {t}");
    // 800 × 1.1 upper / 140 = 6.3 → 7, plus scale_up_headroom: ceil(0.1 × 7) = 1.
    assert_eq!(n, 8);
    assert!(rule.starts_with("scale_up_forecast"), "{rule}");
}

#[test]
fn scale_in_needs_forecast_and_observation_to_agree() {
    // The demand jumps below are deliberate surprises; keep the forecast
    // trusted so that this test isolates the agreement rule.
    let cfg = AyaConfig {
        scale_in_cooldown: 0.0,
        forecast_error_fallback: 100.0,
        max_scale_in_step: 2,
        ..AyaConfig::default()
    };
    let mut p = AyaPolicy::new(cfg.validate().unwrap());
    let r = replicas(6);
    let mut run = |t: f64, demand: f64, fc: f64| {
        let per = demand / 6.0;
        let backends: Vec<_> = (0..6)
            .map(|i| {
                obs(
                    &format!("r{i}"),
                    t,
                    per + (t / 10.0) % 3.0,
                    0.005 * (per + (t / 10.0) % 3.0),
                    0.01,
                    0.06,
                )
            })
            .collect();
        let f = forecast(t, fc, fc, f64::INFINITY);
        p.decide(&input(t, &backends, demand, Some(&f), r))
    };
    // Warm up the capacity model (140 rps per replica at 0.7).
    for k in 0..5 {
        run(k as f64 * 10.0, 700.0, 700.0);
    }
    // Observation low, forecast high: hold.
    let d = run(50.0, 150.0, 700.0);
    assert_eq!(d.scaling.desired_replicas, 6, "{}", d.scaling.rule);
    // Forecast low, observation high: hold.
    let d = run(60.0, 700.0, 150.0);
    assert_eq!(d.scaling.desired_replicas, 6, "{}", d.scaling.rule);
    // Both low: scale in by at most max_scale_in_step.
    let d = run(70.0, 150.0, 150.0);
    assert_eq!(d.scaling.desired_replicas, 4, "{}", d.scaling.rule);
    assert!(d.scaling.rule.starts_with("scale_in"), "{}", d.scaling.rule);
}

#[test]
fn scale_in_waits_for_the_cooldown() {
    let cfg = AyaConfig {
        forecast_error_fallback: 100.0,
        ..AyaConfig::default()
    };
    let mut p = AyaPolicy::new(cfg.validate().unwrap());
    let backends: Vec<_> = (0..4)
        .map(|i| obs(&format!("r{i}"), 0.0, 10.0, 0.05, 0.01, 0.06))
        .collect();
    let f = forecast(0.0, 40.0, 40.0, f64::INFINITY);
    // A scale-up at t=0 (observation needs more than 4 at 700 rps).
    let hot: Vec<_> = (0..4)
        .map(|i| obs(&format!("r{i}"), 0.0, 175.0, 0.875, 0.01, 0.06))
        .collect();
    let fh = forecast(0.0, 700.0, 700.0, f64::INFINITY);
    let d = p.decide(&input(0.0, &hot, 700.0, Some(&fh), replicas(4)));
    assert!(
        d.scaling.desired_replicas > 4,
        "{} {:?}",
        d.scaling.rule,
        d.explanation
    );
    let quiet: Vec<_> = backends
        .iter()
        .map(|b| BackendObservation {
            observed_at: 10.0,
            ..b.clone()
        })
        .collect();
    let d = p.decide(&input(10.0, &quiet, 40.0, Some(&f), replicas(6)));
    assert_eq!(d.scaling.desired_replicas, 6, "{}", d.scaling.rule);
    assert_eq!(d.scaling.rule, "hold_scale_in_cooldown");
}

#[test]
fn replicas_stay_within_bounds() {
    let mut p = engine();
    let backends: Vec<_> = (0..2)
        .map(|i| obs(&format!("r{i}"), 0.0, 500.0, 1.0, 0.5, 2.0))
        .collect();
    let f = forecast(0.0, 1e6, 1e6, 0.0);
    let r = ReplicaState {
        current: 2,
        ready: 2,
        min: 2,
        max: 5,
        boot_time: 30.0,
    };
    let d = p.decide(&input(0.0, &backends, 1e6, Some(&f), r));
    assert_eq!(d.scaling.desired_replicas, 5);
}

#[test]
fn stuck_backend_is_ejected_by_littles_law_before_slow_responses_complete() {
    let mut p = engine();
    let mut backends: Vec<_> = (0..11)
        .map(|i| obs(&format!("b{i:02}"), 0.0, 90.0, 0.45, 0.01, 0.05))
        .collect();
    // b05 answers nothing yet but holds 40 requests.
    backends[5].request_rate = 1.0;
    backends[5].in_flight = 40.0;
    let d = p.decide(&input(0.0, &backends, 1000.0, None, replicas(11)));
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
fn outliers_beyond_the_ejection_budget_switch_to_peak_ewma() {
    let mut p = engine();
    let mut backends: Vec<_> = (0..11)
        .map(|i| obs(&format!("b{i:02}"), 0.0, 90.0, 0.45, 0.01, 0.05))
        .collect();
    for i in [3, 7] {
        backends[i].latency_p50 = 2.0;
        backends[i].latency_p99 = 2.0;
    }
    let d = p.decide(&input(0.0, &backends, 1000.0, None, replicas(11)));
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
    // Exponential service: p99/p50 = ln 100 / ln 2 ≈ 6.6.
    assert_eq!(
        pick(0.01, 0.066, &equal, AyaConfig::default()).algorithm,
        LbAlgorithm::LeastRequest
    );
    assert_eq!(
        pick(0.01, 0.011, &equal, AyaConfig::default()).algorithm,
        LbAlgorithm::RoundRobin
    );
    assert_eq!(
        pick(0.01, 0.011, &mixed, AyaConfig::default()).algorithm,
        LbAlgorithm::WeightedRoundRobin
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
    let mut p = engine();
    let steady: Vec<_> = (0..4)
        .map(|i| obs(&format!("b{i}"), 0.0, 100.0, 0.4, 0.01, 0.011))
        .collect();
    let d = p.decide(&input(0.0, &steady, 400.0, None, replicas(4)));
    assert_eq!(d.algorithm.algorithm, LbAlgorithm::RoundRobin);
    for k in 1..=3 {
        let t = k as f64 * 10.0;
        let variable: Vec<_> = (0..4)
            .map(|i| obs(&format!("b{i}"), t, 100.0, 0.4, 0.01, 0.066))
            .collect();
        let d = p.decide(&input(t, &variable, 400.0, None, replicas(4)));
        let expected = if k < 3 {
            LbAlgorithm::RoundRobin
        } else {
            LbAlgorithm::LeastRequest
        };
        assert_eq!(d.algorithm.algorithm, expected, "tick {k}");
    }
}

#[test]
fn stale_telemetry_holds_weights_and_replicas() {
    let mut p = engine();
    let backends = [
        obs("a", 0.0, 100.0, 0.4, 0.01, 0.05),
        obs("b", 0.0, 100.0, 0.4, 0.01, 0.05),
    ];
    let d0 = p.decide(&input(0.0, &backends, 200.0, None, replicas(2)));
    let d = p.decide(&input(100.0, &backends, 5000.0, None, replicas(2)));
    assert_eq!(d.weights, d0.weights);
    assert_eq!(d.scaling.desired_replicas, 2);
    assert!(
        d.explanation
            .rules
            .iter()
            .any(|r| r.contains("stale telemetry")),
        "{:?}",
        d.explanation.rules
    );
}

#[test]
fn bad_forecasts_trigger_the_reactive_fallback() {
    let mut p = engine();
    let mut saw = false;
    for k in 0..8 {
        let t = k as f64 * 10.0;
        let backends = [
            obs("a", t, 100.0, 0.4, 0.01, 0.05),
            obs("b", t, 100.0, 0.4, 0.01, 0.05),
        ];
        // Forecast says 1000 rps; 200 arrives, every time.
        let f = forecast(t, 1000.0, 1000.0, f64::INFINITY);
        let d = p.decide(&input(t, &backends, 200.0, Some(&f), replicas(2)));
        if k >= 1 {
            saw |= d
                .explanation
                .rules
                .iter()
                .any(|r| r.starts_with("fallback_reactive: forecast error"));
            assert!(
                d.scaling.desired_replicas <= 2,
                "scaled on an untrusted forecast: {}",
                d.scaling.rule
            );
        }
    }
    assert!(saw);
    assert!(p.recent_forecast_error().unwrap() > 3.0);
}

#[test]
fn every_decision_is_explained() {
    let mut p = engine();
    let backends = [obs("a", 0.0, 100.0, 0.4, 0.01, 0.05)];
    let f = forecast(0.0, 100.0, 100.0, f64::INFINITY);
    let d = p.decide(&input(0.0, &backends, 100.0, Some(&f), replicas(1)));
    assert!(
        d.explanation
            .inputs
            .iter()
            .any(|s| s.contains("demand_rps=100.0"))
    );
    assert!(
        d.explanation
            .forecast
            .as_deref()
            .is_some_and(|s| s.contains("next=100.0"))
    );
    assert!(
        d.explanation
            .rules
            .iter()
            .any(|r| r.starts_with("scaling:"))
    );
    assert!(
        d.explanation
            .rules
            .iter()
            .any(|r| r.starts_with("algorithm:"))
    );
}

#[test]
fn no_healthy_backend_means_panic_mode_not_an_empty_set() {
    let mut p = engine();
    let backends = [
        BackendObservation {
            healthy: false,
            ..obs("a", 0.0, 0.0, 0.0, 0.0, 0.0)
        },
        BackendObservation {
            healthy: false,
            ..obs("b", 0.0, 0.0, 0.0, 0.0, 0.0)
        },
    ];
    let d = p.decide(&input(0.0, &backends, 0.0, None, replicas(2)));
    assert_eq!(d.weights.len(), 2);
    assert!(d.weights.iter().all(|w| w.weight >= 1));
}

#[test]
fn forecast_interpolation() {
    let f = DemandForecast {
        issued_at: 0.0,
        step: 10.0,
        mean: vec![10.0, 20.0, 30.0],
        lower: vec![],
        upper: vec![],
        level: 0.9,
    };
    assert_eq!(value_at(&f, 5.0), Some(10.0));
    assert_eq!(value_at(&f, 15.0), Some(15.0));
    assert_eq!(value_at(&f, 100.0), Some(30.0));
    // No interval: the mean stands in for the upper bound.
    assert_eq!(peak_upper(&f, 0.0, 20.0), Some(20.0));
    let bad = DemandForecast {
        mean: vec![f64::NAN],
        ..f
    };
    assert_eq!(value_at(&bad, 5.0), None);
}

#[test]
fn latency_objective_loads_fast_backends_more_than_proportionally() {
    let cfg = AyaConfig {
        objective: crate::config::WeightObjective::Latency,
        share_correction: 0.0,
        ..AyaConfig::default()
    };
    let mut p = AyaPolicy::new(cfg.validate().unwrap());
    let mut dec = None;
    for k in 0..20 {
        let t = k as f64 * 10.0;
        let rate = 100.0 + 5.0 * (k % 3) as f64;
        let backends = [
            obs("a", t, rate, 0.004 * rate, 0.02, 0.12),
            obs("b", t, rate, 0.001 * rate, 0.005, 0.03),
        ];
        dec = Some(p.decide(&input(t, &backends, 2.0 * rate, None, replicas(2))));
    }
    let dec = dec.unwrap();
    let ratio = weight(&dec, "b") as f64 / weight(&dec, "a") as f64;
    assert!(
        ratio > 4.0,
        "capacity ratio is 4, latency-optimal split is steeper: {:?}",
        dec.weights
    );
    assert!(
        dec.explanation
            .rules
            .iter()
            .any(|r| r.starts_with("weights_minimise_latency")),
        "{:?}",
        dec.explanation
    );
}

#[test]
fn latency_split_matches_the_square_root_rule() {
    // μ = 100, 400; L = 300: k = (500 − 300)/(10 + 20) = 6.67.
    let xs = latency_split(&[100.0, 400.0], 300.0).unwrap();
    assert!((xs[0] - (100.0 - 10.0 * 200.0 / 30.0)).abs() < 1e-9);
    assert!((xs.iter().sum::<f64>() - 300.0).abs() < 1e-9);
    // A very slow server gets nothing at light load.
    let xs = latency_split(&[1.0, 400.0], 50.0).unwrap();
    assert_eq!(xs[0], 0.0);
    assert!((xs[1] - 50.0).abs() < 1e-9);
    assert!(latency_split(&[100.0, 100.0], 199.0).is_none());
}

#[test]
fn tail_split_equalises_spare_capacity() {
    // μ = 100, 200, 400; L = 400: spare (700 − 400)/3 = 100 each, so the
    // slowest server gets nothing and the split is redone over the other two:
    // spare (600 − 400)/2 = 100 → 100, 300.
    let xs = tail_split(&[100.0, 200.0, 400.0], 400.0).unwrap();
    assert_eq!(xs[0], 0.0);
    assert!((xs[1] - 100.0).abs() < 1e-9, "{xs:?}");
    assert!((xs[2] - 300.0).abs() < 1e-9, "{xs:?}");
    // At higher load everyone works, with equal spare capacity.
    let xs = tail_split(&[100.0, 200.0, 400.0], 550.0).unwrap();
    let spare: Vec<f64> = [100.0, 200.0, 400.0]
        .iter()
        .zip(&xs)
        .map(|(m, x)| m - x)
        .collect();
    assert!(spare.iter().all(|s| (s - 50.0).abs() < 1e-9), "{spare:?}");
    assert!((xs.iter().sum::<f64>() - 550.0).abs() < 1e-9);
    // No split without 5 % spare capacity, nor for nonsense input.
    assert!(tail_split(&[100.0, 100.0], 199.0).is_none());
    assert!(tail_split(&[100.0], f64::NAN).is_none());
}

#[test]
fn tail_objective_is_the_default_and_starves_slow_backends_more_than_latency() {
    let run = |objective| {
        let cfg = AyaConfig {
            objective,
            // Fixed observed rates: compare the splits themselves.
            share_correction: 0.0,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let mut dec = None;
        for k in 0..20 {
            let t = k as f64 * 10.0;
            let rate = 100.0 + 5.0 * (k % 3) as f64;
            let backends = [
                obs("a", t, rate, 0.004 * rate, 0.02, 0.12),
                obs("b", t, rate, 0.001 * rate, 0.005, 0.03),
            ];
            // Weights are split at the observed demand: 1000 rps over
            // capacities 250 and 1000 rps, where both objectives use both.
            dec = Some(p.decide(&input(t, &backends, 1000.0, None, replicas(2))));
        }
        let dec = dec.unwrap();
        (
            weight(&dec, "b") as f64 / weight(&dec, "a") as f64,
            dec.explanation,
        )
    };
    assert_eq!(
        AyaConfig::default().objective,
        crate::config::WeightObjective::Tail
    );
    let (tail, ex) = run(crate::config::WeightObjective::Tail);
    let (latency, _) = run(crate::config::WeightObjective::Latency);
    assert!(tail > latency, "tail {tail} vs latency {latency}");
    assert!(
        ex.rules
            .iter()
            .any(|r| r.starts_with("weights_minimise_tail")),
        "{ex:?}"
    );
}

/// Ticks of a pool of `n` replicas at 0.005 CPU per request/s (140 rps
/// each at the default 0.7 target) carrying `demand`, no forecast.
fn pool_tick(p: &mut AyaPolicy, t: f64, n: u32, demand: f64) -> Decision {
    let per = demand / n as f64;
    let backends: Vec<_> = (0..n)
        .map(|i| obs(&format!("r{i}"), t, per, 0.005 * per, 0.01, 0.06))
        .collect();
    p.decide(&input(t, &backends, demand, None, replicas(n)))
}

#[test]
fn a_significant_demand_rise_orders_capacity_for_the_projected_load() {
    let mut p = engine();
    // Flat at 300 rps, with a little noise: no trend, no scaling.
    for k in 0..10 {
        let d = pool_tick(&mut p, k as f64 * 10.0, 3, 300.0 + [0.0, 3.0, -2.0][k % 3]);
        assert_eq!(d.scaling.desired_replicas, 3, "{:?}", d.explanation);
        assert!(
            !d.explanation
                .rules
                .iter()
                .any(|r| r.starts_with("demand_trend")),
            "{:?}",
            d.explanation
        );
    }
    // Rising 2 rps/s: still within 3 × 140 rps now, but the line projected
    // over boot (60 s) + interval (10 s) + trend_lookahead (90 s) is not.
    let mut up = None;
    for k in 10..15 {
        let t = k as f64 * 10.0;
        let d = pool_tick(&mut p, t, 3, 300.0 + 20.0 * (k - 9) as f64);
        if d.scaling.desired_replicas > 3 {
            up = Some((t, d));
            break;
        }
    }
    let (t, d) = up.expect("a steady rise never scaled up");
    let demand_now = 300.0 + 20.0 * (t / 10.0 - 9.0);
    assert!(demand_now <= 3.0 * 140.0, "only trend can explain it");
    assert!(
        d.scaling.rule.starts_with("scale_up_trend"),
        "{}",
        d.scaling.rule
    );
    // More than the observation needs, at most what the true line
    // (2 rps/s over 160 s) needs plus the 10 % headroom.
    let got = d.scaling.desired_replicas as f64;
    assert!(got > (demand_now / 140.0).ceil(), "{:?}", d.explanation);
    let need = ((demand_now + 2.0 * 160.0) / 140.0).ceil();
    assert!(got <= need + (0.1 * need).ceil(), "{:?}", d.explanation);
}

#[test]
fn trend_can_be_switched_off() {
    let cfg = AyaConfig {
        trend_window: 0.0,
        ..AyaConfig::default()
    };
    let mut p = AyaPolicy::new(cfg.validate().unwrap());
    for k in 0..16 {
        let d = pool_tick(&mut p, k as f64 * 10.0, 3, 200.0 + 20.0 * k as f64);
        assert!(
            !d.explanation.rules.iter().any(|r| r.contains("trend")),
            "{:?}",
            d.explanation
        );
    }
}

#[test]
fn scale_in_never_goes_below_what_scale_up_would_order() {
    // Scale-in looks at the forecast over boot + interval, scale-up over a
    // longer horizon here; a peak only the longer look sees must stop the
    // scale-in at the scale-up level, not let it flap down and back up.
    let cfg = AyaConfig {
        scale_in_cooldown: 0.0,
        forecast_error_fallback: 100.0,
        scale_lookahead: 200.0,
        trend_window: 0.0,
        ..AyaConfig::default()
    };
    let mut p = AyaPolicy::new(cfg.validate().unwrap());
    let n = 8;
    let run = |p: &mut AyaPolicy, t: f64, demand: f64, f: &DemandForecast| {
        let per = demand / n as f64;
        let backends: Vec<_> = (0..n)
            .map(|i| {
                let rate = per + (t / 10.0) % 3.0;
                obs(&format!("r{i}"), t, rate, 0.005 * rate, 0.01, 0.06)
            })
            .collect();
        p.decide(&input(t, &backends, demand, Some(f), replicas(n)))
    };
    for k in 0..5 {
        let t = k as f64 * 10.0;
        run(
            &mut p,
            t,
            1000.0,
            &forecast(t, 1000.0, 1000.0, f64::INFINITY),
        );
    }
    // Demand falls to 150 rps; the forecast is low for the next 150 s but
    // back at 500 rps 200 s out.
    let t = 50.0;
    let d = run(&mut p, t, 150.0, &forecast(t, 150.0, 500.0, t + 200.0));
    // Scale-up level: 500 × 1.1 (upper) / 140 → 4.
    assert_eq!(d.scaling.desired_replicas, 4, "{:?}", d.explanation);
    assert!(d.scaling.rule.starts_with("scale_in"), "{}", d.scaling.rule);
}

#[test]
fn share_correction_steers_observed_traffic_towards_the_plan() {
    // Two backends, capacities 250 and 1000 rps; the tail split at 1000 rps
    // plans 125 / 875. The data plane sends 300 / 700 instead (a slow
    // backend picks up overflow): the slow one's weight must fall relative
    // to what the uncorrected engine publishes.
    let run = |gain: f64| {
        let cfg = AyaConfig {
            share_correction: gain,
            ..AyaConfig::default()
        };
        let mut p = AyaPolicy::new(cfg.validate().unwrap());
        let mut dec = None;
        for k in 0..20 {
            let t = k as f64 * 10.0;
            let jitter = 5.0 * (k % 3) as f64;
            let (ra, rb) = (300.0 + jitter, 700.0 - jitter);
            let backends = [
                obs("a", t, ra, 0.004 * ra, 0.02, 0.12),
                obs("b", t, rb, 0.001 * rb, 0.005, 0.03),
            ];
            dec = Some(p.decide(&input(t, &backends, 1000.0, None, replicas(2))));
        }
        dec.unwrap()
    };
    let plain = run(0.0);
    let corrected = run(0.25);
    let ratio = |d: &Decision| weight(d, "b") as f64 / weight(d, "a") as f64;
    assert!(
        ratio(&corrected) > ratio(&plain) * 1.5,
        "{:?} vs {:?}",
        corrected.weights,
        plain.weights
    );
    assert!(
        corrected
            .explanation
            .rules
            .iter()
            .any(|r| r.starts_with("weights_share_correction")),
        "{:?}",
        corrected.explanation
    );
    // The multiplier is bounded: at most 4 either way.
    assert!(ratio(&corrected) <= ratio(&plain) * 16.0 + 1.0);
}

#[test]
fn share_correction_leaves_a_homogeneous_pool_alone() {
    let mut p = engine();
    for k in 0..20 {
        let t = k as f64 * 10.0;
        let backends = [
            obs("a", t, 300.0, 0.3, 0.01, 0.06),
            obs("b", t, 100.0, 0.1, 0.01, 0.06),
        ];
        let d = p.decide(&input(t, &backends, 400.0, None, replicas(2)));
        assert_eq!(weight(&d, "a"), weight(&d, "b"), "{:?}", d.explanation);
    }
}

/// A scorer with fixed predictions per algorithm, counting its calls.
struct FakeScorer {
    lr: f64,
    wrr: f64,
    calls: std::sync::atomic::AtomicUsize,
}

impl crate::scoring::AlgorithmScorer for FakeScorer {
    fn score(&self, algorithm: LbAlgorithm, pool: &crate::scoring::PoolSnapshot) -> Option<f64> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(!pool.backends.is_empty() && pool.load_rps > 0.0);
        assert!(
            pool.backends
                .iter()
                .all(|b| b.capacity_rps > 0.0 && b.weight >= 1)
        );
        match algorithm {
            LbAlgorithm::LeastRequest => Some(self.lr),
            LbAlgorithm::WeightedRoundRobin => Some(self.wrr),
            _ => None,
        }
    }
}

/// Variable service on a homogeneous pool (least request), then steady
/// service on unequal capacities: the rules propose weighted round robin.
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
fn without_scoring_the_rules_switch_to_weighted_round_robin() {
    let (algo, rules) = run_switch(&mut engine());
    assert_eq!(algo, LbAlgorithm::WeightedRoundRobin);
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
fn scoring_without_a_scorer_leaves_the_rules_in_charge() {
    let mut p = AyaPolicy::new(scoring_cfg());
    let (algo, rules) = run_switch(&mut p);
    assert_eq!(algo, LbAlgorithm::WeightedRoundRobin);
    assert!(
        rules.iter().any(|r| r.contains("no scorer in this driver")),
        "{rules:?}"
    );
}
