//! Fuzz target: every aya.v1 request handler, the OTLP metrics export, the
//! Prometheus remote-write body, the KEDA external scaler and the ADS
//! (xDS) stream's request handling, run through the same service code the
//! server uses, over an in-memory controller (a store in a temp dir, a
//! manual clock, cluster `web` with backends a, b, c).
//!
//! The first byte picks the handler; the rest is the protobuf body (for
//! remote write, the snappy-compressed body; for ADS, a sequence of
//! `DiscoveryRequest`s, each prefixed by its length as 2 bytes big-endian,
//! handled in order on one stream). Each input must give a
//! response or an error status, never a panic. The controller is reopened
//! in a fresh directory every [`REOPEN_EVERY`] inputs so that its state
//! (and the store file) stays small.

use std::time::Duration;

use std::sync::Arc;

use aya_controller::api::AyaApi;
use aya_controller::clock::Clock;
use aya_controller::keda::KedaScaler;
use aya_controller::xds::{AdsStream, XdsStats};
use aya_controller::otlp::{IngestMapping, OtlpService, ingest_sink};
use aya_controller::remote_write;
use aya_controller::state::Controller;
use aya_fuzz::{T0_MS, controller_config};
use aya_proto::v1 as pb;
use aya_proto::v1::admin_service_server::AdminService;
use aya_proto::v1::decision_service_server::DecisionService;
use aya_proto::v1::forecast_service_server::ForecastService;
use aya_proto::v1::metrics_service_server::MetricsService;
use aya_proto::keda::external_scaler_server::ExternalScaler;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use futures::{FutureExt, StreamExt};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService as OtlpMetrics;
use prost::Message;
use tonic::Request;

/// Inputs served by one controller before it is reopened afresh.
const REOPEN_EVERY: u32 = 2000;

/// One controller and the services over it.
struct Harness {
    api: AyaApi,
    otlp: OtlpService,
    remote_write: remote_write::Receiver,
    keda: KedaScaler,
    xds_stats: Arc<XdsStats>,
    ctl: Controller,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn open() -> Harness {
        let dir = tempfile::tempdir().expect("a temp dir for the fuzz store");
        let ctl = Controller::open_with_clock(controller_config(dir.path()), Clock::manual(T0_MS))
            .expect("the fuzz controller opens");
        Harness {
            api: AyaApi::new(ctl.clone()),
            otlp: OtlpService::new(ctl.config().otlp.clone(), ingest_sink(ctl.clone())),
            remote_write: remote_write::Receiver::new(
                IngestMapping::prometheus(),
                ingest_sink(ctl.clone()),
            ),
            keda: KedaScaler::new(
                ctl.publisher().subscribe_all(),
                Some(aya_controller::server::forecast_peak(ctl.clone())),
            ),
            xds_stats: Arc::new(XdsStats::new()),
            ctl,
            _dir: dir,
        }
    }

    fn close(self) {
        let Harness {
            api,
            otlp,
            remote_write,
            keda,
            xds_stats,
            ctl,
            _dir,
        } = self;
        drop((api, otlp, remote_write, keda, xds_stats));
        ctl.close(Duration::from_secs(10));
    }
}

/// Decode `$body` as the handler's request and call it, dropping the result.
macro_rules! call {
    ($api:ident . $handler:ident, $body:expr) => {
        if let Some(r) = decode($body) {
            let _ = $api.$handler(r).await;
        }
    };
}

fn decode<M: Message + Default>(body: &[u8]) -> Option<Request<M>> {
    M::decode(body).ok().map(Request::new)
}

/// One ADS stream fed the length-prefixed `DiscoveryRequest`s of `body`
/// in order against the published state, then told the state changed.
fn ads(h: &Harness, mut body: &[u8]) {
    let state = h.ctl.publisher().state();
    let mut stream = AdsStream::with_clock(h.xds_stats.clone(), h.ctl.clock().clone());
    while body.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([body[0], body[1]])).min(body.len() - 2);
        if let Ok(req) = DiscoveryRequest::decode(&body[2..2 + n]) {
            let _ = stream.handle_request(req, &state);
        }
        body = &body[2 + n..];
    }
    let _ = stream.on_state_change(&state);
}

/// Run `body` through the handler `which` picks; results are dropped.
async fn handle(h: &Harness, which: u8, body: &[u8]) {
    let api = &h.api;
    let keda = &h.keda;
    match which % 25 {
        0 => {
            if let Ok(batch) = pb::IngestBatch::decode(body)
                && let Ok(done) = h.ctl.submit(batch.samples).await
            {
                let _ = done.await;
            }
        }
        1 => call!(api.query_history, body),
        2 => {
            if let Some(r) = decode(body)
                && let Ok(stream) = api.watch(r).await
            {
                // The current snapshot, when one is ready; never wait for the next.
                let _ = stream.into_inner().next().now_or_never();
            }
        }
        3 => call!(api.get_snapshot, body),
        4 => call!(api.get_forecast, body),
        5 => call!(api.list_clusters, body),
        6 => call!(api.upsert_cluster, body),
        7 => call!(api.delete_cluster, body),
        8 => call!(api.upsert_backend, body),
        9 => call!(api.delete_backend, body),
        10 => call!(api.set_override, body),
        11 => call!(api.clear_override, body),
        12 => call!(api.get_stats, body),
        13 => {
            if let Some(r) = decode::<ExportMetricsServiceRequest>(body) {
                let _ = h.otlp.export(r).await;
            }
        }
        15 => call!(api.warm_start, body),
        16 => call!(api.list_anomalies, body),
        17 => call!(api.list_events, body),
        18 => call!(api.add_event, body),
        19 => call!(api.delete_event, body),
        20 => call!(keda.is_active, body),
        21 => {
            if let Some(r) = decode(body)
                && let Ok(stream) = keda.stream_is_active(r).await
            {
                let _ = stream.into_inner().next().now_or_never();
            }
        }
        22 => call!(keda.get_metric_spec, body),
        23 => call!(keda.get_metrics, body),
        24 => ads(h, body),
        _ => {
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("snappy"),
            );
            let state = axum::extract::State(h.remote_write.clone());
            let body = bytes::Bytes::copy_from_slice(body);
            let _ = remote_write::write(state, None, headers, body).await;
        }
    }
}

/// The fuzzing loop's state: the runtime and the current controller.
struct Fuzzer {
    rt: tokio::runtime::Runtime,
    harness: Option<Harness>,
    served: u32,
}

impl Fuzzer {
    fn run(&mut self, data: &[u8]) {
        let Some((&which, body)) = data.split_first() else {
            return;
        };
        if self.served == REOPEN_EVERY {
            if let Some(h) = self.harness.take() {
                h.close();
            }
            self.served = 0;
        }
        self.served += 1;
        let h = self.harness.get_or_insert_with(Harness::open);
        self.rt.block_on(handle(h, which, body));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The harness is only touched from this thread, and a panic aborts.
    let mut fuzzer = std::panic::AssertUnwindSafe(Fuzzer {
        rt,
        harness: None,
        served: 0,
    });
    afl::fuzz!(|data: &[u8]| fuzzer.run(data));
}
