//! Filtered search (`hnsw_filtered`): recall and the "fewer than k" share against the filter's
//! selectivity per way of scanning, the recall–QPS trade-off per selectivity, and every point with
//! the plan it ran.

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, section_of, side_by_side};
use crate::dataset::{Correlation, Tag};
pub use crate::db::search::PlanKind;
use crate::record::{Kind, Metric, Parameters, ResultEntry, RunRecord};

/// The ways of running the filtered query, in the order the legends show them (a way a newer
/// bench adds comes after them).
pub const MODES: [&str; 5] = [
    "off",
    "strict_order",
    "relaxed_order",
    "relaxed_order_raised",
    "exact",
];

/// The pitfall the section is about, in one sentence.
pub const PITFALL: &str = "With iterative scans off, a selective filter silently returns fewer \
     than k rows: the index hands over ef_search candidates and the filter discards most of them.";

/// What the section shows: nothing without an hnsw_filtered record.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered(pub Option<Shown>);

/// The latest hnsw_filtered record, as the section shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    /// The record's file and time.
    pub source: Source,
    /// The ef_search of the selectivity charts: the lowest measured (None: only exact points).
    pub ef_search: Option<f64>,
    /// Mean recall vs selectivity, one series per mode: uncorrelated tags, correlated tags.
    pub recall: Vec<Figure>,
    /// The "fewer than k" share vs selectivity, one series per mode: uncorrelated, correlated.
    pub short: Vec<Figure>,
    /// Mean recall vs QPS of the uncorrelated tags, one series per selectivity.
    pub trade: Figure,
    /// k of recall@k.
    pub k: usize,
    /// The query distribution every recall figure is of.
    pub query_set: Text,
    /// One per entry, in the record's order.
    pub rows: Vec<Row>,
    /// The conditions of every figure, and the pitfall.
    pub note: Text,
}

/// One point: tag, selectivity, mode, ef_search; p50, p99, QPS, recall, worst, "< k" share; what
/// the planner would pick left alone, and the plan it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `u1`, `c0.1`, …
    pub tag: Text,
    /// In percent of the rows.
    pub selectivity: Num,
    /// One of [`MODES`].
    pub mode: Text,
    /// `-` for the exact plan, which ignores it.
    pub ef_search: Num,
    /// p50, p99, QPS, mean recall, worst recall, "< k" share (percent).
    pub cells: Vec<Num>,
    /// Whether PostgreSQL left alone would answer without the HNSW index.
    pub planner_prefers_exact: Option<bool>,
    /// None when the record has no plan for the point.
    pub plan: Option<PlanKind>,
    /// The plan's EXPLAIN line.
    pub plan_text: Text,
}

/// An entry named `hnsw_filtered/<tag>/<mode>/<parameter>`, read.
struct Point<'a> {
    entry: &'a ResultEntry,
    tag: &'a str,
    mode: &'a str,
    /// None for the exact plan.
    ef_search: Option<f64>,
    /// Fraction of the rows carrying the tag.
    selectivity: Option<f64>,
    family: Option<Correlation>,
}

fn point(e: &ResultEntry) -> Option<Point<'_>> {
    let mut parts = e.name.strip_prefix("hnsw_filtered/")?.splitn(3, '/');
    let (tag, mode, parameter) = (parts.next()?, parts.next()?, parts.next()?);
    let known = Tag::parse(tag);
    Some(Point {
        entry: e,
        tag,
        mode,
        ef_search: if mode == "exact" {
            None
        } else {
            e.metric(&Metric::EfSearch)
                .or_else(|| parameter.strip_prefix("ef_search=")?.parse().ok())
        },
        selectivity: e
            .metric(&Metric::Selectivity)
            .or_else(|| known.map(|t| f64::from(t.basis_points) / 10_000.0)),
        family: known.map(|t| t.correlation).or(match tag.chars().next() {
            Some('u') => Some(Correlation::Uncorrelated),
            Some('c') => Some(Correlation::Correlated),
            _ => None,
        }),
    })
}

/// `v` (a fraction) in percent, without a tail of zeros: `0.1`, `1`, `33.3`.
fn percent(v: f64) -> String {
    let p = v * 100.0;
    let s = if p.abs() >= 1.0 {
        format!("{p:.1}")
    } else {
        format!("{p:.2}")
    };
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// [`MODES`], then any other mode of `points`, each once.
fn modes<'a>(points: &[Point<'a>]) -> Vec<&'a str> {
    let mut modes: Vec<&str> = MODES.to_vec();
    for p in points {
        if !modes.contains(&p.mode) {
            modes.push(p.mode);
        }
    }
    modes
}

fn family_name(f: Correlation) -> &'static str {
    match f {
        Correlation::Uncorrelated => "Uncorrelated tags",
        Correlation::Correlated => "Correlated tags",
    }
}

/// Metric `m` vs selectivity of `family`'s points at `ef` (the exact plan's at any), one series
/// per mode; a point without the metric is left out.
fn by_selectivity(
    points: &[Point],
    family: Correlation,
    ef: Option<f64>,
    m: &Metric,
    mut chart: Chart,
) -> Figure {
    for (i, mode) in modes(points).into_iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.family == Some(family) && p.mode == mode)
            .filter(|p| p.ef_search.is_none() || p.ef_search == ef)
            .filter_map(|p| Some((p.selectivity?, p.entry.metric(m)?)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = if mode == "exact" {
            Style::Dashed
        } else {
            Style::LinePoints
        };
        chart.series.push(Series::new(mode, pts, style, color(i)));
    }
    Figure::xy(chart)
}

/// Mean recall vs QPS of the uncorrelated tags, widest first: one series per tag, a point per
/// mode × ef_search.
fn trade_off(points: &[Point], recall: &str) -> Figure {
    let mut tags: Vec<(&str, Option<f64>)> = Vec::new();
    for p in points {
        if p.family == Some(Correlation::Uncorrelated) && !tags.iter().any(|t| t.0 == p.tag) {
            tags.push((p.tag, p.selectivity));
        }
    }
    tags.sort_by(|a, b| b.1.unwrap_or(0.0).total_cmp(&a.1.unwrap_or(0.0)));
    let mut chart = Chart {
        title: "Uncorrelated tags: recall–QPS trade-off (a point per mode × ef_search)".into(),
        x_label: format!("mean {recall}"),
        y_label: "queries per second (one connection, log scale)".into(),
        log_y: true,
        ..Chart::default()
    };
    for (i, (tag, selectivity)) in tags.into_iter().enumerate() {
        let pts = points
            .iter()
            .filter(|p| p.tag == tag)
            .filter_map(|p| {
                Some((
                    p.entry.metric(&Metric::RecallMean)?,
                    p.entry.metric(&Metric::Qps)?,
                ))
            })
            .collect();
        let label = match selectivity {
            Some(s) => format!("{tag}: {} % of rows", percent(s)),
            None => tag.to_string(),
        };
        chart
            .series
            .push(Series::new(label, pts, Style::Points, color(i)));
    }
    Figure::xy(chart)
}

fn row(r: &RunRecord, p: &Point) -> Row {
    let plan = match &r.parameters {
        Parameters::HnswFiltered(f) => f.plans.get(&p.entry.name).map(String::as_str),
        _ => None,
    }
    .filter(|s| !s.trim().is_empty());
    let e = p.entry;
    Row {
        tag: Text::new(p.tag),
        selectivity: Num(p.selectivity.map(|s| format!("{} %", percent(s)))),
        mode: Text::new(p.mode),
        ef_search: Num(p.ef_search.map(|v| format!("{v:.0}"))),
        cells: [
            Metric::P50_MS,
            Metric::P99_MS,
            Metric::Qps,
            Metric::RecallMean,
            Metric::RecallMin,
        ]
        .iter()
        .map(|m| Num::metric(e, m))
        .chain(std::iter::once(Num(e
            .metric(&Metric::ShortShare)
            .map(|v| format!("{} %", percent(v))))))
        .collect(),
        planner_prefers_exact: e.metric(&Metric::PlannerPrefersExact).map(|v| v > 0.5),
        plan: plan.map(PlanKind::of),
        plan_text: Text::new(plan.unwrap_or_default()),
    }
}

fn shown(s: &Stored) -> Shown {
    let r = &s.record;
    let (k, queries, query_set, raised) = match &r.parameters {
        Parameters::HnswFiltered(f) => (
            f.k,
            f.queries,
            f.query_set.as_str(),
            f.raised_max_scan_tuples,
        ),
        _ => (0, 0, "", 0),
    };
    let query_set = if query_set.trim().is_empty() {
        "unrecorded"
    } else {
        query_set
    };
    let recall = if k > 0 {
        format!("recall@{k}")
    } else {
        "recall@k".into()
    };
    let fewer = if k > 0 {
        format!("fewer than {k} rows")
    } else {
        "fewer than k rows".into()
    };
    let points: Vec<Point> = r.results.iter().filter_map(point).collect();
    let ef = points
        .iter()
        .filter_map(|p| p.ef_search)
        .min_by(f64::total_cmp);
    let at = match ef {
        Some(ef) => format!("ef_search {ef:.0}"),
        None => "exact plan only".into(),
    };
    let families = [Correlation::Uncorrelated, Correlation::Correlated];
    let recall_charts = families
        .iter()
        .map(|&f| {
            by_selectivity(
                &points,
                f,
                ef,
                &Metric::RecallMean,
                Chart {
                    title: format!("{}: {recall} vs selectivity, {at}", family_name(f)),
                    x_label: "selectivity: fraction of rows with the tag (log scale)".into(),
                    y_label: format!("mean {recall}, {query_set} queries"),
                    log_x: true,
                    y_range: Some((0.0, 1.04)),
                    legend_lower_right: true,
                    ..Chart::default()
                },
            )
        })
        .collect();
    let short_charts = families
        .iter()
        .map(|&f| {
            by_selectivity(
                &points,
                f,
                ef,
                &Metric::ShortShare,
                Chart {
                    title: format!("{}: queries with {fewer}, {at}", family_name(f)),
                    x_label: "selectivity: fraction of rows with the tag (log scale)".into(),
                    y_label: format!("share of queries with {fewer}"),
                    log_x: true,
                    y_range: Some((0.0, 1.04)),
                    legend_lower_right: true,
                    ..Chart::default()
                },
            )
        })
        .collect();
    let k_text = if k > 0 { k.to_string() } else { "k".into() };
    let note = format!(
        "{queries} {query_set} queries per filter (correlated tags: drawn within the tag), \
         k = {k_text}, serial (one connection); {recall} against the exact filtered top-{k_text}. \
         off, strict_order, relaxed_order: the HNSW index forced (bitmap and sequential scans \
         disabled) with that hnsw.iterative_scan and pgvector's default max_scan_tuples; \
         relaxed_order_raised: max_scan_tuples {raised}; exact: index scans disabled, the \
         filter's matches sorted exactly (ef_search does not apply). \"< k\": queries that returned \
         fewer rows than min(k, the filter's matches); planner alone: the plan PostgreSQL picks \
         without the enable_* settings; plan: the plan the point ran. {PITFALL}"
    );
    Shown {
        source: Source::of(s),
        ef_search: ef,
        recall: recall_charts,
        short: short_charts,
        trade: trade_off(&points, &recall),
        k,
        query_set: Text::new(query_set),
        rows: points.iter().map(|p| row(r, p)).collect(),
        note: Text::new(note),
    }
}

impl Filtered {
    /// The section of the latest hnsw_filtered record `s`, if any.
    pub fn of(s: Option<&Stored>) -> Self {
        Self(s.map(shown))
    }
}

impl Render for Shown {
    fn render_to(&self, buffer: &mut String) {
        let recall = if self.k > 0 {
            format!("recall@{}", self.k)
        } else {
            "recall@k".into()
        };
        html! {
            (self.source)
            (side_by_side(&self.recall))
            (side_by_side(&self.short))
            (side_by_side(std::slice::from_ref(&self.trade)))
            div.scroll { table {
                tr {
                    th { "tag" } th { "selectivity" } th { "mode" } th { "ef_search" }
                    th { "p50" } th { "p99" } th { "QPS" }
                    th { (recall) " (" (self.query_set) ")" } th { "worst" } th { "< k" }
                    th { "planner alone" } th { "plan" }
                }
                @for r in &self.rows {
                    tr {
                        td { (r.tag) } (r.selectivity) td { (r.mode) } (r.ef_search)
                        @for c in &r.cells { (c) }
                        td { @match r.planner_prefers_exact {
                            Some(true) => "exact", Some(false) => "hnsw", None => "-",
                        } }
                        td title=[r.plan.map(|_| &r.plan_text)] { (r.plan.map_or("-", PlanKind::as_str)) }
                    }
                }
            } }
            p.note { "Latencies in ms. " (self.note) }
        }
        .render_to(buffer);
    }
}

impl Render for Filtered {
    fn render_to(&self, buffer: &mut String) {
        section_of(
            "filtered",
            "Filtered search: recall and \"fewer than k\" per selectivity and iterative scan",
            Kind::HnswFiltered,
            self.0.as_ref().map(|s| html! { (s) }),
        )
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::super::charts::Chart;
    use super::*;
    use crate::record::{Environment, HnswFilteredParameters};

    const HNSW_PLAN: &str = "Limit / Index Scan using ix_traces_embedding_hnsw on traces";
    const BITMAP_PLAN: &str =
        "Limit / Sort / Bitmap Heap Scan on traces / Bitmap Index Scan on ix_traces_tags";

    /// (name, ef_search, selectivity, recall, short share, QPS) entries, with their plans.
    fn stored(entries: &[(&str, f64, f64, f64, f64, f64)], plans: &[(&str, &str)]) -> Stored {
        let mut record = RunRecord::new(
            Environment::default(),
            Parameters::HnswFiltered(HnswFilteredParameters {
                ef_search: vec![40, 100],
                queries: 200,
                k: 10,
                query_set: "near-duplicate".into(),
                raised_max_scan_tuples: 100_000,
                plans: plans
                    .iter()
                    .map(|(n, p)| (n.to_string(), p.to_string()))
                    .collect(),
                ..HnswFilteredParameters::default()
            }),
        );
        record.created_at = "2026-01-01T00:00:00Z".into();
        for &(name, ef, sel, recall, short, qps) in entries {
            record.results.push(ResultEntry {
                name: name.into(),
                metrics: [
                    (Metric::EfSearch, ef),
                    (Metric::Selectivity, sel),
                    (Metric::RecallMean, recall),
                    (Metric::RecallMin, recall / 2.0),
                    (Metric::ShortShare, short),
                    (Metric::Qps, qps),
                    (Metric::P50_MS, 1000.0 / qps),
                    (Metric::PlannerPrefersExact, f64::from(u8::from(sel < 0.05))),
                ]
                .into(),
                ..ResultEntry::default()
            });
        }
        Stored {
            path: PathBuf::from("/r/runs/hnsw_filtered-1.json"),
            record,
        }
    }

    fn record() -> Stored {
        stored(
            &[
                (
                    "hnsw_filtered/u10/exact/index_scans=off",
                    40.0,
                    0.1,
                    1.0,
                    0.0,
                    50.0,
                ),
                (
                    "hnsw_filtered/u10/off/ef_search=40",
                    40.0,
                    0.1,
                    0.6,
                    0.2,
                    900.0,
                ),
                (
                    "hnsw_filtered/u1/exact/index_scans=off",
                    40.0,
                    0.01,
                    1.0,
                    0.0,
                    400.0,
                ),
                (
                    "hnsw_filtered/u1/off/ef_search=40",
                    40.0,
                    0.01,
                    0.1,
                    0.9,
                    1000.0,
                ),
                (
                    "hnsw_filtered/u1/relaxed_order/ef_search=40",
                    40.0,
                    0.01,
                    0.95,
                    0.0,
                    80.0,
                ),
                (
                    "hnsw_filtered/u1/off/ef_search=100",
                    100.0,
                    0.01,
                    0.3,
                    0.6,
                    700.0,
                ),
                (
                    "hnsw_filtered/c1/off/ef_search=40",
                    40.0,
                    0.01,
                    0.9,
                    0.05,
                    950.0,
                ),
            ],
            &[
                ("hnsw_filtered/u1/off/ef_search=40", HNSW_PLAN),
                ("hnsw_filtered/u1/exact/index_scans=off", BITMAP_PLAN),
                (
                    "hnsw_filtered/u10/exact/index_scans=off",
                    "Limit / Sort / Seq Scan on traces",
                ),
            ],
        )
    }

    fn chart(f: &Figure) -> &Chart {
        match f {
            Figure::Xy(c) => c,
            other => panic!("not an xy chart: {other:?}"),
        }
    }

    fn series<'a>(c: &'a Chart, label: &str) -> &'a [(f64, f64)] {
        &c.series
            .iter()
            .find(|s| s.label == label)
            .unwrap_or_else(|| panic!("no series {label} in {}", c.title))
            .points
    }

    #[test]
    fn the_selectivity_charts_show_each_mode_at_the_lowest_ef_search() {
        let Filtered(Some(s)) = Filtered::of(Some(&record())) else {
            panic!("no section data")
        };
        assert_eq!(s.ef_search, Some(40.0));
        let short = chart(&s.short[0]);
        assert!(
            short.title.starts_with("Uncorrelated tags") && short.title.contains("ef_search 40")
        );
        assert_eq!(
            series(short, "off"),
            [(0.01, 0.9), (0.1, 0.2)],
            "ef_search 100 is not in the ef_search 40 chart"
        );
        assert_eq!(series(short, "relaxed_order"), [(0.01, 0.0)]);
        assert!(series(short, "strict_order").is_empty());
        assert_eq!(series(short, "exact"), [(0.01, 0.0), (0.1, 0.0)]);
        let labels: Vec<&str> = short.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, MODES, "every mode, in order");
        let recall = chart(&s.recall[0]);
        assert_eq!(series(recall, "off"), [(0.01, 0.1), (0.1, 0.6)]);
        assert!(
            recall.y_label.contains("near-duplicate"),
            "{}",
            recall.y_label
        );
        let correlated = chart(&s.short[1]);
        assert!(correlated.title.starts_with("Correlated tags"));
        assert_eq!(series(correlated, "off"), [(0.01, 0.05)]);
        assert_eq!(series(chart(&s.recall[1]), "off"), [(0.01, 0.9)]);
    }

    #[test]
    fn the_trade_off_has_a_series_per_uncorrelated_selectivity_widest_first() {
        let Filtered(Some(s)) = Filtered::of(Some(&record())) else {
            panic!("no section data")
        };
        let trade = chart(&s.trade);
        let labels: Vec<&str> = trade.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            ["u10: 10 % of rows", "u1: 1 % of rows"],
            "no correlated tag"
        );
        assert_eq!(
            series(trade, "u1: 1 % of rows"),
            [(1.0, 400.0), (0.1, 1000.0), (0.95, 80.0), (0.3, 700.0)],
            "every mode × ef_search of u1"
        );
        assert!(trade.log_y && trade.x_label.contains("recall@10"));
    }

    #[test]
    fn the_table_has_a_row_per_entry_with_its_mode_and_plan_kind() {
        let Filtered(Some(s)) = Filtered::of(Some(&record())) else {
            panic!("no section data")
        };
        assert_eq!(s.rows.len(), 7);
        let row = |i: usize| &s.rows[i];
        let off = row(3);
        assert_eq!((off.tag.as_str(), off.mode.as_str()), ("u1", "off"));
        assert_eq!(off.selectivity.0.as_deref(), Some("1 %"));
        assert_eq!(off.ef_search.0.as_deref(), Some("40"));
        assert_eq!(off.plan, Some(PlanKind::Hnsw));
        assert_eq!(off.planner_prefers_exact, Some(true));
        let cells: Vec<Option<&str>> = off.cells.iter().map(|c| c.0.as_deref()).collect();
        assert_eq!(
            cells,
            [
                Some("1.000"),
                None,
                Some("1000"),
                Some("0.100"),
                Some("0.0500"),
                Some("90 %")
            ],
            "p50, p99 (missing), QPS, recall, worst, < k"
        );
        let exact = row(2);
        assert_eq!(exact.mode.as_str(), "exact");
        assert_eq!(exact.plan, Some(PlanKind::Bitmap));
        assert_eq!(exact.ef_search.0, None, "the exact plan ignores ef_search");
        assert_eq!(row(0).plan, Some(PlanKind::Seq));
        assert_eq!(row(0).planner_prefers_exact, Some(false));
        assert_eq!(row(4).plan, None, "no plan recorded");
        assert_eq!(row(6).selectivity.0.as_deref(), Some("1 %"));
        let html = s.render().into_string();
        assert!(html.contains("<td title=\"Limit / Index Scan using ix_traces_embedding_hnsw on traces\">hnsw</td>"), "{html}");
        assert!(
            !html.contains("title=\"\""),
            "no empty title without a plan"
        );
    }

    #[test]
    fn the_note_names_the_conditions_and_the_pitfall() {
        let Filtered(Some(s)) = Filtered::of(Some(&record())) else {
            panic!("no section data")
        };
        let note = s.note.as_str();
        for part in [
            "200 near-duplicate queries per filter",
            "k = 10",
            "serial (one connection)",
            "max_scan_tuples 100000",
            PITFALL,
        ] {
            assert!(note.contains(part), "no '{part}' in {note}");
        }
        assert_eq!(s.query_set.as_str(), "near-duplicate");
        let html = Filtered(Some(s)).render().into_string();
        assert!(html.contains("id=\"filtered\""));
        assert!(
            html.contains("<th>recall@10 (near-duplicate)</th>"),
            "{html}"
        );
    }

    #[test]
    fn without_a_record_the_section_says_which_bench_makes_one() {
        let html = Filtered::of(None).render().into_string();
        assert!(html.contains("id=\"filtered\""));
        assert!(html.contains("No hnsw_filtered record yet"), "{html}");
    }

    #[test]
    fn plan_kinds_and_percentages_read_as_the_bench_prints_them() {
        assert_eq!(PlanKind::of(HNSW_PLAN), PlanKind::Hnsw);
        assert_eq!(PlanKind::of(BITMAP_PLAN), PlanKind::Bitmap);
        assert_eq!(
            PlanKind::of("Limit / Sort / Seq Scan on traces"),
            PlanKind::Seq
        );
        assert_eq!(percent(0.001), "0.1");
        assert_eq!(percent(0.5), "50");
        assert_eq!(percent(1.0 / 3.0), "33.3");
        assert_eq!(percent(0.0), "0");
    }
}
