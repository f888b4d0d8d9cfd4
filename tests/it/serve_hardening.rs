//! The service under attack, carelessness and failing servers (issue #11): what `serve` logs,
//! slow and idle clients, oversized bodies on kept-alive connections, key minting, bad bytes,
//! unknown keys, and servers that accept TCP and never answer. Against real PostgreSQL+pgvector
//! and Redis; the binary where the behaviour belongs to the process (logs, signals, limits).

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capbench::config::Config;
use capbench::server::{AppState, LocalService};
use capbench::setup::{LoadOptions, ensure_dataset};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn search(client: &reqwest::Client, base: &str, key: &str, q: &str) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/traces/search"))
        .header("X-API-Key", key)
        .json(&json!({"q": q, "limit": 5}))
        .send()
        .await
        .unwrap()
}

/// The user id behind a key.
async fn user_of(pool: &sqlx::PgPool, key: &str) -> uuid::Uuid {
    sqlx::query_scalar("SELECT user_id FROM api_keys WHERE key_hash = $1")
        .bind(capbench::server::hash_key(key))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A metric's value in a `/metrics` text (0 when absent).
async fn metric(client: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A private Redis (own home, free port) that a test may stop and start.
fn private_redis(name: &str) -> capbench::config::Servers {
    let mut servers = Config::from_env().unwrap().servers;
    servers.home = std::env::temp_dir().join(format!("capbench-{name}-{}", std::process::id()));
    servers.redis_port = common::free_port();
    servers.redis_url = None;
    servers
}

/// A loopback listener that accepts connections and never says a word (a hung server).
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, held)
}

/// How a test runs the `serve` binary.
#[derive(Default)]
struct ServeOpts {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The database to serve (default: a fresh one with the small dataset).
    database_url: Option<String>,
    redis_url: Option<String>,
    /// RLIMIT_NOFILE (soft and hard) of the child.
    nofile: Option<u64>,
}

/// The `serve` binary, started and listening; its stderr lines are collected as they come.
struct Serve {
    child: tokio::process::Child,
    base: String,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Serve {
    async fn start(name: &str, opts: ServeOpts) -> Serve {
        capbench::install_tls_provider();
        let cfg = common::service_config();
        let url = match opts.database_url {
            Some(url) => url,
            None => {
                let (cfg, url) = common::fresh_database(name, cfg.clone()).await;
                ensure_dataset(&cfg, &url, &LoadOptions::default())
                    .await
                    .unwrap();
                url
            }
        };
        let redis = match opts.redis_url {
            Some(url) => url,
            None => common::redis_url().await,
        };
        let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_serve"));
        cmd.arg("--addr")
            .arg(addr.to_string())
            .args(&opts.args)
            .env_remove("RUST_LOG")
            .env_remove("CAPBENCH_LOG_FORMAT")
            .env("DATABASE_URL", &url)
            .env("REDIS_URL", &redis)
            .envs(common::dataset_env(&cfg))
            .env("CAPBENCH_SEARCH_EF_SEARCH", "40")
            .env("CAPBENCH_POOL_SIZE", "4")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(n) = opts.nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("start the serve binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let serve = Serve {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
            reader,
        };
        serve
            .wait_for("listening", |l| l.contains("listening on"), 60)
            .await;
        serve
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a line matching `pred`; panics with the log after `secs` seconds.
    async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| pred(l)) {
                return l;
            }
            if Instant::now() > deadline {
                panic!("no {what} line within {secs} s: {:#?}", self.lines());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM, then the exit code (None: still running after `secs` seconds) and every line.
    async fn stop(mut self, secs: u64) -> (Option<i32>, Vec<String>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(secs), self.child.wait()).await;
        let code = match status {
            Ok(s) => s.unwrap().code(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        (code, self.lines())
    }
}

/// Reads an HTTP/1.1 response head and its Content-Length body; `None` at EOF or on an error.
async fn read_response(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some((head, String::from_utf8_lossy(&body).to_string()))
}

/// Whether the server closes `stream` (EOF or reset) within `secs` seconds.
async fn closed_within(stream: &mut TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: capbench\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// Logging (item 5)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_the_fail_open_transition_once_and_its_recovery() {
    let servers = private_redis("log-fail-open");
    let redis_url = capbench::stack::redis(&servers)
        .await
        .expect("start a private Redis");
    let serve = Serve::start(
        "hard_log_fail_open",
        ServeOpts {
            redis_url: Some(redis_url),
            ..ServeOpts::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let key = common::mint_key(&c, &serve.base, "log-open@test.invalid").await;
    assert_eq!(
        search(&c, &serve.base, &key, "before").await.status(),
        StatusCode::OK
    );

    capbench::stack::stop(&servers).unwrap();
    for _ in 0..3 {
        assert_eq!(
            search(&c, &serve.base, &key, "during").await.status(),
            StatusCode::OK,
            "fail-open serves while Redis is down"
        );
    }
    serve
        .wait_for("fail-open", |l| l.contains("fail-open"), 10)
        .await;
    let down: Vec<String> = serve
        .lines()
        .into_iter()
        .filter(|l| l.contains("fail-open"))
        .collect();
    assert_eq!(
        down.len(),
        1,
        "one line per transition, not per request: {down:#?}"
    );
    assert!(down[0].contains("WARN"), "{}", down[0]);

    capbench::stack::redis(&servers)
        .await
        .expect("restart the private Redis");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !serve
        .lines()
        .iter()
        .any(|l| l.contains("rate limiter available again"))
    {
        assert!(
            Instant::now() < deadline,
            "no recovery line: {:#?}",
            serve.lines()
        );
        search(&c, &serve.base, &key, "after").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, lines) = serve.stop(10).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains(&key)),
        "an API key in the log: {lines:#?}"
    );
    capbench::stack::stop(&servers).unwrap();
    let _ = std::fs::remove_dir_all(&servers.home);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_gives_json_lines_with_the_startup_settings() {
    let serve = Serve::start(
        "hard_log_json",
        ServeOpts {
            args: vec!["--log-format".into(), "json".into()],
            ..ServeOpts::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    // A warning-worthy request does not matter here; the startup and shutdown lines do.
    let resp = c
        .get(format!("{}/health", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (code, lines) = serve.stop(10).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(lines.len() >= 3, "{lines:#?}");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for e in &events {
        assert!(e["level"].is_string() && e["timestamp"].is_string(), "{e}");
    }
    let start = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("listening on"))
        })
        .expect("the startup line");
    for field in [
        "database",
        "redis",
        "ef_search",
        "header_read_timeout",
        "keepalive_timeout",
        "max_connections",
    ] {
        assert!(!start[field].is_null(), "no {field} in {start}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_database_down_and_up_once_each() {
    capbench::install_tls_provider();
    let cfg = common::service_config();
    let port = common::free_port();
    let dir = cfg.servers.home.join("test-hard-db-log");
    let cluster =
        capbench::stack::LocalCluster::with_bindir(common::pg_bindir().into(), dir, port).unwrap();
    cluster.ensure_running().expect("start a private cluster");
    capbench::stack::ensure_database(&cluster.url("postgres"), "outage")
        .await
        .unwrap();
    let url = cluster.url("outage");
    let mut load_cfg = cfg.clone();
    load_cfg.servers.database_url = Some(url.clone());
    ensure_dataset(&load_cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let serve = Serve::start(
        "unused",
        ServeOpts {
            database_url: Some(url),
            ..ServeOpts::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let key = common::mint_key(&c, &serve.base, "log-db@test.invalid").await;
    assert_eq!(
        search(&c, &serve.base, &key, "before").await.status(),
        StatusCode::OK
    );

    cluster.stop().unwrap();
    for _ in 0..3 {
        let resp = search(&c, &serve.base, &key, "during").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("127.0.0.1") && !body.contains("refused"),
            "the cause stays in the log: {body}"
        );
    }
    serve
        .wait_for("database down", |l| l.contains("database unavailable"), 10)
        .await;
    cluster.ensure_running().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while search(&c, &serve.base, &key, "after").await.status() != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "no recovery: {:#?}",
            serve.lines()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serve
        .wait_for("database up", |l| l.contains("database available again"), 5)
        .await;
    let (code, lines) = serve.stop(10).await;
    cluster.stop().unwrap();
    assert_eq!(code, Some(0), "{lines:#?}");
    let down = lines
        .iter()
        .filter(|l| l.contains("database unavailable"))
        .count();
    assert_eq!(down, 1, "one line per transition: {lines:#?}");
    let up = lines
        .iter()
        .find(|l| l.contains("database available again"))
        .unwrap();
    assert!(up.contains("answered 503"), "{up}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedding_failure_is_503_for_searches_and_writes_with_the_cause_in_the_log() {
    let dead = format!("http://127.0.0.1:{}/v1", common::free_port());
    let serve = Serve::start(
        "hard_embed_503",
        ServeOpts {
            env: vec![("CAPBENCH_EMBEDDINGS_URL".into(), dead.clone())],
            ..ServeOpts::default()
        },
    )
    .await;
    let c = reqwest::Client::new();
    let key = common::mint_key(&c, &serve.base, "embed-503@test.invalid").await;
    let resp = search(&c, &serve.base, &key, "anything").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = resp.text().await.unwrap();
    assert!(
        !body.contains("127.0.0.1"),
        "the cause stays in the log: {body}"
    );
    let resp = c
        .post(format!("{}/api/v1/traces", serve.base))
        .header("X-API-Key", &key)
        .json(&json!({"title": "t", "context_text": "c", "solution_text": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a write whose embedding fails is 503 like a search"
    );
    let line = serve
        .wait_for("embedding failure", |l| l.contains("embedding"), 5)
        .await;
    assert!(line.contains(&dead), "the cause names the endpoint: {line}");
    let (code, _) = serve.stop(10).await;
    assert_eq!(code, Some(0));
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients (item 6)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_are_closed_after_their_timeouts() {
    let serve = Serve::start(
        "hard_idle",
        ServeOpts {
            env: vec![
                ("CAPBENCH_KEEPALIVE_TIMEOUT".into(), "1s".into()),
                ("CAPBENCH_HEADER_READ_TIMEOUT".into(), "1s".into()),
            ],
            ..ServeOpts::default()
        },
    )
    .await;
    // A kept-alive connection after its request.
    let mut kept = TcpStream::connect(serve.addr).await.unwrap();
    kept.write_all(HEALTH).await.unwrap();
    let (head, _) = read_response(&mut kept).await.expect("answered");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(serve.addr).await.unwrap();
    // A header sent one byte at a time, slower than the header timeout allows.
    let mut slow = TcpStream::connect(serve.addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in b"GET /health HTTP/1.1\r\nHost: capbench\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                return slow;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    });
    assert!(
        closed_within(&mut kept, 6).await,
        "idle kept-alive connection"
    );
    assert!(closed_within(&mut silent, 6).await, "silent connection");
    let mut slow = tokio::time::timeout(Duration::from_secs(6), trickle)
        .await
        .expect("the slow header is cut off")
        .unwrap();
    assert!(closed_within(&mut slow, 1).await);
    let (code, lines) = serve.stop(10).await;
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_sent_header_and_idle_connections_do_not_delay_shutdown() {
    let serve = Serve::start("hard_half_header", ServeOpts::default()).await;
    let mut half = TcpStream::connect(serve.addr).await.unwrap();
    half.write_all(b"POST /api/v1/traces/search HTTP/1.1\r\nHost: capbench\r\nContent-")
        .await
        .unwrap();
    let mut kept = TcpStream::connect(serve.addr).await.unwrap();
    kept.write_all(HEALTH).await.unwrap();
    read_response(&mut kept).await.expect("answered");
    let _silent = TcpStream::connect(serve.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (code, lines) = serve.stop(8).await;
    assert_eq!(
        code,
        Some(0),
        "serve must exit 0 at once after {:?}: {lines:#?}",
        started.elapsed()
    );
    assert!(closed_within(&mut half, 1).await);
    assert!(closed_within(&mut kept, 1).await);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("every request in flight was answered")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_with_300_idle_connections_under_256_descriptors() {
    let serve = Serve::start(
        "hard_fd_limit",
        ServeOpts {
            nofile: Some(256),
            ..ServeOpts::default()
        },
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(serve.addr).await.unwrap());
    }
    // Half of them kept alive after a request (those that are accepted in time).
    for s in idle.iter_mut().take(100) {
        let _ = s.write_all(HEALTH).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..3 {
        let resp = c
            .get(format!("{}/health", serve.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/health {i} with 300 idle connections open: {e}"));
        assert_eq!(resp.status(), StatusCode::OK);
    }
    drop(idle);
    let (code, lines) = serve.stop(10).await;
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("the open-file limit is 256")),
        "the lowered connection limit is announced: {lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Oversized bodies on kept-alive connections (item 7)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_8_mb_body_on_a_kept_alive_connection_reads_413() {
    let (svc, _) = common::start_service("hard_413", |_| {}).await;
    // A raw client: headers, then the body written while the answer is read.
    let mut stream = TcpStream::connect(svc.addr).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    let (head, _) = read_response(&mut stream).await.expect("first answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    const BODY: usize = 8 * 1024 * 1024;
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(
        format!(
            "POST /api/v1/traces/search HTTP/1.1\r\nHost: capbench\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..BODY / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(0)) => break format!("EOF after {:?}", String::from_utf8_lossy(&got)),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break String::from_utf8_lossy(&got)
                        .lines()
                        .next()
                        .unwrap()
                        .to_string();
                }
            }
            Ok(Err(e)) => break format!("error: {e}"),
            Err(_) => break "no answer within 10 s".into(),
        }
    };
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    writer.await.unwrap();

    // reqwest over a kept-alive connection.
    let c = reqwest::Client::new();
    let base = svc.url();
    assert_eq!(
        c.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        let resp = c
            .post(format!("{base}/api/v1/traces/search"))
            .header("content-type", "application/json")
            .body(vec![b'x'; BODY])
            .send()
            .await
            .expect("an answer, not a reset");
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    svc.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Key minting (item 8)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn minting_twice_for_one_email_gives_two_users() {
    let (svc, _) =
        common::start_service("hard_mint", |c| c.service.rate_limit_read_per_minute = 5).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let pool = &svc.state.pool;
    let first = common::mint_key(&c, &base, "load-140@test.invalid").await;
    let second = common::mint_key(&c, &base, "load-140@test.invalid").await;
    let (u1, u2) = (user_of(pool, &first).await, user_of(pool, &second).await);
    assert_ne!(u1, u2, "a new key must never act as an existing user");

    // Different buckets: exhausting the first key's leaves the second's full.
    for _ in 0..5 {
        assert_eq!(
            search(&c, &base, &first, "q").await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        search(&c, &base, &first, "q").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let resp = search(&c, &base, &second, "q").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "4");

    // A trace written with the second key is the second user's, not the first's.
    let resp = c
        .post(format!("{base}/api/v1/traces"))
        .header("X-API-Key", &second)
        .json(&json!({"title": "mine", "context_text": "c", "solution_text": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let id: uuid::Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let contributor: uuid::Uuid =
        sqlx::query_scalar("SELECT contributor_id FROM traces WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(contributor, u2);

    // The dataset's seed contributor cannot be taken over either.
    let seed: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE is_seed")
        .fetch_one(pool)
        .await
        .unwrap();
    let key = common::mint_key(&c, &base, capbench::dataset::CONTRIBUTOR_EMAIL).await;
    assert_ne!(user_of(pool, &key).await, seed);
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schema_migrates_a_database_whose_emails_were_unique() {
    capbench::install_tls_provider();
    let (cfg, url) = common::fresh_database("hard_migrate", common::service_config()).await;
    let mut conn = capbench::db::connect(&url).await.unwrap();
    // The users table as earlier versions created it, with a key user.
    sqlx::raw_sql(
        "CREATE TABLE users (
            id uuid PRIMARY KEY, email text NOT NULL UNIQUE, display_name text,
            is_seed boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO users (id, email) VALUES (gen_random_uuid(), 'old@test.invalid');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for _ in 0..2 {
        // Every start runs the base section: twice must be fine.
        ensure_dataset(&cfg, &url, &LoadOptions::default())
            .await
            .unwrap();
    }
    let unique_email: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                        AND a.attnum = ANY (i.indkey)
                        WHERE i.indrelid = 'users'::regclass AND i.indisunique
                          AND a.attname = 'email' AND i.indpred IS NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!unique_email, "users.email is still unique for every user");
    let seeds: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE is_seed")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(seeds, 1, "the seed contributor exists once");

    let state = AppState::connect(&cfg, &url, &common::redis_url().await)
        .await
        .unwrap();
    let svc = LocalService::start(state).await.unwrap();
    let c = reqwest::Client::new();
    let a = common::mint_key(&c, &svc.url(), "old@test.invalid").await;
    let b = common::mint_key(&c, &svc.url(), "old@test.invalid").await;
    assert_ne!(
        user_of(&svc.state.pool, &a).await,
        user_of(&svc.state.pool, &b).await
    );
    svc.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Smaller ones (item 11)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_byte_in_any_text_is_422_with_a_clear_message() {
    let (svc, _) = common::start_service("hard_nul", |_| {}).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let key = common::mint_key(&c, &base, "nul@test.invalid").await;
    let cases = [
        (
            "/api/v1/keys",
            json!({"email": "a\u{0}b@test.invalid"}),
            "email",
        ),
        (
            "/api/v1/traces/search",
            json!({"q": "react\u{0}hooks"}),
            "q",
        ),
        (
            "/api/v1/traces",
            json!({"title": "t\u{0}", "context_text": "c", "solution_text": "s"}),
            "title",
        ),
        (
            "/api/v1/traces",
            json!({"title": "t", "context_text": "\u{0}", "solution_text": "s"}),
            "context_text",
        ),
        (
            "/api/v1/traces",
            json!({"title": "t", "context_text": "c", "solution_text": "s\u{0}"}),
            "solution_text",
        ),
    ];
    for (path, body, field) in cases {
        let resp = c
            .post(format!("{base}{path}"))
            .header("X-API-Key", &key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        let err: Value = resp.json().await.unwrap();
        let msg = err["error"].as_str().unwrap_or_default();
        assert!(msg.contains(field) && msg.contains("NUL"), "{field}: {msg}");
    }
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_unknown_keys_do_not_each_reach_the_database() {
    let (svc, _) = common::start_service("hard_unknown_keys", |_| {}).await;
    let (c, base) = (reqwest::Client::new(), svc.url());
    let series = "capbench_key_lookups_total{result=\"unknown\"}";
    let before = metric(&c, &base, series).await;
    for _ in 0..300 {
        assert_eq!(
            search(&c, &base, "ct_never-minted", "q").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let looked_up = metric(&c, &base, series).await - before;
    assert_eq!(looked_up, 1.0, "300 requests with one unknown key");
    // A real key still works, and is looked up once.
    let key = common::mint_key(&c, &base, "known@test.invalid").await;
    assert_eq!(search(&c, &base, &key, "q").await.status(), StatusCode::OK);
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_database_or_redis_makes_serve_exit_1_within_the_timeout() {
    let (port, _held) = silent_server();
    for (what, db, redis) in [
        (
            "database",
            format!("postgres://u@127.0.0.1:{port}/db"),
            common::redis_url().await,
        ),
        (
            "redis",
            "postgres://u@127.0.0.1:1/db".to_string(),
            format!("redis://127.0.0.1:{port}"),
        ),
    ] {
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(15),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_serve"))
                .args(["--addr", &format!("127.0.0.1:{}", common::free_port())])
                .env("DATABASE_URL", &db)
                .env("REDIS_URL", &redis)
                .env("CAPBENCH_CONNECT_TIMEOUT", "1s")
                .env_remove("RUST_LOG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: serve hangs on a silent server"))
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(8), "{what}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        assert!(
            errors[0].contains(&format!("127.0.0.1:{port}")) && errors[0].contains("1s"),
            "{what}: {}",
            errors[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_looked_up_a_limited_number_of_times_per_address() {
    let (svc, _) = common::start_service("hard_key_lookups", |c| {
        c.service.rate_limit_key_lookups_per_minute = 5
    })
    .await;
    // From an address of its own, so that other tests' lookups do not spend this budget.
    let c = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .unwrap();
    let base = svc.url();
    let bucket = "rl:addr:127.0.0.3:key-lookups";
    svc.state.limiter.reset(bucket).await.unwrap();
    // Distinct unknown keys defeat the cache; the address's lookup budget bounds them.
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(
            search(&c, &base, &format!("ct_random-{i}"), "q")
                .await
                .status(),
        );
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5], "{statuses:?}");
    assert_eq!(
        statuses[5..],
        [StatusCode::TOO_MANY_REQUESTS; 3],
        "{statuses:?}"
    );
    let looked_up = metric(&c, &base, "capbench_key_lookups_total{result=\"unknown\"}").await;
    assert_eq!(looked_up, 5.0);
    // A key minted here is known without a lookup.
    let key = common::mint_key(&c, &base, "budget@test.invalid").await;
    assert_eq!(search(&c, &base, &key, "q").await.status(), StatusCode::OK);
    svc.state.limiter.reset(bucket).await.unwrap();
    svc.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    let (svc, _) =
        common::start_service("hard_conn_limit", |c| c.service.max_connections = 4).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(svc.addr).await.unwrap();
        s.write_all(HEALTH).await.unwrap();
        read_response(&mut s).await.expect("answered");
        idle.push(s);
    }
    // A fifth client is served: the longest-idle connection (the first) was closed for it.
    let c = reqwest::Client::new();
    let resp = c.get(format!("{}/health", svc.url())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(closed_within(&mut idle[0], 2).await, "the longest-idle one");
    let evicted = metric(
        &c,
        &svc.url(),
        "capbench_connections_closed_total{reason=\"evicted\"}",
    )
    .await;
    assert!(evicted >= 1.0, "{evicted}");
    svc.stop().await.unwrap();
}

#[test]
fn serve_warns_when_other_hosts_can_reach_it() {
    use capbench::server::exposure_warning;
    let warning = exposure_warning("0.0.0.0:8000".parse().unwrap()).expect("a warning");
    assert!(
        warning.contains("0.0.0.0:8000") && warning.contains("--addr 127.0.0.1"),
        "{warning}"
    );
    assert!(exposure_warning("[::]:8000".parse().unwrap()).is_some());
    assert!(exposure_warning("127.0.0.1:8000".parse().unwrap()).is_none());
    assert!(exposure_warning("127.0.0.2:8000".parse().unwrap()).is_none());
    assert!(exposure_warning("[::1]:8000".parse().unwrap()).is_none());
}
