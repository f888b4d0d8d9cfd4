//! capbench — a capacity and benchmark harness for pgvector-backed search APIs.
//!
//! # Layout
//!
//! Layers, each using only its own or lower ones (the `layers` test holds it): the foundation
//! (`secrets`, `logging`, `cpu_idle`, `config`, `dataset`, `embed`, `workload`, `gates`, `db`,
//! `ratelimit`, `record`, `stack`, `setup`) → the service engine (`server`) → the load engine
//! (`load`, which can run the service in process) → the report (`report`) → the benches (`bench`);
//! the binaries sit on top and wire them (`load`'s binary hands it the report's `publish`).
//!
//! What each module and file holds: `docs/layout.md`, the one file-by-file
//! map; each module's own documentation says the rest.
//!
//! The binaries in `src/bin/` are thin: parse arguments, call the library, turn errors into one line
//! and a non-zero exit code.

/// The benches' logic: built with the `bench` feature (on by default; Criterion).
#[cfg(feature = "bench")]
pub mod bench;
pub mod config;
pub mod cpu_idle;
pub mod dataset;
pub mod db;
pub mod embed;
pub mod gates;
pub mod load;
pub mod logging;
pub mod ratelimit;
pub mod record;
pub mod report;
pub mod secrets;
pub mod server;
pub mod setup;
pub mod stack;
pub mod workload;

/// Installs rustls' ring crypto provider for HTTPS clients (idempotent).
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs a binary's `main`: one `error: …` line and exit code 1 on failure, 130 on Ctrl-C (which
/// abandons the work: every job of these binaries is atomic, so nothing half-done remains).
pub fn main_with<F>(fut: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
{
    main_handling_signals(async {
        tokio::select! {
            result = fut => result,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("interrupted: work in progress was rolled back; nothing was changed");
                Ok(std::process::ExitCode::from(130))
            }
        }
    })
}

/// Runs a binary's `main` that handles signals itself (the service drains on Ctrl-C and SIGTERM):
/// one `error: …` line and exit code 1 on failure.
pub fn main_handling_signals<F>(fut: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
{
    let runtime = match multi_thread_runtime(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match fut.await {
            Ok(code) => code,
            Err(e) => {
                crate::say!("error: {}", one_line(&e));
                std::process::ExitCode::FAILURE
            }
        }
    })
}

/// A tokio runtime on the calling thread (benches time one request after another on it; a
/// `Drop` that must finish its work runs one of its own).
pub fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A tokio runtime with `workers` worker threads (`None`: one per CPU).
pub fn multi_thread_runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// An error chain as one line: `what we were doing: why`, with every secret seen scrubbed.
/// Causes that repeat the message before them (sqlx wraps I/O errors that way) are left out.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if parts.last().is_some_and(|prev| prev.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    secrets::scrub(&parts.join(": "))
}

/// Parses `T` from the command line; on a usage error prints clap's first line and exits 2.
pub fn parse_args<T: clap::Parser>() -> Result<T, std::process::ExitCode> {
    match T::try_parse() {
        Ok(args) => Ok(args),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}", config::first_line(&e.render().to_string()));
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// The layers, bottom up: a module may use modules of its own layer or below, never above; and no
/// two modules may use each other, directly or round about (foundation modules among themselves
/// included).
#[cfg(test)]
mod layers {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Foundation (0) → the service engine (1) → the load engine, which can run the service in
    /// process (2) → the report (3) → the benches, which drive all of them and publish (4).
    const LAYERS: &[(&str, u8)] = &[
        ("secrets", 0),
        ("logging", 0),
        ("cpu_idle", 0),
        ("config", 0),
        ("dataset", 0),
        ("embed", 0),
        ("workload", 0),
        ("gates", 0),
        ("db", 0),
        ("ratelimit", 0),
        ("record", 0),
        ("stack", 0),
        ("setup", 0),
        ("server", 1),
        ("load", 2),
        ("report", 3),
        ("bench", 4),
        // A test of docs/configuration.md against every binary's arguments.
        ("configuration_reference", 5),
    ];

    /// Which top-level modules each module names as `crate::x` (code, not comments).
    fn uses() -> BTreeMap<String, BTreeSet<String>> {
        fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let rel = file.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = top.trim_end_matches(".rs").to_string();
            if module == "bin" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let deps = graph.entry(module.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let name = if name.is_empty() && rest.starts_with('{') {
                        // `use crate::{a, b::c}`: every name in the group.
                        let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                        for part in group.split(',') {
                            let n: String = part
                                .trim()
                                .chars()
                                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                .collect();
                            if !n.is_empty() && n != module {
                                deps.insert(n);
                            }
                        }
                        continue;
                    } else {
                        name
                    };
                    if name != module {
                        deps.insert(name);
                    }
                }
            }
        }
        graph
    }

    fn layer(module: &str) -> Option<u8> {
        LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
    }

    #[test]
    fn every_module_has_a_layer_and_uses_only_its_own_or_lower() {
        let graph = uses();
        let mut wrong = Vec::new();
        for (module, deps) in &graph {
            let Some(own) = layer(module) else {
                wrong.push(format!("{module} has no layer in LAYERS"));
                continue;
            };
            for dep in deps {
                // Items of lib.rs itself (main_with, one_line, say!) are below everything.
                if let Some(theirs) = layer(dep)
                    && (theirs > own || (theirs == own && own > 0))
                {
                    wrong.push(format!(
                        "{module} (layer {own}) uses {dep} (layer {theirs})"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
    }

    #[test]
    fn no_two_modules_use_each_other() {
        let graph = uses();
        let mut cycles = Vec::new();
        // Depth-first search from every module; a path back to where it started is a cycle.
        for start in graph.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for next in graph.get(&at).into_iter().flatten() {
                    if next == start {
                        cycles.push(format!("{} → {start}", path.join(" → ")));
                    } else if graph.contains_key(next) && seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
        assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    }

    #[test]
    fn the_scan_sees_imports() {
        // The test is only as good as its reading of the source: it must see what is known to be
        // there (bench drives the load engine; load runs the service in process).
        let graph = uses();
        assert!(graph["bench"].contains("load"));
        assert!(graph["load"].contains("server"));
        assert!(graph["db"].contains("secrets"));
    }
}

/// docs/configuration.md against the binaries' own argument definitions: every flag the page names
/// exists (in the binary its row names — `load --…`, `report --…`, or otherwise `setup`/`serve`)
/// with the environment variable the page gives, and every flag a binary takes is on the page.
#[cfg(all(test, feature = "html"))]
mod configuration_reference;
