//! Verdicts: the launch gates on each kind's latest run, and the comparison's summary.

use std::collections::BTreeMap;

use maud::{Render, html};

use super::super::compare::Verdict;
use super::super::store::Stored;
use super::super::{Finding, gates_of};
use super::View;
use super::helpers::{Text, figure, pass_cell, rows_of};
use crate::record::Kind;

/// What the section shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdicts {
    /// Nothing measured: the section says so and nothing else.
    pub empty: bool,
    pub gates: Vec<GateRow>,
    pub summary: Option<Summary>,
    /// Each comparison's noise floor, `kind: text`.
    pub noise: Vec<Text>,
    /// `regressed: entry metric a → b (+x%)`.
    pub regressions: Vec<Text>,
    pub notes: Vec<Text>,
}

/// One gate of one kind's latest run, over its entries.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRow {
    pub gate: Text,
    pub run: Text,
    pub passed: usize,
    pub total: usize,
    pub failing: Text,
}

/// The comparison's benchmarks by verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub title: Text,
    pub regressed: usize,
    pub improved: usize,
    pub no_change: usize,
    pub unjudged: usize,
}

impl Verdicts {
    pub fn of(latest: &BTreeMap<Kind, &Stored>, view: &View) -> Self {
        let mut gates = Vec::new();
        for (kind, s) in latest {
            // Gate text → (whether it is the seeds' p99 gate, entries, failing entries).
            let mut groups: BTreeMap<String, (bool, usize, Vec<String>)> = BTreeMap::new();
            for Finding { entry, gate } in gates_of(&s.record) {
                let g = groups.entry(gate.name.clone()).or_default();
                g.0 |= crate::gates::is_seeds_p99(&gate);
                g.1 += 1;
                if !gate.pass {
                    g.2.push(entry);
                }
            }
            let scale = match rows_of(s) {
                Some(r) if r < 100_000 => format!(" (at {r} rows; the seeds' gate is at 100K)"),
                _ => String::new(),
            };
            for (gate, (seeds_p99, total, failing)) in groups {
                let scale = if seeds_p99 { &scale[..] } else { "" };
                let quick = if s.record.quick() { " (quick)" } else { "" };
                gates.push(GateRow {
                    gate: Text::new(format!("{gate}{scale}")),
                    run: Text::new(format!("{kind}{quick}")),
                    passed: total - failing.len(),
                    total,
                    failing: Text::new(failing.join(", ")),
                });
            }
        }
        let count = |v: Verdict| -> usize { view.comparisons.iter().map(|c| c.count(v)).sum() };
        let summary = (!view.comparisons.is_empty()).then(|| Summary {
            title: Text::new(&view.comparison_title),
            regressed: count(Verdict::Regressed),
            improved: count(Verdict::Improved),
            no_change: count(Verdict::NoChange),
            unjudged: count(Verdict::NotEnoughRuns),
        });
        let noise = view
            .comparisons
            .iter()
            .map(|c| Text::new(format!("{}: {}", c.kind, c.noise.text())))
            .collect();
        let regressions = view
            .comparisons
            .iter()
            .flat_map(|c| c.regressions())
            .map(|m| {
                Text::new(format!(
                    "regressed: {} {} {} → {} ({})",
                    m.entry,
                    m.metric,
                    figure(&m.metric, m.baseline),
                    figure(&m.metric, m.current),
                    m.change_text()
                ))
            })
            .collect();
        Self {
            empty: latest.is_empty(),
            gates,
            summary,
            noise,
            regressions,
            notes: view.comparison_notes.iter().map(Text::from).collect(),
        }
    }
}

impl Render for Verdicts {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="verdicts" { "Verdicts" }
            @if self.empty {
                p { "Nothing measured yet." }
            } @else {
                p.note {
                    "The launch gates checked on each kind's latest run: the seeds' p99 < 50 ms, \
                     the limiter's promises and an error rate under 1 % (the service's overhead is \
                     reported as a ratio under Search over HTTP, not gated)."
                }
                div.scroll { table {
                    tr { th { "gate" } th { "run" } th { "passed" } th { "result" } th { "failing" } }
                    @for g in &self.gates {
                        tr {
                            td { (g.gate) } td { (g.run) }
                            td.n { (g.passed) "/" (g.total) }
                            (pass_cell(g.passed == g.total)) td { (g.failing) }
                        }
                    }
                } }
                @if let Some(s) = &self.summary {
                    p {
                        b { (s.title) } " (benchmarks): "
                        span class={ "badge " (if s.regressed > 0 { "regressed" } else { "nochange" }) } {
                            (s.regressed) " regressed"
                        }
                        " " span.badge.improved { (s.improved) " improved" }
                        " " (s.no_change) " no change"
                        @if s.unjudged > 0 {
                            ", " span.badge.unjudged { (s.unjudged) " not enough runs to judge" }
                        }
                        " — details in " a href="#comparison" { "Comparison" } "."
                    }
                }
                @for n in &self.noise { p.noise { (n) } }
                @for r in &self.regressions { p.warn { (r) } }
                @for n in &self.notes { p.note { (n) } }
            }
        }
        .render_to(buffer);
    }
}
