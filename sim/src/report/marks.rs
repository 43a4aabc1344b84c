//! What the report draws over and under its charts (issue 15, part 5): the
//! scenario's event calendar as shaded spans, the streaming anomaly
//! detector's marks on the plotted series, and the predictive alert's
//! timeline against the SLO windows the run violated.

use std::fmt::Write as _;

use aya_forecaster::anomaly::{DetectorConfig, Score, detect_series};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{CHART_W, LEGEND_W, esc, fmt_tick};
use crate::alerts::{AlertRules, predictive_fires};
use crate::run::{EventSpan, PolicyRuns};

/// A score at or above this marks a point: the default `[anomaly]
/// threshold` of `aya serve` (an anomaly likelihood of 1 − 1e-5,
/// docs/anomaly.md).
pub const ANOMALY_THRESHOLD: f64 = 0.5;
/// Anomalies listed in a chart's table (the highest scores).
const ANOMALY_ROWS: usize = 10;

/// Fill of an event's span.
pub(super) const EVENT_FILL: RGBColor = RGBColor(255, 170, 60);
/// Colour of an anomaly marker (a ring around the point).
pub(super) const ANOMALY_COLOR: RGBColor = RGBColor(230, 0, 126);

/// A shaded interval `[start, end)` of the x axis with a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Start, x units.
    pub start: f64,
    /// End (exclusive), x units.
    pub end: f64,
    /// Text written along the span.
    pub label: String,
}

/// A marked point of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// Name of the series it is in.
    pub series: String,
    /// Time, x units.
    pub t: f64,
    /// The series' value there.
    pub value: f64,
    /// The detector's score.
    pub score: Score,
}

/// Everything drawn over one chart.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// Shaded spans, under the lines.
    pub spans: Vec<Span>,
    /// Marked points, over the lines.
    pub points: Vec<Anomaly>,
}

/// The calendar's events as spans labelled "name (category)".
pub fn event_marks(events: &[EventSpan]) -> Vec<Span> {
    events
        .iter()
        .map(|e| Span {
            start: e.start,
            end: e.end,
            label: short_label(&e.name),
        })
        .collect()
}

/// Characters of an event's name written along its span (the full name
/// and the category are in the table under the chart).
const LABEL_CHARS: usize = 48;

/// The name written along an event's span: without a trailing remark in
/// parentheses (e.g. the local kick-off time), cut at [`LABEL_CHARS`].
fn short_label(name: &str) -> String {
    let name = match name.rfind(" (") {
        Some(i) if i > 0 && name.ends_with(')') => &name[..i],
        _ => name,
    };
    if name.chars().count() <= LABEL_CHARS {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// Run the streaming detector (default configuration, each series on its
/// own, points in order, non-finite ones skipped) over every series and keep
/// the points scoring at least [`ANOMALY_THRESHOLD`], in series order.
pub fn anomalies(series: &[(String, Vec<(f64, f64)>)]) -> Vec<Anomaly> {
    let cfg = DetectorConfig::default();
    let mut out = Vec::new();
    for (name, pts) in series {
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let ts: Vec<i64> = pts.iter().map(|p| (p.0 * 1000.0).round() as i64).collect();
        let vs: Vec<f64> = pts.iter().map(|p| p.1).collect();
        for (p, score) in pts.iter().zip(detect_series(&cfg, &ts, &vs)) {
            if score.value >= ANOMALY_THRESHOLD {
                out.push(Anomaly {
                    series: name.clone(),
                    t: p.0,
                    value: p.1,
                    score,
                });
            }
        }
    }
    out
}

/// Shade each span over the full height `0..y1` and write its label
/// upwards along its left edge.
pub(super) fn draw_spans<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    spans: &[Span],
    (x0, x1, y1): (f64, f64, f64),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let visible: Vec<&Span> = spans
        .iter()
        .filter(|s| s.end > x0 && s.start < x1)
        .collect();
    chart.draw_series(visible.iter().map(|s| {
        Rectangle::new(
            [(s.start.max(x0), y1), (s.end.min(x1), 0.0)],
            EVENT_FILL.mix(0.3).filled(),
        )
    }))?;
    let font = ("sans-serif", 11)
        .into_font()
        .transform(FontTransform::Rotate270)
        .color(&RGBColor(150, 80, 0));
    chart.draw_series(
        visible
            .iter()
            .map(|s| Text::new(s.label.clone(), (s.start.max(x0), y1 * 0.03), font.clone())),
    )?;
    Ok(())
}

/// A ring around each marked point (clipped to the chart's top).
pub(super) fn draw_points<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    points: &[Anomaly],
    y1: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart.draw_series(
        points
            .iter()
            .map(|a| Circle::new((a.t, a.value.min(y1)), 6, ANOMALY_COLOR.stroke_width(2))),
    )?;
    Ok(())
}

/// One legend line per kind of mark present, below the series' lines.
pub(super) fn draw_marks_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    marks: &Marks,
    top: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = ("sans-serif", 12).into_font().color(&BLACK);
    let mut y = top;
    if !marks.spans.is_empty() {
        area.draw(&Rectangle::new(
            [(8, y - 6), (30, y + 6)],
            EVENT_FILL.mix(0.3).filled(),
        ))?;
        area.draw(&Text::new("known event", (36, y - 7), style.clone()))?;
        y += 17;
    }
    if !marks.points.is_empty() {
        area.draw(&Circle::new((19, y), 6, ANOMALY_COLOR.stroke_width(2)))?;
        area.draw(&Text::new(
            format!("anomaly (score ≥ {ANOMALY_THRESHOLD})"),
            (36, y - 7),
            style,
        ))?;
    }
    Ok(())
}

/// The events within the run as a table: name, category, start, end.
pub fn event_table(h: &mut String, events: &[EventSpan]) {
    if events.is_empty() {
        return;
    }
    h.push_str(
        "<table class=\"events\"><tr><th>known event (forecaster.events)</th><th>category</th>\
         <th>start (s)</th><th>end (s)</th></tr>",
    );
    for e in events {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td></tr>",
            esc(&e.name),
            esc(&e.category),
            e.start,
            e.end
        );
    }
    h.push_str("</table>");
}

/// Marks of one series less than this many x units apart are one
/// episode in the table: `[anomaly] quiet_seconds` of `aya serve`.
const QUIET: f64 = 300.0;

/// Consecutive marks of one series, as `aya serve` opens and closes an
/// anomaly: from its first mark to its last, and its highest score.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode<'a> {
    /// First mark's time.
    pub start: f64,
    /// Last mark's time.
    pub end: f64,
    /// Marks in it.
    pub marks: usize,
    /// The highest-scoring mark (the first of equals).
    pub peak: &'a Anomaly,
}

/// Group the marks (in series order, as [`anomalies`] returns them) into
/// episodes: a mark more than [`QUIET`] after the previous one of its
/// series, or of another series, opens a new one.
pub fn episodes(found: &[Anomaly]) -> Vec<Episode<'_>> {
    let mut out: Vec<Episode<'_>> = Vec::new();
    for a in found {
        match out.last_mut() {
            Some(e) if e.peak.series == a.series && a.t - e.end <= QUIET => {
                e.end = a.t;
                e.marks += 1;
                if a.score.value > e.peak.score.value {
                    e.peak = a;
                }
            }
            _ => out.push(Episode {
                start: a.t,
                end: a.t,
                marks: 1,
                peak: a,
            }),
        }
    }
    out
}

/// The anomaly episodes with the highest peaks as a table (first and last
/// mark, series, marks, peak value and score, why), or a sentence saying
/// there were none.
pub fn anomaly_table(h: &mut String, found: &[Anomaly]) {
    if found.is_empty() {
        let _ = write!(
            h,
            "<p class=\"anomalies\">No anomaly: no point scored ≥ {ANOMALY_THRESHOLD} (the detector \
             learns on each series' first {} points).</p>",
            DetectorConfig::default().warmup
        );
        return;
    }
    let mut top = episodes(found);
    let total = top.len();
    top.sort_by(|a, b| {
        b.peak
            .score
            .value
            .total_cmp(&a.peak.score.value)
            .then(a.start.total_cmp(&b.start))
    });
    top.truncate(ANOMALY_ROWS);
    top.sort_by(|a, b| a.start.total_cmp(&b.start));
    h.push_str(
        "<table class=\"anomalies\"><tr><th>anomaly: from (s)</th><th>to (s)</th><th>series</th>\
         <th>marks</th><th>peak value</th><th>peak score</th><th>why (at the peak)</th></tr>",
    );
    for e in &top {
        let _ = write!(
            h,
            "<tr><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td></tr>",
            e.start,
            e.end,
            esc(&e.peak.series),
            e.marks,
            fmt_tick(e.peak.value),
            e.peak.score.value,
            esc(&e.peak.score.explanation())
        );
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p>{} marked points in {total} episode(s) (marks of a series less than {QUIET:.0} s apart){}.</p>",
        found.len(),
        if total > ANOMALY_ROWS {
            format!(", the {ANOMALY_ROWS} with the highest peaks shown")
        } else {
            String::new()
        }
    );
}

/// One lane of the alert strip: a name and the `[start, end)` intervals
/// during which it holds.
pub type Lane = (String, Vec<(f64, f64)>);

/// The lanes of a policy's alert timeline: when the predictive alert (the
/// forecast's upper bound, then its mean, exhausted within `rules.lead`)
/// and the "scale-up deadline passed" alert would fire (docs/alerts.md),
/// each tick held until the next.
pub fn alert_lanes(p: &PolicyRuns, rules: &AlertRules) -> Vec<Lane> {
    let held = |fires: &dyn Fn(&aya_policy::Headroom) -> bool| -> Vec<(f64, f64)> {
        p.headroom
            .iter()
            .zip(p.headroom.iter().skip(1).map(|n| n.0).chain([f64::NAN]))
            .filter(|((_, h), _)| fires(h))
            .map(|((t, _), next)| (*t, if next.is_finite() { next } else { *t + 1.0 }))
            .collect()
    };
    let upper = AlertRules {
        on_mean: false,
        ..*rules
    };
    let mean = AlertRules {
        on_mean: true,
        ..*rules
    };
    let lead = rules.lead;
    vec![
        (
            format!("upper bound out in ≤ {lead:.0} s"),
            held(&|h| predictive_fires(h, &upper)),
        ),
        (
            format!("mean out in ≤ {lead:.0} s"),
            held(&|h| predictive_fires(h, &mean)),
        ),
        (
            "scale-up deadline passed".into(),
            held(&|h| {
                h.scale_up_deadline_in.is_some_and(|d| d < 0.0)
                    && h.exhausted_upper_in.is_some_and(|e| e < 600.0)
            }),
        ),
    ]
}

/// The SLO windows a policy's run violated, as a lane named after it.
pub fn slo_lane(p: &PolicyRuns) -> Lane {
    // The windows are contiguous: each lasts until the next starts.
    let window = match p.slo_windows.as_slice() {
        [a, b, ..] => b.start - a.start,
        _ => 60.0,
    };
    (
        format!("{}: SLO window violated", p.label),
        p.slo_windows
            .iter()
            .filter(|w| w.violated)
            .map(|w| (w.start, w.start + window))
            .collect(),
    )
}

/// Height of one lane of the alert strip, pixels.
const LANE_H: u32 = 26;

/// The alert timeline as an SVG strip: one lane per alert (and one for the
/// violated SLO windows), a filled bar where it holds, over `x0..x1`.
pub fn alert_strip(title: &str, lanes: &[Lane], (x0, x1): (f64, f64)) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_alert_strip(&mut svg, title, lanes, (x0, x1)) {
        return format!(
            "<p>{}: strip not drawn ({})</p>",
            esc(title),
            esc(&e.to_string())
        );
    }
    svg
}

fn draw_alert_strip(
    svg: &mut String,
    title: &str,
    lanes: &[Lane],
    (x0, x1): (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    let n = lanes.len().max(1) as u32;
    let height = 70 + LANE_H * n;
    let root = SVGBackend::with_string(svg, (CHART_W, height)).into_drawing_area();
    root.fill(&WHITE)?;
    // The same layout as the line charts (plot, then the names where their
    // legend is), so the time axes line up on the page.
    let (plot, names) = root.split_horizontally(CHART_W - LEGEND_W);
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 15).into_font().style(FontStyle::Bold))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..f64::from(n))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("time (s)")
        .x_labels(8)
        .x_label_formatter(&|v| fmt_tick(*v))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    for (i, (name, spans)) in lanes.iter().enumerate() {
        // Lane 0 at the top.
        let lo = f64::from(n) - 1.0 - i as f64;
        let c = super::palette(i);
        chart.draw_series(spans.iter().map(|&(a, b)| {
            Rectangle::new([(a.max(x0), lo + 0.8), (b.min(x1), lo + 0.2)], c.filled())
        }))?;
        let (_, y) = chart.backend_coord(&(x0, lo + 0.5));
        names.draw(&Text::new(
            format!("{name} ({})", spans.len()),
            (8, y - 7),
            ("sans-serif", 12).into_font().color(&c),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use aya_policy::Headroom;

    use super::*;
    use crate::alerts::SloWindow;
    use crate::engine::WindowRow;
    use crate::report::html;
    use crate::run::ScenarioResult;

    /// A window every 10 s with this demand (p99 = p50 = 0.1 s).
    fn row(t: f64, demand: f64) -> WindowRow {
        WindowRow {
            t,
            demand_rps: demand,
            throughput_rps: demand,
            success_rate: 1.0,
            p50: 0.1,
            p99: 0.1,
            ready: 2,
            alive: 2,
            imbalance_max_mean: 1.0,
            imbalance_cv: 0.0,
            backends: Vec::new(),
        }
    }

    /// One policy over `demand` (one value per 10 s window).
    fn result(demand: &[f64]) -> ScenarioResult {
        ScenarioResult {
            name: "marks".into(),
            description: String::new(),
            seeds: vec![1],
            policies: vec![PolicyRuns {
                label: "aya".into(),
                runs: Vec::new(),
                summary: BTreeMap::new(),
                series: demand
                    .iter()
                    .enumerate()
                    .map(|(i, d)| row(i as f64 * 10.0, *d))
                    .collect(),
                decisions: Vec::new(),
                headroom: Vec::new(),
                slo_windows: Vec::new(),
            }],
            comparisons: Vec::new(),
            events: Vec::new(),
        }
    }

    /// 400 windows of a repeating 40..60 saw-tooth; a spike to 500 at
    /// window 300 (t = 3000 s) when `spike`.
    fn demand(spike: bool) -> Vec<f64> {
        (0..400)
            .map(|i| {
                if spike && i == 300 {
                    500.0
                } else {
                    40.0 + (i % 5) as f64 * 5.0
                }
            })
            .collect()
    }

    fn headroom(upper: Option<f64>) -> Headroom {
        Headroom {
            capacity_rps: 100.0,
            horizon_seconds: 360.0,
            exhausted_upper_in: upper,
            exhausted_mean_in: None,
            exhausted_lower_in: None,
            scale_up_deadline_in: upper.map(|u| u - 90.0),
        }
    }

    #[test]
    fn events_are_shaded_and_listed_only_when_the_scenario_has_some() {
        let mut r = result(&demand(false));
        let plain = html(&r);
        assert!(!plain.contains("class=\"events\""));
        assert!(!plain.contains("known event"));
        assert!(!plain.contains("fill=\"#FFAA3C\""));
        r.events = vec![EventSpan {
            name: "Brazil v Chile".into(),
            category: "round_of_16".into(),
            start: 1000.0,
            end: 1600.0,
        }];
        let h = html(&r);
        // The span's rectangle, its label in the chart, the legend, the table row.
        assert_eq!(
            h.matches("fill=\"#FFAA3C\"").count(),
            2,
            "span + legend swatch"
        );
        assert!(
            h.contains("\nBrazil v Chile\n</text>"),
            "label along the span"
        );
        assert!(h.contains("\nknown event\n</text>"));
        assert!(
            h.contains("<td>Brazil v Chile</td><td>round_of_16</td><td>1000</td><td>1600</td>")
        );
    }

    #[test]
    fn a_spike_is_marked_on_the_chart_and_listed() {
        let found = anomalies(&[(
            "demand".into(),
            demand(true)
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64 * 10.0, *v))
                .collect(),
        )]);
        assert!(
            found.iter().any(|a| a.t == 3000.0 && a.value == 500.0),
            "{found:?}"
        );
        assert!(
            found.iter().all(|a| (3000.0..=3020.0).contains(&a.t)),
            "only the spike and the two points after it: {found:?}"
        );
        let h = html(&result(&demand(true)));
        assert!(
            h.contains("stroke=\"#E6007E\""),
            "a ring in the marker colour"
        );
        assert!(h.contains("anomaly (score ≥ 0.5)"));
        assert!(
            h.contains(
                "<td>3000</td><td>3020</td><td>demand</td><td>3</td><td>500</td><td>1.000</td>"
            ),
            "one episode, its peak at the spike"
        );
    }

    #[test]
    fn labels_leave_the_remark_and_the_tail_to_the_table() {
        let n = "Round of 16: Germany v Mexico (1998-06-29 16:30 CEST)";
        assert_eq!(short_label(n), "Round of 16: Germany v Mexico");
        assert_eq!(short_label("(all day)"), "(all day)");
        let long = "x".repeat(60);
        assert_eq!(short_label(&long).chars().count(), LABEL_CHARS);
        assert!(short_label(&long).ends_with('…'));
    }

    #[test]
    fn nothing_is_marked_before_the_detector_has_learnt() {
        // Fewer points than the warm-up: no score above 0, whatever the values.
        let mut d = demand(true);
        d.truncate(DetectorConfig::default().warmup);
        d[100] = 1e6;
        let h = html(&result(&d));
        assert!(!h.contains("stroke=\"#E6007E\""));
        assert!(!h.contains("class=\"anomalies\"><tr>"));
        assert!(h.contains("No anomaly: no point scored"));
    }

    #[test]
    fn the_alert_strip_shows_when_the_alert_fires_and_the_slo_broke() {
        let mut r = result(&demand(false));
        assert!(
            !html(&r).contains("Predictive alert timeline"),
            "no headroom, no strip"
        );
        let p = &mut r.policies[0];
        // Ticks every 60 s; the upper bound runs out within 300 s at 600..=720.
        p.headroom = (0..20)
            .map(|k| {
                let t = k as f64 * 60.0;
                (t, headroom((600.0..=720.0).contains(&t).then_some(200.0)))
            })
            .collect();
        p.slo_windows = (0..20)
            .map(|k| SloWindow {
                start: k as f64 * 60.0,
                violated: k == 14,
            })
            .collect();
        let lanes = alert_lanes(p, &AlertRules::default());
        assert_eq!(
            lanes[0].1,
            vec![(600.0, 660.0), (660.0, 720.0), (720.0, 780.0)]
        );
        assert!(lanes[1].1.is_empty(), "the mean never runs out");
        assert_eq!(slo_lane(p).1, vec![(840.0, 900.0)]);
        let h = html(&r);
        assert!(h.contains("Predictive alert timeline"));
        assert!(h.contains("\nupper bound out in ≤ 300 s (3)\n</text>"));
        assert!(h.contains("\naya: SLO window violated (1)\n</text>"));
        assert!(h.contains("aya: headroom forecast"));
    }
}
