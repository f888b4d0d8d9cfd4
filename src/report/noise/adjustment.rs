//! Taking the machine's drift out of a comparison, through the run's reference entry (a control
//! variate learnt from the history).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{History, PastRun, Point, Test};
use crate::record::Metric;

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
