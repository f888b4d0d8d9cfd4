//! What every bench binary shares: reading Criterion's own command line to know which benchmarks
//! were selected *before* doing any setup (`cargo bench hnsw` passes `hnsw` to every bench binary;
//! those with nothing selected must start nothing and load nothing), Criterion's configuration
//! (quick mode), and latency summaries from HDR histograms.

pub mod capacity;
pub mod hnsw;
pub mod hnsw_filtered;
pub mod hnsw_insert;
pub mod http_search;
pub mod limiter_timeline;
pub mod memory;
pub mod rate_limit;
pub mod scale;
pub mod streaming;
pub mod variants;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use hdrhistogram::Histogram;

use crate::config::Config;
use crate::record::{Gate, GateKind, Metric, Metrics, Op, Stat};

/// Criterion's timing loop for one async operation, on `rt`: each sample awaits `op` as many times
/// as Criterion asks and is timed as a whole. The first error ends the benchmark — the samples left
/// are not run — and is returned, so a failing request is the bench's error, never a fast figure.
pub fn time_async<F>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    rt: &tokio::runtime::Runtime,
    mut op: F,
) -> Result<()>
where
    F: AsyncFnMut() -> Result<()>,
{
    let mut failure = None;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            if failure.is_some() {
                // Criterion still asks for its samples: hand back a nominal time, run nothing.
                return Duration::from_nanos(iters.max(1));
            }
            rt.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    if let Err(e) = op().await {
                        failure = Some(e);
                        break;
                    }
                }
                start.elapsed()
            })
        })
    });
    failure.map_or(Ok(()), Err)
}

/// Which benchmarks Criterion will run, read from the same arguments Criterion reads.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    filter: Filter,
    /// `--list`: print the benchmark names, run nothing.
    pub list: bool,
    /// `--test` (or `cargo test --benches`): run each benchmark once, as a smoke test.
    pub test: bool,
    /// The arguments themselves (program name first), for the calibration runs.
    args: Vec<String>,
}

#[derive(Debug, Clone)]
enum Filter {
    All,
    Regex(regex::Regex),
    Exact(String),
    Nothing,
}

/// Criterion options that take a value (so their value is not mistaken for the filter).
const VALUE_OPTIONS: &[&str] = &[
    "-c",
    "--color",
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--format",
    "--profile-time",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--plotting-backend",
    "--output-format",
];

impl BenchArgs {
    /// Parses `args` (program name first) the way Criterion's `configure_from_args` does.
    pub fn parse(args: &[String]) -> Result<Self> {
        let (mut filter, mut exact, mut ignored, mut list, mut test) =
            (None, false, false, false, false);
        let mut it = args.iter().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--exact" => exact = true,
                "--ignored" => ignored = true,
                "--list" => list = true,
                "--test" => test = true,
                a if VALUE_OPTIONS.contains(&a) => {
                    it.next();
                }
                a if a.starts_with('-') => {}
                a if filter.is_none() => filter = Some(a.to_string()),
                _ => {}
            }
        }
        let filter = match (ignored, filter) {
            (true, _) => Filter::Nothing,
            (false, None) => Filter::All,
            (false, Some(f)) if exact => Filter::Exact(f),
            (false, Some(f)) => Filter::Regex(
                regex::Regex::new(&f)
                    .with_context(|| format!("the benchmark filter '{f}' is not a valid regex"))?,
            ),
        };
        Ok(Self {
            filter,
            list,
            test,
            args: args.to_vec(),
        })
    }

    /// The arguments of this process.
    pub fn from_env() -> Result<Self> {
        Self::parse(&std::env::args().collect::<Vec<_>>())
    }

    /// Whether the filter names `group` itself (`cargo bench scale`, `scale/bq`): how an opt-in
    /// bench tells a request for it from a plain `cargo bench` or another bench's name.
    pub fn names(&self, group: &str) -> bool {
        match &self.filter {
            Filter::Regex(r) => r.as_str().contains(group),
            Filter::Exact(e) => e.starts_with(group),
            Filter::All | Filter::Nothing => false,
        }
    }

    /// Whether no filter was given (a plain `cargo bench`): everything runs.
    pub fn runs_everything(&self) -> bool {
        matches!(self.filter, Filter::All)
    }

    /// Whether Criterion would run the benchmark `id` (e.g. `hnsw/ef_search/40`).
    pub fn selects(&self, id: &str) -> bool {
        match &self.filter {
            Filter::All => true,
            Filter::Regex(r) => r.is_match(id),
            Filter::Exact(e) => e == id,
            Filter::Nothing => false,
        }
    }
}

/// The database a bench measures: the embedded stack (or `DATABASE_URL`) with `config`'s dataset
/// loaded, saying where and, when it was built now, what setup did (lines prefixed `bench:`).
pub async fn database(config: &Config, bench: &str) -> Result<String> {
    let ready = crate::setup::ready(config, crate::setup::Needs::Database).await?;
    ready.pristine()?;
    let url = ready.database_url;
    eprintln!("{bench}: PostgreSQL at {}", crate::secrets::redact(&url));
    if let crate::setup::DatasetChange::Built {
        fingerprint,
        figures,
    } = ready.dataset
    {
        for line in crate::setup::summary(&figures, &fingerprint) {
            eprintln!("{bench}: {line}");
        }
    }
    Ok(url)
}

/// What a run of a bench binary did.
#[derive(Debug)]
pub enum RunOutcome<T> {
    /// The filter selected none of this binary's benchmarks: nothing was started or loaded.
    NotSelected,
    /// `--list`: the selected benchmarks' names were printed.
    Listed,
    /// The measurement passes, in the order they ran.
    Ran(Vec<T>),
}

/// A bench binary's `main`: configuration from the environment, `run`, one `error:` line on failure.
pub fn bench_main<T>(run: fn(&[String], Config) -> Result<RunOutcome<T>>) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {}", crate::one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    // Held for the whole run, so both sides of every comparison (pgbench, redis-benchmark, the
    // raw SQL under http_search) are measured under the same idle policy.
    let _awake = crate::cpu_idle::for_run(config.bench.cpu_idle.unwrap_or_default());
    match run(&args, config) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `CAPBENCH_CALIBRATE=N`: before the run itself, this bench binary runs N more times, each a
/// separate process with the same arguments minus the baseline flags — A, A, A… — so that the run
/// (and the baseline it saves) has N comparable earlier runs to learn the machine's run-to-run
/// noise from. Each writes its record to `runs/` as any run does. Nothing happens without the
/// variable, or in a child; [`before_setup`] calls it only when this binary has benchmarks to run.
pub fn calibrate(args: &[String]) -> Result<()> {
    let Ok(value) = std::env::var("CAPBENCH_CALIBRATE") else {
        return Ok(());
    };
    let n: u32 = match value.trim() {
        "" | "0" => return Ok(()),
        v => v
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .with_context(|| {
                format!("CAPBENCH_CALIBRATE must be a number of runs from 0 to 100, not '{v}'")
            })?,
    };
    let exe = std::env::current_exe().context("finding this bench binary to calibrate")?;
    let child_args = without_baseline_flags(args);
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    crate::record::set_calibration_id(&id);
    for i in 1..=n {
        eprintln!(
            "calibration run {i}/{n} (CAPBENCH_CALIBRATE={n}): {}",
            child_args.join(" ")
        );
        let status = std::process::Command::new(&exe)
            .args(&child_args)
            .env_remove("CAPBENCH_CALIBRATE")
            .env_remove("CAPBENCH_FAIL_ON_REGRESSION")
            .env(crate::record::CALIBRATION_ENV, &id)
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        anyhow::ensure!(
            status.success(),
            "calibration run {i}/{n} failed ({status}); the run itself was not started"
        );
    }
    Ok(())
}

/// `args` without the program name and without `--save-baseline`/`--baseline`/`--baseline-lenient`
/// (`-s`/`-b`) and their values.
pub fn without_baseline_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-s" | "--save-baseline" | "-b" | "--baseline" | "--baseline-lenient" => {
                it.next();
            }
            a if a.starts_with("--save-baseline=")
                || a.starts_with("--baseline=")
                || a.starts_with("--baseline-lenient=") => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Decides before any setup: with nothing selected, `NotSelected`; with `--list`, the selected IDs
/// printed as Criterion prints them, `Listed`; otherwise `None` (go on) — after the calibration
/// runs `CAPBENCH_CALIBRATE` asks for ([`calibrate`]), which only a binary with work to do makes.
pub fn before_setup<T>(args: &BenchArgs, selected: &[String]) -> Result<Option<RunOutcome<T>>> {
    if selected.is_empty() {
        return Ok(Some(RunOutcome::NotSelected));
    }
    if args.list {
        for id in selected {
            println!("{id}: benchmark");
        }
        return Ok(Some(RunOutcome::Listed));
    }
    if !args.test {
        calibrate(&args.args)?;
    }
    Ok(None)
}

/// Criterion configured for this run: quick mode shortens everything; Criterion's own flags
/// (`--save-baseline`, `--baseline`, `--sample-size`, …) still apply on top.
pub fn criterion(config: &Config) -> Criterion {
    let c = Criterion::default().output_directory(&criterion_home(config));
    let c = if config.bench.quick {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        c
    };
    c.configure_from_args()
}

/// Latency percentiles and throughput of one measurement pass.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    /// From a histogram of nanoseconds.
    pub fn of(hist: &Histogram<u64>) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: hist.len(),
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p95_ms: ms(hist.value_at_quantile(0.95)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1e6,
        }
    }
}

impl LatencySummary {
    /// The figures as run-record metrics (`count`, `p50_ms` … `max_ms`, `mean_ms`).
    pub fn metrics(&self) -> Metrics {
        Metrics::from([
            (Metric::Count, self.count as f64),
            (Metric::P50_MS, self.p50_ms),
            (Metric::Latency(Stat::P90), self.p90_ms),
            (Metric::P95_MS, self.p95_ms),
            (Metric::P99_MS, self.p99_ms),
            (Metric::Latency(Stat::P999), self.p999_ms),
            (Metric::Latency(Stat::Max), self.max_ms),
            (Metric::MEAN_MS, self.mean_ms),
        ])
    }
}

/// Where Criterion keeps its data and reports: `CRITERION_HOME` (the project's cargo config points it
/// at `target-reports/criterion`). Quick mode keeps a history of its own next to it, so a smoke run
/// on the small dataset is never compared with a real one.
pub fn criterion_home(config: &Config) -> std::path::PathBuf {
    let home = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target/criterion"));
    if config.bench.quick {
        let name = home
            .file_name()
            .map_or("criterion".into(), |n| n.to_string_lossy().into_owned());
        home.with_file_name(format!("{name}-quick"))
    } else {
        home
    }
}

/// Criterion's median estimate (ms) of benchmark `id`, shown beside the run's own HDR figures.
///
/// It is read from `<CRITERION_HOME>/<id>/new/estimates.json`, which is Criterion's internal data,
/// not a stable interface: a Criterion release may move the file or change its shape. So it is read
/// softly: when the file is missing or not of the expected shape, one `note:` line on stderr says
/// so, and the run goes on — its own figures are printed and recorded as always; only the
/// `criterion` column shows `-` and the record has no `criterion_median_ms`.
pub fn criterion_median_ms(config: &Config, id: &str) -> Option<f64> {
    match read_criterion_median_ms(&criterion_home(config), id) {
        Ok(ms) => Some(ms),
        Err(e) => {
            crate::say!(
                "note: Criterion's median for {id} is left out ({}); the run's own figures are unaffected",
                crate::one_line(&e)
            );
            None
        }
    }
}

/// The median (ms) in Criterion's estimates of benchmark `id` under `home`, or an error naming the
/// file and what was wrong with it (see [`criterion_median_ms`] on why this may fail).
pub fn read_criterion_median_ms(home: &std::path::Path, id: &str) -> Result<f64> {
    let path = home.join(id).join("new").join("estimates.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let estimates: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    estimates
        .pointer("/median/point_estimate")
        .and_then(serde_json::Value::as_f64)
        .filter(|ns| ns.is_finite() && *ns >= 0.0)
        .map(|ns| ns / 1e6)
        .with_context(|| {
            format!(
                "{} has no median.point_estimate in nanoseconds (Criterion's internal format changed?)",
                path.display()
            )
        })
}

/// A benchmark measured in rounds: every round's latencies merged into one histogram (the figures
/// shown and compared), and each round's own figures kept (their spread is the run's estimate of
/// its noise, drift over the run included).
#[derive(Debug, Clone)]
pub struct Rounds {
    histogram: Histogram<u64>,
    per_round: Vec<Metrics>,
    seconds: f64,
}

impl Default for Rounds {
    fn default() -> Self {
        Self {
            histogram: crate::record::latency_histogram(),
            per_round: Vec::new(),
            seconds: 0.0,
        }
    }
}

impl Rounds {
    /// Adds one round: its latencies (ns) and the wall time it took (for QPS).
    pub fn add(&mut self, round: &Histogram<u64>, seconds: f64) -> Result<()> {
        self.histogram
            .add(round)
            .context("merging a round's histogram")?;
        self.seconds += seconds;
        let mut m = LatencySummary::of(round).metrics();
        m.retain(|k, _| {
            [
                Metric::Count,
                Metric::P50_MS,
                Metric::P95_MS,
                Metric::P99_MS,
                Metric::MEAN_MS,
            ]
            .contains(k)
        });
        m.insert(Metric::Seconds, seconds);
        m.insert(Metric::Qps, round.len() as f64 / seconds.max(1e-9));
        self.per_round.push(m);
        Ok(())
    }

    /// Every round's latencies.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// Requests per second over all rounds (all requests / the time spent in them).
    pub fn qps(&self) -> f64 {
        self.histogram.len() as f64 / self.seconds.max(1e-9)
    }

    /// Each round's figures, in order.
    pub fn per_round(&self) -> &[Metrics] {
        &self.per_round
    }
}

/// The order benchmarks `0..len` are measured in during round `round`: each round starts one
/// further along, so no benchmark always runs first (cold) or always right after the same one.
pub fn round_order(len: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |i| (i + round) % len.max(1))
}

/// capbench against an independent tool on the same work, measured in alternating rounds: this
/// machine's speed drifts by 10–30 % from one few-second stretch to the next (a neighbour, the CPU's
/// clock), so two figures taken minutes apart can differ by more than what is compared; a ratio is
/// only fair within a round. The figures are medians over the rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interleaved {
    pub rounds: usize,
    /// capbench's figure (ms): a p50 or a mean, as the tool's own figure is.
    pub ours_ms: f64,
    /// The tool's figure (ms).
    pub theirs_ms: f64,
    /// Median over rounds of the per-round ratio ours / theirs.
    pub ratio: f64,
    /// The lowest and highest per-round ratio.
    pub spread: (f64, f64),
    /// The tool's rate (per second).
    pub theirs_rate: f64,
}

impl Interleaved {
    /// `rounds` × (`ours`, then `theirs`): `ours` returns capbench's figure in ms, `theirs` the
    /// tool's figure in ms and its rate. The first error ends the comparison and is returned.
    pub fn measure(
        rounds: usize,
        mut ours: impl FnMut() -> Result<f64>,
        mut theirs: impl FnMut() -> Result<(f64, f64)>,
    ) -> Result<Self> {
        let mut pairs = Vec::with_capacity(rounds);
        for _ in 0..rounds.max(1) {
            let o = ours()?;
            let (t, rate) = theirs()?;
            pairs.push((o, t, rate));
        }
        Ok(Self::of(&pairs))
    }

    /// From (ours ms, theirs ms, theirs rate) per round; at least one round.
    pub fn of(pairs: &[(f64, f64, f64)]) -> Self {
        let ratios: Vec<f64> = pairs.iter().map(|(o, t, _)| o / t).collect();
        Self {
            rounds: pairs.len(),
            ours_ms: median(pairs.iter().map(|p| p.0).collect()),
            theirs_ms: median(pairs.iter().map(|p| p.1).collect()),
            ratio: median(ratios.clone()),
            spread: (
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ),
            theirs_rate: median(pairs.iter().map(|p| p.2).collect()),
        }
    }
}

/// How far capbench's mean latency may sit from pgbench's running the same statement (the
/// variants' search, the write bench's INSERT: "agrees with pgbench … within 10 %").
pub const PGBENCH_AGREEMENT: f64 = 0.10;

/// The two sides of [`PGBENCH_AGREEMENT`] as gates on the interleaved ratio.
pub fn pgbench_agreement_gates(ratio: f64) -> Vec<Gate> {
    [
        (Op::Ge, 1.0 - PGBENCH_AGREEMENT),
        (Op::Le, 1.0 + PGBENCH_AGREEMENT),
    ]
    .into_iter()
    .map(|(op, bound)| {
        Gate::check(
            format!(
                "mean within {:.0} % of pgbench's",
                PGBENCH_AGREEMENT * 100.0
            ),
            GateKind::Comparison,
            Metric::RatioVsPgbench,
            op,
            bound,
            Some(ratio),
        )
    })
    .collect()
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod rounds_tests {
    use super::*;

    #[test]
    fn rounds_merge_and_keep_each_round() {
        let mut r = Rounds::default();
        for (ms, secs) in [(1u64, 0.5), (3u64, 1.5)] {
            let mut h = crate::record::latency_histogram();
            for _ in 0..100 {
                h.record(ms * 1_000_000).unwrap();
            }
            r.add(&h, secs).unwrap();
        }
        assert_eq!(r.histogram().len(), 200);
        assert!((r.qps() - 100.0).abs() < 1e-9, "200 requests in 2 s");
        assert_eq!(r.per_round().len(), 2);
        assert!((r.per_round()[0][&Metric::Qps] - 200.0).abs() < 1e-9);
        assert!((r.per_round()[1][&Metric::P50_MS] - 3.0).abs() < 0.01);
    }

    #[test]
    fn calibration_runs_drop_the_baseline_flags() {
        let args: Vec<String> = [
            "hnsw-bin",
            "--bench",
            "--save-baseline",
            "a",
            "hnsw/ef_search/40",
            "--baseline=b",
            "-b",
            "c",
            "--noise-threshold",
            "0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            without_baseline_flags(&args),
            vec!["--bench", "hnsw/ef_search/40", "--noise-threshold", "0.1"]
        );
    }

    #[test]
    fn round_order_rotates() {
        assert_eq!(round_order(3, 0).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(round_order(3, 1).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(round_order(3, 5).collect::<Vec<_>>(), vec![2, 0, 1]);
    }

    /// Criterion timing a tiny async operation, writing under a temporary directory.
    fn tiny_criterion(dir: &std::path::Path) -> Criterion {
        Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_millis(10))
            .measurement_time(Duration::from_millis(20))
            .nresamples(100)
            .without_plots()
            .output_directory(dir)
    }

    #[test]
    fn time_async_runs_the_operation_and_returns_its_first_error_without_running_more() {
        let dir = std::env::temp_dir().join(format!("capbench-time-async-{}", std::process::id()));
        let rt = crate::current_thread_runtime().unwrap();
        let mut c = tiny_criterion(&dir);
        let mut group = c.benchmark_group("t");

        let mut calls = 0u64;
        time_async(&mut group, BenchmarkId::new("ok", 1), &rt, async || {
            calls += 1;
            tokio::task::yield_now().await;
            Ok(())
        })
        .unwrap();
        assert!(
            calls >= 10,
            "Criterion's samples ran the operation: {calls} calls"
        );

        let mut calls = 0u64;
        let err = time_async(&mut group, BenchmarkId::new("fails", 1), &rt, async || {
            calls += 1;
            anyhow::ensure!(calls < 3, "call {calls} failed");
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "call 3 failed");
        assert_eq!(calls, 3, "nothing ran after the first error");
        group.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn interleaved_takes_the_median_of_per_round_ratios_not_the_ratio_of_medians() {
        // The machine slows down in round 2: each round's own ratio is 1.0 or 1.1, while the
        // figures themselves drift by 2×.
        let pairs = [(1.0, 1.0, 1000.0), (2.2, 2.0, 500.0), (1.1, 1.0, 900.0)];
        let c = Interleaved::of(&pairs);
        assert_eq!(c.rounds, 3);
        assert!((c.ratio - 1.1).abs() < 1e-12, "{c:?}");
        assert_eq!(c.spread, (1.0, 1.1));
        assert_eq!((c.ours_ms, c.theirs_ms, c.theirs_rate), (1.1, 1.0, 900.0));
        let mut n = 0.0;
        let measured = Interleaved::measure(
            2,
            || {
                n += 1.0;
                Ok(n)
            },
            || Ok((2.0, 1.0)),
        )
        .unwrap();
        assert_eq!((measured.rounds, measured.ratio), (2, 0.75));
        assert!(Interleaved::measure(3, || anyhow::bail!("down"), || Ok((1.0, 1.0))).is_err());
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
