//! Ground truth: the exact top-k of every query of every query set, unfiltered and under each tag
//! filter, by brute force over the generated vectors (all cores, one pass over the rows for every
//! case; a sequential scan in PostgreSQL costs ~0.5 s per query at 100K), stored with the dataset in
//! `capacity_query_vectors` and `capacity_truth` and reused while its fingerprint matches.
//!
//! A *case* is a query distribution and a filter (none or one tag). Unfiltered and uncorrelated cases
//! of a distribution share its query set; a correlated tag's cases use the set drawn within the tag
//! ([`crate::dataset::queries`]).

use anyhow::{Context, Result};
use pgvector::Vector;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::dataset::{Correlation, Dataset, Distribution, QuerySet, TAGS, Tag};

/// Bumped whenever the truth computation changes.
const TRUTH_VERSION: u32 = 2;

/// Two distances closer than this are a tie (pgvector accumulates in f32, capbench in f64).
pub const TIE_EPSILON: f64 = 1e-5;

/// The exact neighbours of each query, nearest first.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    pub k: usize,
    pub ids: Vec<Vec<Uuid>>,
    pub distances: Vec<Vec<f64>>,
}

impl GroundTruth {
    /// From each query's (distance, row number) list, nearest first.
    fn of_lists(dataset: &Dataset, k: usize, lists: &[Vec<(f64, u64)>]) -> Self {
        GroundTruth {
            k,
            ids: lists
                .iter()
                .map(|l| l.iter().map(|&(_, i)| dataset.row_id(i)).collect())
                .collect(),
            distances: lists
                .iter()
                .map(|l| l.iter().map(|&(d, _)| d).collect())
                .collect(),
        }
    }
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

/// `scores[j * m + r] = queries[j] · rows[r]` for row-major `queries` (n × dims) and
/// `rows` (m × dims): one single-precision matrix product (matrixmultiply picks AVX2/FMA kernels at
/// run time), used only to rank candidates.
fn dot_products(queries: &[f32], rows: &[f32], dims: usize, scores: &mut Vec<f32>) {
    let (n, m) = (queries.len() / dims, rows.len() / dims);
    assert!(queries.len() == n * dims && rows.len() == m * dims);
    scores.clear();
    scores.resize(n * m, 0.0);
    if n == 0 || m == 0 {
        return;
    }
    let d = dims as isize;
    // SAFETY: `queries` is n × dims (row stride dims), `rows` read as its transpose dims × m
    // (row stride 1, column stride dims), `scores` n × m (row stride m); all three lengths were
    // checked above and the slices outlive the call.
    unsafe {
        matrixmultiply::sgemm(
            n,
            dims,
            m,
            1.0,
            queries.as_ptr(),
            d,
            1,
            rows.as_ptr(),
            1,
            d,
            0.0,
            scores.as_mut_ptr(),
            m as isize,
            1,
        );
    }
}

/// One ground-truth case: a query distribution, and the tag the results must carry (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Case {
    pub distribution: Distribution,
    pub filter: Option<Tag>,
}

impl Case {
    /// The correlated tag whose clusters this case's queries are drawn in (None: the plain set).
    pub fn within(self) -> Option<Tag> {
        self.filter
            .filter(|t| t.correlation == Correlation::Correlated)
    }

    /// The stored name of this case's query set (`heldout`, `heldout/c1`, …).
    pub fn set_name(self) -> String {
        crate::dataset::set_name(self.distribution, self.within())
    }

    /// The filter as stored: `""` or the tag's name.
    pub fn filter_name(self) -> String {
        self.filter.map(Tag::name).unwrap_or_default()
    }

    /// `heldout`, `heldout, filter u1`: how a figure names its conditions.
    pub fn label(self) -> String {
        match self.filter {
            None => format!("{}, no filter", self.distribution.name()),
            Some(t) => format!("{}, filter {}", self.distribution.name(), t.name()),
        }
    }

    /// Every case: each distribution, unfiltered and under each tag.
    pub fn all() -> Vec<Case> {
        Distribution::ALL
            .into_iter()
            .flat_map(|distribution| {
                std::iter::once(None)
                    .chain(TAGS.into_iter().map(Some))
                    .map(move |filter| Case {
                        distribution,
                        filter,
                    })
            })
            .collect()
    }
}

/// The query sets the cases need (each once: `heldout`, `heldout/c50`, …), `n` queries each.
pub fn query_sets(dataset: &Dataset, cases: &[Case], n: u32) -> Vec<QuerySet> {
    let mut wanted: Vec<(Distribution, Option<Tag>)> =
        cases.iter().map(|c| (c.distribution, c.within())).collect();
    wanted.sort();
    wanted.dedup();
    wanted
        .into_par_iter()
        .map(|(d, within)| dataset.query_set(d, within, n))
        .collect()
}

/// Every case's ground truth, with the query sets it was computed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Truths {
    pub k: usize,
    pub sets: Vec<QuerySet>,
    pub cases: Vec<(Case, GroundTruth)>,
}

impl Truths {
    /// A case's query set and truth.
    pub fn get(&self, case: Case) -> Option<(&QuerySet, &GroundTruth)> {
        let truth = self.cases.iter().find(|(c, _)| *c == case)?;
        let set = self.sets.iter().find(|s| s.name() == case.set_name())?;
        Some((set, &truth.1))
    }

    /// The held-out, unfiltered case (what the hnsw bench always times).
    pub fn heldout(&self) -> (&QuerySet, &GroundTruth) {
        self.get(Case {
            distribution: Distribution::Heldout,
            filter: None,
        })
        .expect("the held-out case is always computed")
    }
}

/// Brute-force exact top-`k` of every query over every row of `dataset` (cosine distance).
pub fn compute(dataset: &Dataset, queries: &QuerySet, k: usize) -> GroundTruth {
    let case = Case {
        distribution: queries.distribution,
        filter: queries.within,
    };
    compute_all(dataset, std::slice::from_ref(queries), &[case], k)
        .cases
        .pop()
        .expect("one case in, one out")
        .1
}

/// Brute-force exact (filtered) top-`k` of every case, in one pass over the rows.
///
/// Rows are regenerated in blocks on all cores (no 600 MB copy of the table), with their tags; each
/// query's dot product with a row is computed once and offered to every case of that query's set
/// whose filter the row passes. Candidates are ranked by f32 dot products (all vectors are
/// unit-norm; one matrix product per block and query set) with a margin of extra candidates, then a second pass over the candidates' rows
/// orders them by exact f64 cosine distance, ties broken by row number. A filter matching fewer
/// than `k` rows gives a shorter list.
pub fn compute_all(dataset: &Dataset, sets: &[QuerySet], cases: &[Case], k: usize) -> Truths {
    const BLOCK: u64 = 256;
    let dims = dataset.dims();
    let keep = (k + 16).min(dataset.rows() as usize).max(1);
    // Each case's query set (by index); a case whose set is missing has no queries.
    let set_of: Vec<Option<usize>> = cases
        .iter()
        .map(|c| sets.iter().position(|s| s.name() == c.set_name()))
        .collect();
    let len_of = |ci: usize| set_of[ci].map_or(0, |s| sets[s].len());
    // Per set: the cases it serves, as (case index, tag index in TAGS or None).
    let lanes: Vec<Vec<(usize, Option<usize>)>> = (0..sets.len())
        .map(|si| {
            (0..cases.len())
                .filter(|&ci| set_of[ci] == Some(si))
                .map(|ci| (ci, cases[ci].filter.map(tag_index)))
                .collect()
        })
        .collect();
    // Heaps: one per (case, query), laid out case by case; `offsets[ci]` is case ci's first.
    let offsets: Vec<usize> = (0..cases.len())
        .scan(0, |at, ci| {
            let start = *at;
            *at += len_of(ci);
            Some(start)
        })
        .collect();
    let heaps = offsets.last().map_or(0, |o| o + len_of(cases.len() - 1));
    // Heap h → (case, query number within the case's set).
    let owner: Vec<(usize, usize)> = (0..cases.len())
        .flat_map(|ci| (0..len_of(ci)).map(move |j| (ci, j)))
        .collect();
    // Each set's queries as one row-major matrix.
    let matrices: Vec<Vec<f32>> = sets.iter().map(|s| s.vectors.concat()).collect();
    let blocks = dataset.rows().div_ceil(BLOCK);
    let fresh = || {
        (
            vec![Best::new(keep); heaps],
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
    };
    let best = (0..blocks)
        .into_par_iter()
        .fold(
            fresh,
            |(mut best, mut picked, mut numbers, mut scores), b| {
                let (start, end) = (b * BLOCK, ((b + 1) * BLOCK).min(dataset.rows()));
                let mut rows = vec![0f32; (end - start) as usize * dims];
                let mut masks = Vec::with_capacity((end - start) as usize);
                for (i, v) in (start..end).zip(rows.chunks_exact_mut(dims)) {
                    dataset.vector_into(i, v);
                    masks.push(
                        dataset
                            .tags_of(i)
                            .into_iter()
                            .fold(0u32, |m, t| m | 1 << tag_index(t)),
                    );
                }
                for ((set, lanes), matrix) in sets.iter().zip(&lanes).zip(&matrices) {
                    if lanes.is_empty() {
                        continue;
                    }
                    // A set drawn within a correlated tag only serves that tag: only its rows count.
                    let block: &[f32] = match set.within.map(tag_index) {
                        None => {
                            numbers.clear();
                            numbers.extend(0..masks.len());
                            &rows
                        }
                        Some(t) => {
                            numbers.clear();
                            numbers.extend((0..masks.len()).filter(|&r| masks[r] & (1 << t) != 0));
                            picked.clear();
                            for &r in &numbers {
                                picked.extend_from_slice(&rows[r * dims..(r + 1) * dims]);
                            }
                            &picked
                        }
                    };
                    if numbers.is_empty() {
                        continue;
                    }
                    dot_products(matrix, block, dims, &mut scores);
                    for (j, line) in scores.chunks_exact(numbers.len()).enumerate() {
                        for (&score, &r) in line.iter().zip(&numbers) {
                            let (mask, i) = (masks[r], start + r as u64);
                            for &(ci, tag) in lanes {
                                if tag.is_none_or(|t| mask & (1 << t) != 0) {
                                    best[offsets[ci] + j].offer(score, i);
                                }
                            }
                        }
                    }
                }
                (best, picked, numbers, scores)
            },
        )
        .map(|(best, ..)| best)
        .reduce(
            || vec![Best::new(keep); heaps],
            |a, b| a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(),
        );
    // Exact re-rank: every candidate row regenerated once, its f64 distance to each query that kept it.
    let mut wanted: Vec<(u64, usize)> = best
        .iter()
        .enumerate()
        .flat_map(|(h, b)| b.items.iter().map(move |&(_, i)| (i, h)))
        .collect();
    wanted.sort_unstable();
    let scored: Vec<(usize, f64, u64)> = wanted
        .par_chunk_by(|a, b| a.0 == b.0)
        .flat_map_iter(|group| {
            let v = dataset.vector(group[0].0);
            group
                .iter()
                .map(|&(i, h)| {
                    let (ci, j) = owner[h];
                    let set = &sets[set_of[ci].expect("a heap belongs to a case with a set")];
                    (h, crate::dataset::cosine_distance(&set.vectors[j], &v), i)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut per_heap: Vec<Vec<(f64, u64)>> = vec![Vec::new(); heaps];
    for (h, d, i) in scored {
        per_heap[h].push((d, i));
    }
    for list in &mut per_heap {
        list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        list.truncate(k);
    }
    let out = cases
        .iter()
        .enumerate()
        .map(|(ci, &c)| {
            let lists = &per_heap[offsets[ci]..offsets[ci] + len_of(ci)];
            (c, GroundTruth::of_lists(dataset, k, lists))
        })
        .collect();
    Truths {
        k,
        sets: sets.to_vec(),
        cases: out,
    }
}

fn tag_index(t: Tag) -> usize {
    TAGS.iter().position(|x| *x == t).expect("a known tag")
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

/// Loads every case's truth stored for `truth_fingerprint`, if complete.
pub async fn load(
    conn: &mut PgConnection,
    truth_fingerprint: &str,
    sets: Vec<QuerySet>,
    cases: &[Case],
    k: usize,
) -> Result<Option<Truths>> {
    let rows: Vec<(String, String, Vec<Uuid>, Vec<f64>)> = sqlx::query_as(
        "SELECT query_set, filter, truth_ids, truth_distances FROM capacity_truth \
         WHERE fingerprint = $1 ORDER BY query_set, filter, query_no",
    )
    .bind(truth_fingerprint)
    .fetch_all(&mut *conn)
    .await
    .context("reading the stored ground truth")?;
    let vectors: i64 =
        sqlx::query_scalar("SELECT count(*) FROM capacity_query_vectors WHERE fingerprint = $1")
            .bind(truth_fingerprint)
            .fetch_one(&mut *conn)
            .await
            .context("reading the stored query sets")?;
    if vectors != sets.iter().map(|s| s.len() as i64).sum::<i64>() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(cases.len());
    for &case in cases {
        let (set, filter) = (case.set_name(), case.filter_name());
        let (ids, distances): (Vec<Vec<Uuid>>, Vec<Vec<f64>>) = rows
            .iter()
            .filter(|r| r.0 == set && r.1 == filter)
            .map(|r| (r.2.clone(), r.3.clone()))
            .unzip();
        let n = sets
            .iter()
            .find(|s| s.name() == set)
            .map_or(0, QuerySet::len);
        if ids.len() != n {
            return Ok(None);
        }
        out.push((case, GroundTruth { k, ids, distances }));
    }
    Ok(Some(Truths {
        k,
        sets,
        cases: out,
    }))
}

/// Replaces the stored query sets and ground truth, in one transaction.
pub async fn store(
    conn: &mut PgConnection,
    truth_fingerprint: &str,
    truths: &Truths,
) -> Result<()> {
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("DELETE FROM capacity_query_vectors; DELETE FROM capacity_truth")
        .execute(&mut *tx)
        .await?;
    for set in &truths.sets {
        for (j, v) in set.vectors.iter().enumerate() {
            sqlx::query(
                "INSERT INTO capacity_query_vectors (query_set, query_no, fingerprint, embedding) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(set.name())
            .bind(j as i32)
            .bind(truth_fingerprint)
            .bind(Vector::from(v.clone()))
            .execute(&mut *tx)
            .await
            .context("storing the query sets")?;
        }
    }
    for (case, truth) in &truths.cases {
        for (j, (ids, distances)) in truth.ids.iter().zip(&truth.distances).enumerate() {
            sqlx::query(
                "INSERT INTO capacity_truth (query_set, filter, query_no, fingerprint, truth_ids, truth_distances) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(case.set_name())
            .bind(case.filter_name())
            .bind(j as i32)
            .bind(truth_fingerprint)
            .bind(ids)
            .bind(distances)
            .execute(&mut *tx)
            .await
            .context("storing the ground truth")?;
        }
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatasetParams;

    /// The definition: every row passing the case's filter, by exact f64 cosine distance, ties by
    /// row number, the first k.
    fn naive(dataset: &Dataset, set: &QuerySet, filter: Option<Tag>, k: usize) -> GroundTruth {
        let rows: Vec<(u64, Vec<f32>)> = (0..dataset.rows())
            .filter(|&i| filter.is_none_or(|t| dataset.has_tag(i, t)))
            .map(|i| (i, dataset.vector(i)))
            .collect();
        let lists: Vec<Vec<(f64, u64)>> = set
            .vectors
            .iter()
            .map(|q| {
                let mut all: Vec<(f64, u64)> = rows
                    .iter()
                    .map(|(i, v)| (crate::dataset::cosine_distance(q, v), *i))
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                all.truncate(k);
                all
            })
            .collect();
        GroundTruth::of_lists(dataset, k, &lists)
    }

    #[test]
    fn every_case_equals_the_exact_filtered_top_k_by_definition() {
        // 2,100 rows: not a multiple of the 256-row block; the 0.1 % tags have 2 rows (< k).
        let data = Dataset::new(DatasetParams {
            rows: 2_100,
            dims: 40,
            clusters: 30,
            ..Default::default()
        });
        let cases = Case::all();
        let sets = query_sets(&data, &cases, 12);
        let k = 10;
        let all = compute_all(&data, &sets, &cases, k);
        assert_eq!(all.cases.len(), cases.len());
        let mut short = 0;
        for &case in &cases {
            let (set, got) = all.get(case).expect("every case is computed");
            assert_eq!(set.name(), case.set_name());
            let want = naive(&data, set, case.filter, k);
            assert_eq!(got.ids, want.ids, "{}", case.label());
            for (g, w) in got.distances.iter().zip(&want.distances) {
                assert_eq!(g.len(), w.len());
                assert!(g.iter().zip(w).all(|(a, b)| (a - b).abs() < 1e-12));
            }
            short += got.ids.iter().filter(|l| l.len() < k).count();
        }
        assert!(short > 0, "some filter matches fewer than k rows here");
    }

    #[test]
    fn dot_products_are_the_matrix_of_dot_products() {
        let dims = 19;
        let q: Vec<f32> = (0..3 * dims).map(|x| (x as f32 * 0.37).sin()).collect();
        let r: Vec<f32> = (0..5 * dims).map(|x| (x as f32 * 0.11).cos()).collect();
        let mut scores = vec![7.0; 2];
        dot_products(&q, &r, dims, &mut scores);
        assert_eq!(scores.len(), 15);
        for j in 0..3 {
            for i in 0..5 {
                let want = crate::dataset::dot(&q[j * dims..][..dims], &r[i * dims..][..dims]);
                assert!((scores[j * 5 + i] as f64 - want).abs() < 1e-4);
            }
        }
        dot_products(&q, &[], dims, &mut scores);
        assert!(scores.is_empty());
    }
}
