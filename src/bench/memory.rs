//! `cargo bench memory`: the same HNSW search in three memory regimes, for query pools of several
//! sizes — where the cliff is, and why:
//!
//! - `warm`: the index, the table and its TOAST prewarmed into shared_buffers (what every other
//!   bench measures);
//! - `cold`: PostgreSQL restarted (shared_buffers empty) and the kernel's page cache of the index's
//!   and the table's files dropped (`posix_fadvise(DONTNEED)` on each file while the server is
//!   stopped — no privilege needed, nothing else on the machine touched): the first queries read
//!   from disk, and the latency of each query in order is the warm-up curve;
//! - `small_buffers`: PostgreSQL restarted with `shared_buffers` below the index's size (1/8 of it
//!   by default, `CAPBENCH_SMALL_SHARED_BUFFERS`) for this run only; a first pass fills it (its
//!   curve is kept), the second is measured. Pages it misses come from the kernel's page cache.
//!
//! Every pass reports, per query, the blocks PostgreSQL found in shared_buffers (hits) and those it
//! had to read (reads) for the index and for the table (heap and TOAST, where the vectors live),
//! from `pg_statio_user_indexes` / `pg_statio_user_tables` before and after — the cliff explained,
//! not only shown. Only the embedded stack is restarted; a server of `DATABASE_URL` is measured
//! warm only, and the record says so. The private server is restarted with setup/postgres.conf's
//! settings when the bench ends, whatever happened.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgvector::Vector;
use sqlx::PgConnection;

use crate::bench::{BenchArgs, LatencySummary};
use crate::config::Config;
use crate::dataset::{self, Dataset, Distribution};
use crate::db::{self, index, schema, search};
use crate::record::{
    self, Environment, MemoryParameters, Metric, Parameters, ResultEntry, RunRecord,
};
use crate::stack;

const GROUP: &str = "memory";

/// A memory regime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Regime {
    Warm,
    Cold,
    SmallBuffers,
}

impl Regime {
    pub const ALL: [Regime; 3] = [Regime::Warm, Regime::Cold, Regime::SmallBuffers];

    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Warm => "warm",
            Regime::Cold => "cold",
            Regime::SmallBuffers => "small_buffers",
        }
    }
}

/// `memory/cold/pool=10000`.
pub fn id(regime: Regime, pool: usize) -> String {
    format!("{GROUP}/{}/pool={pool}", regime.as_str())
}

/// The (regime, pool) pairs `args` selects.
pub fn plan(args: &BenchArgs, config: &Config) -> Vec<(Regime, usize)> {
    Regime::ALL
        .into_iter()
        .flat_map(|r| pools(config).into_iter().map(move |p| (r, p)))
        .filter(|&(r, p)| args.selects(&id(r, p)))
        .collect()
}

fn pools(config: &Config) -> Vec<usize> {
    let mut p: Vec<usize> = config
        .bench
        .memory_pools
        .iter()
        .map(|&n| n as usize)
        .collect();
    if config.bench.quick {
        p = p.into_iter().map(|n| n.min(500)).collect();
        p.dedup();
    }
    p
}

/// The queries of one curve kept in the record (latency by query number).
const CURVE_QUERIES: usize = 1000;

/// The longest a pass runs: a pass over a large pool in a cold or small regime can take minutes.
const PASS_BOUND: Duration = Duration::from_secs(180);

/// Blocks per query of one pass (means).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Blocks {
    pub index_hits: f64,
    pub index_reads: f64,
    pub table_hits: f64,
    pub table_reads: f64,
}

/// One pass over a pool.
#[derive(Debug, Clone)]
pub struct Pass {
    pub regime: Regime,
    pub pool: usize,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    pub qps: f64,
    pub blocks: Blocks,
    /// Latency (ms) of the first queries, in order.
    pub curve: Vec<f64>,
    /// The curve of the pass that filled the small shared_buffers (small_buffers only).
    pub filling: Option<Vec<f64>>,
    /// The queries it ran (fewer than the pool when [`PASS_BOUND`] ended it).
    pub queries: usize,
}

pub type RunOutcome = crate::bench::RunOutcome<Pass>;

/// `benches/memory.rs`'s main.
pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let points = plan(&bench_args, &config);
    let ids: Vec<String> = points.iter().map(|&(r, p)| id(r, p)).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    let rt = crate::current_thread_runtime()?;
    rt.block_on(async {
        let url = crate::bench::database(&config, "memory").await?;
        let largest = pools(&config).into_iter().max().unwrap_or(0);
        let data = Dataset::new(config.dataset.clone());
        let set = tokio::task::spawn_blocking(move || {
            data.query_set(Distribution::Heldout, None, largest as u32)
        })
        .await
        .context("drawing the query pool")?;
        let queries: Vec<Vector> = set.vectors.into_iter().map(Vector::from).collect();
        let ef = config.service.search_ef_search;
        let k = i64::from(config.bench.k);
        let mut conn = db::connect(&url).await?;
        search::check_plan(&mut conn, &queries[0], k, ef, schema::HNSW_INDEX).await?;
        let prewarmed = index::prewarm(&mut conn).await?;
        let files = relation_files(&mut conn).await?;
        // This session's counters (the prewarm's reads) flushed now, not into a pass's window.
        counters(&mut conn).await?;
        drop(conn);
        let small = config.bench.small_shared_buffers_mb.unwrap_or_else(|| {
            ((prewarmed.index_bytes >> 20) / 8).max(16) as u64
        });
        let embedded = config.servers.database_url.is_none();
        let mut skipped = Vec::new();
        if bench_args.test {
            return Ok(RunOutcome::Ran(Vec::new()));
        }
        let mut passes = Vec::new();
        let outcome = async {
            for &regime in &Regime::ALL {
                let mine: Vec<usize> = points
                    .iter()
                    .filter(|(r, _)| *r == regime)
                    .map(|&(_, p)| p)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                if regime != Regime::Warm && !embedded {
                    skipped.push(format!(
                        "{}: not measured — the server of DATABASE_URL is never restarted or reconfigured",
                        regime.as_str()
                    ));
                    continue;
                }
                if regime == Regime::SmallBuffers {
                    stack::restart_postgres(
                        &config.servers,
                        &[format!("shared_buffers={small}MB")],
                        &[],
                    )
                    .await?;
                    eprintln!("memory: restarted PostgreSQL with shared_buffers={small}MB");
                }
                for pool in mine {
                    let qs = &queries[..pool.min(queries.len())];
                    let mut filling = None;
                    match regime {
                        // Prewarmed on the pass's own connection, before its counters are read.
                        Regime::Warm => {}
                        Regime::Cold => {
                            let n = stack::restart_postgres(&config.servers, &[], &files).await?;
                            eprintln!(
                                "memory: restarted PostgreSQL and dropped the page cache of {n} relation files"
                            );
                        }
                        Regime::SmallBuffers => {
                            let first = pass(&url, regime, qs, k, ef, false).await?;
                            filling = Some(first.curve);
                        }
                    }
                    let mut p = pass(&url, regime, qs, k, ef, regime == Regime::Warm).await?;
                    p.filling = filling;
                    eprintln!(
                        "memory: {}: {} queries, p50 {:.2} ms, p99 {:.2} ms, index reads/query {:.1}, table reads/query {:.1}",
                        id(regime, pool),
                        p.queries,
                        p.latency.p50_ms,
                        p.latency.p99_ms,
                        p.blocks.index_reads,
                        p.blocks.table_reads
                    );
                    passes.push(p);
                }
            }
            anyhow::Ok(())
        }
        .await;
        // Back to setup/postgres.conf's settings, whatever happened.
        if embedded && points.iter().any(|(r, _)| *r != Regime::Warm) {
            stack::restart_postgres(&config.servers, &[], &[]).await?;
            eprintln!("memory: PostgreSQL restarted with setup/postgres.conf's settings");
        }
        outcome?;
        let mut conn = db::connect(&url).await?;
        print_table(&config, &passes, small, &skipped);
        let record = write_record(
            &config,
            &mut conn,
            &passes,
            MemoryParameters {
                ef_search: ef,
                k: config.bench.k as usize,
                pools: pools(&config),
                index_bytes: prewarmed.index_bytes,
                table_bytes: prewarmed.table_bytes,
                shared_buffers_bytes: prewarmed.shared_buffers_bytes,
                small_shared_buffers_bytes: (small as i64) << 20,
                cold_method: COLD_METHOD.into(),
                skipped,
                quick: config.bench.quick,
                rows: config.dataset.rows,
            },
        )
        .await?;
        crate::report::publish(&record, args)?;
        Ok(RunOutcome::Ran(passes))
    })
}

/// How the cold regime empties the caches, as the record says it.
pub const COLD_METHOD: &str = "PostgreSQL stopped (shared_buffers emptied); posix_fadvise(POSIX_FADV_DONTNEED) on every \
     segment file of the HNSW index, the table, its TOAST table and TOAST index (their pages dropped \
     from the kernel's page cache); PostgreSQL started";

/// The files (relative to the data directory) of the HNSW index, the table, its TOAST table and
/// TOAST index.
async fn relation_files(conn: &mut PgConnection) -> Result<Vec<String>> {
    let files: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT pg_relation_filepath(r) FROM unnest(ARRAY[to_regclass($1), 'traces'::regclass,
                (SELECT reltoastrelid::regclass FROM pg_class WHERE oid = 'traces'::regclass AND reltoastrelid <> 0),
                (SELECT indexrelid::regclass FROM pg_index WHERE indrelid =
                     (SELECT reltoastrelid FROM pg_class WHERE oid = 'traces'::regclass))]) AS r
         WHERE r IS NOT NULL",
    )
    .bind(schema::HNSW_INDEX)
    .fetch_all(conn)
    .await
    .context("finding the relation files")?;
    Ok(files.into_iter().flatten().collect())
}

/// Cumulative block counters of the index and the table (heap + TOAST + TOAST index).
async fn counters(conn: &mut PgConnection) -> Result<[i64; 4]> {
    // Pending counters of this session flushed, and a fresh snapshot of everyone's.
    sqlx::raw_sql("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .context("pg_stat_force_next_flush() (PostgreSQL 15 or later)")?;
    sqlx::raw_sql("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await?;
    let (ih, ir, th, tr): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coalesce((SELECT idx_blks_hit FROM pg_statio_user_indexes WHERE indexrelname = $1 AND schemaname = current_schema()), 0),
                coalesce((SELECT idx_blks_read FROM pg_statio_user_indexes WHERE indexrelname = $1 AND schemaname = current_schema()), 0),
                coalesce((SELECT heap_blks_hit + coalesce(toast_blks_hit, 0) + coalesce(tidx_blks_hit, 0)
                          FROM pg_statio_user_tables WHERE relname = 'traces' AND schemaname = current_schema()), 0),
                coalesce((SELECT heap_blks_read + coalesce(toast_blks_read, 0) + coalesce(tidx_blks_read, 0)
                          FROM pg_statio_user_tables WHERE relname = 'traces' AND schemaname = current_schema()), 0)",
    )
    .bind(schema::HNSW_INDEX)
    .fetch_one(&mut *conn)
    .await
    .context("reading pg_statio_user_indexes / pg_statio_user_tables")?;
    Ok([ih, ir, th, tr])
}

/// One pass over `queries` on a fresh connection (no warm-up: the first query is the first the
/// regime sees; with `prewarm`, the index and the table are loaded first, on this connection,
/// before its counters are read), bounded by [`PASS_BOUND`].
async fn pass(
    url: &str,
    regime: Regime,
    queries: &[Vector],
    k: i64,
    ef: u32,
    prewarm: bool,
) -> Result<Pass> {
    let mut conn = db::connect(url).await?;
    search::set_ef_search(&mut conn, ef, false).await?;
    if prewarm {
        index::prewarm(&mut conn).await?;
    }
    let before = counters(&mut conn).await?;
    let mut hist = record::latency_histogram();
    let mut curve = Vec::new();
    let start = Instant::now();
    let mut done = 0;
    for q in queries {
        if start.elapsed() >= PASS_BOUND {
            break;
        }
        let t = Instant::now();
        search::search(&mut conn, q, k).await?;
        let ns = t.elapsed().as_nanos() as u64;
        hist.saturating_record(ns);
        if curve.len() < CURVE_QUERIES {
            curve.push(ns as f64 / 1e6);
        }
        done += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    let after = counters(&mut conn).await?;
    let per = |i: usize| (after[i] - before[i]).max(0) as f64 / done.max(1) as f64;
    Ok(Pass {
        regime,
        pool: queries.len(),
        latency: LatencySummary::of(&hist),
        qps: done as f64 / seconds.max(1e-9),
        histogram: hist,
        blocks: Blocks {
            index_hits: per(0),
            index_reads: per(1),
            table_hits: per(2),
            table_reads: per(3),
        },
        curve,
        filling: None,
        queries: done,
    })
}

fn print_table(config: &Config, passes: &[Pass], small_mb: u64, skipped: &[String]) {
    println!();
    println!(
        "memory — {} rows × {} dims, HNSW at ef_search {}, held-out queries, one connection, serial; \
         small_buffers = shared_buffers {small_mb} MB{}",
        config.dataset.rows,
        config.dataset.dims,
        config.service.search_ef_search,
        if config.bench.quick {
            " — QUICK MODE (smoke run, not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<30} {:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "pass",
        "queries",
        "first10",
        "p50",
        "p99",
        "QPS",
        "idx hit/q",
        "idx read/q",
        "tbl hit/q",
        "tbl read/q"
    );
    for p in passes {
        let first: Vec<f64> = p.curve.iter().take(10).copied().collect();
        println!(
            "{:<30} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            id(p.regime, p.pool),
            p.queries,
            first.iter().sum::<f64>() / first.len().max(1) as f64,
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.qps,
            p.blocks.index_hits,
            p.blocks.index_reads,
            p.blocks.table_hits,
            p.blocks.table_reads
        );
    }
    println!(
        "first10: mean latency (ms) of the pass's first 10 queries. hit/read: blocks per query found in \
         shared_buffers / read from outside it (the kernel's page cache or the disk), index and table \
         (heap + TOAST); from pg_statio before and after the pass."
    );
    for s in skipped {
        println!("{s}");
    }
}

async fn write_record(
    config: &Config,
    conn: &mut PgConnection,
    passes: &[Pass],
    params: MemoryParameters,
) -> Result<RunRecord> {
    let environment = Environment::of_machine().with_postgres(conn).await?;
    let mut rec = RunRecord::new(environment, Parameters::Memory(params));
    rec.dataset = Some(dataset::identity(&config.dataset, &config.index));
    for p in passes {
        let mut metrics = p.latency.metrics();
        metrics.insert(Metric::Qps, p.qps);
        metrics.insert(Metric::EfSearch, f64::from(config.service.search_ef_search));
        metrics.insert(Metric::IndexHitsPerQuery, p.blocks.index_hits);
        metrics.insert(Metric::IndexReadsPerQuery, p.blocks.index_reads);
        metrics.insert(Metric::TableHitsPerQuery, p.blocks.table_hits);
        metrics.insert(Metric::TableReadsPerQuery, p.blocks.table_reads);
        let mut series = std::collections::BTreeMap::new();
        series.insert(CURVE_SERIES.to_string(), numbered(&p.curve));
        if let Some(f) = &p.filling {
            series.insert(FILLING_SERIES.to_string(), numbered(f));
        }
        rec.results.push(ResultEntry {
            name: id(p.regime, p.pool),
            metrics,
            histogram: Some(record::encode_histogram(&p.histogram)?),
            series,
            ..ResultEntry::default()
        });
    }
    Ok(rec)
}

/// The entry's series of latency (ms) by query number (1-based), and the filling pass's.
pub const CURVE_SERIES: &str = "latency_ms_by_query";
pub const FILLING_SERIES: &str = "filling_latency_ms_by_query";

fn numbered(curve: &[f64]) -> Vec<(f64, f64)> {
    curve
        .iter()
        .enumerate()
        .map(|(i, &ms)| ((i + 1) as f64, ms))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_regime_runs_every_pool_and_criterions_filter_selects() {
        let mut cfg = Config::from_env().unwrap();
        cfg.bench.quick = false;
        cfg.bench.memory_pools = vec![1000, 10_000];
        let v: Vec<String> = ["b"].iter().map(|s| s.to_string()).collect();
        let all = plan(&BenchArgs::parse(&v).unwrap(), &cfg);
        assert_eq!(all.len(), 6);
        assert_eq!(
            id(Regime::SmallBuffers, 1000),
            "memory/small_buffers/pool=1000"
        );
        let v: Vec<String> = ["b", "memory/cold"].iter().map(|s| s.to_string()).collect();
        assert_eq!(plan(&BenchArgs::parse(&v).unwrap(), &cfg).len(), 2);
        cfg.bench.quick = true;
        assert_eq!(pools(&cfg), vec![500], "quick mode: small pools");
        assert_eq!(numbered(&[2.0, 3.0]), vec![(1.0, 2.0), (2.0, 3.0)]);
    }
}
