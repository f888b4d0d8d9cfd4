//! The embedded stack's life cycle, on a private home and ports of its own so the shared stack
//! other tests use is never disturbed: start, reuse, stop, and data that survives a restart.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use sqlx::Connection;

struct PrivateStack {
    home: PathBuf,
    env: Vec<(String, String)>,
}

impl PrivateStack {
    fn new() -> Self {
        let main_home = std::env::var_os("CAPBENCH_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(capbench::config::default_home);
        let bindir = common::pg_bindir();
        let home = main_home.join("test-stack");
        let stack = Self {
            env: vec![
                ("CAPBENCH_HOME".into(), home.display().to_string()),
                ("CAPBENCH_PG_BINDIR".into(), bindir),
                ("CAPBENCH_PG_PORT".into(), common::free_port().to_string()),
                (
                    "CAPBENCH_REDIS_PORT".into(),
                    common::free_port().to_string(),
                ),
            ],
            home,
        };
        // A previous run that died may have left servers behind: stop them by their pid files.
        if stack.home.exists() {
            stack.setup(&["--stop"]);
            std::fs::remove_dir_all(&stack.home).expect("remove the old test stack");
        }
        stack
    }

    fn setup(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_setup"));
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        for (k, v) in &self.env {
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
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        self.setup(&["--stop"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_private_stack_starts_is_reused_stops_and_keeps_its_data() {
    let stack = PrivateStack::new();
    let (db_url, redis_url) = stack.print_env();
    let port = &stack.env[2].1;
    assert_eq!(
        db_url,
        format!("postgres://capbench@127.0.0.1:{port}/capbench")
    );

    let mut pg = sqlx::PgConnection::connect(&db_url)
        .await
        .expect("the printed DATABASE_URL works");
    sqlx::raw_sql("CREATE TABLE survives (x int); INSERT INTO survives VALUES (42)")
        .execute(&mut pg)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut r = client
        .get_multiplexed_async_connection()
        .await
        .expect("the printed REDIS_URL works");
    let pong: String = redis::cmd("PING").query_async(&mut r).await.unwrap();
    assert_eq!(pong, "PONG");

    // Reuse: the same servers, not new ones (the open session is still alive).
    assert_eq!(stack.print_env(), (db_url.clone(), redis_url.clone()));
    let still: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut pg)
        .await
        .expect("session survived reuse");
    assert_eq!(still, pid);
    drop(pg);

    // A Redis whose pid file was lost is recognised as ours (by its directory): reused, never
    // doubled, and its pid file written again so --stop can still stop it.
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut r)
        .await
        .unwrap();
    let redis_pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_string();
    let pidfile = stack.home.join("redis").join("redis.pid");
    std::fs::remove_file(&pidfile).expect("the pid file exists while Redis runs");
    assert_eq!(stack.print_env(), (db_url.clone(), redis_url.clone()));
    assert_eq!(
        std::fs::read_to_string(&pidfile)
            .expect("pid file written again")
            .trim(),
        redis_pid
    );
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(
        info.contains(&format!("process_id:{redis_pid}")),
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
