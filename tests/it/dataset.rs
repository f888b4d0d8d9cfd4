//! The generator: determinism, unit norms, cluster structure, fingerprints.

use capbench::config::{DatasetParams, IndexParams};
use capbench::dataset::{
    Dataset, canary, cosine_distance, fingerprint, fingerprint_of, fingerprint_params,
};

fn params(seed: u64) -> DatasetParams {
    DatasetParams {
        rows: 2000,
        dims: 1536,
        seed,
        clusters: 100,
        sigma: 0.05,
    }
}

#[test]
fn same_parameters_give_identical_rows_and_fingerprint() {
    let (a, b) = (Dataset::new(params(42)), Dataset::new(params(42)));
    for i in [0, 1, 999, 1999] {
        assert_eq!(
            a.row(i),
            b.row(i),
            "row {i} differs between two generators with the same parameters"
        );
    }
    // Order independence: row 1500 alone equals row 1500 generated after others.
    assert_eq!(Dataset::new(params(42)).vector(1500), a.vector(1500));
    assert_eq!(
        fingerprint(&params(42), &IndexParams::default()),
        fingerprint(&params(42), &IndexParams::default())
    );
}

#[test]
fn another_seed_or_parameter_changes_vectors_and_fingerprint() {
    let (a, b) = (Dataset::new(params(42)), Dataset::new(params(43)));
    assert_ne!(a.vector(0), b.vector(0));
    assert_ne!(a.row(0).title, b.row(0).title);
    let index = IndexParams::default();
    let base = fingerprint(&params(42), &index);
    assert_ne!(base, fingerprint(&params(43), &index));
    assert_ne!(
        base,
        fingerprint(
            &DatasetParams {
                sigma: 0.06,
                ..params(42)
            },
            &index
        )
    );
    assert_ne!(
        base,
        fingerprint(
            &DatasetParams {
                rows: 2001,
                ..params(42)
            },
            &index
        )
    );
    assert_ne!(
        base,
        fingerprint(
            &params(42),
            &IndexParams {
                m: 24,
                ..index.clone()
            }
        )
    );
    assert_ne!(
        base,
        fingerprint(
            &params(42),
            &IndexParams {
                ef_construction: 100,
                ..index.clone()
            }
        )
    );
    // Build workers change how fast, not what: same fingerprint.
    assert_eq!(
        base,
        fingerprint(
            &params(42),
            &IndexParams {
                build_workers: Some(3),
                ..index
            }
        )
    );
}

#[test]
fn vectors_are_unit_norm() {
    let d = Dataset::new(params(7));
    for i in (0..2000).step_by(37) {
        let v = d.vector(i);
        assert_eq!(v.len(), 1536);
        let norm = v
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i} has norm {norm}");
    }
    for c in 0..100 {
        let norm = d
            .base(c)
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "base {c} has norm {norm}");
    }
}

#[test]
fn rows_cluster_around_their_base_vector() {
    let d = Dataset::new(params(42));
    let sample: Vec<u64> = (0..400).collect(); // four rows of each of the 100 clusters
    let vectors: Vec<Vec<f32>> = sample.iter().map(|&i| d.vector(i)).collect();
    for (a, va) in vectors.iter().enumerate() {
        let nearest = (0..vectors.len())
            .filter(|&b| b != a)
            .min_by(|&x, &y| {
                cosine_distance(va, &vectors[x]).total_cmp(&cosine_distance(va, &vectors[y]))
            })
            .expect("sample has more than one row");
        assert_eq!(
            d.cluster_of(sample[nearest]),
            d.cluster_of(sample[a]),
            "row {a}'s nearest neighbour {nearest} is in another cluster"
        );
        // And the row is closer to its own base vector than to any other base vector.
        let own = cosine_distance(va, d.base(d.cluster_of(sample[a])));
        let other = (0..100)
            .filter(|&c| c != d.cluster_of(sample[a]))
            .map(|c| cosine_distance(va, d.base(c)))
            .fold(f64::INFINITY, f64::min);
        assert!(
            own < other,
            "row {a}: own base at {own}, another at {other}"
        );
    }
}

#[test]
fn titles_follow_the_seeds() {
    let d = Dataset::new(params(42));
    let row = d.row(17);
    assert!(
        row.title.starts_with("Capacity test trace 17: "),
        "{}",
        row.title
    );
    assert!(row.context_text.len() > 20 && row.solution_text.len() > row.context_text.len() / 2);
    assert_ne!(d.row(17).id, d.row(18).id);
}

#[test]
fn the_fingerprint_covers_a_canary_of_the_generated_rows() {
    let index = IndexParams::default();
    let stored = fingerprint_params(&params(42), &index);
    assert_eq!(stored["canary"], canary(&params(42)));
    assert_eq!(fingerprint(&params(42), &index), fingerprint_of(&stored));
    // Rows with other text (a `fake` update's word lists) under the same parameters: another
    // fingerprint.
    let mut other_text = stored.clone();
    other_text["canary"] = "0000000000000000".into();
    assert_ne!(
        fingerprint_of(&other_text),
        fingerprint(&params(42), &index)
    );
    // The canary is a digest of rows 0..3 (text) and row 0 (vector): the seed and the dimension
    // change them, the row and cluster counts do not.
    assert_ne!(canary(&params(42)), canary(&params(43)));
    assert_ne!(
        canary(&params(42)),
        canary(&DatasetParams {
            dims: 8,
            ..params(42)
        })
    );
    assert_eq!(
        canary(&params(42)),
        canary(&DatasetParams {
            rows: 10,
            clusters: 7,
            ..params(42)
        })
    );
    // What fake 5.1.0 (pinned `=5.1.0` in Cargo.toml) and rand_distr generate today: a dependency
    // update that changes the rows fails here, and changes every fingerprint with them.
    assert_eq!(canary(&params(42)), "4241a171d86348d2");
}
