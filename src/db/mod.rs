//! Everything capbench says to PostgreSQL: connecting, watching a long session (lock waits, cancel
//! when abandoned), the schema (setup/schema.sql), the binary COPY load, the HNSW index, and THE
//! search query.

pub mod index;
pub mod load;
pub mod schema;
pub mod search;
pub mod truth;
pub mod variant;
pub mod writes;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::secrets::redact;

/// pgvector's first version with HNSW.
pub const MIN_PGVECTOR: &str = "0.5.0";

pub use crate::config::{DEFAULT_CONNECT_TIMEOUT, connect_timeout, set_connect_timeout};

/// Opens a connection within [`connect_timeout`], with an error that names the server (without
/// its password) and the timeout.
pub async fn connect(url: &str) -> Result<PgConnection> {
    let hint = if url.contains("127.0.0.1:54320") || std::env::var_os("DATABASE_URL").is_none() {
        "is the embedded stack running? (cargo run --release --bin setup starts it)"
    } else {
        "is the server running and the URL right? (unset DATABASE_URL to use the embedded stack)"
    };
    let limit = connect_timeout();
    // sqlx logs slow statements (with their text) at WARN: capbench's own statements are timed
    // where it measures them, and their text is not for the log.
    let options = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .with_context(|| format!("invalid PostgreSQL URL {}", redact(url)))?
        .log_statements(tracing::log::LevelFilter::Off)
        .log_slow_statements(tracing::log::LevelFilter::Off, Duration::from_secs(1));
    match tokio::time::timeout(limit, PgConnection::connect_with(&options)).await {
        Ok(result) => result
            .with_context(|| format!("cannot connect to PostgreSQL at {}; {hint}", redact(url))),
        Err(_) => bail!(
            "cannot connect to PostgreSQL at {}: no answer within {} (--connect-timeout); {hint}",
            redact(url),
            humantime::format_duration(limit)
        ),
    }
}

/// The id of the seed user `email` (the dataset's contributor, the write bench's): seed users are
/// unique by email and only capbench makes them.
pub async fn seed_user(conn: &mut PgConnection, email: &str) -> Result<uuid::Uuid> {
    sqlx::query_scalar("SELECT id FROM public.users WHERE email = $1 AND is_seed")
        .bind(email)
        .fetch_one(&mut *conn)
        .await
        .with_context(|| format!("reading the seed user {email}"))
}

/// How often [`SessionWatch`] looks for a lock its session waits on.
const LOCK_POLL: Duration = Duration::from_secs(1);

/// A second connection watching one of our sessions (a long setup transaction) for as long as the
/// work on it runs:
/// - when the session waits on a lock another session holds, it says so once per change of
///   holders (`waiting for a lock on traces (AccessShareLock) held by pid N (state, query
///   start)`), instead of waiting silently;
/// - when the work is abandoned — its future dropped, as on Ctrl-C in [`crate::main_with`] — it
///   cancels the session's running statement with `pg_cancel_backend` from a connection of its
///   own, so the server stops building an index nobody will use (a dropped client is noticed only
///   when the server next talks to it, which an index build does not do for minutes).
///
/// Call [`SessionWatch::finish`] when the work returns (with success or an error); dropping the
/// watch without it cancels.
pub struct SessionWatch {
    url: String,
    pid: i32,
    reporter: tokio::task::JoinHandle<()>,
    armed: bool,
}

impl SessionWatch {
    /// Starts watching the session of `conn` (on the server of `url`); `who` prefixes the lines
    /// it prints (`setup`).
    pub async fn start(url: &str, conn: &mut PgConnection, who: &'static str) -> Result<Self> {
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .context("reading the session's backend pid")?;
        let monitor = connect(url).await?;
        Ok(Self {
            url: url.to_string(),
            pid,
            reporter: tokio::spawn(report_lock_waits(monitor, pid, who)),
            armed: true,
        })
    }

    /// The work returned: stop watching, cancel nothing.
    pub fn finish(mut self) {
        self.armed = false;
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        self.reporter.abort();
        if self.armed {
            cancel_backend(&self.url, self.pid);
        }
    }
}

/// Cancels backend `pid`'s running statement from a new connection, and waits for it (at most
/// the connect timeout and one query). It runs on a thread and runtime of its own: it is called
/// from `Drop`, possibly while the caller's runtime is shutting down.
fn cancel_backend(url: &str, pid: i32) {
    let url = url.to_string();
    let worker = std::thread::Builder::new()
        .name("capbench-cancel".into())
        .spawn(move || -> Result<bool> {
            let runtime = crate::current_thread_runtime()?;
            runtime.block_on(async {
                let mut conn = connect(&url).await?;
                let cancelled: bool = sqlx::query_scalar("SELECT pg_cancel_backend($1)")
                    .bind(pid)
                    .fetch_one(&mut conn)
                    .await?;
                Ok(cancelled)
            })
        });
    let outcome = match worker {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the cancelling thread panicked"))),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = outcome {
        crate::say!(
            "warning: could not cancel PostgreSQL backend {pid}, which may still be working on an abandoned statement: {}",
            crate::one_line(&e)
        );
    }
}

/// Says, once per change of the holders, which lock session `pid` waits for and who holds it.
async fn report_lock_waits(mut monitor: PgConnection, pid: i32, who: &'static str) {
    let mut reported: Vec<i32> = Vec::new();
    loop {
        tokio::time::sleep(LOCK_POLL).await;
        let holders: Vec<(i32, String, String, String)> = match sqlx::query_as(
            "SELECT b.pid, coalesce(b.state, 'unknown'),
                    coalesce(to_char(b.query_start, 'YYYY-MM-DD HH24:MI:SS TZ')
                             || ', ' || round(extract(epoch FROM now() - b.query_start)) || ' s ago',
                             'unknown'),
                    coalesce((SELECT coalesce(l.relation::regclass::text, l.locktype) || ' (' || l.mode || ')'
                                FROM pg_locks l WHERE l.pid = $1 AND NOT l.granted LIMIT 1), 'a lock')
             FROM unnest(pg_blocking_pids($1)) AS blocker(pid)
             JOIN pg_stat_activity b ON b.pid = blocker.pid
             ORDER BY b.pid",
        )
        .bind(pid)
        .fetch_all(&mut monitor)
        .await
        {
            Ok(rows) => rows,
            Err(_) => return, // the monitor lost its server; the session itself will report that
        };
        let pids: Vec<i32> = holders.iter().map(|h| h.0).collect();
        if pids != reported {
            for (holder, state, query_start, lock) in &holders {
                crate::say!(
                    "{who}: waiting for a lock on {lock} held by pid {holder} ({state}, query started {query_start})"
                );
            }
            reported = pids;
        }
    }
}

/// Versions and settings of the server, for summaries and run records.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub postgres_version: String,
    pub pgvector_version: String,
    pub shared_buffers_bytes: i64,
    pub maintenance_work_mem_bytes: i64,
}

impl ServerInfo {
    pub async fn read(conn: &mut PgConnection) -> Result<Self> {
        let (postgres_version, pgvector_version, shared_buffers_bytes, maintenance_work_mem_bytes): (
            String,
            Option<String>,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT current_setting('server_version'),
                    (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
                    pg_size_bytes(current_setting('shared_buffers')),
                    pg_size_bytes(current_setting('maintenance_work_mem'))",
        )
        .fetch_one(conn)
        .await
        .context("reading server settings")?;
        Ok(Self {
            postgres_version,
            pgvector_version: pgvector_version.unwrap_or_else(|| "not installed".into()),
            shared_buffers_bytes,
            maintenance_work_mem_bytes,
        })
    }
}

/// Makes sure pgvector >= 0.5 is installed in the connected database (creating the extension
/// when the server has it), or says precisely what is missing.
pub async fn ensure_pgvector(conn: &mut PgConnection, url: &str) -> Result<String> {
    let (installed, available): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
                (SELECT default_version FROM pg_available_extensions WHERE name = 'vector')",
    )
    .fetch_one(&mut *conn)
    .await
    .context("looking for pgvector")?;
    let server = redact(url);
    match (installed, available) {
        (Some(v), available) => {
            if !version_at_least(&v, MIN_PGVECTOR) {
                let update = match available {
                    Some(a) if version_at_least(&a, MIN_PGVECTOR) => {
                        format!("run ALTER EXTENSION vector UPDATE (the server has {a})")
                    }
                    _ => {
                        "upgrade pgvector on the server, then ALTER EXTENSION vector UPDATE".into()
                    }
                };
                bail!(
                    "pgvector {v} in {server} is older than {MIN_PGVECTOR} and has no HNSW: {update}"
                );
            }
            Ok(v)
        }
        (None, None) => bail!(
            "PostgreSQL at {server} has no pgvector extension: install pgvector >= 0.5 there \
             (e.g. apt install postgresql-NN-pgvector), or unset DATABASE_URL to use the embedded stack"
        ),
        (None, Some(a)) if !version_at_least(&a, MIN_PGVECTOR) => bail!(
            "PostgreSQL at {server} has pgvector {a}, older than {MIN_PGVECTOR} and without HNSW: upgrade pgvector"
        ),
        (None, Some(_)) => {
            sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS vector")
                .execute(&mut *conn)
                .await
                .with_context(|| {
                    format!(
                        "CREATE EXTENSION vector in {server} (needs a role allowed to create it)"
                    )
                })?;
            let v: String =
                sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(v)
        }
    }
}

/// `"0.8.1" >= "0.5.0"`, comparing numeric components.
pub fn version_at_least(version: &str, min: &str) -> bool {
    let parse = |s: &str| -> Vec<u64> {
        s.split(['.', '-'])
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let (mut a, mut b) = (parse(version), parse(min));
    let n = a.len().max(b.len());
    a.resize(n, 0);
    b.resize(n, 0);
    a >= b
}
