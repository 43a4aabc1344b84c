//! Speed benchmark of the simulator (run with `--release`; not a test).
//!
//! ```text
//! cargo run --release -p aya-sim --example simbench -- [p2c|day|trace|all] [requests]
//! ```
//!
//! * `p2c`: events/s on one thread with full metrics (global, per-window and
//!   per-backend histograms, time series, SLO windows, telemetry), P2C over
//!   100 FCFS backends at ρ = 0.9, exponential service with a 10 ms mean
//!   (9,000 requests/s: telemetry every 5 virtual seconds, as in production).
//! * `day`: one day of the WorldCup98 rate series scaled to a 10k requests/s
//!   mean, replayed as a non-homogeneous Poisson process through 100 backends.
//! * `trace`: streaming parse + replay of the Azure LLM per-request trace, to
//!   give the per-request trace-reading cost.

use std::path::PathBuf;
use std::time::Instant;

use aya_policy::LbAlgorithm;
use aya_sim::dist::ServiceDist;
use aya_sim::engine::simulate;
use aya_sim::model::{Dispatch, Model, Slo};
use aya_sim::workload::{ArrivalSpec, TokenCost, ValueKind};

fn datasets() -> PathBuf {
    std::env::var_os("AYA_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"))
}

fn full_metrics(m: &mut Model) {
    m.series_window = Some(10.0);
    m.slo = Slo {
        window: 60.0,
        p99: Some(5.0),
        success: Some(0.99),
    };
    m.telemetry_interval = 5.0;
    m.control_interval = Some(10.0);
}

fn p2c(requests: u64) {
    let mut m = Model::textbook(
        100,
        0.9,
        ServiceDist::Exponential { mean: 0.01 },
        Dispatch::Balancer(LbAlgorithm::LeastRequest),
        requests,
    );
    full_metrics(&mut m);
    let t = Instant::now();
    match simulate(&m, 1, None) {
        Ok(r) => {
            let w = t.elapsed().as_secs_f64();
            println!(
                "p2c: 100 backends, rho=0.9, {} requests, {} events in {:.2} s = {:.2} M events/s (mean {:.3}, p99 {:.3})",
                requests,
                r.metrics.events,
                w,
                r.metrics.events as f64 / w / 1e6,
                r.metrics.mean,
                r.metrics.p99
            );
        }
        Err(e) => eprintln!("p2c: {e}"),
    }
}

fn day() {
    let path = datasets().join("worldcup98/worldcup98_requests_per_minute.csv");
    // 1998-06-30 (a match day), scaled to a 10k/s daily mean. 100 backends with a
    // 2 ms mean service: 50k/s capacity, above the day's peak (no runaway queues).
    let mut m = Model::textbook(
        100,
        0.5,
        ServiceDist::Exponential { mean: 0.002 },
        Dispatch::Balancer(LbAlgorithm::LeastRequest),
        u64::MAX,
    );
    m.max_requests = None;
    m.warmup_requests = 0;
    m.duration = Some(86_400.0);
    m.drain_limit = 60.0;
    m.arrivals = ArrivalSpec::RateSeries {
        path,
        compression: 1.0,
        multiplier: 1.0,
        value: ValueKind::Count,
        start: Some("1998-06-30T00:00:00Z".into()),
    };
    // Measure the day's mean rate first to scale it to 10k/s.
    let mut probe = m.clone();
    probe.backends.truncate(1);
    probe.arrivals = match &m.arrivals {
        ArrivalSpec::RateSeries { path, start, .. } => ArrivalSpec::RateSeries {
            path: path.clone(),
            compression: 1.0,
            multiplier: 1e-3,
            value: ValueKind::Count,
            start: start.clone(),
        },
        a => a.clone(),
    };
    probe.service = ServiceDist::Exponential { mean: 1e-6 };
    let base_rate = match simulate(&probe, 1, None) {
        Ok(r) => r.metrics.arrived as f64 / 1e-3 / 86_400.0,
        Err(e) => {
            eprintln!("day: {e}");
            return;
        }
    };
    let mult = 10_000.0 / base_rate;
    if let ArrivalSpec::RateSeries { multiplier, .. } = &mut m.arrivals {
        *multiplier = mult;
    }
    full_metrics(&mut m);
    let t = Instant::now();
    match simulate(&m, 1, None) {
        Ok(r) => {
            let w = t.elapsed().as_secs_f64();
            println!(
                "day: WorldCup98 1998-06-30 scaled ×{:.1} to a 10k/s mean: {} requests, {} events in {:.1} s ({:.2} M events/s), mean util {:.2}, p99 {:.4} s",
                mult,
                r.metrics.arrived,
                r.metrics.events,
                w,
                r.metrics.events as f64 / w / 1e6,
                r.metrics.mean_utilization,
                r.metrics.p99
            );
        }
        Err(e) => eprintln!("day: {e}"),
    }
}

fn trace() {
    let path = datasets().join("azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv");
    let mut m = Model::textbook(
        8,
        0.5,
        ServiceDist::Exponential { mean: 1.0 },
        Dispatch::Balancer(LbAlgorithm::LeastRequest),
        u64::MAX,
    );
    m.max_requests = None;
    m.warmup_requests = 0;
    m.arrivals = ArrivalSpec::Trace {
        path,
        compression: 1.0,
        cost: Some(TokenCost {
            base: 0.05,
            per_context_token: 0.0001,
            per_generated_token: 0.01,
        }),
    };
    for b in &mut m.backends {
        b.concurrency = 16;
    }
    full_metrics(&mut m);
    let t = Instant::now();
    match simulate(&m, 1, None) {
        Ok(r) => {
            let w = t.elapsed().as_secs_f64();
            println!(
                "trace: Azure conv trace, {} requests, {} events in {:.3} s = {:.0} requests/s",
                r.metrics.arrived,
                r.metrics.events,
                w,
                r.metrics.arrived as f64 / w
            );
        }
        Err(e) => eprintln!("trace: {e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("all");
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    match what {
        "p2c" => p2c(n),
        "day" => day(),
        "trace" => trace(),
        _ => {
            p2c(n);
            trace();
            day();
        }
    }
}
