//! The seeds' user kinds and the targets they talk to. A virtual user is a kind (what it sends and
//! how long it waits) plus its own API key (HTTP) or connection (database).

pub mod compile;
pub mod file;
pub mod template;
pub mod vars;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgvector::Vector;
use serde_json::json;

use super::failure::Failure;
use super::stats::RequestOutcome;
use crate::db::search;
use crate::workload::SEARCH_QUERIES;
pub use crate::workload::query_vectors;

/// Searches per page (the seeds' `limit`).
const PAGE: i64 = 10;
/// RealisticAgent: searches per session, then idle.
pub const REALISTIC_SESSION: u64 = 15;

/// A kind of virtual user (the seeds' Locust classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SearchLoadUser: rotates the ten search queries, waits 0.1 s.
    Search,
    /// BurstAgent: no wait; 429 is an expected outcome, anything else but 200 a failure.
    Burst,
    /// RealisticAgent: 15 searches 2 s apart, then 30 s idle.
    Realistic,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Search => "search",
            Kind::Burst => "burst",
            Kind::Realistic => "realistic",
        }
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "search" | "searchloaduser" => Ok(Kind::Search),
            "burst" | "burstagent" => Ok(Kind::Burst),
            "realistic" | "realisticagent" => Ok(Kind::Realistic),
            other => Err(format!(
                "unknown scenario '{other}' (search, burst, realistic; mix them as 'search:3,burst:1')"
            )),
        }
    }
}

/// Kinds with weights: `search`, `search:3,burst:1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        for item in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (kind, weight) = match item.split_once(':') {
                Some((k, w)) => (
                    k.parse::<Kind>()?,
                    w.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("weight '{w}' in '{s}' is not a whole number"))?,
                ),
                None => (item.parse::<Kind>()?, 1),
            };
            if weight == 0 || weight > 1000 {
                return Err(format!(
                    "weight {weight} for '{}' in '{s}': weights are 1 to 1000",
                    kind.as_str()
                ));
            }
            if parts.iter().any(|(k, _)| *k == kind) {
                return Err(format!("'{}' appears twice in '{s}'", kind.as_str()));
            }
            parts.push((kind, weight));
        }
        if parts.is_empty() {
            return Err("empty scenario (search, burst, realistic)".into());
        }
        Ok(Mix(parts))
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(k, w)| format!("{}:{w}", k.as_str()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// The kind of user (or request) number `i`: smooth weighted round robin (nginx's), so any
    /// prefix of users follows the weights as closely as whole users can (3:1 → R R B R …).
    pub fn kind_of(&self, i: u64) -> Kind {
        let total: i64 = self.0.iter().map(|(_, w)| i64::from(*w)).sum();
        let mut current = vec![0i64; self.0.len()];
        let mut pick = 0;
        for _ in 0..=(i % total as u64) {
            for (c, (_, w)) in current.iter_mut().zip(&self.0) {
                *c += i64::from(*w);
            }
            pick = (0..current.len())
                .max_by_key(|&j| (current[j], std::cmp::Reverse(j)))
                .unwrap_or(0);
            current[pick] -= total;
        }
        self.0[pick].0
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.0.iter().any(|(k, _)| *k == kind)
    }
}

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    /// An HTTP deployment of the seeds' API (or the in-process reference service).
    Http {
        base: String,
        client: reqwest::Client,
        /// Parsed once, and every request body serialized once: the generator's own cost per
        /// request is what limits the rates it can offer.
        prepared: Arc<Prepared>,
    },
    /// THE search SQL over a connection per user, at `ef_search` (what pgbench does).
    Database {
        url: String,
        ef_search: u32,
        vectors: Arc<Vec<Vector>>,
    },
}

/// URLs and request bodies of an HTTP target, ready to send.
#[derive(Debug)]
pub struct Prepared {
    keys_url: reqwest::Url,
    search_url: reqwest::Url,
    /// SearchLoadUser's ten queries.
    search: Vec<bytes::Bytes>,
    /// BurstAgent's one.
    burst: bytes::Bytes,
    /// RealisticAgent's session of fifteen.
    realistic: Vec<bytes::Bytes>,
}

impl Target {
    /// An HTTP target at `base` (no trailing slash).
    pub fn http(base: &str, client: reqwest::Client) -> Result<Self> {
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .with_context(|| format!("'{base}' is not a base URL"))
        };
        let body = |v: serde_json::Value| bytes::Bytes::from(v.to_string());
        let prepared = Prepared {
            keys_url: url(KEYS_NAME)?,
            search_url: url(SEARCH_NAME)?,
            search: SEARCH_QUERIES
                .iter()
                .map(|q| body(json!({"q": q, "limit": PAGE})))
                .collect(),
            burst: body(json!({"q": "test query"})),
            realistic: (0..REALISTIC_SESSION)
                .map(|i| body(json!({"q": format!("realistic query {i}")})))
                .collect(),
        };
        Ok(Target::Http {
            base: base.to_string(),
            client,
            prepared: Arc::new(prepared),
        })
    }

    /// How a sweep of this target names its levels: (record group, unit).
    pub fn sweep_names(&self) -> (&'static str, &'static str) {
        match self {
            Target::Http { .. } => ("capacity", "users"),
            Target::Database { .. } => ("capacity_db", "connections"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Http { base, .. } => crate::secrets::redact(base),
            Target::Database { url, ef_search, .. } => format!(
                "database {} (ef_search {ef_search})",
                crate::secrets::redact(url)
            ),
        }
    }
}

/// One virtual user's state.
pub struct User {
    pub kind: Kind,
    /// Its API key (HTTP).
    pub key: Option<String>,
    /// Its connection (database).
    conn: Option<sqlx::PgConnection>,
    /// Requests it has sent.
    pub sent: u64,
    /// Its number in the run (also in its key's e-mail address).
    pub id: u64,
}

/// The seeds' SearchLoadUser request name.
pub const SEARCH_NAME: &str = "/api/v1/traces/search";
/// The seeds' RealisticAgent request name.
pub const REALISTIC_NAME: &str = "/api/v1/traces/search [realistic]";
/// Key minting.
pub const KEYS_NAME: &str = "/api/v1/keys";
/// The database target's request name.
pub const SQL_NAME: &str = "search_sql";

impl User {
    pub fn new(kind: Kind, id: u64) -> Self {
        Self {
            kind,
            key: None,
            conn: None,
            sent: 0,
            id,
        }
    }

    /// A user with a key minted elsewhere (sweeps and the open model reuse keys).
    pub fn with_key(kind: Kind, id: u64, key: Option<String>) -> Self {
        Self {
            key,
            ..Self::new(kind, id)
        }
    }

    /// Gets ready: mints an API key (HTTP; the request is returned to be recorded) or opens a
    /// connection with the target's ef_search (database).
    pub async fn start(
        &mut self,
        target: &Target,
        run_tag: &str,
    ) -> Result<Option<RequestOutcome>> {
        match target {
            Target::Http {
                client, prepared, ..
            } => {
                if self.key.is_some() {
                    return Ok(None);
                }
                let email = format!(
                    "load-{run_tag}-{}-{}@test.invalid",
                    self.kind.as_str(),
                    self.id
                );
                let sent = Instant::now();
                let resp = client
                    .post(prepared.keys_url.clone())
                    .json(&json!({ "email": email }))
                    .send()
                    .await;
                let (status, body, failure) = match resp {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        match r.bytes().await {
                            Ok(b) => (
                                Some(status),
                                b.to_vec(),
                                (status != 201).then_some(Failure::Status(status)),
                            ),
                            Err(e) => (Some(status), Vec::new(), Some(Failure::of_transport(&e))),
                        }
                    }
                    Err(e) => (None, Vec::new(), Some(Failure::of_transport(&e))),
                };
                if failure.is_none() {
                    let v: serde_json::Value = serde_json::from_slice(&body)
                        .context("the answer of /api/v1/keys is not JSON")?;
                    self.key = v["api_key"].as_str().map(String::from);
                }
                let failure = failure.or_else(|| self.key.is_none().then_some(Failure::NoApiKey));
                Ok(Some(RequestOutcome {
                    method: "POST",
                    name: KEYS_NAME,
                    intended: sent,
                    sent,
                    done: Instant::now(),
                    status,
                    failure,
                    bytes: body.len() as u64,
                }))
            }
            Target::Database { url, ef_search, .. } => {
                let mut conn = crate::db::connect(url).await?;
                search::set_ef_search(&mut conn, *ef_search, false).await?;
                self.conn = Some(conn);
                Ok(None)
            }
        }
    }

    /// Whether the user can send (it has its key or connection).
    pub fn ready(&self) -> bool {
        self.key.is_some() || self.conn.is_some()
    }

    /// The wait after a request (the seeds' `wait_time`), unless `wait` overrides it.
    pub fn wait_after(&self, wait: Option<Duration>) -> Duration {
        match (self.kind, wait) {
            // The idle phase is part of the pattern, not a think time.
            // The seeds: wait 2 s, a task that sleeps 30 s, wait 2 s, then the next session.
            (Kind::Realistic, _) if self.sent.is_multiple_of(REALISTIC_SESSION) => {
                Duration::from_secs(30) + 2 * wait.unwrap_or(Duration::from_secs(2))
            }
            (_, Some(w)) => w,
            (Kind::Search, None) => Duration::from_millis(100),
            (Kind::Burst, None) => Duration::ZERO,
            (Kind::Realistic, None) => Duration::from_secs(2),
        }
    }

    /// Sends the user's next request; `intended` is when it should have started.
    pub async fn step(&mut self, target: &Target, intended: Instant) -> RequestOutcome {
        let n = self.sent;
        self.sent += 1;
        send(
            target,
            self.kind,
            self.key.as_deref(),
            n,
            intended,
            self.conn.as_mut(),
        )
        .await
    }
}

/// Request number `n` of a user of `kind` (its query rotates with `n`), over `conn` for the
/// database target; `intended` is when it should have started.
pub async fn send(
    target: &Target,
    kind: Kind,
    key: Option<&str>,
    n: u64,
    intended: Instant,
    conn: Option<&mut sqlx::PgConnection>,
) -> RequestOutcome {
    match target {
        Target::Http {
            client, prepared, ..
        } => {
            let (name, body) = match kind {
                Kind::Search => (
                    SEARCH_NAME,
                    &prepared.search[(n % prepared.search.len() as u64) as usize],
                ),
                Kind::Burst => (SEARCH_NAME, &prepared.burst),
                Kind::Realistic => (
                    REALISTIC_NAME,
                    &prepared.realistic[(n % REALISTIC_SESSION) as usize],
                ),
            };
            let sent = Instant::now();
            let mut req = client
                .post(prepared.search_url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = key {
                req = req.header("X-API-Key", key);
            }
            let (status, bytes, failure) = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.bytes().await {
                        Ok(b) => (Some(status), b.len() as u64, judge(kind, status)),
                        Err(e) => (Some(status), 0, Some(Failure::of_transport(&e))),
                    }
                }
                Err(e) => (None, 0, Some(Failure::of_transport(&e))),
            };
            RequestOutcome {
                method: "POST",
                name,
                intended: intended.min(sent),
                sent,
                done: Instant::now(),
                status,
                failure,
                bytes,
            }
        }
        Target::Database { vectors, .. } => {
            let v = &vectors[(n % vectors.len() as u64) as usize];
            let sent = Instant::now();
            let (failure, bytes) = match conn {
                Some(conn) => match search::search(conn, v, PAGE).await {
                    Ok(hits) => (None, hits.len() as u64),
                    Err(e) => (Some(Failure::Database(crate::one_line(&e))), 0),
                },
                None => (Some(Failure::NoConnection), 0),
            };
            RequestOutcome {
                method: "SQL",
                name: SQL_NAME,
                intended: intended.min(sent),
                sent,
                done: Instant::now(),
                status: None,
                failure,
                bytes,
            }
        }
    }
}

/// Whether a search answered with `status` failed, for a user of `kind`: 200 is a success, and
/// so is a burst user's 429 (the limiter doing its job).
fn judge(kind: Kind, status: u16) -> Option<Failure> {
    match (kind, status) {
        (_, 200) | (Kind::Burst, 429) => None,
        (Kind::Burst, s) => Some(Failure::UnexpectedStatus(s)),
        (_, s) => Some(Failure::Status(s)),
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
    fn mixes_follow_their_weights() {
        let m: Mix = "search:3,burst:1".parse().unwrap();
        let kinds: Vec<Kind> = (0..8).map(|i| m.kind_of(i)).collect();
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Burst).count(), 2);
        assert_eq!(kinds.iter().filter(|k| **k == Kind::Search).count(), 6);
        let one: Mix = "realistic".parse().unwrap();
        assert!((0..5).all(|i| one.kind_of(i) == Kind::Realistic));
        for bad in ["", "search:0", "walk", "search,search", "search:x"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_users_429_is_no_failure() {
        assert_eq!(judge(Kind::Search, 200), None);
        assert_eq!(judge(Kind::Burst, 429), None);
        assert_eq!(judge(Kind::Search, 429), Some(Failure::Status(429)));
        assert_eq!(judge(Kind::Realistic, 503), Some(Failure::Status(503)));
        assert_eq!(
            judge(Kind::Burst, 500),
            Some(Failure::UnexpectedStatus(500))
        );
        assert_eq!(
            judge(Kind::Burst, 500).unwrap().to_string(),
            "Unexpected status 500"
        );
    }
}
