//! Query text → vector. The built-in embedder is deterministic and offline: it maps a text into the
//! dataset's own distribution (a cluster's base vector plus the dataset's noise, both chosen by a
//! hash of the text), so searches behave like real ones on the generated data. An OpenAI-compatible
//! embeddings endpoint can be plugged in instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::dataset::Dataset;

pub type EmbedFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<f32>>> + Send + 'a>>;

/// Turns text into an embedding of the dataset's dimension.
pub trait Embedder: Send + Sync {
    fn embed<'a>(&'a self, text: &'a str) -> EmbedFuture<'a>;
    /// What the service reports and stores as `embedding_model_id`.
    fn model_id(&self) -> &str;
}

/// Text → a point of the dataset's distribution, chosen by SHA-256 of the text. No network.
pub struct DeterministicEmbedder {
    dataset: Arc<Dataset>,
}

impl DeterministicEmbedder {
    pub fn new(dataset: Arc<Dataset>) -> Self {
        Self { dataset }
    }

    pub fn embed_now(&self, text: &str) -> Vec<f32> {
        let digest = Sha256::digest(text.as_bytes());
        let word = |i: usize| u64::from_le_bytes(digest[i..i + 8].try_into().unwrap_or([0; 8]));
        let cluster = (word(0) % u64::from(self.dataset.params.clusters)) as usize;
        let mut v = vec![0f32; self.dataset.dims()];
        self.dataset
            .noisy_copy(cluster, EMBED_DOMAIN, word(8), &mut v);
        v
    }
}

/// The random-stream domain of embedded texts (distinct from rows and queries).
const EMBED_DOMAIN: u64 = 0x7465_7874; // "text"

impl Embedder for DeterministicEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> EmbedFuture<'a> {
        Box::pin(async move { Ok(self.embed_now(text)) })
    }

    fn model_id(&self) -> &str {
        crate::dataset::EMBEDDING_MODEL_ID
    }
}

/// An OpenAI-compatible `POST {base}/embeddings` endpoint.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    key: Option<String>,
    dims: usize,
}

impl OpenAiEmbedder {
    pub fn new(base_url: &str, model: &str, key: Option<String>, dims: usize) -> Result<Self> {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the embeddings HTTP client")?;
        Ok(Self {
            client,
            url: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.to_string(),
            key,
            dims,
        })
    }
}

#[derive(serde::Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
}

impl Embedder for OpenAiEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> EmbedFuture<'a> {
        Box::pin(async move {
            let mut req = self.client.post(&self.url).json(
                &serde_json::json!({"model": self.model, "input": text, "dimensions": self.dims}),
            );
            if let Some(key) = &self.key {
                req = req.bearer_auth(key);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("calling {}", self.url))?;
            let status = resp.status();
            if !status.is_success() {
                bail!("{} answered {status}", self.url);
            }
            let body: EmbeddingsResponse = resp
                .json()
                .await
                .with_context(|| format!("reading {}", self.url))?;
            let v = body
                .data
                .into_iter()
                .next()
                .map(|d| d.embedding)
                .unwrap_or_default();
            if v.len() != self.dims {
                bail!(
                    "{} returned {} dimensions, the dataset has {}",
                    self.url,
                    v.len(),
                    self.dims
                );
            }
            Ok(v)
        })
    }

    fn model_id(&self) -> &str {
        &self.model
    }
}
