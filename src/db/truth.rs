//! Ground truth: the exact top-k of every query of the query set, by brute force over the generated
//! vectors (all cores; a sequential scan in PostgreSQL costs ~0.5 s per query at 100K), stored with
//! the dataset in `capacity_queries` and reused while its fingerprint matches.

use anyhow::{Context, Result};
use pgvector::Vector;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::dataset::{Dataset, QuerySet};

/// Bumped whenever the truth computation changes.
const TRUTH_VERSION: u32 = 1;

/// Two distances closer than this are a tie (pgvector accumulates in f32, capbench in f64).
pub const TIE_EPSILON: f64 = 1e-5;

/// The exact neighbours of each query, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub k: usize,
    pub ids: Vec<Vec<Uuid>>,
    pub distances: Vec<Vec<f64>>,
}

/// The identity of a ground truth: the dataset it was computed on, the query count and k.
pub fn fingerprint(dataset_fingerprint: &str, queries: usize, k: usize) -> String {
    let text =
        format!("truth v{TRUTH_VERSION} dataset {dataset_fingerprint} queries {queries} k {k}");
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// The k best candidates seen so far for one query, by f32 dot product (largest first).
#[derive(Clone)]
struct Best {
    keep: usize,
    items: Vec<(f32, u64)>,
}

impl Best {
    fn new(keep: usize) -> Self {
        Self {
            keep,
            items: Vec::with_capacity(keep + 1),
        }
    }

    fn offer(&mut self, score: f32, row: u64) {
        if self.items.len() == self.keep && score <= self.items[self.keep - 1].0 {
            return;
        }
        let at = self
            .items
            .partition_point(|&(s, r)| s > score || (s == score && r < row));
        self.items.insert(at, (score, row));
        self.items.truncate(self.keep);
    }

    fn merge(mut self, other: Best) -> Best {
        for (s, r) in other.items {
            self.offer(s, r);
        }
        self
    }
}

/// f32 dot product over 16 independent lanes (vectorizes; used only to rank candidates).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Brute-force exact top-`k` of every query over every row of `dataset` (cosine distance).
///
/// Rows are regenerated in blocks on all cores (no 600 MB copy of the table); candidates are ranked
/// by an f32 dot product (all vectors are unit-norm) with a margin of extra candidates, then the
/// final order uses exact f64 cosine distances, ties broken by row number.
pub fn compute(dataset: &Dataset, queries: &QuerySet, k: usize) -> GroundTruth {
    const BLOCK: u64 = 256;
    let dims = dataset.dims();
    let keep = (k + 16).min(dataset.rows() as usize);
    let blocks = dataset.rows().div_ceil(BLOCK);
    let best = (0..blocks)
        .into_par_iter()
        .fold(
            || vec![Best::new(keep); queries.len()],
            |mut best, b| {
                let (start, end) = (b * BLOCK, ((b + 1) * BLOCK).min(dataset.rows()));
                let mut rows = vec![0f32; (end - start) as usize * dims];
                for (i, v) in (start..end).zip(rows.chunks_exact_mut(dims)) {
                    dataset.vector_into(i, v);
                }
                for (q, best) in queries.vectors.iter().zip(best.iter_mut()) {
                    for (i, v) in (start..end).zip(rows.chunks_exact(dims)) {
                        best.offer(dot_f32(q, v), i);
                    }
                }
                best
            },
        )
        .reduce(
            || vec![Best::new(keep); queries.len()],
            |a, b| a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(),
        );
    let exact: Vec<Vec<(f64, u64)>> = best
        .into_par_iter()
        .zip(queries.vectors.par_iter())
        .map(|(candidates, q)| {
            let mut scored: Vec<(f64, u64)> = candidates
                .items
                .iter()
                .map(|&(_, i)| (crate::dataset::cosine_distance(q, &dataset.vector(i)), i))
                .collect();
            scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            scored.truncate(k);
            scored
        })
        .collect();
    GroundTruth {
        k,
        ids: exact
            .iter()
            .map(|v| v.iter().map(|&(_, i)| dataset.row_id(i)).collect())
            .collect(),
        distances: exact
            .iter()
            .map(|v| v.iter().map(|&(d, _)| d).collect())
            .collect(),
    }
}

/// recall@k of one result list: the fraction of the true top-k it contains. A returned neighbour
/// that is not in the true list but lies at the same distance as the k-th true neighbour (a tie)
/// counts too, as in ann-benchmarks.
pub fn recall(truth_ids: &[Uuid], truth_distances: &[f64], got: &[(Uuid, f64)]) -> f64 {
    let k = truth_ids.len();
    if k == 0 {
        return 1.0;
    }
    let kth = truth_distances[k - 1];
    let found = got
        .iter()
        .take(k)
        .filter(|(id, d)| truth_ids.contains(id) || *d <= kth + TIE_EPSILON)
        .count();
    found.min(k) as f64 / k as f64
}

/// Loads the ground truth stored for `truth_fingerprint`, if complete.
pub async fn load(
    conn: &mut PgConnection,
    truth_fingerprint: &str,
    n: usize,
    k: usize,
) -> Result<Option<GroundTruth>> {
    let rows: Vec<(Vec<Uuid>, Vec<f64>)> = sqlx::query_as(
        "SELECT truth_ids, truth_distances FROM capacity_queries WHERE fingerprint = $1 ORDER BY query_no",
    )
    .bind(truth_fingerprint)
    .fetch_all(conn)
    .await
    .context("reading the stored ground truth")?;
    if rows.len() != n {
        return Ok(None);
    }
    let (ids, distances) = rows.into_iter().unzip();
    Ok(Some(GroundTruth { k, ids, distances }))
}

/// Replaces the stored query set and ground truth, in one transaction.
pub async fn store(
    conn: &mut PgConnection,
    truth_fingerprint: &str,
    queries: &QuerySet,
    truth: &GroundTruth,
) -> Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("DELETE FROM capacity_queries")
        .execute(&mut *tx)
        .await?;
    for (j, v) in queries.vectors.iter().enumerate() {
        sqlx::query(
            "INSERT INTO capacity_queries (query_no, fingerprint, embedding, truth_ids, truth_distances)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(j as i32)
        .bind(truth_fingerprint)
        .bind(Vector::from(v.clone()))
        .bind(&truth.ids[j])
        .bind(&truth.distances[j])
        .execute(&mut *tx)
        .await
        .context("storing the ground truth")?;
    }
    tx.commit().await?;
    Ok(())
}
