//! Automatic model selection per series by rolling-origin backtest on the
//! training data, with an optional ensemble of the best few.
//!
//! No model wins everywhere on monitoring data (the forecaster issue's
//! reference table), and the best model for the next step is often not the
//! best for tomorrow. So selection is done per *horizon band* (step 1, steps
//! 2–12, steps 13 to one season): every candidate is refitted at a few
//! origins at the end of the training data, its scaled errors are scored per
//! band, and each band gets the single model or equal-weight mean of the top
//! 2–3 models with the lowest validation error. The same validation errors
//! calibrate the prediction intervals ([`crate::intervals`]), so selection
//! costs one pass of refits and yields both. Everything is deterministic.

use serde::{Deserialize, Serialize};

use crate::backtest::mase_scale;
use crate::intervals::Calibration;
use crate::models::{BoxedFitted, Estimator, Forecast, ModelError, ModelSpec, check_finite};
use crate::seasonality::Seasonality;

/// Fewest points anything can be forecast from.
pub const MIN_POINTS: usize = 3;

/// How selection runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectConfig {
    /// Validation origins at the end of the training data.
    pub origins: usize,
    /// Models are fitted on at most this many trailing points (bounds time and
    /// lets the models follow level shifts).
    pub max_train: usize,
    /// Largest ensemble (1 = single best model per band).
    pub ensemble: usize,
    /// Candidate models (`None` = [`default_candidates`]).
    pub candidates: Option<Vec<ModelSpec>>,
}

impl Default for SelectConfig {
    fn default() -> Self {
        SelectConfig {
            origins: 5,
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
    if p > 1 && n >= 2 * p {
        v.push(ModelSpec::SeasonalNaive { period: p });
    }
    if n >= 10 {
        v.push(ModelSpec::Theta {
            period: p,
            theta: 2.0,
        });
        v.push(ModelSpec::Theta {
            period: p,
            theta: 1.0,
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
                format!("{range}: {}", names.join("+"))
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

/// Select models for forecasting up to `horizon` steps after the end of `y`.
pub fn select(
    y: &[f64],
    seas: &Seasonality,
    horizon: usize,
    cfg: &SelectConfig,
) -> Result<Selection, SelectError> {
    let n = y.len();
    if n < MIN_POINTS {
        return Err(SelectError::TooShort {
            got: n,
            needed: MIN_POINTS,
        });
    }
    check_finite(y)?;
    let specs = cfg
        .candidates
        .clone()
        .unwrap_or_else(|| default_candidates(seas, n));
    let p = seas.season();
    let h_sel = horizon.max(1).min(p.max(12)).min((n / 3).max(1));
    let stride = (h_sel / 2).max(3);
    let min_train = (n / 3).max(2);
    let mut origins = Vec::new();
    for j in 0..cfg.origins.max(1) {
        let Some(o) = (n - h_sel).checked_sub(j * stride) else {
            break;
        };
        if o < min_train {
            break;
        }
        origins.push(o);
    }
    if origins.is_empty() {
        origins.push(n - h_sel);
    }
    let scales: Vec<f64> = origins.iter().map(|&o| mase_scale(&y[..o], p)).collect();

    // errors[c][o][s] = actual - forecast.
    let mut errors: Vec<Option<Vec<Vec<f64>>>> = Vec::with_capacity(specs.len());
    let mut failures: Vec<Option<String>> = Vec::with_capacity(specs.len());
    let mut buf = Forecast::with_capacity(h_sel);
    for spec in &specs {
        let mut per_origin = Vec::with_capacity(origins.len());
        let mut failure = None;
        for &o in &origins {
            let res = spec
                .fit(tail(&y[..o], cfg.max_train))
                .and_then(|m| m.predict_into(h_sel, &mut buf));
            match res {
                Ok(()) if buf.point.iter().all(|v| v.is_finite()) => per_origin.push(
                    (0..h_sel)
                        .map(|s| y[o + s] - buf.point[s])
                        .collect::<Vec<f64>>(),
                ),
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

    let edges = band_edges(h_sel);
    // Score of a combination (members' errors averaged) over steps [a, b].
    let score = |members: &[usize], a: usize, b: usize| -> f64 {
        let mut total = 0.0;
        let mut count = 0usize;
        for (oi, scale) in scales.iter().enumerate() {
            for s in (a - 1)..b {
                let e: f64 = members
                    .iter()
                    .map(|&c| errors[c].as_ref().map_or(f64::NAN, |x| x[oi][s]))
                    .sum::<f64>()
                    / members.len() as f64;
                total += e.abs() / scale;
                count += 1;
            }
        }
        if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        }
    };
    // The one-step band is scored on steps 1..=3 (three times the errors for
    // the noisiest decision).
    let scored_range = |a: usize, b: usize| {
        if a == 1 && b == 1 {
            (1, h_sel.min(3))
        } else {
            (a, b)
        }
    };

    let ok: Vec<usize> = (0..specs.len()).filter(|&c| errors[c].is_some()).collect();
    let mut scores = Vec::with_capacity(specs.len());
    for (c, spec) in specs.iter().enumerate() {
        let band_scores = edges
            .iter()
            .map(|&(a, b)| {
                let (a, b) = scored_range(a, b);
                if errors[c].is_some() {
                    score(&[c], a, b)
                } else {
                    f64::NAN
                }
            })
            .collect();
        scores.push(CandidateScore {
            model: spec.name(),
            band_scores,
            error: failures[c].clone(),
        });
    }

    let mut bands = Vec::with_capacity(edges.len());
    for (bi, &(a, b)) in edges.iter().enumerate() {
        let mut ranked: Vec<usize> = ok.clone();
        ranked.sort_by(|&x, &z| scores[x].band_scores[bi].total_cmp(&scores[z].band_scores[bi]));
        let (sa, sb) = scored_range(a, b);
        let mut best: Option<(Vec<usize>, f64)> = None;
        for k in 1..=cfg.ensemble.max(1).min(ranked.len()) {
            let members: Vec<usize> = ranked[..k].to_vec();
            let sc = score(&members, sa, sb);
            if best.as_ref().is_none_or(|(_, b)| sc < *b) {
                best = Some((members, sc));
            }
        }
        if let Some((members, sc)) = best {
            bands.push(Band {
                from: a,
                to: b,
                members,
                score: sc,
            });
        }
    }
    let mut specs = specs;
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
        });
    }

    // Calibrate intervals on the chosen combination's raw errors per step.
    let mut step_errors: Vec<Vec<f64>> = vec![Vec::with_capacity(origins.len()); h_sel];
    for (s, errs) in step_errors.iter_mut().enumerate() {
        let band = bands
            .iter()
            .find(|b| s + 1 >= b.from && s < b.to)
            .or(bands.last());
        let Some(band) = band else { continue };
        for oi in 0..origins.len() {
            let e = band
                .members
                .iter()
                .filter_map(|&c| errors.get(c).and_then(|x| x.as_ref()).map(|x| x[oi][s]))
                .collect::<Vec<f64>>();
            if e.len() == band.members.len() {
                errs.push(e.iter().sum::<f64>() / e.len() as f64);
            }
        }
    }
    if step_errors.iter().all(Vec::is_empty) {
        // Naive fallback without validation: in-sample one-step changes.
        step_errors[0] = y.windows(2).map(|w| w[1] - w[0]).collect();
    }
    let mean_abs = y.iter().map(|v| v.abs()).sum::<f64>() / n as f64;
    let calibration = Calibration::from_errors(&step_errors, 1e-6 * (1.0 + mean_abs));

    Ok(Selection {
        seasonality: seas.clone(),
        specs,
        scores,
        bands,
        calibration,
        validation_origins: origins,
        validation_horizon: h_sel,
        nonnegative: y.iter().all(|&v| v >= 0.0),
        max_train: cfg.max_train,
    })
}

/// A selection with its chosen models fitted on the whole training series.
pub struct FittedAuto {
    selection: Selection,
    fitted: Vec<Option<BoxedFitted>>,
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
        let mut fitted: Vec<Option<BoxedFitted>> =
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
                fitted[i] = spec.fit(train).ok();
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
        Ok(FittedAuto {
            selection,
            fitted,
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
        out.clear();
        let mut scratch = self.scratch.borrow_mut();
        let (buf, member_points) = &mut *scratch;
        member_points.resize(self.fitted.len(), Vec::new());
        for (i, f) in self.fitted.iter().enumerate() {
            member_points[i].clear();
            if let Some(f) = f {
                f.predict_into(horizon, buf)?;
                member_points[i].extend_from_slice(&buf.point);
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
