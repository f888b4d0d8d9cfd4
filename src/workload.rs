//! What the workloads send: the seeds' search queries and their vectors. The benches, the service
//! and `load` draw from here, so every layer measures the same requests.

use std::sync::Arc;

use pgvector::Vector;

use crate::config::DatasetParams;
use crate::dataset::Dataset;
use crate::embed::DeterministicEmbedder;

/// The seeds' ten search queries (SearchLoadUser rotates through them).
pub const SEARCH_QUERIES: [&str; 10] = [
    "react hooks useState",
    "postgresql migration alembic",
    "docker compose healthcheck",
    "fastapi async sqlalchemy",
    "python error handling retry",
    "github actions ci pipeline",
    "jwt authentication middleware",
    "redis caching ttl pattern",
    "typescript generics utility types",
    "pytest fixtures conftest setup",
];

/// The query vectors of the database target: the seeds' ten queries, embedded as the service does
/// for the dataset `params` describe (the `capacity_meta.params` of the database under load).
pub fn query_vectors(params: &DatasetParams) -> Vec<Vector> {
    let embedder = DeterministicEmbedder::new(Arc::new(Dataset::new(params.clone())));
    SEARCH_QUERIES
        .iter()
        .map(|q| Vector::from(embedder.embed_now(q)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_query_has_its_own_vector_and_the_same_one_every_time() {
        let params = DatasetParams {
            dims: 16,
            ..DatasetParams::default()
        };
        let a = query_vectors(&params);
        let b = query_vectors(&params);
        assert_eq!(a.len(), SEARCH_QUERIES.len());
        assert_eq!(a, b, "the embedding is deterministic");
        assert!(a.iter().all(|v| v.as_slice().len() == 16));
        for (i, v) in a.iter().enumerate() {
            assert!(
                a[i + 1..].iter().all(|w| w != v),
                "query {i} repeats a vector"
            );
        }
    }
}
