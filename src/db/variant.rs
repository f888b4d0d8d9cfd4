//! Index variants: the ways pgvector can index the same `embedding` column, side by side on one
//! table — full-precision HNSW (the seeds' index), half-precision HNSW, binary quantization (HNSW
//! over one bit per dimension, then an exact re-rank) and IVFFlat. Each has its index (a section of
//! setup/schema.sql), its search SQL (built from [`search::variant_sql`], so the select list and
//! the conditions are THE search query's), the knob a sweep turns, and a row in
//! `capacity_variants` recording how it was built.
//!
//! None of them competes with another for a query: halfvec and bq order by their own expressions,
//! and IVFFlat is built on `subvector(embedding, 1, dims)::vector(dims)` (equal to the embedding),
//! because two indexes on the same expression are chosen between by cost alone (the planner
//! usually prefers HNSW), which no setting can reliably overrule (docs/research/index-variants.md).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgvector::Vector;
use sqlx::PgConnection;

use crate::config::IndexParams;
use crate::dataset::EMBEDDING_MODEL_ID;
use crate::db::{index, schema, search};

/// The oldest pgvector with halfvec, bit indexes, `binary_quantize` and `subvector`.
pub const MIN_PGVECTOR: &str = "0.7.0";

pub use crate::config::Variant;

/// What a variant's sweep turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// `hnsw.ef_search`.
    EfSearch,
    /// Candidates taken from the bit index and re-ranked (the inner LIMIT; `hnsw.ef_search` is
    /// set to the same, so the scan can return them all).
    Candidates,
    /// `ivfflat.probes`: lists scanned.
    Probes,
}

impl Knob {
    /// `ef_search`, `candidates`, `probes`: the parameter in a benchmark's id.
    pub fn as_str(self) -> &'static str {
        match self {
            Knob::EfSearch => "ef_search",
            Knob::Candidates => "candidates",
            Knob::Probes => "probes",
        }
    }
}

impl Variant {
    /// What it is, in a few words (tables, the report).
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Hnsw => "HNSW, vector (32-bit floats)",
            Variant::Halfvec => "HNSW, halfvec (16-bit floats)",
            Variant::Bq => "HNSW, binary quantization (1 bit/dim) + exact re-rank",
            Variant::Ivfflat => "IVFFlat, vector",
        }
    }

    /// Its index's name.
    pub fn index_name(self) -> &'static str {
        match self {
            Variant::Hnsw => schema::HNSW_INDEX,
            Variant::Halfvec => "ix_traces_embedding_halfvec",
            Variant::Bq => "ix_traces_embedding_bq",
            Variant::Ivfflat => "ix_traces_embedding_ivfflat",
        }
    }

    /// Its section of setup/schema.sql.
    fn section(self) -> &'static str {
        match self {
            Variant::Hnsw => "traces_index",
            Variant::Halfvec => "index_halfvec",
            Variant::Bq => "index_bq",
            Variant::Ivfflat => "index_ivfflat",
        }
    }

    /// The access method (`hnsw`, `ivfflat`).
    pub fn method(self) -> &'static str {
        match self {
            Variant::Ivfflat => "ivfflat",
            _ => "hnsw",
        }
    }

    pub fn knob(self) -> Knob {
        match self {
            Variant::Hnsw | Variant::Halfvec => Knob::EfSearch,
            Variant::Bq => Knob::Candidates,
            Variant::Ivfflat => Knob::Probes,
        }
    }

    /// The `ORDER BY` expression its index serves (the index's expression, exactly).
    pub fn order_by(self, dims: u32) -> String {
        match self {
            Variant::Hnsw => "embedding <=> $1".into(),
            Variant::Halfvec => {
                format!("embedding::halfvec({dims}) <=> $1::vector::halfvec({dims})")
            }
            Variant::Bq => {
                format!("binary_quantize(embedding)::bit({dims}) <~> binary_quantize($1::vector)")
            }
            Variant::Ivfflat => {
                format!("subvector(embedding, 1, {dims})::vector({dims}) <=> $1::vector({dims})")
            }
        }
    }

    /// Its search SQL: `$1` the query vector, `$2` the embedding model, `$3` k; bq also `$4` the
    /// candidates re-ranked. The seeds' search ([`search::SEARCH_SQL`]) for HNSW.
    pub fn search_sql(self, dims: u32) -> String {
        match self {
            Variant::Hnsw => search::SEARCH_SQL.to_string(),
            v => search::variant_sql(&v.order_by(dims), v == Variant::Bq),
        }
    }

    /// Its index's parameters as built (`m=16, ef_construction=64`, `lists=100`).
    pub fn settings(self, rows: u64, params: &IndexParams) -> String {
        match self {
            Variant::Ivfflat => format!("lists={}", ivfflat_lists(rows)),
            _ => format!("m={}, ef_construction={}", params.m, params.ef_construction),
        }
    }

    /// Its CREATE INDEX statement (setup/schema.sql, filled in).
    pub fn create_sql(self, rows: u64, dims: u32, params: &IndexParams) -> Result<String> {
        Ok(schema::render(self.section(), dims, params)?
            .replace("{{lists}}", &ivfflat_lists(rows).to_string()))
    }

    /// The knob's values a sweep of this variant measures: ef_search for the HNSW variants (the
    /// hnsw bench's list), candidates for bq, powers of two for IVFFlat's probes up to `lists`.
    pub fn sweep(self, ef_search: &[u32], rows: u64, quick: bool) -> Vec<u32> {
        let mut values = match self {
            Variant::Hnsw | Variant::Halfvec => ef_search.to_vec(),
            Variant::Bq => vec![40, 100, 200, 400, 800],
            Variant::Ivfflat => {
                let lists = ivfflat_lists(rows);
                (0..16)
                    .map(|i| 1u32 << i)
                    .take_while(|&p| p <= 32.min(lists))
                    .collect()
            }
        };
        if quick {
            // The first, a middle and the last value: the shape of the curve, not its detail.
            if values.len() > 3 {
                values = vec![
                    values[0],
                    values[values.len() / 2],
                    values[values.len() - 1],
                ];
            }
        }
        values
    }

    /// The session settings for `value` of its knob (`SET …` statements), and the guard that
    /// keeps the planner on the index: with sequential scans off, the index is the only way to
    /// the ORDER BY (the plan is checked before timing anyway).
    pub fn settings_sql(self, value: u32) -> String {
        let knob = match self.knob() {
            Knob::EfSearch | Knob::Candidates => format!("SET hnsw.ef_search = {value}"),
            Knob::Probes => format!("SET ivfflat.probes = {value}"),
        };
        format!("{knob}; SET enable_seqscan = off")
    }
}

/// pgvector's advice for IVFFlat's `lists`: rows / 1000 up to 1M rows, sqrt(rows) above; at least
/// 10 here, so a small (quick) dataset still has lists to probe, and at most pgvector's 32,768.
pub fn ivfflat_lists(rows: u64) -> u32 {
    let lists = if rows <= 1_000_000 {
        rows / 1000
    } else {
        (rows as f64).sqrt() as u64
    };
    lists.clamp(10, 32_768) as u32
}

/// One search through a variant: `sql` its [`Variant::search_sql`], `candidates` bq's re-rank depth.
pub async fn search(
    conn: &mut PgConnection,
    sql: &str,
    query: &Vector,
    k: i64,
    candidates: Option<i64>,
) -> Result<Vec<search::Hit>> {
    let q = sqlx::query_as::<_, search::Hit>(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(EMBEDDING_MODEL_ID)
        .bind(k);
    match candidates {
        Some(c) => q.bind(c),
        None => q,
    }
    .fetch_all(conn)
    .await
    .context("running a variant's search query")
}

/// The plan of a variant's search (EXPLAIN, one line per node).
pub async fn explain(
    conn: &mut PgConnection,
    sql: &str,
    query: &Vector,
    k: i64,
    candidates: Option<i64>,
) -> Result<Vec<String>> {
    let sql = format!("EXPLAIN {sql}");
    let q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(query)
        .bind(EMBEDDING_MODEL_ID)
        .bind(k);
    match candidates {
        Some(c) => q.bind(c),
        None => q,
    }
    .fetch_all(conn)
    .await
    .context("EXPLAIN of a variant's search query")
}

/// The variant's index, the table and its TOAST (where the re-rank reads the vectors) into
/// shared_buffers (pg_prewarm, which must be installed): the variants together can exceed it, so
/// a bench loads each before its own points.
pub async fn prewarm(conn: &mut PgConnection, v: Variant) -> Result<()> {
    sqlx::query(
        "SELECT pg_prewarm(to_regclass($1)), pg_prewarm('traces'),
                pg_prewarm(reltoastrelid) FROM pg_class WHERE oid = 'traces'::regclass AND reltoastrelid <> 0",
    )
    .bind(v.index_name())
    .execute(conn)
    .await
    .with_context(|| format!("pg_prewarm of the {v} index and the table"))?;
    Ok(())
}

/// How a variant was built, as `capacity_variants` (or, for HNSW, `capacity_meta`) records it,
/// with its size now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Built {
    pub variant: Variant,
    pub index_name: String,
    /// The index's parameters (`m=16, ef_construction=64`, `lists=100`).
    pub settings: String,
    /// The CREATE INDEX statement's time (pgvector's build; nothing of the harness's).
    pub build_seconds: f64,
    /// Parallel workers besides the leader, and maintenance_work_mem, the build ran with.
    pub workers: u32,
    pub maintenance_work_mem_bytes: i64,
    pub size_bytes: i64,
    /// pgvector's notices during the build.
    #[serde(default)]
    pub notices: Vec<String>,
}

/// The built variants recorded for dataset `fingerprint` whose indexes exist and are valid.
pub async fn recorded(conn: &mut PgConnection, fingerprint: &str) -> Result<Vec<Built>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        variant: String,
        index_name: String,
        settings: String,
        build_seconds: f64,
        workers: i32,
        maintenance_work_mem: i64,
        notices: Vec<String>,
        size_bytes: i64,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT v.variant, v.index_name, v.settings, v.build_seconds, v.workers, v.maintenance_work_mem,
                v.notices, pg_relation_size(i.indexrelid) AS size_bytes
         FROM capacity_variants v
         JOIN pg_index i ON i.indexrelid = to_regclass(v.index_name)
         WHERE v.fingerprint = $1 AND i.indisvalid AND i.indrelid = 'traces'::regclass",
    )
    .bind(fingerprint)
    .fetch_all(&mut *conn)
    .await
    .context("reading capacity_variants")?;
    rows.into_iter()
        .map(|r| {
            Ok(Built {
                variant: r.variant.parse().map_err(anyhow::Error::msg)?,
                index_name: r.index_name,
                settings: r.settings,
                build_seconds: r.build_seconds,
                workers: r.workers.max(0) as u32,
                maintenance_work_mem_bytes: r.maintenance_work_mem,
                size_bytes: r.size_bytes,
                notices: r.notices,
            })
        })
        .collect()
}

/// Builds `variant`'s index on `traces` (not HNSW: setup builds it with the dataset) for the
/// dataset `fingerprint` of `rows` rows, replacing one left from another dataset, and records it
/// in `capacity_variants` in the same transaction. `progress(done, total)` as [`index::build_sql`].
#[allow(clippy::too_many_arguments)]
pub async fn build(
    conn: &mut PgConnection,
    monitor: Option<PgConnection>,
    variant: Variant,
    fingerprint: &str,
    rows: u64,
    dims: u32,
    params: &IndexParams,
    workers: u32,
    progress: impl Fn(u64, u64) + Send + 'static,
) -> Result<Built> {
    if variant == Variant::Hnsw {
        bail!("the HNSW index is built with the dataset (setup), not as a variant");
    }
    let pgvector = crate::db::ServerInfo::read(conn).await?;
    if !crate::db::version_at_least(&pgvector.pgvector_version, MIN_PGVECTOR) {
        bail!(
            "index variant {variant} needs pgvector {MIN_PGVECTOR} or later (halfvec, bit indexes, \
             binary_quantize, subvector); the server has {}",
            pgvector.pgvector_version
        );
    }
    let sql = variant.create_sql(rows, dims, params)?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP INDEX IF EXISTS {}",
        variant.index_name()
    )))
    .execute(&mut *tx)
    .await
    .with_context(|| format!("dropping the old {} index", variant))?;
    let t = Instant::now();
    let notices = index::build_sql(&mut tx, monitor, &sql, workers, progress)
        .await
        .with_context(|| format!("building the {variant} index ({})", variant.describe()))?;
    let build_seconds = t.elapsed().as_secs_f64();
    let built = Built {
        variant,
        index_name: variant.index_name().into(),
        settings: variant.settings(rows, params),
        build_seconds,
        workers,
        maintenance_work_mem_bytes: pgvector.maintenance_work_mem_bytes,
        size_bytes: sqlx::query_scalar("SELECT pg_relation_size(to_regclass($1))")
            .bind(variant.index_name())
            .fetch_one(&mut *tx)
            .await?,
        notices,
    };
    sqlx::query(
        "INSERT INTO capacity_variants (variant, fingerprint, index_name, settings, build_seconds, workers,
                                        maintenance_work_mem, notices, built_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
         ON CONFLICT (variant) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, index_name = EXCLUDED.index_name,
             settings = EXCLUDED.settings, build_seconds = EXCLUDED.build_seconds, workers = EXCLUDED.workers,
             maintenance_work_mem = EXCLUDED.maintenance_work_mem, notices = EXCLUDED.notices,
             built_at = EXCLUDED.built_at",
    )
    .bind(variant.as_str())
    .bind(fingerprint)
    .bind(&built.index_name)
    .bind(&built.settings)
    .bind(built.build_seconds)
    .bind(workers as i32)
    .bind(built.maintenance_work_mem_bytes)
    .bind(&built.notices)
    .execute(&mut *tx)
    .await
    .context("recording the variant in capacity_variants")?;
    // The planner's statistics for the new expression (the HNSW one has them from setup's ANALYZE).
    sqlx::raw_sql("ANALYZE traces")
        .execute(&mut *tx)
        .await
        .context("ANALYZE traces")?;
    tx.commit().await?;
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_say_the_choices() {
        for v in Variant::ALL {
            assert_eq!(v.as_str().parse::<Variant>(), Ok(v));
        }
        let e = "hsnw".parse::<Variant>().unwrap_err();
        assert!(e.contains("hnsw, halfvec, bq, ivfflat"), "{e}");
    }

    #[test]
    fn ivfflat_lists_follow_pgvectors_advice() {
        assert_eq!(ivfflat_lists(100_000), 100);
        assert_eq!(ivfflat_lists(1_000_000), 1000);
        assert_eq!(ivfflat_lists(10_000_000), 3162);
        assert_eq!(ivfflat_lists(2_000), 10, "at least 10");
        assert_eq!(ivfflat_lists(u64::MAX), 32_768, "pgvector's maximum");
    }

    #[test]
    fn each_variant_orders_by_its_own_index_expression() {
        let params = IndexParams::default();
        for v in Variant::ALL {
            let create = v.create_sql(100_000, 1536, &params).unwrap();
            assert!(create.contains(v.index_name()), "{create}");
            assert!(!create.contains("{{"), "every hole filled: {create}");
            let sql = v.search_sql(1536);
            // The indexed expression appears in the ORDER BY (the query's side of it before the operator).
            let indexed = v.order_by(1536);
            let (lhs, _) = indexed.split_once(" <").unwrap();
            assert!(create.contains(lhs), "{v}: {create} indexes {lhs}");
            assert!(sql.contains(&format!("ORDER BY {indexed}")), "{v}: {sql}");
            // Every variant returns the exact cosine distance, whatever its index computes (bq's
            // from its candidates' select list).
            assert!(sql.starts_with("SELECT id, title, trust_score, "), "{sql}");
            assert!(
                sql.contains(
                    "SELECT id, title, trust_score, (embedding <=> $1)::float8 AS distance"
                ),
                "{sql}"
            );
        }
        // bq re-ranks by the distance its candidates computed: one expression per candidate,
        // however many parameters carry the query vector.
        let bq = Variant::Bq.search_sql(8);
        assert!(
            bq.contains("LIMIT $4) AS candidates ORDER BY distance LIMIT $3"),
            "{bq}"
        );
        assert_eq!(bq.matches("embedding <=> $1").count(), 1, "{bq}");
        assert_eq!(Variant::Hnsw.search_sql(1536), search::SEARCH_SQL);
        assert!(
            Variant::Ivfflat
                .create_sql(100_000, 1536, &params)
                .unwrap()
                .contains("lists = 100")
        );
    }

    #[test]
    fn sweeps_stay_within_each_knobs_range() {
        let efs = [16, 40, 64, 100, 200];
        assert_eq!(Variant::Hnsw.sweep(&efs, 100_000, false), efs);
        assert_eq!(
            Variant::Ivfflat.sweep(&efs, 100_000, false),
            [1, 2, 4, 8, 16, 32]
        );
        assert_eq!(
            Variant::Ivfflat.sweep(&efs, 20_000, false),
            [1, 2, 4, 8, 16],
            "at most lists (20)"
        );
        assert!(
            Variant::Bq
                .sweep(&efs, 100_000, false)
                .iter()
                .all(|&c| c <= 1000),
            "ef_search's range"
        );
        assert_eq!(Variant::Halfvec.sweep(&efs, 100_000, true), [16, 64, 200]);
        assert!(
            Variant::Bq
                .settings_sql(200)
                .contains("hnsw.ef_search = 200")
        );
        assert!(
            Variant::Ivfflat
                .settings_sql(8)
                .contains("ivfflat.probes = 8")
        );
    }
}
