//! High availability on a real etcd (Debian's `etcd-server`, started here
//! on loopback): three `aya serve` processes in one group, ingest load on
//! every replica, an aya.v1 watcher and a real Envoy whose ADS cluster lists
//! the three replicas. The leader is killed with SIGKILL under load; a
//! follower must take over within a bound, neither the watcher nor Envoy may
//! ever see a version go backwards, and every acknowledged sample must be on
//! both survivors. The measured times are printed (figures in BENCHMARKS.md).
//!
//! Skipped, saying why, without `etcd` or Envoy, unless `AYA_REQUIRE_ETCD=1`
//! (CI sets it when it installed etcd).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya_controller::ha::etcd::Etcd;
use aya_controller::ha::{LeaderRecord, leader_key};
use aya_proto::v1 as pb;
use pb::decision_service_client::DecisionServiceClient;
use pb::metrics_service_client::MetricsServiceClient;

#[allow(dead_code)]
#[path = "../../controller/tests/common/envoy.rs"]
mod envoy;

const PREFIX: &str = "/aya-ha-test";
const LEASE_TTL: u64 = 2;
/// The takeover bound the test asserts: the lease TTL plus room for a
/// loaded 2-core machine (the measured time is printed).
const TAKEOVER_BOUND: Duration = Duration::from_secs(LEASE_TTL + 6);

fn require(what: &str, var: &str, msg: &str) -> Option<PathBuf> {
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{var}=1: {msg}");
    }
    eprintln!("SKIPPED HA test ({what}): {msg}");
    None
}

fn etcd_binary() -> Option<PathBuf> {
    let candidate = std::env::var_os("AYA_ETCD_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("etcd"))
                    .find(|p| p.is_file())
            })
        });
    match candidate {
        Some(p) if p.is_file() => Some(p),
        _ => require(
            "etcd",
            "AYA_REQUIRE_ETCD",
            "etcd not found on PATH — `apt-get install etcd-server` (or set AYA_ETCD_BIN)",
        ),
    }
}

fn envoy_binary() -> Option<PathBuf> {
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
        "Envoy not found at {} — `bash scripts/install-envoy.sh` or set AYA_ENVOY_BIN",
        candidate.display()
    );
    if std::env::var("AYA_REQUIRE_ENVOY").is_ok_and(|v| v == "1") {
        panic!("AYA_REQUIRE_ENVOY=1: {msg}");
    }
    require("Envoy", "AYA_REQUIRE_ETCD", &msg)
}

/// A child process killed (SIGKILL) when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Proc {
    /// Send `signal` (`STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.0.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd on loopback with a fresh data directory.
fn start_etcd(bin: &Path, dir: &Path) -> (Proc, String) {
    let (client, peer) = (envoy::free_port(), envoy::free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
    let child = Command::new(bin)
        .args(["--name", "aya-test", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("aya-test={peer_url}")])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn etcd");
    (Proc(Some(child)), url)
}

async fn wait_for_etcd(client: &Etcd, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(b"/probe").await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not answer within 30 s; its log:\n{}",
            std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replica_config(id: &str, etcd: &str, backends: &[u16]) -> String {
    let mut s = String::from(
        r#"listen = "127.0.0.1:0"
tick_interval_seconds = 0.1
retrain_interval_seconds = 0
default_policy = "round_robin"
[[clusters]]
name = "web"
"#,
    );
    for (i, p) in backends.iter().enumerate() {
        s.push_str(&format!(
            "[[clusters.backends]]\nname = \"{}\"\naddress = \"127.0.0.1:{p}\"\n",
            ["a", "b", "c"][i]
        ));
    }
    s.push_str(&format!(
        r#"[ha]
etcd_endpoints = ["{etcd}"]
prefix = "{PREFIX}"
replica_id = "{id}"
lease_ttl_seconds = {LEASE_TTL}
"#
    ));
    s
}

struct Replica {
    id: String,
    proc: Proc,
    port: u16,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn spawn_replica(dir: &Path, id: &str, etcd: &str, backends: &[u16]) -> Replica {
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(&cfg, replica_config(id, etcd, backends)).unwrap();
    let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join(format!("{id}-data")))
        .arg("--no-metrics")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
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
        .unwrap_or_else(|| {
            panic!(
                "{id}: unexpected first line {line:?}; log:\n{}",
                std::fs::read_to_string(dir.join(format!("{id}.log"))).unwrap_or_default()
            )
        });
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    Replica {
        id: id.to_string(),
        proc: Proc(Some(child)),
        port,
    }
}

async fn channel(url: &str) -> Option<tonic::transport::Channel> {
    tonic::transport::Channel::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()
}

/// The leader's id once etcd names one other than `not`.
async fn wait_for_leader(client: &Etcd, not: Option<&str>, bound: Duration) -> Option<String> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok((Some(kv), _)) = client.get(leader_key(PREFIX).as_bytes()).await
            && let Ok(rec) = serde_json::from_slice::<LeaderRecord>(&kv.value)
            && Some(rec.replica_id.as_str()) != not
        {
            return Some(rec.replica_id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn sample(backend: &str, metric: &str, src: &str, ts: i64, value: f64) -> pb::Sample {
    pb::Sample {
        cluster: "web".into(),
        backend: backend.into(),
        metric: metric.into(),
        timestamp_ms: ts,
        value,
        kind: pb::MetricKind::Gauge as i32,
        labels: BTreeMap::from([("src".to_string(), src.to_string())]),
    }
}

/// (src label, backend, metric, timestamp, value bits) of one sample.
type Key = (String, String, String, i64, u64);

fn key_of(s: &pb::Sample) -> Key {
    (
        s.labels["src"].clone(),
        s.backend.clone(),
        s.metric.clone(),
        s.timestamp_ms,
        s.value.to_bits(),
    )
}

/// Stream batches to `url` until `stop` (or the stream fails); every batch
/// acknowledged in full goes into `acked`. `make` builds batch `seq`.
async fn load(
    url: String,
    acked: Arc<Mutex<Vec<Key>>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    stop: tokio::sync::watch::Receiver<bool>,
    period: Duration,
    make: impl Fn(u64) -> Vec<pb::Sample> + Send + 'static,
) -> u64 {
    let Some(ch) = channel(&url).await else {
        return 0;
    };
    let mut client = MetricsServiceClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::IngestBatch>(1);
    let Ok(resp) = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return 0;
    };
    let mut acks = resp.into_inner();
    let mut seq = 0u64;
    while !*stop.borrow() {
        let samples = make(seq);
        let sent = Instant::now();
        if tx
            .send(pb::IngestBatch {
                sequence: seq,
                samples: samples.clone(),
            })
            .await
            .is_err()
        {
            break;
        }
        match acks.message().await {
            Ok(Some(ack)) => {
                assert_eq!(ack.sequence, seq);
                assert_eq!(
                    ack.accepted as usize,
                    samples.len(),
                    "{url}: {:?} {:?}",
                    ack.batch_rejection,
                    ack.results.iter().find(|r| !r.accepted)
                );
                latencies.lock().unwrap().push(sent.elapsed());
                acked.lock().unwrap().extend(samples.iter().map(key_of));
            }
            _ => break,
        }
        seq += 1;
        tokio::time::sleep(period).await;
    }
    seq
}

/// Every (time since start, replica index, version) the watcher received.
type Seen = Arc<Mutex<Vec<(Duration, usize, u64)>>>;

/// An aya.v1 watcher of `web` that starts on replica `order[0]` and, when
/// its stream breaks, resumes with its last version on the next replica
/// that answers.
async fn watcher(
    urls: Vec<String>,
    order: Vec<usize>,
    seen: Seen,
    t0: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = 0u64;
    let mut at = 0usize;
    while !*stop.borrow() {
        let i = order[at % order.len()];
        if let Some(ch) = channel(&urls[i]).await {
            let mut c = DecisionServiceClient::new(ch);
            if let Ok(r) = c
                .watch(pb::WatchRequest {
                    cluster: "web".into(),
                    last_version: last,
                })
                .await
            {
                let mut s = r.into_inner();
                while let Ok(Some(snap)) = s.message().await {
                    last = snap.version;
                    seen.lock().unwrap().push((t0.elapsed(), i, snap.version));
                    if *stop.borrow() {
                        return;
                    }
                }
            }
        }
        at += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The CDS and the `web` EDS versions Envoy runs (its `version_text`
/// readouts: the `version_info` of the last response it accepted).
async fn envoy_versions(admin: u16) -> Option<(u64, u64)> {
    let text = envoy::admin_text(admin, "/stats?filter=version_text")
        .await
        .ok()?;
    let read = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split('"').nth(1)?.parse().ok()
    };
    Some((
        read("cluster_manager.cds.version_text:")?,
        read("cluster.web.version_text:").unwrap_or(0),
    ))
}

fn envoy_bootstrap(admin: u16, first: u16, others: &[u16]) -> String {
    let ep = |p: u16| {
        format!(
            "{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {p}}}}}}}}}"
        )
    };
    let rest: Vec<String> = others.iter().map(|p| ep(*p)).collect();
    format!(
        r#"node: {{id: aya-ha-envoy, cluster: aya-test}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
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
    connect_timeout: 0.5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    health_checks:
    - timeout: 0.5s
      interval: 0.3s
      no_traffic_interval: 0.3s
      unhealthy_threshold: 1
      healthy_threshold: 1
      grpc_health_check: {{}}
    load_assignment:
      cluster_name: aya_xds
      endpoints:
      - priority: 0
        lb_endpoints: [{first}]
      - priority: 1
        lb_endpoints: [{rest}]
"#,
        first = ep(first),
        rest = rest.join(", "),
    )
}

/// Every acknowledged sample that replica `url` does not have (at most 5).
async fn missing_on(url: &str, acked: &[Key]) -> Result<Vec<Key>, String> {
    let ch = channel(url).await.ok_or("cannot connect")?;
    let h = MetricsServiceClient::new(ch)
        .query_history(pb::QueryHistoryRequest {
            cluster: "web".into(),
            ..Default::default()
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let stored: HashSet<Key> = h
        .series
        .iter()
        .flat_map(|s| {
            let src = s.labels.get("src").cloned().unwrap_or_default();
            s.points.iter().map(move |p| {
                (
                    src.clone(),
                    s.backend.clone(),
                    s.metric.clone(),
                    p.timestamp_ms,
                    p.value.to_bits(),
                )
            })
        })
        .collect();
    Ok(acked
        .iter()
        .filter(|k| !stored.contains(*k))
        .take(5)
        .cloned()
        .collect())
}

fn logs(dir: &Path, reps: &[Replica]) -> String {
    reps.iter()
        .map(|r| {
            let text =
                std::fs::read_to_string(dir.join(format!("{}.log", r.id))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            format!(
                "--- {} ---\n{}",
                r.id,
                lines[lines.len().saturating_sub(15)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_takes_over_a_killed_leader_without_losing_acks_or_going_back() {
    let Some(etcd_bin) = etcd_binary() else {
        return;
    };
    let Some(envoy_bin) = envoy_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, etcd_url) = start_etcd(&etcd_bin, dir.path());
    let client = Etcd::new(std::slice::from_ref(&etcd_url), Duration::from_secs(2)).unwrap();
    wait_for_etcd(&client, dir.path()).await;

    // Backends only need addresses: Envoy receives them, nothing dials them.
    let backends = [envoy::free_port(), envoy::free_port(), envoy::free_port()];
    let mut reps: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|id| spawn_replica(dir.path(), id, &etcd_url, &backends))
        .collect();
    let urls: Vec<String> = reps.iter().map(Replica::url).collect();
    let leader = wait_for_leader(&client, None, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("no leader elected\n{}", logs(dir.path(), &reps)));
    let li = reps.iter().position(|r| r.id == leader).unwrap();
    let followers: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    eprintln!(
        "leader {leader}, followers {:?}",
        followers.iter().map(|i| &reps[*i].id).collect::<Vec<_>>()
    );

    // Envoy prefers the leader (priority 0) and fails over to the
    // followers (priority 1) once its gRPC health check fails.
    let admin = envoy::free_port();
    let envoy = envoy::spawn(
        &envoy_bin,
        &envoy_bootstrap(
            admin,
            reps[li].port,
            &followers.iter().map(|i| reps[*i].port).collect::<Vec<_>>(),
        ),
        "warning",
    );

    let t0 = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let seen: Seen = Arc::default();
    let watch_task = tokio::spawn(watcher(
        urls.clone(),
        vec![li, followers[0], followers[1]],
        seen.clone(),
        t0,
        stop_rx.clone(),
    ));
    // Envoy's versions, polled throughout.
    let envoy_seen: Arc<Mutex<Vec<(Duration, u64, u64)>>> = Arc::default();
    let envoy_task = {
        let (seen, stop) = (envoy_seen.clone(), stop_rx.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                if let Some((c, e)) = envoy_versions(admin).await {
                    seen.lock().unwrap().push((t0.elapsed(), c, e));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Load: every replica gets its own series (label src); a flipper on a
    // follower toggles backend c's health so that decisions keep changing.
    let acked: Arc<Mutex<Vec<Key>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let base = now_ms() - 30_000;
    let mut loaders = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let src = format!("load-{i}");
        loaders.push(tokio::spawn(load(
            url.clone(),
            acked.clone(),
            latencies.clone(),
            stop_rx.clone(),
            Duration::from_millis(20),
            move |seq| {
                (0..100)
                    .map(|j| {
                        let b = if j % 2 == 0 { "a" } else { "b" };
                        sample(
                            b,
                            "in_flight",
                            &src,
                            base + seq as i64 * 100 + j,
                            (seq * 100 + j as u64) as f64,
                        )
                    })
                    .collect()
            },
        )));
    }
    let flipper = tokio::spawn(load(
        urls[followers[0]].clone(),
        acked.clone(),
        Arc::default(),
        stop_rx.clone(),
        Duration::from_millis(250),
        |seq| vec![sample("c", "healthy", "flip", now_ms(), (seq % 2) as f64)],
    ));

    // Before the kill: Envoy holds a version and the watcher saw a few.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = seen.lock().unwrap().len();
        let e = envoy_seen.lock().unwrap().last().map_or(0, |v| v.2);
        if w >= 5 && e > 0 {
            break;
        }
        if Instant::now() >= deadline {
            let stats = envoy::admin_text(admin, "/stats?filter=version")
                .await
                .unwrap_or_default();
            panic!(
                "before the kill: watcher saw {w} versions, Envoy EDS version {e}\n{}\nenvoy:\n{}\n{stats}",
                logs(dir.path(), &reps),
                envoy.log_tail(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = seen.lock().unwrap().last().unwrap().2;

    // kill -9 the leader, under load.
    let killed_at = t0.elapsed();
    let kill = Instant::now();
    reps[li].proc.kill();
    let new_leader = wait_for_leader(&client, Some(&leader), TAKEOVER_BOUND)
        .await
        .unwrap_or_else(|| {
            panic!(
                "no follower took over within {TAKEOVER_BOUND:?}\n{}",
                logs(dir.path(), &reps)
            )
        });
    let takeover = kill.elapsed();
    assert!(followers.iter().any(|i| reps[*i].id == new_leader));

    // Decisions flow again: the watcher gets a version above the last one
    // before the kill from a survivor, and Envoy follows.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (first_new, resumed_on) = loop {
        if let Some(&(at, i, _)) = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(at, i, v)| *at > killed_at && *i != li && *v > before)
        {
            break (at - killed_at, i);
        }
        assert!(
            Instant::now() < deadline,
            "no new version after the kill\n{}",
            logs(dir.path(), &reps)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let envoy_new = loop {
        if let Some(&(at, _, _)) = envoy_seen
            .lock()
            .unwrap()
            .iter()
            .find(|(at, _, e)| *at > killed_at && *e > before)
        {
            break at - killed_at;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy got no version after the kill\nenvoy:\n{}\n{}",
            envoy.log_tail(),
            logs(dir.path(), &reps)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // More load on the survivors, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send_replace(true);
    let mut batches = Vec::new();
    for l in loaders {
        batches.push(l.await.unwrap());
    }
    let flips = flipper.await.unwrap();
    watch_task.abort();
    let _ = envoy_task.await;

    // Versions never went backwards, for the watcher (across its
    // reconnections) and for Envoy (CDS and EDS).
    let seen = seen.lock().unwrap().clone();
    for w in seen.windows(2) {
        assert!(
            w[1].2 > w[0].2,
            "watcher: version went from {} (replica {}) to {} (replica {})",
            w[0].2,
            w[0].1,
            w[1].2,
            w[1].1
        );
    }
    let envoy_seen = envoy_seen.lock().unwrap().clone();
    for w in envoy_seen.windows(2) {
        assert!(
            w[1].1 >= w[0].1 && w[1].2 >= w[0].2,
            "Envoy: versions went from {:?} to {:?}",
            w[0],
            w[1]
        );
    }

    // Every acknowledged sample (the killed leader's included) is on both survivors.
    let acked = acked.lock().unwrap().clone();
    assert!(batches[li] > 0 && flips > 0, "{batches:?} {flips}");
    for i in &followers {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let missing = missing_on(&urls[*i], &acked).await;
            match missing {
                Ok(m) if m.is_empty() => break,
                other => assert!(
                    Instant::now() < deadline,
                    "{}: acknowledged samples missing: {other:?}\n{}",
                    reps[*i].id,
                    logs(dir.path(), &reps)
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A follower serves KEDA from the replicated decision, and refuses
    // cluster changes (not replicated).
    let follower = followers
        .iter()
        .copied()
        .find(|i| reps[*i].id != new_leader)
        .unwrap();
    let ch = channel(&urls[follower]).await.unwrap();
    let snap = DecisionServiceClient::new(ch.clone())
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: "web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let keda = aya_proto::keda::external_scaler_client::ExternalScalerClient::new(ch.clone())
        .get_metrics(aya_proto::keda::GetMetricsRequest {
            scaled_object_ref: Some(aya_proto::keda::ScaledObjectRef {
                name: "web".into(),
                namespace: "default".into(),
                scaler_metadata: [("cluster".to_string(), "web".to_string())].into(),
            }),
            metric_name: "desired_replicas".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let desired = snap.decision.unwrap().scaling.unwrap().desired_replicas;
    assert_eq!(desired, 3);
    assert_eq!(keda.metric_values[0].metric_value_float, f64::from(desired));
    let refused = pb::admin_service_client::AdminServiceClient::new(ch)
        .delete_cluster(pb::DeleteClusterRequest { name: "web".into() })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // The killed leader restarts on its data directory: it follows the new
    // leader and serves its version (nothing older).
    let restarted = spawn_replica(dir.path(), &leader, &etcd_url, &backends);
    let current = |url: String| async move {
        let ch = channel(&url).await?;
        DecisionServiceClient::new(ch)
            .get_snapshot(pb::GetSnapshotRequest {
                cluster: "web".into(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().version)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let theirs = current(urls[follower].clone()).await;
        let mine = current(restarted.url()).await;
        if mine.is_some() && mine == theirs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted {leader} serves {mine:?}, the group {theirs:?}\n{}",
            logs(dir.path(), &reps)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        wait_for_leader(&client, None, Duration::from_secs(1)).await,
        Some(new_leader.clone()),
        "the restarted replica follows"
    );
    reps[li] = restarted;

    let versions: Vec<u64> = seen.iter().map(|s| s.2).collect();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
    println!(
        "HA takeover: leader {leader} killed (SIGKILL) under load; {new_leader} elected after {:.0} ms \
         (lease TTL {LEASE_TTL} s); watcher resumed on {} with a newer version {:.0} ms after the kill; \
         Envoy on a newer version {:.0} ms after the kill; {} acknowledged samples (batches per replica {batches:?}, \
         {flips} health flips) all on both survivors; ack latency of a 100-sample batch p50 {:.1} ms, p99 {:.1} ms \
         (local commit + etcd ingest log); watcher versions {}..{} ({} received), never backwards",
        takeover.as_secs_f64() * 1000.0,
        reps[resumed_on].id,
        first_new.as_secs_f64() * 1000.0,
        envoy_new.as_secs_f64() * 1000.0,
        acked.len(),
        pct(0.5),
        pct(0.99),
        versions.first().unwrap(),
        versions.last().unwrap(),
        versions.len(),
    );
    for r in &mut reps {
        r.proc.kill();
    }
    drop(envoy);
}

/// The versions of the snapshots `id` logged as published while leading
/// (its log, ANSI colours removed).
fn published_versions(dir: &Path, id: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join(format!("{id}.log"))).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|l| l.contains("published (HA leader)"))
        .filter_map(|l| {
            let v = l.split("version=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// Fencing: a leader paused (SIGSTOP) past its lease loses the leader key
/// to a follower; resumed (SIGCONT), it must not publish anything after
/// the new leader's election, must step down, and must then follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_fenced_and_follows_when_it_resumes() {
    let Some(etcd_bin) = etcd_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, etcd_url) = start_etcd(&etcd_bin, dir.path());
    let client = Etcd::new(std::slice::from_ref(&etcd_url), Duration::from_secs(2)).unwrap();
    wait_for_etcd(&client, dir.path()).await;
    let backends = [envoy::free_port(), envoy::free_port(), envoy::free_port()];
    let mut reps: Vec<Replica> = ["p0", "p1"]
        .iter()
        .map(|id| spawn_replica(dir.path(), id, &etcd_url, &backends))
        .collect();
    let urls: Vec<String> = reps.iter().map(Replica::url).collect();
    let old = wait_for_leader(&client, None, Duration::from_secs(20))
        .await
        .expect("a leader");
    let (li, fi) = if reps[0].id == old { (0, 1) } else { (1, 0) };

    // Decisions keep changing through the follower.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let flipper = tokio::spawn(load(
        urls[fi].clone(),
        Arc::default(),
        Arc::default(),
        stop_rx.clone(),
        Duration::from_millis(200),
        |seq| vec![sample("c", "healthy", "flip", now_ms(), (seq % 2) as f64)],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while published_versions(dir.path(), &old).len() < 3 {
        assert!(Instant::now() < deadline, "{}", logs(dir.path(), &reps));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    reps[li].proc.signal("STOP");
    let new = wait_for_leader(&client, Some(&old), TAKEOVER_BOUND)
        .await
        .unwrap_or_else(|| {
            panic!(
                "no takeover from a paused leader\n{}",
                logs(dir.path(), &reps)
            )
        });
    assert_eq!(new, reps[fi].id);
    let (kv, _) = client.get(leader_key(PREFIX).as_bytes()).await.unwrap();
    let elected_at = kv.unwrap().create_revision as u64;
    // The new leader publishes; then the old one wakes up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while published_versions(dir.path(), &new).is_empty() {
        assert!(Instant::now() < deadline, "{}", logs(dir.path(), &reps));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reps[li].proc.signal("CONT");

    // It steps down and follows: it serves the new leader's versions.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log =
            std::fs::read_to_string(dir.path().join(format!("{old}.log"))).unwrap_or_default();
        let theirs = published_versions(dir.path(), &new);
        let served = match channel(&urls[li]).await {
            Some(ch) => DecisionServiceClient::new(ch)
                .get_snapshot(pb::GetSnapshotRequest {
                    cluster: "web".into(),
                })
                .await
                .map(|r| r.into_inner().version)
                .unwrap_or(0),
            None => 0,
        };
        if log.contains("no longer the leader") && theirs.len() >= 2 && served >= theirs[1] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resumed leader did not step down and follow (serves {served}, new leader published {theirs:?})\n{}",
            logs(dir.path(), &reps)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send_replace(true);
    let flips = flipper.await.unwrap();
    assert!(flips > 0);
    let late: Vec<u64> = published_versions(dir.path(), &old)
        .into_iter()
        .filter(|v| *v > elected_at)
        .collect();
    assert!(
        late.is_empty(),
        "the fenced leader published versions {late:?} after {new} was elected at revision {elected_at}"
    );
    let still = wait_for_leader(&client, None, Duration::from_secs(1)).await;
    assert_eq!(
        still.as_deref(),
        Some(new.as_str()),
        "one leader, the new one"
    );
    // A leader shutting down (SIGTERM) revokes its lease: the follower
    // takes over without waiting for the lease to run out (which would
    // take at least TTL − TTL/3 = 1.33 s after the last keep-alive).
    let term = Instant::now();
    reps[fi].proc.signal("TERM");
    let handed = wait_for_leader(&client, Some(&new), TAKEOVER_BOUND).await;
    let handover = term.elapsed();
    assert_eq!(handed.as_deref(), Some(old.as_str()));
    assert!(
        handover < Duration::from_millis(1200),
        "a graceful shutdown handed over after {handover:?}: the lease was not revoked\n{}",
        logs(dir.path(), &reps)
    );
    println!(
        "HA fencing: {old} paused past its lease, {new} elected at revision {elected_at}; {old} resumed, published nothing after it, stepped down and follows; \
         {new} stopped with SIGTERM: {old} leads again after {:.0} ms (lease revoked)",
        handover.as_secs_f64() * 1000.0
    );
    for r in &mut reps {
        r.proc.kill();
    }
}
