//! A dataset changed by writes, detected and restored without a rebuild. The triggers of
//! setup/schema.sql's `dataset_guard` log every dataset row deleted or changed in what a search sees
//! (`capacity_changes`); the benches refuse such a dataset (`setup::Ready::pristine`), since their
//! figures and ground truth are the dataset's as generated; `setup --restore` ([`restore`])
//! rewrites exactly the logged rows from the generator — the same rows, ids and creation times —
//! and VACUUMs the table. Rows written through the API are not the dataset's: never logged, never
//! touched.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::config::Config;
use crate::dataset::{CONTRIBUTOR_EMAIL, Dataset};
use crate::db::{self, load};

/// The command that restores a changed dataset.
pub const RESTORE_COMMAND: &str = "cargo run --release --bin setup -- --restore";

/// Rows of the dataset changed since setup loaded it (0 before the change log existed).
pub async fn changed_rows(conn: &mut PgConnection) -> Result<u64> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('capacity_changes') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM capacity_changes")
        .fetch_one(&mut *conn)
        .await
        .context("reading the dataset's change log")?;
    Ok(n as u64)
}

/// The line that says a dataset changed and how to restore it.
pub fn changed_message(rows: u64) -> String {
    format!(
        "the dataset has changed since setup loaded it: {rows} of its rows were deleted or updated \
         (through the API or by hand; logged in capacity_changes), and what capbench measures is the \
         dataset as generated — restore them with `{RESTORE_COMMAND}` (rewrites those rows from the \
         generator, then VACUUM; rows written through the API are kept), or rebuild with --force"
    )
}

/// What `setup --restore` did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Restored {
    pub rows: u64,
    /// The DELETE and the COPY of the rows (one transaction), and the VACUUM after it.
    pub write_seconds: f64,
    pub vacuum_seconds: f64,
}

/// Rewrites every logged row of the dataset at `url` (described by `config`) from the generator,
/// in one transaction (the log emptied in it), then `VACUUM (ANALYZE) traces`.
pub async fn restore(config: &Config, url: &str) -> Result<Restored> {
    let mut conn = db::connect(url).await?;
    let ids: Vec<Uuid> = if changed_rows(&mut conn).await? == 0 {
        Vec::new()
    } else {
        sqlx::query_scalar("SELECT id FROM capacity_changes ORDER BY id")
            .fetch_all(&mut conn)
            .await?
    };
    if ids.is_empty() {
        return Ok(Restored {
            rows: 0,
            write_seconds: 0.0,
            vacuum_seconds: 0.0,
        });
    }
    let dataset = Dataset::new(config.dataset.clone());
    let numbers = row_numbers(&dataset, &ids)?;
    let contributor = db::seed_user(&mut conn, CONTRIBUTOR_EMAIL).await?;
    let t = Instant::now();
    let mut bytes = Vec::new();
    load::encode_header(&mut bytes);
    for &i in &numbers {
        load::encode_row(&mut bytes, &dataset.row(i), contributor);
    }
    load::encode_trailer(&mut bytes);
    let mut tx = conn.begin().await?;
    sqlx::query("DELETE FROM traces WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .context("deleting the changed rows")?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY traces ({}) FROM STDIN (FORMAT binary)",
            load::COPY_COLUMNS
        ))
        .await
        .context("rewriting the changed rows")?;
    copy.send(bytes).await?;
    let copied = copy.finish().await?;
    if copied != ids.len() as u64 {
        bail!("the restore's COPY stored {copied} rows, not {}", ids.len());
    }
    sqlx::query("DELETE FROM capacity_changes WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await.context("committing the restored rows")?;
    let write_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sqlx::raw_sql("VACUUM (ANALYZE) traces")
        .execute(&mut conn)
        .await
        .context("VACUUM after the restore")?;
    Ok(Restored {
        rows: ids.len() as u64,
        write_seconds,
        vacuum_seconds: t.elapsed().as_secs_f64(),
    })
}

/// Each id's row number in `dataset`, in the order given; an id that is none of its rows is an error.
fn row_numbers(dataset: &Dataset, ids: &[Uuid]) -> Result<Vec<u64>> {
    let wanted: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(n, id)| (*id, n)).collect();
    let mut found = vec![None; ids.len()];
    for i in 0..dataset.rows() {
        if let Some(&n) = wanted.get(&dataset.row_id(i)) {
            found[n] = Some(i);
        }
    }
    found
        .iter()
        .zip(ids)
        .map(|(i, id)| {
            i.ok_or_else(|| {
                anyhow::anyhow!(
                    "capacity_changes names {id}, which is none of this dataset's {} rows: it cannot be \
                     rewritten from the generator — rebuild the dataset with --force",
                    dataset.rows()
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_numbers_are_found_from_ids_and_a_stranger_is_refused() {
        let d = Dataset::new(crate::config::DatasetParams {
            rows: 500,
            dims: 8,
            ..crate::config::DatasetParams::default()
        });
        let ids = [d.row_id(17), d.row_id(3), d.row_id(499)];
        assert_eq!(row_numbers(&d, &ids).unwrap(), [17, 3, 499]);
        let e = row_numbers(&d, &[d.row_id(1), Uuid::nil()]).unwrap_err();
        assert!(
            e.to_string().contains("none of this dataset's 500 rows"),
            "{e}"
        );
        assert!(changed_message(3).contains(RESTORE_COMMAND));
    }
}
