//! The deterministic clustered dataset (the seeds' "tiled with noise" design) and its fingerprint.
//!
//! `clusters` unit-norm base vectors; row i = `base[i % clusters]` + N(0, σ²) per coordinate,
//! renormalized. Every random draw comes from its own stream (Xoshiro256++, a portable generator
//! with a fixed algorithm), keyed by the seed, a domain (base vectors, row noise, metadata, …) and
//! an index, so any row can be generated alone, in any order, on any thread, and is always the same.

use fake::Fake;
use fake::faker::company::en::Bs;
use fake::faker::lorem::en::Paragraph;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::{DatasetParams, IndexParams};

mod queries;
mod tags;

pub use queries::{Distribution, QuerySet, set_name};
pub use tags::{Correlation, TAGS, Tag};

/// Bumped whenever the generator's output changes for the same parameters.
pub const GENERATOR_VERSION: u32 = 2;

/// The embedding model every generated trace claims (the seeds' model).
pub const EMBEDDING_MODEL_ID: &str = "text-embedding-3-small";

/// The dedicated contributor of every generated trace (the seeds' capacity-test user).
pub const CONTRIBUTOR_EMAIL: &str = "capacity-test@commontrace.internal";

/// Random-stream domains: distinct keys, so no two kinds of draw ever share a stream.
#[derive(Clone, Copy)]
#[repr(u64)]
pub(crate) enum Domain {
    Base = 0x6261_7365,         // "base"
    Noise = 0x6e6f_6973,        // "nois"
    Metadata = 0x6d65_7461,     // "meta"
    QueryCluster = 0x636c_7573, // "clus"
    QueryNoise = 0x7175_6572,   // "quer"
    QueryRow = 0x726f_7773,     // "rows"
    QueryOther = 0x6f74_6872,   // "othr"
}

/// The RNG for draw `index` of `domain`: the three words mixed by SplitMix64 steps, then
/// expanded into Xoshiro256++'s state.
pub fn stream(seed: u64, domain: u64, index: u64) -> Xoshiro256PlusPlus {
    let key = splitmix64(splitmix64(splitmix64(seed) ^ domain) ^ index);
    Xoshiro256PlusPlus::seed_from_u64(key)
}

pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One generated trace, as loaded into `traces`.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    pub id: Uuid,
    pub title: String,
    pub context_text: String,
    pub solution_text: String,
    pub embedding: Vec<f32>,
    /// Seconds after 2026-01-01T00:00:00Z (deterministic creation times, one second apart).
    pub created_offset_s: i64,
    /// Its filterable tags ([`tags`]).
    pub tags: Vec<Tag>,
}

/// The generator: parameters plus the base vectors every row is drawn around.
pub struct Dataset {
    pub params: DatasetParams,
    base: Vec<f32>,
}

impl Dataset {
    pub fn new(params: DatasetParams) -> Self {
        let dims = params.dims as usize;
        let mut base = vec![0f32; params.clusters as usize * dims];
        for (c, v) in base.chunks_mut(dims).enumerate() {
            let mut rng = stream(params.seed, Domain::Base as u64, c as u64);
            for x in v.iter_mut() {
                *x = rng.sample(StandardNormal);
            }
            normalize(v);
        }
        Self { params, base }
    }

    pub fn dims(&self) -> usize {
        self.params.dims as usize
    }

    pub fn rows(&self) -> u64 {
        self.params.rows
    }

    /// Base vector `c` (unit norm).
    pub fn base(&self, c: usize) -> &[f32] {
        let d = self.dims();
        &self.base[c * d..(c + 1) * d]
    }

    /// Which base vector row `i` is drawn around.
    pub fn cluster_of(&self, i: u64) -> usize {
        (i % u64::from(self.params.clusters)) as usize
    }

    /// Writes row `i`'s embedding into `out` (length `dims`).
    pub fn vector_into(&self, i: u64, out: &mut [f32]) {
        self.noisy_copy(self.cluster_of(i), Domain::Noise as u64, i, out);
    }

    /// Row `i`'s embedding.
    pub fn vector(&self, i: u64) -> Vec<f32> {
        let mut v = vec![0f32; self.dims()];
        self.vector_into(i, &mut v);
        v
    }

    /// base[cluster] + σ·N(0, 1) from stream (`domain`, `index`), renormalized.
    pub(crate) fn noisy_copy(&self, cluster: usize, domain: u64, index: u64, out: &mut [f32]) {
        let center = self.base(cluster);
        self.noisy_around(center, self.params.sigma, domain, index, out);
    }

    /// `center` + `sigma`·N(0, 1) from stream (`domain`, `index`), renormalized.
    pub(crate) fn noisy_around(
        &self,
        center: &[f32],
        sigma: f32,
        domain: u64,
        index: u64,
        out: &mut [f32],
    ) {
        let mut rng = stream(self.params.seed, domain, index);
        for (x, b) in out.iter_mut().zip(center) {
            let z: f32 = rng.sample(StandardNormal);
            *x = b + sigma * z;
        }
        normalize(out);
    }

    /// Row `i` with its metadata (titles after the seeds: "Capacity test trace {i}: …").
    pub fn row(&self, i: u64) -> TraceRow {
        let mut embedding = vec![0f32; self.dims()];
        self.vector_into(i, &mut embedding);
        self.row_with(i, embedding)
    }

    /// Row `i`'s id alone (the first draw of its metadata stream).
    pub fn row_id(&self, i: u64) -> Uuid {
        let mut rng = stream(self.params.seed, Domain::Metadata as u64, i);
        uuid::Builder::from_random_bytes(rng.random()).into_uuid()
    }

    /// Row `i` around an embedding the caller already generated (see `vector_into`).
    pub fn row_with(&self, i: u64, embedding: Vec<f32>) -> TraceRow {
        let mut rng = stream(self.params.seed, Domain::Metadata as u64, i);
        let id: Uuid = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let bs: String = Bs().fake_with_rng(&mut rng);
        let context_text: String = Paragraph(3..4).fake_with_rng(&mut rng);
        let solution_text: String = Paragraph(5..6).fake_with_rng(&mut rng);
        TraceRow {
            id,
            title: format!("Capacity test trace {i}: {bs}"),
            context_text,
            solution_text,
            embedding,
            created_offset_s: i as i64,
            tags: self.tags_of(i),
        }
    }
}

/// `Σ a[i]·b[i]` in f64, over eight independent lanes (so it vectorizes), always in the same order.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += f64::from(x[k]) * f64::from(y[k]);
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// Scales `v` to unit length (norm accumulated in f64); leaves a zero vector alone.
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        for x in v.iter_mut() {
            *x *= inv;
        }
    }
}

/// Cosine distance, as pgvector's `<=>` defines it (accumulating in f64).
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    1.0 - dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

/// The identity of a loaded dataset: every generation and index parameter, the generator version,
/// and a canary of the generated rows themselves ([`canary`]).
pub fn fingerprint(data: &DatasetParams, index: &IndexParams) -> String {
    fingerprint_of(&fingerprint_params(data, index))
}

/// The fingerprint of what [`fingerprint_params`] returned (a digest of its canonical text).
pub fn fingerprint_of(params: &serde_json::Value) -> String {
    let digest = Sha256::digest(params.to_string().as_bytes());
    hex::encode(&digest[..12])
}

/// Rows whose generated text enters [`canary`].
const CANARY_ROWS: u64 = 3;

/// A digest of what the generator makes for these parameters' seed and dimension: the id, title
/// and texts of the first rows and row 0's embedding bits. The text comes from the `fake` crate's
/// word lists and the vectors from `rand`/`rand_distr`: should an update of one of them change the
/// rows, the canary changes, and with it the fingerprint — two different datasets never share one.
/// (Rows and clusters do not enter it: row i's text and row 0's vector do not depend on them.)
pub fn canary(data: &DatasetParams) -> String {
    // Row 0 lies around base vector 0, which depends only on the seed and the dimension.
    let generator = Dataset::new(DatasetParams {
        clusters: 1,
        ..data.clone()
    });
    let mut digest = Sha256::new();
    for i in 0..CANARY_ROWS {
        let row = generator.row_with(i, Vec::new());
        for text in [
            row.id.to_string(),
            row.title,
            row.context_text,
            row.solution_text,
        ] {
            digest.update((text.len() as u64).to_le_bytes());
            digest.update(text.as_bytes());
        }
    }
    for x in generator.vector(0) {
        digest.update(x.to_bits().to_le_bytes());
    }
    hex::encode(&digest.finalize()[..8])
}

/// The dataset a record was measured on: its fingerprint and the parameters it covers (a record's
/// `dataset` field).
pub fn identity(data: &DatasetParams, index: &IndexParams) -> serde_json::Value {
    serde_json::json!({
        "fingerprint": fingerprint(data, index),
        "params": fingerprint_params(data, index),
    })
}

/// The parameters a fingerprint covers, as stored beside it in `capacity_meta.params`.
pub fn fingerprint_params(data: &DatasetParams, index: &IndexParams) -> serde_json::Value {
    // serde_json keeps keys sorted (BTreeMap), so the text is canonical.
    serde_json::json!({
        "canary": canary(data),
        "generator_version": GENERATOR_VERSION,
        "rows": data.rows,
        "dims": data.dims,
        "seed": data.seed,
        "clusters": data.clusters,
        "sigma": data.sigma,
        "embedding_model_id": EMBEDDING_MODEL_ID,
        "hnsw_m": index.m,
        "hnsw_ef_construction": index.ef_construction,
        "hnsw_ops": "vector_cosine_ops",
    })
}
