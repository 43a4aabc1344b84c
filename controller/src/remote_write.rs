//! Prometheus remote-write 1.0 receiver: `POST /api/v1/write` with a
//! block-snappy-compressed protobuf `prometheus.WriteRequest`. Series are
//! mapped to Aya clusters, backends and metrics by labels
//! ([`IngestMapping::prometheus`]); cumulative counters and `_bucket`
//! histograms are differenced with the same per-series state as OTLP
//! ([`crate::otlp::series`]).
//!
//! Status codes (spec 1.0: senders retry 5xx and 429, never other 4xx):
//! 204 when every sample was stored or deliberately dropped; 400 for a body
//! that is not snappy or not a `WriteRequest`, or when some samples were
//! rejected (the others are stored; the body names the reasons); 415 for a
//! wrong `Content-Type` or `Content-Encoding`; 413 for a body that
//! decompresses to more than [`MAX_DECODED_BYTES`]; 503 when ingest failed as
//! a whole (the sender retries).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;

use crate::otlp::aggregate::Aggregator;
use crate::otlp::mapping::{
    ClusterMapping, IGNORE, IngestMapping, LATENCY, PROMETHEUS_BUILTIN, is_count,
};
use crate::otlp::series::{SeriesTable, explicit_buckets, series_key};
use crate::otlp::translate::is_error;
use crate::otlp::{Rejection, Sink, Translation, summarize};

/// The path Prometheus writes to.
pub const PATH: &str = "/api/v1/write";
/// Largest compressed body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Largest decompressed body accepted.
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;
/// Prometheus' staleness marker (a NaN with this bit pattern).
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// `prometheus.WriteRequest` (remote-write 1.0; metadata, field 3, is skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in increasing time order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PromSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PromSample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a request body was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not block-format snappy.
    #[error("body is not block-format snappy: {0}")]
    Snappy(#[from] snap::Error),
    /// Decompresses to too much.
    #[error("body decompresses to {0} bytes, more than the limit of {MAX_DECODED_BYTES}")]
    TooLarge(usize),
    /// Not a WriteRequest.
    #[error("body is not a prometheus.WriteRequest protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// Decode a snappy-compressed `WriteRequest`.
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let len = snap::raw::decompress_len(body)?;
    if len > MAX_DECODED_BYTES {
        return Err(DecodeError::TooLarge(len));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// Encode a `WriteRequest` as a remote-write body (for tests and tools).
pub fn encode(req: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())
}

/// Translates write requests, keeping counters' and histograms' previous
/// values between requests.
#[derive(Debug)]
pub struct RemoteWriter {
    mapping: IngestMapping,
    series: SeriesTable,
}

struct HistGroup {
    cluster: String,
    backend: String,
    base: String,
    errors: bool,
    /// ts → (le, cumulative count).
    points: BTreeMap<i64, Vec<(f64, f64)>>,
}

impl RemoteWriter {
    /// A translator with `mapping` (e.g. [`IngestMapping::prometheus`]).
    pub fn new(mapping: IngestMapping) -> Self {
        let idle_ms = (mapping.series_idle_seconds * 1000.0) as i64;
        let series = SeriesTable::new(mapping.max_series, idle_ms);
        RemoteWriter { mapping, series }
    }

    fn find(&self, labels: &HashMap<&str, &str>, names: &[String]) -> Option<String> {
        names
            .iter()
            .find_map(|n| labels.get(n.as_str()).filter(|v| !v.is_empty()))
            .map(|v| v.to_string())
    }

    /// Translate one write request.
    pub fn translate(&mut self, req: &WriteRequest) -> Translation {
        let mut agg = Aggregator::default();
        let mut rejected: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut dropped = 0u64;
        let mut hists: BTreeMap<u64, HistGroup> = BTreeMap::new();
        for ts in &req.timeseries {
            let labels: HashMap<&str, &str> = ts
                .labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            let n = ts.samples.len() as u64;
            let name = labels.get("__name__").copied().unwrap_or("");
            let mut reject = |reason: String, points: u64| {
                *rejected.entry((name.to_string(), reason)).or_insert(0) += points;
            };
            if name.is_empty() {
                reject("series has no __name__ label".into(), n);
                continue;
            }
            let cluster = self
                .find(&labels, &self.mapping.cluster_attributes)
                .or_else(|| Some(self.mapping.default_cluster.clone()).filter(|c| !c.is_empty()));
            let cmap = self.mapping.cluster(cluster.as_deref().unwrap_or(""));
            let (base, suffix) = split_suffix(name, cmap);
            let Some(target) = cmap.target(base, PROMETHEUS_BUILTIN).map(str::to_string) else {
                if self.mapping.report_unmapped {
                    reject("no Aya mapping for this metric".into(), n);
                } else {
                    dropped += n;
                }
                continue;
            };
            if target == IGNORE || (target == LATENCY && suffix != "_bucket") {
                dropped += n;
                continue;
            }
            if target == LATENCY && suffix.is_empty() {
                reject(
                    format!("{LATENCY:?} needs the histogram's _bucket series"),
                    n,
                );
                continue;
            }
            let Some(cluster) = cluster else {
                reject(
                    format!(
                        "no cluster label (looked for {:?})",
                        self.mapping.cluster_attributes
                    ),
                    n,
                );
                continue;
            };
            let cmap = self.mapping.cluster(&cluster);
            let backend = backend_of(cmap, &labels);
            let Some(backend) = backend else {
                reject(
                    format!(
                        "no backend label in cluster {cluster:?} (looked for {:?})",
                        cmap.backend_attributes
                    ),
                    n,
                );
                continue;
            };
            let key = label_key(&labels, base, &cluster, &backend);
            if target == LATENCY {
                if let Err(reason) = collect_buckets(
                    &mut hists,
                    key,
                    &labels,
                    &cluster,
                    &backend,
                    base,
                    &ts.samples,
                ) {
                    reject(reason, n);
                }
                continue;
            }
            for s in &ts.samples {
                if s.value.to_bits() == STALE_NAN {
                    continue;
                }
                if !s.value.is_finite() {
                    reject(format!("value {} is not finite", s.value), 1);
                    continue;
                }
                if !is_count(&target) {
                    agg.gauge(&cluster, &backend, s.timestamp, &target, s.value);
                    continue;
                }
                if s.value < 0.0 {
                    reject(format!("counter value {} is negative", s.value), 1);
                    continue;
                }
                match self.series.counter(key, 0, s.timestamp, s.value) {
                    Ok(Some(d)) => agg.count(&cluster, &backend, s.timestamp, &target, d),
                    Ok(None) => {}
                    Err(e) => reject(e.to_string(), 1),
                }
            }
        }
        self.finish_histograms(hists, &mut agg, &mut rejected);
        Translation {
            samples: agg.finish(),
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

    /// Turn each histogram group's cumulative `_bucket` points into bucket deltas.
    fn finish_histograms(
        &mut self,
        hists: BTreeMap<u64, HistGroup>,
        agg: &mut Aggregator,
        rejected: &mut BTreeMap<(String, String), u64>,
    ) {
        for (key, g) in hists {
            for (ts, mut les) in g.points {
                let n = les.len() as u64;
                let mut reject = |reason: String| {
                    *rejected
                        .entry((format!("{}_bucket", g.base), reason))
                        .or_insert(0) += n;
                };
                les.sort_by(|a, b| a.0.total_cmp(&b.0));
                if les.windows(2).any(|w| w[0].0 == w[1].0) {
                    reject(format!("duplicate le bucket at {ts} ms"));
                    continue;
                }
                if les.iter().any(|(_, c)| !(c.is_finite() && *c >= 0.0)) {
                    reject(format!("bucket count not finite or negative at {ts} ms"));
                    continue;
                }
                if les.last().is_some_and(|(le, _)| le.is_finite()) {
                    let top = les.last().map(|l| l.1).unwrap_or(0.0);
                    les.push((f64::INFINITY, top));
                }
                let bounds: Vec<f64> = les[..les.len() - 1].iter().map(|l| l.0).collect();
                let mut counts = Vec::with_capacity(les.len());
                let mut prev = 0.0;
                for (_, c) in &les {
                    counts.push(c - prev);
                    prev = *c;
                }
                if counts.iter().any(|c| *c < 0.0) {
                    reject(format!(
                        "cumulative bucket counts decrease with le at {ts} ms"
                    ));
                    continue;
                }
                let Some(buckets) = explicit_buckets(&bounds, &counts) else {
                    reject(format!("invalid le bounds at {ts} ms"));
                    continue;
                };
                match self.series.histogram(key, 0, ts, buckets) {
                    Ok(Some(d)) => agg.histogram(&g.cluster, &g.backend, ts, d, g.errors),
                    Ok(None) => {}
                    Err(e) => reject(e.to_string()),
                }
            }
        }
    }
}

/// A histogram series' base name and suffix (`_bucket`, `_count`, ...) when its base maps to
/// the latency histogram; otherwise the whole name and no suffix.
fn split_suffix<'a>(name: &'a str, cmap: &ClusterMapping) -> (&'a str, &'static str) {
    match ["_bucket", "_count", "_sum", "_created"]
        .iter()
        .find_map(|s| name.strip_suffix(s).map(|b| (b, *s)))
    {
        Some((b, s)) if cmap.target(b, PROMETHEUS_BUILTIN) == Some(LATENCY) => (b, s),
        _ => (name, ""),
    }
}

/// The backend of a series: the first of the cluster's backend label lists it has in full.
fn backend_of(cmap: &ClusterMapping, labels: &HashMap<&str, &str>) -> Option<String> {
    cmap.backend_attributes.iter().find_map(|parts| {
        let v: Option<Vec<&str>> = parts
            .iter()
            .map(|p| labels.get(p.as_str()).copied().filter(|v| !v.is_empty()))
            .collect();
        v.map(|v| v.join(":"))
    })
}

/// The series key of a translated series: its base name, cluster, backend and other labels.
fn label_key(labels: &HashMap<&str, &str>, base: &str, cluster: &str, backend: &str) -> u64 {
    let mut rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !matches!(**k, "__name__" | "le"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    rest.sort();
    series_key(
        [base, cluster, backend]
            .into_iter()
            .chain(rest.iter().map(String::as_str)),
    )
}

/// Add a `_bucket` series' points to its histogram group; why not, if it has no numeric `le`.
fn collect_buckets(
    hists: &mut BTreeMap<u64, HistGroup>,
    key: u64,
    labels: &HashMap<&str, &str>,
    cluster: &str,
    backend: &str,
    base: &str,
    samples: &[PromSample],
) -> Result<(), String> {
    let Some(le) = labels
        .get("le")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
    else {
        return Err("a _bucket series has no numeric le label".into());
    };
    let g = hists.entry(key).or_insert_with(|| HistGroup {
        cluster: cluster.to_string(),
        backend: backend.to_string(),
        base: base.to_string(),
        errors: is_error(|k| {
            labels
                .get(k.replace('.', "_").as_str())
                .map(|v| v.to_string())
        }),
        points: BTreeMap::new(),
    });
    for s in samples {
        if s.value.to_bits() == STALE_NAN {
            continue;
        }
        g.points.entry(s.timestamp).or_default().push((le, s.value));
    }
    Ok(())
}

/// State of the HTTP handler.
#[derive(Clone)]
pub struct Receiver {
    writer: Arc<Mutex<RemoteWriter>>,
    sink: Sink,
    rates: Arc<crate::auth::RateLimits>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    /// A receiver translating with `mapping` into `sink`.
    pub fn new(mapping: IngestMapping, sink: Sink) -> Self {
        Receiver {
            writer: Arc::new(Mutex::new(RemoteWriter::new(mapping))),
            sink,
            rates: Arc::new(crate::auth::RateLimits::none()),
        }
    }

    /// Count each client's samples against `rates.ingest` (the bucket the
    /// aya.v1 and OTLP ingest paths share).
    pub fn with_rate_limits(self, rates: Arc<crate::auth::RateLimits>) -> Self {
        Receiver { rates, ..self }
    }
}

/// An axum router serving [`PATH`]; merge it into the metrics listener's.
pub fn router(mapping: IngestMapping, sink: Sink) -> axum::Router {
    router_for(Receiver::new(mapping, sink))
}

/// [`router`] around a prepared [`Receiver`] (e.g. with rate limits).
pub fn router_for(receiver: Receiver) -> axum::Router {
    axum::Router::new()
        .route(PATH, axum::routing::post(write))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(receiver)
}

fn header_is(headers: &HeaderMap, name: header::HeaderName, want: &str) -> Result<(), String> {
    let got = headers
        .get(&name)
        .map(|v| v.to_str().unwrap_or("<not ASCII>"))
        .unwrap_or("<missing>");
    let main = got.split(';').next().unwrap_or("").trim();
    if main.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(format!("{name} must be {want}, got {got}"))
    }
}

/// The handler: decode, translate, hand to the sink.
pub async fn write(
    State(rx): State<Receiver>,
    client: Option<axum::Extension<crate::auth::ClientKey>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = header_is(&headers, header::CONTENT_TYPE, "application/x-protobuf")
        .and_then(|_| header_is(&headers, header::CONTENT_ENCODING, "snappy"))
    {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, e).into_response();
    }
    let req = match decode(&body) {
        Ok(r) => r,
        Err(e @ DecodeError::TooLarge(_)) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response();
        }
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let translation = match rx.writer.lock() {
        Ok(mut w) => w.translate(&req),
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "remote-write state is poisoned",
            )
                .into_response();
        }
    };
    let mut reasons: Vec<String> = translation
        .rejected
        .iter()
        .map(|r| format!("{}: {} sample(s): {}", r.metric, r.points, r.reason))
        .collect();
    if let Some(limiter) = rx.rates.ingest.as_ref()
        && !translation.samples.is_empty()
    {
        let key = client.map_or_else(|| "anonymous".to_string(), |c| c.0.0.clone());
        if let Err(l) = limiter.try_take(&key, translation.samples.len() as f64) {
            // Remote-write 1.0: 429 is retried by the sender with back-off.
            let wait = l.retry_after_seconds.ceil().max(1.0) as u64;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, wait.to_string())],
                format!(
                    "ingest rate limit: at most {} samples per second per client (limits.ingest_samples_per_second); nothing of this request was stored, retry in {:.2} s",
                    limiter.rate(),
                    l.retry_after_seconds
                ),
            )
                .into_response();
        }
    }
    if !translation.samples.is_empty() {
        let names: Vec<(String, String)> = translation
            .samples
            .iter()
            .map(|s| (s.metric.clone(), s.backend.clone()))
            .collect();
        match (rx.sink)(translation.samples).await {
            Ok(results) => {
                for ((metric, backend), r) in names.iter().zip(results) {
                    if let Some(why) = r {
                        reasons.push(format!("{metric} of backend {backend:?}: {why}"));
                    }
                }
            }
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        }
    }
    if reasons.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::BAD_REQUEST, summarize(reasons)).into_response()
    }
}
