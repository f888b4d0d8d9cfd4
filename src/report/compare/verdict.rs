//! What a comparison says: the rule of each metric, one change per metric, one verdict per
//! benchmark, the noise floor it judged by, and the table and summary line it prints.

use std::fmt::Write as _;

pub use crate::record::Rule;
use crate::record::{Kind, Metric};
use crate::report::noise::{Adjustment, Spread};

/// The outcome for one metric, or for one benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Verdict {
    Regressed,
    Improved,
    NoChange,
    /// Too few earlier runs on this machine to know its run-to-run noise: no guess is made.
    NotEnoughRuns,
    /// Shown for context, never judged (p95, the mean, max, Criterion's median, other tools' figures…).
    Info,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regressed => "regressed",
            Verdict::Improved => "improved",
            Verdict::NoChange => "no change",
            Verdict::NotEnoughRuns => "not enough runs to judge",
            Verdict::Info => "info",
        }
    }
}

/// One metric of one benchmark, before and after.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricChange {
    pub entry: String,
    pub metric: Metric,
    pub baseline: f64,
    pub current: f64,
    /// Relative change (current / baseline − 1) for most metrics; absolute for recall and error rate.
    pub change: f64,
    pub relative: bool,
    /// The confidence interval of the relative change, between-run noise included when known
    /// (otherwise the runs' own noise only, and the verdict is "not enough runs to judge").
    pub ci: Option<(f64, f64)>,
    /// The test's two-sided p-value (before the comparison-wide Benjamini–Hochberg step).
    pub p_value: Option<f64>,
    /// The between-run spread used (1 sd of ln, ≈ relative), and from how many runs.
    pub spread: Option<Spread>,
    /// Whether it votes on the benchmark's verdict ([`primary`]).
    pub primary: bool,
    /// Runs behind each side's figure (baseline, current): more than one for a calibrated side,
    /// whose figure is then the geometric mean of its runs'.
    pub runs: (usize, usize),
    pub verdict: Verdict,
    /// `noise` (judged against the machine's noise), `absolute`, `rounds only` (no history),
    /// `info`.
    pub method: &'static str,
    /// The slope on the run's reference when the figures were judged net of it
    /// ([`noise::Adjustment`]); the baseline and current figures are then the adjusted ones (the
    /// current at the baseline's speed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
}

impl MetricChange {
    /// `+12.3%` or `-0.0100` (absolute).
    pub fn change_text(&self) -> String {
        if self.relative {
            format!("{:+.1}%", self.change * 100.0)
        } else {
            format!("{:+.4}", self.change)
        }
    }

    pub fn ci_text(&self) -> String {
        self.ci.map_or_else(
            || "-".into(),
            |(lo, hi)| format!("[{:+.1}%, {:+.1}%]", lo * 100.0, hi * 100.0),
        )
    }
}

/// One benchmark's verdict and the primary metrics that made it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchmarkVerdict {
    pub entry: String,
    pub verdict: Verdict,
    /// `p50_ms +18.2%`, … — the metrics behind a regressed or improved verdict.
    pub because: Vec<String>,
}

/// The run-to-run noise a comparison judged by: for each of p50, p99 and the rate, the median
/// over benchmarks of the between-run spread (1 sd, relative), and the runs it came from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NoiseFloor {
    /// Comparable earlier runs on this machine (the history window).
    pub runs: usize,
    pub needed: usize,
    /// (metric, median total sd) for `p50_ms`, `p99_ms` and the rate metric, when known.
    pub spread: Vec<(String, f64)>,
    /// The spreads are those net of the reference ([`noise::Adjustment`]); `raw` then holds the
    /// same medians as measured.
    pub adjusted: bool,
    pub raw: Vec<(String, f64)>,
}

impl NoiseFloor {
    /// "run-to-run spread on this machine (1 sd): ±2.1 % p50, ±6.0 % p99, ±2.4 % qps, from 12
    /// runs", or why there is none.
    pub fn text(&self) -> String {
        if self.spread.is_empty() {
            return format!(
                "not enough runs to judge: {} comparable earlier run{} on this machine, {} needed \
                 — run the bench again (each run adds one), or save the baseline with \
                 CAPBENCH_CALIBRATE={}",
                self.runs,
                if self.runs == 1 { "" } else { "s" },
                self.needed,
                self.needed
            );
        }
        let list = |v: &[(String, f64)]| {
            v.iter()
                .map(|(m, sd)| format!("±{:.1}% {}", sd * 100.0, m.trim_end_matches("_ms")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let net = if self.adjusted && !self.raw.is_empty() {
            format!(
                " net of the machine's drift (as measured: {})",
                list(&self.raw)
            )
        } else {
            String::new()
        };
        format!(
            "run-to-run spread on this machine (1 sd): {}{net}, from {} run{}",
            list(&self.spread),
            self.runs,
            if self.runs == 1 { "" } else { "s" }
        )
    }
}

/// Two runs of one kind compared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Comparison {
    pub kind: Kind,
    pub baseline_label: String,
    pub current_label: String,
    pub baseline_created_at: String,
    pub current_created_at: String,
    /// Parameters, dataset and environment that differ: `path: before → after`.
    pub differences: Vec<String>,
    /// One verdict per benchmark both runs measured.
    pub benchmarks: Vec<BenchmarkVerdict>,
    pub changes: Vec<MetricChange>,
    pub noise: NoiseFloor,
    /// How the machine's drift was taken out, or why not, when the runs measured a reference.
    pub adjustment: Option<Adjustment>,
    pub only_in_baseline: Vec<String>,
    pub only_in_current: Vec<String>,
    pub options: OptionsShown,
}

/// The options a comparison was made with (for the page and the table's header).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct OptionsShown {
    pub noise_threshold: f64,
    pub confidence_percent: f64,
    pub resamples: usize,
}

impl Comparison {
    /// The primary metrics judged regressed.
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
    }

    /// How many benchmarks got verdict `v`.
    pub fn count(&self, v: Verdict) -> usize {
        self.benchmarks.iter().filter(|b| b.verdict == v).count()
    }

    /// The one-line count: `hnsw: 0 regressed, 0 improved, 10 no change`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} regressed, {} improved, {} no change",
            self.kind,
            self.count(Verdict::Regressed),
            self.count(Verdict::Improved),
            self.count(Verdict::NoChange)
        );
        let unjudged = self.count(Verdict::NotEnoughRuns);
        if unjudged > 0 {
            let _ = write!(s, ", {unjudged} not enough runs to judge");
        }
        s
    }

    /// The table printed after a bench run with `--baseline` and by `report --compare`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n{}: {} ({}) compared with {} ({}) — practical threshold ±{:.0}%, {:.0}% intervals, \
             false-discovery rate {:.0}%",
            self.kind,
            self.current_label,
            self.current_created_at,
            self.baseline_label,
            self.baseline_created_at,
            self.options.noise_threshold * 100.0,
            self.options.confidence_percent,
            100.0 - self.options.confidence_percent,
        );
        let _ = writeln!(s, "{}", self.noise.text());
        if let Some(a) = &self.adjustment {
            let _ = writeln!(s, "{}", a.text());
        }
        let (kb, kc) = self
            .changes
            .iter()
            .map(|c| c.runs)
            .fold((1, 1), |a, r| (a.0.max(r.0), a.1.max(r.1)));
        if kb > 1 || kc > 1 {
            let _ = writeln!(
                s,
                "each side's figure is the mean of its runs: baseline {kb} run{}, current {kc} run{}",
                if kb == 1 { "" } else { "s" },
                if kc == 1 { "" } else { "s" }
            );
        }
        if self.differences.is_empty() {
            let _ = writeln!(s, "same parameters, dataset and servers");
        } else {
            let _ = writeln!(s, "what differs:");
            for d in &self.differences {
                let _ = writeln!(s, "  {d}");
            }
        }
        let _ = writeln!(
            s,
            "{:<30} {:<13} {:>11} {:>11} {:>9} {:>18}  verdict",
            "benchmark", "metric", "baseline", "current", "change", "interval"
        );
        for c in self
            .changes
            .iter()
            .filter(|c| c.verdict != Verdict::Info || c.ci.is_some())
        {
            let verdict = match c.verdict {
                Verdict::Regressed | Verdict::Improved => c.verdict.as_str().to_uppercase(),
                Verdict::Info => "(not judged)".into(),
                v => v.as_str().into(),
            };
            let _ = writeln!(
                s,
                "{:<30} {:<13} {:>11} {:>11} {:>9} {:>18}  {verdict}",
                c.entry,
                c.metric,
                number(c.baseline),
                number(c.current),
                c.change_text(),
                c.ci_text(),
            );
        }
        for name in &self.only_in_baseline {
            let _ = writeln!(
                s,
                "{name:<30} only in the baseline (not measured this time)"
            );
        }
        for name in &self.only_in_current {
            let _ = writeln!(s, "{name:<30} new (not in the baseline)");
        }
        let _ = writeln!(s, "verdict per benchmark:");
        for b in &self.benchmarks {
            let because = if b.because.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.because.join(", "))
            };
            let _ = writeln!(s, "  {:<30} {}{because}", b.entry, b.verdict.as_str());
        }
        let _ = writeln!(s, "{}", self.summary());
        s
    }
}

/// A number with enough digits for its size.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else if a >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}
