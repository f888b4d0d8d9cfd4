//! Criterion's reports: links to Criterion's own pages for the benchmarks of the latest runs.

use std::collections::BTreeMap;
use std::path::Path;

use maud::{Render, html};

use super::super::store::Stored;
use super::helpers::Text;
use crate::record::Kind;

/// What the section shows: the links that exist, or where Criterion would write.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    /// (href relative to the page, text).
    pub links: Vec<(Text, Text)>,
    /// `<root>/criterion`, shown when there is no link.
    pub home: Text,
}

impl Criterion {
    pub fn of(root: &Path, latest: &BTreeMap<Kind, &Stored>) -> Self {
        let mut links = Vec::new();
        for dir in ["criterion", "criterion-quick"] {
            let rel = format!("{dir}/report/index.html");
            if root.join(&rel).exists() {
                links.push((
                    Text::new(&rel),
                    Text::new(format!("{rel} (all benchmarks)")),
                ));
            }
        }
        for s in latest.values() {
            let dir = if s.record.quick() {
                "criterion-quick"
            } else {
                "criterion"
            };
            for e in &s.record.results {
                let rel = format!("{dir}/{}/report/index.html", e.name);
                if root.join(&rel).exists() {
                    links.push((Text::new(&rel), Text::new(&e.name)));
                }
            }
        }
        Self {
            links,
            home: Text::new(root.join("criterion").display().to_string()),
        }
    }
}

impl Render for Criterion {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="criterion" { "Criterion's reports" }
            p.note {
                "Criterion's own pages (mean/median time of each benchmark, its distribution and its \
                 comparison with Criterion's baseline)."
            }
            ul { @for (href, text) in &self.links { li { a href=(href) { (text) } } } }
            @if self.links.is_empty() {
                p.note {
                    "No Criterion report under " code { (self.home) } " yet (Criterion writes there \
                     when " code { "CRITERION_HOME" } " points at it, as the project's "
                    code { ".cargo/config.toml" } " does)."
                }
            }
        }
        .render_to(buffer);
    }
}
