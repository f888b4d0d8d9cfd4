//! `load`'s command line: [`LoadArgs`] (clap derive, every flag with its `CAPBENCH_*` variable) and
//! its value parsers — durations (a bare number is seconds), the objective in ms, arrival rates.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser};

use super::Reach;
use super::scenario::Spec;
use super::shape::Stages;
use super::threshold::Threshold;
use crate::config::Config;

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
    /// What the users do: the seeds' built-in kinds search (SearchLoadUser), burst (BurstAgent),
    /// realistic (RealisticAgent), or scenario files (docs/scenarios/), with weights, e.g.
    /// `search:3,burst:1` or `docs/scenarios/rag.toml`.
    #[arg(long, env = "CAPBENCH_SCENARIO", default_value = "search")]
    pub scenario: Spec,
    /// Seeds the scenario's random choices (weighted tasks, random variables, waits between):
    /// the same seed, the same requests.
    #[arg(long, env = "CAPBENCH_SCENARIO_SEED", default_value_t = 1)]
    pub scenario_seed: u64,
    /// Replace every kind's wait between tasks (e.g. `0` to saturate).
    #[arg(long, env = "CAPBENCH_WAIT", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Open model: a constant arrival rate (`500/s`, `500`), latency measured from each request's
    /// intended start.
    #[arg(long, env = "CAPBENCH_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Closed model shaped like k6's stages: `30s:20,2m:20,10s:200,1m:200,30s:20` — each stage moves
    /// the number of users linearly to its target over its duration (ramp, hold, spike, ramp
    /// down); users start as it rises and retire after their task as it falls. The run lasts the
    /// stages' sum.
    #[arg(long, env = "CAPBENCH_STAGES")]
    pub stages: Option<Stages>,
    /// Open model shaped like k6's ramping arrival rate: the stages' targets are arrivals per
    /// second (`30s:100,1m:100,10s:1000,1m:1000,30s:100`), each request due when the rate's
    /// integral reaches it.
    #[arg(long, env = "CAPBENCH_RATE_STAGES")]
    pub rate_stages: Option<Stages>,
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
    /// Score every answer for recall@k: the queries come from the query set --query-set names
    /// (heldout, near-duplicate, ood; docs/recall.md) and each answer is checked against its
    /// ground truth. The built-in search sends the set's vectors (`"vector"` in the search API);
    /// the database target searches them; a scenario file draws them with `from = "query_set"`.
    #[arg(long, env = "CAPBENCH_RECALL", value_parser = crate::config::parse_bool)]
    pub recall: bool,
    /// The database target only: INSERT this many rows per second beside the searches (`50/s`),
    /// on a schedule of their own, into the write table (a copy of the dataset; the rows are
    /// removed after the run). Against an HTTP API, writes are a scenario's requests
    /// (`--scenario search:4,write:1`).
    #[arg(long, env = "CAPBENCH_WRITE_RATE", value_parser = parse_rate)]
    pub write_rate: Option<f64>,
    /// Rows per INSERT with --write-rate (a multi-row INSERT above 1).
    #[arg(long, env = "CAPBENCH_WRITE_BATCH", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub write_batch: u64,
    /// Writer connections with --write-rate (statement j is sent by writer j mod N).
    #[arg(long, env = "CAPBENCH_WRITERS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Set when the read limit came from the command line or the environment.
    #[arg(skip)]
    pub read_limit_given: bool,
    /// Set when the write limit came from the command line or the environment.
    #[arg(skip)]
    pub write_limit_given: bool,
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
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(
                    clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable
                )
            )
        };
        args.read_limit_given = given("rate_limit_read_per_minute");
        args.write_limit_given = given("rate_limit_write_per_minute");
        if let Some(target) = &args.target {
            // Like the configuration's URLs: never shown in any line, record or page.
            crate::secrets::remember_in(target);
        }
        args.config = args.config.clone().effective();
        Ok(args)
    }

    /// The open model: a constant rate (`--rate`) or a shaped one (`--rate-stages`).
    pub fn open_model(&self) -> bool {
        self.rate.is_some() || self.rate_stages.is_some()
    }

    /// The stages shaping the run, if any (users or arrivals/s).
    pub fn shape(&self) -> Option<&Stages> {
        self.stages.as_ref().or(self.rate_stages.as_ref())
    }

    /// How long a run (not a sweep level) lasts: the stages' sum, --run-time, or 60 s.
    pub fn run_time(&self) -> Duration {
        match self.shape() {
            Some(s) => s.total(),
            None => self.run_time.unwrap_or(Duration::from_secs(60)),
        }
    }

    /// Where this run may send traffic: anywhere with --allow-remote, else this machine only.
    pub fn reach(&self) -> Reach {
        if self.allow_remote {
            Reach::Anywhere
        } else {
            self.this_machine.clone()
        }
    }

    /// The rules between flags that clap's attributes do not say, and the CSV directory (made
    /// now, so that it cannot fail after a measurement).
    pub(super) fn check(&self) -> Result<()> {
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
        let shaped = self.stages.is_some() || self.rate_stages.is_some();
        if self.stages.is_some() && self.rate_stages.is_some() {
            bail!("--stages (users) and --rate-stages (arrivals/s) shape one run: choose one");
        }
        if shaped && (self.rate.is_some() || !self.sweep.is_empty()) {
            bail!(
                "--stages and --rate-stages set the load over time: not with --rate or --sweep (a constant rate, levels)"
            );
        }
        if shaped && self.run_time.is_some() {
            bail!("--stages and --rate-stages set the run's time (their sum): drop --run-time");
        }
        if self.write_rate.is_some() && !self.sweep.is_empty() {
            bail!(
                "--write-rate and --sweep do not combine: a sweep compares its levels on the same table, and writes grow it"
            );
        }
        if self.write_rate.is_none() && (self.write_batch != 1 || self.writers != 1) {
            bail!("--write-batch and --writers shape the writes of --write-rate: give it too");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantimes_or_bare_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        // Why humantime alone does not do: it wants a unit.
        assert!(humantime::parse_duration("90").is_err());
        for bad in ["-1", "fast", "inf", ""] {
            let e = parse_duration(bad).unwrap_err();
            assert!(
                e.contains("is not a duration like 60s, 2m, 250ms"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn objectives_are_milliseconds_above_zero() {
        assert_eq!(parse_ms("50ms"), Ok(50.0));
        assert_eq!(parse_ms("0.5"), Ok(500.0));
        assert_eq!(
            parse_ms("0s"),
            Err("the objective must be above zero".to_string())
        );
    }

    #[test]
    fn rates_per_second_or_minute() {
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("500"), Ok(500.0));
        assert_eq!(parse_rate("30000/m"), Ok(500.0));
        assert_eq!(
            parse_rate("5/h"),
            Err("'h' in '5/h' is not /s or /m".to_string())
        );
        assert!(parse_rate("0/s").unwrap_err().contains("must be above 0"));
        assert!(
            parse_rate("2000000")
                .unwrap_err()
                .contains("at most 1,000,000/s")
        );
        assert!(
            parse_rate("lots")
                .unwrap_err()
                .contains("is not a rate like 500/s")
        );
    }
}
