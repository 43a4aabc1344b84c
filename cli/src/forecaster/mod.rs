//! Command-line entry points of the forecaster: `aya train`, `aya forecast`,
//! `aya backtest` and `aya datasets`. `main` parses these argument structs
//! with clap and calls the matching `run_*` function.

use std::path::PathBuf;

use anyhow::anyhow;
use aya_forecaster::data::prometheus::{self, NonFinite, PrometheusError, RangeQuery};
use aya_forecaster::data::{Aggregate, DataError, Duplicates, LoadOptions, Series};
use aya_forecaster::data::{load_csv, parse_filter, parse_timestamp};
use aya_forecaster::synth::Split;
use clap::{Args, Subcommand, ValueEnum};

use crate::failure::Failure;

/// Default history read from Prometheus when `--start` is not given.
pub const DEFAULT_PROMETHEUS_RANGE: &str = "7d";

/// Where a series comes from: a CSV file (`--input`) or a Prometheus range
/// query (`--prometheus URL --query PROMQL`). Shared by every subcommand
/// that reads one series.
#[derive(Debug, Clone, Args)]
pub struct SeriesArgs {
    /// CSV file to read. Accepted forms: `timestamp,value` (CloudWatch/NAB
    /// style), long form with label columns (`timestamp,backend,metric,value`;
    /// select with --filter), or wide form (pick the column with --column).
    #[arg(
        long,
        short = 'i',
        required_unless_present = "prometheus",
        conflicts_with = "prometheus"
    )]
    pub input: Option<PathBuf>,
    /// Value column to use in wide-form CSVs (default: `value`, or the only numeric column).
    #[arg(long)]
    pub column: Option<String>,
    /// Name of the timestamp column (default: detected: `timestamp`, `time`, `ts`, `date`...).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Long-form filter, `label=value`, repeatable (e.g. `--filter backend=web-1 --filter metric=rps`).
    #[arg(long = "filter", value_name = "LABEL=VALUE")]
    pub filters: Vec<String>,
    /// Read the history from this Prometheus server instead of a CSV
    /// (`GET /api/v1/query_range`; http:// or https://). See docs/prometheus.md.
    #[arg(
        long,
        value_name = "URL",
        requires = "query",
        conflicts_with_all = ["column", "time_column", "filters", "keep_duplicates"]
    )]
    pub prometheus: Option<String>,
    /// PromQL expression to read with --prometheus, e.g. `sum(rate(http_requests_total[5m]))`.
    // `conflicts_with = "input"` rather than `requires = "prometheus"`:
    // clap does not enforce two `requires` that point at each other.
    #[arg(long, value_name = "PROMQL", conflicts_with = "input")]
    pub query: Option<String>,
    /// First time read from Prometheus: RFC 3339 or unix seconds
    /// (default: 7 days before --end).
    #[arg(long, value_name = "TIME", requires = "prometheus")]
    pub start: Option<String>,
    /// Last time read from Prometheus: RFC 3339 or unix seconds (default:
    /// now, rounded down to a whole step).
    #[arg(long, value_name = "TIME", requires = "prometheus")]
    pub end: Option<String>,
    /// Evaluation step of the Prometheus query, the series' interval: seconds
    /// or a duration such as `60s`, `5m` (default 60s).
    #[arg(long, value_name = "DURATION", requires = "prometheus")]
    pub step: Option<String>,
    /// When the query returns several series, keep the one with this label,
    /// `label=value`, repeatable (e.g. `--series-label instance=web-1:8080`).
    #[arg(
        long = "series-label",
        value_name = "LABEL=VALUE",
        requires = "prometheus"
    )]
    pub series_labels: Vec<String>,
    /// Drop `NaN`/`+Inf`/`-Inf` values from Prometheus as gaps (filled like
    /// other gaps) instead of failing on them.
    #[arg(long, requires = "prometheus")]
    pub skip_non_finite: bool,
    /// PEM file of the CA that signs an https:// Prometheus' certificate
    /// (default: the Mozilla root set).
    #[arg(long, value_name = "FILE", requires = "prometheus")]
    pub prometheus_ca: Option<std::path::PathBuf>,
    /// File holding a bearer token for Prometheus (`Authorization: Bearer`),
    /// as Prometheus' `web.config.file` or a proxy in front of it asks for.
    #[arg(long, value_name = "FILE", requires = "prometheus")]
    pub prometheus_bearer_token_file: Option<std::path::PathBuf>,
    /// File holding `user:password` for Prometheus' HTTP basic auth
    /// (`basic_auth_users` in its `web.config.file`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "prometheus",
        conflicts_with = "prometheus_bearer_token_file"
    )]
    pub prometheus_basic_auth_file: Option<std::path::PathBuf>,
    /// Resample to a fixed interval in seconds (mean of each bucket; gaps filled by interpolation).
    #[arg(long, value_name = "SECONDS")]
    pub resample: Option<i64>,
    /// Accept negative values (by default they are rejected: counts and rates cannot be negative).
    #[arg(long)]
    pub allow_negative: bool,
    /// Fail on duplicate or out-of-order timestamps instead of repairing them
    /// (by default rows are sorted and the last of duplicates is kept, and both are reported).
    #[arg(long)]
    pub strict: bool,
    /// Keep rows with equal timestamps (event traces with one row per request).
    #[arg(long)]
    pub keep_duplicates: bool,
    /// How --resample combines each bucket: `mean` (default; empty buckets interpolated),
    /// `sum` or `count` (empty buckets 0; every row kept, e.g. requests per bucket of a trace).
    #[arg(long, value_enum, requires = "resample")]
    pub aggregate: Option<AggregateArg>,
}

impl SeriesArgs {
    /// Options from the CLI flags (`--column`, `--time-column`, `--filter`, `--resample`,
    /// `--allow-negative`, `--strict`, `--keep-duplicates`).
    pub fn load_options(&self) -> Result<LoadOptions, DataError> {
        let filters = self
            .filters
            .iter()
            .map(|f| parse_filter(f))
            .collect::<Result<Vec<_>, _>>()?;
        let resample_ms = match self.resample {
            Some(s) if s <= 0 => {
                return Err(DataError::BadOption(format!(
                    "--resample {s}: the interval must be a positive number of seconds"
                )));
            }
            Some(s) => Some(s.checked_mul(1000).ok_or_else(|| {
                DataError::BadOption(format!("--resample {s}: interval too large"))
            })?),
            None => None,
        };
        if self.aggregate.is_some() && resample_ms.is_none() {
            return Err(DataError::BadOption(
                "--aggregate needs --resample SECONDS (it says how each bucket is combined)"
                    .to_string(),
            ));
        }
        let aggregate = self.aggregate.map(Aggregate::from).unwrap_or_default();
        if self.strict && self.keep_duplicates {
            return Err(DataError::BadOption(
                "--strict and --keep-duplicates contradict each other".to_string(),
            ));
        }
        Ok(LoadOptions {
            value_column: self.column.clone(),
            time_column: self.time_column.clone(),
            filters,
            resample_ms,
            allow_negative: self.allow_negative,
            aggregate,
            // Summing or counting events must see every event, including simultaneous ones.
            duplicates: if self.strict {
                Duplicates::Reject
            } else if self.keep_duplicates || aggregate != Aggregate::Mean {
                Duplicates::KeepAll
            } else {
                Duplicates::KeepLast
            },
            reject_out_of_order: self.strict,
        })
    }

    /// The source in messages: the CSV path, or the Prometheus URL.
    pub fn name(&self) -> String {
        match (&self.input, &self.prometheus) {
            (Some(path), _) => path.display().to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => "(no input)".to_string(),
        }
    }

    /// The Prometheus range query these flags describe (`None` for a CSV),
    /// with `now_ms` as the default end.
    pub fn range_query(&self, now_ms: i64) -> Result<Option<RangeQuery>, PrometheusError> {
        let (Some(url), Some(query)) = (&self.prometheus, &self.query) else {
            return Ok(None);
        };
        let time = |flag: &str, text: &str| {
            parse_timestamp(text)
                .map_err(|e| PrometheusError::BadRange(format!("{flag} {text:?}: {e}")))
        };
        let step_ms = prometheus::parse_duration_ms(self.step.as_deref().unwrap_or("60s"))
            .map_err(|e| PrometheusError::BadRange(format!("--step: {e}")))?;
        let end_ms = match &self.end {
            Some(t) => time("--end", t)?,
            // Whole steps, where scrapes and recording rules usually land.
            None => now_ms.div_euclid(step_ms) * step_ms,
        };
        let start_ms = match &self.start {
            Some(t) => time("--start", t)?,
            None => end_ms - prometheus::parse_duration_ms(DEFAULT_PROMETHEUS_RANGE)?,
        };
        if start_ms >= end_ms {
            return Err(PrometheusError::BadRange(format!(
                "--start {} is not before --end {}",
                aya_forecaster::data::format_rfc3339(start_ms),
                aya_forecaster::data::format_rfc3339(end_ms)
            )));
        }
        let mut q = RangeQuery::new(url.clone(), query.clone(), start_ms, end_ms, step_ms);
        q.access = prometheus::Access {
            ca_file: self.prometheus_ca.clone(),
            bearer_token_file: self.prometheus_bearer_token_file.clone(),
            basic_auth_file: self.prometheus_basic_auth_file.clone(),
        };
        Ok(Some(q))
    }

    /// Load the series these flags describe, from the CSV or from Prometheus.
    /// Bad flag values are usage failures (exit 2), an unreachable server a
    /// runtime failure (exit 1), bad data an input failure (exit 3).
    pub fn load(&self) -> Result<Series, Failure> {
        let data_failure = |e: DataError| {
            if e.is_usage() {
                Failure::usage(e)
            } else {
                Failure::input(e)
            }
        };
        let opts = self.load_options().map_err(data_failure)?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let prom_failure = |e: PrometheusError| {
            if e.is_usage() {
                Failure::usage(e)
            } else if e.is_io() {
                Failure::runtime(e)
            } else {
                Failure::input(e)
            }
        };
        match (&self.input, self.range_query(now_ms).map_err(prom_failure)?) {
            (Some(path), _) => load_csv(path, &opts).map_err(data_failure),
            (None, Some(q)) => {
                let want = self
                    .series_labels
                    .iter()
                    .map(|f| {
                        parse_filter(f).map_err(|_| {
                            Failure::usage(anyhow!(
                                "--series-label {f:?}: expected LABEL=VALUE, e.g. --series-label instance=web-1:8080"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let non_finite = if self.skip_non_finite {
                    NonFinite::Skip
                } else {
                    NonFinite::Reject
                };
                let series = prometheus::load_prometheus(&q, &want, non_finite, &opts)
                    .map_err(prom_failure)?;
                let r = &series.report;
                if r.missing_points > 0 {
                    eprintln!(
                        "note: {}: {} of {} steps had no value ({} gap(s)); filled by linear interpolation",
                        series.name,
                        r.missing_points,
                        series.len(),
                        r.gaps.len()
                    );
                }
                Ok(series)
            }
            (None, None) => Err(Failure::usage(anyhow!(
                "give --input CSV or --prometheus URL --query PROMQL"
            ))),
        }
    }

    /// The path used in data-layer messages ([`Self::name`] as a path).
    pub fn message_path(&self) -> PathBuf {
        PathBuf::from(self.name())
    }
}

/// `--aggregate`: how `--resample` combines a bucket ([`Aggregate`] as a flag value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum AggregateArg {
    /// Mean of the bucket; empty buckets are linearly interpolated (gauges, rates). Default.
    #[default]
    Mean,
    /// Sum of the bucket; empty buckets are 0 (per-interval counts re-bucketed).
    Sum,
    // The doc comment is the flag's help text, kept as the data layer words it.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Number of rows in the bucket; empty buckets are 0 (event traces -> events per
    /// bucket; load them with [`super::Duplicates::KeepAll`] so that simultaneous events
    /// all count).
    Count,
}

impl From<AggregateArg> for Aggregate {
    fn from(a: AggregateArg) -> Self {
        match a {
            AggregateArg::Mean => Aggregate::Mean,
            AggregateArg::Sum => Aggregate::Sum,
            AggregateArg::Count => Aggregate::Count,
        }
    }
}

/// `aya train`: fit and select a model for one series and save it as a versioned artifact.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The series to train on.
    #[command(flatten)]
    pub source: SeriesArgs,
    /// Where to write the model artifact (JSON).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Horizon (steps) to optimise the selection for (default: one detected season, at least 12).
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Skip the rolling-origin backtest recorded in the artifact (faster).
    #[arg(long)]
    pub no_backtest: bool,
    /// Calendar of known events (`events.csv`: name,start,end[,category], or
    /// `.toml` with `[[event]]` tables and optional `every`/`until`): the
    /// forecaster learns each category's effect and keeps it only where the
    /// validation backtest says it helps (docs/events.md).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

/// `aya forecast`: forecast the next steps of a series, from a saved model or trained on the fly.
#[derive(Debug, Clone, Args)]
pub struct ForecastArgs {
    /// The series to forecast from.
    #[command(flatten)]
    pub source: SeriesArgs,
    /// Number of steps to forecast (at the series' interval).
    #[arg(long)]
    pub horizon: usize,
    /// Output CSV: `timestamp,yhat,lower,upper,level`.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Use this saved model (from `aya train`) instead of training on the input.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prediction-interval level, e.g. 0.8 or 0.95.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// Calendar of known events (`events.csv`: name,start,end[,category], or
    /// `.toml` with `[[event]]` tables and optional `every`/`until`): the
    /// forecaster learns each category's effect and keeps it only where the
    /// validation backtest says it helps (docs/events.md).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

/// `aya backtest`: rolling-origin backtest of every model on a series.
#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// The series to backtest.
    #[command(flatten)]
    pub source: SeriesArgs,
    /// Horizons in steps, comma separated; `season` means one detected season (e.g. `1,12,season`).
    #[arg(long, default_value = "1,12,season", value_delimiter = ',')]
    pub horizons: Vec<String>,
    /// Number of forecast origins, evenly spaced over the last 20% of the series
    /// (`--test-fraction`).
    #[arg(long, default_value_t = 10)]
    pub origins: usize,
    /// Write every scored forecast to this CSV.
    #[arg(long)]
    pub forecasts_out: Option<PathBuf>,
    /// Print the table as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only the automatic method (skip scoring each candidate model on its own).
    #[arg(long)]
    pub auto_only: bool,
    /// Fraction of the series (at its end) the origins are spread over.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Calendar of known events (see `aya train --events`): adds the method
    /// `aya_auto_events` and a table of MASE on event days vs other days.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

/// `aya datasets`: generate built-in data or fetch the public traces.
#[derive(Debug, Clone, Args)]
pub struct DatasetsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DatasetsCommand,
}

/// `aya datasets` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DatasetsCommand {
    /// Generate the deterministic synthetic traffic and per-backend metrics.
    Synth(SynthArgs),
    /// Download the public traces (NAB, WorldCup98, Azure LLM) from their original homes.
    Fetch(FetchArgs),
    /// Load every CSV under a directory and report rows, interval, gaps and duplicates.
    Check(CheckArgs),
}

/// `aya datasets synth`.
#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long, short = 'o', default_value = "out/synth")]
    pub output: PathBuf,
    /// Seed: the same seed always gives the same files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Days of history to generate.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Sampling interval in seconds.
    #[arg(long, default_value_t = 60)]
    pub interval: u32,
    /// Mean request rate (requests/s) before trend and bursts; backend capacities scale with it.
    #[arg(long, default_value_t = 100.0)]
    pub base_rps: f64,
    /// How traffic is split among the backends (capacities 1x, 1x, 2x, 4x): `equal`
    /// (round robin; small backends saturate at peaks) or `capacity` (proportional).
    #[arg(long, value_enum, default_value_t = SplitArg::Equal)]
    pub split: SplitArg,
}

/// `--split`: how the synthetic traffic is split among backends ([`Split`] as a flag value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Equal weights (what plain round robin does): small backends overload first.
    Equal,
    /// Weights proportional to capacity (the static ideal).
    Capacity,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Equal => Split::Equal,
            SplitArg::Capacity => Split::Capacity,
        }
    }
}

/// `aya datasets fetch`.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Output directory.
    #[arg(long, short = 'o', default_value = "out/datasets")]
    pub output: PathBuf,
}

/// `aya datasets check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Directory to scan (default: $AYA_DATASETS or ../shared/datasets).
    pub dir: Option<PathBuf>,
}

mod datasets;
mod model;

pub use datasets::run_datasets;
pub use model::{BacktestOutput, EventDaysRow, backtest, run_backtest, run_forecast, run_train};
