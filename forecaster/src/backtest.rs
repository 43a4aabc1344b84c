//! Rolling-origin evaluation: accuracy metrics and the origin schedule of the
//! benchmark protocol.
//!
//! Protocol (the forecaster issue's, also `fcbench.py`'s): the test region is
//! the last 20% of the series; `k` origins are evenly spaced in it; at each
//! origin a forecaster sees only the values before it and forecasts `h`
//! steps. MASE divides the mean absolute error by the in-sample mean absolute
//! error of the seasonal-naive forecast (season = one day) on the data before
//! the origin, so 1.0 means "as good as seasonal naive was in sample".

use serde::{Deserialize, Serialize};

/// Mean absolute error of the seasonal-naive forecast in sample (lag `season`),
/// falling back to lag 1 when the series is shorter than two seasons or
/// seasonal naive is perfect; never zero.
pub fn mase_scale(train: &[f64], season: usize) -> f64 {
    let lag_mae = |m: usize| -> Option<f64> {
        if m == 0 || train.len() <= m {
            return None;
        }
        let s: f64 = (m..train.len())
            .map(|t| (train[t] - train[t - m]).abs())
            .sum();
        Some(s / (train.len() - m) as f64)
    };
    let v = lag_mae(season.max(1))
        .filter(|&v| v > 0.0)
        .or_else(|| lag_mae(1).filter(|&v| v > 0.0))
        .unwrap_or(1.0);
    v.max(1e-12)
}

/// Mean absolute scaled error of `forecast` against `actual`.
pub fn mase(actual: &[f64], forecast: &[f64], scale: f64) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return f64::NAN;
    }
    actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).abs())
        .sum::<f64>()
        / n as f64
        / scale
}

/// Symmetric MAPE in percent: `200/h Σ |a − f| / (|a| + |f|)` (terms with a
/// zero denominator count as 0).
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return f64::NAN;
    }
    let s: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| {
            let d = a.abs() + f.abs();
            if d > 0.0 { (a - f).abs() / d } else { 0.0 }
        })
        .sum();
    200.0 * s / n as f64
}

/// Fraction of `actual` values inside `[lower, upper]`.
pub fn coverage(actual: &[f64], lower: &[f64], upper: &[f64]) -> f64 {
    let n = actual.len().min(lower.len()).min(upper.len());
    if n == 0 {
        return f64::NAN;
    }
    (0..n)
        .filter(|&i| actual[i] >= lower[i] && actual[i] <= upper[i])
        .count() as f64
        / n as f64
}

/// Origins (numbers of training points) for a series of `n` points: `k`
/// evenly spaced from the start of the last `test_fraction` of the series to
/// the last origin that leaves room for `max_h` steps. Empty when impossible.
pub fn origins(n: usize, k: usize, max_h: usize, test_fraction: f64) -> Vec<usize> {
    if k == 0 || n <= max_h + 2 {
        return Vec::new();
    }
    let first = ((n as f64) * (1.0 - test_fraction)).floor() as usize;
    let last = n - max_h;
    let first = first.max(2).min(last);
    if k == 1 || first == last {
        return vec![last];
    }
    let mut v: Vec<usize> = (0..k)
        .map(|i| first + ((last - first) as f64 * i as f64 / (k - 1) as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

/// Scores of one method at one horizon, averaged over origins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Method name.
    pub model: String,
    /// Horizon in steps.
    pub horizon: usize,
    /// Origins scored.
    pub origins: usize,
    /// Mean MASE.
    #[serde(deserialize_with = "nan_serde::f64")]
    pub mase: f64,
    /// Mean sMAPE (percent).
    #[serde(deserialize_with = "nan_serde::f64")]
    pub smape: f64,
    /// Coverage of the 80% interval (NaN when the method gives none).
    #[serde(deserialize_with = "nan_serde::f64")]
    pub coverage80: f64,
    /// Coverage of the 95% interval.
    #[serde(deserialize_with = "nan_serde::f64")]
    pub coverage95: f64,
    /// Mean wall time per origin, milliseconds (fit, selection and forecast).
    #[serde(deserialize_with = "nan_serde::f64")]
    pub ms_per_origin: f64,
}

/// What a backtest evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Aya's automatic selection (and ensemble) with calibrated intervals.
    Auto(crate::select::SelectConfig),
    /// The automatic selection given the calendar of known events
    /// ([`run_with_events`]; without a calendar it is [`Method::Auto`]).
    AutoEvents(crate::select::SelectConfig),
    /// One model. With `intervals`, it is calibrated like the automatic method
    /// (selection restricted to this one candidate); without, it is only fitted.
    Single {
        /// The model.
        spec: crate::models::ModelSpec,
        /// Calibrate and score intervals too (costs the validation refits).
        intervals: bool,
    },
}

impl Method {
    /// Name in tables.
    pub fn name(&self) -> String {
        match self {
            Method::Auto(_) => "aya_auto".into(),
            Method::AutoEvents(_) => "aya_auto_events".into(),
            Method::Single { spec, .. } => spec.name(),
        }
    }
}

/// Backtest settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestConfig {
    /// Horizons to score, in steps (each origin forecasts the largest once;
    /// shorter horizons score its first steps).
    pub horizons: Vec<usize>,
    /// Number of origins.
    pub origins: usize,
    /// Fraction of the series the origins are spread over (at its end).
    pub test_fraction: f64,
    /// Seasonality used by the models.
    pub seasonality: crate::seasonality::Seasonality,
    /// Season of the MASE scale (one day in the benchmark protocol).
    pub scale_season: usize,
    /// Methods to compare.
    pub methods: Vec<Method>,
}

/// One scored forecast step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastRecord {
    /// Method name.
    pub model: String,
    /// Origin (number of training points).
    pub origin: usize,
    /// Step ahead (1-based).
    pub step: usize,
    /// Observed value.
    pub actual: f64,
    /// Point forecast.
    pub yhat: f64,
    /// 80% bounds (NaN without intervals).
    pub lower80: f64,
    /// 80% upper bound.
    pub upper80: f64,
    /// 95% lower bound.
    pub lower95: f64,
    /// 95% upper bound.
    pub upper95: f64,
}

/// Result of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktestReport {
    /// Origins used.
    pub origins: Vec<usize>,
    /// Scores per method and horizon.
    pub scores: Vec<Score>,
    /// Every scored step (for `--forecasts-out`), at the largest horizon.
    pub records: Vec<ForecastRecord>,
    /// What the automatic method chose at the last origin (when it ran).
    pub last_choice: Option<String>,
    /// What the automatic method with events chose at the last origin, with
    /// its event profile (when it ran).
    #[serde(default)]
    pub last_choice_events: Option<String>,
}

/// Why a backtest could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BacktestError {
    /// The series cannot hold the origins and the horizon.
    #[error(
        "series has {n} points: too short for a backtest at horizon {horizon} (need more than {needed})"
    )]
    TooShort {
        /// Points.
        n: usize,
        /// Largest horizon.
        horizon: usize,
        /// Points needed.
        needed: usize,
    },
    /// No horizon was given.
    #[error("no horizons to score")]
    NoHorizon,
}

/// A point forecast and, when available, the 80% and 95% bounds (lo80, hi80, lo95, hi95).
type PointAndBounds = (Vec<f64>, Option<[Vec<f64>; 4]>);

/// Rolling-origin backtest of every method on `y`.
pub fn run(y: &[f64], cfg: &BacktestConfig) -> Result<BacktestReport, BacktestError> {
    run_with_events(y, cfg, None)
}

/// [`run`] with a calendar placed on `y`'s grid (step 0 = `y[0]`), used by
/// [`Method::AutoEvents`]: at each origin the selection sees the events
/// (past occurrences to learn from, future ones to forecast), never the
/// values after the origin.
pub fn run_with_events(
    y: &[f64],
    cfg: &BacktestConfig,
    events: Option<&crate::events::EventGrid>,
) -> Result<BacktestReport, BacktestError> {
    use crate::models::Forecast;
    use crate::select::{FittedAuto, SelectConfig};
    let max_h = cfg
        .horizons
        .iter()
        .copied()
        .max()
        .ok_or(BacktestError::NoHorizon)?;
    let needed = max_h + 2 * crate::select::MIN_POINTS;
    let origins = origins(y.len(), cfg.origins, max_h, cfg.test_fraction);
    if y.len() <= needed || origins.is_empty() {
        return Err(BacktestError::TooShort {
            n: y.len(),
            horizon: max_h,
            needed,
        });
    }
    let mut acc: Vec<Vec<[f64; 5]>> = vec![vec![[0.0; 5]; cfg.horizons.len()]; cfg.methods.len()];
    let mut counts = vec![vec![0usize; cfg.horizons.len()]; cfg.methods.len()];
    let mut times = vec![0.0f64; cfg.methods.len()];
    let mut records = Vec::new();
    let mut last_choice = None;
    let mut last_choice_events = None;
    let mut f = Forecast::default();
    for &o in &origins {
        let train = &y[..o];
        let actual = &y[o..o + max_h];
        let scale = mase_scale(train, cfg.scale_season);
        for (mi, method) in cfg.methods.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let result: Option<PointAndBounds> = match method {
                Method::Auto(sc) => FittedAuto::select_and_fit(train, &cfg.seasonality, max_h, sc)
                    .ok()
                    .and_then(|m| {
                        m.predict_into(max_h, None, &mut f).ok()?;
                        last_choice = Some(m.selection().describe());
                        let (l8, u8) = m.bounds(&f.point, 0.8);
                        let (l9, u9) = m.bounds(&f.point, 0.95);
                        Some((f.point.clone(), Some([l8, u8, l9, u9])))
                    }),
                Method::AutoEvents(sc) => FittedAuto::select_and_fit_with_events(
                    train,
                    &cfg.seasonality,
                    max_h,
                    sc,
                    events,
                )
                .ok()
                .and_then(|m| {
                    m.predict_with_events(max_h, None, &mut f, events.map(|g| (g, o)))
                        .ok()?;
                    last_choice_events = Some(match &m.selection().events {
                        Some(ev) => format!("{} [{}]", m.selection().describe(), ev.describe()),
                        None => m.selection().describe(),
                    });
                    let (l8, u8) = m.bounds(&f.point, 0.8);
                    let (l9, u9) = m.bounds(&f.point, 0.95);
                    Some((f.point.clone(), Some([l8, u8, l9, u9])))
                }),
                Method::Single {
                    spec,
                    intervals: true,
                } => {
                    let sc = SelectConfig {
                        candidates: Some(vec![spec.clone()]),
                        ensemble: 1,
                        ..SelectConfig::default()
                    };
                    FittedAuto::select_and_fit(train, &cfg.seasonality, max_h, &sc)
                        .ok()
                        .and_then(|m| {
                            m.predict_into(max_h, None, &mut f).ok()?;
                            let (l8, u8) = m.bounds(&f.point, 0.8);
                            let (l9, u9) = m.bounds(&f.point, 0.95);
                            Some((f.point.clone(), Some([l8, u8, l9, u9])))
                        })
                }
                Method::Single {
                    spec,
                    intervals: false,
                } => spec
                    .fit(train)
                    .and_then(|m| m.predict_into(max_h, &mut f))
                    .ok()
                    .map(|()| (f.point.clone(), None)),
            };
            times[mi] += t0.elapsed().as_secs_f64() * 1000.0;
            let Some((point, bounds)) = result else {
                continue;
            };
            if point.len() < max_h || point.iter().any(|v| !v.is_finite()) {
                continue;
            }
            accumulate(
                &mut acc[mi],
                &mut counts[mi],
                &cfg.horizons,
                actual,
                &point,
                &bounds,
                scale,
            );
            push_records(&mut records, method, o, actual, &point, &bounds);
        }
    }
    let scores = scores_of(cfg, &acc, &counts, &times, origins.len());
    Ok(BacktestReport {
        origins,
        scores,
        records,
        last_choice,
        last_choice_events,
    })
}

/// Add one origin's MASE, sMAPE and interval coverage at every horizon to a method's sums.
fn accumulate(
    acc: &mut [[f64; 5]],
    counts: &mut [usize],
    horizons: &[usize],
    actual: &[f64],
    point: &[f64],
    bounds: &Option<[Vec<f64>; 4]>,
    scale: f64,
) {
    for (hi, &h) in horizons.iter().enumerate() {
        let a = &actual[..h];
        let p = &point[..h];
        let (c8, c9) = match &bounds {
            Some([l8, u8, l9, u9]) => (
                coverage(a, &l8[..h], &u8[..h]),
                coverage(a, &l9[..h], &u9[..h]),
            ),
            None => (f64::NAN, f64::NAN),
        };
        let slot = &mut acc[hi];
        slot[0] += mase(a, p, scale);
        slot[1] += smape(a, p);
        slot[2] += c8;
        slot[3] += c9;
        counts[hi] += 1;
    }
}

/// One forecast record per step of one method at one origin.
fn push_records(
    records: &mut Vec<ForecastRecord>,
    method: &Method,
    o: usize,
    actual: &[f64],
    point: &[f64],
    bounds: &Option<[Vec<f64>; 4]>,
) {
    let max_h = actual.len();
    for s in 0..max_h {
        let (l8, u8, l9, u9) = match &bounds {
            Some(b) => (b[0][s], b[1][s], b[2][s], b[3][s]),
            None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
        };
        records.push(ForecastRecord {
            model: method.name(),
            origin: o,
            step: s + 1,
            actual: actual[s],
            yhat: point[s],
            lower80: l8,
            upper80: u8,
            lower95: l9,
            upper95: u9,
        });
    }
}

/// The mean scores of every method at every horizon over the origins.
fn scores_of(
    cfg: &BacktestConfig,
    acc: &[Vec<[f64; 5]>],
    counts: &[Vec<usize>],
    times: &[f64],
    n_origins: usize,
) -> Vec<Score> {
    let mut scores = Vec::new();
    for (mi, method) in cfg.methods.iter().enumerate() {
        for (hi, &h) in cfg.horizons.iter().enumerate() {
            let c = counts[mi][hi];
            let d = c.max(1) as f64;
            let a = acc[mi][hi];
            scores.push(Score {
                model: method.name(),
                horizon: h,
                origins: c,
                mase: if c > 0 { a[0] / d } else { f64::NAN },
                smape: if c > 0 { a[1] / d } else { f64::NAN },
                coverage80: if c > 0 { a[2] / d } else { f64::NAN },
                coverage95: if c > 0 { a[3] / d } else { f64::NAN },
                ms_per_origin: times[mi] / n_origins as f64,
            });
        }
    }
    scores
}

/// Put a loaded series on its regular grid (the protocol's first step):
/// unchanged when already regular, else resampled at its nominal interval
/// (bucket means, gaps linearly interpolated) by the data layer.
pub fn regularise(
    path: &std::path::Path,
    series: crate::data::Series,
) -> Result<crate::data::Series, crate::data::DataError> {
    let dt = series.interval_ms;
    let regular = dt > 0 && series.timestamps.windows(2).all(|w| w[1] - w[0] == dt);
    if regular || series.timestamps.len() < 2 {
        Ok(series)
    } else {
        crate::data::resample(path, series, dt)
    }
}

/// Serde helpers: JSON has no NaN, serde_json writes it as `null`; these read
/// `null` back as NaN so that scores of failed or interval-less models round-trip.
pub mod nan_serde {
    use serde::{Deserialize, Deserializer};

    /// Read an `f64` that may be `null` (NaN).
    pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    /// Read a list of `f64` whose items may be `null` (NaN).
    pub fn vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }
}
