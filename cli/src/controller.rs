//! Command-line entry points of the controller service: `aya serve` and `aya demo`.

use std::path::PathBuf;

use crate::failure::{CliResult, Failure};
use clap::Args;

/// `aya serve`: run the controller service.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML). Flags and AYA_* environment variables override it.
    #[arg(long, short = 'c', env = "AYA_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address (aya.v1, Envoy xDS, KEDA external scaler, grpc.health.v1).
    #[arg(long, env = "AYA_LISTEN")]
    pub listen: Option<String>,
    /// HTTP listen address for Prometheus metrics (`/metrics`).
    #[arg(long, env = "AYA_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Data directory (metric history, model artifacts, last decisions).
    #[arg(long, env = "AYA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seconds between control ticks.
    #[arg(long, env = "AYA_TICK_INTERVAL_SECONDS")]
    pub tick_interval_seconds: Option<f64>,
    /// Seconds of metric history to keep.
    #[arg(long, env = "AYA_RETENTION_SECONDS")]
    pub retention_seconds: Option<f64>,
    /// Seconds between guarded background retrains of the demand models (0 disables).
    #[arg(long, env = "AYA_RETRAIN_INTERVAL_SECONDS")]
    pub retrain_interval_seconds: Option<f64>,
    /// Policy for clusters that do not name one (`configured`, `aya`, `static`, `a58`, `hpa`, ...).
    #[arg(long, env = "AYA_DEFAULT_POLICY")]
    pub default_policy: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "AYA_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Disable the Prometheus HTTP listener.
    #[arg(long)]
    pub no_metrics: bool,
    /// Create a new store in an existing data directory that has none, or in a
    /// zero-length `aya.redb` (otherwise an error: a store that vanished is not
    /// silently replaced). A non-empty store is never overwritten.
    #[arg(long)]
    pub init: bool,
    /// Separate gRPC listen address for the mutating admin RPCs (then refused on --listen).
    #[arg(long, env = "AYA_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Serve without authentication on a non-loopback address (otherwise refused
    /// without [auth] credentials or mTLS in the config file).
    #[arg(long)]
    pub insecure: bool,
}

/// `aya demo`: the whole loop on built-in data, in about two minutes.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seed: the same seed gives the same scoreboard.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory for the HTML report and the CSV/JSON results.
    #[arg(long, short = 'o', default_value = "out/demo")]
    pub output: PathBuf,
    /// Reduced size (4 days of history, 3 hours replayed, 2 seeds): the same
    /// pipeline in seconds, for a first look and for the tests.
    #[arg(long)]
    pub quick: bool,
    /// Threads for the simulations (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No stage lines or progress bars on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Build the effective configuration: file (or defaults), then flags and
/// environment variables (clap has already merged those two).
pub fn serve_config(args: &ServeArgs) -> Result<aya_controller::config::Config, Failure> {
    use aya_controller::config::{Config, ConfigError, LogFormat};
    let mut cfg = match &args.config {
        Some(path) => Config::load(path).map_err(|e| match e {
            ConfigError::Read { .. } => Failure::usage(e),
            _ => Failure::input(e),
        })?,
        None => Config::default(),
    };
    if let Some(v) = &args.listen {
        cfg.listen = v.clone();
    }
    if let Some(v) = &args.metrics_listen {
        cfg.metrics_listen = v.clone();
    }
    if args.no_metrics {
        cfg.metrics_listen.clear();
    }
    if let Some(v) = &args.data_dir {
        cfg.data_dir = v.clone();
    }
    if let Some(v) = args.tick_interval_seconds {
        cfg.tick_interval_seconds = v;
    }
    if let Some(v) = args.retention_seconds {
        cfg.retention_seconds = v;
    }
    if let Some(v) = args.retrain_interval_seconds {
        cfg.retrain_interval_seconds = v;
    }
    if let Some(v) = &args.default_policy {
        cfg.default_policy = v.clone();
    }
    match args.log_format.as_deref() {
        Some("json") => cfg.log_format = LogFormat::Json,
        Some("text") => cfg.log_format = LogFormat::Text,
        _ => {}
    }
    cfg.init = args.init;
    if let Some(v) = &args.admin_listen {
        cfg.admin_listen = v.clone();
    }
    if args.insecure {
        cfg.insecure = true;
    }
    cfg.validate().map_err(Failure::input)?;
    Ok(cfg)
}

fn init_tracing(cfg: &aya_controller::config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        aya_controller::config::LogFormat::Json => builder.json().try_init(),
        aya_controller::config::LogFormat::Text => builder.try_init(),
    };
}

/// Run `aya serve`: bind the listeners, print `listening on ADDR` (and
/// `metrics listening on ADDR`) on stdout once they are bound, and serve
/// until SIGTERM or ctrl-c.
pub fn run_serve(args: &ServeArgs) -> CliResult {
    use std::io::Write as _;
    let cfg = serve_config(args)?;
    init_tracing(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let grpc = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| Failure::usage(anyhow::anyhow!("listen = {:?}: cannot bind: {e}", cfg.listen)))?;
        let metrics = if cfg.metrics_listen.is_empty() {
            None
        } else {
            Some(tokio::net::TcpListener::bind(&cfg.metrics_listen).await.map_err(|e| {
                Failure::usage(anyhow::anyhow!("metrics_listen = {:?}: cannot bind: {e}", cfg.metrics_listen))
            })?)
        };
        let admin = if cfg.admin_listen.is_empty() {
            None
        } else {
            Some(tokio::net::TcpListener::bind(&cfg.admin_listen).await.map_err(|e| {
                Failure::usage(anyhow::anyhow!("admin_listen = {:?}: cannot bind: {e}", cfg.admin_listen))
            })?)
        };
        let addr = grpc.local_addr().map_err(|e| Failure::runtime(anyhow::anyhow!("{e}")))?;
        let metrics_addr = metrics.as_ref().and_then(|m| m.local_addr().ok());
        let admin_addr = admin.as_ref().and_then(|m| m.local_addr().ok());
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), clusters = cfg.clusters.len(), "aya serve starting");
        let listeners = aya_controller::server::Listeners { grpc, metrics };
        // `listening on` is printed once the store has opened and passed its
        // checks, so that the line means the service is really up.
        let ready = move || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {addr}");
            if let Some(a) = metrics_addr {
                let _ = writeln!(out, "metrics listening on {a}");
            }
            if let Some(a) = admin_addr {
                let _ = writeln!(out, "admin listening on {a}");
            }
            let _ = out.flush();
        };
        let clock = aya_controller::clock::Clock::system();
        let reloads = reload_on_sighup(args.clone());
        aya_controller::server::serve_reloadable(listeners, admin, cfg, clock, shutdown_signal(), ready, reloads)
            .await
            .map_err(|e| Failure::runtime(anyhow::Error::new(e)))
    })
}

/// On each SIGHUP, read the configuration again (the file and the
/// command-line overrides, as at start) and send it to the service, or why
/// it cannot be used.
fn reload_on_sighup(
    args: ServeArgs,
) -> tokio::sync::mpsc::Receiver<aya_controller::server::Reload> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: configuration reload is off");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            let request = serve_config(&args).map_err(|f| format!("{f}"));
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received; draining");
}

/// Run `aya demo`.
pub fn run_demo(args: &DemoArgs) -> CliResult {
    use crate::demo::{DemoConfig, plan::Plan};
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let mut cfg = DemoConfig::new(args.seed, plan, args.output.clone());
    cfg.progress = !args.quiet;
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(Failure::usage(anyhow::anyhow!(
                "--threads must be at least 1"
            )));
        }
        cfg.threads = t;
    }
    let started = std::time::Instant::now();
    let outcome = crate::demo::run(&cfg).map_err(|e| Failure::runtime(anyhow::Error::new(e)))?;
    println!("{}", outcome.scoreboard.render());
    if !args.quiet {
        eprintln!(
            "report: {}  (also scoreboard.txt/.json, per-scenario simulator reports, the scenario files and the history in {})",
            outcome.report.display(),
            args.output.display()
        );
        let stages: Vec<String> = outcome
            .timings
            .iter()
            .map(|(n, s)| format!("{n} {s:.1} s"))
            .collect();
        eprintln!(
            "done in {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            stages.join(", ")
        );
    }
    Ok(())
}
