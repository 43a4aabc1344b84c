//! The demo's self-contained HTML report (`report.html`): the scoreboard, the
//! forecast against the held-out day, what the live controller published over
//! gRPC, and the simulated scenarios' time series. Plots are inline SVG drawn
//! by the simulator's chart writer (`aya_sim::report::line_chart`): no
//! JavaScript, no external files, so the report can be mailed as one file.

use std::fmt::Write as _;

use aya_sim::report::{alert_sections, anomaly_chart, line_chart, marks};
use aya_sim::run::ScenarioResult;

use super::history::History;
use super::live::LiveSummary;
use super::plan::Plan;
use super::scoreboard::Scoreboard;
use super::train::Trained;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Everything the report shows.
pub struct ReportInput<'a> {
    /// Plan of the run.
    pub plan: &'a Plan,
    /// The history.
    pub history: &'a History,
    /// Training outcome.
    pub trained: &'a Trained,
    /// What the live controller did (None when that stage failed; the reason is in `live_error`).
    pub live: Option<&'a LiveSummary>,
    /// Why the live stage did not run, if it did not.
    pub live_error: Option<&'a str>,
    /// Simulated scenarios with their keys.
    pub scenarios: &'a [(String, ScenarioResult)],
    /// The scoreboard.
    pub scoreboard: &'a Scoreboard,
    /// Wall-clock seconds per stage (name, seconds), for the record.
    pub timings: &'a [(String, f64)],
}

/// Render the report.
pub fn html(r: &ReportInput<'_>) -> String {
    let mut h = String::new();
    html_intro(&mut h, r);
    html_forecast(&mut h, r);
    html_live(&mut h, r);
    for (key, res) in r.scenarios {
        html_scenario(&mut h, key, res);
    }
    html_timings(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

/// The page head, the introduction and the scoreboard.
fn html_intro(h: &mut String, r: &ReportInput<'_>) {
    h.push_str(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>aya demo</title><style>\
         body{font-family:sans-serif;margin:2em;max-width:1050px;line-height:1.4}\
         table{border-collapse:collapse;font-size:13px;margin:.5em 0}\
         td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f4f4f4}\
         td:first-child,th:first-child{text-align:left}td.l{text-align:left}td.nw{white-space:nowrap}pre{background:#f8f8f8;padding:1em;overflow-x:auto;font-size:12px}\
         </style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>aya demo</h1><p>Seed {}, plan <b>{}</b>. Aya generated {} days of synthetic traffic and per-backend \
         metrics, trained and selected its demand forecaster on everything before the test period (the last \
         day, {}:00 to {}:00), streamed recent metrics into a controller started in-process over gRPC while a \
         data-plane client watched the published weights, then replayed the test period in the simulator under \
         Aya and the baseline policies.</p>",
        r.scoreboard.seed,
        esc(&r.scoreboard.plan),
        r.plan.history_days,
        r.plan.test_start_hour,
        r.plan.test_start_hour + r.plan.test_hours
    );
    let _ = write!(
        h,
        "<p>Time scales: the simulator replays the test period {}× faster than it happened (request service \
         times are real); control interval, telemetry, boot delay and cool-downs are divided by the same factor. \
         Minutes and hours in the simulation tables are virtual time.</p>",
        r.plan.compression
    );
    h.push_str("<h2>Scoreboard</h2><pre>");
    h.push_str(&esc(&r.scoreboard.render()));
    h.push_str("</pre>");
}

/// The forecast against the held-out period: chart, selection and model table.
fn html_forecast(h: &mut String, r: &ReportInput<'_>) {
    // Forecast against the held-out period.
    h.push_str("<h2>Forecast against the held-out period</h2>");
    let step_h = f64::from(r.history.demand_step_secs) / 3600.0;
    // Context: up to two days of training data, at most four times the test period.
    let ctx_n = (2 * 86_400 / r.history.demand_step_secs as usize)
        .min(4 * r.history.test_demand.len())
        .min(r.history.train_demand.len());
    let train_tail = &r.history.train_demand[r.history.train_demand.len() - ctx_n..];
    let ctx: Vec<(f64, f64)> = train_tail
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as f64 - ctx_n as f64) * step_h, *v))
        .collect();
    let at = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, y)| (i as f64 * step_h, *y))
            .collect()
    };
    let t = r.trained;
    let series = vec![
        ("training data".to_string(), ctx),
        ("actual (held out)".to_string(), at(&r.history.test_demand)),
        ("forecast".to_string(), at(&t.point)),
        ("80% lower".to_string(), at(&t.band80.0)),
        ("80% upper".to_string(), at(&t.band80.1)),
        ("95% lower".to_string(), at(&t.band95.0)),
        ("95% upper".to_string(), at(&t.band95.1)),
    ];
    h.push_str(&line_chart(
        "Demand (requests/s): forecast from the end of training",
        "hours from the start of the test period",
        "requests/s",
        &series,
    ));
    let _ = write!(
        h,
        "<p>Selected per horizon band: <code>{}</code>. Detected seasonal periods (steps of {} s): {:?}.</p>",
        esc(&t.board.selected),
        r.history.demand_step_secs,
        t.seasonality.periods
    );
    h.push_str("<table><tr><th>model</th><th>MASE</th><th>sMAPE %</th></tr>");
    for row in &t.board.rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.3}</td><td>{:.2}</td></tr>",
            esc(&row.model),
            row.mase,
            row.smape
        );
    }
    h.push_str("</table><p>MASE: mean absolute error on the held-out period divided by the in-sample error of the seasonal-naive forecast (one-day season); below 1 beats it.</p>");
}

/// What the live controller published over gRPC, or why it did not run.
fn html_live(h: &mut String, r: &ReportInput<'_>) {
    // Live controller.
    h.push_str("<h2>Live controller over gRPC</h2>");
    match (r.live, r.live_error) {
        (Some(l), _) => h.push_str(&l.html()),
        (None, Some(e)) => {
            let _ = write!(h, "<p><b>Not run:</b> {}</p>", esc(e));
        }
        (None, None) => h.push_str("<p>Not run.</p>"),
    }
}

/// One simulated scenario: links and its latency (anomalies marked),
/// success and replica charts (the calendar's events shaded, if any), and
/// the predictive alert timeline of the policies with a headroom forecast.
fn html_scenario(h: &mut String, key: &str, res: &ScenarioResult) {
    let _ = write!(
        h,
        "<h2>Simulation: {}</h2><p>{}</p>",
        esc(key),
        esc(&res.description)
    );
    let _ = write!(
        h,
        "<p>Full simulator report with per-backend load and paired comparisons: <a href=\"sim_{0}/report.html\">sim_{0}/report.html</a>; \
         scenario file: <code>scenario_{0}.toml</code>.</p>",
        esc(key)
    );
    let lat: Vec<(String, Vec<(f64, f64)>)> = res
        .policies
        .iter()
        .map(|p| {
            (
                format!("{} p99", p.label),
                p.series.iter().map(|w| (w.t, w.p99)).collect(),
            )
        })
        .collect();
    anomaly_chart(
        h,
        "p99 latency per window (first seed)",
        "virtual time (s)",
        "seconds",
        &lat,
        &[],
    );
    let ok: Vec<(String, Vec<(f64, f64)>)> = res
        .policies
        .iter()
        .map(|p| {
            (
                p.label.clone(),
                p.series
                    .iter()
                    .map(|w| (w.t, w.success_rate * 100.0))
                    .collect(),
            )
        })
        .collect();
    h.push_str(&line_chart(
        "Success rate per window, % (first seed)",
        "virtual time (s)",
        "%",
        &ok,
    ));
    let mut dem: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    if let Some(p) = res.policies.first() {
        dem.push((
            "demand (req/s ÷ 10)".into(),
            p.series
                .iter()
                .map(|w| (w.t, w.demand_rps / 10.0))
                .collect(),
        ));
    }
    for p in &res.policies {
        dem.push((
            format!("{} replicas", p.label),
            p.series.iter().map(|w| (w.t, f64::from(w.alive))).collect(),
        ));
    }
    h.push_str(&aya_sim::report::marked_chart(
        "Replicas against demand (first seed)",
        "virtual time (s)",
        "replicas | req/s ÷ 10",
        &dem,
        &aya_sim::report::Marks {
            spans: marks::event_marks(&res.events),
            points: Vec::new(),
        },
    ));
    marks::event_table(h, &res.events);
    alert_sections(h, res);
}

/// The per-stage run-time table, when timings were recorded.
fn html_timings(h: &mut String, r: &ReportInput<'_>) {
    if !r.timings.is_empty() {
        h.push_str(
            "<h2>Run time on this machine</h2><table><tr><th>stage</th><th>seconds</th></tr>",
        );
        for (name, s) in r.timings {
            let _ = write!(h, "<tr><td>{}</td><td>{:.1}</td></tr>", esc(name), s);
        }
        h.push_str("</table>");
    }
}
