//! Index variants on real PostgreSQL+pgvector: each built once per dataset beside the HNSW index,
//! recorded, reused; each variant's query scans its own index and answers with exact distances; at
//! its widest setting each is as good as the exact answer.

use capbench::config::IndexParams;
use capbench::db::variant::{self, Variant};
use capbench::db::{self, search, truth};
use capbench::setup::{LoadOptions, ensure_dataset, ensure_truth, ensure_variants};
use pgvector::Vector;

use crate::common;

#[tokio::test(flavor = "multi_thread")]
async fn variants_are_built_once_scan_their_own_index_and_find_the_true_neighbours() {
    let mut cfg = common::config(common::small_params(3_000, 64), IndexParams::default());
    cfg.bench.queries = 20;
    let (cfg, url) = common::fresh_database("variants", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let (truths, _) = ensure_truth(&cfg, &url).await.unwrap();

    let first = ensure_variants(&cfg, &url, &Variant::ALL, false)
        .await
        .unwrap();
    assert_eq!(first.len(), 4);
    assert!(!first[0].fresh, "HNSW comes with the dataset");
    assert!(
        first[1..].iter().all(|e| e.fresh),
        "the others are built now"
    );
    for e in &first {
        assert!(e.built.size_bytes > 0, "{:?}", e.built);
        assert!(e.built.build_seconds > 0.0);
        assert_eq!(e.built.index_name, e.built.variant.index_name());
    }
    let sizes: Vec<i64> = first.iter().map(|e| e.built.size_bytes).collect();
    assert!(
        sizes[2] < sizes[1] && sizes[1] < sizes[0],
        "bq < halfvec < hnsw: {sizes:?}"
    );
    assert_eq!(first[3].built.settings, "lists=10");

    // A second call reuses them: same build figures, nothing rebuilt.
    let again = ensure_variants(&cfg, &url, &Variant::ALL, false)
        .await
        .unwrap();
    assert!(again.iter().all(|e| !e.fresh));
    for (a, b) in first.iter().zip(&again) {
        assert_eq!(a.built.build_seconds, b.built.build_seconds);
    }

    let (set, gt) = truths.heldout();
    let k = gt.k as i64;
    let mut conn = db::connect(&url).await.unwrap();
    for v in Variant::ALL {
        // Each knob at its widest: ef_search 400 (bq: 400 candidates), probes = all 10 lists.
        let wide = if v == Variant::Ivfflat { 10 } else { 400 };
        let candidates = (v == Variant::Bq).then_some(400);
        sqlx::raw_sql(sqlx::AssertSqlSafe(v.settings_sql(wide)))
            .execute(&mut conn)
            .await
            .unwrap();
        let sql = v.search_sql(cfg.dataset.dims);
        let q0 = Vector::from(set.vectors[0].clone());
        let plan = variant::explain(&mut conn, &sql, &q0, k, candidates)
            .await
            .unwrap();
        assert!(
            search::plan_uses_index(&plan, v.index_name()),
            "{v}: {}",
            plan.join(" / ")
        );
        for other in Variant::ALL.iter().filter(|o| **o != v) {
            assert!(
                !plan
                    .iter()
                    .any(|l| l.contains(&format!("{} ", other.index_name()))),
                "{v} must not touch {other}'s index: {plan:?}"
            );
        }
        let mut recall = 0.0;
        for (j, q) in set.vectors.iter().enumerate() {
            let hits = variant::search(&mut conn, &sql, &Vector::from(q.clone()), k, candidates)
                .await
                .unwrap();
            assert_eq!(hits.len(), k as usize, "{v}: k rows");
            // The distance is the exact cosine distance, whatever the index computed.
            for h in &hits {
                let pos = gt.ids[j].iter().position(|id| *id == h.id);
                if let Some(p) = pos {
                    assert!(
                        (gt.distances[j][p] - h.distance).abs() < 1e-5,
                        "{v}: exact distance"
                    );
                }
            }
            let got: Vec<(uuid::Uuid, f64)> = hits.iter().map(|h| (h.id, h.distance)).collect();
            recall += truth::recall(&gt.ids[j], &gt.distances[j], &got);
        }
        recall /= set.vectors.len() as f64;
        let floor = match v {
            Variant::Ivfflat => 1.0,
            Variant::Bq => 0.9,
            _ => 0.95,
        };
        assert!(
            recall >= floor,
            "{v} at its widest: recall {recall} < {floor}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_dataset_rebuilds_its_variants() {
    let mut cfg = common::config(common::small_params(1_500, 32), IndexParams::default());
    cfg.bench.queries = 10;
    let (cfg, url) = common::fresh_database("variants_rebuild", cfg).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let first = ensure_variants(&cfg, &url, &[Variant::Bq], false)
        .await
        .unwrap();
    assert!(first[0].fresh);
    // Another dataset (more rows) replaces the table: its variants are rebuilt for it.
    let mut bigger = cfg.clone();
    bigger.dataset.rows = 1_800;
    ensure_dataset(&bigger, &url, &LoadOptions::default())
        .await
        .unwrap();
    let second = ensure_variants(&bigger, &url, &[Variant::Bq], false)
        .await
        .unwrap();
    assert!(second[0].fresh, "the old table's index went with it");
    let mut conn = db::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM capacity_variants")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 1, "one row per variant, updated");
}
