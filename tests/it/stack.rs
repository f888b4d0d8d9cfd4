//! The embedded stack, each test on a private home and ports of its own so the shared stack other
//! tests use is never disturbed: start, reuse, stop, and data that survives a restart; a running
//! server never moved or restarted by another command; passwords, loopback and unprivileged
//! servers; servers of an earlier capbench given a password in place.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sqlx::Connection;

struct PrivateStack {
    home: PathBuf,
    pg_port: u16,
    redis_port: u16,
    env: Vec<(String, String)>,
}

impl PrivateStack {
    /// A stack of its own under the shared home's `test-stack-<name>`, on free ports.
    fn new(name: &str) -> Self {
        let main_home = std::env::var_os("CAPBENCH_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(capbench::config::default_home);
        let home = main_home.join(format!("test-stack-{name}"));
        let (pg_port, redis_port) = (common::free_port(), common::free_port());
        let stack = Self {
            env: vec![
                ("CAPBENCH_HOME".into(), home.display().to_string()),
                ("CAPBENCH_PG_BINDIR".into(), common::pg_bindir()),
                ("CAPBENCH_PG_PORT".into(), pg_port.to_string()),
                ("CAPBENCH_REDIS_PORT".into(), redis_port.to_string()),
            ],
            home,
            pg_port,
            redis_port,
        };
        // A previous run that died may have left servers behind: stop them by their pid files.
        if stack.home.exists() {
            stack.setup(&["--stop"]);
            std::fs::remove_dir_all(&stack.home).expect("remove the old test stack");
        }
        stack
    }

    fn setup(&self, args: &[&str]) -> Output {
        self.setup_with(args, &[])
    }

    /// `setup` on this stack, with `env` set over the stack's own variables.
    fn setup_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_setup"));
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("RUST_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run setup")
    }

    fn print_env(&self) -> (String, String) {
        let out = self.setup(&["--print-env"]);
        assert!(
            out.status.success(),
            "print-env failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let db = line
            .split("DATABASE_URL=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("DATABASE_URL");
        let redis = line.split("REDIS_URL=").nth(1).expect("REDIS_URL").trim();
        (db.to_string(), redis.to_string())
    }

    /// The servers' password, from the stack's secret file.
    fn password(&self) -> String {
        std::fs::read_to_string(self.home.join("secret"))
            .expect("the secret file exists once the stack ran")
            .trim()
            .to_string()
    }

    fn data(&self) -> PathBuf {
        self.home.join("pg").join("data")
    }

    /// The postmaster's pid: another one means the cluster was restarted.
    fn postmaster_pid(&self) -> String {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("postmaster.pid while the cluster runs")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    fn redis_pid(&self) -> i32 {
        std::fs::read_to_string(self.home.join("redis").join("redis.pid"))
            .expect("redis.pid while Redis runs")
            .trim()
            .parse()
            .expect("a pid")
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        self.setup(&["--stop"]);
    }
}

/// A refusal: exit code 1, one `error: …` line on stderr naming every needle, no panic.
fn assert_refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "'{needle}' not in: {err}");
    }
}

async fn backend_pid(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("the session answers")
}

async fn redis_process_id(url: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers with the URL");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("process_id in INFO")
        .trim()
        .to_string()
}

/// What a Redis says to PING from a client that gives no password.
async fn ping_without_password(port: u16) -> redis::RedisResult<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

/// The `Uid:` (real) of a process.
fn uid_of(pid: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the process runs")
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("a Uid line")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_private_stack_starts_is_reused_stops_and_keeps_its_data() {
    let stack = PrivateStack::new("lifecycle");
    let (db_url, redis_url) = stack.print_env();
    assert_eq!(
        db_url,
        format!(
            "postgres://capbench:{}@127.0.0.1:{}/capbench",
            stack.password(),
            stack.pg_port
        )
    );

    let mut pg = sqlx::PgConnection::connect(&db_url)
        .await
        .expect("the printed DATABASE_URL works");
    sqlx::raw_sql("CREATE TABLE survives (x int); INSERT INTO survives VALUES (42)")
        .execute(&mut pg)
        .await
        .unwrap();
    let pid = backend_pid(&mut pg).await;
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("the printed REDIS_URL works");
    let pong: String = redis::cmd("PING").query_async(&mut r).await.unwrap();
    assert_eq!(pong, "PONG");

    // Reuse: the same servers, not new ones (the open session is still alive).
    assert_eq!(stack.print_env(), (db_url.clone(), redis_url.clone()));
    assert_eq!(backend_pid(&mut pg).await, pid, "session survived reuse");
    drop(pg);

    // A Redis whose pid file was lost is recognised as ours (by its directory): reused, never
    // doubled, and its pid file written again so --stop can still stop it.
    let redis_pid = redis_process_id(&redis_url).await;
    let pidfile = stack.home.join("redis").join("redis.pid");
    std::fs::remove_file(&pidfile).expect("the pid file exists while Redis runs");
    assert_eq!(stack.print_env(), (db_url.clone(), redis_url.clone()));
    assert_eq!(
        std::fs::read_to_string(&pidfile)
            .expect("pid file written again")
            .trim(),
        redis_pid
    );
    assert_eq!(
        redis_process_id(&redis_url).await,
        redis_pid,
        "the same Redis still serves"
    );
    drop(r);

    let out = stack.setup(&["--stop"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("PostgreSQL: stopped") && said.contains("Redis: stopped"),
        "{said}"
    );
    assert!(
        sqlx::PgConnection::connect(&db_url).await.is_err(),
        "PostgreSQL still answers after --stop"
    );
    assert!(
        redis::Client::open(redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err()
    );

    // Started again: the data is still there.
    stack.print_env();
    let mut pg = sqlx::PgConnection::connect(&db_url).await.unwrap();
    let x: i32 = sqlx::query_scalar("SELECT x FROM survives")
        .fetch_one(&mut pg)
        .await
        .expect("data survived a restart");
    assert_eq!(x, 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_server_is_never_moved_or_restarted_by_another_command() {
    let stack = PrivateStack::new("ports");
    let (db_url, redis_url) = stack.print_env();
    let mut pg = sqlx::PgConnection::connect(&db_url).await.unwrap();
    let session = backend_pid(&mut pg).await;
    let postmaster = stack.postmaster_pid();
    let redis_pid = redis_process_id(&redis_url).await;
    let (pg_port, redis_port) = (stack.pg_port.to_string(), stack.redis_port.to_string());
    let other = common::free_port().to_string();

    // Another port for a running server: refused, naming both ports and the way out.
    let out = stack.setup_with(&["--print-env"], &[("CAPBENCH_PG_PORT", &other)]);
    assert_refused(&out, &[&pg_port, &other, "setup --stop"]);
    let out = stack.setup_with(&["--print-env"], &[("CAPBENCH_REDIS_PORT", &other)]);
    assert_refused(&out, &[&redis_port, &other, "setup --stop"]);

    // Other settings than those it runs with (a changed setup/postgres.conf): refused too.
    let conf = stack.data().join("capbench.conf");
    let settings = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{settings}# changed\n")).unwrap();
    let out = stack.setup(&["--print-env"]);
    assert_refused(&out, &["other settings", "setup --stop"]);
    std::fs::write(&conf, settings).unwrap();

    // Nonsense ports are usage errors, and one port for both servers is refused.
    for env in [
        ("CAPBENCH_PG_PORT", "0"),
        ("CAPBENCH_REDIS_PORT", "0"),
        ("CAPBENCH_PG_PORT", "65536"),
        ("CAPBENCH_REDIS_PORT", "x"),
    ] {
        let out = stack.setup_with(&["--print-env"], &[env]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{env:?}: {err}");
    }
    let out = stack.setup(&["--print-env", "--pg-port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = stack.setup_with(&["--print-env"], &[("CAPBENCH_REDIS_PORT", &pg_port)]);
    assert_refused(&out, &[&pg_port, "a port each"]);

    // Through all of that, the same servers kept serving on their ports: nothing restarted.
    assert_eq!(backend_pid(&mut pg).await, session, "the session survived");
    assert_eq!(
        stack.postmaster_pid(),
        postmaster,
        "PostgreSQL was restarted"
    );
    assert_eq!(redis_process_id(&redis_url).await, redis_pid);
    assert_eq!(stack.print_env(), (db_url, redis_url));
    drop(pg);

    // --stop stops them whatever port is asked, and says which ones they had.
    let out = stack.setup_with(
        &["--stop"],
        &[("CAPBENCH_PG_PORT", &other), ("CAPBENCH_REDIS_PORT", "1")],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("PostgreSQL: stopped (127.0.0.1:{pg_port})"))
            && said.contains(&format!("Redis: stopped (127.0.0.1:{redis_port})")),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_private_servers_ask_for_a_password_listen_on_loopback_and_do_not_run_as_root() {
    let stack = PrivateStack::new("privacy");
    let out = stack.setup(&["--print-env"]);
    assert!(out.status.success());
    let (db_url, redis_url) = stack.print_env();
    let password = stack.password();
    assert!(password.len() >= 16, "a real password");
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(stack.home.join("secret")), 0o600, "the secret file");
    assert_eq!(mode(stack.home.join("pg")), 0o700, "the socket directory");
    assert_eq!(
        db_url,
        format!(
            "postgres://capbench:{password}@127.0.0.1:{}/capbench",
            stack.pg_port
        )
    );
    assert_eq!(
        redis_url,
        format!("redis://:{password}@127.0.0.1:{}", stack.redis_port)
    );

    // PostgreSQL: no password, or a wrong one, is refused; the printed URL works.
    for url in [
        format!("postgres://capbench@127.0.0.1:{}/capbench", stack.pg_port),
        format!(
            "postgres://capbench:wrong{password}@127.0.0.1:{}/capbench",
            stack.pg_port
        ),
    ] {
        let err = sqlx::PgConnection::connect(&url)
            .await
            .expect_err("connected without the password");
        assert!(err.to_string().contains("password"), "{err}");
    }
    let mut pg = sqlx::PgConnection::connect(&db_url).await.unwrap();
    let methods: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
            .fetch_all(&mut pg)
            .await
            .unwrap();
    assert_eq!(methods, ["scram-sha-256"]);
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(listen, "127.0.0.1");
    drop(pg);

    // Redis: NOAUTH without the password; the printed URL works; loopback only.
    let refused = ping_without_password(stack.redis_port)
        .await
        .expect_err("Redis answered without the password");
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut r = client.get_multiplexed_async_connection().await.unwrap();
    let bind: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("bind")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(bind[1], "127.0.0.1");

    // Run as root, capbench runs neither server as root.
    if nix::unistd::geteuid().is_root() {
        assert_ne!(uid_of(&stack.redis_pid().to_string()), 0, "redis-server");
        assert_ne!(uid_of(&stack.postmaster_pid()), 0, "postgres");
    }

    // The password is printed by --print-env, and by nothing else setup says (even at debug).
    let small = [
        ("CAPBENCH_ROWS", "300"),
        ("CAPBENCH_DIMS", "8"),
        ("CAPBENCH_CLUSTERS", "3"),
        ("CAPBENCH_QUERIES", "5"),
        ("CAPBENCH_BUILD_WORKERS", "0"),
        ("RUST_LOG", "debug"),
    ];
    let said = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let print_env = stack.setup_with(&["--print-env"], &small[5..]);
    assert!(!String::from_utf8_lossy(&print_env.stderr).contains(&password));
    let load = stack.setup_with(&[], &small);
    assert!(load.status.success(), "{}", said(&load));
    let stop = stack.setup(&["--stop"]);
    for out in [&load, &stop] {
        let text = said(out);
        assert!(!text.contains(&password), "the password shown in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_of_an_earlier_capbench_get_the_password_without_a_restart() {
    let stack = PrivateStack::new("upgrade");
    let (db_url, redis_url) = stack.print_env();
    let password = stack.password();
    let no_password = db_url.replace(&format!(":{password}@"), "@");
    let trust = "local all all trust\nhost all all 127.0.0.1/32 trust\n";

    // Make it what an earlier capbench left running: trust, a role without a password…
    let mut pg = sqlx::PgConnection::connect(&db_url).await.unwrap();
    std::fs::write(stack.data().join("pg_hba.conf"), trust).unwrap();
    sqlx::raw_sql("SELECT pg_reload_conf(); ALTER ROLE capbench PASSWORD NULL")
        .execute(&mut pg)
        .await
        .unwrap();
    sqlx::PgConnection::connect(&no_password)
        .await
        .expect("trust is in force");
    let session = backend_pid(&mut pg).await;
    let postmaster = stack.postmaster_pid();
    // …and a Redis without a password, started the way it started one.
    let redis_dir = stack.home.join("redis");
    let ours = nix::unistd::Pid::from_raw(stack.redis_pid());
    nix::sys::signal::kill(ours, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(ours, None).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(redis_dir.join("redis.conf")).unwrap();
    let status = Command::new("redis-server")
        .args(["--port", &stack.redis_port.to_string()])
        .args(["--bind", "127.0.0.1", "--daemonize", "yes"])
        .arg("--pidfile")
        .arg(redis_dir.join("redis.pid"))
        .arg("--logfile")
        .arg(redis_dir.join("redis.log"))
        .arg("--dir")
        .arg(&redis_dir)
        .args(["--save", "", "--appendonly", "no"])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping_without_password(stack.redis_port).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the old-style Redis did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old_redis = stack.redis_pid();

    // The next command gives both the password, in place: same processes, same session.
    assert_eq!(stack.print_env(), (db_url.clone(), redis_url.clone()));
    assert_eq!(
        stack.postmaster_pid(),
        postmaster,
        "PostgreSQL was restarted"
    );
    assert_eq!(backend_pid(&mut pg).await, session, "the session survived");
    assert!(
        sqlx::PgConnection::connect(&no_password).await.is_err(),
        "PostgreSQL still lets clients in without the password"
    );
    assert_eq!(redis_process_id(&redis_url).await, old_redis.to_string());
    let refused = ping_without_password(stack.redis_port).await.unwrap_err();
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    drop(pg);

    // A secret file lost while the servers run: a new one is made, which they refuse, and the
    // command says so and how to apply it.
    std::fs::remove_file(stack.home.join("secret")).unwrap();
    let out = stack.setup(&["--print-env"]);
    assert_refused(&out, &["refuses the password in", "setup --stop"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&stack.password()));

    // A stopped cluster of an earlier capbench, with that new secret file: the role gets the new
    // password before the cluster starts.
    stack.setup(&["--stop"]);
    std::fs::write(stack.data().join("pg_hba.conf"), trust).unwrap();
    let (new_db_url, _) = stack.print_env();
    assert_ne!(stack.password(), password, "a new password was made");
    sqlx::PgConnection::connect(&new_db_url)
        .await
        .expect("the new password works");
    assert!(sqlx::PgConnection::connect(&no_password).await.is_err());
    assert!(sqlx::PgConnection::connect(&db_url).await.is_err());
}

#[tokio::test]
async fn ensure_database_gives_up_on_a_silent_server_within_the_connect_timeout() {
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // The process-wide timeout as the configuration set it (tests share the process: none
    // changes it in place).
    let limit = capbench::db::connect_timeout();
    let shown = humantime::format_duration(limit).to_string();
    let url = format!("postgres://u:hunter2secret@127.0.0.1:{port}/postgres");
    let started = Instant::now();
    let result = tokio::time::timeout(
        limit + Duration::from_secs(15),
        capbench::stack::ensure_database(&url, "never"),
    )
    .await
    .expect("ensure_database hung on a server that never answers");
    let line = capbench::one_line(&result.expect_err("a silent server is an error"));
    assert!(started.elapsed() < limit + Duration::from_secs(5), "{line}");
    assert!(
        line.contains(&format!("127.0.0.1:{port}"))
            && line.contains(&format!("no answer within {shown}")),
        "{line}"
    );
    assert!(!line.contains("hunter2secret"), "{line}");
}

#[test]
fn with_database_keeps_the_password_and_the_parameters() {
    use capbench::stack::{split_password, with_database};
    assert_eq!(
        with_database(
            "postgres://u:p%40ss@127.0.0.1:5432/a?sslmode=disable&application_name=x",
            "b"
        )
        .unwrap(),
        "postgres://u:p%40ss@127.0.0.1:5432/b?sslmode=disable&application_name=x"
    );
    assert_eq!(
        with_database("postgres://u@127.0.0.1/a", "new db").unwrap(),
        "postgres://u@127.0.0.1/new%20db"
    );
    assert!(with_database("host=127.0.0.1 dbname=a", "b").is_err());
    assert_eq!(
        split_password("postgres://u:p%2Fw@127.0.0.1:5/db?x=1").unwrap(),
        (
            "postgres://u@127.0.0.1:5/db?x=1".to_string(),
            Some("p/w".to_string())
        )
    );
    assert_eq!(
        split_password("postgres://u@127.0.0.1/db").unwrap(),
        ("postgres://u@127.0.0.1/db".to_string(), None)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_benchmark_runs_against_the_password_protected_redis_and_leaves_no_user_behind() {
    let url = common::redis_url().await;
    let bucket = capbench::ratelimit::TokenBucket::connect(&url)
        .await
        .expect("connect the limiter");
    // The bench evaluates through the bucket first, which loads the script redis-benchmark calls.
    bucket
        .check(
            "rl:test-redis-benchmark",
            capbench::ratelimit::Limit::per_minute(60),
        )
        .await
        .expect("the limiter runs");
    let (bench_url, sha) = (url.clone(), bucket.sha().to_string());
    let result = tokio::task::spawn_blocking(move || {
        capbench::bench::rate_limit::redis_benchmark(&bench_url, &sha, 200)
    })
    .await
    .unwrap();
    let figures = result.unwrap_or_else(|e| panic!("{}", capbench::one_line(&e)));
    assert!(figures.rps > 0.0, "{figures:?}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !users.iter().any(|u| u.starts_with("capbench-bench")),
        "{users:?}"
    );
}

/// What the memory bench does to the private server: a restart with a setting for that start only,
/// then back to setup/postgres.conf's; the page cache of a relation's files dropped.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_with_a_setting_lasts_one_start_and_relation_files_leave_the_page_cache() {
    let base = capbench::config::Config::from_env().unwrap();
    let dir = base.servers.home.join("test-restart-with");
    let cluster = capbench::stack::LocalCluster::with_bindir(
        common::pg_bindir().into(),
        dir.clone(),
        common::free_port(),
    )
    .unwrap();
    cluster.ensure_running().expect("start a private cluster");
    let shared_buffers = |url: String| async move {
        let mut c = capbench::db::connect(&url).await.unwrap();
        let v: String = sqlx::query_scalar("SHOW shared_buffers")
            .fetch_one(&mut c)
            .await
            .unwrap();
        v
    };
    let configured = shared_buffers(cluster.url("postgres")).await;
    cluster
        .restart_with(&["shared_buffers=32MB".to_string()])
        .unwrap();
    assert_eq!(shared_buffers(cluster.url("postgres")).await, "32MB");
    cluster.restart_with(&[]).unwrap();
    assert_eq!(
        shared_buffers(cluster.url("postgres")).await,
        configured,
        "the next start is setup/postgres.conf's again"
    );
    let err = cluster
        .restart_with(&["shared_buffers=1GB -c evil=1".to_string()])
        .unwrap_err();
    assert!(err.to_string().contains("name=value"), "{err}");

    let mut c = capbench::db::connect(&cluster.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS cached; CREATE TABLE cached AS SELECT g FROM generate_series(1, 100000) g; CHECKPOINT",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let path: String = sqlx::query_scalar("SELECT pg_relation_filepath('cached')")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(
        cluster.drop_os_cache(&[path]).unwrap(),
        1,
        "one segment file"
    );
    let err = cluster
        .drop_os_cache(&["base/1/999999999".to_string()])
        .unwrap_err();
    assert!(err.to_string().contains("no relation file"), "{err}");
    drop(c);
    cluster.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
