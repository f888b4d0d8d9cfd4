//! What a run was asked to do, one type per kind of record. On disk these are the record's `kind`
//! and `parameters` fields (the same names schema version 1 used, so its records read as these).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::db::index::Prewarmed;

/// Which bench (or `load`) wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Hnsw,
    HnswFiltered,
    HttpSearch,
    RateLimit,
    Capacity,
    Load,
    Variants,
    Memory,
    Scale,
    HnswInsert,
    Streaming,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Hnsw,
        Kind::HnswFiltered,
        Kind::Variants,
        Kind::Memory,
        Kind::Scale,
        Kind::HnswInsert,
        Kind::Streaming,
        Kind::HttpSearch,
        Kind::RateLimit,
        Kind::Capacity,
        Kind::Load,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hnsw => "hnsw",
            Kind::HnswFiltered => "hnsw_filtered",
            Kind::HttpSearch => "http_search",
            Kind::RateLimit => "rate_limit",
            Kind::Capacity => "capacity",
            Kind::Load => "load",
            Kind::Variants => "variants",
            Kind::Memory => "memory",
            Kind::Scale => "scale",
            Kind::HnswInsert => "hnsw_insert",
            Kind::Streaming => "streaming",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind '{s}' (one of {})", names.join(", "))
            })
    }
}

/// A record's kind and its parameters, which only make sense together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "parameters", rename_all = "snake_case")]
pub enum Parameters {
    Hnsw(HnswParameters),
    HnswFiltered(HnswFilteredParameters),
    HttpSearch(HttpSearchParameters),
    RateLimit(RateLimitParameters),
    /// `cargo bench capacity`: `load` sweeps over HTTP and over the database.
    Capacity(LoadParameters),
    Load(LoadParameters),
    Variants(VariantsParameters),
    Memory(MemoryParameters),
    Scale(ScaleParameters),
    HnswInsert(HnswInsertParameters),
    Streaming(StreamingParameters),
}

/// `cargo bench hnsw_insert`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswInsertParameters {
    /// The dataset's rows in the write table, its dimension, and the HNSW index's build settings.
    pub rows: u64,
    pub dims: u32,
    pub m: u32,
    pub ef_construction: u32,
    /// The writer connections of each level.
    pub writers: Vec<u32>,
    /// Rows each point writes: by single-row INSERT, and by the batch methods.
    pub single_rows: usize,
    pub batch_rows: usize,
    /// Rows per statement of the multi-row INSERT and of each COPY.
    pub insert_batch: usize,
    pub copy_batch: usize,
    /// The write table's HNSW build (s), when the copy was made.
    pub build_seconds: f64,
    /// Rows an earlier run had left in the copy, removed before this one.
    pub leftovers: u64,
    /// Comparisons not made, and why (the server-side COPY needs the embedded stack).
    pub skipped: Vec<String>,
    pub quick: bool,
}

/// `cargo bench streaming`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamingParameters {
    /// The dataset's rows in the write table, its dimension, and the HNSW index's settings.
    pub rows: u64,
    pub dims: u32,
    pub m: u32,
    pub ef_construction: u32,
    /// The stages: percentages of the dataset inserted while searching, ascending.
    pub stages: Vec<f64>,
    /// The insert rate asked for (rows/s, all writers), its writers and rows per INSERT.
    pub insert_rate: u32,
    pub writers: u32,
    pub insert_batch: usize,
    /// Searches per second (open model), their ef_search and k, and the held-out queries they
    /// cycle through.
    pub search_rate: u32,
    pub ef_search: u32,
    pub k: usize,
    pub queries: usize,
    /// Percentages of the grown table deleted and re-embedded (rows the bench inserted).
    pub delete_percent: f64,
    pub update_percent: f64,
    /// Seconds of each phase without writes (before, after ingestion, after a change, after a
    /// VACUUM).
    pub window_seconds: f64,
    /// The write table's HNSW build (s), when the copy was made, and rows an earlier run left.
    pub build_seconds: f64,
    pub leftovers: u64,
    pub quick: bool,
}

/// `cargo bench scale`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleParameters {
    /// The dataset sizes measured, and the dimension of all of them.
    pub sizes: Vec<u64>,
    pub dims: u32,
    /// Rows per cluster (kept constant, so only the size grows).
    pub rows_per_cluster: u64,
    /// Each variant's fixed point: its knob and value (IVFFlat's probes as a share of lists).
    pub points: Vec<String>,
    /// The row counts the plan extrapolates to.
    pub plan_rows: Vec<u64>,
    /// Other dimensions the plan shows (empty: only `dims`).
    pub plan_dims: Vec<u32>,
    /// HNSW's m of the variants' indexes (the page layout model's neighbour lists; 0 in records
    /// before it was kept: read as 16).
    pub m: u32,
    /// Held-out queries per point, and k of recall@k.
    pub queries: usize,
    pub k: usize,
    /// The builds per size: (rows, how each variant was built).
    pub builds: Vec<(u64, Vec<crate::db::variant::Built>)>,
    /// shared_buffers and the machine's memory, for the plan's "fits" column (bytes).
    pub shared_buffers_bytes: i64,
    pub memory_bytes: u64,
    pub quick: bool,
}

/// `cargo bench memory`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryParameters {
    pub ef_search: u32,
    pub k: usize,
    /// The query pools' sizes.
    pub pools: Vec<usize>,
    /// The HNSW index, the table (heap + TOAST) and shared_buffers as set up, in bytes.
    pub index_bytes: i64,
    pub table_bytes: i64,
    pub shared_buffers_bytes: i64,
    /// shared_buffers of the small_buffers regime.
    pub small_shared_buffers_bytes: i64,
    /// How the cold regime emptied the caches.
    pub cold_method: String,
    /// Regimes not measured, and why.
    pub skipped: Vec<String>,
    pub quick: bool,
    pub rows: u64,
}

/// `cargo bench variants`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VariantsParameters {
    /// Each variant measured: its index, settings, build time and workers, size.
    pub variants: Vec<crate::db::variant::Built>,
    /// Held-out queries timed (every distribution's set is scored), and k of recall@k.
    pub queries: usize,
    pub k: usize,
    /// The recall@k the report picks each variant's best point by.
    pub recall_target: f64,
    pub quick: bool,
    pub rounds: u32,
    /// Each point's plan as it ran (EXPLAIN, one line, vectors abbreviated), by result name.
    pub plans: BTreeMap<String, String>,
    /// Rows of the dataset (the variants' sizes and IVFFlat's lists follow it).
    pub rows: u64,
}

/// `cargo bench hnsw`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswParameters {
    /// The ef_search values measured.
    pub ef_search: Vec<u32>,
    /// Queries in the query set, and k of recall@k.
    pub queries: usize,
    pub k: usize,
    pub quick: bool,
    /// Interleaved measurement rounds (not recorded by builds before rounds existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u32>,
    /// What was loaded into shared_buffers before measuring (sizes in bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prewarmed: Option<Prewarmed>,
}

/// `cargo bench hnsw_filtered`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswFilteredParameters {
    /// The ef_search values measured.
    pub ef_search: Vec<u32>,
    /// Queries per filter, and k of recall@k.
    pub queries: usize,
    pub k: usize,
    /// The query distribution (`heldout`, `near-duplicate`, `ood`).
    pub query_set: String,
    /// The `max_scan_tuples` of the `relaxed_order_raised` points.
    pub raised_max_scan_tuples: u32,
    pub quick: bool,
    pub rounds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prewarmed: Option<Prewarmed>,
    /// Each point's plan as it ran (EXPLAIN, one line, vectors abbreviated), by result name.
    pub plans: BTreeMap<String, String>,
}

/// `cargo bench http_search`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSearchParameters {
    pub quick: bool,
    /// `in-process`, or the service's URL (redacted).
    pub target: String,
    /// The search texts sent.
    pub queries: Vec<String>,
    /// Results per page.
    pub limit: u32,
}

/// `cargo bench rate_limit`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitParameters {
    pub quick: bool,
    /// Script evaluations per pipeline in the throughput pass.
    pub pipeline: usize,
}

/// How `load` generated its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadModel {
    /// A fixed number of users, each waiting for its answer.
    #[default]
    Closed,
    /// Requests started at a fixed arrival rate.
    Open,
    /// Closed-model levels, one after another, until the objective breaks.
    Sweep,
}

/// `load` (and the capacity bench's sweeps).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadParameters {
    pub model: LoadModel,
    /// The service's URL or the database's connection string, redacted.
    pub target: String,
    /// The service was started inside the `load` process.
    pub in_process: bool,
    /// `--scenario` as labels: built-in names and scenario files' names, with weights.
    pub scenario: String,
    /// SHA-256 of the scenario files' text, when files were given (a built-in is its name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario_sha256: Option<String>,
    /// The seed of the scenario's random choices.
    pub scenario_seed: u64,
    pub users: u64,
    /// Requests/s in the open model.
    pub rate: Option<f64>,
    /// The sweep's levels (users or connections).
    pub sweep: Vec<u64>,
    /// The sweep's objective.
    pub slo_p99_ms: f64,
    pub run_time_s: Option<f64>,
    pub max_requests: u64,
    /// The service's (or the database target's) ef_search.
    pub ef_search: u32,
    /// The query set whose ground truth scored every answer (`--recall`): `heldout`,
    /// `near-duplicate` or `ood`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_set: Option<String>,
    pub quick: bool,
    /// What of the servers' environment could not be read, and why.
    pub environment_unread: Vec<String>,
    /// The load shape (`--stages` users, `--rate-stages` arrivals/s), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<String>,
    /// The database target's INSERTs beside the searches (`--write-rate`), rows/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_rate: Option<f64>,
    /// Rows per INSERT, with `write_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_batch: Option<u64>,
    /// Writer connections, with `write_rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<u64>,
    /// The run wrote, and worked on the write table (`capbench_writes.traces`, a copy of the
    /// dataset, restored after it) instead of the dataset's table.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write_table: bool,
}

impl Parameters {
    pub fn kind(&self) -> Kind {
        match self {
            Parameters::Hnsw(_) => Kind::Hnsw,
            Parameters::HnswFiltered(_) => Kind::HnswFiltered,
            Parameters::HttpSearch(_) => Kind::HttpSearch,
            Parameters::RateLimit(_) => Kind::RateLimit,
            Parameters::Capacity(_) => Kind::Capacity,
            Parameters::Load(_) => Kind::Load,
            Parameters::Variants(_) => Kind::Variants,
            Parameters::Memory(_) => Kind::Memory,
            Parameters::Scale(_) => Kind::Scale,
            Parameters::HnswInsert(_) => Kind::HnswInsert,
            Parameters::Streaming(_) => Kind::Streaming,
        }
    }

    /// Kind `kind` with default parameters (for records built by hand, e.g. in tests).
    pub fn of(kind: Kind) -> Self {
        match kind {
            Kind::Hnsw => Parameters::Hnsw(HnswParameters::default()),
            Kind::HnswFiltered => Parameters::HnswFiltered(HnswFilteredParameters::default()),
            Kind::HttpSearch => Parameters::HttpSearch(HttpSearchParameters::default()),
            Kind::RateLimit => Parameters::RateLimit(RateLimitParameters::default()),
            Kind::Capacity => Parameters::Capacity(LoadParameters::default()),
            Kind::Load => Parameters::Load(LoadParameters::default()),
            Kind::Variants => Parameters::Variants(VariantsParameters::default()),
            Kind::Memory => Parameters::Memory(MemoryParameters::default()),
            Kind::Scale => Parameters::Scale(ScaleParameters::default()),
            Kind::HnswInsert => Parameters::HnswInsert(HnswInsertParameters::default()),
            Kind::Streaming => Parameters::Streaming(StreamingParameters::default()),
        }
    }

    /// The parameters alone (without the kind), as they are stored.
    pub fn fields(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut("parameters").map(serde_json::Value::take))
            .unwrap_or(serde_json::Value::Null)
    }

    /// Whether the run was a quick-mode (smoke) run.
    pub fn quick(&self) -> bool {
        match self {
            Parameters::Hnsw(p) => p.quick,
            Parameters::HnswFiltered(p) => p.quick,
            Parameters::HttpSearch(p) => p.quick,
            Parameters::RateLimit(p) => p.quick,
            Parameters::Capacity(p) | Parameters::Load(p) => p.quick,
            Parameters::Variants(p) => p.quick,
            Parameters::Memory(p) => p.quick,
            Parameters::Scale(p) => p.quick,
            Parameters::HnswInsert(p) => p.quick,
            Parameters::Streaming(p) => p.quick,
        }
    }

    /// The same test, so that two runs' difference is noise: equal parameters, except which
    /// ef_search values an hnsw run selected and what its prewarm found (the same entries are
    /// compared, whatever else ran beside them), and what of a load run's environment was
    /// unreadable.
    pub fn same_test(&self, other: &Parameters) -> bool {
        self.normalised() == other.normalised()
    }

    fn normalised(&self) -> Parameters {
        let mut p = self.clone();
        match &mut p {
            Parameters::Hnsw(h) => {
                h.ef_search.clear();
                h.prewarmed = None;
            }
            // Which points ran and the plans found are the run's outcome, not its test.
            Parameters::HnswFiltered(h) => {
                h.ef_search.clear();
                h.prewarmed = None;
                h.plans.clear();
            }
            Parameters::Capacity(l) | Parameters::Load(l) => l.environment_unread.clear(),
            // The builds (time, size) and plans are outcomes; which variants ran, a selection.
            Parameters::Variants(v) => {
                v.variants.clear();
                v.plans.clear();
            }
            // Sizes are the dataset's outcome; what was skipped, the server's.
            Parameters::Memory(m) => {
                m.index_bytes = 0;
                m.table_bytes = 0;
                m.skipped.clear();
            }
            Parameters::Scale(p) => {
                p.builds.clear();
                p.memory_bytes = 0;
            }
            // The copy's build and what an earlier run left are outcomes, not the test.
            Parameters::HnswInsert(p) => {
                p.build_seconds = 0.0;
                p.leftovers = 0;
                p.skipped.clear();
            }
            Parameters::Streaming(p) => {
                p.build_seconds = 0.0;
                p.leftovers = 0;
            }
            Parameters::HttpSearch(_) | Parameters::RateLimit(_) => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_parameters_are_stored_side_by_side() {
        let p = Parameters::RateLimit(RateLimitParameters {
            quick: true,
            pipeline: 100,
        });
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "rate_limit", "parameters": {"quick": true, "pipeline": 100}})
        );
        assert_eq!(serde_json::from_value::<Parameters>(json).unwrap(), p);
        assert!(p.quick() && p.kind() == Kind::RateLimit);
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
            assert_eq!(Parameters::of(k).kind(), k);
        }
        assert!("bench".parse::<Kind>().unwrap_err().contains("one of hnsw"));
    }

    #[test]
    fn the_same_test_ignores_only_what_does_not_change_the_test() {
        let hnsw = |ef: Vec<u32>, queries| {
            Parameters::Hnsw(HnswParameters {
                ef_search: ef,
                queries,
                k: 10,
                ..HnswParameters::default()
            })
        };
        assert!(hnsw(vec![40], 100).same_test(&hnsw(vec![40, 80], 100)));
        assert!(!hnsw(vec![40], 100).same_test(&hnsw(vec![40], 200)));
        let load = Parameters::Load(LoadParameters::default());
        let capacity = Parameters::Capacity(LoadParameters::default());
        assert!(!load.same_test(&capacity), "another kind is another test");
    }
}
