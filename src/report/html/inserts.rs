//! The write bench (`hnsw_insert`): vectors per second and latency per statement of each method
//! into the indexed write table and into one without the HNSW index, at each writer level; the
//! comparisons with pgbench and with the server's own COPY; the DELETE and VACUUM that restored it.

use maud::{Render, html};

use super::super::store::Stored;
use super::helpers::{Num, Source, Text, gates_text, section_of};
use crate::record::{Kind, Metric, Parameters, ResultEntry};

/// The bench's entries for its comparisons and its restore (bench::hnsw_insert's ids).
const COPY_FLOOR: &str = "hnsw_insert/copy_floor/indexed";
const RESTORE: &str = "hnsw_insert/restore";

#[derive(Debug, Clone, PartialEq)]
pub struct Inserts(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    pub conditions: Text,
    pub rows: Vec<Row>,
    /// Sentences: the pgbench and server-COPY comparisons, the restore, what was skipped.
    pub notes: Vec<Text>,
}

/// method, target, writers, rows per statement; vectors/s, the HNSW index's share, p50, p99
/// (per statement), rows written; its gates.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub method: Text,
    pub target: Text,
    pub writers: Text,
    pub cells: Vec<Num>,
    pub gates: Text,
}

/// `hnsw_insert/<method>/<target>/writers=<n>`.
fn point(e: &ResultEntry) -> Option<(&str, &str, &str)> {
    let mut parts = e.name.strip_prefix("hnsw_insert/")?.split('/');
    let (method, target, writers) = (parts.next()?, parts.next()?, parts.next()?);
    Some((method, target, writers.strip_prefix("writers=")?))
}

impl Inserts {
    pub fn of(latest: Option<&Stored>) -> Self {
        let Some(s) = latest else {
            return Self(None);
        };
        let Parameters::HnswInsert(p) = &s.record.parameters else {
            return Self(None);
        };
        let results = &s.record.results;
        let rate = |method: &str, target: &str, writers: &str| {
            results
                .iter()
                .find(|e| point(e) == Some((method, target, writers)))
                .and_then(|e| e.metric(&Metric::VectorsPerSecond))
        };
        let rows = results
            .iter()
            .filter_map(|e| point(e).map(|pt| (pt, e)))
            .map(|((method, target, writers), e)| {
                // The time the HNSW index adds to each row: 1/indexed − 1/unindexed.
                let index_ms = match (
                    rate(method, "indexed", writers),
                    rate(method, "unindexed", writers),
                ) {
                    (Some(i), Some(u)) if target == "indexed" && i > 0.0 && u > 0.0 => {
                        Some(1e3 / i - 1e3 / u)
                    }
                    _ => None,
                };
                let mut cells = vec![
                    Num::metric(e, &Metric::RowsPerStatement),
                    Num::metric(e, &Metric::VectorsPerSecond),
                    Num::of(index_ms),
                ];
                for m in [Metric::P50_MS, Metric::P99_MS, Metric::Rows] {
                    cells.push(Num::metric(e, &m));
                }
                Row {
                    method: Text::new(method),
                    target: Text::new(target),
                    writers: Text::new(writers),
                    cells,
                    gates: gates_text(e),
                }
            })
            .collect();
        let mut notes = Vec::new();
        if let Some(e) = results
            .iter()
            .find(|e| e.metric(&Metric::RatioVsPgbench).is_some())
        {
            let m = |x: &Metric| e.metric(x).unwrap_or(f64::NAN);
            notes.push(Text::new(format!(
                "{}: capbench's mean {:.2} ms per INSERT beside pgbench's {:.2} ms on the same INSERT, in \
                 alternating rounds: ratio {:.2} (median of the rounds; agreement within ±10 %). {}",
                e.name,
                m(&Metric::InterleavedMeanMs),
                m(&Metric::PgbenchLatencyAvgMs),
                m(&Metric::RatioVsPgbench),
                gates_text(e).as_str()
            )));
        }
        if let Some(e) = results.iter().find(|e| e.name == COPY_FLOOR) {
            let m = |x: &Metric| e.metric(x).unwrap_or(f64::NAN);
            notes.push(Text::new(format!(
                "Binary COPY of {:.0} rows into the indexed table: capbench {:.0} vectors/s, PostgreSQL's own \
                 COPY FROM a server-side file of the same rows {:.0} vectors/s — ratio {:.2} (median of {:.0} \
                 alternating rounds, each rolled back).",
                m(&Metric::Rows),
                m(&Metric::VectorsPerSecond),
                m(&Metric::ServerCopyVectorsPerSecond),
                m(&Metric::RatioVsServerCopy),
                m(&Metric::Count)
            )));
        }
        if let Some(e) = results.iter().find(|e| e.name == RESTORE) {
            let m = |x: &Metric| e.metric(x).unwrap_or(f64::NAN);
            notes.push(Text::new(format!(
                "Restored afterwards: {:.0} written rows deleted in {:.2} s, then VACUUM (ANALYZE) of the write \
                 table in {:.1} s (it repairs the HNSW graph around them); the copy holds the dataset's {} rows again.",
                m(&Metric::Rows),
                m(&Metric::DeleteSeconds),
                m(&Metric::VacuumSeconds),
                p.rows
            )));
        }
        notes.extend(p.skipped.iter().map(Text::from));
        let conditions = format!(
            "{} rows × {} dims in the write table (capbench_writes.traces: the dataset's rows with only their key, \
             tags and HNSW indexes, m={}, ef_construction={}); \"unindexed\": the same table without the HNSW \
             index. Each point writes {} rows by single-row INSERT or {} by the batch methods ({} rows per \
             multi-row INSERT, {} per COPY), new rows of the dataset's generator, split among its writers, each \
             statement its own transaction; the table grows by every point before it. Latency is per statement.",
            p.rows,
            p.dims,
            p.m,
            p.ef_construction,
            p.single_rows,
            p.batch_rows,
            p.insert_batch,
            p.copy_batch
        );
        Self(Some(Shown {
            source: Source::of(s),
            conditions: Text::new(conditions),
            rows,
            notes,
        }))
    }
}

impl Render for Inserts {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| {
            html! {
                (s.source)
                p.note { (s.conditions) }
                div.scroll { table {
                    tr {
                        th { "method" } th { "into" } th { "writers" } th { "rows/statement" }
                        th { "vectors/s" } th { "HNSW ms/row" } th { "p50 (ms)" } th { "p99 (ms)" }
                        th { "rows" } th { "gates" }
                    }
                    @for r in &s.rows {
                        tr {
                            td { (r.method) } td { (r.target) } td.n { (r.writers) }
                            @for c in &r.cells { (c) }
                            td { (r.gates) }
                        }
                    }
                } }
                p.note {
                    "HNSW ms/row: the time the index adds to each row at that method and writer level \
                     (1/indexed − 1/unindexed rate). The seeds ask for more than 500 vectors/s with the index \
                     in place; the gate is judged on the fastest point into the indexed table. How to read it: \
                     docs/writes.md."
                }
                @for n in &s.notes { p { (n) } }
            }
        });
        section_of(
            "writes",
            "Writes: the HNSW index's cost",
            Kind::HnswInsert,
            content,
        )
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Environment, HnswInsertParameters, RunRecord};
    use std::path::PathBuf;

    #[test]
    fn the_section_shows_each_point_the_index_share_and_the_restore() {
        let entry = |name: &str, metrics: Vec<(Metric, f64)>| ResultEntry {
            name: name.into(),
            metrics: metrics.into_iter().collect(),
            ..ResultEntry::default()
        };
        let mut record = RunRecord::new(
            Environment::default(),
            Parameters::HnswInsert(HnswInsertParameters {
                rows: 100_000,
                dims: 1536,
                skipped: vec!["server-side COPY floor: not measured".into()],
                ..HnswInsertParameters::default()
            }),
        );
        record.results = vec![
            entry(
                "hnsw_insert/copy/indexed/writers=2",
                vec![(Metric::VectorsPerSecond, 400.0), (Metric::P99_MS, 90.0)],
            ),
            entry(
                "hnsw_insert/copy/unindexed/writers=2",
                vec![(Metric::VectorsPerSecond, 2000.0)],
            ),
            entry(
                RESTORE,
                vec![
                    (Metric::Rows, 4400.0),
                    (Metric::DeleteSeconds, 0.2),
                    (Metric::VacuumSeconds, 31.0),
                ],
            ),
        ];
        let s = Stored {
            path: PathBuf::from("/r/runs/hnsw_insert-1.json"),
            record,
        };
        let shown = Inserts::of(Some(&s));
        let rows = &shown.0.as_ref().unwrap().rows;
        assert_eq!(rows.len(), 2, "the restore is a note, not a point");
        // 1000/400 − 1000/2000 = 2.0 ms of HNSW per row; none on the unindexed row.
        assert_eq!(rows[0].cells[2], Num::of(Some(2.0)));
        assert_eq!(rows[1].cells[2], Num::of(None));
        let html = shown.render().into_string();
        assert!(html.contains("id=\"writes\""));
        assert!(
            html.contains("4400 written rows deleted") && html.contains("31.0 s"),
            "{html}"
        );
        assert!(html.contains("server-side COPY floor: not measured"));
        assert!(
            Inserts::of(None)
                .render()
                .into_string()
                .contains("cargo bench hnsw_insert")
        );
    }
}
