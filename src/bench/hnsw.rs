//! `cargo bench hnsw`: raw HNSW `<=>` latency at each ef_search, with recall and percentiles.
//!
//! For each selected ef_search: Criterion times THE search query (db::search) on one warm
//! connection where ef_search was set once (`hnsw/ef_search/<ef>`), and the per-request pattern
//! BEGIN; SET LOCAL; query; COMMIT (`hnsw_txn/ef_search/<ef>`). After each, a measurement pass runs
//! the whole query set once, recording every latency in an HDR histogram and every result's recall
//! against the ground truth. Before timing, EXPLAIN must show the HNSW index scan, and the index is
//! prewarmed.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use criterion::{BenchmarkId, Throughput};
use pgvector::Vector;
use sqlx::PgConnection;

use crate::bench::{
    BenchArgs, LatencySummary, Rounds, criterion, criterion_median_ms, round_order, time_async,
};
use crate::config::Config;
use crate::dataset::{self, Distribution};
use crate::db::truth::{self, Case, GroundTruth};
use crate::db::{self, index, schema, search};
use crate::record::{
    self, Environment, HnswParameters, Metric, Metrics, Parameters, ResultEntry, RunRecord,
};
use crate::setup::{self, DatasetChange, Needs};

mod pgbench;

pub use pgbench::{
    PgbenchResult, pgbench, pgbench_for, pgbench_script, pgbench_script_for, pgbench_script_of,
    pgbench_with,
};

/// The seeds' launch gate for raw HNSW search.
pub use crate::gates::P99_MS as GATE_P99_MS;

/// How each iteration runs the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ef_search set once per session; each iteration is the bare query.
    Session,
    /// Each iteration: BEGIN; SET LOCAL hnsw.ef_search; query; COMMIT.
    Transaction,
}

impl Mode {
    pub fn group(self) -> &'static str {
        match self {
            Mode::Session => "hnsw",
            Mode::Transaction => "hnsw_txn",
        }
    }

    pub fn id(self, ef: u32) -> String {
        format!("{}/ef_search/{ef}", self.group())
    }
}

/// The benchmarks `args` selects, in the order they run.
pub fn plan(args: &BenchArgs, config: &Config) -> Vec<(Mode, u32)> {
    [Mode::Session, Mode::Transaction]
        .into_iter()
        .flat_map(|mode| config.bench.ef_search.iter().map(move |&ef| (mode, ef)))
        .filter(|&(mode, ef)| args.selects(&mode.id(ef)))
        .collect()
}

/// One measurement pass over the query set.
#[derive(Debug, Clone)]
pub struct HnswPass {
    pub mode: Mode,
    pub ef_search: u32,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    pub qps: f64,
    /// recall@k of the held-out set.
    pub recall_mean: f64,
    pub recall_min: f64,
    /// recall@k of the other distributions (serial, same ef_search, after the pass).
    pub recall_of: Vec<RecallOf>,
    /// Each measurement round's figures ([`Rounds::per_round`]).
    pub rounds: Vec<Metrics>,
    pub criterion_median_ms: Option<f64>,
    pub pgbench: Option<PgbenchResult>,
}

pub type RunOutcome = crate::bench::RunOutcome<HnswPass>;

/// `benches/hnsw.rs`'s main.
pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// The bench, for the given command line and configuration.
pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let plan = plan(&bench_args, &config);
    let ids: Vec<String> = plan.iter().map(|(mode, ef)| mode.id(*ef)).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    // One thread for the client: the connection's I/O is polled on the thread that waits for it,
    // never woken from another core (cross-thread wake-ups were a large part of the noise).
    let rt = crate::current_thread_runtime()?;
    let mut prepared = rt.block_on(prepare(&config))?;
    let mut c = criterion(&config);
    let mut results = Vec::new();
    let mut medians = Vec::new();
    let k = prepared.truth.k as i64;
    let n = prepared.queries.len();

    for mode in [Mode::Session, Mode::Transaction] {
        let efs: Vec<u32> = plan
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|&(_, ef)| ef)
            .collect();
        if efs.is_empty() {
            continue;
        }
        let mut group = c.benchmark_group(mode.group());
        group.throughput(Throughput::Elements(1));
        for ef in efs {
            if mode == Mode::Session {
                rt.block_on(search::set_ef_search(&mut prepared.conn, ef, false))?;
            }
            let mut next = 0usize;
            let conn = &mut prepared.conn;
            let queries = &prepared.queries;
            time_async(
                &mut group,
                BenchmarkId::new("ef_search", ef),
                &rt,
                async || {
                    let q = &queries[next % n];
                    next += 1;
                    match mode {
                        Mode::Session => search::search(conn, q, k).await,
                        Mode::Transaction => search::search_in_transaction(conn, q, k, ef).await,
                    }
                    .map(drop)
                },
            )
            .with_context(|| format!("benchmark {}", mode.id(ef)))?;
            if bench_args.test {
                continue;
            }
            medians.push(criterion_median_ms(&config, &mode.id(ef)));
        }
        group.finish();
    }
    c.final_summary();
    if !bench_args.test {
        results = rt.block_on(measure_rounds(&mut prepared, &config, &plan))?;
        for (r, median) in results.iter_mut().zip(medians) {
            r.criterion_median_ms = median;
            if config.bench.compare && r.mode == Mode::Session {
                r.pgbench = Some(pgbench(&config, &prepared.url, r.ef_search, n, k)?);
            }
        }
    }
    if !results.is_empty() {
        print_table(&config, &prepared, &results);
        let record = rt.block_on(write_record(&config, &mut prepared, &results))?;
        crate::report::publish(&record, args)?;
    }
    Ok(RunOutcome::Ran(results))
}

/// Everything the timed loops need, made before any timing.
pub struct Prepared {
    pub url: String,
    pub conn: PgConnection,
    /// The held-out set (timed) and its truth.
    pub queries: Vec<Vector>,
    pub truth: GroundTruth,
    /// The other distributions' sets, scored for recall after each held-out pass of round 0.
    pub others: Vec<OtherSet>,
    pub prewarmed: index::Prewarmed,
    /// The reference's rounds, once measured ([`REFERENCE_ID`]).
    pub reference: Option<Rounds>,
}

/// A query distribution's set scored for recall only (its latency is not part of the pass).
pub struct OtherSet {
    pub distribution: Distribution,
    pub queries: Vec<Vector>,
    pub truth: GroundTruth,
}

/// recall@k of one distribution: mean and worst query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallOf {
    pub distribution: Distribution,
    pub mean: f64,
    pub min: f64,
}

/// Stack, dataset and ground truth (through the same code as `setup`), plan check, prewarm.
pub async fn prepare(config: &Config) -> Result<Prepared> {
    let ready = setup::ready(config, Needs::Database).await?;
    ready.pristine()?;
    let url = ready.database_url;
    eprintln!("hnsw: PostgreSQL at {}", crate::secrets::redact(&url));
    match ready.dataset {
        DatasetChange::Unchanged { fingerprint, rows } => {
            eprintln!("hnsw: dataset {fingerprint} ({rows} rows) already loaded")
        }
        DatasetChange::Built {
            fingerprint,
            figures,
        } => {
            for line in setup::summary(&figures, &fingerprint) {
                eprintln!("hnsw: {line}");
            }
        }
    }
    let (truths, computed) = setup::ensure_truth(config, &url).await?;
    if let Some(s) = computed {
        eprintln!(
            "hnsw: ground truth for {} queries × {} cases computed in {s:.1} s",
            config.bench.queries,
            truths.cases.len()
        );
    }
    let (set, truth) = truths.heldout();
    let queries: Vec<Vector> = set.vectors.iter().cloned().map(Vector::from).collect();
    let truth = truth.clone();
    // The other distributions' unfiltered sets: scored for recall beside the held-out one.
    let others = Distribution::ALL
        .into_iter()
        .filter(|d| *d != Distribution::Heldout)
        .filter_map(|distribution| {
            let (set, truth) = truths.get(Case {
                distribution,
                filter: None,
            })?;
            Some(OtherSet {
                distribution,
                queries: set.vectors.iter().cloned().map(Vector::from).collect(),
                truth: truth.clone(),
            })
        })
        .collect();
    let mut conn = db::connect(&url).await?;
    for &ef in &config.bench.ef_search {
        search::check_plan(
            &mut conn,
            &queries[0],
            truth.k as i64,
            ef,
            schema::HNSW_INDEX,
        )
        .await?;
    }
    eprintln!(
        "hnsw: plan checked: an Index Scan using {} at every ef_search ({:?})",
        schema::HNSW_INDEX,
        config.bench.ef_search
    );
    let prewarmed = index::prewarm(&mut conn).await?;
    eprintln!(
        "hnsw: prewarmed the HNSW index ({} MiB) and the table ({} MiB) into shared_buffers ({} MiB)",
        prewarmed.index_bytes >> 20,
        prewarmed.table_bytes >> 20,
        prewarmed.shared_buffers_bytes >> 20
    );
    if prewarmed.index_bytes > prewarmed.shared_buffers_bytes {
        eprintln!(
            "hnsw: warning: the index is larger than shared_buffers: searches read it from disk; raise \
             shared_buffers in setup/postgres.conf"
        );
    }
    Ok(Prepared {
        url,
        conn,
        queries,
        truth,
        others,
        prewarmed,
        reference: None,
    })
}

/// The shortest measurement pass in quick mode (the 100-query set is cycled until it lasts this
/// long): 100 queries of 0.3 ms would make a 30 ms pass, whose p99 is one query.
const QUICK_MIN_PASS_SECONDS: f64 = 0.25;

/// Queries run, unrecorded, at the start of each pass (a fresh connection plans its first queries
/// and fills its caches).
const WARM_UP_QUERIES: usize = 5;

/// capbench's own measurement, after Criterion's: `config.bench.rounds` rounds; in each, a fresh
/// connection and every planned benchmark once, in an order that rotates from round to round
/// ([`round_order`]). A pass runs the whole query set (cycled, in quick mode, to last at least
/// [`QUICK_MIN_PASS_SECONDS`]), recording every latency; recall comes from the first round, which
/// answers each query once. Results are in plan order.
pub async fn measure_rounds(
    prepared: &mut Prepared,
    config: &Config,
    plan: &[(Mode, u32)],
) -> Result<Vec<HnswPass>> {
    let k = prepared.truth.k as i64;
    let n = prepared.queries.len();
    let min_pass = if config.bench.quick {
        QUICK_MIN_PASS_SECONDS
    } else {
        0.0
    };
    let mut rounds = vec![Rounds::default(); plan.len()];
    let mut reference = Rounds::default();
    let mut recalls: Vec<Vec<f64>> = vec![Vec::new(); plan.len()];
    let mut recall_of: Vec<Vec<RecallOf>> = vec![Vec::new(); plan.len()];
    let total = config.bench.rounds as usize;
    for round in 0..total {
        let mut conn = db::connect(&prepared.url).await?;
        // The reference takes its turn in the rotation like a benchmark (index plan.len()).
        for i in round_order(plan.len() + 1, round) {
            if i == plan.len() {
                for q in prepared.queries.iter().take(WARM_UP_QUERIES) {
                    search::round_trip(&mut conn, q, k).await?;
                }
                let mut hist = record::latency_histogram();
                let start = Instant::now();
                let mut done = 0usize;
                while done < n || start.elapsed().as_secs_f64() < min_pass {
                    let q = &prepared.queries[done % n];
                    let t = Instant::now();
                    search::round_trip(&mut conn, q, k).await?;
                    hist.saturating_record(t.elapsed().as_nanos() as u64);
                    done += 1;
                }
                reference.add(&hist, start.elapsed().as_secs_f64())?;
                continue;
            }
            let (mode, ef) = plan[i];
            if mode == Mode::Session {
                search::set_ef_search(&mut conn, ef, false).await?;
            }
            for q in prepared.queries.iter().take(WARM_UP_QUERIES) {
                run_query(&mut conn, mode, q, k, ef).await?;
            }
            let mut hist = record::latency_histogram();
            // Round 0's answers are kept and scored after the pass, outside its time.
            let mut answers = Vec::with_capacity(if round == 0 { n } else { 0 });
            let start = Instant::now();
            let mut done = 0usize;
            while done < n || start.elapsed().as_secs_f64() < min_pass {
                let q = &prepared.queries[done % n];
                let t = Instant::now();
                let hits = run_query(&mut conn, mode, q, k, ef).await?;
                hist.saturating_record(t.elapsed().as_nanos() as u64);
                if round == 0 && done < n {
                    answers.push(hits);
                }
                done += 1;
            }
            rounds[i].add(&hist, start.elapsed().as_secs_f64())?;
            for (j, hits) in answers.iter().enumerate() {
                recalls[i].push(score(&prepared.truth, j, hits));
            }
            if round == 0 {
                for other in &prepared.others {
                    let mut scores = Vec::with_capacity(other.queries.len());
                    for (j, q) in other.queries.iter().enumerate() {
                        let hits = run_query(&mut conn, mode, q, k, ef).await?;
                        scores.push(score(&other.truth, j, &hits));
                    }
                    recall_of[i].push(RecallOf {
                        distribution: other.distribution,
                        mean: mean(&scores),
                        min: scores.iter().copied().fold(f64::INFINITY, f64::min),
                    });
                }
            }
        }
        eprintln!("hnsw: measurement round {}/{total} done", round + 1);
    }
    prepared.reference = Some(reference);
    Ok(plan
        .iter()
        .zip(rounds)
        .zip(recalls)
        .zip(recall_of)
        .map(|(((&(mode, ef), rounds), recalls), recall_of)| HnswPass {
            mode,
            ef_search: ef,
            latency: LatencySummary::of(rounds.histogram()),
            histogram: rounds.histogram().clone(),
            qps: rounds.qps(),
            recall_mean: mean(&recalls),
            recall_min: recalls.iter().copied().fold(f64::INFINITY, f64::min),
            recall_of,
            rounds: rounds.per_round().to_vec(),
            criterion_median_ms: None,
            pgbench: None,
        })
        .collect())
}

/// recall@k of answer `hits` to query `j` of `truth`.
pub fn score(truth: &GroundTruth, j: usize, hits: &[search::Hit]) -> f64 {
    let got: Vec<(uuid::Uuid, f64)> = hits.iter().map(|h| (h.id, h.distance)).collect();
    truth::recall(&truth.ids[j], &truth.distances[j], &got)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// The id of the reference measured in every round ([`search::ROUND_TRIP_SQL`]): the record's
/// [`RunRecord::reference`].
pub const REFERENCE_ID: &str = "hnsw/reference/round_trip";

async fn run_query(
    conn: &mut PgConnection,
    mode: Mode,
    q: &Vector,
    k: i64,
    ef: u32,
) -> Result<Vec<search::Hit>> {
    match mode {
        Mode::Session => search::search(conn, q, k).await,
        Mode::Transaction => search::search_in_transaction(conn, q, k, ef).await,
    }
}

fn recall_cell(r: &HnswPass, d: Distribution) -> String {
    r.recall_of
        .iter()
        .find(|o| o.distribution == d)
        .map_or("-".into(), |o| format!("{:.3}", o.mean))
}

fn verdict(p99_ms: f64) -> &'static str {
    if p99_ms < GATE_P99_MS { "PASS" } else { "FAIL" }
}

fn print_table(config: &Config, prepared: &Prepared, results: &[HnswPass]) {
    println!();
    println!(
        "hnsw — {} rows × {} dims, m={} ef_construction={}, {} queries per set; recall@{} against exact top-{}, serial, no filter, per query distribution (heldout: {}; near-dup: {}; ood: {}){}",
        config.dataset.rows,
        config.dataset.dims,
        config.index.m,
        config.index.ef_construction,
        prepared.queries.len(),
        prepared.truth.k,
        prepared.truth.k,
        Distribution::Heldout.describe(),
        Distribution::NearDuplicate.describe(),
        Distribution::OutOfDistribution.describe(),
        if config.bench.quick {
            " — QUICK MODE (smoke run, not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<22} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6} {:>8} {:>6} {:>9}",
        "benchmark (ms)",
        "criterion",
        "p50",
        "p90",
        "p95",
        "p99",
        "p99.9",
        "max",
        "QPS",
        "heldout",
        "worst",
        "near-dup",
        "ood",
        "p99<50ms"
    );
    for r in results {
        let l = &r.latency;
        println!(
            "{:<22} {:>9} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.0} {:>7.3} {:>6.2} {:>8} {:>6} {:>9}",
            r.mode.id(r.ef_search),
            r.criterion_median_ms
                .map_or("-".into(), |m| format!("{m:.3}")),
            l.p50_ms,
            l.p90_ms,
            l.p95_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            r.qps,
            r.recall_mean,
            r.recall_min,
            recall_cell(r, Distribution::NearDuplicate),
            recall_cell(r, Distribution::OutOfDistribution),
            verdict(l.p99_ms)
        );
    }
    if let Some(r) = &prepared.reference {
        let l = LatencySummary::of(r.histogram());
        println!(
            "{REFERENCE_ID}: p50 {:.3} ms, mean {:.3} ms — the same parameters and no search, measured \
             in the same rounds (the machine's share of every query, which comparisons take out)",
            l.p50_ms, l.mean_ms
        );
    }
    for r in results {
        if let (Some(pg), Some(median)) = (r.pgbench, r.criterion_median_ms) {
            println!(
                "pgbench -M prepared -c 1, same SQL, ef_search {}: avg {:.3} ms, {:.0} tps; criterion median / pgbench avg = {:.2}",
                r.ef_search,
                pg.latency_avg_ms,
                pg.tps,
                median / pg.latency_avg_ms
            );
        }
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.latency.p99_ms >= GATE_P99_MS)
        .map(|r| r.mode.id(r.ef_search))
        .collect();
    let scale = if config.dataset.rows < 100_000 {
        format!(
            " (at {} rows; the seeds' gate is at 100K)",
            config.dataset.rows
        )
    } else {
        String::new()
    };
    if failed.is_empty() {
        println!("p99 < {GATE_P99_MS} ms: PASS — every ef_search measured{scale}");
    } else {
        println!(
            "p99 < {GATE_P99_MS} ms: FAIL — {}{scale}",
            failed.join(", ")
        );
    }
}

async fn write_record(
    config: &Config,
    prepared: &mut Prepared,
    results: &[HnswPass],
) -> Result<RunRecord> {
    let environment = Environment::of_machine()
        .with_postgres(&mut prepared.conn)
        .await?;
    let mut rec = RunRecord::new(
        environment,
        Parameters::Hnsw(HnswParameters {
            ef_search: config.bench.ef_search.clone(),
            queries: prepared.queries.len(),
            k: prepared.truth.k,
            quick: config.bench.quick,
            rounds: Some(config.bench.rounds),
            prewarmed: Some(prepared.prewarmed),
        }),
    );
    rec.dataset = Some(dataset::identity(&config.dataset, &config.index));
    for r in results {
        let l = &r.latency;
        let mut metrics = l.metrics();
        metrics.insert(Metric::EfSearch, f64::from(r.ef_search));
        metrics.insert(Metric::Qps, r.qps);
        metrics.insert(Metric::RecallMean, r.recall_mean);
        metrics.insert(Metric::RecallMin, r.recall_min);
        for o in &r.recall_of {
            metrics.insert(Metric::RecallMeanOf(o.distribution.name().into()), o.mean);
            metrics.insert(Metric::RecallMinOf(o.distribution.name().into()), o.min);
        }
        if let Some(m) = r.criterion_median_ms {
            metrics.insert(Metric::CriterionMedianMs, m);
        }
        if let Some(pg) = r.pgbench {
            metrics.insert(Metric::PgbenchLatencyAvgMs, pg.latency_avg_ms);
            metrics.insert(Metric::PgbenchTps, pg.tps);
        }
        rec.results.push(ResultEntry {
            name: r.mode.id(r.ef_search),
            metrics,
            histogram: Some(record::encode_histogram(&r.histogram)?),
            gates: vec![crate::gates::seeds_p99(None, Some(r.latency.p99_ms))],
            rounds: r.rounds.clone(),
            ..ResultEntry::default()
        });
    }
    if let Some(r) = &prepared.reference {
        let mut metrics = LatencySummary::of(r.histogram()).metrics();
        metrics.insert(Metric::Qps, r.qps());
        rec.reference = Some(REFERENCE_ID.to_string());
        rec.results.push(ResultEntry {
            name: REFERENCE_ID.to_string(),
            metrics,
            histogram: Some(record::encode_histogram(r.histogram())?),
            rounds: r.per_round().to_vec(),
            ..ResultEntry::default()
        });
    }
    Ok(rec)
}
