//! The HNSW bench's parts: query set, recall, ground truth against PostgreSQL's exact search, the
//! plan check, HDR percentiles, run records, and lazy setup when the filter selects nothing.

use crate::common;

use capbench::bench::hnsw::{self, Mode};
use capbench::bench::{BenchArgs, LatencySummary};
use capbench::config::{Config, IndexParams};
use capbench::dataset::{Dataset, Distribution, TAGS, Tag};
use capbench::db::truth::{self, Case, GroundTruth};
use capbench::db::{self, schema, search};
use capbench::record::{
    self, Environment, HnswParameters, Metric, Parameters, ResultEntry, RunRecord,
};
use capbench::setup::{LoadOptions, ensure_dataset, ensure_truth};
use pgvector::Vector;
use uuid::Uuid;

fn args(list: &[&str]) -> Vec<String> {
    std::iter::once("hnsw-bench")
        .chain(list.iter().copied())
        .map(String::from)
        .collect()
}

#[test]
fn the_query_set_is_deterministic_and_its_own() {
    let d = Dataset::new(common::small_params(2000, 128));
    let a = d.queries(50);
    assert_eq!(a, Dataset::new(common::small_params(2000, 128)).queries(50));
    // Query j never depends on how many are asked for.
    assert_eq!(d.queries(20).vectors[..], a.vectors[..20]);
    let other = Dataset::new(capbench::config::DatasetParams {
        seed: 43,
        ..common::small_params(2000, 128)
    });
    assert_ne!(other.queries(50).vectors[0], a.vectors[0]);
    // Drawn from the dataset's distribution (near its cluster's base) but never equal to a row.
    for (j, q) in a.vectors.iter().enumerate() {
        let norm = capbench::dataset::dot(q, q).sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let own = capbench::dataset::cosine_distance(q, d.base(a.clusters[j]));
        assert!(own < 0.5, "query {j} is far from its cluster: {own}");
        let nearest_row = (0..2000)
            .map(|i| capbench::dataset::cosine_distance(q, &d.vector(i)))
            .fold(f64::INFINITY, f64::min);
        assert!(nearest_row > 1e-4, "query {j} duplicates a row");
    }
}

#[test]
fn recall_at_k_on_a_hand_made_case() {
    let ids: Vec<Uuid> = (1..=6u128).map(Uuid::from_u128).collect();
    let truth_ids = &ids[..3];
    let truth_d = [0.1, 0.2, 0.3];
    // All three found, any order.
    assert_eq!(
        truth::recall(
            truth_ids,
            &truth_d,
            &[(ids[2], 0.3), (ids[0], 0.1), (ids[1], 0.2)]
        ),
        1.0
    );
    // Two of three.
    assert_eq!(
        truth::recall(
            truth_ids,
            &truth_d,
            &[(ids[0], 0.1), (ids[2], 0.3), (ids[4], 0.5)]
        ),
        2.0 / 3.0
    );
    // None.
    assert_eq!(
        truth::recall(
            truth_ids,
            &truth_d,
            &[(ids[3], 0.4), (ids[4], 0.5), (ids[5], 0.6)]
        ),
        0.0
    );
    // A different neighbour at exactly the k-th distance is a tie: it counts.
    assert_eq!(
        truth::recall(
            truth_ids,
            &truth_d,
            &[(ids[0], 0.1), (ids[1], 0.2), (ids[5], 0.3)]
        ),
        1.0
    );
    // Only the first k results count.
    assert_eq!(
        truth::recall(
            truth_ids,
            &truth_d,
            &[(ids[3], 0.4), (ids[0], 0.1), (ids[1], 0.2), (ids[2], 0.3)]
        ),
        2.0 / 3.0
    );
}

#[test]
fn hdr_percentiles_agree_with_a_sorted_array() {
    // 20,000 latencies spread over three decades (0.2 ms … 200 ms), deterministic.
    let mut x: u64 = 42;
    let mut samples: Vec<u64> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (200_000.0 * 1000f64.powf(u)) as u64
        })
        .collect();
    let mut hist = record::latency_histogram();
    for &s in &samples {
        hist.record(s).unwrap();
    }
    samples.sort_unstable();
    let exact =
        |q: f64| samples[((q * samples.len() as f64).ceil() as usize).max(1) - 1] as f64 / 1e6;
    let summary = LatencySummary::of(&hist);
    for (q, got) in [
        (0.5, summary.p50_ms),
        (0.9, summary.p90_ms),
        (0.95, summary.p95_ms),
        (0.99, summary.p99_ms),
        (0.999, summary.p999_ms),
    ] {
        let want = exact(q);
        assert!(
            (got - want).abs() <= want * 1e-3,
            "p{}: HDR {got} ms, sorted array {want} ms",
            q * 100.0
        );
    }
    let max = *samples.last().unwrap() as f64 / 1e6;
    assert!((summary.max_ms - max).abs() <= max * 1e-3);
    assert_eq!(summary.count, 20_000);
}

#[test]
fn run_records_round_trip_and_refuse_a_future_schema() {
    let dir = std::env::temp_dir().join(format!("capbench-record-test-{}", std::process::id()));
    let mut hist = record::latency_histogram();
    for v in [1_500_000u64, 2_000_000, 2_500_000, 40_000_000] {
        hist.record(v).unwrap();
    }
    let mut rec = RunRecord::new(
        Environment::of_machine(),
        Parameters::Hnsw(HnswParameters {
            ef_search: vec![40],
            ..HnswParameters::default()
        }),
    );
    rec.results.push(ResultEntry {
        name: "hnsw/ef_search/40".into(),
        metrics: [(Metric::P99_MS, 40.0)].into_iter().collect(),
        histogram: Some(record::encode_histogram(&hist).unwrap()),
        gates: vec![capbench::gates::seeds_p99(None, Some(40.0))],
        ..ResultEntry::default()
    });
    let path = rec.write(&dir).unwrap();
    let back = RunRecord::read(&path).unwrap();
    assert_eq!(back, rec);
    let h = record::decode_histogram(back.results[0].histogram.as_deref().unwrap()).unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h.value_at_quantile(1.0), hist.value_at_quantile(1.0));
    assert!(back.environment.cores >= 1 && !back.environment.cpu_model.is_empty());

    let mut future: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    future["schema_version"] = 99.into();
    std::fs::write(&path, future.to_string()).unwrap();
    let err = RunRecord::read(&path).unwrap_err();
    assert!(
        format!("{err:#}").contains("schema_version 99, newer than this capbench understands"),
        "{err:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_filter_is_read_as_criterion_reads_it() {
    let cfg = Config::from_env().unwrap();
    let ids = |a: &[&str]| -> Vec<String> {
        hnsw::plan(&BenchArgs::parse(&args(a)).unwrap(), &cfg)
            .into_iter()
            .map(|(m, ef)| m.id(ef))
            .collect()
    };
    assert_eq!(ids(&["hnsw"]).len(), 2 * cfg.bench.ef_search.len());
    assert_eq!(
        ids(&["hnsw/ef_search/64"]),
        vec!["hnsw/ef_search/64".to_string()]
    );
    assert_eq!(ids(&["hnsw_txn"]).len(), cfg.bench.ef_search.len());
    assert!(
        ids(&["hnsw_txn"])
            .iter()
            .all(|id| id.starts_with("hnsw_txn/"))
    );
    // Values of Criterion's options are not filters.
    assert_eq!(
        ids(&["--save-baseline", "rate_limit", "--bench"]).len(),
        2 * cfg.bench.ef_search.len()
    );
    assert_eq!(
        ids(&["--baseline", "x", "hnsw/ef_search/16", "--exact"]),
        vec!["hnsw/ef_search/16".to_string()]
    );
    assert_eq!(Mode::Transaction.id(40), "hnsw_txn/ef_search/40");
}

fn truth_config() -> Config {
    let mut cfg = common::config(
        common::small_params(2000, 256),
        IndexParams {
            m: 8,
            ef_construction: 32,
            build_workers: Some(1),
        },
    );
    cfg.dataset.clusters = 20;
    cfg.bench.queries = 40;
    cfg
}

/// PostgreSQL's exact answer (no index) to query `q` filtered by `tags` equals the stored truth:
/// the same length, the same distances rank by rank, the same ids except where distances tie.
async fn assert_exact_agrees(
    conn: &mut sqlx::PgConnection,
    q: &[f32],
    tags: &[String],
    truth: &GroundTruth,
    j: usize,
    what: &str,
) {
    let q = Vector::from(q.to_vec());
    let plan = search::explain_filtered(conn, &q, 10, tags).await.unwrap();
    assert!(
        !plan.iter().any(|l| l.contains("Index")),
        "exact search must use no index: {plan:?}"
    );
    let exact = search::search_filtered(conn, &q, 10, tags).await.unwrap();
    let (ids, distances) = (&truth.ids[j], &truth.distances[j]);
    assert_eq!(
        exact.len(),
        ids.len(),
        "{what} query {j}: PostgreSQL's row count"
    );
    let last = ids.len().saturating_sub(1);
    for (r, hit) in exact.iter().enumerate() {
        assert!(
            (hit.distance - distances[r]).abs() < truth::TIE_EPSILON,
            "{what} query {j} rank {r}: PostgreSQL {} vs truth {}",
            hit.distance,
            distances[r]
        );
        if hit.id != ids[r] {
            // Only a tie may swap places: the other id must sit at the same distance in the truth.
            let at = ids.iter().position(|id| *id == hit.id);
            let tied = at.is_some_and(|a| (distances[a] - hit.distance).abs() < truth::TIE_EPSILON)
                || (r == last && (hit.distance - distances[last]).abs() < truth::TIE_EPSILON);
            assert!(
                tied,
                "{what} query {j} rank {r}: PostgreSQL has {}, truth has {}",
                hit.id, ids[r]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ground_truth_equals_postgres_exact_search() {
    let (cfg, url) = common::fresh_database("truth", truth_config()).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let (truths, computed) = ensure_truth(&cfg, &url).await.unwrap();
    assert!(computed.is_some(), "first call computes");
    assert_eq!(
        truths.cases.len(),
        3 * (1 + TAGS.len()),
        "every distribution × (no filter + 8 tags)"
    );
    assert_eq!(
        truths.sets.len(),
        3 * 5,
        "a plain set per distribution, one per correlated tag"
    );
    let (heldout, truth) = truths.heldout();
    assert_eq!((heldout.len(), truth.ids.len(), truth.k), (40, 40, 10));
    assert_eq!(
        heldout,
        &Dataset::new(cfg.dataset.clone()).queries(40),
        "the held-out set is the one queries() draws"
    );

    let mut conn = db::connect(&url).await.unwrap();
    sqlx::raw_sql("SET enable_indexscan = off; SET enable_bitmapscan = off")
        .execute(&mut conn)
        .await
        .unwrap();
    // Every case, on a few of its queries: unfiltered and filtered, all three distributions.
    for (case, truth) in &truths.cases {
        let (set, _) = truths.get(*case).unwrap();
        let tags: Vec<String> = case.filter.iter().map(|t| t.name()).collect();
        if let Some(t) = case.filter {
            let matches = t.count(cfg.dataset.rows) as usize;
            assert!(
                truth.ids.iter().all(|ids| ids.len() == matches.min(10)),
                "{}: a filter matching {matches} rows keeps min(10, {matches})",
                case.label()
            );
        }
        for j in (0..set.len()).step_by(13) {
            assert_exact_agrees(&mut conn, &set.vectors[j], &tags, truth, j, &case.label()).await;
        }
    }

    // Stored with the dataset: the next call reads it back instead of recomputing.
    let (again, computed) = ensure_truth(&cfg, &url).await.unwrap();
    assert!(computed.is_none(), "second call must read the stored truth");
    assert_eq!(again, truths);
    // And brute force is deterministic, one set alone or all cases at once.
    let data = Dataset::new(cfg.dataset.clone());
    let recomputed: GroundTruth = truth::compute(&data, heldout, 10);
    assert_eq!(recomputed.ids, truth.ids);
    // The stored query vectors are the sets' (psql can reproduce a figure from them).
    let stored: Vector = sqlx::query_scalar(
        "SELECT embedding FROM capacity_query_vectors WHERE query_set = 'near-duplicate/c1' AND query_no = 3",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let c1 = Case {
        distribution: Distribution::NearDuplicate,
        filter: Tag::parse("c1"),
    };
    assert_eq!(stored.as_slice(), &truths.get(c1).unwrap().0.vectors[3][..]);

    // pgbench's scripts (CAPBENCH_COMPARE) run THE search SQL on the stored vectors: exactly
    // (index scans still off here), query 3 answers the case's truth, filtered and not.
    for (set, tag) in [
        ("heldout", Some("u10")),
        ("heldout", None),
        ("ood/c10", Some("c10")),
    ] {
        let script = hnsw::pgbench_script_of(set, 40, 100, 10, tag);
        let (first, sql) = script.split_once('\n').unwrap();
        assert_eq!(first, "\\set qid random(0, 99) % 40");
        let sql = sql.trim().trim_end_matches(';').replace(":qid", "3");
        let rows: Vec<(Uuid,)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT id FROM ({sql}) AS s")))
                .fetch_all(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{set} {tag:?}: {e}\n{sql}"));
        let case = Case {
            distribution: Distribution::parse(set.split('/').next().unwrap()).unwrap(),
            filter: tag.and_then(Tag::parse),
        };
        assert_eq!(case.set_name(), set);
        let want = &truths.cases.iter().find(|(c, _)| *c == case).unwrap().1.ids[3];
        let got: Vec<Uuid> = rows.into_iter().map(|r| r.0).collect();
        assert_eq!(&got, want, "{set} {tag:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_check_fails_loudly_without_the_index() {
    let (cfg, url) = common::fresh_database("plan", truth_config()).await;
    ensure_dataset(&cfg, &url, &LoadOptions::default())
        .await
        .unwrap();
    let mut conn = db::connect(&url).await.unwrap();
    let q = Vector::from(Dataset::new(cfg.dataset.clone()).queries(1).vectors[0].clone());
    search::check_plan(&mut conn, &q, 10, 40, schema::HNSW_INDEX)
        .await
        .expect("with the index the plan is an index scan");

    sqlx::raw_sql("DROP INDEX ix_traces_embedding_hnsw")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = search::check_plan(&mut conn, &q, 10, 40, schema::HNSW_INDEX)
        .await
        .expect_err("must refuse");
    let msg = capbench::one_line(&err);
    assert!(
        msg.contains("would not use the HNSW index") && msg.contains("Seq Scan"),
        "{msg}"
    );
    // The session's ef_search is untouched by the check.
    let ef: String = sqlx::query_scalar("SELECT current_setting('hnsw.ef_search')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(ef, "40");
}
