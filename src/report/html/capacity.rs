//! Capacity and load: each sweep's throughput and p99 against its levels with its knee (or, when
//! no level broke the objective, how far the sweep got), the per-second series as small multiples
//! (one small chart per level, the same scale), latency by percentile, the latency table.

use std::collections::BTreeMap;

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::compare::number;
use super::super::store::Stored;
use super::helpers::{Figure, Source, Text, multiples, side_by_side};
use super::hnsw::series_of;
use super::latency::{LatencyTable, histograms, spectrum};
use crate::record::{self, Metric, ResultEntry, RunRecord};

/// What the section shows: the latest capacity and load records.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity(pub Vec<Kind>);

/// One record.
#[derive(Debug, Clone, PartialEq)]
pub struct Kind {
    pub kind: Text,
    pub source: Source,
    pub sweeps: Vec<SweepShown>,
    pub over_time: Vec<OverTime>,
    pub spectrum: Option<Figure>,
    pub table: LatencyTable,
}

/// One sweep: its charts and what its knee is.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepShown {
    pub group: Text,
    /// "concurrent users" or "connections".
    pub axis: &'static str,
    pub charts: Vec<Figure>,
    pub knee: Knee,
    /// The sweep's latency objective (p99, ms), as shown.
    pub slo: String,
}

/// The knee of a sweep as the record has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Knee {
    /// The highest throughput within the objective, in a sweep where some level broke it.
    Found(Level),
    /// Every level met the objective (each level's `meets_slo` is 1): the knee lies beyond the
    /// sweep, at least at its last level — shown as "≥ N, objective not reached".
    NotReached(Level),
    /// No level met the objective.
    Missed,
    /// The record has no knee entry for the sweep.
    Absent,
}

/// A level of a sweep and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// The level, e.g. `50`.
    pub level: u64,
    /// "users" or "connections".
    pub unit: &'static str,
    pub rps: f64,
    pub p99_ms: f64,
}

/// The per-second series of a sweep (or of a run without levels).
#[derive(Debug, Clone, PartialEq)]
pub struct OverTime {
    /// `Throughput over time — capacity, one chart per level (same scale)`; none for a run
    /// without levels, whose two charts stand side by side.
    pub heading: Option<Text>,
    pub figures: Vec<Figure>,
}

/// One sweep of a record: its levels `<group>/<unit>/<n>` in order, and its `<group>/knee` entry.
struct Sweep<'a> {
    /// The name's prefix (`capacity`, `capacity_db`, `load`).
    group: String,
    /// "users" or "connections".
    unit: &'static str,
    levels: Vec<(f64, &'a ResultEntry)>,
    knee: Option<&'a ResultEntry>,
}

/// The sweeps of a record (the capacity bench has two: users of the service, connections to the
/// database), in the order they appear.
fn sweeps(r: &RunRecord) -> Vec<Sweep<'_>> {
    let mut out: Vec<Sweep> = Vec::new();
    for e in &r.results {
        for unit in ["users", "connections"] {
            let Some((group, n)) = e.name.rsplit_once(&format!("/{unit}/")) else {
                continue;
            };
            let level = Metric::level(unit);
            let Some(n) = level.and_then(|m| e.metric(&m)).or_else(|| n.parse().ok()) else {
                continue;
            };
            match out.iter_mut().find(|s| s.group == group && s.unit == unit) {
                Some(s) => s.levels.push((n, e)),
                None => out.push(Sweep {
                    group: group.to_string(),
                    unit,
                    levels: vec![(n, e)],
                    knee: r.results.iter().find(|k| k.name == format!("{group}/knee")),
                }),
            }
        }
    }
    for s in &mut out {
        s.levels.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// The knee of `sweep`, from its knee entry and its levels' `meets_slo` (load::sweep writes 1 or
/// 0 on each level). A sweep none of whose levels broke the objective has not found its knee:
/// its best level is no knee, the capacity is at least its last level. Records without
/// `meets_slo` on every level cannot tell, and show the knee they hold.
fn knee_of(sweep: &Sweep) -> Knee {
    let Some(k) = sweep.knee else {
        return Knee::Absent;
    };
    let Some(level) = Metric::knee_level(sweep.unit).and_then(|m| k.metric(&m)) else {
        return Knee::Missed;
    };
    let never_broke = !sweep.levels.is_empty()
        && sweep
            .levels
            .iter()
            .all(|(_, e)| e.metric(&Metric::MeetsSlo).is_some_and(|m| m >= 0.5));
    match sweep.levels.last() {
        Some(&(last, e)) if never_broke => Knee::NotReached(Level {
            level: last.round() as u64,
            unit: sweep.unit,
            rps: e.metric(&Metric::Rps).unwrap_or(0.0),
            p99_ms: e.metric(&Metric::P99_MS).unwrap_or(0.0),
        }),
        _ => Knee::Found(Level {
            level: level.round() as u64,
            unit: sweep.unit,
            rps: k.metric(&Metric::KneeRps).unwrap_or(0.0),
            p99_ms: k.metric(&Metric::KneeP99Ms).unwrap_or(0.0),
        }),
    }
}

/// Whether the values span more than 20× (then a log axis).
fn wide(points: &[(f64, f64)]) -> bool {
    let (lo, hi) = points
        .iter()
        .map(|p| p.1)
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |a, v| (a.0.min(v), a.1.max(v)));
    hi / lo.max(1e-9) > 20.0
}

/// Throughput and latency against the sweep's levels, with its knee.
fn sweep_shown(sweep: &Sweep) -> SweepShown {
    let (levels, unit) = (&sweep.levels, sweep.unit);
    let axis = if unit == "users" {
        "concurrent users"
    } else {
        "connections"
    };
    let slo = sweep
        .knee
        .and_then(|k| k.metric(&Metric::SloP99Ms))
        .unwrap_or(super::super::GATE_P99_MS);
    let mut qps = Chart {
        title: format!("Throughput vs {axis}"),
        x_label: axis.into(),
        y_label: "requests per second".into(),
        y_from_zero: true,
        series: vec![Series::new(
            "achieved RPS",
            series_of(levels, &Metric::Rps),
            Style::LinePoints,
            color(0),
        )],
        ..Chart::default()
    };
    let p99 = series_of(levels, &Metric::P99_MS);
    let log = wide(&p99);
    let mut lat = Chart {
        title: format!("Latency vs {axis} (SLO: p99 ≤ {} ms)", number(slo)),
        x_label: axis.into(),
        y_label: if log {
            "latency (ms, log scale)".into()
        } else {
            "latency (ms)".into()
        },
        log_y: log,
        y_from_zero: !log,
        series: vec![
            Series::new(
                "p50",
                series_of(levels, &Metric::P50_MS),
                Style::LinePoints,
                color(0),
            ),
            Series::new("p99", p99, Style::LinePoints, color(1)),
        ],
        hlines: vec![(slo, format!("SLO p99 < {} ms", number(slo)))],
        ..Chart::default()
    };
    let recall = recall_chart(levels, axis);
    let knee = knee_of(sweep);
    match &knee {
        Knee::Found(k) => {
            let (u, r, p) = (k.level as f64, k.rps, k.p99_ms);
            qps.notes
                .push(((u, r), format!("knee: {u:.0} {unit}, {r:.0} RPS")));
            lat.notes
                .push(((u, p), format!("knee: p99 {} ms", number(p))));
        }
        Knee::NotReached(k) => {
            let (u, r, p) = (k.level as f64, k.rps, k.p99_ms);
            qps.notes
                .push(((u, r), format!("≥ {u:.0} {unit}, objective not reached")));
            lat.notes
                .push(((u, p), format!("last level: p99 {} ms", number(p))));
        }
        Knee::Missed | Knee::Absent => {}
    }
    SweepShown {
        group: Text::new(&sweep.group),
        axis,
        charts: [Some(qps), Some(lat), recall]
            .into_iter()
            .flatten()
            .map(Figure::xy)
            .collect(),
        knee,
        slo: number(slo),
    }
}

/// The query distribution whose truth scored a sweep's answers (`recall_mean_<distribution>` on
/// its levels, written by `load --recall`).
pub fn scored_distribution(levels: &[(f64, &ResultEntry)]) -> Option<String> {
    levels.iter().find_map(|(_, e)| {
        e.metrics.keys().find_map(|m| match m {
            Metric::RecallMeanOf(d) => Some(d.clone()),
            _ => None,
        })
    })
}

/// Recall under load against the sweep's levels, when its answers were scored: does recall hold
/// as concurrency rises?
fn recall_chart(levels: &[(f64, &ResultEntry)], axis: &str) -> Option<Chart> {
    let d = scored_distribution(levels)?;
    Some(Chart {
        title: format!("recall@10 under load vs {axis} ({d} queries, no filter)"),
        x_label: axis.into(),
        y_label: "recall@10 of the answers served".into(),
        y_range: Some((0.0, 1.04)),
        legend_lower_right: true,
        series: vec![
            Series::new(
                "mean",
                series_of(levels, &Metric::RecallMeanOf(d.clone())),
                Style::LinePoints,
                color(0),
            ),
            Series::new(
                "worst answer",
                series_of(levels, &Metric::RecallMinOf(d)),
                Style::Points,
                color(1),
            ),
        ],
        ..Chart::default()
    })
}

/// The per-second series: (series, what it is, its y label). Recall and the table's rows come
/// from runs that scored answers and runs that wrote (`load --recall`, `--write-rate`, a scenario's
/// `writes`); the target from shaped runs (`--stages`, `--rate-stages`).
const PER_SECOND: [(&str, &str, &str); 5] = [
    (
        "rps_per_second",
        "Throughput over time",
        "requests per second",
    ),
    (
        "p99_ms_per_second",
        "p99 over time (per second)",
        "p99 latency (ms)",
    ),
    (
        "recall_per_second",
        "Recall over time (scored answers, last 10 s)",
        "recall@k",
    ),
    (
        "table_rows",
        "Rows in the table over time (the run's writes)",
        "rows",
    ),
    (
        "target_per_second",
        "The load shape: the stages' target over time",
        "users (closed) or requests/s (open)",
    ),
];

/// The per-second series of a record: for each sweep, each level's own small chart, all on one
/// y scale, so that no legend covers a line and levels compare at a glance; entries outside a
/// sweep (a single `load` run's total) as full charts side by side.
fn over_time(r: &RunRecord, sweeps: &[Sweep]) -> Vec<OverTime> {
    let mut out = Vec::new();
    for sweep in sweeps {
        for (series, what, y_label) in PER_SECOND {
            let with: Vec<(f64, &Vec<(f64, f64)>)> = sweep
                .levels
                .iter()
                .filter_map(|(n, e)| Some((*n, e.series.get(series)?)))
                .collect();
            if with.is_empty() {
                continue;
            }
            let top = with
                .iter()
                .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
                .filter(|v| v.is_finite())
                .fold(0.0f64, f64::max);
            let figures = with
                .iter()
                .map(|(n, pts)| {
                    Figure::small(Chart {
                        title: format!("{n:.0} {}", sweep.unit),
                        x_label: "time since start (s)".into(),
                        y_label: y_label.into(),
                        y_from_zero: true,
                        y_range: (top > 0.0).then_some((0.0, top * 1.06)),
                        series: vec![Series::new("", (*pts).clone(), Style::Line, color(0))],
                        ..Chart::default()
                    })
                })
                .collect();
            out.push(OverTime {
                heading: Some(Text::new(format!(
                    "{what} — {}, one chart per level (same scale)",
                    sweep.group
                ))),
                figures,
            });
        }
    }
    let in_sweep = |e: &ResultEntry| {
        sweeps
            .iter()
            .any(|s| s.levels.iter().any(|(_, l)| l.name == e.name))
    };
    // A shaped run's stage starts (`load --stages`), marked by number on every chart.
    let stage_starts: Vec<(f64, f64)> = r
        .results
        .iter()
        .find_map(|e| e.series.get("stage_starts"))
        .cloned()
        .unwrap_or_default();
    let figures: Vec<Figure> = PER_SECOND
        .iter()
        .filter_map(|(series, what, y_label)| {
            let lines: Vec<Series> = r
                .results
                .iter()
                .filter(|e| !in_sweep(e))
                .enumerate()
                .filter_map(|(i, e)| {
                    let pts = e.series.get(*series)?.clone();
                    Some(Series::new(&e.name, pts, Style::Line, color(i)))
                })
                .collect();
            (!lines.is_empty()).then(|| {
                let top = lines
                    .iter()
                    .flat_map(|l| l.points.iter().map(|p| p.1))
                    .filter(|v| v.is_finite())
                    .fold(0.0f64, f64::max);
                Figure::xy(Chart {
                    title: (*what).into(),
                    x_label: if stage_starts.is_empty() {
                        "time since start (s)".into()
                    } else {
                        "time since start (s); each stage's start marked by its number".into()
                    },
                    y_label: (*y_label).into(),
                    y_from_zero: true,
                    series: lines,
                    notes: stage_starts
                        .iter()
                        .map(|&(x, n)| ((x, top), format!("{}", n as usize + 1)))
                        .collect(),
                    ..Chart::default()
                })
            })
        })
        .collect();
    if !figures.is_empty() {
        out.push(OverTime {
            heading: None,
            figures,
        });
    }
    out
}

impl Capacity {
    pub fn of(latest: &BTreeMap<record::Kind, &Stored>) -> Self {
        let kinds = [record::Kind::Capacity, record::Kind::Load]
            .into_iter()
            .filter_map(|kind| Some((kind, latest.get(&kind).copied()?)))
            .map(|(kind, s)| {
                let spectra: Vec<_> = histograms(&s.record)
                    .into_iter()
                    .filter(|(e, _)| !e.name.contains("/users/"))
                    .collect();
                let sweeps = sweeps(&s.record);
                Kind {
                    kind: Text::new(kind.as_str()),
                    source: Source::of(s),
                    sweeps: sweeps.iter().map(sweep_shown).collect(),
                    over_time: over_time(&s.record, &sweeps),
                    spectrum: (!spectra.is_empty())
                        .then(|| spectrum(&format!("{kind}: latency by percentile"), &spectra)),
                    table: LatencyTable::of(
                        &s.record,
                        &[Metric::Users, Metric::Rps, Metric::ErrorRate],
                    ),
                }
            })
            .collect();
        Self(kinds)
    }
}

impl Render for Level {
    fn render_to(&self, buffer: &mut String) {
        html! {
            (self.level) " " (self.unit) " at " (format!("{:.0}", self.rps)) " RPS (p99 "
            (number(self.p99_ms)) " ms)"
        }
        .render_to(buffer);
    }
}

impl Render for SweepShown {
    fn render_to(&self, buffer: &mut String) {
        let slo = &self.slo;
        html! {
            h4 { (self.group) " — " (self.axis) }
            (side_by_side(&self.charts))
            @match &self.knee {
                Knee::Found(k) => p {
                    b { "Knee" } ": the most " (k.unit) " that still meet p99 < " (slo) " ms: " (k) "."
                },
                Knee::NotReached(k) => p {
                    b { "Knee: ≥ " (k.level) " " (k.unit) ", objective not reached" } " — every \
                    level met p99 < " (slo) " ms, the last one " (k) "; the knee lies beyond the \
                    sweep: sweep further to find it."
                },
                Knee::Missed => p.warn { b { "Knee" } ": no level met p99 < " (slo) " ms." },
                Knee::Absent => {},
            }
        }
        .render_to(buffer);
    }
}

impl Render for OverTime {
    fn render_to(&self, buffer: &mut String) {
        html! {
            @match &self.heading {
                Some(h) => { h4 { (h) } (multiples(&self.figures)) },
                None => (side_by_side(&self.figures)),
            }
        }
        .render_to(buffer);
    }
}

impl Render for Capacity {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="capacity" { "Capacity: throughput and p99 vs concurrency" }
            @for k in &self.0 {
                h3 { (k.kind) }
                (k.source)
                @for s in &k.sweeps { (s) }
                @for o in &k.over_time { (o) }
                @if let Some(f) = &k.spectrum { (side_by_side(std::slice::from_ref(f))) }
                (k.table)
            }
            @if self.0.is_empty() {
                p {
                    "No capacity or load record yet (" code { "cargo bench capacity" } ", "
                    code { "cargo run --release --bin load" } ")."
                }
            }
        }
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests;
