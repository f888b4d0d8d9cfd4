//! `cargo bench variants`: the index variants side by side on the same table and queries — HNSW on
//! `vector`, HNSW on `halfvec`, binary quantization with an exact re-rank, IVFFlat (db::variant) —
//! each swept over its knob (ef_search, candidates, probes).
//!
//! Setup builds the variants missing for this dataset (`setup --index`, the same code) and records
//! their build time and size. Each point: its settings, EXPLAIN must show a scan of the variant's
//! own index, Criterion times the held-out queries on one warm connection, then capbench's
//! measurement rounds (a fresh connection each, points in rotating order, the variant's index and
//! the table prewarmed before its points) record every latency; round 0 also scores recall@k of
//! all three query distributions against the exact top-k. One record, kind `variants`, holds the
//! builds and every point; the report draws recall against QPS for all of them.

use std::process::ExitCode;
use std::time::Instant;

use rand::{RngExt, SeedableRng};

use anyhow::{Context, Result};
use criterion::{BenchmarkId, SamplingMode, Throughput};
use pgvector::Vector;
use sqlx::PgConnection;

use crate::bench::{
    BenchArgs, Interleaved, LatencySummary, Rounds, criterion, criterion_median_ms, round_order,
    time_async,
};
use crate::config::Config;
use crate::dataset::{self, Distribution};
use crate::db::truth::{Case, GroundTruth};
use crate::db::variant::{self, Built, Knob, Variant};
use crate::db::{self, search};
use crate::record::{
    self, Environment, Metric, Metrics, Parameters, ResultEntry, RunRecord, VariantsParameters,
};
use crate::setup;

const GROUP: &str = "variants";

/// One benchmark: a variant at one value of its knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Point {
    pub variant: Variant,
    pub value: u32,
}

impl Point {
    fn parameter(&self) -> String {
        format!("{}={}", self.variant.knob().as_str(), self.value)
    }

    /// `variants/halfvec/ef_search=40`: what Criterion's filter matches.
    pub fn id(&self) -> String {
        format!("{GROUP}/{}/{}", self.variant, self.parameter())
    }

    fn criterion_dir(&self) -> String {
        self.id()
    }

    /// bq's re-rank depth (the inner LIMIT).
    fn candidates(&self) -> Option<i64> {
        (self.variant.knob() == Knob::Candidates).then_some(i64::from(self.value))
    }

    fn metric(&self) -> Metric {
        knob_metric(self.variant.knob())
    }
}

/// The record's metric for a knob's value.
pub fn knob_metric(k: Knob) -> Metric {
    match k {
        Knob::EfSearch => Metric::EfSearch,
        Knob::Candidates => Metric::Candidates,
        Knob::Probes => Metric::Probes,
    }
}

/// The points `args` selects, variant by variant, each over its sweep.
pub fn plan(args: &BenchArgs, config: &Config) -> Vec<Point> {
    config
        .bench
        .variants
        .iter()
        .flat_map(|&variant| {
            variant
                .sweep(
                    &config.bench.ef_search,
                    config.dataset.rows,
                    config.bench.quick,
                )
                .into_iter()
                .map(move |value| Point { variant, value })
        })
        .filter(|p| args.selects(&p.id()))
        .collect()
}

/// One point's measurement.
#[derive(Debug, Clone)]
pub struct VariantPass {
    pub point: Point,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    pub qps: f64,
    /// recall@k per distribution (held-out first), mean and worst query.
    pub recall: Vec<(Distribution, f64, f64)>,
    /// The plan it ran, one line.
    pub plan: String,
    pub rounds: Vec<Metrics>,
    pub criterion_median_ms: Option<f64>,
    /// Its mean latency against pgbench's on the same SQL, settings and queries, in alternating
    /// rounds (`CAPBENCH_COMPARE`, each variant's middle point).
    pub pgbench: Option<Interleaved>,
}

pub type RunOutcome = crate::bench::RunOutcome<VariantPass>;

/// `benches/variants.rs`'s main.
pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// A distribution's unfiltered set and its truth.
struct Set {
    distribution: Distribution,
    queries: Vec<Vector>,
    truth: GroundTruth,
}

struct Prepared {
    url: String,
    conn: PgConnection,
    /// Held-out first (the timed one).
    sets: Vec<Set>,
    builds: Vec<Built>,
    /// Per point, its SQL and its plan (one line).
    sql: Vec<String>,
    plans: Vec<String>,
}

/// The bench, for the given command line and configuration.
pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let points = plan(&bench_args, &config);
    let ids: Vec<String> = points.iter().map(Point::id).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    let rt = crate::current_thread_runtime()?;
    let mut prepared = rt.block_on(prepare(&config, &points))?;
    let mut c = criterion(&config);
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    // A bq point with hundreds of candidates takes tens of ms per query.
    group.sampling_mode(SamplingMode::Flat);
    if !config.bench.quick {
        group.sample_size(20);
        group.warm_up_time(std::time::Duration::from_secs(1));
        group.measurement_time(std::time::Duration::from_secs(3));
    }
    let k = i64::from(config.bench.k);
    let mut medians = Vec::new();
    let mut warm = None;
    for (i, p) in points.iter().enumerate() {
        if warm != Some(p.variant) {
            rt.block_on(variant::prewarm(&mut prepared.conn, p.variant))?;
            warm = Some(p.variant);
        }
        rt.block_on(apply(&mut prepared.conn, p))?;
        let (conn, queries, sql) = (
            &mut prepared.conn,
            &prepared.sets[0].queries,
            &prepared.sql[i],
        );
        let candidates = p.candidates();
        let mut next = 0usize;
        time_async(
            &mut group,
            BenchmarkId::new(p.variant.as_str(), p.parameter()),
            &rt,
            async || {
                let q = &queries[next % queries.len()];
                next += 1;
                variant::search(conn, sql, q, k, candidates).await.map(drop)
            },
        )
        .with_context(|| format!("benchmark {}", p.id()))?;
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
    if config.bench.compare {
        for v in &config.bench.variants {
            // Each variant's middle point of its sweep.
            let of: Vec<usize> = (0..results.len())
                .filter(|&i| results[i].point.variant == *v)
                .collect();
            let Some(&i) = of.get(of.len() / 2) else {
                continue;
            };
            let p = results[i].point;
            // Its index back in shared_buffers: the rounds ended on another variant's.
            rt.block_on(variant::prewarm(&mut prepared.conn, p.variant))?;
            let queries = prepared.sets[0].queries.len();
            let script = pgbench_script(
                &prepared.sql[i],
                config.dataset.dims,
                queries,
                k,
                p.candidates(),
            );
            let options = format!(
                "-c enable_seqscan=off -c {}={}",
                match p.variant.knob() {
                    Knob::Probes => "ivfflat.probes",
                    _ => "hnsw.ef_search",
                },
                p.value
            );
            let (rounds, seconds) = if config.bench.quick { (3, 1) } else { (9, 3) };
            let (sql, candidates) = (&prepared.sql[i], p.candidates());
            let (url, held) = (&prepared.url, &prepared.sets[0].queries);
            // Both sides draw each query uniformly from the set, as pgbench's `random()` does: a
            // round of ours walking the set in order would cover one stretch of it, and where
            // queries differ in cost (bq's do, by 2×) rounds of stretches are not rounds of draws.
            let mut draw = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(i as u64);
            // Each side starts every round on a new session, as pgbench cannot keep one between
            // runs: the two measure the same thing, session start and first statement included.
            let compared = Interleaved::measure(
                rounds,
                || {
                    rt.block_on(async {
                        let mut session = db::connect(url).await?;
                        apply(&mut session, &p).await?;
                        let conn = &mut session;
                        let (start, mut n) = (Instant::now(), 0u32);
                        while start.elapsed().as_secs_f64() < f64::from(seconds) {
                            let q = &held[draw.random_range(0..held.len())];
                            variant::search(conn, sql, q, k, candidates).await?;
                            n += 1;
                        }
                        Ok(start.elapsed().as_secs_f64() * 1e3 / f64::from(n))
                    })
                },
                || {
                    let pg = crate::bench::hnsw::pgbench_for(
                        &config,
                        &prepared.url,
                        &script,
                        &options,
                        seconds,
                    )?;
                    Ok((pg.latency_avg_ms, pg.tps))
                },
            )?;
            results[i].pgbench = Some(compared);
        }
    }
    print_table(&config, &prepared, &results);
    let record = rt.block_on(write_record(&config, &mut prepared, &results))?;
    crate::report::publish(&record, args)?;
    Ok(RunOutcome::Ran(results))
}

/// The pgbench script of a variant's search SQL: the query vector read from
/// `capacity_query_vectors` (held-out set), drawn uniformly from its `queries`.
fn pgbench_script(sql: &str, dims: u32, queries: usize, k: i64, candidates: Option<i64>) -> String {
    let sql = match candidates {
        Some(c) => sql.replace("$4", &c.to_string()),
        None => sql.to_string(),
    };
    crate::bench::hnsw::pgbench_script_for(
        &sql,
        "heldout",
        queries,
        queries,
        k,
        &format!("subvector(embedding, 1, {dims})"),
    )
}

/// The session settings of point `p`: its knob, sequential scans off, no plan cached under
/// another point's settings.
async fn apply(conn: &mut PgConnection, p: &Point) -> Result<()> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "{}; DISCARD PLANS",
        p.variant.settings_sql(p.value)
    )))
    .execute(&mut *conn)
    .await
    .with_context(|| format!("applying the settings of {}", p.id()))?;
    Ok(())
}

async fn prepare(config: &Config, points: &[Point]) -> Result<Prepared> {
    let url = crate::bench::database(config, "variants").await?;
    let (truths, computed) = setup::ensure_truth(config, &url).await?;
    if let Some(s) = computed {
        eprintln!(
            "variants: ground truth for {} cases computed in {s:.1} s",
            truths.cases.len()
        );
    }
    let mut wanted: Vec<Variant> = points.iter().map(|p| p.variant).collect();
    wanted.dedup();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let ensured = setup::ensure_variants(config, &url, &wanted, progress).await?;
    for line in setup::variant_lines(&ensured) {
        eprintln!("variants: {line}");
    }
    let builds: Vec<Built> = ensured.into_iter().map(|e| e.built).collect();
    let sets: Vec<Set> = Distribution::ALL
        .into_iter()
        .filter_map(|distribution| {
            let (set, truth) = truths.get(Case {
                distribution,
                filter: None,
            })?;
            Some(Set {
                distribution,
                queries: set.vectors.iter().cloned().map(Vector::from).collect(),
                truth: truth.clone(),
            })
        })
        .collect();
    anyhow::ensure!(
        sets.first().map(|s| s.distribution) == Some(Distribution::Heldout),
        "the ground truth has no held-out set"
    );
    let mut conn = db::connect(&url).await?;
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(&mut conn)
        .await
        .context("CREATE EXTENSION pg_prewarm (it ships with PostgreSQL's contrib modules)")?;
    let k = i64::from(config.bench.k);
    let mut sql = Vec::new();
    let mut plans = Vec::new();
    for p in points {
        let text = p.variant.search_sql(config.dataset.dims);
        apply(&mut conn, p).await?;
        let plan =
            variant::explain(&mut conn, &text, &sets[0].queries[0], k, p.candidates()).await?;
        if !search::plan_uses_index(&plan, p.variant.index_name()) {
            anyhow::bail!(
                "{}: PostgreSQL would not scan the index {} for this variant's query ({}): check it exists \
                 (cargo run --release --bin setup -- --index {} builds it)",
                p.id(),
                p.variant.index_name(),
                search::one_line_plan(&plan),
                p.variant
            );
        }
        sql.push(text);
        plans.push(search::one_line_plan(&plan));
    }
    eprintln!(
        "variants: plans checked: each point scans its variant's own index ({} points)",
        points.len()
    );
    Ok(Prepared {
        url,
        conn,
        sets,
        builds,
        sql,
        plans,
    })
}

/// Rounds after the first stop a point after this long (the first runs every query of every set).
const LATER_ROUND_SECONDS: f64 = 1.0;

const WARM_UP_QUERIES: usize = 5;

/// `config.bench.rounds` rounds (at most 3), each on a fresh connection with the variants in
/// rotating order (a variant's index prewarmed before its points, which then rotate too). Round 0
/// runs the whole held-out set (timed) and scores it and the other distributions' sets; later
/// rounds run held-out queries for up to [`LATER_ROUND_SECONDS`] per point.
async fn measure_rounds(
    prepared: &mut Prepared,
    config: &Config,
    points: &[Point],
) -> Result<Vec<VariantPass>> {
    let k = i64::from(config.bench.k);
    let total = config.bench.rounds.min(3) as usize;
    let mut rounds = vec![Rounds::default(); points.len()];
    let mut recall: Vec<Vec<(Distribution, f64, f64)>> = vec![Vec::new(); points.len()];
    let mut variants: Vec<Variant> = points.iter().map(|p| p.variant).collect();
    variants.dedup();
    for round in 0..total {
        let mut conn = db::connect(&prepared.url).await?;
        for vi in round_order(variants.len(), round) {
            let v = variants[vi];
            variant::prewarm(&mut conn, v).await?;
            let of: Vec<usize> = (0..points.len())
                .filter(|&i| points[i].variant == v)
                .collect();
            for oi in round_order(of.len(), round) {
                let i = of[oi];
                let p = &points[i];
                apply(&mut conn, p).await?;
                let (sql, candidates) = (&prepared.sql[i], p.candidates());
                let held = &prepared.sets[0];
                for q in held.queries.iter().take(WARM_UP_QUERIES) {
                    variant::search(&mut conn, sql, q, k, candidates).await?;
                }
                let mut hist = record::latency_histogram();
                let mut answers = Vec::new();
                let start = Instant::now();
                for q in &held.queries {
                    if round > 0 && start.elapsed().as_secs_f64() >= LATER_ROUND_SECONDS {
                        break;
                    }
                    let t = Instant::now();
                    let hits = variant::search(&mut conn, sql, q, k, candidates).await?;
                    hist.saturating_record(t.elapsed().as_nanos() as u64);
                    if round == 0 {
                        answers.push(hits);
                    }
                }
                rounds[i].add(&hist, start.elapsed().as_secs_f64())?;
                if round == 0 {
                    recall[i].push(score(held, &answers));
                    for set in &prepared.sets[1..] {
                        let mut answers = Vec::with_capacity(set.queries.len());
                        for q in &set.queries {
                            answers.push(variant::search(&mut conn, sql, q, k, candidates).await?);
                        }
                        recall[i].push(score(set, &answers));
                    }
                }
            }
        }
        eprintln!("variants: measurement round {}/{total} done", round + 1);
    }
    Ok(points
        .iter()
        .enumerate()
        .zip(rounds)
        .zip(recall)
        .map(|(((i, p), rounds), recall)| VariantPass {
            point: *p,
            latency: LatencySummary::of(rounds.histogram()),
            histogram: rounds.histogram().clone(),
            qps: rounds.qps(),
            recall,
            plan: prepared.plans[i].clone(),
            rounds: rounds.per_round().to_vec(),
            criterion_median_ms: None,
            pgbench: None,
        })
        .collect())
}

/// (distribution, mean recall@k, worst) of `answers` to `set`'s queries, in order.
fn score(set: &Set, answers: &[Vec<search::Hit>]) -> (Distribution, f64, f64) {
    let scores: Vec<f64> = answers
        .iter()
        .enumerate()
        .map(|(j, hits)| crate::bench::hnsw::score(&set.truth, j, hits))
        .collect();
    (
        set.distribution,
        scores.iter().sum::<f64>() / scores.len().max(1) as f64,
        scores.iter().copied().fold(f64::INFINITY, f64::min),
    )
}

fn print_table(config: &Config, prepared: &Prepared, results: &[VariantPass]) {
    println!();
    println!(
        "variants — {} rows × {} dims; {} held-out queries timed, recall@{} of each distribution's {} queries \
         against the exact top-{}, unfiltered, serial, warm (the variant's index and the table prewarmed){}",
        config.dataset.rows,
        config.dataset.dims,
        prepared.sets[0].queries.len(),
        config.bench.k,
        prepared.sets[0].queries.len(),
        config.bench.k,
        if config.bench.quick {
            " — QUICK MODE (smoke run, not a measurement)"
        } else {
            ""
        }
    );
    for b in &prepared.builds {
        println!(
            "  {:<8} {:<40} {:>8.1} MiB, built in {:.1} s (leader + {} workers), {}",
            b.variant.as_str(),
            b.index_name,
            b.size_bytes as f64 / (1024.0 * 1024.0),
            b.build_seconds,
            b.workers,
            b.settings
        );
    }
    let others: Vec<&str> = prepared.sets[1..]
        .iter()
        .map(|s| s.distribution.name())
        .collect();
    print!(
        "{:<36} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "benchmark (ms)", "criterion", "p50", "p99", "p99.9", "QPS", "recall", "worst"
    );
    for o in &others {
        print!(" {:>14}", o);
    }
    println!();
    for r in results {
        let l = &r.latency;
        let (_, mean, worst) =
            r.recall
                .first()
                .copied()
                .unwrap_or((Distribution::Heldout, 0.0, 0.0));
        print!(
            "{:<36} {:>9} {:>7.2} {:>7.2} {:>7.2} {:>7.0} {:>7.3} {:>6.2}",
            r.point.id(),
            r.criterion_median_ms
                .map_or("-".into(), |m| format!("{m:.3}")),
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            r.qps,
            mean,
            worst
        );
        for (_, m, _) in r.recall.iter().skip(1) {
            print!(" {m:>14.3}");
        }
        println!();
    }
    for r in results {
        if let Some(c) = r.pgbench {
            println!(
                "{} vs pgbench -M prepared -c 1 (same SQL, settings and queries), {} alternating rounds: \
                 capbench mean {:.3} ms, pgbench mean {:.3} ms ({:.0} tps); median ratio {:.2} \
                 (rounds {:.2}–{:.2}; agreement within ±{:.0} %)",
                r.point.id(),
                c.rounds,
                c.ours_ms,
                c.theirs_ms,
                c.theirs_rate,
                c.ratio,
                c.spread.0,
                c.spread.1,
                crate::bench::PGBENCH_AGREEMENT * 100.0
            );
        }
    }
}

async fn write_record(
    config: &Config,
    prepared: &mut Prepared,
    results: &[VariantPass],
) -> Result<RunRecord> {
    let environment = Environment::of_machine()
        .with_postgres(&mut prepared.conn)
        .await?;
    let mut rec = RunRecord::new(
        environment,
        Parameters::Variants(VariantsParameters {
            variants: prepared.builds.clone(),
            queries: prepared.sets[0].queries.len(),
            k: config.bench.k as usize,
            recall_target: config.bench.recall_target,
            quick: config.bench.quick,
            rounds: config.bench.rounds.min(3),
            plans: results
                .iter()
                .map(|r| (r.point.id(), r.plan.clone()))
                .collect(),
            rows: config.dataset.rows,
        }),
    );
    rec.dataset = Some(dataset::identity(&config.dataset, &config.index));
    for r in results {
        let mut metrics = r.latency.metrics();
        metrics.insert(r.point.metric(), f64::from(r.point.value));
        metrics.insert(Metric::Qps, r.qps);
        for &(d, mean, worst) in &r.recall {
            if d == Distribution::Heldout {
                metrics.insert(Metric::RecallMean, mean);
                metrics.insert(Metric::RecallMin, worst);
            } else {
                metrics.insert(Metric::RecallMeanOf(d.name().into()), mean);
                metrics.insert(Metric::RecallMinOf(d.name().into()), worst);
            }
        }
        if let Some(b) = prepared
            .builds
            .iter()
            .find(|b| b.variant == r.point.variant)
        {
            metrics.insert(Metric::IndexBytes, b.size_bytes as f64);
            metrics.insert(Metric::BuildSeconds, b.build_seconds);
        }
        if let Some(m) = r.criterion_median_ms {
            metrics.insert(Metric::CriterionMedianMs, m);
        }
        let mut gates = Vec::new();
        if let Some(c) = r.pgbench {
            metrics.insert(Metric::PgbenchLatencyAvgMs, c.theirs_ms);
            metrics.insert(Metric::PgbenchTps, c.theirs_rate);
            metrics.insert(Metric::InterleavedMeanMs, c.ours_ms);
            metrics.insert(Metric::RatioVsPgbench, c.ratio);
            gates = crate::bench::pgbench_agreement_gates(c.ratio);
        }
        rec.results.push(ResultEntry {
            name: r.point.id(),
            metrics,
            histogram: Some(record::encode_histogram(&r.histogram)?),
            rounds: r.rounds.clone(),
            gates,
            ..ResultEntry::default()
        });
    }
    Ok(rec)
}

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
    fn points_sweep_each_variants_knob_and_filter_like_criterion() {
        let mut cfg = Config::from_env().unwrap();
        cfg.bench.quick = false;
        cfg.dataset.rows = 100_000;
        cfg.bench.ef_search = vec![16, 40, 64, 100, 200];
        cfg.bench.variants = Variant::ALL.to_vec();
        let all = plan(&args(&[]), &cfg);
        let ids: Vec<String> = all.iter().map(Point::id).collect();
        assert!(ids.contains(&"variants/hnsw/ef_search=40".to_string()));
        assert!(ids.contains(&"variants/halfvec/ef_search=200".to_string()));
        assert!(ids.contains(&"variants/bq/candidates=400".to_string()));
        assert!(ids.contains(&"variants/ivfflat/probes=32".to_string()));
        assert_eq!(all.len(), 5 + 5 + 5 + 6);
        assert_eq!(plan(&args(&["variants/ivfflat"]), &cfg).len(), 6);
        assert_eq!(
            plan(&args(&["hnsw/ef_search/40"]), &cfg).len(),
            0,
            "not the hnsw bench's ids"
        );
        assert_eq!(
            plan(&args(&["hnsw"]), &cfg).len(),
            5,
            "`cargo bench hnsw` (a regex) also selects the hnsw variant's points"
        );
        cfg.bench.variants = vec![Variant::Bq];
        assert!(
            plan(&args(&[]), &cfg)
                .iter()
                .all(|p| p.candidates().is_some())
        );
    }

    #[test]
    fn the_pgbench_script_inlines_every_parameter() {
        let s = pgbench_script(&Variant::Bq.search_sql(8), 8, 100, 10, Some(200));
        assert!(s.starts_with("\\set qid random(0, 99) % 100\n"), "{s}");
        assert!(!s.contains('$'), "{s}");
        assert!(s.contains("LIMIT 200) AS candidates"), "{s}");
        assert!(s.contains("LIMIT 10;"), "{s}");
        assert!(
            s.contains("(SELECT subvector(embedding, 1, 8) FROM capacity_query_vectors"),
            "{s}"
        );
    }
}
