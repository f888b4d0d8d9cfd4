//! Setup against real PostgreSQL+pgvector: binary COPY round trip, index, idempotence, rebuilds,
//! atomicity under interruption, and the errors for bad databases. Each test has a database of its own.

mod common;

use std::time::Duration;

use capbench::config::IndexParams;
use capbench::dataset::Dataset;
use capbench::db::{self, index, schema, search};
use capbench::setup::{LoadOptions, Outcome, ensure_dataset};
use pgvector::Vector;

fn index_params(m: u32, ef_construction: u32) -> IndexParams {
    IndexParams {
        m,
        ef_construction,
        build_workers: Some(1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_copy_round_trip_is_bit_exact() {
    let cfg = common::config(common::small_params(300, 1536), index_params(8, 32));
    let (cfg, url) = common::fresh_database("round_trip", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("setup");

    let dataset = Dataset::new(cfg.dataset.clone());
    let mut conn = db::connect(&url).await.unwrap();
    let rows: Vec<(uuid::Uuid, String, Vector, String, f64, i32, bool)> = sqlx::query_as(
        "SELECT id, title, embedding, status, trust_score, confirmation_count, is_seed FROM traces ORDER BY created_at",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows.len(), 300);
    for (i, (id, title, embedding, status, trust, confirmations, is_seed)) in
        rows.into_iter().enumerate()
    {
        let expected = dataset.row(i as u64);
        assert_eq!(id, expected.id);
        assert_eq!(title, expected.title);
        let got: Vec<u32> = embedding.as_slice().iter().map(|x| x.to_bits()).collect();
        let want: Vec<u32> = expected.embedding.iter().map(|x| x.to_bits()).collect();
        assert_eq!(
            got, want,
            "row {i}: the vector read back differs from the generated f32 values"
        );
        assert_eq!(
            (status.as_str(), trust, confirmations, is_seed),
            ("validated", 1.0, 2, true)
        );
    }
    let contributor: String = sqlx::query_scalar(
        "SELECT DISTINCT u.email FROM traces t JOIN users u ON u.id = t.contributor_id",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(contributor, capbench::dataset::CONTRIBUTOR_EMAIL);
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_builds_index_is_idempotent_and_rebuilds_on_change() {
    let cfg = common::config(common::small_params(2000, 64), index_params(8, 32));
    let (cfg, url) = common::fresh_database("setup", cfg).await;

    let first = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("first setup");
    let Outcome::Built {
        fingerprint,
        figures,
    } = first
    else {
        panic!("first run must build")
    };
    assert_eq!(figures.rows, 2000);

    let mut conn = db::connect(&url).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM traces")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 2000);
    let info = index::info(&mut conn, "traces")
        .await
        .unwrap()
        .expect("an HNSW index on traces");
    assert_eq!(info.name, schema::HNSW_INDEX);
    assert_eq!(
        (info.method.as_str(), info.opclass.as_str()),
        ("hnsw", "vector_cosine_ops")
    );
    assert_eq!((info.m, info.ef_construction), (Some(8), Some(32)));
    assert!(info.valid);
    let leftover: bool = sqlx::query_scalar("SELECT to_regnamespace('capbench_load') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!leftover, "the load schema must be gone after the swap");

    // The search query (the one in db::search) uses the HNSW index.
    let query = Vector::from(Dataset::new(cfg.dataset.clone()).vector(5));
    let plan = search::explain(&mut conn, &query, 10).await.unwrap();
    assert!(
        search::plan_uses_index(&plan, schema::HNSW_INDEX),
        "plan does not use the index: {plan:?}"
    );
    let hits = search::search(&mut conn, &query, 10).await.unwrap();
    assert_eq!(hits.len(), 10);
    assert!(
        hits[0].distance < 1e-6,
        "row 5 itself should be its own nearest neighbour: {:?}",
        hits[0]
    );

    // Same parameters: a no-op.
    let again = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("second setup");
    assert!(
        matches!(&again, Outcome::Unchanged { fingerprint: f, rows: 2000 } if *f == fingerprint),
        "re-run with the same parameters must do nothing, got {again:?}"
    );
    let loaded_at_1: String = sqlx::query_scalar("SELECT loaded_at::text FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();

    // Another index parameter: rebuilt, new fingerprint, the index has the new m.
    let mut changed = cfg.clone();
    changed.index = index_params(12, 40);
    let rebuilt = ensure_dataset(&changed, &url, &LoadOptions::default())
        .await
        .expect("rebuild");
    let Outcome::Built {
        fingerprint: f2, ..
    } = rebuilt
    else {
        panic!("a changed parameter must rebuild")
    };
    assert_ne!(f2, fingerprint);
    let info = index::info(&mut conn, "traces").await.unwrap().unwrap();
    assert_eq!((info.m, info.ef_construction), (Some(12), Some(40)));
    let stored: String = sqlx::query_scalar("SELECT fingerprint FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, f2);

    // --force rebuilds even when nothing changed.
    let forced = ensure_dataset(
        &changed,
        &url,
        &LoadOptions {
            force: true,
            ..LoadOptions::default()
        },
    )
    .await
    .expect("forced rebuild");
    assert!(matches!(forced, Outcome::Built { .. }));
    let loaded_at_2: String = sqlx::query_scalar("SELECT loaded_at::text FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_ne!(loaded_at_1, loaded_at_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_load_leaves_the_previous_dataset_untouched() {
    let cfg = common::config(common::small_params(500, 256), index_params(8, 32));
    let (cfg, url) = common::fresh_database("interrupted", cfg).await;
    let Outcome::Built {
        fingerprint: original,
        ..
    } = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("initial setup")
    else {
        panic!("first run must build")
    };

    // A bigger, different dataset whose load we kill mid-COPY (as a crash or lost connection would).
    let mut bigger = cfg.clone();
    bigger.dataset.rows = 200_000;
    bigger.dataset.seed = 7;
    let load = tokio::spawn({
        let url = url.clone();
        async move { ensure_dataset(&bigger, &url, &LoadOptions::default()).await }
    });
    let mut monitor = db::connect(&url).await.unwrap();
    let mut killed = false;
    for _ in 0..600 {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_progress_copy WHERE datname = current_database() AND tuples_processed > 0",
        )
        .fetch_optional(&mut monitor)
        .await
        .unwrap();
        if let Some(pid) = pid {
            killed = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut monitor)
                .await
                .unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(killed, "the COPY was never seen in progress");
    let result = load.await.unwrap();
    assert!(
        result.is_err(),
        "a load whose connection was killed must fail"
    );

    let (fingerprint, rows, staging): (String, i64, bool) = sqlx::query_as(
        "SELECT (SELECT fingerprint FROM capacity_meta), (SELECT count(*) FROM traces),
                to_regnamespace('capbench_load') IS NOT NULL",
    )
    .fetch_one(&mut monitor)
    .await
    .unwrap();
    assert_eq!(
        fingerprint, original,
        "the fingerprint must still be the previous dataset's"
    );
    assert_eq!(rows, 500, "the previous traces table must be intact");
    assert!(!staging, "no half-loaded table may remain");

    // And the next run carries on from the intact state: same parameters, nothing to do.
    let next = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    assert!(matches!(next, Outcome::Unchanged { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_table_of_another_dimension_is_refused_without_force() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("dims", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("setup with 8 dims");

    let mut other = cfg.clone();
    other.dataset.dims = 16;
    let err = ensure_dataset(&other, &url, &LoadOptions::default())
        .await
        .expect_err("16 dims over 8 must fail");
    let msg = capbench::one_line(&err);
    assert!(
        msg.contains("vector(8)") && msg.contains("--dims 16") && msg.contains("--force"),
        "{msg}"
    );

    let forced = ensure_dataset(
        &other,
        &url,
        &LoadOptions {
            force: true,
            ..LoadOptions::default()
        },
    )
    .await;
    assert!(
        matches!(forced, Ok(Outcome::Built { .. })),
        "--force must rebuild: {forced:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traces_table_capbench_did_not_create_is_never_replaced_silently() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("foreign", cfg).await;
    let mut conn = db::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE traces (id int PRIMARY KEY, note text); INSERT INTO traces VALUES (1, 'precious')")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect_err("must refuse");
    assert!(
        capbench::one_line(&err).contains("capbench did not load"),
        "{err:#}"
    );
    let note: String = sqlx::query_scalar("SELECT note FROM traces")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(note, "precious");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_without_pgvector_is_reported() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("no_pgvector", cfg).await;
    // A real server on which no extension can be found (PostgreSQL 18's extension_control_path).
    let hidden = format!("{url}?options=-c%20extension_control_path%3D%2Fnonexistent");
    let err = ensure_dataset(&cfg, &hidden, &LoadOptions::default())
        .await
        .expect_err("must fail");
    let msg = capbench::one_line(&err);
    assert!(msg.contains("has no pgvector extension"), "{msg}");
    assert!(
        msg.contains("install pgvector"),
        "the error must say what to do: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pgvector_older_than_hnsw_is_reported() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("old_pgvector", cfg).await;
    let mut conn = db::connect(&url).await.unwrap();
    // The state a server is in when pgvector 0.4 was created and the package upgraded since:
    // the catalog still says 0.4.4 until ALTER EXTENSION … UPDATE.
    sqlx::raw_sql("CREATE EXTENSION vector; UPDATE pg_extension SET extversion = '0.4.4' WHERE extname = 'vector'")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect_err("must fail");
    let msg = capbench::one_line(&err);
    assert!(
        msg.contains("pgvector 0.4.4") && msg.contains("no HNSW"),
        "{msg}"
    );
    assert!(msg.contains("ALTER EXTENSION vector UPDATE"), "{msg}");
}
