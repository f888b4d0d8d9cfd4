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

use anyhow::Result;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::Value;

use super::noise::{self, Adjustment, History, Test};
use crate::record::{self, Metric, ResultEntry, RunRecord};

mod options;
mod sample;
mod verdict;

pub use options::{Options, parse_fraction};
pub use sample::Sample;
pub(crate) use sample::seed;
pub use verdict::{
    BenchmarkVerdict, Comparison, MetricChange, NoiseFloor, OptionsShown, Rule, Verdict, number,
};

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
        baseline.kind() == current.kind(),
        "cannot compare a {} record with a {} record",
        baseline.kind(),
        current.kind()
    );
    let (bq, cq) = (baseline.quick(), current.quick());
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
        kind: current.kind(),
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
        let higher_better = c.metric.rule() == Some(Rule::HigherBetter);
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
        Metric::P50_MS,
        Metric::P99_MS,
        Metric::Qps,
        Metric::Rps,
        Metric::EvalsPerSecond,
        Metric::KneeRps,
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
                .filter(|((_, m), _)| m == &metric)
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
fn side_mean(side: &[noise::PastRun], entry: &str, metric: &Metric) -> Option<(f64, usize)> {
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
        let (Some(&base), Some(rule)) = (baseline.metrics.get(metric), metric.rule()) else {
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
            primary: metric.is_primary(),
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
    metric: &Metric,
    sample: Option<&Sample>,
    resamples: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> (f64, f64) {
    let rounds = noise::rounds_variance(entry, metric);
    let boot = sample.and_then(|s| {
        let r = match metric.rule()? {
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

/// What differs between two records' parameters, dataset and environment, as `path: a → b` lines.
pub fn differences(baseline: &RunRecord, current: &RunRecord) -> Vec<String> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    flatten("parameters", &baseline.parameters.fields(), &mut a);
    flatten("parameters", &current.parameters.fields(), &mut b);
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
mod tests;
