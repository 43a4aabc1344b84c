//! Per-export aggregation shared by OTLP and remote-write: the differenced
//! contributions of every series of one (cluster, backend, timestamp) are
//! summed (counts, `in_flight`), or the last one kept (other gauges), and
//! histogram deltas are merged before their quantiles are taken. Derived
//! metrics: `error_rate` from `error_total` or `success_total` (or a
//! histogram's error-attributed points) over `requests_total`.

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
}

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
