//! Known events: calendar parsing (errors with file, line and field), the
//! learnt event profile, its selection by the validation backtest, and
//! artifacts with and without it.

use std::path::Path;

use aya_forecaster::artifact::{Artifact, EVENTS_FORMAT_VERSION, FORMAT_VERSION, TrainingWindow};
use aya_forecaster::backtest::{self, BacktestConfig, Method};
use aya_forecaster::data::parse_timestamp;
use aya_forecaster::events::{
    Calendar, DEFAULT_CATEGORY, Event, EventConfig, EventGrid, EventMode, EventsError,
};
use aya_forecaster::models::Forecast;
use aya_forecaster::seasonality::Seasonality;
use aya_forecaster::select::{FittedAuto, SelectConfig, select_with_events};

const HOUR: i64 = 3_600_000;

fn csv(text: &str) -> Result<Calendar, EventsError> {
    Calendar::from_csv(Path::new("events.csv"), text)
}

fn field_error(e: EventsError) -> (usize, String, String) {
    match e {
        EventsError::Field {
            line,
            field,
            message,
            ..
        } => (line, field, message),
        other => panic!("expected a field error, got {other}"),
    }
}

#[test]
fn csv_calendar_parses_with_comments_quotes_and_default_category() {
    let cal = csv("# a comment\n\
         name,start,end,category\n\
         \"Final, Paris\",1998-07-12T19:00:00Z,1998-07-12T20:55:00Z,final\n\
         \n\
         release,2024-01-02 10:00:00,2024-01-02T12:00:00+02:00,\n")
    .unwrap();
    assert_eq!(cal.events.len(), 2);
    assert_eq!(cal.events[0].name, "Final, Paris");
    assert_eq!(cal.events[0].category, "final");
    assert_eq!(
        cal.events[0].start_ms,
        parse_timestamp("1998-07-12T19:00:00Z").unwrap()
    );
    // 12:00+02:00 is 10:00 UTC: a zero-length event is allowed.
    assert_eq!(cal.events[1].start_ms, cal.events[1].end_ms);
    assert_eq!(cal.events[1].category, DEFAULT_CATEGORY);
    // Columns in any order, category optional, overlapping events allowed.
    let cal = csv("end,name,start\n\
         2024-01-01T03:00:00Z,a,2024-01-01T00:00:00Z\n\
         2024-01-01T02:00:00Z,b,2024-01-01T01:00:00Z\n")
    .unwrap();
    assert_eq!(cal.events.len(), 2);
}

#[test]
fn csv_errors_name_the_line_and_the_field() {
    let (line, field, msg) = field_error(
        csv(
            "name,start,end\nok,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z\n\
             bad,2024-13-01T00:00:00Z,2024-01-01T01:00:00Z\n",
        )
        .unwrap_err(),
    );
    assert_eq!((line, field.as_str()), (3, "start"));
    assert!(msg.contains("month"), "{msg}");

    let err = csv("name,start,end\n# skipped\nx,2024-01-02T00:00:00Z,2024-01-01T00:00:00Z\n")
        .unwrap_err();
    let text = err.to_string();
    let (line, field, msg) = field_error(err);
    assert_eq!((line, field.as_str()), (3, "end"));
    assert!(msg.contains("before start"), "{msg}");
    assert!(
        text.starts_with("events.csv: line 3, field `end`"),
        "{text}"
    );

    let (line, field, msg) =
        field_error(csv("name,start,end,colour\nx,2024-01-01,2024-01-02,red\n").unwrap_err());
    assert_eq!((line, field.as_str()), (1, "colour"));
    assert!(msg.contains("unknown column"), "{msg}");

    let (line, field, _) = field_error(csv("name,start\n").unwrap_err());
    assert_eq!((line, field.as_str()), (1, "end"));

    match csv("name,start,end\nx,2024-01-01\n").unwrap_err() {
        EventsError::Line {
            line: 2, message, ..
        } => assert!(message.contains("2 fields")),
        other => panic!("{other}"),
    }
    let (line, field, _) =
        field_error(csv("name,start,end\n,2024-01-01,2024-01-02\n").unwrap_err());
    assert_eq!((line, field.as_str()), (2, "name"));
}

#[test]
fn toml_calendar_expands_recurrences_and_reports_lines() {
    let text = r#"
[[event]]
name = "deploy"
start = 2024-01-01T10:00:00Z
end = "2024-01-01T11:00:00Z"
category = "release"
every = "7d"
until = "2024-01-29T10:00:00Z"

[[event]]
name = "sale"
start = "2024-01-05T00:00:00Z"
end = "2024-01-06T00:00:00Z"
"#;
    let cal = Calendar::from_toml(Path::new("events.toml"), text).unwrap();
    // 1, 8, 15, 22, 29 January, then the sale.
    assert_eq!(cal.events.len(), 6);
    assert_eq!(
        cal.events[4].start_ms - cal.events[0].start_ms,
        28 * 24 * HOUR
    );
    assert_eq!(cal.events[4].end_ms - cal.events[4].start_ms, HOUR);
    assert_eq!(cal.events[5].category, DEFAULT_CATEGORY);
    assert_eq!(cal.categories(), vec!["event", "release"]);

    let bad = "[[event]]\nname = \"x\"\nstart = \"2024-01-01T00:00:00Z\"\nend = \"yesterday\"\n";
    let (line, field, _) = field_error(Calendar::from_toml(Path::new("e.toml"), bad).unwrap_err());
    assert_eq!((line, field.as_str()), (4, "end"));

    let bad = "[[event]]\nname = \"x\"\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\nevery = \"3 fortnights\"\nuntil = \"2024-02-01\"\n";
    let (line, field, _) = field_error(Calendar::from_toml(Path::new("e.toml"), bad).unwrap_err());
    assert_eq!((line, field.as_str()), (5, "every"));

    let bad =
        "[[event]]\nname = \"x\"\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\nevery = \"1d\"\n";
    let (_, field, _) = field_error(Calendar::from_toml(Path::new("e.toml"), bad).unwrap_err());
    assert_eq!(field, "until");

    let bad = "[[event]]\nname = \"x\"\nstart = \"2024-01-01\"\nend = \"2024-01-02\"\nwhere = \"Paris\"\n";
    match Calendar::from_toml(Path::new("e.toml"), bad).unwrap_err() {
        EventsError::Line { line, message, .. } => {
            assert!(message.contains("where"), "{message}");
            assert!(line >= 1);
        }
        other => panic!("{other}"),
    }
}

/// The repository's WorldCup98 calendar: 64 matches, 48 in the group stage,
/// all within 10 June - 12 July 1998.
#[test]
fn worldcup98_match_calendar_is_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/worldcup98_matches.csv");
    let cal = Calendar::load(&path).unwrap();
    assert_eq!(cal.events.len(), 64);
    let count = |c: &str| cal.events.iter().filter(|e| e.category == c).count();
    assert_eq!(count("group"), 48);
    assert_eq!(count("round_of_16"), 8);
    assert_eq!(count("quarter_final"), 4);
    assert_eq!(count("semi_final"), 2);
    assert_eq!((count("third_place"), count("final")), (1, 1));
    let first = parse_timestamp("1998-06-10T00:00:00Z").unwrap();
    let last = parse_timestamp("1998-07-13T00:00:00Z").unwrap();
    assert!(
        cal.events
            .iter()
            .all(|e| e.start_ms >= first && e.end_ms < last)
    );
    // The final kicked off at 21:00 in Saint-Denis, 19:00 UTC.
    let fin = cal.events.iter().find(|e| e.category == "final").unwrap();
    assert_eq!(
        fin.start_ms,
        parse_timestamp("1998-07-12T21:00:00+02:00").unwrap()
    );
}

/// Deterministic noise in [-1, 1].
fn noise(i: usize, seed: u64) -> f64 {
    let mut x = (i as u64)
        .wrapping_add(seed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 2001) as f64 / 1000.0 - 1.0
}

const T0: &str = "2024-01-01T00:00:00Z";
const DAYS: usize = 35;

/// Events of two hours every 31 hours (so their hour of day drifts and a
/// daily model cannot learn them as season).
fn drifting_events() -> Calendar {
    let t0 = parse_timestamp(T0).unwrap();
    let events = (0..)
        .map(|j| 30 + 31 * j)
        .take_while(|&h| h < DAYS * 24 + 48)
        .map(|h| Event {
            name: format!("launch {h}"),
            start_ms: t0 + h as i64 * HOUR,
            end_ms: t0 + (h as i64 + 2) * HOUR,
            category: "launch".into(),
        })
        .collect();
    Calendar { events }
}

/// Hourly series with a daily cycle; `effect` multiplies the two event hours.
fn series(cal: &Calendar, effect: f64) -> (Vec<f64>, EventGrid) {
    let t0 = parse_timestamp(T0).unwrap();
    let grid = EventGrid::new(cal, t0, HOUR, EventConfig::default());
    let y = (0..DAYS * 24)
        .map(|i| {
            let h = (i % 24) as f64;
            let base = 100.0 + 40.0 * (std::f64::consts::TAU * h / 24.0).sin() + 3.0 * noise(i, 7);
            let during = cal.events.iter().any(|e| {
                let t = t0 + i as i64 * HOUR;
                t >= e.start_ms && t < e.end_ms
            });
            if during { base * effect } else { base }
        })
        .collect();
    (y, grid)
}

fn daily() -> Seasonality {
    Seasonality {
        periods: vec![24],
        day: Some(24),
    }
}

#[test]
fn learnt_profile_recovers_a_known_effect_and_selection_keeps_it() {
    let cal = drifting_events();
    let (y, grid) = series(&cal, 2.0);
    let cfg = SelectConfig::default();
    let sel = select_with_events(&y, &daily(), 24, &cfg, Some(&grid)).unwrap();
    let ev = sel.events.as_ref().expect("the event profile is kept");
    assert_eq!(ev.mode, EventMode::Multiplicative, "{}", ev.describe());
    assert!(
        sel.bands.iter().any(|b| b.events && b.from > 1),
        "{}",
        sel.describe()
    );
    let p = &ev.profiles[0];
    assert_eq!(p.category, "launch");
    // Index pre_steps is the start hour: +100 % (shrunk by n / (n + 2)).
    let k0 = ev.pre_steps;
    for k in [k0, k0 + 1] {
        assert!(
            (0.6..=1.2).contains(&p.effect[k]),
            "effect at offset {}: {} ({})",
            k - k0,
            p.effect[k],
            ev.describe()
        );
        assert!(p.occurrences[k] >= 3, "{:?}", p.occurrences);
    }
    // The hour before and the hours after carry no effect.
    for k in [k0 - 1, k0 + 2, k0 + 3] {
        assert!(
            p.effect[k].abs() < 0.2,
            "offset {}: {}",
            k as i64 - k0 as i64,
            p.effect[k]
        );
    }

    // The rolling-origin backtest agrees: with the calendar the day-ahead
    // error is clearly lower.
    let bc = BacktestConfig {
        horizons: vec![24],
        origins: 4,
        test_fraction: 0.2,
        seasonality: daily(),
        scale_season: 24,
        methods: vec![Method::Auto(cfg.clone()), Method::AutoEvents(cfg)],
    };
    let rep = backtest::run_with_events(&y, &bc, Some(&grid)).unwrap();
    let mase = |m: &str| rep.scores.iter().find(|s| s.model == m).unwrap().mase;
    assert!(
        mase("aya_auto_events") < 0.8 * mase("aya_auto"),
        "with events {} vs without {}",
        mase("aya_auto_events"),
        mase("aya_auto")
    );
    assert!(rep.last_choice_events.unwrap().contains("+events"));
}

#[test]
fn events_without_effect_are_not_used() {
    let cal = drifting_events();
    let (y, grid) = series(&cal, 1.0);
    let sel = select_with_events(&y, &daily(), 24, &SelectConfig::default(), Some(&grid)).unwrap();
    assert!(
        sel.events.is_none() && sel.bands.iter().all(|b| !b.events),
        "{} {:?}",
        sel.describe(),
        sel.events.as_ref().map(|e| e.describe())
    );
    // Same selection as without a calendar.
    let plain = select_with_events(&y, &daily(), 24, &SelectConfig::default(), None).unwrap();
    assert_eq!(plain.describe(), sel.describe());
}

#[test]
fn without_events_replaces_what_events_cover_causally() {
    let t0 = parse_timestamp(T0).unwrap();
    let ev = |name: &str, from: i64, to: i64| Event {
        name: name.into(),
        start_ms: t0 + from * HOUR,
        end_ms: t0 + to * HOUR,
        category: "x".into(),
    };
    // Ramp 1 h, aftermath 1 h: the first covers steps 2..=5, the second
    // (overlapping at the start of the grid) steps 0..=1.
    let cal = Calendar {
        events: vec![ev("a", 3, 5), ev("b", 0, 1)],
    };
    let cfg = EventConfig {
        pre_ms: HOUR,
        post_ms: HOUR,
    };
    let grid = EventGrid::new(&cal, t0, HOUR, cfg);
    let y: Vec<f64> = (0..9).map(|i| 10.0 * i as f64).collect();
    let w = grid.without_events(&y, 0);
    // Steps 0..=5 are covered from step 0 on: nothing before them to hold,
    // they keep their values.
    assert_eq!(w, y);
    let cal = Calendar {
        events: vec![ev("a", 3, 5)],
    };
    let grid = EventGrid::new(&cal, t0, HOUR, cfg);
    // Without a season (and with one longer than what precedes the event):
    // the last value before it, held.
    let w = grid.without_events(&y, 0);
    assert_eq!(w, vec![0.0, 10.0, 10.0, 10.0, 10.0, 10.0, 60.0, 70.0, 80.0]);
    assert_eq!(grid.without_events(&y, 4), w);
    for k in 0..y.len() {
        assert_eq!(
            grid.without_events(&y[..k], 0),
            w[..k].to_vec(),
            "prefix {k}"
        );
    }
    // With a season of 3 steps (a sawtooth 1, 2, 4) and a surge on steps
    // 7..=10: the same phase one season before the run, at the level of the
    // last step before it (step 6 = 1.0, one season earlier also 1.0).
    let cal = Calendar {
        events: vec![ev("a", 8, 10)],
    };
    let grid = EventGrid::new(&cal, t0, HOUR, cfg);
    let saw = [1.0, 2.0, 4.0];
    let y: Vec<f64> = (0..14)
        .map(|i| saw[i % 3] * if (7..=10).contains(&i) { 5.0 } else { 1.0 })
        .collect();
    let w = grid.without_events(&y, 3);
    let expect: Vec<f64> = (0..14).map(|i| saw[i % 3]).collect();
    assert_eq!(w, expect);
    for k in 0..y.len() {
        assert_eq!(
            grid.without_events(&y[..k], 3),
            w[..k].to_vec(),
            "prefix {k}"
        );
    }
}

/// Matches at 19:00 UTC on four days of five (the fifth is a rest day): a
/// daily model fitted on the series as it is learns the evening surge as
/// season and forecasts it on the rest day too. The selection then fits the
/// base models on the series with the events removed, the profile carrying
/// the surge, and the rest day's evening is forecast without it.
#[test]
fn an_event_at_the_same_hour_most_days_is_not_learnt_as_season() {
    let t0 = parse_timestamp(T0).unwrap();
    let rest = |d: usize| d % 5 == 4;
    let events = (0..DAYS + 2)
        .filter(|&d| !rest(d))
        .map(|d| Event {
            name: format!("match {d}"),
            start_ms: t0 + (d as i64 * 24 + 19) * HOUR,
            end_ms: t0 + (d as i64 * 24 + 21) * HOUR,
            category: "match".into(),
        })
        .collect();
    let cal = Calendar { events };
    let (y, grid) = series(&cal, 4.0);
    let cfg = SelectConfig::default();
    let model =
        FittedAuto::select_and_fit_with_events(&y, &daily(), 48, &cfg, Some(&grid)).unwrap();
    let ev = model.selection().events.as_ref().expect("a profile");
    assert!(ev.base_without_events, "{}", model.selection().describe());
    // The series ends at day 35 00:00 (day 34 was a rest day); day 35 has a
    // match, day 36 too; with the calendar moved to make day 35 a rest day the
    // forecast at 19:00 is the plain evening.
    let base_19 = 100.0 + 40.0 * (std::f64::consts::TAU * 19.0 / 24.0).sin();
    let mut f = Forecast::default();
    model
        .predict_with_events(48, None, &mut f, Some((&grid, y.len())))
        .unwrap();
    let at_19 = f.point[19];
    assert!(
        (0.6 * 4.0 * base_19..=1.4 * 4.0 * base_19).contains(&at_19),
        "match evening: {at_19} vs {}",
        4.0 * base_19
    );
    let no_match_tomorrow = Calendar {
        events: cal
            .events
            .iter()
            .filter(|e| e.start_ms < t0 + (DAYS as i64 * 24) * HOUR)
            .cloned()
            .collect(),
    };
    let grid_rest = EventGrid::new(&no_match_tomorrow, t0, HOUR, EventConfig::default());
    model
        .predict_with_events(48, None, &mut f, Some((&grid_rest, y.len())))
        .unwrap();
    assert!(
        (0.7 * base_19..=1.3 * base_19).contains(&f.point[19]),
        "rest-day evening: {} vs {base_19}",
        f.point[19]
    );
}

fn window(y: &[f64]) -> TrainingWindow {
    TrainingWindow {
        series: "synthetic".into(),
        start: T0.into(),
        end: "2024-02-04T23:00:00Z".into(),
        points: y.len(),
        interval_ms: HOUR,
    }
}

#[test]
fn artifacts_store_the_profile_and_old_ones_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let cal = drifting_events();
    let (y, grid) = series(&cal, 2.0);
    let cfg = SelectConfig::default();
    let model =
        FittedAuto::select_and_fit_with_events(&y, &daily(), 24, &cfg, Some(&grid)).unwrap();
    let artifact = Artifact::new("test".into(), window(&y), 24, &model, None);
    assert_eq!(artifact.format_version, EVENTS_FORMAT_VERSION);
    let path = dir.path().join("events.json");
    artifact.save(&path).unwrap();
    let back = Artifact::load(&path).unwrap();
    assert_eq!(back.selection.events, model.selection().events);
    assert_eq!(back.selection.bands, model.selection().bands);
    // The loaded model forecasts exactly as the trained one, events included.
    let refit = FittedAuto::fit_with_events(&y, back.selection, Some(&grid)).unwrap();
    let (mut a, mut b) = (Forecast::default(), Forecast::default());
    model
        .predict_with_events(48, Some(0.9), &mut a, Some((&grid, y.len())))
        .unwrap();
    refit
        .predict_with_events(48, Some(0.9), &mut b, Some((&grid, y.len())))
        .unwrap();
    assert_eq!(a, b);
    // And the events change the forecast (an event is scheduled in the next two days).
    let mut plain = Forecast::default();
    model.predict_into(48, Some(0.9), &mut plain).unwrap();
    assert_ne!(a.point, plain.point);

    // A version-1 artifact written before events existed (no `events` fields) loads.
    let plain_model = FittedAuto::select_and_fit(&y, &daily(), 24, &cfg).unwrap();
    let old = Artifact::new("old".into(), window(&y), 24, &plain_model, None);
    assert_eq!(old.format_version, FORMAT_VERSION);
    let mut json = serde_json::to_value(&old).unwrap();
    for band in json["selection"]["bands"].as_array_mut().unwrap() {
        let band = band.as_object_mut().unwrap();
        assert!(band.remove("events").is_some());
        band.remove("events_ratio");
    }
    assert!(json["selection"].get("events").is_none());
    let text = serde_json::to_string_pretty(&json).unwrap();
    let loaded = Artifact::from_json(Path::new("old.json"), &text).unwrap();
    assert!(loaded.selection.events.is_none());
    assert!(loaded.selection.bands.iter().all(|b| !b.events));
    assert_eq!(loaded.selection.specs, old.selection.specs);
    // A newer version than this build reads is refused.
    let newer = text.replace("\"format_version\": 1", "\"format_version\": 3");
    assert!(Artifact::from_json(Path::new("new.json"), &newer).is_err());
}

/// The online forecaster (the control loop's, in `aya serve` and the
/// simulator) with a calendar: its selection keeps the profile and the
/// forecast of the next event's hours is raised; without the calendar, or
/// with it taken away again, the forecast is the plain one.
#[test]
fn the_online_forecaster_forecasts_the_next_event_with_its_calendar() {
    use aya_forecaster::online::{OnlineConfig, OnlineForecaster};
    use aya_policy::{DemandForecast, DemandForecaster};
    use std::sync::Arc;

    let cal = drifting_events();
    let (mut y, _) = series(&cal, 2.0);
    // End the history 16 hours before a launch.
    y.truncate(y.len() - 20);
    let t0_s = parse_timestamp(T0).unwrap() as f64 / 1000.0;
    let cfg = OnlineConfig {
        step_s: 3600.0,
        inline_reselect: false,
        ..OnlineConfig::default()
    };
    // Bucket k ends at k·step: the observation of hour i (the step starting
    // at t0 + i h) is made at its end.
    let feed = |f: &mut OnlineForecaster| {
        for (i, v) in y.iter().enumerate() {
            f.observe(t0_s + (i + 1) as f64 * 3600.0, *v);
        }
    };
    let now = t0_s + y.len() as f64 * 3600.0;
    // The next event after the history starts at hour 30 + 31·j ≥ len.
    let next = cal
        .events
        .iter()
        .map(|e| ((e.start_ms / 1000) as f64 - t0_s) / 3600.0)
        .find(|&h| h >= y.len() as f64)
        .unwrap() as usize;
    let ahead = next - y.len(); // forecast step index (0-based) of its first hour
    assert!(ahead + 2 <= 24, "the next event is within a day: {ahead}");

    // The same selection settings as with a calendar (more validation
    // origins, `OnlineConfig::event_origins`): only the calendar differs.
    let mut plain_cfg = cfg.clone();
    plain_cfg.select.origins = cfg.event_origins;
    let mut plain = OnlineForecaster::new(plain_cfg);
    feed(&mut plain);
    let mut with = OnlineForecaster::new(cfg);
    with.set_calendar(Some(Arc::new(cal.clone())));
    feed(&mut with);
    let (mut fp, mut fw) = (DemandForecast::default(), DemandForecast::default());
    assert!(plain.forecast_into(now, 24, &mut fp));
    assert!(with.forecast_into(now, 24, &mut fw));
    let sel = with.selection().unwrap();
    assert!(sel.events.is_some(), "profile kept: {}", sel.describe());
    assert!(plain.selection().unwrap().events.is_none());
    for k in [ahead, ahead + 1] {
        assert!(
            fw.mean[k] > 1.5 * fp.mean[k],
            "step {k}: with the calendar {} vs without {}",
            fw.mean[k],
            fp.mean[k]
        );
    }
    // Away from the event (more than the aftermath after it) the two agree.
    let far = (0..24).find(|&k| k + 3 < ahead || k > ahead + 4).unwrap();
    assert!((fw.mean[far] - fp.mean[far]).abs() <= 1e-6 * fp.mean[far].abs().max(1.0));

    // The calendar taken away: the plain forecast again (same models, no profile applied).
    with.set_calendar(None);
    let mut again = DemandForecast::default();
    assert!(with.forecast_into(now, 24, &mut again));
    assert!(again.mean[ahead] < fw.mean[ahead] / 1.5);
}
