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

/// The ground truth of a table that changes while it is searched: the dataset's rows, which never
/// change (their exact top-k stored, [`GroundTruth`]), plus *extra* rows a bench writes, removes
/// and re-embeds. Each extra row is known by its id and its vectors — the one it is inserted with
/// (version 0) and, for rows that are re-embedded, the one it is updated to (version 1) — and its
/// state is a set of flags the writer changes ([`LiveTruth::set`]) at the right side of each
/// commit, so that a search scored against the flags it read when it started is scored exactly:
///
/// - a version becomes present *after* the statement that wrote it committed, and absent *before*
///   the statement that removes it (a DELETE, or the UPDATE that re-embeds the row) is sent;
/// - so a version the flags say is present is visible to the search's snapshot, and one the search
///   may see that the flags leave out is in flight — and a row returned at a distance no greater
///   than the k-th true one counts as found ([`recall`]'s tie rule), so an in-flight row the index
///   rightly returns is never a miss.
///
/// Only the extra versions closer to a query than its k-th dataset neighbour can enter its top-k,
/// so only those are kept, per query, nearest first.
pub struct LiveTruth {
    k: usize,
    base: GroundTruth,
    ids: Vec<Uuid>,
    /// Per query: (exact distance, extra row, version) of every extra version nearer than the
    /// k-th dataset neighbour, nearest first.
    near: Vec<Vec<(f64, u32, u8)>>,
    /// Per extra row: [`LiveTruth::V0`] | [`LiveTruth::V1`] for the versions present.
    state: Vec<std::sync::atomic::AtomicU8>,
}

impl LiveTruth {
    /// An extra row's version 0 (as inserted) is in the table.
    pub const V0: u8 = 1;
    /// Its version 1 (re-embedded) is in the table.
    pub const V1: u8 = 2;

    /// The truth of `queries` (whose dataset truth is `base`) over the dataset plus the extra rows
    /// `ids`, inserted with `inserted[e]` and re-embedded, where `reembedded[e]` is given, with it.
    /// Every extra row starts absent.
    pub fn new(
        queries: &[Vec<f32>],
        base: GroundTruth,
        ids: Vec<Uuid>,
        inserted: &[&[f32]],
        reembedded: &[Option<&[f32]>],
    ) -> Self {
        assert_eq!(queries.len(), base.ids.len(), "one base list per query");
        assert!(ids.len() == inserted.len() && ids.len() == reembedded.len());
        let k = base.k;
        let bound: Vec<f64> = base
            .distances
            .iter()
            .map(|d| {
                if d.len() < k {
                    f64::INFINITY
                } else {
                    d[k - 1] + TIE_EPSILON
                }
            })
            .collect();
        // Every version as (extra row, version, vector).
        let versions: Vec<(u32, u8, &[f32])> = inserted
            .iter()
            .enumerate()
            .map(|(e, v)| (e as u32, 0u8, *v))
            .chain(
                reembedded
                    .iter()
                    .enumerate()
                    .filter_map(|(e, v)| v.map(|v| (e as u32, 1u8, v))),
            )
            .collect();
        let dims = queries.first().map_or(0, Vec::len);
        let matrix: Vec<f32> = queries.concat();
        // Ranked by f32 dot products with a margin, kept by exact f64 distance.
        const MARGIN: f64 = 1e-3;
        let found: Vec<Vec<(usize, f64, u32, u8)>> = versions
            .par_chunks(256)
            .map(|block| {
                let mut rows = Vec::with_capacity(block.len() * dims);
                for (_, _, v) in block {
                    rows.extend_from_slice(v);
                }
                let mut scores = Vec::new();
                dot_products(&matrix, &rows, dims, &mut scores);
                let mut out = Vec::new();
                for (q, line) in scores.chunks_exact(block.len().max(1)).enumerate() {
                    for (&score, &(e, version, v)) in line.iter().zip(block) {
                        if 1.0 - f64::from(score) <= bound[q] + MARGIN {
                            let d = crate::dataset::cosine_distance(&queries[q], v);
                            if d <= bound[q] {
                                out.push((q, d, e, version));
                            }
                        }
                    }
                }
                out
            })
            .collect();
        let mut near: Vec<Vec<(f64, u32, u8)>> = vec![Vec::new(); queries.len()];
        for (q, d, e, version) in found.into_iter().flatten() {
            near[q].push((d, e, version));
        }
        for list in &mut near {
            list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        let state = (0..ids.len())
            .map(|_| std::sync::atomic::AtomicU8::new(0))
            .collect();
        Self {
            k,
            base,
            ids,
            near,
            state,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Extra row `e`'s present versions.
    pub fn versions(&self, e: usize) -> u8 {
        self.state[e].load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Extra row `e`'s present versions from now on.
    pub fn set(&self, e: usize, versions: u8) {
        self.state[e].store(versions, std::sync::atomic::Ordering::SeqCst);
    }

    /// Query `q`'s exact top-k as the table stands now: (ids, distances), nearest first.
    pub fn now(&self, q: usize) -> (Vec<Uuid>, Vec<f64>) {
        let mut merged: Vec<(f64, Uuid)> = self.base.distances[q]
            .iter()
            .copied()
            .zip(self.base.ids[q].iter().copied())
            .collect();
        for &(d, e, version) in &self.near[q] {
            let have = self.state[e as usize].load(std::sync::atomic::Ordering::SeqCst);
            if have & (1 << version) != 0 {
                merged.push((d, self.ids[e as usize]));
            }
        }
        merged.sort_by(|a, b| a.0.total_cmp(&b.0));
        merged.truncate(self.k);
        merged.into_iter().map(|(d, id)| (id, d)).unzip()
    }

    /// recall@k of `got` for query `q` against `truth`, a [`LiveTruth::now`] read before the
    /// search was sent.
    pub fn score(truth: &(Vec<Uuid>, Vec<f64>), got: &[(Uuid, f64)]) -> f64 {
        recall(&truth.0, &truth.1, got)
    }
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

    #[test]
    fn the_live_truth_is_the_exact_top_k_of_what_the_table_holds_at_every_state() {
        let (rows, extra, k) = (600u64, 300usize, 10);
        let params = DatasetParams {
            rows,
            dims: 16,
            seed: 5,
            clusters: 8,
            sigma: 0.2,
        };
        let dataset = Dataset::new(params.clone());
        let grown = Dataset::new(DatasetParams {
            rows: rows + 2 * extra as u64,
            ..params
        });
        let set = dataset.queries(12);
        let base = compute(&dataset, &set, k);
        let ids: Vec<Uuid> = (0..extra).map(|e| grown.row_id(rows + e as u64)).collect();
        let inserted: Vec<Vec<f32>> = (0..extra).map(|e| grown.vector(rows + e as u64)).collect();
        // Every third extra row is re-embedded to a vector of rows beyond them.
        let reembedded: Vec<Option<Vec<f32>>> = (0..extra)
            .map(|e| (e % 3 == 0).then(|| grown.vector(rows + (extra + e) as u64)))
            .collect();
        let (ins, re): (Vec<&[f32]>, Vec<Option<&[f32]>>) = (
            inserted.iter().map(Vec::as_slice).collect(),
            reembedded.iter().map(Option::as_deref).collect(),
        );
        let live = LiveTruth::new(&set.vectors, base.clone(), ids, &ins, &re);
        assert!(
            live.near.iter().any(|l| !l.is_empty()),
            "some extra rows are near some queries"
        );
        let check = |live: &LiveTruth, what: &str| {
            for (q, query) in set.vectors.iter().enumerate() {
                let mut all: Vec<f64> = (0..rows)
                    .map(|i| crate::dataset::cosine_distance(query, &dataset.vector(i)))
                    .collect();
                for e in 0..extra {
                    let s = live.state[e].load(std::sync::atomic::Ordering::Relaxed);
                    if s & LiveTruth::V0 != 0 {
                        all.push(crate::dataset::cosine_distance(query, &inserted[e]));
                    }
                    if s & LiveTruth::V1 != 0 {
                        let v = reembedded[e].as_ref().unwrap();
                        all.push(crate::dataset::cosine_distance(query, v));
                    }
                }
                all.sort_by(f64::total_cmp);
                let (got_ids, got) = live.now(q);
                assert_eq!(got_ids.len(), k);
                for (a, b) in got.iter().zip(&all) {
                    assert!(
                        (a - b).abs() < 1e-9,
                        "{what}, query {q}: {got:?} vs {:?}",
                        &all[..k]
                    );
                }
            }
        };
        check(&live, "nothing inserted");
        assert_eq!(live.now(0).0, base.ids[0]);
        for e in 0..extra / 2 {
            live.set(e, LiveTruth::V0);
        }
        check(&live, "half inserted");
        for e in 0..extra {
            live.set(e, LiveTruth::V0);
        }
        check(&live, "all inserted");
        assert!((0..extra).all(|e| live.versions(e) == LiveTruth::V0));
        for e in (0..extra).filter(|e| e % 3 == 0) {
            live.set(e, LiveTruth::V1);
        }
        for e in (0..extra).filter(|e| e % 5 == 1) {
            live.set(e, 0);
        }
        check(&live, "re-embedded and deleted");
        // A search that returned the truth scores 1; one that missed an inserted neighbour, less.
        let changed = (0..set.vectors.len())
            .find(|&q| live.now(q).0 != base.ids[q])
            .expect("the extra rows changed some query's top-k");
        let now = live.now(changed);
        let exact: Vec<(Uuid, f64)> = now.0.iter().copied().zip(now.1.iter().copied()).collect();
        assert_eq!(LiveTruth::score(&now, &exact), 1.0);
        let stale: Vec<(Uuid, f64)> = base.ids[changed]
            .iter()
            .copied()
            .zip(base.distances[changed].iter().copied())
            .collect();
        assert!(LiveTruth::score(&now, &stale) < 1.0);
    }
}
