//! What virtual users send: scenarios as data. A scenario file (TOML, docs/scenarios/README.md)
//! declares user kinds with weights, waits, an on_start flow and tasks; requests with templates,
//! variables, expectations and extracted values. The seeds' three user kinds are such files
//! (`scenarios/{search,burst,realistic}.toml`, built in by name), so there is one implementation.
//! The database target (`--target db`) runs THE search SQL instead, over a connection per user.
//!
//! - `file`: the format as read, errors naming file, line and field;
//! - `template`, `vars`: holes and the values they are filled with;
//! - `compile`: a file made ready to run; `user`: a virtual user at run time.

pub mod compile;
pub mod file;
pub mod template;
pub mod user;
pub mod vars;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use pgvector::Vector;
use sha2::{Digest, Sha256};

pub use compile::Scenario;
pub use user::{Next, Sink, VirtualUser};

use super::failure::Failure;
use super::stats::RequestOutcome;
use crate::db::search;
pub use crate::workload::query_vectors;

/// Searches per page (the seeds' `limit`), for the database target.
const PAGE: i64 = 10;

/// The built-in scenarios: the seeds' user kinds, by name and aliases, with their files' text, and
/// the writers a read/write load mixes in.
pub const BUILTINS: [(&str, &[&str], &str); 5] = [
    (
        "search",
        &["searchloaduser"],
        include_str!("../../../scenarios/search.toml"),
    ),
    (
        "burst",
        &["burstagent"],
        include_str!("../../../scenarios/burst.toml"),
    ),
    (
        "realistic",
        &["realisticagent"],
        include_str!("../../../scenarios/realistic.toml"),
    ),
    (
        "write",
        &["writer"],
        include_str!("../../../scenarios/write.toml"),
    ),
    (
        "contribute",
        &["contributor"],
        include_str!("../../../scenarios/contribute.toml"),
    ),
];

/// The built-in search as `load --recall` runs it: the query set's vectors, every answer scored.
pub const SEARCH_RECALL: &str = include_str!("../../../scenarios/search-recall.toml");

/// One item of `--scenario`: a built-in's name or a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Builtin(&'static str),
    File(PathBuf),
}

impl Item {
    /// The name a label shows: a built-in's name, a file's name.
    fn label(&self) -> String {
        match self {
            Item::Builtin(n) => n.to_string(),
            Item::File(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into()),
        }
    }
}

/// `--scenario`: built-in names and scenario files, with weights: `search`, `search:3,burst:1`,
/// `docs/scenarios/rag.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec(pub Vec<(Item, u32)>);

impl FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts: Vec<(Item, u32)> = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match raw.rsplit_once(':') {
                Some((n, w)) if !w.contains('/') => (
                    n.trim(),
                    w.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("weight '{w}' in '{s}' is not a whole number"))?,
                ),
                _ => (raw, 1),
            };
            let item = if name.contains('/') || name.ends_with(".toml") {
                Item::File(PathBuf::from(name))
            } else {
                let lower = name.to_ascii_lowercase();
                let (builtin, _, _) = BUILTINS
                    .iter()
                    .find(|(n, aliases, _)| *n == lower || aliases.contains(&lower.as_str()))
                    .ok_or_else(|| {
                        format!(
                            "unknown scenario '{name}' (search, burst, realistic, write, contribute, or a scenario file such as docs/scenarios/rag.toml; mix them as 'search:3,burst:1')"
                        )
                    })?;
                Item::Builtin(builtin)
            };
            if weight == 0 || weight > 1000 {
                return Err(format!(
                    "weight {weight} for '{}' in '{s}': weights are 1 to 1000",
                    item.label()
                ));
            }
            if parts.iter().any(|(i, _)| *i == item) {
                return Err(format!("'{}' appears twice in '{s}'", item.label()));
            }
            parts.push((item, weight));
        }
        if parts.is_empty() {
            return Err(
                "empty scenario (search, burst, realistic, write, contribute, or a scenario file)"
                    .into(),
            );
        }
        Ok(Spec(parts))
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(i, w)| format!("{}:{w}", i.label()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Spec {
    /// Whether the scenario is the built-in search alone (what the database target runs).
    pub fn is_builtin_search(&self) -> bool {
        matches!(self.0.as_slice(), [(Item::Builtin("search"), _)])
    }

    /// Reads and compiles every item for requests to `base`: files are read now, and any mistake
    /// in them is one line naming the file, the line and the field.
    pub fn compile(
        &self,
        base: &str,
        dataset: &crate::config::DatasetParams,
        seed: u64,
    ) -> Result<Scenario> {
        self.compile_scored(base, dataset, seed, None)
    }

    /// [`Spec::compile`] with `load --recall`'s query set: `from = "query_set"` draws it, and the
    /// built-in search sends its vectors (`scenarios/search-recall.toml`).
    pub fn compile_scored(
        &self,
        base: &str,
        dataset: &crate::config::DatasetParams,
        seed: u64,
        scorer: Option<Arc<crate::load::recall::Scorer>>,
    ) -> Result<Scenario> {
        let scored = scorer.is_some();
        let mut b = compile::Builder::new(base, dataset, seed).with_scorer(scorer);
        let mut hasher = Sha256::new();
        let mut any_file = false;
        for (item, weight) in &self.0 {
            match item {
                Item::Builtin(name) => {
                    let (_, _, text) = BUILTINS
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .expect("a built-in's name");
                    let (file, text) = if scored && *name == "search" {
                        ("search-recall", SEARCH_RECALL)
                    } else {
                        (*name, *text)
                    };
                    b.add(
                        &format!("scenarios/{file}.toml"),
                        text,
                        Path::new("scenarios"),
                        *weight,
                    )
                    .map_err(anyhow::Error::msg)?;
                }
                Item::File(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| {
                        format!("--scenario {}: cannot read it", path.display())
                    })?;
                    hasher.update(text.as_bytes());
                    any_file = true;
                    let dir = path.parent().unwrap_or(Path::new("."));
                    b.add(&path.display().to_string(), &text, dir, *weight)
                        .map_err(anyhow::Error::msg)?;
                }
            }
        }
        let digest = any_file.then(|| hex::encode(hasher.finalize()));
        Ok(b.finish(self.to_string(), digest))
    }
}

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    /// An HTTP API (the in-process reference service, or any deployment) that scenarios talk to.
    Http {
        base: String,
        client: reqwest::Client,
    },
    /// THE search SQL over a connection per user, at `ef_search` (what pgbench does).
    Database {
        url: String,
        ef_search: u32,
        vectors: Arc<Vec<Vector>>,
        /// With `--recall`: the query set the vectors are, whose truth scores every answer.
        scorer: Option<Arc<crate::load::recall::Scorer>>,
        /// With `--recall`: the next query of the set, shared by every connection, so that a
        /// level's searches go through the set in order whatever its number of connections.
        next: Arc<std::sync::atomic::AtomicU64>,
        /// With `--write-rate`: the INSERTs beside the searches; then every search runs on the
        /// write table, and a scored one against the table as it stood when it was sent.
        writes: Option<Arc<crate::load::ingest::WritePlan>>,
    },
}

impl Target {
    /// An HTTP target at `base` (no trailing slash).
    pub fn http(base: &str, client: reqwest::Client) -> Result<Self> {
        reqwest::Url::parse(base).with_context(|| format!("'{base}' is not a base URL"))?;
        Ok(Target::Http {
            base: base.to_string(),
            client,
        })
    }

    /// How a sweep of this target names its levels: (record group, unit).
    pub fn sweep_names(&self) -> (&'static str, &'static str) {
        match self {
            Target::Http { .. } => ("capacity", "users"),
            Target::Database { .. } => ("capacity_db", "connections"),
        }
    }

    /// Each sweep level from the scored set's first query: the database target's shared cursor.
    pub fn rewind_scored(&self) {
        if let Target::Database { next, .. } = self {
            next.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Http { base, .. } => crate::secrets::redact(base),
            Target::Database {
                url,
                ef_search,
                writes,
                ..
            } => format!(
                "database {} (ef_search {ef_search}{})",
                crate::secrets::redact(url),
                if writes.is_some() {
                    format!(", on the write table {}.traces", crate::db::writes::SCHEMA)
                } else {
                    String::new()
                }
            ),
        }
    }

    /// The database target's writes, if it writes.
    pub fn writes(&self) -> Option<&Arc<crate::load::ingest::WritePlan>> {
        match self {
            Target::Database { writes, .. } => writes.as_ref(),
            Target::Http { .. } => None,
        }
    }
}

/// The database target's request name.
pub const SQL_NAME: &str = "search_sql";

/// A user of the database target: its connection, with the target's ef_search.
pub struct DbUser {
    pub id: u64,
    conn: Option<sqlx::PgConnection>,
    pub sent: u64,
}

impl DbUser {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            conn: None,
            sent: 0,
        }
    }

    pub fn ready(&self) -> bool {
        self.conn.is_some()
    }

    /// Opens its connection (on the write table, when the run writes) and sets ef_search.
    pub async fn start(&mut self, url: &str, ef_search: u32, write_table: bool) -> Result<()> {
        let mut conn = if write_table {
            crate::db::writes::session(url).await?
        } else {
            crate::db::connect(url).await?
        };
        search::set_ef_search(&mut conn, ef_search, false).await?;
        self.conn = Some(conn);
        Ok(())
    }

    /// Its next search (the query vectors rotate with its requests).
    pub async fn step(&mut self, target: &Target, intended: Instant) -> RequestOutcome {
        let n = self.sent;
        self.sent += 1;
        send_sql(target, n, intended, self.conn.as_mut()).await
    }
}

/// Search number `n` of the database target (its query vector rotates with `n`) over `conn`;
/// `intended` is when it should have started.
pub async fn send_sql(
    target: &Target,
    n: u64,
    intended: Instant,
    conn: Option<&mut sqlx::PgConnection>,
) -> RequestOutcome {
    let Target::Database {
        vectors,
        scorer,
        next,
        writes,
        ..
    } = target
    else {
        return RequestOutcome::failed("SQL", Arc::from(SQL_NAME), intended, Failure::NoConnection);
    };
    let n = match scorer {
        Some(_) => next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        None => n,
    };
    let i = (n % vectors.len() as u64) as usize;
    // Scored: a page of k, the k of recall@k.
    let page = scorer.as_ref().map_or(PAGE, |s| s.k as i64);
    // While rows are written: the truth as the table stands before the search is sent.
    let live = scorer
        .as_ref()
        .and(writes.as_ref())
        .and_then(|w| w.live.as_ref());
    let truth_now = live.map(|l| l.now(i));
    let sent = Instant::now();
    let (failure, bytes, recall) = match conn {
        Some(conn) => match search::search(conn, &vectors[i], page).await {
            Ok(hits) => {
                let recall = scorer.as_ref().map(|s| {
                    let got: Vec<_> = hits.iter().map(|h| (h.id, h.distance)).collect();
                    let r = match &truth_now {
                        Some(t) => crate::db::truth::LiveTruth::score(t, &got),
                        None => s.score(i, &got),
                    };
                    (i, r)
                });
                (None, hits.len() as u64, recall)
            }
            Err(e) => (Some(Failure::Database(crate::one_line(&e))), 0, None),
        },
        None => (Some(Failure::NoConnection), 0, None),
    };
    RequestOutcome {
        method: "SQL",
        name: Arc::from(SQL_NAME),
        intended: intended.min(sent),
        sent,
        done: Instant::now(),
        status: None,
        failure,
        bytes,
        recall,
        rows: 0,
    }
}

/// The dataset parameters recorded in a loaded database (`capacity_meta.params`).
pub async fn loaded_params(
    conn: &mut sqlx::PgConnection,
) -> Result<Option<crate::config::DatasetParams>> {
    let params: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT params FROM capacity_meta WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .context("reading capacity_meta")?;
    let Some(p) = params else { return Ok(None) };
    let num = |k: &str| p.get(k).and_then(serde_json::Value::as_f64);
    Ok(
        match (
            num("rows"),
            num("dims"),
            num("seed"),
            num("clusters"),
            num("sigma"),
        ) {
            (Some(rows), Some(dims), Some(seed), Some(clusters), Some(sigma)) => {
                Some(crate::config::DatasetParams {
                    rows: rows as u64,
                    dims: dims as u32,
                    seed: seed as u64,
                    clusters: clusters as u32,
                    sigma: sigma as f32,
                })
            }
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_builtins_and_files_with_weights() {
        let s: Spec = "search:3,BurstAgent".parse().unwrap();
        assert_eq!(s.to_string(), "search:3,burst:1");
        let f: Spec = "docs/scenarios/rag.toml:2,search".parse().unwrap();
        assert_eq!(
            f.0[0],
            (Item::File(PathBuf::from("docs/scenarios/rag.toml")), 2)
        );
        assert_eq!(f.to_string(), "rag.toml:2,search:1");
        assert!("search".parse::<Spec>().unwrap().is_builtin_search());
        assert!(!f.is_builtin_search());
        for bad in ["", "search:0", "walk", "search,search", "search:x"] {
            assert!(bad.parse::<Spec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_builtins_compile_and_mix_by_weight() {
        let d = crate::config::DatasetParams::default();
        let s = "search:3,burst:1"
            .parse::<Spec>()
            .unwrap()
            .compile("http://127.0.0.1:1", &d, 1)
            .unwrap();
        assert_eq!(s.digest, None, "a built-in is its name");
        let kinds: Vec<&str> = (0..8)
            .map(|i| s.kinds[s.kind_of(i)].name.as_str())
            .collect();
        assert_eq!(kinds.iter().filter(|k| **k == "burst").count(), 2);
        assert_eq!(kinds.iter().filter(|k| **k == "search").count(), 6);
        assert!(s.limiter_under_test);
        let r = "realistic"
            .parse::<Spec>()
            .unwrap()
            .compile("http://127.0.0.1:1", &d, 1)
            .unwrap();
        assert_eq!(r.paced_kind(), Some("realistic"));
        assert_eq!(s.paced_kind(), None);
        // The writers: their 201s add rows; the seeds' kinds only read.
        assert!(!s.writes() && !r.writes());
        for w in ["write", "contribute", "search:4,write:1"] {
            let c = w
                .parse::<Spec>()
                .unwrap()
                .compile("http://127.0.0.1:1", &d, 1)
                .unwrap();
            assert!(c.writes(), "{w}");
            assert_eq!(c.paced_kind(), None, "{w} runs in the open model too");
        }
    }
}
