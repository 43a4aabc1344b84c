//! `aya train`, `aya forecast` and `aya backtest`.
//!
//! All three read a series through the data layer (every CSV form it accepts,
//! or a Prometheus range query, [`super::SeriesArgs`]), put it on its regular
//! grid, detect its seasonality and run the automatic selection of
//! [`aya_forecaster::select`]. Input problems (unreadable CSV, series too
//! short, a file that is not a model, a Prometheus answer that cannot be
//! used) exit with code 3 and a message naming the file or request; bad flag
//! values exit with code 2; a Prometheus server that cannot be read, 1.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, anyhow};

use aya_forecaster::artifact::{Artifact, TrainingWindow};
use aya_forecaster::backtest::{self, BacktestConfig, BacktestError, Method};
use aya_forecaster::data::{self, Series, format_rfc3339};
use aya_forecaster::events::{Calendar, EventConfig, EventGrid};
use aya_forecaster::models::{Forecast, ModelSpec};
use aya_forecaster::seasonality::{self, Seasonality};
use aya_forecaster::select::{
    FittedAuto, MIN_POINTS, SelectConfig, SelectError, default_candidates,
};

use super::{BacktestArgs, ForecastArgs, SeriesArgs, TrainArgs};
use crate::failure::{CliResult, Failure};

/// A loaded series on its grid, with its seasonality.
struct Prepared {
    series: Series,
    seas: Seasonality,
}

fn prepare(source: &SeriesArgs) -> Result<Prepared, Failure> {
    let series = source.load()?;
    let series = backtest::regularise(&source.message_path(), series).map_err(Failure::input)?;
    if series.values.len() < MIN_POINTS {
        return Err(Failure::input(anyhow!(
            "{}: series has {} point(s); at least {MIN_POINTS} are needed to forecast",
            source.name(),
            series.values.len()
        )));
    }
    let seas = seasonality::detect(&series.values, (series.interval_ms / 1000).max(1));
    Ok(Prepared { series, seas })
}

fn select_failure(source: &SeriesArgs, e: SelectError) -> Failure {
    Failure::input(anyhow!("{}: {e}", source.name()))
}

/// Read `--events` and place it on the series' grid (step 0 = its first point).
fn load_events(
    path: Option<&Path>,
    series: &Series,
    cfg: EventConfig,
) -> Result<Option<(Calendar, EventGrid)>, Failure> {
    let Some(path) = path else { return Ok(None) };
    let calendar = Calendar::load(path).map_err(Failure::input)?;
    let t0 = series.timestamps.first().copied().unwrap_or(0);
    let grid = EventGrid::new(&calendar, t0, series.interval_ms, cfg);
    Ok(Some((calendar, grid)))
}

/// Run `aya train`.
pub fn run_train(args: &TrainArgs) -> CliResult {
    let p = prepare(&args.source)?;
    let y = &p.series.values;
    let horizon = match args.horizon {
        Some(0) => return Err(Failure::usage(anyhow!("--horizon must be at least 1"))),
        Some(h) => h,
        None => p.seas.season().max(12),
    };
    let cfg = SelectConfig::default();
    let events = load_events(args.events.as_deref(), &p.series, EventConfig::default())?;
    let grid = events.as_ref().map(|(_, g)| g);
    let model = FittedAuto::select_and_fit_with_events(y, &p.seas, horizon, &cfg, grid)
        .map_err(|e| select_failure(&args.source, e))?;
    let backtest = if args.no_backtest {
        None
    } else {
        let mut hs = vec![1, 12.min(horizon), horizon];
        hs.dedup();
        // A series shorter than the training horizon (e.g. an hour of a per-request
        // trace at one minute, trained for one day) is still backtested at the
        // horizons it can hold, rather than not at all.
        hs.retain(|&h| y.len() > h + 2 * MIN_POINTS);
        let bc = BacktestConfig {
            horizons: hs,
            origins: 5,
            test_fraction: 0.2,
            seasonality: p.seas.clone(),
            scale_season: p.seas.day.unwrap_or_else(|| p.seas.season()),
            methods: vec![if grid.is_some() {
                Method::AutoEvents(cfg.clone())
            } else {
                Method::Auto(cfg.clone())
            }],
        };
        match backtest::run_with_events(y, &bc, grid) {
            Ok(r) => Some(r.scores),
            Err(e) => {
                eprintln!(
                    "note: {}: no backtest recorded in the model: {e}",
                    args.source.name()
                );
                None
            }
        }
    };
    let s = &p.series;
    let artifact = Artifact::new(
        format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        TrainingWindow {
            series: s.name.clone(),
            start: s
                .timestamps
                .first()
                .map(|&t| format_rfc3339(t))
                .unwrap_or_default(),
            end: s
                .timestamps
                .last()
                .map(|&t| format_rfc3339(t))
                .unwrap_or_default(),
            points: y.len(),
            interval_ms: s.interval_ms,
        },
        horizon,
        &model,
        backtest,
    );
    artifact
        .save(&args.output)
        .with_context(|| format!("writing the model to {}", args.output.display()))
        .map_err(Failure::runtime)?;
    let mut msg = format!(
        "trained on {} points of {} (interval {}, seasons {:?}); chosen: {}\n",
        y.len(),
        s.name,
        data::format_interval(s.interval_ms),
        p.seas.periods,
        artifact.chosen
    );
    describe_training(
        &mut msg,
        model.selection(),
        events.as_ref().map(|(c, _)| c),
        &artifact,
    );
    let _ = writeln!(msg, "saved {}", args.output.display());
    print!("{msg}");
    Ok(())
}

/// Append the chosen models per horizon band, the events verdict and the backtest scores.
fn describe_training(
    msg: &mut String,
    sel: &aya_forecaster::select::Selection,
    calendar: Option<&Calendar>,
    artifact: &Artifact,
) {
    for band in &sel.bands {
        let names = |ids: &[usize]| {
            ids.iter()
                .filter_map(|&i| sel.specs.get(i).map(|s| s.name()))
                .collect::<Vec<_>>()
                .join("+")
        };
        let baseline = band.baseline.map_or("-".to_string(), |b| names(&[b]));
        let _ = writeln!(
            msg,
            "  steps {}-{}: {} (validation error {:.3} x baseline {}, evidence {:.1} s.e.)",
            band.from,
            band.to,
            names(&band.members),
            band.ratio,
            baseline,
            band.evidence
        );
    }
    if let Some(calendar) = calendar {
        let _ = match &sel.events {
            Some(ev) => writeln!(
                msg,
                "  events: {} occurrences; profile kept ({})",
                calendar.events.len(),
                ev.describe()
            ),
            None => writeln!(
                msg,
                "  events: {} occurrences; profile not kept (it did not help in validation)",
                calendar.events.len()
            ),
        };
    }
    if let Some(scores) = &artifact.backtest {
        for sc in scores {
            let _ = writeln!(
                msg,
                "  backtest h={:<4} MASE {:.3}  sMAPE {:.1}%  coverage80 {:.2}  coverage95 {:.2}",
                sc.horizon, sc.mase, sc.smape, sc.coverage80, sc.coverage95
            );
        }
    }
}

/// Run `aya forecast`.
pub fn run_forecast(args: &ForecastArgs) -> CliResult {
    if args.horizon == 0 {
        return Err(Failure::usage(anyhow!("--horizon must be at least 1")));
    }
    if !(args.level > 0.0 && args.level < 1.0) {
        return Err(Failure::usage(anyhow!(
            "--level {} must be strictly between 0 and 1 (e.g. 0.8 or 0.95)",
            args.level
        )));
    }
    let p = prepare(&args.source)?;
    let y = &p.series.values;
    let (model, events) = match &args.model {
        Some(path) => {
            let artifact = Artifact::load(path).map_err(Failure::input)?;
            if artifact.training.interval_ms != p.series.interval_ms {
                return Err(Failure::input(anyhow!(
                    "{}: the model was trained at interval {} but {} has interval {}",
                    path.display(),
                    data::format_interval(artifact.training.interval_ms),
                    args.source.name(),
                    data::format_interval(p.series.interval_ms)
                )));
            }
            let cfg = artifact
                .selection
                .events
                .as_ref()
                .map_or_else(EventConfig::default, |e| e.config);
            if artifact.selection.events.is_some() && args.events.is_none() {
                eprintln!(
                    "note: {} has an event profile; without --events it forecasts as if no event were scheduled",
                    path.display()
                );
            }
            let events = load_events(args.events.as_deref(), &p.series, cfg)?;
            let model =
                FittedAuto::fit_with_events(y, artifact.selection, events.as_ref().map(|(_, g)| g))
                    .map_err(|e| select_failure(&args.source, e))?;
            (model, events)
        }
        None => {
            let events = load_events(args.events.as_deref(), &p.series, EventConfig::default())?;
            let model = FittedAuto::select_and_fit_with_events(
                y,
                &p.seas,
                args.horizon,
                &SelectConfig::default(),
                events.as_ref().map(|(_, g)| g),
            )
            .map_err(|e| select_failure(&args.source, e))?;
            (model, events)
        }
    };
    let mut f = Forecast::with_capacity(args.horizon);
    model
        .predict_with_events(
            args.horizon,
            Some(args.level),
            &mut f,
            events.as_ref().map(|(_, g)| (g, y.len())),
        )
        .map_err(|e| Failure::runtime(anyhow!("forecasting {}: {e}", args.source.name())))?;
    let last = p.series.timestamps.last().copied().unwrap_or(0);
    let dt = p.series.interval_ms;
    let mut out = String::with_capacity(64 * args.horizon + 64);
    out.push_str("timestamp,yhat,lower,upper,level\n");
    for i in 0..args.horizon {
        let ts = last + dt * (i as i64 + 1);
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            format_rfc3339(ts),
            f.point[i],
            f.lower[i],
            f.upper[i],
            args.level
        );
    }
    std::fs::write(&args.output, out)
        .with_context(|| format!("writing {}", args.output.display()))
        .map_err(Failure::runtime)?;
    eprintln!(
        "forecast {} steps of {} with {} -> {}",
        args.horizon,
        p.series.name,
        model.selection().describe(),
        args.output.display()
    );
    Ok(())
}

/// Parse `--horizons` for a series of `n` points. `season` (or `day`) is relative to
/// the series: on a series too short to backtest one season (e.g. an hour of a
/// per-request trace per minute, where a day is 1,440 steps) it is left out with a
/// note, as long as another horizon remains; numeric horizons are kept as asked
/// (the backtest then says when the series is too short for them).
fn parse_horizons(raw: &[String], seas: &Seasonality, n: usize) -> Result<Vec<usize>, Failure> {
    let mut hs = Vec::new();
    let mut skipped = None;
    for h in raw {
        let h = h.trim();
        if h.is_empty() {
            continue;
        }
        let v = if h.eq_ignore_ascii_case("season") || h.eq_ignore_ascii_case("day") {
            let v = seas.day.unwrap_or_else(|| seas.season());
            if n <= v + 2 * MIN_POINTS {
                skipped = Some(v);
                continue;
            }
            v
        } else {
            h.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| {
                Failure::usage(anyhow!(
                    "--horizons: {h:?} is not a positive number of steps or `season`"
                ))
            })?
        };
        if !hs.contains(&v) {
            hs.push(v);
        }
    }
    match (hs.is_empty(), skipped) {
        (true, Some(v)) => hs.push(v),
        (true, None) => {
            return Err(Failure::usage(anyhow!(
                "--horizons: give at least one horizon, e.g. 1,12,season"
            )));
        }
        (false, Some(v)) => eprintln!(
            "note: horizon `season` ({v} steps) left out: the series has {n} points, \
             too few to backtest it"
        ),
        (false, None) => {}
    }
    Ok(hs)
}

/// What `aya backtest` computed for one series, before it is printed: the series
/// on its grid, its seasonality and the backtest report. [`run_backtest`] prints
/// [`BacktestOutput::render`]; tests and embedding code can inspect the scores.
#[derive(Debug, Clone)]
pub struct BacktestOutput {
    /// The series name (file stem, plus the column or filters that picked it).
    pub series: String,
    /// Points of the series on its regular grid.
    pub points: usize,
    /// Grid interval, milliseconds.
    pub interval_ms: i64,
    /// Detected seasonality.
    pub seasonality: Seasonality,
    /// Seasonal lag that scales MASE (one day, else the detected season).
    pub mase_season: usize,
    /// Origins, scores per method and horizon, and every scored step.
    pub report: backtest::BacktestReport,
    /// Fraction of the series the origins were spread over.
    pub test_fraction: f64,
    /// With `--events`: MASE on event days vs other days per method and horizon.
    pub event_days: Vec<EventDaysRow>,
}

/// MASE of one method at one horizon over the forecast steps that fall on a
/// UTC day touched by an event, and over the others.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventDaysRow {
    /// Method (`aya_auto` or `aya_auto_events`).
    pub model: String,
    /// Horizon (steps 1..=horizon of every origin are scored).
    pub horizon: usize,
    /// Mean absolute scaled error of steps on event days.
    pub mase_event_days: f64,
    /// How many steps that is.
    pub steps_event_days: usize,
    /// Mean absolute scaled error of steps on other days.
    pub mase_other_days: f64,
    /// How many steps that is.
    pub steps_other_days: usize,
}

impl BacktestOutput {
    /// The text `aya backtest` prints: a table (one row per method and horizon) or,
    /// with `json`, a JSON document with the same scores.
    pub fn render(&self, json: bool) -> Result<String, Failure> {
        if json {
            let doc = serde_json::json!({
                "series": self.series,
                "points": self.points,
                "interval_ms": self.interval_ms,
                "seasonality": self.seasonality,
                "mase_season": self.mase_season,
                "origins": self.report.origins,
                "last_choice": self.report.last_choice,
                "last_choice_events": self.report.last_choice_events,
                "scores": self.report.scores,
                "event_days": self.event_days,
            });
            let mut text =
                serde_json::to_string_pretty(&doc).map_err(|e| Failure::runtime(anyhow!(e)))?;
            text.push('\n');
            Ok(text)
        } else {
            Ok(format_table(self))
        }
    }
}

/// Load the series of `aya backtest`, run the rolling-origin backtest and write
/// `--forecasts-out` when asked; everything [`run_backtest`] does but printing.
pub fn backtest(args: &BacktestArgs) -> Result<BacktestOutput, Failure> {
    if args.origins == 0 {
        return Err(Failure::usage(anyhow!("--origins must be at least 1")));
    }
    let p = prepare(&args.source)?;
    let y = &p.series.values;
    if !(args.test_fraction > 0.0 && args.test_fraction < 1.0) {
        return Err(Failure::usage(anyhow!(
            "--test-fraction {} must be strictly between 0 and 1",
            args.test_fraction
        )));
    }
    let horizons = parse_horizons(&args.horizons, &p.seas, y.len())?;
    let events = load_events(args.events.as_deref(), &p.series, EventConfig::default())?;
    let mut methods = vec![Method::Auto(SelectConfig::default())];
    if events.is_some() {
        methods.push(Method::AutoEvents(SelectConfig::default()));
    }
    if !args.auto_only {
        let first_origin = (y.len() as f64 * (1.0 - args.test_fraction)) as usize;
        for spec in default_candidates(&p.seas, first_origin) {
            if !matches!(spec, ModelSpec::Mean { .. }) {
                methods.push(Method::Single {
                    spec,
                    intervals: true,
                });
            }
        }
    }
    let scale_season = p.seas.day.unwrap_or_else(|| p.seas.season());
    let cfg = BacktestConfig {
        horizons,
        origins: args.origins,
        test_fraction: args.test_fraction,
        seasonality: p.seas.clone(),
        scale_season,
        methods,
    };
    let grid = events.as_ref().map(|(_, g)| g);
    let report = backtest::run_with_events(y, &cfg, grid).map_err(|e| match e {
        BacktestError::NoHorizon => Failure::usage(e),
        BacktestError::TooShort { .. } => Failure::input(anyhow!("{}: {e}", args.source.name())),
    })?;
    if let Some(path) = &args.forecasts_out {
        write_forecasts(path, &p.series, &report.records).map_err(Failure::runtime)?;
    }
    let mut event_days = Vec::new();
    if let Some((calendar, _)) = &events {
        let t0 = p.series.timestamps.first().copied().unwrap_or(0);
        let dt = p.series.interval_ms;
        for method in ["aya_auto", "aya_auto_events"] {
            for &h in &cfg.horizons {
                let (on, off) = aya_forecaster::events::split_by_event_days(
                    &report.records,
                    method,
                    h,
                    calendar,
                    |o| backtest::mase_scale(&y[..o], scale_season),
                    |i| t0 + dt * i as i64,
                );
                event_days.push(EventDaysRow {
                    model: method.to_string(),
                    horizon: h,
                    mase_event_days: on.0,
                    steps_event_days: on.1,
                    mase_other_days: off.0,
                    steps_other_days: off.1,
                });
            }
        }
    }
    Ok(BacktestOutput {
        event_days,
        test_fraction: args.test_fraction,
        points: y.len(),
        series: p.series.name,
        interval_ms: p.series.interval_ms,
        seasonality: p.seas,
        mase_season: scale_season,
        report,
    })
}

/// Run `aya backtest`: [`backtest`], then print the table (or JSON with `--json`).
pub fn run_backtest(args: &BacktestArgs) -> CliResult {
    let out = backtest(args)?;
    print!("{}", out.render(args.json)?);
    Ok(())
}

fn format_table(out: &BacktestOutput) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} points at {}, seasons {:?}, {} origins over the last {}%, MASE scaled by seasonal naive (lag {})",
        out.series,
        out.points,
        data::format_interval(out.interval_ms),
        out.seasonality.periods,
        out.report.origins.len(),
        (out.test_fraction * 100.0).round(),
        out.mase_season
    );
    if let Some(c) = &out.report.last_choice {
        let _ = writeln!(s, "aya_auto chose (last origin): {c}");
    }
    if let Some(c) = &out.report.last_choice_events {
        let _ = writeln!(s, "aya_auto_events chose (last origin): {c}");
    }
    let _ = writeln!(
        s,
        "{:<26} {:>7} {:>8} {:>9} {:>7} {:>7} {:>10}",
        "model", "horizon", "MASE", "sMAPE%", "cov80", "cov95", "ms/origin"
    );
    for sc in &out.report.scores {
        let _ = writeln!(
            s,
            "{:<26} {:>7} {:>8.3} {:>9.2} {:>7.2} {:>7.2} {:>10.1}",
            sc.model, sc.horizon, sc.mase, sc.smape, sc.coverage80, sc.coverage95, sc.ms_per_origin
        );
    }
    if !out.event_days.is_empty() {
        let _ = writeln!(
            s,
            "\nMASE by day (UTC days touched by an event vs the others; steps 1..h of every origin)"
        );
        let _ = writeln!(
            s,
            "{:<26} {:>7} {:>11} {:>7} {:>11} {:>7}",
            "model", "horizon", "event days", "steps", "other days", "steps"
        );
        for r in &out.event_days {
            let _ = writeln!(
                s,
                "{:<26} {:>7} {:>11.3} {:>7} {:>11.3} {:>7}",
                r.model,
                r.horizon,
                r.mase_event_days,
                r.steps_event_days,
                r.mase_other_days,
                r.steps_other_days
            );
        }
    }
    s
}

fn write_forecasts(
    path: &Path,
    series: &Series,
    records: &[backtest::ForecastRecord],
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(
        w,
        "model,origin,origin_timestamp,step,timestamp,actual,yhat,lower80,upper80,lower95,upper95"
    )?;
    for r in records {
        let ts = |i: usize| {
            series
                .timestamps
                .get(i)
                .map(|&t| format_rfc3339(t))
                .unwrap_or_default()
        };
        let num = |v: f64| {
            if v.is_finite() {
                v.to_string()
            } else {
                String::new()
            }
        };
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.model,
            r.origin,
            ts(r.origin),
            r.step,
            ts(r.origin + r.step - 1),
            r.actual,
            r.yhat,
            num(r.lower80),
            num(r.upper80),
            num(r.lower95),
            num(r.upper95)
        )?;
    }
    w.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
