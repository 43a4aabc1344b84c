//! Results on disk: `result.json`, CSV time series per policy, and a
//! self-contained `report.html` whose plots are inline SVG drawn here (no
//! JavaScript, no external CSS), so the report opens anywhere and can be
//! attached to a change request as one file.

use std::fmt::Write as _;
use std::path::Path;

use crate::run::{METRICS, ScenarioResult};

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

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

fn nice_step(range: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let f = if n < 1.5 {
        1.0
    } else if n < 3.5 {
        2.0
    } else if n < 7.5 {
        5.0
    } else {
        10.0
    };
    f * mag
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{:.0}", v)
    } else if v.abs() >= 1.0 {
        format!("{:.1}", v).trim_end_matches(".0").to_string()
    } else {
        format!("{:.3}", v).trim_end_matches('0').to_string()
    }
}

/// A line chart as an SVG string. Each series: (name, points).
pub fn line_chart(title: &str, xl: &str, yl: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, ml, mr, mt, mb) = (760.0, 300.0, 70.0, 170.0, 30.0, 40.0);
    let pts = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for p in pts {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y1 = y1.max(p.1);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        out,
        r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        ml,
        esc(title)
    );
    if !x0.is_finite() || x1 <= x0 {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}">no data</text></svg>"#,
            ml + 10.0,
            h / 2.0
        );
        return out;
    }
    if y1 <= 0.0 {
        y1 = 1.0;
    }
    let ys = nice_step(y1);
    let y1 = (y1 / ys).ceil() * ys;
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + ph - (y / y1) * ph;
    let _ = write!(
        out,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    let mut y = 0.0;
    while y <= y1 + ys * 0.01 {
        let py = sy(y);
        let _ = write!(
            out,
            r##"<line x1="{ml}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 5.0,
            py + 4.0,
            fmt_tick(y)
        );
        y += ys;
    }
    let xs = nice_step(x1 - x0);
    let mut x = (x0 / xs).ceil() * xs;
    while x <= x1 {
        let px = sx(x);
        let _ = write!(
            out,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            mt + ph + 15.0,
            fmt_tick(x)
        );
        x += xs;
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        ml + pw / 2.0,
        h - 5.0,
        esc(xl)
    );
    let _ = write!(
        out,
        r#"<text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        mt + ph / 2.0,
        esc(yl)
    );
    for (i, (name, ps)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut d = String::new();
        for (j, p) in ps
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .enumerate()
        {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                sx(p.0),
                sy(p.1.min(y1))
            );
        }
        let _ = write!(
            out,
            r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="1.5"/>"#
        );
        let ly = mt + 10.0 + i as f64 * 15.0;
        if i < 16 {
            let _ = write!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="10" height="3" fill="{c}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                ml + pw + 10.0,
                ly - 3.0,
                ml + pw + 24.0,
                ly + 1.0,
                esc(name)
            );
        }
    }
    out.push_str("</svg>");
    out
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
    h.push_str("<h2>Summary</h2><table><tr><th>metric</th>");
    for p in &res.policies {
        let _ = write!(h, "<th>{}</th>", esc(&p.label));
    }
    h.push_str("</tr>");
    for (m, _) in METRICS {
        let _ = write!(h, "<tr><td>{m}</td>");
        for p in &res.policies {
            let e = p.summary.get(*m).copied().unwrap_or_default();
            let prec = if e.mean.abs() >= 100.0 {
                1
            } else if e.mean.abs() >= 1.0 {
                3
            } else {
                5
            };
            let _ = write!(h, "<td>{}</td>", e.fmt(prec));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if !res.comparisons.is_empty() {
        h.push_str("<h2>Paired comparisons (same seeds)</h2><table><tr><th>metric</th>");
        for c in &res.comparisons {
            let _ = write!(h, "<th>{} − {}</th>", esc(&c.policy), esc(&c.reference));
        }
        h.push_str("</tr>");
        for (m, _) in METRICS {
            let _ = write!(h, "<tr><td>{m}</td>");
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
    h.push_str(&line_chart(
        "Latency per window",
        "time (s)",
        "seconds",
        &lat,
    ));
    h.push_str("<h2>Replicas vs demand (first seed)</h2>");
    let dem: Vec<(String, Vec<(f64, f64)>)> = vec![(
        "demand".into(),
        res.policies
            .first()
            .map(|p| p.series.iter().map(|w| (w.t, w.demand_rps)).collect())
            .unwrap_or_default(),
    )];
    h.push_str(&line_chart("Demand", "time (s)", "requests/s", &dem));
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
        "replicas",
        &reps,
    ));
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
            "busy fraction",
            &ser,
        ));
        if !p.decisions.is_empty() {
            let _ = write!(
                h,
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
    h.push_str("</body></html>\n");
    h
}
