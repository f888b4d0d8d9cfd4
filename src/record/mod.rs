//! Versioned JSON run records: what was measured, on what, with which parameters — with the full
//! HDR histograms, so any percentile can be recomputed later. Written to `target-reports/runs/`.
//!
//! A record is typed through and through: its kind and that kind's [`Parameters`], each entry's
//! figures keyed by [`Metric`] (which knows its unit and how a comparison judges it), and its
//! [`Gate`]s with a [`GateKind`] and the [`Check`] they made. Schema version 1 (untyped gates) is
//! read through [`v1::upgrade`].

mod environment;
mod gate;
mod metric;
mod parameters;
pub mod v1;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

pub use environment::Environment;
pub use gate::{Check, Gate, GateKind, Op};
pub use metric::{Metric, Metrics, Rule, Stat, Unit, UnknownMetric};
pub use parameters::{
    HnswFilteredParameters, HnswInsertParameters, HnswParameters, HttpSearchParameters, Kind,
    LoadModel, LoadParameters, MemoryParameters, Parameters, RateLimitParameters, ScaleParameters,
    StreamingParameters, VariantsParameters,
};

use crate::secrets;

/// The schema of the records this build writes; readers refuse newer ones and upgrade older ones.
pub const SCHEMA_VERSION: u32 = 2;

/// Where reports and records live (outside `target/`, so history survives `cargo clean`).
pub fn reports_dir() -> PathBuf {
    std::env::var_os("CAPBENCH_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target-reports"))
}

/// The environment variable through which the runs of one calibration share an id.
pub const CALIBRATION_ENV: &str = "CAPBENCH_CALIBRATION_ID";

static CALIBRATION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Marks this process's records as part of calibration `id` (the process that started it).
pub fn set_calibration_id(id: &str) {
    let _ = CALIBRATION.set(id.to_string());
}

/// The calibration this process's records belong to: set by [`set_calibration_id`], or inherited
/// through [`CALIBRATION_ENV`] by the runs it started.
pub fn calibration_id() -> Option<String> {
    CALIBRATION
        .get()
        .cloned()
        .or_else(|| std::env::var(CALIBRATION_ENV).ok())
        .filter(|id| !id.is_empty() && id.len() <= 64)
}

/// One run of one bench (or of `load`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub schema_version: u32,
    /// Which bench wrote it (`kind`) and what it was asked to do (`parameters`).
    #[serde(flatten)]
    pub parameters: Parameters,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub environment: Environment,
    /// Dataset fingerprint and parameters, when a dataset was involved.
    pub dataset: Option<serde_json::Value>,
    pub results: Vec<ResultEntry>,
    /// The run was ended early by a signal (Ctrl-C, SIGTERM): its results cover the time it ran.
    #[serde(default)]
    pub interrupted: bool,
    /// Runs made together by one `CAPBENCH_CALIBRATE=N` invocation (A, A, A…) share this id; a
    /// comparison takes their mean as the figure of that side (see `report::compare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// The entry that measures the machine rather than the system under test (the hnsw bench's
    /// round trip with no search work, measured in the same rounds): a comparison judges the other
    /// entries net of how far it moved between the runs (see `report::noise::Adjustment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// One measured thing (a benchmark ID).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ResultEntry {
    /// The benchmark ID, e.g. `hnsw/ef_search/40`.
    pub name: String,
    /// Its figures: `p50_ms`, `p99_ms`, `qps`, `recall_mean`, …
    pub metrics: Metrics,
    /// The latency histogram (nanoseconds), HdrHistogram V2 + DEFLATE, base64.
    pub histogram: Option<String>,
    /// Launch gates checked on this result.
    pub gates: Vec<Gate>,
    /// Named (x, y) series for charts: `rps_per_second` (x = s since start), a limiter timeline, …
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
    /// The same figures for each measurement round, in the order measured, when the benchmark was
    /// measured in interleaved rounds (`count`, `seconds`, `p50_ms`, `p95_ms`, `p99_ms`, `mean_ms`,
    /// `qps`). Their spread is the run's own estimate of its noise, drift included (see
    /// [`crate::report::compare`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<Metrics>,
}

impl ResultEntry {
    /// Its figure `m`, when it has a finite one.
    pub fn metric(&self, m: &Metric) -> Option<f64> {
        self.metrics.get(m).copied().filter(|v| v.is_finite())
    }
}

/// A latency histogram in nanoseconds, 1 µs to 10 min, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// `hist` as base64 of its V2 + DEFLATE serialization.
pub fn encode_histogram(hist: &Histogram<u64>) -> Result<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub fn decode_histogram(text: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("histogram is not base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("histogram does not decode: {e:?}"))
}

impl RunRecord {
    pub fn new(environment: Environment, parameters: Parameters) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            parameters,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            environment,
            dataset: None,
            results: Vec::new(),
            interrupted: false,
            calibration: calibration_id(),
            reference: None,
        }
    }

    /// The record as it is stored: pretty JSON in which every text (environment, dataset,
    /// parameters, entry, metric, series and gate names) went through [`secrets::redact`] — a URL
    /// or connection string keeps its host and user but loses its password and secret parameters,
    /// and every secret this process has seen is scrubbed. Histograms are left as they are (base64
    /// holds no secret, and a short secret could match inside it by chance).
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(&redacted(
            serde_json::to_value(self)?,
        ))?)
    }

    /// Writes the record to `dir/runs/<kind>-<timestamp>.json` (or `…-<n>.json` when that name is
    /// taken), redacted as [`RunRecord::to_json`] says, and complete or not at all. Returns the path.
    ///
    /// The text goes to a temporary file of this writer's own first; the final name is then claimed
    /// with a hard link, which fails when the name exists (like `create_new`, atomically), so two
    /// runs finishing in the same second never overwrite each other, and the name never shows an
    /// empty or half-written file. On a file system without hard links, the name is claimed with
    /// `create_new` and the text renamed over it.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let text = self.to_json()?;
        let stamp = self.created_at.replace([':', '-'], "");
        let base = format!("{}-{stamp}", self.kind());
        let (tmp, mut file) = create_new_numbered(&runs, |n| {
            format!(".{base}.{}.{n}.partial", std::process::id())
        })?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()));
        drop(file);
        let claimed = written.and_then(|()| claim_name(&runs, &base, &tmp));
        let _ = std::fs::remove_file(&tmp);
        claimed
    }
    /// Which bench wrote it.
    pub fn kind(&self) -> Kind {
        self.parameters.kind()
    }

    /// Whether it came from a quick-mode (smoke) run.
    pub fn quick(&self) -> bool {
        self.parameters.quick()
    }

    /// Reads a record, refusing a schema this build does not know; a version-1 record is upgraded
    /// ([`v1::upgrade`]).
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Self::from_json(value).with_context(|| path.display().to_string())
    }

    /// A record from its stored JSON, of any schema version this build knows.
    pub fn from_json(value: serde_json::Value) -> Result<Self> {
        let version = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let value = match version {
            1 => v1::upgrade(value),
            2 => value,
            0 => bail!("not a capbench run record (no schema_version)"),
            newer => bail!(
                "schema_version {newer}, newer than this capbench understands ({SCHEMA_VERSION}): update capbench"
            ),
        };
        // Records written before redaction was complete may hold a password: shown redacted.
        serde_json::from_value(redacted(value)).context("not a capbench run record")
    }
}

/// The path of the first `name(n)` (n = 1, 2, …) in `dir` that did not exist, created empty.
fn create_new_numbered(
    dir: &Path,
    name: impl Fn(u32) -> String,
) -> Result<(PathBuf, std::fs::File)> {
    for n in 1.. {
        let path = dir.join(name(n));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("no free file name in {}", dir.display())
}

/// Gives the complete file `tmp` the first free name of `base.json`, `base-2.json`, … in `runs`.
fn claim_name(runs: &Path, base: &str, tmp: &Path) -> Result<PathBuf> {
    let name = |n: u32| {
        if n == 1 {
            format!("{base}.json")
        } else {
            format!("{base}-{n}.json")
        }
    };
    for n in 1.. {
        let path = runs.join(name(n));
        match std::fs::hard_link(tmp, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            // No hard links here (some network and FAT file systems): claim, then replace.
            Err(_) => {
                let (path, _) = create_new_numbered(runs, name)?;
                std::fs::rename(tmp, &path)
                    .with_context(|| format!("renaming {} into place", tmp.display()))?;
                return Ok(path);
            }
        }
    }
    bail!("no free file name in {}", runs.display())
}

/// A record's JSON with every string (and object key) passed through [`secrets::redact`], except
/// the `histogram` of each result entry.
fn redacted(record: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let Value::Object(fields) = record else {
        return redact_texts(record);
    };
    let redact_entry = |entry: Value| match entry {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "histogram" => (k, v),
                    _ => (secrets::redact(&k), redact_texts(v)),
                })
                .collect(),
        ),
        other => redact_texts(other),
    };
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("results", Value::Array(entries)) => (
                    k,
                    Value::Array(entries.into_iter().map(redact_entry).collect()),
                ),
                (_, v) => (secrets::redact(&k), redact_texts(v)),
            })
            .collect(),
    )
}

/// Every string and object key in `value` through [`secrets::redact`].
fn redact_texts(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(secrets::redact(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_texts).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (secrets::redact(&k), redact_texts(v)))
                .collect(),
        ),
        other => other,
    }
}
