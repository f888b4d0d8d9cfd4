//! Recall under load (`load --recall`): the queries come from a query set with ground truth (the
//! dataset's `heldout`, `near-duplicate` or `ood` set, docs/recall.md), and every answer received is
//! scored against it — the database target's rows, or the service's `/results/*/id` and
//! `similarity` (distance = 1 − similarity). A request's recall is part of its outcome; the
//! statistics keep the mean, the worst and how many answers were scored, per request name and level.

use anyhow::{Context, Result};
use pgvector::Vector;
use serde_json::Value;
use uuid::Uuid;

use crate::config::{Config, DatasetParams, Distribution};
use crate::db::truth::{self, Case, GroundTruth};

/// A query set with its ground truth, ready to score answers.
#[derive(Debug)]
pub struct Scorer {
    pub distribution: Distribution,
    /// k of recall@k: the answers' first k rows are scored.
    pub k: usize,
    vectors: Vec<Vector>,
    truth: GroundTruth,
}

impl Scorer {
    /// The unfiltered set of `distribution` of the dataset loaded at `url` (described by `loaded`),
    /// with its ground truth: read back where `setup` or a bench stored it, computed and stored
    /// otherwise (brute force, every core: ~1 min at 100K × 1536).
    pub async fn prepare(
        config: &Config,
        url: &str,
        loaded: DatasetParams,
        distribution: Distribution,
    ) -> Result<Self> {
        let (truths, computed) = crate::setup::ensure_truth_of_loaded(config, url, &loaded)
            .await
            .context("the ground truth that load --recall scores against")?;
        if let Some(secs) = computed {
            eprintln!(
                "load: ground truth computed in {secs:.1} s and stored with the dataset ({} queries per set, k {})",
                config.bench.queries, truths.k
            );
        }
        let (set, truth) = truths
            .get(Case {
                distribution,
                filter: None,
            })
            .context("the ground truth has no unfiltered case of this distribution")?;
        Ok(Self::new(
            distribution,
            set.vectors
                .iter()
                .map(|v| Vector::from(v.clone()))
                .collect(),
            truth.clone(),
        ))
    }

    /// A scorer over `vectors` and their `truth` (the same order).
    pub fn new(distribution: Distribution, vectors: Vec<Vector>, truth: GroundTruth) -> Self {
        Self {
            distribution,
            k: truth.k,
            vectors,
            truth,
        }
    }

    /// One query and no truth: what a scenario is checked with before the real set is read (its
    /// records have the real set's fields).
    pub fn stand_in(distribution: Distribution) -> Self {
        Self::new(
            distribution,
            vec![Vector::from(vec![1.0])],
            GroundTruth {
                k: 0,
                ids: vec![Vec::new()],
                distances: vec![Vec::new()],
            },
        )
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    pub fn vectors(&self) -> &[Vector] {
        &self.vectors
    }

    /// The set's ground truth over the dataset.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// recall@k of the answer `got` (ids with cosine distances, best first) to query `index`
    /// (wrapping: query `index % len`), ties counted as ann-benchmarks counts them.
    pub fn score(&self, index: usize, got: &[(Uuid, f64)]) -> f64 {
        let i = index % self.vectors.len().max(1);
        truth::recall(&self.truth.ids[i], &self.truth.distances[i], got)
    }

    /// The recall of a search API's JSON answer to query `index`: its `results`, each with an `id`
    /// (a UUID) and a `similarity` (1 − cosine distance), best first. `Err` says what the answer
    /// lacks.
    pub fn score_answer(&self, index: usize, answer: &Value) -> Result<f64, String> {
        let results = answer
            .get("results")
            .and_then(Value::as_array)
            .ok_or("recall: no results array in the answer")?;
        let got = results
            .iter()
            .map(|r| {
                let id = r
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or("recall: a result without a UUID id")?;
                let similarity = r
                    .get("similarity")
                    .and_then(Value::as_f64)
                    .ok_or("recall: a result without a numeric similarity")?;
                Ok((id, 1.0 - similarity))
            })
            .collect::<Result<Vec<_>, &str>>()?;
        Ok(self.score(index, &got))
    }
}

/// What a run's scored answers came to: how many, their recall per query, the worst answer's.
///
/// The mean weighs every query of the set alike (the mean over queries of each query's mean
/// answer): a level that sent some queries more often than others (a run of 1,500 requests over a
/// set of 1,000) still states the set's recall, which a serial pass over the set would give if the
/// answers under load are the same.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecallSummary {
    /// Answers scored.
    pub scored: u64,
    /// Per query number: the sum of its answers' recall and how many.
    per_query: std::collections::BTreeMap<usize, (f64, u64)>,
    min: f64,
}

impl RecallSummary {
    /// Adds the recall `r` of an answer to query number `query`.
    pub fn add(&mut self, query: usize, r: f64) {
        self.min = if self.scored == 0 { r } else { self.min.min(r) };
        self.scored += 1;
        let q = self.per_query.entry(query).or_default();
        q.0 += r;
        q.1 += 1;
    }

    /// Distinct queries answered.
    pub fn queries(&self) -> usize {
        self.per_query.len()
    }

    /// The mean over the queries answered of each one's mean recall (None: nothing scored).
    pub fn mean(&self) -> Option<f64> {
        (self.scored > 0).then(|| {
            self.per_query
                .values()
                .map(|(sum, n)| sum / *n as f64)
                .sum::<f64>()
                / self.per_query.len() as f64
        })
    }

    /// The worst answer's recall (None: nothing scored).
    pub fn min(&self) -> Option<f64> {
        (self.scored > 0).then_some(self.min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scorer() -> (Scorer, Vec<Uuid>) {
        let ids: Vec<Uuid> = (0..4).map(|i| Uuid::from_u128(i + 1)).collect();
        let truth = GroundTruth {
            k: 2,
            ids: vec![vec![ids[0], ids[1]], vec![ids[2], ids[3]]],
            distances: vec![vec![0.1, 0.2], vec![0.3, 0.4]],
        };
        let v = vec![Vector::from(vec![1.0, 0.0]), Vector::from(vec![0.0, 1.0])];
        (Scorer::new(Distribution::Heldout, v, truth), ids)
    }

    #[test]
    fn answers_are_scored_against_their_querys_truth() {
        let (s, ids) = scorer();
        assert_eq!(s.k, 2);
        assert_eq!(s.score(0, &[(ids[0], 0.1), (ids[1], 0.2)]), 1.0);
        assert_eq!(s.score(1, &[(ids[0], 0.9), (ids[3], 0.4)]), 0.5);
        // Query 2 wraps to query 0.
        assert_eq!(s.score(2, &[(ids[2], 0.9)]), 0.0);
        let answer = json!({"results": [
            {"id": ids[2].to_string(), "similarity": 0.7},
            {"id": Uuid::from_u128(99).to_string(), "similarity": 0.5},
        ]});
        assert_eq!(s.score_answer(1, &answer), Ok(0.5));
        // A result at the k-th true distance is a tie, and counts.
        let tie = json!({"results": [{"id": Uuid::from_u128(99).to_string(), "similarity": 0.6}]});
        assert_eq!(s.score_answer(1, &tie), Ok(0.5));
        for (bad, why) in [
            (json!({"hits": []}), "no results array"),
            (
                json!({"results": [{"id": "x", "similarity": 1}]}),
                "UUID id",
            ),
            (
                json!({"results": [{"id": ids[0].to_string()}]}),
                "numeric similarity",
            ),
        ] {
            let e = s.score_answer(0, &bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_summary_keeps_mean_and_worst() {
        let mut r = RecallSummary::default();
        assert_eq!((r.mean(), r.min()), (None, None));
        // Query 0 answered three times (1.0 each), query 1 once (0.4): each query weighs alike.
        for (q, x) in [(0, 1.0), (1, 0.4), (0, 1.0), (0, 1.0)] {
            r.add(q, x);
        }
        assert_eq!((r.scored, r.queries()), (4, 2));
        assert!(
            (r.mean().unwrap() - 0.7).abs() < 1e-12,
            "not 0.85 by answers"
        );
        assert_eq!(r.min(), Some(0.4));
    }
}
