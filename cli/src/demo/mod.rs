//! # `aya demo`: the whole loop on built-in data
//!
//! A newcomer's first command. With no network and no external services it
//! runs every part of Aya on data Aya generates itself, in this order:
//!
//! 1. **history** ([`history`]): days of synthetic traffic and per-backend
//!    metrics from `aya_forecaster::synth` (deterministic by seed); the last
//!    day is held out as the test period;
//! 2. **forecasting** ([`train`]): seasonality detection, every candidate model
//!    fitted, per-horizon selection by rolling-origin backtest on the training
//!    period, and the result scored on the unseen test period;
//! 3. **live controller** ([`live`]): the real service (`server::serve`)
//!    in-process on `127.0.0.1:0`; metrics streamed in over aya.v1 `Ingest`; a
//!    data-plane client following the published weights over aya.v1 `Watch`;
//! 4. **replay** ([`replay`]): the test period in the simulator under Aya
//!    (with the trained forecaster) and the baselines, several seeds each;
//! 5. **scoreboard** ([`scoreboard`]) on stdout and a self-contained HTML
//!    **report** ([`report`]) with the simulator's per-scenario reports.
//!
//! Everything on the scoreboard is a function of the seed alone (virtual time,
//! seeded streams), so the same seed prints the same scoreboard; wall-clock
//! figures (stage timings, the live stage) go to stderr and the report only.

pub mod history;
pub mod live;
pub mod plan;
pub mod progress;
pub mod replay;
pub mod report;
pub mod scoreboard;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya_policy::DemandForecaster;
use aya_sim::run::ScenarioResult;

use self::history::History;
use self::live::LiveSummary;
use self::plan::Plan;
use self::progress::Progress;
use self::replay::Kind;
use self::scoreboard::{Scoreboard, Table};
use self::train::Trained;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Generating or writing the history.
    #[error("building the history: {0}")]
    History(String),
    /// Training or selection.
    #[error("training the forecaster: {0}")]
    Train(String),
    /// The live controller stage.
    #[error("live controller: {0}")]
    Live(String),
    /// The simulator stage.
    #[error("simulation: {0}")]
    Replay(String),
    /// Writing an output file.
    #[error("writing {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Seed of the history and of the replications (seed, seed+1, ...).
    pub seed: u64,
    /// Sizes and time constants.
    pub plan: Plan,
    /// Output directory.
    pub output: PathBuf,
    /// Print stage lines and progress bars on stderr.
    pub progress: bool,
    /// Threads for the simulations.
    pub threads: usize,
    /// Wall time per replayed minute in the live stage.
    pub live_step: Duration,
}

impl DemoConfig {
    /// Defaults for `plan`: all cores, the plan's wall time per streamed minute.
    pub fn new(seed: u64, plan: Plan, output: PathBuf) -> DemoConfig {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let live_step = Duration::from_millis(plan.stream_step_ms);
        DemoConfig {
            seed,
            plan,
            output,
            progress: true,
            threads,
            live_step,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The scoreboard (also in `scoreboard.txt` / `scoreboard.json`).
    pub scoreboard: Scoreboard,
    /// What the live controller stage did.
    pub live: LiveSummary,
    /// The HTML report.
    pub report: PathBuf,
    /// Every file written, relative to the output directory.
    pub files: Vec<PathBuf>,
    /// Wall-clock seconds per stage.
    pub timings: Vec<(String, f64)>,
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

const STAGES: usize = 6;

/// Run the demo.
pub fn run(cfg: &DemoConfig) -> Result<DemoOutcome, DemoError> {
    let out = &cfg.output;
    std::fs::create_dir_all(out).map_err(|source| DemoError::Io {
        path: out.clone(),
        source,
    })?;
    let p = Progress::new(cfg.progress);
    let plan = &cfg.plan;
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((name.to_string(), clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    // 1. History.
    p.stage(
        1,
        STAGES,
        &format!(
            "generating {} days of synthetic traffic and backend metrics (seed {})",
            plan.history_days, cfg.seed
        ),
    );
    let history = History::build(cfg.seed, plan)?;
    let workload = history.write(out)?;
    note_history(&p, &history, plan);
    lap("history", &mut timings);

    // 2. Forecasting.
    p.stage(
        2,
        STAGES,
        &format!(
            "training and selecting forecast models on {} points of demand",
            history.train_demand.len()
        ),
    );
    let bar = p.bar(1, "models");
    let trained = train::train(&history, plan, &bar)?;
    bar.finish();
    p.note(&format!("selected: {}", trained.board.selected));
    lap("forecasting", &mut timings);

    // 3. Live controller over gRPC.
    p.stage(
        3,
        STAGES,
        "starting the controller on 127.0.0.1:0; streaming metrics over gRPC; watching weights",
    );
    let bar = p.bar(live_minutes(plan), "stream");
    let live = live::run(
        &history,
        plan,
        &out.join("controller-data"),
        cfg.live_step,
        &bar,
    )?;
    bar.finish();
    p.note(&live.text());
    lap("live controller", &mut timings);

    // 4-5. Replay.
    let results = replay_all(
        cfg,
        &p,
        &history,
        &trained,
        &workload,
        &mut lap,
        &mut timings,
    )?;
    let scoreboard = write_scores(cfg, &trained, &results, &p, &live)?;
    lap("scoring", &mut timings);
    let report_path = out.join("report.html");
    let html = report::html(&report::ReportInput {
        plan,
        history: &history,
        trained: &trained,
        live: Some(&live),
        live_error: None,
        scenarios: &results,
        scoreboard: &scoreboard,
        timings: &timings,
    });
    write(&report_path, &html)?;
    Ok(DemoOutcome {
        scoreboard,
        live,
        report: report_path,
        files: output_files(),
        timings,
    })
}

/// Print the one-line summary of the generated history.
fn note_history(p: &Progress, history: &History, plan: &Plan) {
    p.note(&format!(
        "{} steps of {} s, {} backends (capacity {}), {} bursts; test period: last day {}:00-{}:00",
        history.data.traffic.len(),
        plan.interval_secs,
        history.data.backends.len(),
        history
            .data
            .backends
            .iter()
            .map(|b| format!("{}x", b.capacity))
            .collect::<Vec<_>>()
            .join(" "),
        history.data.bursts.len(),
        plan.test_start_hour,
        plan.test_start_hour + plan.test_hours
    ));
}

/// Stages 4-5: write, simulate and report every scenario kind against the trained forecaster.
fn replay_all(
    cfg: &DemoConfig,
    p: &Progress,
    history: &History,
    trained: &Trained,
    workload: &Path,
    lap: &mut impl FnMut(&str, &mut Vec<(String, f64)>),
    timings: &mut Vec<(String, f64)>,
) -> Result<Vec<(String, ScenarioResult)>, DemoError> {
    let out = &cfg.output;
    let plan = &cfg.plan;
    let seeds: Vec<u64> = (0..u64::from(plan.replications))
        .map(|i| cfg.seed.wrapping_add(i))
        .collect();
    let step = plan.virtual_secs(f64::from(history.demand_step_secs));
    let selection = trained.selection.clone();
    let train_demand = history.train_demand.clone();
    let factory = move || -> Option<Box<dyn DemandForecaster>> {
        train::service_forecaster(&selection, &train_demand, step)
            .map(|f| Box::new(f) as Box<dyn DemandForecaster>)
    };
    let mut results: Vec<(String, ScenarioResult)> = Vec::new();
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        let sc = replay::write_scenario(kind, plan, history, workload, &seeds, out)?;
        p.stage(
            4 + i,
            STAGES,
            &format!(
                "simulating `{}`: {} policies x {} seeds ({} h of traffic, {}x time compression)",
                kind.key(),
                sc.policies.len(),
                sc.seeds.len(),
                plan.test_hours,
                plan.compression
            ),
        );
        let bar = p.bar((sc.policies.len() * sc.seeds.len()) as u64, kind.key());
        let res = replay::run(&sc, &factory, cfg.threads, &|label| bar.inc(label))?;
        bar.finish();
        let dir = replay::report_dir(out, kind);
        aya_sim::report::write_all(&res, &dir).map_err(|source| DemoError::Io {
            path: dir.clone(),
            source,
        })?;
        lap(&format!("simulation {}", kind.key()), timings);
        results.push((kind.key().to_string(), res));
    }
    Ok(results)
}

/// Stage 6 (scoring): build the scoreboard and write it and the live summary as text and JSON.
fn write_scores(
    cfg: &DemoConfig,
    trained: &Trained,
    results: &[(String, ScenarioResult)],
    p: &Progress,
    live: &LiveSummary,
) -> Result<Scoreboard, DemoError> {
    let out = &cfg.output;
    let plan = &cfg.plan;
    p.stage(6, STAGES, "scoring and writing the report");
    let scoreboard = Scoreboard {
        seed: cfg.seed,
        plan: plan.name.to_string(),
        forecast: trained.board.clone(),
        tables: results
            .iter()
            .map(|(k, r)| Table::from_result(k, r))
            .collect(),
    };
    let text = scoreboard.render();
    write(&out.join("scoreboard.txt"), &text)?;
    let json = serde_json::to_string_pretty(&scoreboard).map_err(|e| DemoError::Io {
        path: out.join("scoreboard.json"),
        source: std::io::Error::other(e),
    })?;
    write(&out.join("scoreboard.json"), &(json + "\n"))?;
    let live_json = serde_json::to_string_pretty(live).map_err(|e| DemoError::Io {
        path: out.join("live.json"),
        source: std::io::Error::other(e),
    })?;
    write(&out.join("live.json"), &(live_json + "\n"))?;
    Ok(scoreboard)
}

/// The files a demo run writes, relative to its output directory.
fn output_files() -> Vec<PathBuf> {
    [
        "scoreboard.txt",
        "scoreboard.json",
        "report.html",
        "live.json",
        "history/traffic.csv",
        "history/backends.csv",
        "history/synth.json",
        "test_traffic.csv",
        "scenario_balancing.toml",
        "scenario_scaling.toml",
        "sim_balancing/report.html",
        "sim_scaling/report.html",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

fn live_minutes(plan: &Plan) -> u64 {
    u64::from(plan.stream_hours) * 60
}
