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
        }
    }
}

/// The tonic service, ready for `Server::add_service`.
pub fn metrics_service(mapping: IngestMapping, sink: Sink) -> MetricsServiceServer<OtlpService> {
    MetricsServiceServer::new(OtlpService::new(mapping, sink))
        .max_decoding_message_size(MAX_EXPORT_BYTES)
}

#[tonic::async_trait]
impl MetricsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
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
