//! A virtual user of a compiled scenario at run time: its extracted values, its cursors and random
//! source (behind a lock held only while a request is filled in or its answer's values stored, so
//! the open model's concurrent tasks of one user stay consistent), its on_start, its next task, the
//! requests sent, judged and their values extracted. A failed expectation or extraction is a failure
//! of that request and the user goes on (oha's rule: per-request errors are data).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::compile::{Action, Body, Extract, Header, Request, Scenario, Url, UserKind, Wait};
use super::template::{Ref, Values};
use crate::load::failure::Failure;
use crate::load::stats::RequestOutcome;

/// Where a user's requests are recorded, and whether it may send another (the request bound).
pub trait Sink: Sync {
    /// Asked before every request of a task after its first (the caller took the first's slot).
    fn admit(&self) -> bool;
    fn record(&self, o: &RequestOutcome);
}

/// One virtual user.
pub struct VirtualUser {
    pub id: u64,
    pub kind: usize,
    scenario: Arc<Scenario>,
    ready: AtomicBool,
    state: Mutex<State>,
}

impl std::fmt::Debug for VirtualUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Extracted values (tokens, keys) are secrets: never shown.
        f.debug_struct("VirtualUser")
            .field("id", &self.id)
            .field("kind", &self.kind().name)
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

struct State {
    extracted: Vec<Option<Value>>,
    cursors: Vec<u64>,
    rng: Xoshiro256PlusPlus,
    /// Sequence order: the task and how often it ran in this round.
    at: (usize, u32),
    iterations: u64,
}

/// What a user does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Task(usize),
    Sleep(Duration),
}

impl VirtualUser {
    /// User number `id` of `scenario` (its kind by the kinds' weights, its random source by the
    /// scenario's seed and its number).
    pub fn new(scenario: Arc<Scenario>, id: u64) -> Self {
        let kind = scenario.kind_of(id);
        let seed = scenario.seed ^ id.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let state = State {
            extracted: vec![None; scenario.slots.len()],
            cursors: vec![0; scenario.vars.len()],
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            at: (0, 0),
            iterations: 0,
        };
        let ready = scenario.kinds[kind].on_start.is_empty();
        Self {
            id,
            kind,
            scenario,
            ready: AtomicBool::new(ready),
            state: Mutex::new(state),
        }
    }

    pub fn kind(&self) -> &UserKind {
        &self.scenario.kinds[self.kind]
    }

    /// Whether its on_start is done (or it has none, or goes on without).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs on_start, each request recorded; `Err` with the first failure's text when one failed
    /// (the user is then ready only if its kind goes on without).
    pub async fn start(
        &self,
        client: &reqwest::Client,
        run: &str,
        sink: &dyn Sink,
    ) -> Result<(), String> {
        for r in &self.kind().on_start {
            let o = self.send(r, client, run, Instant::now()).await;
            sink.record(&o);
            if let Some(f) = o.failure {
                if !self.kind().retry_on_start {
                    self.ready.store(true, Ordering::Relaxed);
                }
                return Err(format!("{} {}: {f}", o.method, o.name));
            }
        }
        self.ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The next task: drawn by weight, or the sequence's next.
    pub fn next(&self) -> Next {
        let kind = self.kind();
        let mut st = self.state();
        let i = if kind.sequence {
            let (i, done) = st.at;
            let i = i % kind.tasks.len();
            st.at = if done + 1 >= kind.tasks[i].repeat {
                ((i + 1) % kind.tasks.len(), 0)
            } else {
                (i, done + 1)
            };
            i
        } else {
            let total: u32 = kind.tasks.iter().map(|t| t.weight).sum();
            let mut pick = st.rng.random_range(0..total);
            kind.tasks
                .iter()
                .position(|t| {
                    if pick < t.weight {
                        true
                    } else {
                        pick -= t.weight;
                        false
                    }
                })
                .unwrap_or(0)
        };
        match kind.tasks[i].action {
            Action::Sleep(d) => Next::Sleep(d),
            Action::Requests(_) => Next::Task(i),
        }
    }

    /// Runs task `task`: its first request due at `intended`, each later one when the one before
    /// answered (and only if `sink` admits it). Returns how many requests were sent.
    pub async fn run(
        &self,
        task: usize,
        client: &reqwest::Client,
        run: &str,
        intended: Instant,
        sink: &dyn Sink,
    ) -> usize {
        let Action::Requests(requests) = &self.kind().tasks[task].action else {
            return 0;
        };
        self.state().iterations += 1;
        let mut due = intended;
        for (i, r) in requests.iter().enumerate() {
            if i > 0 {
                if !sink.admit() {
                    return i;
                }
                due = Instant::now();
            }
            let o = self.send(r, client, run, due).await;
            sink.record(&o);
        }
        requests.len()
    }

    /// The wait after a task that started at `started`, unless `wait` overrides the kind's.
    pub fn wait(&self, started: Instant, wait: Option<Duration>) -> Duration {
        match (wait, self.kind().wait) {
            (Some(w), _) | (None, Wait::Constant(w)) => w,
            (None, Wait::Between(lo, hi)) => {
                if lo == hi {
                    lo
                } else {
                    let secs = self
                        .state()
                        .rng
                        .random_range(lo.as_secs_f64()..hi.as_secs_f64());
                    Duration::from_secs_f64(secs)
                }
            }
            (None, Wait::Pacing(every)) => every.saturating_sub(started.elapsed()),
        }
    }

    /// Fills in `r` (values drawn once each), sends it, judges the answer and stores what it
    /// extracts.
    async fn send(
        &self,
        r: &Request,
        client: &reqwest::Client,
        run: &str,
        intended: Instant,
    ) -> RequestOutcome {
        let built = self.build(r, client, run);
        let (req, query) = match built {
            Ok(built) => built,
            Err(missing) => {
                return RequestOutcome::failed(
                    r.method_name,
                    r.name.clone(),
                    intended,
                    Failure::Unset(missing),
                );
            }
        };
        let sent = Instant::now();
        let (status, bytes, failure, recall) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = (!r.extract.is_empty()).then(|| resp.headers().clone());
                match resp.bytes().await {
                    Ok(body) => {
                        let (failure, recall) =
                            match self.judge(r, status, headers.as_ref(), &body, query) {
                                Ok(recall) => (None, recall),
                                Err(f) => (Some(f), None),
                            };
                        (Some(status), body.len() as u64, failure, recall)
                    }
                    Err(e) => (Some(status), 0, Some(Failure::of_transport(&e)), None),
                }
            }
            Err(e) => (None, 0, Some(Failure::of_transport(&e)), None),
        };
        // A write counts once it succeeded with a 2xx (an expected 429 added nothing).
        let rows = if failure.is_none() && status.is_some_and(|s| (200..300).contains(&s)) {
            u64::from(r.writes)
        } else {
            0
        };
        RequestOutcome {
            method: r.method_name,
            name: r.name.clone(),
            intended: intended.min(sent),
            sent,
            done: Instant::now(),
            status,
            failure,
            bytes,
            recall,
            rows,
        }
    }

    /// The request, filled in, and the number of the scored query it sends (if it sends one);
    /// `Err` names a value not there yet.
    fn build(
        &self,
        r: &Request,
        client: &reqwest::Client,
        run: &str,
    ) -> Result<(reqwest::RequestBuilder, Option<usize>), String> {
        let mut st = self.state();
        let st = &mut *st;
        let drawn: Vec<(usize, Value)> = r
            .vars
            .iter()
            .map(|&i| {
                (
                    i,
                    self.scenario.vars[i].draw(&mut st.cursors[i], &mut st.rng),
                )
            })
            .collect();
        let query = r.scored.and_then(|var| {
            let (_, v) = drawn.iter().find(|(i, _)| *i == var)?;
            Some(v.get("index")?.as_u64()? as usize)
        });
        let values = Bound {
            user: self,
            run,
            drawn: &drawn,
            extracted: &st.extracted,
            iteration: st.iterations.saturating_sub(1),
            uuid: uuid::Uuid::new_v4(),
        };
        let url = match &r.url {
            Url::Fixed(u) => u.clone(),
            Url::Template(base, path) => {
                let p = path.render(&values, true)?;
                reqwest::Url::parse(&format!("{base}{p}")).map_err(|e| format!("the URL: {e}"))?
            }
        };
        let mut headers = HeaderMap::with_capacity(r.headers.len() + 1);
        let mut req = client.request(r.method.clone(), url);
        match &r.body {
            Body::None => {}
            Body::Fixed(b, ctype) => {
                if !ctype.is_empty() {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
                }
                req = req.body(b.clone());
            }
            Body::Json(t) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                req = req.body(t.render(&values)?.to_string());
            }
            Body::Form(pairs) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (k, t) in pairs {
                    form.append_pair(k, &t.render(&values, false)?);
                }
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                req = req.body(form.finish());
            }
            Body::Raw(t) => req = req.body(t.render(&values, false)?),
        }
        for (name, h) in &r.headers {
            let v = match h {
                Header::Fixed(v) => v.clone(),
                Header::Template(t) => HeaderValue::from_str(&t.render(&values, false)?)
                    .map_err(|_| format!("header {name}: not a header value"))?,
            };
            headers.insert(name.clone(), v);
        }
        Ok((req.headers(headers), query))
    }

    /// Whether the answer is a success (`Err`: why not), and its recall when it answers the
    /// scored `query`; on success, its values stored. An answer whose results cannot be scored is
    /// a failure.
    fn judge(
        &self,
        r: &Request,
        status: u16,
        headers: Option<&HeaderMap>,
        body: &[u8],
        query: Option<usize>,
    ) -> Result<Option<(usize, f64)>, Failure> {
        let scorer = query.and(self.scenario.scorer.as_ref());
        let e = &r.expect;
        let ok = match &e.statuses {
            Some(list) => list.contains(&status),
            None => (200..400).contains(&status),
        };
        if !ok {
            return Err(match &e.failure {
                Some(text) => Failure::Expectation(text.replace("{status}", &status.to_string())),
                None => Failure::Status(status),
            });
        }
        if let Some(c) = &e.contains
            && !body.windows(c.len().max(1)).any(|w| w == c.as_bytes())
        {
            return Err(Failure::Expectation(format!("the answer lacks '{c}'")));
        }
        let wants_json = e.needs_json()
            || scorer.is_some()
            || r.extract
                .iter()
                .any(|(_, x, _)| matches!(x, Extract::Json(_)));
        let parsed: Option<Value> = if wants_json {
            match serde_json::from_slice(body) {
                Ok(v) => Some(v),
                Err(_) => {
                    return Err(Failure::Expectation("the answer is not JSON".into()));
                }
            }
        } else {
            None
        };
        if let Some(v) = &parsed
            && let Some(p) = e.pointers.iter().find(|p| v.pointer(p).is_none())
        {
            return Err(Failure::Expectation(format!("no {p} in the answer")));
        }
        let mut values = Vec::with_capacity(r.extract.len());
        for (slot, x, site) in &r.extract {
            let v = match x {
                Extract::Json(p) => parsed.as_ref().and_then(|v| v.pointer(p)).cloned(),
                Extract::Header(h) => headers
                    .and_then(|m| m.get(h))
                    .and_then(|v| v.to_str().ok())
                    .map(|s| json!(s)),
            };
            match v {
                Some(v) => values.push((*slot, v)),
                None => {
                    return Err(Failure::Extraction(match x {
                        Extract::Json(p) => format!("{site}no {p} in the answer"),
                        Extract::Header(h) => format!("{site}no {h} header in the answer"),
                    }));
                }
            }
        }
        let recall = match (scorer, query, &parsed) {
            (Some(s), Some(q), Some(answer)) => {
                Some((q, s.score_answer(q, answer).map_err(Failure::Expectation)?))
            }
            _ => None,
        };
        if !values.is_empty() {
            let mut st = self.state();
            for (slot, v) in values {
                st.extracted[slot] = Some(v);
            }
        }
        Ok(recall)
    }
}

/// The values one request is filled with.
struct Bound<'a> {
    user: &'a VirtualUser,
    run: &'a str,
    drawn: &'a [(usize, Value)],
    extracted: &'a [Option<Value>],
    iteration: u64,
    uuid: uuid::Uuid,
}

impl Values for Bound<'_> {
    fn get(&self, r: &Ref) -> Result<Value, String> {
        Ok(match r {
            Ref::UserId => json!(self.user.id),
            Ref::UserKind => json!(self.user.kind().name),
            Ref::Iteration => json!(self.iteration),
            Ref::Run => json!(self.run),
            Ref::Uuid => json!(self.uuid.to_string()),
            Ref::Var { index, field } => {
                let v = self
                    .drawn
                    .iter()
                    .find(|(i, _)| i == index)
                    .map(|(_, v)| v)
                    .ok_or_else(|| self.user.scenario.vars[*index].name.clone())?;
                match field {
                    Some(f) => v.get(f).cloned().unwrap_or(Value::Null),
                    None => v.clone(),
                }
            }
            Ref::Extracted(slot) => self.extracted[*slot]
                .clone()
                .ok_or_else(|| self.user.scenario.slots[*slot].clone())?,
        })
    }
}
