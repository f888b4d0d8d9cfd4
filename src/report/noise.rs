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

use crate::record::{Metric, ResultEntry, RunRecord};

/// One run's figure for one metric of one benchmark, on a log scale, with the variance of that
/// estimate within its run (0 when the run had no rounds to tell).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub ln: f64,
    pub within: f64,
    /// Degrees of freedom of `within` (rounds − 1; 10⁶ for a bootstrap's).
    pub dof: f64,
    /// The covariance of this estimate with the run's reference figure
    /// ([`REFERENCE_METRIC`] of [`RunRecord::reference`]) from rounds measured together (0 when
    /// the run has no reference or no rounds): what an adjustment by the reference needs to know
    /// its own variance ([`Adjustment`]).
    #[serde(default)]
    pub ref_cov: f64,
}

impl Point {
    /// Metric `metric` of `entry`: its value, and the spread of its per-round values when the
    /// entry was measured in two rounds or more. `None` for a missing or non-positive value.
    pub fn of(entry: &ResultEntry, metric: &Metric) -> Option<Self> {
        Self::with_sample(entry, metric, None)
    }

    /// [`Point::of`], the within-run variance also bounded below by a bootstrap of the entry's
    /// histogram `sample` ([`super::compare::own_variance`]).
    pub fn with_sample(
        entry: &ResultEntry,
        metric: &Metric,
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
            ref_cov: 0.0,
        })
    }
}

/// The variance of the mean of ln(per-round value) — the run's standard error² from its rounds —
/// and its degrees of freedom; `None` with fewer than two rounds carrying the metric.
pub fn rounds_variance(entry: &ResultEntry, metric: &Metric) -> Option<(f64, f64)> {
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

/// The covariance of the mean of ln(per-round `metric`) of `entry` with that of `REFERENCE_METRIC`
/// of `reference`, over rounds measured together (`None` unless both have the same two or more).
pub fn rounds_covariance(
    entry: &ResultEntry,
    metric: &Metric,
    reference: &ResultEntry,
) -> Option<f64> {
    let pairs: Vec<(f64, f64)> = entry
        .rounds
        .iter()
        .zip(&reference.rounds)
        .filter_map(|(x, r)| Some((*x.get(metric)?, *r.get(&REFERENCE_METRIC)?)))
        .filter(|(x, r)| x.is_finite() && r.is_finite() && *x > 0.0 && *r > 0.0)
        .map(|(x, r)| (x.ln(), r.ln()))
        .collect();
    if pairs.len() < 2 || entry.rounds.len() != reference.rounds.len() {
        return None;
    }
    let n = pairs.len() as f64;
    let (mx, mr) = pairs
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
    let cov = pairs.iter().map(|(x, r)| (x - mx) * (r - mr)).sum::<f64>() / (n - 1.0);
    Some(cov / n)
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
    pub points: BTreeMap<String, BTreeMap<Metric, Point>>,
    /// The run's reference entry ([`RunRecord::reference`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

impl PastRun {
    /// `metric` of benchmark `entry` in this run.
    pub fn point(&self, entry: &str, metric: &Metric) -> Option<Point> {
        self.points.get(entry)?.get(metric).copied()
    }

    /// This run's reference figure ([`REFERENCE_METRIC`] of its reference entry).
    pub fn reference_point(&self) -> Option<Point> {
        self.point(self.reference.as_deref()?, &REFERENCE_METRIC)
    }

    /// The judged metrics of every entry of `record`.
    pub fn of(record: &RunRecord) -> Self {
        let reference = record
            .reference
            .as_deref()
            .and_then(|name| record.results.iter().find(|e| e.name == name));
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
                            m.rule(),
                            Some(
                                super::compare::Rule::Quantile(_)
                                    | super::compare::Rule::Mean
                                    | super::compare::Rule::HigherBetter
                                    | super::compare::Rule::LowerBetter
                            )
                        )
                    })
                    .filter_map(|m| {
                        let mut p = Point::with_sample(e, m, sample.as_ref())?;
                        if let Some(r) = reference {
                            p.ref_cov = rounds_covariance(e, m, r).unwrap_or(0.0);
                        }
                        Some((m.clone(), p))
                    })
                    .collect();
                (e.name.clone(), metrics)
            })
            .collect();
        Self {
            created_at: record.created_at.clone(),
            calibration: record.calibration.clone(),
            points,
            reference: record.reference.clone(),
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
    pub fn spread(&self, entry: &str, metric: &Metric, min_runs: usize) -> Option<Spread> {
        let points: Vec<Point> = self
            .runs
            .iter()
            .filter_map(|r| r.point(entry, metric))
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
    let (ea, eb) = (&a.environment, &b.environment);
    a.parameters.same_test(&b.parameters)
        && a.dataset == b.dataset
        && ea.cpu_model == eb.cpu_model
        && ea.cores == eb.cores
        && ea.postgres_version == eb.postgres_version
        && ea.pgvector_version == eb.pgvector_version
        && ea.postgres_settings == eb.postgres_settings
        && ea.redis_version == eb.redis_version
}

mod stats;
pub use stats::{Test, benjamini_hochberg};

mod paired;
pub use paired::Paired;

mod adjustment;
pub use adjustment::{
    Adjustment, AdjustmentState, FIT_MIN_RUNS, Fit, REFERENCE_METRIC, REFERENCE_MOVED_P,
};

#[cfg(test)]
mod tests;
