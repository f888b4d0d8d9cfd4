//! What happens to a finished run's record, and the `report` binary.
//!
//! Every bench and `load` end with [`publish`]: the record goes to `target-reports/runs/`; with
//! Criterion's `--save-baseline NAME` it is also saved as capbench's baseline NAME; with
//! `--baseline NAME` it is compared with that baseline and a verdict table is printed; then
//! `index.html` is rebuilt and its path printed. With `CAPBENCH_FAIL_ON_REGRESSION=1`, a regression
//! or a failed gate makes the run fail.
//!
//! - `store`: the reports directory — runs, baselines (full and quick kept apart), atomic writes.
//! - `compare`: one verdict per benchmark, judged against the machine's noise (`noise`: learnt
//!   from earlier comparable runs and the runs' own rounds), many decisions controlled together.
//! - `charts`: plotters SVG charts.
//! - `html`: the page — one module per section, each a data struct rendered with maud.
//!
//! `charts`, `html` and the `report` binary are built with the `html` feature (on by default);
//! without it (`serve`/`load` deployed with `--no-default-features`) a run's record, baseline and
//! verdicts are written as usual and the page is left for `report` to rebuild.

#[cfg(feature = "html")]
pub mod charts;
#[cfg(feature = "html")]
mod cli;
pub mod compare;
#[cfg(feature = "html")]
pub mod html;
pub mod noise;
pub mod plan;
pub mod store;

#[cfg(feature = "html")]
pub use cli::{ReportArgs, page_view, run};

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::record::{self, Gate, GateKind, Metric, RunRecord};
use compare::{Comparison, Options};
use store::Store;

#[cfg(feature = "html")]
use crate::gates::P99_MS as GATE_P99_MS;

/// Exit code of `report --fail-on-regression` when a regression or a failed gate is found
/// (1 is an error, 2 a usage error).
pub const EXIT_REGRESSION: u8 = 3;

/// A gate of a result entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub entry: String,
    pub gate: Gate,
}

/// The gates of a record: those its entries carry, plus the seeds' error rate < 1 % for entries
/// with an `error_rate` and no gate of their own about errors.
pub fn gates_of(r: &RunRecord) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in &r.results {
        for g in &e.gates {
            out.push(Finding {
                entry: e.name.clone(),
                gate: g.clone(),
            });
        }
        let has_error_gate = e.gates.iter().any(|g| g.kind == GateKind::ErrorRate);
        if let (Some(&rate), false) = (e.metrics.get(&Metric::ErrorRate), has_error_gate) {
            out.push(Finding {
                entry: e.name.clone(),
                gate: crate::gates::error_rate(rate),
            });
        }
    }
    out
}

/// What `--fail-on-regression` acts on.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    pub regressions: Vec<String>,
    pub failed_gates: Vec<String>,
}

impl Findings {
    pub fn of(records: &[&RunRecord], comparisons: &[Comparison]) -> Self {
        let mut f = Self::default();
        for r in records {
            for Finding { entry, gate } in gates_of(r) {
                if !gate.pass {
                    f.failed_gates.push(format!("{entry}: {}", gate.name));
                }
            }
        }
        for c in comparisons {
            for m in c.regressions() {
                f.regressions.push(format!(
                    "{} {} {} → {} ({}{})",
                    m.entry,
                    m.metric,
                    compare::number(m.baseline),
                    compare::number(m.current),
                    m.change_text(),
                    m.ci.map_or(String::new(), |_| format!(", {}", m.ci_text()))
                ));
            }
        }
        f
    }

    pub fn is_empty(&self) -> bool {
        self.regressions.is_empty() && self.failed_gates.is_empty()
    }

    /// One line: what regressed and which gates failed.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.regressions.is_empty() {
            parts.push(format!("regressed: {}", self.regressions.join("; ")));
        }
        if !self.failed_gates.is_empty() {
            parts.push(format!("gate failed: {}", self.failed_gates.join("; ")));
        }
        if parts.is_empty() {
            "no regression, every gate passed".into()
        } else {
            parts.join(" — ")
        }
    }
}

/// `CAPBENCH_FAIL_ON_REGRESSION` set to something other than empty, `0`, `false`, `no`, `off`.
pub fn fail_on_regression_env() -> bool {
    std::env::var("CAPBENCH_FAIL_ON_REGRESSION").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// Criterion's baseline flags, read from a bench's arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BaselineArgs {
    /// `--save-baseline NAME` / `-s NAME`.
    pub save: Option<String>,
    /// `--baseline NAME` / `-b NAME`, or `--baseline-lenient NAME`.
    pub baseline: Option<String>,
    /// `--baseline-lenient`: a missing baseline is not an error.
    pub lenient: bool,
}

impl BaselineArgs {
    /// Parses `args` (program name first) as Criterion does (`--flag VALUE` or `--flag=VALUE`).
    pub fn parse(args: &[String]) -> Self {
        let mut out = Self::default();
        let mut it = args.iter().skip(1);
        while let Some(a) = it.next() {
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = || inline.clone().or_else(|| it.next().cloned());
            match name {
                "-s" | "--save-baseline" => out.save = value(),
                "-b" | "--baseline" => out.baseline = value(),
                "--baseline-lenient" => {
                    out.baseline = value();
                    out.lenient = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// Publishes a bench's or `load`'s record. `args` are the process's arguments (program name first),
/// read the way Criterion reads them (`--save-baseline NAME`, `--baseline NAME`, `--noise-threshold`,
/// `--significance-level`, `--nresamples`). Returns the record's path.
pub fn publish(record: &RunRecord, args: &[String]) -> Result<PathBuf> {
    publish_in(
        &Store::new(record::reports_dir()),
        record,
        args,
        fail_on_regression_env(),
    )
}

/// [`publish`] into `store`; with `fail_on_regression`, a regression or a failed gate is an error
/// (after the record, the baseline and the page are written).
pub fn publish_in(
    store: &Store,
    record: &RunRecord,
    args: &[String],
    fail_on_regression: bool,
) -> Result<PathBuf> {
    let flags = BaselineArgs::parse(args);
    let options = Options::from_args(args)?;
    let path = record.write(&store.root)?;
    println!("run record: {}", path.display());
    let quick = record.quick();
    let label = path
        .file_name()
        .map_or_else(|| "this run".into(), |n| n.to_string_lossy().into_owned());

    let mut comparisons = Vec::new();
    let mut missing = None;
    if let Some(name) = &flags.baseline {
        match store.load_baseline(name, record.kind(), quick) {
            Ok(Some(base)) => {
                let (history, warnings) = store.history(&base, record, options.window);
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                let c = compare::compare(
                    &base.record,
                    &baseline_label(name, quick),
                    record,
                    &label,
                    &options,
                    &history,
                )?;
                print!("{}", c.text());
                comparisons.push(c);
            }
            Ok(None) => {
                let msg = format!(
                    "capbench has no baseline '{name}' for {} ({}): save one with --save-baseline {name}",
                    record.kind(),
                    store.baseline_dir(name, quick).display()
                );
                if flags.lenient {
                    println!("note: {msg}");
                } else {
                    missing = Some(anyhow::anyhow!(msg));
                }
            }
            Err(e) if flags.lenient => println!("note: {}", crate::one_line(&e)),
            Err(e) => missing = Some(e),
        }
    }
    if let Some(name) = &flags.save {
        let (saved, kept) = store.save_baseline(name, record)?;
        println!(
            "baseline '{name}' ({}) saved: {}{}",
            store::mode_name(quick),
            saved.display(),
            if kept.is_empty() {
                String::new()
            } else {
                format!(
                    " (kept from before, not measured in this run: {})",
                    kept.join(", ")
                )
            }
        );
    }

    write_page(store, flags.baseline.as_deref(), &options);
    if let Some(e) = missing {
        return Err(e);
    }
    let findings = Findings::of(&[record], &comparisons);
    if !findings.is_empty() {
        println!("{}: {}", record.kind(), findings.summary());
        if fail_on_regression {
            bail!(
                "{} (CAPBENCH_FAIL_ON_REGRESSION is set): {}",
                record.kind(),
                findings.summary()
            );
        }
    }
    Ok(path)
}

/// The page: every kind's latest run against the same baseline (or its previous run). A failed
/// report step is reported and skipped: it never throws away a measurement.
#[cfg(feature = "html")]
fn write_page(store: &Store, baseline: Option<&str>, options: &Options) {
    let view = page_view(store, baseline, options);
    match html::write_index(store, &view) {
        Ok(p) => println!("report: {}", p.display()),
        Err(e) => eprintln!(
            "warning: the HTML report was not rebuilt: {}",
            crate::one_line(&e)
        ),
    }
}

/// Built without the `html` feature: the page is `report`'s to rebuild, from this record too.
#[cfg(not(feature = "html"))]
fn write_page(store: &Store, _: Option<&str>, _: &Options) {
    println!(
        "report: this binary was built without the HTML page (--no-default-features); \
         rebuild it with `cargo run --release --bin report` (CAPBENCH_REPORTS={})",
        store.root.display()
    );
}

fn baseline_label(name: &str, quick: bool) -> String {
    if quick {
        format!("baseline '{name}' (quick)")
    } else {
        format!("baseline '{name}'")
    }
}
