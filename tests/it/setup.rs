//! Setup against real PostgreSQL+pgvector: binary COPY round trip, index, idempotence, rebuilds,
//! atomicity under interruption, and the errors for bad databases. Each test has a database of its own.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbench::config::{Config, IndexParams};
use capbench::dataset::Dataset;
use capbench::db::{self, index, schema, search};
use capbench::setup::{DatasetChange, LoadOptions, ensure_dataset};
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
    let DatasetChange::Built {
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
        matches!(&again, DatasetChange::Unchanged { fingerprint: f, rows: 2000 } if *f == fingerprint),
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
    let DatasetChange::Built {
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
    assert!(matches!(forced, DatasetChange::Built { .. }));
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
    let DatasetChange::Built {
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
    assert!(matches!(next, DatasetChange::Unchanged { .. }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dataset_of_another_dimension_is_rebuilt_when_no_row_would_be_lost() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("dims", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("setup with 8 dims");

    // Only capbench's own rows are in the table: another dimension is just another dataset.
    let mut other = cfg.clone();
    other.dataset.dims = 16;
    let rebuilt = ensure_dataset(&other, &url, &LoadOptions::default()).await;
    assert!(
        matches!(rebuilt, Ok(DatasetChange::Built { .. })),
        "16 dims over a table holding only capbench's rows must rebuild: {rebuilt:?}"
    );
    let mut conn = db::connect(&url).await.unwrap();
    let dims: i32 = sqlx::query_scalar(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = 'traces'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(dims, 16);
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
    let extensions_before: Vec<String> =
        sqlx::query_scalar("SELECT extname::text FROM pg_extension ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let err = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect_err("must refuse");
    let msg = capbench::one_line(&err);
    assert!(
        msg.contains("capbench did not load") && msg.contains("1 row") && msg.contains("--force"),
        "{msg}"
    );
    let note: String = sqlx::query_scalar("SELECT note FROM traces")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(note, "precious");

    // Refused means untouched: no table and no extension of capbench's was created.
    let created: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class
         WHERE relname IN ('users', 'api_keys', 'capacity_meta', 'capacity_query_vectors', 'capacity_truth') ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        created,
        Vec::<String>::new(),
        "a refused setup created tables"
    );
    let extensions_after: Vec<String> =
        sqlx::query_scalar("SELECT extname::text FROM pg_extension ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        extensions_after, extensions_before,
        "a refused setup created an extension"
    );

    // --force replaces it; a foreign table put in place of capbench's later is refused again
    // (capacity_meta is there, but the table is not capbench's).
    ensure_dataset(
        &cfg,
        &url,
        &LoadOptions {
            force: true,
            ..LoadOptions::default()
        },
    )
    .await
    .expect("--force replaces the foreign table");
    sqlx::raw_sql("DROP TABLE traces; CREATE TABLE traces (id int PRIMARY KEY, note text); INSERT INTO traces VALUES (2, 'mine')")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect_err("must refuse");
    let msg = capbench::one_line(&err);
    assert!(
        msg.contains("capbench did not load") && msg.contains("not capbench's columns"),
        "{msg}"
    );
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

// ---------------------------------------------------------------------------------------------
// Rows capbench did not create (issue #11, item 1)

/// Inserts a trace as `POST /api/v1/traces` does (status 'pending', a key's user as contributor)
/// with a one-hot embedding; returns its id.
async fn insert_trace_as_another_user(conn: &mut sqlx::PgConnection, dims: u32) -> uuid::Uuid {
    let user: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (id, email, display_name) VALUES (gen_random_uuid(), 'someone@example.com', 'Someone')
         RETURNING id",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO traces (id, title, context_text, solution_text, embedding, embedding_model_id, status, contributor_id)
         VALUES (gen_random_uuid(), 'written through the API', 'context', 'solution', $1, $2, 'pending', $3)
         RETURNING id",
    )
    .bind(one_hot(dims))
    .bind(capbench::dataset::EMBEDDING_MODEL_ID)
    .bind(user)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

fn one_hot(dims: u32) -> Vector {
    let mut v = vec![0f32; dims as usize];
    v[0] = 1.0;
    Vector::from(v)
}

async fn trace_exists(conn: &mut sqlx::PgConnection, id: uuid::Uuid) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM traces WHERE id = $1)")
        .bind(id)
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_written_by_another_user_survive_reruns_and_rebuilds() {
    let cfg = common::config(common::small_params(200, 16), index_params(8, 32));
    let (cfg, url) = common::fresh_database("others_survive", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("first setup");
    let mut conn = db::connect(&url).await.unwrap();
    let id = insert_trace_as_another_user(&mut conn, 16).await;

    // The same parameters: the dataset is complete, the other row is no reason to rebuild.
    let again = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("re-run");
    assert!(
        matches!(again, DatasetChange::Unchanged { rows: 200, .. }),
        "a row written by another user must not trigger a rebuild: {again:?}"
    );
    assert!(trace_exists(&mut conn, id).await, "re-run deleted the row");

    // Other parameters, then --force: rebuilt, and the row is carried into the new table each time.
    let mut changed = cfg.clone();
    changed.index = index_params(12, 40);
    for force in [false, true] {
        let opts = LoadOptions {
            force,
            ..LoadOptions::default()
        };
        let DatasetChange::Built { figures, .. } = ensure_dataset(&changed, &url, &opts)
            .await
            .expect("rebuild")
        else {
            panic!("a change of parameters (or --force) must rebuild")
        };
        assert_eq!((figures.rows, figures.kept_rows), (200, 1));
        assert!(
            trace_exists(&mut conn, id).await,
            "a rebuild (force: {force}) deleted the row"
        );
        let (count, status): (i64, String) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM traces), (SELECT status FROM traces WHERE id = $1)",
        )
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!((count, status.as_str()), (201, "pending"));
    }

    // The carried row is in the new HNSW index: an index scan finds it as its own neighbour.
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::raw_sql("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let nearest: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM traces ORDER BY embedding <=> $1 LIMIT 1")
            .bind(one_hot(16))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(nearest, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_posted_through_the_service_survives_the_next_start_and_a_rebuild() {
    let (svc, cfg) = common::start_service("api_trace_survives", |_| {}).await;
    let url = cfg.servers.database_url.clone().expect("the test database");
    let (client, base) = (reqwest::Client::new(), svc.url());
    let resp = client
        .post(format!("{base}/api/v1/keys"))
        .json(&serde_json::json!({"email": "writer@test.invalid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    let key = body["api_key"].as_str().expect("api_key").to_string();
    let resp = client
        .post(format!("{base}/api/v1/traces"))
        .header("X-API-Key", &key)
        .json(&serde_json::json!({"title": "posted through the API", "context_text": "c", "solution_text": "s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    svc.stop().await.unwrap();

    let mut conn = db::connect(&url).await.unwrap();
    let posted = "SELECT count(*) FROM traces WHERE title = 'posted through the API'";
    // What serve, load and the benches do when they start: the dataset is there, nothing to do.
    let next = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("the next start");
    assert!(matches!(next, DatasetChange::Unchanged { .. }), "{next:?}");
    let n: i64 = sqlx::query_scalar(posted)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "the next start deleted the posted trace");
    // And a rebuild for other parameters carries it over.
    let mut changed = cfg.clone();
    changed.index.m = 12;
    ensure_dataset(&changed, &url, &LoadOptions::default())
        .await
        .expect("rebuild");
    let n: i64 = sqlx::query_scalar(posted)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1, "the rebuild deleted the posted trace");
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_that_cannot_move_to_another_dimension_are_refused_and_force_names_them() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("others_dims", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("setup with 8 dims");
    let mut conn = db::connect(&url).await.unwrap();
    let id = insert_trace_as_another_user(&mut conn, 8).await;

    let sixteen = [
        "--rows",
        "100",
        "--dims",
        "16",
        "--clusters",
        "50",
        "--m",
        "8",
        "--ef-construction",
        "32",
        "--build-workers",
        "1",
        "--queries",
        "10",
    ];
    let refused = setup_bin(&url).args(sixteen).output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    let line = only_error_line(&err);
    assert!(
        line.contains("1 row")
            && line.contains("vector(8)")
            && line.contains("--dims 8")
            && line.contains("--force"),
        "{line}"
    );
    assert!(
        trace_exists(&mut conn, id).await,
        "a refusal deleted the row"
    );

    let forced = setup_bin(&url)
        .args(sixteen)
        .arg("--force")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&forced.stderr);
    assert_eq!(forced.status.code(), Some(0), "{err}");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("deleting")).collect();
    assert_eq!(
        said.len(),
        1,
        "one line must say what --force deletes: {err}"
    );
    assert!(
        said[0].contains("1 row") && said[0].contains("vector(8)"),
        "{}",
        said[0]
    );
    assert!(!trace_exists(&mut conn, id).await);
}

// ---------------------------------------------------------------------------------------------
// The setup binary: hangs, interruptions, locks, Redis, boolean variables (issue #11)

/// The real `setup` binary on the database of `url`, with no variable of the test's environment
/// that would change what it does.
fn setup_bin(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_setup"));
    for var in [
        "REDIS_URL",
        "CAPBENCH_FORCE",
        "CAPBENCH_QUICK",
        "CAPBENCH_COMPARE",
        "CAPBENCH_ROWS",
        "CAPBENCH_DIMS",
        "CAPBENCH_CONNECT_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("DATABASE_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The one `error: …` line of a failed run's stderr.
fn only_error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line: {stderr}");
    errors[0].to_string()
}

/// Waits for `child` at most `limit`; kills it (and fails) when it is still running.
fn wait_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("setup was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of a child's stderr, as they come.
fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn interrupt(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

#[test]
fn setup_against_a_server_that_never_answers_times_out() {
    // Accepts TCP connections, keeps them open, never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let mut child = setup_bin(&format!("postgres://capbench@127.0.0.1:{port}/silent"))
        .env("CAPBENCH_CONNECT_TIMEOUT", "1s")
        .args(["--rows", "100", "--dims", "8"])
        .spawn()
        .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(15));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let line = only_error_line(&err);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("1s"),
        "the error must name the server and the timeout: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_the_index_build_cancels_it_on_the_server() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (_, url) = common::fresh_database("ctrl_c_index", cfg).await;
    let database = "capbench_test_ctrl_c_index";
    // Big enough for an index build of several seconds with one process.
    let mut child = setup_bin(&url)
        .args([
            "--rows",
            "20000",
            "--dims",
            "128",
            "--clusters",
            "100",
            "--m",
            "16",
            "--ef-construction",
            "128",
            "--build-workers",
            "0",
            "--queries",
            "10",
        ])
        .spawn()
        .unwrap();
    let mut monitor = db::connect(&url).await.unwrap();
    // The HNSW build (the statement is the schema file's section, which starts with a comment;
    // the base section's CREATE INDEX on api_keys is not it).
    let building = "SELECT count(*) FROM pg_stat_activity
                    WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()
                      AND query ILIKE '%CREATE INDEX%USING hnsw%'";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n: i64 = sqlx::query_scalar(building)
            .bind(database)
            .fetch_one(&mut monitor)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "setup ended before its index build was seen"
        );
        assert!(Instant::now() < deadline, "the index build never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    interrupt(&child);
    let status = wait_within(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));

    // The server stops building the abandoned index at once (not when the build would end).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n: i64 = sqlx::query_scalar(building)
            .bind(database)
            .fetch_one(&mut monitor)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a backend is still running CREATE INDEX for the interrupted setup"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_names_the_lock_it_waits_for() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("lock_wait", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("setup");
    // Another session holds the table, as an open transaction or a stuck setup would.
    let mut holder = db::connect(&url).await.unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE traces IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();

    let mut child = setup_bin(&url)
        .args([
            "--rows",
            "100",
            "--dims",
            "8",
            "--clusters",
            "50",
            "--m",
            "8",
            "--ef-construction",
            "32",
            "--build-workers",
            "1",
            "--queries",
            "10",
        ])
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("waiting for") => break line,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("setup waited silently on the lock");
            }
        }
    };
    assert!(
        said.contains("traces")
            && said.contains(&format!("pid {holder_pid}"))
            && said.contains("idle in transaction"),
        "{said}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "setup failed once the lock was free"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_url_fails_setup_before_the_database_is_touched() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (_, url) = common::fresh_database("redis_down", cfg).await;
    let port = common::free_port();
    let out = setup_bin(&url)
        .env(
            "REDIS_URL",
            format!("redis://:hunter2-redis@127.0.0.1:{port}"),
        )
        .env("CAPBENCH_CONNECT_TIMEOUT", "2s")
        .args(["--rows", "100", "--dims", "8", "--clusters", "50"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = only_error_line(&err);
    assert!(
        line.contains("Redis") && line.contains(&format!("127.0.0.1:{port}")),
        "{line}"
    );
    assert!(
        !err.contains("hunter2-redis"),
        "the password was shown: {err}"
    );
    let mut conn = db::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname IN ('users', 'traces', 'capacity_meta')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0, "setup changed the database before failing");
}

#[test]
fn boolean_variables_take_only_booleans() {
    for (value, want) in [
        ("1", true),
        ("true", true),
        ("YES", true),
        ("on", true),
        ("0", false),
        ("false", false),
        ("No", false),
        ("off", false),
    ] {
        assert_eq!(capbench::config::parse_bool(value), Ok(want), "{value}");
    }
    for var in ["CAPBENCH_FORCE", "CAPBENCH_QUICK", "CAPBENCH_COMPARE"] {
        let out = setup_bin("postgres://capbench@127.0.0.1:1/never")
            .env(var, "maybe")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}=maybe: {err}");
        assert!(
            err.contains("maybe") && err.contains("true/false") && err.lines().count() == 1,
            "{var}=maybe: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Found by reading the code (issue #11, item 13)

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_the_row_generator_is_reported_as_a_panic() {
    let cfg = common::config(common::small_params(100, 8), index_params(8, 32));
    let (cfg, url) = common::fresh_database("generator_panic", cfg).await;
    let mut conn = db::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE EXTENSION vector; {}",
        schema::render("traces_table", 8, &cfg.index).unwrap()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    // Zero clusters: every row's `i % clusters` panics on the generator's threads.
    let broken = Dataset::new(capbench::config::DatasetParams {
        clusters: 0,
        ..cfg.dataset.clone()
    });
    let err = capbench::db::load::copy_dataset(
        &mut conn,
        "traces",
        Arc::new(broken),
        uuid::Uuid::new_v4(),
        10,
        |_| {},
    )
    .await
    .expect_err("a generator that panics must fail the COPY");
    let msg = capbench::one_line(&err);
    assert!(
        msg.contains("generator panicked") && msg.contains("divisor of zero"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_compare_copy_floor_removes_its_file() {
    // --compare-copy-floor works on the embedded stack only (its file goes to the data directory).
    let cfg = Config::from_env().unwrap();
    let file = cfg
        .servers
        .home
        .join("pg")
        .join("data")
        .join("capbench-copy-floor.bin");
    // A file left by an older build would be taken for this run's.
    let _ = std::fs::remove_file(&file);
    let mut child = setup_bin("")
        .env_remove("DATABASE_URL")
        // A database of its own: never the dataset a user (or the main job) loaded.
        .env("CAPBENCH_DATABASE", "capbench_test_copy_floor")
        .args([
            "--rows",
            "20000",
            "--dims",
            "128",
            "--clusters",
            "100",
            "--m",
            "8",
            "--ef-construction",
            "32",
            "--queries",
            "10",
            "--compare-copy-floor",
            "--repeat",
            "100",
        ])
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("timing binary COPY") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("setup never started --compare-copy-floor");
            }
        }
    }
    while !file.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "setup ended before writing {}",
            file.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&child);
    let status = wait_within(&mut child, Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    assert!(
        !file.exists(),
        "{} was left behind by the interrupted run",
        file.display()
    );
}

/// The setup binary on the 200 × 16 dataset of `restore`'s test (its parameters as variables).
fn setup_bin_small(url: &str) -> Command {
    let mut cmd = setup_bin(url);
    for (k, v) in [
        ("CAPBENCH_ROWS", "200"),
        ("CAPBENCH_DIMS", "16"),
        ("CAPBENCH_CLUSTERS", "50"),
        ("CAPBENCH_HNSW_M", "8"),
        ("CAPBENCH_EF_CONSTRUCTION", "32"),
        ("CAPBENCH_QUERIES", "50"),
    ] {
        cmd.env(k, v);
    }
    cmd
}

/// Writes to the dataset's own rows are logged; setup and the benches refuse the changed dataset
/// with the command that restores it; `setup --restore` rewrites exactly those rows from the
/// generator (no rebuild), keeping rows written by others and changes that are not the dataset's.
#[tokio::test(flavor = "multi_thread")]
async fn a_dataset_changed_by_writes_is_refused_and_restored_without_a_rebuild() {
    let cfg = common::config(common::small_params(200, 16), index_params(8, 32));
    let (mut cfg, url) = common::fresh_database("restore", cfg).await;
    cfg.bench.queries = 50;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let mut conn = db::connect(&url).await.unwrap();
    let d = Dataset::new(cfg.dataset.clone());
    let ids: Vec<uuid::Uuid> = (0..10).map(|i| d.row_id(i)).collect();
    let theirs = insert_trace_as_another_user(&mut conn, 16).await;
    // Not changes to the dataset: a trust score, and someone else's row.
    for (sql, id) in [
        ("UPDATE traces SET trust_score = 0.5 WHERE id = $1", ids[0]),
        (
            "UPDATE traces SET status = 'validated' WHERE id = $1",
            theirs,
        ),
    ] {
        sqlx::query(sql).bind(id).execute(&mut conn).await.unwrap();
    }
    assert_eq!(capbench::setup::changed_rows(&mut conn).await.unwrap(), 0);
    // Changes: three re-embedded, two flagged, four deleted (one statement each).
    sqlx::query("UPDATE traces SET embedding = $1 WHERE id = ANY($2)")
        .bind(one_hot(16))
        .bind(&ids[1..4])
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("UPDATE traces SET is_flagged = true WHERE id = ANY($1)")
        .bind(&ids[4..6])
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("DELETE FROM traces WHERE id = ANY($1)")
        .bind(&ids[6..10])
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(capbench::setup::changed_rows(&mut conn).await.unwrap(), 9);
    // The next start neither rebuilds it nor passes it as the dataset.
    let next = ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(next, DatasetChange::Unchanged { rows: 196, .. }),
        "{next:?}"
    );
    let ready = capbench::setup::ready(&cfg, capbench::setup::Needs::Database)
        .await
        .unwrap();
    let refused = ready.pristine().unwrap_err().to_string();
    assert!(
        refused.contains("9 of its rows") && refused.contains(capbench::setup::RESTORE_COMMAND),
        "{refused}"
    );
    let out = setup_bin_small(&url).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = only_error_line(&String::from_utf8_lossy(&out.stderr));
    assert!(
        line.contains("--restore") && line.contains("9 of its rows"),
        "{line}"
    );

    // Restored: the same rows again, nothing else touched, no rebuild.
    let out = setup_bin_small(&url).arg("--restore").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("9 changed rows of the dataset rewritten from the generator"),
        "{stdout}"
    );
    assert!(
        stdout.contains("already loaded, nothing to do"),
        "no rebuild: {stdout}"
    );
    assert_eq!(capbench::setup::changed_rows(&mut conn).await.unwrap(), 0);
    let rows: Vec<(uuid::Uuid, Vector, bool)> =
        sqlx::query_as("SELECT id, embedding, is_flagged FROM traces WHERE id = ANY($1)")
            .bind(&ids[1..10])
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows.len(), 9);
    for (id, embedding, flagged) in rows {
        let i = ids.iter().position(|x| *x == id).unwrap() as u64;
        assert_eq!(embedding.to_vec(), d.vector(i), "row {i} as generated");
        assert!(!flagged);
    }
    let score: f64 = sqlx::query_scalar("SELECT trust_score FROM traces WHERE id = $1")
        .bind(ids[0])
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(score, 0.5, "not a change to the dataset: not restored");
    assert!(trace_exists(&mut conn, theirs).await);
    let again = setup_bin_small(&url).arg("--restore").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to restore"));
}
