//! THE search query — the one SQL text the HNSW bench, the reference service and the load runner
//! all execute (the seeds' query: validated, embedded, right model, not flagged, nearest by `<=>`).

use anyhow::{Context, Result};
use pgvector::Vector;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::dataset::EMBEDDING_MODEL_ID;

/// `$1` the query vector (binary), `$2` the embedding model, `$3` how many.
pub const SEARCH_SQL: &str = "SELECT id, title, trust_score, (embedding <=> $1)::float8 AS distance \
FROM traces \
WHERE status = 'validated' AND embedding IS NOT NULL AND embedding_model_id = $2 AND is_flagged = false \
ORDER BY embedding <=> $1 \
LIMIT $3";

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
    sqlx::query_as::<_, Hit>(SEARCH_SQL)
        .bind(query)
        .bind(EMBEDDING_MODEL_ID)
        .bind(limit)
        .fetch_all(conn)
        .await
        .context("running the search query")
}

/// The planner's plan for the search query, as text lines (`EXPLAIN`, no ANALYZE).
pub async fn explain(conn: &mut PgConnection, query: &Vector, limit: i64) -> Result<Vec<String>> {
    let sql = format!("EXPLAIN {SEARCH_SQL}");
    let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(EMBEDDING_MODEL_ID)
        .bind(limit)
        .fetch_all(conn)
        .await
        .context("EXPLAIN of the search query")?;
    Ok(lines)
}

/// Whether a plan scans the HNSW index `index`.
pub fn plan_uses_index(plan: &[String], index: &str) -> bool {
    plan.iter()
        .any(|l| l.contains("Index Scan") && l.contains(index))
}
