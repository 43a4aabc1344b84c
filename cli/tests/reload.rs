//! `kill -HUP` on a running `aya serve` reloads its configuration file: the
//! file's cluster changes are applied, a broken file is refused with the
//! running configuration kept, and both show on `/metrics`.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aya_proto::v1 as pb;

fn config(clusters: &[(&str, &[u16])]) -> String {
    let mut s = String::from(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\ntick_interval_seconds = 3600.0\ndefault_policy = \"configured\"\n",
    );
    for (name, ports) in clusters {
        s.push_str(&format!("[[clusters]]\nname = \"{name}\"\n"));
        for p in *ports {
            s.push_str(&format!(
                "[[clusters.backends]]\nname = \"b{p}\"\naddress = \"127.0.0.1:{p}\"\n"
            ));
        }
    }
    s
}

/// Kills the server when dropped (also on test failure).
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serve {
    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.0.id().to_string()])
            .status()
            .expect("the kill command");
        assert!(ok.success(), "kill -HUP failed");
    }
}

fn metrics(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Clusters and their backend addresses, by name.
async fn clusters(url: &str) -> Vec<(String, Vec<String>)> {
    let ch = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("connect");
    pb::admin_service_client::AdminServiceClient::new(ch)
        .list_clusters(pb::ListClustersRequest {})
        .await
        .expect("ListClusters")
        .into_inner()
        .clusters
        .into_iter()
        .map(|c| (c.name, c.backends.into_iter().map(|b| b.address).collect()))
        .collect()
}

async fn wait_for<F: FnMut() -> bool>(what: &str, mut ok: F) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_files_clusters_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aya.toml");
    std::fs::write(&path, config(&[("web", &[9001, 9002])])).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aya"))
        .args(["serve", "--init", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn aya");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let serve = Serve(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let url = format!(
        "http://{}",
        line.trim()
            .strip_prefix("listening on ")
            .expect("listening on")
    );
    line.clear();
    out.read_line(&mut line).unwrap();
    let maddr = line
        .trim()
        .strip_prefix("metrics listening on ")
        .expect("metrics line")
        .to_string();
    assert_eq!(
        clusters(&url).await,
        vec![(
            "web".into(),
            vec!["127.0.0.1:9001".into(), "127.0.0.1:9002".into()]
        )]
    );
    assert!(metrics(&maddr).contains("aya_config_last_reload_successful 1"));

    // The file changes web's backends and adds api; SIGHUP applies both.
    std::fs::write(&path, config(&[("web", &[9001, 9003]), ("api", &[9101])])).unwrap();
    serve.hup();
    let want = vec![
        ("api".to_string(), vec!["127.0.0.1:9101".to_string()]),
        (
            "web".to_string(),
            vec!["127.0.0.1:9001".to_string(), "127.0.0.1:9003".to_string()],
        ),
    ];
    let t0 = Instant::now();
    while clusters(&url).await != want {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the reload was not applied: {:?}",
            clusters(&url).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for("the success counter", || {
        metrics(&maddr).contains("aya_config_reloads_total{result=\"success\"} 1")
    })
    .await;

    // A broken file: refused, counted, the running clusters kept, still serving.
    std::fs::write(&path, "listen = [broken\n").unwrap();
    serve.hup();
    wait_for("the failure counter", || {
        let m = metrics(&maddr);
        m.contains("aya_config_reloads_total{result=\"failure\"} 1")
            && m.contains("aya_config_last_reload_successful 0")
    })
    .await;
    assert_eq!(clusters(&url).await, want);

    // Fixed again (api dropped): applied, and the gauge says so.
    std::fs::write(&path, config(&[("web", &[9001, 9003])])).unwrap();
    serve.hup();
    wait_for("the second success", || {
        let m = metrics(&maddr);
        m.contains("aya_config_reloads_total{result=\"success\"} 2")
            && m.contains("aya_config_last_reload_successful 1")
    })
    .await;
    assert_eq!(clusters(&url).await, want[1..].to_vec());
    drop(serve);
}
