//! Running the suite and checking the acceptance of issue 11.

use rayon::prelude::*;
use serde::Serialize;

use super::generate::{HPA_TARGETS, Kind, Split, SuiteScenario};
use crate::engine::RunResult;
use crate::run::run_one;

/// Balancing acceptance: Aya's p99 at most this × the better baseline's.
pub const P99_TOL: f64 = 1.05;
/// Balancing acceptance: Aya's success at least the better baseline's minus this (percentage points).
pub const SUCCESS_TOL_PP: f64 = 0.02;
/// Geometric-mean acceptance vs P2C (p99 ≥ 25 % below).
pub const GEO_P2C: f64 = 0.75;
/// Geometric-mean acceptance vs peak-EWMA (p99 ≥ 10 % below).
pub const GEO_PEWMA: f64 = 0.90;
/// Autoscaling geometric-mean acceptance: ≥ 40 % fewer SLO minutes.
pub const GEO_SLO: f64 = 0.60;
/// Offset (minutes) in the SLO-minute ratio so zero-violation scenarios count.
pub const SLO_OFFSET: f64 = 1.0;
/// Slack (minutes) on the frontier check.
pub const FRONTIER_EPS: f64 = 0.01;

/// One balancing scenario's outcome (means over seeds).
#[derive(Debug, Clone, Serialize)]
pub struct BalRow {
    /// Scenario id.
    pub id: String,
    /// Family.
    pub family: String,
    /// Split.
    pub split: Split,
    /// What was drawn.
    pub summary: String,
    /// p99 (s): Aya, P2C, peak-EWMA.
    pub p99: [f64; 3],
    /// Success rate (fraction): Aya, P2C, peak-EWMA.
    pub success: [f64; 3],
    /// Aya p99 / better baseline p99.
    pub ratio_best: f64,
    /// Aya p99 / P2C p99.
    pub ratio_p2c: f64,
    /// Aya p99 / peak-EWMA p99.
    pub ratio_pewma: f64,
    /// Aya success − better baseline success, percentage points.
    pub success_diff_pp: f64,
    /// p99 and success checks both hold.
    pub pass: bool,
    /// Algorithm switches by Aya (mean).
    pub aya_switches: f64,
    /// Aya's decision log (first seed, abridged).
    pub decisions: Vec<String>,
}

/// One point of a policy on the cost/SLO plane (means over seeds).
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Label.
    pub label: String,
    /// Replica-hours.
    pub replica_hours: f64,
    /// SLO-violation minutes.
    pub slo_minutes: f64,
    /// Scaling actions.
    pub actions: f64,
}

/// One autoscaling scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct AutoRow {
    /// Scenario id.
    pub id: String,
    /// Family.
    pub family: String,
    /// Split.
    pub split: Split,
    /// What was drawn.
    pub summary: String,
    /// Aya at defaults.
    pub aya: Point,
    /// HPA at each target of [`HPA_TARGETS`].
    pub hpa: Vec<Point>,
    /// HPA's SLO minutes interpolated at Aya's replica-hours (lower envelope).
    pub hpa_at_aya: f64,
    /// Aya on or below the frontier.
    pub on_frontier: bool,
    /// Aya's replica-hours lie within HPA's traced range (else the check
    /// used an end point of the frontier).
    pub bracketed: bool,
    /// (Aya + 1) / (HPA@Aya + 1) SLO minutes.
    pub slo_ratio: f64,
    /// Aya's actions ≤ HPA's at Aya's own target (0.7).
    pub actions_ok: bool,
    /// Aya's decision log (first seed, abridged).
    pub decisions: Vec<String>,
}

/// Acceptance summary of one split.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Split (None = all).
    pub split: Option<Split>,
    /// Balancing scenarios.
    pub bal_n: usize,
    /// Balancing scenarios passing both per-scenario checks.
    pub bal_pass: usize,
    /// … passing the p99 check.
    pub bal_p99_pass: usize,
    /// … passing the success check.
    pub bal_success_pass: usize,
    /// Geometric mean of Aya/P2C p99.
    pub geo_p2c: f64,
    /// Geometric mean of Aya/peak-EWMA p99.
    pub geo_pewma: f64,
    /// Geometric mean of Aya/better-baseline p99.
    pub geo_best: f64,
    /// Worst Aya/better ratio.
    pub worst_ratio: f64,
    /// Worst success difference (pp).
    pub worst_success_pp: f64,
    /// Autoscaling scenarios.
    pub auto_n: usize,
    /// … with Aya on or below HPA's frontier.
    pub auto_frontier_pass: usize,
    /// … whose Aya cost lies within HPA's traced cost range.
    pub auto_bracketed: usize,
    /// … with no more actions than HPA@0.7.
    pub auto_actions_pass: usize,
    /// Geometric mean of the SLO-minute ratio.
    pub geo_slo: f64,
    /// Sum of replica-hours: Aya, HPA@0.7.
    pub replica_hours: [f64; 2],
    /// Sum of scaling actions: Aya, HPA@0.7.
    pub actions: [f64; 2],
    /// Balancing acceptance holds.
    pub bal_met: bool,
    /// Autoscaling acceptance holds.
    pub auto_met: bool,
}

/// The suite's result.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    /// Balancing rows.
    pub balancing: Vec<BalRow>,
    /// Autoscaling rows.
    pub autoscaling: Vec<AutoRow>,
    /// Summaries: test, tune, all.
    pub summaries: Vec<Summary>,
    /// Replications run.
    pub runs: usize,
    /// Wall-clock seconds of the runs (set by the caller).
    pub wall_seconds: f64,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn geomean(xs: &[f64]) -> f64 {
    let v: Vec<f64> = xs
        .iter()
        .copied()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

fn log_lines(r: &RunResult, limit: usize) -> Vec<String> {
    r.decisions
        .iter()
        .take(limit)
        .map(|d| {
            let mut w: Vec<_> = d.weights.iter().collect();
            w.sort_by_key(|x| std::cmp::Reverse(x.weight));
            let total: f64 = d
                .weights
                .iter()
                .map(|x| x.weight as f64)
                .sum::<f64>()
                .max(1e-12);
            let top: Vec<String> = w
                .iter()
                .take(3)
                .map(|x| format!("{}={:.0}%", x.backend, 100.0 * x.weight as f64 / total))
                .collect();
            format!(
                "t={:.0}s replicas={} algorithm={} top={} ejected=[{}] rules: {}",
                d.at,
                d.scaling.desired_replicas,
                d.algorithm.algorithm,
                top.join(","),
                d.ejected.join(","),
                d.explanation.rules.join("; ")
            )
        })
        .collect()
}

/// HPA's SLO minutes at `rh` replica-hours on the lower envelope of its
/// points: linear between neighbours; below the cheapest point extrapolated
/// along the two cheapest (never below the cheapest's value); above the
/// costliest, the costliest's value.
pub fn interpolate(points: &[(f64, f64)], rh: f64) -> f64 {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Lower envelope: more cost never buys more violations.
    for i in 1..p.len() {
        p[i].1 = p[i].1.min(p[i - 1].1);
    }
    match p.len() {
        0 => f64::NAN,
        1 => p[0].1,
        _ => {
            if rh <= p[0].0 {
                let (a, b) = (p[0], p[1]);
                let slope = if b.0 > a.0 {
                    (b.1 - a.1) / (b.0 - a.0)
                } else {
                    0.0
                };
                (a.1 + slope * (rh - a.0)).max(a.1)
            } else if rh >= p[p.len() - 1].0 {
                p[p.len() - 1].1
            } else {
                let k = p.iter().position(|q| q.0 >= rh).unwrap_or(p.len() - 1);
                let (a, b) = (p[k - 1], p[k]);
                if b.0 > a.0 {
                    a.1 + (b.1 - a.1) * (rh - a.0) / (b.0 - a.0)
                } else {
                    b.1
                }
            }
        }
    }
}

/// Run every policy of every scenario on its seeds (rayon over all
/// replications) and evaluate.
pub fn run_suite(scenarios: &[SuiteScenario]) -> super::Result<SuiteResult> {
    let jobs: Vec<(usize, usize, usize)> = scenarios
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            let np = s.scenario.policies.len();
            let ns = s.scenario.seeds.len();
            (0..np).flat_map(move |p| (0..ns).map(move |k| (i, p, k)))
        })
        .collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = jobs.len();
    let results: Vec<super::Result<RunResult>> = jobs
        .par_iter()
        .map(|&(i, p, k)| {
            let sc = &scenarios[i].scenario;
            let r = run_one(sc, &sc.policies[p], sc.seeds[k])
                .map_err(|e| err!("{}: {}: {e}", scenarios[i].id, sc.policies[p].label()));
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_multiple_of(50) || n == total {
                eprintln!("suite: {n}/{total} replications");
            }
            r
        })
        .collect();
    // grouped[i][p] = runs in seed order
    let mut grouped: Vec<Vec<Vec<RunResult>>> = scenarios
        .iter()
        .map(|s| (0..s.scenario.policies.len()).map(|_| Vec::new()).collect())
        .collect();
    for (r, &(i, p, _)) in results.into_iter().zip(&jobs) {
        grouped[i][p].push(r?);
    }
    let mut balancing = Vec::new();
    let mut autoscaling = Vec::new();
    for (s, g) in scenarios.iter().zip(grouped) {
        let label = |p: usize| s.scenario.policies[p].label().to_string();
        let find = |name: &str| (0..g.len()).find(|&p| label(p) == name);
        match s.kind {
            Kind::Balancing => {
                let idx = [find("aya"), find("p2c"), find("peak_ewma")];
                let [Some(a), Some(b), Some(c)] = idx else {
                    bail!("{}: needs policies aya, p2c, peak_ewma", s.id);
                };
                let m = |p: usize, f: fn(&RunResult) -> f64| mean(g[p].iter().map(f));
                let p99 = [a, b, c].map(|p| m(p, |r| r.metrics.p99));
                let success = [a, b, c].map(|p| m(p, |r| r.metrics.success_rate));
                let best = p99[1].min(p99[2]);
                let best_succ = success[1].max(success[2]);
                let ratio_best = p99[0] / best;
                let success_diff_pp = 100.0 * (success[0] - best_succ);
                balancing.push(BalRow {
                    id: s.id.clone(),
                    family: s.family.clone(),
                    split: s.split,
                    summary: s.summary.clone(),
                    p99,
                    success,
                    ratio_best,
                    ratio_p2c: p99[0] / p99[1],
                    ratio_pewma: p99[0] / p99[2],
                    success_diff_pp,
                    pass: ratio_best <= P99_TOL && success_diff_pp >= -SUCCESS_TOL_PP,
                    aya_switches: m(a, |r| r.metrics.algorithm_switches as f64),
                    decisions: g[a].first().map(|r| log_lines(r, 40)).unwrap_or_default(),
                });
            }
            Kind::Autoscaling => {
                let point = |p: usize| Point {
                    label: label(p),
                    replica_hours: mean(g[p].iter().map(|r| r.metrics.replica_hours)),
                    slo_minutes: mean(g[p].iter().map(|r| r.metrics.slo_violation_minutes)),
                    actions: mean(g[p].iter().map(|r| r.metrics.scaling_actions as f64)),
                };
                let Some(a) = find("aya") else {
                    bail!("{}: needs policy aya", s.id);
                };
                let aya = point(a);
                let hpa: Vec<Point> = HPA_TARGETS
                    .iter()
                    .filter_map(|t| find(&format!("hpa@{t}")).map(point))
                    .collect();
                let pts: Vec<(f64, f64)> = hpa
                    .iter()
                    .map(|h| (h.replica_hours, h.slo_minutes))
                    .collect();
                let hpa_at_aya = interpolate(&pts, aya.replica_hours);
                let same = hpa.iter().find(|h| h.label == "hpa@0.7");
                autoscaling.push(AutoRow {
                    id: s.id.clone(),
                    family: s.family.clone(),
                    split: s.split,
                    summary: s.summary.clone(),
                    on_frontier: aya.slo_minutes <= hpa_at_aya + FRONTIER_EPS,
                    bracketed: pts.iter().any(|p| p.0 <= aya.replica_hours)
                        && pts.iter().any(|p| p.0 >= aya.replica_hours),
                    slo_ratio: (aya.slo_minutes + SLO_OFFSET) / (hpa_at_aya + SLO_OFFSET),
                    actions_ok: same.is_some_and(|h| aya.actions <= h.actions),
                    hpa_at_aya,
                    aya,
                    hpa,
                    decisions: g[a].first().map(|r| log_lines(r, 40)).unwrap_or_default(),
                });
            }
        }
    }
    let summaries = [Some(Split::Test), Some(Split::Tune), None]
        .into_iter()
        .map(|sp| summarize(&balancing, &autoscaling, sp))
        .collect();
    Ok(SuiteResult {
        balancing,
        autoscaling,
        summaries,
        runs: total,
        wall_seconds: 0.0,
    })
}

/// Acceptance summary over one split (None = all).
pub fn summarize(bal: &[BalRow], auto: &[AutoRow], split: Option<Split>) -> Summary {
    let b: Vec<&BalRow> = bal
        .iter()
        .filter(|r| split.is_none_or(|s| r.split == s))
        .collect();
    let a: Vec<&AutoRow> = auto
        .iter()
        .filter(|r| split.is_none_or(|s| r.split == s))
        .collect();
    let geo = |f: fn(&BalRow) -> f64| geomean(&b.iter().map(|r| f(r)).collect::<Vec<_>>());
    let geo_p2c = geo(|r| r.ratio_p2c);
    let geo_pewma = geo(|r| r.ratio_pewma);
    let bal_pass = b.iter().filter(|r| r.pass).count();
    let auto_frontier_pass = a.iter().filter(|r| r.on_frontier).count();
    let auto_actions_pass = a.iter().filter(|r| r.actions_ok).count();
    let geo_slo = geomean(&a.iter().map(|r| r.slo_ratio).collect::<Vec<_>>());
    let h07 = |r: &AutoRow| r.hpa.iter().find(|h| h.label == "hpa@0.7").cloned();
    Summary {
        split,
        bal_n: b.len(),
        bal_pass,
        bal_p99_pass: b.iter().filter(|r| r.ratio_best <= P99_TOL).count(),
        bal_success_pass: b
            .iter()
            .filter(|r| r.success_diff_pp >= -SUCCESS_TOL_PP)
            .count(),
        geo_p2c,
        geo_pewma,
        geo_best: geo(|r| r.ratio_best),
        worst_ratio: b.iter().map(|r| r.ratio_best).fold(f64::NAN, f64::max),
        worst_success_pp: b.iter().map(|r| r.success_diff_pp).fold(f64::NAN, f64::min),
        auto_n: a.len(),
        auto_frontier_pass,
        auto_actions_pass,
        auto_bracketed: a.iter().filter(|r| r.bracketed).count(),
        geo_slo,
        replica_hours: [
            a.iter().map(|r| r.aya.replica_hours).sum(),
            a.iter()
                .filter_map(|r| h07(r))
                .map(|h| h.replica_hours)
                .sum(),
        ],
        actions: [
            a.iter().map(|r| r.aya.actions).sum(),
            a.iter().filter_map(|r| h07(r)).map(|h| h.actions).sum(),
        ],
        bal_met: !b.is_empty()
            && bal_pass == b.len()
            && geo_p2c <= GEO_P2C
            && geo_pewma <= GEO_PEWMA,
        auto_met: !a.is_empty()
            && auto_frontier_pass == a.len()
            && auto_actions_pass == a.len()
            && geo_slo <= GEO_SLO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_on_the_lower_envelope() {
        let pts = [(10.0, 5.0), (20.0, 1.0), (30.0, 2.0)];
        assert!((interpolate(&pts, 15.0) - 3.0).abs() < 1e-12);
        // above the costliest: the envelope's last value (1, not 2)
        assert!((interpolate(&pts, 40.0) - 1.0).abs() < 1e-12);
        // below the cheapest: extrapolated upward
        assert!((interpolate(&pts, 5.0) - 7.0).abs() < 1e-12);
        assert!((geomean(&[1.0, 4.0]) - 2.0).abs() < 1e-12);
    }
}
