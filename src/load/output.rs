//! What `load` prints: the live progress line (stderr), the end-of-run table per request name
//! with its status codes and failures, and how the run ended.

use std::io::IsTerminal;

use super::model::{self, Ending, Finished};
use super::stats::{Entry, PERCENTILES, Stats, quantile};
use super::threshold::THRESHOLD_EXIT_CODE;
use super::{LoadOutcome, NOTHING_MEASURED_EXIT_CODE, sweep};
use crate::record::Stat;

/// How the live progress line is shown.
#[derive(Debug, Clone)]
pub struct Progress {
    pub label: String,
    /// Redraw one line in place (a terminal) or print a line every 10 s (a log).
    pub tty: bool,
    pub quiet: bool,
    /// The run's stages and their unit, for the live view of the current one.
    pub stages: Option<(super::shape::Stages, &'static str)>,
}

impl Progress {
    pub fn new(label: impl Into<String>, quiet: bool) -> Self {
        Self {
            label: label.into(),
            tty: std::io::stderr().is_terminal(),
            quiet,
            stages: None,
        }
    }

    /// The live view names the current stage of `stages` (targets in `unit`).
    pub fn with_stages(mut self, stages: Option<super::shape::Stages>, unit: &'static str) -> Self {
        self.stages = stages.map(|s| (s, unit));
        self
    }

    /// The progress line after `second` seconds (in a log: every 10 s).
    pub(super) fn show(&self, stats: &Stats, users: usize, second: u64) {
        if self.quiet || (!self.tty && !second.is_multiple_of(10)) {
            return;
        }
        let last = stats.total_history().last();
        let t = &stats.total;
        let stage = self.stages.as_ref().map_or(String::new(), |(s, unit)| {
            let t = std::time::Duration::from_secs(second);
            format!(
                " {}, target {:.0} |",
                s.describe_at(t, unit),
                s.target_at(t)
            )
        });
        let line = format!(
            "{} [{:>3}s]{stage} users {users} | {:.0} req/s | p50 {:.2} ms p99 {:.2} ms (last 10 s) | {} requests, {} failures ({:.2}%)",
            self.label,
            second,
            last.map_or(0.0, |r| r.rps),
            last.map_or(0.0, |r| r.percentile(Stat::P50)),
            last.map_or(0.0, |r| r.percentile(Stat::P99)),
            t.requests,
            t.failures,
            t.error_rate() * 100.0
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    /// Ends the line redrawn in place.
    pub(super) fn finish(&self) {
        if self.tty && !self.quiet {
            eprintln!();
        }
    }
}

/// A finished run: its table, when users met their first 429, and whether the request bound or
/// the grace period cut it.
/// `recall` names the recall figures' conditions when answers were scored (`--recall`).
pub fn print_finished(done: &Finished, open_model: bool, max_requests: u64, recall: Option<&str>) {
    print_table(&done.stats, open_model);
    if let Some(label) = recall {
        for e in done.stats.entries.values() {
            if let (Some(mean), Some(min)) = (e.recall.mean(), e.recall.min()) {
                println!(
                    "{:<6} {:<36} {label}: mean {mean:.4} over {} queries, worst answer {min:.2}, {} answers scored",
                    e.method,
                    e.name,
                    e.recall.queries(),
                    e.recall.scored
                );
            }
        }
    }
    for e in done.stats.entries.values().filter(|e| e.rows > 0) {
        println!(
            "{:<6} {:<36} wrote {} rows: {:.1} vectors/s over the run (a gate: --threshold 'vectors_per_s[{}]>500')",
            e.method,
            e.name,
            e.rows,
            done.stats.vectors_per_second(e),
            e.name
        );
    }
    if !done.first_429.is_empty() {
        let mut counts: std::collections::BTreeMap<u64, usize> = Default::default();
        for n in done.first_429.values() {
            *counts.entry(*n).or_default() += 1;
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|(n, users)| format!("{users} user(s) after {n} requests"))
            .collect();
        println!("first 429: {}", parts.join(", "));
    }
    if done.ending == Ending::RequestBound {
        eprintln!("load: stopped at the request bound ({max_requests})");
    }
    if done.abandoned > 0 {
        eprintln!(
            "load: {} requests still in flight {} s after the end were abandoned (not counted)",
            done.abandoned,
            model::GRACE.as_secs()
        );
    }
}

/// A shaped run's recovery after its spike.
pub fn print_recovery(
    spike: &super::shape::Spike,
    r: &super::shape::Recovery,
    run_time: std::time::Duration,
) {
    let when = format!(
        "after the spike from {} (at {:.0} s), the load was back at {:.0} s",
        spike.level, spike.starts_at, spike.back_at
    );
    let rule = format!(
        "p95 within {}× of the pre-spike {:.2} ms and errors under {}% for {} s in a row",
        super::shape::RECOVERY_FACTOR,
        r.before_p95_ms,
        super::shape::RECOVERY_MAX_ERROR_RATE * 100.0,
        super::shape::RECOVERY_HOLD
    );
    match r.seconds {
        Some(s) => println!("recovery: {when}; {rule}: {s:.0} s later"),
        None => println!(
            "recovery: {when}; {rule}: not reached in the {:.0} s the run went on (a longer last stage shows more)",
            (run_time.as_secs_f64() - spike.back_at).max(0.0)
        ),
    }
}

/// The end-of-run table: per request name and in total (ms).
pub fn print_table(stats: &Stats, open_model: bool) {
    let header: Vec<&str> = PERCENTILES.iter().map(|(_, h)| *h).collect();
    println!();
    println!(
        "{:<6} {:<36} {:>9} {:>7} {} {:>9}",
        "Type",
        "Name",
        "# reqs",
        "# fails",
        header
            .iter()
            .map(|h| format!("{:>8}", h.replace("100%", "max")))
            .collect::<Vec<_>>()
            .join(""),
        "req/s"
    );
    let row = |e: &Entry, label: &str, uncorrected: bool| {
        let cells: String = PERCENTILES
            .iter()
            .map(|(s, _)| {
                let v = if uncorrected {
                    e.uncorrected_ms(quantile(*s))
                } else {
                    e.ms(quantile(*s))
                };
                format!("{:>8}", fmt_ms(v))
            })
            .collect();
        println!(
            "{:<6} {:<36} {:>9} {:>7} {} {:>9.1}",
            e.method,
            label,
            e.requests,
            e.failures,
            cells,
            stats.rps(e)
        );
    };
    for e in stats.entries_and_total() {
        row(e, &e.name, false);
    }
    if open_model {
        println!("uncorrected (from the actual send, as a closed-loop tool would report):");
        for e in stats.entries_and_total() {
            row(e, &format!("{} (uncorrected)", e.name), true);
        }
        // The arrivals' schedule: every request but the writers', which keep their own.
        let mut lateness = crate::record::latency_histogram();
        for e in stats
            .entries
            .values()
            .filter(|e| !super::ingest::is_insert(e))
        {
            let _ = lateness.add(&e.lateness);
        }
        let late = |q: f64| lateness.value_at_quantile(q) as f64 / 1e6;
        println!(
            "schedule: requests went out p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms after their due time \
             (the generator's hand-off; more when all --max-in-flight slots were busy)",
            late(0.5),
            late(0.99),
            lateness.max() as f64 / 1e6
        );
    }
    // Writers keep a schedule of their own (--write-rate), in either model: how late they sent says
    // whether the rate was held.
    for e in stats
        .entries
        .values()
        .filter(|e| super::ingest::is_insert(e))
    {
        let late = |q: f64| e.lateness.value_at_quantile(q) as f64 / 1e6;
        println!(
            "schedule: {} went out p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms after their due time{}",
            e.name,
            late(0.5),
            late(0.99),
            e.lateness.max() as f64 / 1e6,
            if late(0.5) > 100.0 {
                " — the writers fell behind --write-rate (more --writers or --write-batch, or a rate this server cannot take)"
            } else {
                ""
            }
        );
    }
    for e in stats.entries.values() {
        if !e.statuses.is_empty() {
            let codes: Vec<String> = e
                .statuses
                .iter()
                .map(|(s, n)| format!("{s} × {n}"))
                .collect();
            println!(
                "{:<6} {:<36} status codes: {}",
                e.method,
                e.name,
                codes.join(", ")
            );
        }
    }
    for (method, name, error, f) in stats.failure_table() {
        println!("failure: {method} {name}: {error} × {}", f.occurrences);
    }
}

/// A latency cell of the table (ms): three significant figures or so, at most two decimals.
fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// How an invocation ended, when not with every threshold held (stderr).
pub fn print_ending(outcome: &LoadOutcome, slo_p99_ms: f64) {
    if let Some(signal) = outcome.interrupted() {
        eprintln!(
            "load: interrupted ({}); the results so far are above and in the run record (exit {})",
            signal.name(),
            signal.exit_code()
        );
    } else if outcome.succeeded() == 0 {
        let failed: u64 = outcome
            .finished
            .iter()
            .map(|(_, f)| f.stats.total.failures)
            .sum();
        eprintln!(
            "load: no request succeeded ({failed} failed): nothing was measured (exit {NOTHING_MEASURED_EXIT_CODE})"
        );
    } else if !outcome.passed() {
        if outcome.swept {
            eprintln!(
                "load: no level met {} (exit {THRESHOLD_EXIT_CODE})",
                sweep::objective(slo_p99_ms)
            );
        } else {
            let failed: Vec<String> = outcome
                .verdicts
                .iter()
                .filter(|v| !v.pass)
                .map(|v| v.threshold.text.clone())
                .collect();
            eprintln!(
                "load: thresholds failed: {} (exit {THRESHOLD_EXIT_CODE})",
                failed.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_cells() {
        assert_eq!(fmt_ms(0.123_4), "0.12");
        assert_eq!(fmt_ms(12.34), "12.3");
        assert_eq!(fmt_ms(123.4), "123");
    }
}
