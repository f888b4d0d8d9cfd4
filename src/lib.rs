//! capbench — a capacity and benchmark harness for pgvector-backed search APIs.
//!
//! # Layout
//!
//! - [`config`]: the one clap `Config` (every flag also an environment variable) shared by the
//!   binaries and the benches.
//! - [`cpu_idle`]: holding idle CPUs in polling while benches measure (`/dev/cpu_dma_latency`).
//! - [`secrets`]: redacting URLs and connection strings, and scrubbing every secret seen from
//!   printed lines, logs, run records and report pages.
//! - [`logging`]: the `tracing` subscriber every binary installs (`RUST_LOG`, text or JSON).
//! - [`stack`]: the embedded default — a private PostgreSQL+pgvector and Redis under
//!   `target/capbench/`, started or reused on demand; or the servers of `DATABASE_URL` / `REDIS_URL`.
//! - [`dataset`]: the deterministic clustered vectors (1,000 unit base vectors + Gaussian noise),
//!   their fake metadata and the dataset fingerprint.
//! - [`db`]: everything said to PostgreSQL — `schema` (setup/schema.sql), `load` (binary COPY),
//!   `index` (HNSW build and catalog), `search` (THE search query).
//! - [`setup`]: the `setup` binary's job — load the dataset once, atomically, and report it; the
//!   query set's ground truth.
//! - [`ratelimit`]: the Lua token bucket (setup/token_bucket.lua) from Rust.
//! - [`server`]: the reference search service (the seeds' API on axum) — `serve`, and in-process
//!   for tests and benches.
//! - [`load`]: the `load` binary — virtual users (closed model) or an arrival rate (open model,
//!   corrected for coordinated omission) against the service, any deployment, or the database;
//!   thresholds, sweeps and their knee, Locust's CSV files.
//! - [`record`]: versioned JSON run records with HDR histograms, in `target-reports/runs/`.
//! - [`report`]: publishing a run (record to `runs/`, `--save-baseline`/`--baseline`), `compare`
//!   (verdicts from bootstrap intervals on the HDR histograms), `store` (runs, baselines, quick kept
//!   apart), `charts` (plotters SVG) and `html` (`target-reports/index.html`); the `report` binary.
//! - [`bench`](mod@bench): the Criterion benches' logic (`benches/*.rs` are one-liners): `hnsw`, `rate_limit`,
//!   `http_search`, `limiter_timeline` (the limiter's allowed/denied timeline and promise gates), and
//!   what they share (lazy filter, quick mode, percentiles).
//!
//! The binaries in `src/bin/` are thin: parse arguments, call the library, turn errors into one line
//! and a non-zero exit code.

pub mod bench;
pub mod config;
pub mod cpu_idle;
pub mod dataset;
pub mod db;
pub mod load;
pub mod logging;
pub mod ratelimit;
pub mod record;
pub mod report;
pub mod secrets;
pub mod server;
pub mod setup;
pub mod stack;

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
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
