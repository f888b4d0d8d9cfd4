use super::*;
use crate::record::Metrics;

#[test]
fn benjamini_hochberg_rejects_the_step_up_set() {
    // m = 4, q = 0.05: thresholds 0.0125, 0.025, 0.0375, 0.05; 0.03 misses rank 2's.
    assert_eq!(
        benjamini_hochberg(&[0.04, 0.001, 0.03, 0.5], 0.05),
        vec![false, true, false, false]
    );
    assert_eq!(
        benjamini_hochberg(&[0.04, 0.001, 0.02, 0.5], 0.05),
        vec![false, true, true, false]
    );
    // Step-up: 0.049 ≤ 0.05 at rank 4 rejects all four, even 0.04 above its own rank's 0.0375.
    assert_eq!(
        benjamini_hochberg(&[0.04, 0.001, 0.03, 0.049], 0.05),
        vec![true; 4]
    );
    assert_eq!(benjamini_hochberg(&[0.2, 0.3], 0.05), vec![false, false]);
    assert!(benjamini_hochberg(&[], 0.05).is_empty());
}

#[test]
fn a_t_test_matches_the_tables() {
    // t = 2.228 at 10 dof is the 97.5th percentile.
    let t = Test::new(2.228, &[(1.0, 10.0)]);
    assert!((t.p - 0.05).abs() < 1e-3, "{t:?}");
    assert!((t.dof - 10.0).abs() < 1e-9);
    // Welch–Satterthwaite: two equal variances of 5 dof each make 10.
    let t = Test::new(0.0, &[(1.0, 5.0), (1.0, 5.0)]);
    assert!((t.dof - 10.0).abs() < 1e-9 && t.p == 1.0);
    // A known (infinite-dof) part adds variance but no uncertainty about it.
    let t = Test::new(1.96, &[(1.0, f64::INFINITY)]);
    assert!((t.p - 0.05).abs() < 1e-3, "{t:?}");
    let (lo, hi) = Test::new(0.0, &[(0.01, f64::INFINITY)]).interval(0.95);
    assert!((lo - (-0.196f64).exp_m1()).abs() < 1e-3 && (hi - 0.196f64.exp_m1()).abs() < 1e-3);
}

fn entry_with_rounds(name: &str, value: f64, rounds: &[f64]) -> ResultEntry {
    ResultEntry {
        name: name.into(),
        metrics: [(Metric::P50_MS, value)].into(),
        rounds: rounds
            .iter()
            .map(|v| [(Metric::P50_MS, *v)].into())
            .collect(),
        ..ResultEntry::default()
    }
}

#[test]
fn the_spread_comes_from_successive_differences_and_a_step_costs_one() {
    let run = |t: &str, v: f64| PastRun {
        created_at: t.into(),
        calibration: None,
        reference: None,
        points: [(
            "e".to_string(),
            [(
                Metric::P50_MS,
                Point::of(&entry_with_rounds("e", v, &[]), &Metric::P50_MS).unwrap(),
            )]
            .into(),
        )]
        .into(),
    };
    let alternating: Vec<PastRun> = (0..9)
        .map(|i| run(&format!("t{i}"), if i % 2 == 0 { 1.0 } else { 1.1 }))
        .collect();
    let h = History {
        runs: alternating.clone(),
        ..History::default()
    };
    let s = h.spread("e", &Metric::P50_MS, 3).unwrap();
    // Every successive difference is ln 1.1: MSSD = ln²1.1 / 2.
    assert!(
        (s.total_sd - 1.1f64.ln() / 2f64.sqrt()).abs() < 1e-9,
        "{s:?}"
    );
    assert_eq!((s.runs, s.dof), (9, 8.0));
    // A single step (1.0 ×4 then 1.1 ×5) is one difference in eight.
    let step = History {
        runs: (0..9)
            .map(|i| run(&format!("t{i}"), if i < 4 { 1.0 } else { 1.1 }))
            .collect(),
        ..History::default()
    };
    let st = step.spread("e", &Metric::P50_MS, 3).unwrap();
    assert!(st.total_sd < s.total_sd / 2.0, "{st:?}");
    // Too few runs: no spread.
    assert!(h.spread("e", &Metric::P50_MS, 10).is_none());
    assert!(h.spread("other", &Metric::P50_MS, 3).is_none());
}

#[test]
fn rounds_give_the_runs_own_standard_error() {
    let e = entry_with_rounds("e", 1.0, &[1.0, 1.2, 1.0, 1.2]);
    let (var, dof) = rounds_variance(&e, &Metric::P50_MS).unwrap();
    let l = 1.2f64.ln();
    // Four rounds at 0 and ln 1.2: sample variance l²/3; over √4.
    assert!((var - l * l / 3.0 / 4.0).abs() < 1e-12, "{var}");
    assert_eq!(dof, 3.0);
    assert!(rounds_variance(&entry_with_rounds("e", 1.0, &[1.0]), &Metric::P50_MS).is_none());
}

#[test]
fn history_keeps_the_latest_window_once() {
    let run = |t: &str| PastRun {
        created_at: t.into(),
        calibration: None,
        points: BTreeMap::new(),
        reference: None,
    };
    let mut h = History {
        runs: vec![run("c"), run("a")],
        ..History::default()
    };
    h.merge(
        History {
            runs: vec![run("b"), run("a"), run("d")],
            ..History::default()
        },
        3,
    );
    let times: Vec<&str> = h.runs.iter().map(|r| r.created_at.as_str()).collect();
    assert_eq!(times, vec!["b", "c", "d"]);
}

/// A run whose search (p50 0.3 ms) and reference (mean 0.016 ms) share the drift `u`: the
/// search moves by `beta`·u, plus `own`; the reference by u. Rounds of ±1 % around each.
fn drifting_run(at: usize, u: f64, own: f64, beta: f64) -> RunRecord {
    let rounds = |v: f64, m: &Metric| -> Vec<Metrics> {
        [0.99, 1.01, 1.0, 0.995, 1.005]
            .iter()
            .map(|f| [(m.clone(), v * f)].into())
            .collect()
    };
    let search = 0.3 * (beta * u + own).exp();
    let reference = 0.016 * u.exp();
    let mut r = RunRecord::new(
        crate::record::Environment::default(),
        crate::record::Parameters::of(crate::record::Kind::Hnsw),
    );
    r.created_at = format!("2026-01-01T00:{at:02}:00Z");
    r.reference = Some("ref".into());
    r.results = vec![
        ResultEntry {
            name: "search".into(),
            metrics: [(Metric::P50_MS, search)].into(),
            rounds: rounds(search, &Metric::P50_MS),
            ..ResultEntry::default()
        },
        ResultEntry {
            name: "ref".into(),
            metrics: [(REFERENCE_METRIC, reference)].into(),
            rounds: rounds(reference, &REFERENCE_METRIC),
            ..ResultEntry::default()
        },
    ];
    r
}

/// Ten runs drifting by ±4 % that the reference follows, with ±0.5 % of their own.
fn drifting_history() -> Vec<RunRecord> {
    let u = [
        0.03, -0.04, 0.05, 0.0, -0.03, 0.04, -0.05, 0.02, -0.01, 0.03,
    ];
    let own = [
        0.004, -0.005, 0.0, 0.005, -0.004, 0.003, -0.002, 0.0, 0.005, -0.003,
    ];
    (0..10)
        .map(|i| drifting_run(i, u[i], own[i], 1.4))
        .collect()
}

#[test]
fn a_drift_the_reference_follows_is_taken_out() {
    let mut runs = drifting_history();
    // The current run drifted 6 % faster: every figure, the reference's too.
    let current = drifting_run(20, -0.045, 0.0, 1.4);
    let baseline = runs.last().unwrap().clone();
    runs.push(current.clone());
    let history = History::of(&runs[..runs.len() - 1], 20);
    let c = crate::report::compare::compare(
        &baseline,
        "a",
        &current,
        "b",
        &crate::report::compare::Options::default(),
        &history,
    )
    .unwrap();
    let a = c.adjustment.as_ref().unwrap();
    assert!(a.applied(), "{}", a.text());
    let fit = a.fit_of("search", &Metric::P50_MS).unwrap();
    assert!((fit.beta - 1.4).abs() < 0.1, "slope {}", fit.beta);
    assert!(fit.adjusted_sd < fit.raw_sd / 3.0, "{fit:?}");
    let p50 = c
        .changes
        .iter()
        .find(|m| m.entry == "search" && m.metric == Metric::P50_MS)
        .unwrap();
    // As measured it is 12 % faster; net of the drift, the same (its own part: 0.3 %).
    assert!(
        (c.changes.iter().any(|m| m.beta.is_some())) && p50.change.abs() < 0.01,
        "change {} net of the drift",
        p50.change
    );
    assert_eq!(p50.verdict, crate::report::compare::Verdict::NoChange);
    assert!(c.noise.text().contains("net of the machine's drift"));

    // The same search 15 % slower on an equally fast machine is a regression, caught with
    // one run per side; its spread as measured (±4 %) would also see it, but net of the
    // drift the interval is a fraction as wide.
    let slower = drifting_run(21, -0.045, 0.14, 1.4);
    let c = crate::report::compare::compare(
        &baseline,
        "a",
        &slower,
        "b",
        &crate::report::compare::Options::default(),
        &history,
    )
    .unwrap();
    let p50 = c
        .changes
        .iter()
        .find(|m| m.entry == "search" && m.metric == Metric::P50_MS)
        .unwrap();
    assert_eq!(p50.verdict, crate::report::compare::Verdict::Regressed);
    let (lo, hi) = p50.ci.unwrap();
    assert!(hi - lo < 0.06, "interval [{lo}, {hi}]");
}

#[test]
fn a_reference_that_moved_beyond_its_noise_is_not_taken_out() {
    let runs = drifting_history();
    let baseline = runs.last().unwrap().clone();
    // A per-statement cost: the round trip +60 %, the search +3 % (the same 10 µs on each).
    let mut current = drifting_run(20, 0.47, 0.0, 0.0);
    current.results[0].metrics.insert(Metric::P50_MS, 0.31);
    let history = History::of(&runs, 20);
    let c = crate::report::compare::compare(
        &baseline,
        "a",
        &current,
        "b",
        &crate::report::compare::Options::default(),
        &history,
    )
    .unwrap();
    let a = c.adjustment.as_ref().unwrap();
    assert!(
        matches!(a.state, AdjustmentState::ReferenceMoved(p) if p < REFERENCE_MOVED_P),
        "{}",
        a.text()
    );
    assert!(c.changes.iter().all(|m| m.beta.is_none()));
    assert!(a.text().contains("judged as measured"), "{}", a.text());

    // Without enough runs carrying the reference there is nothing to fit.
    let history = History::of(&runs[..3], 20);
    let c = crate::report::compare::compare(
        &runs[2],
        "a",
        &runs[3],
        "b",
        &crate::report::compare::Options::default(),
        &history,
    )
    .unwrap();
    assert!(matches!(
        c.adjustment.unwrap().state,
        AdjustmentState::NotEnoughRuns(3, 4)
    ));
}

#[test]
fn rounds_measured_together_give_their_covariance() {
    let x = entry_with_rounds("x", 1.0, &[1.0, 2.0, 4.0]);
    let mut r = entry_with_rounds("r", 1.0, &[]);
    r.rounds = [1.0, 2.0, 4.0]
        .iter()
        .map(|v| [(REFERENCE_METRIC, *v)].into())
        .collect();
    // ln: 0, ln 2, 2 ln 2 — sample variance (ln 2)², over 3 rounds.
    let cov = rounds_covariance(&x, &Metric::P50_MS, &r).unwrap();
    assert!((cov - 2f64.ln().powi(2) / 3.0).abs() < 1e-12, "{cov}");
    r.rounds.pop();
    assert_eq!(rounds_covariance(&x, &Metric::P50_MS, &r), None);
}

#[test]
fn drift_shared_by_both_sides_cancels() {
    // The machine drifts by ±30 % from round to round; b is always 20 % slower than a.
    let drift = [1.0, 1.3, 0.7, 1.1, 0.9];
    let a = entry_with_rounds("a", 0.5, &drift.map(|d| 0.5 * d));
    let b = entry_with_rounds("b", 0.6, &drift.map(|d| 0.6 * d));
    let p = Paired::of(&a, &b, &Metric::P50_MS, 0.95).unwrap();
    assert!((p.change - 0.2).abs() < 1e-9, "{p:?}");
    assert!(
        (p.ci.0 - 0.2).abs() < 1e-9 && (p.ci.1 - 0.2).abs() < 1e-9,
        "{p:?}"
    );
    assert_eq!(p.rounds, 5);
    assert!(
        p.text().starts_with("b vs a, p50_ms: +20.0%"),
        "{}",
        p.text()
    );
    // With a little noise of its own, the interval widens but still excludes 0.
    let b = entry_with_rounds("b", 0.6, &[0.61, 0.77, 0.41, 0.66, 0.53]);
    let p = Paired::of(&a, &b, &Metric::P50_MS, 0.95).unwrap();
    assert!(p.ci.0 > 0.1 && p.ci.1 < 0.3, "{p:?}");
    assert!(
        Paired::of(
            &a,
            &entry_with_rounds("c", 0.5, &[0.5]),
            &Metric::P50_MS,
            0.95
        )
        .is_none()
    );
}
