//! The handlers of the seeds' API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pgvector::Vector;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::keys::Cached;
use super::{ApiError, ApiJson, AppState, MAX_BODY_BYTES, MAX_QUERY_CHARS};
use crate::db::search;
use crate::ratelimit::{Bucket, Decision, Limit, key};

pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/api/v1/keys", post(create_key))
        .route("/api/v1/traces/search", post(search_traces))
        .route("/api/v1/traces", post(create_trace))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn count_responses(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // MatchedPath is an Arc<str> inside: cloning it allocates nothing.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    st.metrics
        .responses
        .with_label_values(&[
            route.as_ref().map_or("unmatched", MatchedPath::as_str),
            resp.status().as_str(),
        ])
        .inc();
    resp
}

fn rate_headers(resp: &mut Response, decision: Option<Decision>, limit: Limit) {
    if let Some(d) = decision {
        let h = resp.headers_mut();
        h.insert(
            "x-ratelimit-limit",
            HeaderValue::from(limit.capacity as u64),
        );
        h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    }
}

#[derive(Deserialize)]
struct KeyRequest {
    email: String,
}

#[derive(Serialize)]
struct KeyResponse {
    api_key: String,
}

pub fn hash_key(api_key: &str) -> String {
    hex::encode(Sha256::digest(api_key.as_bytes()))
}

/// Checks a text field: not blank, at most `max` characters, and no NUL character (PostgreSQL's
/// `text` cannot hold one: without this check the insert fails with a 500).
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ApiError::Unprocessable(format!(
            "{field} must be 1 to {max} characters"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::Unprocessable(format!(
            "{field} must not contain NUL characters (\\u0000)"
        )));
    }
    Ok(())
}

/// Mints a key for a user of its own. The email is a contact label, not an identity: this
/// endpoint cannot prove who owns an address, so a key minted for an email that other keys
/// already use never acts as their user (nor spends their buckets, nor writes in their name).
async fn create_key(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<KeyRequest>,
) -> Result<Response, ApiError> {
    let email = req.email.trim();
    check_text("email", email, 254)?;
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::Unprocessable(
            "email must be an address like name@example.com".into(),
        ));
    }
    // No key yet: key creation is limited per client address.
    let limit = st.keys_limit();
    let decision = st
        .take(&format!("rl:addr:{}:keys", peer.ip()), limit, "keys")
        .await?;
    let mut api_key = String::from("ct_");
    api_key.push_str(&hex::encode(rand::rng().random::<[u8; 24]>()));
    let hash = hash_key(&api_key);
    let user_id = Uuid::new_v4();
    // One statement: a user never exists without its key.
    let minted = sqlx::query(
        "WITH u AS (INSERT INTO users (id, email, display_name) VALUES ($1, $2, $2) RETURNING id)
         INSERT INTO api_keys (id, key_hash, user_id) SELECT $3, $4, id FROM u",
    )
    .bind(user_id)
    .bind(email)
    .bind(Uuid::new_v4())
    .bind(&hash)
    .execute(&st.pool)
    .await;
    st.db(minted)?;
    st.keys.insert_known(hash, user_id);
    let mut resp = (StatusCode::CREATED, Json(KeyResponse { api_key })).into_response();
    rate_headers(&mut resp, decision, limit);
    Ok(resp)
}

/// The user behind the request's `X-API-Key`. A key the cache does not know (seen neither as
/// known nor, lately, as unknown) costs a database lookup, limited per client address.
async fn authenticate(
    st: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Uuid, ApiError> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let hash = hash_key(key.trim());
    match st.keys.get(&hash) {
        Cached::Known(user) => return Ok(user),
        Cached::Unknown => return Err(ApiError::Unauthorized),
        Cached::Miss => {}
    }
    st.take(
        &format!("rl:addr:{}:key-lookups", peer.ip()),
        st.key_lookups_limit(),
        "key_lookups",
    )
    .await?;
    let user: Option<Uuid> = st.db(sqlx::query_scalar(
        "SELECT user_id FROM api_keys WHERE key_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&st.pool)
    .await)?;
    st.metrics
        .key_lookups
        .with_label_values(&[if user.is_some() { "found" } else { "unknown" }])
        .inc();
    match user {
        Some(user) => {
            st.keys.insert_known(hash, user);
            Ok(user)
        }
        None => {
            st.keys.insert_unknown(hash);
            Err(ApiError::Unauthorized)
        }
    }
}

#[derive(Deserialize)]
struct SearchRequest {
    /// The search text, embedded by the service; or instead
    #[serde(default)]
    q: Option<String>,
    /// the query's embedding itself (the dataset's dimension, finite values): what a client that
    /// embeds on its own sends, and what `load --recall` sends to score the answers.
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default = "default_limit")]
    limit: i64,
    /// Every result carries all of these tags (THE search query's filtered form).
    #[serde(default)]
    tags: Vec<String>,
}

/// At most this many tags in a search's filter, each 1..=64 characters of `[a-z0-9._-]`.
pub const MAX_FILTER_TAGS: usize = 8;

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_FILTER_TAGS {
        return Err(ApiError::Unprocessable(format!(
            "tags: at most {MAX_FILTER_TAGS} tags, got {}",
            tags.len()
        )));
    }
    for t in tags {
        let ok = (1..=64).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !ok {
            return Err(ApiError::Unprocessable(
                "tags: each tag is 1 to 64 characters of a-z, 0-9, '.', '_' or '-'".into(),
            ));
        }
    }
    Ok(())
}

fn default_limit() -> i64 {
    10
}

#[derive(Serialize)]
pub struct SearchResult {
    pub id: Uuid,
    pub title: String,
    pub similarity: f64,
    pub trust_score: f64,
}

#[derive(Serialize)]
struct SearchResponse {
    results: Vec<SearchResult>,
    count: usize,
}

/// How many ANN candidates a search fetches before re-ranking: as many as HNSW yields at this
/// ef_search, and at least the page asked for.
pub fn ann_candidates(ef_search: u32, limit: i64) -> i64 {
    i64::from(ef_search).max(limit)
}

/// The seeds' re-ranking: among the ANN candidates, similarity weighted by trust.
pub fn rerank_score(similarity: f64, trust_score: f64) -> f64 {
    0.8 * similarity + 0.2 * trust_score.clamp(0.0, 1.0)
}

async fn search_traces(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut timing = ServerTiming::new(started);
    let user = authenticate(&st, &headers, peer).await?;
    timing.mark("auth");
    let query = query_of(&req, st.dims)?;
    if !(1..=50).contains(&req.limit) {
        return Err(ApiError::Unprocessable(
            "limit must be between 1 and 50".into(),
        ));
    }
    check_tags(&req.tags)?;
    let limit = st.read_limit();
    let bucket_key = key(&user.to_string(), Bucket::Read);
    let candidates = ann_candidates(st.params.search_ef_search, req.limit);
    let decision = st.take(&bucket_key, limit, "read").await?;
    timing.mark("ratelimit");
    let (hits, stages) = find_candidates(&st, query, candidates, &req.tags).await?;
    stages.into_iter().for_each(|(n, d)| timing.add(n, d));
    let mut results: Vec<SearchResult> = hits
        .into_iter()
        .map(|h| SearchResult {
            id: h.id,
            title: h.title,
            similarity: 1.0 - h.distance,
            trust_score: h.trust_score,
        })
        .collect();
    results.sort_by(|a, b| {
        rerank_score(b.similarity, b.trust_score)
            .total_cmp(&rerank_score(a.similarity, a.trust_score))
    });
    results.truncate(req.limit as usize);
    st.metrics
        .search_duration
        .observe(started.elapsed().as_secs_f64());
    let count = results.len();
    let mut resp = Json(SearchResponse { results, count }).into_response();
    rate_headers(&mut resp, decision, limit);
    if let Ok(v) = HeaderValue::from_str(&timing.header()) {
        resp.headers_mut().insert("server-timing", v);
    }
    Ok(resp)
}

/// What a search asks for: a text to embed, or an embedding.
enum Query<'a> {
    Text(&'a str),
    Vector(&'a [f32]),
}

/// The search's query: exactly one of `q` (1 to [`MAX_QUERY_CHARS`] characters) and `vector`
/// (`dims` finite values).
fn query_of(req: &SearchRequest, dims: usize) -> Result<Query<'_>, ApiError> {
    match (&req.q, &req.vector) {
        (Some(q), None) => {
            check_text("q", q, MAX_QUERY_CHARS)?;
            Ok(Query::Text(q.trim()))
        }
        (None, Some(v)) => {
            if v.len() != dims {
                return Err(ApiError::Unprocessable(format!(
                    "vector must have {dims} values (the embeddings' dimension), got {}",
                    v.len()
                )));
            }
            if !v.iter().all(|x| x.is_finite()) || v.iter().all(|x| *x == 0.0) {
                return Err(ApiError::Unprocessable(
                    "vector must be finite numbers, not all zero".into(),
                ));
            }
            Ok(Query::Vector(v))
        }
        (Some(_), Some(_)) => Err(ApiError::Unprocessable(
            "give either q (a text) or vector (an embedding), not both".into(),
        )),
        (None, None) => Err(ApiError::Unprocessable(
            "q (a text to search for) or vector (an embedding) is required".into(),
        )),
    }
}

/// Embeds the query (unless it is an embedding) and fetches `candidates` ANN candidates; with how
/// long embedding, getting a pooled connection and the query took.
async fn find_candidates(
    st: &AppState,
    query: Query<'_>,
    candidates: i64,
    tags: &[String],
) -> Result<(Vec<search::Hit>, [(&'static str, Duration); 3]), ApiError> {
    let t0 = Instant::now();
    let embedding = match query {
        Query::Text(q) => st.embed(q).await?,
        Query::Vector(v) => v.to_vec(),
    };
    let t1 = Instant::now();
    let mut conn = st.pool.acquire().await.map_err(|e| st.db_error(e))?;
    let t2 = Instant::now();
    let hits = match search::search_filtered(&mut conn, &Vector::from(embedding), candidates, tags)
        .await
    {
        Ok(hits) => st.db(Ok(hits))?,
        Err(e) => match e.downcast::<sqlx::Error>() {
            Ok(db) => st.db(Err(db))?,
            Err(other) => return Err(ApiError::Internal(other)),
        },
    };
    drop(conn);
    Ok((
        hits,
        [("embed", t1 - t0), ("pool", t2 - t1), ("db", t2.elapsed())],
    ))
}

/// The stages of a request, for the `Server-Timing` header (W3C; `dur` in milliseconds): where the
/// service's time goes, readable in a browser's developer tools and split by the http_search bench.
struct ServerTiming {
    started: Instant,
    last: Instant,
    stages: Vec<(&'static str, Duration)>,
}

impl ServerTiming {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last: started,
            stages: Vec::with_capacity(6),
        }
    }

    /// Ends the stage `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.stages.push((name, now - self.last));
        self.last = now;
    }

    /// Records a stage measured elsewhere (stages that overlap); the next `mark` starts now.
    fn add(&mut self, name: &'static str, took: Duration) {
        self.stages.push((name, took));
        self.last = Instant::now();
    }

    /// `auth;dur=0.004, ratelimit;dur=0.031, …, total;dur=2.412`.
    fn header(&self) -> String {
        let mut out = String::with_capacity(128);
        for (name, d) in self
            .stages
            .iter()
            .copied()
            .chain([("total", self.started.elapsed())])
        {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&format!("{name};dur={:.3}", d.as_secs_f64() * 1e3));
        }
        out
    }
}

/// The stages of a `Server-Timing` header value, in milliseconds.
pub fn parse_server_timing(value: &str) -> Vec<(String, f64)> {
    value
        .split(',')
        .filter_map(|metric| {
            let mut parts = metric.split(';').map(str::trim);
            let name = parts.next()?.to_string();
            let dur = parts.find_map(|p| p.strip_prefix("dur="))?.parse().ok()?;
            Some((name, dur))
        })
        .collect()
}

#[derive(Deserialize)]
struct TraceRequest {
    title: String,
    context_text: String,
    solution_text: String,
    /// Its tags (searchable with a search's `tags` filter).
    #[serde(default)]
    tags: Vec<String>,
}

async fn create_trace(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TraceRequest>,
) -> Result<Response, ApiError> {
    let user = authenticate(&st, &headers, peer).await?;
    check_text("title", &req.title, 500)?;
    check_text("context_text", &req.context_text, 20_000)?;
    check_text("solution_text", &req.solution_text, 20_000)?;
    check_tags(&req.tags)?;
    let limit = st.write_limit();
    let decision = st
        .take(&key(&user.to_string(), Bucket::Write), limit, "write")
        .await?;
    let embedding = st.embed(&req.title).await?;
    let id = Uuid::new_v4();
    let inserted = sqlx::query(
        "INSERT INTO traces (id, title, context_text, solution_text, embedding, embedding_model_id, status, contributor_id, tags)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
    )
    .bind(id)
    .bind(&req.title)
    .bind(&req.context_text)
    .bind(&req.solution_text)
    .bind(Vector::from(embedding))
    .bind(st.embedder.model_id())
    .bind(user)
    .bind(&req.tags)
    .execute(&st.pool)
    .await;
    st.db(inserted)?;
    let mut resp = (
        StatusCode::CREATED,
        Json(serde_json::json!({"id": id, "status": "pending"})),
    )
        .into_response();
    rate_headers(&mut resp, decision, limit);
    Ok(resp)
}

async fn health(State(st): State<AppState>) -> Response {
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&st.pool),
    )
    .await;
    let db_ok = match db {
        Ok(result) => st.db(result).is_ok(),
        Err(_) => {
            st.outages
                .database
                .failed(&"no answer to SELECT 1 within 2 s");
            false
        }
    };
    let mut conn = st.limiter.connection();
    let redis_ok = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("PING").query_async::<String>(&mut conn)
        )
        .await,
        Ok(Ok(_))
    );
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "down" };
    let body = serde_json::json!({
        "status": if db_ok && redis_ok { "ok" } else { "degraded" },
        "database": word(db_ok),
        "redis": word(redis_ok),
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response()
}
