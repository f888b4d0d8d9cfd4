//! What the numbers were measured on: the machine, the checkout, the servers' versions and the
//! settings that shape the numbers.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

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
