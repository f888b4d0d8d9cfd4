//! `cargo bench http_search`: one search request end to end over HTTP (reqwest, keep-alive) against
//! the reference service started in-process on a free loopback port — `http_search/ef_search/<ef>`
//! for each ef_search — and the cost of a 429 (`http_search/rejected`). With `CAPBENCH_TARGET_URL`
//! the same requests go to any deployment of this API (`http_search/target`).
//!
//! After each, an HDR measurement pass; for the in-process service, also the same queries' raw SQL
//! at the same ef_search, so the end-to-end median splits into SQL time and HTTP + service overhead.
//! The overhead is reported, not gated: as a ratio (service p50 / raw SQL p50 at the same
//! ef_search) with the cost of a 429 beside it — an absolute budget in milliseconds says more about
//! the machine (a shared 2-vCPU VM) than about the service.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use criterion::{BenchmarkId, Throughput};
use pgvector::Vector;
use serde_json::json;

use crate::bench::{BenchArgs, LatencySummary, criterion, criterion_median_ms, time_async};
use crate::config::Config;
use crate::db::{self, search};
use crate::record::{
    self, Environment, HttpSearchParameters, Metric, Parameters, ResultEntry, RunRecord,
};
use crate::server::{AppState, LocalService};
use crate::setup::{self, Needs};

pub use crate::workload::SEARCH_QUERIES;

/// Results per request (the seeds' `limit`).
const PAGE: i64 = 10;

/// A rate limit high enough never to interfere with a benchmark (the seeds used 10,000/min).
const UNLIMITED_PER_MINUTE: u32 = 100_000_000;

/// The benchmarks of this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    EfSearch(u32),
    Target,
    Rejected,
}

impl Bench {
    pub fn id(self) -> String {
        match self {
            Bench::EfSearch(ef) => format!("http_search/ef_search/{ef}"),
            Bench::Target => "http_search/target".into(),
            Bench::Rejected => "http_search/rejected".into(),
        }
    }

    fn bench_id(self) -> BenchmarkId {
        match self {
            Bench::EfSearch(ef) => BenchmarkId::new("ef_search", ef),
            Bench::Target => BenchmarkId::from_parameter("target"),
            Bench::Rejected => BenchmarkId::from_parameter("rejected"),
        }
    }
}

/// The benchmarks `args` selects for this configuration.
pub fn plan(args: &BenchArgs, config: &Config) -> Vec<Bench> {
    let mut all: Vec<Bench> = if config.service.target_url.is_some() {
        vec![Bench::Target]
    } else {
        config
            .bench
            .ef_search
            .iter()
            .map(|&ef| Bench::EfSearch(ef))
            .collect()
    };
    all.push(Bench::Rejected);
    all.into_iter().filter(|b| args.selects(&b.id())).collect()
}

/// One measurement pass.
#[derive(Debug, Clone)]
pub struct HttpPass {
    pub bench: Bench,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    pub rps: f64,
    pub criterion_median_ms: Option<f64>,
    /// The same queries' SQL alone at the same ef_search (in-process service only).
    pub sql: Option<LatencySummary>,
    /// The service's own stages (`Server-Timing`), median ms each: auth, ratelimit, embed, pool,
    /// db, total. What the client saw beyond `total` is HTTP transport and framework.
    pub stages: Vec<(String, f64)>,
}

/// What the service adds to the raw SQL at the same ef_search (p50s of one pass).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overhead {
    /// Service p50 − raw SQL p50 (ms).
    pub ms: f64,
    /// Service p50 / raw SQL p50.
    pub ratio: f64,
}

impl HttpPass {
    /// The service's overhead over its SQL, when the SQL was measured beside it.
    pub fn overhead(&self) -> Option<Overhead> {
        let sql = self.sql?.p50_ms;
        (sql > 0.0).then(|| Overhead {
            ms: self.latency.p50_ms - sql,
            ratio: self.latency.p50_ms / sql,
        })
    }

    /// The median of the service's own stage `name` (`Server-Timing`), when it sent one.
    pub fn stage(&self, name: &str) -> Option<f64> {
        self.stages.iter().find(|(n, _)| n == name).map(|s| s.1)
    }
}

pub type RunOutcome = crate::bench::RunOutcome<HttpPass>;

pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// A target: a base URL and a key, and (in-process) the service behind it.
struct Target {
    base: String,
    key: String,
    service: Option<LocalService>,
}

async fn mint_key(client: &reqwest::Client, base: &str, tag: &str) -> Result<String> {
    let email = format!("capbench-{tag}-{}@bench.invalid", std::process::id());
    let shown = crate::secrets::redact(base);
    let resp = client
        .post(format!("{base}/api/v1/keys"))
        .json(&json!({"email": email}))
        .send()
        .await
        .with_context(|| format!("POST {shown}/api/v1/keys"))?;
    if resp.status() != reqwest::StatusCode::CREATED {
        bail!(
            "POST {shown}/api/v1/keys answered {} (set CAPBENCH_API_KEY to use an existing key)",
            resp.status()
        );
    }
    let body: serde_json::Value = resp.json().await?;
    body["api_key"]
        .as_str()
        .map(String::from)
        .context("no api_key in the answer of /api/v1/keys")
}

async fn request(
    client: &reqwest::Client,
    target: &Target,
    q: &str,
) -> Result<reqwest::StatusCode> {
    Ok(request_timed(client, target, q).await?.0)
}

/// A search request; its status and the service's `Server-Timing` header, if it sent one (parsed by
/// the caller, outside the timed span).
async fn request_timed(
    client: &reqwest::Client,
    target: &Target,
    q: &str,
) -> Result<(reqwest::StatusCode, Option<reqwest::header::HeaderValue>)> {
    let resp = client
        .post(format!("{}/api/v1/traces/search", target.base))
        .header("X-API-Key", &target.key)
        .json(&json!({"q": q, "limit": PAGE}))
        .send()
        .await?;
    let status = resp.status();
    let timing = resp.headers().get("server-timing").cloned();
    resp.bytes().await?; // read the whole body, as a client does
    Ok((status, timing))
}

/// Per stage (in the order the service reports them), the median over a pass.
fn stage_medians(samples: Vec<(String, Vec<f64>)>) -> Vec<(String, f64)> {
    samples
        .into_iter()
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            let m = v[v.len() / 2];
            (name, m)
        })
        .collect()
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let plan = plan(&bench_args, &config);
    let ids: Vec<String> = plan.iter().map(|b| b.id()).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    crate::install_tls_provider();
    // One thread for client and in-process service: no cross-thread wake-ups in the measured path
    // (on 2 cores they cost more than the service's own work); PostgreSQL and Redis keep the others.
    let rt = crate::current_thread_runtime()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()?;
    let local = config.service.target_url.is_none();
    let (db_url, redis_url) = if local {
        let ready = rt.block_on(setup::ready(&config, Needs::DatabaseAndRedis))?;
        ready.pristine()?;
        let redis = ready.redis()?.to_string();
        let db = ready.database_url;
        eprintln!(
            "http_search: in-process service on PostgreSQL {} and Redis {}",
            crate::secrets::redact(&db),
            crate::secrets::redact(&redis)
        );
        (Some(db), Some(redis))
    } else {
        eprintln!(
            "http_search: target {}",
            crate::secrets::redact(config.service.target_url.as_deref().unwrap_or_default())
        );
        (None, None)
    };
    let start_service = |ef: u32, read_per_minute: u32| -> Result<Target> {
        rt.block_on(async {
            match (&db_url, &redis_url, &config.service.target_url) {
                (Some(db), Some(redis), _) => {
                    let mut cfg = config.clone();
                    cfg.service.search_ef_search = ef;
                    cfg.service.rate_limit_read_per_minute = read_per_minute;
                    let service =
                        LocalService::start(AppState::connect(&cfg, db, redis).await?).await?;
                    let base = service.url();
                    let key = mint_key(&client, &base, "http").await?;
                    Ok(Target {
                        base,
                        key,
                        service: Some(service),
                    })
                }
                (_, _, Some(url)) => {
                    let base = url.trim_end_matches('/').to_string();
                    let key = match (&config.service.api_key, read_per_minute) {
                        (Some(k), UNLIMITED_PER_MINUTE) => k.clone(),
                        _ => mint_key(&client, &base, "http").await?,
                    };
                    Ok(Target {
                        base,
                        key,
                        service: None,
                    })
                }
                _ => bail!("no target"),
            }
        })
    };

    let vectors = crate::load::scenario::query_vectors(&config.dataset);
    let passes = if config.bench.quick { 200 } else { 2_000 };
    let mut c = criterion(&config);
    let mut group = c.benchmark_group("http_search");
    group.throughput(Throughput::Elements(1));
    let mut results = Vec::new();
    for bench in plan.iter().copied() {
        let (ef, expected, limit) = match bench {
            Bench::EfSearch(ef) => (ef, reqwest::StatusCode::OK, UNLIMITED_PER_MINUTE),
            Bench::Target => (
                config.service.search_ef_search,
                reqwest::StatusCode::OK,
                UNLIMITED_PER_MINUTE,
            ),
            Bench::Rejected => (
                config.service.search_ef_search,
                reqwest::StatusCode::TOO_MANY_REQUESTS,
                1,
            ),
        };
        let target = start_service(ef, limit)?;
        if bench == Bench::Rejected {
            // Empty the key's bucket (a remote deployment's limit is unknown: bounded attempts).
            rt.block_on(async {
                for _ in 0..100_000 {
                    if request(&client, &target, "drain the bucket").await? == reqwest::StatusCode::TOO_MANY_REQUESTS {
                        return Ok(());
                    }
                }
                bail!("no 429 after 100,000 requests: the target's read limit is higher than this bench will drain")
            })?;
        }
        let mut next = 0usize;
        time_async(&mut group, bench.bench_id(), &rt, async || {
            let q = SEARCH_QUERIES[next % SEARCH_QUERIES.len()];
            next += 1;
            let s = request(&client, &target, q).await?;
            anyhow::ensure!(s == expected, "expected {expected}, got {s}");
            Ok(())
        })
        .with_context(|| format!("benchmark {}", bench.id()))?;
        if bench_args.test {
            continue;
        }
        // The pass: every request's latency; for the in-process service, each request is followed by
        // the same query's raw SQL at the same ef_search (interleaved, so both see the same machine).
        let sql_conn = match (bench, &db_url) {
            (Bench::EfSearch(ef), Some(db)) => Some(rt.block_on(sql_connection(db, ef, &vectors))?),
            _ => None,
        };
        let mut hist = record::latency_histogram();
        let mut sql_hist = record::latency_histogram();
        let mut http_time = std::time::Duration::ZERO;
        let mut stages: Vec<(String, Vec<f64>)> = Vec::new();
        rt.block_on(async {
            let mut sql_conn = sql_conn;
            for i in 0..passes {
                let t = Instant::now();
                let (s, timing) =
                    request_timed(&client, &target, SEARCH_QUERIES[i % SEARCH_QUERIES.len()])
                        .await?;
                let took = t.elapsed();
                let timing = timing
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(crate::server::parse_server_timing)
                    .unwrap_or_default();
                for (name, ms) in timing {
                    match stages.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, v)) => v.push(ms),
                        None => stages.push((name, vec![ms])),
                    }
                }
                http_time += took;
                hist.saturating_record(took.as_nanos() as u64);
                anyhow::ensure!(
                    s == expected,
                    "{}: expected {expected}, got {s}",
                    bench.id()
                );
                if let (Some(conn), Bench::EfSearch(ef)) = (sql_conn.as_mut(), bench) {
                    let t = Instant::now();
                    // Another query than the request just made (whose graph path is still in the CPU
                    // caches); over the pass both sides run every query equally often.
                    let j = (i + vectors.len() / 2) % vectors.len();
                    search::search(conn, &vectors[j], crate::server::ann_candidates(ef, PAGE))
                        .await?;
                    sql_hist.saturating_record(t.elapsed().as_nanos() as u64);
                }
            }
            anyhow::Ok(())
        })?;
        let rps = passes as f64 / http_time.as_secs_f64().max(1e-9);
        let sql = (!sql_hist.is_empty()).then(|| LatencySummary::of(&sql_hist));
        results.push(HttpPass {
            bench,
            latency: LatencySummary::of(&hist),
            histogram: hist,
            rps,
            criterion_median_ms: criterion_median_ms(&config, &bench.id()),
            sql,
            stages: stage_medians(stages),
        });
        if let Some(service) = target.service {
            rt.block_on(service.stop())?;
        }
    }
    group.finish();
    c.final_summary();
    if !results.is_empty() {
        print_table(&results);
        let record = rt.block_on(write_record(
            &config,
            db_url.as_deref(),
            redis_url.as_deref(),
            &results,
        ))?;
        crate::report::publish(&record, args)?;
    }
    Ok(RunOutcome::Ran(results))
}

/// A connection like the service's pool gives: ef_search set once, the statement prepared.
async fn sql_connection(db_url: &str, ef: u32, vectors: &[Vector]) -> Result<sqlx::PgConnection> {
    let mut conn = db::connect(db_url).await?;
    search::set_ef_search(&mut conn, ef, false).await?;
    for v in vectors {
        search::search(&mut conn, v, crate::server::ann_candidates(ef, PAGE)).await?;
    }
    Ok(conn)
}

fn print_table(results: &[HttpPass]) {
    println!();
    println!(
        "{:<28} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7}",
        "benchmark (ms)",
        "criterion",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "req/s",
        "SQL p50",
        "overhead",
        "× SQL"
    );
    for r in results {
        let l = &r.latency;
        let overhead = r.overhead();
        println!(
            "{:<28} {:>9} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>7.0} {:>7} {:>8} {:>7}",
            r.bench.id(),
            r.criterion_median_ms
                .map_or("-".into(), |m| format!("{m:.3}")),
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            r.rps,
            r.sql.map_or("-".into(), |s| format!("{:.3}", s.p50_ms)),
            overhead.map_or("-".into(), |o| format!("{:.3}", o.ms)),
            overhead.map_or("-".into(), |o| format!("{:.2}", o.ratio)),
        );
    }
    for r in results.iter().filter(|r| !r.stages.is_empty()) {
        let parts: Vec<String> = r
            .stages
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.3}"))
            .collect();
        println!(
            "{:<28} service stages, median ms (Server-Timing): {}; HTTP transport + framework {}",
            r.bench.id(),
            parts.join(", "),
            r.stage("total")
                .map_or("-".into(), |t| format!("{:.3}", r.latency.p50_ms - t)),
        );
    }
    if let Some(line) = overhead_line(results) {
        println!("{line}");
    }
}

/// One line on the service's overhead: the ratio at each ef_search, and what a 429 costs beside it.
/// No pass/fail: the ratio is what compares across machines.
pub fn overhead_line(results: &[HttpPass]) -> Option<String> {
    let ratios: Vec<String> = results
        .iter()
        .filter_map(|r| match (r.bench, r.overhead()) {
            (Bench::EfSearch(ef), Some(o)) => Some(format!("ef_search {ef} {:.2}×", o.ratio)),
            _ => None,
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let rejected = results.iter().find(|r| r.bench == Bench::Rejected);
    Some(format!(
        "service overhead, service p50 / raw SQL p50 at the same ef_search (reported, not gated): {}; {}",
        ratios.join(", "),
        match rejected {
            Some(r) => format!(
                "a 429 costs {:.3} ms end to end{}",
                r.latency.p50_ms,
                r.stage("total")
                    .map_or(String::new(), |t| format!(" ({t:.3} ms in the service)"))
            ),
            None => "the 429 path was not measured (http_search/rejected not selected)".into(),
        }
    ))
}

async fn write_record(
    config: &Config,
    db_url: Option<&str>,
    redis_url: Option<&str>,
    results: &[HttpPass],
) -> Result<RunRecord> {
    let (environment, _) = Environment::of_servers("http_search", db_url, redis_url).await;
    let mut rec = RunRecord::new(
        environment,
        Parameters::HttpSearch(HttpSearchParameters {
            quick: config.bench.quick,
            target: config
                .service
                .target_url
                .as_deref()
                .map_or("in-process".into(), crate::secrets::redact),
            queries: SEARCH_QUERIES.iter().map(|q| q.to_string()).collect(),
            limit: PAGE as u32,
        }),
    );
    if db_url.is_some() {
        rec.dataset = Some(crate::dataset::identity(&config.dataset, &config.index));
    }
    rec.results = entries(results)?;
    Ok(rec)
}

/// The record's entries: each pass's figures; beside the SQL, the overhead in ms and as a ratio
/// (`overhead_p50_ms`, `overhead_ratio`) — no gate; the 429 path is its own entry
/// (`http_search/rejected`: `p50_ms`, `server_total_p50_ms`).
pub fn entries(results: &[HttpPass]) -> Result<Vec<ResultEntry>> {
    results
        .iter()
        .map(|r| {
            let mut metrics = r.latency.metrics();
            metrics.insert(Metric::Rps, r.rps);
            if let Some(m) = r.criterion_median_ms {
                metrics.insert(Metric::CriterionMedianMs, m);
            }
            if let Some(s) = r.sql {
                metrics.insert(Metric::SqlP50Ms, s.p50_ms);
            }
            if let Some(o) = r.overhead() {
                metrics.insert(Metric::OverheadP50Ms, o.ms);
                metrics.insert(Metric::OverheadRatio, o.ratio);
            }
            if let Bench::EfSearch(ef) = r.bench {
                metrics.insert(Metric::EfSearch, f64::from(ef));
            }
            for (name, ms) in &r.stages {
                metrics.insert(Metric::ServerStageP50(name.clone()), *ms);
            }
            Ok(ResultEntry {
                name: r.bench.id(),
                metrics,
                histogram: Some(record::encode_histogram(&r.histogram)?),
                ..ResultEntry::default()
            })
        })
        .collect()
}
