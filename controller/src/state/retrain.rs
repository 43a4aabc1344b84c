//! The guarded background retrain of each cluster's demand model: select a
//! candidate from the stored demand history, backtest it against the model
//! in use on the same holdout origins, and install and persist it only if it
//! scores no worse ([`aya_forecaster::retrain`]).

use aya_forecaster::artifact::{Artifact, TrainingWindow};
use aya_forecaster::online::{OnlineConfig, OnlineForecaster};
use aya_forecaster::retrain::{
    Evaluation, RetrainConfig, RetrainError, evaluate_candidate_with_events,
};
use aya_forecaster::select::{FittedAuto, SelectError, Selection};

use super::{Controller, ControllerError, lock, model_key};
use crate::forecasting::SharedForecaster;
use crate::metrics::RetrainOutcome;
use crate::store::StoreError;

/// What one background retrain of a cluster did (see [`Controller::retrain_cluster`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainReport {
    /// Cluster.
    pub cluster: String,
    /// Outcome.
    pub outcome: RetrainOutcome,
    /// Holdout MASE of the candidate (NaN when not scored).
    pub candidate_mase: f64,
    /// Holdout MASE of the model in use (NaN when there was none or not scored).
    pub current_mase: f64,
    /// The candidate's choice per horizon band (empty when none was made).
    pub candidate: String,
    /// Demand points on the forecaster's grid the retrain learnt from.
    pub points: usize,
    /// Why, in words.
    pub message: String,
}

/// Why a retrain failed (the report's message).
#[derive(Debug, thiserror::Error)]
enum RetrainFailure {
    #[error("reading the stored demand: {0}")]
    ReadDemand(#[source] StoreError),
    #[error(transparent)]
    Evaluate(RetrainError),
    #[error("fitting the candidate on the whole history: {0}")]
    Fit(#[source] SelectError),
    #[error("the forecaster's model changed while the retrain ran; retrying next time")]
    Superseded,
    #[error("encoding the model artifact: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("storing the model artifact: {0}")]
    Store(#[source] StoreError),
}

impl Controller {
    /// The model selection a cluster's forecaster currently uses (`None`
    /// before its first forecast or with forecasting disabled).
    pub fn model(&self, cluster: &str) -> Option<Selection> {
        let f = self.forecaster(cluster)?;
        lock(&f).selection().cloned()
    }

    fn forecaster(&self, cluster: &str) -> Option<SharedForecaster> {
        lock(&self.inner.runtimes)
            .get(cluster)
            .and_then(|rt| rt.forecaster.clone())
    }

    /// Retrain every cluster's demand model in turn (see
    /// [`retrain_cluster`](Self::retrain_cluster)); stops early when the
    /// service begins shutting down. CPU-heavy: call off the async workers.
    pub fn retrain_all(&self, now: f64) -> Vec<RetrainReport> {
        let closing = self.closing();
        let mut out = Vec::new();
        for name in self.inner.cluster_names() {
            if *closing.borrow() {
                break;
            }
            match self.retrain_cluster(&name, now) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(cluster = %name, error = %e, "retrain skipped"),
            }
        }
        out
    }

    /// Guarded retrain of one cluster's demand model at `now` (seconds):
    /// select a candidate from the stored demand history, backtest it and
    /// the current model on the same holdout origins, and install and
    /// persist the candidate only if it scores no worse
    /// ([`aya_forecaster::retrain`]). The forecaster is locked only to read
    /// its selection and to install the new one, never during the
    /// computation, so ticks carry on meanwhile. CPU-heavy: call off the
    /// async workers.
    pub fn retrain_cluster(&self, name: &str, now: f64) -> Result<RetrainReport, ControllerError> {
        self.retrain_cluster_with(name, now, None)
    }

    /// [`retrain_cluster`](Self::retrain_cluster) with a given candidate
    /// instead of a fresh selection: the candidate goes through the same
    /// guard (the tests use it to show that a worse model is rejected).
    pub fn retrain_cluster_with(
        &self,
        name: &str,
        now: f64,
        candidate: Option<Selection>,
    ) -> Result<RetrainReport, ControllerError> {
        if self.cluster(name).is_none() {
            return Err(ControllerError::UnknownCluster(name.into()));
        }
        let started = self.inner.clock.stopwatch();
        let report = self.run_retrain(name, now, candidate);
        let seconds = started.seconds();
        self.inner.metrics.observe_retrain(
            name,
            report.outcome,
            report.candidate_mase,
            report.current_mase,
            seconds,
        );
        log_report(&report, seconds);
        Ok(report)
    }

    fn run_retrain(&self, name: &str, now: f64, injected: Option<Selection>) -> RetrainReport {
        let mut report = RetrainReport {
            cluster: name.to_string(),
            outcome: RetrainOutcome::Skipped,
            candidate_mase: f64::NAN,
            current_mase: f64::NAN,
            candidate: String::new(),
            points: 0,
            message: String::new(),
        };
        self.inner.flush_demand();
        let Some(forecaster) = self.forecaster(name) else {
            report.message =
                "the cluster has no forecaster (not ticked yet, or forecasting disabled)".into();
            return report;
        };
        if let Err(e) = self.guarded_retrain(&forecaster, now, injected, &mut report) {
            report.outcome = RetrainOutcome::Failed;
            report.message = e.to_string();
        }
        report
    }

    /// The retrain proper, filling `report` as it goes: `Ok` when it ended
    /// as skipped, rejected or accepted.
    fn guarded_retrain(
        &self,
        forecaster: &SharedForecaster,
        now: f64,
        injected: Option<Selection>,
        report: &mut RetrainReport,
    ) -> Result<(), RetrainFailure> {
        let name = report.cluster.clone();
        let (ocfg, current, generation, calendar) = {
            let f = lock(forecaster);
            (
                f.config().clone(),
                f.selection().cloned(),
                f.generation(),
                f.calendar().cloned(),
            )
        };
        // The stored demand on the forecaster's grid, bucketed exactly as the
        // live forecaster buckets it.
        let window_ms = (ocfg.max_history as f64 * ocfg.step_s * 1000.0) as i64;
        let points = self
            .inner
            .store
            .demand(&name, (now * 1000.0) as i64 - window_ms)
            .map_err(RetrainFailure::ReadDemand)?;
        let mut grid = OnlineForecaster::new(ocfg.clone());
        // The cluster's known events: selected and scored with them.
        grid.set_calendar(calendar);
        for &(ts, v) in &points {
            aya_policy::DemandForecaster::observe(&mut grid, ts as f64 / 1000.0, v);
        }
        let hist = grid.history();
        let y = &hist[hist.len().saturating_sub(ocfg.max_history)..];
        report.points = y.len();
        let rcfg = RetrainConfig {
            horizon: self.inner.config.forecast_horizon,
            origins: self.inner.config.retrain_holdout_origins,
            select: ocfg.select.clone(),
        };
        let evaluation = match injected {
            Some(c) => {
                let events = grid.events_grid();
                evaluate_candidate_with_events(y, c, current.as_ref(), &rcfg, events.as_ref())
            }
            None => grid.evaluate_retrain(current.as_ref(), &rcfg),
        };
        let ev = match evaluation {
            Ok(ev) => ev,
            Err(e @ RetrainError::TooShort { .. }) => {
                report.message = e.to_string();
                return Ok(());
            }
            Err(e) => return Err(RetrainFailure::Evaluate(e)),
        };
        report.candidate_mase = ev.candidate_score.mase;
        report.current_mase = ev.current_score.as_ref().map_or(f64::NAN, |s| s.mase);
        report.candidate = ev.candidate.describe();
        let summary = format!(
            "{:?}: candidate MASE {:.4} vs current {:.4} on {} holdout origins of {} steps",
            ev.verdict,
            report.candidate_mase,
            report.current_mase,
            ev.origins.len(),
            ev.horizon
        );
        if !ev.verdict.accepted() {
            report.outcome = RetrainOutcome::Rejected;
            report.message = format!("{summary}; the current model stays");
            return Ok(());
        }
        // Persist first, then install: a restart never comes back with a
        // model older than the one that ran.
        let artifact = demand_artifact(&name, &points, y, &ocfg, &ev)?;
        if lock(forecaster).generation() != generation {
            return Err(RetrainFailure::Superseded);
        }
        let json = serde_json::to_vec(&artifact).map_err(RetrainFailure::Encode)?;
        self.inner
            .store
            .put_model(&model_key(&name), &json)
            .map_err(RetrainFailure::Store)?;
        {
            let mut f = lock(forecaster);
            if f.generation() != generation {
                return Err(RetrainFailure::Superseded);
            }
            f.install(ev.candidate);
        }
        report.outcome = RetrainOutcome::Accepted;
        report.message = format!("{summary}; installed and stored");
        Ok(())
    }
}

fn log_report(report: &RetrainReport, seconds: f64) {
    let name = &report.cluster;
    match report.outcome {
        RetrainOutcome::Failed => tracing::warn!(
            cluster = %name, outcome = report.outcome.as_str(), candidate_mase = report.candidate_mase,
            current_mase = report.current_mase, points = report.points, seconds, message = %report.message, "retrain"
        ),
        RetrainOutcome::Skipped => tracing::debug!(
            cluster = %name, outcome = report.outcome.as_str(), points = report.points, message = %report.message, "retrain"
        ),
        _ => tracing::info!(
            cluster = %name, outcome = report.outcome.as_str(), candidate_mase = report.candidate_mase,
            current_mase = report.current_mase, candidate = %report.candidate, points = report.points, seconds,
            message = %report.message, "retrain"
        ),
    }
}

/// The artifact stored for an accepted retrain: the forecaster crate's model
/// format, with the holdout scores of the candidate and of the model it replaced.
fn demand_artifact(
    cluster: &str,
    points: &[(i64, f64)],
    y: &[f64],
    ocfg: &OnlineConfig,
    ev: &Evaluation,
) -> Result<Artifact, RetrainFailure> {
    let fitted = FittedAuto::fit(y, ev.candidate.clone()).map_err(RetrainFailure::Fit)?;
    // The same timestamp form `aya train` writes.
    let rfc = aya_forecaster::data::timestamp::format_rfc3339;
    let mut backtest = vec![ev.candidate_score.score.clone()];
    if let Some(c) = &ev.current_score {
        backtest.push(c.score.clone());
    }
    Ok(Artifact::new(
        format!("aya-controller {}", env!("CARGO_PKG_VERSION")),
        TrainingWindow {
            series: format!("{cluster}/demand"),
            start: rfc(points.first().map_or(0, |p| p.0)),
            end: rfc(points.last().map_or(0, |p| p.0)),
            points: y.len(),
            interval_ms: (ocfg.step_s * 1000.0) as i64,
        },
        ev.horizon,
        &fitted,
        Some(backtest),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn an_unknown_cluster_is_an_error_and_a_cluster_without_forecaster_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let now = ctl.clock().now_secs();
        assert!(matches!(
            ctl.retrain_cluster("nope", now),
            Err(ControllerError::UnknownCluster(_))
        ));
        let r = ctl.retrain_cluster("web", now).unwrap();
        assert_eq!(r.outcome, RetrainOutcome::Skipped);
        assert!(r.message.contains("no forecaster"), "{}", r.message);
        assert_eq!(ctl.metrics().retrains("web", RetrainOutcome::Skipped), 1);
    }

    #[test]
    fn too_little_history_is_skipped_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        let now = ctl.clock().now_secs();
        assert!(ctl.config().forecast_step_seconds > 0.0);
        ctl.tick_all(now).unwrap();
        let reports = ctl.retrain_all(now);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, RetrainOutcome::Skipped);
        assert!(
            reports[0].message.contains("history has"),
            "{}",
            reports[0].message
        );
        assert!(ctl.model("web").is_none());
    }

    #[test]
    fn a_retrain_stops_when_shutdown_begins() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = open(&dir);
        ctl.begin_shutdown();
        assert!(ctl.retrain_all(ctl.clock().now_secs()).is_empty());
    }
}
