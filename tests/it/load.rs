//! The `load` runner: the seeds' scenarios against the reference service (real PostgreSQL+pgvector
//! and Redis), the database target, thresholds and exit codes, Locust's CSV columns, the open
//! model's coordinated-omission correction and the sweep's knee (on HTTP targets whose stall and
//! capacity the test sets), and the loopback-only rule — checked where connections go, after
//! redirects and URL parameters (127.0.0.2 stands for a remote host; no packet leaves loopback).

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use capbench::load::locust;
use capbench::load::model::Ending;
use capbench::load::{self, Reach};
use capbench::record::Metric;
use reqwest::StatusCode;
use serde_json::json;

/// A tiny HTTP server in the seeds' API shape whose behaviour the test sets: it answers keys and
/// searches with 200 after `service_time`, serving at most `capacity` at once, and once — the first
/// search after `stall_after` — holds everything for `stall`.
async fn fixture_target(
    capacity: usize,
    service_time: Duration,
    stall: Option<(Duration, Duration)>,
) -> String {
    let gate = Arc::new(tokio::sync::Semaphore::new(capacity));
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    let stalled = Arc::new(AtomicBool::new(false));
    let born = Instant::now();
    let search = move || {
        let (gate, lock, stalled) = (gate.clone(), lock.clone(), stalled.clone());
        async move {
            let _slot = gate.acquire().await.expect("semaphore");
            let _serial = lock.lock().await;
            if let Some((after, pause)) = stall
                && born.elapsed() >= after
                && !stalled.swap(true, Ordering::SeqCst)
            {
                tokio::time::sleep(pause).await;
            }
            drop(_serial);
            if !service_time.is_zero() {
                tokio::time::sleep(service_time).await;
            }
            Json(json!({"results": [], "count": 0}))
        }
    };
    let app = axum::Router::new()
        .route(
            "/api/v1/keys",
            post(|| async { (StatusCode::CREATED, Json(json!({"api_key": "fixture"}))) }),
        )
        .route("/api/v1/traces/search", post(search));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_agents_meet_429_after_exactly_capacity_and_realistic_agents_never() {
    let (svc, _) = common::start_service("load_scenarios", |c| {
        c.service.rate_limit_read_per_minute = 12;
    })
    .await;
    let url = svc.url();
    // 4 burst agents: each sends as fast as it can; 12 per minute refills one token per 5 s.
    let out = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--scenario",
            "burst",
            "--users",
            "4",
            "--run-time",
            "2s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let (_, done) = &out.finished[0];
    assert_eq!(done.first_429.len(), 4, "every burst agent met a 429");
    assert!(
        done.first_429.values().all(|n| *n == 12),
        "first 429 after exactly the capacity: {:?}",
        done.first_429
    );
    let search = done.stats.entry("/api/v1/traces/search").unwrap();
    assert_eq!(search.failures, 0, "429 is an expected outcome for bursts");
    let ok = search.statuses.get(&200).copied().unwrap_or(0);
    assert!(
        (48..=52).contains(&ok),
        "4 × 12 admitted (+ refill), got {ok}"
    );
    assert!(search.statuses.get(&429).copied().unwrap_or(0) > 100);
    // Without a threshold, a run is judged by its error rate: the bursts' 429s are no failures.
    assert!(out.passed(), "{:?}", out.verdicts);

    // Realistic agents (a session of 15 searches) under a limit of 20 per minute, while a burst agent
    // empties its own bucket: never blocked.
    let (svc2, _) = common::start_service("load_realistic", |c| {
        c.service.rate_limit_read_per_minute = 20;
    })
    .await;
    let out = load::run(
        common::load_args(&[
            "--target",
            &svc2.url(),
            "--scenario",
            "realistic:3,burst:1",
            "--users",
            "4",
            "--wait",
            "50ms",
            "--run-time",
            "2s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let (_, done) = &out.finished[0];
    let realistic = done
        .stats
        .entry("/api/v1/traces/search [realistic]")
        .expect("realistic requests");
    assert_eq!(realistic.failures, 0);
    assert_eq!(realistic.statuses.get(&429), None);
    // 3 agents, one session each: 15 searches, then idle.
    assert_eq!(realistic.requests, 45);
    assert_eq!(done.first_429.len(), 1, "only the burst agent was limited");
    svc.stop().await.unwrap();
    svc2.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_target_runs_the_search_sql() {
    let (svc, cfg) = common::start_service("load_db", |_| {}).await;
    let db = cfg.servers.database_url.clone().unwrap();
    let out = load::run(
        common::load_args(&[
            "--target",
            &db,
            "--users",
            "2",
            "--wait",
            "0",
            "--run-time",
            "1s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let (_, done) = &out.finished[0];
    let sql = done.stats.entries.values().next().unwrap();
    assert_eq!(
        (sql.method.as_str(), sql.name.as_str()),
        ("SQL", "search_sql")
    );
    assert!(
        sql.requests > 20 && sql.failures == 0,
        "{} requests",
        sql.requests
    );
    // Each search returned the page (bytes = rows for SQL).
    assert_eq!(sql.bytes, sql.requests * 10);

    // Idle CPUs are left alone unless asked; with --cpu-idle poll the record shows the hold.
    if nix::unistd::Uid::effective().is_root() {
        assert_ne!(out.record.environment.cpu_dma_latency_us, Some(0));
        let held = load::run(
            common::load_args(&[
                "--target",
                &db,
                "--users",
                "1",
                "--run-time",
                "1s",
                "--cpu-idle",
                "poll",
                "-q",
            ]),
            None,
        )
        .await
        .unwrap();
        assert_eq!(held.record.environment.cpu_dma_latency_us, Some(0));
        assert_ne!(capbench::cpu_idle::current_limit_us(), Some(0), "released");
    }
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_open_model_exposes_a_stall_that_uncorrected_numbers_hide() {
    // One connection's worth of concurrency, 100 requests/s, and a 600 ms stall after 1 s: a
    // closed-loop client waits through it and then sends its backlog, each looking fast.
    let url = fixture_target(
        1,
        Duration::ZERO,
        Some((Duration::from_secs(1), Duration::from_millis(600))),
    )
    .await;
    let out = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--rate",
            "100/s",
            "--max-in-flight",
            "1",
            "--users",
            "1",
            "--run-time",
            "3s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let (_, done) = &out.finished[0];
    let t = &done.stats.total;
    assert!(t.requests >= 250, "{} requests", t.requests);
    let (corrected, uncorrected) = (t.ms(0.99), t.uncorrected_ms(0.99));
    assert!(
        uncorrected < 50.0,
        "uncorrected p99 hides the stall: {uncorrected} ms"
    );
    assert!(corrected > 300.0, "corrected p99 shows it: {corrected} ms");
    // The stall itself is in both maxima.
    assert!(t.uncorrected_ms(1.0) >= 550.0 && t.ms(1.0) >= 550.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_finds_the_knee_of_a_known_capacity() {
    // 2 requests at a time, 20 ms each: 100 requests/s at most; beyond 2 users, requests queue.
    let url = fixture_target(2, Duration::from_millis(20), None).await;
    let out = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--sweep",
            "1,2,4,8",
            "--wait",
            "0",
            "--run-time",
            "2s",
            "--slo-p99",
            "30ms",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let knee = out.knee.expect("a knee");
    assert_eq!(knee.users, 2, "{knee:?}");
    assert!((80.0..=101.0).contains(&knee.rps), "{knee:?}");
    let levels: Vec<_> = out
        .finished
        .iter()
        .map(|(u, f)| load::sweep::Level::of(u.unwrap(), &f.stats))
        .collect();
    // More users than the capacity: the same throughput, a longer tail.
    assert!(
        levels[3].p99_ms > 60.0 && levels[3].rps < 105.0,
        "{levels:?}"
    );
    let names: Vec<_> = out.record.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "capacity/users/1",
            "capacity/users/2",
            "capacity/users/4",
            "capacity/users/8",
            "capacity/knee"
        ]
    );
    assert_eq!(out.record.results[4].metrics[&Metric::KneeUsers], 2.0);
    // The gate says what it checks: a level at the objective meets it.
    assert_eq!(
        out.record.results[4].gates[0].name,
        "some level meets p99 <= 30 ms with errors < 1%"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_files_have_locusts_columns() {
    let url = fixture_target(4, Duration::from_millis(1), None).await;
    let dir = std::env::temp_dir().join(format!("capbench-load-csv-{}", std::process::id()));
    let prefix = dir.join("run");
    let out = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--users",
            "2",
            "--run-time",
            "2s",
            "--csv",
            prefix.to_str().unwrap(),
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/locust-2.47");
    for (ours, locust) in [
        ("run_stats.csv", "capacity_stats.csv"),
        ("run_stats_history.csv", "capacity_stats_history.csv"),
        ("run_failures.csv", "capacity_failures.csv"),
        ("run_exceptions.csv", "capacity_exceptions.csv"),
    ] {
        let mine = std::fs::read_to_string(dir.join(ours)).unwrap();
        let theirs = std::fs::read_to_string(fixtures.join(locust)).unwrap();
        assert_eq!(mine.lines().next(), theirs.lines().next(), "{ours}");
        let width = theirs.lines().next().unwrap().split(',').count();
        for line in mine.lines().skip(1) {
            assert_eq!(line.split(',').count(), width, "{ours}: {line}");
        }
    }
    let stats_csv = std::fs::read_to_string(dir.join("run_stats.csv")).unwrap();
    let rows: Vec<&str> = stats_csv.lines().collect();
    assert!(rows[1].starts_with("POST,/api/v1/keys,2,0,"));
    assert!(rows.last().unwrap().starts_with(",Aggregated,"));
    // Request counts in the file are the run's.
    let (_, done) = &out.finished[0];
    let total: u64 = rows
        .last()
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total, done.stats.total.requests);
    let history = std::fs::read_to_string(dir.join("run_stats_history.csv")).unwrap();
    assert!(history.lines().count() >= 2, "a row per second");
    assert_eq!(locust::STATS_HEADER.split(',').count(), 22);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn thresholds_decide_the_exit_code() {
    // Through the binary, on a target the test starts on a thread of its own.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(fixture_target(4, Duration::from_millis(2), None));
    let run = |thresholds: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_load"));
        cmd.args(["--target", &url, "--users", "2", "--run-time", "1s", "-q"])
            .env(
                "CAPBENCH_REPORTS",
                std::env::temp_dir().join("capbench-load-exit"),
            );
        for t in thresholds {
            cmd.args(["--threshold", t]);
        }
        cmd.output().unwrap()
    };
    let pass = run(&["p99<5s", "error_rate<1%", "rps>1"]);
    assert_eq!(
        pass.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&pass.stderr)
    );
    let fail = run(&["p99<5s", "p50<0.001ms"]);
    assert_eq!(fail.status.code(), Some(99));
    let stdout = String::from_utf8_lossy(&fail.stdout);
    assert!(
        stdout.contains("p50<0.001ms: FAIL") && stdout.contains("p99<5s: PASS"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&fail.stderr).contains("thresholds failed: p50<0.001ms"));
    // A threshold that does not parse is a usage error, with what to write instead.
    let bad = run(&["p99 fast"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("e.g. 'p99<50ms'"));
}

/// This machine reduced to 127.0.0.1, so that 127.0.0.2 stands for a remote host.
fn only_127_0_0_1() -> Reach {
    Reach::Only(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

const SECOND_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A listener standing for a remote host: it counts the connections it accepts (and drops them).
async fn counting_listener(ip: Ipv4Addr) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, seen)
}

/// An HTTP server on `ip` answering every request with a 307 to the same path at `to`.
async fn redirecting(ip: Ipv4Addr, to: String) -> String {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!("{to}{}", uri.path());
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn targets_beyond_this_machine_need_allow_remote() {
    // Every loopback address is this machine; so is a Unix socket.
    for local in [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "http://[::1]:8000",
        "http://127.0.0.2:8000",
    ] {
        Reach::Loopback
            .check_http(local)
            .await
            .unwrap_or_else(|e| panic!("{local}: {e}"));
    }
    for local in [
        "postgres://u@127.0.0.1/db",
        "postgres://u@localhost/db?host=127.0.0.2",
        "postgres:///db?host=/run/postgresql",
        "postgres://u@127.0.0.2/db?host=%2Ftmp",
    ] {
        Reach::Loopback
            .check_postgres(local)
            .await
            .unwrap_or_else(|e| panic!("{local}: {e}"));
    }
    // With 127.0.0.2 standing for a remote host, the host that counts is where the connection goes:
    // the `host` and `hostaddr` parameters override the URL's authority. Nothing is connected to.
    let remote = only_127_0_0_1();
    for url in [
        "http://127.0.0.2:8000",
        "postgres://u@127.0.0.2:5432/db",
        "postgres://u@localhost/db?host=127.0.0.2",
        "postgres://u@127.0.0.1/db?hostaddr=127.0.0.2",
    ] {
        let e = if url.starts_with("http") {
            remote.check_http(url).await
        } else {
            remote.check_postgres(url).await
        };
        let e = capbench::one_line(&e.expect_err(url));
        assert!(
            e.contains("refusing to load 127.0.0.2") && e.contains("--allow-remote"),
            "{url}: {e}"
        );
        let allowed = if url.starts_with("http") {
            Reach::Anywhere.check_http(url).await
        } else {
            Reach::Anywhere.check_postgres(url).await
        };
        allowed.unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    remote
        .check_postgres("postgres://u@127.0.0.2/db?host=127.0.0.1")
        .await
        .expect("the authority is not where the connection goes");

    // Through the binary: one line, exit 1. 0.0.0.0 ("any address") is not a loopback address; it
    // is refused before any socket is opened (and on Linux would reach this machine anyway).
    let out = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--target", "http://0.0.0.0:8000", "--run-time", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: refusing to load 0.0.0.0") && err.lines().count() == 1,
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_elsewhere_is_refused_before_a_byte_is_sent() {
    // A redirect to an IP literal (checked by the redirect policy: literals skip name resolution).
    let (port, seen) = counting_listener(SECOND_LOOPBACK).await;
    let target = redirecting(Ipv4Addr::LOCALHOST, format!("http://127.0.0.2:{port}")).await;
    let mut a = common::load_args(&[
        "--target",
        &target,
        "--users",
        "2",
        "--run-time",
        "1s",
        "-q",
    ]);
    a.this_machine = only_127_0_0_1();
    let out = load::run(a, None).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 0, "a byte reached 127.0.0.2");
    assert_eq!(out.succeeded(), 0);
    let (_, done) = &out.finished[0];
    let failures: Vec<String> = done
        .stats
        .failures
        .keys()
        .map(|(_, _, e)| e.to_string())
        .collect();
    assert!(
        failures
            .iter()
            .any(|e| e.contains("redirect") && e.contains("refusing to load 127.0.0.2")),
        "{failures:?}"
    );

    // A redirect to a name (checked on what it resolves to): localhost is 127.0.0.1, which here
    // stands for the remote host, the target being on 127.0.0.2.
    let (port, seen) = counting_listener(Ipv4Addr::LOCALHOST).await;
    let target = redirecting(SECOND_LOOPBACK, format!("http://localhost:{port}")).await;
    let mut a = common::load_args(&[
        "--target",
        &target,
        "--users",
        "2",
        "--run-time",
        "1s",
        "-q",
    ]);
    a.this_machine = Reach::Only(vec![IpAddr::V4(SECOND_LOOPBACK)]);
    let out = load::run(a, None).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 0, "a byte reached 127.0.0.1");
    let (_, done) = &out.finished[0];
    let failures: Vec<String> = done
        .stats
        .failures
        .keys()
        .map(|(_, _, e)| e.to_string())
        .collect();
    assert!(
        failures
            .iter()
            .any(|e| e.contains("refusing to load localhost")),
        "{failures:?}"
    );

    // The same redirect where every loopback address is this machine: followed (the listener is
    // reached), so the counts above would have seen a bypass.
    let (port, seen) = counting_listener(SECOND_LOOPBACK).await;
    let target = redirecting(Ipv4Addr::LOCALHOST, format!("http://127.0.0.2:{port}")).await;
    load::run(
        common::load_args(&[
            "--target",
            &target,
            "--users",
            "1",
            "--run-time",
            "1s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    assert!(seen.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_url_is_judged_where_it_connects() {
    let (port, seen) = counting_listener(SECOND_LOOPBACK).await;
    for url in [
        format!("postgres://u@localhost:{port}/db?host=127.0.0.2"),
        format!("postgres://u@localhost:{port}/db?hostaddr=127.0.0.2"),
        format!("postgres://u@127.0.0.1/db?host=127.0.0.2&port={port}"),
    ] {
        let mut a = common::load_args(&["--target", &url, "--run-time", "1s", "-q"]);
        a.this_machine = only_127_0_0_1();
        let e = capbench::one_line(&load::run(a, None).await.expect_err(&url));
        assert!(e.contains("refusing to load 127.0.0.2"), "{url}: {e}");
    }
    assert_eq!(seen.load(Ordering::SeqCst), 0, "a byte reached 127.0.0.2");
}

#[test]
fn every_run_is_bounded() {
    let a = common::load_args(&["--users", "3"]);
    assert_eq!((a.run_time, a.max_requests), (None, 1_000_000));
    // The request bound stops a run before its time.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(fixture_target(4, Duration::ZERO, None));
    let started = Instant::now();
    let out = rt
        .block_on(load::run(
            common::load_args(&[
                "--target",
                &url,
                "--users",
                "2",
                "--wait",
                "0",
                "--max-requests",
                "50",
                "--run-time",
                "30s",
                "-q",
            ]),
            None,
        ))
        .unwrap();
    let (_, done) = &out.finished[0];
    assert_eq!(done.ending, Ending::RequestBound);
    assert!(started.elapsed() < Duration::from_secs(10));
    let searches = done.stats.entry("/api/v1/traces/search").unwrap().requests;
    assert_eq!(searches, 50);
}

/// The serial recall@10 of the first `n` queries of the held-out set at `ef_search`: THE search SQL
/// on one connection, each answer scored against the stored truth — what `load --recall` must
/// report when one user sends each of those queries once.
async fn serial_recall(
    cfg: &capbench::config::Config,
    db: &str,
    ef_search: u32,
    n: usize,
) -> Vec<f64> {
    let (truths, _) = capbench::setup::ensure_truth(cfg, db).await.unwrap();
    let (set, truth) = truths.heldout();
    let mut conn = capbench::db::connect(db).await.unwrap();
    capbench::db::search::set_ef_search(&mut conn, ef_search, false)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (i, v) in set.vectors.iter().take(n).enumerate() {
        let hits = capbench::db::search::search(&mut conn, &pgvector::Vector::from(v.clone()), 10)
            .await
            .unwrap();
        let got: Vec<_> = hits.iter().map(|h| (h.id, h.distance)).collect();
        out.push(capbench::db::truth::recall(
            &truth.ids[i],
            &truth.distances[i],
            &got,
        ));
    }
    out
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Recall under load is the recall of the answers served: one user sending each query of the set
/// once scores exactly the serial recall of the same searches — against the database, and through
/// the service (its `"vector"` search; the generated rows' trust is 1, so its re-rank keeps the
/// distance order). The record names the query set; the terminal's figure says its conditions.
#[tokio::test(flavor = "multi_thread")]
async fn recall_under_load_is_the_recall_of_the_answers_served() {
    const N: usize = 40;
    let ef = 10;
    let (svc, mut cfg) = common::start_service("load_recall", |c| {
        c.service.search_ef_search = ef;
    })
    .await;
    cfg.bench.queries = N as u32;
    let db = cfg.servers.database_url.clone().unwrap();
    let serial = serial_recall(&cfg, &db, ef, N).await;
    let common_args = [
        "--users",
        "1",
        "--wait",
        "0",
        "--run-time",
        "60s",
        "--recall",
        "--queries",
        "40",
        "--search-ef-search",
        "10",
        "-q",
    ];
    // The database target: N searches, each query once.
    let mut argv = vec!["--target", db.as_str(), "--max-requests", "40"];
    argv.extend(common_args);
    let out = load::run(common::load_args(&argv), None).await.unwrap();
    let (_, done) = &out.finished[0];
    let sql = done.stats.entry("search_sql").unwrap();
    assert_eq!((sql.requests, sql.failures, sql.recall.scored), (40, 0, 40));
    let got = sql.recall.mean().unwrap();
    assert!(
        (got - mean(&serial)).abs() < 1e-9,
        "under load {got}, serial {}",
        mean(&serial)
    );
    assert_eq!(
        sql.recall.min(),
        serial.iter().copied().reduce(f64::min),
        "the worst answer"
    );
    let entry = out
        .record
        .results
        .iter()
        .find(|r| r.name == "load/search_sql")
        .unwrap();
    assert_eq!(
        entry.metric(&Metric::RecallMeanOf("heldout".into())),
        Some(got)
    );
    assert_eq!(entry.metric(&Metric::Scored), Some(40.0));
    let capbench::record::Parameters::Load(p) = &out.record.parameters else {
        panic!("a load record")
    };
    assert_eq!(p.query_set.as_deref(), Some("heldout"));

    // Through the service: its answers' ids, scored the same way.
    let base = svc.url();
    let mut argv = vec!["--target", base.as_str(), "--database-url", db.as_str()];
    argv.extend(["--max-requests", "40"]);
    argv.extend(common_args);
    let out = load::run(common::load_args(&argv), None).await.unwrap();
    let (_, done) = &out.finished[0];
    let search = done.stats.entry("/api/v1/traces/search").unwrap();
    // The key's request (on_start) is not bounded; the searches are.
    assert_eq!(
        (search.requests, search.failures, search.recall.scored),
        (40, 0, 40)
    );
    let got = search.recall.mean().unwrap();
    let want = mean(&serial);
    assert!(
        (got - want).abs() < 1e-9,
        "through the service {got}, serial {want}"
    );
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn recall_needs_a_scored_query_set_and_a_scenario_that_sends_it() {
    let dir = std::env::temp_dir().join(format!("capbench-recall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vectors.toml");
    std::fs::write(
        &file,
        r#"
[vars.q]
from = "query_set"

[[user]]
kind = "v"

[[user.tasks]]
method = "POST"
path = "/search"
json = { vector = "{{q.vector}}" }
"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for (argv, why) in [
        (
            vec!["--target", "http://127.0.0.1:9", "--scenario", file],
            "run with --recall",
        ),
        (
            vec![
                "--target",
                "http://127.0.0.1:9",
                "--scenario",
                "burst",
                "--recall",
            ],
            "sends no query of the query set",
        ),
    ] {
        let mut argv = argv;
        argv.extend(["--run-time", "1s", "-q"]);
        let e = load::run(common::load_args(&argv), None).await.unwrap_err();
        let text = capbench::one_line(&e);
        assert!(text.contains(why), "{argv:?}: {text}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Load shapes (k6's stages): the open model sends exactly the arrivals the shaped rate's integral
/// schedules, the closed model runs as many users as the target says (up, held, down to none), the
/// record keeps the shape and its target over time; a shape beside --run-time or --rate is refused.
#[test]
fn load_shapes_follow_their_stages() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(fixture_target(64, Duration::from_millis(1), None));
    // Open: 0 → 100/s in 1 s, 100/s for 1 s, down to 0 in 1 s — 50 + 100 + 50 arrivals.
    let out = rt
        .block_on(load::run(
            common::load_args(&[
                "--target",
                &url,
                "--rate-stages",
                "1s:100,1s:100,1s:0",
                "--users",
                "4",
                "-q",
            ]),
            None,
        ))
        .unwrap();
    let (_, done) = &out.finished[0];
    assert_eq!(
        done.stats.entry("/api/v1/traces/search").unwrap().requests,
        200
    );
    let capbench::record::Parameters::Load(p) = &out.record.parameters else {
        panic!("a load record")
    };
    assert_eq!(p.stages.as_deref(), Some("1s:100,1s:100,1s:0"));
    assert_eq!(p.run_time_s, Some(3.0));
    // Closed: up to 4 users in 1 s, 4 for 2 s, down to none in 1 s, none for 1 s.
    let out = rt
        .block_on(load::run(
            common::load_args(&[
                "--target",
                &url,
                "--stages",
                "1s:4,2s:4,1s:0,1s:0",
                "--wait",
                "20ms",
                "-q",
            ]),
            None,
        ))
        .unwrap();
    let (_, done) = &out.finished[0];
    let users: Vec<usize> = done.stats.total_history().map(|r| r.users).collect();
    assert_eq!(users.iter().max(), Some(&4), "{users:?}");
    assert!(users[1] == 4 && users[2] == 4, "held at 4: {users:?}");
    // By 4 s the target has fallen from 4 to 0: users have retired (how many by then depends on
    // the machine's load; at least one). The last second holds 0 so that the 4 s row is there.
    assert!(users.len() >= 4 && users[3] < 4, "ramped down: {users:?}");
    let total = common::entry(&out.record, "load/Aggregated");
    let target = &total.series["target_per_second"];
    assert_eq!(target.first(), Some(&(0.0, 0.0)));
    assert!(target.iter().any(|p| (p.1 - 4.0).abs() < 1e-9));
    // A shape is the run's time and load: not beside --run-time or --rate.
    for argv in [
        vec![
            "--target",
            url.as_str(),
            "--stages",
            "1s:4",
            "--run-time",
            "10s",
        ],
        vec![
            "--target",
            url.as_str(),
            "--rate-stages",
            "1s:4",
            "--rate",
            "5",
        ],
    ] {
        let e = rt
            .block_on(load::run(common::load_args(&argv), None))
            .unwrap_err();
        assert!(capbench::one_line(&e).contains("--stages"), "{e}");
    }
    let bad =
        capbench::load::LoadArgs::parse_from_args(&["load", "--stages", "30s"].map(String::from))
            .unwrap_err();
    assert!(bad.to_string().contains("DURATION:TARGET"), "{bad}");
}

/// Recovery after a spike: an open run at 50/s against a target that serves 200/s at most (2 at a
/// time × 10 ms), spiked to 300/s for 2 s, builds a backlog that takes its seconds to drain once the
/// rate is back; the run reports how many, `recovery<…` judges it, and a shape without a spike
/// fails a recovery threshold saying so.
#[test]
fn a_spike_reports_its_recovery() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(fixture_target(2, Duration::from_millis(10), None));
    let run = |stages: &str, threshold: &str| {
        rt.block_on(load::run(
            common::load_args(&[
                "--target",
                &url,
                "--rate-stages",
                stages,
                "--users",
                "4",
                "--threshold",
                threshold,
                "-q",
            ]),
            None,
        ))
        .unwrap()
    };
    let out = run("1s:50,2s:50,1s:300,1s:300,1s:50,8s:50", "recovery<8s");
    let (_, done) = &out.finished[0];
    let seconds = done.stats.recovery().expect("a spike").expect("recovered");
    assert!(
        (1.0..8.0).contains(&seconds),
        "the backlog drains after the return: {seconds} s"
    );
    assert!(out.verdicts[0].pass, "{}", out.verdicts[0].line());
    let total = common::entry(&out.record, "load/Aggregated");
    assert_eq!(
        total.metric(&capbench::record::Metric::RecoverySeconds),
        Some(seconds)
    );
    // No spike (never twice the level before): the threshold fails, saying why.
    let out = run("1s:50,2s:60", "recovery<8s");
    assert!(!out.verdicts[0].pass);
    assert!(
        out.verdicts[0].line().contains("no spike"),
        "{}",
        out.verdicts[0].line()
    );
}
