//! `cargo bench capacity`: the launch question — how many concurrent users the search API serves
//! with p99 under the seeds' 50 ms. A concurrency sweep of SearchLoadUsers (the seeds' scenario,
//! 0.1 s think time) against the in-process reference service (`capacity/users/<n>`), then the
//! raw search SQL over that many connections without think time (`capacity_db/connections/<n>`,
//! what pgbench measures: the database's own ceiling), each with its knee. Both are `load` runs; the record is kind `capacity`.
//!
//! `CAPBENCH_SWEEP` sets the levels (default 1,5,10,20,50; quick mode 1,2,4,8) and
//! `CAPBENCH_RUN_TIME` the time per level (default 10 s; quick 2 s).
//!
//! Every answer is scored for recall@10 against the `CAPBENCH_QUERY_SET` (default heldout) and its
//! ground truth (`load --recall`): the users send the set's vectors instead of the seeds' texts, and
//! each level reports its recall beside its latency. `CAPBENCH_RECALL=0` sends the seeds' texts
//! unscored.

use std::process::ExitCode;

use anyhow::Result;

use crate::bench::{BenchArgs, RunOutcome};
use crate::config::Config;
use crate::load::{self, LoadArgs};
use crate::record::RunRecord;

use crate::gates::{CAPACITY_USERS as GATE_USERS, P99_MS as GATE_P99_MS};

pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// `load`'s own reading of the environment (CAPBENCH_SWEEP, CAPBENCH_RUN_TIME, …): one parser, one
/// error message for a bad value.
fn load_env() -> Result<LoadArgs> {
    LoadArgs::parse_from_args(&["load".to_string()])
        .map_err(|e| anyhow::anyhow!("{}", crate::config::first_line(&e.to_string())))
}

fn levels(env: &LoadArgs, config: &Config) -> Vec<u64> {
    match &env.sweep {
        v if !v.is_empty() => v.clone(),
        _ if config.bench.quick => vec![1, 2, 4, 8],
        _ => vec![1, 5, 10, GATE_USERS, 50],
    }
}

/// The sweep's levels selected by the filter, per group (`capacity`, `capacity_db`).
fn plan(args: &BenchArgs, env: &LoadArgs, config: &Config) -> (Vec<u64>, Vec<u64>) {
    let all = levels(env, config);
    let http = all
        .iter()
        .copied()
        .filter(|n| args.selects(&format!("capacity/users/{n}")))
        .collect();
    let db = all
        .iter()
        .copied()
        .filter(|n| args.selects(&format!("capacity_db/connections/{n}")))
        .collect();
    (http, db)
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome<load::sweep::Level>> {
    let bench_args = BenchArgs::parse(args)?;
    let env = load_env()?;
    let (http, db) = plan(&bench_args, &env, &config);
    let ids: Vec<String> = http
        .iter()
        .map(|n| format!("capacity/users/{n}"))
        .chain(db.iter().map(|n| format!("capacity_db/connections/{n}")))
        .collect();
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &ids)? {
        return Ok(outcome);
    }
    // `cargo test --benches` (--test): one short level each, as a smoke test.
    let (http, db, time) = if bench_args.test {
        (
            http.into_iter().take(1).collect(),
            db.into_iter().take(1).collect(),
            "1s".to_string(),
        )
    } else {
        let default = std::time::Duration::from_secs(if config.bench.quick { 2 } else { 10 });
        (
            http,
            db,
            format!("{}ms", env.run_time.unwrap_or(default).as_millis()),
        )
    };
    // Scored unless CAPBENCH_RECALL says otherwise.
    let recall = env.recall || std::env::var_os("CAPBENCH_RECALL").is_none();
    let runtime = crate::multi_thread_runtime(None)?;
    let mut record: Option<RunRecord> = None;
    let mut levels = Vec::new();
    for (target, sweep) in [(None, &http), (Some("db"), &db)] {
        if sweep.is_empty() {
            continue;
        }
        let mut argv: Vec<String> = ["load", "--quiet", "--run-time", &time, "--slo-p99"]
            .into_iter()
            .map(String::from)
            .collect();
        argv.push(format!("{GATE_P99_MS}ms"));
        argv.push("--sweep".into());
        argv.push(
            sweep
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        if recall {
            argv.push("--recall".into());
        }
        if let Some(t) = target {
            // The database's own capacity: no think time, as pgbench measures it.
            argv.extend(["--target", t, "--wait", "0"].map(String::from));
        }
        let load_args = LoadArgs::parse_from_args(&argv)
            .map_err(|e| anyhow::anyhow!("{}", crate::config::first_line(&e.to_string())))?;
        println!(
            "capacity: {} sweep over {} {}, {time} each, p99 objective {GATE_P99_MS} ms{}",
            if target.is_some() {
                "raw search SQL (no think time)"
            } else {
                "in-process service"
            },
            sweep
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if target.is_some() {
                "connections"
            } else {
                "users"
            },
            if recall {
                format!(
                    ", answers scored against the {} query set",
                    config.bench.query_set.name()
                )
            } else {
                String::new()
            },
        );
        let outcome = runtime.block_on(load::run(load_args, None))?;
        for (users, done) in &outcome.finished {
            levels.push(load::sweep::Level::of(users.unwrap_or(0), &done.stats));
        }
        if target.is_none()
            && let Some((_, done)) = outcome
                .finished
                .iter()
                .find(|(u, _)| *u == Some(GATE_USERS))
        {
            let p99 = done.stats.total.ms(0.99);
            println!(
                "the seeds' gate, {GATE_USERS} users: p99 {p99:.2} ms < {GATE_P99_MS} ms: {}",
                if p99 < GATE_P99_MS { "PASS" } else { "FAIL" }
            );
        }
        let mut this = outcome.record;
        let mut results = std::mem::take(&mut this.results);
        if target.is_none() {
            // The seeds' launch gate, on the level it names.
            for r in results
                .iter_mut()
                .filter(|r| r.name == format!("capacity/users/{GATE_USERS}"))
            {
                let p99 = r.metric(&crate::record::Metric::P99_MS);
                r.gates.push(crate::gates::seeds_p99(
                    Some(&format!("with {GATE_USERS} users")),
                    p99,
                ));
            }
        }
        match record.as_mut() {
            None => {
                this.results = results;
                record = Some(this);
            }
            Some(r) => r.results.extend(results),
        }
    }
    if let Some(mut record) = record {
        if let crate::record::Parameters::Load(p) = record.parameters {
            record.parameters = crate::record::Parameters::Capacity(p);
        }
        if !bench_args.test {
            crate::report::publish(&record, args)?;
        }
    }
    Ok(RunOutcome::Ran(levels))
}
