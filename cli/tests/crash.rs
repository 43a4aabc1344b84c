//! Crash test with the real `aya` binary: stream samples, kill -9 the
//! process right after an acknowledgement, restart it on the same data
//! directory and check that every acknowledged sample is there.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use aya_proto::v1 as pb;
use pb::metrics_service_client::MetricsServiceClient;

const CONFIG: &str = r#"
listen = "127.0.0.1:0"
tick_interval_seconds = 3600.0
default_policy = "configured"
[[clusters]]
name = "web"
[[clusters.backends]]
name = "a"
address = "127.0.0.1:9001"
[[clusters.backends]]
name = "b"
address = "127.0.0.1:9002"
"#;

/// Start `aya serve` and read the bound address from its first stdout line.
fn spawn(config: &std::path::Path, data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--no-metrics")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aya");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, format!("http://{addr}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn sample(backend: &str, metric: &str, ts: i64, value: f64) -> pb::Sample {
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

async fn connect(url: &str) -> tonic::transport::Channel {
    for _ in 0..200 {
        if let Ok(ch) = tonic::transport::Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
        {
            return ch;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_an_ack_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("aya.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let data = dir.path().join("data");

    let (mut child, url) = spawn(&cfg, &data);
    let ch = connect(&url).await;
    let mut client = MetricsServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestBatch>(4);
    let mut acks = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let base = now_ms() - 60_000;
    let mut acked: Vec<(String, i64, f64)> = Vec::new();
    // Keep a few batches in flight so the kill lands while the server is busy.
    let mut next = 0u64;
    let batch = |seq: u64| pb::IngestBatch {
        sequence: seq,
        samples: (0..500)
            .map(|i| {
                let b = if i % 2 == 0 { "a" } else { "b" };
                sample(
                    b,
                    "in_flight",
                    base + (seq as i64) * 500 + i as i64 / 2 * 2 + (i % 2) as i64,
                    (seq * 1000 + i) as f64,
                )
            })
            .collect(),
    };
    let mut sent = Vec::new();
    for _ in 0..3 {
        let b = batch(next);
        sent.push(b.clone());
        tx.send(b).await.unwrap();
        next += 1;
    }
    while let Some(ack) = acks.message().await.unwrap() {
        let b = &sent[ack.sequence as usize];
        assert_eq!(
            ack.accepted as usize,
            b.samples.len(),
            "{:?}",
            ack.results.iter().find(|r| !r.accepted)
        );
        for s in &b.samples {
            acked.push((s.backend.clone(), s.timestamp_ms, s.value));
        }
        if ack.sequence == 20 {
            // Right after this ack, with more batches in flight.
            child.kill().expect("kill -9");
            break;
        }
        let b = batch(next);
        sent.push(b.clone());
        let _ = tx.send(b).await;
        next += 1;
    }
    let _ = child.wait();
    drop(tx);
    assert_eq!(acked.len(), 21 * 500);

    let (mut child, url) = spawn(&cfg, &data);
    let mut client = MetricsServiceClient::new(connect(&url).await);
    let h = client
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let stored: std::collections::HashSet<(String, i64, u64)> = h
        .series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .map(move |p| (s.backend.clone(), p.timestamp_ms, p.value.to_bits()))
        })
        .collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|(b, t, v)| !stored.contains(&(b.clone(), *t, v.to_bits())))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged samples lost after kill -9: {missing:?}"
    );
    assert!(stored.len() >= acked.len());
    child.kill().unwrap();
    let _ = child.wait();
}
