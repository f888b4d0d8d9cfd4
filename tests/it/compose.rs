//! docker-compose.capacity.yml passes exactly the settings of setup/postgres.conf.

use std::collections::BTreeMap;

fn conf_settings() -> BTreeMap<String, String> {
    capbench::stack::POSTGRES_CONF
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not `name = value`: {l}"));
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}

fn compose_settings() -> BTreeMap<String, String> {
    include_str!("../../docker-compose.capacity.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|s| {
            let (k, v) = s
                .split_once('=')
                .unwrap_or_else(|| panic!("not `--name=value`: {s}"));
            (k.to_string(), v.trim_matches(['"', '\'']).to_string())
        })
        .collect()
}

#[test]
fn compose_file_agrees_with_postgres_conf() {
    let conf = conf_settings();
    let compose = compose_settings();
    assert!(
        conf.len() >= 4,
        "postgres.conf parsed to too few settings: {conf:?}"
    );
    for (k, v) in &conf {
        assert_eq!(
            compose.get(k),
            Some(v),
            "setting {k}: postgres.conf has {v}, the compose file {:?}",
            compose.get(k)
        );
    }
    for k in compose.keys() {
        assert!(
            conf.contains_key(k),
            "the compose file sets {k}, which setup/postgres.conf does not"
        );
    }
    // The seeds' four settings are among them.
    for (k, v) in [
        ("shared_buffers", "2GB"),
        ("effective_cache_size", "4GB"),
        ("maintenance_work_mem", "1GB"),
        ("work_mem", "64MB"),
    ] {
        assert_eq!(conf.get(k).map(String::as_str), Some(v), "{k}");
    }
}

#[test]
fn compose_gives_parallel_hnsw_builds_enough_shared_memory() {
    let compose = include_str!("../../docker-compose.capacity.yml");
    let shm = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("shm_size:"))
        .expect("shm_size is set")
        .trim()
        .to_string();
    let gib: f64 = shm.trim_end_matches("gb").parse().expect("shm_size in gb");
    let mwm = conf_settings()["maintenance_work_mem"]
        .trim_end_matches("GB")
        .parse::<f64>()
        .expect("maintenance_work_mem in GB");
    assert!(
        gib > mwm,
        "shm_size {shm} must exceed maintenance_work_mem ({mwm} GB): the parallel build allocates it in /dev/shm"
    );
}
