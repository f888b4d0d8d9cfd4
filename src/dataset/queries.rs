//! Query sets, each of a named distribution — recall depends on which one, so every recall figure
//! says it:
//!
//! - `heldout`: new draws from the data's own distribution (a random cluster's base vector plus the
//!   dataset's noise), from streams no row uses — what ann-benchmarks' held-out queries are;
//! - `near-duplicate`: a stored row plus noise of norm 0.5 (cosine ≈ 0.9 to that row) — users
//!   re-asking questions close to stored ones;
//! - `ood` (out of distribution): the dataset's noise around the midpoint of two random clusters'
//!   base vectors — queries from a shifted, mixed distribution, as big-ann-benchmarks' OOD track.
//!
//! A correlated tag's filtered queries come from sets of their own, drawn the same way but inside the
//! tag's clusters (rows of the tag for `near-duplicate`): a search filtered by a tenant's or topic's tag
//! asks about that tenant's topics. Uncorrelated tags use the unfiltered set.

use rand::RngExt;

use super::{Dataset, Domain, Tag, normalize, stream};

pub use crate::config::Distribution;

/// The norm of the noise a near-duplicate query adds to its row (unit norm): cosine ≈ 1/√1.25.
const NEAR_DUPLICATE_NOISE_NORM: f32 = 0.5;

/// A deterministic query set.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySet {
    pub distribution: Distribution,
    /// The correlated tag whose clusters the queries were drawn in, if any.
    pub within: Option<Tag>,
    pub vectors: Vec<Vec<f32>>,
    /// The cluster each query was drawn around (the first of the two for `ood`).
    pub clusters: Vec<usize>,
}

impl QuerySet {
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// `heldout`, `heldout/c1`, …: the set's name where it is stored.
    pub fn name(&self) -> String {
        set_name(self.distribution, self.within)
    }
}

/// The stored name of the set of `distribution` drawn within `within`.
pub fn set_name(distribution: Distribution, within: Option<Tag>) -> String {
    match within {
        None => distribution.name().to_string(),
        Some(t) => format!("{}/{}", distribution.name(), t.name()),
    }
}

impl Dataset {
    /// The first `n` queries of the held-out set (query j never depends on n).
    pub fn queries(&self, n: u32) -> QuerySet {
        self.query_set(Distribution::Heldout, None, n)
    }

    /// The first `n` queries of `distribution`, drawn within the clusters (or rows) of the
    /// correlated tag `within` when given (query j never depends on n).
    pub fn query_set(&self, distribution: Distribution, within: Option<Tag>, n: u32) -> QuerySet {
        // The held-out set without a tag keeps the streams of generator version 1.
        let key = ((distribution as u64) << 40) | (within.map_or(0, Tag::code) << 48);
        let domain = |d: Domain| d as u64 | key;
        let clusters_range =
            within.map_or(0..self.params.clusters as usize, |t| self.clusters_of(t));
        let tag_rows = within.map_or(self.rows(), |t| t.count(self.rows()).max(1));
        let dims = self.dims();
        let mut vectors = Vec::with_capacity(n as usize);
        let mut clusters = Vec::with_capacity(n as usize);
        for j in 0..u64::from(n) {
            let mut v = vec![0f32; dims];
            let cluster = match distribution {
                Distribution::Heldout => {
                    let c = stream(self.params.seed, domain(Domain::QueryCluster), j)
                        .random_range(clusters_range.clone());
                    self.noisy_copy(c, domain(Domain::QueryNoise), j, &mut v);
                    c
                }
                Distribution::NearDuplicate => {
                    let pick = stream(self.params.seed, domain(Domain::QueryRow), j)
                        .random_range(0..tag_rows);
                    let row = if within.is_some() {
                        self.correlated_row(pick)
                    } else {
                        pick
                    };
                    let center = self.vector(row);
                    let sigma = NEAR_DUPLICATE_NOISE_NORM / (dims as f32).sqrt();
                    self.noisy_around(&center, sigma, domain(Domain::QueryNoise), j, &mut v);
                    self.cluster_of(row)
                }
                Distribution::OutOfDistribution => {
                    let a = stream(self.params.seed, domain(Domain::QueryCluster), j)
                        .random_range(clusters_range.clone());
                    let all = self.params.clusters as usize;
                    let b = if all > 1 {
                        // Any other cluster: a + 1 + U(0, all − 1), wrapped.
                        (a + 1
                            + stream(self.params.seed, domain(Domain::QueryOther), j)
                                .random_range(0..all - 1))
                            % all
                    } else {
                        a
                    };
                    let mut mid: Vec<f32> = self
                        .base(a)
                        .iter()
                        .zip(self.base(b))
                        .map(|(x, y)| x + y)
                        .collect();
                    normalize(&mut mid);
                    self.noisy_around(
                        &mid,
                        self.params.sigma,
                        domain(Domain::QueryNoise),
                        j,
                        &mut v,
                    );
                    a
                }
            };
            vectors.push(v);
            clusters.push(cluster);
        }
        QuerySet {
            distribution,
            within,
            vectors,
            clusters,
        }
    }
}

/// A unit-norm noise vector of `dims` from its own stream (tests compare distributions with it).
#[cfg(test)]
fn random_direction(seed: u64, dims: usize) -> Vec<f32> {
    use rand_distr::StandardNormal;
    let mut rng = stream(seed, 0, 0);
    let mut v: Vec<f32> = (0..dims).map(|_| rng.sample(StandardNormal)).collect();
    normalize(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatasetParams;
    use crate::dataset::{cosine_distance, dot};

    fn dataset() -> Dataset {
        Dataset::new(DatasetParams {
            rows: 5_000,
            clusters: 50,
            dims: 256,
            ..DatasetParams::default()
        })
    }

    #[test]
    fn names_parse_back() {
        for d in Distribution::ALL {
            assert_eq!(Distribution::parse(d.name()), Some(d));
        }
        assert_eq!(Distribution::parse("uniform"), None);
        assert_eq!(
            set_name(Distribution::NearDuplicate, Tag::parse("c1")),
            "near-duplicate/c1"
        );
    }

    #[test]
    fn sets_are_deterministic_prefix_stable_and_distinct() {
        let d = dataset();
        let c1 = Tag::parse("c1");
        for dist in Distribution::ALL {
            for within in [None, c1] {
                let a = d.query_set(dist, within, 20);
                assert_eq!(a, d.query_set(dist, within, 20));
                assert_eq!(a.vectors[..5], d.query_set(dist, within, 5).vectors[..]);
                assert!(a.vectors.iter().all(|v| (dot(v, v) - 1.0).abs() < 1e-5));
            }
        }
        let sets: Vec<QuerySet> = Distribution::ALL
            .iter()
            .flat_map(|&dist| [None, c1].map(|w| d.query_set(dist, w, 3)))
            .collect();
        for (i, a) in sets.iter().enumerate() {
            for b in &sets[i + 1..] {
                assert_ne!(a.vectors[0], b.vectors[0], "{} vs {}", a.name(), b.name());
            }
        }
    }

    #[test]
    fn the_distributions_lie_where_they_say() {
        let d = dataset();
        let n = 200;
        // Held-out: near its cluster's base, like a row (rows sit at the same distance).
        let held = d.query_set(Distribution::Heldout, None, n);
        let row_to_base = 1.0 - cosine_distance(&d.vector(7), d.base(d.cluster_of(7)));
        for (v, &c) in held.vectors.iter().zip(&held.clusters) {
            let sim = 1.0 - cosine_distance(v, d.base(c));
            assert!(
                (sim - row_to_base).abs() < 0.15,
                "held-out {sim} vs row {row_to_base}"
            );
        }
        // Near-duplicate: cosine ≈ 0.9 to some stored row of its cluster.
        let near = d.query_set(Distribution::NearDuplicate, None, n);
        for (v, &c) in near.vectors.iter().zip(&near.clusters).take(20) {
            let best = (0..d.rows())
                .filter(|&i| d.cluster_of(i) == c)
                .map(|i| 1.0 - cosine_distance(v, &d.vector(i)))
                .fold(f64::MIN, f64::max);
            assert!(
                (best - 0.894).abs() < 0.03,
                "near-duplicate's best cosine {best}"
            );
        }
        // OOD: as close to two bases as to one, farther from its first base than held-out queries.
        let ood = d.query_set(Distribution::OutOfDistribution, None, n);
        let mean = |s: &QuerySet| {
            s.vectors
                .iter()
                .zip(&s.clusters)
                .map(|(v, &c)| 1.0 - cosine_distance(v, d.base(c)))
                .sum::<f64>()
                / n as f64
        };
        assert!(
            mean(&ood) < 0.85 * mean(&held),
            "ood {} held-out {}",
            mean(&ood),
            mean(&held)
        );
        // And all are far from a random direction.
        let r = random_direction(9, d.dims());
        assert!(held.vectors.iter().all(|v| dot(v, &r).abs() < 0.4));
    }

    #[test]
    fn correlated_sets_stay_inside_their_tag() {
        let d = dataset();
        for name in ["c10", "c1", "c0.1"] {
            let t = Tag::parse(name).unwrap();
            let range = d.clusters_of(t);
            for dist in Distribution::ALL {
                let s = d.query_set(dist, Some(t), 50);
                assert!(s.clusters.iter().all(|c| range.contains(c)), "{}", s.name());
            }
        }
        // The unfiltered sets spread over all clusters.
        let s = d.query_set(Distribution::Heldout, None, 200);
        assert!(s.clusters.iter().any(|&c| c >= 40));
    }
}
