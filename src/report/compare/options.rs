//! How strict a comparison is: the practical threshold, the false-discovery rate, the history needed.

use anyhow::Result;

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
