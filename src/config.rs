//! One configuration for every binary and bench: clap derive, and every option also read from its
//! environment variable (benches cannot take flags, so they read the same names from the environment).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Parser};

/// Where capbench keeps its private servers, the PostgreSQL it installed, and its state.
pub fn default_home() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("capbench")
}

/// The configuration shared by all binaries and benches.
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "capbench: capacity and benchmark harness for pgvector search APIs"
)]
pub struct Config {
    #[command(flatten)]
    pub servers: Servers,
    #[command(flatten)]
    pub dataset: DatasetParams,
    #[command(flatten)]
    pub index: IndexParams,
    #[command(flatten)]
    pub bench: BenchParams,
    #[command(flatten)]
    pub service: ServiceParams,
}

impl Config {
    /// The configuration from environment variables alone (what benches use), quick mode applied.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::try_parse_from(["capbench"])
            .map(Self::effective)
            .map_err(|e| {
                let line = first_line(&e.to_string());
                anyhow::anyhow!("{}", line.strip_prefix("error: ").unwrap_or(&line))
            })
    }

    /// Applies quick mode (`CAPBENCH_QUICK=1`): a small dataset and query set, for smoke runs.
    pub fn effective(mut self) -> Self {
        self.remember_secrets();
        set_connect_timeout(self.servers.connect_timeout);
        if self.bench.quick {
            self.dataset.rows = self.dataset.rows.min(QUICK_ROWS);
            self.dataset.dims = self.dataset.dims.min(QUICK_DIMS);
            // Keep the full dataset's density (100 rows per cluster) so recall and plans look alike.
            self.dataset.clusters = self
                .dataset
                .clusters
                .min((self.dataset.rows / 100).max(1) as u32);
            self.bench.queries = self.bench.queries.min(QUICK_QUERIES);
        }
        self
    }

    /// Tells [`crate::secrets`] every secret this configuration holds, so no output shows them.
    pub fn remember_secrets(&self) {
        use crate::secrets::{remember, remember_in};
        for url in [
            &self.servers.database_url,
            &self.servers.redis_url,
            &self.service.target_url,
            &self.service.embeddings_url,
        ]
        .into_iter()
        .flatten()
        {
            remember_in(url);
        }
        for key in [&self.service.embeddings_key, &self.service.api_key]
            .into_iter()
            .flatten()
        {
            remember(key);
        }
    }

    /// The embedded stack's database for this configuration: quick mode keeps its small dataset
    /// apart, so it never replaces the 100K one.
    /// `CAPBENCH_DATABASE` names another one (a test's, so it never replaces either).
    pub fn local_database(&self) -> &str {
        match &self.servers.database {
            Some(name) => name,
            None if self.bench.quick => "capbench_quick",
            None => "capbench",
        }
    }
}

/// What the limiter does when Redis does not answer.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum RedisFailure {
    /// Serve the request unlimited; count it (`capbench_limiter_errors_total`) and log it.
    Open,
    /// Refuse the request with 503.
    Closed,
}

/// pgvector 0.8's `hnsw.iterative_scan`: whether an HNSW scan whose rows a filter removed goes on
/// scanning the graph (bounded by `hnsw.max_scan_tuples`) until it has enough rows.
#[derive(
    clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum IterativeScan {
    /// pgvector's default: one scan of ef_search candidates; a selective filter leaves fewer rows.
    Off,
    /// Scan on, results in exact distance order.
    StrictOrder,
    /// Scan on, results may be slightly out of order (cheaper; re-sort in SQL if it matters).
    RelaxedOrder,
}

impl IterativeScan {
    pub const ALL: [IterativeScan; 3] = [
        IterativeScan::Off,
        IterativeScan::StrictOrder,
        IterativeScan::RelaxedOrder,
    ];

    /// The setting's value: `off`, `strict_order`, `relaxed_order`.
    pub fn as_str(self) -> &'static str {
        match self {
            IterativeScan::Off => "off",
            IterativeScan::StrictOrder => "strict_order",
            IterativeScan::RelaxedOrder => "relaxed_order",
        }
    }
}

/// A query distribution (src/dataset/queries.rs draws each; docs/recall.md says what they mean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Distribution {
    Heldout,
    NearDuplicate,
    OutOfDistribution,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [
        Distribution::Heldout,
        Distribution::NearDuplicate,
        Distribution::OutOfDistribution,
    ];

    /// `heldout`, `near-duplicate`, `ood`: the name in configuration, records and reports.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Heldout => "heldout",
            Distribution::NearDuplicate => "near-duplicate",
            Distribution::OutOfDistribution => "ood",
        }
    }

    /// One line on how the queries are drawn.
    pub fn describe(self) -> &'static str {
        match self {
            Distribution::Heldout => "new draws from the data's own distribution",
            Distribution::NearDuplicate => "stored rows plus noise of norm 0.5 (cosine ≈ 0.9)",
            Distribution::OutOfDistribution => "noise around midpoints of two clusters",
        }
    }

    pub fn parse(name: &str) -> Option<Distribution> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// The reference search service (`serve`, and the in-process service of the benches).
#[derive(Args, Debug, Clone, PartialEq)]
pub struct ServiceParams {
    /// Address the service listens on (the seeds' host).
    #[arg(long, env = "CAPBENCH_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: std::net::SocketAddr,
    /// Searches per user per minute (bucket capacity; refilled at limit/60 per second).
    #[arg(long, env = "RATE_LIMIT_READ_PER_MINUTE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_read_per_minute: u32,
    /// Authenticated writes per user per minute.
    #[arg(long, env = "RATE_LIMIT_WRITE_PER_MINUTE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_write_per_minute: u32,
    /// API keys minted per client address per minute (high enough for 100 load-test users on one host).
    #[arg(long, env = "RATE_LIMIT_KEYS_PER_MINUTE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_keys_per_minute: u32,
    /// hnsw.ef_search of the service's connections (the seeds' 64).
    #[arg(long, env = "CAPBENCH_SEARCH_EF_SEARCH", default_value_t = 64, value_parser = parse_ef_search)]
    pub search_ef_search: u32,
    /// hnsw.iterative_scan of the service's connections (pgvector ≥ 0.8): with `off`, pgvector's
    /// default, a selective `tags` filter silently returns fewer results than asked for.
    #[arg(long, env = "CAPBENCH_SEARCH_ITERATIVE_SCAN", value_enum, default_value_t = IterativeScan::Off)]
    pub search_iterative_scan: IterativeScan,
    /// When Redis is down: serve unlimited (open) or refuse with 503 (closed).
    #[arg(long, env = "CAPBENCH_ON_REDIS_ERROR", value_enum, default_value_t = RedisFailure::Open)]
    pub on_redis_error: RedisFailure,
    /// PostgreSQL connections in the service's pool.
    #[arg(long, env = "CAPBENCH_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: u32,
    /// An OpenAI-compatible embeddings endpoint (…/v1) instead of the built-in deterministic embedder.
    #[arg(long, env = "CAPBENCH_EMBEDDINGS_URL")]
    pub embeddings_url: Option<String>,
    /// Model name sent to the embeddings endpoint.
    #[arg(
        long,
        env = "CAPBENCH_EMBEDDINGS_MODEL",
        default_value = "text-embedding-3-small"
    )]
    pub embeddings_model: String,
    /// Bearer key for the embeddings endpoint.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub embeddings_key: Option<String>,
    /// A deployment with this API for the http_search bench (instead of the in-process service).
    #[arg(long, env = "CAPBENCH_TARGET_URL")]
    pub target_url: Option<String>,
    /// An API key for CAPBENCH_TARGET_URL (otherwise one is minted through /api/v1/keys).
    #[arg(long, env = "CAPBENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How `serve` writes its log lines on stderr (filtered by RUST_LOG).
    #[arg(long, env = "CAPBENCH_LOG_FORMAT", value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// Database lookups of API keys the service has not seen, per client address per minute
    /// (a key seen once is cached; unknown keys are remembered for a minute).
    #[arg(long, env = "RATE_LIMIT_KEY_LOOKUPS_PER_MINUTE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_key_lookups_per_minute: u32,
    /// Longest time a client may take to send a request's header, from its connection or from
    /// the first byte of a request on a kept-alive connection (like nginx's client_header_timeout).
    #[arg(long, env = "CAPBENCH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: std::time::Duration,
    /// Longest time a kept-alive connection may wait idle for its next request (like nginx's
    /// keepalive_timeout).
    #[arg(long, env = "CAPBENCH_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = parse_timeout)]
    pub keepalive_timeout: std::time::Duration,
    /// Most client connections open at once (like nginx's worker_connections; lowered to fit the
    /// open-file limit). At the limit the longest-idle connection is closed to admit a new one.
    #[arg(long, env = "CAPBENCH_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

/// Rows and queries in quick mode.
pub const QUICK_ROWS: u64 = 20_000;
/// Dimensions in quick mode. 1536-dim vectors are TOASTed, and PostgreSQL's planner does not cost
/// detoasting: below ~100K rows it prefers a sequential scan to HNSW at some ef_search (which the
/// bench refuses to time). 256-dim vectors stay in the heap, where the planner sees their cost.
pub const QUICK_DIMS: u32 = 256;
pub const QUICK_QUERIES: u32 = 100;

/// What the benches measure.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchParams {
    /// hnsw.ef_search values to measure (comma-separated).
    #[arg(long, env = "CAPBENCH_EF_SEARCH", value_delimiter = ',', default_values_t = [16, 40, 64, 100, 200], value_parser = parse_ef_search)]
    pub ef_search: Vec<u32>,
    /// Size of the query set (drawn from the dataset's distribution, with exact top-k ground truth).
    #[arg(long, env = "CAPBENCH_QUERIES", default_value_t = 1000, value_parser = parse_queries)]
    pub queries: u32,
    /// hnsw.ef_search values of the filtered bench (hnsw_filtered; comma-separated).
    #[arg(long, env = "CAPBENCH_FILTERED_EF_SEARCH", value_delimiter = ',', default_values_t = [40, 100], value_parser = parse_ef_search)]
    pub filtered_ef_search: Vec<u32>,
    /// Queries per filtered point (the first of the case's set): an iterative scan under a
    /// selective filter costs ~50–100 ms per query at 100K × 1536.
    #[arg(long, env = "CAPBENCH_FILTERED_QUERIES", default_value_t = 200, value_parser = parse_queries)]
    pub filtered_queries: u32,
    /// The raised hnsw.max_scan_tuples the filtered bench runs relaxed_order with, beside pgvector's
    /// default (20,000).
    #[arg(long, env = "CAPBENCH_RAISED_MAX_SCAN_TUPLES", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub raised_max_scan_tuples: u32,
    /// The query distribution the filtered bench (and `load`'s recall) draws from: heldout,
    /// near-duplicate or ood (docs/recall.md). The hnsw bench scores all three.
    #[arg(long, env = "CAPBENCH_QUERY_SET", default_value = "heldout", value_parser = parse_distribution)]
    pub query_set: Distribution,
    /// The index variants `cargo bench variants` measures (comma-separated): hnsw, halfvec, bq,
    /// ivfflat (docs/variants.md). Missing ones are built first, as `setup --index` builds them.
    #[arg(long, env = "CAPBENCH_VARIANTS", value_delimiter = ',', default_value = "hnsw,halfvec,bq,ivfflat", value_parser = parse_variant)]
    pub variants: Vec<Variant>,
    /// The recall@k a variant must reach for the report to pick its fastest point meeting it.
    #[arg(long, env = "CAPBENCH_RECALL_TARGET", default_value_t = 0.95, value_parser = parse_recall_target)]
    pub recall_target: f64,
    /// Query pools of `cargo bench memory` (comma-separated sizes): distinct held-out queries per
    /// pass; a larger pool touches more of the index, which matters once it no longer fits.
    #[arg(long, env = "CAPBENCH_MEMORY_POOLS", value_delimiter = ',', default_values_t = [1000, 10000], value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub memory_pools: Vec<u32>,
    /// shared_buffers (MB) of `cargo bench memory`'s small_buffers regime [default: 1/8 of the
    /// HNSW index, at least 16].
    #[arg(long, env = "CAPBENCH_SMALL_SHARED_BUFFERS", value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub small_shared_buffers_mb: Option<u64>,
    /// Dataset sizes of `cargo bench scale` (comma-separated; `300K`, `1M`): each is loaded once
    /// into a database of its own and kept by its fingerprint [quick mode: 2K, 5K].
    #[arg(long, env = "CAPBENCH_SCALE_ROWS", value_delimiter = ',', default_values_t = [10_000, 30_000, 100_000, 300_000], value_parser = parse_row_count)]
    pub scale_rows: Vec<u64>,
    /// hnsw.ef_search of the scale bench's fixed point (hnsw and halfvec).
    #[arg(long, env = "CAPBENCH_SCALE_EF_SEARCH", default_value_t = 40, value_parser = parse_ef_search)]
    pub scale_ef_search: u32,
    /// Writer connections of `cargo bench hnsw_insert` (comma-separated, 1 to 64): each method and
    /// target is measured at every level, the rows split among the writers.
    #[arg(long, env = "CAPBENCH_INSERT_WRITERS", value_delimiter = ',', default_values_t = [1, 2, 4], value_parser = clap::value_parser!(u32).range(1..=64))]
    pub insert_writers: Vec<u32>,
    /// Stages of `cargo bench streaming` (comma-separated shares of the dataset, ascending:
    /// `10%,50%`): rows are inserted while searching until the table holds each share more.
    #[arg(long, env = "CAPBENCH_STREAM_STAGES", value_delimiter = ',', default_values_t = [10.0, 50.0], value_parser = parse_stage_percent)]
    pub stream_stages: Vec<f64>,
    /// Rows per second the streaming bench inserts at, all its writers together [default: 200;
    /// 1000 in quick mode].
    #[arg(long, env = "CAPBENCH_STREAM_INSERT_RATE", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub stream_insert_rate: Option<u32>,
    /// Writer connections of the streaming bench's inserts.
    #[arg(long, env = "CAPBENCH_STREAM_WRITERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub stream_writers: u32,
    /// Searches per second the streaming bench sends throughout (an open model: each is timed from
    /// when it was due).
    #[arg(long, env = "CAPBENCH_STREAM_SEARCH_RATE", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub stream_search_rate: u32,
    /// hnsw.ef_search of the streaming bench's searches.
    #[arg(long, env = "CAPBENCH_STREAM_EF_SEARCH", default_value_t = 40, value_parser = parse_ef_search)]
    pub stream_ef_search: u32,
    /// Share of the grown table the streaming bench deletes (then VACUUMs), as a percentage; 0
    /// skips it. The rows deleted are rows it inserted, spread over them.
    #[arg(long, env = "CAPBENCH_STREAM_DELETE", default_value_t = 10.0, value_parser = parse_change_percent)]
    pub stream_delete: f64,
    /// Share of the grown table the streaming bench re-embeds (UPDATE of the embedding, then
    /// VACUUM), as a percentage; 0 skips it. Rows it inserted and did not delete.
    #[arg(long, env = "CAPBENCH_STREAM_UPDATE", default_value_t = 5.0, value_parser = parse_change_percent)]
    pub stream_update: f64,
    /// Row counts the capacity plan extrapolates to (comma-separated; `1M,10M`).
    #[arg(long, env = "CAPBENCH_PLAN_ROWS", value_delimiter = ',', default_values_t = [1_000_000, 10_000_000], value_parser = parse_row_count)]
    pub plan_rows: Vec<u64>,
    /// Dimensions the capacity plan also shows (comma-separated; `768,3072`), besides the measured
    /// one: index sizes from pgvector's page layout, times assumed to grow with the dimension.
    #[arg(long, env = "CAPBENCH_PLAN_DIMS", value_delimiter = ',', value_parser = parse_plan_dims)]
    pub plan_dims: Vec<u32>,
    /// Neighbours per query: the search LIMIT and the k of recall@k.
    #[arg(long, env = "CAPBENCH_K", default_value_t = 10, value_parser = parse_k)]
    pub k: u32,
    /// Measurement rounds per benchmark: after Criterion's timing, each benchmark's own measurement
    /// (the HDR histogram, recall, QPS) is taken in this many rounds, interleaved across benchmarks
    /// and on a fresh connection each round, so the run knows its own drift (see docs/regression.md).
    #[arg(long, env = "CAPBENCH_ROUNDS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Quick mode: 20,000 rows × 256 dims, 100 queries, short Criterion times — a smoke run, not a measurement.
    #[arg(long, env = "CAPBENCH_QUICK", value_parser = parse_bool)]
    pub quick: bool,
    /// Also run each bench's independent tool in the same run for comparison: pgbench (hnsw),
    /// redis-benchmark (rate_limit).
    #[arg(long, env = "CAPBENCH_COMPARE", value_parser = parse_bool)]
    pub compare: bool,
    /// While measuring, hold idle CPUs in polling (a 0 µs request on /dev/cpu_dma_latency, as
    /// latency tools do) or leave the machine's idle states alone (`os`). Default: `poll` for the
    /// benches, `os` for `load` (whose figures are compared with Locust's, k6's and oha's).
    #[arg(long, env = "CAPBENCH_CPU_IDLE", value_enum)]
    pub cpu_idle: Option<crate::cpu_idle::CpuIdle>,
}

/// Which servers to use: the user's (`DATABASE_URL`, `REDIS_URL`) or the embedded stack.
#[derive(Args, Debug, Clone)]
pub struct Servers {
    /// PostgreSQL with pgvector to use instead of the embedded stack.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis to use instead of the embedded stack.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Directory of the embedded stack: installed PostgreSQL, data, logs, and the servers'
    /// password (`secret`, mode 0600).
    #[arg(long, env = "CAPBENCH_HOME", default_value_os_t = default_home())]
    pub home: PathBuf,
    /// Database of the embedded PostgreSQL to use [default: capbench; capbench_quick in quick
    /// mode]: another name keeps another dataset apart (the tests use it, so they never replace yours).
    #[arg(long = "database", env = "CAPBENCH_DATABASE", value_parser = parse_database_name)]
    pub database: Option<String>,
    /// Loopback port of the embedded PostgreSQL (not 5432, so a user's own server is never touched).
    /// A running embedded server keeps its port: asking for another one is an error until it is
    /// stopped (`setup --stop`).
    #[arg(long, env = "CAPBENCH_PG_PORT", default_value_t = 54320, value_parser = clap::value_parser!(u16).range(1..))]
    pub pg_port: u16,
    /// Loopback port of the embedded Redis (not 6379; not the PostgreSQL one).
    #[arg(long, env = "CAPBENCH_REDIS_PORT", default_value_t = 63790, value_parser = clap::value_parser!(u16).range(1..))]
    pub redis_port: u16,
    /// Longest wait to open a connection to PostgreSQL or Redis (`10s`, `500ms`) before failing
    /// with an error that names the server.
    #[arg(long, env = "CAPBENCH_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub connect_timeout: std::time::Duration,
}

/// Every parameter that determines the generated vectors (all of them enter the fingerprint).
#[derive(Args, Debug, Clone, PartialEq)]
pub struct DatasetParams {
    /// Number of traces to generate.
    #[arg(long, env = "CAPBENCH_ROWS", default_value_t = 100_000, value_parser = parse_rows)]
    pub rows: u64,
    /// Embedding dimension (HNSW on `vector` supports at most 2000).
    #[arg(long, env = "CAPBENCH_DIMS", default_value_t = 1536, value_parser = parse_dims)]
    pub dims: u32,
    /// Seed of every random stream (vectors, metadata, ids).
    #[arg(long, env = "CAPBENCH_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Number of unit-norm base vectors; row i is a noisy copy of `base[i % clusters]`.
    #[arg(long, env = "CAPBENCH_CLUSTERS", default_value_t = 1000, value_parser = parse_clusters)]
    pub clusters: u32,
    /// Standard deviation of the Gaussian noise added to each coordinate before renormalizing.
    #[arg(long, env = "CAPBENCH_SIGMA", default_value_t = 0.05, value_parser = parse_sigma, allow_negative_numbers = true)]
    pub sigma: f32,
}

impl Default for DatasetParams {
    fn default() -> Self {
        Self {
            rows: 100_000,
            dims: 1536,
            seed: 42,
            clusters: 1000,
            sigma: 0.05,
        }
    }
}

/// HNSW index parameters (they enter the fingerprint too).
#[derive(Args, Debug, Clone, PartialEq)]
pub struct IndexParams {
    /// HNSW `m`: neighbours per node (pgvector allows 2..=100).
    #[arg(long = "m", env = "CAPBENCH_HNSW_M", default_value_t = 16, value_parser = parse_m)]
    pub m: u32,
    /// HNSW `ef_construction`: candidate list while building (4..=1000, and at least 2 × m).
    #[arg(long, env = "CAPBENCH_EF_CONSTRUCTION", default_value_t = 64, value_parser = parse_ef_construction)]
    pub ef_construction: u32,
    /// Parallel workers for the index build, besides the leader [default: cores - 1].
    #[arg(long, env = "CAPBENCH_BUILD_WORKERS")]
    pub build_workers: Option<u32>,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 64,
            build_workers: None,
        }
    }
}

impl IndexParams {
    /// Checks what clap cannot check one flag at a time.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.ef_construction >= 2 * self.m,
            "--ef-construction {} is less than 2 × --m {}: pgvector requires ef_construction >= 2 × m",
            self.ef_construction,
            self.m
        );
        Ok(())
    }

    pub fn workers(&self) -> u32 {
        self.build_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get() as u32)
                .saturating_sub(1)
        })
    }
}

/// The first line of a (possibly multi-line) error message, with clap's `[possible values: …]`
/// appended when it gives them (so a wrong choice names the right ones on the same line).
pub fn first_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or_default().trim();
    match s
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("[possible values:"))
    {
        Some(values) if !first.contains(values) => format!("{first} {values}"),
        _ => first.to_string(),
    }
}

/// The value of a boolean flag's environment variable (`CAPBENCH_FORCE`, `CAPBENCH_QUICK`, …):
/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, in any case. Anything else is a usage error, so
/// a typo such as `CAPBENCH_FORCE=maybe` can never switch a flag on.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "'{s}' is not a boolean: use true/false, 1/0, yes/no or on/off"
        )),
    }
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .or_else(|_| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(std::time::Duration::from_secs_f64)
                .ok_or(())
        })
        .map_err(|_| format!("'{s}' is not a duration like 10s or 500ms"))?;
    if d.is_zero() || d > std::time::Duration::from_secs(3600) {
        return Err(format!(
            "the timeout must be above 0 and at most 1h, got {s}"
        ));
    }
    Ok(d)
}

fn parse_rows(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 {
        return Err("rows must be at least 1".into());
    }
    Ok(n)
}

/// A dimension to plan for: any pgvector can index with some variant (`bit` up to 64,000); which
/// variants it fits is the plan's to say.
fn parse_plan_dims(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n @ 1..=64_000) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a dimension from 1 to 64000 (the largest pgvector indexes, as bit)"
        )),
    }
}

fn parse_dims(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    match n {
        0 => Err("dims must be at least 1".into()),
        2001.. => Err(format!(
            "{n} dimensions is more than the 2000 an HNSW index on `vector` supports: use --dims 2000 or less"
        )),
        _ => Ok(n),
    }
}

fn parse_clusters(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 {
        return Err("clusters must be at least 1".into());
    }
    Ok(n)
}

fn parse_sigma(s: &str) -> Result<f32, String> {
    let x: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("sigma must be a finite number >= 0, got {s}"));
    }
    Ok(x)
}

fn parse_distribution(s: &str) -> Result<Distribution, String> {
    Distribution::parse(s).ok_or_else(|| {
        format!(
            "unknown query set '{s}' (one of {})",
            Distribution::ALL.map(|d| d.name()).join(", ")
        )
    })
}

fn parse_ef_search(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !(1..=1000).contains(&n) {
        return Err(format!(
            "ef_search must be between 1 and 1000 (pgvector's limits), got {n}"
        ));
    }
    Ok(n)
}

fn parse_queries(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n == 0 {
        return Err("the query set needs at least 1 query".into());
    }
    Ok(n)
}

fn parse_k(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !(1..=1000).contains(&n) {
        return Err(format!("k must be between 1 and 1000, got {n}"));
    }
    Ok(n)
}

fn parse_m(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !(2..=100).contains(&n) {
        return Err(format!(
            "m must be between 2 and 100 (pgvector's limits), got {n}"
        ));
    }
    Ok(n)
}

fn parse_ef_construction(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if !(4..=1000).contains(&n) {
        return Err(format!(
            "ef_construction must be between 4 and 1000 (pgvector's limits), got {n}"
        ));
    }
    Ok(n)
}

/// How long opening a connection may take (TCP, TLS, startup, authentication) before it fails
/// with an error naming the server, unless `--connect-timeout` / `CAPBENCH_CONNECT_TIMEOUT` says
/// otherwise: a server that accepts TCP and never answers must not hang a run.
pub const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

static CONNECT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_CONNECT_TIMEOUT.as_millis() as u64);

/// The connect timeout in force (set once from the configuration by `Config::effective`).
pub fn connect_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(CONNECT_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Sets the connect timeout for every connection this process opens (PostgreSQL and Redis).
pub fn set_connect_timeout(timeout: std::time::Duration) {
    CONNECT_TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
}

pub fn parse_variant(s: &str) -> Result<Variant, String> {
    s.parse()
}

fn parse_recall_target(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "the recall target is a fraction in (0, 1], like 0.95, not '{s}'"
        )),
    }
}

/// A streaming stage: `10%` or `10` (percent of the dataset), above 0 and at most 1000.
fn parse_stage_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "a streaming stage is a percentage of the dataset above 0 and at most 1000 (`10%`), not '{s}'"
        )),
    }
}

/// A share of the table to delete or re-embed: `10%` or `10`, 0 to 50.
fn parse_change_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if (0.0..=50.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "a share of the table to change is a percentage from 0 to 50 (`10%`), not '{s}'"
        )),
    }
}

/// `10M`, `1.5M`, `300K`, `1000000` → rows.
pub fn parse_row_count(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('b' | 'B' | 'g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (&t[..], 1.0),
    };
    match num.parse::<f64>() {
        Ok(v) if v > 0.0 && (v * mult) >= 1.0 && (v * mult) <= 1e12 => {
            Ok((v * mult).round() as u64)
        }
        _ => Err(format!("'{s}' is not a row count (like 300000, 300K, 10M)")),
    }
}

/// One way of indexing the embeddings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// HNSW on `vector` (the seeds' index, built by setup with the dataset).
    Hnsw,
    /// HNSW on `embedding::halfvec(dims)`.
    Halfvec,
    /// HNSW on `binary_quantize(embedding)::bit(dims)` (Hamming), re-ranked by exact cosine.
    Bq,
    /// IVFFlat on `subvector(embedding, 1, dims)::vector(dims)`.
    Ivfflat,
}

impl Variant {
    pub const ALL: [Variant; 4] = [
        Variant::Hnsw,
        Variant::Halfvec,
        Variant::Bq,
        Variant::Ivfflat,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Hnsw => "hnsw",
            Variant::Halfvec => "halfvec",
            Variant::Bq => "bq",
            Variant::Ivfflat => "ivfflat",
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Variant::ALL
            .into_iter()
            .find(|v| v.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown index variant '{s}' (one of {})",
                    Variant::ALL.map(|v| v.as_str()).join(", ")
                )
            })
    }
}

fn parse_database_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "a database name of lower-case letters, digits and _ (at most 63, not starting with a digit), not '{s}'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_dimensions_reach_past_the_measured_limit_but_not_past_pgvectors() {
        assert_eq!(parse_plan_dims("3072"), Ok(3072));
        assert_eq!(parse_plan_dims(" 64000"), Ok(64_000));
        assert!(parse_plan_dims("0").is_err());
        assert!(parse_plan_dims("64001").unwrap_err().contains("64000"));
        assert!(parse_plan_dims("big").is_err());
        // The dataset's own dimension stays bound by the HNSW index on `vector`.
        assert!(parse_dims("3072").is_err());
    }
}
