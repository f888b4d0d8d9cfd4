//! Load shapes in k6's `stages` spirit: `--stages 30s:20,2m:20,10s:200,1m:200,30s:20` — each stage
//! moves the target linearly from the previous stage's (0 before the first) to its own over its
//! duration: a ramp, a hold (the same target again), a spike (a short ramp up), a ramp down. The
//! target is users in the closed model (k6's ramping-vus: users started as it rises, retired at the
//! end of their task as it falls) and arrivals per second with `--rate` (k6's
//! ramping-arrival-rate: request *k* is due when the integral of the rate reaches *k*).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::stats::HistoryRow;
use crate::record::Stat;

/// Recovered: p95 within this factor of the pre-spike p95 (seed 004's 1.2×)…
pub const RECOVERY_FACTOR: f64 = 1.2;
/// … and errors under this share (1 %)…
pub const RECOVERY_MAX_ERROR_RATE: f64 = 0.01;
/// … for this many seconds in a row.
pub const RECOVERY_HOLD: usize = 3;

/// A shape's spike: the first stage whose target is at least twice a non-zero one before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// The pre-spike level (the previous stage's target) and when it ended (s from the start).
    pub level: f64,
    pub starts_at: f64,
    /// When the load is back at or below the pre-spike level: the end of the first later stage
    /// whose target is at most it.
    pub back_at: f64,
}

/// What a run's history says of its recovery after `spike`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recovery {
    /// The pre-spike p95 (ms): the last 10 s window's just before the spike.
    pub before_p95_ms: f64,
    /// Seconds from the load's return until the first of [`RECOVERY_HOLD`] seconds in a row with
    /// p95 ≤ [`RECOVERY_FACTOR`] × the pre-spike p95 and errors under 1 %; `None`: not within
    /// the run.
    pub seconds: Option<f64>,
}

/// The recovery after `spike` in the Aggregated `history` (one row per second, in order).
pub fn recovery(history: &[&HistoryRow], spike: &Spike) -> Recovery {
    let before_p95_ms = history
        .iter()
        .rev()
        .find(|r| r.elapsed <= spike.starts_at + 0.5)
        .map_or(0.0, |r| r.percentile(Stat::P95));
    let good = |r: &HistoryRow| {
        r.rps > 0.0
            && r.second_p95 <= RECOVERY_FACTOR * before_p95_ms
            && r.fps / r.rps < RECOVERY_MAX_ERROR_RATE
    };
    // The seconds that began at or after the return (a row closes the second before its time).
    let after: Vec<&HistoryRow> = history
        .iter()
        .copied()
        .filter(|r| r.elapsed - 1.0 >= spike.back_at - 0.5)
        .collect();
    let seconds = after
        .windows(RECOVERY_HOLD)
        .find(|w| w.iter().all(|r| good(r)))
        .map(|w| (w[0].elapsed - 1.0 - spike.back_at).max(0.0));
    Recovery {
        before_p95_ms,
        seconds,
    }
}

/// One stage: over `duration`, the target moves to `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: f64,
}

/// The stages of a run, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages(pub Vec<Stage>);

/// The most stages a shape may have.
pub const MAX_STAGES: usize = 100;

impl FromStr for Stages {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "stages '{s}' are not DURATION:TARGET,… e.g. '30s:20,2m:20,10s:200,1m:200,30s:20'"
            )
        };
        let mut stages = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, t) = part.rsplit_once(':').ok_or_else(usage)?;
            let duration =
                super::args::parse_duration(d).map_err(|e| format!("stage '{part}': {e}"))?;
            if duration.is_zero() {
                return Err(format!("stage '{part}': a stage lasts more than 0 s"));
            }
            let target: f64 =
                t.trim().trim_end_matches("/s").parse().map_err(|_| {
                    format!("stage '{part}': '{t}' is not a number of users or a rate")
                })?;
            if !(target.is_finite() && (0.0..=100_000.0).contains(&target)) {
                return Err(format!("stage '{part}': the target is 0 to 100,000"));
            }
            stages.push(Stage { duration, target });
        }
        if stages.is_empty() {
            return Err(usage());
        }
        if stages.len() > MAX_STAGES {
            return Err(format!("{} stages: at most {MAX_STAGES}", stages.len()));
        }
        if stages.iter().all(|st| st.target == 0.0) {
            return Err(format!(
                "stages '{s}': every target is 0, nothing would run"
            ));
        }
        Ok(Stages(stages))
    }
}

impl fmt::Display for Stages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|st| format!("{}:{}", humantime::format_duration(st.duration), st.target))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Stages {
    /// The whole shape's duration: the run's time.
    pub fn total(&self) -> Duration {
        self.0.iter().map(|st| st.duration).sum()
    }

    /// The highest target (the users a closed run may need at once).
    pub fn peak(&self) -> f64 {
        self.0.iter().map(|st| st.target).fold(0.0, f64::max)
    }

    /// Each stage's (start, end) in seconds from the run's start (no allocation: the open model's
    /// schedule thread asks for every request's due time).
    pub fn bounds(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.0.iter().scan(0.0, |at, st| {
            let start = *at;
            *at += st.duration.as_secs_f64();
            Some((start, *at))
        })
    }

    /// The stage running at `t` (0-based; the last after the end).
    pub fn stage_at(&self, t: Duration) -> usize {
        let t = t.as_secs_f64();
        self.bounds()
            .position(|(_, end)| t < end)
            .unwrap_or(self.0.len() - 1)
    }

    /// The target at `t`: linear within each stage from the previous stage's target (0 before the
    /// first); the last target after the end.
    pub fn target_at(&self, t: Duration) -> f64 {
        let t = t.as_secs_f64();
        let mut from = 0.0;
        for (st, (start, end)) in self.0.iter().zip(self.bounds()) {
            if t < end {
                return from + (st.target - from) * ((t - start) / (end - start));
            }
            from = st.target;
        }
        from
    }

    /// When arrival `k` (0-based) is due with the target as an arrival rate: the time at which the
    /// rate's integral reaches `k`; `None` when the shape ends first.
    pub fn arrival(&self, k: u64) -> Option<Duration> {
        let k = k as f64;
        let mut from = 0.0;
        let mut done = 0.0; // arrivals due before the segment
        for (st, (start, end)) in self.0.iter().zip(self.bounds()) {
            let d = end - start;
            let here = (from + st.target) / 2.0 * d;
            if k < done + here {
                // N(x) = done + from·x + a·x², a = (target − from) / 2d; solved for N(x) = k in a
                // form that stays stable when the rate falls (a < 0).
                let m = k - done;
                if m <= 0.0 {
                    return Some(Duration::from_secs_f64(start));
                }
                let a = (st.target - from) / (2.0 * d);
                let disc = (from * from + 4.0 * a * m).max(0.0);
                let denom = from + disc.sqrt();
                if denom <= 0.0 {
                    return None;
                }
                let x = (2.0 * m / denom).min(d);
                return Some(Duration::from_secs_f64(start + x));
            }
            done += here;
            from = st.target;
        }
        None
    }

    /// The arrivals the whole shape schedules.
    pub fn arrivals(&self) -> f64 {
        let mut from = 0.0;
        let mut n = 0.0;
        for st in &self.0 {
            n += (from + st.target) / 2.0 * st.duration.as_secs_f64();
            from = st.target;
        }
        n
    }

    /// The shape's spike, if it has one whose load comes back (see [`Spike`]).
    pub fn spike(&self) -> Option<Spike> {
        let bounds: Vec<(f64, f64)> = self.bounds().collect();
        for j in 1..self.0.len() {
            let level = self.0[j - 1].target;
            if level > 0.0 && self.0[j].target >= 2.0 * level {
                let back = (j + 1..self.0.len()).find(|&k| self.0[k].target <= level)?;
                return Some(Spike {
                    level,
                    starts_at: bounds[j - 1].1,
                    back_at: bounds[back].1,
                });
            }
        }
        None
    }

    /// `stage 3/5 (10s → 200 users)`, the live view's words for the stage at `t`.
    pub fn describe_at(&self, t: Duration, unit: &str) -> String {
        let i = self.stage_at(t);
        let st = self.0[i];
        format!(
            "stage {}/{} ({} → {} {unit})",
            i + 1,
            self.0.len(),
            humantime::format_duration(st.duration),
            st.target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn stages_parse_as_k6_writes_them() {
        let s: Stages = "30s:20, 2m:20,10s:200,1m:200,30s:20".parse().unwrap();
        assert_eq!(s.0.len(), 5);
        assert_eq!(s.total(), Duration::from_secs(30 + 120 + 10 + 60 + 30));
        assert_eq!(s.peak(), 200.0);
        assert_eq!(s.to_string(), "30s:20,2m:20,10s:200,1m:200,30s:20");
        assert_eq!("5s:100/s".parse::<Stages>().unwrap().0[0].target, 100.0);
        for bad in [
            "",
            "30s",
            "x:10",
            "0s:10",
            "10s:-1",
            "10s:lots",
            "5s:0,5s:0",
            "1s:1e9",
        ] {
            assert!(bad.parse::<Stages>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_target_ramps_holds_spikes_and_falls() {
        let s: Stages = "10s:20,10s:20,2s:200,10s:0".parse().unwrap();
        assert_eq!(s.target_at(secs(0.0)), 0.0);
        assert_eq!(s.target_at(secs(5.0)), 10.0);
        assert_eq!(s.target_at(secs(15.0)), 20.0);
        assert_eq!(s.target_at(secs(21.0)), 110.0);
        assert_eq!(s.target_at(secs(27.0)), 100.0);
        assert_eq!(s.target_at(secs(99.0)), 0.0);
        assert_eq!(
            [0.0, 9.99, 10.0, 21.0, 31.0, 99.0].map(|t| s.stage_at(secs(t))),
            [0, 0, 1, 2, 3, 3]
        );
        assert_eq!(
            s.describe_at(secs(21.0), "users"),
            "stage 3/4 (2s → 200 users)"
        );
    }

    fn row(elapsed: f64, rps: f64, fps: f64, window_p95: f64, second_p95: f64) -> HistoryRow {
        let mut percentiles = [0.0; 11];
        percentiles[5] = window_p95; // 95 %
        HistoryRow {
            unix_seconds: 0,
            elapsed,
            users: 0,
            method: String::new(),
            name: "Aggregated".into(),
            rps,
            fps,
            percentiles,
            total_requests: 0,
            total_failures: 0,
            total_median_ms: 0.0,
            total_mean_ms: 0.0,
            total_min_ms: 0.0,
            total_max_ms: 0.0,
            total_mean_bytes: 0.0,
            recall: None,
            second_p95,
            total_rows: 0,
        }
    }

    #[test]
    fn a_spike_and_the_recovery_after_it() {
        // Hold 20, spike to 200 and hold, back down to 20 by 25 s, hold 20.
        let s: Stages = "5s:20,5s:20,2s:200,8s:200,5s:20,20s:20".parse().unwrap();
        let spike = s.spike().unwrap();
        assert_eq!(
            spike,
            Spike {
                level: 20.0,
                starts_at: 10.0,
                back_at: 25.0
            }
        );
        assert_eq!(
            "10s:20,10s:30".parse::<Stages>().unwrap().spike(),
            None,
            "not 2×"
        );
        assert_eq!(
            "10s:20,10s:200".parse::<Stages>().unwrap().spike(),
            None,
            "never back"
        );
        // p95 10 ms before; after the return (second 25–26 onwards): 30, 11, 13 (> 12), 11, 11, 11.
        let mut rows: Vec<HistoryRow> = (1..=10)
            .map(|t| row(t as f64, 100.0, 0.0, 10.0, 10.0))
            .collect();
        rows.extend((11..=25).map(|t| row(t as f64, 100.0, 5.0, 90.0, 90.0)));
        for (i, p) in [30.0, 11.0, 13.0, 11.0, 11.0, 11.0].into_iter().enumerate() {
            rows.push(row(26.0 + i as f64, 100.0, 0.0, 50.0, p));
        }
        let refs: Vec<&HistoryRow> = rows.iter().collect();
        let r = recovery(&refs, &spike);
        assert_eq!(r.before_p95_ms, 10.0);
        // The second 28–29 begins three good ones: 3 s after the return.
        assert_eq!(r.seconds, Some(3.0));
        // Errors count too: 2 % in second 29–30 pushes it on by a second.
        rows[26 + 3 - 1].fps = 2.0;
        rows.push(row(32.0, 100.0, 0.0, 50.0, 11.0));
        let refs: Vec<&HistoryRow> = rows.iter().collect();
        assert_eq!(recovery(&refs, &spike).seconds, Some(4.0));
        // Never good for 3 s in a row: not recovered within the run.
        let refs: Vec<&HistoryRow> = rows[..28].iter().collect();
        assert_eq!(recovery(&refs, &spike).seconds, None);
    }

    #[test]
    fn arrivals_follow_the_rates_integral() {
        // `10s:10` ramps from 0 to 10/s: 50 arrivals, the k-th at √(2k) s.
        let ramp: Stages = "10s:10".parse().unwrap();
        assert_eq!(ramp.arrivals(), 50.0);
        for k in [0u64, 1, 8, 18, 49] {
            let t = ramp.arrival(k).unwrap().as_secs_f64();
            assert!((t - (2.0 * k as f64).sqrt()).abs() < 1e-6, "{k}: {t}");
        }
        assert_eq!(ramp.arrival(50), None);
        // Ramp up to 10/s in 10 s, hold 10 s, ramp down to 0 in 10 s: 50 + 100 + 50 arrivals.
        let s: Stages = "10s:10,10s:10,10s:0".parse().unwrap();
        assert_eq!(s.arrivals(), 200.0);
        let at = |k| s.arrival(k).unwrap().as_secs_f64();
        assert!((at(50) - 10.0).abs() < 1e-9);
        assert!((at(100) - 15.0).abs() < 1e-9);
        // Falling: N(t) = 150 + 10x − x²/2 reaches 192 at x = 10 − √16 = 6 s.
        assert!((at(192) - 26.0).abs() < 1e-9, "{}", at(192));
        assert_eq!(s.arrival(200), None);
        // Due times never go backwards.
        let times: Vec<f64> = (0..200).map(at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
