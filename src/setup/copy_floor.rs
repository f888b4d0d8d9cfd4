//! `setup --compare-copy-floor`: capbench's binary COPY against PostgreSQL's own `COPY FROM` a file.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection};

use crate::config::Config;
use crate::dataset::{CONTRIBUTOR_EMAIL, Dataset};
use crate::db::{self, load, schema};

/// Times capbench's streamed binary COPY against `COPY … FROM` a server-side binary file of the same
/// rows, each into a fresh table created in its own (rolled back) transaction. Returns the medians.
pub async fn compare_copy_floor(
    config: &Config,
    url: &str,
    repeat: u32,
    copy_batch: u64,
) -> Result<(f64, f64)> {
    if config.servers.database_url.is_some() {
        bail!(
            "--compare-copy-floor needs the embedded stack (it writes a file in the server's data directory): unset DATABASE_URL"
        );
    }
    // In the data directory: the server (running as its own user) can write there.
    let file_path = config
        .servers
        .home
        .join("pg")
        .join("data")
        .join("capbench-copy-floor.bin");
    let file = file_path
        .to_str()
        .context("the data directory path is not UTF-8")?
        .replace('\'', "''");
    let mut conn = db::connect(url).await?;
    // Declared before the watch, so dropped after it: on Ctrl-C the server's COPY is cancelled
    // first, then its file removed.
    let _file = RemoveOnDrop(file_path);
    let watch = db::SessionWatch::start(url, &mut conn, "setup").await?;
    let timed = time_copy_paths(&mut conn, config, &file, repeat, copy_batch).await;
    watch.finish();
    timed
}

/// Removes a file when dropped, on every path out (success, error, or an abandoned future).
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => crate::say!("warning: could not remove {}: {e}", self.0.display()),
        }
    }
}

/// The two sides of `compare_copy_floor`, into the server-side `file`.
pub(super) async fn time_copy_paths(
    conn: &mut PgConnection,
    config: &Config,
    file: &str,
    repeat: u32,
    copy_batch: u64,
) -> Result<(f64, f64)> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "COPY (SELECT {cols} FROM traces ORDER BY created_at) TO '{file}' (FORMAT binary)",
        cols = load::COPY_COLUMNS
    )))
    .execute(&mut *conn)
    .await
    .context("exporting the dataset to a server-side binary file")?;
    let dataset = Arc::new(Dataset::new(config.dataset.clone()));
    let contributor = db::seed_user(conn, CONTRIBUTOR_EMAIL).await?;
    let (mut ours, mut floor) = (Vec::new(), Vec::new());
    let result: Result<()> = async {
        for _ in 0..repeat.max(1) {
            for server_side in [true, false] {
                let mut tx = conn.begin().await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA capbench_floor; SET LOCAL search_path TO capbench_floor, public; {}",
                    schema::render("traces_table", config.dataset.dims, &config.index)?
                )))
                .execute(&mut *tx)
                .await?;
                let t = Instant::now();
                if server_side {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "COPY traces ({}) FROM '{file}' (FORMAT binary)",
                        load::COPY_COLUMNS
                    )))
                    .execute(&mut *tx)
                    .await?;
                    floor.push(t.elapsed().as_secs_f64());
                } else {
                    load::copy_dataset(&mut tx, "traces", dataset.clone(), contributor, copy_batch, |_| {})
                        .await?;
                    ours.push(t.elapsed().as_secs_f64());
                }
                tx.rollback().await?;
            }
        }
        Ok(())
    }
    .await;
    result.context("timing the two COPY paths")?;
    Ok((median(&mut ours), median(&mut floor)))
}

pub(super) fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
