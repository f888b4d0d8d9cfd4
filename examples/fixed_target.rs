//! A target that costs almost nothing: the reference API's shape with fixed answers, so a load
//! generator's own ceiling can be measured (setup/compare-scenario.sh `TARGET=fixed`). `POST
//! /api/v1/keys` answers 201 with a key, `POST /api/v1/traces/search` answers what an empty bucket
//! answers (429, Retry-After, the limiter's headers and error body), `GET /health` 200.
//!
//! Usage: `cargo run --release --example fixed_target -- 127.0.0.1:PORT` (loopback only).

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

fn main() {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18002".into());
    let addr: SocketAddr = match arg.parse() {
        Ok(a) => a,
        Err(_) => fail(&format!("{arg:?} is not an address (e.g. 127.0.0.1:18002)")),
    };
    if !addr.ip().is_loopback() {
        fail(&format!("{addr} is not a loopback address"));
    }
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/v1/keys", post(key))
        .route("/api/v1/traces/search", post(empty_bucket));
    let rt = capbench::multi_thread_runtime(None).unwrap_or_else(|e| fail(&e.to_string()));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| fail(&format!("cannot listen on {addr}: {e}")));
        if let Err(e) = axum::serve(listener, app).await {
            fail(&e.to_string());
        }
    });
}

async fn key() -> Response {
    (
        StatusCode::CREATED,
        Json(json!({"api_key": "cb_fixed_target"})),
    )
        .into_response()
}

async fn empty_bucket() -> Response {
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"error": "rate limit exceeded"})),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert("retry-after", HeaderValue::from(1u64));
    h.insert("x-ratelimit-limit", HeaderValue::from(60u64));
    h.insert("x-ratelimit-remaining", HeaderValue::from(0u64));
    resp
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}
