//! The service: one tonic server (aya.v1, Envoy ADS, KEDA external scaler,
//! grpc.health.v1) on the gRPC listener, Prometheus `/metrics` on a separate
//! HTTP listener, and the background tasks (control ticks, retention, guarded
//! model retrains).
//!
//! The listeners and the shutdown signal are arguments, so tests run the
//! whole service in-process on `127.0.0.1:0` and stop it by resolving the
//! future.

use std::future::Future;
use std::time::Duration;

use aya_proto::v1::admin_service_server::AdminServiceServer;
use aya_proto::v1::decision_service_server::DecisionServiceServer;
use aya_proto::v1::forecast_service_server::ForecastServiceServer;
use aya_proto::v1::metrics_service_server::MetricsServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::AyaApi;
use crate::config::Config;
use crate::state::{Controller, ControllerError, now_secs};

/// Largest gRPC message accepted on the ingest stream (a batch of 100 000
/// samples with labels fits comfortably).
pub const MAX_INGEST_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// HTTP/2 receive window per stream. The default 64 KiB makes a client
/// wait for a window update every 64 KiB of a 400 KiB ingest batch; a
/// larger window lets a whole batch arrive at once. Backpressure is
/// unchanged: when the writer's queue is full the stream stops being read
/// and the window (bounded by this size) fills.
pub const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// HTTP/2 receive window per connection (shared by its streams).
pub const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Opening or restoring the controller failed.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The metrics HTTP server failed.
    #[error("metrics server: {0}")]
    Http(std::io::Error),
    /// A background task panicked.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The sockets the service serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (aya.v1, xDS, KEDA, health).
    pub grpc: TcpListener,
    /// Prometheus `/metrics`; `None` disables it.
    pub metrics: Option<TcpListener>,
}

/// Open the controller from `config` and serve until `shutdown` resolves.
pub async fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let ctl = tokio::task::spawn_blocking(move || Controller::open(config)).await??;
    let result = serve_controller(ctl.clone(), listeners, shutdown).await;
    let closed = tokio::task::spawn_blocking(move || ctl.close(DRAIN_TIMEOUT)).await?;
    if !closed {
        tracing::warn!(
            "controller handles still alive after shutdown; the store closes when they drop"
        );
    }
    result
}

/// How long in-flight RPCs may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve an opened controller until `shutdown` resolves: in-flight RPCs are
/// allowed to finish, background tasks stop, then this returns.
pub async fn serve_controller(
    ctl: Controller,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            shutdown.await;
            ctl.begin_shutdown();
            let _ = stop_tx.send(true);
        });
    }
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Publish every cluster before accepting connections, so the first
    // watcher already gets a snapshot.
    {
        let c = ctl.clone();
        let now = now_secs();
        if let Err(e) = tokio::task::spawn_blocking(move || c.tick_all(now)).await? {
            tracing::error!(error = %e, "initial control tick failed");
        }
    }

    let ticker = tokio::spawn(tick_loop(ctl.clone(), stop_rx.clone()));
    let retention = tokio::spawn(retention_loop(ctl.clone(), stop_rx.clone()));
    let retrain = tokio::spawn(retrain_loop(ctl.clone(), stop_rx.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<MetricsServiceServer<AyaApi>>().await;
    health.set_serving::<DecisionServiceServer<AyaApi>>().await;
    health.set_serving::<ForecastServiceServer<AyaApi>>().await;
    health.set_serving::<AdminServiceServer<AyaApi>>().await;

    let api = AyaApi::new(ctl.clone());
    let all = ctl.publisher().subscribe_all();
    let router = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .add_service(health_service)
        .add_service(
            MetricsServiceServer::new(api.clone())
                .max_decoding_message_size(MAX_INGEST_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_INGEST_MESSAGE_BYTES),
        )
        .add_service(DecisionServiceServer::new(api.clone()))
        .add_service(ForecastServiceServer::new(api.clone()))
        .add_service(AdminServiceServer::new(api))
        .add_service(crate::xds::ads_service(
            all.clone(),
            ctl.xds_stats().clone(),
        ))
        .add_service(crate::keda::keda_service_with_forecast(
            all,
            forecast_peak(ctl.clone()),
        ))
        .add_service(crate::otlp::metrics_service(
            crate::otlp::IngestMapping::default(),
            crate::otlp::ingest_sink(ctl.clone()),
        ));

    let metrics_task = listeners.metrics.map(|l| {
        let app = crate::metrics::router(
            ctl.metrics().clone(),
            ctl.publisher().clone(),
            ctl.xds_stats().clone(),
        )
        .merge(crate::remote_write::router(
            crate::otlp::IngestMapping::prometheus(),
            crate::otlp::ingest_sink(ctl.clone()),
        ));
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move { axum::serve(l, app).with_graceful_shutdown(stop).await })
    });

    let server = router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listeners.grpc),
        stopped(stop_rx.clone()),
    );
    let drain_deadline = {
        let stop = stopped(stop_rx.clone());
        async move {
            stop.await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        }
    };
    let grpc = tokio::select! {
        r = server => r,
        _ = drain_deadline => {
            tracing::warn!("in-flight RPCs did not finish within {DRAIN_TIMEOUT:?}; closing them");
            Ok(())
        }
    };
    health
        .set_not_serving::<MetricsServiceServer<AyaApi>>()
        .await;
    ticker.await?;
    retention.await?;
    retrain.await?;
    if let Some(t) = metrics_task {
        t.await?.map_err(ServeError::Http)?;
    }
    grpc?;
    tracing::info!("shut down");
    Ok(())
}

async fn tick_loop(ctl: Controller, stop: watch::Receiver<bool>) {
    // The initial tick already ran: the first one here is a period away.
    let period = Duration::from_secs_f64(ctl.config().tick_interval_seconds);
    periodically(period, period, stop, "control tick", move || {
        if let Err(e) = ctl.tick_all(now_secs()) {
            tracing::error!(error = %e, "control tick failed");
        }
    })
    .await;
}

async fn retention_loop(ctl: Controller, stop: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(ctl.config().retention_check_seconds);
    periodically(
        Duration::ZERO,
        period,
        stop,
        "retention",
        move || match ctl.apply_retention() {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention deleted old samples"),
            Err(e) => tracing::error!(error = %e, "retention failed"),
        },
    )
    .await;
}

/// Every `retrain_interval_seconds` (first one interval after start), retrain
/// each cluster's demand model on a blocking thread: the CPU work never runs
/// on the async workers and never holds the lock the tick needs.
async fn retrain_loop(ctl: Controller, stop: watch::Receiver<bool>) {
    let secs = ctl.config().retrain_interval_seconds;
    if !(secs > 0.0 && ctl.config().forecast_step_seconds > 0.0) {
        return;
    }
    let period = Duration::from_secs_f64(secs);
    periodically(period, period, stop, "retrain", move || {
        ctl.retrain_all(now_secs());
    })
    .await;
}

/// Run `job` on a blocking thread `first` from now and then every `period`
/// (a late run delays the next rather than bunching them), until `stop`
/// turns true. A panicking job is logged as `what` and the loop goes on.
async fn periodically<F>(
    first: Duration,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    job: F,
) where
    F: Fn() + Clone + Send + 'static,
{
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = tokio::task::spawn_blocking(job.clone()).await {
            tracing::error!(error = %e, "{what} panicked");
        }
    }
}

/// KEDA's `forecast_rps` metric: the peak of the cluster's latest demand
/// forecast over its horizon (`None` before the first forecast).
fn forecast_peak(ctl: Controller) -> crate::keda::ForecastSource {
    std::sync::Arc::new(move |cluster: &str| {
        let (record, _) = ctl.forecast(cluster).ok().flatten()?;
        record
            .last
            .mean
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    })
}
