//! Two benchmarks of one run, round by round.

use serde::Serialize;

use super::Test;
use crate::record::{Metric, ResultEntry};

/// Two benchmarks of one run compared round by round: the rounds were interleaved (A B A B…), so
/// whatever moved the machine during a round moved both, and their ratio cancels it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Paired {
    pub a: String,
    pub b: String,
    pub metric: Metric,
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
    pub fn of(a: &ResultEntry, b: &ResultEntry, metric: &Metric, confidence: f64) -> Option<Self> {
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
            metric: metric.clone(),
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
