//! Results on disk: `result.json`, CSV time series per policy, and a
//! self-contained `report.html` whose charts are inline SVG drawn with
//! plotters' SVG backend (no JavaScript, no external CSS, no fonts), so the
//! report opens anywhere and can be attached to a change request as one file.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::alerts::AlertRules;
use crate::run::{METRICS, PolicyRuns, ScenarioResult};

pub mod marks;

pub use marks::Marks;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write `result.json`, `series_<policy>.csv`, `backends_<policy>.csv` and `report.html` into `dir`.
pub fn write_all(res: &ScenarioResult, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(res).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("result.json"), json)?;
    for p in &res.policies {
        let mut s = String::from(
            "t,demand_rps,throughput_rps,success_rate,p50,p99,ready_replicas,alive_replicas,imbalance_max_mean,imbalance_cv\n",
        );
        let mut b = String::from("t,backend,utilization,rate,in_flight\n");
        for w in &p.series {
            let _ = writeln!(
                s,
                "{},{:.3},{:.3},{:.6},{:.6},{:.6},{},{},{:.4},{:.4}",
                w.t,
                w.demand_rps,
                w.throughput_rps,
                w.success_rate,
                w.p50,
                w.p99,
                w.ready,
                w.alive,
                w.imbalance_max_mean,
                w.imbalance_cv
            );
            for l in &w.backends {
                let _ = writeln!(
                    b,
                    "{},{},{:.4},{:.3},{:.3}",
                    w.t, l.backend, l.utilization, l.rate, l.in_flight
                );
            }
        }
        std::fs::write(dir.join(format!("series_{}.csv", file_safe(&p.label))), s)?;
        std::fs::write(dir.join(format!("backends_{}.csv", file_safe(&p.label))), b)?;
    }
    std::fs::write(dir.join("report.html"), html(res))?;
    Ok(())
}

/// Chart size in pixels: plotting area plus the legend column on the right.
const CHART_W: u32 = 820;
const CHART_H: u32 = 340;
const LEGEND_W: u32 = 190;
/// Legend entries drawn (the rest are summarised as "+ N more").
const LEGEND_MAX: usize = 16;

/// Tick labels: no trailing zeros, thousands without decimals.
fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 1.0 {
        format!("{:.1}", v).trim_end_matches(".0").to_string()
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// A line chart as an SVG string, drawn with plotters: a title, labelled
/// axes (`xl`, `yl`: say the unit), grid lines, and a legend naming each
/// series in its colour. Each series: (name, points); non-finite points are
/// skipped. The y axis starts at 0.
pub fn line_chart(title: &str, xl: &str, yl: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    marked_chart(title, xl, yl, series, &Marks::default())
}

/// [`line_chart`] with `marks` drawn over it: shaded, labelled spans under
/// the lines and a ring on each marked point, each kind named in the legend.
pub fn marked_chart(
    title: &str,
    xl: &str,
    yl: &str,
    series: &[(String, Vec<(f64, f64)>)],
    marks: &Marks,
) -> String {
    let mut svg = String::new();
    let drawn = draw_line_chart(&mut svg, title, xl, yl, series, marks);
    if let Err(e) = drawn {
        // Drawing into a string only fails on a plotters bug: say so in the
        // report rather than lose the rest of it.
        return format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="40"><text x="10" y="25" font-family="sans-serif">{}: chart not drawn ({})</text></svg>"#,
            esc(title),
            esc(&e.to_string())
        );
    }
    svg
}

/// Data range of the finite points: (x0, x1, y1), `None` without a usable x range.
fn chart_range(series: &[(String, Vec<(f64, f64)>)]) -> Option<(f64, f64, f64)> {
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for p in series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
    {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y1 = y1.max(p.1);
    }
    (x0.is_finite() && x1 > x0).then_some((x0, x1, if y1 > 0.0 { y1 * 1.05 } else { 1.0 }))
}

fn draw_line_chart(
    svg: &mut String,
    title: &str,
    xl: &str,
    yl: &str,
    series: &[(String, Vec<(f64, f64)>)],
    marks: &Marks,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(svg, (CHART_W, CHART_H)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_horizontally(CHART_W - LEGEND_W);
    let Some((x0, x1, y1)) = chart_range(series) else {
        plot.titled(title, ("sans-serif", 15).into_font().style(FontStyle::Bold))?
            .draw(&Text::new("no data", (80, 120), ("sans-serif", 13)))?;
        root.present()?;
        return Ok(());
    };
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 15).into_font().style(FontStyle::Bold))
        .margin(8)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1, 0.0..y1)?;
    chart
        .configure_mesh()
        .x_desc(xl)
        .y_desc(yl)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 13))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    marks::draw_spans(&mut chart, &marks.spans, (x0, x1, y1))?;
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = palette(i);
        chart.draw_series(LineSeries::new(
            pts.iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|p| (p.0, p.1.min(y1))),
            c.stroke_width(2),
        ))?;
    }
    marks::draw_points(&mut chart, &marks.points, y1)?;
    let below = draw_legend(&legend, series)?;
    marks::draw_marks_legend(&legend, marks, below)?;
    root.present()?;
    Ok(())
}

/// One line per series: a colour swatch and the name, top to bottom.
/// Returns the y of the next free line.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<i32, DrawingAreaErrorKind<DB::ErrorType>> {
    let style = ("sans-serif", 12).into_font();
    let top = 34;
    for (i, (name, _)) in series.iter().enumerate().take(LEGEND_MAX) {
        let y = top + 17 * i as i32;
        area.draw(&PathElement::new(
            vec![(8, y), (30, y)],
            palette(i).stroke_width(3),
        ))?;
        area.draw(&Text::new(
            name.clone(),
            (36, y - 7),
            style.clone().color(&BLACK),
        ))?;
    }
    if series.len() > LEGEND_MAX {
        let y = top + 17 * LEGEND_MAX as i32;
        area.draw(&Text::new(
            format!("+ {} more", series.len() - LEGEND_MAX),
            (36, y - 7),
            style.color(&RGBColor(90, 90, 90)),
        ))?;
    }
    let lines = series.len().min(LEGEND_MAX + 1) as i32;
    Ok(top + 17 * lines + 8)
}

/// The tableau-10 palette, the colours the report always used.
fn palette(i: usize) -> RGBColor {
    const COLORS: [(u8, u8, u8); 10] = [
        (0x1f, 0x77, 0xb4),
        (0xd6, 0x27, 0x28),
        (0x2c, 0xa0, 0x2c),
        (0xff, 0x7f, 0x0e),
        (0x94, 0x67, 0xbd),
        (0x8c, 0x56, 0x4b),
        (0xe3, 0x77, 0xc2),
        (0x7f, 0x7f, 0x7f),
        (0xbc, 0xbd, 0x22),
        (0x17, 0xbe, 0xcf),
    ];
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b)
}

/// The self-contained HTML report.
pub fn html(res: &ScenarioResult) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>aya sim: {}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:1000px}}table{{border-collapse:collapse;font-size:13px}}\
         td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}th{{background:#f4f4f4}}\
         td:first-child,th:first-child{{text-align:left}}</style></head><body>",
        esc(&res.name)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><p>{}</p>",
        esc(&res.name),
        esc(&res.description)
    );
    let _ = write!(
        h,
        "<p>{} replication(s), seeds {:?}. Values are mean ± 95% CI half-width (Student t) over seeds; latencies in seconds.</p>",
        res.seeds.len(),
        res.seeds
    );
    summary_tables(&mut h, res);
    time_charts(&mut h, res);
    backend_sections(&mut h, res);
    h.push_str("</body></html>\n");
    h
}

/// The summary and paired-comparison tables.
fn summary_tables(h: &mut String, res: &ScenarioResult) {
    h.push_str("<h2>Summary</h2><table><tr><th>metric</th>");
    for p in &res.policies {
        let _ = write!(*h, "<th>{}</th>", esc(&p.label));
    }
    h.push_str("</tr>");
    for (m, _) in METRICS {
        let _ = write!(*h, "<tr><td>{m}</td>");
        for p in &res.policies {
            let e = p.summary.get(*m).copied().unwrap_or_default();
            let prec = if e.mean.abs() >= 100.0 {
                1
            } else if e.mean.abs() >= 1.0 {
                3
            } else {
                5
            };
            let _ = write!(*h, "<td>{}</td>", e.fmt(prec));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if !res.comparisons.is_empty() {
        h.push_str("<h2>Paired comparisons (same seeds)</h2><table><tr><th>metric</th>");
        for c in &res.comparisons {
            let _ = write!(*h, "<th>{} − {}</th>", esc(&c.policy), esc(&c.reference));
        }
        h.push_str("</tr>");
        for (m, _) in METRICS {
            let _ = write!(*h, "<tr><td>{m}</td>");
            for c in &res.comparisons {
                let p = c.metrics.get(*m).copied().unwrap_or_default();
                let _ = write!(
                    h,
                    "<td>{} ({:+.1}%){}</td>",
                    p.diff.fmt(4),
                    p.relative * 100.0,
                    if p.significant { " *" } else { "" }
                );
            }
            h.push_str("</tr>");
        }
        h.push_str("</table><p>* the 95% CI of the paired difference excludes 0.</p>");
    }
}

/// Latency, demand (with the event calendar), replicas over time, and the
/// alert timeline; anomalies are marked on the latency and demand charts.
fn time_charts(h: &mut String, res: &ScenarioResult) {
    h.push_str("<h2>Latency over time (first seed)</h2>");
    let mut lat = Vec::new();
    for p in &res.policies {
        lat.push((
            format!("{} p99", p.label),
            p.series.iter().map(|w| (w.t, w.p99)).collect(),
        ));
        lat.push((
            format!("{} p50", p.label),
            p.series.iter().map(|w| (w.t, w.p50)).collect(),
        ));
    }
    anomaly_chart(
        h,
        "Latency per window: p99 and p50",
        "time (s)",
        "latency (s)",
        &lat,
        &[],
    );
    h.push_str("<h2>Replicas vs demand (first seed)</h2>");
    let dem: Vec<(String, Vec<(f64, f64)>)> = vec![(
        "demand".into(),
        res.policies
            .first()
            .map(|p| p.series.iter().map(|w| (w.t, w.demand_rps)).collect())
            .unwrap_or_default(),
    )];
    anomaly_chart(
        h,
        "Demand (arrivals per second)",
        "time (s)",
        "demand (requests/s)",
        &dem,
        &marks::event_marks(&res.events),
    );
    marks::event_table(h, &res.events);
    let reps: Vec<(String, Vec<(f64, f64)>)> = res
        .policies
        .iter()
        .map(|p| {
            (
                format!("{} replicas", p.label),
                p.series.iter().map(|w| (w.t, w.alive as f64)).collect(),
            )
        })
        .collect();
    h.push_str(&line_chart(
        "Replicas (booting + ready + draining)",
        "time (s)",
        "replicas (count)",
        &reps,
    ));
    alert_sections(h, res);
}

/// A chart over time (x axis labelled `xl`) with the streaming detector's
/// anomalies marked (and `spans` shaded), followed by the table of the
/// highest-scoring ones.
pub fn anomaly_chart(
    h: &mut String,
    title: &str,
    xl: &str,
    yl: &str,
    series: &[(String, Vec<(f64, f64)>)],
    spans: &[marks::Span],
) {
    let m = Marks {
        spans: spans.to_vec(),
        points: marks::anomalies(series),
    };
    h.push_str(&marked_chart(title, xl, yl, series, &m));
    marks::anomaly_table(h, &m.points);
}

/// Per policy whose decisions carried a headroom forecast: the alert
/// timeline strip and the headroom series. Nothing without any.
pub fn alert_sections(h: &mut String, res: &ScenarioResult) {
    let with: Vec<&PolicyRuns> = res
        .policies
        .iter()
        .filter(|p| !p.headroom.is_empty())
        .collect();
    if with.is_empty() {
        return;
    }
    let rules = AlertRules::default();
    h.push_str("<h2>Predictive alert timeline (first seed)</h2>");
    let _ = write!(
        h,
        "<p>When the predictive alerts of docs/alerts.md would have fired on the headroom forecast \
         of each control tick (the forecast's upper bound or mean exceeding the serving pool's \
         capacity within {:.0} s; the scale-up deadline passed with the upper bound out within \
         600 s), against the SLO windows each policy's run violated (the same trace and seed). \
         The count after each name is in control ticks (windows for the SLO).</p>",
        rules.lead
    );
    let x_range = res
        .policies
        .iter()
        .flat_map(|p| p.series.iter().map(|w| w.t))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| {
            (a.min(t), b.max(t))
        });
    for p in with {
        // The alerts of this policy's run against every policy's violations.
        let mut lanes = marks::alert_lanes(p, &rules);
        lanes.extend(res.policies.iter().map(marks::slo_lane));
        let (x0, x1) = if x_range.0 < x_range.1 {
            x_range
        } else {
            (0.0, p.headroom.last().map_or(1.0, |l| l.0))
        };
        h.push_str(&marks::alert_strip(
            &format!("{}: predictive alerts vs SLO violations", p.label),
            &lanes,
            (x0, x1),
        ));
        h.push_str(&line_chart(
            &format!("{}: headroom forecast (capped at the horizon)", p.label),
            "time (s)",
            "seconds until capacity is exceeded",
            &headroom_series(p),
        ));
    }
}

/// Exhaustion times of the upper bound and the mean, and the scale-up
/// deadline, per tick; "not within the horizon" is drawn at the horizon and
/// a passed deadline at 0.
fn headroom_series(p: &PolicyRuns) -> Vec<(String, Vec<(f64, f64)>)> {
    let at = |f: &dyn Fn(&aya_policy::Headroom) -> Option<f64>| -> Vec<(f64, f64)> {
        p.headroom
            .iter()
            .map(|(t, hr)| {
                (
                    *t,
                    f(hr)
                        .unwrap_or(hr.horizon_seconds)
                        .clamp(0.0, hr.horizon_seconds),
                )
            })
            .collect()
    };
    vec![
        (
            "upper bound exhausted in".into(),
            at(&|h| h.exhausted_upper_in),
        ),
        ("mean exhausted in".into(), at(&|h| h.exhausted_mean_in)),
        ("scale-up deadline".into(), at(&|h| h.scale_up_deadline_in)),
    ]
}

/// Per-backend utilisation charts and the decision logs.
fn backend_sections(h: &mut String, res: &ScenarioResult) {
    h.push_str("<h2>Per-backend load (first seed)</h2>");
    for p in &res.policies {
        let mut names: Vec<String> = Vec::new();
        for w in &p.series {
            for l in &w.backends {
                if !names.contains(&l.backend) {
                    names.push(l.backend.clone());
                }
            }
        }
        names.truncate(16);
        let ser: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .map(|n| {
                let pts = p
                    .series
                    .iter()
                    .filter_map(|w| {
                        w.backends
                            .iter()
                            .find(|l| &l.backend == n)
                            .map(|l| (w.t, l.utilization))
                    })
                    .collect();
                (n.clone(), pts)
            })
            .collect();
        h.push_str(&line_chart(
            &format!("{}: utilisation per backend (first 16)", p.label),
            "time (s)",
            "utilisation (busy fraction)",
            &ser,
        ));
        if !p.decisions.is_empty() {
            let _ = write!(
                *h,
                "<details><summary>{}: {} decisions that changed something</summary><ul>",
                esc(&p.label),
                p.decisions.len()
            );
            for d in p.decisions.iter().take(50) {
                let _ = write!(
                    h,
                    "<li>t={:.0}s replicas={} algorithm={} rules: {}</li>",
                    d.at,
                    d.scaling.desired_replicas,
                    d.algorithm.algorithm,
                    esc(&d.explanation.rules.join("; "))
                );
            }
            h.push_str("</ul></details>");
        }
    }
}
