//! History: each kind's key metrics across its stored runs of the same mode.

use std::collections::BTreeMap;

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, Ticks, color};
use super::super::store::Stored;
use super::helpers::{Figure, Text, side_by_side};
use crate::record::{self, Metric, Unit};

/// At most this many runs of a kind are followed.
const RUNS: usize = 40;
/// At most this many entries per chart.
const ENTRIES: usize = 8;

/// What the section shows: the kinds with two or more runs of the latest run's mode.
#[derive(Debug, Clone, PartialEq)]
pub struct History(pub Vec<Kind>);

#[derive(Debug, Clone, PartialEq)]
pub struct Kind {
    /// `hnsw — 5 full runs, … to …`.
    pub heading: Text,
    pub charts: Vec<Figure>,
    pub runs: Vec<Run>,
}

/// One run in the runs table (numbered as on the charts' x axis).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub created: Text,
    pub git_commit: Text,
    pub record: Text,
}

/// (metric, y label) of the key metrics followed across runs.
fn history_metrics(kind: record::Kind) -> [(Metric, &'static str); 2] {
    let p99 = (Metric::P99_MS, "p99 latency (ms)");
    match kind {
        record::Kind::Hnsw | record::Kind::HnswFiltered | record::Kind::Variants => {
            [p99, (Metric::RecallMean, "recall@10")]
        }
        record::Kind::HttpSearch | record::Kind::Load => {
            [p99, (Metric::Rps, "requests per second")]
        }
        record::Kind::RateLimit => [
            (Metric::P50_MS, "p50 latency (ms)"),
            (Metric::EvalsPerSecond, "evaluations per second"),
        ],
        record::Kind::Capacity => [(Metric::KneeRps, "RPS at the knee"), p99],
        record::Kind::Memory | record::Kind::Scale => [p99, (Metric::Qps, "queries per second")],
        record::Kind::HnswInsert => [p99, (Metric::VectorsPerSecond, "vectors per second")],
        record::Kind::Streaming => [p99, (Metric::RecallMean, "recall@10")],
    }
}

/// Metric `m` of each entry (the first [`ENTRIES`] that have it) across `same`, run by run.
fn chart(kind: record::Kind, same: &[&Stored], m: &Metric, label: &str) -> Option<Figure> {
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
        return None;
    }
    names.truncate(ENTRIES);
    let series: Vec<Series> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let pts = same
                .iter()
                .enumerate()
                .filter_map(|(j, s)| {
                    let e = s.record.results.iter().find(|e| &e.name == name)?;
                    Some(((j + 1) as f64, e.metric(m)?))
                })
                .collect();
            Series::new(*name, pts, Style::LinePoints, color(i))
        })
        .collect();
    let log_y = m.unit() == Unit::Milliseconds && {
        let (lo, hi) = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| *v > 0.0)
            .fold((f64::MAX, 0.0f64), |a, v| (a.0.min(v), a.1.max(v)));
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
        y_from_zero: !log_y && *m != Metric::RecallMean,
        series,
        x_ticks: Ticks::Integers,
        legend_lower_right: *m == Metric::RecallMean,
        ..Chart::default()
    };
    Some(Figure::xy(chart))
}

impl History {
    pub fn of(runs: &[Stored], latest: &BTreeMap<record::Kind, &Stored>) -> Self {
        let mut kinds = Vec::new();
        for (kind, last) in latest {
            let quick = last.record.quick();
            let same: Vec<&Stored> = runs
                .iter()
                .filter(|s| s.record.kind() == *kind && s.record.quick() == quick)
                .collect();
            let same = &same[same.len().saturating_sub(RUNS)..];
            if same.len() < 2 {
                continue;
            }
            kinds.push(Kind {
                heading: Text::new(format!(
                    "{kind} — {} {} runs, {} to {}",
                    same.len(),
                    if quick { "quick-mode" } else { "full" },
                    same[0].record.created_at,
                    same[same.len() - 1].record.created_at
                )),
                charts: history_metrics(*kind)
                    .into_iter()
                    .filter_map(|(m, label)| chart(*kind, same, &m, label))
                    .collect(),
                runs: same
                    .iter()
                    .map(|s| Run {
                        created: Text::new(&s.record.created_at),
                        git_commit: Text::new(
                            s.record.environment.git_commit.as_deref().unwrap_or("-"),
                        ),
                        record: Text::new(s.label()),
                    })
                    .collect(),
            });
        }
        Self(kinds)
    }
}

impl Render for History {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="history" { "History across stored runs" }
            @for k in &self.0 {
                h3 { (k.heading) }
                (side_by_side(&k.charts))
                details {
                    summary { "runs" }
                    div.scroll { table {
                        tr { th { "run" } th { "created" } th { "git commit" } th { "record" } }
                        @for (j, r) in k.runs.iter().enumerate() {
                            tr {
                                td.n { (j + 1) } td { (r.created) } td { (r.git_commit) }
                                td { (r.record) }
                            }
                        }
                    } }
                }
            }
            @if self.0.is_empty() {
                p { "History appears once a kind has two or more runs of the same mode." }
            }
        }
        .render_to(buffer);
    }
}
