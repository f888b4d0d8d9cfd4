//! The `report` binary (`cargo run --release --bin report`): rebuild the page from the run
//! records, compare saved baselines or runs without re-running, or pair two benchmarks of a run.
//! Built with the `html` feature.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::compare::{self, Options};
use super::store::{self, Store, Stored};
use super::{EXIT_REGRESSION, Findings, baseline_label, fail_on_regression_env, html, noise};
use crate::record::{self, Kind, Metric, RunRecord};

/// Comparisons for the page: each kind's latest run against baseline `name` of its kind and mode
/// when given, otherwise against the previous run of the same kind and mode.
pub fn page_view(store: &Store, baseline: Option<&str>, options: &Options) -> html::View {
    let (runs, _) = store.runs();
    let latest = html::latest_by_kind(&runs);
    let mut view = html::View {
        comparison_title: match baseline {
            Some(name) => format!("Latest runs compared with baseline '{name}'"),
            None => "Latest runs compared with the previous run of the same kind and mode".into(),
        },
        ..html::View::default()
    };
    for (kind, current) in latest {
        let quick = current.record.quick();
        let base: Option<(String, Stored)> = match baseline {
            Some(name) => match store.load_baseline(name, kind, quick) {
                Ok(Some(b)) => Some((baseline_label(name, quick), b)),
                Ok(None) => {
                    view.comparison_notes.push(format!(
                        "{kind}: no baseline '{name}' saved for {}s",
                        store::mode_name(quick)
                    ));
                    None
                }
                Err(e) => {
                    view.comparison_notes
                        .push(format!("{kind}: {}", crate::one_line(&e)));
                    None
                }
            },
            None => runs
                .iter()
                .rev()
                .filter(|s| s.record.kind() == kind && s.record.quick() == quick)
                .nth(1)
                .map(|s| (s.label(), s.clone())),
        };
        if let Some((label, b)) = base {
            let (history, warnings) = store.history(&b, &current.record, options.window);
            view.comparison_notes.extend(warnings);
            match compare::compare(
                &b.record,
                &label,
                &current.record,
                &current.label(),
                options,
                &history,
            ) {
                Ok(c) => view.comparisons.push(c),
                Err(e) => view
                    .comparison_notes
                    .push(format!("{kind}: {}", crate::one_line(&e))),
            }
        }
    }
    view
}

/// `cargo run --release --bin report`: rebuild the page; compare saved baselines or runs.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "report",
    version,
    about = "Rebuild target-reports/index.html from the run records; compare baselines or runs without re-running",
    after_help = "Exit codes: 0 ok; 3 with --fail-on-regression when a regression or a failed gate is found; 1 error; 2 usage."
)]
pub struct ReportArgs {
    /// Compare saved baselines or run-record files: the first is the reference, each next one is
    /// compared with it (e.g. `--compare a,b` or `--compare runs/hnsw-1.json,runs/hnsw-2.json`).
    /// Join runs of one version with '+' (`--compare a1.json+a2.json+a3.json,b1.json+b2.json`), or
    /// name a directory of runs: a side of several runs is judged by their mean.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "A,B[,C…]")]
    pub compare: Vec<String>,
    /// Compare two benchmarks of one run round by round — their measurement rounds alternate
    /// (A B A B…), so machine drift cancels in each round's ratio: e.g.
    /// `--pair hnsw/ef_search/40,hnsw/ef_search/64`. Uses the latest run holding both, or `--run`.
    #[arg(long, value_delimiter = ',', num_args = 1.., value_name = "A,B", conflicts_with_all = ["compare", "baseline"])]
    pub pair: Vec<String>,
    /// The run record for `--pair` (a file, or a name in runs/).
    #[arg(long, requires = "pair")]
    pub run: Option<PathBuf>,
    /// Compare each kind's latest run with this saved baseline (default: with its previous run).
    #[arg(long, conflicts_with = "compare")]
    pub baseline: Option<String>,
    /// Exit with code 3 when a regression or a failed gate is found (also CAPBENCH_FAIL_ON_REGRESSION=1).
    #[arg(long)]
    pub fail_on_regression: bool,
    /// Resolve baseline names among quick-mode baselines (default: full-run ones, quick when only those exist).
    #[arg(long)]
    pub quick: bool,
    /// The practical threshold: relative changes within ± this fraction never count.
    #[arg(long, default_value_t = 0.05, value_parser = |s: &str| compare::parse_fraction("--noise-threshold", s, true))]
    pub noise_threshold: f64,
    /// The false-discovery rate of a comparison's decisions, and 1 − the confidence of its intervals.
    #[arg(long, default_value_t = 0.05, value_parser = |s: &str| compare::parse_fraction("--significance-level", s, false))]
    pub significance_level: f64,
    /// Earlier comparable runs needed before a latency or rate is judged ("not enough runs to
    /// judge" until then).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub min_runs: u32,
    /// Bootstrap resamples per metric.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(100..))]
    pub nresamples: u32,
    /// The reports directory [default: target-reports, or CAPBENCH_REPORTS].
    #[arg(long, env = "CAPBENCH_REPORTS")]
    pub reports_dir: Option<PathBuf>,
}

/// The `report` binary.
pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let store = Store::new(args.reports_dir.clone().unwrap_or_else(record::reports_dir));
    let options = Options {
        noise_threshold: args.noise_threshold,
        significance_level: args.significance_level,
        resamples: args.nresamples as usize,
        min_runs: args.min_runs as usize,
        ..Options::default()
    };
    let fail = args.fail_on_regression || fail_on_regression_env();
    if !args.pair.is_empty() {
        for line in pair(&store, &args, &options)? {
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (view, findings) = if args.compare.is_empty() {
        if let Some(name) = &args.baseline {
            store::check_baseline_name(name)?;
            if store
                .baseline_names(false)
                .iter()
                .chain(store.baseline_names(true).iter())
                .all(|n| n != name)
            {
                bail!(
                    "no saved baseline named '{name}' under {}",
                    store.root.display()
                );
            }
        }
        let view = page_view(&store, args.baseline.as_deref(), &options);
        let (runs, warnings) = store.runs();
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        let latest = html::latest_by_kind(&runs);
        let records: Vec<&RunRecord> = latest.values().map(|s| &s.record).collect();
        for c in &view.comparisons {
            print!("{}", c.text());
        }
        for n in &view.comparison_notes {
            println!("note: {n}");
        }
        let findings = Findings::of(&records, &view.comparisons);
        (view, findings)
    } else {
        compare_specs(&store, &args, &options)?
    };
    let path = html::write_index(&store, &view)?;
    println!("verdict: {}", findings.summary());
    println!("report: {}", path.display());
    Ok(if fail && !findings.is_empty() {
        ExitCode::from(EXIT_REGRESSION)
    } else {
        ExitCode::SUCCESS
    })
}

/// `report --pair A,B`: benchmark B against A within one run, round by round.
fn pair(store: &Store, args: &ReportArgs, options: &Options) -> Result<Vec<String>> {
    let [a, b] = args.pair.as_slice() else {
        bail!(
            "--pair needs exactly two benchmarks of one run, separated by a comma (e.g. --pair              hnsw/ef_search/40,hnsw/ef_search/64)"
        );
    };
    let holds = |r: &RunRecord| {
        r.results.iter().any(|e| e.name == *a) && r.results.iter().any(|e| e.name == *b)
    };
    let stored = match &args.run {
        Some(spec) => {
            let (_, records) = store.resolve(&spec.to_string_lossy(), None)?;
            records
                .into_iter()
                .rev()
                .find(|s| holds(&s.record))
                .ok_or_else(|| {
                    anyhow::anyhow!("{} holds no run with both {a} and {b}", spec.display())
                })?
        }
        None => {
            let (runs, _) = store.runs();
            runs.into_iter()
                .rev()
                .find(|s| holds(&s.record))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no run under {} measured both {a} and {b}",
                        store.runs_dir().display()
                    )
                })?
        }
    };
    let entry = |name: &str| stored.record.results.iter().find(|e| e.name == name);
    let (ea, eb) = (entry(a).expect("checked"), entry(b).expect("checked"));
    let mut lines = vec![format!(
        "{} ({}): {b} against {a}, round by round",
        stored.label(),
        stored.record.created_at
    )];
    let confidence = 1.0 - options.significance_level;
    for metric in &[Metric::P50_MS, Metric::P99_MS, Metric::Qps] {
        if let Some(p) = noise::Paired::of(ea, eb, metric, confidence) {
            lines.push(format!("  {}", p.text()));
        }
    }
    if lines.len() == 1 {
        bail!(
            "{} has no measurement rounds for {a} and {b} (runs made before rounds were recorded, or              with CAPBENCH_ROUNDS=1): nothing to pair",
            stored.label()
        );
    }
    Ok(lines)
}

fn compare_specs(
    store: &Store,
    args: &ReportArgs,
    options: &Options,
) -> Result<(html::View, Findings)> {
    if args.compare.len() < 2 {
        bail!(
            "--compare needs at least two baselines or runs, separated by a comma (e.g. --compare a,b)"
        );
    }
    let quick = args.quick.then_some(true);
    // A side is one spec, or several joined by '+' (runs of one version: their mean is its figure).
    let resolved: Vec<(String, Vec<Stored>)> = args
        .compare
        .iter()
        .map(|spec| {
            let mut records = Vec::new();
            for part in spec.split('+') {
                records.extend(store.resolve(part.trim(), quick)?.1);
            }
            let label = match store.resolve(spec.trim(), quick) {
                Ok((label, _)) if !spec.contains('+') => label,
                _ => spec.trim().to_string(),
            };
            Ok((label, records))
        })
        .collect::<Result<_>>()?;
    let (ref_label, reference) = &resolved[0];
    let mut view = html::View {
        comparison_title: format!(
            "{} compared with {ref_label}",
            resolved[1..]
                .iter()
                .map(|r| r.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ..html::View::default()
    };
    let of_kind = |records: &[Stored], kind: Kind| -> Vec<Stored> {
        records
            .iter()
            .filter(|s| s.record.kind() == kind)
            .cloned()
            .collect()
    };
    let mut compared_records = Vec::new();
    for (label, records) in &resolved[1..] {
        let mut kinds: Vec<Kind> = records.iter().map(|s| s.record.kind()).collect();
        kinds.dedup();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            let (base_runs, cur_runs) = (of_kind(reference, kind), of_kind(records, kind));
            let (Some(base), Some(cur)) = (base_runs.last(), cur_runs.last()) else {
                view.comparison_notes
                    .push(format!("{kind}: {ref_label} has no {kind} record"));
                continue;
            };
            let (mut history, warnings) = store.history(base, &cur.record, options.window);
            view.comparison_notes.extend(warnings);
            // The current side's own runs are what is judged, not the machine's history.
            history
                .runs
                .retain(|r| !cur_runs.iter().any(|c| c.record.created_at == r.created_at));
            let side = |runs: &[Stored]| -> Vec<noise::PastRun> {
                runs.iter().map(|s| noise::PastRun::of(&s.record)).collect()
            };
            let sides = if base_runs.len() > 1 || cur_runs.len() > 1 {
                (side(&base_runs), side(&cur_runs))
            } else {
                (history.side(&base.record), history.side(&cur.record))
            };
            let c = compare::compare_runs(
                &base.record,
                ref_label,
                &cur.record,
                label,
                options,
                &history,
                sides,
            )?;
            print!("{}", c.text());
            view.comparisons.push(c);
            compared_records.push(cur.record.clone());
        }
    }
    for n in &view.comparison_notes {
        println!("note: {n}");
    }
    if view.comparisons.is_empty() {
        bail!(
            "nothing to compare: {} share no kind of record",
            args.compare.join(" and ")
        );
    }
    let compared: Vec<&RunRecord> = compared_records.iter().collect();
    let findings = Findings::of(&compared, &view.comparisons);
    Ok((view, findings))
}
