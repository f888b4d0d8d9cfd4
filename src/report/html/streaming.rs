//! The streaming bench (`streaming`): each phase's search latency and recall@k while rows are
//! inserted in stages, deleted and re-embedded, before, during and after VACUUM; the same over
//! time; and the restore that returned the write table to the dataset.

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, gates_text, section_of};
use crate::record::{Kind, Metric, Parameters, ResultEntry};

/// The bench's entries besides its phases (bench::streaming's ids).
const TIMELINE: &str = "streaming/timeline";
const RESTORE: &str = "streaming/restore";

#[derive(Debug, Clone, PartialEq)]
pub struct Streaming(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    pub conditions: Text,
    pub rows: Vec<Row>,
    /// p99, recall and the table's rows over time.
    pub figures: Vec<Figure>,
    /// Sentences: the VACUUMs, the restore.
    pub notes: Vec<Text>,
}

/// Its number (the charts' marks), the phase; seconds, table rows, rows changed, rows/s, searches,
/// p50, p99, recall mean and worst; its gates.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub number: usize,
    pub phase: Text,
    pub cells: Vec<Num>,
    pub gates: Text,
}

/// The phases' entries, in the order they ran.
fn phases(results: &[ResultEntry]) -> Vec<&ResultEntry> {
    results
        .iter()
        .filter(|e| e.name.starts_with("streaming/") && e.name != TIMELINE && e.name != RESTORE)
        .collect()
}

impl Streaming {
    pub fn of(latest: Option<&Stored>) -> Self {
        let Some(s) = latest else {
            return Self(None);
        };
        let Parameters::Streaming(p) = &s.record.parameters else {
            return Self(None);
        };
        let results = &s.record.results;
        let phases = phases(results);
        let rows = phases
            .iter()
            .enumerate()
            .map(|(n, e)| {
                let rate = e
                    .metric(&Metric::ChangedRows)
                    .zip(e.metric(&Metric::Seconds))
                    .map(|(c, t)| c / t.max(1e-9));
                let mut cells = vec![
                    Num::metric(e, &Metric::Seconds),
                    Num::metric(e, &Metric::Rows),
                    Num::metric(e, &Metric::ChangedRows),
                    Num::of(rate),
                    Num::metric(e, &Metric::Count),
                ];
                for m in [
                    Metric::P50_MS,
                    Metric::P99_MS,
                    Metric::RecallMean,
                    Metric::RecallMin,
                    Metric::VacuumSeconds,
                ] {
                    cells.push(Num::metric(e, &m));
                }
                Row {
                    number: n + 1,
                    phase: Text::new(e.name.strip_prefix("streaming/").unwrap_or(&e.name)),
                    cells,
                    gates: gates_text(e),
                }
            })
            .collect();
        let mut figures = Vec::new();
        if let Some(t) = results.iter().find(|e| e.name == TIMELINE) {
            let starts = t.series.get("phase_starts").cloned().unwrap_or_default();
            for (series, title, y_label) in [
                (
                    "p99_ms",
                    "Search p99 over time",
                    "p99 latency (ms), from when due",
                ),
                (
                    "recall_mean",
                    "Search recall@k over time (against the table as it stood)",
                    "recall@k (mean)",
                ),
                ("table_rows", "Rows in the table over time", "rows"),
            ] {
                let Some(points) = t.series.get(series).filter(|p| !p.is_empty()) else {
                    continue;
                };
                let top = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
                figures.push(Figure::xy(Chart {
                    title: title.into(),
                    x_label: "time since the first search (s)".into(),
                    y_label: y_label.into(),
                    y_from_zero: series != "recall_mean",
                    series: vec![Series::new("", points.clone(), Style::LinePoints, color(0))],
                    // Each phase's start, by its number in the table.
                    notes: starts
                        .iter()
                        .map(|&(x, n)| ((x, top), format!("{}", n as usize + 1)))
                        .collect(),
                    ..Chart::default()
                }));
            }
        }
        let mut notes = Vec::new();
        if let Some(e) = results.iter().find(|e| e.name == RESTORE) {
            let m = |x: &Metric| e.metric(x).unwrap_or(f64::NAN);
            notes.push(Text::new(format!(
                "Restored afterwards: the {:.0} rows the bench had written deleted in {:.2} s, then VACUUM \
                 (ANALYZE) in {:.1} s; the write table holds the dataset's {} rows again (checked).",
                m(&Metric::ChangedRows),
                m(&Metric::DeleteSeconds),
                m(&Metric::VacuumSeconds),
                p.rows
            )));
        }
        let stages: Vec<String> = p.stages.iter().map(|s| format!("+{s} %")).collect();
        let conditions = format!(
            "{} rows × {} dims in the write table (capbench_writes.traces: the dataset's rows with their key, tags \
             and HNSW indexes, m={}, ef_construction={}). Searches: {} per second throughout (open model; latency \
             from when each was due), ef_search={}, k={}, cycling through {} held-out queries, each scored against \
             the exact top-{} of the table as it stood when it was sent (the dataset's stored truth merged with \
             the rows the bench had written). Stages {}: new rows of the dataset's generator inserted at {} rows/s \
             by {} writer(s), {} rows per INSERT. Then {} % of the grown table deleted and {} % re-embedded (rows \
             the bench inserted, spread over them), each searched before, during and after VACUUM; {} s per phase \
             without writes.",
            p.rows,
            p.dims,
            p.m,
            p.ef_construction,
            p.search_rate,
            p.ef_search,
            p.k,
            p.queries,
            p.k,
            stages.join(", "),
            p.insert_rate,
            p.writers,
            p.insert_batch,
            p.delete_percent,
            p.update_percent,
            p.window_seconds
        );
        Self(Some(Shown {
            source: Source::of(s),
            conditions: Text::new(conditions),
            rows,
            figures,
            notes,
        }))
    }
}

impl Render for Streaming {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| {
            html! {
                (s.source)
                p.note { (s.conditions) }
                div.scroll { table {
                    tr {
                        th { "#" } th { "phase" } th { "seconds" } th { "rows in table" }
                        th { "rows changed" } th { "rows/s" } th { "searches" } th { "p50 (ms)" }
                        th { "p99 (ms)" } th { "recall@k" } th { "worst recall" } th { "VACUUM (s)" }
                        th { "gates" }
                    }
                    @for r in &s.rows {
                        tr {
                            td.n { (r.number) } td { (r.phase) }
                            @for c in &r.cells { (c) }
                            td { (r.gates) }
                        }
                    }
                } }
                p.note {
                    "rows/s: the phase's inserts (or deletes, re-embeddings) per second — for a stage, the rate \
                     actually held against the rate asked. The charts mark each phase's start with its number. \
                     How to read it: docs/writes.md#streaming."
                }
                @for f in &s.figures { (f) }
                @for n in &s.notes { p { (n) } }
            }
        });
        section_of(
            "streaming",
            "Writes while searching: stages, deletes, VACUUM",
            Kind::Streaming,
            content,
        )
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Environment, RunRecord, StreamingParameters};
    use std::path::PathBuf;

    #[test]
    fn the_section_shows_every_phase_in_order_the_timeline_and_the_restore() {
        let entry = |name: &str, metrics: Vec<(Metric, f64)>| ResultEntry {
            name: name.into(),
            metrics: metrics.into_iter().collect(),
            ..ResultEntry::default()
        };
        let mut record = RunRecord::new(
            Environment::default(),
            Parameters::Streaming(StreamingParameters {
                rows: 100_000,
                dims: 1536,
                stages: vec![10.0, 50.0],
                insert_rate: 200,
                ..StreamingParameters::default()
            }),
        );
        let mut timeline = entry(TIMELINE, vec![(Metric::Seconds, 5.0)]);
        timeline
            .series
            .insert("p99_ms".into(), vec![(2.5, 6.0), (7.5, 9.0)]);
        timeline
            .series
            .insert("phase_starts".into(), vec![(0.0, 0.0), (5.0, 1.0)]);
        record.results = vec![
            entry(
                "streaming/before",
                vec![(Metric::P99_MS, 6.0), (Metric::RecallMean, 0.97)],
            ),
            entry(
                "streaming/ingest/+10%",
                vec![
                    (Metric::P99_MS, 9.0),
                    (Metric::ChangedRows, 10_000.0),
                    (Metric::Seconds, 50.0),
                ],
            ),
            timeline,
            entry(
                RESTORE,
                vec![
                    (Metric::ChangedRows, 50_000.0),
                    (Metric::DeleteSeconds, 1.5),
                    (Metric::VacuumSeconds, 240.0),
                ],
            ),
        ];
        let s = Stored {
            path: PathBuf::from("/r/runs/streaming-1.json"),
            record,
        };
        let shown = Streaming::of(Some(&s));
        let body = shown.0.as_ref().unwrap();
        assert_eq!(
            body.rows.len(),
            2,
            "the timeline and the restore are not phases"
        );
        assert_eq!(body.rows[1].phase, Text::new("ingest/+10%"));
        assert_eq!(
            body.rows[1].cells[3],
            Num::of(Some(200.0)),
            "10,000 rows in 50 s"
        );
        assert_eq!(body.figures.len(), 1, "only the series the record has");
        let html = shown.render().into_string();
        assert!(html.contains("id=\"streaming\""));
        assert!(html.contains("50000 rows the bench had written") && html.contains("240.0 s"));
        assert!(html.contains("Stages +10 %, +50 %"), "{html}");
        assert!(
            Streaming::of(None)
                .render()
                .into_string()
                .contains("cargo bench streaming")
        );
    }
}
