//! `ExportMetricsServiceRequest` → Aya samples.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, Histogram, metric::Data, number_data_point,
};

use super::aggregate::Aggregator;
use super::mapping::{IGNORE, IngestMapping, LATENCY, OTLP_BUILTIN, is_count};
use super::series::{Bucket, SeriesTable, explicit_buckets, exponential_buckets, series_key};
use super::{Rejection, Translation};

/// Longest interval a delta point's start time may give (ms); a longer one
/// is taken as a malformed start time.
pub const MAX_DELTA_SPAN_MS: i64 = 3_600_000;

/// Data point flag: no value was recorded (the point is skipped).
const NO_RECORDED_VALUE: u32 = 1;

/// Turns OTLP exports into Aya samples, keeping the differencing state of
/// cumulative series between exports.
#[derive(Debug)]
pub struct Translator {
    mapping: IngestMapping,
    series: SeriesTable,
}

type Attrs = HashMap<String, String>;

fn attrs(kvs: &[KeyValue]) -> Attrs {
    kvs.iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => s.clone(),
                any_value::Value::IntValue(i) => i.to_string(),
                any_value::Value::BoolValue(b) => b.to_string(),
                any_value::Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

/// Point, then scope, then resource attributes.
struct Levels<'a>([&'a Attrs; 3]);

impl Levels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find_map(|a| a.get(key))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A latency unit's factor to seconds (`None` for a unit that is not a time).
fn seconds_per(unit: &str) -> Option<f64> {
    match unit {
        "s" | "" | "1" => Some(1.0),
        "ms" => Some(1e-3),
        "us" | "µs" => Some(1e-6),
        "ns" => Some(1e-9),
        "min" => Some(60.0),
        _ => None,
    }
}

/// Whether a point's attributes say the request failed.
pub fn is_error(get: impl Fn(&str) -> Option<String>) -> bool {
    if get("error.type").is_some() {
        return true;
    }
    ["http.response.status_code", "http.status_code"]
        .iter()
        .filter_map(|k| get(k)?.parse::<u32>().ok())
        .any(|c| c >= 500)
        || get("rpc.grpc.status_code")
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| matches!(c, 2 | 4 | 8 | 13 | 14 | 15))
}

struct Point {
    cluster: String,
    backend: String,
    ts_ms: i64,
    key: u64,
}

impl Translator {
    /// A translator with `mapping` (validate it first).
    pub fn new(mapping: IngestMapping) -> Self {
        let idle_ms = (mapping.series_idle_seconds * 1000.0) as i64;
        let series = SeriesTable::new(mapping.max_series, idle_ms);
        Translator { mapping, series }
    }

    /// The mapping in use.
    pub fn mapping(&self) -> &IngestMapping {
        &self.mapping
    }

    /// Translate one export. Points that cannot be used are listed in the
    /// rejections (grouped by metric and reason); the first point of a
    /// cumulative series only sets its baseline.
    pub fn translate(&mut self, req: &ExportMetricsServiceRequest) -> Translation {
        let mut agg = Aggregator::default();
        let mut rejected: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut dropped = 0u64;
        let none = Attrs::new();
        for rm in &req.resource_metrics {
            let res = rm
                .resource
                .as_ref()
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map(|s| attrs(&s.attributes))
                    .unwrap_or_default();
                for m in &sm.metrics {
                    let mut reject = |points: usize, reason: String| {
                        *rejected.entry((m.name.clone(), reason)).or_insert(0) += points as u64;
                    };
                    let Some(data) = &m.data else {
                        reject(1, "metric has no data".into());
                        continue;
                    };
                    let points = match data {
                        Data::Gauge(g) => g.data_points.len(),
                        Data::Sum(s) => s.data_points.len(),
                        Data::Histogram(h) => h.data_points.len(),
                        Data::ExponentialHistogram(h) => h.data_points.len(),
                        Data::Summary(s) => s.data_points.len(),
                    };
                    // The cluster comes from resource/scope attributes or
                    // per point; resolve the target with the resource-level
                    // cluster first, per point below.
                    let base = Levels([&none, &scope, &res]);
                    let resource_cluster = self.cluster_of(&base);
                    let target = {
                        let mapping = self
                            .mapping
                            .cluster(resource_cluster.as_deref().unwrap_or(""));
                        mapping.target(&m.name, OTLP_BUILTIN).map(str::to_string)
                    };
                    let Some(target) = target else {
                        if self.mapping.report_unmapped {
                            reject(points, "no Aya mapping for this metric".into());
                        } else {
                            dropped += points as u64;
                        }
                        continue;
                    };
                    if target == IGNORE {
                        dropped += points as u64;
                        continue;
                    }
                    let mut ctx = Ctx {
                        t: self,
                        name: &m.name,
                        target: &target,
                        agg: &mut agg,
                        res: &res,
                        scope: &scope,
                        reject: &mut reject,
                    };
                    ctx.data(data, &m.unit);
                }
            }
        }
        let mapping = &self.mapping;
        Translation {
            samples: agg.finish_with(|c| mapping.cluster(c).derive_latency),
            rejected: rejected
                .into_iter()
                .map(|((metric, reason), points)| Rejection {
                    metric,
                    points,
                    reason,
                })
                .collect(),
            dropped,
        }
    }

    fn cluster_of(&self, levels: &Levels<'_>) -> Option<String> {
        self.mapping
            .cluster_attributes
            .iter()
            .find_map(|a| levels.get(a))
            .map(str::to_string)
            .or_else(|| Some(self.mapping.default_cluster.clone()).filter(|c| !c.is_empty()))
    }

    fn backend_of(&self, cluster: &str, levels: &Levels<'_>) -> Option<String> {
        self.mapping
            .cluster(cluster)
            .backend_attributes
            .iter()
            .find_map(|parts| {
                let vals: Option<Vec<&str>> = parts.iter().map(|p| levels.get(p)).collect();
                vals.map(|v| v.join(":"))
            })
    }
}

struct Ctx<'a, 'b, R: FnMut(usize, String)> {
    t: &'a mut Translator,
    name: &'a str,
    target: &'a str,
    agg: &'a mut Aggregator,
    res: &'b Attrs,
    scope: &'b Attrs,
    reject: &'a mut R,
}

impl<R: FnMut(usize, String)> Ctx<'_, '_, R> {
    /// Translate one metric's data points, by kind of data.
    fn data(&mut self, data: &Data, unit: &str) {
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number(p, false, true);
                }
            }
            Data::Sum(s) => {
                let t = s.aggregation_temporality;
                let delta = t == AggregationTemporality::Delta as i32;
                if !delta && t != AggregationTemporality::Cumulative as i32 {
                    (self.reject)(
                        s.data_points.len(),
                        format!("sum has unknown aggregation temporality {t}"),
                    );
                    return;
                }
                if delta && !s.is_monotonic {
                    (self.reject)(
                        s.data_points.len(),
                        "non-monotonic delta sums are not supported".into(),
                    );
                    return;
                }
                for p in &s.data_points {
                    self.number(p, delta, s.is_monotonic);
                }
            }
            Data::Histogram(h) => self.explicit_histogram(h, unit),
            Data::ExponentialHistogram(h) => self.exponential_histogram(h, unit),
            Data::Summary(s) => {
                (self.reject)(s.data_points.len(), "summaries are not supported (their quantiles cannot be merged); export a histogram".into());
            }
        }
    }

    /// Translate the points of an explicit-bucket histogram.
    fn explicit_histogram(&mut self, h: &Histogram, unit: &str) {
        let Some(delta) = self.temporality(h.aggregation_temporality, h.data_points.len()) else {
            return;
        };
        let Some(scale) = self.scale(unit, h.data_points.len()) else {
            return;
        };
        for p in &h.data_points {
            if p.flags & NO_RECORDED_VALUE != 0 {
                continue;
            }
            let counts: Vec<f64> = p.bucket_counts.iter().map(|&c| c as f64).collect();
            let bounds: Vec<f64> = p.explicit_bounds.iter().map(|b| b * scale).collect();
            let buckets = explicit_buckets(&bounds, &counts).ok_or_else(|| format!(
                "histogram has {} bucket counts for {} explicit bounds (want bounds + 1) or bounds not increasing",
                p.bucket_counts.len(), p.explicit_bounds.len()));
            self.histogram(
                &p.attributes,
                p.start_time_unix_nano,
                p.time_unix_nano,
                delta,
                buckets,
            );
        }
    }

    /// Translate the points of an exponential histogram.
    fn exponential_histogram(&mut self, h: &ExponentialHistogram, unit: &str) {
        let Some(delta) = self.temporality(h.aggregation_temporality, h.data_points.len()) else {
            return;
        };
        let Some(scale) = self.scale(unit, h.data_points.len()) else {
            return;
        };
        for p in &h.data_points {
            if p.flags & NO_RECORDED_VALUE != 0 {
                continue;
            }
            let (offset, counts) = p
                .positive
                .as_ref()
                .map(|b| {
                    (
                        b.offset,
                        b.bucket_counts
                            .iter()
                            .map(|&c| c as f64)
                            .collect::<Vec<_>>(),
                    )
                })
                .unwrap_or_default();
            let buckets = exponential_buckets(
                p.scale,
                offset,
                &counts,
                p.zero_count as f64,
                p.zero_threshold,
            )
            .map(|bs| {
                bs.into_iter()
                    .map(|b| Bucket {
                        lower: b.lower * scale,
                        upper: b.upper * scale,
                        count: b.count,
                    })
                    .collect()
            })
            .ok_or_else(|| {
                format!(
                    "exponential histogram scale {} is outside -10..=20 or its buckets overflow",
                    p.scale
                )
            });
            self.histogram(
                &p.attributes,
                p.start_time_unix_nano,
                p.time_unix_nano,
                delta,
                buckets,
            );
        }
    }

    fn temporality(&mut self, t: i32, n: usize) -> Option<bool> {
        if self.target != LATENCY {
            (self.reject)(
                n,
                format!(
                    "a histogram can only map to {LATENCY:?}, not {:?}",
                    self.target
                ),
            );
            return None;
        }
        if t == AggregationTemporality::Delta as i32 {
            Some(true)
        } else if t == AggregationTemporality::Cumulative as i32 {
            Some(false)
        } else {
            (self.reject)(
                n,
                format!("histogram has unknown aggregation temporality {t}"),
            );
            None
        }
    }

    fn scale(&mut self, unit: &str, n: usize) -> Option<f64> {
        let s = seconds_per(unit);
        if s.is_none() {
            (self.reject)(
                n,
                format!("histogram unit {unit:?} is not a time unit (s, ms, us, ns)"),
            );
        }
        s
    }

    /// Resolve cluster, backend, time and series key of a point.
    fn point(&mut self, pattrs: &Attrs, time_ns: u64) -> Option<Point> {
        let levels = Levels([pattrs, self.scope, self.res]);
        let Some(cluster) = self.t.cluster_of(&levels) else {
            (self.reject)(
                1,
                format!(
                    "no cluster attribute (looked for {:?})",
                    self.t.mapping.cluster_attributes
                ),
            );
            return None;
        };
        let Some(backend) = self.t.backend_of(&cluster, &levels) else {
            (self.reject)(
                1,
                format!(
                    "no backend attribute in cluster {cluster:?} (looked for {:?})",
                    self.t.mapping.cluster(&cluster).backend_attributes
                ),
            );
            return None;
        };
        if time_ns == 0 {
            (self.reject)(1, "time_unix_nano is 0".into());
            return None;
        }
        let ts_ms = (time_ns / 1_000_000) as i64;
        let mut sorted: Vec<String> = pattrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sorted.sort();
        let key = series_key(
            [self.name, cluster.as_str(), backend.as_str()]
                .into_iter()
                .chain(sorted.iter().map(String::as_str)),
        );
        Some(Point {
            cluster,
            backend,
            ts_ms,
            key,
        })
    }

    fn number(
        &mut self,
        p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint,
        delta: bool,
        monotonic: bool,
    ) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return;
        }
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => {
                (self.reject)(1, "data point has no value".into());
                return;
            }
        };
        if !value.is_finite() {
            (self.reject)(1, format!("value {value} is not finite"));
            return;
        }
        let pattrs = attrs(&p.attributes);
        let Some(pt) = self.point(&pattrs, p.time_unix_nano) else {
            return;
        };
        if !is_count(self.target) {
            self.agg
                .gauge(&pt.cluster, &pt.backend, pt.ts_ms, self.target, value);
            return;
        }
        if !monotonic {
            (self.reject)(
                1,
                format!(
                    "{:?} counts events but the sum is not monotonic",
                    self.target
                ),
            );
            return;
        }
        if value < 0.0 {
            (self.reject)(1, format!("counter value {value} is negative"));
            return;
        }
        let (d, since_ms) = if delta {
            // A delta point covers (start, time]. Envoy 1.40 sends the start
            // (its previous flush) in microseconds, not nanoseconds: a start
            // that does not give a plausible interval is replaced by the
            // series' previous point.
            let prev = self.t.series.touch(pt.key, pt.ts_ms);
            let start_ms = (p.start_time_unix_nano / 1_000_000) as i64;
            let span = pt.ts_ms - start_ms;
            let plausible = p.start_time_unix_nano > 0 && span > 0 && span <= MAX_DELTA_SPAN_MS;
            (Some(value), if plausible { Some(start_ms) } else { prev })
        } else {
            let prev = self.t.series.last_ms(pt.key);
            match self
                .t
                .series
                .counter(pt.key, p.start_time_unix_nano, pt.ts_ms, value)
            {
                Ok(d) => (d, prev),
                Err(e) => {
                    (self.reject)(1, e.to_string());
                    return;
                }
            }
        };
        if let Some(d) = d {
            self.agg
                .count(&pt.cluster, &pt.backend, pt.ts_ms, self.target, d);
            if let Some(since) = since_ms {
                self.agg
                    .interval(&pt.cluster, &pt.backend, pt.ts_ms, pt.ts_ms - since);
            }
        }
    }

    fn histogram(
        &mut self,
        kvs: &[KeyValue],
        start_ns: u64,
        time_ns: u64,
        delta: bool,
        buckets: Result<Vec<Bucket>, String>,
    ) {
        let buckets = match buckets {
            Ok(b) => b,
            Err(e) => {
                (self.reject)(1, e);
                return;
            }
        };
        let pattrs = attrs(kvs);
        let Some(pt) = self.point(&pattrs, time_ns) else {
            return;
        };
        let d = if delta {
            Some(buckets)
        } else {
            match self.t.series.histogram(pt.key, start_ns, pt.ts_ms, buckets) {
                Ok(d) => d,
                Err(e) => {
                    (self.reject)(1, e.to_string());
                    return;
                }
            }
        };
        if let Some(d) = d {
            let err = is_error(|k| pattrs.get(k).cloned());
            self.agg
                .histogram(&pt.cluster, &pt.backend, pt.ts_ms, d, err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    /// What Envoy 1.40's OTel sink sends for one endpoint (as captured by
    /// tests/envoy_otel.rs): delta sums whose start time is in
    /// microseconds, gauges without a start time.
    fn envoy_export(
        t_ns: u64,
        prev_ns: u64,
        total: i64,
        success: i64,
        active: i64,
    ) -> ExportMetricsServiceRequest {
        let attrs = vec![
            kv("envoy.cluster_name", "web"),
            kv("envoy.endpoint_address", "127.0.0.1:8080"),
            kv("envoy.endpoint_hostname", "b0"),
        ];
        let point = |v: i64, start: u64| NumberDataPoint {
            attributes: attrs.clone(),
            start_time_unix_nano: start,
            time_unix_nano: t_ns,
            value: Some(number_data_point::Value::AsInt(v)),
            ..Default::default()
        };
        let sum = |name: &str, v: i64| Metric {
            name: name.into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![point(v, prev_ns / 1000)],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let gauge = |name: &str, v: i64| Metric {
            name: name.into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![point(v, 0)],
            })),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        sum("cluster.endpoint.rq_total", total),
                        sum("cluster.endpoint.rq_success", success),
                        gauge("cluster.endpoint.rq_active", active),
                        gauge("cluster.endpoint.healthy", 1),
                        gauge("cluster.endpoint.rq_pending_active", 0),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn value(t: &Translation, metric: &str) -> Option<f64> {
        t.samples
            .iter()
            .find(|s| s.metric == metric)
            .map(|s| s.value)
    }

    #[test]
    fn envoy_endpoint_stats_map_to_load_errors_health_and_mean_latency() {
        let mut tr = Translator::new(IngestMapping::default());
        let t0 = 1_796_177_139_000_000_000u64;
        let sec = 1_000_000_000u64;
        let first = tr.translate(&envoy_export(t0, t0 - sec, 100, 100, 2));
        assert!(first.rejected.is_empty(), "{:?}", first.rejected);
        assert_eq!(value(&first, "requests_total"), Some(100.0));
        assert_eq!(value(&first, "in_flight"), Some(2.0));
        assert_eq!(value(&first, "healthy"), Some(1.0));
        // The start time is unusable (microseconds) and the series has no
        // previous point yet: no interval, no latency.
        assert_eq!(value(&first, "latency_mean_seconds"), None);
        assert_eq!(first.samples[0].backend, "127.0.0.1:8080");

        // One second later: 200 requests, 190 ok, 4 in flight -> 20 ms.
        let second = tr.translate(&envoy_export(t0 + sec, t0, 200, 190, 4));
        let mean = value(&second, "latency_mean_seconds").unwrap_or(f64::NAN);
        assert!((mean - 0.02).abs() < 1e-9, "{mean}");
        let err = value(&second, "error_rate").unwrap_or(f64::NAN);
        assert!((err - 0.05).abs() < 1e-9, "{err}");
        // rq_pending_active is not mapped: dropped silently.
        assert!(second.dropped >= 1);

        // A well-formed start time (nanoseconds) is used as given.
        let mut tr = Translator::new(IngestMapping::default());
        let mut req = envoy_export(t0, 0, 50, 50, 1);
        for m in &mut req.resource_metrics[0].scope_metrics[0].metrics {
            if let Some(Data::Sum(s)) = &mut m.data {
                s.data_points[0].start_time_unix_nano = t0 - sec / 2;
            }
        }
        let t = tr.translate(&req);
        // 50 requests in 0.5 s (100/s), 1 in flight: 10 ms.
        let mean = value(&t, "latency_mean_seconds").unwrap_or(f64::NAN);
        assert!((mean - 0.01).abs() < 1e-9, "{mean}");
    }
}
