//! Per-export aggregation shared by OTLP and remote-write: the differenced
//! contributions of every series of one (cluster, backend, timestamp) are
//! summed (counts, `in_flight`), or the last one kept (other gauges), and
//! histogram deltas are merged before their quantiles are taken. Derived
//! metrics: `error_rate` from `error_total` or `success_total` (or a
//! histogram's error-attributed points) over `requests_total`; and, where
//! enabled and no histogram gives latency, `latency_mean_seconds` by
//! Little's law (`in_flight` / request rate over the counted interval).

use std::collections::BTreeMap;

use aya_proto::v1::MetricKind;

use super::Translated;
use super::mapping::{ERROR_TOTAL, SUCCESS_TOTAL};
use super::series::{Bucket, quantile, total};

/// Gauges that add up across series of one backend (e.g. per route).
const SUMMED_GAUGES: &[&str] = &["in_flight", "connections_active"];

#[derive(Debug, Default)]
struct Group {
    counts: BTreeMap<String, f64>,
    gauges: BTreeMap<String, f64>,
    buckets: Vec<Bucket>,
    hist_errors: f64,
    hist: bool,
    /// Longest interval (ms) the counts of the group cover, when known.
    interval_ms: Option<i64>,
}

/// The name of the Little's-law latency estimate.
pub const LATENCY_MEAN: &str = "latency_mean_seconds";

/// Fewest requests in an interval for a Little's-law estimate: below it the
/// rate is too noisy to divide by.
pub const MIN_REQUESTS_FOR_MEAN_LATENCY: f64 = 1.0;

/// Collects one export's contributions.
#[derive(Debug, Default)]
pub struct Aggregator {
    groups: BTreeMap<(String, String, i64), Group>,
}

impl Aggregator {
    fn group(&mut self, cluster: &str, backend: &str, ts_ms: i64) -> &mut Group {
        self.groups
            .entry((cluster.to_string(), backend.to_string(), ts_ms))
            .or_default()
    }

    /// Events counted over the interval ending at `ts_ms`.
    pub fn count(&mut self, cluster: &str, backend: &str, ts_ms: i64, metric: &str, delta: f64) {
        *self
            .group(cluster, backend, ts_ms)
            .counts
            .entry(metric.to_string())
            .or_insert(0.0) += delta;
    }

    /// The counts at `ts_ms` cover the `interval_ms` before it (from a delta
    /// point's start time, or the previous point of a cumulative series).
    pub fn interval(&mut self, cluster: &str, backend: &str, ts_ms: i64, interval_ms: i64) {
        if interval_ms > 0 {
            let g = self.group(cluster, backend, ts_ms);
            g.interval_ms = Some(g.interval_ms.map_or(interval_ms, |i| i.max(interval_ms)));
        }
    }

    /// A value at `ts_ms`.
    pub fn gauge(&mut self, cluster: &str, backend: &str, ts_ms: i64, metric: &str, value: f64) {
        let g = self.group(cluster, backend, ts_ms);
        let slot = g.gauges.entry(metric.to_string()).or_insert(0.0);
        if SUMMED_GAUGES.contains(&metric) {
            *slot += value;
        } else {
            *slot = value;
        }
    }

    /// Latency observations (seconds) over the interval ending at `ts_ms`;
    /// `errors` of them failed.
    pub fn histogram(
        &mut self,
        cluster: &str,
        backend: &str,
        ts_ms: i64,
        buckets: Vec<Bucket>,
        errors: bool,
    ) {
        let g = self.group(cluster, backend, ts_ms);
        if errors {
            g.hist_errors += total(&buckets);
        }
        g.hist = true;
        g.buckets.extend(buckets);
    }

    /// The Aya samples, sorted by cluster, backend, time and metric.
    pub fn finish(self) -> Vec<Translated> {
        self.finish_with(|_| false)
    }

    /// [`Aggregator::finish`], adding [`LATENCY_MEAN`] for the clusters where
    /// `derive_latency` is true: for a backend with no histogram in the
    /// export, at least [`MIN_REQUESTS_FOR_MEAN_LATENCY`] requests over a
    /// known interval and an `in_flight` value, the mean time in the system
    /// is `in_flight / (requests / interval)` (Little's law; `in_flight` is
    /// the value sampled at the export, an unbiased estimate of its average
    /// over the interval).
    pub fn finish_with(self, derive_latency: impl Fn(&str) -> bool) -> Vec<Translated> {
        let mut out = Vec::new();
        for ((cluster, backend, ts), mut g) in self.groups {
            let mut push = |metric: &str, kind: MetricKind, value: f64| {
                out.push(Translated {
                    cluster: cluster.clone(),
                    backend: backend.clone(),
                    metric: metric.to_string(),
                    kind,
                    timestamp_ms: ts,
                    value,
                })
            };
            let mut error_rate = None;
            if g.hist {
                let n = total(&g.buckets);
                *g.counts.entry("requests_total".into()).or_insert(0.0) += n;
                if n > 0.0 {
                    for (q, name) in [
                        (0.5, "latency_p50_seconds"),
                        (0.9, "latency_p90_seconds"),
                        (0.99, "latency_p99_seconds"),
                    ] {
                        if let Some(v) = quantile(&g.buckets, q) {
                            push(name, MetricKind::Gauge, v);
                        }
                    }
                    error_rate = Some(g.hist_errors / n);
                }
            }
            if let Some(&n) = g.counts.get("requests_total").filter(|n| **n > 0.0) {
                if let Some(e) = g.counts.get(ERROR_TOTAL) {
                    error_rate = Some(e / n);
                } else if let Some(s) = g.counts.get(SUCCESS_TOTAL) {
                    error_rate = Some(1.0 - s / n);
                }
            }
            if let Some(r) = error_rate {
                push("error_rate", MetricKind::Gauge, r.clamp(0.0, 1.0));
            }
            if !g.hist
                && derive_latency(&cluster)
                && let (Some(&n), Some(&active), Some(ms)) = (
                    g.counts.get("requests_total"),
                    g.gauges.get("in_flight"),
                    g.interval_ms,
                )
                && n >= MIN_REQUESTS_FOR_MEAN_LATENCY
                && active.is_finite()
                && active >= 0.0
            {
                let rate = n / (ms as f64 / 1000.0);
                push(LATENCY_MEAN, MetricKind::Gauge, active / rate);
            }
            for (m, v) in &g.counts {
                push(m, MetricKind::Delta, v.max(0.0));
            }
            for (m, v) in &g.gauges {
                push(m, MetricKind::Gauge, *v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(out: &[Translated], metric: &str) -> Option<f64> {
        out.iter().find(|t| t.metric == metric).map(|t| t.value)
    }

    #[test]
    fn littles_law_gives_the_mean_latency_without_a_histogram() {
        let mut a = Aggregator::default();
        // 200 requests over 2 s (100/s) with 4 in flight: 40 ms each.
        a.count("web", "b0", 10_000, "requests_total", 200.0);
        a.interval("web", "b0", 10_000, 2_000);
        a.gauge("web", "b0", 10_000, "in_flight", 4.0);
        let out = a.finish_with(|c| c == "web");
        let mean = find(&out, LATENCY_MEAN).expect("derived latency");
        assert!((mean - 0.04).abs() < 1e-12, "{mean}");

        // Not where disabled, nor without an interval, nor below one request.
        let mut a = Aggregator::default();
        a.count("web", "b0", 10_000, "requests_total", 200.0);
        a.interval("web", "b0", 10_000, 2_000);
        a.gauge("web", "b0", 10_000, "in_flight", 4.0);
        a.count("web", "b1", 10_000, "requests_total", 200.0);
        a.gauge("web", "b1", 10_000, "in_flight", 4.0);
        a.count("web", "b2", 10_000, "requests_total", 0.0);
        a.interval("web", "b2", 10_000, 2_000);
        a.gauge("web", "b2", 10_000, "in_flight", 4.0);
        assert_eq!(find(&a.finish_with(|_| false), LATENCY_MEAN), None);
        let mut a = Aggregator::default();
        a.count("web", "b1", 10_000, "requests_total", 200.0);
        a.gauge("web", "b1", 10_000, "in_flight", 4.0);
        a.count("web", "b2", 10_000, "requests_total", 0.0);
        a.interval("web", "b2", 10_000, 2_000);
        a.gauge("web", "b2", 10_000, "in_flight", 4.0);
        assert_eq!(find(&a.finish_with(|_| true), LATENCY_MEAN), None);
    }

    #[test]
    fn a_histogram_takes_precedence_over_littles_law() {
        let mut a = Aggregator::default();
        a.count("web", "b0", 10_000, "requests_total", 200.0);
        a.interval("web", "b0", 10_000, 2_000);
        a.gauge("web", "b0", 10_000, "in_flight", 4.0);
        a.histogram(
            "web",
            "b0",
            10_000,
            vec![Bucket {
                lower: 0.0,
                upper: 0.1,
                count: 10.0,
            }],
            false,
        );
        let out = a.finish_with(|_| true);
        assert_eq!(find(&out, LATENCY_MEAN), None);
        assert!(find(&out, "latency_p50_seconds").is_some());
    }

    #[test]
    fn envoy_success_counts_give_the_error_rate() {
        let mut a = Aggregator::default();
        a.count("web", "b0", 10_000, "requests_total", 100.0);
        a.count("web", "b0", 10_000, SUCCESS_TOTAL, 90.0);
        let out = a.finish();
        assert!((find(&out, "error_rate").unwrap_or(-1.0) - 0.1).abs() < 1e-12);
    }
}
