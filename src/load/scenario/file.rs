//! The scenario file as written (TOML): what serde reads, before anything is resolved. Errors
//! name the file, the line and the field (`rag.toml:12: user[0].tasks[1].weight: invalid type …`).
//! The format is documented in docs/scenarios/README.md.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// What the scenario is (shown by `load`, kept in the record).
    pub description: Option<String>,
    /// The in-process reference service keeps its read limit (RATE_LIMIT_READ_PER_MINUTE) instead
    /// of the capacity setting: the scenario tests the limiter.
    #[serde(default)]
    pub limiter_under_test: bool,
    /// Variables every kind may use.
    #[serde(default)]
    pub vars: BTreeMap<String, Spanned<VarSpec>>,
    /// The user kinds (`[[user]]`).
    #[serde(rename = "user")]
    pub users: Vec<Spanned<UserSpec>>,
}

/// A variable's source (exactly one of `values`, `file`, `from`, `counter`), its order and scope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarSpec {
    pub values: Option<Vec<toml::Value>>,
    /// A CSV file with a header row, or JSON lines (`.jsonl`, `.ndjson`), relative to the
    /// scenario file.
    pub file: Option<String>,
    /// `queries` (the seeds' search texts) or `query_vectors` (their embeddings in the loaded
    /// dataset's space).
    pub from: Option<String>,
    /// A counter starting at this number.
    pub counter: Option<i64>,
    /// `sequential` (default) or `random`.
    pub order: Option<String>,
    /// `user` (default: each user its own cursor) or `shared` (one for the run).
    pub scope: Option<String>,
}

/// One kind of virtual user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub kind: String,
    pub weight: Option<u32>,
    /// `"100ms"` (constant), `{ between = ["1s", "3s"] }`, or `{ pacing = "1s" }`.
    pub wait: Option<toml::Value>,
    /// `weighted` (default: tasks drawn by weight) or `sequence` (in order, each `repeat` times).
    pub order: Option<String>,
    /// `retry` (default: a user whose on_start failed tries it again a second later) or
    /// `continue` (it goes on to its tasks).
    pub on_start_failure: Option<String>,
    #[serde(default)]
    pub on_start: Vec<Spanned<StepSpec>>,
    pub tasks: Vec<Spanned<StepSpec>>,
}

/// A request, or (as a task) a group of requests or a sleep.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The name results are grouped by (Locust's `name=`); default the path as written, holes
    /// and all (`/documents/{{doc_id}}`): one row per endpoint, not per value.
    pub name: Option<String>,
    /// Default GET.
    pub method: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub json: Option<toml::Value>,
    pub form: Option<BTreeMap<String, String>>,
    pub body: Option<String>,
    pub expect: Option<ExpectSpec>,
    #[serde(default)]
    pub extract: BTreeMap<String, ExtractSpec>,
    /// Rows (vectors) the request adds to the searched table when it succeeds with a 2xx: counted
    /// as the run's vectors/s (`--threshold 'vectors_per_s>500'`); against the in-process service
    /// it also moves the run onto the write table, whose added rows are removed afterwards.
    pub writes: Option<u32>,
    /// Tasks only: how often it is drawn (weighted order).
    pub weight: Option<u32>,
    /// Tasks only: how many times in a row (sequence order).
    pub repeat: Option<u32>,
    /// Tasks only: no request, a pause (`"30s"`).
    pub sleep: Option<String>,
    /// Tasks only: several requests, one after the other.
    pub steps: Option<Vec<Spanned<StepSpec>>>,
}

/// What makes an answer a success.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Statuses that count as success (default 200–399).
    pub status: Option<Vec<u16>>,
    /// Text the body must contain.
    pub contains: Option<String>,
    /// JSON pointers the body must have.
    pub json: Option<Vec<String>>,
    /// The failure's text for another status (`{status}` is replaced), as Locust's
    /// `resp.failure(...)`; default `HTTP 503`.
    pub failure: Option<String>,
}

/// Where an extracted value comes from: exactly one of a JSON pointer and a header.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractSpec {
    pub json: Option<String>,
    pub header: Option<String>,
}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// Reads `text` (the file `label`): one line naming the file, line and field on error.
pub fn parse(label: &str, text: &str) -> Result<FileSpec, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(label, text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // Spanned's own wrapper is no field of the file.
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        toml_error(label, text, e.inner(), Some(path))
    })
}

fn toml_error(label: &str, text: &str, e: &toml::de::Error, path: Option<String>) -> String {
    let line = e
        .span()
        .map(|s| format!(":{}", line_of(text, s.start)))
        .unwrap_or_default();
    let field = path
        .filter(|p| !p.is_empty() && p != ".")
        .map(|p| format!(" {p}:"))
        .unwrap_or_default();
    let message = e.message().lines().next().unwrap_or("").trim().to_string();
    format!("{label}{line}:{field} {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let text = "[[user]]\nkind = \"a\"\n\n[[user.tasks]]\npath = \"/\"\nweight = \"two\"\n";
        let e = parse("x.toml", text).unwrap_err();
        assert!(e.starts_with("x.toml:6: user[0].tasks[0].weight:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse("x.toml", "[[user]]\nkind = \"a\"\ntasks = []\nsleeep = 1\n").unwrap_err();
        assert!(e.starts_with("x.toml:4:"), "{e}");
        assert!(e.contains("unknown field `sleeep`"), "{e}");
        let e = parse("x.toml", "[[user]\n").unwrap_err();
        assert!(e.starts_with("x.toml:1:"), "{e}");
        let e = parse("x.toml", "description = \"no users\"\n").unwrap_err();
        assert!(e.contains("missing field `user`"), "{e}");
    }

    #[test]
    fn spans_survive_for_the_checks_after_reading() {
        let text = "[[user]]\nkind = \"a\"\n\n[[user.tasks]]\npath = \"/\"\n";
        let f = parse("x.toml", text).unwrap();
        let task = &f.users[0].get_ref().tasks[0];
        assert_eq!(line_of(text, task.span().start), 4);
        assert_eq!(task.get_ref().path.as_deref(), Some("/"));
    }
}
