//! Guarded retraining: decide whether a freshly selected model may replace
//! the one a running forecaster uses.
//!
//! The controller retrains each cluster's demand model in the background from
//! its stored history. A new selection is not automatically better: on a
//! short or changing history it can be worse than the model in use. So a
//! candidate only replaces the current model when, on the *same* recent
//! holdout origins, it backtests no worse.
//!
//! Protocol ([`evaluate`]): the last part of the history is split into
//! `origins` holdout origins, `horizon` steps each, spaced by half a horizon
//! and ending at the last point. The candidate is selected on the data before
//! the first origin only (it never sees the holdout). Both the candidate and
//! the current selection are then refitted at every origin on the data before
//! it and forecast `horizon` steps; each is scored by its mean MASE over the
//! origins (scale: in-sample seasonal naive, as in [`crate::backtest`]). The
//! verdict is the pure function [`decide`]: accept when the candidate's score
//! is finite and not above the current one's (or there is no current model).
//! The selection that is installed is exactly the one that was backtested.
//! Everything is deterministic: the same history gives the same verdict.

use serde::{Deserialize, Serialize};

use crate::backtest::{Score, coverage, mase, mase_scale, smape};
use crate::events::EventGrid;
use crate::models::Forecast;
use crate::seasonality::Seasonality;
use crate::select::{FittedAuto, SelectConfig, SelectError, Selection, select_with_events};

/// Settings of a guarded retrain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainConfig {
    /// Steps forecast and scored at each holdout origin (≥ 1).
    pub horizon: usize,
    /// Number of holdout origins (≥ 1).
    pub origins: usize,
    /// Selection settings of the candidate.
    pub select: SelectConfig,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        RetrainConfig {
            horizon: 12,
            origins: 4,
            select: SelectConfig::default(),
        }
    }
}

/// Why a retrain could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RetrainError {
    /// The history cannot hold the training part and the holdout.
    #[error(
        "history has {got} points; a retrain with {origins} holdout origins of {horizon} steps needs at least {needed}"
    )]
    TooShort {
        /// Points available.
        got: usize,
        /// Points needed.
        needed: usize,
        /// Holdout origins.
        origins: usize,
        /// Steps per origin.
        horizon: usize,
    },
    /// Selecting the candidate failed.
    #[error("candidate selection failed: {0}")]
    Select(#[from] SelectError),
}

/// The holdout origins (numbers of training points) of a history of `n`
/// points, oldest first, and the fewest points the training part needs.
pub fn holdout(n: usize, cfg: &RetrainConfig) -> Result<Vec<usize>, RetrainError> {
    let h = cfg.horizon.max(1);
    let k = cfg.origins.max(1);
    let stride = (h / 2).max(1);
    // The candidate's own validation needs a training part that can hold a
    // full-horizon validation (select() validates on at most a third of it).
    let min_train = 3 * h.max(12);
    let needed = min_train + (k - 1) * stride + h;
    if n < needed {
        return Err(RetrainError::TooShort {
            got: n,
            needed,
            origins: k,
            horizon: h,
        });
    }
    let last = n - h;
    Ok((0..k).rev().map(|j| last - j * stride).collect())
}

/// Backtest scores of one selection on the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutScore {
    /// Mean MASE over origins and steps (NaN when no origin could be scored).
    #[serde(deserialize_with = "crate::backtest::nan_serde::f64")]
    pub mase: f64,
    /// The same in the backtest report format (sMAPE, interval coverage).
    pub score: Score,
}

/// Outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// There is no scored current model; the candidate has a finite score.
    AcceptNoCurrent,
    /// The candidate scores no worse than the current model.
    AcceptNoWorse,
    /// The candidate scores worse than the current model.
    RejectWorse,
    /// The candidate could not be scored (every holdout forecast failed).
    RejectUnscored,
}

impl Verdict {
    /// True when the candidate replaces the current model.
    pub fn accepted(self) -> bool {
        matches!(self, Verdict::AcceptNoCurrent | Verdict::AcceptNoWorse)
    }
}

/// The replace-or-not rule. `candidate` and `current` are holdout scores
/// (lower is better; NaN = could not be scored); `current` is `None` when
/// the forecaster has no model yet.
pub fn decide(candidate: f64, current: Option<f64>) -> Verdict {
    if !candidate.is_finite() {
        return Verdict::RejectUnscored;
    }
    match current {
        Some(c) if c.is_finite() => {
            if candidate <= c {
                Verdict::AcceptNoWorse
            } else {
                Verdict::RejectWorse
            }
        }
        _ => Verdict::AcceptNoCurrent,
    }
}

/// Everything a retrain found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The candidate selection (installed when accepted).
    pub candidate: Selection,
    /// The candidate's holdout score.
    pub candidate_score: HoldoutScore,
    /// The current model's holdout score (`None` without a current model).
    pub current_score: Option<HoldoutScore>,
    /// Holdout origins (numbers of training points).
    pub origins: Vec<usize>,
    /// Steps scored per origin.
    pub horizon: usize,
    /// The verdict of [`decide`] on the two scores.
    pub verdict: Verdict,
}

/// Score `selection` on the holdout of `y`: refit at each origin on the data
/// before it, forecast `horizon` steps, average MASE (scale season `season`).
pub fn score_on_holdout(
    y: &[f64],
    selection: &Selection,
    origins: &[usize],
    horizon: usize,
    season: usize,
    name: &str,
) -> HoldoutScore {
    score_on_holdout_with_events(y, selection, origins, horizon, season, name, None)
}

/// [`score_on_holdout`] with a calendar placed on `y`'s grid (step 0 =
/// `y[0]`): a selection with an event profile forecasts each origin with
/// it ([`FittedAuto::predict_with_events`]).
pub fn score_on_holdout_with_events(
    y: &[f64],
    selection: &Selection,
    origins: &[usize],
    horizon: usize,
    season: usize,
    name: &str,
    events: Option<&EventGrid>,
) -> HoldoutScore {
    let started = std::time::Instant::now();
    let mut f = Forecast::default();
    let (mut m, mut s, mut c80, mut c95, mut n) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for &o in origins {
        if o + horizon > y.len() {
            continue;
        }
        let actual = &y[o..o + horizon];
        let Ok(model) = FittedAuto::fit_with_events(&y[..o], selection.clone(), events) else {
            continue;
        };
        if model
            .predict_with_events(horizon, None, &mut f, events.map(|g| (g, o)))
            .is_err()
            || f.point.len() < horizon
            || f.point.iter().any(|v| !v.is_finite())
        {
            continue;
        }
        let (l8, u8) = model.bounds(&f.point, 0.8);
        let (l9, u9) = model.bounds(&f.point, 0.95);
        m += mase(actual, &f.point, mase_scale(&y[..o], season));
        s += smape(actual, &f.point);
        c80 += coverage(actual, &l8, &u8);
        c95 += coverage(actual, &l9, &u9);
        n += 1;
    }
    let avg = |v: f64| if n > 0 { v / n as f64 } else { f64::NAN };
    let mase_avg = avg(m);
    HoldoutScore {
        mase: mase_avg,
        score: Score {
            model: name.to_string(),
            horizon,
            origins: n,
            mase: mase_avg,
            smape: avg(s),
            coverage80: avg(c80),
            coverage95: avg(c95),
            ms_per_origin: started.elapsed().as_secs_f64() * 1000.0 / origins.len().max(1) as f64,
        },
    }
}

/// Select a candidate on the data before the first holdout origin of `y`
/// (seasonality `seas`, found by the caller on that same part), then score it
/// and `current` on the holdout and decide.
pub fn evaluate(
    y: &[f64],
    seas: &Seasonality,
    current: Option<&Selection>,
    cfg: &RetrainConfig,
) -> Result<Evaluation, RetrainError> {
    evaluate_with_events(y, seas, current, cfg, None)
}

/// [`evaluate`] with a calendar of known events placed on `y`'s grid (step
/// 0 = `y[0]`): the candidate is selected with it ([`select_with_events`],
/// which keeps an event profile only where its own validation says it
/// helps) and both selections are scored with it on the holdout, so a
/// profile replaces the current model only if it backtests no worse.
pub fn evaluate_with_events(
    y: &[f64],
    seas: &Seasonality,
    current: Option<&Selection>,
    cfg: &RetrainConfig,
    events: Option<&EventGrid>,
) -> Result<Evaluation, RetrainError> {
    let origins = holdout(y.len(), cfg)?;
    let first = origins.first().copied().unwrap_or(y.len());
    let candidate =
        select_with_events(&y[..first], seas, cfg.horizon.max(12), &cfg.select, events)?;
    evaluate_candidate_with_events(y, candidate, current, cfg, events)
}

/// Score a given `candidate` against `current` on the holdout of `y` and
/// decide (what [`evaluate`] does after selecting; also the entry point for
/// a candidate chosen elsewhere).
pub fn evaluate_candidate(
    y: &[f64],
    candidate: Selection,
    current: Option<&Selection>,
    cfg: &RetrainConfig,
) -> Result<Evaluation, RetrainError> {
    evaluate_candidate_with_events(y, candidate, current, cfg, None)
}

/// [`evaluate_candidate`] with a calendar placed on `y`'s grid (see
/// [`evaluate_with_events`]).
pub fn evaluate_candidate_with_events(
    y: &[f64],
    candidate: Selection,
    current: Option<&Selection>,
    cfg: &RetrainConfig,
    events: Option<&EventGrid>,
) -> Result<Evaluation, RetrainError> {
    let origins = holdout(y.len(), cfg)?;
    let h = cfg.horizon.max(1);
    let season = candidate.seasonality.season();
    let score = |s: &Selection, name: &str| {
        score_on_holdout_with_events(y, s, &origins, h, season, name, events)
    };
    let candidate_score = score(&candidate, "candidate");
    let current_score = current.map(|c| score(c, "current"));
    let verdict = decide(candidate_score.mase, current_score.as_ref().map(|s| s.mase));
    Ok(Evaluation {
        candidate,
        candidate_score,
        current_score,
        origins,
        horizon: h,
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelSpec;
    use crate::select::select;

    fn trend(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + 2.0 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect()
    }

    fn only(y: &[f64], spec: ModelSpec) -> Selection {
        let cfg = SelectConfig {
            candidates: Some(vec![spec]),
            ensemble: 1,
            ..SelectConfig::default()
        };
        select(y, &Seasonality::default(), 12, &cfg).unwrap()
    }

    #[test]
    fn decide_accepts_only_no_worse_finite_candidates() {
        assert_eq!(decide(0.5, Some(0.8)), Verdict::AcceptNoWorse);
        assert_eq!(decide(0.8, Some(0.8)), Verdict::AcceptNoWorse);
        assert_eq!(decide(0.9, Some(0.8)), Verdict::RejectWorse);
        assert_eq!(decide(f64::NAN, Some(0.8)), Verdict::RejectUnscored);
        assert_eq!(decide(f64::INFINITY, None), Verdict::RejectUnscored);
        assert_eq!(decide(0.9, None), Verdict::AcceptNoCurrent);
        assert_eq!(decide(0.9, Some(f64::NAN)), Verdict::AcceptNoCurrent);
        assert!(decide(0.5, Some(0.8)).accepted());
        assert!(!decide(0.9, Some(0.8)).accepted());
    }

    #[test]
    fn holdout_needs_room_and_ends_at_the_last_point() {
        let cfg = RetrainConfig::default();
        let o = holdout(200, &cfg).unwrap();
        assert_eq!(o, vec![170, 176, 182, 188]);
        assert!(matches!(
            holdout(50, &cfg),
            Err(RetrainError::TooShort { got: 50, .. })
        ));
    }

    #[test]
    fn a_worse_candidate_is_rejected_and_a_better_one_accepted() {
        let y = trend(200);
        let cfg = RetrainConfig::default();
        let good = only(
            &y[..100],
            ModelSpec::Theta {
                period: 1,
                theta: 2.0,
            },
        );
        let bad = only(&y[..100], ModelSpec::Mean { window: 0 });
        // The mean of a trending series lags far behind: worse, rejected.
        let e = evaluate_candidate(&y, bad.clone(), Some(&good), &cfg).unwrap();
        assert_eq!(e.verdict, Verdict::RejectWorse);
        let cur = e.current_score.as_ref().unwrap().mase;
        assert!(e.candidate_score.mase > cur, "{e:?}");
        assert_eq!(e.origins.len(), 4);
        assert_eq!(e.candidate_score.score.origins, 4);
        // The other way round the candidate is better: accepted.
        let e = evaluate_candidate(&y, good, Some(&bad), &cfg).unwrap();
        assert_eq!(e.verdict, Verdict::AcceptNoWorse);
        assert!(e.candidate_score.mase < e.current_score.unwrap().mase);
    }

    #[test]
    fn evaluate_selects_on_the_training_part_and_is_deterministic() {
        let y = trend(160);
        let cfg = RetrainConfig::default();
        let a = evaluate(&y, &Seasonality::default(), None, &cfg).unwrap();
        assert_eq!(a.verdict, Verdict::AcceptNoCurrent);
        assert!(a.current_score.is_none());
        assert!(a.candidate_score.mase.is_finite());
        // Selected without the holdout: its validation ends before the first origin.
        assert!(
            a.candidate
                .validation_origins
                .iter()
                .all(|&o| o + a.candidate.validation_horizon <= a.origins[0])
        );
        let b = evaluate(&y, &Seasonality::default(), Some(&a.candidate), &cfg).unwrap();
        assert_eq!(a.candidate, b.candidate);
        // Against itself the candidate ties, and a tie is accepted.
        assert_eq!(b.verdict, Verdict::AcceptNoWorse);
    }
}
