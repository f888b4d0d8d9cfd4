//! The write benches' table on real PostgreSQL+pgvector: a copy of the dataset with only the HNSW
//! index, built once per fingerprint; rows the write benches add are marked, and restoring the copy
//! removes exactly those, never a row of the dataset or of `public.traces`.

use capbench::config::IndexParams;
use capbench::db::{self, writes};
use capbench::setup::{LoadOptions, ensure_dataset};

use crate::common;

#[tokio::test(flavor = "multi_thread")]
async fn the_write_table_is_built_once_and_restoring_it_removes_only_the_marked_rows() {
    let cfg = common::config(common::small_params(2_000, 32), IndexParams::default());
    let (cfg, url) = common::fresh_database("writes", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let mut conn = db::connect(&url).await.unwrap();
    let fp: String = sqlx::query_scalar("SELECT fingerprint FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let first = writes::ensure(&mut conn, &cfg, &fp, 2_000).await.unwrap();
    assert!(first.built_now && first.rows == 2_000 && first.restored.is_none());
    // Only the production shape: key, tags, HNSW — no variant index.
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'capbench_writes' \
         AND tablename = 'traces' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        ["ix_traces_embedding_hnsw", "ix_traces_tags", "traces_pkey"]
    );

    // A write bench's rows: marked with its contributor, on the copy only.
    let writer = writes::writer(&mut conn).await.unwrap();
    assert_eq!(writes::writer(&mut conn).await.unwrap(), writer);
    let mut w = writes::session(&url).await.unwrap();
    let added = sqlx::query(
        "INSERT INTO traces (id, title, context_text, solution_text, embedding, contributor_id)
         SELECT gen_random_uuid(), 'written', '', '', embedding, $1 FROM traces LIMIT 50",
    )
    .bind(writer)
    .execute(&mut w)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(added, 50);
    assert_eq!(writes::written_rows(&mut conn).await.unwrap(), 50);
    let public: i64 = sqlx::query_scalar("SELECT count(*) FROM public.traces")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(public, 2_000, "public.traces is never written");

    // The next run finds the same copy, removes what was left and says how much.
    let again = writes::ensure(&mut conn, &cfg, &fp, 2_000).await.unwrap();
    assert!(!again.built_now);
    assert_eq!(again.build_seconds, first.build_seconds);
    assert_eq!(again.restored.map(|r| r.rows), Some(50));
    assert_eq!(writes::written_rows(&mut conn).await.unwrap(), 0);
    assert_eq!(writes::dataset_rows(&mut conn).await.unwrap(), 2_000);
    // Nothing left: no VACUUM.
    assert_eq!(writes::restore(&mut conn).await.unwrap().rows, 0);

    // Another dataset's fingerprint rebuilds it; a schema of that name capbench did not make is refused.
    let other = writes::ensure(&mut conn, &cfg, "another", 2_000)
        .await
        .unwrap();
    assert!(other.built_now);
    sqlx::raw_sql("DROP SCHEMA capbench_writes CASCADE; CREATE SCHEMA capbench_writes")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = capbench::one_line(
        &writes::ensure(&mut conn, &cfg, &fp, 2_000)
            .await
            .unwrap_err(),
    );
    assert!(err.contains("capbench did not make"), "{err}");
}
