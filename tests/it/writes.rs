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
    // The graph went through 50 inserts and deletes: rebuilt before the run, as fresh as built.
    assert_eq!(again.reindexed.map(|r| r.0), Some(Some(50)));
    // Nothing left: no VACUUM, and a fresh graph is kept.
    assert_eq!(writes::restore(&mut conn).await.unwrap().rows, 0);
    let third = writes::ensure(&mut conn, &cfg, &fp, 2_000).await.unwrap();
    assert_eq!((third.restored, third.reindexed), (None, None));
    assert!(is_valid_hnsw(&mut conn).await, "the rebuilt index is whole");

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

/// `cargo bench hnsw_insert`'s measurements on a small dataset: every point writes its rows (into
/// the indexed copy or the table without HNSW), pgbench runs the same INSERT, and afterwards the
/// copy holds exactly the dataset again, the rows written deleted and VACUUMed.
#[tokio::test(flavor = "multi_thread")]
async fn the_insert_bench_writes_every_point_and_restores_the_copy() {
    use capbench::bench::hnsw_insert::{self, Method, Target};
    let mut cfg = common::config(common::small_params(2_000, 32), IndexParams::default());
    cfg.bench.quick = true;
    cfg.bench.compare = true;
    cfg.bench.insert_writers = vec![1, 2];
    let (cfg, url) = common::fresh_database("hnsw_insert", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let args: Vec<String> = ["bench", "hnsw_insert"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let points = hnsw_insert::plan(&capbench::bench::BenchArgs::parse(&args).unwrap(), &cfg);
    assert_eq!(points.len(), 12);
    let (o, table) = hnsw_insert::execute(&cfg, &url, &points).await.unwrap();
    assert!(table.built_now);
    // The unindexed twin is the write table less HNSW: key, tags index and foreign key kept.
    let mut conn = db::connect(&url).await.unwrap();
    hnsw_insert::unindexed_table(&mut conn).await.unwrap();
    let methods: Vec<String> = sqlx::query_scalar(
        "SELECT am.amname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_am am ON am.oid = c.relam \
         WHERE i.indrelid = 'capbench_writes.traces_unindexed'::regclass ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(methods, ["btree", "gin"]);
    let keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint \
         WHERE conrelid = 'capbench_writes.traces_unindexed'::regclass AND contype = 'f'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(keys, 1, "the contributor's foreign key");
    sqlx::raw_sql("DROP TABLE capbench_writes.traces_unindexed")
        .execute(&mut conn)
        .await
        .unwrap();
    let (single, batch) = hnsw_insert::rows_per_point(true);
    for p in &o.passes {
        let want = if p.point.method == Method::Insert {
            single
        } else {
            batch
        };
        assert_eq!(p.rows, want, "{}: every row written", p.point.id());
        let statements = want.div_ceil(p.point.method.rows_per_statement());
        assert_eq!(
            p.histogram.len() as usize,
            statements,
            "{}: one latency per statement",
            p.point.id()
        );
        assert!(p.vectors_per_second() > 0.0);
    }
    // What the indexed points wrote, plus pgbench's and capbench's rounds of the comparison, were
    // committed into the copy; the unindexed table's rows were not.
    let indexed: usize = o
        .passes
        .iter()
        .filter(|p| p.point.target == Target::Indexed)
        .map(|p| p.rows)
        .sum();
    let c = o.passes[0]
        .pgbench
        .expect("compared at insert/indexed/writers=1");
    assert!(
        c.rounds == 3 && c.theirs_ms > 0.0 && c.ours_ms > 0.0,
        "{c:?}"
    );
    assert!(
        o.written > indexed as u64,
        "the comparison's inserts are in the copy too: {} written, {indexed} by the points",
        o.written
    );
    assert_eq!(
        o.restored.rows, o.written,
        "restoring deletes exactly what was written"
    );
    assert!(o.restored.vacuum_seconds > 0.0);
    assert_eq!(o.dataset_rows, 2_000);
    // A server of its own URL: the server-side COPY is not attempted, and the record says why.
    assert!(o.copy_floor.is_none());
    assert!(
        o.skipped.iter().any(|s| s.contains("server-side COPY")),
        "{:?}",
        o.skipped
    );
    let mut conn = db::connect(&url).await.unwrap();
    assert_eq!(writes::written_rows(&mut conn).await.unwrap(), 0);
    let unindexed: bool =
        sqlx::query_scalar("SELECT to_regclass('capbench_writes.traces_unindexed') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!unindexed, "the table without the index is dropped");
}

/// `cargo bench streaming` on a small dataset: searches run through every phase and are scored
/// against the table as it stood — the stages insert exactly their rows, the deletes and the
/// re-embeddings change only rows the bench inserted, the VACUUMs are timed — and afterwards the
/// copy holds exactly the dataset again.
#[tokio::test(flavor = "multi_thread")]
async fn the_streaming_bench_searches_through_every_phase_and_restores_the_copy() {
    use capbench::bench::streaming::{self, Phase, Plan};
    let mut cfg = common::config(common::small_params(2_000, 32), IndexParams::default());
    cfg.bench.quick = true;
    cfg.bench.stream_stages = vec![10.0, 50.0];
    cfg.bench.stream_insert_rate = Some(400);
    let (cfg, url) = common::fresh_database("streaming", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let plan = Plan::of(&cfg).unwrap();
    let (o, table) = streaming::execute(&cfg, &url, &plan).await.unwrap();
    assert!(table.built_now);
    let ids: Vec<String> = o.phases.iter().map(|p| p.phase.id()).collect();
    assert_eq!(ids.len(), 12, "{ids:?}");
    let phase = |p: Phase| {
        o.phases
            .iter()
            .find(|x| x.phase == p)
            .unwrap_or_else(|| panic!("{p:?} ran"))
    };
    let (first, second) = (
        phase(Phase::Ingest { percent: 10.0 }),
        phase(Phase::Ingest { percent: 50.0 }),
    );
    assert_eq!(
        (first.changed, first.shortfall, first.table_rows),
        (200, 0, 2_200)
    );
    assert_eq!(
        (second.changed, second.shortfall, second.table_rows),
        (800, 0, 3_000)
    );
    assert_eq!(
        first.writes.as_ref().unwrap().len(),
        10,
        "one latency per INSERT: 200 rows, 20 per INSERT at 400 rows/s"
    );
    // 10 % and 5 % of the grown 3,000 rows, all of them rows the bench inserted.
    let deleting = phase(Phase::Deleting);
    assert_eq!((deleting.changed, deleting.table_rows), (300, 2_700));
    assert_eq!(phase(Phase::Updating).changed, 150);
    assert_eq!(phase(Phase::UpdateVacuumed).table_rows, 2_700);
    for p in [Phase::Vacuum, Phase::UpdateVacuum] {
        assert!(phase(p).vacuum_seconds.unwrap() > 0.0);
    }
    // Every phase that lasts a window searched, each search scored against the exact top-k of the
    // table as it stood (a truth that kept the deleted or the replaced vectors would miss here).
    for p in &o.phases {
        if p.seconds >= plan.window.as_secs_f64() {
            let s = &p.searches;
            assert!(s.scored > 0 && s.failures == 0, "{}: {s:?}", p.phase.id());
            let r = s.recall_mean().unwrap();
            assert!(r >= 0.9, "{}: recall {r}", p.phase.id());
        }
    }
    assert_eq!(
        o.queries, 120,
        "as many queries as a window sends: 3 s × 40/s"
    );
    assert!(!o.timeline.is_empty());
    // Restored: what remains of the bench's rows deleted, the copy the dataset again.
    assert_eq!(o.restored.rows, 700);
    assert_eq!(o.dataset_rows, 2_000);
    assert_copy_restored(&url, 2_000).await;
}

/// A read/write load on the database target: INSERTs at their own rate beside the open model's
/// searches, every one on the write table; each search scored against the table as it stood when
/// it was sent, so that an exact search scores 1 while the table grows — a truth that counted a row
/// before its INSERT committed would score a miss (the merge itself is checked against brute force
/// in `db::truth`'s unit tests); the rows' rate as a threshold; the copy restored and checked, the
/// dataset untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_write_load_on_the_database_writes_at_its_rate_and_restores_the_copy() {
    let cfg = common::config(common::small_params(2_000, 32), IndexParams::default());
    let (cfg, url) = common::fresh_database("load_writes", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let out = capbench::load::run(
        common::load_args(&[
            "--target",
            &url,
            "--rate",
            "40",
            "--write-rate",
            "100/s",
            "--write-batch",
            "5",
            "--writers",
            "2",
            "--run-time",
            "3s",
            "--recall",
            "--queries",
            "40",
            // ef_search at its bound over 2,300 rows: the HNSW search is exact.
            "--search-ef-search",
            "1000",
            "--threshold",
            "vectors_per_s[insert_sql]>1",
            "--threshold",
            "vectors_per_s>100000",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let (_, done) = &out.finished[0];
    let inserts = done.stats.entry("insert_sql").unwrap();
    // 100 rows/s in fives for 3 s: statements due at 0, 0.05, … 2.95 s — 60 of them, all sent.
    assert_eq!((inserts.requests, inserts.failures), (60, 0));
    assert_eq!(inserts.rows, 300);
    let searches = done.stats.entry("search_sql").unwrap();
    assert!(searches.requests >= 100 && searches.failures == 0);
    assert_eq!(searches.rows, 0, "a search adds nothing");
    assert_eq!(searches.recall.scored, searches.requests);
    let recall = searches.recall.mean().unwrap();
    assert!(
        recall >= 0.99,
        "an exact search scored against the growing table: {recall}"
    );
    assert!(
        searches.recall.min().unwrap() >= 0.9,
        "no answer scored as missing rows it could not see"
    );
    // The rate as a gate: met at 1/s, not at 100,000/s (the Aggregated figure counts the rows too).
    let verdicts: Vec<bool> = out.verdicts.iter().map(|v| v.pass).collect();
    assert_eq!(verdicts, [true, false]);
    assert!(!out.passed());
    // The record: the writes' parameters, per-name series, the restore.
    let capbench::record::Parameters::Load(p) = &out.record.parameters else {
        panic!("a load record")
    };
    assert_eq!(
        (p.write_rate, p.write_batch, p.writers, p.write_table),
        (Some(100.0), Some(5), Some(2), true)
    );
    let entry = |name: &str| common::entry(&out.record, name);
    let ins = entry("load/insert_sql");
    assert_eq!(
        ins.metric(&capbench::record::Metric::ChangedRows),
        Some(300.0)
    );
    let rows = &ins.series["table_rows"];
    assert_eq!(rows.first().map(|p| p.1), Some(2_000.0));
    assert!(rows.iter().all(|p| p.1 <= 2_300.0));
    assert!(
        entry("load/search_sql")
            .series
            .get("recall_per_second")
            .is_some_and(|s| !s.is_empty())
    );
    let restore = entry("load/write_table/restore");
    assert_eq!(
        restore.metric(&capbench::record::Metric::ChangedRows),
        Some(300.0)
    );
    assert_copy_restored(&url, 2_000).await;
}

/// A read/write load through the in-process service: searchers and writers (`search:3,write:1`,
/// closed model), each 201 one row, the writes taken from the write bucket; the service runs on
/// the write table, so the dataset and `public.traces` never change, and the rows the run added
/// are removed after it — exactly as many as were written.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_write_load_through_the_service_writes_on_the_copy_only() {
    let cfg = common::service_config();
    let (cfg, url) = common::fresh_database("load_writes_http", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let redis = common::redis_url().await;
    let dataset = format!(
        "--rows={} --dims={} --clusters={} --seed={} --m={} --ef-construction={} --build-workers=1",
        cfg.dataset.rows,
        cfg.dataset.dims,
        cfg.dataset.clusters,
        cfg.dataset.seed,
        cfg.index.m,
        cfg.index.ef_construction
    );
    let mut argv: Vec<&str> = vec![
        "--database-url",
        &url,
        "--redis-url",
        &redis,
        "--scenario",
        "search:3,write:1",
        "--users",
        "4",
        "--run-time",
        "3s",
        "-q",
    ];
    argv.extend(dataset.split(' '));
    let out = capbench::load::run(common::load_args(&argv), None)
        .await
        .unwrap();
    let (_, done) = &out.finished[0];
    let w = done.stats.entry("/api/v1/traces").unwrap();
    let created = w.statuses.get(&201).copied().unwrap_or(0);
    assert!(created >= 2, "one writer, 1 s apart, for 3 s: {created}");
    assert_eq!(w.failures, 0, "the capacity write limit: no 429");
    assert_eq!(w.rows, created, "each 201 is one row");
    let s = done.stats.entry("/api/v1/traces/search").unwrap();
    assert!(s.requests > 0 && s.failures == 0 && s.rows == 0);
    let entry = |name: &str| common::entry(&out.record, name);
    assert_eq!(
        entry("load/write_table/restore").metric(&capbench::record::Metric::ChangedRows),
        Some(created as f64)
    );
    // The table's rows over time: from the copy's 600, one more per 201.
    let rows = &entry("load//api/v1/traces").series["table_rows"];
    assert_eq!(rows.first().map(|p| p.1), Some(600.0));
    assert!(rows.iter().all(|p| p.1 <= 600.0 + created as f64));
    assert_copy_restored(&url, 600).await;
}

/// `--write-rate` is the database target's: an HTTP target, a sweep, or its shape without it are
/// one line each, before anything starts.
#[tokio::test(flavor = "multi_thread")]
async fn write_rate_mistakes_are_one_line_before_anything_starts() {
    for (argv, want) in [
        (
            vec!["--target", "http://127.0.0.1:1", "--write-rate", "50"],
            "against an HTTP API writes are a scenario's requests",
        ),
        (
            vec![
                "--target",
                "postgres://x@127.0.0.1:1/x",
                "--write-rate",
                "50",
                "--sweep",
                "1,2",
            ],
            "--write-rate and --sweep do not combine",
        ),
        (
            vec!["--target", "postgres://x@127.0.0.1:1/x", "--writers", "2"],
            "give it too",
        ),
    ] {
        let e = capbench::load::run(common::load_args(&argv), None)
            .await
            .unwrap_err();
        let line = capbench::one_line(&e);
        assert!(line.contains(want), "{argv:?}: {line}");
    }
}

/// Whether the write table's HNSW index exists and is valid.
async fn is_valid_hnsw(conn: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT indisvalid FROM pg_index \
         WHERE indexrelid = to_regclass('capbench_writes.ix_traces_embedding_hnsw')), false)",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// The write table holds the dataset's `rows` again and nothing added, and `public.traces` still
/// its `rows`: a run that wrote never touched the dataset.
async fn assert_copy_restored(url: &str, rows: u64) {
    let mut conn = db::connect(url).await.unwrap();
    assert_eq!(writes::written_rows(&mut conn).await.unwrap(), 0);
    assert_eq!(writes::dataset_rows(&mut conn).await.unwrap(), rows);
    let public: i64 = sqlx::query_scalar("SELECT count(*) FROM public.traces")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(public as u64, rows, "public.traces is never written");
}
