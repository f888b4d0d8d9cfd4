//! The statistics the verdicts rest on: a Student t test of a difference of ln figures, and the
//! Benjamini–Hochberg step-up over a comparison's tests.

use statrs::distribution::{ContinuousCDF, StudentsT};

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
