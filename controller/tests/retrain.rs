//! Guarded background retrain of the demand model, in-process on
//! 127.0.0.1:0: a scheduled retrain learns from the stored demand history,
//! installs and persists its model, a restart restores it, and a candidate
//! that backtests worse is rejected (the model in use and the stored
//! artifact stay as they were). The service runs on a manual clock: the
//! scheduled retrain happens when the test moves the clock past it. The
//! warm start at start (from a CSV or an `aya train` artifact) goes through
//! the same guard.

mod common;

use std::time::Duration;

use aya_controller::clock::Clock;
use aya_controller::config::{Config, WarmStart};
use aya_controller::metrics::RetrainOutcome;
use aya_controller::server::{Listeners, serve_controller};
use aya_controller::state::{Controller, model_key};
use aya_controller::store::Store;
use aya_forecaster::artifact::{Artifact, TrainingWindow};
use aya_forecaster::models::ModelSpec;
use aya_forecaster::seasonality::Seasonality;
use aya_forecaster::select::{FittedAuto, SelectConfig, Selection, select};
use common::now_ms;

const STEP_MS: i64 = 60_000;
const POINTS: usize = 150;

/// Demand of bucket `k`: a rising level with a 12-step cycle (deterministic).
fn demand(k: usize) -> f64 {
    let x = k as f64;
    200.0 + 1.5 * x + 30.0 * (std::f64::consts::TAU * x / 12.0).sin()
}

/// Store `POINTS` one-minute demand points ending two minutes ago, as the
/// control loop stores them, in a fresh data directory.
fn seed_history(dir: &std::path::Path) -> Vec<(i64, f64)> {
    let last_bucket = now_ms() / STEP_MS - 2;
    let first = last_bucket - POINTS as i64 + 1;
    let points: Vec<(String, i64, f64)> = (0..POINTS)
        .map(|k| ("web".to_string(), (first + k as i64) * STEP_MS, demand(k)))
        .collect();
    let store = Store::open_with(dir, aya_controller::store::OpenMode::Init).unwrap();
    store.append_demand(&points).unwrap();
    store.sync().unwrap();
    points.into_iter().map(|(_, t, v)| (t, v)).collect()
}

fn config(dir: &std::path::Path, retrain_interval_seconds: f64) -> Config {
    Config {
        retrain_interval_seconds,
        ..common::config(dir)
    }
}

struct Service {
    ctl: Controller,
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), aya_controller::server::ServeError>>,
}

/// The service on a manual clock standing at the wall time.
async fn start(config: Config) -> Service {
    let clock = Clock::manual(now_ms());
    let ctl = tokio::task::spawn_blocking(move || Controller::open_with_clock(config, clock))
        .await
        .unwrap()
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_controller(
        ctl.clone(),
        Listeners {
            grpc,
            metrics: Some(metrics),
        },
        async move {
            let _ = rx.await;
        },
    ));
    // Wait for the initial control tick (it builds the cluster's forecaster).
    for _ in 0..1200 {
        if ctl.metrics().ticks() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ctl.metrics().ticks() > 0, "no initial tick");
    Service {
        ctl,
        addr,
        metrics_addr,
        stop,
        task,
    }
}

impl Service {
    /// Report `rps` as backend `a`'s request rate now and run one control
    /// tick: the demand the loop then observes and stores.
    async fn observe_demand(&self, rps: f64) {
        let now = self.ctl.clock().now_ms();
        let sample = aya_controller::ingest::Sample::new(
            "web",
            "a",
            "request_rate",
            aya_controller::ingest::MetricKind::Gauge,
            now,
            rps,
        );
        let rx = self.ctl.submit_samples(vec![sample]).await.unwrap();
        assert!(rx.await.unwrap().iter().all(|r| r.is_ok()));
        let c = self.ctl.clone();
        let secs = c.clock().now_secs();
        tokio::task::spawn_blocking(move || c.tick_all(secs))
            .await
            .unwrap()
            .unwrap();
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        let ctl = self.ctl;
        let closed = tokio::task::spawn_blocking(move || ctl.close(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(closed, "the controller released its store");
    }

    async fn prometheus(&self) -> String {
        common::prometheus(self.metrics_addr).await
    }
}

/// The value of the Prometheus sample `name` in `body`.
fn sample_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn stored_artifact(ctl: &Controller) -> (Vec<u8>, Artifact) {
    let bytes = ctl
        .store()
        .get_model(&model_key("web"))
        .unwrap()
        .expect("an accepted retrain stores its model");
    let a = Artifact::from_json(
        std::path::Path::new("store"),
        std::str::from_utf8(&bytes).unwrap(),
    )
    .unwrap();
    (bytes, a)
}

/// A selection that backtests worse on the rising `values`: their global mean.
fn global_mean(values: &[f64]) -> Selection {
    select(
        &values[..100],
        &Seasonality::default(),
        12,
        &SelectConfig {
            candidates: Some(vec![ModelSpec::Mean { window: 0 }]),
            ensemble: 1,
            ..SelectConfig::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_retrain_installs_and_persists_a_model_a_restart_restores_it_and_a_worse_one_is_rejected()
 {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_history(dir.path());

    // 1. A scheduled retrain (every minute) learns from the stored history.
    let svc = start(config(dir.path(), 60.0)).await;
    assert_eq!(
        svc.ctl.metrics().retrains("web", RetrainOutcome::Skipped),
        0
    );
    svc.ctl.clock().advance(Duration::from_secs(60)).unwrap();
    let mut waited = 0;
    while svc.ctl.metrics().retrains("web", RetrainOutcome::Accepted) == 0 {
        assert!(
            waited < 1200,
            "no accepted retrain within 60 s (rejected {}, failed {}, skipped {})",
            svc.ctl.metrics().retrains("web", RetrainOutcome::Rejected),
            svc.ctl.metrics().retrains("web", RetrainOutcome::Failed),
            svc.ctl.metrics().retrains("web", RetrainOutcome::Skipped),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let body = svc.prometheus().await;
    let accepted = sample_value(
        &body,
        "aya_retrains_total{cluster=\"web\",outcome=\"accepted\"}",
    )
    .unwrap_or(0.0);
    // One clock step past the schedule: exactly one retrain ran.
    assert_eq!(accepted, 1.0, "{body}");
    let cand = sample_value(&body, "aya_retrain_candidate_mase{cluster=\"web\"}");
    assert!(cand.is_some_and(f64::is_finite), "{body}");
    assert!(
        body.contains("aya_retrain_current_mase{cluster=\"web\"}"),
        "{body}"
    );

    // The stored artifact is the model in use, with both holdout scores.
    let (_, artifact) = stored_artifact(&svc.ctl);
    let in_use = svc.ctl.model("web").expect("a model is in use");
    assert_eq!(artifact.chosen, in_use.describe());
    assert_eq!(
        artifact.selection.validation_origins,
        in_use.validation_origins
    );
    assert_eq!(artifact.training.series, "web/demand");
    assert_eq!(artifact.training.interval_ms, STEP_MS);
    assert!(
        artifact.training.points >= POINTS,
        "{:?}",
        artifact.training
    );
    let scores = artifact.backtest.clone().expect("holdout scores");
    assert!(
        scores
            .iter()
            .any(|s| s.model == "candidate" && s.mase.is_finite())
    );
    // Selected on the data before the holdout: not on the whole history.
    let first_holdout = artifact.training.points - 12 - 3 * 6;
    assert!(
        in_use
            .validation_origins
            .iter()
            .all(|&o| o + in_use.validation_horizon <= first_holdout),
        "{:?}",
        in_use.validation_origins
    );
    svc.stop().await;

    // 2. A restart restores the stored model (no scheduled retrain now).
    let svc = start(config(dir.path(), 3600.0)).await;
    let restored = svc.ctl.model("web").expect("the model is restored");
    assert_eq!(restored.describe(), artifact.chosen);
    assert_eq!(
        restored.validation_origins,
        artifact.selection.validation_origins
    );
    // The control loop keeps appending the demand it observes (none until a
    // rate is measured: unknown demand is not stored as zero).
    let before = svc.ctl.store().demand("web", 0).unwrap();
    assert_eq!(&before[..], &seeded[..]);
    svc.observe_demand(321.0).await;
    let stored = svc.ctl.store().demand("web", 0).unwrap();
    assert_eq!(stored.len(), seeded.len() + 1, "{} points", stored.len());
    assert_eq!(&stored[..seeded.len()], &seeded[..]);
    assert_eq!(stored[seeded.len()].1, 321.0);

    // 3. A candidate that backtests worse is rejected: the global mean of a
    // rising series.
    let values: Vec<f64> = seeded.iter().map(|p| p.1).collect();
    let worse = global_mean(&values);
    let (bytes_before, _) = stored_artifact(&svc.ctl);
    let c = svc.ctl.clone();
    let report = tokio::task::spawn_blocking(move || {
        c.retrain_cluster_with("web", c.clock().now_secs(), Some(worse))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.outcome, RetrainOutcome::Rejected, "{report:?}");
    assert!(report.candidate_mase > report.current_mase, "{report:?}");
    let after = svc.ctl.model("web").unwrap();
    assert_eq!(after.describe(), restored.describe());
    assert_eq!(after.validation_origins, restored.validation_origins);
    assert_eq!(
        stored_artifact(&svc.ctl).0,
        bytes_before,
        "stored model unchanged"
    );
    let body = svc.prometheus().await;
    assert_eq!(
        sample_value(
            &body,
            "aya_retrains_total{cluster=\"web\",outcome=\"rejected\"}"
        ),
        Some(1.0),
        "{body}"
    );
    let cand = sample_value(&body, "aya_retrain_candidate_mase{cluster=\"web\"}").unwrap();
    let cur = sample_value(&body, "aya_retrain_current_mase{cluster=\"web\"}").unwrap();
    assert!(cand > cur, "{body}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_history_is_skipped_and_an_unknown_cluster_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(config(dir.path(), 3600.0)).await;
    let c = svc.ctl.clone();
    let (report, unknown) = tokio::task::spawn_blocking(move || {
        (
            c.retrain_cluster("web", c.clock().now_secs()),
            c.retrain_cluster("nope", c.clock().now_secs()),
        )
    })
    .await
    .unwrap();
    let report = report.unwrap();
    assert_eq!(report.outcome, RetrainOutcome::Skipped, "{report:?}");
    assert!(report.message.contains("needs at least"), "{report:?}");
    assert!(unknown.is_err());
    assert!(
        svc.ctl
            .store()
            .get_model(&model_key("web"))
            .unwrap()
            .is_none()
    );
    svc.stop().await;
}

// === warm start ===

/// `config` with a `[clusters.warm_start]` on `web`.
fn warm_config(dir: &std::path::Path, warm: WarmStart) -> Config {
    let mut c = config(dir, 3600.0);
    c.clusters[0].warm_start = Some(warm);
    c
}

fn warm(csv: Option<&std::path::Path>, artifact: Option<&std::path::Path>) -> WarmStart {
    WarmStart {
        prometheus_url: None,
        prometheus_ca: None,
        prometheus_bearer_token_file: None,
        prometheus_basic_auth_file: None,
        query: None,
        series_labels: Default::default(),
        skip_non_finite: false,
        csv: csv.map(Into::into),
        artifact: artifact.map(Into::into),
        min_stored_points: None,
    }
}

/// An `aya train`-style artifact of `selection` fitted on `y`, saved at `path`.
fn save_artifact(path: &std::path::Path, y: &[f64], selection: Selection) {
    let fitted = FittedAuto::fit(y, selection).unwrap();
    Artifact::new(
        "test".to_string(),
        TrainingWindow {
            series: "web demand".into(),
            start: String::new(),
            end: String::new(),
            points: y.len(),
            interval_ms: STEP_MS,
        },
        12,
        &fitted,
        None,
    )
    .save(path)
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_warm_start_feeds_the_guarded_retrain_and_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    // The demand of the last POINTS minutes, as a monitoring export.
    let last_bucket = now_ms() / STEP_MS - 2;
    let first = last_bucket - POINTS as i64 + 1;
    let mut csv = String::from("timestamp,value\n");
    for k in 0..POINTS {
        csv.push_str(&format!(
            "{},{}\n",
            (first + k as i64) * STEP_MS / 1000,
            demand(k)
        ));
    }
    let path = data.path().join("demand.csv");
    std::fs::write(&path, csv).unwrap();

    let svc = start(warm_config(dir.path(), warm(Some(&path), None))).await;
    // The warm start ran before the initial tick: one accepted retrain.
    assert_eq!(
        svc.ctl.metrics().retrains("web", RetrainOutcome::Accepted),
        1
    );
    let in_use = svc.ctl.model("web").expect("a model from the warm history");
    let (_, artifact) = stored_artifact(&svc.ctl);
    assert_eq!(artifact.chosen, in_use.describe());
    assert!(
        artifact.training.points >= POINTS,
        "{:?}",
        artifact.training
    );
    svc.observe_demand(321.0).await;
    let stored = svc.ctl.store().demand("web", 0).unwrap();
    assert_eq!(stored.len(), POINTS + 1, "{} points", stored.len());
    assert_eq!(stored[POINTS].1, 321.0);
    assert_eq!(stored[0], (first * STEP_MS, demand(0)));
    assert_eq!(
        stored[POINTS - 1],
        (last_bucket * STEP_MS, demand(POINTS - 1))
    );
    svc.stop().await;

    // Restart: the store now holds the history, so no second warm start.
    let mut w = warm(Some(&path), None);
    w.min_stored_points = Some(100);
    let svc = start(warm_config(dir.path(), w.clone())).await;
    let c = svc.ctl.clone();
    let report =
        tokio::task::spawn_blocking(move || c.warm_start_cluster("web", &w, c.clock().now_secs()))
            .await
            .unwrap();
    assert!(report.message.starts_with("not needed"), "{report:?}");
    assert!(report.retrain.is_none() && !report.failed);
    assert_eq!(
        svc.ctl.metrics().retrains("web", RetrainOutcome::Accepted),
        0
    );
    assert_eq!(svc.ctl.model("web").unwrap().describe(), in_use.describe());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_warm_start_is_installed_only_when_no_worse() {
    let data = tempfile::tempdir().unwrap();
    let values: Vec<f64> = (0..POINTS).map(demand).collect();
    let good_sel = select(
        &values,
        &Seasonality {
            periods: vec![12],
            day: None,
        },
        12,
        &SelectConfig::default(),
    )
    .unwrap();
    let good = data.path().join("good.json");
    save_artifact(&good, &values, good_sel.clone());
    let worse = data.path().join("worse.json");
    save_artifact(&worse, &values, global_mean(&values));

    // 1. No stored history and no model: nothing to compare with, the
    // artifact's model is installed and stored.
    let empty = tempfile::tempdir().unwrap();
    let svc = start(warm_config(empty.path(), warm(None, Some(&good)))).await;
    assert_eq!(
        svc.ctl.model("web").unwrap().describe(),
        good_sel.describe()
    );
    assert_eq!(stored_artifact(&svc.ctl).1.chosen, good_sel.describe());
    svc.stop().await;

    // 2. Stored history: the artifact is scored against the model in use.
    let dir = tempfile::tempdir().unwrap();
    seed_history(dir.path());
    let mut w = warm(None, Some(&good));
    w.min_stored_points = Some(10_000);
    let svc = start(warm_config(dir.path(), w)).await;
    assert_eq!(
        svc.ctl.metrics().retrains("web", RetrainOutcome::Accepted),
        1
    );
    let in_use = svc.ctl.model("web").unwrap();
    let (bytes_before, _) = stored_artifact(&svc.ctl);
    svc.stop().await;

    // 3. A worse artifact at the next start is rejected: the restored model
    // and the stored artifact stay.
    let mut w = warm(None, Some(&worse));
    w.min_stored_points = Some(10_000);
    let svc = start(warm_config(dir.path(), w)).await;
    assert_eq!(
        svc.ctl.metrics().retrains("web", RetrainOutcome::Rejected),
        1
    );
    assert_eq!(svc.ctl.model("web").unwrap().describe(), in_use.describe());
    assert_eq!(stored_artifact(&svc.ctl).0, bytes_before);
    svc.stop().await;
}

#[test]
fn warm_start_configuration_is_checked() {
    let toml = |w: &str| {
        format!(
            "[[clusters]]\nname = \"web\"\n[[clusters.backends]]\nname = \"a\"\naddress = \"127.0.0.1:9001\"\n[clusters.warm_start]\n{w}\n"
        )
    };
    let parse = |w: &str| {
        let mut c = Config::from_toml(&toml(w), std::path::Path::new("aya.toml"))?;
        c.validate().map(|()| c)
    };
    let c = parse("prometheus_url = \"http://127.0.0.1:9090\"\nquery = \"sum(rate(x[5m]))\"\nseries_labels = { job = \"web\" }")
        .unwrap();
    let w = c.clusters[0].warm_start.clone().unwrap();
    assert_eq!(w.series_labels.get("job").map(String::as_str), Some("web"));
    for (bad, want) in [
        ("", "exactly one"),
        ("csv = \"a.csv\"\nartifact = \"m.json\"", "exactly one"),
        (
            "prometheus_url = \"http://h:9090\"",
            "clusters[0].warm_start.query",
        ),
        (
            "prometheus_url = \"ftp://h:9090\"\nquery = \"x\"",
            "https://",
        ),
        (
            "prometheus_url = \"https://h:9090\"\nquery = \"x\"\nprometheus_ca = \"/nonexistent/ca.pem\"",
            "clusters[0].warm_start.prometheus_ca",
        ),
        (
            "csv = \"a.csv\"\nprometheus_bearer_token_file = \"/etc/hostname\"",
            "go with prometheus_url",
        ),
        ("csv = \"a.csv\"\nquery = \"x\"", "go with prometheus_url"),
        (
            "csv = \"a.csv\"\nmin_stored_points = 0",
            "min_stored_points",
        ),
        ("csv = \"a.csv\"\nbogus = 1", "bogus"),
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

/// `AdminService.WarmStart`: an operator warm-starts a cluster on request
/// from the source its configuration names — here a CSV export that did
/// not exist yet when the service started (the start-time warm start failed
/// and was logged, the service ran on). Refusals name the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_start_on_admin_request_reads_the_configured_source_through_the_guard() {
    use aya_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("demand.csv");
    let svc = start(warm_config(dir.path(), warm(Some(&path), None))).await;
    // The service answers RPCs only once its start-time warm start is over.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", svc.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = pb::admin_service_client::AdminServiceClient::new(channel);
    admin.get_stats(pb::GetStatsRequest {}).await.unwrap();
    assert_eq!(
        svc.ctl.metrics().retrains("web", RetrainOutcome::Accepted),
        0,
        "the CSV was missing at start"
    );
    // The export appears later.
    let last_bucket = now_ms() / STEP_MS - 2;
    let first = last_bucket - POINTS as i64 + 1;
    let mut csv = String::from("timestamp,value\n");
    for k in 0..POINTS {
        csv.push_str(&format!(
            "{},{}\n",
            (first + k as i64) * STEP_MS / 1000,
            demand(k)
        ));
    }
    std::fs::write(&path, csv).unwrap();

    let r = admin
        .warm_start(pb::WarmStartRequest {
            cluster: "web".into(),
            force: false,
        })
        .await
        .expect("warm start")
        .into_inner();
    assert_eq!(r.added_points as usize, POINTS, "{r:?}");
    assert_eq!(r.retrain_outcome, "accepted", "{r:?}");
    assert!(r.source.contains("demand.csv"), "{r:?}");
    assert!(svc.ctl.model("web").is_some());
    let stored = svc.ctl.store().demand("web", 0).unwrap();
    assert_eq!(stored[0], (first * STEP_MS, demand(0)));

    // Asked again: the export holds nothing older than the store now.
    let again = admin
        .warm_start(pb::WarmStartRequest {
            cluster: "web".into(),
            force: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.message.starts_with("nothing to add"), "{again:?}");
    assert_eq!(again.added_points, 0);
    assert_eq!(again.retrain_outcome, "");

    // An unknown cluster, and a source that cannot be read, are refused by name.
    let unknown = admin
        .warm_start(pb::WarmStartRequest {
            cluster: "nope".into(),
            force: false,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
    std::fs::remove_file(&path).unwrap();
    let gone = admin
        .warm_start(pb::WarmStartRequest {
            cluster: "web".into(),
            force: true,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::FailedPrecondition, "{gone:?}");
    assert!(
        gone.message().contains("web") && gone.message().contains("demand.csv"),
        "{gone:?}"
    );
    svc.stop().await;
}
