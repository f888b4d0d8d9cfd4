//! Outages of the servers the service depends on — the database, Redis behind the rate limiter,
//! the embeddings endpoint — logged as transitions: one line when a dependency stops answering,
//! with the cause, and one when it answers again, with how long it lasted and how many requests it
//! affected. Never a line per request (those are at `debug`): an outage under load would otherwise
//! bury everything else in the log.

use std::fmt::Display;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::RedisFailure;

/// One dependency's outage state.
pub struct Outage {
    /// What is down, as the log names it ("database").
    what: &'static str,
    /// What the service does meanwhile ("answering 503").
    meanwhile: &'static str,
    /// What happened to the requests meanwhile ("answered 503").
    affected: &'static str,
    /// Whether an outage is under way: the check every successful call makes, without a lock.
    down: AtomicBool,
    current: Mutex<Option<Down>>,
}

struct Down {
    since: Instant,
    requests: u64,
}

impl Outage {
    fn new(what: &'static str, meanwhile: &'static str, affected: &'static str) -> Self {
        Self {
            what,
            meanwhile,
            affected,
            down: AtomicBool::new(false),
            current: Mutex::new(None),
        }
    }

    /// A request could not use the dependency because of `cause`: the first such request of an
    /// outage logs a warning with the cause, the others only at `debug`.
    pub fn failed(&self, cause: &dyn Display) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match current.as_mut() {
            Some(down) => {
                down.requests += 1;
                tracing::debug!(cause = %cause, "{} still unavailable", self.what);
            }
            None => {
                *current = Some(Down {
                    since: Instant::now(),
                    requests: 1,
                });
                self.down.store(true, Ordering::Release);
                tracing::warn!(
                    cause = %cause,
                    "{} unavailable: {} until it answers again",
                    self.what,
                    self.meanwhile
                );
            }
        }
    }

    /// The dependency answered: ends an outage under way, with one line saying how long it lasted.
    pub fn answered(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(down) = current.take() {
            self.down.store(false, Ordering::Release);
            tracing::info!(
                "{} available again after {:.1} s; {} requests were {} meanwhile",
                self.what,
                down.since.elapsed().as_secs_f64(),
                down.requests,
                self.affected
            );
        }
    }
}

/// The outages the service logs, one per dependency.
pub struct Outages {
    pub database: Outage,
    pub limiter: Outage,
    pub embedder: Outage,
}

impl Outages {
    /// The limiter's lines say what `policy` does while Redis is down.
    pub fn new(policy: RedisFailure) -> Self {
        let limiter = match policy {
            RedisFailure::Open => Outage::new(
                "rate limiter",
                "serving requests unlimited (fail-open)",
                "served unlimited",
            ),
            RedisFailure::Closed => Outage::new(
                "rate limiter",
                "refusing requests with 503 (fail-closed)",
                "answered 503",
            ),
        };
        Self {
            database: Outage::new("database", "answering 503", "answered 503"),
            limiter,
            embedder: Outage::new(
                "embedding service",
                "answering searches and writes with 503",
                "answered 503",
            ),
        }
    }
}
