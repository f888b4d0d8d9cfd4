//! The verdicts' error rates on synthetic runs shaped like this machine's (quick mode, hnsw).
//! Two shapes, both measured here (docs/regression.md): [`NOV_24`], 22 runs with a run-level
//! shift common to every benchmark of sd 8 % and no reference, and [`DEC_03`], 14 runs with
//! the reference round trip: a common shift of sd 3.5 % of which the reference follows all
//! but 1.6 % (slope 1.36). Each trial draws a fresh history of 20 runs (the window), a
//! baseline and a current run (or several per side).
use super::*;
use crate::record::{Environment, Metrics};
use rand::RngExt;
use rand_distr::StandardNormal;

/// One machine's noise, each part an sd of ln.
#[derive(Clone, Copy)]
struct Machine {
    /// The reference's run-level shift (0: the runs have no reference).
    reference_sd: f64,
    /// How far the searches' common shift follows it, and what it does not explain.
    beta: f64,
    common_sd: f64,
    /// Each benchmark's own run offset.
    offset_sd: f64,
    /// Rounds' scatter: p50, p99, the reference's mean.
    round_sd_p50: f64,
    round_sd_p99: f64,
    round_sd_reference: f64,
}

const NOV_24: Machine = Machine {
    reference_sd: 0.0,
    beta: 0.0,
    common_sd: 0.08,
    offset_sd: 0.03,
    round_sd_p50: 0.11,
    round_sd_p99: 0.25,
    round_sd_reference: 0.0,
};

const DEC_03: Machine = Machine {
    reference_sd: 0.023,
    beta: 1.36,
    common_sd: 0.016,
    offset_sd: 0.011,
    round_sd_p50: 0.027,
    round_sd_p99: 0.06,
    round_sd_reference: 0.014,
};

const ROUNDS: usize = 5;
const BENCHMARKS: usize = 10;
const HISTORY: usize = 20;
const REFERENCE: &str = "hnsw/reference/round_trip";

fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

fn mean_of(rounds: &[Metrics], m: &Metric) -> f64 {
    (rounds.iter().map(|x| x[m].ln()).sum::<f64>() / rounds.len() as f64).exp()
}

/// One synthetic run: every benchmark's p50, p99 and QPS, from its rounds, and the
/// reference's when the machine has one; `slowdown` multiplies every p50 (and divides QPS),
/// never the reference.
fn run(
    rng: &mut Xoshiro256PlusPlus,
    machine: Machine,
    at: usize,
    slowdown: f64,
    calibration: Option<&str>,
) -> RunRecord {
    let shift = machine.reference_sd * normal(rng);
    let common = machine.beta * shift + machine.common_sd * normal(rng);
    let mut r = RunRecord::new(
        Environment::default(),
        crate::record::Parameters::of(crate::record::Kind::Hnsw),
    );
    r.created_at = format!("2026-01-01T{:02}:{:02}:00Z", at / 60, at % 60);
    r.calibration = calibration.map(str::to_string);
    for b in 0..BENCHMARKS {
        let base = 0.3 * (1.0 + b as f64 / 3.0) * slowdown;
        let offset = common + machine.offset_sd * normal(rng);
        let rounds: Vec<Metrics> = (0..ROUNDS)
            .map(|_| {
                let p50 = base * (offset + machine.round_sd_p50 * normal(rng)).exp();
                let p99 = 3.0 * base * (offset + machine.round_sd_p99 * normal(rng)).exp();
                [
                    (Metric::P50_MS, p50),
                    (Metric::P99_MS, p99),
                    (Metric::Qps, 1000.0 / (p50 * 1.1)),
                ]
                .into()
            })
            .collect();
        r.results.push(ResultEntry {
            name: format!("hnsw/ef_search/{b}"),
            metrics: [Metric::P50_MS, Metric::P99_MS, Metric::Qps]
                .iter()
                .map(|m| (m.clone(), mean_of(&rounds, m)))
                .collect(),
            rounds,
            ..ResultEntry::default()
        });
    }
    if machine.reference_sd > 0.0 {
        let rounds: Vec<Metrics> = (0..ROUNDS)
            .map(|_| {
                let mean = 0.016 * (shift + machine.round_sd_reference * normal(rng)).exp();
                [(Metric::MEAN_MS, mean)].into()
            })
            .collect();
        r.results.push(ResultEntry {
            name: REFERENCE.into(),
            metrics: [(Metric::MEAN_MS, mean_of(&rounds, &Metric::MEAN_MS))].into(),
            rounds,
            ..ResultEntry::default()
        });
        r.reference = Some(REFERENCE.into());
    }
    r
}

/// Over `trials` comparisons, the share of benchmarks (the reference not counted) judged
/// regressed or improved (with a `slowdown` injected into the current side), and the share of
/// comparisons with any. `per_side` runs make each side (1: a plain run; more:
/// CAPBENCH_CALIBRATE).
fn rates(
    machine: Machine,
    trials: usize,
    slowdown: f64,
    per_side: usize,
    seed: u64,
) -> (f64, f64, f64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut regressed, mut improved, mut any) = (0, 0, 0);
    for _ in 0..trials {
        let mut runs: Vec<RunRecord> = (0..HISTORY)
            .map(|i| run(&mut rng, machine, i, 1.0, None))
            .collect();
        let side = |rng: &mut Xoshiro256PlusPlus, at: usize, slow: f64, id: &str| {
            (0..per_side)
                .map(|i| run(rng, machine, at + i, slow, (per_side > 1).then_some(id)))
                .collect::<Vec<_>>()
        };
        runs.extend(side(&mut rng, 100, 1.0, "base"));
        let current_side = side(&mut rng, 200, slowdown, "current");
        let (baseline, current) = (
            runs[runs.len() - 1].clone(),
            current_side[per_side - 1].clone(),
        );
        runs.extend(current_side[..per_side - 1].iter().cloned());
        let history = History::of(&runs, 50);
        let c = compare(&baseline, "a", &current, "b", &Options::default(), &history).unwrap();
        if machine.reference_sd > 0.0 {
            let a = c.adjustment.as_ref().expect("the runs carry a reference");
            assert!(
                a.applied() || matches!(a.state, noise::AdjustmentState::ReferenceMoved(_)),
                "{}",
                a.text()
            );
        }
        let counted = |v: Verdict| {
            c.benchmarks
                .iter()
                .filter(|b| b.entry != REFERENCE && b.verdict == v)
                .count()
        };
        regressed += counted(Verdict::Regressed);
        improved += counted(Verdict::Improved);
        any += usize::from(counted(Verdict::Regressed) + counted(Verdict::Improved) > 0);
        assert_eq!(c.count(Verdict::NotEnoughRuns), 0);
    }
    let n = (trials * BENCHMARKS) as f64;
    (
        regressed as f64 / n,
        improved as f64 / n,
        any as f64 / trials as f64,
    )
}

#[test]
fn a_a_comparisons_stay_green_and_a_15_percent_slowdown_is_caught() {
    let (r, i, any) = rates(NOV_24, 200, 1.0, 1, 1);
    println!(
        "A/A, one run per side: {:.1} % of benchmarks regressed, {:.1} % improved; {:.1} % of \
         comparisons flagged anything",
        r * 100.0,
        i * 100.0,
        any * 100.0
    );
    assert!(r + i <= 0.05, "false positives per benchmark {:.3}", r + i);
    assert!(any <= 0.05 + 0.03, "A/A comparisons flagged {any:.3}");
    for per_side in [1, 5, 15] {
        let (r, i, any) = rates(NOV_24, 100, 1.15, per_side, 2);
        println!(
            "15 % p50 slowdown, {per_side} run(s) per side: {:.1} % of benchmarks regressed, \
             {:.1} % improved; {:.1} % of comparisons flagged a regression",
            r * 100.0,
            i * 100.0,
            any * 100.0
        );
        assert_eq!(i, 0.0, "a slowdown is never an improvement");
        // One run per side cannot see 15 % through ±8 % run-level drift; fifteen can.
        if per_side == 15 {
            assert!(r >= 0.90, "detected in {r:.3} of benchmarks");
        }
    }
    // What one run per side does catch: a slowdown like the real m = 32 index (+30…+110 %).
    let (r, _, any) = rates(NOV_24, 100, 1.6, 1, 3);
    println!(
        "60 % p50 slowdown, 1 run per side: {:.1} % of benchmarks regressed; {:.1} % of \
         comparisons flagged a regression",
        r * 100.0,
        any * 100.0
    );
    assert!(
        any >= 0.90,
        "a 60 % slowdown flagged in {any:.3} of comparisons"
    );
}

#[test]
fn with_the_reference_one_run_per_side_catches_a_15_percent_slowdown() {
    let raw = Machine {
        reference_sd: 0.0,
        common_sd: (DEC_03.common_sd.powi(2) + (DEC_03.beta * DEC_03.reference_sd).powi(2)).sqrt(),
        ..DEC_03
    };
    let (r, i, any) = rates(DEC_03, 200, 1.0, 1, 4);
    println!(
        "with the reference, A/A: {:.1} % of benchmarks regressed, {:.1} % improved; {:.1} % \
         of comparisons flagged anything",
        r * 100.0,
        i * 100.0,
        any * 100.0
    );
    assert!(r + i <= 0.05, "false positives per benchmark {:.3}", r + i);
    assert!(any <= 0.05 + 0.03, "A/A comparisons flagged {any:.3}");
    let (r_net, i_net, any_net) = rates(DEC_03, 100, 1.15, 1, 5);
    let (r_raw, _, any_raw) = rates(raw, 100, 1.15, 1, 5);
    println!(
        "15 % p50 slowdown, one run per side: {:.1} % of benchmarks regressed ({:.1} % of \
         comparisons) net of the reference; {:.1} % ({:.1} %) without it",
        r_net * 100.0,
        any_net * 100.0,
        r_raw * 100.0,
        any_raw * 100.0
    );
    assert_eq!(i_net, 0.0, "a slowdown is never an improvement");
    assert!(r_net >= 0.90, "detected in {r_net:.3} of benchmarks");
    assert!(any_net >= 0.95, "flagged in {any_net:.3} of comparisons");
    assert!(
        r_net > r_raw,
        "the reference adds power: {r_net:.3} vs {r_raw:.3}"
    );
}
