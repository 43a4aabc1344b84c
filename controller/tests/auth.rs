//! Authentication, authorization, TLS/mTLS, certificate reload, the admin
//! listener, the audit log and the connection limits (issue 13, parts 1
//! and 3). Servers run in-process on 127.0.0.1:0; test certificates are
//! generated at test time with the `openssl` command line.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aya_controller::clock::Clock;
use aya_controller::config::{Config, IdentityConfig, Role, TokenConfig};
use aya_controller::server::{Listeners, ServeError, serve_admin_ready};
use aya_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const OPS: &str = "ops-token-0123456789abcdef";
const ENVOY: &str = "envoy-token-0123456789abcdef";
const INGESTER: &str = "ingest-token-0123456789abcdef";
const READER: &str = "read-token-0123456789abcdef";

fn token(name: &str, role: Role, value: &str) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        roles: vec![role],
        token: value.into(),
        token_file: None,
    }
}

fn tokens() -> Vec<TokenConfig> {
    vec![
        token("ops", Role::Admin, OPS),
        token("envoy", Role::Watch, ENVOY),
        token("ingester", Role::Ingest, INGESTER),
        token("reader", Role::Read, READER),
    ]
}

/// A server started with [`serve_admin_ready`].
struct Server {
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    admin_addr: Option<std::net::SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    async fn start(mut cfg: Config, admin: bool, clock: Clock) -> Server {
        cfg.validate().unwrap();
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = if admin {
            Some(TcpListener::bind("127.0.0.1:0").await.unwrap())
        } else {
            None
        };
        let addr = grpc.local_addr().unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let admin_addr = admin.as_ref().map(|a| a.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_admin_ready(
            Listeners {
                grpc,
                metrics: Some(metrics),
            },
            admin,
            cfg,
            clock,
            async move {
                let _ = rx.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        ready_rx.await.expect("server ready");
        Server {
            addr,
            metrics_addr,
            admin_addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }

    async fn plain(&self) -> Channel {
        channel(self.addr).await
    }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

type Call = Box<
    dyn Fn(
            Channel,
            Option<&'static str>,
        ) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
        + Send
        + Sync,
>;

fn call<F, Fut>(f: F) -> Call
where
    F: Fn(Channel, Option<&'static str>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    Box::new(move |c, t| Box::pin(f(c, t)))
}

/// One call per role-protected service family, and the role it needs.
fn calls() -> Vec<(&'static str, Role, Call)> {
    use aya_proto::keda::external_scaler_client::ExternalScalerClient;
    use aya_proto::v1::admin_service_client::AdminServiceClient;
    use aya_proto::v1::decision_service_client::DecisionServiceClient;
    use aya_proto::v1::forecast_service_client::ForecastServiceClient;
    use aya_proto::v1::metrics_service_client::MetricsServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    vec![
        (
            "GetSnapshot",
            Role::Watch,
            call(|ch, t| async move {
                DecisionServiceClient::new(ch)
                    .get_snapshot(with_token(
                        pb::GetSnapshotRequest {
                            cluster: "web".into(),
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "Watch",
            Role::Watch,
            call(|ch, t| async move {
                DecisionServiceClient::new(ch)
                    .watch(with_token(
                        pb::WatchRequest {
                            cluster: "web".into(),
                            last_version: 0,
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "ADS",
            Role::Watch,
            call(|ch, t| async move {
                let req = DiscoveryRequest {
                    type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                    ..Default::default()
                };
                let mut s = AggregatedDiscoveryServiceClient::new(ch)
                    .stream_aggregated_resources(with_token(tokio_stream::iter(vec![req]), t))
                    .await?
                    .into_inner();
                s.message().await.map(|_| ())
            }),
        ),
        (
            "KEDA GetMetricSpec",
            Role::Watch,
            call(|ch, t| async move {
                ExternalScalerClient::new(ch)
                    .get_metric_spec(with_token(
                        aya_proto::keda::ScaledObjectRef {
                            name: "x".into(),
                            namespace: "y".into(),
                            scaler_metadata: [("cluster".to_string(), "web".to_string())].into(),
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "Ingest",
            Role::Ingest,
            call(|ch, t| async move {
                let batch = pb::IngestBatch {
                    sequence: 1,
                    samples: vec![common::sample("a", "rps", common::now_ms(), 1.0)],
                };
                let mut acks = MetricsServiceClient::new(ch)
                    .ingest(with_token(tokio_stream::iter(vec![batch]), t))
                    .await?
                    .into_inner();
                acks.message().await.map(|_| ())
            }),
        ),
        (
            "QueryHistory",
            Role::Read,
            call(|ch, t| async move {
                MetricsServiceClient::new(ch)
                    .query_history(with_token(
                        pb::QueryHistoryRequest {
                            cluster: "web".into(),
                            metric: "rps".into(),
                            ..Default::default()
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "GetForecast",
            Role::Read,
            call(|ch, t| {
                async move {
                    match ForecastServiceClient::new(ch)
                        .get_forecast(with_token(
                            pb::ForecastRequest {
                                cluster: "web".into(),
                                ..Default::default()
                            },
                            t,
                        ))
                        .await
                    {
                        // No forecast yet: the call itself was allowed.
                        Err(s)
                            if s.code() == Code::NotFound
                                || s.code() == Code::FailedPrecondition =>
                        {
                            Ok(())
                        }
                        r => r.map(|_| ()),
                    }
                }
            }),
        ),
        (
            "GetStats",
            Role::Read,
            call(|ch, t| async move {
                AdminServiceClient::new(ch)
                    .get_stats(with_token(pb::GetStatsRequest {}, t))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "ListAnomalies",
            Role::Read,
            call(|ch, t| async move {
                AdminServiceClient::new(ch)
                    .list_anomalies(with_token(
                        pb::ListAnomaliesRequest {
                            cluster: "web".into(),
                            include_closed: true,
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "ListEvents",
            Role::Read,
            call(|ch, t| async move {
                AdminServiceClient::new(ch)
                    .list_events(with_token(
                        pb::ListEventsRequest {
                            cluster: "web".into(),
                            from_ms: 0,
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "DeleteEvent",
            Role::Admin,
            call(|ch, t| async move {
                AdminServiceClient::new(ch)
                    .delete_event(with_token(
                        pb::DeleteEventRequest {
                            cluster: "web".into(),
                            id: "api-404".into(),
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "SetOverride",
            Role::Admin,
            call(|ch, t| async move {
                AdminServiceClient::new(ch)
                    .set_override(with_token(override_request(), t))
                    .await
                    .map(|_| ())
            }),
        ),
        (
            "DeleteCluster",
            Role::Admin,
            call(|ch, t| async move {
                AdminServiceClient::new(ch)
                    .delete_cluster(with_token(
                        pb::DeleteClusterRequest {
                            name: "no-such-cluster".into(),
                        },
                        t,
                    ))
                    .await
                    .map(|_| ())
            }),
        ),
    ]
}

fn override_request() -> pb::SetOverrideRequest {
    pb::SetOverrideRequest {
        cluster: "web".into(),
        weights: vec![
            pb::BackendWeight {
                backend: "a".into(),
                weight: 7,
            },
            pb::BackendWeight {
                backend: "b".into(),
                weight: 1,
            },
        ],
        ..Default::default()
    }
}

fn token_for(role: Role) -> &'static str {
    match role {
        Role::Admin => OPS,
        Role::Watch => ENVOY,
        Role::Ingest => INGESTER,
        Role::Read => READER,
    }
}

fn wrong_token_for(role: Role) -> &'static str {
    match role {
        Role::Admin => ENVOY,
        Role::Watch => READER,
        Role::Ingest => OPS,
        Role::Read => INGESTER,
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // A TLS listener answering a plaintext request resets the connection.
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_is_enforced_on_its_rpcs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.auth.tokens = tokens();
    let srv = Server::start(cfg, false, Clock::system()).await;
    let ch = srv.plain().await;
    for (name, role, call) in calls() {
        let e = call(ch.clone(), None).await.unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "{name} without a token: {e:?}"
        );
        assert!(
            e.message().contains(role.as_str()),
            "{name}: {}",
            e.message()
        );
        let e = call(ch.clone(), Some("not-a-valid-token-at-all"))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::Unauthenticated,
            "{name} with an unknown token"
        );
        let e = call(ch.clone(), Some(wrong_token_for(role)))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::PermissionDenied,
            "{name} with the wrong role: {e:?}"
        );
        assert!(e.message().contains(role.as_str()), "{}", e.message());
        match call(ch.clone(), Some(token_for(role))).await {
            Ok(()) => {}
            Err(e) => assert!(
                !matches!(e.code(), Code::Unauthenticated | Code::PermissionDenied),
                "{name} with the right role refused: {e:?}"
            ),
        }
    }
    // Health stays public (probes carry no token).
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    // The HTTP listener: /metrics needs `read`, remote-write needs `ingest`.
    let r = http_get(srv.metrics_addr, "/metrics", None).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{r}"
    );
    let r = http_get(srv.metrics_addr, "/metrics", Some(ENVOY)).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = http_get(srv.metrics_addr, "/metrics", Some(READER)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    for needle in [
        "aya_auth_denied_total{listener=\"grpc\",reason=\"unauthenticated\"} 26",
        "aya_auth_denied_total{listener=\"grpc\",reason=\"permission_denied\"} 13",
        "aya_auth_denied_total{listener=\"http\",reason=\"unauthenticated\"} 1",
        "aya_limit{limit=\"max_connections\"} 1024",
        "aya_connections_open{listener=\"grpc\"} ",
        "aya_ingest_samples_accepted_total",
    ] {
        assert!(r.contains(needle), "missing {needle:?} in\n{r}");
    }
    assert_eq!(r.matches("# EOF").count(), 1, "one exposition");
    let mut s = tokio::net::TcpStream::connect(srv.metrics_addr)
        .await
        .unwrap();
    s.write_all(
        b"POST /api/v1/write HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 401"), "{body}");
    srv.stop().await;
}

/// Collects every log line of the test binary (the audit test reads it).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuffer::default();
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter("aya::audit=info")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        buf
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_audited_and_served_only_on_the_admin_listener() {
    use aya_proto::v1::admin_service_client::AdminServiceClient;
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.auth.tokens = tokens();
    let srv = Server::start(cfg, true, Clock::system()).await;

    // The main listener refuses admin changes even with the admin token.
    let e = AdminServiceClient::new(srv.plain().await)
        .set_override(with_token(override_request(), Some(OPS)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("admin_listen"), "{}", e.message());
    // The admin listener serves them, and only them.
    let admin_ch = channel(srv.admin_addr.unwrap()).await;
    let mut admin = AdminServiceClient::new(admin_ch.clone());
    let e = aya_proto::v1::decision_service_client::DecisionServiceClient::new(admin_ch)
        .get_snapshot(with_token(
            pb::GetSnapshotRequest {
                cluster: "web".into(),
            },
            Some(ENVOY),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = admin
        .set_override(with_token(override_request(), Some(ENVOY)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    admin
        .set_override(with_token(override_request(), Some(OPS)))
        .await
        .unwrap();
    admin
        .upsert_cluster(with_token(
            pb::UpsertClusterRequest {
                cluster: Some(pb::Cluster {
                    name: "audited".into(),
                    backends: vec![pb::Backend {
                        name: "x".into(),
                        address: "127.0.0.1:9100".into(),
                        weight_hint: 2,
                    }],
                    ..Default::default()
                }),
            },
            Some(OPS),
        ))
        .await
        .unwrap();
    admin
        .delete_cluster(with_token(
            pb::DeleteClusterRequest {
                name: "audited".into(),
            },
            Some(OPS),
        ))
        .await
        .unwrap();
    let added = admin
        .add_event(with_token(
            pb::AddEventRequest {
                cluster: "web".into(),
                event: Some(pb::KnownEvent {
                    name: "audited launch".into(),
                    start_ms: 1_900_000_000_000,
                    end_ms: 1_900_000_360_000,
                    category: "launch".into(),
                    ..Default::default()
                }),
            },
            Some(OPS),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.id, "api-1");
    admin
        .delete_event(with_token(
            pb::DeleteEventRequest {
                cluster: "web".into(),
                id: added.id,
            },
            Some(OPS),
        ))
        .await
        .unwrap();
    srv.stop().await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("aya::audit")).collect();
    let set = lines
        .iter()
        .find(|l| l.contains("SetOverride") && l.contains("resource=\"web\""))
        .unwrap_or_else(|| panic!("no SetOverride audit line in\n{text}"));
    for needle in [
        "INFO",
        "identity=ops",
        "via=\"token\"",
        "before=\"weights [a=1,b=2,c=3]",
        "after=\"weights [a=7,b=1]",
    ] {
        assert!(set.contains(needle), "missing {needle:?} in {set}");
    }
    let up = lines
        .iter()
        .find(|l| l.contains("UpsertCluster") && l.contains("resource=\"audited\""))
        .unwrap_or_else(|| panic!("no UpsertCluster audit line in\n{text}"));
    assert!(up.contains("before=\"absent\""), "{up}");
    assert!(up.contains("127.0.0.1:9100"), "{up}");
    let del = lines
        .iter()
        .find(|l| l.contains("DeleteCluster") && l.contains("resource=\"audited\""))
        .unwrap_or_else(|| panic!("no DeleteCluster audit line in\n{text}"));
    assert!(del.contains("after=\"absent\""), "{del}");
    let add = lines
        .iter()
        .find(|l| l.contains("AddEvent") && l.contains("resource=\"web/events/api-1\""))
        .unwrap_or_else(|| panic!("no AddEvent audit line in\n{text}"));
    assert!(
        add.contains("before=\"absent\"") && add.contains("audited launch"),
        "{add}"
    );
    let dele = lines
        .iter()
        .find(|l| l.contains("DeleteEvent") && l.contains("resource=\"web/events/api-1\""))
        .unwrap_or_else(|| panic!("no DeleteEvent audit line in\n{text}"));
    assert!(
        dele.contains("after=\"absent\"") && dele.contains("audited launch"),
        "{dele}"
    );
    // The refused attempts changed nothing and are not audited as changes.
    assert_eq!(
        lines.iter().filter(|l| l.contains("SetOverride")).count(),
        1,
        "{text}"
    );
}

#[test]
fn a_non_loopback_bind_without_auth_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for (field, set) in [
        (
            "listen",
            (|c: &mut Config| c.listen = "0.0.0.0:0".into()) as fn(&mut Config),
        ),
        ("metrics_listen", |c| c.metrics_listen = "[::]:0".into()),
        ("admin_listen", |c| c.admin_listen = "10.1.2.3:0".into()),
    ] {
        let mut cfg = common::config(dir.path());
        set(&mut cfg);
        let err = cfg.clone().validate().unwrap_err().to_string();
        assert!(err.starts_with(&format!("config: {field}: ")), "{err}");
        assert!(
            err.contains("not a loopback address") && err.contains("insecure = true"),
            "{err}"
        );
        let mut insecure = cfg.clone();
        insecure.insecure = true;
        insecure.validate().unwrap();
        let mut tokens_on = cfg;
        tokens_on.auth.tokens = tokens();
        tokens_on.validate().unwrap();
    }
    // Loopback binds need nothing (the README quick start).
    for addr in ["127.0.0.1:0", "[::1]:0", "localhost:0"] {
        let mut cfg = common::config(dir.path());
        cfg.listen = addr.into();
        cfg.validate().unwrap();
    }
    // Through the server entry point too: nothing is bound or opened.
    let mut cfg = common::config(dir.path());
    cfg.listen = "0.0.0.0:0".into();
    let cfg_text = "listen = \"0.0.0.0:0\"\n";
    let mut parsed = Config::from_toml(cfg_text, Path::new("aya.toml")).unwrap();
    assert!(parsed.validate().is_err());
    let _ = cfg;
}

#[test]
fn bad_auth_and_tls_values_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c.auth.tokens = vec![token("x", Role::Admin, "short")]),
            "auth.tokens[0].token",
        ),
        (
            Box::new(|c| {
                c.auth.tokens = vec![TokenConfig {
                    token_file: Some("/nonexistent/aya-token".into()),
                    ..token("x", Role::Admin, "")
                }]
            }),
            "auth.tokens[0].token_file",
        ),
        (
            Box::new(|c| {
                c.auth.tokens = vec![TokenConfig {
                    roles: vec![],
                    ..token("x", Role::Admin, OPS)
                }]
            }),
            "auth.tokens[0].roles",
        ),
        (
            Box::new(|c| {
                c.auth.tokens = vec![token("x", Role::Admin, OPS), token("x", Role::Read, READER)]
            }),
            "auth.tokens[1].name",
        ),
        (
            Box::new(|c| {
                c.auth.identities = vec![IdentityConfig {
                    subject: "edge".into(),
                    roles: vec![Role::Watch],
                }]
            }),
            "auth.identities",
        ),
        (
            Box::new(|c| c.limits.max_connections = 0),
            "limits.max_connections",
        ),
        (
            Box::new(|c| c.limits.idle_timeout_seconds = 1.0),
            "limits.idle_timeout_seconds",
        ),
        (
            Box::new(|c| c.limits.handshake_timeout_seconds = 1e300),
            "limits.handshake_timeout_seconds",
        ),
        (Box::new(|c| c.admin_listen = "nope".into()), "admin_listen"),
    ];
    for (set, field) in cases {
        let mut cfg = common::config(dir.path());
        set(&mut cfg);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("config: {field}")),
            "{field}: {err}"
        );
        assert!(!err.contains(OPS), "a token leaked into {err}");
    }
    // A token file is read (and trimmed); the Debug form never shows tokens.
    let path = dir.path().join("token");
    std::fs::write(&path, format!("  {OPS}\n")).unwrap();
    let mut cfg = common::config(dir.path());
    cfg.auth.tokens = vec![TokenConfig {
        token_file: Some(path),
        ..token("ops", Role::Admin, "")
    }];
    cfg.validate().unwrap();
    assert_eq!(cfg.auth.tokens[0].token, OPS);
    assert!(!format!("{cfg:?}").contains(OPS));
    // The TOML form.
    let text = format!(
        "insecure = false\n[auth]\npublic_metrics = true\n[[auth.tokens]]\nname = \"envoy\"\nroles = [\"watch\", \"read\"]\ntoken = \"{ENVOY}\"\n[limits]\nmax_clusters = 5\n"
    );
    let mut c = Config::from_toml(&text, Path::new("aya.toml")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.auth.tokens[0].roles, vec![Role::Watch, Role::Read]);
    assert_eq!(c.limits.max_clusters, 5);
}

// ---- TLS -----------------------------------------------------------------

use common::pki::{Pki, pem_der};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_verified_clients_and_refuses_plaintext() {
    use aya_proto::v1::decision_service_client::DecisionServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut cfg = common::config(data.path());
    cfg.tls = Some(pki.tls(false));
    cfg.auth.tokens = tokens();
    let srv = Server::start(cfg, false, Clock::system()).await;

    let ch = pki.channel(srv.addr, false).await.unwrap();
    let snap = DecisionServiceClient::new(ch)
        .get_snapshot(with_token(
            pb::GetSnapshotRequest {
                cluster: "web".into(),
            },
            Some(ENVOY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.cluster, "web");
    // A plaintext HTTP/2 client gets no gRPC answer.
    let plain = Channel::from_shared(format!("http://{}", srv.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(plain) = plain {
        let r = DecisionServiceClient::new(plain)
            .get_snapshot(with_token(
                pb::GetSnapshotRequest {
                    cluster: "web".into(),
                },
                Some(ENVOY),
            ))
            .await;
        assert!(r.is_err(), "plaintext was served: {r:?}");
    }
    // The metrics listener speaks HTTPS too.
    assert_eq!(
        pki.presented(srv.metrics_addr, b"http/1.1").await,
        pem_der(&pki.read("server.pem"))
    );
    let r = http_get(srv.metrics_addr, "/metrics", Some(READER)).await;
    assert!(
        !r.starts_with("HTTP/1.1 200"),
        "plaintext /metrics answered: {r}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_a_client_certificate_and_maps_it_to_roles() {
    use aya_proto::v1::admin_service_client::AdminServiceClient;
    use aya_proto::v1::decision_service_client::DecisionServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut cfg = common::config(data.path());
    cfg.tls = Some(pki.tls(true));
    cfg.auth.identities = vec![IdentityConfig {
        subject: "edge.example".into(),
        roles: vec![Role::Watch],
    }];
    let srv = Server::start(cfg, false, Clock::system()).await;

    // No client certificate: the handshake (or the first call) fails.
    if let Ok(ch) = pki.channel(srv.addr, false).await {
        let r = DecisionServiceClient::new(ch)
            .get_snapshot(pb::GetSnapshotRequest {
                cluster: "web".into(),
            })
            .await;
        assert!(r.is_err(), "served without a client certificate");
    }
    let ch = pki.channel(srv.addr, true).await.unwrap();
    DecisionServiceClient::new(ch.clone())
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: "web".into(),
        })
        .await
        .unwrap();
    let e = AdminServiceClient::new(ch)
        .set_override(override_request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("certificate \"aya-edge\"") && e.message().contains("admin"),
        "{}",
        e.message()
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_certificates_are_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut cfg = common::config(data.path());
    cfg.tls = Some(pki.tls(false));
    let clock = Clock::manual(common::now_ms());
    let srv = Server::start(cfg, false, clock.clone()).await;
    let first = pem_der(&pki.read("server.pem"));
    let second = pem_der(&pki.read("server2.pem"));
    assert_eq!(pki.presented(srv.addr, b"h2").await, first);

    // Swap the files (rename, as cert managers do) with a later mtime.
    for (from, to) in [("server2.pem", "server.pem"), ("server2.key", "server.key")] {
        let tmp = pki.path(&format!("{to}.new"));
        std::fs::copy(pki.path(from), &tmp).unwrap();
        let f = std::fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(file_time_now() + Duration::from_secs(5))
            .unwrap();
        std::fs::rename(&tmp, pki.path(to)).unwrap();
    }
    // Not before the reload check is due on the server's clock.
    assert_eq!(pki.presented(srv.addr, b"h2").await, first);
    clock.advance(Duration::from_secs(2)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = pki.presented(srv.addr, b"h2").await;
        if seen == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen, second,
        "the new certificate is presented after the reload"
    );
    // A broken file keeps the last good certificates.
    std::fs::write(pki.path("server.pem"), b"not a certificate").unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(pki.path("server.pem"))
        .unwrap();
    f.set_modified(file_time_now() + Duration::from_secs(10))
        .unwrap();
    clock.advance(Duration::from_secs(2)).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pki.presented(srv.addr, b"h2").await, second);
    srv.stop().await;
}

// ---- limits --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_handshake_timeout_close_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.limits.max_connections = 2;
    cfg.limits.handshake_timeout_seconds = 0.3;
    cfg.limits.keepalive_interval_seconds = 0.05;
    cfg.limits.keepalive_timeout_seconds = 0.05;
    cfg.limits.idle_timeout_seconds = 0.5;
    let srv = Server::start(cfg, false, Clock::system()).await;

    // A silent HTTP connection is closed by the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(srv.metrics_addr)
        .await
        .unwrap();
    let mut one = [0u8; 1];
    let started = aya_controller::clock::transport_now();
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut one))
        .await
        .expect("an idle connection is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // Two silent connections take both slots; they are closed after the
    // handshake timeout (no HTTP/2 preface), and the slots free up.
    let mut a = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
        .await
        .expect("the third connection is closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    for s in [&mut a, &mut b] {
        let started = aya_controller::clock::transport_now();
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("a silent connection is closed by the handshake timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // Served again once the slots are free.
    let mut ch = None;
    for _ in 0..50 {
        if let Ok(c) = Channel::from_shared(format!("http://{}", srv.addr))
            .unwrap()
            .connect()
            .await
        {
            ch = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    aya_proto::v1::decision_service_client::DecisionServiceClient::new(ch.unwrap())
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: "web".into(),
        })
        .await
        .unwrap();
    let m = http_get(srv.metrics_addr, "/metrics", None).await;
    for needle in [
        "aya_connections_refused_total{listener=\"grpc\",reason=\"max_connections\"} 1",
        "aya_connections_refused_total{listener=\"grpc\",reason=\"handshake_timeout\"} 2",
        "aya_limit_rejections_total{limit=\"max_connections\"} 1",
        "aya_limit{limit=\"handshake_timeout_ms\"} 300",
        "aya_connections_refused_total{listener=\"http\",reason=\"idle_timeout\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_backend_limits_refuse_with_a_reason() {
    use aya_proto::v1::admin_service_client::AdminServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = common::config(dir.path());
    cfg.limits.max_clusters = 2;
    cfg.limits.max_backends_per_cluster = 3;
    let srv = Server::start(cfg, false, Clock::system()).await;
    let mut admin = AdminServiceClient::new(srv.plain().await);
    let cluster = |name: &str, n: usize| pb::UpsertClusterRequest {
        cluster: Some(pb::Cluster {
            name: name.into(),
            backends: (0..n)
                .map(|i| pb::Backend {
                    name: format!("b{i}"),
                    address: format!("127.0.0.1:{}", 9200 + i),
                    weight_hint: 1,
                })
                .collect(),
            ..Default::default()
        }),
    };
    let e = admin.upsert_cluster(cluster("big", 4)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("max_backends_per_cluster = 3"),
        "{}",
        e.message()
    );
    admin.upsert_cluster(cluster("second", 3)).await.unwrap();
    let e = admin.upsert_cluster(cluster("third", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("max_clusters = 2"), "{}", e.message());
    // Updating an existing cluster is not a new one.
    admin.upsert_cluster(cluster("second", 2)).await.unwrap();
    let e = admin
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "d".into(),
                address: "127.0.0.1:9300".into(),
                weight_hint: 1,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "web has 3 backends");
    let m = http_get(srv.metrics_addr, "/metrics", None).await;
    assert!(
        m.contains("aya_limit_rejections_total{limit=\"max_clusters\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("aya_limit_rejections_total{limit=\"max_backends_per_cluster\"} 2"),
        "{m}"
    );
    srv.stop().await;
}

/// The operating system's wall time, for setting file modification times
/// (which are wall time, not the controller's clock).
#[allow(clippy::disallowed_methods)] // reason: file mtimes are OS wall time
fn file_time_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// A proxyless gRPC client from the Python ecosystem (grpcio, from PyPI):
/// its own TLS stack (BoringSSL) presents a client certificate, reads a
/// snapshot and a Watch message as the `watch` role the certificate maps
/// to, and is refused the admin API; without a certificate it is refused.
/// Skipped with a note when grpcio is absent (a failure when
/// `AYA_REQUIRE_GRPCIO` is set, as `.ci/run` does after installing it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_with_mtls_watches_and_is_refused_admin() {
    let python = std::env::var("AYA_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_grpcio = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_grpcio {
        assert!(
            std::env::var_os("AYA_REQUIRE_GRPCIO").is_none(),
            "AYA_REQUIRE_GRPCIO is set but `{python} -c 'import grpc, grpc_tools'` fails \
             (pip install grpcio grpcio-tools)"
        );
        eprintln!("SKIPPED grpcio test: no grpcio for {python} (pip install grpcio grpcio-tools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut cfg = common::config(data.path());
    cfg.tls = Some(pki.tls(true));
    cfg.auth.identities = vec![IdentityConfig {
        subject: "edge.example".into(),
        roles: vec![Role::Watch],
    }];
    let srv = Server::start(cfg, false, Clock::system()).await;
    let stubs = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&python)
            .arg(root.join("tests/grpcio/client.py"))
            .arg(srv.addr.to_string())
            .arg(root.join("proto"))
            .arg(dir.path())
            .arg(stubs.path())
            .output(),
    )
    .await
    .expect("the grpcio client finished within 120 s")
    .expect("the grpcio client ran");
    assert!(
        out.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let got: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("grpcio client printed no JSON ({e}): {text}"));
    println!("grpcio client: {got}");
    assert!(got["snapshot_version"].as_u64().unwrap_or(0) >= 1, "{got}");
    assert_eq!(got["watch_version"], got["snapshot_version"], "{got}");
    // The `configured` policy publishes the weight hints 1, 2, 3.
    assert_eq!(
        got["weights"],
        serde_json::json!({"a": 1, "b": 2, "c": 3}),
        "{got}"
    );
    assert_eq!(got["admin"], "PERMISSION_DENIED", "{got}");
    assert_ne!(got["no_client_cert"], "served", "{got}");
    srv.stop().await;
}
