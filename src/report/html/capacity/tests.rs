//! The knee of a sweep (found, not reached, missed) and the small multiples of its levels.

use super::*;
use crate::record::{Environment, Metrics, RunRecord};

/// A `load --sweep` record of `levels` (users, p99 ms, meets_slo) with its knee entry as
/// load::sweep writes it, ten per-second points per level.
fn sweep_record(levels: &[(f64, f64, Option<f64>)], knee_users: Option<f64>) -> RunRecord {
    let mut r = RunRecord::new(
        Environment::default(),
        crate::record::Parameters::Load(crate::record::LoadParameters {
            model: crate::record::LoadModel::Sweep,
            ..Default::default()
        }),
    );
    for &(users, p99, meets) in levels {
        let mut metrics: Metrics = [
            (Metric::Users, users),
            (Metric::Rps, users * 10.0),
            (Metric::P50_MS, p99 / 3.0),
            (Metric::P99_MS, p99),
        ]
        .into();
        if let Some(m) = meets {
            metrics.insert(Metric::MeetsSlo, m);
        }
        let series = ["rps_per_second", "p99_ms_per_second"]
            .into_iter()
            .map(|s| (s.to_string(), (1..=10).map(|t| (t as f64, users)).collect()))
            .collect();
        r.results.push(ResultEntry {
            name: format!("load/users/{users}"),
            metrics,
            series,
            ..ResultEntry::default()
        });
    }
    let mut metrics = BTreeMap::from([(Metric::SloP99Ms, 50.0)]);
    if let Some(u) = knee_users {
        metrics.insert(Metric::KneeUsers, u);
        metrics.insert(Metric::KneeRps, u * 10.0);
        metrics.insert(Metric::KneeP99Ms, 20.0);
    }
    r.results.push(ResultEntry {
        name: "load/knee".into(),
        metrics,
        ..ResultEntry::default()
    });
    r
}

fn knee(r: &RunRecord) -> Knee {
    knee_of(&sweeps(r)[0])
}

#[test]
fn a_sweep_whose_objective_never_broke_has_no_knee_only_a_lower_bound() {
    // Every level met the objective; the best throughput is at 50, not at the last level.
    let levels: Vec<_> = [1.0, 10.0, 50.0, 100.0]
        .map(|u| (u, 5.0 + u / 10.0, Some(1.0)))
        .to_vec();
    let r = sweep_record(&levels, Some(50.0));
    let k = knee(&r);
    assert!(
        matches!(&k, Knee::NotReached(l) if l.level == 100 && l.unit == "users"),
        "{k:?}"
    );
    let html = sweep_shown(&sweeps(&r)[0]).render().into_string();
    assert!(
        html.contains("≥ 100 users, objective not reached"),
        "{html}"
    );
    assert!(
        !html.contains("the most users"),
        "no level is called the knee"
    );
}

#[test]
fn a_sweep_that_broke_its_objective_shows_its_knee() {
    let r = sweep_record(
        &[
            (1.0, 5.0, Some(1.0)),
            (10.0, 20.0, Some(1.0)),
            (50.0, 90.0, Some(0.0)),
        ],
        Some(10.0),
    );
    assert!(
        matches!(knee(&r), Knee::Found(l) if l.level == 10),
        "{:?}",
        knee(&r)
    );
    let html = sweep_shown(&sweeps(&r)[0]).render().into_string();
    assert!(
        html.contains("the most users that still meet p99 &lt; 50.00 ms: 10 users at 100 RPS"),
        "{html}"
    );
    // A record whose levels do not say whether they met it shows the knee it holds.
    let old = sweep_record(&[(1.0, 5.0, None), (10.0, 20.0, None)], Some(10.0));
    assert!(matches!(knee(&old), Knee::Found(l) if l.level == 10));
    // No level met it; no knee entry at all.
    let none = sweep_record(&[(1.0, 90.0, Some(0.0))], None);
    assert_eq!(knee(&none), Knee::Missed);
    let mut absent = none.clone();
    absent.results.pop();
    assert_eq!(knee(&absent), Knee::Absent);
}

#[test]
fn a_ten_level_sweep_over_time_is_ten_small_charts_of_one_line_on_one_scale() {
    let levels: Vec<_> = (1..=10)
        .map(|u| (f64::from(u) * 10.0, 10.0, Some(1.0)))
        .collect();
    let r = sweep_record(&levels, Some(100.0));
    let shown = over_time(&r, &sweeps(&r));
    assert_eq!(shown.len(), 2, "throughput and p99");
    for o in &shown {
        assert_eq!(o.figures.len(), 10, "one chart per level");
        let ranges: Vec<_> = o
            .figures
            .iter()
            .map(|f| match f {
                Figure::Small(c) => {
                    assert_eq!(c.series.len(), 1, "one line, no legend to cover it");
                    c.y_range
                }
                other => panic!("not a small multiple: {other:?}"),
            })
            .collect();
        assert!(
            ranges.iter().all(|r| *r == ranges[0] && r.is_some()),
            "{ranges:?}"
        );
    }
    let html = shown[0].render().into_string();
    assert_eq!(html.matches("<svg").count(), 10);
    assert!(html.contains("class=\"multiples\""));
}

#[test]
fn a_scored_sweep_shows_recall_under_load_per_level_and_an_unscored_one_does_not() {
    let levels = [(1.0, 5.0, Some(1.0)), (10.0, 9.0, Some(1.0))];
    let plain = sweep_record(&levels, Some(10.0));
    assert_eq!(sweep_shown(&sweeps(&plain)[0]).charts.len(), 2);
    let mut scored = plain.clone();
    for (e, (mean, worst)) in scored.results.iter_mut().zip([(0.95, 0.6), (0.91, 0.5)]) {
        e.metrics
            .insert(Metric::RecallMeanOf("near-duplicate".into()), mean);
        e.metrics
            .insert(Metric::RecallMinOf("near-duplicate".into()), worst);
    }
    let shown = sweep_shown(&sweeps(&scored)[0]);
    assert_eq!(shown.charts.len(), 3);
    let Figure::Xy(c) = &shown.charts[2] else {
        panic!("the recall chart")
    };
    assert!(c.title.contains("near-duplicate queries"), "{}", c.title);
    assert_eq!(c.series[0].points, vec![(1.0, 0.95), (10.0, 0.91)]);
    assert_eq!(c.series[1].points, vec![(1.0, 0.6), (10.0, 0.5)]);
}

#[test]
fn a_single_run_draws_each_names_lines_over_time_and_marks_its_stages() {
    let mut r = RunRecord::new(
        Environment::default(),
        crate::record::Parameters::Load(crate::record::LoadParameters {
            model: crate::record::LoadModel::Closed,
            ..Default::default()
        }),
    );
    let pts = |y: f64| (1..=6).map(|t| (t as f64, y)).collect::<Vec<_>>();
    let entry = |name: &str, series: &[(&str, f64)]| ResultEntry {
        name: name.into(),
        series: series
            .iter()
            .map(|(s, y)| (s.to_string(), pts(*y)))
            .collect(),
        ..ResultEntry::default()
    };
    r.results.push(entry(
        "load/search_sql",
        &[
            ("rps_per_second", 200.0),
            ("p99_ms_per_second", 9.0),
            ("recall_per_second", 0.96),
        ],
    ));
    r.results.push(entry(
        "load/insert_sql",
        &[
            ("rps_per_second", 50.0),
            ("p99_ms_per_second", 24.0),
            ("table_rows", 100_300.0),
        ],
    ));
    let mut total = entry(
        "load/Aggregated",
        &[
            ("rps_per_second", 250.0),
            ("p99_ms_per_second", 16.0),
            ("target_per_second", 10.0),
        ],
    );
    total.series.insert(
        "stage_starts".into(),
        vec![(0.0, 0.0), (2.0, 1.0), (4.0, 2.0)],
    );
    r.results.push(total);
    let shown = over_time(&r, &[]);
    assert_eq!(shown.len(), 1);
    let charts: Vec<&Chart> = shown[0]
        .figures
        .iter()
        .map(|f| match f {
            Figure::Xy(c) => c,
            other => panic!("not a chart of its own: {other:?}"),
        })
        .collect();
    let titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Throughput over time",
            "p99 over time (per second)",
            "Recall over time (scored answers, last 10 s)",
            "Rows in the table over time (the run's writes)",
            "The load shape: the stages' target over time",
        ]
    );
    // One line per request name that has the series.
    let lines = |i: usize| {
        charts[i]
            .series
            .iter()
            .map(|s| s.label.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        lines(0),
        ["load/search_sql", "load/insert_sql", "load/Aggregated"]
    );
    assert_eq!(lines(2), ["load/search_sql"]);
    assert_eq!(lines(3), ["load/insert_sql"]);
    // Every chart marks the three stages' starts by number, at its top.
    for c in &charts {
        let marks: Vec<_> = c.notes.iter().map(|((x, _), n)| (*x, n.as_str())).collect();
        assert_eq!(marks, [(0.0, "1"), (2.0, "2"), (4.0, "3")], "{}", c.title);
    }
    assert_eq!(charts[3].notes[0].0.1, 100_300.0);
}
