//! Score Aya's predictive headroom alert against a reactive utilisation
//! alert on the broad suite's autoscaling traces (issue 15, part 3).
//!
//! `target/debug/examples/alerts [--split test|tune|all] [--seed N] [--lead S]
//! [--forecaster naive|online|warm] [--bound upper|mean]`
//!
//! Each autoscaling scenario is replayed on a **fixed pool** (the alert is
//! about the capacity there is, so nothing may scale under it) of as many
//! replicas as HPA at 0.7 used on average on the same trace: the peaks then
//! overload it and the troughs do not. Aya's engine runs in the loop with
//! the scenario's forecaster; every tick is traced and both alerts are scored
//! with [`aya_sim::alerts`]: "exhaustion within `lead` seconds" from Aya's
//! headroom forecast, and "utilisation ≥ 80 % for 5 minutes".

use std::path::PathBuf;

use aya_sim::alerts::{AlertRules, AlertScore, SloWindow, fired, score};
use aya_sim::engine::simulate_traced;
use aya_sim::suite::{Kind, Split, SuiteConfig, SuiteForecaster, generate};

fn parse_args() -> anyhow::Result<(SuiteConfig, AlertRules)> {
    let mut cfg = SuiteConfig::new();
    cfg.kind = Some(Kind::Autoscaling);
    cfg.split = Some(Split::Test);
    let mut rules = AlertRules::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--split" => {
                cfg.split = match args.next().as_deref() {
                    Some("test") => Some(Split::Test),
                    Some("tune") => Some(Split::Tune),
                    Some("all") => None,
                    other => anyhow::bail!("--split must be test, tune or all, got {other:?}"),
                }
            }
            "--seed" => {
                cfg.seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--seed needs an integer"))?
            }
            "--lead" => {
                rules.lead = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|v: &f64| *v > 0.0)
                    .ok_or_else(|| anyhow::anyhow!("--lead needs seconds > 0"))?
            }
            "--bound" => {
                rules.on_mean = match args.next().as_deref() {
                    Some("mean") => true,
                    Some("upper") => false,
                    other => anyhow::bail!("--bound must be upper or mean, got {other:?}"),
                }
            }
            "--forecaster" => {
                cfg.forecaster = args
                    .next()
                    .as_deref()
                    .and_then(SuiteForecaster::parse)
                    .ok_or_else(|| anyhow::anyhow!("--forecaster must be naive, online or warm"))?
            }
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok((cfg, rules))
}

/// One scenario on its fixed pool: the predictive and the reactive score
/// (`None` for a scenario without a duration or autoscaling bounds).
fn score_scenario(
    s: &aya_sim::suite::SuiteScenario,
    rules: &AlertRules,
) -> anyhow::Result<Option<(AlertScore, AlertScore)>> {
    let sc = &s.scenario;
    let seed = sc.seeds[0];
    let hpa = sc
        .policies
        .iter()
        .find(|p| p.label.as_deref() == Some("hpa@0.7"))
        .or_else(|| sc.policies.iter().find(|p| p.name == "hpa"))
        .ok_or_else(|| anyhow::anyhow!("{}: no hpa policy", s.id))?;
    let aya = sc
        .policies
        .iter()
        .find(|p| p.name == "aya")
        .ok_or_else(|| anyhow::anyhow!("{}: no aya policy", s.id))?;
    let Some(duration) = sc.model.duration else {
        return Ok(None);
    };
    let Some(scaling) = sc.model.scaling.clone() else {
        return Ok(None);
    };
    let run = aya_sim::run::run_one(sc, hpa, seed)?;
    let pool = ((run.metrics.replica_hours * 3600.0 / duration).round() as u32)
        .clamp(scaling.min.max(1), scaling.max.max(1));
    let mut fixed = sc.clone();
    fixed.model.scaling = None;
    fixed.model.backends = (0..pool)
        .map(|i| {
            let mut b = scaling.template.clone();
            b.name = format!("{}-{i}", scaling.template.name);
            b
        })
        .collect();
    fixed.model.series_window = Some(fixed.model.slo.window);
    let ctl = aya_sim::run::control_loop(&fixed, aya, seed)?;
    let r = simulate_traced(&fixed.model, seed, Some(ctl))?;
    let slo = fixed.model.slo;
    let windows: Vec<SloWindow> = r
        .series
        .iter()
        .map(|w| SloWindow {
            start: w.t,
            violated: slo.p99.is_some_and(|p| w.p99 > p)
                || slo.success.is_some_and(|m| w.success_rate < m),
        })
        .collect();
    let (predictive, reactive) = fired(&r.control_trace, rules);
    let p = score(&predictive, &windows, rules.lead);
    let q = score(&reactive, &windows, rules.lead);
    let fmt = |a: &AlertScore| {
        format!(
            "{:.2} / {:.2} / {:.0} s",
            a.precision(),
            a.recall(),
            a.mean_lead()
        )
    };
    println!(
        "| {} | {pool} | {} | {} | {} |",
        s.id,
        windows.iter().filter(|w| w.violated).count(),
        fmt(&p),
        fmt(&q)
    );
    Ok(Some((p, q)))
}

fn main() -> anyhow::Result<()> {
    let (mut cfg, rules) = parse_args()?;
    if let Ok(d) = std::env::var("AYA_DATASETS") {
        cfg.datasets = PathBuf::from(d);
    }
    let data = std::env::temp_dir().join(format!("aya-alerts-{}", std::process::id()));
    let scenarios = generate(&cfg, &data)?;
    let (mut total_p, mut total_r) = (AlertScore::default(), AlertScore::default());
    println!(
        "| scenario | pool | violated min | predictive P / R / lead | reactive P / R / lead |"
    );
    println!("|---|---|---|---|---|");
    for s in &scenarios {
        if let Some((p, q)) = score_scenario(s, &rules)? {
            total_p = total_p.add(&p);
            total_r = total_r.add(&q);
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    for (name, a) in [
        ("predictive (Aya headroom)", total_p),
        ("reactive (util ≥ 0.8 for 5 min)", total_r),
    ] {
        println!(
            "\n{name}: {} warnings, precision {:.3}, {} of {} episodes caught (recall {:.3}), mean lead {:.0} s",
            a.warnings,
            a.precision(),
            a.caught,
            a.episodes,
            a.recall(),
            a.mean_lead()
        );
    }
    Ok(())
}
