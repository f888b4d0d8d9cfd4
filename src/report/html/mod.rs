//! target-reports/index.html: one self-contained page (inline CSS and SVG, no JavaScript, nothing
//! fetched) read top to bottom — verdicts, HNSW, filtered search, index variants, the memory regime, scale and the capacity plan, capacity, HTTP, the rate limiter,
//! history, the comparison with a baseline, the environment, links to Criterion's pages, and every
//! figure of every record (so no kind or entry is silently dropped).
//!
//! Each section is a module that first builds a plain data struct from the records (`Xxx::of`,
//! testable without HTML; every text from a record held as [`helpers::Text`], scrubbed of
//! secrets) and then renders it with maud, which escapes all text. Charts are data too
//! ([`helpers::Figure`]), drawn by [`super::charts`] when the page is rendered.
//!
//! - `verdicts`, `hnsw`, `filtered`, `variants`, `memory`, `scale`, `capacity`, `http`, `limiter`, `history`, `comparison`,
//!   `environment`, `criterion`, `figures`: the sections, in page order;
//! - `latency`: the latency table and the percentile spectrum shared by capacity, HTTP and limiter;
//! - `helpers`: text, number cells, the source line, figures.

mod capacity;
mod comparison;
mod criterion;
mod environment;
mod figures;
mod filtered;
mod helpers;
mod history;
mod hnsw;
mod http;
mod inserts;
mod latency;
mod limiter;
mod memory;
mod scale;
mod streaming;
mod variants;
mod verdicts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use maud::{DOCTYPE, Markup, PreEscaped, Render, html};

use super::compare::Comparison;
use super::store::{Store, Stored, write_atomically};
use crate::record::Kind;
use helpers::Text;

/// What the page shows besides the records: the comparisons and what they are against.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// e.g. "latest runs compared with baseline 'a'".
    pub comparison_title: String,
    pub comparisons: Vec<Comparison>,
    /// Lines about comparisons that could not be made (no baseline of that kind, other mode…).
    pub comparison_notes: Vec<String>,
}

/// Rebuilds `index.html` from every record in `runs/` (read redacted; every text shown is
/// scrubbed of secrets and escaped). Returns its path.
pub fn write_index(store: &Store, view: &View) -> Result<PathBuf> {
    let (runs, warnings) = store.runs();
    let page = render(&store.root, &runs, &warnings, view);
    let path = store.index_path();
    write_atomically(&path, &page)?;
    Ok(path)
}

/// The latest record of each kind.
pub fn latest_by_kind(runs: &[Stored]) -> BTreeMap<Kind, &Stored> {
    let mut latest = BTreeMap::new();
    for s in runs {
        latest.insert(s.record.kind(), s); // runs are oldest first
    }
    latest
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:0 auto;padding:16px 20px 60px;color:#1b1b1b;line-height:1.45}
h1{margin-bottom:4px}h2{margin-top:40px;border-bottom:2px solid #ddd;padding-bottom:4px}h3{margin-top:24px}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:14px}
.multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:8px}
.chart{max-width:760px}.chart svg{width:100%;height:auto;border:1px solid #e4e4e4;border-radius:4px}
.pass{background:#dff3e3;color:#0b5d1e;font-weight:600}.fail{background:#fbe0e0;color:#8a1111;font-weight:600}
.regressed{background:#fbe0e0;color:#8a1111;font-weight:600}.improved{background:#dff3e3;color:#0b5d1e;font-weight:600}
.nochange{color:#555}.info{color:#888}.unjudged{background:#fff4d6;color:#7a5200}.noise{font-size:14px;color:#333}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:13px;font-weight:600}
.quick{background:#fff1c7;color:#6b4e00}
.note{color:#555;font-size:14px}.warn{color:#8a1111}
code{background:#f4f4f4;padding:0 3px;border-radius:3px}
nav a{margin-right:12px}
"#;

/// The sections' anchors and names, in page order.
const NAV: [(&str, &str); 16] = [
    ("verdicts", "Verdicts"),
    ("hnsw", "HNSW"),
    ("filtered", "Filtered search"),
    ("variants", "Index variants"),
    ("memory", "Memory regime"),
    ("scale", "Scale and plan"),
    ("writes", "Writes"),
    ("streaming", "Streaming"),
    ("capacity", "Capacity"),
    ("http", "HTTP"),
    ("limiter", "Rate limiter"),
    ("history", "History"),
    ("comparison", "Comparison"),
    ("environment", "Environment"),
    ("criterion", "Criterion"),
    ("all", "All figures"),
];

/// The whole page, as data.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// When the page was made (RFC 3339, seconds).
    pub generated: Text,
    pub records: usize,
    /// The records' directory.
    pub runs_dir: Text,
    /// Records that could not be read.
    pub warnings: Vec<Text>,
    pub verdicts: verdicts::Verdicts,
    pub hnsw: hnsw::Hnsw,
    pub filtered: filtered::Filtered,
    pub variants: variants::Variants,
    pub memory: memory::Memory,
    pub scale: scale::Scale,
    pub inserts: inserts::Inserts,
    pub streaming: streaming::Streaming,
    pub capacity: capacity::Capacity,
    pub http: http::Http,
    pub limiter: limiter::Limiter,
    pub history: history::History,
    pub comparison: comparison::Comparison,
    pub environment: environment::Environment,
    pub criterion: criterion::Criterion,
    pub figures: figures::Figures,
}

impl Page {
    /// The page of the records `runs` (oldest first) under `root`.
    pub fn of(root: &Path, runs: &[Stored], warnings: &[String], view: &View) -> Self {
        let latest = latest_by_kind(runs);
        let kind = |k: Kind| latest.get(&k).copied();
        Self {
            generated: Text::new(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            records: runs.len(),
            runs_dir: Text::new(root.join("runs").display().to_string()),
            warnings: warnings.iter().map(Text::from).collect(),
            verdicts: verdicts::Verdicts::of(&latest, view),
            hnsw: hnsw::Hnsw::of(kind(Kind::Hnsw)),
            filtered: filtered::Filtered::of(kind(Kind::HnswFiltered)),
            variants: variants::Variants::of(kind(Kind::Variants)),
            memory: memory::Memory::of(kind(Kind::Memory)),
            scale: scale::Scale::of(kind(Kind::Scale)),
            inserts: inserts::Inserts::of(kind(Kind::HnswInsert)),
            streaming: streaming::Streaming::of(kind(Kind::Streaming)),
            capacity: capacity::Capacity::of(&latest),
            http: http::Http::of(kind(Kind::HttpSearch), kind(Kind::Hnsw)),
            limiter: limiter::Limiter::of(kind(Kind::RateLimit)),
            history: history::History::of(runs, &latest),
            comparison: comparison::Comparison::of(view),
            environment: environment::Environment::of(&latest),
            criterion: criterion::Criterion::of(root, &latest),
            figures: figures::Figures::of(&latest),
        }
    }

    fn header(&self) -> Markup {
        html! {
            h1 { "capbench report" }
            p.sub {
                "Generated " (self.generated) " from " (self.records) " run record(s) in "
                code { (self.runs_dir) } ". Rebuild with "
                code { "cargo run --release --bin report" } "."
            }
            nav { @for (id, name) in NAV { a href={ "#" (id) } { (name) } } }
            @for w in &self.warnings { p.warn { (w) } }
            @if self.records == 0 {
                p {
                    "No run records yet. Run " code { "cargo bench" } " (or "
                    code { "CAPBENCH_QUICK=1 cargo bench" } " for a smoke run); each bench writes \
                     its record and rebuilds this page."
                }
            }
        }
    }
}

impl Render for Page {
    fn render_to(&self, buffer: &mut String) {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "capbench report" }
                    style { (PreEscaped(CSS)) }
                }
                body {
                    (self.header())
                    (self.verdicts)
                    (self.hnsw)
                    (self.filtered)
                    (self.variants)
                    (self.memory)
                    (self.scale)
                    (self.inserts)
                    (self.streaming)
                    (self.capacity)
                    (self.http)
                    (self.limiter)
                    (self.history)
                    (self.comparison)
                    (self.environment)
                    (self.criterion)
                    (self.figures)
                }
            }
        }
        .render_to(buffer);
        buffer.push('\n');
    }
}

/// The whole page.
pub fn render(root: &Path, runs: &[Stored], warnings: &[String], view: &View) -> String {
    Page::of(root, runs, warnings, view).render().into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Environment, Metric, Parameters, ResultEntry, RunRecord};

    fn stored(kind: Kind, results: Vec<ResultEntry>) -> Stored {
        let mut record = RunRecord::new(Environment::default(), Parameters::of(kind));
        record.created_at = "2026-01-01T00:00:00Z".into();
        record.results = results;
        Stored {
            path: PathBuf::from(format!("/r/runs/{kind}-1.json")),
            record,
        }
    }

    #[test]
    fn the_page_has_every_section_escapes_record_text_and_shows_no_secret() {
        crate::secrets::remember("page-test-s3cret");
        let entry = ResultEntry {
            name: "custom/<script>alert(1)</script> postgres://u:page-test-s3cret@h".into(),
            metrics: [(Metric::Count, 200.0)].into(),
            gates: vec![crate::gates::seeds_p99(None, Some(60.0))],
            ..ResultEntry::default()
        };
        let runs = vec![stored(Kind::Load, vec![entry])];
        let page = Page::of(
            Path::new("/r"),
            &runs,
            &["a warning".into()],
            &View::default(),
        );
        assert_eq!(page.records, 1);
        assert_eq!(page.verdicts.gates.len(), 1);
        assert_eq!(page.figures.0[0].rows[0].metrics.as_str(), "count 200");
        let html = page.render().into_string();
        assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
        for (id, _) in NAV {
            assert!(html.contains(&format!("id=\"{id}\"")), "no section #{id}");
        }
        assert!(!html.contains("<script"), "record text is escaped");
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("page-test-s3cret"), "no secret on the page");
        assert!(html.contains("count 200") && !html.contains("200.00"));
        assert!(html.contains("<p class=\"warn\">a warning</p>"));
    }

    #[test]
    fn an_empty_reports_directory_says_how_to_fill_it() {
        let html = render(Path::new("/r"), &[], &[], &View::default());
        assert!(html.contains("No run records yet"));
        assert!(html.contains("Nothing measured yet."));
        assert!(html.contains("No comparison: save a baseline"));
    }
}
