//! `cargo bench rate_limit`: the Lua token bucket's evaluation latency — allowed, denied, on a fresh
//! key — and pipelined throughput, then an HDR measurement pass per path, and (with
//! `CAPBENCH_COMPARE=1`) redis-benchmark running EVALSHA of the same script with one client; last,
//! the limiter timeline (`rate_limit/timeline`, see [`limiter_timeline`]), which a filter selects
//! like any other benchmark (`cargo bench --bench rate_limit -- rate_limit/timeline`).

use std::cell::RefCell;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use criterion::Throughput;

use crate::bench::{
    BenchArgs, Interleaved, LatencySummary, criterion, criterion_median_ms, limiter_timeline,
    time_async,
};
use crate::config::Config;
use crate::ratelimit::{Limit, TokenBucket};
use crate::record::{
    self, Environment, Gate, GateKind, Metric, Op, Parameters, RateLimitParameters, ResultEntry,
    RunRecord,
};
use crate::stack;

/// A bucket that never runs dry (the allowed path).
const UNLIMITED: Limit = Limit {
    capacity: 1e12,
    per_second: 1e12,
};
/// A bucket that stays empty once its one token is taken (the denied path).
const EMPTY: Limit = Limit {
    capacity: 1.0,
    per_second: 1e-9,
};
/// Fresh keys use the seeds' read limit.
const SEEDS: Limit = Limit {
    capacity: 60.0,
    per_second: 1.0,
};
/// The allowed path's p50 may be at most this multiple of redis-benchmark's (issue #4).
pub const RATIO_TARGET: f64 = 1.3;
/// Evaluations per pipeline.
pub const PIPELINE: usize = 100;

/// The benchmarks of this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Allowed,
    Denied,
    FreshKey,
    Pipelined,
}

impl Path {
    pub const ALL: [Path; 4] = [Path::Allowed, Path::Denied, Path::FreshKey, Path::Pipelined];

    pub fn id(self) -> String {
        match self {
            Path::Allowed => "rate_limit/evalsha/allowed".into(),
            Path::Denied => "rate_limit/evalsha/denied".into(),
            Path::FreshKey => "rate_limit/evalsha/fresh_key".into(),
            Path::Pipelined => format!("rate_limit/pipelined/{PIPELINE}"),
        }
    }

    /// Criterion's (function, parameter): its directory is `rate_limit/<function>/<parameter>`.
    fn bench_id(self) -> criterion::BenchmarkId {
        match self {
            Path::Allowed => criterion::BenchmarkId::new("evalsha", "allowed"),
            Path::Denied => criterion::BenchmarkId::new("evalsha", "denied"),
            Path::FreshKey => criterion::BenchmarkId::new("evalsha", "fresh_key"),
            Path::Pipelined => criterion::BenchmarkId::new("pipelined", PIPELINE),
        }
    }
}

/// One measurement pass.
#[derive(Debug, Clone)]
pub struct LimiterPass {
    pub path: Path,
    pub latency: LatencySummary,
    pub histogram: hdrhistogram::Histogram<u64>,
    /// Evaluations per second.
    pub rate: f64,
    pub criterion_median_ms: Option<f64>,
}

/// redis-benchmark's figures for EVALSHA, one client.
#[derive(Debug, Clone, Copy)]
pub struct RedisBenchmark {
    pub p50_ms: f64,
    pub rps: f64,
}

/// `rounds` × (`n` allowed evaluations through [`TokenBucket`], then redis-benchmark `-n n`).
fn interleaved_comparison(
    rt: &tokio::runtime::Runtime,
    tb: &TokenBucket,
    url: &str,
    key: &str,
    quick: bool,
) -> Result<Interleaved> {
    let (rounds, n) = if quick { (5, 500) } else { (21, 2_000) };
    Interleaved::measure(
        rounds,
        || {
            let mut hist = record::latency_histogram();
            rt.block_on(async {
                for _ in 0..n {
                    let t = Instant::now();
                    tb.check(key, UNLIMITED).await?;
                    hist.saturating_record(t.elapsed().as_nanos() as u64);
                }
                anyhow::Ok(())
            })?;
            Ok(hist.value_at_quantile(0.5) as f64 / 1e6)
        },
        || {
            let rb = redis_benchmark(url, tb.sha(), n)?;
            Ok((rb.p50_ms, rb.rps))
        },
    )
}

pub type RunOutcome = crate::bench::RunOutcome<LimiterPass>;

pub fn main() -> ExitCode {
    crate::bench::bench_main(run)
}

/// What `args` selects of this binary: the Criterion paths, and whether the limiter timeline
/// (which Criterion does not know: it is a run of its own after the paths).
pub fn plan(args: &BenchArgs) -> (Vec<Path>, bool) {
    let paths = Path::ALL
        .into_iter()
        .filter(|p| args.selects(&p.id()))
        .collect();
    (paths, args.selects(limiter_timeline::ID))
}

/// The IDs `args` selects, in the order they run (what `--list` prints).
pub fn selected_ids(args: &BenchArgs) -> Vec<String> {
    let (paths, timeline) = plan(args);
    paths
        .iter()
        .map(|p| p.id())
        .chain(timeline.then(|| limiter_timeline::ID.to_string()))
        .collect()
}

pub fn run(args: &[String], config: Config) -> Result<RunOutcome> {
    let bench_args = BenchArgs::parse(args)?;
    let (plan, timeline) = plan(&bench_args);
    if let Some(outcome) = crate::bench::before_setup(&bench_args, &selected_ids(&bench_args))? {
        return Ok(outcome);
    }
    let rt = crate::current_thread_runtime()?;
    let url = rt.block_on(stack::redis(&config.servers))?;
    eprintln!("rate_limit: Redis at {}", crate::secrets::redact(&url));
    let tb = rt.block_on(TokenBucket::connect(&url))?;
    let tag = std::process::id();
    let (allowed_key, denied_key) = (
        format!("rl:bench-{tag}-allowed:read"),
        format!("rl:bench-{tag}-denied:read"),
    );
    rt.block_on(async {
        tb.reset(&allowed_key).await?;
        tb.reset(&denied_key).await?;
        tb.check(&denied_key, EMPTY).await?; // takes the only token
        anyhow::Ok(())
    })?;
    let fresh = RefCell::new(0u64);
    let fresh_key = |n: u64| format!("rl:bench-{tag}-fresh-{n}:read");

    let mut c = criterion(&config);
    let mut group = c.benchmark_group("rate_limit");
    let mut results = Vec::new();
    for path in plan.iter().copied() {
        group.throughput(Throughput::Elements(if path == Path::Pipelined {
            PIPELINE as u64
        } else {
            1
        }));
        time_async(&mut group, path.bench_id(), &rt, async || {
            evaluate(&tb, path, &allowed_key, &denied_key, &fresh, &fresh_key).await
        })
        .with_context(|| format!("benchmark {}", path.id()))?;
        if bench_args.test {
            continue;
        }
        let n = if config.bench.quick { 2_000 } else { 20_000 };
        let n = if path == Path::Pipelined {
            n / PIPELINE
        } else {
            n
        };
        let mut hist = record::latency_histogram();
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                let t = Instant::now();
                evaluate(&tb, path, &allowed_key, &denied_key, &fresh, &fresh_key).await?;
                hist.saturating_record(t.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(())
        })?;
        let per_call = if path == Path::Pipelined { PIPELINE } else { 1 };
        results.push(LimiterPass {
            path,
            latency: LatencySummary::of(&hist),
            histogram: hist,
            rate: (n * per_call) as f64 / start.elapsed().as_secs_f64().max(1e-9),
            criterion_median_ms: criterion_median_ms(&config, &path.id()),
        });
    }
    group.finish();
    c.final_summary();
    rt.block_on(async {
        tb.reset(&allowed_key).await?;
        tb.reset(&denied_key).await
    })?;
    // `--test` checks that each benchmark runs; nothing is measured, so nothing is recorded.
    if bench_args.test || (results.is_empty() && !timeline) {
        return Ok(RunOutcome::Ran(results));
    }
    let compared = if config.bench.compare && results.iter().any(|r| r.path == Path::Allowed) {
        Some(interleaved_comparison(
            &rt,
            &tb,
            &url,
            &allowed_key,
            config.bench.quick,
        )?)
    } else {
        None
    };
    if !results.is_empty() {
        print_table(&results, compared);
    }
    let mut record = rt.block_on(write_record(&config, &url, &results, compared))?;
    if timeline {
        let seconds = if config.bench.quick { 1.0 } else { 4.0 };
        let entry = rt.block_on(limiter_timeline::run(&tb, seconds))?;
        print_timeline(&entry);
        record.results.push(entry);
    }
    crate::report::publish(&record, args)?;
    Ok(RunOutcome::Ran(results))
}

/// The timeline's admissions and promise gates, one line each.
fn print_timeline(entry: &ResultEntry) {
    let m = |k: Metric| entry.metrics.get(&k).copied().unwrap_or(f64::NAN);
    println!(
        "{}: {} of {} attempts admitted in {:.1} s (a perfect bucket: {})",
        entry.name,
        m(Metric::Allowed),
        m(Metric::Attempts),
        m(Metric::DurationS),
        m(Metric::TheoreticalAllowed)
    );
    for g in &entry.gates {
        println!(
            "{}: {} {}",
            entry.name,
            if g.pass { "PASS" } else { "FAIL" },
            g.name
        );
    }
}

async fn evaluate(
    tb: &TokenBucket,
    path: Path,
    allowed_key: &str,
    denied_key: &str,
    fresh: &RefCell<u64>,
    fresh_key: &impl Fn(u64) -> String,
) -> Result<()> {
    match path {
        Path::Allowed => {
            let d = tb.check(allowed_key, UNLIMITED).await?;
            anyhow::ensure!(d.allowed, "the allowed path was denied");
        }
        Path::Denied => {
            let d = tb.check(denied_key, EMPTY).await?;
            anyhow::ensure!(!d.allowed, "the denied path was allowed");
        }
        Path::FreshKey => {
            let n = {
                let mut f = fresh.borrow_mut();
                *f += 1;
                *f
            };
            tb.check(&fresh_key(n), SEEDS).await?;
        }
        Path::Pipelined => {
            let mut pipe = redis::pipe();
            for _ in 0..PIPELINE {
                pipe.cmd("EVALSHA")
                    .arg(tb.sha())
                    .arg(1)
                    .arg(allowed_key)
                    .arg(UNLIMITED.capacity)
                    .arg(UNLIMITED.per_second)
                    .arg(1);
            }
            let mut conn = tb.connection();
            let _: Vec<(i64, i64, i64)> = pipe.query_async(&mut conn).await?;
        }
    }
    Ok(())
}

/// redis-benchmark with one client running EVALSHA of the same script on the allowed path.
pub fn redis_benchmark(url: &str, sha: &str, requests: usize) -> Result<RedisBenchmark> {
    let client = redis::Client::open(url)?;
    let (host, port) = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        other => bail!("redis-benchmark comparison needs a TCP Redis, not {other:?}"),
    };
    let key = format!("rl:bench-{}-redis-benchmark:read", std::process::id());
    let guest = match client.get_connection_info().redis_settings().password() {
        Some(_) => Some(GuestUser::create(&client, &key)?),
        None => None,
    };
    let mut cmd = Command::new("redis-benchmark");
    cmd.args([
        "-h",
        &host,
        "-p",
        &port.to_string(),
        "-c",
        "1",
        "-n",
        &requests.to_string(),
        "--precision",
        "3",
    ]);
    // Options before the command: redis-benchmark takes what follows it as the command's words.
    if let Some(guest) = &guest {
        cmd.args(["--user", &guest.name, "-a", &guest.password]);
    }
    cmd.args([
        "evalsha",
        sha,
        "1",
        &key,
        &UNLIMITED.capacity.to_string(),
        &UNLIMITED.per_second.to_string(),
        "1",
    ]);
    let out = cmd
        .output()
        .context("running redis-benchmark (installed with redis-server by setup/install-deps.sh)");
    if let Some(guest) = guest {
        guest.remove(&client)?;
    }
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // "latency summary (msec):" / "avg min p50 p95 p99 max" / values; "throughput summary: N requests per second"
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let p50 = lines
        .iter()
        .position(|l| l.starts_with("avg") && l.contains("p50"))
        .and_then(|i| {
            let names: Vec<&str> = lines[i].split_whitespace().collect();
            let values: Vec<&str> = lines.get(i + 1)?.split_whitespace().collect();
            values
                .get(names.iter().position(|n| *n == "p50")?)?
                .parse::<f64>()
                .ok()
        });
    let rps = lines
        .iter()
        .find_map(|l| l.strip_prefix("throughput summary:"))
        .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok());
    match (p50, rps) {
        (Some(p50_ms), Some(rps)) => Ok(RedisBenchmark { p50_ms, rps }),
        _ => bail!("could not read redis-benchmark's output: {}", text.trim()),
    }
}

/// A one-off ACL user for redis-benchmark, which takes a password only on its command line (where
/// every local user can read it): never the server's own password, only this user's, allowed the
/// bench's one key and nothing administrative, and removed when the run ends.
struct GuestUser {
    name: String,
    password: String,
}

impl GuestUser {
    fn create(client: &redis::Client, key: &str) -> Result<Self> {
        use rand::distr::{Alphanumeric, SampleString};
        let guest = Self {
            name: format!("capbench-bench-{}", std::process::id()),
            password: Alphanumeric.sample_string(&mut rand::rng(), 32),
        };
        let mut conn = client.get_connection_with_timeout(crate::db::connect_timeout())?;
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&guest.name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{}", guest.password))
            .arg(format!("~{key}"))
            .arg("resetchannels")
            .arg("+@all")
            .arg("-@admin")
            .arg("-@dangerous")
            .query::<()>(&mut conn)
            .context("creating a one-off Redis user for redis-benchmark (ACL SETUSER)")?;
        Ok(guest)
    }

    fn remove(self, client: &redis::Client) -> Result<()> {
        let mut conn = client.get_connection_with_timeout(crate::db::connect_timeout())?;
        redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&self.name)
            .query::<()>(&mut conn)
            .with_context(|| format!("removing Redis user {} (ACL DELUSER)", self.name))
    }
}

fn print_table(results: &[LimiterPass], compared: Option<Interleaved>) {
    println!();
    println!(
        "{:<32} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "benchmark (ms)", "criterion", "p50", "p90", "p99", "p99.9", "max", "evals/s"
    );
    for r in results {
        let l = &r.latency;
        println!(
            "{:<32} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>12.0}",
            r.path.id(),
            r.criterion_median_ms
                .map_or("-".into(), |m| format!("{m:.4}")),
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            r.rate
        );
    }
    if let Some(c) = compared {
        println!(
            "allowed path vs redis-benchmark -c 1 (EVALSHA of the same script), {} alternating rounds: \
             capbench p50 {:.4} ms, redis-benchmark p50 {:.4} ms ({:.0} req/s); median ratio {:.2} \
             (rounds {:.2}–{:.2}; target <= {RATIO_TARGET})",
            c.rounds, c.ours_ms, c.theirs_ms, c.theirs_rate, c.ratio, c.spread.0, c.spread.1
        );
    }
}

async fn write_record(
    config: &Config,
    url: &str,
    results: &[LimiterPass],
    compared: Option<Interleaved>,
) -> Result<RunRecord> {
    let (environment, _) = Environment::of_servers("rate_limit", None, Some(url)).await;
    let mut rec = RunRecord::new(
        environment,
        Parameters::RateLimit(RateLimitParameters {
            quick: config.bench.quick,
            pipeline: PIPELINE,
        }),
    );
    for r in results {
        let l = &r.latency;
        let mut metrics = l.metrics();
        metrics.insert(Metric::EvalsPerSecond, r.rate);
        if let Some(m) = r.criterion_median_ms {
            metrics.insert(Metric::CriterionMedianMs, m);
        }
        let mut gates = Vec::new();
        if let (Some(c), Path::Allowed) = (compared, r.path) {
            metrics.insert(Metric::RedisBenchmarkP50Ms, c.theirs_ms);
            metrics.insert(Metric::RedisBenchmarkRps, c.theirs_rate);
            metrics.insert(Metric::InterleavedP50Ms, c.ours_ms);
            metrics.insert(Metric::RatioVsRedisBenchmark, c.ratio);
            gates.push(Gate::check(
                format!("p50 within {RATIO_TARGET}x of redis-benchmark"),
                GateKind::Comparison,
                Metric::RatioVsRedisBenchmark,
                Op::Le,
                RATIO_TARGET,
                Some(c.ratio),
            ));
        }
        rec.results.push(ResultEntry {
            name: r.path.id(),
            metrics,
            histogram: Some(record::encode_histogram(&r.histogram)?),
            gates,
            ..ResultEntry::default()
        });
    }
    Ok(rec)
}
