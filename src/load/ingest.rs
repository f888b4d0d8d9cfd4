//! Writes beside the searches: the database target's INSERTs at a fixed rate (`load --target db
//! --write-rate 50/s`), and the write table a read/write run works on.
//!
//! A run that writes never touches `public.traces`: the database target and the in-process service
//! both work on the write table `capbench_writes.traces` (a copy of the dataset with the same HNSW
//! index, [`crate::db::writes`]), and every row the run added is deleted afterwards and the copy
//! VACUUMed ([`restore`]), timed and checked. The rows users wrote through a service are out of
//! reach; the dataset the read benches measure stays as generated.
//!
//! The INSERTs follow a schedule of their own (the open model's, whatever the searches' model):
//! statement *j* of `--write-batch` rows is due at *j* × batch / rate after the start, sent by writer
//! *j* mod `--writers` on its own connection, its latency counted from when it was due — a writer
//! that falls behind shows it in its latency instead of silently writing less. The rows are the
//! dataset generator's rows after the dataset's own (the same distribution, deterministic),
//! generated before the clock. With `--recall`, every search is scored against the table as it
//! stood when the search was sent: [`LiveTruth`], the stored truth merged with the rows committed
//! so far.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use super::failure::Failure;
use super::model::Ending;
use super::recall::Scorer;
use super::scenario::Sink;
use super::stats::RequestOutcome;
use crate::config::{Config, DatasetParams};
use crate::dataset::Dataset;
use crate::db::truth::LiveTruth;
use crate::db::writes::{self, Row};

/// The request name of the database target's INSERTs.
pub const INSERT_NAME: &str = "insert_sql";

/// Whether `e` is the database target's INSERTs (on their own schedule, not the arrivals').
pub fn is_insert(e: &super::stats::Entry) -> bool {
    e.method == "SQL" && e.name == INSERT_NAME
}

/// The most rows a run may plan to write (`--write-rate` × `--run-time`): they are generated, and
/// held, before the clock starts.
pub const MAX_PLANNED_ROWS: u64 = 200_000;

/// The table the INSERTs name.
fn table() -> String {
    format!("{}.traces", writes::SCHEMA)
}

/// How many rows a run writing `rate` rows/s in statements of `batch` for `run_time` plans: whole
/// statements, enough for the whole run.
pub fn planned_rows(rate: f64, batch: usize, run_time: Duration) -> u64 {
    let statements = (rate * run_time.as_secs_f64() / batch as f64).ceil() as u64;
    statements.max(1) * batch as u64
}

/// The writes of a run on the database target, ready before the clock.
pub struct WritePlan {
    /// Rows per second.
    pub rate: f64,
    /// Rows per INSERT.
    pub batch: usize,
    pub writers: usize,
    /// The rows to write, in order.
    pub rows: Vec<Row>,
    /// The table as the searches see it (with `--recall`): the dataset and the rows committed so
    /// far.
    pub live: Option<LiveTruth>,
    /// The dataset's rows in the write table before the run.
    pub dataset_rows: u64,
    /// The writers' connections, opened before the clock; taken when the run starts.
    connections: Mutex<Vec<PgConnection>>,
}

impl WritePlan {
    /// INSERT statements planned.
    pub fn statements(&self) -> usize {
        self.rows.len().div_ceil(self.batch)
    }

    /// When statement `j` is due, after the start.
    pub fn due(&self, j: usize) -> Duration {
        due(self.rate, self.batch, j)
    }

    /// The rows statement `j` writes.
    pub fn rows_of(&self, j: usize) -> Range<usize> {
        let start = j * self.batch;
        start..(start + self.batch).min(self.rows.len())
    }
}

/// When statement `j` of `batch` rows is due at `rate` rows/s, after the start.
pub fn due(rate: f64, batch: usize, j: usize) -> Duration {
    Duration::from_secs_f64(j as f64 * batch as f64 / rate)
}

/// What `load --write-rate` asks for.
#[derive(Debug, Clone, Copy)]
pub struct WriteArgs {
    pub rate: f64,
    pub batch: usize,
    pub writers: usize,
    pub run_time: Duration,
    /// The writers' statement timeout (`--timeout`).
    pub timeout: Duration,
}

/// The write table of the dataset loaded at `url` (described by `loaded`), made ready: built when
/// there is none for this dataset (the HNSW build, once), rows an earlier run left removed.
pub async fn write_table(
    config: &Config,
    url: &str,
    loaded: &DatasetParams,
) -> Result<writes::WriteTable> {
    let mut conn = crate::db::connect(url).await?;
    let fingerprint: String = sqlx::query_scalar("SELECT fingerprint FROM capacity_meta")
        .fetch_one(&mut conn)
        .await
        .context("reading the dataset's fingerprint")?;
    let mut cfg = config.clone();
    cfg.dataset = loaded.clone();
    let table = writes::ensure(&mut conn, &cfg, &fingerprint, loaded.rows).await?;
    if table.built_now {
        eprintln!(
            "load: built the write table {}.traces (HNSW in {:.1} s)",
            writes::SCHEMA,
            table.build_seconds
        );
    }
    if let Some(r) = table.restored {
        eprintln!(
            "load: removed {} rows an earlier run had left in the write table (VACUUM {:.1} s)",
            r.rows, r.vacuum_seconds
        );
    }
    if let Some((_, seconds)) = table.reindexed {
        eprintln!("load: the write table's HNSW index rebuilt in {seconds:.1} s");
    }
    conn.close().await.ok();
    Ok(table)
}

/// The writes of a run on the database target at `url`: the write table made ready, the rows
/// generated, the writers' connections opened and, with `scorer`, the live truth of its queries.
pub async fn prepare(
    config: &Config,
    url: &str,
    loaded: &DatasetParams,
    scorer: Option<&Scorer>,
    args: WriteArgs,
) -> Result<WritePlan> {
    let planned = planned_rows(args.rate, args.batch, args.run_time);
    if planned > MAX_PLANNED_ROWS {
        bail!(
            "--write-rate {} rows/s for {} plans {planned} rows: at most {MAX_PLANNED_ROWS} (they are generated before the run); lower the rate or the run time",
            args.rate,
            humantime::format_duration(args.run_time)
        );
    }
    let table = write_table(config, url, loaded).await?;
    let mut connections = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        let mut conn = writes::session(url).await?;
        sqlx::query("SELECT set_config('statement_timeout', $1, false)")
            .bind(format!("{}ms", args.timeout.as_millis().max(1)))
            .execute(&mut conn)
            .await
            .context("setting the writers' statement timeout")?;
        connections.push(conn);
    }
    let writer = writes::writer(&mut connections[0]).await?;
    let t = Instant::now();
    let dataset = Dataset::new(loaded.clone());
    let first = loaded.rows;
    let queries: Option<(Vec<Vec<f32>>, crate::db::truth::GroundTruth)> = scorer.map(|s| {
        (
            s.vectors().iter().map(|v| v.as_slice().to_vec()).collect(),
            s.truth().clone(),
        )
    });
    let (rows, live) = tokio::task::spawn_blocking(move || {
        let rows: Vec<Row> = (first..first + planned)
            .into_par_iter()
            .map(|i| Row::for_insert(dataset.row(i), writer))
            .collect();
        let live = queries.map(|(vectors, base)| {
            let inserted: Vec<&[f32]> = rows.iter().map(|r| r.embedding.as_slice()).collect();
            let ids = rows.iter().map(|r| r.id).collect();
            LiveTruth::new(&vectors, base, ids, &inserted, &vec![None; rows.len()])
        });
        (rows, live)
    })
    .await
    .context("generating the rows to write")?;
    eprintln!(
        "load: {planned} rows to write at {} rows/s ({} per INSERT, {} writer{}) into {}.traces, generated{} in {:.1} s",
        args.rate,
        args.batch,
        args.writers,
        if args.writers == 1 { "" } else { "s" },
        writes::SCHEMA,
        if live.is_some() {
            " and the truth of the scored queries over them prepared"
        } else {
            ""
        },
        t.elapsed().as_secs_f64()
    );
    Ok(WritePlan {
        rate: args.rate,
        batch: args.batch,
        writers: args.writers,
        rows,
        live,
        dataset_rows: table.rows,
        connections: Mutex::new(connections),
    })
}

/// Starts the writers of `plan` at `start`: each sends its statements when due until `deadline`,
/// the request bound or a stop, recording every one in `sink`.
pub fn spawn<S: Sink + Send + Sync + 'static>(
    plan: &Arc<WritePlan>,
    sink: Arc<S>,
    start: Instant,
    deadline: Instant,
    stop: watch::Receiver<Option<Ending>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let connections =
        std::mem::take(&mut *plan.connections.lock().unwrap_or_else(|e| e.into_inner()));
    let writers = connections.len();
    connections
        .into_iter()
        .enumerate()
        .map(|(w, conn)| {
            let (plan, sink, stop) = (plan.clone(), sink.clone(), stop.clone());
            tokio::spawn(write_steadily(
                plan, w, writers, conn, sink, start, deadline, stop,
            ))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn write_steadily<S: Sink>(
    plan: Arc<WritePlan>,
    w: usize,
    of: usize,
    mut conn: PgConnection,
    sink: Arc<S>,
    start: Instant,
    deadline: Instant,
    mut stop: watch::Receiver<Option<Ending>>,
) {
    let full_batch = writes::insert_sql(&table(), plan.batch);
    let name: Arc<str> = Arc::from(INSERT_NAME);
    let mut j = w;
    while j < plan.statements() {
        let due = start + plan.due(j);
        if due >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.wait_for(Option::is_some) => break,
        }
        if !sink.admit() {
            break;
        }
        let range = plan.rows_of(j);
        let sql = if range.len() == plan.batch {
            full_batch.clone()
        } else {
            writes::insert_sql(&table(), range.len())
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in &plan.rows[range.clone()] {
            q = writes::bind_row(q, r, r.id);
        }
        let sent = Instant::now();
        let result = q.execute(&mut conn).await;
        let done = Instant::now();
        let (failure, rows) = match result {
            Ok(_) => {
                // Present from now on: the statement has committed.
                if let Some(live) = &plan.live {
                    for e in range.clone() {
                        live.set(e, LiveTruth::V0);
                    }
                }
                (None, range.len() as u64)
            }
            Err(e) => (Some(Failure::Database(crate::one_line(&e.into()))), 0),
        };
        sink.record(&RequestOutcome {
            method: "SQL",
            name: name.clone(),
            intended: due.min(sent),
            sent,
            done,
            status: None,
            failure,
            bytes: 0,
            recall: None,
            rows,
        });
        j += of;
    }
    conn.close().await.ok();
}

/// What the write table's restore after a run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restore {
    pub rows: u64,
    pub delete_seconds: f64,
    pub vacuum_seconds: f64,
}

/// After a run that wrote: every row it added to the write table at `url` deleted and the table
/// VACUUMed, then checked — the dataset's `dataset_rows` rows there, nothing else.
pub async fn restore(url: &str, dataset_rows: u64) -> Result<Restore> {
    let mut conn = crate::db::connect(url).await?;
    let t = Instant::now();
    let restored = writes::restore(&mut conn).await?;
    let delete_seconds = t.elapsed().as_secs_f64() - restored.vacuum_seconds;
    let left = writes::dataset_rows(&mut conn).await?;
    let added = writes::written_rows(&mut conn).await?;
    conn.close().await.ok();
    if left != dataset_rows || added != 0 {
        bail!(
            "the write table holds {left} dataset rows and {added} added ones after its restore, not {dataset_rows} and 0"
        );
    }
    Ok(Restore {
        rows: restored.rows,
        delete_seconds,
        vacuum_seconds: restored.vacuum_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_covers_the_run_in_whole_statements() {
        // 50 rows/s for 10 s: 500 rows, in single rows or batches of 20 (25 statements).
        assert_eq!(planned_rows(50.0, 1, Duration::from_secs(10)), 500);
        assert_eq!(planned_rows(50.0, 20, Duration::from_secs(10)), 500);
        // 7 rows/s for 1 s in batches of 5: 2 statements (the second due at 0.71 s), 10 rows.
        assert_eq!(planned_rows(7.0, 5, Duration::from_secs(1)), 10);
        // Never nothing: one statement even for a run shorter than one interval.
        assert_eq!(planned_rows(1.0, 10, Duration::from_millis(100)), 10);
        // Statement j of 20 rows at 50 rows/s is due every 0.4 s.
        assert_eq!(due(50.0, 20, 0), Duration::ZERO);
        assert_eq!(due(50.0, 20, 3), Duration::from_millis(1200));
        assert!((due(7.0, 5, 1).as_secs_f64() - 5.0 / 7.0).abs() < 1e-9);
    }
}
