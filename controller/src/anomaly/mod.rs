//! Streaming anomaly detection in `aya serve`: one
//! [`Detector`](aya_forecaster::anomaly::Detector) per ingested series,
//! fed every accepted sample once, in timestamp order, by the ingest writer
//! after its group is committed.
//!
//! - A series (cluster, backend, metric, kind, labels; the cluster-level
//!   demand series too) gets a detector with its first accepted sample, as
//!   long as fewer than `[anomaly] max_detectors` are live. Series the
//!   series limits refuse are never accepted, so never get one. Gauges are
//!   scored on their value, counters and deltas on the rate they imply.
//! - An anomaly *opens* when a score reaches `[anomaly] threshold` and
//!   *closes* once the scores have stayed below it for `quiet_seconds` of the
//!   series' own time (sample timestamps): the [`Watch`] state machine. A
//!   series that stops reporting keeps its anomaly open.
//! - Each cluster keeps its open anomalies (on their series) and the last
//!   `closed_per_cluster` closed ones; a deleted cluster or backend drops its
//!   detectors and anomalies.
//! - `/metrics` shows `aya_anomaly_score{cluster,backend,metric}`,
//!   `aya_anomalies_open{cluster}`, `aya_anomalies_opened_total{cluster,metric}`,
//!   `aya_anomaly_detectors` and `aya_anomaly_series_untracked_total`
//!   ([`Anomalies::render`]); `AdminService.ListAnomalies` lists them.
//!
//! The anomaly signal is reported only: the control loop does not read it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use aya_forecaster::anomaly::detector::Reason;
use aya_forecaster::anomaly::{Detector, DetectorConfig, Score};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::store::SeriesKey;

pub mod webhook;

use webhook::Webhook;

/// `[anomaly]` in `aya.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Run the detectors (false: no detector, no anomaly metrics).
    pub enabled: bool,
    /// Score at or above which an anomaly opens, in (0, 1]. 0.5 is an anomaly
    /// likelihood of 1 − 1e-5 (the value `aya anomalies --threshold` is shown with).
    pub threshold: f64,
    /// Seconds of series time the scores must stay below `threshold` before
    /// an open anomaly closes (0: at the first score below it).
    pub quiet_seconds: f64,
    /// Live detectors at most; a new series beyond it gets none (counted).
    /// Each holds ≈ 16 × `history` bytes plus its sequence memory.
    pub max_detectors: usize,
    /// Closed anomalies kept per cluster (the oldest are dropped).
    pub closed_per_cluster: usize,
    /// History of each detector's anomaly likelihood, in points (the
    /// detector's default, 8640, is Numenta's).
    pub history: usize,
    /// `http://…` address to `POST` a JSON event to when an anomaly opens and
    /// when it closes; empty: no webhook ([`webhook`]).
    pub webhook_url: String,
    /// Events waiting for the webhook at most; beyond it new ones are dropped (counted).
    pub webhook_queue: usize,
    /// Timeout of one webhook post, seconds.
    pub webhook_timeout_seconds: f64,
    /// At start, the detectors replay this many seconds of the stored
    /// samples before `now` (0: every series learns again from its next
    /// samples). Bounded by what the store still holds.
    pub warm_start_seconds: f64,
    /// Retries of a webhook post that failed with a transport error, a
    /// timeout, 429 or a 5xx answer (other answers are not retried), after
    /// 0.5 s, 1 s, 2 s, … (at most 8 s apart).
    pub webhook_retries: u32,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            enabled: true,
            threshold: 0.5,
            quiet_seconds: 300.0,
            max_detectors: 1000,
            closed_per_cluster: 100,
            history: DetectorConfig::default().history,
            webhook_url: String::new(),
            webhook_queue: 1024,
            webhook_timeout_seconds: 5.0,
            webhook_retries: 3,
            warm_start_seconds: 3600.0,
        }
    }
}

/// Largest `[anomaly] max_detectors`.
pub const MAX_DETECTORS: usize = 1_000_000;
/// Largest `[anomaly] closed_per_cluster`.
pub const MAX_CLOSED: usize = 100_000;
/// Bounds of `[anomaly] history`.
pub const HISTORY: (usize, usize) = (100, 1_000_000);
/// Largest `[anomaly] quiet_seconds` (30 days).
pub const MAX_QUIET_SECONDS: f64 = 30.0 * 86_400.0;
/// Largest `[anomaly] webhook_queue`.
pub const MAX_WEBHOOK_QUEUE: usize = 1_000_000;
/// Largest `[anomaly] warm_start_seconds` (7 days).
pub const MAX_WARM_START_SECONDS: f64 = 7.0 * 86_400.0;
/// Largest `[anomaly] webhook_retries`.
pub const MAX_WEBHOOK_RETRIES: u32 = 10;
/// Bounds of `[anomaly] webhook_timeout_seconds`.
pub const WEBHOOK_TIMEOUT_SECONDS: (f64, f64) = (0.01, 60.0);

impl AnomalyConfig {
    /// Check the values; the error names the field (relative to `[anomaly]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold <= 1.0) {
            return err(
                "threshold",
                format!(
                    "{} is out of range: must be a score in (0, 1]",
                    self.threshold
                ),
            );
        }
        if !(self.quiet_seconds.is_finite()
            && (0.0..=MAX_QUIET_SECONDS).contains(&self.quiet_seconds))
        {
            return err(
                "quiet_seconds",
                format!(
                    "{} is out of range: must be a number of seconds in [0, {MAX_QUIET_SECONDS}]",
                    self.quiet_seconds
                ),
            );
        }
        for (field, v, lo, hi) in [
            ("max_detectors", self.max_detectors, 1, MAX_DETECTORS),
            ("closed_per_cluster", self.closed_per_cluster, 0, MAX_CLOSED),
            ("history", self.history, HISTORY.0, HISTORY.1),
            ("webhook_queue", self.webhook_queue, 1, MAX_WEBHOOK_QUEUE),
        ] {
            if !(lo..=hi).contains(&v) {
                return err(
                    field,
                    format!("{v} is out of range: must be in {lo}..={hi}"),
                );
            }
        }
        if !(self.warm_start_seconds.is_finite()
            && (0.0..=MAX_WARM_START_SECONDS).contains(&self.warm_start_seconds))
        {
            return err(
                "warm_start_seconds",
                format!(
                    "{} is out of range: must be a number of seconds in [0, {MAX_WARM_START_SECONDS}]",
                    self.warm_start_seconds
                ),
            );
        }
        if self.webhook_retries > MAX_WEBHOOK_RETRIES {
            return err(
                "webhook_retries",
                format!(
                    "{} is out of range: must be in 0..={MAX_WEBHOOK_RETRIES}",
                    self.webhook_retries
                ),
            );
        }
        let (lo, hi) = WEBHOOK_TIMEOUT_SECONDS;
        let t = self.webhook_timeout_seconds;
        if !(t.is_finite() && (lo..=hi).contains(&t)) {
            return err(
                "webhook_timeout_seconds",
                format!("{t} is out of range: must be a number of seconds in [{lo}, {hi}]"),
            );
        }
        if !self.webhook_url.is_empty() {
            webhook::check_url(&self.webhook_url).map_err(|m| ("webhook_url".to_string(), m))?;
        }
        Ok(())
    }
}

/// One anomaly of one series: from the score that reached the threshold to
/// the end of the quiet period that closed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// Timestamp of the sample whose score opened it (ms).
    pub opened_at_ms: i64,
    /// Timestamp of the sample that closed it; `None` while open.
    pub closed_at_ms: Option<i64>,
    /// Timestamp of the latest sample scored while open.
    pub last_ms: i64,
    /// Latest score.
    pub last_score: f64,
    /// Highest score while open.
    pub peak_score: f64,
    /// Timestamp of the peak.
    pub peak_at_ms: i64,
    /// The scored value at the peak (the rate for counters and deltas).
    pub value: f64,
    /// The detector's explanation of the peak score.
    pub explanation: String,
    /// The short reason of the peak score (`new_high`, `deviation`, … see [`reason_name`]).
    pub reason: &'static str,
    /// Why it closed: `"quiet"` (the scores stayed below the threshold for
    /// `quiet_seconds`) or `"stale"` (the series stopped reporting); `None`
    /// while open.
    pub closed_by: Option<&'static str>,
}

/// Snake-case name of a score's reason (the `reason` label of `aya_anomaly_peak_score`).
pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::Warmup => "warmup",
        Reason::Normal => "normal",
        Reason::UnusualSequence => "unusual_sequence",
        Reason::Deviation => "deviation",
        Reason::NewHigh => "new_high",
        Reason::NewLow => "new_low",
    }
}

/// What one score did to a series' anomaly.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Nothing opened or closed.
    None,
    /// An anomaly opened.
    Opened,
    /// The open anomaly closed; here it is.
    Closed(Episode),
}

/// The open/close state machine of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    /// The open anomaly.
    pub open: Option<Episode>,
    /// Since when (series time, ms) the scores have been below the threshold
    /// while an anomaly is open.
    below_since: Option<i64>,
}

impl Watch {
    /// Apply the score of the sample at `ts_ms` (scored value `value`).
    pub fn step(
        &mut self,
        ts_ms: i64,
        value: f64,
        score: &Score,
        threshold: f64,
        quiet_ms: i64,
    ) -> Transition {
        let above = score.value >= threshold;
        let Some(ep) = self.open.as_mut() else {
            if !above {
                return Transition::None;
            }
            self.open = Some(Episode {
                opened_at_ms: ts_ms,
                closed_at_ms: None,
                last_ms: ts_ms,
                last_score: score.value,
                peak_score: score.value,
                peak_at_ms: ts_ms,
                value,
                explanation: score.explanation(),
                reason: reason_name(score.reason),
                closed_by: None,
            });
            self.below_since = None;
            return Transition::Opened;
        };
        ep.last_ms = ts_ms;
        ep.last_score = score.value;
        if score.value > ep.peak_score {
            ep.peak_score = score.value;
            ep.peak_at_ms = ts_ms;
            ep.value = value;
            ep.explanation = score.explanation();
            ep.reason = reason_name(score.reason);
        }
        if above {
            self.below_since = None;
            return Transition::None;
        }
        let since = *self.below_since.get_or_insert(ts_ms);
        if ts_ms.saturating_sub(since) < quiet_ms {
            return Transition::None;
        }
        self.below_since = None;
        match self.open.take() {
            Some(mut ep) => {
                ep.closed_at_ms = Some(ts_ms);
                ep.closed_by = Some("quiet");
                Transition::Closed(ep)
            }
            None => Transition::None,
        }
    }
}

/// An anomaly with the series it belongs to (what `ListAnomalies` returns).
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// Cluster.
    pub cluster: String,
    /// Backend (empty: the cluster's own demand series).
    pub backend: String,
    /// Metric name.
    pub metric: String,
    /// Labels of the series.
    pub labels: BTreeMap<String, String>,
    /// The episode.
    pub episode: Episode,
}

/// A detector and what it has said about its series.
#[derive(Debug)]
struct Tracked {
    key: SeriesKey,
    /// `metric` label of the score gauge: the metric name, with the series'
    /// labels appended as `{k=v,…}` when it has any.
    metric_label: String,
    detector: Detector,
    last_ms: i64,
    last_score: f64,
    watch: Watch,
}

/// A series' slot (indexed by the ingest series id).
#[derive(Debug, Default)]
enum Slot {
    /// Never seen (or its detector was dropped).
    #[default]
    Empty,
    /// Seen while `max_detectors` were live: no detector (retried when one frees).
    Untracked,
    /// Scored.
    Tracked(Box<Tracked>),
}

/// Per-cluster record.
#[derive(Debug, Default)]
struct ClusterLog {
    open: usize,
    closed: VecDeque<Anomaly>,
    /// metric → anomalies opened.
    opened_total: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Tracker {
    slots: Vec<Slot>,
    live: usize,
    untracked_total: u64,
    clusters: BTreeMap<String, ClusterLog>,
}

/// Scored value of an accepted sample: `(series id, timestamp ms, value)`.
pub type Point = (u32, i64, f64);

/// The detectors of every series and the anomalies they found.
#[derive(Debug)]
pub struct Anomalies {
    config: AnomalyConfig,
    detector: DetectorConfig,
    quiet_ms: i64,
    tracker: Mutex<Tracker>,
    webhook: Option<Webhook>,
}

fn metric_label(key: &SeriesKey) -> String {
    if key.labels.is_empty() {
        return key.metric.clone();
    }
    let labels: Vec<String> = key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}{{{}}}", key.metric, labels.join(","))
}

impl Anomalies {
    /// Detectors configured by `config` (validated), with the webhook's
    /// sender thread when `webhook_url` is set.
    pub fn start(config: &AnomalyConfig) -> std::io::Result<Anomalies> {
        let mut a = Anomalies::new(config);
        if !config.webhook_url.is_empty() {
            a.webhook = Some(Webhook::start(
                &config.webhook_url,
                config.webhook_queue,
                std::time::Duration::from_secs_f64(config.webhook_timeout_seconds),
                config.webhook_retries,
            )?);
        }
        Ok(a)
    }

    /// Detectors configured by `config` (validated), without the webhook.
    pub fn new(config: &AnomalyConfig) -> Anomalies {
        Anomalies {
            webhook: None,
            detector: DetectorConfig {
                history: config.history,
                ..DetectorConfig::default()
            },
            quiet_ms: (config.quiet_seconds * 1000.0) as i64,
            config: config.clone(),
            tracker: Mutex::new(Tracker::default()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Score the committed points of one writer group, in order. `key` names
    /// a series id (called only for a series that gets a new detector).
    pub fn observe<'k>(&self, points: &[Point], key: impl Fn(u32) -> Option<&'k SeriesKey>) {
        self.score(points, key, true);
    }

    /// Warm start after a restart: score stored points (in order) as
    /// [`observe`](Self::observe) would, so that each detector has learnt its
    /// series and an anomaly open at shutdown is open again, but send no
    /// webhook event and count nothing in `aya_anomalies_opened_total` (both
    /// happened before the restart).
    pub fn warm<'k>(&self, points: &[Point], key: impl Fn(u32) -> Option<&'k SeriesKey>) {
        self.score(points, key, false);
    }

    fn score<'k>(&self, points: &[Point], key: impl Fn(u32) -> Option<&'k SeriesKey>, live: bool) {
        if points.is_empty() {
            return;
        }
        let mut t = self.lock();
        let t = &mut *t;
        for &(id, ts, value) in points {
            let i = id as usize;
            if t.slots.len() <= i {
                t.slots.resize_with(i + 1, Slot::default);
            }
            if !matches!(t.slots[i], Slot::Tracked(_)) {
                let was_empty = matches!(t.slots[i], Slot::Empty);
                if t.live >= self.config.max_detectors {
                    if was_empty {
                        t.untracked_total += 1;
                        t.slots[i] = Slot::Untracked;
                    }
                    continue;
                }
                let Some(k) = key(id) else { continue };
                t.slots[i] = Slot::Tracked(Box::new(Tracked {
                    metric_label: metric_label(k),
                    key: k.clone(),
                    detector: Detector::new(self.detector.clone()),
                    last_ms: i64::MIN,
                    last_score: 0.0,
                    watch: Watch::default(),
                }));
                t.live += 1;
            }
            let Slot::Tracked(s) = &mut t.slots[i] else {
                continue;
            };
            if ts <= s.last_ms {
                continue;
            }
            let score = s.detector.update(ts, value);
            s.last_ms = ts;
            s.last_score = score.value;
            match s
                .watch
                .step(ts, value, &score, self.config.threshold, self.quiet_ms)
            {
                Transition::None => {}
                Transition::Opened => {
                    let log = t.clusters.entry(s.key.cluster.clone()).or_default();
                    log.open += 1;
                    if live {
                        *log.opened_total.entry(s.key.metric.clone()).or_default() += 1;
                    }
                    if let (true, Some(w), Some(ep)) = (live, &self.webhook, &s.watch.open) {
                        w.send("opened", &anomaly(&s.key, ep.clone()));
                    }
                }
                Transition::Closed(episode) => {
                    let log = t.clusters.entry(s.key.cluster.clone()).or_default();
                    log.open = log.open.saturating_sub(1);
                    let a = anomaly(&s.key, episode);
                    if let (true, Some(w)) = (live, &self.webhook) {
                        w.send("closed", &a);
                    }
                    push_closed(log, self.config.closed_per_cluster, a);
                }
            }
        }
    }

    /// Close the open anomalies of series that stopped reporting: no
    /// sample for `silence_ms` before `now_ms` (the controller calls it every
    /// tick with the larger of `quiet_seconds` and `stale_after_seconds`).
    /// A closed anomaly gets `closed_at_ms = now_ms` and `closed_by =
    /// "stale"`; the webhook receives `closed`. Returns how many closed.
    pub fn close_stale(&self, now_ms: i64, silence_ms: i64) -> usize {
        let mut t = self.lock();
        let t = &mut *t;
        let mut closed = 0;
        for slot in &mut t.slots {
            let Slot::Tracked(s) = slot else { continue };
            if s.watch.open.is_none() || now_ms.saturating_sub(s.last_ms) <= silence_ms {
                continue;
            }
            let Some(mut ep) = s.watch.open.take() else {
                continue;
            };
            ep.closed_at_ms = Some(now_ms);
            ep.closed_by = Some("stale");
            s.watch = Watch::default();
            let log = t.clusters.entry(s.key.cluster.clone()).or_default();
            log.open = log.open.saturating_sub(1);
            let a = anomaly(&s.key, ep);
            if let Some(w) = &self.webhook {
                w.send("closed", &a);
            }
            push_closed(log, self.config.closed_per_cluster, a);
            closed += 1;
        }
        closed
    }

    /// Drop the detectors and anomalies of a deleted cluster.
    pub fn forget_cluster(&self, cluster: &str) {
        let mut t = self.lock();
        t.clusters.remove(cluster);
        let mut freed = 0;
        for slot in &mut t.slots {
            let drop = match slot {
                Slot::Tracked(s) => s.key.cluster == cluster,
                _ => false,
            };
            if drop {
                *slot = Slot::Empty;
                freed += 1;
            }
        }
        t.live -= freed;
    }

    /// Drop the detectors and anomalies of the backends of `cluster` not in
    /// `backends` (removed ones). The cluster's own series (empty backend) stay.
    pub fn retain_backends(&self, cluster: &str, backends: &[&str]) {
        let mut t = self.lock();
        let t = &mut *t;
        let gone = |b: &str| !b.is_empty() && !backends.contains(&b);
        let mut freed = 0;
        for slot in &mut t.slots {
            let Slot::Tracked(s) = slot else { continue };
            if s.key.cluster != cluster || !gone(&s.key.backend) {
                continue;
            }
            if s.watch.open.is_some()
                && let Some(log) = t.clusters.get_mut(cluster)
            {
                log.open = log.open.saturating_sub(1);
            }
            *slot = Slot::Empty;
            freed += 1;
        }
        t.live -= freed;
        if let Some(log) = t.clusters.get_mut(cluster) {
            log.closed.retain(|a| !gone(&a.backend));
        }
    }

    /// The open anomalies of `cluster` (every cluster when empty), then its
    /// closed ones when `closed`, each sorted by opening time.
    pub fn list(&self, cluster: &str, closed: bool) -> (Vec<Anomaly>, Vec<Anomaly>) {
        let t = self.lock();
        let wanted = |c: &str| cluster.is_empty() || c == cluster;
        let mut open: Vec<Anomaly> = t
            .slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Tracked(s) if wanted(&s.key.cluster) => {
                    s.watch.open.as_ref().map(|ep| anomaly(&s.key, ep.clone()))
                }
                _ => None,
            })
            .collect();
        let by_time = |a: &Anomaly, b: &Anomaly| {
            (a.episode.opened_at_ms, &a.cluster, &a.backend, &a.metric).cmp(&(
                b.episode.opened_at_ms,
                &b.cluster,
                &b.backend,
                &b.metric,
            ))
        };
        open.sort_by(by_time);
        let mut done: Vec<Anomaly> = if closed {
            t.clusters
                .iter()
                .filter(|(c, _)| wanted(c))
                .flat_map(|(_, log)| log.closed.iter().cloned())
                .collect()
        } else {
            Vec::new()
        };
        done.sort_by(by_time);
        (open, done)
    }

    /// Live detectors.
    pub fn detectors(&self) -> usize {
        self.lock().live
    }

    /// The anomaly series in the OpenMetrics text format (without `# EOF`).
    pub fn render(&self) -> String {
        let mut reg = Registry::default();
        let score = Family::<SeriesLabels, Gauge<f64, AtomicU64>>::default();
        let peak = Family::<PeakLabels, Gauge<f64, AtomicU64>>::default();
        let open = Family::<ClusterLabels, Gauge>::default();
        let opened = Family::<MetricLabels, Counter>::default();
        let (live, untracked) = {
            let t = self.lock();
            for slot in &t.slots {
                if let Slot::Tracked(s) = slot {
                    score
                        .get_or_create(&SeriesLabels {
                            cluster: s.key.cluster.clone(),
                            backend: s.key.backend.clone(),
                            metric: s.metric_label.clone(),
                        })
                        .set(s.last_score);
                    if let Some(ep) = &s.watch.open {
                        peak.get_or_create(&PeakLabels {
                            cluster: s.key.cluster.clone(),
                            backend: s.key.backend.clone(),
                            metric: s.metric_label.clone(),
                            reason: ep.reason,
                        })
                        .set(ep.peak_score);
                    }
                }
            }
            for (cluster, log) in &t.clusters {
                open.get_or_create(&ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(i64::try_from(log.open).unwrap_or(i64::MAX));
                for (metric, n) in &log.opened_total {
                    opened
                        .get_or_create(&MetricLabels {
                            cluster: cluster.clone(),
                            metric: metric.clone(),
                        })
                        .inc_by(*n);
                }
            }
            (t.live, t.untracked_total)
        };
        reg.register(
            "aya_anomaly_score",
            "Latest anomaly score of each scored series, in [0, 1] (metric: name, and {labels} when the series has any)",
            score,
        );
        reg.register(
            "aya_anomaly_peak_score",
            "Peak score of each open anomaly, with the reason of that score (new_high, new_low, deviation, unusual_sequence)",
            peak,
        );
        reg.register("aya_anomalies_open", "Open anomalies of the cluster", open);
        reg.register(
            "aya_anomalies_opened",
            "Anomalies opened, by cluster and metric",
            opened,
        );
        reg.register(
            "aya_anomaly_detectors",
            "Live anomaly detectors (one per scored series; at most [anomaly] max_detectors)",
            ConstGauge::new(i64::try_from(live).unwrap_or(i64::MAX)),
        );
        reg.register(
            "aya_anomaly_series_untracked",
            "Series that found max_detectors detectors live and got none",
            ConstCounter::new(untracked),
        );
        if let Some(w) = &self.webhook {
            let c = &w.counts;
            for (name, help, n) in [
                (
                    "aya_anomaly_webhook_sent",
                    "Anomaly events posted to the webhook and answered 2xx",
                    &c.sent,
                ),
                (
                    "aya_anomaly_webhook_failed",
                    "Anomaly events whose webhook post failed (refused by a 4xx, or still failing after webhook_retries)",
                    &c.failed,
                ),
                (
                    "aya_anomaly_webhook_retries",
                    "Webhook posts retried after a transport error, timeout, 429 or 5xx",
                    &c.retried,
                ),
                (
                    "aya_anomaly_webhook_dropped",
                    "Anomaly events dropped because the webhook queue was full",
                    &c.dropped,
                ),
            ] {
                reg.register(
                    name,
                    help,
                    ConstCounter::new(n.load(std::sync::atomic::Ordering::Relaxed)),
                );
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &reg);
        out
    }
}

fn anomaly(key: &SeriesKey, episode: Episode) -> Anomaly {
    Anomaly {
        cluster: key.cluster.clone(),
        backend: key.backend.clone(),
        metric: key.metric.clone(),
        labels: key.labels.clone(),
        episode,
    }
}

fn push_closed(log: &mut ClusterLog, keep: usize, a: Anomaly) {
    if keep == 0 {
        return;
    }
    while log.closed.len() >= keep {
        log.closed.pop_front();
    }
    log.closed.push_back(a);
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SeriesLabels {
    cluster: String,
    backend: String,
    metric: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeakLabels {
    cluster: String,
    backend: String,
    metric: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MetricLabels {
    cluster: String,
    metric: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(value: f64) -> Score {
        Score {
            value,
            likelihood: 0.9,
            reason: if value >= 0.5 {
                Reason::Deviation
            } else {
                Reason::Normal
            },
        }
    }

    #[test]
    fn an_anomaly_opens_at_the_threshold_and_closes_after_the_quiet_period() {
        let mut w = Watch::default();
        let (th, quiet) = (0.5, 3_000);
        assert_eq!(w.step(0, 1.0, &score(0.49), th, quiet), Transition::None);
        assert!(w.open.is_none());
        assert_eq!(
            w.step(1_000, 9.0, &score(0.5), th, quiet),
            Transition::Opened
        );
        // A higher score moves the peak, its value and explanation.
        assert_eq!(
            w.step(2_000, 12.0, &score(0.9), th, quiet),
            Transition::None
        );
        // Below the threshold, but not for the quiet period yet.
        assert_eq!(w.step(3_000, 1.0, &score(0.1), th, quiet), Transition::None);
        assert_eq!(w.step(5_000, 1.0, &score(0.2), th, quiet), Transition::None);
        // Back above: the quiet period starts again.
        assert_eq!(w.step(6_000, 7.0, &score(0.6), th, quiet), Transition::None);
        assert_eq!(w.step(7_000, 1.0, &score(0.1), th, quiet), Transition::None);
        assert_eq!(w.step(9_999, 1.0, &score(0.1), th, quiet), Transition::None);
        let ep = w.open.clone().unwrap();
        assert_eq!(
            (ep.opened_at_ms, ep.last_ms, ep.last_score),
            (1_000, 9_999, 0.1)
        );
        assert_eq!((ep.peak_score, ep.peak_at_ms, ep.value), (0.9, 2_000, 12.0));
        assert!(
            ep.explanation.starts_with("score 0.900 (values far from"),
            "{}",
            ep.explanation
        );
        let Transition::Closed(ep) = w.step(10_000, 1.0, &score(0.1), th, quiet) else {
            panic!("not closed after 3 s below the threshold");
        };
        assert_eq!(ep.closed_at_ms, Some(10_000));
        assert_eq!(ep.closed_by, Some("quiet"));
        assert_eq!(ep.peak_score, 0.9);
        assert!(w.open.is_none());
        // A new anomaly opens afresh; a quiet period of 0 closes it at the first low score.
        assert_eq!(w.step(11_000, 5.0, &score(0.7), th, 0), Transition::Opened);
        assert_eq!(w.open.as_ref().unwrap().opened_at_ms, 11_000);
        assert!(matches!(
            w.step(12_000, 1.0, &score(0.0), th, 0),
            Transition::Closed(e) if e.peak_score == 0.7 && e.closed_at_ms == Some(12_000)
        ));
    }

    fn key(cluster: &str, backend: &str, metric: &str) -> SeriesKey {
        SeriesKey {
            cluster: cluster.into(),
            backend: backend.into(),
            metric: metric.into(),
            kind: 1,
            labels: BTreeMap::new(),
        }
    }

    /// Steady values with a little repeating noise from `t0`, one per second.
    fn steady(id: u32, t0: i64, n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| (id, t0 + i as i64 * 1000, 10.0 + (i % 3) as f64 * 0.1))
            .collect()
    }

    #[test]
    fn a_series_that_stops_reporting_does_not_keep_its_anomaly_open() {
        let a = Anomalies::new(&AnomalyConfig::default());
        let keys = [
            key("web", "a", "latency_p99_seconds"),
            key("web", "b", "latency_p99_seconds"),
        ];
        let lookup = |id: u32| keys.get(id as usize);
        let mut points = steady(0, 0, 300);
        points.extend(steady(1, 0, 300));
        points.sort_by_key(|p| p.1);
        a.observe(&points, lookup);
        // Both spike; then only b keeps reporting (high).
        a.observe(&[(0, 300_000, 90.0), (1, 300_000, 90.0)], lookup);
        assert_eq!(a.list("web", false).0.len(), 2);
        a.observe(&[(1, 400_000, 95.0)], lookup);
        // 10 s of silence allowed: a's last sample is 150 s old, b's 50 s.
        assert_eq!(a.close_stale(450_000, 100_000), 1);
        let (open, closed) = a.list("web", true);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].backend, "b");
        assert_eq!(closed.len(), 1);
        let e = &closed[0].episode;
        assert_eq!(
            (closed[0].backend.as_str(), e.closed_at_ms, e.closed_by),
            ("a", Some(450_000), Some("stale"))
        );
        assert!(
            a.render()
                .contains("aya_anomalies_open{cluster=\"web\"} 1\n")
        );
        // Nothing more to close; the reporting series keeps its anomaly.
        assert_eq!(a.close_stale(450_000, 100_000), 0);
        assert_eq!(a.close_stale(500_000, 100_000), 0);
        assert_eq!(a.close_stale(500_001, 100_000), 1);
    }

    #[test]
    fn detectors_are_bounded_and_follow_cluster_and_backend_deletion() {
        let cfg = AnomalyConfig {
            quiet_seconds: 5.0,
            max_detectors: 3,
            closed_per_cluster: 1,
            ..AnomalyConfig::default()
        };
        let a = Anomalies::new(&cfg);
        let mut keys = [
            key("web", "a", "latency_p99_seconds"),
            key("web", "b", "cpu_utilization"),
            key("web", "", "request_rate"),
            key("api", "x", "error_rate"),
        ];
        keys[1].labels.insert("zone".into(), "z1".into());
        let lookup = |id: u32| keys.get(id as usize);
        let mut points = Vec::new();
        for id in 0..4 {
            points.extend(steady(id, 0, 300));
        }
        points.sort_by_key(|p| p.1);
        a.observe(&points, lookup);
        assert_eq!(a.detectors(), 3, "the fourth series found the limit");
        let text = a.render();
        assert!(
            text.contains("aya_anomaly_series_untracked_total 1\n"),
            "{text}"
        );
        assert!(text.contains("aya_anomaly_detectors 3\n"), "{text}");
        assert!(
            text.contains("aya_anomaly_score{cluster=\"web\",backend=\"b\",metric=\"cpu_utilization{zone=z1}\"} "),
            "{text}"
        );
        assert!(!text.contains("cluster=\"api\""), "{text}");
        // A spike on a's latency opens an anomaly; an older point is skipped.
        a.observe(&[(0, 300_000, 50.0), (0, 299_000, 50.0)], lookup);
        let (open, _) = a.list("web", false);
        assert_eq!(open.len(), 1);
        let o = &open[0];
        assert_eq!(
            (o.backend.as_str(), o.metric.as_str()),
            ("a", "latency_p99_seconds")
        );
        assert_eq!(
            (
                o.episode.opened_at_ms,
                o.episode.value,
                o.episode.peak_score
            ),
            (300_000, 50.0, 1.0)
        );
        assert!(
            o.episode
                .explanation
                .contains("above the highest value seen"),
            "{}",
            o.episode.explanation
        );
        let text = a.render();
        for line in [
            "aya_anomalies_open{cluster=\"web\"} 1\n",
            "aya_anomalies_opened_total{cluster=\"web\",metric=\"latency_p99_seconds\"} 1\n",
            "aya_anomaly_score{cluster=\"web\",backend=\"a\",metric=\"latency_p99_seconds\"} 1.0\n",
            "aya_anomaly_peak_score{cluster=\"web\",backend=\"a\",metric=\"latency_p99_seconds\",reason=\"new_high\"} 1.0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Calm again for the quiet period: closed, kept in the closed list.
        a.observe(&steady(0, 301_000, 10), lookup);
        let (open, closed) = a.list("", true);
        assert!(open.is_empty(), "{open:?}");
        assert_eq!(closed.len(), 1);
        assert!(closed[0].episode.closed_at_ms.is_some_and(|t| t >= 306_000));
        let text = a.render();
        assert!(
            text.contains("aya_anomalies_open{cluster=\"web\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("aya_anomaly_peak_score{"), "{text}");
        // Removing backend a drops its detector and its closed anomaly; the
        // freed detector goes to the untracked series at its next point.
        a.retain_backends("web", &["b"]);
        assert_eq!(a.detectors(), 2);
        assert!(a.list("web", true).1.is_empty());
        a.observe(&[(3, 400_000, 1.0)], lookup);
        assert_eq!(a.detectors(), 3);
        assert!(a.render().contains("cluster=\"api\""));
        // A deleted cluster leaves nothing behind.
        a.forget_cluster("web");
        assert_eq!(a.detectors(), 1);
        let text = a.render();
        assert!(!text.contains("cluster=\"web\""), "{text}");
        assert_eq!(a.list("web", true), (Vec::new(), Vec::new()));
    }

    #[test]
    fn closed_anomalies_are_bounded_per_cluster() {
        let mut log = ClusterLog::default();
        let k = key("web", "a", "m");
        for t in 0..5 {
            let ep = Episode {
                opened_at_ms: t,
                closed_at_ms: Some(t + 1),
                last_ms: t,
                last_score: 0.0,
                peak_score: 1.0,
                peak_at_ms: t,
                value: 1.0,
                explanation: String::new(),
                reason: "new_high",
                closed_by: Some("quiet"),
            };
            push_closed(&mut log, 2, anomaly(&k, ep));
        }
        let kept: Vec<i64> = log.closed.iter().map(|a| a.episode.opened_at_ms).collect();
        assert_eq!(kept, vec![3, 4]);
        push_closed(
            &mut ClusterLog::default(),
            0,
            anomaly(&k, log.closed[0].episode.clone()),
        );
    }

    #[test]
    fn bad_settings_name_their_field() {
        assert!(AnomalyConfig::default().validate().is_ok());
        for (c, field) in [
            (
                AnomalyConfig {
                    threshold: f64::NAN,
                    ..Default::default()
                },
                "threshold",
            ),
            (
                AnomalyConfig {
                    quiet_seconds: 1e12,
                    ..Default::default()
                },
                "quiet_seconds",
            ),
            (
                AnomalyConfig {
                    max_detectors: MAX_DETECTORS + 1,
                    ..Default::default()
                },
                "max_detectors",
            ),
            (
                AnomalyConfig {
                    closed_per_cluster: MAX_CLOSED + 1,
                    ..Default::default()
                },
                "closed_per_cluster",
            ),
            (
                AnomalyConfig {
                    history: 99,
                    ..Default::default()
                },
                "history",
            ),
            (
                AnomalyConfig {
                    warm_start_seconds: -1.0,
                    ..Default::default()
                },
                "warm_start_seconds",
            ),
            (
                AnomalyConfig {
                    webhook_retries: MAX_WEBHOOK_RETRIES + 1,
                    ..Default::default()
                },
                "webhook_retries",
            ),
        ] {
            assert_eq!(c.validate().unwrap_err().0, field);
        }
    }
}
