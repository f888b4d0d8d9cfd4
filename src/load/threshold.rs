//! Pass/fail criteria like k6's: `--threshold 'p99<50ms'`, `'error_rate<1%'`, `'rps>100'`, the rows a
//! read/write load added (`'vectors_per_s>500'`, the seeds' insertion rate), optionally for one
//! request name: `'p95[/api/v1/traces/search]<=2s'`. Percentiles are the corrected ones.

use std::fmt;
use std::str::FromStr;

use super::stats::{Entry, Stats};
pub use crate::record::Op;
use crate::record::{Gate, GateKind, Metric, Stat};

/// The exit code of a run whose thresholds did not all hold (k6's).
pub const THRESHOLD_EXIT_CODE: u8 = 99;

/// The share of failed requests a run stays below when no --threshold is given (and a sweep level,
/// to count toward the knee): the seeds' error-rate gate.
pub use crate::gates::MAX_ERROR_RATE as DEFAULT_MAX_ERROR_RATE;

#[derive(Debug, Clone, Copy, PartialEq)]
/// What a threshold measures (its value is in the unit the bound was parsed to).
pub enum Measure {
    /// Latency percentile, 0..=1 (1 is max).
    Percentile(f64),
    MeanMs,
    MinMs,
    /// Failures / requests, 0..=1.
    ErrorRate,
    Rps,
    /// Rows (vectors) the requests added per second: committed INSERTs, scenario `writes`.
    VectorsPerSecond,
    /// A shaped run's recovery after its spike, seconds (`recovery<60s`); a run that did not
    /// recover counts as infinitely long; Aggregated only.
    Recovery,
    Requests,
    Failures,
}

/// One criterion, as the user wrote it and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    pub metric: Measure,
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
                "threshold '{text}': unknown metric '{metric_text}' (p50…p99.99, max, min, avg, error_rate, rps, vectors_per_s, recovery, requests, failures)"
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

fn parse_metric(m: &str) -> Option<Measure> {
    Some(match m.to_ascii_lowercase().as_str() {
        "max" | "p100" => Measure::Percentile(1.0),
        "min" => Measure::MinMs,
        "avg" | "mean" => Measure::MeanMs,
        "med" | "median" => Measure::Percentile(0.5),
        "error_rate" | "errors" | "failure_rate" => Measure::ErrorRate,
        "rps" | "throughput" => Measure::Rps,
        "vectors_per_s" | "inserts_per_s" | "rows_per_s" => Measure::VectorsPerSecond,
        "recovery" => Measure::Recovery,
        "requests" | "count" => Measure::Requests,
        "failures" => Measure::Failures,
        other => {
            let p: f64 = other.strip_prefix('p')?.parse().ok()?;
            if !(0.0..100.0).contains(&p) || p == 0.0 {
                return None;
            }
            Measure::Percentile((p * 1e7).round() / 1e9)
        }
    })
}

/// Parses a value in the metric's unit.
fn parse_value(metric: Measure, v: &str) -> Result<f64, String> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let x: f64 = number
        .parse()
        .map_err(|_| format!("'{v}' does not start with a number"))?;
    let unit = unit.to_ascii_lowercase();
    match metric {
        Measure::Percentile(_) | Measure::MeanMs | Measure::MinMs => match unit.as_str() {
            "ms" | "" => Ok(x),
            "s" => Ok(x * 1e3),
            "us" | "µs" => Ok(x / 1e3),
            _ => Err(format!("'{unit}' is not a time unit (us, ms, s)")),
        },
        Measure::ErrorRate => match unit.as_str() {
            "%" => Ok(x / 100.0),
            "" if x <= 1.0 => Ok(x),
            "" => Err("an error rate is a fraction (0.01) or a percentage (1%)".into()),
            _ => Err(format!("'{unit}' is not a rate unit (%)")),
        },
        Measure::Rps | Measure::VectorsPerSecond => match unit.as_str() {
            "" | "/s" => Ok(x),
            _ => Err(format!("'{unit}' is not a throughput unit (/s)")),
        },
        Measure::Recovery => match unit.as_str() {
            "s" | "" => Ok(x),
            "ms" => Ok(x / 1e3),
            "m" | "min" => Ok(x * 60.0),
            _ => Err(format!("'{unit}' is not a time unit (ms, s, m)")),
        },
        Measure::Requests | Measure::Failures => match unit.as_str() {
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
            (None, Measure::Recovery) => {
                "no spike in the stages (--stages, --rate-stages)".to_string()
            }
            (Some(a), Measure::Recovery) if a.is_infinite() => {
                "not recovered before the run ended".to_string()
            }
            (Some(a), Measure::Recovery) => format!("{a:.0} s"),
            (None, _) => "no such requests".to_string(),
            (Some(a), Measure::ErrorRate) => format!("{:.3}%", a * 100.0),
            (Some(a), Measure::Rps | Measure::VectorsPerSecond) => format!("{a:.1}/s"),
            (Some(a), Measure::Requests | Measure::Failures) => format!("{a:.0}"),
            (Some(a), _) => format!("{a:.3} ms"),
        };
        format!(
            "{}: {} (measured {actual}, needs {} {})",
            t.text,
            if self.pass { "PASS" } else { "FAIL" },
            t.op.as_str(),
            match t.metric {
                Measure::ErrorRate => format!("{}%", t.bound * 100.0),
                Measure::Recovery => format!("{} s", t.bound),
                Measure::Percentile(_) | Measure::MeanMs | Measure::MinMs =>
                    format!("{} ms", t.bound),
                _ => format!("{}", t.bound),
            }
        )
    }
}

impl ThresholdCheck {
    /// The check as a record's gate: its kind, and the record's metric with the bound and the
    /// measured value (a percentile the record does not name, e.g. p97, keeps no check).
    pub fn gate(&self) -> Gate {
        let t = &self.threshold;
        let (kind, metric) = match t.metric {
            Measure::Percentile(q) => {
                (GateKind::Latency, Stat::of_quantile(q).map(Metric::Latency))
            }
            Measure::MeanMs => (GateKind::Latency, Some(Metric::MEAN_MS)),
            Measure::MinMs => (GateKind::Latency, Some(Metric::Latency(Stat::Min))),
            Measure::ErrorRate => (GateKind::ErrorRate, Some(Metric::ErrorRate)),
            Measure::Failures => (GateKind::ErrorRate, Some(Metric::Failures)),
            Measure::Rps => (GateKind::Throughput, Some(Metric::Rps)),
            Measure::VectorsPerSecond => (GateKind::Throughput, Some(Metric::VectorsPerSecond)),
            Measure::Recovery => (GateKind::Latency, Some(Metric::RecoverySeconds)),
            Measure::Requests => (GateKind::Throughput, Some(Metric::Count)),
        };
        match metric {
            Some(m) => Gate::check(t.text.clone(), kind, m, t.op, t.bound, self.actual),
            None => Gate::promise(t.text.clone(), kind, self.pass),
        }
    }
}

impl Threshold {
    /// `error_rate<1%`: what a run is judged by when no --threshold is given.
    pub fn default_error_rate() -> Self {
        Threshold {
            text: format!("error_rate<{}% (default)", DEFAULT_MAX_ERROR_RATE * 100.0),
            metric: Measure::ErrorRate,
            name: None,
            op: Op::Lt,
            bound: DEFAULT_MAX_ERROR_RATE,
        }
    }

    fn value(&self, e: &Entry, stats: &Stats) -> f64 {
        match self.metric {
            Measure::Percentile(q) => e.ms(q),
            Measure::MeanMs => e.mean_ms(),
            Measure::MinMs => e.min_ms(),
            Measure::ErrorRate => e.error_rate(),
            Measure::Rps => stats.rps(e),
            Measure::VectorsPerSecond => stats.vectors_per_second(e),
            // Set by the run: `check` handles it.
            Measure::Recovery => f64::NAN,
            Measure::Requests => e.requests as f64,
            Measure::Failures => e.failures as f64,
        }
    }

    /// Checks the threshold on `stats`. A named request that never ran fails.
    pub fn check(&self, stats: &Stats) -> ThresholdCheck {
        let entry = match &self.name {
            None => Some(&stats.total),
            Some(n) => stats.entry(n),
        };
        let actual = if self.metric == Measure::Recovery {
            stats.recovery().map(|r| r.unwrap_or(f64::INFINITY))
        } else {
            entry.map(|e| self.value(e, stats))
        };
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
            (Measure::Percentile(0.99), Op::Lt, 50.0, None)
        );
        let t: Threshold = "p99.9 <= 2s".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.bound),
            (Measure::Percentile(0.999), Op::Le, 2000.0)
        );
        let t: Threshold = "error_rate<1%".parse().unwrap();
        assert_eq!((t.metric, t.bound), (Measure::ErrorRate, 0.01));
        let t: Threshold = "rps>100".parse().unwrap();
        assert_eq!((t.metric, t.op, t.bound), (Measure::Rps, Op::Gt, 100.0));
        let t: Threshold = "recovery<1m".parse().unwrap();
        assert_eq!((t.metric, t.op, t.bound), (Measure::Recovery, Op::Lt, 60.0));
        let t: Threshold = "vectors_per_s[insert_sql]>=500/s".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.bound, t.name.as_deref()),
            (Measure::VectorsPerSecond, Op::Ge, 500.0, Some("insert_sql"))
        );
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
            "vectors_per_s>5ms",
            "recovery<5%",
            "p99[]<1ms",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad} should not parse");
        }
    }
}
