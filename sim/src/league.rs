//! The policy league table (issue #5): Aya against the baselines on the
//! checked-in scenarios in `scenarios/league/`.
//!
//! Every scenario file lists the policies it compares; this module runs each
//! of them over the same seeds (common random numbers: every policy sees the
//! same arrivals and service draws), then checks the targets against
//! the measured means and writes `league.md` and `league.json`. A target that
//! is missed is reported as missed, with its figures: the baselines are run
//! with their documented defaults and never tuned.
//!
//! One scenario needs a calibration step: the autoscaling target compares
//! SLO-violation minutes *at equal replica-hours*. The league first runs the
//! reference (HPA at its default target), then bisects Aya's
//! `target_utilization` until Aya's replica-hours are within ±2 % of it, and
//! reports the value it found. Only Aya's own parameter is searched.
//!
//! This module is the library half of `aya league`: the targets, the
//! calibration, the evaluation and the Markdown. Reading the scenario
//! directory, printing and writing the files is the command's (`aya-cli`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::{RunError, ScenarioResult, run_scenario};
use crate::scenario::Scenario;
use crate::stats::Estimate;

/// How a target compares a policy's metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    /// policy ≤ (1 + tol) × reference: "within tol" for a lower-is-better
    /// metric, where being better by more than tol is not a failure.
    NotWorse {
        /// Reference policy label.
        reference: &'static str,
        /// Relative tolerance.
        tol: f64,
    },
    /// |policy − reference| ≤ tol × reference.
    RelWithin {
        /// Reference policy label.
        reference: &'static str,
        /// Relative tolerance.
        tol: f64,
    },
    /// policy ≤ ratio × reference.
    RatioAtMost {
        /// Reference policy label.
        reference: &'static str,
        /// Largest allowed ratio.
        ratio: f64,
    },
    /// policy ≥ value.
    AtLeast {
        /// Threshold.
        value: f64,
    },
}

/// One target of the issue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    /// Scenario name.
    pub scenario: &'static str,
    /// Metric name (see [`crate::run::METRICS`]).
    pub metric: &'static str,
    /// Policy label checked.
    pub policy: &'static str,
    /// The comparison.
    pub check: Check,
    /// The wording.
    pub text: &'static str,
}

/// The targets of issue #5, item 8.
pub const TARGETS: &[Target] = &[
    Target {
        scenario: "identical_servers",
        metric: "mean",
        policy: "aya",
        check: Check::NotWorse {
            reference: "p2c",
            tol: 0.02,
        },
        text: "Aya within 2% of P2C's mean (not worse by more)",
    },
    Target {
        scenario: "identical_servers",
        metric: "p99",
        policy: "aya",
        check: Check::NotWorse {
            reference: "p2c",
            tol: 0.05,
        },
        text: "Aya within 5% of P2C's p99 (not worse by more)",
    },
    Target {
        scenario: "one_slow_replica",
        metric: "success_rate",
        policy: "aya",
        check: Check::AtLeast { value: 0.999 },
        text: "Aya >= 99.9% success at a 1 s timeout",
    },
    Target {
        scenario: "mixed_capacity_degrading",
        metric: "p99",
        policy: "aya",
        check: Check::RatioAtMost {
            reference: "p2c",
            ratio: 0.7,
        },
        text: "Aya's p99 >= 30% below P2C",
    },
    Target {
        scenario: "mixed_capacity_degrading",
        metric: "p999",
        policy: "aya",
        check: Check::RatioAtMost {
            reference: "p2c",
            ratio: 0.5,
        },
        text: "Aya's p99.9 >= 2x lower than P2C",
    },
    Target {
        scenario: "worldcup_autoscaling",
        metric: "slo_violation_minutes",
        policy: "aya",
        check: Check::RatioAtMost {
            reference: "hpa",
            ratio: 0.5,
        },
        text: ">= 50% fewer SLO-violation minutes than HPA",
    },
    Target {
        scenario: "worldcup_autoscaling",
        metric: "replica_hours",
        policy: "aya",
        check: Check::RelWithin {
            reference: "hpa",
            tol: 0.02,
        },
        text: "at equal replica-hours (+-2%)",
    },
    Target {
        scenario: "worldcup_autoscaling",
        metric: "scaling_actions",
        policy: "aya",
        check: Check::RatioAtMost {
            reference: "hpa",
            ratio: 1.0,
        },
        text: "no more scaling actions than HPA",
    },
];

/// A calibration: search `param` of `policy` so that `metric` matches the reference's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    /// Scenario name.
    pub scenario: &'static str,
    /// Policy label whose parameter is searched.
    pub policy: &'static str,
    /// Parameter (a number).
    pub param: &'static str,
    /// Search interval.
    pub range: (f64, f64),
    /// Metric to match.
    pub metric: &'static str,
    /// Reference policy label.
    pub reference: &'static str,
    /// Stop when within this relative distance.
    pub tol: f64,
    /// Whether the metric grows with the parameter.
    pub increasing: bool,
}

/// Replica-hours fall as the target utilisation rises.
pub const CALIBRATIONS: &[Calibration] = &[Calibration {
    scenario: "worldcup_autoscaling",
    policy: "aya",
    param: "target_utilization",
    range: (0.3, 0.95),
    metric: "replica_hours",
    reference: "hpa",
    tol: 0.01,
    increasing: false,
}];

/// Why a league scenario could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum LeagueError {
    /// A simulation run failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The calibration's reference policy is not in the scenario.
    #[error("calibration: reference `{reference}` missing in {scenario}")]
    MissingReference {
        /// Scenario name.
        scenario: String,
        /// The reference policy label the calibration needs.
        reference: &'static str,
    },
}

/// One bisection step of [`calibrate`], for progress reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationStep<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// The calibration being run.
    pub calibration: &'a Calibration,
    /// Parameter value tried.
    pub value: f64,
    /// The policy's metric at that value (mean over seeds).
    pub got: f64,
    /// The reference's metric (the goal).
    pub goal: f64,
    /// `(got − goal) / |goal|`.
    pub rel: f64,
}

/// Most bisection steps of a calibration.
const MAX_CALIBRATION_STEPS: usize = 10;

/// Outcome of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    /// The target.
    pub target: Target,
    /// Policy's value (mean over seeds, with CI).
    pub value: Estimate,
    /// Reference's value, when the check has one.
    pub reference: Option<Estimate>,
    /// Whether the target is met on the means.
    pub met: bool,
    /// Human-readable measured figure.
    pub measured: String,
}

/// What `aya league` writes as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct League {
    /// Seeds per scenario.
    pub seeds: Vec<u64>,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
    /// Calibrated parameters: (scenario, policy, param, value).
    pub calibrated: Vec<(String, String, String, f64)>,
    /// Targets.
    pub targets: Vec<TargetResult>,
}

fn estimate(r: &ScenarioResult, policy: &str, metric: &str) -> Option<Estimate> {
    r.policies
        .iter()
        .find(|p| p.label == policy)?
        .summary
        .get(metric)
        .copied()
}

/// Evaluate the targets that apply to `r`.
pub fn evaluate(r: &ScenarioResult) -> Vec<TargetResult> {
    TARGETS
        .iter()
        .filter(|t| t.scenario == r.name)
        .filter_map(|t| {
            let value = estimate(r, t.policy, t.metric)?;
            let (met, reference, measured) = match t.check {
                Check::NotWorse { reference, tol } => {
                    let rv = estimate(r, reference, t.metric)?;
                    let rel = (value.mean - rv.mean) / rv.mean.abs().max(1e-12);
                    (
                        rel <= tol,
                        Some(rv),
                        format!("{:+.2}% vs {reference}", 100.0 * rel),
                    )
                }
                Check::RelWithin { reference, tol } => {
                    let rv = estimate(r, reference, t.metric)?;
                    let rel = (value.mean - rv.mean) / rv.mean.abs().max(1e-12);
                    (
                        rel.abs() <= tol,
                        Some(rv),
                        format!("{:+.2}% vs {reference}", 100.0 * rel),
                    )
                }
                Check::RatioAtMost { reference, ratio } => {
                    let rv = estimate(r, reference, t.metric)?;
                    let q = if rv.mean.abs() > 0.0 {
                        value.mean / rv.mean
                    } else if value.mean > 0.0 {
                        f64::INFINITY
                    } else {
                        0.0
                    };
                    (
                        q <= ratio,
                        Some(rv),
                        format!("ratio {q:.3} vs {reference} (need <= {ratio})"),
                    )
                }
                Check::AtLeast { value: v } => (
                    value.mean >= v,
                    None,
                    format!("{:.5} (need >= {v})", value.mean),
                ),
            };
            Some(TargetResult {
                target: *t,
                value,
                reference,
                met,
                measured,
            })
        })
        .collect()
}

fn set_param(sc: &mut Scenario, policy: &str, param: &str, value: f64) {
    for p in sc.policies.iter_mut().filter(|p| p.label() == policy) {
        p.params
            .insert(param.to_string(), toml::Value::Float(value));
    }
}

/// Bisect `cal.param` so that the policy's metric matches the reference's;
/// returns the full scenario run at the value found, and that value.
/// `progress` sees every step.
pub fn calibrate(
    sc: &Scenario,
    cal: &Calibration,
    progress: &mut dyn FnMut(&CalibrationStep<'_>),
) -> Result<(ScenarioResult, f64), LeagueError> {
    let mut ref_only = sc.clone();
    ref_only.policies.retain(|p| p.label() == cal.reference);
    let reference = run_scenario(&ref_only)?;
    let goal = estimate(&reference, cal.reference, cal.metric)
        .ok_or_else(|| LeagueError::MissingReference {
            scenario: sc.name.clone(),
            reference: cal.reference,
        })?
        .mean;
    let (mut lo, mut hi) = cal.range;
    let mut best: Option<(f64, f64)> = None;
    let mut x = 0.5 * (lo + hi);
    for step in 0..MAX_CALIBRATION_STEPS {
        let mut one = sc.clone();
        one.policies.retain(|p| p.label() == cal.policy);
        set_param(&mut one, cal.policy, cal.param, x);
        let r = run_scenario(&one)?;
        let got = estimate(&r, cal.policy, cal.metric)
            .map(|e| e.mean)
            .unwrap_or(f64::NAN);
        let rel = (got - goal) / goal.abs().max(1e-12);
        progress(&CalibrationStep {
            scenario: &sc.name,
            calibration: cal,
            value: x,
            got,
            goal,
            rel,
        });
        if best.is_none_or(|(_, b)| rel.abs() < b) {
            best = Some((x, rel.abs()));
        }
        if rel.abs() <= cal.tol || step + 1 == MAX_CALIBRATION_STEPS {
            break;
        }
        // Too high a metric: move the parameter the way that lowers it.
        if (got > goal) == cal.increasing {
            hi = x;
        } else {
            lo = x;
        }
        x = 0.5 * (lo + hi);
    }
    let chosen = best.map(|(x, _)| x).unwrap_or(x);
    let mut full = sc.clone();
    set_param(&mut full, cal.policy, cal.param, chosen);
    Ok((run_scenario(&full)?, chosen))
}

const TABLE_METRICS: &[(&str, &str, usize, f64)] = &[
    ("mean", "mean (ms)", 2, 1e3),
    ("p99", "p99 (ms)", 1, 1e3),
    ("p999", "p99.9 (ms)", 1, 1e3),
    ("success_rate", "success (%)", 3, 100.0),
    ("slo_violation_minutes", "SLO-viol. min", 1, 1.0),
    ("replica_hours", "replica-h", 2, 1.0),
    ("scaling_actions", "scaling actions", 1, 1.0),
];

fn scaled(e: &Estimate, k: f64, prec: usize) -> String {
    format!("{:.prec$} ± {:.prec$}", e.mean * k, e.ci95 * k)
}

/// Render the Markdown table.
pub fn markdown(league: &League, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Aya policy league\n");
    let _ = writeln!(
        s,
        "Reproduce: `{command}`. Means over {} seeds ({}) with 95% confidence half-widths (Student t); \
         every policy sees the same arrivals and service draws per seed.\n",
        league.seeds.len(),
        league
            .seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in &league.scenarios {
        let _ = writeln!(s, "## {}\n\n{}\n", r.name, r.description.trim());
        let autoscaling = r.policies.iter().any(|p| {
            p.summary
                .get("scaling_actions")
                .is_some_and(|e| e.mean > 0.0)
        });
        let cols: Vec<_> = TABLE_METRICS
            .iter()
            .filter(|(m, ..)| autoscaling || !matches!(*m, "replica_hours" | "scaling_actions"))
            .collect();
        let _ = writeln!(
            s,
            "| policy | {} |",
            cols.iter().map(|c| c.1).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
        for p in &r.policies {
            let cells: Vec<String> = cols
                .iter()
                .map(|(m, _, prec, k)| {
                    p.summary
                        .get(*m)
                        .map_or("n/a".into(), |e| scaled(e, *k, *prec))
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", p.label, cells.join(" | "));
        }
        for (_, pol, param, v) in league.calibrated.iter().filter(|c| c.0 == r.name) {
            let _ = writeln!(
                s,
                "\nCalibrated for equal replica-hours: `{pol}.{param} = {v:.4}` (searched by `aya league`)."
            );
        }
        let ts: Vec<_> = league
            .targets
            .iter()
            .filter(|t| t.target.scenario == r.name)
            .collect();
        if !ts.is_empty() {
            let _ = writeln!(s, "\n| target | measured | met |\n|---|---|---|");
            for t in ts {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    t.target.text,
                    t.measured,
                    if t.met { "yes" } else { "**NO**" }
                );
            }
        }
        let _ = writeln!(s);
    }
    let met = league.targets.iter().filter(|t| t.met).count();
    let _ = writeln!(s, "**Targets met: {met} of {}.**", league.targets.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::PolicyRuns;
    use std::collections::BTreeMap;

    fn result(name: &str, values: &[(&str, &str, f64)]) -> ScenarioResult {
        let mut policies: Vec<PolicyRuns> = Vec::new();
        for (label, metric, v) in values {
            if !policies.iter().any(|p| p.label == *label) {
                policies.push(PolicyRuns {
                    label: label.to_string(),
                    runs: Vec::new(),
                    summary: BTreeMap::new(),
                    series: Vec::new(),
                    decisions: Vec::new(),
                    headroom: Vec::new(),
                    slo_windows: Vec::new(),
                });
            }
            if let Some(p) = policies.iter_mut().find(|p| p.label == *label) {
                p.summary.insert(
                    metric.to_string(),
                    Estimate {
                        mean: *v,
                        ci95: 0.0,
                        sd: 0.0,
                        n: 5,
                    },
                );
            }
        }
        ScenarioResult {
            name: name.into(),
            description: String::new(),
            seeds: vec![1],
            policies,
            comparisons: Vec::new(),
            events: Vec::new(),
        }
    }

    #[test]
    fn targets_are_checked_against_the_reference() {
        let r = result(
            "identical_servers",
            &[
                ("aya", "mean", 0.0101),
                ("p2c", "mean", 0.0100),
                ("aya", "p99", 0.060),
                ("p2c", "p99", 0.050),
            ],
        );
        let t = evaluate(&r);
        assert_eq!(t.len(), 2);
        assert!(t[0].met, "{:?}", t[0]);
        let better = result(
            "identical_servers",
            &[("aya", "mean", 0.009), ("p2c", "mean", 0.010)],
        );
        assert!(
            evaluate(&better)[0].met,
            "10% better is within the one-sided target"
        );
        let wc = result(
            "worldcup_autoscaling",
            &[
                ("aya", "replica_hours", 0.95),
                ("hpa", "replica_hours", 1.0),
            ],
        );
        assert!(!evaluate(&wc)[0].met, "replica-hours are checked both ways");
        assert!(!t[1].met, "20% worse p99 must fail: {:?}", t[1]);
    }

    #[test]
    fn at_least_and_ratio_checks() {
        let r = result("one_slow_replica", &[("aya", "success_rate", 0.9985)]);
        assert!(!evaluate(&r)[0].met);
        let r = result(
            "mixed_capacity_degrading",
            &[
                ("aya", "p99", 0.06),
                ("p2c", "p99", 0.1),
                ("aya", "p999", 0.05),
                ("p2c", "p999", 0.2),
            ],
        );
        let t = evaluate(&r);
        assert!(t[0].met && t[1].met, "{t:?}");
    }

    #[test]
    fn markdown_marks_missed_targets() {
        let r = result(
            "identical_servers",
            &[
                ("aya", "mean", 0.02),
                ("p2c", "mean", 0.01),
                ("aya", "p99", 0.05),
                ("p2c", "p99", 0.05),
            ],
        );
        let league = League {
            seeds: vec![1, 2],
            targets: evaluate(&r),
            scenarios: vec![r],
            calibrated: Vec::new(),
        };
        let md = markdown(&league, "aya league");
        assert!(md.contains("**NO**"), "{md}");
        assert!(md.contains("Targets met: 1 of 2"), "{md}");
    }
}
