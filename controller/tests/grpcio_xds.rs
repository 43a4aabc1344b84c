//! A proxyless gRPC client (Python grpcio from PyPI, `xds:///web`) steered by
//! Aya's xDS server (issue 12, deliverable 4): the client asks Aya for LDS,
//! RDS, CDS and EDS on one ADS stream and spreads its calls over three grpcio
//! backends by Aya's weights; a live change of the weights moves the split.
//!
//! All on 127.0.0.1: Aya's ADS service in-process (fed by a watch channel the
//! test drives), and `tests/grpcio/xds_client.py`, which runs the backends and
//! the client. Skipped without grpcio unless `AYA_REQUIRE_GRPCIO=1` (CI).

// The clock rule (controller/clippy.toml) is for the service; this test runs in real time.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aya_controller::xds::{XdsStats, ads_service};
use aya_policy::LbAlgorithm;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

fn has_grpcio(python: &str) -> bool {
    let ok = std::process::Command::new(python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("AYA_REQUIRE_GRPCIO").is_none(),
            "AYA_REQUIRE_GRPCIO is set but `{python} -c 'import grpc'` fails (pip install grpcio)"
        );
        eprintln!("SKIPPED grpcio xDS test: no grpcio for {python} (pip install grpcio)");
    }
    ok
}

/// The client process: its stdin and a line reader on its stdout.
struct Client {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Client {
    /// The next stdout line starting with `tag`, its numbers.
    async fn read(&mut self, tag: &str) -> Vec<u64> {
        let line = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match self.lines.next_line().await.expect("client stdout") {
                    Some(l) if l.starts_with(tag) => return l,
                    Some(_) => continue,
                    None => panic!("the grpcio client ended before printing {tag}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {tag} line from the grpcio client within 60 s"));
        line.split_whitespace()
            .skip(1)
            .map(|n| n.parse().expect("a number"))
            .collect()
    }

    /// Make `n` calls through `xds:///web`; calls per backend and errors.
    async fn calls(&mut self, n: usize) -> (Vec<u64>, u64) {
        self.stdin
            .write_all(format!("GO {n}\n").as_bytes())
            .await
            .expect("client stdin");
        self.stdin.flush().await.expect("flush");
        let mut v = self.read("COUNTS").await;
        let errors = v.pop().expect("errors");
        (v, errors)
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|c| *c as f64 / total.max(1) as f64)
        .collect()
}

fn close(counts: &[u64], weights: &[u32], tolerance: f64) -> bool {
    let sum: u32 = weights.iter().sum();
    shares(counts)
        .iter()
        .zip(weights)
        .all(|(s, w)| (s - *w as f64 / sum as f64).abs() <= tolerance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_xds_client_follows_the_weights() {
    let python = std::env::var("AYA_PYTHON").unwrap_or_else(|_| "python3".into());
    if !has_grpcio(&python) {
        return;
    }
    // Aya's ADS server on a loopback port, before the backends exist.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind xds");
    let xds = listener.local_addr().expect("xds addr");
    let (tx, rx) = watch::channel(common::envoy::published(
        "web",
        1,
        LbAlgorithm::WeightedRoundRobin,
        &[],
    ));
    let stats = Arc::new(XdsStats::new());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads_service(rx, stats.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("bootstrap.json");
    std::fs::write(
        &bootstrap,
        format!(
            r#"{{"xds_servers": [{{"server_uri": "{xds}", "channel_creds": [{{"type": "insecure"}}],
                "server_features": ["xds_v3"]}}], "node": {{"id": "grpcio-test"}}}}"#
        ),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/grpcio/xds_client.py");
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the grpcio client");
    let mut client = Client {
        stdin: child.stdin.take().unwrap(),
        lines: BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
    };
    let ports = client.read("PORTS").await;
    assert_eq!(ports.len(), 3);
    let backends = |w: &[u32]| -> Vec<(String, u16, u32)> {
        ports
            .iter()
            .zip(w)
            .map(|(p, w)| ("127.0.0.1".to_string(), *p as u16, *w))
            .collect()
    };

    // Weights 1:3:6 under weighted round robin (ROUND_ROBIN over one
    // locality per endpoint, weighted by locality: what gRPC honours).
    tx.send_replace(common::envoy::published(
        "web",
        2,
        LbAlgorithm::WeightedRoundRobin,
        &backends(&[1, 3, 6]),
    ));
    let (first, errors) = client.calls(2000).await;
    println!("weights 1:3:6 -> {first:?} ({errors} errors)");
    assert_eq!(errors, 0);
    assert!(close(&first, &[1, 3, 6], 0.05), "{first:?} is not 1:3:6");
    let acked = stats.snapshot();
    assert!(acked.nacks == 0, "the client NACKed: {acked:?}");

    // A live change to 8:1:1 shows in the next calls.
    tx.send_replace(common::envoy::published(
        "web",
        3,
        LbAlgorithm::WeightedRoundRobin,
        &backends(&[8, 1, 1]),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (second, errors) = client.calls(2000).await;
    println!("weights 8:1:1 -> {second:?} ({errors} errors)");
    assert_eq!(errors, 0);
    assert!(close(&second, &[8, 1, 1], 0.05), "{second:?} is not 8:1:1");

    // Join shortest queue travels as a typed policy list (Envoy's least
    // request with a full scan, then round robin): gRPC, which has no least
    // request, takes round robin from the list; no NACK, calls keep flowing.
    tx.send_replace(common::envoy::published(
        "web",
        4,
        LbAlgorithm::JoinShortestQueue,
        &backends(&[1, 1, 1]),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (third, errors) = client.calls(1500).await;
    println!("join shortest queue, weights 1:1:1 -> {third:?} ({errors} errors)");
    assert_eq!(errors, 0);
    assert!(close(&third, &[1, 1, 1], 0.05), "{third:?} is not 1:1:1");
    let after = stats.snapshot();
    assert!(
        after.nacks == 0,
        "the client NACKed the typed policy: {after:?}"
    );
    assert!(
        after.acks > acked.acks,
        "the typed policy was never ACKed: {after:?}"
    );

    drop(client.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), client.child.wait()).await;
    let _ = stop_tx.send(());
    let _ = server.await;
}
