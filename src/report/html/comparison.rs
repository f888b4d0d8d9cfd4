//! Comparison: each kind's latest run against its baseline (or previous run) — one verdict per
//! benchmark, the noise it was judged against, what differs, and every metric's change.

use maud::{Render, html};

use super::super::compare::{Comparison as Compared, Verdict};
use super::View;
use super::helpers::{Num, Text, figure};

/// What the section shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Empty when nothing was compared: the section then says how to compare.
    pub title: Text,
    /// The rules, with the options the comparisons were made with.
    pub rules: Option<Rules>,
    pub kinds: Vec<Kind>,
    pub notes: Vec<Text>,
}

/// The options the page's comparisons were made with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// The practical threshold, in percent.
    pub threshold_percent: f64,
    /// The false-discovery rate, in percent.
    pub fdr_percent: f64,
    pub confidence_percent: f64,
}

/// One kind's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Kind {
    /// `hnsw: current vs baseline`.
    pub heading: Text,
    /// `current (created) against baseline (created).`
    pub against: Text,
    pub noise: Text,
    pub adjustment: Option<Text>,
    /// One badge per benchmark: its verdict and why.
    pub benchmarks: Vec<(Verdict, Text)>,
    /// Parameters, dataset and servers that differ.
    pub differences: Vec<Text>,
    pub rows: Vec<Row>,
    /// Benchmarks only in the baseline, then only in the current run.
    pub only_in_baseline: Vec<Text>,
    pub only_in_current: Vec<Text>,
}

/// One metric's change.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub entry: Text,
    pub metric: Text,
    pub baseline: Num,
    pub current: Num,
    pub change: Text,
    pub interval: Text,
    pub verdict: Verdict,
}

/// A verdict's CSS class.
pub fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Regressed => "regressed",
        Verdict::Improved => "improved",
        Verdict::NoChange => "nochange",
        Verdict::NotEnoughRuns => "unjudged",
        Verdict::Info => "info",
    }
}

fn kind(c: &Compared) -> Kind {
    let mut changes: Vec<_> = c
        .changes
        .iter()
        .filter(|m| m.verdict != Verdict::Info || m.ci.is_some())
        .collect();
    changes.sort_by_key(|m| m.verdict);
    Kind {
        heading: Text::new(format!(
            "{}: {} vs {}",
            c.kind, c.current_label, c.baseline_label
        )),
        against: Text::new(format!(
            "{} ({}) against {} ({}).",
            c.current_label, c.current_created_at, c.baseline_label, c.baseline_created_at
        )),
        noise: Text::new(c.noise.text()),
        adjustment: c.adjustment.as_ref().map(|a| Text::new(a.text())),
        benchmarks: c
            .benchmarks
            .iter()
            .map(|b| {
                let because = if b.because.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", b.because.join(", "))
                };
                (
                    b.verdict,
                    Text::new(format!("{}: {}{because}", b.entry, b.verdict.as_str())),
                )
            })
            .collect(),
        differences: c.differences.iter().map(Text::from).collect(),
        rows: changes
            .into_iter()
            .map(|m| Row {
                entry: Text::new(&m.entry),
                metric: Text::new(m.metric.to_string()),
                baseline: Num(Some(figure(&m.metric, m.baseline))),
                current: Num(Some(figure(&m.metric, m.current))),
                change: Text::new(m.change_text()),
                interval: Text::new(m.ci_text()),
                verdict: m.verdict,
            })
            .collect(),
        only_in_baseline: c.only_in_baseline.iter().map(Text::from).collect(),
        only_in_current: c.only_in_current.iter().map(Text::from).collect(),
    }
}

impl Comparison {
    pub fn of(view: &View) -> Self {
        Self {
            title: Text::new(&view.comparison_title),
            rules: view.comparisons.first().map(|c| Rules {
                threshold_percent: c.options.noise_threshold * 100.0,
                fdr_percent: 100.0 - c.options.confidence_percent,
                confidence_percent: c.options.confidence_percent,
            }),
            kinds: view.comparisons.iter().map(kind).collect(),
            notes: view.comparison_notes.iter().map(Text::from).collect(),
        }
    }
}

impl Render for Rules {
    fn render_to(&self, buffer: &mut String) {
        html! {
            "One verdict per benchmark, from its primary metrics (p50, p99, the rate; recall@10 and \
             the error rate by their absolute rules). A latency or rate change counts when it is \
             beyond ±" (format!("{:.0}", self.threshold_percent)) " % " em { "and" } " beyond this \
             machine's run-to-run noise — learnt from earlier comparable runs and the runs' own \
             measurement rounds — with the false-discovery rate of all the comparison's decisions \
             held at " (format!("{:.0}", self.fdr_percent)) " % (Benjamini–Hochberg). Intervals \
             are " (format!("{:.0}", self.confidence_percent)) " % intervals of the relative \
             change, between-run noise included. Without enough earlier runs the verdict is "
            i { "not enough runs to judge" } ". recall@10: beyond ±0.005 (absolute); error rate: \
             beyond ±0.001. Lower latency and higher throughput and recall are better. See "
            code { "docs/regression.md" } "."
        }
        .render_to(buffer);
    }
}

impl Render for Kind {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h3 { (self.heading) }
            p.note { (self.against) }
            p.noise { (self.noise) }
            @if let Some(a) = &self.adjustment { p.noise { (a) } }
            p {
                @for (v, text) in &self.benchmarks {
                    span class={ "badge " (verdict_class(*v)) } { (text) } " "
                }
            }
            @if self.differences.is_empty() {
                p.note { "Same parameters, dataset and servers." }
            } @else {
                p.note { "What differs:" }
                ul { @for d in &self.differences { li { code { (d) } } } }
            }
            div.scroll { table {
                tr {
                    th { "benchmark" } th { "metric" } th { "baseline" } th { "current" }
                    th { "change" } th { "interval" } th { "verdict" }
                }
                @for r in &self.rows {
                    tr {
                        td { (r.entry) } td { (r.metric) } (r.baseline) (r.current)
                        td.n { (r.change) } td.n { (r.interval) }
                        td class=(verdict_class(r.verdict)) {
                            @if r.verdict == Verdict::Info { "not judged" } @else { (r.verdict.as_str()) }
                        }
                    }
                }
                @for n in &self.only_in_baseline {
                    tr { td { (n) } td.note colspan="6" { "only in the baseline" } }
                }
                @for n in &self.only_in_current {
                    tr { td { (n) } td.note colspan="6" { "new: not in the baseline" } }
                }
            } }
        }
        .render_to(buffer);
    }
}

impl Render for Comparison {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="comparison" { "Comparison" }
            @match &self.rules {
                None => p {
                    "No comparison: save a baseline with "
                    code { "cargo bench -- --save-baseline NAME" } ", then run "
                    code { "cargo bench -- --baseline NAME" } ", or "
                    code { "cargo run --release --bin report -- --compare A,B" } "."
                },
                Some(rules) => {
                    p { b { (self.title) } ". " (rules) }
                    @for k in &self.kinds { (k) }
                },
            }
            @for n in &self.notes { p.note { (n) } }
        }
        .render_to(buffer);
    }
}
