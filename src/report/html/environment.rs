//! Environment: what each kind's latest run was measured on — machine, servers and their settings,
//! dataset and parameters — one column per kind.

use std::collections::BTreeMap;

use maud::{Render, html};

use super::super::store::{Stored, mode_name};
use super::helpers::Text;
use crate::record::{Kind, RunRecord};

/// What the section shows: nothing when nothing was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// The kinds, one column each.
    pub kinds: Vec<Text>,
    pub rows: Vec<Row>,
}

/// One field, for each kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: &'static str,
    pub cells: Vec<Text>,
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// A field of a record as text.
type Field = fn(&RunRecord) -> String;

/// The fields shown, in order.
const FIELDS: &[(&str, Field)] = &[
    ("created", |r| r.created_at.clone()),
    ("mode", |r| mode_name(r.quick()).to_string()),
    ("CPU", |r| {
        format!(
            "{} ({} cores)",
            r.environment.cpu_model, r.environment.cores
        )
    }),
    ("memory", |r| {
        format!(
            "{:.1} GiB",
            r.environment.memory_bytes as f64 / (1u64 << 30) as f64
        )
    }),
    ("OS", |r| r.environment.os.clone()),
    ("git commit", |r| or_dash(&r.environment.git_commit)),
    ("PostgreSQL", |r| or_dash(&r.environment.postgres_version)),
    ("pgvector", |r| or_dash(&r.environment.pgvector_version)),
    ("server settings", |r| {
        let s: Vec<String> = r
            .environment
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if s.is_empty() {
            "-".into()
        } else {
            s.join(", ")
        }
    }),
    ("Redis", |r| or_dash(&r.environment.redis_version)),
    ("idle CPUs", |r| match r.environment.cpu_dma_latency_us {
        Some(0) => "polling (cpu_dma_latency 0 µs)".into(),
        Some(us) => format!("OS idle states (cpu_dma_latency {us} µs)"),
        None => "-".into(),
    }),
    ("dataset", |r| {
        r.dataset
            .as_ref()
            .map_or_else(|| "-".into(), |d| d.to_string())
    }),
    ("parameters", |r| r.parameters.fields().to_string()),
    ("schema_version", |r| r.schema_version.to_string()),
];

impl Environment {
    pub fn of(latest: &BTreeMap<Kind, &Stored>) -> Self {
        Self {
            kinds: latest.keys().map(|k| Text::new(k.as_str())).collect(),
            rows: FIELDS
                .iter()
                .map(|(name, field)| Row {
                    name,
                    cells: latest
                        .values()
                        .map(|s| Text::new(field(&s.record)))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Text that may break after each comma (long JSON, settings lists).
struct Breakable<'a>(&'a Text);

impl Render for Breakable<'_> {
    fn render_to(&self, buffer: &mut String) {
        html! {
            @for (i, part) in self.0.as_str().split(',').enumerate() {
                @if i > 0 { "," wbr; }
                (part)
            }
        }
        .render_to(buffer);
    }
}

impl Render for Environment {
    fn render_to(&self, buffer: &mut String) {
        html! {
            h2 id="environment" { "Environment" }
            @if !self.kinds.is_empty() {
                div.scroll { table {
                    tr { th {} @for k in &self.kinds { th { (k) } } }
                    @for r in &self.rows {
                        tr {
                            th { (r.name) }
                            @for c in &r.cells { td { code { (Breakable(c)) } } }
                        }
                    }
                } }
            }
        }
        .render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_may_break_after_commas_and_stay_escaped() {
        let t = Text::new(r#"{"a":"<b>","c":1}"#);
        let html = Breakable(&t).render().into_string();
        assert_eq!(
            html,
            "{&quot;a&quot;:&quot;&lt;b&gt;&quot;,<wbr>&quot;c&quot;:1}"
        );
    }
}
