//! HNSW: latency and recall per ef_search, and the recall–throughput trade-off.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, pass_cell, section_of, side_by_side};
use crate::record::{Kind, Metric, ResultEntry, RunRecord, Stat};

/// What the section shows: nothing without an hnsw record.
#[derive(Debug, Clone, PartialEq)]
pub struct Hnsw(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    /// Latency, recall, the trade-off.
    pub charts: Vec<Figure>,
    /// The query distributions scored besides the held-out one (a column each).
    pub others: Vec<Text>,
    pub rows: Vec<Row>,
}

/// One benchmark: criterion median, p50, p95, p99, p99.9, max, QPS, held-out recall and worst,
/// each other distribution's recall; its gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: Text,
    pub cells: Vec<Num>,
    pub gate: Option<bool>,
}

/// (group, ef_search) of an entry named `<group>/ef_search/<ef>`.
pub fn ef_entry(e: &ResultEntry) -> Option<(&str, f64)> {
    let (group, ef) = e.name.split_once("/ef_search/")?;
    Some((
        group,
        e.metric(&Metric::EfSearch).or_else(|| ef.parse().ok())?,
    ))
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

/// The (x, metric `m`) points of entries keyed by x.
pub fn series_of(entries: &[(f64, &ResultEntry)], m: &Metric) -> Vec<(f64, f64)> {
    entries
        .iter()
        .filter_map(|(x, e)| Some((*x, e.metric(m)?)))
        .collect()
}

/// The other query distributions a record scored (`recall_mean_<distribution>`), in name order:
/// its `recall_mean` is the held-out set's.
pub fn other_distributions(r: &RunRecord) -> Vec<String> {
    let mut out: Vec<String> = r
        .results
        .iter()
        .flat_map(|e| e.metrics.keys())
        .filter_map(|m| match m {
            Metric::RecallMeanOf(d) if d != "heldout" => Some(d.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The three charts of a record's ef_search groups: latency, recall per query distribution, and
/// the recall–throughput trade-off per distribution.
fn charts_of(r: &RunRecord) -> Vec<Figure> {
    let others = other_distributions(r);
    let mut lat = Chart {
        title: "Search latency vs ef_search (gate: p99 < 50 ms)".into(),
        x_label: "hnsw.ef_search (log scale)".into(),
        y_label: "latency (ms, log scale)".into(),
        log_x: true,
        log_y: true,
        hlines: vec![(super::super::GATE_P99_MS, "gate: p99 < 50 ms".into())],
        ..Chart::default()
    };
    let mut recall = Chart {
        title: "recall@10 vs ef_search, per query distribution (serial)".into(),
        x_label: "hnsw.ef_search (log scale)".into(),
        y_label: "recall@10 (fraction of true top-10)".into(),
        log_x: true,
        y_range: Some((0.0, 1.04)),
        legend_lower_right: true,
        ..Chart::default()
    };
    let mut trade = Chart {
        title: "Recall–throughput trade-off per query distribution (one point per ef_search)"
            .into(),
        x_label: "mean recall@10".into(),
        y_label: "queries per second (one connection)".into(),
        log_y: true,
        ..Chart::default()
    };
    for (i, (group, entries)) in by_group(r).iter().enumerate() {
        let dash = if i == 0 {
            Style::LinePoints
        } else {
            Style::Dashed
        };
        lat.series.push(Series::new(
            format!("{group} p50"),
            series_of(entries, &Metric::P50_MS),
            dash,
            color(2 * i),
        ));
        lat.series.push(Series::new(
            format!("{group} p99"),
            series_of(entries, &Metric::P99_MS),
            dash,
            color(1 + 2 * i),
        ));
        recall.series.push(Series::new(
            format!("{group} heldout mean"),
            series_of(entries, &Metric::RecallMean),
            dash,
            color(2 * i),
        ));
        recall.series.push(Series::new(
            format!("{group} heldout worst query"),
            series_of(entries, &Metric::RecallMin),
            Style::Points,
            color(1 + 2 * i),
        ));
        let pts: Vec<(f64, f64)> = entries
            .iter()
            .filter_map(|(_, e)| Some((e.metric(&Metric::RecallMean)?, e.metric(&Metric::Qps)?)))
            .collect();
        trade.series.push(Series::new(
            format!("{group} heldout"),
            pts,
            Style::LinePoints,
            color(2 * i),
        ));
        // The other distributions' recall, on the first group: a query's latency hardly depends
        // on where it lies, its recall does.
        if i == 0 {
            for (j, d) in others.iter().enumerate() {
                let m = Metric::RecallMeanOf(d.clone());
                recall.series.push(Series::new(
                    format!("{group} {d} mean"),
                    series_of(entries, &m),
                    Style::LinePoints,
                    color(4 + j),
                ));
                let pts: Vec<(f64, f64)> = entries
                    .iter()
                    .filter_map(|(_, e)| Some((e.metric(&m)?, e.metric(&Metric::Qps)?)))
                    .collect();
                trade.series.push(Series::new(
                    format!("{group} {d}"),
                    pts,
                    Style::LinePoints,
                    color(4 + j),
                ));
            }
        }
        if i == 0 {
            for (ef, e) in entries {
                if let (Some(r), Some(q)) = (e.metric(&Metric::RecallMean), e.metric(&Metric::Qps))
                {
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
    vec![Figure::xy(lat), Figure::xy(recall), Figure::xy(trade)]
}

impl Hnsw {
    pub fn of(s: Option<&Stored>) -> Self {
        Self(s.map(|s| {
            let others = other_distributions(&s.record);
            Shown {
                source: Source::of(s),
                charts: charts_of(&s.record),
                others: others.iter().map(Text::new).collect(),
                rows: s
                    .record
                    .results
                    .iter()
                    .map(|e| Row {
                        name: Text::new(&e.name),
                        cells: [
                            Metric::CriterionMedianMs,
                            Metric::P50_MS,
                            Metric::P95_MS,
                            Metric::P99_MS,
                            Metric::Latency(Stat::P999),
                            Metric::Latency(Stat::Max),
                            Metric::Qps,
                            Metric::RecallMean,
                            Metric::RecallMin,
                        ]
                        .into_iter()
                        .chain(others.iter().map(|d| Metric::RecallMeanOf(d.clone())))
                        .map(|m| Num::metric(e, &m))
                        .collect(),
                        gate: e.gates.first().map(|g| g.pass),
                    })
                    .collect(),
            }
        }))
    }
}

impl Render for Hnsw {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| {
            html! {
            (s.source)
            (side_by_side(&s.charts))
            div.scroll { table {
                tr {
                    th { "benchmark" } th { "criterion median" } th { "p50" } th { "p95" }
                    th { "p99" } th { "p99.9" } th { "max" } th { "QPS" }
                    th { "recall@10 heldout" } th { "worst" }
                    @for d in &s.others { th { "recall@10 " (d) } }
                    th { "p99 < 50 ms" }
                }
                @for r in &s.rows {
                    tr {
                        td { (r.name) }
                        @for c in &r.cells { (c) }
                        @match r.gate { Some(pass) => (pass_cell(pass)), None => td { "-" } }
                    }
                }
            } }
            p.note {
                "Latencies in ms and QPS from passes over the held-out query set (HDR histogram, \
                 one connection); recall@10 against the exact top-10 of each query distribution, \
                 serial, no filter: heldout = new draws from the data's own distribution, \
                 near-duplicate = stored rows plus noise (cosine ≈ 0.9), ood = noise around \
                 midpoints of two clusters (docs/recall.md)."
            }
            }
        });
        section_of(
            "hnsw",
            "HNSW: latency and recall per ef_search",
            Kind::Hnsw,
            content,
        )
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Environment, Parameters};

    #[test]
    fn every_query_distribution_has_its_recall_curve_trade_off_and_column() {
        let mut r = RunRecord::new(Environment::default(), Parameters::of(Kind::Hnsw));
        for (ef, heldout, ood) in [(16.0, 0.8, 0.6), (64.0, 0.95, 0.85)] {
            r.results.push(ResultEntry {
                name: format!("hnsw/ef_search/{ef}"),
                metrics: [
                    (Metric::EfSearch, ef),
                    (Metric::Qps, 1000.0 / ef),
                    (Metric::RecallMean, heldout),
                    (Metric::RecallMeanOf("heldout".into()), heldout),
                    (Metric::RecallMeanOf("ood".into()), ood),
                ]
                .into(),
                ..ResultEntry::default()
            });
        }
        assert_eq!(other_distributions(&r), vec!["ood".to_string()]);
        let charts = charts_of(&r);
        let series = |f: &Figure, label: &str| match f {
            Figure::Xy(c) => c
                .series
                .iter()
                .find(|s| s.label == label)
                .map(|s| s.points.clone()),
            _ => None,
        };
        assert_eq!(
            series(&charts[1], "hnsw ood mean"),
            Some(vec![(16.0, 0.6), (64.0, 0.85)])
        );
        assert_eq!(
            series(&charts[2], "hnsw ood"),
            Some(vec![(0.6, 1000.0 / 16.0), (0.85, 1000.0 / 64.0)])
        );
        assert_eq!(
            series(&charts[2], "hnsw heldout"),
            Some(vec![(0.8, 1000.0 / 16.0), (0.95, 1000.0 / 64.0)])
        );
        let html = Hnsw::of(None).0.is_none();
        assert!(html, "no record, nothing shown");
    }
}
