//! target-reports/index.html: one self-contained page (inline CSS and SVG, no JavaScript, nothing
//! fetched) read top to bottom — verdicts, HNSW, capacity, HTTP, the rate limiter, history, the
//! comparison with a baseline, the environment, links to Criterion's pages, and every figure of
//! every record (so no kind or entry is silently dropped).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::charts::{self, Chart, Series, Style, color};
use super::compare::{Comparison, Verdict, number};
use super::store::{Store, Stored, is_quick, write_atomically};
use super::{Finding, gates_of};
use crate::record::{self, ResultEntry, RunRecord};
use crate::secrets;

/// What the page shows besides the records: the comparisons and what they are against.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// e.g. "latest runs compared with baseline 'a'".
    pub comparison_title: String,
    pub comparisons: Vec<Comparison>,
    /// Lines about comparisons that could not be made (no baseline of that kind, other mode…).
    pub comparison_notes: Vec<String>,
}

/// Rebuilds `index.html` from every record in `runs/` (read redacted, shown through [`esc`]).
/// Returns its path.
pub fn write_index(store: &Store, view: &View) -> Result<PathBuf> {
    let (runs, warnings) = store.runs();
    let page = render(&store.root, &runs, &warnings, view);
    let path = store.index_path();
    write_atomically(&path, &page)?;
    Ok(path)
}

/// HTML-escapes text, after removing every secret this process has seen ([`secrets::scrub`]): all
/// text the page shows passes through here (the records it shows are redacted when read).
pub fn esc(s: &str) -> String {
    let s = secrets::scrub(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The latest record of each kind.
pub fn latest_by_kind(runs: &[Stored]) -> BTreeMap<String, &Stored> {
    let mut latest = BTreeMap::new();
    for s in runs {
        latest.insert(s.record.kind.clone(), s); // runs are oldest first
    }
    latest
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:0 auto;padding:16px 20px 60px;color:#1b1b1b;line-height:1.45}
h1{margin-bottom:4px}h2{margin-top:40px;border-bottom:2px solid #ddd;padding-bottom:4px}h3{margin-top:24px}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:14px}
.chart{max-width:760px}.chart svg{width:100%;height:auto;border:1px solid #e4e4e4;border-radius:4px}
.pass{background:#dff3e3;color:#0b5d1e;font-weight:600}.fail{background:#fbe0e0;color:#8a1111;font-weight:600}
.regressed{background:#fbe0e0;color:#8a1111;font-weight:600}.improved{background:#dff3e3;color:#0b5d1e;font-weight:600}
.nochange{color:#555}.info{color:#888}.unjudged{background:#fff4d6;color:#7a5200}.noise{font-size:14px;color:#333}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;font-weight:600}
.quick{background:#fff1c7;color:#6b4e00}
.note{color:#555;font-size:14px}.warn{color:#8a1111}
code{background:#f4f4f4;padding:0 3px;border-radius:3px}
nav a{margin-right:12px}
"#;

/// The whole page.
pub fn render(root: &Path, runs: &[Stored], warnings: &[String], view: &View) -> String {
    let latest = latest_by_kind(runs);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>capbench report</title><style>{CSS}</style></head><body>\n"
    );
    let _ = writeln!(
        h,
        "<h1>capbench report</h1><p class=\"sub\">Generated {} from {} run record(s) in <code>{}</code>. \
         Rebuild with <code>cargo run --release --bin report</code>.</p>",
        esc(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        runs.len(),
        esc(&root.join("runs").display().to_string())
    );
    h.push_str(
        "<nav><a href=\"#verdicts\">Verdicts</a><a href=\"#hnsw\">HNSW</a><a href=\"#capacity\">Capacity</a>\
         <a href=\"#http\">HTTP</a><a href=\"#limiter\">Rate limiter</a><a href=\"#history\">History</a>\
         <a href=\"#comparison\">Comparison</a><a href=\"#environment\">Environment</a>\
         <a href=\"#criterion\">Criterion</a><a href=\"#all\">All figures</a></nav>\n",
    );
    for w in warnings {
        let _ = writeln!(h, "<p class=\"warn\">{}</p>", esc(w));
    }
    if runs.is_empty() {
        h.push_str(
            "<p>No run records yet. Run <code>cargo bench</code> (or <code>CAPBENCH_QUICK=1 cargo bench</code> \
             for a smoke run); each bench writes its record and rebuilds this page.</p>",
        );
    }
    verdicts(&mut h, &latest, view);
    hnsw_section(&mut h, latest.get("hnsw").copied());
    capacity_section(&mut h, &latest);
    http_section(
        &mut h,
        latest.get("http_search").copied(),
        latest.get("hnsw").copied(),
    );
    limiter_section(&mut h, latest.get("rate_limit").copied());
    history_section(&mut h, runs, &latest);
    comparison_section(&mut h, view);
    environment_section(&mut h, &latest);
    criterion_section(&mut h, root, &latest);
    all_figures(&mut h, &latest);
    h.push_str("</body></html>\n");
    h
}

fn quick_badge(s: &Stored) -> &'static str {
    if is_quick(&s.record) {
        " <span class=\"badge quick\">quick mode — smoke run, not a measurement</span>"
    } else {
        ""
    }
}

fn source_line(h: &mut String, s: &Stored) {
    let _ = writeln!(
        h,
        "<p class=\"note\">From <code>{}</code>, {}{}.</p>",
        esc(&s.label()),
        esc(&s.record.created_at),
        quick_badge(s)
    );
}

fn chart_html(h: &mut String, svg: Result<String>) {
    match svg {
        Ok(svg) => {
            h.push_str("<div class=\"chart\">");
            // Drop the XML prolog, if any, so the SVG can sit inside HTML.
            let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
            h.push_str(body);
            h.push_str("</div>\n");
        }
        Err(e) => {
            let _ = writeln!(
                h,
                "<p class=\"warn\">chart not drawn: {}</p>",
                esc(&crate::one_line(&e))
            );
        }
    }
}

fn metric(e: &ResultEntry, name: &str) -> Option<f64> {
    e.metrics.get(name).copied().filter(|v| v.is_finite())
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(
        || "<td class=\"n\">-</td>".into(),
        |v| format!("<td class=\"n\">{}</td>", number(v)),
    )
}

fn pass_cell(pass: bool) -> &'static str {
    if pass {
        "<td class=\"pass\">PASS</td>"
    } else {
        "<td class=\"fail\">FAIL</td>"
    }
}

fn rows_of(s: &Stored) -> Option<u64> {
    s.record
        .dataset
        .as_ref()?
        .get("params")?
        .get("rows")?
        .as_u64()
}

// ---------------------------------------------------------------------------------------------
// Verdicts

fn verdicts(h: &mut String, latest: &BTreeMap<String, &Stored>, view: &View) {
    h.push_str("<h2 id=\"verdicts\">Verdicts</h2>\n");
    if latest.is_empty() {
        h.push_str("<p>Nothing measured yet.</p>");
        return;
    }
    h.push_str(
        "<p class=\"note\">The launch gates checked on each kind's latest run: the seeds' p99 &lt; 50 ms, \
         the limiter's promises and an error rate under 1 % (the service's overhead is reported as a ratio \
         under Search over HTTP, not gated).</p>\
         <div class=\"scroll\"><table><tr><th>gate</th><th>run</th><th>passed</th><th>result</th><th>failing</th></tr>\n",
    );
    for (kind, s) in latest {
        let mut groups: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
        for Finding { entry, gate } in gates_of(&s.record) {
            let g = groups.entry(gate.name.clone()).or_default();
            g.0 += 1;
            if !gate.pass {
                g.1.push(entry);
            }
        }
        let scale = match rows_of(s) {
            Some(r) if r < 100_000 => format!(" (at {r} rows; the seeds' gate is at 100K)"),
            _ => String::new(),
        };
        for (gate, (total, failing)) in groups {
            let _ = writeln!(
                h,
                "<tr><td>{}{}</td><td>{}{}</td><td class=\"n\">{}/{}</td>{}<td>{}</td></tr>",
                esc(&gate),
                if gate.contains("50 ms") {
                    esc(&scale)
                } else {
                    String::new()
                },
                esc(kind),
                if is_quick(&s.record) { " (quick)" } else { "" },
                total - failing.len(),
                total,
                pass_cell(failing.is_empty()),
                esc(&failing.join(", "))
            );
        }
    }
    h.push_str("</table></div>\n");
    if !view.comparisons.is_empty() {
        let count = |v: Verdict| -> usize { view.comparisons.iter().map(|c| c.count(v)).sum() };
        let (r, i, n, u) = (
            count(Verdict::Regressed),
            count(Verdict::Improved),
            count(Verdict::NoChange),
            count(Verdict::NotEnoughRuns),
        );
        let _ = writeln!(
            h,
            "<p><b>{}</b> (benchmarks): <span class=\"badge {}\">{r} regressed</span> <span class=\"badge improved\">{i} improved</span> \
             {n} no change{} — details in <a href=\"#comparison\">Comparison</a>.</p>",
            esc(&view.comparison_title),
            if r > 0 { "regressed" } else { "nochange" },
            if u > 0 {
                format!(", <span class=\"badge unjudged\">{u} not enough runs to judge</span>")
            } else {
                String::new()
            }
        );
        for c in &view.comparisons {
            let _ = writeln!(
                h,
                "<p class=\"noise\">{}: {}</p>",
                esc(&c.kind),
                esc(&c.noise.text())
            );
        }
        for c in &view.comparisons {
            for m in c.regressions() {
                let _ = writeln!(
                    h,
                    "<p class=\"warn\">regressed: {} {} {} → {} ({})</p>",
                    esc(&m.entry),
                    esc(&m.metric),
                    number(m.baseline),
                    number(m.current),
                    esc(&m.change_text())
                );
            }
        }
    }
    for n in &view.comparison_notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }
}

// ---------------------------------------------------------------------------------------------
// HNSW

/// (group, ef_search) of an entry named `<group>/ef_search/<ef>`.
fn ef_entry(e: &ResultEntry) -> Option<(&str, f64)> {
    let (group, ef) = e.name.split_once("/ef_search/")?;
    Some((group, metric(e, "ef_search").or_else(|| ef.parse().ok())?))
}

fn by_group(r: &RunRecord) -> BTreeMap<&str, Vec<(f64, &ResultEntry)>> {
    let mut groups: BTreeMap<&str, Vec<(f64, &ResultEntry)>> = BTreeMap::new();
    for e in &r.results {
        if let Some((g, ef)) = ef_entry(e) {
            groups.entry(g).or_default().push((ef, e));
        }
    }
    for v in groups.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    groups
}

fn series_of(entries: &[(f64, &ResultEntry)], m: &str) -> Vec<(f64, f64)> {
    entries
        .iter()
        .filter_map(|(x, e)| Some((*x, metric(e, m)?)))
        .collect()
}

fn hnsw_section(h: &mut String, s: Option<&Stored>) {
    h.push_str("<h2 id=\"hnsw\">HNSW: latency and recall per ef_search</h2>\n");
    let Some(s) = s else {
        h.push_str("<p>No hnsw record yet (<code>cargo bench hnsw</code>).</p>");
        return;
    };
    source_line(h, s);
    let groups = by_group(&s.record);
    let mut lat = Chart {
        title: "Search latency vs ef_search (gate: p99 < 50 ms)".into(),
        x_label: "hnsw.ef_search (log scale)".into(),
        y_label: "latency (ms, log scale)".into(),
        log_x: true,
        log_y: true,
        hlines: vec![(super::GATE_P99_MS, "gate: p99 < 50 ms".into())],
        ..Chart::default()
    };
    let mut recall = Chart {
        title: "recall@10 vs ef_search".into(),
        x_label: "hnsw.ef_search (log scale)".into(),
        y_label: "recall@10 (fraction of true top-10)".into(),
        log_x: true,
        y_range: Some((0.0, 1.04)),
        legend_lower_right: true,
        ..Chart::default()
    };
    let mut trade = Chart {
        title: "Recall–throughput trade-off (one point per ef_search)".into(),
        x_label: "mean recall@10".into(),
        y_label: "queries per second (one connection)".into(),
        log_y: true,
        ..Chart::default()
    };
    for (i, (group, entries)) in groups.iter().enumerate() {
        let dash = if i == 0 {
            Style::LinePoints
        } else {
            Style::Dashed
        };
        lat.series.push(Series::new(
            format!("{group} p50"),
            series_of(entries, "p50_ms"),
            dash,
            color(2 * i),
        ));
        lat.series.push(Series::new(
            format!("{group} p99"),
            series_of(entries, "p99_ms"),
            dash,
            color(1 + 2 * i),
        ));
        recall.series.push(Series::new(
            format!("{group} mean"),
            series_of(entries, "recall_mean"),
            dash,
            color(2 * i),
        ));
        recall.series.push(Series::new(
            format!("{group} worst query"),
            series_of(entries, "recall_min"),
            Style::Points,
            color(1 + 2 * i),
        ));
        let pts: Vec<(f64, f64)> = entries
            .iter()
            .filter_map(|(_, e)| Some((metric(e, "recall_mean")?, metric(e, "qps")?)))
            .collect();
        trade
            .series
            .push(Series::new(*group, pts, Style::LinePoints, color(2 * i)));
        if i == 0 {
            for (ef, e) in entries {
                if let (Some(r), Some(q)) = (metric(e, "recall_mean"), metric(e, "qps")) {
                    // Points that (nearly) coincide share one label instead of overlapping.
                    match trade
                        .notes
                        .iter_mut()
                        .find(|((nr, nq), _)| (nr - r).abs() < 0.01 && (nq / q - 1.0).abs() < 0.08)
                    {
                        Some((_, text)) => {
                            let _ = write!(text, ", {ef}");
                        }
                        None => trade.notes.push(((r, q), format!("ef {ef}"))),
                    }
                }
            }
        }
    }
    h.push_str("<div class=\"charts\">");
    chart_html(h, charts::render(&lat));
    chart_html(h, charts::render(&recall));
    chart_html(h, charts::render(&trade));
    h.push_str("</div>\n<div class=\"scroll\"><table><tr><th>benchmark</th><th>criterion median</th><th>p50</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>QPS</th><th>recall@10</th><th>worst</th><th>p99 &lt; 50 ms</th></tr>\n");
    for e in &s.record.results {
        let gate = e.gates.first().map_or("<td>-</td>", |g| pass_cell(g.pass));
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{}{}{}{}{}{}{}{}{}{gate}</tr>",
            esc(&e.name),
            cell(metric(e, "criterion_median_ms")),
            cell(metric(e, "p50_ms")),
            cell(metric(e, "p95_ms")),
            cell(metric(e, "p99_ms")),
            cell(metric(e, "p999_ms")),
            cell(metric(e, "max_ms")),
            cell(metric(e, "qps")),
            cell(metric(e, "recall_mean")),
            cell(metric(e, "recall_min")),
        );
    }
    h.push_str("</table></div><p class=\"note\">Latencies in ms from one pass over the query set (HDR histogram); recall@10 against the exact top-10.</p>\n");
}

// ---------------------------------------------------------------------------------------------
// Capacity and load

/// One sweep of a record: its levels `<group>/<unit>/<n>` in order, and its `<group>/knee` entry.
struct Sweep<'a> {
    /// The name's prefix (`capacity`, `capacity_db`, `load`).
    group: String,
    /// "users" or "connections".
    unit: &'static str,
    levels: Vec<(f64, &'a ResultEntry)>,
    knee: Option<&'a ResultEntry>,
}

/// The sweeps of a record (the capacity bench has two: users of the service, connections to the
/// database), in the order they appear.
fn sweeps(r: &RunRecord) -> Vec<Sweep<'_>> {
    let mut out: Vec<Sweep> = Vec::new();
    for e in &r.results {
        for unit in ["users", "connections"] {
            let Some((group, n)) = e.name.rsplit_once(&format!("/{unit}/")) else {
                continue;
            };
            let Some(n) = metric(e, unit).or_else(|| n.parse().ok()) else {
                continue;
            };
            match out.iter_mut().find(|s| s.group == group && s.unit == unit) {
                Some(s) => s.levels.push((n, e)),
                None => out.push(Sweep {
                    group: group.to_string(),
                    unit,
                    levels: vec![(n, e)],
                    knee: r.results.iter().find(|k| k.name == format!("{group}/knee")),
                }),
            }
        }
    }
    for s in &mut out {
        s.levels.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Throughput and latency against the sweep's levels, with its knee.
fn sweep_charts(h: &mut String, sweep: &Sweep) {
    let (levels, knee, unit) = (&sweep.levels, sweep.knee, sweep.unit);
    let axis = if unit == "users" {
        "concurrent users"
    } else {
        "connections"
    };
    let knee_key = format!("knee_{unit}");
    let _ = writeln!(h, "<h4>{} — {axis}</h4>", esc(&sweep.group));
    let slo = knee
        .and_then(|k| metric(k, "slo_p99_ms"))
        .unwrap_or(super::GATE_P99_MS);
    let mut qps = Chart {
        title: format!("Throughput vs {axis}"),
        x_label: axis.into(),
        y_label: "requests per second".into(),
        y_from_zero: true,
        series: vec![Series::new(
            "achieved RPS",
            series_of(levels, "rps"),
            Style::LinePoints,
            color(0),
        )],
        ..Chart::default()
    };
    let p99 = series_of(levels, "p99_ms");
    let wide = {
        let ys: Vec<f64> = p99.iter().map(|p| p.1).filter(|v| *v > 0.0).collect();
        let (lo, hi) = ys
            .iter()
            .fold((f64::MAX, 0.0f64), |a, v| (a.0.min(*v), a.1.max(*v)));
        hi / lo.max(1e-9) > 20.0
    };
    let mut lat = Chart {
        title: format!("Latency vs {axis} (SLO: p99 ≤ {} ms)", number(slo)),
        x_label: axis.into(),
        y_label: if wide {
            "latency (ms, log scale)".into()
        } else {
            "latency (ms)".into()
        },
        log_y: wide,
        y_from_zero: !wide,
        series: vec![
            Series::new(
                "p50",
                series_of(levels, "p50_ms"),
                Style::LinePoints,
                color(0),
            ),
            Series::new("p99", p99, Style::LinePoints, color(1)),
        ],
        hlines: vec![(slo, format!("SLO p99 < {} ms", number(slo)))],
        ..Chart::default()
    };
    if let Some(k) = knee
        && let (Some(u), Some(r), Some(p)) = (
            metric(k, &knee_key),
            metric(k, "knee_rps"),
            metric(k, "knee_p99_ms"),
        )
    {
        qps.notes
            .push(((u, r), format!("knee: {u:.0} {unit}, {r:.0} RPS")));
        lat.notes
            .push(((u, p), format!("knee: p99 {} ms", number(p))));
    }
    h.push_str("<div class=\"charts\">");
    chart_html(h, charts::render(&qps));
    chart_html(h, charts::render(&lat));
    h.push_str("</div>");
    match knee {
        Some(k) if metric(k, &knee_key).is_some() => {
            let _ = writeln!(
                h,
                "<p><b>Knee</b>: the most {unit} that still meet p99 &lt; {} ms: {:.0} {unit} at {:.0} RPS (p99 {} ms).</p>",
                number(slo),
                metric(k, &knee_key).unwrap_or(0.0),
                metric(k, "knee_rps").unwrap_or(0.0),
                number(metric(k, "knee_p99_ms").unwrap_or(0.0)),
            );
        }
        Some(_) => {
            let _ = writeln!(
                h,
                "<p class=\"warn\"><b>Knee</b>: no level met p99 &lt; {} ms.</p>",
                number(slo)
            );
        }
        None => {}
    }
}

fn capacity_section(h: &mut String, latest: &BTreeMap<String, &Stored>) {
    h.push_str("<h2 id=\"capacity\">Capacity: throughput and p99 vs concurrency</h2>\n");
    let mut any = false;
    for kind in ["capacity", "load"] {
        let Some(s) = latest.get(kind).copied() else {
            continue;
        };
        any = true;
        let _ = writeln!(h, "<h3>{kind}</h3>");
        source_line(h, s);
        for sweep in sweeps(&s.record) {
            sweep_charts(h, &sweep);
        }
        // Per-second series of each entry.
        let mut rps = Chart {
            title: "Throughput over time".into(),
            x_label: "time since start (s)".into(),
            y_label: "requests per second".into(),
            y_from_zero: true,
            ..Chart::default()
        };
        let mut p99 = Chart {
            title: "p99 over time (per second)".into(),
            x_label: "time since start (s)".into(),
            y_label: "p99 latency (ms)".into(),
            y_from_zero: true,
            ..Chart::default()
        };
        for (i, e) in s.record.results.iter().enumerate() {
            if let Some(pts) = e.series.get("rps_per_second") {
                rps.series
                    .push(Series::new(&e.name, pts.clone(), Style::Line, color(i)));
            }
            if let Some(pts) = e.series.get("p99_ms_per_second") {
                p99.series
                    .push(Series::new(&e.name, pts.clone(), Style::Line, color(i)));
            }
        }
        if !rps.series.is_empty() || !p99.series.is_empty() {
            h.push_str("<div class=\"charts\">");
            if !rps.series.is_empty() {
                chart_html(h, charts::render(&rps));
            }
            if !p99.series.is_empty() {
                chart_html(h, charts::render(&p99));
            }
            h.push_str("</div>");
        }
        let spectra: Vec<(&ResultEntry, hdrhistogram::Histogram<u64>)> = s
            .record
            .results
            .iter()
            .filter(|e| !e.name.contains("/users/"))
            .filter_map(|e| Some((e, record::decode_histogram(e.histogram.as_ref()?).ok()?)))
            .collect();
        if !spectra.is_empty() {
            h.push_str("<div class=\"charts\">");
            chart_html(
                h,
                spectrum_chart(&format!("{kind}: latency by percentile"), &spectra),
            );
            h.push_str("</div>");
        }
        latency_table(h, &s.record, &["users", "rps", "error_rate"]);
    }
    if !any {
        h.push_str("<p>No capacity or load record yet (<code>cargo bench capacity</code>, <code>cargo run --release --bin load</code>).</p>");
    }
}

/// Table of latency figures plus some extra metrics, one row per entry that has a p50.
fn latency_table(h: &mut String, r: &RunRecord, extra: &[&str]) {
    let _ = write!(h, "<div class=\"scroll\"><table><tr><th>entry</th>");
    for x in extra {
        let _ = write!(h, "<th>{}</th>", esc(x));
    }
    h.push_str("<th>p50 ms</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>gates</th></tr>\n");
    for e in r
        .results
        .iter()
        .filter(|e| e.metrics.contains_key("p50_ms"))
    {
        let _ = write!(h, "<tr><td>{}</td>", esc(&e.name));
        for x in extra {
            h.push_str(&cell(metric(e, x)));
        }
        for m in ["p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"] {
            h.push_str(&cell(metric(e, m)));
        }
        let gates: Vec<String> = e
            .gates
            .iter()
            .map(|g| format!("{}: {}", g.name, if g.pass { "PASS" } else { "FAIL" }))
            .collect();
        let _ = writeln!(h, "<td>{}</td></tr>", esc(&gates.join("; ")));
    }
    h.push_str("</table></div>\n");
}

/// x = "nines" (−log10(1 − q)), so 90 %, 99 %, 99.9 % are evenly spaced.
fn nines_label(v: f64) -> String {
    if (v - v.round()).abs() > 1e-9 {
        return String::new();
    }
    let q = (1.0 - 10f64.powf(-v)) * 100.0;
    let s = if q >= 99.0 {
        format!("{q:.2}")
    } else {
        format!("{q:.1}")
    };
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

fn spectrum_chart(
    title: &str,
    hists: &[(&ResultEntry, hdrhistogram::Histogram<u64>)],
) -> Result<String> {
    let mut c = Chart {
        title: title.to_string(),
        x_label: "percentile (log scale of 1 − q)".into(),
        y_label: "latency (ms, log scale)".into(),
        log_y: true,
        x_format: Some(nines_label),
        legend_lower_right: true,
        ..Chart::default()
    };
    for (i, (e, hist)) in hists.iter().enumerate() {
        if hist.is_empty() {
            continue;
        }
        let top = (hist.len() as f64).log10().clamp(1.0, 5.0);
        let pts: Vec<(f64, f64)> = (0..=(top * 20.0) as usize)
            .map(|k| {
                let v = k as f64 / 20.0;
                let q = 1.0 - 10f64.powf(-v);
                (v, hist.value_at_quantile(q) as f64 / 1e6)
            })
            .collect();
        c.series
            .push(Series::new(&e.name, pts, Style::Line, color(i)));
    }
    charts::render(&c)
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn http_section(h: &mut String, s: Option<&Stored>, hnsw: Option<&Stored>) {
    h.push_str("<h2 id=\"http\">Search over HTTP: percentile spectrum, SQL vs service</h2>\n");
    let Some(s) = s else {
        h.push_str("<p>No http_search record yet (<code>cargo bench http_search</code>).</p>");
        return;
    };
    source_line(h, s);
    let mut hists: Vec<(&ResultEntry, hdrhistogram::Histogram<u64>)> = s
        .record
        .results
        .iter()
        .filter_map(|e| Some((e, record::decode_histogram(e.histogram.as_ref()?).ok()?)))
        .collect();
    // The raw SQL at the same ef_search, from the hnsw bench, for scale.
    if let Some(hn) = hnsw {
        let efs: BTreeSet<u64> = s
            .record
            .results
            .iter()
            .filter_map(|e| metric(e, "ef_search"))
            .map(|v| v as u64)
            .collect();
        for e in &hn.record.results {
            if ef_entry(e).is_some_and(|(g, ef)| g == "hnsw" && efs.contains(&(ef as u64)))
                && let Some(hist) = e
                    .histogram
                    .as_ref()
                    .and_then(|t| record::decode_histogram(t).ok())
            {
                hists.push((e, hist));
            }
        }
    }
    let split: Vec<&ResultEntry> = s
        .record
        .results
        .iter()
        .filter(|e| e.metrics.contains_key("sql_p50_ms"))
        .collect();
    h.push_str("<div class=\"charts\">");
    if !hists.is_empty() {
        chart_html(
            h,
            spectrum_chart("Search latency by percentile (HTTP vs SQL alone)", &hists),
        );
    }
    if !split.is_empty() {
        let cats: Vec<String> = split
            .iter()
            .map(|e| {
                ef_entry(e).map_or_else(|| e.name.clone(), |(_, ef)| format!("ef_search {ef}"))
            })
            .collect();
        let sql: Vec<f64> = split
            .iter()
            .map(|e| metric(e, "sql_p50_ms").unwrap_or(0.0))
            .collect();
        let over: Vec<f64> = split
            .iter()
            .map(|e| metric(e, "overhead_p50_ms").unwrap_or(0.0).max(0.0))
            .collect();
        chart_html(
            h,
            charts::stacked_bars(
                "Where a search's p50 goes: SQL vs the service",
                "p50 latency (ms)",
                &cats,
                &[
                    ("SQL (THE search query)".into(), sql, color(0)),
                    (
                        "service: HTTP, auth, limiter, embedding, re-rank".into(),
                        over,
                        color(1),
                    ),
                ],
            ),
        );
    }
    h.push_str("</div>");
    overhead_table(h, &s.record);
    latency_table(
        h,
        &s.record,
        &["rps", "sql_p50_ms", "overhead_p50_ms", "overhead_ratio"],
    );
}

/// The service's overhead as a ratio to its SQL at each ef_search, the 429 path's cost beside it.
/// Reported, not gated (an absolute budget in ms would judge the machine more than the service).
fn overhead_table(h: &mut String, r: &RunRecord) {
    let rows: Vec<(&ResultEntry, f64, f64)> = r
        .results
        .iter()
        .filter_map(|e| {
            let sql = metric(e, "sql_p50_ms").filter(|v| *v > 0.0)?;
            Some((e, metric(e, "p50_ms")?, sql))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    h.push_str(
        "<h3 id=\"overhead\">Service overhead: a ratio to the SQL, the 429 path beside it</h3>\n\
         <p class=\"note\">service p50 / raw SQL p50 at the same ef_search (THE search query alone, \
         interleaved with the requests, on a connection like the service's). Reported, not gated: \
         the milliseconds depend on the machine as much as on the service, the ratio compares \
         across machines.</p>\n<div class=\"scroll\"><table><tr><th>entry</th><th>service p50 ms</th>\
         <th>SQL p50 ms</th><th>overhead ms</th><th>service / SQL</th></tr>\n",
    );
    for (e, p50, sql) in rows {
        let ratio = metric(e, "overhead_ratio").unwrap_or(p50 / sql);
        let _ = writeln!(
            h,
            "<tr><td>{}</td>{}{}{}<td class=\"n\">{ratio:.2}×</td></tr>",
            esc(&e.name),
            cell(Some(p50)),
            cell(Some(sql)),
            cell(Some(p50 - sql)),
        );
    }
    match r.results.iter().find(|e| e.name.ends_with("/rejected")) {
        Some(e) => {
            let _ = writeln!(
                h,
                "<tr><td>a 429 ({})</td>{}<td colspan=\"3\">{}</td></tr>",
                esc(&e.name),
                cell(metric(e, "p50_ms")),
                metric(e, "server_total_p50_ms").map_or_else(
                    || "end to end (the answer carries no Server-Timing)".into(),
                    |t| format!(
                        "{} ms of it in the service (Server-Timing total)",
                        number(t)
                    )
                ),
            );
        }
        None => h.push_str(
            "<tr><td colspan=\"5\">The 429 path was not measured in this run \
             (http_search/rejected).</td></tr>\n",
        ),
    }
    h.push_str("</table></div>\n");
}

// ---------------------------------------------------------------------------------------------
// Rate limiter

const PROMISES_BY_TESTS: &[(&str, &str)] = &[
    (
        "e. a realistic agent (15 searches in 30 s at 60/min) is never blocked",
        "tests/ratelimit.rs, tests/service.rs",
    ),
    (
        "f. N ≫ C concurrent requests on a bucket of C admit exactly C",
        "tests/ratelimit.rs, tests/service.rs",
    ),
    (
        "g. deleting the key resets the bucket (never FLUSHALL)",
        "tests/ratelimit.rs, tests/service.rs",
    ),
];

fn limiter_section(h: &mut String, s: Option<&Stored>) {
    h.push_str("<h2 id=\"limiter\">Rate limiter: promises, cost, timeline</h2>\n");
    let Some(s) = s else {
        h.push_str("<p>No rate_limit record yet (<code>cargo bench rate_limit</code>).</p>");
        return;
    };
    source_line(h, s);
    let timeline = s
        .record
        .results
        .iter()
        .find(|e| e.name.ends_with("/timeline"));
    h.push_str("<h3>Promises</h3><div class=\"scroll\"><table><tr><th>promise</th><th>result</th><th>checked by</th></tr>\n");
    if let Some(t) = timeline {
        for g in &t.gates {
            let _ = writeln!(
                h,
                "<tr><td>{}</td>{}<td>this run (rate_limit bench, real Redis)</td></tr>",
                esc(&g.name),
                pass_cell(g.pass)
            );
        }
    } else {
        h.push_str("<tr><td colspan=\"3\">This record has no timeline entry (it predates it, or the filter left it out).</td></tr>");
    }
    for (p, by) in PROMISES_BY_TESTS {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"nochange\">tested</td><td>{}</td></tr>",
            esc(p),
            esc(by)
        );
    }
    h.push_str("</table></div>\n");
    if let Some(t) = timeline {
        let get = |n: &str| t.series.get(n).cloned().unwrap_or_default();
        let allowed = get("allowed");
        let remaining = get("remaining");
        let (mut ok, mut denied) = (Vec::new(), Vec::new());
        for (i, &(x, a)) in allowed.iter().enumerate() {
            let y = remaining.get(i).map_or(0.0, |p| p.1);
            if a > 0.5 {
                ok.push((x, y))
            } else {
                denied.push((x, y))
            }
        }
        let cap = metric(t, "capacity").unwrap_or(10.0);
        let tokens = Chart {
            title: format!(
                "Bucket over time: capacity {}, refill {}/s, {} attempts/s",
                number(cap),
                number(metric(t, "refill_per_second").unwrap_or(0.0)),
                number(metric(t, "send_rate").unwrap_or(0.0))
            ),
            x_label: "time since the first attempt (s)".into(),
            y_label: "tokens left after the attempt".into(),
            y_range: Some((-0.5, cap + 1.5)),
            series: vec![
                Series::new(
                    "perfect bucket (theory)",
                    get("theoretical_tokens"),
                    Style::Dashed,
                    color(7),
                ),
                Series::new("allowed (Redis)", ok, Style::Points, color(2)),
                Series::new("denied (Redis)", denied, Style::Points, color(1)),
            ],
            legend_lower_right: false,
            ..Chart::default()
        };
        let sent: Vec<(f64, f64)> = allowed
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0, (i + 1) as f64))
            .collect();
        let cumulative = Chart {
            title: "Admitted requests, cumulative: Redis vs a perfect bucket".into(),
            x_label: "time since the first attempt (s)".into(),
            y_label: "requests".into(),
            y_from_zero: true,
            series: vec![
                Series::new("sent", sent, Style::Line, color(7)),
                Series::new(
                    "admitted by Redis",
                    get("admitted_total"),
                    Style::Line,
                    color(0),
                ),
                Series::new(
                    "admitted by a perfect bucket",
                    get("theoretical_admitted_total"),
                    Style::Dashed,
                    color(1),
                ),
            ],
            ..Chart::default()
        };
        h.push_str("<div class=\"charts\">");
        chart_html(h, charts::render(&tokens));
        chart_html(h, charts::render(&cumulative));
        h.push_str("</div>");
        let _ = writeln!(
            h,
            "<p class=\"note\">{} attempts: {} allowed, {} denied; a perfect bucket at the same instants admits {}.</p>",
            number(metric(t, "attempts").unwrap_or(0.0)),
            number(metric(t, "allowed").unwrap_or(0.0)),
            number(metric(t, "denied").unwrap_or(0.0)),
            number(metric(t, "theoretical_allowed").unwrap_or(0.0)),
        );
    }
    h.push_str("<h3>Cost of a decision (EVALSHA)</h3>");
    let hists: Vec<(&ResultEntry, hdrhistogram::Histogram<u64>)> = s
        .record
        .results
        .iter()
        .filter_map(|e| Some((e, record::decode_histogram(e.histogram.as_ref()?).ok()?)))
        .collect();
    if !hists.is_empty() {
        h.push_str("<div class=\"charts\">");
        chart_html(h, spectrum_chart("Limiter latency by percentile", &hists));
        h.push_str("</div>");
    }
    latency_table(
        h,
        &s.record,
        &[
            "evals_per_second",
            "criterion_median_ms",
            "redis_benchmark_p50_ms",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// History

/// (kind, entry-name predicate, metric, y label) of the key metrics followed across runs.
fn history_metrics(kind: &str) -> Vec<(&'static str, &'static str)> {
    match kind {
        "hnsw" => vec![("p99_ms", "p99 latency (ms)"), ("recall_mean", "recall@10")],
        "http_search" => vec![
            ("p99_ms", "p99 latency (ms)"),
            ("rps", "requests per second"),
        ],
        "rate_limit" => vec![
            ("p50_ms", "p50 latency (ms)"),
            ("evals_per_second", "evaluations per second"),
        ],
        "capacity" => vec![
            ("knee_rps", "RPS at the knee"),
            ("p99_ms", "p99 latency (ms)"),
        ],
        "load" => vec![
            ("p99_ms", "p99 latency (ms)"),
            ("rps", "requests per second"),
        ],
        _ => vec![("p99_ms", "p99 latency (ms)")],
    }
}

fn history_section(h: &mut String, runs: &[Stored], latest: &BTreeMap<String, &Stored>) {
    h.push_str("<h2 id=\"history\">History across stored runs</h2>\n");
    let mut any = false;
    for (kind, last) in latest {
        let quick = is_quick(&last.record);
        let same: Vec<&Stored> = runs
            .iter()
            .filter(|s| &s.record.kind == kind && is_quick(&s.record) == quick)
            .collect();
        let same = &same[same.len().saturating_sub(40)..];
        if same.len() < 2 {
            continue;
        }
        any = true;
        let _ = writeln!(
            h,
            "<h3>{} — {} {} runs, {} to {}</h3>",
            esc(kind),
            same.len(),
            if quick { "quick-mode" } else { "full" },
            esc(&same[0].record.created_at),
            esc(&same[same.len() - 1].record.created_at)
        );
        h.push_str("<div class=\"charts\">");
        for (m, label) in history_metrics(kind) {
            let mut names: Vec<&str> = Vec::new();
            for s in same {
                for e in &s.record.results {
                    if e.metrics.contains_key(m)
                        && !names.contains(&e.name.as_str())
                        && !e.name.starts_with("hnsw_txn")
                    {
                        names.push(&e.name);
                    }
                }
            }
            if names.is_empty() {
                continue;
            }
            names.truncate(8);
            let series: Vec<Series> = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let pts = same
                        .iter()
                        .enumerate()
                        .filter_map(|(j, s)| {
                            let e = s.record.results.iter().find(|e| &e.name == name)?;
                            Some(((j + 1) as f64, metric(e, m)?))
                        })
                        .collect();
                    Series::new(*name, pts, Style::LinePoints, color(i))
                })
                .collect();
            let log_y = m.ends_with("_ms") && {
                let ys: Vec<f64> = series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|p| p.1))
                    .filter(|v| *v > 0.0)
                    .collect();
                let (lo, hi) = ys
                    .iter()
                    .fold((f64::MAX, 0.0f64), |a, v| (a.0.min(*v), a.1.max(*v)));
                hi / lo.max(1e-9) > 20.0
            };
            let chart = Chart {
                title: format!("{kind}: {label} per run"),
                x_label: "run (oldest → newest; numbers in the table below)".into(),
                y_label: if log_y {
                    format!("{label}, log scale")
                } else {
                    label.to_string()
                },
                log_y,
                y_from_zero: !log_y && m != "recall_mean",
                series,
                x_format: Some(|v| {
                    if (v - v.round()).abs() < 1e-9 {
                        format!("{v:.0}")
                    } else {
                        String::new()
                    }
                }),
                legend_lower_right: m == "recall_mean",
                ..Chart::default()
            };
            chart_html(h, charts::render(&chart));
        }
        h.push_str("</div><details><summary>runs</summary><div class=\"scroll\"><table><tr><th>run</th><th>created</th><th>git commit</th><th>record</th></tr>");
        for (j, s) in same.iter().enumerate() {
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                j + 1,
                esc(&s.record.created_at),
                esc(s.record.environment.git_commit.as_deref().unwrap_or("-")),
                esc(&s.label())
            );
        }
        h.push_str("</table></div></details>\n");
    }
    if !any {
        h.push_str("<p>History appears once a kind has two or more runs of the same mode.</p>");
    }
}

// ---------------------------------------------------------------------------------------------
// Comparison

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Regressed => "regressed",
        Verdict::Improved => "improved",
        Verdict::NoChange => "nochange",
        Verdict::NotEnoughRuns => "unjudged",
        Verdict::Info => "info",
    }
}

fn comparison_section(h: &mut String, view: &View) {
    h.push_str("<h2 id=\"comparison\">Comparison</h2>\n");
    if view.comparisons.is_empty() {
        h.push_str("<p>No comparison: save a baseline with <code>cargo bench -- --save-baseline NAME</code>, then \
                    run <code>cargo bench -- --baseline NAME</code>, or <code>cargo run --release --bin report -- --compare A,B</code>.</p>");
        for n in &view.comparison_notes {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
        }
        return;
    }
    let o = view.comparisons[0].options;
    let _ = writeln!(
        h,
        "<p><b>{}</b>. One verdict per benchmark, from its primary metrics (p50, p99, the rate; \
         recall@10 and the error rate by their absolute rules). A latency or rate change counts when it \
         is beyond ±{:.0} % <em>and</em> beyond this machine's run-to-run noise — learnt from earlier \
         comparable runs and the runs' own measurement rounds — with the false-discovery rate of all \
         the comparison's decisions held at {:.0} % (Benjamini–Hochberg). Intervals are {:.0} % \
         intervals of the relative change, between-run noise included. Without enough earlier runs \
         the verdict is <i>not enough runs to judge</i>. recall@10: beyond ±0.005 (absolute); error \
         rate: beyond ±0.001. Lower latency and higher throughput and recall are better. See \
         <code>docs/regression.md</code>.</p>",
        esc(&view.comparison_title),
        o.noise_threshold * 100.0,
        100.0 - o.confidence_percent,
        o.confidence_percent,
    );
    for c in &view.comparisons {
        let _ = writeln!(
            h,
            "<h3>{}: {} vs {}</h3><p class=\"note\">{} ({}) against {} ({}).</p>",
            esc(&c.kind),
            esc(&c.current_label),
            esc(&c.baseline_label),
            esc(&c.current_label),
            esc(&c.current_created_at),
            esc(&c.baseline_label),
            esc(&c.baseline_created_at)
        );
        let _ = writeln!(h, "<p class=\"noise\">{}</p>", esc(&c.noise.text()));
        if let Some(a) = &c.adjustment {
            let _ = writeln!(h, "<p class=\"noise\">{}</p>", esc(&a.text()));
        }
        h.push_str("<p>");
        for b in &c.benchmarks {
            let _ = write!(
                h,
                "<span class=\"badge {}\">{}: {}{}</span> ",
                verdict_class(b.verdict),
                esc(&b.entry),
                b.verdict.as_str(),
                if b.because.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", esc(&b.because.join(", ")))
                }
            );
        }
        h.push_str("</p>\n");
        if c.differences.is_empty() {
            h.push_str("<p class=\"note\">Same parameters, dataset and servers.</p>");
        } else {
            h.push_str("<p class=\"note\">What differs:</p><ul>");
            for d in &c.differences {
                let _ = write!(h, "<li><code>{}</code></li>", esc(d));
            }
            h.push_str("</ul>");
        }
        h.push_str("<div class=\"scroll\"><table><tr><th>benchmark</th><th>metric</th><th>baseline</th><th>current</th><th>change</th><th>interval</th><th>verdict</th></tr>\n");
        let mut rows: Vec<_> = c
            .changes
            .iter()
            .filter(|m| m.verdict != Verdict::Info || m.ci.is_some())
            .collect();
        rows.sort_by_key(|m| m.verdict);
        for m in rows {
            let class = verdict_class(m.verdict);
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td>{}{}<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"{class}\">{}</td></tr>",
                esc(&m.entry),
                esc(&m.metric),
                cell(Some(m.baseline)),
                cell(Some(m.current)),
                esc(&m.change_text()),
                esc(&m.ci_text()),
                if m.verdict == Verdict::Info {
                    "not judged"
                } else {
                    m.verdict.as_str()
                }
            );
        }
        for n in &c.only_in_baseline {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td colspan=\"6\" class=\"note\">only in the baseline</td></tr>",
                esc(n)
            );
        }
        for n in &c.only_in_current {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td colspan=\"6\" class=\"note\">new: not in the baseline</td></tr>",
                esc(n)
            );
        }
        h.push_str("</table></div>\n");
    }
    for n in &view.comparison_notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }
}

// ---------------------------------------------------------------------------------------------
// Environment

/// One row of the environment table: a field of a record as text.
type EnvField = Box<dyn Fn(&RunRecord) -> String>;

fn environment_section(h: &mut String, latest: &BTreeMap<String, &Stored>) {
    h.push_str("<h2 id=\"environment\">Environment</h2>\n");
    if latest.is_empty() {
        return;
    }
    h.push_str("<div class=\"scroll\"><table><tr><th></th>");
    for k in latest.keys() {
        let _ = write!(h, "<th>{}</th>", esc(k));
    }
    h.push_str("</tr>\n");
    let rows: Vec<(&str, EnvField)> = vec![
        ("created", Box::new(|r: &RunRecord| r.created_at.clone())),
        (
            "mode",
            Box::new(|r: &RunRecord| super::store::mode_name(is_quick(r)).to_string()),
        ),
        (
            "CPU",
            Box::new(|r: &RunRecord| {
                format!(
                    "{} ({} cores)",
                    r.environment.cpu_model, r.environment.cores
                )
            }),
        ),
        (
            "memory",
            Box::new(|r: &RunRecord| {
                format!(
                    "{:.1} GiB",
                    r.environment.memory_bytes as f64 / (1u64 << 30) as f64
                )
            }),
        ),
        ("OS", Box::new(|r: &RunRecord| r.environment.os.clone())),
        (
            "git commit",
            Box::new(|r: &RunRecord| {
                r.environment
                    .git_commit
                    .clone()
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "PostgreSQL",
            Box::new(|r: &RunRecord| {
                r.environment
                    .postgres_version
                    .clone()
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "pgvector",
            Box::new(|r: &RunRecord| {
                r.environment
                    .pgvector_version
                    .clone()
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "server settings",
            Box::new(|r: &RunRecord| {
                let s: Vec<String> = r
                    .environment
                    .postgres_settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if s.is_empty() {
                    "-".into()
                } else {
                    s.join(", ")
                }
            }),
        ),
        (
            "Redis",
            Box::new(|r: &RunRecord| {
                r.environment
                    .redis_version
                    .clone()
                    .unwrap_or_else(|| "-".into())
            }),
        ),
        (
            "idle CPUs",
            Box::new(|r: &RunRecord| match r.environment.cpu_dma_latency_us {
                Some(0) => "polling (cpu_dma_latency 0 µs)".into(),
                Some(us) => format!("OS idle states (cpu_dma_latency {us} µs)"),
                None => "-".into(),
            }),
        ),
        (
            "dataset",
            Box::new(|r: &RunRecord| {
                r.dataset
                    .as_ref()
                    .map_or_else(|| "-".into(), |d| d.to_string())
            }),
        ),
        (
            "parameters",
            Box::new(|r: &RunRecord| r.parameters.to_string()),
        ),
        (
            "schema_version",
            Box::new(|r: &RunRecord| r.schema_version.to_string()),
        ),
    ];
    for (name, f) in rows {
        let _ = write!(h, "<tr><th>{}</th>", esc(name));
        for s in latest.values() {
            let _ = write!(
                h,
                "<td><code>{}</code></td>",
                esc(&f(&s.record)).replace(',', ",<wbr>")
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table></div>\n");
}

// ---------------------------------------------------------------------------------------------
// Criterion

fn criterion_section(h: &mut String, root: &Path, latest: &BTreeMap<String, &Stored>) {
    h.push_str("<h2 id=\"criterion\">Criterion's reports</h2>\n<p class=\"note\">Criterion's own pages (mean/median \
                time of each benchmark, its distribution and its comparison with Criterion's baseline).</p><ul>\n");
    let mut any = false;
    for dir in ["criterion", "criterion-quick"] {
        let index = root.join(dir).join("report").join("index.html");
        if index.exists() {
            any = true;
            let _ = writeln!(
                h,
                "<li><a href=\"{dir}/report/index.html\">{dir}/report/index.html</a> (all benchmarks)</li>"
            );
        }
    }
    for s in latest.values() {
        let dir = if is_quick(&s.record) {
            "criterion-quick"
        } else {
            "criterion"
        };
        for e in &s.record.results {
            let rel = format!("{dir}/{}/report/index.html", e.name);
            if root.join(&rel).exists() {
                any = true;
                let _ = writeln!(h, "<li><a href=\"{}\">{}</a></li>", esc(&rel), esc(&e.name));
            }
        }
    }
    h.push_str("</ul>");
    if !any {
        let _ = writeln!(
            h,
            "<p class=\"note\">No Criterion report under <code>{}</code> yet (Criterion writes there when \
             <code>CRITERION_HOME</code> points at it, as the project's <code>.cargo/config.toml</code> does).</p>",
            esc(&root.join("criterion").display().to_string())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every figure

fn all_figures(h: &mut String, latest: &BTreeMap<String, &Stored>) {
    h.push_str("<h2 id=\"all\">Every figure of the latest runs</h2>\n");
    for (kind, s) in latest {
        let _ = writeln!(h, "<h3>{}</h3>", esc(kind));
        source_line(h, s);
        h.push_str("<div class=\"scroll\"><table><tr><th>entry</th><th>metrics</th><th>gates</th><th>series</th></tr>\n");
        for e in &s.record.results {
            let metrics: Vec<String> = e
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {}", number(*v)))
                .collect();
            let gates: Vec<String> = e
                .gates
                .iter()
                .map(|g| format!("{}: {}", g.name, if g.pass { "PASS" } else { "FAIL" }))
                .collect();
            let series: Vec<String> = e
                .series
                .iter()
                .map(|(k, v)| format!("{k} ({} points)", v.len()))
                .collect();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.name),
                esc(&metrics.join(", ")),
                esc(&gates.join("; ")),
                esc(&series.join(", "))
            );
        }
        h.push_str("</table></div>\n");
    }
}
