//! Schema version 1 → 2, the one migration: records written before gates were typed still load,
//! so a user's history and baselines keep working.
//!
//! Version 1 stored the same kind, parameters and metric names; its gates were a text and a pass
//! flag. The upgrade gives each gate the kind its text names — the texts capbench wrote were
//! fixed formats, so this is the one place where a gate's words are read — and, for the seeds'
//! `p99 < N ms` gates and the redis-benchmark ratio, the check with the entry's own figure. A
//! `load --threshold` gate keeps no check: version 1 did not record its bound as a number.

use serde_json::{Value, json};

/// Version 1's record as version 2's (in place of the JSON; the caller deserialises it).
pub fn upgrade(mut record: Value) -> Value {
    if let Some(entries) = record.get_mut("results").and_then(Value::as_array_mut) {
        for entry in entries {
            let metric = |name: &str| entry.get("metrics").and_then(|m| m.get(name)).cloned();
            let (p99, ratio) = (metric("p99_ms"), metric("ratio_vs_redis_benchmark"));
            let Some(gates) = entry.get_mut("gates").and_then(Value::as_array_mut) else {
                continue;
            };
            for gate in gates {
                let name = gate.get("name").and_then(Value::as_str).unwrap_or("");
                let (kind, check) = typed(name, p99.as_ref(), ratio.as_ref());
                if let Value::Object(fields) = gate {
                    fields.insert("kind".into(), kind.into());
                    if let Some(check) = check {
                        fields.insert("check".into(), check);
                    }
                }
            }
        }
    }
    if let Value::Object(fields) = &mut record {
        fields.insert("schema_version".into(), 2.into());
    }
    record
}

/// The kind (and the check, where the text states one) of a version-1 gate named `name`.
fn typed(name: &str, p99: Option<&Value>, ratio: Option<&Value>) -> (&'static str, Option<Value>) {
    let limit_before = |text: &str, suffix: &str| -> Option<f64> {
        text.split_once(suffix)?.0.trim().parse().ok()
    };
    // The seeds' gate, raw (`p99 < 50 ms`) and under the capacity sweep (`… with 20 users`).
    if let Some(limit) = name
        .strip_prefix("p99 < ")
        .and_then(|rest| limit_before(rest, " ms"))
    {
        let check = json!({"metric": "p99_ms", "op": "<", "limit": limit,
            "unit": "milliseconds", "observed": p99});
        return ("latency", Some(check));
    }
    // The rate_limit bench: `p50 within 1.3x of redis-benchmark`.
    if let Some(limit) = name
        .strip_prefix("p50 within ")
        .and_then(|rest| limit_before(rest, "x of redis-benchmark"))
    {
        let check = json!({"metric": "ratio_vs_redis_benchmark", "op": "<=", "limit": limit,
            "unit": "ratio", "observed": ratio});
        return ("comparison", Some(check));
    }
    if name.starts_with("some level meets") {
        return ("capacity", None);
    }
    // The limiter timeline's promises: `a. a full bucket admits …` to `g. …`.
    let mut chars = name.chars();
    if let (Some('a'..='g'), Some('.')) = (chars.next(), chars.next()) {
        return ("limiter", None);
    }
    // `load --threshold` texts: METRIC[NAME]<OP>VALUE.
    let metric: String = name
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect::<String>()
        .to_ascii_lowercase();
    let kind = match metric.as_str() {
        "error_rate" | "errors" | "failure_rate" | "failures" => "error_rate",
        "rps" | "throughput" | "requests" | "count" => "throughput",
        _ if name.to_lowercase().contains("error") || name.contains("fail") => "error_rate",
        _ => "latency",
    };
    (kind, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gate_text_version_1_wrote_gets_its_kind() {
        let kind = |name| typed(name, None, None).0;
        assert_eq!(kind("p99 < 50 ms"), "latency");
        assert_eq!(kind("p99 < 50 ms with 20 users"), "latency");
        assert_eq!(kind("p50 within 1.3x of redis-benchmark"), "comparison");
        assert_eq!(kind("some level meets p99 < 30 ms"), "capacity");
        assert_eq!(
            kind("a. a full bucket admits a burst of exactly its capacity (10)"),
            "limiter"
        );
        assert_eq!(kind("c. over 4.0 s at 25/s, admitted = …"), "limiter");
        assert_eq!(kind("error_rate<1%"), "error_rate");
        assert_eq!(kind("failures[/api]<=3"), "error_rate");
        assert_eq!(kind("rps>100"), "throughput");
        assert_eq!(kind("p95[/api/v1/traces/search]<=2s"), "latency");
        assert_eq!(kind("avg<10ms"), "latency");
    }

    #[test]
    fn the_seeds_gate_gets_its_check_with_the_entrys_own_figure() {
        let v1 = json!({"schema_version": 1, "kind": "hnsw", "results": [
            {"name": "hnsw/ef_search/40", "metrics": {"p99_ms": 3.5},
             "gates": [{"name": "p99 < 50 ms", "pass": true}]}]});
        let v2 = upgrade(v1);
        assert_eq!(v2["schema_version"], 2);
        assert_eq!(
            v2["results"][0]["gates"][0],
            json!({"name": "p99 < 50 ms", "pass": true, "kind": "latency",
                "check": {"metric": "p99_ms", "op": "<", "limit": 50.0,
                    "unit": "milliseconds", "observed": 3.5}})
        );
    }
}
