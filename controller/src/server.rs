//! The service: one tonic server (aya.v1, Envoy ADS, KEDA external scaler,
//! grpc.health.v1) on the gRPC listener, Prometheus `/metrics` on a separate
//! HTTP listener, and the background tasks (control ticks, retention, guarded
//! model retrains).
//!
//! Every listener goes through [`crate::tls::incoming`] (TLS, connection
//! limits, timeouts) and every request through the auth layer
//! ([`crate::auth`]); see `docs/security.md`.
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
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::AyaApi;
use crate::auth::{GrpcAuthLayer, HttpAuth, Policy, Scope, SecurityMetrics};
use crate::clock::Clock;
use crate::config::{Config, LimitsConfig};
use crate::state::{Controller, ControllerError};
use crate::tls::{AcceptOptions, Alpn, HttpListener, PeerInfo, ReloadingTls, TlsError};

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
    /// A listener could not be bound (`admin_listen`).
    #[error("{field} = {address:?}: cannot bind: {source}")]
    Bind {
        /// The configuration key.
        field: &'static str,
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS files could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A background task panicked.
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The HA group (`[ha]`) could not be joined.
    #[error("ha: {0}")]
    Ha(String),
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
    serve_ready(listeners, config, Clock::system(), shutdown, || {}).await
}

/// [`serve`] on a given clock (see [`Controller::open_with_clock`]): with a
/// [`Clock::manual`] the ticks, retention and retrains run when the test
/// moves the clock past their deadlines.
pub async fn serve_with_clock(
    listeners: Listeners,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_ready(listeners, config, clock, shutdown, || {}).await
}

/// [`serve_with_clock`], calling `ready` once the controller and its store
/// are open and verified, before any connection is served (`aya serve`
/// prints `listening on` there, so that the line means the store opened).
/// A non-empty `config.admin_listen` is bound here (see [`serve_admin_ready`]
/// to pass it bound).
pub async fn serve_ready(
    listeners: Listeners,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce() + Send,
) -> Result<(), ServeError> {
    let admin = if config.admin_listen.is_empty() {
        None
    } else {
        Some(
            TcpListener::bind(&config.admin_listen)
                .await
                .map_err(|source| ServeError::Bind {
                    field: "admin_listen",
                    address: config.admin_listen.clone(),
                    source,
                })?,
        )
    };
    serve_admin_ready(listeners, admin, config, clock, shutdown, ready).await
}

/// [`serve_ready`] with the admin listener (`admin_listen`) already bound:
/// when `admin` is `Some`, the mutating admin RPCs are served only there.
pub async fn serve_admin_ready(
    listeners: Listeners,
    admin: Option<TcpListener>,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce() + Send,
) -> Result<(), ServeError> {
    let (_no_reloads, reloads) = tokio::sync::mpsc::channel(1);
    serve_reloadable(listeners, admin, config, clock, shutdown, ready, reloads).await
}

/// A configuration reload request: the new file, parsed and validated, or
/// why it could not be (logged and counted; the running configuration
/// stays).
pub type Reload = Result<Config, String>;

/// [`serve_admin_ready`] that also applies configuration reloads from
/// `reloads` (what `aya serve` sends on `SIGHUP`, see
/// [`Controller::reload`]): each is logged, counted in
/// `aya_config_reloads_total{result}` and
/// `aya_config_last_reload_successful`.
pub async fn serve_reloadable(
    listeners: Listeners,
    admin: Option<TcpListener>,
    config: Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce() + Send,
    reloads: tokio::sync::mpsc::Receiver<Reload>,
) -> Result<(), ServeError> {
    // Certificates are checked before the store opens: a wrong path fails fast.
    let security = Security::new(&config)?;
    let ha = config.ha.clone();
    let ctl =
        tokio::task::spawn_blocking(move || Controller::open_with_clock(config, clock)).await??;
    if let Some(cfg) = ha {
        // Joined before `ready`: an unreachable etcd fails the start.
        let listen = listeners
            .grpc
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let replica = crate::ha::Replica::connect(&cfg, &listen)
            .await
            .map_err(|e| {
                ServeError::Ha(format!(
                    "ha.etcd_endpoints = {:?}: cannot reach etcd: {e}",
                    cfg.etcd_endpoints
                ))
            })?;
        ctl.set_replica(replica);
    }
    let reloader = tokio::spawn(apply_reloads(ctl.clone(), reloads));
    ready();
    let result = serve_secured(ctl.clone(), listeners, admin, security, shutdown).await;
    reloader.abort();
    let _ = reloader.await;
    let closed = tokio::task::spawn_blocking(move || ctl.close(DRAIN_TIMEOUT)).await?;
    if !closed {
        tracing::warn!(
            "controller handles still alive after shutdown; the store closes when they drop"
        );
    }
    result
}

/// Apply each reload request to `ctl` until the sender is gone.
async fn apply_reloads(ctl: Controller, mut reloads: tokio::sync::mpsc::Receiver<Reload>) {
    while let Some(request) = reloads.recv().await {
        let now = ctl.clock().now_secs();
        let new = match request {
            Ok(c) => c,
            Err(why) => {
                tracing::error!(error = %why, "configuration reload refused; the running configuration stays");
                ctl.metrics().observe_reload(false, now);
                continue;
            }
        };
        let c = ctl.clone();
        match tokio::task::spawn_blocking(move || c.reload(&new)).await {
            Ok(Ok(report)) => {
                tracing::info!(
                    upserted = ?report.upserted,
                    deleted = ?report.deleted,
                    "configuration reloaded"
                );
                if !report.restart_needed.is_empty() {
                    tracing::warn!(
                        settings = ?report.restart_needed,
                        "changed settings take effect only after a restart; they are left as they run"
                    );
                }
                ctl.metrics().observe_reload(true, now);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "configuration reload failed part-way");
                ctl.metrics().observe_reload(false, now);
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload task failed");
                ctl.metrics().observe_reload(false, now);
            }
        }
    }
}

/// How long in-flight RPCs may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The security setup of a configuration: credentials, TLS, limits and
/// their counters.
#[derive(Debug, Clone)]
pub struct Security {
    /// Credentials and roles.
    pub policy: Arc<Policy>,
    /// TLS, if configured (reloaded when its files change).
    pub tls: Option<Arc<ReloadingTls>>,
    /// The limits.
    pub limits: LimitsConfig,
    /// Counters on `/metrics`.
    pub metrics: SecurityMetrics,
}

impl Security {
    /// From a validated configuration (loads the TLS files).
    pub fn new(config: &Config) -> Result<Security, TlsError> {
        let metrics = SecurityMetrics::new(&config.limits);
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(ReloadingTls::load(t, metrics.clone())?)),
            None => None,
        };
        let mtls = tls.as_ref().is_some_and(|t| t.mtls());
        let policy = Arc::new(Policy::new(&config.auth, mtls));
        if policy.enabled() && tls.is_none() {
            tracing::warn!(
                "bearer tokens are configured without [tls]: they cross the network in clear text"
            );
        }
        Ok(Security {
            policy,
            tls,
            limits: config.limits.clone(),
            metrics,
        })
    }

    fn accept(&self, name: &'static str, alpn: Alpn) -> AcceptOptions {
        AcceptOptions {
            name,
            tls: self.tls.clone(),
            alpn,
            limits: self.limits.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Serve an opened controller until `shutdown` resolves: in-flight RPCs are
/// allowed to finish, background tasks stop, then this returns. The
/// background tasks run on the controller's clock ([`Controller::clock`]).
/// The security settings come from the controller's configuration.
pub async fn serve_controller(
    ctl: Controller,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let security = Security::new(ctl.config())?;
    serve_secured(ctl, listeners, None, security, shutdown).await
}

/// [`serve_controller`] with an optional admin listener and a prepared
/// [`Security`].
pub async fn serve_secured(
    ctl: Controller,
    listeners: Listeners,
    admin: Option<TcpListener>,
    security: Security,
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
    // The HA group (`[ha]`): the replicated snapshots are published and the
    // ingest log is written before any ingest is accepted; then the election.
    let ha = match crate::ha::start(&ctl, &stop_rx).await {
        None => None,
        Some(Ok(tasks)) => Some(tasks),
        Some(Err(e)) => return Err(ServeError::Ha(format!("cannot join the group: {e}"))),
    };

    // Per-client limits, on the controller's clock (shared by every listener).
    let rates = Arc::new(crate::auth::RateLimits::new(&security.limits, ctl.clock()));
    // One OTLP service (one differencing state) on the main port and on `otlp_listen`.
    let otlp = crate::otlp::service::serve(
        crate::otlp::OtlpService::new(
            ctl.config().otlp.clone(),
            crate::otlp::ingest_sink(ctl.clone()),
        )
        .with_rate_limits(rates.clone()),
    );
    let otlp_task = crate::otlp::bind_listener(&ctl.config().otlp_listen)
        .await
        .map_err(ServeError::Http)?
        .map(|l| crate::otlp::spawn_server(l, otlp.clone(), stopped(stop_rx.clone())));
    // The periodic tasks count their periods from here (on the controller's
    // clock), so a test that moves a manual clock once the initial tick is
    // published never races with their start.
    let started = ctl.clock().elapsed();
    warm_start_and_publish(&ctl).await?;
    // HAProxy publishers (`[[haproxy]]`): they follow the published state
    // and stop with the other background tasks.
    let haproxy_metrics = crate::haproxy::HaproxyMetrics::new();
    let mut periodic = Periodic::spawn(&ctl, &security, started, &stop_rx);
    periodic.haproxy = crate::haproxy::spawn_all(
        &ctl.config().haproxy,
        ctl.clone(),
        haproxy_metrics.clone(),
        stop_rx.clone(),
    );
    // ORCA clients (`[clusters.orca]`): one stream per backend, following
    // the registry; they stop with the other background tasks.
    let orca_metrics = crate::orca::OrcaMetrics::new();
    periodic.orca = Some(crate::orca::spawn(
        ctl.clone(),
        orca_metrics.clone(),
        stop_rx.clone(),
    ));

    let (health, health_service) = serving_health().await;

    let api = AyaApi::new(ctl.clone())
        .with_security(security.metrics.clone())
        .with_rate_limits(rates.clone());
    let main_scope = if admin.is_some() {
        Scope::NoAdmin
    } else {
        Scope::All
    };
    let router = main_router(
        &ctl,
        &security,
        main_scope,
        rates.clone(),
        health_service.clone(),
        api.clone(),
    )
    .add_service(otlp);

    let admin_task = admin.map(|l| {
        spawn_admin(
            l,
            &security,
            rates.clone(),
            health_service.clone(),
            api.clone(),
            &stop_rx,
        )
    });

    let metrics_task = match listeners.metrics {
        Some(l) => Some(spawn_metrics(
            l,
            &ctl,
            &security,
            &haproxy_metrics,
            &orca_metrics,
            &rates,
            &stop_rx,
        )?),
        None => None,
    };

    let server = router.serve_with_incoming_shutdown(
        ReceiverStream::new(crate::tls::incoming(
            listeners.grpc,
            security.accept("grpc", Alpn::H2),
            stop_rx.clone(),
        )),
        stopped(stop_rx.clone()),
    );
    let grpc = drain_within_deadline(server, stop_rx.clone()).await;
    health
        .set_not_serving::<MetricsServiceServer<AyaApi>>()
        .await;
    join_tasks(periodic, metrics_task, otlp_task, admin_task).await?;
    if let Some(ha) = ha {
        ha.join().await;
    }
    grpc?;
    tracing::info!("shut down");
    Ok(())
}

/// The health service, with every aya.v1 service reported serving.
async fn serving_health() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<MetricsServiceServer<AyaApi>>().await;
    health.set_serving::<DecisionServiceServer<AyaApi>>().await;
    health.set_serving::<ForecastServiceServer<AyaApi>>().await;
    health.set_serving::<AdminServiceServer<AyaApi>>().await;
    (health, health_service)
}

/// Wait for the background tasks and the metrics, OTLP and admin listeners to stop.
async fn join_tasks(
    periodic: Periodic,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    otlp_task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    admin_task: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
) -> Result<(), ServeError> {
    periodic.join().await?;
    if let Some(t) = metrics_task {
        t.await?.map_err(ServeError::Http)?;
    }
    if let Some(t) = otlp_task {
        t.await??;
    }
    if let Some(t) = admin_task {
        // The admin server drains like the main one; past the deadline it is cut.
        match tokio::time::timeout(DRAIN_TIMEOUT, t).await {
            Ok(r) => r??,
            Err(_) => tracing::warn!("admin RPCs did not finish within {DRAIN_TIMEOUT:?}"),
        }
    }
    Ok(())
}

/// The main listener's gRPC services behind the auth layer of `scope`
/// (the OTLP service is added by the caller, which shares it with
/// `otlp_listen`).
fn main_router(
    ctl: &Controller,
    security: &Security,
    scope: Scope,
    rates: Arc<crate::auth::RateLimits>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    api: AyaApi,
) -> tonic::transport::server::Router<
    tower::layer::util::Stack<GrpcAuthLayer, tower::layer::util::Identity>,
> {
    let all = ctl.publisher().subscribe_all();
    grpc_builder(&security.limits)
        .layer(
            GrpcAuthLayer::new(security.policy.clone(), scope, security.metrics.clone())
                .with_rate_limits(rates),
        )
        .add_service(health)
        .add_service(
            MetricsServiceServer::new(api.clone())
                .max_decoding_message_size(MAX_INGEST_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_INGEST_MESSAGE_BYTES),
        )
        .add_service(DecisionServiceServer::new(api.clone()))
        .add_service(ForecastServiceServer::new(api.clone()))
        .add_service(AdminServiceServer::new(api))
        .add_service(crate::xds::ads_service_monotonic(
            all.clone(),
            ctl.xds_stats().clone(),
            ctl.clock().clone(),
            ctl.replica().is_some(),
        ))
        .add_service(crate::keda::keda_service_with_forecast(
            all,
            forecast_peak(ctl.clone()),
        ))
}

/// Run `server` until it ends, or until `DRAIN_TIMEOUT` after `stop` turned
/// true (in-flight RPCs are then cut).
async fn drain_within_deadline(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let drain_deadline = async move {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        r = server => r,
        _ = drain_deadline => {
            tracing::warn!("in-flight RPCs did not finish within {DRAIN_TIMEOUT:?}; closing them");
            Ok(())
        }
    }
}

/// Serve the admin methods (and health) on the separate admin listener.
fn spawn_admin(
    listener: TcpListener,
    security: &Security,
    rates: Arc<crate::auth::RateLimits>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    api: AyaApi,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let router = grpc_builder(&security.limits)
        .layer(
            GrpcAuthLayer::new(
                security.policy.clone(),
                Scope::AdminOnly,
                security.metrics.clone(),
            )
            .with_rate_limits(rates),
        )
        .add_service(health)
        .add_service(AdminServiceServer::new(api));
    let incoming = ReceiverStream::new(crate::tls::incoming(
        listener,
        security.accept("admin", Alpn::H2),
        stop.clone(),
    ));
    let mut stop = stop.clone();
    tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
}

/// Warm-start the clusters with too little stored history (network and
/// CPU, off the async workers) before the first tick forecasts, then
/// publish every cluster before accepting connections, so that the first
/// watcher already gets a snapshot.
async fn warm_start_and_publish(ctl: &Controller) -> Result<(), ServeError> {
    let c = ctl.clone();
    let now = c.clock().now_secs();
    tokio::task::spawn_blocking(move || c.warm_start_all(now)).await?;
    // In an HA group this replica is not leading yet: the tick warms its
    // control loop and forecaster (a hot standby) and publishes nothing;
    // the leader publishes once elected.
    let c = ctl.clone();
    let now = c.clock().now_secs();
    if let Err(e) = tokio::task::spawn_blocking(move || c.tick_all(now)).await? {
        tracing::error!(error = %e, "initial control tick failed");
    }
    Ok(())
}

/// The service's periodic tasks: control ticks, retention, retrain and the
/// certificate reload check.
struct Periodic {
    ticker: tokio::task::JoinHandle<()>,
    retention: tokio::task::JoinHandle<()>,
    retrain: tokio::task::JoinHandle<()>,
    reload: Option<tokio::task::JoinHandle<()>>,
    /// The HAProxy publishers (started by the caller).
    haproxy: Vec<tokio::task::JoinHandle<()>>,
    /// The ORCA clients' supervisor (started by the caller).
    orca: Option<tokio::task::JoinHandle<()>>,
}

impl Periodic {
    /// Start them, counting their periods from `started` (on the
    /// controller's clock); they stop when `stop` turns true.
    fn spawn(
        ctl: &Controller,
        security: &Security,
        started: Duration,
        stop: &watch::Receiver<bool>,
    ) -> Periodic {
        Periodic {
            ticker: tokio::spawn(tick_loop(ctl.clone(), started, stop.clone())),
            retention: tokio::spawn(retention_loop(ctl.clone(), started, stop.clone())),
            retrain: tokio::spawn(retrain_loop(ctl.clone(), started, stop.clone())),
            reload: security
                .tls
                .clone()
                .map(|t| tokio::spawn(t.reload_loop(ctl.clock().clone(), stop.clone()))),
            haproxy: Vec::new(),
            orca: None,
        }
    }

    /// Wait until every one has stopped.
    async fn join(self) -> Result<(), ServeError> {
        self.ticker.await?;
        self.retention.await?;
        self.retrain.await?;
        for t in self.haproxy {
            t.await?;
        }
        if let Some(t) = self.orca {
            t.await?;
        }
        if let Some(t) = self.reload {
            t.await?;
        }
        Ok(())
    }
}

/// A tonic server with the configured HTTP/2 limits.
fn grpc_builder(limits: &LimitsConfig) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs_f64(
            limits.keepalive_interval_seconds,
        )))
        .http2_keepalive_timeout(Some(Duration::from_secs_f64(
            limits.keepalive_timeout_seconds,
        )))
}

/// Serve the HTTP listener (`/metrics`, remote-write) until `stop` turns true.
fn spawn_metrics(
    listener: TcpListener,
    ctl: &Controller,
    security: &Security,
    haproxy: &crate::haproxy::HaproxyMetrics,
    orca: &crate::orca::OrcaMetrics,
    rates: &Arc<crate::auth::RateLimits>,
    stop: &watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, ServeError> {
    let app = metrics_app(ctl, security, haproxy, orca, rates);
    let listener = HttpListener::new(listener, security.accept("http", Alpn::Http1), stop.clone())
        .map_err(ServeError::Http)?;
    let mut stop = stop.clone();
    Ok(tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<PeerInfo>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
    }))
}

/// The HTTP listener's routes (`/metrics` with the security counters
/// appended, Prometheus remote-write), behind [`crate::auth::http_auth`].
fn metrics_app(
    ctl: &Controller,
    security: &Security,
    haproxy: &crate::haproxy::HaproxyMetrics,
    orca: &crate::orca::OrcaMetrics,
    rates: &Arc<crate::auth::RateLimits>,
) -> axum::Router {
    let replica = ctl.replica().cloned();
    let orca = orca.clone();
    let (m, p, x, sec, hap, anomalies) = (
        ctl.metrics().clone(),
        ctl.publisher().clone(),
        ctl.xds_stats().clone(),
        security.metrics.clone(),
        haproxy.clone(),
        ctl.anomalies().cloned(),
    );
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let mut body = m.render(&p, &x);
                // One exposition: the security counters go before the `# EOF`.
                if let Some(cut) = body.rfind("# EOF") {
                    body.truncate(cut);
                }
                let mut extra = sec.render();
                if let Some(cut) = extra.rfind("# EOF") {
                    extra.truncate(cut);
                }
                body.push_str(&extra);
                if let Some(a) = &anomalies {
                    body.push_str(&a.render());
                }
                if let Some(r) = &replica {
                    body.push_str(&r.render());
                }
                let mut orca_text = orca.render();
                if let Some(cut) = orca_text.rfind("# EOF") {
                    orca_text.truncate(cut);
                }
                body.push_str(&orca_text);
                body.push_str(&hap.render());
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            crate::metrics::CONTENT_TYPE,
                        )],
                        body,
                    )
                }
            }),
        )
        .merge(crate::remote_write::router_for(
            crate::remote_write::Receiver::new(
                crate::otlp::IngestMapping::prometheus(),
                crate::otlp::ingest_sink(ctl.clone()),
            )
            .with_rate_limits(rates.clone()),
        ))
        .layer(axum::middleware::from_fn_with_state(
            HttpAuth {
                policy: security.policy.clone(),
                metrics: security.metrics.clone(),
            },
            crate::auth::http_auth,
        ))
}

async fn tick_loop(ctl: Controller, started: Duration, stop: watch::Receiver<bool>) {
    // The initial tick already ran: the first one here is a period away.
    let period = Duration::from_secs_f64(ctl.config().tick_interval_seconds);
    let clock = ctl.clock().clone();
    periodically(
        &clock,
        started + period,
        period,
        stop,
        "control tick",
        move || {
            // An HA follower ticks too, as a hot standby: only the leader
            // publishes (see `publish_if_changed`).
            if let Err(e) = ctl.tick_all(ctl.clock().now_secs()) {
                tracing::error!(error = %e, "control tick failed");
            }
        },
    )
    .await;
}

async fn retention_loop(ctl: Controller, started: Duration, stop: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(ctl.config().retention_check_seconds);
    let clock = ctl.clock().clone();
    periodically(
        &clock,
        started,
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
async fn retrain_loop(ctl: Controller, started: Duration, stop: watch::Receiver<bool>) {
    let secs = ctl.config().retrain_interval_seconds;
    if !(secs > 0.0 && ctl.config().forecast_step_seconds > 0.0) {
        return;
    }
    let period = Duration::from_secs_f64(secs);
    let clock = ctl.clock().clone();
    periodically(
        &clock,
        started + period,
        period,
        stop,
        "retrain",
        move || {
            ctl.retrain_all(ctl.clock().now_secs());
        },
    )
    .await;
}

/// Run `job` on a blocking thread when `clock` reaches `first` (on the scale
/// of [`Clock::elapsed`]) and then every
/// `period` (a late run delays the next rather than bunching them: Tokio's
/// `MissedTickBehavior::Delay`), until `stop` turns true. A panicking job is
/// logged as `what` and the loop goes on.
async fn periodically<F>(
    clock: &Clock,
    first: Duration,
    period: Duration,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    job: F,
) where
    F: Fn() + Clone + Send + 'static,
{
    let mut next = first;
    loop {
        tokio::select! {
            _ = clock.sleep_until(next) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        next = next_deadline(next, clock.elapsed(), period);
        if let Err(e) = tokio::task::spawn_blocking(job.clone()).await {
            tracing::error!(error = %e, "{what} panicked");
        }
    }
}

/// The deadline after one that fired at `now`: a period later, or a period
/// after `now` when it fired late (more than Tokio's 5 ms tolerance).
fn next_deadline(fired: Duration, now: Duration, period: Duration) -> Duration {
    if now > fired + Duration::from_millis(5) {
        now + period
    } else {
        fired + period
    }
}

/// KEDA's `forecast_rps` metric: the peak of the cluster's latest demand
/// forecast over its horizon (`None` before the first forecast).
pub fn forecast_peak(ctl: Controller) -> crate::keda::ForecastSource {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_late_run_delays_the_next_one() {
        let (s, p) = (Duration::from_secs, Duration::from_secs(10));
        assert_eq!(next_deadline(s(10), s(10), p), s(20));
        assert_eq!(
            next_deadline(s(10), s(10) + Duration::from_millis(5), p),
            s(20)
        );
        assert_eq!(next_deadline(s(10), s(25), p), s(35));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn periodic_jobs_follow_a_manual_clock() {
        let clock = Clock::manual(0);
        let runs = Arc::new(AtomicU32::new(0));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = {
            let (clock, runs) = (clock.clone(), runs.clone());
            tokio::spawn(async move {
                let job = move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                };
                periodically(
                    &clock,
                    Duration::from_secs(60),
                    Duration::from_secs(60),
                    stop_rx,
                    "test",
                    job,
                )
                .await;
            })
        };
        let wait_for = |n: u32| {
            let runs = runs.clone();
            async move {
                for _ in 0..500 {
                    if runs.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    tokio::task::yield_now().await;
                    std::thread::sleep(Duration::from_millis(1));
                }
                panic!("job did not run {n} times");
            }
        };
        clock.advance(Duration::from_secs(59)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not due before a minute");
        clock.advance(Duration::from_secs(1)).unwrap();
        wait_for(1).await;
        clock.advance(Duration::from_secs(60)).unwrap();
        wait_for(2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        stop_tx.send_replace(true);
        task.await.unwrap();
    }
}
