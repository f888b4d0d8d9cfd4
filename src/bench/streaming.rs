//! `cargo bench streaming`: search latency and recall while the table changes under it, after
//! VectorDBBench's streaming case and big-ann-benchmarks' streaming track. On the write table
//! ([`writes`]: a copy of the dataset with its key, tags and HNSW indexes), searches run at a fixed
//! rate from start to end (an open model: each timed from when it was due, so a stall shows as
//! latency), while the bench moves through its phases:
//!
//! 1. `before`: the dataset alone, no writes;
//! 2. `ingest/+10%`, `ingest/+50%`, …: new rows of the dataset's generator inserted at a fixed rate
//!    (`CAPBENCH_STREAM_INSERT_RATE`, multi-row INSERTs by `CAPBENCH_STREAM_WRITERS` connections)
//!    until the table holds each stage's share more;
//! 3. `after_ingest`: the grown table, no writes;
//! 4. `deleting`, `deleted`, `vacuum`, `vacuumed`: a share of the grown table deleted, searched
//!    before VACUUM, during it and after it (VACUUM timed);
//! 5. `updating`, `updated`, `update_vacuum`, `update_vacuumed`: a share re-embedded (UPDATE of the
//!    embedding to a new vector), likewise.
//!
//! Every search is scored for recall@k against the exact top-k of the table as it stood when the
//! search was sent ([`LiveTruth`]: the dataset's stored truth merged with the rows the bench wrote,
//! which it knows). Deletes and updates touch only rows the bench inserted, spread over them, so
//! the dataset's own rows are never changed and the copy returns to the dataset by deleting the
//! bench's rows and VACUUMing (timed, and checked).

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use pgvector::Vector;
use rayon::prelude::*;
use sqlx::{Connection, PgConnection};

use crate::bench::hnsw_insert::{self, Row};
use crate::bench::{BenchArgs, LatencySummary};
use crate::config::Config;
use crate::dataset::{self, Dataset};
use crate::db::truth::LiveTruth;
use crate::db::{self, search, writes};
use crate::record::{
    self, Environment, Metric, Parameters, ResultEntry, RunRecord, StreamingParameters,
};

const GROUP: &str = "streaming";

/// The entries besides the phases: the time series, and the restore.
pub const TIMELINE_ID: &str = "streaming/timeline";
pub const RESTORE_ID: &str = "streaming/restore";

/// Rows per DELETE and per re-embedding UPDATE.
const DELETE_BATCH: usize = 500;
const UPDATE_BATCH: usize = 100;

/// The phase index while the truth is checked between phases: searches go on, unrecorded.
const CHECKING: usize = usize::MAX;

/// Queries whose live truth is checked against an exact scan after each kind of change.
const CHECKED_QUERIES: usize = 5;

/// Statements per second the inserts aim at: the rows per INSERT follow from the rate.
const INSERTS_PER_SECOND: u32 = 20;

/// One phase of the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Before,
    /// Inserting until the table holds `percent` % of the dataset more.
    Ingest {
        percent: f64,
    },
    AfterIngest,
    Deleting,
    Deleted,
    Vacuum,
    Vacuumed,
    Updating,
    Updated,
    UpdateVacuum,
    UpdateVacuumed,
}

impl Phase {
    /// `streaming/ingest/+10%`.
    pub fn id(&self) -> String {
        let slug = match self {
            Phase::Before => "before".to_string(),
            Phase::Ingest { percent } => format!("ingest/+{}%", percent_text(*percent)),
            Phase::AfterIngest => "after_ingest".into(),
            Phase::Deleting => "deleting".into(),
            Phase::Deleted => "deleted".into(),
            Phase::Vacuum => "vacuum".into(),
            Phase::Vacuumed => "vacuumed".into(),
            Phase::Updating => "updating".into(),
            Phase::Updated => "updated".into(),
            Phase::UpdateVacuum => "update_vacuum".into(),
            Phase::UpdateVacuumed => "update_vacuumed".into(),
        };
        format!("{GROUP}/{slug}")
    }

    /// What the table was going through.
    pub fn describe(&self) -> String {
        match self {
            Phase::Before => "the dataset alone, no writes".into(),
            Phase::Ingest { percent } => format!(
                "inserting at the stated rate until the table holds {} % more rows",
                percent_text(*percent)
            ),
            Phase::AfterIngest => "the grown table, no writes".into(),
            Phase::Deleting => "deleting rows".into(),
            Phase::Deleted => "rows deleted, before VACUUM".into(),
            Phase::Vacuum => "during VACUUM after the deletes".into(),
            Phase::Vacuumed => "after VACUUM".into(),
            Phase::Updating => "re-embedding rows (UPDATE of the embedding)".into(),
            Phase::Updated => "rows re-embedded, before VACUUM".into(),
            Phase::UpdateVacuum => "during VACUUM after the updates".into(),
            Phase::UpdateVacuumed => "after VACUUM".into(),
        }
    }

    /// Whether the phase lasts a fixed window (no writes), rather than as long as its work.
    fn is_window(&self) -> bool {
        matches!(
            self,
            Phase::Before
                | Phase::AfterIngest
                | Phase::Deleted
                | Phase::Vacuumed
                | Phase::Updated
                | Phase::UpdateVacuumed
        )
    }
}

/// `10`, `12.5`.
fn percent_text(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p}")
    }
}

/// What the run will do, from the configuration alone (checked before anything starts).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The dataset's rows.
    pub rows: u64,
    pub phases: Vec<Phase>,
    /// Extra rows in the table at the end of each stage (cumulative).
    pub stage_rows: Vec<usize>,
    /// Extra rows the bench deletes, and re-embeds (indices into the extra rows).
    pub deleted: Vec<usize>,
    pub updated: Vec<usize>,
    pub insert_rate: u32,
    pub writers: u32,
    pub insert_batch: usize,
    pub search_rate: u32,
    pub ef_search: u32,
    /// Each no-write phase's length, and the timeline's bucket.
    pub window: Duration,
    pub bucket: Duration,
}

impl Plan {
    /// The extra rows the stages insert.
    pub fn extra(&self) -> usize {
        self.stage_rows.last().copied().unwrap_or(0)
    }

    pub fn of(config: &Config) -> Result<Plan> {
        let b = &config.bench;
        let rows = config.dataset.rows;
        let stages = &b.stream_stages;
        if stages.is_empty() {
            bail!(
                "CAPBENCH_STREAM_STAGES is empty: give at least one share of the dataset to insert (`10%,50%`)"
            );
        }
        if stages.windows(2).any(|w| w[1] <= w[0]) {
            bail!(
                "CAPBENCH_STREAM_STAGES must be ascending, each above the last (got {})",
                stages
                    .iter()
                    .map(|p| format!("{}%", percent_text(*p)))
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        let stage_rows: Vec<usize> = stages
            .iter()
            .map(|p| ((rows as f64) * p / 100.0).round() as usize)
            .collect();
        if stage_rows[0] == 0 || stage_rows.windows(2).any(|w| w[1] == w[0]) {
            bail!(
                "CAPBENCH_STREAM_STAGES: at {rows} rows a stage of {}% inserts no row more than the one before it",
                percent_text(
                    stages[stage_rows
                        .windows(2)
                        .position(|w| w[1] == w[0])
                        .map_or(0, |i| i + 1)]
                )
            );
        }
        let extra = *stage_rows.last().expect("a stage");
        let grown = rows as usize + extra;
        let share = |p: f64| ((grown as f64) * p / 100.0).round() as usize;
        let (d, u) = (share(b.stream_delete), share(b.stream_update));
        if d + u > extra {
            bail!(
                "CAPBENCH_STREAM_DELETE and CAPBENCH_STREAM_UPDATE ask for {d} + {u} rows of the grown table ({grown} rows), \
                 more than the {extra} rows the stages insert: the streaming bench changes only rows it inserted — \
                 raise the last stage (CAPBENCH_STREAM_STAGES) or lower the shares"
            );
        }
        let deleted = spread(extra, d);
        let kept: Vec<usize> = {
            let mut is_deleted = vec![false; extra];
            for &e in &deleted {
                is_deleted[e] = true;
            }
            (0..extra).filter(|&e| !is_deleted[e]).collect()
        };
        let updated = spread(kept.len(), u).into_iter().map(|i| kept[i]).collect();
        let mut phases = vec![Phase::Before];
        phases.extend(stages.iter().map(|&percent| Phase::Ingest { percent }));
        phases.push(Phase::AfterIngest);
        if d > 0 {
            phases.extend([
                Phase::Deleting,
                Phase::Deleted,
                Phase::Vacuum,
                Phase::Vacuumed,
            ]);
        }
        if u > 0 {
            phases.extend([
                Phase::Updating,
                Phase::Updated,
                Phase::UpdateVacuum,
                Phase::UpdateVacuumed,
            ]);
        }
        let insert_rate = b
            .stream_insert_rate
            .unwrap_or(if b.quick { 1000 } else { 200 });
        let quick = b.quick;
        Ok(Plan {
            rows,
            phases,
            stage_rows,
            deleted,
            updated,
            insert_rate,
            writers: b.stream_writers,
            insert_batch: (insert_rate / INSERTS_PER_SECOND).clamp(1, 100) as usize,
            search_rate: b.stream_search_rate,
            ef_search: b.stream_ef_search,
            window: Duration::from_secs(if quick { 3 } else { 20 }),
            bucket: Duration::from_secs(if quick { 1 } else { 5 }),
        })
    }

    /// Searches in one window without writes (at least one).
    pub fn queries_per_window(&self) -> usize {
        ((self.window.as_secs_f64() * f64::from(self.search_rate)) as usize).max(1)
    }

    /// The longest an ingest stage of `rows` rows may take: three times its planned time, and a
    /// minute more. A stage that reaches it stops there and says how many rows it inserted.
    fn stage_bound(&self, rows: usize) -> Duration {
        Duration::from_secs_f64(rows as f64 / f64::from(self.insert_rate) * 3.0 + 60.0)
    }
}

/// `count` indices spread evenly over `0..n` (distinct when `count <= n`).
pub fn spread(n: usize, count: usize) -> Vec<usize> {
    (0..count).map(|i| i * n / count.max(1)).collect()
}

/// Search figures of one phase, or one bucket of the timeline.
#[derive(Debug, Clone)]
pub struct Searches {
    /// Latency from when each search was due (ns).
    pub histogram: Histogram<u64>,
    pub recall_sum: f64,
    pub recall_min: f64,
    pub scored: u64,
    pub failures: u64,
    pub first_failure: Option<String>,
}

impl Default for Searches {
    fn default() -> Self {
        Self {
            histogram: record::latency_histogram(),
            recall_sum: 0.0,
            recall_min: f64::INFINITY,
            scored: 0,
            failures: 0,
            first_failure: None,
        }
    }
}

impl Searches {
    pub fn recall_mean(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.recall_sum / self.scored as f64)
    }

    fn add(&mut self, latency_ns: u64, recall: Result<f64, String>) {
        self.histogram.saturating_record(latency_ns.max(1));
        match recall {
            Ok(r) => {
                self.recall_sum += r;
                self.recall_min = self.recall_min.min(r);
                self.scored += 1;
            }
            Err(e) => {
                self.failures += 1;
                self.first_failure.get_or_insert(e);
            }
        }
    }
}

/// One phase as it ran.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    pub phase: Phase,
    /// When it started (s after the first search was due) and how long it lasted.
    pub started: f64,
    pub seconds: f64,
    pub searches: Searches,
    /// Rows in the table at its end (the dataset's and the bench's).
    pub table_rows: u64,
    /// Rows it inserted, deleted or re-embedded.
    pub changed: u64,
    /// Its write statements' latency (ns), for the phases that write.
    pub writes: Option<Histogram<u64>>,
    /// The VACUUM's time, for the VACUUM phases.
    pub vacuum_seconds: Option<f64>,
    /// Rows its stage meant to insert and did not (its bound reached).
    pub shortfall: u64,
}

impl PhaseOutcome {
    /// Rows changed per second of the phase (the ingest phases' insert rate).
    pub fn changed_per_second(&self) -> f64 {
        self.changed as f64 / self.seconds.max(1e-9)
    }
}

/// One bucket of the timeline.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub searches: Searches,
    pub table_rows: u64,
}

/// What the bench did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub plan: Plan,
    pub phases: Vec<PhaseOutcome>,
    pub timeline: Vec<Bucket>,
    /// The held-out queries scored, and k.
    pub queries: usize,
    pub k: usize,
    pub restored: writes::Restored,
    pub delete_seconds: f64,
    /// The copy's dataset rows after restoring it.
    pub dataset_rows: u64,
}

pub type RunOutcome = crate::bench::RunOutcome<Outcome>;

/// `benches/streaming.rs`'s main.
pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// Whether `args` select the bench: by name, or a plain `cargo bench`.
pub fn selected(args: &BenchArgs) -> bool {
    args.runs_everything() || args.names(GROUP)
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    // Not selected (`cargo bench hnsw`): nothing is read, not even its own settings.
    if !selected(&bench_args) {
        return Ok(RunOutcome::NotSelected);
    }
    let plan = Plan::of(&config)?;
    let ids: Vec<String> = plan.phases.iter().map(Phase::id).collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    config.index.validate()?;
    let rt = crate::current_thread_runtime()?;
    rt.block_on(async {
        let url = crate::bench::database(&config, GROUP).await?;
        if bench_args.test {
            return Ok(RunOutcome::Ran(Vec::new()));
        }
        let (outcome, table) = execute(&config, &url, &plan).await?;
        print_summary(&outcome);
        let params = StreamingParameters {
            rows: config.dataset.rows,
            dims: config.dataset.dims,
            m: config.index.m,
            ef_construction: config.index.ef_construction,
            stages: config.bench.stream_stages.clone(),
            insert_rate: plan.insert_rate,
            writers: plan.writers,
            insert_batch: plan.insert_batch,
            search_rate: plan.search_rate,
            ef_search: plan.ef_search,
            k: outcome.k,
            queries: outcome.queries,
            delete_percent: config.bench.stream_delete,
            update_percent: config.bench.stream_update,
            window_seconds: plan.window.as_secs_f64(),
            build_seconds: table.build_seconds,
            leftovers: table.restored.map_or(0, |r| r.rows),
            quick: config.bench.quick,
        };
        let mut conn = db::connect(&url).await?;
        let record = write_record(&config, &mut conn, &outcome, params).await?;
        crate::report::publish(&record, args)?;
        let failures: u64 = outcome.phases.iter().map(|p| p.searches.failures).sum();
        if failures > 0 {
            let first = outcome
                .phases
                .iter()
                .find_map(|p| p.searches.first_failure.clone())
                .unwrap_or_default();
            bail!("{failures} searches failed during the streaming bench (the record has them); the first: {first}");
        }
        Ok(RunOutcome::Ran(vec![outcome]))
    })
}

/// Everything the searchers and the writers share.
struct Shared {
    start: Instant,
    phase: AtomicUsize,
    stop: AtomicBool,
    cursor: AtomicU64,
    table_rows: AtomicU64,
    bucket: Duration,
    phases: Mutex<Vec<Searches>>,
    timeline: Mutex<Vec<Bucket>>,
}

/// The run on the database at `url` (its dataset and ground truth in place): the write table
/// ensured, the rows generated and the truth prepared, the phases run under a steady search load,
/// then the table restored (whatever happened) and checked.
pub async fn execute(
    config: &Config,
    url: &str,
    plan: &Plan,
) -> Result<(Outcome, writes::WriteTable)> {
    let mut conn = db::connect(url).await?;
    let fingerprint: String = sqlx::query_scalar("SELECT fingerprint FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .context("reading the dataset's fingerprint")?;
    let (truths, computed) = crate::setup::ensure_truth(config, url).await?;
    if let Some(s) = computed {
        eprintln!("streaming: ground truth computed in {s:.1} s");
    }
    let table = writes::ensure(&mut conn, config, &fingerprint, config.dataset.rows).await?;
    if let Some(r) = table.restored {
        eprintln!(
            "streaming: removed {} rows an earlier run had left in the write table (VACUUM {:.1} s)",
            r.rows, r.vacuum_seconds
        );
    }
    let writer = writes::writer(&mut conn).await?;
    let (set, base) = truths.heldout();
    let k = base.k;
    // As many queries as a window sends, so that each phase without writes scores each once.
    let n = plan.queries_per_window().min(set.vectors.len());
    let queries: Vec<Vector> = set.vectors[..n].iter().cloned().map(Vector::from).collect();
    let base = crate::db::truth::GroundTruth {
        k: base.k,
        ids: base.ids[..n].to_vec(),
        distances: base.distances[..n].to_vec(),
    };
    // The rows to insert (rows n, n + 1, … of the generator) and the re-embedded vectors (rows
    // after those), generated and scored against every query before the clock starts.
    let t = Instant::now();
    let dataset = Dataset::new(config.dataset.clone());
    let extra = plan.extra();
    let first = plan.rows;
    let (updated, vectors) = (plan.updated.clone(), set.vectors[..n].to_vec());
    let (rows, new_vectors, live) = tokio::task::spawn_blocking(move || {
        let rows: Vec<Row> = (first..first + extra as u64)
            .into_par_iter()
            .map(|i| Row::for_insert(dataset.row(i), writer))
            .collect();
        let mut new_vectors: Vec<Option<Vector>> = vec![None; extra];
        for &e in &updated {
            new_vectors[e] = Some(Vector::from(dataset.vector(first + (extra + e) as u64)));
        }
        let inserted: Vec<&[f32]> = rows.iter().map(|r| r.embedding.as_slice()).collect();
        let reembedded: Vec<Option<&[f32]>> = new_vectors
            .iter()
            .map(|v| v.as_ref().map(Vector::as_slice))
            .collect();
        let ids = rows.iter().map(|r| r.id).collect();
        let live = LiveTruth::new(&vectors, base, ids, &inserted, &reembedded);
        (rows, new_vectors, live)
    })
    .await
    .context("generating the rows to write")?;
    eprintln!(
        "streaming: {extra} rows to insert and {} new embeddings generated, the truth of {} queries over them prepared in {:.1} s",
        plan.updated.len(),
        queries.len(),
        t.elapsed().as_secs_f64()
    );
    // The searchers' sessions, the plan checked on one of them.
    let searchers = plan.search_rate.div_ceil(50).clamp(1, 8);
    let mut sessions = Vec::new();
    for _ in 0..searchers {
        let mut s = writes::session(url).await?;
        search::set_ef_search(&mut s, plan.ef_search, false).await?;
        sessions.push(s);
    }
    let plan_text = search::explain(&mut sessions[0], &queries[0], k as i64).await?;
    if !search::plan_uses_index(&plan_text, crate::db::schema::HNSW_INDEX) {
        bail!(
            "the write table's search does not use its HNSW index: {}",
            search::one_line_plan(&plan_text)
        );
    }
    let shared = Shared {
        start: Instant::now(),
        phase: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        cursor: AtomicU64::new(0),
        table_rows: AtomicU64::new(plan.rows),
        bucket: plan.bucket,
        phases: Mutex::new(vec![Searches::default(); plan.phases.len()]),
        timeline: Mutex::new(Vec::new()),
    };
    let (searched, driven) = tokio::join!(
        futures_util::future::join_all(sessions.iter_mut().enumerate().map(|(i, s)| {
            search_steadily(s, i, searchers as usize, plan, &queries, &live, &shared)
        })),
        async {
            let r = drive(url, plan, &queries, &rows, &new_vectors, &live, &shared).await;
            shared.stop.store(true, Ordering::SeqCst);
            r
        }
    );
    for s in sessions {
        s.close().await.ok();
    }
    // Whatever happened: the write table back to the dataset.
    let t = Instant::now();
    let restored = writes::restore(&mut conn).await?;
    let delete_seconds = t.elapsed().as_secs_f64() - restored.vacuum_seconds;
    let facts = driven?;
    for r in searched {
        r?;
    }
    let dataset_rows = writes::dataset_rows(&mut conn).await?;
    if dataset_rows != plan.rows || writes::written_rows(&mut conn).await? != 0 {
        bail!(
            "the write table holds {dataset_rows} dataset rows after restoring it, not {}",
            plan.rows
        );
    }
    eprintln!(
        "streaming: restored the write table: {} rows deleted in {delete_seconds:.2} s, VACUUM {:.1} s",
        restored.rows, restored.vacuum_seconds
    );
    let searches = shared.phases.into_inner().expect("no searcher panicked");
    let phases = facts
        .into_iter()
        .zip(searches)
        .map(|(f, searches)| PhaseOutcome { searches, ..f })
        .collect();
    let outcome = Outcome {
        plan: plan.clone(),
        phases,
        timeline: shared.timeline.into_inner().expect("no searcher panicked"),
        queries: queries.len(),
        k,
        restored,
        delete_seconds,
        dataset_rows,
    };
    Ok((outcome, table))
}

/// One searcher: its share of the rate, staggered, until the phases end. A search's latency runs
/// from when it was due; its recall is scored against the table as the writers' flags said it
/// stood when it was sent.
async fn search_steadily(
    conn: &mut PgConnection,
    i: usize,
    of: usize,
    plan: &Plan,
    queries: &[Vector],
    live: &LiveTruth,
    shared: &Shared,
) -> Result<()> {
    let interval = Duration::from_secs_f64(of as f64 / f64::from(plan.search_rate));
    let mut due = shared.start + interval.mul_f64(i as f64 / of as f64);
    let k = live.k() as i64;
    while !shared.stop.load(Ordering::SeqCst) {
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        let phase = shared.phase.load(Ordering::SeqCst);
        let q = (shared.cursor.fetch_add(1, Ordering::Relaxed) % queries.len() as u64) as usize;
        let truth = live.now(q);
        let sent = Instant::now();
        let result = search::search(conn, &queries[q], k).await;
        let done = Instant::now();
        let latency = done.duration_since(due.min(sent)).as_nanos() as u64;
        let recall = match result {
            Ok(hits) => {
                let got: Vec<_> = hits.iter().map(|h| (h.id, h.distance)).collect();
                Ok(LiveTruth::score(&truth, &got))
            }
            Err(e) => Err(crate::one_line(&e)),
        };
        if phase == CHECKING {
            due += interval;
            continue;
        }
        let at = done.duration_since(shared.start).as_secs_f64();
        let bucket = (at / shared.bucket.as_secs_f64()) as usize;
        let rows = shared.table_rows.load(Ordering::SeqCst);
        shared.phases.lock().expect("no searcher panicked")[phase].add(latency, recall.clone());
        let mut timeline = shared.timeline.lock().expect("no searcher panicked");
        while timeline.len() <= bucket {
            timeline.push(Bucket {
                searches: Searches::default(),
                table_rows: rows,
            });
        }
        timeline[bucket].searches.add(latency, recall);
        timeline[bucket].table_rows = rows;
        drop(timeline);
        due += interval;
    }
    Ok(())
}

/// The phases, one after the other: what each did (its searches are the searchers').
async fn drive(
    url: &str,
    plan: &Plan,
    queries: &[Vector],
    rows: &[Row],
    new_vectors: &[Option<Vector>],
    live: &LiveTruth,
    shared: &Shared,
) -> Result<Vec<PhaseOutcome>> {
    let mut out = Vec::with_capacity(plan.phases.len());
    let mut conn = writes::session(url).await?;
    let mut inserted = 0usize;
    let mut stage = 0usize;
    for (n, phase) in plan.phases.iter().enumerate() {
        // Every phase from the first query: the phases score the same queries, in the same order.
        shared.cursor.store(0, Ordering::SeqCst);
        shared.phase.store(n, Ordering::SeqCst);
        let t = Instant::now();
        let started = t.duration_since(shared.start).as_secs_f64();
        let mut o = PhaseOutcome {
            phase: phase.clone(),
            started,
            seconds: 0.0,
            searches: Searches::default(),
            table_rows: 0,
            changed: 0,
            writes: None,
            vacuum_seconds: None,
            shortfall: 0,
        };
        match phase {
            p if p.is_window() => tokio::time::sleep(plan.window).await,
            Phase::Ingest { .. } => {
                let to = plan.stage_rows[stage];
                stage += 1;
                let (done, hist) =
                    ingest(url, plan, &rows[inserted..to], inserted, live, shared).await?;
                o.changed = done as u64;
                o.shortfall = (to - inserted - done) as u64;
                if o.shortfall > 0 {
                    eprintln!(
                        "streaming: {}: {} of {} rows inserted before the stage's bound ({:.0} s): the rate was not held",
                        phase.id(),
                        done,
                        to - inserted,
                        plan.stage_bound(to - inserted).as_secs_f64()
                    );
                }
                inserted = to;
                o.writes = Some(hist);
            }
            Phase::Deleting => {
                let (n, hist) = delete(&mut conn, rows, &plan.deleted, live, shared).await?;
                o.changed = n as u64;
                o.writes = Some(hist);
            }
            Phase::Updating => {
                let (n, hist) = reembed(&mut conn, rows, new_vectors, &plan.updated, live).await?;
                o.changed = n as u64;
                o.writes = Some(hist);
            }
            Phase::Vacuum | Phase::UpdateVacuum => {
                o.vacuum_seconds = Some(writes::vacuum(&mut conn).await?);
            }
            _ => unreachable!("every phase is handled"),
        }
        o.seconds = t.elapsed().as_secs_f64();
        o.table_rows = shared.table_rows.load(Ordering::SeqCst);
        eprintln!(
            "streaming: {} ({}): {:.1} s, {} rows in the table{}",
            phase.id(),
            phase.describe(),
            o.seconds,
            o.table_rows,
            match phase {
                Phase::Ingest { .. } => format!(
                    ", {} inserted at {:.0} rows/s (asked {})",
                    o.changed,
                    o.changed_per_second(),
                    plan.insert_rate
                ),
                Phase::Deleting => format!(", {} deleted", o.changed),
                Phase::Updating => format!(", {} re-embedded", o.changed),
                _ => o
                    .vacuum_seconds
                    .map_or_else(String::new, |v| format!(", VACUUM {v:.1} s")),
            }
        );
        out.push(o);
        if matches!(
            phase,
            Phase::AfterIngest | Phase::Vacuumed | Phase::UpdateVacuumed
        ) {
            shared.phase.store(CHECKING, Ordering::SeqCst);
            check_truth(&mut conn, queries, live).await?;
        }
    }
    conn.close().await.ok();
    Ok(out)
}

/// The live truth of the first [`CHECKED_QUERIES`] queries against an exact scan of the table
/// (THE search SQL with index scans off), distance by distance: a mismatch stops the run, since
/// every recall figure rests on it.
async fn check_truth(conn: &mut PgConnection, queries: &[Vector], live: &LiveTruth) -> Result<()> {
    for (q, query) in queries.iter().enumerate().take(CHECKED_QUERIES) {
        let mut tx = conn.begin().await?;
        sqlx::raw_sql("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
            .execute(&mut *tx)
            .await?;
        let exact = search::search(&mut tx, query, live.k() as i64).await?;
        tx.rollback().await?;
        let (_, want) = live.now(q);
        let got: Vec<f64> = exact.iter().map(|h| h.distance).collect();
        if got.len() != want.len()
            || got
                .iter()
                .zip(&want)
                .any(|(a, b)| (a - b).abs() > crate::db::truth::TIE_EPSILON)
        {
            bail!(
                "the streaming bench's ground truth of query {q} disagrees with an exact scan of the table: \
                 {want:?} vs {got:?}"
            );
        }
    }
    Ok(())
}

/// Inserts `rows` (extra rows `first..`) at the plan's rate by its writers, each taking the next
/// INSERT's rows in turn, each INSERT sent when due; a row is flagged present once its INSERT
/// committed. Returns the rows inserted and the INSERTs' latency.
async fn ingest(
    url: &str,
    plan: &Plan,
    rows: &[Row],
    first: usize,
    live: &LiveTruth,
    shared: &Shared,
) -> Result<(usize, Histogram<u64>)> {
    let mut sessions = Vec::new();
    for _ in 0..plan.writers {
        sessions.push(writes::session(url).await?);
    }
    let table = hnsw_insert::Target::Indexed.table();
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + plan.stage_bound(rows.len());
    let per_row = 1.0 / f64::from(plan.insert_rate);
    let results = futures_util::future::join_all(sessions.iter_mut().map(|conn| {
        let (table, next) = (&table, &next);
        async move {
            let mut hist = record::latency_histogram();
            let mut done = 0usize;
            loop {
                let a = next.fetch_add(plan.insert_batch, Ordering::SeqCst);
                if a >= rows.len() {
                    break;
                }
                let b = (a + plan.insert_batch).min(rows.len());
                let due = start + Duration::from_secs_f64(a as f64 * per_row);
                if due >= deadline {
                    break;
                }
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                let chunk = &rows[a..b];
                let mut q = sqlx::query(sqlx::AssertSqlSafe(hnsw_insert::insert_sql(
                    table,
                    chunk.len(),
                )));
                for r in chunk {
                    q = hnsw_insert::bind_row(q, r, r.id);
                }
                let t = Instant::now();
                q.execute(&mut *conn)
                    .await
                    .context("inserting into the write table")?;
                hist.saturating_record(t.elapsed().as_nanos() as u64);
                for e in first + a..first + b {
                    live.set(e, LiveTruth::V0);
                }
                shared
                    .table_rows
                    .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                done += chunk.len();
            }
            anyhow::Ok((done, hist))
        }
    }))
    .await;
    for s in sessions {
        s.close().await.ok();
    }
    let mut hist = record::latency_histogram();
    let mut done = 0;
    for r in results {
        let (n, h) = r?;
        done += n;
        hist.add(&h).context("merging the writers' histograms")?;
    }
    Ok((done, hist))
}

/// The `chosen` extra rows that are in the table now (a stage cut short by its bound leaves some out).
fn in_table(chosen: &[usize], live: &LiveTruth) -> Vec<usize> {
    chosen
        .iter()
        .copied()
        .filter(|&e| live.versions(e) != 0)
        .collect()
}

/// Deletes the `chosen` extra rows that are in the table, [`DELETE_BATCH`] per statement, each
/// flagged absent before its DELETE is sent.
async fn delete(
    conn: &mut PgConnection,
    rows: &[Row],
    chosen: &[usize],
    live: &LiveTruth,
    shared: &Shared,
) -> Result<(usize, Histogram<u64>)> {
    let present = in_table(chosen, live);
    let mut hist = record::latency_histogram();
    for chunk in present.chunks(DELETE_BATCH) {
        let ids: Vec<uuid::Uuid> = chunk.iter().map(|&e| rows[e].id).collect();
        for &e in chunk {
            live.set(e, 0);
        }
        shared
            .table_rows
            .fetch_sub(chunk.len() as u64, Ordering::SeqCst);
        let t = Instant::now();
        let n = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE id = ANY($1)",
            hnsw_insert::Target::Indexed.table()
        )))
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .context("deleting rows of the write table")?
        .rows_affected();
        hist.saturating_record(t.elapsed().as_nanos() as u64);
        if n != chunk.len() as u64 {
            bail!("a DELETE of {} rows deleted {n}", chunk.len());
        }
    }
    Ok((present.len(), hist))
}

/// `UPDATE … SET embedding` of `rows` rows from a VALUES list (`$1, $2` per row: id, vector).
pub fn reembed_sql(table: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("(${}::uuid, ${}::vector)", 2 * r + 1, 2 * r + 2))
        .collect();
    format!(
        "UPDATE {table} AS t SET embedding = v.embedding FROM (VALUES {}) AS v (id, embedding) WHERE t.id = v.id",
        values.join(", ")
    )
}

/// Re-embeds the `chosen` extra rows that are in the table to their new vectors, [`UPDATE_BATCH`]
/// per statement: each row flagged absent before its UPDATE is sent, its new version present once
/// it committed.
async fn reembed(
    conn: &mut PgConnection,
    rows: &[Row],
    new_vectors: &[Option<Vector>],
    chosen: &[usize],
    live: &LiveTruth,
) -> Result<(usize, Histogram<u64>)> {
    let present = in_table(chosen, live);
    let table = hnsw_insert::Target::Indexed.table();
    let mut hist = record::latency_histogram();
    for chunk in present.chunks(UPDATE_BATCH) {
        let sql = reembed_sql(&table, chunk.len());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for &e in chunk {
            let v = new_vectors[e]
                .as_ref()
                .context("a re-embedded row without its new vector")?;
            q = q.bind(rows[e].id).bind(v);
            live.set(e, 0);
        }
        let t = Instant::now();
        let mut tx = conn.begin().await?;
        let n = q
            .execute(&mut *tx)
            .await
            .context("re-embedding rows of the write table")?
            .rows_affected();
        tx.commit().await?;
        hist.saturating_record(t.elapsed().as_nanos() as u64);
        if n != chunk.len() as u64 {
            bail!("an UPDATE of {} rows changed {n}", chunk.len());
        }
        for &e in chunk {
            live.set(e, LiveTruth::V1);
        }
    }
    Ok((present.len(), hist))
}

fn print_summary(o: &Outcome) {
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "phase", "seconds", "rows", "changed", "rows/s", "searches", "p50 ms", "p99 ms", "recall"
    );
    for p in &o.phases {
        let l = LatencySummary::of(&p.searches.histogram);
        println!(
            "{:<34} {:>7.1} {:>9} {:>9} {:>9.0} {:>8} {:>8.2} {:>8.2} {:>8.3}",
            p.phase.id(),
            p.seconds,
            p.table_rows,
            p.changed,
            p.changed_per_second(),
            p.searches.scored,
            l.p50_ms,
            l.p99_ms,
            p.searches.recall_mean().unwrap_or(f64::NAN)
        );
    }
}

async fn write_record(
    config: &Config,
    conn: &mut PgConnection,
    o: &Outcome,
    params: StreamingParameters,
) -> Result<RunRecord> {
    let environment = Environment::of_machine().with_postgres(conn).await?;
    let mut rec = RunRecord::new(environment, Parameters::Streaming(params));
    rec.dataset = Some(dataset::identity(&config.dataset, &config.index));
    for p in &o.phases {
        let s = &p.searches;
        let mut metrics = LatencySummary::of(&s.histogram).metrics();
        metrics.insert(Metric::Seconds, p.seconds);
        metrics.insert(Metric::Rows, p.table_rows as f64);
        metrics.insert(Metric::Failures, s.failures as f64);
        metrics.insert(
            Metric::Qps,
            (s.scored + s.failures) as f64 / p.seconds.max(1e-9),
        );
        if let Some(r) = s.recall_mean() {
            metrics.insert(Metric::RecallMean, r);
            metrics.insert(Metric::RecallMin, s.recall_min);
        }
        if p.writes.is_some() {
            metrics.insert(Metric::ChangedRows, p.changed as f64);
        }
        if let Phase::Ingest { .. } = p.phase {
            metrics.insert(Metric::VectorsPerSecond, p.changed_per_second());
        }
        if let Some(v) = p.vacuum_seconds {
            metrics.insert(Metric::VacuumSeconds, v);
        }
        let mut gates = Vec::new();
        if let Phase::Ingest { percent } = p.phase {
            gates.push(crate::gates::seeds_p99(
                Some(&format!(
                    "while inserting {} rows/s (to +{} %)",
                    o.plan.insert_rate,
                    percent_text(percent)
                )),
                (!s.histogram.is_empty()).then(|| LatencySummary::of(&s.histogram).p99_ms),
            ));
        }
        rec.results.push(ResultEntry {
            name: p.phase.id(),
            metrics,
            histogram: Some(record::encode_histogram(&s.histogram)?),
            gates,
            ..ResultEntry::default()
        });
    }
    let bucket = o.plan.bucket.as_secs_f64();
    let mut series = std::collections::BTreeMap::new();
    let at = |i: usize| (i as f64 + 0.5) * bucket;
    series.insert(
        "p99_ms".to_string(),
        o.timeline
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.searches.histogram.is_empty())
            .map(|(i, b)| (at(i), LatencySummary::of(&b.searches.histogram).p99_ms))
            .collect(),
    );
    series.insert(
        "recall_mean".to_string(),
        o.timeline
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.searches.recall_mean().map(|r| (at(i), r)))
            .collect(),
    );
    series.insert(
        "table_rows".to_string(),
        o.timeline
            .iter()
            .enumerate()
            .map(|(i, b)| (at(i), b.table_rows as f64))
            .collect(),
    );
    series.insert(
        "phase_starts".to_string(),
        o.phases
            .iter()
            .enumerate()
            .map(|(n, p)| (p.started, n as f64))
            .collect(),
    );
    rec.results.push(ResultEntry {
        name: TIMELINE_ID.into(),
        metrics: [(Metric::Seconds, bucket)].into(),
        series,
        ..ResultEntry::default()
    });
    rec.results.push(ResultEntry {
        name: RESTORE_ID.into(),
        metrics: [
            (Metric::ChangedRows, o.restored.rows as f64),
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

    fn config(rows: u64, stages: &[f64], delete: f64, update: f64) -> Config {
        let mut c = Config::from_env().unwrap();
        c.dataset.rows = rows;
        c.bench.stream_stages = stages.to_vec();
        c.bench.stream_delete = delete;
        c.bench.stream_update = update;
        c
    }

    #[test]
    fn the_plan_inserts_each_stage_and_changes_only_rows_it_inserted() {
        let p = Plan::of(&config(100_000, &[10.0, 50.0], 10.0, 5.0)).unwrap();
        assert_eq!(p.stage_rows, [10_000, 50_000]);
        assert_eq!(p.deleted.len(), 15_000, "10 % of the grown 150,000");
        assert_eq!(p.updated.len(), 7_500);
        let mut all: Vec<usize> = p.deleted.iter().chain(&p.updated).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 22_500, "no row is both deleted and re-embedded");
        assert!(all.iter().all(|&e| e < 50_000));
        // Spread over the inserted rows, not the first ones.
        assert!(p.deleted.iter().any(|&e| e > 45_000) && p.deleted.contains(&0));
        let ids: Vec<String> = p.phases.iter().map(Phase::id).collect();
        assert_eq!(
            ids[..4],
            [
                "streaming/before",
                "streaming/ingest/+10%",
                "streaming/ingest/+50%",
                "streaming/after_ingest"
            ]
        );
        assert_eq!(ids.len(), 12);
        assert_eq!(ids.last().unwrap(), "streaming/update_vacuumed");
        assert_eq!(p.insert_batch, 10, "200 rows/s in 20 INSERTs a second");
        // No deletes, no updates: no such phases.
        let q = Plan::of(&config(1000, &[12.5], 0.0, 0.0)).unwrap();
        assert_eq!(q.phases.len(), 3);
        assert_eq!(q.phases[1].id(), "streaming/ingest/+12.5%");
    }

    #[test]
    fn a_plan_that_cannot_run_is_one_line() {
        for (c, want) in [
            (
                config(100_000, &[5.0], 10.0, 0.0),
                "more than the 5000 rows",
            ),
            (config(100_000, &[50.0, 10.0], 0.0, 0.0), "ascending"),
            (config(100_000, &[], 0.0, 0.0), "empty"),
            (config(10, &[1.0], 0.0, 0.0), "inserts no row"),
        ] {
            let e = Plan::of(&c).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn it_runs_when_named_or_in_a_plain_cargo_bench_and_a_bad_plan_stops_only_itself() {
        let args = |list: &[&str]| {
            let v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            BenchArgs::parse(&v).unwrap()
        };
        assert!(selected(&args(&["b"])));
        assert!(selected(&args(&["b", "streaming"])));
        assert!(!selected(&args(&["b", "hnsw"])));
        assert!(!selected(&args(&["b", "hnsw_insert"])));
        // A plan that cannot run does not stop `cargo bench hnsw`.
        let bad = config(100_000, &[5.0], 10.0, 0.0);
        let v: Vec<String> = ["b", "hnsw"].iter().map(|s| s.to_string()).collect();
        assert!(matches!(run(&v, bad), Ok(RunOutcome::NotSelected)));
    }

    #[test]
    fn spread_is_distinct_and_covers_the_range() {
        let s = spread(10, 4);
        assert_eq!(s, [0, 2, 5, 7]);
        assert_eq!(spread(5, 5), [0, 1, 2, 3, 4]);
        assert!(spread(7, 0).is_empty());
    }

    #[test]
    fn the_reembedding_update_binds_an_id_and_a_vector_per_row() {
        let sql = reembed_sql("s.t", 2);
        assert_eq!(
            sql,
            "UPDATE s.t AS t SET embedding = v.embedding FROM (VALUES ($1::uuid, $2::vector), ($3::uuid, $4::vector)) AS v (id, embedding) WHERE t.id = v.id"
        );
    }
}
