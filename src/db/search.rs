//! THE search query — the one SQL text the HNSW bench, the reference service and the load runner
//! all execute (the seeds' query: validated, embedded, right model, not flagged, nearest by `<=>`),
//! and its filtered form: the same text with one more condition, every result carrying the given
//! tags (`tags @> $4`). Both come from one macro, so they cannot drift apart.

use anyhow::{Context, Result};
use pgvector::Vector;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::IterativeScan;
use crate::dataset::EMBEDDING_MODEL_ID;

/// What a search returns: the row and its exact cosine distance to `$1` (whatever index found it).
macro_rules! select_list {
    () => {
        "SELECT id, title, trust_score, (embedding <=> $1)::float8 AS distance"
    };
}

/// The seeds' conditions on a searchable row (`$2` the embedding model).
macro_rules! conditions {
    () => {
        "WHERE status = 'validated' AND embedding IS NOT NULL AND embedding_model_id = $2 AND is_flagged = false"
    };
}

/// The search query's text with `$filter` (a condition, or nothing) added to its WHERE clause.
macro_rules! search_sql {
    ($filter:literal) => {
        concat!(
            select_list!(),
            " FROM traces ",
            conditions!(),
            $filter,
            " ORDER BY embedding <=> $1 LIMIT $3"
        )
    };
}

/// The search query as an index variant runs it (`db::variant`): the same select list and
/// conditions, ordered by the variant's own expression — `order_by` (`embedding::halfvec(1536) <=>
/// $1::vector::halfvec(1536)`, …). With `candidates`, that ordering only picks `$4` candidates,
/// which the outer query re-ranks by exact cosine distance (binary quantization's re-rank, as
/// pgvector's README writes it). Each candidate's distance is computed once, in the candidates'
/// select list, and the re-rank orders by that column: written as pgvector's README writes it
/// (`ORDER BY embedding <=> $1` outside, the distance again in the select list), a client that
/// sends the vector as two parameters — pgbench makes one per `:variable` — gets two expressions
/// the planner cannot merge, and every candidate is detoasted and scored twice (at 200 candidates
/// over 1536 dims, 20 % of the query's time).
pub fn variant_sql(order_by: &str, candidates: bool) -> String {
    if candidates {
        format!(
            "SELECT id, title, trust_score, distance FROM ({} FROM traces {} ORDER BY {order_by} LIMIT $4) AS candidates \
             ORDER BY distance LIMIT $3",
            select_list!(),
            conditions!()
        )
    } else {
        format!(
            "{} FROM traces {} ORDER BY {order_by} LIMIT $3",
            select_list!(),
            conditions!()
        )
    }
}

/// `$1` the query vector (binary), `$2` the embedding model, `$3` how many.
pub const SEARCH_SQL: &str = search_sql!("");

/// [`SEARCH_SQL`] where every result carries all tags of `$4` (`text[]`).
pub const SEARCH_FILTERED_SQL: &str = search_sql!(" AND tags @> $4");

/// The search query's text for a filter of `tags` (none: [`SEARCH_SQL`]).
pub fn sql_for(tags: &[String]) -> &'static str {
    if tags.is_empty() {
        SEARCH_SQL
    } else {
        SEARCH_FILTERED_SQL
    }
}

/// The machine's reference: a round trip with the search query's parameters (the same binary
/// `vector`, received and checked by the server) and no search work — what every query pays for
/// the client, the protocol and the server's statement handling. Measured in the same rounds as
/// the searches, it moves with the machine (CPU frequency, neighbours, scheduling) but not with the
/// index, so a comparison can take the machine's drift out of the search figures.
pub const ROUND_TRIP_SQL: &str = "SELECT $2::int8 AS k WHERE $1::vector IS NOT NULL";

/// Runs [`ROUND_TRIP_SQL`] with `query` and `k`.
pub async fn round_trip(conn: &mut PgConnection, query: &Vector, k: i64) -> Result<()> {
    sqlx::query(ROUND_TRIP_SQL)
        .bind(query)
        .bind(k)
        .fetch_all(conn)
        .await
        .context("running the reference round trip")?;
    Ok(())
}

/// One ANN candidate.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hit {
    pub id: Uuid,
    pub title: String,
    pub trust_score: f64,
    /// Cosine distance (`<=>`); similarity is `1 - distance`.
    pub distance: f64,
}

/// Runs the search query (prepared and cached per connection by sqlx).
pub async fn search(conn: &mut PgConnection, query: &Vector, limit: i64) -> Result<Vec<Hit>> {
    search_filtered(conn, query, limit, &[]).await
}

/// Runs the search query with every result carrying all of `tags` (none: unfiltered).
pub async fn search_filtered(
    conn: &mut PgConnection,
    query: &Vector,
    limit: i64,
    tags: &[String],
) -> Result<Vec<Hit>> {
    let q = sqlx::query_as::<_, Hit>(sql_for(tags))
        .bind(query)
        .bind(EMBEDDING_MODEL_ID)
        .bind(limit);
    if tags.is_empty() { q } else { q.bind(tags) }
        .fetch_all(conn)
        .await
        .context("running the search query")
}

/// The planner's plan for the search query, as text lines (`EXPLAIN`, no ANALYZE).
pub async fn explain(conn: &mut PgConnection, query: &Vector, limit: i64) -> Result<Vec<String>> {
    explain_filtered(conn, query, limit, &[]).await
}

/// The planner's plan for the search query filtered by `tags`.
pub async fn explain_filtered(
    conn: &mut PgConnection,
    query: &Vector,
    limit: i64,
    tags: &[String],
) -> Result<Vec<String>> {
    let sql = format!("EXPLAIN {}", sql_for(tags));
    let q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(EMBEDDING_MODEL_ID)
        .bind(limit);
    let lines: Vec<String> = if tags.is_empty() { q } else { q.bind(tags) }
        .fetch_all(conn)
        .await
        .context("EXPLAIN of the search query")?;
    Ok(lines)
}

/// `'[0.1,0.2,…]'` literals in a plan replaced by `'[…]'`, so a message stays one readable line.
pub fn abbreviate_vectors(plan: &str) -> String {
    let mut out = String::with_capacity(plan.len().min(4096));
    let mut rest = plan;
    while let Some(start) = rest.find("'[") {
        out.push_str(&rest[..start]);
        match rest[start..].find("]'") {
            Some(end) => {
                out.push_str("'[…]'");
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A plan's lines joined into one (` / `), vectors abbreviated: what a record and a message keep.
pub fn one_line_plan(plan: &[String]) -> String {
    abbreviate_vectors(
        &plan
            .iter()
            .map(|l| l.trim())
            .collect::<Vec<_>>()
            .join(" / "),
    )
}

/// Whether a plan scans the HNSW index `index`.
pub fn plan_uses_index(plan: &[String], index: &str) -> bool {
    plan.iter()
        .any(|l| l.contains("Index Scan") && l.contains(index))
}

/// What an application does per request: BEGIN; SET LOCAL hnsw.ef_search; the search; COMMIT.
pub async fn search_in_transaction(
    conn: &mut PgConnection,
    query: &Vector,
    limit: i64,
    ef_search: u32,
) -> Result<Vec<Hit>> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    set_ef_search(&mut tx, ef_search, true).await?;
    let hits = search(&mut tx, query, limit).await?;
    tx.commit().await?;
    Ok(hits)
}

/// `SET [LOCAL] hnsw.ef_search` as a parameterized (prepared) statement: `$1` the value, `$2` local.
const SET_EF_SEARCH_SQL: &str = "SELECT set_config('hnsw.ef_search', $1, $2)";

/// `SET [LOCAL] hnsw.ef_search`, as a parameterized (prepared) statement.
pub async fn set_ef_search(conn: &mut PgConnection, ef_search: u32, local: bool) -> Result<()> {
    sqlx::query(SET_EF_SEARCH_SQL)
        .bind(ef_search.to_string())
        .bind(local)
        .execute(conn)
        .await
        .context("setting hnsw.ef_search")?;
    Ok(())
}

/// The planner's plan for the search query at `ef_search`, in a transaction that is rolled back (the
/// session is left as it was).
pub async fn plan_at(
    conn: &mut PgConnection,
    query: &Vector,
    limit: i64,
    ef_search: u32,
) -> Result<Vec<String>> {
    let mut tx = sqlx::Connection::begin(conn).await?;
    set_ef_search(&mut tx, ef_search, true).await?;
    let plan = explain(&mut tx, query, limit).await?;
    tx.rollback().await?;
    Ok(plan)
}

/// Fails unless the planner runs the search query as a scan of the HNSW index `index` at
/// `ef_search` (the planner's choice depends on it): timing a sequential scan would measure the
/// wrong thing. Runs in a transaction that is rolled back, so the session is left as it was.
pub async fn check_plan(
    conn: &mut PgConnection,
    query: &Vector,
    limit: i64,
    ef_search: u32,
    index: &str,
) -> Result<Vec<String>> {
    let plan = plan_at(conn, query, limit, ef_search).await?;
    if !plan_uses_index(&plan, index) {
        anyhow::bail!(
            "at ef_search {ef_search} the planner would not use the HNSW index {index} for the search query \
             (plan: {}): not timing the wrong plan; check that the index exists (cargo run --release --bin \
             setup -- --force rebuilds it), that enable_indexscan is on, and that the table is large enough \
             for the planner to prefer the index",
            plan.iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    Ok(plan)
}

/// `hnsw.iterative_scan` and `hnsw.max_scan_tuples` (pgvector ≥ 0.8) for the session, or for the
/// transaction when `local`. `max_scan_tuples` None leaves pgvector's default (20,000).
pub async fn set_iterative_scan(
    conn: &mut PgConnection,
    mode: IterativeScan,
    max_scan_tuples: Option<u32>,
    local: bool,
) -> Result<()> {
    sqlx::query(SET_ITERATIVE_SCAN_SQL)
        .bind(mode.as_str())
        .bind(max_scan_tuples.map(|n| n.to_string()))
        .bind(local)
        .execute(conn)
        .await
        .context(
            "setting hnsw.iterative_scan (pgvector 0.8 or later has it; `SELECT extversion FROM pg_extension \
             WHERE extname = 'vector'` shows yours)",
        )?;
    Ok(())
}

/// `$1` the mode, `$2` max_scan_tuples or NULL (then reset to its default), `$3` local.
const SET_ITERATIVE_SCAN_SQL: &str = "SELECT set_config('hnsw.iterative_scan', $1, $3), \
     set_config('hnsw.max_scan_tuples', coalesce($2, (SELECT boot_val FROM pg_settings WHERE name = 'hnsw.max_scan_tuples')), $3)";

/// A pool of `size` connections for the search query: `ef_search` (and the iterative scan, when
/// not `off`) set once as each connects (a search is then one round trip, not BEGIN / SET LOCAL /
/// query / COMMIT — the hnsw_txn bench shows that cost), and no health-check round trip per
/// acquire (a broken connection fails its query).
pub fn search_pool_options(
    ef_search: u32,
    iterative_scan: IterativeScan,
    size: u32,
) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(size)
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::query(SET_EF_SEARCH_SQL)
                    .bind(ef_search.to_string())
                    .bind(false)
                    .execute(&mut *conn)
                    .await?;
                if iterative_scan != IterativeScan::Off {
                    sqlx::query(SET_ITERATIVE_SCAN_SQL)
                        .bind(iterative_scan.as_str())
                        .bind(None::<String>)
                        .bind(false)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
}

/// Which plan a point ran, read from its EXPLAIN line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    /// The HNSW index.
    Hnsw,
    /// A bitmap scan of the tags' index.
    Bitmap,
    /// A sequential scan.
    Seq,
}

impl PlanKind {
    /// The kind of plan `plan` (one line of EXPLAIN), as the hnsw_filtered bench and the report name it.
    pub fn of(plan: &str) -> Self {
        if plan.contains(super::schema::HNSW_INDEX) {
            PlanKind::Hnsw
        } else if plan.contains("Bitmap") {
            PlanKind::Bitmap
        } else {
            PlanKind::Seq
        }
    }

    /// `hnsw`, `bitmap`, `seq`.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::Hnsw => "hnsw",
            PlanKind::Bitmap => "bitmap",
            PlanKind::Seq => "seq",
        }
    }
}
