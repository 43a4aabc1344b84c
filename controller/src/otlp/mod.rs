//! OTLP metrics ingest (`opentelemetry.proto.collector.metrics.v1.MetricsService/Export`)
//! as a translation layer in front of Aya's own ingest path.
//!
//! - [`mapping`]: which attribute names the cluster and the backend and which
//!   source metric feeds which Aya metric (serde, per cluster, with defaults
//!   for Envoy's OTel stats sink and the OpenTelemetry semantic conventions).
//! - [`translate`]: `ExportMetricsServiceRequest` → [`Translation`] (plain
//!   [`Translated`] samples and [`Rejection`]s), keeping the per-series state
//!   that differences cumulative sums and histograms ([`series`]), shared
//!   with Prometheus remote-write ([`crate::remote_write`]).
//! - [`service`]: the tonic service; it hands samples to a [`Sink`]
//!   ([`ingest_sink`] feeds a [`Controller`]) and answers with
//!   `partial_success` for what was rejected.

pub mod aggregate;
pub mod mapping;
pub mod series;
pub mod service;
pub mod translate;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aya_proto::v1::MetricKind;

use crate::config::ClusterConfig;
use crate::ingest::Sample;
use crate::state::Controller;

pub use mapping::{ClusterMapping, IngestMapping};
pub use service::{OtlpService, metrics_service};
pub use translate::Translator;

/// One Aya sample produced by a translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// Aya cluster.
    pub cluster: String,
    /// The backend as the source identified it (a backend name or its
    /// `host:port`; [`resolve_backend`] maps it to the configured name).
    pub backend: String,
    /// Aya metric name (`requests_total`, `in_flight`, `latency_p99_seconds`, …).
    pub metric: String,
    /// `Delta` for counts over the interval ending at `timestamp_ms`,
    /// `Gauge` for values at that time.
    pub kind: MetricKind,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// The value (finite; counts ≥ 0).
    pub value: f64,
}

impl Translated {
    /// The ingest sample (no extra labels).
    pub fn into_sample(self) -> Sample {
        Sample::new(
            self.cluster,
            self.backend,
            self.metric,
            crate::convert::metric_kind_from_wire(self.kind as i32),
            self.timestamp_ms,
            self.value,
        )
    }
}

/// Points of one source metric rejected for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Source metric name.
    pub metric: String,
    /// Number of data points.
    pub points: u64,
    /// Why, naming the field at fault.
    pub reason: String,
}

/// The outcome of translating one export or write request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// Samples for Aya's ingest.
    pub samples: Vec<Translated>,
    /// What could not be used, and why.
    pub rejected: Vec<Rejection>,
    /// Points of unmapped or ignored metrics, dropped silently.
    pub dropped: u64,
}

/// The sink failed as a whole (e.g. the controller is shutting down): the
/// sender should retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// What a [`Sink`] returns: one entry per sample, in order, `None` when it
/// was accepted and `Some(reason)` when it was rejected.
pub type SinkResult = Result<Vec<Option<String>>, SinkError>;

/// The callback that hands translated samples to ingest. It is called once
/// per export (or write request) with a non-empty batch, and its future
/// resolves once the batch is stored (or rejected).
pub type Sink = Arc<dyn Fn(Vec<Translated>) -> SinkFuture + Send + Sync>;

/// The future a [`Sink`] returns.
pub type SinkFuture = Pin<Box<dyn Future<Output = SinkResult> + Send>>;

/// A [`Sink`] from an async function or closure.
pub fn sink_fn<F, Fut>(f: F) -> Sink
where
    F: Fn(Vec<Translated>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = SinkResult> + Send + 'static,
{
    Arc::new(move |batch| -> SinkFuture { Box::pin(f(batch)) })
}

/// The configured backend name `id` denotes in `cluster`: a backend whose
/// name is `id`, else one whose address is `id` (`None` when neither).
pub fn resolve_backend<'a>(cluster: &'a ClusterConfig, id: &str) -> Option<&'a str> {
    cluster
        .backends
        .iter()
        .find(|b| b.name == id)
        .or_else(|| cluster.backends.iter().find(|b| b.address == id))
        .map(|b| b.name.as_str())
}

/// A [`Sink`] feeding `ctl`'s ingest writer (with its validation and
/// durable storage); backends given by address are mapped to their names.
pub fn ingest_sink(ctl: Controller) -> Sink {
    sink_fn(move |batch: Vec<Translated>| {
        let ctl = ctl.clone();
        async move {
            let samples: Vec<Sample> = batch
                .into_iter()
                .map(|mut t| {
                    if let Some(c) = ctl.cluster(&t.cluster)
                        && let Some(name) = resolve_backend(&c, &t.backend)
                    {
                        t.backend = name.to_string();
                    }
                    t.into_sample()
                })
                .collect();
            let rx = ctl
                .submit_samples(samples)
                .await
                .map_err(|e| SinkError(format!("ingest: {e}")))?;
            let results = rx
                .await
                .map_err(|_| SinkError("ingest writer dropped the batch".into()))?;
            Ok(results
                .into_iter()
                .map(|r| r.err().map(|e| e.message))
                .collect())
        }
    })
}

/// The extra OTLP-only gRPC listener (`otlp_listen`), bound on `addr`;
/// `Ok(None)` when `addr` is empty. A bind failure names the address.
pub async fn bind_listener(addr: &str) -> Result<Option<tokio::net::TcpListener>, std::io::Error> {
    if addr.is_empty() {
        return Ok(None);
    }
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("otlp_listen = {addr:?}: cannot bind: {e}"),
        )
    })?;
    if let Ok(a) = l.local_addr() {
        tracing::info!(address = %a, "OTLP metrics listening (MetricsService/Export only)");
    }
    Ok(Some(l))
}

/// Serve only `service` (the OTLP `MetricsService`, sharing its
/// differencing state with the one on the main port) on `listener` until
/// `shutdown` resolves.
pub fn spawn_server(
    listener: tokio::net::TcpListener,
    service: opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer<OtlpService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown,
            ),
    )
}

/// Most distinct reasons listed in a rejection message.
pub const MAX_REASONS: usize = 10;

/// A one-line summary of rejections for `partial_success.error_message`.
pub fn summarize(reasons: impl IntoIterator<Item = String>) -> String {
    let mut all: Vec<String> = reasons.into_iter().collect();
    all.dedup();
    let more = all.len().saturating_sub(MAX_REASONS);
    all.truncate(MAX_REASONS);
    let mut s = all.join("; ");
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}
