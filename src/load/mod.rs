//! `cargo run --release --bin load` — capacity under concurrency: the seeds' user kinds (closed
//! model, Locust's) or a constant arrival rate (open model, corrected for coordinated omission),
//! against the in-process reference service, any deployment of the API, or the database itself;
//! k6-like thresholds with an exit code; a concurrency sweep with its knee; Locust's CSV files and
//! the project's run record.

pub mod reach;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod sweep;
pub mod threshold;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser};
use serde_json::json;

use crate::config::Config;
use crate::cpu_idle::CpuIdle;
use crate::record::{self, Environment, Gate, ResultEntry, RunRecord};
use crate::server::{AppState, LocalService};
pub use reach::Reach;
use run::{ClosedPlan, Ending, Finished, Interrupt, OpenPlan, Progress, Signal};
use scenario::{Kind, Mix, Target};
use stats::{PERCENTILES, Stats};
use threshold::{THRESHOLD_EXIT_CODE, Threshold, Verdict};

/// The read limit of the in-process service for capacity runs (the seeds' setting), unless
/// RATE_LIMIT_READ_PER_MINUTE says otherwise or the limiter itself is under test.
pub const CAPACITY_READ_PER_MINUTE: u32 = 10_000;

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Load a search API: virtual users (closed model) or an arrival rate (open model), with thresholds, sweeps and Locust-compatible output"
)]
pub struct LoadArgs {
    #[command(flatten)]
    pub config: Config,
    /// Virtual users (closed model).
    #[arg(short = 'u', long, env = "CAPBENCH_USERS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub users: u64,
    /// Users started per second (default: all within the first second).
    #[arg(short = 'r', long, env = "CAPBENCH_SPAWN_RATE")]
    pub spawn_rate: Option<f64>,
    /// How long to run (`60s`, `2m`, `90`); with --sweep, per level. Default 60 s; 10 s per level.
    #[arg(short = 't', long, env = "CAPBENCH_RUN_TIME", value_parser = parse_duration)]
    pub run_time: Option<Duration>,
    /// Stop after this many requests, whatever the time.
    #[arg(long, env = "CAPBENCH_MAX_REQUESTS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: u64,
    /// User kinds, with weights: search (SearchLoadUser), burst (BurstAgent), realistic
    /// (RealisticAgent), e.g. `search:3,burst:1`.
    #[arg(long, env = "CAPBENCH_SCENARIO", default_value = "search")]
    pub scenario: Mix,
    /// Replace every kind's wait between requests (e.g. `0` to saturate).
    #[arg(long, env = "CAPBENCH_WAIT", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Open model: a constant arrival rate (`500/s`, `500`), latency measured from each request's
    /// intended start.
    #[arg(long, env = "CAPBENCH_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Open model: requests in flight at most (a late request still counts from its intended start).
    #[arg(long, env = "CAPBENCH_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_in_flight: u64,
    /// Concurrency sweep: run each number of users for --run-time, report QPS, p50, p99 and the knee.
    #[arg(long, env = "CAPBENCH_SWEEP", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub sweep: Vec<u64>,
    /// The latency objective of the sweep's knee (p99).
    #[arg(long, env = "CAPBENCH_SLO_P99", default_value = "50ms", value_parser = parse_ms)]
    pub slo_p99: f64,
    /// Where to send load: the in-process reference service (default), a base URL
    /// (`http://127.0.0.1:8000`), `db` (THE search SQL on the configured database) or a postgres:// URL.
    #[arg(long, env = "CAPBENCH_LOAD_TARGET")]
    pub target: Option<String>,
    /// Send load beyond this machine. Without it only loopback addresses receive traffic, checked
    /// where connections go: after name resolution, every redirect, and a database URL's `host` /
    /// `hostaddr` parameters; and no proxy is used.
    #[arg(long)]
    pub allow_remote: bool,
    /// The addresses that count as this machine without --allow-remote: every loopback address.
    /// A test narrows it ([`Reach::Only`]) so that a second loopback address can stand for a remote
    /// host without a packet leaving the machine.
    #[arg(skip)]
    pub this_machine: Reach,
    /// A pass/fail criterion (repeatable): `p99<50ms`, `error_rate<1%`, `rps>100`, `p95[NAME]<=2s`.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<Threshold>,
    /// Write Locust's CSV files: PREFIX_stats.csv, PREFIX_stats_history.csv, PREFIX_failures.csv,
    /// PREFIX_exceptions.csv.
    #[arg(long, value_name = "PREFIX")]
    pub csv: Option<PathBuf>,
    /// Every request name's rows in the history file, not only Aggregated (Locust's flag).
    #[arg(long, requires = "csv")]
    pub csv_full_history: bool,
    /// Per-request timeout; also the longest wait for the database target's answer while load
    /// checks for its dataset.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The generator's threads. Default: one for a separate target (the rest of the machine is the
    /// server's), every core for the in-process service (which runs on them too).
    #[arg(long, env = "CAPBENCH_LOAD_THREADS", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Set when the read limit came from the command line or the environment.
    #[arg(skip)]
    pub read_limit_given: bool,
}

/// `60s`, `2m`, `1h30m`, `250ms`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 60s, 2m, 250ms ({e})"))
}

fn parse_ms(s: &str) -> Result<f64, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the objective must be above zero".into());
    }
    Ok(d.as_secs_f64() * 1e3)
}

/// `500/s`, `500`, `30000/m`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (n, per) = match t.split_once('/') {
        Some((n, unit)) => (
            n,
            match unit.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                other => return Err(format!("'{other}' in '{s}' is not /s or /m")),
            },
        ),
        None => (t, 1.0),
    };
    let rate: f64 = n
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a rate like 500/s"))?;
    let rate = rate / per;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
        return Err(format!(
            "rate '{s}' must be above 0 and at most 1,000,000/s"
        ));
    }
    Ok(rate)
}

impl LoadArgs {
    /// Parses the command line (or `argv`), noting whether the read limit was given.
    pub fn parse_from_args(argv: &[String]) -> Result<Self, clap::Error> {
        let matches = Self::command().try_get_matches_from(argv)?;
        let mut args = Self::from_arg_matches(&matches)?;
        args.read_limit_given = matches!(
            matches.value_source("rate_limit_read_per_minute"),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        );
        if let Some(target) = &args.target {
            // Like the configuration's URLs: never shown in any line, record or page.
            crate::secrets::remember_in(target);
        }
        args.config = args.config.clone().effective();
        Ok(args)
    }

    /// Where this run may send traffic: anywhere with --allow-remote, else this machine only.
    pub fn reach(&self) -> Reach {
        if self.allow_remote {
            Reach::Anywhere
        } else {
            self.this_machine.clone()
        }
    }

    fn check(&self) -> Result<()> {
        // The CSV files are written after the run: a directory that cannot be made must fail
        // before it, not after a measurement.
        if let Some(prefix) = &self.csv
            && let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "--csv {}: cannot create {}",
                    prefix.display(),
                    dir.display()
                )
            })?;
        }
        if self.rate.is_some() && !self.sweep.is_empty() {
            bail!("--rate (open model) and --sweep (closed model) do not combine: choose one");
        }
        if self.rate.is_some() && self.scenario.has(Kind::Realistic) {
            bail!(
                "the realistic scenario is a pattern in time (15 searches, then idle): use it with --users, not --rate"
            );
        }
        if !self.sweep.is_empty() && !self.thresholds.is_empty() {
            bail!("thresholds judge one run; a sweep is judged by its knee against --slo-p99");
        }
        if let Some(r) = self.spawn_rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("--spawn-rate must be above 0");
        }
        if self.run_time.is_some_and(|t| t.is_zero()) {
            bail!("--run-time must be above 0");
        }
        Ok(())
    }
}

/// The `load` binary: its own runtime, so that Ctrl-C or SIGTERM ends the run early but still
/// reports it. `publish` files the finished run's record (the binary passes the report's, which
/// sits a layer above this engine).
pub fn main(
    publish: fn(&crate::record::RunRecord, &[String]) -> anyhow::Result<std::path::PathBuf>,
) -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let args = match LoadArgs::parse_from_args(&argv) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", crate::config::first_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let in_process = args.target.is_none() && args.config.service.target_url.is_none();
    let threads = args.threads.unwrap_or(if in_process {
        std::thread::available_parallelism().map_or(2, |n| n.get() as u64)
    } else {
        1
    });
    // One thread: no hand-offs between threads in the request path (on a VM each costs tens of µs).
    let built = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Handlers installed before anything starts, so no signal finds the default (fatal) action.
    let interrupt = match runtime.block_on(async { Signal::watch() }) {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("error: cannot handle Ctrl-C and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime
        .block_on(run(args, Some(interrupt)))
        .and_then(|outcome| {
            publish(&outcome.record, &argv[..1])?;
            Ok(outcome)
        });
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => match e.downcast_ref::<InterruptedBeforeRun>() {
            Some(InterruptedBeforeRun(signal)) => {
                crate::say!("load: {e}");
                ExitCode::from(signal.exit_code())
            }
            None => {
                crate::say!("error: {}", crate::one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}

/// The exit code of a run in which no request succeeded: nothing was measured.
pub const NOTHING_MEASURED_EXIT_CODE: u8 = 1;

/// A signal that came before the run started: nothing was measured, nothing is written.
#[derive(Debug, thiserror::Error)]
#[error("interrupted ({}) before the run started: nothing was measured", .0.name())]
pub struct InterruptedBeforeRun(pub Signal);

/// What a `load` invocation found.
#[derive(Debug)]
pub struct Outcome {
    pub finished: Vec<(Option<u64>, Finished)>,
    pub verdicts: Vec<Verdict>,
    pub knee: Option<sweep::Knee>,
    pub swept: bool,
    /// The run record (not yet published).
    pub record: RunRecord,
}

impl Outcome {
    /// The signal that ended the run early, if one did.
    pub fn interrupted(&self) -> Option<Signal> {
        self.finished.iter().find_map(|(_, f)| match f.ending {
            Ending::Interrupted(signal) => Some(signal),
            _ => None,
        })
    }

    /// Requests that succeeded (a 429 a burst user expects included), over every run.
    pub fn succeeded(&self) -> u64 {
        self.finished
            .iter()
            .map(|(_, f)| f.stats.total.requests - f.stats.total.failures)
            .sum()
    }

    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass) && (!self.swept || self.knee.is_some())
    }

    /// 130 (Ctrl-C) or 143 (SIGTERM): interrupted, the results so far reported; 1: no request
    /// succeeded, nothing was measured; 99 (k6's code): a threshold did not hold (without
    /// --threshold: the error rate was not below 1 %), or no sweep level met the objective; 0:
    /// everything held.
    pub fn exit_code(&self) -> ExitCode {
        if let Some(signal) = self.interrupted() {
            ExitCode::from(signal.exit_code())
        } else if self.succeeded() == 0 {
            ExitCode::from(NOTHING_MEASURED_EXIT_CODE)
        } else if self.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(THRESHOLD_EXIT_CODE)
        }
    }
}

/// Runs `step` of the preparation unless a signal comes first (then nothing was measured).
async fn before_run<T>(
    interrupt: &Option<Interrupt>,
    step: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(rx) = interrupt.clone() else {
        return step.await;
    };
    tokio::select! {
        result = step => result,
        signal = run::signalled(rx) => Err(InterruptedBeforeRun(signal).into()),
    }
}

/// The target to load, and what stands behind it.
struct Prepared {
    target: Target,
    /// The in-process reference service, when it is the target.
    service: Option<LocalService>,
    /// The database whose server the record describes.
    db_url: Option<String>,
    /// The Redis whose version the record notes (the in-process service's).
    redis_url: Option<String>,
}

/// Everything `load` does, given its arguments; `interrupt` ends it early (Ctrl-C, SIGTERM).
pub async fn run(args: LoadArgs, interrupt: Option<Interrupt>) -> Result<Outcome> {
    args.check()?;
    crate::install_tls_provider();
    // Idle CPUs as the machine has them unless asked (`--cpu-idle poll`): held for the whole run.
    let _awake = crate::cpu_idle::for_run(args.config.bench.cpu_idle.unwrap_or(CpuIdle::Os));
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let Prepared {
        target,
        service,
        db_url,
        redis_url,
    } = before_run(&interrupt, prepare(&args)).await?;
    eprintln!("load: target {}", target.describe());

    let mut outcome = Outcome {
        finished: Vec::new(),
        verdicts: Vec::new(),
        knee: None,
        swept: !args.sweep.is_empty(),
        record: RunRecord::new("load", Environment::default(), json!({})),
    };
    if !args.sweep.is_empty() {
        let per_level = args.run_time.unwrap_or(Duration::from_secs(10));
        let most = *args.sweep.iter().max().unwrap_or(&1) as usize;
        let keys = before_run(&interrupt, run::mint_keys(&target, most, &tag, per_level)).await?;
        let keys = Arc::new(keys);
        for &users in &args.sweep {
            let plan = ClosedPlan {
                users: users as usize,
                spawn_rate: f64::INFINITY,
                mix: args.scenario.clone(),
                wait: args.wait,
                run_time: per_level,
                max_requests: args.max_requests,
                keys: Some(keys.clone()),
                tag: tag.clone(),
            };
            let done = run::closed(
                &target,
                &plan,
                &Progress::new(format!("sweep {users} users"), args.quiet),
                interrupt.clone(),
            )
            .await?;
            let stop = matches!(done.ending, Ending::Interrupted(_));
            outcome.finished.push((Some(users), done));
            if stop {
                break;
            }
        }
        let levels: Vec<sweep::Level> = outcome
            .finished
            .iter()
            .map(|(u, f)| sweep::Level::of(u.unwrap_or(0), &f.stats))
            .collect();
        outcome.knee = sweep::knee(&levels, args.slo_p99);
        sweep::print(
            &levels,
            outcome.knee.as_ref(),
            args.slo_p99,
            target.sweep_names().1,
        );
    } else {
        let run_time = args.run_time.unwrap_or(Duration::from_secs(60));
        let done = match args.rate {
            Some(rate) => {
                let keys = before_run(
                    &interrupt,
                    run::mint_keys(&target, args.users.min(1000) as usize, &tag, run_time),
                )
                .await?;
                let plan = OpenPlan {
                    rate,
                    mix: args.scenario.clone(),
                    keys: Arc::new(keys),
                    max_in_flight: args.max_in_flight as usize,
                    run_time,
                    max_requests: args.max_requests,
                };
                run::open(
                    &target,
                    &plan,
                    &Progress::new("open", args.quiet),
                    interrupt.clone(),
                )
                .await?
            }
            None => {
                let plan = ClosedPlan {
                    users: args.users as usize,
                    spawn_rate: args.spawn_rate.unwrap_or(args.users as f64),
                    mix: args.scenario.clone(),
                    wait: args.wait,
                    run_time,
                    max_requests: args.max_requests,
                    keys: None,
                    tag: tag.clone(),
                };
                run::closed(
                    &target,
                    &plan,
                    &Progress::new("closed", args.quiet),
                    interrupt.clone(),
                )
                .await?
            }
        };
        print_table(&done.stats, args.rate.is_some());
        if !done.first_429.is_empty() {
            let mut counts: std::collections::BTreeMap<u64, usize> = Default::default();
            for n in done.first_429.values() {
                *counts.entry(*n).or_default() += 1;
            }
            let parts: Vec<String> = counts
                .iter()
                .map(|(n, users)| format!("{users} user(s) after {n} requests"))
                .collect();
            println!("first 429: {}", parts.join(", "));
        }
        if done.ending == Ending::RequestBound {
            eprintln!("load: stopped at the request bound ({})", args.max_requests);
        }
        if done.abandoned > 0 {
            eprintln!(
                "load: {} requests still in flight {} s after the end were abandoned (not counted)",
                done.abandoned,
                run::GRACE.as_secs()
            );
        }
        // Without a threshold of the user's, a run is judged by its error rate.
        let default = [Threshold::default_error_rate()];
        let thresholds = if args.thresholds.is_empty() {
            &default[..]
        } else {
            &args.thresholds[..]
        };
        outcome.verdicts = thresholds.iter().map(|t| t.check(&done.stats)).collect();
        for v in &outcome.verdicts {
            println!("threshold {}", v.line());
        }
        if let Some(prefix) = &args.csv {
            let files = done.stats.write_locust_csv(prefix, args.csv_full_history)?;
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        outcome.finished.push((None, done));
    }
    outcome.record = build_record(
        &args,
        &target,
        db_url.as_deref(),
        redis_url.as_deref(),
        &outcome,
    )
    .await?;
    if let Some(svc) = service {
        svc.stop().await?;
    }
    if let Some(signal) = outcome.interrupted() {
        eprintln!(
            "load: interrupted ({}); the results so far are above and in the run record (exit {})",
            signal.name(),
            signal.exit_code()
        );
    } else if outcome.succeeded() == 0 {
        let failed: u64 = outcome
            .finished
            .iter()
            .map(|(_, f)| f.stats.total.failures)
            .sum();
        eprintln!(
            "load: no request succeeded ({failed} failed): nothing was measured (exit {NOTHING_MEASURED_EXIT_CODE})"
        );
    } else if !outcome.passed() {
        if outcome.swept {
            eprintln!(
                "load: no level met {} (exit {THRESHOLD_EXIT_CODE})",
                sweep::objective(args.slo_p99)
            );
        } else {
            let failed: Vec<String> = outcome
                .verdicts
                .iter()
                .filter(|v| !v.pass)
                .map(|v| v.threshold.text.clone())
                .collect();
            eprintln!(
                "load: thresholds failed: {} (exit {THRESHOLD_EXIT_CODE})",
                failed.join(", ")
            );
        }
    }
    Ok(outcome)
}

/// Finds or starts the target: the in-process service (on the configured database and Redis,
/// the dataset loaded), a database, or an HTTP deployment — this machine's unless --allow-remote.
async fn prepare(args: &LoadArgs) -> Result<Prepared> {
    let config = &args.config;
    let target_text = args
        .target
        .clone()
        .or_else(|| config.service.target_url.clone());
    let reach = args.reach();
    match target_text.as_deref() {
        None => {
            let db = crate::stack::postgres(&config.servers, config.local_database()).await?;
            let redis = crate::stack::redis(&config.servers).await?;
            let opts = crate::setup::LoadOptions {
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                ..crate::setup::LoadOptions::default()
            };
            crate::setup::ensure_dataset(config, &db, &opts).await?;
            let mut cfg = config.clone();
            let limiter_under_test =
                args.scenario.has(Kind::Burst) || args.scenario.has(Kind::Realistic);
            if !args.read_limit_given && !limiter_under_test {
                cfg.service.rate_limit_read_per_minute = CAPACITY_READ_PER_MINUTE;
            }
            let svc = LocalService::start(AppState::connect(&cfg, &db, &redis).await?).await?;
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
            Ok(Prepared {
                target,
                service: Some(svc),
                db_url: Some(db),
                redis_url: Some(redis),
            })
        }
        Some(t) if t.eq_ignore_ascii_case("db") || t.starts_with("postgres") => {
            let url = if t.eq_ignore_ascii_case("db") {
                crate::stack::postgres(&config.servers, config.local_database()).await?
            } else {
                t.to_string()
            };
            reach.check_postgres(&url).await?;
            if !args.scenario.0.iter().all(|(k, _)| *k == Kind::Search) {
                bail!("the database target runs THE search SQL only: use --scenario search");
            }
            let params = loaded_dataset(&url, args.timeout).await?;
            Ok(Prepared {
                target: Target::Database {
                    url: url.clone(),
                    ef_search: config.service.search_ef_search,
                    vectors: Arc::new(scenario::query_vectors(&params)),
                },
                service: None,
                db_url: Some(url),
                redis_url: None,
            })
        }
        Some(t) if t.starts_with("http://") || t.starts_with("https://") => {
            reach.check_http(t).await?;
            Ok(Prepared {
                target: http_target(t.trim_end_matches('/'), args)?,
                service: None,
                db_url: None,
                redis_url: None,
            })
        }
        Some(t) => {
            bail!("--target '{t}' is neither an http(s):// URL, 'db', nor a postgres:// URL")
        }
    }
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

/// The end-of-run table: per request name and in total (ms).
pub fn print_table(stats: &Stats, open_model: bool) {
    let header: Vec<&str> = PERCENTILES.iter().map(|(_, h)| *h).collect();
    println!();
    println!(
        "{:<6} {:<36} {:>9} {:>7} {} {:>9}",
        "Type",
        "Name",
        "# reqs",
        "# fails",
        header
            .iter()
            .map(|h| format!("{:>8}", h.replace("100%", "max")))
            .collect::<Vec<_>>()
            .join(""),
        "req/s"
    );
    let row = |e: &stats::Entry, label: &str, uncorrected: bool| {
        let cells: String = PERCENTILES
            .iter()
            .map(|(q, _)| {
                let v = if uncorrected {
                    e.uncorrected_ms(*q)
                } else {
                    e.ms(*q)
                };
                format!("{:>8}", fmt_ms(v))
            })
            .collect();
        println!(
            "{:<6} {:<36} {:>9} {:>7} {} {:>9.1}",
            e.method,
            label,
            e.requests,
            e.failures,
            cells,
            stats.rps(e)
        );
    };
    for e in stats.entries_and_total() {
        row(e, &e.name, false);
    }
    if open_model {
        println!("uncorrected (from the actual send, as a closed-loop tool would report):");
        for e in stats.entries_and_total() {
            row(e, &format!("{} (uncorrected)", e.name), true);
        }
        let late = |q: f64| stats.lateness.value_at_quantile(q) as f64 / 1e6;
        println!(
            "schedule: requests went out p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms after their due time \
             (the generator's hand-off; more when all --max-in-flight slots were busy)",
            late(0.5),
            late(0.99),
            stats.lateness.max() as f64 / 1e6
        );
    }
    for e in stats.entries.values() {
        if !e.statuses.is_empty() {
            let codes: Vec<String> = e
                .statuses
                .iter()
                .map(|(s, n)| format!("{s} × {n}"))
                .collect();
            println!(
                "{:<6} {:<36} status codes: {}",
                e.method,
                e.name,
                codes.join(", ")
            );
        }
    }
    for ((method, name, error), f) in &stats.failures {
        println!("failure: {method} {name}: {error} × {}", f.occurrences);
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The figures of one entry as run-record metrics.
pub fn metrics_of(
    stats: &Stats,
    e: &stats::Entry,
    open_model: bool,
) -> std::collections::BTreeMap<String, f64> {
    let mut m = std::collections::BTreeMap::new();
    let keys = [
        "p50", "p66", "p75", "p80", "p90", "p95", "p98", "p99", "p999", "p9999", "max",
    ];
    for ((q, _), k) in PERCENTILES.iter().zip(keys) {
        m.insert(format!("{k}_ms"), e.ms(*q));
        if open_model {
            m.insert(format!("uncorrected_{k}_ms"), e.uncorrected_ms(*q));
        }
    }
    m.insert("mean_ms".into(), e.mean_ms());
    m.insert("min_ms".into(), e.min_ms());
    m.insert("count".into(), e.requests as f64);
    m.insert("failures".into(), e.failures as f64);
    m.insert("error_rate".into(), e.error_rate());
    m.insert("rps".into(), stats.rps(e));
    for (status, n) in &e.statuses {
        m.insert(format!("status_{status}"), *n as f64);
    }
    if open_model && e.method.is_empty() {
        m.insert(
            "schedule_lateness_p50_ms".into(),
            stats.lateness.value_at_quantile(0.5) as f64 / 1e6,
        );
        m.insert(
            "schedule_lateness_p99_ms".into(),
            stats.lateness.value_at_quantile(0.99) as f64 / 1e6,
        );
    }
    m
}

/// The run record: what was measured, on what, with which parameters. Reading the servers'
/// versions and settings may fail or hang (a server gone since the run): that is noted in the
/// record's `environment_unread`, and never loses the measurement.
async fn build_record(
    args: &LoadArgs,
    target: &Target,
    db_url: Option<&str>,
    redis_url: Option<&str>,
    outcome: &Outcome,
) -> Result<RunRecord> {
    let (environment, unread) = Environment::of_servers("load", db_url, redis_url).await;
    let model = if outcome.swept {
        "sweep"
    } else if args.rate.is_some() {
        "open"
    } else {
        "closed"
    };
    let mut rec = RunRecord::new(
        "load",
        environment,
        json!({
            "model": model,
            "target": match target { Target::Http { base, .. } => crate::secrets::redact(base), Target::Database { url, .. } => crate::secrets::redact(url) },
            "in_process": args.target.is_none() && args.config.service.target_url.is_none(),
            "scenario": args.scenario.to_string(),
            "users": args.users,
            "rate": args.rate,
            "sweep": args.sweep,
            "slo_p99_ms": args.slo_p99,
            "run_time_s": args.run_time.map(|d| d.as_secs_f64()),
            "max_requests": args.max_requests,
            "ef_search": args.config.service.search_ef_search,
            "quick": args.config.bench.quick,
            "environment_unread": unread,
        }),
    );
    rec.interrupted = outcome.interrupted().is_some();
    if db_url.is_some() {
        rec.dataset = Some(json!({
            "fingerprint": crate::dataset::fingerprint(&args.config.dataset, &args.config.index),
            "params": crate::dataset::fingerprint_params(&args.config.dataset, &args.config.index),
        }));
    }
    if outcome.swept {
        let (group, unit) = target.sweep_names();
        rec.results = sweep::entries(
            &outcome.finished,
            outcome.knee.as_ref(),
            args.slo_p99,
            group,
            unit,
        )?;
        return Ok(rec);
    }
    let open_model = args.rate.is_some();
    for (_, done) in &outcome.finished {
        let stats = &done.stats;
        for e in stats.entries_and_total() {
            let mut entry = ResultEntry {
                name: format!("load/{}", e.name),
                metrics: metrics_of(stats, e, open_model),
                histogram: Some(record::encode_histogram(&e.corrected)?),
                ..ResultEntry::default()
            };
            let is_total = e.method.is_empty();
            entry.gates = outcome
                .verdicts
                .iter()
                .filter(|v| match &v.threshold.name {
                    None => is_total,
                    Some(n) => !is_total && n == &e.name,
                })
                .map(|v| Gate {
                    name: v.threshold.text.clone(),
                    pass: v.pass,
                })
                .collect();
            if is_total {
                entry.series = history_series(stats);
            }
            rec.results.push(entry);
        }
    }
    Ok(rec)
}

/// Aggregated requests/s and p99 (last 10 s) per second.
pub fn history_series(stats: &Stats) -> std::collections::BTreeMap<String, Vec<(f64, f64)>> {
    let rows: Vec<_> = stats.total_history().collect();
    [
        (
            "rps_per_second",
            rows.iter().map(|r| (r.elapsed, r.rps)).collect(),
        ),
        (
            "p99_ms_per_second",
            rows.iter().map(|r| (r.elapsed, r.percentiles[7])).collect(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
