//! `cargo bench hnsw_filtered`: THE search query filtered by a tag (`tags @> ARRAY[tag]`), for every
//! tag (four shares × uncorrelated/correlated), every filtered ef_search and every way pgvector can
//! run it:
//!
//! - `off`, `strict_order`, `relaxed_order`: the HNSW index with `hnsw.iterative_scan` so (pgvector
//!   0.8), `max_scan_tuples` at pgvector's default; `relaxed_order_raised`: relaxed with
//!   `max_scan_tuples` raised (CAPBENCH_RAISED_MAX_SCAN_TUPLES). These run with bitmap and
//!   sequential scans disabled, so PostgreSQL must use the HNSW index — the point is to measure it;
//! - `exact`: index scans disabled, so PostgreSQL reads the filter's matches (a bitmap scan of the
//!   tags' GIN index, or a sequential scan) and sorts them exactly — the plan the planner itself
//!   prefers for very selective filters. Every point also records which of the two the planner
//!   would pick left alone (`planner_prefers_exact`), so the crossover is shown, not refused.
//!
//! Each point: Criterion's timing, then capbench's measurement rounds (a fresh connection each,
//! points in rotating order): p50…p99.9, QPS, recall@k against the case's exact filtered top-k
//! (CAPBENCH_QUERY_SET's distribution; correlated tags use queries drawn within the tag), and the
//! share of queries that returned fewer rows than they should (`short_share`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use criterion::{BenchmarkId, SamplingMode, Throughput};
use pgvector::Vector;
use sqlx::PgConnection;

use crate::bench::{
    BenchArgs, LatencySummary, Rounds, criterion, criterion_median_ms, round_order, time_async,
};
use crate::config::{Config, Distribution, IterativeScan};
use crate::dataset::{self, TAGS, Tag};
use crate::db::truth::{self, Case, GroundTruth};
use crate::db::{self, index, schema, search};
use crate::record::{
    self, Environment, HnswFilteredParameters, Metric, Parameters, ResultEntry, RunRecord,
};
use crate::setup;

/// The oldest pgvector with iterative index scans.
pub const MIN_PGVECTOR_ITERATIVE: &str = "0.8.0";

/// How a point runs the filtered query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum How {
    /// The HNSW index, with this iterative scan and `max_scan_tuples` (None: pgvector's default).
    Hnsw {
        mode: IterativeScan,
        max_scan_tuples: Option<u32>,
    },
    /// No index scan: the filter's matches, sorted exactly.
    Exact,
}

impl How {
    /// `off`, `strict_order`, `relaxed_order`, `relaxed_order_raised`, `exact`.
    pub fn name(self) -> String {
        match self {
            How::Hnsw {
                mode,
                max_scan_tuples: None,
            } => mode.as_str().to_string(),
            How::Hnsw { mode, .. } => format!("{}_raised", mode.as_str()),
            How::Exact => "exact".into(),
        }
    }
}

/// One filtered benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Point {
    pub tag: Tag,
    pub how: How,
    /// hnsw.ef_search (the exact plan ignores it; it runs once per tag, at the first value).
    pub ef_search: u32,
}

impl Point {
    fn function(&self) -> String {
        format!("{}/{}", self.tag.name(), self.how.name())
    }

    fn parameter(&self) -> String {
        match self.how {
            How::Exact => "index_scans=off".into(),
            How::Hnsw { .. } => format!("ef_search={}", self.ef_search),
        }
    }

    /// `hnsw_filtered/u1/relaxed_order/ef_search=40`: what Criterion's filter matches.
    pub fn id(&self) -> String {
        format!("{GROUP}/{}/{}", self.function(), self.parameter())
    }

    /// Where Criterion keeps its data for this point (its directory names, made safe as Criterion does).
    fn criterion_dir(&self) -> String {
        format!(
            "{GROUP}/{}/{}",
            self.function().replace('/', "_"),
            self.parameter()
        )
    }
}

const GROUP: &str = "hnsw_filtered";

/// The points `args` selects, in the order they run: tag by tag, widest first; for each, the
/// exact plan, then every ef_search × way of scanning.
pub fn plan(args: &BenchArgs, config: &Config) -> Vec<Point> {
    let efs = efs(config);
    let hows = [
        How::Hnsw {
            mode: IterativeScan::Off,
            max_scan_tuples: None,
        },
        How::Hnsw {
            mode: IterativeScan::StrictOrder,
            max_scan_tuples: None,
        },
        How::Hnsw {
            mode: IterativeScan::RelaxedOrder,
            max_scan_tuples: None,
        },
        How::Hnsw {
            mode: IterativeScan::RelaxedOrder,
            max_scan_tuples: Some(config.bench.raised_max_scan_tuples),
        },
    ];
    TAGS.into_iter()
        .flat_map(|tag| {
            std::iter::once(Point {
                tag,
                how: How::Exact,
                ef_search: efs[0],
            })
            .chain(efs.clone().into_iter().flat_map(move |ef_search| {
                hows.into_iter().map(move |how| Point {
                    tag,
                    how,
                    ef_search,
                })
            }))
        })
        .filter(|p| args.selects(&p.id()))
        .collect()
}

/// The filtered ef_search values; quick mode keeps the first.
fn efs(config: &Config) -> Vec<u32> {
    let mut efs = config.bench.filtered_ef_search.clone();
    if config.bench.quick {
        efs.truncate(1);
    }
    efs
}

/// One point's measurement.
#[derive(Debug, Clone)]
pub struct FilteredPass {
    pub point: Point,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    pub qps: f64,
    pub recall_mean: f64,
    pub recall_min: f64,
    /// Queries that returned fewer rows than the truth has (min(k, the filter's matches)) / all.
    pub short_share: f64,
    /// Whether the planner, left alone, answers without the HNSW index.
    pub planner_prefers_exact: bool,
    /// The plan the point ran, one line per node (vectors abbreviated).
    pub plan: String,
    pub rounds: Vec<record::Metrics>,
    pub criterion_median_ms: Option<f64>,
    /// pgbench on the same filtered SQL and settings (`CAPBENCH_COMPARE`, the comparison point).
    pub pgbench: Option<crate::bench::hnsw::PgbenchResult>,
}

pub type RunOutcome = crate::bench::RunOutcome<FilteredPass>;

/// `benches/hnsw_filtered.rs`'s main.
pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// A case's queries and truth, as the points use them.
struct CaseQueries {
    queries: Vec<Vector>,
    truth: GroundTruth,
}

struct Prepared {
    url: String,
    conn: PgConnection,
    cases: BTreeMap<Tag, CaseQueries>,
    distribution: Distribution,
    prewarmed: index::Prewarmed,
    pgvector: String,
    plans: BTreeMap<Point, (String, bool)>,
}

/// The bench, for the given command line and configuration.
pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let mut points = plan(&bench_args, &config);
    let ids: Vec<String> = points.iter().map(Point::id).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    let rt = crate::current_thread_runtime()?;
    let mut prepared = rt.block_on(prepare(&config, &mut points))?;
    let mut c = criterion(&config);
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    // An iterative scan under a selective filter takes tens of ms: flat sampling keeps Criterion's
    // time near its target instead of growing with the iteration count.
    group.sampling_mode(SamplingMode::Flat);
    if !config.bench.quick {
        group.sample_size(20);
        group.warm_up_time(std::time::Duration::from_secs(1));
        group.measurement_time(std::time::Duration::from_secs(3));
    }
    let k = i64::from(config.bench.k);
    let mut medians = Vec::new();
    // How many queries each point's Criterion loop ran (warm-up included), from the set's first.
    let mut drawn = Vec::new();
    for p in &points {
        rt.block_on(apply(&mut prepared.conn, p))?;
        let case = &prepared.cases[&p.tag];
        let tags = vec![p.tag.name()];
        let (conn, queries) = (&mut prepared.conn, &case.queries);
        let mut next = 0usize;
        time_async(
            &mut group,
            BenchmarkId::new(p.function(), p.parameter()),
            &rt,
            async || {
                let q = &queries[next % queries.len()];
                next += 1;
                search::search_filtered(conn, q, k, &tags).await.map(drop)
            },
        )
        .with_context(|| format!("benchmark {}", p.id()))?;
        drawn.push(next);
        if !bench_args.test {
            medians.push(criterion_median_ms(&config, &p.criterion_dir()));
        }
    }
    group.finish();
    c.final_summary();
    if bench_args.test {
        return Ok(RunOutcome::Ran(Vec::new()));
    }
    let mut results = rt.block_on(measure_rounds(&mut prepared, &config, &points))?;
    for (r, m) in results.iter_mut().zip(medians) {
        r.criterion_median_ms = m;
    }
    if config.bench.compare
        && let Some((r, &drawn)) = results
            .iter_mut()
            .zip(&drawn)
            .find(|(r, _)| is_comparison_point(&r.point))
    {
        let case = &prepared.cases[&r.point.tag];
        let set = Case {
            distribution: prepared.distribution,
            filter: Some(r.point.tag),
        }
        .set_name();
        let script = crate::bench::hnsw::pgbench_script_of(
            &set,
            case.queries.len(),
            drawn,
            k,
            Some(&r.point.tag.name()),
        );
        r.pgbench = Some(crate::bench::hnsw::pgbench_with(
            &config,
            &prepared.url,
            &script,
            &pgbench_options(&r.point),
        )?);
    }
    print_table(&config, &prepared, &results);
    let record = rt.block_on(write_record(&config, &mut prepared, &results))?;
    crate::report::publish(&record, args)?;
    Ok(RunOutcome::Ran(results))
}

/// The session settings of point `p`: ef_search, the iterative scan, and which plans are allowed.
async fn apply(conn: &mut PgConnection, p: &Point) -> Result<()> {
    search::set_ef_search(conn, p.ef_search, false).await?;
    let (mode, tuples) = match p.how {
        How::Hnsw {
            mode,
            max_scan_tuples,
        } => (mode, max_scan_tuples),
        How::Exact => (IterativeScan::Off, None),
    };
    if mode != IterativeScan::Off || tuples.is_some() {
        search::set_iterative_scan(conn, mode, tuples, false).await?;
    } else {
        sqlx::raw_sql("RESET hnsw.iterative_scan; RESET hnsw.max_scan_tuples")
            .execute(&mut *conn)
            .await
            // pgvector < 0.8 has neither setting: nothing to reset.
            .ok();
    }
    let settings = match p.how {
        How::Hnsw { .. } => {
            "SET enable_bitmapscan = off; SET enable_seqscan = off; SET enable_indexscan = on"
        }
        How::Exact => {
            "SET enable_bitmapscan = on; SET enable_seqscan = on; SET enable_indexscan = off"
        }
    };
    sqlx::raw_sql(settings)
        .execute(&mut *conn)
        .await
        .context("choosing the point's plan")?;
    // A prepared statement's generic plan outlives a change of enable_*: without this, a point
    // would run the plan cached under the previous point's settings.
    sqlx::raw_sql("DISCARD PLANS")
        .execute(&mut *conn)
        .await
        .context("discarding cached plans")?;
    Ok(())
}

/// Back to the planner's own choice (every enable_* on).
async fn planner_defaults(conn: &mut PgConnection) -> Result<()> {
    sqlx::raw_sql("RESET enable_bitmapscan; RESET enable_seqscan; RESET enable_indexscan")
        .execute(conn)
        .await
        .context("resetting the planner settings")?;
    Ok(())
}

async fn prepare(config: &Config, points: &mut Vec<Point>) -> Result<Prepared> {
    let url = crate::bench::database(config, "hnsw_filtered").await?;
    let (truths, computed) = setup::ensure_truth(config, &url).await?;
    if let Some(s) = computed {
        eprintln!(
            "hnsw_filtered: ground truth for {} cases computed in {s:.1} s",
            truths.cases.len()
        );
    }
    let distribution = config.bench.query_set;
    let n = config.bench.filtered_queries as usize;
    let mut cases = BTreeMap::new();
    for tag in TAGS {
        let (set, truth) = truths
            .get(Case {
                distribution,
                filter: Some(tag),
            })
            .context("the filtered ground truth is missing a case")?;
        let n = n.min(set.len());
        cases.insert(
            tag,
            CaseQueries {
                queries: set.vectors[..n].iter().cloned().map(Vector::from).collect(),
                truth: GroundTruth {
                    k: truth.k,
                    ids: truth.ids[..n].to_vec(),
                    distances: truth.distances[..n].to_vec(),
                },
            },
        );
    }
    let mut conn = db::connect(&url).await?;
    let pgvector = db::ServerInfo::read(&mut conn).await?.pgvector_version;
    if !db::version_at_least(&pgvector, MIN_PGVECTOR_ITERATIVE) {
        let before = points.len();
        points.retain(|p| {
            matches!(
                p.how,
                How::Exact
                    | How::Hnsw {
                        mode: IterativeScan::Off,
                        max_scan_tuples: None
                    }
            )
        });
        eprintln!(
            "hnsw_filtered: pgvector {pgvector} has no iterative index scans (they came in \
             {MIN_PGVECTOR_ITERATIVE}): measuring {} of {before} points (off and exact only)",
            points.len()
        );
    }
    let k = i64::from(config.bench.k);
    // Each point's plan, forced as it will run, and the planner's own choice.
    let mut plans = BTreeMap::new();
    for p in points.iter() {
        let q = &cases[&p.tag].queries[0];
        let tags = vec![p.tag.name()];
        planner_defaults(&mut conn).await?;
        search::set_ef_search(&mut conn, p.ef_search, false).await?;
        let free = search::explain_filtered(&mut conn, q, k, &tags).await?;
        let prefers_exact = !search::plan_uses_index(&free, schema::HNSW_INDEX);
        apply(&mut conn, p).await?;
        let forced = search::explain_filtered(&mut conn, q, k, &tags).await?;
        let uses_hnsw = search::plan_uses_index(&forced, schema::HNSW_INDEX);
        if matches!(p.how, How::Hnsw { .. }) != uses_hnsw {
            anyhow::bail!(
                "{}: PostgreSQL would not run the plan this point measures ({}): check the HNSW index and \
                 the tags index (cargo run --release --bin setup -- --force rebuilds them)",
                p.id(),
                search::one_line_plan(&forced)
            );
        }
        plans.insert(*p, (search::one_line_plan(&forced), prefers_exact));
    }
    planner_defaults(&mut conn).await?;
    let prewarmed = index::prewarm(&mut conn).await?;
    eprintln!(
        "hnsw_filtered: plans checked; prewarmed the HNSW index ({} MiB), the tags index and the table ({} MiB)",
        prewarmed.index_bytes >> 20,
        prewarmed.table_bytes >> 20
    );
    Ok(Prepared {
        url,
        conn,
        cases,
        distribution,
        prewarmed,
        pgvector,
        plans,
    })
}

/// Rounds after the first stop after this long (the first runs every query: recall needs them all).
const LATER_ROUND_SECONDS: f64 = 1.0;

const WARM_UP_QUERIES: usize = 3;

/// `config.bench.rounds` rounds (at most 3: an iterative scan is slow), each on a fresh connection
/// with the points in rotating order. Round 0 runs each point's whole query set and scores it;
/// later rounds run its queries in order for up to [`LATER_ROUND_SECONDS`].
async fn measure_rounds(
    prepared: &mut Prepared,
    config: &Config,
    points: &[Point],
) -> Result<Vec<FilteredPass>> {
    let k = i64::from(config.bench.k);
    let total = config.bench.rounds.min(3) as usize;
    let mut rounds = vec![Rounds::default(); points.len()];
    let mut scores: Vec<(Vec<f64>, usize)> = vec![(Vec::new(), 0); points.len()];
    for round in 0..total {
        let mut conn = db::connect(&prepared.url).await?;
        for i in round_order(points.len(), round) {
            let p = &points[i];
            apply(&mut conn, p).await?;
            let case = &prepared.cases[&p.tag];
            let tags = vec![p.tag.name()];
            for q in case.queries.iter().take(WARM_UP_QUERIES) {
                search::search_filtered(&mut conn, q, k, &tags).await?;
            }
            let mut hist = record::latency_histogram();
            let start = Instant::now();
            for (j, q) in case.queries.iter().enumerate() {
                if round > 0 && start.elapsed().as_secs_f64() >= LATER_ROUND_SECONDS {
                    break;
                }
                let t = Instant::now();
                let hits = search::search_filtered(&mut conn, q, k, &tags).await?;
                hist.saturating_record(t.elapsed().as_nanos() as u64);
                if round == 0 {
                    let want = case.truth.ids[j].len();
                    let got: Vec<(uuid::Uuid, f64)> =
                        hits.iter().map(|h| (h.id, h.distance)).collect();
                    scores[i].0.push(truth::recall(
                        &case.truth.ids[j],
                        &case.truth.distances[j],
                        &got,
                    ));
                    scores[i].1 += usize::from(hits.len() < want);
                }
            }
            rounds[i].add(&hist, start.elapsed().as_secs_f64())?;
        }
        eprintln!(
            "hnsw_filtered: measurement round {}/{total} done",
            round + 1
        );
    }
    Ok(points
        .iter()
        .zip(rounds)
        .zip(scores)
        .map(|((p, rounds), (recalls, short))| {
            let (plan, prefers_exact) = prepared.plans.get(p).cloned().unwrap_or_default();
            FilteredPass {
                point: *p,
                latency: LatencySummary::of(rounds.histogram()),
                histogram: rounds.histogram().clone(),
                qps: rounds.qps(),
                recall_mean: recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
                recall_min: recalls.iter().copied().fold(f64::INFINITY, f64::min),
                short_share: short as f64 / recalls.len().max(1) as f64,
                planner_prefers_exact: prefers_exact,
                plan,
                rounds: rounds.per_round().to_vec(),
                criterion_median_ms: None,
                pgbench: None,
            }
        })
        .collect())
}

/// The point pgbench runs beside (`CAPBENCH_COMPARE`): the 1 % uncorrelated tag with relaxed_order
/// at pgvector's max_scan_tuples — the filter the iterative scan exists for.
fn is_comparison_point(p: &Point) -> bool {
    p.tag.name() == "u1"
        && p.how
            == How::Hnsw {
                mode: IterativeScan::RelaxedOrder,
                max_scan_tuples: None,
            }
}

/// The settings of point `p` as pgbench's `PGOPTIONS` (what [`apply`] sets on the bench's session).
fn pgbench_options(p: &Point) -> String {
    let mut o = format!("-c hnsw.ef_search={}", p.ef_search);
    match p.how {
        How::Hnsw {
            mode,
            max_scan_tuples,
        } => {
            o.push_str(" -c enable_bitmapscan=off -c enable_seqscan=off");
            if mode != IterativeScan::Off {
                o.push_str(&format!(" -c hnsw.iterative_scan={}", mode.as_str()));
            }
            if let Some(t) = max_scan_tuples {
                o.push_str(&format!(" -c hnsw.max_scan_tuples={t}"));
            }
        }
        How::Exact => o.push_str(" -c enable_indexscan=off"),
    }
    o
}

fn print_table(config: &Config, prepared: &Prepared, results: &[FilteredPass]) {
    let n = prepared
        .cases
        .values()
        .next()
        .map_or(0, |c| c.queries.len());
    println!();
    println!(
        "hnsw_filtered — {} rows × {} dims, m={} ef_construction={}; {n} {} queries per filter (correlated \
         tags: drawn within the tag); recall@{} against the exact filtered top-{}, serial; pgvector {}{}",
        config.dataset.rows,
        config.dataset.dims,
        config.index.m,
        config.index.ef_construction,
        prepared.distribution.name(),
        config.bench.k,
        config.bench.k,
        prepared.pgvector,
        if config.bench.quick {
            " — QUICK MODE (smoke run, not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<48} {:>9} {:>7} {:>7} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>8}",
        "benchmark (ms)",
        "criterion",
        "p50",
        "p99",
        "p99.9",
        "QPS",
        "recall",
        "worst",
        "<k",
        "planner",
        "plan"
    );
    for r in results {
        let l = &r.latency;
        println!(
            "{:<48} {:>9} {:>7.2} {:>7.2} {:>7.2} {:>7.0} {:>6.3} {:>7.2} {:>5.1}% {:>7} {:>8}",
            r.point.id(),
            r.criterion_median_ms
                .map_or("-".into(), |m| format!("{m:.3}")),
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            r.qps,
            r.recall_mean,
            r.recall_min,
            100.0 * r.short_share,
            if r.planner_prefers_exact {
                "exact"
            } else {
                "hnsw"
            },
            search::PlanKind::of(&r.plan).as_str()
        );
    }
    println!(
        "<k: queries that returned fewer rows than min(k, the filter's matches). planner: the plan PostgreSQL \
         picks left alone (exact = without the HNSW index). plan: the plan this point ran."
    );
    for r in results {
        if let (Some(pg), Some(median)) = (r.pgbench, r.criterion_median_ms) {
            println!(
                "pgbench -M prepared -c 1, same filtered SQL and settings, {}: avg {:.3} ms, {:.0} tps; criterion median / pgbench avg = {:.2}",
                r.point.id(),
                pg.latency_avg_ms,
                pg.tps,
                median / pg.latency_avg_ms
            );
        }
    }
}

async fn write_record(
    config: &Config,
    prepared: &mut Prepared,
    results: &[FilteredPass],
) -> Result<RunRecord> {
    let environment = Environment::of_machine()
        .with_postgres(&mut prepared.conn)
        .await?;
    let mut rec = RunRecord::new(
        environment,
        Parameters::HnswFiltered(HnswFilteredParameters {
            ef_search: efs(config),
            queries: prepared
                .cases
                .values()
                .next()
                .map_or(0, |c| c.queries.len()),
            k: config.bench.k as usize,
            query_set: prepared.distribution.name().into(),
            raised_max_scan_tuples: config.bench.raised_max_scan_tuples,
            quick: config.bench.quick,
            rounds: config.bench.rounds.min(3),
            prewarmed: Some(prepared.prewarmed),
            plans: results
                .iter()
                .map(|r| (r.point.id(), r.plan.clone()))
                .collect(),
        }),
    );
    rec.dataset = Some(dataset::identity(&config.dataset, &config.index));
    for r in results {
        let mut metrics = r.latency.metrics();
        metrics.insert(Metric::EfSearch, f64::from(r.point.ef_search));
        metrics.insert(Metric::Qps, r.qps);
        metrics.insert(Metric::RecallMean, r.recall_mean);
        metrics.insert(Metric::RecallMin, r.recall_min);
        metrics.insert(Metric::ShortShare, r.short_share);
        metrics.insert(
            Metric::Selectivity,
            f64::from(r.point.tag.basis_points) / 10_000.0,
        );
        metrics.insert(
            Metric::PlannerPrefersExact,
            f64::from(u8::from(r.planner_prefers_exact)),
        );
        if let How::Hnsw {
            max_scan_tuples, ..
        } = r.point.how
        {
            metrics.insert(
                Metric::MaxScanTuples,
                f64::from(max_scan_tuples.unwrap_or(DEFAULT_MAX_SCAN_TUPLES)),
            );
        }
        if let Some(m) = r.criterion_median_ms {
            metrics.insert(Metric::CriterionMedianMs, m);
        }
        if let Some(pg) = r.pgbench {
            metrics.insert(Metric::PgbenchLatencyAvgMs, pg.latency_avg_ms);
            metrics.insert(Metric::PgbenchTps, pg.tps);
        }
        rec.results.push(ResultEntry {
            name: r.point.id(),
            metrics,
            histogram: Some(record::encode_histogram(&r.histogram)?),
            rounds: r.rounds.clone(),
            ..ResultEntry::default()
        });
    }
    Ok(rec)
}

/// pgvector's default `hnsw.max_scan_tuples`.
pub const DEFAULT_MAX_SCAN_TUPLES: u32 = 20_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> BenchArgs {
        let v: Vec<String> = std::iter::once("b")
            .chain(list.iter().copied())
            .map(String::from)
            .collect();
        BenchArgs::parse(&v).unwrap()
    }

    #[test]
    fn points_cover_every_tag_ef_search_and_way_and_filter_like_criterion() {
        let mut cfg = Config::from_env().unwrap();
        cfg.bench.filtered_ef_search = vec![40, 100];
        cfg.bench.quick = false;
        let all = plan(&args(&[]), &cfg);
        assert_eq!(all.len(), 8 * (1 + 2 * 4));
        let ids: Vec<String> = all.iter().map(Point::id).collect();
        assert!(ids.contains(&"hnsw_filtered/u1/relaxed_order/ef_search=40".to_string()));
        assert!(ids.contains(&"hnsw_filtered/c0.1/relaxed_order_raised/ef_search=100".to_string()));
        assert!(ids.contains(&"hnsw_filtered/u0.1/exact/index_scans=off".to_string()));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "ids are unique");
        assert_eq!(plan(&args(&["u1/"]), &cfg).len(), 9);
        assert_eq!(plan(&args(&["hnsw/ef_search"]), &cfg).len(), 0);
        cfg.bench.quick = true;
        assert_eq!(
            plan(&args(&[]), &cfg).len(),
            8 * 5,
            "quick mode: the first ef_search"
        );
        assert_eq!(
            all[3].criterion_dir(),
            "hnsw_filtered/u50_relaxed_order/ef_search=40"
        );
    }
}
