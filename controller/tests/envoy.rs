//! Aya's xDS server against a REAL Envoy (issue 6, item 6).
//!
//! Each test starts, all on 127.0.0.1: three tiny HTTP backends that answer
//! with their own port, Aya's ADS service (in-process, fed by a watch channel
//! the test drives), and an Envoy whose bootstrap takes CDS and EDS from Aya
//! over ADS. Requests go through Envoy's listener; the split is counted by
//! the port in each response body.
//!
//! Envoy comes from `AYA_ENVOY_BIN` or `<workspace>/.venv-envoy/bin/envoy`
//! (`bash scripts/install-envoy.sh` installs it). Without it the tests print a
//! skip note, unless `AYA_REQUIRE_ENVOY=1` (set by CI), where they fail.

// The clock rule (controller/clippy.toml) is for the service; a real Envoy runs in real time.
#![allow(clippy::disallowed_methods)]

mod common;

use common::envoy::{EnvoyGuard, free_port};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya_controller::publish::PublishedState;
use aya_controller::xds::{XdsStats, ads_service};
use aya_policy::LbAlgorithm;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

const CLUSTER: &str = "web";

// ---------------------------------------------------------------- Envoy binary

// ---------------------------------------------------------------- backends

/// An HTTP/1.1 backend (keep-alive) whose response body is its own port. A
/// request for `/hold/<its own port>` is never answered (it stays active in
/// Envoy until the test ends); `/hold/<another port>` is answered at once.
async fn start_backend() -> (u16, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let port = listener.local_addr().expect("backend addr").port();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stop_rx => return,
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else { return };
                    tokio::spawn(serve_backend_conn(sock, port));
                }
            }
        }
    });
    (port, stop_tx)
}

async fn serve_backend_conn(sock: TcpStream, port: u16) {
    let mut reader = BufReader::new(sock);
    let body = port.to_string();
    loop {
        // Read one request head (GET requests carry no body).
        let mut line = String::new();
        let mut saw_request = false;
        let mut path = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" || line == "\n" {
                if saw_request {
                    break;
                }
                continue;
            }
            if !saw_request {
                path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            }
            saw_request = true;
        }
        if path == format!("/hold/{port}") {
            std::future::pending::<()>().await;
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- HTTP client

/// A keep-alive HTTP/1.1 connection (content-length and chunked bodies).
struct Http {
    reader: BufReader<TcpStream>,
}

impl Http {
    async fn connect(port: u16) -> Http {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        Http {
            reader: BufReader::new(sock),
        }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?;
            if line.is_empty() {
                return Err("connection closed in headers".into());
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().ok();
            } else if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.reader
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                self.reader
                    .read_exact(&mut chunk)
                    .await
                    .map_err(|e| e.to_string())?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let mut chunk = vec![0; length.unwrap_or(0)];
            self.reader
                .read_exact(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            body = chunk;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

async fn admin_get(admin: u16, path: &str) -> Result<String, String> {
    let sock = TcpStream::connect(("127.0.0.1", admin))
        .await
        .map_err(|e| e.to_string())?;
    let mut http = Http {
        reader: BufReader::new(sock),
    };
    let (status, body) = http.get(path).await?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("admin {path}: HTTP {status}: {body}"))
    }
}

// ---------------------------------------------------------------- Envoy process

/// The bootstrap Aya's users can copy (see docs/xds.md): CDS and EDS
/// from Aya over ADS, a listener routing everything to the Aya cluster.
fn bootstrap(xds_port: u16, listen_port: u16, admin_port: u16) -> String {
    format!(
        r#"node: {{id: aya-test-envoy, cluster: aya-test}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: aya_xds}}}}]
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
    load_assignment:
      cluster_name: aya_xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {xds_port}}}}}}}}}]}}]
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen_port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            name: local
            validate_clusters: false
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{{match: {{prefix: "/"}}, route: {{cluster: {CLUSTER}}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#
    )
}

fn start_envoy(bin: &Path, xds_port: u16) -> (EnvoyGuard, u16, u16) {
    let (listen, admin) = (free_port(), free_port());
    let envoy = common::envoy::spawn(bin, &bootstrap(xds_port, listen, admin), "info");
    (envoy, listen, admin)
}

// ---------------------------------------------------------------- Aya side

fn state(version: u64, alg: LbAlgorithm, backends: &[(String, u16, u32)]) -> Arc<PublishedState> {
    common::envoy::published(CLUSTER, version, alg, backends)
}

/// Everything one test needs; drop order kills Envoy first.
struct Rig {
    envoy: EnvoyGuard,
    listen: u16,
    admin: u16,
    ports: Vec<u16>,
    tx: watch::Sender<Arc<PublishedState>>,
    stats: Arc<XdsStats>,
    version: u64,
    _stops: Vec<oneshot::Sender<()>>,
}

impl Rig {
    async fn start(bin: &Path, alg: LbAlgorithm, weights: &[u32]) -> Rig {
        let mut ports = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..weights.len() {
            let (p, s) = start_backend().await;
            ports.push(p);
            stops.push(s);
        }
        let backends: Vec<(String, u16, u32)> = ports
            .iter()
            .zip(weights)
            .map(|(p, w)| ("127.0.0.1".to_string(), *p, *w))
            .collect();
        let (tx, rx) = watch::channel(state(1, alg, &backends));
        let stats = Arc::new(XdsStats::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind xds");
        let xds_port = listener.local_addr().expect("xds addr").port();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ads_service(rx, stats.clone()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        let (envoy, listen, admin) = start_envoy(bin, xds_port);
        let rig = Rig {
            envoy,
            listen,
            admin,
            ports,
            tx,
            stats,
            version: 1,
            _stops: stops,
        };
        rig.wait_weights(weights).await;
        rig
    }

    fn publish(&mut self, alg: LbAlgorithm, backends: &[(String, u16, u32)]) {
        self.version += 1;
        self.tx.send_replace(state(self.version, alg, backends));
    }

    /// [`Rig::publish`] with the decision carrying `od`.
    fn publish_with_outlier_detection(
        &mut self,
        alg: LbAlgorithm,
        backends: &[(String, u16, u32)],
        od: aya_policy::OutlierDetection,
    ) {
        self.version += 1;
        let mut st = (*state(self.version, alg, backends)).clone();
        for snap in st.clusters.values_mut() {
            Arc::make_mut(snap).decision.outlier_detection = Some(od);
        }
        self.tx.send_replace(Arc::new(st));
    }

    /// [`Rig::publish`] with the decision's in-flight limit set to `limit`.
    fn publish_with_max_requests(
        &mut self,
        alg: LbAlgorithm,
        backends: &[(String, u16, u32)],
        limit: Option<u32>,
    ) {
        self.version += 1;
        let mut st = (*state(self.version, alg, backends)).clone();
        for snap in st.clusters.values_mut() {
            Arc::make_mut(snap).decision.max_requests = limit;
        }
        self.tx.send_replace(Arc::new(st));
    }

    /// Hold one request on backend `port` (a `/hold/<port>` request that the
    /// backend never answers), trying fresh connections until one lands
    /// there; the connection is returned so the request stays active.
    async fn hold_on(&self, port: u16) -> Http {
        for _ in 0..40 {
            let mut http = Http::connect(self.listen).await;
            let path = format!("/hold/{port}");
            if tokio::time::timeout(Duration::from_millis(300), http.get(&path))
                .await
                .is_err()
            {
                return http;
            }
        }
        panic!("no request ever reached backend {port}");
    }

    /// Wait (up to 10 s: a hang guard) until the active cluster satisfies
    /// `ok`; returns it.
    async fn wait_cluster(
        &self,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let cluster = self.active_cluster().await.unwrap_or_default();
            if ok(&cluster) {
                return cluster;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{what} never became active: {cluster}\nenvoy log tail:\n{}",
                self.envoy.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The active dynamic cluster in Envoy's config dump, as JSON.
    async fn active_cluster(&self) -> Result<serde_json::Value, String> {
        let dump = admin_get(self.admin, "/config_dump?resource=dynamic_active_clusters").await?;
        let v: serde_json::Value = serde_json::from_str(&dump).map_err(|e| e.to_string())?;
        let configs = v["configs"].as_array().ok_or("no configs in dump")?;
        configs
            .iter()
            .map(|c| c["cluster"].clone())
            .find(|c| c["name"] == CLUSTER)
            .ok_or_else(|| "cluster not active".to_string())
    }

    fn loopback(&self, weights: &[u32]) -> Vec<(String, u16, u32)> {
        self.ports
            .iter()
            .zip(weights)
            .map(|(p, w)| ("127.0.0.1".to_string(), *p, *w))
            .collect()
    }

    /// Weights per backend port as Envoy's admin `/clusters` reports them.
    async fn envoy_weights(&self) -> Option<HashMap<u16, u32>> {
        let text = admin_get(self.admin, "/clusters").await.ok()?;
        let mut out = HashMap::new();
        for line in text.lines() {
            // web::127.0.0.1:PORT::weight::W
            let mut parts = line.split("::");
            if parts.next() != Some(CLUSTER) {
                continue;
            }
            let (Some(addr), Some("weight"), Some(w)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let port = addr.rsplit(':').next().and_then(|p| p.parse().ok())?;
            out.insert(port, w.trim().parse().ok()?);
        }
        Some(out)
    }

    /// Wait (up to 10 s: a hang guard, not a timing check) until Envoy runs `weights`.
    async fn wait_weights(&self, weights: &[u32]) -> Duration {
        let want: HashMap<u16, u32> = self
            .ports
            .iter()
            .copied()
            .zip(weights.iter().copied())
            .collect();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if self.envoy_weights().await.as_ref() == Some(&want) {
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!(
            "Envoy never reported weights {want:?} (last: {:?}); xds stats {:?}\nenvoy log tail:\n{}",
            self.envoy_weights().await,
            self.stats.snapshot(),
            self.envoy.log_tail()
        );
    }

    /// Send `n` sequential requests through Envoy; count responses per backend port.
    async fn split(&self, n: usize) -> HashMap<u16, usize> {
        let mut http = Http::connect(self.listen).await;
        let mut counts = HashMap::new();
        for i in 0..n {
            let (status, body) = match http.get("/").await {
                Ok(r) => r,
                Err(e) => panic!(
                    "request {i} through Envoy failed: {e}\nenvoy log tail:\n{}",
                    self.envoy.log_tail()
                ),
            };
            assert_eq!(status, 200, "request {i}: body {body:?}");
            let port: u16 = body
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("request {i}: unexpected body {body:?}"));
            *counts.entry(port).or_insert(0) += 1;
        }
        counts
    }

    fn shares_match(&self, counts: &HashMap<u16, usize>, weights: &[u32], tolerance: f64) -> bool {
        let total: usize = counts.values().sum();
        let wsum: u32 = weights.iter().sum();
        self.ports.iter().zip(weights).all(|(p, w)| {
            let got = *counts.get(p).unwrap_or(&0) as f64 / total.max(1) as f64;
            (got - f64::from(*w) / f64::from(wsum)).abs() <= tolerance
        })
    }

    async fn stat(&self, name: &str) -> Option<u64> {
        let text = admin_get(self.admin, &format!("/stats?filter={name}"))
            .await
            .ok()?;
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// The `lb_policy` of the active dynamic cluster in Envoy's config dump
    /// (`None` means the default, ROUND_ROBIN, which the JSON dump omits).
    async fn active_lb_policy(&self) -> Result<Option<String>, String> {
        let dump = admin_get(self.admin, "/config_dump?resource=dynamic_active_clusters").await?;
        let v: serde_json::Value = serde_json::from_str(&dump).map_err(|e| e.to_string())?;
        let configs = v["configs"].as_array().ok_or("no configs in dump")?;
        let cluster = configs
            .iter()
            .map(|c| &c["cluster"])
            .find(|c| c["name"] == CLUSTER)
            .ok_or("cluster not active")?;
        Ok(cluster["lb_policy"].as_str().map(str::to_string))
    }
}

// ---------------------------------------------------------------- tests

/// Weights 1:3:6 split 2000 requests within ±5%, and a live change to 6:3:1
/// is applied (admin view and traffic) within 1 s of publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_and_live_changes_apply_fast() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let mut rig = Rig::start(&bin, LbAlgorithm::WeightedRoundRobin, &[1, 3, 6]).await;

    let counts = rig.split(2000).await;
    eprintln!(
        "weights 1:3:6 over 2000 requests: {:?}",
        rig.ports.iter().map(|p| counts.get(p)).collect::<Vec<_>>()
    );
    assert!(
        rig.shares_match(&counts, &[1, 3, 6], 0.05),
        "split {counts:?} is not 1:3:6 ±5%"
    );

    // Live change: time from publication until a window of 100 requests has the new split.
    let new = [6, 3, 1];
    let t0 = Instant::now();
    rig.publish(LbAlgorithm::WeightedRoundRobin, &rig.loopback(&new));
    let admin_seen = rig.wait_weights(&new).await;
    let mut traffic_seen = None;
    while t0.elapsed() < Duration::from_secs(10) {
        let window = rig.split(100).await;
        if rig.shares_match(&window, &new, 0.05) {
            traffic_seen = Some(t0.elapsed());
            break;
        }
    }
    let traffic_seen = traffic_seen.expect("the new split never showed in traffic within 10 s");
    eprintln!(
        "weight change: admin shows it after {admin_seen:?}, traffic window matches after {traffic_seen:?}"
    );
    assert!(
        traffic_seen < Duration::from_secs(1),
        "weight change took {traffic_seen:?} (> 1 s) to apply"
    );
    let counts = rig.split(1000).await;
    assert!(
        rig.shares_match(&counts, &new, 0.05),
        "split {counts:?} is not 6:3:1 ±5%"
    );

    let s = rig.stats.snapshot();
    eprintln!(
        "xds: pushes {} acks {} nacks {} mean ack latency {} us, last (live EDS push) {} us",
        s.pushes,
        s.acks,
        s.nacks,
        s.ack_latency_micros_sum / s.acks.max(1),
        s.ack_latency_micros_last
    );
    assert_eq!(s.nacks, 0, "unexpected NACK: {:?}", s.last_nack);
    assert!(s.acks >= 3, "CDS, EDS and the pushed EDS are ACKed: {s:?}");
}

/// Switching the algorithm re-sends CDS; Envoy re-warms the cluster and
/// re-requests EDS, which Aya answers, so the new lb_policy is active without
/// the 15 s initial-fetch timeout, and traffic keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_policy_switch_via_cds_applies_without_warming_stall() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let mut rig = Rig::start(&bin, LbAlgorithm::WeightedRoundRobin, &[1, 3, 6]).await;
    assert_eq!(
        rig.active_lb_policy().await,
        Ok(None),
        "starts as ROUND_ROBIN (the default)"
    );

    let t0 = Instant::now();
    rig.publish(LbAlgorithm::LeastRequest, &rig.loopback(&[1, 3, 6]));
    let mut active = None;
    // Poll for 10 s: a stall would last 15 s (Envoy's initial_fetch_timeout).
    while t0.elapsed() < Duration::from_secs(10) {
        if rig.active_lb_policy().await.ok().flatten().as_deref() == Some("LEAST_REQUEST") {
            active = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let active = active.unwrap_or_else(|| {
        panic!(
            "LEAST_REQUEST never became active (warming stall?)\nenvoy log tail:\n{}",
            rig.envoy.log_tail()
        )
    });
    eprintln!("lb_policy switch active after {active:?}");
    assert_eq!(
        rig.stat(&format!("cluster.{CLUSTER}.init_fetch_timeout"))
            .await,
        Some(0),
        "EDS initial fetch timed out"
    );
    assert_eq!(rig.stat("cluster_manager.warming_clusters").await, Some(0));
    let counts = rig.split(200).await;
    assert_eq!(
        counts.values().sum::<usize>(),
        200,
        "traffic flows after the switch"
    );
    assert_eq!(rig.stats.nacks(), 0, "{:?}", rig.stats.last_nack());

    // And back, to MAGLEV (no hash policy: still serves).
    rig.publish(LbAlgorithm::Maglev, &rig.loopback(&[1, 3, 6]));
    let t1 = Instant::now();
    while rig.active_lb_policy().await.ok().flatten().as_deref() != Some("MAGLEV") {
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "MAGLEV never became active"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        rig.stat(&format!("cluster.{CLUSTER}.init_fetch_timeout"))
            .await,
        Some(0)
    );
    assert_eq!(rig.split(50).await.values().sum::<usize>(), 50);
}

/// Join shortest queue reaches Envoy as least request with
/// `selection_method: FULL_SCAN`, and Envoy scans: with one request held on
/// backend A (active 1) and B idle, two random picks with replacement still
/// send about a quarter of new requests to A (both picks on A); the full
/// scan sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_shortest_queue_is_envoys_full_scan() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let mut rig = Rig::start(&bin, LbAlgorithm::LeastRequest, &[1, 1]).await;
    let (a, b) = (rig.ports[0], rig.ports[1]);
    let on_a = |counts: &HashMap<u16, usize>| *counts.get(&a).unwrap_or(&0);
    // One request held on A (active 1), B idle.
    let held = rig.hold_on(a).await;
    let counts = rig.split(400).await;
    eprintln!(
        "two picks, one request held on A: {} of 400 to A",
        on_a(&counts)
    );
    assert_eq!(counts.values().sum::<usize>(), 400);
    assert!(
        on_a(&counts) >= 40,
        "two picks with replacement should send ~100 of 400 to the busy host: {counts:?} (A={a}, B={b})"
    );
    drop(held);

    rig.publish(LbAlgorithm::JoinShortestQueue, &rig.loopback(&[1, 1]));
    let least_request = "envoy.load_balancing_policies.least_request";
    let first = |c: &serde_json::Value| {
        c["load_balancing_policy"]["policies"][0]["typed_extension_config"].clone()
    };
    let cluster = rig
        .wait_cluster("the typed least-request policy", |c| {
            first(c)["name"] == least_request
        })
        .await;
    assert_eq!(
        first(&cluster)["typed_config"]["selection_method"],
        "FULL_SCAN",
        "{cluster}"
    );
    assert_eq!(rig.stats.nacks(), 0, "{:?}", rig.stats.last_nack());
    // The cluster was rebuilt: hold a request on A again under the new policy.
    let _held = rig.hold_on(a).await;
    let counts = rig.split(400).await;
    assert_eq!(
        (on_a(&counts), counts.values().sum::<usize>()),
        (0, 400),
        "a full scan never picks the busy host while the other is idle: {counts:?}"
    );
}

/// The engine's in-flight limit reaches Envoy as the cluster's circuit
/// breaker: with `max_requests` 1 and one request held, the next request is
/// refused at once (503, `upstream_rq_active_overflow`); without the limit
/// it is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_via_cds_refuses_the_excess_at_once() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let mut rig = Rig::start(&bin, LbAlgorithm::LeastRequest, &[1, 1]).await;
    rig.publish_with_max_requests(LbAlgorithm::LeastRequest, &rig.loopback(&[1, 1]), Some(1));
    rig.wait_cluster("the circuit breaker", |c| {
        c["circuit_breakers"]["thresholds"][0]["max_requests"] == 1
    })
    .await;
    assert_eq!(rig.stats.nacks(), 0, "{:?}", rig.stats.last_nack());
    let _held = rig.hold_on(rig.ports[0]).await;
    let mut http = Http::connect(rig.listen).await;
    let t1 = Instant::now();
    let (status, _) = http.get("/").await.expect("a response");
    let took = t1.elapsed();
    assert_eq!(status, 503, "past max_requests Envoy refuses");
    assert!(
        took < Duration::from_secs(1),
        "refused at once, not queued: {took:?}"
    );
    let overflow = rig
        .stat(&format!("cluster.{CLUSTER}.upstream_rq_active_overflow"))
        .await;
    assert!(
        overflow.is_some_and(|n| n >= 1),
        "overflow counted: {overflow:?}"
    );

    // Without the limit (Envoy's defaults) the same request is served.
    rig.publish_with_max_requests(LbAlgorithm::LeastRequest, &rig.loopback(&[1, 1]), None);
    rig.wait_cluster("the default limits", |c| c["circuit_breakers"].is_null())
        .await;
    let _held = rig.hold_on(rig.ports[0]).await;
    let mut http = Http::connect(rig.listen).await;
    assert_eq!(http.get("/").await.expect("a response").0, 200);
}

/// The engine's outlier detection reaches Envoy through CDS: the active
/// cluster carries it (consecutive 5xx, ejection time and budget, success-rate
/// ejection off), Envoy ACKs it and keeps serving; turning it off removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_via_cds_is_accepted_and_removed() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let mut rig = Rig::start(&bin, LbAlgorithm::LeastRequest, &[1, 1, 1]).await;
    let od = aya_policy::OutlierDetection {
        consecutive_5xx: 5,
        base_ejection_time: 30.0,
        max_ejection_percent: 33.0,
    };
    rig.publish_with_outlier_detection(LbAlgorithm::LeastRequest, &rig.loopback(&[1, 1, 1]), od);
    let t0 = Instant::now();
    let cluster = loop {
        let c = rig.active_cluster().await.unwrap_or_default();
        if !c["outlier_detection"].is_null() {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "outlier_detection never became active; nacks {:?}\n{}",
            rig.stats.last_nack(),
            rig.envoy.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let o = &cluster["outlier_detection"];
    assert_eq!(o["consecutive_5xx"], 5, "{o}");
    assert_eq!(o["max_ejection_percent"], 33, "{o}");
    assert_eq!(o["enforcing_success_rate"], 0, "{o}");
    assert_eq!(o["base_ejection_time"], "30s", "{o}");
    assert_eq!(rig.stats.nacks(), 0, "{:?}", rig.stats.last_nack());
    assert_eq!(
        rig.stat(&format!(
            "cluster.{CLUSTER}.outlier_detection.ejections_active"
        ))
        .await,
        Some(0)
    );
    assert_eq!(rig.split(60).await.values().sum::<usize>(), 60);
    // Off: the next cluster has none.
    rig.publish_with_outlier_detection(
        LbAlgorithm::LeastRequest,
        &rig.loopback(&[1, 1, 1]),
        aya_policy::OutlierDetection::OFF,
    );
    let t1 = Instant::now();
    while !rig.active_cluster().await.unwrap_or_default()["outlier_detection"].is_null() {
        assert!(t1.elapsed() < Duration::from_secs(10), "never removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rig.split(30).await.values().sum::<usize>(), 30);
    assert_eq!(rig.stats.nacks(), 0);
}

/// An endpoint host that is not an IP address is rejected by Envoy: Aya
/// records the NACK with Envoy's message, Envoy keeps the last good
/// endpoints, and the next valid publication is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_recorded_and_last_good_state_keeps_serving() {
    let Some(bin) = common::envoy_binary() else {
        return;
    };
    let mut rig = Rig::start(&bin, LbAlgorithm::WeightedRoundRobin, &[1, 1, 1]).await;
    assert_eq!(rig.stats.nacks(), 0);

    let mut bad = rig.loopback(&[1, 1, 1]);
    bad[0].0 = "not-an-ip.invalid".into();
    rig.publish(LbAlgorithm::WeightedRoundRobin, &bad);
    let t0 = Instant::now();
    while rig.stats.nacks() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no NACK recorded; stats {:?}",
            rig.stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let nack = rig.stats.last_nack().expect("NACK recorded");
    eprintln!("NACK recorded: {nack:?}");
    assert!(nack.type_url.ends_with("ClusterLoadAssignment"), "{nack:?}");
    assert!(
        nack.message.contains("not-an-ip.invalid"),
        "the error names the bad host: {nack:?}"
    );
    assert_eq!(
        nack.accepted_version, "1",
        "Envoy stays on the last accepted version"
    );
    assert_eq!(nack.node, "aya-test-envoy");

    // Envoy still runs the last good endpoints.
    let counts = rig.split(90).await;
    assert!(
        rig.shares_match(&counts, &[1, 1, 1], 0.05),
        "last good state keeps serving: {counts:?}"
    );

    // A valid publication is accepted again.
    rig.publish(LbAlgorithm::WeightedRoundRobin, &rig.loopback(&[2, 1, 1]));
    rig.wait_weights(&[2, 1, 1]).await;
    assert_eq!(rig.stats.nacks(), 1);
}
