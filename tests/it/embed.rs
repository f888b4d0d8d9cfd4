//! The OpenAI-compatible embedder against a local endpoint that speaks OpenAI's embeddings API (this
//! machine has no route to api.openai.com): what it sends, what it accepts, what it refuses — and the
//! service using it end to end, on real PostgreSQL+pgvector and Redis.

use crate::common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use capbench::dataset::Dataset;
use capbench::embed::{DeterministicEmbedder, Embedder, OpenAiEmbedder};
use serde_json::{Value, json};

/// How the endpoint answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail,
    WrongDims,
}

/// One request the endpoint received: its Authorization header and JSON body.
type Seen = (Option<String>, Value);

/// What the endpoint saw and how it answers: vectors from the deterministic embedder of `dataset`
/// (so searches through the service land in the dataset's clusters).
#[derive(Clone)]
struct Endpoint {
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<Mutex<Mode>>,
    embedder: Arc<DeterministicEmbedder>,
}

async fn embeddings(State(ep): State<Endpoint>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).expect("the client sends JSON");
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    ep.seen.lock().unwrap().push((auth, body.clone()));
    let mode = *ep.mode.lock().unwrap();
    if mode == Mode::Fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response();
    }
    let mut v = ep
        .embedder
        .embed_now(body["input"].as_str().expect("input is a string"));
    if mode == Mode::WrongDims {
        v.pop();
    }
    axum::Json(json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": v}],
        "model": body["model"],
        "usage": {"prompt_tokens": 3, "total_tokens": 3}
    }))
    .into_response()
}

/// Serves the endpoint on a free loopback port; returns its `…/v1` base URL.
async fn start_endpoint(dataset: Dataset) -> (String, Endpoint) {
    let ep = Endpoint {
        seen: Arc::default(),
        mode: Arc::new(Mutex::new(Mode::Ok)),
        embedder: Arc::new(DeterministicEmbedder::new(Arc::new(dataset))),
    };
    let app = axum::Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(ep.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, ep)
}

#[tokio::test]
async fn the_embedder_speaks_openais_api_and_refuses_bad_answers() {
    capbench::install_tls_provider();
    let cfg = common::service_config();
    let dims = cfg.dataset.dims as usize;
    let (base, ep) = start_endpoint(Dataset::new(cfg.dataset.clone())).await;
    let expected = ep.embedder.embed_now("react hooks useState");

    let with_key = OpenAiEmbedder::new(
        &format!("{base}/"),
        "text-embedding-3-small",
        Some("sk-test".into()),
        dims,
    )
    .unwrap();
    assert_eq!(with_key.model_id(), "text-embedding-3-small");
    let v = with_key.embed("react hooks useState").await.unwrap();
    assert_eq!(v, expected, "the endpoint's vector, unchanged");
    let (auth, body) = ep.seen.lock().unwrap().pop().unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
    assert_eq!(
        body,
        json!({"model": "text-embedding-3-small", "input": "react hooks useState", "dimensions": dims})
    );

    let without_key = OpenAiEmbedder::new(&base, "m", None, dims).unwrap();
    without_key.embed("x").await.unwrap();
    assert_eq!(
        ep.seen.lock().unwrap().pop().unwrap().0,
        None,
        "no key, no header"
    );

    *ep.mode.lock().unwrap() = Mode::WrongDims;
    let e = format!("{:#}", without_key.embed("x").await.unwrap_err());
    assert!(
        e.contains(&format!(
            "returned {} dimensions, the dataset has {dims}",
            dims - 1
        )),
        "{e}"
    );
    *ep.mode.lock().unwrap() = Mode::Fail;
    let e = format!("{:#}", without_key.embed("x").await.unwrap_err());
    assert!(e.contains("/v1/embeddings") && e.contains("500"), "{e}");

    let nobody = OpenAiEmbedder::new(
        &format!("http://127.0.0.1:{}/v1", common::free_port()),
        "m",
        None,
        dims,
    )
    .unwrap();
    let e = format!("{:#}", nobody.embed("x").await.unwrap_err());
    assert!(e.contains("calling http://127.0.0.1:"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_searches_through_the_endpoint_and_answers_503_when_it_fails() {
    let dataset = Dataset::new(common::service_config().dataset);
    let (base, ep) = start_endpoint(dataset).await;
    let url = base.clone();
    let (svc, _) = common::start_service("svc_openai_embedder", move |cfg| {
        cfg.service.embeddings_url = Some(url);
        cfg.service.embeddings_key = Some("sk-svc".into());
    })
    .await;
    let c = reqwest::Client::new();
    let key: Value = c
        .post(format!("{}/api/v1/keys", svc.url()))
        .json(&json!({"email": "embed@test.invalid"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["api_key"].as_str().unwrap().to_string();
    let search = || {
        c.post(format!("{}/api/v1/traces/search", svc.url()))
            .header("X-API-Key", &key)
            .json(&json!({"q": "postgresql migration alembic", "limit": 5}))
            .send()
    };

    let resp = search().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "{body}");
    // The endpoint's vector lies in one of the dataset's clusters: its neighbours are close.
    let best = results
        .iter()
        .map(|r| r["similarity"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert!(best > 0.9, "best similarity {best}: {body}");
    let (auth, sent) = ep.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer sk-svc"));
    assert_eq!(sent["input"], "postgresql migration alembic");

    *ep.mode.lock().unwrap() = Mode::Fail;
    let resp = search().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = resp.json().await.unwrap();
    let text = body.to_string();
    assert!(text.contains("embedding service unavailable"), "{text}");
    assert!(
        !text.contains("upstream broke"),
        "the cause stays in the log: {text}"
    );

    *ep.mode.lock().unwrap() = Mode::Ok;
    assert_eq!(search().await.unwrap().status(), StatusCode::OK, "recovers");
    svc.stop().await.unwrap();
}
