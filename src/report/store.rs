//! Where records live and how baselines are kept: `runs/` holds every run's record;
//! `baselines/NAME/<kind>.json` holds the record a `--save-baseline NAME` run saved for each kind,
//! and quick-mode runs keep theirs apart in `baselines-quick/NAME/` (as Criterion's history goes to
//! `criterion-quick/`), so a smoke run is never compared with, or saved over, a real measurement.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::noise;
use crate::record::{Kind, RunRecord};

/// How many of the latest comparable runs are saved with a baseline as its noise.
pub const NOISE_WINDOW_SAVED: usize = 50;

/// Where the noise saved with baseline record `path` lives: `noise/<kind>.json` beside it (a
/// subdirectory, so it is never read as a record). `None` for a path without a file name.
pub fn noise_path(path: &Path) -> Option<PathBuf> {
    Some(path.parent()?.join("noise").join(path.file_name()?))
}

/// A record and the file it came from.
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    pub record: RunRecord,
}

impl Stored {
    /// A short label for tables: the file name, or `baseline NAME`.
    pub fn label(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// "quick mode" or "full run", for messages.
pub fn mode_name(quick: bool) -> &'static str {
    if quick { "quick mode" } else { "full run" }
}

/// The reports directory: `runs/`, `baselines/`, `baselines-quick/`, `index.html`.
#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.html")
    }

    /// `baselines/NAME` (full runs) or `baselines-quick/NAME` (quick mode).
    pub fn baseline_dir(&self, name: &str, quick: bool) -> PathBuf {
        let parent = if quick {
            "baselines-quick"
        } else {
            "baselines"
        };
        self.root.join(parent).join(name)
    }

    /// Every readable record in `runs/`, oldest first. Files that cannot be read are returned as
    /// warnings (one line each) and skipped: one bad file must not hide the others.
    pub fn runs(&self) -> (Vec<Stored>, Vec<String>) {
        read_dir_records(&self.runs_dir())
    }

    /// Every readable record in another directory (same rules as [`Store::runs`]).
    pub fn runs_in(&self, dir: &Path) -> (Vec<Stored>, Vec<String>) {
        read_dir_records(dir)
    }

    /// Saves `record` as baseline `name` of its kind. Like Criterion's per-benchmark baselines, a
    /// run of some benchmarks (`cargo bench hnsw -- ef_search/64 --save-baseline a`) replaces only
    /// those: entries of the saved baseline that this run did not measure are kept, provided both
    /// were measured on the same dataset (otherwise the baseline is replaced whole). Returns the
    /// path and the names of the entries kept from before. Written atomically and redacted
    /// ([`RunRecord::to_json`]).
    pub fn save_baseline(&self, name: &str, record: &RunRecord) -> Result<(PathBuf, Vec<String>)> {
        check_baseline_name(name)?;
        let dir = self.baseline_dir(name, record.quick());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}.json", record.kind()));
        let mut saved = record.clone();
        let mut kept = Vec::new();
        if path.exists() {
            let before = RunRecord::read(&path)?;
            if before.dataset == record.dataset {
                for e in before.results {
                    if !record.results.iter().any(|r| r.name == e.name) {
                        kept.push(e.name.clone());
                        saved.results.push(e);
                    }
                }
            }
        }
        write_atomically(&path, &saved.to_json()?)?;
        // The machine's noise as known now, kept with the baseline: a CI job that restores only
        // `baselines/` still judges by it.
        let (runs, _) = self.runs();
        let comparable: Vec<&RunRecord> = runs
            .iter()
            .map(|s| &s.record)
            .filter(|r| noise::comparable(r, record))
            .collect();
        let history = noise::History::of(
            comparable[comparable.len().saturating_sub(NOISE_WINDOW_SAVED)..]
                .iter()
                .copied(),
            NOISE_WINDOW_SAVED,
        );
        if let Some(noise_file) = noise_path(&path) {
            write_atomically(&noise_file, &serde_json::to_string_pretty(&history)?)?;
        }
        Ok((path, kept))
    }

    /// Baseline `name`'s record of `kind` for a run of the given mode. `Ok(None)` when the baseline
    /// has no record of that kind; an error naming the mismatch when the baseline exists only for
    /// the other mode.
    pub fn load_baseline(&self, name: &str, kind: Kind, quick: bool) -> Result<Option<Stored>> {
        check_baseline_name(name)?;
        let path = self.baseline_dir(name, quick).join(format!("{kind}.json"));
        if path.exists() {
            let record = RunRecord::read(&path)?;
            return Ok(Some(Stored { path, record }));
        }
        let other = self.baseline_dir(name, !quick).join(format!("{kind}.json"));
        if other.exists() {
            bail!(
                "baseline '{name}' for {kind} was saved by a {} ({}), and this is a {}: quick mode \
                 (CAPBENCH_QUICK=1, a 20K × 256 dataset) and full runs are never compared; save a {} \
                 baseline with --save-baseline {name}",
                mode_name(!quick),
                other.display(),
                mode_name(quick),
                mode_name(quick)
            );
        }
        Ok(None)
    }

    /// Names of the saved baselines of a mode.
    pub fn baseline_names(&self, quick: bool) -> Vec<String> {
        let parent = self.root.join(if quick {
            "baselines-quick"
        } else {
            "baselines"
        });
        let mut names: Vec<String> = std::fs::read_dir(&parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Earlier runs in `runs/` comparable with `like` ([`noise::comparable`]): those made before
    /// `exclude` (the run being judged), which is not among them: the history the machine's noise is learnt from. Plus, when `like` came from a saved
    /// baseline, the noise saved with it (see [`Store::save_baseline`]).
    pub fn history(
        &self,
        like: &Stored,
        exclude: &RunRecord,
        window: usize,
    ) -> (noise::History, Vec<String>) {
        let (runs, mut warnings) = self.runs();
        // `runs` is oldest first: only the latest `window` comparable ones are reduced.
        let comparable: Vec<&RunRecord> = runs
            .iter()
            .map(|s| &s.record)
            .filter(|r| {
                *r != exclude
                    && r.created_at <= exclude.created_at
                    && noise::comparable(r, &like.record)
            })
            .collect();
        let mut h = noise::History::of(
            comparable[comparable.len().saturating_sub(window)..]
                .iter()
                .copied(),
            window,
        );
        if let Some(id) = &exclude.calibration {
            h.siblings = runs
                .iter()
                .map(|s| &s.record)
                .filter(|r| {
                    r.calibration.as_ref() == Some(id)
                        && r.kind() == exclude.kind()
                        && r.created_at <= exclude.created_at
                        && *r != exclude
                })
                .map(noise::PastRun::of)
                .collect();
        }
        if let Some(saved) = noise_path(&like.path).filter(|p| p.is_file()) {
            match std::fs::read_to_string(&saved)
                .map_err(anyhow::Error::from)
                .and_then(|t| Ok(serde_json::from_str::<noise::History>(&t)?))
            {
                Ok(mut saved) => {
                    saved.runs.retain(|r| r.created_at < exclude.created_at);
                    h.merge(saved, window)
                }
                Err(e) => warnings.push(format!(
                    "the noise saved with the baseline ({}) is unreadable and was left out: {}",
                    saved.display(),
                    crate::one_line(&e)
                )),
            }
        }
        (h, warnings)
    }

    /// What `report --compare` accepts for each side: a run-record file, a directory of records,
    /// or the name of a saved baseline (full-run baselines first; `quick` picks the quick ones).
    pub fn resolve(&self, spec: &str, quick: Option<bool>) -> Result<(String, Vec<Stored>)> {
        let as_path = Path::new(spec);
        if as_path.is_file() {
            let record = RunRecord::read(as_path)?;
            return Ok((
                spec.to_string(),
                vec![Stored {
                    path: as_path.to_path_buf(),
                    record,
                }],
            ));
        }
        let in_runs = self.runs_dir().join(spec);
        if in_runs.is_file() {
            let record = RunRecord::read(&in_runs)?;
            return Ok((
                spec.to_string(),
                vec![Stored {
                    path: in_runs,
                    record,
                }],
            ));
        }
        if as_path.is_dir() && spec.contains('/') {
            return Ok((spec.to_string(), read_dir_strict(as_path)?));
        }
        check_baseline_name(spec).with_context(|| {
            format!("'{spec}' is neither a run-record file nor a saved baseline")
        })?;
        let (full, quick_dir) = (
            self.baseline_dir(spec, false),
            self.baseline_dir(spec, true),
        );
        let dir = match (quick, full.is_dir(), quick_dir.is_dir()) {
            (Some(true), _, true) | (None, false, true) => quick_dir,
            (Some(false), true, _) | (None, true, _) => full,
            (Some(q), _, _) if self.baseline_dir(spec, !q).is_dir() => bail!(
                "baseline '{spec}' exists only for {}s ({}), and a {} was asked for: quick and full \
                 runs are never compared",
                mode_name(!q),
                self.baseline_dir(spec, !q).display(),
                mode_name(q)
            ),
            _ => {
                let known: Vec<String> = self
                    .baseline_names(false)
                    .into_iter()
                    .chain(
                        self.baseline_names(true)
                            .into_iter()
                            .map(|n| format!("{n} (quick)")),
                    )
                    .collect();
                bail!(
                    "no run-record file and no saved baseline named '{spec}' under {} (saved baselines: {})",
                    self.root.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            }
        };
        let label = if dir == self.baseline_dir(spec, true) {
            format!("baseline '{spec}' (quick)")
        } else {
            format!("baseline '{spec}'")
        };
        let records = read_dir_strict(&dir)?;
        if records.is_empty() {
            bail!("baseline directory {} holds no records", dir.display());
        }
        Ok((label, records))
    }
}

/// Baseline names become directory names: letters, digits, `-`, `_`, `.` (not only dots).
pub fn check_baseline_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.chars().all(|c| c == '.');
    if !ok {
        bail!(
            "'{name}' is not a usable baseline name: use letters, digits, '-', '_' and '.' (it becomes a directory name)"
        );
    }
    Ok(())
}

/// Writes `text` to `path` completely or not at all (temporary file, then rename).
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn sort_records(records: &mut [Stored]) {
    records.sort_by(|a, b| {
        (a.record.created_at.as_str(), &a.path).cmp(&(b.record.created_at.as_str(), &b.path))
    });
}

fn read_dir_records(dir: &Path) -> (Vec<Stored>, Vec<String>) {
    let (mut records, mut warnings) = (Vec::new(), Vec::new());
    for path in json_files(dir) {
        match RunRecord::read(&path) {
            Ok(record) => records.push(Stored { path, record }),
            Err(e) => warnings.push(format!("skipped {}", crate::one_line(&e))),
        }
    }
    sort_records(&mut records);
    (records, warnings)
}

fn read_dir_strict(dir: &Path) -> Result<Vec<Stored>> {
    let mut records = Vec::new();
    for path in json_files(dir) {
        let record = RunRecord::read(&path)?;
        records.push(Stored { path, record });
    }
    sort_records(&mut records);
    Ok(records)
}
