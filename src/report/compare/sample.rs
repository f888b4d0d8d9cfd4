//! A histogram as a sample to bootstrap from, and the seed that makes its resamples repeatable.

use hdrhistogram::Histogram;
use rand::RngExt;
use rand_distr::{Beta, Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::Rule;
use crate::record::Metric;

/// A stable seed from the names (FNV-1a), so verdicts do not depend on order or on the run.
pub(crate) fn seed(entry: &str, metric: &Metric) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in entry.bytes().chain([0]).chain(metric.to_string().bytes()) {
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
