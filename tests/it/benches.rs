//! `cargo bench <filter>` passes the filter to every bench binary: those whose benchmarks are all
//! filtered out must start nothing and load nothing — and a selecting filter must really try.

use capbench::bench::{hnsw, http_search, rate_limit};
use capbench::config::Config;

fn args(list: &[&str]) -> Vec<String> {
    std::iter::once("bench")
        .chain(list.iter().copied())
        .map(String::from)
        .collect()
}

/// Servers that do not exist and a home that does not exist: any setup attempt fails or leaves a trace.
fn unreachable_config(tag: &str) -> (Config, std::path::PathBuf) {
    let mut cfg = Config::from_env().unwrap();
    let home = std::env::temp_dir().join(format!("capbench-lazy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    cfg.servers.home = home.clone();
    cfg.servers.database_url = Some("postgres://nobody@127.0.0.1:1/none".into());
    cfg.servers.redis_url = Some("redis://127.0.0.1:1".into());
    cfg.service.target_url = None;
    (cfg, home)
}

#[test]
fn benches_filtered_out_start_and_load_nothing() {
    let (cfg, home) = unreachable_config("all");
    for filter in [
        &["hnsw"][..],
        &["hnsw/ef_search/40"],
        &["capacity"],
        &["http_search"],
        &["--ignored"],
    ] {
        let outcome =
            rate_limit::run(&args(filter), cfg.clone()).expect("nothing selected must not fail");
        assert!(
            matches!(outcome, rate_limit::RunOutcome::NotSelected),
            "rate_limit with {filter:?}: {outcome:?}"
        );
    }
    for filter in [
        &["hnsw"][..],
        &["rate_limit"],
        &["capacity"],
        &["--exact", "http_search"],
    ] {
        let outcome =
            http_search::run(&args(filter), cfg.clone()).expect("nothing selected must not fail");
        assert!(
            matches!(outcome, http_search::RunOutcome::NotSelected),
            "http_search with {filter:?}: {outcome:?}"
        );
    }
    for filter in [
        &["rate_limit"][..],
        &["http_search/ef_search/40"],
        &["capacity"],
        &["--exact", "hnsw"],
        &["--ignored"],
    ] {
        let outcome =
            hnsw::run(&args(filter), cfg.clone()).expect("nothing selected must not fail");
        assert!(
            matches!(outcome, hnsw::RunOutcome::NotSelected),
            "hnsw with {filter:?}: {outcome:?}"
        );
    }
    // --list names what would run, still without setup.
    assert!(matches!(
        hnsw::run(&args(&["--list", "hnsw"]), cfg.clone()).unwrap(),
        hnsw::RunOutcome::Listed
    ));
    assert!(matches!(
        rate_limit::run(&args(&["--list"]), cfg.clone()).unwrap(),
        rate_limit::RunOutcome::Listed
    ));
    assert!(matches!(
        http_search::run(&args(&["--list"]), cfg.clone()).unwrap(),
        http_search::RunOutcome::Listed
    ));
    assert!(!home.exists(), "nothing may be created when nothing runs");
}

#[test]
fn a_selecting_filter_does_try_to_set_up() {
    let (cfg, _) = unreachable_config("selecting");
    let err =
        hnsw::run(&args(&["hnsw/ef_search/40"]), cfg.clone()).expect_err("must try PostgreSQL");
    assert!(
        capbench::one_line(&err)
            .contains("cannot connect to PostgreSQL at postgres://nobody@127.0.0.1:1/none"),
        "{err:#}"
    );
    let err = rate_limit::run(&args(&["rate_limit/evalsha/allowed"]), cfg.clone())
        .expect_err("must try Redis");
    assert!(
        capbench::one_line(&err).contains("cannot connect to Redis at redis://127.0.0.1:1"),
        "{err:#}"
    );
    let err = http_search::run(&args(&["http_search/ef_search/64"]), cfg)
        .expect_err("must try its servers");
    assert!(
        capbench::one_line(&err).contains("cannot connect to"),
        "{err:#}"
    );
}

#[test]
fn benchmark_ids_are_the_documented_ones() {
    let (cfg, _) = unreachable_config("ids");
    let ids = |a: &[&str]| -> Vec<String> {
        http_search::plan(&capbench::bench::BenchArgs::parse(&args(a)).unwrap(), &cfg)
            .into_iter()
            .map(|b| b.id())
            .collect()
    };
    let all = ids(&[]);
    assert_eq!(all.len(), cfg.bench.ef_search.len() + 1);
    assert!(
        all.contains(&"http_search/ef_search/64".to_string())
            && all.contains(&"http_search/rejected".to_string())
    );
    let ids = rate_limit::selected_ids(&capbench::bench::BenchArgs::parse(&args(&[])).unwrap());
    assert_eq!(
        ids,
        [
            "rate_limit/evalsha/allowed",
            "rate_limit/evalsha/denied",
            "rate_limit/evalsha/fresh_key",
            "rate_limit/pipelined/100",
            "rate_limit/timeline"
        ]
    );
}

#[test]
fn the_limiter_timeline_is_selected_and_listed_like_any_benchmark() {
    let (cfg, home) = unreachable_config("timeline");
    let selected = |a: &[&str]| {
        rate_limit::selected_ids(&capbench::bench::BenchArgs::parse(&args(a)).unwrap())
    };
    for filter in [
        &["rate_limit/timeline"][..],
        &["timeline"],
        &["--exact", "rate_limit/timeline"],
    ] {
        assert_eq!(selected(filter), ["rate_limit/timeline"], "{filter:?}");
    }
    assert!(selected(&["--list"]).contains(&"rate_limit/timeline".to_string()));
    assert!(
        selected(&["rate_limit/evalsha"])
            .iter()
            .all(|id| id != "rate_limit/timeline")
    );
    // Listed without setup…
    assert!(matches!(
        rate_limit::run(&args(&["--list", "rate_limit/timeline"]), cfg.clone()).unwrap(),
        rate_limit::RunOutcome::Listed
    ));
    assert!(!home.exists(), "listing starts nothing");
    // …and run alone: it needs Redis, so it tries.
    let err = rate_limit::run(&args(&["rate_limit/timeline"]), cfg)
        .expect_err("the timeline alone must try Redis");
    assert!(
        capbench::one_line(&err).contains("cannot connect to Redis at redis://127.0.0.1:1"),
        "{err:#}"
    );
}

#[test]
fn criterions_internal_estimates_are_read_softly() {
    use capbench::bench::read_criterion_median_ms;
    let home = std::env::temp_dir().join(format!("capbench-estimates-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let id = "hnsw/ef_search/40";
    let file = home.join(id).join("new").join("estimates.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // The shape Criterion 0.x writes.
    std::fs::write(
        &file,
        r#"{"mean":{"point_estimate":1300000.0},"median":{"confidence_interval":{},"point_estimate":1250000.0,"standard_error":1.0}}"#,
    )
    .unwrap();
    assert_eq!(read_criterion_median_ms(&home, id).unwrap(), 1.25);
    // Missing (moved), garbled, or reshaped: an error naming the file — never a panic.
    for (text, what) in [
        (None, "cannot read"),
        (Some("{\"median\": {\"point_est"), "is not JSON"),
        (Some(r#"{"median": 1250000.0}"#), "no median.point_estimate"),
        (
            Some(r#"{"median": {"point_estimate": "fast"}}"#),
            "no median.point_estimate",
        ),
    ] {
        match text {
            Some(t) => std::fs::write(&file, t).unwrap(),
            None => std::fs::remove_file(&file).unwrap(),
        }
        let err = capbench::one_line(&read_criterion_median_ms(&home, id).unwrap_err());
        assert!(
            err.contains(what) && err.contains("estimates.json"),
            "{what}: {err}"
        );
    }
    // What the benches call: soft, so the run's own figures go on without Criterion's.
    let mut cfg = Config::from_env().unwrap();
    cfg.bench.quick = false;
    assert_eq!(
        capbench::bench::criterion_median_ms(&cfg, "no/such/benchmark/anywhere"),
        None
    );
    let _ = std::fs::remove_dir_all(&home);
}
