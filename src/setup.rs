//! `setup`: the dataset in PostgreSQL — generated, loaded by binary COPY, indexed, analyzed and
//! fingerprinted, all in one transaction (an interrupted run leaves the previous state untouched).
//! A re-run with the same parameters finds the fingerprint and does nothing. Rows capbench did not
//! load (written through the service's API, or by hand) never trigger a rebuild and are carried
//! into a rebuilt table; nothing of theirs is deleted without `--force` and a line saying what.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use sqlx::PgConnection;

use crate::config::Config;
use crate::dataset::{self, CONTRIBUTOR_EMAIL, Dataset};
use crate::db::truth::{self, Case, Truths};
use crate::db::{self, ServerInfo, index, load, schema};
use crate::stack;

mod build;
mod copy_floor;
mod restore;
mod variants;
use build::*;
pub use copy_floor::{RemoveOnDrop, compare_copy_floor};
pub use restore::{RESTORE_COMMAND, Restored, changed_message, changed_rows, restore};
pub use variants::{Ensured, ensure as ensure_variants, lines as variant_lines};

/// Schema the new dataset is built in before it is swapped into the search path's first schema.
const LOAD_SCHEMA: &str = "capbench_load";

/// `cargo run --release --bin setup -- [flags]`
#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Load the capbench dataset (100K deterministic vectors, HNSW index) into PostgreSQL"
)]
pub struct SetupArgs {
    #[command(flatten)]
    pub config: Config,
    /// Rebuild even when the loaded dataset has the same fingerprint; replace a traces table
    /// capbench did not create, and delete rows capbench did not load that cannot move into a
    /// dataset of another --dims (saying so). Accepts true/false, 1/0, yes/no, on/off.
    #[arg(long, env = "CAPBENCH_FORCE", value_parser = crate::config::parse_bool)]
    pub force: bool,
    /// Rewrite the dataset's rows that writes changed since the load (deleted, or updated in what a
    /// search sees: logged in capacity_changes) from the generator, then VACUUM — instead of a
    /// rebuild. Rows written through the API are kept.
    #[arg(long, conflicts_with = "force")]
    pub restore: bool,
    /// Rows per COPY batch (generated in parallel while the previous batch streams).
    #[arg(long, env = "CAPBENCH_COPY_BATCH", default_value_t = 1000)]
    pub copy_batch: u64,
    /// Print `export DATABASE_URL=… REDIS_URL=…` for the servers in use (starting the embedded ones).
    #[arg(long, conflicts_with_all = ["stop", "compare_copy_floor"])]
    pub print_env: bool,
    /// Stop the embedded PostgreSQL and Redis.
    #[arg(long, conflicts_with = "compare_copy_floor")]
    pub stop: bool,
    /// After setup, time the binary COPY load against PostgreSQL's own `COPY … FROM` a
    /// server-side binary file of the same rows (embedded stack only), `--repeat` times each.
    #[arg(long)]
    pub compare_copy_floor: bool,
    /// Index variants to have on the dataset (comma-separated): hnsw (always: the dataset's own),
    /// halfvec, bq (binary quantization + re-rank), ivfflat. Each is built once per dataset and
    /// reused; its build time and size are printed (docs/variants.md).
    #[arg(long = "index", env = "CAPBENCH_INDEX", value_delimiter = ',', default_value = "hnsw",
          value_parser = crate::config::parse_variant)]
    pub indexes: Vec<crate::config::Variant>,
    /// Repetitions of each side of --compare-copy-floor (the median is reported).
    #[arg(long, default_value_t = 3, requires = "compare_copy_floor")]
    pub repeat: u32,
}

/// How `ensure_dataset` should behave.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub force: bool,
    pub copy_batch: u64,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            force: false,
            copy_batch: 1000,
            progress: false,
        }
    }
}

/// What setup measured, stored in `capacity_meta.figures` and printed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Rows of the generated dataset.
    pub rows: u64,
    /// Rows capbench did not load (written through the API or by hand) carried over from the
    /// table the new one replaced.
    #[serde(default)]
    pub kept_rows: u64,
    pub load_seconds: f64,
    pub rows_per_second: f64,
    pub constraints_seconds: f64,
    pub index_seconds: f64,
    pub analyze_seconds: f64,
    pub build_workers: u32,
    pub table_bytes: i64,
    pub index_bytes: i64,
    pub server: ServerInfo,
    pub notices: Vec<String>,
}

impl Figures {
    /// The seeds' pitfall 1: an index larger than shared_buffers is read from disk.
    pub fn index_exceeds_shared_buffers(&self) -> bool {
        self.index_bytes > self.server.shared_buffers_bytes
    }
}

/// The result of `ensure_dataset`.
#[derive(Debug, Clone)]
pub enum DatasetChange {
    /// The dataset with this fingerprint was already loaded; nothing was done.
    Unchanged { fingerprint: String, rows: u64 },
    /// The dataset was (re)built.
    Built {
        fingerprint: String,
        figures: Box<Figures>,
    },
}

/// The `traces` table found on the search path.
struct Traces {
    /// Whether capbench loaded it (`capacity_meta` names its dataset).
    ours: bool,
    /// Dimension of its `embedding` column, when it has one.
    dims: Option<i32>,
    /// Rows of the loaded dataset: the capacity-test contributor's seed rows.
    dataset_rows: u64,
    /// Every other row — written through the service's API or by hand. A rebuild carries them
    /// into the new table (or, under `--force` only, says it deletes them).
    other_rows: u64,
    /// Whether its HNSW index is there and valid.
    indexed: bool,
}

/// What the database holds now, read without changing anything.
struct State {
    traces: Option<Traces>,
    fingerprint: Option<String>,
    /// Dataset rows logged as changed since the load (`capacity_changes`).
    changed: u64,
}

async fn read_state(conn: &mut PgConnection) -> Result<State> {
    let columns: Vec<&str> = load::V1_COLUMNS.split(',').map(str::trim).collect();
    let (traces_exists, dims, shaped, meta_exists, users_exist): (
        bool,
        Option<i32>,
        bool,
        bool,
        bool,
    ) = sqlx::query_as(
        "WITH t AS (SELECT to_regclass(format('%I.traces', current_schema())) AS reg)
         SELECT t.reg IS NOT NULL,
                (SELECT atttypmod FROM pg_attribute
                  WHERE attrelid = t.reg AND attname = 'embedding' AND NOT attisdropped),
                (SELECT count(*) FROM pg_attribute
                  WHERE attrelid = t.reg AND attnum > 0 AND NOT attisdropped
                    AND attname = ANY($1)) = cardinality($1),
                to_regclass('capacity_meta') IS NOT NULL,
                to_regclass('users') IS NOT NULL
         FROM t",
    )
    .bind(&columns)
    .fetch_one(&mut *conn)
    .await
    .context("reading the current dataset state")?;
    let fingerprint: Option<String> = if meta_exists {
        sqlx::query_scalar("SELECT fingerprint FROM capacity_meta WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .context("reading capacity_meta")?
    } else {
        None
    };
    if !traces_exists {
        return Ok(State {
            traces: None,
            fingerprint,
            changed: 0,
        });
    }
    let changed = restore::changed_rows(conn).await?;
    let ours = fingerprint.is_some() && users_exist && shaped;
    let (dataset_rows, other_rows): (i64, i64) = if ours {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE mine), count(*) FILTER (WHERE NOT mine)
             FROM (SELECT coalesce(is_seed AND contributor_id =
                                   (SELECT id FROM users WHERE email = $1 AND is_seed), false) AS mine
                   FROM traces) AS t",
        )
        .bind(CONTRIBUTOR_EMAIL)
        .fetch_one(&mut *conn)
        .await
        .context("counting the rows of traces")?
    } else {
        let all: i64 = sqlx::query_scalar("SELECT count(*) FROM traces")
            .fetch_one(&mut *conn)
            .await
            .context("counting the rows of traces")?;
        (0, all)
    };
    let indexed = is_complete(conn).await?;
    Ok(State {
        traces: Some(Traces {
            ours,
            dims: dims.filter(|&d| d > 0),
            dataset_rows: dataset_rows as u64,
            other_rows: other_rows as u64,
            indexed,
        }),
        fingerprint,
        changed,
    })
}

/// What `ensure_dataset` will do, decided from the state before anything is changed.
enum Plan {
    /// The dataset is loaded and complete.
    Unchanged { rows: u64 },
    /// (Re)build it. With `carry`, the current table is capbench's: the rows of it capbench did not
    /// load move into the new table, under a lock that holds writers off until the swap.
    Build { carry: bool },
    /// Rebuild it under `--force`, deleting the rows `what` names.
    Replace { what: String },
}

fn rows_word(n: u64) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
}

/// The decision, or the refusal that protects rows capbench did not create.
fn plan(state: &State, wanted: &str, rows: u64, dims: u32, force: bool) -> Result<Plan> {
    let Some(traces) = &state.traces else {
        return Ok(Plan::Build { carry: false });
    };
    if !traces.ours {
        let n = rows_word(traces.other_rows);
        let why = if state.fingerprint.is_none() {
            "no capacity_meta row"
        } else {
            "not capbench's columns"
        };
        if !force {
            bail!(
                "a traces table exists that capbench did not load ({why}; {n}): refusing to replace \
                 it; pass --force to replace it (deleting {n}), or point DATABASE_URL at another database"
            );
        }
        return Ok(Plan::Replace {
            what: format!("the traces table capbench did not create, with its {n}"),
        });
    }
    if !force
        && state.fingerprint.as_deref() == Some(wanted)
        && traces.indexed
        && traces.dataset_rows == rows
    {
        return Ok(Plan::Unchanged { rows });
    }
    // Rows of it changed by writes (some perhaps deleted): the same dataset, restored by rewriting
    // those rows (`setup --restore`), not rebuilt; its users refuse to measure it meanwhile.
    if !force
        && state.fingerprint.as_deref() == Some(wanted)
        && traces.indexed
        && state.changed > 0
        && traces.dataset_rows <= rows
    {
        return Ok(Plan::Unchanged {
            rows: traces.dataset_rows,
        });
    }
    match traces.dims {
        Some(existing) if existing != dims as i32 && traces.other_rows > 0 => {
            let n = rows_word(traces.other_rows);
            if !force {
                bail!(
                    "the traces table holds {n} capbench did not create (written through the API or \
                     by hand) with vector({existing}) embeddings, which cannot move into a vector({dims}) \
                     dataset: pass --dims {existing} to keep them, or --force to rebuild, deleting {n}"
                );
            }
            Ok(Plan::Replace {
                what: format!(
                    "{n} of traces capbench did not create (their vector({existing}) embeddings cannot \
                     move into the new vector({dims}) dataset)"
                ),
            })
        }
        _ => Ok(Plan::Build { carry: true }),
    }
}

/// Makes the database at `url` hold the dataset `config` describes: a no-op when its fingerprint
/// is already there with all its rows, a rebuild otherwise. Rows of `traces` that capbench did not
/// load (written through the service, or by hand) never trigger a rebuild and survive one; when
/// they cannot (another dimension, or a traces table capbench did not create), it refuses without
/// `opts.force`, and under it says what is deleted. It reads the state before changing anything,
/// so a refusal leaves the database as it was. Abandoning the returned future (Ctrl-C) cancels the
/// server's work on it.
pub async fn ensure_dataset(
    config: &Config,
    url: &str,
    opts: &LoadOptions,
) -> Result<DatasetChange> {
    config.index.validate()?;
    let mut conn = db::connect(url).await?;
    let watch = db::SessionWatch::start(url, &mut conn, "setup").await?;
    let outcome = ensure_on(conn, config, url, opts).await;
    watch.finish();
    outcome
}

/// Which servers a driver needs besides the dataset's PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Database,
    DatabaseAndRedis,
}

/// The servers a driver runs against, the dataset loaded in the first.
#[derive(Debug, Clone)]
pub struct Ready {
    pub database_url: String,
    /// With [`Needs::DatabaseAndRedis`].
    pub redis_url: Option<String>,
    pub dataset: DatasetChange,
    /// Rows of the dataset changed by writes since it was loaded ([`changed_rows`]): the benches
    /// refuse to measure it ([`Ready::pristine`]).
    pub changed_rows: u64,
}

/// The one start of `serve`, `load` and the benches: the embedded stack (or the servers of
/// `DATABASE_URL` / `REDIS_URL`) and the dataset `config` describes, through the same code as the
/// `setup` binary (progress bars on a terminal; rows capbench did not load are kept, and a rebuild
/// that cannot keep them is refused — `--force` is setup's alone).
pub async fn ready(config: &Config, needs: Needs) -> Result<Ready> {
    let database_url = stack::postgres(&config.servers, config.local_database()).await?;
    let redis_url = match needs {
        Needs::Database => None,
        Needs::DatabaseAndRedis => Some(stack::redis(&config.servers).await?),
    };
    let opts = LoadOptions {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..LoadOptions::default()
    };
    let dataset = ensure_dataset(config, &database_url, &opts).await?;
    let changed_rows = changed_rows(&mut db::connect(&database_url).await?).await?;
    Ok(Ready {
        database_url,
        redis_url,
        dataset,
        changed_rows,
    })
}

impl Ready {
    /// An error when writes changed the dataset (what a bench says before measuring it).
    pub fn pristine(&self) -> Result<()> {
        match self.changed_rows {
            0 => Ok(()),
            n => bail!("{}", changed_message(n)),
        }
    }

    /// The Redis URL of a [`Needs::DatabaseAndRedis`] start.
    pub fn redis(&self) -> Result<&str> {
        self.redis_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("Redis was not started (Needs::Database)"))
    }
}

async fn ensure_on(
    mut conn: PgConnection,
    config: &Config,
    url: &str,
    opts: &LoadOptions,
) -> Result<DatasetChange> {
    let wanted = dataset::fingerprint(&config.dataset, &config.index);
    let state = read_state(&mut conn).await?;
    let plan = plan(
        &state,
        &wanted,
        config.dataset.rows,
        config.dataset.dims,
        opts.force,
    )?;
    db::ensure_pgvector(&mut conn, url).await?;
    sqlx::raw_sql(schema::section("base")?)
        .execute(&mut conn)
        .await
        .context("creating the base schema (setup/schema.sql, section base)")?;
    let carry = match plan {
        Plan::Unchanged { rows } => {
            guard(&mut conn).await?;
            return Ok(DatasetChange::Unchanged {
                fingerprint: wanted,
                rows,
            });
        }
        Plan::Build { carry } => carry,
        Plan::Replace { what } => {
            crate::say!("setup: --force: deleting {what}");
            false
        }
    };
    let monitor = if opts.progress {
        Some(db::connect(url).await?)
    } else {
        None
    };
    let figures = build(conn, monitor, config, &wanted, carry, opts).await?;
    Ok(DatasetChange::Built {
        fingerprint: wanted,
        figures: Box::new(figures),
    })
}

/// The dataset's change log on a dataset loaded before it existed (checked first, so that a start
/// against a guarded table takes no lock on it).
async fn guard(conn: &mut PgConnection) -> Result<()> {
    let guarded: bool = sqlx::query_scalar(
        "SELECT count(*) = 2 FROM pg_trigger WHERE tgrelid = to_regclass('traces')
         AND tgname IN ('capacity_dataset_deletes', 'capacity_dataset_updates')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !guarded {
        sqlx::raw_sql(schema::section("dataset_guard")?)
            .execute(&mut *conn)
            .await
            .context("the dataset's change log (setup/schema.sql, section dataset_guard)")?;
    }
    Ok(())
}

async fn is_complete(conn: &mut PgConnection) -> Result<bool> {
    Ok(index::info(conn, "traces").await?.is_some_and(|i| i.valid))
}

/// Every query set and case's ground truth for the dataset `config` describes (which must be
/// loaded): read from `capacity_query_vectors`/`capacity_truth` when stored for this fingerprint,
/// computed and stored otherwise. Returns them and the seconds spent computing (None when read back).
pub async fn ensure_truth(config: &Config, url: &str) -> Result<(Truths, Option<f64>)> {
    let dataset_fp = dataset::fingerprint(&config.dataset, &config.index);
    ensure_truth_of(config, &config.dataset, &dataset_fp, url).await
}

/// [`ensure_truth`] for the dataset loaded at `url`, whatever the configuration says: `loaded` its
/// parameters (`capacity_meta.params`), its fingerprint read from `capacity_meta` (the index it
/// was built with included) — what `load --recall` scores against.
pub async fn ensure_truth_of_loaded(
    config: &Config,
    url: &str,
    loaded: &crate::config::DatasetParams,
) -> Result<(Truths, Option<f64>)> {
    let mut conn = db::connect(url).await?;
    let fp: Option<String> =
        sqlx::query_scalar("SELECT fingerprint FROM capacity_meta WHERE id = 1")
            .fetch_optional(&mut conn)
            .await
            .context("reading capacity_meta")?;
    drop(conn);
    let fp = fp.context(
        "capacity_meta names no dataset: load it first (cargo run --release --bin setup)",
    )?;
    ensure_truth_of(config, loaded, &fp, url).await
}

async fn ensure_truth_of(
    config: &Config,
    dataset_params: &crate::config::DatasetParams,
    dataset_fp: &str,
    url: &str,
) -> Result<(Truths, Option<f64>)> {
    let n = config.bench.queries;
    let k = (config.bench.k as usize).min(dataset_params.rows as usize);
    let truth_fp = truth::fingerprint(dataset_fp, n as usize, k);
    let data = Arc::new(Dataset::new(dataset_params.clone()));
    let cases = Case::all();
    let t = Instant::now();
    let sets = tokio::task::spawn_blocking({
        let (data, cases) = (data.clone(), cases.clone());
        move || truth::query_sets(&data, &cases, n)
    })
    .await
    .context("drawing the query sets")?;
    let mut conn = db::connect(url).await?;
    if let Some(stored) = truth::load(&mut conn, &truth_fp, sets.clone(), &cases, k).await? {
        return Ok((stored, None));
    }
    let computed = tokio::task::spawn_blocking({
        let (data, cases) = (data.clone(), cases.clone());
        move || truth::compute_all(&data, &sets, &cases, k)
    })
    .await
    .context("computing the ground truth")?;
    let seconds = t.elapsed().as_secs_f64();
    truth::store(&mut conn, &truth_fp, &computed).await?;
    Ok((computed, Some(seconds)))
}

/// pgvector fails a parallel build whose graph cannot fit in memory; say what to change.
fn relay_memory_error(e: anyhow::Error, workers: u32) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("maintenance_work_mem") || text.contains("shared memory") {
        e.context(format!(
            "the HNSW graph did not fit in memory: raise maintenance_work_mem in setup/postgres.conf \
             (and Docker's shm_size), or build with fewer workers (--build-workers, now {workers})"
        ))
    } else {
        e
    }
}

fn mib(bytes: i64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The summary lines setup prints after a build.
pub fn summary(figures: &Figures, fingerprint: &str) -> Vec<String> {
    let mut lines = vec![
        format!(
            "dataset      {} rows, fingerprint {fingerprint}",
            figures.rows
        ),
        format!(
            "load         {:.1} s binary COPY ({:.0} rows/s), keys {:.1} s",
            figures.load_seconds, figures.rows_per_second, figures.constraints_seconds
        ),
        format!(
            "index        HNSW built in {:.1} s (leader + {} workers), ANALYZE {:.1} s",
            figures.index_seconds, figures.build_workers, figures.analyze_seconds
        ),
        format!(
            "size         table {}, index {}",
            mib(figures.table_bytes),
            mib(figures.index_bytes)
        ),
        format!(
            "server       PostgreSQL {}, pgvector {}, shared_buffers {}",
            figures.server.postgres_version,
            figures.server.pgvector_version,
            mib(figures.server.shared_buffers_bytes)
        ),
    ];
    if figures.kept_rows > 0 {
        lines.push(format!(
            "kept         {} capbench did not load (written through the API or by hand), carried into the new table",
            rows_word(figures.kept_rows)
        ));
    }
    for n in &figures.notices {
        lines.push(format!(
            "warning      pgvector: {n}; raise maintenance_work_mem in setup/postgres.conf for a faster build"
        ));
    }
    if figures.index_exceeds_shared_buffers() {
        lines.push(format!(
            "warning      the index ({}) is larger than shared_buffers ({}): searches will read it from disk; \
             raise shared_buffers in setup/postgres.conf",
            mib(figures.index_bytes),
            mib(figures.server.shared_buffers_bytes)
        ));
    }
    lines
}

/// The `setup` binary.
pub async fn run(mut args: SetupArgs) -> Result<ExitCode> {
    args.config = args.config.effective();
    let servers = &args.config.servers;
    if args.stop {
        for line in tokio::task::spawn_blocking({
            let servers = servers.clone();
            move || stack::stop(&servers)
        })
        .await??
        {
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.print_env {
        let ep = stack::endpoints(&args.config).await?;
        println!(
            "export DATABASE_URL={} REDIS_URL={}",
            ep.database_url, ep.redis_url
        );
        return Ok(ExitCode::SUCCESS);
    }
    args.config.index.validate()?;
    let started = Instant::now();
    // setup prepares the servers serve and the benches will use: a REDIS_URL they cannot reach
    // fails here, before the database is touched.
    if let Some(redis) = &servers.redis_url {
        stack::ping_redis(redis).await?;
    }
    let url = stack::postgres(servers, args.config.local_database()).await?;
    let opts = LoadOptions {
        force: args.force,
        copy_batch: args.copy_batch,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    eprintln!("setup: PostgreSQL at {}", crate::secrets::redact(&url));
    match ensure_dataset(&args.config, &url, &opts).await? {
        DatasetChange::Unchanged { fingerprint, rows } => {
            println!(
                "dataset      {rows} rows, fingerprint {fingerprint}: already loaded, nothing to do ({} ms)",
                started.elapsed().as_millis()
            );
        }
        DatasetChange::Built {
            fingerprint,
            figures,
        } => {
            for line in summary(&figures, &fingerprint) {
                println!("{line}");
            }
        }
    }
    let changed = changed_rows(&mut db::connect(&url).await?).await?;
    if changed > 0 && !args.restore {
        bail!("{}", changed_message(changed));
    }
    if args.restore {
        let r = restore(&args.config, &url).await?;
        if r.rows == 0 {
            println!(
                "restore      nothing to restore: no row of the dataset has changed since it was loaded"
            );
        } else {
            println!(
                "restore      {} changed rows of the dataset rewritten from the generator in {:.2} s, then VACUUM (ANALYZE) in {:.1} s; rows written through the API kept",
                r.rows, r.write_seconds, r.vacuum_seconds
            );
        }
    }
    let (truths, computed) = ensure_truth(&args.config, &url).await?;
    let what = format!(
        "exact top-{} of {} queries × {} cases ({} query sets: {}; unfiltered and under each tag)",
        truths.k,
        args.config.bench.queries,
        truths.cases.len(),
        truths.sets.len(),
        crate::dataset::Distribution::ALL
            .map(|d| d.name())
            .join(", ")
    );
    match computed {
        Some(s) => println!(
            "truth        {what} computed in {s:.1} s (brute force, {} threads) and stored",
            rayon::current_num_threads()
        ),
        None => println!("truth        {what}: already stored"),
    }
    if args
        .indexes
        .iter()
        .any(|v| *v != crate::db::variant::Variant::Hnsw)
    {
        let ensured = ensure_variants(&args.config, &url, &args.indexes, opts.progress).await?;
        for line in variant_lines(&ensured) {
            println!("{line}");
        }
    }
    if args.compare_copy_floor {
        eprintln!(
            "setup: timing binary COPY vs COPY FROM a server-side file ({} × each)…",
            args.repeat
        );
        let (ours, floor) =
            compare_copy_floor(&args.config, &url, args.repeat, args.copy_batch).await?;
        let rows = args.config.dataset.rows as f64;
        println!(
            "copy-floor   capbench binary COPY {ours:.2} s ({:.0} rows/s); PostgreSQL COPY FROM file {floor:.2} s ({:.0} rows/s); ratio {:.2} (median of {})",
            rows / ours,
            rows / floor,
            ours / floor.max(1e-9),
            args.repeat
        );
    }
    Ok(ExitCode::SUCCESS)
}
