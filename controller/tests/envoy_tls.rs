//! A REAL Envoy takes CDS and EDS from Aya over ADS on TLS (issue 13,
//! deliverable 1): Aya's gRPC listener serves TLS only, Envoy's `aya_xds`
//! cluster uses the `envoy.transport_sockets.tls` transport socket with
//! static certificate files (no SDS), and Aya maps the caller to the
//! `watch` role either by the client certificate (mTLS) or by a bearer token
//! Envoy sends as gRPC `initial_metadata`. The refusals are tested too: no
//! client certificate, a certificate or token without the `watch` role, and
//! an Envoy that does not trust Aya's certificate never get the cluster.
//!
//! The bootstrap is the one docs/envoy.md ("ADS over TLS") documents. The
//! certificates are made with the `openssl` command line at test time.
//! Envoy comes from `AYA_ENVOY_BIN` or `<workspace>/.venv-envoy/bin/envoy`;
//! without it the tests print a skip note, unless `AYA_REQUIRE_ENVOY=1` (CI).

// The clock rule (controller/clippy.toml) is for the service; a real Envoy runs in real time.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aya_controller::config::{Config, IdentityConfig, Role, TokenConfig};
use common::envoy::{EnvoyGuard, admin_text, free_port};
use common::pki::Pki;

const TOKEN: &str = "envoy-ads-token-0123456789abcdef";
const INGEST_TOKEN: &str = "shipper-token-0123456789abcdef";

/// How Envoy authenticates to Aya.
#[derive(Clone, Copy)]
enum Credential {
    /// Its client certificate (`client.pem`, SAN `edge.example`).
    Certificate,
    /// A bearer token in the ADS stream's `initial_metadata`.
    Token(&'static str),
    /// Nothing.
    None,
}

/// The docs/envoy.md "ADS over TLS" bootstrap: the `aya_xds` cluster speaks
/// HTTP/2 over TLS, verifies Aya's certificate against `ca_file` and the
/// name `localhost`, and presents a client certificate or a token.
fn bootstrap(pki: &Pki, ca_file: &str, aya_port: u16, cred: Credential, admin: u16) -> String {
    let path = |f: &str| pki.path(f).display().to_string();
    let client_cert = match cred {
        Credential::Certificate => format!(
            "\n          tls_certificates:\n          - certificate_chain: {{filename: \"{}\"}}\n            private_key: {{filename: \"{}\"}}",
            path("client.pem"),
            path("client.key")
        ),
        _ => String::new(),
    };
    let metadata = match cred {
        Credential::Token(t) => {
            format!(", initial_metadata: [{{key: authorization, value: \"Bearer {t}\"}}]")
        }
        _ => String::new(),
    };
    let ca = path(ca_file);
    format!(
        r#"node: {{id: aya-tls-envoy, cluster: aya-test}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: aya_xds}}{metadata}}}]
  cds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: aya_xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [h2]{client_cert}
          validation_context:
            trusted_ca: {{filename: "{ca}"}}
            match_typed_subject_alt_names: [{{san_type: DNS, matcher: {{exact: localhost}}}}]
    load_assignment:
      cluster_name: aya_xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {aya_port}}}}}}}}}]}}]
"#
    )
}

/// Aya's test cluster `web` (backends a, b, c on 127.0.0.1:9001..9003,
/// weights 1/2/3 from the `configured` policy) on a TLS-only listener.
fn aya_config(data: &Path, pki: &Pki, mtls: bool) -> Config {
    let mut cfg = common::config(data);
    cfg.tls = Some(pki.tls(mtls));
    cfg
}

fn token(name: &str, role: Role, value: &str) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        roles: vec![role],
        token: value.into(),
        token_file: None,
    }
}

/// Envoy's weights of cluster `web` per backend port, once all three
/// endpoints are there.
async fn web_weights(admin: u16) -> Option<Vec<(u16, u32)>> {
    let text = admin_text(admin, "/clusters").await.ok()?;
    let mut out: Vec<(u16, u32)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("web::127.0.0.1:")?;
            let (port, tail) = rest.split_once("::")?;
            let w = tail.strip_prefix("weight::")?;
            Some((port.parse().ok()?, w.trim().parse().ok()?))
        })
        .collect();
    out.sort_unstable();
    (out.len() == 3).then_some(out)
}

/// A stat of Envoy's (`/stats?filter=`), summed over every matching line.
async fn envoy_stat(admin: u16, name: &str) -> u64 {
    let text = admin_text(admin, &format!("/stats?filter={name}"))
        .await
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            l.split_once(": ")
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        })
        .sum()
}

fn start(bin: &Path, pki: &Pki, ca: &str, aya_port: u16, cred: Credential) -> (EnvoyGuard, u16) {
    let admin = free_port();
    let yaml = bootstrap(pki, ca, aya_port, cred, admin);
    (common::envoy::spawn(bin, &yaml, "info"), admin)
}

/// Envoy gets `web` with Aya's weights (1, 2, 3 on ports 9001..9003).
async fn expect_cluster(envoy: &EnvoyGuard, admin: u16, what: &str) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Some(w) = web_weights(admin).await {
            assert_eq!(w, vec![(9001, 1), (9002, 2), (9003, 3)], "{what}");
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{what}: Envoy never got cluster web over TLS; log:\n{}",
        envoy.log_tail()
    );
}

/// Envoy is up (its admin answers) and, `wait` later, has no `web`.
async fn expect_refused(envoy: &EnvoyGuard, admin: u16, wait: Duration, what: &str) {
    let t0 = Instant::now();
    while admin_text(admin, "/ready").await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: Envoy's admin never answered; log:\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(wait).await;
    assert_eq!(
        web_weights(admin).await,
        None,
        "{what}: Envoy got the cluster; log:\n{}",
        envoy.log_tail()
    );
    assert_eq!(
        envoy_stat(admin, "control_plane.connected_state").await,
        0,
        "{what}: Envoy reports a connected control plane"
    );
}

/// Envoy's log shows the ADS stream closed with gRPC status `code`
/// (7 PERMISSION_DENIED, 16 UNAUTHENTICATED) within 10 s.
async fn expect_closed_with(envoy: &EnvoyGuard, code: u32, what: &str) {
    let needle = format!(": {code}, ");
    let t0 = Instant::now();
    loop {
        let log = std::fs::read_to_string(envoy.dir().join("envoy.log")).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("gRPC config stream") && l.contains(&needle))
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: no ADS stream closed with status {code}; log:\n{}",
            envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ads_over_mtls_is_served_by_certificate_and_refused_without_one() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let data = tempfile::tempdir().unwrap();
    let mut cfg = aya_config(data.path(), &pki, true);
    cfg.auth.identities = vec![IdentityConfig {
        subject: "edge.example".into(),
        roles: vec![Role::Watch],
    }];
    let aya = common::start_ready(cfg).await;
    let port = aya.addr.port();

    let (envoy, admin) = start(&bin, &pki, "ca.pem", port, Credential::Certificate);
    let took = expect_cluster(&envoy, admin, "mTLS, certificate with the watch role").await;
    eprintln!("Envoy got web over mTLS in {took:?}");
    drop(envoy);

    let (envoy, admin) = start(&bin, &pki, "ca.pem", port, Credential::None);
    expect_refused(
        &envoy,
        admin,
        Duration::from_secs(3),
        "mTLS, no client certificate",
    )
    .await;
    assert!(
        envoy_stat(admin, "cluster.aya_xds.ssl.connection_error").await
            + envoy_stat(admin, "cluster.aya_xds.upstream_cx_connect_fail").await
            + envoy_stat(admin, "cluster.aya_xds.upstream_cx_destroy_remote").await
            > 0,
        "no failed connection counted; log:\n{}",
        envoy.log_tail()
    );
    drop(envoy);
    aya.stop().await;

    // The same certificate whose identity has only the `read` role.
    let data = tempfile::tempdir().unwrap();
    let mut cfg = aya_config(data.path(), &pki, true);
    cfg.auth.identities = vec![IdentityConfig {
        subject: "edge.example".into(),
        roles: vec![Role::Read],
    }];
    let aya = common::start_ready(cfg).await;
    let (envoy, admin) = start(
        &bin,
        &pki,
        "ca.pem",
        aya.addr.port(),
        Credential::Certificate,
    );
    expect_refused(
        &envoy,
        admin,
        Duration::from_secs(3),
        "certificate without watch",
    )
    .await;
    expect_closed_with(&envoy, 7, "certificate without watch").await;
    drop(envoy);
    aya.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ads_over_tls_is_served_by_token_and_checks_the_server() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let data = tempfile::tempdir().unwrap();
    let mut cfg = aya_config(data.path(), &pki, false);
    cfg.auth.tokens = vec![
        token("envoy", Role::Watch, TOKEN),
        token("shipper", Role::Ingest, INGEST_TOKEN),
    ];
    let aya = common::start_ready(cfg).await;
    let port = aya.addr.port();

    let (envoy, admin) = start(&bin, &pki, "ca.pem", port, Credential::Token(TOKEN));
    let took = expect_cluster(&envoy, admin, "TLS, watch token").await;
    eprintln!("Envoy got web over TLS with a token in {took:?}");
    drop(envoy);

    let (envoy, admin) = start(&bin, &pki, "ca.pem", port, Credential::None);
    expect_refused(&envoy, admin, Duration::from_secs(3), "TLS, no token").await;
    expect_closed_with(&envoy, 16, "TLS, no token").await;
    drop(envoy);

    let (envoy, admin) = start(&bin, &pki, "ca.pem", port, Credential::Token(INGEST_TOKEN));
    expect_refused(&envoy, admin, Duration::from_secs(3), "TLS, ingest token").await;
    expect_closed_with(&envoy, 7, "TLS, ingest token").await;
    drop(envoy);

    // An Envoy that trusts another CA (here: the client certificate as its
    // only root) refuses Aya's certificate: no cluster, a TLS error counted.
    let (envoy, admin) = start(&bin, &pki, "client.pem", port, Credential::Token(TOKEN));
    expect_refused(&envoy, admin, Duration::from_secs(3), "untrusted server").await;
    assert!(
        envoy_stat(admin, "cluster.aya_xds.ssl.fail_verify").await
            + envoy_stat(admin, "cluster.aya_xds.ssl.connection_error").await
            > 0,
        "no TLS verification failure counted; log:\n{}",
        envoy.log_tail()
    );
    drop(envoy);
    aya.stop().await;
}
