//! `cargo run --release --bin load` — capacity under concurrency: the seeds' user kinds (closed
//! model, Locust's) or a constant arrival rate (open model, corrected for coordinated omission),
//! against the in-process reference service, any deployment of the API, or the database itself;
//! k6-like thresholds with an exit code; a concurrency sweep with its knee; Locust's CSV files and
//! the project's run record.
//!
//! This file holds the binary's `main`, the orchestration ([`run()`]) and what an invocation found
//! ([`LoadOutcome`], its exit code). The rest, one concern each:
//! - `args`: the command line ([`LoadArgs`]) and its value parsers;
//! - `target`: the target made ready (in-process service, database, HTTP), its scenario
//!   compiled, users started before the clock;
//! - `reach`: the loopback rule where connections go;
//! - `scenario`: scenarios as data (the seeds' user kinds are files), virtual users, the
//!   database target's SQL user;
//! - `ingest`: writes beside the searches (the database target's INSERTs at a rate) and the write
//!   table a run that writes works on, restored after it;
//! - `model`: the closed and open models; `shape`: their stages (ramp, hold, spike); `signal`:
//!   Ctrl-C and SIGTERM;
//! - `failure`: why a request failed, as data; `stats`: what a run measured;
//! - `recall`: the query set and ground truth `--recall` scores every answer against;
//! - `threshold`: k6-like pass/fail criteria; `sweep`: levels and the knee;
//! - `output`: what is printed; `locust`: Locust's CSV files; `record`: the run record.

pub mod args;
pub mod failure;
pub mod ingest;
pub mod locust;
pub mod model;
pub mod output;
pub mod reach;
pub mod recall;
pub mod record;
pub mod scenario;
pub mod shape;
pub mod signal;
pub mod stats;
pub mod sweep;
pub mod target;
pub mod threshold;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::cpu_idle::CpuIdle;
use crate::record::{Environment, Kind, Parameters, RunRecord};
pub use args::LoadArgs;
use model::{ClosedPlan, Ending, Finished, OpenPlan, Progress};
pub use reach::Reach;
use signal::before_run;
pub use signal::{Interrupt, InterruptedBeforeRun, Signal};
use target::Prepared;
use threshold::{THRESHOLD_EXIT_CODE, Threshold, ThresholdCheck};

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
        crate::current_thread_runtime()
    } else {
        crate::multi_thread_runtime(Some(threads as usize))
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {}", crate::one_line(&e));
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

/// What a `load` invocation found.
#[derive(Debug)]
pub struct LoadOutcome {
    pub finished: Vec<(Option<u64>, Finished)>,
    pub verdicts: Vec<ThresholdCheck>,
    pub knee: Option<sweep::Knee>,
    pub swept: bool,
    /// The run record (not yet published).
    pub record: RunRecord,
}

impl LoadOutcome {
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

/// Everything `load` does, given its arguments; `interrupt` ends it early (Ctrl-C, SIGTERM).
pub async fn run(args: LoadArgs, interrupt: Option<Interrupt>) -> Result<LoadOutcome> {
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
        scenario,
        mut service,
        db_url,
        redis_url,
        write_table,
    } = before_run(&interrupt, target::prepare(&args)).await?;
    eprintln!("load: target {}", target.describe());
    let scorer = match &target {
        scenario::Target::Database { scorer, .. } => scorer.clone(),
        scenario::Target::Http { .. } => scenario.as_ref().and_then(|s| s.scorer.clone()),
    };
    // What every recall figure of the run says it is.
    let recall_label = scorer.as_ref().map(|s| {
        let ef = if service.is_some() || matches!(target, scenario::Target::Database { .. }) {
            format!("ef_search {}", args.config.service.search_ef_search)
        } else {
            "the target's ef_search".to_string()
        };
        format!(
            "recall@{} ({} queries, no filter, {ef}, under load)",
            s.k,
            s.distribution.name()
        )
    });
    let recall_column = scorer
        .as_ref()
        .map(|s| (format!("recall@{} {}", s.k, s.distribution.name()), s.len()));

    let mut outcome = LoadOutcome {
        finished: Vec::new(),
        verdicts: Vec::new(),
        knee: None,
        swept: !args.sweep.is_empty(),
        record: RunRecord::new(Environment::default(), Parameters::of(Kind::Load)),
    };
    if !args.sweep.is_empty() {
        let per_level = args.run_time.unwrap_or(Duration::from_secs(10));
        let most = *args.sweep.iter().max().unwrap_or(&1) as usize;
        let users = before_run(
            &interrupt,
            target::prepare_users(&target, scenario.as_ref(), most, &tag, per_level),
        )
        .await?;
        let prepared = Arc::new(users);
        for &users in &args.sweep {
            // Every level scores the same queries, from the set's first.
            target.rewind_scored();
            if let Some(s) = &scenario {
                s.rewind_scored();
            }
            let plan = ClosedPlan {
                users: users as usize,
                spawn_rate: f64::INFINITY,
                scenario: scenario.clone(),
                wait: args.wait,
                run_time: per_level,
                max_requests: args.max_requests,
                prepared: Some(prepared.clone()),
                tag: tag.clone(),
                stages: None,
            };
            let done = model::closed(
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
            recall_column.as_ref().map(|(c, n)| (c.as_str(), *n)),
        );
        if let Some(label) = &recall_label {
            println!("recall column: {label}");
        }
    } else {
        let run_time = args.run_time();
        let (label, unit) = if args.open_model() {
            ("open", "requests/s")
        } else {
            ("closed", "users")
        };
        let progress = Progress::new(label, args.quiet).with_stages(args.shape().cloned(), unit);
        let done = if args.open_model() {
            let users = before_run(
                &interrupt,
                target::prepare_users(
                    &target,
                    scenario.as_ref(),
                    args.users.min(1000) as usize,
                    &tag,
                    run_time,
                ),
            )
            .await?;
            let plan = OpenPlan {
                rate: args
                    .rate
                    .unwrap_or_else(|| args.rate_stages.as_ref().map_or(1.0, |s| s.peak())),
                stages: args.rate_stages.clone(),
                users: Arc::new(users),
                tag: tag.clone(),
                max_in_flight: args.max_in_flight as usize,
                run_time,
                max_requests: args.max_requests,
            };
            model::open(&target, &plan, &progress, interrupt.clone()).await?
        } else {
            let users = match &args.stages {
                Some(s) => s.peak().ceil() as usize,
                None => args.users as usize,
            };
            let plan = ClosedPlan {
                users,
                spawn_rate: args.spawn_rate.unwrap_or(args.users as f64),
                scenario: scenario.clone(),
                wait: args.wait,
                run_time,
                max_requests: args.max_requests,
                prepared: None,
                tag: tag.clone(),
                stages: args.stages.clone(),
            };
            model::closed(&target, &plan, &progress, interrupt.clone()).await?
        };
        let mut done = done;
        if let Some(spike) = args.shape().and_then(|s| s.spike()) {
            let rows: Vec<_> = done.stats.total_history().collect();
            let r = shape::recovery(&rows, &spike);
            done.stats.recovery = Some(r.seconds);
            output::print_recovery(&spike, &r, run_time);
        }
        output::print_finished(
            &done,
            args.open_model(),
            args.max_requests,
            recall_label.as_deref(),
        );
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
            let files = locust::write_csv(&done.stats, prefix, args.csv_full_history)?;
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        outcome.finished.push((None, done));
    }
    // The rows the run added, removed before anything else can fail.
    let restored = match &write_table {
        Some((url, dataset_rows)) => {
            // Nothing writes while the table is restored: the service has answered its last.
            if let Some(svc) = service.take() {
                svc.stop().await?;
            }
            let r = ingest::restore(url, *dataset_rows).await?;
            eprintln!(
                "load: write table restored: the {} rows the run added deleted in {:.2} s, VACUUM {:.1} s; its {dataset_rows} dataset rows checked",
                r.rows, r.delete_seconds, r.vacuum_seconds
            );
            Some(r)
        }
        None => None,
    };
    outcome.record = record::build_record(
        &args,
        &target,
        db_url.as_deref(),
        redis_url.as_deref(),
        &outcome,
        scenario.as_ref().and_then(|s| s.digest.clone()),
        write_table.as_ref().map(|(_, rows)| *rows),
    )
    .await?;
    if let Some(r) = restored {
        outcome.record.results.push(record::restore_entry(&r));
    }
    if let Some(svc) = service {
        svc.stop().await?;
    }
    output::print_ending(&outcome, args.slo_p99);
    Ok(outcome)
}
