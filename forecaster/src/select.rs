//! Automatic model selection per series by rolling-origin backtest on the
//! training data, with an optional ensemble of the best few.
//!
//! No model wins everywhere on monitoring data (the forecaster issue's
//! reference table), and the best model for the next step is often not the
//! best for tomorrow. So selection is done per *horizon band* (step 1, steps
//! 2–12, steps 13 to one season). What makes it safe is how the evidence is
//! gathered and weighed:
//!
//! * **Many origins, spread out.** Every candidate is refitted at
//!   [`SelectConfig::origins`] validation origins spread evenly over the last
//!   [`SPAN_SEASONS`] seasons of the training data (at most the last two
//!   thirds), not bunched at its end: a few origins at the very end
//!   over-fit whatever happened last.
//! * **Relative to the baselines.** Naive and seasonal naive are always
//!   candidates. Each band has a *baseline*: naive for the first 12 steps
//!   (and everywhere on non-seasonal series), seasonal naive beyond on
//!   seasonal series; the other one takes over only on the same convincing
//!   evidence as any challenger, and beyond 12 steps, when neither is
//!   convincingly better, the baseline is their mean. Every other model or
//!   ensemble is scored by its error relative to the baseline, origin by
//!   origin.
//! * **Shrink when the evidence is weak.** A model (or ensemble) replaces
//!   the baseline only when it is better by at least [`MARGIN`] overall
//!   *and* consistently: the mean of its per-origin log error ratios must be
//!   at least [`EVIDENCE_T`] standard errors below zero. Otherwise the band
//!   keeps the baseline; the mean of the best model and the baseline is
//!   tried as the intermediate step. Ensembles (the equal-weight mean of the
//!   top 2–3) face the same test and must also beat the best single choice.
//!
//! * **Incidents are not learnt as pattern.** Models with a seasonal or
//!   autoregressive structure (theta, ETS, MSTL, lag regression) are fitted
//!   on the series with short bursts winsorised by a causal Hampel filter
//!   over the previous season ([`crate::shift`]); the baselines see the data
//!   as it is. A burst the day before (an outage, a football match) is then
//!   not repeated a season later. When the filter clipped the last
//!   [`crate::shift::KEEP_RAW`] values (a burst or a new level still in
//!   progress), a second fit on the data with those values restored
//!   forecasts the first `KEEP_RAW` steps, so short horizons follow the
//!   current state.
//!
//! Only data before each validation origin is used to fit and scale, so a
//! backtest of the selection never sees its test region. The same validation
//! errors calibrate the prediction intervals ([`crate::intervals`], per step
//! ahead), so selection costs one pass of refits and yields both.
//! Everything is deterministic.

use serde::{Deserialize, Serialize};

use crate::backtest::mase_scale;
use crate::events::{EventGrid, EventMode, EventModel, MAX_RATIO, Sample};
use crate::intervals::Calibration;
use crate::models::{BoxedFitted, Estimator, Forecast, ModelError, ModelSpec, check_finite};
use crate::seasonality::Seasonality;

/// Fewest points anything can be forecast from.
pub const MIN_POINTS: usize = 3;

/// How selection runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectConfig {
    /// Validation origins, spread over the end of the training data (see
    /// the module docs).
    pub origins: usize,
    /// Models are fitted on at most this many trailing points (bounds time and
    /// lets the models follow level shifts).
    pub max_train: usize,
    /// Largest ensemble (1 = single best model per band).
    pub ensemble: usize,
    /// Candidate models (`None` = [`default_candidates`]).
    pub candidates: Option<Vec<ModelSpec>>,
}

/// Validation origins are spread over at most this many seasons before the
/// end of the training data (a fortnight of daily seasons).
pub const SPAN_SEASONS: usize = 14;
/// ... and over at least this many validation horizons.
pub const SPAN_HORIZONS: usize = 8;
/// A challenger must beat the band's baseline by at least this fraction of
/// the baseline's validation error.
pub const MARGIN: f64 = 0.03;
/// ... and its mean per-origin log error ratio must be this many standard
/// errors below zero (with at least three origins).
pub const EVIDENCE_T: f64 = 1.0;
/// Default number of validation origins.
pub const DEFAULT_ORIGINS: usize = 10;

impl Default for SelectConfig {
    fn default() -> Self {
        SelectConfig {
            origins: DEFAULT_ORIGINS,
            max_train: 4032,
            ensemble: 3,
            candidates: None,
        }
    }
}

/// Why selection could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    /// Fewer than [`MIN_POINTS`] values.
    #[error("series has {got} points; at least {needed} are needed to forecast")]
    TooShort {
        /// Points given.
        got: usize,
        /// Points needed.
        needed: usize,
    },
    /// A value is not finite.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The default catalogue for a series with seasonality `seas` and `n` points.
pub fn default_candidates(seas: &Seasonality, n: usize) -> Vec<ModelSpec> {
    let p = seas.primary().unwrap_or(1);
    let mut v = vec![ModelSpec::Naive, ModelSpec::Mean { window: 0 }];
    // Seasonal naive is always a baseline: at the detected season, else at
    // one day when the series holds two.
    let snaive = if p > 1 {
        Some(p)
    } else {
        seas.day.filter(|&d| d > 1)
    };
    if let Some(q) = snaive.filter(|&q| n >= 2 * q) {
        v.push(ModelSpec::SeasonalNaive { period: q });
    }
    // Theta with θ = 1 (plain SES) is left out: on the seasonally adjusted
    // series it forecasts almost exactly like θ = 2 and ETS(A,N,N), and
    // every candidate costs a refit per validation origin.
    if n >= 10 {
        v.push(ModelSpec::Theta {
            period: p,
            theta: 2.0,
        });
        v.push(ModelSpec::Ets { period: p });
    }
    let usable: Vec<usize> = seas
        .periods
        .iter()
        .copied()
        .filter(|&q| n > 2 * q + 1)
        .collect();
    // MSTL earns its cost with several seasons (daily + weekly); with one, the
    // deseasonalised ETS and Theta cover the same ground for a fraction of it.
    if usable.len() >= 2 {
        v.push(ModelSpec::Mstl { periods: usable });
    }
    let mut lags = vec![1, 2, 3];
    if p > 1 {
        lags.extend([p - 1, p, p + 1]);
    }
    let spec = ModelSpec::LagRegression {
        lags,
        period: p,
        fourier: if p > 1 { 3 } else { 0 },
        estimator: Estimator::Linear,
        max_rows: 2016,
    };
    if n >= spec.min_len() + 20 {
        v.push(spec);
    }
    v
}

/// Validation scores of one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// Model name.
    pub model: String,
    /// Mean scaled absolute error per band (NaN when the model failed).
    #[serde(deserialize_with = "crate::backtest::nan_serde::vec")]
    pub band_scores: Vec<f64>,
    /// Why the model was excluded, if it was.
    pub error: Option<String>,
    /// Validation error relative to the band's baseline (ratio of mean
    /// scaled errors; 1 = as good as the better of naive and seasonal naive).
    #[serde(default, deserialize_with = "crate::backtest::nan_serde::vec")]
    pub band_ratios: Vec<f64>,
}

/// The choice for one horizon band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// First step (1-based).
    pub from: usize,
    /// Last step (inclusive); steps after the last band use the last band.
    pub to: usize,
    /// Indices into [`Selection::specs`] of the models averaged for this band.
    pub members: Vec<usize>,
    /// Their validation score (mean absolute error scaled by in-sample seasonal naive).
    #[serde(deserialize_with = "crate::backtest::nan_serde::f64")]
    pub score: f64,
    /// Index into [`Selection::specs`] of the band's baseline (naive or
    /// seasonal naive, see the module docs; when the baseline is their mean,
    /// seasonal naive), when one was available.
    #[serde(default)]
    pub baseline: Option<usize>,
    /// `score` relative to the baseline's (NaN without a baseline).
    #[serde(default = "nan", deserialize_with = "crate::backtest::nan_serde::f64")]
    pub ratio: f64,
    /// The evidence against the baseline in standard errors of the mean
    /// per-origin log error ratio (0 when the baseline itself was kept).
    #[serde(default, deserialize_with = "crate::backtest::nan_serde::f64")]
    pub evidence: f64,
    /// The event profile ([`Selection::events`]) is applied on this band's
    /// forecast (it passed the challenger test against the band without it).
    #[serde(default)]
    pub events: bool,
    /// Validation error with the event profile relative to without it, on
    /// this band's validation forecasts (None when no event was in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_ratio: Option<f64>,
}

fn nan() -> f64 {
    f64::NAN
}

/// Outcome of selection: what to fit, how to combine it, how wide the intervals are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Seasonality the candidates were built for.
    pub seasonality: Seasonality,
    /// Candidates considered.
    pub specs: Vec<ModelSpec>,
    /// Their validation scores.
    pub scores: Vec<CandidateScore>,
    /// Chosen combination per horizon band.
    pub bands: Vec<Band>,
    /// Interval calibration of the chosen combination.
    pub calibration: Calibration,
    /// Validation origins used (numbers of training points).
    pub validation_origins: Vec<usize>,
    /// Steps scored at each validation origin.
    pub validation_horizon: usize,
    /// Training data was never negative (forecasts and bounds are clamped at 0).
    pub nonnegative: bool,
    /// Models are fitted on at most this many trailing points.
    pub max_train: usize,
    /// Learnt event profile, when a calendar was given and the profile
    /// helped on at least one band ([`crate::events`]). Absent in artifacts
    /// written before events existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventModel>,
}

impl Selection {
    /// The band that covers 1-based step `s`.
    pub fn band_for(&self, s: usize) -> Option<&Band> {
        self.bands
            .iter()
            .find(|b| s >= b.from && s <= b.to)
            .or(self.bands.last())
    }

    /// Human-readable summary of the choice, e.g. `1: theta | 2-12: theta+ets | 13-288: mstl_ets`.
    pub fn describe(&self) -> String {
        self.bands
            .iter()
            .map(|b| {
                let names: Vec<String> = b.members.iter().map(|&i| self.specs[i].name()).collect();
                let range = if b.from == b.to {
                    b.from.to_string()
                } else {
                    format!("{}-{}", b.from, b.to)
                };
                let ev = if b.events && self.events.is_some() {
                    "+events"
                } else {
                    ""
                };
                format!("{range}: {}{ev}", names.join("+"))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

fn tail(y: &[f64], max_train: usize) -> &[f64] {
    if max_train > 0 && y.len() > max_train {
        &y[y.len() - max_train..]
    } else {
        y
    }
}

fn band_edges(h: usize) -> Vec<(usize, usize)> {
    let mut v = vec![(1, 1)];
    if h >= 2 {
        v.push((2, h.min(12)));
    }
    if h > 12 {
        v.push((13, h));
    }
    v
}

/// Validation origins (numbers of training points, ascending) for a series of
/// `n` points, validation horizon `h` and season `p`: `k` evenly spread over
/// the last [`SPAN_SEASONS`] seasons (at least [`SPAN_HORIZONS`] horizons),
/// never leaving less than a third of the series (and 2 points) to train on.
pub fn validation_origins(n: usize, h: usize, p: usize, k: usize) -> Vec<usize> {
    let h = h.max(1);
    if n <= h {
        return Vec::new();
    }
    let last = n - h;
    let min_train = (n / 3).max(2).min(last);
    let span = (SPAN_SEASONS * p.max(1)).max(SPAN_HORIZONS * h);
    let first = last.saturating_sub(span).max(min_train);
    let k = k.max(1);
    if k == 1 || first >= last {
        return vec![last];
    }
    let mut v: Vec<usize> = (0..k)
        .map(|i| first + ((last - first) as f64 * i as f64 / (k - 1) as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// How a challenger compares with a baseline over validation origins.
#[derive(Debug, Clone, Copy)]
struct Evidence {
    /// Ratio of mean scaled errors (challenger / baseline).
    ratio: f64,
    /// Mean per-origin log error ratio in standard errors below zero
    /// (positive = challenger better).
    t: f64,
}

impl Evidence {
    fn of(x: &[f64], base: &[f64]) -> Evidence {
        let k = x.len().min(base.len());
        let sx: f64 = x[..k].iter().sum();
        let sb: f64 = base[..k].iter().sum();
        let ratio = if sb > 0.0 {
            sx / sb
        } else if sx > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
        // A small floor keeps near-perfect origins from dominating the logs.
        let eps = 1e-3 * sb / k.max(1) as f64 + 1e-12;
        let d: Vec<f64> = (0..k)
            .map(|o| ((x[o] + eps) / (base[o] + eps)).ln())
            .collect();
        let mean = d.iter().sum::<f64>() / k.max(1) as f64;
        let t = if k >= 3 {
            let var = d.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (k - 1) as f64;
            let se = (var / k as f64).sqrt();
            if se > 0.0 {
                -mean / se
            } else if mean < 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        } else {
            // Too few origins for a spread: the sign of the mean is all there is.
            if mean < 0.0 { EVIDENCE_T } else { 0.0 }
        };
        // Finite (artifacts are JSON, which has no infinity).
        Evidence {
            ratio,
            t: t.clamp(-1e6, 1e6),
        }
    }

    fn convincing(&self) -> bool {
        self.ratio.is_finite() && self.ratio <= 1.0 - MARGIN && self.t >= EVIDENCE_T
    }
}

/// Whether `spec` is fitted on the series with bursts winsorised
/// ([`crate::shift`]): every model with a seasonal or autoregressive
/// structure; the baselines see the data as it is.
fn uses_cleaned(spec: &ModelSpec) -> bool {
    !matches!(
        spec,
        ModelSpec::Naive
            | ModelSpec::Mean { .. }
            | ModelSpec::Drift
            | ModelSpec::SeasonalNaive { .. }
            | ModelSpec::SeasonalWindowAverage { .. }
    )
}

/// Fit a structured model on the cleaned series `clean` and forecast `h`
/// steps into `out`; when the filter clipped the end of the data (a burst
/// or a new level in progress), the first [`crate::shift::KEEP_RAW`] steps
/// come from a second fit that sees the recent values as they are.
fn predict_robust(
    spec: &ModelSpec,
    clean: &[f64],
    raw: &[f64],
    h: usize,
    out: &mut Forecast,
    tmp: &mut Forecast,
    scratch: &mut Vec<f64>,
) -> Result<(), ModelError> {
    spec.fit(clean)?.predict_into(h, out)?;
    if crate::shift::recent_clipped(clean, raw) {
        let recent = crate::shift::with_recent_raw(clean, raw, scratch);
        // If that second fit fails, the cleaned forecast serves every step
        // (as in `FittedAuto::fit`).
        if let Ok(m) = spec.fit(recent) {
            let _ = overlay_recent(&m, h, &mut out.point, tmp);
        }
    }
    Ok(())
}

/// Overwrite the first [`crate::shift::KEEP_RAW`] of `points` (a forecast of
/// `h` steps from the cleaned fit) with the forecast of `recent`, the fit
/// that saw the recent values unclipped. On error `points` is unchanged.
fn overlay_recent(
    recent: &BoxedFitted,
    h: usize,
    points: &mut [f64],
    tmp: &mut Forecast,
) -> Result<(), ModelError> {
    recent.predict_into(h.min(crate::shift::KEEP_RAW), tmp)?;
    let k = tmp.point.len().min(points.len());
    points[..k].copy_from_slice(&tmp.point[..k]);
    Ok(())
}

/// Select models for forecasting up to `horizon` steps after the end of `y`.
pub fn select(
    y: &[f64],
    seas: &Seasonality,
    horizon: usize,
    cfg: &SelectConfig,
) -> Result<Selection, SelectError> {
    select_with_events(y, seas, horizon, cfg, None)
}

/// [`select`] with a calendar of known events placed on `y`'s grid (step 0 =
/// `y[0]`): the event profile is learnt from the base combination's
/// validation errors and kept on the bands where it passes the challenger
/// test ([`crate::events`]).
pub fn select_with_events(
    y: &[f64],
    seas: &Seasonality,
    horizon: usize,
    cfg: &SelectConfig,
    events: Option<&EventGrid>,
) -> Result<Selection, SelectError> {
    let n = y.len();
    if n < MIN_POINTS {
        return Err(SelectError::TooShort {
            got: n,
            needed: MIN_POINTS,
        });
    }
    check_finite(y)?;
    // Candidates are fitted on at most `max_train` points: only offer what
    // fits in that window (e.g. MSTL needs two weekly cycles).
    let fit_len = if cfg.max_train > 0 {
        n.min(cfg.max_train)
    } else {
        n
    };
    let specs = cfg
        .candidates
        .clone()
        .unwrap_or_else(|| default_candidates(seas, fit_len));
    let p = seas.season();
    let h_sel = horizon.max(1).min(p.max(12)).min((n / 3).max(1));
    let mut origins = validation_origins(n, h_sel, p, cfg.origins);
    if origins.is_empty() {
        origins.push(n.saturating_sub(h_sel).max(1));
    }
    let scales: Vec<f64> = origins.iter().map(|&o| mase_scale(&y[..o], p)).collect();
    let grid = events.filter(|g| !g.is_empty());

    // As the series is: the base models, then the profile (if it helps) on
    // top of what they miss.
    let (errors, failures) = validation_errors(y, &specs, &origins, fit_len, p, h_sel, cfg);
    let v = Validation {
        errors,
        scales,
        h_sel,
    };
    let mut chosen = choose_variant(y, &v, &failures, specs.clone(), seas, &origins, grid, cfg);
    // With a calendar, also with the events removed from what the base models
    // see, the profile carrying the whole effect; kept only when convincingly
    // better on the validation origins than the variant above.
    if let Some(candidate) = grid.and_then(|g| {
        choose_without_events(y, g, specs, &origins, &v.scales, fit_len, seas, cfg, h_sel)
    }) {
        let score = |c: &Chosen| final_per_origin(y, &c.validation, &origins, &c.bands);
        if Evidence::of(&score(&candidate), &score(&chosen)).convincing() {
            chosen = candidate;
        }
    }
    let calibration = chosen.validation.calibrate(y, &chosen.bands, p);

    Ok(Selection {
        seasonality: seas.clone(),
        specs: chosen.specs,
        scores: chosen.scores,
        bands: chosen.bands,
        calibration,
        validation_origins: origins,
        validation_horizon: h_sel,
        nonnegative: y.iter().all(|&v| v >= 0.0),
        max_train: cfg.max_train,
        events: chosen.events,
    })
}

/// One way to forecast a series: candidates, their scores, the bands, the
/// validation errors of the combination against the series (with the
/// profile applied where a band took it) and the profile.
struct Chosen {
    specs: Vec<ModelSpec>,
    scores: Vec<CandidateScore>,
    bands: Vec<Band>,
    validation: Validation,
    events: Option<EventModel>,
}

/// The variant whose base models are validated (and will be fitted) on `y`
/// with `grid`'s events removed, the profile on every band; `None` when no
/// event falls in the validation forecasts.
#[allow(clippy::too_many_arguments)]
fn choose_without_events(
    y: &[f64],
    grid: &EventGrid,
    specs: Vec<ModelSpec>,
    origins: &[usize],
    scales: &[f64],
    fit_len: usize,
    seas: &Seasonality,
    cfg: &SelectConfig,
    h_sel: usize,
) -> Option<Chosen> {
    let p = seas.season();
    let y_without = grid.without_events(y, p);
    let (errors, failures) = validation_errors(&y_without, &specs, origins, fit_len, p, h_sel, cfg);
    let mut v = Validation {
        errors,
        scales: scales.to_vec(),
        h_sel,
    };
    let (specs, scores, mut bands) = bands_for(&v, &failures, specs, seas, cfg);
    // The same forecasts' errors against the actual series.
    for per_origin in v.errors.iter_mut().flatten() {
        for (row, &o) in per_origin.iter_mut().zip(origins) {
            for (s, e) in row.iter_mut().enumerate() {
                *e += y[o + s] - y_without[o + s];
            }
        }
    }
    let (mut model, adjusted) = choose_events(y, &v, origins, &mut bands, grid, true)?;
    model.base_without_events = true;
    Some(Chosen {
        specs,
        scores,
        bands,
        validation: Validation {
            errors: adjusted,
            ..v
        },
        events: Some(model),
    })
}

/// Scores, baselines and bands from the validation errors of `specs`.
fn bands_for(
    v: &Validation,
    failures: &[Option<String>],
    specs: Vec<ModelSpec>,
    seas: &Seasonality,
    cfg: &SelectConfig,
) -> (Vec<ModelSpec>, Vec<CandidateScore>, Vec<Band>) {
    let edges = band_edges(v.h_sel);
    let ok: Vec<usize> = (0..specs.len())
        .filter(|&c| v.errors[c].is_some())
        .collect();
    // Per band: per-origin scores of every candidate.
    let band_origin_scores: Vec<Vec<Option<Vec<f64>>>> = edges
        .iter()
        .map(|&(a, b)| {
            let (a, b) = v.scored_range(a, b);
            (0..specs.len()).map(|c| v.per_origin(&[c], a, b)).collect()
        })
        .collect();
    let baselines = choose_baselines(&specs, &ok, seas, &band_origin_scores, &edges);
    // Per band: per-origin scores of the baseline.
    let base_scores: Vec<Option<Vec<f64>>> = baselines
        .iter()
        .zip(&edges)
        .map(|(base, &(a, b))| {
            let (a, b) = v.scored_range(a, b);
            base.as_ref().and_then(|m| v.per_origin(m, a, b))
        })
        .collect();
    let scores = candidate_scores(&specs, &band_origin_scores, &base_scores, failures);
    let mut specs = specs;
    let bands = choose_bands(
        v,
        &edges,
        &ok,
        &scores,
        &baselines,
        &base_scores,
        &mut specs,
        cfg,
    );
    (specs, scores, bands)
}

/// The bands chosen on `v`, and the event profile on top where it helps.
#[allow(clippy::too_many_arguments)]
fn choose_variant(
    y: &[f64],
    v: &Validation,
    failures: &[Option<String>],
    specs: Vec<ModelSpec>,
    seas: &Seasonality,
    origins: &[usize],
    grid: Option<&EventGrid>,
    cfg: &SelectConfig,
) -> Chosen {
    let (specs, scores, mut bands) = bands_for(v, failures, specs, seas, cfg);
    let (errors, events) =
        match grid.and_then(|g| choose_events(y, v, origins, &mut bands, g, false)) {
            Some((model, adjusted)) => (adjusted, Some(model)),
            None => (v.errors.clone(), None),
        };
    Chosen {
        specs,
        scores,
        bands,
        validation: Validation {
            errors,
            scales: v.scales.clone(),
            h_sel: v.h_sel,
        },
        events,
    }
}

/// Per validation origin, the mean scaled absolute error of the bands'
/// combined forecast over every validated step (`v.errors` against `y`).
fn final_per_origin(y: &[f64], v: &Validation, origins: &[usize], bands: &[Band]) -> Vec<f64> {
    combined_forecasts(y, v, origins, bands)
        .iter()
        .zip(origins)
        .zip(&v.scales)
        .map(|((row, &o), &scale)| {
            let (sum, n) = row
                .iter()
                .enumerate()
                .filter_map(|(s, f)| f.map(|f| (y[o + s] - f).abs()))
                .fold((0.0, 0usize), |(t, n), e| (t + e, n + 1));
            if n == 0 {
                f64::INFINITY
            } else {
                sum / n as f64 / scale
            }
        })
        .collect()
}

/// The model (or ensemble) of every horizon band, most accurate first; the
/// naive model on the whole horizon when no band could be validated.
#[allow(clippy::too_many_arguments)]
fn choose_bands(
    v: &Validation,
    edges: &[(usize, usize)],
    ok: &[usize],
    scores: &[CandidateScore],
    baselines: &[Option<Vec<usize>>],
    base_scores: &[Option<Vec<f64>>],
    specs: &mut Vec<ModelSpec>,
    cfg: &SelectConfig,
) -> Vec<Band> {
    let h_sel = v.h_sel;
    let mut bands = Vec::with_capacity(edges.len());
    for (bi, &(a, b)) in edges.iter().enumerate() {
        let mut ranked: Vec<usize> = ok.to_vec();
        ranked.sort_by(|&x, &z| scores[x].band_scores[bi].total_cmp(&scores[z].band_scores[bi]));
        let base = baselines[bi].as_ref();
        let bs = base_scores[bi].as_ref();
        if let Some(band) = v.choose_band((a, b), &ranked, base, bs, cfg.ensemble) {
            bands.push(band);
        }
    }
    if bands.is_empty() {
        // Nothing could be validated (the series is barely long enough): naive.
        let idx = match specs.iter().position(|s| *s == ModelSpec::Naive) {
            Some(i) => i,
            None => {
                specs.push(ModelSpec::Naive);
                specs.len() - 1
            }
        };
        bands.push(Band {
            from: 1,
            to: h_sel,
            members: vec![idx],
            score: f64::NAN,
            baseline: None,
            ratio: f64::NAN,
            evidence: 0.0,
            events: false,
            events_ratio: None,
        });
    }
    bands
}

/// `errors[c][o][s]` per candidate (`None` for a failed candidate).
type PerCandidateErrors = Vec<Option<Vec<Vec<f64>>>>;

/// Per origin and step, the chosen bands' combined validation forecast
/// (`None` where a member has no error).
fn combined_forecasts(
    y: &[f64],
    v: &Validation,
    origins: &[usize],
    bands: &[Band],
) -> Vec<Vec<Option<f64>>> {
    origins
        .iter()
        .enumerate()
        .map(|(oi, &o)| {
            (0..v.h_sel)
                .map(|s| {
                    let band = bands
                        .iter()
                        .find(|b| s + 1 >= b.from && s < b.to)
                        .or(bands.last())?;
                    let mut sum = 0.0;
                    for &c in &band.members {
                        sum += v.errors.get(c)?.as_ref()?.get(oi)?.get(s)?;
                    }
                    let mean_err = sum / band.members.len().max(1) as f64;
                    Some(y[o + s] - mean_err)
                })
                .collect()
        })
        .collect()
}

/// Try the event profile on top of the chosen bands (see [`crate::events`]):
/// for each mode, the profile for each validation origin is learnt from the
/// other origins' deviations; a band takes it when it is a convincing
/// challenger to the band without it. Returns the profile learnt from every
/// origin and the validation errors with the profile applied (for the
/// interval calibration), or `None` when no band took it. With
/// `everywhere` (base models fitted on the series without its events, which
/// forecast no event at all) every band takes it and the mode with the lower
/// error is kept.
fn choose_events(
    y: &[f64],
    v: &Validation,
    origins: &[usize],
    bands: &mut [Band],
    grid: &EventGrid,
    everywhere: bool,
) -> Option<(EventModel, PerCandidateErrors)> {
    let base = combined_forecasts(y, v, origins, bands);
    let samples = event_samples(y, v, origins, &base, grid);
    if samples.is_empty() {
        return None;
    }
    struct Trial {
        mode: EventMode,
        adjusted: Vec<Vec<Option<f64>>>,
        evidence: Vec<Evidence>,
        score: f64,
    }
    let trials: Vec<Trial> = [EventMode::Multiplicative, EventMode::Additive]
        .into_iter()
        .map(|mode| {
            let adjusted: Vec<Vec<Option<f64>>> = origins
                .iter()
                .enumerate()
                .map(|(oi, &o)| {
                    let m = EventModel::learn(grid, &samples, Some(oi), mode);
                    base[oi]
                        .iter()
                        .enumerate()
                        .map(|(s, f)| f.map(|f| m.apply(grid, o + s, f, v.scales[oi])))
                        .collect()
                })
                .collect();
            let per_origin = |fc: &[Vec<Option<f64>>], a: usize, b: usize| -> Vec<f64> {
                origins
                    .iter()
                    .enumerate()
                    .map(|(oi, &o)| {
                        let (sum, n) = (a - 1..b)
                            .filter_map(|s| fc[oi][s].map(|f| (y[o + s] - f).abs()))
                            .fold((0.0, 0usize), |(t, n), e| (t + e, n + 1));
                        sum / n.max(1) as f64 / v.scales[oi]
                    })
                    .collect()
            };
            let mut score = 0.0;
            let evidence = bands
                .iter()
                .map(|b| {
                    let (sa, sb) = v.scored_range(b.from, b.to);
                    let with = per_origin(&adjusted, sa, sb);
                    let without = per_origin(&base, sa, sb);
                    score += mean(&with);
                    Evidence::of(&with, &without)
                })
                .collect();
            Trial {
                mode,
                adjusted,
                evidence,
                score,
            }
        })
        .collect();
    let wins = |t: &Trial| t.evidence.iter().filter(|e| e.convincing()).count();
    let best = if everywhere {
        trials.iter().min_by(|a, b| a.score.total_cmp(&b.score))?
    } else {
        trials
            .iter()
            .filter(|t| wins(t) > 0)
            .min_by(|a, b| wins(b).cmp(&wins(a)).then(a.score.total_cmp(&b.score)))?
    };
    let round = |x: f64| (x * 1e4).round() / 1e4;
    for (band, ev) in bands.iter_mut().zip(&best.evidence) {
        band.events = everywhere || ev.convincing();
        band.events_ratio = Some(round(ev.ratio)).filter(|r| r.is_finite());
    }
    // Validation errors with the profile applied where a band took it.
    let errors = adjusted_errors(v, &base, bands, &best.adjusted);
    Some((EventModel::learn(grid, &samples, None, best.mode), errors))
}

/// One event sample per active occurrence at every validated step: the
/// actual against the combined forecast, as a ratio and a scaled difference.
fn event_samples(
    y: &[f64],
    v: &Validation,
    origins: &[usize],
    base: &[Vec<Option<f64>>],
    grid: &EventGrid,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    for (oi, &o) in origins.iter().enumerate() {
        for (s, f) in base[oi].iter().enumerate() {
            let Some(f) = *f else { continue };
            let a = y[o + s];
            let ratio = if f > 0.0 {
                (a / f - 1.0).clamp(-1.0, MAX_RATIO)
            } else {
                f64::NAN
            };
            let scaled_diff = (a - f) / v.scales[oi];
            grid.for_each_active(o + s, |occurrence, category, offset| {
                samples.push(Sample {
                    origin: oi,
                    occurrence,
                    category,
                    offset,
                    ratio,
                    scaled_diff,
                });
            });
        }
    }
    samples
}

/// The validation errors with the event profile applied where a band took it.
fn adjusted_errors(
    v: &Validation,
    base: &[Vec<Option<f64>>],
    bands: &[Band],
    adjusted: &[Vec<Option<f64>>],
) -> PerCandidateErrors {
    let mut errors = v.errors.clone();
    for (oi, row) in adjusted.iter().enumerate() {
        for (s, f_adj) in row.iter().enumerate() {
            let Some(band) = bands
                .iter()
                .find(|b| s + 1 >= b.from && s < b.to)
                .or(bands.last())
            else {
                continue;
            };
            if !band.events {
                continue;
            }
            let (Some(f_adj), Some(f)) = (*f_adj, base[oi][s]) else {
                continue;
            };
            for &c in &band.members {
                if let Some(Some(e)) = errors.get_mut(c) {
                    e[oi][s] -= f_adj - f;
                }
            }
        }
    }
    errors
}

/// Errors per candidate, per origin, per step (`errors[c][o][s] = actual -
/// forecast`; `None` for a candidate that failed at some origin) and each
/// candidate's failure.
type ValidationErrors = (Vec<Option<Vec<Vec<f64>>>>, Vec<Option<String>>);

/// Fit every candidate at every validation origin and forecast `h_sel` steps.
fn validation_errors(
    y: &[f64],
    specs: &[ModelSpec],
    origins: &[usize],
    fit_len: usize,
    p: usize,
    h_sel: usize,
    cfg: &SelectConfig,
) -> ValidationErrors {
    let k = origins.len();
    // Structured models are fitted on the series with bursts winsorised
    // (causal filter: slicing it at an origin sees nothing after it).
    let start = origins[0].saturating_sub(fit_len + p);
    let cleaned = crate::shift::clean_outliers(&y[start..], p);
    let mut robust = Vec::new();
    let mut recent_buf = Forecast::with_capacity(h_sel);

    let mut errors: Vec<Option<Vec<Vec<f64>>>> = Vec::with_capacity(specs.len());
    let mut failures: Vec<Option<String>> = Vec::with_capacity(specs.len());
    let mut buf = Forecast::with_capacity(h_sel);
    for spec in specs {
        let mut per_origin = Vec::with_capacity(k);
        let mut failure = None;
        for &o in origins {
            let raw = tail(&y[..o], cfg.max_train);
            let res = if uses_cleaned(spec) {
                let clean = tail(&cleaned[..o - start], cfg.max_train);
                predict_robust(
                    spec,
                    clean,
                    raw,
                    h_sel,
                    &mut buf,
                    &mut recent_buf,
                    &mut robust,
                )
            } else {
                spec.fit(raw).and_then(|m| m.predict_into(h_sel, &mut buf))
            };
            match res {
                Ok(()) if buf.point.len() >= h_sel && buf.point.iter().all(|v| v.is_finite()) => {
                    per_origin.push(
                        (0..h_sel)
                            .map(|s| y[o + s] - buf.point[s])
                            .collect::<Vec<f64>>(),
                    )
                }
                Ok(()) => {
                    failure = Some(format!("non-finite forecast at origin {o}"));
                    break;
                }
                Err(e) => {
                    failure = Some(format!("origin {o}: {e}"));
                    break;
                }
            }
        }
        if failure.is_some() {
            errors.push(None);
        } else {
            errors.push(Some(per_origin));
        }
        failures.push(failure);
    }
    (errors, failures)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The validation errors and what scoring them needs.
struct Validation {
    /// `errors[c][o][s] = actual - forecast`, `None` for a failed candidate.
    errors: Vec<Option<Vec<Vec<f64>>>>,
    /// MASE scale of each origin.
    scales: Vec<f64>,
    /// Steps scored at each origin.
    h_sel: usize,
}

impl Validation {
    /// The steps a band is scored on: the one-step band on steps 1..=3
    /// (three times the errors for the noisiest decision).
    fn scored_range(&self, a: usize, b: usize) -> (usize, usize) {
        if a == 1 && b == 1 {
            (1, self.h_sel.min(3))
        } else {
            (a, b)
        }
    }

    /// Per-origin mean scaled absolute error of a combination (members'
    /// forecasts averaged) over steps [a, b]; None if a member failed.
    fn per_origin(&self, members: &[usize], a: usize, b: usize) -> Option<Vec<f64>> {
        let errs: Vec<&Vec<Vec<f64>>> = members
            .iter()
            .map(|&c| self.errors.get(c).and_then(Option::as_ref))
            .collect::<Option<Vec<_>>>()?;
        Some(
            self.scales
                .iter()
                .enumerate()
                .map(|(oi, scale)| {
                    let mut total = 0.0;
                    for s in (a - 1)..b {
                        let e = errs.iter().map(|x| x[oi][s]).sum::<f64>() / errs.len() as f64;
                        total += e.abs();
                    }
                    total / (b + 1 - a) as f64 / scale
                })
                .collect(),
        )
    }

    /// The combination for band `[a, b]`: the best convincing challenger
    /// among the top-k means and the best challenger averaged with the
    /// baseline, else the baseline; without a baseline, the lowest error.
    fn choose_band(
        &self,
        (a, b): (usize, usize),
        ranked: &[usize],
        base: Option<&Vec<usize>>,
        bs: Option<&Vec<f64>>,
        ensemble: usize,
    ) -> Option<Band> {
        let (sa, sb) = self.scored_range(a, b);
        // Combinations to consider: the top-k means, and (shrinkage) the
        // best challenger averaged with the baseline.
        let mut combos: Vec<Vec<usize>> = (1..=ensemble.max(1).min(ranked.len()))
            .map(|kk| ranked[..kk].to_vec())
            .collect();
        if let Some(bm) = base
            && ensemble >= 2
            && let Some(&best) = ranked.iter().find(|c| !bm.contains(c))
        {
            let mut m = vec![best];
            m.extend_from_slice(bm);
            combos.push(m);
        }
        let same = |x: &[usize], y: &[usize]| {
            let (mut x, mut y) = (x.to_vec(), y.to_vec());
            x.sort_unstable();
            y.sort_unstable();
            x == y
        };
        let scored: Vec<(Vec<usize>, f64, Option<Evidence>)> = combos
            .into_iter()
            .filter_map(|m| {
                let x = self.per_origin(&m, sa, sb)?;
                let ev = bs.map(|bs| Evidence::of(&x, bs));
                Some((m, mean(&x), ev))
            })
            .collect();
        let choice = match (base, bs) {
            (Some(bm), Some(bsc)) => {
                // The best convincing challenger; ensembles must also beat
                // the best convincing single model.
                let best_single = scored
                    .iter()
                    .filter(|(m, _, ev)| m.len() == 1 && ev.is_some_and(|e| e.convincing()))
                    .min_by(|x, z| x.1.total_cmp(&z.1))
                    .map(|x| x.1);
                scored
                    .iter()
                    .filter(|(m, sc, ev)| {
                        !same(m, bm)
                            && ev.is_some_and(|e| e.convincing())
                            && (m.len() == 1 || best_single.is_none_or(|bs| *sc < bs))
                    })
                    .min_by(|x, z| x.1.total_cmp(&z.1))
                    .map(|(m, sc, ev)| (m.clone(), *sc, ev.map_or(0.0, |e| e.t)))
                    .or_else(|| Some((bm.clone(), mean(bsc), 0.0)))
            }
            // No baseline among the candidates (an explicit list): the
            // lowest validation error.
            _ => scored
                .iter()
                .min_by(|x, z| x.1.total_cmp(&z.1))
                .map(|(m, sc, _)| (m.clone(), *sc, 0.0)),
        };
        let (members, sc, t) = choice?;
        let ratio = bs.map_or(f64::NAN, |bs| sc / mean(bs).max(1e-300));
        // Reported figures are rounded (they round-trip through JSON exactly).
        let round = |v: f64| (v * 1e4).round() / 1e4;
        Some(Band {
            from: a,
            to: b,
            members,
            score: sc,
            baseline: base.and_then(|m| m.first().copied()),
            ratio: round(ratio),
            evidence: round(t),
            events: false,
            events_ratio: None,
        })
    }

    /// Calibrate intervals on the chosen combination's errors per step.
    fn calibrate(&self, y: &[f64], bands: &[Band], p: usize) -> Calibration {
        let k = self.scales.len();
        let h_sel = self.h_sel;
        let mut step_errors: Vec<Vec<f64>> = vec![Vec::with_capacity(k); h_sel];
        let mut step_scales: Vec<Vec<f64>> = vec![Vec::with_capacity(k); h_sel];
        for (s, (errs, scs)) in step_errors.iter_mut().zip(&mut step_scales).enumerate() {
            let band = bands
                .iter()
                .find(|b| s + 1 >= b.from && s < b.to)
                .or(bands.last());
            let Some(band) = band else { continue };
            for (oi, &scale) in self.scales.iter().enumerate() {
                let e = band
                    .members
                    .iter()
                    .filter_map(|&c| {
                        self.errors
                            .get(c)
                            .and_then(|x| x.as_ref())
                            .map(|x| x[oi][s])
                    })
                    .collect::<Vec<f64>>();
                if !e.is_empty() && e.len() == band.members.len() {
                    errs.push(e.iter().sum::<f64>() / e.len() as f64);
                    scs.push(scale);
                }
            }
        }
        let n = y.len();
        let mean_abs = y.iter().map(|v| v.abs()).sum::<f64>() / n as f64;
        let floor = 1e-6 * (1.0 + mean_abs);
        if step_errors.iter().all(Vec::is_empty) {
            // Naive fallback without validation: in-sample one-step changes.
            step_errors[0] = y.windows(2).map(|w| w[1] - w[0]).collect();
            Calibration::from_errors(&step_errors, floor)
        } else {
            // Rows of equal length per step: errors scaled by their origin's scale.
            let scaled_rows: Vec<Vec<f64>> = step_errors
                .iter()
                .zip(&step_scales)
                .map(|(e, sc)| e.iter().zip(sc).map(|(e, sc)| e / sc).collect())
                .collect();
            let ones = vec![1.0; k];
            Calibration::from_scaled_errors(&scaled_rows, &ones, mase_scale(y, p), floor)
        }
    }
}

/// The baseline of each band. It is a prior, not a race: naive for the first
/// steps (and for every band when no season was detected), seasonal naive
/// further ahead on seasonal series. The other one takes over only with
/// convincing evidence (the same test as any challenger): a seasonal naive
/// that won a few noisy origins at step 1 can be many times worse than naive
/// on a series whose season is weak. Beyond step 12 on a seasonal series,
/// when neither is convincingly better than the other, the baseline is their
/// mean (it is never worse than the worse of the two, and usually close to
/// the better).
fn choose_baselines(
    specs: &[ModelSpec],
    ok: &[usize],
    seas: &Seasonality,
    band_origin_scores: &[Vec<Option<Vec<f64>>>],
    edges: &[(usize, usize)],
) -> Vec<Option<Vec<usize>>> {
    let baseline_ids: Vec<usize> = ok
        .iter()
        .copied()
        .filter(|&c| matches!(specs[c], ModelSpec::Naive | ModelSpec::SeasonalNaive { .. }))
        .collect();
    let naive_id = baseline_ids
        .iter()
        .copied()
        .find(|&c| specs[c] == ModelSpec::Naive);
    let snaive_id = baseline_ids
        .iter()
        .copied()
        .find(|&c| matches!(specs[c], ModelSpec::SeasonalNaive { .. }));
    let seasonal = seas.primary().is_some_and(|q| q > 1);
    band_origin_scores
        .iter()
        .zip(edges)
        .map(|(sc, &(a, _))| {
            let long = seasonal && a > 12;
            let (prior, other) = if long {
                (snaive_id, naive_id)
            } else {
                (naive_id, snaive_id)
            };
            match (prior, other) {
                (Some(pr), Some(ot)) => match (&sc[pr], &sc[ot]) {
                    (Some(xp), Some(xo)) if Evidence::of(xo, xp).convincing() => Some(vec![ot]),
                    (Some(xp), Some(xo)) if long && !Evidence::of(xp, xo).convincing() => {
                        Some(vec![pr, ot])
                    }
                    (Some(_), _) => Some(vec![pr]),
                    (None, _) => Some(vec![ot]),
                },
                (pr, ot) => pr.or(ot).map(|i| vec![i]),
            }
        })
        .collect()
}

/// Every candidate's mean score and ratio to the baseline per band.
fn candidate_scores(
    specs: &[ModelSpec],
    band_origin_scores: &[Vec<Option<Vec<f64>>>],
    base_scores: &[Option<Vec<f64>>],
    failures: &[Option<String>],
) -> Vec<CandidateScore> {
    let mut scores = Vec::with_capacity(specs.len());
    for (c, spec) in specs.iter().enumerate() {
        let band_scores = band_origin_scores
            .iter()
            .map(|sc| sc[c].as_deref().map_or(f64::NAN, mean))
            .collect();
        let band_ratios = band_origin_scores
            .iter()
            .zip(base_scores)
            .map(|(sc, bs)| match (&sc[c], bs) {
                (Some(x), Some(bs)) => Evidence::of(x, bs).ratio,
                _ => f64::NAN,
            })
            .collect();
        scores.push(CandidateScore {
            model: spec.name(),
            band_scores,
            error: failures[c].clone(),
            band_ratios,
        });
    }
    scores
}

/// A selection with its chosen models fitted on the whole training series.
pub struct FittedAuto {
    selection: Selection,
    fitted: Vec<Option<BoxedFitted>>,
    /// Per spec, a second fit that saw the recent values unclipped (only
    /// when the outlier filter clipped the end of the data): it forecasts
    /// the first [`crate::shift::KEEP_RAW`] steps.
    recent: Vec<Option<BoxedFitted>>,
    /// MASE scale of the training data (additive event effects are in its units).
    event_scale: f64,
    scratch: std::cell::RefCell<(Forecast, Vec<Vec<f64>>)>,
}

impl std::fmt::Debug for FittedAuto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FittedAuto")
            .field("selection", &self.selection.describe())
            .finish()
    }
}

impl FittedAuto {
    /// Fit the models `selection` chose on `y` (the whole training series, or a
    /// newer series when a saved artifact is reused). A chosen model that fails
    /// on `y` is dropped from its band; an emptied band falls back to naive.
    pub fn fit(y: &[f64], mut selection: Selection) -> Result<FittedAuto, SelectError> {
        if y.len() < MIN_POINTS {
            return Err(SelectError::TooShort {
                got: y.len(),
                needed: MIN_POINTS,
            });
        }
        check_finite(y)?;
        let train = tail(y, selection.max_train);
        let window = selection.seasonality.season();
        // The filter needs one window before the training tail to warm up.
        let warm = if selection.max_train > 0 {
            tail(y, selection.max_train.saturating_add(window))
        } else {
            y
        };
        let cleaned_full = crate::shift::clean_outliers(warm, window);
        let cleaned = tail(&cleaned_full, selection.max_train);
        let mut robust = Vec::new();
        let clipped = crate::shift::recent_clipped(cleaned, train);
        let recent_input = crate::shift::with_recent_raw(cleaned, train, &mut robust);
        let mut fitted: Vec<Option<BoxedFitted>> =
            (0..selection.specs.len()).map(|_| None).collect();
        let mut recent: Vec<Option<BoxedFitted>> =
            (0..selection.specs.len()).map(|_| None).collect();
        let mut needed: Vec<usize> = selection
            .bands
            .iter()
            .flat_map(|b| b.members.iter().copied())
            .collect();
        needed.sort_unstable();
        needed.dedup();
        for i in needed {
            if let Some(spec) = selection.specs.get(i) {
                if uses_cleaned(spec) {
                    fitted[i] = spec.fit(cleaned).ok();
                    if clipped && fitted[i].is_some() {
                        recent[i] = spec.fit(recent_input).ok();
                    }
                } else {
                    fitted[i] = spec.fit(train).ok();
                }
            }
        }
        let mut naive_idx = None;
        for band in &mut selection.bands {
            band.members
                .retain(|&i| fitted.get(i).is_some_and(Option::is_some));
            if band.members.is_empty() {
                let idx = match naive_idx {
                    Some(i) => i,
                    None => {
                        let i = match selection.specs.iter().position(|s| *s == ModelSpec::Naive) {
                            Some(i) => i,
                            None => {
                                selection.specs.push(ModelSpec::Naive);
                                fitted.push(None);
                                recent.push(None);
                                selection.specs.len() - 1
                            }
                        };
                        fitted[i] = Some(ModelSpec::Naive.fit(train)?);
                        naive_idx = Some(i);
                        i
                    }
                };
                band.members.push(idx);
            }
        }
        selection.nonnegative = selection.nonnegative && y.iter().all(|&v| v >= 0.0);
        let event_scale = mase_scale(y, window);
        Ok(FittedAuto {
            selection,
            fitted,
            recent,
            event_scale,
            scratch: std::cell::RefCell::new((Forecast::default(), Vec::new())),
        })
    }

    /// Select and fit in one go.
    pub fn select_and_fit(
        y: &[f64],
        seas: &Seasonality,
        horizon: usize,
        cfg: &SelectConfig,
    ) -> Result<FittedAuto, SelectError> {
        let selection = select(y, seas, horizon, cfg)?;
        FittedAuto::fit(y, selection)
    }

    /// [`FittedAuto::select_and_fit`] with a calendar placed on `y`'s grid
    /// ([`select_with_events`]).
    pub fn select_and_fit_with_events(
        y: &[f64],
        seas: &Seasonality,
        horizon: usize,
        cfg: &SelectConfig,
        events: Option<&EventGrid>,
    ) -> Result<FittedAuto, SelectError> {
        let selection = select_with_events(y, seas, horizon, cfg, events)?;
        FittedAuto::fit_with_events(y, selection, events)
    }

    /// [`FittedAuto::fit`] with the calendar placed on `y`'s grid (step 0 =
    /// `y[0]`): a selection whose profile has
    /// [`EventModel::base_without_events`] fits its models on `y` with the
    /// events removed ([`EventGrid::without_events`]), as it was validated.
    /// Without `events` such a selection is fitted on `y` as it is (the
    /// surges then stay in the base models and the profile adds to them).
    pub fn fit_with_events(
        y: &[f64],
        selection: Selection,
        events: Option<&EventGrid>,
    ) -> Result<FittedAuto, SelectError> {
        let without = selection
            .events
            .as_ref()
            .is_some_and(|m| m.base_without_events);
        match events {
            Some(grid) if without => {
                check_finite(y)?;
                let window = selection.seasonality.season();
                let mut m = FittedAuto::fit(&grid.without_events(y, window), selection)?;
                // The profile's scale is that of the series it was learnt on.
                m.event_scale = mase_scale(y, window);
                m.selection.nonnegative = m.selection.nonnegative && y.iter().all(|&v| v >= 0.0);
                Ok(m)
            }
            _ => FittedAuto::fit(y, selection),
        }
    }

    /// The selection this model was built from.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// Fitted parameters of every model in use, by name.
    pub fn params(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (i, f) in self.fitted.iter().enumerate() {
            if let (Some(f), Some(spec)) = (f, self.selection.specs.get(i)) {
                map.insert(spec.name(), f.params());
            }
        }
        serde_json::Value::Object(map)
    }

    /// Forecast `horizon` steps into `out`; with `level`, also the calibrated
    /// interval bounds.
    pub fn predict_into(
        &self,
        horizon: usize,
        level: Option<f64>,
        out: &mut Forecast,
    ) -> Result<(), ModelError> {
        self.predict_with_events(horizon, level, out, None)
    }

    /// [`FittedAuto::predict_into`] with the calendar: `events` is the grid
    /// (placed with the model's [`EventModel::config`] at its interval) and
    /// the grid step of the first forecast step (the number of points the
    /// model was fitted on when the grid starts at the series' first
    /// point). Without an event profile in the selection, or without
    /// `events`, the plain forecast.
    pub fn predict_with_events(
        &self,
        horizon: usize,
        level: Option<f64>,
        out: &mut Forecast,
        events: Option<(&EventGrid, usize)>,
    ) -> Result<(), ModelError> {
        out.clear();
        let mut scratch = self.scratch.borrow_mut();
        let (buf, member_points) = &mut *scratch;
        member_points.resize(self.fitted.len(), Vec::new());
        for (i, f) in self.fitted.iter().enumerate() {
            member_points[i].clear();
            if let Some(f) = f {
                f.predict_into(horizon, buf)?;
                member_points[i].extend_from_slice(&buf.point);
                if let Some(r) = self.recent.get(i).and_then(Option::as_ref) {
                    overlay_recent(r, horizon, &mut member_points[i], buf)?;
                }
            }
        }
        for s in 1..=horizon {
            let Some(band) = self.selection.band_for(s) else {
                return Err(ModelError::Invalid("selection has no bands".into()));
            };
            let v = band
                .members
                .iter()
                .map(|&i| member_points[i][s - 1])
                .sum::<f64>()
                / band.members.len() as f64;
            let v = match (&self.selection.events, events) {
                (Some(m), Some((grid, first))) if band.events => {
                    m.apply(grid, first + s - 1, v, self.event_scale)
                }
                _ => v,
            };
            out.point.push(if self.selection.nonnegative {
                v.max(0.0)
            } else {
                v
            });
        }
        if let Some(level) = level {
            out.level = Some(level);
            for (s, &pt) in out.point.iter().enumerate() {
                let (lo, hi) = self.selection.calibration.bounds(s + 1, pt, level);
                out.lower.push(if self.selection.nonnegative {
                    lo.max(0.0)
                } else {
                    lo
                });
                out.upper.push(hi);
            }
        }
        Ok(())
    }

    /// Bounds at another level for an existing point forecast (for backtests
    /// that score several levels at once).
    pub fn bounds(&self, point: &[f64], level: f64) -> (Vec<f64>, Vec<f64>) {
        let mut lo = Vec::with_capacity(point.len());
        let mut hi = Vec::with_capacity(point.len());
        for (s, &pt) in point.iter().enumerate() {
            let (l, h) = self.selection.calibration.bounds(s + 1, pt, level);
            lo.push(if self.selection.nonnegative {
                l.max(0.0)
            } else {
                l
            });
            hi.push(h);
        }
        (lo, hi)
    }
}
