//! Pass/fail criteria like k6's: `--threshold 'p99<50ms'`, `'error_rate<1%'`, `'rps>100'`, optionally
//! for one request name: `'p95[/api/v1/traces/search]<=2s'`. Percentiles are the corrected ones.

use std::fmt;
use std::str::FromStr;

use super::stats::{Entry, Stats};

/// The exit code of a run whose thresholds did not all hold (k6's).
pub const THRESHOLD_EXIT_CODE: u8 = 99;

/// The share of failed requests a run stays below when no --threshold is given (and a sweep level,
/// to count toward the knee): the seeds' error-rate gate.
pub use crate::gates::MAX_ERROR_RATE as DEFAULT_MAX_ERROR_RATE;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    /// Latency percentile, 0..=1 (1 is max).
    Percentile(f64),
    MeanMs,
    MinMs,
    /// Failures / requests, 0..=1.
    ErrorRate,
    Rps,
    Requests,
    Failures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn holds(self, actual: f64, bound: f64) -> bool {
        match self {
            Op::Lt => actual < bound,
            Op::Le => actual <= bound,
            Op::Gt => actual > bound,
            Op::Ge => actual >= bound,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One criterion, as the user wrote it and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub metric: Metric,
    /// A request name, or `None` for all requests (Aggregated).
    pub name: Option<String>,
    pub op: Op,
    /// In the metric's unit: ms for latencies, a fraction for error_rate, 1/s for rps.
    pub bound: f64,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let usage = || {
            format!(
                "threshold '{text}' is not METRIC[NAME]<OP><VALUE>, e.g. 'p99<50ms', 'error_rate<1%', 'rps>100', 'p95[/api/v1/traces/search]<=2s'"
            )
        };
        let op_at = s.find(['<', '>']).ok_or_else(usage)?;
        let (lhs, rest) = s.split_at(op_at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(usage());
        };
        let (metric_text, name) = match lhs.split_once('[') {
            Some((m, n)) => {
                let n = n.strip_suffix(']').ok_or_else(usage)?;
                if n.is_empty() {
                    return Err(usage());
                }
                // The name keeps its spaces: take it from the original text.
                let original = text
                    .split_once('[')
                    .and_then(|(_, r)| r.rsplit_once(']'))
                    .map_or(n.to_string(), |(n, _)| n.trim().to_string());
                (m, Some(original))
            }
            None => (lhs, None),
        };
        let metric = parse_metric(metric_text).ok_or_else(|| {
            format!(
                "threshold '{text}': unknown metric '{metric_text}' (p50…p99.99, max, min, avg, error_rate, rps, requests, failures)"
            )
        })?;
        let bound =
            parse_value(metric, value).map_err(|why| format!("threshold '{text}': {why}"))?;
        Ok(Threshold {
            text: text.trim().to_string(),
            metric,
            name,
            op,
            bound,
        })
    }
}

fn parse_metric(m: &str) -> Option<Metric> {
    Some(match m.to_ascii_lowercase().as_str() {
        "max" | "p100" => Metric::Percentile(1.0),
        "min" => Metric::MinMs,
        "avg" | "mean" => Metric::MeanMs,
        "med" | "median" => Metric::Percentile(0.5),
        "error_rate" | "errors" | "failure_rate" => Metric::ErrorRate,
        "rps" | "throughput" => Metric::Rps,
        "requests" | "count" => Metric::Requests,
        "failures" => Metric::Failures,
        other => {
            let p: f64 = other.strip_prefix('p')?.parse().ok()?;
            if !(0.0..100.0).contains(&p) || p == 0.0 {
                return None;
            }
            Metric::Percentile((p * 1e7).round() / 1e9)
        }
    })
}

/// Parses a value in the metric's unit.
fn parse_value(metric: Metric, v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let x: f64 = number
        .parse()
        .map_err(|_| format!("'{v}' does not start with a number"))?;
    let unit = unit.to_ascii_lowercase();
    match metric {
        Metric::Percentile(_) | Metric::MeanMs | Metric::MinMs => match unit.as_str() {
            "ms" | "" => Ok(x),
            "s" => Ok(x * 1e3),
            "us" | "µs" => Ok(x / 1e3),
            _ => Err(format!("'{unit}' is not a time unit (us, ms, s)")),
        },
        Metric::ErrorRate => match unit.as_str() {
            "%" => Ok(x / 100.0),
            "" if x <= 1.0 => Ok(x),
            "" => Err("an error rate is a fraction (0.01) or a percentage (1%)".into()),
            _ => Err(format!("'{unit}' is not a rate unit (%)")),
        },
        Metric::Rps => match unit.as_str() {
            "" | "/s" => Ok(x),
            _ => Err(format!("'{unit}' is not a throughput unit (/s)")),
        },
        Metric::Requests | Metric::Failures => match unit.as_str() {
            "" => Ok(x),
            _ => Err(format!("'{unit}': a count has no unit")),
        },
    }
}

/// A threshold checked against a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdCheck {
    pub threshold: Threshold,
    /// The measured value (same unit as the bound); `None` when the named request never ran.
    pub actual: Option<f64>,
    pub pass: bool,
}

impl ThresholdCheck {
    /// `p99<50ms: PASS (p99 = 12.3 ms)`.
    pub fn line(&self) -> String {
        let t = &self.threshold;
        let actual = match (self.actual, t.metric) {
            (None, _) => "no such requests".to_string(),
            (Some(a), Metric::ErrorRate) => format!("{:.3}%", a * 100.0),
            (Some(a), Metric::Rps) => format!("{a:.1}/s"),
            (Some(a), Metric::Requests | Metric::Failures) => format!("{a:.0}"),
            (Some(a), _) => format!("{a:.3} ms"),
        };
        format!(
            "{}: {} (measured {actual}, needs {} {})",
            t.text,
            if self.pass { "PASS" } else { "FAIL" },
            t.op.as_str(),
            match t.metric {
                Metric::ErrorRate => format!("{}%", t.bound * 100.0),
                Metric::Percentile(_) | Metric::MeanMs | Metric::MinMs => format!("{} ms", t.bound),
                _ => format!("{}", t.bound),
            }
        )
    }
}

impl Threshold {
    /// `error_rate<1%`: what a run is judged by when no --threshold is given.
    pub fn default_error_rate() -> Self {
        Threshold {
            text: format!("error_rate<{}% (default)", DEFAULT_MAX_ERROR_RATE * 100.0),
            metric: Metric::ErrorRate,
            name: None,
            op: Op::Lt,
            bound: DEFAULT_MAX_ERROR_RATE,
        }
    }

    fn value(&self, e: &Entry, stats: &Stats) -> f64 {
        match self.metric {
            Metric::Percentile(q) => e.ms(q),
            Metric::MeanMs => e.mean_ms(),
            Metric::MinMs => e.min_ms(),
            Metric::ErrorRate => e.error_rate(),
            Metric::Rps => stats.rps(e),
            Metric::Requests => e.requests as f64,
            Metric::Failures => e.failures as f64,
        }
    }

    /// Checks the threshold on `stats`. A named request that never ran fails.
    pub fn check(&self, stats: &Stats) -> ThresholdCheck {
        let entry = match &self.name {
            None => Some(&stats.total),
            Some(n) => stats.entry(n),
        };
        let actual = entry.map(|e| self.value(e, stats));
        ThresholdCheck {
            threshold: self.clone(),
            actual,
            pass: actual.is_some_and(|a| self.op.holds(a, self.bound)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k6_like_expressions() {
        let t: Threshold = "p99<50ms".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.bound, t.name),
            (Metric::Percentile(0.99), Op::Lt, 50.0, None)
        );
        let t: Threshold = "p99.9 <= 2s".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.bound),
            (Metric::Percentile(0.999), Op::Le, 2000.0)
        );
        let t: Threshold = "error_rate<1%".parse().unwrap();
        assert_eq!((t.metric, t.bound), (Metric::ErrorRate, 0.01));
        let t: Threshold = "rps>100".parse().unwrap();
        assert_eq!((t.metric, t.op, t.bound), (Metric::Rps, Op::Gt, 100.0));
        let t: Threshold = "p95[/api/v1/traces/search [realistic]]<=2s"
            .parse()
            .unwrap();
        assert_eq!(t.name.as_deref(), Some("/api/v1/traces/search [realistic]"));
        for bad in [
            "p99",
            "p99<",
            "p99<fast",
            "p0<1ms",
            "p101<1ms",
            "latency<1ms",
            "error_rate<5",
            "rps>10ms",
            "p99[]<1ms",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad} should not parse");
        }
    }
}
