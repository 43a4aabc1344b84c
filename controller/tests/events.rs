//! Known events in `aya serve` (issue 15, part 1), in-process on
//! 127.0.0.1:0: a cluster's calendar file (`[clusters.events] file`) is read
//! at start and its forecaster learns the events' effect from the stored
//! demand history, so `GetForecast` raises the next event's hours (compared
//! with the same service without the file); events added over the admin API
//! are used from the next tick, listed, stored across a restart and
//! deleted; a reload re-reads the file and keeps the added events.
//! The service runs on a manual clock standing at the wall time.

mod common;

use std::path::Path;
use std::time::Duration;

use aya_controller::clock::Clock;
use aya_controller::config::{ClusterEvents, Config};
use aya_controller::server::{Listeners, serve_controller};
use aya_controller::state::Controller;
use aya_controller::store::Store;
use aya_proto::v1 as pb;
use aya_proto::v1::admin_service_client::AdminServiceClient;
use aya_proto::v1::forecast_service_client::ForecastServiceClient;
use tonic::Code;
use tonic::transport::Channel;

const HOUR_MS: i64 = 3_600_000;
/// Hours of stored demand history.
const HOURS: i64 = 35 * 24 + 20;

/// Deterministic noise in [-1, 1].
fn noise(i: i64) -> f64 {
    let mut x = (i as u64)
        .wrapping_add(7)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 2001) as f64 / 1000.0 - 1.0
}

/// The test's time line: the history's hours start at `t0`; hour `i` is
/// `[t0 + i h, t0 + (i + 1) h)`, the last one ends at `end` (the last full
/// hour before the clock's now).
struct Timeline {
    t0: i64,
    end: i64,
}

impl Timeline {
    fn now() -> Timeline {
        let end = common::now_ms() / HOUR_MS * HOUR_MS;
        Timeline {
            t0: end - HOURS * HOUR_MS,
            end,
        }
    }

    /// Start hours of the launches: two hours every 31 hours (their hour of
    /// day drifts, so a daily model cannot learn them as season), up to two
    /// days past the history.
    fn launches(&self) -> Vec<i64> {
        (0..)
            .map(|j| 30 + 31 * j)
            .take_while(|&h| h < HOURS + 48)
            .collect()
    }

    fn during(&self, i: i64) -> bool {
        self.launches().iter().any(|&h| i >= h && i < h + 2)
    }

    /// Demand of hour `i`: a daily cycle, doubled during the launches.
    fn demand(&self, i: i64) -> f64 {
        let h = (i % 24) as f64;
        let base = 100.0 + 40.0 * (std::f64::consts::TAU * h / 24.0).sin() + 3.0 * noise(i);
        if self.during(i) { 2.0 * base } else { base }
    }

    fn calendar_csv(&self, launches: &[i64]) -> String {
        let rfc = aya_forecaster::data::timestamp::format_rfc3339;
        let mut s = String::from("name,start,end,category\n");
        for &h in launches {
            let start = self.t0 + h * HOUR_MS;
            s.push_str(&format!(
                "launch {h},{},{},launch\n",
                rfc(start),
                rfc(start + 2 * HOUR_MS)
            ));
        }
        s
    }

    /// The first launch after the history, as a forecast step index
    /// (0 = the hour starting at `end`).
    fn next_launch_step(&self) -> usize {
        let h = self.launches().into_iter().find(|&h| h >= HOURS).unwrap();
        (h - HOURS) as usize
    }
}

/// Store the history (hour `i` observed at its end, as the control loop
/// observes demand) in a fresh data directory.
fn seed(dir: &Path, tl: &Timeline) {
    let points: Vec<(String, i64, f64)> = (0..HOURS)
        .map(|i| ("web".to_string(), tl.t0 + (i + 1) * HOUR_MS, tl.demand(i)))
        .collect();
    let store = Store::open_with(dir, aya_controller::store::OpenMode::Init).unwrap();
    store.append_demand(&points).unwrap();
    store.sync().unwrap();
}

fn config(dir: &Path, events_file: Option<&Path>) -> Config {
    let mut c = Config {
        forecast_step_seconds: 3600.0,
        forecast_horizon: 24,
        ..common::config(dir)
    };
    c.clusters[0].events = ClusterEvents {
        file: events_file.map(Path::to_path_buf),
        ..ClusterEvents::default()
    };
    c
}

struct Service {
    ctl: Controller,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), aya_controller::server::ServeError>>,
}

/// The service on a manual clock at `now_ms`; waits for the initial tick.
async fn start(mut config: Config, now_ms: i64) -> Service {
    config.validate().unwrap();
    let clock = Clock::manual(now_ms);
    let ctl = tokio::task::spawn_blocking(move || Controller::open_with_clock(config, clock))
        .await
        .unwrap()
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_controller(
        ctl.clone(),
        Listeners {
            grpc,
            metrics: None,
        },
        async move {
            let _ = rx.await;
        },
    ));
    for _ in 0..2400 {
        if ctl.metrics().ticks() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ctl.metrics().ticks() > 0, "no initial tick");
    Service {
        ctl,
        addr,
        stop,
        task,
    }
}

impl Service {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        let ctl = self.ctl;
        let closed = tokio::task::spawn_blocking(move || ctl.close(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(closed, "the controller released its store");
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn forecast(&self) -> Vec<f64> {
        ForecastServiceClient::new(self.channel().await)
            .get_forecast(pb::ForecastRequest {
                cluster: "web".into(),
                horizon: 24,
            })
            .await
            .unwrap()
            .into_inner()
            .mean
    }

    async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    async fn events(&self) -> pb::ListEventsResponse {
        self.admin()
            .await
            .list_events(pb::ListEventsRequest {
                cluster: "web".into(),
                from_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_calendar_file_and_admin_events_shape_its_forecast() {
    let tl = Timeline::now();
    let now_ms = tl.end + 10 * 60_000;
    let plain_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    seed(plain_dir.path(), &tl);
    seed(dir.path(), &tl);
    let file = dir.path().join("events.csv");
    std::fs::write(&file, tl.calendar_csv(&tl.launches())).unwrap();

    // The same service and history without a calendar: the plain forecast.
    let plain = start(config(plain_dir.path(), None), now_ms).await;
    let base = plain.forecast().await;
    assert_eq!(base.len(), 24);
    assert!(plain.events().await.events.is_empty());
    plain.stop().await;

    // 1. With the calendar file: the next launch's hours are raised.
    let svc = start(config(dir.path(), Some(&file)), now_ms).await;
    let sel = svc.ctl.model("web").expect("a model is in use");
    assert!(
        sel.events.is_some(),
        "event profile kept: {}",
        sel.describe()
    );
    let with = svc.forecast().await;
    let k = tl.next_launch_step();
    assert!(k + 2 <= 24, "the next launch is within the horizon: {k}");
    for s in [k, k + 1] {
        assert!(
            with[s] > 1.5 * base[s],
            "step {s}: with the calendar {} vs without {} (launch at step {k})",
            with[s],
            base[s]
        );
    }
    let listed = svc.events().await;
    assert_eq!(listed.events.len(), tl.launches().len());
    assert_eq!(listed.file, file.display().to_string());
    assert_eq!(listed.events[0].id, "file-1");
    assert_eq!(listed.events[0].source, listed.file);
    assert_eq!(listed.events[0].category, "launch");

    // 2. An event added over the admin API, at hours with no launch, is
    // used from the next tick (the change itself ticks the cluster).
    let quiet = (k + 6..22).chain(1..k.saturating_sub(4)).next().unwrap();
    let start_ms = tl.end + quiet as i64 * HOUR_MS;
    let mut admin = svc.admin().await;
    let added = admin
        .add_event(pb::AddEventRequest {
            cluster: "web".into(),
            event: Some(pb::KnownEvent {
                name: "surprise launch".into(),
                start_ms,
                end_ms: start_ms + 2 * HOUR_MS,
                category: "launch".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((added.id.as_str(), added.source.as_str()), ("api-1", "api"));
    let raised = svc.forecast().await;
    assert!(
        raised[quiet] > 1.5 * with[quiet],
        "added event: {} vs {} before",
        raised[quiet],
        with[quiet]
    );
    let listed = svc.events().await;
    assert_eq!(listed.events.len(), tl.launches().len() + 1);
    assert_eq!(listed.events.last().unwrap().name, "surprise launch");
    // Only events ending at or after `from_ms`.
    let upcoming = admin
        .list_events(pb::ListEventsRequest {
            cluster: "web".into(),
            from_ms: tl.end,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(upcoming.events.iter().all(|e| e.end_ms >= tl.end));
    assert!(upcoming.events.len() < listed.events.len() && upcoming.events.len() >= 2);

    // Bad requests name what is wrong.
    let bad = |end_ms: i64, name: &str, cluster: &str| pb::AddEventRequest {
        cluster: cluster.into(),
        event: Some(pb::KnownEvent {
            name: name.into(),
            start_ms,
            end_ms,
            ..Default::default()
        }),
    };
    let e = admin
        .add_event(bad(start_ms - 1, "x", "web"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("event.end_ms") && e.message().contains("before start_ms"),
        "{}",
        e.message()
    );
    let e = admin
        .add_event(bad(start_ms, " ", "web"))
        .await
        .unwrap_err();
    assert!(e.message().contains("event.name"), "{}", e.message());
    let e = admin
        .add_event(bad(start_ms, "x", "nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = admin
        .delete_event(pb::DeleteEventRequest {
            cluster: "web".into(),
            id: "file-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("edit the file"), "{}", e.message());

    // An admin UpsertCluster (the wire cluster has no calendar) keeps it.
    let wire = admin
        .list_clusters(pb::ListClustersRequest {})
        .await
        .unwrap()
        .into_inner()
        .clusters
        .remove(0);
    admin
        .upsert_cluster(pb::UpsertClusterRequest {
            cluster: Some(wire),
        })
        .await
        .unwrap();
    assert_eq!(svc.events().await.events.len(), tl.launches().len() + 1);
    svc.stop().await;

    // 3. A restart: the added event was stored with the cluster.
    let svc = start(config(dir.path(), Some(&file)), now_ms).await;
    let listed = svc.events().await;
    assert_eq!(listed.events.len(), tl.launches().len() + 1);
    assert_eq!(listed.events.last().unwrap().id, "api-1");

    // 4. A reload re-reads the file (one launch fewer) and keeps the added event.
    let fewer: Vec<i64> = tl.launches().into_iter().skip(1).collect();
    std::fs::write(&file, tl.calendar_csv(&fewer)).unwrap();
    let mut next = config(dir.path(), Some(&file));
    next.validate().unwrap();
    let c = svc.ctl.clone();
    let report = tokio::task::spawn_blocking(move || c.reload(&next))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.upserted, vec!["web".to_string()]);
    let listed = svc.events().await;
    assert_eq!(listed.events.len(), fewer.len() + 1);
    assert_eq!(listed.events[0].name, format!("launch {}", fewer[0]));
    assert_eq!(listed.events.last().unwrap().id, "api-1");

    // 5. Deleting the added event: the quiet hours are plain again.
    let mut admin = svc.admin().await;
    let del = |id: &str| pb::DeleteEventRequest {
        cluster: "web".into(),
        id: id.into(),
    };
    assert!(
        admin
            .delete_event(del("api-1"))
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    assert!(
        !admin
            .delete_event(del("api-1"))
            .await
            .unwrap()
            .into_inner()
            .deleted
    );
    let after = svc.forecast().await;
    assert!(
        after[quiet] < 1.2 * with[quiet],
        "deleted event: {} vs {} before it was added",
        after[quiet],
        with[quiet]
    );
    assert_eq!(svc.events().await.events.len(), fewer.len());
    svc.stop().await;
}

#[test]
fn a_bad_calendar_file_fails_the_start_naming_field_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.csv");
    std::fs::write(
        &file,
        "name,start,end\nok,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z\n\
         bad,2024-01-02T00:00:00Z,2024-01-01T00:00:00Z\n",
    )
    .unwrap();
    let mut cfg = config(dir.path(), Some(&file));
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.starts_with("config: clusters[0].events.file: ")
            && err.contains(&format!("{}: line 3, field `end`", file.display()))
            && err.contains("before start"),
        "{err}"
    );
    let mut missing = config(dir.path(), Some(&dir.path().join("nope.csv")));
    let err = missing.validate().unwrap_err().to_string();
    assert!(
        err.contains("clusters[0].events.file") && err.contains("nope.csv"),
        "{err}"
    );
    // Only `file` belongs in the configuration file.
    let err = Config::from_toml(
        "[[clusters]]\nname = \"web\"\n[clusters.events]\nfile = \"e.csv\"\ncolour = 1\n",
        Path::new("aya.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("colour"), "{err}");
}
