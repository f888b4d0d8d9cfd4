//! The limiter's promises, against real Redis through the one Lua script (setup/token_bucket.lua).
//! Small buckets and fast refill keep them quick; every test owns its keys and resets them by
//! deleting them (never FLUSHALL).

use crate::common;

use std::time::{Duration, Instant};

use capbench::ratelimit::{Bucket, Limit, TokenBucket, key};

async fn limiter() -> TokenBucket {
    TokenBucket::connect(&common::redis_url().await)
        .await
        .expect("connect to Redis")
}

/// A fresh bucket key for this test (reset first).
async fn fresh(tb: &TokenBucket, name: &str) -> String {
    let k = key(&format!("test-{name}-{}", std::process::id()), Bucket::Read);
    tb.reset(&k).await.unwrap();
    k
}

async fn admitted(tb: &TokenBucket, k: &str, limit: Limit, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        if tb.check(k, limit).await.unwrap().allowed {
            allowed += 1;
        }
    }
    allowed
}

const SLOW: Limit = Limit {
    capacity: 10.0,
    per_second: 0.01,
};

#[tokio::test]
async fn a_full_bucket_admits_a_burst_of_exactly_its_capacity_then_denies() {
    let tb = limiter().await;
    let k = fresh(&tb, "burst").await;
    for i in 0..10 {
        let d = tb.check(&k, SLOW).await.unwrap();
        assert!(d.allowed, "request {i} of the burst was denied");
        assert_eq!(d.remaining, 9 - i);
    }
    let denied = tb.check(&k, SLOW).await.unwrap();
    assert!(!denied.allowed, "request 11 must be denied");
    assert_eq!(denied.remaining, 0);
    // One token at 0.01/s is ~100 s away: Retry-After says so, in whole seconds, at least 1.
    assert!(denied.retry_after >= Duration::from_secs(90), "{denied:?}");
    assert!(denied.retry_after_secs() >= 90);
}

#[tokio::test]
async fn refill_is_proportional_to_the_time_waited() {
    let tb = limiter().await;
    let limit = Limit {
        capacity: 10.0,
        per_second: 20.0,
    };
    let k = fresh(&tb, "refill").await;
    assert_eq!(admitted(&tb, &k, limit, 10).await, 10);
    let emptied = Instant::now();
    assert!(!tb.check(&k, limit).await.unwrap().allowed);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let waited = emptied.elapsed().as_secs_f64();
    let got = admitted(&tb, &k, limit, 10).await as f64;
    let expected = (waited * limit.per_second).floor();
    assert!(
        (got - expected).abs() <= 1.0,
        "waited {waited:.3} s: admitted {got}, expected {expected} ± 1"
    );
    // A retry-after from a denial is honest: waiting it out admits a request.
    let d = tb.check(&k, limit).await.unwrap();
    if !d.allowed {
        tokio::time::sleep(d.retry_after).await;
        assert!(
            tb.check(&k, limit).await.unwrap().allowed,
            "retry_after {:?} was too short",
            d.retry_after
        );
    }
}

#[tokio::test]
async fn users_have_independent_buckets() {
    let tb = limiter().await;
    let a = fresh(&tb, "user-a").await;
    let b = fresh(&tb, "user-b").await;
    assert_eq!(admitted(&tb, &a, SLOW, 15).await, 10);
    assert_eq!(
        admitted(&tb, &b, SLOW, 10).await,
        10,
        "user b must not feel user a's burst"
    );
    // And a user's read and write buckets are independent too.
    let w = key(
        &format!("test-user-a-{}", std::process::id()),
        Bucket::Write,
    );
    tb.reset(&w).await.unwrap();
    assert!(tb.check(&w, SLOW).await.unwrap().allowed);
}

#[tokio::test]
async fn a_realistic_agent_is_never_blocked() {
    // The seeds' agent: 15 searches, 2 s apart, then idle for minutes — at 60 requests/min.
    // Played 20× faster: rate 20/s and 100 ms apart; idle only as long as a refill of 15 tokens needs.
    let tb = limiter().await;
    let speed = 20.0;
    let seeds = Limit::per_minute(60);
    let limit = Limit {
        capacity: seeds.capacity,
        per_second: seeds.per_second * speed,
    };
    let k = fresh(&tb, "realistic").await;
    for session in 0..2 {
        for i in 0..15 {
            let d = tb.check(&k, limit).await.unwrap();
            assert!(d.allowed, "session {session}, search {i} was blocked");
            assert!(d.remaining >= 44, "the bucket should barely move: {d:?}");
            tokio::time::sleep(Duration::from_secs_f64(2.0 / speed)).await;
        }
        tokio::time::sleep(Duration::from_secs_f64(15.0 / limit.per_second)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_one_bucket_admit_exactly_its_capacity() {
    let tb = limiter().await;
    let limit = Limit {
        capacity: 20.0,
        per_second: 0.001,
    };
    let k = fresh(&tb, "atomic").await;
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (tb, k) = (tb.clone(), k.clone());
            tokio::spawn(async move { tb.check(&k, limit).await.unwrap().allowed })
        })
        .collect();
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.unwrap());
    }
    assert_eq!(
        allowed, 20,
        "300 concurrent requests on a bucket of 20 must admit exactly 20"
    );
}

#[tokio::test]
async fn deleting_the_key_resets_the_bucket_and_keys_expire() {
    let tb = limiter().await;
    let k = fresh(&tb, "reset").await;
    assert_eq!(admitted(&tb, &k, SLOW, 12).await, 10);
    let mut conn = tb.connection();
    let ttl: i64 = redis::cmd("TTL")
        .arg(&k)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Capacity 10 at 0.01/s refills in 1000 s: the key lives at least that long, not forever.
    assert!((1000..=1001).contains(&ttl), "TTL {ttl}");
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&k)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        fields.contains_key("tokens") && fields.contains_key("last_refill"),
        "{fields:?}"
    );
    tb.reset(&k).await.unwrap();
    assert_eq!(
        admitted(&tb, &k, SLOW, 10).await,
        10,
        "a reset bucket is full again"
    );
}

#[tokio::test]
async fn the_script_is_reloaded_after_script_flush() {
    let tb = limiter().await;
    let k = fresh(&tb, "noscript").await;
    let mut conn = tb.connection();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(tb.sha())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, vec![false]);
    assert!(
        tb.check(&k, SLOW)
            .await
            .expect("EVALSHA must reload the script on NOSCRIPT")
            .allowed
    );
}

#[test]
fn per_minute_limits_follow_the_seeds() {
    let l = Limit::per_minute(60);
    assert_eq!((l.capacity, l.per_second), (60.0, 1.0));
    assert_eq!(Limit::per_minute(20).per_second, 20.0 / 60.0);
    assert_eq!(key("u1", Bucket::Read), "rl:u1:read");
    assert_eq!(key("u1", Bucket::Write), "rl:u1:write");
}

#[tokio::test]
async fn run_records_name_the_redis_they_measured() {
    let url = common::redis_url().await;
    let env = capbench::record::Environment::of_machine()
        .with_redis(&url)
        .await
        .unwrap();
    let version = env.redis_version.expect("INFO server names the version");
    let tb = limiter().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut tb.connection())
        .await
        .unwrap();
    assert!(
        info.contains(&format!("redis_version:{version}\r\n")),
        "{version} not in INFO"
    );
    assert!(
        version.split('.').count() >= 2 && version.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "{version}"
    );
}

#[test]
fn the_timelines_retry_after_promise_judges_the_scripts_raw_wait() {
    use capbench::bench::limiter_timeline::retry_after_gate;
    use capbench::ratelimit::Decision;
    let denied = |wait: Duration| Decision {
        allowed: false,
        remaining: 0,
        retry_after: wait,
    };
    // A denial's header value is at least 1 s whatever the script said; the gate reads the wait.
    assert_eq!(denied(Duration::ZERO).retry_after_secs(), 1);
    assert!(!retry_after_gate(Some(denied(Duration::ZERO)), SLOW).pass);
    assert!(!retry_after_gate(Some(denied(Duration::from_millis(400))), SLOW).pass);
    assert!(retry_after_gate(Some(denied(Duration::from_secs(100))), SLOW).pass);
    assert!(retry_after_gate(Some(denied(Duration::from_millis(99_990))), SLOW).pass);
    // Longer than one token takes to come back (100 s at 0.01/s) is wrong too.
    assert!(!retry_after_gate(Some(denied(Duration::from_secs(7200))), SLOW).pass);
    let allowed = Decision {
        allowed: true,
        remaining: 3,
        retry_after: Duration::ZERO,
    };
    assert!(!retry_after_gate(Some(allowed), SLOW).pass);
    assert!(!retry_after_gate(None, SLOW).pass, "no answer is no pass");
}

#[tokio::test]
async fn the_limiter_timeline_keeps_its_promises_on_real_redis() {
    use capbench::bench::limiter_timeline::{self, LIMIT, SEND_RATE};
    let tb = limiter().await;
    let entry = limiter_timeline::run(&tb, 0.5)
        .await
        .expect("the timeline runs");
    assert_eq!(entry.name, limiter_timeline::ID);
    assert_eq!(entry.gates.len(), 4, "{:?}", entry.gates);
    for g in &entry.gates {
        assert!(g.pass, "{} failed: {entry:?}", g.name);
    }
    let attempts = (0.5 * SEND_RATE) as usize;
    assert_eq!(
        entry.metrics[&capbench::record::Metric::Attempts],
        attempts as f64
    );
    assert_eq!(entry.series["allowed"].len(), attempts);
    // A full bucket admits at least its capacity before it runs dry.
    assert!(
        entry.metrics[&capbench::record::Metric::Allowed] >= LIMIT.capacity,
        "{:?}",
        entry.metrics
    );
}
