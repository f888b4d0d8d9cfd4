//! The limiter seen over time (`rate_limit/timeline`, part of `cargo bench rate_limit`): a client
//! sends at a fixed rate above a small bucket's refill rate, against real Redis through the one Lua
//! script; every attempt's time, decision and remaining tokens are recorded beside what a perfect
//! token bucket would have done at the same instants. The report draws both. The cheap promises
//! (docs/rate-limiter.md's table: a, b, c, d) become gates on the entry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::ratelimit::{Decision, Limit, TokenBucket};
use crate::record::{Gate, GateKind, Metric, Metrics, ResultEntry};

/// The entry's name in the rate_limit record.
pub const ID: &str = "rate_limit/timeline";

/// The bucket of the timeline: small, refilled fast, so a few seconds show bursts and refills.
pub const LIMIT: Limit = Limit {
    capacity: 10.0,
    per_second: 20.0,
};

/// Attempts per second: 2.5 × the refill rate, so the bucket drains and then admits ~ the refill rate.
pub const SEND_RATE: f64 = 50.0;

/// What a perfect token bucket does at given instants (starting full).
#[derive(Debug, Clone)]
pub struct TheoreticalBucket {
    limit: Limit,
    tokens: f64,
    last: f64,
}

impl TheoreticalBucket {
    pub fn new(limit: Limit) -> Self {
        Self {
            limit,
            tokens: limit.capacity,
            last: 0.0,
        }
    }

    /// An attempt at `t` seconds: refill for the time since the last one, then take a token if any.
    /// Returns (allowed, tokens left).
    pub fn attempt(&mut self, t: f64) -> (bool, f64) {
        self.tokens = (self.tokens + (t - self.last).max(0.0) * self.limit.per_second)
            .min(self.limit.capacity);
        self.last = t;
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        (allowed, self.tokens)
    }
}

/// Runs the timeline for `seconds` and the promise checks; keys are this process's and are deleted.
pub async fn run(tb: &TokenBucket, seconds: f64) -> Result<ResultEntry> {
    let tag = std::process::id();
    let key = format!("rl:bench-{tag}-timeline:read");
    let (burst_key, other_key) = (
        format!("rl:bench-{tag}-burst:read"),
        format!("rl:bench-{tag}-other:read"),
    );
    for k in [&key, &burst_key, &other_key] {
        tb.reset(k).await?;
    }
    let gates = promises(tb, &burst_key, &other_key).await;

    let attempts = (seconds * SEND_RATE).round().max(1.0) as usize;
    let mut model = TheoreticalBucket::new(LIMIT);
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let (mut allowed, mut theory_allowed) = (0usize, 0usize);
    let start = Instant::now();
    let mut first_t = None;
    for i in 0..attempts {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / SEND_RATE)).into())
            .await;
        let t0 = start.elapsed().as_secs_f64();
        let d = tb.check(&key, LIMIT).await?;
        let t1 = start.elapsed().as_secs_f64();
        // Redis reads its clock while the script runs: between sending and the answer.
        let t = (t0 + t1) / 2.0;
        let origin = *first_t.get_or_insert(t);
        let t = t - origin;
        let (m_allowed, m_tokens) = model.attempt(t);
        allowed += usize::from(d.allowed);
        theory_allowed += usize::from(m_allowed);
        let push = |s: &mut BTreeMap<String, Vec<(f64, f64)>>, name: &str, y: f64| {
            s.entry(name.to_string()).or_default().push((t, y));
        };
        push(&mut series, "allowed", f64::from(u8::from(d.allowed)));
        push(&mut series, "remaining", d.remaining as f64);
        push(
            &mut series,
            "theoretical_allowed",
            f64::from(u8::from(m_allowed)),
        );
        push(&mut series, "theoretical_tokens", m_tokens);
        push(&mut series, "admitted_total", allowed as f64);
        push(
            &mut series,
            "theoretical_admitted_total",
            theory_allowed as f64,
        );
    }
    let duration = series
        .get("allowed")
        .and_then(|s| s.last())
        .map_or(0.0, |p| p.0);
    for k in [&key, &burst_key, &other_key] {
        tb.reset(k).await?;
    }
    let mut gates = gates;
    gates.push(Gate::promise(
        format!(
            "c. over {duration:.1} s at {SEND_RATE}/s, admitted = a perfect bucket's ± 1 ({theory_allowed})"
        ),
        GateKind::Limiter,
        allowed.abs_diff(theory_allowed) <= 1,
    ));
    let metrics = Metrics::from([
        (Metric::Capacity, LIMIT.capacity),
        (Metric::RefillPerSecond, LIMIT.per_second),
        (Metric::SendRate, SEND_RATE),
        (Metric::Attempts, attempts as f64),
        (Metric::DurationS, duration),
        (Metric::Allowed, allowed as f64),
        (Metric::Denied, (attempts - allowed) as f64),
        (Metric::TheoreticalAllowed, theory_allowed as f64),
    ]);
    Ok(ResultEntry {
        name: ID.to_string(),
        metrics,
        histogram: None,
        gates,
        series,
        rounds: Vec::new(),
    })
}

/// Promise b, judged on the answer to the request after a burst emptied a bucket of `limit`: denied,
/// with the script's own wait (`retry_after`, before it is rounded up for the header — the rounded
/// value is at least 1 s for every denial, so it could not fail) at least 1 s and at most the time
/// one token takes to come back.
pub fn retry_after_gate(next: Option<Decision>, limit: Limit) -> Gate {
    let one_token = Duration::from_secs_f64(1.0 / limit.per_second);
    Gate::promise(
        format!(
            "b. the next request is denied with Retry-After ≥ 1 s (the script's raw wait, at most one token's refill: {} s)",
            one_token.as_secs()
        ),
        GateKind::Limiter,
        next.is_some_and(|d| {
            !d.allowed
                && d.retry_after >= Duration::from_secs(1)
                && d.retry_after <= one_token + Duration::from_millis(1)
        }),
    )
}

/// Promises a, b and d on keys of their own (c is judged on the timeline).
async fn promises(tb: &TokenBucket, burst_key: &str, other_key: &str) -> Vec<Gate> {
    let slow = Limit {
        capacity: LIMIT.capacity,
        per_second: 0.01,
    };
    let mut burst = 0;
    let mut all_allowed = true;
    for _ in 0..LIMIT.capacity as usize {
        match tb.check(burst_key, slow).await {
            Ok(d) if d.allowed => burst += 1,
            _ => all_allowed = false,
        }
    }
    let next = tb.check(burst_key, slow).await.ok();
    let other = tb.check(other_key, slow).await.ok();
    vec![
        Gate::promise(
            format!(
                "a. a full bucket admits a burst of exactly its capacity ({})",
                LIMIT.capacity
            ),
            GateKind::Limiter,
            all_allowed && burst == LIMIT.capacity as usize && next.is_some_and(|d| !d.allowed),
        ),
        retry_after_gate(next, slow),
        Gate::promise(
            "d. another user's bucket is untouched (independent buckets)",
            GateKind::Limiter,
            other.is_some_and(|d| d.allowed && d.remaining == LIMIT.capacity as u64 - 1),
        ),
    ]
}
