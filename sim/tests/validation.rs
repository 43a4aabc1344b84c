//! Validation against queueing theory (issue #4, item 8).
//!
//! * Random dispatch to `n` identical exponential c=1 servers: every server is
//!   an independent M/M/1 queue at ρ, so the sojourn time is Exp(μ − λ):
//!   mean 1/(1−ρ) and p99 ln(100)/(1−ρ) in units of the mean service time.
//! * One central FCFS queue over `c` servers: M/M/c, mean and p99 from Erlang C
//!   (see `aya_sim::theory`).
//! * Little's law L = λW on the time averages of the same runs.
//!
//! Tolerances: 1% on the mean and 2% on p99, as asked in the issue. The
//! estimators are averaged over several seeds (independent replications) so
//! that the standard error is several times smaller than the tolerance; the
//! sample sizes were chosen from the observed spread (see `docs/sim.md`,
//! "Validation against queueing theory").

use aya_policy::LbAlgorithm;
use aya_sim::dist::ServiceDist;
use aya_sim::engine::{RunMetrics, simulate};
use aya_sim::model::{Dispatch, Model};
use aya_sim::theory;
use rayon::prelude::*;

/// Independent replications (in parallel: the test budget is wall time).
fn runs(
    servers: u32,
    rho: f64,
    dispatch: Dispatch,
    requests: u64,
    seeds: std::ops::Range<u64>,
) -> Vec<RunMetrics> {
    let m = Model::textbook(
        servers,
        rho,
        ServiceDist::Exponential { mean: 1.0 },
        dispatch,
        requests,
    );
    let seeds: Vec<u64> = seeds.collect();
    seeds
        .par_iter()
        .map(|s| simulate(&m, *s, None).expect("simulation runs").metrics)
        .collect()
}

fn avg(rs: &[RunMetrics], f: impl Fn(&RunMetrics) -> f64) -> f64 {
    rs.iter().map(f).sum::<f64>() / rs.len() as f64
}

fn check(label: &str, rs: &[RunMetrics], mean: f64, p99: f64) {
    let m = avg(rs, |r| r.mean);
    let q = avg(rs, |r| r.p99);
    let em = (m - mean).abs() / mean;
    let eq = (q - p99).abs() / p99;
    eprintln!(
        "{label}: mean {m:.4} vs {mean:.4} ({:.3}%), p99 {q:.4} vs {p99:.4} ({:.3}%)",
        em * 100.0,
        eq * 100.0
    );
    assert!(
        em < 0.01,
        "{label}: mean {m} differs from theory {mean} by {:.2}%",
        em * 100.0
    );
    assert!(
        eq < 0.02,
        "{label}: p99 {q} differs from theory {p99} by {:.2}%",
        eq * 100.0
    );
}

#[test]
fn random_dispatch_matches_mm1_at_rho_05() {
    let rs = runs(
        16,
        0.5,
        Dispatch::Balancer(LbAlgorithm::Random),
        500_000,
        1..5,
    );
    check(
        "M/M/1 rho=0.5",
        &rs,
        theory::mm1_mean(0.5, 1.0),
        theory::mm1_quantile(0.5, 1.0, 0.99),
    );
}

#[test]
fn random_dispatch_matches_mm1_at_rho_09() {
    // ρ = 0.9 is where M/M/1 estimates are noisiest (relative sd of the mean
    // ≈ 0.7% per 8M requests): 36M requests give sd ≈ 0.33%, a 3σ margin.
    let rs = runs(
        16,
        0.9,
        Dispatch::Balancer(LbAlgorithm::Random),
        3_000_000,
        1..13,
    );
    check(
        "M/M/1 rho=0.9",
        &rs,
        theory::mm1_mean(0.9, 1.0),
        theory::mm1_quantile(0.9, 1.0, 0.99),
    );
}

#[test]
fn central_queue_matches_erlang_c() {
    // M/M/8 at ρ = 0.9: p99 sd ≈ 0.9% per 8M requests → 16M requests.
    for (c, rho, n, seeds) in [(4u32, 0.7, 500_000u64, 1..5u64), (8, 0.9, 2_000_000, 1..9)] {
        let rs = runs(c, rho, Dispatch::Central, n, seeds);
        let lambda = rho * c as f64;
        check(
            &format!("M/M/{c} rho={rho}"),
            &rs,
            theory::mmc_mean(c, lambda, 1.0),
            theory::mmc_quantile(c, lambda, 1.0, 0.99),
        );
    }
}

#[test]
fn littles_law_holds() {
    for (dispatch, label) in [
        (Dispatch::Balancer(LbAlgorithm::LeastRequest), "p2c"),
        (Dispatch::Central, "central"),
        (Dispatch::Balancer(LbAlgorithm::RoundRobin), "rr"),
    ] {
        let r = &runs(10, 0.8, dispatch, 200_000, 7..8)[0];
        let lw = r.little_lambda * r.mean;
        let err = (r.little_l - lw).abs() / lw;
        eprintln!("{label}: L {:.4} vs lambda*W {:.4}", r.little_l, lw);
        assert!(
            err < 0.01,
            "{label}: Little's law off by {:.2}%",
            err * 100.0
        );
    }
}
