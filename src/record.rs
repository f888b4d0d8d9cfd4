//! Versioned JSON run records: what was measured, on what, with which parameters — with the full
//! HDR histograms, so any percentile can be recomputed later. Written to `target-reports/runs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// The schema of the records this build writes; readers refuse newer ones.
pub const SCHEMA_VERSION: u32 = 1;

/// Where reports and records live (outside `target/`, so history survives `cargo clean`).
pub fn reports_dir() -> PathBuf {
    std::env::var_os("CAPBENCH_REPORTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target-reports"))
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
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            environment,
            dataset: None,
            parameters,
            results: Vec::new(),
            interrupted: false,
        }
    }

    /// Writes the record to `dir/runs/<kind>-<timestamp>.json` (complete or not at all: written
    /// to a temporary file, then renamed). Returns the path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let runs = dir.join("runs");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let stamp = self.created_at.replace([':', '-'], "");
        let mut path = runs.join(format!("{}-{stamp}.json", self.kind));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = runs.join(format!("{}-{stamp}-{n}.json", self.kind));
        }
        let tmp = path.with_extension("json.partial");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        Ok(path)
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
        serde_json::from_value(value)
            .with_context(|| format!("{} is not a capbench run record", path.display()))
    }
}
