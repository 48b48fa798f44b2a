//! The monitoring report: one self-contained HTML file (inline SVG and CSS, no scripts, nothing
//! fetched) with the latest window's distributions beside the reference's, drift scores and
//! label metrics over time, and the retraining decisions marked where they happened.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::drift::{ColumnDrift, ColumnKind};
use crate::retrain::{Outcome, RetrainDecision};
use crate::service::{History, MonitorRun};

const REFERENCE: &str = "#7a8ca3";
const CURRENT: &str = "#e0793a";
const PALETTE: [&str; 8] = [
    "#3a6ea5", "#e0793a", "#4c9a6a", "#b5485d", "#8062a8", "#c9a227", "#2b9aa0", "#6b6b6b",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn time_label(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn parse_time(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Writes the report of `latest` (a fresh evaluation of the window) and `history`.
pub fn render(title: &str, latest: &MonitorRun, history: &History) -> String {
    let mut html = String::with_capacity(64 * 1024);
    let status = if latest.alerts.is_empty() {
        "<span class=\"ok\">no alert</span>".to_string()
    } else {
        format!(
            "<span class=\"alert\">{} alert(s)</span>",
            latest.alerts.len()
        )
    };
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1180px; color: #222; }}
h1 {{ font-size: 1.6rem; margin-bottom: .2rem; }} h2 {{ font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }}
.meta {{ color: #555; }} .ok {{ color: #2e7d32; font-weight: 600; }} .alert {{ color: #c62828; font-weight: 600; }}
table {{ border-collapse: collapse; font-size: .9rem; }} td, th {{ padding: .25rem .6rem; border-bottom: 1px solid #eee; text-align: left; }}
th {{ background: #f6f7f9; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 1rem; }}
.card {{ border: 1px solid #e3e5e8; border-radius: 6px; padding: .5rem .7rem; }} .card.drifted {{ border-color: #e57373; background: #fff8f8; }}
.card h3 {{ font-size: .92rem; margin: 0 0 .2rem 0; overflow-wrap: anywhere; }} .small {{ font-size: .8rem; color: #555; }}
.legend span {{ display: inline-block; margin-right: 1rem; }} .swatch {{ display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: middle; }}
ul.alerts li {{ color: #c62828; }}
</style></head><body>
<h1>{title}</h1>
<p class="meta">Monitor <b>{monitor}</b> of deployment <b>{deployment}</b> · model {model} v{version} · window {start} → {at} · {rows} predictions against {reference} reference rows · {status}</p>
"#,
        title = escape(title),
        monitor = escape(&latest.monitor),
        deployment = escape(&latest.deployment),
        model = escape(&latest.model),
        version = latest.model_version,
        start = escape(&latest.window_start),
        at = escape(&latest.at),
        rows = latest.rows,
        reference = latest.reference_rows,
        status = status,
    );
    if !latest.alerts.is_empty() {
        html.push_str("<ul class=\"alerts\">");
        for a in &latest.alerts {
            let _ = write!(html, "<li>{}</li>", escape(a));
        }
        html.push_str("</ul>");
    }
    for note in &latest.notes {
        let _ = write!(html, "<p class=\"small\">{}</p>", escape(note));
    }

    html.push_str("<h2>Drift scores over time</h2>");
    html.push_str(&drift_over_time(history));
    html.push_str("<h2>Model quality over time (labelled predictions)</h2>");
    html.push_str(&quality_over_time(history));
    html.push_str("<h2>Retraining</h2>");
    html.push_str(&decisions_table(&history.decisions));

    html.push_str("<h2>The latest window against the reference</h2>");
    let _ = write!(
        html,
        "<p class=\"legend\"><span><i class=\"swatch\" style=\"background:{REFERENCE}\"></i>reference</span><span><i class=\"swatch\" style=\"background:{CURRENT}\"></i>current window</span></p>"
    );
    let mut columns: Vec<&ColumnDrift> = latest.predictions.iter().collect();
    if let Some(f) = &latest.features {
        columns.extend(&f.columns);
    }
    // Drifted columns first, then by how far they moved.
    columns.sort_by(|a, b| {
        b.drifted
            .cmp(&a.drifted)
            .then(b.statistics.psi.total_cmp(&a.statistics.psi))
    });
    html.push_str("<div class=\"grid\">");
    for c in columns {
        html.push_str(&distribution_card(c));
    }
    html.push_str("</div>");
    if let Some(q) = &latest.quality {
        html.push_str("<h2>Calibration of the latest window</h2>");
        html.push_str(&calibration_plot(&q.calibration));
    }
    html.push_str("<p class=\"small\">Written by kairos monitor report.</p></body></html>\n");
    html
}

fn distribution_card(c: &ColumnDrift) -> String {
    let (w, h, pad) = (250.0, 90.0, 4.0);
    let n = c.bins.reference.len().max(1);
    let max = c
        .bins
        .reference
        .iter()
        .chain(&c.bins.current)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let slot = (w - 2.0 * pad) / n as f64;
    let bar = (slot / 2.0 - 0.5).max(0.5);
    let mut svg = format!(r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">"#);
    for (i, (r, cur)) in c.bins.reference.iter().zip(&c.bins.current).enumerate() {
        let x = pad + i as f64 * slot;
        for (j, (v, color)) in [(r, REFERENCE), (cur, CURRENT)].iter().enumerate() {
            let bh = (**v / max) * (h - 2.0 * pad);
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{bh:.1}" fill="{color}"><title>{}: {:.3}</title></rect>"#,
                x + j as f64 * bar,
                h - pad - bh,
                escape(c.bins.labels.get(i).map(String::as_str).unwrap_or("")),
                v
            );
        }
    }
    svg.push_str("</svg>");
    let kind = match c.kind {
        ColumnKind::Numerical => "numerical",
        ColumnKind::Categorical => "categorical",
    };
    let range = match &c.bins.edges {
        Some(e) if !e.is_empty() => format!("{:.3} … {:.3}", e[0], e[e.len() - 1]),
        _ => format!("{} values", c.bins.labels.len()),
    };
    format!(
        "<div class=\"card{}\"><h3>{}</h3><div class=\"small\">{kind} · {} {:.4} (threshold {}) · PSI {:.3} · JS {:.3}</div>{svg}<div class=\"small\">{range}</div></div>",
        if c.drifted { " drifted" } else { "" },
        escape(&c.column),
        c.method.name(),
        c.score,
        c.threshold,
        c.statistics.psi,
        c.statistics.jensen_shannon,
    )
}

/// A line chart of several series over time, with vertical markers.
fn line_chart(
    series: &[(String, Vec<(i64, f64)>)],
    markers: &[(i64, String, &str)],
    y_label: &str,
) -> String {
    let points: Vec<(i64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if points.is_empty() {
        return "<p class=\"small\">No runs with these scores yet.</p>".into();
    }
    let (w, h) = (1100.0, 300.0);
    let (left, right, top, bottom) = (60.0, 20.0, 15.0, 40.0);
    let xs = points
        .iter()
        .map(|p| p.0)
        .chain(markers.iter().map(|m| m.0));
    let (x0, x1) = xs.fold((i64::MAX, i64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let x1 = if x1 == x0 { x0 + 1 } else { x1 };
    let y1 = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.08;
    let sx = |x: i64| left + (x - x0) as f64 / (x1 - x0) as f64 * (w - left - right);
    let sy = |y: f64| top + (1.0 - y / y1) * (h - top - bottom);
    let mut svg = format!(r#"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">"#);
    for i in 0..=4 {
        let y = y1 * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#666">{y:.3}</text>"##,
            w - right,
            sy(y),
            sy(y),
            left - 6.0,
            sy(y) + 4.0
        );
    }
    for (x, anchor) in [(x0, "start"), (x1, "end")] {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="{anchor}" fill="#666">{}</text>"##,
            sx(x),
            h - bottom + 16.0,
            time_label(x)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="14" y="{:.1}" font-size="11" fill="#666" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        h / 2.0,
        h / 2.0,
        escape(y_label)
    );
    for (x, label, color) in markers {
        let _ = write!(
            svg,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{top}" y2="{:.1}" stroke="{color}" stroke-dasharray="4 3" stroke-width="1.5"><title>{}</title></line><text x="{:.1}" y="{:.1}" font-size="10" fill="{color}">{}</text>"#,
            sx(*x),
            sx(*x),
            h - bottom,
            escape(label),
            sx(*x) + 3.0,
            top + 10.0,
            escape(label)
        );
    }
    let mut legend = String::from("<p class=\"legend\">");
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in pts {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{} {}: {y:.4}</title></circle>"#,
                sx(*x),
                sy(*y),
                escape(name),
                time_label(*x)
            );
        }
        let _ = write!(
            legend,
            "<span><i class=\"swatch\" style=\"background:{color}\"></i>{}</span>",
            escape(name)
        );
    }
    svg.push_str("</svg>");
    legend.push_str("</p>");
    svg + &legend
}

fn decision_markers(decisions: &[RetrainDecision]) -> Vec<(i64, String, &'static str)> {
    decisions
        .iter()
        .filter_map(|d| {
            let at = parse_time(&d.at)?;
            let (label, color) = match d.outcome {
                Outcome::Promoted => (
                    format!("promoted v{}", d.challenger_version.unwrap_or_default()),
                    "#2e7d32",
                ),
                Outcome::Kept => ("kept champion".to_string(), "#6b6b6b"),
                Outcome::Failed => ("retraining failed".to_string(), "#c62828"),
            };
            Some((at, label, color))
        })
        .collect()
}

fn series_of(history: &History, wanted: impl Fn(&str) -> bool) -> Vec<(String, Vec<(i64, f64)>)> {
    let mut by_metric: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for s in &history.scores {
        if let Some(v) = s.value
            && wanted(&s.metric)
        {
            by_metric.entry(&s.metric).or_default().push((s.at, v));
        }
    }
    by_metric
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect()
}

fn drift_over_time(history: &History) -> String {
    // The share of drifted features, and the features that drifted at least once (a chart of
    // every feature would be unreadable).
    let drifted: std::collections::HashSet<&str> = history
        .scores
        .iter()
        .filter(|s| s.alert && s.kind == "feature")
        .map(|s| s.metric.as_str())
        .collect();
    let mut series = series_of(history, |m| m == "dataset:drift_share");
    series.extend(series_of(history, |m| {
        drifted.contains(m)
            && history
                .scores
                .iter()
                .any(|s| s.metric == m && s.method != "ks")
    }));
    series.extend(series_of(history, |m| m == "prediction:prediction"));
    series.truncate(PALETTE.len());
    line_chart(
        &series,
        &decision_markers(&history.decisions),
        "score (share, distance)",
    )
}

fn quality_over_time(history: &History) -> String {
    let series = series_of(history, |m| {
        matches!(
            m,
            "quality:pr_auc" | "quality:precision" | "quality:recall" | "quality:calibration_error"
        )
    });
    line_chart(&series, &decision_markers(&history.decisions), "metric")
}

fn decisions_table(decisions: &[RetrainDecision]) -> String {
    if decisions.is_empty() {
        return "<p class=\"small\">No retraining yet.</p>".into();
    }
    let mut html = String::from(
        "<table><tr><th>at</th><th>trigger</th><th>champion</th><th>challenger</th><th>metric</th><th>champion</th><th>challenger</th><th>rows (positives)</th><th>outcome</th><th>why</th></tr>",
    );
    let score = |s: Option<f64>| s.map_or("–".to_string(), |v| format!("{v:.4}"));
    for d in decisions {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{} v{}</td><td>{}</td><td>{:?}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{} ({})</td><td class=\"{}\">{:?}</td><td>{}</td></tr>",
            escape(&d.at),
            escape(&d.trigger),
            escape(&d.model),
            d.champion_version,
            d.challenger_version
                .map_or("–".to_string(), |v| format!("v{v}")),
            d.metric,
            score(d.champion_score),
            score(d.challenger_score),
            d.evaluated_rows,
            d.evaluated_positives,
            if d.outcome == Outcome::Promoted {
                "ok"
            } else {
                ""
            },
            d.outcome,
            escape(&d.reason),
        );
    }
    html.push_str("</table>");
    html
}

fn calibration_plot(bins: &[(f64, f64, u64)]) -> String {
    let (w, h, pad) = (320.0, 320.0, 40.0);
    let s = |v: f64| pad + v * (w - 2.0 * pad);
    let sy = |v: f64| h - pad - v * (h - 2.0 * pad);
    let mut svg = format!(
        r##"<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><rect x="{pad}" y="{pad}" width="{:.1}" height="{:.1}" fill="none" stroke="#ccc"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#bbb" stroke-dasharray="4 3"/>"##,
        w - 2.0 * pad,
        h - 2.0 * pad,
        s(0.0),
        sy(0.0),
        s(1.0),
        sy(1.0)
    );
    let total: u64 = bins.iter().map(|b| b.2).sum::<u64>().max(1);
    for (score, rate, rows) in bins {
        let r = 3.0 + 9.0 * (*rows as f64 / total as f64).sqrt();
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r:.1}" fill="{CURRENT}" fill-opacity="0.7"><title>mean score {score:.3}, positive rate {rate:.3}, {rows} rows</title></circle>"#,
            s(*score),
            sy(*rate)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#666">mean predicted probability</text><text x="12" y="{:.1}" font-size="11" fill="#666" transform="rotate(-90 12 {:.1})" text-anchor="middle">observed positive rate</text></svg>"##,
        w / 2.0,
        h - 8.0,
        h / 2.0,
        h / 2.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DriftOptions, Samples, dataset_drift};
    use crate::service::Score;
    use crate::spec::RetrainMetric;

    #[test]
    fn the_report_is_one_self_contained_page() {
        let reference: Vec<f64> = (0..500).map(|i| (i % 50) as f64).collect();
        let current: Vec<f64> = (0..500).map(|i| (i % 50) as f64 * 1.6).collect();
        let features = dataset_drift(
            vec![(
                "amount_<scaled>".to_string(),
                Samples::Numerical {
                    reference: &reference,
                    current: &current,
                },
            )],
            &DriftOptions::default(),
        )
        .unwrap();
        let run = MonitorRun {
            monitor: "m".into(),
            run_id: "m-1".into(),
            at: "2026-12-02T12:00:00.000Z".into(),
            window_start: "2026-12-02T11:00:00.000Z".into(),
            deployment: "fraud".into(),
            model: "fraud_payments".into(),
            model_version: 1,
            rows: 500,
            reference_rows: 500,
            features: Some(features),
            predictions: Vec::new(),
            quality: None,
            alerts: vec!["feature drift: amount".into()],
            notes: Vec::new(),
            retraining: None,
        };
        let at = parse_time(&run.at).unwrap();
        let history = History {
            scores: (0..3)
                .map(|i| Score {
                    run_id: format!("m-{i}"),
                    at: at + i * 600_000_000,
                    metric: "dataset:drift_share".into(),
                    kind: "dataset".into(),
                    method: "share".into(),
                    value: Some(i as f64 / 2.0),
                    threshold: None,
                    alert: i > 0,
                })
                .collect(),
            decisions: vec![RetrainDecision {
                monitor: "m".into(),
                deployment: "fraud".into(),
                at: "2026-12-02T12:10:00.000Z".into(),
                trigger: "alert".into(),
                model: "fraud_payments".into(),
                champion_version: 1,
                challenger_version: Some(2),
                training_dataset: Some((1, 2)),
                training_end: None,
                metric: RetrainMetric::PrAuc,
                champion_score: Some(0.4),
                challenger_score: Some(0.7),
                margin: 0.02,
                evaluated_rows: 1000,
                evaluated_positives: 20,
                outcome: Outcome::Promoted,
                reason: "won".into(),
            }],
        };
        let html = render("Report <fraud>", &run, &history);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Report &lt;fraud&gt;"), "titles are escaped");
        assert!(html.contains("amount_&lt;scaled&gt;"));
        assert!(
            html.contains("promoted v2"),
            "the decision is marked on the charts"
        );
        assert!(html.contains("<polyline"), "drift over time is drawn");
        assert!(html.contains("class=\"card drifted\""));
        // Nothing to fetch, nothing to run.
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }
}
