//! The run record of a `load` invocation: its parameters, the target (redacted), the servers'
//! environment, and per request name (and in total) the figures, the corrected histogram, the
//! thresholds as gates and the per-second series the report draws.

use std::collections::BTreeMap;

use anyhow::Result;

use super::args::LoadArgs;
use super::scenario::Target;
use super::stats::{Entry, PERCENTILES, Stats, quantile};
use super::threshold::ThresholdCheck;
use super::{LoadOutcome, sweep};
use crate::config::Distribution;
use crate::record::{
    Environment, LoadModel, LoadParameters, Metric, Metrics, Parameters, ResultEntry, RunRecord,
    Stat, encode_histogram,
};

/// The figures of one entry as run-record metrics; `scored`: the query set its answers were scored
/// against (`--recall`), whose name the recall figures carry.
pub fn metrics_of(
    stats: &Stats,
    e: &Entry,
    open_model: bool,
    scored: Option<Distribution>,
) -> Metrics {
    let mut m = Metrics::new();
    if let (Some(d), Some(mean), Some(min)) = (scored, e.recall.mean(), e.recall.min()) {
        m.insert(Metric::RecallMeanOf(d.name().into()), mean);
        m.insert(Metric::RecallMinOf(d.name().into()), min);
        m.insert(Metric::Scored, e.recall.scored as f64);
        m.insert(Metric::ScoredQueries, e.recall.queries() as f64);
    }
    for (s, _) in PERCENTILES {
        m.insert(Metric::Latency(s), e.ms(quantile(s)));
        if open_model {
            m.insert(Metric::Uncorrected(s), e.uncorrected_ms(quantile(s)));
        }
    }
    m.insert(Metric::MEAN_MS, e.mean_ms());
    m.insert(Metric::Latency(Stat::Min), e.min_ms());
    m.insert(Metric::Count, e.requests as f64);
    m.insert(Metric::Failures, e.failures as f64);
    m.insert(Metric::ErrorRate, e.error_rate());
    m.insert(Metric::Rps, stats.rps(e));
    if e.method.is_empty()
        && let Some(Some(seconds)) = stats.recovery
    {
        m.insert(Metric::RecoverySeconds, seconds);
    }
    if e.rows > 0 {
        m.insert(Metric::ChangedRows, e.rows as f64);
        m.insert(Metric::VectorsPerSecond, stats.vectors_per_second(e));
    }
    for (status, n) in &e.statuses {
        m.insert(Metric::Status(*status), *n as f64);
    }
    // How late requests went out after their due time: the open model's arrivals, and writers
    // (`--write-rate`) in either model — each name its own, the total over all.
    if open_model || super::ingest::is_insert(e) {
        let h = if e.method.is_empty() {
            &stats.lateness
        } else {
            &e.lateness
        };
        for s in [Stat::P50, Stat::P99] {
            m.insert(
                Metric::ScheduleLateness(s),
                h.value_at_quantile(quantile(s)) as f64 / 1e6,
            );
        }
    }
    m
}

/// The run record: what was measured, on what, with which parameters. Reading the servers'
/// versions and settings may fail or hang (a server gone since the run): that is noted in the
/// record's `environment_unread`, and never loses the measurement.
pub(super) async fn build_record(
    args: &LoadArgs,
    target: &Target,
    db_url: Option<&str>,
    redis_url: Option<&str>,
    outcome: &LoadOutcome,
    scenario_digest: Option<String>,
    write_table_rows: Option<u64>,
) -> Result<RunRecord> {
    let (environment, unread) = Environment::of_servers("load", db_url, redis_url).await;
    let model = if outcome.swept {
        LoadModel::Sweep
    } else if args.open_model() {
        LoadModel::Open
    } else {
        LoadModel::Closed
    };
    let mut rec = RunRecord::new(
        environment,
        Parameters::Load(LoadParameters {
            model,
            target: match target {
                Target::Http { base, .. } => crate::secrets::redact(base),
                Target::Database { url, .. } => crate::secrets::redact(url),
            },
            in_process: args.target.is_none() && args.config.service.target_url.is_none(),
            scenario: args.scenario.to_string(),
            scenario_sha256: scenario_digest,
            scenario_seed: args.scenario_seed,
            users: args.users,
            rate: args.rate,
            sweep: args.sweep.clone(),
            slo_p99_ms: args.slo_p99,
            run_time_s: args
                .run_time
                .or(args.shape().map(|s| s.total()))
                .map(|d| d.as_secs_f64()),
            stages: args.shape().map(|s| s.to_string()),
            max_requests: args.max_requests,
            ef_search: args.config.service.search_ef_search,
            query_set: args
                .recall
                .then(|| args.config.bench.query_set.name().to_string()),
            quick: args.config.bench.quick,
            environment_unread: unread,
            write_rate: args.write_rate,
            write_batch: args.write_rate.map(|_| args.write_batch),
            writers: args.write_rate.map(|_| args.writers),
            write_table: write_table_rows.is_some(),
        }),
    );
    rec.interrupted = outcome.interrupted().is_some();
    let scored = args.recall.then_some(args.config.bench.query_set);
    if db_url.is_some() {
        rec.dataset = Some(crate::dataset::identity(
            &args.config.dataset,
            &args.config.index,
        ));
    }
    if outcome.swept {
        let (group, unit) = target.sweep_names();
        rec.results = sweep::entries(
            &outcome.finished,
            outcome.knee.as_ref(),
            args.slo_p99,
            group,
            unit,
            scored,
        )?;
        return Ok(rec);
    }
    let open_model = args.open_model();
    for (_, done) in &outcome.finished {
        let stats = &done.stats;
        for e in stats.entries_and_total() {
            let mut entry = ResultEntry {
                name: format!("load/{}", e.name),
                metrics: metrics_of(stats, e, open_model, scored),
                histogram: Some(encode_histogram(&e.corrected)?),
                ..ResultEntry::default()
            };
            let is_total = e.method.is_empty();
            entry.gates = outcome
                .verdicts
                .iter()
                .filter(|v| match &v.threshold.name {
                    None => is_total,
                    Some(n) => !is_total && n == &e.name,
                })
                .map(ThresholdCheck::gate)
                .collect();
            entry.series = if is_total {
                let mut series = history_series(stats);
                if let Some(shape) = args.shape() {
                    series.insert("target_per_second".into(), shape_series(stats, shape));
                    // Each stage's start (s) and number (0-based), for the charts' marks.
                    series.insert(
                        "stage_starts".into(),
                        shape
                            .bounds()
                            .enumerate()
                            .map(|(i, (start, _))| (start, i as f64))
                            .collect(),
                    );
                }
                series
            } else {
                entry_series(stats, e, write_table_rows)
            };
            rec.results.push(entry);
        }
    }
    Ok(rec)
}

/// The write table's restore after a run that wrote: the rows deleted, the DELETE's and the
/// VACUUM's time.
pub fn restore_entry(r: &super::ingest::Restore) -> ResultEntry {
    ResultEntry {
        name: RESTORE_ID.into(),
        metrics: [
            (Metric::ChangedRows, r.rows as f64),
            (Metric::DeleteSeconds, r.delete_seconds),
            (Metric::VacuumSeconds, r.vacuum_seconds),
        ]
        .into(),
        ..ResultEntry::default()
    }
}

/// The record entry of the write table's restore.
pub const RESTORE_ID: &str = "load/write_table/restore";

/// One request name's per-second series: requests/s and p99 (last 10 s); recall (last 10 s) when
/// its answers were scored; for a name that writes, the rows in the table (`table_rows`, from
/// `dataset_rows` when known, else the rows it added).
pub fn entry_series(
    stats: &Stats,
    e: &Entry,
    dataset_rows: Option<u64>,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let rows: Vec<_> = stats.history_of(&e.name).collect();
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    out.insert(
        "rps_per_second".into(),
        rows.iter().map(|r| (r.elapsed, r.rps)).collect(),
    );
    // A second whose last 10 s saw none of these requests has no p99 (not 0 ms).
    out.insert(
        "p99_ms_per_second".into(),
        rows.iter()
            .map(|r| (r.elapsed, r.percentile(Stat::P99)))
            .filter(|p| p.1 > 0.0)
            .collect(),
    );
    let recall: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| Some((r.elapsed, r.recall?)))
        .collect();
    if !recall.is_empty() {
        out.insert("recall_per_second".into(), recall);
    }
    if e.rows > 0 {
        let base = dataset_rows.unwrap_or(0) as f64;
        out.insert(
            "table_rows".into(),
            std::iter::once((0.0, base))
                .chain(rows.iter().map(|r| (r.elapsed, base + r.total_rows as f64)))
                .collect(),
        );
    }
    out
}

/// The stages' target (users, or arrivals/s) at the start and at every second of the history.
pub fn shape_series(stats: &Stats, shape: &super::shape::Stages) -> Vec<(f64, f64)> {
    std::iter::once(0.0)
        .chain(stats.total_history().map(|r| r.elapsed))
        .map(|t| (t, shape.target_at(std::time::Duration::from_secs_f64(t))))
        .collect()
}

/// Aggregated requests/s and p99 (last 10 s) per second.
pub fn history_series(stats: &Stats) -> BTreeMap<String, Vec<(f64, f64)>> {
    let rows: Vec<_> = stats.total_history().collect();
    [
        (
            "rps_per_second",
            rows.iter().map(|r| (r.elapsed, r.rps)).collect(),
        ),
        (
            "p99_ms_per_second",
            rows.iter()
                .map(|r| (r.elapsed, r.percentile(Stat::P99)))
                .collect(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
