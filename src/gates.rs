//! The launch gates the seeds name, in one place: the benches check them, `load` applies the
//! error-rate default, and the report draws and judges them. Each is a typed value, not a number
//! repeated where it is used.

/// Raw HNSW search, and search under the capacity sweep's users: p99 below this (ms).
pub const P99_MS: f64 = 50.0;

/// The number of concurrent users at which the capacity gate is judged (the seeds' 20 users at
/// 100K traces).
pub const CAPACITY_USERS: u64 = 20;

/// The share of failed requests a run stays below (fewer than 1 %): the report's error-rate gate,
/// and `load`'s criterion when no `--threshold` is given (a sweep level, to count toward the knee).
/// A 429 that a burst user expects is not a failure; any other kind's 429 is.
pub const MAX_ERROR_RATE: f64 = 0.01;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gates_are_the_seeds() {
        // The seeds' launch criteria: p99 < 50 ms at 100K, 20 users, < 1 % errors. A change here
        // changes what "launch-ready" means and must be deliberate.
        assert_eq!((P99_MS, CAPACITY_USERS, MAX_ERROR_RATE), (50.0, 20, 0.01));
    }
}
