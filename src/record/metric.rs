//! What a record's figures are: every metric a bench or `load` writes, as a typed key with its unit
//! and how a comparison judges it — the one list the benches, `load`, the report and `compare`
//! share. On disk a metric is its name (`p99_ms`, `status_429`, `server_embed_p50_ms`, …), the
//! same names schema version 1 used.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A statistic of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stat {
    Min,
    P50,
    P66,
    P75,
    P80,
    P90,
    P95,
    P98,
    P99,
    P999,
    P9999,
    Max,
    Mean,
}

impl Stat {
    /// The percentiles `load` reports (Locust's columns, and p99.9 / p99.99), max included.
    pub const PERCENTILES: [Stat; 11] = [
        Stat::P50,
        Stat::P66,
        Stat::P75,
        Stat::P80,
        Stat::P90,
        Stat::P95,
        Stat::P98,
        Stat::P99,
        Stat::P999,
        Stat::P9999,
        Stat::Max,
    ];
    const ALL: [Stat; 13] = [
        Stat::Min,
        Stat::P50,
        Stat::P66,
        Stat::P75,
        Stat::P80,
        Stat::P90,
        Stat::P95,
        Stat::P98,
        Stat::P99,
        Stat::P999,
        Stat::P9999,
        Stat::Max,
        Stat::Mean,
    ];

    /// Its name in metric names: `p50`, `p999` (p99.9), `max`, `mean`, `min`.
    pub fn key(self) -> &'static str {
        match self {
            Stat::Min => "min",
            Stat::P50 => "p50",
            Stat::P66 => "p66",
            Stat::P75 => "p75",
            Stat::P80 => "p80",
            Stat::P90 => "p90",
            Stat::P95 => "p95",
            Stat::P98 => "p98",
            Stat::P99 => "p99",
            Stat::P999 => "p999",
            Stat::P9999 => "p9999",
            Stat::Max => "max",
            Stat::Mean => "mean",
        }
    }

    /// The quantile (0..=1; max is 1, min 0); `None` for the mean.
    pub fn quantile(self) -> Option<f64> {
        Some(match self {
            Stat::Min => 0.0,
            Stat::P50 => 0.50,
            Stat::P66 => 0.66,
            Stat::P75 => 0.75,
            Stat::P80 => 0.80,
            Stat::P90 => 0.90,
            Stat::P95 => 0.95,
            Stat::P98 => 0.98,
            Stat::P99 => 0.99,
            Stat::P999 => 0.999,
            Stat::P9999 => 0.9999,
            Stat::Max => 1.0,
            Stat::Mean => return None,
        })
    }

    /// The statistic of quantile `q`, when it is one of these.
    pub fn of_quantile(q: f64) -> Option<Stat> {
        Stat::ALL.into_iter().find(|s| s.quantile() == Some(q))
    }

    fn parse(key: &str) -> Option<Stat> {
        Stat::ALL.into_iter().find(|s| s.key() == key)
    }
}

/// The unit of a metric's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Milliseconds,
    Seconds,
    /// Per second (requests, queries, script evaluations, tokens).
    PerSecond,
    /// 0..=1 (recall, error rate).
    Fraction,
    /// One figure over another (× faster or slower).
    Ratio,
    /// Something counted: requests, attempts, users, ef_search.
    Count,
    /// 1 or 0.
    Flag,
    /// Bytes (an index's size).
    Bytes,
}

impl Unit {
    /// How a limit in this unit is written: `50 ms`, `1 %`, `1.5x`.
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Milliseconds => format!("{v} ms"),
            Unit::Seconds => format!("{v} s"),
            Unit::PerSecond => format!("{v}/s"),
            Unit::Fraction => format!("{} %", v * 100.0),
            Unit::Ratio => format!("{v}x"),
            Unit::Count | Unit::Flag => format!("{v}"),
            Unit::Bytes => format!("{v} B"),
        }
    }
}

/// How a comparison judges a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// A latency percentile (lower is better).
    Quantile(f64),
    /// The mean latency (lower is better).
    Mean,
    /// Throughput and the like (higher is better).
    HigherBetter,
    /// A latency without a histogram (lower is better).
    LowerBetter,
    /// recall@10: an absolute change beyond `recall_threshold` always counts.
    Recall,
    /// Failed requests / all: an absolute change beyond `error_rate_threshold` counts.
    ErrorRate,
    /// Not judged.
    Info,
}

/// One figure of a result entry. Ordered by name, so a record's figures are listed (and stored)
/// alphabetically, as schema version 1 listed them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Metric {
    /// A latency statistic, ms (`p99_ms`); in the open model corrected for coordinated omission.
    Latency(Stat),
    /// The open model's latency from each request's actual send time (`uncorrected_p99_ms`).
    Uncorrected(Stat),
    /// How late the open model's generator sent requests (`schedule_lateness_p99_ms`).
    ScheduleLateness(Stat),
    /// The service's own stage (`Server-Timing`), median ms (`server_embed_p50_ms`).
    ServerStageP50(String),
    /// Answers with this HTTP status (`status_429`).
    Status(u16),
    /// Requests (or queries, evaluations) measured.
    Count,
    /// Requests that failed.
    Failures,
    /// Failures / requests.
    ErrorRate,
    /// Requests per second.
    Rps,
    /// Queries per second (serial SQL).
    Qps,
    /// Script evaluations per second.
    EvalsPerSecond,
    /// Seconds measured (a round).
    Seconds,
    EfSearch,
    /// `ivfflat.probes`: IVFFlat lists scanned.
    Probes,
    /// Candidates a binary-quantized search takes from its index and re-ranks.
    Candidates,
    /// The index's size (`pg_relation_size`) and its build time (the CREATE INDEX statement).
    IndexBytes,
    BuildSeconds,
    /// The table's size (heap + TOAST, `pg_table_size`) and its rows (a scale point's dataset).
    TableBytes,
    Rows,
    /// Blocks per query found in shared_buffers (hits) and read from outside it, of the index and
    /// of the table (heap + TOAST), from pg_statio before and after a pass.
    IndexHitsPerQuery,
    IndexReadsPerQuery,
    TableHitsPerQuery,
    TableReadsPerQuery,
    /// recall@k over the query set: mean, and the worst query's.
    RecallMean,
    RecallMin,
    /// recall@k over another query distribution's set (`recall_mean_near-duplicate`): mean, worst.
    RecallMeanOf(String),
    RecallMinOf(String),
    /// Answers scored for recall (`load --recall`), and the distinct queries they answered.
    Scored,
    ScoredQueries,
    /// The share of queries that returned fewer rows than k (or than the filter matches, if fewer).
    ShortShare,
    /// Rows the filter matches / all rows.
    Selectivity,
    /// `hnsw.max_scan_tuples` the iterative scan ran with.
    MaxScanTuples,
    /// 1 when the planner, left alone, would answer this query without the HNSW index (an exact
    /// scan of the filter's matches).
    PlannerPrefersExact,
    /// Criterion's median time per iteration, ms.
    CriterionMedianMs,
    /// pgbench running the same statement: its average latency (ms) and transactions/s.
    PgbenchLatencyAvgMs,
    PgbenchTps,
    /// The same search as bare SQL, p50 ms; the service's overhead over it (ms and ratio).
    SqlP50Ms,
    OverheadP50Ms,
    OverheadRatio,
    /// redis-benchmark's p50 (ms) and rate on the same script, and capbench's p50 interleaved
    /// with it, and their ratio.
    RedisBenchmarkP50Ms,
    RedisBenchmarkRps,
    InterleavedP50Ms,
    RatioVsRedisBenchmark,
    /// capbench's mean latency (ms) interleaved with pgbench on the same SQL, and the median of the
    /// rounds' ratios capbench / pgbench.
    InterleavedMeanMs,
    RatioVsPgbench,
    /// Rows written per second (`cargo bench hnsw_insert`), and rows per statement.
    VectorsPerSecond,
    RowsPerStatement,
    /// PostgreSQL's own `COPY FROM` a server-side file of the same rows: its rate, and capbench's
    /// COPY's rate over it.
    ServerCopyVectorsPerSecond,
    RatioVsServerCopy,
    /// The DELETE of the rows a write bench added, and the VACUUM after it (s).
    DeleteSeconds,
    VacuumSeconds,
    /// Rows a phase of `cargo bench streaming` inserted, deleted or re-embedded.
    ChangedRows,
    /// A shaped load run's recovery after its spike: seconds from the load's return to the
    /// pre-spike level until p95 is within 1.2× of the pre-spike p95 and errors under 1 %.
    RecoverySeconds,
    /// The limiter timeline's bucket and traffic.
    Capacity,
    RefillPerSecond,
    SendRate,
    Attempts,
    DurationS,
    Allowed,
    Denied,
    TheoreticalAllowed,
    /// A sweep level: its users or connections, whether it met the objective, the objective.
    Users,
    Connections,
    MeetsSlo,
    SloP99Ms,
    /// A sweep's knee: the last level meeting the objective, its rate and p99.
    KneeUsers,
    KneeConnections,
    KneeRps,
    KneeP99Ms,
}

/// The metrics of one entry.
pub type Metrics = std::collections::BTreeMap<Metric, f64>;

/// The fixed names (the parameterised ones are built in [`Metric::fmt`] and parsed in
/// [`Metric::from_str`]).
const NAMED: [(&str, Metric); 61] = [
    ("count", Metric::Count),
    ("failures", Metric::Failures),
    ("error_rate", Metric::ErrorRate),
    ("rps", Metric::Rps),
    ("qps", Metric::Qps),
    ("evals_per_second", Metric::EvalsPerSecond),
    ("seconds", Metric::Seconds),
    ("ef_search", Metric::EfSearch),
    ("probes", Metric::Probes),
    ("candidates", Metric::Candidates),
    ("index_bytes", Metric::IndexBytes),
    ("build_seconds", Metric::BuildSeconds),
    ("table_bytes", Metric::TableBytes),
    ("rows", Metric::Rows),
    ("index_hits_per_query", Metric::IndexHitsPerQuery),
    ("index_reads_per_query", Metric::IndexReadsPerQuery),
    ("table_hits_per_query", Metric::TableHitsPerQuery),
    ("table_reads_per_query", Metric::TableReadsPerQuery),
    ("recall_mean", Metric::RecallMean),
    ("recall_min", Metric::RecallMin),
    ("scored", Metric::Scored),
    ("scored_queries", Metric::ScoredQueries),
    ("short_share", Metric::ShortShare),
    ("selectivity", Metric::Selectivity),
    ("max_scan_tuples", Metric::MaxScanTuples),
    ("planner_prefers_exact", Metric::PlannerPrefersExact),
    ("criterion_median_ms", Metric::CriterionMedianMs),
    ("pgbench_latency_avg_ms", Metric::PgbenchLatencyAvgMs),
    ("pgbench_tps", Metric::PgbenchTps),
    ("sql_p50_ms", Metric::SqlP50Ms),
    ("overhead_p50_ms", Metric::OverheadP50Ms),
    ("overhead_ratio", Metric::OverheadRatio),
    ("redis_benchmark_p50_ms", Metric::RedisBenchmarkP50Ms),
    ("redis_benchmark_rps", Metric::RedisBenchmarkRps),
    ("interleaved_p50_ms", Metric::InterleavedP50Ms),
    ("interleaved_mean_ms", Metric::InterleavedMeanMs),
    ("ratio_vs_pgbench", Metric::RatioVsPgbench),
    ("vectors_per_second", Metric::VectorsPerSecond),
    ("rows_per_statement", Metric::RowsPerStatement),
    (
        "server_copy_vectors_per_second",
        Metric::ServerCopyVectorsPerSecond,
    ),
    ("ratio_vs_server_copy", Metric::RatioVsServerCopy),
    ("delete_seconds", Metric::DeleteSeconds),
    ("vacuum_seconds", Metric::VacuumSeconds),
    ("changed_rows", Metric::ChangedRows),
    ("recovery_seconds", Metric::RecoverySeconds),
    ("ratio_vs_redis_benchmark", Metric::RatioVsRedisBenchmark),
    ("capacity", Metric::Capacity),
    ("refill_per_second", Metric::RefillPerSecond),
    ("send_rate", Metric::SendRate),
    ("attempts", Metric::Attempts),
    ("duration_s", Metric::DurationS),
    ("allowed", Metric::Allowed),
    ("denied", Metric::Denied),
    ("theoretical_allowed", Metric::TheoreticalAllowed),
    ("users", Metric::Users),
    ("connections", Metric::Connections),
    ("meets_slo", Metric::MeetsSlo),
    ("slo_p99_ms", Metric::SloP99Ms),
    ("knee_users", Metric::KneeUsers),
    ("knee_connections", Metric::KneeConnections),
    ("knee_rps", Metric::KneeRps),
];

impl Metric {
    pub const P50_MS: Metric = Metric::Latency(Stat::P50);
    pub const P95_MS: Metric = Metric::Latency(Stat::P95);
    pub const P99_MS: Metric = Metric::Latency(Stat::P99);
    pub const MEAN_MS: Metric = Metric::Latency(Stat::Mean);

    /// A sweep's level metric for its unit (`users`, `connections`).
    pub fn level(unit: &str) -> Option<Metric> {
        match unit {
            "users" => Some(Metric::Users),
            "connections" => Some(Metric::Connections),
            _ => None,
        }
    }

    /// The knee's level metric for a sweep's unit (`knee_users`, `knee_connections`).
    pub fn knee_level(unit: &str) -> Option<Metric> {
        match unit {
            "users" => Some(Metric::KneeUsers),
            "connections" => Some(Metric::KneeConnections),
            _ => None,
        }
    }

    pub fn unit(&self) -> Unit {
        use Metric::*;
        match self {
            Latency(_) | Uncorrected(_) | ScheduleLateness(_) | ServerStageP50(_)
            | CriterionMedianMs | PgbenchLatencyAvgMs | SqlP50Ms | OverheadP50Ms
            | RedisBenchmarkP50Ms | InterleavedP50Ms | InterleavedMeanMs | SloP99Ms | KneeP99Ms => {
                Unit::Milliseconds
            }
            Seconds | DurationS | BuildSeconds | DeleteSeconds | VacuumSeconds
            | RecoverySeconds => Unit::Seconds,
            IndexBytes | TableBytes => Unit::Bytes,
            Rps
            | Qps
            | EvalsPerSecond
            | PgbenchTps
            | RedisBenchmarkRps
            | RefillPerSecond
            | SendRate
            | KneeRps
            | VectorsPerSecond
            | ServerCopyVectorsPerSecond => Unit::PerSecond,
            ErrorRate | RecallMean | RecallMin | RecallMeanOf(_) | RecallMinOf(_) | ShortShare
            | Selectivity => Unit::Fraction,
            OverheadRatio | RatioVsRedisBenchmark | RatioVsPgbench | RatioVsServerCopy => {
                Unit::Ratio
            }
            MeetsSlo | PlannerPrefersExact => Unit::Flag,
            MaxScanTuples | Scored | ScoredQueries | Status(_) | Count | Failures | EfSearch
            | Probes | Candidates | IndexHitsPerQuery | IndexReadsPerQuery | TableHitsPerQuery
            | TableReadsPerQuery | Rows | Capacity | Attempts | Allowed | Denied
            | TheoreticalAllowed | Users | Connections | KneeUsers | KneeConnections
            | RowsPerStatement | ChangedRows => Unit::Count,
        }
    }

    /// Whether it counts something (requests, attempts, users…): shown as an integer.
    pub fn is_count(&self) -> bool {
        matches!(self.unit(), Unit::Count | Unit::Flag | Unit::Bytes)
    }

    /// How a comparison judges it; `None` for figures that describe the setup, not the result
    /// (counts, ef_search, the bucket, the SLO, a sweep level).
    pub fn rule(&self) -> Option<Rule> {
        use Metric::*;
        Some(match self {
            Count | Scored | ScoredQueries | EfSearch | Users | Connections | SloP99Ms
            | Capacity | RefillPerSecond | SendRate | Attempts | DurationS | Selectivity
            | MaxScanTuples | Probes | Candidates | Rows | RowsPerStatement | ChangedRows => {
                return None;
            }
            Latency(s @ (Stat::P50 | Stat::P95 | Stat::P99)) => {
                Rule::Quantile(s.quantile().expect("a percentile"))
            }
            Latency(Stat::Mean) => Rule::Mean,
            Qps | Rps | EvalsPerSecond | KneeRps | KneeUsers | KneeConnections
            | VectorsPerSecond => Rule::HigherBetter,
            RecallMean | RecallMeanOf(_) => Rule::Recall,
            ErrorRate | ShortShare => Rule::ErrorRate,
            _ => Rule::Info,
        })
    }

    /// Whether it decides its benchmark's verdict: p50, p99, the rates, recall and the error
    /// rate. The others are shown with their intervals but do not vote (fewer decisions, more
    /// power for the ones that matter).
    pub fn is_primary(&self) -> bool {
        use Metric::*;
        matches!(
            self,
            Latency(Stat::P50 | Stat::P99)
                | Qps
                | Rps
                | EvalsPerSecond
                | VectorsPerSecond
                | KneeRps
                | KneeUsers
                | KneeConnections
                | RecallMean
                | RecallMeanOf(_)
                | ErrorRate
        )
    }
}

impl Ord for Metric {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Names are unique (tested), so this agrees with equality.
        self.to_string().cmp(&other.to_string())
    }
}

impl PartialOrd for Metric {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Latency(s) => write!(f, "{}_ms", s.key()),
            Metric::Uncorrected(s) => write!(f, "uncorrected_{}_ms", s.key()),
            Metric::ScheduleLateness(s) => write!(f, "schedule_lateness_{}_ms", s.key()),
            Metric::ServerStageP50(stage) => write!(f, "server_{stage}_p50_ms"),
            Metric::Status(code) => write!(f, "status_{code}"),
            Metric::KneeP99Ms => f.write_str("knee_p99_ms"),
            Metric::RecallMeanOf(d) => write!(f, "recall_mean_{d}"),
            Metric::RecallMinOf(d) => write!(f, "recall_min_{d}"),
            named => {
                let (name, _) = NAMED
                    .iter()
                    .find(|(_, m)| m == named)
                    .expect("every other metric has a fixed name");
                f.write_str(name)
            }
        }
    }
}

/// A metric name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric '{0}'")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(name: &str) -> Result<Self, UnknownMetric> {
        if let Some((_, m)) = NAMED.iter().find(|(n, _)| *n == name) {
            return Ok(m.clone());
        }
        if name == "knee_p99_ms" {
            return Ok(Metric::KneeP99Ms);
        }
        if let Some(d) = name.strip_prefix("recall_mean_").filter(|d| !d.is_empty()) {
            return Ok(Metric::RecallMeanOf(d.to_string()));
        }
        if let Some(d) = name.strip_prefix("recall_min_").filter(|d| !d.is_empty()) {
            return Ok(Metric::RecallMinOf(d.to_string()));
        }
        let stat = |prefix: &str| {
            name.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix("_ms"))
                .and_then(Stat::parse)
        };
        let parsed = if let Some(s) = stat("uncorrected_") {
            Some(Metric::Uncorrected(s))
        } else if let Some(s) = stat("schedule_lateness_") {
            Some(Metric::ScheduleLateness(s))
        } else if let Some(s) = stat("") {
            Some(Metric::Latency(s))
        } else if let Some(code) = name.strip_prefix("status_") {
            code.parse().ok().map(Metric::Status)
        } else {
            name.strip_prefix("server_")
                .and_then(|r| r.strip_suffix("_p50_ms"))
                .filter(|stage| !stage.is_empty())
                .map(|stage| Metric::ServerStageP50(stage.to_string()))
        };
        parsed.ok_or_else(|| UnknownMetric(name.to_string()))
    }
}

impl From<Metric> for String {
    fn from(m: Metric) -> String {
        m.to_string()
    }
}

impl TryFrom<String> for Metric {
    type Error = UnknownMetric;

    fn try_from(name: String) -> Result<Self, UnknownMetric> {
        name.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_metric() -> Vec<Metric> {
        let mut all: Vec<Metric> = NAMED.iter().map(|(_, m)| m.clone()).collect();
        for s in Stat::ALL {
            all.extend([
                Metric::Latency(s),
                Metric::Uncorrected(s),
                Metric::ScheduleLateness(s),
            ]);
        }
        all.extend([
            Metric::KneeP99Ms,
            Metric::Status(429),
            Metric::ServerStageP50("embed".into()),
            Metric::ServerStageP50("db_pool".into()),
            Metric::RecallMeanOf("near-duplicate".into()),
            Metric::RecallMinOf("ood".into()),
        ]);
        all
    }

    #[test]
    fn every_metric_keeps_its_name_through_text_and_json() {
        let all = every_metric();
        let mut names: Vec<String> = all.iter().map(Metric::to_string).collect();
        for (m, name) in all.iter().zip(&names) {
            assert_eq!(&name.parse::<Metric>().unwrap(), m, "{name}");
            let json = serde_json::to_string(&Metrics::from([(m.clone(), 1.0)])).unwrap();
            assert_eq!(json, format!("{{\"{name}\":1.0}}"));
            assert_eq!(serde_json::from_str::<Metrics>(&json).unwrap()[m], 1.0);
        }
        let mut sorted = all.clone();
        sorted.sort();
        let by_name: Vec<String> = sorted.iter().map(Metric::to_string).collect();
        names.sort();
        assert_eq!(by_name, names, "metrics are ordered by name");
        names.dedup();
        assert_eq!(names.len(), all.len(), "two metrics share a name");
    }

    #[test]
    fn the_names_are_schema_version_1s() {
        for (name, m) in [
            ("p99_ms", Metric::P99_MS),
            ("p999_ms", Metric::Latency(Stat::P999)),
            ("mean_ms", Metric::MEAN_MS),
            ("min_ms", Metric::Latency(Stat::Min)),
            ("uncorrected_p9999_ms", Metric::Uncorrected(Stat::P9999)),
            (
                "schedule_lateness_p50_ms",
                Metric::ScheduleLateness(Stat::P50),
            ),
            (
                "server_total_p50_ms",
                Metric::ServerStageP50("total".into()),
            ),
            ("status_200", Metric::Status(200)),
            ("knee_p99_ms", Metric::KneeP99Ms),
            ("sql_p50_ms", Metric::SqlP50Ms),
        ] {
            assert_eq!(name.parse::<Metric>(), Ok(m), "{name}");
        }
        for unknown in ["p97_ms", "status_abc", "server__p50_ms", "latency", ""] {
            assert_eq!(
                unknown.parse::<Metric>(),
                Err(UnknownMetric(unknown.into()))
            );
        }
    }

    #[test]
    fn units_and_rules_follow_the_metric() {
        assert!(Metric::Status(429).is_count() && Metric::Attempts.is_count());
        assert!(!Metric::Rps.is_count() && !Metric::P99_MS.is_count());
        assert_eq!(Metric::P99_MS.rule(), Some(Rule::Quantile(0.99)));
        assert_eq!(Metric::Latency(Stat::P999).rule(), Some(Rule::Info));
        assert_eq!(Metric::EfSearch.rule(), None);
        assert_eq!(Metric::RecallMean.unit(), Unit::Fraction);
        assert!(Metric::ErrorRate.is_primary() && !Metric::P95_MS.is_primary());
        // Every judged metric that votes has a rule that judges it.
        for m in every_metric().iter().filter(|m| m.is_primary()) {
            assert!(!matches!(m.rule(), None | Some(Rule::Info)), "{m}");
        }
        assert_eq!(Unit::Fraction.show(0.01), "1 %");
        assert_eq!(Stat::of_quantile(0.99), Some(Stat::P99));
        assert_eq!(Stat::of_quantile(0.97), None);
    }
}
