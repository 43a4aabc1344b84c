//! Command-line entry points of the simulator: `aya sim` and `aya league`.

use std::path::PathBuf;

use aya_policy::LbAlgorithm;
use aya_sim::dist::ServiceDist;
use aya_sim::engine::{SimError, simulate};
use aya_sim::model::{Dispatch, Model};
use aya_sim::report::write_all;
use aya_sim::run::{RunError, run_scenario};
use aya_sim::scenario::{Scenario, ScenarioError};
use aya_sim::theory;
use aya_sim::workload::WorkloadError;
use clap::Args;

use crate::failure::{CliResult, Failure};

/// `aya sim`: replay a scenario file, or run a one-line textbook experiment.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Scenario file (TOML). Omit it to use the one-line form (--servers, --utilization, ...).
    pub scenario: Option<PathBuf>,
    /// One-line form: number of identical servers.
    #[arg(long)]
    pub servers: Option<u32>,
    /// One-line form: offered utilisation ρ (arrival rate / total service rate), 0 < ρ < 1.
    #[arg(long)]
    pub utilization: Option<f64>,
    /// One-line form: service-time distribution: `exp`, `det` or `lognormal:<cv>`.
    #[arg(long, default_value = "exp")]
    pub service: String,
    /// One-line form: data-plane algorithm (round_robin, least_request, random, jsq, peak_ewma, ...) or `central` (one shared queue: M/M/c).
    #[arg(long, default_value = "random")]
    pub algorithm: String,
    /// One-line form: number of requests to simulate.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Seed of the random streams.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the scored result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory for results (JSON, CSV time series, HTML report) of a scenario run.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// `aya league`: run the checked-in league-table scenarios for every policy.
#[derive(Debug, Clone, Args)]
pub struct LeagueArgs {
    /// Directory with the league scenarios.
    #[arg(long, default_value = "scenarios/league")]
    pub scenarios: PathBuf,
    /// Seeds (replications) per scenario.
    #[arg(long, default_value_t = 5)]
    pub seeds: u32,
    /// Output directory for the table (Markdown and JSON).
    #[arg(long, short = 'o', default_value = "out/league")]
    pub output: PathBuf,
    /// Run only the named scenarios (repeatable); default: all of them.
    #[arg(long)]
    pub only: Vec<String>,
    /// Run a generated suite instead of the league folder: `broad` (issue 11: 84
    /// balancing and 36 autoscaling scenarios from --suite-seed, tune/test split).
    /// Writes suite.md, suite.html and suite.json into --output.
    #[arg(long, value_parser = ["broad"])]
    pub suite: Option<String>,
    /// Suite seed: the same seed generates the same scenarios.
    #[arg(long, default_value_t = 11)]
    pub suite_seed: u64,
    /// Only this split of the suite (`tune` or `test`); default both.
    #[arg(long, value_parser = ["tune", "test"])]
    pub split: Option<String>,
    /// A handful of short suite scenarios (a smoke run).
    #[arg(long)]
    pub smoke: bool,
    /// Only this kind of suite scenario (`balancing` or `autoscaling`); default both.
    #[arg(long, value_parser = ["balancing", "autoscaling"])]
    pub kind: Option<String>,
    /// Parameters for the suite's `aya` policy, as the inside of a TOML inline
    /// table, e.g. `--aya-params 'trend_window = 0, objective = "latency"'`;
    /// compares a candidate configuration with the defaults on the same suite.
    #[arg(long)]
    pub aya_params: Option<String>,
    /// Demand forecaster of the suite's autoscaling scenarios: `naive` (the
    /// random walk, default), `online` (the controller's ML forecaster, cold)
    /// or `warm` (the same, warm-started from the trace's history before the
    /// replayed window).
    #[arg(long, value_parser = ["naive", "online", "warm"])]
    pub forecaster: Option<String>,
    /// Configure Envoy's consecutive-5xx outlier detection (this many errors
    /// in a row, 30 s, 10 %) on the data plane of every suite balancing
    /// scenario, so that the baselines run with it too (Aya publishes its
    /// own); default 0: none, as an Envoy cluster without it.
    #[arg(long, default_value_t = 0)]
    pub data_plane_outlier_5xx: u32,
}

/// Run `aya sim`.
pub fn run_sim(args: &SimArgs) -> CliResult {
    match &args.scenario {
        Some(path) => {
            if args.servers.is_some() || args.utilization.is_some() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "give either a scenario file or the one-line form (--servers, --utilization), not both"
                )));
            }
            run_scenario_file(path, args)
        }
        None => run_textbook(args),
    }
}

fn run_scenario_file(path: &std::path::Path, args: &SimArgs) -> CliResult {
    let sc = Scenario::load(path).map_err(|e| match e {
        ScenarioError::Io { .. } => Failure::runtime(anyhow::Error::new(e)),
        _ => Failure::input(anyhow::Error::new(e)),
    })?;
    let res = run_scenario(&sc).map_err(|e| match e {
        RunError::Sim(SimError::Workload(WorkloadError::Io { .. })) => {
            Failure::runtime(anyhow::Error::new(e))
        }
        _ => Failure::input(anyhow::Error::new(e)),
    })?;
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&sc.name));
    write_all(&res, &out).map_err(|e| {
        Failure::runtime(
            anyhow::Error::new(e).context(format!("writing results to {}", out.display())),
        )
    })?;
    if args.json {
        let summary: Vec<_> = res
            .policies
            .iter()
            .map(|p| serde_json::json!({ "policy": p.label, "summary": p.summary }))
            .collect();
        let v = serde_json::json!({ "scenario": res.name, "seeds": res.seeds, "policies": summary, "output": out });
        println!(
            "{}",
            serde_json::to_string_pretty(&v)
                .map_err(|e| Failure::runtime(anyhow::Error::new(e)))?
        );
    } else {
        println!("scenario {} ({} seed(s))", res.name, res.seeds.len());
        for p in &res.policies {
            let g = |m: &str| p.summary.get(m).copied().unwrap_or_default();
            println!(
                "  {:<16} success {}  mean {} s  p99 {} s  p99.9 {} s  SLO-violation min {}  replica-h {}",
                p.label,
                g("success_rate").fmt(4),
                g("mean").fmt(4),
                g("p99").fmt(4),
                g("p999").fmt(4),
                g("slo_violation_minutes").fmt(1),
                g("replica_hours").fmt(2)
            );
        }
        println!("results: {}", out.join("report.html").display());
    }
    Ok(())
}

/// Result of the one-line textbook form (response times in units of the mean service time).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TextbookResult {
    /// Servers.
    pub servers: u32,
    /// Offered utilisation.
    pub utilization: f64,
    /// Service distribution as given.
    pub service: String,
    /// Algorithm as given.
    pub algorithm: String,
    /// Seed.
    pub seed: u64,
    /// Mean response time / mean service time.
    pub mean: f64,
    /// p50 / mean service time.
    pub p50: f64,
    /// p90 / mean service time.
    pub p90: f64,
    /// p99 / mean service time.
    pub p99: f64,
    /// p99.9 / mean service time.
    pub p999: f64,
    /// Requests scored (after discarding the first 10% as warm-up).
    pub requests_completed: u64,
    /// Requests simulated in total.
    pub requests_simulated: u64,
    /// Events processed.
    pub events_processed: u64,
    /// Events per wall-clock second.
    pub events_per_second: f64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Little's law: time-average number in system.
    pub little_l: f64,
    /// Little's law: λ × W.
    pub little_lambda_w: f64,
    /// Analytic mean for exponential service (M/M/1 per server for random, Erlang C for central), if known.
    pub theory_mean: Option<f64>,
    /// Analytic p99, if known.
    pub theory_p99: Option<f64>,
}

/// Run the one-line textbook experiment described by `args`.
pub fn textbook(args: &SimArgs) -> Result<TextbookResult, Failure> {
    let usage = |m: String| Failure::usage(anyhow::anyhow!(m));
    let servers = args.servers.ok_or_else(|| {
        usage("the one-line form needs --servers <n> (or give a scenario file)".into())
    })?;
    let rho = args
        .utilization
        .ok_or_else(|| usage("the one-line form needs --utilization <rho>".into()))?;
    if servers == 0 {
        return Err(usage("--servers must be >= 1".into()));
    }
    if !(rho.is_finite() && rho > 0.0 && rho < 1.0) {
        return Err(usage(format!(
            "--utilization must be in (0, 1) for a stable queue, got {rho}"
        )));
    }
    if args.requests < 10 {
        return Err(usage("--requests must be >= 10".into()));
    }
    let service = ServiceDist::parse_short(&args.service).map_err(|e| usage(e.to_string()))?;
    let dispatch = if args.algorithm.trim() == "central" {
        Dispatch::Central
    } else {
        let a: LbAlgorithm =
            args.algorithm
                .parse()
                .map_err(|e: aya_policy::UnknownAlgorithm| {
                    usage(format!("--algorithm: {e}, central"))
                })?;
        Dispatch::Balancer(a)
    };
    let model = Model::textbook(servers, rho, service.clone(), dispatch, args.requests);
    let r =
        simulate(&model, args.seed, None).map_err(|e| Failure::runtime(anyhow::Error::new(e)))?;
    let m = r.metrics;
    let unit = service.mean();
    let exp = matches!(service, ServiceDist::Exponential { .. });
    let (theory_mean, theory_p99) = match (exp, dispatch) {
        (true, Dispatch::Central) => {
            let lambda = rho * servers as f64;
            (
                Some(theory::mmc_mean(servers, lambda, 1.0)),
                Some(theory::mmc_quantile(servers, lambda, 1.0, 0.99)),
            )
        }
        (true, Dispatch::Balancer(LbAlgorithm::Random)) => (
            Some(theory::mm1_mean(rho, 1.0)),
            Some(theory::mm1_quantile(rho, 1.0, 0.99)),
        ),
        _ => (None, None),
    };
    Ok(TextbookResult {
        servers,
        utilization: rho,
        service: args.service.clone(),
        algorithm: args.algorithm.clone(),
        seed: args.seed,
        mean: m.mean / unit,
        p50: m.p50 / unit,
        p90: m.p90 / unit,
        p99: m.p99 / unit,
        p999: m.p999 / unit,
        requests_completed: m.completed,
        requests_simulated: args.requests,
        events_processed: m.events,
        events_per_second: m.events_per_second,
        wall_seconds: m.wall_seconds,
        little_l: m.little_l,
        little_lambda_w: m.little_lambda * m.mean,
        theory_mean,
        theory_p99,
    })
}

fn run_textbook(args: &SimArgs) -> CliResult {
    let r = textbook(args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r)
                .map_err(|e| Failure::runtime(anyhow::Error::new(e)))?
        );
    } else {
        println!(
            "{} servers, rho={}, service={}, algorithm={}, seed={}",
            r.servers, r.utilization, r.service, r.algorithm, r.seed
        );
        println!(
            "response time / mean service: mean {:.4}  p50 {:.4}  p90 {:.4}  p99 {:.4}  p99.9 {:.4}",
            r.mean, r.p50, r.p90, r.p99, r.p999
        );
        if let (Some(tm), Some(tp)) = (r.theory_mean, r.theory_p99) {
            println!("theory: mean {tm:.4}  p99 {tp:.4}");
        }
        println!(
            "{} requests scored, {} events in {:.3} s ({:.2} M events/s)",
            r.requests_completed,
            r.events_processed,
            r.wall_seconds,
            r.events_per_second / 1e6
        );
    }
    Ok(())
}

/// Run `aya league`.
pub fn run_league(args: &LeagueArgs) -> CliResult {
    if args.suite.is_some() {
        return run_suite(args);
    }
    crate::league::run(args)
}

/// `aya league --suite broad`: generate, run and report the broad suite.
fn run_suite(args: &LeagueArgs) -> CliResult {
    use aya_sim::suite::{Kind, Split, SuiteConfig, SuiteForecaster, report, run_and_report};
    let mut cfg = SuiteConfig::new();
    cfg.seed = args.suite_seed;
    cfg.smoke = args.smoke;
    cfg.split = match args.split.as_deref() {
        Some("tune") => Some(Split::Tune),
        Some("test") => Some(Split::Test),
        _ => None,
    };
    cfg.kind = match args.kind.as_deref() {
        Some("balancing") => Some(Kind::Balancing),
        Some("autoscaling") => Some(Kind::Autoscaling),
        _ => None,
    };
    // `--only` picks league scenarios by name; in a suite, by id substring.
    cfg.only = args.only.first().cloned();
    cfg.aya_params = args.aya_params.clone();
    cfg.data_plane_outlier_5xx = args.data_plane_outlier_5xx;
    if let Some(f) = args.forecaster.as_deref().and_then(SuiteForecaster::parse) {
        cfg.forecaster = f;
    }
    let res = run_and_report(&cfg, &args.output).map_err(Failure::runtime)?;
    print!("{}", report::summary_table(&res.summaries));
    println!(
        "report: {} (suite.md, suite.json beside it)",
        args.output.join("suite.html").display()
    );
    Ok(())
}
