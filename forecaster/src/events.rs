//! Known events (a calendar of matches, releases, sales...) as forecast inputs.
//!
//! A [`Calendar`] is read from `events.csv` (`name,start,end,category`) or
//! from TOML (`[[event]]` tables, optionally recurring with `every` and
//! `until`); every error names the file, the 1-based line and the field.
//! Events may overlap.
//!
//! **What is learnt.** [`EventGrid`] places the calendar on a series' grid:
//! each occurrence covers the steps from [`EventConfig::pre_ms`] before its
//! start (the ramp) to [`EventConfig::post_ms`] after its end (the
//! aftermath), and a step's *offset* is its distance in steps from the step
//! holding the start. The event profile ([`EventModel`]) says, per category
//! and offset, how far the series deviates from what the selected base model
//! forecast there: multiplicatively (`actual / forecast − 1`) or additively
//! (`actual − forecast`, in units of the series' MASE scale). The deviations
//! are those of the base model's own validation forecasts in the selection
//! ([`crate::select`]): the base model is what the profile will be applied
//! on, so its errors are what the profile must correct (a seasonal model
//! that already repeats a daily event leaves little to learn). Each
//! occurrence counts once per offset; a category's mean deviation is shrunk
//! towards the mean of all categories with weight `n / (n + SHRINK)` for `n`
//! occurrences, and that pooled mean towards zero the same way, so a
//! category seen once (a final) borrows from the others and an effect seen
//! in no occurrence is zero.
//!
//! **When it is used.** The selection scores the base combination with and
//! without the profile on its validation origins, the profile for each
//! origin learnt from the other origins only (leave-one-origin-out), and
//! keeps it per horizon band only when it passes the same test as any
//! challenger (≥ 3 % better and ≥ 1 standard error in per-origin log error
//! ratio). Both modes are tried; the one convincing on more bands (then the
//! lower error) is kept.
//!
//! **Events at the same hour most days.** When events recur at a fixed time
//! of day (a tournament's evening matches), the base models learn their surge
//! as daily season and forecast it on the days without one. The selection
//! therefore also tries the base models fitted on the series with the events
//! removed ([`EventGrid::without_events`]: covered steps take the value one
//! season earlier at the current level), with the profile, learnt against the actual series, carrying
//! the whole effect ([`EventModel::base_without_events`]); that variant is
//! kept only when it is a convincing challenger (the same test) to the
//! variant above on all validated steps.
//!
//! **How it is applied.** At a forecast step covered by occurrences, the
//! effects of the occurrences of one category are averaged and those of
//! different categories combined (product of `1 + effect` multiplicatively,
//! sum additively).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::parse_timestamp;

/// Category of events given without one.
pub const DEFAULT_CATEGORY: &str = "event";
/// Pseudo-count of the shrinkage (see the module docs).
pub const SHRINK: f64 = 2.0;
/// Most occurrences one calendar may expand to (recurrences included).
pub const MAX_OCCURRENCES: usize = 100_000;
/// Multiplicative deviations are clamped to `[-1, MAX_RATIO]` before averaging
/// (a forecast near zero would otherwise dominate the mean).
pub const MAX_RATIO: f64 = 20.0;

/// One occurrence of a scheduled event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Name (free text).
    pub name: String,
    /// Start, unix milliseconds UTC.
    pub start_ms: i64,
    /// End, unix milliseconds UTC (`>= start_ms`).
    pub end_ms: i64,
    /// Category: occurrences of one category share an effect.
    pub category: String,
}

/// A calendar of events (recurrences expanded), in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    /// The occurrences.
    pub events: Vec<Event>,
}

/// Why a calendar could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A field of one event is wrong.
    #[error("{path}: line {line}, field `{field}`: {message}")]
    Field {
        /// File.
        path: PathBuf,
        /// Line (1-based).
        line: usize,
        /// Column or key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A line is wrong as a whole (wrong number of fields, TOML syntax).
    #[error("{path}: line {line}: {message}")]
    Line {
        /// File.
        path: PathBuf,
        /// Line (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl Calendar {
    /// Read a calendar: TOML when the file name ends in `.toml`, CSV otherwise.
    pub fn load(path: &Path) -> Result<Calendar, EventsError> {
        let text = std::fs::read_to_string(path).map_err(|source| EventsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        {
            Calendar::from_toml(path, &text)
        } else {
            Calendar::from_csv(path, &text)
        }
    }

    /// Parse `events.csv`: a header naming `name`, `start`, `end` and
    /// optionally `category` (any order), then one event per line. Lines
    /// starting with `#` and blank lines are skipped; fields may be quoted
    /// with `"` (`""` inside quotes is a quote). `path` names the source in errors.
    pub fn from_csv(path: &Path, text: &str) -> Result<Calendar, EventsError> {
        let line_err = |line: usize, message: String| EventsError::Line {
            path: path.to_path_buf(),
            line,
            message,
        };
        let field_err = |line: usize, field: &str, message: String| EventsError::Field {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            message,
        };
        let mut rows = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let Some((hline, header)) = rows.next() else {
            return Err(line_err(
                1,
                "no header: expected `name,start,end[,category]`".into(),
            ));
        };
        let columns = split_csv(header).map_err(|m| line_err(hline, m.into()))?;
        let mut idx: [Option<usize>; 4] = [None; 4];
        const NAMES: [&str; 4] = ["name", "start", "end", "category"];
        for (i, c) in columns.iter().enumerate() {
            let c = c.trim().to_ascii_lowercase();
            match NAMES.iter().position(|n| *n == c) {
                Some(k) if idx[k].is_some() => {
                    return Err(field_err(hline, &c, "column appears twice".into()));
                }
                Some(k) => idx[k] = Some(i),
                None => {
                    return Err(field_err(
                        hline,
                        &c,
                        "unknown column (expected name, start, end and optionally category)".into(),
                    ));
                }
            }
        }
        for (k, n) in NAMES.iter().enumerate().take(3) {
            if idx[k].is_none() {
                return Err(field_err(hline, n, "required column is missing".into()));
            }
        }
        let mut events = Vec::new();
        for (line, row) in rows {
            let fields = split_csv(row).map_err(|m| line_err(line, m.into()))?;
            if fields.len() != columns.len() {
                return Err(line_err(
                    line,
                    format!("{} fields, the header has {}", fields.len(), columns.len()),
                ));
            }
            let get = |k: usize| idx[k].map(|i| fields[i].trim());
            let name = get(0).unwrap_or_default();
            let start = get(1).unwrap_or_default();
            let end = get(2).unwrap_or_default();
            let category = get(3).unwrap_or_default();
            events.push(make_event(name, start, end, category, |f, m| {
                field_err(line, f, m)
            })?);
            check_count(events.len(), |m| line_err(line, m))?;
        }
        Ok(Calendar { events })
    }

    /// Parse the TOML form:
    ///
    /// ```toml
    /// [[event]]
    /// name = "weekly release"
    /// start = "2024-01-02T10:00:00Z"   # or an unquoted TOML datetime
    /// end = "2024-01-02T11:00:00Z"
    /// category = "release"             # optional
    /// every = "7d"                     # optional: s, m, h, d or w
    /// until = "2024-06-30T00:00:00Z"   # required with `every`: last start
    /// ```
    pub fn from_toml(path: &Path, text: &str) -> Result<Calendar, EventsError> {
        use toml::Spanned;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            event: Vec<Spanned<Entry>>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            name: Spanned<String>,
            start: Spanned<toml::Value>,
            end: Spanned<toml::Value>,
            category: Option<Spanned<String>>,
            every: Option<Spanned<String>>,
            until: Option<Spanned<toml::Value>>,
        }
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let file: File = toml::from_str(text).map_err(|e| EventsError::Line {
            path: path.to_path_buf(),
            line: e.span().map_or(1, |s| line_of(s.start)),
            message: e.message().to_string(),
        })?;
        let field_err = |line: usize, field: &str, message: String| EventsError::Field {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            message,
        };
        let as_text = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Datetime(d) => Some(d.to_string()),
            _ => None,
        };
        let mut events = Vec::new();
        for entry in &file.event {
            let e = entry.get_ref();
            let text_of = |field: &str, v: &Spanned<toml::Value>| {
                as_text(v.get_ref()).ok_or_else(|| {
                    field_err(
                        line_of(v.span().start),
                        field,
                        "expected a timestamp (string or TOML datetime)".into(),
                    )
                })
            };
            let start = text_of("start", &e.start)?;
            let end = text_of("end", &e.end)?;
            let start_line = line_of(e.start.span().start);
            let end_line = line_of(e.end.span().start);
            let category = e.category.as_ref().map(|c| c.get_ref().as_str());
            let first = make_event(
                e.name.get_ref(),
                &start,
                &end,
                category.unwrap_or_default(),
                |f, m| {
                    let line = match f {
                        "start" => start_line,
                        "end" => end_line,
                        _ => line_of(entry.span().start),
                    };
                    field_err(line, f, m)
                },
            )?;
            match (&e.every, &e.until) {
                (None, None) => {
                    events.push(first);
                    check_count(events.len(), |m| {
                        field_err(line_of(entry.span().start), "event", m)
                    })?;
                }
                (Some(every), until) => {
                    let every_line = line_of(every.span().start);
                    let step = parse_duration_ms(every.get_ref())
                        .map_err(|e| field_err(every_line, "every", e.0))?;
                    let Some(until) = until else {
                        return Err(field_err(
                            every_line,
                            "until",
                            "`every` needs `until` (the last start of the recurrence)".into(),
                        ));
                    };
                    let until_line = line_of(until.span().start);
                    let until_text = text_of("until", until)?;
                    let until_ms = parse_timestamp(&until_text)
                        .map_err(|err| field_err(until_line, "until", err.to_string()))?;
                    if until_ms < first.start_ms {
                        return Err(field_err(
                            until_line,
                            "until",
                            format!("`{until_text}` is before the first start `{start}`"),
                        ));
                    }
                    push_recurrence(&mut events, &first, step, until_ms, |m| {
                        field_err(every_line, "every", m)
                    })?;
                }
                (None, Some(until)) => {
                    return Err(field_err(
                        line_of(until.span().start),
                        "until",
                        "`until` without `every`".into(),
                    ));
                }
            }
        }
        Ok(Calendar { events })
    }

    /// The categories, sorted.
    pub fn categories(&self) -> Vec<String> {
        let mut v: Vec<String> = self.events.iter().map(|e| e.category.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Whether any event overlaps the UTC calendar day holding `ms`.
    pub fn touches_day(&self, ms: i64) -> bool {
        const DAY: i64 = 86_400_000;
        let d0 = ms.div_euclid(DAY) * DAY;
        let d1 = d0 + DAY;
        self.events
            .iter()
            .any(|e| e.start_ms < d1 && e.end_ms >= d0)
    }
}

/// Push the occurrences of `first` every `step` ms up to the last start `until_ms`;
/// `err` names the `every` field of the entry.
fn push_recurrence(
    events: &mut Vec<Event>,
    first: &Event,
    step: i64,
    until_ms: i64,
    err: impl Fn(String) -> EventsError,
) -> Result<(), EventsError> {
    let mut k: i64 = 0;
    loop {
        let shift = k
            .checked_mul(step)
            .ok_or_else(|| err("recurrence overflows".into()))?;
        let s = first.start_ms.saturating_add(shift);
        if s > until_ms {
            break;
        }
        events.push(Event {
            name: first.name.clone(),
            start_ms: s,
            end_ms: first.end_ms.saturating_add(shift),
            category: first.category.clone(),
        });
        check_count(events.len(), &err)?;
        k += 1;
    }
    Ok(())
}

fn check_count(n: usize, err: impl Fn(String) -> EventsError) -> Result<(), EventsError> {
    if n > MAX_OCCURRENCES {
        Err(err(format!(
            "the calendar expands to more than {MAX_OCCURRENCES} occurrences"
        )))
    } else {
        Ok(())
    }
}

/// Build one event from its text fields; `err(field, message)` makes the error.
fn make_event(
    name: &str,
    start: &str,
    end: &str,
    category: &str,
    err: impl Fn(&str, String) -> EventsError,
) -> Result<Event, EventsError> {
    if name.trim().is_empty() {
        return Err(err("name", "empty name".into()));
    }
    let start_ms = parse_timestamp(start).map_err(|e| err("start", e.to_string()))?;
    let end_ms = parse_timestamp(end).map_err(|e| err("end", e.to_string()))?;
    if end_ms < start_ms {
        return Err(err("end", format!("`{end}` is before start `{start}`")));
    }
    let category = category.trim();
    Ok(Event {
        name: name.trim().to_string(),
        start_ms,
        end_ms,
        category: if category.is_empty() {
            DEFAULT_CATEGORY.to_string()
        } else {
            category.to_string()
        },
    })
}

/// A duration that [`parse_duration_ms`] refused; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(pub String);

/// `90s`, `15m`, `2h`, `7d`, `1w` (a positive integer and a unit) in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, DurationError> {
    let s = s.trim();
    let bad = || {
        DurationError(format!(
            "`{s}` is not a duration: expected e.g. `90s`, `15m`, `2h`, `7d` or `1w`"
        ))
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_ms: i64 = match unit.trim() {
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(DurationError(format!(
            "`{s}`: the duration must be positive"
        )));
    }
    n.checked_mul(unit_ms).ok_or_else(bad)
}

/// Split one CSV line (quotes with `""` escapes).
fn split_csv(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field");
    }
    out.push(cur);
    Ok(out)
}

/// How a calendar is placed on a grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConfig {
    /// The ramp before each start that belongs to the event (ms).
    pub pre_ms: i64,
    /// The aftermath after each end that belongs to the event (ms).
    pub post_ms: i64,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            pre_ms: 3_600_000,
            post_ms: 2 * 3_600_000,
        }
    }
}

/// One occurrence on a grid (indices relative to the grid's first step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placed {
    category: usize,
    /// Step holding the start.
    start: i64,
    /// Step holding the end.
    end: i64,
}

/// A calendar placed on a regular grid (`t0_ms + i·interval_ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct EventGrid {
    /// Category names; [`Placed::category`] indexes them.
    categories: Vec<String>,
    occurrences: Vec<Placed>,
    pre: i64,
    post: i64,
    interval_ms: i64,
    config: EventConfig,
}

/// Steps covering `ms` (at least one when `ms > 0`).
fn steps_ceil(ms: i64, dt: i64) -> i64 {
    if ms <= 0 { 0 } else { (ms + dt - 1) / dt }
}

impl EventGrid {
    /// Place `calendar` on the grid starting at `t0_ms` with step `interval_ms`.
    pub fn new(calendar: &Calendar, t0_ms: i64, interval_ms: i64, cfg: EventConfig) -> EventGrid {
        let dt = interval_ms.max(1);
        let categories = calendar.categories();
        let mut occurrences: Vec<Placed> = calendar
            .events
            .iter()
            .map(|e| {
                let start = (e.start_ms - t0_ms).div_euclid(dt);
                // An end exactly on a step boundary belongs to the step before.
                let end_ms = if e.end_ms > e.start_ms {
                    e.end_ms - 1
                } else {
                    e.end_ms
                };
                let end = (end_ms - t0_ms).div_euclid(dt).max(start);
                Placed {
                    category: categories.binary_search(&e.category).unwrap_or(0),
                    start,
                    end,
                }
            })
            .collect();
        occurrences.sort_by_key(|p| (p.start, p.end, p.category));
        EventGrid {
            categories,
            occurrences,
            pre: steps_ceil(cfg.pre_ms, dt),
            post: steps_ceil(cfg.post_ms, dt),
            interval_ms: dt,
            config: cfg,
        }
    }

    /// Grid step (ms).
    pub fn interval_ms(&self) -> i64 {
        self.interval_ms
    }

    /// How the calendar was placed.
    pub fn config(&self) -> EventConfig {
        self.config
    }

    /// Steps before the start that belong to an event.
    pub fn pre_steps(&self) -> usize {
        self.pre as usize
    }

    /// Steps after the end that belong to an event.
    pub fn post_steps(&self) -> usize {
        self.post as usize
    }

    /// Category names.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// Number of occurrences.
    pub fn len(&self) -> usize {
        self.occurrences.len()
    }

    /// Whether the calendar is empty.
    pub fn is_empty(&self) -> bool {
        self.occurrences.is_empty()
    }

    /// Call `f(occurrence, category, offset)` for every occurrence covering step `t`
    /// (offset = steps since the step holding its start; negative on the ramp).
    pub fn for_each_active(&self, t: usize, mut f: impl FnMut(usize, usize, i64)) {
        let t = t as i64;
        // Occurrences are sorted by start; those starting after t + pre cannot cover t.
        let hi = self
            .occurrences
            .partition_point(|p| p.start - self.pre <= t);
        for (i, p) in self.occurrences[..hi].iter().enumerate() {
            if t <= p.end + self.post {
                f(i, p.category, t - p.start);
            }
        }
    }

    /// Whether any occurrence covers step `t`.
    pub fn covers(&self, t: usize) -> bool {
        let mut any = false;
        self.for_each_active(t, |_, _, _| any = true);
        any
    }

    /// `y` (step 0 = the grid's step 0) with the steps any occurrence covers
    /// (ramp and aftermath included) replaced by what the series would have
    /// done without the events: with a season `p ≥ 2` and a full season
    /// before the run, the value at the same phase in the last season before
    /// the run (itself already replaced if it was covered) times the ratio of
    /// the last uncovered value to its own value one season earlier
    /// (seasonal naive at the current level); otherwise the last uncovered
    /// value, held. A model fitted on the result
    /// learns no surge. Causal: `without_events(&y[..k], p)` is the first `k`
    /// values of `without_events(y, p)`. Steps covered from step 0 on keep
    /// their values (there is nothing before them to go by).
    pub fn without_events(&self, y: &[f64], p: usize) -> Vec<f64> {
        let n = y.len() as i64;
        let mut covered = vec![false; y.len()];
        for o in &self.occurrences {
            let a = (o.start - self.pre).max(0);
            let b = (o.end + self.post).min(n - 1);
            for t in a..=b {
                covered[t as usize] = true;
            }
        }
        let mut out = y.to_vec();
        // The last uncovered step before the current run.
        let mut last: Option<usize> = None;
        for t in 0..out.len() {
            if !covered[t] {
                last = Some(t);
                continue;
            }
            let Some(l) = last else { continue };
            // The same phase of the season in the last uncovered stretch
            // (at or before `l`), so that a long run does not compound.
            let j = (p >= 2 && l >= p).then(|| t - (t - l).div_ceil(p) * p);
            out[t] = match j {
                Some(j) if out[l - p] > 0.0 && out[l] >= 0.0 && out[j] >= 0.0 => {
                    out[j] * (out[l] / out[l - p]).min(MAX_RATIO)
                }
                _ => out[l],
            };
        }
        out
    }
}

/// Multiplicative or additive event effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventMode {
    /// `forecast · (1 + effect)`.
    Multiplicative,
    /// `forecast + effect · scale` (scale: the series' MASE scale).
    Additive,
}

/// The learnt effect of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryProfile {
    /// Category name.
    pub category: String,
    /// Effect per offset, from `-pre_steps` (index 0) onwards (shrunk).
    pub effect: Vec<f64>,
    /// Occurrences behind each offset's effect.
    pub occurrences: Vec<usize>,
}

/// The event component of a selection: learnt profile per category and how
/// it is applied (what artifacts store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventModel {
    /// Multiplicative or additive.
    pub mode: EventMode,
    /// Grid step the profile was learnt at (ms).
    pub interval_ms: i64,
    /// How the calendar is placed on the grid.
    pub config: EventConfig,
    /// Steps of ramp before each start (index 0 of every profile).
    pub pre_steps: usize,
    /// One profile per category seen in the calendar.
    pub profiles: Vec<CategoryProfile>,
    /// The base models are fitted on the series with the events removed
    /// ([`EventGrid::without_events`]) and the profile carries the whole
    /// event effect; `false` (and in artifacts written before it existed):
    /// fitted on the series as it is, the profile corrects what they miss.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base_without_events: bool,
}

/// One deviation of the series from the base forecast during an event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Which validation origin produced it.
    pub origin: usize,
    /// Occurrence index in the grid.
    pub occurrence: usize,
    /// Category index in the grid.
    pub category: usize,
    /// Offset from the start (steps).
    pub offset: i64,
    /// `actual / forecast - 1`, clamped.
    pub ratio: f64,
    /// `(actual - forecast) / scale`.
    pub scaled_diff: f64,
}

impl EventModel {
    /// Learn the profile from `samples`, leaving out those of origin `skip`.
    pub(crate) fn learn(
        grid: &EventGrid,
        samples: &[Sample],
        skip: Option<usize>,
        mode: EventMode,
    ) -> EventModel {
        let pre = grid.pre;
        // Per (category, offset index): per occurrence sum and count.
        let mut per_occ: BTreeMap<(usize, usize, usize), (f64, usize)> = BTreeMap::new();
        for s in samples.iter().filter(|s| Some(s.origin) != skip) {
            let Ok(k) = usize::try_from(s.offset + pre) else {
                continue;
            };
            let v = match mode {
                EventMode::Multiplicative => s.ratio,
                EventMode::Additive => s.scaled_diff,
            };
            if !v.is_finite() {
                continue;
            }
            let slot = per_occ.entry((s.category, k, s.occurrence)).or_default();
            slot.0 += v;
            slot.1 += 1;
        }
        // Per (category, k): sum of occurrence means and count; pooled per k.
        let ncat = grid.categories.len();
        let mut cat: Vec<BTreeMap<usize, (f64, usize)>> = vec![BTreeMap::new(); ncat];
        let mut pooled: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
        for (&(c, k, _), &(sum, n)) in &per_occ {
            let m = sum / n as f64;
            let e = cat[c].entry(k).or_default();
            e.0 += m;
            e.1 += 1;
            let p = pooled.entry(k).or_default();
            p.0 += m;
            p.1 += 1;
        }
        let shrunk = |(sum, n): (f64, usize), prior: f64| {
            let n = n as f64;
            let w = n / (n + SHRINK);
            w * (sum / n.max(1.0)) + (1.0 - w) * prior
        };
        // Profile length per category: the longest occurrence plus ramp and aftermath.
        let mut len = vec![0usize; ncat];
        for p in &grid.occurrences {
            let l = (p.end - p.start + 1 + pre + grid.post).max(0) as usize;
            len[p.category] = len[p.category].max(l);
        }
        let profiles = grid
            .categories
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let mut effect = Vec::with_capacity(len[c]);
                let mut occurrences = Vec::with_capacity(len[c]);
                for k in 0..len[c] {
                    let prior = pooled.get(&k).map_or(0.0, |&p| shrunk(p, 0.0));
                    let (e, n) = match cat[c].get(&k) {
                        Some(&s) => (shrunk(s, prior), s.1),
                        None => (prior, 0),
                    };
                    effect.push((e * 1e6).round() / 1e6);
                    occurrences.push(n);
                }
                CategoryProfile {
                    category: name.clone(),
                    effect,
                    occurrences,
                }
            })
            .collect();
        EventModel {
            mode,
            interval_ms: grid.interval_ms,
            config: grid.config,
            pre_steps: pre as usize,
            profiles,
            base_without_events: false,
        }
    }

    /// The combined effect at step `t` of `grid` (placed with this model's
    /// config and interval): `None` when no occurrence covers `t`.
    pub fn effect_at(&self, grid: &EventGrid, t: usize) -> Option<f64> {
        let mut per_cat: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
        grid.for_each_active(t, |_, c, off| {
            let k = off + self.pre_steps as i64;
            let e = usize::try_from(k).ok().and_then(|k| {
                let name = grid.categories.get(c)?;
                let prof = self.profiles.iter().find(|p| &p.category == name)?;
                prof.effect.get(k).copied()
            });
            let slot = per_cat.entry(c).or_default();
            slot.0 += e.unwrap_or(0.0);
            slot.1 += 1;
        });
        if per_cat.is_empty() {
            return None;
        }
        let means = per_cat.values().map(|&(s, n)| s / n as f64);
        Some(match self.mode {
            EventMode::Multiplicative => means.fold(1.0, |acc, e| acc * (1.0 + e)) - 1.0,
            EventMode::Additive => means.sum::<f64>(),
        })
    }

    /// Apply the profile to a forecast value at step `t` of `grid`; `scale`
    /// is the MASE scale of the data the forecast was made from.
    pub fn apply(&self, grid: &EventGrid, t: usize, value: f64, scale: f64) -> f64 {
        match self.effect_at(grid, t) {
            None => value,
            Some(e) => match self.mode {
                EventMode::Multiplicative => value * (1.0 + e).max(0.0),
                EventMode::Additive => value + e * scale,
            },
        }
    }

    /// One line for reports: mode, categories, occurrences and peak effect.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .profiles
            .iter()
            .map(|p| {
                let n = p.occurrences.iter().copied().max().unwrap_or(0);
                let peak = p
                    .effect
                    .iter()
                    .copied()
                    .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                    .unwrap_or(0.0);
                match self.mode {
                    EventMode::Multiplicative => {
                        format!("{} (n={n}, peak {:+.0}%)", p.category, 100.0 * peak)
                    }
                    EventMode::Additive => {
                        format!("{} (n={n}, peak {peak:+.2} x scale)", p.category)
                    }
                }
            })
            .collect();
        let mode = match self.mode {
            EventMode::Multiplicative => "multiplicative",
            EventMode::Additive => "additive",
        };
        format!("{mode}: {}", parts.join(", "))
    }
}

/// Mean absolute scaled error of backtest forecasts split by whether the
/// target step falls on a UTC day touched by an event: `(event days,
/// other days)`, each `(MASE, steps)`, for steps `1..=horizon` of `model`.
/// `scale_at(origin)` is the MASE scale of the data before `origin`,
/// `ts_at(index)` the timestamp of a series index.
pub fn split_by_event_days(
    records: &[crate::backtest::ForecastRecord],
    model: &str,
    horizon: usize,
    calendar: &Calendar,
    scale_at: impl Fn(usize) -> f64,
    ts_at: impl Fn(usize) -> i64,
) -> ((f64, usize), (f64, usize)) {
    let mut acc = [(0.0f64, 0usize); 2];
    let mut scales: BTreeMap<usize, f64> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.model == model && r.step <= horizon)
    {
        let scale = *scales.entry(r.origin).or_insert_with(|| scale_at(r.origin));
        let idx = r.origin + r.step - 1;
        let class = usize::from(!calendar.touches_day(ts_at(idx)));
        acc[class].0 += (r.actual - r.yhat).abs() / scale;
        acc[class].1 += 1;
    }
    let m = |(s, n): (f64, usize)| (if n > 0 { s / n as f64 } else { f64::NAN }, n);
    (m(acc[0]), m(acc[1]))
}
