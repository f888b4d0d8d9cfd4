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

async fn create_key(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(req): ApiJson<KeyRequest>,
) -> Result<Response, ApiError> {
    let email = req.email.trim();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
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
    let user_id: Uuid = sqlx::query_scalar(
        "INSERT INTO users (id, email, display_name) VALUES ($1, $2, $2)
         ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(email)
    .fetch_one(&st.pool)
    .await
    .map_err(ApiError::database)?;
    sqlx::query("INSERT INTO api_keys (id, key_hash, user_id) VALUES ($1, $2, $3)")
        .bind(Uuid::new_v4())
        .bind(&hash)
        .bind(user_id)
        .execute(&st.pool)
        .await
        .map_err(ApiError::database)?;
    st.keys
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(hash, user_id);
    let mut resp = (StatusCode::CREATED, Json(KeyResponse { api_key })).into_response();
    rate_headers(&mut resp, decision, limit);
    Ok(resp)
}

/// The user behind the request's `X-API-Key`.
async fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<Uuid, ApiError> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let hash = hash_key(key.trim());
    if let Some(user) = st.keys.read().unwrap_or_else(|e| e.into_inner()).get(&hash) {
        return Ok(*user);
    }
    let user: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM api_keys WHERE key_hash = $1")
        .bind(&hash)
        .fetch_optional(&st.pool)
        .await
        .map_err(ApiError::database)?;
    let user = user.ok_or(ApiError::Unauthorized)?;
    st.keys
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(hash, user);
    Ok(user)
}

#[derive(Deserialize)]
struct SearchRequest {
    q: String,
    #[serde(default = "default_limit")]
    limit: i64,
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
    headers: HeaderMap,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut timing = ServerTiming::new(started);
    let user = authenticate(&st, &headers).await?;
    timing.mark("auth");
    let q = req.q.trim();
    if q.is_empty() || req.q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::Unprocessable(format!(
            "q must be 1 to {MAX_QUERY_CHARS} characters"
        )));
    }
    if !(1..=50).contains(&req.limit) {
        return Err(ApiError::Unprocessable(
            "limit must be between 1 and 50".into(),
        ));
    }
    let limit = st.read_limit();
    let bucket_key = key(&user.to_string(), Bucket::Read);
    let candidates = ann_candidates(st.params.search_ef_search, req.limit);
    let decision = st.take(&bucket_key, limit, "read").await?;
    timing.mark("ratelimit");
    let (hits, stages) = find_candidates(&st, q, candidates).await?;
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

/// Embeds `q` and fetches `candidates` ANN candidates; with how long embedding, getting a pooled
/// connection and the query took.
async fn find_candidates(
    st: &AppState,
    q: &str,
    candidates: i64,
) -> Result<(Vec<search::Hit>, [(&'static str, Duration); 3]), ApiError> {
    let t0 = Instant::now();
    let embedding = st.embedder.embed(q).await.map_err(ApiError::embedding)?;
    let t1 = Instant::now();
    let mut conn = st.pool.acquire().await.map_err(ApiError::database)?;
    let t2 = Instant::now();
    let hits = search::search(&mut conn, &Vector::from(embedding), candidates)
        .await
        .map_err(|e| match e.downcast::<sqlx::Error>() {
            Ok(db) => ApiError::database(db),
            Err(other) => ApiError::Internal(other),
        })?;
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
}

async fn create_trace(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TraceRequest>,
) -> Result<Response, ApiError> {
    let user = authenticate(&st, &headers).await?;
    for (field, value, max) in [
        ("title", &req.title, 500),
        ("context_text", &req.context_text, 20_000),
        ("solution_text", &req.solution_text, 20_000),
    ] {
        if value.trim().is_empty() || value.chars().count() > max {
            return Err(ApiError::Unprocessable(format!(
                "{field} must be 1 to {max} characters"
            )));
        }
    }
    let limit = st.write_limit();
    let decision = st
        .take(&key(&user.to_string(), Bucket::Write), limit, "write")
        .await?;
    let embedding = st
        .embedder
        .embed(&req.title)
        .await
        .map_err(ApiError::Internal)?;
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO traces (id, title, context_text, solution_text, embedding, embedding_model_id, status, contributor_id)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7)",
    )
    .bind(id)
    .bind(&req.title)
    .bind(&req.context_text)
    .bind(&req.solution_text)
    .bind(Vector::from(embedding))
    .bind(st.embedder.model_id())
    .bind(user)
    .execute(&st.pool)
    .await
    .map_err(ApiError::database)?;
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
    let db_ok = matches!(db, Ok(Ok(_)));
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
