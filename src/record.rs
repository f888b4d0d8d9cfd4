//! Versioned JSON run records: what was measured, on what, with which parameters — with the full
//! HDR histograms, so any percentile can be recomputed later. Written to `target-reports/runs/`.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::secrets;

/// The schema of the records this build writes; readers refuse newer ones.
pub const SCHEMA_VERSION: u32 = 1;

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
    /// Which bench wrote it: `hnsw`, `http_search`, `rate_limit`, `capacity`, `load`.
    pub kind: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub environment: Environment,
    /// Dataset fingerprint and parameters, when a dataset was involved.
    pub dataset: Option<serde_json::Value>,
    /// The run's own parameters (ef_search list, query count, quick mode, …).
    pub parameters: serde_json::Value,
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
    /// Named figures: `p50_ms`, `p99_ms`, `qps`, `recall_mean`, …
    pub metrics: BTreeMap<String, f64>,
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
    pub rounds: Vec<BTreeMap<String, f64>>,
}

/// A pass/fail criterion, e.g. the seeds' `p99 < 50 ms`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gate {
    pub name: String,
    pub pass: bool,
}

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Environment {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub os: String,
    pub git_commit: Option<String>,
    pub postgres_version: Option<String>,
    pub pgvector_version: Option<String>,
    /// Server settings that shape the numbers (shared_buffers, work_mem, jit, …).
    pub postgres_settings: BTreeMap<String, String>,
    pub redis_version: Option<String>,
    /// The kernel's CPU wake-up latency limit in force while measuring (µs; 0 = idle CPUs poll),
    /// when readable. See [`crate::cpu_idle`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_dma_latency_us: Option<i32>,
}

impl Environment {
    /// The machine and the checkout (no server).
    pub fn of_machine() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let field = |text: &str, key: &str, sep: char| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(sep))
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        };
        let memory_kb: u64 = field(&meminfo, "MemTotal", ':')
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let git_commit = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Self {
            cpu_model: field(&cpuinfo, "model name", ':').unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: memory_kb * 1024,
            os: format!(
                "{} (kernel {})",
                field(&os_release, "PRETTY_NAME", '=')
                    .unwrap_or_else(|| std::env::consts::OS.into()),
                kernel.trim()
            ),
            git_commit,
            cpu_dma_latency_us: crate::cpu_idle::current_limit_us(),
            ..Self::default()
        }
    }

    /// This machine, and the versions and settings of the servers at `db_url` and `redis_url`,
    /// each read within the connect timeout; with what could not be read, and why (also said on
    /// stderr, prefixed by `who`). A server gone or silent since the run costs the record a field,
    /// never the measurement.
    pub async fn of_servers(
        who: &str,
        db_url: Option<&str>,
        redis_url: Option<&str>,
    ) -> (Self, Vec<String>) {
        let mut environment = Self::of_machine();
        let mut unread = Vec::new();
        if let Some(url) = db_url {
            let base = environment.clone();
            let read = async {
                let mut conn = crate::db::connect(url).await?;
                base.with_postgres(&mut conn).await
            };
            match within_connect_timeout(read).await {
                Ok(e) => environment = e,
                Err(why) => unread.push(format!("PostgreSQL version and settings: {why}")),
            }
        }
        if let Some(url) = redis_url {
            let base = environment.clone();
            let shown = crate::secrets::redact(url);
            let read = async {
                base.with_redis(url)
                    .await
                    .with_context(|| format!("reading Redis at {shown}"))
            };
            match within_connect_timeout(read).await {
                Ok(e) => environment = e,
                Err(why) => unread.push(format!("Redis version: {why}")),
            }
        }
        for what in &unread {
            crate::say!("{who}: the run record lacks the {what}");
        }
        (environment, unread)
    }

    /// Adds the version of the Redis server at `url`.
    pub async fn with_redis(mut self, url: &str) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        self.redis_version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_string());
        Ok(self)
    }

    /// Adds the PostgreSQL server's versions and the settings that matter.
    pub async fn with_postgres(mut self, conn: &mut PgConnection) -> Result<Self> {
        let info = crate::db::ServerInfo::read(conn).await?;
        self.postgres_version = Some(info.postgres_version);
        self.pgvector_version = Some(info.pgvector_version);
        let settings: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1) ORDER BY name",
        )
        .bind(&[
            "shared_buffers",
            "effective_cache_size",
            "maintenance_work_mem",
            "work_mem",
            "jit",
            "max_parallel_workers_per_gather",
            "max_connections",
            "wal_level",
            "hnsw.ef_search",
        ][..])
        .fetch_all(conn)
        .await
        .context("reading server settings")?;
        self.postgres_settings = settings.into_iter().collect();
        Ok(self)
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
    pub fn new(kind: &str, environment: Environment, parameters: serde_json::Value) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            kind: kind.to_string(),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            environment,
            dataset: None,
            parameters,
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
        let base = format!("{}-{stamp}", self.kind);
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
    /// Reads a record, refusing a schema this build does not know.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let version = value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if version > u64::from(SCHEMA_VERSION) {
            bail!(
                "{} has schema_version {version}, newer than this capbench understands ({SCHEMA_VERSION}): update capbench",
                path.display()
            );
        }
        // Records written before redaction was complete may hold a password: shown redacted.
        serde_json::from_value(redacted(value))
            .with_context(|| format!("{} is not a capbench run record", path.display()))
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

/// `read`'s result, or why there is none (its error, or no answer within the connect timeout), as
/// one line.
async fn within_connect_timeout<T>(
    read: impl std::future::Future<Output = Result<T>>,
) -> Result<T, String> {
    let limit = crate::db::connect_timeout();
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(crate::one_line(&e)),
        Err(_) => Err(format!(
            "no answer within {} (--connect-timeout)",
            humantime::format_duration(limit)
        )),
    }
}
