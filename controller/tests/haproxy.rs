//! A real HAProxy (Debian's `haproxy`, 2.6) steered by Aya through its
//! runtime API: weights scaled into 0..=256, a left-out backend drained,
//! dynamic servers added and deleted, real HTTP requests through HAProxy's
//! frontend split in Aya's proportions, and the whole state re-applied after
//! HAProxy restarts with a fresh state. Skipped, with a note, when the
//! binary is absent (a failure when `AYA_REQUIRE_HAPROXY=1`, as `.ci/run`
//! sets after installing it). Everything binds 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aya_controller::haproxy::HaproxyConfig;
use aya_proto::v1 as pb;
use aya_proto::v1::admin_service_client::AdminServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The HAProxy binary, or `None` (after printing why) when the test is skipped.
fn haproxy_binary() -> Option<String> {
    let bin = std::env::var("AYA_HAPROXY").unwrap_or_else(|_| "haproxy".into());
    let runs = Command::new(&bin)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Some(bin);
    }
    let msg = format!(
        "no `{bin}` binary: apt-get install -y --no-install-recommends haproxy (or set AYA_HAPROXY)"
    );
    if std::env::var("AYA_REQUIRE_HAPROXY").is_ok_and(|v| v == "1") {
        panic!("AYA_REQUIRE_HAPROXY=1: {msg}");
    }
    eprintln!("SKIPPED real-HAProxy test: {msg}");
    None
}

/// The publisher's log lines on the test's output (shown on failure).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("aya_controller::haproxy=debug")
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// A free loopback port (bound once, then released for HAProxy to take;
/// never one handed out before in this process).
fn free_port() -> u16 {
    common::envoy::free_port()
}

/// A tiny HTTP server answering every request with its name.
async fn http_backend(name: &'static str) -> SocketAddr {
    http_backend_status(name, "200 OK").await
}

/// A HAProxy process, killed on drop.
struct Haproxy {
    child: Child,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `haproxy -f CFG -db`, its messages in `haproxy.log` beside the config.
fn spawn_haproxy(bin: &str, cfg: &Path) -> Haproxy {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.with_file_name("haproxy.log"))
        .unwrap();
    let child = Command::new(bin)
        .arg("-f")
        .arg(cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Haproxy { child }
}

fn start_haproxy(bin: &str, cfg: &Path, stats: SocketAddr) -> Haproxy {
    let h = spawn_haproxy(bin, cfg);
    for _ in 0..200 {
        if std::net::TcpStream::connect(stats).is_ok() {
            return h;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = std::fs::read_to_string(cfg.with_file_name("haproxy.log")).unwrap_or_default();
    panic!("HAProxy did not open its stats socket {stats} within 5 s; its log:\n{log}");
}

/// One runtime API command (non-interactive: the reply ends at EOF).
async fn runtime(stats: SocketAddr, cmd: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(stats).await.unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `show servers state be_web`: server → (weight, admin state flags).
async fn servers(stats: SocketAddr) -> BTreeMap<String, (u32, u32)> {
    runtime(stats, "show servers state be_web")
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 8 && f[1] == "be_web").then(|| {
                (
                    f[3].to_string(),
                    (f[7].parse().unwrap(), f[6].parse().unwrap()),
                )
            })
        })
        .collect()
}

fn state(list: &[(&str, u32, u32)]) -> BTreeMap<String, (u32, u32)> {
    list.iter()
        .map(|(s, w, a)| (s.to_string(), (*w, *a)))
        .collect()
}

/// Wait (up to 15 s) until HAProxy's servers are `want`.
async fn wait_for(stats: SocketAddr, want: &BTreeMap<String, (u32, u32)>, what: &str) {
    let mut last = BTreeMap::new();
    for _ in 0..300 {
        last = servers(stats).await;
        if &last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: HAProxy has {last:?}, want {want:?}");
}

/// `n` HTTP requests through HAProxy's frontend; hits per backend name.
async fn requests(frontend: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut hits = BTreeMap::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(frontend).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: aya\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        *hits.entry(body).or_insert(0) += 1;
    }
    hits
}

async fn metrics_text(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: aya\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_haproxy_follows_weights_drains_and_reapplies_after_restart() {
    let Some(bin) = haproxy_binary() else {
        return;
    };
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (
        http_backend("a").await,
        http_backend("b").await,
        http_backend("c").await,
        http_backend("d").await,
    );
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg_path: PathBuf = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            "global\n    nbthread 1\n    stats socket ipv4@{stats} level admin\n    stats timeout 30s\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\
             frontend fe\n    bind {frontend}\n    default_backend be_web\n\
             backend be_web\n    balance roundrobin\n\
             \x20   server a {a} weight 1\n    server b {b} weight 1\n    server c {c} weight 1\n"
        ),
    )
    .unwrap();
    let mut haproxy = start_haproxy(&bin, &cfg_path, stats);

    // Aya: cluster `web` with a, b, c at the HTTP servers ("configured"
    // policy: weights 1, 2, 3), steering be_web.
    let data = dir.path().join("aya");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = common::config(&data);
    for (backend, addr) in config.clusters[0].backends.iter_mut().zip([a, b, c]) {
        backend.address = addr.to_string();
    }
    config.haproxy = vec![HaproxyConfig {
        cluster: "web".into(),
        runtime_api: stats.to_string(),
        backend: "be_web".into(),
        servers: BTreeMap::new(),
        add_servers: true,
        remove_servers: true,
        resync_seconds: 0.2,
        timeout_seconds: 2.0,
        max_backoff_seconds: 0.5,
        stats: false,
    }];
    config.validate().unwrap();
    let srv = common::start(config).await;

    // The initial decision: weights 1/2/3, every server ready.
    wait_for(
        stats,
        &state(&[("a", 1, 0), ("b", 2, 0), ("c", 3, 0)]),
        "initial weights",
    )
    .await;

    // A backend added to the cluster becomes a dynamic server; removed, it is deleted.
    let mut admin = AdminServiceClient::new(srv.channel().await);
    admin
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "d".into(),
                address: d.to_string(),
                weight_hint: 4,
            }),
        })
        .await
        .unwrap();
    wait_for(
        stats,
        &state(&[("a", 1, 0), ("b", 2, 0), ("c", 3, 0), ("d", 4, 0)]),
        "backend d added",
    )
    .await;
    let hits = requests(frontend, 100).await;
    // d has weight 4 of 10 (within a few requests: the round-robin position
    // at the weight change is HAProxy's).
    let d_hits = *hits.get("d").unwrap_or(&0);
    assert!((37..=43).contains(&d_hits), "{hits:?}");
    admin
        .delete_backend(pb::DeleteBackendRequest {
            cluster: "web".into(),
            backend: "d".into(),
        })
        .await
        .unwrap();
    wait_for(
        stats,
        &state(&[("a", 1, 0), ("b", 2, 0), ("c", 3, 0)]),
        "backend d deleted",
    )
    .await;

    // An override: a = 1000, b = 3000 (beyond HAProxy's 256: scaled to
    // 85/256), c left out (drained: admin state 8).
    admin
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: [("a", 1000), ("b", 3000)]
                .iter()
                .map(|(b, w)| pb::BackendWeight {
                    backend: b.to_string(),
                    weight: *w,
                })
                .collect(),
            algorithm: pb::LbAlgorithm::PeakEwma as i32,
            desired_replicas: 0,
        })
        .await
        .unwrap();
    let steered = state(&[("a", 85, 0), ("b", 256, 0), ("c", 3, 8)]);
    wait_for(stats, &steered, "override").await;
    assert!(
        runtime(stats, "get weight be_web/b")
            .await
            .starts_with("256 (initial 1)")
    );
    // Real traffic: two full round-robin cycles (85 + 256 = 341 picks each).
    let t = aya_controller::clock::Clock::system().stopwatch();
    let hits = requests(frontend, 682).await;
    eprintln!("682 requests took {:.2} s", t.seconds());
    eprintln!("682 requests through HAProxy after the override: {hits:?}");
    assert_eq!(
        hits.get("c"),
        None,
        "the drained server got traffic: {hits:?}"
    );
    let share_a = *hits.get("a").unwrap_or(&0) as f64 / 682.0;
    assert!(
        (share_a - 85.0 / 341.0).abs() < 0.03,
        "a's share {share_a:.3}, want {:.3}: {hits:?}",
        85.0 / 341.0
    );
    assert_eq!(hits.values().sum::<usize>(), 682, "{hits:?}");

    // HAProxy restarts with a fresh state (weights 1, everything ready):
    // Aya reconnects and re-applies everything.
    drop(haproxy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    haproxy = start_haproxy(&bin, &cfg_path, stats);
    let restarted = aya_controller::clock::Clock::system().stopwatch();
    // c keeps the fresh HAProxy's weight 1: a drained server's weight is not touched.
    let steered = state(&[("a", 85, 0), ("b", 256, 0), ("c", 1, 8)]);
    wait_for(stats, &steered, "after the HAProxy restart").await;
    eprintln!(
        "state re-applied {:.2} s after HAProxy restarted",
        restarted.seconds()
    );
    let hits = requests(frontend, 341).await;
    eprintln!("341 requests after the restart: {hits:?}");
    assert_eq!(hits.get("c"), None, "{hits:?}");
    let share_a = *hits.get("a").unwrap_or(&0) as f64 / 341.0;
    assert!((share_a - 85.0 / 341.0).abs() < 0.03, "{hits:?}");

    // A hand-made change (drift) is undone at the next resync.
    assert_eq!(
        runtime(stats, "set server be_web/a weight 7").await.trim(),
        ""
    );
    assert_eq!(
        runtime(stats, "set server be_web/c state ready")
            .await
            .trim(),
        ""
    );
    wait_for(stats, &steered, "after a hand-made change").await;

    let text = metrics_text(srv.metrics_addr).await;
    let labels = "{cluster=\"web\",backend=\"be_web\"}";
    assert!(sample(&text, &format!("aya_haproxy_drift_total{labels}")) >= 2.0);
    assert!(sample(&text, &format!("aya_haproxy_connects_total{labels}")) >= 2.0);
    assert_eq!(
        sample(&text, &format!("aya_haproxy_connected{labels}")),
        1.0
    );
    assert!(sample(&text, &format!("aya_haproxy_commands_total{labels}")) >= 10.0);
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("aya_haproxy_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "the restart counted no error:\n{text}");

    srv.stop().await;
    drop(haproxy);
}

/// Over a unix socket, with a server-name mapping, `add_servers` and
/// `remove_servers` off: Aya starts before HAProxy (it backs off, counting
/// `connect` errors), steers `web-a` for backend `a`, and leaves the server
/// `spare` it does not know untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_haproxy_over_a_unix_socket_with_mapped_names_started_after_aya() {
    let Some(bin) = haproxy_binary() else {
        return;
    };
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        http_backend("a").await,
        http_backend("b").await,
        http_backend("c").await,
    );
    let sock = dir.path().join("admin.sock");
    let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            "global\n    nbthread 1\n    stats socket {} mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\
             frontend fe\n    bind {frontend}\n    default_backend be_web\n\
             backend be_web\n    balance roundrobin\n\
             \x20   server web-a {a} weight 1\n    server b {b} weight 1\n    server c {c} weight 1\n\
             \x20   server spare {c} weight 1\n",
            sock.display()
        ),
    )
    .unwrap();

    let data = dir.path().join("aya");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = common::config(&data);
    for (backend, addr) in config.clusters[0].backends.iter_mut().zip([a, b, c]) {
        backend.address = addr.to_string();
    }
    config.haproxy = vec![HaproxyConfig {
        cluster: "web".into(),
        runtime_api: format!("unix:{}", sock.display()),
        backend: "be_web".into(),
        servers: [("a".to_string(), "web-a".to_string())].into(),
        add_servers: false,
        remove_servers: false,
        resync_seconds: 0.2,
        timeout_seconds: 2.0,
        max_backoff_seconds: 0.4,
        stats: false,
    }];
    config.validate().unwrap();
    let srv = common::start(config).await;
    // HAProxy is not there yet: connection attempts fail and are counted.
    let mut refused = 0.0;
    for _ in 0..100 {
        let text = metrics_text(srv.metrics_addr).await;
        refused = text
            .lines()
            .find(|l| l.starts_with("aya_haproxy_errors_total{") && l.contains("kind=\"connect\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if refused >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused >= 2.0, "connect errors counted: {refused}");

    let stats_sock = sock.clone();
    let _haproxy = spawn_haproxy(&bin, &cfg_path);
    let show = || async {
        let mut out = String::new();
        if let Ok(mut s) = tokio::net::UnixStream::connect(&stats_sock).await {
            let _ = s.write_all(b"show servers state be_web\n").await;
            let _ = s.read_to_string(&mut out).await;
        }
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 8 && f[1] == "be_web").then(|| {
                    (
                        f[3].to_string(),
                        (f[7].parse::<u32>().unwrap(), f[6].parse::<u32>().unwrap()),
                    )
                })
            })
            .collect::<BTreeMap<_, _>>()
    };
    let want = state(&[("web-a", 1, 0), ("b", 2, 0), ("c", 3, 0), ("spare", 1, 0)]);
    let mut last = BTreeMap::new();
    for _ in 0..300 {
        last = show().await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, want, "after HAProxy came up");

    // Only `a` kept: b and c drained (their weights untouched), spare left alone.
    let mut admin = AdminServiceClient::new(srv.channel().await);
    admin
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: vec![pb::BackendWeight {
                backend: "a".into(),
                weight: 2,
            }],
            algorithm: 0,
            desired_replicas: 0,
        })
        .await
        .unwrap();
    let want = state(&[("web-a", 2, 0), ("b", 2, 8), ("c", 3, 8), ("spare", 1, 0)]);
    for _ in 0..300 {
        last = show().await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, want, "after the override");
    let hits = requests(frontend, 60).await;
    // web-a (weight 2) and spare (weight 1, which answers as c's HTTP server).
    let a_hits = *hits.get("a").unwrap_or(&0);
    assert!((37..=43).contains(&a_hits), "{hits:?}");
    assert_eq!(hits.get("b"), None, "{hits:?}");
    srv.stop().await;
}

/// HAProxy refuses weights on a `static-rr` backend: the refusals are
/// counted (`kind="refused"`) once, not repeated at every resync, and the
/// states Aya can set are still set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_haproxy_refusals_are_counted_once_not_repeated() {
    let Some(bin) = haproxy_binary() else {
        return;
    };
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            "global\n    nbthread 1\n    stats socket ipv4@{stats} level admin\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\
             backend be_web\n    balance static-rr\n\
             \x20   server a 127.0.0.1:9001 weight 1\n    server b 127.0.0.1:9002 weight 1\n\
             \x20   server c 127.0.0.1:9003 weight 1\n"
        ),
    )
    .unwrap();
    let _haproxy = start_haproxy(&bin, &cfg_path, stats);
    let data = dir.path().join("aya");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = common::config(&data);
    config.haproxy = vec![HaproxyConfig {
        cluster: "web".into(),
        runtime_api: stats.to_string(),
        backend: "be_web".into(),
        servers: BTreeMap::new(),
        add_servers: true,
        remove_servers: true,
        resync_seconds: 0.1,
        timeout_seconds: 2.0,
        max_backoff_seconds: 0.5,
        stats: false,
    }];
    config.validate().unwrap();
    let srv = common::start(config).await;
    let refused = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("aya_haproxy_errors_total{") && l.contains("kind=\"refused\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let mut first = 0.0;
    for _ in 0..100 {
        first = refused(&metrics_text(srv.metrics_addr).await);
        if first > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first > 0.0, "no refusal counted");
    // Ten resyncs later the count has not grown.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = refused(&metrics_text(srv.metrics_addr).await);
    assert_eq!(first, later, "refused commands were sent again");
    // HAProxy kept its weights.
    let now = servers(stats).await;
    assert_eq!(now["b"].0, 1, "{now:?}");
    // A refused weight does not stop a drain: c left out is drained.
    let mut admin = AdminServiceClient::new(srv.channel().await);
    admin
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: [("a", 1), ("b", 2)]
                .iter()
                .map(|(b, w)| pb::BackendWeight {
                    backend: b.to_string(),
                    weight: *w,
                })
                .collect(),
            algorithm: 0,
            desired_replicas: 0,
        })
        .await
        .unwrap();
    wait_for(
        stats,
        &state(&[("a", 1, 0), ("b", 1, 0), ("c", 1, 8)]),
        "c drained on a static-rr backend",
    )
    .await;
    srv.stop().await;
}

/// A tiny HTTP server answering every request with `status` and its name.
async fn http_backend_status(name: &'static str, status: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// `[[haproxy]] stats = true`: HAProxy's own `show stat` feeds the cluster's
/// backend metrics — requests, in-flight, latency, errors from the 5xx
/// responses of a failing server, and health from HAProxy's checks of a dead
/// one — with no metrics code in the backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_haproxy_stats_feed_the_clusters_backend_metrics() {
    let Some(bin) = haproxy_binary() else {
        return;
    };
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let a = http_backend("a").await;
    let b = http_backend_status("b", "500 Internal Server Error").await;
    // c: nobody listens there; HAProxy's health check marks it DOWN.
    let c: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let frontend: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        format!(
            "global\n    nbthread 1\n    stats socket ipv4@{stats} level admin\n    stats timeout 30s\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\
             frontend fe\n    bind {frontend}\n    default_backend be_web\n\
             backend be_web\n    balance roundrobin\n\
             \x20   server a {a} weight 1\n    server b {b} weight 1\n\
             \x20   server c {c} weight 1 check inter 100ms fall 1\n"
        ),
    )
    .unwrap();
    let _haproxy = start_haproxy(&bin, &cfg_path, stats);
    let data = dir.path().join("aya");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = common::config(&data);
    for (backend, addr) in config.clusters[0].backends.iter_mut().zip([a, b, c]) {
        backend.address = addr.to_string();
    }
    // Equal weights: HAProxy's round robin reaches a and b alike.
    for backend in &mut config.clusters[0].backends {
        backend.weight_hint = 1;
    }
    config.haproxy = vec![HaproxyConfig {
        cluster: "web".into(),
        runtime_api: stats.to_string(),
        backend: "be_web".into(),
        servers: BTreeMap::new(),
        add_servers: true,
        remove_servers: true,
        resync_seconds: 0.2,
        timeout_seconds: 2.0,
        max_backoff_seconds: 0.5,
        stats: true,
    }];
    config.validate().unwrap();
    let srv = common::start(config).await;
    // HAProxy's check has seen c dead before the traffic starts.
    for _ in 0..100 {
        if runtime(stats, "show stat be_web 4 -1")
            .await
            .lines()
            .any(|l| l.starts_with("be_web,c,") && l.contains(",DOWN,"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = requests(frontend, 40).await;
    eprintln!("responses by body: {hits:?}");

    // Every metric arrives within a few probes.
    let history = |backend: &'static str, metric: &'static str| {
        let ch = srv.channel();
        async move {
            pb::metrics_service_client::MetricsServiceClient::new(ch.await)
                .query_history(pb::QueryHistoryRequest {
                    cluster: "web".into(),
                    backend: backend.into(),
                    metric: metric.into(),
                    start_ms: 0,
                    end_ms: 0,
                    limit: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .series
                .into_iter()
                .flat_map(|s| s.points)
                .map(|p| p.value)
                .collect::<Vec<f64>>()
        }
    };
    let mut last = BTreeMap::new();
    for _ in 0..100 {
        last.clear();
        for (backend, metric) in [
            ("a", "requests_total"),
            ("a", "in_flight"),
            ("a", "healthy"),
            ("a", "latency_mean_seconds"),
            ("b", "error_rate"),
            ("c", "healthy"),
        ] {
            last.insert((backend, metric), history(backend, metric).await);
        }
        // b's error rate needs a probe before and one after some requests:
        // send a few more while waiting.
        if last.values().all(|v| !v.is_empty()) {
            break;
        }
        let _ = requests(frontend, 4).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("stored: {last:?}");
    let newest = |k: (&'static str, &'static str)| {
        *last
            .get(&k)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("no {k:?} stored from HAProxy's stats: {last:?}"))
    };
    assert!(newest(("a", "requests_total")) >= 20.0, "{last:?}");
    assert_eq!(newest(("a", "healthy")), 1.0);
    assert_eq!(newest(("c", "healthy")), 0.0, "c is DOWN in HAProxy");
    assert!(
        newest(("b", "error_rate")) > 0.9,
        "b answers 500 to everything: {last:?}"
    );
    let lat = newest(("a", "latency_mean_seconds"));
    assert!((0.0..1.0).contains(&lat), "a's latency {lat}");
    let accepted = sample(
        &metrics_text(srv.metrics_addr).await,
        "aya_haproxy_stats_samples_total{cluster=\"web\",backend=\"be_web\",result=\"accepted\"}",
    );
    assert!(accepted >= 6.0, "accepted {accepted}");
}
