//! Search over HTTP: the percentile spectrum beside the raw SQL's, where a search's p50 goes, the
//! service's overhead as a ratio to its SQL with the 429 path beside it, the latency table.

use std::collections::BTreeSet;

use maud::{Render, html};

use super::super::charts::{Bars, color};
use super::super::compare::number;
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, section_of, side_by_side};
use super::hnsw::ef_entry;
use super::latency::{LatencyTable, histograms, spectrum};
use crate::record::{self, Metric, ResultEntry, RunRecord};

/// What the section shows: nothing without an http_search record.
#[derive(Debug, Clone, PartialEq)]
pub struct Http(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    pub charts: Vec<Figure>,
    /// Empty when no entry has its SQL measured beside it.
    pub overhead: Vec<OverheadRow>,
    /// The 429 path's cost, when measured.
    pub rejected: Option<Rejected>,
    pub table: LatencyTable,
}

/// service p50, SQL p50, overhead, and their ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct OverheadRow {
    pub entry: Text,
    pub cells: Vec<Num>,
    pub ratio: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub entry: Text,
    pub p50: Num,
    /// How much of it the service reports (Server-Timing), or that it reports none.
    pub in_service: Text,
}

/// The service's overhead as a ratio to its SQL at each ef_search. Reported, not gated (an
/// absolute budget in ms would judge the machine more than the service).
fn overhead(r: &RunRecord) -> Vec<OverheadRow> {
    r.results
        .iter()
        .filter_map(|e| {
            let sql = e.metric(&Metric::SqlP50Ms).filter(|v| *v > 0.0)?;
            let p50 = e.metric(&Metric::P50_MS)?;
            Some(OverheadRow {
                entry: Text::new(&e.name),
                cells: vec![
                    Num::of(Some(p50)),
                    Num::of(Some(sql)),
                    Num::of(Some(p50 - sql)),
                ],
                ratio: e.metric(&Metric::OverheadRatio).unwrap_or(p50 / sql),
            })
        })
        .collect()
}

fn rejected(r: &RunRecord) -> Option<Rejected> {
    let e = r.results.iter().find(|e| e.name.ends_with("/rejected"))?;
    Some(Rejected {
        entry: Text::new(&e.name),
        p50: Num::metric(e, &Metric::P50_MS),
        in_service: Text::new(
            e.metric(&Metric::ServerStageP50("total".into()))
                .map_or_else(
                    || "end to end (the answer carries no Server-Timing)".into(),
                    |t| {
                        format!(
                            "{} ms of it in the service (Server-Timing total)",
                            number(t)
                        )
                    },
                ),
        ),
    })
}

fn charts_of(r: &RunRecord, hnsw: Option<&Stored>) -> Vec<Figure> {
    let mut hists = histograms(r);
    // The raw SQL at the same ef_search, from the hnsw bench, for scale.
    if let Some(hn) = hnsw {
        let efs: BTreeSet<u64> = r
            .results
            .iter()
            .filter_map(|e| e.metric(&Metric::EfSearch))
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
    let split: Vec<&ResultEntry> = r
        .results
        .iter()
        .filter(|e| e.metrics.contains_key(&Metric::SqlP50Ms))
        .collect();
    let mut out = Vec::new();
    if !hists.is_empty() {
        out.push(spectrum(
            "Search latency by percentile (HTTP vs SQL alone)",
            &hists,
        ));
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
            .map(|e| e.metric(&Metric::SqlP50Ms).unwrap_or(0.0))
            .collect();
        let over: Vec<f64> = split
            .iter()
            .map(|e| e.metric(&Metric::OverheadP50Ms).unwrap_or(0.0).max(0.0))
            .collect();
        out.push(Figure::bars(Bars {
            title: "Where a search's p50 goes: SQL vs the service".into(),
            y_label: "p50 latency (ms)".into(),
            categories: cats,
            stacks: vec![
                ("SQL (THE search query)".into(), sql, color(0)),
                (
                    "service: HTTP, auth, limiter, embedding, re-rank".into(),
                    over,
                    color(1),
                ),
            ],
        }));
    }
    out
}

impl Http {
    pub fn of(s: Option<&Stored>, hnsw: Option<&Stored>) -> Self {
        Self(s.map(|s| Shown {
            source: Source::of(s),
            charts: charts_of(&s.record, hnsw),
            overhead: overhead(&s.record),
            rejected: rejected(&s.record),
            table: LatencyTable::of(
                &s.record,
                &[
                    Metric::Rps,
                    Metric::SqlP50Ms,
                    Metric::OverheadP50Ms,
                    Metric::OverheadRatio,
                ],
            ),
        }))
    }
}

impl Render for Shown {
    fn render_to(&self, buffer: &mut String) {
        html! {
            (self.source)
            (side_by_side(&self.charts))
            @if !self.overhead.is_empty() {
                h3 id="overhead" { "Service overhead: a ratio to the SQL, the 429 path beside it" }
                p.note {
                    "service p50 / raw SQL p50 at the same ef_search (THE search query alone, \
                     interleaved with the requests, on a connection like the service's). Reported, \
                     not gated: the milliseconds depend on the machine as much as on the service, \
                     the ratio compares across machines."
                }
                div.scroll { table {
                    tr {
                        th { "entry" } th { "service p50 ms" } th { "SQL p50 ms" } th { "overhead ms" }
                        th { "service / SQL" }
                    }
                    @for r in &self.overhead {
                        tr {
                            td { (r.entry) } @for c in &r.cells { (c) }
                            td.n { (format!("{:.2}×", r.ratio)) }
                        }
                    }
                    @match &self.rejected {
                        Some(r) => tr {
                            td { "a 429 (" (r.entry) ")" } (r.p50) td colspan="3" { (r.in_service) }
                        },
                        None => tr {
                            td colspan="5" {
                                "The 429 path was not measured in this run (http_search/rejected)."
                            }
                        },
                    }
                } }
            }
            (self.table)
        }
        .render_to(buffer);
    }
}

impl Render for Http {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| html! { (s) });
        section_of(
            "http",
            "Search over HTTP: percentile spectrum, SQL vs service",
            crate::record::Kind::HttpSearch,
            content,
        )
        .render_to(buffer);
    }
}
