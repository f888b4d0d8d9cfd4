//! pgbench beside the hnsw and hnsw_filtered benches (`CAPBENCH_COMPARE=1`): the same search SQL
//! through PostgreSQL's own benchmark client, so a latency is quoted against an independent tool
//! of the same run.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::db::search;
use crate::{dataset, stack};

/// pgbench on the same SQL (`-M prepared`, 1 client).
#[derive(Debug, Clone, Copy)]
pub struct PgbenchResult {
    pub latency_avg_ms: f64,
    pub tps: f64,
}

/// The pgbench script for THE search query, its vector read from `capacity_query_vectors` (the held-out set).
pub fn pgbench_script(queries: usize, k: i64) -> String {
    pgbench_script_of("heldout", queries, queries, k, None)
}

/// The pgbench script for THE search query, filtered by `tag` when given (the query's filtered
/// form, as `hnsw_filtered` runs it), its vector query `i % queries` of the stored query set
/// `query_set` (`capacity_query_vectors`) for `i` drawn uniformly below `drawn`: the queries a
/// Criterion benchmark rotating through the set ran in `drawn` iterations, each about as often —
/// where queries differ widely in cost (an iterative scan under a selective filter), a comparison
/// holds only on the same queries.
pub fn pgbench_script_of(
    query_set: &str,
    queries: usize,
    drawn: usize,
    k: i64,
    tag: Option<&str>,
) -> String {
    let sql = match tag {
        None => search::SEARCH_SQL.to_string(),
        Some(t) => search::SEARCH_FILTERED_SQL.replace("$4", &format!("'{{{t}}}'::text[]")),
    };
    pgbench_script_for(&sql, query_set, queries, drawn, k, "embedding")
}

/// The pgbench script of `sql` (a search statement with `$1` the vector, `$2` the model, `$3` k;
/// any other parameter already written in), its vector as [`pgbench_script_of`] draws it: the
/// stored query's `column` expression (`embedding`, or `subvector(embedding, 1, dims)`, which hands
/// the statement a value already out of TOAST, as a bound parameter is — where the statement
/// compares it with hundreds of rows outside the index, each comparison would otherwise fetch it).
pub fn pgbench_script_for(
    sql: &str,
    query_set: &str,
    queries: usize,
    drawn: usize,
    k: i64,
    column: &str,
) -> String {
    let vector = format!(
        "(SELECT {column} FROM capacity_query_vectors WHERE query_set = '{query_set}' AND query_no = :qid)"
    );
    let sql = sql
        .replace("$1", &vector)
        .replace("$2", &format!("'{}'", dataset::EMBEDDING_MODEL_ID))
        .replace("$3", &k.to_string());
    format!(
        "\\set qid random(0, {}) % {}\n{sql};\n",
        drawn.max(1) - 1,
        queries.max(1)
    )
}

/// Runs pgbench (`-n -M prepared -c 1`) on the same query at `ef` for a fixed time.
pub fn pgbench(
    config: &Config,
    url: &str,
    ef: u32,
    queries: usize,
    k: i64,
) -> Result<PgbenchResult> {
    pgbench_with(
        config,
        url,
        &pgbench_script(queries, k),
        &format!("-c hnsw.ef_search={ef}"),
    )
}

/// Runs pgbench (`-n -M prepared -c 1`) on `script` for a fixed time (3 s quick, 15 s), its
/// sessions started with `options` (`PGOPTIONS`: the settings the measured point runs with).
pub fn pgbench_with(
    config: &Config,
    url: &str,
    script_text: &str,
    options: &str,
) -> Result<PgbenchResult> {
    let seconds = if config.bench.quick { 3 } else { 15 };
    pgbench_for(config, url, script_text, options, seconds)
}

/// [`pgbench_with`] for `seconds` (at least 1).
pub fn pgbench_for(
    config: &Config,
    url: &str,
    script_text: &str,
    options: &str,
    seconds: u32,
) -> Result<PgbenchResult> {
    let program = stack::pg_program(&config.servers, "pgbench");
    // The password goes in pgbench's environment, which other users cannot read (its command line
    // they can).
    let (url, password) = stack::split_password(url)?;
    let script = std::env::temp_dir().join(format!("capbench-pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, script_text)
        .with_context(|| format!("writing {}", script.display()))?;
    let mut cmd = Command::new(&program);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    let out = cmd
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            "1",
            "-T",
            &seconds.max(1).to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(&url)
        .env("PGOPTIONS", options)
        .output()
        .with_context(|| {
            format!(
                "running {} (unset CAPBENCH_COMPARE to skip)",
                program.display()
            )
        });
    let _ = std::fs::remove_file(&script);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let number = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (number("latency average = "), number("tps = ")) {
        (Some(latency_avg_ms), Some(tps)) => Ok(PgbenchResult {
            latency_avg_ms,
            tps,
        }),
        _ => bail!("could not read pgbench's output: {}", text.trim()),
    }
}
