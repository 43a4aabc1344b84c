//! Suite report: markdown and HTML with hand-written inline SVG.

use std::fmt::Write as _;

use super::generate::Split;
use super::run::{
    AutoRow, BalRow, GEO_P2C, GEO_PEWMA, GEO_SLO, P99_TOL, SLO_OFFSET, SUCCESS_TOL_PP, SuiteResult,
    Summary,
};

fn yes(b: bool) -> &'static str {
    if b { "met" } else { "**not met**" }
}

fn split_name(s: Option<Split>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "all".into())
}

/// The acceptance table (one column per summary).
pub fn summary_table(sums: &[Summary]) -> String {
    let mut t = String::from("| acceptance (issue 11) | target |");
    for s in sums {
        let _ = write!(t, " {} |", split_name(s.split));
    }
    t.push_str("\n|---|---|");
    for _ in sums {
        t.push_str("---|");
    }
    t.push('\n');
    let mut row = |name: &str, target: &str, f: &dyn Fn(&Summary) -> String| {
        let _ = write!(t, "| {name} | {target} |");
        for s in sums {
            let _ = write!(t, " {} |", f(s));
        }
        t.push('\n');
    };
    row("balancing scenarios passing both checks", "all", &|s| {
        format!("{}/{}", s.bal_pass, s.bal_n)
    });
    row(
        "… p99 ≤ 1.05 × better of P2C, peak-EWMA",
        "all",
        &|s| format!("{}/{}", s.bal_p99_pass, s.bal_n),
    );
    row("… success ≥ better − 0.02 pp", "all", &|s| {
        format!("{}/{}", s.bal_success_pass, s.bal_n)
    });
    row("worst p99 ratio to better baseline", "≤ 1.05", &|s| {
        format!("{:.2}", s.worst_ratio)
    });
    row("worst success difference (pp)", "≥ −0.02", &|s| {
        format!("{:+.2}", s.worst_success_pp)
    });
    row("geomean p99 Aya / P2C", &format!("≤ {GEO_P2C}"), &|s| {
        format!("{:.3}", s.geo_p2c)
    });
    row(
        "geomean p99 Aya / peak-EWMA",
        &format!("≤ {GEO_PEWMA}"),
        &|s| format!("{:.3}", s.geo_pewma),
    );
    row("geomean p99 Aya / better baseline", "(info)", &|s| {
        format!("{:.3}", s.geo_best)
    });
    row("**balancing acceptance**", "", &|s| yes(s.bal_met).into());
    row("autoscaling on/below HPA frontier", "all", &|s| {
        format!("{}/{}", s.auto_frontier_pass, s.auto_n)
    });
    row(
        "… Aya's replica-hours inside HPA's traced range",
        "(info)",
        &|s| format!("{}/{}", s.auto_bracketed, s.auto_n),
    );
    row("… actions ≤ HPA@0.7 (Aya's target)", "all", &|s| {
        format!("{}/{}", s.auto_actions_pass, s.auto_n)
    });
    row(
        &format!("geomean (Aya+{SLO_OFFSET}) / (HPA@Aya's cost+{SLO_OFFSET}) SLO min"),
        &format!("≤ {GEO_SLO}"),
        &|s| format!("{:.3}", s.geo_slo),
    );
    row("replica-hours Aya / HPA@0.7 (sum)", "(info)", &|s| {
        format!("{:.0} / {:.0}", s.replica_hours[0], s.replica_hours[1])
    });
    row("scaling actions Aya / HPA@0.7 (sum)", "(info)", &|s| {
        format!("{:.0} / {:.0}", s.actions[0], s.actions[1])
    });
    row("**autoscaling acceptance**", "", &|s| {
        yes(s.auto_met).into()
    });
    t
}

/// Per-family composition table.
pub fn composition(res: &SuiteResult) -> String {
    let mut fams: Vec<(String, &str, usize, usize)> = Vec::new();
    let mut add = |f: &str, kind: &'static str, sp: Split| {
        if let Some(e) = fams.iter_mut().find(|e| e.0 == f) {
            if sp == Split::Tune {
                e.2 += 1
            } else {
                e.3 += 1
            }
        } else {
            fams.push((
                f.into(),
                kind,
                (sp == Split::Tune) as usize,
                (sp == Split::Test) as usize,
            ));
        }
    };
    for r in &res.balancing {
        add(&r.family, "balancing", r.split);
    }
    for r in &res.autoscaling {
        add(&r.family, "autoscaling", r.split);
    }
    let mut t = String::from("| kind | family | tune | test |\n|---|---|---|---|\n");
    for (f, k, a, b) in &fams {
        let _ = writeln!(t, "| {k} | {f} | {a} | {b} |");
    }
    let tune = fams.iter().map(|e| e.2).sum::<usize>();
    let test = fams.iter().map(|e| e.3).sum::<usize>();
    let _ = writeln!(t, "| | **total** | {tune} | {test} |");
    t
}

fn worst_bal(res: &SuiteResult, split: Option<Split>, n: usize) -> Vec<&BalRow> {
    let mut v: Vec<&BalRow> = res
        .balancing
        .iter()
        .filter(|r| split.is_none_or(|s| r.split == s))
        .collect();
    // Regret: p99 excess over the better baseline, plus 1 % success shortfall = 0.1.
    let key = |r: &BalRow| r.ratio_best.ln() + (-r.success_diff_pp).max(0.0) * 0.1;
    v.sort_by(|a, b| key(b).total_cmp(&key(a)));
    v.truncate(n);
    v
}

fn bal_table(rows: &[&BalRow]) -> String {
    let mut t = String::from(
        "| scenario | split | p99 Aya / P2C / PEWMA (ms) | ratio to better | success Aya / P2C / PEWMA (%) | Δ success (pp) | pass |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} / {:.1} / {:.1} | {:.2} | {:.2} / {:.2} / {:.2} | {:+.2} | {} |",
            r.id,
            r.split,
            r.p99[0] * 1e3,
            r.p99[1] * 1e3,
            r.p99[2] * 1e3,
            r.ratio_best,
            r.success[0] * 100.0,
            r.success[1] * 100.0,
            r.success[2] * 100.0,
            r.success_diff_pp,
            if r.pass { "yes" } else { "no" }
        );
    }
    t
}

fn auto_table(rows: &[&AutoRow]) -> String {
    let mut t = {
        let mut h = String::from("| scenario | split | Aya rh / SLO min / actions |");
        for t in super::generate::HPA_TARGETS {
            let _ = write!(h, " HPA@{t} |");
        }
        h.push_str(" HPA SLO min at Aya's rh | on frontier | inside HPA range | actions ≤ HPA@0.7 |\n|---|---|---|");
        for _ in super::generate::HPA_TARGETS {
            h.push_str("---|");
        }
        h.push_str("---|---|---|---|\n");
        h
    };
    for r in rows {
        let _ = write!(
            t,
            "| {} | {} | {:.1} / {:.1} / {:.0} |",
            r.id, r.split, r.aya.replica_hours, r.aya.slo_minutes, r.aya.actions
        );
        for h in &r.hpa {
            let _ = write!(
                t,
                " {:.1} / {:.1} / {:.0} |",
                h.replica_hours, h.slo_minutes, h.actions
            );
        }
        let _ = writeln!(
            t,
            " {:.1} | {} | {} | {} |",
            r.hpa_at_aya,
            if r.on_frontier { "yes" } else { "no" },
            if r.bracketed { "yes" } else { "no" },
            if r.actions_ok { "yes" } else { "no" }
        );
    }
    t
}

/// The markdown report.
pub fn markdown(res: &SuiteResult) -> String {
    let mut m = String::from("# Aya broad suite (issue 11)\n\n");
    let _ = writeln!(
        m,
        "{} balancing and {} autoscaling scenarios, {} replications, {:.0} s wall.\n",
        res.balancing.len(),
        res.autoscaling.len(),
        res.runs,
        res.wall_seconds
    );
    let _ = writeln!(
        m,
        "Per-scenario balancing check: Aya p99 ≤ {P99_TOL} × the better of P2C and peak-EWMA and success ≥ theirs − {SUCCESS_TOL_PP} pp (means over seeds).\n"
    );
    m.push_str("## Acceptance\n\n");
    m.push_str(&summary_table(&res.summaries));
    m.push_str("\n## Composition\n\n");
    m.push_str(&composition(res));
    for sp in [Split::Test, Split::Tune] {
        let _ = writeln!(m, "\n## Worst 10 balancing scenarios ({sp} split)\n");
        let w = worst_bal(res, Some(sp), 10);
        m.push_str(&bal_table(&w));
        for r in w.iter().take(5) {
            let _ = writeln!(
                m,
                "\n**{}**: {}\n\nAya's decisions (first seed, first 8 of {}):\n```",
                r.id,
                r.summary,
                r.decisions.len()
            );
            for l in r.decisions.iter().take(8) {
                let _ = writeln!(m, "{l}");
            }
            m.push_str("```\n");
        }
    }
    for sp in [Split::Test, Split::Tune] {
        let _ = writeln!(m, "\n## Autoscaling ({sp} split)\n");
        let rows: Vec<&AutoRow> = res.autoscaling.iter().filter(|r| r.split == sp).collect();
        m.push_str(&auto_table(&rows));
    }
    for sp in [Split::Test, Split::Tune] {
        let _ = writeln!(m, "\n## All balancing scenarios ({sp} split)\n");
        let mut rows: Vec<&BalRow> = res.balancing.iter().filter(|r| r.split == sp).collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        m.push_str(&bal_table(&rows));
    }
    m
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn color(s: Split) -> &'static str {
    match s {
        Split::Test => "#c0392b",
        Split::Tune => "#2e86c1",
    }
}

/// Sorted regret plot: log2(Aya p99 / better baseline) per scenario.
fn regret_svg(rows: &[BalRow]) -> String {
    let (w, h, l, r, t, b) = (1000.0, 320.0, 60.0, 20.0, 30.0, 40.0);
    let mut v: Vec<&BalRow> = rows.iter().collect();
    v.sort_by(|a, b| a.ratio_best.total_cmp(&b.ratio_best));
    let ys: Vec<f64> = v.iter().map(|r| r.ratio_best.max(1e-3).log2()).collect();
    let ymax = ys.iter().cloned().fold(0.5, f64::max).ceil();
    let ymin = ys.iter().cloned().fold(-0.5, f64::min).floor();
    let sx = |i: usize| l + (w - l - r) * (i as f64 + 0.5) / v.len().max(1) as f64;
    let sy = |y: f64| t + (h - t - b) * (ymax - y) / (ymax - ymin);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>"
    );
    let _ = write!(
        s,
        "<text x='{l}' y='18' font-size='13'>Aya p99 / better of P2C and peak-EWMA, sorted (log2 scale; red = test, blue = tune; dashed = 1.05)</text>"
    );
    let mut y = ymin;
    while y <= ymax + 1e-9 {
        let _ = write!(
            s,
            "<line x1='{l}' x2='{x2}' y1='{yy}' y2='{yy}' stroke='#ddd'/><text x='{tx}' y='{ty}' text-anchor='end'>{v:.2}×</text>",
            x2 = w - r,
            yy = sy(y),
            tx = l - 4.0,
            ty = sy(y) + 4.0,
            v = 2f64.powf(y)
        );
        y += 0.5;
    }
    let _ = write!(
        s,
        "<line x1='{l}' x2='{x2}' y1='{yy}' y2='{yy}' stroke='#333' stroke-dasharray='5,4'/>",
        x2 = w - r,
        yy = sy(P99_TOL.log2())
    );
    for (i, (row, y)) in v.iter().zip(&ys).enumerate() {
        let _ = write!(
            s,
            "<rect x='{:.1}' y='{:.1}' width='{:.1}' height='{:.1}' fill='{}'><title>{} {:.2}×</title></rect>",
            sx(i) - 3.0,
            sy(y.max(0.0)),
            6.0_f64.min((w - l - r) / v.len().max(1) as f64 * 0.8),
            (sy(y.min(0.0)) - sy(y.max(0.0))).max(1.0),
            color(row.split),
            esc(&row.id),
            row.ratio_best
        );
    }
    let _ = write!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>scenarios sorted by regret ({} balancing)</text></svg>",
        (w + l) / 2.0,
        h - 10.0,
        v.len()
    );
    s
}

/// Sorted success-difference plot.
fn success_svg(rows: &[BalRow]) -> String {
    let (w, h, l, r, t, b) = (1000.0, 260.0, 60.0, 20.0, 30.0, 30.0);
    let mut v: Vec<&BalRow> = rows.iter().collect();
    v.sort_by(|a, b| a.success_diff_pp.total_cmp(&b.success_diff_pp));
    let ymin = v
        .iter()
        .map(|r| r.success_diff_pp)
        .fold(-1.0, f64::min)
        .min(-1.0);
    let ymax = v.iter().map(|r| r.success_diff_pp).fold(1.0, f64::max);
    let sx = |i: usize| l + (w - l - r) * (i as f64 + 0.5) / v.len().max(1) as f64;
    let sy = |y: f64| t + (h - t - b) * (ymax - y) / (ymax - ymin);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>"
    );
    let _ = write!(
        s,
        "<text x='{l}' y='18' font-size='13'>Aya success − better baseline's (percentage points), sorted</text>"
    );
    for y in [ymin, ymin / 2.0, 0.0, ymax] {
        let _ = write!(
            s,
            "<line x1='{l}' x2='{x2}' y1='{yy}' y2='{yy}' stroke='#ddd'/><text x='{tx}' y='{ty}' text-anchor='end'>{y:+.1}</text>",
            x2 = w - r,
            yy = sy(y),
            tx = l - 4.0,
            ty = sy(y) + 4.0
        );
    }
    for (i, row) in v.iter().enumerate() {
        let y = row.success_diff_pp;
        let _ = write!(
            s,
            "<rect x='{:.1}' y='{:.1}' width='6' height='{:.1}' fill='{}'><title>{} {:+.2} pp</title></rect>",
            sx(i) - 3.0,
            sy(y.max(0.0)),
            (sy(y.min(0.0)) - sy(y.max(0.0))).max(1.0),
            color(row.split),
            esc(&row.id),
            y
        );
    }
    s.push_str("</svg>");
    s
}

/// One scenario's cost/SLO frontier.
fn frontier_svg(r: &AutoRow) -> String {
    let (w, h, l, rr, t, b) = (300.0, 210.0, 40.0, 10.0, 34.0, 30.0);
    let mut xs: Vec<f64> = r.hpa.iter().map(|p| p.replica_hours).collect();
    xs.push(r.aya.replica_hours);
    let mut ys: Vec<f64> = r.hpa.iter().map(|p| p.slo_minutes).collect();
    ys.push(r.aya.slo_minutes);
    let x0 = xs.iter().cloned().fold(f64::INFINITY, f64::min) * 0.9;
    let x1 = xs.iter().cloned().fold(0.0, f64::max) * 1.1;
    let y1 = ys.iter().cloned().fold(1.0, f64::max) * 1.1;
    let sx = |x: f64| l + (w - l - rr) * (x - x0) / (x1 - x0).max(1e-9);
    let sy = |y: f64| t + (h - t - b) * (y1 - y) / y1;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='10'>"
    );
    let _ = write!(
        s,
        "<rect x='0' y='0' width='{w}' height='{h}' fill='none' stroke='{}'/>",
        color(r.split)
    );
    let _ = write!(s, "<text x='4' y='12'>{} ({})</text>", esc(&r.id), r.split);
    let _ = write!(
        s,
        "<text x='4' y='25'>Aya {} · actions {:.0} vs HPA@0.7 {:.0}</text>",
        if r.on_frontier {
            "on/below frontier"
        } else {
            "ABOVE frontier"
        },
        r.aya.actions,
        r.hpa
            .iter()
            .find(|p| p.label == "hpa@0.7")
            .map(|p| p.actions)
            .unwrap_or(f64::NAN)
    );
    let _ = write!(
        s,
        "<line x1='{l}' x2='{x2}' y1='{yb}' y2='{yb}' stroke='#999'/><line x1='{l}' x2='{l}' y1='{t}' y2='{yb}' stroke='#999'/>",
        x2 = w - rr,
        yb = h - b
    );
    let _ = write!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>replica-hours ({:.1}–{:.1})</text>",
        (w + l) / 2.0,
        h - 8.0,
        x0,
        x1
    );
    let _ = write!(
        s,
        "<text x='10' y='{}' transform='rotate(-90 10 {})' text-anchor='middle'>SLO min (0–{:.0})</text>",
        (h + t - b) / 2.0,
        (h + t - b) / 2.0,
        y1
    );
    let mut pts: Vec<(f64, f64, &str)> = r
        .hpa
        .iter()
        .map(|p| (p.replica_hours, p.slo_minutes, p.label.as_str()))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path: Vec<String> = pts
        .iter()
        .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
        .collect();
    let _ = write!(
        s,
        "<polyline points='{}' fill='none' stroke='#555'/>",
        path.join(" ")
    );
    for p in &pts {
        let _ = write!(
            s,
            "<circle cx='{:.1}' cy='{:.1}' r='3' fill='#555'/><text x='{:.1}' y='{:.1}'>{}</text>",
            sx(p.0),
            sy(p.1),
            sx(p.0) + 4.0,
            sy(p.1) - 3.0,
            p.2.trim_start_matches("hpa@")
        );
    }
    let _ = write!(
        s,
        "<circle cx='{:.1}' cy='{:.1}' r='5' fill='#e67e22'><title>Aya {:.1} rh, {:.1} min</title></circle>",
        sx(r.aya.replica_hours),
        sy(r.aya.slo_minutes),
        r.aya.replica_hours,
        r.aya.slo_minutes
    );
    s.push_str("</svg>");
    s
}

fn md_table_html(md: &str) -> String {
    let mut h = String::from("<table>");
    for (k, line) in md.lines().enumerate() {
        if k == 1 {
            continue;
        }
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        let tag = if k == 0 { "th" } else { "td" };
        h.push_str("<tr>");
        for c in cells {
            let c = esc(c.trim());
            let c = c
                .strip_prefix("**")
                .and_then(|x| x.strip_suffix("**"))
                .map(|x| format!("<b>{x}</b>"))
                .unwrap_or(c);
            let _ = write!(h, "<{tag}>{c}</{tag}>");
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    h
}

/// The HTML report.
pub fn html(res: &SuiteResult) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset='utf-8'><title>Aya broad suite</title><style>body{font-family:sans-serif;margin:20px;max-width:1200px} table{border-collapse:collapse;font-size:12px;margin:8px 0} td,th{border:1px solid #ccc;padding:2px 6px} .grid{display:flex;flex-wrap:wrap;gap:6px} pre{font-size:11px;background:#f6f6f6;overflow-x:auto}</style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>Aya broad suite (issue 11)</h1><p>{} balancing and {} autoscaling scenarios, {} replications, {:.0} s wall.</p>",
        res.balancing.len(),
        res.autoscaling.len(),
        res.runs,
        res.wall_seconds
    );
    h.push_str("<h2>Acceptance</h2>");
    h.push_str(&md_table_html(&summary_table(&res.summaries)));
    h.push_str("<h2>Balancing regret</h2>");
    h.push_str(&regret_svg(&res.balancing));
    h.push_str(&success_svg(&res.balancing));
    for sp in [Split::Test, Split::Tune] {
        let _ = write!(h, "<h2>Worst 10 balancing scenarios ({sp})</h2>");
        let w = worst_bal(res, Some(sp), 10);
        h.push_str(&md_table_html(&bal_table(&w)));
        for r in &w {
            let _ = write!(
                h,
                "<details><summary>{}: {}</summary><pre>{}</pre></details>",
                esc(&r.id),
                esc(&r.summary),
                esc(&r.decisions.join("\n"))
            );
        }
    }
    h.push_str("<h2>Autoscaling frontiers (HPA at 0.3–0.8, Aya orange)</h2><div class='grid'>");
    for r in &res.autoscaling {
        h.push_str(&frontier_svg(r));
    }
    h.push_str("</div>");
    for sp in [Split::Test, Split::Tune] {
        let _ = write!(h, "<h2>Autoscaling table ({sp})</h2>");
        let rows: Vec<&AutoRow> = res.autoscaling.iter().filter(|r| r.split == sp).collect();
        h.push_str(&md_table_html(&auto_table(&rows)));
    }
    h.push_str("<h2>Composition</h2>");
    h.push_str(&md_table_html(&composition(res)));
    h.push_str("</body></html>\n");
    h
}
