//! The Lua token bucket (setup/token_bucket.lua) from Rust: EVALSHA through `redis::Script`
//! (which loads the script again after SCRIPT FLUSH or a Redis restart), over a connection manager
//! that reconnects by itself.

use std::time::Duration;

use anyhow::{Context, Result};
use redis::aio::ConnectionManager;

use crate::secrets::redact;

/// The one limiter script.
pub const TOKEN_BUCKET_LUA: &str = include_str!("../setup/token_bucket.lua");

/// A bucket's size and refill speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens a full bucket holds (the burst a quiet user may send at once).
    pub capacity: f64,
    /// Tokens added per second.
    pub per_second: f64,
}

impl Limit {
    /// The seeds' limits: L requests per minute → capacity L, refilled at L / 60 per second.
    pub fn per_minute(requests: u32) -> Self {
        Self {
            capacity: f64::from(requests),
            per_second: f64::from(requests) / 60.0,
        }
    }
}

/// Which of a user's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Read,
    Write,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Read => "read",
            Bucket::Write => "write",
        }
    }
}

/// The seeds' key format: `rl:{user_id}:{read|write}`.
pub fn key(user: &str, bucket: Bucket) -> String {
    format!("rl:{user}:{}", bucket.as_str())
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// When a denied request could succeed (zero when allowed).
    pub retry_after: Duration,
}

impl Decision {
    /// `Retry-After` in whole seconds, rounded up (at least 1 when denied).
    pub fn retry_after_secs(&self) -> u64 {
        if self.allowed {
            0
        } else {
            self.retry_after.as_millis().div_ceil(1000).max(1) as u64
        }
    }
}

/// A client of the token-bucket script.
#[derive(Clone)]
pub struct TokenBucket {
    script: redis::Script,
    conn: ConnectionManager,
}

impl TokenBucket {
    /// Connects (and keeps reconnecting) to Redis at `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact(url);
        let client =
            redis::Client::open(url).with_context(|| format!("invalid Redis URL {shown}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let limit = crate::db::connect_timeout();
        let conn = tokio::time::timeout(limit, ConnectionManager::new_with_config(client, config))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no answer within {} (--connect-timeout)",
                    humantime::format_duration(limit)
                )
            })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!("cannot connect to Redis at {shown}; is it running? (unset REDIS_URL to use the embedded stack)")
            })?;
        Ok(Self {
            script: redis::Script::new(TOKEN_BUCKET_LUA),
            conn,
        })
    }

    /// The script's SHA1 (what EVALSHA names).
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// Takes one token from `key` if there is one.
    pub async fn check(&self, key: &str, limit: Limit) -> Result<Decision, redis::RedisError> {
        self.check_cost(key, limit, 1.0).await
    }

    /// Takes `cost` tokens from `key` if there are that many.
    pub async fn check_cost(
        &self,
        key: &str,
        limit: Limit,
        cost: f64,
    ) -> Result<Decision, redis::RedisError> {
        let mut conn = self.conn.clone();
        let (allowed, remaining, retry_after_ms): (i64, i64, i64) = self
            .script
            .key(key)
            .arg(limit.capacity)
            .arg(limit.per_second)
            .arg(cost)
            .invoke_async(&mut conn)
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            remaining: remaining.max(0) as u64,
            retry_after: Duration::from_millis(retry_after_ms.max(0) as u64),
        })
    }

    /// Resets a bucket by deleting its key (an absent key is a full bucket). Never FLUSHALL.
    pub async fn reset(&self, key: &str) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
    }

    /// The underlying connection (for pipelines in benches).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}
