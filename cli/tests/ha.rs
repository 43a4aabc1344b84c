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
#[allow(dead_code)]
#[path = "../../controller/tests/common/pki.rs"]
mod pki;

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
    start_etcd_with(bin, dir, None)
}

/// [`start_etcd`], serving clients over TLS with `pki`'s server
/// certificate and requiring a client certificate signed by its CA.
fn start_etcd_with(bin: &Path, dir: &Path, pki: Option<&pki::Pki>) -> (Proc, String) {
    let (client, peer) = (envoy::free_port(), envoy::free_port());
    let scheme = if pki.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{client}");
    let mut tls: Vec<std::ffi::OsString> = Vec::new();
    if let Some(p) = pki {
        for (flag, file) in [
            ("--cert-file", "server.pem"),
            ("--key-file", "server.key"),
            ("--trusted-ca-file", "ca.pem"),
        ] {
            tls.push(flag.into());
            tls.push(p.path(file).into());
        }
        tls.push("--client-cert-auth".into());
    }
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
        .args(&tls)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn etcd");
    (Proc(Some(child)), url)
}

/// [`start_etcd`], a client of it, once it answers.
async fn running_etcd(bin: &Path, dir: &Path) -> (Proc, String, Etcd) {
    let (etcd, url) = start_etcd(bin, dir);
    let client = Etcd::new(std::slice::from_ref(&url), Duration::from_secs(2)).unwrap();
    wait_for_etcd(&client, dir).await;
    (etcd, url, client)
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
    replica_config_with(id, etcd, backends, "", "")
}

/// [`replica_config`] with `cluster` appended to the cluster's table (e.g.
/// its `[clusters.warm_start]`) and `ha` to `[ha]`.
fn replica_config_with(id: &str, etcd: &str, backends: &[u16], cluster: &str, ha: &str) -> String {
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
    s.push_str(cluster);
    s.push_str(&format!(
        r#"[ha]
etcd_endpoints = ["{etcd}"]
prefix = "{PREFIX}"
replica_id = "{id}"
lease_ttl_seconds = {LEASE_TTL}
{ha}"#
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
    spawn_replica_with(dir, id, &replica_config(id, etcd, backends))
}

/// An `aya serve` replica on configuration `toml`.
fn spawn_replica_with(dir: &Path, id: &str, toml: &str) -> Replica {
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(&cfg, toml).unwrap();
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
    let (_etcd, etcd_url, client) = running_etcd(&etcd_bin, dir.path()).await;

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

    // A follower serves KEDA from the replicated decision.
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

    // The killed leader restarts on its data directory: it follows the new
    // leader and serves its version (nothing older).
    let restarted = spawn_replica(dir.path(), &leader, &etcd_url, &backends);
    let current = |url: String| async move { snapshot_at(&url).await.map(|s| s.version) };
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
    let (_etcd, etcd_url, client) = running_etcd(&etcd_bin, dir.path()).await;
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
        let served = snapshot_at(&urls[li]).await.map_or(0, |s| s.version);
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

async fn snapshot_at(url: &str) -> Option<pb::ClusterSnapshot> {
    let ch = channel(url).await?;
    DecisionServiceClient::new(ch)
        .get_snapshot(pb::GetSnapshotRequest {
            cluster: "web".into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// The backends of cluster `web` as replica `url` has them (`None`: no
/// such cluster there, or no answer).
async fn backends_at(url: &str) -> Option<Vec<(String, String, u32)>> {
    let ch = channel(url).await?;
    let list = pb::admin_service_client::AdminServiceClient::new(ch)
        .list_clusters(pb::ListClustersRequest {})
        .await
        .ok()?
        .into_inner();
    let web = list.clusters.into_iter().find(|c| c.name == "web")?;
    Some(
        web.backends
            .into_iter()
            .map(|b| (b.name, b.address, b.weight_hint))
            .collect(),
    )
}

/// The published weights by backend, and whether the override rule fired.
fn weights_of(s: &pb::ClusterSnapshot) -> (Vec<(String, u32)>, bool) {
    let w = s
        .endpoints
        .iter()
        .map(|e| (e.backend.clone(), e.weight))
        .collect();
    let overridden = s
        .decision
        .as_ref()
        .and_then(|d| d.explanation.as_ref())
        .is_some_and(|e| e.rules.iter().any(|r| r == "operator_override"));
    (w, overridden)
}

/// Poll `check` every 100 ms until it holds or `bound` passed.
async fn until<F, Fut>(bound: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + bound;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn keda_forecast_rps(url: &str) -> Result<f64, tonic::Status> {
    let ch = channel(url)
        .await
        .ok_or_else(|| tonic::Status::unavailable("no connection"))?;
    let r = aya_proto::keda::external_scaler_client::ExternalScalerClient::new(ch)
        .get_metrics(aya_proto::keda::GetMetricsRequest {
            scaled_object_ref: Some(aya_proto::keda::ScaledObjectRef {
                name: "web".into(),
                namespace: "default".into(),
                scaler_metadata: [
                    ("cluster".to_string(), "web".to_string()),
                    ("metric".to_string(), "forecast_rps".to_string()),
                    ("target_rps_per_replica".to_string(), "100".to_string()),
                ]
                .into(),
            }),
            metric_name: "forecast_rps".into(),
        })
        .await?
        .into_inner();
    Ok(r.metric_values[0].metric_value_float)
}

/// Admin changes made at any replica reach the whole group through etcd:
/// a backend added and an override set at a follower are published by the
/// leader and shown by every replica; changes made at both replicas at
/// once converge (each answered OK or ABORTED, never lost half-way); the
/// override survives a `kill -9` of the leader and the new leader clears
/// it; the killed replica, restarted, has every change; a backend and then
/// the cluster deleted at a follower are gone everywhere. The follower, a
/// hot standby, answers KEDA `forecast_rps` from its own forecaster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_changes_at_any_replica_reach_the_group_and_survive_a_takeover() {
    use pb::admin_service_client::AdminServiceClient;
    let Some(etcd_bin) = etcd_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, etcd_url, client) = running_etcd(&etcd_bin, dir.path()).await;
    let backends = [envoy::free_port(), envoy::free_port(), envoy::free_port()];
    // Two days of per-minute demand up to now: each replica warm-starts its
    // cluster's forecaster from it.
    let csv = dir.path().join("demand.csv");
    let last = now_ms() / 60_000 - 1;
    let mut text = String::from("timestamp,value\n");
    for k in 0..2880 {
        let t = (last - 2879 + k) * 60;
        let v = 500.0 + 200.0 * ((t % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU).sin();
        text.push_str(&format!("{t},{v:.3}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let warm = format!("[clusters.warm_start]\ncsv = \"{}\"\n", csv.display());
    let config = |id: &str| replica_config_with(id, &etcd_url, &backends, &warm, "");
    let mut reps: Vec<Replica> = ["s0", "s1"]
        .iter()
        .map(|id| spawn_replica_with(dir.path(), id, &config(id)))
        .collect();
    let urls: Vec<String> = reps.iter().map(Replica::url).collect();
    let leader = wait_for_leader(&client, None, Duration::from_secs(20))
        .await
        .expect("a leader");
    let (li, fi) = if reps[0].id == leader { (0, 1) } else { (1, 0) };
    let bound = Duration::from_secs(15);
    assert!(
        until(bound, || async { snapshot_at(&urls[fi]).await.is_some() }).await,
        "the follower serves no snapshot\n{}",
        logs(dir.path(), &reps)
    );

    // KEDA forecast_rps on the follower: its own forecaster's peak (from
    // its first tick on).
    let in_range =
        |r: &Result<f64, tonic::Status>| r.as_ref().is_ok_and(|v| (100.0..=2000.0).contains(v));
    until(bound, || async {
        in_range(&keda_forecast_rps(&urls[fi]).await)
    })
    .await;
    let rps = keda_forecast_rps(&urls[fi]).await;
    assert!(
        in_range(&rps),
        "forecast_rps on the follower: {rps:?}\n{}",
        logs(dir.path(), &reps)
    );

    // A backend added at the follower: on both replicas, published by the leader.
    let d_port = envoy::free_port();
    let d_addr = format!("127.0.0.1:{d_port}");
    AdminServiceClient::new(channel(&urls[fi]).await.unwrap())
        .upsert_backend(pb::UpsertBackendRequest {
            cluster: "web".into(),
            backend: Some(pb::Backend {
                name: "d".into(),
                address: d_addr.clone(),
                weight_hint: 1,
            }),
        })
        .await
        .expect("UpsertBackend at a follower");
    for url in &urls {
        let ok = until(bound, || async {
            let has_d = backends_at(url)
                .await
                .is_some_and(|b| b.iter().any(|(n, a, _)| n == "d" && *a == d_addr));
            let published = snapshot_at(url)
                .await
                .is_some_and(|s| s.endpoints.iter().any(|e| e.backend == "d"));
            has_d && published
        })
        .await;
        assert!(
            ok,
            "{url}: backend d added at the follower is not there and published\n{}",
            logs(dir.path(), &reps)
        );
    }

    // An override set at the follower: the answer already carries it, and
    // every replica publishes it.
    let weights = |a: u32| {
        ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(i, b)| pb::BackendWeight {
                backend: b.to_string(),
                weight: if i == 0 { a } else { 1 },
            })
            .collect::<Vec<_>>()
    };
    let answer = AdminServiceClient::new(channel(&urls[fi]).await.unwrap())
        .set_override(pb::SetOverrideRequest {
            cluster: "web".into(),
            weights: weights(5),
            algorithm: 0,
            desired_replicas: 0,
        })
        .await
        .expect("SetOverride at a follower")
        .into_inner();
    let want: Vec<(String, u32)> = vec![
        ("a".into(), 5),
        ("b".into(), 1),
        ("c".into(), 1),
        ("d".into(), 1),
    ];
    assert_eq!(weights_of(&answer), (want.clone(), true), "{answer:?}");
    for url in &urls {
        let ok = until(bound, || async {
            snapshot_at(url)
                .await
                .is_some_and(|s| weights_of(&s) == (want.clone(), true))
        })
        .await;
        assert!(
            ok,
            "{url}: the override is not published\n{}",
            logs(dir.path(), &reps)
        );
    }

    // Changes at both replicas at once: each is made everywhere or refused
    // (ABORTED, retry), and the replicas end up with the same cluster.
    let mut calls = Vec::new();
    for k in 0..12u32 {
        let url = urls[(k % 2) as usize].clone();
        let addr = d_addr.clone();
        calls.push(tokio::spawn(async move {
            let mut admin = AdminServiceClient::new(channel(&url).await.unwrap());
            admin
                .upsert_backend(pb::UpsertBackendRequest {
                    cluster: "web".into(),
                    backend: Some(pb::Backend {
                        name: "d".into(),
                        address: addr,
                        weight_hint: 10 + k,
                    }),
                })
                .await
                .map(|_| 10 + k)
                .map_err(|s| s.code())
        }));
    }
    let mut made = Vec::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(hint) => made.push(hint),
            Err(code) => assert_eq!(code, tonic::Code::Aborted, "a concurrent change"),
        }
    }
    assert!(!made.is_empty(), "no concurrent change was made");
    let converged = until(bound, || async {
        let (x, y) = (backends_at(&urls[0]).await, backends_at(&urls[1]).await);
        x.is_some() && x == y
    })
    .await;
    let final_hint = backends_at(&urls[0])
        .await
        .and_then(|b| b.into_iter().find(|(n, _, _)| n == "d"))
        .map(|(_, _, h)| h);
    assert!(
        converged && final_hint.is_some_and(|h| made.contains(&h)),
        "replicas disagree after concurrent changes (made {made:?}, final {final_hint:?}): {:?} vs {:?}",
        backends_at(&urls[0]).await,
        backends_at(&urls[1]).await
    );

    // kill -9 the leader: the follower takes over with the override.
    reps[li].proc.kill();
    let new = wait_for_leader(&client, Some(&leader), TAKEOVER_BOUND)
        .await
        .expect("a takeover");
    assert_eq!(new, reps[fi].id);
    let kept = until(bound, || async {
        let s = snapshot_at(&urls[fi]).await;
        s.is_some_and(|s| weights_of(&s) == (want.clone(), true))
    })
    .await;
    assert!(
        kept,
        "the override did not survive the takeover\n{}",
        logs(dir.path(), &reps)
    );
    let cleared = AdminServiceClient::new(channel(&urls[fi]).await.unwrap())
        .clear_override(pb::ClearOverrideRequest {
            cluster: "web".into(),
        })
        .await
        .expect("ClearOverride")
        .into_inner();
    assert!(cleared.cleared);

    // The killed replica restarts on its store: it has every change the
    // group made (backend d with the final hint, no override).
    let restarted = spawn_replica_with(dir.path(), &leader, &config(&leader));
    let r_url = restarted.url();
    reps[li] = restarted;
    let caught_up = until(bound, || async {
        let b = backends_at(&r_url).await;
        let s = snapshot_at(&r_url).await;
        b.is_some_and(|b| b.iter().any(|(n, _, h)| n == "d" && Some(*h) == final_hint))
            && s.is_some_and(|s| !weights_of(&s).1 && s.endpoints.len() == 4)
    })
    .await;
    assert!(
        caught_up,
        "the restarted replica lacks the group's changes: {:?} {:?}\n{}",
        backends_at(&r_url).await,
        snapshot_at(&r_url).await.map(|s| weights_of(&s)),
        logs(dir.path(), &reps)
    );

    // At the restarted follower: delete backend d, then the cluster.
    AdminServiceClient::new(channel(&r_url).await.unwrap())
        .delete_backend(pb::DeleteBackendRequest {
            cluster: "web".into(),
            backend: "d".into(),
        })
        .await
        .expect("DeleteBackend at a follower");
    let gone = until(bound, || async {
        let s = snapshot_at(&urls[fi]).await;
        s.is_some_and(|s| s.endpoints.len() == 3 && s.endpoints.iter().all(|e| e.backend != "d"))
    })
    .await;
    assert!(
        gone,
        "backend d deleted at a follower is still published by the leader"
    );
    let deleted = AdminServiceClient::new(channel(&r_url).await.unwrap())
        .delete_cluster(pb::DeleteClusterRequest { name: "web".into() })
        .await
        .expect("DeleteCluster at a follower")
        .into_inner();
    assert!(deleted.deleted);
    for url in [&urls[fi], &r_url] {
        let ok = until(bound, || async {
            backends_at(url).await.is_none() && snapshot_at(url).await.is_none()
        })
        .await;
        assert!(
            ok,
            "{url}: the deleted cluster is still there\n{}",
            logs(dir.path(), &reps)
        );
    }
    let (snap_key, _) = client
        .get(format!("{PREFIX}/snapshot/web").as_bytes())
        .await
        .unwrap();
    assert!(
        snap_key.is_none(),
        "the deleted cluster's snapshot is still in etcd"
    );
    println!(
        "HA admin changes: UpsertBackend, SetOverride at a follower published by the leader and on both replicas; \
         {} of 12 concurrent changes made, the rest ABORTED, replicas converged; override kept across a kill -9 takeover; \
         restarted replica caught up; DeleteBackend / DeleteCluster at a follower gone everywhere; KEDA forecast_rps on a follower {:.1}",
        made.len(),
        rps.unwrap()
    );
    for r in &mut reps {
        r.proc.kill();
    }
}

/// `aya serve` on `toml` that must fail to start: its exit code and log.
fn failed_start(dir: &Path, id: &str, toml: &str) -> (Option<i32>, String) {
    let cfg = dir.join(format!("{id}.toml"));
    std::fs::write(&cfg, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join(format!("{id}-data")))
        .arg("--no-metrics")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn aya");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code(), text);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{id}: still running after 30 s, but it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TLS to etcd: etcd serves clients over TLS only and requires a client
/// certificate (`--client-cert-auth`). A replica with the CA and a client
/// certificate leads and publishes; one without a client certificate, and
/// one that does not trust etcd's CA, refuse to start naming etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() {
    let Some(etcd_bin) = etcd_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca_dir, other_dir) = (dir.path().join("pki"), dir.path().join("other"));
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::create_dir_all(&other_dir).unwrap();
    let pki = pki::Pki::new(&ca_dir);
    let other = pki::Pki::new(&other_dir);
    let (_etcd, etcd_url) = start_etcd_with(&etcd_bin, dir.path(), Some(&pki));
    assert!(etcd_url.starts_with("https://"));
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pki.read("ca.pem")))
        .identity(tonic::transport::Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    let client = Etcd::with_tls(
        std::slice::from_ref(&etcd_url),
        Duration::from_secs(2),
        Some(tls),
    )
    .unwrap();
    wait_for_etcd(&client, dir.path()).await;
    let backends = [envoy::free_port(), envoy::free_port(), envoy::free_port()];
    let ha = |ca: &Path, cert: bool| {
        let mut s = format!("etcd_ca_file = \"{}\"\n", ca.display());
        if cert {
            s.push_str(&format!(
                "etcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\n",
                pki.path("client.pem").display(),
                pki.path("client.key").display()
            ));
        }
        s
    };
    let good = replica_config_with(
        "t0",
        &etcd_url,
        &backends,
        "",
        &ha(&pki.path("ca.pem"), true),
    );
    let mut reps = vec![spawn_replica_with(dir.path(), "t0", &good)];
    let leader = wait_for_leader(&client, None, Duration::from_secs(20)).await;
    assert_eq!(leader.as_deref(), Some("t0"), "{}", logs(dir.path(), &reps));
    let url = reps[0].url();
    assert!(
        until(Duration::from_secs(15), || async {
            snapshot_at(&url).await.is_some()
        })
        .await,
        "the TLS replica publishes nothing\n{}",
        logs(dir.path(), &reps)
    );
    let (snap, _) = client
        .get(format!("{PREFIX}/snapshot/web").as_bytes())
        .await
        .unwrap();
    assert!(snap.is_some(), "the snapshot is not in etcd");

    for (id, toml, why) in [
        (
            "t1",
            replica_config_with(
                "t1",
                &etcd_url,
                &backends,
                "",
                &ha(&pki.path("ca.pem"), false),
            ),
            "no client certificate",
        ),
        (
            "t2",
            replica_config_with(
                "t2",
                &etcd_url,
                &backends,
                "",
                &ha(&other.path("ca.pem"), true),
            ),
            "etcd's CA not trusted",
        ),
    ] {
        let (code, text) = failed_start(dir.path(), id, &toml);
        assert_eq!(code, Some(1), "{why}: exit {code:?}\n{text}");
        assert!(
            text.contains("cannot reach etcd") && !text.contains("listening on"),
            "{why}: {text}"
        );
    }
    println!(
        "HA over TLS to etcd (--client-cert-auth): a replica with a client certificate leads and publishes; without one, or not trusting etcd's CA, the start fails"
    );
    for r in &mut reps {
        r.proc.kill();
    }
}
