//! Building the dataset: generation, binary COPY, the HNSW index and ANALYZE, in one transaction.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection};

use crate::config::Config;
use crate::dataset::{self, CONTRIBUTOR_EMAIL, Dataset};
use crate::db::{ServerInfo, index, load, schema};
use crate::stack;

use super::*;

pub(super) fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// Generates, loads, indexes and swaps in the dataset, in one transaction.
pub(super) async fn build(
    mut conn: PgConnection,
    monitor: Option<PgConnection>,
    config: &Config,
    fingerprint: &str,
    carry: bool,
    opts: &LoadOptions,
) -> Result<Figures> {
    let params = &config.dataset;
    let dims = params.dims;
    let target_schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut conn)
        .await?;
    let dataset = Arc::new(Dataset::new(params.clone()));
    let workers = config.index.workers();

    let mut tx = conn.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {LOAD_SCHEMA} CASCADE; CREATE SCHEMA {LOAD_SCHEMA}; \
         SET LOCAL search_path TO {LOAD_SCHEMA}, {};",
        stack::quote_ident(&target_schema)
    )))
    .execute(&mut *tx)
    .await
    .context("preparing the load schema")?;
    let contributor: uuid::Uuid = sqlx::query_scalar(
        "WITH ins AS (
            INSERT INTO users (id, email, display_name, is_seed) VALUES ($1, $2, 'Capacity Test', true)
            ON CONFLICT (email) WHERE is_seed DO NOTHING RETURNING id)
         SELECT id FROM ins UNION ALL SELECT id FROM users WHERE email = $2 AND is_seed LIMIT 1",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(CONTRIBUTOR_EMAIL)
    .fetch_one(&mut *tx)
    .await
    .context("creating the capacity-test user")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema::render(
        "traces_table",
        dims,
        &config.index,
    )?))
    .execute(&mut *tx)
    .await
    .context("creating the traces table (setup/schema.sql, section traces_table)")?;

    // 1. Binary COPY.
    let pb = bar(opts.progress, params.rows, "COPY");
    let t = Instant::now();
    let copied = {
        let pb = pb.clone();
        load::copy_dataset(
            &mut tx,
            "traces",
            dataset,
            contributor,
            opts.copy_batch,
            move |n| pb.set_position(n),
        )
        .await?
    };
    let load_seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    anyhow::ensure!(
        copied == params.rows,
        "COPY stored {copied} rows, expected {}",
        params.rows
    );

    // 2. Keys after the load, as pg_dump does.
    let t = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(schema::render(
        "traces_constraints",
        dims,
        &config.index,
    )?))
    .execute(&mut *tx)
    .await
    .context("adding keys (setup/schema.sql, section traces_constraints)")?;
    let constraints_seconds = t.elapsed().as_secs_f64();

    // 3. HNSW.
    let pb = bar(opts.progress, params.rows, "HNSW");
    let t = Instant::now();
    let notices = {
        let pb = pb.clone();
        index::build(
            &mut tx,
            monitor,
            dims,
            &config.index,
            workers,
            move |done, total| {
                if total > 0 {
                    pb.set_length(total);
                }
                pb.set_position(done);
            },
        )
        .await
        .map_err(|e| relay_memory_error(e, workers))?
    };
    let index_seconds = t.elapsed().as_secs_f64();
    pb.finish_and_clear();

    // 4. The rows of the current table that capbench did not load (written through the API or by
    //    hand) move into the new one, now that it is indexed; the lock holds writers off from here
    //    to the swap, so no row written meanwhile is lost with the old table.
    let target = stack::quote_ident(&target_schema);
    let kept_rows = if carry {
        // A table of generator version 1 has no tags: its rows come over with none.
        let has_tags: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) \
             AND attname = 'tags' AND NOT attisdropped)",
        )
        .bind(format!("{target}.traces"))
        .fetch_one(&mut *tx)
        .await
        .context("reading the current traces table's columns")?;
        let cols = if has_tags {
            load::COPY_COLUMNS
        } else {
            load::V1_COLUMNS
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {target}.traces IN EXCLUSIVE MODE"
        )))
        .execute(&mut *tx)
        .await
        .context("locking the current traces table against writes until the swap")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO traces ({cols}) SELECT {cols} FROM {target}.traces \
             WHERE NOT coalesce(is_seed AND contributor_id = $1, false)"
        )))
        .bind(contributor)
        .execute(&mut *tx)
        .await
        .context("carrying the rows capbench did not load into the new traces table")?
        .rows_affected()
    } else {
        0
    };

    // 5. Statistics.
    let t = Instant::now();
    sqlx::raw_sql("ANALYZE traces")
        .execute(&mut *tx)
        .await
        .context("ANALYZE traces")?;
    let analyze_seconds = t.elapsed().as_secs_f64();

    // 6. Swap in and record, still in the same transaction.
    let (table_bytes, index_bytes): (i64, i64) = sqlx::query_as(
        "SELECT pg_table_size(to_regclass('traces')), pg_relation_size(to_regclass($1))",
    )
    .bind(format!("{LOAD_SCHEMA}.{}", schema::HNSW_INDEX))
    .fetch_one(&mut *tx)
    .await?;
    let server = ServerInfo::read(&mut tx).await?;
    let figures = Figures {
        rows: copied,
        kept_rows,
        load_seconds,
        rows_per_second: copied as f64 / load_seconds.max(1e-9),
        constraints_seconds,
        index_seconds,
        analyze_seconds,
        build_workers: workers,
        table_bytes,
        index_bytes,
        server,
        notices: notices
            .iter()
            .filter(|n| n.contains("maintenance_work_mem"))
            .cloned()
            .collect(),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {target}.traces; \
         ALTER TABLE {LOAD_SCHEMA}.traces SET SCHEMA {target}; \
         DROP SCHEMA {LOAD_SCHEMA}; \
         SET LOCAL search_path TO {target};"
    )))
    .execute(&mut *tx)
    .await
    .context("swapping the new traces table in")?;
    // From now on every change to the dataset's rows is logged; the new dataset has none.
    sqlx::raw_sql(schema::section("dataset_guard")?)
        .execute(&mut *tx)
        .await
        .context("the dataset's change log (setup/schema.sql, section dataset_guard)")?;
    sqlx::raw_sql("DELETE FROM capacity_changes")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO capacity_meta (id, fingerprint, params, figures, loaded_at) VALUES (1, $1, $2, $3, now())
         ON CONFLICT (id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, params = EXCLUDED.params,
             figures = EXCLUDED.figures, loaded_at = EXCLUDED.loaded_at",
    )
    .bind(fingerprint)
    .bind(dataset::fingerprint_params(params, &config.index))
    .bind(serde_json::to_value(&figures)?)
    .execute(&mut *tx)
    .await
    .context("recording the fingerprint in capacity_meta")?;
    tx.commit().await.context("committing the new dataset")?;
    Ok(figures)
}
