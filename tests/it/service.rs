//! The reference service over real HTTP, against real PostgreSQL+pgvector and Redis: the seeds' API
//! contract, bad input, the limiter's promises through HTTP, Redis and database outages, shutdown.

use crate::common;

use std::time::{Duration, Instant};

use capbench::config::{Config, RedisFailure};
use capbench::server::{AppState, LocalService};
use capbench::setup::{LoadOptions, ensure_dataset};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start(name: &str, tweak: impl FnOnce(&mut Config)) -> (LocalService, Config) {
    common::start_service(name, tweak).await
}

async fn search(client: &reqwest::Client, base: &str, key: &str, q: &str) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/traces/search"))
        .header("X-API-Key", key)
        .json(&json!({"q": q, "limit": 5}))
        .send()
        .await
        .unwrap()
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The user id behind a key (for deleting its bucket).
async fn user_of(svc: &LocalService, key: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT user_id FROM api_keys WHERE key_hash = $1")
        .bind(capbench::server::hash_key(key))
        .fetch_one(&svc.state.pool)
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_contract() {
    let (svc, _) = start("svc_contract", |_| {}).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "contract@test.invalid").await;

    // The key is stored hashed, never in clear.
    let (hash, clear): (String, i64) = sqlx::query_as(
        "SELECT key_hash, (SELECT count(*) FROM api_keys WHERE key_hash = $2) FROM api_keys WHERE key_hash = $1",
    )
    .bind(capbench::server::hash_key(&key))
    .bind(&key)
    .fetch_one(&svc.state.pool)
    .await
    .unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(clear, 0);

    let resp = search(&c, &base, &key, "react hooks useState").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "60");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "59");
    // Server-Timing names every stage, in order, and the total covers them.
    let stages =
        capbench::server::parse_server_timing(resp.headers()["server-timing"].to_str().unwrap());
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["auth", "ratelimit", "embed", "pool", "db", "total"]);
    let (parts, total): (f64, f64) = (stages[..5].iter().map(|(_, ms)| ms).sum(), stages[5].1);
    assert!(
        stages.iter().all(|(_, ms)| *ms >= 0.0) && total + 0.005 >= parts && stages[4].1 > 0.0,
        "{stages:?}"
    );
    let body: Value = resp.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        assert!(
            r["id"].is_string()
                && r["title"]
                    .as_str()
                    .unwrap()
                    .starts_with("Capacity test trace")
        );
        let sim = r["similarity"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&sim) && r["trust_score"].as_f64() == Some(1.0));
    }
    // Deterministic: the same text finds the same traces.
    let again: Value = search(&c, &base, &key, "react hooks useState")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["results"], body["results"]);
    // limit defaults to 10.
    let resp = c
        .post(format!("{base}/api/v1/traces/search"))
        .header("X-API-Key", &key)
        .json(&json!({"q": "docker"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["count"], 10);

    // An authenticated write uses the write bucket (limit 20).
    let resp = c
        .post(format!("{base}/api/v1/traces"))
        .header("X-API-Key", &key)
        .json(&json!({"title": "t", "context_text": "c", "solution_text": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["x-ratelimit-limit"], "20");

    let health = get_json(&c, &format!("{base}/health")).await;
    assert_eq!(
        health,
        json!({"status": "ok", "database": "ok", "redis": "ok"})
    );
    let metrics = get_text(&c, &format!("{base}/metrics")).await;
    let count: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("commontrace_search_duration_seconds_count "))
        .expect("search histogram exported")
        .parse()
        .unwrap();
    assert!(count >= 3.0, "{metrics}");
    assert!(metrics.contains("commontrace_search_duration_seconds_bucket{le=\"0.05\"}"));
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_status_and_a_json_error() {
    let (svc, _) = start("svc_bad_input", |_| {}).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "bad@test.invalid").await;
    let url = format!("{base}/api/v1/traces/search");
    let post = |body: String, key: Option<&str>| {
        let mut r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        r.send()
    };
    let cases: Vec<(&str, String, Option<&str>, StatusCode)> = vec![
        (
            "malformed JSON",
            "{\"q\": ".into(),
            Some(&key),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "wrong type",
            json!({"q": 42}).to_string(),
            Some(&key),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "limit out of range",
            json!({"q": "x", "limit": 0}).to_string(),
            Some(&key),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "empty q",
            json!({"q": "   "}).to_string(),
            Some(&key),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "over-long q",
            json!({"q": "x".repeat(2001)}).to_string(),
            Some(&key),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing key",
            json!({"q": "x"}).to_string(),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown key",
            json!({"q": "x"}).to_string(),
            Some("ct_not-a-key"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "oversized body",
            json!({"q": "x".repeat(100_000)}).to_string(),
            Some(&key),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, body, key, want) in cases {
        let resp = post(body, key).await.unwrap();
        assert_eq!(resp.status(), want, "{what}");
        let err: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: the error body is not JSON: {e}"));
        assert!(
            err["error"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {err}"
        );
    }
    // SQL-looking text is just text.
    let resp = search(&c, &base, &key, "'; DROP TABLE traces; --").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM traces")
        .fetch_one(&svc.state.pool)
        .await
        .unwrap();
    assert_eq!(n, 600);
    // Bad email on key creation.
    let resp = c
        .post(format!("{base}/api/v1/keys"))
        .json(&json!({"email": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_limiters_promises_through_http() {
    let (svc, _) = start("svc_promises", |c| {
        c.service.rate_limit_read_per_minute = 20
    })
    .await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let alice = common::mint_key(&c, &base, "alice@test.invalid").await;
    let bob = common::mint_key(&c, &base, "bob@test.invalid").await;

    // (a) a full bucket admits a burst of exactly its capacity …
    for i in 0..20 {
        assert_eq!(
            search(&c, &base, &alice, "burst").await.status(),
            StatusCode::OK,
            "request {i}"
        );
    }
    // (b) … and the next is 429 with Retry-After ≥ 1 (one token at 20/min is 3 s away).
    let denied = search(&c, &base, &alice, "burst").await;
    assert_eq!(denied.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = denied.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert_eq!(denied.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(denied.headers()["x-ratelimit-limit"], "20");
    // (d) another user is unaffected.
    assert_eq!(
        search(&c, &base, &bob, "independent").await.status(),
        StatusCode::OK
    );
    // (g) deleting the key resets the bucket.
    svc.state
        .limiter
        .reset(&format!("rl:{}:read", user_of(&svc, &alice).await))
        .await
        .unwrap();
    assert_eq!(
        search(&c, &base, &alice, "reset").await.status(),
        StatusCode::OK
    );

    // (f) N ≫ C concurrent requests admit exactly C.
    let carol = common::mint_key(&c, &base, "carol@test.invalid").await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, base, key) = (c.clone(), base.clone(), carol.clone());
            tokio::spawn(async move { search(&c, &base, &key, "concurrent").await.status() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(
            s == StatusCode::OK || s == StatusCode::TOO_MANY_REQUESTS,
            "{s}"
        );
        ok += usize::from(s == StatusCode::OK);
    }
    let refilled = (started.elapsed().as_secs_f64() * 20.0 / 60.0).floor() as usize;
    assert!(
        ok >= 20 && ok <= 20 + refilled,
        "100 concurrent requests admitted {ok}, capacity 20 (+{refilled} refilled)"
    );
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn refill_and_a_realistic_agent_through_http() {
    // 120/min: capacity 120, refill 2 tokens/s.
    let (svc, _) = start("svc_refill", |c| c.service.rate_limit_read_per_minute = 120).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "refill@test.invalid").await;
    for _ in 0..120 {
        assert_eq!(
            search(&c, &base, &key, "drain").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        search(&c, &base, &key, "drain").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let emptied = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waited = emptied.elapsed().as_secs_f64();
    let mut ok = 0;
    for _ in 0..10 {
        ok += usize::from(search(&c, &base, &key, "refill").await.status() == StatusCode::OK);
    }
    let expected = (waited * 2.0).floor() as i64;
    assert!(
        (ok as i64 - expected).abs() <= 1,
        "waited {waited:.2} s: {ok} admitted, expected {expected} ± 1"
    );
    svc.stop().await.unwrap();

    // (e) at the default 60/min, an agent's 15 searches (all at once: the worst case of "within 30 s")
    // are never blocked.
    let (svc, _) = start("svc_realistic", |_| {}).await;
    let key = common::mint_key(&c, &svc.url(), "agent@test.invalid").await;
    for i in 0..15 {
        let resp = search(&c, &svc.url(), &key, "realistic agent").await;
        assert_eq!(resp.status(), StatusCode::OK, "search {i} was blocked");
    }
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_limited_per_client_address() {
    let (svc, _) = start("svc_keys", |c| c.service.rate_limit_keys_per_minute = 3).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    // Reset this address's bucket (other tests mint keys from 127.0.0.1 too).
    svc.state
        .limiter
        .reset("rl:addr:127.0.0.1:keys")
        .await
        .unwrap();
    for i in 0..3 {
        common::mint_key(&c, &base, &format!("k{i}@test.invalid")).await;
    }
    let resp = c
        .post(format!("{base}/api/v1/keys"))
        .json(&json!({"email": "k4@test.invalid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    svc.state
        .limiter
        .reset("rl:addr:127.0.0.1:keys")
        .await
        .unwrap();
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_requests_in_flight() {
    let (mut svc, _) = start("svc_shutdown", |_| {}).await;
    let c = reqwest::Client::new();
    let key = common::mint_key(&c, &svc.url(), "drain@test.invalid").await;
    // A request whose body is still arriving when shutdown begins.
    let (tx, in_flight) = half_sent_search(&c, &svc.url(), &key).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    svc.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tx.send(Ok(b"\", \"limit\": 3}".to_vec())).await.unwrap();
    drop(tx);
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(resp.status(), StatusCode::OK);
    svc.stop().await.expect("the service stops cleanly");
}

/// A search whose body is half sent: the rest goes through the returned sender (then drop it).
async fn half_sent_search(
    c: &reqwest::Client,
    base: &str,
    key: &str,
) -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let request = c
        .post(format!("{base}/api/v1/traces/search"))
        .header("X-API-Key", key)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)));
    let in_flight = tokio::spawn(request.send());
    tx.send(Ok(b"{\"q\": \"drain".to_vec())).await.unwrap();
    (tx, in_flight)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A private Redis (own home, free port) that a test may stop and start.
fn private_redis(name: &str) -> capbench::config::Servers {
    let mut servers = Config::from_env().unwrap().servers;
    servers.home = std::env::temp_dir().join(format!("capbench-{name}-{}", std::process::id()));
    servers.redis_port = common::free_port();
    servers.redis_url = None;
    servers
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_fails_open_or_closed_as_configured() {
    for policy in [RedisFailure::Open, RedisFailure::Closed] {
        let servers = private_redis(&format!("redis-{policy:?}"));
        let redis_url = capbench::stack::redis(&servers)
            .await
            .expect("start a private Redis");
        let (svc, _) = start(&format!("svc_redis_{policy:?}").to_lowercase(), |c| {
            c.service.on_redis_error = policy;
            c.service.rate_limit_read_per_minute = 5;
            c.servers.redis_url = Some(redis_url.clone());
        })
        .await;
        let (c, base) = (reqwest::Client::new(), svc.url());
        let key = common::mint_key(&c, &base, "outage@test.invalid").await;
        assert_eq!(
            search(&c, &base, &key, "before").await.status(),
            StatusCode::OK
        );

        capbench::stack::stop(&servers).unwrap();
        let status = search(&c, &base, &key, "during").await.status();
        let health = get_json(&c, &format!("{base}/health")).await;
        assert_eq!(health["redis"], "down");
        match policy {
            RedisFailure::Open => {
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "fail-open serves while Redis is down"
                );
                let metrics = get_text(&c, &format!("{base}/metrics")).await;
                assert!(
                    metrics
                        .lines()
                        .any(|l| l.starts_with("capbench_limiter_errors_total ")
                            && !l.ends_with(" 0")),
                    "{metrics}"
                );
            }
            RedisFailure::Closed => assert_eq!(
                status,
                StatusCode::SERVICE_UNAVAILABLE,
                "fail-closed refuses"
            ),
        }

        // Redis back: limiting works again, through the same (reconnecting) connection.
        capbench::stack::redis(&servers)
            .await
            .expect("restart the private Redis");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut statuses = Vec::new();
        while Instant::now() < deadline {
            let s = search(&c, &base, &key, "after").await.status();
            statuses.push(s);
            if s == StatusCode::TOO_MANY_REQUESTS {
                break;
            }
        }
        assert_eq!(
            statuses.last(),
            Some(&StatusCode::TOO_MANY_REQUESTS),
            "{policy:?}: limiting never resumed: {statuses:?}"
        );
        svc.stop().await.unwrap();
        capbench::stack::stop(&servers).unwrap();
        let _ = std::fs::remove_dir_all(&servers.home);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn database_down_is_503_and_the_service_recovers_by_itself() {
    capbench::install_tls_provider();
    // A private PostgreSQL cluster (own directory, free port) that the test stops and starts.
    let base_cfg = Config::from_env().unwrap();
    let bindir = common::pg_bindir();
    let port = common::free_port();
    let dir = base_cfg.servers.home.join("test-db-outage");
    let cluster =
        capbench::stack::LocalCluster::with_bindir(bindir.into(), dir.clone(), port).unwrap();
    cluster.ensure_running().expect("start a private cluster");
    capbench::stack::ensure_database(&cluster.url("postgres"), "outage")
        .await
        .unwrap();
    let url = cluster.url("outage");
    let mut cfg = common::service_config();
    cfg.servers.database_url = Some(url.clone());
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let state = AppState::connect(&cfg, &url, &common::redis_url().await)
        .await
        .unwrap();
    let svc = LocalService::start(state).await.unwrap();
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "outage@test.invalid").await;
    assert_eq!(
        search(&c, &base, &key, "before").await.status(),
        StatusCode::OK
    );

    cluster.stop().unwrap();
    let t = Instant::now();
    assert_eq!(
        search(&c, &base, &key, "during").await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a database outage must fail fast, took {:?}",
        t.elapsed()
    );
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    cluster.ensure_running().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = StatusCode::SERVICE_UNAVAILABLE;
    while Instant::now() < deadline && last != StatusCode::OK {
        last = search(&c, &base, &key, "after").await.status();
        if last != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        last,
        StatusCode::OK,
        "the service did not recover after the database came back"
    );
    svc.stop().await.unwrap();
    cluster.stop().unwrap();
}

/// The `serve` binary on database `capbench_test_<name>` (the service's small dataset), at
/// `ef_search`; returns the child and its stderr lines up to "listening" (and the rest later).
async fn serve_binary(
    name: &str,
    ef_search: u32,
) -> (
    tokio::process::Child,
    String,
    Vec<String>,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    use tokio::io::AsyncBufReadExt;
    capbench::install_tls_provider();
    let (cfg, url) = common::fresh_database(name, common::service_config()).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_serve"))
        .args(["--addr", &addr])
        .env("DATABASE_URL", &url)
        .env("REDIS_URL", common::redis_url().await)
        .envs(common::dataset_env(&cfg))
        .env("CAPBENCH_SEARCH_EF_SEARCH", ef_search.to_string())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the serve binary");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.contains("listening on")) {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("serve did not start: {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("serve exited: {seen:?}"));
        seen.push(line);
    }
    (child, format!("http://{addr}"), seen, lines)
}

fn sigterm(child: &tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_serve_binary_warns_of_a_plan_without_the_index() {
    // On the 600-row test table the planner leaves the index from about ef_search 100.
    let (child, _, seen, stderr) = serve_binary("svc_bin_plan", 200).await;
    let warning = seen
        .iter()
        .find(|l| l.contains(" WARN ") && l.contains("PostgreSQL plans the search"));
    let warning = warning.unwrap_or_else(|| panic!("no warning in {seen:?}"));
    assert!(
        warning.contains("at ef_search 200 PostgreSQL plans the search without the HNSW index")
            && warning.contains("Seq Scan")
            && warning.contains("--search-ef-search"),
        "{warning}"
    );
    // Its log pipe gone (a dead log collector), the service still shuts down cleanly.
    drop(stderr);
    sigterm(&child);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "no panic writing to a closed stderr"
    );

    let (child, _, seen, _stderr) = serve_binary("svc_bin_plan_ok", 40).await;
    assert!(
        !seen.iter().any(|l| l.contains("warning")),
        "at ef_search 40 the index is used: {seen:?}"
    );
    sigterm(&child);
    assert_eq!(
        child.wait_with_output().await.unwrap().status.code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_serve_binary_drains_requests_in_flight_on_sigterm() {
    let (mut child, base, _, mut lines) = serve_binary("svc_bin_drain", 40).await;
    let c = reqwest::Client::new();
    let key = common::mint_key(&c, &base, "bin-drain@test.invalid").await;
    let (tx, in_flight) = half_sent_search(&c, &base, &key).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sigterm(&child);
    let line = lines.next_line().await.unwrap().unwrap();
    assert!(
        line.contains("SIGTERM") && line.contains("draining"),
        "{line}"
    );
    // New connections are refused while the old one is served.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/health"))
            .send()
            .await
            .is_err(),
        "a new connection after SIGTERM"
    );
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    tx.send(Ok(b"\", \"limit\": 3}".to_vec())).await.unwrap();
    drop(tx);
    let resp = in_flight.await.unwrap().expect("answered");
    assert_eq!(resp.status(), StatusCode::OK);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("serve exits once drained")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = Vec::new();
    while let Ok(Some(l)) = lines.next_line().await {
        rest.push(l);
    }
    assert!(
        rest.iter()
            .any(|l| l.contains("every request in flight was answered")),
        "{rest:?}"
    );
}

async fn search_tagged(
    c: &reqwest::Client,
    base: &str,
    key: &str,
    tags: Value,
) -> reqwest::Response {
    c.post(format!("{base}/api/v1/traces/search"))
        .header("X-API-Key", key)
        .json(&json!({"q": "postgresql migration alembic", "limit": 10, "tags": tags}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tags_filter_returns_only_tagged_traces_and_bad_tags_are_422() {
    let (svc, cfg) = start("svc_tags", |c| {
        c.service.rate_limit_read_per_minute = 1000;
        c.service.search_iterative_scan = capbench::config::IterativeScan::RelaxedOrder;
    })
    .await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "tags@test.invalid").await;
    let tags_of = async |id: &str| -> Vec<String> {
        sqlx::query_scalar("SELECT tags FROM traces WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&svc.state.pool)
            .await
            .unwrap()
    };
    for (filter, rows) in [
        (vec!["u10"], 60),
        (vec!["u10", "u50"], 60),
        (vec!["c0.1"], 1),
        (vec!["nobody"], 0),
    ] {
        let resp = search_tagged(&c, &base, &key, json!(filter)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{filter:?}");
        let body: Value = resp.json().await.unwrap();
        let results = body["results"].as_array().unwrap();
        assert_eq!(
            results.len(),
            rows.min(10),
            "{filter:?} over {} rows",
            cfg.dataset.rows
        );
        for r in results {
            let tags = tags_of(r["id"].as_str().unwrap()).await;
            assert!(
                filter.iter().all(|f| tags.iter().any(|t| t == f)),
                "{filter:?}: a result tagged {tags:?}"
            );
        }
    }
    // Unfiltered, the same query reaches untagged-by-u10 rows too.
    let body: Value = search_tagged(&c, &base, &key, json!([]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["count"], 10);
    for bad in [
        json!(["Upper"]),
        json!([""]),
        json!(["a b"]),
        json!(vec!["t"; 9]),
        json!("u1"),
    ] {
        let resp = search_tagged(&c, &base, &key, bad.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{bad}: {err}"
        );
    }
    // The pool's connections run with the service's iterative scan.
    let mut conn = svc.state.pool.acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("SELECT current_setting('hnsw.iterative_scan')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(mode, "relaxed_order");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_by_vector_answers_as_the_search_sql_does_and_bad_vectors_are_422() {
    let (svc, cfg) = start("svc_vector", |c| {
        c.service.rate_limit_read_per_minute = 1000;
    })
    .await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "vector@test.invalid").await;
    let post = async |body: Value| {
        c.post(format!("{base}/api/v1/traces/search"))
            .header("X-API-Key", &key)
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    let data = capbench::dataset::Dataset::new(cfg.dataset.clone());
    let queries = data.query_set(capbench::config::Distribution::NearDuplicate, None, 3);
    let mut conn = svc.state.pool.acquire().await.unwrap();
    for v in &queries.vectors {
        let resp = post(json!({"vector": v, "limit": 10})).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        let got: Vec<(String, f64)> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["similarity"].as_f64().unwrap(),
                )
            })
            .collect();
        // THE search SQL on a connection of the service's pool (its ef_search), the same vector.
        let hits = capbench::db::search::search(&mut conn, &pgvector::Vector::from(v.clone()), 10)
            .await
            .unwrap();
        let want: Vec<(String, f64)> = hits
            .iter()
            .map(|h| (h.id.to_string(), 1.0 - h.distance))
            .collect();
        assert_eq!(got.len(), 10);
        for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
            assert_eq!(
                gi, wi,
                "the generated rows' trust is 1: the re-rank keeps distance order"
            );
            assert!((gs - ws).abs() < 1e-6, "{gs} vs {ws}");
        }
    }
    drop(conn);
    let dims = cfg.dataset.dims as usize;
    let ok = queries.vectors[0].clone();
    for (bad, why) in [
        (json!({"vector": vec![0.1; dims - 1]}), "must have"),
        (json!({"vector": vec![0.0; dims]}), "not all zero"),
        (json!({"vector": ok, "q": "both"}), "not both"),
        (json!({"limit": 10}), "is required"),
        (json!({"vector": "0.1,0.2"}), ""),
    ] {
        let resp = post(bad.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        let err: Value = resp.json().await.unwrap();
        let text = err["error"].as_str().unwrap_or_default();
        assert!(!text.is_empty() && text.contains(why), "{bad}: {err}");
    }
}
