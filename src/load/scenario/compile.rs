//! A scenario file made ready to run: every template resolved (an unknown variable is an error
//! naming file, line and field), every URL, header and fixed body prepared once, data files read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderName, HeaderValue};

use super::file::{self, ExpectSpec, FileSpec, StepSpec};
use super::template::{JsonTemplate, Ref, Template};
use super::vars::{self, Var};
use crate::load::args::parse_duration;

/// A scenario ready to run: user kinds with weights, and the variables they share.
#[derive(Debug)]
pub struct Scenario {
    /// How the record and the output name it (`search:1`, `rag.toml:1`).
    pub label: String,
    /// SHA-256 of the scenario files' text (files given by path only: a built-in is its name).
    pub digest: Option<String>,
    pub descriptions: Vec<String>,
    /// Some file asked the in-process service to keep its read limit.
    pub limiter_under_test: bool,
    pub kinds: Vec<UserKind>,
    pub vars: Vec<Var>,
    /// The names of extracted values, by slot (for messages).
    pub slots: Vec<String>,
    /// Seeds every user's random choices (tasks, random variables, waits).
    pub seed: u64,
    /// With `load --recall`: the query set `from = "query_set"` draws, which scores the answers of
    /// the requests that send one of its queries.
    pub scorer: Option<Arc<crate::load::recall::Scorer>>,
}

#[derive(Debug)]
pub struct UserKind {
    pub name: String,
    pub weight: u32,
    pub wait: Wait,
    pub on_start: Vec<Request>,
    /// A failed on_start is tried again a second later (else the user goes on).
    pub retry_on_start: bool,
    /// Tasks in order (each `repeat` times), not drawn by weight.
    pub sequence: bool,
    pub tasks: Vec<Task>,
}

/// The wait after each task (Locust's `wait_time`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    Constant(Duration),
    /// Uniform between the two.
    Between(Duration, Duration),
    /// A task starts every this often, whatever it took (Locust's constant_pacing).
    Pacing(Duration),
}

#[derive(Debug)]
pub struct Task {
    pub weight: u32,
    pub repeat: u32,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    Requests(Vec<Request>),
    Sleep(Duration),
}

/// One request, prepared.
#[derive(Debug)]
pub struct Request {
    pub name: Arc<str>,
    pub method: reqwest::Method,
    pub method_name: &'static str,
    pub url: Url,
    pub headers: Vec<(HeaderName, Header)>,
    pub body: Body,
    pub expect: Expect,
    /// Slot, source, and where it is written (`rag.toml:23: user[0].on_start[1].extract.token`)
    /// for the failure's text when the answer lacks it.
    pub extract: Vec<(usize, Extract, String)>,
    /// The declared variables its templates use (each drawn once per request).
    pub vars: Vec<usize>,
    /// The query-set variable it sends (its answer is scored for recall), if any.
    pub scored: Option<usize>,
    /// Rows it adds when it succeeds (`writes`).
    pub writes: u32,
}

#[derive(Debug)]
pub enum Url {
    Fixed(reqwest::Url),
    /// The base and a path template (values percent-encoded).
    Template(String, Template),
}

#[derive(Debug)]
pub enum Header {
    Fixed(HeaderValue),
    Template(Template),
}

#[derive(Debug)]
pub enum Body {
    None,
    /// Serialized once, with its content type.
    Fixed(Bytes, &'static str),
    Json(JsonTemplate),
    Form(Vec<(String, Template)>),
    Raw(Template),
}

/// What makes an answer a success.
#[derive(Debug, Default)]
pub struct Expect {
    /// None: 200–399.
    pub statuses: Option<Vec<u16>>,
    pub contains: Option<String>,
    pub pointers: Vec<String>,
    /// The failure's text for another status, `{status}` replaced.
    pub failure: Option<String>,
}

#[derive(Debug)]
pub enum Extract {
    Json(String),
    Header(HeaderName),
}

impl Expect {
    /// Whether the answer's body must be parsed as JSON.
    pub fn needs_json(&self) -> bool {
        !self.pointers.is_empty()
    }
}

impl Scenario {
    /// The kind of user number `i`: smooth weighted round robin (nginx's), so any prefix of users
    /// follows the weights as closely as whole users can (3:1 → A A B A …).
    pub fn kind_of(&self, i: u64) -> usize {
        weighted_round_robin(&self.kinds.iter().map(|k| k.weight).collect::<Vec<_>>(), i)
    }

    /// The first kind whose tasks include a sleep: a pattern in time, which only the closed model runs.
    pub fn paced_kind(&self) -> Option<&str> {
        self.kinds
            .iter()
            .find(|k| k.tasks.iter().any(|t| matches!(t.action, Action::Sleep(_))))
            .map(|k| k.name.as_str())
    }

    /// Each sweep level from the scored set's first query (shared cursors).
    pub fn rewind_scored(&self) {
        self.vars.iter().for_each(Var::rewind_scored);
    }

    /// Whether some request sends a query of the scored set (`from = "query_set"`).
    pub fn scores_any(&self) -> bool {
        self.kinds.iter().any(|k| {
            k.on_start.iter().any(|r| r.scored.is_some())
                || k.tasks.iter().any(|t| match &t.action {
                    Action::Requests(r) => r.iter().any(|r| r.scored.is_some()),
                    Action::Sleep(_) => false,
                })
        })
    }

    /// Whether some request adds rows (`writes`).
    pub fn writes(&self) -> bool {
        self.kinds.iter().any(|k| {
            k.on_start.iter().any(|r| r.writes > 0)
                || k.tasks.iter().any(|t| match &t.action {
                    Action::Requests(r) => r.iter().any(|r| r.writes > 0),
                    Action::Sleep(_) => false,
                })
        })
    }

    /// Every request name the scenario can send (on_start first), each once.
    pub fn request_names(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = Vec::new();
        for k in &self.kinds {
            let tasks = k.tasks.iter().filter_map(|t| match &t.action {
                Action::Requests(r) => Some(r.iter()),
                Action::Sleep(_) => None,
            });
            for r in k.on_start.iter().chain(tasks.flatten()) {
                if !names.contains(&r.name) {
                    names.push(r.name.clone());
                }
            }
        }
        names
    }
}

/// Index `i`'s pick among `weights` by smooth weighted round robin.
pub fn weighted_round_robin(weights: &[u32], i: u64) -> usize {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if total == 0 {
        return 0;
    }
    let mut current = vec![0i64; weights.len()];
    let mut pick = 0;
    for _ in 0..=(i % total as u64) {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        pick = (0..current.len())
            .max_by_key(|&j| (current[j], std::cmp::Reverse(j)))
            .unwrap_or(0);
        current[pick] -= total;
    }
    pick
}

/// Builds a [`Scenario`] from one or more files.
pub struct Builder<'a> {
    base: &'a str,
    dataset: &'a crate::config::DatasetParams,
    scenario: Scenario,
}

/// A file being compiled: its label, text, names.
struct Unit<'t> {
    label: &'t str,
    text: &'t str,
    vars: BTreeMap<String, usize>,
    slots: BTreeMap<String, usize>,
}

impl<'a> Builder<'a> {
    /// Requests go to `base` (no trailing slash); `query_vectors` live in `dataset`'s space.
    pub fn new(base: &'a str, dataset: &'a crate::config::DatasetParams, seed: u64) -> Self {
        Self {
            base,
            dataset,
            scenario: Scenario {
                label: String::new(),
                digest: None,
                descriptions: Vec::new(),
                limiter_under_test: false,
                kinds: Vec::new(),
                vars: Vec::new(),
                slots: Vec::new(),
                seed,
                scorer: None,
            },
        }
    }

    /// The query set `from = "query_set"` draws and scores against (`load --recall`).
    pub fn with_scorer(mut self, scorer: Option<Arc<crate::load::recall::Scorer>>) -> Self {
        self.scenario.scorer = scorer;
        self
    }

    /// Adds the file `label` (its text; relative data files in `dir`), its kinds' weights
    /// multiplied by `weight`.
    pub fn add(
        &mut self,
        label: &str,
        text: &str,
        dir: &std::path::Path,
        weight: u32,
    ) -> Result<(), String> {
        let spec: FileSpec = file::parse(label, text)?;
        let mut unit = Unit {
            label,
            text,
            vars: BTreeMap::new(),
            slots: BTreeMap::new(),
        };
        let ctx = vars::Context {
            dir,
            dataset: self.dataset,
            scorer: self.scenario.scorer.as_deref(),
        };
        for (name, v) in &spec.vars {
            if BUILTINS.contains(&name.as_str()) {
                return Err(unit.at(
                    v.span().start,
                    &format!("vars.{name}"),
                    "is a built-in name",
                ));
            }
            let var = Var::load(name, v.get_ref(), &ctx)
                .map_err(|e| unit.at(v.span().start, &format!("vars.{name}"), &e))?;
            unit.vars.insert(name.clone(), self.scenario.vars.len());
            self.scenario.vars.push(var);
        }
        // Extracted names first: a task may use what another task (or on_start) extracts.
        for (u, user) in spec.users.iter().enumerate() {
            let user = user.get_ref();
            let steps = user
                .on_start
                .iter()
                .chain(&user.tasks)
                .flat_map(|s| std::iter::once(s).chain(s.get_ref().steps.iter().flatten()));
            for s in steps {
                for name in s.get_ref().extract.keys() {
                    if unit.vars.contains_key(name) || BUILTINS.contains(&name.as_str()) {
                        return Err(unit.at(
                            s.span().start,
                            &format!("user[{u}].extract.{name}"),
                            "is already a variable's name",
                        ));
                    }
                    if !unit.slots.contains_key(name) {
                        unit.slots.insert(name.clone(), self.scenario.slots.len());
                        self.scenario.slots.push(name.clone());
                    }
                }
            }
        }
        if spec.users.is_empty() {
            return Err(format!(
                "{label}: no [[user]]: a scenario has at least one kind"
            ));
        }
        for (u, user) in spec.users.iter().enumerate() {
            let kind = self.user(&unit, u, user, weight)?;
            if self.scenario.kinds.iter().any(|k| k.name == kind.name) {
                return Err(unit.at(
                    user.span().start,
                    &format!("user[{u}].kind"),
                    &format!("'{}' is a kind already", kind.name),
                ));
            }
            self.scenario.kinds.push(kind);
        }
        if let Some(d) = spec.description {
            self.scenario.descriptions.push(d);
        }
        self.scenario.limiter_under_test |= spec.limiter_under_test;
        Ok(())
    }

    /// The scenario, labelled.
    pub fn finish(mut self, label: String, digest: Option<String>) -> Scenario {
        self.scenario.label = label;
        self.scenario.digest = digest;
        self.scenario
    }

    fn user(
        &self,
        unit: &Unit<'_>,
        u: usize,
        user: &toml::Spanned<file::UserSpec>,
        weight: u32,
    ) -> Result<UserKind, String> {
        let at = user.span().start;
        let spec = user.get_ref();
        let field = |f: &str| format!("user[{u}].{f}");
        let w = spec.weight.unwrap_or(1);
        if !(1..=1000).contains(&w) {
            return Err(unit.at(at, &field("weight"), "weights are 1 to 1000"));
        }
        let wait = match &spec.wait {
            None => Wait::Constant(Duration::ZERO),
            Some(v) => wait_of(v).map_err(|e| unit.at(at, &field("wait"), &e))?,
        };
        let sequence = match spec.order.as_deref() {
            None | Some("weighted") => false,
            Some("sequence") => true,
            Some(o) => {
                return Err(unit.at(
                    at,
                    &field("order"),
                    &format!("'{o}' is neither weighted nor sequence"),
                ));
            }
        };
        let retry_on_start = match spec.on_start_failure.as_deref() {
            None | Some("retry") => true,
            Some("continue") => false,
            Some(o) => {
                return Err(unit.at(
                    at,
                    &field("on_start_failure"),
                    &format!("'{o}' is neither retry nor continue"),
                ));
            }
        };
        let on_start = spec
            .on_start
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let f = field(&format!("on_start[{i}]"));
                only_request(unit, s, &f)?;
                self.request(unit, s, &f)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if spec.tasks.is_empty() {
            return Err(unit.at(at, &field("tasks"), "a kind needs at least one task"));
        }
        let tasks = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, s)| self.task(unit, s, &field(&format!("tasks[{i}]")), sequence))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(UserKind {
            name: spec.kind.clone(),
            weight: w * weight,
            wait,
            on_start,
            retry_on_start,
            sequence,
            tasks,
        })
    }

    fn task(
        &self,
        unit: &Unit<'_>,
        s: &toml::Spanned<StepSpec>,
        field: &str,
        sequence: bool,
    ) -> Result<Task, String> {
        let at = s.span().start;
        let spec = s.get_ref();
        let weight = spec.weight.unwrap_or(1);
        let repeat = spec.repeat.unwrap_or(1);
        if spec.weight.is_some() && sequence {
            return Err(unit.at(
                at,
                &format!("{field}.weight"),
                "a sequence's tasks have no weight (repeat instead)",
            ));
        }
        if spec.repeat.is_some() && !sequence {
            return Err(unit.at(
                at,
                &format!("{field}.repeat"),
                "repeat is for order = \"sequence\" (weight instead)",
            ));
        }
        if !(1..=1000).contains(&weight) || !(1..=100_000).contains(&repeat) {
            return Err(unit.at(at, field, "weight is 1 to 1000, repeat 1 to 100000"));
        }
        let action = if let Some(sleep) = &spec.sleep {
            if has_request_fields(spec) || spec.steps.is_some() {
                return Err(unit.at(
                    at,
                    field,
                    "a sleep task sends nothing: no path, steps or request fields",
                ));
            }
            Action::Sleep(
                parse_duration(sleep).map_err(|e| unit.at(at, &format!("{field}.sleep"), &e))?,
            )
        } else if let Some(steps) = &spec.steps {
            if has_request_fields(spec) {
                return Err(unit.at(at, field, "a task with steps has its requests in them: no path or request fields beside steps"));
            }
            if steps.is_empty() {
                return Err(unit.at(at, &format!("{field}.steps"), "is empty"));
            }
            Action::Requests(
                steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let f = format!("{field}.steps[{i}]");
                        only_request(unit, s, &f)?;
                        self.request(unit, s, &f)
                    })
                    .collect::<Result<_, _>>()?,
            )
        } else {
            Action::Requests(vec![self.request(unit, s, field)?])
        };
        Ok(Task {
            weight,
            repeat,
            action,
        })
    }

    fn request(
        &self,
        unit: &Unit<'_>,
        s: &toml::Spanned<StepSpec>,
        field: &str,
    ) -> Result<Request, String> {
        let at = s.span().start;
        let spec = s.get_ref();
        let err = |f: &str, e: &str| {
            unit.at(
                at,
                &if f.is_empty() {
                    field.to_string()
                } else {
                    format!("{field}.{f}")
                },
                e,
            )
        };
        let mut used = Vec::new();
        let mut resolve =
            |name: &str, f: Option<&str>| unit.resolve(&self.scenario, name, f, &mut used);
        let path_text = spec
            .path
            .as_deref()
            .ok_or_else(|| err("path", "a request needs a path (relative to --target)"))?;
        if !path_text.starts_with('/') {
            return Err(err("path", "starts with '/' (it is relative to --target)"));
        }
        let path = Template::parse(path_text, &mut resolve).map_err(|e| err("path", &e))?;
        let url = match path.fixed() {
            Some(p) => Url::Fixed(
                reqwest::Url::parse(&format!("{}{p}", self.base))
                    .map_err(|e| err("path", &format!("not a URL with the target: {e}")))?,
            ),
            None => Url::Template(self.base.to_string(), path),
        };
        let (method, method_name) =
            method_of(spec.method.as_deref().unwrap_or("GET")).map_err(|e| err("method", &e))?;
        let mut headers = Vec::new();
        for (k, v) in &spec.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err(&format!("headers.{k}"), "is not a header name"))?;
            let t =
                Template::parse(v, &mut resolve).map_err(|e| err(&format!("headers.{k}"), &e))?;
            let h = match t.fixed() {
                Some(text) => Header::Fixed(
                    HeaderValue::from_str(&text)
                        .map_err(|_| err(&format!("headers.{k}"), "is not a header value"))?,
                ),
                None => Header::Template(t),
            };
            headers.push((name, h));
        }
        let bodies = [
            spec.json.is_some(),
            spec.form.is_some(),
            spec.body.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err(err("", "one body: json, form or body"));
        }
        let body = if let Some(j) = &spec.json {
            let v = serde_json::to_value(j).map_err(|e| err("json", &e.to_string()))?;
            let t = JsonTemplate::parse(&v, &mut resolve).map_err(|e| err("json", &e))?;
            match t.fixed() {
                Some(v) => Body::Fixed(Bytes::from(v.to_string()), "application/json"),
                None => Body::Json(t),
            }
        } else if let Some(form) = &spec.form {
            let pairs = form
                .iter()
                .map(|(k, v)| {
                    Template::parse(v, &mut resolve)
                        .map(|t| (k.clone(), t))
                        .map_err(|e| err(&format!("form.{k}"), &e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Body::Form(pairs)
        } else if let Some(b) = &spec.body {
            let t = Template::parse(b, &mut resolve).map_err(|e| err("body", &e))?;
            match t.fixed() {
                Some(text) => Body::Fixed(Bytes::from(text), ""),
                None => Body::Raw(t),
            }
        } else {
            Body::None
        };
        let expect = expect_of(spec.expect.as_ref()).map_err(|e| err("expect", &e))?;
        let mut extract = Vec::new();
        for (name, x) in &spec.extract {
            let f = format!("extract.{name}");
            let how = match (&x.json, &x.header) {
                (Some(p), None) => {
                    pointer(p).map_err(|e| err(&f, &e))?;
                    Extract::Json(p.clone())
                }
                (None, Some(h)) => Extract::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| err(&f, "is not a header name"))?,
                ),
                _ => return Err(err(&f, "give exactly one of json (a pointer) and header")),
            };
            extract.push((
                unit.slots[name],
                how,
                unit.at(at, &format!("{field}.{f}"), ""),
            ));
        }
        used.sort_unstable();
        used.dedup();
        let scored = used.iter().copied().find(|&i| self.scenario.vars[i].scored);
        let writes = spec.writes.unwrap_or(0);
        if writes > 10_000 {
            return Err(err("writes", "is 0 to 10000 (the rows one request adds)"));
        }
        if writes > 0 && scored.is_some() {
            return Err(err(
                "writes",
                "a scored search does not write: put the write in a request of its own",
            ));
        }
        Ok(Request {
            name: Arc::from(spec.name.as_deref().unwrap_or(path_text)),
            method,
            method_name,
            url,
            headers,
            body,
            expect,
            extract,
            vars: used,
            scored,
            writes,
        })
    }
}

/// Names a hole may use besides declared and extracted ones.
const BUILTINS: [&str; 3] = ["user", "run", "uuid"];

impl Unit<'_> {
    /// `label:line: field: message`.
    fn at(&self, offset: usize, field: &str, message: &str) -> String {
        format!(
            "{}:{}: {field}: {message}",
            self.label,
            file::line_of(self.text, offset)
        )
    }

    fn resolve(
        &self,
        scenario: &Scenario,
        name: &str,
        field: Option<&str>,
        used: &mut Vec<usize>,
    ) -> Result<Ref, String> {
        match (name, field) {
            ("user", Some("id")) => return Ok(Ref::UserId),
            ("user", Some("kind")) => return Ok(Ref::UserKind),
            ("user", Some("iteration")) => return Ok(Ref::Iteration),
            ("run", None) => return Ok(Ref::Run),
            ("uuid", None) => return Ok(Ref::Uuid),
            ("user" | "run" | "uuid", _) => {
                return Err(format!(
                    "'{name}{}' is not a built-in (user.id, user.kind, user.iteration, run, uuid)",
                    field.map(|f| format!(".{f}")).unwrap_or_default()
                ));
            }
            _ => {}
        }
        if let Some(&index) = self.vars.get(name) {
            let var = &scenario.vars[index];
            if let Some(f) = field
                && !var.fields.contains(f)
            {
                let has: Vec<&str> = var.fields.iter().map(String::as_str).collect();
                return Err(format!(
                    "variable '{name}' has no field '{f}' ({})",
                    if has.is_empty() {
                        "its values are not records".to_string()
                    } else {
                        format!("every record has: {}", has.join(", "))
                    }
                ));
            }
            used.push(index);
            return Ok(Ref::Var {
                index,
                field: field.map(String::from),
            });
        }
        if let Some(&slot) = self.slots.get(name) {
            if field.is_some() {
                return Err(format!(
                    "'{name}' is an extracted value, which has no fields: extract the pointer you need"
                ));
            }
            return Ok(Ref::Extracted(slot));
        }
        let mut known: Vec<&str> = self
            .vars
            .keys()
            .chain(self.slots.keys())
            .map(String::as_str)
            .collect();
        known.extend(["user.id", "user.kind", "user.iteration", "run", "uuid"]);
        Err(format!(
            "unknown variable '{name}' (known here: {})",
            known.join(", ")
        ))
    }
}

fn has_request_fields(s: &StepSpec) -> bool {
    s.path.is_some()
        || s.method.is_some()
        || s.name.is_some()
        || !s.headers.is_empty()
        || s.json.is_some()
        || s.form.is_some()
        || s.body.is_some()
        || s.expect.is_some()
        || !s.extract.is_empty()
        || s.writes.is_some()
}

/// An on_start step or a step of a group: a request, nothing of a task's.
fn only_request(unit: &Unit<'_>, s: &toml::Spanned<StepSpec>, field: &str) -> Result<(), String> {
    let spec = s.get_ref();
    for (given, what) in [
        (spec.weight.is_some(), "weight"),
        (spec.repeat.is_some(), "repeat"),
        (spec.sleep.is_some(), "sleep"),
        (spec.steps.is_some(), "steps"),
    ] {
        if given {
            return Err(unit.at(
                s.span().start,
                &format!("{field}.{what}"),
                "belongs to a task, not to a request of on_start or steps",
            ));
        }
    }
    Ok(())
}

fn method_of(m: &str) -> Result<(reqwest::Method, &'static str), String> {
    use reqwest::Method;
    Ok(match m.to_ascii_uppercase().as_str() {
        "GET" => (Method::GET, "GET"),
        "POST" => (Method::POST, "POST"),
        "PUT" => (Method::PUT, "PUT"),
        "PATCH" => (Method::PATCH, "PATCH"),
        "DELETE" => (Method::DELETE, "DELETE"),
        "HEAD" => (Method::HEAD, "HEAD"),
        "OPTIONS" => (Method::OPTIONS, "OPTIONS"),
        _ => {
            return Err(format!(
                "'{m}' is not GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"
            ));
        }
    })
}

fn pointer(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "'{p}' is not a JSON pointer (it starts with '/', e.g. /api_key)"
        ))
    }
}

fn expect_of(spec: Option<&ExpectSpec>) -> Result<Expect, String> {
    let Some(spec) = spec else {
        return Ok(Expect::default());
    };
    if let Some(s) = &spec.status {
        if s.is_empty() {
            return Err("status lists at least one status".into());
        }
        if let Some(bad) = s.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(format!("status {bad} is not an HTTP status"));
        }
    }
    for p in spec.json.iter().flatten() {
        pointer(p)?;
    }
    Ok(Expect {
        statuses: spec.status.clone(),
        contains: spec.contains.clone(),
        pointers: spec.json.clone().unwrap_or_default(),
        failure: spec.failure.clone(),
    })
}

fn wait_of(v: &toml::Value) -> Result<Wait, String> {
    let d = |v: &toml::Value| match v {
        toml::Value::String(s) => parse_duration(s),
        toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        toml::Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
        other => Err(format!("{other} is not a duration like \"100ms\"")),
    };
    match v {
        toml::Value::Table(t) if t.len() == 1 => {
            if let Some(b) = t.get("between") {
                match b.as_array().map(Vec::as_slice) {
                    Some([lo, hi]) => {
                        let (lo, hi) = (d(lo)?, d(hi)?);
                        if lo > hi {
                            return Err("between's first bound is above its second".into());
                        }
                        Ok(Wait::Between(lo, hi))
                    }
                    _ => Err("between takes two durations: [\"1s\", \"3s\"]".into()),
                }
            } else if let Some(p) = t.get("pacing") {
                Ok(Wait::Pacing(d(p)?))
            } else {
                Err(
                    "a wait is \"100ms\", { between = [\"1s\", \"3s\"] } or { pacing = \"1s\" }"
                        .into(),
                )
            }
        }
        toml::Value::Table(_) => {
            Err("a wait is \"100ms\", { between = [\"1s\", \"3s\"] } or { pacing = \"1s\" }".into())
        }
        other => Ok(Wait::Constant(d(other)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<Scenario, String> {
        let d = crate::config::DatasetParams::default();
        let mut b = Builder::new("http://127.0.0.1:1", &d, 1);
        b.add("t.toml", text, std::path::Path::new("."), 1)?;
        Ok(b.finish("t".into(), None))
    }

    #[test]
    fn weights_round_robin_smoothly() {
        let picks: Vec<usize> = (0..8).map(|i| weighted_round_robin(&[3, 1], i)).collect();
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 2);
        assert_eq!(picks[..4], [0, 0, 1, 0]);
        assert!((0..5).all(|i| weighted_round_robin(&[2], i) == 0));
    }

    #[test]
    fn a_flow_compiles_with_its_names_resolved() {
        let s = compile(
            r#"
[vars.term]
values = ["a", "b"]

[[user]]
kind = "docs"
wait = { between = ["1s", "3s"] }

[[user.on_start]]
method = "POST"
path = "/login"
form = { username = "u{{user.id}}", password = "pw" }
extract.token = { json = "/access_token" }

[[user.tasks]]
weight = 4
path = "/docs/search?q={{term}}"
headers = { Authorization = "Bearer {{token}}" }
expect = { status = [200], json = ["/results"] }

[[user.tasks]]
sleep = "2s"
"#,
        )
        .unwrap();
        let k = &s.kinds[0];
        assert_eq!(
            k.wait,
            Wait::Between(Duration::from_secs(1), Duration::from_secs(3))
        );
        assert_eq!(k.on_start[0].name.as_ref(), "/login");
        assert_eq!(k.on_start[0].extract.len(), 1);
        assert_eq!(s.slots, vec!["token".to_string()]);
        let Action::Requests(r) = &k.tasks[0].action else {
            panic!()
        };
        assert_eq!(r[0].vars, vec![0]);
        assert!(matches!(r[0].url, Url::Template(..)));
        assert_eq!(s.paced_kind(), Some("docs"));
        assert_eq!(
            s.request_names()
                .iter()
                .map(|n| n.as_ref())
                .collect::<Vec<_>>(),
            ["/login", "/docs/search?q={{term}}"]
        );
    }

    #[test]
    fn mistakes_name_file_line_and_field() {
        let base = "[[user]]\nkind = \"k\"\n\n[[user.tasks]]\n";
        let cases = [
            (
                format!("{base}path = \"/{{{{nope}}}}\"\n"),
                "t.toml:4: user[0].tasks[0].path: unknown variable 'nope'",
            ),
            (
                format!("{base}path = \"x\"\n"),
                "t.toml:4: user[0].tasks[0].path: starts with '/'",
            ),
            (
                format!("{base}path = \"/\"\nmethod = \"FETCH\"\n"),
                "user[0].tasks[0].method: 'FETCH'",
            ),
            (
                format!("{base}path = \"/\"\nextract.id = {{ json = \"id\" }}\n"),
                "extract.id: 'id' is not a JSON pointer",
            ),
            (
                format!("{base}path = \"/\"\nrepeat = 2\n"),
                "user[0].tasks[0].repeat: repeat is for",
            ),
            (
                format!("{base}path = \"/\"\njson = {{}}\nbody = \"x\"\n"),
                "one body",
            ),
            (
                format!("{base}path = \"/\"\nexpect.status = [700]\n"),
                "status 700",
            ),
            (
                format!("{base}sleep = \"soon\"\n"),
                "user[0].tasks[0].sleep:",
            ),
            (
                "[[user]]\nkind = \"k\"\nwait = { every = 1 }\ntasks = []\n".to_string(),
                "t.toml:1: user[0].wait:",
            ),
            (
                "[vars.q]\nvalues = [1]\nfile = \"x.csv\"\n[[user]]\nkind = \"k\"\ntasks = []\n"
                    .to_string(),
                "vars.q: give exactly one",
            ),
            (
                format!("[vars.q]\nvalues = [1]\n{base}path = \"/{{{{q.x}}}}\"\n"),
                "variable 'q' has no field 'x' (its values are not records)",
            ),
        ];
        for (text, want) in cases {
            let e = compile(&text).unwrap_err();
            assert!(e.contains(want), "{text}\n→ {e}\nwanted {want}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
