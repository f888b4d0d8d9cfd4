//! Filterable attributes: every generated trace carries tags (the seeds' traces are tagged), drawn so
//! that each tag covers an exact share of the rows — 50 %, 10 %, 1 %, 0.1 % — in two families:
//!
//! - **uncorrelated** (`u50`, `u10`, `u1`, `u0.1`): rows ranked by a keyed pseudo-random permutation
//!   of `0..rows` (a Feistel network, cycle-walked), the tag on the first `share × rows` ranks: blind to
//!   the clusters, so a query's true neighbours carry it at the tag's share.
//! - **correlated** (`c50`, `c10`, `c1`, `c0.1`): rows ranked cluster by cluster (all of cluster 0, then
//!   cluster 1, …), the tag on the first `share × rows` ranks: it follows the clusters, as a tenant's or a
//!   topic's tag does.
//!
//! Tags of one family nest (`u0.1 ⊂ u1 ⊂ u10 ⊂ u50`). Each row's tags are computed from its index alone,
//! in O(1), on any thread, always the same.

use super::{Dataset, splitmix64};

/// Which family a tag belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Correlation {
    /// Blind to the clusters.
    Uncorrelated,
    /// Follows the clusters.
    Correlated,
}

/// One filterable tag: its family and the share of rows it covers, in basis points (1/10,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub correlation: Correlation,
    pub basis_points: u32,
}

/// The shares every family has: 50 %, 10 %, 1 %, 0.1 % (decades below one half).
const SHARES_BP: [u32; 4] = [5000, 1000, 100, 10];

/// Every tag a generated row can carry, uncorrelated first, widest first.
pub const TAGS: [Tag; 8] = {
    let mut tags = [Tag {
        correlation: Correlation::Uncorrelated,
        basis_points: 0,
    }; 8];
    let mut i = 0;
    while i < 8 {
        tags[i] = Tag {
            correlation: if i < 4 {
                Correlation::Uncorrelated
            } else {
                Correlation::Correlated
            },
            basis_points: SHARES_BP[i % 4],
        };
        i += 1;
    }
    tags
};

impl Tag {
    /// `u1`, `c0.1`, …: the family's letter and the share in percent.
    pub fn name(self) -> String {
        let letter = match self.correlation {
            Correlation::Uncorrelated => 'u',
            Correlation::Correlated => 'c',
        };
        format!("{letter}{}", percent(self.basis_points))
    }

    /// The tag called `name` (`u1`, `c0.1`, …), if there is one.
    pub fn parse(name: &str) -> Option<Tag> {
        TAGS.into_iter().find(|t| t.name() == name)
    }

    /// How many of `rows` rows carry it: `share × rows`, rounded to the nearest row.
    pub fn count(self, rows: u64) -> u64 {
        ((u128::from(self.basis_points) * u128::from(rows) + 5_000) / 10_000) as u64
    }

    /// A small number that identifies the tag in random-stream keys (never 0: 0 is "no tag").
    pub(crate) fn code(self) -> u64 {
        1 + TAGS.iter().position(|t| *t == self).unwrap_or(0) as u64
    }
}

fn percent(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}", bp / 100)
    } else {
        let s = format!("{:.2}", f64::from(bp) / 100.0);
        s.trim_end_matches('0').to_string()
    }
}

/// Key of the uncorrelated permutation (a constant mixed with the dataset's seed).
const PERMUTATION_KEY: u64 = 0x7461_6773; // "tags"

impl Dataset {
    /// Row `i`'s place in the uncorrelated order (a bijection of `0..rows`).
    pub fn uncorrelated_rank(&self, i: u64) -> u64 {
        permute(
            i,
            self.rows(),
            splitmix64(self.params.seed ^ PERMUTATION_KEY),
        )
    }

    /// Row `i`'s place in the correlated order: all rows of cluster 0, then of cluster 1, ….
    pub fn correlated_rank(&self, i: u64) -> u64 {
        let c = u64::from(self.params.clusters);
        let (q, r) = (self.rows() / c, self.rows() % c);
        let (cluster, position) = (i % c, i / c);
        cluster * q + cluster.min(r) + position
    }

    /// The row at place `rank` of the correlated order (the inverse of [`Dataset::correlated_rank`]).
    pub fn correlated_row(&self, rank: u64) -> u64 {
        let c = u64::from(self.params.clusters);
        let (q, r) = (self.rows() / c, self.rows() % c);
        let (cluster, position) = if rank < r * (q + 1) {
            (rank / (q + 1), rank % (q + 1))
        } else {
            let rest = rank - r * (q + 1);
            (r + rest / q, rest % q)
        };
        position * c + cluster
    }

    /// Whether row `i` carries `tag`.
    pub fn has_tag(&self, i: u64, tag: Tag) -> bool {
        let rank = match tag.correlation {
            Correlation::Uncorrelated => self.uncorrelated_rank(i),
            Correlation::Correlated => self.correlated_rank(i),
        };
        rank < tag.count(self.rows())
    }

    /// The tags of row `i`, in [`TAGS`] order.
    pub fn tags_of(&self, i: u64) -> Vec<Tag> {
        let (u, c) = (self.uncorrelated_rank(i), self.correlated_rank(i));
        TAGS.into_iter()
            .filter(|t| {
                let rank = match t.correlation {
                    Correlation::Uncorrelated => u,
                    Correlation::Correlated => c,
                };
                rank < t.count(self.rows())
            })
            .collect()
    }

    /// The clusters a correlated tag's rows lie in (0 ..= the cluster of its last row).
    pub fn clusters_of(&self, tag: Tag) -> std::ops::Range<usize> {
        let count = tag.count(self.rows()).max(1);
        0..self.cluster_of(self.correlated_row(count - 1)) + 1
    }
}

/// A keyed bijection of `0..n`: a four-round Feistel network on the smallest even number of bits
/// covering `n`, cycle-walked until the value falls below `n` (fewer than four steps on average).
fn permute(i: u64, n: u64, key: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let bits = 64 - (n - 1).leading_zeros();
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..4u64 {
            let f = splitmix64(key ^ (round << 56) ^ r) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatasetParams;

    fn dataset(rows: u64, clusters: u32) -> Dataset {
        Dataset::new(DatasetParams {
            rows,
            clusters,
            dims: 8,
            ..DatasetParams::default()
        })
    }

    #[test]
    fn names_round_trip_and_read_as_percent() {
        let names: Vec<String> = TAGS.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            ["u50", "u10", "u1", "u0.1", "c50", "c10", "c1", "c0.1"]
        );
        for t in TAGS {
            assert_eq!(Tag::parse(&t.name()), Some(t));
        }
        assert_eq!(Tag::parse("u2"), None);
        assert!(TAGS.iter().all(|t| t.code() >= 1));
    }

    #[test]
    fn counts_round_to_the_nearest_row() {
        let u01 = Tag::parse("u0.1").unwrap();
        assert_eq!(u01.count(100_000), 100);
        assert_eq!(u01.count(1_499), 1); // 1.499
        assert_eq!(u01.count(1_500), 2); // 1.5 rounds up
        assert_eq!(Tag::parse("u50").unwrap().count(3), 2); // 1.5
        assert_eq!(Tag::parse("u10").unwrap().count(20_000), 2_000);
    }

    #[test]
    fn the_permutation_is_a_bijection_for_awkward_sizes() {
        for n in [1u64, 2, 3, 7, 64, 65, 1000, 4097] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, 42)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
        assert_ne!(
            (0..100).map(|i| permute(i, 100, 1)).collect::<Vec<_>>(),
            (0..100).map(|i| permute(i, 100, 2)).collect::<Vec<_>>(),
            "the key changes the order"
        );
    }

    #[test]
    fn every_tag_covers_its_exact_share_and_the_families_nest() {
        for (rows, clusters) in [(20_000u64, 200u32), (10_007, 97)] {
            let d = dataset(rows, clusters);
            let tags: Vec<Vec<Tag>> = (0..rows).map(|i| d.tags_of(i)).collect();
            for t in TAGS {
                let n = tags.iter().filter(|ts| ts.contains(&t)).count() as u64;
                assert_eq!(n, t.count(rows), "{} over {rows} rows", t.name());
                assert!((0..rows).all(|i| d.has_tag(i, t) == tags[i as usize].contains(&t)));
            }
            for ts in &tags {
                for pair in TAGS.windows(2) {
                    if pair[0].correlation == pair[1].correlation && ts.contains(&pair[1]) {
                        assert!(
                            ts.contains(&pair[0]),
                            "{} ⊂ {}",
                            pair[1].name(),
                            pair[0].name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn correlated_tags_follow_clusters_and_uncorrelated_ones_do_not() {
        let d = dataset(100_000, 1000);
        let c1 = Tag::parse("c1").unwrap();
        let u1 = Tag::parse("u1").unwrap();
        let clusters = |t: Tag| {
            let mut cs: Vec<usize> = (0..d.rows())
                .filter(|&i| d.has_tag(i, t))
                .map(|i| d.cluster_of(i))
                .collect();
            cs.sort_unstable();
            cs.dedup();
            cs.len()
        };
        assert_eq!(
            clusters(c1),
            10,
            "1 % of 100 rows per cluster = 10 whole clusters"
        );
        assert_eq!(d.clusters_of(c1), 0..10);
        assert!(
            clusters(u1) > 600,
            "the uncorrelated 1 % is spread: {}",
            clusters(u1)
        );
        assert_eq!(d.clusters_of(Tag::parse("c0.1").unwrap()), 0..1);
    }

    #[test]
    fn the_correlated_order_inverts() {
        for (rows, clusters) in [(1000u64, 7u32), (20_000, 200), (5, 10)] {
            let d = dataset(rows, clusters);
            let mut ranks: Vec<u64> = (0..rows).map(|i| d.correlated_rank(i)).collect();
            for i in 0..rows {
                assert_eq!(d.correlated_row(d.correlated_rank(i)), i);
            }
            ranks.sort_unstable();
            assert_eq!(ranks, (0..rows).collect::<Vec<_>>());
        }
    }
}
