//! `setup --index hnsw,halfvec,bq,ivfflat`: the index variants (db::variant) on the loaded dataset,
//! each built once per dataset fingerprint and reused after; what each build took and how large
//! each index is.

use anyhow::{Context, Result};
use sqlx::PgConnection;

use crate::config::Config;
use crate::dataset;
use crate::db::variant::{self, Built, Variant};
use crate::db::{self, index};

use super::{Figures, build::bar};

/// A variant and whether this call built it.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub built: Built,
    /// Built now (false: it was there for this dataset).
    pub fresh: bool,
}

/// Makes every variant of `wanted` exist on the dataset `config` describes (already loaded at
/// `url`): reused when `capacity_variants` records it for this fingerprint and the index is valid,
/// built otherwise. HNSW is the dataset's own index; its figures come from setup's build.
pub async fn ensure(
    config: &Config,
    url: &str,
    wanted: &[Variant],
    progress: bool,
) -> Result<Vec<Ensured>> {
    let fingerprint = dataset::fingerprint(&config.dataset, &config.index);
    let mut conn = db::connect(url).await?;
    let mut recorded = variant::recorded(&mut conn, &fingerprint).await?;
    let mut out = Vec::new();
    for &v in wanted {
        if v == Variant::Hnsw {
            out.push(Ensured {
                built: hnsw(&mut conn).await?,
                fresh: false,
            });
            continue;
        }
        if let Some(i) = recorded.iter().position(|b| b.variant == v) {
            out.push(Ensured {
                built: recorded.swap_remove(i),
                fresh: false,
            });
            continue;
        }
        let monitor = if progress {
            Some(db::connect(url).await?)
        } else {
            None
        };
        let pb = bar(progress, config.dataset.rows, v.as_str());
        let built = {
            let pb = pb.clone();
            variant::build(
                &mut conn,
                monitor,
                v,
                &fingerprint,
                config.dataset.rows,
                config.dataset.dims,
                &config.index,
                config.index.workers(),
                move |done, total| {
                    if total > 0 {
                        pb.set_length(total);
                    }
                    pb.set_position(done);
                },
            )
            .await?
        };
        pb.finish_and_clear();
        out.push(Ensured { built, fresh: true });
    }
    Ok(out)
}

/// The HNSW index as setup built it with the dataset (`capacity_meta.figures`), its size now.
async fn hnsw(conn: &mut PgConnection) -> Result<Built> {
    let figures: serde_json::Value =
        sqlx::query_scalar("SELECT figures FROM capacity_meta WHERE id = 1")
            .fetch_one(&mut *conn)
            .await
            .context("reading capacity_meta's figures")?;
    let figures: Figures =
        serde_json::from_value(figures).context("reading capacity_meta's figures")?;
    let info = index::info(conn, "traces")
        .await?
        .context("the HNSW index is missing: run `cargo run --release --bin setup`")?;
    Ok(Built {
        variant: Variant::Hnsw,
        settings: format!(
            "m={}, ef_construction={}",
            info.m.unwrap_or_default(),
            info.ef_construction.unwrap_or_default()
        ),
        index_name: info.name,
        build_seconds: figures.index_seconds,
        workers: figures.build_workers,
        maintenance_work_mem_bytes: figures.server.maintenance_work_mem_bytes,
        size_bytes: info.size_bytes,
        notices: figures.notices,
    })
}

/// One line per variant, as setup prints them.
pub fn lines(ensured: &[Ensured]) -> Vec<String> {
    ensured
        .iter()
        .map(|e| {
            let b = &e.built;
            format!(
                "variant      {:<8} {:>9} {} ({}), {} in {:.1} s (leader + {} workers, maintenance_work_mem {} MiB){}",
                b.variant.as_str(),
                format!("{:.1} MiB", b.size_bytes as f64 / (1024.0 * 1024.0)),
                b.index_name,
                b.settings,
                if e.fresh { "built" } else { "was built" },
                b.build_seconds,
                b.workers,
                b.maintenance_work_mem_bytes >> 20,
                b.notices
                    .iter()
                    .map(|n| format!("; pgvector: {n}"))
                    .collect::<String>()
            )
        })
        .collect()
}
