//! Helpers shared by the rule tests of each module, and tests of a whole tick.

use super::*;
use crate::config::AyaConfig;
use crate::types::*;

pub(super) fn obs(
    name: &str,
    t: f64,
    rate: f64,
    cpu: f64,
    p50: f64,
    p99: f64,
) -> BackendObservation {
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

pub(super) fn engine() -> AyaPolicy {
    AyaPolicy::new(AyaConfig::default().validate().unwrap())
}

pub(super) fn replicas(current: u32) -> ReplicaState {
    ReplicaState {
        current,
        ready: current,
        min: 1,
        max: 50,
        boot_time: 60.0,
    }
}

pub(super) fn input<'a>(
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

pub(super) fn weight(d: &Decision, name: &str) -> u32 {
    d.weights
        .iter()
        .find(|w| w.backend == name)
        .map(|w| w.weight)
        .unwrap_or(0)
}

/// Flat forecast at `level` rps, stepping to `after` from `ramp_at` on.
pub(super) fn forecast(now: f64, level: f64, after: f64, ramp_at: f64) -> DemandForecast {
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

/// Ticks of a pool of `n` replicas at 0.005 CPU per request/s (140 rps
/// each at the default 0.7 target) carrying `demand`, no forecast.
pub(super) fn pool_tick(p: &mut AyaPolicy, t: f64, n: u32, demand: f64) -> Decision {
    let per = demand / n as f64;
    let backends: Vec<_> = (0..n)
        .map(|i| obs(&format!("r{i}"), t, per, 0.005 * per, 0.01, 0.06))
        .collect();
    p.decide(&input(t, &backends, demand, None, replicas(n)))
}

#[test]
fn headroom_says_when_the_forecast_outgrows_the_pool() {
    // Two replicas at 0.005 CPU per request/s: 200 rps each at full
    // utilisation, 400 rps for the pool.
    let mut p = engine();
    let tick = |p: &mut AyaPolicy, t: f64, f: &DemandForecast| {
        let backends = [
            obs("a", t, 100.0 + (t / 10.0) % 3.0, 0.5, 0.01, 0.05),
            obs("b", t, 100.0 - (t / 10.0) % 3.0, 0.5, 0.01, 0.05),
        ];
        p.decide(&input(t, &backends, 200.0, Some(f), replicas(2)))
    };
    let mut t = 0.0;
    let mut last = None;
    for _ in 0..12 {
        last = Some(tick(&mut p, t, &forecast(t, 200.0, 200.0, f64::INFINITY)));
        t += 10.0;
    }
    let h = last
        .unwrap()
        .explanation
        .headroom
        .expect("capacity models are built");
    assert!((h.capacity_rps - 400.0).abs() < 20.0, "{h:?}");
    assert_eq!(h.exhausted_upper_in, None, "flat at half the capacity");
    assert_eq!(h.horizon_seconds, 300.0);
    // Demand steps to 420 rps 100 s from now: the upper (462) and the mean
    // cross the capacity then, the lower bound (378) never.
    let d = tick(&mut p, t, &forecast(t, 200.0, 420.0, t + 100.0));
    let h = d.explanation.headroom.expect("headroom");
    assert_eq!(h.exhausted_upper_in, Some(100.0), "{h:?}");
    assert_eq!(h.exhausted_mean_in, Some(100.0));
    assert_eq!(h.exhausted_lower_in, None);
    assert_eq!(
        h.scale_up_deadline_in,
        Some(40.0),
        "100 s minus the 60 s boot"
    );
    assert!(
        d.explanation
            .rules
            .iter()
            .any(|r| r.starts_with("headroom: capacity") && r.contains("exhausted in 100s (upper)")),
        "{:?}",
        d.explanation.rules
    );
    // Without a forecast there is no headroom forecast.
    let backends = [obs("a", t + 10.0, 100.0, 0.5, 0.01, 0.05)];
    let d = p.decide(&input(t + 10.0, &backends, 100.0, None, replicas(2)));
    assert!(d.explanation.headroom.is_none());
}
