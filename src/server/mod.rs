//! The reference search service: the seeds' API (CommonTrace) on axum, for users who have no
//! deployment to point the benches at.
//!
//! - `POST /api/v1/keys` {"email"} → 201 {"api_key"}; keys are stored as SHA-256 hashes, never logged;
//!   minting is rate-limited per client address. Every key gets a user of its own: the email is a
//!   contact label, not an identity (an unauthenticated endpoint cannot prove who owns an address).
//! - `POST /api/v1/traces/search` {"q", "limit" 1..=50} with `X-API-Key` → 200 {"results": [...]}:
//!   text embedded, ANN candidates through THE search query (db::search) at the service's
//!   ef_search, then trust re-ranking. Read bucket per key.
//! - `POST /api/v1/traces` {"title", "context_text", "solution_text"} with `X-API-Key` → 201: an
//!   authenticated write (status `pending`). Write bucket per key.
//! - `GET /health`, `GET /metrics` (Prometheus text, with the search-duration histogram).
//!
//! Like mini-redis, [`serve`] takes a bound listener and a shutdown future, so tests bind port 0
//! and stop it themselves; shutdown closes idle connections and drains requests in flight.
//! [`connections`] bounds slow, idle and numerous clients; [`outage`] logs the dependencies'
//! outages as transitions; [`keys`] caches known and unknown API keys.

pub mod connections;
pub use crate::embed;
pub mod keys;
mod metrics;
pub mod outage;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgPool};
use tokio::net::TcpListener;

use crate::config::{Config, RedisFailure, ServiceParams};
use crate::dataset::Dataset;
use crate::ratelimit::{Decision, Limit, TokenBucket};
use embed::{DeterministicEmbedder, Embedder, OpenAiEmbedder};
use keys::KeyCache;
pub use metrics::Metrics;
use outage::Outages;
pub use routes::{ann_candidates, hash_key, parse_server_timing, rerank_score};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest query text accepted (422 beyond).
pub const MAX_QUERY_CHARS: usize = 2000;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub limiter: TokenBucket,
    pub embedder: Arc<dyn Embedder>,
    pub params: ServiceParams,
    /// The embeddings' dimension: what a search's `vector` must have.
    pub dims: usize,
    pub metrics: Metrics,
    /// Known and unknown API keys: a known key costs no database round trip, nor does repeating
    /// an unknown one.
    keys: Arc<KeyCache>,
    /// The outages of the database, the limiter's Redis and the embedder, logged as transitions.
    outages: Arc<Outages>,
}

impl AppState {
    /// Connects the pool (each connection with the service's ef_search set once), the limiter and
    /// the embedder.
    pub async fn connect(config: &Config, database_url: &str, redis_url: &str) -> Result<Self> {
        Self::connect_in(config, database_url, redis_url, None).await
    }

    /// [`AppState::connect`] with every connection's `search_path` set: `load` runs that write put
    /// the in-process service on the write table this way (`capbench_writes, public`), so that
    /// its `traces` is the copy and everything else the database's own.
    pub async fn connect_in(
        config: &Config,
        database_url: &str,
        redis_url: &str,
        search_path: Option<&str>,
    ) -> Result<Self> {
        let ef = config.service.search_ef_search;
        let mut options: PgConnectOptions = database_url
            .parse::<PgConnectOptions>()
            .with_context(|| {
                format!(
                    "invalid DATABASE_URL {}",
                    crate::secrets::redact(database_url)
                )
            })?
            .log_statements(tracing::log::LevelFilter::Off);
        if let Some(path) = search_path {
            options = options.options([("search_path", path)]);
        }
        let pool = crate::db::search::search_pool_options(
            ef,
            config.service.search_iterative_scan,
            config.service.pool_size,
        )
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options);
        let limiter = TokenBucket::connect(redis_url).await?;
        let embedder: Arc<dyn Embedder> = match &config.service.embeddings_url {
            Some(url) => Arc::new(OpenAiEmbedder::new(
                url,
                &config.service.embeddings_model,
                config.service.embeddings_key.clone(),
                config.dataset.dims as usize,
            )?),
            None => Arc::new(DeterministicEmbedder::new(Arc::new(Dataset::new(
                config.dataset.clone(),
            )))),
        };
        Ok(Self {
            pool,
            limiter,
            embedder,
            params: config.service.clone(),
            dims: config.dataset.dims as usize,
            metrics: Metrics::new()?,
            keys: Arc::default(),
            outages: Arc::new(Outages::new(config.service.on_redis_error)),
        })
    }

    fn read_limit(&self) -> Limit {
        Limit::per_minute(self.params.rate_limit_read_per_minute)
    }

    fn write_limit(&self) -> Limit {
        Limit::per_minute(self.params.rate_limit_write_per_minute)
    }

    fn keys_limit(&self) -> Limit {
        Limit::per_minute(self.params.rate_limit_keys_per_minute)
    }

    fn key_lookups_limit(&self) -> Limit {
        Limit::per_minute(self.params.rate_limit_key_lookups_per_minute)
    }

    /// A database call's result: an answer ends a database outage; an unreachable database is 503
    /// (logged once per outage), any other error 500 (logged with its cause).
    fn db<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, ApiError> {
        match result {
            Ok(v) => {
                self.outages.database.answered();
                Ok(v)
            }
            Err(e) => Err(self.db_error(e)),
        }
    }

    /// A database error (see [`AppState::db`]); for calls whose success does not show that the
    /// database answers (a pooled connection may be one the server has already closed).
    fn db_error(&self, e: sqlx::Error) -> ApiError {
        if database_unreachable(&e) {
            self.outages.database.failed(&e);
            ApiError::Unavailable("database unavailable".into())
        } else {
            ApiError::Internal(e.into())
        }
    }

    /// Embeds `text`. When the embedder fails (an external endpoint down, refusing, or answering
    /// nonsense) the request is 503 and the cause goes to the log, once per outage — the client
    /// learns only that it may retry.
    async fn embed(&self, text: &str) -> Result<Vec<f32>, ApiError> {
        match self.embedder.embed(text).await {
            Ok(v) => {
                self.outages.embedder.answered();
                Ok(v)
            }
            Err(e) => {
                self.outages.embedder.failed(&crate::one_line(&e));
                Err(ApiError::Unavailable(
                    "embedding service unavailable".into(),
                ))
            }
        }
    }

    /// Takes a token from `key`, applying the Redis-failure policy.
    async fn take(
        &self,
        key: &str,
        limit: Limit,
        bucket: &'static str,
    ) -> Result<Option<Decision>, ApiError> {
        let checked = self.limiter.check(key, limit).await;
        if checked.is_ok() {
            self.outages.limiter.answered();
        }
        match checked {
            Ok(d) if d.allowed => Ok(Some(d)),
            Ok(d) => {
                self.metrics.rate_limited.with_label_values(&[bucket]).inc();
                Err(ApiError::RateLimited { decision: d, limit })
            }
            Err(e) => {
                self.metrics.limiter_errors.inc();
                self.outages.limiter.failed(&e);
                match self.params.on_redis_error {
                    RedisFailure::Open => Ok(None),
                    RedisFailure::Closed => {
                        Err(ApiError::Unavailable("rate limiter unavailable".into()))
                    }
                }
            }
        }
    }
}

/// The router with every route and layer.
pub fn router(state: AppState) -> axum::Router {
    routes::router(state)
}

/// Serves on `listener` until `shutdown` completes, then closes idle connections and drains
/// requests in flight; connections are bounded as [`connections`] says.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limits = connections::Limits::of(&state.params);
    let metrics = state.metrics.clone();
    connections::run(listener, router(state), limits, metrics, shutdown).await
}

/// A warning when the service listens where other hosts can reach it: it has no TLS, and anyone
/// who reaches it can mint keys and write traces.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr}, which other hosts can reach: the service has no TLS and mints API \
             keys for anyone who asks; bind a loopback address (--addr 127.0.0.1:PORT) unless that \
             is intended"
        )
    })
}

/// A service running in this process on a free loopback port (tests and benches).
pub struct LocalService {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl LocalService {
    /// Binds 127.0.0.1:0 and serves `state` on it.
    pub async fn start(state: AppState) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a loopback port")?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks the service to stop: it stops accepting and drains requests in flight.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops and waits until every request in flight has been answered.
    pub async fn stop(mut self) -> Result<()> {
        self.begin_shutdown();
        match self.task.take() {
            Some(task) => task.await.context("the service task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

/// The `serve` binary: the stack (or the given servers), the dataset, then the service. Everything
/// it says goes through `tracing` (text or JSON lines on stderr, `--log-format`): its settings at
/// start, warnings, outages, every 5xx with its cause, and shutdown.
pub async fn run(config: Config) -> Result<std::process::ExitCode> {
    crate::logging::init(config.service.log_format);
    let config = config.effective();
    let ready = crate::setup::ready(&config, crate::setup::Needs::DatabaseAndRedis).await?;
    let (db_url, redis_url) = (ready.database_url.clone(), ready.redis()?.to_string());
    if let Some(warning) = plan_warning(&config, &db_url).await? {
        tracing::warn!("{warning}");
    }
    if ready.changed_rows > 0 {
        tracing::warn!("{}", crate::setup::changed_message(ready.changed_rows));
    }
    let state = AppState::connect(&config, &db_url, &redis_url).await?;
    // Both handlers are in place before "listening" is logged: a signal from then on drains.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    let listener = TcpListener::bind(config.service.addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (CAPBENCH_ADDR to choose another)",
                config.service.addr
            )
        })?;
    let addr = listener.local_addr()?;
    if let Some(warning) = exposure_warning(addr) {
        tracing::warn!("{warning}");
    }
    let service = &config.service;
    connections::raise_open_file_limit(service);
    let limits = connections::Limits::of(service);
    if limits.max_connections < service.max_connections as usize {
        tracing::warn!(
            "at most {} connections instead of {} (--max-connections): the open-file limit is {} (ulimit -n)",
            limits.max_connections,
            service.max_connections,
            connections::open_file_limit().unwrap_or_default()
        );
    }
    tracing::info!(
        database = %crate::secrets::redact(&db_url),
        redis = %crate::secrets::redact(&redis_url),
        embeddings = %service.embeddings_url.as_deref().map_or_else(|| "built-in".into(), crate::secrets::redact),
        ef_search = service.search_ef_search,
        iterative_scan = service.search_iterative_scan.as_str(),
        pool_size = service.pool_size,
        read_per_minute = service.rate_limit_read_per_minute,
        write_per_minute = service.rate_limit_write_per_minute,
        keys_per_minute = service.rate_limit_keys_per_minute,
        key_lookups_per_minute = service.rate_limit_key_lookups_per_minute,
        on_redis_error = ?service.on_redis_error,
        header_read_timeout = %humantime::format_duration(limits.header_read_timeout),
        keepalive_timeout = %humantime::format_duration(limits.keepalive_timeout),
        max_connections = limits.max_connections,
        "listening on http://{addr}"
    );
    let (signalled, draining) = tokio::sync::oneshot::channel::<()>();
    let server = serve(listener, state, async move {
        let signal = tokio::select! {
            _ = interrupt.recv() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(
            "{signal}: no new connections; closing idle ones, draining requests in flight (at most {} s)",
            DRAIN_TIMEOUT.as_secs()
        );
        let _ = signalled.send(());
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        _ = draining => match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::error!(
                    "requests still in flight after {} s were abandoned",
                    DRAIN_TIMEOUT.as_secs()
                );
                return Ok(std::process::ExitCode::FAILURE);
            }
        },
    }
    tracing::info!("stopped; every request in flight was answered");
    Ok(std::process::ExitCode::SUCCESS)
}

/// How long `serve` waits, after Ctrl-C or SIGTERM, for requests in flight before it gives up on them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A warning when PostgreSQL would answer the service's search without the HNSW index at its
/// ef_search: the planner does not cost detoasting, so past some ef_search (≈ 400 on 100K × 1536,
/// lower on smaller tables) it prefers an exact scan, ~100× slower, and nothing else would say so.
pub async fn plan_warning(config: &Config, db_url: &str) -> Result<Option<String>> {
    use crate::db::{schema::HNSW_INDEX, search};
    let ef = config.service.search_ef_search;
    let query = crate::workload::query_vectors(&config.dataset).swap_remove(0);
    let mut conn = crate::db::connect(db_url).await?;
    let plan = search::plan_at(&mut conn, &query, ann_candidates(ef, 10), ef).await?;
    Ok((!search::plan_uses_index(&plan, HNSW_INDEX)).then(|| {
        format!(
            "at ef_search {ef} PostgreSQL plans the search without the HNSW index {HNSW_INDEX} ({}): every search will be an exact scan; lower --search-ef-search (CAPBENCH_SEARCH_EF_SEARCH)",
            search::abbreviate_vectors(&plan.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" / "))
        )
    }))
}

/// Whether a database error means the database cannot be reached (it recovers by itself: 503),
/// rather than a fault in the request or the service (500).
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57") || c.starts_with("08")),
        _ => false,
    }
}

/// What a request can fail with; each becomes a status and a JSON body `{"error": …}`. A 5xx's
/// cause goes to the log, never to the client: `Internal` is logged with each response,
/// `Unavailable` by the outage it belongs to (see [`outage`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unprocessable(String),
    #[error("missing or unknown API key (send it in the X-API-Key header)")]
    Unauthorized,
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("rate limit exceeded")]
    RateLimited { decision: Decision, limit: Limit },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(e) => {
                tracing::error!(cause = %crate::one_line(e), "answering 500");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut resp =
            (status, Json(serde_json::json!({"error": self.to_string()}))).into_response();
        if let ApiError::RateLimited { decision, limit } = &self {
            let h = resp.headers_mut();
            h.insert(
                "retry-after",
                HeaderValue::from(decision.retry_after_secs()),
            );
            h.insert(
                "x-ratelimit-limit",
                HeaderValue::from(limit.capacity as u64),
            );
            h.insert(
                "x-ratelimit-remaining",
                HeaderValue::from(decision.remaining),
            );
        }
        resp
    }
}

/// `Json<T>` whose rejections follow the seeds' contract: 413 for an oversized body, 422 with a
/// JSON error body for anything malformed (syntax, types, content type).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge),
            Err(r) => Err(ApiError::Unprocessable(r.body_text())),
        }
    }
}
