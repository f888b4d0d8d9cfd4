//! What every section uses: [`Text`] (scrubbed of secrets, escaped by maud), number cells (counts
//! as integers), the PASS/FAIL cell, the record's source line and a chart ([`Figure`]).

use maud::{Markup, PreEscaped, Render, html};

use super::super::charts::{self, Bars, Chart, Spectrum};
use super::super::compare::number;
use super::super::store::Stored;
use crate::record::{Kind, Metric, ResultEntry};
use crate::secrets;

/// Text the page shows: every secret this process has seen is removed when it is made
/// ([`secrets::scrub`]; the records themselves are redacted when read), and maud escapes it when
/// it is rendered. Section data holds text from records only as `Text`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn new(s: impl AsRef<str>) -> Self {
        Self(secrets::scrub(s.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Self::new(s)
    }
}

impl Render for Text {
    fn render_to(&self, buffer: &mut String) {
        self.0.render_to(buffer);
    }
}

/// The figure of metric `m` as the page shows it: a count as an integer (`200`, never `200.00`;
/// a mean of counts keeps its fraction), anything else through [`number`].
pub fn figure(m: &Metric, v: f64) -> String {
    if m.is_count() && (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        number(v)
    }
}

/// A right-aligned number cell; `-` when there is no figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Num(pub Option<String>);

impl Num {
    /// A figure through [`number`].
    pub fn of(v: Option<f64>) -> Self {
        Self(v.map(number))
    }

    /// Metric `m` of `e`, a count as an integer ([`figure`]).
    pub fn metric(e: &ResultEntry, m: &Metric) -> Self {
        Self(e.metric(m).map(|v| figure(m, v)))
    }
}

impl Render for Num {
    fn render_to(&self, buffer: &mut String) {
        html! { td.n { (self.0.as_deref().unwrap_or("-")) } }.render_to(buffer);
    }
}

/// A gate's cell.
pub fn pass_cell(pass: bool) -> Markup {
    html! {
        @if pass { td.pass { "PASS" } } @else { td.fail { "FAIL" } }
    }
}

/// `name: PASS; other: FAIL` — an entry's gates in one cell.
pub fn gates_text(e: &ResultEntry) -> Text {
    let gates: Vec<String> = e
        .gates
        .iter()
        .map(|g| format!("{}: {}", g.name, if g.pass { "PASS" } else { "FAIL" }))
        .collect();
    Text::new(gates.join("; "))
}

/// The seeds' dataset size of a record (`dataset.params.rows`).
pub fn rows_of(s: &Stored) -> Option<u64> {
    s.record
        .dataset
        .as_ref()?
        .get("params")?
        .get("rows")?
        .as_u64()
}

/// The badge of a quick-mode record.
pub fn quick_badge(quick: bool) -> Markup {
    html! {
        @if quick {
            " " span.badge.quick { "quick mode — smoke run, not a measurement" }
        }
    }
}

/// Where a section's figures come from: "From `file`, created_at (quick badge)."
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub label: Text,
    pub created_at: Text,
    pub quick: bool,
}

impl Source {
    pub fn of(s: &Stored) -> Self {
        Self {
            label: Text::new(s.label()),
            created_at: Text::new(&s.record.created_at),
            quick: s.record.quick(),
        }
    }
}

impl Render for Source {
    fn render_to(&self, buffer: &mut String) {
        html! {
            p.note { "From " code { (self.label) } ", " (self.created_at) (quick_badge(self.quick)) "." }
        }
        .render_to(buffer);
    }
}

/// A chart of the page, as data: what the section puts in it, drawn by the function of
/// [`charts`](super::super::charts) for its kind when the page is rendered. Every text in it is
/// scrubbed of secrets when it is made (plotters escapes it in the SVG).
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// A chart on its own.
    Xy(Chart),
    /// One of a row of small multiples (see [`multiples`]).
    Small(Chart),
    Spectrum(Spectrum),
    Bars(Bars),
}

fn scrubbed(mut c: Chart) -> Chart {
    for t in [&mut c.title, &mut c.x_label, &mut c.y_label] {
        *t = secrets::scrub(t);
    }
    for s in &mut c.series {
        s.label = secrets::scrub(&s.label);
    }
    for (_, t) in &mut c.hlines {
        *t = secrets::scrub(t);
    }
    for (_, t) in &mut c.notes {
        *t = secrets::scrub(t);
    }
    c
}

impl Figure {
    pub fn xy(c: Chart) -> Self {
        Self::Xy(scrubbed(c))
    }

    pub fn small(c: Chart) -> Self {
        Self::Small(scrubbed(c))
    }

    pub fn spectrum(mut s: Spectrum) -> Self {
        s.title = secrets::scrub(&s.title);
        for (name, _) in &mut s.lines {
            *name = secrets::scrub(name);
        }
        Self::Spectrum(s)
    }

    pub fn bars(mut b: Bars) -> Self {
        for t in [&mut b.title, &mut b.y_label]
            .into_iter()
            .chain(b.categories.iter_mut())
            .chain(b.stacks.iter_mut().map(|s| &mut s.0))
        {
            *t = secrets::scrub(t);
        }
        Self::Bars(b)
    }

    /// The chart drawn: an SVG document.
    pub fn svg(&self) -> anyhow::Result<String> {
        match self {
            Figure::Xy(c) => charts::xy(c),
            Figure::Small(c) => charts::small(c),
            Figure::Spectrum(s) => charts::spectrum(s),
            Figure::Bars(b) => charts::stacked_bars(b),
        }
    }
}

impl Render for Figure {
    fn render_to(&self, buffer: &mut String) {
        html! {
            @match self.svg() {
                // Without the XML prolog, if any, so the SVG can sit inside HTML; its text is
                // escaped by plotters.
                Ok(svg) => div.chart { (PreEscaped(svg.find("<svg").map_or(&svg[..], |i| &svg[i..]))) },
                Err(e) => p.warn { "chart not drawn: " (Text::new(crate::one_line(&e))) },
            }
        }
        .render_to(buffer);
    }
}

/// A section that shows one kind of record: its heading, then `content`, or — with no such record
/// yet — the bench that makes one (`cargo bench KIND`).
pub fn section_of(id: &str, title: &str, kind: Kind, content: Option<Markup>) -> Markup {
    html! {
        h2 id=(id) { (title) }
        @match content {
            None => p { "No " (kind.as_str()) " record yet (" code { "cargo bench " (kind.as_str()) } ")." },
            Some(c) => (c),
        }
    }
}

/// Charts side by side.
pub fn side_by_side(figures: &[Figure]) -> Markup {
    html! {
        @if !figures.is_empty() {
            div.charts { @for f in figures { (f) } }
        }
    }
}

/// Small multiples: a grid of small charts, several to a row.
pub fn multiples(figures: &[Figure]) -> Markup {
    html! {
        @if !figures.is_empty() {
            div.multiples { @for f in figures { (f) } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_shown_as_integers_and_other_figures_keep_their_digits() {
        assert_eq!(number(200.0), "200.00", "what the page showed for a count");
        assert_eq!(figure(&Metric::Attempts, 200.0), "200");
        assert_eq!(figure(&Metric::Allowed, 89.0), "89");
        assert_eq!(figure(&Metric::Status(429), 3.0), "3");
        assert_eq!(figure(&Metric::Users, 50.0), "50");
        assert_eq!(
            figure(&Metric::Count, 2.5),
            "2.500",
            "a mean of counts keeps its fraction"
        );
        assert_eq!(figure(&Metric::P99_MS, 12.0), "12.00");
        assert_eq!(figure(&Metric::Rps, 200.0), "200.00");
        let e = ResultEntry {
            metrics: [(Metric::Count, 1234.0)].into(),
            ..ResultEntry::default()
        };
        assert_eq!(
            Num::metric(&e, &Metric::Count).render().into_string(),
            "<td class=\"n\">1234</td>"
        );
        assert_eq!(
            Num::metric(&e, &Metric::P50_MS).render().into_string(),
            "<td class=\"n\">-</td>"
        );
    }

    #[test]
    fn text_is_scrubbed_of_secrets_and_escaped() {
        secrets::remember("helpers-test-s3cret");
        let t = Text::new("postgres://u:helpers-test-s3cret@h/db <b>&");
        let html = t.render().into_string();
        assert!(!html.contains("helpers-test-s3cret"), "{html}");
        assert!(
            html.contains("***") && html.contains("&lt;b&gt;&amp;"),
            "{html}"
        );
    }

    #[test]
    fn a_chart_sits_in_the_page_without_its_prolog_and_its_texts_are_scrubbed() {
        secrets::remember("chart-title-s3cret");
        let f = Figure::xy(Chart {
            title: "a chart-title-s3cret b".into(),
            ..Chart::default()
        });
        let html = f.render().into_string();
        assert!(
            html.starts_with("<div class=\"chart\"><svg"),
            "{}",
            &html[..80]
        );
        assert!(!html.contains("chart-title-s3cret") && html.contains("a *** b"));
    }
}
