//! A real Envoy process for the tests: started from a bootstrap text on
//! loopback ports, killed when its guard drops (also on test failure).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use std::collections::BTreeMap;
use std::sync::Arc;

use aya_controller::publish::{ClusterSnapshot, Endpoint, PublishedState};
use aya_policy::{AlgorithmChoice, Decision, Explanation, LbAlgorithm, ScalingSignal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kills Envoy when dropped.
pub struct EnvoyGuard {
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for EnvoyGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EnvoyGuard {
    /// The last 30 lines of Envoy's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Envoy's own temporary directory (its bootstrap and log live there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A loopback port nobody listens on right now, and one this process has
/// not handed out before: the kernel may give a just-released port to the
/// next bind, so three calls in a row could otherwise return the same port
/// twice (seen in CI as a "duplicate backend address" refusal).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

static BASE_ID: AtomicU32 = AtomicU32::new(0);

/// Start `bin` on the bootstrap `yaml` at log level `level`. The base id is
/// unique per process and start, so parallel Envoys never share
/// shared-memory regions.
pub fn spawn(bin: &Path, yaml: &str, level: &str) -> EnvoyGuard {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("envoy.yaml");
    std::fs::write(&cfg, yaml).expect("write bootstrap");
    let log = dir.path().join("envoy.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let base_id =
        (std::process::id() % 100_000) * 10 + BASE_ID.fetch_add(1, Ordering::Relaxed) % 10;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&cfg)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", level])
        .args(["--base-id", &base_id.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("spawn envoy");
    EnvoyGuard { child, log, dir }
}

/// The whole answer (status line, headers, body) of `GET path` on Envoy's
/// admin port, read until the connection closes.
pub async fn admin_text(admin: u16, path: &str) -> Result<String, String> {
    let mut sock = TcpStream::connect(("127.0.0.1", admin))
        .await
        .map_err(|e| e.to_string())?;
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    sock.read_to_string(&mut text)
        .await
        .map_err(|e| e.to_string())?;
    Ok(text)
}

/// A decision with no weights of its own on algorithm `alg` (the endpoints carry the weights).
pub fn decision(alg: LbAlgorithm) -> Decision {
    Decision {
        outlier_detection: None,
        max_requests: None,
        at: 0.0,
        weights: Vec::new(),
        ejected: Vec::new(),
        scaling: ScalingSignal::default(),
        algorithm: AlgorithmChoice {
            algorithm: alg,
            rule: "test".into(),
        },
        explanation: Explanation::default(),
    }
}

/// A published state with one cluster `cluster` of loopback `backends`
/// `(host, port, weight)` named b0, b1, ... on algorithm `alg`.
pub fn published(
    cluster: &str,
    version: u64,
    alg: LbAlgorithm,
    backends: &[(String, u16, u32)],
) -> Arc<PublishedState> {
    let snap = ClusterSnapshot {
        cluster: cluster.into(),
        version,
        decision: decision(alg),
        endpoints: backends
            .iter()
            .enumerate()
            .map(|(i, (host, port, weight))| Endpoint {
                backend: format!("b{i}"),
                host: host.clone(),
                port: *port,
                weight: *weight,
            })
            .collect(),
    };
    let mut s = PublishedState {
        version,
        clusters: BTreeMap::new(),
    };
    s.clusters.insert(cluster.into(), Arc::new(snap));
    Arc::new(s)
}
