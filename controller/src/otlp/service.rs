//! The gRPC `opentelemetry.proto.collector.metrics.v1.MetricsService`.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::{Request, Response, Status};

use super::{IngestMapping, Sink, Translator, summarize};

/// Largest OTLP export accepted (bytes).
pub const MAX_EXPORT_BYTES: usize = 64 * 1024 * 1024;

/// The OTLP metrics service: translate, hand to the sink, report rejections.
#[derive(Clone)]
pub struct OtlpService {
    translator: Arc<Mutex<Translator>>,
    sink: Sink,
    rates: Arc<crate::auth::RateLimits>,
}

impl std::fmt::Debug for OtlpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpService").finish_non_exhaustive()
    }
}

impl OtlpService {
    /// A service translating with `mapping` into `sink`.
    pub fn new(mapping: IngestMapping, sink: Sink) -> Self {
        OtlpService {
            translator: Arc::new(Mutex::new(Translator::new(mapping))),
            sink,
            rates: Arc::new(crate::auth::RateLimits::none()),
        }
    }

    /// Count each client's data points against `rates.ingest` (the same
    /// per-client bucket as the aya.v1 ingest stream).
    pub fn with_rate_limits(self, rates: Arc<crate::auth::RateLimits>) -> Self {
        OtlpService { rates, ..self }
    }
}

/// The tonic service, ready for `Server::add_service`.
pub fn metrics_service(mapping: IngestMapping, sink: Sink) -> MetricsServiceServer<OtlpService> {
    serve(OtlpService::new(mapping, sink))
}

/// `service` as a tonic service, ready for `Server::add_service`.
pub fn serve(service: OtlpService) -> MetricsServiceServer<OtlpService> {
    MetricsServiceServer::new(service).max_decoding_message_size(MAX_EXPORT_BYTES)
}

#[tonic::async_trait]
impl MetricsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let client = crate::auth::ClientKey::of_request(&request);
        let req = request.into_inner();
        let translation = {
            let mut t = self
                .translator
                .lock()
                .map_err(|_| Status::internal("OTLP translator state is poisoned"))?;
            t.translate(&req)
        };
        let mut rejected: i64 = translation.rejected.iter().map(|r| r.points as i64).sum();
        let mut reasons: Vec<String> = translation
            .rejected
            .iter()
            .map(|r| format!("{}: {} point(s): {}", r.metric, r.points, r.reason))
            .collect();
        if let Some(limiter) = self.rates.ingest.as_ref()
            && !translation.samples.is_empty()
            && let Err(l) = limiter.try_take(&client.0, translation.samples.len() as f64)
        {
            // OTLP's throttling answer: RESOURCE_EXHAUSTED, retry later
            // (the collector's exporter retries it with back-off).
            return Err(Status::resource_exhausted(format!(
                "ingest rate limit: at most {} data points per second per client (limits.ingest_samples_per_second); nothing of this export was stored, retry in {:.2} s",
                limiter.rate(),
                l.retry_after_seconds
            )));
        }
        if !translation.samples.is_empty() {
            let names: Vec<(String, String)> = translation
                .samples
                .iter()
                .map(|s| (s.metric.clone(), s.backend.clone()))
                .collect();
            let results = (self.sink)(translation.samples)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            for ((metric, backend), r) in names.iter().zip(results) {
                if let Some(why) = r {
                    rejected += 1;
                    reasons.push(format!("{metric} of backend {backend:?}: {why}"));
                }
            }
        }
        let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: summarize(reasons),
        });
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success,
        }))
    }
}
