//! A launch gate as the record keeps it: what it says, whether it passed, what kind of promise it
//! is, and — when it is one comparison of a figure with a limit — the metric, the limit in its
//! unit and the figure observed. The report and `--fail-on-regression` read these fields, never
//! the gate's text.

use serde::{Deserialize, Serialize};

use super::metric::{Metric, Unit};

/// A pass/fail criterion, e.g. the seeds' `p99 < 50 ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gate {
    /// What it says, for people: `p99 < 50 ms with 20 users`, `error_rate<1%`.
    pub name: String,
    pub pass: bool,
    pub kind: GateKind,
    /// The comparison it made, when it is one (a limiter promise is a behaviour, not a figure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// What a gate is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    /// A latency bound (the seeds' p99 < 50 ms, a `load` percentile threshold).
    Latency,
    /// The share of failed requests.
    ErrorRate,
    /// A rate or a count of requests.
    Throughput,
    /// A sweep found a level that meets its objective.
    Capacity,
    /// A figure against an independent tool's on the same work (redis-benchmark).
    Comparison,
    /// A promise of the rate limiter's behaviour (admits the burst, answers 429 + Retry-After…).
    Limiter,
}

/// `observed OP limit`, in `unit`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
    pub unit: Unit,
    /// The figure judged; `None` when a failed or missing measurement left none.
    pub observed: Option<f64>,
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    pub fn holds(self, actual: f64, bound: f64) -> bool {
        match self {
            Op::Lt => actual < bound,
            Op::Le => actual <= bound,
            Op::Gt => actual > bound,
            Op::Ge => actual >= bound,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

impl Gate {
    /// A gate that compares `metric`'s `observed` value with `limit` (in the metric's unit): it
    /// passes when `observed OP limit` holds; a missing or non-finite observation fails.
    pub fn check(
        name: impl Into<String>,
        kind: GateKind,
        metric: Metric,
        op: Op,
        limit: f64,
        observed: Option<f64>,
    ) -> Self {
        let observed = observed.filter(|v| v.is_finite());
        Self {
            name: name.into(),
            pass: observed.is_some_and(|v| op.holds(v, limit)),
            kind,
            check: Some(Check {
                unit: metric.unit(),
                metric,
                op,
                limit,
                observed,
            }),
        }
    }

    /// A gate that is a behaviour, judged by the code that observed it.
    pub fn promise(name: impl Into<String>, kind: GateKind, pass: bool) -> Self {
        Self {
            name: name.into(),
            pass,
            kind,
            check: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_passes_only_when_its_comparison_holds() {
        let g = |observed| {
            Gate::check(
                "p99",
                GateKind::Latency,
                Metric::P99_MS,
                Op::Lt,
                50.0,
                observed,
            )
        };
        assert!(g(Some(49.9)).pass);
        assert!(!g(Some(50.0)).pass);
        assert!(!g(None).pass, "no figure, no pass");
        assert!(!g(Some(f64::NAN)).pass);
        assert_eq!(g(Some(f64::NAN)).check.unwrap().observed, None);
        let ratio = Gate::check(
            "ratio",
            GateKind::Comparison,
            Metric::RatioVsRedisBenchmark,
            Op::Le,
            1.5,
            Some(1.5),
        );
        assert!(ratio.pass);
        assert_eq!(ratio.check.unwrap().unit, Unit::Ratio);
    }

    #[test]
    fn a_gate_is_stored_with_its_kind_and_check() {
        let g = Gate::check(
            "p99 < 50 ms",
            GateKind::Latency,
            Metric::P99_MS,
            Op::Lt,
            50.0,
            Some(3.0),
        );
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "p99 < 50 ms", "pass": true, "kind": "latency",
                "check": {"metric": "p99_ms", "op": "<", "limit": 50.0, "unit": "milliseconds", "observed": 3.0}})
        );
        assert_eq!(serde_json::from_value::<Gate>(json).unwrap(), g);
        let p = Gate::promise("a. admits the burst", GateKind::Limiter, false);
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"name": "a. admits the burst", "pass": false, "kind": "limiter"})
        );
    }
}
