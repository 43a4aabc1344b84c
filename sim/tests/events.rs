//! Known events in the simulator (issue 15, part 1): a scenario's
//! `forecaster.events` calendar is placed on the virtual time line, refused
//! where it cannot be used, and makes the online forecaster scale out ahead
//! of WorldCup98 kick-offs. Needs the shared datasets (`AYA_DATASETS`).

use std::path::{Path, PathBuf};

use aya_sim::scenario::{Scenario, ScenarioError};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/examples")
}

#[test]
fn the_calendar_is_placed_on_the_virtual_time_line() {
    let sc = Scenario::load(&examples().join("worldcup_events.toml"))
        .expect("scenario loads (needs AYA_DATASETS)");
    let (cal, placement) = sc.forecaster.as_ref().unwrap().calendar.clone().unwrap();
    assert_eq!(cal.events.len(), 64);
    // workload.start = 1998-06-29T00:00Z, compression 10: the 14:30 UTC
    // kick-off is at 52,200 trace s / 10 = 5,220 virtual s; 1 h 55 min later
    // it ends (6,900 trace s → 690 virtual s later).
    let m = cal
        .events
        .iter()
        .find(|e| e.name.starts_with("Round of 16: Germany v Mexico"))
        .unwrap();
    assert_eq!((m.start_ms, m.end_ms), (5_220_000, 5_910_000));
    assert_eq!(m.category, "round_of_16");
    // Earlier matches are before t = 0 (in the warm-start history).
    assert!(cal.events[0].start_ms < -150_000_000);
    // The ramp (1 h) and the aftermath (2 h) of trace time, compressed.
    assert_eq!((placement.pre_ms, placement.post_ms), (360_000, 720_000));
}

#[test]
fn the_report_gets_the_matches_within_the_run() {
    let mut sc = Scenario::load(&examples().join("worldcup_events.toml"))
        .expect("scenario loads (needs AYA_DATASETS)");
    // 29-30 June 1998 (17,280 virtual s): the four round-of-16 matches of
    // those days, none of the 60 before or after.
    let spans = aya_sim::run::event_spans(&sc);
    let names: Vec<&str> = spans.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(spans.len(), 4, "{names:?}");
    assert!(names[0].starts_with("Round of 16: Germany v Mexico"));
    assert_eq!((spans[0].start, spans[0].end), (5220.0, 5910.0));
    assert!(spans.iter().all(|e| e.category == "round_of_16"));
    // A run that ends before the first kick-off has none; without a calendar, none.
    sc.model.duration = Some(5000.0);
    assert!(aya_sim::run::event_spans(&sc).is_empty());
    sc.model.duration = Some(5221.0);
    assert_eq!(aya_sim::run::event_spans(&sc).len(), 1);
    sc.forecaster.as_mut().unwrap().calendar = None;
    assert!(aya_sim::run::event_spans(&sc).is_empty());
}

fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    // Named inside scenarios/examples so relative paths resolve from there.
    Scenario::parse(text, &examples().join("test.toml"))
}

fn with_forecaster(forecaster: &str, start: Option<&str>) -> String {
    let start = start.map_or(String::new(), |s| format!("start = \"{s}\"\n"));
    format!(
        "duration = 60.0\n[workload]\nkind = \"rate_series\"\n\
         path = \"datasets:worldcup98/worldcup98_requests_per_minute.csv\"\n{start}compression = 10.0\n\
         [service]\nkind = \"exponential\"\nmean = 0.05\n[[backends]]\ncount = 2\n\
         [forecaster]\n{forecaster}\n"
    )
}

#[test]
fn a_calendar_is_refused_where_it_cannot_be_used() {
    let err = |text: String| match parse(&text) {
        Err(ScenarioError::Invalid { field, message, .. }) => (field, message),
        other => panic!("expected an invalid scenario, got {other:?}"),
    };
    let events = "events = \"../../datasets/worldcup98_matches.csv\"";
    let (f, m) = err(with_forecaster(
        &format!("name = \"naive\"\n{events}"),
        Some("1998-06-29T00:00:00Z"),
    ));
    assert_eq!(f, "forecaster.events");
    assert!(m.contains("only the `online` forecaster"), "{m}");
    let (f, m) = err(with_forecaster(
        &format!("name = \"online\"\n{events}"),
        None,
    ));
    assert_eq!(f, "forecaster.events");
    assert!(m.contains("`start`"), "{m}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "name,start,end\nx,1998-06-29T10:00:00Z,1998-06-29T09:00:00Z\n",
    )
    .unwrap();
    let (f, m) = err(with_forecaster(
        &format!(
            "name = \"online\"\nevents = {:?}",
            bad.display().to_string()
        ),
        Some("1998-06-29T00:00:00Z"),
    ));
    assert_eq!(f, "forecaster.events");
    assert!(m.contains("line 2, field `end`"), "{m}");
    // A good calendar with the online forecaster loads.
    parse(&with_forecaster(
        &format!("name = \"online\"\n{events}"),
        Some("1998-06-29T00:00:00Z"),
    ))
    .unwrap();
}

/// The example scenario with its calendar, or without it but with as many
/// validation origins as a selection with a calendar uses (the control:
/// only the calendar differs).
fn worldcup(events: bool) -> Scenario {
    let mut sc = Scenario::load(&examples().join("worldcup_events.toml"))
        .expect("scenario loads (needs AYA_DATASETS)");
    let f = sc.forecaster.as_mut().unwrap();
    if !events {
        f.events = None;
        f.calendar = None;
        let origins = aya_forecaster::online::OnlineConfig::default().event_origins;
        f.params
            .insert("origins".into(), toml::Value::Integer(origins as i64));
    }
    sc
}

/// The forecast the control loop's forecaster makes at t = 0 (29 June
/// 1998, 00:00 UTC) after the week's warm start, 700 steps of 15 virtual s
/// ahead: with the calendar the forecaster keeps a match profile learnt from
/// the week's matches and applies it exactly at the steps the day's two
/// matches cover (kick-offs 14:30 and 19:00 UTC, with the compressed hour of
/// ramp before and two hours after); everywhere else the forecast is the
/// control's. What this does to SLO minutes and replica-hours is measured by
/// `sim/examples/events_sim.rs` (docs/events.md).
#[test]
fn the_match_calendar_changes_the_forecast_exactly_around_the_matches() {
    use aya_policy::DemandForecast;
    let forecast = |sc: &Scenario| {
        let ctx = aya_sim::run::policy_context(sc, 1);
        let mut f = aya_sim::policy::make_forecaster(sc.forecaster.as_ref(), &ctx)
            .unwrap()
            .unwrap();
        for &(t, d) in &sc.warm_history {
            f.observe(t, d);
        }
        let mut out = DemandForecast::default();
        // The loop's forecast (24 steps) selects the models; then look further ahead.
        assert!(f.forecast_into(0.0, 24, &mut out));
        assert!(f.forecast_into(0.0, 700, &mut out));
        out
    };
    let with = forecast(&worldcup(true));
    let control = forecast(&worldcup(false));
    // Step i covers virtual ((i)·15, (i+1)·15]; the matches with their ramp
    // and aftermath cover 4,860 s (5,220 − 360) to 8,250 s (7,530 + 720).
    let covered = 324..551;
    let differs =
        |i: usize| (with.mean[i] - control.mean[i]).abs() > 1e-6 * control.mean[i].abs().max(1.0);
    for i in 0..700 {
        if !covered.contains(&i) {
            assert!(
                !differs(i),
                "step {i} (no match): {} vs {}",
                with.mean[i],
                control.mean[i]
            );
        }
    }
    let changed = covered.clone().filter(|&i| differs(i)).count();
    let kick_off = |from: usize| {
        let m = |v: &[f64]| v[from..from + 46].iter().sum::<f64>() / 46.0;
        (m(&with.mean), m(&control.mean))
    };
    let (w1, c1) = kick_off(348);
    let (w2, c2) = kick_off(456);
    println!(
        "{changed} of {} match steps changed; mean over the matches: {w1:.1} vs {c1:.1}, {w2:.1} vs {c2:.1} req/s",
        covered.len()
    );
    assert!(changed > covered.len() / 2, "{changed} steps changed");
    assert!(w1 > c1 && w2 > c2, "{w1} vs {c1}, {w2} vs {c2}");
}
