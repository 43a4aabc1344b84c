//! Aya's forecasts in the protocol of the shared forecast bench
//! (`shared/tools/forecast-bench/fcbench.py`), so that `fcbench.py score`
//! puts them next to statsforecast's.
//!
//! The bench's `prepare` writes a directory with `meta.csv` (one row per
//! series: `series`, `step_s`, ...), `tasks.csv` (`series,origin,h`, ...) and
//! `series/<name>.csv` (`timestamp,value,...` on a regular grid). For every
//! task, the forecast of steps `1..=h` may use rows `[0, origin)` only. At
//! each origin Aya does what `aya train` does on that history: detect the
//! seasons, select and fit by rolling-origin backtest, forecast the longest
//! horizon once (the shorter ones are its first steps). Used by
//! `examples/fcbench.rs` and `bench/day_ahead/run.sh`. The other direction,
//! [`write_prep`] and [`read_predictions`], lets a backtest of Aya's own
//! (e.g. `examples/events_worldcup.rs`) hand its series and origins to the
//! bench's peers and score what they predict.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::{Series, format_rfc3339};
use crate::models::{Forecast, ModelSpec};
use crate::seasonality;
use crate::select::{FittedAuto, SelectConfig, default_candidates};

/// Why a prepared directory could not be read or forecast.
#[derive(Debug, thiserror::Error)]
pub enum FcbenchError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file's content is not what `fcbench.py prepare` writes.
    #[error("{path} line {line}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Selection or forecasting failed at an origin.
    #[error("{series} origin {origin}: {message}")]
    Forecast {
        /// The series.
        series: String,
        /// The origin.
        origin: usize,
        /// What failed.
        message: String,
    },
}

/// One prepared series and its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct PrepSeries {
    /// The series' name.
    pub name: String,
    /// Grid step in seconds.
    pub step_s: i64,
    /// The values on the grid.
    pub values: Vec<f64>,
    /// Origin → the horizons asked at it.
    pub tasks: BTreeMap<usize, Vec<usize>>,
}

/// Aya's forecasts of one series, in the bench's formats.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesForecasts {
    /// Rows `series,origin,h,step,y_hat` (no header).
    pub predictions: String,
    /// Rows `series,model,origin,train_len,seconds,cpu_seconds` (no header).
    pub timings: String,
    /// Milliseconds per origin, selection included.
    pub ms: Vec<f64>,
    /// The last origin's selection.
    pub last_choice: String,
}

/// Header of the prediction file.
pub const PREDICTIONS_HEADER: &str = "series,origin,h,step,y_hat";
/// Header of the timings file.
pub const TIMINGS_HEADER: &str = "series,model,origin,train_len,seconds,cpu_seconds";

type Row = BTreeMap<String, String>;

/// A CSV with a header as rows of named fields (the bench writes no quoted
/// fields).
fn read_table(path: &Path) -> Result<Vec<(usize, Row)>, FcbenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| FcbenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| FcbenchError::Format {
            path: path.to_path_buf(),
            line: 1,
            message: "empty file".into(),
        })?
        .split(',')
        .collect();
    let mut rows = Vec::new();
    for (i, l) in lines.enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = l.split(',').collect();
        if cells.len() != header.len() {
            return Err(FcbenchError::Format {
                path: path.to_path_buf(),
                line: i + 2,
                message: format!("{} fields, the header has {}", cells.len(), header.len()),
            });
        }
        let row = header
            .iter()
            .zip(cells)
            .map(|(h, c)| (h.to_string(), c.to_string()))
            .collect();
        rows.push((i + 2, row));
    }
    Ok(rows)
}

/// Field `name` of `row` (at `line` of `path`) parsed as `T`.
fn field<T: std::str::FromStr>(
    row: &Row,
    name: &str,
    path: &Path,
    line: usize,
) -> Result<T, FcbenchError> {
    let bad = |message: String| FcbenchError::Format {
        path: path.to_path_buf(),
        line,
        message,
    };
    let v = row
        .get(name)
        .ok_or_else(|| bad(format!("no column {name:?}")))?;
    v.parse()
        .map_err(|_| bad(format!("{name} {v:?} is not a valid value")))
}

/// The series of prepared directory `dir` whose name contains one of `only`
/// (all when empty), with their tasks.
pub fn load_prep(dir: &Path, only: &[String]) -> Result<Vec<PrepSeries>, FcbenchError> {
    let tasks_path = dir.join("tasks.csv");
    let mut tasks: BTreeMap<String, BTreeMap<usize, Vec<usize>>> = BTreeMap::new();
    for (line, row) in read_table(&tasks_path)? {
        let series: String = field(&row, "series", &tasks_path, line)?;
        let origin: usize = field(&row, "origin", &tasks_path, line)?;
        let h: usize = field(&row, "h", &tasks_path, line)?;
        if h == 0 {
            return Err(FcbenchError::Format {
                path: tasks_path,
                line,
                message: "h must be at least 1".into(),
            });
        }
        tasks
            .entry(series)
            .or_default()
            .entry(origin)
            .or_default()
            .push(h);
    }
    let meta_path = dir.join("meta.csv");
    let mut out = Vec::new();
    for (line, row) in read_table(&meta_path)? {
        let name: String = field(&row, "series", &meta_path, line)?;
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let step_s: i64 = field(&row, "step_s", &meta_path, line)?;
        let path = dir.join("series").join(format!("{name}.csv"));
        let values = read_table(&path)?
            .iter()
            .map(|(l, r)| field::<f64>(r, "value", &path, *l))
            .collect::<Result<Vec<f64>, _>>()?;
        out.push(PrepSeries {
            tasks: tasks.remove(&name).unwrap_or_default(),
            name,
            step_s,
            values,
        });
    }
    Ok(out)
}

/// Writes `series` and its tasks (every origin × every horizon) to `dir` in
/// the format `fcbench.py prepare` writes (`meta.csv`, `tasks.csv`,
/// `series/<name>.csv`, timestamps as naive UTC), for `fcbench.py run`.
/// `season` and `weekly` (0: none) are the seasons in steps the peers get.
pub fn write_prep(
    dir: &Path,
    series: &Series,
    season: usize,
    weekly: usize,
    origins: &[usize],
    horizons: &[usize],
) -> Result<(), FcbenchError> {
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| FcbenchError::Write { path, source })
    };
    let series_dir = dir.join("series");
    std::fs::create_dir_all(&series_dir).map_err(|source| FcbenchError::Write {
        path: series_dir.clone(),
        source,
    })?;
    let name = &series.name;
    let ts = |i: usize| {
        let t = format_rfc3339(series.timestamps[0] + series.interval_ms * i as i64);
        t.replace('T', " ").trim_end_matches('Z').to_string()
    };
    let mut values = String::from("timestamp,value,observed\n");
    for (i, v) in series.values.iter().enumerate() {
        let _ = writeln!(values, "{},{v},1", ts(i));
    }
    write(series_dir.join(format!("{name}.csv")), values)?;
    write(
        dir.join("meta.csv"),
        format!(
            "series,step_s,season,weekly,n\n{name},{},{season},{weekly},{}\n",
            series.interval_ms / 1000,
            series.values.len()
        ),
    )?;
    let mut tasks = String::from("series,origin,origin_ts,h\n");
    for &o in origins {
        for &h in horizons {
            let _ = writeln!(tasks, "{name},{o},{},{h}", ts(o));
        }
    }
    write(dir.join("tasks.csv"), tasks)
}

/// Forecasts by `(series, origin, h, step)`.
pub type Predictions = BTreeMap<(String, usize, usize, usize), f64>;

/// A prediction file (`series,origin,h,step,y_hat`, as `fcbench.py run`
/// and [`forecast_series`] write it).
pub fn read_predictions(path: &Path) -> Result<Predictions, FcbenchError> {
    let mut out = BTreeMap::new();
    for (line, row) in read_table(path)? {
        let key = (
            field(&row, "series", path, line)?,
            field(&row, "origin", path, line)?,
            field(&row, "h", path, line)?,
            field(&row, "step", path, line)?,
        );
        out.insert(key, field(&row, "y_hat", path, line)?);
    }
    Ok(out)
}

/// Aya's forecasts for every task of `s`. `candidates` restricts the default
/// catalogue to these model names (empty: all of it), for experiments.
pub fn forecast_series(
    s: &PrepSeries,
    cfg: &SelectConfig,
    candidates: &[String],
) -> Result<SeriesForecasts, FcbenchError> {
    let mut out = SeriesForecasts {
        predictions: String::new(),
        timings: String::new(),
        ms: Vec::new(),
        last_choice: String::new(),
    };
    let mut f = Forecast::default();
    for (&o, hs) in &s.tasks {
        let fail = |message: String| FcbenchError::Forecast {
            series: s.name.clone(),
            origin: o,
            message,
        };
        let max_h = hs.iter().copied().max().unwrap_or(1);
        let train = s
            .values
            .get(..o)
            .ok_or_else(|| fail(format!("beyond the series' {} points", s.values.len())))?;
        let t0 = Instant::now();
        let seas = seasonality::detect(train, s.step_s);
        let mut cfg = cfg.clone();
        if !candidates.is_empty() {
            let keep: Vec<ModelSpec> = default_candidates(&seas, train.len().min(cfg.max_train))
                .into_iter()
                .filter(|c| candidates.iter().any(|n| *n == c.name()))
                .collect();
            if keep.is_empty() {
                return Err(fail(format!(
                    "none of {candidates:?} is a default candidate"
                )));
            }
            cfg.candidates = Some(keep);
        }
        let model = FittedAuto::select_and_fit(train, &seas, max_h, &cfg)
            .map_err(|e| fail(e.to_string()))?;
        model
            .predict_into(max_h, None, &mut f)
            .map_err(|e| fail(e.to_string()))?;
        let dt = t0.elapsed().as_secs_f64();
        out.ms.push(dt * 1000.0);
        out.last_choice = model.selection().describe();
        // Writing to a String cannot fail.
        let _ = writeln!(out.timings, "{},Aya,{o},{o},{dt:.6},{dt:.6}", s.name);
        for &h in hs {
            for (step, v) in f.point.iter().take(h).enumerate() {
                let _ = writeln!(out.predictions, "{},{o},{h},{},{v}", s.name, step + 1);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prepared directory with one daily-seasonal series at 5 min and
    /// tasks at two origins.
    fn prep(dir: &Path, values: &[f64], origins: &[usize]) {
        std::fs::create_dir_all(dir.join("series")).unwrap();
        std::fs::write(dir.join("meta.csv"), "series,step_s,season\nsine,300,288\n").unwrap();
        let mut tasks = String::from("series,origin,origin_ts,h\n");
        for o in origins {
            for h in [1, 12, 288] {
                tasks.push_str(&format!("sine,{o},2014-01-01 00:00:00,{h}\n"));
            }
        }
        std::fs::write(dir.join("tasks.csv"), tasks).unwrap();
        let mut s = String::from("timestamp,value,observed\n");
        for v in values {
            s.push_str(&format!("2014-01-01 00:00:00,{v},1\n"));
        }
        std::fs::write(dir.join("series/sine.csv"), s).unwrap();
    }

    fn daily(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + 30.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin())
            .collect()
    }

    #[test]
    fn every_task_gets_its_steps_from_the_history_before_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let y = daily(2600);
        prep(dir.path(), &y, &[2000, 2300]);
        let s = load_prep(dir.path(), &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].step_s, 300);
        assert_eq!(s[0].tasks.len(), 2);
        let f = forecast_series(&s[0], &SelectConfig::default(), &[]).unwrap();
        let rows: Vec<&str> = f.predictions.lines().collect();
        assert_eq!(rows.len(), 2 * (1 + 12 + 288));
        assert_eq!(f.timings.lines().count(), 2);
        assert_eq!(f.ms.len(), 2);
        // A clean daily sine is forecast within a few percent one day ahead.
        for r in &rows {
            let c: Vec<&str> = r.split(',').collect();
            let (o, step, v): (usize, usize, f64) = (
                c[1].parse().unwrap(),
                c[3].parse().unwrap(),
                c[4].parse().unwrap(),
            );
            assert!((v - y[o + step - 1]).abs() < 3.0, "{r}");
        }
        // No look-ahead: what follows an origin does not change its forecast.
        let mut z = y.clone();
        for v in &mut z[2000..] {
            *v *= 5.0;
        }
        let dir2 = tempfile::tempdir().unwrap();
        prep(dir2.path(), &z, &[2000]);
        let g = forecast_series(
            &load_prep(dir2.path(), &[]).unwrap()[0],
            &SelectConfig::default(),
            &[],
        )
        .unwrap();
        let first: Vec<&str> = rows
            .iter()
            .copied()
            .filter(|r| r.starts_with("sine,2000,"))
            .collect();
        assert_eq!(g.predictions.lines().collect::<Vec<_>>(), first);
    }

    #[test]
    fn a_written_prep_loads_back_and_predictions_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let y = daily(700);
        let series = Series::from_parts(
            "sine",
            (0..y.len() as i64).map(|i| i * 300_000).collect(),
            y.clone(),
        )
        .unwrap();
        write_prep(dir.path(), &series, 288, 0, &[600, 650], &[1, 12]).unwrap();
        let s = load_prep(dir.path(), &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].name.as_str(), s[0].step_s), ("sine", 300));
        assert_eq!(s[0].values, y);
        assert_eq!(s[0].tasks.get(&600), Some(&vec![1, 12]));
        let f = forecast_series(&s[0], &SelectConfig::default(), &[]).unwrap();
        let file = dir.path().join("aya.csv");
        std::fs::write(&file, format!("{PREDICTIONS_HEADER}\n{}", f.predictions)).unwrap();
        let p = read_predictions(&file).unwrap();
        assert_eq!(p.len(), 2 * (1 + 12));
        assert!(p.contains_key(&("sine".to_string(), 650, 12, 12)));
        std::fs::write(&file, format!("{PREDICTIONS_HEADER}\nsine,600,1,1,x\n")).unwrap();
        let e = read_predictions(&file).unwrap_err().to_string();
        assert!(e.contains("aya.csv line 2") && e.contains("y_hat"), "{e}");
    }

    #[test]
    fn a_bad_prep_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        prep(dir.path(), &daily(700), &[600]);
        std::fs::write(
            dir.path().join("tasks.csv"),
            "series,origin,origin_ts,h\nsine,six hundred,x,1\n",
        )
        .unwrap();
        let e = load_prep(dir.path(), &[]).unwrap_err().to_string();
        assert!(
            e.contains("tasks.csv line 2") && e.contains("origin"),
            "{e}"
        );
        prep(dir.path(), &daily(700), &[900]);
        let s = load_prep(dir.path(), &[]).unwrap();
        let e = forecast_series(&s[0], &SelectConfig::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sine origin 900") && e.contains("beyond"), "{e}");
        let s = load_prep(dir.path(), &["other".into()]).unwrap();
        assert!(s.is_empty());
        let e = std::fs::remove_file(dir.path().join("meta.csv"))
            .map(|_| load_prep(dir.path(), &[]).unwrap_err().to_string())
            .unwrap();
        assert!(e.contains("meta.csv"), "{e}");
    }
}
