//! Closed-form queueing results the simulator is validated against.
//!
//! * M/M/1: sojourn time is exponential with rate μ − λ, so
//!   `W = 1/(μ−λ)` and the q-quantile is `−ln(1−q)/(μ−λ)`.
//! * M/M/c (Erlang C): an arrival waits with probability C (Erlang C) and
//!   the wait is then Exp(θ), θ = cμ − λ; the sojourn adds an independent
//!   Exp(μ) service, so the sojourn tail is a mixture of an exponential and a
//!   hypoexponential (derived in [`mmc_sojourn_tail`]); quantiles are found
//!   by bisection on that tail.

/// Erlang C: probability that an arrival waits in M/M/c with offered load
/// `a = λ/μ` (requires a < c).
pub fn erlang_c(c: u32, a: f64) -> f64 {
    // Stable recursion through Erlang B.
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c as f64;
    b / (1.0 - rho + rho * b)
}

/// Mean sojourn time of M/M/c.
pub fn mmc_mean(c: u32, lambda: f64, mu: f64) -> f64 {
    let a = lambda / mu;
    erlang_c(c, a) / (c as f64 * mu - lambda) + 1.0 / mu
}

/// `P(T > t)` for the M/M/c sojourn time T = W + S.
///
/// With probability 1−C, T = S ~ Exp(μ). With probability C, T = W' + S with
/// W' ~ Exp(θ), θ = cμ − λ, independent of S: the hypoexponential tail
/// `(θ e^{−μt} − μ e^{−θt}) / (θ − μ)` (or `(1 + μt) e^{−μt}` when θ = μ).
pub fn mmc_sojourn_tail(c: u32, lambda: f64, mu: f64, t: f64) -> f64 {
    let cc = erlang_c(c, lambda / mu);
    let theta = c as f64 * mu - lambda;
    let s = (-mu * t).exp();
    let conv = if (theta - mu).abs() < 1e-12 * mu {
        (1.0 + mu * t) * s
    } else {
        (theta * s - mu * (-theta * t).exp()) / (theta - mu)
    };
    (1.0 - cc) * s + cc * conv
}

/// q-quantile of the M/M/c sojourn time (bisection on the tail).
pub fn mmc_quantile(c: u32, lambda: f64, mu: f64, q: f64) -> f64 {
    let target = 1.0 - q;
    let (mut lo, mut hi) = (0.0, 1.0 / mu);
    while mmc_sojourn_tail(c, lambda, mu, hi) > target {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mmc_sojourn_tail(c, lambda, mu, mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Mean sojourn time of M/M/1.
pub fn mm1_mean(lambda: f64, mu: f64) -> f64 {
    1.0 / (mu - lambda)
}

/// q-quantile of the M/M/1 sojourn time.
pub fn mm1_quantile(lambda: f64, mu: f64, q: f64) -> f64 {
    -(1.0 - q).ln() / (mu - lambda)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmc_with_one_server_is_mm1() {
        assert!((erlang_c(1, 0.7) - 0.7).abs() < 1e-12);
        assert!((mmc_mean(1, 0.7, 1.0) - mm1_mean(0.7, 1.0)).abs() < 1e-12);
        assert!((mmc_quantile(1, 0.7, 1.0, 0.99) - mm1_quantile(0.7, 1.0, 0.99)).abs() < 1e-9);
    }

    #[test]
    fn erlang_c_textbook_value() {
        // c = 2, a = 1 (ρ = 0.5): C = 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    }
}
