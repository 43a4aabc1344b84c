//! The `aya league` driver: read the scenario directory, run every scenario
//! for every policy (calibrating where [`CALIBRATIONS`] says so), print the
//! Markdown table and write `league.md` and `league.json`. The targets, the
//! calibration and the table are the simulator's ([`aya_sim::league`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya_sim::league::{CALIBRATIONS, CalibrationStep, League, calibrate, evaluate, markdown};
use aya_sim::run::run_scenario;
use aya_sim::scenario::Scenario;

use crate::failure::{CliResult, Failure};
use crate::sim::LeagueArgs;

fn scenario_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading league scenarios from {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Run every league scenario for every policy and write the table.
pub fn run(args: &LeagueArgs) -> CliResult {
    if args.seeds == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--seeds must be >= 1")));
    }
    let files = scenario_files(&args.scenarios).map_err(Failure::input)?;
    if files.is_empty() {
        return Err(Failure::input(anyhow::anyhow!(
            "no *.toml scenario in {}",
            args.scenarios.display()
        )));
    }
    let seeds: Vec<u64> = (1..=args.seeds as u64).collect();
    let mut league = League {
        seeds: seeds.clone(),
        scenarios: Vec::new(),
        calibrated: Vec::new(),
        targets: Vec::new(),
    };
    for f in files {
        let mut sc = Scenario::load(&f).map_err(Failure::input)?;
        if !args.only.is_empty() && !args.only.contains(&sc.name) {
            continue;
        }
        sc.seeds = seeds.clone();
        eprintln!(
            "league: {} ({} policies x {} seeds)",
            sc.name,
            sc.policies.len(),
            seeds.len()
        );
        let result = match CALIBRATIONS.iter().find(|c| c.scenario == sc.name) {
            Some(cal) => {
                let (r, v) = calibrate(&sc, cal, &mut print_step).map_err(Failure::runtime)?;
                league.calibrated.push((
                    sc.name.clone(),
                    cal.policy.to_string(),
                    cal.param.to_string(),
                    v,
                ));
                r
            }
            None => run_scenario(&sc).map_err(Failure::runtime)?,
        };
        league.targets.extend(evaluate(&result));
        league.scenarios.push(result);
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))
        .map_err(Failure::runtime)?;
    let mut command = format!("aya league --seeds {}", args.seeds);
    for o in &args.only {
        let _ = write!(command, " --only {o}");
    }
    let md = markdown(&league, &command);
    let md_path = args.output.join("league.md");
    std::fs::write(&md_path, &md)
        .with_context(|| format!("writing {}", md_path.display()))
        .map_err(Failure::runtime)?;
    let json_path = args.output.join("league.json");
    let json = serde_json::to_string_pretty(&league).map_err(Failure::runtime)?;
    std::fs::write(&json_path, json)
        .with_context(|| format!("writing {}", json_path.display()))
        .map_err(Failure::runtime)?;
    print!("{md}");
    eprintln!(
        "league: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    Ok(())
}

/// One calibration step on stderr.
fn print_step(s: &CalibrationStep<'_>) {
    eprintln!(
        "calibrate {}: {}={:.4} -> {}={:.3} (goal {:.3}, {:+.2}%)",
        s.scenario,
        s.calibration.param,
        s.value,
        s.calibration.metric,
        s.got,
        s.goal,
        100.0 * s.rel
    );
}
