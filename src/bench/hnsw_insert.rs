//! `cargo bench hnsw_insert`: what keeping the HNSW index costs a write. Rows are written into the
//! write table ([`writes`]: a copy of the dataset with only its key, tags and HNSW indexes) and,
//! for the index's share of the cost, into an identical table without the HNSW index:
//!
//! - `insert`: single-row INSERTs, each its own transaction (the API's write path), latency per row;
//! - `insert_batch`: multi-row INSERTs of [`INSERT_BATCH`] rows per statement;
//! - `copy`: binary COPY of [`COPY_BATCH`] rows per statement;
//!
//! each at every writer level (`CAPBENCH_INSERT_WRITERS`: connections writing at once, the rows
//! split among them). The rows are new rows of the dataset's own generator (rows `n`, `n + 1`, … of
//! an `n`-row dataset: the same distribution, the same rows every run), generated before the clock
//! starts. With `CAPBENCH_COMPARE`, the single-row INSERT at one writer alternates with pgbench
//! running the same INSERT, and (on the embedded stack) capbench's COPY alternates with
//! PostgreSQL's own `COPY FROM` a server-side file of the same rows, both rolled back. At the end
//! the rows written are deleted and the copy VACUUMed (both timed), so it returns to the dataset.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::bench::{BenchArgs, Interleaved, LatencySummary};
use crate::config::Config;
use crate::dataset::{self, Dataset};
pub use crate::db::writes::{INSERT_COLUMNS, INSERT_PARAMS, Row, bind_row, insert_sql};
use crate::db::{self, load, writes};
use crate::record::{
    self, Environment, HnswInsertParameters, Metric, Parameters, ResultEntry, RunRecord,
};
use crate::setup;

const GROUP: &str = "hnsw_insert";

/// Rows per multi-row INSERT, and per COPY.
pub const INSERT_BATCH: usize = 100;
pub const COPY_BATCH: usize = 1000;

/// The longest one point writes: it stops there and reports the rows it wrote.
const POINT_BOUND: Duration = Duration::from_secs(90);

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Insert,
    InsertBatch,
    Copy,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Insert, Method::InsertBatch, Method::Copy];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Insert => "insert",
            Method::InsertBatch => "insert_batch",
            Method::Copy => "copy",
        }
    }

    pub fn rows_per_statement(self) -> usize {
        match self {
            Method::Insert => 1,
            Method::InsertBatch => INSERT_BATCH,
            Method::Copy => COPY_BATCH,
        }
    }
}

/// Into which table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The write table, with its HNSW index.
    Indexed,
    /// The same table without the HNSW index (key, tags index and foreign key kept).
    Unindexed,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Indexed, Target::Unindexed];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Indexed => "indexed",
            Target::Unindexed => "unindexed",
        }
    }

    pub fn table(self) -> String {
        match self {
            Target::Indexed => format!("{}.traces", writes::SCHEMA),
            Target::Unindexed => format!("{}.traces_unindexed", writes::SCHEMA),
        }
    }
}

/// One measurement: a method into a target by `writers` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub method: Method,
    pub target: Target,
    pub writers: u32,
}

impl Point {
    /// `hnsw_insert/copy/indexed/writers=4`.
    pub fn id(&self) -> String {
        format!(
            "{GROUP}/{}/{}/writers={}",
            self.method.as_str(),
            self.target.as_str(),
            self.writers
        )
    }
}

/// The entries of the comparisons and of the restore.
pub const COPY_FLOOR_ID: &str = "hnsw_insert/copy_floor/indexed";
pub const RESTORE_ID: &str = "hnsw_insert/restore";

/// The points `args` selects: only when named (`cargo bench hnsw_insert`, a filter naming
/// `hnsw_insert/…`) or in a plain `cargo bench` — `cargo bench hnsw` measures searches only.
pub fn plan(args: &BenchArgs, config: &Config) -> Vec<Point> {
    if !(args.runs_everything() || args.names(GROUP)) {
        return Vec::new();
    }
    writers(config)
        .into_iter()
        .flat_map(|w| {
            Method::ALL.into_iter().flat_map(move |method| {
                Target::ALL.into_iter().map(move |target| Point {
                    method,
                    target,
                    writers: w,
                })
            })
        })
        .filter(|p| args.selects(&p.id()))
        .collect()
}

/// The writer levels, ascending, each once.
fn writers(config: &Config) -> Vec<u32> {
    let mut w = config.bench.insert_writers.clone();
    w.sort_unstable();
    w.dedup();
    w
}

/// Rows each point writes: (single-row INSERTs, batch methods).
pub fn rows_per_point(quick: bool) -> (usize, usize) {
    if quick { (40, 200) } else { (400, 2000) }
}

/// One point's outcome.
#[derive(Debug, Clone)]
pub struct Pass {
    pub point: Point,
    /// Rows written, and the wall time from the first statement to the last writer's end.
    pub rows: usize,
    pub seconds: f64,
    /// Latency per statement (ns), all writers.
    pub histogram: Histogram<u64>,
    /// At `insert/indexed/writers=1` with `CAPBENCH_COMPARE`: pgbench on the same INSERT.
    pub pgbench: Option<Interleaved>,
}

impl Pass {
    pub fn vectors_per_second(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
}

/// capbench's COPY against the server's own COPY FROM a file, rows/s (medians over rounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyFloor {
    pub rows: usize,
    pub rounds: usize,
    pub ours: f64,
    pub server: f64,
}

/// What the bench did, for its caller (and tests).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub passes: Vec<Pass>,
    pub copy_floor: Option<CopyFloor>,
    /// Rows the benchmark (and pgbench) had committed into the write table, counted before restoring.
    pub written: u64,
    pub restored: writes::Restored,
    pub delete_seconds: f64,
    /// The copy's dataset rows after restoring it.
    pub dataset_rows: u64,
    /// Comparisons not made, and why.
    pub skipped: Vec<String>,
}

pub type RunOutcome = crate::bench::RunOutcome<Outcome>;

/// `benches/hnsw_insert.rs`'s main.
pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let points = plan(&bench_args, &config);
    let ids: Vec<String> = points.iter().map(Point::id).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    let rt = crate::current_thread_runtime()?;
    rt.block_on(async {
        let url = crate::bench::database(&config, "hnsw_insert").await?;
        if bench_args.test {
            return Ok(RunOutcome::Ran(Vec::new()));
        }
        let (outcome, table) = execute(&config, &url, &points).await?;
        let mut conn = db::connect(&url).await?;
        print_summary(&outcome);
        let (single, batch) = rows_per_point(config.bench.quick);
        let params = HnswInsertParameters {
            rows: config.dataset.rows,
            dims: config.dataset.dims,
            m: config.index.m,
            ef_construction: config.index.ef_construction,
            writers: writers(&config),
            single_rows: single,
            batch_rows: batch,
            insert_batch: INSERT_BATCH,
            copy_batch: COPY_BATCH,
            build_seconds: table.build_seconds,
            leftovers: table.restored.map_or(0, |r| r.rows),
            skipped: outcome.skipped.clone(),
            quick: config.bench.quick,
        };
        let record = write_record(&config, &mut conn, &outcome, params).await?;
        crate::report::publish(&record, args)?;
        Ok(RunOutcome::Ran(vec![outcome]))
    })
}

/// The measurements of `points` on the database at `url` (its dataset loaded): the write table
/// ensured, every point written, the comparisons `config` asks for, then the table restored
/// (whatever happened) and checked.
pub async fn execute(
    config: &Config,
    url: &str,
    points: &[Point],
) -> Result<(Outcome, writes::WriteTable)> {
    let mut conn = db::connect(url).await?;
    let fingerprint: String = sqlx::query_scalar("SELECT fingerprint FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .context("reading the dataset's fingerprint")?;
    let table = writes::ensure(&mut conn, config, &fingerprint, config.dataset.rows).await?;
    if let Some(r) = table.restored {
        eprintln!(
            "hnsw_insert: removed {} rows an earlier run had left in the write table (VACUUM {:.1} s)",
            r.rows, r.vacuum_seconds
        );
    }
    let writer = writes::writer(&mut conn).await?;
    unindexed_table(&mut conn).await?;
    let dataset = std::sync::Arc::new(Dataset::new(config.dataset.clone()));
    let (single, batch) = rows_per_point(config.bench.quick);
    let mut next = config.dataset.rows;
    let mut passes = Vec::new();
    let mut skipped = Vec::new();
    let mut copy_floor = None;
    let measured: Result<()> = async {
            for &p in points {
                let n = if p.method == Method::Insert { single } else { batch };
                let rows = generate(&dataset, next, n, writer).await?;
                next += n as u64;
                let mut pass = measure(url, p, &rows).await?;
                let latency = LatencySummary::of(&pass.histogram);
                eprintln!(
                    "hnsw_insert: {}: {} rows in {:.2} s, {:.0} vectors/s, p50 {:.2} ms, p99 {:.2} ms per statement",
                    p.id(),
                    pass.rows,
                    pass.seconds,
                    pass.vectors_per_second(),
                    latency.p50_ms,
                    latency.p99_ms,
                );
                if config.bench.compare
                    && p.method == Method::Insert
                    && p.target == Target::Indexed
                    && p.writers == 1
                {
                    let pool = generate(&dataset, next, 200, writer).await?;
                    next += pool.len() as u64;
                    pass.pgbench = Some(compare_pgbench(config, url, &pool).await?);
                }
                passes.push(pass);
            }
            if config.bench.compare && points.iter().any(|p| p.method == Method::Copy) {
                if config.servers.database_url.is_some() {
                    skipped.push(
                        "server-side COPY floor: not measured — it writes a file in the server's data \
                         directory, which only the embedded stack lets capbench do"
                            .to_string(),
                    );
                } else {
                    // One COPY's worth: its rolled-back rows are dead tuples the final VACUUM repairs too.
                    let n = if config.bench.quick { 200 } else { COPY_BATCH };
                    let rows = generate(&dataset, next, n, writer).await?;
                    next += n as u64;
                    copy_floor = Some(compare_copy_floor(config, url, &rows).await?);
                }
            }
            Ok(())
        }
        .await;
    // Whatever happened: the write table back to the dataset, the unindexed table dropped.
    let written = writes::written_rows(&mut conn).await?;
    let t = Instant::now();
    let restored = writes::restore(&mut conn).await?;
    let delete_seconds = t.elapsed().as_secs_f64() - restored.vacuum_seconds;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {}",
        Target::Unindexed.table()
    )))
    .execute(&mut conn)
    .await?;
    measured?;
    let dataset_rows = writes::dataset_rows(&mut conn).await?;
    if dataset_rows != config.dataset.rows || writes::written_rows(&mut conn).await? != 0 {
        bail!(
            "the write table holds {dataset_rows} dataset rows after restoring it, not {}",
            config.dataset.rows
        );
    }
    eprintln!(
        "hnsw_insert: restored the write table: {} rows deleted in {delete_seconds:.2} s, VACUUM {:.1} s",
        restored.rows, restored.vacuum_seconds
    );
    let outcome = Outcome {
        passes,
        copy_floor,
        written,
        restored,
        delete_seconds,
        dataset_rows,
        skipped,
    };
    Ok((outcome, table))
}

/// (Re)creates the table without the HNSW index from the write table itself: its columns,
/// defaults, checks and indexes (`LIKE … INCLUDING ALL`) less the HNSW ones, and its foreign keys
/// (which LIKE does not copy) — whatever setup/schema.sql gives the write table, less HNSW.
pub async fn unindexed_table(conn: &mut PgConnection) -> Result<()> {
    let (t, from) = (Target::Unindexed.table(), Target::Indexed.table());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (LIKE {from} INCLUDING ALL)"
    )))
    .execute(&mut *conn)
    .await
    .context("creating the write bench's table without the HNSW index")?;
    let hnsw: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
         WHERE i.indrelid = to_regclass($1) AND am.amname = 'hnsw'",
    )
    .bind(&t)
    .fetch_all(&mut *conn)
    .await?;
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid = to_regclass($1) AND contype = 'f'",
    )
    .bind(&from)
    .fetch_all(&mut *conn)
    .await?;
    let mut sql: Vec<String> = hnsw
        .iter()
        .map(|i| {
            format!(
                "DROP INDEX {}.{}",
                writes::SCHEMA,
                crate::stack::quote_ident(i)
            )
        })
        .collect();
    sql.extend(keys.iter().map(|k| format!("ALTER TABLE {t} ADD {k}")));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.join("; ")))
        .execute(&mut *conn)
        .await
        .context("the table without the HNSW index: its indexes and foreign keys")?;
    Ok(())
}

/// Rows `start..start + n` of the dataset's generator, as the write bench's contributor's.
async fn generate(
    dataset: &std::sync::Arc<Dataset>,
    start: u64,
    n: usize,
    writer: Uuid,
) -> Result<Vec<Row>> {
    let dataset = dataset.clone();
    tokio::task::spawn_blocking(move || {
        (start..start + n as u64)
            .map(|i| Row::of(dataset.row(i), writer))
            .collect()
    })
    .await
    .context("generating the rows to write")
}

/// Writes `rows` (one chunk of statements each) on `conn` into `table`; per-statement latency into
/// `hist`. Returns the rows written before `deadline`.
async fn write(
    conn: &mut PgConnection,
    method: Method,
    table: &str,
    rows: &[Row],
    deadline: Instant,
    hist: &mut Histogram<u64>,
) -> Result<usize> {
    let mut written = 0;
    for chunk in rows.chunks(method.rows_per_statement()) {
        if Instant::now() >= deadline {
            break;
        }
        let t = Instant::now();
        match method {
            Method::Insert | Method::InsertBatch => {
                let sql = insert_sql(table, chunk.len());
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for r in chunk {
                    q = bind_row(q, r, r.id);
                }
                q.execute(&mut *conn)
                    .await
                    .with_context(|| format!("{} into {table}", method.as_str()))?;
            }
            Method::Copy => {
                let mut bytes =
                    Vec::with_capacity(chunk.iter().map(|r| r.copy.len()).sum::<usize>() + 32);
                load::encode_header(&mut bytes);
                for r in chunk {
                    bytes.extend_from_slice(&r.copy);
                }
                load::encode_trailer(&mut bytes);
                let mut copy = conn
                    .copy_in_raw(&format!(
                        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
                        load::COPY_COLUMNS
                    ))
                    .await
                    .with_context(|| format!("COPY into {table}"))?;
                copy.send(bytes).await.context("sending COPY data")?;
                copy.finish().await.context("finishing COPY")?;
            }
        }
        hist.saturating_record(t.elapsed().as_nanos() as u64);
        written += chunk.len();
    }
    Ok(written)
}

/// One point: `rows` split among its writers, each on its own session, all started together.
async fn measure(url: &str, p: Point, rows: &[Row]) -> Result<Pass> {
    let writers = p.writers.max(1) as usize;
    let mut sessions = Vec::with_capacity(writers);
    for _ in 0..writers {
        sessions.push(writes::session(url).await?);
    }
    // Whole statements to each writer, in turn.
    let per = p.method.rows_per_statement();
    let statements: Vec<&[Row]> = rows.chunks(per).collect();
    let mut shares: Vec<Vec<Row>> = vec![Vec::new(); writers];
    for (i, s) in statements.into_iter().enumerate() {
        shares[i % writers].extend_from_slice(s);
    }
    let table = p.target.table();
    let start = Instant::now();
    let deadline = start + POINT_BOUND;
    let results =
        futures_util::future::join_all(sessions.iter_mut().zip(&shares).map(|(conn, share)| {
            let table = table.clone();
            async move {
                let mut hist = record::latency_histogram();
                let n = write(conn, p.method, &table, share, deadline, &mut hist).await?;
                anyhow::Ok((n, hist))
            }
        }))
        .await;
    let seconds = start.elapsed().as_secs_f64();
    let mut histogram = record::latency_histogram();
    let mut written = 0;
    for r in results {
        let (n, h) = r?;
        written += n;
        histogram
            .add(&h)
            .context("merging the writers' histograms")?;
    }
    for s in sessions {
        s.close().await.ok();
    }
    Ok(Pass {
        point: p,
        rows: written,
        seconds,
        histogram,
        pgbench: None,
    })
}

/// The table pgbench's INSERT reads its rows from, numbered from 0.
const PGBENCH_ROWS: &str = "capbench_writes.pgbench_rows";

/// pgbench's script: one row of `pool` drawn uniformly, inserted under a new id.
pub fn pgbench_insert_script(pool: usize) -> String {
    let rest = INSERT_COLUMNS
        .strip_prefix("id, ")
        .expect("the columns start with id");
    format!(
        "\\set n random(0, {})\nINSERT INTO {} ({INSERT_COLUMNS}) SELECT gen_random_uuid(), {rest} FROM {PGBENCH_ROWS} WHERE n = :n;\n",
        pool.max(1) - 1,
        Target::Indexed.table()
    )
}

/// The single-row INSERT at one writer against pgbench's, alternating rounds, each side drawing
/// rows uniformly from the same pool and giving each a new id.
async fn compare_pgbench(config: &Config, url: &str, pool: &[Row]) -> Result<Interleaved> {
    let mut conn = db::connect(url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {PGBENCH_ROWS};
         CREATE TABLE {PGBENCH_ROWS} (LIKE {} INCLUDING DEFAULTS, n integer)",
        Target::Indexed.table()
    )))
    .execute(&mut conn)
    .await
    .context("creating pgbench's rows")?;
    for (n, r) in pool.iter().enumerate() {
        let sql = format!(
            "INSERT INTO {PGBENCH_ROWS} ({INSERT_COLUMNS}, n) VALUES ({}, ${})",
            (1..=INSERT_PARAMS)
                .map(|c| format!("${c}"))
                .collect::<Vec<_>>()
                .join(", "),
            INSERT_PARAMS + 1
        );
        bind_row(sqlx::query(sqlx::AssertSqlSafe(sql)), r, r.id)
            .bind(n as i32)
            .execute(&mut conn)
            .await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE UNIQUE INDEX ON {PGBENCH_ROWS} (n); ANALYZE {PGBENCH_ROWS}"
    )))
    .execute(&mut conn)
    .await?;
    let script = pgbench_insert_script(pool.len());
    let (rounds, seconds) = if config.bench.quick { (3, 1) } else { (7, 3) };
    let mut draw = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(17);
    let mut pairs = Vec::new();
    let result: Result<()> = async {
        for _ in 0..rounds {
            // A new session each round, as pgbench's.
            let mut session = writes::session(url).await?;
            let table = Target::Indexed.table();
            let sql = insert_sql(&table, 1);
            let (start, mut n) = (Instant::now(), 0u32);
            while start.elapsed().as_secs_f64() < f64::from(seconds) {
                let r = &pool[draw.random_range(0..pool.len())];
                bind_row(
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone())),
                    r,
                    Uuid::new_v4(),
                )
                .execute(&mut session)
                .await
                .context("the compared INSERT")?;
                n += 1;
            }
            let ours = start.elapsed().as_secs_f64() * 1e3 / f64::from(n.max(1));
            session.close().await.ok();
            // pgbench runs to its end while this thread waits: nothing else is in flight.
            let pg = crate::bench::hnsw::pgbench_for(config, url, &script, "", seconds)?;
            pairs.push((ours, pg.latency_avg_ms, pg.tps));
        }
        Ok(())
    }
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {PGBENCH_ROWS}"
    )))
    .execute(&mut conn)
    .await?;
    result?;
    let c = Interleaved::of(&pairs);
    eprintln!(
        "hnsw_insert: single-row INSERT vs pgbench -M prepared -c 1 (same INSERT, rows drawn from the same {} rows), \
         {} alternating rounds: capbench mean {:.3} ms, pgbench mean {:.3} ms ({:.0} tps); median ratio {:.2} \
         (rounds {:.2}–{:.2}; agreement within ±{:.0} %)",
        pool.len(),
        c.rounds,
        c.ours_ms,
        c.theirs_ms,
        c.theirs_rate,
        c.ratio,
        c.spread.0,
        c.spread.1,
        crate::bench::PGBENCH_AGREEMENT * 100.0
    );
    Ok(c)
}

/// capbench's binary COPY of `rows` into the indexed table against the server's `COPY FROM` a file
/// of the same rows, in alternating rounds, each in a transaction rolled back.
async fn compare_copy_floor(config: &Config, url: &str, rows: &[Row]) -> Result<CopyFloor> {
    let path = config
        .servers
        .home
        .join("pg")
        .join("data")
        .join("capbench-insert-floor.bin");
    let file = path
        .to_str()
        .context("the data directory path is not UTF-8")?
        .replace('\'', "''");
    let _remove = setup::RemoveOnDrop(path.clone());
    let mut conn = writes::session(url).await?;
    let mut bytes = Vec::new();
    load::encode_header(&mut bytes);
    for r in rows {
        bytes.extend_from_slice(&r.copy);
    }
    load::encode_trailer(&mut bytes);
    // The file, written by the server from the same rows (a temporary table of this session).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMPORARY TABLE floor_rows (LIKE {} INCLUDING DEFAULTS)",
        Target::Indexed.table()
    )))
    .execute(&mut conn)
    .await?;
    let copy_in = |table: &str| {
        format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            load::COPY_COLUMNS
        )
    };
    let mut copy = conn.copy_in_raw(&copy_in("floor_rows")).await?;
    copy.send(bytes.clone()).await?;
    copy.finish().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "COPY floor_rows ({cols}) TO '{file}' (FORMAT binary); DROP TABLE floor_rows",
        cols = load::COPY_COLUMNS
    )))
    .execute(&mut conn)
    .await
    .context("writing the rows to a server-side file")?;
    let rounds = if config.bench.quick { 1 } else { 3 };
    let (mut ours, mut server) = (Vec::new(), Vec::new());
    let table = Target::Indexed.table();
    for _ in 0..rounds {
        for server_side in [true, false] {
            let mut tx = conn.begin().await?;
            let t = Instant::now();
            if server_side {
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "COPY {table} ({}) FROM '{file}' (FORMAT binary)",
                    load::COPY_COLUMNS
                )))
                .execute(&mut *tx)
                .await
                .context("COPY FROM the server-side file")?;
                server.push(rows.len() as f64 / t.elapsed().as_secs_f64());
            } else {
                let mut copy = tx.copy_in_raw(&copy_in(&table)).await?;
                copy.send(bytes.clone()).await?;
                copy.finish().await?;
                ours.push(rows.len() as f64 / t.elapsed().as_secs_f64());
            }
            tx.rollback().await?;
        }
    }
    let floor = CopyFloor {
        rows: rows.len(),
        rounds,
        ours: crate::bench::median(ours),
        server: crate::bench::median(server),
    };
    eprintln!(
        "hnsw_insert: binary COPY of {} rows into the indexed table: capbench {:.0} vectors/s, the server's COPY FROM a file {:.0} vectors/s (ratio {:.2}, median of {} alternating rounds, rolled back)",
        floor.rows,
        floor.ours,
        floor.server,
        floor.ours / floor.server,
        floor.rounds
    );
    Ok(floor)
}

fn print_summary(o: &Outcome) {
    println!(
        "{:<42} {:>7} {:>12} {:>10} {:>10}",
        "benchmark", "rows", "vectors/s", "p50 ms", "p99 ms"
    );
    for p in &o.passes {
        let l = LatencySummary::of(&p.histogram);
        println!(
            "{:<42} {:>7} {:>12.0} {:>10.2} {:>10.2}",
            p.point.id(),
            p.rows,
            p.vectors_per_second(),
            l.p50_ms,
            l.p99_ms
        );
    }
}

/// The best rate into the indexed table, and the point that reached it.
pub fn best_indexed(passes: &[Pass]) -> Option<&Pass> {
    passes
        .iter()
        .filter(|p| p.point.target == Target::Indexed && p.rows > 0)
        .max_by(|a, b| a.vectors_per_second().total_cmp(&b.vectors_per_second()))
}

async fn write_record(
    config: &Config,
    conn: &mut PgConnection,
    o: &Outcome,
    params: HnswInsertParameters,
) -> Result<RunRecord> {
    let environment = Environment::of_machine().with_postgres(conn).await?;
    let mut rec = RunRecord::new(environment, Parameters::HnswInsert(params));
    rec.dataset = Some(dataset::identity(&config.dataset, &config.index));
    let best = best_indexed(&o.passes).map(|p| p.point);
    for p in &o.passes {
        let mut metrics = LatencySummary::of(&p.histogram).metrics();
        metrics.insert(Metric::Rows, p.rows as f64);
        metrics.insert(Metric::Seconds, p.seconds);
        metrics.insert(Metric::VectorsPerSecond, p.vectors_per_second());
        metrics.insert(Metric::Connections, f64::from(p.point.writers));
        metrics.insert(
            Metric::RowsPerStatement,
            p.point.method.rows_per_statement() as f64,
        );
        let mut gates = Vec::new();
        if Some(p.point) == best {
            gates.push(crate::gates::seeds_insert_rate(
                &format!(
                    "into the indexed table (its fastest method: {} by {} writer{})",
                    p.point.method.as_str(),
                    p.point.writers,
                    if p.point.writers == 1 { "" } else { "s" }
                ),
                Some(p.vectors_per_second()),
            ));
        }
        if let Some(c) = p.pgbench {
            metrics.insert(Metric::InterleavedMeanMs, c.ours_ms);
            metrics.insert(Metric::PgbenchLatencyAvgMs, c.theirs_ms);
            metrics.insert(Metric::PgbenchTps, c.theirs_rate);
            metrics.insert(Metric::RatioVsPgbench, c.ratio);
            gates.extend(crate::bench::pgbench_agreement_gates(c.ratio));
        }
        rec.results.push(ResultEntry {
            name: p.point.id(),
            metrics,
            histogram: Some(record::encode_histogram(&p.histogram)?),
            gates,
            ..ResultEntry::default()
        });
    }
    if let Some(f) = o.copy_floor {
        rec.results.push(ResultEntry {
            name: COPY_FLOOR_ID.into(),
            metrics: [
                (Metric::Rows, f.rows as f64),
                (Metric::Count, f.rounds as f64),
                (Metric::VectorsPerSecond, f.ours),
                (Metric::ServerCopyVectorsPerSecond, f.server),
                (Metric::RatioVsServerCopy, f.ours / f.server),
            ]
            .into(),
            ..ResultEntry::default()
        });
    }
    rec.results.push(ResultEntry {
        name: RESTORE_ID.into(),
        metrics: [
            (Metric::Rows, o.restored.rows as f64),
            (Metric::DeleteSeconds, o.delete_seconds),
            (Metric::VacuumSeconds, o.restored.vacuum_seconds),
        ]
        .into(),
        ..ResultEntry::default()
    });
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> BenchArgs {
        let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        BenchArgs::parse(&v).unwrap()
    }

    #[test]
    fn it_runs_when_named_or_in_a_plain_cargo_bench_not_for_cargo_bench_hnsw() {
        let mut cfg = Config::from_env().unwrap();
        cfg.bench.insert_writers = vec![4, 1, 2, 1];
        let all = plan(&args(&["b"]), &cfg);
        assert_eq!(all.len(), 3 * 3 * 2, "writers × methods × targets");
        assert_eq!(all[0].id(), "hnsw_insert/insert/indexed/writers=1");
        assert_eq!(
            all.last().unwrap().id(),
            "hnsw_insert/copy/unindexed/writers=4"
        );
        assert!(plan(&args(&["b", "hnsw"]), &cfg).is_empty());
        assert!(plan(&args(&["b", "variants"]), &cfg).is_empty());
        assert_eq!(plan(&args(&["b", "hnsw_insert"]), &cfg).len(), 18);
        let copy = plan(&args(&["b", "hnsw_insert/copy/indexed"]), &cfg);
        assert_eq!(copy.len(), 3);
        assert!(
            copy.iter()
                .all(|p| p.method == Method::Copy && p.target == Target::Indexed)
        );
    }

    #[test]
    fn the_insert_binds_every_row_in_order_and_pgbench_inserts_the_same_columns() {
        let sql = insert_sql("t", 2);
        assert!(sql.starts_with(&format!("INSERT INTO t ({INSERT_COLUMNS}) VALUES ($1, $2")));
        assert!(sql.ends_with("$25, $26)"), "{sql}");
        assert_eq!(INSERT_COLUMNS.split(", ").count(), INSERT_PARAMS);
        let script = pgbench_insert_script(200);
        assert!(script.starts_with("\\set n random(0, 199)\n"), "{script}");
        assert!(script.contains(&format!(
            "({INSERT_COLUMNS}) SELECT gen_random_uuid(), title,"
        )));
        assert!(script.contains("WHERE n = :n;"));
    }

    #[test]
    fn the_gate_goes_to_the_fastest_point_into_the_indexed_table() {
        let pass = |method, target, writers, rows, seconds| Pass {
            point: Point {
                method,
                target,
                writers,
            },
            rows,
            seconds,
            histogram: record::latency_histogram(),
            pgbench: None,
        };
        let passes = [
            pass(Method::Copy, Target::Unindexed, 1, 2000, 0.5),
            pass(Method::Copy, Target::Indexed, 2, 2000, 2.0),
            pass(Method::Insert, Target::Indexed, 1, 400, 2.0),
        ];
        let best = best_indexed(&passes).unwrap();
        assert_eq!(best.point.writers, 2);
        assert_eq!(best.vectors_per_second(), 1000.0);
        assert!(best_indexed(&passes[..1]).is_none());
    }
}
