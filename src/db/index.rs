//! The HNSW index: building it (parallel, with progress, relaying pgvector's memory notice),
//! and reading back what was built.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgConnection;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;

use crate::config::IndexParams;
use crate::db::schema;

/// What the built index looks like, read from the catalog.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IndexInfo {
    pub name: String,
    pub method: String,
    pub opclass: String,
    pub m: Option<u32>,
    pub ef_construction: Option<u32>,
    pub size_bytes: i64,
    pub valid: bool,
}

/// The HNSW index of setup/schema.sql ([`schema::HNSW_INDEX`]) on `table` (schema-qualified or on
/// the search path), if there is one (the index variants beside it are `db::variant`'s).
pub async fn info(conn: &mut PgConnection, table: &str) -> Result<Option<IndexInfo>> {
    #[derive(sqlx::FromRow)]
    struct CatalogRow {
        name: String,
        method: String,
        opclass: String,
        options: Option<Vec<String>>,
        size_bytes: i64,
        valid: bool,
    }
    let row: Option<CatalogRow> = sqlx::query_as(
        "SELECT ic.relname::text AS name, am.amname::text AS method, opc.opcname::text AS opclass,
                ic.reloptions::text[] AS options, pg_relation_size(ic.oid) AS size_bytes,
                i.indisvalid AS valid
         FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_am am ON am.oid = ic.relam
         JOIN pg_opclass opc ON opc.oid = i.indclass[0]
         WHERE i.indrelid = to_regclass($1) AND ic.relname = $2",
    )
    .bind(table)
    .bind(schema::HNSW_INDEX)
    .fetch_optional(conn)
    .await
    .context("reading the HNSW index from the catalog")?;
    Ok(row.map(|r| {
        let option = |key: &str| {
            r.options
                .iter()
                .flatten()
                .find_map(|o| o.strip_prefix(&format!("{key}="))?.parse().ok())
        };
        IndexInfo {
            m: option("m"),
            ef_construction: option("ef_construction"),
            name: r.name,
            method: r.method,
            opclass: r.opclass,
            size_bytes: r.size_bytes,
            valid: r.valid,
        }
    }))
}

/// Messages pgvector sent while building (e.g. "hnsw graph no longer fits into maintenance_work_mem").
#[derive(Debug, Default, Clone)]
pub struct BuildNotices(Arc<Mutex<Vec<String>>>);

impl BuildNotices {
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Collects the server notices sqlx reports (target `sqlx::postgres::notice`).
struct NoticeLayer(BuildNotices);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoticeLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "sqlx::postgres::notice" {
            return;
        }
        struct Message(Option<String>);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = Some(format!("{v:?}").trim_matches('"').to_string());
                }
            }
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "message" {
                    self.0 = Some(v.to_string());
                }
            }
        }
        let mut m = Message(None);
        event.record(&mut m);
        if let Some(text) = m.0 {
            self.0
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(text);
        }
    }
}

/// Builds the HNSW index of setup/schema.sql on `traces` (on the connection's search path), with
/// `workers` parallel workers. `progress(done, total)` is fed from pg_stat_progress_create_index
/// through `monitor`, a second connection. Returns pgvector's notices.
pub async fn build(
    conn: &mut PgConnection,
    monitor: Option<PgConnection>,
    dims: u32,
    params: &IndexParams,
    workers: u32,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<Vec<String>> {
    let sql = schema::render("traces_index", dims, params)?;
    build_sql(conn, monitor, &sql, workers, progress)
        .await
        .context("building the HNSW index")
}

/// Runs `sql`, a CREATE INDEX on `traces` (in a transaction: the worker count is set LOCAL), with
/// `workers` parallel workers, `progress` fed as [`build`] feeds it. Returns pgvector's notices.
pub async fn build_sql(
    conn: &mut PgConnection,
    monitor: Option<PgConnection>,
    sql: &str,
    workers: u32,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<Vec<String>> {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    // The planner sizes a parallel build from the main heap, which TOAST leaves tiny (~6 MB for
    // 100K × 1536 dims): name the worker count on the table, cap it for this session.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL max_parallel_maintenance_workers = {workers}; \
         ALTER TABLE traces SET (parallel_workers = {workers});"
    )))
    .execute(&mut *conn)
    .await
    .context("configuring the parallel index build")?;

    let watcher = monitor.map(|mut mon| {
        tokio::spawn(async move {
            loop {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = $1",
                )
                .bind(pid)
                .fetch_optional(&mut mon)
                .await
                .unwrap_or(None);
                if let Some((done, total)) = row {
                    progress(done.max(0) as u64, total.max(0) as u64);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    });

    let notices = BuildNotices::default();
    let subscriber = tracing_subscriber::registry().with(NoticeLayer(notices.clone()));
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .with_subscriber(subscriber)
        .await;
    if let Some(w) = watcher {
        w.abort();
    }
    result?;
    sqlx::raw_sql("ALTER TABLE traces RESET (parallel_workers)")
        .execute(&mut *conn)
        .await?;
    Ok(notices.take())
}

/// Sizes of what a search touches, and whether it was loaded into shared_buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prewarmed {
    pub index_bytes: i64,
    pub table_bytes: i64,
    pub shared_buffers_bytes: i64,
}

/// Loads the HNSW index, the table and its TOAST (where the vectors live) into shared_buffers with
/// pg_prewarm, so the first timed queries do not read from disk.
pub async fn prewarm(conn: &mut PgConnection) -> Result<Prewarmed> {
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(&mut *conn)
        .await
        .context("CREATE EXTENSION pg_prewarm (it ships with PostgreSQL's contrib modules)")?;
    let (index_bytes, table_bytes, shared_buffers_bytes): (i64, i64, i64) = sqlx::query_as(
        "SELECT pg_relation_size(to_regclass($1)), pg_table_size('traces'),
                pg_size_bytes(current_setting('shared_buffers'))",
    )
    .bind(schema::HNSW_INDEX)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "SELECT pg_prewarm(to_regclass($1)), pg_prewarm('traces'),
                pg_prewarm(reltoastrelid) FROM pg_class WHERE oid = 'traces'::regclass AND reltoastrelid <> 0",
    )
    .bind(schema::HNSW_INDEX)
    .execute(&mut *conn)
    .await
    .context("pg_prewarm of the index and the table")?;
    // The tags' GIN index, when there is one (the filtered searches' exact plan reads it).
    sqlx::query("SELECT pg_prewarm(oid) FROM pg_class WHERE oid = to_regclass($1)")
        .bind(schema::TAGS_INDEX)
        .execute(&mut *conn)
        .await
        .context("pg_prewarm of the tags index")?;
    Ok(Prewarmed {
        index_bytes,
        table_bytes,
        shared_buffers_bytes,
    })
}
