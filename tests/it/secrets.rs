//! No secret in any output, record or page (issue #11, item 3): every credential form goes through
//! the real binaries — `setup`, `load` and `report` — and the secret is looked for in their stdout
//! and stderr, in the run records they write and in the page they build. Forms that connect use a
//! PostgreSQL role of their own with a password (created through the admin URL, whatever the
//! server's authentication method); forms that cannot connect must fail with one `error:` line.
//! Tiny datasets and 1 s runs keep it quick; each test has its own reports directory.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use capbench::config::Config;
use capbench::stack;

/// The role's password: a raw `/` in it (a URL parser cuts the userinfo there) and a `@`-free tail.
const PG_PASSWORD: &str = "pg/Pass-7f3Q9x";
/// A password in REDIS_URL's query (redis-rs ignores it; it must still never be shown).
const REDIS_PASSWORD: &str = "rdsQueryPw-5k2z";
/// A password in an `http://user:pass@` load target.
const HTTP_PASSWORD: &str = "httpUserPw-8m4w";
/// The password of the forms that cannot connect (their own, so that no other URL of the same run
/// teaches the process to hide it).
const UNUSABLE_PASSWORD: &str = "kv/Secret-3j9y";

/// What a leak would show of `secret`: itself, percent-encoded, and each side of a `/` in it.
fn leak_marks(secret: &str) -> Vec<String> {
    let mut marks = vec![
        secret.to_string(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
    ];
    if let Some((a, b)) = secret.split_once('/') {
        marks.extend([format!("{a}/"), b.to_string()]);
    }
    marks
}

/// Fails the test when `text` (from `what`) shows any of the secrets.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        PG_PASSWORD,
        REDIS_PASSWORD,
        HTTP_PASSWORD,
        UNUSABLE_PASSWORD,
    ] {
        for mark in leak_marks(secret) {
            assert!(
                !text.contains(&mark),
                "{what} shows a secret ({mark}):\n{text}"
            );
        }
    }
}

/// Stdout and stderr of a finished binary hold no secret.
fn assert_clean_output(what: &str, out: &Output) {
    assert_no_secret(
        &format!("{what}: stdout"),
        &String::from_utf8_lossy(&out.stdout),
    );
    assert_no_secret(
        &format!("{what}: stderr"),
        &String::from_utf8_lossy(&out.stderr),
    );
}

/// The run failed as a user-facing error does: exit 1 and exactly one `error:` line.
fn assert_one_error_line(what: &str, out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit code; stderr: {err}"
    );
    let errors = err.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "{what}: one error line expected: {err}");
}

fn assert_success(what: &str, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir` (records, baselines, index.html) holds no secret.
fn assert_clean_dir(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                assert_no_secret(&path.display().to_string(), &text);
                files += 1;
            }
        }
    }
    assert!(files > 0, "nothing was written under {}", dir.display());
}

/// A fresh, empty reports directory.
fn reports_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capbench-secrets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A binary with no server, target or key from the caller's environment, a tiny dataset, and
/// `reports` as its reports directory.
fn binary(exe: &str, reports: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "CAPBENCH_TARGET_URL",
        "CAPBENCH_LOAD_TARGET",
        "CAPBENCH_API_KEY",
        "CAPBENCH_QUICK",
        "CAPBENCH_FAIL_ON_REGRESSION",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CAPBENCH_REPORTS", reports)
        .env("CAPBENCH_ROWS", "300")
        .env("CAPBENCH_DIMS", "8")
        .env("CAPBENCH_CLUSTERS", "3")
        .env("CAPBENCH_QUERIES", "5")
        .env("CAPBENCH_HNSW_M", "4")
        .env("CAPBENCH_EF_CONSTRUCTION", "16")
        .env("CAPBENCH_BUILD_WORKERS", "0")
        .env("CAPBENCH_CONNECT_TIMEOUT", "3s");
    cmd
}

/// Runs `cmd` off the async runtime (the test may be serving it from there).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run the binary"))
        .await
        .unwrap()
}

/// A PostgreSQL role `role` with [`PG_PASSWORD`] owning a fresh database of the same name (pgvector
/// created in it by the admin). Returns (host, port) of the server.
async fn role_with_password(role: &str) -> (String, u16) {
    let cfg = Config::from_env().expect("the environment parses");
    let admin = common::server_admin_url(&cfg).await;
    let parsed = url::Url::parse(&admin).expect("the admin URL parses");
    let (host, port) = (
        parsed.host_str().unwrap_or("127.0.0.1").to_string(),
        parsed.port().unwrap_or(5432),
    );
    let mut conn = capbench::db::connect(&admin)
        .await
        .expect("connect as admin");
    let ident = stack::quote_ident(role);
    for sql in [
        format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"),
        format!("DROP ROLE IF EXISTS {ident}"),
        format!(
            "CREATE ROLE {ident} LOGIN PASSWORD '{}'",
            PG_PASSWORD.replace('\'', "''")
        ),
        format!("CREATE DATABASE {ident} OWNER {ident}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let db = stack::with_database(&admin, role).unwrap();
    let mut conn = capbench::db::connect(&db)
        .await
        .expect("connect to the new database");
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS vector")
        .execute(&mut conn)
        .await
        .expect("create pgvector");
    (host, port)
}

/// `user:password@` URL-encoded (the `/` as `%2F`: the form that connects).
fn encoded_password() -> String {
    url::form_urlencoded::byte_serialize(PG_PASSWORD.as_bytes()).collect()
}

/// Database URLs that cannot connect: a raw `/` in the userinfo (a URL parser reads the host as
/// `user` and the port as what comes before the `/`), and libpq's key=value strings (sqlx takes URLs
/// only), plain and quoted.
fn unusable_forms(host: &str, port: u16, role: &str) -> Vec<String> {
    vec![
        format!("postgres://{role}:{UNUSABLE_PASSWORD}@{host}:{port}/{role}"),
        format!("host={host} port={port} user={role} password={UNUSABLE_PASSWORD} dbname={role}"),
        format!("host={host} port={port} user={role} password='{UNUSABLE_PASSWORD}' dbname={role}"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_shows_no_database_password_in_any_form() {
    let role = "capbench_secret_setup";
    let (host, port) = role_with_password(role).await;
    let reports = reports_dir("setup");
    let setup = |url: &str| {
        let mut cmd = binary(env!("CARGO_BIN_EXE_setup"), &reports);
        cmd.env("DATABASE_URL", url);
        output(cmd)
    };
    // Forms that connect: the password percent-encoded in the userinfo, and in the query.
    for url in [
        format!(
            "postgres://{role}:{}@{host}:{port}/{role}",
            encoded_password()
        ),
        format!(
            "postgres://{role}@{host}:{port}/{role}?sslmode=disable&password={}",
            encoded_password()
        ),
    ] {
        let out = setup(&url).await;
        assert_clean_output("setup", &out);
        assert_success("setup", &out);
    }
    // Forms that cannot: a raw `/` in the userinfo, and libpq's key=value string (not a URL).
    for url in unusable_forms(&host, port, role) {
        let out = setup(&url).await;
        assert_clean_output("setup", &out);
        assert_one_error_line(&url, &out);
    }
    let _ = std::fs::remove_dir_all(&reports);
}

#[tokio::test(flavor = "multi_thread")]
async fn load_and_its_records_and_page_show_no_password() {
    let role = "capbench_secret_load";
    let (host, port) = role_with_password(role).await;
    let redis = url::Url::parse(&common::redis_url().await).expect("the Redis URL parses");
    // The server's own password (the embedded Redis asks for one) stays in the userinfo; the query
    // carries a secret of its own that must never be shown either.
    let redis_at = |port: u16| {
        let mut url = redis.clone();
        url.set_port(Some(port)).expect("a port");
        url.set_path("/0");
        url.set_query(Some(&format!("password={REDIS_PASSWORD}")));
        url.to_string()
    };
    let redis_ok = redis_at(redis.port().unwrap_or(6379));
    let database = format!(
        "postgres://{role}@{host}:{port}/{role}?password={}",
        encoded_password()
    );
    let reports = reports_dir("load");
    let load = |servers: Option<(&str, &str)>, extra: &[&str]| {
        let mut cmd = binary(env!("CARGO_BIN_EXE_load"), &reports);
        if let Some((database, redis)) = servers {
            cmd.env("DATABASE_URL", database).env("REDIS_URL", redis);
        }
        cmd.args(["--users", "2", "--run-time", "1s", "-q"])
            .args(extra);
        output(cmd)
    };
    // The in-process service on a database URL with a query password, and a Redis URL with one.
    let out = load(Some((&database, &redis_ok)), &[]).await;
    assert_clean_output("load (in-process)", &out);
    assert_success("load (in-process)", &out);
    // The database itself as the target, its password in the userinfo (and no other URL given).
    let target = format!(
        "postgres://{role}:{}@{host}:{port}/{role}",
        encoded_password()
    );
    let out = load(None, &["--target", &target]).await;
    assert_clean_output("load --target postgres://", &out);
    assert_success("load --target postgres://", &out);
    // Forms that cannot connect: a Redis with nobody listening, a raw `/`, key=value strings.
    let out = load(Some((&database, &redis_at(common::free_port()))), &[]).await;
    assert_clean_output("load (Redis down)", &out);
    assert_one_error_line("load (Redis down)", &out);
    for bad in unusable_forms(&host, port, role) {
        let out = load(Some((&bad, &redis_ok)), &[]).await;
        assert_clean_output(&bad, &out);
        assert_one_error_line(&bad, &out);
        let out = load(None, &["--target", &bad]).await;
        assert_clean_output(&format!("--target {bad}"), &out);
        assert_one_error_line(&format!("--target {bad}"), &out);
    }
    assert!(
        std::fs::read_dir(reports.join("runs")).unwrap().count() >= 2,
        "both measured runs wrote a record"
    );
    // The page, rebuilt by the report binary from those records.
    let out = output(binary(env!("CARGO_BIN_EXE_report"), &reports)).await;
    assert_clean_output("report", &out);
    assert_success("report", &out);
    assert!(reports.join("index.html").is_file());
    assert_clean_dir(&reports);
    let _ = std::fs::remove_dir_all(&reports);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_target_with_a_password_is_never_shown() {
    let (service, _) = common::start_service("secrets_http", |_| {}).await;
    let base = url::Url::parse(&service.url()).expect("the service URL parses");
    let target = format!(
        "http://capbench:{HTTP_PASSWORD}@{}:{}",
        base.host_str().unwrap_or("127.0.0.1"),
        base.port().expect("the service has a port")
    );
    let reports = reports_dir("http");
    let mut cmd = binary(env!("CARGO_BIN_EXE_load"), &reports);
    cmd.args([
        "--target",
        &target,
        "--users",
        "2",
        "--run-time",
        "1s",
        "-q",
    ]);
    let out = output(cmd).await;
    assert_clean_output("load --target http://user:pass@", &out);
    assert_success("load --target http://user:pass@", &out);
    let out = output(binary(env!("CARGO_BIN_EXE_report"), &reports)).await;
    assert_clean_output("report", &out);
    assert_success("report", &out);
    assert_clean_dir(&reports);
    service.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&reports);
}

#[test]
fn records_written_before_redaction_are_shown_redacted() {
    // A record as older versions wrote it: every form in clear in its parameters and environment.
    let reports = reports_dir("old-records");
    let runs = reports.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let record = serde_json::json!({
        "schema_version": 1,
        "kind": "load",
        "created_at": "2026-01-01T00:00:00Z",
        "environment": {
            "cpu_model": "test", "cores": 2, "memory_bytes": 0, "os": "test",
            "git_commit": null, "postgres_version": null, "pgvector_version": null,
            "postgres_settings": {}, "redis_version": null
        },
        "dataset": null,
        "parameters": {
            "target": format!("http://capbench:{HTTP_PASSWORD}@127.0.0.1:9"),
            "database": format!("postgres://u:{PG_PASSWORD}@127.0.0.1:5432/db"),
            "redis": format!("redis://127.0.0.1:6379/?password={REDIS_PASSWORD}"),
            "libpq": format!("host=127.0.0.1 user=u password='{PG_PASSWORD}' dbname=db"),
            "quick": false
        },
        "results": [{"name": "load/Aggregated", "metrics": {"p50_ms": 1.0}, "histogram": null, "gates": []}]
    });
    std::fs::write(runs.join("load-20260101T000000Z.json"), record.to_string()).unwrap();
    let out = binary(env!("CARGO_BIN_EXE_report"), &reports)
        .output()
        .expect("run report");
    assert_clean_output("report", &out);
    assert_success("report", &out);
    let page = std::fs::read_to_string(reports.join("index.html")).unwrap();
    assert_no_secret("index.html", &page);
    // Still readable: the host and user are there, the passwords masked.
    assert!(
        page.contains("capbench:***@127.0.0.1:9"),
        "the target is shown redacted"
    );
    // A record written now holding every form (in the typed fields where such text can land: the
    // target, and the reasons the environment went unread) is stored redacted, still naming its
    // hosts.
    let p = &record["parameters"];
    let text = |k: &str| p[k].as_str().unwrap().to_string();
    let fresh = capbench::record::RunRecord::new(
        capbench::record::Environment::default(),
        capbench::record::Parameters::Load(capbench::record::LoadParameters {
            target: text("database"),
            environment_unread: vec![text("target"), text("redis"), text("libpq")],
            ..Default::default()
        }),
    );
    let path = fresh.write(&reports.join("fresh")).unwrap();
    let stored = std::fs::read_to_string(path).unwrap();
    assert_no_secret("a record written now", &stored);
    assert!(
        stored.contains("postgres://u:***@127.0.0.1:5432/db"),
        "{stored}"
    );
    let _ = std::fs::remove_dir_all(&reports);
}

#[test]
fn redaction_reads_text_that_is_not_ascii() {
    // Gate names, CPU models and error lines hold '≥', '×', '–', 'é': redaction must step over
    // them (it once sliced inside one and panicked, losing a finished bench's record).
    for text in [
        "b. the next request is denied with Retry-After ≥ 1 s",
        "≥",
        "p50 × 2 – café",
        "Intel(R) Xeon(R) — 2 × 2.2 GHz",
    ] {
        assert_eq!(capbench::secrets::redact(text), text);
    }
    let shown = capbench::secrets::redact(&format!(
        "délai ≥ 1 s host=h password={UNUSABLE_PASSWORD} ×"
    ));
    assert_no_secret("redacted text", &shown);
    assert_eq!(shown, "délai ≥ 1 s host=h password=*** ×");
}
