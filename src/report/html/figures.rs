//! Every figure of the latest runs: each entry's metrics, gates and series, whatever its kind, so
//! that nothing a record holds is silently left off the page.

use std::collections::BTreeMap;

use maud::{Render, html};

use super::super::store::Stored;
use super::helpers::{Source, Text, figure, gates_text};
use crate::record;

/// What the section shows: one table per kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures(pub Vec<Kind>);

#[derive(Debug, Clone, PartialEq)]
pub struct Kind {
    pub kind: Text,
    pub source: Source,
    pub rows: Vec<Row>,
}

/// One entry: `metric value, …` (counts as integers), `gate: PASS; …`, `series (n points), …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub entry: Text,
    pub metrics: Text,
    pub gates: Text,
    pub series: Text,
}

impl Figures {
    pub fn of(latest: &BTreeMap<record::Kind, &Stored>) -> Self {
        Self(
            latest
                .iter()
                .map(|(kind, s)| Kind {
                    kind: Text::new(kind.as_str()),
                    source: Source::of(s),
                    rows: s
                        .record
                        .results
                        .iter()
                        .map(|e| {
                            let metrics: Vec<String> = e
                                .metrics
                                .iter()
                                .map(|(k, v)| format!("{k} {}", figure(k, *v)))
                                .collect();
                            let series: Vec<String> = e
                                .series
                                .iter()
                                .map(|(k, v)| format!("{k} ({} points)", v.len()))
                                .collect();
                            Row {
                                entry: Text::new(&e.name),
                                metrics: Text::new(metrics.join(", ")),
                                gates: gates_text(e),
                                series: Text::new(series.join(", ")),
                            }
                        })
                        .collect(),
                })
                .collect(),
        )
    }
}

impl Render for Figures {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="all" { "Every figure of the latest runs" }
            @for k in &self.0 {
                h3 { (k.kind) }
                (k.source)
                div.scroll { table {
                    tr { th { "entry" } th { "metrics" } th { "gates" } th { "series" } }
                    @for r in &k.rows {
                        tr { td { (r.entry) } td { (r.metrics) } td { (r.gates) } td { (r.series) } }
                    }
                } }
            }
        }
        .render_to(buffer);
    }
}
