//! What a run loads, made ready before the clock starts: the in-process reference service (on the
//! configured database and Redis, the dataset loaded), a database with the dataset checked, or an
//! HTTP deployment — each only where the loopback rule lets traffic go; the scenario compiled for
//! it; and the users whose on_start runs before the clock (sweeps, the open model).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::args::LoadArgs;
use super::recall::Scorer;
use super::scenario::{self, Scenario, Sink, Target, VirtualUser};
use super::stats::RequestOutcome;
use crate::server::{AppState, LocalService};

/// The read limit of the in-process service for capacity runs (the seeds' setting), unless
/// RATE_LIMIT_READ_PER_MINUTE says otherwise or the limiter itself is under test.
pub const CAPACITY_READ_PER_MINUTE: u32 = 10_000;

/// The write limit of the in-process service for read/write capacity runs (every write still
/// takes a token of its user's write bucket), unless RATE_LIMIT_WRITE_PER_MINUTE says otherwise or
/// the limiter itself is under test.
pub const CAPACITY_WRITE_PER_MINUTE: u32 = 10_000;

/// The target to load, and what stands behind it.
pub(super) struct Prepared {
    pub target: Target,
    /// The scenario, compiled for the target's base URL (HTTP targets).
    pub scenario: Option<Arc<Scenario>>,
    /// The in-process reference service, when it is the target.
    pub service: Option<LocalService>,
    /// The database whose server the record describes.
    pub db_url: Option<String>,
    /// The Redis whose version the record notes (the in-process service's).
    pub redis_url: Option<String>,
    /// The run writes into the write table of this database, which holds these dataset rows: it
    /// is restored after the run.
    pub write_table: Option<(String, u64)>,
}

/// Finds or starts the target: the in-process service (on the configured database and Redis,
/// the dataset loaded), a database, or an HTTP deployment — this machine's unless --allow-remote.
pub(super) async fn prepare(args: &LoadArgs) -> Result<Prepared> {
    let config = &args.config;
    let target_text = args
        .target
        .clone()
        .or_else(|| config.service.target_url.clone());
    let reach = args.reach();
    // The scenario is read first: a mistake in it fails before anything starts.
    let stand_in = args
        .recall
        .then(|| Arc::new(Scorer::stand_in(config.bench.query_set)));
    let probe = args.scenario.compile_scored(
        "http://127.0.0.1",
        &config.dataset,
        args.scenario_seed,
        stand_in,
    )?;
    if args.open_model()
        && let Some(kind) = probe.paced_kind()
    {
        bail!(
            "the {kind} kind sleeps between its tasks (a pattern in time): use it with --users, not --rate"
        );
    }
    let http_target_text = target_text
        .as_deref()
        .is_none_or(|t| t.starts_with("http://") || t.starts_with("https://"));
    if args.write_rate.is_some() && http_target_text {
        bail!(
            "--write-rate sends SQL INSERTs beside the database target's searches (--target db); against an HTTP API writes are a scenario's requests: --scenario search:4,write:1"
        );
    }
    if args.recall && http_target_text && !probe.scores_any() {
        bail!(
            "--recall: scenario {} sends no query of the query set (a variable with from = \"query_set\", docs/scenarios/README.md)",
            args.scenario
        );
    }
    let compiled = |base: &str, scorer: &Option<Arc<Scorer>>| -> Result<Option<Arc<Scenario>>> {
        Ok(Some(Arc::new(args.scenario.compile_scored(
            base,
            &config.dataset,
            args.scenario_seed,
            scorer.clone(),
        )?)))
    };
    match target_text.as_deref() {
        None => {
            let ready = crate::setup::ready(config, crate::setup::Needs::DatabaseAndRedis).await?;
            // Scored answers need the dataset as generated; other runs only say it changed.
            if args.recall {
                ready.pristine()?;
            } else if ready.changed_rows > 0 {
                eprintln!(
                    "load: warning: {}",
                    crate::setup::changed_message(ready.changed_rows)
                );
            }
            let redis = ready.redis()?.to_string();
            let db = ready.database_url;
            let mut cfg = config.clone();
            let limiter_under_test = probe.limiter_under_test;
            if !args.read_limit_given && !limiter_under_test {
                cfg.service.rate_limit_read_per_minute = CAPACITY_READ_PER_MINUTE;
            }
            // A scenario that writes: the service on the write table, whose added rows go after.
            let write_table = if probe.writes() {
                let table = super::ingest::write_table(config, &db, &config.dataset).await?;
                if !args.write_limit_given && !limiter_under_test {
                    cfg.service.rate_limit_write_per_minute = CAPACITY_WRITE_PER_MINUTE;
                }
                eprintln!(
                    "load: the scenario writes: the in-process service runs on the write table {}.traces (a copy of the dataset; the rows the run adds are removed after it), write limit {}/min{}",
                    crate::db::writes::SCHEMA,
                    cfg.service.rate_limit_write_per_minute,
                    if args.write_limit_given || limiter_under_test {
                        ""
                    } else {
                        " (capacity setting; RATE_LIMIT_WRITE_PER_MINUTE to change)"
                    }
                );
                Some((db.clone(), table.rows))
            } else {
                None
            };
            let state = AppState::connect_in(
                &cfg,
                &db,
                &redis,
                write_table.as_ref().map(|_| crate::db::writes::SEARCH_PATH),
            )
            .await?;
            let svc = LocalService::start(state).await?;
            eprintln!(
                "load: in-process reference service at {} (read limit {}/min{}), ef_search {}",
                svc.url(),
                cfg.service.rate_limit_read_per_minute,
                if args.read_limit_given || limiter_under_test {
                    ""
                } else {
                    ", the seeds' capacity setting; RATE_LIMIT_READ_PER_MINUTE to change"
                },
                cfg.service.search_ef_search
            );
            let target = http_target(&svc.url(), args)?;
            let scorer = scorer_of(args, &db).await?;
            Ok(Prepared {
                target,
                scenario: compiled(&svc.url(), &scorer)?,
                service: Some(svc),
                db_url: Some(db),
                redis_url: Some(redis),
                write_table,
            })
        }
        Some(t) if t.eq_ignore_ascii_case("db") || t.starts_with("postgres") => {
            let url = if t.eq_ignore_ascii_case("db") {
                crate::stack::postgres(&config.servers, config.local_database()).await?
            } else {
                t.to_string()
            };
            reach.check_postgres(&url).await?;
            if !args.scenario.is_builtin_search() {
                bail!("the database target runs THE search SQL only: use --scenario search");
            }
            let params = loaded_dataset(&url, args.timeout).await?;
            let scorer = scorer_of(args, &url).await?;
            let vectors = match &scorer {
                Some(s) => s.vectors().to_vec(),
                None => scenario::query_vectors(&params),
            };
            let writes = match args.write_rate {
                Some(rate) => Some(Arc::new(
                    super::ingest::prepare(
                        config,
                        &url,
                        &params,
                        scorer.as_deref(),
                        super::ingest::WriteArgs {
                            rate,
                            batch: args.write_batch as usize,
                            writers: args.writers as usize,
                            run_time: args.run_time(),
                            timeout: args.timeout,
                        },
                    )
                    .await?,
                )),
                None => None,
            };
            let write_table = writes.as_ref().map(|w| (url.clone(), w.dataset_rows));
            Ok(Prepared {
                target: Target::Database {
                    url: url.clone(),
                    ef_search: config.service.search_ef_search,
                    vectors: Arc::new(vectors),
                    scorer,
                    next: Arc::default(),
                    writes,
                },
                scenario: None,
                service: None,
                db_url: Some(url),
                redis_url: None,
                write_table,
            })
        }
        Some(t) if t.starts_with("http://") || t.starts_with("https://") => {
            reach.check_http(t).await?;
            let base = t.trim_end_matches('/');
            // The truth lives with the dataset, in the database the deployment was loaded into:
            // the configured one (DATABASE_URL, --database-url) or the embedded stack's.
            let scorer = if args.recall {
                let url = crate::stack::postgres(&config.servers, config.local_database()).await?;
                reach.check_postgres(&url).await?;
                scorer_of(args, &url).await?
            } else {
                None
            };
            if probe.writes() {
                eprintln!(
                    "load: the scenario writes through {}: the rows it adds stay there (capbench removes only rows it wrote into its own write table)",
                    crate::secrets::redact(base)
                );
            }
            Ok(Prepared {
                target: http_target(base, args)?,
                scenario: compiled(base, &scorer)?,
                service: None,
                db_url: None,
                redis_url: None,
                write_table: None,
            })
        }
        Some(t) => {
            bail!("--target '{t}' is neither an http(s):// URL, 'db', nor a postgres:// URL")
        }
    }
}

/// With `--recall`: the query set `--query-set` names, and its ground truth, of the dataset loaded
/// at `url` (read back, or computed and stored once).
async fn scorer_of(args: &LoadArgs, url: &str) -> Result<Option<Arc<Scorer>>> {
    if !args.recall {
        return Ok(None);
    }
    let params = loaded_dataset(url, args.timeout).await?;
    let scorer = Scorer::prepare(&args.config, url, params, args.config.bench.query_set).await?;
    eprintln!(
        "load: scoring recall@{} against the {} query set ({} queries: {})",
        scorer.k,
        scorer.distribution.name(),
        scorer.len(),
        scorer.distribution.describe()
    );
    Ok(Some(Arc::new(scorer)))
}

/// The parameters of the dataset loaded in the database at `url`: connecting within the connect
/// timeout, reading them within `timeout` (a lock or a silent server must not hang the run).
async fn loaded_dataset(url: &str, timeout: Duration) -> Result<crate::config::DatasetParams> {
    let mut conn = crate::db::connect(url).await?;
    let read = async {
        let loaded: bool = sqlx::query_scalar(
            "SELECT to_regclass('traces') IS NOT NULL AND to_regclass('capacity_meta') IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await
        .context("checking for the dataset")?;
        if loaded {
            scenario::loaded_params(&mut conn).await
        } else {
            Ok(None)
        }
    };
    let params = tokio::time::timeout(timeout, read).await.map_err(|_| {
        anyhow::anyhow!(
            "{} did not answer within {} (--timeout) while load checked for the dataset",
            crate::secrets::redact(url),
            humantime::format_duration(timeout)
        )
    })??;
    match params {
        Some(params) => Ok(params),
        None => bail!(
            "{} has no capbench dataset: load it first (cargo run --release --bin setup)",
            crate::secrets::redact(url)
        ),
    }
}

/// The HTTP client of a target: the per-request timeout, connections opened within the connect
/// timeout, and the loopback rule on every address it connects to.
fn http_target(base: &str, args: &LoadArgs) -> Result<Target> {
    let builder = reqwest::Client::builder()
        .timeout(args.timeout)
        .connect_timeout(crate::db::connect_timeout())
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true);
    let client = args
        .reach()
        .apply(builder)
        .build()
        .context("building the HTTP client")?;
    Target::http(base, client)
}

/// Runs the on_start of `n` users (sweeps and the open model reuse them), 16 at a time, within
/// `bound` (the run time: a target that does not answer must not hold the run up longer than the
/// run itself). Their requests are not measured: they happen before the clock starts.
pub async fn prepare_users(
    target: &Target,
    scenario: Option<&Arc<Scenario>>,
    n: usize,
    tag: &str,
    bound: Duration,
) -> Result<Vec<Arc<VirtualUser>>> {
    let (Target::Http { client, .. }, Some(scenario)) = (target, scenario) else {
        return Ok(Vec::new());
    };
    tokio::time::timeout(bound, start_users(target, client, scenario, n, tag))
        .await
        .unwrap_or_else(|_| {
            anyhow::bail!(
                "starting {n} users (their on_start) through {} took longer than the run time ({}): is the target answering?",
                target.describe(),
                humantime::format_duration(bound)
            )
        })
}

/// Records nothing: requests before the clock.
struct Unmeasured;

impl Sink for Unmeasured {
    fn admit(&self) -> bool {
        true
    }
    fn record(&self, _: &RequestOutcome) {}
}

async fn start_users(
    target: &Target,
    client: &reqwest::Client,
    scenario: &Arc<Scenario>,
    n: usize,
    tag: &str,
) -> Result<Vec<Arc<VirtualUser>>> {
    let mut users = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let (client, tag, scenario) = (client.clone(), tag.to_string(), scenario.clone());
            let describe = target.describe();
            set.spawn(async move {
                let user = Arc::new(VirtualUser::new(scenario, i as u64));
                match user.start(&client, &tag, &Unmeasured).await {
                    Ok(()) => Ok((i, user)),
                    // A kind that goes on without its on_start.
                    Err(_) if user.ready() => Ok((i, user)),
                    Err(why) => anyhow::bail!(
                        "user {i} ({}) could not start through {describe}: {why}",
                        user.kind().name
                    ),
                }
            });
        }
        while let Some(r) = set.join_next().await {
            users.push(r.context("starting a user")??);
        }
    }
    users.sort_by_key(|(i, _)| *i);
    Ok(users.into_iter().map(|(_, u)| u).collect())
}
