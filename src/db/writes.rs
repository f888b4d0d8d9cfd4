//! The write benches' table: `capbench_writes.traces`, a copy of the dataset's rows in the shape a
//! launched API has — primary key, the tags' GIN index and the HNSW index, none of the variants'
//! indexes (each would add its own insert cost to every write) — built once per dataset
//! fingerprint beside the dataset, in a schema of its own. The write benches, and `load` runs that
//! write, change only this copy, never `public.traces`: the rows users wrote through the service,
//! and the dataset the read benches measure, are out of their reach.
//!
//! The copy is capbench's own: every row in it that is not one of the dataset's was added by a
//! write bench (under the write bench's own contributor, [`WRITER_EMAIL`], a seed user the API
//! cannot create) or by a `load` run's writes through the in-process service. Restoring the copy
//! is a DELETE of those rows and a VACUUM, not a rebuild; a run that stopped half-way leaves rows
//! that the next one (or [`restore`]) removes, saying how many.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgvector::Vector;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::config::Config;
use crate::dataset::{CONTRIBUTOR_EMAIL, EMBEDDING_MODEL_ID, TraceRow};
use crate::db::{self, index, load, schema};

/// The schema of the copy; its table is `traces`, so that the search SQL runs on it unchanged
/// with this schema first on the search path.
pub const SCHEMA: &str = "capbench_writes";

/// The contributor of every row a write bench adds.
pub const WRITER_EMAIL: &str = "write-bench@capbench.invalid";

/// The copy's HNSW index is rebuilt before a run once more than one row in this many of the
/// dataset's has been written into the copy and removed since the index was built.
pub const CHURN_KEPT_PER: u64 = 1000;

/// The search path of a session on the copy.
pub const SEARCH_PATH: &str = "capbench_writes, public";

/// The copy as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteTable {
    pub fingerprint: String,
    /// Rows of the dataset in it.
    pub rows: u64,
    /// The HNSW index's CREATE INDEX time when the copy was built (this run, or the one that built
    /// it), and whether this run built it.
    pub build_seconds: f64,
    pub built_now: bool,
    /// What an earlier run left and this one removed.
    pub restored: Option<Restored>,
    /// The HNSW index rebuilt before this run, because more than 0.1 % of the dataset's rows
    /// ([`CHURN_KEPT_PER`]) had been written into the copy and removed since it was built (their
    /// number, `None` when not known) — a graph that has been through inserts, deletes and VACUUM
    /// searches worse than a fresh one (at 100K, recall@10 0.967 → 0.938 at ef_search 64 after
    /// some 26,000 rows), so every run starts within 0.1 % of the graph the dataset's build gives:
    /// (churned rows, REINDEX seconds).
    pub reindexed: Option<(Option<u64>, f64)>,
}

/// Rows the write benches had added, removed, and the VACUUM after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restored {
    pub rows: u64,
    pub vacuum_seconds: f64,
}

/// A session on the copy: `url`'s database with [`SEARCH_PATH`].
pub async fn session(url: &str) -> Result<PgConnection> {
    let mut conn = db::connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {SEARCH_PATH}"
    )))
    .execute(&mut conn)
    .await
    .context("setting the write table's search path")?;
    Ok(conn)
}

/// The write bench's contributor (created on first use).
pub async fn writer(conn: &mut PgConnection) -> Result<Uuid> {
    sqlx::query(
        "INSERT INTO public.users (id, email, display_name, is_seed)
         VALUES ($1, $2, 'capbench write bench', true)
         ON CONFLICT DO NOTHING",
    )
    .bind(Uuid::new_v4())
    .bind(WRITER_EMAIL)
    .execute(&mut *conn)
    .await
    .context("creating the write bench's contributor")?;
    db::seed_user(conn, WRITER_EMAIL).await
}

/// The copy for the dataset loaded at `conn` (fingerprint `fingerprint`, `rows` rows): reused when
/// it was built for it (rows an earlier run left removed first), built otherwise.
pub async fn ensure(
    conn: &mut PgConnection,
    config: &Config,
    fingerprint: &str,
    rows: u64,
) -> Result<WriteTable> {
    let (schema_exists, meta): (bool, Option<(String, f64)>) = {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(SCHEMA)
                .fetch_one(&mut *conn)
                .await?;
        let has_meta: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{SCHEMA}.meta"))
            .fetch_one(&mut *conn)
            .await?;
        let meta = if has_meta {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT fingerprint, build_seconds FROM {SCHEMA}.meta WHERE id = 1"
            )))
            .fetch_optional(&mut *conn)
            .await?
        } else {
            None
        };
        (exists, meta)
    };
    if schema_exists && meta.is_none() {
        bail!(
            "a schema named {SCHEMA} exists that capbench did not make (it has no {SCHEMA}.meta): \
             capbench keeps its write benches' table there; rename or drop that schema"
        );
    }
    if let Some((fp, build_seconds)) = &meta
        && fp == fingerprint
        && is_complete(conn).await?
    {
        // A copy from before the churn count was kept (-1): how much it went through is unknown.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {SCHEMA}.meta ADD COLUMN IF NOT EXISTS churned_rows bigint NOT NULL DEFAULT -1"
        )))
        .execute(&mut *conn)
        .await?;
        let restored = restore(conn).await?;
        let churned: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT churned_rows FROM {SCHEMA}.meta WHERE id = 1"
        )))
        .fetch_one(&mut *conn)
        .await?;
        // Within 0.1 % of the dataset's rows the graph is kept (the churn adds up across runs).
        let reindexed = if churned < 0 || churned as u64 > rows / CHURN_KEPT_PER {
            let known = u64::try_from(churned).ok();
            crate::say!(
                "writes: rebuilding the write table's HNSW index: {} rows were written into it and removed since it was built (a graph through inserts, deletes and VACUUM searches worse than a fresh one)",
                known.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
            );
            Some((known, reindex(conn, config).await?))
        } else {
            None
        };
        return Ok(WriteTable {
            fingerprint: fp.clone(),
            rows: dataset_rows(conn).await?,
            build_seconds: *build_seconds,
            built_now: false,
            restored: (restored.rows > 0).then_some(restored),
            reindexed,
        });
    }
    let build_seconds = build(conn, config, fingerprint).await?;
    let copied = dataset_rows(conn).await?;
    if copied != rows {
        bail!("the write table holds {copied} dataset rows after its build, not {rows}");
    }
    Ok(WriteTable {
        fingerprint: fingerprint.to_string(),
        rows: copied,
        build_seconds,
        built_now: true,
        restored: None,
        reindexed: None,
    })
}

/// Rebuilds the copy's HNSW index from its rows (the dataset's, once restored) in one transaction,
/// as the build made it; the churn count back to 0. Returns the build's seconds.
async fn reindex(conn: &mut PgConnection, config: &Config) -> Result<f64> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path TO {SEARCH_PATH}; DROP INDEX {SCHEMA}.{}",
        schema::HNSW_INDEX
    )))
    .execute(&mut *tx)
    .await
    .context("dropping the write table's HNSW index")?;
    let seconds = build_index(&mut tx, config).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE {SCHEMA}.meta SET churned_rows = 0 WHERE id = 1"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seconds)
}

/// The copy's HNSW index built on `conn` (its search path on the copy) as `config` says, timed (s).
async fn build_index(conn: &mut PgConnection, config: &Config) -> Result<f64> {
    let t = Instant::now();
    index::build(
        conn,
        None,
        config.dataset.dims,
        &config.index,
        config.index.build_workers.unwrap_or(1),
        |_, _| {},
    )
    .await?;
    Ok(t.elapsed().as_secs_f64())
}

async fn is_complete(conn: &mut PgConnection) -> Result<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT coalesce((SELECT i.indisvalid FROM pg_index i
                          WHERE i.indexrelid = to_regclass($1)), false)",
    )
    .bind(format!("{SCHEMA}.{}", schema::HNSW_INDEX))
    .fetch_one(&mut *conn)
    .await?)
}

/// The copy's rows from the dataset (the dataset contributor's seed rows).
pub async fn dataset_rows(conn: &mut PgConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {SCHEMA}.traces
         WHERE is_seed AND contributor_id = (SELECT id FROM public.users WHERE email = $1 AND is_seed)"
    )))
    .bind(CONTRIBUTOR_EMAIL)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n as u64)
}

/// Which rows of the copy are not the dataset's: every one the write benches or a load run added.
/// `$1` is the dataset's contributor, read with [`db::seed_user`] (an error when it is missing, so
/// that no missing user can make every row look added).
const ADDED: &str = "(NOT is_seed OR contributor_id IS DISTINCT FROM $1)";

/// Rows of the copy the write benches (or a load run's writes) added.
pub async fn written_rows(conn: &mut PgConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {SCHEMA}.traces WHERE {ADDED}"
    )))
    .bind(db::seed_user(conn, CONTRIBUTOR_EMAIL).await?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n as u64)
}

/// (Re)builds the copy in one transaction: the schema, the dataset's rows from `public.traces`,
/// the key and tags index, the HNSW index (its CREATE INDEX timed: the seconds returned).
async fn build(conn: &mut PgConnection, config: &Config, fingerprint: &str) -> Result<f64> {
    crate::say!(
        "writes: building the write table {SCHEMA}.traces (a copy of the dataset with only its HNSW index; once per dataset)"
    );
    let contributor = db::seed_user(conn, CONTRIBUTOR_EMAIL).await?;
    let mut tx = conn.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}; \
         SET LOCAL search_path TO {SEARCH_PATH}; {}",
        schema::render("traces_table", config.dataset.dims, &config.index)?
    )))
    .execute(&mut *tx)
    .await
    .context("creating the write table")?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {SCHEMA}.traces ({cols}) SELECT {cols} FROM public.traces
         WHERE is_seed AND contributor_id = $1",
        cols = load::COPY_COLUMNS
    )))
    .bind(contributor)
    .execute(&mut *tx)
    .await
    .context("copying the dataset into the write table")?;
    sqlx::raw_sql(schema::section("traces_constraints")?)
        .execute(&mut *tx)
        .await
        .context("the write table's key and tags index")?;
    let build_seconds = build_index(&mut tx, config).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {SCHEMA}.meta (
             id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
             fingerprint text NOT NULL,
             build_seconds double precision NOT NULL,
             built_at timestamptz NOT NULL DEFAULT now(),
             churned_rows bigint NOT NULL DEFAULT 0);
         INSERT INTO {SCHEMA}.meta (fingerprint, build_seconds) VALUES ('{}', {build_seconds})",
        fingerprint.replace('\'', "''")
    )))
    .execute(&mut *tx)
    .await
    .context("recording the write table")?;
    tx.commit().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ANALYZE {SCHEMA}.traces")))
        .execute(&mut *conn)
        .await?;
    Ok(build_seconds)
}

/// Deletes every row the write benches (or a load run's writes) added to the copy, then VACUUMs it
/// (which repairs the HNSW graph around them); nothing to do, and no VACUUM, when there are none.
pub async fn restore(conn: &mut PgConnection) -> Result<Restored> {
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {SCHEMA}.traces WHERE {ADDED}"
    )))
    .bind(db::seed_user(conn, CONTRIBUTOR_EMAIL).await?)
    .execute(&mut *conn)
    .await
    .context("deleting the write benches' rows")?
    .rows_affected();
    if deleted == 0 {
        return Ok(Restored {
            rows: 0,
            vacuum_seconds: 0.0,
        });
    }
    // The graph went through them: the next run rebuilds it before measuring (see [`ensure`]).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE {SCHEMA}.meta SET churned_rows = CASE WHEN churned_rows < 0 THEN -1 \
         ELSE churned_rows + {deleted} END WHERE id = 1"
    )))
    .execute(&mut *conn)
    .await
    .context("counting the write table's churn")?;
    let vacuum_seconds = vacuum(conn).await?;
    Ok(Restored {
        rows: deleted,
        vacuum_seconds,
    })
}

/// `VACUUM (ANALYZE, INDEX_CLEANUP ON)` of the copy, timed (s). The index pass is forced: by
/// default PostgreSQL skips it when under 2 % of the table's pages hold dead rows, which would
/// leave the deleted rows in the HNSW graph (searches would still walk them).
pub async fn vacuum(conn: &mut PgConnection) -> Result<f64> {
    let t = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "VACUUM (ANALYZE, INDEX_CLEANUP ON) {SCHEMA}.traces"
    )))
    .execute(&mut *conn)
    .await
    .context("VACUUM of the write table")?;
    Ok(t.elapsed().as_secs_f64())
}

/// A row to write, in the form each method sends it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: Uuid,
    pub title: String,
    pub context_text: String,
    pub solution_text: String,
    pub embedding: Vector,
    pub tags: Vec<String>,
    pub contributor: Uuid,
    /// Its binary COPY tuple.
    pub copy: Vec<u8>,
}

impl Row {
    /// The row with its binary COPY tuple.
    pub fn of(row: TraceRow, contributor: Uuid) -> Self {
        let mut copy = Vec::new();
        load::encode_row(&mut copy, &row, contributor);
        Self {
            copy,
            ..Self::for_insert(row, contributor)
        }
    }

    /// The row for INSERTs only (no COPY tuple).
    pub fn for_insert(row: TraceRow, contributor: Uuid) -> Self {
        Self {
            id: row.id,
            title: row.title,
            context_text: row.context_text,
            solution_text: row.solution_text,
            tags: row.tags.iter().map(|t| t.name()).collect(),
            embedding: Vector::from(row.embedding),
            contributor,
            copy: Vec::new(),
        }
    }
}

/// The columns an INSERT sets (the others take their defaults: no agent, created now).
pub const INSERT_COLUMNS: &str = "id, title, context_text, solution_text, embedding, embedding_model_id, \
     status, trust_score, confirmation_count, contributor_id, is_seed, is_flagged, tags";
pub const INSERT_PARAMS: usize = 13;

/// `INSERT INTO table (…) VALUES (…), …` of `rows` rows, bound in [`bind_row`]'s order.
pub fn insert_sql(table: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let ps: Vec<String> = (1..=INSERT_PARAMS)
                .map(|c| format!("${}", r * INSERT_PARAMS + c))
                .collect();
            format!("({})", ps.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO {table} ({INSERT_COLUMNS}) VALUES {}",
        values.join(", ")
    )
}

pub fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    r: &'q Row,
    id: Uuid,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(id)
        .bind(&r.title)
        .bind(&r.context_text)
        .bind(&r.solution_text)
        .bind(&r.embedding)
        .bind(EMBEDDING_MODEL_ID)
        .bind("validated")
        .bind(1.0f64)
        .bind(2i32)
        .bind(r.contributor)
        .bind(true)
        .bind(false)
        .bind(&r.tags)
}
