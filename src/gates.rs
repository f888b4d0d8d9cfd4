//! The launch gates the seeds name, in one place: the benches check them, `load` applies the
//! error-rate default, and the report draws and judges them. Each is a typed value, not a number
//! repeated where it is used.

use crate::record::{Gate, GateKind, Metric, Op};

/// Raw HNSW search, and search under the capacity sweep's users: p99 below this (ms).
pub const P99_MS: f64 = 50.0;

/// The number of concurrent users at which the capacity gate is judged (the seeds' 20 users at
/// 100K traces).
pub const CAPACITY_USERS: u64 = 20;

/// The share of failed requests a run stays below (fewer than 1 %): the report's error-rate gate,
/// and `load`'s criterion when no `--threshold` is given (a sweep level, to count toward the knee).
/// A 429 that a burst user expects is not a failure; any other kind's 429 is.
pub const MAX_ERROR_RATE: f64 = 0.01;

/// Vectors a second the search API must be able to write with its HNSW index in place (the seeds'
/// "vector insertion rate above 500 vectors/s").
pub const INSERT_VECTORS_PER_SECOND: f64 = 500.0;

/// The seeds' insertion gate on `vectors_per_second`, for the measurement `what` names.
pub fn seeds_insert_rate(what: &str, vectors_per_second: Option<f64>) -> Gate {
    Gate::check(
        format!("> {INSERT_VECTORS_PER_SECOND} vectors/s {what}"),
        GateKind::Throughput,
        Metric::VectorsPerSecond,
        Op::Gt,
        INSERT_VECTORS_PER_SECOND,
        vectors_per_second,
    )
}

/// The seeds' latency gate on `p99_ms`: `p99 < 50 ms`, followed by `context` (e.g. `with 20
/// users`) when given.
pub fn seeds_p99(context: Option<&str>, p99_ms: Option<f64>) -> Gate {
    let name = match context {
        Some(c) => format!("p99 < {P99_MS} ms {c}"),
        None => format!("p99 < {P99_MS} ms"),
    };
    Gate::check(
        name,
        GateKind::Latency,
        Metric::P99_MS,
        Op::Lt,
        P99_MS,
        p99_ms,
    )
}

/// Whether `gate` is the seeds' latency gate ([`seeds_p99`]).
pub fn is_seeds_p99(gate: &Gate) -> bool {
    gate.check
        .as_ref()
        .is_some_and(|c| c.metric == Metric::P99_MS && c.op == Op::Lt && c.limit == P99_MS)
}

/// The seeds' error-rate gate, `error rate < 1 %`, on `error_rate` (a fraction).
pub fn error_rate(error_rate: f64) -> Gate {
    Gate::check(
        "error rate < 1 %",
        GateKind::ErrorRate,
        Metric::ErrorRate,
        Op::Lt,
        MAX_ERROR_RATE,
        Some(error_rate),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gates_are_the_seeds() {
        // The seeds' launch criteria: p99 < 50 ms at 100K, 20 users, < 1 % errors. A change here
        // changes what "launch-ready" means and must be deliberate.
        assert_eq!((P99_MS, CAPACITY_USERS, MAX_ERROR_RATE), (50.0, 20, 0.01));
    }

    #[test]
    fn the_seeds_gates_judge_their_figure() {
        let g = seeds_p99(Some("with 20 users"), Some(49.0));
        assert_eq!(g.name, "p99 < 50 ms with 20 users");
        assert!(g.pass && is_seeds_p99(&g));
        assert!(!seeds_p99(None, Some(50.0)).pass);
        assert!(!is_seeds_p99(&error_rate(0.0)));
        assert!(error_rate(0.009).pass && !error_rate(0.01).pass);
    }
}
