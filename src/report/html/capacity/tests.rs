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
