//! A concurrency sweep: one closed-model run per number of users, and its knee — the highest
//! throughput whose p99 still meets the objective, with fewer than 1 % of requests failing.

use anyhow::Result;

use super::model::Finished;
use super::stats::Stats;
use super::threshold::DEFAULT_MAX_ERROR_RATE;
use crate::record::{self, Gate, GateKind, Metric, Metrics, ResultEntry};

/// One level's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub users: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub error_rate: f64,
    pub requests: u64,
    /// The mean recall of the answers scored (`--recall`), and how many of the set's queries
    /// they answered.
    pub recall_mean: Option<f64>,
    pub recall_queries: usize,
}

impl Level {
    pub fn of(users: u64, stats: &Stats) -> Self {
        let t = &stats.total;
        Self {
            users,
            rps: stats.rps(t),
            p50_ms: t.ms(0.5),
            p99_ms: t.ms(0.99),
            error_rate: t.error_rate(),
            requests: t.requests,
            recall_mean: t.recall.mean(),
            recall_queries: t.recall.queries(),
        }
    }

    /// Whether the level meets [`objective`]: it ran, its p99 is within the objective, and fewer
    /// than 1 % of its requests failed (fast failures are no capacity).
    pub fn meets(&self, slo_p99_ms: f64) -> bool {
        self.requests > 0 && self.p99_ms <= slo_p99_ms && self.error_rate < DEFAULT_MAX_ERROR_RATE
    }
}

/// What a level must meet to count toward the knee, as [`Level::meets`] checks it.
pub fn objective(slo_p99_ms: f64) -> String {
    format!(
        "p99 <= {slo_p99_ms} ms with errors < {}%",
        DEFAULT_MAX_ERROR_RATE * 100.0
    )
}

/// The knee of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Knee {
    pub users: u64,
    pub rps: f64,
    pub p99_ms: f64,
}

/// The level with the highest throughput among those whose p99 meets `slo_p99_ms`.
pub fn knee(levels: &[Level], slo_p99_ms: f64) -> Option<Knee> {
    levels
        .iter()
        .filter(|l| l.meets(slo_p99_ms))
        .max_by(|a, b| a.rps.total_cmp(&b.rps))
        .map(|l| Knee {
            users: l.users,
            rps: l.rps,
            p99_ms: l.p99_ms,
        })
}

/// The sweep's table and knee; `unit` names a level (`users`, `connections`); `recall` names the
/// recall column (`recall@10 heldout`) and the query set's size when answers were scored.
pub fn print(
    levels: &[Level],
    knee: Option<&Knee>,
    slo_p99_ms: f64,
    unit: &str,
    scored: Option<(&str, usize)>,
) {
    let recall = scored.map(|(r, _)| r);
    println!();
    println!(
        "{:>7} {:>10} {:>9} {:>9} {:>8} {:>10} {}  {}",
        unit,
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "requests",
        recall.map_or(String::new(), |r| format!("{r:>22}")),
        objective(slo_p99_ms)
    );
    for l in levels {
        println!(
            "{:>7} {:>10.1} {:>9.2} {:>9.2} {:>7.2}% {:>10} {}  {}{}",
            l.users,
            l.rps,
            l.p50_ms,
            l.p99_ms,
            l.error_rate * 100.0,
            l.requests,
            match (recall, l.recall_mean) {
                (Some(_), Some(r)) => format!("{r:>22.4}"),
                (Some(_), None) => format!("{:>22}", "-"),
                (None, _) => String::new(),
            },
            if l.meets(slo_p99_ms) { "PASS" } else { "FAIL" },
            if knee.is_some_and(|k| k.users == l.users) {
                "  ← knee"
            } else {
                ""
            }
        );
    }
    match knee {
        Some(k) => println!(
            "knee: {} {unit}, {:.1} req/s at p99 {:.2} ms (the highest throughput with {})",
            k.users,
            k.rps,
            k.p99_ms,
            objective(slo_p99_ms)
        ),
        None => println!("knee: none — no level met {}", objective(slo_p99_ms)),
    }
    if let Some((_, set)) = scored {
        let partial: Vec<String> = levels
            .iter()
            .filter(|l| l.recall_mean.is_some() && l.recall_queries < set)
            .map(|l| format!("{} ({} of {set})", l.users, l.recall_queries))
            .collect();
        if !partial.is_empty() {
            println!(
                "recall: levels {} answered only part of the query set: their recall is of those queries (run longer to cover it)",
                partial.join(", ")
            );
        }
    }
}

/// Run-record entries: `<group>/<unit>/<n>` per level (`capacity/users/20`, with `meets_slo` 1 or 0),
/// then `<group>/knee`, gated on some level meeting the objective.
pub fn entries(
    finished: &[(Option<u64>, Finished)],
    knee: Option<&Knee>,
    slo_p99_ms: f64,
    group: &str,
    unit: &str,
    scored: Option<crate::config::Distribution>,
) -> Result<Vec<ResultEntry>> {
    let (Some(level), Some(knee_level)) = (Metric::level(unit), Metric::knee_level(unit)) else {
        anyhow::bail!("a sweep over '{unit}': no such level metric");
    };
    let mut out = Vec::new();
    for (users, done) in finished {
        let users = users.unwrap_or(0);
        let stats = &done.stats;
        let mut metrics = super::record::metrics_of(stats, &stats.total, false, scored);
        metrics.insert(level.clone(), users as f64);
        metrics.insert(
            Metric::MeetsSlo,
            f64::from(u8::from(Level::of(users, stats).meets(slo_p99_ms))),
        );
        out.push(ResultEntry {
            name: format!("{group}/{unit}/{users}"),
            metrics,
            histogram: Some(record::encode_histogram(&stats.total.corrected)?),
            // A sweep goes past its knee on purpose: a level is not a gate; the knee is.
            gates: Vec::new(),
            series: super::record::history_series(stats),
            rounds: Vec::new(),
        });
    }
    let mut metrics = Metrics::from([(Metric::SloP99Ms, slo_p99_ms)]);
    if let Some(k) = knee {
        metrics.insert(knee_level, k.users as f64);
        metrics.insert(Metric::KneeRps, k.rps);
        metrics.insert(Metric::KneeP99Ms, k.p99_ms);
    }
    out.push(ResultEntry {
        name: format!("{group}/knee"),
        metrics,
        gates: vec![Gate::promise(
            format!("some level meets {}", objective(slo_p99_ms)),
            GateKind::Capacity,
            knee.is_some(),
        )],
        ..ResultEntry::default()
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(users: u64, rps: f64, p99_ms: f64) -> Level {
        Level {
            users,
            rps,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            error_rate: 0.0,
            requests: 100,
            recall_mean: None,
            recall_queries: 0,
        }
    }

    #[test]
    fn the_knee_is_the_fastest_level_within_the_objective() {
        let levels = [
            level(1, 100.0, 5.0),
            level(5, 400.0, 20.0),
            level(10, 450.0, 49.0),
            level(20, 460.0, 120.0),
        ];
        assert_eq!(knee(&levels, 50.0).map(|k| k.users), Some(10));
        assert_eq!(knee(&levels, 10.0).map(|k| k.users), Some(1));
        assert_eq!(knee(&levels, 1.0), None);
    }

    #[test]
    fn a_level_at_the_objective_meets_it_and_one_that_fails_requests_does_not() {
        assert!(level(2, 100.0, 50.0).meets(50.0));
        let failing = Level {
            error_rate: 0.02,
            ..level(4, 900.0, 5.0)
        };
        assert!(!failing.meets(50.0), "fast failures are no capacity");
        let levels = [level(1, 100.0, 5.0), failing];
        assert_eq!(knee(&levels, 50.0).map(|k| k.users), Some(1));
        assert_eq!(objective(50.0), "p99 <= 50 ms with errors < 1%");
    }
}
