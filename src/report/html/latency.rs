//! What the capacity, HTTP and limiter sections share: the latency table and the chart of latency
//! by percentile.

use maud::{Render, html};

use super::super::charts::Spectrum;
use super::helpers::{Figure, Num, Text, gates_text};
use crate::record::{self, Metric, ResultEntry, RunRecord, Stat};

/// Table of latency figures plus some extra metrics, one row per entry that has a p50.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyTable {
    pub extra: Vec<Text>,
    pub rows: Vec<LatencyRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub entry: Text,
    /// The extra metrics', then p50, p90, p95, p99, p99.9 and max.
    pub cells: Vec<Num>,
    pub gates: Text,
}

impl LatencyTable {
    pub fn of(r: &RunRecord, extra: &[Metric]) -> Self {
        let rows = r
            .results
            .iter()
            .filter(|e| e.metrics.contains_key(&Metric::P50_MS))
            .map(|e| LatencyRow {
                entry: Text::new(&e.name),
                cells: extra
                    .iter()
                    .chain(&[
                        Metric::P50_MS,
                        Metric::Latency(Stat::P90),
                        Metric::P95_MS,
                        Metric::P99_MS,
                        Metric::Latency(Stat::P999),
                        Metric::Latency(Stat::Max),
                    ])
                    .map(|m| Num::metric(e, m))
                    .collect(),
                gates: gates_text(e),
            })
            .collect();
        Self {
            extra: extra.iter().map(|m| Text::new(m.to_string())).collect(),
            rows,
        }
    }
}

impl Render for LatencyTable {
    fn render_to(&self, buffer: &mut String) {
        html! {
            div.scroll { table {
                tr {
                    th { "entry" }
                    @for x in &self.extra { th { (x) } }
                    th { "p50 ms" } th { "p90" } th { "p95" } th { "p99" } th { "p99.9" } th { "max" }
                    th { "gates" }
                }
                @for r in &self.rows {
                    tr { td { (r.entry) } @for c in &r.cells { (c) } td { (r.gates) } }
                }
            } }
        }
        .render_to(buffer);
    }
}

/// The entries of `r` that carry an HDR histogram, decoded.
pub fn histograms(r: &RunRecord) -> Vec<(&ResultEntry, hdrhistogram::Histogram<u64>)> {
    r.results
        .iter()
        .filter_map(|e| Some((e, record::decode_histogram(e.histogram.as_ref()?).ok()?)))
        .collect()
}

/// Latency by percentile, one line per histogram.
pub fn spectrum(title: &str, hists: &[(&ResultEntry, hdrhistogram::Histogram<u64>)]) -> Figure {
    Figure::spectrum(Spectrum {
        title: title.to_string(),
        lines: hists
            .iter()
            .map(|(e, h)| (e.name.clone(), Spectrum::line(h)))
            .collect(),
    })
}
