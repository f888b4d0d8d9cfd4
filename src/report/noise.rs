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

use std::collections::{BTreeMap, BTreeSet};

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

/// The reference's figure that stands for the machine's speed in a run: the mean latency of its
/// round trips (measured on this machine, it follows the run-level shift of the searches more
/// closely than its median: ρ ≈ 0.9 over 14 quick runs, docs/regression.md).
pub const REFERENCE_METRIC: Metric = Metric::MEAN_MS;

/// How one benchmark's metric follows the reference, learnt from the history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fit {
    /// ln(metric) moves by `beta` × ln(reference) from run to run.
    pub beta: f64,
    /// The metric's run-to-run spread (1 sd of ln) as measured, and net of the reference.
    pub raw_sd: f64,
    pub adjusted_sd: f64,
    /// History runs that carried both.
    pub runs: usize,
}

/// Whether a comparison was judged net of the reference, and why not when it was not.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum AdjustmentState {
    /// Figures judged net of the reference.
    Applied,
    /// The reference itself moved beyond this machine's noise between the sides (p-value given):
    /// the machine, the servers' statement handling or the client changed, and taking that out
    /// could hide or fake a change; figures judged as measured.
    ReferenceMoved(f64),
    /// Fewer history runs with the reference (first) than a fit needs (second).
    NotEnoughRuns(usize, usize),
}

/// Taking the machine's drift out of a comparison: a control variate.
///
/// Every benchmark of a run shares a run-level shift (sd ≈ 3–8 % here) that a run's own rounds
/// cannot see and that one run per side cannot tell from a real change. The reference — measured
/// in the same rounds, with no search work — shares that shift but not the system under test. So
/// each run's figure is judged as `ln x − β·(ln r − ln r₀)`, r the run's reference figure, r₀ the
/// baseline's, β the slope of the metric's successive differences on the reference's in the
/// history (the same differences the spread comes from). The adjusted history then gives the
/// spread (smaller when the reference follows the drift), and each run's own variance becomes
/// `w_x + β²·w_r − 2β·cov` from rounds measured together. A fit is used only where it makes the
/// history's spread smaller after paying for the slope it estimated; and not at all when the
/// reference itself moved beyond its noise between the sides ([`AdjustmentState::ReferenceMoved`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adjustment {
    /// The reference entry's name.
    pub reference: String,
    pub state: AdjustmentState,
    /// ln(current reference / baseline reference), each side's mean.
    pub reference_change: f64,
    /// (entry, metric) → fit, for the pairs the adjustment takes effect on.
    #[serde(skip)]
    pub fits: BTreeMap<(String, Metric), Fit>,
    /// ln r₀: the baseline side's reference.
    anchor: f64,
}

/// How sure a comparison must be that the reference itself moved before it stops taking the
/// reference out (a two-sided p-value). Not the comparison's 5 %: drift is what moves the
/// reference, and an A/A pair whose whole run drifted by 6 % is exactly the pair the adjustment
/// is for (measured: one of 13 consecutive A/A pairs here). What it guards against moves the
/// round trip by tens of percent — a per-statement cost added to 16 µs (a logging setting,
/// another client build), which β would otherwise take out of the searches several times over.
pub const REFERENCE_MOVED_P: f64 = 0.001;

/// History runs a fit needs at least (one slope from ≥ 3 differences).
pub const FIT_MIN_RUNS: usize = 4;

impl Adjustment {
    /// The adjustment for a comparison of `sides` (baseline's runs, current's runs) judged by
    /// `history`; `None` when the runs have no reference in common.
    pub fn fit(
        history: &History,
        sides: (&[PastRun], &[PastRun]),
        min_runs: usize,
    ) -> Option<Self> {
        let name = sides.1.last()?.reference.clone()?;
        if sides.0.last()?.reference.as_deref() != Some(&name) {
            return None;
        }
        let side_ref = |side: &[PastRun]| {
            let logs: Vec<f64> = side
                .iter()
                .filter_map(|r| Some(r.reference_point()?.ln))
                .collect();
            (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64, logs.len()))
        };
        let ((anchor, kb), (cur, kc)) = (side_ref(sides.0)?, side_ref(sides.1)?);
        let mut adj = Self {
            reference: name.clone(),
            state: AdjustmentState::Applied,
            reference_change: cur - anchor,
            fits: BTreeMap::new(),
            anchor,
        };
        let with_ref: Vec<&PastRun> = history
            .runs
            .iter()
            .filter(|r| r.reference.as_deref() == Some(&name) && r.reference_point().is_some())
            .collect();
        let needed = min_runs.max(FIT_MIN_RUNS);
        if with_ref.len() < needed {
            adj.state = AdjustmentState::NotEnoughRuns(with_ref.len(), needed);
            return Some(adj);
        }
        // Did the reference itself move? Judged against its own spread, as measured.
        if let Some(s) = history.spread(&name, &REFERENCE_METRIC, needed) {
            let var = s.total_sd * s.total_sd * (1.0 / kb as f64 + 1.0 / kc as f64);
            let test = Test::new(cur - anchor, &[(var, s.dof)]);
            if test.p < REFERENCE_MOVED_P {
                adj.state = AdjustmentState::ReferenceMoved(test.p);
                return Some(adj);
            }
        }
        let keys: BTreeSet<(String, Metric)> = sides
            .1
            .iter()
            .flat_map(|r| {
                r.points
                    .iter()
                    .flat_map(|(e, m)| m.keys().map(move |metric| (e.clone(), metric.clone())))
            })
            .filter(|(e, _)| *e != name)
            .collect();
        for (entry, metric) in keys {
            let pairs: Vec<(f64, f64)> = with_ref
                .iter()
                .filter_map(|r| Some((r.point(&entry, &metric)?.ln, r.reference_point()?.ln)))
                .collect();
            if pairs.len() < needed {
                continue;
            }
            let d: Vec<(f64, f64)> = pairs
                .windows(2)
                .map(|w| (w[1].0 - w[0].0, w[1].1 - w[0].1))
                .collect();
            let sxx: f64 = d.iter().map(|(_, r)| r * r).sum();
            if sxx <= 0.0 {
                continue;
            }
            let beta = d.iter().map(|(x, r)| x * r).sum::<f64>() / sxx;
            let m = d.len() as f64;
            let raw = d.iter().map(|(x, _)| x * x).sum::<f64>() / (2.0 * m);
            let net = d.iter().map(|(x, r)| (x - beta * r).powi(2)).sum::<f64>() / (2.0 * m);
            // The slope was estimated from these differences: pay one of them for it.
            if net * m / (m - 1.0) < raw {
                adj.fits.insert(
                    (entry, metric),
                    Fit {
                        beta,
                        raw_sd: raw.sqrt(),
                        adjusted_sd: (net * m / (m - 1.0)).sqrt(),
                        runs: pairs.len(),
                    },
                );
            }
        }
        Some(adj)
    }

    /// Whether figures are judged net of the reference.
    pub fn applied(&self) -> bool {
        self.state == AdjustmentState::Applied && !self.fits.is_empty()
    }

    /// The fit used for `metric` of `entry`, when the adjustment applies to it.
    pub fn fit_of(&self, entry: &str, metric: &Metric) -> Option<Fit> {
        if self.state != AdjustmentState::Applied {
            return None;
        }
        self.fits.get(&(entry.to_string(), metric.clone())).copied()
    }

    /// `run` with every fitted figure net of its reference; a figure of a run without a
    /// reference is dropped (it cannot be put on the same footing).
    pub fn run(&self, run: &PastRun) -> PastRun {
        let mut out = run.clone();
        if self.state != AdjustmentState::Applied {
            return out;
        }
        let r = run
            .reference
            .as_deref()
            .filter(|n| *n == self.reference)
            .and_then(|_| run.reference_point());
        for (entry, metrics) in out.points.iter_mut() {
            metrics.retain(|metric, p| {
                let Some(fit) = self.fit_of(entry, metric) else {
                    return true;
                };
                let Some(r) = r else {
                    return false;
                };
                *p = Point {
                    ln: p.ln - fit.beta * (r.ln - self.anchor),
                    within: (p.within + fit.beta * fit.beta * r.within
                        - 2.0 * fit.beta * p.ref_cov)
                        .max(0.0),
                    dof: p.dof.min(r.dof),
                    ref_cov: 0.0,
                };
                true
            });
        }
        out
    }

    /// [`Adjustment::run`] of every run of `history`.
    pub fn history(&self, history: &History) -> History {
        History {
            runs: history.runs.iter().map(|r| self.run(r)).collect(),
            siblings: history.siblings.iter().map(|r| self.run(r)).collect(),
        }
    }

    /// One line for the terminal and the page: what was taken out, or why not.
    pub fn text(&self) -> String {
        let moved = format!(
            "{} moved {:+.1}% between the sides",
            self.reference,
            self.reference_change.exp_m1() * 100.0
        );
        match self.state {
            AdjustmentState::Applied if !self.fits.is_empty() => {
                // Latencies' slopes (a rate's is negative: it moves against the round trip).
                let betas: Vec<f64> = self
                    .fits
                    .iter()
                    .filter(|((_, m), _)| m.unit() == crate::record::Unit::Milliseconds)
                    .map(|(_, f)| f.beta)
                    .collect();
                let (lo, hi) = betas
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |a, b| {
                        (a.0.min(*b), a.1.max(*b))
                    });
                let runs = self.fits.values().map(|f| f.runs).max().unwrap_or(0);
                format!(
                    "judged net of the machine's drift: {moved} (a round trip with no search \
                 work); {} figures are compared net of β × that (latencies' β {lo:.2}…{hi:.2}, from {runs} \
                 runs); current figures shown at the baseline's speed",
                    self.fits.len()
                )
            }
            AdjustmentState::Applied => format!(
                "judged as measured: {moved}, but following it does not make this history's \
                 spread smaller"
            ),
            AdjustmentState::ReferenceMoved(p) => format!(
                "judged as measured: {moved}, beyond this machine's noise (p = {p:.3}) — the \
                 machine, the servers' statement handling or the client changed, so it is not \
                 taken out"
            ),
            AdjustmentState::NotEnoughRuns(n, needed) => format!(
                "judged as measured: {moved}; {n} earlier run{} with it, {needed} needed to \
                 learn how the benchmarks follow it",
                if n == 1 { "" } else { "s" }
            ),
        }
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

#[cfg(test)]
mod tests;
