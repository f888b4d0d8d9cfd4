//! Everything capbench says to PostgreSQL: connecting, the schema (setup/schema.sql), the binary
//! COPY load, the HNSW index, and THE search query.

pub mod index;
pub mod load;
pub mod schema;
pub mod search;
pub mod truth;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection};

use crate::secrets::redact;

/// pgvector's first version with HNSW.
pub const MIN_PGVECTOR: &str = "0.5.0";

/// How long opening a connection may take (TCP, TLS, startup, authentication) before it fails
/// with an error naming the server, unless `--connect-timeout` / `CAPBENCH_CONNECT_TIMEOUT` says
/// otherwise: a server that accepts TCP and never answers must not hang a run.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

static CONNECT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_CONNECT_TIMEOUT.as_millis() as u64);

/// The connect timeout in force (set once from the configuration by `Config::effective`).
pub fn connect_timeout() -> Duration {
    Duration::from_millis(CONNECT_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Sets the connect timeout for every connection this process opens (PostgreSQL and Redis).
pub fn set_connect_timeout(timeout: Duration) {
    CONNECT_TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// Opens a connection within [`connect_timeout`], with an error that names the server (without
/// its password) and the timeout.
pub async fn connect(url: &str) -> Result<PgConnection> {
    let hint = if url.contains("127.0.0.1:54320") || std::env::var_os("DATABASE_URL").is_none() {
        "is the embedded stack running? (cargo run --release --bin setup starts it)"
    } else {
        "is the server running and the URL right? (unset DATABASE_URL to use the embedded stack)"
    };
    let limit = connect_timeout();
    match tokio::time::timeout(limit, PgConnection::connect(url)).await {
        Ok(result) => result
            .with_context(|| format!("cannot connect to PostgreSQL at {}; {hint}", redact(url))),
        Err(_) => bail!(
            "cannot connect to PostgreSQL at {}: no answer within {} (--connect-timeout); {hint}",
            redact(url),
            humantime::format_duration(limit)
        ),
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
