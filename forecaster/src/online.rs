//! The forecaster inside the control loop: [`OnlineForecaster`] is the one
//! adapter from observed demand to [`aya_policy::DemandForecaster`], for the
//! controller service, the simulator and the demo.
//!
//! Demand arrives as `(t, requests/s)` at the control tick, which may be
//! faster than the forecast grid; observations are averaged into grid buckets
//! (bucket `k` covers `(origin + (k−1)·step, origin + k·step]`, so an
//! observation at exactly `origin + k·step` closes bucket `k`; the origin is
//! 0 unless the step is learnt, see [`OnlineConfig::learn_step`]). Missing
//! buckets are filled by linear interpolation. History that precedes the
//! observations (a stored or a training series) is given with
//! [`OnlineForecaster::observe_history`], which lays it on the same grid.
//!
//! What forecasts the buckets is [`OnlineModel`]: the selected models
//! (default) or a random walk ([`OnlineModel::Naive`], the simulator's
//! `naive` reference). Model *selection* (the costly rolling-origin pass) runs on a
//! schedule — every `reselect_every` new buckets — and in between the chosen
//! models are only refitted on the latest history when it has grown, which
//! takes microseconds to a few milliseconds. Everything runs inline on the
//! caller's thread and depends only on the observations: the same inputs give
//! the same forecasts, which the simulator's reproducibility relies on.
//!
//! The controller can take periodic reselection out of the tick
//! (`inline_reselect = false`): it then retrains in the background and
//! [`install`](OnlineForecaster::install)s a new selection only when it
//! backtests no worse ([`crate::retrain`]). The forecaster still selects
//! inline while it has no selection, or while its selection was validated on
//! fewer steps than the horizon asks for (a short, growing history), so that
//! it forecasts from the first buckets on.
//!
//! A calendar of known events ([`OnlineForecaster::set_calendar`]) is
//! placed on the bucket grid (bucket `k` is the grid step starting at
//! `origin + (k−1)·step`) and given to the selection
//! ([`crate::select::select_with_events`], which keeps an event profile only
//! on the horizon bands where its validation says it helps), to the guarded
//! reselection (candidate and current model scored with it) and to the
//! forecasts (the profile applied at the steps events cover). Without a
//! calendar everything is exactly as before.

use std::sync::Arc;

use aya_policy::{DemandForecast, DemandForecaster, Time};
use serde::{Deserialize, Serialize};

use crate::events::{Calendar, EventConfig, EventGrid};
use crate::models::Forecast;
use crate::retrain::{Evaluation, RetrainConfig, RetrainError, evaluate_with_events, holdout};
use crate::seasonality::{self, Seasonality};
use crate::select::{FittedAuto, MIN_POINTS, SelectConfig, Selection, select_with_events};

/// Settings of the online forecaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineConfig {
    /// Grid step in seconds.
    pub step_s: f64,
    /// Buckets kept (older ones are dropped).
    pub max_history: usize,
    /// Re-run selection after this many new buckets.
    pub reselect_every: usize,
    /// Interval level of the forecasts, e.g. 0.9.
    pub level: f64,
    /// Detect daily/weekly seasonality from the step (else only `season` is used).
    pub detect_season: bool,
    /// Explicit season in steps (overrides detection when set).
    pub season: Option<usize>,
    /// Selection settings (few origins: it runs inside the control loop).
    pub select: SelectConfig,
    /// Re-run selection every `reselect_every` buckets inside the tick
    /// (`false`: only a background retrain changes an adequate selection).
    #[serde(default = "inline_reselect_default")]
    pub inline_reselect: bool,
    /// Holdout origins of the guarded reselection: a periodic reselection
    /// replaces the current models only when the candidate backtests no
    /// worse on this many recent origins ([`crate::retrain`]).
    #[serde(default = "retrain_origins_default")]
    pub retrain_origins: usize,
    /// Refit the selected models after this many new buckets (1: at every
    /// bucket). Between refits the last fit forecasts further ahead, the
    /// steps already past dropped, so a forecast always starts at the next
    /// bucket.
    #[serde(default = "one")]
    pub refit_every: usize,
    /// What forecasts the buckets.
    #[serde(default)]
    pub model: OnlineModel,
    /// Take the grid step from the spacing of the first two observations
    /// (and put the grid's origin at the first one) instead of `step_s`: a
    /// driver that observes once per control tick then gets one bucket per
    /// tick without saying how long a tick is (the simulator's `naive`).
    #[serde(default)]
    pub learn_step: bool,
    /// How a calendar is placed on the grid (ramp before and aftermath
    /// after each event) when the selection has no profile yet: a driver
    /// whose time line is compressed (the simulator) scales it.
    #[serde(default)]
    pub event_placement: EventConfig,
    /// Validation origins of a selection made with a calendar (at least
    /// `select.origins`): an event profile is learnt leave-one-origin-out
    /// from the occurrences the validation windows cover, so it needs more
    /// windows than a plain selection (on the simulator's WorldCup98
    /// scenario no profile convinces with 3 or 10, one does with 20).
    #[serde(default = "event_origins_default")]
    pub event_origins: usize,
}

fn event_origins_default() -> usize {
    20
}

fn one() -> usize {
    1
}

/// The model behind an [`OnlineForecaster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnlineModel {
    /// Models chosen by rolling-origin selection ([`crate::select`]) and
    /// refitted as history grows (see the module docs).
    #[default]
    Selected,
    /// Random walk: the last bucket, with a 95 % interval from the spread of
    /// the one-step changes over the last `window` buckets
    /// (`last ± 1.96·sd·√h`, lower bound at 0). A simple, honest reference;
    /// `level` is ignored (always 0.95).
    Naive {
        /// Buckets the spread is computed over (≥ 2).
        window: usize,
    },
}

fn retrain_origins_default() -> usize {
    4
}

fn inline_reselect_default() -> bool {
    true
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            step_s: 60.0,
            max_history: 4032,
            reselect_every: 60,
            level: 0.9,
            detect_season: true,
            season: None,
            select: SelectConfig {
                origins: 3,
                max_train: 4032,
                ensemble: 2,
                candidates: None,
            },
            inline_reselect: true,
            retrain_origins: retrain_origins_default(),
            refit_every: 1,
            model: OnlineModel::Selected,
            learn_step: false,
            event_placement: EventConfig::default(),
            event_origins: event_origins_default(),
        }
    }
}

impl OnlineConfig {
    /// The random-walk reference of the simulator (`[forecaster] name =
    /// "naive"`): one bucket per observation spacing, spread over `window`
    /// buckets.
    pub fn naive(window: usize) -> OnlineConfig {
        OnlineConfig {
            model: OnlineModel::Naive {
                window: window.max(2),
            },
            learn_step: true,
            level: 0.95,
            ..OnlineConfig::default()
        }
    }
}

/// Online demand forecaster (see the module docs).
#[derive(Debug)]
pub struct OnlineForecaster {
    cfg: OnlineConfig,
    history: Vec<f64>,
    /// Index of the last closed bucket.
    last_bucket: Option<i64>,
    /// Open bucket: (index, sum, count).
    open: Option<(i64, f64, u32)>,
    /// Buckets closed since the last selection.
    since_select: usize,
    /// Buckets closed since the last refit.
    since_fit: usize,
    selection: Option<Selection>,
    /// Incremented whenever `selection` changes (inline or installed).
    generation: u64,
    fitted: Option<FittedAuto>,
    scratch: Forecast,
    /// Time of bucket 0's end (0 unless the step is learnt).
    origin: Time,
    /// False while a learnt step is not known yet.
    step_known: bool,
    /// While learning the step: the first observation.
    first: Option<(Time, f64)>,
    /// Known events ([`OnlineForecaster::set_calendar`]).
    calendar: Option<Arc<Calendar>>,
    /// The calendar placed at the start of the history the models were
    /// last fitted on (when the selection has an event profile).
    fit_events: Option<EventGrid>,
    /// Bucket index of the first bucket the models were last fitted on,
    /// and the number of buckets fitted on.
    fit_k0: i64,
    fit_len: usize,
}

impl OnlineForecaster {
    /// A forecaster with `cfg`; `step_s` must be positive and finite (else 60 s is used).
    pub fn new(mut cfg: OnlineConfig) -> Self {
        if !(cfg.step_s.is_finite() && cfg.step_s > 0.0) {
            cfg.step_s = 60.0;
        }
        cfg.max_history = cfg.max_history.max(2 * MIN_POINTS);
        cfg.reselect_every = cfg.reselect_every.max(1);
        cfg.refit_every = cfg.refit_every.max(1);
        if let OnlineModel::Naive { window } = &mut cfg.model {
            *window = (*window).max(2);
        }
        if !(cfg.level > 0.0 && cfg.level < 1.0) {
            cfg.level = 0.9;
        }
        OnlineForecaster {
            history: Vec::new(),
            last_bucket: None,
            open: None,
            since_select: 0,
            since_fit: 0,
            selection: None,
            generation: 0,
            fitted: None,
            scratch: Forecast::default(),
            origin: 0.0,
            step_known: !cfg.learn_step,
            first: None,
            calendar: None,
            fit_events: None,
            fit_k0: 0,
            fit_len: 0,
            cfg,
        }
    }

    /// Give the forecaster a calendar of known events (`None` or an empty
    /// calendar: none). A changed calendar is used from the next forecast
    /// on: the current selection's event profile (if it has one) applies to
    /// the new calendar's events of the categories it learnt, and the next
    /// periodic reselection (or background retrain) selects with it.
    pub fn set_calendar(&mut self, calendar: Option<Arc<Calendar>>) {
        let calendar = calendar.filter(|c| !c.events.is_empty());
        let same = match (&self.calendar, &calendar) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        };
        if !same {
            self.calendar = calendar;
            self.fit_events = None;
            // Reselect at the next periodic chance.
            self.since_select = self.since_select.max(self.cfg.reselect_every);
        }
    }

    /// The calendar in use, if any.
    pub fn calendar(&self) -> Option<&Arc<Calendar>> {
        self.calendar.as_ref()
    }

    /// The bucket index of `history[i]`.
    fn bucket_index_of(&self, i: usize) -> i64 {
        let last = self.last_bucket.unwrap_or(0);
        last - (self.history.len() as i64 - 1 - i as i64)
    }

    /// The calendar placed on the grid whose step 0 is bucket `k0` (with
    /// the placement of `selection`'s profile, else the default one).
    fn grid_at(&self, k0: i64, selection: Option<&Selection>) -> Option<EventGrid> {
        let cal = self.calendar.as_ref()?;
        let cfg = selection
            .and_then(|s| s.events.as_ref())
            .map_or(self.cfg.event_placement, |m| m.config);
        let start_s = self.bucket_end(k0) - self.cfg.step_s;
        let interval_ms = (self.cfg.step_s * 1000.0).round().max(1.0) as i64;
        Some(EventGrid::new(
            cal,
            (start_s * 1000.0).round() as i64,
            interval_ms,
            cfg,
        ))
    }
    /// Lay `values` (demand per grid step, oldest first) on the grid as the
    /// buckets that end at `last_at`, `last_at − step`, ...: a stored or a
    /// training history the forecaster should start from (the service's
    /// restored demand, the demo's training period). Observations from then
    /// on continue the same grid.
    ///
    /// With [`OnlineConfig::learn_step`] the configured step is then kept.
    pub fn observe_history(&mut self, values: &[f64], last_at: Time) {
        if !self.step_known && !values.is_empty() {
            self.step_known = true;
            self.origin = 0.0;
            if let Some((t, v)) = self.first.take() {
                self.observe(t, v);
            }
        }
        let n = values.len();
        for (i, v) in values.iter().enumerate() {
            let t = last_at - (n - 1 - i) as f64 * self.cfg.step_s;
            self.observe(t, *v);
        }
    }

    /// Replace the selection (e.g. one a guarded background retrain
    /// accepted). The chosen models are refitted on the current history at
    /// the next forecast.
    pub fn install(&mut self, selection: Selection) {
        self.selection = Some(selection);
        self.generation += 1;
        self.since_select = 0;
        self.fitted = None;
        self.fit_events = None;
    }

    /// The guarded retrain of [`crate::retrain`] on this forecaster's
    /// history (the latest `max_history` buckets): holdout origins at the
    /// end, the candidate selected (with this forecaster's seasonality) on
    /// the data before them, and `current` scored on the same origins. The
    /// controller's background retrain and the inline periodic reselection
    /// both call this, so the simulator scores the same rule.
    pub fn evaluate_retrain(
        &self,
        current: Option<&Selection>,
        cfg: &RetrainConfig,
    ) -> Result<Evaluation, RetrainError> {
        let y = &self.history[self.history.len().saturating_sub(self.cfg.max_history)..];
        let origins = holdout(y.len(), cfg)?;
        let first = origins.first().copied().unwrap_or(y.len());
        let seas = self.seasonality(&y[..first]);
        let grid = self.events_grid();
        let mut cfg = cfg.clone();
        cfg.select = self.select_config(&cfg.select);
        evaluate_with_events(y, &seas, current, &cfg, grid.as_ref())
    }

    /// `base` with more validation origins when a calendar is set (see
    /// [`OnlineConfig::event_origins`]).
    fn select_config(&self, base: &SelectConfig) -> SelectConfig {
        let mut c = base.clone();
        if self.calendar.is_some() {
            c.origins = c.origins.max(self.cfg.event_origins);
        }
        c
    }

    /// The calendar placed on the latest `max_history` buckets (step 0 =
    /// the first of them, the history [`evaluate_retrain`](Self::evaluate_retrain)
    /// uses); `None` without a calendar.
    pub fn events_grid(&self) -> Option<EventGrid> {
        let n = self.history.len().min(self.cfg.max_history);
        self.grid_at(self.bucket_index_of(self.history.len() - n), None)
    }

    /// Counts selection changes: a retrain that read generation `g` installs
    /// its candidate only if the forecaster is still at `g`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration.
    pub fn config(&self) -> &OnlineConfig {
        &self.cfg
    }

    /// Closed buckets currently held, oldest first.
    pub fn history(&self) -> &[f64] {
        &self.history
    }

    /// The current selection, if one has been made.
    pub fn selection(&self) -> Option<&Selection> {
        self.selection.as_ref()
    }

    fn bucket_of(&self, t: Time) -> i64 {
        ((t - self.origin) / self.cfg.step_s - 1e-9).ceil() as i64
    }

    /// End of bucket `idx`.
    fn bucket_end(&self, idx: i64) -> Time {
        self.origin + idx as f64 * self.cfg.step_s
    }

    fn close(&mut self, idx: i64, value: f64) {
        if let (Some(prev), Some(&last)) = (self.last_bucket, self.history.last()) {
            let gap = idx - prev;
            // Interpolate missing buckets (bounded: a long outage restarts history).
            if gap > 1 && gap <= self.cfg.max_history as i64 {
                for k in 1..gap {
                    let w = k as f64 / gap as f64;
                    self.push(last * (1.0 - w) + value * w);
                }
            } else if gap > self.cfg.max_history as i64 {
                self.history.clear();
            }
        }
        self.push(value);
        self.last_bucket = Some(idx);
    }

    fn push(&mut self, v: f64) {
        self.history.push(v);
        self.since_select += 1;
        self.since_fit += 1;
        let cap = self.cfg.max_history;
        if self.history.len() > cap + cap / 4 {
            let excess = self.history.len() - cap;
            self.history.drain(..excess);
        }
    }

    /// The seasonality selection uses for history `y`: the configured season,
    /// else (with `detect_season`) the periods detected at this step.
    pub fn seasonality(&self, y: &[f64]) -> Seasonality {
        if let Some(p) = self.cfg.season.filter(|&p| p > 1) {
            let periods = if y.len() >= 2 * p {
                vec![p]
            } else {
                Vec::new()
            };
            return Seasonality { periods, day: None };
        }
        if self.cfg.detect_season {
            let step = self.cfg.step_s.round() as i64;
            if (step as f64 - self.cfg.step_s).abs() < 1e-9 && step > 0 {
                return seasonality::detect(y, step);
            }
        }
        Seasonality::default()
    }

    /// Bring the fitted model up to date with the history (reselect on schedule).
    fn refresh(&mut self, horizon: usize) -> bool {
        let start = self.history.len().saturating_sub(self.cfg.max_history);
        let y = &self.history[start..];
        if y.len() < MIN_POINTS {
            return false;
        }
        // Without an adequate selection, select outright; a periodic
        // reselection is guarded: the candidate replaces the current models
        // only when it backtests no worse on recent holdout origins.
        let must = self.selection.is_none()
            || self
                .selection
                .as_ref()
                .is_some_and(|s| s.validation_horizon < horizon.min(12));
        let periodic =
            !must && self.cfg.inline_reselect && self.since_select >= self.cfg.reselect_every;
        if must {
            let seas = self.seasonality(y);
            let grid = self.grid_at(self.bucket_index_of(start), None);
            let scfg = self.select_config(&self.cfg.select);
            match select_with_events(y, &seas, horizon.max(12), &scfg, grid.as_ref()) {
                Ok(s) => self.install(s),
                Err(_) => return false,
            }
        } else if periodic {
            self.since_select = 0;
            let rcfg = RetrainConfig {
                horizon,
                origins: self.cfg.retrain_origins,
                select: self.cfg.select.clone(),
            };
            // Too short a history for the holdout, or a failed selection:
            // the current models stay.
            if let Ok(ev) = self.evaluate_retrain(self.selection.as_ref(), &rcfg)
                && ev.verdict.accepted()
            {
                self.install(ev.candidate);
            }
        }
        if self.fitted.is_none() || self.since_fit >= self.cfg.refit_every {
            let Some(sel) = self.selection.clone() else {
                return false;
            };
            let k0 = self.bucket_index_of(start);
            let y = &self.history[start..];
            let fit_len = y.len();
            let grid = if sel.events.as_ref().is_some_and(|m| m.base_without_events) {
                self.grid_at(k0, Some(&sel))
            } else {
                None
            };
            match FittedAuto::fit_with_events(y, sel, grid.as_ref()) {
                Ok(f) => {
                    self.fitted = Some(f);
                    self.since_fit = 0;
                    self.fit_k0 = k0;
                    self.fit_len = fit_len;
                    self.fit_events = grid;
                }
                Err(_) => return false,
            }
        }
        // The calendar placed at the start of the fitted history, when the
        // selection has a profile to apply.
        if self.fit_events.is_none()
            && self.calendar.is_some()
            && self.selection.as_ref().is_some_and(|s| s.events.is_some())
        {
            self.fit_events = self.grid_at(self.fit_k0, self.selection.as_ref());
        }
        true
    }
}

impl DemandForecaster for OnlineForecaster {
    fn observe(&mut self, t: Time, demand_rps: f64) {
        if !t.is_finite() || !demand_rps.is_finite() {
            return;
        }
        if !self.step_known {
            // Learning the step: the first observation waits for the second.
            let Some((t0, d0)) = self.first else {
                self.first = Some((t, demand_rps));
                return;
            };
            if t <= t0 {
                return;
            }
            self.cfg.step_s = t - t0;
            self.origin = t0;
            self.step_known = true;
            self.first = None;
            self.observe(t0, d0);
        }
        let idx = self.bucket_of(t);
        if self.last_bucket.is_some_and(|last| idx <= last) {
            return; // late data for a closed bucket
        }
        match self.open {
            Some((open_idx, sum, count)) if open_idx == idx => {
                self.open = Some((idx, sum + demand_rps, count + 1));
            }
            Some((open_idx, sum, count)) if open_idx < idx => {
                self.close(open_idx, sum / count as f64);
                self.open = Some((idx, demand_rps, 1));
            }
            Some(_) => {} // older than the open bucket: ignore
            None => self.open = Some((idx, demand_rps, 1)),
        }
        // An observation at the very end of its bucket completes it.
        if let Some((open_idx, sum, count)) = self.open
            && (self.bucket_end(open_idx) - t).abs() < 1e-6 * self.cfg.step_s.max(1.0)
        {
            self.close(open_idx, sum / count as f64);
            self.open = None;
        }
    }

    fn forecast_into(&mut self, now: Time, horizon: usize, out: &mut DemandForecast) -> bool {
        out.clear();
        if let OnlineModel::Naive { window } = self.cfg.model {
            return self.naive_into(now, horizon, window, out);
        }
        if horizon == 0 || !now.is_finite() {
            return false;
        }
        let Some(last) = self.last_bucket else {
            return false;
        };
        if !self.refresh(horizon) {
            return false;
        }
        let Some(fitted) = &self.fitted else {
            return false;
        };
        // Steps between the end of the last closed bucket and `now`, plus
        // the buckets closed since the models were last fitted.
        let skip = self.steps_since(last, now) + self.since_fit;
        let events = self.fit_events.as_ref().map(|g| (g, self.fit_len));
        if fitted
            .predict_with_events(
                skip + horizon,
                Some(self.cfg.level),
                &mut self.scratch,
                events,
            )
            .is_err()
        {
            return false;
        }
        out.issued_at = now;
        out.step = self.cfg.step_s;
        out.level = self.cfg.level;
        out.mean.extend_from_slice(&self.scratch.point[skip..]);
        out.lower.extend_from_slice(&self.scratch.lower[skip..]);
        out.upper.extend_from_slice(&self.scratch.upper[skip..]);
        true
    }

    fn step(&self) -> f64 {
        if self.step_known {
            self.cfg.step_s
        } else {
            0.0
        }
    }
}

impl OnlineForecaster {
    /// Whole steps between the end of bucket `last` and `now`.
    fn steps_since(&self, last: i64, now: Time) -> usize {
        let skip = ((now - self.bucket_end(last)) / self.cfg.step_s + 1e-9)
            .floor()
            .max(0.0) as usize;
        skip.min(self.cfg.max_history)
    }

    /// The random walk of [`OnlineModel::Naive`] over the closed buckets.
    fn naive_into(
        &mut self,
        now: Time,
        horizon: usize,
        window: usize,
        out: &mut DemandForecast,
    ) -> bool {
        let Some(last_idx) = self.last_bucket else {
            return false;
        };
        let n = self.history.len();
        if n < 2 {
            return false;
        }
        let recent = &self.history[n.saturating_sub(window)..];
        let last = recent[recent.len() - 1];
        let diffs: Vec<f64> = recent.windows(2).map(|w| w[1] - w[0]).collect();
        let sd = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
        let skip = if now.is_finite() {
            self.steps_since(last_idx, now)
        } else {
            0
        };
        out.issued_at = now;
        out.step = self.cfg.step_s;
        out.level = 0.95;
        for h in 1 + skip..=horizon + skip {
            let w = 1.96 * sd * (h as f64).sqrt();
            out.mean.push(last);
            out.lower.push((last - w).max(0.0));
            out.upper.push(last + w);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::select;

    fn feed(f: &mut OnlineForecaster, from: usize, to: usize) {
        let mut out = DemandForecast::default();
        for k in from..to {
            let t = (k + 1) as f64 * 60.0;
            f.observe(t, 100.0 + (k % 7) as f64 * 3.0 + k as f64 * 0.5);
            f.forecast_into(t, 6, &mut out);
        }
    }

    fn config(inline_reselect: bool) -> OnlineConfig {
        OnlineConfig {
            reselect_every: 1,
            detect_season: false,
            inline_reselect,
            ..OnlineConfig::default()
        }
    }

    #[test]
    fn without_inline_reselect_only_install_changes_an_adequate_selection() {
        let mut f = OnlineForecaster::new(config(false));
        feed(&mut f, 0, 60);
        let g = f.generation();
        let before = f.selection().cloned();
        assert!(before.is_some() && g > 0);
        feed(&mut f, 60, 80);
        assert_eq!(f.generation(), g, "no inline reselection");
        let describe =
            |s: Option<&Selection>| s.map(|s| (s.describe(), s.validation_origins.clone()));
        assert_eq!(describe(f.selection()), describe(before.as_ref()));

        let mut other = before.clone().unwrap();
        other.bands.truncate(1);
        f.install(other.clone());
        assert_eq!(f.generation(), g + 1);
        assert_eq!(f.selection().map(|s| s.bands.len()), Some(1));
        assert_eq!(describe(f.selection()), describe(Some(&other)));
        let mut out = DemandForecast::default();
        assert!(
            f.forecast_into(81.0 * 60.0, 6, &mut out),
            "refits the installed selection"
        );
        assert_eq!(out.mean.len(), 6);

        // The default (the simulator's) reselects inline on schedule.
        let mut g2 = OnlineForecaster::new(config(true));
        feed(&mut g2, 0, 60);
        let before = g2.generation();
        feed(&mut g2, 60, 80);
        assert!(g2.generation() > before);
    }

    /// What the demo needs: a training history laid on the grid, a trained
    /// selection installed, forecasts at once, refits every `refit_every`
    /// buckets and forecasts that start at the next bucket in between.
    #[test]
    fn preloaded_history_and_installed_selection_refit_on_schedule() {
        let y: Vec<f64> = (0..300)
            .map(|k| 100.0 + (k % 7) as f64 * 3.0 + k as f64 * 0.5)
            .collect();
        let sel = select(
            &y,
            &Seasonality::default(),
            12,
            &SelectConfig {
                origins: 2,
                ..SelectConfig::default()
            },
        )
        .unwrap();
        let mut f = OnlineForecaster::new(OnlineConfig {
            step_s: 10.0,
            refit_every: 3,
            inline_reselect: false,
            detect_season: false,
            level: 0.95,
            ..OnlineConfig::default()
        });
        f.observe_history(&y, 0.0);
        f.install(sel);
        assert_eq!(f.history().len(), y.len());
        let mut out = DemandForecast::default();
        assert!(f.forecast_into(0.0, 12, &mut out), "forecasts at once");
        let first = out.mean.clone();
        assert_eq!((out.step, out.level), (10.0, 0.95));
        // Observations on (0, 10] close one bucket: no refit yet, the same
        // fit one step further on.
        f.observe(5.0, 400.0);
        f.observe(10.0, 420.0);
        assert!(f.forecast_into(10.0, 11, &mut out));
        assert_eq!(out.mean[..], first[1..]);
        assert_eq!(f.history().last(), Some(&410.0));
        // Two more buckets: the third since the fit refits on them.
        f.observe(20.0, 400.0);
        f.observe(30.0, 400.0);
        assert!(f.forecast_into(30.0, 9, &mut out));
        assert_ne!(out.mean[..], first[3..]);
        assert_eq!(f.history().len(), y.len() + 3);
    }

    #[test]
    fn a_learnt_step_puts_one_observation_in_each_bucket() {
        let mut f = OnlineForecaster::new(OnlineConfig::naive(4));
        let mut out = DemandForecast::default();
        assert_eq!(f.step(), 0.0, "no step before two observations");
        f.observe(7.0, 10.0);
        assert!(!f.forecast_into(7.0, 3, &mut out));
        f.observe(9.5, 14.0);
        assert_eq!(f.step(), 2.5);
        assert_eq!(f.history(), &[10.0, 14.0]);
        f.observe(12.0, 12.0);
        assert!(f.forecast_into(12.0, 3, &mut out));
        assert_eq!(out.mean, vec![12.0; 3]);
        let sd = ((16.0 + 4.0) / 2.0f64).sqrt();
        assert_eq!(out.upper[1], 12.0 + 1.96 * sd * 2f64.sqrt());
    }
}
