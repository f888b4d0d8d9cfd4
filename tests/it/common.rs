//! Shared by the integration tests: a fresh database of its own for each test, on the real
//! PostgreSQL+pgvector of the embedded stack (or the server of DATABASE_URL) — never the dataset's.

use capbench::config::{Config, DatasetParams, IndexParams};
use capbench::server::{AppState, LocalService};
use capbench::setup::{LoadOptions, ensure_dataset};
use capbench::stack;

/// A small dataset: enough rows for structure, few enough for a quick suite.
pub fn small_params(rows: u64, dims: u32) -> DatasetParams {
    DatasetParams {
        rows,
        dims,
        seed: 42,
        clusters: 50,
        sigma: 0.05,
    }
}

/// Config from the environment, with the dataset and index replaced by the given ones.
pub fn config(dataset: DatasetParams, index: IndexParams) -> Config {
    let mut cfg =
        Config::from_env().expect("the CAPBENCH_* / DATABASE_URL environment does not parse");
    cfg.dataset = dataset;
    cfg.index = IndexParams {
        build_workers: Some(1),
        ..index
    };
    cfg
}

/// URL of the server's admin database (`postgres`), starting the embedded stack when needed.
pub async fn server_admin_url(cfg: &Config) -> String {
    let url = stack::postgres(&cfg.servers, "postgres").await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL+pgvector is not available: {}\nrun setup/install-deps.sh (or set DATABASE_URL)",
            capbench::one_line(&e)
        )
    });
    stack::with_database(&url, "postgres").expect("database URL")
}

/// Drops and recreates database `capbench_test_<name>`; returns the config pointing at it and its URL.
pub async fn fresh_database(name: &str, mut cfg: Config) -> (Config, String) {
    let admin = server_admin_url(&cfg).await;
    let db = format!("capbench_test_{name}");
    let mut conn = capbench::db::connect(&admin)
        .await
        .expect("connect to the admin database");
    let sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        stack::quote_ident(&db)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("drop test database");
    stack::ensure_database(&admin, &db)
        .await
        .expect("create test database");
    let url = stack::with_database(&admin, &db).expect("database URL");
    cfg.servers.database_url = Some(url.clone());
    (cfg, url)
}

/// URL of the real Redis (the embedded stack's, or REDIS_URL's), starting it when needed.
pub async fn redis_url() -> String {
    let cfg = Config::from_env().expect("the environment does not parse");
    stack::redis(&cfg.servers).await.unwrap_or_else(|e| {
        panic!(
            "Redis is not available: {}\nrun setup/install-deps.sh (or set REDIS_URL)",
            capbench::one_line(&e)
        )
    })
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

/// The PostgreSQL bin directory setup/install-deps.sh chose (or CAPBENCH_PG_BINDIR).
pub fn pg_bindir() -> String {
    std::env::var("CAPBENCH_PG_BINDIR").unwrap_or_else(|_| {
        let home = Config::from_env()
            .expect("the environment does not parse")
            .servers
            .home;
        std::fs::read_to_string(home.join("pg-bindir"))
            .unwrap_or_else(|_| {
                panic!("PostgreSQL+pgvector is not installed: run setup/install-deps.sh")
            })
            .trim()
            .to_string()
    })
}

/// The reference service's test configuration: a 600-row, 32-dim dataset, a small index.
pub fn service_config() -> Config {
    let mut cfg = config(
        small_params(600, 32),
        IndexParams {
            m: 8,
            ef_construction: 32,
            build_workers: Some(1),
        },
    );
    cfg.dataset.clusters = 6;
    cfg.service.search_ef_search = 40;
    cfg.service.pool_size = 8;
    cfg
}

/// A service on a fresh database with the small dataset loaded, using the shared Redis.
pub async fn start_service(name: &str, tweak: impl FnOnce(&mut Config)) -> (LocalService, Config) {
    capbench::install_tls_provider();
    let mut cfg = service_config();
    tweak(&mut cfg);
    let (cfg, url) = fresh_database(name, cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .expect("load the small dataset");
    let redis = cfg.servers.redis_url.clone().unwrap_or(redis_url().await);
    let state = AppState::connect(&cfg, &url, &redis)
        .await
        .expect("connect the service");
    (
        LocalService::start(state).await.expect("start the service"),
        cfg,
    )
}

/// The environment variables that give a child binary (`serve`, `setup`) `cfg`'s dataset and
/// index, built by one worker.
pub fn dataset_env(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("CAPBENCH_ROWS", cfg.dataset.rows.to_string()),
        ("CAPBENCH_DIMS", cfg.dataset.dims.to_string()),
        ("CAPBENCH_CLUSTERS", cfg.dataset.clusters.to_string()),
        ("CAPBENCH_SEED", cfg.dataset.seed.to_string()),
        ("CAPBENCH_SIGMA", cfg.dataset.sigma.to_string()),
        ("CAPBENCH_HNSW_M", cfg.index.m.to_string()),
        (
            "CAPBENCH_EF_CONSTRUCTION",
            cfg.index.ef_construction.to_string(),
        ),
        ("CAPBENCH_BUILD_WORKERS", "1".to_string()),
    ]
}

/// `load` arguments as the command line would give them (the environment supplies the rest).
pub fn load_args(argv: &[&str]) -> capbench::load::LoadArgs {
    let argv: Vec<String> = std::iter::once("load")
        .chain(argv.iter().copied())
        .map(String::from)
        .collect();
    capbench::load::LoadArgs::parse_from_args(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// Mints an API key through `POST /api/v1/keys` of the service at `base` (asserting 201).
pub async fn mint_key(client: &reqwest::Client, base: &str, email: &str) -> String {
    let resp = client
        .post(format!("{base}/api/v1/keys"))
        .json(&serde_json::json!({"email": email}))
        .send()
        .await
        .expect("POST /api/v1/keys");
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let body: serde_json::Value = resp.json().await.expect("a JSON body");
    body["api_key"]
        .as_str()
        .expect("api_key in the body")
        .to_string()
}

/// The entry `name` of `record` (a failure naming it when there is none).
pub fn entry<'a>(
    record: &'a capbench::record::RunRecord,
    name: &str,
) -> &'a capbench::record::ResultEntry {
    record
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
}
