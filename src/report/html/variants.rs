//! Index variants (`variants`): recall against QPS for every variant and knob value on one chart,
//! with the Pareto front of all of them; per variant its size, build and the fastest point meeting
//! the recall target; every point with its plan's conditions.

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, section_of};
use crate::db::variant::Variant;
use crate::record::{Kind, Metric, Parameters, ResultEntry};

/// What the section shows: nothing without a variants record.
#[derive(Debug, Clone, PartialEq)]
pub struct Variants(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    /// The conditions of every figure (rows, queries, distribution, serial, warm).
    pub conditions: Text,
    /// recall@k (x) against QPS (y), one series per variant, and the front.
    pub chart: Figure,
    /// recall target the best points are chosen by.
    pub target: f64,
    pub best: Vec<Best>,
    /// The query distributions scored besides the held-out one (a column each).
    pub others: Vec<Text>,
    pub rows: Vec<Row>,
}

/// A variant at its best: the fastest point meeting the target, or (when none does) its most
/// accurate one.
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    pub variant: Text,
    pub describe: Text,
    pub index: Text,
    pub settings: Text,
    /// Size (MiB), build (s), workers besides the leader.
    pub build: Vec<Num>,
    /// `ef_search=64`.
    pub point: Text,
    /// Whether the point meets the target.
    pub meets: bool,
    /// recall, p50, p99, QPS.
    pub cells: Vec<Num>,
}

/// One point: variant, knob value, p50, p99, p99.9, QPS, recall (held-out) and worst, each other
/// distribution's recall, criterion's median, the mean beside pgbench, pgbench's mean and the ratio.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub variant: Text,
    pub point: Text,
    pub cells: Vec<Num>,
}

/// An entry named `variants/<variant>/<knob>=<value>`: (variant, `knob=value`).
fn point(e: &ResultEntry) -> Option<(&str, &str)> {
    e.name.strip_prefix("variants/")?.split_once('/')
}

/// The points no other point beats on both recall and QPS, in order of recall.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(r, q)| r.is_finite() && q.is_finite())
        .collect();
    // Most accurate first (the faster of equals first); a point joins when it is faster than every
    // more accurate one.
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut front = Vec::new();
    let mut fastest = f64::NEG_INFINITY;
    for p in sorted {
        if p.1 > fastest {
            front.push(p);
            fastest = p.1;
        }
    }
    front.reverse();
    front
}

/// The fastest of `points` (recall, QPS, index) with recall at least `target`, or the most
/// accurate when none is; and whether it meets the target.
pub fn best_point(points: &[(f64, f64, usize)], target: f64) -> Option<(usize, bool)> {
    let meeting = points
        .iter()
        .filter(|p| p.0 >= target)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match meeting {
        Some(p) => Some((p.2, true)),
        None => points
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
            .map(|p| (p.2, false)),
    }
}

impl Variants {
    pub fn of(latest: Option<&Stored>) -> Self {
        let Some(s) = latest else {
            return Self(None);
        };
        let Parameters::Variants(params) = &s.record.parameters else {
            return Self(None);
        };
        let entries: Vec<(&str, &str, &ResultEntry)> = s
            .record
            .results
            .iter()
            .filter_map(|e| point(e).map(|(v, p)| (v, p, e)))
            .collect();
        let mut names: Vec<&str> = Variant::ALL.iter().map(|v| v.as_str()).collect();
        for (v, _, _) in &entries {
            if !names.contains(v) {
                names.push(v);
            }
        }
        names.retain(|n| entries.iter().any(|(v, _, _)| v == n));
        let others = super::hnsw::other_distributions(&s.record);
        let k = params.k;
        let mut chart = Chart {
            title: format!("Index variants: recall@{k} vs QPS (a point per knob value)"),
            x_label: format!("mean recall@{k} (held-out queries)"),
            y_label: "queries per second (one connection, log scale)".into(),
            log_y: true,
            hlines: Vec::new(),
            legend_lower_right: false,
            ..Chart::default()
        };
        let mut all = Vec::new();
        let mut best = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mine: Vec<&ResultEntry> = entries
                .iter()
                .filter(|(v, _, _)| v == name)
                .map(|(_, _, e)| *e)
                .collect();
            let pts: Vec<(f64, f64, usize)> = mine
                .iter()
                .enumerate()
                .filter_map(|(j, e)| {
                    Some((e.metric(&Metric::RecallMean)?, e.metric(&Metric::Qps)?, j))
                })
                .collect();
            all.extend(pts.iter().map(|p| (p.0, p.1)));
            let built = params.variants.iter().find(|b| b.variant.as_str() == *name);
            chart.series.push(Series::new(
                match built {
                    Some(b) => format!(
                        "{name} ({:.0} MiB)",
                        b.size_bytes as f64 / (1024.0 * 1024.0)
                    ),
                    None => name.to_string(),
                },
                pts.iter().map(|p| (p.0, p.1)).collect(),
                Style::LinePoints,
                color(i),
            ));
            let variant: Option<Variant> = name.parse().ok();
            if let Some((j, meets)) = best_point(&pts, params.recall_target) {
                let e = mine[j];
                if let (Some(r), Some(q)) = (e.metric(&Metric::RecallMean), e.metric(&Metric::Qps))
                {
                    chart
                        .notes
                        .push(((r, q), format!("{name} {}", point(e).map_or("", |p| p.1))));
                }
                best.push(Best {
                    variant: Text::new(name),
                    describe: Text::new(variant.map_or("", |v| v.describe())),
                    index: Text::new(built.map_or("-", |b| b.index_name.as_str())),
                    settings: Text::new(built.map_or("-", |b| b.settings.as_str())),
                    build: vec![
                        Num::of(built.map(|b| b.size_bytes as f64 / (1024.0 * 1024.0))),
                        Num::of(built.map(|b| b.build_seconds)),
                        Num(built.map(|b| b.workers.to_string())),
                    ],
                    point: Text::new(point(e).map_or("", |p| p.1)),
                    meets,
                    cells: vec![
                        Num::metric(e, &Metric::RecallMean),
                        Num::metric(e, &Metric::P50_MS),
                        Num::metric(e, &Metric::P99_MS),
                        Num::metric(e, &Metric::Qps),
                    ],
                });
            }
        }
        let front = pareto_front(&all);
        if front.len() > 1 {
            chart.series.push(Series::new(
                "Pareto front (all variants)",
                front,
                Style::Dashed,
                color(7),
            ));
        }
        let rows = entries
            .iter()
            .map(|(v, p, e)| {
                let mut cells = vec![
                    Num::metric(e, &Metric::P50_MS),
                    Num::metric(e, &Metric::P99_MS),
                    Num::metric(e, &Metric::Latency(crate::record::Stat::P999)),
                    Num::metric(e, &Metric::Qps),
                    Num::metric(e, &Metric::RecallMean),
                    Num::metric(e, &Metric::RecallMin),
                ];
                for d in &others {
                    cells.push(Num::metric(e, &Metric::RecallMeanOf(d.clone())));
                }
                cells.push(Num::metric(e, &Metric::CriterionMedianMs));
                cells.push(Num::metric(e, &Metric::InterleavedMeanMs));
                cells.push(Num::metric(e, &Metric::PgbenchLatencyAvgMs));
                cells.push(Num::metric(e, &Metric::RatioVsPgbench));
                Row {
                    variant: Text::new(v),
                    point: Text::new(p),
                    cells,
                }
            })
            .collect();
        let conditions = format!(
            "{} rows; latency and QPS of {} held-out queries on one connection, serial, warm (each variant's \
             index and the table prewarmed into shared_buffers before its points), {} round(s); recall@{k} \
             against the exact top-{k}, unfiltered, of every distribution's set; each point's plan checked to \
             scan its own variant's index.",
            params.rows, params.queries, params.rounds
        );
        Self(Some(Shown {
            source: Source::of(s),
            conditions: Text::new(conditions),
            chart: Figure::xy(chart),
            target: params.recall_target,
            best,
            others: others.iter().map(Text::from).collect(),
            rows,
        }))
    }
}

impl Render for Variants {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| {
            html! {
                (s.source)
                p.note { (s.conditions) }
                (s.chart)
                p.note {
                    "Up and to the right is better. The dashed line joins the points no other point beats on \
                     both recall and QPS; a variant off the front is never the best choice on this machine \
                     at this size. How to read it: docs/variants.md."
                }
                h3 { "Each variant at its fastest point reaching recall@10 ≥ " (s.target) }
                div.scroll { table {
                    tr {
                        th { "variant" } th { "what" } th { "index" } th { "built with" }
                        th { "size (MiB)" } th { "build (s)" } th { "workers" }
                        th { "point" } th { "recall" } th { "p50 (ms)" } th { "p99 (ms)" } th { "QPS" }
                    }
                    @for b in &s.best {
                        tr {
                            td { (b.variant) } td { (b.describe) } td { code { (b.index) } } td { (b.settings) }
                            @for c in &b.build { (c) }
                            @if b.meets { td { (b.point) } } @else { td.fail { (b.point) " (best recall; never reaches the target)" } }
                            @for c in &b.cells { (c) }
                        }
                    }
                } }
                p.note {
                    "Build: the CREATE INDEX statement's time (pgvector's build alone, with the workers and \
                     maintenance_work_mem the record lists); size: pg_relation_size of the index."
                }
                h3 { "Every point" }
                div.scroll { table {
                    tr {
                        th { "variant" } th { "point" } th { "p50 (ms)" } th { "p99 (ms)" } th { "p99.9 (ms)" }
                        th { "QPS" } th { "recall heldout" } th { "worst" }
                        @for o in &s.others { th { "recall " (o) } }
                        th { "criterion (ms)" } th { "mean beside pgbench (ms)" } th { "pgbench mean (ms)" }
                        th { "÷ pgbench" }
                    }
                    @for r in &s.rows {
                        tr { td { (r.variant) } td { (r.point) } @for c in &r.cells { (c) } }
                    }
                } }
                p.note {
                    "pgbench: each variant's middle point, the same SQL, settings and held-out queries through \
                     pgbench -M prepared -c 1, in rounds alternating with capbench's own pass of the same length \
                     (this machine's speed drifts between rounds); the figures are medians over the rounds, and \
                     ÷ pgbench the median of the rounds' ratios of mean latencies."
                }
            }
        });
        section_of("variants", "Index variants", Kind::Variants, content).render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::variant::Built;
    use crate::record::{Environment, RunRecord, VariantsParameters};
    use std::path::PathBuf;

    #[test]
    fn the_front_keeps_only_points_nothing_beats_on_both_axes() {
        let pts = [
            (0.9, 1000.0),
            (0.95, 800.0),
            (0.93, 500.0),
            (0.99, 200.0),
            (0.8, 900.0),
        ];
        assert_eq!(
            pareto_front(&pts),
            vec![(0.9, 1000.0), (0.95, 800.0), (0.99, 200.0)],
            "(0.93, 500) is beaten by (0.95, 800); (0.8, 900) by (0.9, 1000)"
        );
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn the_best_point_is_the_fastest_meeting_the_target_or_else_the_most_accurate() {
        let pts = [(0.9, 1000.0, 0), (0.96, 800.0, 1), (0.99, 300.0, 2)];
        assert_eq!(best_point(&pts, 0.95), Some((1, true)));
        assert_eq!(best_point(&pts, 0.995), Some((2, false)));
        assert_eq!(best_point(&[], 0.95), None);
    }

    #[test]
    fn the_section_shows_every_variant_its_build_and_its_best_point() {
        let entry = |name: &str, recall: f64, qps: f64| ResultEntry {
            name: name.into(),
            metrics: [
                (Metric::RecallMean, recall),
                (Metric::Qps, qps),
                (Metric::P99_MS, 1000.0 / qps * 1.5),
                (Metric::RecallMeanOf("ood".into()), recall - 0.2),
            ]
            .into(),
            ..ResultEntry::default()
        };
        let built = |v: Variant, mib: i64| Built {
            variant: v,
            index_name: v.index_name().into(),
            settings: "m=16, ef_construction=64".into(),
            build_seconds: 12.5,
            workers: 1,
            maintenance_work_mem_bytes: 1 << 30,
            size_bytes: mib << 20,
            notices: vec![],
        };
        let mut record = RunRecord::new(
            Environment::default(),
            Parameters::Variants(VariantsParameters {
                variants: vec![built(Variant::Hnsw, 781), built(Variant::Bq, 48)],
                queries: 1000,
                k: 10,
                recall_target: 0.95,
                rows: 100_000,
                ..VariantsParameters::default()
            }),
        );
        record.results = vec![
            entry("variants/hnsw/ef_search=40", 0.93, 900.0),
            entry("variants/hnsw/ef_search=100", 0.97, 500.0),
            entry("variants/bq/candidates=100", 0.7, 700.0),
        ];
        let s = Stored {
            path: PathBuf::from("/r/runs/variants-1.json"),
            record,
        };
        let v = Variants::of(Some(&s));
        let shown = v.0.as_ref().unwrap();
        assert_eq!(shown.best.len(), 2);
        assert_eq!(shown.best[0].point.as_str(), "ef_search=100");
        assert!(shown.best[0].meets);
        assert!(!shown.best[1].meets, "bq never reaches 0.95 here");
        assert_eq!(shown.rows.len(), 3);
        let Figure::Xy(c) = &shown.chart else {
            panic!("an xy chart")
        };
        assert_eq!(c.series[0].label, "hnsw (781 MiB)");
        assert_eq!(
            c.series.last().unwrap().label,
            "Pareto front (all variants)"
        );
        let html = v.render().into_string();
        assert!(html.contains("id=\"variants\""));
        assert!(html.contains("never reaches the target"));
        assert!(html.contains("recall ood"));
        assert!(html.contains("ix_traces_embedding_bq"));
        assert!(
            Variants::of(None)
                .render()
                .into_string()
                .contains("cargo bench variants")
        );
    }
}
