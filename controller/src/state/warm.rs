//! Warm start: at start, a cluster whose store holds too little demand
//! history gets some from the source its `[clusters.warm_start]` names (a
//! Prometheus range query, a CSV, or the model of an `aya train` artifact),
//! and the result goes through the guarded retrain of [`super::retrain`]:
//! the candidate replaces the cluster's model only if it backtests no worse
//! than the model in use on the same holdout origins.
//!
//! History (Prometheus or CSV) is appended to the store's demand table, only
//! where the store has none (before its oldest stored point, within the
//! forecaster's window up to now), so the forecaster, the retrain and later
//! restarts all see it as if the service had observed it. The cluster's
//! forecaster is then rebuilt from the store (its override kept) and
//! retrained. An artifact adds no history: its model is the candidate; when
//! the store holds too little history to score it and the cluster has no
//! model at all, it is installed as is (there is nothing it could be worse
//! than) and stored like an accepted retrain.

use std::path::Path;
use std::time::Duration;

use aya_forecaster::artifact::Artifact;
use aya_forecaster::data::prometheus::{NonFinite, RangeQuery, load_prometheus};
use aya_forecaster::data::{LoadOptions, format_interval, format_rfc3339, load_csv};

use super::runtime::new_runtime;
use super::{Controller, ControllerError, RetrainReport, lock, model_key};
use crate::config::WarmStart;
use crate::forecasting::SharedForecaster;
use crate::metrics::RetrainOutcome;

/// Timeout of each request to Prometheus during a warm start.
pub const WARM_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the warm start of one cluster did.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmStartReport {
    /// Cluster.
    pub cluster: String,
    /// The source, in words (`prometheus http://... query ...`, `csv PATH`, `artifact PATH`).
    pub source: String,
    /// Demand points the store held in the forecaster's window before.
    pub stored_points: usize,
    /// Demand points added to the store from the source.
    pub added_points: usize,
    /// The guarded retrain that followed (`None` when none ran).
    pub retrain: Option<RetrainReport>,
    /// True when an artifact's model was installed without a holdout
    /// comparison (no stored history to score it on, and no model in use).
    pub installed_unscored: bool,
    /// True when the source could not be read or the store failed.
    pub failed: bool,
    /// What happened, in words.
    pub message: String,
}

/// Why a warm start stopped before its retrain.
#[derive(Debug, thiserror::Error)]
enum WarmFailure {
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("{0}")]
    Source(String),
}

impl Controller {
    /// Warm-start every cluster of the configuration file that has a
    /// `[clusters.warm_start]` (see the module docs); stops early when the
    /// service begins shutting down. Blocking (network and CPU): call off
    /// the async workers, before the first tick.
    pub fn warm_start_all(&self, now: f64) -> Vec<WarmStartReport> {
        let closing = self.closing();
        let mut out = Vec::new();
        for c in &self.inner.config.clusters {
            let Some(warm) = &c.warm_start else { continue };
            if *closing.borrow() {
                break;
            }
            let report = self.warm_start_cluster(&c.name, warm, now);
            log_report(&report);
            out.push(report);
        }
        out
    }

    /// Warm-start cluster `name` now, on an operator's request
    /// (`AdminService.WarmStart`), from the `[clusters.warm_start]` of the
    /// configuration file as last loaded or reloaded. `force` skips the
    /// `min_stored_points` check (history is still added only where the
    /// store has none, and the retrain is still guarded). Blocking.
    pub fn warm_start_requested(
        &self,
        name: &str,
        force: bool,
        now: f64,
    ) -> Result<WarmStartReport, ControllerError> {
        if self.cluster(name).is_none() {
            return Err(ControllerError::UnknownCluster(name.into()));
        }
        let warm = lock(&self.inner.applied)
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.warm_start.clone())
            .ok_or_else(|| {
                ControllerError::Invalid(format!(
                    "cluster {name:?} has no [clusters.warm_start] in the configuration file \
                     (add one and reload with SIGHUP)"
                ))
            })?;
        let report = self.warm_start_cluster_forced(name, &warm, now, force);
        log_report(&report);
        Ok(report)
    }

    /// Warm-start cluster `name` from `warm` at `now` (seconds).
    pub fn warm_start_cluster(&self, name: &str, warm: &WarmStart, now: f64) -> WarmStartReport {
        self.warm_start_cluster_forced(name, warm, now, false)
    }

    fn warm_start_cluster_forced(
        &self,
        name: &str,
        warm: &WarmStart,
        now: f64,
        force: bool,
    ) -> WarmStartReport {
        let mut report = WarmStartReport {
            cluster: name.to_string(),
            source: describe(warm),
            stored_points: 0,
            added_points: 0,
            retrain: None,
            installed_unscored: false,
            failed: false,
            message: String::new(),
        };
        if let Err(e) = self.warm_start_inner(name, warm, now, force, &mut report) {
            report.failed = true;
            report.message = e.to_string();
        }
        report
    }

    fn warm_start_inner(
        &self,
        name: &str,
        warm: &WarmStart,
        now: f64,
        force: bool,
        report: &mut WarmStartReport,
    ) -> Result<(), WarmFailure> {
        if self.cluster(name).is_none() {
            return Err(ControllerError::UnknownCluster(name.into()).into());
        }
        let config = &self.inner.config;
        let Some(probe) = crate::forecasting::build(
            config.forecast_step_seconds,
            config.retrain_interval_seconds > 0.0,
        ) else {
            report.message = "forecasting is off (forecast_step_seconds = 0)".into();
            return Ok(());
        };
        let ocfg = probe.config();
        let step_ms = (ocfg.step_s * 1000.0).round() as i64;
        let window_ms = ocfg.max_history as i64 * step_ms;
        let now_ms = (now * 1000.0) as i64;
        let from_ms = now_ms - window_ms;
        self.inner.flush_demand();
        let stored = self.inner.store.demand(name, from_ms)?;
        report.stored_points = stored.len();
        let day_steps = (86_400_000 / step_ms.max(1)) as usize;
        let min = warm
            .min_stored_points
            .unwrap_or(day_steps)
            .min(ocfg.max_history);
        if stored.len() >= min && !force {
            report.message = format!(
                "not needed: the store holds {} demand points in the window (warm start below {min})",
                stored.len()
            );
            return Ok(());
        }

        if let Some(path) = &warm.artifact {
            return self.warm_start_artifact(name, path, step_ms, now, report);
        }
        // History: only where the store has none.
        let until_ms = stored.first().map_or(now_ms, |p| p.0 - step_ms);
        let series = load_warm_history(warm, from_ms, until_ms, step_ms)?;
        let points: Vec<(String, i64, f64)> = series
            .timestamps
            .iter()
            .zip(&series.values)
            .filter(|(t, _)| (from_ms..=until_ms).contains(*t))
            .map(|(t, v)| (name.to_string(), *t, *v))
            .collect();
        if points.is_empty() && series.report.last_ms > until_ms {
            report.message = format!(
                "nothing to add: {} has no point before the oldest stored demand ({})",
                series.name,
                format_rfc3339(until_ms + step_ms)
            );
            return Ok(());
        }
        if points.is_empty() {
            return Err(WarmFailure::Source(format!(
                "{} holds no point between {} and {} (it covers {} to {}); \
                 the history must be the latest before now",
                series.name,
                format_rfc3339(from_ms),
                format_rfc3339(until_ms),
                format_rfc3339(series.report.first_ms),
                format_rfc3339(series.report.last_ms)
            )));
        }
        self.inner.store.append_demand(&points)?;
        report.added_points = points.len();
        self.rebuild_forecaster(name)?;
        let r = self.retrain_cluster(name, now)?;
        report.message = format!(
            "added {} demand points ({} to {}); retrain {}: {}",
            points.len(),
            format_rfc3339(points[0].1),
            format_rfc3339(points[points.len() - 1].1),
            r.outcome.as_str(),
            r.message
        );
        report.retrain = Some(r);
        Ok(())
    }

    fn warm_start_artifact(
        &self,
        name: &str,
        path: &Path,
        step_ms: i64,
        now: f64,
        report: &mut WarmStartReport,
    ) -> Result<(), WarmFailure> {
        let artifact = Artifact::load(path).map_err(|e| WarmFailure::Source(e.to_string()))?;
        if artifact.training.interval_ms != step_ms {
            return Err(WarmFailure::Source(format!(
                "{}: the model was trained at interval {} but the forecast step is {}",
                path.display(),
                format_interval(artifact.training.interval_ms),
                format_interval(step_ms)
            )));
        }
        let forecaster = self.rebuild_forecaster(name)?;
        let r = self.retrain_cluster_with(name, now, Some(artifact.selection.clone()))?;
        let unscored = r.outcome == RetrainOutcome::Skipped
            && forecaster
                .as_ref()
                .is_some_and(|f| lock(f).selection().is_none());
        if let (true, Some(f)) = (unscored, &forecaster) {
            let json = serde_json::to_vec(&artifact)
                .map_err(|e| WarmFailure::Source(format!("encoding the artifact: {e}")))?;
            self.inner
                .store
                .put_model(&model_key(name), &json)
                .map_err(WarmFailure::Store)?;
            lock(f).install(artifact.selection.clone());
            report.installed_unscored = true;
            report.message = format!(
                "installed {} ({}) without a holdout comparison: {}; the cluster had no model",
                path.display(),
                artifact.chosen,
                r.message
            );
        } else {
            report.message = format!(
                "{} ({}): retrain {}: {}",
                path.display(),
                artifact.chosen,
                r.outcome.as_str(),
                r.message
            );
        }
        report.retrain = Some(r);
        Ok(())
    }

    /// Build the cluster's runtime anew, its forecaster restored from the
    /// store (the override kept): the forecaster then holds the history just
    /// appended.
    fn rebuild_forecaster(&self, name: &str) -> Result<Option<SharedForecaster>, ControllerError> {
        let cfg = self
            .cluster(name)
            .ok_or_else(|| ControllerError::UnknownCluster(name.into()))?;
        let inner = &self.inner;
        let mut rts = lock(&inner.runtimes);
        let o = rts.remove(name).and_then(|rt| rt.override_);
        let mut rt = new_runtime(&inner.config, &inner.store, &cfg, &inner.clock)?;
        rt.override_ = o;
        let f = rt.forecaster.clone();
        rts.insert(name.to_string(), rt);
        Ok(f)
    }
}

/// The demand history the warm-start source (Prometheus or CSV) holds from `from_ms` to `until_ms`.
fn load_warm_history(
    warm: &WarmStart,
    from_ms: i64,
    until_ms: i64,
    step_ms: i64,
) -> Result<aya_forecaster::data::Series, WarmFailure> {
    Ok(match (&warm.prometheus_url, &warm.csv) {
        (Some(url), _) => {
            // Evaluate on whole steps (e.g. on the minute), where
            // scrapes and recording rules usually land.
            let first_step = from_ms.div_euclid(step_ms) * step_ms + step_ms;
            let mut q = RangeQuery::new(
                url.clone(),
                warm.query.clone().unwrap_or_default(),
                first_step,
                until_ms.max(first_step),
                step_ms,
            );
            q.timeout = WARM_START_TIMEOUT;
            q.access = aya_forecaster::data::prometheus::Access {
                ca_file: warm.prometheus_ca.clone(),
                bearer_token_file: warm.prometheus_bearer_token_file.clone(),
                basic_auth_file: warm.prometheus_basic_auth_file.clone(),
            };
            let want: Vec<(String, String)> = warm
                .series_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let non_finite = if warm.skip_non_finite {
                NonFinite::Skip
            } else {
                NonFinite::Reject
            };
            load_prometheus(&q, &want, non_finite, &LoadOptions::default())
                .map_err(|e| WarmFailure::Source(e.to_string()))?
        }
        (None, Some(path)) => {
            let opts = LoadOptions {
                resample_ms: Some(step_ms),
                ..LoadOptions::default()
            };
            load_csv(path, &opts).map_err(|e| WarmFailure::Source(e.to_string()))?
        }
        (None, None) => {
            return Err(WarmFailure::Source(
                "no source (validation should have refused this configuration)".into(),
            ));
        }
    })
}

fn describe(w: &WarmStart) -> String {
    match (&w.prometheus_url, &w.csv, &w.artifact) {
        (Some(url), _, _) => format!(
            "prometheus {url} query {:?}",
            w.query.as_deref().unwrap_or("")
        ),
        (None, Some(p), _) => format!("csv {}", p.display()),
        (None, None, Some(p)) => format!("artifact {}", p.display()),
        (None, None, None) => "none".into(),
    }
}

fn log_report(r: &WarmStartReport) {
    if r.failed {
        tracing::warn!(cluster = %r.cluster, source = %r.source, message = %r.message, "warm start");
    } else {
        tracing::info!(
            cluster = %r.cluster, source = %r.source, stored = r.stored_points, added = r.added_points,
            outcome = r.retrain.as_ref().map_or("none", |x| x.outcome.as_str()), message = %r.message,
            "warm start"
        );
    }
}
