//! Scenario files: the examples in docs/scenarios/ (a RAG backend's register → login → query flow,
//! a document API's weighted list/read/create/search) against small in-test servers that implement
//! just those endpoints — in both models, with per-name thresholds, Locust's CSV and an extraction
//! that fails now and then; the built-in kinds against their files on the same seed; and the
//! mistakes a file can hold, each one line naming the file, the line and the field.
//!
//! The servers test the load engine, not a system under test: they check what a correct client
//! sends (the token it was given, the id it was answered) and count it.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use capbench::load;
use capbench::load::failure::Failure;
use serde_json::{Value, json};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/scenarios")
        .join(name)
        .display()
        .to_string()
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// What a server saw that a correct client would not send.
#[derive(Default)]
struct Seen {
    accounts: BTreeMap<String, String>,
    tokens: BTreeMap<String, String>,
    /// Requests with a missing or unknown token.
    unauthorized: u64,
    /// Per account: the documents it created (id → title).
    documents: BTreeMap<String, BTreeMap<u64, String>>,
    next_id: u64,
    titles: Vec<String>,
    logins: Vec<String>,
    terms: BTreeSet<String>,
    questions: BTreeSet<String>,
    /// Reads of an id the reader never created.
    foreign_reads: u64,
    /// Creates answered without their id (the fault the documents server injects).
    ids_lost: u64,
}

type Shared = Arc<Mutex<Seen>>;

fn owner(seen: &Seen, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    seen.tokens.get(token).cloned()
}

fn login(seen: &mut Seen, email: &str, password: &str) -> (StatusCode, Json<Value>) {
    if seen.accounts.get(email).map(String::as_str) != Some(password) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"detail": "bad login"})),
        );
    }
    let token = format!("tok-{}", seen.tokens.len());
    seen.tokens.insert(token.clone(), email.to_string());
    seen.logins.push(email.to_string());
    (
        StatusCode::OK,
        Json(json!({"access_token": token, "token_type": "bearer"})),
    )
}

/// The RAG backend's endpoints (what docs/scenarios/rag.toml calls).
async fn rag_server() -> (String, Shared) {
    let seen = Shared::default();
    let answer = |confidence: bool| {
        move |State(seen): State<Shared>, headers: HeaderMap, Json(body): Json<Value>| async move {
            let mut s = seen.lock().unwrap();
            if owner(&s, &headers).is_none() {
                s.unauthorized += 1;
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"detail": "no token"})),
                );
            }
            s.questions
                .insert(body["query"].as_str().unwrap_or("").to_string());
            let mut a = json!({"answer": "42", "sources": []});
            if confidence {
                a["confidence"] = json!(0.9);
            }
            (StatusCode::OK, Json(a))
        }
    };
    let app = Router::new()
        .route(
            "/api/v1/auth/register",
            post(
                |State(seen): State<Shared>, Json(b): Json<Value>| async move {
                    let mut s = seen.lock().unwrap();
                    let email = b["email"].as_str().unwrap_or("").to_string();
                    if s.accounts.contains_key(&email) {
                        return StatusCode::CONFLICT;
                    }
                    let password = b["password"].as_str().unwrap_or("").to_string();
                    s.accounts.insert(email, password);
                    StatusCode::CREATED
                },
            ),
        )
        .route(
            "/api/v1/auth/login",
            post(
                |State(seen): State<Shared>, Form(f): Form<BTreeMap<String, String>>| async move {
                    let mut s = seen.lock().unwrap();
                    let (user, pass) = (&f["username"], &f["password"]);
                    login(&mut s, user, pass)
                },
            ),
        )
        .route("/api/v1/query/", post(answer(false)))
        .route("/api/v1/query/enhanced", post(answer(true)))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/api/v1/documents/",
            get(
                |State(seen): State<Shared>, headers: HeaderMap| async move {
                    let mut s = seen.lock().unwrap();
                    if owner(&s, &headers).is_none() {
                        s.unauthorized += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    (serve(app).await, seen)
}

/// The document API's endpoints (what docs/scenarios/documents.toml calls), with the accounts of
/// docs/scenarios/users.csv. With `lose_ids`, every second create after a user's first answers 201
/// without the id.
async fn documents_server(lose_ids: bool) -> (String, Shared) {
    let seen = Shared::default();
    {
        let csv = std::fs::read_to_string(example("users.csv")).unwrap();
        let mut s = seen.lock().unwrap();
        for line in csv.lines().skip(1) {
            let (email, password) = line.split_once(',').unwrap();
            s.accounts.insert(email.into(), password.into());
        }
    }
    let app = Router::new()
        .route(
            "/api/v1/auth/login",
            post(
                |State(seen): State<Shared>, Json(b): Json<Value>| async move {
                    let mut s = seen.lock().unwrap();
                    let email = b["email"].as_str().unwrap_or("");
                    let password = b["password"].as_str().unwrap_or("");
                    login(&mut s, email, password)
                },
            ),
        )
        .route(
            "/api/v1/documents",
            get(|State(seen): State<Shared>, headers: HeaderMap| async move {
                let mut s = seen.lock().unwrap();
                match owner(&s, &headers) {
                    Some(who) => {
                        let docs: Vec<&u64> = s.documents.get(&who).into_iter().flat_map(|d| d.keys()).collect();
                        (StatusCode::OK, Json(json!(docs)))
                    }
                    None => {
                        s.unauthorized += 1;
                        (StatusCode::UNAUTHORIZED, Json(json!({})))
                    }
                }
            })
            .post(
                move |State(seen): State<Shared>, headers: HeaderMap, Json(b): Json<Value>| async move {
                    let mut s = seen.lock().unwrap();
                    let Some(who) = owner(&s, &headers) else {
                        s.unauthorized += 1;
                        return (StatusCode::UNAUTHORIZED, Json(json!({})));
                    };
                    s.next_id += 1;
                    let id = s.next_id;
                    let title = b["title"].as_str().unwrap_or("").to_string();
                    s.titles.push(title.clone());
                    let mine = s.documents.entry(who).or_default();
                    mine.insert(id, title.clone());
                    let n = mine.len();
                    if lose_ids && n > 1 && n % 2 == 0 {
                        s.ids_lost += 1;
                        return (StatusCode::CREATED, Json(json!({"title": title})));
                    }
                    (StatusCode::CREATED, Json(json!({"id": id, "title": title})))
                },
            ),
        )
        .route(
            "/api/v1/documents/search",
            get(
                |State(seen): State<Shared>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>| async move {
                    let mut s = seen.lock().unwrap();
                    if owner(&s, &headers).is_none() {
                        s.unauthorized += 1;
                        return StatusCode::UNAUTHORIZED;
                    }
                    s.terms.insert(q.get("q").cloned().unwrap_or_default());
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/api/v1/documents/{id}",
            get(
                |State(seen): State<Shared>, headers: HeaderMap, UrlPath(id): UrlPath<u64>| async move {
                    let mut s = seen.lock().unwrap();
                    let Some(who) = owner(&s, &headers) else {
                        s.unauthorized += 1;
                        return (StatusCode::UNAUTHORIZED, Json(json!({})));
                    };
                    match s.documents.get(&who).and_then(|d| d.get(&id)).cloned() {
                        Some(title) => (StatusCode::OK, Json(json!({"id": id, "title": title}))),
                        None => {
                            s.foreign_reads += 1;
                            (StatusCode::NOT_FOUND, Json(json!({})))
                        }
                    }
                },
            ),
        )
        .with_state(seen.clone());
    (serve(app).await, seen)
}

fn requests(out: &load::LoadOutcome, name: &str) -> u64 {
    out.finished[0]
        .1
        .stats
        .entry(name)
        .map_or(0, |e| e.requests)
}

fn failures(out: &load::LoadOutcome, name: &str) -> u64 {
    out.finished[0]
        .1
        .stats
        .entry(name)
        .map_or(0, |e| e.failures)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rag_flow_logs_in_keeps_its_token_and_meets_its_thresholds_in_both_models() {
    let (url, seen) = rag_server().await;
    let dir = std::env::temp_dir().join(format!("capbench-rag-{}", std::process::id()));
    let prefix = dir.join("rag");
    let rag = example("rag.toml");
    // Closed: 4 users; --wait replaces the file's 1–5 s think time so a short run has enough tasks.
    let out = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--scenario",
            &rag,
            "--users",
            "4",
            "--wait",
            "5ms",
            "--run-time",
            "2s",
            "--threshold",
            "p95[/query (basic)]<=2s",
            "--threshold",
            "error_rate<1%",
            "--csv",
            prefix.to_str().unwrap(),
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        requests(&out, "/auth/register"),
        4,
        "on_start once per user"
    );
    assert_eq!(requests(&out, "/auth/login"), 4);
    let stats = &out.finished[0].1.stats;
    assert_eq!(stats.total.failures, 0, "{:?}", stats.failures);
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.unauthorized, 0, "every query carried its user's token");
        assert_eq!(s.logins.len(), 4);
        assert!(s.questions.len() > 1, "random questions: {:?}", s.questions);
    }
    // The weights 5:2:1:1 over a few hundred draws.
    let basic = requests(&out, "/query (basic)");
    let enhanced = requests(&out, "/query/enhanced");
    let health = requests(&out, "/health");
    let list = requests(&out, "/documents (list)");
    assert!(basic > 100, "{basic} basic queries");
    let share = basic as f64 / (basic + enhanced + health + list) as f64;
    assert!((0.45..0.65).contains(&share), "basic's share {share} (5/9)");
    assert!(
        enhanced > health && enhanced > list,
        "{enhanced} {health} {list}"
    );
    assert!(out.passed(), "{:?}", out.verdicts);
    assert_eq!(out.verdicts.len(), 2);
    // Locust's CSV, a row per name.
    let csv = std::fs::read_to_string(dir.join("rag_stats.csv")).unwrap();
    for row in [
        "POST,/auth/register,4,0,",
        "POST,/auth/login,4,0,",
        &format!("POST,/query (basic),{basic},0,"),
        &format!("GET,/health,{health},0,"),
    ] {
        assert!(csv.lines().any(|l| l.starts_with(row)), "{row} in\n{csv}");
    }

    // A per-name threshold that cannot hold decides the verdict; the others still pass.
    let strict = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--scenario",
            &rag,
            "--users",
            "2",
            "--wait",
            "5ms",
            "--run-time",
            "1s",
            "--threshold",
            "p50[/query/enhanced]<0.001ms",
            "--threshold",
            "requests[/auth/login]>=2",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    assert!(!strict.passed());
    assert!(!strict.verdicts[0].pass && strict.verdicts[1].pass);

    // Open: flows start at the arrival rate; each user logged in once before the first arrival.
    let logins_before = seen.lock().unwrap().logins.len();
    let open = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--scenario",
            &rag,
            "--users",
            "4",
            "--rate",
            "100/s",
            "--run-time",
            "2s",
            "--threshold",
            "p95[/query (basic)]<=2s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    // The users' on_start runs before the clock (unmeasured): 4 more logins at the server only.
    assert_eq!(requests(&open, "/auth/login"), 0);
    assert_eq!(seen.lock().unwrap().logins.len(), logins_before + 4);
    let tasks: u64 = [
        "/query (basic)",
        "/query/enhanced",
        "/health",
        "/documents (list)",
    ]
    .iter()
    .map(|n| requests(&open, n))
    .sum();
    assert!(
        (150..=201).contains(&tasks),
        "{tasks} arrivals at 100/s for 2 s"
    );
    assert_eq!(open.finished[0].1.stats.total.failures, 0);
    assert!(open.passed(), "{:?}", open.verdicts);
    assert_eq!(seen.lock().unwrap().unauthorized, 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_mix_reads_what_it_created_and_a_failed_extraction_is_one_failure() {
    let (url, seen) = documents_server(true).await;
    let docs = example("documents.toml");
    let out = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--scenario",
            &docs,
            "--users",
            "4",
            "--wait",
            "5ms",
            "--run-time",
            "2s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    let stats = &out.finished[0].1.stats;
    let lost = seen.lock().unwrap().ids_lost;
    assert!(lost > 0, "the server lost some ids");
    // Each lost id is one failure of the create, with the place in the file that wanted it …
    assert_eq!(failures(&out, "/documents [POST]"), lost);
    assert_eq!(stats.total.failures, lost, "{:?}", stats.failures);
    let (key, row) = stats.failures.iter().next().unwrap();
    assert_eq!(row.occurrences, lost);
    let Failure::Extraction(why) = &key.2 else {
        panic!("{:?}", key.2)
    };
    assert!(
        why.contains("documents.toml:")
            && why.ends_with("user[0].tasks[2].extract.doc_id: no /id in the answer"),
        "{why}"
    );
    // … and the user goes on, reading the id it had: every read found its own document.
    let reads = requests(&out, "/documents/{id} [GET]");
    assert!(reads > 20, "{reads} reads");
    assert_eq!(failures(&out, "/documents/{id} [GET]"), 0);
    {
        let s = seen.lock().unwrap();
        assert_eq!((s.unauthorized, s.foreign_reads), (0, 0));
        // Each user logged in with a row of its own (a shared sequential cursor).
        let accounts: BTreeSet<&String> = s.logins.iter().collect();
        assert_eq!(accounts.len(), 4, "{:?}", s.logins);
        // A shared counter: every title is new.
        let titles: BTreeSet<&String> = s.titles.iter().collect();
        assert_eq!(titles.len(), s.titles.len());
        let allowed: BTreeSet<String> = ["test", "document", "load", "content"]
            .map(String::from)
            .into();
        assert!(
            !s.terms.is_empty() && s.terms.is_subset(&allowed),
            "{:?}",
            s.terms
        );
    }
    // The weights 4:3:2:1.
    let list = requests(&out, "/documents [GET]");
    let search = requests(&out, "/documents/search");
    assert!(
        list > reads && reads > search && search > 0,
        "{list} {reads} {search}"
    );

    // Open model, no lost ids: nothing fails.
    let (url, seen) = documents_server(false).await;
    let open = load::run(
        common::load_args(&[
            "--target",
            &url,
            "--scenario",
            &docs,
            "--users",
            "4",
            "--rate",
            "80",
            "--run-time",
            "2s",
            "-q",
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(open.finished[0].1.stats.total.failures, 0);
    assert!(requests(&open, "/documents/{id} [GET]") > 10);
    let s = seen.lock().unwrap();
    assert_eq!((s.unauthorized, s.foreign_reads), (0, 0));
}

#[test]
fn per_name_thresholds_of_a_scenario_file_decide_the_exit_code() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reports =
        std::env::temp_dir().join(format!("capbench-scenario-exit-{}", std::process::id()));
    // Each run gets a server of its own: the ids it loses depend on how many documents an
    // account already has, so a server shared by both runs would make the second depend on
    // where the first stopped (an on_start create that loses its id ends that user).
    let run = |thresholds: &[&str]| {
        let (url, _seen) = rt.block_on(documents_server(true));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_load"));
        cmd.args([
            "--target",
            &url,
            "--scenario",
            &example("documents.toml"),
            "--users",
            "2",
            "--wait",
            "5ms",
            "--run-time",
            "1s",
            "-q",
        ])
        .env("CAPBENCH_REPORTS", &reports);
        for t in thresholds {
            cmd.args(["--threshold", t]);
        }
        cmd.output().unwrap()
    };
    let pass = run(&["p95[/documents [GET]]<=2s", "failures[/documents [GET]]<1"]);
    assert_eq!(
        pass.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&pass.stderr)
    );
    // The creates whose ids were lost are failures of that name only.
    let fail = run(&["p95[/documents [GET]]<=2s", "failures[/documents [POST]]<1"]);
    assert_eq!(fail.status.code(), Some(99));
    let stdout = String::from_utf8_lossy(&fail.stdout);
    assert!(
        stdout.contains("failures[/documents [POST]]<1: FAIL")
            && stdout.contains("p95[/documents [GET]]<=2s: PASS"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&reports).ok();
}

/// A server in the seeds' API shape that records every search body, by the key's email.
async fn recording_target() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let log: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let keys: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let app = Router::new()
        .route(
            "/api/v1/keys",
            post({
                let keys = keys.clone();
                move |Json(b): Json<Value>| async move {
                    let mut k = keys.lock().unwrap();
                    let key = format!("key-{}", k.len());
                    // The run's tag differs between runs: keep the kind and the user's number.
                    let email = b["email"].as_str().unwrap_or("").to_string();
                    let who = email.splitn(4, '-').nth(3).unwrap_or("").to_string();
                    k.insert(key.clone(), who);
                    (StatusCode::CREATED, Json(json!({"api_key": key})))
                }
            }),
        )
        .route(
            "/api/v1/traces/search",
            post({
                let log = log.clone();
                move |headers: HeaderMap, Json(b): Json<Value>| async move {
                    let key = headers["x-api-key"].to_str().unwrap().to_string();
                    let who = keys.lock().unwrap()[&key].clone();
                    log.lock().unwrap().push((who, b));
                    Json(json!({"results": [], "count": 0}))
                }
            }),
        );
    (serve(app).await, log)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_kinds_and_their_files_send_the_same_requests_on_the_same_seed() {
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let file = |n: &str| files.join(format!("{n}.toml")).display().to_string();
    for (builtin, from_files, users, bound) in [
        (
            "search".to_string(),
            file("search"),
            "1",
            ["--max-requests", "41"],
        ),
        (
            "search:2,burst:1".to_string(),
            format!("{}:2,{}:1", file("search"), file("burst")),
            "3",
            ["--max-requests", "90"],
        ),
        (
            "realistic".to_string(),
            file("realistic"),
            "2",
            ["--run-time", "1s"],
        ),
    ] {
        let mut sent = Vec::new();
        let mut counts = Vec::new();
        for scenario in [&builtin, &from_files] {
            let (url, log) = recording_target().await;
            let mut argv = vec![
                "--target",
                &url,
                "--scenario",
                scenario,
                "--users",
                users,
                "--wait",
                "0",
                "--scenario-seed",
                "7",
                "-q",
            ];
            argv.extend(bound);
            if bound[0] == "--max-requests" {
                argv.extend(["--run-time", "30s"]);
            }
            let out = load::run(common::load_args(&argv), None).await.unwrap();
            let stats = &out.finished[0].1.stats;
            counts.push(
                stats
                    .entries_and_total()
                    .map(|e| {
                        (
                            e.method.clone(),
                            e.name.clone(),
                            e.requests,
                            e.failures,
                            e.statuses.clone(),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            // Per user, in the order it sent them.
            let mut per_user: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for (who, body) in log.lock().unwrap().iter() {
                per_user.entry(who.clone()).or_default().push(body.clone());
            }
            sent.push(per_user);
        }
        if builtin.contains(',') {
            // Several users racing to a shared bound: how it splits between names is timing.
            assert_eq!(
                counts[0].last(),
                counts[1].last(),
                "{builtin}: the same total"
            );
        } else {
            assert_eq!(
                counts[0], counts[1],
                "{builtin}: the same counts and statuses"
            );
        }
        // Users end at different points of their sequence when a shared bound stops the run: each
        // user's requests agree as far as both runs went, and the users are the same kinds.
        let (a, b) = (&sent[0], &sent[1]);
        assert_eq!(
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>(),
            "{builtin}"
        );
        for (who, xs) in a {
            let ys = &b[who];
            let n = xs.len().min(ys.len());
            assert!(n > 0, "{builtin}: {who} sent nothing");
            assert_eq!(xs[..n], ys[..n], "{builtin}: {who}'s requests");
        }
    }
}

/// Runs `load` on `scenario` (a file written in `dir`) and returns its exit code and stderr.
fn load_with(dir: &Path, scenario: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_load"))
        .args([
            "--target",
            "http://127.0.0.1:9",
            "--scenario",
            scenario,
            "--run-time",
            "1s",
            "-q",
        ])
        .env("CAPBENCH_REPORTS", dir.join("reports"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_mistake_in_a_scenario_file_is_one_line_naming_the_file_the_line_and_the_field() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("capbench-scenario-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let head = "[[user]]\nkind = \"k\"\n\n[[user.tasks]]\n";
    let cases = [
        (
            "malformed.toml",
            format!("{head}path = \"/x\nweight = 1\n"),
            "malformed.toml:5:",
        ),
        (
            "unknown.toml",
            format!("{head}path = \"/items/{{{{item_id}}}}\"\n"),
            "unknown.toml:4: user[0].tasks[0].path: unknown variable 'item_id'",
        ),
        (
            "nofile.toml",
            format!("[vars.row]\nfile = \"missing.csv\"\n\n{head}path = \"/{{{{row.id}}}}\"\n"),
            "nofile.toml:1: vars.row:",
        ),
        (
            "pointer.toml",
            format!("{head}path = \"/login\"\nextract.token = {{ json = \"access_token\" }}\n"),
            "pointer.toml:4: user[0].tasks[0].extract.token: 'access_token' is not a JSON pointer",
        ),
        (
            "field.toml",
            format!("{head}path = \"/\"\nheader = {{ a = \"b\" }}\n"),
            "field.toml:6: user[0].tasks[0].header: unknown field `header`",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (code, stderr) = load_with(&dir, path.to_str().unwrap());
        assert!(code.is_some_and(|c| c != 0 && c != 99), "{name}: {code:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: one line, got\n{stderr}");
        assert!(
            lines[0].contains(want),
            "{name}: wanted {want}\ngot {}",
            lines[0]
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A data file that is missing is named, as is the file that is not there at all.
    let (_, stderr) = load_with(&dir, dir.join("nofile.toml").to_str().unwrap());
    assert!(stderr.contains("missing.csv"), "{stderr}");
    let (code, stderr) = load_with(&dir, dir.join("absent.toml").to_str().unwrap());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("absent.toml: cannot read it"), "{stderr}");
    assert!(
        !dir.join("reports").exists(),
        "nothing written for a run that never began"
    );
    std::fs::remove_dir_all(&dir).ok();
}
