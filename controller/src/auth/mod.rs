//! Authentication and authorization of every request.
//!
//! One table, [`RPC_ROLES`], maps each gRPC method path to the role it needs
//! (or to [`Access::Public`]); [`GrpcAuthLayer`] is a tower layer on the tonic
//! server that looks the path up, authenticates the caller (bearer token, or
//! the client certificate of an mTLS connection) and refuses with
//! `UNAUTHENTICATED` or `PERMISSION_DENIED`. A path missing from the table is
//! refused (`PERMISSION_DENIED`), so a new RPC without a role is never open.
//! [`http_auth`] does the same for the HTTP listener (`/metrics`,
//! Prometheus remote-write) with 401/403.
//!
//! The authenticated [`Caller`] is put in the request extensions; the admin
//! handlers name it in their audit lines ([`audit`]). The layer also counts
//! admin RPCs against the caller's rate limit and puts the caller's
//! [`ClientKey`] in the extensions for the ingest handler's limit
//! ([`ratelimit`]).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::config::{AuthConfig, Role};
use crate::tls::{PeerIdentity, PeerInfo};

pub mod metrics;
pub mod ratelimit;

pub use metrics::SecurityMetrics;
pub use ratelimit::{ClientKey, RateLimits};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks).
    Public,
    /// A credential with this role.
    Role(Role),
}

/// The gRPC service names served on the main listener, with the table below
/// covering each one (the test `every_rpc_has_a_role` checks it against the
/// `.proto` files).
pub const SERVICES: &[&str] = &[
    "aya.v1.MetricsService",
    "aya.v1.DecisionService",
    "aya.v1.ForecastService",
    "aya.v1.AdminService",
    "envoy.service.discovery.v3.AggregatedDiscoveryService",
    "externalscaler.ExternalScaler",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "grpc.health.v1.Health",
];

/// Every gRPC method and the access it needs. A method not listed is refused.
pub const RPC_ROLES: &[(&str, Access)] = &[
    ("/aya.v1.MetricsService/Ingest", Access::Role(Role::Ingest)),
    (
        "/aya.v1.MetricsService/QueryHistory",
        Access::Role(Role::Read),
    ),
    ("/aya.v1.DecisionService/Watch", Access::Role(Role::Watch)),
    (
        "/aya.v1.DecisionService/GetSnapshot",
        Access::Role(Role::Watch),
    ),
    (
        "/aya.v1.ForecastService/GetForecast",
        Access::Role(Role::Read),
    ),
    (
        "/aya.v1.AdminService/ListClusters",
        Access::Role(Role::Read),
    ),
    (
        "/aya.v1.AdminService/UpsertCluster",
        Access::Role(Role::Admin),
    ),
    (
        "/aya.v1.AdminService/DeleteCluster",
        Access::Role(Role::Admin),
    ),
    (
        "/aya.v1.AdminService/UpsertBackend",
        Access::Role(Role::Admin),
    ),
    (
        "/aya.v1.AdminService/DeleteBackend",
        Access::Role(Role::Admin),
    ),
    (
        "/aya.v1.AdminService/SetOverride",
        Access::Role(Role::Admin),
    ),
    (
        "/aya.v1.AdminService/ClearOverride",
        Access::Role(Role::Admin),
    ),
    ("/aya.v1.AdminService/GetStats", Access::Role(Role::Read)),
    (
        "/aya.v1.AdminService/ListAnomalies",
        Access::Role(Role::Read),
    ),
    ("/aya.v1.AdminService/WarmStart", Access::Role(Role::Admin)),
    ("/aya.v1.AdminService/ListEvents", Access::Role(Role::Read)),
    ("/aya.v1.AdminService/AddEvent", Access::Role(Role::Admin)),
    (
        "/aya.v1.AdminService/DeleteEvent",
        Access::Role(Role::Admin),
    ),
    (
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        Access::Role(Role::Watch),
    ),
    (
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
        Access::Role(Role::Watch),
    ),
    (
        "/externalscaler.ExternalScaler/IsActive",
        Access::Role(Role::Watch),
    ),
    (
        "/externalscaler.ExternalScaler/StreamIsActive",
        Access::Role(Role::Watch),
    ),
    (
        "/externalscaler.ExternalScaler/GetMetricSpec",
        Access::Role(Role::Watch),
    ),
    (
        "/externalscaler.ExternalScaler/GetMetrics",
        Access::Role(Role::Watch),
    ),
    (
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        Access::Role(Role::Ingest),
    ),
    ("/grpc.health.v1.Health/Check", Access::Public),
    ("/grpc.health.v1.Health/Watch", Access::Public),
];

/// The access `path` needs; `None`: not a known method.
pub fn access(path: &str) -> Option<Access> {
    RPC_ROLES.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// Whether `path` is an admin (mutating) method.
pub fn is_admin(path: &str) -> bool {
    access(path) == Some(Access::Role(Role::Admin))
}

/// Who made a request (in the request extensions once authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token name, the certificate subject, or `anonymous` when no
    /// credentials are configured.
    pub identity: String,
    /// How: `token`, `certificate` or `none`.
    pub via: &'static str,
}

impl Caller {
    /// The caller of a request (`anonymous` when the layer did not run).
    pub fn of<T>(r: &tonic::Request<T>) -> Caller {
        r.extensions().get::<Caller>().cloned().unwrap_or(Caller {
            identity: "anonymous".into(),
            via: "none",
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No or unknown credentials.
    Unauthenticated(String),
    /// Known identity without the role (or a method this listener does not serve).
    PermissionDenied(String),
    /// Over the caller's rate limit (`RESOURCE_EXHAUSTED`, HTTP 429).
    RateLimited(String),
}

/// Which methods a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every method.
    All,
    /// Every method but the admin ones (when `admin_listen` is set).
    NoAdmin,
    /// Only the admin ones and health (the `admin_listen` listener).
    AdminOnly,
}

/// The credentials of `[auth]`, ready for lookups.
#[derive(Debug)]
pub struct Policy {
    tokens: Vec<(String, Vec<u8>, BTreeSet<Role>)>,
    identities: Vec<(String, BTreeSet<Role>)>,
    /// mTLS is on (any verified client certificate authenticates).
    mtls: bool,
    public_metrics: bool,
}

impl Policy {
    /// From a validated configuration (token files already read).
    pub fn new(auth: &AuthConfig, mtls: bool) -> Policy {
        Policy {
            tokens: auth
                .tokens
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.token.as_bytes().to_vec(),
                        t.roles.iter().copied().collect(),
                    )
                })
                .collect(),
            identities: auth
                .identities
                .iter()
                .map(|i| (i.subject.clone(), i.roles.iter().copied().collect()))
                .collect(),
            mtls,
            public_metrics: auth.public_metrics,
        }
    }

    /// Whether requests need credentials.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.identities.is_empty() || self.mtls
    }

    /// Authenticate and authorize a request for `access` from `authorization`
    /// (the header value, if any) on a connection with `peer`.
    pub fn check(
        &self,
        access: Access,
        what: &str,
        authorization: Option<&[u8]>,
        peer: Option<&PeerIdentity>,
    ) -> Result<Caller, Denied> {
        let anonymous = || Caller {
            identity: peer.map_or_else(|| "anonymous".to_string(), |p| p.subject.clone()),
            via: if peer.is_some() {
                "certificate"
            } else {
                "none"
            },
        };
        let Access::Role(role) = access else {
            return Ok(anonymous());
        };
        if !self.enabled() {
            return Ok(anonymous());
        }
        let (caller, roles) = if let Some(header) = authorization {
            let token = bearer(header).ok_or_else(|| {
                Denied::Unauthenticated(
                    "the authorization header is not `Bearer TOKEN`".to_string(),
                )
            })?;
            let (name, _, roles) = self
                .tokens
                .iter()
                .find(|(_, t, _)| constant_time_eq(t, token))
                .ok_or_else(|| Denied::Unauthenticated("unknown bearer token".to_string()))?;
            (
                Caller {
                    identity: name.clone(),
                    via: "token",
                },
                roles.clone(),
            )
        } else if let Some(p) = peer {
            let roles: BTreeSet<Role> = if self.identities.is_empty() {
                // mTLS without [[auth.identities]]: the client CA is the
                // authorization, every verified certificate has every role.
                [Role::Watch, Role::Ingest, Role::Admin, Role::Read].into()
            } else {
                self.identities
                    .iter()
                    .filter(|(s, _)| p.names().any(|n| n == s.as_str()))
                    .flat_map(|(_, r)| r.iter().copied())
                    .collect()
            };
            (
                Caller {
                    identity: p.subject.clone(),
                    via: "certificate",
                },
                roles,
            )
        } else {
            return Err(Denied::Unauthenticated(format!(
                "{what} needs the {} role: send `authorization: Bearer TOKEN`{}",
                role.as_str(),
                if self.mtls {
                    " or a client certificate"
                } else {
                    ""
                }
            )));
        };
        if roles.contains(&role) {
            Ok(caller)
        } else {
            Err(Denied::PermissionDenied(format!(
                "{} {:?} does not have the {} role needed by {what}",
                caller.via,
                caller.identity,
                role.as_str()
            )))
        }
    }

    /// The access an HTTP path needs (the metrics listener).
    pub fn http_access(&self, path: &str) -> Access {
        match path {
            "/api/v1/write" => Access::Role(Role::Ingest),
            "/metrics" if !self.public_metrics => Access::Role(Role::Read),
            _ => Access::Public,
        }
    }
}

fn bearer(header: &[u8]) -> Option<&[u8]> {
    let h = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().as_bytes())
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tower layer for the tonic server: authorizes every request by its path.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    policy: Arc<Policy>,
    scope: Scope,
    metrics: SecurityMetrics,
    rates: Arc<RateLimits>,
}

impl GrpcAuthLayer {
    /// A layer enforcing `policy` on a listener serving `scope`, with no
    /// rate limits.
    pub fn new(policy: Arc<Policy>, scope: Scope, metrics: SecurityMetrics) -> Self {
        GrpcAuthLayer {
            policy,
            scope,
            metrics,
            rates: Arc::new(RateLimits::none()),
        }
    }

    /// The same layer counting admin RPCs against `rates.admin`.
    pub fn with_rate_limits(self, rates: Arc<RateLimits>) -> Self {
        GrpcAuthLayer { rates, ..self }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;
    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`GrpcAuthLayer`].
#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    layer: GrpcAuthLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Decide a gRPC request: the caller, or the refusal.
fn decide_grpc(
    policy: &Policy,
    scope: Scope,
    path: &str,
    authorization: Option<&[u8]>,
    peer: Option<&PeerIdentity>,
) -> Result<Caller, Denied> {
    let shown = crate::validate::truncate_for_message(path, 200);
    let Some(access) = access(path) else {
        return Err(Denied::PermissionDenied(format!(
            "{shown} is not a known method (no role grants it)"
        )));
    };
    let served = match scope {
        Scope::All => true,
        Scope::NoAdmin => !is_admin(path),
        Scope::AdminOnly => is_admin(path) || access == Access::Public,
    };
    if !served {
        return Err(Denied::PermissionDenied(format!(
            "{shown} is not served on this listener (admin_listen {})",
            if scope == Scope::NoAdmin {
                "serves the admin methods"
            } else {
                "serves only the admin methods"
            }
        )));
    }
    policy.check(access, &shown, authorization, peer)
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let info = req.extensions().get::<PeerInfo>();
        let remote = info.and_then(|p| p.remote);
        let peer = info.and_then(|p| p.identity.clone());
        let decision = decide_grpc(
            &self.layer.policy,
            self.layer.scope,
            req.uri().path(),
            req.headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            peer.as_ref(),
        );
        let decision = decision.and_then(|caller| {
            let key = ClientKey::of(&caller, remote);
            if let Some(admin) = self.layer.rates.admin.as_ref()
                && is_admin(req.uri().path())
                && let Err(l) = admin.try_take(&key.0, 1.0)
            {
                self.layer.metrics.limit_hit("admin_requests_per_second");
                return Err(Denied::RateLimited(format!(
                    "admin rate limit: at most {} requests per second per client (limits.admin_requests_per_second); retry in {:.1} s",
                    admin.rate(),
                    l.retry_after_seconds
                )));
            }
            Ok((caller, key))
        });
        match decision {
            Ok((caller, key)) => {
                req.extensions_mut().insert(caller);
                req.extensions_mut().insert(key);
                // The service that was polled ready handles this request;
                // a fresh clone takes its place (tower's usual pattern).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await })
            }
            Err(d) => {
                let status = match d {
                    Denied::Unauthenticated(m) => {
                        self.layer.metrics.denied("grpc", "unauthenticated");
                        tonic::Status::unauthenticated(m)
                    }
                    Denied::PermissionDenied(m) => {
                        self.layer.metrics.denied("grpc", "permission_denied");
                        tonic::Status::permission_denied(m)
                    }
                    Denied::RateLimited(m) => tonic::Status::resource_exhausted(m),
                };
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// State of [`http_auth`].
#[derive(Debug, Clone)]
pub struct HttpAuth {
    /// The credentials.
    pub policy: Arc<Policy>,
    /// Refusal counters.
    pub metrics: SecurityMetrics,
}

/// Axum middleware of the HTTP listener: `/api/v1/write` needs `ingest`,
/// `/metrics` needs `read` (unless `auth.public_metrics`); 401 without or
/// with unknown credentials, 403 without the role.
pub async fn http_auth(
    axum::extract::State(auth): axum::extract::State<HttpAuth>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let access = auth.policy.http_access(req.uri().path());
    let info = req
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerInfo>>()
        .map(|c| c.0.clone());
    let peer = info.as_ref().and_then(|i| i.identity.clone());
    let remote = info.as_ref().and_then(|i| i.remote);
    let path = crate::validate::truncate_for_message(req.uri().path(), 200);
    let decision = auth.policy.check(
        access,
        &path,
        req.headers()
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
        peer.as_ref(),
    );
    match decision {
        Ok(caller) => {
            // The remote-write handler counts against this client's bucket.
            req.extensions_mut().insert(ClientKey::of(&caller, remote));
            next.run(req).await
        }
        Err(Denied::Unauthenticated(m)) => {
            auth.metrics.denied("http", "unauthenticated");
            (
                http::StatusCode::UNAUTHORIZED,
                [(http::header::WWW_AUTHENTICATE, "Bearer")],
                m,
            )
                .into_response()
        }
        Err(Denied::PermissionDenied(m)) => {
            auth.metrics.denied("http", "permission_denied");
            (http::StatusCode::FORBIDDEN, m).into_response()
        }
        Err(Denied::RateLimited(m)) => (http::StatusCode::TOO_MANY_REQUESTS, m).into_response(),
    }
}

/// Log one audit line (target `aya::audit`, INFO): who did what to which
/// `resource` (cluster, or `cluster/backend`), the state before and after.
pub fn audit(caller: &Caller, rpc: &str, resource: &str, before: &str, after: &str) {
    tracing::info!(
        target: "aya::audit",
        identity = %caller.identity,
        via = caller.via,
        rpc,
        resource,
        before,
        after,
        "admin change"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{IdentityConfig, TokenConfig};

    fn policy() -> Policy {
        let auth = AuthConfig {
            tokens: vec![
                TokenConfig {
                    name: "ops".into(),
                    roles: vec![Role::Admin, Role::Read],
                    token: "ops-token-0123456789".into(),
                    token_file: None,
                },
                TokenConfig {
                    name: "envoy".into(),
                    roles: vec![Role::Watch],
                    token: "envoy-token-0123456789".into(),
                    token_file: None,
                },
            ],
            identities: vec![IdentityConfig {
                subject: "edge.example".into(),
                roles: vec![Role::Watch],
            }],
            public_metrics: false,
        };
        Policy::new(&auth, true)
    }

    /// Every rpc of the in-repo `.proto` files (aya.v1, KEDA) has an entry,
    /// every entry names a served service, and every served service has one:
    /// adding an RPC without giving it a role fails here.
    #[test]
    fn every_rpc_has_a_role() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
        let mut files = vec![];
        for dir in ["aya/v1", "keda"] {
            for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                files.push(e.unwrap().path());
            }
        }
        let mut found = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let package = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("package "))
                .map(|p| p.trim_end_matches(';').trim().to_string())
                .unwrap();
            let mut service = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().map(str::to_string);
                }
                if let (Some(rest), Some(svc)) = (line.strip_prefix("rpc "), &service) {
                    let method = rest.split(['(', ' ']).next().unwrap();
                    let path = format!("/{package}.{svc}/{method}");
                    assert!(access(&path).is_some(), "{path} has no role in RPC_ROLES");
                    assert!(SERVICES.contains(&format!("{package}.{svc}").as_str()));
                    found += 1;
                }
            }
        }
        assert_eq!(found, 22, "aya.v1 and KEDA rpcs found in the .proto files");
        for (path, _) in RPC_ROLES {
            let svc = path[1..].split('/').next().unwrap();
            assert!(SERVICES.contains(&svc), "{path}: service not served");
        }
        for svc in SERVICES {
            assert!(
                RPC_ROLES
                    .iter()
                    .any(|(p, _)| p.starts_with(&format!("/{svc}/"))),
                "{svc} has no method in RPC_ROLES"
            );
        }
    }

    #[test]
    fn tokens_and_certificates_map_to_roles() {
        let p = policy();
        let admin = Access::Role(Role::Admin);
        let watch = Access::Role(Role::Watch);
        assert!(matches!(
            p.check(admin, "x", None, None),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            p.check(admin, "x", Some(b"Bearer nope-nope-nope-nope"), None),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            p.check(admin, "x", Some(b"Basic abc"), None),
            Err(Denied::Unauthenticated(_))
        ));
        let err = p
            .check(admin, "x", Some(b"Bearer envoy-token-0123456789"), None)
            .unwrap_err();
        assert_eq!(
            err,
            Denied::PermissionDenied(
                "token \"envoy\" does not have the admin role needed by x".into()
            )
        );
        let c = p
            .check(admin, "x", Some(b"bearer  ops-token-0123456789 "), None)
            .unwrap();
        assert_eq!((c.identity.as_str(), c.via), ("ops", "token"));
        let edge = PeerIdentity {
            subject: "CN=edge".into(),
            common_name: Some("edge".into()),
            sans: vec!["edge.example".into()],
        };
        let c = p.check(watch, "x", None, Some(&edge)).unwrap();
        assert_eq!(c.via, "certificate");
        assert!(matches!(
            p.check(admin, "x", None, Some(&edge)),
            Err(Denied::PermissionDenied(_))
        ));
        assert!(p.check(Access::Public, "x", None, None).is_ok());
    }

    #[test]
    fn scopes_split_admin_from_the_rest() {
        let p = Policy::new(&AuthConfig::default(), false);
        let set = "/aya.v1.AdminService/SetOverride";
        let watch = "/aya.v1.DecisionService/Watch";
        assert!(decide_grpc(&p, Scope::All, set, None, None).is_ok());
        assert!(decide_grpc(&p, Scope::NoAdmin, set, None, None).is_err());
        assert!(decide_grpc(&p, Scope::NoAdmin, watch, None, None).is_ok());
        assert!(decide_grpc(&p, Scope::AdminOnly, watch, None, None).is_err());
        assert!(decide_grpc(&p, Scope::AdminOnly, set, None, None).is_ok());
        assert!(decide_grpc(&p, Scope::All, "/x.Y/Z", None, None).is_err());
    }
}
