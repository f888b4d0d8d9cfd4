//! Comparing two runs of one kind, metric by metric, with a verdict: improved, regressed or no change.
//!
//! Latency percentiles (p50, p95, p99) and the mean are compared through their stored HDR histograms:
//! a bootstrap gives a confidence interval of the relative change, and — Criterion's rule for means,
//! applied to tails — a change counts only when that whole interval lies beyond the noise threshold
//! (which also makes it significant at the chosen level). Throughput and the knee compare by the
//! noise threshold alone; recall@10 by an absolute 0.005; the error rate by an absolute 0.001.
//!
//! The bootstrap needs no resampling loop over the samples: the k-th smallest of n draws from the
//! empirical distribution is F⁻¹(U₍ₖ₎), and the k-th order statistic of n uniforms is Beta(k, n+1−k).
//! So each resample of a percentile is one Beta draw and one look-up in the histogram's CDF —
//! exact, and cheap even for a million samples. The generator is seeded from the benchmark and the
//! metric names, so the same records always give the same verdicts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::Result;
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::Value;

use crate::record::{self, ResultEntry, RunRecord};

/// How strict a comparison is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Relative changes within ± this fraction never count (default 0.05: 5 %).
    pub noise_threshold: f64,
    /// 1 − confidence of the bootstrap interval (default 0.05: a 95 % interval).
    pub significance_level: f64,
    /// Bootstrap resamples per metric (default 10,000).
    pub resamples: usize,
    /// A recall@10 change beyond this (absolute) always counts (0.005).
    pub recall_threshold: f64,
    /// An error-rate change beyond this (absolute: 0.001 = 0.1 percentage point) counts.
    pub error_rate_threshold: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            noise_threshold: 0.05,
            significance_level: 0.05,
            resamples: 10_000,
            recall_threshold: 0.005,
            error_rate_threshold: 0.001,
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

/// The outcome for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Verdict {
    Regressed,
    Improved,
    NoChange,
    /// Shown for context, never judged (max, Criterion's median, the independent tools' figures…).
    Info,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regressed => "regressed",
            Verdict::Improved => "improved",
            Verdict::NoChange => "no change",
            Verdict::Info => "info",
        }
    }
}

/// How a metric is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// A latency percentile (lower is better): bootstrap from the histograms when both have one.
    Quantile(f64),
    /// The mean latency (lower is better): bootstrap (normal approximation) from the histograms.
    Mean,
    /// Throughput and the like (higher is better): relative change against the noise threshold.
    HigherBetter,
    /// A latency without a histogram (lower is better): relative change against the noise threshold.
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
    /// The bootstrap confidence interval of the relative change, when histograms allowed one.
    pub ci: Option<(f64, f64)>,
    pub verdict: Verdict,
    /// `bootstrap`, `threshold`, `absolute` or `info`.
    pub method: &'static str,
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
    pub changes: Vec<MetricChange>,
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
    pub fn regressions(&self) -> impl Iterator<Item = &MetricChange> {
        self.changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.changes.iter().filter(|c| c.verdict == v).count()
    }

    /// The table printed after a bench run with `--baseline` and by `report --compare`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n{}: {} ({}) compared with {} ({}) — noise ±{:.0}%, {:.0}% bootstrap intervals",
            self.kind,
            self.current_label,
            self.current_created_at,
            self.baseline_label,
            self.baseline_created_at,
            self.options.noise_threshold * 100.0,
            self.options.confidence_percent,
        );
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
            "benchmark", "metric", "baseline", "current", "change", "CI"
        );
        for c in self.changes.iter().filter(|c| c.verdict != Verdict::Info) {
            let _ = writeln!(
                s,
                "{:<30} {:<13} {:>11} {:>11} {:>9} {:>18}  {}",
                c.entry,
                c.metric,
                number(c.baseline),
                number(c.current),
                c.change_text(),
                c.ci_text(),
                c.verdict
                    .as_str()
                    .to_uppercase()
                    .replace("NO CHANGE", "no change")
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
        let _ = writeln!(
            s,
            "{}: {} regressed, {} improved, {} no change",
            self.kind,
            self.count(Verdict::Regressed),
            self.count(Verdict::Improved),
            self.count(Verdict::NoChange)
        );
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

/// Compares `current` with `baseline` (both of the same kind).
pub fn compare(
    baseline: &RunRecord,
    baseline_label: &str,
    current: &RunRecord,
    current_label: &str,
    options: &Options,
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
    let mut changes = Vec::new();
    let mut only_in_current = Vec::new();
    for entry in &current.results {
        match base.get(entry.name.as_str()) {
            Some(b) => changes.extend(compare_entry(b, entry, options)?),
            None => only_in_current.push(entry.name.clone()),
        }
    }
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

/// Compares the metrics two entries share.
pub fn compare_entry(
    baseline: &ResultEntry,
    current: &ResultEntry,
    options: &Options,
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
            verdict: Verdict::NoChange,
            method: "threshold",
        };
        let noise = options.noise_threshold;
        let by_threshold = |c: f64, higher_better: bool| {
            let worse = if higher_better { c < -noise } else { c > noise };
            let better = if higher_better { c > noise } else { c < -noise };
            if worse {
                Verdict::Regressed
            } else if better {
                Verdict::Improved
            } else {
                Verdict::NoChange
            }
        };
        match rule {
            Rule::Quantile(_) | Rule::Mean if hists.is_some() => {
                let (b, c) = hists.as_ref().expect("checked");
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed(&current.name, metric));
                let (point, lo, hi) = bootstrap(b, c, rule, options, &mut rng);
                change.baseline = b.statistic(rule);
                change.current = c.statistic(rule);
                change.change = point;
                change.ci = Some((lo, hi));
                change.method = "bootstrap";
                change.verdict = if lo > noise {
                    Verdict::Regressed
                } else if hi < -noise {
                    Verdict::Improved
                } else {
                    Verdict::NoChange
                };
            }
            Rule::Quantile(_) | Rule::Mean | Rule::LowerBetter => {
                change.verdict = by_threshold(change.change, false)
            }
            Rule::HigherBetter => change.verdict = by_threshold(change.change, true),
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
fn seed(entry: &str, metric: &str) -> u64 {
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

    /// The percentile or mean the rule names (ms).
    pub fn statistic(&self, rule: Rule) -> f64 {
        match rule {
            Rule::Quantile(q) => self.at_rank(self.rank(q)),
            _ => self.mean,
        }
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

/// Point estimate and confidence interval of the relative change of a statistic.
pub fn bootstrap(
    baseline: &Sample,
    current: &Sample,
    rule: Rule,
    options: &Options,
    rng: &mut Xoshiro256PlusPlus,
) -> (f64, f64, f64) {
    let point = relative(baseline.statistic(rule), current.statistic(rule));
    let mut diffs: Vec<f64> = (0..options.resamples.max(100))
        .map(|_| {
            let b = baseline.replicate(rule, rng);
            let c = current.replicate(rule, rng);
            relative(b, c)
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let at = |p: f64| diffs[((p * (diffs.len() - 1) as f64).round() as usize).min(diffs.len() - 1)];
    let alpha = options.significance_level;
    (point, at(alpha / 2.0), at(1.0 - alpha / 2.0))
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
