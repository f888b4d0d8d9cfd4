//! `load` when things go wrong: a server that accepts and never answers, a lock that holds every
//! query, a target that refuses every connection or fails its requests, a signal mid-run, a Redis
//! gone before the record is written, a panic in the open model's schedule. Each ends within its
//! bound, with an exit code that says what happened and the measurement kept.

use crate::common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use capbench::load;
use capbench::load::model::{self, OpenPlan, Progress};
use capbench::load::scenario::{Spec, Target, VirtualUser};
use capbench::record::{Metric, Parameters, RunRecord};
use serde_json::json;
use sqlx::Connection;

/// A server that accepts connections and never says a word (kept open until the test ends);
/// returns its port and the count of connections it accepted.
fn silent_listener() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            match stream {
                Ok(s) => {
                    held.push(s);
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => break,
            }
        }
    });
    (port, accepted)
}

/// A server in the seeds' API shape: keys are minted (201); search number `n` (from 0) is answered
/// with `status(n)`. Returns its URL and the count of searches it answered.
async fn fixture(status: fn(u64) -> StatusCode) -> (String, Arc<AtomicU64>) {
    let searches = Arc::new(AtomicU64::new(0));
    let counter = searches.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/keys",
            post(|| async { (StatusCode::CREATED, Json(json!({"api_key": "fixture"}))) }),
        )
        .route(
            "/api/v1/traces/search",
            post(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move { (status(n), Json(json!({"results": [], "count": 0}))) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, searches)
}

/// The `load` binary with its records in a directory of the test's own (reused between runs, as
/// every record gets a name of its own).
fn load_binary(reports: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_load"));
    cmd.env(
        "CAPBENCH_REPORTS",
        std::env::temp_dir().join(format!("capbench-load-{reports}")),
    );
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_silent_server_ends_the_run_within_its_bounds() {
    let (port, _) = silent_listener();
    // A database that never answers: the connect timeout, one line naming the host and the limit.
    for model in [&["--users", "2"][..], &["--rate", "10/s"][..]] {
        let started = Instant::now();
        let out = load_binary("silent")
            .args(["--target", &format!("postgres://u@127.0.0.1:{port}/db")])
            .args(["--run-time", "30s", "-q"])
            .args(model)
            .env("CAPBENCH_CONNECT_TIMEOUT", "1s")
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{model:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(6), "{model:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ")
                && err.contains(&format!("127.0.0.1:{port}"))
                && err.contains("1s"),
            "{err}"
        );
    }
    // An HTTP server that never answers: the open model's keys are minted within the run time.
    let started = Instant::now();
    let out = load_binary("silent")
        .args(["--target", &format!("http://127.0.0.1:{port}")])
        .args(["--rate", "10/s", "--run-time", "2s", "-q"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .contains("took longer than the run time (2s)"),
        "{err}"
    );
    // … and the closed model's users give up at the end of the run: nothing measured.
    let started = Instant::now();
    let out = load_binary("silent")
        .args(["--target", &format!("http://127.0.0.1:{port}")])
        .args(["--users", "2", "--run-time", "1s", "-q"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(1 + 5 + 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_holding_every_query_does_not_hang_the_run() {
    let (cfg, url) = common::fresh_database("load_lock", common::service_config()).await;
    capbench::setup::ensure_dataset(&cfg, &url, &Default::default())
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();

    // While load checks for the dataset: the per-request timeout.
    sqlx::raw_sql("BEGIN; LOCK TABLE capacity_meta IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let bounded = tokio::time::timeout(
        Duration::from_secs(20),
        load::run(
            common::load_args(&[
                "--target",
                &url,
                "--timeout",
                "1s",
                "--run-time",
                "1s",
                "-q",
            ]),
            None,
        ),
    )
    .await
    .expect("load hung on a locked capacity_meta");
    let e = capbench::one_line(&bounded.expect_err("a locked dataset"));
    assert!(e.contains("did not answer within 1s (--timeout)"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();

    // During an open-model run: every slot is taken by a query that never returns; the schedule
    // stops at the deadline and the requests in flight are abandoned after the grace period.
    sqlx::raw_sql("BEGIN; LOCK TABLE traces IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = Instant::now();
    let bounded = tokio::time::timeout(
        Duration::from_secs(30),
        load::run(
            common::load_args(&[
                "--target",
                &url,
                "--rate",
                "50/s",
                "--max-in-flight",
                "2",
                "--run-time",
                "1s",
                "-q",
            ]),
            None,
        ),
    )
    .await
    .expect("load hung on a locked table");
    let out = bounded.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1 + model::GRACE.as_secs() + 4));
    let (_, done) = &out.finished[0];
    assert_eq!(done.abandoned, 2);
    assert_eq!(out.succeeded(), 0, "nothing was measured");
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
}

#[test]
fn the_exit_code_says_whether_anything_was_measured_and_held() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |target: &str, extra: &[&str]| {
        load_binary("exit")
            .args(["--target", target, "--users", "2", "--run-time", "1s", "-q"])
            .args(extra)
            .output()
            .unwrap()
    };
    // Nothing listens: every connection refused, nothing measured.
    let refused = format!("http://127.0.0.1:{}", common::free_port());
    let out = run(&refused, &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("load: no request succeeded")
                && l.contains("nothing was measured")),
        "{err}"
    );

    // One search in four fails (500): without a threshold, the default error rate fails the run.
    let (failing, _) = rt.block_on(fixture(|n| {
        if n % 4 == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }));
    let out = run(&failing, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(99), "{}", text(&out.stderr));
    assert!(
        stdout.contains("threshold error_rate<1% (default): FAIL"),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("thresholds failed: error_rate<1% (default)"));
    // The user's own thresholds replace the default.
    let out = run(&failing, &["--threshold", "p99<5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Every search answered 429: a failure for a search user, the expected answer for a burst user
    // (the seeds' BurstAgent).
    let (limited, _) = rt.block_on(fixture(|_| StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(run(&limited, &[]).status.code(), Some(99));
    let out = run(&limited, &["--scenario", "burst"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn a_signal_ends_the_run_with_its_results_written() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, searches) = rt.block_on(fixture(|_| StatusCode::OK));
    for (signal, code) in [
        (nix::sys::signal::Signal::SIGTERM, 143),
        (nix::sys::signal::Signal::SIGINT, 130),
    ] {
        let before = searches.load(Ordering::SeqCst);
        let child = load_binary("signal")
            .args(["--target", &url, "--users", "2", "--run-time", "60s", "-q"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while searches.load(Ordering::SeqCst) < before + 20 {
            assert!(Instant::now() < deadline, "the run never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let sent = Instant::now();
        nix::sys::signal::kill(pid, signal).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(sent.elapsed() < Duration::from_secs(10), "{signal}");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "{signal}: {stderr}");
        assert!(stdout.contains("Aggregated"), "{stdout}");
        assert!(
            stderr.contains(&format!("interrupted ({signal})")),
            "{stderr}"
        );
        let record = stdout
            .lines()
            .find_map(|l| l.strip_prefix("run record: "))
            .unwrap_or_else(|| panic!("no record written: {stdout}"));
        let record = RunRecord::read(std::path::Path::new(record)).unwrap();
        assert!(record.interrupted, "{signal}");
        let total = record
            .results
            .iter()
            .find(|r| r.name == "load/Aggregated")
            .unwrap();
        assert!(total.metrics[&Metric::Count] >= 20.0, "{:?}", total.metrics);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_record_survives_a_redis_gone_before_it_is_written() {
    // A private Redis that the test stops during the run (the service fails open meanwhile).
    let mut servers = capbench::config::Config::from_env().unwrap().servers;
    servers.home = std::env::temp_dir().join(format!("capbench-load-redis-{}", std::process::id()));
    servers.redis_port = common::free_port();
    servers.redis_url = None;
    let redis = capbench::stack::redis(&servers)
        .await
        .expect("a private Redis");
    let (mut cfg, url) = common::fresh_database("load_redis_gone", common::service_config()).await;
    capbench::setup::ensure_dataset(&cfg, &url, &Default::default())
        .await
        .unwrap();
    cfg.servers.redis_url = Some(redis.clone());
    let mut a = common::load_args(&["--users", "2", "--run-time", "3s", "-q"]);
    a.config = cfg;
    // Stopped once the run is under way: its limiter has written its first buckets.
    let stopper = {
        let servers = servers.clone();
        tokio::spawn(async move {
            let client = redis::Client::open(redis).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            loop {
                let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
                if keys > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::task::spawn_blocking(move || capbench::stack::stop(&servers))
                .await
                .unwrap()
        })
    };
    let out = load::run(a, None)
        .await
        .expect("a measured run is never lost");
    stopper.await.unwrap().unwrap();
    assert!(out.succeeded() > 0);
    assert!(
        out.record
            .results
            .iter()
            .any(|r| r.name == "load/Aggregated")
    );
    assert_eq!(out.record.environment.redis_version, None);
    let Parameters::Load(p) = &out.record.parameters else {
        panic!("a load record: {:?}", out.record.parameters);
    };
    let unread = p.environment_unread.join("; ");
    assert!(unread.contains("Redis version"), "{unread}");
    std::fs::remove_dir_all(&servers.home).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_the_schedule_is_the_runs_error() {
    capbench::install_tls_provider();
    let (url, _) = fixture(|_| StatusCode::OK).await;
    let target = Target::http(&url, reqwest::Client::new()).unwrap();
    // A rate of zero (the command line refuses it) makes the schedule thread panic.
    let plan = OpenPlan {
        rate: 0.0,
        stages: None,
        users: Arc::new(vec![Arc::new(VirtualUser::new(
            Arc::new(
                "search"
                    .parse::<Spec>()
                    .unwrap()
                    .compile(&url, &Default::default(), 1)
                    .unwrap(),
            ),
            0,
        ))]),
        tag: "panic".into(),
        max_in_flight: 1,
        run_time: Duration::from_secs(30),
        max_requests: 10,
    };
    let started = Instant::now();
    let e = model::open(&target, &plan, &Progress::new("open", true), None)
        .await
        .expect_err("the panic surfaces");
    assert!(
        capbench::one_line(&e).contains("schedule thread panicked"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "at once, not at the deadline"
    );
}

#[test]
fn a_signal_before_the_run_ends_load_at_once() {
    // load waits for a database that never answers (a 30 s connect timeout) when SIGTERM comes.
    let (port, accepted) = silent_listener();
    let child = load_binary("signal-early")
        .args(["--target", &format!("postgres://u@127.0.0.1:{port}/db")])
        .args(["--run-time", "30s", "-q"])
        .env("CAPBENCH_CONNECT_TIMEOUT", "30s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "load never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert_eq!(
        err.trim(),
        "load: interrupted (SIGTERM) before the run started: nothing was measured"
    );
    assert!(
        !text(&out.stdout).contains("run record:"),
        "nothing is written"
    );
}
