//! The memory regime (`memory`): the same search warm, cold and with shared_buffers below the
//! index, per query pool — latency, QPS and the buffer hits and reads per query that explain it,
//! and the warm-up curves (latency by query number).

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, section_of, side_by_side};
use crate::record::{Kind, Metric, Parameters, ResultEntry};

/// The series names the memory bench writes (bench::memory's `CURVE_SERIES`, `FILLING_SERIES`).
const CURVE: &str = "latency_ms_by_query";
const FILLING: &str = "filling_latency_ms_by_query";

#[derive(Debug, Clone, PartialEq)]
pub struct Memory(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    pub conditions: Text,
    /// The warm-up curves of the largest pool; p99 per pool and regime.
    pub charts: Vec<Figure>,
    pub rows: Vec<Row>,
    /// Regimes not measured, and why.
    pub skipped: Vec<Text>,
}

/// regime, pool; first-10 mean, p50, p99, QPS, index hits/reads, table hits/reads per query.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub regime: Text,
    pub pool: Text,
    pub cells: Vec<Num>,
}

/// `memory/<regime>/pool=<n>`: (regime, pool).
fn point(e: &ResultEntry) -> Option<(&str, f64)> {
    let (regime, pool) = e.name.strip_prefix("memory/")?.split_once('/')?;
    Some((regime, pool.strip_prefix("pool=")?.parse().ok()?))
}

fn mib(b: i64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

impl Memory {
    pub fn of(latest: Option<&Stored>) -> Self {
        let Some(s) = latest else {
            return Self(None);
        };
        let Parameters::Memory(p) = &s.record.parameters else {
            return Self(None);
        };
        let points: Vec<(&str, f64, &ResultEntry)> = s
            .record
            .results
            .iter()
            .filter_map(|e| point(e).map(|(r, n)| (r, n, e)))
            .collect();
        let mut regimes: Vec<&str> = Vec::new();
        for (r, _, _) in &points {
            if !regimes.contains(r) {
                regimes.push(r);
            }
        }
        let largest = points.iter().map(|p| p.1).fold(0.0, f64::max);
        let mut curves = Chart {
            title: format!("Warm-up: latency of each query in order (pool of {largest:.0})"),
            x_label: "query number (log scale)".into(),
            y_label: "latency (ms, log scale)".into(),
            log_x: true,
            log_y: true,
            ..Chart::default()
        };
        let mut p99 = Chart {
            title: "p99 latency per query pool and regime".into(),
            x_label: "distinct queries in the pool (log scale)".into(),
            y_label: "p99 latency (ms, log scale)".into(),
            log_x: true,
            log_y: true,
            hlines: vec![(super::super::GATE_P99_MS, "gate: p99 < 50 ms".into())],
            ..Chart::default()
        };
        for (i, r) in regimes.iter().enumerate() {
            let mine: Vec<&(&str, f64, &ResultEntry)> =
                points.iter().filter(|p| p.0 == *r).collect();
            if let Some((_, _, e)) = mine.iter().find(|p| p.1 == largest) {
                if let Some(c) = e.series.get(FILLING) {
                    curves.series.push(Series::new(
                        format!("{r}, filling pass"),
                        c.clone(),
                        Style::Dashed,
                        color(i),
                    ));
                }
                if let Some(c) = e.series.get(CURVE) {
                    curves
                        .series
                        .push(Series::new(*r, c.clone(), Style::Line, color(i)));
                }
            }
            let pts: Vec<(f64, f64)> = mine
                .iter()
                .filter_map(|(_, n, e)| Some((*n, e.metric(&Metric::P99_MS)?)))
                .collect();
            p99.series
                .push(Series::new(*r, pts, Style::LinePoints, color(i)));
        }
        let rows = points
            .iter()
            .map(|(r, n, e)| {
                let first: Vec<f64> = e
                    .series
                    .get(CURVE)
                    .map(|c| c.iter().take(10).map(|p| p.1).collect())
                    .unwrap_or_default();
                let mut cells = vec![Num::of(
                    (!first.is_empty()).then(|| first.iter().sum::<f64>() / first.len() as f64),
                )];
                for m in [
                    Metric::P50_MS,
                    Metric::P99_MS,
                    Metric::Qps,
                    Metric::IndexHitsPerQuery,
                    Metric::IndexReadsPerQuery,
                    Metric::TableHitsPerQuery,
                    Metric::TableReadsPerQuery,
                ] {
                    cells.push(Num::metric(e, &m));
                }
                Row {
                    regime: Text::new(r),
                    pool: Text::new(format!("{n:.0}")),
                    cells,
                }
            })
            .collect();
        let conditions = format!(
            "{} rows; HNSW index {}, table (heap + TOAST) {}, shared_buffers {} as set up; HNSW at ef_search {}, \
             held-out queries, one connection, serial, each pass on a fresh connection with no warm-up query. \
             warm: index and table prewarmed. cold: {}. small_buffers: PostgreSQL restarted with shared_buffers \
             {} for this bench only; a first pass fills it (dashed curve), the second is measured; its misses \
             are served by the kernel's page cache. Hits/reads: blocks per query from pg_statio_user_indexes \
             and pg_statio_user_tables before and after each pass.",
            p.rows,
            mib(p.index_bytes),
            mib(p.table_bytes),
            mib(p.shared_buffers_bytes),
            p.ef_search,
            p.cold_method,
            mib(p.small_shared_buffers_bytes)
        );
        Self(Some(Shown {
            source: Source::of(s),
            conditions: Text::new(conditions),
            charts: vec![Figure::xy(curves), Figure::xy(p99)],
            rows,
            skipped: p.skipped.iter().map(Text::from).collect(),
        }))
    }
}

impl Render for Memory {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| {
            html! {
                (s.source)
                p.note { (s.conditions) }
                (side_by_side(&s.charts))
                div.scroll { table {
                    tr {
                        th { "regime" } th { "pool" } th { "first 10 (ms)" } th { "p50 (ms)" } th { "p99 (ms)" }
                        th { "QPS" } th { "index hits/query" } th { "index reads/query" }
                        th { "table hits/query" } th { "table reads/query" }
                    }
                    @for r in &s.rows {
                        tr { td { (r.regime) } td.n { (r.pool) } @for c in &r.cells { (c) } }
                    }
                } }
                p.note {
                    "A read is a block PostgreSQL did not find in shared_buffers: the kernel's page cache or the \
                     disk served it. Reads per query that stay high in the measured pass are the cliff: the \
                     index no longer fits. How to read it: docs/memory.md."
                }
                @for k in &s.skipped { p.warn { (k) } }
            }
        });
        section_of("memory", "Memory regime", Kind::Memory, content).render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Environment, MemoryParameters, RunRecord};
    use std::path::PathBuf;

    #[test]
    fn the_section_shows_each_regime_its_reads_and_its_warm_up_curve() {
        let entry = |name: &str, p99: f64, reads: f64| ResultEntry {
            name: name.into(),
            metrics: [(Metric::P99_MS, p99), (Metric::IndexReadsPerQuery, reads)].into(),
            series: [(
                CURVE.to_string(),
                vec![(1.0, 40.0), (2.0, 20.0), (3.0, 2.0)],
            )]
            .into(),
            ..ResultEntry::default()
        };
        let mut record = RunRecord::new(
            Environment::default(),
            Parameters::Memory(MemoryParameters {
                index_bytes: 781 << 20,
                small_shared_buffers_bytes: 97 << 20,
                cold_method: "restarted".into(),
                skipped: vec!["cold: not measured".into()],
                ..MemoryParameters::default()
            }),
        );
        record.results = vec![
            entry("memory/warm/pool=1000", 3.0, 0.0),
            entry("memory/small_buffers/pool=1000", 30.0, 250.0),
        ];
        let s = Stored {
            path: PathBuf::from("/r/runs/memory-1.json"),
            record,
        };
        let m = Memory::of(Some(&s));
        let shown = m.0.as_ref().unwrap();
        assert_eq!(shown.rows.len(), 2);
        assert_eq!(shown.rows[1].regime.as_str(), "small_buffers");
        assert_eq!(
            shown.rows[1].cells[0],
            Num::of(Some(62.0 / 3.0)),
            "first 10 mean"
        );
        let Figure::Xy(curves) = &shown.charts[0] else {
            panic!()
        };
        assert_eq!(curves.series.len(), 2, "a curve per regime");
        let html = m.render().into_string();
        assert!(
            html.contains("id=\"memory\"") && html.contains("781 MiB") && html.contains("97 MiB")
        );
        assert!(html.contains("cold: not measured"));
        assert!(
            Memory::of(None)
                .render()
                .into_string()
                .contains("cargo bench memory")
        );
    }
}
