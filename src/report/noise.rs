//! The machine's noise: how far a benchmark's figures move between runs of the same code on the same
//! machine — learnt from earlier runs, because one run cannot see it.
//!
//! A run's figure (its p50, p99, QPS…) differs from the "true" figure for two reasons: sampling
//! (which queries happened to be slow in this run) and drift (CPU frequency, neighbours on a shared
//! VM, the state of caches and of the server process — things that change from one run to the
//! next, and within a run from one minute to the next). A bootstrap inside one run sees only the
//! first; on a shared VM the second is larger, which is why two identical runs were routinely
//! "significantly" different. So:
//!
//! - **within a run**, benchmarks are measured in interleaved rounds (see `bench::Rounds`), and the
//!   spread of the per-round figures (ln scale) over √rounds is the run's own standard error,
//!   drift during the run included;
//! - **between runs**, the earlier comparable runs ([`comparable`]: same kind, mode, dataset,
//!   machine, server versions, parameters) give the spread of the run-level figures. Its
//!   estimator is the mean square successive difference (von Neumann): a step in the history (a
//!   real change some commits ago) inflates it by one difference, not by every run after it.
//!   What the runs' own standard errors do not explain is the between-run component.
//!
//! A difference between two runs is then judged against `w_base + w_current + 2·σ²_between`, with a
//! Student t whose degrees of freedom come from Welch–Satterthwaite. The decisions across a
//! comparison are made together, with the Benjamini–Hochberg procedure (see [`benjamini_hochberg`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::record::{ResultEntry, RunRecord};

/// One run's figure for one metric of one benchmark, on a log scale, with the variance of that
/// estimate within its run (0 when the run had no rounds to tell).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub ln: f64,
    pub within: f64,
    /// Degrees of freedom of `within` (rounds − 1; 10⁶ for a bootstrap's).
    pub dof: f64,
}

impl Point {
    /// Metric `metric` of `entry`: its value, and the spread of its per-round values when the
    /// entry was measured in two rounds or more. `None` for a missing or non-positive value.
    pub fn of(entry: &ResultEntry, metric: &str) -> Option<Self> {
        Self::with_sample(entry, metric, None)
    }

    /// [`Point::of`], the within-run variance also bounded below by a bootstrap of the entry's
    /// histogram `sample` ([`super::compare::own_variance`]).
    pub fn with_sample(
        entry: &ResultEntry,
        metric: &str,
        sample: Option<&super::compare::Sample>,
    ) -> Option<Self> {
        let v = *entry.metrics.get(metric)?;
        if !(v.is_finite() && v > 0.0) {
            return None;
        }
        let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(
            super::compare::seed(&entry.name, metric),
        );
        let (within, dof) =
            super::compare::own_variance(entry, metric, sample, HISTORY_RESAMPLES, &mut rng);
        Some(Self {
            ln: v.ln(),
            within,
            // Finite, so that it survives JSON (a bootstrap's "∞" is plenty at a million).
            dof: dof.min(1e6),
        })
    }
}

/// The variance of the mean of ln(per-round value) — the run's standard error² from its rounds —
/// and its degrees of freedom; `None` with fewer than two rounds carrying the metric.
pub fn rounds_variance(entry: &ResultEntry, metric: &str) -> Option<(f64, f64)> {
    let logs: Vec<f64> = entry
        .rounds
        .iter()
        .filter_map(|r| r.get(metric))
        .filter(|v| v.is_finite() && **v > 0.0)
        .map(|v| v.ln())
        .collect();
    if logs.len() < 2 {
        return None;
    }
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((var / n, n - 1.0))
}

/// Bootstrap resamples for the within-run variance of a history run's figure.
const HISTORY_RESAMPLES: usize = 1000;

/// One earlier run, reduced to what the noise estimate needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PastRun {
    pub created_at: String,
    /// The calibration it belongs to ([`RunRecord::calibration`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// Benchmark → metric → point.
    pub points: BTreeMap<String, BTreeMap<String, Point>>,
}

impl PastRun {
    /// The judged metrics of every entry of `record`.
    pub fn of(record: &RunRecord) -> Self {
        let points = record
            .results
            .iter()
            .map(|e| {
                let sample = e
                    .histogram
                    .as_deref()
                    .and_then(|h| crate::record::decode_histogram(h).ok())
                    .map(|h| super::compare::Sample::of(&h))
                    .filter(|s| s.n > 0);
                let metrics = e
                    .metrics
                    .keys()
                    .filter(|m| {
                        matches!(
                            super::compare::rule(m),
                            Some(
                                super::compare::Rule::Quantile(_)
                                    | super::compare::Rule::Mean
                                    | super::compare::Rule::HigherBetter
                                    | super::compare::Rule::LowerBetter
                            )
                        )
                    })
                    .filter_map(|m| Some((m.clone(), Point::with_sample(e, m, sample.as_ref())?)))
                    .collect();
                (e.name.clone(), metrics)
            })
            .collect();
        Self {
            created_at: record.created_at.clone(),
            calibration: record.calibration.clone(),
            points,
        }
    }
}

/// Earlier comparable runs, oldest first: the machine's noise for one kind of record. Saved with a
/// baseline (`baselines/NAME/<kind>.noise.json`), so a CI job that restores only the baseline
/// still knows the noise it was measured with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    pub runs: Vec<PastRun>,
    /// Runs of the judged run's calibration that are not comparable with the baseline (another
    /// dataset, say): they make the current side's mean, never the noise estimate.
    #[serde(skip)]
    pub siblings: Vec<PastRun>,
}

/// How far one metric of one benchmark moves between runs (natural-log scale, i.e. ≈ relative).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Runs it was learnt from.
    pub runs: usize,
    /// Standard deviation of a run's figure around the true one (sampling and drift).
    pub total_sd: f64,
    /// The part of it that a run's own rounds do not show.
    pub between_sd: f64,
    /// Degrees of freedom of the estimate.
    pub dof: f64,
}

impl History {
    /// The runs of `records` (any order), oldest first, the last `window` kept. Records with the
    /// same `created_at` count once.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a RunRecord>, window: usize) -> Self {
        let mut h = Self {
            runs: records.into_iter().map(PastRun::of).collect(),
            siblings: Vec::new(),
        };
        h.tidy(window);
        h
    }

    /// Adds `other`'s runs (a baseline's saved noise) to these.
    pub fn merge(&mut self, other: History, window: usize) {
        self.runs.extend(other.runs);
        self.tidy(window);
    }

    fn tidy(&mut self, window: usize) {
        self.runs.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        self.runs.dedup_by(|a, b| a.created_at == b.created_at);
        let excess = self.runs.len().saturating_sub(window.max(1));
        self.runs.drain(..excess);
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs of `record`'s calibration (`record` itself included, once): the runs whose mean is
    /// that side's figure. Just `record` when it was not calibrated.
    pub fn side(&self, record: &RunRecord) -> Vec<PastRun> {
        let mut side: Vec<PastRun> = match &record.calibration {
            Some(id) => {
                let mut side: Vec<PastRun> = self
                    .runs
                    .iter()
                    .chain(&self.siblings)
                    .filter(|r| {
                        r.calibration.as_ref() == Some(id) && r.created_at != record.created_at
                    })
                    .cloned()
                    .collect();
                side.sort_by(|a, b| a.created_at.cmp(&b.created_at));
                side.dedup_by(|a, b| a.created_at == b.created_at);
                side
            }
            None => Vec::new(),
        };
        side.push(PastRun::of(record));
        side
    }

    /// The spread of `metric` of benchmark `entry`, from the runs that measured it; `None` with
    /// fewer than `min_runs` of them.
    pub fn spread(&self, entry: &str, metric: &str, min_runs: usize) -> Option<Spread> {
        let points: Vec<Point> = self
            .runs
            .iter()
            .filter_map(|r| r.points.get(entry)?.get(metric).copied())
            .collect();
        if points.len() < min_runs.max(2) {
            return None;
        }
        let n = points.len() as f64;
        let mssd = points
            .windows(2)
            .map(|w| (w[1].ln - w[0].ln).powi(2))
            .sum::<f64>()
            / (2.0 * (n - 1.0));
        let within = points.iter().map(|p| p.within).sum::<f64>() / n;
        Some(Spread {
            runs: points.len(),
            total_sd: mssd.sqrt(),
            between_sd: (mssd - within).max(0.0).sqrt(),
            dof: n - 1.0,
        })
    }
}

/// Whether two records measured the same thing on the same machine, so that their difference is
/// noise: same kind and mode, dataset, CPU, core count, server versions and settings, and
/// parameters (ignoring which ef_search values were selected, and the prewarm's byte counts).
pub fn comparable(a: &RunRecord, b: &RunRecord) -> bool {
    let params = |r: &RunRecord| {
        let mut p = r.parameters.clone();
        if let Some(o) = p.as_object_mut() {
            o.remove("ef_search");
            o.remove("prewarmed");
        }
        p
    };
    let (ea, eb) = (&a.environment, &b.environment);
    a.kind == b.kind
        && a.dataset == b.dataset
        && params(a) == params(b)
        && ea.cpu_model == eb.cpu_model
        && ea.cores == eb.cores
        && ea.postgres_version == eb.postgres_version
        && ea.pgvector_version == eb.pgvector_version
        && ea.postgres_settings == eb.postgres_settings
        && ea.redis_version == eb.redis_version
}

/// A difference of two ln figures, judged against its variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    /// ln(current / baseline).
    pub diff: f64,
    /// Its standard error.
    pub se: f64,
    pub dof: f64,
    /// Two-sided p-value.
    pub p: f64,
}

impl Test {
    /// `components`: (variance, degrees of freedom — `f64::INFINITY` when known exactly or from a
    /// bootstrap of many samples) of each independent part of the difference's variance.
    pub fn new(diff: f64, components: &[(f64, f64)]) -> Self {
        let var: f64 = components.iter().map(|c| c.0).sum();
        let denom: f64 = components
            .iter()
            .filter(|c| c.1.is_finite() && c.1 > 0.0)
            .map(|c| c.0 * c.0 / c.1)
            .sum();
        let dof = if denom > 0.0 {
            (var * var / denom).clamp(1.0, 1e6)
        } else {
            1e6
        };
        let se = var.sqrt();
        let p = if se > 0.0 {
            2.0 * (1.0 - t_cdf((diff / se).abs(), dof))
        } else if diff == 0.0 {
            1.0
        } else {
            0.0
        };
        Self { diff, se, dof, p }
    }

    /// The two-sided interval of the relative change at `confidence` (0.95), as
    /// (exp(lo) − 1, exp(hi) − 1).
    pub fn interval(&self, confidence: f64) -> (f64, f64) {
        let t = t_quantile(0.5 + confidence / 2.0, self.dof);
        (
            (self.diff - t * self.se).exp() - 1.0,
            (self.diff + t * self.se).exp() - 1.0,
        )
    }
}

fn t_cdf(x: f64, dof: f64) -> f64 {
    StudentsT::new(0.0, 1.0, dof).map_or(0.5, |t| t.cdf(x))
}

fn t_quantile(p: f64, dof: f64) -> f64 {
    StudentsT::new(0.0, 1.0, dof).map_or(1.96, |t| t.inverse_cdf(p))
}

/// Which of the hypotheses with p-values `p` are rejected at false-discovery rate `q`
/// (Benjamini–Hochberg): sort ascending, find the largest k with p₍ₖ₎ ≤ k·q/m, reject the k
/// smallest. When nothing changed at all, this rejects anything with probability ≤ q — a whole
/// A/A comparison stays green 95 % of the time however many benchmarks it holds; when many things
/// changed (a slower index slows every ef_search), it keeps the power a per-test 5 % would have.
pub fn benjamini_hochberg(p: &[f64], q: f64) -> Vec<bool> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let k = order
        .iter()
        .enumerate()
        .filter(|(rank, i)| p[**i] <= (rank + 1) as f64 * q / m as f64)
        .map(|(rank, _)| rank + 1)
        .max()
        .unwrap_or(0);
    let mut out = vec![false; m];
    for &i in &order[..k] {
        out[i] = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benjamini_hochberg_rejects_the_step_up_set() {
        // m = 4, q = 0.05: thresholds 0.0125, 0.025, 0.0375, 0.05; 0.03 misses rank 2's.
        assert_eq!(
            benjamini_hochberg(&[0.04, 0.001, 0.03, 0.5], 0.05),
            vec![false, true, false, false]
        );
        assert_eq!(
            benjamini_hochberg(&[0.04, 0.001, 0.02, 0.5], 0.05),
            vec![false, true, true, false]
        );
        // Step-up: 0.049 ≤ 0.05 at rank 4 rejects all four, even 0.04 above its own rank's 0.0375.
        assert_eq!(
            benjamini_hochberg(&[0.04, 0.001, 0.03, 0.049], 0.05),
            vec![true; 4]
        );
        assert_eq!(benjamini_hochberg(&[0.2, 0.3], 0.05), vec![false, false]);
        assert!(benjamini_hochberg(&[], 0.05).is_empty());
    }

    #[test]
    fn a_t_test_matches_the_tables() {
        // t = 2.228 at 10 dof is the 97.5th percentile.
        let t = Test::new(2.228, &[(1.0, 10.0)]);
        assert!((t.p - 0.05).abs() < 1e-3, "{t:?}");
        assert!((t.dof - 10.0).abs() < 1e-9);
        // Welch–Satterthwaite: two equal variances of 5 dof each make 10.
        let t = Test::new(0.0, &[(1.0, 5.0), (1.0, 5.0)]);
        assert!((t.dof - 10.0).abs() < 1e-9 && t.p == 1.0);
        // A known (infinite-dof) part adds variance but no uncertainty about it.
        let t = Test::new(1.96, &[(1.0, f64::INFINITY)]);
        assert!((t.p - 0.05).abs() < 1e-3, "{t:?}");
        let (lo, hi) = Test::new(0.0, &[(0.01, f64::INFINITY)]).interval(0.95);
        assert!((lo - (-0.196f64).exp_m1()).abs() < 1e-3 && (hi - 0.196f64.exp_m1()).abs() < 1e-3);
    }

    fn entry_with_rounds(name: &str, value: f64, rounds: &[f64]) -> ResultEntry {
        ResultEntry {
            name: name.into(),
            metrics: [("p50_ms".to_string(), value)].into(),
            rounds: rounds
                .iter()
                .map(|v| [("p50_ms".to_string(), *v)].into())
                .collect(),
            ..ResultEntry::default()
        }
    }

    #[test]
    fn the_spread_comes_from_successive_differences_and_a_step_costs_one() {
        let run = |t: &str, v: f64| PastRun {
            created_at: t.into(),
            calibration: None,
            points: [(
                "e".to_string(),
                [(
                    "p50_ms".to_string(),
                    Point::of(&entry_with_rounds("e", v, &[]), "p50_ms").unwrap(),
                )]
                .into(),
            )]
            .into(),
        };
        let alternating: Vec<PastRun> = (0..9)
            .map(|i| run(&format!("t{i}"), if i % 2 == 0 { 1.0 } else { 1.1 }))
            .collect();
        let h = History {
            runs: alternating.clone(),
            ..History::default()
        };
        let s = h.spread("e", "p50_ms", 3).unwrap();
        // Every successive difference is ln 1.1: MSSD = ln²1.1 / 2.
        assert!(
            (s.total_sd - 1.1f64.ln() / 2f64.sqrt()).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!((s.runs, s.dof), (9, 8.0));
        // A single step (1.0 ×4 then 1.1 ×5) is one difference in eight.
        let step = History {
            runs: (0..9)
                .map(|i| run(&format!("t{i}"), if i < 4 { 1.0 } else { 1.1 }))
                .collect(),
            ..History::default()
        };
        let st = step.spread("e", "p50_ms", 3).unwrap();
        assert!(st.total_sd < s.total_sd / 2.0, "{st:?}");
        // Too few runs: no spread.
        assert!(h.spread("e", "p50_ms", 10).is_none());
        assert!(h.spread("other", "p50_ms", 3).is_none());
    }

    #[test]
    fn rounds_give_the_runs_own_standard_error() {
        let e = entry_with_rounds("e", 1.0, &[1.0, 1.2, 1.0, 1.2]);
        let (var, dof) = rounds_variance(&e, "p50_ms").unwrap();
        let l = 1.2f64.ln();
        // Four rounds at 0 and ln 1.2: sample variance l²/3; over √4.
        assert!((var - l * l / 3.0 / 4.0).abs() < 1e-12, "{var}");
        assert_eq!(dof, 3.0);
        assert!(rounds_variance(&entry_with_rounds("e", 1.0, &[1.0]), "p50_ms").is_none());
    }

    #[test]
    fn history_keeps_the_latest_window_once() {
        let run = |t: &str| PastRun {
            created_at: t.into(),
            calibration: None,
            points: BTreeMap::new(),
        };
        let mut h = History {
            runs: vec![run("c"), run("a")],
            ..History::default()
        };
        h.merge(
            History {
                runs: vec![run("b"), run("a"), run("d")],
                ..History::default()
            },
            3,
        );
        let times: Vec<&str> = h.runs.iter().map(|r| r.created_at.as_str()).collect();
        assert_eq!(times, vec!["b", "c", "d"]);
    }

    #[test]
    fn drift_shared_by_both_sides_cancels() {
        // The machine drifts by ±30 % from round to round; b is always 20 % slower than a.
        let drift = [1.0, 1.3, 0.7, 1.1, 0.9];
        let a = entry_with_rounds("a", 0.5, &drift.map(|d| 0.5 * d));
        let b = entry_with_rounds("b", 0.6, &drift.map(|d| 0.6 * d));
        let p = Paired::of(&a, &b, "p50_ms", 0.95).unwrap();
        assert!((p.change - 0.2).abs() < 1e-9, "{p:?}");
        assert!(
            (p.ci.0 - 0.2).abs() < 1e-9 && (p.ci.1 - 0.2).abs() < 1e-9,
            "{p:?}"
        );
        assert_eq!(p.rounds, 5);
        assert!(
            p.text().starts_with("b vs a, p50_ms: +20.0%"),
            "{}",
            p.text()
        );
        // With a little noise of its own, the interval widens but still excludes 0.
        let b = entry_with_rounds("b", 0.6, &[0.61, 0.77, 0.41, 0.66, 0.53]);
        let p = Paired::of(&a, &b, "p50_ms", 0.95).unwrap();
        assert!(p.ci.0 > 0.1 && p.ci.1 < 0.3, "{p:?}");
        assert!(Paired::of(&a, &entry_with_rounds("c", 0.5, &[0.5]), "p50_ms", 0.95).is_none());
    }
}

/// Two benchmarks of one run compared round by round: the rounds were interleaved (A B A B…), so
/// whatever moved the machine during a round moved both, and their ratio cancels it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paired {
    pub a: String,
    pub b: String,
    pub metric: String,
    /// Rounds both measured.
    pub rounds: usize,
    /// Geometric mean over rounds of b / a, minus 1 (+0.20: b's figure is 20 % higher).
    pub change: f64,
    /// Its interval at the asked confidence (Student t on the rounds' log ratios).
    pub ci: (f64, f64),
    /// Each round's b / a.
    pub ratios: Vec<f64>,
}

impl Paired {
    /// `b` against `a` on `metric` (e.g. `p50_ms`), from the entries' rounds; `None` with fewer
    /// than two rounds both carry.
    pub fn of(a: &ResultEntry, b: &ResultEntry, metric: &str, confidence: f64) -> Option<Self> {
        let logs: Vec<f64> = a
            .rounds
            .iter()
            .zip(&b.rounds)
            .filter_map(|(x, y)| {
                let (x, y) = (*x.get(metric)?, *y.get(metric)?);
                (x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite()).then(|| (y / x).ln())
            })
            .collect();
        if logs.len() < 2 {
            return None;
        }
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let var = logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let t = Test::new(mean, &[(var / n, n - 1.0)]);
        Some(Self {
            a: a.name.clone(),
            b: b.name.clone(),
            metric: metric.to_string(),
            rounds: logs.len(),
            change: mean.exp_m1(),
            ci: t.interval(confidence),
            ratios: logs.iter().map(|l| l.exp()).collect(),
        })
    }

    /// `hnsw/ef_search/64 vs hnsw/ef_search/40, p50_ms: +21.3% [+18.0%, +24.7%] over 5 interleaved rounds (each round's ratio: 1.19 1.22 …)`
    pub fn text(&self) -> String {
        format!(
            "{} vs {}, {}: {:+.1}% [{:+.1}%, {:+.1}%] over {} interleaved rounds (each round's ratio: {})",
            self.b,
            self.a,
            self.metric,
            self.change * 100.0,
            self.ci.0 * 100.0,
            self.ci.1 * 100.0,
            self.rounds,
            self.ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}
