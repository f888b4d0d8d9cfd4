//! `cargo bench scale` (opt-in: it runs only when asked by name, `cargo bench scale`, or as a tiny
//! smoke in quick mode): the same measurements at several dataset sizes — build time and size of
//! each index variant, latency, QPS and recall at one fixed point per variant — and the growth
//! fitted as a power law (`report::plan`), from which the report extrapolates a capacity plan.
//!
//! Each size is its own dataset (same seed, dimension and 100 rows per cluster, so only the size
//! changes) in a database of its own (`<database>_scale_<rows>`; the size of the main dataset uses
//! it), loaded once and kept by its fingerprint: a re-run measures without rebuilding. Before a
//! size is built, the free disk is checked against an estimate of what it needs.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgvector::Vector;

use crate::bench::{BenchArgs, LatencySummary, Rounds};
use crate::config::Config;
use crate::dataset::{self, Distribution};
use crate::db::truth::Case;
use crate::db::variant::{self, Built, Knob, Variant};
use crate::db::{self, search};
use crate::record::{
    self, Environment, Metric, Parameters, ResultEntry, RunRecord, ScaleParameters,
};
use crate::report::plan::{PowerLaw, rows_label};
use crate::setup::{self, LoadOptions};
use crate::stack;

const GROUP: &str = "scale";

/// Rows per cluster of every scale dataset (the main dataset's density).
pub const ROWS_PER_CLUSTER: u64 = 100;

/// Quick mode's sizes: a smoke run of the whole path, not a measurement.
const QUICK_SIZES: [u64; 2] = [2_000, 5_000];

/// Candidates of bq's fixed point, and IVFFlat's probes as a share of its lists.
const BQ_CANDIDATES: u32 = 100;
const PROBES_SHARE: f64 = 0.08;

/// `scale/hnsw/rows=100000`.
pub fn id(v: Variant, rows: u64) -> String {
    format!("{GROUP}/{v}/rows={rows}")
}

/// The sizes this run measures.
pub fn sizes(config: &Config) -> Vec<u64> {
    let mut s = if config.bench.quick {
        QUICK_SIZES.to_vec()
    } else {
        config.bench.scale_rows.clone()
    };
    s.sort_unstable();
    s.dedup();
    s
}

/// The fixed point of `v` at `rows`: its knob's value.
pub fn fixed_value(v: Variant, rows: u64, ef_search: u32) -> u32 {
    match v.knob() {
        Knob::EfSearch => ef_search,
        Knob::Candidates => BQ_CANDIDATES,
        Knob::Probes => {
            ((f64::from(variant::ivfflat_lists(rows)) * PROBES_SHARE).round() as u32).max(1)
        }
    }
}

/// `ef_search=40`, `candidates=100`, `probes=8 % of lists`.
fn point_label(v: Variant, ef_search: u32) -> String {
    match v.knob() {
        Knob::Probes => format!("{v}: probes = {:.0} % of lists", PROBES_SHARE * 100.0),
        k => format!("{v}: {}={}", k.as_str(), fixed_value(v, 0, ef_search)),
    }
}

/// What a size needs on disk, roughly: the table (vectors + ~400 bytes of row) and each variant's
/// index (HNSW's graph ~1/3 over its vectors; IVFFlat about the vectors).
pub fn disk_estimate(rows: u64, dims: u32, variants: &[Variant]) -> u64 {
    let vector = rows * (u64::from(dims) * 4 + 8);
    let table = vector + rows * 400;
    let indexes: f64 = variants
        .iter()
        .map(|v| match v {
            Variant::Hnsw | Variant::Ivfflat => 1.05,
            Variant::Halfvec => 0.53,
            Variant::Bq => 0.07,
        })
        .sum();
    table + (vector as f64 * indexes) as u64
}

/// The selection: only by name (`cargo bench scale`, or a filter matching `scale/…`), or quick mode.
fn selected(args: &BenchArgs, config: &Config) -> Vec<(Variant, u64)> {
    if !(args.names(GROUP) || config.bench.quick) {
        return Vec::new();
    }
    sizes(config)
        .into_iter()
        .flat_map(|rows| config.bench.variants.iter().map(move |&v| (v, rows)))
        .filter(|&(v, rows)| args.selects(&id(v, rows)))
        .collect()
}

/// One point: a variant at a size.
#[derive(Debug, Clone)]
pub struct ScalePass {
    pub variant: Variant,
    pub rows: u64,
    pub value: u32,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    pub qps: f64,
    pub recall: f64,
    pub built: Built,
    pub table_bytes: i64,
    pub rounds: Vec<record::Metrics>,
}

pub type RunOutcome = crate::bench::RunOutcome<ScalePass>;

pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let points = selected(&bench_args, &config);
    // Said to a plain `cargo bench` only (not to `cargo bench hnsw`, which asks for something else).
    if points.is_empty() && bench_args.selects(GROUP) && !config.bench.quick {
        eprintln!("scale: opt-in — run it by name: cargo bench scale (docs/scale.md)");
    }
    let ids: Vec<String> = points.iter().map(|&(v, r)| id(v, r)).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    if bench_args.test {
        return Ok(RunOutcome::Ran(Vec::new()));
    }
    let rt = crate::current_thread_runtime()?;
    let mut sizes: Vec<u64> = points.iter().map(|p| p.1).collect();
    sizes.dedup();
    let mut passes = Vec::new();
    let mut builds = Vec::new();
    let mut shared_buffers = 0;
    for &rows in &sizes {
        let variants: Vec<Variant> = points.iter().filter(|p| p.1 == rows).map(|p| p.0).collect();
        let (mut p, b, sb) = rt.block_on(measure_size(&config, rows, &variants))?;
        shared_buffers = sb;
        passes.append(&mut p);
        builds.push((rows, b));
    }
    print_table(&config, &passes);
    let record = rt.block_on(write_record(&config, &passes, builds, shared_buffers))?;
    crate::report::publish(&record, args)?;
    Ok(RunOutcome::Ran(passes))
}

/// The configuration of the scale dataset of `rows` rows.
pub fn config_of(config: &Config, rows: u64) -> Config {
    let mut c = config.clone();
    c.dataset.rows = rows;
    c.dataset.clusters = (rows / ROWS_PER_CLUSTER).max(1) as u32;
    c
}

/// The database of the scale dataset of `rows` rows: the main one when it is that dataset.
fn database_of(config: &Config, rows: u64) -> String {
    let main = config.local_database();
    if config_of(config, rows).dataset == config.dataset {
        main.to_string()
    } else {
        format!("{main}_scale_{rows}")
    }
}

/// Free bytes where the embedded stack keeps its data (None for a server of DATABASE_URL).
fn free_disk(config: &Config) -> Option<u64> {
    if config.servers.database_url.is_some() {
        return None;
    }
    let st = nix::sys::statvfs::statvfs(&config.servers.home).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

async fn measure_size(
    config: &Config,
    rows: u64,
    variants: &[Variant],
) -> Result<(Vec<ScalePass>, Vec<Built>, i64)> {
    let cfg = config_of(config, rows);
    let database = database_of(config, rows);
    let url = match &config.servers.database_url {
        None => stack::postgres(&config.servers, &database).await?,
        Some(u) => {
            stack::ensure_database(u, &database).await?;
            stack::with_database(u, &database)?
        }
    };
    let need = disk_estimate(rows, cfg.dataset.dims, variants);
    let fingerprint = dataset::fingerprint(&cfg.dataset, &cfg.index);
    let loaded: Option<String> = {
        let mut conn = db::connect(&url).await?;
        sqlx::query_scalar(
            "SELECT fingerprint FROM capacity_meta WHERE id = 1 AND to_regclass('capacity_meta') IS NOT NULL",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap_or(None)
    };
    if loaded.as_deref() != Some(fingerprint.as_str()) {
        // The HNSW graph is built in maintenance_work_mem; beyond it pgvector spills and slows.
        let graph = rows * (u64::from(cfg.dataset.dims) * 4 + 8) * 21 / 20;
        let mut conn = db::connect(&url).await?;
        let server = db::ServerInfo::read(&mut conn).await?;
        drop(conn);
        if variants.iter().any(|v| v.method() == "hnsw")
            && graph as i64 > server.maintenance_work_mem_bytes
        {
            eprintln!(
                "scale: the {} HNSW graph (~{:.1} GiB) exceeds maintenance_work_mem ({:.1} GiB): its build will                  spill and be several times slower (raise maintenance_work_mem for the build to measure the fast case)",
                rows_label(rows),
                graph as f64 / f64::from(1 << 30),
                server.maintenance_work_mem_bytes as f64 / f64::from(1 << 30)
            );
        }
        match free_disk(config) {
            Some(free) if free < need + need / 5 => bail!(
                "scale: the {} dataset with {} index variant(s) needs about {:.1} GiB of disk and {:.1} GiB are \
                 free under {}: free space, or leave this size out (CAPBENCH_SCALE_ROWS)",
                rows_label(rows),
                variants.len(),
                need as f64 / f64::from(1 << 30),
                free as f64 / f64::from(1 << 30),
                config.servers.home.display()
            ),
            Some(free) => eprintln!(
                "scale: building the {} dataset in database {database} (needs about {:.1} GiB of disk, {:.1} GiB free)",
                rows_label(rows),
                need as f64 / f64::from(1 << 30),
                free as f64 / f64::from(1 << 30)
            ),
            None => eprintln!(
                "scale: building the {} dataset in database {database} (needs about {:.1} GiB of disk on the server; \
                 not checked: it is not the embedded stack)",
                rows_label(rows),
                need as f64 / f64::from(1 << 30)
            ),
        }
    }
    let opts = LoadOptions {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..LoadOptions::default()
    };
    let t = Instant::now();
    setup::ensure_dataset(&cfg, &url, &opts).await?;
    let (truths, _) = setup::ensure_truth(&cfg, &url).await?;
    let ensured = setup::ensure_variants(&cfg, &url, variants, opts.progress).await?;
    eprintln!(
        "scale: {} ready in {:.1} s",
        rows_label(rows),
        t.elapsed().as_secs_f64()
    );
    for line in setup::variant_lines(&ensured) {
        eprintln!("scale: {} {line}", rows_label(rows));
    }
    let builds: Vec<Built> = ensured.into_iter().map(|e| e.built).collect();
    let (set, gt) = truths
        .get(Case {
            distribution: Distribution::Heldout,
            filter: None,
        })
        .context("the held-out ground truth is missing")?;
    let queries: Vec<Vector> = set.vectors.iter().cloned().map(Vector::from).collect();
    let k = i64::from(config.bench.k);
    let mut conn = db::connect(&url).await?;
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .execute(&mut conn)
        .await
        .context("CREATE EXTENSION pg_prewarm")?;
    let (table_bytes, shared_buffers): (i64, i64) = sqlx::query_as(
        "SELECT pg_table_size('traces'), pg_size_bytes(current_setting('shared_buffers'))",
    )
    .fetch_one(&mut conn)
    .await?;
    let ef = config.bench.scale_ef_search;
    let mut passes = Vec::new();
    for b in &builds {
        let v = b.variant;
        let value = fixed_value(v, rows, ef);
        let sql = v.search_sql(cfg.dataset.dims);
        let candidates = (v.knob() == Knob::Candidates).then_some(i64::from(value));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "{}; DISCARD PLANS",
            v.settings_sql(value)
        )))
        .execute(&mut conn)
        .await?;
        let plan = variant::explain(&mut conn, &sql, &queries[0], k, candidates).await?;
        if !search::plan_uses_index(&plan, v.index_name()) {
            bail!(
                "{}: PostgreSQL would not scan {} ({})",
                id(v, rows),
                v.index_name(),
                search::one_line_plan(&plan)
            );
        }
        variant::prewarm(&mut conn, v).await?;
        for q in queries.iter().take(5) {
            variant::search(&mut conn, &sql, q, k, candidates).await?;
        }
        let mut rounds = Rounds::default();
        let mut recalls = Vec::new();
        for round in 0..2 {
            let mut hist = record::latency_histogram();
            let start = Instant::now();
            for (j, q) in queries.iter().enumerate() {
                let t = Instant::now();
                let hits = variant::search(&mut conn, &sql, q, k, candidates).await?;
                hist.saturating_record(t.elapsed().as_nanos() as u64);
                if round == 0 {
                    recalls.push(crate::bench::hnsw::score(gt, j, &hits));
                }
            }
            rounds.add(&hist, start.elapsed().as_secs_f64())?;
        }
        let p = ScalePass {
            variant: v,
            rows,
            value,
            latency: LatencySummary::of(rounds.histogram()),
            histogram: rounds.histogram().clone(),
            qps: rounds.qps(),
            recall: recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
            built: b.clone(),
            table_bytes,
            rounds: rounds.per_round().to_vec(),
        };
        eprintln!(
            "scale: {}: {}={} p50 {:.2} ms p99 {:.2} ms, {:.0} QPS, recall@{} {:.3}",
            id(v, rows),
            v.knob().as_str(),
            value,
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.qps,
            config.bench.k,
            p.recall
        );
        passes.push(p);
    }
    Ok((passes, builds, shared_buffers))
}

/// The fitted growth of metric `f` of `variant`'s passes against their row counts.
pub fn growth(
    passes: &[ScalePass],
    variant: Variant,
    f: impl Fn(&ScalePass) -> f64,
) -> Option<PowerLaw> {
    let pts: Vec<(f64, f64)> = passes
        .iter()
        .filter(|p| p.variant == variant)
        .map(|p| (p.rows as f64, f(p)))
        .collect();
    PowerLaw::fit(&pts)
}

fn print_table(config: &Config, passes: &[ScalePass]) {
    println!();
    println!(
        "scale — {} dims, {} rows per cluster; {} held-out queries per point, serial, warm; recall@{} against \
         the exact top-{} of each size{}",
        config_of(config, 1).dataset.dims,
        ROWS_PER_CLUSTER,
        config.bench.queries,
        config.bench.k,
        config.bench.k,
        if config.bench.quick {
            " — QUICK MODE (smoke run, not a measurement)"
        } else {
            ""
        }
    );
    println!(
        "{:<28} {:>9} {:>10} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "point", "knob", "index MiB", "build s", "p50", "p99", "QPS", "recall"
    );
    for p in passes {
        println!(
            "{:<28} {:>9} {:>10.1} {:>8.1} {:>7.2} {:>7.2} {:>7.0} {:>7.3}",
            id(p.variant, p.rows),
            format!("{}={}", p.variant.knob().as_str(), p.value),
            p.built.size_bytes as f64 / f64::from(1 << 20),
            p.built.build_seconds,
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.qps,
            p.recall
        );
    }
    let mut variants: Vec<Variant> = passes.iter().map(|p| p.variant).collect();
    variants.sort();
    variants.dedup();
    println!("growth (log–log slope: 1 = linear) and the plan, extrapolated from the sizes above:");
    for v in variants {
        let size = growth(passes, v, |p| p.built.size_bytes as f64);
        let build = growth(passes, v, |p| p.built.build_seconds);
        let p99 = growth(passes, v, |p| p.latency.p99_ms);
        let slope = |f: &Option<PowerLaw>| f.map_or("-".into(), |f| format!("{:.2}", f.slope));
        print!(
            "  {v:<8} size {} build {} p99 {}",
            slope(&size),
            slope(&build),
            slope(&p99)
        );
        for &n in &config.bench.plan_rows {
            if let (Some(s), Some(b)) = (size, build) {
                print!(
                    "; at {}: index {:.1} GiB, build {:.0} min",
                    rows_label(n),
                    s.at(n as f64) / f64::from(1 << 30),
                    b.at(n as f64) / 60.0
                );
            }
        }
        println!();
    }
}

async fn write_record(
    config: &Config,
    passes: &[ScalePass],
    builds: Vec<(u64, Vec<Built>)>,
    shared_buffers: i64,
) -> Result<RunRecord> {
    let url = stack::postgres(&config.servers, config.local_database()).await?;
    let mut conn = db::connect(&url).await?;
    let environment = Environment::of_machine().with_postgres(&mut conn).await?;
    let memory_bytes = environment.memory_bytes;
    let mut variants: Vec<Variant> = passes.iter().map(|p| p.variant).collect();
    variants.dedup();
    let mut rec = RunRecord::new(
        environment,
        Parameters::Scale(ScaleParameters {
            sizes: builds.iter().map(|b| b.0).collect(),
            dims: config_of(config, 1).dataset.dims,
            rows_per_cluster: ROWS_PER_CLUSTER,
            points: variants
                .iter()
                .map(|&v| point_label(v, config.bench.scale_ef_search))
                .collect(),
            plan_rows: config.bench.plan_rows.clone(),
            plan_dims: config.bench.plan_dims.clone(),
            m: config.index.m,
            queries: config.bench.queries as usize,
            k: config.bench.k as usize,
            builds,
            shared_buffers_bytes: shared_buffers,
            memory_bytes,
            quick: config.bench.quick,
        }),
    );
    for p in passes {
        let mut metrics = p.latency.metrics();
        metrics.insert(
            crate::bench::variants::knob_metric(p.variant.knob()),
            f64::from(p.value),
        );
        metrics.insert(Metric::Rows, p.rows as f64);
        metrics.insert(Metric::Qps, p.qps);
        metrics.insert(Metric::RecallMean, p.recall);
        metrics.insert(Metric::IndexBytes, p.built.size_bytes as f64);
        metrics.insert(Metric::BuildSeconds, p.built.build_seconds);
        metrics.insert(Metric::TableBytes, p.table_bytes as f64);
        rec.results.push(ResultEntry {
            name: id(p.variant, p.rows),
            metrics,
            histogram: Some(record::encode_histogram(&p.histogram)?),
            rounds: p.rounds.clone(),
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
    fn scale_runs_only_when_named_or_as_the_quick_smoke() {
        let mut cfg = Config::from_env().unwrap();
        cfg.bench.quick = false;
        cfg.bench.variants = vec![Variant::Hnsw, Variant::Bq];
        cfg.bench.scale_rows = vec![10_000, 30_000];
        assert!(
            selected(&args(&[]), &cfg).is_empty(),
            "opt-in: not in a plain cargo bench"
        );
        assert!(
            selected(&args(&["hnsw"]), &cfg).is_empty(),
            "cargo bench hnsw is not a request for scale"
        );
        assert_eq!(selected(&args(&["scale"]), &cfg).len(), 4);
        assert_eq!(selected(&args(&["scale/bq"]), &cfg).len(), 2);
        cfg.bench.quick = true;
        let quick = selected(&args(&[]), &cfg);
        assert_eq!(quick.len(), 4);
        assert!(
            quick.iter().all(|p| p.1 <= 5_000),
            "quick mode: tiny sizes only"
        );
    }

    #[test]
    fn each_size_keeps_the_density_and_its_own_database() {
        let mut cfg = Config::from_env().unwrap();
        cfg.bench.quick = false;
        cfg.dataset = crate::config::DatasetParams::default();
        assert_eq!(config_of(&cfg, 300_000).dataset.clusters, 3000);
        assert_eq!(
            database_of(&cfg, 100_000),
            "capbench",
            "the main dataset is reused"
        );
        assert_eq!(database_of(&cfg, 30_000), "capbench_scale_30000");
        assert_eq!(fixed_value(Variant::Ivfflat, 100_000, 40), 8);
        assert_eq!(fixed_value(Variant::Ivfflat, 1_000_000, 40), 80);
        assert_eq!(fixed_value(Variant::Hnsw, 1_000_000, 40), 40);
        // 100K × 1536 with the four variants: ~0.66 GB table + ~2.2 GB of indexes.
        let gib = disk_estimate(100_000, 1536, &Variant::ALL) as f64 / f64::from(1 << 30);
        assert!((2.0..4.0).contains(&gib), "{gib}");
    }
}
