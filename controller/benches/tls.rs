//! What TLS costs on Aya's gRPC listener (criterion), plaintext, TLS and
//! mTLS side by side in one run (the machine is shared and noisy: read the
//! ratios, not the absolute figures):
//!
//! * `ingest_100`: one `MetricsService/Ingest` call carrying one batch of
//!   100 samples, acknowledged (committed to the store), on a channel that
//!   is already connected: the per-request cost of encryption.
//! * `connect_snapshot`: a new channel (TCP, and the TLS handshake where
//!   there is one) and one `GetSnapshot`: what a reconnecting data plane pays.
//!
//! ```text
//! cargo bench --workspace --bench tls
//! ```
//!
//! Certificates are generated with the `openssl` command line (P-256), as in
//! the TLS tests. Every server runs in-process on 127.0.0.1:0.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};

use aya_controller::config::{IdentityConfig, Role};
use aya_proto::v1 as pb;
use common::pki::Pki;
use criterion::{Criterion, criterion_group, criterion_main};
use tonic::transport::Channel;

/// How the bench talks to one server.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Tls,
    Mtls,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Plain, Mode::Tls, Mode::Mtls];

    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plaintext",
            Mode::Tls => "tls",
            Mode::Mtls => "mtls",
        }
    }
}

/// One running server per mode, with what it takes to reach it.
struct Servers {
    pki: Pki,
    running: Vec<(Mode, common::Running)>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Servers {
    async fn start(pki_dir: &std::path::Path) -> Servers {
        let pki = Pki::new(pki_dir);
        let mut running = Vec::new();
        let mut dirs = Vec::new();
        for mode in Mode::ALL {
            let data = tempfile::tempdir().unwrap();
            let mut cfg = common::config(data.path());
            // The bench advances its timestamps faster than the wall clock.
            cfg.max_future_skew_seconds = 3600.0;
            match mode {
                Mode::Plain => {}
                Mode::Tls => cfg.tls = Some(pki.tls(false)),
                Mode::Mtls => {
                    cfg.tls = Some(pki.tls(true));
                    cfg.auth.identities = vec![IdentityConfig {
                        subject: "edge.example".into(),
                        roles: vec![Role::Watch, Role::Ingest, Role::Read],
                    }];
                }
            }
            running.push((mode, common::start(cfg).await));
            dirs.push(data);
        }
        Servers {
            pki,
            running,
            _dirs: dirs,
        }
    }

    async fn channel(&self, mode: Mode) -> Channel {
        let addr = self
            .running
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, r)| r.addr)
            .unwrap();
        match mode {
            Mode::Plain => Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
            Mode::Tls => self.pki.channel(addr, false).await.unwrap(),
            Mode::Mtls => self.pki.channel(addr, true).await.unwrap(),
        }
    }
}

/// 100 samples over the cluster's 3 backends × 4 metrics, timestamps taken
/// from `clock` (one millisecond per sample, so every series moves forward).
fn batch(clock: &AtomicI64, sequence: u64) -> pb::IngestBatch {
    const METRICS: [&str; 4] = [
        "request_rate",
        "latency_p50",
        "cpu_utilization",
        "in_flight",
    ];
    let samples = (0..100)
        .map(|i| {
            let ts = clock.fetch_add(1, Ordering::Relaxed);
            common::sample(
                ["a", "b", "c"][i % 3],
                METRICS[(i / 3) % 4],
                ts,
                0.5 + (i % 7) as f64 * 0.01,
            )
        })
        .collect();
    pb::IngestBatch { sequence, samples }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki_dir = tempfile::tempdir().unwrap();
    let servers = rt.block_on(Servers::start(pki_dir.path()));
    let clock = AtomicI64::new(common::now_ms() - 60_000);

    let mut g = c.benchmark_group("ingest_100");
    for mode in Mode::ALL {
        let ch = rt.block_on(servers.channel(mode));
        // Every sample of a batch must be accepted, or the figure means nothing.
        let ack = rt.block_on(common::ingest(ch.clone(), vec![batch(&clock, 0)]));
        assert_eq!(
            (ack[0].accepted, ack[0].rejected),
            (100, 0),
            "{}: {:?}",
            mode.name(),
            ack[0]
        );
        let mut seq = 1;
        g.bench_function(mode.name(), |b| {
            b.iter(|| {
                seq += 1;
                let acks = rt.block_on(common::ingest(ch.clone(), vec![batch(&clock, seq)]));
                black_box(acks)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("connect_snapshot");
    for mode in Mode::ALL {
        g.bench_function(mode.name(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let ch = servers.channel(mode).await;
                    let snap = pb::decision_service_client::DecisionServiceClient::new(ch)
                        .get_snapshot(pb::GetSnapshotRequest {
                            cluster: "web".into(),
                        })
                        .await
                        .unwrap();
                    black_box(snap)
                })
            })
        });
    }
    g.finish();

    rt.block_on(async {
        for (_, r) in servers.running {
            r.stop().await;
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
