//! Known events in the simulator (issue 15, part 1): run a scenario whose
//! `[forecaster]` names an events calendar four ways — Aya with the
//! calendar, Aya with the same forecaster without it, the same without it
//! but with the validation origins a selection with a calendar uses (the
//! control: only the calendar differs from the first), and HPA — and print
//! SLO-violation minutes, replica-hours, scaling actions and p99 (mean ±
//! 95 % CI over the scenario's seeds), plus the paired differences of Aya
//! with the calendar against Aya without.
//!
//! `AYA_DATASETS=/work/shared/datasets target/debug/examples/events_sim
//! [--scenario scenarios/examples/worldcup_events.toml] [--replications N]
//! [--duration S]`

use std::path::PathBuf;

use aya_sim::run::{RunError, ScenarioResult, run_scenario};
use aya_sim::scenario::{PolicySpec, Scenario};
use aya_sim::stats::paired;

fn main() -> anyhow::Result<()> {
    let mut path = PathBuf::from("scenarios/examples/worldcup_events.toml");
    let mut replications = None;
    let mut duration = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> anyhow::Result<f64> {
            args.next()
                .and_then(|s| s.parse().ok())
                .filter(|v: &f64| *v > 0.0)
                .ok_or_else(|| anyhow::anyhow!("{what} needs a number > 0"))
        };
        match a.as_str() {
            "--scenario" => {
                path = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--scenario needs a file"))?
            }
            "--replications" => replications = Some(num("--replications")? as usize),
            "--duration" => duration = Some(num("--duration")?),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let mut sc = Scenario::load(&path)?;
    if let Some(n) = replications {
        sc.seeds.truncate(n.max(1));
    }
    if let Some(d) = duration {
        sc.model.duration = Some(d);
    }
    let Some(cal) = sc.forecaster.as_ref().and_then(|f| f.calendar.clone()) else {
        anyhow::bail!(
            "{}: its [forecaster] names no events calendar",
            path.display()
        );
    };
    let window = sc.model.duration.unwrap_or(f64::INFINITY);
    let events = cal.0.events.len();
    let in_window = cal
        .0
        .events
        .iter()
        .filter(|e| e.start_ms >= 0 && (e.start_ms as f64) < window * 1000.0)
        .count();
    println!(
        "scenario {} ({} s, {} seeds): calendar of {events} events, {in_window} start in the window",
        sc.name,
        window,
        sc.seeds.len()
    );
    let started = std::time::Instant::now();
    let with = run_policies(&sc, &["aya", "hpa"])?;
    let mut plain = sc.clone();
    if let Some(f) = &mut plain.forecaster {
        f.events = None;
        f.calendar = None;
    }
    let without = run_policies(&plain, &["aya"])?;
    // The control: no calendar, but as many validation origins as a
    // selection with a calendar uses (`OnlineConfig::event_origins`), so
    // that the difference to the calendar run is the calendar's alone.
    let mut control = plain.clone();
    if let Some(f) = &mut control.forecaster {
        let origins = aya_forecaster::online::OnlineConfig::default().event_origins;
        f.params
            .insert("origins".into(), toml::Value::Integer(origins as i64));
    }
    let control = run_policies(&control, &["aya"])?;
    println!("ran in {:.0} s\n", started.elapsed().as_secs_f64());
    let _ = &control;

    let rows = [
        ("aya + calendar", &with, 0),
        ("aya, no calendar", &without, 0),
        ("aya, no calendar, 20 origins", &control, 0),
        ("hpa", &with, 1),
    ];
    println!("| policy | SLO-violation minutes | replica-hours | scaling actions | p99 (s) |");
    println!("|---|---|---|---|---|");
    for (label, res, i) in rows {
        let s = &res.policies[i].summary;
        let e = |m: &str| {
            let v = &s[m];
            format!("{:.1} ± {:.1}", v.mean, v.ci95)
        };
        println!(
            "| {label} | {} | {} | {} | {:.3} |",
            e("slo_violation_minutes"),
            e("replica_hours"),
            e("scaling_actions"),
            s["p99"].mean
        );
    }
    // Paired by seed: the same arrivals with and without the calendar.
    let a = &with.policies[0].runs;
    for (what, b) in [
        ("no calendar", &without.policies[0].runs),
        ("no calendar, 20 origins", &control.policies[0].runs),
    ] {
        for (name, f) in [
            (
                "slo_violation_minutes",
                (|m: &aya_sim::engine::RunMetrics| m.slo_violation_minutes) as fn(&_) -> f64,
            ),
            ("replica_hours", |m| m.replica_hours),
        ] {
            let p = paired(
                &b.iter().map(f).collect::<Vec<_>>(),
                &a.iter().map(f).collect::<Vec<_>>(),
            );
            println!(
                "calendar − {what}, {name}: {:+.2} (95 % CI ± {:.2}, {} pairs)",
                p.diff.mean, p.diff.ci95, p.diff.n
            );
        }
    }
    Ok(())
}

/// `sc` with only the named policies.
fn run_policies(sc: &Scenario, names: &[&str]) -> Result<ScenarioResult, RunError> {
    let mut sc = sc.clone();
    sc.policies = names.iter().map(|n| PolicySpec::named(n)).collect();
    run_scenario(&sc)
}
