//! A scorer that reproduces the Numenta Anomaly Benchmark's rules (NAB v1.1, `nab/sweeper.py`
//! and `nab/optimizer.py` of `numenta/NAB`), written from its published description and code.
//!
//! The rules, per data file:
//! - The first `min(floor(0.15 n), 750)` rows are the *probationary period*: nothing there counts,
//!   neither detections nor window rows.
//! - A row is a *detection* when its anomaly score is `>= threshold`.
//! - A labelled window `[start, end]` (rows `l..=r`, width `w = r - l + 1`) scores the best of its
//!   detections, i.e. the first one: a detection at row `i` is worth
//!   `tp * S(-(r - i + 1) / w) / S(-1)` where `S(x) = 2 sigmoid(-5x) - 1` (NAB's `scaledSigmoid`);
//!   the first row of a window earns the full `tp`, the last one about `0.2 tp` for wide windows.
//!   A window without any detection costs `-fn`.
//! - Every detection outside a window costs `fp * S(d)` with `d = |i - r_prev| / (w_prev - 1)`
//!   measured from the end of the preceding window (so FPs right after a window are forgiven
//!   partly, and `S(d) = -1` for `d >= 3`); before the first window `d = 3` (full cost `-fp`).
//! - The corpus score at a threshold is the sum over files. NAB picks, per detector and profile,
//!   the one threshold (over all files) that maximises it, and reports
//!   `100 (raw - null) / (perfect - null)`, where `null` is the optimised score of the null
//!   detector (constant 0.5, which detects nothing at the optimum) and `perfect = tp * windows`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

/// What went wrong reading the benchmark's files or scoring a detector's output.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The labels file is not NAB's `file -> [[start, end], ...]` JSON.
    #[error("{path}: not a NAB labels file: {reason}")]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A row of a data file does not parse.
    #[error("{path}:{line}: {reason}")]
    Row {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A window bound is not a timestamp of its file (NAB requires exact matches).
    #[error("{file}: window [{start}, {end}] does not start and end on rows of the file")]
    Window {
        /// The data file (relative name).
        file: String,
        /// The window start as written in the labels.
        start: String,
        /// The window end as written in the labels.
        end: String,
    },
    /// The detector's output does not fit the file.
    #[error("{file}: {reason}")]
    Scores {
        /// The data file (relative name).
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// One of NAB's application profiles (`config/profiles.json`): the cost-matrix weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// NAB's profile name.
    pub name: &'static str,
    /// Weight of a detected window (`tpWeight`).
    pub tp: f64,
    /// Weight of a false positive (`fpWeight`).
    pub fp: f64,
    /// Weight of a missed window (`fnWeight`).
    pub fn_: f64,
}

/// NAB's three profiles, in the order of its scoreboard.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// NAB's probationary fraction.
pub const PROBATION_FRACTION: f64 = 0.15;

/// Rows at the start of a file of `rows` rows that NAB does not score:
/// `min(floor(0.15 rows), 0.15 * 5000)`.
pub fn probationary_len(rows: usize) -> usize {
    let n = (PROBATION_FRACTION * rows as f64).floor() as usize;
    n.min((PROBATION_FRACTION * 5000.0) as usize)
}

/// NAB's `scaledSigmoid`: `2 sigmoid(-5x) - 1`, and `-1` for `x >= 3`.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x >= 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// A labelled anomaly window, bounds inclusive, in ms since the epoch (naive timestamps read as UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First timestamp of the window.
    pub start_ms: i64,
    /// Last timestamp of the window.
    pub end_ms: i64,
}

/// Parses NAB's naive timestamps (`YYYY-MM-DD HH:MM:SS` with optional fractional seconds) to ms.
pub fn parse_nab_timestamp(s: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// The windows file: relative data-file name → windows (with the label strings kept for messages).
pub type Labels = BTreeMap<String, Vec<(Window, String, String)>>;

/// Reads `labels/combined_windows.json`.
pub fn load_labels(path: &Path) -> Result<Labels, NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| NabError::Labels {
        path: path.to_path_buf(),
        reason,
    };
    let raw: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut labels = Labels::new();
    for (file, windows) in raw {
        let mut parsed = Vec::with_capacity(windows.len());
        for pair in windows {
            let [start, end] = pair.as_slice() else {
                return Err(bad(format!("{file}: a window is not a [start, end] pair")));
            };
            let (Some(s), Some(e)) = (parse_nab_timestamp(start), parse_nab_timestamp(end)) else {
                return Err(bad(format!(
                    "{file}: window [{start}, {end}] has a bad timestamp"
                )));
            };
            if e < s {
                return Err(bad(format!(
                    "{file}: window [{start}, {end}] ends before it starts"
                )));
            }
            parsed.push((
                Window {
                    start_ms: s,
                    end_ms: e,
                },
                start.clone(),
                end.clone(),
            ));
        }
        parsed.sort_by_key(|(w, _, _)| w.start_ms);
        labels.insert(file, parsed);
    }
    Ok(labels)
}

/// One NAB data file: `timestamp,value` rows in time order.
#[derive(Debug, Clone)]
pub struct Series {
    /// Path relative to the corpus root, e.g. `realKnownCause/nyc_taxi.csv`.
    pub name: String,
    /// Row timestamps, ms since the epoch.
    pub timestamps: Vec<i64>,
    /// Row values.
    pub values: Vec<f64>,
}

/// Reads a `timestamp,value` CSV with a header row (NAB's data format).
pub fn load_series(path: &Path, name: &str) -> Result<Series, NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let row_err = |line: usize, reason: String| NabError::Row {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut timestamps = Vec::new();
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let Some((ts, value)) = line.split_once(',') else {
            return Err(row_err(
                i + 1,
                format!("expected `timestamp,value`, got {line:?}"),
            ));
        };
        let ts = parse_nab_timestamp(ts)
            .ok_or_else(|| row_err(i + 1, format!("bad timestamp {ts:?}")))?;
        let value: f64 = value
            .trim()
            .parse()
            .map_err(|_| row_err(i + 1, format!("bad value {value:?}")))?;
        if !value.is_finite() {
            return Err(row_err(i + 1, format!("value {value} is not finite")));
        }
        timestamps.push(ts);
        values.push(value);
    }
    Ok(Series {
        name: name.to_string(),
        timestamps,
        values,
    })
}

/// A data file with its labelled windows resolved to row ranges.
#[derive(Debug, Clone)]
pub struct LabelledSeries {
    /// The rows.
    pub series: Series,
    /// Windows as inclusive row ranges `(first, last)`, in time order.
    pub windows: Vec<(usize, usize)>,
}

impl LabelledSeries {
    /// Resolves `windows` to rows; each bound must be a timestamp of the file, as NAB requires
    /// (its sweeper enters a window only on an exact timestamp match).
    pub fn new(series: Series, windows: &[(Window, String, String)]) -> Result<Self, NabError> {
        let mut rows = Vec::with_capacity(windows.len());
        for (w, start, end) in windows {
            let l = series.timestamps.iter().position(|&t| t == w.start_ms);
            let r = series.timestamps.iter().rposition(|&t| t == w.end_ms);
            match (l, r) {
                (Some(l), Some(r)) if l <= r => rows.push((l, r)),
                _ => {
                    return Err(NabError::Window {
                        file: series.name.clone(),
                        start: start.clone(),
                        end: end.clone(),
                    });
                }
            }
        }
        Ok(LabelledSeries {
            series,
            windows: rows,
        })
    }

    /// A "perfect" detector's output: 1 on the first row of each window, 0 elsewhere.
    pub fn perfect_scores(&self) -> Vec<f64> {
        let mut s = vec![0.0; self.series.values.len()];
        for &(l, _) in &self.windows {
            s[l] = 1.0;
        }
        s
    }
}

/// The NAB corpus: every labelled file found under the root.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Files in the labels file's (sorted) order.
    pub files: Vec<LabelledSeries>,
}

impl Corpus {
    /// Loads `root/labels/combined_windows.json` and every file it names.
    pub fn load(root: &Path) -> Result<Self, NabError> {
        let labels = load_labels(&root.join("labels").join("combined_windows.json"))?;
        let mut files = Vec::with_capacity(labels.len());
        for (name, windows) in &labels {
            let series = load_series(&root.join(name), name)?;
            files.push(LabelledSeries::new(series, windows)?);
        }
        Ok(Corpus { files })
    }

    /// Total number of labelled windows (NAB's `perfect` is `tp` times this).
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }
}

/// What a scored row contributes when it is a detection, before profile weights.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// Inside window `id` (corpus-wide): worth `tp * value`.
    Window { id: usize, value: f64 },
    /// Outside every window: worth `fp * value` (`value` is `S(d)`, mostly negative).
    Outside { value: f64 },
}

/// Per-row sweep parts of one file (NAB's `calcSweepScore` without the weights).
fn sweep_parts(file: &LabelledSeries, first_window_id: usize) -> Vec<Part> {
    let n = file.series.values.len();
    let probation = probationary_len(n);
    let max_tp = scaled_sigmoid(-1.0);
    let mut parts = Vec::with_capacity(n.saturating_sub(probation));
    let mut next = 0;
    let mut prev: Option<(usize, usize)> = None; // (right row, width) of the preceding window
    for i in 0..n {
        while next < file.windows.len() && file.windows[next].1 < i {
            let (l, r) = file.windows[next];
            prev = Some((r, r - l + 1));
            next += 1;
        }
        let inside = file.windows.get(next).filter(|&&(l, _)| l <= i).copied();
        if i < probation {
            continue;
        }
        let part = match inside {
            Some((l, r)) => {
                let width = (r - l + 1) as f64;
                let position = -((r - i + 1) as f64) / width;
                Part::Window {
                    id: first_window_id + next,
                    value: scaled_sigmoid(position) / max_tp,
                }
            }
            None => {
                let d = match prev {
                    // NAB divides by (width - 1); a one-row window would divide by zero there.
                    Some((r, w)) if w > 1 => (i - r) as f64 / (w - 1) as f64,
                    _ => 3.0,
                };
                Part::Outside {
                    value: scaled_sigmoid(d),
                }
            }
        };
        parts.push(part);
    }
    parts
}

/// The result of NAB's threshold optimisation for one detector and profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorpusScore {
    /// The threshold that maximises the corpus score (1.1 = nothing detected).
    pub threshold: f64,
    /// Raw corpus score at that threshold.
    pub raw: f64,
    /// Windows detected.
    pub detected: usize,
    /// Windows missed (among those with rows outside the probationary period).
    pub missed: usize,
    /// Scored rows detected outside windows.
    pub false_positives: usize,
}

/// A detector's output on a corpus, prepared for scoring any profile.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// (anomaly score, part), sorted by score, highest first.
    rows: Vec<(f64, Part)>,
    /// Scorable windows (some row outside the probationary period).
    scorable: Vec<bool>,
    /// All labelled windows.
    windows: usize,
}

impl Sweep {
    /// Prepares `scores[f]` (the detector's anomaly score of each row of file `f`).
    pub fn new(corpus: &Corpus, scores: &[Vec<f64>]) -> Result<Self, NabError> {
        if scores.len() != corpus.files.len() {
            return Err(NabError::Scores {
                file: "<corpus>".into(),
                reason: format!(
                    "{} score series for {} files",
                    scores.len(),
                    corpus.files.len()
                ),
            });
        }
        let mut rows = Vec::new();
        let mut scorable = vec![false; corpus.window_count()];
        let mut first_id = 0;
        for (file, s) in corpus.files.iter().zip(scores) {
            if s.len() != file.series.values.len() {
                return Err(NabError::Scores {
                    file: file.series.name.clone(),
                    reason: format!("{} scores for {} rows", s.len(), file.series.values.len()),
                });
            }
            let probation = probationary_len(s.len());
            for (i, part) in sweep_parts(file, first_id).into_iter().enumerate() {
                let score = s[probation + i];
                if !(0.0..=1.0).contains(&score) {
                    return Err(NabError::Scores {
                        file: file.series.name.clone(),
                        reason: format!("row {}: score {score} is not in [0, 1]", probation + i),
                    });
                }
                if let Part::Window { id, .. } = part {
                    scorable[id] = true;
                }
                rows.push((score, part));
            }
            first_id += file.windows.len();
        }
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(Sweep {
            rows,
            scorable,
            windows: corpus.window_count(),
        })
    }

    /// Raw corpus score when nothing is detected: `-fn` per scorable window.
    pub fn nothing_detected(&self, profile: &Profile) -> f64 {
        -profile.fn_ * self.scorable.iter().filter(|&&s| s).count() as f64
    }

    /// NAB's `perfect`: `tp` times the number of labelled windows.
    pub fn perfect(&self, profile: &Profile) -> f64 {
        profile.tp * self.windows as f64
    }

    /// Raw corpus score with detections at `score >= threshold` (NAB's `scoreDataSet` summed).
    pub fn score_at(&self, profile: &Profile, threshold: f64) -> f64 {
        let mut best_of_window = vec![None::<f64>; self.windows];
        let mut total = self.nothing_detected(profile);
        for &(score, part) in self.rows.iter().take_while(|(s, _)| *s >= threshold) {
            debug_assert!(score >= threshold);
            match part {
                Part::Window { id, value } => {
                    let v = profile.tp * value;
                    match best_of_window[id] {
                        None => {
                            total += v + profile.fn_;
                            best_of_window[id] = Some(v);
                        }
                        Some(b) if v > b => {
                            total += v - b;
                            best_of_window[id] = Some(v);
                        }
                        Some(_) => {}
                    }
                }
                Part::Outside { value } => total += profile.fp * value,
            }
        }
        total
    }

    /// NAB's threshold optimisation (`calcScoreByThreshold` over the whole corpus, best row).
    /// Ties are broken towards the higher threshold (the first row NAB's stable sort keeps).
    pub fn optimise(&self, profile: &Profile) -> CorpusScore {
        let mut best_of_window = vec![None::<f64>; self.windows];
        let mut total = self.nothing_detected(profile);
        let mut detected = 0;
        let mut fps = 0;
        let scorable_windows = self.scorable.iter().filter(|&&s| s).count();
        let mut best = CorpusScore {
            threshold: 1.1,
            raw: total,
            detected: 0,
            missed: scorable_windows,
            false_positives: 0,
        };
        let mut k = 0;
        while k < self.rows.len() {
            let threshold = self.rows[k].0;
            while k < self.rows.len() && self.rows[k].0 == threshold {
                match self.rows[k].1 {
                    Part::Window { id, value } => {
                        let v = profile.tp * value;
                        match best_of_window[id] {
                            None => {
                                total += v + profile.fn_;
                                detected += 1;
                                best_of_window[id] = Some(v);
                            }
                            Some(b) if v > b => {
                                total += v - b;
                                best_of_window[id] = Some(v);
                            }
                            Some(_) => {}
                        }
                    }
                    Part::Outside { value } => {
                        total += profile.fp * value;
                        fps += 1;
                    }
                }
                k += 1;
            }
            if total > best.raw {
                best = CorpusScore {
                    threshold,
                    raw: total,
                    detected,
                    missed: scorable_windows - detected,
                    false_positives: fps,
                };
            }
        }
        best
    }
}

/// A detector's NAB score for one profile: optimised raw score and its normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NabScore {
    /// The profile.
    pub profile: Profile,
    /// The optimised raw score and its threshold.
    pub best: CorpusScore,
    /// The null detector's optimised raw score on the same files.
    pub null: f64,
    /// `tp` times the labelled windows.
    pub perfect: f64,
    /// `100 (raw - null) / (perfect - null)`.
    pub normalized: f64,
}

/// Scores a detector's output on `corpus` for every NAB profile, the NAB way
/// (threshold optimised per profile, normalised against the null and perfect detectors).
pub fn score(corpus: &Corpus, scores: &[Vec<f64>]) -> Result<[NabScore; 3], NabError> {
    let sweep = Sweep::new(corpus, scores)?;
    let null_scores: Vec<Vec<f64>> = corpus
        .files
        .iter()
        .map(|f| vec![0.5; f.series.values.len()])
        .collect();
    let null_sweep = Sweep::new(corpus, &null_scores)?;
    Ok(PROFILES.map(|profile| {
        let best = sweep.optimise(&profile);
        let null = null_sweep.optimise(&profile).raw;
        let perfect = sweep.perfect(&profile);
        let normalized = 100.0 * (best.raw - null) / (perfect - null);
        NabScore {
            profile,
            best,
            null,
            perfect,
            normalized,
        }
    }))
}

/// A fixed split of the corpus for tuning: FNV-1a of the file name, even = tune, odd = held out.
pub fn is_held_out(name: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 2 == 1
}

impl Corpus {
    /// The files for which `keep(name)` holds.
    pub fn subset(&self, keep: impl Fn(&str) -> bool) -> Corpus {
        Corpus {
            files: self
                .files
                .iter()
                .filter(|f| keep(&f.series.name))
                .cloned()
                .collect(),
        }
    }
}
