//! The report: run-record schema, comparison verdicts on synthetic histograms, baselines through
//! `publish`, the `report` binary's exit codes, and the page (its SVGs parse; headless Chromium
//! renders it as something other than a blank page). Every test works in a temporary directory
//! of its own; nothing here reads or writes target-reports/.

use std::path::{Path, PathBuf};
use std::process::Command;

use capbench::record::{
    self, Environment, Gate, GateKind, HnswParameters, HttpSearchParameters, Kind, LoadModel,
    LoadParameters, Metric, Metrics, Parameters, ResultEntry, RunRecord,
};
use capbench::report::compare::{self, Options, Verdict};
use capbench::report::noise::History;
use capbench::report::store::Store;
use capbench::report::{self as report, BaselineArgs, html};
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A fresh, empty directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("capbench-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` lognormal latencies (median ~1 ms, a long tail) in nanoseconds.
fn lognormal_ns(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let d = LogNormal::new((1e6f64).ln(), 0.5).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

fn histogram(samples: &[f64]) -> hdrhistogram::Histogram<u64> {
    let mut h = record::latency_histogram();
    for &v in samples {
        h.saturating_record(v as u64);
    }
    h
}

/// A result entry with the histogram's percentiles as metrics, plus `extra`.
fn entry(name: &str, samples: &[f64], extra: &[(Metric, f64)]) -> ResultEntry {
    let h = histogram(samples);
    let mut metrics: Metrics = capbench::bench::LatencySummary::of(&h).metrics();
    for (k, v) in extra {
        metrics.insert(k.clone(), *v);
    }
    ResultEntry {
        name: name.into(),
        metrics,
        histogram: Some(record::encode_histogram(&h).unwrap()),
        gates: vec![capbench::gates::seeds_p99(
            None,
            Some(h.value_at_quantile(0.99) as f64 / 1e6),
        )],
        ..ResultEntry::default()
    }
}

fn hnsw_record(entries: Vec<ResultEntry>, quick: bool) -> RunRecord {
    let mut r = RunRecord::new(
        Environment::of_machine(),
        Parameters::Hnsw(HnswParameters {
            ef_search: vec![40],
            queries: 5000,
            k: 10,
            quick,
            ..HnswParameters::default()
        }),
    );
    r.dataset =
        Some(serde_json::json!({"fingerprint": "f00", "params": {"rows": 100000, "hnsw_m": 16}}));
    r.results = entries;
    r
}

/// Baseline samples, and the same with the slowest 3 % made 20 % slower: p99 up ~20 %, p50 unchanged.
fn tail_regressed(samples: &[f64]) -> Vec<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let cut = sorted[(sorted.len() as f64 * 0.97) as usize];
    samples
        .iter()
        .map(|&v| if v >= cut { v * 1.2 } else { v })
        .collect()
}

/// `n` earlier runs like `like` (same kind, mode, dataset, machine), each entry's samples drawn
/// afresh from the same distribution, an hour apart on 2026-01-01: the history a machine's noise
/// is learnt from.
fn history_like(like: &RunRecord, n: usize, seed: u64) -> Vec<RunRecord> {
    (0..n)
        .map(|i| {
            let mut r = like.clone();
            r.created_at = format!("2026-01-01T{i:02}:00:00Z");
            for e in &mut r.results {
                let extra: Vec<(Metric, f64)> = e
                    .metrics
                    .iter()
                    .filter(|(k, _)| matches!(k, Metric::RecallMean | Metric::Qps))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                *e = entry(&e.name, &lognormal_ns(5000, seed + i as u64), &extra);
            }
            r
        })
        .collect()
}

/// [`history_like`] written to `store`'s runs/.
fn write_history(store: &Store, like: &RunRecord, n: usize, seed: u64) {
    for r in history_like(like, n, seed) {
        r.write(&store.root).unwrap();
    }
}

fn change<'a>(c: &'a [compare::MetricChange], metric: &Metric) -> &'a compare::MetricChange {
    c.iter()
        .find(|m| m.metric == *metric)
        .unwrap_or_else(|| panic!("no {metric} in {c:#?}"))
}

#[test]
fn a_record_round_trips_and_a_future_schema_is_refused_clearly() {
    let dir = temp_dir("schema");
    let mut rec = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &lognormal_ns(1000, 1),
            &[(Metric::RecallMean, 0.9)],
        )],
        false,
    );
    rec.results[0]
        .series
        .insert("rps_per_second".into(), vec![(1.0, 100.0), (2.0, 110.0)]);
    let path = rec.write(&dir).unwrap();
    let back = RunRecord::read(&path).unwrap();
    assert_eq!(back, rec);
    let h = record::decode_histogram(back.results[0].histogram.as_ref().unwrap()).unwrap();
    assert_eq!(h.len(), 1000);

    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    value["schema_version"] = serde_json::json!(record::SCHEMA_VERSION + 1);
    std::fs::write(&path, value.to_string()).unwrap();
    let err = capbench::one_line(&RunRecord::read(&path).unwrap_err());
    assert!(
        err.contains(&format!("schema_version {}", record::SCHEMA_VERSION + 1))
            && err.contains("update capbench"),
        "{err}"
    );
    // The page skips it with a warning instead of failing.
    let store = Store::new(&dir);
    let (runs, warnings) = store.runs();
    assert!(runs.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn runs_finishing_in_the_same_second_never_overwrite_each_other() {
    let dir = temp_dir("same-second");
    let writers = 16;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(writers));
    let handles: Vec<_> = (0..writers)
        .map(|i| {
            let (dir, barrier) = (dir.clone(), barrier.clone());
            // Each writer's record says which writer it is (in its query count).
            let mut rec = RunRecord::new(
                Environment::default(),
                Parameters::Hnsw(HnswParameters {
                    queries: i,
                    ..HnswParameters::default()
                }),
            );
            rec.created_at = "2030-01-01T00:00:00Z".into();
            std::thread::spawn(move || {
                barrier.wait();
                rec.write(&dir)
            })
        })
        .collect();
    let paths: std::collections::BTreeSet<PathBuf> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("every writer writes"))
        .collect();
    assert_eq!(
        paths.len(),
        writers,
        "two writers got the same name: {paths:?}"
    );
    let mut found: Vec<u64> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .flatten()
        .map(|f| {
            let path = f.path();
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("json"),
                "a temporary file was left: {}",
                path.display()
            );
            match RunRecord::read(&path).unwrap().parameters {
                Parameters::Hnsw(p) => p.queries as u64,
                other => panic!("not the hnsw record written: {other:?}"),
            }
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        (0..writers as u64).collect::<Vec<_>>(),
        "a record was lost"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn records_written_by_the_benches_are_read() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (runs, warnings) = Store::new(&fixtures).runs_in(&fixtures);
    assert!(warnings.is_empty(), "{warnings:?}");
    let kinds: Vec<&str> = runs.iter().map(|s| s.record.kind().as_str()).collect();
    for k in ["hnsw", "http_search", "rate_limit"] {
        assert!(kinds.contains(&k), "no {k} fixture in {kinds:?}");
    }
    // The fixtures are schema version 1: read through the one migration, their parameters typed
    // and every gate given its kind, the seeds' p99 gate its check with the entry's own p99.
    for s in &runs {
        let raw: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&s.path).unwrap()).unwrap();
        assert_eq!(raw["schema_version"], 1, "{}", s.path.display());
        assert_eq!(s.record.schema_version, record::SCHEMA_VERSION);
        assert_eq!(s.record.parameters.fields(), raw["parameters"]);
    }
    let hnsw = runs.iter().find(|s| s.record.kind() == Kind::Hnsw).unwrap();
    let Parameters::Hnsw(p) = &hnsw.record.parameters else {
        panic!("{:?}", hnsw.record.parameters)
    };
    assert_eq!(p.ef_search, [16, 40, 64, 100, 200]);
    assert!(p.prewarmed.is_some_and(|w| w.index_bytes > 0));
    for e in &hnsw.record.results {
        for g in &e.gates {
            assert_eq!(g.kind, GateKind::Latency);
            let check = g.check.as_ref().expect("the seeds' gate keeps its check");
            assert_eq!((check.metric.clone(), check.limit), (Metric::P99_MS, 50.0));
            assert_eq!(check.observed, e.metric(&Metric::P99_MS));
            assert!(capbench::gates::is_seeds_p99(g));
        }
    }
    let rl = runs
        .iter()
        .find(|s| s.record.kind() == Kind::RateLimit)
        .unwrap();
    let ratio = rl
        .record
        .results
        .iter()
        .flat_map(|e| &e.gates)
        .next()
        .unwrap();
    assert_eq!(ratio.kind, GateKind::Comparison);
    assert_eq!(
        ratio.check.as_ref().map(|c| (c.metric.clone(), c.limit)),
        Some((Metric::RatioVsRedisBenchmark, 1.3))
    );
}

#[test]
fn a_record_of_an_unknown_kind_or_metric_is_refused_with_its_name() {
    let dir = temp_dir("unknown");
    let rec = hnsw_record(vec![entry("e", &lognormal_ns(100, 3), &[])], false);
    let path = rec.write(&dir).unwrap();
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut kind = good.clone();
    kind["kind"] = "gpu_search".into();
    let mut metric = good.clone();
    metric["results"][0]["metrics"]["widgets"] = 1.into();
    for (bad, named) in [(kind, "gpu_search"), (metric, "widgets")] {
        std::fs::write(&path, bad.to_string()).unwrap();
        let err = format!("{:#}", RunRecord::read(&path).unwrap_err());
        assert!(
            err.contains(named) && err.contains(&path.display().to_string()),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_detects_an_injected_20_percent_p99_regression() {
    let base = hnsw_record(
        vec![entry("hnsw/ef_search/40", &lognormal_ns(5000, 7), &[])],
        false,
    );
    let worse = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &tail_regressed(&lognormal_ns(5000, 8)),
            &[],
        )],
        false,
    );
    let earlier = history_like(&base, 8, 300);
    let history = History::of(&earlier, 20);
    let c = compare::compare(&base, "a", &worse, "b", &Options::default(), &history).unwrap();
    let p99 = change(&c.changes, &Metric::P99_MS);
    assert_eq!(p99.verdict, Verdict::Regressed, "{p99:?}");
    assert!(p99.change > 0.10 && p99.change < 0.35, "{p99:?}");
    let (lo, hi) = p99.ci.unwrap();
    assert!(lo > 0.0 && lo < p99.change && p99.change < hi, "{p99:?}");
    assert_eq!((p99.method, p99.spread.unwrap().runs), ("noise", 8));
    // The body of the distribution did not move; the benchmark's one verdict is "regressed".
    assert_eq!(
        change(&c.changes, &Metric::P50_MS).verdict,
        Verdict::NoChange
    );
    assert_eq!(c.benchmarks.len(), 1);
    assert_eq!(c.benchmarks[0].verdict, Verdict::Regressed);
    assert!(
        c.benchmarks[0].because[0].starts_with("p99_ms +"),
        "{:?}",
        c.benchmarks
    );
    assert!(c.text().contains("from 8 runs"), "{}", c.text());
    // And the other way round, it is an improvement.
    let back = compare::compare(&worse, "b", &base, "a", &Options::default(), &history).unwrap();
    assert_eq!(back.benchmarks[0].verdict, Verdict::Improved);
    // Without earlier runs, no guess: the latencies are "not enough runs to judge".
    let alone = compare::compare(
        &base,
        "a",
        &worse,
        "b",
        &Options::default(),
        &History::default(),
    )
    .unwrap();
    assert_eq!(alone.benchmarks[0].verdict, Verdict::NotEnoughRuns);
    assert_eq!(
        change(&alone.changes, &Metric::P99_MS).verdict,
        Verdict::NotEnoughRuns
    );
    assert!(
        alone
            .text()
            .contains("not enough runs to judge: 0 comparable earlier runs"),
        "{}",
        alone.text()
    );
}

#[test]
fn two_samples_of_one_distribution_are_no_change() {
    for seed in 0..5 {
        let rec = |s: u64, qps: f64, recall: f64| {
            hnsw_record(
                vec![entry(
                    "e",
                    &lognormal_ns(5000, s),
                    &[(Metric::Qps, qps), (Metric::RecallMean, recall)],
                )],
                false,
            )
        };
        let a = rec(100 + seed, 1000.0, 0.95);
        let b = rec(200 + seed, 1010.0, 0.952);
        let earlier = history_like(&a, 6, 1000 * (seed + 1));
        let c = compare::compare(
            &a,
            "a",
            &b,
            "b",
            &Options::default(),
            &History::of(&earlier, 20),
        )
        .unwrap();
        let judged: Vec<_> = c
            .changes
            .iter()
            .filter(|c| c.verdict != Verdict::Info)
            .collect();
        assert!(judged.len() >= 4, "{judged:#?}");
        for m in judged {
            assert_eq!(m.verdict, Verdict::NoChange, "seed {seed}: {m:?}");
        }
        // p95 and the mean are shown with an interval, not judged.
        let p95 = change(&c.changes, &Metric::P95_MS);
        assert!(p95.ci.is_some() && p95.verdict == Verdict::Info, "{p95:?}");
        assert_eq!(c.benchmarks[0].verdict, Verdict::NoChange);
    }
}

#[test]
fn a_recall_drop_of_0_01_always_counts_and_verdicts_are_reproducible() {
    let s = lognormal_ns(2000, 3);
    let rec = |recall: f64, qps: f64| {
        hnsw_record(
            vec![entry(
                "e",
                &s,
                &[(Metric::RecallMean, recall), (Metric::Qps, qps)],
            )],
            false,
        )
    };
    let (a, b, c) = (rec(0.95, 500.0), rec(0.94, 500.0), rec(0.947, 400.0));
    // Recall's absolute rule needs no history.
    let none = History::default();
    let ab = compare::compare(&a, "a", &b, "b", &Options::default(), &none).unwrap();
    let recall = change(&ab.changes, &Metric::RecallMean);
    assert_eq!(recall.verdict, Verdict::Regressed, "{recall:?}");
    assert!((recall.change + 0.01).abs() < 1e-9);
    assert_eq!(ab.benchmarks[0].verdict, Verdict::Regressed);
    // QPS -20 %: judged against the history's noise (sampling only, here), it regressed.
    let history = History::of(&history_like(&a, 6, 77), 20);
    let ac = compare::compare(&a, "a", &c, "c", &Options::default(), &history).unwrap();
    assert_eq!(
        change(&ac.changes, &Metric::RecallMean).verdict,
        Verdict::NoChange
    );
    let qps = change(&ac.changes, &Metric::Qps);
    assert_eq!(qps.verdict, Verdict::Regressed, "{qps:?}");
    assert!(
        qps.ci.is_some_and(|(lo, hi)| lo < -0.15 && hi < 0.0),
        "{qps:?}"
    );
    // Same inputs, same intervals.
    let again = compare::compare(&a, "a", &c, "c", &Options::default(), &history).unwrap();
    assert_eq!(ac.changes, again.changes);
}

#[test]
fn criterion_flags_are_read_as_criterion_reads_them() {
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let f = BaselineArgs::parse(&args(&["bench", "hnsw", "--save-baseline", "a", "--bench"]));
    assert_eq!(f.save.as_deref(), Some("a"));
    assert_eq!(f.baseline, None);
    let f = BaselineArgs::parse(&args(&["bench", "--baseline=b", "hnsw"]));
    assert_eq!(f.baseline.as_deref(), Some("b"));
    let f = BaselineArgs::parse(&args(&["bench", "-b", "c", "--baseline-lenient", "d"]));
    assert_eq!((f.baseline.as_deref(), f.lenient), (Some("d"), true));
    let o = Options::from_args(&args(&[
        "bench",
        "--noise-threshold",
        "0.02",
        "--significance-level=0.01",
    ]))
    .unwrap();
    assert_eq!((o.noise_threshold, o.significance_level), (0.02, 0.01));
    assert!(Options::from_args(&args(&["bench", "--noise-threshold", "2"])).is_err());
}

#[test]
fn publish_saves_a_baseline_compares_with_it_and_keeps_quick_runs_apart() {
    let dir = temp_dir("publish");
    let store = Store::new(&dir);
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let base = lognormal_ns(5000, 11);
    let a = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &base,
            &[(Metric::RecallMean, 0.95)],
        )],
        false,
    );
    write_history(&store, &a, 8, 500);
    report::publish_in(&store, &a, &args(&["hnsw", "--save-baseline", "a"]), true).unwrap();
    assert!(dir.join("baselines/a/hnsw.json").is_file());
    // The noise known when it was saved is kept with it: those 8 runs and the baseline itself.
    let saved: History = serde_json::from_str(
        &std::fs::read_to_string(dir.join("baselines/a/noise/hnsw.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved.len(), 9);
    assert!(dir.join("index.html").is_file());

    let worse = tail_regressed(&lognormal_ns(5000, 12));
    let b = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &worse,
            &[(Metric::RecallMean, 0.94)],
        )],
        false,
    );
    // Without the fail flag it reports and succeeds; with it, it fails naming what regressed.
    report::publish_in(&store, &b, &args(&["hnsw", "--baseline", "a"]), false).unwrap();
    let err = capbench::one_line(
        &report::publish_in(&store, &b, &args(&["hnsw", "--baseline", "a"]), true).unwrap_err(),
    );
    assert!(
        err.contains("p99_ms") && err.contains("recall_mean"),
        "{err}"
    );
    let page = std::fs::read_to_string(dir.join("index.html")).unwrap();
    assert!(
        page.contains("baseline 'a'") && page.contains("regressed"),
        "the page shows the comparison"
    );
    // Every record was kept, and the baseline was not overwritten by --baseline runs.
    assert_eq!(store.runs().0.len(), 8 + 3);
    assert_eq!(
        RunRecord::read(&dir.join("baselines/a/hnsw.json")).unwrap(),
        a
    );

    // A quick run is never compared with a full run's baseline, nor saved over it.
    let q = hnsw_record(vec![entry("hnsw/ef_search/40", &base, &[])], true);
    let err = capbench::one_line(
        &report::publish_in(&store, &q, &args(&["hnsw", "--baseline", "a"]), false).unwrap_err(),
    );
    assert!(
        err.contains("quick mode") && err.contains("full run"),
        "{err}"
    );
    report::publish_in(&store, &q, &args(&["hnsw", "--save-baseline", "a"]), false).unwrap();
    assert!(dir.join("baselines-quick/a/hnsw.json").is_file());
    assert_eq!(
        RunRecord::read(&dir.join("baselines/a/hnsw.json")).unwrap(),
        a
    );

    // A missing baseline is an error (as Criterion's --baseline), unless lenient.
    let err = capbench::one_line(
        &report::publish_in(&store, &a, &args(&["hnsw", "--baseline", "nope"]), false).unwrap_err(),
    );
    assert!(err.contains("--save-baseline nope"), "{err}");
    report::publish_in(
        &store,
        &a,
        &args(&["hnsw", "--baseline-lenient", "nope"]),
        false,
    )
    .unwrap();
    // Saving a run of some benchmarks replaces only those (as Criterion's baselines do): ef 40 is
    // kept, ef 64 added; a run on another dataset replaces the baseline whole.
    let only_64 = hnsw_record(vec![entry("hnsw/ef_search/64", &base, &[])], false);
    report::publish_in(
        &store,
        &only_64,
        &args(&["hnsw", "--save-baseline", "a"]),
        false,
    )
    .unwrap();
    let names = |r: RunRecord| r.results.into_iter().map(|e| e.name).collect::<Vec<_>>();
    let saved = RunRecord::read(&dir.join("baselines/a/hnsw.json")).unwrap();
    assert_eq!(names(saved), ["hnsw/ef_search/64", "hnsw/ef_search/40"]);
    let mut other_data = only_64.clone();
    other_data.dataset = Some(serde_json::json!({"fingerprint": "bee", "params": {}}));
    report::publish_in(
        &store,
        &other_data,
        &args(&["hnsw", "--save-baseline", "a"]),
        false,
    )
    .unwrap();
    let saved = RunRecord::read(&dir.join("baselines/a/hnsw.json")).unwrap();
    assert_eq!(names(saved), ["hnsw/ef_search/64"]);
    // A failed gate fails the run when asked to.
    let mut gated = a.clone();
    gated.results[0].gates[0].pass = false;
    let err = capbench::one_line(
        &report::publish_in(&store, &gated, &args(&["hnsw"]), true).unwrap_err(),
    );
    assert!(
        err.contains("gate failed") && err.contains("p99 < 50 ms"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn report_bin(dir: &Path, args: &[&str], fail_env: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_report"));
    cmd.args(args)
        .env("CAPBENCH_REPORTS", dir)
        .env_remove("CAPBENCH_FAIL_ON_REGRESSION");
    if fail_env {
        cmd.env("CAPBENCH_FAIL_ON_REGRESSION", "1");
    }
    cmd.output().expect("run the report binary")
}

#[test]
fn the_report_binary_compares_without_rerunning_and_its_exit_codes_gate_ci() {
    let dir = temp_dir("bin");
    let store = Store::new(&dir);
    let base = lognormal_ns(5000, 21);
    let a = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &base,
            &[(Metric::RecallMean, 0.95)],
        )],
        false,
    );
    let b = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &tail_regressed(&lognormal_ns(5000, 22)),
            &[(Metric::RecallMean, 0.95)],
        )],
        false,
    );
    let c = hnsw_record(
        vec![entry(
            "hnsw/ef_search/40",
            &lognormal_ns(5000, 23),
            &[(Metric::RecallMean, 0.951)],
        )],
        false,
    );
    write_history(&store, &a, 6, 600);
    store.save_baseline("a", &a).unwrap();
    store.save_baseline("b", &b).unwrap();
    store.save_baseline("c", &c).unwrap();
    let code = |o: &std::process::Output| o.status.code();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    let o = report_bin(&dir, &["--compare", "a,b"], false);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = text(&o);
    let line = out
        .lines()
        .find(|l| l.contains("p99_ms"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("REGRESSED") && line.contains('+'), "{line}");
    assert!(out.contains("report: "), "{out}");
    assert_eq!(
        code(&report_bin(
            &dir,
            &["--compare", "a,b", "--fail-on-regression"],
            false
        )),
        Some(3)
    );
    assert_eq!(
        code(&report_bin(&dir, &["--compare", "a,b"], true)),
        Some(3)
    );
    // Same distribution: nothing regressed, so even the gate passes.
    let o = report_bin(&dir, &["--compare", "a,c", "--fail-on-regression"], false);
    assert_eq!(code(&o), Some(0), "{}", text(&o));
    // A run file works as well as a baseline name.
    let run = b.write(&dir).unwrap();
    let o = report_bin(
        &dir,
        &[
            "--compare",
            &format!("a,{}", run.display()),
            "--fail-on-regression",
        ],
        false,
    );
    assert_eq!(code(&o), Some(3), "{}", text(&o));
    // Errors: one line, exit 1; usage: exit 2.
    let o = report_bin(&dir, &["--compare", "a,nope"], false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(code(&o), Some(1));
    assert!(
        err.starts_with("error: ") && err.trim().lines().count() == 1 && err.contains("nope"),
        "{err}"
    );
    assert_eq!(code(&report_bin(&dir, &["--bogus"], false)), Some(2));
    assert_eq!(code(&report_bin(&dir, &["--compare", "a"], false)), Some(1));
    // Quick and full are never compared.
    store
        .save_baseline("q", &hnsw_record(a.results.clone(), true))
        .unwrap();
    let o = report_bin(&dir, &["--compare", "a,q"], false);
    assert_eq!(code(&o), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("quick mode"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Without --compare: the latest run (b, regressed vs a) against baseline a.
    assert_eq!(
        code(&report_bin(
            &dir,
            &["--baseline", "a", "--fail-on-regression"],
            false
        )),
        Some(3)
    );
    assert_eq!(
        code(&report_bin(&dir, &["--baseline", "a"], false)),
        Some(0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records of every kind (the benches' real ones from tests/fixtures, synthetic capacity, load,
/// a limiter timeline and an unknown kind) in a fresh reports directory; the page built from them.
fn fixture_page(name: &str) -> (PathBuf, String) {
    let dir = temp_dir(name);
    let runs = dir.join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for f in std::fs::read_dir(&fixtures).unwrap().flatten() {
        if f.path().extension().is_some_and(|e| e == "json") {
            std::fs::copy(f.path(), runs.join(f.file_name())).unwrap();
        }
    }
    let mut cap = RunRecord::new(Environment::of_machine(), Parameters::of(Kind::Capacity));
    for (i, users) in [1.0, 10.0, 50.0, 100.0].into_iter().enumerate() {
        let samples: Vec<f64> = lognormal_ns(2000, 30 + i as u64)
            .iter()
            .map(|v| v * (1.0 + users / 10.0))
            .collect();
        let mut e = entry(
            &format!("capacity/users/{users}"),
            &samples,
            &[
                (Metric::Users, users),
                (Metric::Rps, users * 90.0 / (1.0 + users / 200.0)),
                (Metric::ErrorRate, 0.0),
                (Metric::Failures, 0.0),
            ],
        );
        e.series.insert(
            "rps_per_second".into(),
            (1..=10)
                .map(|s| (s as f64, users * 80.0 + s as f64))
                .collect(),
        );
        e.series.insert(
            "p99_ms_per_second".into(),
            (1..=10)
                .map(|s| (s as f64, users / 5.0 + s as f64 / 10.0))
                .collect(),
        );
        cap.results.push(e);
    }
    // The raw-SQL sweep of the same record, in connections.
    for (i, conns) in [1.0, 5.0, 20.0, 50.0].into_iter().enumerate() {
        let samples: Vec<f64> = lognormal_ns(2000, 50 + i as u64)
            .iter()
            .map(|v| v * conns)
            .collect();
        cap.results.push(entry(
            &format!("capacity_db/connections/{conns}"),
            &samples,
            &[
                (Metric::Connections, conns),
                (Metric::Rps, 700.0 * conns.min(20.0).sqrt()),
                (Metric::ErrorRate, 0.0),
            ],
        ));
    }
    cap.results.push(ResultEntry {
        name: "capacity_db/knee".into(),
        metrics: [
            (Metric::KneeConnections, 20.0),
            (Metric::KneeRps, 3130.0),
            (Metric::KneeP99Ms, 31.0),
            (Metric::SloP99Ms, 50.0),
        ]
        .into(),
        ..ResultEntry::default()
    });
    cap.results.push(ResultEntry {
        name: "capacity/knee".into(),
        metrics: [
            (Metric::KneeUsers, 50.0),
            (Metric::KneeRps, 3600.0),
            (Metric::KneeP99Ms, 22.0),
            (Metric::SloP99Ms, 50.0),
        ]
        .into(),
        ..ResultEntry::default()
    });
    cap.write(&dir).unwrap();
    let mut load = RunRecord::new(
        Environment::of_machine(),
        Parameters::Load(LoadParameters {
            model: LoadModel::Open,
            ..LoadParameters::default()
        }),
    );
    load.results.push(entry(
        "load/search",
        &lognormal_ns(3000, 41),
        &[(Metric::Rps, 50.0), (Metric::ErrorRate, 0.02)],
    ));
    load.results.push(entry(
        "load/Aggregated",
        &lognormal_ns(3000, 42),
        &[(Metric::Rps, 50.0), (Metric::ErrorRate, 0.02)],
    ));
    load.write(&dir).unwrap();
    // A record of a kind this build does not know (a newer capbench's, say).
    let mut custom = serde_json::to_value(&load).unwrap();
    custom["kind"] = "custom_kind".into();
    std::fs::write(
        runs.join("custom_kind-20990101T000000Z.json"),
        custom.to_string(),
    )
    .unwrap();
    // A limiter timeline like the bench's (a perfect bucket standing in for Redis).
    let mut rl = RunRecord::read(
        &runs.join(
            std::fs::read_dir(&runs)
                .unwrap()
                .flatten()
                .map(|f| f.file_name())
                .find(|n| n.to_string_lossy().starts_with("rate_limit"))
                .unwrap(),
        ),
    )
    .unwrap();
    rl.created_at = "2099-01-01T00:00:00Z".into();
    let mut bucket = capbench::bench::limiter_timeline::TheoreticalBucket::new(
        capbench::bench::limiter_timeline::LIMIT,
    );
    let mut t = ResultEntry {
        name: capbench::bench::limiter_timeline::ID.into(),
        ..ResultEntry::default()
    };
    let mut admitted = 0.0;
    for i in 0..50 {
        let x = i as f64 / 50.0;
        let (ok, tokens) = bucket.attempt(x);
        admitted += f64::from(u8::from(ok));
        for (name, y) in [
            ("allowed", f64::from(u8::from(ok))),
            ("remaining", tokens.floor()),
            ("theoretical_tokens", tokens),
            ("admitted_total", admitted),
            ("theoretical_admitted_total", admitted),
        ] {
            t.series.entry(name.into()).or_default().push((x, y));
        }
    }
    t.metrics.insert(Metric::Capacity, 10.0);
    for (name, v) in [
        (Metric::Attempts, 50.0),
        (Metric::Allowed, admitted),
        (Metric::Denied, 50.0 - admitted),
        (Metric::TheoreticalAllowed, admitted),
    ] {
        t.metrics.insert(name, v);
    }
    t.gates.push(Gate::promise(
        "a. a full bucket admits a burst of exactly its capacity (10)",
        GateKind::Limiter,
        true,
    ));
    rl.results.push(t);
    rl.write(&dir).unwrap();
    let store = Store::new(&dir);
    let view = report::page_view(&store, None, &Options::default());
    let path = html::write_index(&store, &view).unwrap();
    let page = std::fs::read_to_string(&path).unwrap();
    (path, page)
}

#[test]
fn the_page_from_fixture_records_has_every_section_and_its_svgs_parse() {
    let (path, page) = fixture_page("page");
    assert!(!page.contains("chart not drawn"), "a chart failed");
    assert!(!page.contains("<script"), "no JavaScript");
    for fetch in ["src=\"http", "href=\"http", "<link", "@import", "url(http"] {
        assert!(
            !page.contains(fetch),
            "the page would fetch something: {fetch}"
        );
    }
    for heading in [
        "Verdicts",
        "HNSW",
        "Capacity",
        "Search over HTTP",
        "Rate limiter",
        "History",
        "Comparison",
        "Environment",
        "Criterion",
        "Every figure",
    ] {
        assert!(page.contains(heading), "no {heading} section");
    }
    // A record of an unknown kind is named in a warning, not half-shown; the derived error-rate
    // gate fails.
    assert!(
        page.contains("custom_kind-20990101T000000Z.json") && page.contains("unknown variant"),
        "no warning about the unknown kind"
    );
    assert!(page.contains("error rate &lt; 1 %"));
    // Each sweep on its own axis, with its own knee.
    assert!(page.contains("knee: 50 users"));
    assert!(page.contains("knee: 20 connections, 3130 RPS"));
    assert!(
        page.contains("Throughput vs connections")
            && page.contains("Throughput vs concurrent users")
    );
    assert!(page.contains("20 connections at 3130 RPS"));
    // Counts are integers ("50 attempts: 14 allowed", not "50.00 attempts: 14.00 allowed").
    assert!(page.contains("50 attempts: ") && !page.contains(".00 attempts"));
    assert!(page.contains("attempts 50,") && page.contains("count 100, criterion_median_ms"));
    assert!(!page.contains("count 100.00") && page.contains("ef_search 16, max_ms"));
    // The per-second series of a sweep: one small chart per level, no shared legend.
    assert!(page.contains("Throughput over time — capacity, one chart per level (same scale)"));
    assert!(page.contains("class=\"multiples\""));
    // The service's overhead: a ratio to its SQL (the fixture's ef_search 16 and 64), no gate.
    assert!(page.contains("Service overhead: a ratio to the SQL"));
    assert!(
        page.contains("1.29×") && page.contains("1.15×"),
        "no ratios"
    );
    assert!(
        !page.contains("0.3 ms"),
        "the absolute overhead gate is gone"
    );
    let mut svgs = 0;
    let mut rest = page.as_str();
    while let Some(start) = rest.find("<svg") {
        let end =
            rest[start..].find("</svg>").expect("an <svg> is closed") + start + "</svg>".len();
        let doc = roxmltree::Document::parse(&rest[start..end])
            .unwrap_or_else(|e| panic!("SVG {svgs} does not parse: {e}"));
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_string))
            .collect();
        assert!(
            texts.len() >= 5,
            "SVG {svgs} has a title, axis labels and ticks: {texts:?}"
        );
        svgs += 1;
        rest = &rest[end..];
    }
    assert!(svgs >= 12, "only {svgs} charts in {}", path.display());
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn headless_chromium_renders_the_page_as_more_than_a_blank_page() {
    let (path, _) = fixture_page("chromium");
    let shot = path.with_file_name("shot.png");
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| panic!("chromium is not installed: run setup/install-deps.sh (it installs Debian's chromium package)"));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", path.display()))
        .env("HOME", path.parent().unwrap())
        .output()
        .expect("run chromium");
    assert!(
        shot.is_file(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1280, 2000));
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let non_white = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 235))
        .count();
    let mut colours = std::collections::HashSet::new();
    for p in &pixels {
        colours.insert((p[0] >> 3, p[1] >> 3, p[2] >> 3));
    }
    let share = non_white as f64 / pixels.len() as f64;
    assert!(
        share > 0.02,
        "the page looks blank: {:.2} % non-white pixels",
        share * 100.0
    );
    assert!(
        colours.len() > 30,
        "the page has {} colours: text and charts should give many",
        colours.len()
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// A pass of the http_search bench with `n` latencies around `p50_ms`.
fn http_pass(
    bench: capbench::bench::http_search::Bench,
    p50_ms: f64,
    sql_p50_ms: Option<f64>,
    stages: &[(&str, f64)],
) -> capbench::bench::http_search::HttpPass {
    let hist = |ms: f64| {
        histogram(
            &lognormal_ns(500, 3)
                .iter()
                .map(|v| v * ms)
                .collect::<Vec<_>>(),
        )
    };
    let h = hist(p50_ms);
    capbench::bench::http_search::HttpPass {
        bench,
        latency: capbench::bench::LatencySummary::of(&h),
        histogram: h,
        rps: 1000.0 / p50_ms,
        // Criterion's estimates unreadable: the pass's own figures are still recorded.
        criterion_median_ms: None,
        sql: sql_p50_ms.map(|ms| capbench::bench::LatencySummary::of(&hist(ms))),
        stages: stages.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
    }
}

#[test]
fn the_service_overhead_is_a_ratio_to_its_sql_with_the_429_cost_beside_it_and_no_gate() {
    use capbench::bench::http_search::{self, Bench};
    let results = vec![
        http_pass(
            Bench::EfSearch(40),
            2.0,
            Some(1.6),
            &[("db", 1.5), ("total", 1.8)],
        ),
        http_pass(
            Bench::Rejected,
            0.1,
            None,
            &[("ratelimit", 0.05), ("total", 0.06)],
        ),
    ];
    let o = results[0].overhead().expect("SQL measured beside it");
    assert!(
        (o.ratio - 1.25).abs() < 0.01 && (o.ms - 0.4).abs() < 0.01,
        "{o:?}"
    );
    let line = http_search::overhead_line(&results).unwrap();
    assert!(
        line.contains("ef_search 40 1.25×")
            && line.contains("a 429 costs")
            && line.contains("0.060 ms in the service"),
        "{line}"
    );
    // A 429 without Server-Timing: its end-to-end cost alone.
    let bare = [
        results[0].clone(),
        http_pass(Bench::Rejected, 0.1, None, &[]),
    ];
    let line = http_search::overhead_line(&bare).unwrap();
    assert!(
        line.contains("a 429 costs") && !line.contains("in the service"),
        "{line}"
    );
    let entries = http_search::entries(&results).unwrap();
    assert!(
        entries.iter().all(|e| e.gates.is_empty()),
        "no gate on an absolute overhead"
    );
    let ef = &entries[0];
    assert!((ef.metrics[&Metric::OverheadRatio] - 1.25).abs() < 0.01);
    assert!(
        ef.metrics.contains_key(&Metric::OverheadP50Ms) && ef.metrics.contains_key(&Metric::P99_MS)
    );
    assert!(!ef.metrics.contains_key(&Metric::CriterionMedianMs));
    assert_eq!(
        entries[1].metrics[&Metric::ServerStageP50("total".into())],
        0.06
    );
    // A very slow service is reported, never failed.
    let slow =
        http_search::entries(&[http_pass(Bench::EfSearch(40), 9.0, Some(1.0), &[])]).unwrap();
    assert!(slow[0].gates.is_empty() && slow[0].metrics[&Metric::OverheadRatio] > 8.0);
    assert!(
        report::gates_of(&RunRecord {
            results: slow,
            ..RunRecord::new(Environment::default(), Parameters::of(Kind::HttpSearch))
        })
        .is_empty()
    );

    // The page: the ratio, and the 429 row beside it.
    let dir = temp_dir("overhead");
    let mut rec = RunRecord::new(
        Environment::default(),
        Parameters::HttpSearch(HttpSearchParameters {
            quick: true,
            ..HttpSearchParameters::default()
        }),
    );
    rec.results = entries;
    rec.write(&dir).unwrap();
    let store = Store::new(&dir);
    let page = std::fs::read_to_string(
        html::write_index(
            &store,
            &report::page_view(&store, None, &Options::default()),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(page.contains("1.25×"), "no ratio on the page");
    assert!(
        page.contains("a 429 (http_search/rejected)")
            && page.contains("0.0600 ms of it in the service"),
        "no 429 row beside the ratio"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_pair_compares_two_benchmarks_of_one_run_round_by_round() {
    let dir = temp_dir("pair");
    let with_rounds = |name: &str, p50: &[f64]| {
        let mut e = entry(name, &lognormal_ns(1000, 5), &[]);
        e.rounds = p50
            .iter()
            .map(|v| [(Metric::P50_MS, *v), (Metric::Qps, 1.0 / v)].into())
            .collect();
        e
    };
    // The machine drifts from round to round; ef 64 costs 25 % more than ef 40 in every round.
    let drift = [1.0, 1.4, 0.8, 1.2, 0.9];
    let rec = hnsw_record(
        vec![
            with_rounds("hnsw/ef_search/40", &drift.map(|d| 0.4 * d)),
            with_rounds("hnsw/ef_search/64", &drift.map(|d| 0.5 * d)),
        ],
        false,
    );
    rec.write(&dir).unwrap();
    let o = report_bin(
        &dir,
        &["--pair", "hnsw/ef_search/40,hnsw/ef_search/64"],
        false,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("hnsw/ef_search/64 vs hnsw/ef_search/40, p50_ms: +25.0% [+25.0%, +25.0%] over 5 interleaved rounds"),
        "{out}"
    );
    assert!(out.contains("qps: -20.0%"), "{out}");
    // A benchmark the run did not measure: one line, exit 1.
    let o = report_bin(
        &dir,
        &["--pair", "hnsw/ef_search/40,hnsw/ef_search/999"],
        false,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.starts_with("error: ") && err.contains("999"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runs_joined_by_a_plus_make_one_side_judged_by_their_mean() {
    let dir = temp_dir("sides");
    let store = Store::new(&dir);
    let like = hnsw_record(
        vec![entry("hnsw/ef_search/40", &lognormal_ns(3000, 1), &[])],
        false,
    );
    write_history(&store, &like, 6, 900);
    // Three runs of "before", three of "after" 25 % slower in every latency.
    let mut names = Vec::new();
    for (i, slow) in [
        (0u64, 1.0),
        (1, 1.0),
        (2, 1.0),
        (3, 1.25),
        (4, 1.25),
        (5, 1.25),
    ] {
        let samples: Vec<f64> = lognormal_ns(3000, 40 + i)
            .iter()
            .map(|v| v * slow)
            .collect();
        let mut r = hnsw_record(vec![entry("hnsw/ef_search/40", &samples, &[])], false);
        r.created_at = format!("2026-02-01T00:00:0{i}Z");
        names.push(r.write(&dir).unwrap().display().to_string());
    }
    let before = names[..3].join("+");
    let after = names[3..].join("+");
    let o = report_bin(&dir, &["--compare", &format!("{before},{after}")], false);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("baseline 3 runs, current 3 runs"), "{out}");
    assert!(out.contains("hnsw: 1 regressed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_calibrated_current_side_on_another_dataset_is_judged_by_its_mean() {
    let dir = temp_dir("calibrated");
    let store = Store::new(&dir);
    let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let a = hnsw_record(
        vec![entry("hnsw/ef_search/40", &lognormal_ns(3000, 1), &[])],
        false,
    );
    write_history(&store, &a, 6, 700);
    report::publish_in(&store, &a, &args(&["hnsw", "--save-baseline", "a"]), false).unwrap();
    // CAPBENCH_CALIBRATE=2 on a rebuilt index (another dataset fingerprint): three runs, one id.
    let mut last = None;
    for i in 0..3u64 {
        let samples: Vec<f64> = lognormal_ns(3000, 80 + i).iter().map(|v| v * 1.3).collect();
        let mut r = hnsw_record(vec![entry("hnsw/ef_search/40", &samples, &[])], false);
        r.dataset = Some(serde_json::json!({"fingerprint": "bee", "params": {"hnsw_m": 24}}));
        r.calibration = Some("c0ffee".into());
        r.created_at = format!("2099-01-01T00:00:0{i}Z");
        if i < 2 {
            r.write(&dir).unwrap();
        }
        last = Some(r);
    }
    let c = last.unwrap();
    let err = capbench::one_line(
        &report::publish_in(&store, &c, &args(&["hnsw", "--baseline", "a"]), true).unwrap_err(),
    );
    assert!(err.contains("p50_ms"), "{err}");
    let (history, _) = store.history(
        &store
            .load_baseline("a", Kind::Hnsw, false)
            .unwrap()
            .unwrap(),
        &c,
        20,
    );
    assert_eq!(
        history.side(&c).len(),
        3,
        "the two earlier runs of the calibration and this one"
    );
    assert_eq!(history.side(&a).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
