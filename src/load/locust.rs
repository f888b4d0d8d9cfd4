//! Locust's CSV files — `_stats.csv`, `_stats_history.csv`, `_failures.csv`, `_exceptions.csv` —
//! with Locust 2.x's columns, from what a run measured ([`Stats`]), so that tooling made for
//! Locust reads capbench's runs.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use super::stats::{PERCENTILES, Stats, quantile};

/// Locust 2.x `_stats.csv` header.
pub const STATS_HEADER: &str = "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%";
/// Locust 2.x `_stats_history.csv` header.
pub const HISTORY_HEADER: &str = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,Total Min Response Time,Total Max Response Time,Total Average Content Size";
/// Locust 2.x `_failures.csv` header.
pub const FAILURES_HEADER: &str = "Method,Name,Error,Occurrences,First Seen,Last Seen";
/// Locust 2.x `_exceptions.csv` header (capbench raises none; the file is written for tooling).
pub const EXCEPTIONS_HEADER: &str = "Count,Message,Traceback,Nodes";

/// Writes `PREFIX_stats.csv`, `PREFIX_stats_history.csv`, `PREFIX_failures.csv` and
/// `PREFIX_exceptions.csv` with Locust's columns (times in ms, unrounded; in the open model the
/// percentiles are the corrected ones). `full_history`: every name's rows, not only Aggregated.
pub fn write_csv(stats: &Stats, prefix: &Path, full_history: bool) -> Result<Vec<PathBuf>> {
    let name = |suffix: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let files = [
        ("_stats.csv", STATS_HEADER, stats_rows(stats)),
        (
            "_stats_history.csv",
            HISTORY_HEADER,
            history_rows(stats, full_history),
        ),
        ("_failures.csv", FAILURES_HEADER, failure_rows(stats)),
        ("_exceptions.csv", EXCEPTIONS_HEADER, Vec::new()),
    ];
    let mut written = Vec::new();
    for (suffix, header, rows) in files {
        let path = name(suffix);
        let text = csv_text(header, &rows).with_context(|| format!("{}", path.display()))?;
        written.push(write_atomic(&path, &text)?);
    }
    Ok(written)
}

/// `_stats.csv`'s rows: every name, then Aggregated.
fn stats_rows(stats: &Stats) -> Vec<Vec<String>> {
    let secs = stats.elapsed().as_secs_f64().max(1e-9);
    stats
        .entries_and_total()
        .map(|e| {
            let mut row = vec![
                e.method.clone(),
                e.name.clone(),
                e.requests.to_string(),
                e.failures.to_string(),
                num(e.ms(0.5)),
                num(e.mean_ms()),
                num(e.min_ms()),
                num(e.ms(1.0)),
                num(if e.requests == 0 {
                    0.0
                } else {
                    e.bytes as f64 / e.requests as f64
                }),
                num(stats.rps(e)),
                num(e.failures as f64 / secs),
            ];
            row.extend(PERCENTILES.iter().map(|(s, _)| {
                if e.requests == 0 {
                    "N/A".to_string()
                } else {
                    num(e.ms(quantile(*s)))
                }
            }));
            row
        })
        .collect()
}

/// `_stats_history.csv`'s rows: a second each (Aggregated only unless `full_history`).
fn history_rows(stats: &Stats, full_history: bool) -> Vec<Vec<String>> {
    stats
        .history
        .iter()
        .filter(|r| full_history || r.method.is_empty())
        .map(|r| {
            let mut row = vec![
                r.unix_seconds.to_string(),
                r.users.to_string(),
                r.method.clone(),
                r.name.clone(),
                format!("{:.6}", r.rps),
                format!("{:.6}", r.fps),
            ];
            row.extend(r.percentiles.iter().map(|p| {
                if r.total_requests == 0 {
                    "N/A".to_string()
                } else {
                    num(*p)
                }
            }));
            row.extend([
                r.total_requests.to_string(),
                r.total_failures.to_string(),
                num(r.total_median_ms),
                num(r.total_mean_ms),
                num(r.total_min_ms),
                num(r.total_max_ms),
                num(r.total_mean_bytes),
            ]);
            row
        })
        .collect()
}

/// `_failures.csv`'s rows, in [`Stats::failure_table`]'s order.
fn failure_rows(stats: &Stats) -> Vec<Vec<String>> {
    stats
        .failure_table()
        .into_iter()
        .map(|(method, name, error, f)| {
            vec![
                method.to_string(),
                name.to_string(),
                error,
                f.occurrences.to_string(),
                rfc3339(f.first_seen),
                rfc3339(f.last_seen),
            ]
        })
        .collect()
}

/// A number as Locust's readers expect it: plain decimal, no exponent.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A CSV file as Locust's Python `csv` module writes one (fields quoted only when they hold a
/// comma, a quote or a line break), with `\n` line ends; every row as wide as the header.
fn csv_text(header: &str, rows: &[Vec<String>]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header.split(','))?;
    for row in rows {
        w.write_record(row)?;
    }
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {}", e.error()))
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as Locust's `First Seen` / `Last Seen`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Complete or not at all: a temporary file renamed into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::failure::Failure;
    use crate::load::stats::RequestOutcome;
    use std::time::{Duration, Instant};

    /// The quoting `stats.rs` wrote by hand before the `csv` crate (RFC 4180, when needed).
    fn hand_quoted(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(1.25), "1.25");
        assert_eq!(num(0.0000004), "0");
    }

    #[test]
    fn fields_are_quoted_as_before() {
        let fields = [
            "",
            "plain",
            "a,b",
            "say \"hi\"",
            "two\nlines",
            "cr\rhere",
            "/api/v1/traces/search [realistic]",
            "error sending request for url (http://127.0.0.1:9/api/v1/keys): refused",
            "#hash",
            " spaced ",
        ];
        let row: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let text = csv_text("A,B,C,D,E,F,G,H,I,J", &[row]).unwrap();
        let expected = format!(
            "A,B,C,D,E,F,G,H,I,J\n{}\n",
            fields
                .iter()
                .map(|f| hand_quoted(f))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(String::from_utf8(text).unwrap(), expected);
        assert_eq!(hand_quoted("a,b"), "\"a,b\"");
        assert_eq!(hand_quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn a_row_narrower_than_its_header_is_an_error() {
        assert!(csv_text("A,B", &[vec!["1".to_string()]]).is_err());
    }

    #[test]
    fn times_are_rfc3339_to_the_second() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_750);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    fn outcome(name: &'static str, at: Instant, failure: Option<Failure>) -> RequestOutcome {
        RequestOutcome {
            method: "POST",
            name: name.into(),
            intended: at,
            sent: at,
            done: at + Duration::from_millis(3),
            status: Some(200),
            failure,
            bytes: 10,
            recall: None,
            rows: 0,
        }
    }

    #[test]
    fn failures_are_counted_per_method_name_and_failure_and_listed_by_text() {
        let mut stats = Stats::new();
        let at = stats.started;
        for failure in [
            Some(Failure::Status(503)),
            None,
            Some(Failure::Connect("refused, \"twice\"".into())),
            Some(Failure::Status(503)),
            Some(Failure::Expectation("Unexpected status 500".into())),
            Some(Failure::Status(502)),
        ] {
            stats.add(&outcome("/search", at, failure));
        }
        assert_eq!(stats.total.requests, 6);
        assert_eq!(stats.total.failures, 5);
        assert_eq!(stats.failures.len(), 4);
        assert_eq!(
            stats.failures[&("POST", "/search".into(), Failure::Status(503))].occurrences,
            2
        );
        let texts: Vec<String> = stats
            .failure_table()
            .into_iter()
            .map(|(_, _, text, _)| text)
            .collect();
        assert_eq!(
            texts,
            [
                "HTTP 502",
                "HTTP 503",
                "Unexpected status 500",
                "refused, \"twice\""
            ]
        );

        let dir = std::env::temp_dir().join(format!("capbench-stats-csv-{}", std::process::id()));
        let files = write_csv(&stats, &dir.join("run"), false).unwrap();
        assert_eq!(files.len(), 4);
        let failures = std::fs::read_to_string(dir.join("run_failures.csv")).unwrap();
        let row = &stats.failures[&("POST", "/search".into(), Failure::Status(503))];
        assert_eq!(row.first_seen, row.last_seen);
        let seen = rfc3339(row.first_seen);
        let lines: Vec<&str> = failures.lines().collect();
        assert_eq!(lines[0], FAILURES_HEADER);
        assert_eq!(lines[2], format!("POST,/search,HTTP 503,2,{seen},{seen}"));
        assert_eq!(
            lines[4],
            format!("POST,/search,\"refused, \"\"twice\"\"\",1,{seen},{seen}")
        );
        assert!(failures.ends_with('\n') && !failures.contains('\r'));
        let exceptions = std::fs::read_to_string(dir.join("run_exceptions.csv")).unwrap();
        assert_eq!(exceptions, format!("{EXCEPTIONS_HEADER}\n"));
        let stats_csv = std::fs::read_to_string(dir.join("run_stats.csv")).unwrap();
        let rows: Vec<&str> = stats_csv.lines().collect();
        assert_eq!(rows[0], STATS_HEADER);
        let cells: Vec<&str> = rows[1].split(',').collect();
        assert_eq!(cells.len(), STATS_HEADER.split(',').count());
        assert_eq!(cells[..4], ["POST", "/search", "6", "5"]);
        assert_eq!(cells[8], "10", "average content size");
        assert!(rows[2].starts_with(",Aggregated,6,5,"), "{}", rows[2]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
