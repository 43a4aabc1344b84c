//! `aya`: the one user-facing binary. Each subcommand is a user job; the work
//! lives in the library crates, the subcommands' flags and output in the
//! `aya_cli` library of this crate, and this file only dispatches.

use std::process::ExitCode;

use aya_cli::failure::{CliResult, Failure};
use aya_cli::forecaster as fc;
use aya_cli::sim;
use clap::{Parser, Subcommand};

/// Aya: a predictive traffic controller. It learns from a service's traffic and
/// its servers' metrics, forecasts what comes next, and steers load balancers
/// (Envoy xDS, proxyless gRPC, KEDA) ahead of demand.
///
/// Exit codes: 0 success, 1 runtime error, 2 usage error, 3 bad input data,
/// 4 feature not available yet.
#[derive(Debug, Parser)]
#[command(name = "aya", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole loop on built-in data: train, control over gRPC, simulate, score, report.
    Demo(aya_cli::controller::DemoArgs),
    /// Run the controller service: metrics in over gRPC, decisions out (aya.v1 watch, Envoy xDS, KEDA).
    Serve(aya_cli::controller::ServeArgs),
    /// Train and select a forecasting model for a series and save it as a versioned artifact.
    Train(fc::TrainArgs),
    /// Forecast the next steps of a series as `timestamp,yhat,lower,upper,level`.
    Forecast(fc::ForecastArgs),
    /// Rolling-origin backtest: MASE, sMAPE and interval coverage per model and horizon.
    Backtest(fc::BacktestArgs),
    /// Replay traffic through modelled data planes and backends and score the policies.
    Sim(sim::SimArgs),
    /// Run the policy league table (Aya against P2C, A58 WRR, peak-EWMA and HPA).
    League(sim::LeagueArgs),
    /// Generate built-in synthetic data, fetch public traces, or check a dataset directory.
    Datasets(fc::DatasetsArgs),
    /// Score every point of a series with the streaming anomaly detector (CSV out).
    Anomalies(aya_cli::anomalies::AnomaliesArgs),
    /// Check, repair or back up the controller's store (`aya.redb`).
    Store(aya_cli::store::StoreArgs),
    /// Benchmarks against real software (`closed-loop`: Aya steering a real Envoy vs Envoy's balancers).
    Bench(aya_cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: CliResult = match &cli.command {
        Command::Demo(a) => aya_cli::controller::run_demo(a),
        Command::Serve(a) => aya_cli::controller::run_serve(a),
        Command::Train(a) => fc::run_train(a),
        Command::Forecast(a) => fc::run_forecast(a),
        Command::Backtest(a) => fc::run_backtest(a),
        Command::Sim(a) => sim::run_sim(a),
        Command::League(a) => sim::run_league(a),
        Command::Datasets(a) => fc::run_datasets(a),
        Command::Anomalies(a) => aya_cli::anomalies::run_anomalies(a),
        Command::Store(a) => aya_cli::store::run_store(a),
        Command::Bench(a) => aya_cli::bench::run_bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(failure),
    }
}

fn report(failure: Failure) -> ExitCode {
    eprintln!("aya: error: {failure}");
    ExitCode::from(failure.exit_code())
}
