//! Rate limiter: its promises, the bucket's timeline against a perfect bucket, the cost of a
//! decision.

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::compare::number;
use super::super::store::Stored;
use super::helpers::{Figure, Source, Text, figure, pass_cell, section_of, side_by_side};
use super::latency::{LatencyTable, histograms, spectrum};
use crate::record::{Metric, ResultEntry};

/// The promises the tests check rather than the bench: (promise, where).
const PROMISES_BY_TESTS: &[(&str, &str)] = &[
    (
        "e. a realistic agent (15 searches in 30 s at 60/min) is never blocked",
        "tests/it/ratelimit.rs, tests/it/service.rs",
    ),
    (
        "f. N ≫ C concurrent requests on a bucket of C admit exactly C",
        "tests/it/ratelimit.rs, tests/it/service.rs",
    ),
    (
        "g. deleting the key resets the bucket (never FLUSHALL)",
        "tests/it/ratelimit.rs, tests/it/service.rs",
    ),
];

/// What the section shows: nothing without a rate_limit record.
#[derive(Debug, Clone, PartialEq)]
pub struct Limiter(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    /// The bench's promises (name, passed); `None` when the record has no timeline entry.
    pub promises: Option<Vec<(Text, bool)>>,
    pub timeline: Option<Timeline>,
    pub spectrum: Option<Figure>,
    pub table: LatencyTable,
}

/// The timeline's charts and its counts, as integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub charts: Vec<Figure>,
    pub attempts: String,
    pub allowed: String,
    pub denied: String,
    pub theoretical_allowed: String,
}

fn timeline(t: &ResultEntry) -> Timeline {
    let get = |n: &str| t.series.get(n).cloned().unwrap_or_default();
    let allowed = get("allowed");
    let remaining = get("remaining");
    let (mut ok, mut denied) = (Vec::new(), Vec::new());
    for (i, &(x, a)) in allowed.iter().enumerate() {
        let y = remaining.get(i).map_or(0.0, |p| p.1);
        if a > 0.5 {
            ok.push((x, y))
        } else {
            denied.push((x, y))
        }
    }
    let cap = t.metric(&Metric::Capacity).unwrap_or(10.0);
    let tokens = Chart {
        title: format!(
            "Bucket over time: capacity {}, refill {}/s, {} attempts/s",
            figure(&Metric::Capacity, cap),
            number(t.metric(&Metric::RefillPerSecond).unwrap_or(0.0)),
            number(t.metric(&Metric::SendRate).unwrap_or(0.0))
        ),
        x_label: "time since the first attempt (s)".into(),
        y_label: "tokens left after the attempt".into(),
        y_range: Some((-0.5, cap + 1.5)),
        series: vec![
            Series::new(
                "perfect bucket (theory)",
                get("theoretical_tokens"),
                Style::Dashed,
                color(7),
            ),
            Series::new("allowed (Redis)", ok, Style::Points, color(2)),
            Series::new("denied (Redis)", denied, Style::Points, color(1)),
        ],
        legend_lower_right: false,
        ..Chart::default()
    };
    let sent: Vec<(f64, f64)> = allowed
        .iter()
        .enumerate()
        .map(|(i, p)| (p.0, (i + 1) as f64))
        .collect();
    let cumulative = Chart {
        title: "Admitted requests, cumulative: Redis vs a perfect bucket".into(),
        x_label: "time since the first attempt (s)".into(),
        y_label: "requests".into(),
        y_from_zero: true,
        series: vec![
            Series::new("sent", sent, Style::Line, color(7)),
            Series::new(
                "admitted by Redis",
                get("admitted_total"),
                Style::Line,
                color(0),
            ),
            Series::new(
                "admitted by a perfect bucket",
                get("theoretical_admitted_total"),
                Style::Dashed,
                color(1),
            ),
        ],
        ..Chart::default()
    };
    let count = |m: Metric| figure(&m, t.metric(&m).unwrap_or(0.0));
    Timeline {
        charts: vec![Figure::xy(tokens), Figure::xy(cumulative)],
        attempts: count(Metric::Attempts),
        allowed: count(Metric::Allowed),
        denied: count(Metric::Denied),
        theoretical_allowed: count(Metric::TheoreticalAllowed),
    }
}

impl Limiter {
    pub fn of(s: Option<&Stored>) -> Self {
        Self(s.map(|s| {
            let t = s
                .record
                .results
                .iter()
                .find(|e| e.name.ends_with("/timeline"));
            let hists = histograms(&s.record);
            Shown {
                source: Source::of(s),
                promises: t.map(|t| {
                    t.gates
                        .iter()
                        .map(|g| (Text::new(&g.name), g.pass))
                        .collect()
                }),
                timeline: t.map(timeline),
                spectrum: (!hists.is_empty())
                    .then(|| spectrum("Limiter latency by percentile", &hists)),
                table: LatencyTable::of(
                    &s.record,
                    &[
                        Metric::EvalsPerSecond,
                        Metric::CriterionMedianMs,
                        Metric::RedisBenchmarkP50Ms,
                    ],
                ),
            }
        }))
    }
}

impl Render for Shown {
    fn render_to(&self, buffer: &mut String) {
        html! {
            (self.source)
            h3 { "Promises" }
            div.scroll { table {
                tr { th { "promise" } th { "result" } th { "checked by" } }
                @match &self.promises {
                    Some(promises) => {
                        @for (name, pass) in promises {
                            tr {
                                td { (name) } (pass_cell(*pass))
                                td { "this run (rate_limit bench, real Redis)" }
                            }
                        }
                    },
                    None => tr {
                        td colspan="3" {
                            "This record has no timeline entry (it predates it, or the filter left it out)."
                        }
                    },
                }
                @for (p, by) in PROMISES_BY_TESTS {
                    tr { td { (p) } td.nochange { "tested" } td { (by) } }
                }
            } }
            @if let Some(t) = &self.timeline {
                (side_by_side(&t.charts))
                p.note {
                    (t.attempts) " attempts: " (t.allowed) " allowed, " (t.denied) " denied; a \
                    perfect bucket at the same instants admits " (t.theoretical_allowed) "."
                }
            }
            h3 { "Cost of a decision (EVALSHA)" }
            @if let Some(f) = &self.spectrum { (side_by_side(std::slice::from_ref(f))) }
            (self.table)
        }
        .render_to(buffer);
    }
}

impl Render for Limiter {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| html! { (s) });
        section_of(
            "limiter",
            "Rate limiter: promises, cost, timeline",
            crate::record::Kind::RateLimit,
            content,
        )
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_counts_are_integers() {
        let t = ResultEntry {
            name: "rate_limit/timeline".into(),
            metrics: [
                (Metric::Capacity, 10.0),
                (Metric::RefillPerSecond, 20.0),
                (Metric::SendRate, 50.0),
                (Metric::Attempts, 200.0),
                (Metric::Allowed, 89.0),
                (Metric::Denied, 111.0),
                (Metric::TheoreticalAllowed, 90.0),
            ]
            .into(),
            ..ResultEntry::default()
        };
        let shown = timeline(&t);
        assert_eq!(
            (shown.attempts.as_str(), shown.allowed.as_str()),
            ("200", "89")
        );
        let html = html! { (Shown {
            source: Source { label: "r.json".into(), created_at: "now".into(), quick: false },
            promises: None,
            timeline: Some(shown),
            spectrum: None,
            table: LatencyTable { extra: Vec::new(), rows: Vec::new() },
        }) }
        .into_string();
        assert!(
            html.contains(
                "200 attempts: 89 allowed, 111 denied; a perfect bucket at the same instants admits 90."
            ),
            "{html}"
        );
        assert!(!html.contains("200.00") && !html.contains("89.00"));
        assert!(html.contains("Bucket over time: capacity 10, refill"));
    }
}
