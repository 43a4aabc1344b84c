//! The scoreboard: what `aya demo` prints and saves as `scoreboard.txt` /
//! `scoreboard.json`.
//!
//! It holds only figures that are a pure function of the seed (simulated
//! latencies, success rates, replica-hours, forecast errors), never wall-clock
//! measurements, so the same seed prints the same scoreboard byte for byte.
//! That is what the determinism test compares.

use std::fmt::Write as _;

use aya_sim::run::ScenarioResult;
use aya_sim::stats::Estimate;
use serde::Serialize;

/// One policy's row in a scenario table (mean ± 95% CI over seeds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Policy label.
    pub policy: String,
    /// Median latency, seconds.
    pub p50: Estimate,
    /// 99th percentile latency, seconds.
    pub p99: Estimate,
    /// 99.9th percentile latency, seconds.
    pub p999: Estimate,
    /// Requests answered within the timeout / requests arrived.
    pub success_rate: Estimate,
    /// Minutes (virtual) whose p99 or success rate broke the SLO.
    pub slo_violation_minutes: Estimate,
    /// Replica-hours (virtual) including boot time.
    pub replica_hours: Estimate,
    /// Scaling actions applied.
    pub scaling_actions: Estimate,
    /// Mean max/mean utilisation across backends (1.0 = perfectly even).
    pub imbalance: Estimate,
}

/// One scenario's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    /// Scenario key (`balancing`, `scaling`).
    pub key: String,
    /// What it is.
    pub description: String,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Rows, in policy order (Aya first).
    pub rows: Vec<Row>,
}

impl Table {
    /// The table of a simulated scenario.
    pub fn from_result(key: &str, res: &ScenarioResult) -> Table {
        let get =
            |p: &aya_sim::run::PolicyRuns, m: &str| p.summary.get(m).copied().unwrap_or_default();
        Table {
            key: key.to_string(),
            description: res.description.clone(),
            seeds: res.seeds.clone(),
            rows: res
                .policies
                .iter()
                .map(|p| Row {
                    policy: p.label.clone(),
                    p50: get(p, "p50"),
                    p99: get(p, "p99"),
                    p999: get(p, "p999"),
                    success_rate: get(p, "success_rate"),
                    slo_violation_minutes: get(p, "slo_violation_minutes"),
                    replica_hours: get(p, "replica_hours"),
                    scaling_actions: get(p, "scaling_actions"),
                    imbalance: get(p, "imbalance_max_mean"),
                })
                .collect(),
        }
    }
}

/// Forecast accuracy on the held-out test period, per model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastRow {
    /// Model name (`aya (selected)` for the selection's combination).
    pub model: String,
    /// Mean absolute error scaled by in-sample seasonal-naive error (lower is better).
    pub mase: f64,
    /// Symmetric MAPE, percent.
    pub smape: f64,
}

/// The forecasting part of the scoreboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastBoard {
    /// What selection chose per horizon band, e.g. `1: theta | 2-12: ets`.
    pub selected: String,
    /// Points of demand the models were trained on, and their step in seconds.
    pub train_points: usize,
    /// Step of the demand series, seconds.
    pub step_secs: u32,
    /// Steps forecast (the whole test period from its start).
    pub horizon: usize,
    /// Coverage of the 80% and 95% intervals on the test period.
    pub coverage_80: f64,
    /// Coverage of the 95% interval.
    pub coverage_95: f64,
    /// Every candidate and the selection, best first.
    pub rows: Vec<ForecastRow>,
}

/// Everything the demo scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scoreboard {
    /// The demo's seed.
    pub seed: u64,
    /// Plan name (`full` or `quick`).
    pub plan: String,
    /// Forecasting on the held-out period.
    pub forecast: ForecastBoard,
    /// Simulated scenarios.
    pub tables: Vec<Table>,
}

fn ms(e: &Estimate) -> String {
    format!("{:.1} ± {:.1}", e.mean * 1000.0, e.ci95 * 1000.0)
}

fn pct(e: &Estimate) -> String {
    format!("{:.3} ± {:.3}", e.mean * 100.0, e.ci95 * 100.0)
}

fn num(e: &Estimate, prec: usize) -> String {
    format!("{:.prec$} ± {:.prec$}", e.mean, e.ci95)
}

impl Scoreboard {
    /// The text printed by `aya demo` (and saved as `scoreboard.txt`).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "AYA DEMO SCOREBOARD  (seed {}, plan {})",
            self.seed, self.plan
        );
        let _ = writeln!(s);
        let f = &self.forecast;
        let _ = writeln!(
            s,
            "Forecasting: {} steps of {} s of unseen demand, models trained on {} points",
            f.horizon, f.step_secs, f.train_points
        );
        let _ = writeln!(s, "  selected per horizon band: {}", f.selected);
        let _ = writeln!(
            s,
            "  interval coverage on the test period: 80% -> {:.1}%, 95% -> {:.1}%",
            f.coverage_80 * 100.0,
            f.coverage_95 * 100.0
        );
        let _ = writeln!(s, "  {:<28} {:>8} {:>9}", "model", "MASE", "sMAPE %");
        for r in &f.rows {
            let _ = writeln!(s, "  {:<28} {:>8.3} {:>9.2}", r.model, r.mase, r.smape);
        }
        for t in &self.tables {
            let _ = writeln!(s);
            let _ = writeln!(s, "Simulation `{}`: {}", t.key, t.description);
            let _ = writeln!(
                s,
                "  seeds {:?}; mean ± 95% CI; latency in ms; minutes and hours are virtual time",
                t.seeds
            );
            let _ = writeln!(
                s,
                "  {:<12} {:>15} {:>17} {:>19} {:>17} {:>14} {:>14} {:>12} {:>13}",
                "policy",
                "p50",
                "p99",
                "p99.9",
                "success %",
                "SLO-viol. min",
                "replica-h",
                "scalings",
                "max/mean load"
            );
            for r in &t.rows {
                let _ = writeln!(
                    s,
                    "  {:<12} {:>15} {:>17} {:>19} {:>17} {:>14} {:>14} {:>12} {:>13}",
                    r.policy,
                    ms(&r.p50),
                    ms(&r.p99),
                    ms(&r.p999),
                    pct(&r.success_rate),
                    num(&r.slo_violation_minutes, 1),
                    num(&r.replica_hours, 2),
                    num(&r.scaling_actions, 1),
                    num(&r.imbalance, 2),
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(mean: f64) -> Estimate {
        Estimate {
            mean,
            ci95: mean / 10.0,
            sd: 0.0,
            n: 3,
        }
    }

    #[test]
    fn render_shows_every_policy_and_model() {
        let board = Scoreboard {
            seed: 9,
            plan: "quick".into(),
            forecast: ForecastBoard {
                selected: "1: theta".into(),
                train_points: 100,
                step_secs: 300,
                horizon: 12,
                coverage_80: 0.75,
                coverage_95: 0.9,
                rows: vec![ForecastRow {
                    model: "theta".into(),
                    mase: 0.5,
                    smape: 3.0,
                }],
            },
            tables: vec![Table {
                key: "balancing".into(),
                description: "d".into(),
                seeds: vec![1, 2],
                rows: ["aya", "p2c"]
                    .iter()
                    .map(|p| Row {
                        policy: p.to_string(),
                        p50: est(0.01),
                        p99: est(0.2),
                        p999: est(0.5),
                        success_rate: est(0.999),
                        slo_violation_minutes: est(1.0),
                        replica_hours: est(4.0),
                        scaling_actions: est(0.0),
                        imbalance: est(1.2),
                    })
                    .collect(),
            }],
        };
        let text = board.render();
        for needle in ["seed 9", "theta", "aya", "p2c", "200.0 ± 20.0", "99.900"] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert_eq!(text, board.render());
    }
}
