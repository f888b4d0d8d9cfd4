//! Comparing two runs of one kind: one verdict per benchmark — regressed, improved, no change, or
//! not enough runs to judge — that an A/A comparison (the same code twice) does not contradict.
//!
//! **What is judged.** Each benchmark's primary metrics ([`primary`]): p50, p99 and the rate (QPS,
//! req/s, evals/s, the knee) for latency benches; recall@10 and the error rate by their absolute
//! rules (a recall drop beyond 0.005 on the same query set, an error-rate rise beyond 0.1 point).
//! Other figures (p95, mean…) are shown with their interval, not judged.
//!
//! **Against what noise.** A latency or rate figure is compared on a log scale against the sum of
//! three variances: each run's own (the larger of the spread of its interleaved measurement rounds
//! and a bootstrap of its HDR histogram) and twice the between-run variance learnt from earlier
//! comparable runs on this machine ([`super::noise`]). Without `min_runs` earlier runs (3), the
//! between-run part is unknown and the verdict says so: "not enough runs to judge". A bench's own
//! rounds cannot replace that history: they see drift within one run, not the offsets between
//! runs (a new server process, other neighbours, another CPU frequency).
//!
//! **Many decisions at once.** Every judged primary metric of every benchmark gets a p-value from
//! a Student t (Welch–Satterthwaite degrees of freedom); the Benjamini–Hochberg procedure at the
//! significance level (5 %) decides which are real, so a comparison of 10 benchmarks × 3 metrics
//! that changed nothing is all "no change" 95 % of the time, not 21 %. A real change must also be
//! larger than the practical threshold (`--noise-threshold`, 5 %).
//!
//! **Rates.** QPS intervals come from the rounds (each round's requests / its time); for records
//! without rounds, from the histogram: for serial requests QPS is 1 / the mean latency, so its
//! relative interval is the mean's. Percentile bootstraps need no resampling loop: the k-th
//! smallest of n draws from the empirical distribution is F⁻¹(U₍ₖ₎), and the k-th order statistic
//! of n uniforms is Beta(k, n+1−k) — one Beta draw and one look-up in the histogram's CDF per
//! replicate. The generator is seeded from the names, so the same records give the same verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::Value;

use super::noise::{self, Adjustment, History, Spread, Test};
use crate::record::{self, ResultEntry, RunRecord};

/// How strict a comparison is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// The practical threshold: relative changes within ± this fraction never count (0.05: 5 %).
    pub noise_threshold: f64,
    /// The false-discovery rate of a comparison's decisions, and 1 − the confidence of the
    /// intervals shown (0.05: 95 % intervals).
    pub significance_level: f64,
    /// Bootstrap resamples per metric (default 10,000).
    pub resamples: usize,
    /// A recall@10 change beyond this (absolute) always counts (0.005).
    pub recall_threshold: f64,
    /// An error-rate change beyond this (absolute: 0.001 = 0.1 percentage point) counts.
    pub error_rate_threshold: f64,
    /// Earlier comparable runs needed to know the machine's run-to-run noise (3).
    pub min_runs: usize,
    /// The most recent comparable runs the noise is learnt from (20).
    pub window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            noise_threshold: 0.05,
            significance_level: 0.05,
            resamples: 10_000,
            recall_threshold: 0.005,
            error_rate_threshold: 0.001,
            min_runs: 3,
            window: 20,
        }
    }
}

impl Options {
    /// Reads Criterion's own flags from a bench's arguments: `--noise-threshold X`,
    /// `--significance-level X`, `--nresamples N` (defaults above when absent). Errors on a bad value.
    pub fn from_args(args: &[String]) -> Result<Self> {
        let mut o = Self::default();
        let mut it = args.iter().skip(1);
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (a.as_str(), None),
            };
            if !matches!(
                name,
                "--noise-threshold" | "--significance-level" | "--nresamples"
            ) {
                continue;
            }
            let Some(value) = inline.or_else(|| it.next().cloned()) else {
                anyhow::bail!("{name} needs a value");
            };
            match name {
                "--noise-threshold" => o.noise_threshold = parse_fraction(name, &value, true)?,
                "--significance-level" => {
                    o.significance_level = parse_fraction(name, &value, false)?
                }
                _ => {
                    o.resamples = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n >= 100)
                        .ok_or_else(|| {
                            anyhow::anyhow!("{name} must be a whole number ≥ 100, not '{value}'")
                        })?
                }
            }
        }
        Ok(o)
    }

    /// The confidence of the intervals, in percent (95 for a significance level of 0.05).
    pub fn confidence_percent(&self) -> f64 {
        (1.0 - self.significance_level) * 100.0
    }
}

/// Parses a fraction in [0, 1) (noise may be 0; significance must be in (0, 1)).
pub fn parse_fraction(name: &str, value: &str, zero_ok: bool) -> Result<f64> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v < 1.0 && (v > 0.0 || (zero_ok && v == 0.0)) => Ok(v),
        _ => anyhow::bail!(
            "{name} must be a fraction {} 1 (e.g. 0.05), not '{value}'",
            if zero_ok {
                "from 0 to below"
            } else {
                "between 0 and"
            }
        ),
    }
}

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

/// How a metric is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// A latency percentile (lower is better).
    Quantile(f64),
    /// The mean latency (lower is better).
    Mean,
    /// Throughput and the like (higher is better).
    HigherBetter,
    /// A latency without a histogram (lower is better).
    LowerBetter,
    /// recall@10: an absolute change beyond `recall_threshold` always counts.
    Recall,
    /// Failed requests / all: an absolute change beyond `error_rate_threshold` counts.
    ErrorRate,
    /// Not judged.
    Info,
}

/// The rule for metric `name`; `None` for figures that describe the setup, not the result
/// (counts, ef_search, users, the SLO).
pub fn rule(name: &str) -> Option<Rule> {
    Some(match name {
        "count" | "ef_search" | "users" | "slo_p99_ms" | "capacity" | "refill_per_second"
        | "send_rate" | "attempts" | "duration_s" => return None,
        "p50_ms" => Rule::Quantile(0.50),
        "p95_ms" => Rule::Quantile(0.95),
        "p99_ms" => Rule::Quantile(0.99),
        "mean_ms" => Rule::Mean,
        "qps" | "rps" | "evals_per_second" | "knee_rps" | "knee_users" | "knee_connections" => {
            Rule::HigherBetter
        }
        "recall_mean" => Rule::Recall,
        "error_rate" => Rule::ErrorRate,
        _ => Rule::Info,
    })
}

/// Whether metric `name` decides its benchmark's verdict: p50, p99, the rates, recall and the
/// error rate. The others are shown with their intervals but do not vote (fewer decisions, more
/// power for the ones that matter).
pub fn primary(name: &str) -> bool {
    matches!(
        name,
        "p50_ms"
            | "p99_ms"
            | "qps"
            | "rps"
            | "evals_per_second"
            | "knee_rps"
            | "knee_users"
            | "knee_connections"
            | "recall_mean"
            | "error_rate"
    )
}

/// One metric of one benchmark, before and after.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricChange {
    pub entry: String,
    pub metric: String,
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
    pub kind: String,
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

/// Compares `current` with `baseline` (both of the same kind), judging by `history`: earlier runs
/// comparable with the baseline ([`noise::comparable`]), `current` not among them.
pub fn compare(
    baseline: &RunRecord,
    baseline_label: &str,
    current: &RunRecord,
    current_label: &str,
    options: &Options,
    history: &History,
) -> Result<Comparison> {
    compare_runs(
        baseline,
        baseline_label,
        current,
        current_label,
        options,
        history,
        (history.side(baseline), history.side(current)),
    )
}

/// [`compare`] with each side's runs given: `sides` (baseline's, current's) each hold the side's
/// record and the other runs whose mean is the side's figure (`report --compare a+b+c,d+e+f`).
pub fn compare_runs(
    baseline: &RunRecord,
    baseline_label: &str,
    current: &RunRecord,
    current_label: &str,
    options: &Options,
    history: &History,
    sides: (Vec<noise::PastRun>, Vec<noise::PastRun>),
) -> Result<Comparison> {
    anyhow::ensure!(
        baseline.kind == current.kind,
        "cannot compare a {} record with a {} record",
        baseline.kind,
        current.kind
    );
    let (bq, cq) = (
        super::store::is_quick(baseline),
        super::store::is_quick(current),
    );
    anyhow::ensure!(
        bq == cq,
        "{current_label} is a {} and {baseline_label} a {}: quick mode (CAPBENCH_QUICK=1, a 20K × 256 \
         dataset, 100 queries) and full runs measure different things and are never compared",
        super::store::mode_name(cq),
        super::store::mode_name(bq)
    );
    let base: BTreeMap<&str, &ResultEntry> = baseline
        .results
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let (base_side, cur_side) = sides;
    let adjustment = Adjustment::fit(history, (&base_side, &cur_side), options.min_runs);
    let adjusted = adjustment.as_ref().filter(|a| a.applied());
    let (history, base_side, cur_side) = match adjusted {
        Some(a) => (
            a.history(history),
            base_side.iter().map(|r| a.run(r)).collect(),
            cur_side.iter().map(|r| a.run(r)).collect(),
        ),
        None => (history.clone(), base_side, cur_side),
    };
    let history = &history;
    let mut changes = Vec::new();
    let mut only_in_current = Vec::new();
    for entry in &current.results {
        match base.get(entry.name.as_str()) {
            Some(b) => changes.extend(compare_sides(
                b,
                entry,
                options,
                history,
                (&base_side, &cur_side),
                adjusted,
            )?),
            None => only_in_current.push(entry.name.clone()),
        }
    }
    decide(&mut changes, options);
    let names: BTreeSet<&str> = current.results.iter().map(|e| e.name.as_str()).collect();
    let only_in_baseline = baseline
        .results
        .iter()
        .filter(|e| !names.contains(e.name.as_str()))
        .map(|e| e.name.clone())
        .collect();
    Ok(Comparison {
        kind: current.kind.clone(),
        baseline_label: baseline_label.to_string(),
        current_label: current_label.to_string(),
        baseline_created_at: baseline.created_at.clone(),
        current_created_at: current.created_at.clone(),
        differences: differences(baseline, current),
        benchmarks: benchmark_verdicts(&changes),
        noise: noise_floor(&changes, history, options, adjusted),
        adjustment,
        changes,
        only_in_baseline,
        only_in_current,
        options: OptionsShown {
            noise_threshold: options.noise_threshold,
            confidence_percent: options.confidence_percent(),
            resamples: options.resamples,
        },
    })
}

/// The comparison-wide decision: Benjamini–Hochberg over every primary metric judged against the
/// machine's noise, then the practical threshold.
fn decide(changes: &mut [MetricChange], options: &Options) {
    let judged: Vec<usize> = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.primary && c.method == "noise")
        .map(|(i, _)| i)
        .collect();
    let p: Vec<f64> = judged
        .iter()
        .map(|&i| changes[i].p_value.unwrap_or(1.0))
        .collect();
    let rejected = noise::benjamini_hochberg(&p, options.significance_level);
    for (&i, rejected) in judged.iter().zip(rejected) {
        let c = &mut changes[i];
        let higher_better = rule(&c.metric) == Some(Rule::HigherBetter);
        let worse = if higher_better {
            c.change < -options.noise_threshold
        } else {
            c.change > options.noise_threshold
        };
        let better = if higher_better {
            c.change > options.noise_threshold
        } else {
            c.change < -options.noise_threshold
        };
        c.verdict = match (rejected, worse, better) {
            (true, true, _) => Verdict::Regressed,
            (true, _, true) => Verdict::Improved,
            _ => Verdict::NoChange,
        };
    }
}

/// One verdict per benchmark, from its primary metrics: regressed if any is, else improved if any
/// is, else not enough runs to judge if any could not be judged, else no change.
fn benchmark_verdicts(changes: &[MetricChange]) -> Vec<BenchmarkVerdict> {
    let mut by_entry: BTreeMap<&str, Vec<&MetricChange>> = BTreeMap::new();
    let mut order = Vec::new();
    for c in changes {
        if !by_entry.contains_key(c.entry.as_str()) {
            order.push(c.entry.as_str());
        }
        by_entry.entry(c.entry.as_str()).or_default().push(c);
    }
    order
        .into_iter()
        .map(|entry| {
            let primaries: Vec<&&MetricChange> =
                by_entry[entry].iter().filter(|c| c.primary).collect();
            let any = |v: Verdict| primaries.iter().any(|c| c.verdict == v);
            let verdict = if any(Verdict::Regressed) {
                Verdict::Regressed
            } else if any(Verdict::Improved) {
                Verdict::Improved
            } else if any(Verdict::NotEnoughRuns) {
                Verdict::NotEnoughRuns
            } else if primaries.is_empty() {
                Verdict::Info
            } else {
                Verdict::NoChange
            };
            let because = primaries
                .iter()
                .filter(|c| {
                    c.verdict == verdict
                        && matches!(verdict, Verdict::Regressed | Verdict::Improved)
                })
                .map(|c| format!("{} {}", c.metric, c.change_text()))
                .collect();
            BenchmarkVerdict {
                entry: entry.to_string(),
                verdict,
                because,
            }
        })
        .filter(|b| b.verdict != Verdict::Info)
        .collect()
}

fn noise_floor(
    changes: &[MetricChange],
    history: &History,
    options: &Options,
    adjustment: Option<&Adjustment>,
) -> NoiseFloor {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let mut spread = Vec::new();
    let mut raw = Vec::new();
    for metric in [
        "p50_ms",
        "p99_ms",
        "qps",
        "rps",
        "evals_per_second",
        "knee_rps",
    ] {
        let sds: Vec<f64> = changes
            .iter()
            .filter(|c| c.metric == metric)
            .filter_map(|c| c.spread.map(|s| s.total_sd))
            .collect();
        if let Some(m) = median(sds) {
            spread.push((metric.to_string(), m));
        }
        if let Some(a) = adjustment {
            let sds: Vec<f64> = a
                .fits
                .iter()
                .filter(|((_, m), _)| m == metric)
                .map(|(_, f)| f.raw_sd)
                .collect();
            if let Some(m) = median(sds) {
                raw.push((metric.to_string(), m));
            }
        }
    }
    NoiseFloor {
        runs: changes
            .iter()
            .filter_map(|c| c.spread.map(|s| s.runs))
            .max()
            .unwrap_or(history.len()),
        needed: options.min_runs,
        spread,
        adjusted: adjustment.is_some(),
        raw,
    }
}

/// The mean of ln(metric) over a side's runs, and how many there were; `None` for fewer than two
/// (the side's own record is then its figure).
fn side_mean(side: &[noise::PastRun], entry: &str, metric: &str) -> Option<(f64, usize)> {
    let logs: Vec<f64> = side
        .iter()
        .filter_map(|r| Some(r.points.get(entry)?.get(metric)?.ln))
        .collect();
    (logs.len() >= 2).then(|| (logs.iter().sum::<f64>() / logs.len() as f64, logs.len()))
}

/// Compares the metrics two entries share. Each side may be several runs (`sides`: the runs of
/// the baseline's calibration and of the current one's, each record itself included). Verdicts of
/// noise-judged primary metrics are settled comparison-wide by [`decide`].
fn compare_sides(
    baseline: &ResultEntry,
    current: &ResultEntry,
    options: &Options,
    history: &History,
    sides: (&[noise::PastRun], &[noise::PastRun]),
    adjustment: Option<&Adjustment>,
) -> Result<Vec<MetricChange>> {
    let hists = match (&baseline.histogram, &current.histogram) {
        (Some(b), Some(c)) => Some((
            Sample::of(&record::decode_histogram(b)?),
            Sample::of(&record::decode_histogram(c)?),
        )),
        _ => None,
    };
    let hists = hists.filter(|(b, c)| b.n > 0 && c.n > 0);
    let mut out = Vec::new();
    for (metric, &cur) in &current.metrics {
        let (Some(&base), Some(rule)) = (baseline.metrics.get(metric), rule(metric)) else {
            continue;
        };
        let mut change = MetricChange {
            entry: current.name.clone(),
            metric: metric.clone(),
            baseline: base,
            current: cur,
            change: relative(base, cur),
            relative: true,
            ci: None,
            p_value: None,
            spread: None,
            primary: primary(metric),
            runs: (1, 1),
            verdict: Verdict::NoChange,
            method: "noise",
            beta: None,
        };
        match rule {
            Rule::Quantile(_) | Rule::Mean | Rule::LowerBetter | Rule::HigherBetter => {
                if !(base > 0.0 && cur > 0.0 && base.is_finite() && cur.is_finite()) {
                    change.verdict = Verdict::Info;
                    change.method = "info";
                    out.push(change);
                    continue;
                }
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed(&current.name, metric));
                let (hb, hc) = match &hists {
                    Some((b, c)) => (Some(b), Some(c)),
                    None => (None, None),
                };
                let mut wb = own_variance(baseline, metric, hb, options.resamples, &mut rng);
                let mut wc = own_variance(current, metric, hc, options.resamples, &mut rng);
                let (mut b1, mut c1) = (base.ln(), cur.ln());
                // Net of the reference: each side's own run as adjusted (the last of its side).
                let own = |side: &[noise::PastRun], name: &str| {
                    side.last().and_then(|r| r.point(name, metric))
                };
                if let Some(fit) = adjustment.and_then(|a| a.fit_of(&current.name, metric))
                    && let (Some(pb), Some(pc)) =
                        (own(sides.0, &baseline.name), own(sides.1, &current.name))
                {
                    change.beta = Some(fit.beta);
                    (b1, c1) = (pb.ln, pc.ln);
                    wb = (pb.within, pb.dof);
                    wc = (pc.within, pc.dof);
                }
                let mut spread = history.spread(&current.name, metric, options.min_runs);
                // The slope was learnt from the same history: its spread pays for it (one
                // difference fewer, and never below what the fit itself measured).
                if let (Some(s), Some(beta)) = (spread.as_mut(), change.beta)
                    && let Some(fit) = adjustment.and_then(|a| a.fit_of(&current.name, metric))
                {
                    debug_assert_eq!(beta, fit.beta);
                    let within = s.total_sd * s.total_sd - s.between_sd * s.between_sd;
                    s.total_sd = s.total_sd.max(fit.adjusted_sd);
                    s.between_sd = (s.total_sd * s.total_sd - within).max(0.0).sqrt();
                    s.dof = (s.dof - 1.0).max(1.0);
                }
                // A side of k calibrated runs is judged by their mean: its variance is 1/k a run's.
                let (b_ln, kb) =
                    side_mean(sides.0, &baseline.name, metric).map_or((b1, 1), |(m, k)| (m, k));
                let (c_ln, kc) =
                    side_mean(sides.1, &current.name, metric).map_or((c1, 1), |(m, k)| (m, k));
                change.baseline = b_ln.exp();
                change.current = c_ln.exp();
                change.change = (c_ln - b_ln).exp_m1();
                change.runs = (kb, kc);
                let mut parts = vec![wb, wc];
                if let Some(s) = spread {
                    let between = s.between_sd * s.between_sd;
                    // A run's own noise no smaller than the history's typical run: the history
                    // knows better (a run with few rounds can look quiet by chance).
                    let typical = (s.total_sd * s.total_sd - between).max(0.0);
                    for p in parts.iter_mut() {
                        if p.0 < typical {
                            *p = (typical, s.dof);
                        }
                    }
                    for (p, k) in parts.iter_mut().zip([kb, kc]) {
                        p.0 /= k as f64;
                    }
                    // One estimate of the between-run variance, counted for both sides.
                    parts.push((between * (1.0 / kb as f64 + 1.0 / kc as f64), s.dof));
                }
                let test = Test::new(c_ln - b_ln, &parts);
                change.ci = Some(test.interval(1.0 - options.significance_level));
                change.p_value = Some(test.p);
                change.spread = spread;
                if !change.primary {
                    change.verdict = Verdict::Info;
                    change.method = "info";
                } else if spread.is_none() {
                    change.verdict = Verdict::NotEnoughRuns;
                    change.method = "rounds only";
                }
            }
            Rule::Recall | Rule::ErrorRate => {
                let (limit, higher_better) = if rule == Rule::Recall {
                    (options.recall_threshold, true)
                } else {
                    (options.error_rate_threshold, false)
                };
                change.change = cur - base;
                change.relative = false;
                change.method = "absolute";
                let d = if higher_better {
                    change.change
                } else {
                    -change.change
                };
                change.verdict = if d < -limit {
                    Verdict::Regressed
                } else if d > limit {
                    Verdict::Improved
                } else {
                    Verdict::NoChange
                };
            }
            Rule::Info => {
                change.verdict = Verdict::Info;
                change.method = "info";
            }
        }
        out.push(change);
    }
    Ok(out)
}

/// A run's own variance of ln(metric) and its degrees of freedom: the larger of what its rounds
/// show ([`noise::rounds_variance`]) and a bootstrap of its histogram `sample` (sampling alone;
/// for a rate of serial requests, that of 1 / the mean latency). (0, ∞) when neither is known.
pub fn own_variance(
    entry: &ResultEntry,
    metric: &str,
    sample: Option<&Sample>,
    resamples: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> (f64, f64) {
    let rounds = noise::rounds_variance(entry, metric);
    let boot = sample.and_then(|s| {
        let r = match rule(metric)? {
            r @ (Rule::Quantile(_) | Rule::Mean) => r,
            Rule::HigherBetter => Rule::Mean,
            _ => return None,
        };
        Some(s.ln_variance(r, resamples, rng))
    });
    match (rounds, boot) {
        (Some((v, dof)), Some(b)) if v >= b => (v, dof),
        (Some((v, dof)), None) => (v, dof),
        (_, Some(b)) => (b, f64::INFINITY),
        (None, None) => (0.0, f64::INFINITY),
    }
}

fn relative(base: f64, cur: f64) -> f64 {
    if base == 0.0 {
        if cur == 0.0 {
            0.0
        } else {
            f64::INFINITY.copysign(cur)
        }
    } else {
        cur / base - 1.0
    }
}

/// A stable seed from the names (FNV-1a), so verdicts do not depend on order or on the run.
pub(crate) fn seed(entry: &str, metric: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entry.bytes().chain([0]).chain(metric.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A latency histogram as an empirical distribution (milliseconds).
#[derive(Debug, Clone)]
pub struct Sample {
    /// Distinct recorded values (highest equivalent of each bucket), ascending.
    values: Vec<f64>,
    /// Cumulative counts up to and including each value.
    cumulative: Vec<u64>,
    pub n: u64,
    mean: f64,
    stdev: f64,
}

impl Sample {
    pub fn of(h: &Histogram<u64>) -> Self {
        let (mut values, mut cumulative, mut total) = (Vec::new(), Vec::new(), 0u64);
        for v in h.iter_recorded() {
            total += v.count_at_value();
            values.push(h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6);
            cumulative.push(total);
        }
        Self {
            values,
            cumulative,
            n: total,
            mean: h.mean() / 1e6,
            stdev: h.stdev() / 1e6,
        }
    }

    /// The k-th smallest value (1-based), as HdrHistogram reads a quantile.
    fn at_rank(&self, k: u64) -> f64 {
        let i = self.cumulative.partition_point(|&c| c < k.clamp(1, self.n));
        self.values[i.min(self.values.len() - 1)]
    }

    fn rank(&self, q: f64) -> u64 {
        ((q * self.n as f64).ceil() as u64).clamp(1, self.n)
    }

    /// The bootstrap variance of ln(the statistic): how much it would move from sampling alone.
    pub fn ln_variance(&self, rule: Rule, resamples: usize, rng: &mut Xoshiro256PlusPlus) -> f64 {
        let logs: Vec<f64> = (0..resamples.max(100))
            .map(|_| self.replicate(rule, rng).max(1e-12).ln())
            .collect();
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    }

    /// One bootstrap replicate of the statistic: the k-th order statistic of n draws from this
    /// distribution is F⁻¹(U₍ₖ₎) with U₍ₖ₎ ~ Beta(k, n + 1 − k); the mean of n draws is ~ Normal.
    fn replicate(&self, rule: Rule, rng: &mut Xoshiro256PlusPlus) -> f64 {
        match rule {
            Rule::Quantile(q) => {
                let k = self.rank(q);
                let u: f64 = match Beta::new(k as f64, (self.n + 1 - k) as f64) {
                    Ok(beta) => beta.sample(rng),
                    Err(_) => rng.random::<f64>(),
                };
                self.at_rank(((u * self.n as f64).ceil() as u64).clamp(1, self.n))
            }
            _ => {
                let sd = self.stdev / (self.n as f64).sqrt();
                Normal::new(self.mean, sd.max(0.0)).map_or(self.mean, |d| d.sample(rng))
            }
        }
    }
}

/// What differs between two records' parameters, dataset and environment, as `path: a → b` lines.
pub fn differences(baseline: &RunRecord, current: &RunRecord) -> Vec<String> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    flatten("parameters", &baseline.parameters, &mut a);
    flatten("parameters", &current.parameters, &mut b);
    flatten(
        "dataset",
        baseline.dataset.as_ref().unwrap_or(&Value::Null),
        &mut a,
    );
    flatten(
        "dataset",
        current.dataset.as_ref().unwrap_or(&Value::Null),
        &mut b,
    );
    let env = |r: &RunRecord| serde_json::to_value(&r.environment).unwrap_or(Value::Null);
    flatten("environment", &env(baseline), &mut a);
    flatten("environment", &env(current), &mut b);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show =
                |m: &BTreeMap<String, String>| m.get(k).cloned().unwrap_or_else(|| "-".into());
            format!("{k}: {} → {}", show(&a), show(&b))
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    //! The verdicts' error rates on synthetic runs shaped like this machine's (quick mode, hnsw).
    //! Two shapes, both measured here (docs/regression.md): [`NOV_24`], 22 runs with a run-level
    //! shift common to every benchmark of sd 8 % and no reference, and [`DEC_03`], 14 runs with
    //! the reference round trip: a common shift of sd 3.5 % of which the reference follows all
    //! but 1.6 % (slope 1.36). Each trial draws a fresh history of 20 runs (the window), a
    //! baseline and a current run (or several per side).
    use super::*;
    use crate::record::Environment;
    use rand_distr::StandardNormal;

    /// One machine's noise, each part an sd of ln.
    #[derive(Clone, Copy)]
    struct Machine {
        /// The reference's run-level shift (0: the runs have no reference).
        reference_sd: f64,
        /// How far the searches' common shift follows it, and what it does not explain.
        beta: f64,
        common_sd: f64,
        /// Each benchmark's own run offset.
        offset_sd: f64,
        /// Rounds' scatter: p50, p99, the reference's mean.
        round_sd_p50: f64,
        round_sd_p99: f64,
        round_sd_reference: f64,
    }

    const NOV_24: Machine = Machine {
        reference_sd: 0.0,
        beta: 0.0,
        common_sd: 0.08,
        offset_sd: 0.03,
        round_sd_p50: 0.11,
        round_sd_p99: 0.25,
        round_sd_reference: 0.0,
    };

    const DEC_03: Machine = Machine {
        reference_sd: 0.023,
        beta: 1.36,
        common_sd: 0.016,
        offset_sd: 0.011,
        round_sd_p50: 0.027,
        round_sd_p99: 0.06,
        round_sd_reference: 0.014,
    };

    const ROUNDS: usize = 5;
    const BENCHMARKS: usize = 10;
    const HISTORY: usize = 20;
    const REFERENCE: &str = "hnsw/reference/round_trip";

    fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
        rng.sample::<f64, _>(StandardNormal)
    }

    fn mean_of(rounds: &[BTreeMap<String, f64>], m: &str) -> f64 {
        (rounds.iter().map(|x| x[m].ln()).sum::<f64>() / rounds.len() as f64).exp()
    }

    /// One synthetic run: every benchmark's p50, p99 and QPS, from its rounds, and the
    /// reference's when the machine has one; `slowdown` multiplies every p50 (and divides QPS),
    /// never the reference.
    fn run(
        rng: &mut Xoshiro256PlusPlus,
        machine: Machine,
        at: usize,
        slowdown: f64,
        calibration: Option<&str>,
    ) -> RunRecord {
        let shift = machine.reference_sd * normal(rng);
        let common = machine.beta * shift + machine.common_sd * normal(rng);
        let mut r = RunRecord::new("hnsw", Environment::default(), serde_json::json!({}));
        r.created_at = format!("2026-01-01T{:02}:{:02}:00Z", at / 60, at % 60);
        r.calibration = calibration.map(str::to_string);
        for b in 0..BENCHMARKS {
            let base = 0.3 * (1.0 + b as f64 / 3.0) * slowdown;
            let offset = common + machine.offset_sd * normal(rng);
            let rounds: Vec<BTreeMap<String, f64>> = (0..ROUNDS)
                .map(|_| {
                    let p50 = base * (offset + machine.round_sd_p50 * normal(rng)).exp();
                    let p99 = 3.0 * base * (offset + machine.round_sd_p99 * normal(rng)).exp();
                    [
                        ("p50_ms".to_string(), p50),
                        ("p99_ms".to_string(), p99),
                        ("qps".to_string(), 1000.0 / (p50 * 1.1)),
                    ]
                    .into()
                })
                .collect();
            r.results.push(ResultEntry {
                name: format!("hnsw/ef_search/{b}"),
                metrics: ["p50_ms", "p99_ms", "qps"]
                    .iter()
                    .map(|m| (m.to_string(), mean_of(&rounds, m)))
                    .collect(),
                rounds,
                ..ResultEntry::default()
            });
        }
        if machine.reference_sd > 0.0 {
            let rounds: Vec<BTreeMap<String, f64>> = (0..ROUNDS)
                .map(|_| {
                    let mean = 0.016 * (shift + machine.round_sd_reference * normal(rng)).exp();
                    [("mean_ms".to_string(), mean)].into()
                })
                .collect();
            r.results.push(ResultEntry {
                name: REFERENCE.into(),
                metrics: [("mean_ms".to_string(), mean_of(&rounds, "mean_ms"))].into(),
                rounds,
                ..ResultEntry::default()
            });
            r.reference = Some(REFERENCE.into());
        }
        r
    }

    /// Over `trials` comparisons, the share of benchmarks (the reference not counted) judged
    /// regressed or improved (with a `slowdown` injected into the current side), and the share of
    /// comparisons with any. `per_side` runs make each side (1: a plain run; more:
    /// CAPBENCH_CALIBRATE).
    fn rates(
        machine: Machine,
        trials: usize,
        slowdown: f64,
        per_side: usize,
        seed: u64,
    ) -> (f64, f64, f64) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (mut regressed, mut improved, mut any) = (0, 0, 0);
        for _ in 0..trials {
            let mut runs: Vec<RunRecord> = (0..HISTORY)
                .map(|i| run(&mut rng, machine, i, 1.0, None))
                .collect();
            let side = |rng: &mut Xoshiro256PlusPlus, at: usize, slow: f64, id: &str| {
                (0..per_side)
                    .map(|i| run(rng, machine, at + i, slow, (per_side > 1).then_some(id)))
                    .collect::<Vec<_>>()
            };
            runs.extend(side(&mut rng, 100, 1.0, "base"));
            let current_side = side(&mut rng, 200, slowdown, "current");
            let (baseline, current) = (
                runs[runs.len() - 1].clone(),
                current_side[per_side - 1].clone(),
            );
            runs.extend(current_side[..per_side - 1].iter().cloned());
            let history = History::of(&runs, 50);
            let c = compare(&baseline, "a", &current, "b", &Options::default(), &history).unwrap();
            if machine.reference_sd > 0.0 {
                let a = c.adjustment.as_ref().expect("the runs carry a reference");
                assert!(
                    a.applied() || matches!(a.state, noise::AdjustmentState::ReferenceMoved(_)),
                    "{}",
                    a.text()
                );
            }
            let counted = |v: Verdict| {
                c.benchmarks
                    .iter()
                    .filter(|b| b.entry != REFERENCE && b.verdict == v)
                    .count()
            };
            regressed += counted(Verdict::Regressed);
            improved += counted(Verdict::Improved);
            any += usize::from(counted(Verdict::Regressed) + counted(Verdict::Improved) > 0);
            assert_eq!(c.count(Verdict::NotEnoughRuns), 0);
        }
        let n = (trials * BENCHMARKS) as f64;
        (
            regressed as f64 / n,
            improved as f64 / n,
            any as f64 / trials as f64,
        )
    }

    #[test]
    fn a_a_comparisons_stay_green_and_a_15_percent_slowdown_is_caught() {
        let (r, i, any) = rates(NOV_24, 200, 1.0, 1, 1);
        println!(
            "A/A, one run per side: {:.1} % of benchmarks regressed, {:.1} % improved; {:.1} % of \
             comparisons flagged anything",
            r * 100.0,
            i * 100.0,
            any * 100.0
        );
        assert!(r + i <= 0.05, "false positives per benchmark {:.3}", r + i);
        assert!(any <= 0.05 + 0.03, "A/A comparisons flagged {any:.3}");
        for per_side in [1, 5, 15] {
            let (r, i, any) = rates(NOV_24, 100, 1.15, per_side, 2);
            println!(
                "15 % p50 slowdown, {per_side} run(s) per side: {:.1} % of benchmarks regressed, \
                 {:.1} % improved; {:.1} % of comparisons flagged a regression",
                r * 100.0,
                i * 100.0,
                any * 100.0
            );
            assert_eq!(i, 0.0, "a slowdown is never an improvement");
            // One run per side cannot see 15 % through ±8 % run-level drift; fifteen can.
            if per_side == 15 {
                assert!(r >= 0.90, "detected in {r:.3} of benchmarks");
            }
        }
        // What one run per side does catch: a slowdown like the real m = 32 index (+30…+110 %).
        let (r, _, any) = rates(NOV_24, 100, 1.6, 1, 3);
        println!(
            "60 % p50 slowdown, 1 run per side: {:.1} % of benchmarks regressed; {:.1} % of \
             comparisons flagged a regression",
            r * 100.0,
            any * 100.0
        );
        assert!(
            any >= 0.90,
            "a 60 % slowdown flagged in {any:.3} of comparisons"
        );
    }

    #[test]
    fn with_the_reference_one_run_per_side_catches_a_15_percent_slowdown() {
        let raw = Machine {
            reference_sd: 0.0,
            common_sd: (DEC_03.common_sd.powi(2) + (DEC_03.beta * DEC_03.reference_sd).powi(2))
                .sqrt(),
            ..DEC_03
        };
        let (r, i, any) = rates(DEC_03, 200, 1.0, 1, 4);
        println!(
            "with the reference, A/A: {:.1} % of benchmarks regressed, {:.1} % improved; {:.1} % \
             of comparisons flagged anything",
            r * 100.0,
            i * 100.0,
            any * 100.0
        );
        assert!(r + i <= 0.05, "false positives per benchmark {:.3}", r + i);
        assert!(any <= 0.05 + 0.03, "A/A comparisons flagged {any:.3}");
        let (r_net, i_net, any_net) = rates(DEC_03, 100, 1.15, 1, 5);
        let (r_raw, _, any_raw) = rates(raw, 100, 1.15, 1, 5);
        println!(
            "15 % p50 slowdown, one run per side: {:.1} % of benchmarks regressed ({:.1} % of \
             comparisons) net of the reference; {:.1} % ({:.1} %) without it",
            r_net * 100.0,
            any_net * 100.0,
            r_raw * 100.0,
            any_raw * 100.0
        );
        assert_eq!(i_net, 0.0, "a slowdown is never an improvement");
        assert!(r_net >= 0.90, "detected in {r_net:.3} of benchmarks");
        assert!(any_net >= 0.95, "flagged in {any_net:.3} of comparisons");
        assert!(
            r_net > r_raw,
            "the reference adds power: {r_net:.3} vs {r_raw:.3}"
        );
    }
}
